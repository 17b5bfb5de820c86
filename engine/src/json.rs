//! A strict, allocation-free JSON pull parser.
//!
//! Request bodies, JWT headers and claims are read with this. It validates
//! the whole document (RFC 8259: no comments, no trailing commas, no
//! trailing garbage, valid escapes, valid UTF-8, lone surrogates rejected)
//! and hands out borrowed slices: string escapes are decoded lazily by
//! [`JStr::bytes`], so matching a key never copies it. The pieces of the
//! grammar (strings, numbers, words, white space) are also open to the
//! crate, for the parameter walk that reads a document recursively.

use core::fmt;

/// Hard upper bound on nesting; the container stack is a bit set.
pub const MAX_DEPTH_LIMIT: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonErrorKind {
    UnexpectedEnd,
    UnexpectedByte(u8),
    TrailingData,
    DepthLimit,
    BadEscape,
    LoneSurrogate,
    ControlCharInString,
    InvalidUtf8,
    BadNumber,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonError {
    pub kind: JsonErrorKind,
    pub offset: usize,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.offset;
        match self.kind {
            JsonErrorKind::UnexpectedEnd => write!(f, "unexpected end of json at byte {at}"),
            JsonErrorKind::UnexpectedByte(b) if b.is_ascii_graphic() => {
                write!(f, "unexpected `{}` in json at byte {at}", b as char)
            }
            JsonErrorKind::UnexpectedByte(b) => {
                write!(f, "unexpected byte 0x{b:02x} in json at byte {at}")
            }
            JsonErrorKind::TrailingData => write!(f, "trailing data after json at byte {at}"),
            JsonErrorKind::DepthLimit => write!(f, "json nested too deeply at byte {at}"),
            JsonErrorKind::BadEscape => write!(f, "invalid escape in json string at byte {at}"),
            JsonErrorKind::LoneSurrogate => {
                write!(f, "unpaired surrogate escape in json string at byte {at}")
            }
            JsonErrorKind::ControlCharInString => {
                write!(f, "control character in json string at byte {at}")
            }
            JsonErrorKind::InvalidUtf8 => write!(f, "invalid utf-8 in json at byte {at}"),
            JsonErrorKind::BadNumber => write!(f, "invalid json number at byte {at}"),
        }
    }
}

/// A JSON string as it appears in the input: the bytes between the quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JStr<'a> {
    /// Raw content between the quotes, escapes intact.
    pub raw: &'a [u8],
    /// Offset of `raw` in the parsed input.
    pub start: usize,
    /// Whether `raw` contains at least one backslash escape.
    pub escaped: bool,
}

impl<'a> JStr<'a> {
    /// The decoded string as UTF-8 bytes. Escapes were validated by the
    /// parser, so decoding cannot fail.
    pub fn bytes(&self) -> Unescape<'a> {
        Unescape {
            raw: self.raw,
            pos: 0,
            pending: [0; 4],
            pending_len: 0,
            pending_pos: 0,
        }
    }

    /// The raw content as `&str` when there is nothing to decode.
    pub fn as_plain(&self) -> Option<&'a str> {
        if self.escaped {
            None
        } else {
            core::str::from_utf8(self.raw).ok()
        }
    }

    /// Decoded equality with `s`.
    pub fn eq_bytes(&self, s: &[u8]) -> bool {
        if !self.escaped {
            return self.raw == s;
        }
        self.bytes().eq(s.iter().copied())
    }
}

/// Iterator over the decoded bytes of a validated JSON string.
#[derive(Debug, Clone)]
pub struct Unescape<'a> {
    raw: &'a [u8],
    pos: usize,
    pending: [u8; 4],
    pending_len: u8,
    pending_pos: u8,
}

fn hex4(raw: &[u8], at: usize) -> Option<u32> {
    let digits = raw.get(at..at + 4)?;
    let mut v = 0u32;
    for &d in digits {
        v = (v << 4) | (d as char).to_digit(16)?;
    }
    Some(v)
}

