//! Engine-only timing loops for the wasm/native ratio (docs/performance.md).
//!
//! The same program is built natively and for `wasm32-wasip1`; the runner
//! (`benches/benches/portable.rs`) gives both builds the same input folder
//! and sets their results side by side. Nothing here knows about
//! proxy-wasm: a decision is `Bundle::decide` and a DLP case is
//! `dlp::Scanner::scan`, so the ratio is the engine's own, without the
//! host round trips the `wasm` bench includes.
//!
//! ```text
//! aegis-bench-portable DIR [--only NAME] [--warmup-ms N] [--batch-ms N] [--batches N]
//! ```
//!
//! `DIR/cases.tsv` lists the cases, one per line, fields separated by tabs
//! (file names are relative to `DIR`):
//!
//! ```text
//! decision  NAME  BUNDLE  AGENT  METHOD  AUTHORITY  PATH  BODY  VERDICT
//! dlp       NAME  BUNDLE  BODY   DETECTIONS
//! ```
//!
//! A `dlp` case scans `BODY` as JSON with the first DLP set of `BUNDLE`.
//! Each case is checked first (the verdict, or the number of detections)
//! and then timed: a warm-up, which also sizes a batch, then a number of
//! batches; the result is the median batch. One JSON line per case goes to
//! stdout.

use aegis_engine::unstable::dlp::{Scanner, Scratch as DlpScratch};
use aegis_engine::{BodyKind, Bundle, Caller, Request, Scratch};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Fixed clock for decisions (no token is verified, but the budget and
/// shadow logic read it).
const NOW: i64 = 1_750_000_000;
const HEADERS: [(&str, &str); 1] = [("content-type", "application/json")];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Opts {
    dir: PathBuf,
    only: Option<String>,
    warmup: Duration,
    batch: Duration,
    batches: usize,
}

fn parse_args() -> Result<Opts, String> {
    let mut args = std::env::args().skip(1);
    let mut dir = None;
    let mut opts = Opts {
        dir: PathBuf::new(),
        only: None,
        warmup: Duration::from_millis(300),
        batch: Duration::from_millis(20),
        batches: 21,
    };
    let number = |flag: &str, v: Option<String>| -> Result<u64, String> {
        let v = v.ok_or_else(|| format!("`{flag}` needs a value"))?;
        v.parse()
            .map_err(|_| format!("`{flag}`: `{v}` is not a whole number"))
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--only" => opts.only = Some(args.next().ok_or("`--only` needs a case name")?),
            "--warmup-ms" => opts.warmup = Duration::from_millis(number(&a, args.next())?),
            "--batch-ms" => opts.batch = Duration::from_millis(number(&a, args.next())?.max(1)),
            "--batches" => {
                opts.batches = usize::try_from(number(&a, args.next())?.max(1))
                    .map_err(|_| "`--batches`: too many".to_string())?
            }
            _ if a.starts_with("--") => return Err(format!("unknown option `{a}`")),
            _ if dir.is_none() => dir = Some(PathBuf::from(a)),
            _ => return Err(format!("unexpected argument `{a}`")),
        }
    }
    opts.dir = dir.ok_or(
        "usage: aegis-bench-portable DIR [--only NAME] [--warmup-ms N] [--batch-ms N] [--batches N]",
    )?;
    Ok(opts)
}

fn run() -> Result<(), String> {
    let opts = parse_args()?;
    let manifest = read_text(&opts.dir.join("cases.tsv"))?;
    let mut bundles: BTreeMap<String, Bundle> = BTreeMap::new();
    let mut ran = 0usize;
    for (n, line) in manifest.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        let at = |i: usize| f.get(i).copied().unwrap_or("");
        let name = at(1);
        if opts.only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let bundle_file = at(2);
        if !bundles.contains_key(bundle_file) {
            let bytes = read_bytes(&opts.dir.join(bundle_file))?;
            let b = Bundle::load(&bytes, &[])
                .map_err(|e| format!("`{bundle_file}` does not load: {e}"))?;
            bundles.insert(bundle_file.to_string(), b);
        }
        let bundle = bundles
            .get(bundle_file)
            .ok_or_else(|| format!("`{bundle_file}` is not loaded"))?;
        let out = match (at(0), f.len()) {
            ("decision", 9) => {
                let body = read_bytes(&opts.dir.join(at(7)))?;
                let case = DecisionCase {
                    agent: at(3),
                    method: at(4),
                    authority: at(5),
                    path: at(6),
                    body: &body,
                };
                decision(&opts, name, bundle, &case, at(8))?
            }
            ("dlp", 5) => {
                let body = read_bytes(&opts.dir.join(at(3)))?;
                let expect: u64 = at(4)
                    .parse()
                    .map_err(|_| format!("{name}: `{}` is not a detection count", at(4)))?;
                dlp(&opts, name, bundle, &body, expect)?
            }
            (kind, len) => {
                return Err(format!(
                    "cases.tsv line {}: `{kind}` with {len} fields is not a case",
                    n + 1
                ))
            }
        };
        println!("{out}");
        ran += 1;
    }
    if ran == 0 {
        return Err(match &opts.only {
            Some(o) => format!("no case named `{o}` in cases.tsv"),
            None => "cases.tsv lists no case".to_string(),
        });
    }
    Ok(())
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))
}

fn read_text(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))
}

struct DecisionCase<'c> {
    agent: &'c str,
    method: &'c str,
    authority: &'c str,
    path: &'c str,
    body: &'c [u8],
}

