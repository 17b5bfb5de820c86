//! `aegis export rego` against the engine: every case of the policy corpus
//! that the Rego module covers is evaluated by regorus and must get the
//! engine's verdict, rule id and mode.
//!
//! Which cases are compared, by a fixed rule:
//! - the case names its agent directly (token identity is not in the
//!   module);
//! - the engine did not stop the request in a stage the module leaves out:
//!   request shape (authority, path, headers), body reading (malformed
//!   bodies, duplicate keys, repeated parameters, limits), gzip, MCP
//!   framing and headers. Those cases are counted as skipped, by stage;
//! - the request can be handed to Rego as the input document the module
//!   expects (path escapes decoded as the engine decodes them, a body
//!   serde_json reads, form keys that make one object).
//!
//! A case the engine sanitizes or denies for DLP passed the rules first:
//! the module must allow it with the same rule.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use aegis_cases::format::Case;
use aegis_cases::runner::{engine_headers, request_path, split_url};
use aegis_compiler::case_file::load_cases;
use aegis_compiler::frontend;
use aegis_compiler::rego::{export, export_with_data, DECISION_RULE};
use aegis_engine::builder::bundle::{compile, BuildOptions};
use aegis_engine::ir::{self, BodyKind};
use aegis_engine::{Bundle, Caller, Reason, Request, Scratch, Verdict};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const NOW: i64 = 1_780_000_000;

/// What the module must answer for a case, or why the case is skipped.
enum Plan {
    Compare {
        verdict: &'static str,
        rule: Option<String>,
        mode: &'static str,
        /// The engine went on to DLP (sanitize / DLP deny).
        dlp: bool,
        input: Value,
    },
    Skip(&'static str),
}

fn policy_dirs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no policy directories under {root:?}");
    dirs
}

fn cases_in(dir: &Path) -> Vec<Case> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".cases.yaml"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| load_cases(f).unwrap_or_else(|d| panic!("{f:?}: {d:?}")))
        .collect()
}

/// `%XX` of an unreserved character as the character (what the engine's
/// route matching does); `None` when another escape is left.
fn decode_path(path: &str) -> Option<String> {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let c = std::str::from_utf8(b.get(i + 1..i + 3)?)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())?;
            if !(c.is_ascii_alphanumeric() || b"-._~".contains(&c)) {
                return None;
            }
            out.push(c);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn form_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Form pairs into `into` as nested objects (`a[b]=1`, `a.b=1`); `None`
/// when they do not make one object (or do not decode).
fn add_form(data: &str, into: &mut Map<String, Value>) -> Option<()> {
    for pair in data.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (form_decode(k)?, form_decode(v)?);
        if k.ends_with("[]") {
            continue; // list keys: no rule can name them
        }
        let segs: Vec<&str> = k
            .split(['[', '.'])
            .map(|s| s.strip_suffix(']').unwrap_or(s))
            .collect();
        insert(into, &segs, Value::from(v))?;
    }
    Some(())
}

