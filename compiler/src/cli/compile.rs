//! `aegis compile PATH... -o OUT [--key PREFIX.key]`

use super::{exit, print_diagnostics, Format};
use crate::frontend;
use aegis_engine::build::bundle::{compile, BuildOptions};
use aegis_engine::bundle::Bundle;
use std::path::{Path, PathBuf};

pub fn run(
    paths: &[PathBuf],
    out: &Path,
    key: Option<&Path>,
    version: Option<&str>,
    format: Format,
) -> i32 {
    let loaded = match frontend::load(paths, version) {
        Ok(l) => l,
        Err(diags) => {
            print_diagnostics(&diags, format);
            return exit::FAILED;
        }
    };
    print_diagnostics(&loaded.warnings, format);
    let signing = match key.map(crate::keys::read_signing_key).transpose() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    let opts = BuildOptions {
        dlp_hash_key: crate::keys::dlp_hash_key(signing.as_ref()),
    };
    let bytes = match compile(&loaded.policy, &opts, signing.as_ref()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::FAILED;
        }
    };
    // Load what we wrote: the bundle the filter gets must be one the engine accepts.
    let bundle = match Bundle::load(&bytes, &[]) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: compiled bundle does not load: {e}");
            return exit::FAILED;
        }
    };
    if let Err(e) = std::fs::write(out, &bytes) {
        eprintln!("error: cannot write `{}`: {e}", out.display());
        return exit::ERROR;
    }
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
                "wrote {} ({} bytes): {} agents, {} tools, {} rules, {} dlp sets, policy version {}",
                out.display(),
                bytes.len(),
                m.agents.len(),
                m.tools.len(),
                m.rules.len(),
                m.dlp.len(),
                m.policy_version
            );
            match signer {
                Some(s) => println!("signed by key {s}"),
                None => println!("unsigned (pass --key to sign)"),
            }
        }
    }
    exit::OK
}
