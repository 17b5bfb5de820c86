//! Fixtures shared by the criterion benches: the one-agent policies, a
//! generated 1,000-agent policy (YAML text, compiled through the real
//! front-end), requests that those policies allow, and JSON bodies for DLP.
//!
//! Everything is deterministic (a fixed-seed PRNG), so two runs measure the
//! same policy and the same bytes.

use aegis_compiler::frontend;
use aegis_engine::builder::bundle::{compile, BuildOptions};
use aegis_engine::ir::{self, Op, Scalar};
use std::fmt::Write as _;

/// The finance example catalog and the `payments-agent` policy, unchanged.
pub const FINANCE_CATALOG: &str = include_str!("../../policies/finance/catalog.yaml");
pub const FINANCE_PAYMENTS: &str = include_str!("../../policies/finance/payments.yaml");

/// A `payments-agent`-like policy for a JSON tool.
pub const ORDERS_POLICY: &str = r#"kind: ToolCatalog
tools:
  - name: orders
    hosts: [api.orders.example.com]
    body: json
    actions:
      - name: create_order
        method: POST
        path: /v1/orders
      - name: get_order
        method: GET
        path: /v1/orders/{id}
---
agent: orders-agent
egress:
  allow_hosts: [api.orders.example.com]
budget: {daily_usd: 50, rps: 10}
dlp:
  detectors: [credit_card]
  action: deny
allowed_tools:
  - name: orders
    actions: [create_order]
    cost_usd: 0.01
    when:
      currency: {in: [usd, eur]}
      description: {matches: "^[A-Za-z0-9 .,-]{0,140}$"}
    conditions:
      max_amount: 5000
      min_amount: 50
      customer.id: {matches: "^cus_[A-Za-z0-9]{3,24}$"}
      approval_needed: true
  - name: orders
    actions: [get_order]
"#;

/// The JSON tool call `orders-agent` is allowed to make.
pub const ORDERS_BODY: &str = r#"{"amount":1200,"currency":"usd","description":"Invoice 1042","customer":{"id":"cus_123","email_opt_in":false},"items":[{"sku":"SKU-1","qty":2},{"sku":"SKU-7","qty":1}],"metadata":{"order_ref":"A-1042","channel":"agent"}}"#;

/// The default detector set of the DLP bench (docs/performance.md).
pub const DEFAULT_DETECTORS: &str =
    "[ssn, credit_card, email, phone, dob, iban, aws_access_key, api_key, private_key, jwt]";

/// Sizes and labels of the DLP bodies. `1MB` is 1 MiB, like `1KB` is
/// 1 KiB: exactly the default `max_body_bytes`, which still fits (larger
/// bodies are denied).
pub const DLP_SIZES: [(usize, &str); 4] = [
    (1024, "1KB"),
    (16 * 1024, "16KB"),
    (64 * 1024, "64KB"),
    (1024 * 1024, "1MB"),
];

/// One agent whose only rule allows the call, with the default detectors;
/// the DLP bench calls `Bundle::decide` on it. `max_params` is raised to
/// its ceiling: the 1 MiB body holds about 47,000 JSON values, more than
/// the default 4,096 (the limit is a count, so it costs nothing on the
/// smaller bodies).
pub fn dlp_policy(action: &str) -> String {
    format!(
        r#"kind: Limits
max_params: 65536
---
kind: ToolCatalog
tools:
  - name: docs
    hosts: [api.docs.example.com]
    body: json
    actions:
      - name: ingest
        method: POST
        path: /v1/documents
---
agent: dlp-agent
egress:
  allow_hosts: [api.docs.example.com]
dlp:
  detectors: {DEFAULT_DETECTORS}
  action: {action}
allowed_tools:
  - name: docs
    actions: [ingest]
"#
    )
}

/// Front-end + builder, unsigned, default options. Panics with the
/// diagnostics on failure (fixtures must compile).
pub fn compile_sources(sources: &[(String, String)]) -> Vec<u8> {
    let loaded = load(sources);
    match compile(&loaded.policy, &BuildOptions::default(), None) {
        Ok(b) => b,
        Err(e) => fail(&format!("build failed: {e}")),
    }
}

