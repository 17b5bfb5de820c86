//! The `aegis` binary as scripts use it: exit codes, outputs, files.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn aegis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aegis"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run aegis")
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn check_accepts_every_example_policy_folder() {
    for entry in std::fs::read_dir(root().join("policies")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            let o = aegis(&["check", path.to_str().unwrap()]);
            assert_eq!(
                o.status.code(),
                Some(0),
                "{}: {}",
                path.display(),
                stderr(&o)
            );
        }
    }
}

#[test]
fn check_reports_errors_with_location_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "bad.yaml",
        "kind: ToolCatalog\ntools:\n  - name: t\n    hosts: [a.example]\n    actions:\n      - {name: x, method: GET, path: /x}\n---\nagent: a\nallowed_tools:\n  - name: t\n    actions: [x]\n    conditions:\n      max_amout: 5\n      amount: {gt: 1, bogus: 2}\n",
    );
    let o = aegis(&["check", &file, "--format", "json"]);
    assert_eq!(o.status.code(), Some(1));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let bogus = lines
        .iter()
        .find(|d| d["message"].as_str().unwrap().contains("bogus"))
        .expect("a diagnostic for the unknown operator");
    assert_eq!(bogus["severity"], "error");
    assert_eq!(bogus["line"], 14);
    assert!(bogus["file"].as_str().unwrap().ends_with("bad.yaml"));
    assert!(bogus["help"].as_str().is_some());
}

#[test]
fn keygen_compile_verify_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("k").display().to_string();
    let o = aegis(&["keygen", "--out", &prefix]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // Never overwrite a key.
    assert_ne!(aegis(&["keygen", "--out", &prefix]).status.code(), Some(0));

    let bundle = dir.path().join("b.bundle").display().to_string();
    let key = format!("{prefix}.key");
    let o = aegis(&[
        "compile",
        "policies/finance",
        "-o",
        &bundle,
        "--key",
        &key,
        "--revision",
        "1765000000",
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // Warnings come first as JSON lines; the summary is the last line.
    let info: serde_json::Value = serde_json::from_str(stdout(&o).lines().last().unwrap()).unwrap();
    assert_eq!(info["agents"], 2);
    assert!(info["signer"].is_string());
    assert_eq!(info["revision"], 1_765_000_000u64);

    let public = format!("{prefix}.pub");
    let o = aegis(&["verify", &bundle, "--pubkey", &public]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).ends_with(", revision 1765000000\n"),
        "{}",
        stdout(&o)
    );
    let o = aegis(&["verify", &bundle, "--pubkey", &public, "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        (v["valid"].as_bool(), v["revision"].as_u64()),
        (Some(true), Some(1_765_000_000))
    );

    // The revision is signed: raising it breaks the signature.
    let mut bytes = std::fs::read(&bundle).unwrap();
    bytes[48..56].copy_from_slice(&1_765_000_001u64.to_le_bytes());
    let raised = write(dir.path(), "raised.bundle", "");
    std::fs::write(&raised, &bytes).unwrap();
    let o = aegis(&["verify", &raised, "--pubkey", &public]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("invalid"), "{}", stderr(&o));

    // Another key does not verify it.
    let other = dir.path().join("other").display().to_string();
    aegis(&["keygen", "--out", &other]);
    let o = aegis(&["verify", &bundle, "--pubkey", &format!("{other}.pub")]);
    assert_eq!(o.status.code(), Some(1));

    // One flipped byte in the payload does not verify either.
    let mut bytes = std::fs::read(&bundle).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    let tampered = write(dir.path(), "t.bundle", "");
    std::fs::write(&tampered, &bytes).unwrap();
    let o = aegis(&["verify", &tampered, "--pubkey", &public]);
    assert_eq!(o.status.code(), Some(1));

    // An unsigned bundle does not verify.
    let unsigned = dir.path().join("u.bundle").display().to_string();
    aegis(&["compile", "policies/finance", "-o", &unsigned]);
    assert_eq!(
        aegis(&["verify", &unsigned, "--pubkey", &public])
            .status
            .code(),
        Some(1)
    );
}

#[test]
fn eval_prints_one_json_object_per_case_from_sources_and_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let cases = "policies/healthcare/healthcare.cases.yaml";
    let from_sources = aegis(&["eval", "policies/healthcare", "--cases", cases]);
    assert_eq!(
        from_sources.status.code(),
        Some(0),
        "{}",
        stderr(&from_sources)
    );
    let bundle = dir.path().join("h.bundle").display().to_string();
    aegis(&["compile", "policies/healthcare", "-o", &bundle]);
    let from_bundle = aegis(&["eval", &bundle, "--cases", cases]);
    assert_eq!(stdout(&from_sources), stdout(&from_bundle));

    let lines: Vec<serde_json::Value> = stdout(&from_sources)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 14);
    let redacted = lines
        .iter()
        .find(|l| l["name"] == "an SSN in a note is redacted")
        .unwrap();
    assert_eq!(redacted["decision"], "sanitize");
    assert_eq!(
        redacted["body"],
        r#"{"subject":"Patient/123","text":"SSN [REDACTED:ssn] verified"}"#
    );
    for key in ["name", "decision", "reason", "rule", "policy_version"] {
        assert!(redacted.get(key).is_some(), "{key}");
    }
    let allowed = lines.iter().find(|l| l["decision"] == "allow").unwrap();
    assert!(allowed.get("body").is_none());
}