fn decision(
    opts: &Opts,
    name: &str,
    bundle: &Bundle,
    c: &DecisionCase<'_>,
    expect: &str,
) -> Result<String, String> {
    let mut scratch = Scratch::for_bundle(bundle);
    let req = Request {
        method: c.method,
        authority: c.authority,
        path: c.path,
        headers: &HEADERS[..],
        body: Some(c.body),
    };
    let caller = Caller::Given {
        agent: c.agent,
        tenant: None,
    };
    let d = bundle.decide(&req, caller, NOW, &mut scratch);
    let (verdict, reason) = (d.verdict.as_str(), d.reason.to_string());
    if verdict != expect {
        return Err(format!(
            "{name}: verdict `{verdict}`, expected `{expect}` ({reason})"
        ));
    }
    let t = measure(opts, || {
        let req = Request {
            method: black_box(c.method),
            authority: black_box(c.authority),
            path: black_box(c.path),
            headers: &HEADERS[..],
            body: Some(black_box(c.body)),
        };
        let caller = Caller::Given {
            agent: black_box(c.agent),
            tenant: None,
        };
        black_box(bundle.decide(&req, caller, NOW, &mut scratch).verdict);
    });
    let mut s = line_start(name, "decision");
    let _ = write!(
        s,
        ",\"verdict\":{},\"reason\":{}",
        json_str(verdict),
        json_str(&reason)
    );
    t.write(&mut s, None);
    s.push('}');
    Ok(s)
}

fn dlp(
    opts: &Opts,
    name: &str,
    bundle: &Bundle,
    body: &[u8],
    expect: u64,
) -> Result<String, String> {
    let spec = bundle
        .model
        .dlp
        .first()
        .ok_or_else(|| format!("{name}: the bundle has no DLP set"))?;
    let scanner = Scanner::load(spec).map_err(|e| format!("{name}: {e}"))?;
    let depth = bundle.model.limits.max_json_depth as usize;
    let mut ds = DlpScratch::new();
    let outcome = scanner
        .scan(BodyKind::Json, body, depth, &mut ds)
        .map_err(|e| format!("{name}: {e}"))?;
    let detections: u64 = ds.counts.iter().map(|&n| u64::from(n)).sum();
    if detections != expect {
        return Err(format!(
            "{name}: {detections} detections ({outcome:?}), expected {expect}"
        ));
    }
    // What the rewrite produced, so the runner can check that both builds
    // scanned the same way.
    let (out_len, out_fnv) = (ds.out.len(), fnv(&ds.out));
    let t = measure(opts, || {
        black_box(scanner.scan(BodyKind::Json, black_box(body), depth, &mut ds)).ok();
    });
    let mut s = line_start(name, "dlp");
    let _ = write!(
        s,
        ",\"detections\":{detections},\"out_len\":{out_len},\"out_fnv\":\"{out_fnv:016x}\""
    );
    t.write(&mut s, Some(body.len()));
    s.push('}');
    Ok(s)
}

fn line_start(name: &str, kind: &str) -> String {
    format!(
        "{{\"case\":{},\"kind\":\"{kind}\",\"arch\":\"{}\"",
        json_str(name),
        std::env::consts::ARCH
    )
}

/// Batch results, nanoseconds per iteration, sorted.
struct Timing {
    warmup_iters: u64,
    iters: u64,
    ns: Vec<f64>,
}

impl Timing {
    fn median(&self) -> f64 {
        let n = self.ns.len();
        let at = |i: usize| self.ns.get(i).copied().unwrap_or(f64::NAN);
        if n % 2 == 1 {
            at(n / 2)
        } else {
            (at(n / 2 - 1) + at(n / 2)) / 2.0
        }
    }

    fn write(&self, s: &mut String, bytes: Option<usize>) {
        let min = self.ns.first().copied().unwrap_or(f64::NAN);
        let max = self.ns.last().copied().unwrap_or(f64::NAN);
        let median = self.median();
        let _ = write!(
            s,
            ",\"warmup_iters\":{},\"iters_per_batch\":{},\"batches\":{},\"median_ns\":{median:.1},\"min_ns\":{min:.1},\"max_ns\":{max:.1}",
            self.warmup_iters,
            self.iters,
            self.ns.len()
        );
        if let Some(b) = bytes {
            // 10^6 bytes per second, as in the criterion tables.
            let _ = write!(
                s,
                ",\"bytes\":{b},\"mb_per_s\":{:.1}",
                b as f64 / median * 1e3
            );
        }
    }
}

/// Runs `f` for the warm-up time (at least three times), sizes a batch to
/// take about `opts.batch` from the warm-up's mean, then times
/// `opts.batches` batches. `Instant` is the WASI monotonic clock on
/// wasm32-wasip1; it is read twice per batch only.
fn measure(opts: &Opts, mut f: impl FnMut()) -> Timing {
    let start = Instant::now();
    let mut warmup_iters = 0u64;
    while warmup_iters < 3 || start.elapsed() < opts.warmup {
        f();
        warmup_iters += 1;
    }
    let per = start.elapsed().as_nanos() as f64 / warmup_iters as f64;
    let iters = ((opts.batch.as_nanos() as f64 / per.max(1.0)).ceil() as u64).max(1);
    let mut ns = Vec::with_capacity(opts.batches);
    for _ in 0..opts.batches {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        ns.push(t.elapsed().as_nanos() as f64 / iters as f64);
    }
    ns.sort_by(f64::total_cmp);
    Timing {
        warmup_iters,
        iters,
        ns,
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let t = |ns: Vec<f64>| Timing {
            warmup_iters: 0,
            iters: 1,
            ns,
        };
        assert_eq!(t(vec![1.0, 2.0, 9.0]).median(), 2.0);
        assert_eq!(t(vec![1.0, 2.0, 4.0, 9.0]).median(), 3.0);
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