/// Front-end only. Panics with the diagnostics on failure.
pub fn load(sources: &[(String, String)]) -> frontend::Loaded {
    match frontend::load_sources(sources, None) {
        Ok(l) => l,
        Err(diags) => {
            let text: Vec<String> = diags.iter().map(|d| format!("{d:?}")).collect();
            fail(&format!("policy does not compile:\n{}", text.join("\n")))
        }
    }
}

#[allow(clippy::panic)] // fixtures that do not compile make the bench meaningless
pub fn fail(msg: &str) -> ! {
    panic!("{msg}")
}

/// splitmix64: small, deterministic, good enough to vary a policy.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        let i = self.next_u64() as usize % xs.len();
        match xs.get(i) {
            Some(x) => x,
            None => fail("empty pick"),
        }
    }
}

pub const TOOLS: usize = 20;
/// Resource names, one per tool (distinct hosts `api.<name>.example.com`).
const RESOURCES: [&str; TOOLS] = [
    "invoices",
    "payments",
    "refunds",
    "customers",
    "tickets",
    "deployments",
    "builds",
    "repos",
    "issues",
    "messages",
    "calendars",
    "documents",
    "contacts",
    "orders",
    "shipments",
    "accounts",
    "reports",
    "alerts",
    "secrets",
    "datasets",
];
/// (action prefix, method, takes `{id}`)
const ACTIONS: [(&str, &str, bool); 5] = [
    ("list", "GET", false),
    ("get", "GET", true),
    ("create", "POST", false),
    ("update", "PATCH", true),
    ("delete", "DELETE", true),
];

/// Condition regexes and a value each one matches. A small pool, as in a
/// real fleet where policies are stamped from a few templates; the builder
/// deduplicates the DFAs.
const PATTERNS: [(&str, &str); 4] = [
    ("^[A-Za-z0-9 .,-]{0,140}$", "Invoice 1042"),
    ("^[a-z]{2}-[a-z]+-[0-9]$", "eu-west-1"),
    ("^PRJ-[0-9]{4,8}$", "PRJ-20431"),
    ("^[a-z0-9_]{1,32}$", "build_42"),
];
const CURRENCIES: [&str; 5] = ["usd", "eur", "gbp", "jpy", "chf"];
const REGIONS: [&str; 4] = ["us", "eu", "apac", "latam"];

/// Number of tools, actions, agents, rules and predicates in a generated policy.
#[derive(Debug, Clone, Copy, Default)]
pub struct GenStats {
    pub agents: usize,
    pub rules: usize,
    pub conditions: usize,
    /// `matches` conditions (the front-end validates each one).
    pub regex_conditions: usize,
    pub yaml_bytes: usize,
}

pub fn host(tool: usize) -> String {
    format!(
        "api.{}.example.com",
        RESOURCES.get(tool).copied().unwrap_or("x")
    )
}

