//! The regorus peer (a performance target, docs/performance.md): the same policy, exported with
//! `aegis export rego` (`aegis_compiler::rego`), evaluated by regorus on
//! the same requests, in the same run as the native `Bundle::decide`.
//!
//! Before measuring, the export is checked against the engine on the
//! 1,000-agent policy: for every fourth agent, the request its policy
//! allows (`try_allowed_request`) and mutations of it that the policy
//! denies or sends to approval must get the same verdict and rule from
//! the engine, the regorus interpreter and the regorus VM. Then, per case:
//! - `native`: `Bundle::decide` (identity given, body present, scratch
//!   reused), as in the `decision` bench;
//! - `regorus`: the evaluator module with the tables as data
//!   (`aegis export rego --data`, the layout for large policies), on an
//!   engine prepared once; per call `Engine::set_input_json` with the
//!   request as the module's input document (the body inside it, so
//!   regorus parses it as the engine parses the body) and
//!   `eval_rule("data.aegis.decision")`;
//! - `regorus_value`: the same with the input already parsed into a
//!   `regorus::Value` (`set_input` of a clone; regorus values are
//!   reference counted, so the clone is cheap);
//! - `regorus_rvm`: the data layout compiled to regorus's bytecode VM
//!   (RVM: `Engine::compile_with_entrypoint`, `Compiler::compile_from_policy`,
//!   `RegoVM::execute`), input JSON parsed per call;
//! - `regorus_module`: the self-contained module (tables as rules
//!   `agents["id"] := {...}`), input JSON. regorus has no index over rule
//!   keys: a lookup evaluates every agent's rule, hence `--data`.
//!
//! At the end it prints the ratios (median of interleaved timing rounds,
//! taken in this process after the criterion runs).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use aegis_benches::{
    generated_cases, generated_policy, host, load, sorted_agent_ids, try_allowed_request,
    OwnedRequest, ORDERS_BODY, ORDERS_POLICY, TOOLS,
};
use aegis_compiler::rego::{export, export_with_data, DECISION_RULE};
use aegis_engine::builder::bundle::{compile, BuildOptions};
use aegis_engine::{ir, Bundle, Caller, Reason, Request, Scratch, Verdict};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use serde_json::Value;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::{Duration, Instant};

const NOW: i64 = 1_750_000_000;

/// A request as the engine gets it and as the Rego module gets it.
struct Req {
    agent: String,
    method: String,
    authority: String,
    path: String,
    body: Vec<u8>,
}

impl Req {
    fn from_owned(agent: &str, r: &OwnedRequest) -> Self {
        Req {
            agent: agent.to_string(),
            method: r.method.clone(),
            authority: r.authority.clone(),
            path: r.path.clone(),
            body: r.body.clone(),
        }
    }

    /// The module's input document: the JSON body is `params`.
    fn input_json(&self) -> String {
        let params: Value = if self.body.is_empty() {
            serde_json::json!({})
        } else {
            serde_json::from_slice(&self.body).unwrap()
        };
        serde_json::json!({
            "agent": self.agent,
            "method": self.method,
            "host": self.authority,
            "path": self.path,
            "params": params,
        })
        .to_string()
    }
}

const HEADERS: [(&str, &str); 1] = [("content-type", "application/json")];

fn decide<'b>(
    bundle: &'b Bundle,
    r: &'b Req,
    scratch: &mut Scratch,
) -> (Verdict, Option<&'b str>, bool) {
    let req = Request {
        method: &r.method,
        authority: &r.authority,
        path: &r.path,
        headers: &HEADERS[..],
        body: Some(&r.body),
    };
    let caller = Caller::Given {
        agent: &r.agent,
        tenant: None,
    };
    let d = bundle.decide(&req, caller, NOW, scratch);
    let dlp = matches!(d.reason, Reason::Sanitized(_) | Reason::DlpDenied { .. });
    (d.verdict, d.rule, dlp)
}

/// The module with the tables as data (`--data`).
fn regorus_with_data(policy: &ir::Policy) -> regorus::Engine {
    let (module, data) = export_with_data(policy);
    let mut e = regorus_engine(&module);
    e.add_data(regorus::Value::from_json_str(&data.to_string()).unwrap())
        .unwrap();
    e
}

/// The data layout compiled to regorus's bytecode VM.
fn rvm_with_data(policy: &ir::Policy) -> regorus::rvm::RegoVM {
    let (module, data) = export_with_data(policy);
    let data = regorus::Value::from_json_str(&data.to_string()).unwrap();
    let mut e = regorus_engine(&module);
    e.add_data(data.clone()).unwrap();
    let compiled = e.compile_with_entrypoint(&DECISION_RULE.into()).unwrap();
    let program = regorus::languages::rego::compiler::Compiler::compile_from_policy(
        &compiled,
        &[DECISION_RULE],
    )
    .unwrap();
    let mut vm = regorus::rvm::RegoVM::new();
    vm.load_program(program);
    vm.set_data(data).unwrap();
    vm
}

