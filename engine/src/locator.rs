//! The locator: where `aegis build` put the bundle it embedded in the
//! filter module. Its layout is an artifact format, so it is defined here
//! once, for the filter that reads it and the blob builder that writes it.
//!
//! The filter module holds exactly one 32-byte locator in a data segment:
//!
//! ```text
//! 0..16   ASCII `AEGIS-LOCATOR-01` (the magic the blob builder searches for)
//! 16..20  offset of the bundle in linear memory, u32 little endian
//! 20..24  length of the bundle in bytes, u32 little endian
//! 24..32  zero (reserved)
//! ```
//!
//! The generic filter ships [`EMPTY`] (offset and length 0): no embedded
//! bundle. The blob builder finds the magic ([`find`]), writes offset and
//! length ([`encode`]), and adds a data segment holding the bundle at that
//! offset, past the module's initial memory (whose minimum it raises to
//! cover the bundle).
//!
//! Reading ([`fields`], [`parse`]) never looks at the magic: in the filter
//! a comparison constant could land in a data segment as a second copy of
//! it, and the blob builder relies on finding exactly one. Only [`find`]
//! and [`encode`] use it, and the filter calls neither.
//!
//! `core` only, no allocation: the build script of `aegis` includes this
//! file as a module of its own.

/// Size of the locator in bytes.
pub const LEN: usize = 32;

/// The first 16 bytes of every locator.
pub const MAGIC: [u8; 16] = *b"AEGIS-LOCATOR-01";

/// Where the offset, the length and the reserved bytes start.
const OFFSET_AT: usize = 16;
const LEN_AT: usize = 20;
const RESERVED_AT: usize = 24;

/// The locator of a filter with no embedded bundle: the magic, then zeros.
pub const EMPTY: [u8; LEN] = encode(Span { offset: 0, len: 0 });

/// Where the embedded bundle lies in linear memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub offset: u32,
    pub len: u32,
}

/// Why a patched locator cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocatorError {
    /// Bytes 24..32 are not zero: written by a newer or broken blob builder.
    Reserved,
    /// A non-empty bundle at address 0.
    NullOffset,
    /// `offset + len` does not fit in 32 bits.
    Overflow,
    /// The bundle does not lie inside linear memory.
    OutOfMemory { end: u64, memory: u64 },
}

impl core::fmt::Display for LocatorError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LocatorError::Reserved => {
                f.write_str("the bundle locator has non-zero reserved bytes (unknown blob format)")
            }
            LocatorError::NullOffset => f.write_str("the bundle locator points at address 0"),
            LocatorError::Overflow => f.write_str("the bundle locator overflows 32 bits"),
            LocatorError::OutOfMemory { end, memory } => write!(
                f,
                "the embedded bundle ends at byte {end}, past linear memory ({memory} bytes)"
            ),
        }
    }
}

/// A whole locator (magic, `span`, zero reserved bytes), as the blob
/// builder writes it.
pub const fn encode(span: Span) -> [u8; LEN] {
    let mut raw = [0u8; LEN];
    let (magic, rest) = raw.split_at_mut(OFFSET_AT);
    magic.copy_from_slice(&MAGIC);
    let (offset, rest) = rest.split_at_mut(LEN_AT - OFFSET_AT);
    offset.copy_from_slice(&span.offset.to_le_bytes());
    let (len, _reserved) = rest.split_at_mut(RESERVED_AT - LEN_AT);
    len.copy_from_slice(&span.len.to_le_bytes());
    raw
}

fn u32_at(raw: &[u8; LEN], at: usize) -> u32 {
    let mut b = [0u8; 4];
    if let Some(s) = raw.get(at..at + 4) {
        b.copy_from_slice(s);
    }
    u32::from_le_bytes(b)
}

/// Offset and length as written, unchecked (both 0 in the generic filter).
pub fn fields(raw: &[u8; LEN]) -> Span {
    Span {
        offset: u32_at(raw, OFFSET_AT),
        len: u32_at(raw, LEN_AT),
    }
}

/// Reads offset and length for use. `Ok(None)`: no embedded bundle
/// (length 0).
pub fn parse(raw: &[u8; LEN]) -> Result<Option<Span>, LocatorError> {
    if raw
        .get(RESERVED_AT..)
        .is_some_and(|r| r.iter().any(|b| *b != 0))
    {
        return Err(LocatorError::Reserved);
    }
    let span = fields(raw);
    if span.len == 0 {
        return Ok(None);
    }
    if span.offset == 0 {
        return Err(LocatorError::NullOffset);
    }
    if span.offset.checked_add(span.len).is_none() {
        return Err(LocatorError::Overflow);
    }
    Ok(Some(span))
}

/// Where locators start in `bytes`: the magic followed by offset, length
/// and zero reserved bytes.
pub fn find(bytes: &[u8]) -> impl Iterator<Item = usize> + '_ {
    bytes
        .windows(LEN)
        .enumerate()
        .filter(|(_, w)| {
            w.starts_with(&MAGIC)
                && w.get(RESERVED_AT..)
                    .is_some_and(|r| r.iter().all(|b| *b == 0))
        })
        .map(|(at, _)| at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patched(offset: u32, len: u32) -> [u8; LEN] {
        encode(Span { offset, len })
    }

    #[test]
    fn empty_locator_means_no_bundle() {
        assert_eq!(&EMPTY[..16], b"AEGIS-LOCATOR-01");
        assert!(EMPTY[16..].iter().all(|b| *b == 0));
        assert_eq!(parse(&EMPTY), Ok(None));
        assert_eq!(fields(&EMPTY), Span { offset: 0, len: 0 });
    }

    #[test]
    fn patched_locator_is_little_endian() {
        let raw = patched(0x0012_3400, 0x0000_5678);
        assert_eq!(&raw[..16], &MAGIC);
        assert_eq!(
            raw[16..24],
            [0x00, 0x34, 0x12, 0x00, 0x78, 0x56, 0x00, 0x00]
        );
        assert!(raw[24..].iter().all(|b| *b == 0));
        assert_eq!(
            parse(&raw),
            Ok(Some(Span {
                offset: 0x0012_3400,
                len: 0x5678
            }))
        );
    }

    #[test]
    fn zero_length_ignores_offset() {
        assert_eq!(parse(&patched(4096, 0)), Ok(None));
    }

    #[test]
    fn bad_locators_are_refused() {
        let mut raw = patched(65536, 10);
        raw[31] = 1;
        assert_eq!(parse(&raw), Err(LocatorError::Reserved));
        assert_eq!(parse(&patched(0, 10)), Err(LocatorError::NullOffset));
        assert_eq!(parse(&patched(u32::MAX, 2)), Err(LocatorError::Overflow));
    }

    #[test]
    fn find_wants_the_magic_and_zero_reserved_bytes() {
        let mut bytes = [0u8; 100];
        bytes[3..35].copy_from_slice(&patched(7, 9));
        bytes[50..82].copy_from_slice(&EMPTY);
        assert!(find(&bytes).eq([3, 50]));
        bytes[81] = 1;
        assert!(find(&bytes).eq([3]));
        assert_eq!(find(&bytes[..34]).count(), 0);
    }
}
