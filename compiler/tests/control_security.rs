//! The control plane against a caller who tries to get more than it is
//! given: budgets of other days, tokens for no tenant, digests that bloat
//! the audit log, HTTP methods that grow the metrics, approvals hidden from
//! the queue. A real `aegis serve` on SQLite and on PostgreSQL.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::expect_used,
    clippy::panic
)]

mod support;

use serde_json::json;
use std::process::Command;
use support::control::{approval, code, today, Serve, AEGIS, DIGEST_A, DIGEST_B};
use support::postgres::TempPostgres;

const DAY_MS: i64 = 86_400_000;
/// How close to midnight (UTC) a lease may name the day next to today.
const SKEW_MS: i64 = 10 * 60 * 1000;

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// A day's budget is that day's: leasing yesterday's (or tomorrow's) at
/// noon would double what an agent may spend today. The day next to today
/// is accepted only for clocks near midnight.
fn other_days_budget(s: &Serve) {
    let gw = s.token("gateway", "*", "edge-1");
    let lease = |day: &str| {
        s.post(
            "/v1/budgets/lease",
            Some(&gw),
            &json!({"tenant": "default", "agent": "research-agent", "day": day, "want_usd": 20}),
        )
    };
    let now = now_ms();
    let (st, a) = lease(&today());
    assert_eq!((st, a["granted_usd"].as_f64()), (200, Some(20.0)), "{a}");
    let since_midnight = now.rem_euclid(DAY_MS);
    let mut checked = 0;
    if since_midnight > SKEW_MS + 60_000 {
        let yesterday = aegis_control::utc_day(now - DAY_MS);
        let (st, e) = lease(&yesterday);
        assert_eq!((st, code(&e)), (400, "invalid_day"), "{e}");
        checked += 1;
    }
    if DAY_MS - since_midnight > SKEW_MS + 60_000 {
        let tomorrow = aegis_control::utc_day(now + DAY_MS);
        let (st, e) = lease(&tomorrow);
        assert_eq!((st, code(&e)), (400, "invalid_day"), "{e}");
        checked += 1;
    }
    assert!(checked >= 1);
}

/// A service token names one tenant or `*`: a token for the empty tenant
/// would see every tenant where an empty filter means "all".
fn empty_tenant_token(s: &Serve) {
    for tenant in ["", "a\nb"] {
        let out = Command::new(AEGIS)
            .args([
                "admin", "token", "--db", &s.db, "--role", "viewer", "--tenant", tenant,
            ])
            .output()
            .unwrap();
        assert!(
            !out.status.success() && out.stdout.is_empty(),
            "a token for tenant {tenant:?}: {out:?}"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("tenant"),
            "{out:?}"
        );
    }
}

/// A redeem names the call by its digest: anything but a SHA-256 is a 400
/// that writes nothing (not 60 KB of attacker text into the audit log).
fn redeem_digest_is_checked(s: &Serve) {
    let gw = s.token("gateway", "acme", "edge-acme");
    let alice = s.token("approver", "acme", "alice");
    let (st, a) = s.post("/v1/approvals", Some(&gw), &approval("acme", DIGEST_A));
    assert_eq!(st, 201, "{a}");
    let id = a["approval_id"].as_str().unwrap().to_owned();
    let (st, _) = s.post(
        &format!("/v1/approvals/{id}/decision"),
        Some(&alice),
        &json!({"approve": true}),
    );
    assert_eq!(st, 200);
    let before = s.audit_len();
    for digest in ["x".repeat(60_000), DIGEST_A.to_uppercase(), String::new()] {
        let (st, e) = s.post(
            &format!("/v1/approvals/{id}/redeem"),
            Some(&gw),
            &json!({"digest": digest}),
        );
        assert_eq!((st, code(&e)), (400, "invalid_digest"), "{e}");
    }
    assert_eq!(s.audit_len(), before, "a malformed redeem wrote nothing");
    // The approval is still there for the right call.
    let (st, r) = s.post(
        &format!("/v1/approvals/{id}/redeem"),
        Some(&gw),
        &json!({"digest": DIGEST_A}),
    );
    assert_eq!((st, r["approved_by"].as_str()), (200, Some("alice")), "{r}");
}