/// The generated policy as two sources: `catalog.yaml` (20 tools x 5
/// actions on distinct hosts) and `agents.yaml` (`n` agents, each with an
/// egress list, 5-10 rules of 1-3 conditions; a quarter use the default
/// DLP detectors with `redact`, a quarter `[ssn, credit_card, email]` with
/// `deny`, the rest no DLP; some rules have a `when`, an approval or a cost).
/// With `dlp == false` no agent has DLP (everything else is identical).
pub fn generated_policy(n: usize, dlp: bool) -> (Vec<(String, String)>, GenStats) {
    let mut cat = String::from("kind: ToolCatalog\ntools:\n");
    for (t, res) in RESOURCES.iter().enumerate() {
        let _ = writeln!(cat, "  - name: {res}-api");
        let _ = writeln!(cat, "    hosts: [{}]", host(t));
        let _ = writeln!(cat, "    body: json");
        let _ = writeln!(cat, "    actions:");
        for (pre, method, id) in ACTIONS {
            let _ = writeln!(cat, "      - name: {pre}_{res}");
            let _ = writeln!(cat, "        method: {method}");
            let tail = if id { "/{id}" } else { "" };
            let _ = writeln!(cat, "        path: /v2/{res}{tail}");
        }
    }

    let mut rng = Rng::new(0xAE61_5000);
    let mut out = String::with_capacity(n * 900);
    let mut stats = GenStats {
        agents: n,
        ..GenStats::default()
    };
    for i in 0..n {
        if i > 0 {
            out.push_str("---\n");
        }
        let _ = writeln!(out, "agent: agent-{i:04}");
        if i % 10 == 9 {
            out.push_str("mode: shadow\n");
        }
        // 2-4 tools per agent; rules pick actions on them.
        let ntools = rng.range(2, 4) as usize;
        let mut tools: Vec<usize> = Vec::new();
        while tools.len() < ntools {
            let t = rng.range(0, TOOLS as u64 - 1) as usize;
            if !tools.contains(&t) {
                tools.push(t);
            }
        }
        let hosts: Vec<String> = tools.iter().map(|&t| host(t)).collect();
        let _ = writeln!(out, "egress:\n  allow_hosts: [{}]", hosts.join(", "));
        if i % 3 == 0 {
            let _ = writeln!(
                out,
                "budget: {{daily_usd: {}, rps: {}}}",
                10 + i % 90,
                1 + i % 20
            );
        }
        match i % 4 {
            _ if !dlp => {}
            0 => {
                let _ = writeln!(
                    out,
                    "dlp:\n  detectors: {DEFAULT_DETECTORS}\n  action: redact"
                );
            }
            1 => out.push_str("dlp:\n  detectors: [ssn, credit_card, email]\n  action: deny\n"),
            _ => {}
        }
        out.push_str("allowed_tools:\n");
        let nrules = rng.range(5, 10) as usize;
        let mut used: Vec<(usize, usize)> = Vec::new();
        while used.len() < nrules {
            let t = *rng.pick(&tools);
            let a = rng.range(0, 4) as usize;
            if used.contains(&(t, a)) {
                continue;
            }
            used.push((t, a));
            let res = RESOURCES.get(t).copied().unwrap_or("x");
            let pre = ACTIONS.get(a).map_or("x", |x| x.0);
            // One in five: a `when`-selected entry that always asks, before
            // the general entry for the same action.
            if rng.range(0, 4) == 0 {
                let _ = writeln!(out, "  - name: {res}-api\n    actions: [{pre}_{res}]");
                let _ = writeln!(out, "    when: {{environment: production}}");
                let _ = writeln!(out, "    approval_needed: always");
                stats.rules += 1;
                stats.conditions += 1;
            }
            let _ = writeln!(out, "  - name: {res}-api\n    actions: [{pre}_{res}]");
            if rng.range(0, 2) == 0 {
                let _ = writeln!(out, "    cost_usd: 0.0{}", rng.range(1, 9));
            }
            out.push_str("    conditions:\n");
            let nconds = rng.range(1, 3) as usize;
            let mut params: Vec<u64> = Vec::new();
            while params.len() < nconds {
                let p = rng.range(0, 7);
                if !params.contains(&p) {
                    params.push(p);
                }
            }
            for p in params {
                let line = match p {
                    0 => format!("max_amount: {}", rng.range(1, 100) * 100),
                    1 => format!("max_limit: {}", rng.range(10, 500)),
                    2 => {
                        let k = rng.range(1, 3) as usize;
                        let start = rng.range(0, 4) as usize;
                        let set: Vec<&str> = (0..k)
                            .filter_map(|j| CURRENCIES.get((start + j) % CURRENCIES.len()).copied())
                            .collect();
                        format!("currency: {{in: [{}]}}", set.join(", "))
                    }
                    3 => {
                        let k = rng.range(1, 3) as usize;
                        let start = rng.range(0, 3) as usize;
                        let set: Vec<&str> = (0..k)
                            .filter_map(|j| REGIONS.get((start + j) % REGIONS.len()).copied())
                            .collect();
                        format!("region: {{in: [{}]}}", set.join(", "))
                    }
                    4 => {
                        stats.regex_conditions += 1;
                        format!("name: {{matches: \"{}\"}}", rng.pick(&PATTERNS).0)
                    }
                    5 => {
                        stats.regex_conditions += 1;
                        format!("project: {{matches: \"{}\"}}", PATTERNS[2].0)
                    }
                    6 => "dry_run: false".to_string(),
                    _ => format!("priority: {{le: {}}}", rng.range(1, 5)),
                };
                let _ = writeln!(out, "      {line}");
                stats.conditions += 1;
            }
            if rng.range(0, 3) == 0 {
                out.push_str("      approval_needed: true\n");
            }
            stats.rules += 1;
        }
    }
    stats.yaml_bytes = cat.len() + out.len();
    (
        vec![
            ("catalog.yaml".to_string(), cat),
            ("agents.yaml".to_string(), out),
        ],
        stats,
    )
}