/// Decodes the escape whose backslash comes just before `esc`: the
/// character and how many bytes of `esc` it used. `None` for an invalid
/// escape or an unpaired surrogate.
pub fn decode_escape(esc: &[u8]) -> Option<(char, usize)> {
    let (&e, _) = esc.split_first()?;
    let simple = match e {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        b'u' => {
            let hi = hex4(esc, 1)?;
            if !(0xD800..0xDC00).contains(&hi) {
                return Some((char::from_u32(hi)?, 5));
            }
            if esc.get(5..7)? != b"\\u" {
                return None;
            }
            let lo = hex4(esc, 7)?;
            if !(0xDC00..0xE000).contains(&lo) {
                return None;
            }
            let c = char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))?;
            return Some((c, 11));
        }
        _ => return None,
    };
    Some((simple, 1))
}

impl Iterator for Unescape<'_> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        if self.pending_pos < self.pending_len {
            let b = self.pending.get(usize::from(self.pending_pos)).copied();
            self.pending_pos += 1;
            return b;
        }
        let b = *self.raw.get(self.pos)?;
        if b != b'\\' {
            self.pos += 1;
            return Some(b);
        }
        let (c, used) = decode_escape(self.raw.get(self.pos + 1..)?)?;
        self.pos += 1 + used;
        if c.is_ascii() {
            return u8::try_from(c).ok();
        }
        let n = c.encode_utf8(&mut self.pending).len();
        self.pending_len = n as u8;
        self.pending_pos = 1;
        self.pending.first().copied()
    }
}