/// The approver's queue: a pending approval is listed whatever number of
/// newer approvals were already decided.
fn pending_queue_is_complete(s: &Serve) {
    let gw = s.token("gateway", "globex", "edge-globex");
    let bob = s.token("approver", "globex", "bob");
    let mut body = approval("globex", DIGEST_A);
    let (st, a) = s.post("/v1/approvals", Some(&gw), &body);
    assert_eq!(st, 201, "{a}");
    let pending = a["approval_id"].as_str().unwrap().to_owned();
    body["digest"] = json!(DIGEST_B);
    let (_, b) = s.post("/v1/approvals", Some(&gw), &body);
    let denied = b["approval_id"].as_str().unwrap().to_owned();
    let (st, _) = s.post(
        &format!("/v1/approvals/{denied}/decision"),
        Some(&bob),
        &json!({"approve": false}),
    );
    assert_eq!(st, 200);
    let (st, l) = s.get("/v1/approvals?status=pending&limit=1", Some(&bob));
    assert_eq!(st, 200, "{l}");
    let ids: Vec<&str> = l["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["approval_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [pending.as_str()], "{l}");
    let (_, l) = s.get("/v1/approvals?status=denied&limit=5", Some(&bob));
    assert_eq!(
        l["approvals"][0]["approval_id"].as_str(),
        Some(denied.as_str())
    );
}

/// HTTP methods are any token: each new one must not add a metrics series
/// (memory that grows with every request of an unauthenticated client).
fn methods_do_not_grow_metrics(s: &Serve) {
    for i in 0..20 {
        let out = Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X"])
            .arg(format!("PROBE{i}"))
            .arg(format!("{}/v1/approvals", s.url))
            .output()
            .unwrap();
        let status = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(status.starts_with('4'), "PROBE{i}: {status} {out:?}");
    }
    let (st, m) = s.get("/metrics", None);
    assert_eq!(st, 200);
    let m = m.as_str().unwrap();
    assert!(!m.contains("PROBE"), "{m}");
    assert!(
        m.contains("aegis_control_requests_total{method=\"other\",route=\"/v1/approvals\""),
        "{m}"
    );
}

/// The agent a token names, as the filter looks it up in the current
/// bundle: `(tenant claim, agent)`, found or not.
fn token_agent(s: &Serve, token: &str) -> (Option<String>, String, bool) {
    use base64::Engine as _;
    let (_, jwks) = s.get("/.well-known/jwks.json", None);
    let keys: Vec<aegis_engine::jwt::TrustedKey> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| aegis_engine::jwt::TrustedKey {
            kid: k["kid"].as_str().unwrap().into(),
            key: base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(k["x"].as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap(),
        })
        .collect();
    let cfg = aegis_engine::jwt::IdentityConfig::new("aegis-control", "aegis", keys);
    let vk = aegis_engine::jwt::VerifyingKeys::new(&cfg).unwrap();
    let p = aegis_engine::jwt::verify(token.as_bytes(), &cfg, &vk, now_ms() / 1000).unwrap();
    let gw = s.token("gateway", "*", "edge-1");
    let resp = support::control::agent()
        .get(&format!("{}/v1/bundles/current", s.url))
        .set("authorization", &format!("Bearer {gw}"))
        .call()
        .unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut bytes).unwrap();
    let bundle = aegis_engine::Bundle::load(&bytes, &[]).unwrap();
    let tenant = p.tenant.map(|t| t.as_str().to_owned());
    let agent = p.agent.as_str().to_owned();
    let found = bundle.budget(tenant.as_deref(), &agent).is_some();
    (tenant, agent, found)
}

/// An agent whose policy names no tenant is in tenant `default` for the
/// API; its token must still name the agent the filter finds (no tenant),
/// and an agent of a named tenant keeps its tenant.
fn default_tenant_tokens(s: &Serve) {
    let mut got = Vec::new();
    for (tenant, agent) in [("default", "research-agent"), ("acme", "finance-agent")] {
        let (st, c) = s.post(
            "/v1/agents",
            Some(&s.admin),
            &json!({"tenant": tenant, "agent": agent}),
        );
        assert_eq!(st, 201, "{c}");
        let (st, t) = s.post("/v1/tokens", None, &json!({"credential": c["credential"]}));
        assert_eq!(st, 200, "{t}");
        got.push(token_agent(s, t["token"].as_str().unwrap()));
    }
    assert_eq!(
        got,
        [
            (None, "research-agent".to_owned(), true),
            (Some("acme".to_owned()), "finance-agent".to_owned(), true)
        ]
    );
}

