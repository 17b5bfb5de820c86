//! What a person deciding an approval is shown of the call: its
//! parameters as the engine reads them, with DLP applied, bounded.
//!
//! The parameters are those the approval digest covers (read by
//! [`Bundle::read_call`], the same reading): JSON body fields, form pairs,
//! the query string's pairs, and for MCP the `params.arguments` of the
//! `tools/call`. They are shown flat, one entry per value, named by the
//! dotted path a policy would name them by (`card.last4`, `items.0.sku`).
//!
//! Every key and value goes through the agent's own DLP set and then the
//! bundle's approval set (every built-in detector, redacting): a chat
//! channel is no place for a card number, whatever the agent's DLP does
//! with it upstream. Strings are cut at [`MAX_VALUE_BYTES`], names at
//! [`MAX_NAME_BYTES`], the whole at about [`MAX_PARAMS_BYTES`] of JSON;
//! [`ApprovalSummary::truncated`] says when anything was left out.
//!
//! Runs only when an approval is created, never per request: it
//! allocates. It never panics, whatever the body.

use crate::bundle::Bundle;
use crate::digest::{BodyShape, Call, DigestError, RequestDigestError, MAX_DEPTH};
use crate::dlp::{Outcome, Scanner, Scratch};
use crate::eval::Routed;
use crate::http::{Headers, Request};
use crate::json::{Event, Parser};
use crate::types::BodyKind;
use alloc::string::String;
use alloc::vec::Vec;

/// About how many bytes of JSON the parameters take at most.
pub const MAX_PARAMS_BYTES: usize = 4096;
/// Longest string value shown, in bytes (after masking).
pub const MAX_VALUE_BYTES: usize = 256;
/// Longest parameter name shown, in bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// Longest path shown, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;
/// Where a string was cut.
const CUT: &str = "…";

/// The call as a person deciding its approval sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalSummary {
    /// A JSON object: parameter name -> value (a value given twice under
    /// one name, an array of them).
    pub params: String,
    /// Parameters were left out, or values or the path cut, to keep the
    /// summary small.
    pub truncated: bool,
    /// The request path and query, percent-decoded, with DLP applied.
    pub path: String,
}

impl Bundle {
    /// The [summary](self) of a routed request whose action the body
    /// stages found, read as [`Bundle::approval_digest`] reads it.
    pub fn approval_summary<H: Headers + ?Sized>(
        &self,
        route: &Routed,
        action: &str,
        req: &Request<'_, H>,
    ) -> Result<ApprovalSummary, RequestDigestError> {
        let agent = self
            .agent(route.caller())
            .ok_or(RequestDigestError::Route)?;
        let own = agent.dlp.and_then(|d| self.scanners.get(d as usize));
        let approval = match (agent.dlp, self.model.approval_dlp) {
            (Some(own), Some(all)) if own == all => None,
            (_, all) => all.and_then(|d| self.scanners.get(d as usize)),
        };
        let mut masker = Masker {
            scanners: [own, approval],
            scratch: Scratch::new(),
        };
        self.read_call(route, action, req, |call| {
            let mut p = Params::default();
            read(call, &mut masker, &mut p)?;
            let path = p.cut(
                masker.text(&decode(req.path.as_bytes(), false)),
                MAX_PATH_BYTES,
            );
            Ok(ApprovalSummary {
                params: p.json(),
                truncated: p.truncated,
                path,
            })
        })?
        .map_err(RequestDigestError::Digest)
    }
}

fn read(call: &Call<'_>, m: &mut Masker<'_>, p: &mut Params) -> Result<(), DigestError> {
    pairs(call.query.as_bytes(), m, p);
    match call.body {
        BodyShape::None => Ok(()),
        BodyShape::Form(b) => {
            pairs(b, m, p);
            Ok(())
        }
        BodyShape::Json(b) => json(b, &[], m, p),
        BodyShape::Mcp(b) => json(b, &[b"params", b"arguments"], m, p),
    }
}

