//! Hot reload under load, end to end: a real Envoy whose filter trusts
//! one key and polls a real `aegis serve` for bundles every second (its
//! minimum), a steady stream of requests from threads of this test, and
//! 100 revisions published with `aegis publish` meanwhile.
//!
//! What it proves (the bundle poll is every >= 1 s, so not every one of
//! 100 revisions can be seen; the test publishes them in quick
//! succession, and waits at revisions 25, 50, 75 and 100 until a request
//! is judged by that one):
//!
//! - no request fails or is reset while bundles change under it (the
//!   only answers are the upstream's 200 and the policy's 403);
//! - every request is judged by one whole published revision: each
//!   revision `r` differs in what its access-log line and deny body show
//!   (policy version `rev-r`), in which action the request's route
//!   matches (`probe_even` / `probe_odd`, decided on the headers) and in
//!   the condition judged on the body (`amount <= r`); the verdict, rule
//!   and reason of every request must be those of the revision its policy
//!   version names (a route from one revision judged by another would
//!   show);
//! - after the last publish, every request that starts more than
//!   [`ADOPT_BOUND`] later is judged by the last revision;
//! - a rollback (`aegis publish` of an older revision) and a bundle signed
//!   by another key are refused by the control plane (409, 403);
//! - a bundle signed by an untrusted key that the filter does fetch (a
//!   second control plane standing in on the same port) is refused by the
//!   filter, counted as `aegis_bundle_reload_total{outcome="refused"}`,
//!   and the running revision stays; traffic goes on with no failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use aegis_compiler::{frontend, keys};
use aegis_e2e::blob::fresh_key;
use aegis_e2e::client::{send, Req, Resp, SlowRequest};
use aegis_e2e::config::{Gateway, Listener};
use aegis_e2e::control::{self, ControlPlane, CpListener};
use aegis_e2e::corpus::{self, Folder};
use aegis_e2e::prom;
use aegis_e2e::upstream::{EchoServer, ECHO_HEADER};
use aegis_engine::builder::bundle::{compile, BuildOptions};
use ed25519_dalek::SigningKey;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const AGENT: &str = "reload-agent";
const HOST: &str = "api.reload.example";
/// Revisions published, 1 ..= this; the blob embeds revision 0.
const REVISIONS: u64 = 100;
/// Revisions the test waits for until a request is judged by each.
const CHECKPOINTS: [u64; 4] = [25, 50, 75, 100];
/// `control_plane.bundle_poll_ms` (its minimum).
const POLL_MS: u64 = 1000;
/// A revision published is in force for every request that starts this
/// long after: a poll period, the tick that adopts it in the other
/// worker, the call itself, and slack for a loaded machine.
const ADOPT_BOUND: Duration = Duration::from_secs(5);
/// Load threads.
const THREADS: usize = 4;
/// Requests a load thread sends at most.
const MAX_PER_THREAD: usize = 20_000;
/// An amount no revision allows: a probe always gets a deny body, which
/// names the revision that judged it.
const PROBE_AMOUNT: u64 = 1_000_000;

/// The policy of revision `r`: what it allows and how it names things
/// differ by revision.
fn policy(r: u64) -> String {
    let action = action(r);
    format!(
        "# Revision {r} of the hot-reload policy (e2e/tests/hot_reload.rs).\n\
         kind: ToolCatalog\n\
         tools:\n\
         \x20 - name: marked\n\
         \x20   hosts: [{HOST}]\n\
         \x20   body: form\n\
         \x20   actions:\n\
         \x20     - name: {action}\n\
         \x20       method: POST\n\
         \x20       path: /v1/probe\n\
         ---\n\
         agent: {AGENT}\n\
         allowed_tools:\n\
         \x20 - name: marked\n\
         \x20   actions: [{action}]\n\
         \x20   conditions:\n\
         \x20     max_amount: {r}\n"
    )
}

/// The action the route of revision `r` matches.
fn action(r: u64) -> &'static str {
    if r.is_multiple_of(2) {
        "probe_even"
    } else {
        "probe_odd"
    }
}

/// One request of the load, as sent and as answered.
struct Sample {
    id: String,
    amount: u64,
    started: Instant,
    /// Status, `x-aegis-decision`, the deny body; or why it failed.
    answer: Result<Resp, String>,
}

struct Revs {
    dir: PathBuf,
    /// The Identity document the prepared copy got (tokens for the agent).
    identity: PathBuf,
}

