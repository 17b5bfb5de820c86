//! Every `policies/**/*.cases.yaml` (and the wire fixtures in
//! `tests/fixtures/`) through a real Envoy, in both header
//! modes and over both HTTP/1.1 (exact bytes on a raw socket) and HTTP/2
//! (prior knowledge, `h2`), each case compared with the native engine
//! (`run_case` at the real clock, on the very bundle inside the blob) and,
//! where the clock does not matter, with its own `expect:`. Also: the
//! upstream never receives a blocked request, the access log carries every
//! decision field, `/stats/prometheus` counts every decision with its
//! labels, and cases marked `envoy: reject` are refused by Envoy itself.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use aegis_cases::format::Protocol;
use aegis_e2e::blob::fresh_key;
use aegis_e2e::config::{self, Listener, Mode};
use aegis_e2e::corpus::{self, Clients, Known, Tally};
use aegis_e2e::upstream::EchoServer;

/// Where a real Envoy and the engine differ for a reason outside the
/// filter's request handling. Each must still give the same verdict.
const KNOWN: &[Known] = &[];

fn corpus_through_envoy(mode: Mode) {
    let Some(envoy) = common::envoy_or_skip(&format!("case corpus ({})", mode.name())) else {
        return;
    };
    let started = std::time::Instant::now();
    let dir = aegis_e2e::workdir(&format!("corpus-{}", mode.name())).unwrap();
    let policy_key = fresh_key(dir.path(), "policy").unwrap();
    let token_key = fresh_key(dir.path(), "tokens").unwrap();
    let mut folders = corpus::folders().unwrap();
    assert!(!folders.is_empty(), "no policies/**/*.cases.yaml");
    let fixtures = corpus::fixture_folders().unwrap();
    assert!(
        !fixtures.is_empty(),
        "no e2e/tests/fixtures/**/*.cases.yaml"
    );
    folders.extend(fixtures);
    let prepared: Vec<corpus::Prepared> = folders
        .iter()
        .map(|f| corpus::prepare(f, dir.path(), &policy_key, &token_key).unwrap())
        .collect();

    let built_at = started.elapsed();
    let upstream = EchoServer::start().unwrap();
    let listeners: Vec<Listener> = prepared
        .iter()
        .map(|p| Listener {
            name: format!("policies_{}", p.folder.name.replace('/', "_")),
            blob: p.built.path.clone(),
            trusted_key: p.built.trusted_key.clone(),
            max_body_bytes: None,
            filter_state: None,
        })
        .collect();
    let gw = config::start(&envoy, mode, dir.path(), upstream.port(), &listeners).unwrap();

    let ready_at = started.elapsed();
    let clients = Clients::new().unwrap();
    let mut tally = Tally::default();
    let mut sent = Vec::new();
    for protocol in Protocol::ALL {
        for (p, port) in prepared.iter().zip(&gw.ports) {
            sent.extend(corpus::send_all(
                p,
                *port,
                protocol,
                &clients,
                mode.name(),
                &mut tally,
            ));
        }
    }
    let sent_at = started.elapsed();
    let mut failures = corpus::judge_all(
        &gw.envoy,
        &upstream,
        &sent,
        mode.holds_headers(),
        KNOWN,
        &mut tally,
    )
    .unwrap();

    // Every decision counted once, with its labels.
    let want = corpus::expected_metrics(&sent);
    let got = corpus::observed_metrics(&gw.envoy.prometheus().unwrap());
    for metric in ["aegis_decision_total", "aegis_policy_violation_total"] {
        let (w, g) = (
            want.get(metric).cloned().unwrap_or_default(),
            got.get(metric).cloned().unwrap_or_default(),
        );
        for (labels, n) in &w {
            if g.get(labels) != Some(n) {
                failures.push(format!(
                    "{metric}{labels:?}: expected {n}, envoy shows {:?}",
                    g.get(labels)
                ));
            }
        }
        for (labels, n) in &g {
            if !w.contains_key(labels) {
                failures.push(format!(
                    "{metric}{labels:?}: envoy shows {n}, expected none"
                ));
            }
        }
    }

    let total: usize = prepared.iter().map(|p| p.cases.len()).sum();
    eprintln!(
        "corpus ({}): blobs built in {built_at:.1?}, Envoy ready at {ready_at:.1?}, \
         all sent at {sent_at:.1?}, all done at {:.1?}",
        mode.name(),
        started.elapsed()
    );
    eprintln!(
        "corpus ({}): {} folders, {total} cases; {} requests sent through Envoy \
         ({} HTTP/1.1, {} HTTP/2) and compared with the engine; \
         {} expectations checked; {} clock-dependent (their `now:` differs from the real clock in outcome); \
         {} refused by Envoy as marked ({} of them by an HTTP/2 reset); \
         {} known divergence(s); {} left out by `protocols:`; {} not expressible over HTTP/2; {} not sent",
        mode.name(),
        prepared.len(),
        tally.sent,
        tally.sent_http1,
        tally.sent_http2,
        tally.expectations_checked,
        tally.clock_dependent,
        tally.rejects_checked,
        tally.rejects_by_reset,
        tally.known.len(),
        tally.not_for_protocol.len(),
        tally.http2_unsendable.len(),
        tally.skipped.len()
    );
    for k in &tally.known {
        eprintln!("  known divergence: {k}");
    }
    for s in &tally.http2_unsendable {
        eprintln!("  not sent over HTTP/2: {s}");
    }
    for s in &tally.skipped {
        eprintln!("  not sent: {s}");
    }
    assert!(
        failures.is_empty(),
        "{} failure(s) through Envoy ({}):\n{}\nenvoy log tail:\n{}",
        failures.len(),
        mode.name(),
        failures.join("\n"),
        gw.envoy.log_tail(10)
    );
    // Every case reached Envoy over each of its protocols; a skip would
    // hide a gap.
    assert_eq!(
        tally.sent
            + tally.skipped.len()
            + tally.not_for_protocol.len()
            + tally.http2_unsendable.len(),
        total * Protocol::ALL.len()
    );
    assert!(
        tally.skipped.is_empty(),
        "cases not sent: {:?}",
        tally.skipped
    );
}

#[test]
fn every_case_through_envoy_with_headers_held() {
    corpus_through_envoy(Mode::Sidecar);
}

#[test]
fn every_case_through_envoy_in_istio_mode() {
    corpus_through_envoy(Mode::Istio);
}
