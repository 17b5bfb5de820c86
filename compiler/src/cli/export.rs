//! `aegis export rego PATH... [-o OUT] [--data FILE]`: the policies as
//! one Rego module (with the tables in it, or in a JSON data document).

use super::{print_diagnostics, Error, Format, EXIT_CODES, VERBOSE_HELP};
use crate::frontend;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Write the policies as one Rego module (package `aegis`, rule `decision`)
    /// for OPA or regorus. Identity, request-shape checks, DLP and budgets are
    /// not part of it (see the module's header).
    #[command(after_help = EXIT_CODES)]
    Rego(RegoArgs),
}

#[derive(Debug, clap::Args)]
pub struct RegoArgs {
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Output file (default: standard output).
    #[arg(short = 'o', long, value_name = "OUT")]
    out: Option<PathBuf>,
    /// Write the tables (hosts, routes, agents) to this JSON data
    /// document instead of into the module: the layout for large
    /// policies, which engines index by key.
    #[arg(long, value_name = "FILE")]
    data: Option<PathBuf>,
    #[arg(long, help = VERBOSE_HELP)]
    verbose: bool,
}

pub fn rego(args: &RegoArgs) -> Result<ExitCode, Error> {
    let cannot_write =
        |file: &PathBuf, e| Error::input(format_args!("cannot write `{}`: {e}", file.display()));
    let loaded = frontend::load(&args.paths, None)
        .map_err(|diags| Error::diagnostics(diags, Format::Human, args.verbose))?;
    print_diagnostics(&loaded.warnings, Format::Human, args.verbose);
    let p = &loaded.policy;
    let module = match &args.data {
        None => crate::rego::export(p),
        Some(file) => {
            let (module, doc) = crate::rego::export_with_data(p);
            std::fs::write(file, doc.to_string()).map_err(|e| cannot_write(file, e))?;
            module
        }
    };
    let Some(out) = &args.out else {
        print!("{module}");
        return Ok(ExitCode::SUCCESS);
    };
    std::fs::write(out, &module).map_err(|e| cannot_write(out, e))?;
    println!(
        "wrote {} ({} bytes): {} agents, {} tools, {} rules, policy version {}",
        out.display(),
        module.len(),
        p.agents.len(),
        p.tools.len(),
        p.agents.iter().map(|a| a.rules.len()).sum::<usize>(),
        p.version
    );
    Ok(ExitCode::SUCCESS)
}
