//! WebAssembly module signatures in the tool-conventions format (the
//! `signature` custom section, Ed25519 over SHA-256) as `wasmsign2` writes
//! and reads it, so third-party tools can check our blobs.
//!
//! What we write: the module header, then a `signature` custom section,
//! then every other section of the input (any earlier `signature` section
//! dropped, section sizes re-encoded as minimal LEB128). The section holds
//! one hash set with one hash, SHA-256 of all bytes after the signature
//! section, and one Ed25519 signature over
//! `"wasmsig" ‖ spec_version ‖ content_type ‖ hash_fn ‖ hash`. The key id
//! stored with it is the one `wasmsign2` derives for a public key
//! (`HMAC-SHA256(key = public key, "key_id")`, first 12 bytes).
//!
//! Encoding of the section payload (varints are unsigned LEB128):
//!
//! ```text
//! spec_version  varint (1)      content_type varint (1 = module)
//! hash_fn       varint (1 = SHA-256)
//! count         varint          then `count` length-prefixed hash sets:
//!   hashes      varint n, n * 32 bytes
//!   sigs        varint m, then m length-prefixed signatures:
//!     key_id    varint length + bytes (may be empty)
//!     alg       1 byte (1 = Ed25519)
//!     signature varint length + bytes
//! ```
//!
//! The length prefixes around hash sets and signatures are what
//! `wasmsign2` emits (the prose of the convention omits them); matching the
//! implementation is what makes third-party verification work.

use aegis_engine::trust::hex;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Name of the custom section holding signatures.
pub const SECTION_NAME: &str = "signature";
/// Name of the custom section separating independently signed parts.
pub const DELIMITER_NAME: &str = "signature_delimiter";
/// Module magic and version 1.
pub const WASM_HEADER: [u8; 8] = *b"\0asm\x01\0\0\0";

const DOMAIN: &[u8] = b"wasmsig";
const SPEC_VERSION: u8 = 0x01;
const CONTENT_TYPE_MODULE: u8 = 0x01;
const HASH_SHA256: u8 = 0x01;
/// Ed25519, as signature algorithm and as public key type.
pub const ALG_ED25519: u8 = 0x01;
const HASH_LEN: usize = 32;
// Same bounds as wasmsign2, so both accept the same inputs.
const MAX_HASH_SETS: usize = 64;
const MAX_HASHES: usize = 64;
const MAX_SIGNATURES: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WasmSigError {
    #[error("not a WebAssembly module (bad magic or version)")]
    NotWasm,
    #[error("malformed module: {0}")]
    Malformed(String),
    #[error("the module carries no `signature` section")]
    Unsigned,
    #[error("malformed `signature` section: {0}")]
    BadSection(String),
    #[error("unsupported signature data: {0}")]
    Unsupported(String),
    #[error("no signature in the module verifies with key {0}")]
    NoValidSignature(String),
    #[error("the module was modified after it was signed (hash mismatch)")]
    HashMismatch,
}

/// One signature record found in a module, for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureEntry {
    /// Key identifier stored with the signature, if any.
    pub key_id: Option<Vec<u8>>,
    pub algorithm: u8,
    /// Number of hashes (signed parts) the signature covers.
    pub hashes: usize,
}

/// The key id `wasmsign2` attaches to an Ed25519 public key by default.
pub fn default_key_id(vk: &VerifyingKey) -> [u8; 12] {
    let mut id = [0u8; 12];
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    if let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(vk.as_bytes()) {
        mac.update(b"key_id");
        let tag = mac.finalize().into_bytes();
        for (d, s) in id.iter_mut().zip(tag.iter()) {
            *d = *s;
        }
    }
    id
}