impl Revs {
    /// The policies of revision `r` in their own folder.
    fn folder(&self, r: u64, name: &str) -> PathBuf {
        let d = self.dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("reload.yaml"), policy(r)).unwrap();
        std::fs::copy(&self.identity, d.join("identity.yaml")).unwrap();
        d
    }

    /// Revision `r` compiled and signed with `key`, policy version
    /// `rev-r`: the file `aegis publish` uploads.
    fn bundle(&self, r: u64, key: &SigningKey, name: &str) -> PathBuf {
        let d = self.folder(r, name);
        let version = format!("rev-{r}");
        let loaded = frontend::load(&[d], Some(&version))
            .unwrap_or_else(|diags| panic!("revision {r}: {diags:?}"));
        let opts = BuildOptions {
            dlp_hash_key: keys::dlp_hash_key(Some(key)),
            revision: r,
        };
        let bytes = compile(&loaded.policy, &opts, Some(key)).unwrap();
        let out = self.dir.join(format!("{name}.bundle"));
        std::fs::write(&out, bytes).unwrap();
        out
    }
}

/// Sets the flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() {
            if let Some(f) = find(&p, name) {
                return Some(f);
            }
        } else if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
    }
    None
}

fn request(token: &str, id: &str, amount: u64) -> Req {
    Req::form_post(HOST, "/v1/probe", id, token, &format!("amount={amount}"))
}

/// `aegis_bundle_reload_total{outcome}` of the proxy.
fn reloads(gw: &Gateway, outcome: &str) -> f64 {
    let text = gw.envoy.prometheus().unwrap();
    let samples = prom::parse(&text);
    prom::named(&samples, "aegis_bundle_reload_total")
        .iter()
        .filter(|s| s.labels.get("outcome").map(String::as_str) == Some(outcome))
        .map(|s| s.value)
        .sum()
}

/// `aegis publish FILE` as the release pipeline runs it.
fn publish(cp: &ControlPlane, admin: &str, file: &Path) -> std::process::Output {
    let url = cp.url();
    cp.run(&[
        "publish",
        file.to_str().unwrap(),
        "--server",
        &url,
        "--token",
        admin,
        "--format",
        "json",
    ])
    .unwrap()
}

