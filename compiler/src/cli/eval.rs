//! `aegis eval PATH... --cases FILE`: one JSON object per case per line.

use super::{Error, Format, VERBOSE_HELP};
use crate::policy_set::{load_policy_set, LoadFailure};
use aegis_cases::runner::run_case;
use aegis_engine::Scratch;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Policy files/directories, or one compiled bundle.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    #[arg(long, value_name = "FILE")]
    cases: PathBuf,
    #[arg(long, help = VERBOSE_HELP)]
    verbose: bool,
}

pub fn run(args: &Args) -> Result<ExitCode, Error> {
    let set = load_policy_set(&args.paths).map_err(|e| match e {
        LoadFailure::Diagnostics(d) => Error::diagnostics(d, Format::Human, args.verbose),
        LoadFailure::Other(e) => Error::input(e),
    })?;
    let cases = crate::case_file::load_cases(&args.cases)
        .map_err(|d| Error::diagnostics(vec![d], Format::Human, args.verbose).as_input())?;
    let mut scratch = Scratch::new();
    for case in &cases {
        let out = run_case(&set.bundle, case, &mut scratch);
        let line = serde_json::to_string(&out).map_err(Error::input)?;
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}
