//! The seed scenarios through a real Envoy, in both header modes: status,
//! forwarded body (sanitized where expected), `content-length`, the local
//! reply (`x-aegis-decision`, JSON body), what the upstream received (and
//! that it never received a blocked request), the access-log fields, the
//! labelled metrics in `/stats/prometheus`, and what Envoy forwards before
//! the body has arrived.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use aegis_cases::runner::{now_unix, outcome, Outcome};
use aegis_e2e::blob::fresh_key;
use aegis_e2e::client::{send, Req, Resp, SlowRequest};
use aegis_e2e::config::{self, Gateway, Listener, Mode};
use aegis_e2e::corpus::{self, Prepared};
use aegis_e2e::prom;
use aegis_e2e::upstream::{EchoServer, Recorded, ECHO_HEADER};
use aegis_engine::{Caller, Request, Scratch};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const STRIPE: &str = "api.stripe.com";
const EHR: &str = "ehr.hospital.internal";
const FORM: &str = "application/x-www-form-urlencoded";
const JSON: &str = "application/json";
const RULE: &str = "finance-agent/stripe-payments/create_payment#0";

fn prepare(dir: &Path, name: &str) -> Prepared {
    let policy_key = fresh_key(dir, &format!("{name}-policy")).unwrap();
    let token_key = fresh_key(dir, &format!("{name}-tokens")).unwrap();
    let folder = corpus::folders()
        .unwrap()
        .into_iter()
        .find(|f| f.name == name)
        .unwrap();
    corpus::prepare(&folder, dir, &policy_key, &token_key).unwrap()
}

/// What the engine decides natively for the request an agent sends.
fn native(p: &Prepared, req: &Req) -> Outcome {
    let mut scratch = Scratch::new();
    let body = req.body.clone().unwrap_or_default();
    let r = Request {
        method: &req.method,
        authority: &req.authority,
        path: &req.path,
        headers: req.headers.as_slice(),
        body: Some(&body),
    };
    let d = p
        .built
        .bundle
        .decide(&r, Caller::FromRequest, now_unix(), &mut scratch);
    outcome(&p.built.bundle, "scenario", &d, &scratch)
}

struct Scenarios {
    gw: Gateway,
    upstream: EchoServer,
    mode: Mode,
    next: usize,
    /// `(agent, tool, decision)` of every request, from the engine.
    counted: Vec<(String, String, String)>,
}

impl Scenarios {
    fn id(&mut self) -> String {
        self.next += 1;
        format!("scn-{}-{}", self.mode.name(), self.next)
    }

    /// A request from `agent` with a token from `p`'s issuer.
    #[allow(clippy::too_many_arguments)] // reads like the request line
    fn req(
        &mut self,
        p: &Prepared,
        agent: Option<&str>,
        method: &str,
        host: &str,
        path: &str,
        ct: &str,
        body: &str,
    ) -> (Req, String) {
        let id = self.id();
        let mut headers = vec![("x-request-id".to_string(), id.clone())];
        if !ct.is_empty() {
            headers.push(("content-type".into(), ct.into()));
        }
        if let Some(a) = agent {
            headers.push((
                "authorization".into(),
                format!("Bearer {}", p.token(a, None)),
            ));
        }
        let req = Req {
            method: method.into(),
            authority: host.into(),
            path: path.into(),
            headers,
            body: (!body.is_empty()).then(|| body.as_bytes().to_vec()),
        };
        (req, id)
    }

    /// Counts the request for the metrics check; returns the engine's
    /// outcome.
    fn expect(&mut self, p: &Prepared, req: &Req) -> Outcome {
        let o = native(p, req);
        self.counted.push((
            corpus::label_value(o.agent.as_deref()),
            corpus::label_value(o.tool.as_deref()),
            o.decision.clone(),
        ));
        o
    }

    fn log(&self, id: &str) -> Value {
        let ids = vec![id.to_string()];
        self.gw
            .envoy
            .access_log_for(&ids, Duration::from_secs(10))
            .unwrap()
            .remove(id)
            .unwrap()
    }

    fn complete_upstream(&self, id: &str) -> Vec<Recorded> {
        self.upstream
            .with_id(id)
            .into_iter()
            .filter(|r| r.complete)
            .collect()
    }

    fn seen_upstream(&self, id: &str, within: Duration) -> bool {
        self.upstream
            .wait_until(within, |rs| rs.iter().any(|r| r.request_id() == Some(id)))
    }
}

