//! The plugin configuration: JSON from Envoy's `configuration` (or Istio's
//! `pluginConfig`), parsed once in `on_configure`.
//!
//! ```json
//! {
//!   "trusted_keys": ["MCowBQYDK2VwAyEA...", "-----BEGIN PUBLIC KEY-----\n..."],
//!   "bundle": "QUVHSVNCTkQBAAAA...",
//!   "max_body_bytes": 1048576,
//!   "allow_on_headers_stop_iteration": true,
//!   "filter_state": ["aegis_decision", "aegis_rule", "aegis_request_id"],
//!   "tool_host_from_route": false,
//!   "token_cache": {"entries": 4096, "max_token_bytes": 1024}
//! }
//! ```
//!
//! Every key is optional; an empty configuration means "the embedded
//! bundle, unsigned or signed by anyone, 1 MiB bodies". Unknown keys are
//! errors.

use crate::state_keys as keys;
use aegis_engine::jwt::{TokenCacheConfig, MAX_TOKEN_LEN};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ed25519_dalek::VerifyingKey;
use serde::Deserialize;

/// Default for `max_body_bytes`: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Raw Ed25519 public keys; when not empty the bundle must be signed by
    /// one of them.
    pub trusted_keys: Vec<[u8; 32]>,
    /// Bundle bytes given in the configuration, used instead of the
    /// embedded one.
    pub bundle: Option<Vec<u8>>,
    /// Largest request body the filter buffers to judge; larger: 413.
    pub max_body_bytes: usize,
    /// Envoy holds request headers while the filter pauses in the headers
    /// callback (Envoy's `allow_on_headers_stop_iteration: true`). Without
    /// it a pause there would stall the request: headers are then
    /// forwarded and only the body is held.
    pub hold_headers: bool,
    /// Filter-state keys written for access logs: bit `i` for
    /// `keys::ALL[i]`. All by default; each costs a host call.
    pub filter_state: u16,
    /// Base-URL mode: judge a request as a call to the tool host its route
    /// names (route metadata `filter_metadata.aegis.host`). Reading route
    /// metadata costs Envoy about 12 µs per request, so only listeners
    /// that bind routes to tools turn it on.
    pub tool_host_from_route: bool,
    /// Size of each VM's verified-token cache (`entries: 0`: off).
    pub token_cache: TokenCacheConfig,
    /// The control plane the filter calls for budgets and approvals, and
    /// polls for bundles; `None`: no calls out of the proxy.
    pub control_plane: Option<ControlPlane>,
    /// Enforce the policy's `budget.rps` in this proxy (`rate_limits`);
    /// by default on when a control plane is configured.
    pub rate_limits: bool,
}

/// What the filter does with a call when the control plane fails it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    Allow,
    Deny,
}

impl OnFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::Allow => "allowed",
            OnFailure::Deny => "denied",
        }
    }
}

