//! Approvals end to end: a real Envoy with the built filter, a real
//! `aegis serve` (SQLite), a person deciding with the `aegis approvals`
//! CLI, and the recording upstream. Each test checks what the agent gets
//! (status, `x-aegis-decision`, `x-aegis-approval`, the JSON or JSON-RPC
//! body), what the upstream received (never a call before its approval,
//! an approved call exactly once), and what the control plane recorded.
//!
//! The policies: `policies/finance` (finance-agent's payments above 5000
//! need approval), the `files` MCP catalog of `policies/mcp`, and
//! `e2e/tests/fixtures/control-plane/policies` (a read and an MCP write
//! that need approval). The Envoy config is
//! `e2e/tests/fixtures/control-plane/envoy.yaml`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use aegis_e2e::blob::fresh_key;
use aegis_e2e::client::{send, Req, Resp};
use aegis_e2e::config::{Gateway, Listener};
use aegis_e2e::control::{self, ControlPlane, CpListener};
use aegis_e2e::corpus::{self, Folder, Prepared};
use aegis_e2e::repo_root;
use aegis_e2e::upstream::{EchoServer, Recorded, ECHO_HEADER};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const STRIPE: &str = "api.stripe.com";
const MCP_HOST: &str = "mcp.files.internal";
const FORM: &str = "application/x-www-form-urlencoded";
const RULE: &str = "finance-agent/stripe-payments/create_payment#0";

/// The listeners of a test gateway.
const ANSWER: usize = 0;
const HOLD: usize = 1;

/// How long the hold listener holds a call while a person decides.
const HOLD_MS: u64 = 20_000;

fn copy_yaml(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".yaml") && !name.ends_with(".cases.yaml") {
            std::fs::copy(&p, to.join(&name)).unwrap();
        }
    }
}

/// The policies of these tests in one folder: `policies/finance`, the MCP
/// catalog of `policies/mcp`, and the fixture agents.
fn policies(dir: &Path) -> PathBuf {
    let root = dir.join("cp-policies");
    copy_yaml(
        &repo_root().join("policies").join("finance"),
        &root.join("finance"),
    );
    let mcp = root.join("mcp");
    std::fs::create_dir_all(&mcp).unwrap();
    std::fs::copy(
        repo_root()
            .join("policies")
            .join("mcp")
            .join("catalog.yaml"),
        mcp.join("catalog.yaml"),
    )
    .unwrap();
    copy_yaml(
        &repo_root()
            .join("e2e")
            .join("tests")
            .join("fixtures")
            .join("control-plane")
            .join("policies"),
        &root.join("fixtures"),
    );
    root
}

/// A real control plane, a gateway whose filter calls it (one listener
/// answering at once, one holding calls), and the upstream.
struct World {
    p: Prepared,
    cp: ControlPlane,
    gw: Gateway,
    upstream: EchoServer,
    /// `aegis admin token --role approver --tenant default --subject alice`.
    alice: String,
    bob: String,
    label: &'static str,
    next: usize,
    _dir: tempfile::TempDir,
}

fn world(label: &'static str) -> Option<World> {
    let envoy = common::envoy_or_skip(label)?;
    let dir = aegis_e2e::workdir(label).unwrap();
    let root = policies(dir.path());
    let folder = Folder {
        name: "control-plane".into(),
        label: "control-plane policies".into(),
        dir: root.clone(),
        case_files: Vec::new(),
    };
    let policy_key = fresh_key(dir.path(), "policy").unwrap();
    let token_key = fresh_key(dir.path(), "tokens").unwrap();
    let p = corpus::prepare(&folder, dir.path(), &policy_key, &token_key).unwrap();
    let cp = ControlPlane::start(&dir.path().join("control"), &[root]).unwrap();
    // The gateway serves agents of tenant `default` (agents whose policy
    // names no tenant).
    let gateway = cp.token("gateway", "default", "edge-1").unwrap();
    let alice = cp.token("approver", "default", "alice").unwrap();
    let bob = cp.token("approver", "default", "bob").unwrap();
    let upstream = EchoServer::start().unwrap();
    let listener = |name: &str, hold: u64| {
        let mut overrides = serde_json::Map::new();
        overrides.insert("token".into(), gateway.clone().into());
        overrides.insert("approval_hold_ms".into(), hold.into());
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
        &[listener("answer", 0), listener("hold", HOLD_MS)],
    )
    .unwrap();
    Some(World {
        p,
        cp,
        gw,
        upstream,
        alice,
        bob,
        label,
        next: 0,
        _dir: dir,
    })
}

