//! The evaluator: one request in, one decision out.
//!
//! Pipeline (first verdict wins): request shape (one meaning for the
//! authority, path and framing headers, see [`crate::http`]), identity,
//! egress, tool + action match, conditions, DLP. Nothing on this path
//! allocates: parameters are borrowed slices of the request, predicates
//! compare decoded bytes on the fly and the scratch space (DLP buffers,
//! object keys, inflated gzip) is reused across requests.

use crate::bundle::{
    agent_key, AgentEntry, Bundle, Limits, Lit, PredEntry, PredOp, RuleEntry, TSeg, ToolEntry,
};
use crate::dfa::{full_match, full_match_parts, is_match};
use crate::dlp;
use crate::http::{self, header, HeaderValue, Headers, HttpError, PathBytes};
use crate::index::{agent_hash, host_hash};
use crate::jwt::{self, CacheHit, JwtError, TokenCache, TokenCacheConfig};
use crate::params::{
    extract_form, extract_json, extract_json_with, parse_number, Enc, ExtractError, KeySet,
    ParamPaths, Text, Value, MAX_PARAMS,
};
use crate::types::{Approval, BodyKind, Mode};
use core::fmt;

/// No parameters: what a tool without prepared paths would read (the
/// loader prepares them for every tool).
static NO_PARAMS: ParamPaths = ParamPaths::EMPTY;

/// The parts of an HTTP request the evaluator reads.
pub struct Request<'r, H: ?Sized> {
    pub method: &'r str,
    /// `:authority` / `Host`, possibly with a port.
    pub authority: &'r str,
    /// Path with query string.
    pub path: &'r str,
    pub headers: &'r H,
    /// `None`: the body has not arrived yet (headers phase).
    pub body: Option<&'r [u8]>,
}

/// Who is calling.
#[derive(Debug, Clone, Copy)]
pub enum Caller<'r> {
    /// Authenticated elsewhere (test cases, trusted callers).
    Given {
        agent: &'r str,
        tenant: Option<&'r str>,
    },
    /// Authenticate from the request (token or, in insecure mode, header).
    FromRequest,
    /// The agent a previous decision on the same request (and the same
    /// bundle) authenticated: [`Decision::caller`]. The body phase of a
    /// request passes it so that a token is verified once per request.
    Known(AgentRef),
}

/// An agent of one loaded bundle, found by an earlier decision. Only that
/// bundle's [`Bundle::decide`] understands it; another bundle treats it as
/// an unknown agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentRef(u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
    Sanitize,
    ApprovalNeeded,
    /// The decision needs the request body; call again with it.
    NeedBody,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Sanitize => "sanitize",
            Verdict::ApprovalNeeded => "approval_needed",
            Verdict::NeedBody => "need_body",
        }
    }
}

/// Why; rendered as one human sentence by `Display`.
#[derive(Debug, Clone, Copy)]
pub enum Reason<'a> {
    Allowed {
        rule: &'a str,
    },
    NeedBody,
    NoIdentityConfigured,
    /// The request line or framing headers have no single meaning.
    Http(HttpError),
    /// No token header (`header`: the one the identity names).
    MissingToken {
        header: &'a str,
    },
    /// No token header, but a token in the query string.
    TokenInQuery {
        header: &'a str,
    },
    MultipleTokens {
        header: &'a str,
    },
    BadAuthScheme {
        header: &'a str,
    },
    InvalidToken(JwtError),
    MissingAgentHeader,
    UnknownAgent,
    EgressDenied {
        host: &'a str,
    },
    UnknownHost {
        host: &'a str,
    },
    UnknownRoute {
        method: &'a str,
        host: &'a str,
        path: &'a str,
    },
    McpNotObject,
    McpMethodDenied,
    McpBadName,
    /// Not `"jsonrpc": "2.0"`, or a `tools/call` without an `id`.
    McpNotRequest,
    /// `Mcp-Method` / `Mcp-Name` disagree with the body (the MCP
    /// `HeaderMismatch` error).
    McpHeaderMismatch(&'static str),
    UnknownMcpTool {
        tool: &'a str,
    },
    McpPlumbing {
        method: &'static str,
    },
    /// `GET` or `DELETE` on an MCP server's path without `mcp-session-id`.
    McpNoSession {
        method: &'static str,
    },
    /// `GET` or `DELETE` on an MCP server's path with a body.
    McpStreamBody {
        method: &'static str,
    },
    /// A JSON-RPC message that is neither a request, a notification nor a
    /// response.
    McpNotMessage,
    NotPermitted {
        tool: &'a str,
        action: &'a str,
    },
    NoRuleApplies {
        tool: &'a str,
        action: &'a str,
    },
    ConditionFailed {
        param: &'a [alloc::string::String],
        op: &'a PredOp,
        missing: bool,
        mcp: bool,
    },
    ApprovalRequired {
        rule: &'a str,
    },
    BadRequest(ExtractError),
    Gzip(crate::gzip::GzipError),
    DlpDenied {
        detector: &'a str,
    },
    DlpError(dlp::DlpError),
    Sanitized(Redactions<'a>),
    Internal(&'static str),
}

/// Per-detector counts of what DLP rewrote.
#[derive(Clone, Copy)]
pub struct Redactions<'a> {
    scanner: &'a dlp::Scanner,
    counts: [u32; dlp::MAX_PATTERNS],
}

impl<'a> Redactions<'a> {
    /// `(detector, count)` for every detector that fired.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, u32)> + '_ {
        self.scanner
            .pattern_names()
            .zip(self.counts.iter().copied())
            .filter(|(_, c)| *c > 0)
    }
}

impl fmt::Debug for Redactions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl fmt::Display for Redactions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, n)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name}: {n}")?;
        }
        Ok(())
    }
}

