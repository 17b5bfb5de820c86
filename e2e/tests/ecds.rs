//! Policy swaps through ECDS, end to end: a real Envoy started from the
//! shipped `envoy/ecds.yaml`, whose Aegis filter comes from a watched file
//! (`path_config_source`), the file written by `envoy/ecds-deliver.sh`
//! (write, then rename over the watched path), blobs built by `aegis
//! build`, the harness's echo upstream, and steady bounded load from
//! `benches/envoy/loadbench.py --load-only`.
//!
//! What it proves:
//!
//! - 50 swaps between two blobs under load, each waited for until Envoy
//!   reports it applied on every worker (`extension_config_discovery.
//!   http_filter.aegis.config_reload` up and `version_text` the delivered
//!   version): no request fails or is reset (the only answers are the
//!   upstream's 200 and the policies' 403), and every request is judged
//!   whole by one of the two policies. They differ in their marker (policy
//!   version `ecds-a` / `ecds-b`, in the access log and deny bodies), in
//!   which route they allow (`/v1/a` or `/v1/b`, decided on the headers)
//!   and in the amount limit judged on the body (100 or 200); the verdict,
//!   rule and reason of every request must be those of the policy its
//!   marker names;
//! - a request in flight across a swap finishes on the filter it started
//!   with;
//! - a blob signed by a key the resource's `trusted_keys` does not name is
//!   refused by the filter's configure step, Envoy rejects the resource
//!   (`config_fail`) and the previous policy keeps judging, also when the
//!   resource asks for `FAIL_OPEN`; a resource of another filter type (an
//!   RBAC filter with no rules, which would let everything through) is
//!   rejected too, and so is a resource naming a module that is not
//!   there; a good blob delivered next is applied;
//! - after the last swap, every request sent after Envoy reported it
//!   applied is judged by the new policy;
//! - the first configuration: with no resource file Envoy does not start;
//!   with a resource naming an untrusted blob it starts, and every request
//!   is answered 500 by Envoy (no filter configuration, response flag
//!   NFCF) without reaching the upstream, until a good blob is delivered.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use aegis_e2e::blob::{fresh_key, key_b64};
use aegis_e2e::client::{send, Req, Resp, SlowRequest};
use aegis_e2e::config;
use aegis_e2e::control::aegis_bin;
use aegis_e2e::corpus::{self, Folder, Prepared};
use aegis_e2e::envoy::{free_ports, Envoy};
use aegis_e2e::repo_root;
use aegis_e2e::upstream::EchoServer;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const AGENT: &str = "ecds-agent";
const HOST: &str = "api.ecds.example";
/// Swaps between the two policies under load.
const SWAPS: usize = 50;
/// The load: a fixed rate on a few keep-alive connections.
const RPS: u32 = 100;
const CONNECTIONS: u32 = 4;
/// How long one delivery may take to be applied (V8 compiles the new
/// module once on the main thread, about half a second here).
const APPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests the load must have sent after the last swap was applied.
const AFTER_LAST: usize = 100;
/// An amount no policy allows: a probe always gets a deny body, which
/// names the policy that judged it.
const PROBE_AMOUNT: u64 = 1_000_000;
/// The request mix: every route with amounts on both sides of both
/// limits. Each call gets a different verdict from each policy.
const CALLS: [(&str, u64); 6] = [
    ("route_a", 50),
    ("route_a", 150),
    ("route_a", 250),
    ("route_b", 50),
    ("route_b", 150),
    ("route_b", 250),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Policy {
    A,
    B,
}

impl Policy {
    /// The marker: the policy version every decision reports.
    fn version(self) -> &'static str {
        match self {
            Policy::A => "ecds-a",
            Policy::B => "ecds-b",
        }
    }

    fn from_version(v: &str) -> Option<Policy> {
        [Policy::A, Policy::B]
            .into_iter()
            .find(|p| p.version() == v)
    }

    /// The one action this policy allows.
    fn allows(self) -> &'static str {
        match self {
            Policy::A => "route_a",
            Policy::B => "route_b",
        }
    }

    fn max_amount(self) -> u64 {
        match self {
            Policy::A => 100,
            Policy::B => 200,
        }
    }

    fn other(self) -> Policy {
        match self {
            Policy::A => Policy::B,
            Policy::B => Policy::A,
        }
    }

    fn source(self) -> String {
        format!(
            "# Policy {self:?} of e2e/tests/ecds.rs.\n\
             kind: ToolCatalog\n\
             tools:\n\
             \x20 - name: marked\n\
             \x20   hosts: [{HOST}]\n\
             \x20   body: form\n\
             \x20   actions:\n\
             \x20     - name: route_a\n\
             \x20       method: POST\n\
             \x20       path: /v1/a\n\
             \x20     - name: route_b\n\
             \x20       method: POST\n\
             \x20       path: /v1/b\n\
             ---\n\
             agent: {AGENT}\n\
             allowed_tools:\n\
             \x20 - name: marked\n\
             \x20   actions: [{}]\n\
             \x20   conditions:\n\
             \x20     max_amount: {}\n",
            self.allows(),
            self.max_amount()
        )
    }

    /// What this policy answers to `action` with `amount`: the rule, and
    /// for a deny a part of the reason.
    fn verdict(self, action: &str, amount: u64) -> Verdict {
        if action != self.allows() {
            return Verdict::Deny {
                rule: None,
                reason: format!("agent may not call `{action}` on `marked`"),
            };
        }
        let rule = format!("{AGENT}/marked/{action}#0");
        if amount <= self.max_amount() {
            Verdict::Allow { rule }
        } else {
            Verdict::Deny {
                rule: Some(rule),
                reason: format!("`amount` must be a number <= {}", self.max_amount()),
            }
        }
    }
}