/// Ids that are not text are refused in the API's error shape.
fn ids_that_are_not_text(s: &Serve) {
    let approver = s.token("approver", "acme", "alice");
    let (st, e) = s.get("/v1/approvals/%FF", Some(&approver));
    assert_eq!((st, code(&e)), (400, "invalid_path"), "{e}");
    let (st, e) = s.post(
        "/v1/approvals/%C0%AF/decision",
        Some(&approver),
        &json!({"approve": true}),
    );
    assert_eq!((st, code(&e)), (400, "invalid_path"), "{e}");
}

/// A leaked agent credential can be revoked, by an admin of its tenant
/// only; it then trades for no token, and revoking it again says so.
fn revoked_credentials(s: &Serve) {
    let (st, c) = s.post(
        "/v1/agents",
        Some(&s.admin),
        &json!({"tenant": "acme", "agent": "finance-agent"}),
    );
    assert_eq!(st, 201, "{c}");
    let (id, credential) = (c["credential_id"].as_str().unwrap(), &c["credential"]);
    let exchange = || s.post("/v1/tokens", None, &json!({"credential": credential}));
    assert_eq!(exchange().0, 200);
    let revoke = format!("/v1/agents/{id}/revoke");
    let globex_admin = s.token("admin", "globex", "globex-admin");
    let acme_admin = s.token("admin", "acme", "acme-admin");
    let gw = s.token("gateway", "acme", "edge-acme");
    let (st, e) = s.post(&revoke, Some(&globex_admin), &json!({}));
    assert_eq!((st, code(&e)), (404, "not_found"), "{e}");
    let (st, e) = s.post(&revoke, Some(&gw), &json!({}));
    assert_eq!((st, code(&e)), (403, "wrong_role"), "{e}");
    assert_eq!(exchange().0, 200, "a refused revoke changed nothing");
    let (st, r) = s.post(&revoke, Some(&acme_admin), &json!({}));
    assert_eq!(
        (st, r["agent"].as_str()),
        (200, Some("finance-agent")),
        "{r}"
    );
    let (st, e) = exchange();
    assert_eq!((st, code(&e)), (401, "unauthenticated"), "{e}");
    let (st, e) = s.post(&revoke, Some(&acme_admin), &json!({}));
    assert_eq!((st, code(&e)), (409, "already_revoked"), "{e}");
    let (_, events) = s.get("/v1/audit", Some(&acme_admin));
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "agent.revoked" && e["subject"] == id),
        "{events}"
    );
}

/// A client that opens connections and sends nothing, half a request or
/// half a body, does not hold them: the service closes them after its header timeout
/// (10 s), and answers others meanwhile.
fn silent_connections_are_closed(s: &Serve) {
    use std::io::{Read as _, Write as _};
    let addr = s.url.trim_start_matches("http://").to_owned();
    let open = |send: &[u8]| {
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        c.set_read_timeout(Some(std::time::Duration::from_secs(40)))
            .unwrap();
        c.write_all(send).unwrap();
        c
    };
    let mut silent = open(b"");
    let mut half = open(b"GET /healthz HTTP/1.1\r\nhost: aegis\r\n");
    let mut trickle = open(
        b"POST /v1/tokens HTTP/1.1\r\nhost: aegis\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"credential\"",
    );
    assert_eq!(s.get("/healthz", None).0, 200);
    for (what, c) in [
        ("silent", &mut silent),
        ("half a request", &mut half),
        ("half a body", &mut trickle),
    ] {
        let mut got = Vec::new();
        let end = c.read_to_end(&mut got);
        assert!(
            end.is_ok()
                || end
                    .as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "{what}: the connection is still open: {end:?}"
        );
        let text = String::from_utf8_lossy(&got);
        assert!(
            got.is_empty() || text.starts_with("HTTP/1.1 408"),
            "{what}: {text}"
        );
    }
}

/// The bundle holds every tenant's policies: a viewer or admin of one
/// tenant does not read it; gateways (which enforce it) and `*` tokens do.
fn bundle_of_every_tenant(s: &Serve) {
    for (role, tenant, want) in [
        ("viewer", "acme", 403),
        ("admin", "acme", 403),
        ("approver", "*", 403),
        ("viewer", "*", 200),
        ("gateway", "acme", 200),
        ("gateway", "*", 200),
    ] {
        let t = s.token(role, tenant, "reader");
        let (st, body) = s.get("/v1/bundles/current", Some(&t));
        assert_eq!(st, want, "{role} of {tenant}: {body}");
        if st == 403 {
            assert!(
                ["other_tenant", "wrong_role"].contains(&code(&body)),
                "{body}"
            );
        }
    }
}

