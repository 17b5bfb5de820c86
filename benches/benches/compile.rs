//! Build time of the generated 1,000-agent policy (YAML text -> front-end
//! -> IR -> builder -> bundle bytes, as `aegis compile` does minus file
//! I/O), its parts, `aegis build` (the signed blob: bundle embedded in the
//! generic filter, module signed) and `Bundle::load` time. Prints the
//! bundle and blob sizes once.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use aegis_benches::{generated_policy, load};
use aegis_compiler::frontend;
use aegis_compiler::package::blob::{build_signed, embed, generic_filter, signed_bundle};
use aegis_compiler::package::wasmsig;
use aegis_engine::builder::bundle::{compile, BuildOptions};
use aegis_engine::builder::dlp::build_dlp;
use aegis_engine::{Bundle, Detector, DlpAction};
use criterion::{black_box, criterion_group, criterion_main, Criterion, SamplingMode};
use ed25519_dalek::SigningKey;
use std::time::{Duration, Instant};

fn bench(c: &mut Criterion) {
    let key = SigningKey::from_bytes(&[7; 32]);
    let trusted = [key.verifying_key().to_bytes()];
    let mut cg = c.benchmark_group("compile");
    cg.sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(10);
    let mut fixtures = Vec::new();

    for (label, dlp) in [("1000_agents", true), ("1000_agents_no_dlp", false)] {
        let (sources, stats) = generated_policy(1000, dlp);

        // One cold run, timed by hand, and the sizes.
        let t0 = Instant::now();
        let loaded = load(&sources);
        let t1 = Instant::now();
        let bytes = compile(&loaded.policy, &BuildOptions::default(), None).unwrap();
        let t2 = Instant::now();
        let signed = compile(&loaded.policy, &BuildOptions::default(), Some(&key)).unwrap();
        let bundle = Bundle::load(&bytes, &[]).unwrap();
        let m = &bundle.model;
        eprintln!(
            "{label}: {} bytes of YAML, {} agents, {} rules, {} conditions ({} `matches`)",
            stats.yaml_bytes, stats.agents, stats.rules, stats.conditions, stats.regex_conditions
        );
        eprintln!(
            "{label}: strings in the model: rule ids {} bytes, agent ids+names {} bytes, egress hosts {} bytes",
            m.rules.iter().map(|r| r.id.len()).sum::<usize>(),
            m.agents
                .iter()
                .map(|a| a.id.len() + a.name.len())
                .sum::<usize>(),
            m.agents
                .iter()
                .filter_map(|a| a.allow_hosts.as_ref())
                .map(|h| h.exact.iter().chain(h.suffixes.iter()).map(String::len).sum::<usize>())
                .sum::<usize>(),
        );
        eprintln!(
            "{label}: bundle {} bytes unsigned, {} bytes signed; model: {} tools, {} agents, {} rules, {} predicates, {} regex dfas ({} bytes), {} dlp sets ({} bytes of dfas)",
            bytes.len(),
            signed.len(),
            m.tools.len(),
            m.agents.len(),
            m.rules.len(),
            m.preds.len(),
            m.regexes.len(),
            m.regexes.iter().map(Vec::len).sum::<usize>(),
            m.dlp.len(),
            m.dlp
                .iter()
                .map(|d| d.forward.len() + d.reverse.len())
                .sum::<usize>(),
        );
        eprintln!(
            "{label}: cold run: front-end {:?}, builder {:?}",
            t1.duration_since(t0),
            t2.duration_since(t1)
        );

        cg.bench_function(format!("{label}/total_signed"), |b| {
            b.iter(|| {
                let l = frontend::load_sources(black_box(&sources), None).unwrap();
                compile(&l.policy, &BuildOptions::default(), Some(&key)).unwrap()
            })
        });
        cg.bench_function(format!("{label}/frontend"), |b| {
            b.iter(|| frontend::load_sources(black_box(&sources), None).unwrap())
        });
        cg.bench_function(format!("{label}/builder"), |b| {
            b.iter(|| compile(black_box(&loaded.policy), &BuildOptions::default(), None).unwrap())
        });
        fixtures.push((label, bytes, signed));
    }
    // The part of the builder that does not grow with the agent count: one
    // DLP set with the ten default detectors (forward + reverse DFA).
    cg.bench_function("dlp_default_set", |b| {
        b.iter(|| build_dlp(black_box(&Detector::ALL), &[], DlpAction::Redact, [0; 32]).unwrap())
    });
    cg.finish();

    build(c, &key);

    let mut g = c.benchmark_group("load");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30);
    for (label, bytes, signed) in &fixtures {
        g.bench_function(format!("{label}/unsigned"), |b| {
            b.iter(|| Bundle::load(black_box(bytes), &[]).unwrap())
        });
        g.bench_function(format!("{label}/signed_verified"), |b| {
            b.iter(|| Bundle::load(black_box(signed), &trusted).unwrap())
        });
    }
    g.finish();
}

/// `aegis build` as a library call, as the `wasm` bench and the CLI use
/// it: front-end, bundle signed with the DLP hash key derived from the
/// key, load-back check against the key, bundle embedded in the generic
/// filter `.wasm`, module signature. Only file I/O is left out.
fn build(c: &mut Criterion, key: &SigningKey) {
    let filter = generic_filter().unwrap();
    let (sources, _) = generated_policy(1000, true);
    let loaded = load(&sources);

    let t0 = Instant::now();
    let l = frontend::load_sources(&sources, None).unwrap();
    let blob = build_signed(&l.policy, key, filter, 0).unwrap();
    let cold = t0.elapsed();
    eprintln!(
        "build/1000_agents: generic filter {} bytes, signed bundle {} bytes, blob {} bytes \
         ({:.3} MB; target < 1.5 MB: {}); cold run {cold:?}",
        filter.len(),
        blob.bundle.len(),
        blob.wasm.len(),
        blob.wasm.len() as f64 / 1e6,
        if blob.wasm.len() < 1_500_000 {
            "met"
        } else {
            "missed"
        },
    );
    let (bundle, _) = signed_bundle(&loaded.policy, key, 0).unwrap();

    let mut g = c.benchmark_group("build");
    g.sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(10);
    g.bench_function("1000_agents/aegis_build", |b| {
        b.iter(|| {
            let l = frontend::load_sources(black_box(&sources), None).unwrap();
            build_signed(&l.policy, key, filter, 0).unwrap()
        })
    });
    g.bench_function("1000_agents/build_signed", |b| {
        b.iter(|| build_signed(black_box(&loaded.policy), key, filter, 0).unwrap())
    });
    g.bench_function("1000_agents/embed_and_sign", |b| {
        b.iter(|| {
            let module = embed(black_box(filter), black_box(&bundle)).unwrap();
            wasmsig::sign(&module, key).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
