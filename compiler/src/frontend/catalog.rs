//! `kind: ToolCatalog` documents: how each tool is recognised on the wire
//! (hosts, body encoding, HTTP method + path template per action, or an MCP
//! endpoint whose actions are MCP tool names).

use aegis_engine::ir;
use aegis_engine::MCP_GOVERNED;

use super::diag::{list, Severity};
use super::hosts;
use super::read::{valid_ident, Cx, Loc};
use super::yaml::{Kind, Node};

/// A tool as compiled so far, plus what later checks need to know.
pub struct ToolDef {
    pub tool: ir::Tool,
    /// Where the tool's name was given.
    pub loc: Loc,
    /// An MCP tool that lists no actions: agent policies may name any action,
    /// which is then added to the tool.
    pub open_mcp: bool,
}

const CATALOG_KEYS: &[&str] = &["kind", "tools"];
const TOOL_KEYS: &[&str] = &["name", "hosts", "body", "encodings", "actions", "mcp"];
const ENCODINGS: &[&str] = &["gzip"];
const ACTION_KEYS: &[&str] = &["name", "method", "path", "write"];
const MCP_KEYS: &[&str] = &["hosts", "path", "filter_tools_list"];
const MCP_ACTION_KEYS: &[&str] = &["name", "write"];
const BODY_KINDS: &[&str] = &["json", "form", "none"];

/// Reads one catalog document, appending its tools to `tools`.
pub fn parse(cx: &mut Cx<'_>, doc: &Node, tools: &mut Vec<ToolDef>) {
    let Some(f) = cx.fields(doc, "ToolCatalog", "a tool catalog", CATALOG_KEYS) else {
        return;
    };
    let Some(list_node) = cx.required(
        &f,
        "tools",
        "a tool catalog",
        "list the tools under `tools:`",
    ) else {
        return;
    };
    let Some(items) = cx.seq(list_node, "tools") else {
        return;
    };
    for item in items {
        if let Some(def) = tool(cx, item, tools) {
            tools.push(def);
        }
    }
}

fn tool(cx: &mut Cx<'_>, node: &Node, existing: &[ToolDef]) -> Option<ToolDef> {
    let f = cx.fields(node, "tools", "a tool", TOOL_KEYS)?;
    let name_node = cx.required(&f, "name", "a tool", "give the tool a `name`");
    let name = name_node.and_then(|n| cx.ident(n, "name"));
    let mut ok = name.is_some();
    if let (Some(name), Some(name_node)) = (name, name_node) {
        if let Some(first) = existing.iter().find(|t| t.tool.name == name) {
            let d = cx
                .diag(
                    Severity::Error,
                    name_node,
                    format!("duplicate tool `{name}`"),
                )
                .with_label("defined again here")
                .with_help(format!(
                    "tool `{name}` is first defined at {}; tool names must be unique",
                    first.loc.describe()
                ))
                .with_secondary(
                    &first.loc.file,
                    first.loc.offset,
                    first.loc.len,
                    "first defined here",
                );
            cx.push(d);
            ok = false;
        }
    }

    let parsed = match f.get("mcp") {
        Some(mcp) => mcp_tool(cx, &f, mcp),
        None => http_tool(cx, &f),
    };
    let (hosts, body, mcp_path, actions, open_mcp, filter_tools_list) = parsed?;
    let gzip = match f.get("encodings") {
        None => false,
        Some(list) => {
            let mut gzip = false;
            for item in cx.seq(list, "encodings")? {
                gzip |= cx.choice(item, "encodings", ENCODINGS)? == "gzip";
            }
            gzip
        }
    };
    if !ok {
        return None;
    }
    Some(ToolDef {
        tool: ir::Tool {
            name: name?.to_owned(),
            hosts,
            body,
            mcp_path,
            actions,
            gzip,
            filter_tools_list,
        },
        loc: cx.loc(name_node?),
        open_mcp,
    })
}

/// Hosts, body, MCP path, actions, open MCP tool, filtered `tools/list`.
type ToolParts = (
    Vec<String>,
    ir::BodyKind,
    Option<String>,
    Vec<ir::Action>,
    bool,
    bool,
);

