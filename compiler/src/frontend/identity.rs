//! The `kind: Identity` document: how agents authenticate (JWT issuer,
//! audience, Ed25519 keys, claim names, token age limits).

use aegis_engine::jwt::{IdentityConfig, TrustedKey};

use super::read::Cx;
use super::yaml::{Kind, Node};

const IDENTITY_KEYS: &[&str] = &[
    "kind",
    "issuer",
    "audience",
    "keys",
    "claims",
    "max_token_age",
    "clock_skew",
    "insecure_agent_header",
    "token_header",
];
const KEY_KEYS: &[&str] = &["kid", "public_key", "public_key_file"];
const CLAIM_KEYS: &[&str] = &["agent", "tenant", "scope"];

/// Default allowed clock difference between token issuer and proxy.
const DEFAULT_SKEW_SECS: u64 = 60;

pub fn parse(cx: &mut Cx<'_>, doc: &Node) -> Option<IdentityConfig> {
    let f = cx.fields(doc, "Identity", "an identity document", IDENTITY_KEYS)?;
    let mut ok = true;

    let insecure = match f.get("insecure_agent_header") {
        Some(n) => match cx.bool(n, "insecure_agent_header") {
            Some(b) => b,
            None => {
                ok = false;
                false
            }
        },
        None => false,
    };
    if insecure {
        if let Some(k) = f.key("insecure_agent_header") {
            cx.warn(
                k,
                "insecure_agent_header trusts the `x-aegis-agent` header without a token: for local demos only",
                "remove `insecure_agent_header` and configure `issuer`, `audience` and `keys` before production",
            );
        }
    }

    let text = |cx: &mut Cx<'_>, key: &str, help: &str| -> Option<String> {
        match f.get(key) {
            Some(n) => cx.name(n, key).map(str::to_owned),
            None if insecure => Some(String::new()),
            None => {
                cx.missing(&f, key, "an identity document", help);
                None
            }
        }
    };
    let issuer = text(
        cx,
        "issuer",
        "give the token issuer (`iss` claim) as `issuer`",
    );
    let audience = text(
        cx,
        "audience",
        "give the expected token audience (`aud` claim) as `audience`",
    );

    let keys = match f.get("keys") {
        Some(n) => keys(cx, n, insecure),
        None if insecure => Some(Vec::new()),
        None => {
            cx.missing(
                &f,
                "keys",
                "an identity document",
                "list the token signing keys: `keys: [{kid: ..., public_key: ...}]`",
            );
            None
        }
    };

    let (mut agent_claim, mut tenant_claim, mut scope_claim) =
        ("sub".to_owned(), "tenant".to_owned(), "scope".to_owned());
    if let Some(n) = f.get("claims") {
        match cx.fields(n, "claims", "`claims`", CLAIM_KEYS) {
            Some(cf) => {
                for (key, slot) in [
                    ("agent", &mut agent_claim),
                    ("tenant", &mut tenant_claim),
                    ("scope", &mut scope_claim),
                ] {
                    if let Some(v) = cf.get(key) {
                        match cx.name(v, key) {
                            Some(s) => *slot = s.to_owned(),
                            None => ok = false,
                        }
                    }
                }
            }
            None => ok = false,
        }
    }

    let max_age = match f.get("max_token_age") {
        Some(n) => match duration(cx, n, "max_token_age") {
            Some(0) => {
                cx.error(
                    n,
                    "`max_token_age` must be greater than zero",
                    "use e.g. `1h`",
                );
                ok = false;
                None
            }
            Some(s) => Some(s),
            None => {
                ok = false;
                None
            }
        },
        None => None,
    };
    let skew = match f.get("clock_skew") {
        Some(n) => duration(cx, n, "clock_skew"),
        None => Some(DEFAULT_SKEW_SECS),
    };
    let token_header = match f.get("token_header") {
        Some(n) => token_header(cx, n),
        None => Some(aegis_engine::jwt::DEFAULT_TOKEN_HEADER.to_owned()),
    };

    if !ok {
        return None;
    }
    Some(IdentityConfig {
        issuer: issuer?,
        audience: audience?,
        keys: keys?,
        agent_claim,
        tenant_claim,
        scope_claim,
        max_age_secs: max_age,
        skew_secs: skew?,
        insecure_agent_header: insecure,
        token_header: token_header?,
    })
}

/// Headers that mean something else to the proxy, the upstream or Aegis
/// itself: a token there would be read, or removed, for another purpose.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "cookie",
    "x-request-id",
    "traceparent",
    "tracestate",
    "x-aegis-agent",
    "x-aegis-tenant",
    "x-aegis-approval",
    "x-aegis-decision",
    "x-aegis-shadow-decision",
    "mcp-session-id",
    "mcp-method",
    "mcp-name",
    "mcp-protocol-version",
];

