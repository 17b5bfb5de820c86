//! A bundle explained for people: its decision table as `aegis explain`
//! prints it, read from the bundle itself.
//!
//! A published bundle has no policy text, yet two revisions of it must be
//! comparable by what they decide. The model keeps what its tables lose
//! (policy order, regex and DLP sources, the egress list as written: see
//! [`Source`](crate::bundle::Source)), so the text is the same as for the
//! policies it was compiled from. `aegis explain` of policies compiles them
//! and renders through here too: one renderer, no drift.

use crate::bundle::{AgentBudget, Bundle, Lit, Model, PredEntry, PredOp, RuleEntry, TSeg};
use crate::types::{Approval, Detector, DlpAction, Mode};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::{self, Write};

/// What a bundle decides, agent by agent, in policy order.
#[derive(Debug, Clone, PartialEq)]
pub struct Explained<'a> {
    pub policy_version: &'a str,
    pub agents: Vec<AgentView<'a>>,
}

/// One agent of an [`Explained`] bundle.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentView<'a> {
    /// `tenant/name`, or `name` without a tenant.
    pub id: &'a str,
    pub name: &'a str,
    pub mode: Mode,
    /// `egress.allow_hosts` as listed; `None`: any host.
    pub egress: Option<&'a [String]>,
    pub budget: Option<AgentBudget>,
    pub dlp: Option<DlpView<'a>>,
    pub rules: Vec<RuleView<'a>>,
}

/// An agent's DLP as its policy lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct DlpView<'a> {
    pub detectors: &'a [Detector],
    /// `(name, regex)`.
    pub custom: &'a [(String, String)],
    pub action: DlpAction,
}

/// One rule, its predicates in policy syntax.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleView<'a> {
    pub id: &'a str,
    pub tool: &'a str,
    pub action: &'a str,
    /// What call it is for, e.g. `POST api.stripe.com/v1/charges`.
    pub call: String,
    pub when: Vec<String>,
    pub require: Vec<String>,
    /// What it decides, e.g. `allow; if a condition fails: deny`.
    pub then: &'static str,
    pub cost_usd: Option<f64>,
}

impl Bundle {
    /// The decision table for people, as `aegis explain` prints it.
    pub fn explain(&self) -> String {
        self.explained(None).to_string()
    }

    /// The decision table, of every agent or only of `agent` (its id
    /// `tenant/name`, or its name).
    pub fn explained(&self, agent: Option<&str>) -> Explained<'_> {
        let m = &self.model;
        let agents = m
            .source
            .agent_order
            .iter()
            .map(|i| *i as usize)
            .filter_map(|i| Some((m.agents.get(i)?, m.source.agents.get(i))))
            .filter(|(a, _)| agent.is_none_or(|want| a.id == want || a.name == want))
            .map(|(a, src)| {
                // The tool and action of each rule, which the table knows.
                let mut of_rule: Vec<(usize, u16, u16)> = Vec::new();
                for e in &a.table {
                    for r in e.rules.range() {
                        of_rule.push((r, e.tool, e.action));
                    }
                }
                let order: Vec<usize> = match src {
                    Some(s) => s.rules.iter().map(|r| *r as usize).collect(),
                    None => of_rule.iter().map(|(r, _, _)| *r).collect(),
                };
                let rules = order
                    .into_iter()
                    .filter_map(|r| {
                        let (_, tool, action) = of_rule.iter().find(|(x, _, _)| *x == r)?;
                        rule_view(m, m.rules.get(r)?, *tool, *action)
                    })
                    .collect();
                AgentView {
                    id: &a.id,
                    name: &a.name,
                    mode: a.mode,
                    egress: src.and_then(|s| s.allow_hosts.as_deref()),
                    budget: a.budget,
                    dlp: a.dlp.and_then(|d| {
                        let spec = m.dlp.get(d as usize)?;
                        let src = m.source.dlp.get(d as usize)?;
                        Some(DlpView {
                            detectors: &src.detectors,
                            custom: &src.custom,
                            action: spec.action,
                        })
                    }),
                    rules,
                }
            })
            .collect();
        Explained {
            policy_version: &m.policy_version,
            agents,
        }
    }
}

