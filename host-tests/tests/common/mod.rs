//! Helpers shared by the test files.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use aegis_host_tests::Outcome;
use std::path::{Path, PathBuf};

/// The repository's `policies/`.
pub fn policies_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("policies");
    std::fs::canonicalize(&dir).unwrap_or(dir)
}

/// The e2e harness's case fixtures (`e2e/tests/fixtures/`): cases for the
/// runners' wire features (header lists, `body_base64`, raw urls, ...).
pub fn fixtures_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("e2e")
        .join("tests")
        .join("fixtures");
    std::fs::canonicalize(&dir).unwrap_or(dir)
}

/// Every folder under `policies/` and the fixtures that holds case files,
/// with them; the cases of a folder are judged by the policies of that
/// folder, as in `aegis test`.
pub fn case_folders() -> Vec<(PathBuf, Vec<PathBuf>)> {
    aegis_cases::format::case_groups(&[policies_dir(), fixtures_dir()])
}

/// A case folder as reports name it: `finance`, `fixtures/wire`.
pub fn folder_name(dir: &Path) -> String {
    if let Ok(p) = dir.strip_prefix(policies_dir()) {
        return p.display().to_string();
    }
    match dir.strip_prefix(fixtures_dir()) {
        Ok(p) => format!("fixtures/{}", p.display()),
        Err(_) => dir.display().to_string(),
    }
}

/// What the filter decided, read the way an access log reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WasmVerdict {
    pub decision: String,
    pub reason: String,
    pub rule: Option<String>,
    pub policy_version: Option<String>,
    pub agent: Option<String>,
    pub tool: Option<String>,
    pub action: Option<String>,
    pub mode: Option<String>,
    pub request_id: Option<String>,
}

pub fn verdict(o: &Outcome) -> Option<WasmVerdict> {
    Some(WasmVerdict {
        decision: o.decision()?,
        reason: o.property("aegis_reason").unwrap_or_default(),
        rule: o.property("aegis_rule"),
        policy_version: o.property("aegis_policy_version"),
        agent: o.property("aegis_agent"),
        tool: o.property("aegis_tool"),
        action: o.property("aegis_action"),
        mode: o.property("aegis_mode"),
        request_id: o.property("aegis_request_id"),
    })
}

/// `secs` since the Unix epoch now.
pub fn now_unix() -> i64 {
    aegis_cases::runner::now_unix()
}
