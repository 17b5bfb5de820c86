//! aegis-compiler: YAML agent policies -> IR -> signed bundle, plus the
//! pieces of the `aegis` command line.
//!
//! - [`frontend`]: the YAML front-end (policy files -> IR, diagnostics).
//! - [`case_file`]: reads `*.cases.yaml` into `aegis_cases` cases with the
//!   front-end's YAML reader; [`policy_set`] loads the policies they run
//!   against. Running and checking cases is `aegis_cases::runner`.
//! - [`package`]: blob assembly and the module signature;
//!   [`nested_cargo`]: the filter build the build script runs.
//! - [`keys`], [`token`]: signing keys and identity tokens.
//! - [`rego`]: `aegis export rego`.
//! - [`cli`]: the `aegis` commands (eval, test, explain, build, ...).

pub mod case_file;
pub mod cli;
pub mod client;
pub mod frontend;
pub mod keys;
pub mod nested_cargo;
pub mod package;
pub mod policy_set;
pub mod rego;
pub mod token;
