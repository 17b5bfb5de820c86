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

/// Every folder under `policies/` that holds case files, with them; the
/// cases of a folder are judged by the policies of that folder, as in
/// `aegis test`.
pub fn case_folders() -> Vec<(PathBuf, Vec<PathBuf>)> {
    aegis_compiler::cases::case_groups(&[policies_dir()])
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
    aegis_compiler::run::now_unix()
}
