//! Agent policy documents: one agent's mode, egress, budget, DLP and allowed
//! tools, expanded into one IR rule per (entry, action).

use std::collections::HashMap;

use aegis_engine::ir::{self, Approval};
use aegis_engine::Detector;

use super::catalog::{self, ToolDef};
use super::conditions;
use super::diag::{list, suggest, Severity};
use super::hosts;
use super::read::{Cx, Loc};
use super::yaml::Node;

const AGENT_KEYS: &[&str] = &[
    "kind",
    "agent",
    "tenant",
    "mode",
    "egress",
    "budget",
    "dlp",
    "allowed_tools",
];
const EGRESS_KEYS: &[&str] = &["allow_hosts"];
const BUDGET_KEYS: &[&str] = &["daily_usd", "rps"];
const DLP_KEYS: &[&str] = &["detectors", "action", "custom"];
const CUSTOM_KEYS: &[&str] = &["name", "regex"];
const ENTRY_KEYS: &[&str] = &[
    "name",
    "actions",
    "when",
    "conditions",
    "approval_needed",
    "cost_usd",
];
const MODES: &[&str] = &["enforce", "shadow"];
const DLP_ACTIONS: &[&str] = &["redact", "mask", "hash", "deny"];

/// An agent seen so far and where its name was given (for duplicate checks).
pub struct AgentKey {
    tenant: Option<String>,
    name: String,
    loc: Loc,
}

/// Reads one agent policy document. `tools` may grow: open MCP tools learn
/// the action names agents use. `seen` holds the agents of earlier
/// documents, even those with errors, so duplicates are always reported.
pub fn parse(
    cx: &mut Cx<'_>,
    doc: &Node,
    tools: &mut [ToolDef],
    seen: &mut Vec<AgentKey>,
) -> Option<ir::Agent> {
    let f = cx.fields(doc, "agent", "an agent policy", AGENT_KEYS)?;
    let mut ok = true;
    let name_node = f.get("agent")?;
    let name = cx.ident(name_node, "agent");
    let tenant = match f.get("tenant") {
        Some(n) => match cx.ident(n, "tenant") {
            Some(t) => Some(t.to_owned()),
            None => {
                ok = false;
                None
            }
        },
        None => None,
    };
    if let (Some(name), true) = (name, ok) {
        if !check_duplicate(cx, name_node, name, tenant.as_deref(), seen) {
            ok = false;
        }
    }
    let mode = match f.get("mode") {
        Some(n) => match cx.choice(n, "mode", MODES) {
            Some("shadow") => Some(ir::Mode::Shadow),
            Some(_) => Some(ir::Mode::Enforce),
            None => None,
        },
        None => Some(ir::Mode::Enforce),
    };
    let allow_hosts = match f.get("egress") {
        Some(n) => egress(cx, n).map(Some),
        None => {
            let key = f.key("agent").unwrap_or(name_node);
            let d = cx
                .diag(
                    Severity::Warning,
                    key,
                    format!(
                        "agent `{}` has no `egress`: its calls are not restricted by host",
                        name.unwrap_or("?")
                    ),
                )
                .with_help(
                    "add `egress: {allow_hosts: [...]}` listing the hosts this agent may call",
                )
                .with_group(
                    name.unwrap_or("?"),
                    "agents have no `egress`: their calls are not restricted by host",
                );
            cx.push(d);
            Some(None)
        }
    };
    let budget = match f.get("budget") {
        Some(n) => budget(cx, n).map(Some),
        None => Some(None),
    };
    let dlp = match f.get("dlp") {
        Some(n) => dlp(cx, n).map(Some),
        None => Some(None),
    };
    let (Some(name), Some(mode), Some(allow_hosts), Some(budget), Some(dlp)) =
        (name, mode, allow_hosts, budget, dlp)
    else {
        // Still check the entries, so one run reports everything.
        if let Some(n) = f.get("allowed_tools") {
            let _ = rules(cx, n, "?", tools, None);
        }
        return None;
    };
    let id = match &tenant {
        Some(t) => format!("{t}/{name}"),
        None => name.to_owned(),
    };
    let rules = match f.get("allowed_tools") {
        Some(n) => rules(cx, n, &id, tools, allow_hosts.as_deref()),
        None => Some(Vec::new()),
    };
    let rules = rules?;
    if !ok {
        return None;
    }
    Some(ir::Agent {
        id,
        name: name.to_owned(),
        tenant,
        mode,
        allow_hosts,
        budget,
        dlp,
        rules,
    })
}

