//! Request parameters: where they come from and how they are read.
//!
//! A tool declares (at compile time) which parameter paths any rule looks
//! at; each gets a slot. Extraction walks the body / query / path once and
//! fills the slots with borrowed values; nothing is copied or decoded until
//! a predicate compares it, and then only byte by byte.

use crate::json::{Event, JStr, JsonError, Parser};
use core::fmt;

/// Upper bound on distinct parameters one tool's rules may look at.
pub const MAX_PARAMS: usize = 64;
/// Longest decoded form key that can name a parameter.
const MAX_KEY: usize = 256;

/// How a [`Text`] is encoded in the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enc {
    /// Bytes as they are.
    Plain,
    /// JSON string content (validated escapes).
    Json,
    /// `application/x-www-form-urlencoded`: `%XX` and `+` for space.
    Form,
    /// URL path segment: `%XX` only.
    Percent,
}

/// A string value, still encoded as it was on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Text<'a> {
    pub raw: &'a [u8],
    pub enc: Enc,
}

impl<'a> Text<'a> {
    pub fn plain(raw: &'a [u8]) -> Self {
        Text {
            raw,
            enc: Enc::Plain,
        }
    }

    /// Decoded bytes. Encodings were validated when the value was read.
    pub fn bytes(&self) -> TextBytes<'a> {
        match self.enc {
            Enc::Json => TextBytes::Json(
                JStr {
                    raw: self.raw,
                    start: 0,
                    escaped: true,
                }
                .bytes(),
            ),
            Enc::Plain => TextBytes::Plain(self.raw.iter()),
            Enc::Form => TextBytes::Pct(self.raw, 0, true),
            Enc::Percent => TextBytes::Pct(self.raw, 0, false),
        }
    }

    /// The value as `&str` when no decoding is needed.
    pub fn as_plain(&self) -> Option<&'a str> {
        let needs = match self.enc {
            Enc::Plain => false,
            Enc::Json => self.raw.contains(&b'\\'),
            Enc::Form => self.raw.iter().any(|&b| b == b'%' || b == b'+'),
            Enc::Percent => self.raw.contains(&b'%'),
        };
        if needs {
            None
        } else {
            core::str::from_utf8(self.raw).ok()
        }
    }

    pub fn eq_bytes(&self, s: &[u8]) -> bool {
        match self.as_plain() {
            Some(p) => p.as_bytes() == s,
            None => self.bytes().eq(s.iter().copied()),
        }
    }
}

/// Iterator over a [`Text`]'s decoded bytes.
#[derive(Debug, Clone)]
pub enum TextBytes<'a> {
    Plain(core::slice::Iter<'a, u8>),
    Json(crate::json::Unescape<'a>),
    /// raw, position, plus-is-space
    Pct(&'a [u8], usize, bool),
}

fn hexval(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The byte `%XX` at `raw[i]` stands for.
pub(crate) fn pct_at(raw: &[u8], i: usize) -> Option<u8> {
    let h = hexval(*raw.get(i + 1)?)?;
    let l = hexval(*raw.get(i + 2)?)?;
    Some((h << 4) | l)
}

impl Iterator for TextBytes<'_> {
    type Item = u8;
    fn next(&mut self) -> Option<u8> {
        match self {
            TextBytes::Plain(it) => it.next().copied(),
            TextBytes::Json(it) => it.next(),
            TextBytes::Pct(raw, pos, plus) => {
                let b = *raw.get(*pos)?;
                if b == b'%' {
                    if let Some(v) = pct_at(raw, *pos) {
                        *pos += 3;
                        return Some(v);
                    }
                } else if b == b'+' && *plus {
                    *pos += 1;
                    return Some(b' ');
                }
                *pos += 1;
                Some(b)
            }
        }
    }
}

/// Checks `%XX` escapes and that the decoded bytes are UTF-8.
pub fn validate_pct(raw: &[u8], plus: bool) -> bool {
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        if b == b'%' {
            if pct_at(raw, i).is_none() {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    if !raw.contains(&b'%') {
        return core::str::from_utf8(raw).is_ok();
    }
    utf8_ok(TextBytes::Pct(raw, 0, plus))
}

/// Streaming UTF-8 validation of decoded bytes.
fn utf8_ok(mut it: impl Iterator<Item = u8>) -> bool {
    let mut buf = [0u8; 4];
    while let Some(b) = it.next() {
        let n = match b {
            0x00..=0x7f => continue,
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => return false,
        };
        buf[0] = b;
        for slot in buf.iter_mut().take(n).skip(1) {
            match it.next() {
                Some(c) => *slot = c,
                None => return false,
            }
        }
        if core::str::from_utf8(buf.get(..n).unwrap_or_default()).is_err() {
            return false;
        }
    }
    true
}

/// One parameter value as read from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Value<'a> {
    #[default]
    Absent,
    Null,
    Bool(bool),
    /// JSON number text.
    Num(&'a str),
    Text(Text<'a>),
    Object,
    Array,
}

impl Value<'_> {
    pub fn is_absent(&self) -> bool {
        matches!(self, Value::Absent)
    }
}

/// Why the parameters could not be read; the request is denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtractError {
    Json(JsonError),
    /// Bad `%` escape or non-UTF-8 in a form body or query string.
    BadForm,
    /// Slot index: the parameter was given more than once.
    Duplicate(usize),
    TooManyParams,
}

impl fmt::Display for ExtractError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExtractError::Json(e) => write!(f, "malformed json body: {e}"),
            ExtractError::BadForm => f.write_str("malformed form-encoded data"),
            ExtractError::Duplicate(_) => f.write_str("a parameter is given more than once"),
            ExtractError::TooManyParams => f.write_str("too many parameters in the request"),
        }
    }
}

