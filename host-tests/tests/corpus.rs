//! Every `policies/**/*.cases.yaml` case (and the wire fixtures in
//! `e2e/tests/fixtures/`) through the built blob under wasmtime, compared
//! with the native engine (`aegis_cases::runner::run_case`, what `aegis
//! test` runs) on the very bundle inside the blob, and with the case's own
//! expectations. Repeated headers reach the filter as repeated pairs and a
//! case's `host` header is dropped, as natively (`policy::case_request`).
//!
//! Identity: through a proxy an agent is whoever its token says. Cases that
//! name their agent directly (`agent:`) get a real token: each folder's
//! policy is built a second time with a generated key it trusts (an added
//! identity document when the folder has none, else the key appended to
//! its identity's keys; nothing else changes, the policy version neither),
//! and the case is sent with `authorization: Bearer <token for that agent
//! and tenant>` issued at the case's `now`. Cases that carry their own
//! token run as they are, through the folder's unmodified blob and the
//! augmented one. The host's clock is the case's `now` (or the real time).
//!
//! Each request runs twice: headers forwarded before the body is judged
//! (Istio, the default) with the body in one chunk, and headers held
//! (`allow_on_headers_stop_iteration`, with `trusted_keys`) with the body in
//! one-byte chunks.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use aegis_cases::format::Case;
use aegis_cases::runner::{check, run_case, Outcome as Native};
use aegis_compiler::case_file::load_cases;
use aegis_engine::{Bundle, Mode, Scratch};
use aegis_host_tests::policy::{self, Built, Issuer, Trust};
use aegis_host_tests::{Clock, Host, Outcome, Plugin, PluginOptions};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    /// Headers go upstream first, body in one chunk.
    HeadersForwarded,
    /// Headers held until the verdict, body in one-byte chunks.
    HeadersHeld,
}

const RUNS: [Run; 2] = [Run::HeadersForwarded, Run::HeadersHeld];

impl Run {
    fn config(self, built_with: &ed25519_dalek::SigningKey) -> String {
        match self {
            Run::HeadersForwarded => "{}".into(),
            Run::HeadersHeld => serde_json::json!({
                "trusted_keys": [policy::public_key_b64(built_with)],
                "allow_on_headers_stop_iteration": true,
            })
            .to_string(),
        }
    }
}

/// One blob of a folder, started once per run mode.
struct Vm {
    label: &'static str,
    bundle: Bundle,
    plugins: Vec<(Run, Plugin)>,
}

impl Vm {
    fn new(label: &'static str, built: &Built, key: &ed25519_dalek::SigningKey) -> Vm {
        let host = Host::new(&built.wasm).unwrap_or_else(|e| panic!("{label} blob: {e}"));
        let plugins = RUNS
            .iter()
            .map(|run| {
                let p = host
                    .plugin_with(PluginOptions::new(&run.config(key)))
                    .unwrap_or_else(|e| panic!("{label} blob, {run:?}: {e}"));
                (*run, p)
            })
            .collect();
        Vm {
            label,
            bundle: built.load_bundle().unwrap(),
            plugins,
        }
    }
}

#[derive(Debug, Default)]
struct Report {
    folder: String,
    cases: usize,
    via_token: usize,
    as_is: usize,
    requests: usize,
    skipped: Vec<String>,
    failures: Vec<String>,
}

fn agent_mode(bundle: &Bundle, agent: Option<&str>) -> Mode {
    agent
        .and_then(|a| bundle.model.agents.iter().find(|m| m.id == a))
        .map_or(Mode::Enforce, |a| a.mode)
}