impl World {
    /// A request from `agent` (with its token) and its `x-request-id`.
    fn req(&mut self, agent: &str, method: &str, host: &str, path: &str, body: &str) -> Req {
        self.next += 1;
        let id = format!("{}-{}", self.label, self.next);
        let mut headers = vec![
            ("x-request-id".to_string(), id),
            (
                "authorization".into(),
                format!("Bearer {}", self.p.token(agent, None)),
            ),
        ];
        if !body.is_empty() {
            let ct = if host == MCP_HOST {
                "application/json"
            } else {
                FORM
            };
            headers.push(("content-type".into(), ct.into()));
        }
        Req {
            method: method.into(),
            authority: host.into(),
            path: path.into(),
            headers,
            body: (!body.is_empty()).then(|| body.as_bytes().to_vec()),
        }
    }

    fn payment(&mut self, amount: u32) -> Req {
        let body = format!("amount={amount}&currency=usd");
        self.req(
            "finance-agent",
            "POST",
            STRIPE,
            "/v1/payment_intents",
            &body,
        )
    }

    fn send(&self, listener: usize, req: &Req) -> Resp {
        send(self.gw.ports[listener], req).unwrap()
    }

    /// What the upstream received with `req`'s `x-request-id`.
    fn upstream_saw(&self, req: &Req) -> Vec<Recorded> {
        self.upstream.with_id(request_id(req))
    }

    /// The access-log line of `req`.
    fn log(&self, req: &Req) -> Value {
        let id = request_id(req).to_string();
        self.gw
            .envoy
            .access_log_for(std::slice::from_ref(&id), Duration::from_secs(10))
            .unwrap()
            .remove(&id)
            .unwrap()
    }

    /// Every complete request with this body the upstream received.
    fn upstream_bodies(&self, body: &str) -> usize {
        self.upstream
            .requests()
            .iter()
            .filter(|r| r.complete && r.body == body.as_bytes())
            .count()
    }
}

fn request_id(req: &Req) -> &str {
    req.headers
        .iter()
        .find(|(k, _)| k == "x-request-id")
        .map(|(_, v)| v.as_str())
        .unwrap()
}

fn with_approval(mut req: Req, id: &str) -> Req {
    req.headers.push(("x-aegis-approval".into(), id.into()));
    req
}

/// A new `x-request-id` for a retry of the same call.
fn retry(mut req: Req, n: usize) -> Req {
    for (k, v) in &mut req.headers {
        if k == "x-request-id" {
            *v = format!("{v}-retry{n}");
        }
    }
    req
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A 403 `approval_needed` with a new approval: its id, in the header and
/// the body, with the status URL of this control plane.
fn approval_needed(w: &World, resp: &Resp) -> String {
    assert_eq!(resp.status, 403, "{}", resp.text());
    assert_eq!(resp.header("x-aegis-decision"), Some("approval_needed"));
    assert!(resp.header(ECHO_HEADER).is_none(), "answered upstream");
    let j = resp.json().unwrap();
    let id = j["approval"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no `approval` in the answer: {j}"))
        .to_string();
    assert!(id.starts_with("apr_"), "{j}");
    assert_eq!(resp.header("x-aegis-approval"), Some(id.as_str()));
    assert_eq!(
        j["approval"]["url"],
        format!("{}/v1/approvals/{id}", w.cp.url())
    );
    let expires = j["approval"]["expires_at"].as_i64().unwrap();
    assert!(expires > now_unix(), "{j}");
    assert_eq!(j["decision"], "approval_needed");
    assert_eq!(j["rule"], RULE);
    let reason = j["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!(
            "approval `{id}` is pending; once it is approved, send the same call again with \
             header `x-aegis-approval: {id}`"
        )),
        "{reason}"
    );
    id
}

