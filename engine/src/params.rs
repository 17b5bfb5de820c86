//! Request parameters: where they come from and how they are read.
//!
//! A tool declares (at compile time) which parameter paths any rule looks
//! at; each gets a slot. Extraction walks the body / query / path once and
//! fills the slots with borrowed values; nothing is copied or decoded until
//! a predicate compares it, and then only byte by byte.

use crate::json::{Event, JStr, JsonError, JsonErrorKind, Parser};
use alloc::vec::Vec;
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

    /// Whether the raw bytes differ from the decoded ones.
    fn needs_decoding(&self) -> bool {
        match self.enc {
            Enc::Plain => false,
            Enc::Json => self.raw.contains(&b'\\'),
            Enc::Form => self.raw.iter().any(|&b| b == b'%' || b == b'+'),
            Enc::Percent => self.raw.contains(&b'%'),
        }
    }

    /// The value as `&str` when no decoding is needed.
    pub fn as_plain(&self) -> Option<&'a str> {
        if self.needs_decoding() {
            None
        } else {
            core::str::from_utf8(self.raw).ok()
        }
    }

    pub fn eq_bytes(&self, s: &[u8]) -> bool {
        if self.needs_decoding() {
            self.bytes().eq(s.iter().copied())
        } else {
            self.raw == s
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
    /// JSON number text, as checked by the parser (ASCII).
    Num(&'a [u8]),
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
    /// A JSON object has the same key twice (at this byte offset).
    DuplicateKey(usize),
    /// A form or query key (other than `key[]`) appears twice.
    DuplicateFormKey,
    /// A JSON tool's body is not a JSON object.
    NotObject,
    TooManyParams,
}

impl fmt::Display for ExtractError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExtractError::Json(e) => write!(f, "malformed json body: {e}"),
            ExtractError::BadForm => f.write_str("malformed form-encoded data"),
            ExtractError::Duplicate(_) => f.write_str("a parameter is given more than once"),
            ExtractError::DuplicateKey(at) => {
                write!(f, "json object has a duplicate key at byte {at}")
            }
            ExtractError::DuplicateFormKey => {
                f.write_str("form-encoded key given more than once (use `key[]` for lists)")
            }
            ExtractError::NotObject => f.write_str("json body must be an object"),
            ExtractError::TooManyParams => {
                f.write_str("too many parameters in the request (limit `max_params`)")
            }
        }
    }
}

/// The parameter paths of one tool, prepared at load for the JSON walk.
///
/// The walk keeps, for each open level of the document, the set of
/// parameters whose path matches the way down to it (a bit mask: a tool has
/// at most [`MAX_PARAMS`] = 64 parameters). A key is compared only with the
/// next segment of those parameters, by the key hash the duplicate check
/// computes anyway before any byte compare; in a subtree no parameter
/// reaches, nothing is compared at all.
#[derive(Debug, Clone, Default)]
pub struct ParamPaths {
    /// Per parameter, its segments.
    segs: Vec<Vec<PathSeg>>,
    /// `by_len[n]`: the parameters whose path has exactly `n` segments.
    by_len: Vec<u64>,
    /// `deeper[n]`: the parameters whose path has more than `n` segments.
    deeper: Vec<u64>,
    /// Every parameter.
    all: u64,
}

#[derive(Debug, Clone)]
struct PathSeg {
    text: Vec<u8>,
    /// [`key_hash_bytes`] of `text`.
    hash: u64,
    /// What an array index must be to match (`text` read as a `u32`).
    index: Option<u32>,
}

impl ParamPaths {
    /// No parameters.
    pub const EMPTY: ParamPaths = ParamPaths {
        segs: Vec::new(),
        by_len: Vec::new(),
        deeper: Vec::new(),
        all: 0,
    };

    /// `None` for more than [`MAX_PARAMS`] parameters.
    pub fn new<P: AsRef<[S]>, S: AsRef<str>>(params: &[P]) -> Option<Self> {
        if params.len() > MAX_PARAMS {
            return None;
        }
        let longest = params.iter().map(|p| p.as_ref().len()).max().unwrap_or(0);
        let mut paths = ParamPaths {
            segs: Vec::with_capacity(params.len()),
            by_len: alloc::vec![0; longest + 1],
            deeper: alloc::vec![0; longest + 1],
            all: 0,
        };
        for (i, p) in params.iter().enumerate() {
            let bit = 1u64 << i;
            let segs = p.as_ref();
            paths.all |= bit;
            if let Some(m) = paths.by_len.get_mut(segs.len()) {
                *m |= bit;
            }
            for m in paths.deeper.iter_mut().take(segs.len()) {
                *m |= bit;
            }
            paths.segs.push(
                segs.iter()
                    .map(|s| {
                        let s = s.as_ref();
                        PathSeg {
                            text: s.as_bytes().to_vec(),
                            hash: key_hash_bytes(s.as_bytes()),
                            index: s.parse().ok(),
                        }
                    })
                    .collect(),
            );
        }
        Some(paths)
    }

