//! The compiled bundle against an independent reading of the IR.
//!
//! Random IR policies and random requests are generated; each request is
//! judged twice: by the engine (IR -> `compile` -> `Bundle::load` ->
//! `decide`) and by `reference`, a direct interpretation of the IR written
//! here from the documented semantics, with `serde_json` for JSON bodies, a
//! small form decoder and the `regex` crate for `matches`. Verdict and rule
//! id must agree.
//!
//! Semantics checked (first verdict wins):
//! - identity: the agent exists (`tenant/agent` or agent + tenant);
//! - egress: the host (port ignored, ASCII case-insensitive) is in the
//!   agent's allowlist, exactly or below a `*.suffix`; no list = any host;
//! - tool: an exact host registration beats a wildcard, the most specific
//!   wildcard wins; the first such tool with an action whose method and path
//!   template match (`{x}` = one non-empty segment; more literal segments
//!   win) is the tool;
//! - the agent has rules for (tool, action), else deny;
//! - MCP servers: POST to the server's path; a single JSON-RPC object;
//!   protocol methods (`initialize`, `ping`, `tools/list`, ...) pass with
//!   no rule; `tools/call` names the action in `params.name`, and rule
//!   parameters are read under `params.arguments`;
//! - parameters come from the path template, the query string (form
//!   encoded; not for MCP, whose JSON-RPC call is the body) and the body
//!   (JSON or form, per tool): dotted paths, array indices, `a[b]` form
//!   keys; a malformed body or query, or a parameter the tool knows (a rule
//!   looks at it or a template binds it) given twice, denies;
//! - the first rule whose `when` predicates all hold applies (none -> deny);
//!   its first failing condition -> `approval_needed` when the rule asks on
//!   failure, else deny; all hold -> `approval_needed` for
//!   `Approval::Always`, else allow.
//!
//! Predicates: every operator except `absent` fails on a missing parameter;
//! `exists` holds for any present value (null included); `eq` / `in` compare
//! strings to strings, numbers numerically (a string that spells a JSON
//! number equals the number), bools to bools or the strings `true` /
//! `false`; `lt` / `le` / `gt` / `ge` need a number or a string spelling a
//! finite JSON number; `matches` is an unanchored search on the text
//! (numbers by their JSON text, bools as `true` / `false`); objects, arrays
//! and null fail both `matches` and `not_matches`.
//!
//! `PROPTEST_CASES` sets the number of random policies (each judged on up
//! to 24 requests). The last tests pin down the disagreements found so far;
//! `AEGIS_REFERENCE_TOLERATE=1` makes the reference copy them so that the
//! random comparison can hunt for new ones while they are open.

// Test helpers outside `#[test]` fns fall outside clippy's in-test allowances.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet};

use aegis_engine::builder::bundle::{compile, BuildOptions};
use aegis_engine::ir::{
    Action, Agent, Approval, BodyKind, Mode, Op, Policy, Predicate, Rule, Scalar, Tool,
};
use aegis_engine::{Bundle, Caller, Request, Scratch, Verdict};
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::FileFailurePersistence;
use serde_json::{json, Map, Value as J};

// ---------------------------------------------------------------------------
// Vocabulary

/// Parameters rules look at.
const PARAMS: &[&str] = &[
    "amount",
    "currency",
    "flag",
    "meta",
    "meta.kind",
    "items.0.sku",
    "id",
];

/// Hosts tools are registered for (`*.x` = wildcard).
const TOOL_HOSTS: &[&str] = &[
    "api.alpha.com",
    "api.beta.com",
    "*.gamma.internal",
    "*.x.gamma.internal",
    "*.alpha.com",
];

/// Entries of agents' egress allowlists.
const EGRESS: &[&str] = &[
    "api.alpha.com",
    "api.beta.com",
    "*.gamma.internal",
    "*.alpha.com",
    "stranger.example",
];

/// `:authority` values of requests not aimed at a rule.
const AUTHORITIES: &[&str] = &[
    "api.alpha.com",
    "API.Alpha.COM",
    "api.alpha.com:8443",
    "api.beta.com",
    "z.gamma.internal",
    "a.x.gamma.internal",
    "gamma.internal",
    "other.alpha.com",
    "alpha.com",
    "stranger.example",
    "[::1]:8080",
];

/// `(method, path template)` an action may have.
const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/pay"),
    ("GET", "/v1/pay"),
    ("POST", "/v1/refund"),
    ("PUT", "/items"),
    ("DELETE", "/items"),
    ("POST", "/"),
    ("GET", "/v1/customers/{id}"),
    ("GET", "/v1/customers/me"),
    ("POST", "/v1/{id}/pay"),
];

/// `(method, path)` of requests not aimed at a rule: near misses and
/// template instances.
const REQ_ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/pay"),
    ("GET", "/v1/pay"),
    ("POST", "/v1/refund"),
    ("PUT", "/items"),
    ("POST", "/"),
    ("PATCH", "/v1/pay"),
    ("POST", "/v1/pay/"),
    ("post", "/v1/pay"),
    ("POST", "/V1/PAY"),
    ("POST", "/v1"),
    ("GET", "/v1/customers/me"),
    ("GET", "/v1/customers/cus_1"),
    ("GET", "/v1/customers/5000"),
    ("GET", "/v1/customers/a%20b"),
    ("GET", "/v1/customers/"),
    ("GET", "/v1/customers/me/x"),
    ("POST", "/v1/usd/pay"),
    ("POST", "/v1/pay/pay"),
    ("POST", "/mcp"),
    ("GET", "/mcp"),
    ("POST", "/mcp/"),
];

/// MCP endpoint path and tool names (the actions of MCP servers).
const MCP_PATH: &str = "/mcp";
const MCP_TOOLS: &[&str] = &["read_file", "write_file", "search"];

/// JSON-RPC methods of aimed MCP requests other than `tools/call`.
const MCP_METHODS: &[&str] = &[
    "tools/list",
    "initialize",
    "ping",
    "notifications/initialized",
    "resources/read",
    "Tools/Call",
    "",
];

/// Values a `{id}` segment takes in aimed requests.
const SEGMENTS: &[&str] = &[
    "cus_1", "5000", "me", "a%20b", "usd", "%41", "5e3", "true", "a+b", "x%2Fy", "%C3%A9",
];

const STR_LITS: &[&str] = &[
    "usd", "eur", "USD", "5000", "5e3", "1200.5", "-0", "0", "01", "true", "false", "", "a b", "é",
    "5000.0", "1e2", "me", "A",
];

const NUM_LITS: &[f64] = &[0.0, -0.0, 1.0, 5000.0, 1200.5, -3.0, 1e20, 0.1, 100.0];

const REGEXES: &[&str] = &[
    "^usd$",
    "us",
    "^[0-9]+$",
    r"^-?[0-9]+(\.[0-9]+)?$",
    "e",
    "^$",
    "^t",
    "0$",
    "(?i)USD",
    "^.$",
    r"\d",
    "[^a-z]",
    r"^\w+$",
    "0",
    " ",
];

