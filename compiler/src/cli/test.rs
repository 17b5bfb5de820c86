//! `aegis test PATH...`: every `*.cases.yaml` under each PATH is evaluated
//! against the policies of the directory that holds it.

use super::{exit, Error, Format, Output};
use crate::policy_set::{load_policy_set, LoadFailure};
use aegis_cases::runner::{check, run_case};
use aegis_engine::Scratch;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    output: Output,
}

pub fn run(args: &Args) -> Result<ExitCode, Error> {
    let format = args.output.format;
    if let Some(p) = args.paths.iter().find(|p| !p.exists()) {
        return Err(Error::input(format_args!(
            "`{}` does not exist",
            p.display()
        )));
    }
    let groups = aegis_cases::format::case_groups(&args.paths);
    let (mut passed, mut failed) = (0usize, 0usize);
    let mut scratch = Scratch::new();
    for (dir, files) in &groups {
        let set = load_policy_set(std::slice::from_ref(dir)).map_err(|e| match e {
            LoadFailure::Diagnostics(d) => Error::diagnostics(d, format, args.output.verbose).then(
                format_args!("policies in `{}` do not compile", dir.display()),
            ),
            LoadFailure::Other(e) => Error::failed(e),
        })?;
        for file in files {
            let cases = crate::case_file::load_cases(file)
                .map_err(|d| Error::diagnostics(vec![d], format, args.output.verbose))?;
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
        return Err(Error::failed("no `*.cases.yaml` files found"));
    }
    Ok(ExitCode::from(if failed > 0 {
        exit::FAILED
    } else {
        exit::OK
    }))
}