/// A request that `agent` of `policy` is allowed to make: the first
/// write-ish (POST/PATCH) entry without `approval_needed: always`, with a
/// JSON body that satisfies its `when` and `conditions`, plus a few
/// unrelated fields as a real tool call would carry.
pub struct OwnedRequest {
    pub method: String,
    pub authority: String,
    pub path: String,
    pub body: Vec<u8>,
    pub rule: String,
}

pub fn allowed_request(policy: &ir::Policy, agent_id: &str) -> OwnedRequest {
    match try_allowed_request(policy, agent_id) {
        Some(r) => r,
        None => fail(&format!(
            "agent `{agent_id}` is unknown or has no POST/PATCH rule the bench can satisfy"
        )),
    }
}

/// [`allowed_request`], or `None` when the agent is unknown or has no
/// POST/PATCH rule the bench can satisfy.
pub fn try_allowed_request(policy: &ir::Policy, agent_id: &str) -> Option<OwnedRequest> {
    let agent = policy.agents.iter().find(|a| a.id == agent_id)?;
    for (k, r) in agent.rules.iter().enumerate() {
        // The entry is chosen when every earlier entry of its (tool,
        // action) group has a `when` on `environment`, which the request
        // leaves out (so the evaluator tries and skips them).
        let first = agent.rules.iter().take(k).all(|x| {
            (x.tool, x.action) != (r.tool, r.action)
                || x.when.iter().any(|p| p.param == "environment")
        }) && r.when.iter().all(|p| p.param != "environment");
        let Some(tool) = policy.tools.get(r.tool) else {
            continue;
        };
        let Some(action) = tool.actions.get(r.action) else {
            continue;
        };
        let method = action.method.clone().unwrap_or_default();
        if !first
            || r.approval == ir::Approval::Always
            || !matches!(method.as_str(), "POST" | "PATCH")
        {
            continue;
        }
        let mut obj = serde_json::Map::new();
        for p in r.when.iter().chain(r.conditions.iter()) {
            obj.insert(p.param.clone(), satisfy(&p.op));
        }
        obj.insert(
            "note".into(),
            "created by the nightly reconciliation job".into(),
        );
        obj.insert(
            "labels".into(),
            serde_json::json!({"team": "platform", "ticket": "OPS-1234"}),
        );
        let path = action
            .path
            .clone()
            .unwrap_or_default()
            .replace("{id}", "item-42");
        return Some(OwnedRequest {
            method,
            authority: tool.hosts.first().cloned().unwrap_or_default(),
            path,
            body: serde_json::to_vec(&serde_json::Value::Object(obj)).unwrap_or_default(),
            rule: r.id.clone(),
        });
    }
    None
}

/// The DLP configuration a generated agent has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DlpClass {
    /// The 10 default detectors, `redact`.
    Default,
    /// `[ssn, credit_card, email]`, `deny`.
    Three,
    None,
}

fn dlp_class(agent: &ir::Agent) -> DlpClass {
    match &agent.dlp {
        None => DlpClass::None,
        Some(d) if d.detectors.len() == 3 => DlpClass::Three,
        Some(_) => DlpClass::Default,
    }
}

/// One decision case on a generated policy.
pub struct GenCase {
    /// `mid_default_dlp`, `mid_3_detectors_dlp`, `mid_no_dlp` or
    /// `mid_unknown_route_deny`.
    pub label: &'static str,
    pub agent: String,
    pub req: OwnedRequest,
    /// Allow, except for the unknown route (deny at the route stage).
    pub allow: bool,
}

