//! What the DLP DFAs read: the text as a person sees it.
//!
//! A value can be disguised without changing what a reader sees: invisible
//! characters dropped between its characters (`123\u{200B}-45-6789`), or
//! full-width digits (`１２３-４５-６７８９`). The scanner therefore never
//! shows the DFAs the invisible characters, Unicode's default-ignorable
//! code points (those a renderer shows nothing for: U+00AD soft hyphen,
//! U+034F, U+061C, U+115F..U+1160, U+17B4..U+17B5, U+180B..U+180F,
//! U+200B..U+200F zero-width characters and direction marks,
//! U+202A..U+202E and U+2066..U+2069 direction controls, U+2060..U+206F
//! word joiner and invisible operators, U+3164, U+FE00..U+FE0F variation
//! selectors, U+FEFF, U+FFA0, U+FFF0..U+FFF8, U+1BCA0..U+1BCA3,
//! U+1D173..U+1D17A, U+E0000..U+E0FFF tags and variation selectors), and
//! shows the full-width digits U+FF10..U+FF19 and the full-width
//! hyphen-minus U+FF0D as their ASCII counterparts. Every pattern,
//! built-in or custom, reads that text, word boundaries included:
//! `x\u{200B}123-45-6789` is `x123-45-6789`.
//!
//! This is done while the DFAs are stepped, one character (a *unit*) at a
//! time: no extra pass, no buffer, and match offsets stay offsets in the
//! real text, so a detection covers the whole disguised value. Writing the
//! same into the regexes instead (a run of invisible characters allowed
//! between any two characters, full-width digits in every digit class)
//! made the DFAs of the built-in detectors ten times larger (about 2.2 MB
//! against 220 KB, more with word boundaries kept): every state gets a
//! copy for each partial UTF-8 sequence, and a full-width digit, whose
//! bytes are not word bytes, lets a match start inside any digit run.
//!
//! Units are decoded from fixed byte sequences, not by general UTF-8
//! decoding, so that any input (raw bodies need not be UTF-8) reads the
//! same forwards and backwards: every sequence starts with a lead byte that
//! never occurs inside another one.

/// Smallest byte that starts a unit of more than one byte. The scanner
/// tests this before anything else: ASCII text never reaches the decoder.
pub(crate) const FIRST_LEAD: u8 = 0xC2;

/// Lead byte of the full-width digits and hyphen: when a digit or `-` is a
/// trigger byte, so is this one.
pub(crate) const FULL_WIDTH_LEAD: u8 = 0xEF;

/// The unit starting at `hay[at..]`: the byte the DFAs read for it (`None`
/// for an invisible character) and its length. `None` at the end.
#[inline(always)]
pub(crate) fn unit_at(hay: &[u8], at: usize) -> Option<(Option<u8>, usize)> {
    let b0 = *hay.get(at)?;
    if b0 < FIRST_LEAD {
        return Some((Some(b0), 1));
    }
    let next = |i: usize| hay.get(at + i).copied();
    Some(decode(b0, next(1), next(2), next(3)))
}

/// A unit of more than one byte starting with `b0` (>= [`FIRST_LEAD`]),
/// or `b0` alone. The invisible characters are the UTF-8 of Unicode's
/// default-ignorable code points (DerivedCoreProperties.txt).
fn decode(b0: u8, b1: Option<u8>, b2: Option<u8>, b3: Option<u8>) -> (Option<u8>, usize) {
    match (b0, b1, b2, b3) {
        // U+00AD, U+034F, U+061C.
        (0xC2, Some(0xAD), ..) | (0xCD, Some(0x8F), ..) | (0xD8, Some(0x9C), ..) => (None, 2),
        // U+115F..U+1160, U+17B4..U+17B5, U+180B..U+180F.
        (0xE1, Some(0x85), Some(0x9F | 0xA0), _)
        | (0xE1, Some(0x9E), Some(0xB4 | 0xB5), _)
        | (0xE1, Some(0xA0), Some(0x8B..=0x8F), _)
        // U+200B..U+200F, U+202A..U+202E, U+2060..U+206F.
        | (0xE2, Some(0x80), Some(0x8B..=0x8F | 0xAA..=0xAE), _)
        | (0xE2, Some(0x81), Some(0xA0..=0xAF), _)
        // U+3164.
        | (0xE3, Some(0x85), Some(0xA4), _)
        // U+FE00..U+FE0F, U+FEFF, U+FFA0, U+FFF0..U+FFF8.
        | (0xEF, Some(0xB8), Some(0x80..=0x8F), _)
        | (0xEF, Some(0xBB), Some(0xBF), _)
        | (0xEF, Some(0xBE), Some(0xA0), _)
        | (0xEF, Some(0xBF), Some(0xB0..=0xB8), _) => (None, 3),
        // U+1BCA0..U+1BCA3, U+1D173..U+1D17A, U+E0000..U+E0FFF.
        (0xF0, Some(0x9B), Some(0xB2), Some(0xA0..=0xA3))
        | (0xF0, Some(0x9D), Some(0x85), Some(0xB3..=0xBA))
        | (0xF3, Some(0xA0), Some(0x80..=0xBF), Some(0x80..=0xBF)) => (None, 4),
        (0xEF, Some(0xBC), Some(c @ 0x90..=0x99), _) => (Some(b'0' + (c - 0x90)), 3),
        (0xEF, Some(0xBC), Some(0x8D), _) => (Some(b'-'), 3),
        _ => (Some(b0), 1),
    }
}

