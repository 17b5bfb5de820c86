//! Issuing agent identity tokens: compact JWS, EdDSA, exactly what
//! [`super::verify`] accepts. Used by `aegis token issue` and by the control
//! plane's `POST /v1/tokens`, so the two can never disagree.

use alloc::format;
use alloc::string::String;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use serde::Serialize;

/// What to put in a token.
#[derive(Debug, Clone, Copy)]
pub struct TokenRequest<'a> {
    pub kid: &'a str,
    pub issuer: &'a str,
    pub audience: &'a str,
    /// Goes in `sub`.
    pub agent: &'a str,
    /// Goes in `tenant`.
    pub tenant: Option<&'a str>,
    /// Space-separated scopes; goes in `scope`.
    pub scope: Option<&'a str>,
    pub ttl_secs: u64,
    /// Unix seconds; `iat` and `nbf`.
    pub now: i64,
}

#[derive(Serialize)]
struct Header<'a> {
    alg: &'a str,
    typ: &'a str,
    kid: &'a str,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
    iat: i64,
    nbf: i64,
    exp: i64,
}

fn b64_json<T: Serialize>(value: &T) -> String {
    // Structs of strings and integers always serialize.
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap_or_default())
}

/// Signs a token valid from `now` for `ttl_secs`.
pub fn issue(key: &SigningKey, req: &TokenRequest<'_>) -> String {
    let header = Header {
        alg: "EdDSA",
        typ: "JWT",
        kid: req.kid,
    };
    let ttl = i64::try_from(req.ttl_secs).unwrap_or(i64::MAX);
    let claims = Claims {
        iss: req.issuer,
        aud: req.audience,
        sub: req.agent,
        tenant: req.tenant,
        scope: req.scope,
        iat: req.now,
        nbf: req.now,
        exp: req.now.saturating_add(ttl),
    };
    let signed = format!("{}.{}", b64_json(&header), b64_json(&claims));
    let sig = key.sign(signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::{verify, IdentityConfig, JwtError, TrustedKey, VerifyingKeys};
    use alloc::vec;
    use alloc::vec::Vec;

    const NOW: i64 = 1_750_000_000;

    fn request<'a>() -> TokenRequest<'a> {
        TokenRequest {
            kid: "k1",
            issuer: "https://tokens.acme.test",
            audience: "aegis",
            agent: "finance-agent",
            tenant: Some("acme"),
            scope: Some("payments:write"),
            ttl_secs: 900,
            now: NOW,
        }
    }

    fn config(sk: &SigningKey) -> IdentityConfig {
        IdentityConfig::new(
            "https://tokens.acme.test",
            "aegis",
            vec![TrustedKey {
                kid: "k1".into(),
                key: sk.verifying_key().to_bytes(),
            }],
        )
    }

    #[test]
    fn issued_tokens_verify_in_the_engine() {
        let sk = SigningKey::from_bytes(&[7; 32]);
        let cfg = config(&sk);
        let keys = VerifyingKeys::new(&cfg).unwrap();
        let token = issue(&sk, &request());
        let p = verify(token.as_bytes(), &cfg, &keys, NOW + 10).unwrap();
        assert_eq!(p.agent.as_str(), "finance-agent");
        assert_eq!(p.tenant.unwrap().as_str(), "acme");
        assert!(p.has_scope("payments:write"));
        // Expires after its ttl (plus the default 60 s of skew).
        assert_eq!(
            verify(token.as_bytes(), &cfg, &keys, NOW + 900 + 61),
            Err(JwtError::Expired)
        );
        // Someone else's key.
        let other = config(&SigningKey::from_bytes(&[8; 32]));
        let other_keys = VerifyingKeys::new(&other).unwrap();
        assert_eq!(
            verify(token.as_bytes(), &other, &other_keys, NOW),
            Err(JwtError::BadSignature)
        );
    }

    #[test]
    fn token_layout() {
        let sk = SigningKey::from_bytes(&[7; 32]);
        let token = issue(&sk, &request());
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert!(!token.contains('='));
        let header = URL_SAFE_NO_PAD.decode(parts[0]).unwrap();
        assert_eq!(header, br#"{"alg":"EdDSA","typ":"JWT","kid":"k1"}"#);
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            claims,
            serde_json::json!({
                "iss": "https://tokens.acme.test", "aud": "aegis", "sub": "finance-agent",
                "tenant": "acme", "scope": "payments:write",
                "iat": NOW, "nbf": NOW, "exp": NOW + 900,
            })
        );
        // Names with quotes and the like are escaped, not injected.
        let req = TokenRequest {
            agent: "a\",\"sub\":\"admin",
            ..request()
        };
        let token = issue(&sk, &req);
        let cfg = config(&sk);
        let keys = VerifyingKeys::new(&cfg).unwrap();
        let p = verify(token.as_bytes(), &cfg, &keys, NOW).unwrap();
        assert_eq!(p.agent.as_str(), "a\",\"sub\":\"admin");
        // A huge ttl saturates instead of overflowing.
        let req = TokenRequest {
            ttl_secs: u64::MAX,
            now: i64::MAX - 5,
            ..request()
        };
        assert_eq!(issue(&sk, &req).split('.').count(), 3);
    }
}