/// JSON body strings: the literals plus things that almost spell numbers.
const STR_VALUES: &[&str] = &[
    "usd",
    "eur",
    "USD",
    "5000",
    "5e3",
    "1200.5",
    "-0",
    "0",
    "01",
    "true",
    "false",
    "",
    "a b",
    "é",
    "5000.0",
    "1e2",
    "1,000",
    " 1",
    "+1",
    "1e999",
    "NaN",
    "x\"y\\z",
    "tab\tnew\nline",
    "😀",
    "0.1",
    "-3",
    "100",
];

/// Form keys (raw, as on the wire).
const FORM_KEYS: &[&str] = &[
    "amount",
    "currency",
    "flag",
    "meta",
    "meta.kind",
    "meta[kind]",
    "meta%5Bkind%5D",
    "items[0][sku]",
    "items.0.sku",
    "id",
    "x",
    "cur%72ency",
    "params.arguments.amount",
    "params[arguments][currency]",
    "method",
    "params.name",
];

/// Form values (raw, as on the wire).
const FORM_VALUES: &[&str] = &[
    "5000",
    "5e3",
    "1200.5",
    "usd",
    "u%73d",
    "a+b",
    "a%2Bb",
    "%E2%82%AC",
    "",
    "true",
    "1%2C000",
    "-3",
    "01",
    "USD",
    "100",
    "tools/call",
    "tools/list",
    "read_file",
];

/// Malformed form values: a bad escape, an escape that is not UTF-8.
const BAD_FORM_VALUES: &[&str] = &["%zz", "%ff", "%4"];

// ---------------------------------------------------------------------------
// Strategies: policies

fn scalar() -> impl Strategy<Value = Scalar> {
    prop_oneof![
        3 => select(STR_LITS).prop_map(|s| Scalar::Str(s.into())),
        3 => select(NUM_LITS).prop_map(Scalar::Num),
        1 => (-5i32..6000).prop_map(|n| Scalar::Num(f64::from(n))),
        2 => any::<bool>().prop_map(Scalar::Bool),
    ]
}

fn number() -> impl Strategy<Value = f64> {
    prop_oneof![
        select(NUM_LITS),
        (-5i32..6000).prop_map(f64::from),
        (-100.0f64..10000.0),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let regex = || select(REGEXES).prop_map(String::from);
    prop_oneof![
        4 => scalar().prop_map(Op::Eq),
        2 => scalar().prop_map(Op::Ne),
        3 => prop::collection::vec(scalar(), 1..4).prop_map(Op::In),
        2 => prop::collection::vec(scalar(), 1..4).prop_map(Op::NotIn),
        1 => number().prop_map(Op::Lt),
        2 => number().prop_map(Op::Le),
        1 => number().prop_map(Op::Gt),
        1 => number().prop_map(Op::Ge),
        3 => regex().prop_map(Op::Matches),
        2 => regex().prop_map(Op::NotMatches),
        2 => Just(Op::Exists),
        2 => Just(Op::Absent),
    ]
}

fn predicate() -> impl Strategy<Value = Predicate> {
    (select(PARAMS), op()).prop_map(|(p, op)| Predicate {
        param: p.into(),
        op,
    })
}

#[derive(Debug, Clone)]
struct RuleSeed {
    tool: Index,
    action: Index,
    when: Vec<Predicate>,
    conditions: Vec<Predicate>,
    approval: Approval,
}

fn rule_seed() -> impl Strategy<Value = RuleSeed> {
    (
        any::<Index>(),
        any::<Index>(),
        prop_oneof![
            2 => Just(Vec::new()),
            1 => prop::collection::vec(predicate(), 1..3),
        ],
        prop::collection::vec(predicate(), 0..4),
        select(&[Approval::Never, Approval::OnFailure, Approval::Always][..]),
    )
        .prop_map(|(tool, action, when, conditions, approval)| RuleSeed {
            tool,
            action,
            when,
            conditions,
            approval,
        })
}

#[derive(Debug, Clone)]
struct AgentSeed {
    tenant: Option<&'static str>,
    shadow: bool,
    egress: Option<Vec<bool>>,
    rules: Vec<RuleSeed>,
}

fn agent_seed() -> impl Strategy<Value = AgentSeed> {
    (
        prop_oneof![3 => Just(None), 1 => Just(Some("t1")), 1 => Just(Some("t2"))],
        any::<bool>(),
        prop::option::weighted(0.35, prop::collection::vec(any::<bool>(), EGRESS.len())),
        prop::collection::vec(rule_seed(), 1..5),
    )
        .prop_map(|(tenant, shadow, egress, rules)| AgentSeed {
            tenant,
            shadow,
            egress,
            rules,
        })
}

/// Nonempty subset of `0..n`, as a mask.
fn mask(n: usize) -> impl Strategy<Value = Vec<bool>> {
    prop::collection::vec(any::<bool>(), n).prop_filter("nonempty", |m| m.iter().any(|b| *b))
}

#[derive(Debug, Clone)]
struct ToolSeed {
    hosts: Vec<bool>,
    routes: Vec<bool>,
    /// 0: JSON body, 1: form body, 2: MCP server.
    kind: u8,
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        prop::collection::vec(
            (
                mask(TOOL_HOSTS.len()),
                mask(ROUTES.len()),
                prop_oneof![5 => Just(0u8), 2 => Just(1), 2 => Just(2)],
            )
                .prop_map(|(hosts, routes, kind)| ToolSeed {
                    hosts,
                    routes,
                    kind,
                }),
            1..4,
        ),
        prop::collection::vec(agent_seed(), 1..6),
    )
        .prop_map(|(tools, agents)| build_policy(&tools, &agents))
}

fn pick<T: Copy>(all: &[T], m: &[bool]) -> Vec<T> {
    all.iter()
        .zip(m)
        .filter(|(_, b)| **b)
        .map(|(x, _)| *x)
        .collect()
}