/// `token_header`: an HTTP header name, stored in lower case.
fn token_header(cx: &mut Cx<'_>, node: &Node) -> Option<String> {
    let name = cx.name(node, "token_header")?;
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        cx.error(
            node,
            format!("`token_header` `{name}` is not an http header name"),
            "use letters, digits and `-`, e.g. `x-aegis-token` or `proxy-authorization`",
        );
        return None;
    }
    let lower = name.to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("mcp-param-") {
        cx.error(
            node,
            format!("`token_header` cannot be `{lower}`: that header means something else on the way upstream"),
            "use `authorization` (the default), `proxy-authorization` or a header of your own such as `x-aegis-token`",
        );
        return None;
    }
    Some(lower)
}

fn keys(cx: &mut Cx<'_>, node: &Node, insecure: bool) -> Option<Vec<TrustedKey>> {
    let items = cx.seq(node, "keys")?;
    if items.is_empty() && !insecure {
        cx.error(
            node,
            "`keys` must not be empty",
            "list at least one token signing key",
        );
        return None;
    }
    let mut ok = true;
    let mut out: Vec<TrustedKey> = Vec::with_capacity(items.len());
    for item in items {
        match key(cx, item) {
            Some((kid, kid_node, bytes)) => {
                if out.iter().any(|k| k.kid == kid) {
                    cx.error(
                        kid_node,
                        format!("duplicate key id `{kid}`"),
                        "each key needs its own `kid`",
                    );
                    ok = false;
                } else {
                    out.push(TrustedKey { kid, key: bytes });
                }
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn key<'n>(cx: &mut Cx<'_>, node: &'n Node) -> Option<(String, &'n Node, [u8; 32])> {
    let f = cx.fields(node, "keys", "a key", KEY_KEYS)?;
    let kid_node = cx.required(
        &f,
        "kid",
        "a key",
        "give the key id (`kid` in the token header)",
    );
    let kid = kid_node.and_then(|n| cx.name(n, "kid"));
    let bytes = match (f.get("public_key"), f.get("public_key_file")) {
        (Some(_), Some(file)) => {
            cx.error(
                file,
                "give either `public_key` or `public_key_file`, not both",
                "remove one of them",
            );
            None
        }
        (Some(n), None) => cx.str(n, "public_key").and_then(|s| match decode_key(s) {
            Ok(b) => Some(b),
            Err(why) => {
                cx.error(n, format!("invalid `public_key`: {why}"), KEY_HELP);
                None
            }
        }),
        (None, Some(n)) => {
            let rel = cx.name(n, "public_key_file")?;
            let path = cx.file.dir.join(rel);
            match std::fs::read_to_string(&path) {
                Ok(text) => match decode_key(&text) {
                    Ok(b) => Some(b),
                    Err(why) => {
                        cx.error(
                            n,
                            format!("invalid key in `{}`: {why}", path.display()),
                            KEY_HELP,
                        );
                        None
                    }
                },
                Err(e) => {
                    cx.error(
                        n,
                        format!("cannot read `{}`: {e}", path.display()),
                        "`public_key_file` is relative to the directory of this YAML file",
                    );
                    None
                }
            }
        }
        (None, None) => {
            cx.missing(
                &f,
                "public_key",
                "a key",
                "give `public_key` (base64 or PEM) or `public_key_file`",
            );
            None
        }
    };
    Some((kid?.to_owned(), kid_node?, bytes?))
}

const KEY_HELP: &str = "give the Ed25519 public key as base64 of its 32 raw bytes, \
     or as a PEM block starting with `-----BEGIN PUBLIC KEY-----`";

/// Raw 32-byte Ed25519 key from base64 (any common alphabet) or SPKI PEM.
pub fn decode_key(text: &str) -> Result<[u8; 32], String> {
    // One parser for every public key the project reads: it also refuses
    // weak (small-order) keys, which would otherwise fail only at load time.
    crate::keys::parse_verifying_key(text)
        .map(|k| k.to_bytes())
        .map_err(|e| e.to_string())
}

/// `30s`, `15m`, `1h`, `2d`, or a whole number of seconds.
pub fn duration(cx: &mut Cx<'_>, node: &Node, what: &str) -> Option<u64> {
    let parsed = match &node.kind {
        Kind::Int(i) => u64::try_from(*i).ok(),
        Kind::Str(s) => parse_duration(s),
        _ => None,
    };
    if parsed.is_none() {
        let shown = node
            .scalar_text()
            .unwrap_or_else(|| node.type_name().to_owned());
        cx.error(
            node,
            format!("invalid duration `{shown}` for `{what}`"),
            "use a whole number of seconds or a number followed by `s`, `m`, `h` or `d`, e.g. `15m`",
        );
    }
    parsed
}

fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    let unit_at = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(unit_at);
    let n: u64 = digits.parse().ok()?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(30));
        assert_eq!(parse_duration("15m"), Some(900));
        assert_eq!(parse_duration("1h"), Some(3600));
        assert_eq!(parse_duration("2d"), Some(172_800));
        assert_eq!(parse_duration("45"), Some(45));
        assert_eq!(parse_duration("1w"), None);
        assert_eq!(parse_duration("h"), None);
        assert_eq!(parse_duration("-1s"), None);
    }
}