#[test]
fn test_reports_failures_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        root().join("policies/finance/catalog.yaml"),
        dir.path().join("catalog.yaml"),
    )
    .unwrap();
    std::fs::copy(
        root().join("policies/finance/seed.yaml"),
        dir.path().join("seed.yaml"),
    )
    .unwrap();
    write(
        dir.path(),
        "x.cases.yaml",
        "- name: right\n  agent: finance-agent\n  request: {method: POST, url: 'https://api.stripe.com/v1/payment_intents', headers: {content-type: application/x-www-form-urlencoded}, body: amount=1}\n  expect: {decision: allow}\n- name: wrong on purpose\n  agent: finance-agent\n  request: {method: POST, url: 'https://api.stripe.com/v1/payment_intents', headers: {content-type: application/x-www-form-urlencoded}, body: amount=9000}\n  expect: {decision: allow}\n",
    );
    let o = aegis(&["test", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.contains("wrong on purpose"), "{out}");
    assert!(
        out.contains("expected `allow`, got `approval_needed`"),
        "{out}"
    );
    assert_eq!(out.lines().last(), Some("1 passed, 1 failed"));
}

#[test]
fn example_cases_all_pass() {
    let o = aegis(&["test", "policies"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).trim_end().ends_with(" 0 failed"));
}

#[test]
fn token_issue_is_accepted_by_a_policy_trusting_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("issuer").display().to_string();
    aegis(&["keygen", "--out", &prefix]);
    let o = aegis(&[
        "token",
        "issue",
        "--key",
        &format!("{prefix}.key"),
        "--kid",
        "k1",
        "--issuer",
        "iss",
        "--audience",
        "aud",
        "--agent",
        "bot",
        "--ttl",
        "5m",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let token = stdout(&o).trim().to_string();
    assert_eq!(token.split('.').count(), 3);
    write(
        dir.path(),
        "p.yaml",
        "kind: Identity\nissuer: iss\naudience: aud\nkeys: [{kid: k1, public_key_file: issuer.pub}]\n---\nkind: ToolCatalog\ntools:\n  - name: t\n    hosts: [t.example]\n    actions: [{name: get, method: GET, path: /x}]\n---\nagent: bot\negress: {allow_hosts: [t.example]}\nallowed_tools: [{name: t, actions: [get]}]\n",
    );
    let cases = write(
        dir.path(),
        "c.yaml",
        &format!(
            "- name: ok\n  request: {{method: GET, url: 'https://t.example/x', headers: {{authorization: 'Bearer {token}'}}}}\n  expect: {{decision: allow}}\n- name: no token\n  request: {{method: GET, url: 'https://t.example/x'}}\n  expect: {{decision: deny}}\n"
        ),
    );
    let o = aegis(&[
        "eval",
        dir.path().join("p.yaml").to_str().unwrap(),
        "--cases",
        &cases,
    ]);
    let out = stdout(&o);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["decision"], "allow", "{out}");
    assert_eq!(lines[1]["decision"], "deny");
}

