//! `aegis build PATH... --key PREFIX.key -o filter.wasm [--filter FILE]`:
//! compile, embed the bundle in the filter, sign the module.

use super::{exit, print_diagnostics, Format};
use crate::frontend;
use crate::package::{blob, wasmsig};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub struct Args<'a> {
    pub paths: &'a [PathBuf],
    pub key: &'a Path,
    pub out: &'a Path,
    pub filter: Option<&'a Path>,
    pub policy_version: Option<&'a str>,
    pub format: Format,
}

pub fn run(a: &Args<'_>) -> i32 {
    let started = Instant::now();
    let loaded = match frontend::load(a.paths, a.policy_version) {
        Ok(l) => l,
        Err(diags) => {
            print_diagnostics(&diags, a.format);
            return exit::FAILED;
        }
    };
    print_diagnostics(&loaded.warnings, a.format);
    let key = match crate::keys::read_signing_key(a.key) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    let filter_owned;
    let filter: &[u8] = match a.filter {
        Some(path) => match std::fs::read(path) {
            Ok(b) => {
                filter_owned = b;
                &filter_owned
            }
            Err(e) => {
                eprintln!("error: cannot read `{}`: {e}", path.display());
                return exit::ERROR;
            }
        },
        None => match blob::generic_filter() {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::ERROR;
            }
        },
    };
    let filter_name = a
        .filter
        .map_or_else(|| "built-in".to_string(), |p| p.display().to_string());
    let built = match blob::build_signed(&loaded.policy, &key, filter) {
        Ok(b) => b,
        Err(e @ blob::BuildError::Bundle(_)) => {
            eprintln!("error: {e}");
            return exit::FAILED;
        }
        Err(e @ blob::BuildError::Embed(_)) => {
            eprintln!("error: filter `{filter_name}`: {e}");
            return exit::ERROR;
        }
        Err(e @ blob::BuildError::Sign(_)) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    let (signed, bundle_bytes, bundle) = (&built.wasm, &built.bundle, &built.loaded);
    if let Err(e) = std::fs::write(a.out, signed) {
        eprintln!("error: cannot write `{}`: {e}", a.out.display());
        return exit::ERROR;
    }
    let elapsed = started.elapsed();

    let m = &bundle.model;
    let vk = key.verifying_key();
    let signer = crate::keys::key_id(&vk);
    let module_key_id = wasmsig::hex(&wasmsig::default_key_id(&vk));
    let agents: Vec<&str> = m.agents.iter().map(|a| a.id.as_str()).collect();
    match a.format {
        Format::Json => println!(
            "{}",
            serde_json::json!({
                "out": a.out.display().to_string(),
                "bytes": signed.len(),
                "bundle_bytes": bundle_bytes.len(),
                "filter": filter_name,
                "millis": elapsed.as_secs_f64() * 1000.0,
                "policy_version": m.policy_version,
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
                "policy version {}: {} ({}), {}",
                m.policy_version,
                plural(agents.len(), "agent"),
                agents.join(", "),
                plural(m.tools.len(), "tool")
            );
            println!("signed by key {signer} (module signature key id {module_key_id})");
        }
    }
    exit::OK
}