#[derive(Debug)]
enum Verdict {
    Allow {
        rule: String,
    },
    Deny {
        rule: Option<String>,
        reason: String,
    },
}

fn path_of(action: &str) -> &'static str {
    if action == "route_a" {
        "/v1/a"
    } else {
        "/v1/b"
    }
}

/// The two policies (and one signed by a key nobody trusts) as blobs,
/// and a token for the agent.
struct Blobs {
    prepared: Prepared,
    a: PathBuf,
    b: PathBuf,
    untrusted: PathBuf,
    /// Base64 of the release key's public half: the resource's
    /// `trusted_keys`.
    trusted_key: String,
}

impl Blobs {
    fn of(&self, p: Policy) -> &Path {
        match p {
            Policy::A => &self.a,
            Policy::B => &self.b,
        }
    }

    fn token(&self) -> String {
        self.prepared.token(AGENT, None)
    }
}

/// `aegis build` of policy `p` with the harness's identity, its policy
/// version the policy's marker.
fn build(root: &Path, identity: &Path, p: Policy, key: &str, version: &str, out: &str) -> PathBuf {
    let dir = root.join(format!("src-{out}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ecds.yaml"), p.source()).unwrap();
    std::fs::copy(identity, dir.join("identity.yaml")).unwrap();
    let blob = root.join(format!("{out}.wasm"));
    let res = Command::new(aegis_bin().unwrap())
        .arg("build")
        .arg(&dir)
        .arg("--key")
        .arg(root.join(format!("{key}.key")))
        .arg("-o")
        .arg(&blob)
        .args(["--policy-version", version])
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "aegis build {out}: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    blob
}

fn blobs(root: &Path) -> Blobs {
    let release = fresh_key(root, "release").unwrap();
    fresh_key(root, "other").unwrap();
    let token_key = fresh_key(root, "tokens").unwrap();
    // The harness's identity (tokens for the agent) comes with the copy
    // `prepare` makes.
    let src = root.join("src-identity");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("ecds.yaml"), Policy::A.source()).unwrap();
    let folder = Folder {
        name: "ecds".into(),
        label: "ecds policy A".into(),
        dir: src,
        case_files: Vec::new(),
    };
    let prepared = corpus::prepare(&folder, root, &release, &token_key).unwrap();
    let identity = root
        .join("policies")
        .join("ecds")
        .join("zz-aegis-e2e-identity.yaml");
    Blobs {
        a: build(root, &identity, Policy::A, "release", "ecds-a", "a"),
        b: build(root, &identity, Policy::B, "release", "ecds-b", "b"),
        untrusted: build(
            root,
            &identity,
            Policy::B,
            "other",
            "ecds-untrusted",
            "untrusted",
        ),
        prepared,
        trusted_key: key_b64(&release.verifying_key()),
    }
}