fn build_policy(tools: &[ToolSeed], agents: &[AgentSeed]) -> Policy {
    let tools: Vec<Tool> = tools
        .iter()
        .enumerate()
        .map(|(i, t)| Tool {
            name: format!("tool{i}"),
            hosts: pick(TOOL_HOSTS, &t.hosts)
                .into_iter()
                .map(String::from)
                .collect(),
            body: if t.kind == 1 {
                BodyKind::Form
            } else {
                BodyKind::Json
            },
            mcp_path: (t.kind == 2).then(|| MCP_PATH.into()),
            gzip: false,
            filter_tools_list: true,
            actions: if t.kind == 2 {
                let mut names = pick(MCP_TOOLS, &t.routes[..MCP_TOOLS.len()]);
                if names.is_empty() {
                    names.push(MCP_TOOLS[0]);
                }
                names
                    .into_iter()
                    .map(|n| Action {
                        name: n.into(),
                        method: None,
                        path: None,
                        write: false,
                    })
                    .collect()
            } else {
                pick(ROUTES, &t.routes)
                    .into_iter()
                    .enumerate()
                    .map(|(k, (m, p))| Action {
                        name: format!("act{k}"),
                        method: Some(m.into()),
                        path: Some(p.into()),
                        write: false,
                    })
                    .collect()
            },
        })
        .collect();
    let agents = agents
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let name = format!("agent{i}");
            let id = match a.tenant {
                Some(t) => format!("{t}/{name}"),
                None => name.clone(),
            };
            let rules = a
                .rules
                .iter()
                .enumerate()
                .map(|(k, r)| {
                    let tool = r.tool.index(tools.len());
                    let action = r.action.index(tools[tool].actions.len());
                    Rule {
                        id: format!(
                            "{id}/{}/{}#{k}",
                            tools[tool].name, tools[tool].actions[action].name
                        ),
                        tool,
                        action,
                        when: r.when.clone(),
                        conditions: r.conditions.clone(),
                        approval: r.approval,
                        cost_usd: None,
                    }
                })
                .collect();
            Agent {
                id,
                name,
                tenant: a.tenant.map(String::from),
                mode: if a.shadow {
                    Mode::Shadow
                } else {
                    Mode::Enforce
                },
                allow_hosts: a
                    .egress
                    .as_ref()
                    .map(|m| pick(EGRESS, m).into_iter().map(String::from).collect()),
                budget: None,
                dlp: None,
                rules,
            }
        })
        .collect();
    Policy {
        version: "ref-1".into(),
        identity: None,
        tools,
        agents,
        limits: Default::default(),
    }
}

// ---------------------------------------------------------------------------
// Strategies: requests

fn leaf() -> impl Strategy<Value = J> {
    prop_oneof![
        3 => select(&[0i64, 1, 5000, -3, 1200, 100, 4999, 5001][..]).prop_map(J::from),
        1 => (-10i64..10_000).prop_map(J::from),
        2 => select(&[1200.5f64, 5000.0, 0.1, 1e20, -0.0, 100.0, 4999.99, 2.5e-7][..])
            .prop_map(J::from),
        5 => select(STR_VALUES).prop_map(J::from),
        2 => any::<bool>().prop_map(J::from),
        1 => Just(J::Null),
    ]
}

fn jval() -> impl Strategy<Value = J> {
    prop_oneof![
        8 => leaf(),
        1 => Just(json!({"k": 1})),
        1 => Just(json!({})),
        1 => Just(json!([1, "usd"])),
        1 => Just(json!([])),
    ]
}

/// How `meta` appears in a JSON body.
#[derive(Debug, Clone)]
enum MetaSeed {
    Absent,
    Value(J),
    Object { kind: Option<J> },
}

/// How `items` appears in a JSON body.
#[derive(Debug, Clone)]
enum ItemsSeed {
    Absent,
    Value(J),
    /// `[{"sku": v}, {"sku": "second"}]` (or without `sku` in the first).
    Array {
        sku: Option<J>,
        more: bool,
    },
    /// `{"0": {"sku": v}}`: object keys that look like indices.
    Keyed {
        sku: Option<J>,
    },
    /// `[v, ...]`: the first item is not an object.
    ScalarItem(J),
}

#[derive(Debug, Clone)]
enum JsonSeed {
    Object {
        top: Vec<(&'static str, J)>,
        meta: MetaSeed,
        items: ItemsSeed,
        noise: bool,
    },
    Empty,
    Other(J),
}

fn json_seed() -> impl Strategy<Value = JsonSeed> {
    let meta = prop_oneof![
        2 => Just(MetaSeed::Absent),
        1 => leaf().prop_map(MetaSeed::Value),
        3 => prop::option::weighted(0.8, jval()).prop_map(|kind| MetaSeed::Object { kind }),
    ];
    let items = prop_oneof![
        2 => Just(ItemsSeed::Absent),
        1 => leaf().prop_map(ItemsSeed::Value),
        3 => (prop::option::weighted(0.8, jval()), any::<bool>())
            .prop_map(|(sku, more)| ItemsSeed::Array { sku, more }),
        1 => prop::option::weighted(0.8, jval()).prop_map(|sku| ItemsSeed::Keyed { sku }),
        1 => leaf().prop_map(ItemsSeed::ScalarItem),
    ];
    let top = (
        prop::option::weighted(0.8, jval()),
        prop::option::weighted(0.7, jval()),
        prop::option::weighted(0.4, jval()),
        prop::option::weighted(0.1, jval()),
    )
        .prop_map(|(a, c, f, id)| {
            [("amount", a), ("currency", c), ("flag", f), ("id", id)]
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect::<Vec<_>>()
        });
    let object =
        (top, meta, items, any::<bool>()).prop_map(|(top, meta, items, noise)| JsonSeed::Object {
            top,
            meta,
            items,
            noise,
        });
    prop_oneof![
        12 => object,
        1 => Just(JsonSeed::Empty),
        1 => jval().prop_map(JsonSeed::Other),
    ]
}

/// The JSON body (`None`: empty body).
fn json_body(seed: &JsonSeed) -> Option<J> {
    match seed {
        JsonSeed::Empty => None,
        JsonSeed::Other(v) => Some(v.clone()),
        JsonSeed::Object {
            top,
            meta,
            items,
            noise,
        } => {
            let mut m = Map::new();
            for (k, v) in top {
                m.insert((*k).into(), v.clone());
            }
            match meta {
                MetaSeed::Absent => {}
                MetaSeed::Value(v) => {
                    m.insert("meta".into(), v.clone());
                }
                MetaSeed::Object { kind } => {
                    let mut o = Map::new();
                    o.insert("other".into(), json!("x"));
                    if let Some(k) = kind {
                        o.insert("kind".into(), k.clone());
                    }
                    m.insert("meta".into(), J::Object(o));
                }
            }
            let item = |sku: &Option<J>| {
                let mut o = Map::new();
                o.insert("qty".into(), json!(1));
                if let Some(s) = sku {
                    o.insert("sku".into(), s.clone());
                }
                J::Object(o)
            };
            match items {
                ItemsSeed::Absent => {}
                ItemsSeed::Value(v) => {
                    m.insert("items".into(), v.clone());
                }
                ItemsSeed::Array { sku, more } => {
                    let mut a = vec![item(sku)];
                    if *more {
                        a.push(json!({"sku": "second", "qty": 2}));
                    }
                    m.insert("items".into(), J::Array(a));
                }
                ItemsSeed::Keyed { sku } => {
                    m.insert("items".into(), json!({ "0": item(sku) }));
                }
                ItemsSeed::ScalarItem(v) => {
                    m.insert("items".into(), json!([v, {"sku": "second"}]));
                }
            }
            if *noise {
                m.insert("kind".into(), json!("top"));
                m.insert("sku".into(), json!("top"));
                m.insert("meta.kind".into(), json!("dotted key"));
            }
            Some(J::Object(m))
        }
    }
}

/// Form-encoded pairs (raw key, raw value; `None` value: no `=`).
fn form_pairs(max: usize) -> impl Strategy<Value = Vec<(&'static str, Option<&'static str>)>> {
    prop::collection::vec(
        (
            select(FORM_KEYS),
            prop::option::weighted(
                0.95,
                prop_oneof![30 => select(FORM_VALUES), 1 => select(BAD_FORM_VALUES)],
            ),
        ),
        0..max,
    )
}

fn media_type(kind: BodyKind) -> &'static str {
    match kind {
        BodyKind::Form => "application/x-www-form-urlencoded",
        _ => "application/json",
    }
}