fn rvm_eval(vm: &mut regorus::rvm::RegoVM, input_json: &str) -> regorus::Value {
    vm.set_input(regorus::Value::from_json_str(input_json).unwrap());
    vm.execute().unwrap()
}

fn regorus_engine(module: &str) -> regorus::Engine {
    let mut e = regorus::Engine::new();
    // The generated module is larger than regorus's default guard for
    // hand-written files (1 MiB, 20,000 lines).
    e.set_policy_length_config(regorus::PolicyLengthConfig {
        max_col: NonZeroU32::new(4096).unwrap(),
        max_file_bytes: NonZeroUsize::new(256 << 20).unwrap(),
        max_lines: NonZeroUsize::new(10_000_000).unwrap(),
    });
    e.add_policy("aegis.rego".into(), module.into()).unwrap();
    e
}

fn rego_eval(e: &mut regorus::Engine, input_json: &str) -> regorus::Value {
    e.set_input_json(input_json).unwrap();
    e.eval_rule(DECISION_RULE.to_string()).unwrap()
}

fn rego_verdict(v: &regorus::Value) -> (String, Option<String>) {
    let j: Value = serde_json::from_str(&v.to_json_str().unwrap()).unwrap();
    (
        j["verdict"].as_str().unwrap_or("undefined").to_string(),
        j["rule"].as_str().map(str::to_string),
    )
}

fn verdict_str(v: Verdict, dlp: bool) -> &'static str {
    if dlp {
        // DLP runs after the rules and is not in the module.
        return "allow";
    }
    v.as_str()
}

/// Engine and module agree on `r`; returns the engine's verdict.
fn check_same(
    bundle: &Bundle,
    rego: &mut regorus::Engine,
    vm: &mut regorus::rvm::RegoVM,
    r: &Req,
    scratch: &mut Scratch,
) -> &'static str {
    let (v, rule, dlp) = decide(bundle, r, scratch);
    let want = (verdict_str(v, dlp), rule.map(str::to_string));
    let input = r.input_json();
    for (peer, got) in [
        ("regorus", rego_verdict(&rego_eval(rego, &input))),
        ("rvm", rego_verdict(&rvm_eval(vm, &input))),
    ] {
        assert_eq!(
            (want.0, want.1.clone()),
            (got.0.as_str(), got.1.clone()),
            "engine and {peer} differ on {} {} {}{} body {}",
            r.agent,
            r.method,
            r.authority,
            r.path,
            String::from_utf8_lossy(&r.body)
        );
    }
    want.0
}

/// Requests derived from an allowed one that the rules judge otherwise.
fn mutations(policy: &ir::Policy, agent: &ir::Agent, ok: &Req) -> Vec<Req> {
    let mut out = Vec::new();
    let with = |f: &dyn Fn(&mut Req)| {
        let mut r = Req {
            agent: ok.agent.clone(),
            method: ok.method.clone(),
            authority: ok.authority.clone(),
            path: ok.path.clone(),
            body: ok.body.clone(),
        };
        f(&mut r);
        r
    };
    let body: serde_json::Map<String, Value> = serde_json::from_slice(&ok.body).unwrap();
    // Each parameter broken: numbers far above any limit, other strings,
    // flipped booleans, or left out.
    for (k, v) in &body {
        let mut b = body.clone();
        let bad = match v {
            Value::Number(_) => Value::from(1_000_000_000),
            Value::Bool(x) => Value::from(!x),
            Value::String(_) => Value::from("no such value!"),
            _ => continue,
        };
        b.insert(k.clone(), bad);
        out.push(with(&|r| r.body = serde_json::to_vec(&b).unwrap()));
        let mut b = body.clone();
        b.remove(k);
        out.push(with(&|r| r.body = serde_json::to_vec(&b).unwrap()));
    }
    // `when: {environment: production}` entries ask for approval.
    let mut b = body.clone();
    b.insert("environment".into(), Value::from("production"));
    out.push(with(&|r| r.body = serde_json::to_vec(&b).unwrap()));
    // Route, method, host and agent.
    out.push(with(&|r| r.path.push_str("/not-a-route")));
    out.push(with(&|r| r.method = "DELETE".into()));
    out.push(with(&|r| r.agent.push_str("-unknown")));
    let allowed = agent.allow_hosts.clone().unwrap_or_default();
    if let Some(h) = (0..TOOLS).map(host).find(|h| !allowed.contains(h)) {
        out.push(with(&|r| r.authority = h.clone()));
    }
    // Every other action of the tool, with the same body.
    if let Some(t) = policy
        .tools
        .iter()
        .find(|t| t.hosts.contains(&ok.authority))
    {
        for a in &t.actions {
            let (Some(m), Some(p)) = (&a.method, &a.path) else {
                continue;
            };
            let p = p.replace("{id}", "item-7");
            out.push(with(&|r| {
                r.method = m.clone();
                r.path = p.clone();
            }));
        }
    }
    out
}

