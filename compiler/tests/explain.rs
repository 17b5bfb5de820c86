//! A compiled bundle explains itself as its policies do: `Bundle::explain`
//! of every example and fixture policy, against the decision table
//! rendered straight from the policies' IR (the renderer `aegis explain`
//! had before it read bundles). What the bundle's tables lose (policy
//! order, regex and DLP sources, egress as listed) must be kept for this.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use aegis_compiler::frontend;
use aegis_engine::builder::bundle::{compile, BuildOptions};
use aegis_engine::ir::{Approval, Op, Policy, Predicate, Rule, Scalar};
use aegis_engine::Bundle;
use std::fmt::Write;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every policy set of the repository: the example folders, the e2e and
/// benchmark fixtures (with the catalogs they use), the demo.
fn policy_sets() -> Vec<Vec<PathBuf>> {
    let mut sets: Vec<Vec<PathBuf>> = std::fs::read_dir(root().join("policies"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| vec![p])
        .collect();
    sets.sort();
    for set in [
        &["e2e/tests/fixtures/budget/policies"][..],
        &[
            "e2e/tests/fixtures/control-plane/policies",
            "policies/finance",
            "policies/mcp/catalog.yaml",
        ],
        &["e2e/tests/fixtures/wire"],
        &["e2e/clients/policies"],
        &["benches/envoy/policy"],
        &["benches/envoy/policy-mcp"],
        &["scripts/demo-policy", "policies/finance"],
    ] {
        sets.push(set.iter().map(|p| root().join(p)).collect());
    }
    sets
}

fn scalar(s: &Scalar) -> String {
    match s {
        Scalar::Str(s) => format!("{s:?}"),
        Scalar::Num(n) => n.to_string(),
        Scalar::Bool(b) => b.to_string(),
    }
}

fn list(v: &[Scalar]) -> String {
    v.iter().map(scalar).collect::<Vec<_>>().join(", ")
}

fn predicate(p: &Predicate) -> String {
    let x = &p.param;
    match &p.op {
        Op::Eq(s) => format!("{x} == {}", scalar(s)),
        Op::Ne(s) => format!("{x} != {}", scalar(s)),
        Op::In(v) => format!("{x} in [{}]", list(v)),
        Op::NotIn(v) => format!("{x} not in [{}]", list(v)),
        Op::Lt(n) => format!("{x} < {n}"),
        Op::Le(n) => format!("{x} <= {n}"),
        Op::Gt(n) => format!("{x} > {n}"),
        Op::Ge(n) => format!("{x} >= {n}"),
        Op::Matches(r) => format!("{x} matches /{r}/"),
        Op::NotMatches(r) => format!("{x} does not match /{r}/"),
        Op::Exists => format!("{x} is present"),
        Op::Absent => format!("{x} is absent"),
    }
}

fn preds(v: &[Predicate]) -> String {
    v.iter().map(predicate).collect::<Vec<_>>().join(" and ")
}

fn route(p: &Policy, r: &Rule) -> String {
    let t = &p.tools[r.tool];
    let a = &t.actions[r.action];
    match (&t.mcp_path, &a.method, &a.path) {
        (Some(mcp), _, _) => format!("mcp tools/call `{}` at {}{mcp}", a.name, t.hosts.join("|")),
        (None, Some(m), Some(path)) => format!("{m} {}{path}", t.hosts.join("|")),
        _ => String::new(),
    }
}

fn outcome(r: &Rule) -> &'static str {
    match (r.approval, r.conditions.is_empty()) {
        (Approval::Always, true) => "approval_needed",
        (Approval::Always, false) => "approval_needed; if a condition fails: deny",
        (Approval::OnFailure, false) => "allow; if a condition fails: approval_needed",
        (_, true) => "allow",
        (Approval::Never, false) => "allow; if a condition fails: deny",
    }
}

