//! aegis-compiler: YAML agent policies -> IR -> signed bundle, plus the
//! pieces of the `aegis` command line (eval, test, explain, keys, tokens).

pub mod frontend;
pub mod cases;
pub mod keys;
pub mod token;
pub mod cli;
pub mod run;
