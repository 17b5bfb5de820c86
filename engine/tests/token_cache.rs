//! The verified-token cache seen through `Bundle::decide`: a decision with
//! the cache is the decision without it, whatever the clock, the keys, the
//! audience or the traffic does.

// Test helpers outside `#[test]` fns fall outside clippy's in-test allowances.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use aegis_engine::builder::bundle::{compile, BuildOptions};
use aegis_engine::ir::{Action, Agent, Approval, BodyKind, Mode, Policy, Rule, Tool};
use aegis_engine::jwt::{CacheStats, IdentityConfig, TokenCacheConfig, TrustedKey};
use aegis_engine::{Bundle, Caller, Request, Scratch, Verdict};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use proptest::prelude::*;
use std::sync::LazyLock;

const NOW: i64 = 1_700_000_000;
const ISS: &str = "https://tokens.acme.test";
const AUD: &str = "aegis";

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

/// One MCP server with `get_weather` (allowed) and `delete_repo`; agent
/// `weather-agent`; tokens checked against `audience` and the keys named.
fn policy(audience: &str, keys: &[(&str, u8)], max_age_secs: Option<u64>) -> Bundle {
    let p = Policy {
        version: "token-cache-1".into(),
        identity: Some(IdentityConfig {
            issuer: ISS.into(),
            audience: audience.into(),
            keys: keys
                .iter()
                .map(|(kid, n)| TrustedKey {
                    kid: (*kid).into(),
                    key: key(*n).verifying_key().to_bytes(),
                })
                .collect(),
            agent_claim: "sub".into(),
            tenant_claim: "tenant".into(),
            scope_claim: "scope".into(),
            max_age_secs,
            skew_secs: 60,
            insecure_agent_header: false,
            token_header: "authorization".into(),
        }),
        tools: vec![Tool {
            name: "weather".into(),
            hosts: vec!["mcp.acme.internal".into()],
            body: BodyKind::Json,
            mcp_path: Some("/mcp".into()),
            gzip: false,
            filter_tools_list: true,
            actions: ["get_weather", "delete_repo"]
                .iter()
                .map(|n| Action {
                    name: (*n).into(),
                    method: None,
                    path: None,
                    write: false,
                })
                .collect(),
        }],
        agents: vec![Agent {
            id: "weather-agent".into(),
            name: "weather-agent".into(),
            tenant: None,
            mode: Mode::Enforce,
            allow_hosts: Some(vec!["mcp.acme.internal".into()]),
            budget: None,
            dlp: None,
            rules: vec![Rule {
                id: "weather-agent/weather/get_weather#0".into(),
                tool: 0,
                action: 0,
                when: vec![],
                conditions: vec![],
                approval: Approval::Never,
                cost_usd: None,
            }],
        }],
        limits: Default::default(),
    };
    let bytes = compile(&p, &BuildOptions::default(), None).expect("compile");
    Bundle::load(&bytes, &[]).expect("load")
}

static K1: LazyLock<Bundle> = LazyLock::new(|| policy(AUD, &[("k1", 1)], None));

struct Claims<'a> {
    kid: &'a str,
    key: u8,
    sub: &'a str,
    aud: &'a str,
    iat: i64,
    nbf: i64,
    exp: i64,
    jti: u32,
}

impl Default for Claims<'_> {
    fn default() -> Self {
        Claims {
            kid: "k1",
            key: 1,
            sub: "weather-agent",
            aud: AUD,
            iat: NOW - 10,
            nbf: NOW - 10,
            exp: NOW + 300,
            jti: 0,
        }
    }
}

fn token(c: &Claims<'_>) -> String {
    let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": c.kid}).to_string();
    let claims = serde_json::json!({
        "iss": ISS, "aud": c.aud, "sub": c.sub, "iat": c.iat, "nbf": c.nbf, "exp": c.exp,
        "jti": format!("t-{}", c.jti),
    })
    .to_string();
    let signed = format!("{}.{}", B64.encode(header), B64.encode(claims));
    let sig = key(c.key).sign(signed.as_bytes());
    format!("{signed}.{}", B64.encode(sig.to_bytes()))
}

const CALL: &[u8] =
    br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"get_weather","arguments":{"city":"Oslo"}}}"#;

/// The verdict and reason of an MCP `get_weather` call with `token` at
/// `now`.
fn decide(b: &Bundle, token: &str, now: i64, scratch: &mut Scratch) -> (Verdict, String) {
    let bearer = format!("Bearer {token}");
    let headers = [
        ("content-type", "application/json"),
        ("authorization", bearer.as_str()),
    ];
    let req = Request {
        method: "POST",
        authority: "mcp.acme.internal",
        path: "/mcp",
        headers: &headers[..],
        body: Some(CALL),
    };
    let d = b.decide(&req, Caller::FromRequest, now, scratch);
    (d.verdict, d.reason.to_string())
}

