//! Condition maps (`when:` and `conditions:`) to IR predicates, with the
//! sugar forms (`max_x: n`, `min_x: n`, `param: scalar`) expanded.

use aegis_engine::builder::regex::validate_regex;
use aegis_engine::builder::BuildError;
use aegis_engine::ir::{Approval, Op, Predicate, Scalar};

use super::diag::{suggest, Severity};
use super::read::Cx;
use super::yaml::{Kind, Node};

const OPERATORS: &[&str] = &[
    "eq",
    "ne",
    "in",
    "not_in",
    "lt",
    "le",
    "gt",
    "ge",
    "matches",
    "not_matches",
    "exists",
    "absent",
];

/// The parsed content of one condition map.
#[derive(Default)]
pub struct Parsed<'n> {
    pub predicates: Vec<Predicate>,
    /// `approval_needed` given inside `conditions`, with its node.
    pub approval: Option<(Approval, &'n Node)>,
    pub ok: bool,
}

/// Reads a condition map. `what` is `when` or `conditions`; only the
/// latter may carry `approval_needed`.
pub fn parse<'n>(cx: &mut Cx<'_>, node: &'n Node, what: &str) -> Parsed<'n> {
    let mut out = Parsed {
        ok: true,
        ..Parsed::default()
    };
    let Some(entries) = cx.open_map(node, what) else {
        out.ok = false;
        return out;
    };
    for (key, key_node, value) in entries {
        if key == "approval_needed" {
            if what == "when" {
                cx.error(
                    key_node,
                    "`approval_needed` is not allowed in `when`",
                    "`when` only selects the entry; put `approval_needed` in the entry or in `conditions`",
                );
                out.ok = false;
            } else if let Some(a) = approval(cx, value) {
                out.approval = Some((a, key_node));
            } else {
                out.ok = false;
            }
            continue;
        }
        if !condition(cx, &key, key_node, value, &mut out.predicates) {
            out.ok = false;
        }
    }
    out
}

/// `true` -> ask on failure, `always` -> always ask, `false` -> never.
pub fn approval(cx: &mut Cx<'_>, node: &Node) -> Option<Approval> {
    match &node.kind {
        Kind::Bool(true) => Some(Approval::OnFailure),
        Kind::Bool(false) => Some(Approval::Never),
        Kind::Str(s) if s == "always" => Some(Approval::Always),
        _ => {
            let shown = node
                .scalar_text()
                .unwrap_or_else(|| node.type_name().to_owned());
            cx.error(
                node,
                format!("invalid `approval_needed` `{shown}`"),
                "use `true` (a failed condition asks for approval), `always` (every call asks) or `false`",
            );
            None
        }
    }
}

fn condition(
    cx: &mut Cx<'_>,
    key: &str,
    key_node: &Node,
    value: &Node,
    out: &mut Vec<Predicate>,
) -> bool {
    // `max_x: 5` / `min_x: 5` are sugar for `x <= 5` / `x >= 5`. An operator
    // map keeps the key as a literal parameter name, so a parameter really
    // called `max_retries` can still be tested.
    for (prefix, bound) in [("max_", "<="), ("min_", ">=")] {
        let Some(param) = key.strip_prefix(prefix).filter(|p| !p.is_empty()) else {
            continue;
        };
        if matches!(value.kind, Kind::Map(_)) {
            break;
        }
        let Some(n) = value.as_f64().filter(|n| n.is_finite()) else {
            let shown = value
                .scalar_text()
                .map_or_else(|| value.type_name().to_owned(), |s| format!("`{s}`"));
            cx.error(
                value,
                format!("`{key}` needs a number, found {shown}"),
                format!(
                    "`{key}: <number>` means `{param} {bound} <number>`; to test a parameter \
                     literally named `{key}`, use an operator map such as `{key}: {{eq: ...}}`"
                ),
            );
            return false;
        };
        if !check_param(cx, key_node, param) {
            return false;
        }
        let op = if prefix == "max_" {
            Op::Le(n)
        } else {
            Op::Ge(n)
        };
        out.push(Predicate {
            param: param.to_owned(),
            op,
        });
        return true;
    }
    if !check_param(cx, key_node, key) {
        return false;
    }
    match &value.kind {
        Kind::Map(_) => operators(cx, key, value, out),
        Kind::Seq(_) => {
            cx.error(
                value,
                format!("condition on `{key}` is a list"),
                format!("to accept any of several values write `{key}: {{in: [...]}}`"),
            );
            false
        }
        Kind::Null => {
            cx.error(
                value,
                format!("condition on `{key}` has no value"),
                format!(
                    "give a value (`{key}: usd`) or an operator map (`{key}: {{exists: true}}`)"
                ),
            );
            false
        }
        _ => match scalar(cx, value, key) {
            Some(s) => {
                out.push(Predicate {
                    param: key.to_owned(),
                    op: Op::Eq(s),
                });
                true
            }
            None => false,
        },
    }
}

