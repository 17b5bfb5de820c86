//! Running recorded requests (test cases) through the engine, and checking
//! results against expectations. `aegis eval`, `aegis test` and the
//! wasmtime / Envoy runners all compare against what this produces.
//!
//! What the engine is given for a case, which the other runners reproduce
//! (see [`crate::format`]): the url's authority, its path and query exactly
//! as written (fragment included, no normalization; a missing path is
//! `/`), the case's headers in order with repeats but without `host`
//! (Envoy replaces `Host` by the url's authority), and the body bytes.

use crate::format::{Case, Expect};
use aegis_engine::reply::{error_type, message, Shape};
use aegis_engine::{Bundle, Caller, Decision, Request, Scratch, Verdict};
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};
use std::borrow::Cow;

/// What one case produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub name: String,
    pub decision: String,
    pub reason: String,
    pub rule: Option<String>,
    pub policy_version: String,
    /// The sanitized body (for `sanitize`).
    pub body: Option<Vec<u8>>,
    pub agent: Option<String>,
    pub tool: Option<String>,
    pub action: Option<String>,
    /// How the filter answers it when it blocks.
    pub shape: Shape,
    /// The HTTP status of the refusal when it is answered as REST
    /// ([`aegis_engine::Reason::status`]): 413 for a body over
    /// `max_body_bytes`, 500 for a failure of the evaluator, else 403.
    pub status: u16,
    /// The MCP request's JSON-RPC id, as JSON text.
    pub rpc_id: Option<String>,
}

/// JSON for `aegis eval` / `aegis test --format json`: the body as `body`
/// when it is UTF-8, else as `body_base64`; agent, tool and action are
/// left out.
impl Serialize for Outcome {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let n = if self.body.is_some() { 6 } else { 5 };
        let mut st = s.serialize_struct("Outcome", n)?;
        st.serialize_field("name", &self.name)?;
        st.serialize_field("decision", &self.decision)?;
        st.serialize_field("reason", &self.reason)?;
        st.serialize_field("rule", &self.rule)?;
        st.serialize_field("policy_version", &self.policy_version)?;
        if let Some(b) = &self.body {
            match std::str::from_utf8(b) {
                Ok(text) => st.serialize_field("body", text)?,
                Err(_) => {
                    use base64::Engine as _;
                    let b64 = base64::engine::general_purpose::STANDARD.encode(b);
                    st.serialize_field("body_base64", &b64)?;
                }
            }
        }
        st.end()
    }
}

/// Splits `scheme://authority/path?query#fragment` into the authority and
/// the rest exactly as written (empty when there is no path; it may start
/// with `?` or `#`). Nothing is decoded or normalized.
pub fn split_url(url: &str) -> (&str, &str) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    }
}

/// The url's scheme (`https` for `https://...`), if it has one.
pub fn url_scheme(url: &str) -> Option<&str> {
    url.split_once("://").map(|(s, _)| s)
}

/// The `:path` of a case's url: path, query and fragment as written, with
/// `/` in front only when the url has no path (`https://a?x` -> `/?x`).
pub fn request_path(url: &str) -> Cow<'_, str> {
    let (_, p) = split_url(url);
    if p.starts_with('/') {
        Cow::Borrowed(p)
    } else {
        Cow::Owned(format!("/{p}"))
    }
}

/// The headers the engine sees for a case: the case's, in order with
/// repeats, without `host` (through Envoy the authority is the url's and
/// `Host` is replaced by it).
pub fn engine_headers(case: &Case) -> Vec<(&str, &str)> {
    case.request
        .headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("host"))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Evaluates one case against `bundle`.
pub fn run_case(bundle: &Bundle, case: &Case, scratch: &mut Scratch) -> Outcome {
    let (authority, _) = split_url(&case.request.url);
    let path = request_path(&case.request.url);
    let headers = engine_headers(case);
    let body = case.request.body.as_deref().unwrap_or_default();
    let req = Request {
        method: &case.request.method,
        authority,
        path: &path,
        headers: headers.as_slice(),
        body: Some(body),
    };
    let caller = match &case.agent {
        Some(a) => Caller::Given {
            agent: a,
            tenant: case.tenant.as_deref(),
        },
        None => Caller::FromRequest,
    };
    let d = bundle.decide(&req, caller, case.now.unwrap_or_else(now_unix), scratch);
    outcome(bundle, &case.name, &d, scratch)
}