    /// The parameters among `from` whose segment at `depth` passes `keep`
    /// (none, without looking, when `from` is empty).
    #[inline]
    fn narrow(&self, from: u64, depth: usize, keep: impl Fn(&PathSeg) -> bool) -> u64 {
        if from == 0 {
            return 0;
        }
        let mut left = from & self.deeper.get(depth).copied().unwrap_or(0);
        let mut out = 0;
        while left != 0 {
            let i = left.trailing_zeros() as usize;
            left &= left - 1;
            if self
                .segs
                .get(i)
                .and_then(|s| s.get(depth))
                .is_some_and(&keep)
            {
                out |= 1 << i;
            }
        }
        out
    }
}

/// Puts `value` in the slot of every parameter in `hits`.
#[inline]
fn record<'a>(
    mut hits: u64,
    value: Value<'a>,
    slots: &mut [Value<'a>],
) -> Result<(), ExtractError> {
    while hits != 0 {
        let i = hits.trailing_zeros() as usize;
        hits &= hits - 1;
        let slot = slots.get_mut(i).ok_or(ExtractError::TooManyParams)?;
        if !slot.is_absent() {
            return Err(ExtractError::Duplicate(i));
        }
        *slot = value;
    }
    Ok(())
}

/// Keys seen so far in the open JSON objects, or in a form body and its
/// query string, so a key given twice is refused whether or not a rule
/// looks at it: upstreams disagree on which copy wins. Sized once; adding a
/// key past the capacity is an error, never an allocation.
#[derive(Debug)]
pub struct KeySet {
    entries: Vec<KeyRef>,
}

/// Where a key is: hash of its decoded bytes, its raw span and encoding,
/// and which buffer (`src`) holds it.
#[derive(Debug, Clone, Copy)]
struct KeyRef {
    hash: u64,
    start: u32,
    len: u32,
    escaped: bool,
    src: u8,
}

impl KeySet {
    pub fn with_capacity(n: usize) -> Self {
        KeySet {
            entries: Vec::with_capacity(n),
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    fn mark(&self) -> usize {
        self.entries.len()
    }

    fn truncate(&mut self, mark: usize) {
        self.entries.truncate(mark);
    }

    /// Adds `key` unless an entry from `from` on has the same decoded
    /// bytes; `same` compares the bytes of two entries.
    fn insert(
        &mut self,
        from: usize,
        key: KeyRef,
        same: impl Fn(&KeyRef, &KeyRef) -> bool,
    ) -> Result<bool, ExtractError> {
        let dup = self
            .entries
            .get(from..)
            .unwrap_or_default()
            .iter()
            .any(|e| e.hash == key.hash && same(e, &key));
        if dup {
            return Ok(false);
        }
        if self.entries.len() == self.entries.capacity() {
            return Err(ExtractError::TooManyParams);
        }
        self.entries.push(key);
        Ok(true)
    }
}

/// Hash of a key, the same for keys that differ only in ASCII case (and
/// for a few other pairs; a hash is only ever confirmed by a byte
/// compare). Eight bytes at a time, little endian, the last word padded
/// with zeros; [`key_hash`] gives the same value for the same bytes.
pub(crate) fn key_hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = KEY_HASH_SEED;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let mut a = [0u8; 8];
        a.copy_from_slice(w);
        h = key_hash_mix(h, u64::from_le_bytes(a));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        h = key_hash_mix(h, tail_word(rest));
    }
    key_hash_mix(h, bytes.len() as u64)
}

/// The 1 to 7 bytes of `rest` as a little-endian word padded with zeros,
/// from two overlapping fixed-size reads (most keys are shorter than a
/// word: a copy of variable length would be a call).
#[inline(always)]
fn tail_word(rest: &[u8]) -> u64 {
    let n = rest.len();
    let read = |at: usize, len: usize| -> u64 {
        rest.get(at..at + len).map_or(0, |b| {
            b.iter().rev().fold(0u64, |w, &x| (w << 8) | u64::from(x))
        })
    };
    match n {
        0 => 0,
        1 => read(0, 1),
        2..=3 => read(0, 2) | (read(n - 2, 2) << (8 * (n - 2))),
        _ => read(0, 4) | (read(n - 4, 4) << (8 * (n - 4))),
    }
}

/// [`key_hash_bytes`] over bytes that come one at a time (a decoded key).
fn key_hash(bytes: impl Iterator<Item = u8>) -> u64 {
    let mut h = KEY_HASH_SEED;
    let mut word = 0u64;
    let mut n = 0usize;
    for b in bytes {
        word |= u64::from(b) << (8 * (n % 8));
        n += 1;
        if n.is_multiple_of(8) {
            h = key_hash_mix(h, word);
            word = 0;
        }
    }
    if !n.is_multiple_of(8) {
        h = key_hash_mix(h, word);
    }
    key_hash_mix(h, n as u64)
}

const KEY_HASH_SEED: u64 = 0xcbf2_9ce4_8422_2325;