/// What an approval carries is bounded (a list of 1000 approvals must not
/// be a gigabyte), and a refused one writes nothing.
fn approval_fields_are_bounded(s: &Serve) {
    let gw = s.token("gateway", "acme", "edge-acme");
    let before = s.audit_len();
    let mut big = approval("acme", DIGEST_B);
    big["summary"] = json!({"body": "x".repeat(20_000)});
    let (st, e) = s.post("/v1/approvals", Some(&gw), &big);
    assert_eq!((st, code(&e)), (400, "invalid_summary"), "{e}");
    let mut long = approval("acme", DIGEST_B);
    long["reason"] = json!("r".repeat(5000));
    let (st, e) = s.post("/v1/approvals", Some(&gw), &long);
    assert_eq!((st, code(&e)), (400, "invalid_field"), "{e}");
    assert_eq!(s.audit_len(), before);
    let mut fits = approval("acme", DIGEST_B);
    fits["summary"] = json!({"body": "x".repeat(10_000)});
    let (st, a) = s.post("/v1/approvals", Some(&gw), &fits);
    assert_eq!(st, 201, "{a}");
}

fn scenario(db: &str) {
    let dir = tempfile::tempdir().unwrap();
    let s = Serve::start(db, dir.path(), &[]);
    other_days_budget(&s);
    empty_tenant_token(&s);
    redeem_digest_is_checked(&s);
    pending_queue_is_complete(&s);
    methods_do_not_grow_metrics(&s);
    default_tenant_tokens(&s);
    ids_that_are_not_text(&s);
    revoked_credentials(&s);
    bundle_of_every_tenant(&s);
    approval_fields_are_bounded(&s);
}

#[test]
fn security_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    scenario(&format!(
        "sqlite://{}",
        dir.path().join("aegis.db").display()
    ));
}

/// Spending reported after a lease expired still counts: at expiry the
/// lease gave its unreported rest back to the budget, and without the late
/// report the agent could spend that rest twice.
#[test]
fn late_spending_of_an_expired_lease_counts() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("aegis.db").display());
    let s = Serve::start(&db, dir.path(), &["--lease-ttl", "1s"]);
    let gw = s.token("gateway", "globex", "edge-globex");
    let lease = |want: f64| {
        s.post(
            "/v1/budgets/lease",
            Some(&gw),
            &json!({"tenant": "globex", "agent": "finance-agent", "day": today(), "want_usd": want}),
        )
    };
    let (st, l) = lease(5.0);
    assert_eq!((st, l["granted_usd"].as_f64()), (200, Some(5.0)), "{l}");
    let id = l["lease_id"].as_str().unwrap().to_owned();
    // The service expires it on its own (every few seconds).
    let viewer = s.token("viewer", "globex", "v");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, b) = s.get(
            "/v1/budgets?tenant=globex&agent=finance-agent",
            Some(&viewer),
        );
        if b["agents"][0]["open_leases"] == 0 {
            assert_eq!(b["agents"][0]["reserved_usd"].as_f64(), Some(0.0), "{b}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lease never expired: {b}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let (st, r) = s.post(
        "/v1/budgets/settle",
        Some(&gw),
        &json!({"lease_id": id, "spent_usd": 4.0, "final": true}),
    );
    assert_eq!(st, 200, "{r}");
    assert_eq!(
        (r["state"].as_str(), r["returned_usd"].as_f64()),
        (Some("expired"), Some(0.0)),
        "{r}"
    );
    let (_, b) = s.get(
        "/v1/budgets?tenant=globex&agent=finance-agent",
        Some(&viewer),
    );
    assert_eq!(b["agents"][0]["spent_usd"].as_f64(), Some(4.0), "{b}");
    let (_, l) = lease(5.0);
    assert_eq!(l["granted_usd"].as_f64(), Some(1.0), "{l}");
    // Still bounded by the grant, and never below what was reported.
    for (spent, why) in [(6.0, "overspent"), (3.0, "spent_decreased")] {
        let (st, e) = s.post(
            "/v1/budgets/settle",
            Some(&gw),
            &json!({"lease_id": id, "spent_usd": spent, "final": true}),
        );
        assert_eq!((st, code(&e)), (400, why), "{e}");
    }
}

#[test]
fn connections_that_send_nothing_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("aegis.db").display());
    let s = Serve::start(&db, dir.path(), &[]);
    silent_connections_are_closed(&s);
}

#[test]
fn security_on_postgres() {
    let pg = TempPostgres::start().expect("PostgreSQL for the tests");
    scenario(&pg.url());
}
