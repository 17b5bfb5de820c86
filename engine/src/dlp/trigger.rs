//! Finding the next trigger byte quickly.
//!
//! Every DLP match holds a trigger byte a few bytes after its start (see
//! `DlpSpec::triggers`), so the scanner only runs its DFA near trigger
//! bytes. Finding them is the inner loop over clean text: where the target
//! has vector registers, a set of at most [`RANGES`] byte ranges is tested
//! 32 bytes at a time with a branch-free loop the compiler vectorizes, and
//! the result is a bit mask per 32-byte chunk, kept in a [`Cursor`] while
//! the scanner works inside the chunk. Elsewhere (wasm32 without `simd128`)
//! eight bytes at a time are tested for bytes that may be triggers (see
//! [`Words`]), and the table decides those; or, for sets that test would
//! not narrow, the table is read byte by byte.

/// Most ranges the vectorized test handles.
const RANGES: usize = 8;

/// Whether the target has vector registers the range test compiles to.
const VECTOR: bool = cfg!(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_feature = "simd128"
));

/// Bytes a chunk mask covers.
const CHUNK: usize = 32;

/// The ranges, each bound repeated once per lane so that the test is a
/// plain element-wise loop over arrays (no broadcasts to hoist).
#[derive(Clone)]
struct Lanes {
    lo: [[u8; CHUNK]; RANGES],
    span: [[u8; CHUNK]; RANGES],
    /// Ranges in use.
    n: usize,
}

#[derive(Clone)]
pub struct Triggers {
    table: [bool; 256],
    lanes: Option<Lanes>,
    /// Without lanes: the word test, when it narrows the set.
    words: Option<Words>,
}

/// A test of eight bytes at a time (in a `u64`, no vector registers) that
/// flags every trigger byte and few others: the bytes within the span of
/// the ASCII triggers, and every non-ASCII byte when a trigger is one.
/// The table then decides each flagged byte. Used only when the span
/// leaves out the space and the lowercase letters, the bulk of text.
#[derive(Clone, Copy, Debug)]
struct Words {
    /// `0x80 - lo` in every byte: a 7-bit byte plus this has its top bit
    /// set when it is at least `lo` (0 when no trigger is ASCII).
    add_lo: u64,
    /// `0x7f - hi` in every byte: the top bit set when above `hi`.
    add_hi: u64,
    /// Top bit of every byte when a non-ASCII byte triggers, else 0.
    high: u64,
}

/// A one in every byte of a word.
const ONES: u64 = 0x0101_0101_0101_0101;

impl Words {
    fn new(table: &[bool; 256]) -> Option<Words> {
        let ascii = table.get(..0x80).unwrap_or_default();
        let lo = ascii.iter().position(|&t| t);
        let hi = ascii.iter().rposition(|&t| t);
        let high = table.get(0x80..).unwrap_or_default().iter().any(|&t| t);
        let (add_lo, add_hi) = match (lo, hi) {
            (Some(lo), Some(hi)) => {
                let span = lo..=hi;
                if span.contains(&usize::from(b' '))
                    || (usize::from(b'a')..=usize::from(b'z')).any(|b| span.contains(&b))
                {
                    return None;
                }
                (0x80 - lo as u64, 0x7f - hi as u64)
            }
            _ => (0, 0),
        };
        Some(Words {
            add_lo: ONES * add_lo,
            add_hi: ONES * add_hi,
            high: if high { ONES * 0x80 } else { 0 },
        })
    }

    /// Top bit of each byte of `w` that may be a trigger. The low seven
    /// bits of a byte plus at most 0x80 stay within the byte: no carries.
    #[inline(always)]
    fn flags(&self, w: u64) -> u64 {
        let low = w & (ONES * 0x7f);
        let in_span = low.wrapping_add(self.add_lo) & !low.wrapping_add(self.add_hi);
        (in_span | (w & self.high)) & (ONES * 0x80)
    }
}