/// One parse event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    ObjStart,
    ObjEnd,
    ArrStart,
    ArrEnd,
    Key(JStr<'a>),
    Str(JStr<'a>),
    /// The number's text, validated against the JSON grammar.
    Num(&'a str),
    Bool(bool),
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Value,
    ObjFirst,
    ObjNext,
    AfterKey,
    ArrFirst,
    ArrNext,
    Done,
}

/// Pull parser over one JSON document.
#[derive(Debug, Clone)]
pub struct Parser<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Bit `i` set: container at depth `i + 1` is an array.
    stack: u128,
    depth: usize,
    max_depth: usize,
    state: State,
}

impl<'a> Parser<'a> {
    /// `max_depth` is clamped to [`MAX_DEPTH_LIMIT`].
    pub fn new(buf: &'a [u8], max_depth: usize) -> Self {
        Parser {
            buf,
            pos: 0,
            stack: 0,
            depth: 0,
            max_depth: max_depth.min(MAX_DEPTH_LIMIT),
            state: State::Value,
        }
    }

    /// Current nesting depth (0 at top level).
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Byte offset of the next unread byte.
    pub fn offset(&self) -> usize {
        self.pos
    }

    /// The whole document being read.
    pub fn input(&self) -> &'a [u8] {
        self.buf
    }

    pub(crate) fn err(&self, kind: JsonErrorKind) -> JsonError {
        JsonError {
            kind,
            offset: self.pos,
        }
    }

    pub(crate) fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.buf.get(self.pos) {
            self.pos += 1;
        }
    }

    pub(crate) fn peek(&self) -> Result<u8, JsonError> {
        self.buf
            .get(self.pos)
            .copied()
            .ok_or(self.err(JsonErrorKind::UnexpectedEnd))
    }

    fn after_value(&mut self) {
        self.state = if self.depth == 0 {
            State::Done
        } else if self.top_is_array() {
            State::ArrNext
        } else {
            State::ObjNext
        };
    }

    fn top_is_array(&self) -> bool {
        self.depth > 0 && (self.stack >> (self.depth - 1)) & 1 == 1
    }

    fn push(&mut self, array: bool) -> Result<(), JsonError> {
        if self.depth >= self.max_depth {
            return Err(self.err(JsonErrorKind::DepthLimit));
        }
        let bit = 1u128 << self.depth;
        if array {
            self.stack |= bit;
        } else {
            self.stack &= !bit;
        }
        self.depth += 1;
        Ok(())
    }

    fn pop(&mut self) {
        self.depth = self.depth.saturating_sub(1);
        self.after_value();
    }

    /// The next event, `Ok(None)` once the document ended cleanly.
    #[allow(clippy::should_implement_trait)]
    #[inline]
    pub fn next(&mut self) -> Result<Option<Event<'a>>, JsonError> {
        self.skip_ws();
        match self.state {
            State::Done => self.end().map(|()| None),
            State::Value => self.value().map(Some),
            State::ObjFirst | State::ObjNext => {
                let b = self.peek()?;
                if b == b'}' {
                    self.pos += 1;
                    self.pop();
                    return Ok(Some(Event::ObjEnd));
                }
                if self.state == State::ObjNext {
                    if b != b',' {
                        return Err(self.err(JsonErrorKind::UnexpectedByte(b)));
                    }
                    self.pos += 1;
                    self.skip_ws();
                }
                let b = self.peek()?;
                if b != b'"' {
                    return Err(self.err(JsonErrorKind::UnexpectedByte(b)));
                }
                let s = self.string()?;
                self.state = State::AfterKey;
                Ok(Some(Event::Key(s)))
            }
            State::AfterKey => {
                let b = self.peek()?;
                if b != b':' {
                    return Err(self.err(JsonErrorKind::UnexpectedByte(b)));
                }
                self.pos += 1;
                self.skip_ws();
                self.value().map(Some)
            }
            State::ArrFirst | State::ArrNext => {
                let b = self.peek()?;
                if b == b']' {
                    self.pos += 1;
                    self.pop();
                    return Ok(Some(Event::ArrEnd));
                }
                if self.state == State::ArrNext {
                    if b != b',' {
                        return Err(self.err(JsonErrorKind::UnexpectedByte(b)));
                    }
                    self.pos += 1;
                    self.skip_ws();
                }
                self.value().map(Some)
            }
        }
    }

    /// Skips the rest of the container just opened (after `ObjStart` or
    /// `ArrStart`), still validating it.
    pub fn skip_container(&mut self) -> Result<(), JsonError> {
        let target = self.depth.saturating_sub(1);
        while self.depth > target {
            if self.next()?.is_none() {
                return Err(self.err(JsonErrorKind::UnexpectedEnd));
            }
        }
        Ok(())
    }

    fn value(&mut self) -> Result<Event<'a>, JsonError> {
        let b = self.peek()?;
        match b {
            b'{' => {
                self.push(false)?;
                self.pos += 1;
                self.state = State::ObjFirst;
                Ok(Event::ObjStart)
            }
            b'[' => {
                self.push(true)?;
                self.pos += 1;
                self.state = State::ArrFirst;
                Ok(Event::ArrStart)
            }
            b'"' => {
                let s = self.string()?;
                self.after_value();
                Ok(Event::Str(s))
            }
            b't' => self.literal(b"true", Event::Bool(true)),
            b'f' => self.literal(b"false", Event::Bool(false)),
            b'n' => self.literal(b"null", Event::Null),
            b'-' | b'0'..=b'9' => {
                let n = self.number()?;
                self.after_value();
                Ok(Event::Num(n))
            }
            _ => Err(self.err(JsonErrorKind::UnexpectedByte(b))),
        }
    }

    fn literal(&mut self, word: &[u8], ev: Event<'a>) -> Result<Event<'a>, JsonError> {
        self.word(word)?;
        self.after_value();
        Ok(ev)
    }

    /// Reads `word` (`true`, `false` or `null`) at the current offset.
    pub(crate) fn word(&mut self, word: &[u8]) -> Result<(), JsonError> {
        let end = self.pos + word.len();
        match self.buf.get(self.pos..end) {
            Some(w) if w == word => {
                self.pos = end;
                Ok(())
            }
            Some(_) => Err(self.err(JsonErrorKind::UnexpectedByte(self.peek()?))),
            None => Err(self.err(JsonErrorKind::UnexpectedEnd)),
        }
    }

    /// Steps over the byte [`Parser::peek`] returned.
    pub(crate) fn bump(&mut self) {
        self.pos += 1;
    }

    /// The depth limit a reader that keeps its own nesting checks before
    /// opening a container, as [`Parser::next`] does.
    pub(crate) fn max_depth(&self) -> usize {
        self.max_depth
    }

    /// After the document: only white space may follow.
    pub(crate) fn end(&mut self) -> Result<(), JsonError> {
        self.skip_ws();
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(self.err(JsonErrorKind::TrailingData))
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.buf.get(self.pos) {
            self.pos += 1;
        }
        self.pos - start
    }

    pub(crate) fn number(&mut self) -> Result<&'a str, JsonError> {
        let text = self.number_bytes()?;
        // Only ASCII was consumed.
        core::str::from_utf8(text).map_err(|_| self.err(JsonErrorKind::BadNumber))
    }

    /// [`Parser::number`] without the conversion to `str`.
    pub(crate) fn number_bytes(&mut self) -> Result<&'a [u8], JsonError> {
        let start = self.pos;
        if self.buf.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        match self.buf.get(self.pos) {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.err(JsonErrorKind::BadNumber)),
        }
        if self.buf.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.err(JsonErrorKind::BadNumber));
            }
        }
        if let Some(b'e' | b'E') = self.buf.get(self.pos) {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.buf.get(self.pos) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.err(JsonErrorKind::BadNumber));
            }
        }
        Ok(self.buf.get(start..self.pos).unwrap_or_default())
    }

    /// Parses a string starting at the opening quote.
    #[inline(always)]
    pub(crate) fn string(&mut self) -> Result<JStr<'a>, JsonError> {
        self.pos += 1;
        let start = self.pos;
        let mut escaped = false;
        let mut ascii = true;
        loop {
            // Skip eight ordinary bytes at a time: none is `"`, `\\`, a
            // control character or non-ASCII.
            self.pos = skip_plain(self.buf, self.pos);
            let b = self.peek()?;
            match b {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    self.escape()?;
                }
                0x00..=0x1f => return Err(self.err(JsonErrorKind::ControlCharInString)),
                0x80.. => {
                    ascii = false;
                    self.pos += 1;
                }
                _ => self.pos += 1,
            }
        }
        let raw = self.buf.get(start..self.pos).unwrap_or_default();
        if !ascii {
            if let Err(e) = core::str::from_utf8(raw) {
                return Err(JsonError {
                    kind: JsonErrorKind::InvalidUtf8,
                    offset: start + e.valid_up_to(),
                });
            }
        }
        self.pos += 1;
        Ok(JStr {
            raw,
            start,
            escaped,
        })
    }

    fn escape(&mut self) -> Result<(), JsonError> {
        let e = self
            .buf
            .get(self.pos + 1)
            .copied()
            .ok_or(self.err(JsonErrorKind::UnexpectedEnd))?;
        match e {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {
                self.pos += 2;
                Ok(())
            }
            b'u' => {
                let hi = hex4(self.buf, self.pos + 2).ok_or(self.err(JsonErrorKind::BadEscape))?;
                if (0xDC00..0xE000).contains(&hi) {
                    return Err(self.err(JsonErrorKind::LoneSurrogate));
                }
                if (0xD800..0xDC00).contains(&hi) {
                    let next = self.buf.get(self.pos + 6..self.pos + 8);
                    let lo = hex4(self.buf, self.pos + 8);
                    match (next, lo) {
                        (Some(b"\\u"), Some(lo)) if (0xDC00..0xE000).contains(&lo) => {
                            self.pos += 12;
                            Ok(())
                        }
                        _ => Err(self.err(JsonErrorKind::LoneSurrogate)),
                    }
                } else {
                    self.pos += 6;
                    Ok(())
                }
            }
            _ => Err(self.err(JsonErrorKind::BadEscape)),
        }
    }
}

