//! Host patterns (`api.stripe.com`, `*.acme.internal`, `localhost:8080`):
//! validation, normalisation and "does this egress list cover that host".

/// Lowercases and validates a host pattern; the error says what is wrong.
/// Ports are refused: the engine matches the request authority without its
/// port, so a pattern with one could never match.
pub fn normalize(raw: &str) -> Result<String, String> {
    if raw.contains("://") {
        return Err(format!("`{raw}` includes a scheme"));
    }
    if raw.contains('/') {
        return Err(format!("`{raw}` includes a path"));
    }
    let host = raw.to_ascii_lowercase();
    let is_v6 = |s: &str| {
        s.matches(':').count() >= 2
            && s.chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
    };
    if let Some(inner) = host.strip_prefix('[') {
        return match inner.strip_suffix(']') {
            Some(v6) if is_v6(v6) => Ok(v6.to_owned()),
            _ if inner.contains("]:") => Err(format!(
                "`{raw}` includes a port; hosts are matched without their port"
            )),
            _ => Err(format!("invalid ipv6 address `{raw}`")),
        };
    }
    if is_v6(&host) {
        return Ok(host);
    }
    if host.contains(':') {
        return Err(format!(
            "`{raw}` includes a port; hosts are matched without their port"
        ));
    }
    let name = host.strip_prefix("*.").unwrap_or(&host);
    if name.is_empty() {
        return Err(format!("empty host name in `{raw}`"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(format!("empty label in host `{raw}`"));
        }
        if label.len() > 63 {
            return Err(format!("label longer than 63 characters in host `{raw}`"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            if !c.is_ascii() {
                return Err(format!(
                    "invalid character `{c}` in host `{raw}` (write internationalized names as punycode, `xn--...`)"
                ));
            }
            return Err(format!("invalid character `{c}` in host `{raw}`"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label starts or ends with `-` in host `{raw}`"));
        }
    }
    Ok(host)
}

/// Whether requests to `host` (exact or wildcard, normalised) are all
/// allowed by the `allow` pattern. `*.s` matches any name ending in `.s`
/// (any depth, not `s` itself), as Envoy's domain wildcards do.
pub fn covers(allow: &str, host: &str) -> bool {
    if allow == host {
        return true;
    }
    match allow.strip_prefix("*.") {
        Some(suffix) => {
            let name = host.strip_prefix("*.").unwrap_or(host);
            (host.starts_with("*.") && name == suffix) || name.ends_with(&format!(".{suffix}"))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_and_validates() {
        assert_eq!(normalize("API.Stripe.com").unwrap(), "api.stripe.com");
        assert_eq!(normalize("*.acme.internal").unwrap(), "*.acme.internal");
        assert_eq!(normalize("localhost").unwrap(), "localhost");
        assert_eq!(normalize("10.0.0.1").unwrap(), "10.0.0.1");
        assert_eq!(normalize("[::1]").unwrap(), "::1");
        assert_eq!(normalize("FE80::1").unwrap(), "fe80::1");
        assert!(normalize("[::1]:80").unwrap_err().contains("port"));
        assert!(normalize("localhost:8080").unwrap_err().contains("port"));
        assert!(normalize("*").is_err());
        assert!(normalize("a..b").is_err());
        assert!(normalize("a b").is_err());
        assert!(normalize("api.*.com").is_err());
        assert!(normalize("https://x.com").is_err());
        assert!(normalize("-x.com").is_err());
    }

    #[test]
    fn coverage() {
        assert!(covers("api.stripe.com", "api.stripe.com"));
        assert!(!covers("api.stripe.com", "x.stripe.com"));
        assert!(covers("*.acme.internal", "mcp.acme.internal"));
        assert!(covers("*.acme.internal", "a.b.acme.internal"));
        assert!(!covers("*.acme.internal", "acme.internal"));
        assert!(covers("*.acme.internal", "*.acme.internal"));
        assert!(covers("*.acme.internal", "*.x.acme.internal"));
        assert!(!covers("*.x.acme.internal", "*.acme.internal"));
        assert!(!covers("mcp.acme.internal", "*.acme.internal"));
    }
}
