//! IR -> bundle model: parameter slots, route DFAs, host tables, the flat
//! decision table and deduplicated regex / DLP automata.

use super::dlp::build_dlp;
use super::regex::{condition_dfa, describe, serialize};
use super::BuildError;
use crate::bundle::{
    encode, ActionEntry, AgentBudget, AgentEntry, AgentSource, DlpSource, HostList, Lit, Model,
    PredEntry, PredOp, RuleEntry, Source, Span, TSeg, TableEntry, ToolEntry,
};
use crate::ir::{self, Detector, DlpAction, Op, Predicate, Scalar};
use crate::params::MAX_PARAMS;
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use regex_automata::dfa::{dense, StartKind};
use regex_automata::nfa::thompson;
use regex_automata::util::syntax;
use regex_automata::MatchKind;

/// Version of the compiler that produced a bundle.
pub const COMPILER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Options that are not part of the policy text.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Key for the DLP `hash` action's keyed tokens.
    pub dlp_hash_key: [u8; 32],
    /// The bundle's revision (header field, signed with the bundle).
    pub revision: u64,
}

/// Compiles the IR into signed (when `key` is given) bundle bytes.
pub fn compile(
    policy: &ir::Policy,
    opts: &BuildOptions,
    key: Option<&ed25519_dalek::SigningKey>,
) -> Result<Vec<u8>, BuildError> {
    let model = build_model(policy, opts)?;
    Ok(encode(&model, opts.revision, key)?)
}

/// Parameter path segments for MCP slots 0 to 5 (the evaluator reads
/// them by position).
const MCP_SLOTS: [&[&str]; 6] = [
    &["method"],
    &["params", "name"],
    &["id"],
    &["jsonrpc"],
    &["result"],
    &["error"],
];

fn param_path(tool: &ir::Tool, param: &str) -> Vec<String> {
    let mut segs: Vec<String> = Vec::new();
    if tool.mcp_path.is_some() {
        segs.push("params".into());
        segs.push("arguments".into());
    }
    segs.extend(param.split('.').map(String::from));
    segs
}

fn template_params(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
}