/// A 403 deny whose reason says `why`; the upstream never saw the call.
fn refused(w: &World, req: &Req, resp: &Resp, why: &str) {
    assert_eq!(resp.status, 403, "{}", resp.text());
    assert_eq!(resp.header("x-aegis-decision"), Some("deny"));
    let j = resp.json().unwrap();
    assert_eq!(j["decision"], "deny");
    assert_eq!(j["reason"], why, "{j}");
    assert!(w.upstream_saw(req).is_empty(), "{:?}", w.upstream_saw(req));
}

/// A call forwarded once, whole, without Aegis's own headers or the
/// agent's token.
fn forwarded_once(w: &World, req: &Req, resp: &Resp) {
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header(ECHO_HEADER), Some("1"));
    let up = w.upstream_saw(req);
    assert_eq!(up.len(), 1, "{up:?}");
    assert!(up[0].complete);
    assert_eq!(Some(&up[0].body), req.body.as_ref().or(Some(&Vec::new())));
    assert!(up[0].header("x-aegis-approval").is_none(), "{up:?}");
    assert!(up[0].header("authorization").is_none(), "{up:?}");
}

fn audit_kinds(w: &World, id: &str) -> Vec<String> {
    w.cp.audit()
        .unwrap()
        .iter()
        .filter(|e| e["subject"] == id)
        .map(|e| e["kind"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn an_approved_payment_reaches_the_upstream_exactly_once() {
    let Some(mut w) = world("cp-approve") else {
        return;
    };

    // The seed's 7,500 payment needs a person: 403 with the approval; the
    // upstream sees nothing of it (the headers are held).
    let first = w.payment(7500);
    let resp = w.send(ANSWER, &first);
    let id = approval_needed(&w, &resp);
    assert!(w.upstream_saw(&first).is_empty());
    let log = w.log(&first);
    assert_eq!(log["decision"], "approval_needed", "{log}");
    assert_eq!(log["status"], 403, "{log}");

    // The person's queue shows it, with where the call goes.
    let pending = w.cp.list(&w.alice, Some("pending")).unwrap();
    let a = pending.iter().find(|a| a["approval_id"] == id.as_str());
    let a = a.unwrap_or_else(|| panic!("{id} not pending in {pending:?}"));
    assert_eq!(
        (
            &a["tenant"],
            &a["agent"],
            &a["tool"],
            &a["action"],
            &a["rule"]
        ),
        (
            &json!("default"),
            &json!("finance-agent"),
            &json!("stripe-payments"),
            &json!("create_payment"),
            &json!(RULE)
        )
    );
    assert_eq!(a["summary"]["host"], STRIPE);
    assert_eq!(a["summary"]["path"], "/v1/payment_intents");
    assert_eq!(a["summary"]["request_id"], request_id(&first));
    assert_eq!(
        a["summary"]["params"],
        json!({"amount": "7500", "currency": "usd"})
    );

    // Retried before anyone decided: still pending, same approval.
    let early = with_approval(retry(first.clone(), 1), &id);
    let resp = w.send(ANSWER, &early);
    assert_eq!(resp.status, 403, "{}", resp.text());
    assert_eq!(resp.header("x-aegis-decision"), Some("approval_needed"));
    let j = resp.json().unwrap();
    assert!(
        j["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("approval `{id}` is pending")),
        "{j}"
    );
    assert!(w.upstream_saw(&early).is_empty());

    // Alice approves it from her terminal.
    let decided = w.cp.approve(&w.alice, &id, Some("invoice 1042")).unwrap();
    assert_eq!(decided["status"], "approved", "{decided}");
    assert_eq!(decided["decided_by"], "alice", "{decided}");

    // The id on another amount is another call: refused, and the approval
    // is not used up by it.
    let other = with_approval(w.payment(7600), &id);
    let resp = w.send(ANSWER, &other);
    refused(
        &w,
        &other,
        &resp,
        &format!("approval `{id}` cannot be used: it was given for a different call"),
    );

    // The retry of the same call goes through, once.
    let again = with_approval(retry(first.clone(), 2), &id);
    let resp = w.send(ANSWER, &again);
    forwarded_once(&w, &again, &resp);
    assert_eq!(resp.body, b"amount=7500&currency=usd");
    let log = w.log(&again);
    assert_eq!(log["decision"], "allow", "{log}");
    assert_eq!(
        log["reason"],
        format!("allowed by rule `{RULE}`, approved by `alice` (approval `{id}`)"),
        "{log}"
    );
    assert_eq!(log["status"], 200, "{log}");
    assert_eq!(w.upstream_bodies("amount=7500&currency=usd"), 1);

    // A second retry with the same id is refused and never goes upstream.
    let twice = with_approval(retry(first.clone(), 3), &id);
    let resp = w.send(ANSWER, &twice);
    refused(
        &w,
        &twice,
        &resp,
        &format!("approval `{id}` cannot be used: it was already used"),
    );
    assert_eq!(w.upstream_bodies("amount=7500&currency=usd"), 1);

    // A denied approval: the agent is told who and why.
    let big = w.payment(9000);
    let resp = w.send(ANSWER, &big);
    let denied_id = approval_needed(&w, &resp);
    assert_ne!(denied_id, id);
    let decided =
        w.cp.deny(&w.bob, &denied_id, Some("over the quarter's cap"))
            .unwrap();
    assert_eq!(decided["status"], "denied", "{decided}");
    let big_retry = with_approval(retry(big, 1), &denied_id);
    let resp = w.send(ANSWER, &big_retry);
    refused(
        &w,
        &big_retry,
        &resp,
        &format!("approval `{denied_id}` was denied by `bob`: over the quarter's cap"),
    );
    assert_eq!(w.upstream_bodies("amount=9000&currency=usd"), 0);

    // The control plane's record: used once, by the gateway, and the
    // refusals audited.
    let redeemed = w.cp.list(&w.alice, Some("redeemed")).unwrap();
    let a = redeemed.iter().find(|a| a["approval_id"] == id.as_str());
    let a = a.unwrap_or_else(|| panic!("{id} not redeemed in {redeemed:?}"));
    assert_eq!(a["decided_by"], "alice");
    assert!(a["redeemed_at"].as_i64().is_some(), "{a}");
    let kinds = audit_kinds(&w, &id);
    assert_eq!(
        kinds,
        [
            "approval.created",
            "approval.redeem_refused",
            "approval.decided",
            "approval.redeem_refused",
            "approval.redeemed",
            "approval.redeem_refused"
        ],
        "audit of {id}"
    );
    let events = w.cp.audit().unwrap();
    let used = events
        .iter()
        .find(|e| e["subject"] == id.as_str() && e["kind"] == "approval.redeemed")
        .unwrap();
    assert_eq!(used["actor"], "gateway:edge-1", "{used}");
}

#[test]
fn a_held_payment_goes_on_the_moment_a_person_approves() {
    let Some(mut w) = world("cp-hold") else {
        return;
    };
    let req = w.payment(7700);
    let port = w.gw.ports[HOLD];
    let agent = {
        let req = req.clone();
        std::thread::spawn(move || {
            let t = Instant::now();
            let resp = send(port, &req);
            (resp, t.elapsed())
        })
    };
    // The approval appears in the queue while the call is held.
    let rid = request_id(&req).to_string();
    let a =
        w.cp.wait_for_approval(&w.alice, Duration::from_secs(15), |a| {
            a["summary"]["request_id"] == rid.as_str()
        })
        .unwrap()
        .expect("no approval for the held call");
    assert_eq!(a["status"], "pending");
    assert!(
        w.upstream_saw(&req).is_empty(),
        "a held call reached the upstream before its approval"
    );
    assert!(!agent.is_finished(), "the held call was answered early");
    let id = a["approval_id"].as_str().unwrap().to_string();
    w.cp.approve(&w.alice, &id, None).unwrap();

    let (resp, waited) = agent.join().unwrap();
    let resp = resp.unwrap();
    forwarded_once(&w, &req, &resp);
    eprintln!("cp-hold: the agent's held call took {waited:?} (approved by the CLI meanwhile)");
    let log = w.log(&req);
    assert_eq!(
        log["reason"],
        format!("allowed by rule `{RULE}`, approved by `alice` (approval `{id}`)"),
        "{log}"
    );
    assert_eq!(audit_kinds(&w, &id).last().unwrap(), "approval.redeemed");

    // Held and denied: answered with who and why.
    let req = w.payment(7800);
    let agent = {
        let req = req.clone();
        std::thread::spawn(move || send(port, &req))
    };
    let rid = request_id(&req).to_string();
    let a =
        w.cp.wait_for_approval(&w.bob, Duration::from_secs(15), |a| {
            a["summary"]["request_id"] == rid.as_str()
        })
        .unwrap()
        .expect("no approval for the held call");
    let id = a["approval_id"].as_str().unwrap().to_string();
    w.cp.deny(&w.bob, &id, Some("not this vendor")).unwrap();
    let resp = agent.join().unwrap().unwrap();
    refused(
        &w,
        &req,
        &resp,
        &format!("approval `{id}` was denied by `bob`: not this vendor"),
    );
}

/// A write refused because the control plane could not be asked.
fn unavailable(w: &World, req: &Req, resp: &Resp) -> String {
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert_eq!(resp.header("x-aegis-decision"), Some("deny"));
    let j = resp.json().unwrap();
    let reason = j["reason"].as_str().unwrap().to_string();
    assert!(
        reason.starts_with("the approval could not be checked with the aegis control plane ("),
        "{reason}"
    );
    assert!(
        reason.ends_with("calls that write are refused until it answers"),
        "{reason}"
    );
    assert!(w.upstream_saw(req).is_empty());
    reason
}

/// A read let through because the control plane could not be asked.
fn failed_open(w: &World, req: &Req, resp: &Resp) -> String {
    forwarded_once(w, req, resp);
    let log = w.log(req);
    assert_eq!(log["decision"], "allow", "{log}");
    let reason = log["reason"].as_str().unwrap().to_string();
    assert!(
        reason.starts_with("allowed without the approval check: the aegis control plane failed ("),
        "{reason}"
    );
    reason
}

#[test]
fn when_the_control_plane_fails_writes_are_refused_and_reads_go_on() {
    let Some(mut w) = world("cp-faults") else {
        return;
    };
    let read = |w: &mut World| w.req("support-agent", "GET", STRIPE, "/v1/customers/cus_4242", "");

    // Up: the read needs a person like any call.
    let r = read(&mut w);
    let resp = w.send(ANSWER, &r);
    assert_eq!(resp.status, 403, "{}", resp.text());
    assert_eq!(resp.header("x-aegis-decision"), Some("approval_needed"));
    assert!(w.upstream_saw(&r).is_empty());
    // An approval asked for before the faults below.
    let before = w.payment(7500);
    let resp = w.send(ANSWER, &before);
    let kept = approval_needed(&w, &resp);

    // Paused (SIGSTOP): connections are accepted, nothing is answered.
    w.cp.pause().unwrap();
    let write = w.payment(7900);
    let t = Instant::now();
    let resp = w.send(ANSWER, &write);
    let write_took = t.elapsed();
    let why = unavailable(&w, &write, &resp);
    assert!(why.contains("(it did not answer in time)"), "{why}");
    let r = read(&mut w);
    let t = Instant::now();
    let resp = w.send(ANSWER, &r);
    let read_took = t.elapsed();
    let why_read = failed_open(&w, &r, &resp);
    eprintln!(
        "cp-faults: paused control plane (timeout_ms 300): the write was refused after \
         {write_took:?} ({why}), the read forwarded after {read_took:?} ({why_read})"
    );
    w.cp.resume().unwrap();
    // What the service does, once continued, with the calls Envoy gave up
    // on: reported, not asserted.
    let rid = request_id(&write).to_string();
    let late =
        w.cp.wait_for_approval(&w.alice, Duration::from_secs(2), |a| {
            a["summary"]["request_id"] == rid.as_str()
        })
        .unwrap();
    eprintln!(
        "cp-faults: after SIGCONT the service {} an approval for the write refused while it \
         was stopped",
        if late.is_some() {
            "created"
        } else {
            "did not create"
        }
    );

    // Killed (SIGKILL): nothing listens.
    w.cp.kill().unwrap();
    let write = w.payment(7900);
    let t = Instant::now();
    let resp = w.send(ANSWER, &write);
    let write_took = t.elapsed();
    let why = unavailable(&w, &write, &resp);
    // Envoy answers a call it could not connect with its own 503: that is
    // no answer from the control plane, and the reason must not say the
    // control plane answered.
    assert!(
        why.contains("(no answer: the connection failed or was reset)"),
        "{why}"
    );
    let r = read(&mut w);
    let resp = w.send(ANSWER, &r);
    let why_read = failed_open(&w, &r, &resp);
    assert!(
        why_read.contains("(no answer: the connection failed or was reset)"),
        "{why_read}"
    );
    eprintln!(
        "cp-faults: killed control plane: the write was refused after {write_took:?} \
         ({why}); the read: {why_read}"
    );
    assert_eq!(w.upstream_bodies("amount=7900&currency=usd"), 0);

    // Restarted on the same store and port: the approval asked for before
    // the kill is still there, can be approved and redeemed.
    w.cp.restart().unwrap();
    let pending = w.cp.list(&w.alice, Some("pending")).unwrap();
    assert!(
        pending.iter().any(|a| a["approval_id"] == kept.as_str()),
        "{kept} lost in the restart: {pending:?}"
    );
    w.cp.approve(&w.alice, &kept, None).unwrap();
    let again = with_approval(retry(before, 1), &kept);
    let resp = w.send(ANSWER, &again);
    forwarded_once(&w, &again, &resp);
    assert_eq!(w.upstream_bodies("amount=7500&currency=usd"), 1);

    // And a new call is asked about again, not failed.
    let fresh = w.payment(7950);
    let resp = w.send(ANSWER, &fresh);
    approval_needed(&w, &resp);
}

/// A JSON-RPC `tools/call` of `files`.
fn tools_call(id: u64, name: &str, arguments: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": name, "arguments": arguments}})
    .to_string()
}

#[test]
fn an_mcp_tool_call_that_needs_approval_is_a_tool_error_with_the_approval() {
    let Some(mut w) = world("cp-mcp") else {
        return;
    };
    let session = ("mcp-session-id".to_string(), "session-1".to_string());
    let args = json!({"path": "/workspace/notes.md", "content": "ship it"});
    let mut write = w.req(
        "mcp-agent",
        "POST",
        MCP_HOST,
        "/mcp",
        &tools_call(7, "write_file", args.clone()),
    );
    write.headers.push(session.clone());
    let resp = w.send(ANSWER, &write);
    // MCP's shape: HTTP 200, a JSON-RPC result for id 7 that is a tool
    // error the model reads, the approval in `_meta.aegis`.
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("x-aegis-decision"), Some("approval_needed"));
    assert!(resp.header(ECHO_HEADER).is_none());
    let j = resp.json().unwrap();
    assert_eq!(j["jsonrpc"], "2.0");
    assert_eq!(j["id"], 7);
    assert_eq!(j["result"]["isError"], true, "{j}");
    let meta = &j["result"]["_meta"]["aegis"];
    assert_eq!(meta["decision"], "approval_needed", "{j}");
    assert_eq!(meta["rule"], "mcp-agent/files/write_file#0", "{j}");
    let id = meta["approval"]["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("apr_"), "{j}");
    assert_eq!(resp.header("x-aegis-approval"), Some(id.as_str()));
    let text = j["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains(&format!("x-aegis-approval: {id}")), "{text}");
    assert!(w.upstream_saw(&write).is_empty());
    let a =
        w.cp.list(&w.alice, Some("pending"))
            .unwrap()
            .into_iter()
            .find(|a| a["approval_id"] == id.as_str())
            .unwrap();
    assert_eq!(
        (&a["tool"], &a["action"]),
        (&json!("files"), &json!("write_file"))
    );

    // The session goes on: the next call is forwarded.
    let mut read = w.req(
        "mcp-agent",
        "POST",
        MCP_HOST,
        "/mcp",
        &tools_call(8, "read_file", json!({"path": "/workspace/notes.md"})),
    );
    read.headers.push(session.clone());
    let resp = w.send(ANSWER, &read);
    forwarded_once(&w, &read, &resp);

    // Approved, the same call with a new JSON-RPC id is the same call.
    w.cp.approve(&w.alice, &id, None).unwrap();
    let mut again = w.req(
        "mcp-agent",
        "POST",
        MCP_HOST,
        "/mcp",
        &tools_call(9, "write_file", args),
    );
    again.headers.push(session);
    let again = with_approval(again, &id);
    let resp = w.send(ANSWER, &again);
    forwarded_once(&w, &again, &resp);
    assert_eq!(audit_kinds(&w, &id).last().unwrap(), "approval.redeemed");
}

#[test]
fn a_retry_before_the_decision_is_told_the_approval_again() {
    let Some(mut w) = world("cp-early") else {
        return;
    };
    let first = w.payment(7500);
    let resp = w.send(ANSWER, &first);
    let id = approval_needed(&w, &resp);
    // The agent retries with the id before anyone decided. It is still
    // waiting for the same approval, and its answer says so the way the
    // first one did: an agent that takes the id from the last answer
    // (header or body) must find it there again.
    let early = with_approval(retry(first, 1), &id);
    let resp = w.send(ANSWER, &early);
    assert!(w.upstream_saw(&early).is_empty());
    assert_eq!(approval_needed(&w, &resp), id, "{}", resp.text());
}

#[test]
fn a_held_call_is_refused_when_the_control_plane_dies_and_its_approval_survives() {
    let Some(mut w) = world("cp-held-kill") else {
        return;
    };
    let req = w.payment(8200);
    let port = w.gw.ports[HOLD];
    let agent = {
        let req = req.clone();
        std::thread::spawn(move || {
            let t = Instant::now();
            (send(port, &req), t.elapsed())
        })
    };
    let rid = request_id(&req).to_string();
    let a =
        w.cp.wait_for_approval(&w.alice, Duration::from_secs(15), |a| {
            a["summary"]["request_id"] == rid.as_str()
        })
        .unwrap()
        .expect("no approval for the held call");
    let id = a["approval_id"].as_str().unwrap().to_string();
    // The long-poll the held call waits on dies with the service.
    w.cp.kill().unwrap();
    let (resp, waited) = agent.join().unwrap();
    let resp = resp.unwrap();
    let why = unavailable(&w, &req, &resp);
    assert!(
        why.contains("(no answer: the connection failed or was reset)"),
        "{why}"
    );
    eprintln!("cp-held-kill: the held call was refused {waited:?} after it was sent ({why})");

    // Restarted: the approval is still pending; approved, the retry goes
    // through once.
    w.cp.restart().unwrap();
    let pending = w.cp.list(&w.alice, Some("pending")).unwrap();
    assert!(
        pending.iter().any(|a| a["approval_id"] == id.as_str()),
        "{id} lost: {pending:?}"
    );
    w.cp.approve(&w.alice, &id, None).unwrap();
    let again = with_approval(retry(req, 1), &id);
    let resp = w.send(ANSWER, &again);
    forwarded_once(&w, &again, &resp);
    assert_eq!(w.upstream_bodies("amount=8200&currency=usd"), 1);
}