struct Dotted<'a>(&'a [alloc::string::String], bool);

impl fmt::Display for Dotted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // MCP parameters live under `params.arguments`; show the name the
        // policy used.
        let skip = if self.1 { 2 } else { 0 };
        for (i, s) in self.0.iter().skip(skip).enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            f.write_str(s)?;
        }
        Ok(())
    }
}

struct LitFmt<'a>(&'a Lit);

impl fmt::Display for LitFmt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Lit::Str(s) => f.write_str(s),
            Lit::Num(n) => write!(f, "{n}"),
            Lit::Bool(b) => write!(f, "{b}"),
        }
    }
}

struct ListFmt<'a>(&'a [Lit]);

impl fmt::Display for ListFmt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, l) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", LitFmt(l))?;
        }
        Ok(())
    }
}

impl fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Allowed { rule } => write!(f, "allowed by rule `{rule}`"),
            Reason::NeedBody => f.write_str("decision needs the request body"),
            Reason::NoIdentityConfigured => f.write_str(
                "no identity configuration in the policy bundle: requests cannot be authenticated",
            ),
            Reason::Http(e) => write!(f, "{e}"),
            Reason::MissingToken { header } => {
                write!(f, "missing bearer token in `{header}` header")
            }
            Reason::TokenInQuery { header } => write!(
                f,
                "agent token in the query string is not accepted; send it in the `{header}` header"
            ),
            Reason::MultipleTokens { header } => {
                write!(f, "more than one `{header}` header or credential")
            }
            Reason::BadAuthScheme { header } => {
                write!(f, "`{header}` header is not a bearer token")
            }
            Reason::InvalidToken(e) => write!(f, "invalid agent token: {e}"),
            Reason::MissingAgentHeader => f.write_str("missing or repeated `x-aegis-agent` header"),
            Reason::UnknownAgent => {
                f.write_str("the authenticated agent has no policy (default deny)")
            }
            Reason::EgressDenied { host } => {
                write!(f, "host `{host}` is not in the agent's egress allowlist")
            }
            Reason::UnknownHost { host } => write!(f, "no tool is registered for host `{host}`"),
            Reason::UnknownRoute { method, host, path } => {
                write!(
                    f,
                    "`{} {host}{}` matches no action of any tool",
                    Shown(method),
                    Shown(path)
                )
            }
            Reason::McpNotObject => f.write_str(
                "mcp request must be a single json-rpc object (batches are not accepted)",
            ),
            Reason::McpMethodDenied => f.write_str("mcp method is not allowed"),
            Reason::McpBadName => f.write_str("mcp `tools/call` without a string `params.name`"),
            Reason::McpNotRequest => f.write_str(
                "mcp `tools/call` must be a json-rpc 2.0 request with an `id` (`jsonrpc: \"2.0\"`)",
            ),
            Reason::McpHeaderMismatch(h) => {
                write!(f, "mcp header `{h}` does not match the json-rpc body")
            }
            Reason::UnknownMcpTool { tool } => {
                write!(f, "mcp tool name is not an action of `{tool}`")
            }
            Reason::McpPlumbing { method } => write!(f, "mcp protocol method `{method}` allowed"),
            Reason::McpNoSession { method } => write!(
                f,
                "mcp `{method}` without an `mcp-session-id` header (initialize a session first)"
            ),
            Reason::McpStreamBody { method } => {
                write!(f, "mcp `{method}` must not carry a body")
            }
            Reason::McpNotMessage => f.write_str(
                "json-rpc message has no `method` and is not a response (`id` with `result` or `error`)",
            ),
            Reason::NotPermitted { tool, action } => {
                write!(
                    f,
                    "agent may not call `{action}` on `{tool}` (default deny)"
                )
            }
            Reason::NoRuleApplies { tool, action } => write!(
                f,
                "no rule for `{action}` on `{tool}` applies to this request (`when` did not match)"
            ),
            Reason::ConditionFailed {
                param,
                op,
                missing,
                mcp,
            } => {
                let p = Dotted(param, *mcp);
                if *missing && !matches!(op, PredOp::Absent) {
                    return write!(f, "condition failed: `{p}` is missing");
                }
                match op {
                    PredOp::Eq(l) => write!(f, "condition failed: `{p}` must equal `{}`", LitFmt(l)),
                    PredOp::Ne(l) => {
                        write!(f, "condition failed: `{p}` must not equal `{}`", LitFmt(l))
                    }
                    PredOp::In(l) => {
                        write!(f, "condition failed: `{p}` must be one of [{}]", ListFmt(l))
                    }
                    PredOp::NotIn(l) => {
                        write!(
                            f,
                            "condition failed: `{p}` must not be one of [{}]",
                            ListFmt(l)
                        )
                    }
                    PredOp::Lt(n) => write!(f, "condition failed: `{p}` must be a number < {n}"),
                    PredOp::Le(n) => write!(f, "condition failed: `{p}` must be a number <= {n}"),
                    PredOp::Gt(n) => write!(f, "condition failed: `{p}` must be a number > {n}"),
                    PredOp::Ge(n) => write!(f, "condition failed: `{p}` must be a number >= {n}"),
                    PredOp::Matches(_) => write!(
                        f,
                        "condition failed: `{p}` does not match the required pattern"
                    ),
                    PredOp::NotMatches(_) => {
                        write!(f, "condition failed: `{p}` matches a forbidden pattern")
                    }
                    PredOp::Exists => write!(f, "condition failed: `{p}` is missing"),
                    PredOp::Absent => write!(f, "condition failed: `{p}` must be absent"),
                }
            }
            Reason::ApprovalRequired { rule } => {
                write!(f, "rule `{rule}` requires human approval")
            }
            Reason::BadRequest(e) => write!(f, "{e}"),
            Reason::Gzip(e) => write!(f, "{e}"),
            Reason::DlpDenied { detector } => {
                write!(f, "request body contains sensitive data ({detector})")
            }
            Reason::DlpError(e) => write!(f, "{e}"),
            Reason::Sanitized(r) => {
                write!(f, "sensitive data in the request body was sanitized ({r})")
            }
            Reason::Internal(e) => write!(f, "internal error: {e}"),
        }
    }
}

