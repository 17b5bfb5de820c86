//! Front-end tests: accepted language, every diagnostic, rendering.

use super::*;
use aegis_engine::ir::{Approval, BodyKind, Detector, DlpAction, Mode, Op, Predicate, Scalar};

const CATALOG: &str = r#"kind: ToolCatalog
tools:
  - name: stripe-payments
    hosts: [API.Stripe.com]
    body: form
    actions:
      - name: create_payment
        method: post
        path: /v1/payment_intents
      - name: get_customer
        method: GET
        path: /v1/customers/{id}
      - name: refund
        method: POST
        path: /v1/refunds
        write: true
  - name: deployer
    hosts: ["*.acme.internal"]
    actions:
      - {name: deploy, method: POST, path: "/deploy/{service}"}
      - {name: status, method: GET, path: /status, write: false}
  - name: files
    mcp: {hosts: [mcp.files.internal], path: /mcp}
  - name: github
    mcp: {hosts: [mcp.github.internal]}
    actions: [create_issue, {name: list_issues, write: false}]
"#;

const SEED: &str = "agent: finance-agent
allowed_tools:
  - name: stripe-payments
    actions:
      - create_payment
    conditions:
      max_amount: 5000
      approval_needed: true
";

fn compile(srcs: &[(&str, &str)]) -> Result<Loaded, Vec<Diagnostic>> {
    let owned: Vec<(String, String)> = srcs
        .iter()
        .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
        .collect();
    load_sources(&owned, Some("test"))
}

fn ok(srcs: &[(&str, &str)]) -> Loaded {
    match compile(srcs) {
        Ok(l) => l,
        Err(ds) => panic!(
            "unexpected errors:\n{}",
            ds.iter().map(render).collect::<Vec<_>>().join("\n")
        ),
    }
}

/// Compiles one agent document (with the catalog) and returns its errors.
fn errors_of(srcs: &[(&str, &str)]) -> Vec<Diagnostic> {
    match compile(srcs) {
        Ok(_) => panic!("expected errors"),
        Err(ds) => ds.into_iter().filter(Diagnostic::is_error).collect(),
    }
}

fn agent_errors(agent: &str) -> Vec<Diagnostic> {
    errors_of(&[("catalog.yaml", CATALOG), ("agent.yaml", agent)])
}

fn one_error(agent: &str) -> Diagnostic {
    let mut es = agent_errors(agent);
    assert_eq!(
        es.len(),
        1,
        "expected one error, got:\n{}",
        es.iter().map(render).collect::<Vec<_>>().join("\n")
    );
    es.remove(0)
}

fn at(d: &Diagnostic) -> (usize, usize) {
    let (_, l, c) = d.location().unwrap();
    (l, c)
}

fn pred(param: &str, op: Op) -> Predicate {
    Predicate {
        param: param.to_owned(),
        op,
    }
}

#[test]
fn seed_example_compiles() {
    let l = ok(&[("catalog.yaml", CATALOG), ("seed.yaml", SEED)]);
    let p = &l.policy;
    assert_eq!(p.version, "test");
    assert_eq!(p.identity, None);
    assert_eq!(p.agents.len(), 1);
    let a = &p.agents[0];
    assert_eq!(a.id, "finance-agent");
    assert_eq!(a.name, "finance-agent");
    assert_eq!(a.tenant, None);
    assert_eq!(a.mode, Mode::Enforce);
    assert_eq!(a.allow_hosts, None);
    assert_eq!(a.rules.len(), 1);
    let r = &a.rules[0];
    assert_eq!(r.id, "finance-agent/stripe-payments/create_payment#0");
    assert_eq!(p.tools[r.tool].name, "stripe-payments");
    assert_eq!(p.tools[r.tool].actions[r.action].name, "create_payment");
    assert!(r.when.is_empty());
    assert_eq!(r.conditions, vec![pred("amount", Op::Le(5000.0))]);
    assert_eq!(r.approval, Approval::OnFailure);
    assert_eq!(r.cost_usd, None);
    // The only warning: no egress restriction.
    assert_eq!(l.warnings.len(), 1);
    assert_eq!(
        l.warnings[0].message(),
        "agent `finance-agent` has no `egress`: its calls are not restricted by host"
    );
    assert_eq!(l.warnings[0].severity(), Severity::Warning);
    assert_eq!(at(&l.warnings[0]), (1, 1));
}

#[test]
fn catalog_compiles_to_ir() {
    let l = ok(&[("catalog.yaml", CATALOG)]);
    let tools = &l.policy.tools;
    assert_eq!(tools.len(), 4);
    let s = &tools[0];
    assert_eq!(s.hosts, vec!["api.stripe.com"]);
    assert_eq!(s.body, BodyKind::Form);
    assert_eq!(s.mcp_path, None);
    assert_eq!(s.actions[0].method.as_deref(), Some("POST"));
    assert_eq!(s.actions[0].path.as_deref(), Some("/v1/payment_intents"));
    assert!(s.actions[0].write, "POST defaults to a write");
    assert!(!s.actions[1].write, "GET defaults to a read");
    assert!(s.actions[2].write);
    let d = &tools[1];
    assert_eq!(d.hosts, vec!["*.acme.internal"]);
    assert_eq!(d.body, BodyKind::Json);
    assert!(!d.actions[1].write);
    let files = &tools[2];
    assert_eq!(files.mcp_path.as_deref(), Some("/mcp"));
    assert_eq!(files.hosts, vec!["mcp.files.internal"]);
    assert_eq!(files.body, BodyKind::Json);
    assert!(files.actions.is_empty());
    let gh = &tools[3];
    assert_eq!(gh.mcp_path.as_deref(), Some("/mcp"));
    let names: Vec<_> = gh
        .actions
        .iter()
        .map(|a| (a.name.as_str(), a.method.clone(), a.write))
        .collect();
    assert_eq!(
        names,
        vec![("create_issue", None, true), ("list_issues", None, false)]
    );
    assert!(l.warnings.is_empty());
}

const FULL: &str = r#"agent: finance-agent
tenant: acme
mode: shadow
egress:
  allow_hosts: [api.stripe.com, "*.acme.internal", mcp.files.internal]
budget: {daily_usd: 20, rps: 5}
dlp:
  detectors: [ssn, credit_card, dob, email]
  action: mask
  custom: [{name: patient_id, regex: "PT-[0-9]{8}"}]
allowed_tools:
  - name: stripe-payments
    actions: [create_payment]
    cost_usd: 0.01
    conditions:
      max_amount: 5000
      currency: {in: [usd, eur]}
      description: {matches: "^[A-Za-z0-9 .,-]{0,140}$"}
      approval_needed: true
  - name: deployer
    actions: [deploy]
    when: {environment: production}
    approval_needed: always
  - name: deployer
    actions: ["*"]
  - name: files
    actions: [read_file, list_dir]