/// Validates a whole document; returns the first error.
pub fn validate(buf: &[u8], max_depth: usize) -> Result<(), JsonError> {
    let mut p = Parser::new(buf, max_depth);
    while p.next()?.is_some() {}
    Ok(())
}

/// Writes `s` as a JSON string literal (with quotes) into `out`.
pub fn write_escaped(out: &mut alloc::vec::Vec<u8>, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    // Runs of bytes that need no escape are copied whole.
    let mut copied = 0usize;
    let mut i = 0usize;
    loop {
        i = skip_plain(s, i);
        let Some(&b) = s.get(i) else {
            break;
        };
        let hex;
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => {
                let digit = |d: u8| HEX.get(usize::from(d)).copied().unwrap_or(b'0');
                hex = [b'\\', b'u', b'0', b'0', digit(b >> 4), digit(b & 0xf)];
                &hex
            }
            // Non-ASCII stops the word test; it is written as it is.
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(s.get(copied..i).unwrap_or_default());
        out.extend_from_slice(escape);
        i += 1;
        copied = i;
    }
    out.extend_from_slice(s.get(copied..).unwrap_or_default());
    out.push(b'"');
}

/// From `at`, steps over whole eight-byte words of `buf` that hold no
/// `"`, `\\`, control character or non-ASCII byte, and then to the first
/// such byte of the word that holds one: where a string scan must look
/// byte by byte. Stops before a last word shorter than eight bytes.
#[inline(always)]
fn skip_plain(buf: &[u8], mut at: usize) -> usize {
    while let Some(Ok(word)) = buf.get(at..at + 8).map(<[u8; 8]>::try_from) {
        if let Some(i) = first_special(word) {
            return at + i;
        }
        at += 8;
    }
    at
}

