//! Ed25519 key files: `aegis keygen` and reading keys back.
//!
//! Private keys are PKCS#8 PEM files created with mode 0600 from the first
//! byte on; public keys are SPKI PEM. A public key may also be given as
//! base64 of its 32 raw bytes (what a policy's inline `public_key:` holds).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read `{}`: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write `{}`: {source}", .path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("`{}` already exists; refusing to overwrite it", .path.display())]
    Exists { path: PathBuf },
    #[error("`{}` is not an Ed25519 private key in PKCS#8 PEM form", .path.display())]
    BadPrivateKey { path: PathBuf },
    #[error("`{}` does not hold an Ed25519 public key: {reason}", .path.display())]
    BadPublicKeyFile { path: PathBuf, reason: String },
    #[error("not an Ed25519 public key: {0}")]
    BadPublicKey(String),
    #[error("cannot get randomness from the operating system: {0}")]
    Random(String),
    #[error("cannot encode the key: {0}")]
    Encode(String),
}

/// `PREFIX.ext`, keeping any dots already in the prefix.
fn with_suffix(prefix: &Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(ext);
    PathBuf::from(s)
}

/// Creates `path` with `contents`, failing if it exists. On Unix the file
/// is created with `mode`, so it is never readable by others, not even
/// between creation and a later chmod.
fn create_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), KeyError> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = opts.open(path).map_err(|source| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            KeyError::Exists { path: path.into() }
        } else {
            KeyError::Write {
                path: path.into(),
                source,
            }
        }
    })?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|source| KeyError::Write {
            path: path.into(),
            source,
        })
}

/// Generates a key pair: `PREFIX.key` (PKCS#8 PEM, mode 0600) and
/// `PREFIX.pub` (SPKI PEM). Refuses to overwrite either file; if the public
/// key cannot be written the fresh private key is removed again.
pub fn keygen(prefix: &Path) -> Result<(PathBuf, PathBuf), KeyError> {
    let key_path = with_suffix(prefix, ".key");
    let pub_path = with_suffix(prefix, ".pub");
    // Check both first so a refusal leaves nothing behind; `create_new`
    // below still guards against a race.
    for p in [&key_path, &pub_path] {
        if fs::symlink_metadata(p).is_ok() {
            return Err(KeyError::Exists { path: p.clone() });
        }
    }

    let mut seed = [0u8; 32];
    OsRng
        .try_fill_bytes(&mut seed)
        .map_err(|e| KeyError::Random(e.to_string()))?;
    let sk = SigningKey::from_bytes(&seed);
    seed.fill(0);

    let private_pem = sk
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KeyError::Encode(e.to_string()))?;
    let public_pem = sk
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| KeyError::Encode(e.to_string()))?;

    create_new(&key_path, private_pem.as_bytes(), 0o600)?;
    if let Err(e) = create_new(&pub_path, public_pem.as_bytes(), 0o644) {
        let _ = fs::remove_file(&key_path);
        return Err(e);
    }
    Ok((key_path, pub_path))
}

fn read(path: &Path) -> Result<String, KeyError> {
    fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.into(),
        source,
    })
}

/// Reads a PKCS#8 PEM Ed25519 private key.
pub fn read_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let text = read(path)?;
    SigningKey::from_pkcs8_pem(text.trim())
        .map_err(|_| KeyError::BadPrivateKey { path: path.into() })
}

/// Reads a public key file: SPKI PEM, or base64 of the 32 raw bytes.
pub fn read_verifying_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let text = read(path)?;
    parse_verifying_key(&text).map_err(|e| KeyError::BadPublicKeyFile {
        path: path.into(),
        reason: match e {
            KeyError::BadPublicKey(reason) => reason,
            other => other.to_string(),
        },
    })
}

/// A public key from text: SPKI PEM (`-----BEGIN PUBLIC KEY-----`), or
/// base64 (standard or URL-safe, padded or not) of the 32 raw bytes.
/// Points that are not on the curve and weak (small order) keys are refused.
pub fn parse_verifying_key(text: &str) -> Result<VerifyingKey, KeyError> {
    let text = text.trim();
    let vk = if text.starts_with("-----BEGIN") {
        if text
            .lines()
            .next()
            .is_some_and(|l| l.contains("PRIVATE KEY"))
        {
            return Err(KeyError::BadPublicKey(
                "this is a private key; give the `.pub` file".into(),
            ));
        }
        VerifyingKey::from_public_key_pem(text)
            .map_err(|_| KeyError::BadPublicKey("not an SPKI PEM Ed25519 public key".into()))?
    } else {
        let raw = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
            .iter()
            .find_map(|e| e.decode(text).ok())
            .ok_or_else(|| KeyError::BadPublicKey("neither PEM nor base64".into()))?;
        let bytes: [u8; 32] = raw.as_slice().try_into().map_err(|_| {
            KeyError::BadPublicKey(format!("decodes to {} bytes, expected 32", raw.len()))
        })?;
        VerifyingKey::from_bytes(&bytes)
            .map_err(|_| KeyError::BadPublicKey("not a point on the curve".into()))?
    };
    if vk.is_weak() {
        return Err(KeyError::BadPublicKey("weak (small order) key".into()));
    }
    Ok(vk)
}

/// Short stable fingerprint ([`aegis_engine::trust::key_fingerprint`]: the
/// one the filter logs). A good default `kid`.
pub fn key_id(vk: &VerifyingKey) -> String {
    aegis_engine::trust::key_fingerprint(vk.as_bytes())
}