fn check_log(log: &Value, want: &[(&str, Option<&str>)]) {
    for (k, v) in want {
        let got = match log.get(*k) {
            Some(Value::String(s)) if s != "-" => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        assert_eq!(got.as_deref(), *v, "access log field {k}: {log}");
    }
}

/// A local reply: status, headers and exactly the five JSON fields, equal
/// to the engine's outcome.
fn check_local_reply(resp: &Resp, status: u16, want: &Outcome, id: &str) {
    assert_eq!(resp.status, status, "{}", resp.text());
    assert_eq!(
        resp.header("x-aegis-decision"),
        Some(want.decision.as_str())
    );
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert!(
        resp.header(ECHO_HEADER).is_none(),
        "answered by the upstream"
    );
    let j = resp.json().unwrap();
    assert_eq!(
        j,
        json!({
            "decision": want.decision,
            "reason": want.reason,
            "rule": want.rule,
            "policy_version": want.policy_version,
            "request_id": id,
            "error": {
                "type": if status == 413 { "request_too_large" } else { "permission_error" },
                "code": want.decision,
                "message": aegis_engine::reply::message(&want.decision, &want.reason),
            },
        })
    );
}

fn scenarios(mode: Mode) {
    let Some(envoy) = common::envoy_or_skip(&format!("seed scenarios ({})", mode.name())) else {
        return;
    };
    let dir = aegis_e2e::workdir(&format!("scenarios-{}", mode.name())).unwrap();
    let finance = prepare(dir.path(), "finance");
    let healthcare = prepare(dir.path(), "healthcare");
    let upstream = EchoServer::start().unwrap();
    let listener = |name: &str, p: &Prepared, max: Option<u64>| Listener {
        name: name.into(),
        blob: p.built.path.clone(),
        trusted_key: p.built.trusted_key.clone(),
        max_body_bytes: max,
        filter_state: None,
    };
    let gw = config::start(
        &envoy,
        mode,
        dir.path(),
        upstream.port(),
        &[
            listener("finance", &finance, None),
            listener("healthcare", &healthcare, None),
            // The same policy with a 64-byte body limit.
            listener("finance_small", &finance, Some(64)),
            // ... writing only two filter-state keys.
            Listener {
                filter_state: Some(vec!["aegis_decision".into(), "aegis_rule".into()]),
                ..listener("finance_quiet", &finance, None)
            },
        ],
    )
    .unwrap();
    let (fin_port, hc_port, small_port, quiet_port) =
        (gw.ports[0], gw.ports[1], gw.ports[2], gw.ports[3]);
    let mut s = Scenarios {
        gw,
        upstream,
        mode,
        next: 0,
        counted: Vec::new(),
    };

    // 1. Seed: a small payment is allowed and forwarded untouched.
    let body = "amount=1200&currency=usd";
    let (req, id) = s.req(
        &finance,
        Some("finance-agent"),
        "POST",
        STRIPE,
        "/v1/payment_intents",
        FORM,
        body,
    );
    let want = s.expect(&finance, &req);
    assert_eq!(want.decision, "allow");
    let resp = send(fin_port, &req).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header(ECHO_HEADER), Some("1"));
    assert!(resp.header("x-aegis-decision").is_none());
    assert_eq!(resp.body, body.as_bytes());
    let up = s.complete_upstream(&id);
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].body, body.as_bytes());
    assert_eq!(
        (up[0].method.as_str(), up[0].path.as_str()),
        ("POST", "/v1/payment_intents")
    );
    assert_eq!(up[0].header("host"), Some(STRIPE));
    assert_eq!(
        up[0].header("content-length"),
        Some("24"),
        "allow keeps content-length"
    );
    assert_eq!(up[0].header("content-type"), Some(FORM));
    assert!(up[0].header("x-aegis-shadow-decision").is_none());
    check_log(
        &s.log(&id),
        &[
            ("decision", Some("allow")),
            ("reason", Some(&want.reason)),
            ("rule", Some(RULE)),
            ("agent", Some("finance-agent")),
            ("tool", Some("stripe-payments")),
            ("action", Some("create_payment")),
            ("mode", Some("enforce")),
            ("policy_version", Some(&want.policy_version)),
            ("request_id", Some(&id)),
            ("x_request_id", Some(&id)),
            ("status", Some("200")),
        ],
    );

    // 2. Seed: above the ceiling needs approval: 403, never upstream.
    let (req, id) = s.req(
        &finance,
        Some("finance-agent"),
        "POST",
        STRIPE,
        "/v1/payment_intents",
        FORM,
        "amount=5001&currency=usd",
    );
    let want = s.expect(&finance, &req);
    assert_eq!(want.decision, "approval_needed");
    assert!(
        want.reason.contains("`amount` must be a number <= 5000"),
        "{}",
        want.reason
    );
    let resp = send(fin_port, &req).unwrap();
    check_local_reply(&resp, 403, &want, &id);
    assert!(s.complete_upstream(&id).is_empty());
    assert!(s.upstream.with_id(&id).iter().all(|r| r.body.is_empty()));
    if mode.holds_headers() {
        assert!(
            s.upstream.with_id(&id).is_empty(),
            "headers held, yet upstream saw them"
        );
    }
    check_log(
        &s.log(&id),
        &[
            ("decision", Some("approval_needed")),
            ("reason", Some(&want.reason)),
            ("rule", Some(RULE)),
            ("agent", Some("finance-agent")),
            ("tool", Some("stripe-payments")),
            ("action", Some("create_payment")),
            ("status", Some("403")),
            ("request_id", Some(&id)),
        ],
    );

    // 3. Seed: anything not listed is denied; decided on the headers, so
    // nothing reaches the upstream in either mode.
    let (req, id) = s.req(
        &finance,
        Some("finance-agent"),
        "GET",
        STRIPE,
        "/v1/customers/cus_123",
        "",
        "",
    );
    let want = s.expect(&finance, &req);
    assert_eq!(want.decision, "deny");
    let resp = send(fin_port, &req).unwrap();
    check_local_reply(&resp, 403, &want, &id);
    assert!(s.upstream.with_id(&id).is_empty());
    check_log(
        &s.log(&id),
        &[
            ("decision", Some("deny")),
            ("agent", Some("finance-agent")),
            ("tool", want.tool.as_deref()),
            ("action", want.action.as_deref()),
            ("rule", None),
        ],
    );

    // 4. No token: denied first; no agent in the log.
    let (req, id) = s.req(
        &finance,
        None,
        "POST",
        STRIPE,
        "/v1/payment_intents",
        FORM,
        "amount=1&currency=usd",
    );
    let want = s.expect(&finance, &req);
    assert!(
        want.reason.contains("missing bearer token"),
        "{}",
        want.reason
    );
    let resp = send(fin_port, &req).unwrap();
    check_local_reply(&resp, 403, &want, &id);
    assert!(s.upstream.with_id(&id).is_empty());
    check_log(
        &s.log(&id),
        &[
            ("decision", Some("deny")),
            ("agent", None),
            ("tool", None),
            ("rule", None),
        ],
    );

    // 5. Egress: a host outside the agent's allowlist.
    let (req, id) = s.req(
        &healthcare,
        Some("clinical-assistant"),
        "POST",
        "api.labs-partner.example",
        "/v2/orders",
        JSON,
        r#"{"test":"cbc"}"#,
    );
    let want = s.expect(&healthcare, &req);
    assert!(want.reason.contains("egress allowlist"), "{}", want.reason);
    let resp = send(hc_port, &req).unwrap();
    check_local_reply(&resp, 403, &want, &id);
    assert!(s.upstream.with_id(&id).is_empty());

    // 6. DLP: an SSN in a note is redacted. The upstream gets the engine's
    // rewritten body with a length that matches it (the agent's
    // content-length is dropped; Envoy frames the new body).
    let note = r#"{"subject":"Patient/123","text":"SSN 123-45-6789 verified"}"#;
    let (req, id) = s.req(
        &healthcare,
        Some("clinical-assistant"),
        "POST",
        EHR,
        "/fhir/DocumentReference",
        JSON,
        note,
    );
    let want = s.expect(&healthcare, &req);
    assert_eq!(want.decision, "sanitize");
    let resp = send(hc_port, &req).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let up = s.complete_upstream(&id);
    assert_eq!(up.len(), 1, "{:?}", s.upstream.with_id(&id));
    let forwarded = String::from_utf8(up[0].body.clone()).unwrap();
    assert_eq!(
        forwarded,
        r#"{"subject":"Patient/123","text":"SSN [REDACTED:ssn] verified"}"#
    );
    assert_eq!(Some(forwarded.as_bytes()), want.body.as_deref());
    assert_eq!(resp.body, up[0].body, "the echo is the sanitized body");
    match up[0].header("content-length") {
        Some(cl) => assert_eq!(cl.parse::<usize>().unwrap(), up[0].body.len()),
        None => assert_eq!(up[0].header("transfer-encoding"), Some("chunked")),
    }
    check_log(
        &s.log(&id),
        &[
            ("decision", Some("sanitize")),
            ("agent", Some("clinical-assistant")),
            ("tool", Some("ehr")),
            ("action", Some("create_note")),
            ("status", Some("200")),
        ],
    );

    // 7. A clean note is forwarded byte for byte even though the agent has
    // DLP (content-length dropped all the same).
    let clean = r#"{"subject":"Patient/123","text":"Follow-up in two weeks."}"#;
    let (req, id) = s.req(
        &healthcare,
        Some("clinical-assistant"),
        "POST",
        EHR,
        "/fhir/DocumentReference",
        JSON,
        clean,
    );
    assert_eq!(s.expect(&healthcare, &req).decision, "allow");
    let resp = send(hc_port, &req).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let up = s.complete_upstream(&id);
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].body, clean.as_bytes());

    // 8. A body over the filter's limit: 413, never upstream. The same
    // blob on the other listener (one VM, two plugin configurations) keeps
    // its own 1 MiB limit and forwards it.
    let big = format!("amount=100&currency=usd&description={}", "x".repeat(200));
    let (req, id) = s.req(
        &finance,
        Some("finance-agent"),
        "POST",
        STRIPE,
        "/v1/payment_intents",
        FORM,
        &big,
    );
    assert_eq!(s.expect(&finance, &req).decision, "allow");
    let resp = send(fin_port, &req).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(s.complete_upstream(&id)[0].body, big.as_bytes());
    let (req, id) = s.req(
        &finance,
        Some("finance-agent"),
        "POST",
        STRIPE,
        "/v1/payment_intents",
        FORM,
        &big,
    );
    let resp = send(small_port, &req).unwrap();
    assert_eq!(resp.status, 413, "{}", resp.text());
    assert_eq!(resp.header("x-aegis-decision"), Some("deny"));
    let j = resp.json().unwrap();
    assert!(
        j["reason"].as_str().unwrap().contains("max_body_bytes"),
        "{j}"
    );
    assert_eq!(j["request_id"], id.as_str());
    assert!(s.complete_upstream(&id).is_empty());
    s.counted.push((
        "finance-agent".into(),
        "stripe-payments".into(),
        "deny".into(),
    ));

    // 9. What goes upstream before the body arrives (raw socket: the head
    // first, the body later).
    let slow_body = "amount=900000&currency=usd";
    if mode.holds_headers() {
        // Headers held: nothing upstream until the verdict.
        let body = "amount=1300&currency=usd";
        let (req, id) = s.req(
            &finance,
            Some("finance-agent"),
            "POST",
            STRIPE,
            "/v1/payment_intents",
            FORM,
            body,
        );
        s.expect(&finance, &req);
        let slow = SlowRequest::start(fin_port, &req, body.len()).unwrap();
        // A negative check needs a bound: 300 ms is ample on loopback.
        assert!(
            !s.seen_upstream(&id, Duration::from_millis(300)),
            "headers went upstream before the verdict"
        );
        let resp = slow.finish(body.as_bytes()).unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(s.complete_upstream(&id).len(), 1);

        let (req, id) = s.req(
            &finance,
            Some("finance-agent"),
            "POST",
            STRIPE,
            "/v1/payment_intents",
            FORM,
            slow_body,
        );
        let want = s.expect(&finance, &req);
        let slow = SlowRequest::start(fin_port, &req, slow_body.len()).unwrap();
        assert!(!s.seen_upstream(&id, Duration::from_millis(300)));
        let resp = slow.finish(slow_body.as_bytes()).unwrap();
        check_local_reply(&resp, 403, &want, &id);
        assert!(
            s.upstream.with_id(&id).is_empty(),
            "a held request reached the upstream"
        );
    } else {
        // Istio mode: the headers go upstream at once; the deny resets that
        // request and the upstream never gets its body.
        let (req, id) = s.req(
            &finance,
            Some("finance-agent"),
            "POST",
            STRIPE,
            "/v1/payment_intents",
            FORM,
            slow_body,
        );
        let want = s.expect(&finance, &req);
        let slow = SlowRequest::start(fin_port, &req, slow_body.len()).unwrap();
        assert!(
            s.seen_upstream(&id, Duration::from_secs(10)),
            "without allow_on_headers_stop_iteration the headers go upstream first"
        );
        let resp = slow.finish(slow_body.as_bytes()).unwrap();
        check_local_reply(&resp, 403, &want, &id);
        let reset = s.upstream.wait_until(Duration::from_secs(10), |rs| {
            rs.iter()
                .any(|r| r.request_id() == Some(id.as_str()) && r.aborted)
        });
        let recs = s.upstream.with_id(&id);
        assert!(reset, "the upstream request was not reset: {recs:?}");
        assert!(
            recs.iter().all(|r| !r.complete && r.body.is_empty()),
            "{recs:?}"
        );
    }

    // 10. `filter_state` limits the keys written: the access log has the
    // two asked for and not the others; the request itself is judged the
    // same.
    let (req, id) = s.req(
        &finance,
        Some("finance-agent"),
        "POST",
        STRIPE,
        "/v1/payment_intents",
        FORM,
        "amount=5001&currency=usd",
    );
    let want = s.expect(&finance, &req);
    let resp = send(quiet_port, &req).unwrap();
    check_local_reply(&resp, 403, &want, &id);
    check_log(
        &s.log(&id),
        &[
            ("decision", Some("approval_needed")),
            ("rule", Some(RULE)),
            ("reason", None),
            ("agent", None),
            ("tool", None),
            ("action", None),
            ("mode", None),
            ("policy_version", None),
            ("request_id", None),
            ("x_request_id", Some(&id)),
            ("status", Some("403")),
        ],
    );

    // 11. The metrics, labelled, in /stats/prometheus.
    let text = s.gw.envoy.prometheus().unwrap();
    assert!(
        !text.contains("=.="),
        "a metric kept its encoded labels:\n{}",
        text.lines()
            .filter(|l| l.contains("=.="))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let samples = prom::parse(&text);
    let mut want: BTreeMap<(String, String, String), f64> = BTreeMap::new();
    for k in &s.counted {
        *want.entry(k.clone()).or_default() += 1.0;
    }
    let mut got: BTreeMap<(String, String, String), f64> = BTreeMap::new();
    for x in prom::named(&samples, "aegis_decision_total") {
        assert_eq!(
            x.labels.get("mode").map(String::as_str),
            Some("enforce"),
            "{x:?}"
        );
        let k = (
            x.labels["agent"].clone(),
            x.labels["tool"].clone(),
            x.labels["decision"].clone(),
        );
        *got.entry(k).or_default() += x.value;
    }
    got.retain(|_, v| *v > 0.0);
    assert_eq!(got, want, "aegis_decision_total in:\n{text}");
    let violations = prom::named(&samples, "aegis_policy_violation_total");
    let blocked = s
        .counted
        .iter()
        .filter(|(_, _, d)| d == "deny" || d == "approval_needed")
        .count();
    let total: f64 = violations.iter().map(|x| x.value).sum();
    assert_eq!(
        total, blocked as f64,
        "aegis_policy_violation_total in:\n{text}"
    );
    assert!(
        violations
            .iter()
            .any(|x| x.labels.get("rule").map(String::as_str) == Some(RULE) && x.value >= 2.0),
        "no violations with rule=\"{RULE}\" in:\n{text}"
    );
    assert!(
        text.contains("aegis_request_latency_us"),
        "no latency histogram in:\n{text}"
    );

    // 12. A request the access log never shows is reported with what
    // tells a stuck stream from an unwritten log: Envoy's open streams
    // (none now on the Aegis listener) and its own log.
    let e =
        s.gw.envoy
            .access_log_for(&["never-sent".to_string()], Duration::from_millis(50))
            .unwrap_err()
            .to_string();
    assert!(e.contains("\"never-sent\""), "{e}");
    assert!(
        e.lines()
            .any(|l| l.starts_with("http.aegis_egress.downstream_rq_active: 0")),
        "{e}"
    );
    assert!(e.contains("Envoy's log, last lines:"), "{e}");
}

#[test]
fn seed_scenarios_with_headers_held() {
    scenarios(Mode::Sidecar);
}

#[test]
fn seed_scenarios_in_istio_mode() {
    scenarios(Mode::Istio);
}
