//! The dashboard's HTTP side against a real `aegis serve` process, without
//! a browser: the session cookie's flags, the security headers, CSRF and
//! Origin refusals that record nothing, a viewer who cannot decide, tenant
//! isolation, escaping of hostile names and summaries, and the CLI
//! showing what the pages show. (`e2e/tests/dashboard.rs` drives the same
//! pages in a real Chromium.)

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::expect_used,
    clippy::panic
)]

mod support;

use serde_json::{json, Value};
use support::control::{approval, Serve, DIGEST_A, DIGEST_B};
use support::postgres::TempPostgres;

/// A response as a browser would see it, redirects not followed.
struct Page {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Page {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .redirects(0)
        .timeout(std::time::Duration::from_secs(30))
        .build()
}

fn finish(r: Result<ureq::Response, ureq::Error>) -> Page {
    let resp = match r {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{e}"),
    };
    let status = resp.status();
    let headers = resp
        .headers_names()
        .into_iter()
        .flat_map(|n| {
            resp.all(&n)
                .into_iter()
                .map(|v| (n.clone(), v.to_owned()))
                .collect::<Vec<_>>()
        })
        .collect();
    Page {
        status,
        headers,
        body: resp.into_string().unwrap(),
    }
}

/// A signed-in person: the session cookie and the CSRF token of the forms.
struct Person {
    base: String,
    cookie: String,
    csrf: String,
}

fn get(base: &str, path: &str, cookie: Option<&str>) -> Page {
    let mut req = agent().get(&format!("{base}{path}"));
    if let Some(c) = cookie {
        req = req.set("cookie", &format!("aegis_session={c}"));
    }
    finish(req.call())
}

fn post_form(
    base: &str,
    path: &str,
    cookie: Option<&str>,
    origin: Option<&str>,
    fields: &[(&str, &str)],
) -> Page {
    let mut req = agent().post(&format!("{base}{path}"));
    if let Some(c) = cookie {
        req = req.set("cookie", &format!("aegis_session={c}"));
    }
    if let Some(o) = origin {
        req = req.set("origin", o);
    }
    finish(req.send_form(fields))
}

/// The value of `name="csrf"` in a page's first form that has one.
fn csrf_of(body: &str) -> String {
    let at = body
        .find("name=\"csrf\" value=\"")
        .expect("a form with a csrf token")
        + 19;
    body[at..at + 64].to_owned()
}

fn sign_in(s: &Serve, token: &str) -> Person {
    let p = post_form(
        &s.url,
        "/dashboard/login",
        None,
        Some(&s.url),
        &[("token", token), ("next", "/dashboard/approvals")],
    );
    assert_eq!(p.status, 303, "{}", p.body);
    let set = p.header("set-cookie").unwrap();
    let cookie = set
        .split(';')
        .next()
        .unwrap()
        .strip_prefix("aegis_session=")
        .unwrap()
        .to_owned();
    let page = get(&s.url, "/dashboard/approvals", Some(&cookie));
    assert_eq!(page.status, 200, "{}", page.body);
    Person {
        base: s.url.clone(),
        csrf: csrf_of(&page.body),
        cookie,
    }
}

impl Person {
    fn get(&self, path: &str) -> Page {
        get(&self.base, path, Some(&self.cookie))
    }
    fn decide(&self, id: &str, fields: &[(&str, &str)]) -> Page {
        post_form(
            &self.base,
            &format!("/dashboard/approvals/{id}/decision"),
            Some(&self.cookie),
            None,
            fields,
        )
    }
}

fn start() -> (tempfile::TempDir, Serve) {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("aegis.db").display());
    let s = Serve::start(&db, dir.path(), &[]);
    (dir, s)
}

fn start_on(db: &str) -> (tempfile::TempDir, Serve) {
    let dir = tempfile::tempdir().unwrap();
    let s = Serve::start(db, dir.path(), &[]);
    (dir, s)
}

