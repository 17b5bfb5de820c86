//! `Bundle::decide` allocates nothing once warmed up.
//!
//! The counting global allocator comes from the `allocation-counter` crate
//! (the workspace forbids `unsafe_code`, which a hand-written
//! `GlobalAlloc` needs): it wraps `std::alloc::System` and counts, per
//! thread, every allocation (and reallocation) made inside
//! `allocation_counter::measure`. Each case decides once to warm up (the
//! DLP scratch may grow on first use), then decides again several times
//! under measurement and requires zero allocations, and checks the verdict
//! so that the measured path is the one the case names.

// Test helpers outside `#[test]` fns fall outside clippy's in-test allowances.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use aegis_engine::builder::bundle::{compile, BuildOptions};
use aegis_engine::ir::{
    Action, Agent, Approval, BodyKind, Detector, Dlp, DlpAction, Mode, Op, Policy, Predicate, Rule,
    Scalar, Tool,
};
use aegis_engine::jwt::{IdentityConfig, TokenCacheConfig, TrustedKey};
use aegis_engine::{Bundle, Caller, Decision, Request, Scratch, Verdict};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use std::hint::black_box;

const NOW: i64 = 1_700_000_000;
const ISS: &str = "https://tokens.acme.test";
const AUD: &str = "aegis";

fn token_key() -> SigningKey {
    SigningKey::from_bytes(&[9u8; 32])
}

fn pred(param: &str, op: Op) -> Predicate {
    Predicate {
        param: param.into(),
        op,
    }
}

fn s(v: &str) -> Scalar {
    Scalar::Str(v.into())
}

fn http(name: &str, method: &str, path: &str) -> Action {
    Action {
        name: name.into(),
        method: Some(method.into()),
        path: Some(path.into()),
        write: false,
    }
}

fn mcp(name: &str) -> Action {
    Action {
        name: name.into(),
        method: None,
        path: None,
        write: false,
    }
}

fn rule(
    id: &str,
    tool: usize,
    action: usize,
    when: Vec<Predicate>,
    conditions: Vec<Predicate>,
) -> Rule {
    Rule {
        id: id.into(),
        tool,
        action,
        when,
        conditions,
        approval: Approval::Never,
        cost_usd: Some(0.01),
    }
}

fn agent(id: &str, tenant: Option<&str>, dlp: Option<Dlp>, rules: Vec<Rule>) -> Agent {
    Agent {
        id: id.into(),
        name: id.rsplit('/').next().unwrap_or(id).into(),
        tenant: tenant.map(String::from),
        mode: Mode::Enforce,
        allow_hosts: Some(vec![
            "api.pay.test".into(),
            "*.pay.internal".into(),
            "forms.test".into(),
            "mcp.files.internal".into(),
        ]),
        budget: None,
        dlp,
        rules,
    }
}

/// The conditions of the payment rules: numbers, strings, `in`,
/// `matches`, nested and indexed parameters.
fn payment_conditions() -> Vec<Predicate> {
    vec![
        pred("amount", Op::Le(5000.0)),
        pred("amount", Op::Gt(0.0)),
        pred("currency", Op::In(vec![s("usd"), s("eur")])),
        pred(
            "description",
            Op::Matches("^[A-Za-z0-9 .,-]{0,140}$".into()),
        ),
        pred("customer.country", Op::Eq(s("US"))),
        pred("items.0.sku", Op::NotMatches("^BANNED-".into())),
        pred("items.0.qty", Op::Eq(Scalar::Num(2.0))),
        pred("capture", Op::Eq(Scalar::Bool(true))),
        pred("metadata.order_id", Op::Exists),
        pred("internal", Op::Absent),
    ]
}

