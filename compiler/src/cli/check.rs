//! `aegis check PATH...`: validate policies, print diagnostics.

use super::{print_diagnostics, Error, Format, Output};
use crate::frontend;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    output: Output,
}

pub fn run(args: &Args) -> Result<ExitCode, Error> {
    let format = args.output.format;
    match frontend::load(&args.paths, None) {
        Ok(loaded) => {
            print_diagnostics(&loaded.warnings, format, args.output.verbose);
            if format == Format::Human {
                eprintln!(
                    "ok: {} agents, {} tools, {} warnings",
                    loaded.policy.agents.len(),
                    loaded.policy.tools.len(),
                    loaded.warnings.len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(diags) => {
            let errors = diags.iter().filter(|d| d.is_error()).count();
            let e = Error::diagnostics(diags, format, args.output.verbose);
            Err(if format == Format::Human {
                e.then(format_args!("{errors} errors"))
            } else {
                e
            })
        }
    }
}
