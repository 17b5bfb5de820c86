//! Who signed an artifact, whether to accept it, and how keys and hashes
//! are named for people: one rule and one spelling for the loader, the
//! filter and `aegis`, so that none of them can disagree.

use alloc::string::String;
use sha2::{Digest, Sha256};

/// Why a signer is refused. Converts into [`crate::bundle::LoadError`],
/// whose messages say why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustError {
    /// Trusted keys are configured and the artifact is not signed.
    Unsigned,
    /// The artifact is signed by a key that is not among the trusted ones.
    UntrustedSigner,
}

/// The trust rule: with no trusted keys anything is accepted, signed or
/// not; with trusted keys the artifact must be signed by one of them.
pub fn check_trust(signer: Option<&[u8; 32]>, trusted: &[[u8; 32]]) -> Result<(), TrustError> {
    if trusted.is_empty() {
        return Ok(());
    }
    match signer {
        None => Err(TrustError::Unsigned),
        Some(k) if trusted.contains(k) => Ok(()),
        Some(_) => Err(TrustError::UntrustedSigner),
    }
}

/// Short stable name of a public key, for logs and `kid`s: the first 16
/// hex digits of SHA-256 of the raw 32-byte key.
pub fn key_fingerprint(key: &[u8; 32]) -> String {
    hex(Sha256::digest(key).get(..8).unwrap_or_default())
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        for digit in [b >> 4, b & 0xf] {
            s.push(char::from_digit(u32::from(digit), 16).unwrap_or('0'));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_trusted_keys_accept_anything() {
        assert_eq!(check_trust(None, &[]), Ok(()));
        assert_eq!(check_trust(Some(&[1; 32]), &[]), Ok(()));
    }

    #[test]
    fn trusted_keys_require_one_of_them() {
        let trusted = [[1; 32], [2; 32]];
        assert_eq!(check_trust(Some(&[2; 32]), &trusted), Ok(()));
        assert_eq!(
            check_trust(Some(&[3; 32]), &trusted),
            Err(TrustError::UntrustedSigner)
        );
        assert_eq!(check_trust(None, &trusted), Err(TrustError::Unsigned));
    }

    #[test]
    fn hex_is_lowercase_two_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn fingerprint_is_the_head_of_the_sha256() {
        // SHA-256 of 32 zero bytes starts 66687aadf862bd77.
        assert_eq!(key_fingerprint(&[0; 32]), "66687aadf862bd77");
    }
}