fn policy() -> Policy {
    let payments = 0;
    let forms = 1;
    let files = 2;
    Policy {
        version: "no-alloc-1".into(),
        identity: Some(IdentityConfig {
            issuer: ISS.into(),
            audience: AUD.into(),
            keys: vec![TrustedKey {
                kid: "k1".into(),
                key: token_key().verifying_key().to_bytes(),
            }],
            agent_claim: "sub".into(),
            tenant_claim: "tenant".into(),
            scope_claim: "scope".into(),
            max_age_secs: Some(3600),
            skew_secs: 60,
            insecure_agent_header: false,
            token_header: "authorization".into(),
        }),
        tools: vec![
            Tool {
                name: "payments".into(),
                hosts: vec!["api.pay.test".into(), "*.pay.internal".into()],
                body: BodyKind::Json,
                mcp_path: None,
                gzip: true,
                filter_tools_list: true,
                actions: vec![
                    http("create_payment", "POST", "/v1/payment_intents"),
                    http("get_customer", "GET", "/v1/customers/{id}"),
                    http("list_charges", "GET", "/v1/customers/{id}/charges/{charge}"),
                ],
            },
            Tool {
                name: "forms".into(),
                hosts: vec!["forms.test".into()],
                body: BodyKind::Form,
                mcp_path: None,
                gzip: false,
                filter_tools_list: true,
                actions: vec![http("submit", "POST", "/v1/submit")],
            },
            Tool {
                name: "files".into(),
                hosts: vec!["mcp.files.internal".into()],
                body: BodyKind::Json,
                mcp_path: Some("/mcp".into()),
                gzip: false,
                filter_tools_list: true,
                actions: vec![mcp("read_file"), mcp("write_file")],
            },
        ],
        agents: vec![
            // No DLP: the decision path without the scanner.
            agent(
                "ops",
                None,
                None,
                vec![
                    rule(
                        "ops/payments/create_payment#0",
                        payments,
                        0,
                        vec![pred("mode", Op::Eq(s("live")))],
                        payment_conditions(),
                    ),
                    rule(
                        "ops/payments/get_customer#0",
                        payments,
                        1,
                        vec![],
                        vec![
                            pred("id", Op::Matches("^cus_[A-Za-z0-9]+$".into())),
                            pred("expand", Op::In(vec![s("charges"), s("sources")])),
                            pred("limit", Op::Le(100.0)),
                        ],
                    ),
                    rule(
                        "ops/payments/list_charges#0",
                        payments,
                        2,
                        vec![],
                        vec![
                            pred("id", Op::Ne(s("cus_blocked"))),
                            pred("charge", Op::Matches("^ch_".into())),
                        ],
                    ),
                    rule(
                        "ops/forms/submit#0",
                        forms,
                        0,
                        vec![],
                        vec![
                            pred("amount", Op::Lt(1000.0)),
                            pred("card.last4", Op::Matches("^[0-9]{4}$".into())),
                            pred("note", Op::Eq(s("two words"))),
                            pred("metadata.order_id", Op::Eq(s("A+1"))),
                        ],
                    ),
                    rule(
                        "ops/files/read_file#0",
                        files,
                        0,
                        vec![],
                        vec![
                            pred("path", Op::Matches("^/src/".into())),
                            pred("max_bytes", Op::Le(65536.0)),
                        ],
                    ),
                ],
            ),
            // DLP on: clean bodies are scanned and allowed.
            agent(
                "acme/fin",
                Some("acme"),
                Some(Dlp {
                    detectors: vec![
                        Detector::Ssn,
                        Detector::CreditCard,
                        Detector::Email,
                        Detector::Dob,
                    ],
                    custom: vec![("patient_id".into(), "PT-[0-9]{8}".into())],
                    action: DlpAction::Redact,
                }),
                vec![rule(
                    "acme/fin/payments/create_payment#0",
                    payments,
                    0,
                    vec![],
                    vec![
                        pred("amount", Op::Le(5000.0)),
                        pred("currency", Op::In(vec![s("usd"), s("eur")])),
                    ],
                )],
            ),
        ],
        limits: Default::default(),
    }
}