fn form_text(pairs: &[(&str, Option<&str>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => (*k).to_string(),
        })
        .collect();
    parts.join("&")
}

#[derive(Debug, Clone)]
struct ReqSeed {
    /// Which agent calls; `None`: an agent the policy does not know.
    agent: Option<Index>,
    /// Pass the tenant separately instead of as `tenant/agent`.
    split_tenant: bool,
    /// Aim at one of the agent's rules: (rule, host of its tool, host
    /// spelling, `{id}` value); `None`: a random authority and route.
    aim: Option<(Index, Index, u8, &'static str)>,
    authority: &'static str,
    route: (&'static str, &'static str),
    query: Option<Vec<(&'static str, Option<&'static str>)>>,
    json: JsonSeed,
    /// 0: compact, 1: pretty, 2: compact with `\u` escapes in some keys.
    json_style: u8,
    form: Vec<(&'static str, Option<&'static str>)>,
    /// JSON-RPC envelope of aimed MCP requests: `None` method =
    /// `tools/call`; name 0 = the rule's tool, 1 = unknown, 2 = a number,
    /// 3 = missing; 4: a batch (array) instead of one object.
    mcp: (Option<&'static str>, u8),
}

fn req_seed() -> impl Strategy<Value = ReqSeed> {
    (
        prop::option::weighted(0.95, any::<Index>()),
        any::<bool>(),
        prop::option::weighted(
            0.8,
            (any::<Index>(), any::<Index>(), 0u8..4, select(SEGMENTS)),
        ),
        select(AUTHORITIES),
        select(REQ_ROUTES),
        prop::option::weighted(0.25, form_pairs(3)),
        json_seed(),
        0u8..3,
        form_pairs(6),
        (
            prop::option::weighted(0.15, select(MCP_METHODS)),
            prop_oneof![20 => Just(0u8), 1 => Just(1), 1 => Just(2), 1 => Just(3), 1 => Just(4)],
        ),
    )
        .prop_map(
            |(agent, split_tenant, aim, authority, route, query, json, json_style, form, mcp)| {
                ReqSeed {
                    agent,
                    split_tenant,
                    aim,
                    authority,
                    route,
                    query,
                    json,
                    json_style,
                    form,
                    mcp,
                }
            },
        )
}

/// A concrete host name under a tool's host pattern, spelled `variant`ly.
fn concrete_host(pattern: &str, variant: u8) -> String {
    let host = match pattern.strip_prefix("*.") {
        Some(suffix) => format!("h{variant}.{suffix}"),
        None => pattern.into(),
    };
    match variant {
        1 => host.to_ascii_uppercase(),
        2 => format!("{host}:443"),
        _ => host,
    }
}

/// A request, with the caller given directly.
struct Req {
    agent: String,
    tenant: Option<String>,
    method: String,
    authority: String,
    /// With the query string.
    path: String,
    body: Vec<u8>,
    /// The media type of the tool the request aims at.
    content_type: &'static str,
}

/// The JSON-RPC `tools/call` envelope (or another method) around `args`.
fn mcp_envelope(s: &ReqSeed, tool: &str, args: Option<J>) -> J {
    let mut params = Map::new();
    match s.mcp.1 {
        0 | 4 => {
            params.insert("name".into(), J::from(tool));
        }
        1 => {
            params.insert("name".into(), J::from("no_such_tool"));
        }
        2 => {
            params.insert("name".into(), J::from(5));
        }
        _ => {}
    }
    if let Some(a) = args {
        params.insert("arguments".into(), a);
    }
    let call = json!({
        "jsonrpc": "2.0",
        "id": 1,
        "method": s.mcp.0.unwrap_or("tools/call"),
        "params": J::Object(params),
    });
    if s.mcp.1 == 4 {
        J::Array(vec![call])
    } else {
        call
    }
}

fn request(p: &Policy, s: &ReqSeed) -> Req {
    let agent = s.agent.map(|i| &p.agents[i.index(p.agents.len())]);
    let (name, tenant) = match agent {
        Some(a) if s.split_tenant => (a.name.clone(), a.tenant.clone()),
        Some(a) => (a.id.clone(), None),
        None => ("nobody".into(), None),
    };
    let aimed = match (agent, s.aim) {
        (Some(a), Some((rule, host, variant, segment))) => {
            let r = &a.rules[rule.index(a.rules.len())];
            let tool = &p.tools[r.tool];
            let action = &tool.actions[r.action];
            let authority = concrete_host(&tool.hosts[host.index(tool.hosts.len())], variant);
            Some(match &tool.mcp_path {
                Some(mcp) => (
                    authority,
                    "POST".into(),
                    mcp.clone(),
                    tool.body,
                    Some(action.name.clone()),
                ),
                None => (
                    authority,
                    action.method.clone().unwrap_or_default(),
                    action
                        .path
                        .clone()
                        .unwrap_or_default()
                        .replace("{id}", segment),
                    tool.body,
                    None,
                ),
            })
        }
        _ => None,
    };
    let (authority, method, mut path, kind, mcp_tool) = aimed.unwrap_or_else(|| {
        (
            s.authority.into(),
            s.route.0.into(),
            s.route.1.into(),
            BodyKind::Json,
            None,
        )
    });
    if let Some(q) = &s.query {
        path.push('?');
        path.push_str(&form_text(q));
    }
    let json = match &mcp_tool {
        Some(t) => Some(mcp_envelope(s, t, json_body(&s.json))),
        None => json_body(&s.json),
    };
    let body = match kind {
        BodyKind::Form => form_text(&s.form).into_bytes(),
        _ => match json {
            None => Vec::new(),
            Some(j) => match s.json_style {
                1 => serde_json::to_string_pretty(&j).expect("json"),
                2 => j
                    .to_string()
                    .replace("\"amount\":", "\"\\u0061mount\":")
                    .replace("\"kind\":", "\"k\\u0069nd\":")
                    .replace("\"0\":", "\"\\u0030\":")
                    .replace("\"name\":", "\"n\\u0061me\":")
                    .replace("\"tools/call\"", "\"tools\\/call\""),
                _ => j.to_string(),
            }
            .into_bytes(),
        },
    };
    Req {
        agent: name,
        tenant,
        method,
        authority,
        path,
        body,
        content_type: media_type(kind),
    }
}

// ---------------------------------------------------------------------------
// The reference interpretation

fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority.split(':').next().unwrap_or(authority)
}

/// `*.suffix` matches hosts strictly below `suffix`.
fn host_matches(pattern: &str, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    let pattern = pattern.to_ascii_lowercase();
    match pattern.strip_prefix('*') {
        Some(suffix) => host.len() > suffix.len() && host.ends_with(&suffix),
        None => host == pattern,
    }
}

/// Tools registered for `host`: the exact registrations if any, else those
/// of the most specific matching wildcard; in tool order.
fn tools_for_host(p: &Policy, host: &str) -> Vec<usize> {
    let exact: Vec<usize> = (0..p.tools.len())
        .filter(|&i| {
            p.tools[i]
                .hosts
                .iter()
                .any(|h| !h.starts_with('*') && host_matches(h, host))
        })
        .collect();
    if !exact.is_empty() {
        return exact;
    }
    let best = p
        .tools
        .iter()
        .flat_map(|t| t.hosts.iter())
        .filter(|h| h.starts_with('*') && host_matches(h, host))
        .max_by_key(|h| h.len());
    match best {
        None => Vec::new(),
        Some(best) => (0..p.tools.len())
            .filter(|&i| p.tools[i].hosts.iter().any(|h| h == best))
            .collect(),
    }
}

/// Does `path` fit `template`? Returns the number of literal segments.
fn route_fits(template: &str, path: &str) -> Option<usize> {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    if t.len() != p.len() {
        return None;
    }
    let mut literal = 0;
    for (t, p) in t.iter().zip(&p) {
        if t.starts_with('{') {
            if p.is_empty() || p.contains('#') {
                return None;
            }
        } else if t == p {
            literal += 1;
        } else {
            return None;
        }
    }
    Some(literal)
}

/// The action of tool `t` for `method path`: the fitting template with the
/// most literal segments, the first one among equals.
fn find_action(t: &Tool, method: &str, path: &str) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    for (i, a) in t.actions.iter().enumerate() {
        if a.method.as_deref() != Some(method) {
            continue;
        }
        if let Some(n) = route_fits(a.path.as_deref().unwrap_or(""), path) {
            if best.is_none_or(|(_, m)| n > m) {
                best = Some((i, n));
            }
        }
    }
    best.map(|(i, _)| i)
}