"#;

#[test]
fn design_example_compiles() {
    let l = ok(&[("catalog.yaml", CATALOG), ("full.yaml", FULL)]);
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let a = &l.policy.agents[0];
    assert_eq!(a.id, "acme/finance-agent");
    assert_eq!(a.tenant.as_deref(), Some("acme"));
    assert_eq!(a.mode, Mode::Shadow);
    assert_eq!(
        a.allow_hosts.as_deref(),
        Some(
            &[
                "api.stripe.com".to_owned(),
                "*.acme.internal".to_owned(),
                "mcp.files.internal".to_owned()
            ][..]
        )
    );
    let b = a.budget.unwrap();
    assert_eq!((b.daily_usd, b.rps), (Some(20.0), Some(5.0)));
    let dlp = a.dlp.as_ref().unwrap();
    assert_eq!(
        dlp.detectors,
        vec![
            Detector::Ssn,
            Detector::CreditCard,
            Detector::Dob,
            Detector::Email
        ]
    );
    assert_eq!(dlp.action, DlpAction::Mask);
    assert_eq!(
        dlp.custom,
        vec![("patient_id".to_owned(), "PT-[0-9]{8}".to_owned())]
    );

    let ids: Vec<&str> = a.rules.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        vec![
            "acme/finance-agent/stripe-payments/create_payment#0",
            "acme/finance-agent/deployer/deploy#0",
            "acme/finance-agent/deployer/deploy#1",
            "acme/finance-agent/deployer/status#0",
            "acme/finance-agent/files/read_file#0",
            "acme/finance-agent/files/list_dir#0",
        ]
    );
    let r0 = &a.rules[0];
    assert_eq!(r0.cost_usd, Some(0.01));
    assert_eq!(r0.approval, Approval::OnFailure);
    assert_eq!(
        r0.conditions,
        vec![
            pred("amount", Op::Le(5000.0)),
            pred(
                "currency",
                Op::In(vec![Scalar::Str("usd".into()), Scalar::Str("eur".into())])
            ),
            pred(
                "description",
                Op::Matches("^[A-Za-z0-9 .,-]{0,140}$".into())
            ),
        ]
    );
    let r1 = &a.rules[1];
    assert_eq!(
        r1.when,
        vec![pred(
            "environment",
            Op::Eq(Scalar::Str("production".into()))
        )]
    );
    assert_eq!(r1.approval, Approval::Always);
    assert!(a.rules[2].when.is_empty());
    assert_eq!(a.rules[2].approval, Approval::Never);

    // The open MCP tool learned its actions in first-use order.
    let files = &l.policy.tools[2];
    let names: Vec<&str> = files.actions.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, vec!["read_file", "list_dir"]);
    assert_eq!(a.rules[4].action, 0);
    assert_eq!(a.rules[5].action, 1);
}

#[test]
fn every_condition_form() {
    let agent = r#"agent: a
egress: {allow_hosts: [api.stripe.com]}
allowed_tools:
  - name: stripe-payments
    actions: [create_payment]
    when:
      metadata.order_id: {exists: true}
      min_amount: 10
    conditions:
      currency: usd
      amount: 12.5
      livemode: false
      count: -3
      customer: {eq: cus_1, ne: cus_2}
      card.last4: {in: ["4242", 1234, true], not_in: [x]}
      items.0.qty: {lt: 10, le: 9, gt: 0, ge: 1}
      description: {matches: "^ok", not_matches: "(?i)secret"}
      coupon: {absent: true}
      max_retries: {eq: 3}
      max_amount: 5000
"#;
    let l = ok(&[("catalog.yaml", CATALOG), ("a.yaml", agent)]);
    let r = &l.policy.agents[0].rules[0];
    assert_eq!(
        r.when,
        vec![
            pred("metadata.order_id", Op::Exists),
            pred("amount", Op::Ge(10.0))
        ]
    );
    assert_eq!(
        r.conditions,
        vec![
            pred("currency", Op::Eq(Scalar::Str("usd".into()))),
            pred("amount", Op::Eq(Scalar::Num(12.5))),
            pred("livemode", Op::Eq(Scalar::Bool(false))),
            pred("count", Op::Eq(Scalar::Num(-3.0))),
            pred("customer", Op::Eq(Scalar::Str("cus_1".into()))),
            pred("customer", Op::Ne(Scalar::Str("cus_2".into()))),
            pred(
                "card.last4",
                Op::In(vec![
                    Scalar::Str("4242".into()),
                    Scalar::Num(1234.0),
                    Scalar::Bool(true)
                ])
            ),
            pred("card.last4", Op::NotIn(vec![Scalar::Str("x".into())])),
            pred("items.0.qty", Op::Lt(10.0)),
            pred("items.0.qty", Op::Le(9.0)),
            pred("items.0.qty", Op::Gt(0.0)),
            pred("items.0.qty", Op::Ge(1.0)),
            pred("description", Op::Matches("^ok".into())),
            pred("description", Op::NotMatches("(?i)secret".into())),
            pred("coupon", Op::Absent),
            pred("max_retries", Op::Eq(Scalar::Num(3.0))),
            pred("amount", Op::Le(5000.0)),
        ]
    );
    assert_eq!(r.approval, Approval::Never);
}

#[test]
fn approval_forms() {
    let agent = "agent: a
egress: {allow_hosts: [api.stripe.com]}
allowed_tools:
  - {name: stripe-payments, actions: [create_payment], approval_needed: true}
  - {name: stripe-payments, actions: [refund], approval_needed: false}
  - {name: stripe-payments, actions: [get_customer], conditions: {approval_needed: always}}
";
    let l = ok(&[("catalog.yaml", CATALOG), ("a.yaml", agent)]);
    let ap: Vec<Approval> = l.policy.agents[0]
        .rules
        .iter()
        .map(|r| r.approval)
        .collect();
    assert_eq!(
        ap,
        vec![Approval::OnFailure, Approval::Never, Approval::Always]
    );

    let e = one_error(
        "agent: a
egress: {allow_hosts: [api.stripe.com]}
allowed_tools:
  - name: stripe-payments
    actions: [create_payment]
    approval_needed: true
    conditions: {approval_needed: true}
",
    );
    assert_eq!(e.message(), "`approval_needed` is given twice");
    assert_eq!(at(&e), (7, 18));

    let e = one_error(
        "agent: a
egress: {allow_hosts: [api.stripe.com]}
allowed_tools:
  - {name: stripe-payments, actions: [create_payment], approval_needed: sometimes}
",
    );
    assert_eq!(e.message(), "invalid `approval_needed` `sometimes`");

    let e = one_error(
        "agent: a
egress: {allow_hosts: [api.stripe.com]}
allowed_tools:
  - {name: stripe-payments, actions: [create_payment], when: {approval_needed: true}}
",
    );
    assert_eq!(e.message(), "`approval_needed` is not allowed in `when`");
}

