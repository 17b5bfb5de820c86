//! Body encodings the scanner reads and writes: JSON string escapes,
//! `application/x-www-form-urlencoded`, and the replacement tokens.
//!
//! Decoders write into caller-owned buffers that keep their capacity
//! between requests, so a warm scanner decodes without allocating.

use alloc::vec::Vec;

const HEX: &[u8; 16] = b"0123456789abcdef";
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Offset of the first `needle` in `hay`. Tests 32 bytes at a time with a
/// branch-free loop the compiler vectorizes, then a word at a time.
pub fn find_byte(hay: &[u8], needle: u8) -> Option<usize> {
    let (chunks, _) = hay.as_chunks::<32>();
    let mut skipped = 0usize;
    for chunk in chunks {
        let hit = chunk
            .iter()
            .fold(0u8, |acc, &b| acc | u8::from(b == needle));
        if hit != 0 {
            break;
        }
        skipped += 32;
    }
    // Then eight bytes at a time.
    let (words, _) = hay.get(skipped..)?.as_chunks::<8>();
    for word in words {
        if let Some(i) = crate::json::first_eq(*word, needle) {
            return Some(skipped + i);
        }
        skipped += 8;
    }
    let rest = hay.get(skipped..)?;
    rest.iter().position(|&b| b == needle).map(|i| skipped + i)
}

/// Decodes the content of a JSON string that the parser has validated.
/// Returns `None` only if `raw` is not a valid JSON string body.
pub fn decode_json(raw: &[u8], out: &mut Vec<u8>) -> Option<()> {
    out.clear();
    let mut rest = raw;
    while let Some(i) = find_byte(rest, b'\\') {
        out.extend_from_slice(rest.get(..i)?);
        let esc = rest.get(i + 1..)?;
        let (c, used) = crate::json::decode_escape(esc)?;
        let mut buf = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        rest = esc.get(used..)?;
    }
    out.extend_from_slice(rest);
    Some(())
}

/// Percent/plus-decodes one key or value of a form body. On bad
/// percent-encoding returns the offset of the `%` within `raw`.
pub fn decode_form(raw: &[u8], out: &mut Vec<u8>) -> Result<(), usize> {
    out.clear();
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        match b {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                out.push(crate::params::pct_at(raw, i).ok_or(i)?);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(())
}

/// Percent-encodes `s` the way browsers serialize form bodies (WHATWG
/// `application/x-www-form-urlencoded`): alphanumerics and `*-._` stay,
/// space becomes `+`, everything else `%XX`.
pub fn encode_form(out: &mut Vec<u8>, s: &[u8]) {
    for &b in s {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => out.push(b),
            b' ' => out.push(b'+'),
            _ => {
                out.push(b'%');
                out.push(HEX_UPPER.get(usize::from(b >> 4)).copied().unwrap_or(b'0'));
                out.push(HEX_UPPER.get(usize::from(b & 0xf)).copied().unwrap_or(b'0'));
            }
        }
    }
}

/// Lowercase hex of `bytes`.
pub fn write_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        out.push(HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0'));
        out.push(HEX.get(usize::from(b & 0xf)).copied().unwrap_or(b'0'));
    }
}

/// Keeps the last four alphanumeric characters of `value`, stars every
/// earlier one, keeps separators.
pub fn write_mask(out: &mut Vec<u8>, value: &[u8]) {
    const KEEP: usize = 4;
    match core::str::from_utf8(value) {
        Ok(s) => {
            let n = s.chars().filter(|c| c.is_alphanumeric()).count();
            let first_kept = n.saturating_sub(KEEP);
            let mut i = 0;
            let mut buf = [0u8; 4];
            for c in s.chars() {
                if c.is_alphanumeric() {
                    if i < first_kept {
                        out.push(b'*');
                    } else {
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    }
                    i += 1;
                } else {
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        // Matches never split a UTF-8 sequence; should one arrive anyway,
        // star every non-ASCII byte so the output stays valid UTF-8.
        Err(_) => {
            let n = value.iter().filter(|b| b.is_ascii_alphanumeric()).count();
            let first_kept = n.saturating_sub(KEEP);
            let mut i = 0;
            for &b in value {
                if b.is_ascii_alphanumeric() {
                    out.push(if i < first_kept { b'*' } else { b });
                    i += 1;
                } else if b.is_ascii() {
                    out.push(b);
                } else {
                    out.push(b'*');
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn finds_bytes() {
        // Every offset of chunks, words and the tail, among bytes next to
        // the needle's value, zero, 0xff and the needle with its top bit.
        let needle = b'\\';
        for fill in [b'a', needle - 1, needle + 1, needle ^ 0x80, 0, 0xff] {
            for len in 0..100 {
                let mut hay = vec![fill; len];
                assert_eq!(find_byte(&hay, needle), None, "{fill} {len}");
                for at in 0..len {
                    hay[at] = needle;
                    assert_eq!(find_byte(&hay, needle), Some(at), "{fill} {len} {at}");
                    // A second one later does not hide the first.
                    if at + 9 < len {
                        hay[at + 9] = needle;
                        assert_eq!(find_byte(&hay, needle), Some(at));
                        hay[at + 9] = fill;
                    }
                    hay[at] = fill;
                }
            }
        }
    }

    #[test]
    fn json_decoding() {
        let mut out = vec![];
        decode_json(
            br#"a\"b\\c\/d\b\f\n\r\tx\u0031\u00e9\ud83d\ude00z"#,
            &mut out,
        )
        .unwrap();
        assert_eq!(out, "a\"b\\c/d\u{8}\u{c}\n\r\tx1é\u{1F600}z".as_bytes());
        decode_json(b"plain", &mut out).unwrap();
        assert_eq!(out, b"plain");
        assert!(decode_json(br"\x", &mut out).is_none());
        assert!(decode_json(br"\ud800x", &mut out).is_none());
        assert!(decode_json(br"\u12", &mut out).is_none());
    }

    #[test]
    fn form_round_trip() {
        let mut out = vec![];
        decode_form(b"a+b%20c%2b%C3%A9", &mut out).unwrap();
        assert_eq!(out, "a b c+é".as_bytes());
        assert_eq!(decode_form(b"ab%2", &mut out), Err(2));
        assert_eq!(decode_form(b"%G0", &mut out), Err(0));
        let mut enc = vec![];
        encode_form(&mut enc, "[REDACTED:ssn] *-._~&=+é".as_bytes());
        assert_eq!(enc, b"%5BREDACTED%3Assn%5D+*-._%7E%26%3D%2B%C3%A9");
        decode_form(&enc, &mut out).unwrap();
        assert_eq!(out, "[REDACTED:ssn] *-._~&=+é".as_bytes());
    }

    #[test]
    fn masking() {
        let mut out = vec![];
        write_mask(&mut out, b"123-45-6789");
        assert_eq!(out, b"***-**-6789");
        out.clear();
        write_mask(&mut out, "ab-é".as_bytes());
        assert_eq!(out, "ab-é".as_bytes());
        out.clear();
        write_mask(&mut out, b"a\xffbcdef");
        assert_eq!(out, b"***cdef");
    }
}