/// Where the last chunk mask was taken; reused while the scanner stays
/// inside that chunk.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cursor {
    base: usize,
    /// Bit `i`: `hay[base + i]` is a trigger.
    mask: u32,
    valid: bool,
}

impl Triggers {
    /// From a bitmap: bit `b % 8` of byte `b / 8` set means `b` triggers.
    pub fn from_bitmap(bits: &[u8; 32]) -> Triggers {
        Triggers::with(bits, VECTOR)
    }

    /// [`Triggers::from_bitmap`], with or without the vector test.
    fn with(bits: &[u8; 32], vector: bool) -> Triggers {
        let mut table = [false; 256];
        for (b, t) in (0..=u8::MAX).zip(table.iter_mut()) {
            *t = super::bitmap_has(bits, b);
        }
        let lanes = match ranges(&table) {
            Some((lo, span, n)) if vector => Some(Lanes {
                lo: lo.map(|b| [b; CHUNK]),
                span: span.map(|b| [b; CHUNK]),
                n,
            }),
            _ => None,
        };
        let words = if lanes.is_none() {
            Words::new(&table)
        } else {
            None
        };
        Triggers {
            table,
            lanes,
            words,
        }
    }

    /// Every byte triggers: skipping is pointless.
    pub fn is_all(&self) -> bool {
        self.table.iter().all(|&t| t)
    }

    fn contains(&self, b: u8) -> bool {
        self.table.get(usize::from(b)).copied().unwrap_or(true)
    }

    /// Offset of the first trigger byte in `buf[at..end]`. Chunks are
    /// read from `buf` past `end` when it has the bytes, so that a short
    /// haystack inside a longer buffer is still tested a chunk at a time,
    /// and the cursor's chunk serves the haystacks that follow in `buf`.
    #[inline(always)]
    pub fn next(&self, buf: &[u8], mut at: usize, end: usize, cur: &mut Cursor) -> Option<usize> {
        if self.lanes.is_none() {
            // Nothing is gained by masks: stop at the first.
            let end = end.min(buf.len());
            if let Some(words) = &self.words {
                while let Some(word) = buf.get(at..end).and_then(|rest| rest.first_chunk::<8>()) {
                    let mut flags = words.flags(u64::from_le_bytes(*word));
                    while flags != 0 {
                        let i = (flags.trailing_zeros() / 8) as usize;
                        if word.get(i).is_some_and(|&b| self.contains(b)) {
                            return Some(at + i);
                        }
                        flags &= flags - 1;
                    }
                    at += 8;
                }
            }
            let i = buf.get(at..end)?.iter().position(|&b| self.contains(b))?;
            return Some(at + i);
        }
        loop {
            if cur.valid && at >= cur.base && at - cur.base < CHUNK {
                let m = cur.mask & (u32::MAX << (at - cur.base));
                if m != 0 {
                    let t = cur.base + m.trailing_zeros() as usize;
                    return (t < end).then_some(t);
                }
                at = cur.base + CHUNK;
            }
            if at >= end.min(buf.len()) {
                return None;
            }
            *cur = Cursor {
                base: at,
                mask: self.mask_at(buf, at),
                valid: true,
            };
        }
    }

    #[inline(always)]
    fn mask_at(&self, hay: &[u8], at: usize) -> u32 {
        let chunk = hay
            .get(at..at + CHUNK)
            .and_then(|c| <&[u8; CHUNK]>::try_from(c).ok());
        match (chunk, &self.lanes) {
            (Some(chunk), Some(lanes)) => lanes.mask(chunk),
            _ => hay
                .get(at..)
                .unwrap_or_default()
                .iter()
                .take(CHUNK)
                .enumerate()
                .fold(0u32, |m, (i, &b)| m | (u32::from(self.contains(b)) << i)),
        }
    }
}