impl Reason<'_> {
    /// The HTTP status a request refused for this reason is answered with:
    /// 413 for a body over `max_body_bytes`, 500 for a failure of the
    /// evaluator itself, 403 for every other refusal. Meaningless for the
    /// reasons that let a request through.
    pub fn status(&self) -> u16 {
        match self {
            Reason::Http(e) => e.status(),
            Reason::Internal(_) => 500,
            _ => 403,
        }
    }

    /// The refusal judges the tool call an MCP `tools/call` asked for (the
    /// agent reads it as the tool's result and can change course), not the
    /// message that carried it.
    pub fn refuses_tool_call(&self) -> bool {
        matches!(
            self,
            Reason::UnknownMcpTool { .. }
                | Reason::NotPermitted { .. }
                | Reason::NoRuleApplies { .. }
                | Reason::ConditionFailed { .. }
                | Reason::ApprovalRequired { .. }
                | Reason::DlpDenied { .. }
        )
    }
}

/// The verdict and everything a decision log needs.
#[derive(Debug, Clone, Copy)]
pub struct Decision<'a> {
    pub verdict: Verdict,
    pub reason: Reason<'a>,
    pub agent: Option<&'a str>,
    pub tool: Option<&'a str>,
    pub action: Option<&'a str>,
    pub rule: Option<&'a str>,
    pub mode: Mode,
    /// DLP set whose counts are in the scratch (sanitize and DLP deny).
    pub dlp_set: Option<u32>,
    pub cost_usd: Option<f64>,
    /// The action writes (POST/PUT/PATCH/DELETE or marked `write: true`).
    pub write: bool,
    /// The authenticated caller, for a later decision on the same request
    /// (see [`Caller::Known`]).
    pub caller: Option<AgentRef>,
    /// The request went to an MCP server: a refusal is answered in MCP's
    /// own shape where the message has an id ([`Scratch::rpc_id`]).
    pub mcp: bool,
}

impl<'a> Decision<'a> {
    fn new(verdict: Verdict, reason: Reason<'a>) -> Self {
        Decision {
            verdict,
            reason,
            agent: None,
            tool: None,
            action: None,
            rule: None,
            mode: Mode::Enforce,
            dlp_set: None,
            cost_usd: None,
            write: false,
            caller: None,
            mcp: false,
        }
    }
}

/// Request text shown in a reason: at most 96 bytes, anything but
/// printable ASCII as `?`, so a reason never carries a whole payload or a
/// control character into a log line.
struct Shown<'a>(&'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 96;
        for (i, b) in self.0.bytes().enumerate() {
            if i == MAX {
                return f.write_str("...");
            }
            let c = if b.is_ascii_graphic() && b != b'`' {
                b as char
            } else {
                '?'
            };
            fmt::Write::write_char(f, c)?;
        }
        Ok(())
    }
}

/// Reusable per-worker memory for decisions (DLP buffers, the keys of the
/// JSON objects being read). Allocated once; a decision allocates nothing.
#[derive(Debug)]
pub struct Scratch {
    pub dlp: dlp::Scratch,
    /// The JSON-RPC id of the last decision's MCP request, if it had one.
    pub rpc_id: RpcId,
    /// Verified agent tokens (off unless made by [`Scratch::for_bundle`]
    /// for a bundle that verifies tokens).
    pub tokens: TokenCache,
    keys: KeySet,
    inflater: crate::gzip::Inflater,
    wrapped: alloc::vec::Vec<u8>,
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

impl Scratch {
    /// Sized for the default limits.
    pub fn new() -> Self {
        Self::with_limits(&Limits::default())
    }

    /// Sized for a bundle's limits, with no room yet for inflating gzip
    /// bodies (the first one grows it).
    pub fn with_limits(limits: &Limits) -> Self {
        Scratch {
            dlp: dlp::Scratch::new(),
            rpc_id: RpcId::new(),
            keys: KeySet::with_capacity(limits.max_params as usize),
            inflater: crate::gzip::Inflater::new(0),
            wrapped: alloc::vec::Vec::new(),
            tokens: TokenCache::off(),
        }
    }

    /// Sized for everything `bundle` may need, so that no decision ever
    /// allocates: with a tool that reads gzip, room for `max_body_bytes`
    /// of inflated body; with a bundle that verifies agent tokens, a
    /// verified-token cache of the default size
    /// ([`TokenCacheConfig::DEFAULT`]).
    pub fn for_bundle(bundle: &Bundle) -> Self {
        Self::for_bundle_with(bundle, TokenCacheConfig::DEFAULT)
    }

