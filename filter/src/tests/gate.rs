//! The stages after the policy: approvals through the control plane
//! (created, answered with the id or held while a person decides, redeemed
//! on the agent's retry, the fail policy when the control plane does not
//! answer) and the per-proxy rate limit.

use super::*;
use crate::stream::APPROVAL_HEADER;

const CONTROL: &str = r#"{"control_plane": {"cluster": "aegis_control", "token": "gw.jwt.sig"}}"#;

fn policy_with_read_approval() -> Policy {
    let mut p = policy();
    // `get_customer` (a read) always needs approval.
    if let Some(r) = p.agents[0].rules.get_mut(1) {
        r.approval = Approval::Always;
    }
    p
}

fn shared_with(config: &str) -> Rc<Shared> {
    let bytes = compile(&policy_with_read_approval(), &BuildOptions::default(), None).unwrap();
    let b = Rc::new(Bundle::load(&bytes, &[]).unwrap());
    Rc::new(configure(config, Some(&b)).unwrap())
}

fn payment(amount: u32, extra: &[(&str, &str)]) -> Rc<Mock> {
    request(
        "finance-agent",
        "POST",
        "api.stripe.com",
        "/v1/payment_intents",
        extra,
        format!("amount={amount}&currency=usd").as_bytes(),
    )
}

/// Delivers the answer to the last call the filter made.
fn answer(s: &mut Stream<Rc<Mock>>, m: &Rc<Mock>, status: Option<u16>, body: &str) {
    let token = u32::try_from(m.calls.borrow().len()).unwrap();
    let headers = status.map_or(vec![], |st| vec![(":status".to_string(), st.to_string())]);
    *m.call_answer.borrow_mut() = (headers, body.as_bytes().to_vec());
    s.on_call_response(token, body.len());
}

fn last_call(m: &Mock) -> MockCall {
    m.calls.borrow().last().cloned().unwrap()
}

const CREATED: &str = r#"{"approval_id":"apr_0123","status":"pending","expires_at":1700003600,"url":"http://cp/v1/approvals/apr_0123","created":true}"#;

