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
//!   "token_cache": {"entries": 4096, "max_token_bytes": 1024},
//!   "control_plane": {"cluster": "aegis_control", "token": "eyJ..."},
//!   "rate_limits": true
//! }
//! ```
//!
//! Every key is optional; an empty configuration means "the embedded
//! bundle, unsigned or signed by anyone, 1 MiB bodies, no control plane".
//! Unknown keys are errors. `control_plane` configures the callouts to
//! `aegis serve` (see [`ControlPlane`]); `rate_limits` the per-proxy
//! `budget.rps` (on by default with a control plane).

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
    /// The callouts to `aegis serve`; `None`: no callouts.
    pub control_plane: Option<ControlPlane>,
    /// Enforce the policy's `budget.rps` in this proxy (`rate_limits`);
    /// by default on when a control plane is configured.
    pub rate_limits: bool,
}

/// `control_plane`: how the filter calls `aegis serve` (budget leases,
/// approvals, bundle polls), as Envoy `dispatch_http_call`s.
#[derive(Clone, PartialEq, Eq)]
pub struct ControlPlane {
    /// The Envoy cluster the callouts go to.
    pub cluster: String,
    /// `:authority` of the callouts (default: the cluster name).
    pub authority: String,
    /// The gateway's service token (`Authorization: Bearer`).
    pub token: String,
    /// Each callout's timeout.
    pub timeout_ms: u32,
    /// Period of the bundle hot-reload poll; 0: no polling.
    pub bundle_poll_ms: u32,
    /// How long an `approval_needed` call is held waiting for a person;
    /// 0: answered at once with the approval id.
    pub approval_hold_ms: u32,
    /// A budget lease covers this many calls of the cost of the call that
    /// asked for it.
    pub lease_calls: u32,
    /// How often running leases are reported.
    pub settle_ms: u32,
    /// What a call gets when a callout it needs fails.
    pub on_failure: FailPolicy,
}

// By hand, to keep the token out of logs.
impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("cluster", &self.cluster)
            .field("authority", &self.authority)
            .field("token", &"<redacted>")
            .field("timeout_ms", &self.timeout_ms)
            .field("bundle_poll_ms", &self.bundle_poll_ms)
            .field("approval_hold_ms", &self.approval_hold_ms)
            .field("lease_calls", &self.lease_calls)
            .field("settle_ms", &self.settle_ms)
            .field("on_failure", &self.on_failure)
            .finish()
    }
}

/// What happens to a call when the control plane is down, slow or
/// answers garbage: reads and writes (POST, PUT, PATCH, DELETE, or an
/// action with `write: true`) apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailPolicy {
    pub reads: OnFailure,
    pub writes: OnFailure,
}

impl Default for FailPolicy {
    /// Reads fail open, writes closed (DESIGN.md section 4).
    fn default() -> Self {
        FailPolicy {
            reads: OnFailure::Allow,
            writes: OnFailure::Deny,
        }
    }
}

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

/// Default of `control_plane.lease_calls`: a lease covers this many calls
/// of the cost of the call that asked for it.
pub const DEFAULT_LEASE_CALLS: u32 = 10;