pub fn build_model(policy: &ir::Policy, opts: &BuildOptions) -> Result<Model, BuildError> {
    // Parameter slots per tool: template bindings, then every parameter
    // any rule of any agent looks at.
    let mut params: Vec<Vec<Vec<String>>> = Vec::with_capacity(policy.tools.len());
    for t in &policy.tools {
        let mut p: Vec<Vec<String>> = Vec::new();
        if t.mcp_path.is_some() {
            for slot in MCP_SLOTS {
                p.push(slot.iter().map(|s| s.to_string()).collect());
            }
        }
        for a in &t.actions {
            for name in a.path.as_deref().into_iter().flat_map(template_params) {
                let path = alloc::vec![String::from(name)];
                if !p.contains(&path) {
                    p.push(path);
                }
            }
        }
        params.push(p);
    }
    for agent in &policy.agents {
        for r in &agent.rules {
            let tool = policy.tools.get(r.tool).ok_or_else(|| {
                BuildError::Invalid(format!("rule `{}` refers to a missing tool", r.id))
            })?;
            let p = params.get_mut(r.tool).ok_or_else(|| {
                BuildError::Invalid(format!("rule `{}` refers to a missing tool", r.id))
            })?;
            for pred in r.when.iter().chain(r.conditions.iter()) {
                let path = param_path(tool, &pred.param);
                if !p.contains(&path) {
                    p.push(path);
                }
            }
        }
    }

    let mut tools = Vec::with_capacity(policy.tools.len());
    for (t, p) in policy.tools.iter().zip(params) {
        if p.len() > MAX_PARAMS {
            return Err(BuildError::Invalid(format!(
                "tool `{}`: rules look at {} distinct parameters, the limit is {MAX_PARAMS}",
                t.name,
                p.len()
            )));
        }
        tools.push(build_tool(t, p)?);
    }

    let (exact_hosts, wildcard_hosts) = host_tables(policy)?;

    let mut regex_ids: BTreeMap<String, u32> = BTreeMap::new();
    let mut regexes: Vec<Vec<u8>> = Vec::new();
    let mut dlp_ids: Vec<(ir::Dlp, u32)> = Vec::new();
    let mut dlp = Vec::new();
    let mut rules: Vec<RuleEntry> = Vec::new();
    let mut preds: Vec<PredEntry> = Vec::new();

    let mut order: Vec<(usize, &ir::Agent)> = policy.agents.iter().enumerate().collect();
    order.sort_by(|(_, a), (_, b)| {
        (a.tenant.as_deref(), a.name.as_str()).cmp(&(b.tenant.as_deref(), b.name.as_str()))
    });
    let mut agent_order = alloc::vec![0u32; order.len()];
    let mut agent_sources = Vec::with_capacity(order.len());
    let mut agents = Vec::with_capacity(order.len());
    for (sorted, (listed, a)) in order.into_iter().enumerate() {
        if let Some(slot) = agent_order.get_mut(listed) {
            *slot = len32(sorted)?;
        }
        // Group rules by (tool, action), keeping policy order within a group.
        let mut groups: BTreeMap<(usize, usize), Vec<(usize, &ir::Rule)>> = BTreeMap::new();
        for (i, r) in a.rules.iter().enumerate() {
            groups.entry((r.tool, r.action)).or_default().push((i, r));
        }
        // Where each rule, in policy order, lands in `rules`.
        let mut rule_order = alloc::vec![0u32; a.rules.len()];
        let mut table = Vec::with_capacity(groups.len());
        for ((tool, action), rs) in groups {
            let tm: &ToolEntry = tools.get(tool).ok_or_else(|| {
                BuildError::Invalid(format!("agent `{}` refers to a missing tool", a.id))
            })?;
            let t16 =
                u16::try_from(tool).map_err(|_| BuildError::Invalid("too many tools".into()))?;
            let a16 = u16::try_from(action)
                .map_err(|_| BuildError::Invalid("too many actions".into()))?;
            let start = len32(rules.len())?;
            for (listed, r) in rs {
                if let Some(slot) = rule_order.get_mut(listed) {
                    *slot = len32(rules.len())?;
                }
                let tool_ir = policy
                    .tools
                    .get(tool)
                    .ok_or_else(|| BuildError::Invalid("missing tool".into()))?;
                let when = push_preds(
                    &r.when,
                    tool_ir,
                    tm,
                    &mut preds,
                    &mut regex_ids,
                    &mut regexes,
                )?;
                let conds = push_preds(
                    &r.conditions,
                    tool_ir,
                    tm,
                    &mut preds,
                    &mut regex_ids,
                    &mut regexes,
                )?;
                rules.push(RuleEntry {
                    id: r.id.clone(),
                    when,
                    conds,
                    approval: r.approval,
                    cost_usd: r.cost_usd,
                });
            }
            table.push(TableEntry {
                tool: t16,
                action: a16,
                rules: Span {
                    start,
                    len: len32(rules.len())? - start,
                },
            });
        }
        let dlp_set = match &a.dlp {
            None => None,
            Some(d) => Some(match dlp_ids.iter().find(|(x, _)| x == d) {
                Some((_, id)) => *id,
                None => {
                    let id = len32(dlp.len())?;
                    dlp.push(
                        build_dlp(&d.detectors, &d.custom, d.action, opts.dlp_hash_key).map_err(
                            |e| BuildError::AgentDlp {
                                agent: a.id.clone(),
                                error: Box::new(e),
                            },
                        )?,
                    );
                    dlp_ids.push((d.clone(), id));
                    id
                }
            }),
        };
        agent_sources.push(AgentSource {
            allow_hosts: a.allow_hosts.clone(),
            rules: rule_order,
        });
        agents.push(AgentEntry {
            id: a.id.clone(),
            name: a.name.clone(),
            tenant: a.tenant.clone(),
            mode: a.mode,
            allow_hosts: a.allow_hosts.as_ref().map(|hs| host_list(hs)),
            budget: a.budget.map(|b| AgentBudget {
                daily_usd: b.daily_usd,
                rps: b.rps,
            }),
            dlp: dlp_set,
            table,
        });
    }
    for w in agents.windows(2) {
        if let [x, y] = w {
            if crate::bundle::agent_key(x) == crate::bundle::agent_key(y) {
                return Err(BuildError::Invalid(format!("duplicate agent `{}`", y.id)));
            }
        }
    }

    // Approvals mask what they show with every built-in detector, also for
    // agents whose own DLP lacks one. A policy that never asks for approval
    // does not carry the set (about 230 KB of DFAs in each worker).
    let asks = policy
        .agents
        .iter()
        .flat_map(|a| &a.rules)
        .any(|r| r.approval != ir::Approval::Never);
    let shared = dlp_ids.iter().find(|(d, _)| {
        d.custom.is_empty()
            && d.action == DlpAction::Redact
            && Detector::ALL.iter().all(|x| d.detectors.contains(x))
    });
    let approval_dlp = match shared {
        _ if !asks => None,
        Some((_, id)) => Some(*id),
        None => {
            let all = ir::Dlp {
                detectors: Detector::ALL.to_vec(),
                custom: Vec::new(),
                action: DlpAction::Redact,
            };
            let id = len32(dlp.len())?;
            dlp.push(build_dlp(
                &all.detectors,
                &all.custom,
                all.action,
                opts.dlp_hash_key,
            )?);
            dlp_ids.push((all, id));
            Some(id)
        }
    };
    let mut regex_sources = alloc::vec![String::new(); regexes.len()];
    for (src, id) in regex_ids {
        if let Some(slot) = regex_sources.get_mut(id as usize) {
            *slot = src;
        }
    }
    let source = Source {
        agent_order,
        agents: agent_sources,
        regexes: regex_sources,
        dlp: dlp_ids
            .into_iter()
            .map(|(d, _)| DlpSource {
                detectors: d.detectors,
                custom: d.custom,
            })
            .collect(),
    };

    Ok(Model {
        policy_version: policy.version.clone(),
        compiler_version: COMPILER_VERSION.into(),
        identity: policy.identity.clone(),
        limits: policy.limits,
        tools,
        exact_hosts,
        wildcard_hosts,
        agents,
        rules,
        preds,
        regexes,
        dlp,
        approval_dlp,
        source,
    })
}

