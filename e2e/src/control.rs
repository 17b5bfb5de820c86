//! A real control plane (`aegis serve`, docs/control-plane.md) for the
//! e2e tests, and an Envoy whose filter calls it.
//!
//! [`ControlPlane`] is one `aegis serve` process on a loopback port with
//! its SQLite store in the test's folder: started and awaited on
//! `/readyz`, its tokens minted with `aegis admin token`, approvals decided
//! with the `aegis approvals` CLI as a person would, and the faults the
//! filter must survive: killed (SIGKILL), paused (SIGSTOP) and resumed
//! (SIGCONT), restarted on the same store and port. Killed when dropped.
//!
//! [`start_gateway`] starts Envoy from `e2e/tests/fixtures/control-plane/
//! envoy.yaml`: the sidecar config plus the `aegis_control` cluster and
//! the filter's `control_plane` object, with the ports, the blob, the
//! trusted key and the gateway token of the test.
//!
//! The `aegis` binary is `AEGIS_BIN` (as for `envoy/demo-blob.sh` and the
//! real-client suite), else `target/debug/aegis`, brought up to date with
//! `cargo build -p aegis-compiler --bin aegis` first: `cargo test -p
//! aegis-e2e` alone does not build another package's binary.

use crate::config::{self, Gateway, Listener};
use crate::envoy::free_ports;
use crate::{err, repo_root, Result};
use serde_json::Value;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long `aegis serve` may take to answer `/readyz` (it migrates the
/// store and compiles the policies first).
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The cluster the fixture config names for the control plane.
pub const CLUSTER: &str = "aegis_control";

/// The `aegis` binary the tests run (see the module docs).
pub fn aegis_bin() -> Result<PathBuf> {
    static BIN: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| find_aegis().map_err(|e| e.0))
        .clone()
        .map_err(err)
}

