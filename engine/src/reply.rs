//! How a refusal is answered: the one rule the filter and every runner
//! share. A REST call gets its HTTP status and a JSON body; a request to an
//! MCP server that has a JSON-RPC id is answered in MCP's own shape (HTTP
//! 200), so the client's session survives the refusal.

use crate::eval::Decision;
use crate::params::ExtractError;
use crate::reason::Reason;
use crate::types::Verdict;

/// The shape of the local reply to a blocked request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// HTTP status and the decision's JSON body with an `error` object.
    Rest,
    /// An MCP `tools/call` refused for what it asks (the tool, its
    /// arguments, an approval): a JSON-RPC result with `isError: true`
    /// whose text the model reads.
    ToolError,
    /// Any other request to an MCP server refused: a JSON-RPC error with
    /// this code, for the request's id when it is known (HTTP 200: the
    /// session goes on), else for `null` with the REST status (refused
    /// before the message was read, such as a bad token).
    RpcError { code: i32, id: bool },
}

impl Shape {
    /// The shape for a blocking decision; `has_id`: the MCP request's
    /// JSON-RPC id is known (`Scratch::rpc_id`).
    pub fn of(d: &Decision<'_>, has_id: bool) -> Shape {
        if !d.mcp || matches!(d.verdict, Verdict::Allow | Verdict::Sanitize) {
            return Shape::Rest;
        }
        if has_id && d.reason.refuses_tool_call() {
            return Shape::ToolError;
        }
        let code = match d.reason {
            Reason::BadRequest(ExtractError::Json(_)) => PARSE_ERROR,
            Reason::McpMethodDenied => METHOD_NOT_FOUND,
            Reason::Internal(_) => INTERNAL_ERROR,
            _ => INVALID_REQUEST,
        };
        Shape::RpcError { code, id: has_id }
    }

    /// The HTTP status of the reply; `rest`: the status of a REST refusal.
    pub fn status(self, rest: u32) -> u32 {
        match self {
            Shape::Rest | Shape::RpcError { id: false, .. } => rest,
            Shape::ToolError | Shape::RpcError { id: true, .. } => 200,
        }
    }
}

/// JSON-RPC 2.0 error codes.
pub const PARSE_ERROR: i32 = -32700;
pub const INVALID_REQUEST: i32 = -32600;
pub const METHOD_NOT_FOUND: i32 = -32601;
pub const INTERNAL_ERROR: i32 = -32603;

/// The sentence a person or a model reads: what happened to the call, and
/// why.
pub fn message(decision: &str, reason: &str) -> alloc::string::String {
    let what = match decision {
        "approval_needed" => "needs human approval under the aegis policy",
        _ => "was denied by the aegis policy",
    };
    alloc::format!("this call {what}: {reason}")
}

/// The `type` of the REST error object for a status, in the names the
/// common SDKs use.
pub fn error_type(status: u32) -> &'static str {
    match status {
        403 => "permission_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        500.. => "api_error",
        _ => "invalid_request_error",
    }
}
