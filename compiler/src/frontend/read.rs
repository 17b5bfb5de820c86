//! Typed reading of YAML nodes that records a diagnostic for every problem
//! and carries on, so one run reports all errors instead of the first.

use std::sync::Arc;

use super::diag::{suggest, Diagnostic, Severity, SourceFile};
use super::yaml::{Kind, Node};

/// A place in a source file, kept to mention it in later diagnostics.
#[derive(Debug, Clone)]
pub struct Loc {
    pub file: Arc<SourceFile>,
    pub offset: usize,
    pub len: usize,
}

impl Loc {
    pub fn describe(&self) -> String {
        self.file.describe(self.offset)
    }
}

/// The reading context for one file: where diagnostics go.
pub struct Cx<'a> {
    pub file: &'a Arc<SourceFile>,
    pub diags: &'a mut Vec<Diagnostic>,
    /// Regexes already validated in this run: a DFA build costs about half
    /// a millisecond, and generated policies repeat the same patterns.
    pub regexes: &'a mut std::collections::HashSet<String>,
}

/// A mapping's entries with string keys, after unknown keys were reported.
pub struct Fields<'n> {
    pub node: &'n Node,
    entries: Vec<(&'n str, &'n Node, &'n Node)>,
}

impl<'n> Fields<'n> {
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, _, v)| *v)
    }

    pub fn key(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, k, _)| *k)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'n str, &'n Node, &'n Node)> + '_ {
        self.entries.iter().copied()
    }
}

impl<'a> Cx<'a> {
    pub fn loc(&self, node: &Node) -> Loc {
        Loc {
            file: Arc::clone(self.file),
            offset: node.offset,
            len: node.len,
        }
    }

    /// Builds an error at `node` (not yet recorded).
    pub fn diag(&self, severity: Severity, node: &Node, message: impl Into<String>) -> Diagnostic {
        Diagnostic::at(severity, self.file, node.offset, node.len, message)
    }

    pub fn error(&mut self, node: &Node, message: impl Into<String>, help: impl Into<String>) {
        let d = self.diag(Severity::Error, node, message).with_help(help);
        self.diags.push(d);
    }

    pub fn warn(&mut self, node: &Node, message: impl Into<String>, help: impl Into<String>) {
        let d = self.diag(Severity::Warning, node, message).with_help(help);
        self.diags.push(d);
    }

    pub fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn wrong_type(&mut self, node: &Node, what: &str, expected: &str) {
        self.error(
            node,
            format!("`{what}` must be {expected}, found {}", node.type_name()),
            format!("write `{what}` as {expected}"),
        );
    }