fn insert(obj: &mut Map<String, Value>, segs: &[&str], v: Value) -> Option<()> {
    let (first, rest) = segs.split_first()?;
    if rest.is_empty() {
        if obj.contains_key(*first) {
            return None;
        }
        obj.insert((*first).to_string(), v);
        return Some(());
    }
    let child = obj
        .entry((*first).to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    insert(child.as_object_mut()?, rest, v)
}

/// Merges body parameters into query parameters; `None` on a clash (the
/// engine denies a parameter given in both).
fn merge(into: &mut Map<String, Value>, from: Map<String, Value>) -> Option<()> {
    for (k, v) in from {
        if into.contains_key(&k) {
            return None;
        }
        into.insert(k, v);
    }
    Some(())
}

/// The module's input document for a case, given the tool the engine
/// matched (how the body is read depends on it).
fn input(case: &Case, tool: Option<&ir::Tool>) -> Result<Value, &'static str> {
    let (authority, _) = split_url(&case.request.url);
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    };
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let full = request_path(&case.request.url);
    let (path, query) = match full.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (full.as_ref(), None),
    };
    let path = decode_path(path).ok_or("path escapes the module does not decode")?;
    let body = case.request.body.as_deref().unwrap_or_default();
    let encoded = case.request.headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("content-encoding") && !v.eq_ignore_ascii_case("identity")
    });
    if encoded && !body.is_empty() {
        return Err("a gzip body (the module reads bodies already inflated)");
    }
    let mut params = Map::new();
    if let Some(t) = tool {
        let mcp = t.mcp_path.is_some();
        if let Some(q) = query.filter(|_| !mcp) {
            add_form(q, &mut params).ok_or("form keys that make no single object")?;
        }
        let kind = if mcp { BodyKind::Json } else { t.body };
        if !body.is_empty() {
            match kind {
                BodyKind::Json => {
                    let v: Value = serde_json::from_slice(body)
                        .map_err(|_| "a number serde_json cannot hold (1e400)")?;
                    let Value::Object(m) = v else {
                        return Err("a body that is not a JSON object");
                    };
                    merge(&mut params, m).ok_or("a parameter in both query and body")?;
                }
                BodyKind::Form => {
                    let text = std::str::from_utf8(body).map_err(|_| "a form body not in UTF-8")?;
                    let mut m = Map::new();
                    add_form(text, &mut m).ok_or("form keys that make no single object")?;
                    merge(&mut params, m).ok_or("a parameter in both query and body")?;
                }
                BodyKind::None => {}
            }
        }
    }
    let mut doc = Map::new();
    doc.insert("agent".into(), Value::from(case.agent.clone()));
    if let Some(t) = &case.tenant {
        doc.insert("tenant".into(), Value::from(t.as_str()));
    }
    doc.insert("method".into(), Value::from(case.request.method.as_str()));
    doc.insert("host".into(), Value::from(host));
    doc.insert("path".into(), Value::from(path));
    doc.insert("params".into(), Value::Object(params));
    Ok(Value::Object(doc))
}

fn plan(bundle: &Bundle, policy: &ir::Policy, case: &Case, scratch: &mut Scratch) -> Plan {
    let Some(agent) = case.agent.as_deref() else {
        return Plan::Skip("identity from a token");
    };
    let (authority, _) = split_url(&case.request.url);
    let path = request_path(&case.request.url);
    let headers = engine_headers(case);
    let req = Request {
        method: &case.request.method,
        authority,
        path: &path,
        headers: headers.as_slice(),
        body: Some(case.request.body.as_deref().unwrap_or_default()),
    };
    let caller = Caller::Given {
        agent,
        tenant: case.tenant.as_deref(),
    };
    let d = bundle.decide(&req, caller, case.now.unwrap_or(NOW), scratch);
    let stage = match d.reason {
        Reason::Http(_) => Some("request shape (authority, path, headers)"),
        Reason::BadRequest(_) => Some("body reading (malformed, duplicate keys, limits)"),
        Reason::Gzip(_) => Some("gzip (the engine denied the compressed body)"),
        Reason::McpNotObject | Reason::McpHeaderMismatch(_) => Some("mcp framing and headers"),
        Reason::McpNoSession { .. } | Reason::McpStreamBody { .. } => {
            Some("mcp session stream (GET / DELETE)")
        }
        Reason::McpPlumbing {
            method: "GET" | "DELETE",
        } => Some("mcp session stream (GET / DELETE)"),
        Reason::DlpError(_) => Some("dlp error"),
        Reason::Internal(e) => panic!("{}: internal error {e}", case.name),
        _ => None,
    };
    if let Some(s) = stage {
        return Plan::Skip(s);
    }
    let dlp = matches!(d.reason, Reason::Sanitized(_) | Reason::DlpDenied { .. });
    let verdict = match d.verdict {
        _ if dlp => "allow",
        Verdict::Allow => "allow",
        Verdict::Deny => "deny",
        Verdict::ApprovalNeeded => "approval_needed",
        v => panic!("{}: unexpected verdict {v:?}", case.name),
    };
    let tool = d
        .tool
        .and_then(|name| policy.tools.iter().find(|t| t.name == name));
    match input(case, tool) {
        Ok(input) => Plan::Compare {
            verdict,
            rule: d.rule.map(str::to_string),
            mode: d.mode.as_str(),
            dlp,
            input,
        },
        Err(why) => Plan::Skip(why),
    }
}

