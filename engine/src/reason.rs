//! Why a request got its verdict: [`Reason`], one human sentence per
//! outcome, and the two things a runner needs from it besides the words:
//! the HTTP status a refusal is answered with ([`Reason::status`]) and
//! the verdict it stands for ([`Reason::verdict`]). Every runner (native,
//! wasm, Envoy) reads these here rather than interpreting the sentence.

use crate::bundle::{Lit, PredOp};
use crate::dlp;
use crate::gzip::GzipError;
use crate::http::HttpError;
use crate::jwt::JwtError;
use crate::params::ExtractError;
use crate::types::Verdict;
use alloc::string::String;
use core::fmt;

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
        param: &'a [String],
        op: &'a PredOp,
        missing: bool,
        mcp: bool,
        /// The rule asks for approval when a condition fails.
        ask: bool,
    },
    ApprovalRequired {
        rule: &'a str,
    },
    BadRequest(ExtractError),
    Gzip(GzipError),
    DlpDenied {
        detector: &'a str,
    },
    DlpError(dlp::DlpError),
    Sanitized(Redactions<'a>),
    Internal(&'static str),
    /// The agent's `budget.rps` is used up for now (a token bucket per
    /// proxy).
    RateLimited {
        rps: f64,
    },
    /// The rate limit could not be checked (the proxy's shared data
    /// failed): limited rather than let through unlimited.
    RateUnchecked,
    /// The agent's `budget.daily_usd` is spent for today (UTC).
    BudgetExhausted {
        limit_usd: f64,
    },
    /// The control plane did not answer usefully for a call that writes:
    /// refused (fail closed). `what`: the budget or the approval; `why`:
    /// timed out, could not connect, answered something else.
    ControlPlaneUnavailable {
        what: &'static str,
        why: &'a str,
    },
    /// The control plane did not answer usefully for a call that only
    /// reads: let through without the check (fail open), and counted.
    FailedOpen {
        what: &'static str,
        why: &'a str,
    },
    /// A human approval was asked for and is not decided yet: retry the
    /// same call with `x-aegis-approval: <id>` once it is.
    ApprovalPending {
        rule: &'a str,
        id: &'a str,
    },
    /// The approver said no.
    ApprovalDenied {
        id: &'a str,
        by: &'a str,
        comment: &'a str,
    },
    /// The approval named in `x-aegis-approval` cannot be used for this
    /// call: `why` says which of used, another call, expired, unknown.
    ApprovalRefused {
        id: &'a str,
        why: &'static str,
    },
    /// Allowed once a person approved it.
    Approved {
        rule: &'a str,
        id: &'a str,
        by: &'a str,
    },
}

/// Per-detector counts of what DLP rewrote.
#[derive(Clone, Copy)]
pub struct Redactions<'a> {
    scanner: &'a dlp::Scanner,
    counts: [u32; dlp::MAX_PATTERNS],
}

impl<'a> Redactions<'a> {
    pub(crate) fn new(scanner: &'a dlp::Scanner, counts: [u32; dlp::MAX_PATTERNS]) -> Self {
        Redactions { scanner, counts }
    }

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

struct Dotted<'a>(&'a [String], bool);

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
                ask: _,
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
            Reason::RateLimited { rps } => {
                write!(f, "rate limit of {rps} calls per second for this agent is exceeded")
            }
            Reason::RateUnchecked => {
                f.write_str("the rate limit could not be checked (proxy shared data failed)")
            }
            Reason::BudgetExhausted { limit_usd } => write!(
                f,
                "the agent's daily budget of {limit_usd} USD is spent; it resets at 00:00 UTC"
            ),
            Reason::ControlPlaneUnavailable { what, why } => write!(
                f,
                "the {what} could not be checked with the aegis control plane ({why}); calls \
                 that write are refused until it answers"
            ),
            Reason::FailedOpen { what, why } => write!(
                f,
                "allowed without the {what} check: the aegis control plane failed ({why}) and \
                 calls that only read go on"
            ),
            Reason::ApprovalPending { rule, id } => write!(
                f,
                "rule `{rule}` requires human approval: approval `{id}` is pending; once it is \
                 approved, send the same call again with header `x-aegis-approval: {id}`"
            ),
            Reason::ApprovalDenied { id, by, comment } => {
                write!(f, "approval `{id}` was denied by `{}`", Said(by))?;
                if !comment.is_empty() {
                    write!(f, ": {}", Said(comment))?;
                }
                Ok(())
            }
            Reason::ApprovalRefused { id, why } => {
                write!(f, "approval `{}` cannot be used: {why}", Shown(id))
            }
            Reason::Approved { rule, id, by } => write!(
                f,
                "allowed by rule `{rule}`, approved by `{}` (approval `{id}`)",
                Said(by)
            ),
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
            Reason::RateLimited { .. } | Reason::RateUnchecked | Reason::BudgetExhausted { .. } => {
                429
            }
            Reason::ControlPlaneUnavailable { .. } => 503,
            _ => 403,
        }
    }

    /// The verdict this reason stands for: a decision's verdict is always
    /// its reason's.
    pub fn verdict(&self) -> Verdict {
        match self {
            Reason::Allowed { .. }
            | Reason::McpPlumbing { .. }
            | Reason::Approved { .. }
            | Reason::FailedOpen { .. } => Verdict::Allow,
            Reason::Sanitized(_) => Verdict::Sanitize,
            Reason::NeedBody => Verdict::NeedBody,
            Reason::ApprovalRequired { .. }
            | Reason::ApprovalPending { .. }
            | Reason::ConditionFailed { ask: true, .. } => Verdict::ApprovalNeeded,
            _ => Verdict::Deny,
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
                | Reason::RateLimited { .. }
                | Reason::RateUnchecked
                | Reason::BudgetExhausted { .. }
                | Reason::ControlPlaneUnavailable { .. }
                | Reason::ApprovalPending { .. }
                | Reason::ApprovalDenied { .. }
                | Reason::ApprovalRefused { .. }
        )
    }
}

/// What a person wrote (an approver's name or comment) shown in a reason:
/// at most 200 characters, control characters and backticks as `?`, so it
/// reads as written but cannot break a log line.
struct Said<'a>(&'a str);

impl fmt::Display for Said<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 200;
        for (i, c) in self.0.chars().enumerate() {
            if i == MAX {
                return f.write_str("...");
            }
            let c = if c.is_control() || c == '`' { '?' } else { c };
            fmt::Write::write_char(f, c)?;
        }
        Ok(())
    }
}

/// Request text shown in a reason: at most 96 bytes, anything but
/// printable ASCII as `?`, so a reason never carries a whole payload or a
/// control character into a log line.
pub(crate) struct Shown<'a>(pub(crate) &'a str);

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