fn create(s: &Serve, body: &Value) -> String {
    let gw = s.token("gateway", "*", "edge-1");
    let (st, v) = s.post("/v1/approvals", Some(&gw), body);
    assert_eq!(st, 201, "{v}");
    v["approval_id"].as_str().unwrap().to_owned()
}

fn status_of(s: &Serve, id: &str) -> String {
    let (_, v) = s.get(&format!("/v1/approvals/{id}"), Some(&s.admin));
    v["status"].as_str().unwrap().to_owned()
}

#[test]
fn sign_in_is_a_strict_cookie_for_a_server_side_session_and_sign_out_ends_it() {
    let (dir, s) = start();
    // Not signed in: a page sends the browser to sign in, and back.
    let p = get(&s.url, "/dashboard/approvals/apr_x", None);
    assert_eq!(p.status, 303);
    assert_eq!(
        p.header("location"),
        Some("/dashboard/login?next=%2Fdashboard%2Fapprovals%2Fapr_x")
    );
    // A bad token and a gateway's token do not sign in.
    let bad = post_form(&s.url, "/dashboard/login", None, None, &[("token", "nope")]);
    assert_eq!(bad.status, 401);
    assert!(bad.header("set-cookie").is_none());
    let gw = s.token("gateway", "*", "edge-1");
    let refused = post_form(&s.url, "/dashboard/login", None, None, &[("token", &gw)]);
    assert_eq!(refused.status, 403);
    assert!(refused.header("set-cookie").is_none());
    // Another site cannot sign a browser in.
    let alice = s.token("approver", "acme", "alice");
    let cross = post_form(
        &s.url,
        "/dashboard/login",
        None,
        Some("https://evil.example"),
        &[("token", &alice)],
    );
    assert_eq!(cross.status, 403);
    assert!(cross.header("set-cookie").is_none());

    let login = post_form(
        &s.url,
        "/dashboard/login",
        None,
        None,
        &[("token", &alice), ("next", "https://evil.example/")],
    );
    assert_eq!(login.status, 303);
    // `next` only ever leads to the dashboard.
    assert_eq!(login.header("location"), Some("/dashboard/approvals"));
    let cookie = login.header("set-cookie").unwrap().to_owned();
    let attrs: Vec<&str> = cookie.split("; ").collect();
    for want in ["HttpOnly", "SameSite=Strict", "Path=/dashboard"] {
        assert!(attrs.contains(&want), "{cookie}");
    }
    assert!(!attrs.contains(&"Secure"), "plain http: {cookie}");
    let id = attrs[0].strip_prefix("aegis_session=").unwrap().to_owned();
    assert_eq!(id.len(), 64);

    // Only a hash of the session id is stored.
    let db = dir.path().join("aegis.db");
    let stored: Vec<(String, String, String)> = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            use sqlx::Row;
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
                .await
                .unwrap();
            sqlx::query("SELECT id_sha256, role, subject FROM dashboard_sessions")
                .fetch_all(&pool)
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect()
        });
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0].0, id);
    assert_eq!(
        stored[0].0,
        aegis_engine::trust::hex(&<sha2::Sha256 as sha2::Digest>::digest(id.as_bytes()))
    );
    assert_eq!(
        (stored[0].1.as_str(), stored[0].2.as_str()),
        ("approver", "alice")
    );

    // Every page: a strict CSP with a nonce, no framing, no caching.
    let page = get(&s.url, "/dashboard/approvals", Some(&id));
    assert_eq!(page.status, 200);
    assert!(page.body.contains("alice (approver, tenant acme)"));
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.starts_with("default-src 'none'; script-src 'nonce-"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"));
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap();
    assert!(page.body.contains(&format!("<script nonce=\"{nonce}\">")));
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert_eq!(page.header("referrer-policy"), Some("same-origin"));
    // No such page: a page saying so, with the same headers.
    let missing = get(&s.url, "/dashboard/nope", Some(&id));
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("no such page"));
    assert_eq!(missing.header("x-frame-options"), Some("DENY"));
    // A fresh nonce for every answer.
    let again = get(&s.url, "/dashboard/approvals", Some(&id));
    assert_ne!(again.header("content-security-policy").unwrap(), csp);

    // Signing out needs the form's token, ends the session and says so in the audit log.
    let csrf = csrf_of(&page.body);
    let forged = post_form(&s.url, "/dashboard/logout", Some(&id), None, &[]);
    assert_eq!(forged.status, 403);
    assert_eq!(get(&s.url, "/dashboard/agents", Some(&id)).status, 200);
    let out = post_form(
        &s.url,
        "/dashboard/logout",
        Some(&id),
        None,
        &[("csrf", &csrf)],
    );
    assert_eq!(out.status, 303);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(get(&s.url, "/dashboard/agents", Some(&id)).status, 303);
    let (_, v) = s.get("/v1/audit?kind=dashboard.signin", Some(&s.admin));
    let ins = v["events"].as_array().unwrap();
    assert_eq!(ins.len(), 1, "{v}");
    assert_eq!(ins[0]["actor"], "approver:alice");
    let (_, v) = s.get("/v1/audit?kind=dashboard.signout", Some(&s.admin));
    let outs = v["events"].as_array().unwrap();
    assert_eq!(outs.len(), 1, "{v}");
    // The pair names the same session, by a prefix of its hash only.
    assert_eq!(ins[0]["data"]["session"], outs[0]["data"]["session"]);
    assert_eq!(ins[0]["data"]["session"], stored[0].0[..16]);
}