/// Records the agent in `seen`; false (with an error) if it is already there.
fn check_duplicate(
    cx: &mut Cx<'_>,
    node: &Node,
    name: &str,
    tenant: Option<&str>,
    seen: &mut Vec<AgentKey>,
) -> bool {
    let id = match tenant {
        Some(t) => format!("{t}/{name}"),
        None => name.to_owned(),
    };
    if let Some(first) = seen
        .iter()
        .find(|k| k.name == name && k.tenant.as_deref() == tenant)
    {
        let d = cx
            .diag(Severity::Error, node, format!("duplicate agent `{id}`"))
            .with_label("defined again here")
            .with_help(format!(
                "agent `{id}` is first defined at {}; merge the two policies",
                first.loc.describe()
            ))
            .with_secondary(
                &first.loc.file,
                first.loc.offset,
                first.loc.len,
                "first defined here",
            );
        cx.push(d);
        return false;
    }
    seen.push(AgentKey {
        tenant: tenant.map(str::to_owned),
        name: name.to_owned(),
        loc: cx.loc(node),
    });
    true
}

fn egress(cx: &mut Cx<'_>, node: &Node) -> Option<Vec<String>> {
    let f = cx.fields(node, "egress", "`egress`", EGRESS_KEYS)?;
    let list_node = cx.required(
        &f,
        "allow_hosts",
        "`egress`",
        "list the hosts this agent may call under `allow_hosts`",
    )?;
    let items = cx.str_list(list_node, "allow_hosts")?;
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (raw, item) in items {
        match catalog::host(cx, item, raw) {
            Some(h) if !out.contains(&h) => out.push(h),
            Some(_) => {}
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn budget(cx: &mut Cx<'_>, node: &Node) -> Option<ir::Budget> {
    let f = cx.fields(node, "budget", "`budget`", BUDGET_KEYS)?;
    let daily = match f.get("daily_usd") {
        Some(n) => cx.positive(n, "daily_usd", false).map(Some),
        None => Some(None),
    };
    let rps = match f.get("rps") {
        Some(n) => cx.positive(n, "rps", false).map(Some),
        None => Some(None),
    };
    Some(ir::Budget {
        daily_usd: daily?,
        rps: rps?,
    })
}

fn dlp(cx: &mut Cx<'_>, node: &Node) -> Option<ir::Dlp> {
    let f = cx.fields(node, "dlp", "`dlp`", DLP_KEYS)?;
    let mut ok = true;
    let builtin: Vec<&str> = Detector::ALL.iter().map(|d| d.name()).collect();
    let mut detectors = Vec::new();
    if let Some(n) = f.get("detectors") {
        match cx.str_list(n, "detectors") {
            Some(items) => {
                for (name, item) in items {
                    match Detector::from_name(name) {
                        Some(d) if !detectors.contains(&d) => detectors.push(d),
                        Some(_) => {}
                        None => {
                            cx.error(
                                item,
                                format!("unknown detector `{name}`"),
                                suggest(name, "built-in detectors", &builtin),
                            );
                            ok = false;
                        }
                    }
                }
            }
            None => ok = false,
        }
    }
    let action = match f.get("action") {
        Some(n) => match cx.choice(n, "action", DLP_ACTIONS) {
            Some("mask") => Some(ir::DlpAction::Mask),
            Some("hash") => Some(ir::DlpAction::Hash),
            Some("deny") => Some(ir::DlpAction::Deny),
            Some(_) => Some(ir::DlpAction::Redact),
            None => None,
        },
        None => Some(ir::DlpAction::Redact),
    };
    let mut custom: Vec<(String, String)> = Vec::new();
    // Where each custom regex is, to point at it if the DLP build fails.
    let mut custom_nodes: Vec<&Node> = Vec::new();
    if let Some(n) = f.get("custom") {
        match cx.seq(n, "custom") {
            Some(items) => {
                for item in items {
                    match custom_detector(cx, item, &builtin, &custom) {
                        Some(c) => {
                            custom.push(c);
                            custom_nodes.push(item.get("regex").unwrap_or(item));
                        }
                        None => ok = false,
                    }
                }
            }
            None => ok = false,
        }
    }
    if ok && detectors.is_empty() && custom.is_empty() {
        cx.error(
            node,
            "`dlp` enables no detector",
            format!(
                "list built-in detectors under `detectors` ({}) or add `custom` ones",
                list(&builtin)
            ),
        );
        ok = false;
    }
    if !ok {
        return None;
    }
    let action = action?;
    if !custom.is_empty() {
        // Custom patterns have limits only the DLP builder knows (empty
        // matches, combined DFA size, pattern count): ask it now, so the
        // error points at the policy instead of failing the bundle build.
        let built = aegis_engine::builder::dlp::build_dlp(&detectors, &custom, action, [0; 32]);
        if let Err(e) = built {
            let msg = e.to_string();
            let at = custom
                .iter()
                .zip(&custom_nodes)
                .find(|((name, _), _)| msg.contains(&format!("`{name}`")))
                .map_or(node, |(_, n)| *n);
            cx.error(
                at,
                msg,
                "make the custom regexes more specific (each must match at least one character) and keep them small",
            );
            return None;
        }
    }
    Some(ir::Dlp {
        detectors,
        custom,
        action,
    })
}

fn custom_detector(
    cx: &mut Cx<'_>,
    node: &Node,
    builtin: &[&str],
    earlier: &[(String, String)],
) -> Option<(String, String)> {
    let f = cx.fields(node, "custom", "a custom detector", CUSTOM_KEYS)?;
    let name_node = cx.required(
        &f,
        "name",
        "a custom detector",
        "give the detector a `name`",
    );
    let regex_node = cx.required(
        &f,
        "regex",
        "a custom detector",
        "give the pattern to detect as `regex`",
    );
    let name = name_node.and_then(|n| {
        let s = cx.str(n, "name")?;
        let mut chars = s.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            cx.error(
                n,
                format!("invalid detector name `{s}`"),
                "use lowercase letters, digits and `_`, starting with a letter",
            );
            None
        } else if builtin.contains(&s) {
            cx.error(
                n,
                format!("custom detector `{s}` has the name of a built-in detector"),
                format!("enable the built-in one under `detectors`, or pick another name (built-ins: {})", list(builtin)),
            );
            None
        } else if earlier.iter().any(|(e, _)| e == s) {
            cx.error(n, format!("duplicate custom detector `{s}`"), "give each custom detector its own name");
            None
        } else {
            Some(s)
        }
    });
    let regex = regex_node.and_then(|n| {
        let s = cx.str(n, "regex")?;
        conditions::check_regex(cx, n, s).then_some(s)
    });
    Some((name?.to_owned(), regex?.to_owned()))
}

/// One requested action of an entry after resolution.
struct Target<'n> {
    action: usize,
    node: &'n Node,
    /// Reached through `*` rather than named.
    via_star: bool,
}

fn rules(
    cx: &mut Cx<'_>,
    node: &Node,
    agent_id: &str,
    tools: &mut [ToolDef],
    allow_hosts: Option<&[String]>,
) -> Option<Vec<ir::Rule>> {
    let entries = cx.seq(node, "allowed_tools")?;
    let mut ok = true;
    let mut rules = Vec::new();
    // First entry without `when` per (tool, action): it always applies, so
    // later entries for the same pair never can.
    let mut catch_all: HashMap<(usize, usize), Loc> = HashMap::new();
    let mut counters: HashMap<(usize, usize), usize> = HashMap::new();
    let mut egress_checked: Vec<usize> = Vec::new();
    for entry in entries {
        let Some(f) = cx.fields(
            entry,
            "allowed_tools",
            "an `allowed_tools` entry",
            ENTRY_KEYS,
        ) else {
            ok = false;
            continue;
        };
        let tool_node = cx.required(
            &f,
            "name",
            "an `allowed_tools` entry",
            "give the tool's `name` from the catalog",
        );
        let tool = tool_node.and_then(|n| resolve_tool(cx, n, tools));
        let actions_node = cx.required(
            &f,
            "actions",
            "an `allowed_tools` entry",
            "list the allowed actions, or `[\"*\"]` for all of the tool's actions",
        );
        let targets = match (tool, actions_node) {
            (Some(t), Some(a)) => resolve_actions(cx, a, t, tools),
            (None, Some(a)) => {
                // Still check the shape of the list.
                let _ = cx.str_list(a, "actions");
                None
            }
            _ => None,
        };

        let when = f.get("when").map(|n| conditions::parse(cx, n, "when"));
        let conds = f
            .get("conditions")
            .map(|n| conditions::parse(cx, n, "conditions"));
        let mut approval = Approval::Never;
        let mut entry_ok =
            when.as_ref().is_none_or(|w| w.ok) && conds.as_ref().is_none_or(|c| c.ok);
        let inner_approval = conds.as_ref().and_then(|c| c.approval);
        match (f.get("approval_needed"), inner_approval) {
            (Some(outer), Some((_, inner_key))) => {
                cx.error(
                    inner_key,
                    "`approval_needed` is given twice",
                    format!(
                        "it is also set at {}; keep one of them",
                        cx.file.describe(outer.offset)
                    ),
                );
                entry_ok = false;
            }
            (Some(outer), None) => match conditions::approval(cx, outer) {
                Some(a) => approval = a,
                None => entry_ok = false,
            },
            (None, Some((a, _))) => approval = a,
            (None, None) => {}
        }
        let cost = match f.get("cost_usd") {
            Some(n) => match cx.positive(n, "cost_usd", true) {
                Some(c) => Some(c),
                None => {
                    entry_ok = false;
                    None
                }
            },
            None => None,
        };

        let (Some(tool), Some(targets), Some(tool_node), true) =
            (tool, targets, tool_node, entry_ok)
        else {
            ok = false;
            continue;
        };
        let when_preds = when.map(|w| w.predicates).unwrap_or_default();
        let cond_preds = conds.map(|c| c.predicates).unwrap_or_default();
        let has_when = !when_preds.is_empty();
        let tool_name = tools
            .get(tool)
            .map(|t| t.tool.name.clone())
            .unwrap_or_default();

        let mut emitted = 0usize;
        let mut star_node = None;
        for t in &targets {
            if t.via_star {
                star_node = Some(t.node);
            }
            let key = (tool, t.action);
            if let Some(first) = catch_all.get(&key) {
                if !t.via_star {
                    let action_name = action_name(tools, tool, t.action);
                    let d = cx
                        .diag(
                            Severity::Error,
                            t.node,
                            format!(
                                "entry is unreachable: an earlier entry for `{tool_name}` `{action_name}` has no `when`, so it always applies first"
                            ),
                        )
                        .with_label("never applies")
                        .with_help(format!(
                            "the earlier entry is at {}; give it a `when`, or merge the two entries",
                            first.describe()
                        ))
                        .with_secondary(&first.file, first.offset, first.len, "this entry always applies");
                    cx.push(d);
                    ok = false;
                }
                continue;
            }
            let counter = counters.entry(key).or_insert(0);
            let id = format!(
                "{agent_id}/{tool_name}/{}#{counter}",
                action_name(tools, tool, t.action)
            );
            *counter += 1;
            rules.push(ir::Rule {
                id,
                tool,
                action: t.action,
                when: when_preds.clone(),
                conditions: cond_preds.clone(),
                approval,
                cost_usd: cost,
            });
            emitted += 1;
            if !has_when {
                catch_all.insert(key, cx.loc(tool_node));
            }
        }
        if emitted == 0 && !targets.is_empty() {
            if let Some(star) = star_node {
                cx.error(
                    star,
                    format!("entry is unreachable: every action of `{tool_name}` is covered by earlier entries without `when`"),
                    "remove this entry, or give the earlier entries a `when`",
                );
                ok = false;
            }
        }

        if !egress_checked.contains(&tool) {
            egress_checked.push(tool);
            if let (Some(allow), Some(def)) = (allow_hosts, tools.get(tool)) {
                let uncovered: Vec<&str> = def
                    .tool
                    .hosts
                    .iter()
                    .filter(|h| !allow.iter().any(|a| hosts::covers(a, h)))
                    .map(String::as_str)
                    .collect();
                if !uncovered.is_empty() {
                    let hosts = list(&uncovered);
                    let d = cx
                        .diag(
                            Severity::Warning,
                            tool_node,
                            format!(
                                "tool `{tool_name}` is served by {hosts} which `egress.allow_hosts` does not cover: calls to it will be denied"
                            ),
                        )
                        .with_help(format!("add {hosts} to `egress.allow_hosts`"))
                        .with_group(
                            agent_id,
                            format!(
                                "agents may call tool `{tool_name}`, served by {hosts}, which their `egress.allow_hosts` does not cover: their calls to it will be denied"
                            ),
                        );
                    cx.push(d);
                }
            }
        }
    }
    ok.then_some(rules)
}

fn action_name(tools: &[ToolDef], tool: usize, action: usize) -> String {
    tools
        .get(tool)
        .and_then(|t| t.tool.actions.get(action))
        .map(|a| a.name.clone())
        .unwrap_or_default()
}

fn resolve_tool(cx: &mut Cx<'_>, node: &Node, tools: &[ToolDef]) -> Option<usize> {
    let name = cx.name(node, "name")?;
    if let Some(i) = tools.iter().position(|t| t.tool.name == name) {
        return Some(i);
    }
    if tools.is_empty() {
        cx.error(
            node,
            format!("unknown tool `{name}`: no tool catalog is loaded"),
            "define the tool in a `kind: ToolCatalog` document and pass that file too",
        );
    } else {
        let names: Vec<&str> = tools.iter().map(|t| t.tool.name.as_str()).collect();
        cx.error(
            node,
            format!("unknown tool `{name}`"),
            suggest(name, "known tools", &names),
        );
    }
    None
}

fn resolve_actions<'n>(
    cx: &mut Cx<'_>,
    node: &'n Node,
    tool: usize,
    tools: &mut [ToolDef],
) -> Option<Vec<Target<'n>>> {
    let items = cx.str_list(node, "actions")?;
    let def = tools.get_mut(tool)?;
    if items.is_empty() {
        cx.error(
            node,
            "`actions` must not be empty",
            format!(
                "list actions of `{}`: {}",
                def.tool.name,
                catalog::action_names(&def.tool)
            ),
        );
        return None;
    }
    let mut ok = true;
    let mut out: Vec<Target<'n>> = Vec::new();
    let has_star = items.iter().any(|(s, _)| *s == "*");
    for (name, item) in &items {
        if *name == "*" {
            if items.len() > 1 {
                cx.error(
                    item,
                    "`*` cannot be combined with other actions",
                    "`*` already stands for every action of the tool; list either `*` or the actions",
                );
                ok = false;
                continue;
            }
            if def.open_mcp {
                cx.error(
                    item,
                    format!("`*` needs the actions of `{}`, but its catalog entry lists none", def.tool.name),
                    "list the MCP tool names under `actions` in the catalog, or name the actions here",
                );
                ok = false;
                continue;
            }
            out.extend((0..def.tool.actions.len()).map(|action| Target {
                action,
                node: item,
                via_star: true,
            }));
            continue;
        }
        if has_star {
            continue;
        }
        let found = def.tool.actions.iter().position(|a| a.name == *name);
        let action = match found {
            Some(i) => i,
            None if def.open_mcp && catalog::valid_mcp_name(name) => {
                def.tool.actions.push(catalog::mcp_action(name, None));
                def.tool.actions.len() - 1
            }
            None if def.open_mcp => {
                cx.error(
                    item,
                    format!("invalid MCP tool name `{name}`"),
                    "MCP tool names use letters, digits, `_`, `-` and `.`",
                );
                ok = false;
                continue;
            }
            None => {
                let names: Vec<&str> = def.tool.actions.iter().map(|a| a.name.as_str()).collect();
                cx.error(
                    item,
                    format!("unknown action `{name}` for tool `{}`", def.tool.name),
                    suggest(name, &format!("actions of `{}`", def.tool.name), &names),
                );
                ok = false;
                continue;
            }
        };
        if out.iter().any(|t| t.action == action) {
            cx.error(
                item,
                format!("action `{name}` is listed twice"),
                "list each action once",
            );
            ok = false;
            continue;
        }
        out.push(Target {
            action,
            node: item,
            via_star: false,
        });
    }
    ok.then_some(out)
}
