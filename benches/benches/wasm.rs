//! The decisions of the `decision` bench, inside the built filter `.wasm`
//! under wasmtime (Cranelift), through the proxy-wasm callbacks with the
//! host calls of the `host-tests` host: one whole request per iteration
//! (headers held, body in one chunk). Set against the native numbers, the
//! ratio is what the wasm runtime and the proxy-wasm round trips add to the
//! engine. Wasmtime is not Envoy's V8, so the absolute times are an
//! estimate of the in-proxy cost, not a measurement of it.
//!
//! Run: `cargo bench -p aegis-benches --bench wasm`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use aegis_benches::{
    allowed_request, fail, generated_policy, ledger_entry, load, mcp_call, mcp_sources, mcp_token,
    sorted_agent_ids, McpIdentity, FINANCE_CATALOG, FINANCE_PAYMENTS, LEDGER_IDENTITY,
    LEDGER_POLICY,
};
use aegis_compiler::package::blob::{build_signed, generic_filter};
use aegis_host_tests::{Compiler, Host, HttpRequest, Plugin, PluginOptions};
use base64::Engine as _;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ed25519_dalek::SigningKey;

struct Case {
    name: String,
    plugin: Plugin,
    req: HttpRequest,
    body: Vec<u8>,
    expect: &'static str,
}

fn plugin(sources: &[(String, String)]) -> Plugin {
    let mut sources = sources.to_vec();
    // Requests name their agent in a header: the identity step stays as
    // cheap as `Caller::Given` in the native bench.
    sources.push((
        "identity.yaml".into(),
        "kind: Identity\ninsecure_agent_header: true\n".into(),
    ));
    plugin_from(&sources)
}

/// The generic filter `aegis` carries, or the module in
/// `AEGIS_BENCH_FILTER` (a filter built otherwise, e.g. with another
/// curve25519 backend: `benches/README.md`).
fn filter_module() -> Vec<u8> {
    match std::env::var_os("AEGIS_BENCH_FILTER") {
        Some(path) => std::fs::read(&path).unwrap_or_else(|e| fail(&format!("{path:?}: {e}"))),
        None => generic_filter().unwrap().to_vec(),
    }
}

/// The built, signed filter with `sources` (which name the identity).
fn plugin_from(sources: &[(String, String)]) -> Plugin {
    plugin_configured(sources, "")
}

/// [`plugin_from`] with more keys of the plugin configuration (`extra`:
/// `"key": value, ...`).
fn plugin_configured(sources: &[(String, String)], extra: &str) -> Plugin {
    let loaded = load(sources);
    let key = SigningKey::from_bytes(&[7; 32]);
    let blob = build_signed(&loaded.policy, &key, &filter_module(), 0).unwrap();
    let host = Host::with_compiler(&blob.wasm, Compiler::Cranelift).unwrap();
    let pubkey = base64::engine::general_purpose::STANDARD.encode(key.verifying_key().to_bytes());
    let config = format!(
        r#"{{"trusted_keys": ["{pubkey}"], "allow_on_headers_stop_iteration": true{}{extra}}}"#,
        if extra.is_empty() { "" } else { ", " }
    );
    host.plugin_with(PluginOptions::new(&config)).unwrap()
}