fn len32(n: usize) -> Result<u32, BuildError> {
    u32::try_from(n).map_err(|_| BuildError::Invalid("policy too large".into()))
}

fn host_list(hosts: &[String]) -> HostList {
    let mut exact = Vec::new();
    let mut suffixes = Vec::new();
    for h in hosts {
        let h = h.to_ascii_lowercase();
        match h.strip_prefix('*') {
            Some(s) => suffixes.push(String::from(s)),
            None => exact.push(h),
        }
    }
    exact.sort();
    exact.dedup();
    HostList { exact, suffixes }
}

type HostTable = Vec<(String, Vec<u16>)>;

/// Tools by exact host and by wildcard suffix (`.example.com` for
/// `*.example.com`): hosts lowercase, each tool once and in catalog order,
/// exact hosts sorted, wildcards most specific first. This is the order
/// in which a decision looks hosts up (and what `aegis export rego`
/// writes).
pub fn host_tools(policy: &ir::Policy) -> (HostTools, HostTools) {
    let mut exact: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut wild: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, t) in policy.tools.iter().enumerate() {
        for h in &t.hosts {
            let h = h.to_ascii_lowercase();
            let (map, key) = match h.strip_prefix('*') {
                Some(s) => (&mut wild, String::from(s)),
                None => (&mut exact, h),
            };
            let e = map.entry(key).or_default();
            if !e.contains(&i) {
                e.push(i);
            }
        }
    }
    let mut wild: Vec<_> = wild.into_iter().collect();
    // Most specific wildcard first.
    wild.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
    (exact.into_iter().collect(), wild)
}

/// Host and the indexes of its tools.
pub type HostTools = Vec<(String, Vec<usize>)>;

fn host_tables(policy: &ir::Policy) -> Result<(HostTable, HostTable), BuildError> {
    let narrow = |table: HostTools| -> Result<HostTable, BuildError> {
        table
            .into_iter()
            .map(|(h, tools)| {
                let tools = tools
                    .into_iter()
                    .map(|i| {
                        u16::try_from(i).map_err(|_| BuildError::Invalid("too many tools".into()))
                    })
                    .collect::<Result<Vec<u16>, BuildError>>()?;
                Ok((h, tools))
            })
            .collect()
    };
    let (exact, wild) = host_tools(policy);
    Ok((narrow(exact)?, narrow(wild)?))
}

fn literal_regex(out: &mut String, s: &str) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'/' || b == b'_' || b == b' ' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
}

/// Literal segments count; routes with more literal segments are tried first.
pub fn specificity(a: &ir::Action) -> usize {
    a.path
        .as_deref()
        .unwrap_or("")
        .split('/')
        .filter(|s| !s.starts_with('{'))
        .count()
}

