//! The built filter under wasmtime calling a real `aegis serve` on
//! loopback: approvals created, approved by a person with the CLI and
//! redeemed once; a day's budget spent through leases shared by the worker
//! VMs of one proxy, then 429; writes refused and free calls unaffected
//! when the control plane is gone. The same stages as the Envoy tests
//! (`e2e/tests/control_plane.rs`), through the host calls Envoy makes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use aegis_e2e::control::{ControlPlane, CLUSTER};
use aegis_host_tests::policy::{self, Issuer};
use aegis_host_tests::{Host, HttpRequest, Outcome, PluginOptions};
use std::net::SocketAddr;
use std::path::PathBuf;

const CATALOG: &str = r#"
kind: ToolCatalog
tools:
  - name: pay
    hosts: [pay.example.com]
    body: form
    actions:
      - {name: pay, method: POST, path: /v1/pay}
      - {name: balance, method: GET, path: /v1/balance}
"#;

/// `payer` pays up to 5000 without asking (1 USD a call, 3 USD a day);
/// above that a person must approve. Reading the balance is free.
const AGENTS: &str = r#"
agent: payer
egress: {allow_hosts: [pay.example.com]}
budget: {daily_usd: 3}
allowed_tools:
  - name: pay
    actions: [pay]
    cost_usd: 1
    conditions:
      max_amount: 5000
      approval_needed: true
  - name: pay
    actions: [balance]
"#;

struct Setup {
    _dir: tempfile::TempDir,
    cp: ControlPlane,
    host: Host,
    issuer: Issuer,
    gateway: String,
    approver: String,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let policies: PathBuf = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(policies.join("catalog.yaml"), CATALOG).unwrap();
    std::fs::write(policies.join("agents.yaml"), AGENTS).unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[policies]).unwrap();
    let mut p =
        policy::load_sources(&[("catalog.yaml", CATALOG), ("agents.yaml", AGENTS)]).unwrap();
    let (issuer, _) = Issuer::trusted_by(&mut p).unwrap();
    let built = policy::build_blob(&p, &policy::new_key()).unwrap();
    let host = Host::new(&built.wasm).unwrap();
    let gateway = cp.token("gateway", "*", "gw-host-tests").unwrap();
    let approver = cp.token("approver", "default", "alice").unwrap();
    Setup {
        _dir: dir,
        cp,
        host,
        issuer,
        gateway,
        approver,
    }
}

impl Setup {
    fn options(&self) -> PluginOptions {
        let config = serde_json::json!({
            "control_plane": {
                "cluster": CLUSTER,
                "token": self.gateway,
                "timeout_ms": 5000,
                "bundle_poll_ms": 0,
                "lease_calls": 2,
            }
        });
        let addr: SocketAddr = format!("127.0.0.1:{}", self.cp.port()).parse().unwrap();
        PluginOptions::new(&config.to_string()).cluster(CLUSTER, addr)
    }

    fn pay(&self, amount: u32, approval: Option<&str>) -> (HttpRequest, Vec<u8>) {
        self.pay_with(&format!("amount={amount}&currency=usd"), approval)
    }

