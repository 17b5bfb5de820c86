//! Deny reasons go back to the agent and into every decision log: they
//! must say what was wrong without carrying what was sent. For every case
//! of the corpus, no reason contains the credential of an `authorization`
//! header, a query value or a body value (a string of 6 bytes or more, as
//! the case wrote it), unless the policy itself spells that string (a tool,
//! action or host name, a literal a condition compares with) or it is an
//! MCP method name.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use aegis_cases::format::{case_groups, Case};
use aegis_cases::runner::run_case;
use aegis_compiler::case_file::load_cases;
use aegis_compiler::policy_set::load_policy_set;
use aegis_engine::Scratch;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Strings of at least `min` bytes that a reason must not echo.
fn secrets(case: &Case) -> Vec<String> {
    const MIN: usize = 6;
    let mut out = Vec::new();
    for (name, value) in &case.request.headers {
        if name == "authorization" {
            for cred in value.split(',') {
                let cred = cred.trim();
                let token = cred.split_once(' ').map_or(cred, |(_, t)| t).trim();
                out.push(token.to_owned());
            }
        }
    }
    if let Some((_, query)) = case.request.url.split_once('?') {
        for pair in query.split(['&', '#']) {
            if let Some((_, v)) = pair.split_once('=') {
                out.push(v.to_owned());
            }
        }
    }
    if let Some(body) = &case.request.body {
        match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(v) => json_strings(&v, &mut out),
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                for pair in text.split('&') {
                    if let Some((_, v)) = pair.split_once('=') {
                        out.push(v.to_owned());
                    }
                }
            }
        }
    }
    out.retain(|s| s.len() >= MIN);
    out
}

fn json_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| json_strings(x, out)),
        serde_json::Value::Object(m) => m.values().for_each(|x| json_strings(x, out)),
        _ => {}
    }
}

#[test]
fn reasons_never_echo_credentials_or_values() {
    let groups = case_groups(&[root().join("policies")]);
    assert!(!groups.is_empty());
    let mut checked = 0usize;
    let mut leaks = Vec::new();
    for (dir, files) in groups {
        let set = load_policy_set(std::slice::from_ref(&dir)).unwrap_or_else(|_| {
            panic!("policies in {} do not load", dir.display());
        });
        // The protocol's own words, which reasons name.
        let mut vocabulary =
            String::from("tools/call notifications/initialized notifications/cancelled ");
        vocabulary.push_str(&aegis_engine::MCP_PLUMBING.join(" "));
        vocabulary.push_str(&aegis_engine::MCP_GOVERNED.join(" "));
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".yaml") && !name.ends_with(".cases.yaml") {
                vocabulary.push_str(&std::fs::read_to_string(&p).unwrap());
            }
        }
        let mut scratch = Scratch::new();
        for file in files {
            for case in load_cases(&file).unwrap() {
                let got = run_case(&set.bundle, &case, &mut scratch);
                for s in secrets(&case) {
                    if vocabulary.contains(&s) {
                        continue;
                    }
                    checked += 1;
                    if got.reason.contains(&s) {
                        leaks.push(format!("{}: `{}` echoes `{s}`", case.name, got.reason));
                    }
                }
            }
        }
    }
    assert!(checked > 150, "only {checked} values checked");
    assert!(leaks.is_empty(), "{}", leaks.join("\n"));
}
