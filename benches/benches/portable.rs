//! The engine's wasm/native ratio: the same decision and DLP workloads, in
//! the same program (`benches/portable`), built natively and for
//! wasm32-wasip1 and run side by side with the same inputs.
//!
//! 1. Writes the inputs to `target/portable-bench/inputs/`: the
//!    1,000-agent bundle and the `decision` bench's requests on it, the DLP
//!    bench's bundle (default detector set) and 16 KB / 1 MB bodies, clean
//!    and with PII, and `cases.tsv` with the verdict or detection count
//!    each case must give (computed here with the native engine).
//! 2. Builds `aegis-bench-portable` natively and for wasm32-wasip1
//!    (`--release`: lto, codegen-units 1, opt-level 3, no RUSTFLAGS) with a
//!    nested cargo in `target/portable-bench/target`, so it neither waits on
//!    nor disturbs the outer build. `AEGIS_PORTABLE_NATIVE=FILE` and
//!    `AEGIS_PORTABLE_WASM=FILE` use prebuilt programs instead.
//! 3. For each round and each case: the native program as a child process,
//!    then the module under wasmtime (Cranelift, WASI preview 1, the input
//!    folder preopened read-only as `/in`). Each run checks its case, warms
//!    up, times batches and reports the median batch.
//! 4. Checks that both builds gave the same verdict, reason, detections and
//!    rewritten body, and prints a table: native, wasm and wasm/native
//!    (median over the rounds of each run's median batch), plus the ratio
//!    of the fastest batches, which other work on a shared machine
//!    disturbs least.
//!
//! ```text
//! cargo bench -p aegis-benches --bench portable [-- FILTER] [--rounds N]
//!     [--batches N] [--batch-ms N] [--warmup-ms N]
//! ```
//!
//! The JSON lines of every run are kept in
//! `target/portable-bench/results.jsonl`. With `AEGIS_PORTABLE_PERFMAP=1`
//! wasmtime writes a perf map (`/tmp/perf-PID.map`), so that `perf record`
//! over the bench names the module's functions.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use aegis_benches::{
    compile_sources, dlp_policy, generated_cases, generated_policy, json_body, load,
};
use aegis_compiler::nested_cargo;
use aegis_engine::builder::bundle::{compile, BuildOptions};
use aegis_engine::unstable::dlp::{Scanner, Scratch as DlpScratch};
use aegis_engine::{BodyKind, Bundle};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use wasmtime::{Engine, InstancePre, Linker, Module, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

const WASM_TARGET: &str = "wasm32-wasip1";
const PROGRAM: &str = "aegis-bench-portable";

struct Args {
    filter: Option<String>,
    rounds: usize,
    /// Passed on to the program.
    timing: Vec<String>,
}

fn args() -> Args {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        filter: None,
        rounds: 3,
        timing: Vec::new(),
    };
    while let Some(x) = it.next() {
        match x.as_str() {
            // What cargo passes to every bench target.
            "--bench" => {}
            "--rounds" => a.rounds = it.next().and_then(|v| v.parse().ok()).unwrap_or(3),
            "--batches" | "--batch-ms" | "--warmup-ms" => {
                let v = it.next().unwrap_or_else(|| panic!("`{x}` needs a value"));
                a.timing.extend([x, v]);
            }
            _ if x.starts_with("--") => panic!("unknown option `{x}`"),
            _ => a.filter = Some(x),
        }
    }
    a.rounds = a.rounds.max(1);
    a
}

/// One line of `cases.tsv`, and what the table shows for it.
struct Case {
    name: String,
    line: String,
    /// Body size for DLP cases (throughput in MB/s), `None` for decisions.
    bytes: Option<usize>,
}