/// A JSON document flattened; with `under`, only the values below that
/// path, named from there on.
fn json(
    body: &[u8],
    under: &[&[u8]],
    m: &mut Masker<'_>,
    p: &mut Params,
) -> Result<(), DigestError> {
    let mut parser = Parser::new(body, MAX_DEPTH);
    // The path to the current value: decoded keys (or indices) and, for
    // each container, whether it held anything yet.
    let mut path: Vec<Vec<u8>> = Vec::new();
    let mut frames: Vec<Frame> = Vec::new();
    let mut key: Option<Vec<u8>> = None;
    loop {
        let Some(ev) = parser.next()? else {
            return Ok(());
        };
        if p.full() {
            // Enough to show; the digest has read (and checked) it all.
            p.truncated = true;
            return Ok(());
        }
        match ev {
            Event::Key(k) => {
                key = Some(k.bytes().collect());
                continue;
            }
            Event::ObjEnd | Event::ArrEnd => {
                if let Some(f) = frames.pop() {
                    if f.empty {
                        let v = if f.array { "[]" } else { "{}" };
                        emit(&path, under, Value::Raw(v.into()), m, p);
                    }
                }
                path.pop();
                continue;
            }
            _ => {}
        }
        // A value: name it within its container.
        if let Some(f) = frames.last_mut() {
            f.empty = false;
            if f.array {
                path.push(alloc::format!("{}", f.next).into_bytes());
                f.next = f.next.saturating_add(1);
            } else {
                path.push(key.take().unwrap_or_default());
            }
        }
        match ev {
            Event::ObjStart | Event::ArrStart => {
                frames.push(Frame {
                    array: matches!(ev, Event::ArrStart),
                    empty: true,
                    next: 0,
                });
                // The root has no name to pop at its end.
                if frames.len() == 1 {
                    path.push(Vec::new());
                }
                continue;
            }
            Event::Str(s) => {
                let v: Vec<u8> = s.bytes().collect();
                emit(&path, under, Value::Text(v), m, p);
            }
            Event::Num(n) => emit(&path, under, Value::Num(n.as_bytes()), m, p),
            Event::Bool(b) => emit(
                &path,
                under,
                Value::Raw(if b { "true" } else { "false" }.into()),
                m,
                p,
            ),
            Event::Null => emit(&path, under, Value::Raw("null".into()), m, p),
            // Handled above.
            Event::Key(_) | Event::ObjEnd | Event::ArrEnd => {}
        }
        if !frames.is_empty() {
            path.pop();
        }
    }
}

struct Frame {
    array: bool,
    empty: bool,
    next: usize,
}

enum Value<'a> {
    /// Decoded string bytes, to mask and cut.
    Text(Vec<u8>),
    /// A JSON number's text, masked as text (a card number sent as a
    /// number is still one).
    Num(&'a [u8]),
    /// `true`, `false`, `null`, `[]`, `{}`.
    Raw(String),
}

/// Adds the value at `path` (the root's marker first when the document is
/// a container) when it lies under `under`.
fn emit(path: &[Vec<u8>], under: &[&[u8]], v: Value<'_>, m: &mut Masker<'_>, p: &mut Params) {
    // The root container's marker is an empty first segment.
    let segs = match path.split_first() {
        Some((root, rest)) if root.is_empty() => rest,
        _ => path,
    };
    let Some(rest) = segs.strip_prefix_by(under) else {
        return;
    };
    if rest.is_empty() && !under.is_empty() && matches!(&v, Value::Raw(r) if r == "{}") {
        // No arguments.
        return;
    }
    let mut name = String::new();
    for (i, s) in rest.iter().enumerate() {
        if i > 0 {
            name.push('.');
        }
        name.push_str(&m.text(s));
    }
    let name = p.cut(name, MAX_NAME_BYTES);
    let shown = match v {
        Value::Text(b) => Shown::Str(p.cut(m.text(&b), MAX_VALUE_BYTES)),
        Value::Num(n) => {
            let t = m.text(n);
            if t.as_bytes() == n && n.len() <= MAX_VALUE_BYTES {
                Shown::Raw(t)
            } else {
                Shown::Str(p.cut(t, MAX_VALUE_BYTES))
            }
        }
        Value::Raw(r) => Shown::Raw(r),
    };
    p.push(name, shown);
}

trait StripPrefixBy {
    fn strip_prefix_by(&self, prefix: &[&[u8]]) -> Option<&Self>;
}

impl StripPrefixBy for [Vec<u8>] {
    fn strip_prefix_by(&self, prefix: &[&[u8]]) -> Option<&Self> {
        let head = self.get(..prefix.len())?;
        head.iter()
            .zip(prefix)
            .all(|(a, b)| a.as_slice() == *b)
            .then(|| self.get(prefix.len()..))
            .flatten()
    }
}

/// Form-encoded pairs (a query string or a form body), decoded as the
/// engine decodes them; a piece that does not decode is shown as sent.
fn pairs(data: &[u8], m: &mut Masker<'_>, p: &mut Params) {
    for piece in data.split(|&b| b == b'&').filter(|x| !x.is_empty()) {
        if p.full() {
            p.truncated = true;
            return;
        }
        let (k, v) = match piece.iter().position(|&b| b == b'=') {
            Some(i) => (
                piece.get(..i).unwrap_or_default(),
                piece.get(i + 1..).unwrap_or_default(),
            ),
            None => (piece, &b""[..]),
        };
        let name = p.cut(m.text(&decode(k, true)), MAX_NAME_BYTES);
        let value = p.cut(m.text(&decode(v, true)), MAX_VALUE_BYTES);
        p.push(name, Shown::Str(value));
    }
}