    /// Reads a mapping whose keys must all be in `known`; `ctx` names the
    /// mapping in messages ("unknown key `x` in <ctx>").
    pub fn fields<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        ctx: &str,
        known: &[&str],
    ) -> Option<Fields<'n>> {
        self.fields_of(node, what, ctx, known, "key")
    }

    /// Like [`Cx::fields`], calling the keys `noun` ("operator", ...).
    pub fn fields_of<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        ctx: &str,
        known: &[&str],
        noun: &str,
    ) -> Option<Fields<'n>> {
        let Some(map) = node.as_map() else {
            self.wrong_type(node, what, "a mapping");
            return None;
        };
        let mut entries = Vec::with_capacity(map.len());
        for (k, v) in map {
            let Some(key) = k.as_str() else {
                self.error(
                    k,
                    format!("{noun}s in {ctx} must be strings, found {}", k.type_name()),
                    format!("known {noun}s: {}", super::diag::list(known)),
                );
                continue;
            };
            if !known.contains(&key) {
                self.error(
                    k,
                    format!("unknown {noun} `{key}` in {ctx}"),
                    suggest(key, &format!("known {noun}s"), known),
                );
                continue;
            }
            entries.push((key, k, v));
        }
        Some(Fields { node, entries })
    }

    /// A mapping with arbitrary string keys (conditions, headers).
    pub fn open_map<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
    ) -> Option<Vec<(String, &'n Node, &'n Node)>> {
        let Some(map) = node.as_map() else {
            self.wrong_type(node, what, "a mapping");
            return None;
        };
        let mut out = Vec::with_capacity(map.len());
        for (k, v) in map {
            match &k.kind {
                Kind::Str(s) => out.push((s.clone(), k, v)),
                Kind::Int(_) | Kind::Float(_) | Kind::Bool(_) => {
                    out.push((k.scalar_text().unwrap_or_default(), k, v));
                }
                _ => self.error(
                    k,
                    format!("keys in `{what}` must be strings, found {}", k.type_name()),
                    "write the key as a plain string",
                ),
            }
        }
        Some(out)
    }

    /// Reports a missing required key at the mapping.
    pub fn missing(&mut self, fields: &Fields<'_>, key: &str, ctx: &str, help: &str) {
        self.error(
            fields.node,
            format!("missing key `{key}` in {ctx}"),
            help.to_owned(),
        );
    }

    /// A required key's value.
    pub fn required<'n>(
        &mut self,
        fields: &Fields<'n>,
        key: &str,
        ctx: &str,
        help: &str,
    ) -> Option<&'n Node> {
        let v = fields.get(key);
        if v.is_none() {
            self.missing(fields, key, ctx, help);
        }
        v
    }

    pub fn str<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n str> {
        let s = node.as_str();
        if s.is_none() {
            self.wrong_type(node, what, "a string");
        }
        s
    }

    /// A non-empty string.
    pub fn name<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n str> {
        let s = self.str(node, what)?;
        if s.is_empty() {
            self.error(
                node,
                format!("`{what}` must not be empty"),
                format!("give `{what}` a value"),
            );
            return None;
        }
        Some(s)
    }

    pub fn num(&mut self, node: &Node, what: &str) -> Option<f64> {
        let n = node.as_f64();
        if n.is_none() {
            self.wrong_type(node, what, "a number");
        }
        n
    }

    pub fn bool(&mut self, node: &Node, what: &str) -> Option<bool> {
        match node.kind {
            Kind::Bool(b) => Some(b),
            _ => {
                self.wrong_type(node, what, "`true` or `false`");
                None
            }
        }
    }

    pub fn seq<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n [Node]> {
        match &node.kind {
            Kind::Seq(items) => Some(items),
            _ => {
                self.wrong_type(node, what, "a list");
                None
            }
        }
    }

    /// A list of strings; bad items are reported and skipped.
    pub fn str_list<'n>(&mut self, node: &'n Node, what: &str) -> Option<Vec<(&'n str, &'n Node)>> {
        let items = self.seq(node, what)?;
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            match item.as_str() {
                Some(s) => out.push((s, item)),
                None => self.error(
                    item,
                    format!(
                        "items of `{what}` must be strings, found {}",
                        item.type_name()
                    ),
                    "quote the value to make it a string",
                ),
            }
        }
        Some(out)
    }

    /// One of a fixed set of words.
    pub fn choice<'n>(&mut self, node: &'n Node, what: &str, choices: &[&str]) -> Option<&'n str> {
        let s = self.str(node, what)?;
        if choices.contains(&s) {
            Some(s)
        } else {
            self.error(
                node,
                format!("invalid `{what}` `{s}`"),
                suggest(s, "expected one of", choices),
            );
            None
        }
    }

    /// A positive number (`> 0`), or `>= 0` when `allow_zero`.
    pub fn positive(&mut self, node: &Node, what: &str, allow_zero: bool) -> Option<f64> {
        let n = self.num(node, what)?;
        let ok = n.is_finite() && if allow_zero { n >= 0.0 } else { n > 0.0 };
        if ok {
            Some(n)
        } else {
            let bound = if allow_zero {
                "zero or more"
            } else {
                "greater than zero"
            };
            self.error(
                node,
                format!("`{what}` must be {bound}, found `{n}`"),
                format!("use a number {bound}"),
            );
            None
        }
    }
}

/// Names that end up inside rule ids (`agent/tool/action#n`) must not contain
/// the separators.
pub fn valid_ident(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl Cx<'_> {
    /// A name used in rule ids: a non-empty string of letters, digits,
    /// `_`, `-`, `.`.
    pub fn ident<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n str> {
        let s = self.name(node, what)?;
        if valid_ident(s) {
            Some(s)
        } else {
            self.error(
                node,
                format!("`{what}` `{s}` is not a valid name"),
                "use letters, digits, `_`, `-` and `.` only",
            );
            None
        }
    }
}
