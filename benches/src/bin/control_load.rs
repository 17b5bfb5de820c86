//! Load benchmark of the control plane: a real `aegis serve` on SQLite (a
//! file in a temporary directory) and on a throwaway PostgreSQL cluster,
//! driven over loopback by C concurrent clients, each with its own
//! keep-alive connection, for a fixed time per scenario:
//!
//! - `lease`: one lease of a small amount, then its final settle (the
//!   filter's steady state: one settle per lease);
//! - `approval`: create an approval, decide it (approver), redeem it
//!   (gateway); each call is timed on its own.
//!
//! Every answer's status and body are checked; any error is counted,
//! printed, and makes the run exit 1. The result is a markdown table:
//! iterations/s and requests/s per run, p50 / p99 / max latency per call
//! kind. The load generator shares the machine with the server (and with
//! PostgreSQL): on few cores it takes CPU from them.
//!
//! ```sh
//! cargo run --release -p aegis-benches --bin control_load
//! cargo run --release -p aegis-benches --bin control_load -- --stores sqlite --clients 1,8 --secs 3
//! ```

#[path = "../../../compiler/tests/support/postgres.rs"]
mod postgres;

use clap::Parser;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Lease and approval throughput and latency of `aegis serve`")]
struct Args {
    /// The `aegis` binary; default: built with `cargo build --release -p aegis-compiler --bin aegis`.
    #[arg(long)]
    aegis: Option<PathBuf>,
    /// Stores to run against: `sqlite`, `postgres`.
    #[arg(long, value_delimiter = ',', default_values_t = [Store::Sqlite, Store::Postgres])]
    stores: Vec<Store>,
    /// Scenarios: `lease`, `approval`.
    #[arg(long, value_delimiter = ',', default_values_t = [Scenario::Lease, Scenario::Approval])]
    scenarios: Vec<Scenario>,
    /// Concurrent clients, one run per value.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 8, 32])]
    clients: Vec<usize>,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Unmeasured seconds before each run's measurement.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Store {
    Sqlite,
    Postgres,
}

impl std::fmt::Display for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Store::Sqlite => "sqlite",
            Store::Postgres => "postgres",
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    Lease,
    Approval,
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scenario::Lease => "lease",
            Scenario::Approval => "approval",
        })
    }
}

impl Scenario {
    /// The calls of one iteration, in order.
    fn calls(self) -> &'static [&'static str] {
        match self {
            Scenario::Lease => &["lease", "settle"],
            Scenario::Approval => &["create", "decide", "redeem"],
        }
    }
}

/// One agent per client (client `i` uses agent `i % AGENTS`), as a fleet of
/// proxies leasing for many agents would.
const AGENTS: usize = 64;
/// Large enough that no lease in any run is cut short.
const DAILY_USD: u32 = 1_000_000;
const WANT_USD: f64 = 0.01;
const SPENT_USD: f64 = 0.004;
/// Error messages printed per run; the count covers all of them.
const SHOWN_ERRORS: usize = 5;

fn policies() -> String {
    let mut s = String::from(
        "kind: ToolCatalog\ntools:\n  - name: llm\n    hosts: [api.example.com]\n    body: json\n    actions:\n      - {name: chat, method: POST, path: /v1/chat}\n",
    );
    for i in 0..AGENTS {
        let _ = write!(
            s,
            "---\nagent: {}\negress: {{allow_hosts: [api.example.com]}}\nbudget: {{daily_usd: {DAILY_USD}}}\nallowed_tools:\n  - name: llm\n    actions: [chat]\n    cost_usd: 0.01\n",
            agent_name(i)
        );
    }
    s
}