#[test]
fn a_call_that_needs_approval_creates_one_and_is_answered_with_its_id() {
    let sh = shared_with(CONTROL);
    let m = payment(7500, &[("x-request-id", "r-1")]);
    let (mut s, flows) = run(&sh, &m, 1);
    assert_eq!(flows.last(), Some(&Flow::Pause));
    assert!(
        m.reply().is_none(),
        "nothing is answered before the control plane"
    );
    let call = last_call(&m);
    assert_eq!(call.cluster, "aegis_control");
    assert_eq!(call.header(":method"), Some("POST"));
    assert_eq!(call.header(":path"), Some("/v1/approvals"));
    assert_eq!(call.header(":authority"), Some("aegis_control"));
    assert_eq!(call.header("authorization"), Some("Bearer gw.jwt.sig"));
    assert_eq!(call.timeout_ms, 300);
    let j = call.json();
    assert_eq!(j["tenant"], "default");
    assert_eq!(j["agent"], "finance-agent");
    assert_eq!(j["tool"], "stripe-payments");
    assert_eq!(j["action"], "create_payment");
    assert_eq!(j["rule"], "finance-agent/stripe-payments/create_payment#0");
    assert_eq!(j["policy_version"], "test-7");
    assert_eq!(
        j["reason"],
        "condition failed: `amount` must be a number <= 5000"
    );
    let digest = j["digest"].as_str().unwrap();
    assert_eq!(digest.len(), 64);
    assert!(digest
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(j["summary"]["path"], "/v1/payment_intents");

    answer(&mut s, &m, Some(201), CREATED);
    let r = m.reply().unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(r.body["decision"], "approval_needed");
    assert_eq!(r.body["approval"]["id"], "apr_0123");
    assert_eq!(r.body["approval"]["url"], "http://cp/v1/approvals/apr_0123");
    assert_eq!(r.body["approval"]["expires_at"], 1_700_003_600);
    assert!(r.body["reason"]
        .as_str()
        .unwrap()
        .contains("send the same call again with header `x-aegis-approval: apr_0123`"));
    assert!(r
        .headers
        .contains(&(APPROVAL_HEADER.into(), "apr_0123".into())));
    assert_eq!(m.resumed.get(), 0);
}

#[test]
fn the_approval_shows_the_calls_parameters_with_dlp_applied() {
    let sh = shared_with(CONTROL);
    // The finance agent has no DLP of its own: an approver still never
    // sees the card number or the SSN.
    let m = request(
        "finance-agent",
        "POST",
        "api.stripe.com",
        "/v1/payment_intents?note=ssn%20123-45-6789",
        &[],
        b"amount=7500&currency=usd&card=4111+1111+1111+1111",
    );
    let _ = run(&sh, &m, 1);
    let call = last_call(&m);
    assert_eq!(call.header(":path"), Some("/v1/approvals"));
    let j = call.json();
    assert_eq!(
        j["summary"]["params"],
        serde_json::json!({
            "note": "ssn [REDACTED:ssn]",
            "amount": "7500",
            "currency": "usd",
            "card": "[REDACTED:credit_card]",
        })
    );
    assert_eq!(j["summary"]["params_truncated"], false);
    assert_eq!(
        j["summary"]["path"],
        "/v1/payment_intents?note=ssn [REDACTED:ssn]"
    );
    let body = String::from_utf8(call.body.clone().unwrap()).unwrap();
    for secret in ["4111", "6789"] {
        assert!(!body.contains(secret), "{body}");
    }
}

#[test]
fn the_retry_redeems_the_approval_for_the_same_call_only() {
    let sh = shared_with(CONTROL);
    let first = payment(7500, &[]);
    let (_s, _) = run(&sh, &first, 1);
    let created_digest = last_call(&first).json()["digest"].clone();

    // The same call, re-encoded (other pair order), with the approval id.
    let m = request(
        "finance-agent",
        "POST",
        "api.stripe.com",
        "/v1/payment_intents",
        &[(APPROVAL_HEADER, "apr_0123")],
        b"currency=usd&amount=7500",
    );
    let (mut s, flows) = run(&sh, &m, 1);
    assert_eq!(flows.last(), Some(&Flow::Pause));
    let call = last_call(&m);
    assert_eq!(call.header(":path"), Some("/v1/approvals/apr_0123/redeem"));
    assert_eq!(call.json()["digest"], created_digest);
    // The header is Aegis's own: it never goes upstream.
    assert_eq!(m.header(APPROVAL_HEADER), None);

    answer(
        &mut s,
        &m,
        Some(200),
        r#"{"approval_id":"apr_0123","approved_by":"alice"}"#,
    );
    assert!(m.reply().is_none());
    assert_eq!(m.resumed.get(), 1, "the held call goes on");
    assert_eq!(m.state(keys::DECISION).as_deref(), Some("allow"));
    assert_eq!(m.state(keys::APPROVAL).as_deref(), Some("apr_0123"));
    assert_eq!(m.state(keys::APPROVER).as_deref(), Some("alice"));
    assert_eq!(
        m.count("agent=.=finance-agent;.;outcome=.=approved;.;aegis_approval_total"),
        1
    );
    assert_eq!(
        m.state(keys::REASON).as_deref(),
        Some(
            "allowed by rule `finance-agent/stripe-payments/create_payment#0`, approved by \
             `alice` (approval `apr_0123`)"
        )
    );

    // Another amount is another call: another digest.
    let other = payment(7600, &[(APPROVAL_HEADER, "apr_0123")]);
    let _ = run(&sh, &other, 1);
    assert_ne!(last_call(&other).json()["digest"], created_digest);
}

#[test]
fn refused_redeems_are_denied_with_the_reason() {
    let sh = shared_with(CONTROL);
    let cases = [
        (
            409,
            r#"{"error":{"type":"conflict_error","code":"already_redeemed","message":"m"}}"#,
            "approval `apr_0123` cannot be used: it was already used",
        ),
        (
            403,
            r#"{"error":{"type":"permission_error","code":"digest_mismatch","message":"m"}}"#,
            "approval `apr_0123` cannot be used: it was given for a different call",
        ),
        (
            403,
            r#"{"error":{"type":"permission_error","code":"denied","message":"m","decided_by":"bob","comment":"not this vendor"}}"#,
            "approval `apr_0123` was denied by `bob`: not this vendor",
        ),
    ];
    for (status, body, reason) in cases {
        let m = payment(7500, &[(APPROVAL_HEADER, "apr_0123")]);
        let (mut s, _) = run(&sh, &m, 1);
        answer(&mut s, &m, Some(status), body);
        let r = m.reply().unwrap();
        assert_eq!((r.status, r.body["decision"].as_str()), (403, Some("deny")));
        assert_eq!(r.body["reason"], reason);
        assert_eq!(m.resumed.get(), 0);
    }
    // Not decided yet: the call's approval is asked for again, and the
    // answer is the first one's, the approval in the header and the body.
    let m = payment(7500, &[(APPROVAL_HEADER, "apr_0123")]);
    let (mut s, _) = run(&sh, &m, 1);
    let redeem_digest = last_call(&m).json()["digest"].clone();
    answer(
        &mut s,
        &m,
        Some(409),
        r#"{"error":{"type":"conflict_error","code":"not_decided","message":"m"}}"#,
    );
    assert!(m.reply().is_none());
    let again = last_call(&m);
    assert_eq!(again.header(":method"), Some("POST"));
    assert_eq!(again.header(":path"), Some("/v1/approvals"));
    assert_eq!(again.json()["digest"], redeem_digest);
    let existing = CREATED.replace(r#""created":true"#, r#""created":false"#);
    answer(&mut s, &m, Some(200), &existing);
    let r = m.reply().unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(r.body["decision"], "approval_needed");
    assert!(r.body["reason"]
        .as_str()
        .unwrap()
        .contains("`apr_0123` is pending"));
    assert_eq!(r.body["approval"]["id"], "apr_0123");
    assert_eq!(r.body["approval"]["url"], "http://cp/v1/approvals/apr_0123");
    assert!(r
        .headers
        .contains(&(APPROVAL_HEADER.into(), "apr_0123".into())));
    assert_eq!(m.resumed.get(), 0);
}

#[test]
fn a_held_retry_of_a_pending_approval_is_held_again() {
    let config = r#"{"control_plane": {"cluster": "c", "token": "t", "approval_hold_ms": 30000}}"#;
    let sh = shared_with(config);
    let m = payment(7500, &[(APPROVAL_HEADER, "apr_0123")]);
    let (mut s, _) = run(&sh, &m, 1);
    answer(
        &mut s,
        &m,
        Some(409),
        r#"{"error":{"type":"conflict_error","code":"not_decided","message":"m"}}"#,
    );
    answer(&mut s, &m, Some(200), CREATED);
    assert!(m.reply().is_none(), "held, not answered");
    assert!(last_call(&m)
        .header(":path")
        .unwrap()
        .starts_with("/v1/approvals/apr_0123?wait="));
    answer(
        &mut s,
        &m,
        Some(200),
        r#"{"status":"approved","decided_by":"alice"}"#,
    );
    answer(&mut s, &m, Some(200), r#"{"approved_by":"alice"}"#);
    assert_eq!(m.resumed.get(), 1);
    assert_eq!(m.state(keys::DECISION).as_deref(), Some("allow"));
}

#[test]
fn an_approval_id_that_is_not_one_never_reaches_the_control_plane() {
    let sh = shared_with(CONTROL);
    for id in ["../budgets/lease", "apr_1?wait=60", ""] {
        let m = payment(7500, &[(APPROVAL_HEADER, id)]);
        let _ = run(&sh, &m, 1);
        assert!(m.calls.borrow().is_empty(), "{id}");
        let r = m.reply().unwrap();
        assert_eq!(r.body["decision"], "deny", "{id}");
    }
    let m = payment(
        7500,
        &[(APPROVAL_HEADER, "apr_1"), (APPROVAL_HEADER, "apr_2")],
    );
    let _ = run(&sh, &m, 1);
    assert!(m.calls.borrow().is_empty());
    assert_eq!(m.reply().unwrap().body["decision"], "deny");
}

#[test]
fn a_held_call_goes_on_the_moment_it_is_approved() {
    let config = r#"{"control_plane": {"cluster": "aegis_control", "token": "t", "approval_hold_ms": 90000, "timeout_ms": 250}}"#;
    let sh = shared_with(config);
    let m = payment(7500, &[]);
    let (mut s, _) = run(&sh, &m, 1);
    answer(&mut s, &m, Some(201), CREATED);
    assert!(m.reply().is_none(), "held, not answered");
    let poll = last_call(&m);
    assert_eq!(poll.header(":method"), Some("GET"));
    // One long-poll lasts at most 60 s (the control plane's limit), and
    // Envoy's timeout leaves it room to answer.
    assert_eq!(poll.header(":path"), Some("/v1/approvals/apr_0123?wait=60"));
    assert_eq!(poll.timeout_ms, 60_250);
    answer(&mut s, &m, Some(200), r#"{"status":"pending"}"#);
    assert!(last_call(&m)
        .header(":path")
        .unwrap()
        .starts_with("/v1/approvals/apr_0123?wait="));
    answer(
        &mut s,
        &m,
        Some(200),
        r#"{"status":"approved","decided_by":"alice"}"#,
    );
    let redeem = last_call(&m);
    assert_eq!(
        redeem.header(":path"),
        Some("/v1/approvals/apr_0123/redeem")
    );
    answer(&mut s, &m, Some(200), r#"{"approved_by":"alice"}"#);
    assert_eq!(m.resumed.get(), 1);
    assert!(m.reply().is_none());
    assert_eq!(m.state(keys::DECISION).as_deref(), Some("allow"));
}

#[test]
fn a_held_call_denied_by_a_person_says_who_and_why() {
    let config = r#"{"control_plane": {"cluster": "c", "token": "t", "approval_hold_ms": 5000}}"#;
    let sh = shared_with(config);
    let m = payment(7500, &[]);
    let (mut s, _) = run(&sh, &m, 1);
    answer(&mut s, &m, Some(201), CREATED);
    answer(
        &mut s,
        &m,
        Some(200),
        r#"{"status":"denied","decided_by":"bob","comment":"over the quarter's cap"}"#,
    );
    let r = m.reply().unwrap();
    assert_eq!(r.body["decision"], "deny");
    assert_eq!(
        r.body["reason"],
        "approval `apr_0123` was denied by `bob`: over the quarter's cap"
    );
}

#[test]
fn when_the_control_plane_fails_writes_are_refused_and_reads_go_on() {
    let sh = shared_with(CONTROL);
    let failures: [(Option<u16>, &str); 4] = [
        (None, ""),
        (Some(504), "upstream request timeout"),
        (Some(500), "oops"),
        (Some(201), "not json"),
    ];
    for (status, body) in failures {
        // A payment is a write: refused, with a status a client retries.
        let m = payment(7500, &[]);
        let (mut s, _) = run(&sh, &m, 1);
        answer(&mut s, &m, status, body);
        let r = m.reply().unwrap();
        assert_eq!(r.status, 503, "{status:?}");
        assert_eq!(r.body["decision"], "deny");
        let reason = r.body["reason"].as_str().unwrap();
        assert!(
            reason.starts_with("the approval could not be checked with the aegis control plane"),
            "{reason}"
        );
        assert_eq!(m.resumed.get(), 0);

        // Reading a customer is a read: it goes on, and says why.
        let m = request(
            "finance-agent",
            "GET",
            "api.stripe.com",
            "/v1/customers/cus_1",
            &[],
            b"",
        );
        let (mut s, _) = run(&sh, &m, 1);
        assert_eq!(last_call(&m).header(":path"), Some("/v1/approvals"));
        answer(&mut s, &m, status, body);
        assert!(m.reply().is_none(), "{status:?}");
        assert_eq!(m.resumed.get(), 1);
        assert!(m
            .state(keys::REASON)
            .unwrap()
            .starts_with("allowed without the approval check"));
    }
    // Both configurable.
    let strict =
        r#"{"control_plane": {"cluster": "c", "token": "t", "on_failure": {"reads": "deny"}}}"#;
    let sh = shared_with(strict);
    let m = request(
        "finance-agent",
        "GET",
        "api.stripe.com",
        "/v1/customers/cus_1",
        &[],
        b"",
    );
    let (mut s, _) = run(&sh, &m, 1);
    answer(&mut s, &m, None, "");
    assert_eq!(m.reply().unwrap().status, 503);
}

#[test]
fn without_a_control_plane_approval_needed_is_answered_as_before() {
    let sh = shared_with("");
    let m = payment(7500, &[]);
    let _ = run(&sh, &m, 1);
    assert!(m.calls.borrow().is_empty());
    let r = m.reply().unwrap();
    assert_eq!(
        (r.status, r.body["decision"].as_str()),
        (403, Some("approval_needed"))
    );
    assert!(r.body.get("approval").is_none());
}

#[test]
fn an_answer_to_another_call_is_ignored() {
    let sh = shared_with(CONTROL);
    let m = payment(7500, &[]);
    let (mut s, _) = run(&sh, &m, 1);
    *m.call_answer.borrow_mut() = (vec![(":status".into(), "201".into())], CREATED.into());
    s.on_call_response(999, CREATED.len());
    assert!(m.reply().is_none());
    answer(&mut s, &m, Some(201), CREATED);
    assert_eq!(m.reply().unwrap().body["approval"]["id"], "apr_0123");
}

fn shared_with_rps(config: &str, rps: f64) -> Rc<Shared> {
    let mut p = policy_with_read_approval();
    p.agents[0].budget = Some(aegis_engine::ir::Budget {
        daily_usd: None,
        rps: Some(rps),
    });
    let bytes = compile(&p, &BuildOptions::default(), None).unwrap();
    let b = Rc::new(Bundle::load(&bytes, &[]).unwrap());
    Rc::new(configure(config, Some(&b)).unwrap())
}

fn payment_small() -> Rc<Mock> {
    payment(10, &[])
}

#[test]
fn an_agent_over_its_rate_gets_429_with_retry_after() {
    let sh = shared_with_rps(r#"{"rate_limits": true}"#, 2.0);
    let store = Rc::new(crate::mock::SharedStore::default());
    let mut outcomes = vec![];
    for _ in 0..3 {
        let m = Rc::new(Mock::vm(&store));
        let src = payment_small();
        *m.headers.borrow_mut() = src.headers.borrow().clone();
        *m.body.borrow_mut() = src.body.borrow().clone();
        let _ = run(&sh, &m, 1);
        outcomes.push(m.reply());
    }
    assert!(
        outcomes[0].is_none() && outcomes[1].is_none(),
        "a burst of rps calls"
    );
    let r = outcomes[2].clone().unwrap();
    assert_eq!(r.status, 429);
    assert_eq!(r.body["decision"], "deny");
    assert_eq!(
        r.body["reason"],
        "rate limit of 2 calls per second for this agent is exceeded"
    );
    assert_eq!(r.body["error"]["type"], "rate_limit_error");
    assert!(r.headers.contains(&("retry-after".into(), "1".into())));
    assert_eq!(
        r.body["rule"],
        "finance-agent/stripe-payments/create_payment#0"
    );
}

#[test]
fn rate_limits_are_off_unless_configured() {
    for config in [
        "",
        r#"{"rate_limits": false, "control_plane": {"cluster": "c", "token": "t"}}"#,
    ] {
        let sh = shared_with_rps(config, 1.0);
        let store = Rc::new(crate::mock::SharedStore::default());
        for _ in 0..3 {
            let m = Rc::new(Mock::vm(&store));
            let src = payment_small();
            *m.headers.borrow_mut() = src.headers.borrow().clone();
            *m.body.borrow_mut() = src.body.borrow().clone();
            let _ = run(&sh, &m, 1);
            assert!(m.reply().is_none(), "{config}");
        }
    }
}

/// finance-agent with `daily_usd`, every rule costing 1 USD.
fn shared_with_budget(config: &str, daily_usd: f64) -> Rc<Shared> {
    let mut p = policy_with_read_approval();
    p.agents[0].budget = Some(aegis_engine::ir::Budget {
        daily_usd: Some(daily_usd),
        rps: None,
    });
    for r in &mut p.agents[0].rules {
        r.cost_usd = Some(1.0);
    }
    let bytes = compile(&p, &BuildOptions::default(), None).unwrap();
    let b = Rc::new(Bundle::load(&bytes, &[]).unwrap());
    Rc::new(configure(config, Some(&b)).unwrap())
}

/// A worker VM of one proxy (shared data in `store`) with this request.
fn on_vm(store: &Rc<crate::mock::SharedStore>, src: &Rc<Mock>) -> Rc<Mock> {
    let m = Rc::new(Mock::vm(store));
    *m.headers.borrow_mut() = src.headers.borrow().clone();
    *m.body.borrow_mut() = src.body.borrow().clone();
    m
}

fn grant(granted: f64, remaining: f64) -> String {
    let id = if granted > 0.0 {
        "\"lse_1\"".to_string()
    } else {
        "null".to_string()
    };
    format!(
        r#"{{"lease_id":{id},"granted_usd":{granted},"remaining_usd":{remaining},"limit_usd":3,"expires_at":{}}}"#,
        T0 / 1_000_000_000 + 300
    )
}

#[test]
fn calls_spend_from_a_lease_and_only_a_call_it_cannot_cover_calls_out() {
    let sh = shared_with_budget(CONTROL, 3.0);
    let store = Rc::new(crate::mock::SharedStore::default());

    // First call: no lease yet; it waits for one.
    let m = on_vm(&store, &payment_small());
    let (mut s, flows) = run(&sh, &m, 1);
    assert_eq!(flows.last(), Some(&Flow::Pause));
    let call = last_call(&m);
    assert_eq!(call.header(":path"), Some("/v1/budgets/lease"));
    let j = call.json();
    assert_eq!(j["tenant"], "default");
    assert_eq!(j["agent"], "finance-agent");
    assert_eq!(j["want_usd"], 10.0, "lease_calls (10) calls of the cost");
    assert!(j["day"].as_str().unwrap().starts_with("2023-11-14"), "{j}");
    answer(&mut s, &m, Some(200), &grant(2.0, 1.0));
    assert_eq!(m.resumed.get(), 1);
    assert!(m.reply().is_none());
    assert_eq!(m.state(keys::BUDGET).as_deref(), Some("spent"));
    assert_eq!(
        m.recorded_value("agent=.=finance-agent;.;aegis_budget_remaining"),
        Some(2_000_000),
        "1 USD left in the lease + 1 USD at the control plane"
    );

    // Second call, on another worker: spent from the shared lease, no call.
    let m = on_vm(&store, &payment_small());
    let (_s, flows) = run(&sh, &m, 1);
    assert_eq!(flows.last(), Some(&Flow::Continue));
    assert!(m.calls.borrow().is_empty());
    assert_eq!(m.state(keys::BUDGET).as_deref(), Some("spent"));

    // Third: the lease is spent; the control plane has 1 USD left.
    let m = on_vm(&store, &payment_small());
    let (mut s, _) = run(&sh, &m, 1);
    assert_eq!(last_call(&m).header(":path"), Some("/v1/budgets/lease"));
    answer(&mut s, &m, Some(200), &grant(1.0, 0.0));
    assert_eq!(m.resumed.get(), 1);

    // Fourth: nothing left anywhere.
    let m = on_vm(&store, &payment_small());
    let (mut s, _) = run(&sh, &m, 1);
    answer(&mut s, &m, Some(200), &grant(0.0, 0.0));
    let r = m.reply().unwrap();
    assert_eq!(r.status, 429);
    assert_eq!(r.body["decision"], "deny");
    assert_eq!(
        r.body["reason"],
        "the agent's daily budget of 3 USD is spent; it resets at 00:00 UTC"
    );
    // T0 is 2023-11-14 22:13:20 UTC: 6,400 s to midnight.
    assert!(r.headers.contains(&("retry-after".into(), "6400".into())));
    assert_eq!(m.state(keys::BUDGET).as_deref(), Some("exhausted"));
    assert_eq!(m.resumed.get(), 0);

    // A spent day does not turn every call into a call out: the next
    // calls are refused in the proxy for a while.
    let m = on_vm(&store, &payment_small());
    let (_s, flows) = run(&sh, &m, 1);
    assert_eq!(flows.last(), Some(&Flow::Pause));
    assert!(m.calls.borrow().is_empty());
    assert_eq!(m.reply().unwrap().status, 429);
}

#[test]
fn a_lease_the_control_plane_fails_refuses_writes_and_lets_reads_go_unmetered() {
    let sh = shared_with_budget(r#"{"control_plane": {"cluster": "c", "token": "t"}}"#, 3.0);
    let store = Rc::new(crate::mock::SharedStore::default());
    let m = on_vm(&store, &payment_small());
    let (mut s, _) = run(&sh, &m, 1);
    answer(&mut s, &m, Some(504), "upstream request timeout");
    let r = m.reply().unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(
        r.body["reason"],
        "the budget could not be checked with the aegis control plane (it did not answer in \
         time); calls that write are refused until it answers"
    );

    // A read that costs: allowed, unmetered, and says so. (`get_customer`
    // needs approval in this policy: approve it first.)
    let src = request(
        "finance-agent",
        "GET",
        "api.stripe.com",
        "/v1/customers/cus_1",
        &[(APPROVAL_HEADER, "apr_0123")],
        b"",
    );
    let m = on_vm(&store, &src);
    let (mut s, _) = run(&sh, &m, 1);
    answer(&mut s, &m, Some(200), r#"{"approved_by":"alice"}"#);
    assert_eq!(
        last_call(&m).header(":path"),
        Some("/v1/budgets/lease"),
        "approved, then paid"
    );
    answer(&mut s, &m, None, "");
    assert!(m.reply().is_none());
    assert_eq!(m.resumed.get(), 1);
    assert_eq!(m.state(keys::BUDGET).as_deref(), Some("unmetered"));
    assert_eq!(m.state(keys::APPROVER).as_deref(), Some("alice"));
    assert!(m
        .state(keys::REASON)
        .unwrap()
        .starts_with("allowed without the budget check"));
}

#[test]
fn without_a_control_plane_budgets_are_not_metered() {
    let sh = shared_with_budget("", 1.0);
    for _ in 0..3 {
        let m = payment_small();
        let (_s, flows) = run(&sh, &m, 1);
        assert_eq!(flows.last(), Some(&Flow::Continue));
        assert!(m.calls.borrow().is_empty());
    }
}

#[test]
fn a_burst_leases_once_in_full_and_gives_back_what_it_did_not_need() {
    let sh = shared_with_budget(CONTROL, 100.0);
    let store = Rc::new(crate::mock::SharedStore::default());
    // Two calls find no lease at once: the first asks for a full lease,
    // the second (seeing the first under way) only for its own cost.
    let a = on_vm(&store, &payment_small());
    let (mut sa, _) = run(&sh, &a, 1);
    let b = on_vm(&store, &payment_small());
    let (mut sb, _) = run(&sh, &b, 1);
    assert_eq!(last_call(&a).json()["want_usd"], 10.0);
    assert_eq!(last_call(&b).json()["want_usd"], 1.0);
    answer(&mut sa, &a, Some(200), &grant(10.0, 90.0));
    assert_eq!(a.resumed.get(), 1);
    // The second's grant is not needed: the call is paid from the full
    // lease, and the grant goes back at once.
    let small = r#"{"lease_id":"lse_2","granted_usd":1,"remaining_usd":89,"limit_usd":100,"expires_at":1700000300}"#;
    answer(&mut sb, &b, Some(200), small);
    assert_eq!(b.resumed.get(), 1);
    let back = last_call(&b);
    assert_eq!(back.header(":path"), Some("/v1/budgets/settle"));
    let j = back.json();
    assert_eq!(
        (
            j["lease_id"].as_str(),
            j["spent_usd"].as_f64(),
            j["final"].as_bool()
        ),
        (Some("lse_2"), Some(0.0), Some(true))
    );
    // Its answer takes it off the queue the tick would retry it from.
    answer(
        &mut sb,
        &b,
        Some(200),
        r#"{"lease_id":"lse_2","spent_usd":0,"returned_usd":1,"state":"settled"}"#,
    );
    let m = on_vm(&store, &payment_small());
    let (_s, flows) = run(&sh, &m, 1);
    assert_eq!(flows.last(), Some(&Flow::Continue), "paid from the lease");
    assert!(
        crate::budget::give_backs(&*m, &crate::kv::AgentRef::new(None, "finance-agent")).is_empty()
    );
}