    /// [`Scratch::for_bundle`] with a token cache of the given size (made
    /// only when the bundle verifies tokens).
    pub fn for_bundle_with(bundle: &Bundle, token_cache: TokenCacheConfig) -> Self {
        let limits = bundle.model.limits;
        let mut s = Self::with_limits(&limits);
        if bundle.model.tools.iter().any(|t| t.gzip) {
            s.inflater = crate::gzip::Inflater::new(limits.max_body_bytes as usize);
        }
        let verifies_tokens = bundle.keys.is_some()
            && bundle
                .model
                .identity
                .as_ref()
                .is_some_and(|i| !i.insecure_agent_header);
        if verifies_tokens {
            s.tokens = TokenCache::new(token_cache);
        }
        s
    }
}

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

/// Longest JSON-RPC `id` (as JSON text, quotes included) a decision keeps
/// to answer the request with.
pub const RPC_ID_MAX: usize = 128;

/// The JSON-RPC `id` of the MCP request a decision read, as JSON text (a
/// number as sent, a string with its quotes and escapes as sent), so that
/// a refusal answers that very request. Kept in the [`Scratch`]: a
/// decision allocates nothing.
#[derive(Clone)]
pub struct RpcId {
    buf: [u8; RPC_ID_MAX],
    len: usize,
}

impl RpcId {
    const fn new() -> Self {
        RpcId {
            buf: [0; RPC_ID_MAX],
            len: 0,
        }
    }

    /// The id as JSON text; `None` when the message had no usable id (a
    /// notification, a batch, a body that is not JSON, an id longer than
    /// [`RPC_ID_MAX`]).
    pub fn json(&self) -> Option<&[u8]> {
        self.buf.get(..self.len).filter(|b| !b.is_empty())
    }

    fn clear(&mut self) {
        self.len = 0;
    }

    fn set(&mut self, v: &Value<'_>) {
        self.len = 0;
        let (quote, raw) = match v {
            Value::Num(n) => (false, *n),
            // The string as it stood between its quotes.
            Value::Text(t) if matches!(t.enc, Enc::Json | Enc::Plain) => (true, t.raw),
            _ => return,
        };
        let q = usize::from(quote);
        let n = raw.len() + 2 * q;
        let Some(out) = self.buf.get_mut(..n) else {
            return;
        };
        if quote {
            if let Some((first, rest)) = out.split_first_mut() {
                *first = b'"';
                if let Some((last, mid)) = rest.split_last_mut() {
                    *last = b'"';
                    mid.copy_from_slice(raw);
                }
            }
        } else {
            out.copy_from_slice(raw);
        }
        self.len = n;
    }
}

impl fmt::Debug for RpcId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.json() {
            Some(b) => write!(
                f,
                "RpcId({})",
                Shown(core::str::from_utf8(b).unwrap_or("?"))
            ),
            None => f.write_str("RpcId(none)"),
        }
    }
}

fn ends_with_ignore_case(host: &str, suffix: &str) -> bool {
    host.len() > suffix.len()
        && host
            .get(host.len() - suffix.len()..)
            .is_some_and(|t| t.eq_ignore_ascii_case(suffix))
}

impl Bundle {
    /// The request headers that carry the agent's credential: the token
    /// header, or with `insecure_agent_header` the agent and tenant
    /// headers. The proxy removes them before a request goes upstream, so
    /// a tool never sees an agent's token.
    pub fn credential_headers(&self) -> impl Iterator<Item = &str> {
        let id = self.model.identity.as_ref();
        let insecure = id.is_some_and(|i| i.insecure_agent_header);
        let token = id.filter(|_| !insecure).map(|i| i.token_header.as_str());
        let agent = insecure.then_some(["x-aegis-agent", "x-aegis-tenant"]);
        token.into_iter().chain(agent.into_iter().flatten())
    }

    /// Whether `method host path` goes to an MCP server of the catalog
    /// (for answering a refusal in MCP's shape before the tool is matched).
    fn is_mcp_server(&self, method: &str, host: &str, path: &str) -> bool {
        self.tools_for_host(host, host_hash(host))
            .iter()
            .filter_map(|&t| self.model.tools.get(usize::from(t)))
            .any(|t| reaches_mcp_server(t, method, path))
    }

    /// The agent an earlier decision on this bundle found.
    pub(crate) fn agent(&self, r: AgentRef) -> Option<&AgentEntry> {
        usize::try_from(r.0)
            .ok()
            .and_then(|i| self.model.agents.get(i))
    }

    /// The rules of `agent` for (tool, action), in policy order.
    pub(crate) fn rules_for(
        &self,
        agent: &AgentEntry,
        tool: usize,
        action: usize,
    ) -> Option<&[RuleEntry]> {
        let i = agent
            .table
            .binary_search_by(|e| (usize::from(e.tool), usize::from(e.action)).cmp(&(tool, action)))
            .ok()?;
        let e = agent.table.get(i)?;
        self.model.rules.get(e.rules.range())
    }

    pub(crate) fn find_agent(
        &self,
        tenant: Option<&str>,
        name: &str,
    ) -> Option<(AgentRef, &AgentEntry)> {
        let key = (tenant, name);
        let agents = &self.model.agents;
        let i = self.agent_index.find(agent_hash(tenant, name), |i| {
            agents.get(i).is_some_and(|a| agent_key(a) == key)
        })?;
        Some((AgentRef(u32::try_from(i).ok()?), agents.get(i)?))
    }

    /// Tools registered for `host` (`hash`: its [`host_hash`]).
    fn tools_for_host(&self, host: &str, hash: u64) -> &[u16] {
        let exact = &self.model.exact_hosts;
        if let Some(i) = self.host_index.find(hash, |i| {
            exact
                .get(i)
                .is_some_and(|(h, _)| h.eq_ignore_ascii_case(host))
        }) {
            return exact.get(i).map_or(&[], |(_, t)| t.as_slice());
        }
        self.model
            .wildcard_hosts
            .iter()
            .find(|(s, _)| ends_with_ignore_case(host, s))
            .map_or(&[], |(_, t)| t.as_slice())
    }

