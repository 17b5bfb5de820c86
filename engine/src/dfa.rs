//! Loading serialized dense DFAs and running them over decoded bytes.
//!
//! Bundle bytes are untrusted until validated: `DFA::from_bytes` checks the
//! whole automaton, so a search on a loaded DFA cannot go wrong. DFAs are
//! stepped by hand so that values can be fed byte by byte while they are
//! decoded, with no buffer in between.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use regex_automata::dfa::dense::DFA;
use regex_automata::dfa::Automaton;
use regex_automata::util::primitives::StateID;
use regex_automata::util::start;
use regex_automata::Anchored;

/// An owned, validated DFA.
pub type Dfa = DFA<Vec<u32>>;

/// Why serialized bytes are not a DFA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DfaError {
    /// The aligned copy could not be made.
    Buffer,
    /// The automaton does not validate.
    Invalid(String),
}

impl fmt::Display for DfaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DfaError::Buffer => f.write_str("dfa buffer too small"),
            DfaError::Invalid(e) => write!(f, "invalid dfa: {e}"),
        }
    }
}

/// Copies `bytes` into 4-byte aligned memory and validates it as a DFA.
pub fn load_dense(bytes: &[u8]) -> Result<Dfa, DfaError> {
    let mut words = alloc::vec![0u32; bytes.len().div_ceil(4)];
    let dst: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
    dst.get_mut(..bytes.len())
        .ok_or(DfaError::Buffer)?
        .copy_from_slice(bytes);
    let aligned: &[u8] = bytemuck::cast_slice(&words);
    let (dfa, _) = DFA::from_bytes(aligned.get(..bytes.len()).unwrap_or_default())
        .map_err(|e| DfaError::Invalid(format!("{e}")))?;
    Ok(dfa.to_owned())
}

/// Unanchored search: does the DFA match anywhere in `bytes`?
pub fn is_match(dfa: &Dfa, bytes: impl Iterator<Item = u8>) -> bool {
    let Ok(mut s) = dfa.start_state(&start::Config::new().anchored(Anchored::No)) else {
        return false;
    };
    for b in bytes {
        s = dfa.next_state(s, b);
        if dfa.is_match_state(s) {
            return true;
        }
        if dfa.is_dead_state(s) || dfa.is_quit_state(s) {
            return false;
        }
    }
    s = dfa.next_eoi_state(s);
    dfa.is_match_state(s)
}

/// Anchored full match over `bytes`; returns the lowest matching pattern
/// id (patterns are ordered most specific first).
pub fn full_match(dfa: &Dfa, bytes: impl Iterator<Item = u8>) -> Option<usize> {
    let mut s = dfa
        .start_state(&start::Config::new().anchored(Anchored::Yes))
        .ok()?;
    for b in bytes {
        s = dfa.next_state(s, b);
        if dfa.is_dead_state(s) || dfa.is_quit_state(s) {
            return None;
        }
    }
    end_match(dfa, s)
}

/// [`full_match`] over the concatenation of `parts`, read as slices.
pub fn full_match_parts(dfa: &Dfa, parts: &[&[u8]]) -> Option<usize> {
    let mut s = dfa
        .start_state(&start::Config::new().anchored(Anchored::Yes))
        .ok()?;
    for part in parts {
        for &b in *part {
            s = dfa.next_state(s, b);
            // Dead and quit states are both special; one test for the
            // common case of neither.
            if dfa.is_special_state(s) && (dfa.is_dead_state(s) || dfa.is_quit_state(s)) {
                return None;
            }
        }
    }
    end_match(dfa, s)
}

fn end_match(dfa: &Dfa, s: StateID) -> Option<usize> {
    let s = dfa.next_eoi_state(s);
    if !dfa.is_match_state(s) {
        return None;
    }
    (0..dfa.match_len(s))
        .map(|i| dfa.match_pattern(s, i).as_usize())
        .min()
}

/// Serde for serialized DFAs (`#[serde(with = "crate::dfa::as_bytes")]`):
/// one byte string, which postcard writes exactly as a sequence of `u8`
/// (the length, then the bytes), so the format is the same; but it is
/// read and written at once rather than value by value, which in an
/// unoptimised build is most of the time a bundle takes to encode and load.
pub mod as_bytes {
    use alloc::vec::Vec;
    use core::fmt;
    use serde::de::{SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(Bytes)
    }

    struct Bytes;

    impl<'de> Visitor<'de> for Bytes {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("bytes")
        }

        fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        // Self-describing formats may write bytes as a sequence.
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut v = Vec::new();
            while let Some(b) = seq.next_element::<u8>()? {
                v.push(b);
            }
            Ok(v)
        }
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct AsSeq(Vec<u8>, u8);

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct AsBytes(#[serde(with = "super::as_bytes")] Vec<u8>, u8);

    #[test]
    fn bytes_are_encoded_as_the_sequence_they_replace() {
        for n in [0usize, 1, 127, 128, 300, 70_000] {
            let v: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            let seq = postcard::to_allocvec(&AsSeq(v.clone(), 9)).unwrap();
            let bytes = postcard::to_allocvec(&AsBytes(v.clone(), 9)).unwrap();
            assert_eq!(seq, bytes);
            assert_eq!(
                postcard::from_bytes::<AsBytes>(&seq).unwrap(),
                AsBytes(v, 9)
            );
        }
    }
}
