//! DLP throughput with the default detector set on JSON bodies of 1 KB,
//! 16 KB, 64 KB and 1 MB (KiB/MiB), clean and with PII: through
//! `Bundle::decide` (agent whose only rule allows the call, so the number
//! includes routing and the JSON walk) and through `dlp::Scanner::scan`
//! directly; and the scanner's JSON walk alone, without the scan. Then
//! the scan per string, one kind of string at a time (`string/*`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use aegis_benches::{compile_sources, dlp_policy, json_body, DLP_SIZES, JSON_SECRETS, JSON_TEXTS};
use aegis_engine::builder::dlp::build_dlp;
use aegis_engine::unstable::dlp::{Outcome, Scanner, Scratch as DlpScratch};
use aegis_engine::unstable::params::walk_json_text;
use aegis_engine::{
    BodyKind, Bundle, Caller, Decision, Detector, DlpAction, Request, Scratch, Verdict,
};
use criterion::measurement::WallTime;
use criterion::{
    black_box, criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput,
};
use std::time::Duration;

const HEADERS: [(&str, &str); 1] = [("content-type", "application/json")];

/// The bench request: a JSON document posted by `dlp-agent`.
fn decision<'a>(bundle: &'a Bundle, body: &'a [u8], scratch: &mut Scratch) -> Decision<'a> {
    let req = Request {
        method: "POST",
        authority: "api.docs.example.com",
        path: "/v1/documents",
        headers: &HEADERS[..],
        body: Some(body),
    };
    let caller = Caller::Given {
        agent: "dlp-agent",
        tenant: None,
    };
    bundle.decide(&req, caller, 0, scratch)
}

fn decide(bundle: &Bundle, body: &[u8], scratch: &mut Scratch) -> Verdict {
    decision(bundle, body, scratch).verdict
}

/// The verdict and the reason sentence, for the set-up check.
fn explain(bundle: &Bundle, body: &[u8], scratch: &mut Scratch) -> (Verdict, String) {
    let d = decision(bundle, body, scratch);
    (d.verdict, d.reason.to_string())
}

fn bench(c: &mut Criterion) {
    let bytes = compile_sources(&[("dlp.yaml".into(), dlp_policy("redact"))]);
    let bundle = Bundle::load(&bytes, &[]).unwrap();
    let names: Vec<&str> = bundle.dlp_names(0).collect();
    let spec = build_dlp(&Detector::ALL, &[], DlpAction::Redact, [0; 32]).unwrap();
    let scanner = Scanner::load(&spec).unwrap();
    let (fwd, rev) = scanner.dfa_sizes();
    eprintln!(
        "dlp: {} detectors {:?}; forward dfa {} bytes, reverse dfa {} bytes; bundle {} bytes",
        names.len(),
        names,
        fwd,
        rev,
        bytes.len()
    );

    let mut g = c.benchmark_group("dlp");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30);
    for (size, label) in DLP_SIZES {
        // A 1 MiB scan takes milliseconds: 10 samples (criterion's least)
        // keep the run within its measurement time.
        g.sample_size(if size >= 1 << 20 { 10 } else { 30 });
        for pii in [false, true] {
            let body = json_body(size, pii);
            let kind = if pii { "pii" } else { "clean" };

            let mut ds = DlpScratch::new();
            let outcome = scanner.scan(BodyKind::Json, &body, 32, &mut ds).unwrap();
            let hits: Vec<(&str, u32)> = names
                .iter()
                .copied()
                .zip(ds.counts.iter().copied())
                .filter(|(_, n)| *n > 0)
                .collect();
            let total: u32 = hits.iter().map(|(_, n)| n).sum();
            eprintln!(
                "dlp {label} {kind}: {outcome:?}, {total} detections {hits:?}, rewritten {} bytes",
                ds.out.len()
            );
            assert_eq!(matches!(outcome, Outcome::Clean), !pii, "{label} {kind}");

            let mut scratch = Scratch::for_bundle(&bundle);
            let expect = if pii {
                Verdict::Sanitize
            } else {
                Verdict::Allow
            };
            let (got, reason) = explain(&bundle, &body, &mut scratch);
            assert_eq!(got, expect, "decide {label} {kind}: {reason}");

            g.throughput(Throughput::Bytes(body.len() as u64));
            g.bench_function(format!("decide/{label}/{kind}"), |b| {
                b.iter(|| decide(black_box(&bundle), black_box(&body), &mut scratch))
            });
            let ids = [
                format!("scanner/{label}/{kind}"),
                format!("walk/{label}/{kind}"),
            ];
            scan_and_walk(&mut g, ids, &scanner, &body, &mut ds);
        }
    }
    g.finish();
}

/// Benches `Scanner::scan` on the JSON `body` and, under the second id,
/// the scanner's JSON reading alone: the same walk handing every key,
/// string and number to a closure that only adds up their lengths.
fn scan_and_walk(
    g: &mut BenchmarkGroup<'_, WallTime>,
    [scan_id, walk_id]: [String; 2],
    scanner: &Scanner,
    body: &[u8],
    ds: &mut DlpScratch,
) {
    g.bench_function(scan_id, |b| {
        b.iter(|| {
            scanner
                .scan(BodyKind::Json, black_box(body), 32, ds)
                .unwrap()
        })
    });
    g.bench_function(walk_id, |b| {
        b.iter(|| {
            let mut n = 0usize;
            walk_json_text(black_box(body), 32, |s, _| n += s.raw.len()).unwrap();
            n
        })
    });
}

/// One kind of string, `COPIES` times in a JSON array: the scan's cost
/// per string of that kind, read against the walk alone over the same
/// array (`string/<kind>/walk`).
const COPIES: usize = 2000;

fn strings(c: &mut Criterion) {
    let spec = build_dlp(&Detector::ALL, &[], DlpAction::Redact, [0; 32]).unwrap();
    let scanner = Scanner::load(&spec).unwrap();
    let mut g = c.benchmark_group("string");
    g.measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30)
        .throughput(Throughput::Elements(COPIES as u64));
    // The strings of the bench bodies one kind at a time, as JSON string
    // contents, and the detections each holds.
    let [prose, escaped, ..] = JSON_TEXTS;
    let mut kinds: Vec<(String, String, u32)> = vec![
        ("word_no_trigger".into(), "alphabet".into(), 0),
        ("id".into(), "doc-000123".into(), 0),
        ("title".into(), "Report 123".into(), 0),
        ("prose_no_trigger".into(), prose.into(), 0),
        ("prose_escapes_dashes".into(), escaped.into(), 0),
    ];
    for (name, secret) in ["email", "ssn", "card", "phone", "iban"]
        .into_iter()
        .zip(JSON_SECRETS)
    {
        kinds.push((format!("prose_{name}"), format!("{prose} {secret}"), 1));
    }
    for (kind, text, per_string) in &kinds {
        let body = format!("[{}]", vec![format!("\"{text}\""); COPIES].join(","));
        let body = body.into_bytes();
        let mut ds = DlpScratch::new();
        let outcome = scanner.scan(BodyKind::Json, &body, 32, &mut ds).unwrap();
        let found: u32 = ds.counts.iter().sum();
        assert_eq!(found, per_string * COPIES as u32, "{kind}: {outcome:?}");
        let ids = [format!("{kind}/scan"), format!("{kind}/walk")];
        scan_and_walk(&mut g, ids, &scanner, &body, &mut ds);
    }
    g.finish();
}

criterion_group!(benches, bench, strings);
criterion_main!(benches);