/// The differences between what the wasm filter did and what the engine
/// decided, as sentences.
fn compare(
    run: Run,
    case: &Case,
    native: &Native,
    shadow: bool,
    sent_body: &[u8],
    o: &Outcome,
) -> Vec<String> {
    let mut p = Vec::new();
    let Some(v) = common::verdict(o) else {
        return vec![format!("no `wasm.aegis_decision` filter state; {o:?}")];
    };
    let mut same = |what: &str, wasm: Option<&str>, engine: Option<&str>| {
        if wasm != engine {
            p.push(format!("{what}: wasm {wasm:?}, engine {engine:?}"));
        }
    };
    same("decision", Some(&v.decision), Some(&native.decision));
    same("reason", Some(&v.reason), Some(&native.reason));
    same("rule", v.rule.as_deref(), native.rule.as_deref());
    same(
        "policy_version",
        v.policy_version.as_deref(),
        Some(&native.policy_version),
    );
    same("agent", v.agent.as_deref(), native.agent.as_deref());
    same("tool", v.tool.as_deref(), native.tool.as_deref());
    same("action", v.action.as_deref(), native.action.as_deref());
    same(
        "mode",
        v.mode.as_deref(),
        Some(if shadow { "shadow" } else { "enforce" }),
    );

    if o.stalled {
        p.push("the request stalled".into());
    }
    if !o.late_header_edits.is_empty() {
        p.push(format!(
            "request headers edited after they went upstream: {:?}",
            o.late_header_edits
        ));
    }
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let blocks = matches!(native.decision.as_str(), "deny" | "approval_needed");
    if shadow || !blocks {
        if !o.forwarded {
            p.push(format!("not forwarded: {o:?}"));
        }
        if let Some(r) = &o.local_response {
            p.push(format!("unexpected local reply {}", r.status));
        }
        let want = match (&native.body, shadow) {
            (Some(b), false) => b.as_slice(),
            _ => sent_body,
        };
        if o.forwarded_body != want {
            p.push(format!(
                "forwarded body `{}`, expected `{}`",
                text(&o.forwarded_body),
                text(want)
            ));
        }
        // A rewritten body goes upstream without `content-length` (Envoy
        // frames it) or, when the headers were held, with its new length.
        let length = o.forwarded_header("content-length");
        let new_length = o.forwarded_body.len().to_string();
        let bad_length = match length {
            None => false,
            Some(n) => run != Run::HeadersHeld || n != new_length,
        };
        if native.decision == "sanitize" && !shadow && bad_length {
            p.push(format!(
                "a rewritten body of {new_length} bytes went upstream with `content-length: {}`",
                length.unwrap_or_default()
            ));
        }
        let shadow_header = o.forwarded_header("x-aegis-shadow-decision");
        if shadow {
            let must = run == Run::HeadersHeld;
            match shadow_header {
                Some(h) if h != native.decision => {
                    p.push(format!("x-aegis-shadow-decision `{h}`"));
                }
                None if must => p.push("no x-aegis-shadow-decision header".into()),
                _ => {}
            }
        } else if let Some(h) = shadow_header {
            p.push(format!("x-aegis-shadow-decision `{h}` in enforce mode"));
        }
    } else {
        match &o.local_response {
            None => p.push(format!("no local reply for `{}`: {o:?}", native.decision)),
            Some(r) => {
                let (status, want) = aegis_cases::runner::expected_reply(
                    native,
                    v.request_id.as_deref().unwrap_or_default(),
                );
                if r.status != status {
                    p.push(format!(
                        "local reply status {}, expected {status}",
                        r.status
                    ));
                }
                if r.header("x-aegis-decision") != Some(native.decision.as_str()) {
                    p.push(format!(
                        "x-aegis-decision {:?}",
                        r.header("x-aegis-decision")
                    ));
                }
                if r.json() != want {
                    p.push(format!("reply body {}, expected {want}", text(&r.body)));
                }
            }
        }
        if o.forwarded || !o.forwarded_body.is_empty() {
            p.push(format!(
                "a blocked request reached the upstream (body `{}`)",
                text(&o.forwarded_body)
            ));
        }
        if run == Run::HeadersHeld && o.headers_upstream {
            p.push("headers went upstream although Envoy held them".into());
        }
    }

    // And the case's own expectations, as `aegis test` checks them.
    let as_native = Native {
        name: case.name.clone(),
        decision: v.decision.clone(),
        reason: v.reason.clone(),
        rule: v.rule.clone(),
        policy_version: v.policy_version.clone().unwrap_or_default(),
        body: (v.decision == "sanitize").then(|| o.forwarded_body.clone()),
        agent: v.agent.clone(),
        tool: v.tool.clone(),
        action: v.action.clone(),
        shape: native.shape,
        status: native.status,
        rpc_id: native.rpc_id.clone(),
    };
    p.extend(check(&case.expect, &as_native));
    p
}

/// A folder's policy built into blobs, and its cases.
struct Prepared {
    folder: String,
    cases: Vec<Case>,
    /// The folder's own policy, for the cases that bring their own token.
    original: Option<Vm>,
    /// The policy trusting a generated issuer, for every case.
    augmented: Option<(Issuer, Vm)>,
    /// Why `agent:` cases cannot run, when they cannot.
    no_tokens: Option<String>,
}

fn prepare(dir: &Path, files: &[PathBuf]) -> Prepared {
    let folder = common::folder_name(dir);
    let policy = policy::load(&[dir.to_path_buf()])
        .unwrap_or_else(|e| panic!("policies in `{folder}` do not compile:\n{e}"));
    let mut cases: Vec<Case> = Vec::new();
    for f in files {
        cases.extend(
            load_cases(f).unwrap_or_else(|d| panic!("{}", aegis_compiler::frontend::render(&d))),
        );
    }
    let key = policy::new_key();
    let original = cases.iter().any(|c| c.agent.is_none()).then(|| {
        let built = policy::build_blob(&policy, &key).unwrap();
        Vm::new("original", &built, &key)
    });
    let mut augmented_policy = policy.clone();
    let (augmented, no_tokens) = match Issuer::trusted_by(&mut augmented_policy) {
        Ok((issuer, trust)) => {
            assert_eq!(
                augmented_policy.version, policy.version,
                "the policy version must not change"
            );
            if trust == Trust::IdentityAdded {
                assert!(policy.identity.is_none());
            }
            let built = policy::build_blob(&augmented_policy, &key).unwrap();
            (Some((issuer, Vm::new("augmented", &built, &key))), None)
        }
        Err(e) => (None, Some(format!("cannot mint tokens: {e}"))),
    };
    Prepared {
        folder,
        cases,
        original,
        augmented,
        no_tokens,
    }
}

