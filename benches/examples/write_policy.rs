//! Writes the generated policy the compile bench uses into a folder, so that
//! `aegis` can be timed on it:
//!
//! ```sh
//! cargo run --release -p aegis-benches --example write_policy -- 1000 /tmp/pol
//! cargo run --release -p aegis-benches --example write_policy -- 1000 /tmp/pol-noegress --no-egress
//! hyperfine -N 'target/release/aegis build /tmp/pol-noegress --key k.key -o /tmp/f.wasm'
//! ```
//!
//! `--no-egress` drops every agent's `egress` block, the policy whose
//! warnings `aegis` groups into one.

use std::path::PathBuf;
use std::process::ExitCode;

fn without_egress(text: &str) -> String {
    let mut out = String::new();
    let mut in_egress = false;
    for line in text.lines() {
        if line == "egress:" {
            in_egress = true;
            continue;
        }
        if in_egress && line.starts_with("  ") {
            continue;
        }
        in_egress = false;
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let no_egress = args.iter().any(|a| a == "--no-egress");
    let rest: Vec<&String> = args.iter().filter(|a| *a != "--no-egress").collect();
    let (Some(n), Some(dir)) = (
        rest.first().and_then(|n| n.parse::<usize>().ok()),
        rest.get(1).map(PathBuf::from),
    ) else {
        eprintln!("usage: write_policy N DIR [--no-egress]");
        return ExitCode::from(2);
    };
    let (sources, _) = aegis_benches::generated_policy(n, true);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("error: cannot create `{}`: {e}", dir.display());
        return ExitCode::from(2);
    }
    for (name, text) in sources {
        let text = if no_egress {
            without_egress(&text)
        } else {
            text
        };
        let path = dir.join(&name);
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("error: cannot write `{}`: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    println!("wrote {n} agents to {}", dir.display());
    ExitCode::SUCCESS
}