/// The export on the 1,000-agent policy decides like the engine.
fn check_generated(
    policy: &ir::Policy,
    bundle: &Bundle,
    rego: &mut regorus::Engine,
    vm: &mut regorus::rvm::RegoVM,
) {
    let mut scratch = Scratch::new();
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for id in sorted_agent_ids(policy).iter().step_by(4) {
        let Some(agent) = policy.agents.iter().find(|a| &a.id == id) else {
            continue;
        };
        let Some(owned) = try_allowed_request(policy, id) else {
            continue;
        };
        let ok = Req::from_owned(id, &owned);
        assert_eq!(
            check_same(bundle, rego, vm, &ok, &mut scratch),
            "allow",
            "{id}"
        );
        *counts.entry("allow (generated)").or_default() += 1;
        for m in mutations(policy, agent, &ok) {
            let v = check_same(bundle, rego, vm, &m, &mut scratch);
            *counts.entry(v).or_default() += 1;
        }
    }
    let total: usize = counts.values().sum();
    eprintln!("rego export (regorus and rvm) == engine on {total} requests of the 1,000-agent policy: {counts:?}");
    assert!(total >= 500, "only {total} requests compared");
}

struct Case {
    name: String,
    bundle: Bundle,
    /// Tables as data.
    rego: regorus::Engine,
    /// Tables in the module.
    module: regorus::Engine,
    /// Tables as data, on the bytecode VM.
    vm: regorus::rvm::RegoVM,
    req: Req,
    input_json: String,
    input_value: regorus::Value,
}

impl Case {
    fn new(name: &str, policy: &ir::Policy, module: &str, req: Req) -> Self {
        let bytes = compile(policy, &BuildOptions::default(), None).unwrap();
        let input_json = req.input_json();
        let input_value = regorus::Value::from_json_str(&input_json).unwrap();
        Case {
            name: name.to_string(),
            bundle: Bundle::load(&bytes, &[]).unwrap(),
            rego: regorus_with_data(policy),
            module: regorus_engine(module),
            vm: rvm_with_data(policy),
            req,
            input_json,
            input_value,
        }
    }

    fn native(&self, scratch: &mut Scratch) -> Verdict {
        decide(&self.bundle, &self.req, scratch).0
    }

    fn regorus(&mut self) -> regorus::Value {
        rego_eval(&mut self.rego, &self.input_json)
    }

    fn regorus_value(&mut self) -> regorus::Value {
        self.rego.set_input(self.input_value.clone());
        self.rego.eval_rule(DECISION_RULE.to_string()).unwrap()
    }

    fn regorus_rvm(&mut self) -> regorus::Value {
        rvm_eval(&mut self.vm, &self.input_json)
    }

    fn regorus_module(&mut self) -> regorus::Value {
        rego_eval(&mut self.module, &self.input_json)
    }
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();

    let loaded = load(&[("orders.yaml".into(), ORDERS_POLICY.into())]);
    out.push(Case::new(
        "1_agent/orders_json",
        &loaded.policy,
        &export(&loaded.policy),
        Req {
            agent: "orders-agent".into(),
            method: "POST".into(),
            authority: "api.orders.example.com".into(),
            path: "/v1/orders".into(),
            body: ORDERS_BODY.as_bytes().to_vec(),
        },
    ));

    // The `decision` bench's policy (with DLP for half of the agents; the
    // measured agent has none).
    let (sources, stats) = generated_policy(1000, true);
    let loaded = load(&sources);
    let bytes = compile(&loaded.policy, &BuildOptions::default(), None).unwrap();
    let bundle = Bundle::load(&bytes, &[]).unwrap();
    let module = export(&loaded.policy);
    let (evaluator, data) = export_with_data(&loaded.policy);
    eprintln!(
        "generated policy: {} agents, {} rules; bundle {} bytes; rego: module {} bytes \
         ({} lines), or evaluator {} bytes + data {} bytes",
        stats.agents,
        stats.rules,
        bytes.len(),
        module.len(),
        module.lines().count(),
        evaluator.len(),
        data.to_string().len()
    );
    let t = Instant::now();
    let mut rego = regorus_with_data(&loaded.policy);
    rego_eval(
        &mut rego,
        r#"{"agent":"x","method":"GET","host":"x","path":"/","params":{}}"#,
    );
    eprintln!(
        "regorus: data layout loaded and prepared in {:?}",
        t.elapsed()
    );
    let mut vm = rvm_with_data(&loaded.policy);
    check_generated(&loaded.policy, &bundle, &mut rego, &mut vm);