/// The decision table from the IR, agents and rules in policy order.
fn from_ir(p: &Policy) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "policy version {}", p.version);
    for a in &p.agents {
        let _ = writeln!(s, "\nagent {} (mode {})", a.id, a.mode.as_str());
        let egress = a.allow_hosts.as_ref().map_or_else(
            || "any host (no egress restriction)".to_string(),
            |h| h.join(", "),
        );
        let _ = writeln!(s, "  egress: {egress}");
        if let Some(b) = &a.budget {
            let mut parts = Vec::new();
            if let Some(d) = b.daily_usd {
                parts.push(format!("{d} usd/day"));
            }
            if let Some(r) = b.rps {
                parts.push(format!("{r} requests/s"));
            }
            let _ = writeln!(s, "  budget: {}", parts.join(", "));
        }
        if let Some(d) = &a.dlp {
            let mut names: Vec<String> = d.detectors.iter().map(|x| x.name().to_string()).collect();
            names.extend(d.custom.iter().map(|(n, r)| format!("{n} /{r}/")));
            let _ = writeln!(s, "  dlp: {} -> {}", names.join(", "), d.action.as_str());
        }
        if a.rules.is_empty() {
            let _ = writeln!(s, "  (no tools allowed)");
        }
        for r in &a.rules {
            let _ = writeln!(s, "  {}", r.id);
            let _ = writeln!(s, "    call: {}", route(p, r));
            if !r.when.is_empty() {
                let _ = writeln!(s, "    when: {}", preds(&r.when));
            }
            if !r.conditions.is_empty() {
                let _ = writeln!(s, "    require: {}", preds(&r.conditions));
            }
            let _ = writeln!(s, "    then: {}", outcome(r));
            if let Some(c) = r.cost_usd {
                let _ = writeln!(s, "    cost: {c} usd");
            }
        }
        let _ = writeln!(s, "  anything else: deny");
    }
    s
}

fn bundle_of(p: &Policy) -> Bundle {
    let bytes = compile(p, &BuildOptions::default(), None).unwrap();
    Bundle::load(&bytes, &[]).unwrap()
}

#[test]
fn every_policy_explains_the_same_from_its_bundle() {
    for set in policy_sets() {
        let loaded = frontend::load(&set, None).unwrap_or_else(|d| panic!("{set:?}: {d:?}"));
        assert_eq!(
            bundle_of(&loaded.policy).explain(),
            from_ir(&loaded.policy),
            "{set:?}"
        );
    }
}

/// Rules of one agent interleaved across actions and tools, agents out
/// of name order, egress out of order, regexes shared and DLP with custom
/// detectors listed out of the detectors' own order: the orders and
/// sources the bundle's tables do not keep.
#[test]
fn policy_order_and_sources_survive_the_bundle() {
    let text = r#"
kind: ToolCatalog
tools:
  - name: pay
    hosts: [pay.example, "*.pay.example"]
    body: json
    actions:
      - {name: charge, method: POST, path: "/v1/charges"}
      - {name: refund, method: POST, path: "/v1/charges/{id}/refund"}
  - name: files
    mcp: {hosts: [files.example], path: /mcp}
    actions: [read_file, write_file]
---
agent: zed
egress: {allow_hosts: [pay.example, "*.pay.example", files.example]}
dlp:
  detectors: [ssn, email, credit_card]
  custom: [{name: ticket, regex: "TCK-[0-9]{6}"}]
  action: mask
allowed_tools:
  - name: pay
    actions: [refund]
    when: {reason: fraud}
    conditions: {reason: {matches: "^(duplicate|fraud)$"}}
  - name: files
    actions: [write_file]
    conditions: {path: {matches: "^/tmp/"}, mode: {in: [append, 1, true]}}
  - name: pay
    actions: [charge]
    when: {currency: {ne: usd}}
    approval_needed: true
  - name: pay
    actions: [charge, refund]
    conditions: {amount: {le: 5000}, reason: {matches: "^(duplicate|fraud)$"}}
    cost_usd: 0.25
---
agent: alpha
tenant: acme
egress: {allow_hosts: [files.example]}
budget: {daily_usd: 12.5, rps: 3}
allowed_tools:
  - name: files
    actions: [read_file]
    conditions: {path: {not_matches: "secret"}, size: {absent: true}}
"#;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), text).unwrap();
    let loaded =
        frontend::load(&[dir.path().to_path_buf()], None).unwrap_or_else(|d| panic!("{d:?}"));
    let p = &loaded.policy;
    let ids: Vec<&str> = p.agents[0].rules.iter().map(|r| r.id.as_str()).collect();
    // The policy order is not the table's (tool, action) order.
    assert_eq!(ids[0], "zed/pay/refund#0", "{ids:?}");
    let explained = bundle_of(p).explain();
    assert_eq!(explained, from_ir(p));
    assert!(explained.contains("dlp: ssn, email, credit_card, ticket /TCK-[0-9]{6}/ -> mask"));
    assert!(explained.find("agent zed").unwrap() < explained.find("agent acme/alpha").unwrap());
}