fn find_aegis() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("AEGIS_BIN").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(err(format!("AEGIS_BIN=`{}` is not a file", p.display())))
        };
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(&cargo)
        .args([
            "build",
            "--quiet",
            "--locked",
            "-p",
            "aegis-compiler",
            "--bin",
            "aegis",
        ])
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| err(format!("cannot run cargo to build `aegis`: {e}")))?;
    if !out.status.success() {
        return Err(err(format!(
            "`cargo build -p aegis-compiler --bin aegis` failed (or set AEGIS_BIN):\n{}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| repo_root().join("target"), PathBuf::from);
    let bin = target.join("debug").join("aegis");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(err(format!(
            "no `aegis` at {} after the build; set AEGIS_BIN",
            bin.display()
        )))
    }
}

/// What a process the tests run printed, for failure messages.
fn show(out: &Output) -> String {
    format!(
        "exit {}; stdout: {}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

/// One `aegis serve` process (or none, between a kill and a restart).
pub struct ControlPlane {
    bin: PathBuf,
    child: Option<Child>,
    /// Stopped with SIGSTOP, not yet continued.
    paused: bool,
    port: u16,
    dir: PathBuf,
    policies: Vec<PathBuf>,
    /// `--approval-ttl`.
    approval_ttl: String,
    starts: u32,
    /// More `aegis serve` arguments ([`ControlPlane::start_with`]).
    extra_args: Vec<String>,
}

impl ControlPlane {
    /// Starts `aegis serve` with its store in `dir` and `policies`
    /// published, on a free loopback port.
    pub fn start(dir: &Path, policies: &[PathBuf]) -> Result<ControlPlane> {
        ControlPlane::start_with(dir, policies, &[], None)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`, what the CLI's `--server` takes.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The store, as `--db` takes it.
    pub fn db(&self) -> String {
        format!("sqlite://{}", self.dir.join("aegis.db").display())
    }

    /// The service's log so far (stderr of every start).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }

    fn spawn(&mut self) -> Result<()> {
        self.starts += 1;
        let log_path = self.dir.join("serve.log");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| err(format!("cannot open {}: {e}", log_path.display())))?;
        let log2 = log
            .try_clone()
            .map_err(|e| err(format!("cannot open {}: {e}", log_path.display())))?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve")
            .args(["--db", &self.db()])
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--public-url", &self.url()])
            .args(["--approval-ttl", &self.approval_ttl])
            .arg("--admin-token-file")
            .arg(self.dir.join("admin.token"));
        for p in &self.policies {
            cmd.arg("--policies").arg(p);
        }
        cmd.args(&self.extra_args);
        let child = cmd
            .current_dir(&self.dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| err(format!("cannot start `{}`: {e}", self.bin.display())))?;
        self.child = Some(child);
        self.paused = false;
        self.wait_ready()
    }

    /// Polls `/readyz` until it answers 200; fails early when the process
    /// exits (a port taken, a policy that does not compile).
    fn wait_ready(&mut self) -> Result<()> {
        let started = Instant::now();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_millis(500)))
            .build()
            .into();
        let url = format!("{}/readyz", self.url());
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return Err(err(format!(
                        "aegis serve exited ({status}) before it was ready; its log:\n{}",
                        self.log()
                    )));
                }
            }
            if let Ok(r) = agent.get(&url).call() {
                if r.status() == 200 {
                    return Ok(());
                }
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(err(format!(
                    "aegis serve was not ready after {READY_TIMEOUT:?}; its log:\n{}",
                    self.log()
                )));
            }
            // Polling interval, not a wait for something to happen.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` to this process only (by its id).
    fn signal(&self, signal: &str) -> Result<()> {
        let Some(c) = self.child.as_ref() else {
            return Err(err("aegis serve is not running"));
        };
        let out = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(c.id().to_string())
            .output()
            .map_err(|e| err(format!("cannot run kill: {e}")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(err(format!("kill -{signal}: {}", show(&out))))
        }
    }

    /// SIGKILL: no shutdown, nothing flushed that was not already durable.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()
                .map_err(|e| err(format!("cannot kill aegis serve: {e}")))?;
            c.wait()
                .map_err(|e| err(format!("cannot reap aegis serve: {e}")))?;
        }
        self.paused = false;
        Ok(())
    }

    /// SIGSTOP: the process keeps its port (the kernel still accepts
    /// connections) and answers nothing: a control plane too slow.
    pub fn pause(&mut self) -> Result<()> {
        self.signal("STOP")?;
        self.paused = true;
        Ok(())
    }

    /// SIGCONT after [`ControlPlane::pause`].
    pub fn resume(&mut self) -> Result<()> {
        self.signal("CONT")?;
        self.paused = false;
        Ok(())
    }

    /// A new process on the same store and port (after a kill, or killing
    /// the running one first).
    pub fn restart(&mut self) -> Result<()> {
        self.kill()?;
        self.spawn()
    }

    /// The `aegis` binary with `args`, run to completion.
    pub fn run(&self, args: &[&str]) -> Result<Output> {
        Command::new(&self.bin)
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| err(format!("cannot run `{}`: {e}", self.bin.display())))
    }

    /// `aegis admin token --db ... --role ROLE --tenant TENANT --subject
    /// SUBJECT`: a service token straight from the store.
    pub fn token(&self, role: &str, tenant: &str, subject: &str) -> Result<String> {
        let db = self.db();
        let out = self.run(&[
            "admin",
            "token",
            "--db",
            &db,
            "--role",
            role,
            "--tenant",
            tenant,
            "--subject",
            subject,
            "--ttl",
            "1h",
        ])?;
        if !out.status.success() {
            return Err(err(format!("aegis admin token: {}", show(&out))));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// A CLI command against this service (`--server`, `--token`), its
    /// output as JSON (`--format json`). `Err` when it exits non-zero.
    pub fn cli_json(&self, token: &str, args: &[&str]) -> Result<Value> {
        let url = self.url();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--server", &url, "--token", token, "--format", "json"]);
        let out = self.run(&all)?;
        if !out.status.success() {
            return Err(err(format!("aegis {}: {}", args.join(" "), show(&out))));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| {
            err(format!(
                "aegis {}: output is not JSON ({e}): {}",
                args.join(" "),
                show(&out)
            ))
        })
    }

    /// `aegis approvals approve ID [--comment C]`, as a person would.
    pub fn approve(&self, approver: &str, id: &str, comment: Option<&str>) -> Result<Value> {
        let mut args = vec!["approvals", "approve", id];
        if let Some(c) = comment {
            args.extend(["--comment", c]);
        }
        self.cli_json(approver, &args)
    }

    /// `aegis approvals deny ID [--comment C]`.
    pub fn deny(&self, approver: &str, id: &str, comment: Option<&str>) -> Result<Value> {
        let mut args = vec!["approvals", "deny", id];
        if let Some(c) = comment {
            args.extend(["--comment", c]);
        }
        self.cli_json(approver, &args)
    }

    /// `aegis approvals list [--status S]`: the queue, newest first.
    pub fn list(&self, token: &str, status: Option<&str>) -> Result<Vec<Value>> {
        let mut args = vec!["approvals", "list"];
        if let Some(s) = status {
            args.extend(["--status", s]);
        }
        let v = self.cli_json(token, &args)?;
        v.get("approvals")
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| err(format!("aegis approvals list: no `approvals` in {v}")))
    }

    /// Waits until `aegis approvals list` shows an approval `pred` accepts
    /// (polling the CLI, as a person refreshing the queue would); `None`
    /// when none did within `timeout`.
    pub fn wait_for_approval(
        &self,
        token: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Option<Value>> {
        let started = Instant::now();
        loop {
            if let Some(a) = self.list(token, None)?.into_iter().find(|a| pred(a)) {
                return Ok(Some(a));
            }
            if started.elapsed() > timeout {
                return Ok(None);
            }
            // Polling interval, not a wait for something to happen.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `aegis audit export --db ...`: every audit event, oldest first.
    pub fn audit(&self) -> Result<Vec<Value>> {
        let db = self.db();
        let out = self.run(&["audit", "export", "--db", &db])?;
        if !out.status.success() {
            return Err(err(format!("aegis audit export: {}", show(&out))));
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).map_err(|e| err(format!("audit line `{l}`: {e}"))))
            .collect()
    }
}

impl ControlPlane {
    /// Like [`ControlPlane::start`], with more `aegis serve` arguments
    /// (`--trust KEY.pub`, ...), and on `port` when given: a second
    /// service standing in for one killed on that port, which the
    /// gateway's cluster still points at.
    pub fn start_with(
        dir: &Path,
        policies: &[PathBuf],
        extra_args: &[String],
        port: Option<u16>,
    ) -> Result<ControlPlane> {
        std::fs::create_dir_all(dir)
            .map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
        let mut cp = ControlPlane {
            bin: aegis_bin()?,
            child: None,
            paused: false,
            port: port.unwrap_or(0),
            dir: dir.to_path_buf(),
            policies: policies.to_vec(),
            approval_ttl: "1h".into(),
            starts: 0,
            extra_args: extra_args.to_vec(),
        };
        if port.is_some() {
            cp.spawn()?;
            return Ok(cp);
        }
        let mut last = err("not started");
        // A port found free may be taken before the service binds it.
        for _ in 0..3 {
            cp.port = free_ports(1)?
                .first()
                .copied()
                .ok_or_else(|| err("no port"))?;
            match cp.spawn() {
                Ok(()) => return Ok(cp),
                Err(e) if e.0.contains("ddress already in use") => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // A stopped process is killed all the same; continued first so
        // nothing of it lingers.
        if self.paused {
            let _ = self.resume();
        }
        let _ = self.kill();
    }
}

/// The test Envoy config for the control plane.
pub fn fixture_config() -> PathBuf {
    repo_root()
        .join("e2e")
        .join("tests")
        .join("fixtures")
        .join("control-plane")
        .join("envoy.yaml")
}

/// A listener whose filter calls the control plane.
#[derive(Debug, Clone)]
pub struct CpListener {
    pub listener: Listener,
    /// Keys set in the filter's `control_plane` object (`token`,
    /// `approval_hold_ms`, ...), over the fixture's.
    pub control_plane: serde_json::Map<String, Value>,
}

/// Starts Envoy with [`fixture_config`]: one listener per entry (sidecar
/// mode: headers held), the `upstream` cluster on `upstream_port` and
/// `aegis_control` on `control_port`.
pub fn start_gateway(
    envoy_bin: &Path,
    workdir: &Path,
    upstream_port: u16,
    control_port: u16,
    listeners: &[CpListener],
) -> Result<Gateway> {
    let fixture = config::load(&fixture_config())?;
    let plain: Vec<config::Listener> = listeners.iter().map(|l| l.listener.clone()).collect();
    config::start_from(
        envoy_bin,
        &fixture,
        "control-plane",
        workdir,
        upstream_port,
        &plain,
        |cfg| {
            config::set_cluster_port(cfg, CLUSTER, control_port)?;
            let all = cfg
                .pointer_mut("/static_resources/listeners")
                .and_then(Value::as_array_mut)
                .ok_or_else(|| err("the config has no listeners"))?;
            for (l, spec) in all.iter_mut().zip(listeners) {
                config::edit_filter_configuration(l, |fc| {
                    let cp = fc
                        .get_mut("control_plane")
                        .and_then(Value::as_object_mut)
                        .ok_or_else(|| err("the fixture's filter has no `control_plane` object"))?;
                    for (k, v) in &spec.control_plane {
                        cp.insert(k.clone(), v.clone());
                    }
                    Ok(())
                })?;
            }
            Ok(())
        },
    )
}
