//! Blobs built the way `aegis build` builds them (compile, embed the
//! bundle in the generic filter carried by the compiler, sign the module),
//! and the keys the tests use.

use crate::{err, Result};
use aegis_compiler::package::{blob, wasmsig};
use aegis_compiler::{frontend, keys};
use aegis_engine::Bundle;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// What the deterministic demo key is derived from. `envoy/demo-blob.sh`
/// derives the same key (SHA-256 of this text is the Ed25519 seed), and the
/// shipped configs trust its public key so they validate as they are.
/// Everybody can sign with it: never trust it outside a demo.
pub const DEMO_KEY_LABEL: &str = "aegis envoy demo key: public, never trust it in production";

/// The demo signing key (see [`DEMO_KEY_LABEL`]).
pub fn demo_key() -> SigningKey {
    SigningKey::from_bytes(&Sha256::digest(DEMO_KEY_LABEL.as_bytes()).into())
}

/// A fresh key pair made by the compiler's own `aegis keygen` code, in
/// `dir` as `PREFIX.key` / `PREFIX.pub`.
pub fn fresh_key(dir: &Path, prefix: &str) -> Result<SigningKey> {
    let (key, _public) =
        keys::keygen(&dir.join(prefix)).map_err(|e| err(format!("keygen: {e}")))?;
    keys::read_signing_key(&key).map_err(|e| err(format!("keygen: {e}")))
}

/// Base64 (standard, padded) of the raw 32-byte public key: the form the
/// filter's `trusted_keys` and an Identity document's `public_key` take.
pub fn key_b64(vk: &VerifyingKey) -> String {
    STANDARD.encode(vk.as_bytes())
}

/// A signed blob on disk and the bundle inside it.
pub struct Built {
    pub path: PathBuf,
    pub bytes: usize,
    /// The embedded bundle, loaded natively: what `aegis test` would judge
    /// with. Extracted from the written blob, so both runners have the very
    /// same bundle.
    pub bundle: Bundle,
    /// Base64 of the signer's public key.
    pub trusted_key: String,
}

/// `aegis build PATHS --key KEY -o OUT` as a library call.
pub fn build(paths: &[PathBuf], key: &SigningKey, out: &Path) -> Result<Built> {
    let loaded = frontend::load(paths, None).map_err(|diags| {
        let msgs: Vec<String> = diags
            .iter()
            .filter(|d| d.is_error())
            .map(|d| format!("{d:?}"))
            .collect();
        err(format!("policies do not compile:\n{}", msgs.join("\n")))
    })?;
    let filter = blob::generic_filter().map_err(|e| err(format!("generic filter: {e}")))?;
    let signed = blob::build_signed(&loaded.policy, key, filter, 0)
        .map_err(|e| err(e.to_string()))?
        .wasm;
    std::fs::write(out, &signed)
        .map_err(|e| err(format!("cannot write {}: {e}", out.display())))?;

    let embedded = blob::extract(&signed)
        .map_err(|e| err(format!("extract: {e}")))?
        .ok_or_else(|| err("the built blob has no embedded bundle"))?;
    let vk = key.verifying_key();
    let bundle = Bundle::load(&embedded, &[vk.to_bytes()])
        .map_err(|e| err(format!("embedded bundle does not load: {e}")))?;
    wasmsig::verify(&signed, &vk).map_err(|e| err(format!("module signature: {e}")))?;
    Ok(Built {
        path: out.to_path_buf(),
        bytes: signed.len(),
        bundle,
        trusted_key: key_b64(&vk),
    })
}
