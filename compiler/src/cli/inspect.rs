//! `aegis inspect filter.wasm`: what a filter module carries, without
//! trusting it (nothing here checks against a key you chose; use
//! `aegis verify` for that).

use super::{Error, Format};
use crate::package::{blob, wasmsig};
use aegis_engine::Bundle;
use ed25519_dalek::VerifyingKey;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    file: PathBuf,
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
}

pub fn run(args: &Args) -> Result<ExitCode, Error> {
    let (file, format) = (&args.file, args.format);
    let bytes = std::fs::read(file)
        .map_err(|e| Error::input(format_args!("cannot read `{}`: {e}", file.display())))?;
    let (locator, embedded) = blob::locator(&bytes)
        .and_then(|l| Ok((l, blob::extract(&bytes)?)))
        .map_err(|e| Error::input(format_args!("`{}`: {e}", file.display())))?;
    let signatures = wasmsig::signatures(&bytes)
        .map_err(|e| Error::failed(format_args!("`{}`: {e}", file.display())))?;
    let key_ids: Vec<String> = signatures
        .iter()
        .flatten()
        .map(|s| {
            s.key_id
                .as_deref()
                .map_or_else(|| "-".to_string(), aegis_engine::trust::hex)
        })
        .collect();

    let bundle = embedded
        .as_deref()
        .map(|b| Bundle::load(b, &[]))
        .transpose()
        .map_err(|e| {
            Error::failed(format_args!(
                "`{}`: the embedded bundle does not load: {e}",
                file.display()
            ))
        })?;
    let signer = bundle
        .as_ref()
        .and_then(|b| b.signer)
        .and_then(|k| VerifyingKey::from_bytes(&k).ok());
    // Whether the module signature is by the key that signed the bundle.
    let module_by_signer = signer
        .as_ref()
        .map(|vk| wasmsig::verify(&bytes, vk).is_ok());
    let signer_id = signer.as_ref().map(crate::keys::key_id);

    match format {
        Format::Json => {
            let b = bundle.as_ref().map(|b| {
                let m = &b.model;
                serde_json::json!({
                    "bytes": locator.len,
                    "offset": locator.offset,
                    "policy_version": m.policy_version,
                    "revision": b.revision(),
                    "hash": b.hash_hex(),
                    "compiler_version": m.compiler_version,
                    "agents": m.agents.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
                    "tools": m.tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
                    "signer": signer_id,
                })
            });
            println!(
                "{}",
                serde_json::json!({
                    "file": file.display().to_string(),
                    "bytes": bytes.len(),
                    "bundle": b,
                    "module_signed": signatures.is_some(),
                    "module_key_ids": key_ids,
                    "module_signed_by_bundle_signer": module_by_signer,
                })
            );
        }
        Format::Human => {
            println!("{}: {} bytes", file.display(), bytes.len());
            match &bundle {
                None => println!("no bundle embedded (generic filter)"),
                Some(b) => {
                    let m = &b.model;
                    println!(
                        "bundle: {} bytes at offset {:#x}",
                        locator.len, locator.offset
                    );
                    println!("  policy version   {}", m.policy_version);
                    println!("  revision         {}", b.revision());
                    println!("  content hash     {}", b.hash_hex());
                    println!("  compiler         {}", m.compiler_version);
                    println!(
                        "  signer           {}",
                        signer_id.as_deref().unwrap_or("unsigned")
                    );
                    let agents: Vec<&str> = m.agents.iter().map(|a| a.id.as_str()).collect();
                    println!("  agents           {}: {}", agents.len(), agents.join(", "));
                    let tools: Vec<&str> = m.tools.iter().map(|t| t.name.as_str()).collect();
                    println!("  tools            {}: {}", tools.len(), tools.join(", "));
                }
            }
            match (&signatures, module_by_signer) {
                (None, _) => println!("module signature: none"),
                (Some(_), by) => {
                    let verdict = match by {
                        Some(true) => ", valid for the bundle signer's key",
                        Some(false) => ", NOT valid for the bundle signer's key",
                        None => "",
                    };
                    println!(
                        "module signature: key id {}{verdict}",
                        if key_ids.is_empty() {
                            "-".to_string()
                        } else {
                            key_ids.join(", ")
                        }
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