/// `%XX` decoding (and `+` as space when `plus`); `None` on a bad escape or
/// when the result is not UTF-8.
fn pct_decode(s: &str, plus: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Decoded `(key as dotted path, value)` pairs; `None` when malformed.
fn form_decode(data: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for pair in data.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = pct_decode(k, true)?;
        let v = pct_decode(v, true)?;
        out.push((k.replace('[', ".").replace(']', ""), v));
    }
    Some(out)
}

/// The value at a dotted path of a JSON document.
fn lookup<'j>(doc: &'j J, param: &str) -> Option<&'j J> {
    let mut v = doc;
    for seg in param.split('.') {
        v = match v {
            J::Object(m) => m.get(seg)?,
            J::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

/// Where a rule's parameter is in the request: MCP tool arguments live
/// under `params.arguments`.
fn param_path(tool: &Tool, param: &str) -> String {
    match tool.mcp_path {
        Some(_) => format!("params.arguments.{param}"),
        None => param.into(),
    }
}

/// Parameters the tool knows: those any rule on it looks at, and the names
/// its path templates bind.
fn known_params(p: &Policy, ti: usize) -> BTreeSet<String> {
    let tool = &p.tools[ti];
    let mut known: BTreeSet<String> = p
        .agents
        .iter()
        .flat_map(|a| a.rules.iter())
        .filter(|r| r.tool == ti)
        .flat_map(|r| r.when.iter().chain(r.conditions.iter()))
        .map(|pr| param_path(tool, &pr.param))
        .collect();
    if tool.mcp_path.is_some() {
        for slot in ["method", "params.name", "id", "result", "error"] {
            known.insert(slot.into());
        }
    }
    for a in &p.tools[ti].actions {
        for seg in a.path.as_deref().unwrap_or("").split('/') {
            if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                known.insert(name.into());
            }
        }
    }
    known
}

/// The request's parameters; `None` when the request is malformed or a
/// known parameter is given more than once.
fn parameters(
    p: &Policy,
    ti: usize,
    ai: Option<usize>,
    path: &str,
    query: Option<&str>,
    body: &[u8],
) -> Option<BTreeMap<String, J>> {
    let tool = &p.tools[ti];
    let known = known_params(p, ti);
    let mut found: Vec<(String, J)> = Vec::new();
    // Path template.
    let template = ai
        .and_then(|ai| tool.actions[ai].path.as_deref())
        .unwrap_or("");
    for (t, s) in template.split('/').zip(path.split('/')) {
        if let Some(name) = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
            found.push((name.into(), J::String(pct_decode(s, false)?)));
        }
    }
    // Query string (not for MCP: JSON-RPC parameters are in the body),
    // then the body.
    let query = query.filter(|_| tool.mcp_path.is_none() || tolerate_known_bugs());
    let mut forms: Vec<&str> = query.into_iter().collect();
    let body_text;
    // Form keys are one namespace across the query and a form body; a JSON
    // body's keys are its own. A key given twice is refused unless it is a
    // `key[]` list.
    let unique = |texts: &[&str]| -> Option<()> {
        let mut seen = std::collections::HashSet::new();
        for t in texts {
            for pair in t.split('&').filter(|p| !p.is_empty()) {
                let k = pct_decode(pair.split_once('=').map_or(pair, |(k, _)| k), true)?;
                if !k.ends_with("[]") && !seen.insert(k.to_ascii_lowercase()) {
                    return None;
                }
            }
        }
        Some(())
    };
    if !body.is_empty() {
        match tool.body {
            BodyKind::Json => {
                unique(&forms)?;
                if tool.mcp_path.is_none()
                    && body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{')
                {
                    return None;
                }
                let doc: J = serde_json::from_slice(body).ok()?;
                for k in &known {
                    if let Some(v) = lookup(&doc, k) {
                        found.push((k.clone(), v.clone()));
                    }
                }
            }
            BodyKind::Form => {
                body_text = String::from_utf8(body.to_vec()).ok()?;
                forms.push(&body_text);
            }
            BodyKind::None => {}
        }
    }
    if body.is_empty() || tool.body != BodyKind::Json {
        unique(&forms)?;
    }
    for f in forms {
        for (k, v) in form_decode(f)? {
            if known.contains(&k) {
                found.push((k, J::String(v)));
            }
        }
    }
    let mut params = BTreeMap::new();
    for (k, v) in found {
        if params.insert(k, v).is_some() {
            return None;
        }
    }
    Some(params)
}

/// The number a string spells in JSON syntax, when finite.
fn spelled_number(s: &str) -> Option<f64> {
    let grammar = regex::Regex::new(r"\A-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?\z")
        .expect("number grammar");
    if !grammar.is_match(s) {
        return None;
    }
    s.parse::<f64>().ok().filter(|x| x.is_finite())
}

fn json_number(v: &J) -> Option<f64> {
    match v {
        J::Number(n) => n.as_f64().filter(|x| x.is_finite()),
        J::String(s) => spelled_number(s),
        _ => None,
    }
}

fn bool_text(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

/// Set `AEGIS_REFERENCE_TOLERATE=1` to have the reference copy the engine's
/// known disagreements (see the tests at the end of this file), so that the
/// random comparison can look for new ones while those are open.
fn tolerate_known_bugs() -> bool {
    std::env::var("AEGIS_REFERENCE_TOLERATE").is_ok_and(|v| v == "1")
}

fn equals(lit: &Scalar, v: &J) -> bool {
    if tolerate_known_bugs() {
        match (lit, v) {
            (Scalar::Str(s), J::Number(n)) => return *s == n.to_string(),
            (Scalar::Str(_), J::Bool(_)) => return false,
            _ => {}
        }
    }
    match (lit, v) {
        (Scalar::Str(s), J::String(t)) => s == t,
        (Scalar::Num(x), J::Number(_) | J::String(_)) => json_number(v) == Some(*x),
        (Scalar::Str(s), J::Number(_)) => {
            spelled_number(s).is_some_and(|x| json_number(v) == Some(x))
        }
        (Scalar::Bool(b), J::Bool(c)) => b == c,
        (Scalar::Bool(b), J::String(t)) => t == bool_text(*b),
        (Scalar::Str(s), J::Bool(c)) => s == bool_text(*c),
        _ => false,
    }
}

/// Text a regex is searched in; `None` for objects, arrays and null.
fn text_of(v: &J) -> Option<String> {
    match v {
        J::String(s) => Some(s.clone()),
        J::Number(n) => Some(n.to_string()),
        J::Bool(b) => Some(bool_text(*b).into()),
        _ => None,
    }
}

fn search(re: &str, v: &J) -> Option<bool> {
    let re = regex::Regex::new(re).expect("pool regex");
    text_of(v).map(|t| re.is_match(&t))
}

fn holds(tool: &Tool, pred: &Predicate, params: &BTreeMap<String, J>) -> bool {
    let Some(v) = params.get(&param_path(tool, &pred.param)) else {
        return matches!(pred.op, Op::Absent);
    };
    match &pred.op {
        Op::Absent => false,
        Op::Exists => true,
        Op::Eq(l) => equals(l, v),
        Op::Ne(l) => !equals(l, v),
        Op::In(ls) => ls.iter().any(|l| equals(l, v)),
        Op::NotIn(ls) => !ls.iter().any(|l| equals(l, v)),
        Op::Lt(n) => json_number(v).is_some_and(|x| x < *n),
        Op::Le(n) => json_number(v).is_some_and(|x| x <= *n),
        Op::Gt(n) => json_number(v).is_some_and(|x| x > *n),
        Op::Ge(n) => json_number(v).is_some_and(|x| x >= *n),
        Op::Matches(r) => search(r, v) == Some(true),
        Op::NotMatches(r) => search(r, v) == Some(false),
    }
}

/// A decision as the test compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    verdict: Verdict,
    rule: Option<String>,
}

fn deny() -> Outcome {
    Outcome {
        verdict: Verdict::Deny,
        rule: None,
    }
}

/// A path the engine reads: origin-form, no fragment, backslash, `;`,
/// raw space/control/non-ASCII byte, bad or encoded-slash/control escape,
/// empty inner segment or dot segment; a query with no raw
/// space/control/non-ASCII byte and valid escapes.
fn target_ok(target: &str) -> bool {
    if target.contains('#') {
        return false;
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let raw_ok = |t: &str, in_path: bool| {
        let b = t.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            if c <= 0x20 || c >= 0x7f || (in_path && (c == b'\\' || c == b';')) {
                return false;
            }
            if c == b'%' {
                let Some(v) = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                else {
                    return false;
                };
                if in_path && (v == b'/' || v == b'\\' || v < 0x20 || v == 0x7f) {
                    return false;
                }
                i += 3;
            } else {
                i += 1;
            }
        }
        true
    };
    if !path.starts_with('/') || !raw_ok(path, true) || !raw_ok(query, false) {
        return false;
    }
    let segs: Vec<&str> = path[1..].split('/').collect();
    segs.iter().enumerate().all(|(i, seg)| {
        let decoded = seg.replace("%2e", ".").replace("%2E", ".");
        (i + 1 == segs.len() || !seg.is_empty()) && decoded != "." && decoded != ".."
    })
}

fn reference(p: &Policy, r: &Req) -> Outcome {
    // 0. request shape
    if !target_ok(&r.path) {
        return deny();
    }
    // 1. identity
    let (tenant, name) = match (r.tenant.as_deref(), r.agent.split_once('/')) {
        (None, Some((t, a))) => (Some(t), a),
        _ => (r.tenant.as_deref(), r.agent.as_str()),
    };
    let Some(agent) = p
        .agents
        .iter()
        .find(|a| a.name == name && a.tenant.as_deref() == tenant)
    else {
        return deny();
    };
    // 2. egress
    let host = host_of(&r.authority);
    if let Some(allow) = &agent.allow_hosts {
        if !allow.iter().any(|h| host_matches(h, host)) {
            return deny();
        }
    }
    // 3. tool + action
    let (path, query) = match r.path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (r.path.as_str(), None),
    };
    let found = tools_for_host(p, host).into_iter().find_map(|ti| {
        let t = &p.tools[ti];
        match &t.mcp_path {
            Some(mcp) => (r.method == "POST" && path == mcp).then_some((ti, None)),
            None => find_action(t, &r.method, path).map(|ai| (ti, Some(ai))),
        }
    });
    let Some((ti, ai)) = found else {
        return deny();
    };
    let tool = &p.tools[ti];
    // An HTTP action the agent has no rule for, or an MCP server it has no
    // rule on at all.
    if !agent
        .rules
        .iter()
        .any(|x| x.tool == ti && ai.is_none_or(|ai| x.action == ai))
    {
        return deny();
    }
    // The body must be what the tool reads.
    let want = media_type(if tool.mcp_path.is_some() {
        BodyKind::Json
    } else {
        tool.body
    });
    if !r.body.is_empty() && tool.body != BodyKind::None && r.content_type != want {
        return deny();
    }
    let Some(params) = parameters(p, ti, ai, path, query, &r.body) else {
        return deny();
    };
    // MCP: a single JSON-RPC object; protocol methods pass, `tools/call`
    // names the action.
    let ai = match ai {
        Some(ai) => ai,
        None => {
            if r.body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
                return deny();
            }
            let Some(J::String(method)) = params.get("method") else {
                return deny();
            };
            let has_id = matches!(params.get("id"), Some(J::String(_) | J::Number(_)));
            if method.starts_with("notifications/") {
                // A notification has no id; with one it is a request of a
                // method nobody answers.
                return if has_id {
                    deny()
                } else {
                    Outcome {
                        verdict: Verdict::Allow,
                        rule: None,
                    }
                };
            }
            // Reading data is governed like a tool where the catalog lists
            // the method; the generated catalogs list only tool names.
            assert!(!tool.actions.iter().any(|a| a.name == *method));
            if method == "resources/read" || method == "prompts/get" {
                return deny();
            }
            if method != "tools/call" {
                const PLUMBING: &[&str] = &[
                    "initialize",
                    "ping",
                    "server/discover",
                    "tools/list",
                    "resources/list",
                    "resources/templates/list",
                    "resources/subscribe",
                    "resources/unsubscribe",
                    "prompts/list",
                    "completion/complete",
                    "logging/setLevel",
                ];
                return if PLUMBING.contains(&method.as_str()) {
                    Outcome {
                        verdict: Verdict::Allow,
                        rule: None,
                    }
                } else {
                    deny()
                };
            }
            let Some(J::String(name)) = params.get("params.name") else {
                return deny();
            };
            let Some(ai) = tool.actions.iter().position(|a| a.name == *name) else {
                return deny();
            };
            ai
        }
    };
    let rules: Vec<&Rule> = agent
        .rules
        .iter()
        .filter(|x| x.tool == ti && x.action == ai)
        .collect();
    if rules.is_empty() {
        return deny();
    }
    // 4. rules and conditions
    let Some(rule) = rules
        .into_iter()
        .find(|x| x.when.iter().all(|pr| holds(tool, pr, &params)))
    else {
        return deny();
    };
    let verdict = if rule.conditions.iter().all(|pr| holds(tool, pr, &params)) {
        match rule.approval {
            Approval::Always => Verdict::ApprovalNeeded,
            _ => Verdict::Allow,
        }
    } else {
        match rule.approval {
            Approval::OnFailure => Verdict::ApprovalNeeded,
            _ => Verdict::Deny,
        }
    };
    Outcome {
        verdict,
        rule: Some(rule.id.clone()),
    }
}