impl Prepared {
    /// The blobs a case runs through, each with the token to send; `None`
    /// when the case names its agent and no token can be minted.
    fn targets(&mut self, case: &Case, now: i64) -> Option<Vec<(&mut Vm, Option<String>)>> {
        let mut targets: Vec<(&mut Vm, Option<String>)> = Vec::new();
        match &case.agent {
            Some(agent) => {
                let (issuer, vm) = self.augmented.as_mut()?;
                let t = issuer.token(agent, case.tenant.as_deref(), now);
                targets.push((vm, Some(t)));
            }
            None => {
                if let Some(vm) = &mut self.original {
                    targets.push((vm, None));
                }
                if let Some((_, vm)) = &mut self.augmented {
                    targets.push((vm, None));
                }
            }
        }
        Some(targets)
    }
}

fn run_folder(dir: &Path, files: &[PathBuf]) -> Report {
    let mut prep = prepare(dir, files);
    let cases = std::mem::take(&mut prep.cases);
    let mut report = Report {
        folder: prep.folder.clone(),
        cases: cases.len(),
        ..Report::default()
    };
    if let Some(why) = &prep.no_tokens {
        report.skipped.push(format!("`agent:` cases: {why}"));
    }

    let mut scratch = Scratch::new();
    for case in &cases {
        let now = case.now.unwrap_or_else(common::now_unix);
        let Some(targets) = prep.targets(case, now) else {
            report.skipped.push(case.name.clone());
            continue;
        };
        if case.agent.is_some() {
            report.via_token += 1;
        } else {
            report.as_is += 1;
        }
        for (vm, token) in targets {
            let native = run_case(&vm.bundle, case, &mut scratch);
            let shadow = agent_mode(&vm.bundle, native.agent.as_deref()) == Mode::Shadow;
            let (req, body) = policy::case_request(case, token.as_deref());
            let label = vm.label;
            for (run, plugin) in &mut vm.plugins {
                plugin.set_clock(Clock::at_unix_secs(now));
                let chunks: Vec<&[u8]> = match run {
                    Run::HeadersForwarded if body.is_empty() && case.request.body.is_none() => {
                        vec![]
                    }
                    Run::HeadersForwarded => vec![body.as_slice()],
                    Run::HeadersHeld => body.chunks(1).collect(),
                };
                report.requests += 1;
                let o = match plugin.request(&req, &chunks) {
                    Ok(o) => o,
                    Err(e) => {
                        report.failures.push(format!(
                            "{}:{}: {} [{label}, {run:?}]: {e}",
                            case.location.0, case.location.1, case.name
                        ));
                        continue;
                    }
                };
                let problems = compare(*run, case, &native, shadow, &body, &o);
                if !problems.is_empty() {
                    report.failures.push(format!(
                        "{}:{}: {} [{label} blob, {run:?}{}]\n    {}",
                        case.location.0,
                        case.location.1,
                        case.name,
                        if token.is_some() {
                            ", minted token"
                        } else {
                            ""
                        },
                        problems.join("\n    ")
                    ));
                }
                if !plugin.unsupported_calls().is_empty() {
                    report.failures.push(format!(
                        "{}: the filter called unsupported host features: {:?}",
                        case.name,
                        plugin.unsupported_calls()
                    ));
                }
            }
        }
    }
    report
}