#[test]
fn the_cookie_is_secure_when_the_public_url_is_https() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("aegis.db").display());
    let s = Serve::start(&db, dir.path(), &["--public-url", "https://aegis.example"]);
    let viewer = s.token("viewer", "*", "vic");
    let login = post_form(
        &s.url,
        "/dashboard/login",
        None,
        None,
        &[("token", &viewer)],
    );
    assert_eq!(login.status, 303);
    let cookie = login.header("set-cookie").unwrap();
    assert!(cookie.split("; ").any(|a| a == "Secure"), "{cookie}");
}

#[test]
fn a_forged_form_is_refused_and_records_nothing() {
    let (_dir, s) = start();
    let id = create(&s, &approval("acme", DIGEST_A));
    let alice = sign_in(&s, &s.token("approver", "acme", "alice"));
    let bob = sign_in(&s, &s.token("approver", "acme", "bob"));
    let before = s.audit_len();
    // No token, a wrong token, a token from another session, another site.
    let wrong = "0".repeat(64);
    for (fields, origin) in [
        (vec![("decision", "approve")], None),
        (
            vec![("decision", "approve"), ("csrf", wrong.as_str())],
            None,
        ),
        (
            vec![("decision", "approve"), ("csrf", bob.csrf.as_str())],
            None,
        ),
        (
            vec![("decision", "approve"), ("csrf", alice.csrf.as_str())],
            Some("https://evil.example"),
        ),
    ] {
        let p = post_form(
            &s.url,
            &format!("/dashboard/approvals/{id}/decision"),
            Some(&alice.cookie),
            origin,
            &fields,
        );
        assert_eq!(p.status, 403, "{fields:?} {origin:?}: {}", p.body);
    }
    // Without a session at all.
    let p = post_form(
        &s.url,
        &format!("/dashboard/approvals/{id}/decision"),
        None,
        None,
        &[("decision", "approve"), ("csrf", &alice.csrf)],
    );
    assert_eq!(p.status, 403);
    assert_eq!(s.audit_len(), before);
    assert_eq!(status_of(&s, &id), "pending");

    // The real form, from this origin, decides once.
    let p = post_form(
        &s.url,
        &format!("/dashboard/approvals/{id}/decision"),
        Some(&alice.cookie),
        Some(&s.url),
        &[
            ("decision", "approve"),
            ("csrf", &alice.csrf),
            ("comment", "ok for Q4"),
        ],
    );
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(
        p.header("location").unwrap(),
        format!("/dashboard/approvals/{id}?done=approved")
    );
    let (_, v) = s.get(&format!("/v1/approvals/{id}"), Some(&s.admin));
    assert_eq!(
        (
            v["status"].as_str(),
            v["decided_by"].as_str(),
            v["comment"].as_str()
        ),
        (Some("approved"), Some("alice"), Some("ok for Q4"))
    );
    let (_, ev) = s.get(
        &format!("/v1/audit?kind=approval.decided&subject={id}"),
        Some(&s.admin),
    );
    assert_eq!(ev["events"][0]["actor"], "approver:alice", "{ev}");
    assert_eq!(ev["events"][0]["data"]["via"], "dashboard", "{ev}");
    // A second decision is refused by the one decision path.
    let p = alice.decide(&id, &[("decision", "deny"), ("csrf", &alice.csrf)]);
    assert_eq!(p.status, 409);
    assert!(p.body.contains("already approved"), "{}", p.body);
}

