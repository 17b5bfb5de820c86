//! `Bundle::approval_summary`: what a person deciding an approval sees of
//! the call. The parameters as the engine reads them, every DLP detection
//! masked (the agent's own set and every built-in detector), bounded; and
//! no body, however broken, makes it panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use aegis_engine::builder::bundle::{compile, BuildOptions};
use aegis_engine::ir::{
    Action, Agent, Approval, BodyKind, Detector, Dlp, DlpAction, Mode, Policy, Rule, Tool,
};
use aegis_engine::unstable::gzip::write_stored;
use aegis_engine::{ApprovalSummary, Bundle, Caller, Request, Scratch};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::sync::OnceLock;

fn action(name: &str, method: Option<&str>, path: Option<&str>) -> Action {
    Action {
        name: name.into(),
        method: method.map(Into::into),
        path: path.map(Into::into),
        write: true,
    }
}

fn tool(name: &str, host: &str, body: BodyKind, mcp: bool, actions: Vec<Action>) -> Tool {
    Tool {
        name: name.into(),
        hosts: vec![host.into()],
        body,
        mcp_path: mcp.then(|| "/mcp".into()),
        actions,
        gzip: true,
        filter_tools_list: true,
    }
}

fn agent(name: &str, dlp: Option<Dlp>) -> Agent {
    let rule = |tool, act: &str| Rule {
        id: format!("{name}/{tool}/{act}#0"),
        tool,
        action: 0,
        when: vec![],
        conditions: vec![],
        approval: Approval::Always,
        cost_usd: None,
    };
    Agent {
        id: name.into(),
        name: name.into(),
        tenant: None,
        mode: Mode::Enforce,
        allow_hosts: None,
        budget: None,
        dlp,
        rules: vec![rule(0, "pay"), rule(1, "submit"), rule(2, "write_file")],
    }
}

/// The bundle of [`policy`].
fn bundle() -> &'static Bundle {
    static B: OnceLock<Bundle> = OnceLock::new();
    B.get_or_init(|| {
        let bytes = compile(&policy(), &BuildOptions::default(), None).unwrap();
        Bundle::load(&bytes, &[]).unwrap()
    })
}

/// A JSON, a form and an MCP tool; agent `plain` has no DLP of its own,
/// agent `guarded` a custom detector whose action is `mask`.
fn policy() -> Policy {
    Policy {
        version: "summary-1".into(),
        identity: None,
        tools: vec![
            tool(
                "payments",
                "api.pay.test",
                BodyKind::Json,
                false,
                vec![action("pay", Some("POST"), Some("/v1/pay"))],
            ),
            tool(
                "forms",
                "forms.test",
                BodyKind::Form,
                false,
                vec![action("submit", Some("POST"), Some("/submit"))],
            ),
            tool(
                "files",
                "mcp.files.test",
                BodyKind::Json,
                true,
                vec![action("write_file", None, None)],
            ),
        ],
        agents: vec![
            agent("plain", None),
            agent(
                "guarded",
                Some(Dlp {
                    detectors: vec![Detector::Email],
                    custom: vec![("ticket".into(), "TCK-[0-9]{6}".into())],
                    action: DlpAction::Mask,
                }),
            ),
        ],
        limits: Default::default(),
    }
}

/// The set of every built-in detector is carried only by bundles that
/// ask for approvals.
#[test]
fn only_a_policy_that_asks_for_approval_carries_the_approval_dlp() {
    let m = &bundle().model;
    let set = &m.dlp[m.approval_dlp.unwrap() as usize];
    assert_eq!(set.patterns.len(), Detector::ALL.len());
    let mut p = policy();
    for a in &mut p.agents {
        for r in &mut a.rules {
            r.approval = Approval::Never;
        }
    }
    let bytes = compile(&p, &BuildOptions::default(), None).unwrap();
    let b = Bundle::load(&bytes, &[]).unwrap();
    assert_eq!(b.model.approval_dlp, None);
    // Only the `guarded` agent's own set.
    assert_eq!(b.model.dlp.len(), 1);
}

