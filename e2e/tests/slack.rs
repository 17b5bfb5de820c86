//! An approval decided in Slack, end to end: a real Envoy holds the
//! agent's payment (`approval_hold_ms`) while `aegis serve --notify` posts
//! the approval to a Slack-compatible server on loopback; the test clicks
//! Approve as Slack would (a `block_actions` payload, form-encoded and
//! signed with the app's signing secret), and the held call reaches the
//! upstream, once, and the agent gets the upstream's answer. The message
//! shows the call's parameters, a card number masked, and is then updated
//! to say who approved it.
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
use aegis_e2e::repo_root;
use aegis_e2e::upstream::{EchoServer, ECHO_HEADER};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SIGNING_SECRET: &str = "e2e-signing-secret";
const BOT_TOKEN: &str = "xoxb-e2e";
/// The Slack user mapped to the approver `alice` of tenant `default`.
const ALICE: &str = "U0ALICE01";

/// A request the Slack-compatible server got: path and JSON body.
type Hit = (String, Value);

/// Answers `chat.postMessage` and `chat.update` as Slack does and records
/// every call.
fn slack_server() -> (String, Arc<Mutex<Vec<Hit>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(Mutex::new(Vec::<Hit>::new()));
    let h = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let h = h.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while r.read_line(&mut line).unwrap_or(0) > 0 {
                    let path = line.split(' ').nth(1).unwrap_or("").to_owned();
                    let mut len = 0;
                    let mut auth = String::new();
                    loop {
                        let mut hl = String::new();
                        r.read_line(&mut hl).unwrap();
                        let hl = hl.trim_end().to_owned();
                        if hl.is_empty() {
                            break;
                        }
                        let (k, v) = hl.split_once(':').unwrap();
                        match k.to_ascii_lowercase().as_str() {
                            "content-length" => len = v.trim().parse().unwrap(),
                            "authorization" => auth = v.trim().to_owned(),
                            _ => {}
                        }
                    }
                    let mut body = vec![0; len];
                    r.read_exact(&mut body).unwrap();
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    assert_eq!(auth, format!("Bearer {BOT_TOKEN}"));
                    let answer = json!({"ok": true, "channel": v["channel"],
                                        "ts": v["ts"].as_str().unwrap_or("1700000000.000100")});
                    h.lock().unwrap().push((path, v));
                    let answer = answer.to_string();
                    let mut w = &stream;
                    let _ = write!(
                        w,
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                        answer.len()
                    );
                    line.clear();
                }
            });
        }
    });
    (url, hits)
}

