//! The filter's calls to the control plane (`aegis serve`,
//! docs/control-plane.md) for approvals: what each call asks,
//! and how its answer is read. An answer that is not what the API promises
//! is a failure like a timeout or a reset, and the fail policy decides what
//! becomes of the request; it never traps and never waits past the
//! configured timeout (Envoy enforces it on the call).

use crate::config::ControlPlane;
use crate::host::Host;
use serde::Deserialize;

/// Longest approval id the filter accepts from an agent (the control plane
/// makes `apr_` and 32 hex digits).
const MAX_ID: usize = 64;

/// Whether `id` can be an approval id: what an agent sends in
/// `x-aegis-approval` goes into a path of the control plane's API, so
/// nothing but letters, digits, `_` and `-`.
pub fn is_approval_id(id: &str) -> bool {
    (1..=MAX_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// One call: method, path (with query) and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub method: &'static str,
    pub path: String,
    pub body: Option<Vec<u8>>,
    /// `If-None-Match` (the bundle poll).
    pub if_none_match: Option<String>,
}

impl Call {
    /// The headers of the call to `authority` with the gateway's `token`.
    pub fn headers<'a>(&'a self, authority: &'a str, bearer: &'a str) -> Vec<(&'a str, &'a str)> {
        let mut h = vec![
            (":method", self.method),
            (":path", self.path.as_str()),
            (":authority", authority),
            ("authorization", bearer),
        ];
        if self.body.is_some() {
            h.push(("content-type", "application/json"));
        }
        if let Some(tag) = &self.if_none_match {
            h.push(("if-none-match", tag.as_str()));
        }
        h
    }
}

/// What an approval is created with (`POST /v1/approvals`).
#[derive(Debug, serde::Serialize)]
pub struct NewApproval<'a> {
    pub tenant: &'a str,
    pub agent: &'a str,
    pub tool: &'a str,
    pub action: &'a str,
    pub rule: &'a str,
    pub reason: &'a str,
    pub policy_version: &'a str,
    pub digest: &'a str,
    pub summary: Summary<'a>,
}

/// What a person deciding sees of the call, besides the reason: where it
/// goes and its parameters, with DLP applied to both
/// (`Bundle::approval_summary`).
#[derive(Debug, serde::Serialize)]
pub struct Summary<'a> {
    pub method: &'a str,
    pub host: &'a str,
    /// Path and query, percent-decoded and masked.
    pub path: &'a str,
    pub request_id: &'a str,
    pub body_bytes: usize,
    /// Parameter name -> value, masked and bounded (a JSON object).
    pub params: Option<Box<serde_json::value::RawValue>>,
    /// Parameters were left out or values cut.
    pub params_truncated: bool,
}

pub fn create_approval(a: &NewApproval<'_>) -> Call {
    Call {
        method: "POST",
        path: "/v1/approvals".into(),
        body: serde_json::to_vec(a).ok(),
        if_none_match: None,
    }
}

/// `GET /v1/approvals/{id}`, long-polling up to `wait_s` seconds while it
/// is pending.
pub fn approval_status(id: &str, wait_s: u64) -> Call {
    Call {
        method: "GET",
        path: format!("/v1/approvals/{id}?wait={wait_s}"),
        body: None,
        if_none_match: None,
    }
}

pub fn redeem(id: &str, digest: &str) -> Call {
    Call {
        method: "POST",
        path: format!("/v1/approvals/{id}/redeem"),
        body: serde_json::to_vec(&serde_json::json!({ "digest": digest })).ok(),
        if_none_match: None,
    }
}

/// `POST /v1/budgets/lease` with its JSON body.
pub fn lease(body: String) -> Call {
    Call {
        method: "POST",
        path: "/v1/budgets/lease".into(),
        body: Some(body.into_bytes()),
        if_none_match: None,
    }
}

/// `POST /v1/budgets/settle` with its JSON body.
pub fn settle(body: String) -> Call {
    Call {
        method: "POST",
        path: "/v1/budgets/settle".into(),
        body: Some(body.into_bytes()),
        if_none_match: None,
    }
}

/// Starts `call` to the control plane `cp` (its cluster, authority and
/// gateway token); Envoy ends it after `timeout_ms`. The token of the call.
pub fn dispatch(
    host: &impl Host,
    cp: &ControlPlane,
    call: &Call,
    timeout_ms: u64,
) -> Result<u32, String> {
    let bearer = cp.bearer();
    let headers = call.headers(&cp.authority, &bearer);
    host.dispatch_call(&cp.cluster, &headers, call.body.as_deref(), timeout_ms)
}

/// Why a call brought no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No response: the connection failed or was reset.
    NoAnswer,
    /// Envoy's timeout on the call (a 504 from the proxy itself).
    TimedOut,
    /// A status or body the API does not promise for this call.
    Unexpected(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::NoAnswer => f.write_str("no answer: the connection failed or was reset"),
            Failure::TimedOut => f.write_str("it did not answer in time"),
            Failure::Unexpected(what) => write!(f, "unexpected answer: {what}"),
        }
    }
}