/// Signs `module` over its whole content. An existing signature is
/// replaced; the result starts with the `signature` section.
pub fn sign(module: &[u8], key: &SigningKey) -> Result<Vec<u8>, WasmSigError> {
    let sections = split(module)?;
    let mut body = Vec::with_capacity(module.len());
    for s in sections.iter().filter(|s| !s.is_signature()) {
        put_section(&mut body, s.id, s.payload);
    }
    let hash: [u8; HASH_LEN] = Sha256::digest(&body).into();
    let signature = key.sign(&message(&[hash]));
    let key_id = default_key_id(&key.verifying_key());

    let mut record = Vec::with_capacity(1 + key_id.len() + 2 + 64);
    put_bytes(&mut record, &key_id);
    record.push(ALG_ED25519);
    put_bytes(&mut record, &signature.to_bytes());

    let mut set = Vec::with_capacity(HASH_LEN + record.len() + 4);
    put_varint(&mut set, 1);
    set.extend_from_slice(&hash);
    put_varint(&mut set, 1);
    put_bytes(&mut set, &record);

    let mut data = Vec::with_capacity(set.len() + 8);
    put_varint(&mut data, SPEC_VERSION.into());
    put_varint(&mut data, CONTENT_TYPE_MODULE.into());
    put_varint(&mut data, HASH_SHA256.into());
    put_varint(&mut data, 1);
    put_bytes(&mut data, &set);

    let mut custom = Vec::with_capacity(data.len() + SECTION_NAME.len() + 1);
    put_bytes(&mut custom, SECTION_NAME.as_bytes());
    custom.extend_from_slice(&data);

    let mut out = Vec::with_capacity(WASM_HEADER.len() + custom.len() + 8 + body.len());
    out.extend_from_slice(&WASM_HEADER);
    put_section(&mut out, 0, &custom);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Checks that `module` carries, as its first section, a signature by `vk`
/// over its whole content.
pub fn verify(module: &[u8], vk: &VerifyingKey) -> Result<(), WasmSigError> {
    let (data, rest) = signature_and_rest(module)?;
    let sets = decode(data)?;
    let hash: [u8; HASH_LEN] = Sha256::digest(rest).into();
    let mut signed_by_key = false;
    for set in &sets {
        let msg = message(&set.hashes);
        let valid = set.signatures.iter().any(|s| {
            s.algorithm == ALG_ED25519
                && <[u8; 64]>::try_from(s.signature.as_slice())
                    .is_ok_and(|sig| vk.verify_strict(&msg, &Signature::from_bytes(&sig)).is_ok())
        });
        if valid {
            signed_by_key = true;
            if set.hashes.contains(&hash) {
                return Ok(());
            }
        }
    }
    if signed_by_key {
        Err(WasmSigError::HashMismatch)
    } else {
        Err(WasmSigError::NoValidSignature(hex(&default_key_id(vk))))
    }
}

/// The signatures a module carries: `None` when it has no signature
/// section, an error when the section is malformed.
pub fn signatures(module: &[u8]) -> Result<Option<Vec<SignatureEntry>>, WasmSigError> {
    let (data, _) = match signature_and_rest(module) {
        Ok(x) => x,
        Err(WasmSigError::Unsigned) => return Ok(None),
        Err(e) => return Err(e),
    };
    let sets = decode(data)?;
    Ok(Some(
        sets.iter()
            .flat_map(|set| {
                set.signatures.iter().map(|s| SignatureEntry {
                    key_id: s.key_id.clone(),
                    algorithm: s.algorithm,
                    hashes: set.hashes.len(),
                })
            })
            .collect(),
    ))
}

/// `"wasmsig" ‖ spec_version ‖ content_type ‖ hash_fn ‖ h1 ‖ … ‖ hn`
fn message(hashes: &[[u8; HASH_LEN]]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(DOMAIN.len() + 3 + hashes.len() * HASH_LEN);
    msg.extend_from_slice(DOMAIN);
    msg.extend_from_slice(&[SPEC_VERSION, CONTENT_TYPE_MODULE, HASH_SHA256]);
    for h in hashes {
        msg.extend_from_slice(h);
    }
    msg
}

/// A section as framed in the binary.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawSection<'a> {
    pub id: u8,
    /// Section content (for custom sections: name and data).
    pub payload: &'a [u8],
    /// Name of a custom section.
    pub name: Option<&'a str>,
    /// Offset of the byte after this section in the module.
    pub end: usize,
}

impl RawSection<'_> {
    fn is_signature(&self) -> bool {
        self.id == 0 && self.name == Some(SECTION_NAME)
    }
}