/// The unit ending at `hay[..end]`, as [`unit_at`] reads it; `None` at the
/// start. Agrees with [`unit_at`] on every unit boundary.
#[inline(always)]
pub(crate) fn unit_before(hay: &[u8], end: usize) -> Option<(Option<u8>, usize)> {
    let last = *hay.get(end.checked_sub(1)?)?;
    if last < 0x80 {
        return Some((Some(last), 1));
    }
    unit_ending_with(hay, end, last)
}

/// [`unit_before`] when the byte before `end` is `last` (>= 0x80).
fn unit_ending_with(hay: &[u8], end: usize, last: u8) -> Option<(Option<u8>, usize)> {
    // Every longer unit ends with a continuation byte (0x80..=0xBF); its
    // lead byte is not one, so a sequence that fits right before `end` is
    // the unit itself and not the tail of another.
    if (0x80..0xC0).contains(&last) {
        for len in [4, 3, 2] {
            let Some(at) = end.checked_sub(len) else {
                continue;
            };
            if let Some(unit @ (_, n)) = unit_at(hay, at) {
                if n == len {
                    return Some(unit);
                }
            }
        }
    }
    Some((Some(last), 1))
}

/// The byte the DFAs read last before `at`, past any invisible characters;
/// `None` when there is none (the start of the text).
#[inline(always)]
pub(crate) fn read_before(hay: &[u8], at: usize) -> Option<u8> {
    match hay.get(at.checked_sub(1)?) {
        Some(&b) if b < 0x80 => Some(b),
        _ => read_before_slow(hay, at),
    }
}

fn read_before_slow(hay: &[u8], at: usize) -> Option<u8> {
    read_unit_before(hay, at, 0).map(|(b, _)| b)
}

/// The byte the DFAs read last before `end`, past any invisible
/// characters, and the offset where its unit starts; `None` when there is
/// none whose unit starts at or after `floor`.
pub(crate) fn read_unit_before(hay: &[u8], mut end: usize, floor: usize) -> Option<(u8, usize)> {
    loop {
        let (b, len) = unit_before(hay, end)?;
        end = end.checked_sub(len).filter(|&s| s >= floor)?;
        if let Some(b) = b {
            return Some((b, end));
        }
    }
}

/// The byte the DFAs read first at or after `at`, past any invisible
/// characters; `None` when there is none (the end of the text).
pub(crate) fn read_from(hay: &[u8], at: usize) -> Option<u8> {
    read_unit_from(hay, at).map(|(b, _)| b)
}

/// [`read_from`], with the offset right after the unit read.
pub(crate) fn read_unit_from(hay: &[u8], mut at: usize) -> Option<(u8, usize)> {
    loop {
        let (b, len) = unit_at(hay, at)?;
        at += len;
        if let Some(b) = b {
            return Some((b, at));
        }
    }
}

/// Where the `n`-th visible unit before `at` starts (invisible characters
/// are passed over, not counted), never going below `floor`.
#[inline(always)]
pub(crate) fn back(hay: &[u8], at: usize, n: usize, floor: usize) -> usize {
    // ASCII bytes are one unit each.
    let to = at.saturating_sub(n).max(floor);
    // A lead is a few bytes: a plain loop, not the library's call.
    if hay.get(to..at).is_some_and(|s| s.iter().all(|&b| b < 0x80)) {
        return to;
    }
    back_slow(hay, at, n, floor)
}