// ---------------------------------------------------------------------------
// The engine

fn load(p: &Policy) -> Bundle {
    let bytes = compile(p, &BuildOptions::default(), None).expect("compile");
    Bundle::load(&bytes, &[]).expect("load")
}

fn engine(b: &Bundle, r: &Req) -> Outcome {
    let headers = [("content-type", r.content_type)];
    let req = Request {
        method: &r.method,
        authority: &r.authority,
        path: &r.path,
        headers: &headers[..],
        body: Some(&r.body),
    };
    let mut scratch = Scratch::new();
    let d = b.decide(
        &req,
        Caller::Given {
            agent: &r.agent,
            tenant: r.tenant.as_deref(),
        },
        1_700_000_000,
        &mut scratch,
    );
    Outcome {
        verdict: d.verdict,
        rule: d.rule.map(String::from),
    }
}

fn check_agrees(p: &Policy, b: &Bundle, r: &Req) -> Result<Outcome, TestCaseError> {
    let want = reference(p, r);
    let got = engine(b, r);
    prop_assert_eq!(
        &got,
        &want,
        "\nagent {:?} (tenant {:?}) {} {}{}\nbody {}",
        r.agent,
        r.tenant,
        r.method,
        r.authority,
        r.path,
        String::from_utf8_lossy(&r.body)
    );
    Ok(got)
}

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(300),
        max_shrink_iters: 4096,
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..ProptestConfig::default()
    })]

    #[test]
    fn engine_agrees_with_reference(
        p in policy(),
        reqs in prop::collection::vec(req_seed(), 1..24),
    ) {
        let b = load(&p);
        for s in &reqs {
            check_agrees(&p, &b, &request(&p, s))?;
        }
    }
}