#[inline(always)]
fn key_hash_mix(h: u64, word: u64) -> u64 {
    // `| 0x20` in every byte folds ASCII case (`A` and `a` alike).
    (h ^ (word | 0x2020_2020_2020_2020))
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .rotate_left(29)
}

fn same_key(a: impl Iterator<Item = u8>, b: impl Iterator<Item = u8>) -> bool {
    a.map(|c| c.to_ascii_lowercase())
        .eq(b.map(|c| c.to_ascii_lowercase()))
}

fn span(start: usize, len: usize) -> Option<(u32, u32)> {
    Some((u32::try_from(start).ok()?, u32::try_from(len).ok()?))
}

/// Walks a whole JSON document (validating it) and fills the slots of the
/// parameters in `params`. Every object key is checked against the
/// object's other keys in `keys`.
pub fn extract_json<'a>(
    body: &'a [u8],
    params: &ParamPaths,
    slots: &mut [Value<'a>],
    max_depth: usize,
    max_values: usize,
    keys: &mut KeySet,
) -> Result<(), ExtractError> {
    extract_json_with(body, params, slots, max_depth, max_values, keys, |_, _| {})
}

/// [`extract_json`], also handing every key, string and number of the
/// document, in order, to `text` (`true` for a quoted key or string; a
/// number comes with its raw bytes). This lets one walk over the body
/// serve the parameters and the DLP scan.
pub fn extract_json_with<'a>(
    body: &'a [u8],
    params: &ParamPaths,
    slots: &mut [Value<'a>],
    max_depth: usize,
    max_values: usize,
    keys: &mut KeySet,
    text: impl FnMut(JStr<'a>, bool),
) -> Result<(), ExtractError> {
    let mut w = Walk::<_, false> {
        p: Parser::new(body, max_depth),
        params,
        slots,
        keys,
        values: 0,
        max_values,
        text,
    };
    w.document()
}

/// Walks a whole JSON document (validating it) only to hand every key,
/// string and number, in order, to `text`: the reading of
/// [`extract_json_with`] with no parameters, no key check and no limit on
/// the number of values.
pub fn walk_json_text<'a>(
    body: &'a [u8],
    max_depth: usize,
    text: impl FnMut(JStr<'a>, bool),
) -> Result<(), JsonError> {
    // Never added to: holds nothing, allocates nothing.
    let mut no_keys = KeySet::with_capacity(0);
    let mut w = Walk::<_, true> {
        p: Parser::new(body, max_depth),
        params: &ParamPaths::EMPTY,
        slots: &mut [],
        keys: &mut no_keys,
        values: 0,
        max_values: usize::MAX,
        text,
    };
    match w.document() {
        Ok(()) => Ok(()),
        Err(ExtractError::Json(e)) => Err(e),
        // Without parameters and keys only the JSON can be wrong; should
        // anything else come up, it is still a refusal.
        Err(_) => Err(w.p.err(JsonErrorKind::UnexpectedEnd)),
    }
}

/// The JSON walk of [`extract_json_with`]: a recursive reader built from
/// the parser's pieces, so that each element is handled where it is read
/// (no events, no stack of levels). It reads the bytes in the order
/// [`Parser::next`] does and reports the same errors at the same offsets.
/// `TEXT_ONLY`: keys are not checked (the walk only reads).
struct Walk<'a, 'w, T, const TEXT_ONLY: bool> {
    p: Parser<'a>,
    params: &'w ParamPaths,
    slots: &'w mut [Value<'a>],
    keys: &'w mut KeySet,
    /// Values read so far, containers included.
    values: usize,
    max_values: usize,
    text: T,
}

impl<'a, T: FnMut(JStr<'a>, bool), const TEXT_ONLY: bool> Walk<'a, '_, T, TEXT_ONLY> {
    fn json<R>(r: Result<R, JsonError>) -> Result<R, ExtractError> {
        r.map_err(ExtractError::Json)
    }

    /// `b`, at the current offset, is not what the grammar allows there.
    fn unexpected(&self, b: u8) -> ExtractError {
        ExtractError::Json(self.p.err(JsonErrorKind::UnexpectedByte(b)))
    }

    /// Opens the container whose bracket is at the current offset, at
    /// depth `d`, and records it as a value.
    fn open(&mut self, d: usize, reach: u64, container: Value<'a>) -> Result<(), ExtractError> {
        if d >= self.p.max_depth() {
            return Err(ExtractError::Json(self.p.err(JsonErrorKind::DepthLimit)));
        }
        self.p.bump();
        self.found(d, reach, container)
    }

    /// After an element of a container closed by `close`: whether another
    /// one follows (its white space skipped) or the container ended.
    fn more(&mut self, close: u8) -> Result<bool, ExtractError> {
        self.p.skip_ws();
        match Self::json(self.p.peek())? {
            b',' => {
                self.p.bump();
                self.p.skip_ws();
                Ok(true)
            }
            b if b == close => {
                self.p.bump();
                Ok(false)
            }
            other => Err(self.unexpected(other)),
        }
    }

