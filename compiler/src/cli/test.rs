//! `aegis test PATH...`: every `*.cases.yaml` under each PATH is evaluated
//! against the policies of the directory that holds it.

use super::{exit, print_diagnostics, Format};
use crate::policy_set::{load_policy_set, LoadFailure};
use aegis_cases::runner::{check, run_case};
use aegis_engine::eval::Scratch;
use std::path::PathBuf;

pub fn run(paths: &[PathBuf], format: Format) -> i32 {
    for p in paths {
        if !p.exists() {
            eprintln!("error: `{}` does not exist", p.display());
            return exit::ERROR;
        }
    }
    let groups = aegis_cases::format::case_groups(paths);
    let (mut passed, mut failed) = (0usize, 0usize);
    let mut scratch = Scratch::new();
    for (dir, files) in &groups {
        let set = match load_policy_set(std::slice::from_ref(dir)) {
            Ok(s) => s,
            Err(LoadFailure::Diagnostics(d)) => {
                print_diagnostics(&d, format);
                eprintln!("error: policies in `{}` do not compile", dir.display());
                return exit::FAILED;
            }
            Err(LoadFailure::Other(e)) => {
                eprintln!("error: {e}");
                return exit::FAILED;
            }
        };
        for file in files {
            let cases = match crate::case_file::load_cases(file) {
                Ok(c) => c,
                Err(d) => {
                    print_diagnostics(&[d], format);
                    return exit::FAILED;
                }
            };
            for case in &cases {
                let got = run_case(&set.bundle, case, &mut scratch);
                let problems = check(&case.expect, &got);
                let (file_name, line) = &case.location;
                if problems.is_empty() {
                    passed += 1;
                } else {
                    failed += 1;
                }
                match format {
                    Format::Json => println!(
                        "{}",
                        serde_json::json!({
                            "file": file_name, "line": line, "name": case.name,
                            "passed": problems.is_empty(), "failures": problems, "got": got,
                        })
                    ),
                    Format::Human if !problems.is_empty() => {
                        println!("FAIL {file_name}:{line}: {}", case.name);
                        for p in &problems {
                            println!("  {p}");
                        }
                    }
                    Format::Human => {}
                }
            }
        }
    }
    match format {
        Format::Json => println!(
            "{}",
            serde_json::json!({"passed": passed, "failed": failed})
        ),
        Format::Human => println!("{passed} passed, {failed} failed"),
    }
    if passed + failed == 0 {
        eprintln!("error: no `*.cases.yaml` files found");
        return exit::FAILED;
    }
    if failed > 0 {
        exit::FAILED
    } else {
        exit::OK
    }
}