    fn pay_with(&self, body: &str, approval: Option<&str>) -> (HttpRequest, Vec<u8>) {
        let body = body.as_bytes().to_vec();
        let token = self.issuer.token("payer", None, common::now_unix());
        let mut r = HttpRequest::new("POST", "https://pay.example.com/v1/pay")
            .header("authorization", &format!("Bearer {token}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("content-length", &body.len().to_string());
        if let Some(id) = approval {
            r = r.header("x-aegis-approval", id);
        }
        (r, body)
    }

    fn balance(&self) -> HttpRequest {
        let token = self.issuer.token("payer", None, common::now_unix());
        HttpRequest::new("GET", "https://pay.example.com/v1/balance")
            .header("authorization", &format!("Bearer {token}"))
    }
}

fn local(o: &Outcome) -> (u32, serde_json::Value) {
    let r = o.local_response.as_ref().expect("a local reply");
    (r.status, r.json())
}

fn lease_calls(o: &Outcome) -> usize {
    o.calls
        .iter()
        .filter(|c| {
            c.headers
                .iter()
                .any(|(k, v)| k == ":path" && v == "/v1/budgets/lease")
        })
        .count()
}

#[test]
fn an_approved_payment_goes_once_then_the_budget_runs_out() {
    let s = setup();
    let mut vm = s.host.plugin_with(s.options()).unwrap();

    // 7,500 needs a person: the agent is told which approval to wait for.
    // The memo holds a card number (the agent has no DLP of its own).
    let big = "amount=7500&currency=usd&memo=card+4111+1111+1111+1111";
    let (req, body) = s.pay_with(big, None);
    let o = vm.request(&req, &[&body]).unwrap();
    let (status, j) = local(&o);
    assert_eq!(status, 403, "{j}");
    assert_eq!(j["decision"], "approval_needed");
    let id = j["approval"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        o.local_response
            .as_ref()
            .unwrap()
            .header("x-aegis-approval"),
        Some(id.as_str())
    );
    assert!(!o.forwarded);
    // What the person sees of the call: its parameters, the card number
    // masked.
    let shown =
        s.cp.cli_json(&s.approver, &["approvals", "show", &id])
            .unwrap();
    assert_eq!(
        shown["summary"]["params"],
        serde_json::json!({
            "amount": "7500", "currency": "usd", "memo": "card [REDACTED:credit_card]"
        }),
        "{shown}"
    );

    // A person approves it with the CLI. The id is good for that call
    // only: another amount is another call, refused.
    s.cp.approve(&s.approver, &id, Some("checked")).unwrap();
    let (req, body) = s.pay(7600, Some(&id));
    let o = vm.request(&req, &[&body]).unwrap();
    let (status, j) = local(&o);
    assert_eq!((status, j["decision"].as_str()), (403, Some("deny")));
    assert!(
        j["reason"].as_str().unwrap().contains("different call"),
        "{j}"
    );
    // The retry of the approved call goes upstream.
    let (req, body) = s.pay_with(big, Some(&id));
    let o = vm.request(&req, &[&body]).unwrap();
    assert!(o.forwarded, "{:?}", o.local_response);
    assert_eq!(o.forwarded_header("x-aegis-approval"), None);
    assert_eq!(o.property("aegis_approver").as_deref(), Some("alice"));
    assert_eq!(o.property("aegis_budget").as_deref(), Some("spent"));

    // Once only.
    let o = vm.request(&req, &[&body]).unwrap();
    let (status, j) = local(&o);
    assert_eq!((status, j["decision"].as_str()), (403, Some("deny")));
    assert!(
        j["reason"].as_str().unwrap().contains("already used"),
        "{j}"
    );

    // 3 USD a day at 1 USD a call: two more payments, then 429.
    let mut allowed = 1;
    let mut last = None;
    for _ in 0..5 {
        let (req, body) = s.pay(100, None);
        let o = vm.request(&req, &[&body]).unwrap();
        if o.forwarded {
            allowed += 1;
        } else {
            last = Some(o);
            break;
        }
    }
    assert_eq!(allowed, 3);
    let o = last.unwrap();
    let (status, j) = local(&o);
    assert_eq!(status, 429, "{j}");
    assert_eq!(j["decision"], "deny");
    assert_eq!(
        j["reason"],
        "the agent's daily budget of 3 USD is spent; it resets at 00:00 UTC"
    );
    let retry: u64 = o
        .local_response
        .as_ref()
        .unwrap()
        .header("retry-after")
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=86_400).contains(&retry));
    // A free call still goes, and never calls out.
    let o = vm.request(&s.balance(), &[]).unwrap();
    assert!(o.forwarded);
    assert!(o.calls.is_empty());
}

#[test]
fn the_worker_vms_of_one_proxy_share_a_lease() {
    let s = setup();
    let process = s.host.process();
    let mut vms = [
        process.plugin_with(s.options()).unwrap(),
        process.plugin_with(s.options()).unwrap(),
    ];
    let (mut allowed, mut leases) = (0, 0);
    for i in 0..8 {
        let (req, body) = s.pay(100, None);
        let o = vms[i % 2].request(&req, &[&body]).unwrap();
        leases += lease_calls(&o);
        if o.forwarded {
            allowed += 1;
        } else {
            assert_eq!(local(&o).0, 429);
        }
    }
    assert_eq!(allowed, 3, "exactly the day's budget, across both VMs");
    // Leases of 2 calls each: the second VM spends what the first leased,
    // and once the day is spent the next calls are refused in the proxy.
    assert!(leases <= 3, "{leases} lease calls for 8 calls");
}