/// The decision cases of the `decision` bench on a generated policy: for
/// each DLP configuration, the first enforcing agent at or after the
/// middle of the sorted agent list that has it (and a request the bench can
/// satisfy). With 1,000 agents these are agent-0500 (default detectors),
/// agent-0501 (three) and agent-0502 (none); with 100, agent-0052,
/// agent-0053 and agent-0050. The unknown route is the no-DLP agent's
/// request with an extra path segment.
pub fn generated_cases(policy: &ir::Policy) -> Vec<GenCase> {
    let ids = sorted_agent_ids(policy);
    let mid = ids.len() / 2;
    let pick = |class: DlpClass| -> (String, OwnedRequest) {
        for k in 0..ids.len() {
            let Some(id) = ids.get((mid + k) % ids.len()) else {
                continue;
            };
            let Some(agent) = policy.agents.iter().find(|a| &a.id == id) else {
                continue;
            };
            if agent.mode != aegis_engine::Mode::Enforce || dlp_class(agent) != class {
                continue;
            }
            if let Some(r) = try_allowed_request(policy, id) {
                return (id.clone(), r);
            }
        }
        fail(&format!(
            "no enforcing agent with DLP {class:?} and a usable rule"
        ))
    };
    let mut out = Vec::new();
    for (label, class) in [
        ("mid_default_dlp", DlpClass::Default),
        ("mid_3_detectors_dlp", DlpClass::Three),
        ("mid_no_dlp", DlpClass::None),
    ] {
        let (agent, req) = pick(class);
        out.push(GenCase {
            label,
            agent,
            req,
            allow: true,
        });
    }
    let (agent, mut req) = pick(DlpClass::None);
    req.path.push_str("/not-a-route");
    out.push(GenCase {
        label: "mid_unknown_route_deny",
        agent,
        req,
        allow: false,
    });
    out
}

fn satisfy(op: &Op) -> serde_json::Value {
    let scalar = |s: &Scalar| match s {
        Scalar::Str(s) => serde_json::Value::from(s.as_str()),
        Scalar::Num(n) => serde_json::Value::from(*n),
        Scalar::Bool(b) => serde_json::Value::from(*b),
    };
    match op {
        Op::Eq(s) => scalar(s),
        Op::In(xs) => xs.first().map_or(serde_json::Value::Null, scalar),
        Op::Le(n) | Op::Ge(n) => serde_json::Value::from((*n as i64).max(1)),
        Op::Matches(re) => PATTERNS
            .iter()
            .find(|(p, _)| p == re)
            .map_or(serde_json::Value::Null, |(_, ex)| {
                serde_json::Value::from(*ex)
            }),
        other => fail(&format!("generator does not emit {other:?}")),
    }
}

/// The free texts of [`json_body`]'s records, as JSON string contents
/// (the second holds `\n` escapes).
pub const JSON_TEXTS: [&str; 4] = [
    "Quarterly revenue grew in all regions; see the attached breakdown by product line.",
    "Meeting notes:\\n- migrate the build cache\\n- rotate on-call\\n- review the Q3 roadmap",
    "The customer asked for an extension of the trial period and a call next week.",
    "Shipment delayed at the border, new ETA in five business days, tracking unchanged.",
];

/// What [`json_body`] adds to every second record's text with `pii`: an
/// email, a US SSN, a Luhn-valid card number, a phone number, an IBAN.
pub const JSON_SECRETS: [&str; 5] = [
    "reach me at jane.doe@example.com",
    "ssn 123-45-6789 on file",
    "card 4111 1111 1111 1111 exp 09/27",
    "call +1 415 555 0132 after 5pm",
    "pay to DE89 3704 0044 0532 0130 00",
];