    fn document(&mut self) -> Result<(), ExtractError> {
        self.p.skip_ws();
        self.value(0, self.params.all)?;
        Self::json(self.p.end())
    }

    /// The element at the current offset (white space skipped), at depth
    /// `d` (the document itself at 0). `reach`: the parameters whose path
    /// matches the way down to it.
    fn value(&mut self, d: usize, reach: u64) -> Result<(), ExtractError> {
        let b = Self::json(self.p.peek())?;
        let value = match b {
            b'{' => {
                self.open(d, reach, Value::Object)?;
                return self.object(d + 1, reach);
            }
            b'[' => {
                self.open(d, reach, Value::Array)?;
                return self.array(d + 1, reach);
            }
            b'"' => {
                let s = Self::json(self.p.string())?;
                (self.text)(s, true);
                Value::Text(Text {
                    raw: s.raw,
                    enc: if s.escaped { Enc::Json } else { Enc::Plain },
                })
            }
            b't' | b'f' => {
                let t = b == b't';
                Self::json(self.p.word(if t { b"true" } else { b"false" }))?;
                Value::Bool(t)
            }
            b'n' => {
                Self::json(self.p.word(b"null"))?;
                Value::Null
            }
            b'-' | b'0'..=b'9' => {
                let n = Self::json(self.p.number_bytes())?;
                (self.text)(
                    JStr {
                        raw: n,
                        start: self.p.offset().saturating_sub(n.len()),
                        escaped: false,
                    },
                    false,
                );
                Value::Num(n)
            }
            _ => return Err(self.unexpected(b)),
        };
        self.found(d, reach, value)
    }

    /// Counts a value and puts it in the slots of the parameters whose
    /// path ends at it.
    #[inline]
    fn found(&mut self, d: usize, reach: u64, value: Value<'a>) -> Result<(), ExtractError> {
        self.values += 1;
        if self.values > self.max_values {
            return Err(ExtractError::TooManyParams);
        }
        if reach != 0 {
            let hits = reach & self.params.by_len.get(d).copied().unwrap_or(0);
            record(hits, value, self.slots)?;
        }
        Ok(())
    }

    /// The members of an object whose `{` was just read; `d` is the depth
    /// of its members.
    fn object(&mut self, d: usize, reach: u64) -> Result<(), ExtractError> {
        let mark = self.keys.mark();
        self.p.skip_ws();
        if Self::json(self.p.peek())? == b'}' {
            self.p.bump();
            return Ok(());
        }
        loop {
            let b = Self::json(self.p.peek())?;
            if b != b'"' {
                return Err(self.unexpected(b));
            }
            let k = Self::json(self.p.string())?;
            let here = self.key(k, mark, d, reach)?;
            self.p.skip_ws();
            let colon = Self::json(self.p.peek())?;
            if colon != b':' {
                return Err(self.unexpected(colon));
            }
            self.p.bump();
            self.p.skip_ws();
            self.value(d, here)?;
            if !self.more(b'}')? {
                break;
            }
        }
        self.keys.truncate(mark);
        Ok(())
    }

    /// Checks key `k` of an object (its keys start at `mark` in the key
    /// set) against the others; the parameters whose path goes on through
    /// it.
    #[inline]
    fn key(&mut self, k: JStr<'a>, mark: usize, d: usize, reach: u64) -> Result<u64, ExtractError> {
        (self.text)(k, true);
        if TEXT_ONLY {
            return Ok(0);
        }
        let (start, len) = span(k.start, k.raw.len()).ok_or(ExtractError::TooManyParams)?;
        // The parser validated the bytes: no need to see them as str.
        let hash = if k.escaped {
            key_hash(k.bytes())
        } else {
            key_hash_bytes(k.raw)
        };
        let entry = KeyRef {
            hash,
            start,
            len,
            escaped: k.escaped,
            src: 0,
        };
        let body = self.p.input();
        let key_of = |e: &KeyRef| {
            let start = e.start as usize;
            JStr {
                raw: body.get(start..start + e.len as usize).unwrap_or_default(),
                start,
                escaped: e.escaped,
            }
        };
        if !self.keys.insert(mark, entry, |a, b| {
            same_key(key_of(a).bytes(), key_of(b).bytes())
        })? {
            return Err(ExtractError::DuplicateKey(k.start));
        }
        Ok(self
            .params
            .narrow(reach, d - 1, |s| s.hash == hash && k.eq_bytes(&s.text)))
    }

