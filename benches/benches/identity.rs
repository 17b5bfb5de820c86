//! What naming the agent costs in a decision (native engine): the
//! production-shape MCP call (1 KB `tools/call`, allowed) with the agent
//! named by a header, by an EdDSA token found in the verified-token cache
//! (a hit), and by a token verified every time (the cache off: a miss);
//! and `jwt::verify` alone.
//!
//! Run: `cargo bench -p aegis-benches --bench identity`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use aegis_benches::{compile_sources, mcp_call, mcp_sources, mcp_token, McpIdentity};
use aegis_engine::jwt::{self, TokenCacheConfig, VerifyingKeys};
use aegis_engine::{Bundle, Caller, Request, Scratch, Verdict};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ed25519_dalek::SigningKey;
use std::time::Duration;

const NOW: i64 = 1_750_000_000;

fn bench(c: &mut Criterion) {
    let key = SigningKey::from_bytes(&[5; 32]);
    let token = mcp_token(&key, NOW, 3600);
    let bearer = format!("Bearer {token}");
    let body = mcp_call(1024, "get_weather");
    let by_header = Bundle::load(&compile_sources(&mcp_sources(McpIdentity::Header)), &[]).unwrap();
    let by_token = Bundle::load(
        &compile_sources(&mcp_sources(McpIdentity::Token(
            key.verifying_key().to_bytes(),
        ))),
        &[],
    )
    .unwrap();
    let mut g = c.benchmark_group("identity");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(50);
    for (name, bundle, cache, who) in [
        (
            "mcp_call/header",
            &by_header,
            TokenCacheConfig::OFF,
            ("x-aegis-agent", "mcp-agent"),
        ),
        (
            "mcp_call/jwt_hit",
            &by_token,
            TokenCacheConfig::DEFAULT,
            ("authorization", bearer.as_str()),
        ),
        (
            "mcp_call/jwt_miss",
            &by_token,
            TokenCacheConfig::OFF,
            ("authorization", bearer.as_str()),
        ),
    ] {
        let headers = [
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "get_weather"),
            who,
        ];
        let req = Request {
            method: "POST",
            authority: "mcp.acme.internal",
            path: "/mcp",
            headers: &headers[..],
            body: Some(&body),
        };
        let mut scratch = Scratch::for_bundle_with(bundle, cache);
        let d = bundle.decide(&req, Caller::FromRequest, NOW, &mut scratch);
        assert_eq!(d.verdict, Verdict::Allow, "{name}: {}", d.reason);
        g.bench_function(name, |b| {
            b.iter(|| {
                bundle
                    .decide(black_box(&req), Caller::FromRequest, NOW, &mut scratch)
                    .verdict
            })
        });
    }
    let cfg = by_token.model.identity.clone().unwrap();
    let keys = VerifyingKeys::new(&cfg).unwrap();
    jwt::verify(token.as_bytes(), &cfg, &keys, NOW).unwrap();
    g.bench_function("jwt_verify", |b| {
        b.iter(|| jwt::verify(black_box(token.as_bytes()), &cfg, &keys, NOW).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