fn summary_of(
    agent: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> ApprovalSummary {
    try_summary(agent, host, path, headers, body).expect("summary")
}

fn try_summary(
    agent: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<ApprovalSummary> {
    let b = bundle();
    let req = Request {
        method: "POST",
        authority: host,
        path,
        headers,
        body: Some(body),
    };
    let caller = Caller::Given {
        agent,
        tenant: None,
    };
    let route = b.route(&req, caller, 0, &mut Scratch::new()).ok()?;
    b.approval_summary(&route, "any", &req).ok()
}

const JSON: &[(&str, &str)] = &[("content-type", "application/json")];
const FORM: &[(&str, &str)] = &[("content-type", "application/x-www-form-urlencoded")];

fn params(s: &ApprovalSummary) -> Value {
    serde_json::from_str(&s.params).unwrap_or_else(|e| panic!("{e}: {}", s.params))
}

#[test]
fn json_fields_flat_by_their_paths_with_pii_masked() {
    let body = br#"{
        "amount": 1200, "currency": "usd", "ok": true, "none": null,
        "card": {"number": "4111 1111 1111 1111", "note": "owner ssn 123-45-6789"},
        "items": [{"sku": "A-1"}, {"sku": "B-2", "qty": 2.50}],
        "tags": [], "meta": {}, "c\u0061rd_id": "x"
    }"#;
    let s = summary_of("plain", "api.pay.test", "/v1/pay", JSON, body);
    assert_eq!(
        params(&s),
        json!({
            "amount": 1200, "currency": "usd", "ok": true, "none": null,
            "card.number": "[REDACTED:credit_card]",
            "card.note": "owner ssn [REDACTED:ssn]",
            "items.0.sku": "A-1", "items.1.sku": "B-2", "items.1.qty": 2.50,
            "tags": [], "meta": {}, "card_id": "x"
        })
    );
    assert!(!s.truncated);
    // Numbers keep their spelling.
    assert!(s.params.contains(r#""items.1.qty":2.50"#), "{}", s.params);
    assert_eq!(s.path, "/v1/pay");
}

#[test]
fn pii_is_masked_in_numbers_keys_and_the_path() {
    let body = br#"{"card": 4111111111111111, "123-45-6789": "key", "mail": "a@b.example"}"#;
    let s = summary_of(
        "plain",
        "api.pay.test",
        "/v1/pay?ssn=123%2D45%2D6789",
        JSON,
        body,
    );
    let p = params(&s);
    assert_eq!(p["card"], "[REDACTED:credit_card]");
    assert_eq!(p["[REDACTED:ssn]"], "key");
    assert_eq!(p["mail"], "[REDACTED:email]");
    assert_eq!(p["ssn"], "[REDACTED:ssn]");
    assert_eq!(s.path, "/v1/pay?ssn=[REDACTED:ssn]");
    for secret in ["4111", "6789"] {
        assert!(!s.params.contains(secret), "{}", s.params);
    }
}

#[test]
fn the_agents_own_detectors_apply_with_its_action_and_the_built_in_ones_too() {
    let body = br#"{"ticket": "see TCK-123456", "ssn": "123-45-6789", "mail": "a@b.example"}"#;
    let s = summary_of("guarded", "api.pay.test", "/v1/pay", JSON, body);
    let p = params(&s);
    // `mask` keeps the last four characters.
    let ticket = p["ticket"].as_str().unwrap();
    assert!(
        ticket.starts_with("see ") && ticket.ends_with("3456"),
        "{ticket}"
    );
    assert!(!ticket.contains("TCK-12"), "{ticket}");
    let mail = p["mail"].as_str().unwrap();
    assert!(!mail.contains("a@b"), "{mail}");
    // Not one of the agent's detectors: still masked for the approver.
    assert_eq!(p["ssn"], "[REDACTED:ssn]");
}

#[test]
fn form_pairs_and_the_query_string() {
    let s = summary_of(
        "plain",
        "forms.test",
        "/submit?dry_run=1",
        FORM,
        b"amount=12&note=ssn+123-45-6789&card%5Blast4%5D=4242&tag=a&tag=b",
    );
    assert_eq!(
        params(&s),
        json!({
            "dry_run": "1", "amount": "12", "note": "ssn [REDACTED:ssn]",
            "card[last4]": "4242", "tag": ["a", "b"]
        })
    );
}

#[test]
fn mcp_shows_the_calls_arguments() {
    let body = br#"{"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "write_file", "_meta": {"progressToken": 1},
                   "arguments": {"path": "/w/a.txt", "content": "ssn 123-45-6789",
                                 "opts": {"mode": "append"}}}}"#;
    let s = summary_of("plain", "mcp.files.test", "/mcp", JSON, body);
    assert_eq!(
        params(&s),
        json!({"path": "/w/a.txt", "content": "ssn [REDACTED:ssn]", "opts.mode": "append"})
    );
    // No arguments: nothing to show.
    let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"write_file"}}"#;
    let s = summary_of("plain", "mcp.files.test", "/mcp", JSON, body);
    assert_eq!(params(&s), json!({}));
}

#[test]
fn a_gzip_body_is_shown_as_it_inflates() {
    let plain = br#"{"amount": 5, "note": "ssn 123-45-6789"}"#;
    let mut gz = Vec::new();
    write_stored(plain, &mut gz);
    let headers = [
        ("content-type", "application/json"),
        ("content-encoding", "gzip"),
    ];
    let zipped = summary_of("plain", "api.pay.test", "/v1/pay", &headers, &gz);
    assert_eq!(
        zipped,
        summary_of("plain", "api.pay.test", "/v1/pay", JSON, plain)
    );
    assert_eq!(params(&zipped)["note"], "ssn [REDACTED:ssn]");
}