impl Lanes {
    /// Bit `i` set when `chunk[i]` is in one of the ranges.
    fn mask(&self, chunk: &[u8; CHUNK]) -> u32 {
        match self.n {
            1 => self.mask_n::<1>(chunk),
            2 => self.mask_n::<2>(chunk),
            3 => self.mask_n::<3>(chunk),
            4 => self.mask_n::<4>(chunk),
            5 => self.mask_n::<5>(chunk),
            6 => self.mask_n::<6>(chunk),
            7 => self.mask_n::<7>(chunk),
            _ => self.mask_n::<RANGES>(chunk),
        }
    }

    /// [`Lanes::mask`] over the first `N` ranges. Branch-free and
    /// element-wise so that it vectorizes: `b - lo <= span` (wrapping) is
    /// one compare per lane. Not inlined: the bounds are read from memory
    /// by the compares instead of being hoisted into every caller.
    #[inline(never)]
    fn mask_n<const N: usize>(&self, chunk: &[u8; CHUNK]) -> u32 {
        let mut hits = [0u8; CHUNK];
        for (lo, span) in self.lo.iter().zip(&self.span).take(N) {
            for (((h, &b), &l), &s) in hits.iter_mut().zip(chunk).zip(lo).zip(span) {
                *h |= u8::from(b.wrapping_sub(l) <= s);
            }
        }
        // Eight 0/1 bytes to eight bits: the multiply gathers byte `i`'s
        // low bit into bit `56 + i`.
        let (words, _) = hits.as_chunks::<8>();
        words.iter().enumerate().fold(0u32, |m, (i, w)| {
            let bits = u64::from_le_bytes(*w).wrapping_mul(0x0102_0408_1020_4080) >> 56;
            m | ((bits as u32) << (8 * i))
        })
    }
}