/// A JSON body of exactly `len` bytes (for `len` >= 64): an array of
/// document records (ids, titles, free text with some `\n` escapes,
/// numbers, tags) closed by a padding string. With `pii`, every second
/// record's text carries one of: an email, a US SSN, a Luhn-valid card
/// number, a phone number, an IBAN.
pub fn json_body(len: usize, pii: bool) -> Vec<u8> {
    const TEXT: [&str; 4] = JSON_TEXTS;
    const SECRETS: [&str; 5] = JSON_SECRETS;
    let mut s = String::from("{\"documents\":[");
    let mut i = 0usize;
    loop {
        let text = TEXT.get(i % TEXT.len()).copied().unwrap_or("");
        let extra = if pii && i % 2 == 1 {
            format!(
                " {}",
                SECRETS.get((i / 2) % SECRETS.len()).copied().unwrap_or("")
            )
        } else {
            String::new()
        };
        let rec = format!(
            "{}{{\"id\":\"doc-{i:06}\",\"title\":\"Report {i}\",\"body\":\"{text}{extra}\",\"tags\":[\"alpha\",\"beta\"],\"score\":0.{},\"pages\":{}}}",
            if i == 0 { "" } else { "," },
            (i * 37) % 100,
            1 + i % 40
        );
        // `],"pad":""}` closes the document.
        if s.len() + rec.len() + 12 > len {
            break;
        }
        s.push_str(&rec);
        i += 1;
    }
    s.push_str("],\"pad\":\"");
    while s.len() + 2 < len {
        s.push(char::from(b'a' + (s.len() % 26) as u8));
    }
    s.push_str("\"}");
    s.into_bytes()
}

/// The JSON tool and agent of the Envoy load benchmark
/// (`benches/envoy/policy/`): a ledger API and `bookkeeping-agent`, whose
/// default DLP set redacts every body it sends, named by a header.
pub const LEDGER_POLICY: &str = include_str!("../envoy/policy/ledger.yaml");
pub const LEDGER_IDENTITY: &str = include_str!("../envoy/policy/identity.yaml");

/// A journal entry for the ledger tool of exactly `len` bytes (`len` at
/// least 256), shaped like the Envoy load benchmark's (`loadbench.py`,
/// `tool_call`): amount, currency, account, a memo, line items, and a text
/// field padding to size. With `pii` the memo carries an SSN and a
/// Luhn-valid card number.
pub fn ledger_entry(len: usize, pii: bool) -> Vec<u8> {
    const WORDS: [&str; 8] = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    ];
    const ACCOUNTS: [&str; 3] = ["4000-operating", "2100-payables", "6100-software"];
    let memo = if pii {
        "Refund to customer SSN 123-45-6789, card 4111 1111 1111 1111, per ticket"
    } else {
        "Monthly reconciliation for vendor ACME, approved by the controller"
    };
    let mut s = format!(
        "{{\"amount\":1250.5,\"currency\":\"usd\",\"account\":\"4000-operating\",\"memo\":\"{memo}\",\"lines\":["
    );
    for i in 0..(len / 170).max(1) {
        let line = format!(
            "{}{{\"account\":\"{}\",\"{}\":{}.25,\"note\":\"line {i} {}\"}}",
            if i == 0 { "" } else { "," },
            ACCOUNTS.get(i % ACCOUNTS.len()).copied().unwrap_or(""),
            if i % 2 == 0 { "debit" } else { "credit" },
            10 + i,
            (0..8)
                .map(|k| WORDS
                    .get((i * 7 + k * 3) % WORDS.len())
                    .copied()
                    .unwrap_or(""))
                .collect::<Vec<_>>()
                .join(" ")
        );
        // `],"attachment_summary":""}` must still fit.
        if s.len() + line.len() + 26 > len {
            break;
        }
        s.push_str(&line);
    }
    s.push_str("],\"attachment_summary\":\"");
    let mut k = 0;
    while s.len() + 2 < len {
        let w = WORDS.get(k % WORDS.len()).copied().unwrap_or("");
        let room = len - 2 - s.len();
        s.push_str(w.get(..w.len().min(room)).unwrap_or(""));
        if s.len() + 2 < len {
            s.push(' ');
        }
        k += 1;
    }
    s.push_str("\"}");
    s.into_bytes()
}

/// The production-shape workload of the Envoy load benchmark
/// (`benches/envoy/policy-mcp/`): one MCP server (`weather`, at
/// `mcp.acme.internal/mcp`) with `get_weather` and `delete_repo`, and
/// `mcp-agent`, which may call `get_weather` only. No DLP.
pub const MCP_POLICY: &str = include_str!("../envoy/policy-mcp/mcp.yaml");
pub const MCP_ISSUER: &str = "https://tokens.acme.internal";
pub const MCP_AUDIENCE: &str = "aegis-gateway";
pub const MCP_KID: &str = "bench-issuer";

