//! `aegis check PATH...`: validate policies, print diagnostics.

use super::{exit, print_diagnostics, Format};
use crate::frontend;
use std::path::PathBuf;

pub fn run(paths: &[PathBuf], format: Format) -> i32 {
    match frontend::load(paths, None) {
        Ok(loaded) => {
            print_diagnostics(&loaded.warnings, format);
            if format == Format::Human {
                eprintln!(
                    "ok: {} agents, {} tools, {} warnings",
                    loaded.policy.agents.len(),
                    loaded.policy.tools.len(),
                    loaded.warnings.len()
                );
            }
            exit::OK
        }
        Err(diags) => {
            print_diagnostics(&diags, format);
            if format == Format::Human {
                let errors = diags.iter().filter(|d| d.is_error()).count();
                eprintln!("error: {errors} errors");
            }
            exit::FAILED
        }
    }
}
