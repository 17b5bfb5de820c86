//! `aegis explain PATH... [--agent ID]`: the decision table for humans.

use super::{Error, Format, Output};
use crate::frontend;
use aegis_engine::ir::{Agent, Approval, Op, Policy, Predicate, Rule, Scalar};
use std::fmt::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Only this agent (`name` or `tenant/name`).
    #[arg(long)]
    agent: Option<String>,
    #[command(flatten)]
    output: Output,
}

pub fn run(args: &Args) -> Result<ExitCode, Error> {
    let agent = args.agent.as_deref();
    let loaded = frontend::load(&args.paths, None)
        .map_err(|d| Error::diagnostics(d, Format::Human, args.output.verbose))?;
    let p = &loaded.policy;
    let agents: Vec<&Agent> = p
        .agents
        .iter()
        .filter(|a| agent.is_none_or(|want| a.id == want || a.name == want))
        .collect();
    if agents.is_empty() {
        return Err(Error::failed(format_args!(
            "no agent `{}`",
            agent.unwrap_or("")
        )));
    }
    match args.output.format {
        Format::Human => print!("{}", explain_text(p, &agents)),
        Format::Json => println!("{}", explain_json(p, &agents)),
    }
    Ok(ExitCode::SUCCESS)
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

/// One predicate in policy syntax, e.g. `amount <= 5000`.
pub fn predicate(p: &Predicate) -> String {
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
    let Some(t) = p.tools.get(r.tool) else {
        return String::new();
    };
    let Some(a) = t.actions.get(r.action) else {
        return String::new();
    };
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

pub fn explain_text(p: &Policy, agents: &[&Agent]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "policy version {}", p.version);
    for a in agents {
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

fn explain_json(p: &Policy, agents: &[&Agent]) -> serde_json::Value {
    let agents: Vec<_> = agents
        .iter()
        .map(|a| {
            let rules: Vec<_> = a
                .rules
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "id": r.id,
                        "tool": p.tools.get(r.tool).map(|t| t.name.clone()),
                        "action": p.tools.get(r.tool).and_then(|t| t.actions.get(r.action)).map(|x| x.name.clone()),
                        "call": route(p, r),
                        "when": r.when.iter().map(predicate).collect::<Vec<_>>(),
                        "require": r.conditions.iter().map(predicate).collect::<Vec<_>>(),
                        "then": outcome(r),
                        "cost_usd": r.cost_usd,
                    })
                })
                .collect();
            serde_json::json!({
                "agent": a.id,
                "mode": a.mode.as_str(),
                "egress": a.allow_hosts,
                "dlp": a.dlp.as_ref().map(|d| serde_json::json!({
                    "detectors": d.detectors.iter().map(|x| x.name()).collect::<Vec<_>>(),
                    "custom": d.custom.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
                    "action": d.action.as_str(),
                })),
                "rules": rules,
            })
        })
        .collect();
    serde_json::json!({"policy_version": p.version, "agents": agents})
}
