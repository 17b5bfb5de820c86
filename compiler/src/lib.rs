//! aegis-compiler: YAML agent policies -> IR -> signed bundle, plus the
//! pieces of the `aegis` command line (eval, test, explain, keys, tokens).

pub mod blob;
pub mod cases;
pub mod cli;
pub mod frontend;
pub mod keys;
pub mod nested_cargo;
pub mod rego;
pub mod run;
pub mod token;
pub mod wasmsig;