/// The generator reaches every verdict and every pipeline stage often
/// enough for the comparison above to mean something.
#[test]
fn generator_covers_every_outcome() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut allow, mut deny_rule, mut deny_early, mut approval) = (0, 0, 0, 0);
    let (mut mcp_rule, mut form_rule, mut query_rule) = (0, 0, 0);
    for _ in 0..200 {
        let p = policy().new_tree(&mut runner).expect("tree").current();
        let b = load(&p);
        for _ in 0..10 {
            let s = req_seed().new_tree(&mut runner).expect("tree").current();
            let r = request(&p, &s);
            let o = engine(&b, &r);
            if o.rule.is_some() {
                mcp_rule += usize::from(r.path.starts_with("/mcp"));
                form_rule += usize::from(r.body.contains(&b'=') && !r.body.starts_with(b"{"));
                query_rule += usize::from(r.path.contains('?'));
            }
            match (o.verdict, o.rule.is_some()) {
                (Verdict::Allow, _) => allow += 1,
                (Verdict::Deny, true) => deny_rule += 1,
                (Verdict::Deny, false) => deny_early += 1,
                (Verdict::ApprovalNeeded, _) => approval += 1,
                (v, _) => panic!("unexpected verdict {v:?}"),
            }
        }
    }
    let counts = format!(
        "allow {allow}, deny by a rule {deny_rule}, deny before any rule {deny_early}, \
         approval {approval}; judged by a rule: mcp {mcp_rule}, form {form_rule}, \
         query {query_rule}"
    );
    eprintln!("{counts}");
    for n in [allow, deny_rule, deny_early, approval] {
        assert!(n >= 100, "{counts}");
    }
    for n in [mcp_rule, form_rule, query_rule] {
        assert!(n >= 50, "{counts}");
    }
}

// ---------------------------------------------------------------------------
// Fixed cases: the reference itself, and the disagreements found.

/// Tool `pay` on `api.alpha.com` with `POST /v1/pay` and `GET
/// /v1/customers/{id}`; agent `a` has one rule on `create` with `conds`.
fn one_rule(body: BodyKind, conds: Vec<Predicate>, approval: Approval) -> Policy {
    Policy {
        version: "fixed".into(),
        identity: None,
        tools: vec![Tool {
            name: "pay".into(),
            hosts: vec!["api.alpha.com".into()],
            body,
            mcp_path: None,
            gzip: false,
            filter_tools_list: true,
            actions: vec![
                Action {
                    name: "create".into(),
                    method: Some("POST".into()),
                    path: Some("/v1/pay".into()),
                    write: false,
                },
                Action {
                    name: "customer".into(),
                    method: Some("GET".into()),
                    path: Some("/v1/customers/{id}".into()),
                    write: false,
                },
            ],
        }],
        agents: vec![Agent {
            id: "a".into(),
            name: "a".into(),
            tenant: None,
            mode: Mode::Enforce,
            allow_hosts: None,
            budget: None,
            dlp: None,
            rules: vec![Rule {
                id: "a/pay/create#0".into(),
                tool: 0,
                action: 0,
                when: vec![],
                conditions: conds,
                approval,
                cost_usd: None,
            }],
        }],
        limits: Default::default(),
    }
}

fn pred(param: &str, op: Op) -> Predicate {
    Predicate {
        param: param.into(),
        op,
    }
}

fn pay(path: &str, body: &str) -> Req {
    Req {
        agent: "a".into(),
        tenant: None,
        method: "POST".into(),
        authority: "api.alpha.com".into(),
        path: path.into(),
        body: body.as_bytes().to_vec(),
        content_type: "application/json",
    }
}