/// A parameter path segment as the request spells it.
#[derive(Clone, Copy)]
enum Seg<'a> {
    Key(JStr<'a>),
    Index(u32),
}

fn seg_matches(seg: &Seg<'_>, want: &str) -> bool {
    match seg {
        Seg::Key(k) => k.eq_bytes(want.as_bytes()),
        Seg::Index(i) => want.parse::<u32>().ok() == Some(*i),
    }
}

fn record<'a, P: AsRef<[S]>, S: AsRef<str>>(
    params: &[P],
    path: &[Seg<'a>],
    value: Value<'a>,
    slots: &mut [Value<'a>],
) -> Result<(), ExtractError> {
    for (i, p) in params.iter().enumerate() {
        let want = p.as_ref();
        if want.len() != path.len() {
            continue;
        }
        if want
            .iter()
            .zip(path.iter())
            .all(|(w, s)| seg_matches(s, w.as_ref()))
        {
            let slot = slots.get_mut(i).ok_or(ExtractError::TooManyParams)?;
            if !slot.is_absent() {
                return Err(ExtractError::Duplicate(i));
            }
            *slot = value;
        }
    }
    Ok(())
}

/// Walks a whole JSON document (validating it) and fills the slots of the
/// parameters in `params` (each a list of path segments).
pub fn extract_json<'a, P: AsRef<[S]>, S: AsRef<str>>(
    body: &'a [u8],
    params: &[P],
    slots: &mut [Value<'a>],
    max_depth: usize,
    max_values: usize,
) -> Result<(), ExtractError> {
    const N: usize = crate::json::MAX_DEPTH_LIMIT;
    let mut path = [Seg::Index(0); N];
    let mut next_index = [0u32; N];
    let mut is_array = [false; N];
    let mut values = 0usize;
    let mut p = Parser::new(body, max_depth);
    loop {
        let d = p.depth();
        let Some(ev) = p.next().map_err(ExtractError::Json)? else {
            return Ok(());
        };
        let value = match ev {
            Event::Key(k) => {
                if let Some(s) = d.checked_sub(1).and_then(|i| path.get_mut(i)) {
                    *s = Seg::Key(k);
                }
                continue;
            }
            Event::ObjEnd | Event::ArrEnd => continue,
            Event::ObjStart => Value::Object,
            Event::ArrStart => Value::Array,
            Event::Str(s) => Value::Text(Text {
                raw: s.raw,
                enc: if s.escaped { Enc::Json } else { Enc::Plain },
            }),
            Event::Num(n) => Value::Num(n),
            Event::Bool(b) => Value::Bool(b),
            Event::Null => Value::Null,
        };
        values += 1;
        if values > max_values {
            return Err(ExtractError::TooManyParams);
        }
        if let Some(i) = d.checked_sub(1) {
            if is_array.get(i).copied().unwrap_or(false) {
                let idx = next_index.get(i).copied().unwrap_or(0);
                if let Some(s) = path.get_mut(i) {
                    *s = Seg::Index(idx);
                }
                if let Some(n) = next_index.get_mut(i) {
                    *n = idx.saturating_add(1);
                }
            }
        }
        record(params, path.get(..d).unwrap_or_default(), value, slots)?;
        if matches!(ev, Event::ObjStart | Event::ArrStart) {
            if let Some(a) = is_array.get_mut(d) {
                *a = matches!(ev, Event::ArrStart);
            }
            if let Some(n) = next_index.get_mut(d) {
                *n = 0;
            }
        }
    }
}

/// Splits a decoded form key (`metadata[order_id]`, `card.last4`) into
/// segments and compares it with `want`.
fn form_key_matches(key: &[u8], want: &[impl AsRef<str>]) -> bool {
    let mut segs = key
        .split(|&b| b == b'[' || b == b'.')
        .map(|s| s.strip_suffix(b"]").unwrap_or(s));
    // `a[b]c` is not a bracket path; keep it unmatchable rather than guess.
    for w in want {
        match segs.next() {
            Some(s) if s == w.as_ref().as_bytes() => {}
            _ => return false,
        }
    }
    segs.next().is_none()
}

/// Reads an `application/x-www-form-urlencoded` body or query string.
pub fn extract_form<'a, P: AsRef<[S]>, S: AsRef<str>>(
    data: &'a [u8],
    params: &[P],
    slots: &mut [Value<'a>],
    max_values: usize,
) -> Result<(), ExtractError> {
    let mut count = 0usize;
    for pair in data.split(|&b| b == b'&') {
        if pair.is_empty() {
            continue;
        }
        count += 1;
        if count > max_values {
            return Err(ExtractError::TooManyParams);
        }
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (
                pair.get(..i).unwrap_or_default(),
                pair.get(i + 1..).unwrap_or_default(),
            ),
            None => (pair, &b""[..]),
        };
        if !validate_pct(k, true) || !validate_pct(v, true) {
            return Err(ExtractError::BadForm);
        }
        let mut key = [0u8; MAX_KEY];
        let mut n = 0usize;
        let mut too_long = false;
        for b in (Text {
            raw: k,
            enc: Enc::Form,
        })
        .bytes()
        {
            match key.get_mut(n) {
                Some(slot) => *slot = b,
                None => {
                    too_long = true;
                    break;
                }
            }
            n += 1;
        }
        if too_long {
            continue;
        }
        let key = key.get(..n).unwrap_or_default();
        for (i, p) in params.iter().enumerate() {
            if form_key_matches(key, p.as_ref()) {
                let slot = slots.get_mut(i).ok_or(ExtractError::TooManyParams)?;
                if !slot.is_absent() {
                    return Err(ExtractError::Duplicate(i));
                }
                *slot = Value::Text(Text {
                    raw: v,
                    enc: Enc::Form,
                });
            }
        }
    }
    Ok(())
}

