//! Policies into blobs, the way `aegis build` makes them, and identity
//! tokens for test cases.
//!
//! [`build_blob`] runs the steps of `aegis build` (compiler/src/cli/build.rs)
//! through the compiler library: compile the IR into a bundle signed with
//! the key (DLP hash key derived from it), check it loads, embed it in the
//! generic filter the `aegis` binary carries, sign the module.

use aegis_cases::format::Case;
use aegis_compiler::frontend;
use aegis_compiler::package::blob;
use aegis_engine::jwt::issue as token;
use aegis_engine::jwt::{IdentityConfig, TrustedKey};
use aegis_engine::{ir, Bundle};
use ed25519_dalek::SigningKey;
use std::path::PathBuf;

/// A fresh Ed25519 key.
pub fn new_key() -> SigningKey {
    SigningKey::generate(&mut rand_core::OsRng)
}

/// Base64 of the raw public key: a `trusted_keys` entry.
pub fn public_key_b64(key: &SigningKey) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(key.verifying_key().to_bytes())
}

/// Policy files or folders to IR; diagnostics rendered as text.
pub fn load(paths: &[PathBuf]) -> Result<ir::Policy, String> {
    frontend::load(paths, None)
        .map(|l| l.policy)
        .map_err(|diags| render(&diags))
}

/// In-memory sources `(file name, text)` to IR.
pub fn load_sources(sources: &[(&str, &str)]) -> Result<ir::Policy, String> {
    let owned: Vec<(String, String)> = sources
        .iter()
        .map(|(n, t)| ((*n).to_string(), (*t).to_string()))
        .collect();
    frontend::load_sources(&owned, None)
        .map(|l| l.policy)
        .map_err(|diags| render(&diags))
}

fn render(diags: &[frontend::Diagnostic]) -> String {
    diags
        .iter()
        .map(frontend::render)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The bundle `aegis build` makes from `policy`.
pub fn compile_bundle(policy: &ir::Policy, key: &SigningKey) -> Result<Vec<u8>, String> {
    blob::signed_bundle(policy, key, 0)
        .map(|(bytes, _)| bytes)
        .map_err(|e| e.to_string())
}

/// A built blob and the bundle inside it.
#[derive(Debug, Clone)]
pub struct Built {
    /// The signed filter module with the bundle embedded.
    pub wasm: Vec<u8>,
    pub bundle: Vec<u8>,
}

impl Built {
    /// The embedded bundle, loaded natively (for the engine's own verdicts).
    pub fn load_bundle(&self) -> Result<Bundle, String> {
        Bundle::load(&self.bundle, &[]).map_err(|e| e.to_string())
    }
}

/// `aegis build`: bundle, embedded in the generic filter, module signed.
pub fn build_blob(policy: &ir::Policy, key: &SigningKey) -> Result<Built, String> {
    let filter = blob::generic_filter().map_err(|e| e.to_string())?;
    let built = blob::build_signed(policy, key, filter, 0).map_err(|e| e.to_string())?;
    Ok(Built {
        wasm: built.wasm,
        bundle: built.bundle,
    })
}

/// Issues agent tokens that a policy's identity document accepts.
#[derive(Debug, Clone)]
pub struct Issuer {
    key: SigningKey,
    pub kid: String,
    pub issuer: String,
    pub audience: String,
}

/// How [`Issuer::trusted_by`] changed the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// The policy had no identity document: one was added.
    IdentityAdded,
    /// The policy had one: the issuer's key was appended to its keys.
    KeyAdded,
}

/// Key id of the keys the tests add.
pub const TEST_KID: &str = "aegis-host-tests";

impl Issuer {
    /// A fresh key, trusted by `policy` from now on: a new identity
    /// document when it has none (the default claim names), else the key
    /// is added to its keys and the tokens follow its issuer and audience.
    /// Fails for identities tokens from [`token::issue`] cannot satisfy
    /// (other claim names, header-only identity).
    pub fn trusted_by(policy: &mut ir::Policy) -> Result<(Issuer, Trust), String> {
        let key = new_key();
        let raw = key.verifying_key().to_bytes();
        match &mut policy.identity {
            None => {
                let issuer = Issuer {
                    key,
                    kid: TEST_KID.into(),
                    issuer: "https://tokens.host-tests.invalid".into(),
                    audience: "aegis-host-tests".into(),
                };
                policy.identity = Some(IdentityConfig {
                    issuer: issuer.issuer.clone(),
                    audience: issuer.audience.clone(),
                    keys: vec![TrustedKey {
                        kid: TEST_KID.into(),
                        key: raw,
                    }],
                    agent_claim: "sub".into(),
                    tenant_claim: "tenant".into(),
                    scope_claim: "scope".into(),
                    max_age_secs: None,
                    skew_secs: 60,
                    insecure_agent_header: false,
                    token_header: "authorization".into(),
                });
                Ok((issuer, Trust::IdentityAdded))
            }
            Some(id) => {
                if id.insecure_agent_header {
                    return Err("the identity trusts the agent header, not tokens".into());
                }
                if id.agent_claim != "sub" || id.tenant_claim != "tenant" {
                    return Err(format!(
                        "the identity reads the agent from `{}` and the tenant from `{}`; \
                         test tokens carry `sub` and `tenant`",
                        id.agent_claim, id.tenant_claim
                    ));
                }
                if id.keys.iter().any(|k| k.kid == TEST_KID) {
                    return Err(format!("the identity already has a key `{TEST_KID}`"));
                }
                id.keys.push(TrustedKey {
                    kid: TEST_KID.into(),
                    key: raw,
                });
                let issuer = Issuer {
                    key,
                    kid: TEST_KID.into(),
                    issuer: id.issuer.clone(),
                    audience: id.audience.clone(),
                };
                Ok((issuer, Trust::KeyAdded))
            }
        }
    }

    /// A token for `agent` (`tenant/agent` splits into both) issued at
    /// `now`, valid for five minutes.
    pub fn token(&self, agent: &str, tenant: Option<&str>, now: i64) -> String {
        let (tenant, agent) = match (tenant, agent.split_once('/')) {
            (None, Some((t, a))) => (Some(t), a),
            _ => (tenant, agent),
        };
        token::issue(
            &self.key,
            &token::TokenRequest {
                kid: &self.kid,
                issuer: &self.issuer,
                audience: &self.audience,
                agent,
                tenant,
                scope: None,
                ttl_secs: 300,
                now,
            },
        )
    }
}

/// A case's request as a client would send it through the proxy, with its
/// body. `bearer`: a token to send as `authorization` (for cases that name
/// their agent directly). The case's headers go in order, repeats as
/// repeated pairs, except `host`: through Envoy the authority is the url's
/// and `Host` is replaced by it ([`aegis_cases::runner::engine_headers`]).
/// `content-length` is added when the case has a body, gives none and is
/// not chunked (`transfer-encoding: chunked` bodies have no length).
pub fn case_request(case: &Case, bearer: Option<&str>) -> (crate::HttpRequest, Vec<u8>) {
    let r = &case.request;
    let mut req = crate::HttpRequest::new(&r.method, &r.url);
    for (k, v) in aegis_cases::runner::engine_headers(case) {
        req = req.header(k, v);
    }
    if let Some(t) = bearer {
        req = req.header("authorization", &format!("Bearer {t}"));
    }
    let body = r.body.clone().unwrap_or_default();
    if r.body.is_some() && !r.has_header("content-length") && !r.chunked() {
        req = req.header("content-length", &body.len().to_string());
    }
    (req, body)
}