fn bundle() -> Bundle {
    let bytes = compile(&policy(), &BuildOptions::default(), None).expect("compile");
    Bundle::load(&bytes, &[]).expect("load")
}

/// A compact EdDSA JWT for `agent` of `tenant`, minted here.
fn token(agent: &str, tenant: &str) -> String {
    let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": "k1"}).to_string();
    let claims = serde_json::json!({
        "iss": ISS,
        "aud": AUD,
        "sub": agent,
        "tenant": tenant,
        "scope": "payments:write",
        "iat": NOW - 10,
        "nbf": NOW - 10,
        "exp": NOW + 300,
    })
    .to_string();
    let signed = format!("{}.{}", B64.encode(header), B64.encode(claims));
    let sig = token_key().sign(signed.as_bytes());
    format!("{signed}.{}", B64.encode(sig.to_bytes()))
}

const PAYMENT: &[u8] = br#"{
  "mode": "live",
  "amount": 1200.50,
  "currency": "usd",
  "description": "Invoice 42, March",
  "customer": {"id": "cus_9", "country": "US"},
  "items": [{"sku": "SKU-1", "qty": 2}, {"sku": "SKU-2", "qty": 1}],
  "capture": true,
  "metadata": {"order_id": "A-1", "tags": ["x", "y"], "nested": {"deep": [1, 2, {"k": null}]}},
  "escaped": "line\nbreak \u00e9 \ud83d\ude00 \"quoted\""
}"#;

struct Case<'a> {
    name: &'a str,
    method: &'a str,
    authority: &'a str,
    path: &'a str,
    headers: Vec<(&'a str, &'a str)>,
    body: &'a [u8],
    caller: Caller<'a>,
    verdict: Verdict,
    rule: Option<&'a str>,
}

fn decide<'a>(b: &'a Bundle, c: &'a Case<'a>, scratch: &mut Scratch) -> Decision<'a> {
    let req = Request {
        method: c.method,
        authority: c.authority,
        path: c.path,
        headers: &c.headers[..],
        body: Some(c.body),
    };
    b.decide(&req, c.caller, NOW, scratch)
}

/// Warms up, checks the verdict, then measures `ROUNDS` decisions.
fn assert_no_alloc(b: &Bundle, c: &Case<'_>) {
    assert_no_alloc_with(b, c, TokenCacheConfig::DEFAULT);
}

/// [`assert_no_alloc`] with a verified-token cache of this size (`OFF`:
/// every decision verifies the token).
fn assert_no_alloc_with(b: &Bundle, c: &Case<'_>, tokens: TokenCacheConfig) {
    const ROUNDS: usize = 8;
    let mut scratch = Scratch::for_bundle_with(b, tokens);
    let d = decide(b, c, &mut scratch);
    assert_eq!(
        (d.verdict, d.rule),
        (c.verdict, c.rule),
        "{}: {}",
        c.name,
        d.reason
    );
    let mut verdicts = [Verdict::NeedBody; ROUNDS];
    let info = allocation_counter::measure(|| {
        for v in verdicts.iter_mut() {
            let d = decide(b, black_box(c), &mut scratch);
            *v = black_box(d).verdict;
        }
    });
    assert_eq!(
        info.count_total, 0,
        "{}: decide allocated {} times ({} bytes) in {ROUNDS} rounds",
        c.name, info.count_total, info.bytes_total
    );
    assert!(verdicts.iter().all(|v| *v == c.verdict), "{}", c.name);
}

fn ops() -> Caller<'static> {
    Caller::Given {
        agent: "ops",
        tenant: None,
    }
}

fn fin() -> Caller<'static> {
    Caller::Given {
        agent: "fin",
        tenant: Some("acme"),
    }
}

fn json() -> Vec<(&'static str, &'static str)> {
    vec![("content-type", "application/json")]
}