fn agent_name(i: usize) -> String {
    format!("bench-agent-{:02}", i % AGENTS)
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("error: some requests failed (see above); the numbers are not valid");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs every store, scenario and client count; `Ok(false)` when any request failed.
fn run(args: &Args) -> Result<bool, String> {
    if !(args.secs > 0.0 && args.warmup >= 0.0) {
        return Err("`--secs` must be positive and `--warmup` not negative".to_owned());
    }
    if args.clients.contains(&0) {
        return Err("`--clients` must be at least 1".to_owned());
    }
    let aegis = match &args.aegis {
        Some(p) => p.clone(),
        None => build_aegis()?,
    };
    let mut rows = Vec::new();
    let mut clean = true;
    for &store in &args.stores {
        let dir = tempfile::Builder::new()
            .prefix("aegis-control-load-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        // Declared before the server so it is dropped (stopped) after it.
        let mut pg = None;
        let db = match store {
            Store::Sqlite => format!("sqlite://{}", dir.path().join("aegis.db").display()),
            Store::Postgres => {
                let p = postgres::TempPostgres::start()
                    .map_err(|e| format!("temporary PostgreSQL: {e}"))?;
                let url = p.url();
                pg = Some(p);
                url
            }
        };
        let server = Serve::start(&aegis, &db, dir.path())?;
        let gateway = admin_token(&aegis, &db, "gateway", "*", "bench-edge")?;
        let approver = admin_token(&aegis, &db, "approver", "default", "bench-approver")?;
        let tokens = Arc::new(Tokens { gateway, approver });
        eprintln!("{store}: {} on {}", server.url, redact(&db));
        for &scenario in &args.scenarios {
            for &clients in &args.clients {
                let r = measure(&server.url, &tokens, scenario, clients, args)?;
                eprintln!(
                    "  {scenario} x{clients}: {} iterations, {} errors",
                    r.iterations, r.errors
                );
                for e in &r.shown {
                    eprintln!("    {e}");
                }
                clean &= r.errors == 0;
                rows.push((store, scenario, clients, r));
            }
        }
        drop(server);
        drop(pg);
    }
    print!("{}", table(&rows));
    Ok(clean)
}

/// `cargo build --release -p aegis-compiler --bin aegis`, then its path.
fn build_aegis() -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("no workspace root above the benches crate")?
        .to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "-p",
            "aegis-compiler",
            "--bin",
            "aegis",
        ])
        .current_dir(&root)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("`cargo build --release` failed ({status})"));
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    Ok(target.join("release").join("aegis"))
}

/// The database URL without a password, for printing.
fn redact(db: &str) -> String {
    match (db.find("://"), db.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!(
            "{}://…@{}",
            db.get(..s).unwrap_or(""),
            db.get(at + 1..).unwrap_or("")
        ),
        _ => db.to_owned(),
    }
}

struct Tokens {
    gateway: String,
    approver: String,
}

/// An `aegis serve` process on a free loopback port, killed on drop.
struct Serve {
    child: Child,
    url: String,
}