fn http_tool(cx: &mut Cx<'_>, f: &super::read::Fields<'_>) -> Option<ToolParts> {
    let hosts = match cx.required(
        f,
        "hosts",
        "a tool",
        "list the tool's host names under `hosts`",
    ) {
        Some(h) => host_list(cx, h, "hosts"),
        None => None,
    };
    let body = match f.get("body") {
        Some(b) => match cx.choice(b, "body", BODY_KINDS) {
            Some("form") => Some(ir::BodyKind::Form),
            Some("none") => Some(ir::BodyKind::None),
            Some(_) => Some(ir::BodyKind::Json),
            None => None,
        },
        None => Some(ir::BodyKind::Json),
    };
    let actions = match cx.required(
        f,
        "actions",
        "a tool",
        "list the tool's actions, each with `name`, `method` and `path`",
    ) {
        Some(a) => http_actions(cx, a),
        None => None,
    };
    Some((hosts?, body?, None, actions?, false, false))
}

fn mcp_tool(cx: &mut Cx<'_>, f: &super::read::Fields<'_>, mcp: &Node) -> Option<ToolParts> {
    let mut ok = true;
    if let Some(k) = f.key("hosts") {
        cx.error(
            k,
            "an MCP tool takes its hosts from `mcp.hosts`",
            "move the host names into `mcp: {hosts: [...]}`",
        );
        ok = false;
    }
    if let Some(b) = f.get("body") {
        if b.as_str() != Some("json") {
            cx.error(
                b,
                "an MCP tool always has a JSON body",
                "remove `body` from this tool",
            );
            ok = false;
        }
    }
    let mf = cx.fields(mcp, "mcp", "`mcp`", MCP_KEYS)?;
    let hosts = match cx.required(
        &mf,
        "hosts",
        "`mcp`",
        "list the MCP server's host names under `hosts`",
    ) {
        Some(h) => host_list(cx, h, "mcp.hosts"),
        None => None,
    };
    let path = match mf.get("path") {
        Some(p) => cx.name(p, "mcp.path").and_then(|s| {
            if s.starts_with('/') && !s.contains(['?', '#', ' ']) {
                Some(s.to_owned())
            } else {
                cx.error(
                    p,
                    format!("invalid MCP path `{s}`"),
                    "the MCP endpoint path must start with `/`, e.g. `/mcp`",
                );
                None
            }
        }),
        None => Some("/mcp".to_owned()),
    };
    let filter_tools_list = match mf.get("filter_tools_list") {
        Some(b) => cx.bool(b, "mcp.filter_tools_list"),
        None => Some(true),
    };
    let (actions, open) = match f.get("actions") {
        Some(a) => (mcp_actions(cx, a), false),
        None => (Some(Vec::new()), true),
    };
    let actions = actions?;
    let open = open || actions.is_empty();
    if !ok {
        return None;
    }
    Some((
        hosts?,
        ir::BodyKind::Json,
        Some(path?),
        actions,
        open,
        filter_tools_list?,
    ))
}

