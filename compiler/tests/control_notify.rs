//! Approval notifications of a real `aegis serve --notify`: a
//! Slack-compatible server on loopback receives `chat.postMessage` and
//! `chat.update` and the test clicks the buttons with interactions signed
//! as Slack signs them; a Teams Workflows receiver gets an Adaptive Card;
//! a generic webhook receiver checks the signature, fails on purpose and
//! never answers; two replicas on one PostgreSQL deliver each
//! notification once.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::expect_used,
    clippy::panic
)]

mod support;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use support::control::{approval, Serve, AEGIS, DIGEST_A, DIGEST_B};

const BOT_TOKEN: &str = "xoxb-test-bot-token";
const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const WEBHOOK_SECRET: &str = "whsec-test";
const PUBLIC_URL: &str = "https://aegis.example.com";
/// Slack user ids mapped to approvers in the test configurations.
const ALICE: &str = "U024BE7LH";
const GINA: &str = "U0GLOBEX1";

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Hit {
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Hit {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// How a receiver answers its `n`th request (from 0).
enum Reply {
    Answer(u16, String),
    /// Waits for the test's go on the receiver's gate, then answers 200.
    Held,
    /// `429 Too Many Requests` with `Retry-After` (seconds).
    Throttle(u64),
}

type Script = Box<dyn Fn(&Hit, usize) -> Reply + Send + Sync>;

/// A small HTTP/1.1 server on loopback that records every request and
/// answers as its script says.
struct Receiver {
    url: String,
    hits: Arc<Mutex<Vec<Hit>>>,
    /// Held requests allowed to answer, and the wake-up for them.
    gate: Arc<(Mutex<usize>, Condvar)>,
    /// Requests answered so far.
    answered: Arc<Mutex<usize>>,
}

impl Receiver {
    fn start(script: Script) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(Mutex::new(Vec::new()));
        let answered = Arc::new(Mutex::new(0));
        let gate = Arc::new((Mutex::new(0), Condvar::new()));
        let script = Arc::new(script);
        let (h, a, g) = (hits.clone(), answered.clone(), gate.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (h, a, g, script) = (h.clone(), a.clone(), g.clone(), script.clone());
                std::thread::spawn(move || serve_one(stream, &h, &a, &g, &*script));
            }
        });
        Receiver {
            url,
            hits,
            gate,
            answered,
        }
    }

    /// Slack's Web API (`/api/...`) and response URLs (`/actions/...`).
    fn slack() -> Receiver {
        Receiver::start(Box::new(|hit, n| {
            let body = match hit.path.as_str() {
                "/api/chat.postMessage" => {
                    let channel = hit.json()["channel"].clone();
                    json!({"ok": true, "channel": channel, "ts": format!("1700000000.{n:06}"),
                           "message": {"type": "message"}})
                    .to_string()
                }
                "/api/chat.update" => {
                    let v = hit.json();
                    json!({"ok": true, "channel": v["channel"], "ts": v["ts"]}).to_string()
                }
                _ => "ok".to_owned(),
            };
            Reply::Answer(200, body)
        }))
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Waits (up to 30 s) for a request to `path` matching `pred`.
    fn wait_for(&self, path: &str, pred: impl Fn(&Hit) -> bool) -> Hit {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(h) = self.hits().into_iter().find(|h| h.path == path && pred(h)) {
                return h;
            }
            assert!(
                Instant::now() < deadline,
                "no request to {path} in time; got {:?}",
                self.hits()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Lets one held request answer.
    fn release(&self) {
        let (permits, wake) = &*self.gate;
        *permits.lock().unwrap() += 1;
        wake.notify_all();
    }

    fn answered(&self) -> usize {
        *self.answered.lock().unwrap()
    }
}

fn serve_one(
    stream: TcpStream,
    hits: &Mutex<Vec<Hit>>,
    answered: &Mutex<usize>,
    gate: &(Mutex<usize>, Condvar),
    script: &(dyn Fn(&Hit, usize) -> Reply + Send + Sync),
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split(' ').nth(1).unwrap_or("").to_owned();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        let hit = Hit {
            path,
            headers,
            body: String::from_utf8(body).unwrap(),
        };
        let n = {
            let mut h = hits.lock().unwrap();
            h.push(hit.clone());
            h.len() - 1
        };
        let mut extra = String::new();
        let (status, body) = match script(&hit, n) {
            Reply::Answer(s, b) => (s, b),
            Reply::Throttle(secs) => {
                extra = format!("retry-after: {secs}\r\n");
                (429, String::new())
            }
            Reply::Held => {
                let (permits, wake) = gate;
                let mut p = permits.lock().unwrap();
                while *p == 0 {
                    p = wake.wait(p).unwrap();
                }
                *p -= 1;
                (200, "{}".to_owned())
            }
        };
        let mut w = &stream;
        let head = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\n\r\n",
            body.len()
        );
        if w.write_all(head.as_bytes()).is_err() || w.write_all(body.as_bytes()).is_err() {
            return;
        }
        *answered.lock().unwrap() += 1;
    }
}