/// Renders a decision as an [`Outcome`]; the sanitized body comes from the
/// scratch.
pub fn outcome(bundle: &Bundle, name: &str, d: &Decision<'_>, scratch: &Scratch) -> Outcome {
    let body = (d.verdict == Verdict::Sanitize).then(|| scratch.dlp.out.clone());
    Outcome {
        name: name.to_string(),
        decision: d.verdict.as_str().to_string(),
        reason: d.reason.to_string(),
        rule: d.rule.map(str::to_string),
        policy_version: bundle.policy_version().to_string(),
        body,
        agent: d.agent.map(str::to_string),
        tool: d.tool.map(str::to_string),
        action: d.action.map(str::to_string),
        shape: Shape::of(d, scratch.rpc_id.json().is_some()),
        status: d.reason.status(),
        rpc_id: scratch
            .rpc_id
            .json()
            .map(|b| String::from_utf8_lossy(b).into_owned()),
    }
}

/// The local reply the filter sends for a blocking outcome: its status and
/// JSON body, `request_id` being the request's. The wasm and Envoy runners
/// compare the filter's replies against it.
pub fn expected_reply(out: &Outcome, request_id: &str) -> (u32, serde_json::Value) {
    use serde_json::json;
    let fields = json!({
        "decision": out.decision,
        "reason": out.reason,
        "rule": out.rule,
        "policy_version": out.policy_version,
        "request_id": request_id,
    });
    let text = message(&out.decision, &out.reason);
    let id: serde_json::Value = out
        .rpc_id
        .as_deref()
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(serde_json::Value::Null);
    let rest = u32::from(out.status);
    let body = match out.shape {
        Shape::Rest => {
            let mut b = fields;
            if let Some(m) = b.as_object_mut() {
                m.insert(
                    "error".into(),
                    json!({
                        "type": error_type(rest),
                        "code": out.decision,
                        "message": text,
                    }),
                );
            }
            b
        }
        Shape::ToolError => json!({
            "jsonrpc": "2.0",
            "id": id,
            "result": {
                "resultType": "complete",
                "content": [{"type": "text", "text": text}],
                "isError": true,
                "_meta": {"aegis": fields},
            },
        }),
        Shape::RpcError { code, .. } => json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {"code": code, "message": text, "data": fields},
        }),
    };
    (out.shape.status(rest), body)
}

/// Mismatches between what a case expects and what it got; empty = pass.
pub fn check(expect: &Expect, got: &Outcome) -> Vec<String> {
    let mut out = Vec::new();
    if expect.decision != got.decision {
        out.push(format!(
            "decision: expected `{}`, got `{}` ({})",
            expect.decision, got.decision, got.reason
        ));
    }
    if let Some(r) = &expect.reason_contains {
        if !got.reason.contains(r.as_str()) {
            out.push(format!(
                "reason: expected to contain `{r}`, got `{}`",
                got.reason
            ));
        }
    }
    if let Some(r) = &expect.rule {
        if got.rule.as_deref() != Some(r.as_str()) {
            out.push(format!(
                "rule: expected `{r}`, got `{}`",
                got.rule.as_deref().unwrap_or("none")
            ));
        }
    }
    let body = got.body.as_deref().unwrap_or_default();
    let shown = show_bytes(body);
    if let Some(b) = &expect.body {
        if got.body.as_deref() != Some(b.as_slice()) {
            out.push(format!("body: expected `{}`, got `{shown}`", show_bytes(b)));
        }
    }
    for s in &expect.body_contains {
        if !contains(body, s.as_bytes()) {
            out.push(format!("body: expected to contain `{s}`, got `{shown}`"));
        }
    }
    for s in &expect.body_not_contains {
        if contains(body, s.as_bytes()) {
            out.push(format!(
                "body: expected not to contain `{s}`, got `{shown}`"
            ));
        }
    }
    out
}