    /// Whether `agent` may reach `host` (`hash`: its [`host_hash`]).
    fn egress_allowed(&self, who: AgentRef, agent: &AgentEntry, host: &str, hash: u64) -> bool {
        let Some(list) = &agent.allow_hosts else {
            return true;
        };
        let by_hash = self
            .egress_hashes
            .get(who.0 as usize)
            .map_or(&[][..], |v| v.as_slice());
        let from = by_hash.partition_point(|(h, _)| *h < hash);
        by_hash
            .get(from..)
            .unwrap_or_default()
            .iter()
            .take_while(|(h, _)| *h == hash)
            .any(|(_, i)| {
                list.exact
                    .get(*i as usize)
                    .is_some_and(|e| e.eq_ignore_ascii_case(host))
            })
            || list.suffixes.iter().any(|s| ends_with_ignore_case(host, s))
    }

    // `Reason` is large only for its sanitize variant; boxing it would
    // allocate on the decision path.
    #[allow(clippy::result_large_err)]
    fn authenticate<'a, H: Headers + ?Sized>(
        &'a self,
        req: &Request<'a, H>,
        query: Option<&str>,
        now: i64,
        tokens: &mut TokenCache,
    ) -> Result<(AgentRef, &'a AgentEntry), Reason<'a>> {
        let Some(idc) = &self.model.identity else {
            return Err(Reason::NoIdentityConfigured);
        };
        if idc.insecure_agent_header {
            let HeaderValue::One(agent) = header(req.headers, "x-aegis-agent") else {
                return Err(Reason::MissingAgentHeader);
            };
            let tenant = match header(req.headers, "x-aegis-tenant") {
                HeaderValue::One(t) => Some(t),
                HeaderValue::Missing => None,
                HeaderValue::Many => return Err(Reason::MissingAgentHeader),
            };
            return self.find_agent(tenant, agent).ok_or(Reason::UnknownAgent);
        }
        let name = idc.token_header.as_str();
        let value = match header(req.headers, name) {
            HeaderValue::Missing if query.is_some_and(has_query_token) => {
                return Err(Reason::TokenInQuery { header: name })
            }
            HeaderValue::Missing => return Err(Reason::MissingToken { header: name }),
            HeaderValue::Many => return Err(Reason::MultipleTokens { header: name }),
            // HTTP/1 proxies join repeated headers with commas; a JWT never
            // contains one, so a comma means several credentials.
            HeaderValue::One(v) if v.contains(',') => {
                return Err(Reason::MultipleTokens { header: name })
            }
            HeaderValue::One(v) => v,
        };
        // The authorization headers carry a scheme; a header of the
        // policy's own may carry the bare token.
        let token = match value.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
            None if !name.ends_with("authorization") => value,
            _ => return Err(Reason::BadAuthScheme { header: name }),
        };
        let Some(keys) = &self.keys else {
            return Err(Reason::NoIdentityConfigured);
        };
        let token = token.as_bytes();
        match tokens.lookup(&self.hash, token, idc, now) {
            Some(CacheHit::Valid(i)) => {
                let agent = self.agent(AgentRef(i)).ok_or(Reason::UnknownAgent)?;
                return Ok((AgentRef(i), agent));
            }
            Some(CacheHit::Invalid(e)) => return Err(Reason::InvalidToken(e)),
            None => {}
        }
        let (p, validity) =
            jwt::verify_with_validity(token, idc, keys, now).map_err(Reason::InvalidToken)?;
        let found = self
            .find_agent(p.tenant.as_ref().map(|t| t.as_str()), p.agent.as_str())
            .ok_or(Reason::UnknownAgent)?;
        tokens.insert(&self.hash, token, found.0 .0, validity);
        Ok(found)
    }

    /// Judges one request. With `req.body == None` the result may be
    /// `NeedBody`; call again once the whole body is there.
    pub fn decide<'a, H: Headers + ?Sized>(
        &'a self,
        req: &Request<'a, H>,
        caller: Caller<'a>,
        now: i64,
        scratch: &mut Scratch,
    ) -> Decision<'a> {
        scratch.rpc_id.clear();
        // 0. one meaning for the request line, or none at all
        if req.method.eq_ignore_ascii_case("CONNECT") {
            return Decision::new(Verdict::Deny, Reason::Http(HttpError::Connect));
        }
        let shape = http::split_path(req.path).and_then(|(p, q)| {
            let host = http::host_of(req.authority)?;
            http::check_host_header(req.headers, host)?;
            Ok((host, p, q))
        });
        let (host, path, query) = match shape {
            Ok(s) => s,
            Err(e) => return Decision::new(Verdict::Deny, Reason::Http(e)),
        };

        // 1. identity
        let agent = match caller {
            Caller::Given { agent, tenant } => {
                let (tenant, name) = match (tenant, http::split_once_ascii(agent, b'/')) {
                    (None, Some((t, a))) => (Some(t), a),
                    _ => (tenant, agent),
                };
                self.find_agent(tenant, name).ok_or(Reason::UnknownAgent)
            }
            Caller::FromRequest => self.authenticate(req, query, now, &mut scratch.tokens),
            Caller::Known(r) => self.agent(r).map(|a| (r, a)).ok_or(Reason::UnknownAgent),
        };
        let (caller, agent) = match agent {
            Ok(a) => a,
            Err(r) => {
                let mut d = Decision::new(Verdict::Deny, r);
                d.mcp = self.is_mcp_server(req.method, host, path);
                return d;
            }
        };
        let mut d = Decision::new(Verdict::Deny, Reason::Internal("unset"));
        d.caller = Some(caller);
        d.agent = Some(&agent.id);
        d.mode = agent.mode;

        // 2. egress
        let hash = host_hash(host);
        if !self.egress_allowed(caller, agent, host, hash) {
            d.reason = Reason::EgressDenied { host };
            d.mcp = self.is_mcp_server(req.method, host, path);
            return d;
        }

        // 3. tool + action
        let mut found: Option<(usize, &ToolEntry, Option<usize>)> = None;
        let plain_path = !path.as_bytes().contains(&b'%');
        for &ti in self.tools_for_host(host, hash) {
            let ti = usize::from(ti);
            let Some(tool) = self.model.tools.get(ti) else {
                continue;
            };
            if tool.mcp_path.is_some() {
                if reaches_mcp_server(tool, req.method, path) {
                    found = Some((ti, tool, None));
                    break;
                }
            } else if let Some(Some(dfa)) = self.routes.get(ti) {
                // Routes read `%XX` of an unreserved character as the
                // character; a path with no `%` is read as it is.
                let pid = if plain_path {
                    full_match_parts(dfa, &[req.method.as_bytes(), b" ", path.as_bytes()])
                } else {
                    let line = req
                        .method
                        .bytes()
                        .chain(core::iter::once(b' '))
                        .chain(PathBytes::new(path));
                    full_match(dfa, line)
                };
                if let Some(pid) = pid {
                    let action = tool.route_actions.get(pid).map(|a| usize::from(*a));
                    found = Some((ti, tool, action));
                    break;
                }
            }
        }
        let Some((ti, tool, action)) = found else {
            d.reason = if self.tools_for_host(host, hash).is_empty() {
                Reason::UnknownHost { host }
            } else {
                Reason::UnknownRoute {
                    method: req.method,
                    host,
                    path,
                }
            };
            return d;
        };
        d.tool = Some(&tool.name);
        let is_mcp = tool.mcp_path.is_some();
        d.mcp = is_mcp;

        // For an HTTP tool the action is known from the route; see whether
        // the agent may call it before looking at any body.
        if let Some(ai) = action {
            let Some(a) = tool.actions.get(ai) else {
                d.reason = Reason::Internal("route action");
                return d;
            };
            d.action = Some(&a.name);
            d.write = a.write || matches!(req.method, "POST" | "PUT" | "PATCH" | "DELETE");
            if self.rules_for(agent, ti, ai).is_none() {
                d.reason = Reason::NotPermitted {
                    tool: &tool.name,
                    action: &a.name,
                };
                return d;
            }
        } else if !agent.table.iter().any(|e| usize::from(e.tool) == ti) {
            // MCP server this agent has no rule for at all.
            d.reason = Reason::NotPermitted {
                tool: &tool.name,
                action: "*",
            };
            return d;
        }
        if is_mcp && req.method != "POST" {
            return mcp_stream(d, req);
        }

        // A JSON or form body is always read, even when no rule looks at
        // it: a malformed or ambiguous body is denied, never waved through.
        // DLP scans any body, whatever the tool's body kind.
        let kind = if is_mcp { BodyKind::Json } else { tool.body };
        let limits = self.model.limits;
        let has_body = req.body.is_some_and(|b| !b.is_empty());
        let mut framing = http::check_body_headers(req.headers, kind, tool.gzip, has_body);
        if framing.is_ok()
            && req
                .body
                .is_some_and(|b| b.len() > limits.max_body_bytes as usize)
        {
            framing = Err(HttpError::BodyTooLarge {
                limit: limits.max_body_bytes,
            });
        }
        let coding = match framing {
            Ok(c) => c,
            Err(e) => {
                d.reason = Reason::Http(e);
                return d;
            }
        };
        let gzip = coding == http::Coding::Gzip;
        let needs_body = is_mcp || gzip || agent.dlp.is_some() || tool.body != BodyKind::None;
        let body = match req.body {
            Some(b) => b,
            None if needs_body => {
                d.verdict = Verdict::NeedBody;
                d.reason = Reason::NeedBody;
                return d;
            }
            None => &[],
        };
        let Scratch {
            dlp: dlp_scratch,
            rpc_id,
            keys,
            inflater,
            wrapped,
            tokens: _,
        } = scratch;
        // A gzip body is judged on what it inflates to.
        let body = if gzip && !body.is_empty() {
            match inflater.inflate(body, limits.max_body_bytes) {
                Ok(b) => b,
                Err(e) => {
                    d.reason = Reason::Gzip(e);
                    return d;
                }
            }
        } else {
            body
        };

        // Parameters: path template, query string, body.
        let mut slots = [Value::Absent; MAX_PARAMS];
        if let Some(ai) = action {
            if let Some(a) = tool.actions.get(ai) {
                bind_template(&a.template, path, &mut slots);
            }
        }
        // With DLP on a JSON body, the walk that reads the parameters also
        // hands every string to the scanner: the body is read once. What
        // it finds is used in step 5, after the rules.
        let scanner = agent.dlp.and_then(|set| self.scanners.get(set as usize));
        let mut json_dlp = match scanner {
            Some(sc) if tool.body == BodyKind::Json && !body.is_empty() => {
                Some((sc, sc.json_begin(body, dlp_scratch)))
            }
            _ => None,
        };
        let extracted = (|| {
            // An MCP server reads its arguments from the JSON-RPC body only;
            // a query string must not fill in what the body leaves out.
            keys.clear();
            if let Some(q) = query.filter(|_| !is_mcp) {
                extract_form(
                    q.as_bytes(),
                    &tool.params,
                    &mut slots,
                    limits.max_params as usize,
                    keys,
                )?;
            }
            if !body.is_empty() {
                match tool.body {
                    BodyKind::Json => {
                        let first = body.iter().find(|b| !b.is_ascii_whitespace());
                        if !is_mcp && first != Some(&b'{') {
                            return Err(ExtractError::NotObject);
                        }
                        // Query keys and body keys are different names
                        // (a watched parameter given in both is caught by
                        // its slot).
                        keys.clear();
                        let paths = self.param_paths.get(ti).unwrap_or(&NO_PARAMS);
                        let depth = limits.max_json_depth as usize;
                        let most = limits.max_params as usize;
                        match json_dlp.as_mut() {
                            // Without DLP the walk is built with nothing to
                            // hand the strings to.
                            None => extract_json(body, paths, &mut slots, depth, most, keys)?,
                            Some((sc, scan)) => extract_json_with(
                                body,
                                paths,
                                &mut slots,
                                depth,
                                most,
                                keys,
                                |text, quoted| sc.json_text(scan, text, quoted, dlp_scratch),
                            )?,
                        }
                    }
                    BodyKind::Form => extract_form(
                        body,
                        &tool.params,
                        &mut slots,
                        limits.max_params as usize,
                        keys,
                    )?,
                    BodyKind::None => {}
                }
            }
            Ok::<(), ExtractError>(())
        })();
        // A request to an MCP server is answered by its id, also when it is
        // refused for a flaw found after the id was read.
        if is_mcp && matches!(slots.first(), Some(Value::Text(_))) {
            if let Some(id) = slots.get(2) {
                rpc_id.set(id);
            }
        }
        if let Err(e) = extracted {
            d.reason = Reason::BadRequest(e);
            return d;
        }

        // MCP: the action is the JSON-RPC tool name; protocol messages pass
        // without a rule, on to DLP.
        let (ai, plumbing) = match action {
            Some(ai) => (Some(ai), None),
            None => match mcp_action(tool, body, &slots, req.headers) {
                Ok(McpCall::Tool(ai)) => (Some(ai), None),
                Ok(McpCall::Plumbing(method)) => (None, Some(method)),
                Err(r) => {
                    d.reason = r;
                    return d;
                }
            },
        };
        if let Some(ai) = ai {
            let Some(a) = tool.actions.get(ai) else {
                d.reason = Reason::Internal("action");
                return d;
            };
            d.action = Some(&a.name);
            if is_mcp {
                d.write = a.write || req.method == "POST";
            }
            let Some(rules) = self.rules_for(agent, ti, ai) else {
                d.reason = Reason::NotPermitted {
                    tool: &tool.name,
                    action: &a.name,
                };
                return d;
            };

            // 4. conditions
            let mut chosen = None;
            for r in rules {
                let preds = self.model.preds.get(r.when.range()).unwrap_or_default();
                if preds.iter().all(|p| self.holds(p, &slots)) {
                    chosen = Some(r);
                    break;
                }
            }
            let Some(rule) = chosen else {
                d.reason = Reason::NoRuleApplies {
                    tool: &tool.name,
                    action: &a.name,
                };
                return d;
            };
            d.rule = Some(&rule.id);
            d.cost_usd = rule.cost_usd;
            let conds = self.model.preds.get(rule.conds.range()).unwrap_or_default();
            if let Some(p) = conds.iter().find(|p| !self.holds(p, &slots)) {
                let param = tool
                    .params
                    .get(usize::from(p.slot))
                    .map_or(&[][..], |v| v.as_slice());
                d.reason = Reason::ConditionFailed {
                    param,
                    op: &p.op,
                    missing: slots.get(usize::from(p.slot)).is_none_or(Value::is_absent),
                    mcp: is_mcp,
                };
                if rule.approval == Approval::OnFailure {
                    d.verdict = Verdict::ApprovalNeeded;
                }
                return d;
            }
            if rule.approval == Approval::Always {
                d.verdict = Verdict::ApprovalNeeded;
                d.reason = Reason::ApprovalRequired { rule: &rule.id };
                return d;
            }
        }

        // 5. DLP
        if let Some(set) = agent.dlp {
            if !body.is_empty() {
                let Some(scanner) = scanner else {
                    d.reason = Reason::Internal("dlp set");
                    return d;
                };
                d.dlp_set = Some(set);
                let outcome = match json_dlp.take() {
                    Some((sc, scan)) => sc.json_outcome(&scan, dlp_scratch),
                    None => {
                        scanner.scan(tool.body, body, limits.max_json_depth as usize, dlp_scratch)
                    }
                };
                match outcome {
                    Ok(dlp::Outcome::Clean) => {}
                    Ok(dlp::Outcome::Found { rewritten: true }) => {
                        if gzip {
                            // Sent on as gzip, as the headers say.
                            wrapped.clear();
                            crate::gzip::write_stored(&dlp_scratch.out, wrapped);
                            core::mem::swap(&mut dlp_scratch.out, wrapped);
                        }
                        d.verdict = Verdict::Sanitize;
                        d.reason = Reason::Sanitized(Redactions {
                            scanner,
                            counts: dlp_scratch.counts,
                        });
                        return d;
                    }
                    Ok(dlp::Outcome::Found { rewritten: false }) => {
                        let detector = scanner
                            .pattern_names()
                            .zip(dlp_scratch.counts.iter())
                            .find(|(_, c)| **c > 0)
                            .map_or("dlp", |(n, _)| n);
                        d.reason = Reason::DlpDenied { detector };
                        return d;
                    }
                    Err(e) => {
                        d.reason = Reason::DlpError(e);
                        return d;
                    }
                }
            }
        }
        d.verdict = Verdict::Allow;
        d.reason = match (plumbing, d.rule) {
            (Some(method), _) => Reason::McpPlumbing { method },
            (None, Some(rule)) => Reason::Allowed { rule },
            (None, None) => Reason::Internal("no rule"),
        };
        d
    }

    fn holds(&self, p: &PredEntry, slots: &[Value<'_>]) -> bool {
        let v = slots.get(usize::from(p.slot)).copied().unwrap_or_default();
        if v.is_absent() {
            return matches!(p.op, PredOp::Absent);
        }
        match &p.op {
            PredOp::Absent => false,
            PredOp::Exists => true,
            PredOp::Eq(l) => lit_eq(l, &v),
            PredOp::Ne(l) => !lit_eq(l, &v),
            PredOp::In(ls) => ls.iter().any(|l| lit_eq(l, &v)),
            PredOp::NotIn(ls) => !ls.iter().any(|l| lit_eq(l, &v)),
            PredOp::Lt(n) => v.number().is_some_and(|x| x < *n),
            PredOp::Le(n) => v.number().is_some_and(|x| x <= *n),
            PredOp::Gt(n) => v.number().is_some_and(|x| x > *n),
            PredOp::Ge(n) => v.number().is_some_and(|x| x >= *n),
            PredOp::Matches(r) => self.regex_match(*r, &v) == Some(true),
            PredOp::NotMatches(r) => self.regex_match(*r, &v) == Some(false),
        }
    }

    /// `None` when the value has no text form (objects, arrays, null).
    fn regex_match(&self, r: u32, v: &Value<'_>) -> Option<bool> {
        let dfa = self.regexes.get(r as usize)?;
        match v {
            Value::Text(t) => Some(is_match(dfa, t.bytes())),
            Value::Num(n) => Some(is_match(dfa, n.iter().copied())),
            Value::Bool(b) => Some(is_match(dfa, if *b { "true" } else { "false" }.bytes())),
            _ => None,
        }
    }
}