fn write_inputs(dir: &Path) -> Vec<Case> {
    fs::create_dir_all(dir).unwrap();
    let mut cases = Vec::new();

    let (sources, stats) = generated_policy(1000, true);
    let loaded = load(&sources);
    let bytes = compile(&loaded.policy, &BuildOptions::default(), None).unwrap();
    fs::write(dir.join("decision_1000.bundle"), &bytes).unwrap();
    eprintln!(
        "inputs: generated policy of {} agents, bundle {} bytes",
        stats.agents,
        bytes.len()
    );
    for c in generated_cases(&loaded.policy) {
        let name = format!("decision/1000_agents/{}", c.label);
        let body_file = format!("{}.body", c.label);
        fs::write(dir.join(&body_file), &c.req.body).unwrap();
        let verdict = if c.allow { "allow" } else { "deny" };
        eprintln!(
            "inputs: {name}: agent {}, {} https://{}{}, body {} bytes, expect {verdict}",
            c.agent,
            c.req.method,
            c.req.authority,
            c.req.path,
            c.req.body.len()
        );
        let line = [
            "decision",
            &name,
            "decision_1000.bundle",
            &c.agent,
            &c.req.method,
            &c.req.authority,
            &c.req.path,
            &body_file,
            verdict,
        ]
        .join("\t");
        cases.push(Case {
            name,
            line,
            bytes: None,
        });
    }

    let dlp_bytes = compile_sources(&[("dlp.yaml".into(), dlp_policy("redact"))]);
    fs::write(dir.join("dlp.bundle"), &dlp_bytes).unwrap();
    let bundle = Bundle::load(&dlp_bytes, &[]).unwrap();
    let names: Vec<&str> = bundle.dlp_names(0).collect();
    eprintln!("inputs: dlp set 0: {names:?}");
    let scanner = Scanner::load(&bundle.model.dlp[0]).unwrap();
    let depth = bundle.model.limits.max_json_depth as usize;
    for (size, label) in [(16 * 1024, "16KB"), (1024 * 1024, "1MB")] {
        for pii in [false, true] {
            let kind = if pii { "pii" } else { "clean" };
            let name = format!("dlp/scanner/{label}/{kind}");
            let body = json_body(size, pii);
            let body_file = format!("{label}_{kind}.json");
            fs::write(dir.join(&body_file), &body).unwrap();
            let mut ds = DlpScratch::new();
            scanner.scan(BodyKind::Json, &body, depth, &mut ds).unwrap();
            let detections: u64 = ds.counts.iter().map(|&n| u64::from(n)).sum();
            assert_eq!(detections > 0, pii, "{name}");
            eprintln!(
                "inputs: {name}: {} bytes, {detections} detections",
                body.len()
            );
            let line = [
                "dlp",
                &name,
                "dlp.bundle",
                &body_file,
                &detections.to_string(),
            ]
            .join("\t");
            cases.push(Case {
                name,
                line,
                bytes: Some(body.len()),
            });
        }
    }
    let manifest: String = cases.iter().map(|c| format!("{}\n", c.line)).collect();
    fs::write(dir.join("cases.tsv"), manifest).unwrap();
    cases
}

/// Builds the program with a nested cargo in `target_dir`, for the host
/// or for `target`; returns the path of the result.
fn build(root: &Path, target_dir: &Path, target: Option<&str>) -> PathBuf {
    // The same code generation settings on both sides: the release
    // profile, no flags from the environment.
    let mut cmd = nested_cargo::build_command(root, target_dir);
    cmd.args(["--release", "-p", PROGRAM]);
    if let Some(t) = target {
        cmd.args(["--target", t]);
    }
    let t0 = Instant::now();
    let status = cmd.status().expect("cannot run cargo");
    assert!(
        status.success(),
        "building {PROGRAM} for {} failed ({status})",
        target.unwrap_or("the host")
    );
    eprintln!(
        "built {PROGRAM} for {} in {:.1} s",
        target.unwrap_or("the host"),
        t0.elapsed().as_secs_f64()
    );
    let mut out = target_dir.to_path_buf();
    if let Some(t) = target {
        out.push(t);
    }
    out.push("release");
    out.push(match target {
        Some(_) => format!("{PROGRAM}.wasm"),
        None => format!("{PROGRAM}{}", std::env::consts::EXE_SUFFIX),
    });
    out
}

fn program(var: &str, build_it: impl FnOnce() -> PathBuf) -> PathBuf {
    match std::env::var_os(var).filter(|v| !v.is_empty()) {
        Some(p) => {
            eprintln!("{var}: using {}", Path::new(&p).display());
            PathBuf::from(p)
        }
        None => build_it(),
    }
}

/// The wasm module, compiled once; every run gets a fresh store.
struct Wasm {
    engine: Engine,
    pre: InstancePre<WasiP1Ctx>,
}

impl Wasm {
    fn new(path: &Path) -> Wasm {
        let mut config = wasmtime::Config::new();
        config.strategy(wasmtime::Strategy::Cranelift);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        if std::env::var_os("AEGIS_PORTABLE_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).unwrap();
        let bytes = fs::read(path).unwrap();
        let t0 = Instant::now();
        let module = Module::new(&engine, &bytes).unwrap();
        eprintln!(
            "wasm module: {} bytes, compiled by Cranelift in {:.0} ms",
            bytes.len(),
            t0.elapsed().as_secs_f64() * 1e3
        );
        let mut linker: Linker<WasiP1Ctx> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s| s).unwrap();
        let pre = linker.instantiate_pre(&module).unwrap();
        Wasm { engine, pre }
    }

    fn run(&self, inputs: &Path, args: &[String]) -> String {
        let stdout = MemoryOutputPipe::new(1 << 20);
        let stderr = MemoryOutputPipe::new(1 << 20);
        let mut b = WasiCtxBuilder::new();
        b.arg(PROGRAM)
            .arg("/in")
            .args(args)
            .stdout(stdout.clone())
            .stderr(stderr.clone());
        b.preopened_dir(inputs, "/in", FsPerms::ReadOnly).unwrap();
        let mut store = Store::new(&self.engine, b.build_p1());
        let instance = self.pre.instantiate(&mut store).unwrap();
        let start = instance
            .get_typed_func::<(), ()>(&mut store, "_start")
            .unwrap();
        let code = match start.call(&mut store, ()) {
            Ok(()) => 0,
            Err(e) => match e.downcast_ref::<I32Exit>() {
                Some(I32Exit(code)) => *code,
                None => panic!(
                    "the module trapped: {e:?}\nstderr:\n{}",
                    String::from_utf8_lossy(&stderr.contents())
                ),
            },
        };
        assert_eq!(
            code,
            0,
            "the module failed:\n{}",
            String::from_utf8_lossy(&stderr.contents())
        );
        String::from_utf8(stdout.contents().to_vec()).unwrap()
    }
}