/// How `mcp-agent` names itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McpIdentity {
    /// `x-aegis-agent` (local benchmarks only).
    Header,
    /// A per-agent EdDSA token signed by `key`.
    Token([u8; 32]),
}

/// The sources of the MCP policy with that identity.
pub fn mcp_sources(identity: McpIdentity) -> Vec<(String, String)> {
    let identity = match identity {
        McpIdentity::Header => "kind: Identity\ninsecure_agent_header: true\n".to_string(),
        McpIdentity::Token(public_key) => {
            use base64::Engine as _;
            let key = base64::engine::general_purpose::STANDARD.encode(public_key);
            format!(
                "kind: Identity\nissuer: {MCP_ISSUER}\naudience: {MCP_AUDIENCE}\n\
                 keys:\n  - {{kid: {MCP_KID}, public_key: \"{key}\"}}\n"
            )
        }
    };
    [
        ("mcp.yaml", MCP_POLICY.to_string()),
        ("identity.yaml", identity),
    ]
    .into_iter()
    .map(|(n, t)| (n.to_string(), t))
    .collect()
}

/// A token for `mcp-agent` that the [`McpIdentity::Token`] policy of
/// `key` accepts, issued at `now` for `ttl_secs`.
pub fn mcp_token(key: &ed25519_dalek::SigningKey, now: i64, ttl_secs: u64) -> String {
    aegis_engine::jwt::issue::issue(
        key,
        &aegis_engine::jwt::issue::TokenRequest {
            kid: MCP_KID,
            issuer: MCP_ISSUER,
            audience: MCP_AUDIENCE,
            agent: "mcp-agent",
            tenant: None,
            scope: None,
            ttl_secs,
            now,
        },
    )
}

/// A JSON-RPC `tools/call` of `tool` of exactly `len` bytes (at least
/// 128), its `city` argument padding it to size.
pub fn mcp_call(len: usize, tool: &str) -> Vec<u8> {
    let head = format!(
        r#"{{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{{"name":"{tool}","arguments":{{"units":"metric","city":""#
    );
    let tail = r#""}}}"#;
    let pad = len.saturating_sub(head.len() + tail.len());
    let mut s = head;
    s.extend(std::iter::repeat_n('a', pad));
    s.push_str(tail);
    s.into_bytes()
}

/// Agent ids in the order the bundle sorts them, `(tenant or "", name)`.
pub fn sorted_agent_ids(policy: &ir::Policy) -> Vec<String> {
    let mut v: Vec<(&str, &str, &str)> = policy
        .agents
        .iter()
        .map(|a| {
            (
                a.tenant.as_deref().unwrap_or(""),
                a.name.as_str(),
                a.id.as_str(),
            )
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, _, id)| id.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcp_calls_have_the_requested_length_and_parse() {
        let b = mcp_call(1024, "get_weather");
        assert_eq!(b.len(), 1024);
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["params"]["name"], "get_weather");
    }

    #[test]
    fn bodies_have_the_requested_length_and_parse() {
        for (len, _) in DLP_SIZES {
            for pii in [false, true] {
                let b = json_body(len, pii);
                assert_eq!(b.len(), len);
                let _: serde_json::Value = serde_json::from_slice(&b).unwrap();
            }
        }
    }

    #[test]
    fn generated_cases_pick_the_middle_agents() {
        for (n, want) in [
            (
                1000,
                ["agent-0500", "agent-0501", "agent-0502", "agent-0502"],
            ),
            (
                100,
                ["agent-0052", "agent-0053", "agent-0050", "agent-0050"],
            ),
        ] {
            let (sources, _) = generated_policy(n, true);
            let loaded = load(&sources);
            let got: Vec<String> = generated_cases(&loaded.policy)
                .into_iter()
                .map(|c| c.agent)
                .collect();
            assert_eq!(got, want, "{n} agents");
        }
    }
}