/// The key of the DLP `hash` action's tokens, derived from the bundle
/// signing key so that tokens are keyed with a secret the policy team
/// holds. Without a signing key (unsigned test bundles) it is all zeros.
pub fn dlp_hash_key(key: Option<&SigningKey>) -> [u8; 32] {
    match key {
        Some(k) => {
            let mut h = Sha256::new();
            h.update(b"aegis dlp hash key v1");
            h.update(k.to_bytes());
            h.finalize().into()
        }
        None => [0; 32],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("ci.v2");
        let (key, public) = keygen(&prefix).unwrap();
        assert_eq!(key, dir.path().join("ci.v2.key"));
        assert_eq!(public, dir.path().join("ci.v2.pub"));
        let sk = read_signing_key(&key).unwrap();
        let vk = read_verifying_key(&public).unwrap();
        assert_eq!(sk.verifying_key(), vk);
        let pem = fs::read_to_string(&public).unwrap();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        assert!(fs::read_to_string(&key)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----"));
        // Two key pairs differ.
        let (k2, _) = keygen(&dir.path().join("other")).unwrap();
        assert_ne!(read_signing_key(&k2).unwrap().to_bytes(), sk.to_bytes());
    }

    #[cfg(unix)]
    #[test]
    fn keygen_file_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (key, public) = keygen(&dir.path().join("k")).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key), 0o600);
        // 0644 minus whatever the umask takes away; never writable by others.
        assert_eq!(mode(&public) & !0o644, 0);
        assert_eq!(mode(&public) & 0o600, 0o600);
    }

    #[test]
    fn keygen_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("k");
        fs::write(dir.path().join("k.pub"), "keep me").unwrap();
        let err = keygen(&prefix).unwrap_err();
        assert!(matches!(err, KeyError::Exists { .. }), "{err}");
        assert!(err.to_string().contains("k.pub`"), "{err}");
        assert!(err.to_string().contains("refusing to overwrite"));
        // Nothing was created and nothing was clobbered.
        assert!(!dir.path().join("k.key").exists());
        assert_eq!(
            fs::read_to_string(dir.path().join("k.pub")).unwrap(),
            "keep me"
        );

        let (key, _) = keygen(&dir.path().join("j")).unwrap();
        let before = fs::read(&key).unwrap();
        assert!(matches!(
            keygen(&dir.path().join("j")).unwrap_err(),
            KeyError::Exists { .. }
        ));
        assert_eq!(fs::read(&key).unwrap(), before);
    }

    #[test]
    fn parse_verifying_key_forms() {
        let sk = SigningKey::from_bytes(&[3; 32]);
        let vk = sk.verifying_key();
        let raw = vk.to_bytes();
        for text in [
            STANDARD.encode(raw),
            STANDARD_NO_PAD.encode(raw),
            URL_SAFE.encode(raw),
            URL_SAFE_NO_PAD.encode(raw),
            format!("  {}\n", STANDARD.encode(raw)),
            vk.to_public_key_pem(LineEnding::LF).unwrap(),
            vk.to_public_key_pem(LineEnding::CRLF).unwrap(),
        ] {
            assert_eq!(parse_verifying_key(&text).unwrap(), vk, "{text}");
        }
        let bad = |t: &str| parse_verifying_key(t).unwrap_err().to_string();
        assert!(bad("").contains("expected 32"), "{}", bad(""));
        assert!(bad("!!!").contains("neither PEM nor base64"));
        assert!(bad(&STANDARD.encode([1u8; 31])).contains("31 bytes"));
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(bad(&STANDARD.encode(identity)).contains("weak"));
        let private = sk.to_pkcs8_pem(LineEnding::LF).unwrap();
        assert!(bad(&private).contains("private key"));
        assert!(bad("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----").contains("SPKI"));
    }

    #[test]
    fn read_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pub");
        let err = read_verifying_key(&missing).unwrap_err().to_string();
        assert!(err.starts_with("cannot read `"), "{err}");
        assert!(err.contains("nope.pub`"), "{err}");
        let junk = dir.path().join("junk.key");
        fs::write(&junk, "hello").unwrap();
        let err = read_signing_key(&junk).unwrap_err().to_string();
        assert!(
            err.contains("junk.key` is not an Ed25519 private key"),
            "{err}"
        );
        let err = read_verifying_key(&junk).unwrap_err().to_string();
        assert!(
            err.contains("junk.key` does not hold an Ed25519 public key"),
            "{err}"
        );
        // A bare base64 public key file works.
        let vk = SigningKey::from_bytes(&[4; 32]).verifying_key();
        let b64 = dir.path().join("raw.pub");
        fs::write(&b64, STANDARD.encode(vk.to_bytes())).unwrap();
        assert_eq!(read_verifying_key(&b64).unwrap(), vk);
    }

    #[test]
    fn key_id_is_short_and_stable() {
        let vk = SigningKey::from_bytes(&[5; 32]).verifying_key();
        let id = key_id(&vk);
        assert_eq!(id.len(), 16);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(id, key_id(&vk));
        let full: String = Sha256::digest(vk.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(full.starts_with(&id));
        assert_ne!(
            id,
            key_id(&SigningKey::from_bytes(&[6; 32]).verifying_key())
        );
    }
}