/// Whether `needle` occurs in `hay` (an empty needle always does).
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// Bytes for a message: the text when it is UTF-8, else `base64:...`.
pub fn show_bytes(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(t) => t.to_owned(),
        Err(_) => {
            use base64::Engine as _;
            format!(
                "base64:{}",
                base64::engine::general_purpose::STANDARD.encode(b)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{CaseRequest, Protocol};

    #[test]
    fn urls_are_split_not_normalized() {
        let cases = [
            ("https://api.stripe.com/v1/x", "api.stripe.com", "/v1/x"),
            ("https://a.example/v1//x", "a.example", "/v1//x"),
            ("https://a.example/v1/./x", "a.example", "/v1/./x"),
            ("https://a.example/v1/../x", "a.example", "/v1/../x"),
            ("https://a.example/v1/%70ay", "a.example", "/v1/%70ay"),
            ("https://a.example/v1/x;x=1", "a.example", "/v1/x;x=1"),
            ("https://a.example/x?q=%2F&a=b", "a.example", "/x?q=%2F&a=b"),
            ("https://a.example/x#frag", "a.example", "/x#frag"),
            ("https://a.example:8443/x", "a.example:8443", "/x"),
            ("https://a.example", "a.example", "/"),
            ("https://a.example?q=1", "a.example", "/?q=1"),
            ("https://a.example#f", "a.example", "/#f"),
            ("a.example/x", "a.example", "/x"),
        ];
        for (url, authority, path) in cases {
            assert_eq!(split_url(url).0, authority, "{url}");
            assert_eq!(request_path(url), path, "{url}");
        }
        assert_eq!(url_scheme("https://a/"), Some("https"));
        assert_eq!(url_scheme("a/"), None);
    }

    fn case(headers: &[(&str, &str)], expect: Expect) -> Case {
        Case {
            name: "x".into(),
            agent: None,
            tenant: None,
            now: None,
            request: CaseRequest {
                method: "GET".into(),
                url: "https://a.example/x".into(),
                headers: headers
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                body: None,
            },
            expect,
            envoy: None,
            protocols: Protocol::ALL.to_vec(),
            location: ("c.cases.yaml".into(), 1),
        }
    }

    fn expect(decision: &str) -> Expect {
        Expect {
            decision: decision.into(),
            reason_contains: None,
            rule: None,
            body: None,
            body_contains: Vec::new(),
            body_not_contains: Vec::new(),
        }
    }

    #[test]
    fn the_engine_gets_repeats_but_no_host() {
        let c = case(
            &[
                ("authorization", "a"),
                ("host", "b.example"),
                ("authorization", "b"),
            ],
            expect("deny"),
        );
        assert_eq!(
            engine_headers(&c),
            vec![("authorization", "a"), ("authorization", "b")]
        );
    }

    fn outcome(body: Option<&[u8]>) -> Outcome {
        Outcome {
            name: "x".into(),
            decision: "sanitize".into(),
            reason: "r".into(),
            rule: None,
            policy_version: "v".into(),
            body: body.map(<[u8]>::to_vec),
            agent: None,
            tool: None,
            action: None,
            shape: Shape::Rest,
            status: 403,
            rpc_id: None,
        }
    }

    #[test]
    fn bodies_compare_as_bytes() {
        let c = case(
            &[],
            Expect {
                body: Some(vec![0xff, 0xfe, 0xff, 0]),
                body_contains: vec!["\u{fe}".into()],
                ..expect("sanitize")
            },
        );
        let got = outcome(Some(&[0xff, 0xfe, 0xff, 0]));
        // U+00FE is two bytes in UTF-8: not in the body.
        let problems = check(&c.expect, &got);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("base64://7/AA=="), "{problems:?}");
        let other = outcome(Some(b"abc"));
        let problems = check(&c.expect, &other);
        assert!(problems[0].starts_with("body: expected `base64://7/AA==`, got `abc`"));
        assert!(contains(b"abc", b""));
        assert!(contains(b"abc", b"bc"));
        assert!(!contains(b"ab", b"abc"));
    }

    #[test]
    fn outcome_json_has_body_or_body_base64() {
        let j = serde_json::to_value(outcome(Some(b"text"))).unwrap();
        assert_eq!(j["body"], "text");
        assert!(j.get("body_base64").is_none());
        assert!(j.get("agent").is_none());
        let j = serde_json::to_value(outcome(Some(&[0xff]))).unwrap();
        assert_eq!(j["body_base64"], "/w==");
        assert!(j.get("body").is_none());
        let j = serde_json::to_value(outcome(None)).unwrap();
        assert!(j.get("body").is_none());
        assert_eq!(j["rule"], serde_json::Value::Null);
    }
}