#[test]
fn multi_document_file() {
    let text =
        format!("{CATALOG}---\n{SEED}---\nagent: other\ntenant: t1\nmode: enforce\n---\n# empty\n");
    let l = ok(&[("all.yaml", &text)]);
    let ids: Vec<&str> = l.policy.agents.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, vec!["finance-agent", "t1/other"]);
    assert!(l.policy.agents[1].rules.is_empty());
    assert_eq!(l.warnings.len(), 2);
    // Warnings point into the right document.
    assert_eq!(l.warnings[1].location().unwrap().1, 37);
}

#[test]
fn agent_before_catalog_and_kind_agent_policy() {
    let seed = format!("kind: AgentPolicy\n{SEED}");
    let l = ok(&[("a.yaml", &seed), ("z.yaml", CATALOG)]);
    assert_eq!(l.policy.agents[0].rules.len(), 1);
}

#[test]
fn yaml_syntax_error() {
    let es = errors_of(&[("bad.yaml", "agent: a\nallowed_tools: [x\nmode: shadow\n")]);
    assert_eq!(es.len(), 1);
    assert!(
        es[0].message().starts_with("invalid yaml: "),
        "{}",
        es[0].message()
    );
    assert_eq!(es[0].location().unwrap().0, "bad.yaml");
    assert!(es[0].help_text().is_some());

    let es = errors_of(&[("dup.yaml", "agent: a\nagent: b\n")]);
    assert_eq!(es[0].message(), "duplicate key `agent`");
    assert_eq!(at(&es[0]), (2, 1));

    let es = errors_of(&[(
        "alias.yaml",
        "agent: a\negress: {allow_hosts: [*.acme.internal]}\n",
    )]);
    assert_eq!(es.len(), 1);
    assert!(es[0].message().starts_with("invalid yaml"));
}

#[test]
fn unknown_keys_with_suggestions() {
    let e = one_error("agent: a\negress: {allow_hosts: [api.stripe.com]}\nallowed_tool: []\n");
    assert_eq!(e.message(), "unknown key `allowed_tool` in an agent policy");
    assert_eq!(at(&e), (3, 1));
    let help = e.help_text().unwrap();
    assert!(
        help.starts_with("did you mean `allowed_tools`? known keys: `kind`, `agent`"),
        "{help}"
    );

    let e = one_error(
        "agent: a
egress: {allow_hosts: [api.stripe.com]}
allowed_tools:
  - name: stripe-payments
    actions: [create_payment]
    condition: {max_amount: 5}
",
    );
    assert_eq!(
        e.message(),
        "unknown key `condition` in an `allowed_tools` entry"
    );
    assert_eq!(at(&e), (6, 5));
    assert!(e
        .help_text()
        .unwrap()
        .starts_with("did you mean `conditions`?"));

    let e = one_error(
        "agent: a
egress: {allow_hosts: [api.stripe.com]}
allowed_tools:
  - name: stripe-payments
    actions: [create_payment]
    conditions: {currency: {inn: [usd]}}
",
    );
    assert_eq!(
        e.message(),
        "unknown operator `inn` in the condition on `currency`"
    );
    assert!(e
        .help_text()
        .unwrap()
        .starts_with("did you mean `in`? known operators: `eq`"));

    let e = one_error("agent: a\negress: {allow_hosts: [api.stripe.com], deny_hosts: []}\n");
    assert_eq!(e.message(), "unknown key `deny_hosts` in `egress`");
    assert_eq!(e.help_text(), Some("known keys: `allow_hosts`"));
}

#[test]
fn wrong_types() {
    let e = one_error(
        "agent: a
egress: {allow_hosts: [api.stripe.com]}
allowed_tools:
  - name: stripe-payments
    actions: create_payment
",
    );
    assert_eq!(e.message(), "`actions` must be a list, found a string");
    assert_eq!(at(&e), (5, 14));

    let e =
        one_error("agent: a\negress: {allow_hosts: [api.stripe.com]}\nbudget: {daily_usd: lots}\n");
    assert_eq!(e.message(), "`daily_usd` must be a number, found a string");
    let e = one_error("agent: a\negress: {allow_hosts: [api.stripe.com]}\nbudget: {rps: 0}\n");
    assert_eq!(e.message(), "`rps` must be greater than zero, found `0`");
    let e = one_error("agent: [a]\n");
    assert_eq!(e.message(), "`agent` must be a string, found a list");
    let e = one_error("agent: a/b\negress: {allow_hosts: [api.stripe.com]}\n");
    assert_eq!(e.message(), "`agent` `a/b` is not a valid name");
    let e = one_error("agent: a\nmode: block\negress: {allow_hosts: [api.stripe.com]}\n");
    assert_eq!(e.message(), "invalid `mode` `block`");
    let e = one_error(
        "agent: a
egress: {allow_hosts: [api.stripe.com]}
allowed_tools: [{name: stripe-payments, actions: [refund], cost_usd: -1}]
",
    );
    assert_eq!(e.message(), "`cost_usd` must be zero or more, found `-1`");
}

#[test]
fn unknown_tool_and_action() {
    let e = one_error(
        "agent: a
egress: {allow_hosts: [api.stripe.com]}
allowed_tools:
  - name: stripe-payment
    actions: [create_payment]
",
    );
    assert_eq!(e.message(), "unknown tool `stripe-payment`");
    assert_eq!(at(&e), (4, 11));
    assert_eq!(
        e.help_text(),
        Some("did you mean `stripe-payments`? known tools: `stripe-payments`, `deployer`, `files`, `github`")
    );

    let e = one_error(
        "agent: a
egress: {allow_hosts: [api.stripe.com]}
allowed_tools:
  - name: stripe-payments
    actions: [create_payment, create_paymnt]
",
    );
    assert_eq!(
        e.message(),
        "unknown action `create_paymnt` for tool `stripe-payments`"
    );
    assert_eq!(at(&e), (5, 31));
    assert_eq!(
        e.help_text(),
        Some(
            "did you mean `create_payment`? actions of `stripe-payments`: `create_payment`, \
             `get_customer`, `refund`"
        )
    );

    // An MCP tool with a listed action set is closed.
    let e = one_error(
        "agent: a
egress: {allow_hosts: [mcp.github.internal]}
allowed_tools: [{name: github, actions: [delete_repo]}]
",
    );
    assert_eq!(
        e.message(),
        "unknown action `delete_repo` for tool `github`"
    );
}