fn secret_file(dir: &Path, name: &str, value: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, format!("{value}\n")).unwrap();
    p.display().to_string()
}

/// Starts `aegis serve --notify` with `config` (YAML) on SQLite in `dir`.
fn serve(dir: &Path, config: &str) -> Serve {
    let path = dir.join("notify.yaml");
    std::fs::write(&path, config).unwrap();
    let db = format!("sqlite://{}", dir.join("aegis.db").display());
    Serve::start(
        &db,
        dir,
        &[
            "--notify",
            path.to_str().unwrap(),
            "--public-url",
            PUBLIC_URL,
        ],
    )
}

fn hmac_hex(key: &[u8], parts: &[&[u8]]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for p in parts {
        mac.update(p);
    }
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `application/x-www-form-urlencoded` of one value.
fn form_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(b as char);
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn now_secs() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// A `block_actions` payload as Slack sends it for a click on `action_id`
/// by `user` on the message `posted`.
fn click(user: &str, action_id: &str, id: &str, posted: &Value, response_url: &str) -> String {
    let payload = json!({
        "type": "block_actions",
        "user": {"id": user, "username": "someone", "name": "someone", "team_id": "T0ACME"},
        "api_app_id": "A0AEGIS",
        "token": "legacy-verification-token",
        "container": {"type": "message", "message_ts": "1700000000.000000",
                      "channel_id": posted["channel"], "is_ephemeral": false},
        "trigger_id": "1234567890.0987654321.abcdef",
        "team": {"id": "T0ACME", "domain": "acme"},
        "enterprise": null,
        "is_enterprise_install": false,
        "channel": {"id": posted["channel"], "name": "approvals"},
        "message": {"type": "message", "text": posted["text"], "blocks": posted["blocks"],
                    "ts": "1700000000.000000", "bot_id": "B0AEGIS"},
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [{"action_id": action_id, "block_id": "aegis_decision",
                     "text": {"type": "plain_text", "text": "Approve", "emoji": true},
                     "value": id, "style": "primary", "type": "button",
                     "action_ts": "1700000001.000200"}],
    });
    format!("payload={}", form_encode(&payload.to_string()))
}

/// POSTs an interaction with Slack's headers: timestamp `ts`, signed with
/// `secret`.
fn send_signed(s: &Serve, body: &str, ts: i64, secret: &str) -> (u16, String) {
    let sig = format!(
        "v0={}",
        hmac_hex(
            secret.as_bytes(),
            &[b"v0:", ts.to_string().as_bytes(), b":", body.as_bytes()]
        )
    );
    send_raw(s, body, &ts.to_string(), &sig)
}

fn send_raw(s: &Serve, body: &str, ts: &str, sig: &str) -> (u16, String) {
    let res = support::control::agent()
        .post(&format!("{}/slack/interactions", s.url))
        .set("content-type", "application/x-www-form-urlencoded")
        .set("x-slack-request-timestamp", ts)
        .set("x-slack-signature", sig)
        .send_string(body);
    match res {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(c, r)) => (c, r.into_string().unwrap()),
        Err(e) => panic!("{e}"),
    }
}

fn status_of(s: &Serve, token: &str, id: &str) -> String {
    let (st, v) = s.get(&format!("/v1/approvals/{id}"), Some(token));
    assert_eq!(st, 200, "{v}");
    v["status"].as_str().unwrap().to_owned()
}

fn types(blocks: &Value) -> Vec<&str> {
    blocks
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["type"].as_str().unwrap())
        .collect()
}

fn slack_config(dir: &Path, api: &str) -> String {
    format!(
        r"
slack:
  api_url: {api}/api
  bot_token_file: {}
  signing_secret_file: {}
retry: {{first_ms: 100, max_ms: 400, attempts: 5}}
tenants:
  acme:
    slack:
      channel: C0123ABCD
      approvers: {{{ALICE}: alice}}
  globex:
    slack:
      channel: C0GLOBEX
      approvers: {{{GINA}: gina}}
",
        secret_file(dir, "bot.token", BOT_TOKEN),
        secret_file(dir, "signing.secret", SIGNING_SECRET),
    )
}

/// An approval as the gateway asks for one: the call's summary with its
/// parameters already masked.
fn gateway_approval(tenant: &str, digest: &str) -> Value {
    let mut a = approval(tenant, digest);
    a["summary"] = json!({"method": "POST", "host": "api.stripe.com", "path": "/v1/payment_intents",
        "request_id": "req-7500", "body_bytes": 61, "params_truncated": false,
        "params": {"amount": "7500", "currency": "usd", "description": "card [REDACTED:credit_card]"}});
    a
}

