//! The dashboard in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, driven over WebDriver), against a real `aegis serve`
//! and a real Envoy holding an agent's payment for approval.
//!
//! A person signs in with a token, sees the held call in the queue (its
//! parameters, the card number in its description masked), approves it
//! with a comment, and the agent's call completes upstream, once; the
//! decision shows in the history and the audit page. Allowed payments
//! spend the agent's daily budget, shown partly spent; a second revision
//! of the policies is diffed by an admin. A viewer
//! sees no buttons and a POST of theirs is refused; a form without the
//! CSRF token is refused; every page fits a phone's width. Screenshots of
//! each page go to `target/e2e-screenshots/` (the ones in
//! `docs/dashboard/` are copies).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use aegis_e2e::blob::fresh_key;
use aegis_e2e::client::{send, Req};
use aegis_e2e::config::Listener;
use aegis_e2e::control::{self, ControlPlane, CpListener};
use aegis_e2e::corpus::{self, Folder};
use aegis_e2e::envoy::free_ports;
use aegis_e2e::repo_root;
use aegis_e2e::upstream::{EchoServer, ECHO_HEADER};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const STRIPE: &str = "api.stripe.com";
const HOLD_MS: u64 = 30_000;
/// A test card number, form-encoded; masked, it reads as `MASKED`.
const CARD: &str = "4242+4242+4242+4242";
const MASKED: &str = "description: card [REDACTED:credit_card]";

/// chromedriver on a loopback port, in a process group of its own with
/// the browsers it starts: the whole group is killed when dropped, so a
/// failed test leaves no Chromium behind.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

fn start_driver(log: &Path) -> Driver {
    let port = free_ports(1).unwrap()[0];
    let child = Command::new(CHROMEDRIVER)
        .process_group(0)
        .arg(format!("--port={port}"))
        .arg(format!("--log-path={}", log.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start `{CHROMEDRIVER}` ({e}): apt-get install chromium chromium-driver")
        });
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    // Ready when it accepts connections on its port.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    driver
}

async fn browser(driver: &Driver, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--hide-scrollbars",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .unwrap()
}

fn shots_dir() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| repo_root().join("target"), PathBuf::from)
        .join("e2e-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(shots_dir().join(format!("{name}.png")), png).unwrap();
}

async fn source(c: &Client) -> String {
    c.source().await.unwrap()
}