/// Engine and reference verdicts for `op` on `amount` = `value` (JSON).
fn both(op: Op, value: J) -> (Verdict, Verdict) {
    let p = one_rule(BodyKind::Json, vec![pred("amount", op)], Approval::Never);
    let b = load(&p);
    let r = pay("/v1/pay", &json!({ "amount": value }).to_string());
    (engine(&b, &r).verdict, reference(&p, &r).verdict)
}

#[test]
fn reference_sanity() {
    use Verdict::{Allow, Deny};
    let cases: Vec<(Op, J, Verdict)> = vec![
        (Op::Le(5000.0), json!(1200), Allow),
        (Op::Le(5000.0), json!("1200"), Allow),
        (Op::Le(5000.0), json!("1e9x"), Deny),
        (Op::Le(5000.0), json!("01"), Deny),
        (Op::Le(5000.0), json!(null), Deny),
        (Op::Eq(Scalar::Num(5000.0)), json!("5e3"), Allow),
        (Op::Eq(Scalar::Num(5000.0)), json!(5000.0), Allow),
        (Op::Eq(Scalar::Bool(true)), json!("true"), Allow),
        (Op::Eq(Scalar::Bool(true)), json!(1), Deny),
        (Op::Eq(Scalar::Str("usd".into())), json!("usd"), Allow),
        (Op::Ne(Scalar::Str("usd".into())), json!({}), Allow),
        (Op::Exists, json!(null), Allow),
        (Op::Absent, json!(null), Deny),
        (Op::Matches("^5".into()), json!(5000), Allow),
        (Op::Matches("^5000.0$".into()), json!(5000.0), Allow),
        (Op::Matches("ru".into()), json!(true), Allow),
        (Op::Matches(".*".into()), json!(null), Deny),
        (Op::NotMatches("x".into()), json!([1]), Deny),
        (Op::NotMatches("x".into()), json!("abc"), Allow),
    ];
    for (op, value, want) in cases {
        let (engine, reference) = both(op.clone(), value.clone());
        assert_eq!(reference, want, "reference: {op:?} on {value}");
        assert_eq!(engine, want, "engine: {op:?} on {value}");
    }
    // A missing parameter fails everything but `absent`.
    let p = one_rule(
        BodyKind::Json,
        vec![pred("amount", Op::Ne(Scalar::Num(1.0)))],
        Approval::OnFailure,
    );
    let b = load(&p);
    let r = pay("/v1/pay", r#"{"currency": "usd"}"#);
    assert_eq!(reference(&p, &r).verdict, Verdict::ApprovalNeeded);
    assert_eq!(engine(&b, &r).verdict, Verdict::ApprovalNeeded);
    // Form bodies and query strings; duplicates deny.
    let p = one_rule(
        BodyKind::Form,
        vec![
            pred("amount", Op::Le(5000.0)),
            pred("meta.kind", Op::Eq(Scalar::Str("a b".into()))),
        ],
        Approval::Never,
    );
    let b = load(&p);
    for (path, body, want) in [
        ("/v1/pay", "amount=1200&meta[kind]=a+b", Allow),
        ("/v1/pay?amount=1200", "meta%5Bkind%5D=a%20b", Allow),
        ("/v1/pay?amount=1200", "amount=1&meta.kind=a+b", Deny),
        ("/v1/pay", "amount=1200&meta.kind=a+b&meta[kind]=a+b", Deny),
        ("/v1/pay", "amount=1200&meta.kind=a+b&x=%zz", Deny),
        // Any key given twice, watched or not, except `key[]` lists.
        ("/v1/pay", "amount=1200&meta.kind=a+b&x=1&x=2", Deny),
        ("/v1/pay", "amount=1200&meta.kind=a+b&x[]=1&x[]=2", Allow),
    ] {
        let mut r = pay(path, body);
        r.content_type = media_type(BodyKind::Form);
        assert_eq!(reference(&p, &r).verdict, want, "reference: {path} {body}");
        assert_eq!(engine(&b, &r).verdict, want, "engine: {path} {body}");
    }
}

/// BUG: a string literal that spells a number is compared with a JSON
/// number as text, not numerically: `eq: "5000"` does not hold for
/// `{"amount": 5000.0}` (nor `5e3`), although `eq: 5000` holds for
/// `{"amount": "5000.0"}` and `eq: "5000"` holds for `{"amount": 5000}`.
/// The engine's `lit_eq` compares `(Lit::Str(s), Value::Num(n))` with
/// `*n == s`.
#[test]
fn string_literal_equals_number_numerically() {
    for value in [json!(5000), json!(5000.0), json!(5e3)] {
        let (engine, reference) = both(Op::Eq(Scalar::Str("5000".into())), value.clone());
        assert_eq!(reference, Verdict::Allow, "reference on {value}");
        assert_eq!(engine, Verdict::Allow, "engine: eq \"5000\" on {value}");
    }
    let (engine, _) = both(Op::In(vec![Scalar::Str("1e2".into())]), json!(100));
    assert_eq!(engine, Verdict::Allow, "engine: in [\"1e2\"] on 100");
}

/// BUG: a string literal `"true"` / `"false"` never equals a JSON bool,
/// although a bool literal equals the strings `"true"` / `"false"`.
#[test]
fn string_literal_true_equals_bool() {
    let (engine, reference) = both(Op::Eq(Scalar::Str("true".into())), json!(true));
    assert_eq!(reference, Verdict::Allow);
    assert_eq!(engine, Verdict::Allow, "engine: eq \"true\" on true");
}

/// BUG: MCP `tools/call` parameters are also read from the URL query
/// string, which the MCP server never sees. A rule that requires
/// `path` to match `^/src/` allows a call whose JSON-RPC arguments carry no
/// `path` at all, because `?params.arguments.path=/src/ok` supplies one
/// (the same goes for `?params.name=...` and `?method=tools/list`, which
/// choose the action or make the call pass as protocol plumbing). The
/// engine runs `extract_form` on the query for every tool, MCP included.
#[test]
fn mcp_arguments_are_not_read_from_the_query_string() {
    let mut p = one_rule(
        BodyKind::Json,
        vec![pred("path", Op::Matches("^/src/".into()))],
        Approval::Never,
    );
    p.tools[0].mcp_path = Some("/mcp".into());
    p.tools[0].actions = vec![Action {
        name: "read_file".into(),
        method: None,
        path: None,
        write: false,
    }];
    let b = load(&p);
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{}}}"#;
    let r = pay("/mcp", call);
    assert_eq!(engine(&b, &r).verdict, Verdict::Deny, "no path: denied");
    let r = pay("/mcp?params.arguments.path=/src/ok", call);
    assert_eq!(reference(&p, &r).verdict, Verdict::Deny);
    assert_eq!(
        engine(&b, &r).verdict,
        Verdict::Deny,
        "a condition on an MCP argument was satisfied by the query string"
    );
}