fn wait_for(hits: &Mutex<Vec<Hit>>, path: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((_, v)) = hits.lock().unwrap().iter().find(|(p, _)| p == path) {
            return v.clone();
        }
        assert!(Instant::now() < deadline, "no {path} from aegis serve");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// HMAC-SHA256 (RFC 2104), as Slack signs requests.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> String {
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn a_click_in_slack_releases_the_call_held_in_envoy() {
    let Some(envoy) = common::envoy_or_skip("slack") else {
        return;
    };
    let dir = aegis_e2e::workdir("slack").unwrap();
    let root = repo_root().join("policies").join("finance");
    let folder = Folder {
        name: "finance".into(),
        label: "finance policies".into(),
        dir: root.clone(),
        case_files: Vec::new(),
    };
    let policy_key = fresh_key(dir.path(), "policy").unwrap();
    let token_key = fresh_key(dir.path(), "tokens").unwrap();
    let p = corpus::prepare(&folder, dir.path(), &policy_key, &token_key).unwrap();

    let (slack_url, hits) = slack_server();
    let secret = |name: &str, v: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, v).unwrap();
        path.display().to_string()
    };
    let notify = dir.path().join("notify.yaml");
    std::fs::write(
        &notify,
        format!(
            "slack:\n  api_url: {slack_url}/api\n  bot_token_file: {}\n  signing_secret_file: {}\n\
             retry: {{first_ms: 100, max_ms: 500, attempts: 5}}\n\
             tenants:\n  default:\n    slack:\n      channel: C0APPROVALS\n      approvers: {{{ALICE}: alice}}\n",
            secret("bot.token", BOT_TOKEN),
            secret("signing.secret", SIGNING_SECRET),
        ),
    )
    .unwrap();
    let cp = ControlPlane::start_with(
        &dir.path().join("control"),
        &[root],
        &["--notify".into(), notify.display().to_string()],
        None,
    )
    .unwrap();
    let gateway = cp.token("gateway", "default", "edge-1").unwrap();
    let upstream = EchoServer::start().unwrap();
    let mut overrides = serde_json::Map::new();
    overrides.insert("token".into(), gateway.into());
    overrides.insert("approval_hold_ms".into(), 20_000.into());
    let gw = control::start_gateway(
        &envoy,
        dir.path(),
        upstream.port(),
        cp.port(),
        &[CpListener {
            listener: Listener {
                name: "hold".into(),
                blob: p.built.path.clone(),
                trusted_key: p.built.trusted_key.clone(),
                max_body_bytes: None,
                filter_state: None,
            },
            control_plane: overrides,
        }],
    )
    .unwrap();

    // The agent's $7,700 payment needs a person: Envoy holds it. Its
    // description carries a card number.
    let body = "amount=7700&currency=usd&description=card+4242+4242+4242+4242";
    let req = Req::form_post(
        "api.stripe.com",
        "/v1/payment_intents",
        "slack-1",
        &p.token("finance-agent", None),
        body,
    );
    let port = gw.ports[0];
    let agent = {
        let req = req.clone();
        std::thread::spawn(move || send(port, &req))
    };

    // Slack gets the message with the buttons.
    let m = wait_for(&hits, "/api/chat.postMessage");
    assert_eq!(m["channel"], "C0APPROVALS");
    let actions = m["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "actions")
        .unwrap()
        .clone();
    let approve = &actions["elements"][0];
    assert_eq!(approve["action_id"], "aegis_approve");
    let id = approve["value"].as_str().unwrap().to_owned();
    // The call as the filter summarised it: where it goes, then its
    // parameters in a code block, the card masked; never the card number.
    assert_eq!(
        m["blocks"][3]["text"]["text"], "*Call*\n`POST api.stripe.com /v1/payment_intents`",
        "{m}"
    );
    assert_eq!(
        m["blocks"][4]["text"]["text"],
        "```amount: 7700\ncurrency: usd\ndescription: card [REDACTED:credit_card]```",
        "{m}"
    );
    assert_eq!(
        m["blocks"][5]["elements"][0]["text"],
        format!("request id slack-1 · {} bytes", body.len()),
        "{m}"
    );
    assert!(!m.to_string().contains("4242"), "{m}");
    assert!(
        upstream.with_id("slack-1").is_empty(),
        "held, not forwarded"
    );
    assert!(
        !agent.is_finished(),
        "the call is held while no one decided"
    );

    // Alice clicks Approve.
    let payload = json!({
        "type": "block_actions",
        "user": {"id": ALICE, "username": "alice", "name": "alice", "team_id": "T0"},
        "api_app_id": "A0", "token": "legacy", "trigger_id": "1.2.3",
        "team": {"id": "T0", "domain": "acme"},
        "container": {"type": "message", "message_ts": "1700000000.000100", "channel_id": "C0APPROVALS"},
        "channel": {"id": "C0APPROVALS", "name": "approvals"},
        "message": {"type": "message", "ts": "1700000000.000100", "text": m["text"], "blocks": m["blocks"]},
        "response_url": format!("{slack_url}/actions/T0/1/x"),
        "actions": [{"action_id": "aegis_approve", "block_id": "aegis_decision", "value": id,
                     "type": "button", "style": "primary", "action_ts": "1700000001.000001",
                     "text": {"type": "plain_text", "text": "Approve"}}],
    });
    let form = format!("payload={}", form_encode(&payload.to_string()));
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let sig = hmac_sha256(
        SIGNING_SECRET.as_bytes(),
        format!("v0:{ts}:{form}").as_bytes(),
    );
    let resp = ureq::post(&format!("{}/slack/interactions", cp.url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", &ts)
        .header("x-slack-signature", &format!("v0={sig}"))
        .send(form.as_str())
        .unwrap();
    assert_eq!(resp.status(), 200);

    // The held call goes on: the upstream gets it once, the agent its answer.
    let resp = agent.join().unwrap().unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header(ECHO_HEADER), Some("1"));
    let up = upstream.with_id("slack-1");
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0].body, body.as_bytes());
    let a = cp
        .cli_json(
            &cp.token("viewer", "default", "auditor").unwrap(),
            &["approvals", "show", &id],
        )
        .unwrap();
    assert_eq!(a["decided_by"], "alice");
    assert_eq!(a["status"], "redeemed");

    // And the message says who approved it, without buttons.
    let u = wait_for(&hits, "/api/chat.update");
    assert_eq!(u["ts"], "1700000000.000100");
    assert!(
        u["blocks"].to_string().contains("Approved by *alice*"),
        "{u}"
    );
    assert!(!u["blocks"].to_string().contains("aegis_approve"), "{u}");
    assert!(
        u["blocks"].to_string().contains("[REDACTED:credit_card]")
            && !u.to_string().contains("4242"),
        "{u}"
    );
}