/// The same decision with no cache.
fn uncached(b: &Bundle, token: &str, now: i64) -> (Verdict, String) {
    decide(
        b,
        token,
        now,
        &mut Scratch::for_bundle_with(b, TokenCacheConfig::OFF),
    )
}

fn stats(s: &Scratch) -> CacheStats {
    s.tokens.stats()
}

#[test]
fn a_token_is_verified_once_and_then_found() {
    let mut s = Scratch::for_bundle(&K1);
    assert_eq!(s.tokens.capacity(), TokenCacheConfig::DEFAULT.entries);
    let t = token(&Claims::default());
    for _ in 0..3 {
        assert_eq!(decide(&K1, &t, NOW, &mut s).0, Verdict::Allow);
    }
    assert_eq!((stats(&s).misses, stats(&s).hits), (1, 2));
    assert_eq!(s.tokens.len(), 1);
}

#[test]
fn no_cache_for_bundles_that_trust_headers() {
    let mut p = policy(AUD, &[("k1", 1)], None);
    if let Some(id) = p.model.identity.as_mut() {
        id.insecure_agent_header = true;
    }
    assert_eq!(Scratch::for_bundle(&p).tokens.capacity(), 0);
}

#[test]
fn a_token_expires_while_it_is_cached() {
    let mut s = Scratch::for_bundle(&K1);
    let t = token(&Claims::default()); // exp NOW + 300, 60 s of skew
    assert_eq!(decide(&K1, &t, NOW, &mut s).0, Verdict::Allow);
    assert_eq!(decide(&K1, &t, NOW + 360, &mut s).0, Verdict::Allow);
    let late = decide(&K1, &t, NOW + 361, &mut s);
    assert_eq!(
        late,
        (Verdict::Deny, "invalid agent token: token expired".into())
    );
    assert_eq!(late, uncached(&K1, &t, NOW + 361));
    assert_eq!(stats(&s).expired, 1);
    // Dropped: later tries verify again, and are refused again.
    assert_eq!(decide(&K1, &t, NOW + 362, &mut s), late);
    assert!(s.tokens.is_empty());
}

#[test]
fn max_age_and_not_before_are_judged_on_hits() {
    let b = policy(AUD, &[("k1", 1)], Some(100));
    let mut s = Scratch::for_bundle(&b);
    let t = token(&Claims {
        iat: NOW,
        nbf: NOW,
        exp: NOW + 3600,
        ..Claims::default()
    });
    assert_eq!(decide(&b, &t, NOW, &mut s).0, Verdict::Allow);
    let old = decide(&b, &t, NOW + 101, &mut s);
    assert_eq!(
        old,
        (
            Verdict::Deny,
            "invalid agent token: token is too old".into()
        )
    );
    assert_eq!(old, uncached(&b, &t, NOW + 101));
    // A clock that steps back before `nbf` - skew.
    assert_eq!(decide(&b, &t, NOW, &mut s).0, Verdict::Allow);
    assert_eq!(decide(&b, &t, NOW - 61, &mut s), uncached(&b, &t, NOW - 61));
    assert_eq!(decide(&b, &t, NOW - 61, &mut s).0, Verdict::Deny);
}

#[test]
fn a_rotated_key_is_never_found_again() {
    let mut s = Scratch::for_bundle(&K1);
    let t = token(&Claims::default());
    assert_eq!(decide(&K1, &t, NOW, &mut s).0, Verdict::Allow);
    assert_eq!(decide(&K1, &t, NOW, &mut s).0, Verdict::Allow);
    // The next policy trusts only k2: the scratch (and its cache) of the
    // old one is handed the new bundle.
    let k2 = policy(AUD, &[("k2", 2)], None);
    let d = decide(&k2, &t, NOW, &mut s);
    assert_eq!(
        d,
        (
            Verdict::Deny,
            "invalid agent token: token key id is not trusted".into()
        )
    );
    assert_eq!(d, uncached(&k2, &t, NOW));
    // Back to k1 with k2 beside it: verified afresh, not found.
    let both = policy(AUD, &[("k1", 1), ("k2", 2)], None);
    let misses = stats(&s).misses;
    assert_eq!(decide(&both, &t, NOW, &mut s).0, Verdict::Allow);
    assert_eq!(stats(&s).misses, misses + 1);
}

#[test]
fn a_token_for_another_audience_is_refused_cached_or_not() {
    let mut s = Scratch::for_bundle(&K1);
    let ours = token(&Claims::default());
    let theirs = token(&Claims {
        aud: "billing",
        ..Claims::default()
    });
    assert_eq!(decide(&K1, &ours, NOW, &mut s).0, Verdict::Allow);
    for _ in 0..2 {
        let d = decide(&K1, &theirs, NOW, &mut s);
        assert_eq!(
            d,
            (
                Verdict::Deny,
                "invalid agent token: token audience does not match".into()
            )
        );
    }
    // The same key and issuer, another audience: what was found for
    // `aegis` is not found for `billing`.
    let billing = policy("billing", &[("k1", 1)], None);
    assert_eq!(
        decide(&billing, &ours, NOW, &mut s),
        uncached(&billing, &ours, NOW)
    );
    assert_eq!(decide(&billing, &ours, NOW, &mut s).0, Verdict::Deny);
    assert_eq!(decide(&billing, &theirs, NOW, &mut s).0, Verdict::Allow);
}

