//! Host patterns (`api.stripe.com`, `*.acme.internal`, `localhost:8080`):
//! validation, normalisation and "does this egress list cover that host".

/// Lowercases and validates a host pattern; the error says what is wrong.
pub fn normalize(raw: &str) -> Result<String, String> {
    if raw.contains("://") {
        return Err(format!("`{raw}` includes a scheme"));
    }
    if raw.contains('/') {
        return Err(format!("`{raw}` includes a path"));
    }
    let host = raw.to_ascii_lowercase();
    let name = host.strip_prefix("*.").unwrap_or(&host);
    let (name, port) = split_port(name);
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("invalid port in host `{raw}`"));
        }
        if port.parse::<u32>().map_or(true, |p| p == 0 || p > 65535) {
            return Err(format!("port out of range in host `{raw}`"));
        }
    }
    if name.starts_with('[') {
        let ok = name.len() > 2
            && name.ends_with(']')
            && name
                .trim_start_matches('[')
                .trim_end_matches(']')
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.');
        if ok && !host.starts_with("*.") {
            return Ok(host);
        }
        return Err(format!("invalid ipv6 host `{raw}`"));
    }
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
            return Err(format!("invalid character `{c}` in host `{raw}`"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label starts or ends with `-` in host `{raw}`"));
        }
    }
    Ok(host)
}

fn split_port(host: &str) -> (&str, Option<&str>) {
    if host.starts_with('[') {
        return match host.rfind("]:") {
            Some(i) => (host.get(..=i).unwrap_or(host), host.get(i + 2..)),
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (host, None),
    }
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
        assert_eq!(normalize("localhost:8080").unwrap(), "localhost:8080");
        assert_eq!(normalize("[::1]:80").unwrap(), "[::1]:80");
        assert!(normalize("*").is_err());
        assert!(normalize("a..b").is_err());
        assert!(normalize("a b").is_err());
        assert!(normalize("api.*.com").is_err());
        assert!(normalize("https://x.com").is_err());
        assert!(normalize("x.com:99999").is_err());
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