/// Reloads `url` until its page contains `text`.
async fn wait_for_text(c: &Client, url: &str, text: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        c.goto(url).await.unwrap();
        let page = source(c).await;
        if page.contains(text) {
            return page;
        }
        assert!(
            Instant::now() < deadline,
            "`{text}` never appeared on {url}:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn sign_in(c: &Client, base: &str, token: &str) {
    c.goto(&format!("{base}/dashboard/approvals"))
        .await
        .unwrap();
    // Not signed in: sent to the sign-in page.
    assert!(c
        .current_url()
        .await
        .unwrap()
        .path()
        .ends_with("/dashboard/login"));
    let field = c.find(Locator::Css("input#token")).await.unwrap();
    field.send_keys(token).await.unwrap();
    c.find(Locator::Css("form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_path(c, "/dashboard/approvals", "sign-in").await;
}

async fn sign_out(c: &Client) {
    c.find(Locator::Css("header form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_path(c, "/dashboard/login", "sign-out").await;
}

/// Waits until the browser is on a page whose path ends with `path`.
async fn wait_for_path(c: &Client, path: &str, after: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !c.current_url().await.unwrap().path().ends_with(path) {
        assert!(
            Instant::now() < deadline,
            "{after} did not lead to `{path}`: {} {}",
            c.current_url().await.unwrap(),
            source(c).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Submits a form built by script (what another page, or a script that
/// got onto this one, could send), and returns the page it leads to.
async fn post_by_script(c: &Client, action: &str, fields: &[(&str, &str)]) -> String {
    let fields: Vec<Value> = fields.iter().map(|(k, v)| json!([k, v])).collect();
    c.execute(
        "const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];\
         for (const [k, v] of arguments[1]) { const i = document.createElement('input');\
         i.type = 'hidden'; i.name = k; i.value = v; f.appendChild(i); }\
         document.body.appendChild(f); f.submit();",
        vec![json!(action), json!(fields)],
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let title = c.title().await.unwrap();
        if title.starts_with("Error") {
            return source(c).await;
        }
        assert!(
            Instant::now() < deadline,
            "the posted form led to no error page: {title}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether the page is wider than the window (a horizontal scroll).
async fn overflows(c: &Client) -> (i64, i64) {
    let v = c
        .execute(
            "return [document.documentElement.scrollWidth, document.documentElement.clientWidth];",
            vec![],
        )
        .await
        .unwrap();
    (v[0].as_i64().unwrap(), v[1].as_i64().unwrap())
}

/// The finance policies, the seed agent given a daily budget its allowed
/// payments spend from (the agents page shows it partly spent).
fn policies(dir: &Path) -> PathBuf {
    let root = dir.join("dash-policies");
    std::fs::create_dir_all(&root).unwrap();
    for e in std::fs::read_dir(repo_root().join("policies").join("finance")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".yaml") && !name.ends_with(".cases.yaml") {
            std::fs::copy(&p, root.join(&name)).unwrap();
        }
    }
    edit(
        &root,
        "agent: finance-agent\n",
        "agent: finance-agent\nbudget: {daily_usd: 10}\n",
    );
    edit(
        &root,
        "      - create_payment\n",
        "      - create_payment\n    cost_usd: 1.5\n",
    );
    root
}

/// Replaces `from` by `to` in the seed policy.
fn edit(root: &Path, from: &str, to: &str) {
    let path = root.join("seed.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "no `{from}` in {text}");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

/// A payment with a card number in its description: what a person sees of
/// it is masked.
fn payment(p: &corpus::Prepared, id: &str, amount: u32) -> Req {
    Req::form_post(
        STRIPE,
        "/v1/payment_intents",
        id,
        &p.token("finance-agent", None),
        &format!("amount={amount}&currency=usd&description=card+{CARD}"),
    )
}

#[test]
fn a_person_approves_a_held_call_in_the_browser() {
    let Some(envoy) = common::envoy_or_skip("dashboard") else {
        return;
    };
    let dir = aegis_e2e::workdir("dashboard").unwrap();
    let root = policies(dir.path());
    let folder = Folder {
        name: "dashboard".into(),
        label: "dashboard policies".into(),
        dir: root.clone(),
        case_files: Vec::new(),
    };
    let policy_key = fresh_key(dir.path(), "policy").unwrap();
    let token_key = fresh_key(dir.path(), "tokens").unwrap();
    let p = corpus::prepare(&folder, dir.path(), &policy_key, &token_key).unwrap();
    let mut cp =
        ControlPlane::start(&dir.path().join("control"), std::slice::from_ref(&root)).unwrap();
    let gateway = cp.token("gateway", "default", "edge-1").unwrap();
    let alice = cp.token("approver", "default", "alice").unwrap();
    let vic = cp.token("viewer", "default", "vic").unwrap();
    let admin = cp.token("admin", "*", "root").unwrap();
    let upstream = EchoServer::start().unwrap();
    let listener = |name: &str, hold: u64| {
        let mut overrides = serde_json::Map::new();
        overrides.insert("token".into(), gateway.clone().into());
        overrides.insert("approval_hold_ms".into(), hold.into());
        // Polls `/v1/bundles/current`: the policy page shows the gateway.
        overrides.insert("bundle_poll_ms".into(), 1000.into());
        // A lease per call, settled soon: the agents page shows what was
        // spent, nothing left reserved.
        overrides.insert("lease_calls".into(), 1.into());
        overrides.insert("settle_ms".into(), 200.into());
        CpListener {
            listener: Listener {
                name: name.into(),
                blob: p.built.path.clone(),
                trusted_key: p.built.trusted_key.clone(),
                max_body_bytes: None,
                filter_state: None,
            },
            control_plane: overrides,
        }
    };
    let gw = control::start_gateway(
        &envoy,
        dir.path(),
        upstream.port(),
        cp.port(),
        &[listener("hold", HOLD_MS), listener("answer", 0)],
    )
    .unwrap();
    let (hold_port, answer_port) = (gw.ports[0], gw.ports[1]);
    let base = cp.url();
    let driver = start_driver(&dir.path().join("chromedriver.log"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let profile = dir.path().join("chromium-profile");

    rt.block_on(async {
        let c = browser(&driver, &profile).await;
        c.set_window_size(1280, 900).await.unwrap();
        c.goto(&format!("{base}/dashboard/login")).await.unwrap();
        shot(&c, "login").await;
        sign_in(&c, &base, &alice).await;

        // The agent's $7,700 payment is held in Envoy while a person decides.
        let req = payment(&p, "dash-held-1", 7700);
        let held = {
            let req = req.clone();
            std::thread::spawn(move || send(hold_port, &req))
        };
        let page = wait_for_text(
            &c,
            &format!("{base}/dashboard/approvals"),
            "dash-held-1",
            Duration::from_secs(20),
        )
        .await;
        assert!(page.contains("Pending (1)"), "{page}");
        // The call: where it goes, the amount, the card masked.
        assert!(
            page.contains("finance-agent")
                && page.contains("POST api.stripe.com /v1/payment_intents")
                && page.contains("amount: 7700")
                && page.contains(MASKED)
                && page.contains("request id dash-held-1"),
            "{page}"
        );
        assert!(!page.contains("4242"), "{page}");
        assert!(
            upstream.with_id("dash-held-1").is_empty(),
            "reached the upstream before its approval"
        );
        // The countdown runs (the page's one script).
        let countdown = c.find(Locator::Css("time[data-expires]")).await.unwrap();
        let first = countdown.text().await.unwrap();
        assert!(first.ends_with('s') || first.ends_with('m'), "{first}");
        shot(&c, "approvals").await;

        // Approve with a comment. The label names the box: clicking it
        // puts the focus there, where the typing goes.
        c.find(Locator::Css("article form label"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let focused = c.active_element().await.unwrap();
        assert_eq!(
            focused.attr("name").await.unwrap().as_deref(),
            Some("comment")
        );
        focused.send_keys("vendor checked by phone").await.unwrap();
        c.find(Locator::Css("article button[value=approve]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !source(&c)
            .await
            .contains("Approved: the held call goes on.")
        {
            assert!(Instant::now() < deadline, "no confirmation after approving");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let url = c.current_url().await.unwrap();
        let id = url
            .path()
            .strip_prefix("/dashboard/approvals/")
            .unwrap()
            .to_owned();
        let page = source(&c).await;
        assert!(
            page.contains("amount: 7700") && page.contains(MASKED),
            "{page}"
        );
        assert!(!page.contains("4242"), "{page}");
        shot(&c, "approval").await;

        // The agent's call completes upstream, once, with the upstream's answer.
        let resp = held.join().unwrap().unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.header(ECHO_HEADER), Some("1"));
        let up = upstream.with_id("dash-held-1");
        assert_eq!(up.len(), 1, "{up:?}");
        assert_eq!(Some(&up[0].body), req.body.as_ref());

        // History: who, the comment, time to decision; the audit page.
        let page = wait_for_text(
            &c,
            &format!("{base}/dashboard/approvals"),
            "redeemed",
            Duration::from_secs(10),
        )
        .await;
        assert!(page.contains("Pending (0)"), "{page}");
        assert!(
            page.contains(&id)
                && page.contains("vendor checked by phone")
                && page.contains("alice")
        );
        shot(&c, "history").await;
        c.goto(&format!("{base}/dashboard/audit?search={id}"))
            .await
            .unwrap();
        let page = source(&c).await;
        assert!(page.contains("Chain intact"), "{page}");
        for kind in ["approval.created", "approval.decided", "approval.redeemed"] {
            assert!(page.contains(kind), "{kind}: {page}");
        }
        c.goto(&format!("{base}/dashboard/audit")).await.unwrap();
        shot(&c, "audit").await;

        // Three payments under the ceiling go through and spend the
        // agent's budget: the agents page shows it partly spent once the
        // gateway settled.
        for n in 1..=3 {
            let resp = send(answer_port, &payment(&p, &format!("dash-paid-{n}"), 1200)).unwrap();
            assert_eq!(resp.status, 200, "{}", resp.text());
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let (page, spent) = loop {
            c.goto(&format!("{base}/dashboard/agents")).await.unwrap();
            let page = source(&c).await;
            let card = page
                .split("<h2>finance-agent</h2>")
                .nth(1)
                .and_then(|t| t.split("</article>").next())
                .unwrap_or_default()
                .to_owned();
            let spent = card
                .split("Spend today: $")
                .nth(1)
                .and_then(|t| t.split(' ').next())
                .and_then(|t| t.parse::<f64>().ok())
                .unwrap_or(0.0);
            if spent >= 4.5 && card.contains("of $10.00 ($0.00 reserved)") {
                assert!(card.contains("<svg class=\"bar\""), "{card}");
                break (page, spent);
            }
            assert!(
                Instant::now() < deadline,
                "the agents page never showed $4.50 spent, nothing reserved:\n{page}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert!(spent < 10.0, "{spent}: {page}");
        shot(&c, "agents").await;

        // A second revision raises the ceiling; someone with a token for
        // all tenants sees what changed.
        edit(&root, "max_amount: 5000", "max_amount: 6000");
        cp.restart().unwrap();
        sign_out(&c).await;
        sign_in(&c, &base, &admin).await;
        let page = wait_for_text(
            &c,
            &format!("{base}/dashboard/policy"),
            "edge-1",
            Duration::from_secs(10),
        )
        .await;
        assert!(
            page.contains("lines changed")
                && page.contains("<span class=\"del\">-")
                && page.contains("<span class=\"add\">+")
                && page.contains("6000"),
            "{page}"
        );
        // Tall enough to show the revisions and the changed rule.
        c.set_window_size(1280, 1500).await.unwrap();
        shot(&c, "policy").await;
        c.set_window_size(1280, 900).await.unwrap();

        // A second payment, answered at once with a pending approval.
        let second = send(answer_port, &payment(&p, "dash-answer-1", 7800)).unwrap();
        assert_eq!(second.status, 403, "{}", second.text());
        let pending = second.header("x-aegis-approval").unwrap().to_owned();
        let records = cp.audit().unwrap().len();

        // A form without the CSRF token is refused and records nothing.
        c.goto(&format!("{base}/dashboard/approvals/{pending}"))
            .await
            .unwrap();
        let page = post_by_script(
            &c,
            &format!("/dashboard/approvals/{pending}/decision"),
            &[("decision", "approve"), ("comment", "forged")],
        )
        .await;
        assert!(page.contains("security token"), "{page}");
        assert_eq!(cp.audit().unwrap().len(), records);
        let shown = cp
            .cli_json(&alice, &["approvals", "show", &pending])
            .unwrap();
        assert_eq!(shown["status"], "pending");

        // A viewer sees no buttons; a POST of theirs, with their own token, is refused.
        c.goto(&format!("{base}/dashboard/approvals"))
            .await
            .unwrap();
        sign_out(&c).await;
        sign_in(&c, &base, &vic).await;
        c.goto(&format!("{base}/dashboard/approvals/{pending}"))
            .await
            .unwrap();
        let page = source(&c).await;
        assert!(page.contains(&pending), "{page}");
        assert!(c
            .find_all(Locator::Css("button[name=decision]"))
            .await
            .unwrap()
            .is_empty());
        assert!(c
            .find_all(Locator::Css("textarea"))
            .await
            .unwrap()
            .is_empty());
        shot(&c, "viewer").await;
        let csrf = c
            .find(Locator::Css("header input[name=csrf]"))
            .await
            .unwrap()
            .attr("value")
            .await
            .unwrap()
            .unwrap();
        let records = cp.audit().unwrap().len();
        let page = post_by_script(
            &c,
            &format!("/dashboard/approvals/{pending}/decision"),
            &[("decision", "approve"), ("csrf", &csrf)],
        )
        .await;
        assert!(page.contains("needs the role approver"), "{page}");
        assert_eq!(cp.audit().unwrap().len(), records);

        // A phone's width: no page scrolls sideways.
        c.set_window_size(390, 844).await.unwrap();
        for (path, name) in [
            ("/dashboard/approvals".to_owned(), "phone-approvals"),
            (format!("/dashboard/approvals/{pending}"), "phone-approval"),
            ("/dashboard/agents".to_owned(), "phone-agents"),
            ("/dashboard/policy".to_owned(), "phone-policy"),
            ("/dashboard/audit".to_owned(), "phone-audit"),
        ] {
            c.goto(&format!("{base}{path}")).await.unwrap();
            let (scroll, client) = overflows(&c).await;
            assert!(
                scroll <= client,
                "{path} is {scroll}px wide in a {client}px window"
            );
            shot(&c, name).await;
        }
        c.close().await.unwrap();
    });
    drop(gw);
}
