//! `aegis explain PATH... [--agent ID]`: the decision table for humans, of
//! policies, a compiled bundle or a filter module from `aegis build`.
//!
//! Policies are compiled and explained from their bundle, as a published
//! bundle is (`Bundle::explain`): the text of a policy and of the bundle
//! built from it cannot drift apart.

use super::{Error, Format, Output};
use crate::frontend;
use crate::package::bundle_from_file;
use aegis_engine::builder::bundle::{compile, BuildOptions};
use aegis_engine::explain::Explained;
use aegis_engine::{Bundle, BUNDLE_MAGIC};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Policy files or directories, or one bundle (`aegis compile`) or
    /// filter module (`aegis build`).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Only this agent (`name` or `tenant/name`).
    #[arg(long)]
    agent: Option<String>,
    #[command(flatten)]
    output: Output,
}

pub fn run(args: &Args) -> Result<ExitCode, Error> {
    let bundle = match compiled_file(&args.paths)? {
        Some((path, bytes)) => {
            let bytes = bundle_from_file(&bytes)
                .map_err(|e| Error::input(format_args!("`{}`: {e}", path.display())))?;
            // Explaining is not enforcing: the signature is checked against
            // the key it names, no trust list is asked for.
            Bundle::load(&bytes, &[]).map_err(|e| {
                Error::failed(format_args!(
                    "`{}`: the bundle does not load: {e}",
                    path.display()
                ))
            })?
        }
        None => compiled_policies(args)?,
    };
    let explained = bundle.explained(args.agent.as_deref());
    if explained.agents.is_empty() {
        return Err(Error::failed(format_args!(
            "no agent `{}`",
            args.agent.as_deref().unwrap_or("")
        )));
    }
    match args.output.format {
        Format::Human => print!("{explained}"),
        Format::Json => println!("{}", explain_json(&explained)),
    }
    Ok(ExitCode::SUCCESS)
}

/// The one path given when it is a file holding a bundle or a module (by
/// its first bytes), with its bytes.
fn compiled_file(paths: &[PathBuf]) -> Result<Option<(&Path, Vec<u8>)>, Error> {
    let [path] = paths else {
        return Ok(None);
    };
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = std::fs::read(path)
        .map_err(|e| Error::input(format_args!("cannot read `{}`: {e}", path.display())))?;
    let compiled = bytes.starts_with(BUNDLE_MAGIC) || bytes.starts_with(b"\0asm");
    Ok(compiled.then_some((path.as_path(), bytes)))
}

fn compiled_policies(args: &Args) -> Result<Bundle, Error> {
    let loaded = frontend::load(&args.paths, None)
        .map_err(|d| Error::diagnostics(d, Format::Human, args.output.verbose))?;
    let bytes = compile(&loaded.policy, &BuildOptions::default(), None).map_err(Error::failed)?;
    Bundle::load(&bytes, &[])
        .map_err(|e| Error::failed(format_args!("compiled bundle does not load: {e}")))
}

fn explain_json(e: &Explained<'_>) -> serde_json::Value {
    let agents: Vec<_> = e
        .agents
        .iter()
        .map(|a| {
            let rules: Vec<_> = a
                .rules
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "id": r.id,
                        "tool": r.tool,
                        "action": r.action,
                        "call": r.call,
                        "when": r.when,
                        "require": r.require,
                        "then": r.then,
                        "cost_usd": r.cost_usd,
                    })
                })
                .collect();
            serde_json::json!({
                "agent": a.id,
                "mode": a.mode.as_str(),
                "egress": a.egress,
                "dlp": a.dlp.as_ref().map(|d| serde_json::json!({
                    "detectors": d.detectors.iter().map(|x| x.name()).collect::<Vec<_>>(),
                    "custom": d.custom.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
                    "action": d.action.as_str(),
                })),
                "rules": rules,
            })
        })
        .collect();
    serde_json::json!({"policy_version": e.policy_version, "agents": agents})
}
