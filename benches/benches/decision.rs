//! Decision latency of `Bundle::decide` (native engine, identity given
//! directly, body present): one-agent policies and generated 100- and
//! 1,000-agent policies compiled through the real front-end.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use aegis_benches::{
    compile_sources, generated_cases, generated_policy, load, FINANCE_CATALOG, FINANCE_PAYMENTS,
    ORDERS_BODY, ORDERS_POLICY,
};
use aegis_engine::builder::bundle::{compile, BuildOptions};
use aegis_engine::{Bundle, Caller, Request, Scratch, Verdict};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use std::time::Duration;

const NOW: i64 = 1_750_000_000;

struct Case {
    name: String,
    bundle: Bundle,
    agent: String,
    method: String,
    authority: String,
    path: String,
    headers: Vec<(&'static str, &'static str)>,
    body: Vec<u8>,
    expect: Verdict,
}

impl Case {
    fn run(&self, scratch: &mut Scratch) -> Verdict {
        let req = Request {
            method: self.method.as_str(),
            authority: self.authority.as_str(),
            path: self.path.as_str(),
            headers: self.headers.as_slice(),
            body: Some(self.body.as_slice()),
        };
        let caller = Caller::Given {
            agent: self.agent.as_str(),
            tenant: None,
        };
        self.bundle.decide(&req, caller, NOW, scratch).verdict
    }

    /// The verdict and the reason sentence, for the set-up check.
    fn explain(&self, scratch: &mut Scratch) -> (Verdict, String) {
        let req = Request {
            method: self.method.as_str(),
            authority: self.authority.as_str(),
            path: self.path.as_str(),
            headers: self.headers.as_slice(),
            body: Some(self.body.as_slice()),
        };
        let caller = Caller::Given {
            agent: self.agent.as_str(),
            tenant: None,
        };
        let d = self.bundle.decide(&req, caller, NOW, scratch);
        (d.verdict, d.reason.to_string())
    }
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();

    let finance = compile_sources(&[
        ("catalog.yaml".into(), FINANCE_CATALOG.into()),
        ("payments.yaml".into(), FINANCE_PAYMENTS.into()),
    ]);
    out.push(Case {
        name: "1_agent/payments_form".into(),
        bundle: Bundle::load(&finance, &[]).unwrap(),
        agent: "payments-agent".into(),
        method: "POST".into(),
        authority: "api.stripe.com".into(),
        path: "/v1/payment_intents".into(),
        headers: vec![("content-type", "application/x-www-form-urlencoded")],
        body: b"amount=1200&currency=usd&description=Invoice+1042".to_vec(),
        expect: Verdict::Allow,
    });

    let orders = compile_sources(&[("orders.yaml".into(), ORDERS_POLICY.into())]);
    out.push(Case {
        name: "1_agent/orders_json".into(),
        bundle: Bundle::load(&orders, &[]).unwrap(),
        agent: "orders-agent".into(),
        method: "POST".into(),
        authority: "api.orders.example.com".into(),
        path: "/v1/orders".into(),
        headers: vec![("content-type", "application/json")],
        body: ORDERS_BODY.as_bytes().to_vec(),
        expect: Verdict::Allow,
    });

    // The generated policies: every agent's entries are in one bundle, so
    // 100 against 1,000 agents shows what the agent count costs.
    for n in [100, 1000] {
        let (sources, stats) = generated_policy(n, true);
        let loaded = load(&sources);
        let bytes = compile(&loaded.policy, &BuildOptions::default(), None).unwrap();
        eprintln!(
            "generated policy: {} agents, {} rules, {} conditions, {} bytes of YAML, bundle {} bytes",
            stats.agents,
            stats.rules,
            stats.conditions,
            stats.yaml_bytes,
            bytes.len()
        );
        // Agent i has DLP set i % 4 (0: default detectors / redact, 1:
        // three detectors / deny, else none); the cases take the middle
        // agents of the sorted list with each set. The unknown route is
        // denied at the route stage, so no body is read.
        for c in generated_cases(&loaded.policy) {
            let r = c.req;
            eprintln!(
                "{n}_agents/{}: agent {}, {} https://{}{} rule {}, body {} bytes: {}",
                c.label,
                c.agent,
                r.method,
                r.authority,
                r.path,
                r.rule,
                r.body.len(),
                String::from_utf8_lossy(&r.body)
            );
            out.push(Case {
                name: format!("{n}_agents/{}", c.label),
                bundle: Bundle::load(&bytes, &[]).unwrap(),
                agent: c.agent,
                method: r.method,
                authority: r.authority,
                path: r.path,
                headers: vec![("content-type", "application/json")],
                body: r.body,
                expect: if c.allow {
                    Verdict::Allow
                } else {
                    Verdict::Deny
                },
            });
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let cases = cases();
    let mut g = c.benchmark_group("decision");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(50);
    for case in &cases {
        let mut scratch = Scratch::new();
        let (got, reason) = case.explain(&mut scratch);
        assert_eq!(
            got, case.expect,
            "{}: unexpected verdict ({reason})",
            case.name
        );
        g.bench_function(case.name.as_str(), |b| {
            b.iter(|| black_box(case).run(&mut scratch))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