#[test]
fn a_viewer_sees_no_buttons_and_cannot_decide() {
    let (_dir, s) = start();
    let id = create(&s, &approval("acme", DIGEST_A));
    let vic = sign_in(&s, &s.token("viewer", "acme", "vic"));
    for path in [
        "/dashboard/approvals".to_owned(),
        format!("/dashboard/approvals/{id}"),
    ] {
        let page = vic.get(&path);
        assert_eq!(page.status, 200);
        assert!(page.body.contains(&id));
        assert!(
            !page
                .body
                .contains("<button type=\"submit\" name=\"decision\""),
            "{path}"
        );
        assert!(page.body.contains("approvers decide them"));
    }
    let before = s.audit_len();
    let p = vic.decide(&id, &[("decision", "approve"), ("csrf", &vic.csrf)]);
    assert_eq!(p.status, 403);
    assert!(p.body.contains("needs the role approver"), "{}", p.body);
    assert_eq!(s.audit_len(), before);
    assert_eq!(status_of(&s, &id), "pending");
}

#[test]
fn a_tenants_people_see_only_their_tenant() {
    let (_dir, s) = start();
    let acme = create(&s, &approval("acme", DIGEST_A));
    let globex = create(&s, &approval("globex", DIGEST_B));
    let alice = sign_in(&s, &s.token("approver", "acme", "alice"));
    let page = alice.get("/dashboard/approvals");
    assert!(page.body.contains(&acme) && !page.body.contains(&globex));
    assert_eq!(
        alice.get(&format!("/dashboard/approvals/{globex}")).status,
        404
    );
    let before = s.audit_len();
    let p = alice.decide(&globex, &[("decision", "approve"), ("csrf", &alice.csrf)]);
    assert_eq!(p.status, 404);
    assert_eq!(s.audit_len(), before);
    assert_eq!(status_of(&s, &globex), "pending");
    // Agents and audit: acme only.
    let agents = alice.get("/dashboard/agents").body;
    assert!(agents.contains("tenant acme") && !agents.contains("tenant globex"));
    let audit = alice.get("/dashboard/audit").body;
    assert!(audit.contains(&acme) && !audit.contains(&globex));
    // The bundle names every tenant: no diff for a tenant's people.
    let policy = alice.get("/dashboard/policy").body;
    assert!(policy.contains("needs a token for all tenants"));
    // An admin for all tenants sees both.
    let root = sign_in(&s, &s.admin);
    let all = root.get("/dashboard/approvals").body;
    assert!(all.contains(&acme) && all.contains(&globex));
}

#[test]
fn hostile_names_and_summaries_are_escaped() {
    let (_dir, s) = start();
    hostile(&s);
}