#[test]
fn bundles_published_under_load_swap_whole_with_no_failed_request() {
    let Some(envoy) = common::envoy_or_skip("hot-reload") else {
        return;
    };
    let dir = aegis_e2e::workdir("hot-reload").unwrap();
    let root = dir.path();
    let key = fresh_key(root, "release").unwrap();
    let other = fresh_key(root, "other").unwrap();
    let token_key = fresh_key(root, "tokens").unwrap();

    // Revision 0: the blob's embedded bundle, with the harness's identity.
    let src = root.join("rev-0");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("reload.yaml"), policy(0)).unwrap();
    let folder = Folder {
        name: "hot-reload".into(),
        label: "hot-reload revision 0".into(),
        dir: src,
        case_files: Vec::new(),
    };
    let p = corpus::prepare(&folder, root, &key, &token_key).unwrap();
    let revs = Revs {
        dir: root.join("revs"),
        identity: find(&root.join("policies"), "zz-aegis-e2e-identity.yaml").unwrap(),
    };
    // Policy version -> revision, for every bundle the filter may trust.
    let mut version_of: HashMap<String, u64> = HashMap::new();
    version_of.insert(p.built.bundle.policy_version().to_string(), 0);
    let files: BTreeMap<u64, PathBuf> = (1..=REVISIONS)
        .map(|r| {
            version_of.insert(format!("rev-{r}"), r);
            (r, revs.bundle(r, &key, &format!("rev-{r}")))
        })
        .collect();
    // The same revision number as the last, and one above it, signed by a
    // key nobody trusts.
    let foreign = revs.bundle(REVISIONS + 1, &other, "foreign");

    // The control plane trusts the release key; nothing is published yet.
    let trust = vec![
        "--trust".to_string(),
        root.join("release.pub").display().to_string(),
    ];
    let mut cp = ControlPlane::start_with(&root.join("control"), &[], &trust, None).unwrap();
    let admin = cp.token("admin", "*", "release").unwrap();
    let upstream = EchoServer::start().unwrap();
    let mut overrides = serde_json::Map::new();
    overrides.insert(
        "token".into(),
        cp.token("gateway", "default", "edge-1").unwrap().into(),
    );
    overrides.insert("bundle_poll_ms".into(), POLL_MS.into());
    let listener = CpListener {
        listener: Listener {
            name: "reload".into(),
            blob: p.built.path.clone(),
            trusted_key: p.built.trusted_key.clone(),
            max_body_bytes: None,
            filter_state: None,
        },
        control_plane: overrides,
    };
    let gw = control::start_gateway(&envoy, root, upstream.port(), cp.port(), &[listener]).unwrap();
    let port = gw.ports[0];
    let token = p.token(AGENT, None);

    let stop = AtomicBool::new(false);
    let samples: Mutex<Vec<Sample>> = Mutex::new(Vec::new());
    let mut published: BTreeMap<u64, Instant> = BTreeMap::new();
    let mut seen_at: BTreeMap<u64, Duration> = BTreeMap::new();
    let mut probes = 0usize;

    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (stop, samples, token) = (&stop, &samples, &token);
            s.spawn(move || {
                let mut mine = Vec::new();
                for n in 0..MAX_PER_THREAD {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let id = format!("load-{t}-{n}");
                    // Amounts on both sides of every revision's limit.
                    let amount = ((n * 37 + t * 11) % (REVISIONS as usize + 2)) as u64;
                    let started = Instant::now();
                    let answer = send(port, &request(token, &id, amount)).map_err(|e| e.0);
                    mine.push(Sample {
                        id,
                        amount,
                        started,
                        answer,
                    });
                }
                samples.lock().unwrap().append(&mut mine);
            });
        }

        // The load stops when this scope ends, also on a failed assert.
        let _stop = StopOnDrop(&stop);

        // A probe: the revision that judged a request sent now.
        let mut probe = || {
            probes += 1;
            let id = format!("probe-{probes}");
            let resp = send(port, &request(&token, &id, PROBE_AMOUNT)).unwrap();
            assert_eq!(resp.status, 403, "{}", resp.text());
            let j = resp.json().unwrap();
            let v = j["policy_version"].as_str().unwrap().to_string();
            *version_of
                .get(&v)
                .unwrap_or_else(|| panic!("probe judged by unknown policy `{v}`: {j}"))
        };
        let wait_for = |probe: &mut dyn FnMut() -> u64, r: u64| -> Duration {
            let since = Instant::now();
            loop {
                if probe() == r {
                    return since.elapsed();
                }
                assert!(
                    since.elapsed() < Duration::from_secs(20),
                    "revision {r} not in force 20 s after it was published"
                );
                // Polling interval, not a wait for something to happen.
                std::thread::sleep(Duration::from_millis(50));
            }
        };
        assert_eq!(probe(), 0, "the embedded revision judges first");

        // A request in flight across each checkpoint's swap: its headers
        // sent while an older revision is in force, its body once the
        // checkpoint judges new requests. Its amount is allowed by the
        // checkpoint and by no older revision: it must be judged whole by
        // the revision it started with.
        let slow_start = |n: usize, amount: u64| {
            let id = format!("in-flight-{n}");
            let body = format!("amount={amount}");
            let mut head = request(&token, &id, amount);
            head.body = None;
            (SlowRequest::start(port, &head, body.len()).unwrap(), body)
        };
        let slow_finish = |(slow, body): (SlowRequest, String), newer: u64| -> u64 {
            let resp = slow.finish(body.as_bytes()).unwrap();
            assert_eq!(resp.status, 403, "{body}: {}", resp.text());
            assert_eq!(resp.header("x-aegis-decision"), Some("deny"));
            let j = resp.json().unwrap();
            let v = j["policy_version"].as_str().unwrap();
            let r = *version_of
                .get(v)
                .unwrap_or_else(|| panic!("in-flight call judged by unknown policy: {j}"));
            assert!(
                r < newer,
                "a call in flight since before revision {newer} was judged by revision {r}: {j}"
            );
            assert_eq!(j["rule"], format!("{AGENT}/marked/{}#0", action(r)), "{j}");
            let why = format!("`amount` must be a number <= {r}");
            assert!(j["reason"].as_str().unwrap().contains(&why), "{j}");
            r
        };
        let mut in_flight = Some(slow_start(0, 1));
        let mut in_flight_judged = Vec::new();

        for (&r, file) in &files {
            let out = publish(&cp, &admin, file);
            assert!(
                out.status.success(),
                "publish revision {r}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            published.insert(r, Instant::now());
            if CHECKPOINTS.contains(&r) {
                seen_at.insert(r, wait_for(&mut probe, r));
                if let Some(slow) = in_flight.take() {
                    in_flight_judged.push((r, slow_finish(slow, r)));
                }
                if r < REVISIONS {
                    in_flight = Some(slow_start(in_flight_judged.len(), r + 1));
                }
            }
        }
        eprintln!("hot-reload: calls in flight across a swap to revision N, judged by: {in_flight_judged:?}");

        // Refused by the control plane: a rollback, and another signer.
        let rollback = publish(&cp, &admin, &files[&50]);
        let said = String::from_utf8_lossy(&rollback.stderr);
        assert!(!rollback.status.success());
        assert!(said.contains("409 stale_revision"), "{said}");
        let untrusted = publish(&cp, &admin, &foreign);
        let said = String::from_utf8_lossy(&untrusted.stderr);
        assert!(!untrusted.status.success());
        assert!(said.contains("403 untrusted_signer"), "{said}");

        // Refused by the filter: a second control plane on the same port,
        // on a copy of the store (so the gateway's token is good there),
        // serving a bundle of its own policies (revision: now) signed by
        // its service key, which the filter does not trust.
        let refused_before = reloads(&gw, "refused");
        let port_cp = cp.port();
        cp.kill().unwrap();
        std::fs::create_dir_all(root.join("impostor")).unwrap();
        for f in ["aegis.db", "aegis.db-wal", "aegis.db-shm"] {
            let from = root.join("control").join(f);
            if from.exists() {
                std::fs::copy(&from, root.join("impostor").join(f)).unwrap();
            }
        }
        let impostor_policies = revs.folder(REVISIONS + 2, "impostor");
        let mut impostor = ControlPlane::start_with(
            &root.join("impostor"),
            &[impostor_policies],
            &[],
            Some(port_cp),
        )
        .unwrap();
        let since = Instant::now();
        while reloads(&gw, "refused") <= refused_before {
            assert!(
                since.elapsed() < Duration::from_secs(20),
                "the filter never refused the impostor's bundle; its log:\n{}",
                gw.envoy.log_tail(30)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(probe(), REVISIONS, "the running revision stays");
        impostor.kill().unwrap();
        cp.restart().unwrap();
        assert_eq!(probe(), REVISIONS);

        // Enough traffic past the adoption bound of the last revision.
        let last = published[&REVISIONS];
        while last.elapsed() < ADOPT_BOUND + Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, Ordering::SeqCst);
    });

    let log = gw.envoy.log();
    assert!(
        log.contains("bundle from the control plane refused"),
        "no refusal logged:\n{}",
        gw.envoy.log_tail(40)
    );

    // Every request answered, and judged whole by one revision.
    let samples = samples.into_inner().unwrap();
    let ids: Vec<String> = samples.iter().map(|s| s.id.clone()).collect();
    let lines = gw
        .envoy
        .access_log_for(&ids, Duration::from_secs(30))
        .unwrap();
    let last = published[&REVISIONS];
    let mut failures = Vec::new();
    let mut by_revision: BTreeMap<u64, usize> = BTreeMap::new();
    let mut after_bound = 0;
    for s in &samples {
        let resp = match &s.answer {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{}: {e}", s.id));
                continue;
            }
        };
        let line = &lines[&s.id];
        let version = line["policy_version"].as_str().unwrap_or_default();
        let Some(&r) = version_of.get(version) else {
            failures.push(format!(
                "{}: judged by unknown policy `{version}`: {line}",
                s.id
            ));
            continue;
        };
        *by_revision.entry(r).or_default() += 1;
        let rule = format!("{AGENT}/marked/{}#0", action(r));
        let allowed = s.amount <= r;
        let whole = if allowed {
            resp.status == 200
                && resp.header(ECHO_HEADER) == Some("1")
                && line["decision"] == "allow"
                && line["rule"] == rule.as_str()
        } else {
            let j = resp.json().unwrap_or(Value::Null);
            let reason = format!("`amount` must be a number <= {r}");
            resp.status == 403
                && resp.header("x-aegis-decision") == Some("deny")
                && j["policy_version"] == version
                && j["rule"] == rule.as_str()
                && j["reason"].as_str().is_some_and(|t| t.contains(&reason))
                && line["decision"] == "deny"
        };
        if !whole {
            failures.push(format!(
                "{} (amount {}) not judged whole by revision {r}: status {}, body {}, log {line}",
                s.id,
                s.amount,
                resp.status,
                resp.text()
            ));
        }
        if s.started > last + ADOPT_BOUND {
            after_bound += 1;
            if r != REVISIONS {
                failures.push(format!(
                    "{} started {:?} after the last publish, judged by revision {r}",
                    s.id,
                    s.started - last
                ));
            }
        }
    }
    eprintln!(
        "hot-reload: {} requests ({probes} probes besides), {} failures; judged by revision: \
         {by_revision:?}; checkpoint revisions in force after {seen_at:?}; \
         reloads: loaded {}, refused {}, unchanged {}, failed {}",
        samples.len(),
        failures.len(),
        reloads(&gw, "loaded"),
        reloads(&gw, "refused"),
        reloads(&gw, "unchanged") + 0.0,
        reloads(&gw, "failed") + 0.0,
    );
    assert!(
        failures.is_empty(),
        "{} of {} requests failed or were not judged whole by one revision, e.g.:\n{}",
        failures.len(),
        samples.len(),
        failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        after_bound > 0,
        "no request started after the adoption bound"
    );
    assert!(
        by_revision.len() > CHECKPOINTS.len(),
        "the load saw only revisions {by_revision:?}"
    );
    assert!(upstream.requests().iter().all(|r| r.complete && !r.aborted));
}

