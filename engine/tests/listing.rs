//! `tools/list` filtering: which decisions get their answer filtered, and
//! how each listed tool is shown to the agent.

// Test helpers outside `#[test]` fns fall outside clippy's in-test allowances.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use aegis_engine::builder::bundle::{compile, BuildOptions};
use aegis_engine::ir::{
    Action, Agent, Approval, BodyKind, Mode, Op, Policy, Predicate, Rule, Tool,
};
use aegis_engine::jwt::IdentityConfig;
use aegis_engine::{Bundle, Caller, Decision, Listing, Request, Scratch, Verdict};

fn mcp_tool(name: &str, host: &str, actions: &[&str], filter: bool) -> Tool {
    Tool {
        name: name.into(),
        hosts: vec![host.into()],
        body: BodyKind::Json,
        mcp_path: Some("/mcp".into()),
        gzip: false,
        filter_tools_list: filter,
        actions: actions
            .iter()
            .map(|n| Action {
                name: (*n).into(),
                method: None,
                path: None,
                write: false,
            })
            .collect(),
    }
}

fn rule(agent: &str, tool: usize, action: usize, approval: Approval, conds: bool) -> Rule {
    Rule {
        id: format!("{agent}/{tool}/{action}"),
        tool,
        action,
        when: vec![],
        conditions: if conds {
            vec![Predicate {
                param: "days".into(),
                op: Op::Le(7.0),
            }]
        } else {
            vec![]
        },
        approval,
        cost_usd: None,
    }
}

fn agent(id: &str, mode: Mode, rules: Vec<Rule>) -> Agent {
    Agent {
        id: id.into(),
        name: id.into(),
        tenant: None,
        mode,
        allow_hosts: Some(vec!["mcp.acme.internal".into(), "mcp.open.internal".into()]),
        budget: None,
        dlp: None,
        rules,
    }
}

/// `ops` calls `get_weather`, `forecast` (conditions; approval when they
/// fail), `deploy` (approval always) and reads resources; `shadow` is in
/// shadow mode; the second server does not filter its lists.
fn bundle() -> Bundle {
    use Approval::*;
    let p = Policy {
        version: "listing-1".into(),
        identity: Some(IdentityConfig {
            issuer: "https://tokens.acme.test".into(),
            audience: "aegis".into(),
            keys: vec![],
            agent_claim: "sub".into(),
            tenant_claim: "tenant".into(),
            scope_claim: "scope".into(),
            max_age_secs: None,
            skew_secs: 60,
            insecure_agent_header: true,
            token_header: "authorization".into(),
        }),
        tools: vec![
            mcp_tool(
                "weather",
                "mcp.acme.internal",
                &[
                    "get_weather",
                    "forecast",
                    "deploy",
                    "delete_repo",
                    "resources/read",
                ],
                true,
            ),
            mcp_tool(
                "open",
                "mcp.open.internal",
                &["get_weather", "delete_repo"],
                false,
            ),
        ],
        agents: vec![
            agent(
                "ops",
                Mode::Enforce,
                vec![
                    rule("ops", 0, 0, Never, false),
                    rule("ops", 0, 1, OnFailure, true),
                    rule("ops", 0, 2, Always, false),
                    rule("ops", 0, 4, Never, false),
                    rule("ops", 1, 0, Never, false),
                ],
            ),
            agent(
                "shadow",
                Mode::Shadow,
                vec![rule("shadow", 0, 0, Never, false)],
            ),
        ],
        limits: Default::default(),
    };
    let bytes = compile(&p, &BuildOptions::default(), None).expect("compile");
    Bundle::load(&bytes, &[]).expect("load")
}

fn decide<'a>(
    b: &'a Bundle,
    agent: &'a str,
    host: &'a str,
    body: &'a [u8],
    s: &mut Scratch,
) -> Decision<'a> {
    let headers: &[(&str, &str)] = &[("content-type", "application/json")];
    let req = Request {
        method: "POST",
        authority: host,
        path: "/mcp",
        headers,
        body: Some(body),
    };
    b.decide(
        &req,
        Caller::Given {
            agent,
            tenant: None,
        },
        0,
        s,
    )
}

const LIST: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#;

#[test]
fn an_agents_tools_list_is_filtered_to_what_it_may_call() {
    let b = bundle();
    let mut s = Scratch::new();
    let d = decide(&b, "ops", "mcp.acme.internal", LIST, &mut s);
    assert_eq!(d.verdict, Verdict::Allow, "{}", d.reason);
    let list = b.tools_list(&d).expect("a tools/list to filter");
    for (name, want) in [
        ("get_weather", Listing::Callable),
        ("forecast", Listing::Callable),
        ("deploy", Listing::NeedsApproval),
        ("delete_repo", Listing::Hidden),
        ("not_in_the_catalog", Listing::Hidden),
        // A method the catalog governs is not a tool, whatever its name.
        ("resources/read", Listing::Hidden),
        ("GET_WEATHER", Listing::Hidden),
    ] {
        assert_eq!(b.listing(list, name), want, "{name}");
    }
}

#[test]
fn only_allowed_tools_list_requests_of_enforced_agents_are_filtered() {
    let b = bundle();
    let mut s = Scratch::new();
    let call = br#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_weather","arguments":{}}}"#;
    let d = decide(&b, "ops", "mcp.acme.internal", call, &mut s);
    assert_eq!(d.verdict, Verdict::Allow, "{}", d.reason);
    assert_eq!(b.tools_list(&d), None);
    let init = br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}"#;
    let d = decide(&b, "ops", "mcp.acme.internal", init, &mut s);
    assert_eq!(b.tools_list(&d), None);
    // Shadow mode enforces nothing, lists included.
    let d = decide(&b, "shadow", "mcp.acme.internal", LIST, &mut s);
    assert_eq!(d.verdict, Verdict::Allow, "{}", d.reason);
    assert_eq!(b.tools_list(&d), None);
    // `filter_tools_list: false` in the catalog.
    let d = decide(&b, "ops", "mcp.open.internal", LIST, &mut s);
    assert_eq!(d.verdict, Verdict::Allow, "{}", d.reason);
    assert_eq!(b.tools_list(&d), None);
    // A refused list request has no answer to filter.
    let d = decide(&b, "nobody", "mcp.acme.internal", LIST, &mut s);
    assert_eq!(d.verdict, Verdict::Deny);
    assert_eq!(b.tools_list(&d), None);
}