fn rule_view<'a>(m: &'a Model, r: &'a RuleEntry, tool: u16, action: u16) -> Option<RuleView<'a>> {
    let t = m.tools.get(usize::from(tool))?;
    let a = t.actions.get(usize::from(action))?;
    let hosts = t.hosts.join("|");
    let call = match &t.mcp_path {
        Some(mcp) => format!("mcp tools/call `{}` at {hosts}{mcp}", a.name),
        None if a.method.is_empty() => String::new(),
        None => {
            let mut path = String::new();
            for seg in &a.template {
                path.push('/');
                match seg {
                    TSeg::Lit(s) => path.push_str(s),
                    TSeg::Param(p) => {
                        let name = t.params.get(usize::from(*p)).map(|s| s.join("."));
                        let _ = write!(path, "{{{}}}", name.unwrap_or_default());
                    }
                }
            }
            format!("{} {hosts}{path}", a.method)
        }
    };
    let preds = |span: crate::bundle::Span| -> Vec<String> {
        m.preds
            .get(span.range())
            .unwrap_or_default()
            .iter()
            .map(|p| predicate(m, t.mcp_path.is_some(), &t.params, p))
            .collect()
    };
    let when = preds(r.when);
    let require = preds(r.conds);
    Some(RuleView {
        id: &r.id,
        tool: &t.name,
        action: &a.name,
        call,
        when,
        then: outcome(r.approval, require.is_empty()),
        require,
        cost_usd: r.cost_usd,
    })
}

fn outcome(approval: Approval, no_conditions: bool) -> &'static str {
    match (approval, no_conditions) {
        (Approval::Always, true) => "approval_needed",
        (Approval::Always, false) => "approval_needed; if a condition fails: deny",
        (Approval::OnFailure, false) => "allow; if a condition fails: approval_needed",
        (_, true) => "allow",
        (Approval::Never, false) => "allow; if a condition fails: deny",
    }
}

fn lit(l: &Lit) -> String {
    match l {
        Lit::Str(s) => format!("{s:?}"),
        Lit::Num(n) => n.to_string(),
        Lit::Bool(b) => b.to_string(),
    }
}

fn list(v: &[Lit]) -> String {
    v.iter().map(lit).collect::<Vec<_>>().join(", ")
}

/// One predicate in policy syntax, e.g. `amount <= 5000`.
fn predicate(m: &Model, mcp: bool, params: &[Vec<String>], p: &PredEntry) -> String {
    let segs = params
        .get(usize::from(p.slot))
        .map_or(&[][..], Vec::as_slice);
    // An MCP tool's rules name the call's arguments, which the slots
    // read under `params.arguments`.
    let segs = match segs {
        [params, arguments, rest @ ..] if mcp && params == "params" && arguments == "arguments" => {
            rest
        }
        _ => segs,
    };
    let x = segs.join(".");
    let regex = |i: &u32| m.source.regexes.get(*i as usize).map_or("", String::as_str);
    match &p.op {
        PredOp::Eq(s) => format!("{x} == {}", lit(s)),
        PredOp::Ne(s) => format!("{x} != {}", lit(s)),
        PredOp::In(v) => format!("{x} in [{}]", list(v)),
        PredOp::NotIn(v) => format!("{x} not in [{}]", list(v)),
        PredOp::Lt(n) => format!("{x} < {n}"),
        PredOp::Le(n) => format!("{x} <= {n}"),
        PredOp::Gt(n) => format!("{x} > {n}"),
        PredOp::Ge(n) => format!("{x} >= {n}"),
        PredOp::Matches(r) => format!("{x} matches /{}/", regex(r)),
        PredOp::NotMatches(r) => format!("{x} does not match /{}/", regex(r)),
        PredOp::Exists => format!("{x} is present"),
        PredOp::Absent => format!("{x} is absent"),
    }
}

impl fmt::Display for Explained<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "policy version {}", self.policy_version)?;
        for a in &self.agents {
            writeln!(f, "\nagent {} (mode {})", a.id, a.mode.as_str())?;
            match a.egress {
                Some(h) => writeln!(f, "  egress: {}", h.join(", "))?,
                None => writeln!(f, "  egress: any host (no egress restriction)")?,
            }
            if let Some(b) = &a.budget {
                let mut parts = Vec::new();
                if let Some(d) = b.daily_usd {
                    parts.push(format!("{d} usd/day"));
                }
                if let Some(r) = b.rps {
                    parts.push(format!("{r} requests/s"));
                }
                writeln!(f, "  budget: {}", parts.join(", "))?;
            }
            if let Some(d) = &a.dlp {
                let mut names: Vec<String> =
                    d.detectors.iter().map(|x| x.name().to_string()).collect();
                names.extend(d.custom.iter().map(|(n, r)| format!("{n} /{r}/")));
                writeln!(f, "  dlp: {} -> {}", names.join(", "), d.action.as_str())?;
            }
            if a.rules.is_empty() {
                writeln!(f, "  (no tools allowed)")?;
            }
            for r in &a.rules {
                writeln!(f, "  {}", r.id)?;
                writeln!(f, "    call: {}", r.call)?;
                if !r.when.is_empty() {
                    writeln!(f, "    when: {}", r.when.join(" and "))?;
                }
                if !r.require.is_empty() {
                    writeln!(f, "    require: {}", r.require.join(" and "))?;
                }
                writeln!(f, "    then: {}", r.then)?;
                if let Some(c) = r.cost_usd {
                    writeln!(f, "    cost: {c} usd")?;
                }
            }
            writeln!(f, "  anything else: deny")?;
        }
        Ok(())
    }
}
