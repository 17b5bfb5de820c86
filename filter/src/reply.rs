//! The local reply that answers a blocked request, and request ids.
//!
//! Three shapes, each the one its client reads:
//!
//! - a REST call: the status (403, 413, 5xx) and a JSON body with the
//!   decision's fields plus the `{"error": {"type", "code", "message"}}`
//!   object Stripe, OpenAI and most REST SDKs turn into their own
//!   exception, with Aegis's reason as its message;
//! - an MCP `tools/call` refused for what it asks (the tool, its
//!   arguments, an approval): HTTP 200 and a JSON-RPC response to that
//!   request whose result is a tool error (`isError: true`) the model
//!   reads, so the session goes on;
//! - any other MCP request refused: HTTP 200 and a JSON-RPC error for that
//!   request's id.

pub use aegis_engine::reply::Shape;
use aegis_engine::reply::{error_type, message};
use serde::Serialize;
use serde_json::value::RawValue;

/// The decision's fields every reply carries (docs/policy-language.md, "The decision").
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Fields<'a> {
    pub decision: &'a str,
    pub reason: &'a str,
    pub rule: Option<&'a str>,
    pub policy_version: Option<&'a str>,
    pub request_id: &'a str,
    /// The approval a call waits for: retry it with `x-aegis-approval`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalRef<'a>>,
}

/// An approval, as the agent is told about it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ApprovalRef<'a> {
    pub id: &'a str,
    /// Where its status can be read (`GET`, with a viewer token).
    pub url: &'a str,
    /// Unix seconds: decided and redeemed by then, or gone.
    pub expires_at: i64,
}

/// The error object REST SDKs read.
#[derive(Debug, Serialize)]
struct ErrorObject<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    code: &'a str,
    message: &'a str,
}

#[derive(Debug, Serialize)]
struct RestBody<'a> {
    #[serde(flatten)]
    fields: Fields<'a>,
    error: ErrorObject<'a>,
}

/// A JSON-RPC `id` given as JSON text (`null` when there is none).
fn raw_id(id: Option<&[u8]>) -> &RawValue {
    id.and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|s| serde_json::from_str::<&RawValue>(s).ok())
        .unwrap_or(RawValue::NULL)
}

#[derive(Debug, Serialize)]
struct TextContent<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    text: &'a str,
}

#[derive(Debug, Serialize)]
struct Meta<'a> {
    aegis: Fields<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolResult<'a> {
    /// MCP 2026-07-28 results say whether they are final.
    result_type: &'a str,
    content: [TextContent<'a>; 1],
    is_error: bool,
    #[serde(rename = "_meta")]
    meta: Meta<'a>,
}

#[derive(Debug, Serialize)]
struct RpcError<'a> {
    code: i32,
    message: &'a str,
    data: Fields<'a>,
}

#[derive(Debug, Serialize)]
struct RpcResponse<'a> {
    jsonrpc: &'a str,
    id: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<ToolResult<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<RpcError<'a>>,
}

/// A local reply ready to send.
#[derive(Debug)]
pub struct Reply {
    pub status: u32,
    pub body: Vec<u8>,
}

/// A fixed body if serialisation fails (it cannot for these types).
const FALLBACK: &[u8] = br#"{"decision":"deny","reason":"internal error","rule":null,"policy_version":null,"request_id":null,"error":{"type":"api_error","code":"deny","message":"internal error"}}"#;

impl Reply {
    /// `status`: the HTTP status of a REST refusal; `id`: the MCP
    /// request's id as JSON text.
    pub fn build(shape: Shape, status: u32, fields: &Fields<'_>, id: Option<&[u8]>) -> Reply {
        let message = message(fields.decision, fields.reason);
        let status = shape.status(status);
        let body = match shape {
            Shape::Rest => serde_json::to_vec(&RestBody {
                fields: *fields,
                error: ErrorObject {
                    kind: error_type(status),
                    code: fields.decision,
                    message: &message,
                },
            }),
            Shape::ToolError => serde_json::to_vec(&RpcResponse {
                jsonrpc: "2.0",
                id: raw_id(id),
                result: Some(ToolResult {
                    result_type: "complete",
                    content: [TextContent {
                        kind: "text",
                        text: &message,
                    }],
                    is_error: true,
                    meta: Meta { aegis: *fields },
                }),
                error: None,
            }),
            Shape::RpcError { code, .. } => serde_json::to_vec(&RpcResponse {
                jsonrpc: "2.0",
                id: raw_id(id),
                result: None,
                error: Some(RpcError {
                    code,
                    message: &message,
                    data: *fields,
                }),
            }),
        };
        Reply {
            status,
            body: body.unwrap_or_else(|_| FALLBACK.to_vec()),
        }
    }
}