#[test]
fn explain_output_snapshot() {
    let o = aegis(&["explain", "policies/devops"]);
    assert_eq!(o.status.code(), Some(0));
    insta::assert_snapshot!("explain_devops", stdout(&o));
    let o = aegis(&["explain", "policies/mssp", "--agent", "acme/soc-agent"]);
    insta::assert_snapshot!("explain_mssp_acme", stdout(&o));
}

#[test]
fn explain_a_compiled_bundle_as_its_policies() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("fin.bundle").display().to_string();
    let o = aegis(&["compile", "policies/finance", "-o", &bundle]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for extra in [
        &[][..],
        &["--agent", "finance-agent"],
        &["--format", "json"],
    ] {
        let of_policies = aegis(&[&["explain", "policies/finance"][..], extra].concat());
        let of_bundle = aegis(&[&["explain", &bundle][..], extra].concat());
        assert_eq!(of_bundle.status.code(), Some(0), "{}", stderr(&of_bundle));
        assert_eq!(stdout(&of_bundle), stdout(&of_policies), "{extra:?}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&aegis(&["explain", &bundle, "--format", "json"]))).unwrap();
    assert!(json["agents"].as_array().unwrap().len() > 1, "{json}");
    // Not a bundle, not a module: read as a policy file, which it is not.
    let junk = write(dir.path(), "junk.bin", "AEGISBN");
    assert_ne!(aegis(&["explain", &junk]).status.code(), Some(0));
    // A damaged bundle is refused, not explained.
    let mut bytes = std::fs::read(&bundle).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&bundle, &bytes).unwrap();
    let o = aegis(&["explain", &bundle]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("does not load"), "{}", stderr(&o));
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(
        aegis(&["compile", "policies/finance"]).status.code(),
        Some(2)
    );
    assert_eq!(aegis(&["nonsense"]).status.code(), Some(2));
    assert_eq!(
        aegis(&["eval", "policies/finance", "--cases", "/nonexistent.yaml"])
            .status
            .code(),
        Some(2)
    );
}

/// Runs aegis in `dir`, so that file names in diagnostics are relative.
fn aegis_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aegis"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run aegis")
}

/// A catalog and `n` agents, none with `egress`.
fn agents_without_egress(dir: &Path, n: usize) {
    let mut text =
        String::from("kind: ToolCatalog\ntools:\n  - name: t\n    hosts: [t.example]\n    actions: [{name: get, method: GET, path: /x}]\n");
    for i in 0..n {
        text.push_str(&format!(
            "---\nagent: finance-{i}\nallowed_tools: [{{name: t, actions: [get]}}]\n"
        ));
    }
    write(dir, "p.yaml", &text);
}