fn build_tool(t: &ir::Tool, params: Vec<Vec<String>>) -> Result<ToolEntry, BuildError> {
    let slot_of = |name: &str| -> Result<u16, BuildError> {
        params
            .iter()
            .position(|p| p.len() == 1 && p.first().is_some_and(|s| s == name))
            .and_then(|i| u16::try_from(i).ok())
            .ok_or_else(|| BuildError::Invalid(format!("tool `{}`: no slot for `{name}`", t.name)))
    };
    let mut actions = Vec::with_capacity(t.actions.len());
    for a in &t.actions {
        let mut template = Vec::new();
        if let Some(path) = &a.path {
            for seg in path.strip_prefix('/').unwrap_or(path).split('/') {
                match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(name) => template.push(TSeg::Param(slot_of(name)?)),
                    None => template.push(TSeg::Lit(seg.into())),
                }
            }
        }
        actions.push(ActionEntry {
            name: a.name.clone(),
            method: a.method.clone().unwrap_or_default(),
            template,
            write: a.write,
        });
    }
    let (routes, route_actions) = if t.mcp_path.is_some() {
        (Vec::new(), Vec::new())
    } else {
        route_dfa(t)?
    };
    Ok(ToolEntry {
        name: t.name.clone(),
        hosts: t.hosts.clone(),
        body: t.body,
        mcp_path: t.mcp_path.clone(),
        actions,
        gzip: t.gzip,
        filter_tools_list: t.filter_tools_list,
        params,
        routes,
        route_actions,
    })
}

fn route_dfa(t: &ir::Tool) -> Result<(Vec<u8>, Vec<u16>), BuildError> {
    let mut order: Vec<usize> = (0..t.actions.len()).collect();
    order.sort_by_key(|&i| core::cmp::Reverse(t.actions.get(i).map_or(0, specificity)));
    let mut patterns = Vec::with_capacity(order.len());
    let mut route_actions = Vec::with_capacity(order.len());
    for &i in &order {
        let Some(a) = t.actions.get(i) else { continue };
        let mut p = String::from("(?-u)");
        literal_regex(&mut p, a.method.as_deref().unwrap_or(""));
        p.push(' ');
        for seg in a.path.as_deref().unwrap_or("/").split('/').skip(1) {
            p.push('/');
            if seg.starts_with('{') {
                p.push_str("[^/?#]+");
            } else {
                literal_regex(&mut p, seg);
            }
        }
        p.push_str("\\z");
        patterns.push(p);
        route_actions
            .push(u16::try_from(i).map_err(|_| BuildError::Invalid("too many actions".into()))?);
    }
    let dfa = dense::Builder::new()
        .syntax(syntax::Config::new().unicode(false).utf8(false))
        .thompson(thompson::Config::new().utf8(false))
        .configure(
            dense::Config::new()
                .match_kind(MatchKind::All)
                .start_kind(StartKind::Anchored)
                .dfa_size_limit(Some(super::regex::DLP_DFA_LIMIT)),
        )
        .build_many(&patterns)
        .map_err(|e| describe(&format!("routes of `{}`", t.name), &e))?;
    Ok((serialize(&dfa), route_actions))
}

fn lit(s: &Scalar) -> Lit {
    match s {
        Scalar::Str(s) => Lit::Str(s.clone()),
        Scalar::Num(n) => Lit::Num(*n),
        Scalar::Bool(b) => Lit::Bool(*b),
    }
}

fn push_preds(
    list: &[Predicate],
    tool: &ir::Tool,
    tm: &ToolEntry,
    preds: &mut Vec<PredEntry>,
    regex_ids: &mut BTreeMap<String, u32>,
    regexes: &mut Vec<Vec<u8>>,
) -> Result<Span, BuildError> {
    let start = len32(preds.len())?;
    for p in list {
        let path = param_path(tool, &p.param);
        let slot = tm
            .params
            .iter()
            .position(|x| *x == path)
            .and_then(|i| u16::try_from(i).ok())
            .ok_or_else(|| BuildError::Invalid(format!("no slot for parameter `{}`", p.param)))?;
        let mut regex = |src: &str| -> Result<u32, BuildError> {
            if let Some(id) = regex_ids.get(src) {
                return Ok(*id);
            }
            let id = len32(regexes.len())?;
            regexes.push(condition_dfa(src)?);
            regex_ids.insert(src.into(), id);
            Ok(id)
        };
        let op = match &p.op {
            Op::Eq(s) => PredOp::Eq(lit(s)),
            Op::Ne(s) => PredOp::Ne(lit(s)),
            Op::In(v) => PredOp::In(v.iter().map(lit).collect()),
            Op::NotIn(v) => PredOp::NotIn(v.iter().map(lit).collect()),
            Op::Lt(n) => PredOp::Lt(*n),
            Op::Le(n) => PredOp::Le(*n),
            Op::Gt(n) => PredOp::Gt(*n),
            Op::Ge(n) => PredOp::Ge(*n),
            Op::Matches(r) => PredOp::Matches(regex(r)?),
            Op::NotMatches(r) => PredOp::NotMatches(regex(r)?),
            Op::Exists => PredOp::Exists,
            Op::Absent => PredOp::Absent,
        };
        preds.push(PredEntry { slot, op });
    }
    Ok(Span {
        start,
        len: len32(preds.len())? - start,
    })
}