/// Index of the first byte of `word` that is `"`, `\\`, a control
/// character or non-ASCII.
#[inline(always)]
fn first_special(word: [u8; 8]) -> Option<usize> {
    let w = u64::from_le_bytes(word);
    let special = (below(w ^ (ONES * u64::from(b'"')), 1)
        | below(w ^ (ONES * u64::from(b'\\')), 1)
        | below(w, 0x20)
        | w)
        & (ONES * 0x80);
    first_flagged(special)
}

/// A one in every byte of a word.
const ONES: u64 = 0x0101_0101_0101_0101;

/// Flags (top bit) the bytes of `w` below `n` (`n` <= 0x80). Bytes above
/// a flagged one may be flagged too (a borrow), never bytes below it.
#[inline(always)]
fn below(w: u64, n: u8) -> u64 {
    w.wrapping_sub(ONES * u64::from(n)) & !w & (ONES * 0x80)
}

/// Index of the lowest flagged byte of `flags`: the first real hit.
#[inline(always)]
fn first_flagged(flags: u64) -> Option<usize> {
    (flags != 0).then(|| (flags.trailing_zeros() / 8) as usize)
}

/// Index of the first byte of `word` equal to `needle`.
#[inline(always)]
pub(crate) fn first_eq(word: [u8; 8], needle: u8) -> Option<usize> {
    first_flagged(below(
        u64::from_le_bytes(word) ^ (ONES * u64::from(needle)),
        1,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn events(s: &str) -> Result<Vec<Event<'_>>, JsonError> {
        let mut p = Parser::new(s.as_bytes(), 64);
        let mut v = Vec::new();
        while let Some(e) = p.next()? {
            v.push(e);
        }
        Ok(v)
    }

    #[test]
    fn parses_nested_document() {
        let ev = events(r#" {"a": [1, -2.5e3, true, null], "b": {"c": "x"}} "#).unwrap();
        assert_eq!(ev.len(), 14);
        assert_eq!(ev[2], Event::ArrStart);
        assert_eq!(ev[4], Event::Num("-2.5e3"));
        assert_eq!(ev[13], Event::ObjEnd);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "{",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "01",
            "1.",
            "-",
            "1e",
            "{} x",
            "[1] [2]",
            "\"\\x\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"a\nb\"",
            "tru",
            "nul",
            "{'a':1}",
            "/*c*/1",
            "{\"a\":1 // c\n}",
            "NaN",
            "Infinity",
            "+1",
        ] {
            assert!(events(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn rejects_invalid_utf8_and_depth() {
        assert_eq!(
            validate(b"\"\xff\"", 8).unwrap_err().kind,
            JsonErrorKind::InvalidUtf8
        );
        assert_eq!(
            validate(b"[[[[1]]]]", 3).unwrap_err().kind,
            JsonErrorKind::DepthLimit
        );
        assert!(validate(b"[[[1]]]", 3).is_ok());
    }

    #[test]
    fn decodes_escapes_lazily() {
        let ev =
            events(r#"["\u0031\u0032\u0033-45-6789", "a\"b\\c\/\n", "\ud83d\ude00é"]"#).unwrap();
        let Event::Str(s) = ev[1] else { panic!() };
        assert!(s.escaped);
        assert_eq!(s.bytes().collect::<Vec<_>>(), b"123-45-6789");
        assert!(s.eq_bytes(b"123-45-6789"));
        let Event::Str(s) = ev[2] else { panic!() };
        assert_eq!(s.bytes().collect::<Vec<_>>(), b"a\"b\\c/\n");
        let Event::Str(s) = ev[3] else { panic!() };
        assert_eq!(
            core::str::from_utf8(&s.bytes().collect::<Vec<_>>()).unwrap(),
            "\u{1F600}é"
        );
    }

    #[test]
    fn skip_container_validates() {
        let mut p = Parser::new(br#"{"a":{"b":[1,2,{"c":3}]},"d":4}"#, 16);
        assert_eq!(p.next().unwrap(), Some(Event::ObjStart));
        assert!(matches!(p.next().unwrap(), Some(Event::Key(_))));
        assert_eq!(p.next().unwrap(), Some(Event::ObjStart));
        p.skip_container().unwrap();
        assert!(matches!(p.next().unwrap(), Some(Event::Key(k)) if k.eq_bytes(b"d")));
        let mut p = Parser::new(br#"{"a":{"b":[1,}}"#, 16);
        p.next().unwrap();
        p.next().unwrap();
        p.next().unwrap();
        assert!(p.skip_container().is_err());
    }

    #[test]
    fn long_strings_with_specials_at_every_position() {
        // The 8-byte skip in `string` must never jump over a quote, an
        // escape, a control character or a non-ASCII byte.
        for len in 0..40 {
            for at in 0..len {
                for (special, ok, decoded) in [
                    ("\\\"", true, "\""),
                    ("\\n", true, "\n"),
                    ("é", true, "é"),
                    ("\u{1}", false, ""),
                    ("\u{1f}", false, ""),
                ] {
                    let mut text = "a".repeat(len);
                    text.replace_range(at..=at, special);
                    let doc = alloc::format!("[\"{text}\",1]");
                    let ev = events(&doc);
                    assert_eq!(ev.is_ok(), ok, "{doc:?}");
                    if let Ok(ev) = ev {
                        let Event::Str(j) = ev[1] else { panic!() };
                        let got = j.bytes().collect::<Vec<_>>();
                        let want = text.replace(special, decoded);
                        assert_eq!(got, want.as_bytes(), "{doc:?}");
                    }
                }
            }
        }
        assert!(events("[\"aaaaaaaaaaaaaaaaaaaa").is_err());
    }

    #[test]
    fn escape_round_trip() {
        let round_trip = |text: &[u8]| {
            let mut out = Vec::new();
            write_escaped(&mut out, text);
            let s = core::str::from_utf8(&out).unwrap();
            let ev = events(s).unwrap();
            let Event::Str(j) = ev[0] else { panic!() };
            assert_eq!(j.bytes().collect::<Vec<_>>(), text, "{s}");
            out
        };
        round_trip("a\"b\\\n\u{1}é".as_bytes());
        // Every byte that needs an escape, at every place in and around
        // the eight-byte words the writer skips.
        let specials: Vec<u8> = (0u8..0x20).chain([b'"', b'\\']).collect();
        for &c in &specials {
            for at in 0..20 {
                let mut text = "plain text and more é".as_bytes().to_vec();
                text.insert(at, c);
                let out = round_trip(&text);
                // Nothing is escaped that needs no escape.
                assert_eq!(
                    out.len(),
                    text.len()
                        + 2
                        + if c < 0x20 && !b"\n\r\t".contains(&c) {
                            5
                        } else {
                            1
                        }
                );
            }
        }
    }
}