/// The set as at most [`RANGES`] ranges `(lo, span)` covering
/// `lo..=lo + span`, and how many, if it fits; unused slots repeat the
/// first range.
fn ranges(table: &[bool; 256]) -> Option<([u8; RANGES], [u8; RANGES], usize)> {
    let mut found: [(u8, u8); RANGES] = [(0, 0); RANGES];
    let mut n = 0usize;
    let mut b = 0usize;
    while b < 256 {
        if !table.get(b).copied().unwrap_or(false) {
            b += 1;
            continue;
        }
        let start = b;
        while table.get(b).copied().unwrap_or(false) {
            b += 1;
        }
        let slot = found.get_mut(n)?;
        *slot = (u8::try_from(start).ok()?, u8::try_from(b - 1 - start).ok()?);
        n += 1;
    }
    if n == 0 {
        return None;
    }
    let first = *found.first()?;
    let mut lo = [first.0; RANGES];
    let mut span = [first.1; RANGES];
    for ((l, s), (fl, fs)) in lo.iter_mut().zip(span.iter_mut()).zip(found.iter().take(n)) {
        *l = *fl;
        *s = *fs;
    }
    Some((lo, span, n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn bitmap(bytes: &[u8]) -> [u8; 32] {
        let mut m = [0u8; 32];
        for &b in bytes {
            m[usize::from(b / 8)] |= 1 << (b % 8);
        }
        m
    }

    #[test]
    fn finds_like_a_linear_scan() {
        let sets: [&[u8]; 4] = [b"0123456789-@AJ_", b"", b"\xff", b"acegikmoqsuwy"];
        let mut hay: Vec<u8> = (0..300u32).map(|i| (i * 7 % 251) as u8).collect();
        hay.extend_from_slice(&[b'x'; 100]);
        hay.push(b'J');
        let built = sets.into_iter().flat_map(|set| {
            [true, false].map(|vector| (set, Triggers::with(&bitmap(set), vector)))
        });
        for (set, t) in built {
            for from in [0, 1, 31, 32, 33, 200, 399, 400, 401, 402, 500] {
                let want = hay
                    .get(from..)
                    .and_then(|t| t.iter().position(|b| set.contains(b)))
                    .map(|i| from + i);
                let n = hay.len();
                assert_eq!(
                    t.next(&hay, from, n, &mut Cursor::default()),
                    want,
                    "{set:?} {from}"
                );
                // A cursor left on an earlier chunk is reused or replaced.
                let mut cur = Cursor::default();
                let first = t.next(&hay, from.saturating_sub(40), n, &mut cur);
                assert!(first.is_none() || first <= want.or(Some(usize::MAX)));
                assert_eq!(
                    t.next(&hay, from, n, &mut cur),
                    want,
                    "{set:?} {from} reused"
                );
                // A window that ends early: nothing at or past its end,
                // whatever the buffer holds there.
                for end in [from, from + 1, from + 5, from + 40] {
                    let inside = want.filter(|&w| w < end);
                    assert_eq!(
                        t.next(&hay, from, end, &mut cur),
                        inside,
                        "{set:?} {from}..{end}"
                    );
                    assert_eq!(
                        t.next(&hay, from, end, &mut Cursor::default()),
                        inside,
                        "{set:?} {from}..{end} fresh"
                    );
                }
            }
        }
        // The word test, where it applies, on every starting offset and
        // end among triggers, bytes it flags but the table refuses, and
        // bytes it passes.
        let dense: Vec<u8> = (0..200u32)
            .map(|i| b"ab7 .Z_-\xc3@q/"[(i * 5 % 12) as usize])
            .collect();
        let set = b"0123456789-@AJ_";
        let t = Triggers::with(&bitmap(set), false);
        assert!(t.words.is_some());
        for from in 0..40 {
            for end in (from..dense.len()).step_by(7) {
                let want = dense[from..end]
                    .iter()
                    .position(|b| set.contains(b))
                    .map(|i| from + i);
                assert_eq!(
                    t.next(&dense, from, end, &mut Cursor::default()),
                    want,
                    "{from}..{end}"
                );
            }
        }
        assert!(Triggers::from_bitmap(&[0xff; 32]).is_all());
        // Nine ranges do not fit the vector test; the table still works.
        let nine = Triggers::from_bitmap(&bitmap(b"acegikmoq"));
        assert!(nine.lanes.is_none());
        assert_eq!(nine.next(b"zzzzq", 0, 5, &mut Cursor::default()), Some(4));
        assert_eq!(nine.next(b"zzzzq", 0, 4, &mut Cursor::default()), None);
    }

    #[test]
    fn word_test_flags_every_trigger() {
        let sets: [&[u8]; 5] = [b"0123456789-@AJ_", b"\x00\x1f", b"{\x7f", b"\xef-", b"\x80"];
        for set in sets {
            let t = Triggers::with(&bitmap(set), false);
            let words = t.words.unwrap();
            for b in 0..=u8::MAX {
                for lane in 0..8 {
                    for filler in [b'x', b' ', 0, 0xff, b] {
                        let mut word = [filler; 8];
                        word[lane] = b;
                        let flags = words.flags(u64::from_le_bytes(word));
                        if set.contains(&b) {
                            assert_ne!(flags & (0x80 << (8 * lane)), 0, "{set:?} {b} {lane}");
                        }
                        // Only top bits, and only where a byte may be a
                        // trigger.
                        assert_eq!(flags & !(ONES * 0x80), 0);
                        if !set.contains(&filler) && set.iter().all(|&s| s < 0x80) {
                            let lo = *set.iter().min().unwrap();
                            let hi = *set.iter().max().unwrap();
                            for (i, &x) in word.iter().enumerate() {
                                let flagged = flags & (0x80 << (8 * i)) != 0;
                                assert_eq!(flagged, (lo..=hi).contains(&(x & 0x7f)), "{set:?} {x}");
                            }
                        }
                    }
                }
            }
        }
        // Sets whose span holds the bulk of text go byte by byte.
        assert!(Triggers::with(&bitmap(b"0z"), false).words.is_none());
        assert!(Triggers::with(&bitmap(b"! "), false).words.is_none());
        assert!(Triggers::with(&bitmap(b"!@"), false).words.is_some());
    }
}