/// A response to a call: status and body.
#[derive(Debug, Clone, Copy)]
pub struct Response<'b> {
    pub status: u16,
    pub body: &'b [u8],
}

/// How Envoy's own local replies begin when it could not get an answer
/// from the cluster at all: the connection was refused or reset, or no
/// endpoint is healthy. Envoy sends them as a 503.
const ENVOY_NO_ANSWER: [&[u8]; 2] = [
    b"upstream connect error or disconnect/reset before headers",
    b"no healthy upstream",
];

/// Reads the status of a call's response. Envoy delivers a reset or a
/// failed connection as a response without headers or as its own 503, and
/// its own timeout as a 504; a 5xx of the control plane is no answer
/// either.
pub fn response<'b>(headers: &[(String, String)], body: &'b [u8]) -> Result<Response<'b>, Failure> {
    if headers.is_empty() {
        return Err(Failure::NoAnswer);
    }
    let status = status_code(headers).ok_or_else(|| Failure::Unexpected("no `:status`".into()))?;
    match status {
        504 => Err(Failure::TimedOut),
        503 if ENVOY_NO_ANSWER.iter().any(|p| body.starts_with(p)) => Err(Failure::NoAnswer),
        500.. => {
            let code = error_code(body).map_or(String::new(), |c| format!(" `{c}`"));
            Err(Failure::Unexpected(format!("status {status}{code}")))
        }
        _ => Ok(Response { status, body }),
    }
}

/// The `:status` of a call's answer.
pub fn status_code(headers: &[(String, String)]) -> Option<u16> {
    headers
        .iter()
        .find(|(k, _)| k == ":status")
        .and_then(|(_, v)| v.parse::<u16>().ok())
}

/// The `error.code` of an API error body, if it has one.
pub fn error_code(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct E {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        code: String,
    }
    serde_json::from_slice::<E>(body).ok().map(|e| e.error.code)
}

fn unexpected(r: &Response<'_>, what: &str) -> Failure {
    let code = error_code(r.body).map_or(String::new(), |c| format!(" `{c}`"));
    Failure::Unexpected(format!("status {}{code} to {what}", r.status))
}

/// An approval as created.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Created {
    pub approval_id: String,
    pub status: String,
    pub expires_at: i64,
    pub url: String,
}

pub fn created(r: &Response<'_>) -> Result<Created, Failure> {
    if !matches!(r.status, 200 | 201) {
        return Err(unexpected(r, "the new approval"));
    }
    let c: Created = serde_json::from_slice(r.body)
        .map_err(|e| Failure::Unexpected(format!("approval answer: {e}")))?;
    if !is_approval_id(&c.approval_id) {
        return Err(Failure::Unexpected(
            "approval answer: bad `approval_id`".into(),
        ));
    }
    Ok(c)
}

/// Where an approval stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Pending,
    Approved {
        by: String,
    },
    Denied {
        by: String,
        comment: String,
    },
    /// Expired, or already redeemed: unusable.
    Gone(&'static str),
}

pub fn status(r: &Response<'_>) -> Result<Status, Failure> {
    #[derive(Deserialize)]
    struct S {
        status: String,
        #[serde(default)]
        decided_by: Option<String>,
        #[serde(default)]
        comment: Option<String>,
    }
    if r.status == 404 {
        return Ok(Status::Gone("the control plane does not know it"));
    }
    if r.status != 200 {
        return Err(unexpected(r, "the approval status"));
    }
    let s: S = serde_json::from_slice(r.body)
        .map_err(|e| Failure::Unexpected(format!("approval status: {e}")))?;
    let by = s.decided_by.unwrap_or_default();
    Ok(match s.status.as_str() {
        "pending" => Status::Pending,
        "approved" => Status::Approved { by },
        "denied" => Status::Denied {
            by,
            comment: s.comment.unwrap_or_default(),
        },
        "expired" => Status::Gone("it has expired"),
        "redeemed" => Status::Gone("it was already used"),
        other => {
            return Err(Failure::Unexpected(format!(
                "approval status `{}`",
                other.chars().take(32).collect::<String>()
            )))
        }
    })
}

/// What a redeem said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redeemed {
    /// Go ahead: approved by this person, now used up.
    Approved {
        by: String,
    },
    /// Not decided yet.
    Pending,
    Denied {
        by: String,
        comment: String,
    },
    /// Used, for another call, expired or unknown.
    Refused(&'static str),
}

