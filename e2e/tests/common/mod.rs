//! Shared by the e2e test files: finding Envoy (or skipping on request).
#![allow(dead_code)]

use std::path::PathBuf;

/// The pinned Envoy, or `None` when `AEGIS_E2E_SKIP=1` (the only way to
/// skip). Without it a missing Envoy fails the test with the install hint.
pub fn envoy_or_skip(test: &str) -> Option<PathBuf> {
    if aegis_e2e::skip_requested() {
        eprintln!("SKIPPED {test}: AEGIS_E2E_SKIP=1 (real-Envoy e2e tests not run)");
        return None;
    }
    let envoy = aegis_e2e::envoy::find_envoy().unwrap_or_else(|e| panic!("{e}"));
    aegis_e2e::envoy::check_version(&envoy).unwrap_or_else(|e| panic!("{e}"));
    Some(envoy)
}