/// How the filter reaches the control plane (`control_plane`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlane {
    /// The Envoy cluster the calls go to.
    pub cluster: String,
    /// `:authority` of the calls.
    pub authority: String,
    /// The gateway's service token, as `Bearer <token>`.
    pub bearer: String,
    /// Each call's timeout (Envoy ends the call after it).
    pub timeout_ms: u64,
    /// How often a worker polls for a new bundle; 0: never.
    pub bundle_poll_ms: u64,
    /// How long a call that needs approval is held while a person decides;
    /// 0: answered at once with the approval's id.
    pub approval_hold_ms: u64,
    /// A lease asks for this many calls of the rule's cost.
    pub lease_calls: u32,
    /// How often running leases report what they spent.
    pub settle_ms: u64,
    /// What a read does when the control plane fails it.
    pub reads: OnFailure,
    /// What a write (POST, PUT, PATCH, DELETE, `write: true`) does.
    pub writes: OnFailure,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            trusted_keys: Vec::new(),
            bundle: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            hold_headers: false,
            filter_state: keys::EVERY,
            tool_host_from_route: false,
            token_cache: TokenCacheConfig::DEFAULT,
            control_plane: None,
            rate_limits: false,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    trusted_keys: Vec<String>,
    #[serde(default)]
    bundle: Option<String>,
    #[serde(default)]
    max_body_bytes: Option<u64>,
    #[serde(default)]
    allow_on_headers_stop_iteration: bool,
    #[serde(default)]
    filter_state: Option<Vec<String>>,
    #[serde(default)]
    tool_host_from_route: bool,
    #[serde(default)]
    token_cache: Option<RawTokenCache>,
    #[serde(default)]
    control_plane: Option<RawControlPlane>,
    #[serde(default)]
    rate_limits: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControlPlane {
    cluster: String,
    #[serde(default)]
    authority: Option<String>,
    token: String,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    bundle_poll_ms: Option<u64>,
    #[serde(default)]
    approval_hold_ms: Option<u64>,
    #[serde(default)]
    lease_calls: Option<u64>,
    #[serde(default)]
    settle_ms: Option<u64>,
    #[serde(default)]
    on_failure: Option<RawOnFailure>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOnFailure {
    #[serde(default)]
    reads: Option<String>,
    #[serde(default)]
    writes: Option<String>,
}

/// `key` of `control_plane`: `default` when absent, else within
/// `min..=max`.
fn ranged(key: &str, v: Option<u64>, default: u64, min: u64, max: u64) -> Result<u64, String> {
    match v {
        None => Ok(default),
        Some(n) if (min..=max).contains(&n) => Ok(n),
        Some(n) => Err(format!(
            "`control_plane.{key}` must be between {min} and {max}, not {n}"
        )),
    }
}

fn on_failure(key: &str, v: Option<String>, default: OnFailure) -> Result<OnFailure, String> {
    match v.as_deref() {
        None => Ok(default),
        Some("allow") => Ok(OnFailure::Allow),
        Some("deny") => Ok(OnFailure::Deny),
        Some(other) => Err(format!(
            "`control_plane.on_failure.{key}` must be `allow` or `deny`, not `{other}`"
        )),
    }
}

impl RawControlPlane {
    fn check(self) -> Result<ControlPlane, String> {
        let cluster = self.cluster.trim().to_owned();
        if cluster.is_empty() {
            return Err("`control_plane.cluster` is empty".into());
        }
        let token = self.token.trim();
        if token.is_empty() || token.contains(char::is_whitespace) {
            return Err("`control_plane.token` must be the gateway's service token".into());
        }
        let authority = self.authority.unwrap_or_else(|| cluster.clone());
        let bundle_poll_ms = match self.bundle_poll_ms {
            Some(0) => 0,
            v => ranged("bundle_poll_ms", v, 10_000, 1_000, 86_400_000)?,
        };
        let (reads, writes) = match self.on_failure {
            None => (OnFailure::Allow, OnFailure::Deny),
            Some(f) => (
                on_failure("reads", f.reads, OnFailure::Allow)?,
                on_failure("writes", f.writes, OnFailure::Deny)?,
            ),
        };
        Ok(ControlPlane {
            bearer: format!("Bearer {token}"),
            timeout_ms: ranged("timeout_ms", self.timeout_ms, 300, 1, 60_000)?,
            bundle_poll_ms,
            approval_hold_ms: ranged("approval_hold_ms", self.approval_hold_ms, 0, 0, 600_000)?,
            lease_calls: ranged(
                "lease_calls",
                self.lease_calls,
                u64::from(crate::budget::DEFAULT_LEASE_CALLS),
                1,
                100_000,
            )? as u32,
            settle_ms: ranged("settle_ms", self.settle_ms, 1_000, 100, 3_600_000)?,
            reads,
            writes,
            cluster,
            authority,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTokenCache {
    #[serde(default)]
    entries: Option<u64>,
    #[serde(default)]
    max_token_bytes: Option<u64>,
}

/// Most entries a token cache may have: 2^20 tokens of 1 KiB are already
/// 1 GiB per VM.
const MAX_TOKEN_CACHE_ENTRIES: u64 = 1 << 20;

/// SPKI DER prefix of an Ed25519 public key (RFC 8410): SEQUENCE {
/// SEQUENCE { OID 1.3.101.112 }, BIT STRING (32 bytes) }.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

fn decode_b64(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(compact.as_bytes()).ok())
}

/// An Ed25519 public key: SPKI PEM, or base64 of its 32 raw bytes (the
/// same forms `aegis` accepts). Off-curve and weak keys are refused.
pub fn parse_public_key(text: &str) -> Result<[u8; 32], String> {
    let text = text.trim();
    let raw = if let Some(rest) = text.strip_prefix("-----BEGIN ") {
        let label = rest.split("-----").next().unwrap_or_default();
        if label != "PUBLIC KEY" {
            return Err(if label.contains("PRIVATE") {
                "this is a private key; give the public key (`.pub` file)".into()
            } else {
                format!("a PEM `{label}` block is not an SPKI public key")
            });
        }
        let body: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("-----"))
            .collect();
        let der = decode_b64(&body).ok_or("the PEM body is not base64")?;
        match der.strip_prefix(&SPKI_PREFIX[..]) {
            Some(key) if key.len() == 32 => key.to_vec(),
            _ => return Err("not an SPKI PEM Ed25519 public key".into()),
        }
    } else {
        decode_b64(text).ok_or("neither PEM nor base64")?
    };
    let bytes: [u8; 32] = raw
        .as_slice()
        .try_into()
        .map_err(|_| format!("decodes to {} bytes, expected 32", raw.len()))?;
    let vk = VerifyingKey::from_bytes(&bytes).map_err(|_| "not a point on the curve")?;
    if vk.is_weak() {
        return Err("weak (small order) key".into());
    }
    Ok(bytes)
}

impl Config {
    /// Parses the plugin configuration. Empty (or blank) means defaults.
    /// Errors are one line, ready for the log.
    pub fn parse(bytes: &[u8]) -> Result<Config, String> {
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(Config::default());
        }
        // serde also reads a struct from a JSON array; only objects make sense.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err("the configuration must be a JSON object".into());
        }
        let raw: Raw = serde_json::from_slice(bytes).map_err(|e| format!("{e}"))?;
        let mut trusted_keys = Vec::with_capacity(raw.trusted_keys.len());
        for (i, k) in raw.trusted_keys.iter().enumerate() {
            trusted_keys.push(
                parse_public_key(k).map_err(|e| {
                    format!("`trusted_keys[{i}]` is not an Ed25519 public key: {e}")
                })?,
            );
        }
        let bundle = match raw.bundle {
            None => None,
            Some(b) => {
                let bytes = decode_b64(&b).ok_or("`bundle` is not base64")?;
                if bytes.is_empty() {
                    return Err("`bundle` is empty".into());
                }
                Some(bytes)
            }
        };
        let max_body_bytes = match raw.max_body_bytes {
            None => DEFAULT_MAX_BODY_BYTES,
            Some(0) => return Err("`max_body_bytes` must be at least 1".into()),
            Some(n) => usize::try_from(n)
                .ok()
                .filter(|n| u32::try_from(*n).is_ok())
                .ok_or_else(|| format!("`max_body_bytes` {n} is too large (at most 4294967295)"))?,
        };
        let filter_state = match raw.filter_state {
            None => keys::EVERY,
            Some(names) => {
                let mut bits = 0u16;
                for (i, name) in names.iter().enumerate() {
                    let Some(k) = keys::ALL.iter().position(|k| k == name) else {
                        return Err(format!(
                            "`filter_state[{i}]`: unknown key `{name}` (the keys are {})",
                            keys::ALL.join(", ")
                        ));
                    };
                    bits |= 1 << k;
                }
                bits
            }
        };
        let token_cache = match raw.token_cache {
            None => TokenCacheConfig::DEFAULT,
            Some(t) => {
                let entries = t
                    .entries
                    .unwrap_or(TokenCacheConfig::DEFAULT.entries as u64);
                if entries > MAX_TOKEN_CACHE_ENTRIES {
                    return Err(format!(
                        "`token_cache.entries` {entries} is too large (at most \
                         {MAX_TOKEN_CACHE_ENTRIES}; 0 turns the cache off)"
                    ));
                }
                let max = t
                    .max_token_bytes
                    .unwrap_or(TokenCacheConfig::DEFAULT.max_token_bytes as u64);
                if max == 0 || max > MAX_TOKEN_LEN as u64 {
                    return Err(format!(
                        "`token_cache.max_token_bytes` must be between 1 and {MAX_TOKEN_LEN}, \
                         not {max}"
                    ));
                }
                TokenCacheConfig {
                    entries: entries as usize,
                    max_token_bytes: max as usize,
                }
            }
        };
        Ok(Config {
            trusted_keys,
            bundle,
            max_body_bytes,
            hold_headers: raw.allow_on_headers_stop_iteration,
            filter_state,
            tool_host_from_route: raw.tool_host_from_route,
            token_cache,
            rate_limits: raw.rate_limits.unwrap_or(raw.control_plane.is_some()),
            control_plane: raw.control_plane.map(RawControlPlane::check).transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A valid key: the Ed25519 base point's encoding is not weak; use the
    // RFC 8032 test 1 public key instead of inventing bytes.
    const RFC8032_PK: [u8; 32] = [
        0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64, 0x07,
        0x3a, 0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68, 0xf7, 0x07,
        0x51, 0x1a,
    ];

    fn pem(key: &[u8; 32]) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(key);
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            STANDARD.encode(der)
        )
    }

    #[test]
    fn empty_configuration_is_the_default() {
        assert_eq!(Config::parse(b"").unwrap(), Config::default());
        assert_eq!(Config::parse(b"  \n").unwrap(), Config::default());
        assert_eq!(Config::parse(b"{}").unwrap(), Config::default());
        assert_eq!(Config::default().max_body_bytes, 1024 * 1024);
    }

    #[test]
    fn full_configuration() {
        let json = serde_json::json!({
            "trusted_keys": [STANDARD.encode(RFC8032_PK), pem(&RFC8032_PK)],
            "bundle": STANDARD.encode(b"AEGISBND...."),
            "max_body_bytes": 4096,
            "allow_on_headers_stop_iteration": true,
            "tool_host_from_route": true,
        });
        let c = Config::parse(json.to_string().as_bytes()).unwrap();
        assert!(c.tool_host_from_route);
        assert_eq!(c.trusted_keys, vec![RFC8032_PK, RFC8032_PK]);
        assert_eq!(c.bundle.as_deref(), Some(&b"AEGISBND...."[..]));
        assert_eq!(c.max_body_bytes, 4096);
        assert!(c.hold_headers);
        assert_eq!(c.token_cache, TokenCacheConfig::DEFAULT);
    }

    #[test]
    fn token_cache_size() {
        let tc = |json: &str| Config::parse(json.as_bytes()).map(|c| c.token_cache);
        assert_eq!(
            tc(r#"{"token_cache": {"entries": 100}}"#),
            Ok(TokenCacheConfig {
                entries: 100,
                max_token_bytes: 1024
            })
        );
        assert_eq!(
            tc(r#"{"token_cache": {"entries": 0}}"#).map(|t| t.entries),
            Ok(0)
        );
        assert_eq!(
            tc(r#"{"token_cache": {"max_token_bytes": 2048}}"#),
            Ok(TokenCacheConfig {
                entries: 4096,
                max_token_bytes: 2048
            })
        );
        assert_eq!(
            tc(r#"{"token_cache": {"max_token_bytes": 0}}"#).unwrap_err(),
            "`token_cache.max_token_bytes` must be between 1 and 8192, not 0"
        );
        assert!(tc(r#"{"token_cache": {"entries": 2000000}}"#)
            .unwrap_err()
            .contains("too large"));
        assert!(tc(r#"{"token_cache": {"size": 1}}"#)
            .unwrap_err()
            .contains("unknown field `size`"));
    }

    #[test]
    fn filter_state_names_the_keys_to_write() {
        let bits = |json: &str| Config::parse(json.as_bytes()).map(|c| c.filter_state);
        assert_eq!(bits("{}"), Ok(keys::EVERY));
        assert_eq!(keys::EVERY.count_ones() as usize, keys::ALL.len());
        assert_eq!(bits(r#"{"filter_state": []}"#), Ok(0));
        assert_eq!(
            bits(r#"{"filter_state": ["aegis_rule", "aegis_decision", "aegis_rule"]}"#),
            Ok(0b101)
        );
        let e = bits(r#"{"filter_state": ["aegis_decision", "wasm.aegis_rule"]}"#).unwrap_err();
        assert!(
            e.starts_with("`filter_state[1]`: unknown key `wasm.aegis_rule` (the keys are aegis_decision, aegis_reason,"),
            "{e}"
        );
        assert!(bits(r#"{"filter_state": "aegis_rule"}"#).is_err());
    }

    #[test]
    fn keys_in_every_base64_flavour() {
        for e in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
            assert_eq!(parse_public_key(&e.encode(RFC8032_PK)).unwrap(), RFC8032_PK);
        }
        // A wrapped base64 bundle (as `base64` prints it) is fine too.
        let wrapped = "QUVH\nSVNC\r\nTkQ=";
        assert_eq!(decode_b64(wrapped).unwrap(), b"AEGISBND");
    }

    #[test]
    fn bad_keys_are_explained() {
        let err = |k: &str| parse_public_key(k).unwrap_err();
        assert_eq!(err("!!"), "neither PEM nor base64");
        assert_eq!(
            err(&STANDARD.encode([1u8; 31])),
            "decodes to 31 bytes, expected 32"
        );
        // The identity point has small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(err(&STANDARD.encode(identity)), "weak (small order) key");
        assert!(
            err("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----")
                .contains("private key")
        );
        assert!(err("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----").contains("SPKI"));
    }

    #[test]
    fn configuration_errors_are_one_clear_line() {
        let err = |j: &str| Config::parse(j.as_bytes()).unwrap_err();
        let e = err(r#"{"trusted_key": []}"#);
        assert!(e.contains("unknown field `trusted_key`"), "{e}");
        assert!(e.contains("`trusted_keys`"), "{e}");
        let e = err(r#"{"trusted_keys": ["AAAA"]}"#);
        assert_eq!(
            e,
            "`trusted_keys[0]` is not an Ed25519 public key: decodes to 3 bytes, expected 32"
        );
        assert_eq!(err(r#"{"bundle": "@@"}"#), "`bundle` is not base64");
        assert_eq!(err(r#"{"bundle": ""}"#), "`bundle` is empty");
        assert_eq!(
            err(r#"{"max_body_bytes": 0}"#),
            "`max_body_bytes` must be at least 1"
        );
        assert!(err(r#"{"max_body_bytes": 99999999999}"#).contains("too large"));
        assert!(err(r#"{"max_body_bytes": -1}"#).contains("invalid value"));
        assert!(err("{").contains("EOF"));
        assert_eq!(err("[]"), "the configuration must be a JSON object");
        assert_eq!(err("\"x\""), "the configuration must be a JSON object");
        for e in [err("{"), err(r#"{"x": 1}"#)] {
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