fn hostile(s: &Serve) {
    let mut body = approval("acme", DIGEST_A);
    body["agent"] = json!("<script>alert('agent')</script>");
    body["reason"] = json!("\"><img src=x onerror=alert(1)>");
    body["summary"] = json!({"note": "</pre><script>alert('summary')</script>", "amount": 7500});
    let id = create(s, &body);
    let root = sign_in(s, &s.admin);
    for path in [
        "/dashboard/approvals".to_owned(),
        format!("/dashboard/approvals/{id}"),
        "/dashboard/agents".to_owned(),
        "/dashboard/audit".to_owned(),
        "/dashboard/audit?search=%3Cscript%3E".to_owned(),
    ] {
        let page = root.get(&path);
        assert_eq!(page.status, 200, "{path}");
        assert!(!page.body.contains("<script>alert"), "{path}");
        assert!(!page.body.contains("<img src=x"), "{path}");
        assert_eq!(
            page.body.matches("<script").count(),
            1,
            "{path}: only the page's own"
        );
    }
    let page = root.get(&format!("/dashboard/approvals/{id}"));
    assert!(page
        .body
        .contains("&lt;script&gt;alert(&#39;agent&#39;)&lt;/script&gt;"));
    assert!(page
        .body
        .contains("&lt;/pre&gt;&lt;script&gt;alert(&#39;summary&#39;)"));

    // A summary as the gateway sends it reads as the call's line, its
    // parameters one a line, and the request id and size; escaped too.
    let mut body = approval("acme", &"c".repeat(64));
    body["summary"] = json!({"method": "POST", "host": "api.stripe.com", "path": "/v1/<b>x</b>",
        "request_id": "req-1", "body_bytes": 61, "params_truncated": true,
        "params": {"amount": "7500", "memo": "</pre><script>alert('param')</script>"}});
    let id = create(s, &body);
    let page = root.get(&format!("/dashboard/approvals/{id}"));
    assert!(page
        .body
        .contains("<code class=\"call\">POST api.stripe.com /v1/&lt;b&gt;x&lt;/b&gt;</code>"));
    assert!(page.body.contains(
        "amount: 7500\nmemo: &lt;/pre&gt;&lt;script&gt;alert(&#39;param&#39;)&lt;/script&gt;</pre>"
    ));
    assert!(page
        .body
        .contains("request id req-1 · 61 bytes · the gateway left parameters out"));
    assert_eq!(page.body.matches("<script").count(), 1);
    // The audit search takes LIKE's wildcards literally.
    let none = root.get("/dashboard/audit?search=%25%25%25zz");
    assert!(none.body.contains("No events match"));
}

#[test]
fn the_cli_shows_what_the_pages_show() {
    let (_dir, mut s) = start();
    parity(&mut s);
}

/// The same on PostgreSQL: the searches, the overview's sums and the
/// gateways' fetches are SQL both stores must run alike.
#[test]
fn the_dashboard_on_postgres() {
    let pg = TempPostgres::start().expect("PostgreSQL for the tests");
    let (_dir, mut s) = start_on(&pg.url());
    parity(&mut s);
    hostile(&s);
}