#[test]
fn slack_buttons_decide_as_the_mapped_approver_and_the_message_follows() {
    let dir = tempfile::tempdir().unwrap();
    let slack = Receiver::slack();
    let s = serve(dir.path(), &slack_config(dir.path(), &slack.url));
    let gw = s.token("gateway", "acme", "edge-acme");
    let viewer = s.token("viewer", "acme", "auditor");
    let (st, a) = s.post(
        "/v1/approvals",
        Some(&gw),
        &gateway_approval("acme", DIGEST_A),
    );
    assert_eq!(st, 201, "{a}");
    let id = a["approval_id"].as_str().unwrap().to_owned();

    // The message: the bot's token, the channel, the facts, the call as a
    // code block, the expiry as a Slack date, two buttons and the link.
    let post = slack.wait_for("/api/chat.postMessage", |h| h.body.contains(&id));
    assert_eq!(
        post.header("authorization"),
        Some(format!("Bearer {BOT_TOKEN}").as_str())
    );
    let m = post.json();
    assert_eq!(m["channel"], "C0123ABCD");
    assert!(m["text"].as_str().unwrap().contains("finance-agent"), "{m}");
    let blocks = &m["blocks"];
    assert_eq!(
        types(blocks),
        ["header", "section", "section", "section", "section", "context", "context", "actions"],
        "{m}"
    );
    let text = blocks.to_string();
    for want in [
        "acme/finance-agent",
        "stripe-payments",
        "create_payment",
        "finance-agent/stripe-payments/create_payment#0",
        "must be a number &lt;= 5000",
        "<!date^",
    ] {
        assert!(text.contains(want), "{want} not in {text}");
    }
    // The call: where it goes, its parameters as masked by the gateway,
    // the request id and size in small text.
    assert_eq!(
        blocks[3]["text"]["text"],
        "*Call*\n`POST api.stripe.com /v1/payment_intents`"
    );
    assert_eq!(
        blocks[4]["text"]["text"],
        "```amount: 7500\ncurrency: usd\ndescription: card [REDACTED:credit_card]```"
    );
    assert_eq!(
        blocks[5]["elements"][0]["text"],
        "request id req-7500 · 61 bytes"
    );
    let buttons = blocks[7]["elements"].as_array().unwrap();
    let ids: Vec<&str> = buttons
        .iter()
        .map(|b| b["action_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["aegis_approve", "aegis_deny", "aegis_open"]);
    assert_eq!(buttons[0]["value"], id.as_str());
    assert_eq!(buttons[0]["style"], "primary");
    assert_eq!(buttons[1]["value"], id.as_str());
    assert_eq!(buttons[1]["style"], "danger");
    assert_eq!(
        buttons[2]["url"],
        format!("{PUBLIC_URL}/dashboard/approvals/{id}")
    );
    let posted = json!({"channel": "C0123ABCD", "text": m["text"], "blocks": m["blocks"]});
    let response_url = format!("{}/actions/T0ACME/1/secret", slack.url);
    let now = now_secs();
    let audit_before = s.audit_len();

    // A forged click: signed with another secret.
    let body = click(ALICE, "aegis_approve", &id, &posted, &response_url);
    let (st, e) = send_signed(&s, &body, now, "not-the-secret");
    assert_eq!(st, 401, "{e}");
    assert!(e.contains("does not verify"), "{e}");
    // No signature at all, or not in Slack's form.
    assert_eq!(send_raw(&s, &body, &now.to_string(), "").0, 401);
    assert_eq!(send_raw(&s, &body, &now.to_string(), "v1=abcd").0, 401);
    // A genuine click from 10 minutes ago.
    let (st, e) = send_signed(&s, &body, now - 600, SIGNING_SECRET);
    assert_eq!(st, 401, "{e}");
    assert!(e.contains("5 minutes"), "{e}");
    assert_eq!(status_of(&s, &viewer, &id), "pending");

    // A Slack user no one mapped: told why, nothing recorded.
    let stranger = click("U0STRANGER", "aegis_approve", &id, &posted, &response_url);
    let (st, _) = send_signed(&s, &stranger, now, SIGNING_SECRET);
    assert_eq!(st, 200);
    let told = slack.wait_for("/actions/T0ACME/1/secret", |h| {
        h.body.contains("U0STRANGER")
    });
    let told = told.json();
    assert_eq!(told["response_type"], "ephemeral");
    assert!(
        told["text"]
            .as_str()
            .unwrap()
            .contains("not an approver of tenant `acme`"),
        "{told}"
    );
    assert_eq!(status_of(&s, &viewer, &id), "pending");
    // The same request again, byte for byte: a replay.
    let (st, e) = send_signed(&s, &stranger, now, SIGNING_SECRET);
    assert_eq!(st, 401, "{e}");
    assert!(e.contains("already received"), "{e}");
    // An approver of another tenant.
    let gina = click(GINA, "aegis_approve", &id, &posted, &response_url);
    let (st, _) = send_signed(&s, &gina, now, SIGNING_SECRET);
    assert_eq!(st, 200);
    slack.wait_for("/actions/T0ACME/1/secret", |h| h.body.contains(GINA));
    assert_eq!(status_of(&s, &viewer, &id), "pending");
    assert_eq!(s.audit_len(), audit_before, "no refused click is recorded");

    // Alice's click decides.
    let alice = click(ALICE, "aegis_approve", &id, &posted, &response_url);
    let at = now_secs();
    let (st, _) = send_signed(&s, &alice, at, SIGNING_SECRET);
    assert_eq!(st, 200);
    let out = s.cli(&viewer, &["approvals", "show", &id]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(shown.contains(": approved"), "{shown}");
    assert!(shown.contains("decided by alice"), "{shown}");
    // The audit record names the approver and the Slack user who clicked.
    let (_, ev) = s.get(
        &format!("/v1/audit?kind=approval.decided&subject={id}"),
        Some(&s.admin),
    );
    assert_eq!(ev["events"][0]["actor"], "approver:alice", "{ev}");
    assert_eq!(
        ev["events"][0]["data"]["via"],
        format!("slack:{ALICE}"),
        "{ev}"
    );
    // The message says so, without its buttons.
    let update = slack.wait_for("/api/chat.update", |h| h.body.contains(&id));
    assert_eq!(
        update.header("authorization"),
        Some(format!("Bearer {BOT_TOKEN}").as_str())
    );
    let u = update.json();
    assert_eq!(u["channel"], "C0123ABCD");
    assert_eq!(u["ts"], post_ts(&slack, &id));
    assert!(!types(&u["blocks"]).contains(&"actions"), "{u}");
    assert_eq!(u["blocks"][0]["text"]["text"], "Approved");
    assert!(
        u["blocks"]
            .to_string()
            .contains("Approved by *alice* <!date^"),
        "{u}"
    );
    // Replaying Alice's click is refused; a second click is told it is
    // decided already.
    let (st, _) = send_signed(&s, &alice, at, SIGNING_SECRET);
    assert_eq!(st, 401);
    let (st, _) = send_signed(&s, &alice, at + 1, SIGNING_SECRET);
    assert_eq!(st, 200, "a new timestamp is a new request");
    slack.wait_for("/actions/T0ACME/1/secret", |h| {
        h.body.contains("already approved")
    });

    // A decision from the CLI updates its message too.
    let (_, b) = s.post("/v1/approvals", Some(&gw), &approval("acme", DIGEST_B));
    let idb = b["approval_id"].as_str().unwrap().to_owned();
    slack.wait_for("/api/chat.postMessage", |h| h.body.contains(&idb));
    let bob = s.token("approver", "acme", "bob");
    let out = s.cli(
        &bob,
        &["approvals", "deny", &idb, "--comment", "not this month"],
    );
    assert!(out.status.success(), "{out:?}");
    let u = slack
        .wait_for("/api/chat.update", |h| h.body.contains(&idb))
        .json();
    assert_eq!(u["ts"], post_ts(&slack, &idb));
    assert_eq!(u["blocks"][0]["text"]["text"], "Denied");
    let text = u["blocks"].to_string();
    assert!(
        text.contains("Denied by *bob*") && text.contains("not this month"),
        "{text}"
    );

    // Every notification went out once (the last one is recorded just
    // after Slack answered).
    let all = poll(|| {
        let all = notifications(&s, &viewer, "");
        all.iter()
            .all(|n| n["status"] == "delivered")
            .then_some(all)
    });
    assert_eq!(all.len(), 4, "{all:?}");
    assert!(
        all.iter()
            .all(|n| n["attempts"] == 1 && n["channel"] == "slack"),
        "{all:?}"
    );
}

/// The `ts` Slack answered the post of approval `id` with.
fn post_ts(slack: &Receiver, id: &str) -> String {
    let hits = slack.hits();
    let (n, _) = hits
        .iter()
        .enumerate()
        .find(|(_, h)| h.path == "/api/chat.postMessage" && h.body.contains(id))
        .unwrap();
    format!("1700000000.{n:06}")
}

#[test]
fn an_approval_expired_undecided_updates_its_slack_message() {
    let dir = tempfile::tempdir().unwrap();
    let slack = Receiver::slack();
    let path = dir.path().join("notify.yaml");
    std::fs::write(&path, slack_config(dir.path(), &slack.url)).unwrap();
    let db = format!("sqlite://{}", dir.path().join("aegis.db").display());
    let s = Serve::start(
        &db,
        dir.path(),
        &[
            "--notify",
            path.to_str().unwrap(),
            "--public-url",
            PUBLIC_URL,
            "--approval-ttl",
            "2s",
        ],
    );
    let gw = s.token("gateway", "acme", "edge-acme");
    let (st, a) = s.post(
        "/v1/approvals",
        Some(&gw),
        &gateway_approval("acme", DIGEST_A),
    );
    assert_eq!(st, 201, "{a}");
    let id = a["approval_id"].as_str().unwrap().to_owned();
    slack.wait_for("/api/chat.postMessage", |h| h.body.contains(&id));

    // Nobody decides, nobody reads it: the service notices the expiry
    // and the message says so, without its buttons.
    let u = slack
        .wait_for("/api/chat.update", |h| h.body.contains(&id))
        .json();
    assert_eq!(u["ts"], post_ts(&slack, &id));
    assert_eq!(u["blocks"][0]["text"]["text"], "Expired");
    assert!(!types(&u["blocks"]).contains(&"actions"), "{u}");
    let text = u["blocks"].to_string();
    assert!(
        text.contains("not decided") && !text.contains("aegis_approve"),
        "{text}"
    );
    let viewer = s.token("viewer", "acme", "auditor");
    let (_, shown) = s.get(&format!("/v1/approvals/{id}"), Some(&viewer));
    assert_eq!(shown["status"], "expired", "{shown}");
    let (_, audit) = s.get("/v1/audit", Some(&s.admin));
    let expired = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "approval.expired" && e["subject"] == id.as_str())
        .count();
    assert_eq!(expired, 1, "{audit}");
}

#[test]
fn teams_gets_an_adaptive_card_and_slack_webhooks_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let r = Receiver::start(Box::new(|_, _| Reply::Answer(202, String::new())));
    let teams_url = format!("{}/workflows/abc/triggers/manual/run?sig=s3cret", r.url);
    let slack_url = format!("{}/services/T0/B0/XYZ", r.url);
    let config = format!(
        r"
tenants:
  acme:
    teams:
      webhook_url_file: {}
    slack:
      webhook_url_file: {}
",
        secret_file(dir.path(), "teams.url", &teams_url),
        secret_file(dir.path(), "slack.url", &slack_url),
    );
    let s = serve(dir.path(), &config);
    let gw = s.token("gateway", "acme", "edge-acme");
    let (st, a) = s.post(
        "/v1/approvals",
        Some(&gw),
        &gateway_approval("acme", DIGEST_A),
    );
    assert_eq!(st, 201, "{a}");
    let id = a["approval_id"].as_str().unwrap().to_owned();
    let link = format!("{PUBLIC_URL}/dashboard/approvals/{id}");

    let card = r
        .wait_for("/workflows/abc/triggers/manual/run?sig=s3cret", |_| true)
        .json();
    assert_eq!(card["type"], "message");
    let attachment = &card["attachments"][0];
    assert_eq!(
        attachment["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let c = &attachment["content"];
    assert_eq!(c["type"], "AdaptiveCard");
    assert_eq!(c["version"], "1.4");
    assert_eq!(
        c["$schema"],
        "http://adaptivecards.io/schemas/adaptive-card.json"
    );
    for b in c["body"].as_array().unwrap() {
        assert!(
            ["TextBlock", "FactSet"].contains(&b["type"].as_str().unwrap()),
            "{b}"
        );
    }
    let facts = c["body"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "FactSet")
        .unwrap()["facts"]
        .as_array()
        .unwrap()
        .clone();
    let titles: Vec<&str> = facts.iter().map(|f| f["title"].as_str().unwrap()).collect();
    assert_eq!(
        titles,
        ["Agent", "Tool", "Action", "Rule", "Reason", "Expires", "Approval"]
    );
    let texts: Vec<&str> = c["body"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["text"].as_str())
        .collect();
    assert_eq!(
        texts[texts.len() - 3..],
        [
            "POST api.stripe.com /v1/payment_intents",
            "amount: 7500\ncurrency: usd\ndescription: card [REDACTED:credit_card]",
            "request id req-7500 · 61 bytes"
        ],
        "{c}"
    );
    assert_eq!(c["actions"][0]["type"], "Action.OpenUrl");
    assert_eq!(c["actions"][0]["url"], link.as_str());

    let m = r.wait_for("/services/T0/B0/XYZ", |_| true).json();
    let actions = m["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "actions")
        .unwrap()
        .clone();
    let els = actions["elements"].as_array().unwrap();
    assert_eq!(els.len(), 1, "a webhook message has no buttons: {m}");
    assert_eq!(els[0]["url"], link.as_str());

    // Delivered, and the Teams URL (a secret) is not shown.
    let admin = s.admin.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    let v = loop {
        let (_, v) = s.get("/v1/notifications?status=delivered", Some(&admin));
        if v["notifications"].as_array().unwrap().len() == 2 {
            break v;
        }
        assert!(Instant::now() < deadline, "{v}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!v.to_string().contains("s3cret"), "{v}");
}

#[test]
fn throttled_teams_deliveries_wait_as_long_as_asked() {
    let dir = tempfile::tempdir().unwrap();
    let r = Receiver::start(Box::new(|_, _| Reply::Throttle(120)));
    let config = format!(
        "retry: {{first_ms: 100, max_ms: 1000, attempts: 5}}\ntenants:\n  acme:\n    teams:\n      webhook_url_file: {}\n",
        secret_file(dir.path(), "teams.url", &format!("{}/workflows/w?sig=x", r.url)),
    );
    let s = serve(dir.path(), &config);
    let gw = s.token("gateway", "acme", "edge-acme");
    let (st, a) = s.post("/v1/approvals", Some(&gw), &approval("acme", DIGEST_A));
    assert_eq!(st, 201, "{a}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let n = loop {
        let n = notifications(&s, &s.admin, "?status=retrying");
        if !n.is_empty() {
            break n[0].clone();
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(n["attempts"], 1, "{n}");
    assert_eq!(n["last_error"], "answered HTTP 429");
    // Two minutes, as Teams asked, not the 100 ms backoff.
    let wait = n["next_attempt_at"].as_i64().unwrap() - n["created_at"].as_i64().unwrap();
    assert!(wait >= 120, "{n}");
    assert_eq!(r.hits().len(), 1);
}

#[test]
fn a_slack_error_is_retried_and_shown_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    // The bot was not invited to the channel: Slack answers 200 with
    // `ok: false` and the error.
    let slack = Receiver::start(Box::new(|_, _| {
        Reply::Answer(
            200,
            json!({"ok": false, "error": "not_in_channel"}).to_string(),
        )
    }));
    let s = serve(dir.path(), &slack_config(dir.path(), &slack.url));
    let gw = s.token("gateway", "acme", "edge-acme");
    let (st, a) = s.post("/v1/approvals", Some(&gw), &approval("acme", DIGEST_A));
    assert_eq!(st, 201, "{a}");
    // Five attempts, then it stays failed, with Slack's reason.
    let n = poll(|| {
        let n = notifications(&s, &s.admin, "?status=failed");
        (!n.is_empty()).then(|| n[0].clone())
    });
    assert_eq!(n["attempts"], 5, "{n}");
    assert_eq!(n["last_error"], "slack chat.postMessage: not_in_channel");
    assert_eq!(slack.hits().len(), 5);
    let out = s.cli(&s.admin, &["notifications", "list", "--status", "failed"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("not_in_channel"),
        "{out:?}"
    );
    let m = poll(|| {
        let (_, m) = s.get("/metrics", None);
        let m = m.as_str().unwrap().to_owned();
        m.contains("aegis_notifications_total{channel=\"slack\",outcome=\"failed\"} 1")
            .then_some(m)
    });
    assert!(
        m.contains("aegis_notifications_total{channel=\"slack\",outcome=\"retry\"} 4"),
        "{m}"
    );
}

/// The webhook's signature as a receiver checks it (docs/control-plane.md).
fn verify_webhook(h: &Hit, secret: &str) -> bool {
    let sig = h.header("x-aegis-signature").unwrap();
    let (t, v1) = sig
        .split_once(',')
        .map(|(t, v)| {
            (
                t.strip_prefix("t=").unwrap(),
                v.strip_prefix("v1=").unwrap(),
            )
        })
        .unwrap();
    let fresh = (now_secs() - t.parse::<i64>().unwrap()).abs() <= 300;
    fresh && hmac_hex(secret.as_bytes(), &[t.as_bytes(), b".", h.body.as_bytes()]) == v1
}

fn webhook_config(dir: &Path, url: &str, timeout_ms: u64) -> String {
    format!(
        r"
retry: {{first_ms: 100, max_ms: 200, attempts: 6}}
timeout_ms: {timeout_ms}
tenants:
  acme:
    webhooks:
      - url: {url}
        secret_file: {}
",
        secret_file(dir, "webhook.secret", WEBHOOK_SECRET)
    )
}

/// Polls `f` (up to 30 s) until it gives something.
fn poll<T>(f: impl Fn() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "not in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn notifications(s: &Serve, token: &str, query: &str) -> Vec<Value> {
    let (st, v) = s.get(&format!("/v1/notifications{query}"), Some(token));
    assert_eq!(st, 200, "{v}");
    v["notifications"].as_array().unwrap().clone()
}

#[test]
fn webhooks_are_signed_and_retried_until_delivered() {
    let dir = tempfile::tempdir().unwrap();
    // 500 twice, then the third attempt waits for the test, then 200s.
    let r = Receiver::start(Box::new(|_, n| match n {
        0 | 1 => Reply::Answer(500, "{}".into()),
        2 => Reply::Held,
        _ => Reply::Answer(200, "{}".into()),
    }));
    let url = format!("{}/hooks/aegis?token=t0k", r.url);
    let s = serve(dir.path(), &webhook_config(dir.path(), &url, 30_000));
    let gw = s.token("gateway", "acme", "edge-acme");
    let viewer = s.token("viewer", "acme", "auditor");
    let other = s.token("viewer", "globex", "auditor");
    let (st, a) = s.post("/v1/approvals", Some(&gw), &approval("acme", DIGEST_A));
    assert_eq!(st, 201, "{a}");
    let id = a["approval_id"].as_str().unwrap().to_owned();

    // While the receiver fails, the notification is retrying and says why.
    let deadline = Instant::now() + Duration::from_secs(30);
    while r.hits().len() < 3 {
        assert!(Instant::now() < deadline, "{:?}", r.hits());
        std::thread::sleep(Duration::from_millis(20));
    }
    let n = notifications(&s, &viewer, "?status=retrying");
    assert_eq!(n.len(), 1, "{n:?}");
    assert_eq!(n[0]["approval_id"], id.as_str());
    assert_eq!(n[0]["channel"], "webhook");
    assert_eq!(n[0]["event"], "approval.created");
    assert_eq!(n[0]["attempts"], 2);
    assert_eq!(n[0]["last_error"], "answered HTTP 500");
    assert_eq!(n[0]["target"], format!("{}/hooks/aegis", r.url));
    let out = s.cli(&viewer, &["notifications", "list", "--status", "retrying"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        listed.contains("retrying") && listed.contains("answered HTTP 500") && listed.contains(&id),
        "{listed}"
    );
    // Another tenant's viewer sees none of it.
    assert!(notifications(&s, &other, "").is_empty());
    let (st, _) = s.get("/v1/notifications?tenant=acme", Some(&other));
    assert_eq!(st, 403);
    let (st, _) = s.get("/v1/notifications?status=lost", Some(&viewer));
    assert_eq!(st, 400);

    r.release();
    let deadline = Instant::now() + Duration::from_secs(30);
    let n = loop {
        let n = notifications(&s, &viewer, "?status=delivered");
        if !n.is_empty() {
            break n;
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(n[0]["attempts"], 3, "{n:?}");
    // Three attempts of one delivery: the same id, each signed.
    let hits = r.hits();
    let delivery = hits[0].header("x-aegis-delivery").unwrap().to_owned();
    assert_eq!(delivery, n[0]["notification_id"].as_str().unwrap());
    for h in &hits {
        assert_eq!(h.header("x-aegis-delivery"), Some(delivery.as_str()));
        assert_eq!(h.header("x-aegis-event"), Some("approval.created"));
        assert!(verify_webhook(h, WEBHOOK_SECRET), "{h:?}");
        assert!(!verify_webhook(h, "another secret"));
    }
    let body = hits[2].json();
    assert_eq!(body["type"], "approval.created");
    assert_eq!(body["delivery_id"], delivery.as_str());
    assert_eq!(body["approval"]["approval_id"], id.as_str());
    assert_eq!(body["approval"]["summary"]["amount"], 7500);
    assert_eq!(
        body["approval"]["dashboard_url"],
        format!("{PUBLIC_URL}/dashboard/approvals/{id}")
    );

    // The decision goes out too.
    let alice = s.token("approver", "acme", "alice");
    let (st, _) = s.post(
        &format!("/v1/approvals/{id}/decision"),
        Some(&alice),
        &json!({"approve": false, "comment": "no"}),
    );
    assert_eq!(st, 200);
    let d = r.wait_for("/hooks/aegis?token=t0k", |h| {
        h.header("x-aegis-event") == Some("approval.decided")
    });
    assert!(verify_webhook(&d, WEBHOOK_SECRET));
    let d = d.json();
    assert_eq!(d["approval"]["status"], "denied");
    assert_eq!(d["approval"]["decided_by"], "alice");

    let delivered = "aegis_notifications_total{channel=\"webhook\",outcome=\"delivered\"} 2";
    let m = poll(|| {
        let (_, m) = s.get("/metrics", None);
        let m = m.as_str().unwrap().to_owned();
        m.contains(delivered).then_some(m)
    });
    assert!(
        m.contains("aegis_notifications_total{channel=\"webhook\",outcome=\"retry\"} 2"),
        "{m}"
    );
}

#[test]
fn a_receiver_that_never_answers_delays_no_approval_nor_decision() {
    let dir = tempfile::tempdir().unwrap();
    let r = Receiver::start(Box::new(|_, _| Reply::Held));
    let url = format!("{}/hooks/slow", r.url);
    // The delivery would wait a minute for its answer.
    let s = serve(dir.path(), &webhook_config(dir.path(), &url, 60_000));
    let gw = s.token("gateway", "acme", "edge-acme");
    let alice = s.token("approver", "acme", "alice");
    let (st, a) = s.post("/v1/approvals", Some(&gw), &approval("acme", DIGEST_A));
    assert_eq!(st, 201, "{a}");
    let id = a["approval_id"].as_str().unwrap().to_owned();
    r.wait_for("/hooks/slow", |_| true);
    // The receiver holds that request (it answers only when released);
    // meanwhile the API answers.
    let (st, b) = s.post("/v1/approvals", Some(&gw), &approval("acme", DIGEST_B));
    assert_eq!(st, 201, "{b}");
    let (st, d) = s.post(
        &format!("/v1/approvals/{id}/decision"),
        Some(&alice),
        &json!({"approve": true}),
    );
    assert_eq!(st, 200, "{d}");
    assert_eq!(d["status"], "approved");
    let (st, v) = s.get(&format!("/v1/approvals/{id}"), Some(&gw));
    assert_eq!((st, v["decided_by"].as_str()), (200, Some("alice")));
    assert_eq!(
        r.answered(),
        0,
        "all of this while the receiver held its answer"
    );
    // The other deliveries are not stuck behind the held one.
    let deadline = Instant::now() + Duration::from_secs(30);
    while r.hits().len() < 3 {
        assert!(Instant::now() < deadline, "{:?}", r.hits());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(r.answered(), 0);
}

#[test]
fn a_bad_notify_file_stops_the_start_pointing_at_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.yaml");
    let run = |yaml: &str| {
        std::fs::write(&path, yaml).unwrap();
        let out = Command::new(AEGIS)
            .args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(format!("sqlite://{}", dir.path().join("a.db").display()))
            .arg("--notify")
            .arg(&path)
            .env_remove("AEGIS_SLACK_BOT_TOKEN")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = run("tenants:\n  acme:\n    slack:\n      channel: C1\n      aprovers: {U1: a}\n");
    assert!(
        e.contains("notify.yaml:5:7: unknown field `aprovers`"),
        "{e}"
    );
    // A secret written in the file is not a key it takes.
    let e = run("slack:\n  bot_token: xoxb-1\n");
    assert!(
        e.contains("notify.yaml:2:3: unknown field `bot_token`"),
        "{e}"
    );
    let e = run("slack:\n  bot_token_env: AEGIS_SLACK_BOT_TOKEN\n");
    assert!(
        e.contains("the environment variable `AEGIS_SLACK_BOT_TOKEN` is not set"),
        "{e}"
    );
    let e = run("tenants:\n  acme:\n    webhooks:\n      - url: https://example.com/h\n");
    assert!(e.contains("needs `secret_env` or `secret_file`"), "{e}");
}

#[test]
fn two_replicas_on_postgres_deliver_each_notification_once() {
    let pg = support::postgres::TempPostgres::start().expect("PostgreSQL for the tests");
    let r = Receiver::start(Box::new(|_, _| Reply::Answer(200, "{}".into())));
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let url = format!("{}/hooks/once", r.url);
    let start = |dir: &Path| {
        let path = dir.join("notify.yaml");
        std::fs::write(&path, webhook_config(dir, &url, 10_000)).unwrap();
        Serve::start(&pg.url(), dir, &["--notify", path.to_str().unwrap()])
    };
    let a = start(d1.path());
    let b = start(d2.path());
    let gw_a = a.token("gateway", "acme", "edge-1");
    let gw_b = b.token("gateway", "acme", "edge-2");
    // Approvals arrive on both replicas at once, so both workers find the
    // same rows due.
    let n = 80;
    let create = |s: &Serve, gw: &str, from: usize| {
        (from..n)
            .step_by(2)
            .map(|i| {
                let digest = format!("{i:064x}");
                let (st, v) = s.post("/v1/approvals", Some(gw), &approval("acme", &digest));
                assert_eq!(st, 201, "{v}");
                v["approval_id"].as_str().unwrap().to_owned()
            })
            .collect::<Vec<_>>()
    };
    let ids: Vec<String> = std::thread::scope(|scope| {
        let on_b = scope.spawn(|| create(&b, &gw_b, 1));
        let mut ids = create(&a, &gw_a, 0);
        ids.extend(on_b.join().unwrap());
        ids
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let delivered = notifications(&a, &a.admin, "?status=delivered&limit=1000").len();
        if delivered == n {
            break;
        }
        assert!(Instant::now() < deadline, "{delivered} of {n} delivered");
        std::thread::sleep(Duration::from_millis(50));
    }
    let hits = r.hits();
    let mut deliveries: Vec<String> = hits
        .iter()
        .map(|h| h.header("x-aegis-delivery").unwrap().to_owned())
        .collect();
    deliveries.sort();
    deliveries.dedup();
    assert_eq!(deliveries.len(), n);
    assert_eq!(hits.len(), n, "each notification delivered exactly once");
    for id in &ids {
        assert_eq!(
            hits.iter().filter(|h| h.body.contains(id.as_str())).count(),
            1
        );
    }
}