    for c in generated_cases(&loaded.policy) {
        if !matches!(c.label, "mid_no_dlp" | "mid_unknown_route_deny") {
            continue;
        }
        let r = &c.req;
        eprintln!(
            "1000_agents/{}: agent {}, {} https://{}{}, body {} bytes: {}",
            c.label,
            c.agent,
            r.method,
            r.authority,
            r.path,
            r.body.len(),
            String::from_utf8_lossy(&r.body)
        );
        out.push(Case::new(
            &format!("1000_agents/{}", c.label),
            &loaded.policy,
            &module,
            Req::from_owned(&c.agent, &c.req),
        ));
    }
    out
}

/// Appends the time per call of `f`, in ns, over a round of about
/// `budget` (at least one call).
fn round(rounds: &mut Vec<f64>, budget: Duration, mut f: impl FnMut()) {
    let t = Instant::now();
    let mut n = 0u32;
    while n == 0 || t.elapsed() < budget {
        f();
        n += 1;
    }
    rounds.push(t.elapsed().as_nanos() as f64 / f64::from(n));
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn show(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.1} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} us", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn bench(c: &mut Criterion) {
    let mut cases = cases();
    let mut g = c.benchmark_group("rego");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30);
    for case in &mut cases {
        let mut scratch = Scratch::new();
        let (v, rule, dlp) = decide(&case.bundle, &case.req, &mut scratch);
        let want = (verdict_str(v, dlp).to_string(), rule.map(str::to_string));
        assert_eq!(rego_verdict(&case.regorus()), want, "{}", case.name);
        assert_eq!(rego_verdict(&case.regorus_value()), want, "{}", case.name);
        assert_eq!(rego_verdict(&case.regorus_module()), want, "{}", case.name);
        assert_eq!(rego_verdict(&case.regorus_rvm()), want, "{}", case.name);
        eprintln!("{}: all say {} ({:?})", case.name, want.0, want.1);
        let name = case.name.clone();
        g.bench_function(format!("{name}/native"), |b| {
            b.iter(|| black_box(&*case).native(&mut scratch))
        });
        g.bench_function(format!("{name}/regorus"), |b| {
            b.iter(|| black_box(case.regorus()))
        });
        g.bench_function(format!("{name}/regorus_value"), |b| {
            b.iter(|| black_box(case.regorus_value()))
        });
        g.bench_function(format!("{name}/regorus_rvm"), |b| {
            b.iter(|| black_box(case.regorus_rvm()))
        });
        g.bench_function(format!("{name}/regorus_module"), |b| {
            b.iter(|| black_box(case.regorus_module()))
        });
    }
    g.finish();

    // Ratios from this process: rounds of each variant taken in turn, so
    // that machine noise falls on all alike. Not under `cargo test
    // --benches`, which runs each bench once to check it.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    eprintln!("\nratios, regorus / native (median of 11 interleaved rounds of ~50 ms each):");
    eprintln!(
        "| case | native | regorus | ratio | regorus, input as Value | ratio | \
         regorus rvm | ratio | regorus, one module | ratio |"
    );
    eprintln!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let budget = Duration::from_millis(50);
    for case in &mut cases {
        let mut scratch = Scratch::new();
        let mut t: [Vec<f64>; 5] = Default::default();
        for _ in 0..11 {
            round(&mut t[0], budget, || {
                black_box(black_box(&*case).native(&mut scratch));
            });
            round(&mut t[1], budget, || {
                black_box(case.regorus());
            });
            round(&mut t[2], budget, || {
                black_box(case.regorus_value());
            });
            round(&mut t[3], budget, || {
                black_box(case.regorus_rvm());
            });
            round(&mut t[4], budget, || {
                black_box(case.regorus_module());
            });
        }
        let m = t.map(median);
        let mut line = format!("| {} | {} |", case.name, show(m[0]));
        for x in &m[1..] {
            line.push_str(&format!(" {} | {:.0}x |", show(*x), x / m[0]));
        }
        eprintln!("{line}");
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