fn regorus_engine(module: &str) -> regorus::Engine {
    let mut e = regorus::Engine::new();
    e.add_policy("aegis.rego".into(), module.into())
        .unwrap_or_else(|err| panic!("exported module does not parse: {err}"));
    e
}

fn rego_decision(e: &mut regorus::Engine, input: &Value) -> Value {
    e.set_input(regorus::Value::from_json_str(&input.to_string()).unwrap());
    let v = e
        .eval_rule(DECISION_RULE.to_string())
        .unwrap_or_else(|err| panic!("eval failed for {input}: {err}"));
    serde_json::from_str(&v.to_json_str().unwrap()).unwrap()
}

#[derive(Default)]
struct Tally {
    compared: usize,
    dlp: usize,
    verdicts: BTreeMap<&'static str, usize>,
    skipped: BTreeMap<&'static str, usize>,
    mismatches: Vec<String>,
}

/// How the export is laid out, and which regorus evaluator runs it.
#[derive(Debug, Clone, Copy)]
enum Layout {
    /// One module with the tables in it (`aegis export rego`).
    Module,
    /// The evaluator module plus the tables as data (`--data FILE`).
    Data,
    /// The same, compiled to regorus's bytecode VM (RVM).
    DataRvm,
}

/// A prepared regorus.
enum Peer {
    Interpreter(Box<regorus::Engine>),
    Vm(Box<regorus::rvm::RegoVM>),
}

impl Peer {
    fn decide(&mut self, input: &Value) -> Value {
        match self {
            Peer::Interpreter(e) => rego_decision(e, input),
            Peer::Vm(vm) => {
                vm.set_input(regorus::Value::from_json_str(&input.to_string()).unwrap());
                let v = vm
                    .execute()
                    .unwrap_or_else(|err| panic!("rvm failed for {input}: {err}"));
                serde_json::from_str(&v.to_json_str().unwrap()).unwrap()
            }
        }
    }
}

fn regorus_for(
    policy: &aegis_engine::ir::Policy,
    layout: Layout,
    edit: &dyn Fn(String) -> String,
) -> Peer {
    if let Layout::Module = layout {
        return Peer::Interpreter(Box::new(regorus_engine(&edit(export(policy)))));
    }
    let (module, data) = export_with_data(policy);
    let data = regorus::Value::from_json_str(&data.to_string()).unwrap();
    let mut e = regorus_engine(&edit(module));
    e.add_data(data.clone()).unwrap();
    if let Layout::Data = layout {
        return Peer::Interpreter(Box::new(e));
    }
    let compiled = e.compile_with_entrypoint(&DECISION_RULE.into()).unwrap();
    let program = regorus::languages::rego::compiler::Compiler::compile_from_policy(
        &compiled,
        &[DECISION_RULE],
    )
    .unwrap();
    let mut vm = regorus::rvm::RegoVM::new();
    vm.load_program(program);
    vm.set_data(data).unwrap();
    Peer::Vm(Box::new(vm))
}

/// Runs the corpus; `edit` may change the exported module first.
fn run_corpus(layout: Layout, edit: impl Fn(String) -> String) -> Tally {
    let mut t = Tally::default();
    let mut scratch = Scratch::new();
    for dir in policy_dirs() {
        let cases = cases_in(&dir);
        if cases.is_empty() {
            continue;
        }
        let loaded = frontend::load(std::slice::from_ref(&dir), None)
            .unwrap_or_else(|d| panic!("{dir:?}: {d:?}"));
        let bytes = compile(&loaded.policy, &BuildOptions::default(), None).unwrap();
        let bundle = Bundle::load(&bytes, &[]).unwrap();
        let mut rego = regorus_for(&loaded.policy, layout, &edit);
        for case in &cases {
            match plan(&bundle, &loaded.policy, case, &mut scratch) {
                Plan::Skip(why) => {
                    if std::env::var_os("AEGIS_REGO_SHOW_SKIPPED").is_some() {
                        println!("skip {}: {why}", case.name);
                    }
                    *t.skipped.entry(why).or_default() += 1
                }
                Plan::Compare {
                    verdict,
                    rule,
                    mode,
                    dlp,
                    input,
                } => {
                    t.compared += 1;
                    t.dlp += usize::from(dlp);
                    *t.verdicts.entry(verdict).or_default() += 1;
                    let got = rego.decide(&input);
                    let want_rule = rule.map_or(Value::Null, Value::from);
                    if got["verdict"] != verdict || got["rule"] != want_rule || got["mode"] != mode
                    {
                        t.mismatches.push(format!(
                            "{} ({}:{}): engine {verdict} rule {want_rule} mode {mode}, rego {got}\n  input {input}",
                            case.name,
                            case.location.0,
                            case.location.1
                        ));
                    }
                }
            }
        }
    }
    t
}