fn check_param(cx: &mut Cx<'_>, node: &Node, param: &str) -> bool {
    let ok = !param.is_empty()
        && param.split('.').all(|seg| !seg.is_empty())
        && !param.chars().any(char::is_whitespace);
    if !ok {
        cx.error(
            node,
            format!("invalid parameter path `{param}`"),
            "use dot-separated names without spaces, e.g. `amount`, `card.last4` or `items.0.sku`",
        );
    }
    ok
}

fn operators(cx: &mut Cx<'_>, param: &str, node: &Node, out: &mut Vec<Predicate>) -> bool {
    let ctx = format!("the condition on `{param}`");
    let Some(f) = cx.fields_of(node, param, &ctx, OPERATORS, "operator") else {
        return false;
    };
    let mut ok = true;
    for (op_name, op_node, v) in f.iter() {
        let op = match op_name {
            "eq" => scalar(cx, v, param).map(Op::Eq),
            "ne" => scalar(cx, v, param).map(Op::Ne),
            "in" => scalar_list(cx, v, param, op_name).map(Op::In),
            "not_in" => scalar_list(cx, v, param, op_name).map(Op::NotIn),
            "lt" => number(cx, v, param, op_name).map(Op::Lt),
            "le" => number(cx, v, param, op_name).map(Op::Le),
            "gt" => number(cx, v, param, op_name).map(Op::Gt),
            "ge" => number(cx, v, param, op_name).map(Op::Ge),
            "matches" => regex(cx, v, op_name).map(Op::Matches),
            "not_matches" => regex(cx, v, op_name).map(Op::NotMatches),
            "exists" => only_true(cx, v, op_name).map(|()| Op::Exists),
            "absent" => only_true(cx, v, op_name).map(|()| Op::Absent),
            _ => {
                // `fields` already rejected anything else.
                cx.error(
                    op_node,
                    format!("unknown operator `{op_name}`"),
                    suggest(op_name, "operators", OPERATORS),
                );
                None
            }
        };
        match op {
            Some(op) => out.push(Predicate {
                param: param.to_owned(),
                op,
            }),
            None => ok = false,
        }
    }
    if node.as_map().is_some_and(<[_]>::is_empty) {
        cx.push(
            cx.diag(
                Severity::Error,
                node,
                format!("the condition on `{param}` has no operator"),
            )
            .with_help(format!("operators: {}", super::diag::list(OPERATORS))),
        );
        ok = false;
    }
    ok
}

