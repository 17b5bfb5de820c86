//! MCP over Streamable HTTP: which JSON-RPC messages are tool calls (judged
//! by the agent's rules), which are protocol plumbing (allowed for an
//! agent with a rule for the server), and which are refused; the headers
//! that mirror the body must agree with it.

use crate::bundle::ToolEntry;
use crate::http::{header, HeaderValue, Headers, HttpError, PathBytes, Request};
use crate::params::Value;
use crate::reason::Reason;

/// MCP requests that carry no tool call and that pass for any agent with a
/// rule for the server: the session's lifecycle, discovery, the lists of
/// what the server offers, subscriptions, completions and the log level.
/// Notifications from the client (`notifications/...`) and its answers to
/// the server's own requests (elicitation, sampling, roots) pass too. The
/// agent's DLP still scans these bodies. Reading data ([`MCP_GOVERNED`])
/// is the policy's to allow; any other method is denied.
pub const MCP_PLUMBING: [&str; 11] = [
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "resources/list",
    "resources/templates/list",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "completion/complete",
    "logging/setLevel",
];

/// MCP methods that read the server's data: denied unless the catalog
/// lists the method as an action of the server (`actions: [get_weather,
/// resources/read]`), and then judged by the agent's rules for it like a
/// tool (conditions read `params.arguments`, the arguments of
/// `prompts/get`).
pub const MCP_GOVERNED: [&str; 2] = ["resources/read", "prompts/get"];

/// What [`Reason::McpPlumbing`] names for a client notification.
pub const MCP_NOTIFICATION: &str = "notifications/*";
/// What [`Reason::McpPlumbing`] names for a JSON-RPC response from the
/// client.
pub const MCP_RESPONSE: &str = "response";

pub(crate) enum McpCall {
    Tool(usize),
    Plumbing(&'static str),
}

/// Whether `method path` is a request to `tool`'s MCP server: POST carries
/// messages, GET opens the server's stream and DELETE ends the session
/// (Streamable HTTP).
pub(crate) fn reaches_mcp_server(tool: &ToolEntry, method: &str, path: &str) -> bool {
    matches!(method, "POST" | "GET" | "DELETE")
        && tool
            .mcp_path
            .as_ref()
            .is_some_and(|p| PathBytes::new(path).eq(p.bytes()))
}

/// `GET` (the server's stream of requests and notifications) and `DELETE`
/// (the end of a session) on an MCP server's path: plumbing, for a session
/// the server opened, with no body to judge.
#[allow(clippy::result_large_err)]
pub(crate) fn mcp_stream<'a, H: Headers + ?Sized>(
    req: &Request<'a, H>,
) -> Result<Reason<'a>, Reason<'a>> {
    let method = if req.method == "GET" { "GET" } else { "DELETE" };
    match header(req.headers, "mcp-session-id") {
        HeaderValue::One(v) if !v.trim_ascii().is_empty() => {}
        HeaderValue::Many => return Err(Reason::Http(HttpError::RepeatedHeader("mcp-session-id"))),
        _ => return Err(Reason::McpNoSession { method }),
    }
    match req.body {
        None => Err(Reason::NeedBody),
        Some(b) if !b.is_empty() => Err(Reason::McpStreamBody { method }),
        Some(_) => Ok(Reason::McpPlumbing { method }),
    }
}