impl Serve {
    fn start(aegis: &Path, db: &str, dir: &Path) -> Result<Serve, String> {
        let file = dir.join("policies.yaml");
        std::fs::write(&file, policies()).map_err(|e| format!("`{}`: {e}", file.display()))?;
        let mut child = Command::new(aegis)
            .args(["serve", "--db", db, "--listen", "127.0.0.1:0", "--policies"])
            .arg(&file)
            .arg("--admin-token-file")
            .arg(dir.join("admin.token"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start `{}`: {e}", aegis.display()))?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            return Err("`aegis serve` has no stdout".to_owned());
        };
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(u) = line.strip_prefix("listening on ") {
                        break u.trim().to_owned();
                    }
                }
                _ => {
                    let _ = child.kill();
                    let status = child.wait();
                    return Err(format!(
                        "`aegis serve` exited before listening ({status:?})"
                    ));
                }
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Serve { child, url })
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A service token from `aegis admin token --db`.
fn admin_token(
    aegis: &Path,
    db: &str,
    role: &str,
    tenant: &str,
    subject: &str,
) -> Result<String, String> {
    let out = Command::new(aegis)
        .args([
            "admin",
            "token",
            "--db",
            db,
            "--role",
            role,
            "--tenant",
            tenant,
            "--subject",
            subject,
        ])
        .output()
        .map_err(|e| format!("cannot run `aegis admin token`: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`aegis admin token --role {role}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// What one run measured.
struct RunResult {
    iterations: u64,
    /// Latencies in nanoseconds per call kind, in [`Scenario::calls`] order.
    latencies: Vec<Vec<u64>>,
    window: Duration,
    errors: u64,
    shown: Vec<String>,
}

/// Unique approval digests across runs on one server: the same pending
/// digest would answer the existing approval instead of creating one.
static DIGESTS: AtomicU64 = AtomicU64::new(1);

fn measure(
    url: &str,
    tokens: &Arc<Tokens>,
    scenario: Scenario,
    clients: usize,
    args: &Args,
) -> Result<RunResult, String> {
    let start = Instant::now();
    let measured_from = start + Duration::from_secs_f64(args.warmup);
    let end = measured_from + Duration::from_secs_f64(args.secs);
    let handles: Vec<_> = (0..clients)
        .map(|i| {
            let (url, tokens) = (url.to_owned(), Arc::clone(tokens));
            std::thread::spawn(move || {
                client(&url, &tokens, scenario, &agent_name(i), measured_from, end)
            })
        })
        .collect();
    let mut total = RunResult {
        iterations: 0,
        latencies: vec![Vec::new(); scenario.calls().len()],
        window: end.saturating_duration_since(measured_from),
        errors: 0,
        shown: Vec::new(),
    };
    for h in handles {
        let r = h
            .join()
            .map_err(|_| "a client thread panicked".to_owned())?;
        total.iterations += r.iterations;
        for (all, mine) in total.latencies.iter_mut().zip(r.latencies) {
            all.extend(mine);
        }
        total.errors += r.errors;
        for e in r.shown {
            if total.shown.len() < SHOWN_ERRORS {
                total.shown.push(e);
            }
        }
    }
    Ok(total)
}

/// One client: its own connection (ureq keeps it alive between calls),
/// iterating until `end`; only iterations started after `measured_from`
/// are recorded.
fn client(
    url: &str,
    tokens: &Tokens,
    scenario: Scenario,
    agent: &str,
    measured_from: Instant,
    end: Instant,
) -> RunResult {
    let http = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .max_idle_connections_per_host(1)
        .build();
    let mut r = RunResult {
        iterations: 0,
        latencies: vec![Vec::new(); scenario.calls().len()],
        window: Duration::ZERO,
        errors: 0,
        shown: Vec::new(),
    };
    loop {
        let began = Instant::now();
        if began >= end {
            break;
        }
        let mut times = [0_u64; 3];
        let outcome = match scenario {
            Scenario::Lease => lease_once(&http, url, tokens, agent, &mut times),
            Scenario::Approval => approval_once(&http, url, tokens, agent, &mut times),
        };
        match outcome {
            Ok(()) if began >= measured_from => {
                r.iterations += 1;
                for (all, t) in r.latencies.iter_mut().zip(times) {
                    all.push(t);
                }
            }
            Ok(()) => {}
            Err(e) => {
                r.errors += 1;
                if r.shown.len() < SHOWN_ERRORS {
                    r.shown.push(e);
                }
            }
        }
    }
    r
}

fn lease_once(
    http: &ureq::Agent,
    url: &str,
    t: &Tokens,
    agent: &str,
    times: &mut [u64; 3],
) -> Result<(), String> {
    let day = aegis_control::utc_day(now_ms());
    let (ns, v) = post(
        http,
        url,
        "/v1/budgets/lease",
        &t.gateway,
        &json!({"tenant": "default", "agent": agent, "day": day, "want_usd": WANT_USD}),
        200,
    )?;
    times[0] = ns;
    let granted = v.get("granted_usd").and_then(Value::as_f64);
    let Some(id) = v
        .get("lease_id")
        .and_then(Value::as_str)
        .filter(|_| granted == Some(WANT_USD))
    else {
        return Err(format!("lease: not granted in full: {v}"));
    };
    let (ns, v) = post(
        http,
        url,
        "/v1/budgets/settle",
        &t.gateway,
        &json!({"lease_id": id, "spent_usd": SPENT_USD, "final": true}),
        200,
    )?;
    times[1] = ns;
    if v.get("state").and_then(Value::as_str) != Some("settled") {
        return Err(format!("settle: not settled: {v}"));
    }
    Ok(())
}

fn approval_once(
    http: &ureq::Agent,
    url: &str,
    t: &Tokens,
    agent: &str,
    times: &mut [u64; 3],
) -> Result<(), String> {
    let digest = format!("{:064x}", DIGESTS.fetch_add(1, Ordering::Relaxed));
    let (ns, v) = post(
        http,
        url,
        "/v1/approvals",
        &t.gateway,
        &json!({"tenant": "default", "agent": agent, "tool": "llm", "action": "chat",
                "rule": format!("{agent}/llm/chat#0"), "reason": "a person approves this call",
                "policy_version": "bench", "digest": digest, "summary": {"model": "m", "max_tokens": 100}}),
        201,
    )?;
    times[0] = ns;
    let Some(id) = v.get("approval_id").and_then(Value::as_str) else {
        return Err(format!("create: no `approval_id`: {v}"));
    };
    let (ns, v) = post(
        http,
        url,
        &format!("/v1/approvals/{id}/decision"),
        &t.approver,
        &json!({"approve": true, "comment": "load test"}),
        200,
    )?;
    times[1] = ns;
    if v.get("status").and_then(Value::as_str) != Some("approved") {
        return Err(format!("decide: not approved: {v}"));
    }
    let (ns, v) = post(
        http,
        url,
        &format!("/v1/approvals/{id}/redeem"),
        &t.gateway,
        &json!({"digest": digest}),
        200,
    )?;
    times[2] = ns;
    if v.get("approved_by").and_then(Value::as_str) != Some("bench-approver") {
        return Err(format!("redeem: unexpected answer: {v}"));
    }
    Ok(())
}

/// One POST; its latency in nanoseconds (request sent to body read) and its
/// JSON answer, or an error unless the status is `want`.
fn post(
    http: &ureq::Agent,
    url: &str,
    path: &str,
    token: &str,
    body: &Value,
    want: u16,
) -> Result<(u64, Value), String> {
    let text = body.to_string();
    let t0 = Instant::now();
    let res = http
        .post(&format!("{url}{path}"))
        .set("authorization", &format!("Bearer {token}"))
        .set("content-type", "application/json")
        .send_string(&text);
    let resp = match res {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(format!("POST {path}: {e}")),
    };
    let status = resp.status();
    let answer = resp
        .into_string()
        .map_err(|e| format!("POST {path}: reading the answer: {e}"))?;
    let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
    if status != want {
        return Err(format!(
            "POST {path}: status {status} (want {want}): {answer}"
        ));
    }
    let v = serde_json::from_str(&answer)
        .map_err(|e| format!("POST {path}: not JSON ({e}): {answer}"))?;
    Ok((ns, v))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The `q` quantile (nearest rank) of sorted values.
fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted.get(rank - 1).copied().unwrap_or(0)
}

fn ms(ns: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let ms = ns as f64 / 1e6;
    if ms < 10.0 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.1}")
    }
}

fn table(rows: &[(Store, Scenario, usize, RunResult)]) -> String {
    let mut out = String::from(
        "| store | scenario | clients | iterations/s | requests/s | call | p50 ms | p99 ms | max ms | errors |\n\
         |---|---|---:|---:|---:|---|---:|---:|---:|---:|\n",
    );
    for (store, scenario, clients, r) in rows {
        let secs = r.window.as_secs_f64();
        #[allow(clippy::cast_precision_loss)]
        let per_sec = |n: u64| n as f64 / secs;
        let calls = scenario.calls().len() as u64;
        for (call, lat) in scenario.calls().iter().zip(&r.latencies) {
            let mut sorted = lat.clone();
            sorted.sort_unstable();
            let _ = writeln!(
                out,
                "| {store} | {scenario} | {clients} | {:.0} | {:.0} | {call} | {} | {} | {} | {} |",
                per_sec(r.iterations),
                per_sec(r.iterations * calls),
                ms(quantile(&sorted, 0.50)),
                ms(quantile(&sorted, 0.99)),
                ms(sorted.last().copied().unwrap_or(0)),
                r.errors,
            );
        }
    }
    out
}