/// The counter is live: the proofs below are not vacuous.
#[test]
fn counter_counts() {
    let info = allocation_counter::measure(|| {
        black_box(vec![1u8; 16]);
    });
    assert_eq!(info.count_total, 1);
    let info = allocation_counter::measure(|| {
        black_box(String::from("x")).push_str("grow past the first allocation");
    });
    assert!(info.count_total >= 2, "{info:?}");
}

#[test]
fn allowed_json_call_with_conditions() {
    let b = bundle();
    assert_no_alloc(
        &b,
        &Case {
            name: "allowed json",
            method: "POST",
            authority: "api.pay.test",
            path: "/v1/payment_intents",
            headers: json(),
            body: PAYMENT,
            caller: ops(),
            verdict: Verdict::Allow,
            rule: Some("ops/payments/create_payment#0"),
        },
    );
}

#[test]
fn denied_json_calls() {
    let b = bundle();
    let over: &[u8] = br#"{"mode": "live", "amount": 9000, "currency": "usd"}"#;
    let other: &[u8] = br#"{"mode": "test"}"#;
    let dup: &[u8] = br#"{"mode": "live", "amount": 1, "amount": 2}"#;
    let bad: &[u8] = br#"{"mode": "live", "amount": 1,"#;
    let empty: &[u8] = b"{}";
    for (name, authority, path, body, rule) in [
        (
            "failed condition",
            "api.pay.test",
            "/v1/payment_intents",
            over,
            Some("ops/payments/create_payment#0"),
        ),
        (
            "no rule applies",
            "api.pay.test",
            "/v1/payment_intents",
            other,
            None,
        ),
        (
            "duplicate parameter",
            "api.pay.test",
            "/v1/payment_intents",
            dup,
            None,
        ),
        (
            "malformed json",
            "api.pay.test",
            "/v1/payment_intents",
            bad,
            None,
        ),
        ("unknown route", "api.pay.test", "/v1/refunds", empty, None),
        (
            "unknown host",
            "stranger.test",
            "/v1/payment_intents",
            empty,
            None,
        ),
    ] {
        assert_no_alloc(
            &b,
            &Case {
                name,
                method: "POST",
                authority,
                path,
                headers: json(),
                body,
                caller: ops(),
                verdict: Verdict::Deny,
                rule,
            },
        );
    }
    assert_no_alloc(
        &b,
        &Case {
            name: "unknown agent",
            method: "POST",
            authority: "api.pay.test",
            path: "/v1/payment_intents",
            headers: json(),
            body: PAYMENT,
            caller: Caller::Given {
                agent: "nobody",
                tenant: None,
            },
            verdict: Verdict::Deny,
            rule: None,
        },
    );
}

#[test]
fn form_body_call() {
    let b = bundle();
    assert_no_alloc(
        &b,
        &Case {
            name: "form body",
            method: "POST",
            authority: "forms.test",
            path: "/v1/submit",
            headers: vec![("content-type", "application/x-www-form-urlencoded")],
            body:
                b"amount=999.5&card%5Blast4%5D=4242&note=two+words&metadata[order_id]=A%2B1&other=x",
            caller: ops(),
            verdict: Verdict::Allow,
            rule: Some("ops/forms/submit#0"),
        },
    );
}

#[test]
fn path_template_and_query_string() {
    let b = bundle();
    assert_no_alloc(
        &b,
        &Case {
            name: "template + query",
            method: "GET",
            authority: "eu.pay.internal:8443",
            path: "/v1/customers/cus_Ab12?expand=charges&limit=25&unused=%20x",
            headers: vec![],
            body: b"",
            caller: ops(),
            verdict: Verdict::Allow,
            rule: Some("ops/payments/get_customer#0"),
        },
    );
    assert_no_alloc(
        &b,
        &Case {
            name: "two template params, percent-encoded",
            method: "GET",
            authority: "api.pay.test",
            path: "/v1/customers/cus%5F1/charges/ch_%41%42",
            headers: vec![],
            body: b"",
            caller: ops(),
            verdict: Verdict::Allow,
            rule: Some("ops/payments/list_charges#0"),
        },
    );
}