pub fn redeemed(r: &Response<'_>) -> Result<Redeemed, Failure> {
    #[derive(Deserialize)]
    struct Ok200 {
        #[serde(default)]
        approved_by: Option<String>,
    }
    #[derive(Deserialize)]
    struct E {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        code: String,
        #[serde(default)]
        decided_by: Option<String>,
        #[serde(default)]
        comment: Option<String>,
    }
    if r.status == 200 {
        let ok: Ok200 = serde_json::from_slice(r.body)
            .map_err(|e| Failure::Unexpected(format!("redeem answer: {e}")))?;
        return Ok(Redeemed::Approved {
            by: ok.approved_by.unwrap_or_default(),
        });
    }
    if r.status == 404 {
        return Ok(Redeemed::Refused("the control plane does not know it"));
    }
    let e: E = serde_json::from_slice(r.body).map_err(|_| unexpected(r, "the redeem"))?;
    Ok(match (r.status, e.error.code.as_str()) {
        (409, "already_redeemed") => Redeemed::Refused("it was already used"),
        (403, "digest_mismatch") => Redeemed::Refused("it was given for a different call"),
        (410, _) => Redeemed::Refused("it has expired"),
        (409, "not_decided") => Redeemed::Pending,
        (403, "denied") => Redeemed::Denied {
            by: e.error.decided_by.unwrap_or_default(),
            comment: e.error.comment.unwrap_or_default(),
        },
        _ => return Err(unexpected(r, "the redeem")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, body: &str) -> Response<'_> {
        Response {
            status,
            body: body.as_bytes(),
        }
    }

    #[test]
    fn an_agent_cannot_steer_the_call_with_its_approval_id() {
        assert!(is_approval_id("apr_0123456789abcdef0123456789abcdef"));
        for bad in [
            "",
            "../budgets/lease",
            "a/b",
            "a?wait=60",
            "a%2F",
            "a b",
            &"a".repeat(65),
        ] {
            assert!(!is_approval_id(bad), "{bad}");
        }
    }

    #[test]
    fn envoy_failure_shapes_are_failures() {
        assert_eq!(response(&[], b"").unwrap_err(), Failure::NoAnswer);
        let h = |s: &str| vec![(":status".to_string(), s.to_string())];
        assert_eq!(
            response(&h("504"), b"upstream request timeout").unwrap_err(),
            Failure::TimedOut
        );
        assert!(matches!(
            response(&h("503"), b"").unwrap_err(),
            Failure::Unexpected(_)
        ));
        assert_eq!(response(&h("409"), b"x").unwrap().status, 409);
        // Envoy's own answer when it cannot reach the cluster (nothing
        // listens, the connection was reset): no answer from the control
        // plane, whatever its status.
        for body in [
            &b"upstream connect error or disconnect/reset before headers. reset reason: \
               remote connection failure, transport failure reason: delayed connect error: \
               Connection refused"[..],
            b"upstream connect error or disconnect/reset before headers. reset reason: \
              connection termination",
            b"no healthy upstream",
        ] {
            assert_eq!(
                response(&h("503"), body).unwrap_err(),
                Failure::NoAnswer,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // The control plane's own 503 is an answer, with its code.
        assert_eq!(
            response(
                &h("503"),
                br#"{"error":{"type":"api_error","code":"store_unavailable","message":"m"}}"#
            )
            .unwrap_err(),
            Failure::Unexpected("status 503 `store_unavailable`".into())
        );
    }

    #[test]
    fn redeem_answers_are_read_as_the_api_documents_them() {
        assert_eq!(
            redeemed(&resp(
                200,
                r#"{"approval_id":"apr_1","approved_by":"alice"}"#
            ))
            .unwrap(),
            Redeemed::Approved { by: "alice".into() }
        );
        let err = |status, code: &str| {
            redeemed(&resp(
                status,
                &format!(r#"{{"error":{{"type":"x","code":"{code}","message":"m"}}}}"#),
            ))
        };
        assert_eq!(
            err(409, "already_redeemed").unwrap(),
            Redeemed::Refused("it was already used")
        );
        assert_eq!(
            err(403, "digest_mismatch").unwrap(),
            Redeemed::Refused("it was given for a different call")
        );
        assert_eq!(err(409, "not_decided").unwrap(), Redeemed::Pending);
        assert_eq!(
            err(410, "expired").unwrap(),
            Redeemed::Refused("it has expired")
        );
        let denied = redeemed(&resp(
            403,
            r#"{"error":{"type":"permission_error","code":"denied","message":"m","decided_by":"bob","comment":"no"}}"#,
        ))
        .unwrap();
        assert_eq!(
            denied,
            Redeemed::Denied {
                by: "bob".into(),
                comment: "no".into()
            }
        );
        // A gateway token the control plane refuses is not an answer.
        assert!(err(401, "unauthenticated").is_err());
        assert!(redeemed(&resp(200, "not json")).is_err());
    }

    #[test]
    fn status_answers() {
        assert_eq!(
            status(&resp(200, r#"{"status":"pending"}"#)).unwrap(),
            Status::Pending
        );
        assert_eq!(
            status(&resp(
                200,
                r#"{"status":"denied","decided_by":"bob","comment":"too much"}"#
            ))
            .unwrap(),
            Status::Denied {
                by: "bob".into(),
                comment: "too much".into()
            }
        );
        assert!(status(&resp(200, r#"{"status":"weird"}"#)).is_err());
        assert!(created(&resp(
            201,
            r#"{"approval_id":"../x","status":"pending","expires_at":1,"url":"u"}"#
        ))
        .is_err());
    }
}