fn parity(s: &mut Serve) {
    let id = create(s, &approval("acme", DIGEST_A));
    let alice = s.token("approver", "acme", "alice");
    let out = s.cli(&alice, &["approvals", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains(&id) && text.contains("left"), "{text}");
    let out = s.cli(&alice, &["approvals", "approve", &id, "--comment", "fine"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&s.cli(&alice, &["approvals", "list"]).stdout).into_owned();
    assert!(text.contains("decided in"), "{text}");

    // Agents: the budgets of the policy, rate limit and "no decision records".
    let gw = s.token("gateway", "*", "edge-1");
    let (st, v) = s.post(
        "/v1/budgets/lease",
        Some(&gw),
        &json!({"tenant": "default", "agent": "research-agent", "day": support::control::today(), "want_usd": 2.0}),
    );
    assert_eq!(st, 200, "{v}");
    let viewer = s.token("viewer", "*", "vic");
    let text = String::from_utf8_lossy(&s.cli(&viewer, &["agents", "list"]).stdout).into_owned();
    assert!(
        text.contains("default/research-agent  spent $0.00 of $20.00  leases 1  rps 5/s  pending 0  verdicts: no decision records"),
        "{text}"
    );
    let root = sign_in(s, &viewer);
    let page = root.get("/dashboard/agents").body;
    assert!(
        page.contains("research-agent")
            && page.contains("$0.00 of $20.00")
            && page.contains("5 req/s")
    );
    assert!(page.contains("no decision records") && page.contains("<svg class=\"bar\""));

    // Policy: the gateway's fetch (a 304 too) marks where a revision is active.
    let (st, _) = s.get("/v1/bundles/current", Some(&gw));
    assert_eq!(st, 200);
    let text = String::from_utf8_lossy(&s.cli(&viewer, &["bundles", "list"]).stdout).into_owned();
    assert!(
        text.contains("published by service") && text.contains("active on edge-1"),
        "{text}"
    );
    let (_, list) = s.get("/v1/bundles", Some(&viewer));
    let rev = list["revisions"][0]["revision"]
        .as_i64()
        .unwrap()
        .to_string();
    let same = s.cli(&viewer, &["bundles", "diff", &rev, &rev]);
    assert_eq!(same.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&same.stdout).contains("explain the same"));
    let page = root.get("/dashboard/policy").body;
    assert!(page.contains("edge-1") && page.contains(&format!("<td>{rev}</td>")));

    // A new revision: the policies change, the service restarts and
    // publishes it; the gateway has not fetched it yet.
    let policies = s.dir.join("policies.yaml");
    let text = std::fs::read_to_string(&policies)
        .unwrap()
        .replace("daily_usd: 20, rps: 5", "daily_usd: 25, rps: 5");
    std::fs::write(&policies, text).unwrap();
    s.restart();
    let (_, list) = s.get("/v1/bundles", Some(&viewer));
    let newer = list["revisions"][0]["revision"]
        .as_i64()
        .unwrap()
        .to_string();
    assert_ne!(newer, rev);
    assert_eq!(list["revisions"][0]["active_on"], json!([]), "{list}");
    assert_eq!(list["revisions"][1]["active_on"][0]["gateway"], "edge-1");
    // A gateway told it has the bundle already (304) is on it too.
    let gw2 = s.token("gateway", "*", "edge-2");
    let not_modified = agent()
        .get(&format!("{}/v1/bundles/current", s.url))
        .set("authorization", &format!("Bearer {gw2}"))
        .set("if-none-match", "*")
        .call()
        .unwrap();
    assert_eq!(not_modified.status(), 304);
    let (_, list) = s.get("/v1/bundles", Some(&viewer));
    assert_eq!(
        list["revisions"][0]["active_on"][0]["gateway"], "edge-2",
        "{list}"
    );
    let diff = s.cli(&viewer, &["bundles", "diff", &rev, &newer]);
    assert_eq!(diff.status.code(), Some(1));
    let out = String::from_utf8_lossy(&diff.stdout);
    assert!(
        out.contains(&format!("--- revision {rev}"))
            && out.contains(&format!("+++ revision {newer}")),
        "{out}"
    );
    // The session lives in the store: it outlives the process.
    let root = Person {
        base: s.url.clone(),
        ..root
    };
    let page = root
        .get(&format!("/dashboard/policy?a={rev}&b={newer}"))
        .body;
    assert!(
        page.contains("lines changed")
            && page.contains("<span class=\"del\">-")
            && page.contains("<span class=\"add\">+"),
        "{page}"
    );

    // Audit: the same search.
    let text = String::from_utf8_lossy(
        &s.cli(&viewer, &["audit", "list", "--kind", "approval.decided"])
            .stdout,
    )
    .into_owned();
    assert!(
        text.contains(&id) && text.contains("approver:alice"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1, "{text}");
    let page = root.get("/dashboard/audit?kind=approval.decided").body;
    assert!(page.contains(&id) && page.contains("Chain intact"));
}