fn scalar(cx: &mut Cx<'_>, node: &Node, param: &str) -> Option<Scalar> {
    match &node.kind {
        Kind::Str(s) => Some(Scalar::Str(s.clone())),
        Kind::Bool(b) => Some(Scalar::Bool(*b)),
        Kind::Int(_) | Kind::Float(_) => match node.as_f64().filter(|n| n.is_finite()) {
            Some(n) => Some(Scalar::Num(n)),
            None => {
                cx.error(
                    node,
                    format!("the condition on `{param}` compares with a number that is not finite"),
                    "use a finite number",
                );
                None
            }
        },
        _ => {
            cx.error(
                node,
                format!(
                    "the condition on `{param}` needs a string, number or boolean, found {}",
                    node.type_name()
                ),
                "compare against a single scalar value",
            );
            None
        }
    }
}

fn scalar_list(cx: &mut Cx<'_>, node: &Node, param: &str, op: &str) -> Option<Vec<Scalar>> {
    let Kind::Seq(items) = &node.kind else {
        cx.error(
            node,
            format!(
                "`{op}` on `{param}` needs a list, found {}",
                node.type_name()
            ),
            format!("write `{op}: [a, b]`"),
        );
        return None;
    };
    if items.is_empty() {
        cx.error(
            node,
            format!("`{op}` on `{param}` has an empty list"),
            "list at least one value",
        );
        return None;
    }
    let values: Vec<Option<Scalar>> = items.iter().map(|i| scalar(cx, i, param)).collect();
    values.into_iter().collect()
}

fn number(cx: &mut Cx<'_>, node: &Node, param: &str, op: &str) -> Option<f64> {
    match node.as_f64() {
        Some(n) if n.is_finite() => Some(n),
        _ => {
            let shown = node
                .scalar_text()
                .map_or_else(|| node.type_name().to_owned(), |s| format!("`{s}`"));
            cx.error(
                node,
                format!("`{op}` on `{param}` needs a number, found {shown}"),
                format!("write e.g. `{op}: 100`"),
            );
            None
        }
    }
}

fn regex(cx: &mut Cx<'_>, node: &Node, op: &str) -> Option<String> {
    let pattern = cx.str(node, op)?;
    check_regex(cx, node, pattern).then(|| pattern.to_owned())
}

/// Validates a policy regex (syntax and DFA size), reporting at `node`.
pub fn check_regex(cx: &mut Cx<'_>, node: &Node, pattern: &str) -> bool {
    if cx.regexes.contains(pattern) {
        return true;
    }
    let Err(e) = validate_regex(pattern) else {
        cx.regexes.insert(pattern.to_owned());
        return true;
    };
    let msg = e.to_string();
    let (message, help) = if matches!(e, BuildError::RegexTooLarge { .. }) {
        (
            msg,
            "simplify the pattern (bounded repetitions like `{0,1000}` multiply its size); \
             policy regexes must compile to a small DFA",
        )
    } else {
        // The DFA builder's message is terse ("error building NFA"); the
        // parser says what is actually wrong.
        let reason = syntax_reason(pattern);
        let message = match reason {
            Some(r) => format!("invalid regex `{pattern}`: {r}"),
            None => msg,
        };
        (
            message,
            "use Rust regex syntax (no look-around, no backreferences)",
        )
    };
    cx.error(node, message, help);
    false
}

fn syntax_reason(pattern: &str) -> Option<String> {
    let err = regex_syntax::ParserBuilder::new()
        .unicode(true)
        .utf8(true)
        .build()
        .parse(pattern)
        .err()?;
    Some(match err {
        regex_syntax::Error::Parse(e) => {
            format!("{} (at character {})", e.kind(), e.span().start.column)
        }
        regex_syntax::Error::Translate(e) => {
            format!("{} (at character {})", e.kind(), e.span().start.column)
        }
        other => other
            .to_string()
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_owned(),
    })
}

fn only_true(cx: &mut Cx<'_>, node: &Node, op: &str) -> Option<()> {
    match node.kind {
        Kind::Bool(true) => Some(()),
        _ => {
            let other = if op == "exists" { "absent" } else { "exists" };
            cx.error(
                node,
                format!("`{op}` only takes `true`"),
                format!("to test the opposite write `{other}: true`"),
            );
            None
        }
    }
}
