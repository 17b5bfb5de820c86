//! `aegis eval PATH... --cases FILE`: one JSON object per case per line.

use super::{exit, print_diagnostics, Format};
use crate::policy_set::{load_policy_set, LoadFailure};
use aegis_cases::runner::run_case;
use aegis_engine::eval::Scratch;
use std::path::{Path, PathBuf};

pub fn run(paths: &[PathBuf], cases: &Path) -> i32 {
    let set = match load_policy_set(paths) {
        Ok(s) => s,
        Err(LoadFailure::Diagnostics(d)) => {
            print_diagnostics(&d, Format::Human);
            return exit::FAILED;
        }
        Err(LoadFailure::Other(e)) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    let cases = match crate::case_file::load_cases(cases) {
        Ok(c) => c,
        Err(d) => {
            print_diagnostics(&[d], Format::Human);
            return exit::ERROR;
        }
    };
    let mut scratch = Scratch::new();
    for case in &cases {
        let out = run_case(&set.bundle, case, &mut scratch);
        match serde_json::to_string(&out) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("error: {e}");
                return exit::ERROR;
            }
        }
    }
    exit::OK
}
