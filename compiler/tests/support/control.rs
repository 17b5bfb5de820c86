//! A real `aegis serve` process on loopback for the control-plane tests,
//! and a small JSON-over-HTTP client for talking to it.

#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const AEGIS: &str = env!("CARGO_BIN_EXE_aegis");

/// Policies with two tenants' agents and daily budgets.
pub const POLICIES: &str = r#"
kind: ToolCatalog
tools:
  - name: openai
    hosts: [api.openai.com]
    body: json
    actions:
      - {name: chat, method: POST, path: /v1/chat/completions}
---
agent: research-agent
egress: {allow_hosts: [api.openai.com]}
budget: {daily_usd: 20, rps: 5}
allowed_tools:
  - name: openai
    actions: [chat]
    cost_usd: 0.02
---
agent: finance-agent
tenant: acme
egress: {allow_hosts: [api.openai.com]}
budget: {daily_usd: 50}
allowed_tools:
  - name: openai
    actions: [chat]
---
agent: finance-agent
tenant: globex
egress: {allow_hosts: [api.openai.com]}
budget: {daily_usd: 5}
allowed_tools:
  - name: openai
    actions: [chat]
"#;

/// One `aegis serve` process.
pub struct Serve {
    child: Option<Child>,
    pub url: String,
    pub db: String,
    pub dir: PathBuf,
    extra: Vec<String>,
    /// The bootstrap admin token (`*`), read from its file.
    pub admin: String,
}

impl Serve {
    /// Starts `aegis serve` on `db` with the test policies, state in `dir`.
    pub fn start(db: &str, dir: &Path, extra: &[&str]) -> Serve {
        let policies = dir.join("policies.yaml");
        if !policies.exists() {
            std::fs::write(&policies, POLICIES).unwrap();
        }
        let mut s = Serve {
            child: None,
            url: String::new(),
            db: db.to_owned(),
            dir: dir.to_owned(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            admin: String::new(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let token_file = self.dir.join("admin.token");
        let mut cmd = Command::new(AEGIS);
        cmd.args([
            "serve",
            "--db",
            &self.db,
            "--listen",
            "127.0.0.1:0",
            "--policies",
        ])
        .arg(self.dir.join("policies.yaml"))
        .arg("--admin-token-file")
        .arg(&token_file)
        .args(&self.extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(u) = line.strip_prefix("listening on ") {
                        break u.trim().to_owned();
                    }
                }
                other => {
                    let status = child.wait();
                    panic!("aegis serve exited before listening: {other:?} {status:?}");
                }
            }
        };
        // Keep draining stdout so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        self.url = url;
        self.admin = std::fs::read_to_string(&token_file)
            .unwrap()
            .trim()
            .to_owned();
        self.child = Some(child);
    }

    /// SIGKILL: no shutdown, no final flush.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM, then wait for the graceful exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().unwrap();
        Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()
            .unwrap();
        c.wait().unwrap()
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// A service token from `aegis admin token --db`.
    pub fn token(&self, role: &str, tenant: &str, subject: &str) -> String {
        let out = Command::new(AEGIS)
            .args([
                "admin",
                "token",
                "--db",
                &self.db,
                "--role",
                role,
                "--tenant",
                tenant,
                "--subject",
                subject,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        call(&self.url, "GET", path, token, None)
    }

    pub fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        call(&self.url, "POST", path, token, Some(body))
    }

    /// Runs the `aegis` CLI against this server.
    pub fn cli(&self, token: &str, args: &[&str]) -> std::process::Output {
        Command::new(AEGIS)
            .args(args)
            .env("AEGIS_SERVER", &self.url)
            .env("AEGIS_TOKEN", token)
            .output()
            .unwrap()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build()
}

/// One request; any status is returned with its JSON body (or the text as
/// a JSON string).
pub fn call(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    try_call(base, method, path, token, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Like [`call`], but a transport failure (connection refused or reset)
/// is an `Err` instead of a panic.
pub fn try_call(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    let mut req = agent().request(method, &format!("{base}{path}"));
    if let Some(t) = token {
        req = req.set("authorization", &format!("Bearer {t}"));
    }
    let res = match body {
        Some(b) => req.send_json(b.clone()),
        None => req.call(),
    };
    let resp = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(e.to_string()),
    };
    let status = resp.status();
    let text = resp.into_string().map_err(|e| e.to_string())?;
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, v))
}

/// The API error code of an error body.
pub fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

/// Today, UTC, as the API wants it.
pub fn today() -> String {
    aegis_control::utc_day(
        i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap(),
    )
}

pub const DIGEST_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
pub const DIGEST_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// The body a gateway sends for a $7,500 payment that needs a person.
pub fn approval(tenant: &str, digest: &str) -> Value {
    serde_json::json!({"tenant": tenant, "agent": "finance-agent", "tool": "stripe-payments", "action": "create_payment",
           "rule": "finance-agent/stripe-payments/create_payment#0", "reason": "`amount` must be a number <= 5000",
           "policy_version": "v1", "digest": digest, "summary": {"amount": 7500, "currency": "usd"}})
}

impl Serve {
    /// The number of audit records: a request that must change nothing
    /// must leave it as it was.
    pub fn audit_len(&self) -> u64 {
        let (st, v) = self.get("/v1/audit/verify", Some(&self.admin));
        assert_eq!(st, 200, "{v}");
        v["records"].as_u64().unwrap()
    }
}

/// A gateway long-polling an approval on another thread (up to 30 s).
pub fn long_poll(base: &str, id: &str, token: &str) -> std::thread::JoinHandle<(u16, Value)> {
    let (url, path, token) = (
        base.to_owned(),
        format!("/v1/approvals/{id}?wait=30"),
        token.to_owned(),
    );
    std::thread::spawn(move || call(&url, "GET", &path, Some(&token), None))
}