fn cases() -> Vec<Case> {
    let (sources, _) = generated_policy(1000, true);
    let loaded = load(&sources);
    let ids = sorted_agent_ids(&loaded.policy);
    let mid = ids.len() / 2;
    let mut out = Vec::new();
    // Agent i has DLP set i % 4 (0: default detectors, 1: three, else none).
    for (label, idx, suffix, expect) in [
        ("mid_default_dlp", mid, "", "allow"),
        ("mid_no_dlp", mid + 2, "", "allow"),
        ("mid_unknown_route_deny", mid + 2, "/not-a-route", "deny"),
    ] {
        let agent = &ids[idx];
        let r = allowed_request(&loaded.policy, agent);
        let req = HttpRequest::new(
            &r.method,
            &format!("https://{}{}{suffix}", r.authority, r.path),
        )
        .header("x-aegis-agent", agent)
        .header("content-type", "application/json")
        .header("content-length", &r.body.len().to_string());
        out.push(Case {
            name: format!("1000_agents/{label}"),
            plugin: plugin(&sources),
            req,
            body: r.body,
            expect,
        });
    }
    // The Envoy load benchmark's request (`benches/envoy/`): the ledger
    // tool, 1 KB JSON bodies with and without PII, the header set Envoy
    // hands the filter there.
    let sources: Vec<(String, String)> = [
        ("catalog.yaml", FINANCE_CATALOG),
        ("payments.yaml", FINANCE_PAYMENTS),
        ("ledger.yaml", LEDGER_POLICY),
        ("identity.yaml", LEDGER_IDENTITY),
    ]
    .iter()
    .map(|(n, t)| (n.to_string(), t.to_string()))
    .collect();
    for (label, pii, expect) in [("clean", false, "allow"), ("pii", true, "sanitize")] {
        let body = ledger_entry(1024, pii);
        assert_eq!(body.len(), 1024);
        let req = HttpRequest::new("POST", "http://ledger.acme.internal/v1/journal_entries")
            .header("user-agent", "oha/1.16.0")
            .header("accept", "*/*")
            .header("x-aegis-agent", "bookkeeping-agent")
            .header("content-type", "application/json")
            .header("content-length", &body.len().to_string())
            .header("x-forwarded-proto", "http")
            .header("x-request-id", "6f1c0b3e-3f0a-4d51-9c55-2b7d2f0e8a41");
        out.push(Case {
            name: format!("envoy_ledger/1KB_{label}"),
            plugin: plugin_from(&sources),
            req,
            body,
            expect,
        });
    }
    // The production shape: a 1 KB MCP `tools/call` with the agent named
    // by a header, by a token found in the verified-token cache, and by a
    // token verified on every request (the cache off).
    let key = SigningKey::from_bytes(&[5; 32]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let bearer = format!("Bearer {}", mcp_token(&key, now, 24 * 3600));
    let by_header = mcp_sources(McpIdentity::Header);
    let by_token = mcp_sources(McpIdentity::Token(key.verifying_key().to_bytes()));
    for (label, sources, extra, who, tool, expect) in [
        (
            "call_header",
            &by_header,
            "",
            ("x-aegis-agent", "mcp-agent"),
            "get_weather",
            "allow",
        ),
        (
            "call_jwt_hit",
            &by_token,
            "",
            ("authorization", bearer.as_str()),
            "get_weather",
            "allow",
        ),
        (
            "call_jwt_miss",
            &by_token,
            r#""token_cache": {"entries": 0}"#,
            ("authorization", bearer.as_str()),
            "get_weather",
            "allow",
        ),
        (
            "denied_call_jwt_hit",
            &by_token,
            "",
            ("authorization", bearer.as_str()),
            "delete_repo",
            "deny",
        ),
    ] {
        let body = mcp_call(1024, tool);
        let req = HttpRequest::new("POST", "http://mcp.acme.internal/mcp")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", tool)
            .header("mcp-session-id", "3f6a9c1e2b7d4e08")
            .header(who.0, who.1)
            .header("content-length", &body.len().to_string())
            .header("x-forwarded-proto", "http")
            .header("x-request-id", "6f1c0b3e-3f0a-4d51-9c55-2b7d2f0e8a41");
        out.push(Case {
            name: format!("mcp/1KB_{label}"),
            plugin: plugin_configured(sources, extra),
            req,
            body,
            expect,
        });
    }
    out
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("wasm_decision");
    for mut case in cases() {
        let o = case.plugin.request(&case.req, &[&case.body]).unwrap();
        assert_eq!(
            o.decision().as_deref(),
            Some(case.expect),
            "{}: {:?}",
            case.name,
            o.property("wasm.aegis_reason")
        );
        let (req, body) = (&case.req, case.body.as_slice());
        let plugin = &mut case.plugin;
        g.bench_function(case.name.as_str(), |b| {
            b.iter(|| black_box(plugin.request(black_box(req), &[body]).unwrap()))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