#[test]
fn long_values_are_cut_and_many_values_left_out_saying_so() {
    let long = "x".repeat(10_000);
    let body = format!(r#"{{"a": "{long}", "b": 1}}"#);
    let s = summary_of("plain", "api.pay.test", "/v1/pay", JSON, body.as_bytes());
    let a = params(&s)["a"].as_str().unwrap().to_string();
    assert!(a.len() < 300 && a.ends_with('…'), "{a}");
    assert_eq!(params(&s)["b"], 1);
    assert!(s.truncated);

    let many: Vec<String> = (0..5_000).map(|i| format!(r#""k{i}": "v{i}""#)).collect();
    let body = format!("{{{}}}", many.join(","));
    let s = summary_of("plain", "api.pay.test", "/v1/pay", JSON, body.as_bytes());
    assert!(s.truncated);
    assert!(s.params.len() <= 4096, "{}", s.params.len());
    let p = params(&s);
    assert_eq!(p["k0"], "v0");
    assert!(p.get("k4999").is_none());
    // Escapes count: values of control characters are 6 times longer
    // written, and the bound still holds.
    let ctl: Vec<String> = (0..100)
        .map(|i| format!(r#""k{i}": "{}""#, "\\u0001".repeat(200)))
        .collect();
    let body = format!("{{{}}}", ctl.join(","));
    let s = summary_of("plain", "api.pay.test", "/v1/pay", JSON, body.as_bytes());
    assert!(s.truncated && s.params.len() <= 4096, "{}", s.params.len());
    assert!(params(&s)["k0"].as_str().unwrap().starts_with('\u{1}'));
    // A small call is whole.
    let s = summary_of("plain", "api.pay.test", "/v1/pay", JSON, br#"{"k": "v"}"#);
    assert!(!s.truncated);
}

#[test]
fn bytes_that_are_not_utf8_are_shown_replaced() {
    let s = summary_of(
        "plain",
        "forms.test",
        "/submit",
        FORM,
        b"name=%FF%FEok&raw=\xff\xfe",
    );
    let p = params(&s);
    assert_eq!(p["name"], "\u{fffd}\u{fffd}ok");
    assert_eq!(p["raw"], "\u{fffd}\u{fffd}");
    // And a JSON string with a control character stays valid JSON.
    let s = summary_of(
        "plain",
        "api.pay.test",
        "/v1/pay",
        JSON,
        br#"{"a": "1\n2\u2028"}"#,
    );
    assert_eq!(params(&s)["a"], "1\n2\u{2028}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// No body and no path makes it panic; what it answers is a JSON
    /// object within its bound.
    #[test]
    fn arbitrary_bytes_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        path in "/[ -~]{0,64}",
        which in 0usize..3,
        gzip in any::<bool>(),
    ) {
        let (host, path, ctype) = match which {
            0 => ("api.pay.test", format!("/v1/pay{}", &path[1..].replace('/', "")), "application/json"),
            1 => ("forms.test", "/submit".to_string(), "application/x-www-form-urlencoded"),
            _ => ("mcp.files.test", "/mcp".to_string(), "application/json"),
        };
        let mut headers = vec![("content-type", ctype)];
        if gzip {
            headers.push(("content-encoding", "gzip"));
        }
        for agent in ["plain", "guarded"] {
            if let Some(s) = try_summary(agent, host, &path, &headers, &body) {
                let p: Value = serde_json::from_str(&s.params).unwrap();
                prop_assert!(p.is_object());
                prop_assert!(s.params.len() <= 4096);
            }
        }
    }

    /// JSON documents of any shape: flattened, valid, bounded.
    #[test]
    fn any_json_document_is_shown_as_json(doc in json_value(4)) {
        let body = serde_json::to_vec(&doc).unwrap();
        let s = summary_of("plain", "api.pay.test", "/v1/pay", JSON, &body);
        let p: Value = serde_json::from_str(&s.params).unwrap();
        prop_assert!(p.is_object());
        prop_assert!(s.params.len() <= 4096);
        // The same document as an MCP call's arguments.
        let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                          "params": {"name": "write_file", "arguments": doc}});
        let body = serde_json::to_vec(&call).unwrap();
        let m = summary_of("guarded", "mcp.files.test", "/mcp", JSON, &body);
        let p: Value = serde_json::from_str(&m.params).unwrap();
        prop_assert!(p.is_object());
        prop_assert!(m.params.len() <= 4096);
    }
}

fn json_value(depth: u32) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "\\PC{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(depth, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z0-9.]{0,8}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