fn host_list(cx: &mut Cx<'_>, node: &Node, what: &str) -> Option<Vec<String>> {
    let items = cx.str_list(node, what)?;
    if items.is_empty() {
        cx.error(
            node,
            format!("`{what}` must not be empty"),
            "list at least one host name",
        );
        return None;
    }
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (raw, item) in items {
        match host(cx, item, raw) {
            Some(h) if !out.contains(&h) => out.push(h),
            Some(_) => {}
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// Validates one host pattern, reporting at `node`.
pub fn host(cx: &mut Cx<'_>, node: &Node, raw: &str) -> Option<String> {
    match hosts::normalize(raw) {
        Ok(h) => Some(h),
        Err(why) => {
            cx.error(
                node,
                format!("invalid host pattern: {why}"),
                "use a host name such as `api.stripe.com`, or a leading wildcard \
                 such as `*.acme.internal`",
            );
            None
        }
    }
}

/// An accepted action, where its name is, and its route shape and path.
type SeenAction = (ir::Action, Loc, Option<(String, Loc)>);

fn http_actions(cx: &mut Cx<'_>, node: &Node) -> Option<Vec<ir::Action>> {
    let items = cx.seq(node, "actions")?;
    if items.is_empty() {
        cx.error(
            node,
            "`actions` must not be empty",
            "list at least one action",
        );
        return None;
    }
    let mut ok = true;
    // (action, where its name and path are) for the duplicate checks.
    let mut seen: Vec<SeenAction> = Vec::new();
    for item in items {
        let Some(f) = cx.fields(item, "actions", "an action", ACTION_KEYS) else {
            ok = false;
            continue;
        };
        let name_node = cx.required(&f, "name", "an action", "give the action a `name`");
        let method_node = cx.required(
            &f,
            "method",
            "an action",
            "give the HTTP method, e.g. `method: POST`",
        );
        let path_node = cx.required(
            &f,
            "path",
            "an action",
            "give the path template, e.g. `path: /v1/customers/{id}`",
        );
        let name = name_node.and_then(|n| cx.ident(n, "name"));
        let method = method_node.and_then(|n| method(cx, n));
        let path = path_node.and_then(|n| {
            let p = cx.str(n, "path")?;
            match check_template(p) {
                Ok(shape) => Some((p.to_owned(), shape)),
                Err(why) => {
                    cx.error(
                        n,
                        format!("invalid path template `{p}`: {why}"),
                        "a path starts with `/`; each segment is literal text or exactly `{name}`",
                    );
                    None
                }
            }
        });
        let write = match f.get("write") {
            Some(w) => cx.bool(w, "write").map(Some),
            None => Some(None),
        };
        let (
            Some(name),
            Some(method),
            Some((path, shape)),
            Some(write),
            Some(name_node),
            Some(path_node),
        ) = (name, method, path, write, name_node, path_node)
        else {
            ok = false;
            continue;
        };
        if let Some((_, first, _)) = seen.iter().find(|(a, _, _)| a.name == name) {
            let d = cx
                .diag(Severity::Error, name_node, format!("duplicate action `{name}`"))
                .with_label("defined again here")
                .with_help(format!(
                    "action `{name}` is first defined at {}; action names must be unique within a tool",
                    first.describe()
                ))
                .with_secondary(&first.file, first.offset, first.len, "first defined here");
            cx.push(d);
            ok = false;
            continue;
        }
        if let Some((other, _, Some((_, first)))) = seen.iter().find(|(a, _, s)| {
            a.method.as_deref() == Some(method.as_str())
                && s.as_ref().is_some_and(|(sh, _)| *sh == shape)
        }) {
            let d = cx
                .diag(
                    Severity::Error,
                    path_node,
                    format!(
                        "actions `{}` and `{name}` both match `{method} {path}`",
                        other.name
                    ),
                )
                .with_label("same method and path")
                .with_help(format!(
                    "action `{}` at {} already matches this method and path; \
                     a request must identify exactly one action",
                    other.name,
                    first.describe()
                ))
                .with_secondary(&first.file, first.offset, first.len, "first matched here");
            cx.push(d);
            ok = false;
            continue;
        }
        let write = write.unwrap_or(matches!(
            method.as_str(),
            "POST" | "PUT" | "PATCH" | "DELETE"
        ));
        let name_loc = cx.loc(name_node);
        let path_loc = cx.loc(path_node);
        seen.push((
            ir::Action {
                name: name.to_owned(),
                method: Some(method),
                path: Some(path),
                write,
            },
            name_loc,
            Some((shape, path_loc)),
        ));
    }
    ok.then(|| seen.into_iter().map(|(a, _, _)| a).collect())
}

fn method(cx: &mut Cx<'_>, node: &Node) -> Option<String> {
    let m = cx.name(node, "method")?;
    if m.chars().all(|c| c.is_ascii_alphabetic()) {
        Some(m.to_ascii_uppercase())
    } else {
        cx.error(
            node,
            format!("invalid HTTP method `{m}`"),
            "use a method name such as `GET`, `POST`, `PUT`, `PATCH` or `DELETE`",
        );
        None
    }
}

/// Checks a path template; returns its shape (parameters blanked out) so
/// that `/a/{x}` and `/a/{y}` are seen as the same route.
pub fn check_template(path: &str) -> Result<String, String> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err("it must start with `/`".to_owned());
    };
    if let Some(c) = path
        .chars()
        .find(|c| matches!(c, '?' | '#') || c.is_whitespace())
    {
        return Err(format!(
            "`{}` is not allowed in a path template",
            c.escape_default()
        ));
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len().saturating_sub(1);
    let mut params: Vec<&str> = Vec::new();
    let mut shape = String::new();
    for (i, seg) in segments.iter().enumerate() {
        shape.push('/');
        if seg.is_empty() {
            if i == last {
                continue;
            }
            return Err("empty segment (`//`)".to_owned());
        }
        if !seg.contains(['{', '}']) {
            shape.push_str(seg);
            continue;
        }
        let inner = seg
            .strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
            .filter(|s| is_param_name(s))
            .ok_or_else(|| format!("segment `{seg}` must be literal text or exactly `{{name}}`"))?;
        if params.contains(&inner) {
            return Err(format!("parameter `{inner}` appears twice"));
        }
        params.push(inner);
        shape.push_str("{}");
    }
    Ok(shape)
}

fn is_param_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn mcp_actions(cx: &mut Cx<'_>, node: &Node) -> Option<Vec<ir::Action>> {
    let items = cx.seq(node, "actions")?;
    let mut ok = true;
    let mut out: Vec<(ir::Action, Loc)> = Vec::with_capacity(items.len());
    for item in items {
        let (name_node, write) = match &item.kind {
            Kind::Str(_) => (item, None),
            Kind::Map(_) => {
                let Some(f) = cx.fields(item, "actions", "an MCP action", MCP_ACTION_KEYS) else {
                    ok = false;
                    continue;
                };
                let Some(n) = cx.required(&f, "name", "an MCP action", "give the MCP tool name")
                else {
                    ok = false;
                    continue;
                };
                let write = match f.get("write") {
                    Some(w) => match cx.bool(w, "write") {
                        Some(b) => Some(b),
                        None => {
                            ok = false;
                            continue;
                        }
                    },
                    None => None,
                };
                (n, write)
            }
            _ => {
                cx.error(
                    item,
                    format!(
                        "an MCP action must be a tool name or `{{name: ...}}`, found {}",
                        item.type_name()
                    ),
                    "list MCP tool names, e.g. `actions: [read_file, write_file]`",
                );
                ok = false;
                continue;
            }
        };
        // The MCP methods that read the server's data are governed by
        // listing the method itself as an action.
        let governed =
            matches!(&name_node.kind, Kind::Str(s) if MCP_GOVERNED.contains(&s.as_str()));
        let name = if governed {
            cx.str(name_node, "name")
        } else {
            cx.ident(name_node, "name")
        };
        let Some(name) = name else {
            ok = false;
            continue;
        };
        if let Some((_, first)) = out.iter().find(|(a, _)| a.name == name) {
            let d = cx
                .diag(Severity::Error, name_node, format!("duplicate action `{name}`"))
                .with_label("defined again here")
                .with_help(format!(
                    "action `{name}` is first listed at {}; action names must be unique within a tool",
                    first.describe()
                ))
                .with_secondary(&first.file, first.offset, first.len, "first listed here");
            cx.push(d);
            ok = false;
            continue;
        }
        let loc = cx.loc(name_node);
        out.push((mcp_action(name, write), loc));
    }
    ok.then(|| out.into_iter().map(|(a, _)| a).collect())
}

/// An MCP action: every `tools/call` is a POST, so it counts as a write
/// unless the catalog says otherwise; `resources/read` and `prompts/get`
/// read.
pub fn mcp_action(name: &str, write: Option<bool>) -> ir::Action {
    ir::Action {
        name: name.to_owned(),
        method: None,
        path: None,
        write: write.unwrap_or(!MCP_GOVERNED.contains(&name)),
    }
}

/// "`a`, `b`" list of a tool's action names, for help lines.
pub fn action_names(tool: &ir::Tool) -> String {
    let names: Vec<&str> = tool.actions.iter().map(|a| a.name.as_str()).collect();
    list(&names)
}

/// Whether an action name invented by an agent policy for an open MCP tool
/// is acceptable.
pub fn valid_mcp_name(name: &str) -> bool {
    valid_ident(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        assert_eq!(
            check_template("/v1/customers/{id}").unwrap(),
            "/v1/customers/{}"
        );
        assert_eq!(check_template("/").unwrap(), "/");
        assert_eq!(check_template("/a/").unwrap(), "/a/");
        assert!(check_template("v1").unwrap_err().contains("start with"));
        assert!(check_template("/a//b")
            .unwrap_err()
            .contains("empty segment"));
        assert!(check_template("/a/x{id}").unwrap_err().contains("exactly"));
        assert!(check_template("/a/{id").unwrap_err().contains("exactly"));
        assert!(check_template("/a/{1x}").unwrap_err().contains("exactly"));
        assert!(check_template("/a/{x}/{x}").unwrap_err().contains("twice"));
        assert!(check_template("/a?b=1")
            .unwrap_err()
            .contains("not allowed"));
    }
}