#[test]
fn a_warning_repeated_for_many_agents_is_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    agents_without_egress(dir.path(), 5);
    let o = aegis_in(dir.path(), &["check", "p.yaml"]);
    assert_eq!(o.status.code(), Some(0));
    insta::assert_snapshot!("check_grouped_warning", stderr(&o));

    // --verbose: each one, as the output of one is repeated.
    let o = aegis_in(dir.path(), &["check", "p.yaml", "--verbose"]);
    assert_eq!(o.status.code(), Some(0));
    insta::assert_snapshot!("check_verbose_warnings", stderr(&o));
    assert_eq!(stderr(&o).matches("has no `egress`").count(), 5);

    // Machines get every one.
    let o = aegis_in(dir.path(), &["check", "p.yaml", "--format", "json"]);
    assert_eq!(stdout(&o).lines().count(), 5);

    // The same grouping where warnings come with a compiled bundle.
    let o = aegis_in(dir.path(), &["compile", "p.yaml", "-o", "p.bundle"]);
    assert_eq!(o.status.code(), Some(0));
    let err = stderr(&o);
    assert!(err.contains("5 agents have no `egress`"), "{err}");
    assert!(err.contains("and 2 more)"), "{err}");
    assert_eq!(err.matches("has no `egress`").count(), 0, "{err}");
}

#[test]
fn an_uncovered_tool_host_is_grouped_per_tool() {
    // Four agents whose egress misses the host of tool `t`, one that
    // misses the host of tool `u`: one line for `t`, the full warning
    // for `u`.
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from(
        "kind: ToolCatalog\ntools:\n  - name: t\n    hosts: [t.example]\n    actions: [{name: get, method: GET, path: /x}]\n  - name: u\n    hosts: [u.example]\n    actions: [{name: get, method: GET, path: /y}]\n",
    );
    for i in 0..4 {
        text.push_str(&format!(
            "---\nagent: ops-{i}\negress: {{allow_hosts: [other.example]}}\nallowed_tools: [{{name: t, actions: [get]}}]\n"
        ));
    }
    text.push_str(
        "---\nagent: solo\negress: {allow_hosts: [t.example]}\nallowed_tools: [{name: u, actions: [get]}]\n",
    );
    write(dir.path(), "p.yaml", &text);
    let o = aegis_in(dir.path(), &["check", "p.yaml"]);
    assert_eq!(o.status.code(), Some(0));
    let err = stderr(&o);
    // The renderer wraps long messages: compare with the wrapping undone.
    let flat = err
        .lines()
        .map(|l| l.trim_start_matches([' ', '│', '⚠']).trim_end())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        flat.contains("4 agents may call tool `t`, served by `t.example`, which their `egress.allow_hosts` does not cover: their calls to it will be denied (ops-0, ops-1, ops-2, and 1 more)"),
        "{err}"
    );
    assert!(
        flat.contains(
            "tool `u` is served by `u.example` which `egress.allow_hosts` does not cover"
        ),
        "{err}"
    );
    assert_eq!(err.matches("tool `t` is served by").count(), 0, "{err}");
    let o = aegis_in(dir.path(), &["check", "p.yaml", "--verbose"]);
    assert_eq!(stderr(&o).matches("tool `t` is served by").count(), 4);
}

#[test]
fn a_warning_for_one_agent_is_printed_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    agents_without_egress(dir.path(), 1);
    let o = aegis_in(dir.path(), &["check", "p.yaml"]);
    assert_eq!(o.status.code(), Some(0));
    insta::assert_snapshot!("check_single_warning", stderr(&o));
    let verbose = aegis_in(dir.path(), &["check", "p.yaml", "--verbose"]);
    assert_eq!(stderr(&o), stderr(&verbose));
}

#[test]
fn errors_are_printed_once_with_their_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.key").display().to_string();
    let o = aegis(&[
        "compile",
        "policies/finance",
        "-o",
        "/dev/null",
        "--key",
        &missing,
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error: ")).count(),
        1,
        "{err}"
    );
    assert!(stdout(&o).is_empty());

    let o = aegis(&["explain", "policies/finance", "--agent", "nobody"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o), "error: no agent `nobody`\n");

    let bad = write(dir.path(), "bad.yaml", "agent: a\nallowed_tools: 5\n");
    let o = aegis(&["check", &bad]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).ends_with("error: 1 errors\n"), "{}", stderr(&o));
}
