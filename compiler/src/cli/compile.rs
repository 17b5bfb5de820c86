//! `aegis compile PATH... -o OUT [--key PREFIX.key] [--revision N]`

use super::{print_diagnostics, Error, Format, Output, Revision};
use crate::frontend;
use aegis_engine::builder::bundle::{compile, BuildOptions};
use aegis_engine::Bundle;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    #[arg(short = 'o', long, value_name = "OUT")]
    out: PathBuf,
    /// Signing key written by `aegis keygen` (PREFIX.key).
    #[arg(long, value_name = "PREFIX.key")]
    key: Option<PathBuf>,
    /// Policy version reported in decisions (default: content hash).
    #[arg(long)]
    policy_version: Option<String>,
    #[command(flatten)]
    revision: Revision,
    #[command(flatten)]
    output: Output,
}

pub fn run(args: &Args) -> Result<ExitCode, Error> {
    let (format, out) = (args.output.format, &args.out);
    let loaded = frontend::load(&args.paths, args.policy_version.as_deref())
        .map_err(|diags| Error::diagnostics(diags, format, args.output.verbose))?;
    print_diagnostics(&loaded.warnings, format, args.output.verbose);
    let signing = args
        .key
        .as_deref()
        .map(crate::keys::read_signing_key)
        .transpose()
        .map_err(Error::input)?;
    let opts = BuildOptions {
        dlp_hash_key: crate::keys::dlp_hash_key(signing.as_ref()),
        revision: args.revision.value()?,
    };
    let bytes = compile(&loaded.policy, &opts, signing.as_ref()).map_err(Error::failed)?;
    // Load what we wrote: the bundle the filter gets must be one the engine accepts.
    let bundle = Bundle::load(&bytes, &[])
        .map_err(|e| Error::failed(format_args!("compiled bundle does not load: {e}")))?;
    std::fs::write(out, &bytes)
        .map_err(|e| Error::input(format_args!("cannot write `{}`: {e}", out.display())))?;
    let m = &bundle.model;
    let signer = signing
        .as_ref()
        .map(|k| crate::keys::key_id(&k.verifying_key()));
    match format {
        Format::Json => println!(
            "{}",
            serde_json::json!({
                "out": out.display().to_string(),
                "bytes": bytes.len(),
                "policy_version": m.policy_version,
                "revision": bundle.revision(),
                "hash": bundle.hash_hex(),
                "agents": m.agents.len(),
                "tools": m.tools.len(),
                "rules": m.rules.len(),
                "dlp_sets": m.dlp.len(),
                "signer": signer,
            })
        ),
        Format::Human => {
            println!(
                "wrote {} ({} bytes): {} agents, {} tools, {} rules, {} dlp sets, policy version {}, revision {}",
                out.display(),
                bytes.len(),
                m.agents.len(),
                m.tools.len(),
                m.rules.len(),
                m.dlp.len(),
                m.policy_version,
                bundle.revision()
            );
            match signer {
                Some(s) => println!("signed by key {s}"),
                None => println!("unsigned (pass --key to sign)"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