/// `envoy/ecds-deliver.sh BLOB DIR` as an operator runs it; the version
/// it prints.
fn deliver(dir: &Path, blob: &Path, trusted_key: &str) -> String {
    let out = Command::new("bash")
        .arg(repo_root().join("envoy").join("ecds-deliver.sh"))
        .arg(blob)
        .arg(dir)
        .env("AEGIS_TRUSTED_KEY", trusted_key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ecds-deliver.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The shipped `envoy/ecds.yaml` with the test's ports and the watched
/// folder under `dir`.
fn bootstrap(dir: &Path, admin: u16, listener: u16, upstream: u16) -> Value {
    let mut b = config::load(&repo_root().join("envoy").join("ecds.yaml")).unwrap();
    b["admin"]["address"]["socket_address"]["port_value"] = admin.into();
    let l = &mut b["static_resources"]["listeners"][0];
    l["address"]["socket_address"]["port_value"] = listener.into();
    let filters = l["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
        .as_array_mut()
        .unwrap();
    let aegis = filters.iter_mut().find(|f| f["name"] == "aegis").unwrap();
    let source = &mut aegis["config_discovery"]["config_source"]["path_config_source"];
    source["path"] = dir
        .join("ecds")
        .join("aegis.yaml")
        .display()
        .to_string()
        .into();
    source["watched_directory"]["path"] = dir.join("ecds").display().to_string().into();
    config::set_cluster_port(&mut b, "upstream", upstream).unwrap();
    b
}

/// Streams open in Envoy's listener now.
fn active_streams(envoy: &Envoy) -> u64 {
    let text = envoy
        .admin_get("/stats?filter=^http\\.aegis_egress\\.downstream_rq_active$")
        .unwrap();
    text.lines()
        .find_map(|l| l.split_once(": ").and_then(|(_, v)| v.trim().parse().ok()))
        .unwrap_or(0)
}

/// A running Envoy of `envoy/ecds.yaml` and its listener port.
struct Gateway {
    envoy: Envoy,
    port: u16,
}

fn start(envoy_bin: &Path, root: &Path, upstream: u16) -> aegis_e2e::Result<Gateway> {
    let mut last = aegis_e2e::err("not started");
    for attempt in 0..3 {
        let ports = free_ports(2)?;
        let cfg = bootstrap(&root.join("gw"), ports[0], ports[1], upstream);
        let path = root.join(format!("envoy-ecds-{attempt}.json"));
        std::fs::write(&path, cfg.to_string()).unwrap();
        match Envoy::start(envoy_bin, &path, root, ports[0]) {
            Ok(envoy) => {
                return Ok(Gateway {
                    envoy,
                    port: ports[1],
                })
            }
            Err(e) if e.0.contains("ddress already in use") => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// Envoy's ECDS counters for the filter `aegis`.
#[derive(Debug, Clone, Default)]
struct Ecds {
    version_text: String,
    config_reload: u64,
    config_fail: u64,
}

fn ecds(envoy: &Envoy) -> Ecds {
    let text = envoy
        .admin_get("/stats?filter=^extension_config_discovery\\.http_filter\\.aegis\\.")
        .unwrap();
    let mut e = Ecds::default();
    for line in text.lines() {
        let Some((name, value)) = line.split_once(": ") else {
            continue;
        };
        match name.rsplit('.').next() {
            Some("version_text") => e.version_text = value.trim_matches('"').to_string(),
            Some("config_reload") => e.config_reload = value.parse().unwrap(),
            Some("config_fail") => e.config_fail = value.parse().unwrap(),
            _ => {}
        }
    }
    e
}

/// Waits until Envoy has the resource `version` on every worker: the
/// version it accepted is that one, and `config_reload` (counted once
/// every worker has the new filter) went past `before`.
fn wait_applied(envoy: &Envoy, version: &str, before: &Ecds) -> Duration {
    let since = Instant::now();
    loop {
        let now = ecds(envoy);
        if now.version_text == version && now.config_reload > before.config_reload {
            return since.elapsed();
        }
        assert!(
            now.config_fail == before.config_fail,
            "Envoy rejected resource {version}: {now:?}; its log:\n{}",
            envoy.log_tail(20)
        );
        assert!(
            since.elapsed() < APPLY_TIMEOUT,
            "resource {version} not applied after {APPLY_TIMEOUT:?}: {now:?}; its log:\n{}",
            envoy.log_tail(20)
        );
        // Polling interval, not a wait for something to happen.
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until Envoy has rejected one more resource.
fn wait_rejected(envoy: &Envoy, before: &Ecds) -> Ecds {
    let since = Instant::now();
    loop {
        let now = ecds(envoy);
        if now.config_fail > before.config_fail {
            return now;
        }
        assert!(
            since.elapsed() < APPLY_TIMEOUT,
            "the resource was never rejected: {now:?}; its log:\n{}",
            envoy.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The module file a resource written by `ecds-deliver.sh` names.
fn module_path(resource: &str) -> String {
    let r: Value = serde_saphyr::from_str(resource).unwrap();
    r["resources"][0]["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Writes `resource` as the operator's script does: a temporary file in
/// the watched folder, renamed over the watched path.
fn write_resource(dir: &Path, resource: &str) {
    let tmp = dir.join("ecds").join(".by-hand.tmp");
    std::fs::write(&tmp, resource).unwrap();
    std::fs::rename(&tmp, dir.join("ecds").join("aegis.yaml")).unwrap();
}

fn request(token: &str, id: &str, action: &str, amount: u64) -> Req {
    Req::form_post(
        HOST,
        path_of(action),
        id,
        token,
        &format!("amount={amount}"),
    )
}

/// The policy that judges a request sent now.
fn probe(port: u16, token: &str, n: &mut usize) -> Policy {
    *n += 1;
    let resp = send(
        port,
        &request(token, &format!("probe-{n}"), "route_a", PROBE_AMOUNT),
    )
    .unwrap();
    assert_eq!(resp.status, 403, "{}", resp.text());
    let j = resp.json().unwrap();
    Policy::from_version(j["policy_version"].as_str().unwrap_or_default())
        .unwrap_or_else(|| panic!("probe judged by an unknown policy: {j}"))
}

fn epoch(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// `benches/envoy/loadbench.py --load-only`, stopped (its standard input
/// closed, then waited for) when dropped, also on a failed assert.
struct Load {
    child: Option<Child>,
    out: PathBuf,
}

impl Load {
    fn start(root: &Path, port: u16, token: &str) -> Load {
        let reqs = root.join("load-requests.jsonl");
        let mut lines = String::new();
        for (action, amount) in CALLS {
            let line = json!({
                "method": "POST",
                "path": path_of(action),
                "host": HOST,
                "headers": {
                    "authorization": format!("Bearer {token}"),
                    "content-type": "application/x-www-form-urlencoded",
                },
                "body": format!("amount={amount}"),
            });
            lines.push_str(&format!("{line}\n"));
        }
        std::fs::write(&reqs, lines).unwrap();
        let out = root.join("load.jsonl");
        let child = Command::new("python3")
            .arg(repo_root().join("benches/envoy/loadbench.py"))
            .arg("--load-only")
            .arg(format!("http://127.0.0.1:{port}"))
            .arg("--requests")
            .arg(&reqs)
            .args(["--rps", &RPS.to_string()])
            .args(["--connections", &CONNECTIONS.to_string()])
            // A cap far above what the test needs; it stops the load by
            // closing standard input.
            .args(["--seconds", "300", "--stop-on-eof"])
            .arg("--out")
            .arg(&out)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 benches/envoy/loadbench.py: {e}"));
        Load {
            child: Some(child),
            out,
        }
    }

    /// The answers written so far, in the order they came.
    fn samples(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until `pred` holds for the answers so far.
    fn wait_for(&self, what: &str, pred: impl Fn(&[Value]) -> bool) {
        let since = Instant::now();
        while !pred(&self.samples()) {
            assert!(
                since.elapsed() < Duration::from_secs(30),
                "load: {what} not seen after 30 s ({} answers)",
                self.samples().len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops sending, waits for the answers in flight; all of them.
    fn finish(mut self) -> Vec<Value> {
        self.stop();
        self.samples()
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            drop(child.stdin.take());
            let status = child.wait().unwrap();
            assert!(status.success(), "loadbench.py --load-only: {status}");
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }
}

/// Whether the load's `sample` (the answer) and its access-log `line` are
/// wholly `p`'s verdict on `action` with `amount`.
fn judged_whole(p: Policy, action: &str, amount: u64, sample: &Value, line: &Value) -> bool {
    match p.verdict(action, amount) {
        Verdict::Allow { rule } => {
            sample["status"] == 200
                && sample["upstream"] == true
                && line["decision"] == "allow"
                && line["rule"] == rule.as_str()
        }
        Verdict::Deny { rule, reason } => {
            let body: Value = sample["body"]
                .as_str()
                .and_then(|b| serde_json::from_str(b).ok())
                .unwrap_or(Value::Null);
            sample["status"] == 403
                && sample["decision"] == "deny"
                && body["policy_version"] == p.version()
                && body["rule"] == rule.as_deref().map_or(Value::Null, Value::from)
                && body["reason"].as_str().is_some_and(|r| r.contains(&reason))
                && line["decision"] == "deny"
        }
    }
}

#[test]
fn policy_swaps_through_ecds_under_load_judge_every_request_whole() {
    let Some(envoy_bin) = common::envoy_or_skip("ecds-swaps") else {
        return;
    };
    let dir = aegis_e2e::workdir("ecds").unwrap();
    let root = dir.path();
    let blobs = blobs(root);
    let gw_dir = root.join("gw");
    let upstream = EchoServer::start().unwrap();

    deliver(&gw_dir, &blobs.a, &blobs.trusted_key);
    let gw = start(&envoy_bin, root, upstream.port()).unwrap();
    let (envoy, port) = (&gw.envoy, gw.port);
    let token = blobs.token();
    let mut probes = 0;
    assert_eq!(probe(port, &token, &mut probes), Policy::A);

    // A call in flight across a swap: its headers judged by A (which
    // needs the body for the amount: the headers are held), its body sent
    // once B judges new requests. A allows it, B would deny it on the
    // headers: it must be A's whole. Before the load, so that Envoy's one
    // open stream is this call's.
    let mut slow_req = request(&token, "in-flight", "route_a", 50);
    slow_req.body = None;
    let slow = SlowRequest::start(port, &slow_req, "amount=50".len()).unwrap();
    let since = Instant::now();
    while active_streams(envoy) < 1 {
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "the call never reached Envoy"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let before = ecds(envoy);
    let version = deliver(&gw_dir, &blobs.b, &blobs.trusted_key);
    wait_applied(envoy, &version, &before);
    assert_eq!(probe(port, &token, &mut probes), Policy::B);
    let resp: Resp = slow.finish(b"amount=50").unwrap();
    assert_eq!(resp.status, 200, "in-flight call: {}", resp.text());
    let line = &envoy
        .access_log_for(&["in-flight".to_string()], Duration::from_secs(10))
        .unwrap()["in-flight"];
    assert_eq!(line["policy_version"], "ecds-a", "{line}");
    assert_eq!(line["decision"], "allow", "{line}");

    let load = Load::start(root, port, &token);
    load.wait_for("a first answer", |s| !s.is_empty());

    // 50 swaps B -> A -> B ..., each waited for until applied.
    let mut current = Policy::B;
    let mut took = Vec::with_capacity(SWAPS + 1);
    for _ in 0..SWAPS {
        let next = current.other();
        let before = ecds(envoy);
        let sent = Instant::now();
        let version = deliver(&gw_dir, blobs.of(next), &blobs.trusted_key);
        wait_applied(envoy, &version, &before);
        took.push(sent.elapsed());
        current = next;
    }
    assert_eq!(current, Policy::B);
    assert_eq!(probe(port, &token, &mut probes), Policy::B);

    // A blob signed by a key the resource does not trust: the filter's
    // configure step refuses it, Envoy rejects the resource, B stays.
    let before = ecds(envoy);
    let untrusted_version = deliver(&gw_dir, &blobs.untrusted, &blobs.trusted_key);
    let after = wait_rejected(envoy, &before);
    assert_eq!(after.version_text, before.version_text);
    assert_ne!(after.version_text, untrusted_version);
    assert!(
        envoy
            .log()
            .contains("configuration rejected: cannot use the embedded bundle: bundle is signed by a key that is not trusted"),
        "no refusal from the filter in Envoy's log:\n{}",
        envoy.log_tail(20)
    );
    assert_eq!(probe(port, &token, &mut probes), Policy::B);

    // The same blob in a resource that asks Envoy to fail open: the
    // module still fails its configure step on the main thread, and Envoy
    // rejects the resource (`failure_policy` governs a VM that fails
    // later, on a worker).
    let not_trusted = || {
        envoy
            .log()
            .matches("bundle is signed by a key that is not trusted")
            .count()
    };
    let refusals = not_trusted();
    let before = ecds(envoy);
    let refused = std::fs::read_to_string(gw_dir.join("ecds").join("aegis.yaml")).unwrap();
    assert!(refused.contains("failure_policy: FAIL_CLOSED"), "{refused}");
    let fail_open = refused
        .replace("failure_policy: FAIL_CLOSED", "failure_policy: FAIL_OPEN")
        .replace(&untrusted_version, "fail-open");
    write_resource(&gw_dir, &fail_open);
    let after = wait_rejected(envoy, &before);
    assert_eq!(after.version_text, before.version_text);
    assert!(
        not_trusted() > refusals,
        "the module did not run and refuse"
    );
    assert_eq!(probe(port, &token, &mut probes), Policy::B);

    // A resource naming a module that is not there.
    let before = ecds(envoy);
    let module = module_path(&refused);
    let missing = refused
        .replace(&module, &format!("{module}.gone"))
        .replace(&untrusted_version, "missing-module");
    write_resource(&gw_dir, &missing);
    let after = wait_rejected(envoy, &before);
    assert_eq!(after.version_text, before.version_text);
    assert!(
        envoy.log().contains(&format!(
            "config update rejected: Invalid path: {module}.gone"
        )),
        "{}",
        envoy.log_tail(10)
    );
    assert_eq!(probe(port, &token, &mut probes), Policy::B);

    // Another filter in place of Aegis (an RBAC filter without rules lets
    // everything through): not a Wasm filter, rejected by `type_urls`.
    let before = ecds(envoy);
    write_resource(
        &gw_dir,
        &json!({
            "version_info": "rbac-allow-all",
            "resources": [{
                "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
                "name": "aegis",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"}
            }]
        })
        .to_string(),
    );
    let after = wait_rejected(envoy, &before);
    assert_eq!(after.version_text, before.version_text);
    assert!(
        envoy.log().contains(
            "filter config has type URL envoy.extensions.filters.http.rbac.v3.RBAC but expect"
        ),
        "{}",
        envoy.log_tail(10)
    );
    assert_eq!(probe(port, &token, &mut probes), Policy::B);

    // A good blob after the refusals is applied.
    let before = ecds(envoy);
    let sent = Instant::now();
    let version = deliver(&gw_dir, &blobs.a, &blobs.trusted_key);
    wait_applied(envoy, &version, &before);
    let last_applied = epoch(SystemTime::now());
    took.push(sent.elapsed());
    assert_eq!(probe(port, &token, &mut probes), Policy::A);
    load.wait_for("answers to requests sent after the last swap", |s| {
        s.iter()
            .filter(|x| x["t"].as_f64().unwrap_or(0.0) > last_applied)
            .count()
            >= AFTER_LAST
    });
    let samples = load.finish();

    // Every request answered, and judged whole by one policy.
    // A request that failed may have no access-log line: it is reported
    // below with its error.
    let ids: Vec<String> = samples
        .iter()
        .filter(|s| s.get("error").is_none())
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    let lines = envoy.access_log_for(&ids, Duration::from_secs(30)).unwrap();
    let mut failures = Vec::new();
    let mut by_policy: BTreeMap<Policy, usize> = BTreeMap::new();
    let mut after_last = 0;
    for s in &samples {
        let id = s["id"].as_str().unwrap();
        if let Some(e) = s.get("error") {
            failures.push(format!("{id}: {e}"));
            continue;
        }
        let n: usize = id.rsplit('-').next().unwrap().parse().unwrap();
        let (action, amount) = CALLS[n % CALLS.len()];
        let line = &lines[id];
        let version = line["policy_version"].as_str().unwrap_or_default();
        let Some(p) = Policy::from_version(version) else {
            failures.push(format!(
                "{id}: judged by unknown policy `{version}`: {s} {line}"
            ));
            continue;
        };
        *by_policy.entry(p).or_default() += 1;
        if !judged_whole(p, action, amount, s, line) {
            failures.push(format!(
                "{id} ({action}, amount {amount}) not judged whole by policy {p:?}: {s} {line}"
            ));
        }
        if s["t"].as_f64().unwrap() > last_applied {
            after_last += 1;
            if p != Policy::A {
                failures.push(format!(
                    "{id} sent after the last swap was applied, judged by policy {p:?}"
                ));
            }
        }
    }

    let mut sorted = took.clone();
    sorted.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let end = ecds(envoy);
    eprintln!(
        "ecds: {} requests at {RPS}/s on {CONNECTIONS} connections ({probes} probes besides), \
         {} failures; judged by policy: {by_policy:?}; {} after the last swap; \
         {} swaps under load, time from delivery to applied on every worker: \
         min {:.0} ms, median {:.0} ms, max {:.0} ms; Envoy: config_reload {}, config_fail {}",
        samples.len(),
        failures.len(),
        after_last,
        took.len(),
        ms(sorted[0]),
        ms(sorted[sorted.len() / 2]),
        ms(sorted[sorted.len() - 1]),
        end.config_reload,
        end.config_fail,
    );
    assert!(
        failures.is_empty(),
        "{} of {} requests failed or were not judged whole by one policy, e.g.:\n{}",
        failures.len(),
        samples.len(),
        failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(after_last >= AFTER_LAST, "{after_last}");
    assert!(
        by_policy.len() == 2 && by_policy.values().all(|&n| n > 100),
        "the load saw {by_policy:?}"
    );
    assert_eq!(end.config_fail, 4, "{end:?}");
    // Nothing reached the upstream half sent; only allowed calls reached it.
    let reached = upstream.requests();
    assert!(reached.iter().all(|r| r.complete && !r.aborted));
    let allowed = samples.iter().filter(|s| s["status"] == 200).count();
    assert_eq!(
        reached.len(),
        allowed + 1,
        "the load's allowed calls and the in-flight one"
    );
}

#[test]
fn the_first_configuration_fails_closed_until_a_good_blob_arrives() {
    let Some(envoy_bin) = common::envoy_or_skip("ecds-first") else {
        return;
    };
    let dir = aegis_e2e::workdir("ecds-first").unwrap();
    let root = dir.path();
    let blobs = blobs(root);
    let gw_dir = root.join("gw");
    let upstream = EchoServer::start().unwrap();

    // No resource yet: Envoy does not start at all.
    std::fs::create_dir_all(gw_dir.join("ecds")).unwrap();
    let e = start(&envoy_bin, root, upstream.port())
        .err()
        .expect("Envoy started with no ECDS resource");
    assert!(e.0.contains("does not exist"), "{e}");

    // The first resource names an untrusted blob: Envoy starts, the filter
    // has no configuration, and Envoy answers every request itself.
    deliver(&gw_dir, &blobs.untrusted, &blobs.trusted_key);
    let gw = start(&envoy_bin, root, upstream.port()).unwrap();
    let first = ecds(&gw.envoy);
    assert_eq!(first.config_fail, 1, "{first:?}");
    assert_eq!(first.version_text, "", "{first:?}");
    assert!(gw
        .envoy
        .log()
        .contains("signed by a key that is not trusted"));
    let token = blobs.token();
    let ids: Vec<String> = (0..6).map(|i| format!("unconfigured-{i}")).collect();
    for (id, (action, amount)) in ids.iter().zip(CALLS) {
        let resp = send(gw.port, &request(&token, id, action, amount)).unwrap();
        assert_eq!(resp.status, 500, "{id}: {}", resp.text());
        assert_eq!(resp.header("x-aegis-decision"), None);
    }
    let lines = gw
        .envoy
        .access_log_for(&ids, Duration::from_secs(10))
        .unwrap();
    for id in &ids {
        // NFCF: no filter configuration found.
        assert_eq!(lines[id]["response_flags"], "NFCF", "{}", lines[id]);
    }
    assert!(
        upstream.requests().is_empty(),
        "a request reached the upstream unjudged"
    );

    // A good blob is applied, and judges.
    let before = ecds(&gw.envoy);
    let version = deliver(&gw_dir, &blobs.a, &blobs.trusted_key);
    wait_applied(&gw.envoy, &version, &before);
    let mut probes = 0;
    assert_eq!(probe(gw.port, &token, &mut probes), Policy::A);
    let resp = send(gw.port, &request(&token, "judged", "route_a", 50)).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(upstream.requests().len(), 1);
}

/// The resource the script writes is what Envoy's ECDS takes: one
/// `TypedExtensionConfig` named after the filter, the wasm plugin failing
/// closed with the module and key given.
#[test]
fn the_delivered_resource_names_the_module_and_fails_closed() {
    let dir = aegis_e2e::workdir("ecds-resource").unwrap();
    let root = dir.path();
    let blob = root.join("some.wasm");
    std::fs::write(&blob, b"\0asm not really").unwrap();
    let gw = root.join("gw");
    let version = deliver(&gw, &blob, "AAAA");
    let text = std::fs::read_to_string(gw.join("ecds").join("aegis.yaml")).unwrap();
    let r: Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(r["version_info"], version.as_str());
    let resources = r["resources"].as_array().unwrap();
    assert_eq!(resources.len(), 1);
    let res = &resources[0];
    assert_eq!(
        res["@type"],
        "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
    );
    assert_eq!(res["name"], "aegis");
    let plugin = &res["typed_config"]["config"];
    assert_eq!(plugin["failure_policy"], "FAIL_CLOSED");
    assert_eq!(plugin["allow_on_headers_stop_iteration"], true);
    assert_eq!(plugin["vm_config"]["runtime"], "envoy.wasm.runtime.v8");
    let module = PathBuf::from(
        plugin["vm_config"]["code"]["local"]["filename"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(
        std::fs::read(&module).unwrap(),
        std::fs::read(&blob).unwrap()
    );
    let fc = config::filter_configuration(plugin).unwrap();
    assert_eq!(fc["trusted_keys"], json!(["AAAA"]));
    assert_eq!(fc["allow_on_headers_stop_iteration"], true);
    // Nothing left behind but the resource.
    let names: Vec<String> = std::fs::read_dir(gw.join("ecds"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["aegis.yaml"]);
    // The same module and key again: the same version (Envoy skips it).
    assert_eq!(deliver(&gw, &blob, "AAAA"), version);
    assert_ne!(deliver(&gw, &blob, "BBBB"), version);
}