impl ControlPlane {
    /// The `Authorization` header of the calls.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    pub const DEFAULT_TIMEOUT_MS: u32 = 300;
    pub const DEFAULT_BUNDLE_POLL_MS: u32 = 10_000;
    pub const DEFAULT_SETTLE_MS: u32 = 1_000;
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
    /// Read in a second step, so that its errors name it.
    #[serde(default)]
    control_plane: Option<serde_json::Value>,
    #[serde(default)]
    rate_limits: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControlPlane {
    #[serde(default)]
    cluster: Option<String>,
    #[serde(default)]
    authority: Option<String>,
    #[serde(default)]
    token: Option<String>,
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
    on_failure: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFailPolicy {
    #[serde(default)]
    reads: Option<String>,
    #[serde(default)]
    writes: Option<String>,
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

/// `value` of `control_plane.<key>`, `default` when absent, within
/// `range`.
fn ranged(
    key: &str,
    value: Option<u64>,
    default: u32,
    range: std::ops::RangeInclusive<u32>,
    hint: &str,
) -> Result<u32, String> {
    let Some(v) = value else {
        return Ok(default);
    };
    match u32::try_from(v) {
        Ok(v) if range.contains(&v) => Ok(v),
        _ => Err(format!(
            "`control_plane.{key}` must be between {} and {}{hint}, not {v}",
            range.start(),
            range.end()
        )),
    }
}

fn on_failure(key: &str, value: Option<String>, default: OnFailure) -> Result<OnFailure, String> {
    match value.as_deref() {
        None => Ok(default),
        Some("allow") => Ok(OnFailure::Allow),
        Some("deny") => Ok(OnFailure::Deny),
        Some(other) => Err(format!(
            "`control_plane.on_failure.{key}` must be `allow` or `deny`, not `{other}`"
        )),
    }
}

impl ControlPlane {
    fn parse(value: serde_json::Value) -> Result<ControlPlane, String> {
        if !value.is_object() {
            return Err("`control_plane` must be a JSON object".into());
        }
        let raw: RawControlPlane =
            serde_json::from_value(value).map_err(|e| format!("`control_plane`: {e}"))?;
        let cluster = match raw.cluster {
            Some(c) if !c.trim().is_empty() => c,
            _ => {
                return Err(
                    "`control_plane.cluster` is required: the Envoy cluster of `aegis serve`"
                        .into(),
                )
            }
        };
        let authority = match raw.authority {
            None => cluster.clone(),
            Some(a) if a.trim().is_empty() || a.chars().any(|c| c.is_ascii_whitespace()) => {
                return Err(format!(
                    "`control_plane.authority` must be a host name, not `{a}`"
                ))
            }
            Some(a) => a,
        };
        let token = match raw.token {
            None => {
                return Err("`control_plane.token` is required: the gateway's service token".into())
            }
            Some(t) if t.is_empty() => return Err("`control_plane.token` is empty".into()),
            // It goes into a header: no spaces, no control characters.
            Some(t) if !t.bytes().all(|b| b.is_ascii_graphic()) => {
                return Err("`control_plane.token` must be printable ASCII without spaces".into())
            }
            Some(t) => t,
        };
        let timeout_ms = ranged(
            "timeout_ms",
            raw.timeout_ms,
            ControlPlane::DEFAULT_TIMEOUT_MS,
            1..=60_000,
            "",
        )?;
        let bundle_poll_ms = match raw.bundle_poll_ms {
            Some(0) => 0,
            v => ranged(
                "bundle_poll_ms",
                v,
                ControlPlane::DEFAULT_BUNDLE_POLL_MS,
                1_000..=86_400_000,
                " (or 0: no polling)",
            )?,
        };
        let approval_hold_ms =
            ranged("approval_hold_ms", raw.approval_hold_ms, 0, 0..=600_000, "")?;
        let lease_calls = ranged(
            "lease_calls",
            raw.lease_calls,
            DEFAULT_LEASE_CALLS,
            1..=100_000,
            "",
        )?;
        let settle_ms = ranged(
            "settle_ms",
            raw.settle_ms,
            ControlPlane::DEFAULT_SETTLE_MS,
            100..=3_600_000,
            "",
        )?;
        let on_failure = match raw.on_failure {
            None | Some(serde_json::Value::Null) => FailPolicy::default(),
            Some(v) if !v.is_object() => {
                return Err("`control_plane.on_failure` must be a JSON object".into())
            }
            Some(v) => {
                let r: RawFailPolicy = serde_json::from_value(v)
                    .map_err(|e| format!("`control_plane.on_failure`: {e}"))?;
                let d = FailPolicy::default();
                FailPolicy {
                    reads: on_failure("reads", r.reads, d.reads)?,
                    writes: on_failure("writes", r.writes, d.writes)?,
                }
            }
        };
        Ok(ControlPlane {
            cluster,
            authority,
            token,
            timeout_ms,
            bundle_poll_ms,
            approval_hold_ms,
            lease_calls,
            settle_ms,
            on_failure,
        })
    }
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
        let control_plane = match raw.control_plane {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(ControlPlane::parse(v)?),
        };
        Ok(Config {
            trusted_keys,
            bundle,
            max_body_bytes,
            hold_headers: raw.allow_on_headers_stop_iteration,
            filter_state,
            tool_host_from_route: raw.tool_host_from_route,
            token_cache,
            rate_limits: raw.rate_limits.unwrap_or(control_plane.is_some()),
            control_plane,
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

    fn control_plane(json: serde_json::Value) -> Result<ControlPlane, String> {
        let c = Config::parse(
            serde_json::json!({ "control_plane": json })
                .to_string()
                .as_bytes(),
        )?;
        Ok(c.control_plane.unwrap())
    }

    #[test]
    fn no_control_plane_means_no_callouts() {
        assert_eq!(Config::parse(b"{}").unwrap().control_plane, None);
        assert_eq!(
            Config::parse(br#"{"control_plane": null}"#)
                .unwrap()
                .control_plane,
            None
        );
    }

    #[test]
    fn control_plane_defaults() {
        let c = control_plane(serde_json::json!({"cluster": "aegis_control", "token": "eyJ.a.b"}))
            .unwrap();
        assert_eq!(
            c,
            ControlPlane {
                cluster: "aegis_control".into(),
                authority: "aegis_control".into(),
                token: "eyJ.a.b".into(),
                timeout_ms: 300,
                bundle_poll_ms: 10_000,
                approval_hold_ms: 0,
                lease_calls: 10,
                settle_ms: 1_000,
                on_failure: FailPolicy {
                    reads: OnFailure::Allow,
                    writes: OnFailure::Deny
                },
            }
        );
        // The token never reaches a log through `Debug`.
        let debug = format!(
            "{:?}",
            Config::parse(br#"{"control_plane": {"cluster": "c", "token": "secret-jwt"}}"#)
                .unwrap()
        );
        assert!(!debug.contains("secret-jwt"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }

    #[test]
    fn control_plane_in_full() {
        let c = control_plane(serde_json::json!({
            "cluster": "aegis_control",
            "authority": "aegis-control.internal",
            "token": "eyJ.a.b",
            "timeout_ms": 60000,
            "bundle_poll_ms": 0,
            "approval_hold_ms": 600000,
            "lease_calls": 100000,
            "settle_ms": 100,
            "on_failure": {"reads": "deny", "writes": "allow"},
        }))
        .unwrap();
        assert_eq!(c.authority, "aegis-control.internal");
        assert_eq!(
            (
                c.timeout_ms,
                c.bundle_poll_ms,
                c.approval_hold_ms,
                c.lease_calls,
                c.settle_ms
            ),
            (60_000, 0, 600_000, 100_000, 100)
        );
        assert_eq!(
            c.on_failure,
            FailPolicy {
                reads: OnFailure::Deny,
                writes: OnFailure::Allow
            }
        );
        let c = control_plane(
            serde_json::json!({"cluster": "c", "token": "t", "on_failure": {"reads": "deny"}}),
        )
        .unwrap();
        assert_eq!(c.on_failure.writes, OnFailure::Deny);
    }

    #[test]
    fn control_plane_errors_name_the_key() {
        let err = |extra: serde_json::Value| {
            let mut v = serde_json::json!({"cluster": "c", "token": "t"});
            for (k, x) in extra.as_object().unwrap() {
                if x.is_null() {
                    v.as_object_mut().unwrap().remove(k);
                } else {
                    v[k] = x.clone();
                }
            }
            control_plane(v).unwrap_err()
        };
        use serde_json::json;
        assert_eq!(
            err(json!({"cluster": null})),
            "`control_plane.cluster` is required: the Envoy cluster of `aegis serve`"
        );
        assert!(err(json!({"cluster": " "})).starts_with("`control_plane.cluster` is required"));
        assert_eq!(
            err(json!({"token": null})),
            "`control_plane.token` is required: the gateway's service token"
        );
        assert_eq!(err(json!({"token": ""})), "`control_plane.token` is empty");
        assert_eq!(
            err(json!({"token": "Bearer abc"})),
            "`control_plane.token` must be printable ASCII without spaces"
        );
        assert_eq!(
            err(json!({"authority": "a b"})),
            "`control_plane.authority` must be a host name, not `a b`"
        );
        assert_eq!(
            err(json!({"timeout_ms": 0})),
            "`control_plane.timeout_ms` must be between 1 and 60000, not 0"
        );
        assert_eq!(
            err(json!({"timeout_ms": 60001})),
            "`control_plane.timeout_ms` must be between 1 and 60000, not 60001"
        );
        assert_eq!(
            err(json!({"bundle_poll_ms": 999})),
            "`control_plane.bundle_poll_ms` must be between 1000 and 86400000 (or 0: no \
             polling), not 999"
        );
        assert_eq!(
            err(json!({"approval_hold_ms": 600001})),
            "`control_plane.approval_hold_ms` must be between 0 and 600000, not 600001"
        );
        assert_eq!(
            err(json!({"lease_calls": 0})),
            "`control_plane.lease_calls` must be between 1 and 100000, not 0"
        );
        assert_eq!(
            err(json!({"settle_ms": 99})),
            "`control_plane.settle_ms` must be between 100 and 3600000, not 99"
        );
        assert_eq!(
            err(json!({"on_failure": {"writes": "open"}})),
            "`control_plane.on_failure.writes` must be `allow` or `deny`, not `open`"
        );
        assert_eq!(
            err(json!({"on_failure": "deny"})),
            "`control_plane.on_failure` must be a JSON object"
        );
        let e = err(json!({"on_failure": {"read": "deny"}}));
        assert!(
            e.starts_with("`control_plane.on_failure`: unknown field `read`"),
            "{e}"
        );
        let e = err(json!({"clustr": "c"}));
        assert!(
            e.starts_with("`control_plane`: unknown field `clustr`"),
            "{e}"
        );
        assert!(err(json!({"timeout_ms": -1})).starts_with("`control_plane`: invalid value"));
        assert_eq!(
            Config::parse(br#"{"control_plane": []}"#).unwrap_err(),
            "`control_plane` must be a JSON object"
        );
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