fn back_slow(hay: &[u8], mut at: usize, mut n: usize, floor: usize) -> usize {
    while n > 0 && at > floor {
        let Some((b, len)) = unit_before(hay, at) else {
            break;
        };
        if at - floor < len {
            break;
        }
        at -= len;
        if b.is_some() {
            n -= 1;
        }
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// What the DFAs read of `hay`, and each read byte's unit start.
    fn read(hay: &[u8]) -> (Vec<u8>, Vec<usize>) {
        let mut out = Vec::new();
        let mut starts = Vec::new();
        let mut at = 0;
        while let Some((b, len)) = unit_at(hay, at) {
            if let Some(b) = b {
                out.push(b);
                starts.push(at);
            }
            at += len;
        }
        (out, starts)
    }

    #[test]
    fn reads_like_a_person() {
        let s = "1\u{200B}2\u{200C}3\u{200D}-\u{2060}4\u{FEFF}5\u{AD}-６７８９－é€";
        assert_eq!(read(s.as_bytes()).0, "123-45-6789-é€".as_bytes());
        // Every default-ignorable code point, the ends of each range.
        for c in DEFAULT_IGNORABLE.iter().flat_map(|&(a, b)| [a, b]) {
            let c = char::from_u32(c).unwrap_or('x');
            let s = alloc::format!("1{c}2");
            assert_eq!(read(s.as_bytes()).0, b"12", "{c:?}");
        }
        // Near misses stay as they are: the code points around each range,
        // spaces that show, look-alikes.
        for c in DEFAULT_IGNORABLE.iter().flat_map(|&(a, b)| [a - 1, b + 1]) {
            let Some(c) = char::from_u32(c).filter(|&c| !is_ignorable(c)) else {
                continue;
            };
            let s = alloc::format!("{c}");
            assert_eq!(read(s.as_bytes()).0, s.as_bytes(), "{c:?}");
        }
        for other in ["\u{200A}", "\u{3000}", "\u{FEFE}", "\u{AC}", "／", "Ｆ"] {
            assert_eq!(read(other.as_bytes()).0, other.as_bytes(), "{other:?}");
        }
        // Cut sequences and stray bytes are single bytes.
        for raw in [
            &b"\xEF\xBC"[..],
            b"\xE2\x80",
            b"\xC2",
            b"\xBC\x90",
            b"\xff\xef",
            b"\xF3\xA0\x80",
            b"\xF0\x9D\x85",
        ] {
            assert_eq!(read(raw).0, raw);
        }
    }

    /// Unicode's default-ignorable code points (DerivedCoreProperties.txt,
    /// Unicode 15.1), as inclusive ranges.
    const DEFAULT_IGNORABLE: [(u32, u32); 17] = [
        (0xAD, 0xAD),
        (0x34F, 0x34F),
        (0x61C, 0x61C),
        (0x115F, 0x1160),
        (0x17B4, 0x17B5),
        (0x180B, 0x180F),
        (0x200B, 0x200F),
        (0x202A, 0x202E),
        (0x2060, 0x206F),
        (0x3164, 0x3164),
        (0xFE00, 0xFE0F),
        (0xFEFF, 0xFEFF),
        (0xFFA0, 0xFFA0),
        (0xFFF0, 0xFFF8),
        (0x1BCA0, 0x1BCA3),
        (0x1D173, 0x1D17A),
        (0xE0000, 0xE0FFF),
    ];

    fn is_ignorable(c: char) -> bool {
        let c = u32::from(c);
        DEFAULT_IGNORABLE.iter().any(|&(a, b)| (a..=b).contains(&c))
    }

    #[test]
    fn every_character_reads_as_the_table_says() {
        // Each scalar value on its own: invisible exactly when it is
        // default-ignorable; the full-width digits and hyphen as ASCII;
        // anything else as its own bytes.
        let mut buf = [0u8; 4];
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            let s = c.encode_utf8(&mut buf).as_bytes();
            let want: &[u8] = match c {
                _ if is_ignorable(c) => b"",
                '０'..='９' => &[b'0' + (u32::from(c) - 0xFF10) as u8],
                '－' => b"-",
                _ => s,
            };
            assert_eq!(read(s).0, want, "{c:?}");
        }
    }

    #[test]
    fn backwards_agrees_with_forwards() {
        let mut hays: Vec<Vec<u8>> = [
            "a\u{200B}b\u{AD}\u{FEFF}１－\u{2060}é€😀",
            "\u{AD}\u{AD}",
            "x\u{E0041}\u{1D173}\u{202E}\u{34F}\u{FE0F}\u{3164}𝅳y",
            "",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        hays.push(b"\xEF\xEF\xBC\x90\xC2\xC2\xAD\xE2\x80\x8B\x8B\xBF".to_vec());
        // Cut and stray four-byte sequences.
        hays.push(b"\xF3\xA0\x81\xF3\xA0\x81\x81\xA0\x81\x81\xF0\x9D\x85".to_vec());
        for hay in hays {
            let mut bounds = Vec::new();
            let mut at = 0;
            while let Some((b, len)) = unit_at(&hay, at) {
                bounds.push((at, b, len));
                at += len;
            }
            let mut end = hay.len();
            for &(start, b, len) in bounds.iter().rev() {
                assert_eq!(unit_before(&hay, end), Some((b, len)), "{hay:?} at {end}");
                assert_eq!(start + len, end);
                end = start;
            }
            assert_eq!(unit_before(&hay, 0), None);
        }
    }

    #[test]
    fn reads_around_invisible_runs() {
        let hay = "x\u{200B}\u{FEFF}1\u{AD}".as_bytes();
        assert_eq!(read_before(hay, 7), Some(b'x'));
        assert_eq!(read_before(hay, 1), Some(b'x'));
        assert_eq!(read_before(hay, 0), None);
        assert_eq!(read_from(hay, 1), Some(b'1'));
        assert_eq!(read_from(hay, 8), None);
        assert_eq!(back(hay, 7, 1, 0), 0);
        assert_eq!(back(hay, 7, 1, 1), 1);
        assert_eq!(back(hay, 7, 1, 3), 4);
        assert_eq!(back(hay, 7, 0, 0), 7);
        assert_eq!(back(hay, 10, 1, 0), 7);
        assert_eq!(back(hay, 10, 5, 0), 0);
    }
}