#[test]
fn a_full_cache_still_decides_every_token() {
    let mut s = Scratch::for_bundle_with(
        &K1,
        TokenCacheConfig {
            entries: 16,
            max_token_bytes: 1024,
        },
    );
    let tokens: Vec<String> = (0..200)
        .map(|jti| {
            token(&Claims {
                jti,
                ..Claims::default()
            })
        })
        .collect();
    for t in &tokens {
        assert_eq!(decide(&K1, t, NOW, &mut s).0, Verdict::Allow);
    }
    assert_eq!(s.tokens.capacity(), 16);
    assert!(s.tokens.len() <= 16);
    assert!(stats(&s).evictions >= 200 - 16);
    // Evicted tokens are verified again and allowed.
    for t in &tokens {
        assert_eq!(decide(&K1, t, NOW, &mut s).0, Verdict::Allow);
    }
}

#[test]
fn a_flood_of_forged_tokens_evicts_nothing() {
    let mut s = Scratch::for_bundle_with(
        &K1,
        TokenCacheConfig {
            entries: 4,
            max_token_bytes: 1024,
        },
    );
    let good: Vec<String> = (0..4)
        .map(|jti| {
            token(&Claims {
                jti,
                ..Claims::default()
            })
        })
        .collect();
    for t in &good {
        assert_eq!(decide(&K1, t, NOW, &mut s).0, Verdict::Allow);
    }
    // Signed by an untrusted key under a trusted kid, and tampered copies
    // of the good tokens that keep their signatures' tails.
    for jti in 0..300 {
        let forged = token(&Claims {
            key: 3,
            jti,
            ..Claims::default()
        });
        assert_eq!(decide(&K1, &forged, NOW, &mut s).0, Verdict::Deny);
    }
    for t in &good {
        let mut tampered = t.clone().into_bytes();
        tampered[40] ^= 1;
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(decide(&K1, &tampered, NOW, &mut s).0, Verdict::Deny);
    }
    assert_eq!(stats(&s).evictions, 0);
    let hits = stats(&s).hits;
    for t in &good {
        assert_eq!(decide(&K1, t, NOW, &mut s).0, Verdict::Allow);
    }
    assert_eq!(stats(&s).hits, hits + 4);
}

#[test]
fn tokens_longer_than_a_slot_are_verified_every_time() {
    let t = token(&Claims::default());
    let mut s = Scratch::for_bundle_with(
        &K1,
        TokenCacheConfig {
            entries: 16,
            max_token_bytes: t.len() - 1,
        },
    );
    for _ in 0..3 {
        assert_eq!(decide(&K1, &t, NOW, &mut s).0, Verdict::Allow);
    }
    assert_eq!(stats(&s).hits, 0);
    assert!(s.tokens.is_empty());
}

/// One step of traffic: which token, and how far the clock has moved.
#[derive(Debug, Clone)]
struct Step {
    token: usize,
    dt: i64,
}

/// Valid, expiring, not yet valid, other audience, unknown agent, forged,
/// untrusted kid.
static TOKENS: LazyLock<Vec<String>> = LazyLock::new(|| {
    vec![
        token(&Claims::default()),
        token(&Claims {
            exp: NOW + 30,
            jti: 1,
            ..Claims::default()
        }),
        token(&Claims {
            nbf: NOW + 200,
            jti: 2,
            ..Claims::default()
        }),
        token(&Claims {
            aud: "billing",
            ..Claims::default()
        }),
        token(&Claims {
            sub: "ghost-agent",
            ..Claims::default()
        }),
        token(&Claims {
            key: 2,
            ..Claims::default()
        }),
        token(&Claims {
            kid: "k9",
            ..Claims::default()
        }),
    ]
});

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The law: with the cache, every decision is the one made without it.
    #[test]
    fn cached_decisions_are_uncached_decisions(
        steps in proptest::collection::vec(
            (0..TOKENS.len(), -90i64..200).prop_map(|(token, dt)| Step { token, dt }),
            1..40,
        ),
        entries in 1usize..8,
    ) {
        let mut s = Scratch::for_bundle_with(&K1, TokenCacheConfig { entries, max_token_bytes: 1024 });
        let mut now = NOW;
        for step in &steps {
            now += step.dt;
            let t = &TOKENS[step.token];
            prop_assert_eq!(decide(&K1, t, now, &mut s), uncached(&K1, t, now));
        }
    }
}