/// Splits a module into its sections (framing only; contents unchecked
/// except custom section names).
pub(crate) fn split(module: &[u8]) -> Result<Vec<RawSection<'_>>, WasmSigError> {
    if module.get(..WASM_HEADER.len()) != Some(&WASM_HEADER[..]) {
        return Err(WasmSigError::NotWasm);
    }
    let mut r = Reader {
        bytes: module,
        pos: WASM_HEADER.len(),
    };
    let mut out = Vec::new();
    while !r.at_end() {
        let at = r.pos;
        let malformed = |what: &str| WasmSigError::Malformed(format!("{what} at offset {at}"));
        let id = r.byte().ok_or_else(|| malformed("truncated section"))?;
        let len = r.varint32().ok_or_else(|| malformed("bad section size"))?;
        let payload = r
            .take(len as usize)
            .ok_or_else(|| malformed("section runs past the end"))?;
        let name = if id == 0 {
            let mut n = Reader {
                bytes: payload,
                pos: 0,
            };
            let name = n
                .bytes_prefixed()
                .and_then(|b| std::str::from_utf8(b).ok())
                .ok_or_else(|| malformed("bad custom section name"))?;
            Some(name)
        } else {
            None
        };
        out.push(RawSection {
            id,
            payload,
            name,
            end: r.pos,
        });
    }
    Ok(out)
}

/// The first section's signature data and every byte after that section.
fn signature_and_rest(module: &[u8]) -> Result<(&[u8], &[u8]), WasmSigError> {
    let sections = split(module)?;
    let first = sections.first().ok_or(WasmSigError::Unsigned)?;
    if !first.is_signature() {
        return Err(WasmSigError::Unsigned);
    }
    let mut r = Reader {
        bytes: first.payload,
        pos: 0,
    };
    r.bytes_prefixed()
        .ok_or_else(|| WasmSigError::BadSection("bad name".into()))?;
    let data = r.rest();
    let rest = module.get(first.end..).unwrap_or_default();
    Ok((data, rest))
}

struct HashSet {
    hashes: Vec<[u8; HASH_LEN]>,
    signatures: Vec<Record>,
}

struct Record {
    key_id: Option<Vec<u8>>,
    algorithm: u8,
    signature: Vec<u8>,
}

fn decode(data: &[u8]) -> Result<Vec<HashSet>, WasmSigError> {
    let bad = |what: &str| WasmSigError::BadSection(what.to_string());
    let mut r = Reader {
        bytes: data,
        pos: 0,
    };
    let version = r.varint7().ok_or_else(|| bad("bad version"))?;
    if version != SPEC_VERSION {
        return Err(WasmSigError::Unsupported(format!(
            "specification version {version}"
        )));
    }
    let content = r.varint7().ok_or_else(|| bad("bad content type"))?;
    if content != CONTENT_TYPE_MODULE {
        return Err(WasmSigError::Unsupported(format!("content type {content}")));
    }
    let hash_fn = r.varint7().ok_or_else(|| bad("bad hash function"))?;
    if hash_fn != HASH_SHA256 {
        return Err(WasmSigError::Unsupported(format!(
            "hash function {hash_fn}"
        )));
    }
    let count = r.varint32().ok_or_else(|| bad("bad hash set count"))? as usize;
    if count > MAX_HASH_SETS {
        return Err(bad("too many hash sets"));
    }
    let mut sets = Vec::with_capacity(count);
    for _ in 0..count {
        let set = r
            .bytes_prefixed()
            .ok_or_else(|| bad("truncated hash set"))?;
        sets.push(decode_set(set)?);
    }
    if !r.at_end() {
        return Err(bad("trailing bytes"));
    }
    Ok(sets)
}

