//! `aegis export rego PATH... [-o OUT] [--data FILE]`: the policies as
//! one Rego module (with the tables in it, or in a JSON data document).

use super::{exit, print_diagnostics, Format};
use crate::frontend;
use std::path::{Path, PathBuf};

pub fn rego(paths: &[PathBuf], out: Option<&Path>, data: Option<&Path>) -> i32 {
    let loaded = match frontend::load(paths, None) {
        Ok(l) => l,
        Err(diags) => {
            print_diagnostics(&diags, Format::Human);
            return exit::FAILED;
        }
    };
    print_diagnostics(&loaded.warnings, Format::Human);
    let p = &loaded.policy;
    let module = match data {
        None => crate::rego::export(p),
        Some(file) => {
            let (module, doc) = crate::rego::export_with_data(p);
            if let Err(e) = std::fs::write(file, doc.to_string()) {
                eprintln!("error: cannot write `{}`: {e}", file.display());
                return exit::ERROR;
            }
            module
        }
    };
    let Some(out) = out else {
        print!("{module}");
        return exit::OK;
    };
    if let Err(e) = std::fs::write(out, &module) {
        eprintln!("error: cannot write `{}`: {e}", out.display());
        return exit::ERROR;
    }
    println!(
        "wrote {} ({} bytes): {} agents, {} tools, {} rules, policy version {}",
        out.display(),
        module.len(),
        p.agents.len(),
        p.tools.len(),
        p.agents.iter().map(|a| a.rules.len()).sum::<usize>(),
        p.version
    );
    exit::OK
}
