//! Agent identity tokens: what `jwt::verify` accepts and, mostly, what it
//! refuses.

// Test helpers outside `#[test]` fns fall outside clippy's in-test allowances.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use aegis_engine::jwt::{verify, IdentityConfig, JwtError, Principal, TrustedKey, VerifyingKeys};
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD as B64};
use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use hmac::{Hmac, Mac};
use proptest::prelude::*;
use sha2::Sha256;
use std::sync::LazyLock;

const NOW: i64 = 1_700_000_000;
const ISS: &str = "https://tokens.acme.test";
const AUD: &str = "aegis";

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn trusted(kid: &str, sk: &SigningKey) -> TrustedKey {
    TrustedKey {
        kid: kid.into(),
        key: sk.verifying_key().to_bytes(),
    }
}

/// One trusted key `k1` = `key(1)`.
fn cfg() -> IdentityConfig {
    IdentityConfig::new(ISS, AUD, vec![trusted("k1", &key(1))])
}

fn cfg2() -> IdentityConfig {
    IdentityConfig::new(
        ISS,
        AUD,
        vec![trusted("k1", &key(1)), trusted("k2", &key(2))],
    )
}

/// `cfg()` and its keys, built once: key decoding is slow in debug builds.
static ONE_KEY: LazyLock<(IdentityConfig, VerifyingKeys)> = LazyLock::new(|| {
    let c = cfg();
    let k = VerifyingKeys::new(&c).unwrap();
    (c, k)
});
static TWO_KEYS: LazyLock<(IdentityConfig, VerifyingKeys)> = LazyLock::new(|| {
    let c = cfg2();
    let k = VerifyingKeys::new(&c).unwrap();
    (c, k)
});

fn check(token: &str, cfg: &IdentityConfig) -> Result<Principal, JwtError> {
    let keys = VerifyingKeys::new(cfg).unwrap();
    verify(token.as_bytes(), cfg, &keys, NOW)
}

/// Signs `header` and `claims` (JSON text) as a compact JWS.
fn sign(sk: &SigningKey, header: &str, claims: &str) -> String {
    let signed = format!("{}.{}", B64.encode(header), B64.encode(claims));
    let sig = sk.sign(signed.as_bytes());
    format!("{signed}.{}", B64.encode(sig.to_bytes()))
}

const HEADER: &str = r#"{"alg":"EdDSA","typ":"JWT","kid":"k1"}"#;

/// The standard claims, with `edits` applied in order: `(name, Some(json))`
/// replaces or appends, `(name, None)` removes.
fn claims(edits: &[(&str, Option<&str>)]) -> String {
    let mut members: Vec<(String, String)> = vec![
        ("iss".into(), format!("\"{ISS}\"")),
        ("aud".into(), format!("\"{AUD}\"")),
        ("sub".into(), "\"finance-agent\"".into()),
        ("tenant".into(), "\"acme\"".into()),
        ("scope".into(), "\"payments:write customers:read\"".into()),
        ("iat".into(), (NOW - 10).to_string()),
        ("nbf".into(), (NOW - 10).to_string()),
        ("exp".into(), (NOW + 300).to_string()),
    ];
    for (name, value) in edits {
        match value {
            Some(v) => match members.iter_mut().find(|(n, _)| n == name) {
                Some(m) => m.1 = (*v).to_string(),
                None => members.push(((*name).to_string(), (*v).to_string())),
            },
            None => members.retain(|(n, _)| n != name),
        }
    }
    let body: Vec<String> = members
        .iter()
        .map(|(n, v)| format!("\"{n}\":{v}"))
        .collect();
    format!("{{{}}}", body.join(","))
}

fn token(edits: &[(&str, Option<&str>)]) -> String {
    sign(&key(1), HEADER, &claims(edits))
}

fn err(token: &str) -> JwtError {
    check(token, &cfg()).unwrap_err()
}

#[test]
fn valid_token() {
    let p = check(&token(&[]), &cfg()).unwrap();
    assert_eq!(p.agent.as_str(), "finance-agent");
    assert_eq!(p.tenant.map(|t| t.as_str().to_owned()), Some("acme".into()));
    assert_eq!(p.scope.as_str(), "payments:write customers:read");
    assert!(p.has_scope("customers:read"));
    assert!(!p.has_scope("customers"));
    assert_eq!(p.scopes().count(), 2);
}