/// Parses decoded text as a number the way JSON spells numbers (no `+`,
/// no leading zeros, no `NaN`/`inf`, no spaces). Up to 64 bytes.
pub fn parse_number(bytes: impl Iterator<Item = u8>) -> Option<f64> {
    let mut buf = [0u8; 64];
    let mut n = 0usize;
    for b in bytes {
        *buf.get_mut(n)? = b;
        n += 1;
    }
    let text = buf.get(..n)?;
    if !is_json_number(text) {
        return None;
    }
    let v: f64 = core::str::from_utf8(text).ok()?.parse().ok()?;
    v.is_finite().then_some(v)
}

fn is_json_number(t: &[u8]) -> bool {
    let mut p = Parser::new(t, 1);
    matches!(p.next(), Ok(Some(Event::Num(_)))) && matches!(p.next(), Ok(None))
}

impl Value<'_> {
    /// The numeric value: JSON numbers, and strings that spell a number.
    pub fn number(&self) -> Option<f64> {
        match self {
            Value::Num(n) => {
                let v: f64 = n.parse().ok()?;
                v.is_finite().then_some(v)
            }
            Value::Text(t) => parse_number(t.bytes()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    fn paths(ps: &[&str]) -> Vec<Vec<&'static str>> {
        ps.iter()
            .map(|p| {
                let s: &'static str =
                    alloc::boxed::Box::leak(alloc::string::String::from(*p).into_boxed_str());
                s.split('.').collect()
            })
            .collect()
    }

    fn text(v: &Value<'_>) -> Vec<u8> {
        match v {
            Value::Text(t) => t.bytes().collect(),
            Value::Num(n) => n.as_bytes().to_vec(),
            other => panic!("not text: {other:?}"),
        }
    }

    #[test]
    fn json_paths_and_indices() {
        let ps = paths(&["amount", "card.last4", "items.1.sku", "meta", "esc"]);
        let mut slots = [Value::Absent; 5];
        let body = br#"{"amount": 12.5, "card": {"last4": "4242"}, "items": [{"sku":"a"},{"sku":"b"}], "meta": {}, "\u0065sc": "x\u0079"}"#;
        extract_json(body, &ps, &mut slots, 32, 1000).unwrap();
        assert_eq!(slots[0], Value::Num("12.5"));
        assert_eq!(text(&slots[1]), b"4242");
        assert_eq!(text(&slots[2]), b"b");
        assert_eq!(slots[3], Value::Object);
        assert_eq!(text(&slots[4]), b"xy");
    }

    #[test]
    fn json_duplicates_are_errors() {
        let ps = paths(&["amount"]);
        let mut slots = [Value::Absent; 1];
        let err = extract_json(br#"{"amount":1,"amount":9999}"#, &ps, &mut slots, 32, 100);
        assert_eq!(err, Err(ExtractError::Duplicate(0)));
        let mut slots = [Value::Absent; 1];
        let err = extract_json(
            br#"{"amount":1,"\u0061mount":9999}"#,
            &ps,
            &mut slots,
            32,
            100,
        );
        assert_eq!(err, Err(ExtractError::Duplicate(0)));
    }

    #[test]
    fn form_bodies() {
        let ps = paths(&["amount", "metadata.order_id", "description", "card.last4"]);
        let mut slots = [Value::Absent; 4];
        extract_form(
            b"amount=1200&metadata%5Border_id%5D=A%2B1&description=two+words&card[last4]=4242",
            &ps,
            &mut slots,
            100,
        )
        .unwrap();
        assert_eq!(slots[0].number(), Some(1200.0));
        assert_eq!(text(&slots[1]), b"A+1");
        assert_eq!(text(&slots[2]), b"two words");
        assert_eq!(text(&slots[3]), b"4242");
        let mut slots = [Value::Absent; 4];
        assert_eq!(
            extract_form(b"amount=1&amount=9999", &ps, &mut slots, 100),
            Err(ExtractError::Duplicate(0))
        );
        let mut slots = [Value::Absent; 4];
        assert_eq!(
            extract_form(b"card[last4]=1&card.last4=2", &ps, &mut slots, 100),
            Err(ExtractError::Duplicate(3))
        );
        let mut slots = [Value::Absent; 4];
        assert_eq!(
            extract_form(b"amount=%zz", &ps, &mut slots, 100),
            Err(ExtractError::BadForm)
        );
        let mut slots = [Value::Absent; 4];
        assert_eq!(
            extract_form(b"amount=%ff", &ps, &mut slots, 100),
            Err(ExtractError::BadForm)
        );
    }

    #[test]
    fn numbers_from_strings_are_strict() {
        let n = |s: &str| parse_number(s.bytes());
        assert_eq!(n("9000"), Some(9000.0));
        assert_eq!(n("5e3"), Some(5000.0));
        assert_eq!(n("-0"), Some(-0.0));
        for bad in [
            "", " 1", "+1", "0x10", "NaN", "inf", "1e999", "01", "1,000", "9000 ",
        ] {
            assert_eq!(n(bad), None, "{bad:?}");
        }
        assert_eq!(Value::Num("1e999").number(), None);
        let _ = vec![0u8];
    }
}