/// Request ids for requests that arrive without `x-request-id`:
/// `aegis-<time>-<vm>-<n>`, unique per VM by the counter and across VMs
/// (Envoy runs one per worker thread) by the VM's start time.
#[derive(Debug)]
pub struct RequestIds {
    vm: u32,
    next: std::cell::Cell<u64>,
}

impl RequestIds {
    /// `vm`: something that differs between VMs, such as the low bits of
    /// the time the VM started.
    pub fn new(vm: u32) -> Self {
        RequestIds {
            vm,
            next: std::cell::Cell::new(0),
        }
    }

    pub fn generate(&self, now_nanos: u64) -> String {
        let n = self.next.get();
        self.next.set(n.wrapping_add(1));
        format!("aegis-{now_nanos:x}-{:08x}-{n}", self.vm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> Fields<'static> {
        Fields {
            decision: "deny",
            reason: "host `evil.example` is not in the agent's \"egress\" allowlist",
            rule: None,
            policy_version: Some("v1"),
            request_id: "abc",
            approval: None,
        }
    }

    #[test]
    fn rest_reply_has_the_five_fields_and_the_error_object() {
        let r = Reply::build(Shape::Rest, 403, &fields(), None);
        assert_eq!(r.status, 403);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "decision": "deny",
                "reason": "host `evil.example` is not in the agent's \"egress\" allowlist",
                "rule": null,
                "policy_version": "v1",
                "request_id": "abc",
                "error": {
                    "type": "permission_error",
                    "code": "deny",
                    "message": "this call was denied by the aegis policy: host `evil.example` is not in the agent's \"egress\" allowlist",
                },
            })
        );
        let r = Reply::build(Shape::Rest, 413, &fields(), None);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error"]["type"], "request_too_large");
    }

    #[test]
    fn a_refused_tool_call_is_a_tool_error_for_its_id() {
        let mut f = fields();
        f.decision = "approval_needed";
        f.reason = "rule `a/b/c#0` requires human approval";
        f.rule = Some("a/b/c#0");
        for (id, want) in [
            (&b"7"[..], serde_json::json!(7)),
            (&br#""req-\u00e9""#[..], serde_json::json!("req-\u{e9}")),
        ] {
            let r = Reply::build(Shape::ToolError, 403, &f, Some(id));
            assert_eq!(r.status, 200);
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(v["jsonrpc"], "2.0");
            assert_eq!(v["id"], want);
            assert!(v.get("error").is_none());
            assert_eq!(v["result"]["isError"], true);
            assert_eq!(
                v["result"]["content"][0]["text"],
                "this call needs human approval under the aegis policy: rule `a/b/c#0` requires human approval"
            );
            assert_eq!(v["result"]["_meta"]["aegis"]["rule"], "a/b/c#0");
            assert_eq!(v["result"]["_meta"]["aegis"]["request_id"], "abc");
        }
    }

    #[test]
    fn a_refused_message_is_a_json_rpc_error() {
        let r = Reply::build(
            Shape::RpcError {
                code: -32601,
                id: true,
            },
            403,
            &fields(),
            Some(b"1"),
        );
        assert_eq!(r.status, 200);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["id"], 1);
        assert_eq!(v["error"]["code"], -32601);
        assert_eq!(v["error"]["data"]["decision"], "deny");
        assert!(v["error"]["message"].as_str().unwrap().contains("egress"));
        // An id that is not JSON text is answered with `null`.
        let r = Reply::build(
            Shape::RpcError {
                code: -32600,
                id: true,
            },
            403,
            &fields(),
            Some(b"{"),
        );
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["id"], serde_json::Value::Null);
    }

    #[test]
    fn generated_ids_differ() {
        let ids = RequestIds::new(0xabc);
        let a = ids.generate(1_700_000_000_000_000_000);
        let b = ids.generate(1_700_000_000_000_000_000);
        assert_ne!(a, b);
        assert_eq!(a, "aegis-17979cfe362a0000-00000abc-0");
        assert!(b.ends_with("-1"));
    }
}