fn lit_eq(l: &Lit, v: &Value<'_>) -> bool {
    match (l, v) {
        (Lit::Str(s), Value::Text(t)) => t.eq_bytes(s.as_bytes()),
        // A string literal that spells a number equals that number.
        (Lit::Str(s), Value::Num(_)) => match (parse_number(s.bytes()), v.number()) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        },
        (Lit::Str(s), Value::Bool(b)) => s == if *b { "true" } else { "false" },
        (Lit::Num(n), _) => v.number() == Some(*n),
        (Lit::Bool(b), Value::Bool(x)) => b == x,
        (Lit::Bool(b), Value::Text(t)) => t.eq_bytes(if *b { b"true" } else { b"false" }),
        _ => false,
    }
}

fn bind_template<'a>(template: &[TSeg], path: &'a str, slots: &mut [Value<'a>]) {
    let segs = http::split_ascii(path.strip_prefix('/').unwrap_or(path), b'/');
    for (t, s) in template.iter().zip(segs) {
        if let TSeg::Param(p) = t {
            if let Some(slot) = slots.get_mut(usize::from(*p)) {
                *slot = Value::Text(Text {
                    raw: s.as_bytes(),
                    enc: crate::params::Enc::Percent,
                });
            }
        }
    }
}

enum McpCall {
    Tool(usize),
    Plumbing(&'static str),
}

/// Whether `method path` is a request to `tool`'s MCP server: POST carries
/// messages, GET opens the server's stream and DELETE ends the session
/// (Streamable HTTP).
fn reaches_mcp_server(tool: &ToolEntry, method: &str, path: &str) -> bool {
    matches!(method, "POST" | "GET" | "DELETE")
        && tool
            .mcp_path
            .as_ref()
            .is_some_and(|p| PathBytes::new(path).eq(p.bytes()))
}

/// `GET` (the server's stream of requests and notifications) and `DELETE`
/// (the end of a session) on an MCP server's path: plumbing, for a session
/// the server opened, with no body to judge.
fn mcp_stream<'a, H: Headers + ?Sized>(mut d: Decision<'a>, req: &Request<'a, H>) -> Decision<'a> {
    let method = if req.method == "GET" { "GET" } else { "DELETE" };
    match header(req.headers, "mcp-session-id") {
        HeaderValue::One(v) if !v.trim_ascii().is_empty() => {}
        HeaderValue::Many => {
            d.reason = Reason::Http(HttpError::RepeatedHeader("mcp-session-id"));
            return d;
        }
        _ => {
            d.reason = Reason::McpNoSession { method };
            return d;
        }
    }
    match req.body {
        None => {
            d.verdict = Verdict::NeedBody;
            d.reason = Reason::NeedBody;
        }
        Some(b) if !b.is_empty() => d.reason = Reason::McpStreamBody { method },
        Some(_) => {
            d.verdict = Verdict::Allow;
            d.reason = Reason::McpPlumbing { method };
        }
    }
    d
}

/// Slots of an MCP tool: 0 `method`, 1 `params.name`, 2 `id`, 3 `jsonrpc`,
/// 4 `result`, 5 `error`.
#[allow(clippy::result_large_err)]
fn mcp_action<'a, H: Headers + ?Sized>(
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

/// Whether a query string carries an OAuth-style `access_token` (RFC 6750
/// section 2.3), however its key is percent-encoded.
fn has_query_token(query: &str) -> bool {
    query.split('&').any(|pair| {
        let key = pair.split('=').next().unwrap_or_default();
        Text {
            raw: key.as_bytes(),
            enc: crate::params::Enc::Form,
        }
        .eq_bytes(b"access_token")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn status_is_a_property_of_the_reason() {
        let too_large = Reason::Http(HttpError::BodyTooLarge { limit: 1024 });
        assert_eq!(too_large.status(), 413);
        assert_eq!(
            too_large.to_string(),
            "request body is larger than the 1024 bytes accepted (`max_body_bytes`)"
        );
        let denied = Reason::NotPermitted {
            tool: "stripe-payments",
            action: "create_refund",
        };
        assert_eq!(denied.status(), 403);
        assert_eq!(Reason::Http(HttpError::HostMismatch).status(), 403);
        assert_eq!(Reason::Internal("no rule").status(), 500);
    }
}