#[test]
fn optional_claims_may_be_absent() {
    let t = token(&[
        ("tenant", None),
        ("scope", None),
        ("nbf", None),
        ("iat", None),
    ]);
    let p = check(&t, &cfg()).unwrap();
    assert_eq!(p.tenant, None);
    assert!(p.scope.is_empty());
    assert_eq!(p.scopes().count(), 0);
}

#[test]
fn fully_specified_alg_name_is_accepted() {
    let t = sign(&key(1), r#"{"alg":"Ed25519","kid":"k1"}"#, &claims(&[]));
    assert!(check(&t, &cfg()).is_ok());
    // Escaped spelling of the same name is the same name.
    let t = sign(&key(1), r#"{"alg":"Ed\u0044SA"}"#, &claims(&[]));
    assert!(check(&t, &cfg()).is_ok());
}

#[test]
fn typ_is_optional_but_checked() {
    let t = sign(&key(1), r#"{"alg":"EdDSA"}"#, &claims(&[]));
    assert!(check(&t, &cfg()).is_ok());
    let t = sign(&key(1), r#"{"alg":"EdDSA","typ":"at+jwt"}"#, &claims(&[]));
    assert!(check(&t, &cfg()).is_ok());
    let t = sign(
        &key(1),
        r#"{"alg":"EdDSA","typ":"JOSE+JSON"}"#,
        &claims(&[]),
    );
    assert_eq!(err(&t), JwtError::UnsupportedType);
    let t = sign(&key(1), r#"{"alg":"EdDSA","typ":1}"#, &claims(&[]));
    assert_eq!(err(&t), JwtError::UnsupportedType);
}

#[test]
fn alg_none_is_rejected() {
    let unsigned = format!(
        "{}.{}.",
        B64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        B64.encode(claims(&[]))
    );
    assert_eq!(err(&unsigned), JwtError::UnsupportedAlg);
    // Even with a real signature attached.
    let t = sign(&key(1), r#"{"alg":"none"}"#, &claims(&[]));
    assert_eq!(err(&t), JwtError::UnsupportedAlg);
}

#[test]
fn hs256_with_public_key_as_secret_is_rejected() {
    // Classic algorithm confusion: HMAC keyed with the public key bytes.
    let public = key(1).verifying_key().to_bytes();
    let signed = format!(
        "{}.{}",
        B64.encode(r#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#),
        B64.encode(claims(&[]))
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(&public).unwrap();
    mac.update(signed.as_bytes());
    let t = format!("{signed}.{}", B64.encode(mac.finalize().into_bytes()));
    assert_eq!(err(&t), JwtError::UnsupportedAlg);
}

#[test]
fn other_algs_are_rejected() {
    for header in [
        r#"{"alg":"RS256","kid":"k1"}"#,
        r#"{"alg":"ES256","kid":"k1"}"#,
        r#"{"alg":"HS512","kid":"k1"}"#,
        r#"{"alg":"eddsa","kid":"k1"}"#,
        r#"{"alg":"EdDSA ","kid":"k1"}"#,
        r#"{"alg":["EdDSA"],"kid":"k1"}"#,
        r#"{"alg":null,"kid":"k1"}"#,
        r#"{"kid":"k1"}"#,
    ] {
        let t = sign(&key(1), header, &claims(&[]));
        assert_eq!(err(&t), JwtError::UnsupportedAlg, "{header}");
    }
    // A fake RSA signature of RSA size.
    let t = format!(
        "{}.{}.{}",
        B64.encode(r#"{"alg":"RS256"}"#),
        B64.encode(claims(&[])),
        B64.encode([7u8; 256])
    );
    assert_eq!(err(&t), JwtError::UnsupportedAlg);
}

#[test]
fn crit_is_rejected() {
    let t = sign(
        &key(1),
        r#"{"alg":"EdDSA","crit":["exp"],"exp":1}"#,
        &claims(&[]),
    );
    assert_eq!(err(&t), JwtError::CriticalHeader);
    let t = sign(&key(1), r#"{"alg":"EdDSA","crit":[]}"#, &claims(&[]));
    assert_eq!(err(&t), JwtError::CriticalHeader);
}

#[test]
fn embedded_keys_are_never_trusted() {
    // A token carrying its own key, signed by that key, with no kid.
    let attacker = key(9);
    let header = format!(
        r#"{{"alg":"EdDSA","jwk":{{"kty":"OKP","crv":"Ed25519","x":"{}"}}}}"#,
        B64.encode(attacker.verifying_key().to_bytes())
    );
    let t = sign(&attacker, &header, &claims(&[]));
    assert_eq!(err(&t), JwtError::BadSignature);
}

#[test]
fn kid_selects_the_key() {
    let cfg = cfg2();
    let t = sign(&key(2), r#"{"alg":"EdDSA","kid":"k2"}"#, &claims(&[]));
    assert!(check(&t, &cfg).is_ok());
    // Signed by k1 but claiming k2.
    let t = sign(&key(1), r#"{"alg":"EdDSA","kid":"k2"}"#, &claims(&[]));
    assert_eq!(check(&t, &cfg).unwrap_err(), JwtError::BadSignature);
}

#[test]
fn wrong_kid_is_rejected() {
    let t = sign(&key(1), r#"{"alg":"EdDSA","kid":"k9"}"#, &claims(&[]));
    assert_eq!(err(&t), JwtError::UnknownKid);
    assert_eq!(check(&t, &cfg2()).unwrap_err(), JwtError::UnknownKid);
    let t = sign(&key(1), r#"{"alg":"EdDSA","kid":7}"#, &claims(&[]));
    assert_eq!(err(&t), JwtError::Malformed);
}

#[test]
fn missing_kid_needs_a_single_key() {
    let t = sign(&key(1), r#"{"alg":"EdDSA"}"#, &claims(&[]));
    assert!(check(&t, &cfg()).is_ok());
    assert_eq!(check(&t, &cfg2()).unwrap_err(), JwtError::MissingKid);
    let none = IdentityConfig::new(ISS, AUD, vec![]);
    assert_eq!(check(&t, &none).unwrap_err(), JwtError::UnknownKid);
}

#[test]
fn expiry_with_skew() {
    let exp = |e: i64| token(&[("exp", Some(&e.to_string()))]);
    assert_eq!(err(&exp(NOW - 61)), JwtError::Expired);
    assert!(check(&exp(NOW - 60), &cfg()).is_ok());
    assert!(check(&exp(NOW - 30), &cfg()).is_ok());
    assert_eq!(err(&exp(-1)), JwtError::Expired);
    let mut strict = cfg();
    strict.skew_secs = 0;
    assert_eq!(
        check(&exp(NOW - 1), &strict).unwrap_err(),
        JwtError::Expired
    );
    assert!(check(&exp(NOW), &strict).is_ok());
    assert_eq!(err(&token(&[("exp", None)])), JwtError::MissingClaim("exp"));
}

#[test]
fn decimal_and_extreme_numbers() {
    let t = token(&[("exp", Some(&format!("{}.5", NOW + 10)))]);
    assert!(check(&t, &cfg()).is_ok());
    let t = token(&[("exp", Some("1.7e300"))]);
    assert!(check(&t, &cfg()).is_ok());
    let t = token(&[("exp", Some("1e400"))]);
    assert_eq!(err(&t), JwtError::BadClaim("exp"));
    let t = token(&[("exp", Some("-1e400"))]);
    assert_eq!(err(&t), JwtError::BadClaim("exp"));
    let t = token(&[("exp", Some("99999999999999999999999999999999999999"))]);
    assert!(check(&t, &cfg()).is_ok());
    let t = token(&[("nbf", Some("-99999999999999999999999999999"))]);
    assert!(check(&t, &cfg()).is_ok());
    let keys = VerifyingKeys::new(&cfg()).unwrap();
    let t = token(&[]);
    assert_eq!(
        verify(t.as_bytes(), &cfg(), &keys, i64::MAX),
        Err(JwtError::Expired)
    );
    assert_eq!(
        verify(t.as_bytes(), &cfg(), &keys, i64::MIN),
        Err(JwtError::NotYetValid)
    );
}

#[test]
fn not_before() {
    let nbf = |n: i64| token(&[("nbf", Some(&n.to_string()))]);
    assert_eq!(err(&nbf(NOW + 61)), JwtError::NotYetValid);
    assert!(check(&nbf(NOW + 60), &cfg()).is_ok());
}

#[test]
fn issued_at_and_max_age() {
    let iat = |n: i64| token(&[("iat", Some(&n.to_string()))]);
    assert_eq!(err(&iat(NOW + 61)), JwtError::IssuedInFuture);
    assert!(check(&iat(NOW + 60), &cfg()).is_ok());
    let mut aged = cfg();
    aged.max_age_secs = Some(300);
    assert_eq!(check(&iat(NOW - 301), &aged).unwrap_err(), JwtError::TooOld);
    assert!(check(&iat(NOW - 300), &aged).is_ok());
    assert!(check(&iat(NOW - 86_400), &cfg()).is_ok(), "no max age set");
    let no_iat = token(&[("iat", None)]);
    assert_eq!(
        check(&no_iat, &aged).unwrap_err(),
        JwtError::MissingClaim("iat")
    );
}

#[test]
fn issuer() {
    let t = token(&[("iss", Some("\"https://evil.test\""))]);
    assert_eq!(err(&t), JwtError::WrongIssuer);
    let t = token(&[("iss", Some(&format!("\"{ISS}/\"")))]);
    assert_eq!(err(&t), JwtError::WrongIssuer);
    assert_eq!(err(&token(&[("iss", None)])), JwtError::MissingClaim("iss"));
    let t = token(&[("iss", Some(&format!("[\"{ISS}\"]")))]);
    assert_eq!(err(&t), JwtError::BadClaim("iss"));
}

#[test]
fn audience() {
    let aud = |v: &str| token(&[("aud", Some(v))]);
    assert_eq!(err(&aud("\"other\"")), JwtError::WrongAudience);
    assert_eq!(err(&aud("\"aegis2\"")), JwtError::WrongAudience);
    assert!(check(&aud("[\"other\",\"aegis\"]"), &cfg()).is_ok());
    assert!(check(&aud("[\"aegis\"]"), &cfg()).is_ok());
    assert_eq!(err(&aud("[\"other\"]")), JwtError::WrongAudience);
    assert_eq!(err(&aud("[]")), JwtError::WrongAudience);
    assert_eq!(err(&aud("[\"aegis\",1]")), JwtError::BadClaim("aud"));
    assert_eq!(err(&aud("[[\"aegis\"]]")), JwtError::BadClaim("aud"));
    assert_eq!(err(&aud("{\"aegis\":1}")), JwtError::BadClaim("aud"));
    assert_eq!(err(&aud("null")), JwtError::BadClaim("aud"));
    assert_eq!(err(&token(&[("aud", None)])), JwtError::MissingClaim("aud"));
}

#[test]
fn claim_types() {
    let cases: &[(&str, &str, JwtError)] = &[
        (
            "exp",
            &format!("\"{}\"", NOW + 300),
            JwtError::BadClaim("exp"),
        ),
        ("nbf", "true", JwtError::BadClaim("nbf")),
        ("iat", "null", JwtError::BadClaim("iat")),
        ("sub", "42", JwtError::BadClaim("agent")),
        ("sub", "\"\"", JwtError::BadClaim("agent")),
        ("sub", "[\"finance-agent\"]", JwtError::BadClaim("agent")),
        ("sub", "\"finance\\nagent\"", JwtError::BadClaim("agent")),
        (
            "sub",
            "\"finance\\u0000agent\"",
            JwtError::BadClaim("agent"),
        ),
        ("tenant", "7", JwtError::BadClaim("tenant")),
        ("tenant", "\"\"", JwtError::BadClaim("tenant")),
        ("scope", "[\"a\"]", JwtError::BadClaim("scope")),
    ];
    for (name, value, want) in cases {
        let t = token(&[(name, Some(value))]);
        assert_eq!(err(&t), *want, "{name}: {value}");
    }
    assert_eq!(
        err(&token(&[("sub", None)])),
        JwtError::MissingClaim("agent")
    );
    let long = format!("\"{}\"", "a".repeat(129));
    assert_eq!(
        err(&token(&[("sub", Some(&long))])),
        JwtError::BadClaim("agent")
    );
    let fits = format!("\"{}\"", "a".repeat(128));
    assert!(check(&token(&[("sub", Some(&fits))]), &cfg()).is_ok());
}

#[test]
fn escaped_claims_are_decoded() {
    let t = token(&[
        ("sub", Some(r#""fin\u0061nce-agent""#)),
        ("tenant", Some(r#""\u00e9t\u00e9""#)),
    ]);
    let p = check(&t, &cfg()).unwrap();
    assert_eq!(p.agent.as_str(), "finance-agent");
    assert_eq!(p.tenant.unwrap().as_str(), "été");
}

#[test]
fn configured_claim_names() {
    let mut c = cfg();
    c.agent_claim = "client_id".into();
    c.tenant_claim = "org".into();
    c.scope_claim = "scp".into();
    let t = token(&[
        ("client_id", Some("\"billing-bot\"")),
        ("org", Some("\"globex\"")),
        ("scp", Some("\"a b\"")),
    ]);
    let p = check(&t, &c).unwrap();
    assert_eq!(p.agent.as_str(), "billing-bot");
    assert_eq!(p.tenant.unwrap().as_str(), "globex");
    assert_eq!(p.scope.as_str(), "a b");
    let t = token(&[("client_id", None)]);
    assert_eq!(check(&t, &c).unwrap_err(), JwtError::MissingClaim("agent"));
}

#[test]
fn unknown_claims_are_ignored() {
    let t = token(&[
        ("jti", Some("\"abc\"")),
        ("nested", Some(r#"{"a":[1,{"b":null}],"sub":"other"}"#)),
    ]);
    assert_eq!(check(&t, &cfg()).unwrap().agent.as_str(), "finance-agent");
}

#[test]
fn tampered_payload() {
    let good = token(&[]);
    let parts: Vec<&str> = good.split('.').collect();
    let evil = B64.encode(claims(&[("sub", Some("\"admin-agent\""))]));
    let t = format!("{}.{evil}.{}", parts[0], parts[2]);
    assert_eq!(err(&t), JwtError::BadSignature);
    // Header swapped for another valid one.
    let other = B64.encode(r#"{"alg":"EdDSA","kid":"k1"}"#);
    let t = format!("{other}.{}.{}", parts[1], parts[2]);
    assert_eq!(err(&t), JwtError::BadSignature);
}

#[test]
fn tampered_signature() {
    let good = token(&[]);
    let parts: Vec<&str> = good.split('.').collect();
    let mut sig = B64.decode(parts[2]).unwrap();
    for i in [0, 31, 32, 63] {
        let mut s = sig.clone();
        s[i] ^= 1;
        let t = format!("{}.{}.{}", parts[0], parts[1], B64.encode(&s));
        assert_eq!(err(&t), JwtError::BadSignature, "byte {i}");
    }
    // Wrong lengths.
    sig.truncate(63);
    let t = format!("{}.{}.{}", parts[0], parts[1], B64.encode(&sig));
    assert_eq!(err(&t), JwtError::BadSignature);
    let t = format!("{}.{}.", parts[0], parts[1]);
    assert_eq!(err(&t), JwtError::BadSignature);
    // Non-canonical s (s + L) must not pass verify_strict.
    let good_sig = B64.decode(parts[2]).unwrap();
    let mut s_plus_l = good_sig.clone();
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut carry = 0u16;
    for i in 0..32 {
        let v = u16::from(s_plus_l[32 + i]) + u16::from(L[i]) + carry;
        s_plus_l[32 + i] = v as u8;
        carry = v >> 8;
    }
    let t = format!("{}.{}.{}", parts[0], parts[1], B64.encode(&s_plus_l));
    assert_eq!(err(&t), JwtError::BadSignature);
}

#[test]
fn duplicate_members_are_rejected() {
    let base = claims(&[]);
    let body = base.trim_end_matches('}');
    for extra in [
        r#","sub":"admin-agent""#,
        r#","exp":99999999999"#,
        r#","s\u0075b":"admin-agent""#,
        r#","aud":"aegis""#,
        r#","tenant":"acme""#,
    ] {
        let t = sign(&key(1), HEADER, &format!("{body}{extra}}}"));
        assert_eq!(err(&t), JwtError::Duplicate, "{extra}");
    }
    // Duplicates first, too.
    let t = sign(
        &key(1),
        HEADER,
        &format!(r#"{{"sub":"admin-agent",{}"#, base.trim_start_matches('{')),
    );
    assert_eq!(err(&t), JwtError::Duplicate);
    for header in [
        r#"{"alg":"EdDSA","alg":"EdDSA"}"#,
        r#"{"alg":"EdDSA","kid":"k1","kid":"k1"}"#,
        r#"{"alg":"none","alg":"EdDSA"}"#,
        r#"{"alg":"EdDSA","x":1,"x":2}"#,
    ] {
        let t = sign(&key(1), header, &claims(&[]));
        assert_eq!(err(&t), JwtError::Duplicate, "{header}");
    }
    // Duplicates inside nested values we do not read are not our business.
    let t = token(&[("ext", Some(r#"{"a":1,"a":2}"#))]);
    assert!(check(&t, &cfg()).is_ok());
}

#[test]
fn base64_must_be_unpadded_url_safe() {
    let c = claims(&[]);
    // Header and claims lengths chosen so that padding is needed.
    let mut header = r#"{"alg":"EdDSA","kid":"k1"}"#.to_string();
    while header.len().is_multiple_of(3) {
        header.push(' ');
    }
    let sk = key(1);
    let signed = format!("{}.{}", URL_SAFE.encode(header), B64.encode(&c));
    assert!(signed.contains('='));
    let t = format!(
        "{signed}.{}",
        B64.encode(sk.sign(signed.as_bytes()).to_bytes())
    );
    assert_eq!(err(&t), JwtError::Malformed);
    // Padded signature.
    let good = token(&[]);
    assert_eq!(err(&format!("{good}==")), JwtError::BadSignature);
    let parts: Vec<&str> = good.split('.').collect();
    let padded = URL_SAFE.encode(B64.decode(parts[2]).unwrap());
    let t = format!("{}.{}.{padded}", parts[0], parts[1]);
    assert_eq!(err(&t), JwtError::BadSignature);
    // Standard alphabet.
    let mut std_header = String::new();
    for extra in 0..64 {
        let h = format!(
            r#"{{"alg":"EdDSA","kid":"k1","x":"{}"}}"#,
            "?".repeat(extra)
        );
        let e = STANDARD.encode(&h);
        if (e.contains('+') || e.contains('/')) && !e.contains('=') {
            std_header = e;
            break;
        }
    }
    assert!(!std_header.is_empty());
    let signed = format!("{std_header}.{}", B64.encode(&c));
    let t = format!(
        "{signed}.{}",
        B64.encode(sk.sign(signed.as_bytes()).to_bytes())
    );
    assert_eq!(err(&t), JwtError::Malformed);
    // Non-canonical trailing bits in the signature's last character.
    let mut last = parts[2].to_string();
    let ch = last.pop().unwrap();
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let idx = alphabet.find(ch).unwrap();
    let twin = alphabet.as_bytes()[idx ^ 1] as char;
    let t = format!("{}.{}.{last}{twin}", parts[0], parts[1]);
    assert_eq!(err(&t), JwtError::Malformed);
    // Whitespace.
    assert_eq!(err(&format!(" {good}")), JwtError::Malformed);
    // (A signature of the wrong length is refused before it is decoded.)
    assert_eq!(err(&format!("{good}\n")), JwtError::BadSignature);
    let t = format!("{}.{} .{}", parts[0], parts[1], parts[2]);
    assert_eq!(err(&t), JwtError::BadSignature);
}

#[test]
fn shape() {
    let good = token(&[]);
    let parts: Vec<&str> = good.split('.').collect();
    for bad in [
        String::new(),
        ".".into(),
        "..".into(),
        "...".into(),
        format!("{}.{}", parts[0], parts[1]),
        format!("{good}.{}", parts[2]),
        format!("{}..{}", parts[0], parts[2]),
        format!("Bearer {good}"),
    ] {
        assert!(check(&bad, &cfg()).is_err(), "{bad:?}");
    }
    for header in [
        "[]",
        "\"EdDSA\"",
        r#"{"alg":"EdDSA""#,
        r#"{"alg":"EdDSA",}"#,
        r#"{"alg":"EdDSA"}{}"#,
        r#"{"alg":"EdDSA"} x"#,
    ] {
        let t = sign(&key(1), header, &claims(&[]));
        assert_eq!(err(&t), JwtError::Malformed, "{header}");
    }
    for payload in ["", "[]", "null", "{", r#"{"sub":"a"}x"#, "\u{feff}{}"] {
        let t = sign(&key(1), HEADER, payload);
        assert_eq!(err(&t), JwtError::Malformed, "{payload:?}");
    }
}

#[test]
fn size_limits() {
    // Near the limit with a large claim: still fine.
    let filler = format!("\"{}\"", "x".repeat(5_800));
    let t = token(&[("ext", Some(&filler))]);
    assert!(t.len() <= aegis_engine::jwt::MAX_TOKEN_LEN, "{}", t.len());
    assert!(check(&t, &cfg()).is_ok());
    let filler = format!("\"{}\"", "x".repeat(6_200));
    let t = token(&[("ext", Some(&filler))]);
    assert_eq!(err(&t), JwtError::TooLarge);
    assert_eq!(err(&"a".repeat(1 << 20)), JwtError::TooLarge);
    // Huge header.
    let h = format!(
        r#"{{"alg":"EdDSA","kid":"k1","x":"{}"}}"#,
        "y".repeat(2_000)
    );
    assert_eq!(err(&sign(&key(1), &h, &claims(&[]))), JwtError::TooLarge);
    // Too many members.
    let many: Vec<String> = (0..70).map(|i| format!("\"c{i}\":{i}")).collect();
    let body = claims(&[]);
    let t = sign(
        &key(1),
        HEADER,
        &format!("{},{}}}", body.trim_end_matches('}'), many.join(",")),
    );
    assert_eq!(err(&t), JwtError::TooLarge);
    // Deep nesting in an ignored claim.
    let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
    assert_eq!(err(&token(&[("ext", Some(&deep))])), JwtError::Malformed);
}

#[test]
fn key_configuration() {
    let weak = IdentityConfig::new(
        ISS,
        AUD,
        vec![TrustedKey {
            kid: "w".into(),
            key: {
                let mut k = [0u8; 32];
                k[0] = 1; // the identity point
                k
            },
        }],
    );
    assert_eq!(VerifyingKeys::new(&weak).unwrap_err(), JwtError::InvalidKey);
    let off_curve = (0u8..=255)
        .map(|i| [i; 32])
        .find(|k| ed25519_dalek::VerifyingKey::from_bytes(k).is_err())
        .unwrap();
    let bad = IdentityConfig::new(
        ISS,
        AUD,
        vec![TrustedKey {
            kid: "b".into(),
            key: off_curve,
        }],
    );
    assert_eq!(VerifyingKeys::new(&bad).unwrap_err(), JwtError::InvalidKey);
    let dup = IdentityConfig::new(ISS, AUD, vec![trusted("k", &key(1)), trusted("k", &key(2))]);
    assert_eq!(
        VerifyingKeys::new(&dup).unwrap_err(),
        JwtError::DuplicateKid
    );
    assert_eq!(VerifyingKeys::new(&cfg2()).unwrap().len(), 2);
}

#[test]
fn messages_never_echo_the_token() {
    let t = sign(
        &key(1),
        r#"{"alg":"<script>","kid":"k1"}"#,
        &claims(&[("sub", Some("\"<script>\""))]),
    );
    let msg = err(&t).to_string();
    assert_eq!(msg, "token algorithm is not EdDSA");
    let t = sign(&key(1), r#"{"alg":"EdDSA","kid":"<script>"}"#, &claims(&[]));
    assert_eq!(err(&t).to_string(), "token key id is not trusted");
    assert_eq!(JwtError::Expired.to_string(), "token expired");
    assert_eq!(
        JwtError::BadClaim("exp").to_string(),
        "token claim `exp` is invalid"
    );
}

#[test]
fn config_survives_postcard() {
    let mut c = cfg2();
    c.max_age_secs = Some(900);
    let bytes = postcard::to_allocvec(&c).unwrap();
    let back: IdentityConfig = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back, c);
}

#[test]
fn verify_does_not_allocate() {
    let (cfg, keys) = &*TWO_KEYS;
    let accepted = [
        token(&[]),
        token(&[
            ("sub", Some(r#""fin\u0061nce""#)),
            ("aud", Some("[\"x\",\"aegis\"]")),
            ("ext", Some(r#"{"deep":[[[{"a":"\ud83d\ude00"}]]]}"#)),
        ]),
    ];
    let refused = [
        token(&[("exp", Some("1"))]),
        token(&[("iss", Some("\"x\""))]),
        token(&[("sub", Some("7"))]),
        token(&[("sub", None)]),
        sign(
            &key(1),
            HEADER,
            &format!("{},\"sub\":\"x\"}}", claims(&[]).trim_end_matches('}')),
        ),
        sign(&key(1), r#"{"alg":"HS256"}"#, &claims(&[])),
        sign(&key(1), r#"{"alg":"EdDSA"}"#, &claims(&[])),
        sign(&key(1), r#"{"alg":"EdDSA","kid":"nope"}"#, &claims(&[])),
        format!("{}=", token(&[])),
        "not a token".into(),
        "a.b.c".into(),
        "a".repeat(10_000),
    ];
    // Refused by the signature check itself.
    let forged = [
        sign(&key(2), HEADER, &claims(&[])),
        sign(&key(1), HEADER, &claims(&[])).replace(".ey", ".ez"),
    ];
    let mut results = Vec::with_capacity(64);
    let info = allocation_counter::measure(|| {
        for t in accepted.iter().chain(&refused) {
            results.push(verify(t.as_bytes(), cfg, keys, NOW));
        }
    });
    assert_eq!(info.count_total, 0, "verify allocated: {info:?}");
    assert!(results[..accepted.len()].iter().all(Result::is_ok));
    assert!(results[accepted.len()..].iter().all(Result::is_err));

    results.clear();
    let info = allocation_counter::measure(|| {
        for t in &forged {
            results.push(verify(t.as_bytes(), cfg, keys, NOW));
        }
    });
    assert!(results.iter().all(|r| *r == Err(JwtError::BadSignature)));
    // With its `std` feature on (native builds with `compile`),
    // ed25519-dalek boxes the source of a verification error; the filter
    // builds the engine without `std`, where nothing is allocated.
    if cfg!(feature = "std") {
        assert!(info.count_total <= forged.len() as u64, "{info:?}");
        assert_eq!(info.count_current, 0, "{info:?}");
    } else {
        assert_eq!(info.count_total, 0, "verify allocated: {info:?}");
    }

    // The counter works at all, so the zeros above mean something.
    let info = allocation_counter::measure(|| {
        std::hint::black_box(vec![1u8; 16]);
    });
    assert!(info.count_total > 0);
}

static GOOD: LazyLock<String> = LazyLock::new(|| token(&[]));

// Case counts are modest because Ed25519 is slow in unoptimised test builds;
// PROPTEST_CASES raises them all for a longer run.
proptest! {

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let (cfg, keys) = &*TWO_KEYS;
        prop_assert!(verify(&bytes, cfg, keys, NOW).is_err());
    }

    #[test]
    fn random_base64ish_never_panic(s in "[A-Za-z0-9_=+/.-]{0,400}") {
        let (cfg, keys) = &*ONE_KEY;
        prop_assert!(verify(s.as_bytes(), cfg, keys, NOW).is_err());
    }

    #[test]
    fn signed_garbage_claims_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..300)) {
        // A valid signature over arbitrary payload bytes: the claims parser
        // sees hostile input only after the signature holds.
        let sk = key(1);
        let signed = format!("{}.{}", B64.encode(HEADER), B64.encode(&payload));
        let t = format!("{signed}.{}", B64.encode(sk.sign(signed.as_bytes()).to_bytes()));
        let (cfg, keys) = &*ONE_KEY;
        let _ = verify(t.as_bytes(), cfg, keys, NOW);
    }

    #[test]
    fn signed_json_claims_never_panic(
        sub in proptest::option::of("\\PC{0,140}"),
        aud in proptest::option::of(prop_oneof![Just("\"aegis\"".to_string()), "\\PC{0,10}".prop_map(|s| format!("{s:?}"))]),
        exp in proptest::option::of(any::<f64>().prop_filter("finite", |f| f.is_finite())),
        nbf in proptest::option::of(any::<i64>()),
    ) {
        let mut edits: Vec<(&str, Option<String>)> = Vec::new();
        edits.push(("sub", sub.map(|s| format!("{s:?}"))));
        edits.push(("aud", aud));
        edits.push(("exp", exp.map(|e| format!("{e:e}"))));
        edits.push(("nbf", nbf.map(|n| n.to_string())));
        let edits: Vec<(&str, Option<&str>)> = edits.iter().map(|(n, v)| (*n, v.as_deref())).collect();
        let t = token(&edits);
        let (cfg, keys) = &*ONE_KEY;
        let _ = verify(t.as_bytes(), cfg, keys, NOW);
    }

    #[test]
    fn mutated_tokens_are_rejected(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
    ) {
        let good = &*GOOD;
        let mut bytes = good.clone().into_bytes();
        for (at, b, op) in edits {
            match op {
                0 if !bytes.is_empty() => { let i = at.index(bytes.len()); bytes[i] = b; }
                1 if !bytes.is_empty() => { let i = at.index(bytes.len()); bytes.remove(i); }
                _ => { let i = at.index(bytes.len() + 1); bytes.insert(i, b); }
            }
        }
        let (cfg, keys) = &*ONE_KEY;
        let r = verify(&bytes, cfg, keys, NOW);
        if bytes != good.as_bytes() {
            prop_assert!(r.is_err(), "mutation accepted: {:?}", String::from_utf8_lossy(&bytes));
        } else {
            prop_assert!(r.is_ok());
        }
    }
}