#[test]
fn mcp_tools_call() {
    let b = bundle();
    assert_no_alloc(
        &b,
        &Case {
            name: "mcp tools/call",
            method: "POST",
            authority: "mcp.files.internal",
            path: "/mcp",
            headers: json(),
            body: br#"{"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                      "params": {"name": "read_file",
                                 "arguments": {"path": "/src/lib.rs", "max_bytes": 4096}}}"#,
            caller: ops(),
            verdict: Verdict::Allow,
            rule: Some("ops/files/read_file#0"),
        },
    );
    assert_no_alloc(
        &b,
        &Case {
            name: "mcp plumbing",
            method: "POST",
            authority: "mcp.files.internal",
            path: "/mcp",
            headers: json(),
            body: br#"{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}"#,
            caller: ops(),
            verdict: Verdict::Allow,
            rule: None,
        },
    );
    assert_no_alloc(
        &b,
        &Case {
            name: "mcp tool without a rule",
            method: "POST",
            authority: "mcp.files.internal",
            path: "/mcp",
            headers: json(),
            body: br#"{"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                      "params": {"name": "write_file", "arguments": {"path": "/etc/passwd"}}}"#,
            caller: ops(),
            verdict: Verdict::Deny,
            rule: None,
        },
    );
}

#[test]
fn mcp_headers_and_request_shape_checks() {
    let b = bundle();
    let call: &[u8] = br#"{"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                      "params": {"name": "read_file", "arguments": {"path": "/src/lib.rs", "max_bytes": 10}}}"#;
    // `read_file` as an MCP base64 header value.
    let mut headers = json();
    headers.push(("mcp-method", "tools/call"));
    headers.push(("mcp-name", "=?base64?cmVhZF9maWxl?="));
    assert_no_alloc(
        &b,
        &Case {
            name: "mcp with mirrored headers",
            method: "POST",
            authority: "mcp.files.internal",
            path: "/mcp",
            headers,
            body: call,
            caller: ops(),
            verdict: Verdict::Allow,
            rule: Some("ops/files/read_file#0"),
        },
    );
    let mut headers = json();
    headers.push(("mcp-name", "=?base64?d3JpdGVfZmlsZQ==?="));
    assert_no_alloc(
        &b,
        &Case {
            name: "mcp header mismatch",
            method: "POST",
            authority: "mcp.files.internal",
            path: "/mcp",
            headers,
            body: call,
            caller: ops(),
            verdict: Verdict::Deny,
            rule: None,
        },
    );
    for (name, authority, path) in [
        ("dot segment", "api.pay.test", "/v1/x/../payment_intents"),
        ("encoded slash", "api.pay.test", "/v1%2Fpayment_intents"),
        ("userinfo", "user@api.pay.test", "/v1/payment_intents"),
        (
            "joined hosts",
            "api.pay.test,evil.test",
            "/v1/payment_intents",
        ),
    ] {
        assert_no_alloc(
            &b,
            &Case {
                name,
                method: "POST",
                authority,
                path,
                headers: json(),
                body: PAYMENT,
                caller: ops(),
                verdict: Verdict::Deny,
                rule: None,
            },
        );
    }
    // Unreserved escapes are decoded for matching, without a buffer.
    assert_no_alloc(
        &b,
        &Case {
            name: "percent-encoded path",
            method: "POST",
            authority: "API.pay.test.:443",
            path: "/v1/%70ayment_intents",
            headers: json(),
            body: PAYMENT,
            caller: ops(),
            verdict: Verdict::Allow,
            rule: Some("ops/payments/create_payment#0"),
        },
    );
}

