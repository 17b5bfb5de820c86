//! Token lifetimes on the command line (`--ttl 15m`).

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
    use aegis_engine::jwt::issue::{issue, TokenRequest};
    use aegis_engine::jwt::{verify, IdentityConfig, TrustedKey, VerifyingKeys};

    const NOW: i64 = 1_750_000_000;

    /// A key pair from `aegis keygen` issues tokens the engine accepts,
    /// with the kid `aegis` derives from its public key.
    #[test]
    fn keygen_key_issues_verifiable_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let (key, public) = crate::keys::keygen(&dir.path().join("t")).unwrap();
        let sk = crate::keys::read_signing_key(&key).unwrap();
        let vk = crate::keys::read_verifying_key(&public).unwrap();
        let kid = crate::keys::key_id(&vk);
        let cfg = IdentityConfig::new(
            "https://tokens.acme.test",
            "aegis",
            vec![TrustedKey {
                kid: kid.clone(),
                key: vk.to_bytes(),
            }],
        );
        let keys = VerifyingKeys::new(&cfg).unwrap();
        let req = TokenRequest {
            kid: &kid,
            issuer: "https://tokens.acme.test",
            audience: "aegis",
            agent: "finance-agent",
            tenant: None,
            scope: None,
            ttl_secs: 900,
            now: NOW,
        };
        let p = verify(issue(&sk, &req).as_bytes(), &cfg, &keys, NOW).unwrap();
        assert_eq!(p.tenant, None);
        assert!(p.scope.is_empty());
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