fn decode_set(bytes: &[u8]) -> Result<HashSet, WasmSigError> {
    let bad = |what: &str| WasmSigError::BadSection(what.to_string());
    let mut r = Reader { bytes, pos: 0 };
    let n = r.varint32().ok_or_else(|| bad("bad hash count"))? as usize;
    if n > MAX_HASHES {
        return Err(bad("too many hashes"));
    }
    let mut hashes = Vec::with_capacity(n);
    for _ in 0..n {
        let h = r
            .take(HASH_LEN)
            .and_then(|h| <[u8; HASH_LEN]>::try_from(h).ok())
            .ok_or_else(|| bad("truncated hash"))?;
        hashes.push(h);
    }
    let m = r.varint32().ok_or_else(|| bad("bad signature count"))? as usize;
    if m > MAX_SIGNATURES {
        return Err(bad("too many signatures"));
    }
    let mut signatures = Vec::with_capacity(m);
    for _ in 0..m {
        let rec = r
            .bytes_prefixed()
            .ok_or_else(|| bad("truncated signature"))?;
        let mut s = Reader { bytes: rec, pos: 0 };
        let key_id = s.bytes_prefixed().ok_or_else(|| bad("bad key id"))?;
        let algorithm = s.byte().ok_or_else(|| bad("missing algorithm"))?;
        let signature = s.bytes_prefixed().ok_or_else(|| bad("bad signature"))?;
        if !s.at_end() {
            return Err(bad("trailing bytes in a signature"));
        }
        signatures.push(Record {
            key_id: (!key_id.is_empty()).then(|| key_id.to_vec()),
            algorithm,
            signature: signature.to_vec(),
        });
    }
    if !r.at_end() {
        return Err(bad("trailing bytes in a hash set"));
    }
    Ok(HashSet { hashes, signatures })
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let low = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_section(out: &mut Vec<u8>, id: u8, payload: &[u8]) {
    out.push(id);
    put_bytes(out, payload);
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn rest(&mut self) -> &'a [u8] {
        let s = self.bytes.get(self.pos..).unwrap_or_default();
        self.pos = self.bytes.len();
        s
    }

    /// A one-byte varint (values below 0x80), as the header fields are.
    fn varint7(&mut self) -> Option<u8> {
        let b = self.byte()?;
        (b & 0x80 == 0).then_some(b)
    }

    /// Unsigned LEB128 of at most 5 bytes that fits in 32 bits.
    fn varint32(&mut self) -> Option<u32> {
        let mut v: u32 = 0;
        for i in 0..5u32 {
            let b = self.byte()?;
            if i == 4 && b & 0xf0 != 0 {
                return None;
            }
            v |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn bytes_prefixed(&mut self) -> Option<&'a [u8]> {
        let n = self.varint32()?;
        self.take(n as usize)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    /// `(module (memory 1))` plus a custom section.
    fn module() -> Vec<u8> {
        let mut m = WASM_HEADER.to_vec();
        put_section(&mut m, 5, &[1, 0, 1]);
        let mut custom = Vec::new();
        put_bytes(&mut custom, b"note");
        custom.extend_from_slice(b"hello");
        put_section(&mut m, 0, &custom);
        m
    }

    #[test]
    fn sign_then_verify() {
        let k = key(1);
        let signed = sign(&module(), &k).unwrap();
        verify(&signed, &k.verifying_key()).unwrap();
        let sections = split(&signed).unwrap();
        assert_eq!(sections[0].name, Some(SECTION_NAME));
        assert_eq!(&signed[signed.len() - module().len() + 8..], &module()[8..]);
    }

    #[test]
    fn resigning_replaces_the_signature() {
        let signed = sign(&module(), &key(1)).unwrap();
        let again = sign(&signed, &key(2)).unwrap();
        verify(&again, &key(2).verifying_key()).unwrap();
        assert!(verify(&again, &key(1).verifying_key()).is_err());
        let entries = signatures(&again).unwrap().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(
            entries[0].key_id.as_deref(),
            Some(&default_key_id(&key(2).verifying_key())[..])
        );
    }

    #[test]
    fn wrong_key_and_tampering_are_told_apart() {
        let k = key(1);
        let mut signed = sign(&module(), &k).unwrap();
        assert!(matches!(
            verify(&signed, &key(2).verifying_key()),
            Err(WasmSigError::NoValidSignature(_))
        ));
        let last = signed.len() - 1;
        signed[last] ^= 1;
        assert_eq!(
            verify(&signed, &k.verifying_key()),
            Err(WasmSigError::HashMismatch)
        );
    }

    #[test]
    fn unsigned_and_garbage() {
        let k = key(1).verifying_key();
        assert_eq!(verify(&module(), &k), Err(WasmSigError::Unsigned));
        assert_eq!(signatures(&module()).unwrap(), None);
        assert_eq!(verify(b"nope", &k), Err(WasmSigError::NotWasm));
        let mut m = module();
        m.push(1);
        assert!(matches!(verify(&m, &k), Err(WasmSigError::Malformed(_))));
        // Every truncation of a signed module is rejected without panicking.
        let signed = sign(&module(), &key(1)).unwrap();
        for n in 0..signed.len() {
            assert!(verify(&signed[..n], &k).is_err());
        }
    }

    #[test]
    fn varints() {
        for v in [0u64, 1, 127, 128, 300, 16_384, u64::from(u32::MAX)] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            let mut r = Reader { bytes: &b, pos: 0 };
            assert_eq!(r.varint32().map(u64::from), Some(v));
            assert!(r.at_end());
        }
        let mut r = Reader {
            bytes: &[0xff, 0xff, 0xff, 0xff, 0x1f],
            pos: 0,
        };
        assert_eq!(r.varint32(), None);
    }
}