#[test]
fn the_rego_export_decides_the_corpus_like_the_engine() {
    for layout in [Layout::Module, Layout::Data, Layout::DataRvm] {
        let t = run_corpus(layout, |m| m);
        let skipped: usize = t.skipped.values().sum();
        println!(
            "rego export ({layout:?} layout) vs engine: {} cases compared ({} of them went on to DLP: compared up to the rules), {skipped} skipped",
            t.compared, t.dlp
        );
        for (v, n) in &t.verdicts {
            println!("  compared {n:>3}: {v}");
        }
        for (why, n) in &t.skipped {
            println!("  skipped  {n:>3}: {why}");
        }
        assert!(
            t.mismatches.is_empty(),
            "{layout:?}: {} of {} cases differ:\n{}",
            t.mismatches.len(),
            t.compared,
            t.mismatches.join("\n")
        );
        // The selection must not quietly shrink to nothing.
        assert!(t.compared >= 150, "only {} cases compared", t.compared);
    }
}

#[test]
fn a_broken_export_is_caught() {
    // A wrong comparison, inverted conditions, a lost approval, a path
    // pattern ignored: the corpus must notice each.
    for (from, to) in [
        ("num(v) <= p.arg", "num(v) < p.arg"),
        ("not check(p, value(p))]", "check(p, value(p))]"),
        (
            "fail_verdict := \"approval_needed\" if",
            "fail_verdict := \"deny\" if",
        ),
        ("\tregex.match(r.re, input.path)\n]", "]"),
    ] {
        let t = run_corpus(Layout::Module, |m| {
            assert!(m.contains(from), "module has no `{from}`");
            m.replacen(from, to, 1)
        });
        assert!(
            !t.mismatches.is_empty(),
            "replacing `{from}` by `{to}` went unnoticed"
        );
    }
}

#[test]
fn the_cli_writes_the_module() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("aegis.rego");
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/finance");
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_aegis"))
        .args(["export", "rego"])
        .arg(&policies)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(0), "{st:?}");
    let module = std::fs::read_to_string(&out).unwrap();
    assert!(module.starts_with("# Generated by `aegis export rego`"));
    let mut e = regorus_engine(&module);
    let input = serde_json::json!({
        "agent": "payments-agent", "method": "POST", "host": "api.stripe.com",
        "path": "/v1/payment_intents",
        "params": {"amount": "7500", "currency": "usd", "description": "Invoice 1042"}
    });
    let d = rego_decision(&mut e, &input);
    assert_eq!(d["verdict"], "approval_needed", "{d}");
    assert_eq!(
        d["reason"],
        "condition failed: `amount` must be a number <= 5000"
    );

    // --data: the same decision from the evaluator module plus the data.
    let data = dir.path().join("aegis.json");
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_aegis"))
        .args(["export", "rego"])
        .arg(&policies)
        .arg("-o")
        .arg(&out)
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(0), "{st:?}");
    let split = std::fs::read_to_string(&out).unwrap();
    assert!(split.len() < module.len() && !split.contains("agents[\""));
    let mut e = regorus_engine(&split);
    let doc = std::fs::read_to_string(&data).unwrap();
    e.add_data(regorus::Value::from_json_str(&doc).unwrap())
        .unwrap();
    assert_eq!(rego_decision(&mut e, &input), d);

    // Without -o the module goes to stdout; a bad path is exit code 1
    // (policy errors, like `aegis check`).
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_aegis"))
        .args(["export", "rego"])
        .arg(&policies)
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(0));
    assert_eq!(String::from_utf8(st.stdout).unwrap(), module);
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_aegis"))
        .args(["export", "rego", "/nonexistent/policies"])
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(1));
}
