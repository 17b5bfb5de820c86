//! Issuing agent identity tokens (`aegis token`): compact JWS, EdDSA,
//! exactly what `aegis_engine::jwt::verify` accepts.

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

/// A token lifetime: `30s`, `15m`, `1h`, `2d`, or a bare number of
/// seconds. Zero is refused (such a token would be dead on arrival).
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let bad = || {
        format!("invalid ttl `{s}`: use a number of seconds or a number followed by `s`, `m`, `h` or `d`, e.g. `15m`")
    };
    if digits.is_empty() {
        return Err(bad());
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("ttl `{s}` is too long"))?;
    let unit_secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let secs = n
        .checked_mul(unit_secs)
        .filter(|&v| i64::try_from(v).is_ok())
        .ok_or_else(|| format!("ttl `{s}` is too long"))?;
    if secs == 0 {
        return Err(format!("ttl `{s}` must be more than zero"));
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aegis_engine::jwt::{verify, IdentityConfig, JwtError, TrustedKey, VerifyingKeys};

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
    fn keygen_key_issues_verifiable_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let (key, public) = crate::keys::keygen(&dir.path().join("t")).unwrap();
        let sk = crate::keys::read_signing_key(&key).unwrap();
        let vk = crate::keys::read_verifying_key(&public).unwrap();
        let kid = crate::keys::key_id(&vk);
        let mut cfg = config(&sk);
        cfg.keys[0].kid = kid.clone();
        let keys = VerifyingKeys::new(&cfg).unwrap();
        let req = TokenRequest {
            kid: &kid,
            tenant: None,
            scope: None,
            ..request()
        };
        let p = verify(issue(&sk, &req).as_bytes(), &cfg, &keys, NOW).unwrap();
        assert_eq!(p.tenant, None);
        assert!(p.scope.is_empty());
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

    #[test]
    fn ttl_forms() {
        assert_eq!(parse_ttl("30s"), Ok(30));
        assert_eq!(parse_ttl("15m"), Ok(900));
        assert_eq!(parse_ttl("1h"), Ok(3_600));
        assert_eq!(parse_ttl("2d"), Ok(172_800));
        assert_eq!(parse_ttl("45"), Ok(45));
        assert_eq!(parse_ttl(" 10m "), Ok(600));
        for bad in ["", "m", "1w", "1.5h", "-1s", "+5", "1 h", "1hh", "h1", "1H"] {
            let e = parse_ttl(bad).unwrap_err();
            assert!(e.contains(&format!("`{bad}`")), "{bad}: {e}");
        }
        assert!(parse_ttl("0").unwrap_err().contains("more than zero"));
        assert!(parse_ttl("0m").is_err());
        assert!(parse_ttl("99999999999999999999")
            .unwrap_err()
            .contains("too long"));
        assert!(parse_ttl("999999999999999999d")
            .unwrap_err()
            .contains("too long"));
    }
}
