//! The control plane's API against a real `aegis serve` process on
//! loopback, on SQLite and on a real PostgreSQL: budgets, approvals,
//! tokens, bundles, audit, and bad input that must change nothing.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::expect_used,
    clippy::panic
)]

mod support;

use serde_json::{json, Value};
use std::process::Command;
use support::control::{approval, code, long_poll, today, Serve, AEGIS, DIGEST_A, DIGEST_B};
use support::postgres::TempPostgres;

fn lease(s: &Serve, token: &str, tenant: &str, agent: &str, want: f64) -> (u16, Value) {
    s.post(
        "/v1/budgets/lease",
        Some(token),
        &json!({"tenant": tenant, "agent": agent, "day": today(), "want_usd": want}),
    )
}

fn budgets(s: &Serve) {
    let gw = s.token("gateway", "*", "edge-1");
    // research-agent (no tenant in its policy: tenant `default`), $20/day.
    let (st, a) = lease(s, &gw, "default", "research-agent", 15.0);
    assert_eq!(st, 200, "{a}");
    assert_eq!(
        (
            a["granted_usd"].as_f64(),
            a["remaining_usd"].as_f64(),
            a["limit_usd"].as_f64()
        ),
        (Some(15.0), Some(5.0), Some(20.0))
    );
    let first = a["lease_id"].as_str().unwrap().to_owned();
    let (_, b) = lease(s, &gw, "default", "research-agent", 10.0);
    assert_eq!(
        (b["granted_usd"].as_f64(), b["remaining_usd"].as_f64()),
        (Some(5.0), Some(0.0))
    );
    // Nothing left: granted 0, no lease.
    let (st, c) = lease(s, &gw, "default", "research-agent", 1.0);
    assert_eq!(st, 200);
    assert_eq!(c["granted_usd"].as_f64(), Some(0.0));
    assert!(c["lease_id"].is_null());
    // Spending is reported as a running total; the final settle returns the rest.
    let (st, p) = s.post(
        "/v1/budgets/settle",
        Some(&gw),
        &json!({"lease_id": first, "spent_usd": 1.0}),
    );
    assert_eq!((st, p["state"].as_str()), (200, Some("open")), "{p}");
    let (st, f) = s.post(
        "/v1/budgets/settle",
        Some(&gw),
        &json!({"lease_id": first, "spent_usd": 3.0, "final": true}),
    );
    assert_eq!(st, 200, "{f}");
    assert_eq!(
        (f["returned_usd"].as_f64(), f["state"].as_str()),
        (Some(12.0), Some("settled"))
    );
    // Settled leases cannot be settled again with another amount.
    let (st, e) = s.post(
        "/v1/budgets/settle",
        Some(&gw),
        &json!({"lease_id": first, "spent_usd": 4.0, "final": true}),
    );
    assert_eq!((st, code(&e)), (409, "lease_closed"));
    // What came back can be leased again.
    let (_, d) = lease(s, &gw, "default", "research-agent", 100.0);
    assert_eq!(d["granted_usd"].as_f64(), Some(12.0));
    let viewer = s.token("viewer", "*", "grafana");
    let (st, v) = s.get(
        "/v1/budgets?tenant=default&agent=research-agent",
        Some(&viewer),
    );
    assert_eq!(st, 200, "{v}");
    let row = &v["agents"][0];
    assert_eq!(
        (
            row["spent_usd"].as_f64(),
            row["reserved_usd"].as_f64(),
            row["remaining_usd"].as_f64()
        ),
        (Some(3.0), Some(17.0), Some(0.0))
    );
    // The CLI shows the same.
    let out = s.cli(&viewer, &["budgets", "show", "--agent", "research-agent"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("spent $3.00 + reserved $17.00 of $20.00"),
        "{out:?}"
    );

    // Tenants: a gateway of acme cannot lease for globex; limits differ per tenant.
    let gw_acme = s.token("gateway", "acme", "edge-acme");
    let (st, e) = lease(s, &gw_acme, "globex", "finance-agent", 1.0);
    assert_eq!((st, code(&e)), (403, "other_tenant"));
    let (_, a) = lease(s, &gw_acme, "acme", "finance-agent", 80.0);
    assert_eq!(a["granted_usd"].as_f64(), Some(50.0));
    // An agent with no budget in the policy, and a day that is not today.
    let (st, e) = lease(s, &gw, "default", "nobody", 1.0);
    assert_eq!(st, 404, "{e}");
    let (st, e) = s.post(
        "/v1/budgets/lease",
        Some(&gw),
        &json!({"tenant": "acme", "agent": "finance-agent", "day": "2001-01-01", "want_usd": 1}),
    );
    assert_eq!((st, code(&e)), (400, "invalid_day"));
}

fn approvals(s: &Serve) {
    let gw = s.token("gateway", "acme", "edge-acme");
    let alice = s.token("approver", "acme", "alice");
    let bob = s.token("approver", "globex", "bob");
    let viewer = s.token("viewer", "acme", "auditor");
    let (st, a) = s.post("/v1/approvals", Some(&gw), &approval("acme", DIGEST_A));
    assert_eq!(st, 201, "{a}");
    let id = a["approval_id"].as_str().unwrap().to_owned();
    assert_eq!(a["status"], "pending");
    assert!(a["url"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/v1/approvals/{id}")));
    // The same pending call asked again is the same approval.
    let (st, again) = s.post("/v1/approvals", Some(&gw), &approval("acme", DIGEST_A));
    assert_eq!(
        (st, again["approval_id"].as_str()),
        (200, Some(id.as_str()))
    );

    // Long-poll: a waiting gateway sees the decision when it is made.
    let waiter = long_poll(&s.url, &id, &gw);
    // Only a person of the same tenant decides.
    let body = json!({"approve": true, "comment": "ok for this vendor"});
    let (st, e) = s.post(&format!("/v1/approvals/{id}/decision"), Some(&gw), &body);
    assert_eq!((st, code(&e)), (403, "wrong_role"));
    let (st, e) = s.post(
        &format!("/v1/approvals/{id}/decision"),
        Some(&viewer),
        &body,
    );
    assert_eq!((st, code(&e)), (403, "wrong_role"));
    let (st, _) = s.post(&format!("/v1/approvals/{id}/decision"), Some(&bob), &body);
    assert_eq!(st, 404, "another tenant's approver must not even see it");
    let (st, d) = s.post(&format!("/v1/approvals/{id}/decision"), Some(&alice), &body);
    assert_eq!(st, 200, "{d}");
    assert_eq!(
        (d["status"].as_str(), d["decided_by"].as_str()),
        (Some("approved"), Some("alice"))
    );
    let (st, polled) = waiter.join().unwrap();
    assert_eq!(
        (st, polled["status"].as_str()),
        (200, Some("approved")),
        "{polled}"
    );
    let (st, e) = s.post(
        &format!("/v1/approvals/{id}/decision"),
        Some(&alice),
        &json!({"approve": false}),
    );
    assert_eq!((st, code(&e)), (409, "already_decided"));

    // Redeemed once, by the gateway, for the same call only.
    let (st, e) = s.post(
        &format!("/v1/approvals/{id}/redeem"),
        Some(&gw),
        &json!({"digest": DIGEST_B}),
    );
    assert_eq!((st, code(&e)), (403, "digest_mismatch"));
    let (st, e) = s.post(
        &format!("/v1/approvals/{id}/redeem"),
        Some(&alice),
        &json!({"digest": DIGEST_A}),
    );
    assert_eq!((st, code(&e)), (403, "wrong_role"));
    let (st, r) = s.post(
        &format!("/v1/approvals/{id}/redeem"),
        Some(&gw),
        &json!({"digest": DIGEST_A}),
    );
    assert_eq!((st, r["approved_by"].as_str()), (200, Some("alice")), "{r}");
    let (st, e) = s.post(
        &format!("/v1/approvals/{id}/redeem"),
        Some(&gw),
        &json!({"digest": DIGEST_A}),
    );
    assert_eq!((st, code(&e)), (409, "already_redeemed"));

    // A denial reaches the gateway with the approver's comment.
    let (_, b) = s.post("/v1/approvals", Some(&gw), &approval("acme", DIGEST_B));
    let idb = b["approval_id"].as_str().unwrap().to_owned();
    let out = s.cli(
        &alice,
        &[
            "approvals",
            "deny",
            &idb,
            "--comment",
            "vendor not on the list",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let (st, e) = s.post(
        &format!("/v1/approvals/{idb}/redeem"),
        Some(&gw),
        &json!({"digest": DIGEST_B}),
    );
    assert_eq!((st, code(&e)), (403, "denied"));
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("vendor not on the list"),
        "{e}"
    );
    // A gateway words its own refusal from these.
    assert_eq!(e["error"]["comment"], "vendor not on the list", "{e}");
    assert!(
        e["error"]["decided_by"]
            .as_str()
            .is_some_and(|b| !b.is_empty()),
        "{e}"
    );

    // Lists are per tenant.
    let (_, mine) = s.get("/v1/approvals", Some(&alice));
    assert_eq!(mine["approvals"].as_array().unwrap().len(), 2);
    let (_, theirs) = s.get("/v1/approvals", Some(&bob));
    assert_eq!(theirs["approvals"].as_array().unwrap().len(), 0);
    let (st, e) = s.get("/v1/approvals?tenant=acme", Some(&bob));
    assert_eq!((st, code(&e)), (403, "other_tenant"));
    let out = s.cli(&alice, &["approvals", "list", "--status", "redeemed"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&id) && !text.contains(&idb), "{text}");
}

fn tokens(s: &Serve) {
    let out = s.cli(
        &s.admin,
        &[
            "agents",
            "create",
            "--tenant",
            "acme",
            "--agent",
            "finance-agent",
            "--scope",
            "payments:write",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let credential = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(credential.starts_with("aegis_ac_"));
    let (st, e) = s.post(
        "/v1/tokens",
        None,
        &json!({"credential": "aegis_ac_not-a-real-one"}),
    );
    assert_eq!((st, code(&e)), (401, "unauthenticated"));
    let (st, t) = s.post("/v1/tokens", None, &json!({"credential": credential}));
    assert_eq!(st, 200, "{t}");
    let first = t["token"].as_str().unwrap().to_owned();
    let verify = |token: &str| {
        let (_, jwks) = s.get("/.well-known/jwks.json", None);
        let keys: Vec<aegis_engine::jwt::TrustedKey> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                assert_eq!(
                    (k["kty"].as_str(), k["crv"].as_str(), k["alg"].as_str()),
                    (Some("OKP"), Some("Ed25519"), Some("EdDSA"))
                );
                use base64::Engine as _;
                let x = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(k["x"].as_str().unwrap())
                    .unwrap();
                aegis_engine::jwt::TrustedKey {
                    kid: k["kid"].as_str().unwrap().into(),
                    key: x.try_into().unwrap(),
                }
            })
            .collect();
        let cfg = aegis_engine::jwt::IdentityConfig::new("aegis-control", "aegis", keys);
        let vk = aegis_engine::jwt::VerifyingKeys::new(&cfg).unwrap();
        let now = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap();
        aegis_engine::jwt::verify(token.as_bytes(), &cfg, &vk, now).map(|p| {
            (
                p.agent.as_str().to_owned(),
                p.tenant.map(|t| t.as_str().to_owned()),
            )
        })
    };
    assert_eq!(
        verify(&first),
        Ok(("finance-agent".to_owned(), Some("acme".to_owned())))
    );
    // Rotation: a new kid signs; the old one stays published for the overlap.
    let (st, r) = s.post(
        "/v1/keys/rotate",
        Some(&s.admin),
        &json!({"overlap_secs": 3600}),
    );
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["jwks"]["keys"].as_array().unwrap().len(), 2);
    let (_, t2) = s.post("/v1/tokens", None, &json!({"credential": credential}));
    assert_eq!(t2["kid"].as_str(), r["kid"].as_str());
    assert_ne!(t2["kid"], t["kid"]);
    assert!(verify(t2["token"].as_str().unwrap()).is_ok());
    assert!(
        verify(&first).is_ok(),
        "tokens of the previous key verify during the overlap"
    );
    // The filter's own policy accepts these tokens once its `kind:
    // Identity` trusts the JWKS keys: `aegis test` judges a call with one.
    policy_trusting_jwks(s, t2["token"].as_str().unwrap());
    // A revoked credential trades for nothing; the others still work.
    let out = s.cli(
        &s.admin,
        &[
            "agents",
            "create",
            "--tenant",
            "acme",
            "--agent",
            "finance-agent",
            "--format",
            "json",
        ],
    );
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let out = s.cli(
        &s.admin,
        &[
            "agents",
            "revoke",
            created["credential_id"].as_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let (st, e) = s.post(
        "/v1/tokens",
        None,
        &json!({"credential": created["credential"]}),
    );
    assert_eq!((st, code(&e)), (401, "unauthenticated"));
    assert_eq!(
        s.post("/v1/tokens", None, &json!({"credential": credential}))
            .0,
        200
    );
    let out = s.cli(
        &s.admin,
        &[
            "agents",
            "revoke",
            created["credential_id"].as_str().unwrap(),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "revoking twice is a refusal: {out:?}"
    );
    // Only an admin for all tenants rotates.
    let acme_admin = s.token("admin", "acme", "acme-admin");
    let (st, _) = s.post("/v1/keys/rotate", Some(&acme_admin), &json!({}));
    assert_eq!(st, 403);
}

fn policy_trusting_jwks(s: &Serve, token: &str) {
    use base64::Engine as _;
    let (_, jwks) = s.get("/.well-known/jwks.json", None);
    let mut keys = String::new();
    for k in jwks["keys"].as_array().unwrap() {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(k["x"].as_str().unwrap())
            .unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        keys.push_str(&format!(
            "  - {{kid: \"{}\", public_key: \"{b64}\"}}\n",
            k["kid"].as_str().unwrap()
        ));
    }
    let dir = s.dir.join("jwks-policy");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("policy.yaml"),
        format!(
            "kind: Identity\nissuer: aegis-control\naudience: aegis\nkeys:\n{keys}---\n\
             kind: ToolCatalog\ntools:\n  - name: openai\n    hosts: [api.openai.com]\n    body: json\n    actions:\n      - {{name: chat, method: POST, path: /v1/chat/completions}}\n---\n\
             agent: finance-agent\ntenant: acme\negress: {{allow_hosts: [api.openai.com]}}\nallowed_tools:\n  - name: openai\n    actions: [chat]\n"
        ),
    )
    .unwrap();
    let case = |name: &str, token: &str, expect: &str| {
        format!(
            "- name: {name}\n  request:\n    method: POST\n    url: https://api.openai.com/v1/chat/completions\n    headers:\n      - {{content-type: application/json}}\n      - {{authorization: \"Bearer {token}\"}}\n    body: '{{\"model\":\"gpt-4o-mini\"}}'\n  expect: {{decision: {expect}}}\n"
        )
    };
    // One signature character changed (not the last: its low bits are padding).
    let at = token.len() - 20;
    let swap = if &token[at..=at] == "A" { "B" } else { "A" };
    let forged = format!("{}{swap}{}", &token[..at], &token[at + 1..]);
    std::fs::write(
        dir.join("tokens.cases.yaml"),
        case("a token from aegis serve", token, "allow")
            + &case("the same token altered", &forged, "deny"),
    )
    .unwrap();
    let out = Command::new(AEGIS).arg("test").arg(&dir).output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 passed"),
        "{out:?}"
    );
}

fn bundles(s: &Serve, keys: &std::path::Path) {
    let gw = s.token("gateway", "*", "edge-1");
    let (st, _) = s.get("/v1/bundles/current", Some(&gw));
    assert_eq!(st, 200);
    let resp = support::control::agent()
        .get(&format!("{}/v1/bundles/current", s.url))
        .set("authorization", &format!("Bearer {gw}"))
        .call()
        .unwrap();
    let etag = resp.header("etag").unwrap().to_owned();
    let rev: i64 = resp.header("x-aegis-revision").unwrap().parse().unwrap();
    let resp = support::control::agent()
        .get(&format!("{}/v1/bundles/current", s.url))
        .set("authorization", &format!("Bearer {gw}"))
        .set("if-none-match", &etag)
        .call()
        .unwrap();
    assert_eq!(resp.status(), 304);

    let dir = &s.dir;
    let policy = dir.join("new.yaml");
    std::fs::write(
        &policy,
        support::control::POLICIES.replace("daily_usd: 20", "daily_usd: 30"),
    )
    .unwrap();
    let compile = |out: &str, key: Option<&std::path::Path>, revision: i64| {
        let mut c = Command::new(AEGIS);
        c.args(["compile"])
            .arg(&policy)
            .arg("-o")
            .arg(dir.join(out))
            .args(["--revision", &revision.to_string()]);
        if let Some(k) = key {
            c.arg("--key").arg(k);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{o:?}");
        dir.join(out)
    };
    let publish = |file: &std::path::Path| s.cli(&s.admin, &["publish", file.to_str().unwrap()]);
    let unsigned = compile("unsigned.bundle", None, rev + 10);
    let o = publish(&unsigned);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("not signed"),
        "{o:?}"
    );
    let untrusted = compile("untrusted.bundle", Some(&keys.join("other.key")), rev + 10);
    let o = publish(&untrusted);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("untrusted_signer"),
        "{o:?}"
    );
    let stale = compile("stale.bundle", Some(&keys.join("team.key")), rev);
    let o = publish(&stale);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("stale_revision"),
        "{o:?}"
    );
    let viewer = s.token("viewer", "*", "v");
    // A newer revision signed by a trusted key becomes current, and its
    // limits apply.
    let good = compile("good.bundle", Some(&keys.join("team.key")), rev + 10);
    let o = publish(&good);
    assert!(o.status.success(), "{o:?}");
    let (st, v) = s.get(
        "/v1/budgets?tenant=default&agent=research-agent&day=2001-01-01",
        Some(&viewer),
    );
    assert_eq!(
        (st, v["agents"][0]["limit_usd"].as_f64()),
        (200, Some(30.0)),
        "{v}"
    );
    let resp = support::control::agent()
        .get(&format!("{}/v1/bundles/current", s.url))
        .set("authorization", &format!("Bearer {gw}"))
        .set("if-none-match", &etag)
        .call()
        .unwrap();
    assert_eq!(resp.status(), 200, "a new revision is not the old ETag");
    assert_eq!(
        resp.header("x-aegis-revision").unwrap(),
        (rev + 10).to_string()
    );
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut bytes).unwrap();
    assert_eq!(bytes, std::fs::read(&good).unwrap());
    // The new limit: $30 for research-agent.
    let gw = s.token("gateway", "*", "edge-2");
    let (_, l) = lease(s, &gw, "default", "research-agent", 0.0);
    assert_eq!(l["limit_usd"].as_f64(), Some(30.0), "{l}");
}

fn audit(s: &Serve) {
    let viewer = s.token("viewer", "*", "siem");
    let out = s.cli(&viewer, &["audit", "verify"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("audit chain intact"),
        "{out:?}"
    );
    let out = s.cli(&viewer, &["audit", "export", "--format", "jsonl"]);
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for kind in [
        "approval.created",
        "approval.decided",
        "approval.redeemed",
        "lease.granted",
        "lease.settled",
        "bundle.published",
        "agent.created",
        "token.issued",
        "key.created",
    ] {
        assert!(lines.iter().any(|l| l["kind"] == kind), "no `{kind}` event");
    }
    let out = s.cli(&viewer, &["audit", "export", "--format", "ocsf"]);
    let ocsf: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(ocsf.len(), lines.len());
    assert!(ocsf.iter().all(|e| e["class_uid"] == 6003));
}

fn bad_input(s: &Serve) {
    let gw = s.token("gateway", "acme", "edge-acme");
    let viewer = s.token("viewer", "acme", "v");
    let raw = |body: &[u8], ctype: &str, token: Option<&str>| {
        let mut r = support::control::agent()
            .post(&format!("{}/v1/approvals", s.url))
            .set("content-type", ctype);
        if let Some(t) = token {
            r = r.set("authorization", &format!("Bearer {t}"));
        }
        match r.send_bytes(body) {
            Ok(x) => (x.status(), x.into_string().unwrap()),
            Err(ureq::Error::Status(c, x)) => (c, x.into_string().unwrap()),
            Err(e) => panic!("{e}"),
        }
    };
    let parse = |t: &str| serde_json::from_str::<Value>(t).unwrap();
    let good = approval("acme", DIGEST_A).to_string();
    // An expired token: issued for one second, used once it has expired
    // (until then it may create the approval: that is taken into account
    // by counting the audit log only afterwards).
    let out = Command::new(AEGIS)
        .args([
            "admin", "token", "--db", &s.db, "--role", "gateway", "--tenant", "acme", "--ttl", "1s",
        ])
        .output()
        .unwrap();
    let short = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    loop {
        let (st, b) = raw(good.as_bytes(), "application/json", Some(&short));
        if st == 401 {
            assert!(b.contains("expired"), "{b}");
            break;
        }
        assert!(st == 201 || st == 200, "{b}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    let before = s.audit_len();
    let (st, _) = raw(good.as_bytes(), "application/json", Some(&short));
    assert_eq!(st, 401);
    let (st, b) = raw(b"{\"tenant\": ", "application/json", Some(&gw));
    assert_eq!((st, code(&parse(&b))), (400, "malformed_json"), "{b}");
    let mut with_extra = approval("acme", DIGEST_B);
    with_extra["approve_automatically"] = json!(true);
    let (st, b) = raw(
        with_extra.to_string().as_bytes(),
        "application/json",
        Some(&gw),
    );
    assert_eq!((st, code(&parse(&b))), (400, "invalid_body"), "{b}");
    assert!(
        b.contains("approve_automatically"),
        "the reason names the unknown field: {b}"
    );
    let (st, b) = raw(&vec![b' '; 100_000], "application/json", Some(&gw));
    assert_eq!((st, code(&parse(&b))), (413, "body_too_large"), "{b}");
    let (st, _) = raw(good.as_bytes(), "text/plain", Some(&gw));
    assert_eq!(st, 415);
    let (st, b) = raw(good.as_bytes(), "application/json", None);
    assert_eq!((st, code(&parse(&b))), (401, "unauthenticated"));
    let mut forged = gw.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let (st, b) = raw(good.as_bytes(), "application/json", Some(&forged));
    assert_eq!(st, 401, "{b}");
    let (st, b) = raw(good.as_bytes(), "application/json", Some(&viewer));
    assert_eq!((st, code(&parse(&b))), (403, "wrong_role"));
    let (st, b) = raw(
        approval("globex", DIGEST_B).to_string().as_bytes(),
        "application/json",
        Some(&gw),
    );
    assert_eq!((st, code(&parse(&b))), (403, "other_tenant"));
    let (st, b) = raw(
        approval("acme", "XYZ").to_string().as_bytes(),
        "application/json",
        Some(&gw),
    );
    assert_eq!((st, code(&parse(&b))), (400, "invalid_digest"));
    let (st, b) = s.post(
        "/v1/budgets/lease",
        Some(&gw),
        &json!({"tenant": "acme", "agent": "finance-agent", "day": today(), "want_usd": -5}),
    );
    assert_eq!((st, code(&b)), (400, "invalid_amount"));
    let (st, b) = s.post(
        "/v1/budgets/settle",
        Some(&gw),
        &json!({"lease_id": "lse_nope", "spent_usd": 1}),
    );
    assert_eq!(st, 404, "{b}");
    let (st, _) = s.get("/v1/nothing-here", Some(&gw));
    assert_eq!(st, 404);
    let (st, b) = s.get("/v1/approvals/apr_x?wait=9999", Some(&gw));
    assert_eq!((st, code(&b)), (400, "invalid_wait"));
    assert_eq!(s.audit_len(), before, "a refused request changed nothing");
}

fn health_and_protocols(s: &Serve) {
    assert_eq!(s.get("/healthz", None).0, 200);
    assert_eq!(s.get("/readyz", None).0, 200);
    let (st, m) = s.get("/metrics", None);
    assert_eq!(st, 200);
    let m = m.as_str().unwrap();
    assert!(
        m.contains("aegis_control_requests_total{")
            && m.contains("aegis_control_request_duration_seconds_bucket{"),
        "{m}"
    );
    assert!(
        m.contains("aegis_control_approvals_total{status=\"redeemed\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("aegis_control_leases_total{event=\"granted\"}"),
        "{m}"
    );
    // h2c with prior knowledge, as Envoy's cluster would speak it.
    let out = Command::new("curl")
        .args([
            "-sS",
            "--http2-prior-knowledge",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .arg(format!("{}/healthz", s.url))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 200", "{out:?}");
}

fn scenario(db: &str) {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    for k in ["team", "other"] {
        let o = Command::new(AEGIS)
            .args(["keygen", "--out"])
            .arg(keys.join(k))
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
    }
    let trust = keys.join("team.pub");
    let s = Serve::start(db, dir.path(), &["--trust", trust.to_str().unwrap()]);
    // A mistyped --db is an error, not a fresh store with a fresh key.
    let out = Command::new(AEGIS)
        .args([
            "admin",
            "token",
            "--db",
            "sqlite:///nonexistent/aegis.db",
            "--role",
            "admin",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no store at `/nonexistent/aegis.db`"),
        "{out:?}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("admin.token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the bootstrap admin token is private");
    }
    budgets(&s);
    approvals(&s);
    tokens(&s);
    bundles(&s, &keys);
    bad_input(&s);
    audit(&s);
    health_and_protocols(&s);
}

#[test]
fn api_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    scenario(&format!(
        "sqlite://{}",
        dir.path().join("aegis.db").display()
    ));
}

#[test]
fn api_on_postgres() {
    let pg = TempPostgres::start().expect("PostgreSQL for the tests");
    scenario(&pg.url());
}
