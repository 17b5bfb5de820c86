//! aegis-cases: request test cases and the native runner.
//!
//! [`format`] is the case model of `*.cases.yaml` files (the one corpus
//! that `aegis test`, the wasm host tests and the Envoy end-to-end tests
//! all run) and how case files are found; [`runner`] evaluates a case with
//! the engine and checks the outcome against the case's expectation. The
//! other runners compare against what [`runner`] produces.
//!
//! Reading case files (`aegis_compiler::case_file`, on the policy
//! front-end's YAML reader and diagnostics) and compiling the policies
//! they run against stay in `aegis-compiler`: this crate needs only the
//! engine, so what a case is and how it is judged do not depend on the
//! YAML front-end or the blob packager.

pub mod format;
pub mod runner;