fn run_native(path: &Path, inputs: &Path, args: &[String]) -> String {
    let out = Command::new(path).arg(inputs).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{} failed ({}):\n{}",
        path.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn one_line(stdout: &str) -> Value {
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one result line: {stdout}");
    serde_json::from_str(lines[0]).unwrap()
}

/// What both builds must agree on.
fn fingerprint(v: &Value) -> String {
    ["verdict", "reason", "detections", "out_len", "out_fnv"]
        .iter()
        .filter_map(|k| v.get(*k).map(|x| format!("{k}={x}")))
        .collect::<Vec<_>>()
        .join(" ")
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// `YYYY-MM-DD HH:MM UTC` from Unix seconds (civil-from-days).
fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

fn main() {
    let a = args();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let work = target.join("portable-bench");
    let inputs = work.join("inputs");

    let cases: Vec<Case> = write_inputs(&inputs)
        .into_iter()
        .filter(|c| a.filter.as_deref().is_none_or(|f| c.name.contains(f)))
        .collect();
    assert!(!cases.is_empty(), "no case matches the filter");

    let nested = work.join("target");
    let native = program("AEGIS_PORTABLE_NATIVE", || build(&root, &nested, None));
    let wasm_path = program("AEGIS_PORTABLE_WASM", || {
        build(&root, &nested, Some(WASM_TARGET))
    });
    let wasm = Wasm::new(&wasm_path);

    let started = std::time::SystemTime::now();
    let mut log = String::new();
    // name -> (native medians, wasm medians)
    let mut results: BTreeMap<String, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    // name -> (native, wasm) fastest batch of all rounds
    let mut fastest: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    let mut fingerprints: BTreeMap<String, String> = BTreeMap::new();
    for round in 1..=a.rounds {
        for c in &cases {
            let mut args = vec!["--only".to_string(), c.name.clone()];
            args.extend(a.timing.iter().cloned());
            let n = run_native(&native, &inputs, &args);
            let w = wasm.run(&inputs, &args);
            log.push_str(&n);
            log.push_str(&w);
            let (n, w) = (one_line(&n), one_line(&w));
            for v in [&n, &w] {
                let fp = fingerprint(v);
                let first = fingerprints.entry(c.name.clone()).or_insert(fp.clone());
                assert_eq!(*first, fp, "{}: the builds disagree", c.name);
            }
            let (nm, wm) = (
                n["median_ns"].as_f64().unwrap(),
                w["median_ns"].as_f64().unwrap(),
            );
            eprintln!(
                "round {round}: {}: native {} wasm {} ({:.2}x)",
                c.name,
                fmt_ns(nm),
                fmt_ns(wm),
                wm / nm
            );
            let e = results.entry(c.name.clone()).or_default();
            e.0.push(nm);
            e.1.push(wm);
            let f = fastest
                .entry(c.name.clone())
                .or_insert((f64::INFINITY, f64::INFINITY));
            f.0 = f.0.min(n["min_ns"].as_f64().unwrap());
            f.1 = f.1.min(w["min_ns"].as_f64().unwrap());
        }
    }
    fs::write(work.join("results.jsonl"), &log).unwrap();

    let secs = started
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut table = format!(
        "\nengine only, {} round(s), median of each run's median batch; started {}\n\n\
         | case | native | wasm | wasm/native | fastest batches: wasm/native |\n\
         |---|---:|---:|---:|---:|\n",
        a.rounds,
        utc(secs)
    );
    for c in &cases {
        let (n, w) = &results[&c.name];
        let (n, w) = (median(n.clone()), median(w.clone()));
        let cell = |ns: f64| match c.bytes {
            Some(b) => format!("{:.0} MB/s ({})", b as f64 / ns * 1e3, fmt_ns(ns)),
            None => fmt_ns(ns),
        };
        // The fastest batch is the one least disturbed by other work on
        // the machine: a second view of the ratio when the medians drift.
        let (fn_, fw) = fastest[&c.name];
        let _ = writeln!(
            table,
            "| {} | {} | {} | {:.2}x | {:.2}x |",
            c.name,
            cell(n),
            cell(w),
            w / n,
            fw / fn_
        );
    }
    let wasm_dlp: Vec<f64> = cases
        .iter()
        .filter_map(|c| Some(c.bytes? as f64 / median(results[&c.name].1.clone()) * 1e3))
        .collect();
    if let Some(worst) = wasm_dlp.iter().copied().reduce(f64::min) {
        let _ = writeln!(
            table,
            "\nslowest DLP scan in wasm: {worst:.0} MB/s (target: >= 400 MB/s): {}",
            if worst >= 400.0 { "met" } else { "missed" }
        );
    }
    println!("{table}");
}