#[test]
fn tool_without_catalog() {
    let es = errors_of(&[("seed.yaml", SEED)]);
    assert_eq!(es.len(), 1);
    assert_eq!(
        es[0].message(),
        "unknown tool `stripe-payments`: no tool catalog is loaded"
    );
    assert_eq!(at(&es[0]), (3, 11));
    assert!(es[0].help_text().unwrap().contains("kind: ToolCatalog"));
}

#[test]
fn bad_regex() {
    let e = one_error(
        "agent: a
egress: {allow_hosts: [api.stripe.com]}
allowed_tools:
  - name: stripe-payments
    actions: [create_payment]
    conditions:
      description: {matches: \"(unclosed\"}
",
    );
    assert!(
        e.message().starts_with("invalid regex `(unclosed`"),
        "{}",
        e.message()
    );
    assert_eq!(at(&e), (7, 30));

    let e = one_error(
        "agent: a
egress: {allow_hosts: [api.stripe.com]}
allowed_tools:
  - name: stripe-payments
    actions: [create_payment]
    conditions:
      description: {not_matches: \"[a-z]{1000}[0-9]{1000}\\\\w{500}\"}
",
    );
    assert!(
        e.message().contains("larger than the limit"),
        "{}",
        e.message()
    );

    let e = one_error(
        "agent: a
egress: {allow_hosts: [api.stripe.com]}
dlp: {custom: [{name: pid, regex: \"(?<=x)y\"}]}
",
    );
    assert!(e.message().starts_with("invalid regex"), "{}", e.message());
    assert_eq!(at(&e), (3, 35));
}

#[test]
fn duplicate_agents() {
    let a = "agent: finance-agent\negress: {allow_hosts: []}\n";
    let es = errors_of(&[("one.yaml", a), ("two.yaml", a)]);
    assert_eq!(es.len(), 1);
    assert_eq!(es[0].message(), "duplicate agent `finance-agent`");
    assert_eq!(es[0].location(), Some(("two.yaml".to_owned(), 1, 8)));
    assert_eq!(
        es[0].help_text(),
        Some("agent `finance-agent` is first defined at one.yaml:1:8; merge the two policies")
    );

    // A tenant namespaces the agent.
    let t = "agent: finance-agent\ntenant: acme\negress: {allow_hosts: []}\n";
    ok(&[("one.yaml", a), ("two.yaml", t)]);
    let es = errors_of(&[("x.yaml", &format!("{t}---\n{t}"))]);
    assert_eq!(es.len(), 1);
    assert_eq!(es[0].message(), "duplicate agent `acme/finance-agent`");
    assert_eq!(at(&es[0]), (5, 8));

    // Reported even when the first definition has other errors.
    let es = errors_of(&[("x.yaml", "agent: a\nmode: loud\n---\nagent: a\n")]);
    let msgs: Vec<&str> = es.iter().map(Diagnostic::message).collect();
    assert_eq!(msgs, vec!["invalid `mode` `loud`", "duplicate agent `a`"]);
}

#[test]
fn catalog_errors() {
    let dup_tool = "kind: ToolCatalog
tools:
  - {name: t, hosts: [a.com], actions: [{name: x, method: GET, path: /x}]}
  - {name: t, hosts: [b.com], actions: [{name: y, method: GET, path: /y}]}
";
    let es = errors_of(&[("c.yaml", dup_tool)]);
    assert_eq!(es.len(), 1);
    assert_eq!(es[0].message(), "duplicate tool `t`");
    assert_eq!(at(&es[0]), (4, 12));
    assert!(es[0]
        .help_text()
        .unwrap()
        .contains("first defined at c.yaml:3:12"));

    let dup_action = "kind: ToolCatalog
tools:
  - name: t
    hosts: [a.com]
    actions:
      - {name: x, method: GET, path: /x}
      - {name: x, method: GET, path: /y}
";
    let es = errors_of(&[("c.yaml", dup_action)]);
    assert_eq!(es.len(), 1);
    assert_eq!(es[0].message(), "duplicate action `x`");
    assert_eq!(at(&es[0]), (7, 16));

    let same_route = "kind: ToolCatalog
tools:
  - name: t
    hosts: [a.com]
    actions:
      - {name: x, method: get, path: \"/c/{id}\"}
      - {name: y, method: GET, path: \"/c/{cid}\"}
      - {name: z, method: POST, path: \"/c/{cid}\"}
";
    let es = errors_of(&[("c.yaml", same_route)]);
    assert_eq!(es.len(), 1);
    assert_eq!(
        es[0].message(),
        "actions `x` and `y` both match `GET /c/{cid}`"
    );
    assert_eq!(at(&es[0]), (7, 38));

    let templates = "kind: ToolCatalog
tools:
  - name: t
    hosts: [a.com]
    actions:
      - {name: a, method: GET, path: v1/x}
      - {name: b, method: GET, path: \"/v1/x{id}\"}
      - {name: c, method: GET, path: \"/v1//x\"}
      - {name: d, method: \"G T\", path: /d}
";
    let es = errors_of(&[("c.yaml", templates)]);
    let msgs: Vec<&str> = es.iter().map(Diagnostic::message).collect();
    assert_eq!(
        msgs,
        vec![
            "invalid path template `v1/x`: it must start with `/`",
            "invalid path template `/v1/x{id}`: segment `x{id}` must be literal text or exactly `{name}`",
            "invalid path template `/v1//x`: empty segment (`//`)",
            "invalid HTTP method `G T`",
        ]
    );
    assert_eq!(at(&es[0]), (6, 38));

    let hosts = "kind: ToolCatalog
tools:
  - {name: t, hosts: [\"https://a.com\"], actions: [{name: x, method: GET, path: /x}]}
  - {name: u, mcp: {hosts: [\"a..b\"]}}
  - {name: v, hosts: [], actions: []}
  - {name: w, mcp: {hosts: [m.com]}, hosts: [m.com], body: form}
";
    let es = errors_of(&[("c.yaml", hosts)]);
    let msgs: Vec<&str> = es.iter().map(Diagnostic::message).collect();
    assert_eq!(
        msgs,
        vec![
            "invalid host pattern: `https://a.com` includes a scheme",
            "invalid host pattern: empty label in host `a..b`",
            "`hosts` must not be empty",
            "`actions` must not be empty",
            "an MCP tool takes its hosts from `mcp.hosts`",
            "an MCP tool always has a JSON body",
        ]
    );
    assert_eq!(at(&es[0]), (3, 23));

    let missing = "kind: ToolCatalog\ntools:\n  - {name: t, hosts: [a.com]}\n";
    let es = errors_of(&[("c.yaml", missing)]);
    assert_eq!(es[0].message(), "missing key `actions` in a tool");
    assert_eq!(at(&es[0]), (3, 5));
}

#[test]
fn unknown_detector_and_dlp_errors() {
    let e =
        one_error("agent: a\negress: {allow_hosts: []}\ndlp: {detectors: [ssn, credit_cards]}\n");
    assert_eq!(e.message(), "unknown detector `credit_cards`");
    assert_eq!(at(&e), (3, 24));
    assert!(e
        .help_text()
        .unwrap()
        .starts_with("did you mean `credit_card`? built-in detectors: `ssn`"));

    let e = one_error(
        "agent: a\negress: {allow_hosts: []}\ndlp: {custom: [{name: email, regex: x}]}\n",
    );
    assert_eq!(
        e.message(),
        "custom detector `email` has the name of a built-in detector"
    );
    let e = one_error(
        "agent: a\negress: {allow_hosts: []}\ndlp: {custom: [{name: Patient-ID, regex: x}]}\n",
    );
    assert_eq!(e.message(), "invalid detector name `Patient-ID`");
    let e = one_error("agent: a\negress: {allow_hosts: []}\ndlp: {custom: [{name: ok, regex: x}, {name: opt, regex: \"y*\"}]}\n");
    assert_eq!(
        e.message(),
        "regex `y*` for custom detector `opt` can match the empty string"
    );
    assert_eq!(at(&e), (3, 57));
    let e = one_error("agent: a\negress: {allow_hosts: []}\ndlp: {action: redact}\n");
    assert_eq!(e.message(), "`dlp` enables no detector");
    let e =
        one_error("agent: a\negress: {allow_hosts: []}\ndlp: {detectors: [ssn], action: drop}\n");
    assert_eq!(e.message(), "invalid `action` `drop`");
}

#[test]
fn invalid_egress_host() {
    let e = one_error("agent: a\negress: {allow_hosts: [\"*\"]}\n");
    assert_eq!(
        e.message(),
        "invalid host pattern: invalid character `*` in host `*`"
    );
    assert_eq!(at(&e), (2, 24));
}

#[test]
fn max_min_need_numbers() {
    let e = one_error(
        "agent: a
egress: {allow_hosts: [api.stripe.com]}
allowed_tools:
  - name: stripe-payments
    actions: [create_payment]
    conditions:
      max_amount: lots
",
    );
    assert_eq!(e.message(), "`max_amount` needs a number, found `lots`");
    assert_eq!(at(&e), (7, 19));
    assert!(e
        .help_text()
        .unwrap()
        .contains("`max_amount: <number>` means `amount <= <number>`"));

    let e = one_error(
        "agent: a
egress: {allow_hosts: [api.stripe.com]}
allowed_tools:
  - name: stripe-payments
    actions: [create_payment]
    when: {min_amount: [1]}
",
    );
    assert_eq!(e.message(), "`min_amount` needs a number, found a list");

    let e = one_error(
        "agent: a
egress: {allow_hosts: [api.stripe.com]}
allowed_tools:
  - {name: stripe-payments, actions: [create_payment], conditions: {max_amount: .nan}}
",
    );
    // The YAML reader already refuses non-finite numbers.
    assert!(
        e.message().starts_with("invalid yaml: non-finite float"),
        "{}",
        e.message()
    );
}

#[test]
fn condition_errors_are_all_reported() {
    let es = agent_errors(
        "agent: a
egress: {allow_hosts: [api.stripe.com]}
allowed_tools:
  - name: stripe-payments
    actions: [create_payment]
    conditions:
      a: [1, 2]
      b:
      c: {}
      d: {lt: x}
      e: {in: []}
      f: {exists: false}
      g..h: 1
      i: {eq: [1]}
",
    );
    let got: Vec<(&str, usize)> = es.iter().map(|d| (d.message(), at(d).0)).collect();
    assert_eq!(
        got,
        vec![
            ("condition on `a` is a list", 7),
            ("condition on `b` has no value", 8),
            ("the condition on `c` has no operator", 9),
            ("`lt` on `d` needs a number, found `x`", 10),
            ("`in` on `e` has an empty list", 11),
            ("`exists` only takes `true`", 12),
            ("invalid parameter path `g..h`", 13),
            (
                "the condition on `i` needs a string, number or boolean, found a list",
                14
            ),
        ]
    );
}

#[test]
fn unreachable_entries() {
    let e = one_error(
        "agent: a
egress: {allow_hosts: [api.stripe.com]}
allowed_tools:
  - name: stripe-payments
    actions: [create_payment]
  - name: stripe-payments
    actions: [refund, create_payment]
    when: {currency: usd}
",
    );
    assert_eq!(
        e.message(),
        "entry is unreachable: an earlier entry for `stripe-payments` `create_payment` has no `when`, \
         so it always applies first"
    );
    assert_eq!(at(&e), (7, 23));
    assert_eq!(
        e.help_text(),
        Some("the earlier entry is at agent.yaml:4:11; give it a `when`, or merge the two entries")
    );

    // A `when` on the earlier entry makes the later one a fallback.
    let l = ok(&[
        ("catalog.yaml", CATALOG),
        (
            "a.yaml",
            "agent: a
egress: {allow_hosts: [api.stripe.com]}
allowed_tools:
  - {name: stripe-payments, actions: [create_payment], when: {currency: usd}}
  - {name: stripe-payments, actions: [create_payment], approval_needed: always}
",
        ),
    ]);
    let ids: Vec<&str> = l.policy.agents[0]
        .rules
        .iter()
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(
        ids,
        vec![
            "a/stripe-payments/create_payment#0",
            "a/stripe-payments/create_payment#1"
        ]
    );

    // `*` after a catch-all for one action covers the remaining ones.
    let l = ok(&[
        ("catalog.yaml", CATALOG),
        (
            "a.yaml",
            "agent: a
egress: {allow_hosts: [api.stripe.com]}
allowed_tools:
  - {name: stripe-payments, actions: [refund], approval_needed: always}
  - {name: stripe-payments, actions: [\"*\"]}
",
        ),
    ]);
    let ids: Vec<&str> = l.policy.agents[0]
        .rules
        .iter()
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(
        ids,
        vec![
            "a/stripe-payments/refund#0",
            "a/stripe-payments/create_payment#0",
            "a/stripe-payments/get_customer#0",
        ]
    );

    // ...but a `*` entry with nothing left is unreachable.
    let e = one_error(
        "agent: a
egress: {allow_hosts: [api.stripe.com]}
allowed_tools:
  - {name: stripe-payments, actions: [\"*\"]}
  - {name: stripe-payments, actions: [\"*\"], when: {a: 1}}
",
    );
    assert_eq!(
        e.message(),
        "entry is unreachable: every action of `stripe-payments` is covered by earlier entries without `when`"
    );
    assert_eq!(at(&e), (5, 39));
}

#[test]
fn entry_action_list_errors() {
    let es = agent_errors(
        "agent: a
egress: {allow_hosts: [api.stripe.com, mcp.files.internal]}
allowed_tools:
  - {name: stripe-payments, actions: []}
  - {name: stripe-payments, actions: [\"*\", refund]}
  - {name: stripe-payments, actions: [refund, refund]}
  - {name: files, actions: [\"*\"]}
  - {name: stripe-payments}
",
    );
    let msgs: Vec<&str> = es.iter().map(Diagnostic::message).collect();
    assert_eq!(
        msgs,
        vec![
            "`actions` must not be empty",
            "`*` cannot be combined with other actions",
            "action `refund` is listed twice",
            "`*` needs the actions of `files`, but its catalog entry lists none",
            "missing key `actions` in an `allowed_tools` entry",
        ]
    );
}

#[test]
fn egress_warnings() {
    let l = ok(&[
        ("catalog.yaml", CATALOG),
        (
            "a.yaml",
            "agent: a
egress: {allow_hosts: [\"*.acme.internal\"]}
allowed_tools:
  - {name: stripe-payments, actions: [refund]}
  - {name: stripe-payments, actions: [create_payment]}
  - {name: deployer, actions: [deploy]}
",
        ),
    ]);
    assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
    let w = &l.warnings[0];
    assert_eq!(w.severity(), Severity::Warning);
    assert_eq!(
        w.message(),
        "tool `stripe-payments` is served by `api.stripe.com` which `egress.allow_hosts` does not cover: \
         calls to it will be denied"
    );
    assert_eq!(at(w), (4, 12));
    assert_eq!(
        w.help_text(),
        Some("add `api.stripe.com` to `egress.allow_hosts`")
    );
}

#[test]
fn identity_documents() {
    use ed25519_dalek::pkcs8::EncodePublicKey as _;
    use ed25519_dalek::SigningKey;
    let vk = SigningKey::from_bytes(&[7u8; 32]).verifying_key();
    let raw = vk.to_bytes();
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, raw);
    let pem = vk.to_public_key_pem(Default::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("k.pem"), &pem).unwrap();
    std::fs::write(dir.path().join("k.b64"), format!("{b64}\n")).unwrap();
    let pem_yaml = pem
        .lines()
        .map(|l| format!("      {l}"))
        .collect::<Vec<_>>()
        .join("\n");
    let id = format!(
        "kind: Identity
issuer: https://tokens.acme.internal
audience: aegis
keys:
  - {{kid: k1, public_key: \"{b64}\"}}
  - kid: k2
    public_key: |
{pem_yaml}
  - {{kid: k3, public_key_file: k.pem}}
  - {{kid: k4, public_key_file: k.b64}}
claims: {{agent: agent_id}}
max_token_age: 1h
clock_skew: 30s
"
    );
    let name = dir.path().join("identity.yaml").display().to_string();
    let l = ok(&[(&name, &id)]);
    let i = l.policy.identity.unwrap();
    assert_eq!(i.issuer, "https://tokens.acme.internal");
    assert_eq!(i.audience, "aegis");
    let kids: Vec<&str> = i.keys.iter().map(|k| k.kid.as_str()).collect();
    assert_eq!(kids, vec!["k1", "k2", "k3", "k4"]);
    assert!(i.keys.iter().all(|k| k.key == raw));
    assert_eq!(i.agent_claim, "agent_id");
    assert_eq!(i.tenant_claim, "tenant");
    assert_eq!(i.scope_claim, "scope");
    assert_eq!(i.max_age_secs, Some(3600));
    assert_eq!(i.skew_secs, 30);
    assert!(!i.insecure_agent_header);
    assert!(l.warnings.is_empty());

    // Demo mode: no keys needed, one loud warning, defaults.
    let l = ok(&[(
        "id.yaml",
        "kind: Identity\ninsecure_agent_header: true\nmax_token_age: 90\n",
    )]);
    let i = l.policy.identity.unwrap();
    assert!(i.insecure_agent_header);
    assert_eq!(
        (i.issuer.as_str(), i.audience.as_str(), i.keys.len()),
        ("", "", 0)
    );
    assert_eq!(i.skew_secs, 60);
    assert_eq!(i.max_age_secs, Some(90));
    assert_eq!(i.agent_claim, "sub");
    assert_eq!(l.warnings.len(), 1);
    assert_eq!(
        l.warnings[0].message(),
        "insecure_agent_header trusts the `x-aegis-agent` header without a token: for local demos only"
    );
    assert_eq!(at(&l.warnings[0]), (2, 1));
}

#[test]
fn identity_errors() {
    let es = errors_of(&[(
        "id.yaml",
        "kind: Identity
issuer: x
keys:
  - {kid: a, public_key: \"AAAA\"}
  - {kid: b, public_key: \"not base64!\"}
  - {kid: c, public_key_file: nope.pem}
  - {kid: d}
max_token_age: 1w
claims: {agnet: sub}
",
    )]);
    let msgs: Vec<&str> = es.iter().map(Diagnostic::message).collect();
    assert_eq!(msgs[0], "missing key `audience` in an identity document");
    assert_eq!(
        msgs[1],
        "invalid `public_key`: not an Ed25519 public key: decodes to 3 bytes, expected 32"
    );
    assert_eq!(
        msgs[2],
        "invalid `public_key`: not an Ed25519 public key: neither PEM nor base64"
    );
    assert!(msgs[3].starts_with("cannot read `nope.pem`"), "{}", msgs[3]);
    assert_eq!(msgs[4], "missing key `public_key` in a key");
    assert_eq!(msgs[5], "unknown key `agnet` in `claims`");
    assert_eq!(msgs[6], "invalid duration `1w` for `max_token_age`");
    assert_eq!(msgs.len(), 7);

    let id = "kind: Identity\ninsecure_agent_header: true\n";
    let es = errors_of(&[("a.yaml", id), ("b.yaml", id)]);
    assert_eq!(es.len(), 1);
    assert_eq!(es[0].message(), "a second identity document");
    assert_eq!(es[0].location(), Some(("b.yaml".to_owned(), 1, 1)));
    assert!(es[0].help_text().unwrap().contains("a.yaml:1:1"));
}

#[test]
fn token_header_names_where_the_token_comes() {
    let id = |extra: &str| format!("kind: Identity\ninsecure_agent_header: true\n{extra}");
    let l = ok(&[("id.yaml", &id(""))]);
    assert_eq!(l.policy.identity.unwrap().token_header, "authorization");
    let l = ok(&[("id.yaml", &id("token_header: X-Aegis-Token\n"))]);
    assert_eq!(l.policy.identity.unwrap().token_header, "x-aegis-token");

    for (value, message) in [
        (
            "x aegis",
            "`token_header` `x aegis` is not an http header name",
        ),
        (
            "Cookie",
            "`token_header` cannot be `cookie`: that header means something else on the way upstream",
        ),
        (
            "mcp-param-repo",
            "`token_header` cannot be `mcp-param-repo`: that header means something else on the way upstream",
        ),
    ] {
        let es = errors_of(&[("id.yaml", &id(&format!("token_header: {value}\n")))]);
        assert_eq!(es.len(), 1, "{value}");
        assert_eq!(es[0].message(), message);
        assert_eq!(es[0].location(), Some(("id.yaml".to_owned(), 3, 15)));
        assert!(es[0].help_text().is_some());
    }
}

#[test]
fn document_kind_errors() {
    let es = errors_of(&[(
        "x.yaml",
        "kind: ToolCatalogue\ntools: []\n---\nfoo: 1\n---\n- a\n",
    )]);
    let msgs: Vec<&str> = es.iter().map(Diagnostic::message).collect();
    assert_eq!(
        msgs,
        vec![
            "unknown document kind `ToolCatalogue`",
            "cannot tell what this document is",
            "a policy document must be a mapping, found a list",
        ]
    );
    assert!(es[0]
        .help_text()
        .unwrap()
        .starts_with("did you mean `ToolCatalog`?"));
    assert_eq!(at(&es[1]), (4, 1));
}

#[test]
fn all_errors_of_a_run_are_collected() {
    let es = errors_of(&[
        ("catalog.yaml", CATALOG),
        (
            "a.yaml",
            "agent: a
mode: loud
egress: {allow_hosts: [api.stripe.com]}
allowed_tools:
  - {name: nope, actions: [x]}
  - {name: stripe-payments, actions: [nope]}
",
        ),
        ("b.yaml", "agent: b\nbudget: {daily_usd: -1}\n"),
    ]);
    let msgs: Vec<&str> = es.iter().map(Diagnostic::message).collect();
    assert_eq!(
        msgs,
        vec![
            "invalid `mode` `loud`",
            "unknown tool `nope`",
            "unknown action `nope` for tool `stripe-payments`",
            "`daily_usd` must be greater than zero, found `-1`",
        ]
    );
}

#[test]
fn load_from_directories() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("agents/finance")).unwrap();
    std::fs::create_dir_all(root.join(".hidden")).unwrap();
    std::fs::write(root.join("catalog.yml"), CATALOG).unwrap();
    std::fs::write(root.join("agents/finance/seed.yaml"), SEED).unwrap();
    std::fs::write(
        root.join("agents/finance/seed.cases.yaml"),
        "- not: a policy\n",
    )
    .unwrap();
    std::fs::write(root.join("agents/notes.txt"), "ignored").unwrap();
    std::fs::write(root.join(".hidden/x.yaml"), "garbage: [").unwrap();

    let l = load(&[root.to_path_buf()], None).unwrap();
    assert_eq!(l.policy.agents.len(), 1);
    assert_eq!(l.policy.version.len(), 12);
    assert!(l.policy.version.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(
        l.policy.version,
        content_version(&[
            ("agents/finance/seed.yaml".to_owned(), SEED),
            ("catalog.yml".to_owned(), CATALOG)
        ])
    );
    // Same content elsewhere: same version.
    let other = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(other.path().join("agents/finance")).unwrap();
    std::fs::write(other.path().join("catalog.yml"), CATALOG).unwrap();
    std::fs::write(other.path().join("agents/finance/seed.yaml"), SEED).unwrap();
    assert_eq!(
        load(&[other.path().to_path_buf()], None)
            .unwrap()
            .policy
            .version,
        l.policy.version
    );
    // Any change changes it.
    std::fs::write(
        other.path().join("agents/finance/seed.yaml"),
        format!("{SEED}\n"),
    )
    .unwrap();
    assert_ne!(
        load(&[other.path().to_path_buf()], None)
            .unwrap()
            .policy
            .version,
        l.policy.version
    );

    // Files given directly (a cases file among them, as a shell glob would
    // pass it), the override, and a file named twice.
    let l = load(
        &[
            root.join("catalog.yml"),
            root.join("agents/finance/seed.yaml"),
            root.join("agents/finance/seed.cases.yaml"),
            root.to_path_buf(),
        ],
        Some("v42"),
    )
    .unwrap();
    assert_eq!(l.policy.version, "v42");
    assert_eq!(l.policy.tools.len(), 4);

    // Diagnostics name the file as found.
    std::fs::write(root.join("agents/bad.yaml"), "agent: x\nmode: loud\n").unwrap();
    let es = load(&[root.to_path_buf()], None).unwrap_err();
    let e = es.iter().find(|d| d.is_error()).unwrap();
    assert_eq!(
        e.location().unwrap().0,
        root.join("agents/bad.yaml").display().to_string()
    );

    let es = load(&[root.join("missing")], None).unwrap_err();
    assert!(es[0].message().starts_with("cannot read"));
    let empty = tempfile::tempdir().unwrap();
    let es = load(&[empty.path().to_path_buf()], None).unwrap_err();
    assert!(es[0].message().starts_with("no policy files found in"));
}

#[test]
fn json_form() {
    let e = one_error("agent: a\negress: {allow_hosts: [api.stripe.com]}\nallowed_tool: []\n");
    let j = to_json(&e);
    assert_eq!(j["severity"], "error");
    assert_eq!(
        j["message"],
        "unknown key `allowed_tool` in an agent policy"
    );
    assert_eq!(j["file"], "agent.yaml");
    assert_eq!(j["line"], 3);
    assert_eq!(j["column"], 1);
    assert!(j["help"].as_str().unwrap().starts_with("did you mean"));
    let bare = Diagnostic::bare(Severity::Error, "cannot read `x`");
    let j = to_json(&bare);
    assert!(j["file"].is_null() && j["line"].is_null() && j["help"].is_null());
    assert!(render(&bare).contains("cannot read `x`"));
    assert_eq!(bare.location(), None);
}

#[test]
fn is_a_miette_diagnostic() {
    let e = one_error("agent: a\negress: {allow_hosts: [api.stripe.com]}\nallowed_tool: []\n");
    let m: &dyn miette::Diagnostic = &e;
    assert_eq!(m.severity(), Some(miette::Severity::Error));
    assert!(m.source_code().is_some());
    assert_eq!(m.labels().unwrap().count(), 1);
    let as_error: &dyn std::error::Error = &e;
    assert_eq!(
        as_error.to_string(),
        "unknown key `allowed_tool` in an agent policy"
    );
}

#[test]
fn snapshot_unknown_key() {
    let e = one_error(
        "agent: a
egress: {allow_hosts: [api.stripe.com]}
allowed_tools:
  - name: stripe-payments
    actions: [create_payment]
    conditons:
      max_amount: 5000
",
    );
    insta::assert_snapshot!(render(&e));
}

#[test]
fn snapshot_unknown_action() {
    let e = one_error(
        "agent: a
egress: {allow_hosts: [api.stripe.com]}
allowed_tools:
  - name: stripe-payments
    actions: [create_payment, refnd]
",
    );
    insta::assert_snapshot!(render(&e));
}

#[test]
fn snapshot_unreachable() {
    let e = one_error(
        "agent: a
egress: {allow_hosts: [api.stripe.com]}
allowed_tools:
  - name: stripe-payments
    actions: [create_payment]
  - name: stripe-payments
    actions: [create_payment]
    when: {currency: usd}
",
    );
    insta::assert_snapshot!(render(&e));
}

#[test]
fn snapshot_bad_regex() {
    let e = one_error(
        "agent: a
egress: {allow_hosts: [api.stripe.com]}
allowed_tools:
  - name: stripe-payments
    actions: [create_payment]
    conditions:
      description: {matches: \"[a-z\"}
",
    );
    insta::assert_snapshot!(render(&e));
}

#[test]
fn snapshot_warning() {
    let l = ok(&[("catalog.yaml", CATALOG), ("seed.yaml", SEED)]);
    insta::assert_snapshot!(render(&l.warnings[0]));
}

#[test]
fn compiled_ir_builds_a_bundle() {
    // The IR the front-end emits must be accepted by the engine's builder.
    let l = ok(&[
        ("catalog.yaml", CATALOG),
        ("full.yaml", FULL),
        ("seed.yaml", SEED),
    ]);
    let opts = aegis_engine::builder::bundle::BuildOptions::default();
    let bytes = aegis_engine::builder::bundle::compile(&l.policy, &opts, None);
    assert!(bytes.is_ok(), "{:?}", bytes.err());
}

#[test]
#[ignore = "timing probe, run by hand"]
fn thousand_agents_timing() {
    let mut text = String::new();
    for i in 0..1000 {
        text.push_str(&format!(
            "---\nagent: agent-{i}\ntenant: t{}\negress: {{allow_hosts: [api.stripe.com]}}\ndlp: {{detectors: [ssn, email]}}\nallowed_tools:\n  - name: stripe-payments\n    actions: [create_payment]\n    conditions:\n      max_amount: {i}\n      currency: {{in: [usd, eur]}}\n      description: {{matches: \"^[A-Za-z0-9 .,-]{{0,140}}$\"}}\n      memo: {{not_matches: \"secret-{}\"}}\n  - name: stripe-payments\n    actions: [\"*\"]\n    when: {{customer: cus_{i}}}\n",
            i % 7,
            i % 10
        ));
    }
    let t = std::time::Instant::now();
    let l = ok(&[("catalog.yaml", CATALOG), ("many.yaml", &text)]);
    eprintln!(
        "1000 agents: {:?}, {} rules",
        t.elapsed(),
        l.policy.agents.iter().map(|a| a.rules.len()).sum::<usize>()
    );
}

#[test]
fn limits_document() {
    use aegis_engine::Limits;
    let l = ok(&[(
        "l.yaml",
        "kind: Limits\nmax_body_bytes: 4096\nmax_json_depth: 8\nmax_params: 64\n",
    )]);
    assert_eq!(
        l.policy.limits,
        Limits {
            max_body_bytes: 4096,
            max_json_depth: 8,
            max_params: 64
        }
    );
    // Every key optional; no document: the defaults.
    let l = ok(&[("l.yaml", "kind: Limits\nmax_json_depth: 4\n")]);
    assert_eq!(
        l.policy.limits,
        Limits {
            max_json_depth: 4,
            ..Limits::default()
        }
    );
    let seed = ok(&[("catalog.yaml", CATALOG), ("seed.yaml", SEED)]);
    assert_eq!(seed.policy.limits, Limits::default());

    let es = errors_of(&[(
        "l.yaml",
        "kind: Limits\nmax_json_depth: 500\nmax_params: 0\nmax_body: 1\n",
    )]);
    let msgs: Vec<&str> = es.iter().map(Diagnostic::message).collect();
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    assert!(msgs.contains(&"`max_json_depth` must be a whole number from 1 to 128"));
    assert!(msgs.contains(&"`max_params` must be a whole number from 1 to 65536"));
    assert!(msgs.iter().any(|m| m.contains("max_body")), "{msgs:?}");
    let d = es
        .iter()
        .find(|d| d.message().starts_with("`max_json_depth`"))
        .unwrap();
    assert_eq!(d.location(), Some(("l.yaml".to_owned(), 2, 17)));
    assert_eq!(d.help_text().unwrap(), "the default is 32");

    let l = "kind: Limits\n";
    let es = errors_of(&[("a.yaml", l), ("b.yaml", l)]);
    assert_eq!(es.len(), 1);
    assert_eq!(es[0].message(), "a second limits document");
}

#[test]
fn tool_encodings() {
    let cat = |enc: &str| {
        format!(
            "kind: ToolCatalog\ntools:\n  - name: notes\n    hosts: [notes.example]\n    encodings: {enc}\n    actions: [{{name: create, method: POST, path: /notes}}]\n"
        )
    };
    let l = ok(&[("c.yaml", &cat("[gzip]"))]);
    assert!(l.policy.tools[0].gzip);
    let l = ok(&[("c.yaml", &cat("[]"))]);
    assert!(!l.policy.tools[0].gzip);
    let es = errors_of(&[("c.yaml", &cat("[br]"))]);
    assert_eq!(es.len(), 1);
    assert!(es[0].message().contains("br"), "{}", es[0].message());
    assert_eq!(es[0].location(), Some(("c.yaml".to_owned(), 5, 17)));
}

#[test]
fn an_mcp_server_may_turn_tools_list_filtering_off() {
    let catalog = "kind: ToolCatalog
tools:
  - name: files
    mcp: {hosts: [mcp.files.internal]}
    actions: [read_file]
  - name: open
    mcp: {hosts: [mcp.open.internal], filter_tools_list: false}
    actions: [read_file]
  - name: stripe
    hosts: [api.stripe.com]
    actions: [{name: pay, method: POST, path: /v1/pay}]
";
    let l = ok(&[("catalog.yaml", catalog)]);
    let filters: Vec<bool> = l.policy.tools.iter().map(|t| t.filter_tools_list).collect();
    assert_eq!(filters, [true, false, false]);

    let bad = "kind: ToolCatalog
tools:
  - name: files
    mcp: {hosts: [mcp.files.internal], filter_tools_list: sometimes}
    actions: [read_file]
";
    let es = errors_of(&[("catalog.yaml", bad)]);
    assert_eq!(es.len(), 1);
    assert!(
        es[0].message().contains("mcp.filter_tools_list"),
        "{}",
        es[0].message()
    );
    assert_eq!(at(&es[0]), (4, 59));
}
