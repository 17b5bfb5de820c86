//! The locator: where the blob builder put the embedded bundle.
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
//! The generic filter ships with offset and length 0: no embedded bundle.
//! `aegis build` finds the magic, patches offset and length, and adds a data
//! segment holding the bundle at that offset, past the module's initial
//! memory (whose minimum it raises to cover the bundle).
//!
//! The magic is never compared at run time: a comparison constant could
//! land in a data segment as a second copy of the magic, and the blob
//! builder relies on finding exactly one.

/// Size of the locator in bytes.
pub const LEN: usize = 32;

/// The locator of a filter with no embedded bundle.
pub const EMPTY: [u8; LEN] = *b"AEGIS-LOCATOR-01\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

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

fn u32_at(raw: &[u8; LEN], at: usize) -> u32 {
    let mut b = [0u8; 4];
    if let Some(s) = raw.get(at..at + 4) {
        b.copy_from_slice(s);
    }
    u32::from_le_bytes(b)
}

/// Reads offset and length. `Ok(None)`: no embedded bundle (length 0).
pub fn parse(raw: &[u8; LEN]) -> Result<Option<Span>, LocatorError> {
    if raw.get(24..).is_some_and(|r| r.iter().any(|b| *b != 0)) {
        return Err(LocatorError::Reserved);
    }
    let offset = u32_at(raw, 16);
    let len = u32_at(raw, 20);
    if len == 0 {
        return Ok(None);
    }
    if offset == 0 {
        return Err(LocatorError::NullOffset);
    }
    if offset.checked_add(len).is_none() {
        return Err(LocatorError::Overflow);
    }
    Ok(Some(Span { offset, len }))
}

/// Checks that `span` lies inside `memory_bytes` of linear memory.
pub fn check_bounds(span: Span, memory_bytes: u64) -> Result<(), LocatorError> {
    let end = u64::from(span.offset) + u64::from(span.len);
    if end > memory_bytes {
        return Err(LocatorError::OutOfMemory {
            end,
            memory: memory_bytes,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patched(offset: u32, len: u32) -> [u8; LEN] {
        let mut raw = EMPTY;
        raw[16..20].copy_from_slice(&offset.to_le_bytes());
        raw[20..24].copy_from_slice(&len.to_le_bytes());
        raw
    }

    #[test]
    fn empty_locator_means_no_bundle() {
        assert_eq!(&EMPTY[..16], b"AEGIS-LOCATOR-01");
        assert!(EMPTY[16..].iter().all(|b| *b == 0));
        assert_eq!(parse(&EMPTY), Ok(None));
    }

    #[test]
    fn patched_locator_is_read_little_endian() {
        let raw = patched(0x0012_3400, 0x0000_5678);
        assert_eq!(
            raw[16..24],
            [0x00, 0x34, 0x12, 0x00, 0x78, 0x56, 0x00, 0x00]
        );
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
    fn bounds_are_checked_against_memory() {
        let span = Span {
            offset: 65536,
            len: 100,
        };
        assert_eq!(check_bounds(span, 65536 + 100), Ok(()));
        assert_eq!(
            check_bounds(span, 65536 + 99),
            Err(LocatorError::OutOfMemory {
                end: 65636,
                memory: 65635
            })
        );
        // The largest span that fits in 32 bits is still checked in 64.
        let top = Span {
            offset: u32::MAX - 1,
            len: 1,
        };
        assert_eq!(check_bounds(top, 1 << 32), Ok(()));
    }
}