#[test]
fn call_with_a_jwt() {
    let b = bundle();
    let bearer = format!("Bearer {}", token("fin", "acme"));
    let body = br#"{"amount": 10, "currency": "eur", "note": "clean"}"#;
    let case = Case {
        name: "jwt",
        method: "POST",
        authority: "api.pay.test",
        path: "/v1/payment_intents",
        headers: vec![
            ("content-type", "application/json"),
            ("authorization", bearer.as_str()),
        ],
        body,
        caller: Caller::FromRequest,
        verdict: Verdict::Allow,
        rule: Some("acme/fin/payments/create_payment#0"),
    };
    // Found in the verified-token cache, and verified every time.
    assert_no_alloc(&b, &case);
    assert_no_alloc_with(&b, &case, TokenCacheConfig::OFF);
    let expired = {
        let header = r#"{"alg":"EdDSA","kid":"k1"}"#;
        let claims = format!(
            r#"{{"iss":"{ISS}","aud":"{AUD}","sub":"fin","tenant":"acme","exp":{}}}"#,
            NOW - 3600
        );
        let signed = format!("{}.{}", B64.encode(header), B64.encode(claims));
        let sig = token_key().sign(signed.as_bytes());
        format!("Bearer {signed}.{}", B64.encode(sig.to_bytes()))
    };
    assert_no_alloc(
        &b,
        &Case {
            name: "expired jwt",
            method: "POST",
            authority: "api.pay.test",
            path: "/v1/payment_intents",
            headers: vec![("authorization", expired.as_str())],
            body,
            caller: Caller::FromRequest,
            verdict: Verdict::Deny,
            rule: None,
        },
    );
}

#[test]
fn dlp_clean_body() {
    let b = bundle();
    assert_no_alloc(
        &b,
        &Case {
            name: "dlp clean",
            method: "POST",
            authority: "api.pay.test",
            path: "/v1/payment_intents",
            headers: json(),
            body: PAYMENT,
            caller: fin(),
            verdict: Verdict::Allow,
            rule: Some("acme/fin/payments/create_payment#0"),
        },
    );
}

/// Not required by the design's "no allocation" target for clean traffic,
/// but worth knowing: a body that DLP rewrites reuses the warmed-up scratch.
#[test]
fn dlp_sanitized_body() {
    let b = bundle();
    assert_no_alloc(
        &b,
        &Case {
            name: "dlp sanitize",
            method: "POST",
            authority: "api.pay.test",
            path: "/v1/payment_intents",
            headers: json(),
            body:
                br#"{"amount": 10, "currency": "usd", "note": "ssn 123-45-6789, mail a@b.example"}"#,
            caller: fin(),
            verdict: Verdict::Sanitize,
            rule: Some("acme/fin/payments/create_payment#0"),
        },
    );
}

/// A gzip body is inflated into the scratch sized for the bundle; a
/// sanitized one is wrapped as gzip again in reused memory.
#[test]
fn gzip_bodies() {
    let b = bundle();
    let mut clean = Vec::new();
    aegis_engine::unstable::gzip::write_stored(PAYMENT, &mut clean);
    let mut pii = Vec::new();
    aegis_engine::unstable::gzip::write_stored(
        br#"{"amount": 10, "currency": "usd", "note": "ssn 123-45-6789"}"#,
        &mut pii,
    );
    let mut headers = json();
    headers.push(("content-encoding", "gzip"));
    for (name, body, caller, verdict, rule) in [
        (
            "gzip allowed",
            &clean,
            ops(),
            Verdict::Allow,
            "ops/payments/create_payment#0",
        ),
        (
            "gzip sanitized",
            &pii,
            fin(),
            Verdict::Sanitize,
            "acme/fin/payments/create_payment#0",
        ),
    ] {
        assert_no_alloc(
            &b,
            &Case {
                name,
                method: "POST",
                authority: "api.pay.test",
                path: "/v1/payment_intents",
                headers: headers.clone(),
                body,
                caller,
                verdict,
                rule: Some(rule),
            },
        );
    }
}