    /// The elements of an array whose `[` was just read; `d` is the depth
    /// of its elements.
    fn array(&mut self, d: usize, reach: u64) -> Result<(), ExtractError> {
        self.p.skip_ws();
        if Self::json(self.p.peek())? == b']' {
            self.p.bump();
            return Ok(());
        }
        let mut index = 0u32;
        loop {
            let here = self.params.narrow(reach, d - 1, |s| s.index == Some(index));
            index = index.saturating_add(1);
            self.value(d, here)?;
            if !self.more(b']')? {
                return Ok(());
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

/// Reads an `application/x-www-form-urlencoded` body or query string. A
/// key given twice (in this data or in earlier data recorded in `keys`, as
/// a query string is before its form body) is refused, except list keys
/// written `key[]`.
pub fn extract_form<'a, P: AsRef<[S]>, S: AsRef<str>>(
    data: &'a [u8],
    params: &[P],
    slots: &mut [Value<'a>],
    max_values: usize,
    keys: &mut KeySet,
) -> Result<(), ExtractError> {
    // Which buffer the keys come from: entries from another buffer are
    // compared by hash and length alone (a crafted collision can only
    // cause a deny, never let a duplicate through).
    let src = keys.entries.last().map_or(0, |e| e.src.wrapping_add(1));
    let decoded = |e: &KeyRef| {
        let start = e.start as usize;
        Text {
            raw: data.get(start..start + e.len as usize).unwrap_or_default(),
            enc: Enc::Form,
        }
        .bytes()
    };
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
        if !key.ends_with(b"[]") {
            let start = (k.as_ptr() as usize).wrapping_sub(data.as_ptr() as usize);
            let (start, len) = span(start, k.len()).ok_or(ExtractError::TooManyParams)?;
            let entry = KeyRef {
                hash: key_hash(key.iter().copied()) ^ n as u64,
                start,
                len,
                escaped: false,
                src,
            };
            let fresh = keys.insert(0, entry, |a, b| {
                if a.src != b.src {
                    return true;
                }
                same_key(decoded(a), decoded(b))
            })?;
            if !fresh {
                return Err(ExtractError::DuplicateFormKey);
            }
        }
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
                let v: f64 = core::str::from_utf8(n).ok()?.parse().ok()?;
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

    fn pp(ps: &[Vec<&str>]) -> ParamPaths {
        ParamPaths::new(ps).unwrap()
    }

    fn text(v: &Value<'_>) -> Vec<u8> {
        match v {
            Value::Text(t) => t.bytes().collect(),
            Value::Num(n) => n.to_vec(),
            other => panic!("not text: {other:?}"),
        }
    }

    #[test]
    fn key_hash_is_one_function_of_the_bytes_whatever_the_case() {
        let keys: [&[u8]; 6] = [
            b"",
            b"a",
            b"Amount",
            b"exactly8",
            b"customer_reference_id",
            b"0123456789abcdefXYZ",
        ];
        for k in keys {
            assert_eq!(key_hash_bytes(k), key_hash(k.iter().copied()), "{k:?}");
            let upper: Vec<u8> = k.to_ascii_uppercase();
            assert_eq!(key_hash_bytes(k), key_hash_bytes(&upper), "{k:?}");
        }
        // Every length of the last word, with bytes that all differ.
        let distinct: Vec<u8> = (0..24u8)
            .map(|i| i.wrapping_mul(37).wrapping_add(1))
            .collect();
        for n in 0..=distinct.len() {
            let k = &distinct[..n];
            assert_eq!(key_hash_bytes(k), key_hash(k.iter().copied()), "{n}");
        }
        // The length is part of the hash: a key and the same key padded
        // with NUL bytes (what the last word is padded with) differ.
        assert_ne!(key_hash_bytes(b"ab"), key_hash_bytes(b"ab\0"));
        assert_ne!(key_hash_bytes(b"amount"), key_hash_bytes(b"amounts"));
    }

    #[test]
    fn json_paths_and_indices() {
        let ps = paths(&["amount", "card.last4", "items.1.sku", "meta", "esc"]);
        let mut slots = [Value::Absent; 5];
        let body = br#"{"amount": 12.5, "card": {"last4": "4242"}, "items": [{"sku":"a"},{"sku":"b"}], "meta": {}, "\u0065sc": "x\u0079"}"#;
        extract_json(body, &pp(&ps), &mut slots, 32, 1000, &mut ks()).unwrap();
        assert_eq!(slots[0], Value::Num(b"12.5"));
        assert_eq!(text(&slots[1]), b"4242");
        assert_eq!(text(&slots[2]), b"b");
        assert_eq!(slots[3], Value::Object);
        assert_eq!(text(&slots[4]), b"xy");
    }

    fn ks() -> KeySet {
        KeySet::with_capacity(64)
    }

    /// Broken documents, each refused by the walk with the parser's error
    /// (kind and offset).
    #[test]
    fn walk_errors_are_the_parsers() {
        let docs: [&[u8]; 28] = [
            b"",
            b"   ",
            b"{\"a\":1,}",
            b"[1,]",
            b"{,}",
            b"[,1]",
            b"{\"a\" 1}",
            b"{\"a\":}",
            b"{\"a\":1 \"b\":2}",
            b"[1 2]",
            b"{\"a\":[}",
            b"{\"a\":tru}",
            b"{\"a\":nul",
            b"{\"a\":-}",
            b"{\"a\":01}",
            b"{\"a\":1.}",
            b"\"x\" y",
            b"{\"a\":1}}",
            b"{\"a\":\"\\u12\"}",
            b"{\"a\":\"\\ud800\"}",
            b"{\"a\":\"\x01\"}",
            b"{\"a\":\"\xc3\"}",
            b"{1:2}",
            b"{\"a\"",
            b"[[[[1]]]]",
            b"{\"a\":{\"b\":{\"c\":{}}}}",
            b"[\"a\",{\"b\":[true,false,null,-0.5e+3]}]",
            b"{\"a\":1,\"b\":[1,2,{}],\"c\":\"\\n\"}  ",
        ];
        // As deep as the parser goes, and one level deeper: the walk
        // recurses once per level.
        let deep = |n: usize| {
            let mut d = alloc::vec![b'['; n];
            d.extend_from_slice(b"{\"a\":1}");
            d.extend(alloc::vec![b']'; n]);
            d
        };
        use crate::json::MAX_DEPTH_LIMIT;
        let (at_limit, past) = (deep(MAX_DEPTH_LIMIT - 1), deep(MAX_DEPTH_LIMIT));
        let mut slots = [Value::Absent; 4];
        assert_eq!(
            extract_json(
                &at_limit,
                &ParamPaths::EMPTY,
                &mut slots,
                MAX_DEPTH_LIMIT,
                1000,
                &mut ks()
            ),
            Ok(())
        );
        let past_limit = JsonError {
            kind: JsonErrorKind::DepthLimit,
            offset: MAX_DEPTH_LIMIT,
        };
        assert_eq!(
            walk_json_text(&past, MAX_DEPTH_LIMIT, |_, _| {}),
            Err(past_limit)
        );
        for doc in docs.iter().copied().chain([&at_limit[..], &past[..]]) {
            for depth in [3, 32, MAX_DEPTH_LIMIT] {
                let mut slots = [Value::Absent; 4];
                let got = extract_json(doc, &ParamPaths::EMPTY, &mut slots, depth, 1000, &mut ks());
                let want = crate::json::validate(doc, depth);
                let shown = alloc::string::String::from_utf8_lossy(doc);
                assert_eq!(
                    got,
                    want.map_err(ExtractError::Json),
                    "{shown} at depth {depth}"
                );
                assert_eq!(
                    walk_json_text(doc, depth, |_, _| {}),
                    want,
                    "{shown} at depth {depth}"
                );
            }
        }
    }

    #[test]
    fn json_duplicates_are_errors() {
        let ps = paths(&["amount"]);
        let json = |body: &[u8]| {
            let mut slots = [Value::Absent; 1];
            extract_json(body, &pp(&ps), &mut slots, 32, 100, &mut ks())
        };
        assert_eq!(
            json(br#"{"amount":1,"amount":9999}"#),
            Err(ExtractError::DuplicateKey(13))
        );
        assert_eq!(
            json(br#"{"amount":1,"\u0061mount":9999}"#),
            Err(ExtractError::DuplicateKey(13))
        );
        // Keys differing only in ASCII case are one key to some upstreams.
        assert_eq!(
            json(br#"{"amount":1,"Amount":9999}"#),
            Err(ExtractError::DuplicateKey(13))
        );
        // Keys no rule looks at, at any depth, are checked too.
        assert_eq!(
            json(br#"{"a":{"b":[{"c":1,"d":2,"c":3}]}}"#),
            Err(ExtractError::DuplicateKey(25))
        );
        // The same key in sibling objects or at another depth is fine.
        assert_eq!(
            json(br#"{"x":{"n":1},"y":{"n":2},"n":{"n":3},"l":[{"n":1},{"n":2}]}"#),
            Ok(())
        );
        // A watched parameter reached twice through different spellings of
        // its path is still one slot given twice.
        let ps = paths(&["card.last4"]);
        let mut slots = [Value::Absent; 1];
        assert_eq!(
            extract_json(
                br#"{"card":{"last4":"1"},"card":{"last4":"2"}}"#,
                &pp(&ps),
                &mut slots,
                32,
                100,
                &mut ks()
            ),
            Err(ExtractError::DuplicateKey(23))
        );
    }

    #[test]
    fn key_set_capacity_is_an_error_not_an_allocation() {
        let ps = paths(&["amount"]);
        let mut slots = [Value::Absent; 1];
        let mut keys = KeySet::with_capacity(2);
        assert_eq!(
            extract_json(
                br#"{"a":1,"b":2,"c":3}"#,
                &pp(&ps),
                &mut slots,
                32,
                100,
                &mut keys
            ),
            Err(ExtractError::TooManyParams)
        );
    }

    #[test]
    fn form_duplicates() {
        let ps = paths(&["amount"]);
        let form = |data: &[u8], keys: &mut KeySet| {
            let mut slots = [Value::Absent; 1];
            extract_form(data, &ps, &mut slots, 100, keys)
        };
        assert_eq!(
            form(b"a=1&b=2&a=3", &mut ks()),
            Err(ExtractError::DuplicateFormKey)
        );
        assert_eq!(
            form(b"am%6Funt=1&amount=2", &mut ks()),
            Err(ExtractError::DuplicateFormKey)
        );
        assert_eq!(
            form(b"a+b=1&a%20b=2", &mut ks()),
            Err(ExtractError::DuplicateFormKey)
        );
        assert_eq!(
            form(b"Amount=1&amount=2", &mut ks()),
            Err(ExtractError::DuplicateFormKey)
        );
        assert_eq!(form(b"expand[]=a&expand[]=b&amount=1", &mut ks()), Ok(()));
        assert_eq!(form(b"m[a]=1&m[b]=2", &mut ks()), Ok(()));
        // A query string then its form body: one namespace.
        let mut keys = ks();
        assert_eq!(form(b"x=1", &mut keys), Ok(()));
        assert_eq!(
            form(b"y=1&x=2", &mut keys),
            Err(ExtractError::DuplicateFormKey)
        );
        let mut keys = ks();
        assert_eq!(form(b"x=1", &mut keys), Ok(()));
        assert_eq!(form(b"y=1&z=2", &mut keys), Ok(()));
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
            &mut ks(),
        )
        .unwrap();
        assert_eq!(slots[0].number(), Some(1200.0));
        assert_eq!(text(&slots[1]), b"A+1");
        assert_eq!(text(&slots[2]), b"two words");
        assert_eq!(text(&slots[3]), b"4242");
        let mut slots = [Value::Absent; 4];
        assert_eq!(
            extract_form(b"amount=1&amount=9999", &ps, &mut slots, 100, &mut ks()),
            Err(ExtractError::DuplicateFormKey)
        );
        let mut slots = [Value::Absent; 4];
        assert_eq!(
            extract_form(
                b"card[last4]=1&card.last4=2",
                &ps,
                &mut slots,
                100,
                &mut ks()
            ),
            Err(ExtractError::Duplicate(3))
        );
        let mut slots = [Value::Absent; 4];
        assert_eq!(
            extract_form(b"amount=%zz", &ps, &mut slots, 100, &mut ks()),
            Err(ExtractError::BadForm)
        );
        let mut slots = [Value::Absent; 4];
        assert_eq!(
            extract_form(b"amount=%ff", &ps, &mut slots, 100, &mut ks()),
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
        assert_eq!(Value::Num(b"1e999").number(), None);
        let _ = vec![0u8];
    }

    /// The walk by masks against the plain definition: a value fills the
    /// slot of every parameter whose segments equal its path, a key by its
    /// decoded bytes, an array index by the segment read as a `u32`.
    mod paths_law {
        use super::*;
        use crate::json::{Event, Parser};
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        enum Doc {
            Leaf(&'static str),
            Arr(Vec<Doc>),
            Obj(Vec<(&'static str, Doc)>),
        }

        // Keys as written: escapes, case and digits that read as indices.
        const KEYS: [&str; 8] = ["a", "b", "A", "0", "1", "\\u0061", "+1", "ab"];
        const SEGS: [&str; 7] = ["a", "b", "A", "0", "1", "+1", "ab"];

        fn doc() -> impl Strategy<Value = Doc> {
            let leaf = prop::sample::select(vec!["1", "\"x\"", "true", "null", "\"\\u0079\""])
                .prop_map(Doc::Leaf);
            leaf.prop_recursive(4, 40, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Doc::Arr),
                    prop::collection::vec((prop::sample::select(KEYS.to_vec()), inner), 0..4)
                        .prop_map(Doc::Obj),
                ]
            })
        }

        fn write(d: &Doc, out: &mut alloc::string::String) {
            match d {
                Doc::Leaf(t) => out.push_str(t),
                Doc::Arr(xs) => {
                    out.push('[');
                    for (i, x) in xs.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        write(x, out);
                    }
                    out.push(']');
                }
                Doc::Obj(kvs) => {
                    out.push('{');
                    for (i, (k, v)) in kvs.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push('"');
                        out.push_str(k);
                        out.push_str("\":");
                        write(v, out);
                    }
                    out.push('}');
                }
            }
        }

        #[derive(Clone)]
        enum Step<'a> {
            Key(JStr<'a>),
            Index(u32),
        }

        /// Every value with its path, compared with every parameter.
        fn reference<'a>(
            body: &'a [u8],
            params: &[Vec<&str>],
            slots: &mut [Value<'a>],
        ) -> Result<(), ExtractError> {
            let mut path: Vec<Step<'a>> = Vec::new();
            let mut arrays: Vec<Option<u32>> = Vec::new();
            let mut p = Parser::new(body, 32);
            while let Some(ev) = p.next().map_err(ExtractError::Json)? {
                let value = match ev {
                    Event::Key(k) => {
                        path.push(Step::Key(k));
                        continue;
                    }
                    Event::ObjEnd | Event::ArrEnd => {
                        // The container's own step (its key or index).
                        arrays.pop();
                        if !arrays.is_empty() {
                            path.pop();
                        }
                        continue;
                    }
                    Event::ObjStart => Value::Object,
                    Event::ArrStart => Value::Array,
                    Event::Str(s) => Value::Text(Text {
                        raw: s.raw,
                        enc: if s.escaped { Enc::Json } else { Enc::Plain },
                    }),
                    Event::Num(n) => Value::Num(n.as_bytes()),
                    Event::Bool(b) => Value::Bool(b),
                    Event::Null => Value::Null,
                };
                if let Some(Some(n)) = arrays.last_mut() {
                    path.push(Step::Index(*n));
                    *n += 1;
                }
                for (i, want) in params.iter().enumerate() {
                    let hit = want.len() == path.len()
                        && want.iter().zip(&path).all(|(w, s)| match s {
                            Step::Key(k) => k.eq_bytes(w.as_bytes()),
                            Step::Index(n) => w.parse::<u32>().ok() == Some(*n),
                        });
                    if hit {
                        if !slots[i].is_absent() {
                            return Err(ExtractError::Duplicate(i));
                        }
                        slots[i] = value;
                    }
                }
                match ev {
                    Event::ObjStart => arrays.push(None),
                    Event::ArrStart => arrays.push(Some(0)),
                    _ => {
                        if arrays.last().is_some() {
                            path.pop();
                        }
                    }
                }
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: 2000,
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            #[test]
            fn masks_fill_the_slots_the_definition_fills(
                d in doc(),
                params in prop::collection::vec(
                    prop::collection::vec(prop::sample::select(SEGS.to_vec()), 1..5),
                    1..8,
                ),
            ) {
                let mut body = alloc::string::String::new();
                write(&d, &mut body);
                let mut want = [Value::Absent; 8];
                let expected = reference(body.as_bytes(), &params, &mut want);
                let mut got = [Value::Absent; 8];
                // Duplicate keys are refused before any slot is compared;
                // only documents without them are compared here.
                match extract_json(body.as_bytes(), &pp(&params), &mut got, 32, 1000, &mut ks()) {
                    Err(ExtractError::DuplicateKey(_)) => {}
                    result => {
                        prop_assert_eq!(result, expected, "{}", body);
                        prop_assert_eq!(got, want, "{}", body);
                    }
                }
            }

            /// The walk reads documents on its own (not through
            /// `Parser::next`): on documents broken by a few edits it, and
            /// the reading-only walk of the DLP scan, refuse exactly what
            /// the parser refuses, with the same error at the same offset,
            /// and hand the same keys, strings and numbers to `text` in the
            /// same order.
            #[test]
            fn the_walk_refuses_what_the_parser_refuses(
                d in doc(),
                edits in prop::collection::vec(
                    (
                        any::<prop::sample::Index>(),
                        prop::sample::select(b" \t{}[]\":,0-1.eE+tfnul\\x\x01\xc3".to_vec()),
                        0u8..3,
                    ),
                    0..4,
                ),
                depth in 1usize..6,
            ) {
                let mut text = alloc::string::String::new();
                write(&d, &mut text);
                let mut body = text.into_bytes();
                for (at, byte, op) in edits {
                    let i = at.index(body.len() + 1);
                    match op {
                        0 => body.insert(i, byte),
                        1 if i < body.len() => body[i] = byte,
                        _ if i < body.len() => {
                            body.remove(i);
                        }
                        _ => {}
                    }
                }
                let mut seen = Vec::new();
                let mut slots = [Value::Absent; 8];
                let got = extract_json_with(
                    &body,
                    &ParamPaths::EMPTY,
                    &mut slots,
                    depth,
                    100_000,
                    &mut KeySet::with_capacity(100_000),
                    |s, quoted| seen.push((s.raw, s.start, quoted)),
                );
                let want = crate::json::validate(&body, depth);
                let shown = alloc::string::String::from_utf8_lossy(&body);
                // The reading alone (DLP's walk): no key check, no limits.
                let mut read = Vec::new();
                let walked = walk_json_text(&body, depth, |s, quoted| {
                    read.push((s.raw, s.start, quoted));
                });
                prop_assert_eq!(walked, want, "{}", shown);
                match got {
                    Err(ExtractError::Json(e)) => prop_assert_eq!(Err(e), want, "{}", shown),
                    Err(ExtractError::DuplicateKey(at)) => prop_assert!(
                        want.is_ok_and(|()| true) || want.is_err_and(|e| e.offset > at),
                        "{} {:?}",
                        shown,
                        want
                    ),
                    Err(other) => prop_assert!(false, "{:?} on {}", other, shown),
                    Ok(()) => {
                        prop_assert_eq!(Ok(()), want, "{}", shown);
                        let mut events = Vec::new();
                        let mut p = Parser::new(&body, depth);
                        while let Some(ev) = p.next().unwrap() {
                            match ev {
                                Event::Key(s) | Event::Str(s) => {
                                    events.push((s.raw, s.start, true));
                                }
                                Event::Num(n) => events.push((
                                    n.as_bytes(),
                                    p.offset() - n.len(),
                                    false,
                                )),
                                _ => {}
                            }
                        }
                        prop_assert_eq!(&seen, &events, "{}", shown);
                        prop_assert_eq!(&read, &events, "{}", shown);
                    }
                }
            }
        }
    }
}
