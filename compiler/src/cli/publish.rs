//! `aegis publish FILE`: upload a signed bundle (or the bundle inside a
//! filter `.wasm` built by `aegis build`) to the control plane, which
//! refuses it unless a trusted key signed it and its revision is newer.

use super::{Error, Format, EXIT_CODES};
use crate::client::{text, Client, Remote};
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_CODES)]
pub struct Args {
    /// A bundle (`aegis compile --key`) or a filter `.wasm` (`aegis build --key`).
    file: PathBuf,
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
    #[command(flatten)]
    remote: Remote,
}

pub fn run(a: &Args) -> Result<ExitCode, Error> {
    let bytes = std::fs::read(&a.file)
        .map_err(|e| Error::input(format_args!("cannot read `{}`: {e}", a.file.display())))?;
    let bundle = crate::package::bundle_from_file(&bytes)
        .map_err(|e| Error::input(format_args!("`{}`: {e}", a.file.display())))?;
    let v = Client::new(&a.remote).post_bytes("/v1/bundles", &bundle)?;
    match a.format {
        Format::Json => println!("{v}"),
        Format::Human => println!(
            "published revision {} (policy version {}, hash {})",
            v.get("revision").and_then(Value::as_i64).unwrap_or(0),
            text(&v, "policy_version"),
            text(&v, "hash"),
        ),
    }
    Ok(ExitCode::SUCCESS)
}
