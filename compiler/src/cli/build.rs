//! `aegis build PATH... --key PREFIX.key -o filter.wasm [--filter FILE]
//! [--revision N]`: compile, embed the bundle in the filter, sign the
//! module.

use super::{print_diagnostics, Error, Format, Output, Revision};
use crate::frontend;
use crate::package::{blob, wasmsig};
use std::borrow::Cow;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Signing key written by `aegis keygen` (PREFIX.key).
    #[arg(long, value_name = "PREFIX.key")]
    key: PathBuf,
    #[arg(short = 'o', long, value_name = "OUT")]
    out: PathBuf,
    /// Filter module to embed into (default: the one built into aegis).
    #[arg(long, value_name = "FILE")]
    filter: Option<PathBuf>,
    /// Policy version reported in decisions (default: content hash).
    #[arg(long)]
    policy_version: Option<String>,
    #[command(flatten)]
    revision: Revision,
    #[command(flatten)]
    output: Output,
}

pub fn run(a: &Args) -> Result<ExitCode, Error> {
    let started = Instant::now();
    let loaded = frontend::load(&a.paths, a.policy_version.as_deref())
        .map_err(|diags| Error::diagnostics(diags, a.output.format, a.output.verbose))?;
    print_diagnostics(&loaded.warnings, a.output.format, a.output.verbose);
    let key = crate::keys::read_signing_key(&a.key).map_err(Error::input)?;
    let revision = a.revision.value()?;
    let filter: Cow<'_, [u8]> = match &a.filter {
        Some(path) => Cow::Owned(
            std::fs::read(path)
                .map_err(|e| Error::input(format_args!("cannot read `{}`: {e}", path.display())))?,
        ),
        None => Cow::Borrowed(blob::generic_filter().map_err(Error::input)?),
    };
    let filter_name = a
        .filter
        .as_ref()
        .map_or_else(|| "built-in".to_string(), |p| p.display().to_string());
    let built =
        blob::build_signed(&loaded.policy, &key, &filter, revision).map_err(|e| match e {
            blob::BuildError::Compile(_) | blob::BuildError::Load(_) => Error::failed(e),
            blob::BuildError::Embed(_) => Error::input(format_args!("filter `{filter_name}`: {e}")),
            blob::BuildError::Sign(_) => Error::input(e),
        })?;
    let (signed, bundle_bytes, bundle) = (&built.wasm, &built.bundle, &built.loaded);
    std::fs::write(&a.out, signed)
        .map_err(|e| Error::input(format_args!("cannot write `{}`: {e}", a.out.display())))?;
    let elapsed = started.elapsed();

    let m = &bundle.model;
    let vk = key.verifying_key();
    let signer = crate::keys::key_id(&vk);
    let module_key_id = aegis_engine::trust::hex(&wasmsig::default_key_id(&vk));
    let agents: Vec<&str> = m.agents.iter().map(|a| a.id.as_str()).collect();
    match a.output.format {
        Format::Json => println!(
            "{}",
            serde_json::json!({
                "out": a.out.display().to_string(),
                "bytes": signed.len(),
                "bundle_bytes": bundle_bytes.len(),
                "filter": filter_name,
                "millis": elapsed.as_secs_f64() * 1000.0,
                "policy_version": m.policy_version,
                "revision": bundle.revision(),
                "hash": bundle.hash_hex(),
                "agents": agents,
                "tools": m.tools.len(),
                "signer": signer,
                "module_key_id": module_key_id,
            })
        ),
        Format::Human => {
            println!(
                "wrote {} ({} bytes, bundle {} bytes) in {:.0} ms",
                a.out.display(),
                signed.len(),
                bundle_bytes.len(),
                elapsed.as_secs_f64() * 1000.0
            );
            let plural =
                |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
            println!(
                "policy version {} (revision {}): {} ({}), {}",
                m.policy_version,
                bundle.revision(),
                plural(agents.len(), "agent"),
                agents.join(", "),
                plural(m.tools.len(), "tool")
            );
            println!("signed by key {signer} (module signature key id {module_key_id})");
        }
    }
    Ok(ExitCode::SUCCESS)
}