/// `%XX` (and with `plus`, `+` for a space) decoded, leniently: a `%`
/// without two hex digits stays as it is, and the bytes need not be UTF-8
/// (the engine refuses either before a call needs approval; shown, they
/// must still be decoded for DLP to see them).
fn decode(raw: &[u8], plus: bool) -> Vec<u8> {
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        i += 1;
        match b {
            b'+' if plus => out.push(b' '),
            b'%' => {
                let hi = raw.get(i).copied().and_then(hex);
                let lo = raw.get(i + 1).copied().and_then(hex);
                match (hi, lo) {
                    (Some(h), Some(l)) => {
                        // Two hex digits: below 256.
                        out.push(u8::try_from(h * 16 + l).unwrap_or(b'%'));
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
    }
    out
}

/// Masks text with the agent's DLP set, then the approval set.
struct Masker<'b> {
    scanners: [Option<&'b Scanner>; 2],
    scratch: Scratch,
}

impl Masker<'_> {
    /// `bytes` with every detection masked, as (lossy) UTF-8.
    fn text(&mut self, bytes: &[u8]) -> String {
        let mut cur: Vec<u8> = bytes.to_vec();
        for s in self.scanners.into_iter().flatten() {
            match s.scan(BodyKind::None, &cur, MAX_DEPTH, &mut self.scratch) {
                Ok(Outcome::Clean) => {}
                Ok(Outcome::Found { rewritten: true }) => {
                    cur = core::mem::take(&mut self.scratch.out);
                }
                // The `deny` action rewrites nothing: hide all of it, named
                // by the first detector that found something.
                Ok(Outcome::Found { rewritten: false }) => {
                    let name = s
                        .pattern_names()
                        .zip(self.scratch.counts)
                        .find(|(_, n)| *n > 0)
                        .map_or("dlp", |(name, _)| name);
                    cur = alloc::format!("[REDACTED:{name}]").into_bytes();
                }
                Err(_) => cur = b"[REDACTED]".to_vec(),
            }
        }
        String::from_utf8_lossy(&cur).into_owned()
    }
}

enum Shown {
    /// Written as a JSON string.
    Str(String),
    /// Written as it is (valid JSON).
    Raw(String),
}

#[derive(Default)]
struct Params {
    /// In the order first seen; a name given again gathers its values.
    entries: Vec<(String, Vec<Shown>)>,
    /// About the JSON size of `entries`.
    bytes: usize,
    truncated: bool,
}

impl Params {
    fn full(&self) -> bool {
        self.bytes >= MAX_PARAMS_BYTES
    }

    /// `s` cut to at most `max` bytes (at a character boundary).
    fn cut(&mut self, mut s: String, max: usize) -> String {
        if s.len() > max {
            let mut at = max;
            while !s.is_char_boundary(at) {
                at = at.saturating_sub(1);
            }
            s.truncate(at);
            s.push_str(CUT);
            self.truncated = true;
        }
        s
    }

    fn push(&mut self, name: String, v: Shown) {
        let value = match &v {
            Shown::Str(s) => escaped_len(s),
            Shown::Raw(r) => r.len(),
        };
        let cost = match self.entries.iter().find(|(n, _)| *n == name) {
            // A comma, and the brackets when it turns into an array.
            Some(_) => value + 3,
            // A comma, the name and a colon.
            None => escaped_len(&name) + value + 2,
        };
        // The braces of the object.
        if self.bytes.saturating_add(cost).saturating_add(2) > MAX_PARAMS_BYTES {
            self.bytes = MAX_PARAMS_BYTES;
            self.truncated = true;
            return;
        }
        self.bytes += cost;
        match self.entries.iter_mut().find(|(n, _)| *n == name) {
            Some((_, vs)) => vs.push(v),
            None => self.entries.push((name, alloc::vec![v])),
        }
    }

    fn json(&self) -> String {
        let mut out = String::from("{");
        for (i, (name, vs)) in self.entries.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_str(&mut out, name);
            out.push(':');
            match vs.as_slice() {
                [one] => write_value(&mut out, one),
                many => {
                    out.push('[');
                    for (j, v) in many.iter().enumerate() {
                        if j > 0 {
                            out.push(',');
                        }
                        write_value(&mut out, v);
                    }
                    out.push(']');
                }
            }
        }
        out.push('}');
        out
    }
}

fn write_value(out: &mut String, v: &Shown) {
    match v {
        Shown::Str(s) => write_str(out, s),
        Shown::Raw(r) => out.push_str(r),
    }
}

/// The length of `s` as [`write_str`] writes it.
fn escaped_len(s: &str) -> usize {
    2 + s
        .chars()
        .map(|c| match c {
            '"' | '\\' => 2,
            c if u32::from(c) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => 6,
            c => c.len_utf8(),
        })
        .sum::<usize>()
}

fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                out.push_str(&alloc::format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