/// Slots of an MCP tool: 0 `method`, 1 `params.name`, 2 `id`, 3 `jsonrpc`,
/// 4 `result`, 5 `error`.
#[allow(clippy::result_large_err)]
pub(crate) fn mcp_action<'a, H: Headers + ?Sized>(
    tool: &'a ToolEntry,
    body: &[u8],
    slots: &[Value<'_>],
    headers: &H,
) -> Result<McpCall, Reason<'a>> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Reason::McpNotObject);
    }
    let is_20 = matches!(slots.get(3), Some(Value::Text(v)) if v.eq_bytes(b"2.0"));
    if !is_20 {
        return Err(Reason::McpNotRequest);
    }
    let method = match slots.first() {
        Some(Value::Text(m)) => Some(m),
        Some(Value::Absent) | None => None,
        Some(_) => return Err(Reason::McpMethodDenied),
    };
    let has_id = matches!(slots.get(2), Some(Value::Num(_) | Value::Text(_)));
    // Headers mirrored from the body (MCP Streamable HTTP, 2026-07-28) must
    // agree with it: intermediaries route on them, the server reads the body.
    let name = match slots.get(1) {
        Some(Value::Text(n)) => Some(n),
        _ => None,
    };
    match header(headers, "mcp-method") {
        HeaderValue::Missing => {}
        HeaderValue::Many => return Err(Reason::McpHeaderMismatch("mcp-method")),
        HeaderValue::One(v) => {
            if !method.is_some_and(|m| m.eq_bytes(v.as_bytes())) {
                return Err(Reason::McpHeaderMismatch("mcp-method"));
            }
        }
    }
    match header(headers, "mcp-name") {
        HeaderValue::Missing => {}
        HeaderValue::Many => return Err(Reason::McpHeaderMismatch("mcp-name")),
        HeaderValue::One(v) => {
            let mut buf = [0u8; 256];
            let same = match (mcp_header_value(v, &mut buf), name) {
                (Some(h), Some(n)) => n.eq_bytes(h),
                _ => false,
            };
            if !same {
                return Err(Reason::McpHeaderMismatch("mcp-name"));
            }
        }
    }
    let Some(method) = method else {
        // The client's answer to a request of the server (elicitation,
        // sampling, roots): an id and exactly one of `result` and `error`.
        let present = |i: usize| slots.get(i).is_some_and(|v| !v.is_absent());
        return if has_id && present(4) != present(5) && name.is_none() {
            Ok(McpCall::Plumbing(MCP_RESPONSE))
        } else {
            Err(Reason::McpNotMessage)
        };
    };
    // Read as the server reads it: escapes decoded.
    const NOTIFICATIONS: &[u8] = b"notifications/";
    if method
        .bytes()
        .take(NOTIFICATIONS.len())
        .eq(NOTIFICATIONS.iter().copied())
    {
        return if has_id {
            Err(Reason::McpMethodDenied)
        } else {
            Ok(McpCall::Plumbing(MCP_NOTIFICATION))
        };
    }
    if let Some(m) = MCP_GOVERNED.iter().find(|m| method.eq_bytes(m.as_bytes())) {
        return tool
            .actions
            .iter()
            .position(|a| a.name == *m)
            .map(McpCall::Tool)
            .ok_or(Reason::McpMethodDenied);
    }
    if !method.eq_bytes(b"tools/call") {
        return MCP_PLUMBING
            .iter()
            .find(|m| method.eq_bytes(m.as_bytes()))
            .map(|m| McpCall::Plumbing(m))
            .ok_or(Reason::McpMethodDenied);
    }
    // A notification gets no answer, so it cannot be a tool call the
    // client waits on; refuse rather than guess what the server does.
    if !has_id {
        return Err(Reason::McpNotRequest);
    }
    let Some(name) = name else {
        return Err(Reason::McpBadName);
    };
    tool.actions
        .iter()
        .position(|a| name.eq_bytes(a.name.as_bytes()))
        .map(McpCall::Tool)
        .ok_or(Reason::UnknownMcpTool { tool: &tool.name })
}

/// An MCP header value: plain, or `=?base64?...?=` for names HTTP headers
/// cannot carry (markers are case-sensitive, as the spec says). `None` for
/// bad base64 or a name over 256 bytes.
fn mcp_header_value<'b>(v: &'b str, buf: &'b mut [u8; 256]) -> Option<&'b [u8]> {
    use base64::Engine as _;
    let v = v.trim();
    match v
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(b64) => {
            let n = base64::engine::general_purpose::STANDARD
                .decode_slice(b64.as_bytes(), buf)
                .ok()?;
            buf.get(..n)
        }
        None => Some(v.as_bytes()),
    }
}