#[test]
fn without_the_control_plane_writes_are_refused_and_free_reads_go() {
    let mut s = setup();
    let mut vm = s.host.plugin_with(s.options()).unwrap();
    s.cp.kill().unwrap();
    let (req, body) = s.pay(100, None);
    let o = vm.request(&req, &[&body]).unwrap();
    let (status, j) = local(&o);
    assert_eq!(status, 503, "{j}");
    assert!(
        j["reason"]
            .as_str()
            .unwrap()
            .starts_with("the budget could not be checked with the aegis control plane"),
        "{j}"
    );
    let o = vm.request(&s.balance(), &[]).unwrap();
    assert!(o.forwarded);
}

/// Hot reload through the host's ticks: a newer revision published to the
/// control plane, signed by the key the filter trusts, is fetched by the
/// tick and judges the next request; the poll after that is a 304.
#[test]
fn a_newer_bundle_published_is_in_force_after_the_tick() {
    let dir = tempfile::tempdir().unwrap();
    let key = policy::new_key();
    let pubfile = dir.path().join("release.pub");
    std::fs::write(&pubfile, policy::public_key_b64(&key)).unwrap();
    let trust = ["--trust".to_string(), pubfile.display().to_string()];
    let cp = ControlPlane::start_with(&dir.path().join("cp"), &[], &trust, None).unwrap();
    let admin = cp.token("admin", "*", "release").unwrap();
    let gateway = cp.token("gateway", "*", "gw").unwrap();

    let mut first =
        policy::load_sources(&[("catalog.yaml", CATALOG), ("agents.yaml", AGENTS)]).unwrap();
    first.version = "reload-1".into();
    let (issuer, _) = Issuer::trusted_by(&mut first).unwrap();
    let built = policy::build_blob(&first, &key).unwrap();
    let host = Host::new(&built.wasm).unwrap();
    let config = serde_json::json!({
        "trusted_keys": [policy::public_key_b64(&key)],
        "control_plane": {"cluster": CLUSTER, "token": gateway, "timeout_ms": 5000, "bundle_poll_ms": 1000},
    });
    let addr: SocketAddr = format!("127.0.0.1:{}", cp.port()).parse().unwrap();
    let mut vm = host
        .plugin_with(PluginOptions::new(&config.to_string()).cluster(CLUSTER, addr))
        .unwrap();
    assert!(vm.tick_period_ms() > 0, "the filter asks for ticks to poll");

    // The release pipeline publishes revision 5 of the next version.
    // The same policy and identity, a new version.
    let mut second = first.clone();
    second.version = "reload-2".into();
    let bundle = aegis_compiler::package::blob::signed_bundle(&second, &key, 5)
        .unwrap()
        .0;
    let file = dir.path().join("reload-2.bundle");
    std::fs::write(&file, bundle).unwrap();
    let out = cp
        .run(&[
            "publish",
            file.to_str().unwrap(),
            "--server",
            &cp.url(),
            "--token",
            &admin,
        ])
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let token = issuer.token("payer", None, common::now_unix());
    let balance = HttpRequest::new("GET", "https://pay.example.com/v1/balance")
        .header("authorization", &format!("Bearer {token}"));
    let before = vm.request(&balance, &[]).unwrap();
    assert_eq!(
        before.property("aegis_policy_version").as_deref(),
        Some("reload-1")
    );

    let tick = vm.tick().unwrap();
    let poll = tick
        .calls
        .iter()
        .find(|c| {
            c.headers
                .iter()
                .any(|(k, v)| k == ":path" && v == "/v1/bundles/current")
        })
        .expect("the tick polls the control plane");
    assert!(poll.response.is_some());
    let after = vm.request(&balance, &[]).unwrap();
    assert_eq!(
        after.property("aegis_policy_version").as_deref(),
        Some("reload-2")
    );
    assert!(after.forwarded);
}