#[test]
fn every_case_agrees_with_the_engine() {
    let folders = common::case_folders();
    assert!(!folders.is_empty(), "no case files under policies/");
    // One thread per folder; each compiles its blobs and runs its cases.
    let reports: Vec<Report> = std::thread::scope(|s| {
        let handles: Vec<_> = folders
            .iter()
            .map(|(dir, files)| s.spawn(move || run_folder(dir, files)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut failures = Vec::new();
    let (mut cases, mut via_token, mut as_is, mut skipped, mut requests) = (0, 0, 0, 0, 0);
    for r in &reports {
        println!(
            "{:<12} {:>3} cases: {:>3} with a minted token, {:>3} as they are, {} skipped; {} requests",
            r.folder,
            r.cases,
            r.via_token,
            r.as_is,
            r.skipped.len(),
            r.requests
        );
        for s in &r.skipped {
            println!("    skipped: {s}");
        }
        cases += r.cases;
        via_token += r.via_token;
        as_is += r.as_is;
        skipped += r.skipped.len();
        requests += r.requests;
        failures.extend(r.failures.iter().cloned());
    }
    println!(
        "corpus: {cases} cases ({via_token} with a minted token, {as_is} as they are, \
         {skipped} skipped), {requests} requests through the wasm filter, {} disagreements",
        failures.len()
    );
    assert!(cases > 0);
    assert!(
        failures.is_empty(),
        "{} disagreements between the wasm filter and the engine:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Bodies up to this many bytes are split at every byte boundary.
const SPLIT_MAX: usize = 512;

/// What must not depend on where the body is cut: the verdict, its
/// reason, what went upstream and what the agent got back.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    decision: Option<String>,
    reason: Option<String>,
    status: Option<u32>,
    forwarded: bool,
    forwarded_body: String,
    stalled: bool,
}

impl Seen {
    fn of(o: &Outcome) -> Seen {
        Seen {
            decision: o.decision(),
            reason: o.property("aegis_reason"),
            status: o.status(),
            forwarded: o.forwarded,
            forwarded_body: aegis_cases::runner::show_bytes(&o.forwarded_body),
            stalled: o.stalled,
        }
    }
}

#[derive(Debug, Default)]
struct SplitReport {
    folder: String,
    bodies: usize,
    requests: usize,
    failures: Vec<String>,
}

fn split_folder(dir: &Path, files: &[PathBuf]) -> SplitReport {
    let mut prep = prepare(dir, files);
    let cases = std::mem::take(&mut prep.cases);
    let mut report = SplitReport {
        folder: prep.folder.clone(),
        ..SplitReport::default()
    };
    for case in &cases {
        let Some(len) = case.request.body.as_ref().map(Vec::len) else {
            continue;
        };
        if len > SPLIT_MAX {
            continue;
        }
        let now = case.now.unwrap_or_else(common::now_unix);
        let Some(targets) = prep.targets(case, now) else {
            continue;
        };
        report.bodies += 1;
        for (vm, token) in targets {
            let (req, body) = policy::case_request(case, token.as_deref());
            let label = vm.label;
            for (run, plugin) in &mut vm.plugins {
                plugin.set_clock(Clock::at_unix_secs(now));
                let whole = Seen::of(&plugin.request(&req, &[body.as_slice()]).unwrap());
                report.requests += 1;
                for cut in 0..=body.len() {
                    let (a, b) = body.split_at(cut);
                    report.requests += 1;
                    let seen = match plugin.request(&req, &[a, b]) {
                        Ok(o) => Seen::of(&o),
                        Err(e) => {
                            report.failures.push(format!(
                                "{}:{}: {} [{label}, {run:?}, cut at {cut}]: {e}",
                                case.location.0, case.location.1, case.name
                            ));
                            break;
                        }
                    };
                    if seen != whole {
                        report.failures.push(format!(
                            "{}:{}: {} [{label} blob, {run:?}]: cut at byte {cut} of {len}: \
                             {seen:?}, in one chunk {whole:?}",
                            case.location.0, case.location.1, case.name
                        ));
                        // One cut is enough to show the problem.
                        break;
                    }
                }
            }
        }
    }
    report
}

/// Every case with a body of at most [`SPLIT_MAX`] bytes, its body sent as
/// two chunks cut at every byte boundary (`0..=len`, so also an empty
/// first or last chunk), in both header modes: the verdict, its reason,
/// the status and the forwarded body are those of the one-chunk request.
#[test]
fn every_cut_of_a_small_body_gives_the_one_chunk_outcome() {
    let started = std::time::Instant::now();
    let folders = common::case_folders();
    assert!(!folders.is_empty(), "no case files under policies/");
    let reports: Vec<SplitReport> = std::thread::scope(|s| {
        let handles: Vec<_> = folders
            .iter()
            .map(|(dir, files)| s.spawn(move || split_folder(dir, files)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut failures = Vec::new();
    let (mut bodies, mut requests) = (0, 0);
    for r in &reports {
        println!(
            "{:<12} {:>3} bodies cut at every byte; {} requests",
            r.folder, r.bodies, r.requests
        );
        bodies += r.bodies;
        requests += r.requests;
        failures.extend(r.failures.iter().cloned());
    }
    println!(
        "split chunks: {bodies} bodies of at most {SPLIT_MAX} bytes, {requests} requests \
         through the wasm filter in {:.1?}, {} differences",
        started.elapsed(),
        failures.len()
    );
    assert!(bodies > 0);
    assert!(
        failures.is_empty(),
        "{} cases whose outcome depends on where the body is cut:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
