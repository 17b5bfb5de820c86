//! The embedded bundle: the locator static and the one function that reads
//! linear memory. `aegis_engine::locator` holds the layout and the contract
//! with the blob builder.

use aegis_engine::locator::{self, LocatorError, Span};

/// The only copy of the locator magic in the module. `#[used]` and the
/// volatile read in [`bundle_bytes`] keep it (and its data segment) in the
/// final module; the volatile read also stops the compiler from folding
/// the zeros of the generic filter into the code.
#[used]
static LOCATOR: [u8; locator::LEN] = locator::EMPTY;

/// A copy of the embedded bundle, `None` when the module has none.
#[allow(unsafe_code)]
pub fn bundle_bytes() -> Result<Option<Vec<u8>>, LocatorError> {
    // SAFETY: `LOCATOR` is a live static of 32 initialised bytes and `u8`
    // arrays have alignment 1, so the pointer is valid for a read. The read
    // is volatile because the blob builder patches these bytes in the data
    // segment after compilation: the value the compiler saw is not the one
    // in memory.
    let raw = unsafe { core::ptr::read_volatile(&raw const LOCATOR) };
    let Some(span) = locator::parse(&raw)? else {
        return Ok(None);
    };
    check_bounds(span, memory_bytes())?;
    let (Ok(offset), Ok(len)) = (usize::try_from(span.offset), usize::try_from(span.len)) else {
        return Err(LocatorError::Overflow);
    };
    let ptr = core::ptr::with_exposed_provenance::<u8>(offset);
    // SAFETY: the blob builder placed exactly `len` initialised bytes at
    // `offset` with a data segment of its own, past the module's original
    // initial memory and inside the raised minimum. The range was just
    // checked to lie inside linear memory (natively there is none:
    // `memory_bytes` is 0 and no span gets here), `offset` is not null, and
    // no Rust object lives there: the stack and the static data lie below
    // the original initial memory's end, the allocator starts at
    // `__heap_base`, ends its first region at the original `__heap_end`
    // and only grows memory beyond its current size. Nothing writes to the
    // range, so a shared slice is sound while it is used here; the bytes
    // are copied out at once.
    let bytes = unsafe { core::slice::from_raw_parts(ptr, len) };
    Ok(Some(bytes.to_vec()))
}

/// Checks that `span` lies inside `memory_bytes` of linear memory.
fn check_bounds(span: Span, memory_bytes: u64) -> Result<(), LocatorError> {
    let end = u64::from(span.offset) + u64::from(span.len);
    if end > memory_bytes {
        return Err(LocatorError::OutOfMemory {
            end,
            memory: memory_bytes,
        });
    }
    Ok(())
}

/// Size of linear memory 0 in bytes.
#[cfg(target_arch = "wasm32")]
fn memory_bytes() -> u64 {
    u64::try_from(core::arch::wasm32::memory_size(0)).unwrap_or(0) * 65536
}

/// Not a wasm module: no linear memory to read a bundle from.
#[cfg(not(target_arch = "wasm32"))]
fn memory_bytes() -> u64 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generic_filter_has_no_embedded_bundle() {
        assert_eq!(bundle_bytes(), Ok(None));
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