/// The release path the README shows publishes the very blob the proxies
/// run (`aegis publish filter.wasm`), and Istio users may ship a blob and
/// publish it too: a proxy that polls the control plane and gets the
/// bundle it already runs must take it as unchanged, not refuse it as a
/// rollback (an error line and `outcome="refused"` at every poll, and the
/// whole bundle downloaded again each time since its ETag is not kept).
#[test]
fn the_bundle_a_proxy_already_runs_is_not_refused() {
    let Some(envoy) = common::envoy_or_skip("hot-reload-same") else {
        return;
    };
    let dir = aegis_e2e::workdir("hot-reload-same").unwrap();
    let root = dir.path();
    let key = fresh_key(root, "release").unwrap();
    let token_key = fresh_key(root, "tokens").unwrap();
    let src = root.join("rev-0");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("reload.yaml"), policy(7)).unwrap();
    let folder = Folder {
        name: "hot-reload".into(),
        label: "hot-reload revision 7".into(),
        dir: src,
        case_files: Vec::new(),
    };
    let p = corpus::prepare(&folder, root, &key, &token_key).unwrap();
    let trust = vec![
        "--trust".to_string(),
        root.join("release.pub").display().to_string(),
    ];
    let cp = ControlPlane::start_with(&root.join("control"), &[], &trust, None).unwrap();

    // `aegis build --revision 7`, deployed and published as it is.
    let blob = root.join("filter.wasm");
    let copy = root.join("policies").join("hot-reload");
    let out = cp
        .run(&[
            "build",
            copy.to_str().unwrap(),
            "--key",
            root.join("release.key").to_str().unwrap(),
            "-o",
            blob.to_str().unwrap(),
            "--revision",
            "7",
        ])
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let admin = cp.token("admin", "*", "release").unwrap();
    let out = publish(&cp, &admin, &blob);
    assert!(out.status.success(), "{out:?}");

    let upstream = EchoServer::start().unwrap();
    let mut overrides = serde_json::Map::new();
    overrides.insert(
        "token".into(),
        cp.token("gateway", "default", "edge-1").unwrap().into(),
    );
    overrides.insert("bundle_poll_ms".into(), POLL_MS.into());
    let listener = CpListener {
        listener: Listener {
            name: "same".into(),
            blob: blob.clone(),
            trusted_key: p.built.trusted_key.clone(),
            max_body_bytes: None,
            filter_state: None,
        },
        control_plane: overrides,
    };
    let gw = control::start_gateway(&envoy, root, upstream.port(), cp.port(), &[listener]).unwrap();

    // A few polls (one a second).
    let since = Instant::now();
    let polls = || reloads(&gw, "refused") + reloads(&gw, "unchanged") + reloads(&gw, "loaded");
    while polls() < 3.0 {
        assert!(
            since.elapsed() < Duration::from_secs(20),
            "no polls: {}",
            gw.envoy.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let resp = send(
        gw.ports[0],
        &request(&p.token(AGENT, None), "same-1", PROBE_AMOUNT),
    )
    .unwrap();
    assert_eq!(
        resp.json().unwrap()["policy_version"],
        p.built.bundle.policy_version()
    );
    let refused: Vec<String> = gw
        .envoy
        .log()
        .lines()
        .filter(|l| l.contains("refused"))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        reloads(&gw, "refused") + 0.0,
        0.0,
        "the proxy refused the bundle it runs:\n{}",
        refused.join("\n")
    );
    assert!(reloads(&gw, "unchanged") >= 3.0);
}
