//! The approval digest: which call an approval is for.
//!
//! When a call needs human approval the gateway creates an approval at the
//! control plane with the digest of the call; when the agent retries with
//! `x-aegis-approval: <id>`, the gateway computes the digest of the retried
//! call and the control plane redeems the approval only if the two match.
//! So the digest must be the same for the same call however a client
//! re-serialises it (key order, white space, string escapes, number
//! spelling, a new JSON-RPC `id`) and differ as soon as anything the
//! upstream acts on differs.
//!
//! This runs only for calls that need approval, never on the common path,
//! so it allocates freely. The canonical form below is also documented in
//! docs/control-plane.md ("Approvals"), for other gateways; the module's
//! known-answer test holds both to the same bytes.
//!
//! # Canonical form
//!
//! The digest is SHA-256 over a byte string made of *fields*. A field is
//! its length as an unsigned 64-bit little-endian integer followed by its
//! bytes, so no two lists of fields encode alike. The fields, in order:
//!
//! 1. the domain tag `aegis-approval-v1`;
//! 2. the tenant: the byte `0x00` when the call has no tenant, else `0x01`
//!    followed by the tenant's bytes (so no tenant and an empty tenant
//!    differ);
//! 3. the agent; 4. the tool; 5. the action;
//! 6. the HTTP method, ASCII upper-cased;
//! 7. the tool's host, ASCII lower-cased;
//! 8. the path (without the query string), with each `%XX` that encodes an
//!    unreserved character (`A-Z a-z 0-9 - . _ ~`) replaced by that
//!    character, as routes match paths; every other byte as written;
//! 9. the query string (without the `?`): one field holding its *pairs*
//!    (below), empty when there are none;
//! 10. the body: one field holding a byte for its shape, then
//!     - `0x00` no body (also any body of zero bytes): nothing more;
//!     - `0x01` JSON: the document in *canonical JSON*, below;
//!     - `0x02` form (`application/x-www-form-urlencoded`): its *pairs*;
//!     - `0x03` MCP (JSON-RPC): a field holding the decoded `method`
//!       string, then `0x00` when the message has no `params`, or `0x01`
//!       followed by `params` in canonical JSON, without its member
//!       `_meta` when `params` is an object (`_meta` deeper down, as in
//!       the arguments, stays). The `id`, `jsonrpc` and any other member
//!       of the message are left out; the whole message is still read
//!       and checked as for a JSON body.
//!
//! **Pairs**: the data is split on `&`; empty pieces are skipped; each
//! piece is split at its first `=` into key and value (no `=`: the value
//! is empty); both are decoded (`+` is a space, `%XX` the byte it names).
//! The pairs are sorted by the bytes of their keys with a *stable* sort,
//! so pairs with the same key keep their order (a list's order can carry
//! meaning), and written as two fields each, key then value. A `%` not
//! followed by two hex digits, or a key or value that does not decode to
//! UTF-8, is an error.
//!
//! **Canonical JSON** (after the document was checked against RFC 8259,
//! nested at most [`MAX_DEPTH`] levels):
//! - objects: members sorted by the bytes of their decoded UTF-8 keys,
//!   written `{"k":v,...}`; a key given twice in one object, also when the
//!   two differ only in ASCII case (the engine refuses those too), is an
//!   error;
//! - arrays: `[v,...]` in their order; `true`, `false`, `null` as is;
//! - no white space anywhere;
//! - strings (keys and values): decoded (every escape, `\uXXXX` surrogate
//!   pairs included), then written between `"` with `"` as `\"`, `\` as
//!   `\\`, each byte below `0x20` as `\u00xx` (lowercase hex) and every
//!   other byte, non-ASCII UTF-8 included, as it is;
//! - numbers, exactly (never through a float): with `d` the decimal digits
//!   of the number's integer and fraction parts together and `e` the
//!   number after its `e` or `E` (0 if none) minus the number of fraction
//!   digits, so that its value is `d` × 10^`e`, leading and trailing
//!   zeros are dropped from `d` (each trailing zero adding one to `e`);
//!   a zero is written `0` (`-0`, `0.0` and `0e7` too), anything else as
//!   `-` if negative, then `d`, then `e` and the exponent in decimal
//!   (`-` if negative) unless it is 0. So `1`, `1.0`, `10e-1` and `0.1e1`
//!   are all `1`, `100` is `1e2` and `-0.25` is `-25e-2`. A number other
//!   than zero whose exponent (as written, or as `e` at any step) does not
//!   fit a signed 64-bit integer is an error.

use crate::bundle::Bundle;
use crate::eval::Routed;
use crate::http::{Headers, PathBytes, Request};
use crate::json::{Event, JStr, JsonError, JsonErrorKind, Parser, MAX_DEPTH_LIMIT};
use crate::params::{validate_pct, Enc, Text};
use crate::types::BodyKind;
use alloc::borrow::Cow;
use alloc::vec::Vec;
use core::fmt;
use sha2::{Digest, Sha256};

/// The domain tag, the first field of every canonical form.
pub const DOMAIN: &[u8] = b"aegis-approval-v1";

/// How deeply a JSON body may nest (the engine's own upper bound).
pub const MAX_DEPTH: usize = MAX_DEPTH_LIMIT;

/// A call as the engine read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call<'a> {
    pub tenant: Option<&'a str>,
    pub agent: &'a str,
    pub tool: &'a str,
    pub action: &'a str,
    /// As sent; encoded upper-cased.
    pub method: &'a str,
    /// The tool's host; encoded lower-cased.
    pub host: &'a str,
    /// Without the query string.
    pub path: &'a str,
    /// Without the `?`; empty when there is none.
    pub query: &'a str,
    pub body: BodyShape<'a>,
}

/// The body as the engine read it (a gzip body already inflated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyShape<'a> {
    None,
    Json(&'a [u8]),
    Form(&'a [u8]),
    /// An MCP JSON-RPC message.
    Mcp(&'a [u8]),
}

/// Why a call has no digest. Each of these the engine refuses before a
/// call could need approval; here they fail closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestError {
    Json(JsonError),
    /// An object has a key twice (the later one at this byte offset).
    DuplicateKey(usize),
    /// A number's exponent is out of range (number at this byte offset).
    NumberRange(usize),
    /// Bad `%` escape or non-UTF-8 in the query string.
    BadQuery,
    /// Bad `%` escape or non-UTF-8 in a form body.
    BadForm,
    /// An MCP message that is not a JSON object.
    McpNotObject,
    /// An MCP message whose `method` is missing or not a string.
    McpNoMethod,
}

impl fmt::Display for DigestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DigestError::Json(e) => write!(f, "malformed json body: {e}"),
            DigestError::DuplicateKey(at) => {
                write!(f, "json object has a duplicate key at byte {at}")
            }
            DigestError::NumberRange(at) => {
                write!(f, "json number exponent out of range at byte {at}")
            }
            DigestError::BadQuery => f.write_str("malformed query string"),
            DigestError::BadForm => f.write_str("malformed form-encoded body"),
            DigestError::McpNotObject => f.write_str("mcp message is not a json object"),
            DigestError::McpNoMethod => f.write_str("mcp message has no `method` string"),
        }
    }
}

impl From<JsonError> for DigestError {
    fn from(e: JsonError) -> Self {
        DigestError::Json(e)
    }
}

/// The SHA-256 of the call's [canonical form](self#canonical-form).
pub fn approval_digest(call: &Call<'_>) -> Result<[u8; 32], DigestError> {
    Ok(Sha256::digest(canonical_form(call)?).into())
}

/// The bytes [`approval_digest`] hashes: for comparing with another
/// implementation of the canonical form.
pub fn canonical_form(call: &Call<'_>) -> Result<Vec<u8>, DigestError> {
    let mut out = Vec::new();
    field(&mut out, DOMAIN);
    match call.tenant {
        None => field(&mut out, &[0]),
        Some(t) => {
            let mut tenant = Vec::with_capacity(t.len() + 1);
            tenant.push(1);
            tenant.extend_from_slice(t.as_bytes());
            field(&mut out, &tenant);
        }
    }
    field(&mut out, call.agent.as_bytes());
    field(&mut out, call.tool.as_bytes());
    field(&mut out, call.action.as_bytes());
    field(&mut out, &call.method.to_ascii_uppercase().into_bytes());
    field(&mut out, &call.host.to_ascii_lowercase().into_bytes());
    field(&mut out, &PathBytes::new(call.path).collect::<Vec<u8>>());
    let query = pairs(call.query.as_bytes()).ok_or(DigestError::BadQuery)?;
    field(&mut out, &query);
    field(&mut out, &body(call.body)?);
    Ok(out)
}

/// Lowercase hex of a digest, as the control plane takes it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Hex([u8; 64]);

impl Hex {
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written.
        core::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The digest as the `digest` field of `POST /v1/approvals` takes it.
pub fn to_hex(d: &[u8; 32]) -> Hex {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (pair, b) in out.chunks_exact_mut(2).zip(d) {
        for (slot, nibble) in pair.iter_mut().zip([b >> 4, b & 0xf]) {
            *slot = DIGITS.get(usize::from(nibble)).copied().unwrap_or(b'0');
        }
    }
    Hex(out)
}

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn body(shape: BodyShape<'_>) -> Result<Vec<u8>, DigestError> {
    let mut out = Vec::new();
    match shape {
        BodyShape::Json(b) | BodyShape::Form(b) | BodyShape::Mcp(b) if b.is_empty() => {
            out.push(0);
        }
        BodyShape::None => out.push(0),
        BodyShape::Json(b) => {
            out.push(1);
            write(&parse(b)?, &mut out);
        }
        BodyShape::Form(b) => {
            out.push(2);
            out.extend(pairs(b).ok_or(DigestError::BadForm)?);
        }
        BodyShape::Mcp(b) => {
            out.push(3);
            mcp(&parse(b)?, &mut out)?;
        }
    }
    Ok(out)
}

/// The JSON-RPC method and `params` without `_meta`: what the server acts
/// on. The `id` names the exchange, not the call.
fn mcp(msg: &Node<'_>, out: &mut Vec<u8>) -> Result<(), DigestError> {
    let Node::Obj(members) = msg else {
        return Err(DigestError::McpNotObject);
    };
    let member = |name: &[u8]| members.iter().find(|m| *m.key == *name).map(|m| &m.value);
    let Some(Node::Str(method)) = member(b"method") else {
        return Err(DigestError::McpNoMethod);
    };
    field(out, &method.bytes().collect::<Vec<u8>>());
    match member(b"params") {
        None => out.push(0),
        Some(Node::Obj(params)) => {
            out.push(1);
            let kept = params.iter().filter(|m| *m.key != *b"_meta");
            write_object(kept, out);
        }
        Some(params) => {
            out.push(1);
            write(params, out);
        }
    }
    Ok(())
}

/// Form-encoded data as sorted pairs of fields; `None` when it does not
/// decode.
fn pairs(data: &[u8]) -> Option<Vec<u8>> {
    let mut list: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for piece in data.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (k, v) = match piece.iter().position(|&b| b == b'=') {
            Some(i) => (piece.get(..i)?, piece.get(i + 1..)?),
            None => (piece, &b""[..]),
        };
        if !validate_pct(k, true) || !validate_pct(v, true) {
            return None;
        }
        let decode = |raw: &[u8]| {
            Text {
                raw,
                enc: Enc::Form,
            }
            .bytes()
            .collect::<Vec<u8>>()
        };
        list.push((decode(k), decode(v)));
    }
    // Stable: the values of a repeated key keep their order.
    list.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::new();
    for (k, v) in &list {
        field(&mut out, k);
        field(&mut out, v);
    }
    Some(out)
}

/// A JSON value read whole, objects already sorted.
#[derive(Debug)]
enum Node<'a> {
    Null,
    Bool(bool),
    /// Canonical number text.
    Num(Vec<u8>),
    Str(JStr<'a>),
    Arr(Vec<Node<'a>>),
    Obj(Vec<Member<'a>>),
}

#[derive(Debug)]
struct Member<'a> {
    /// Decoded.
    key: Cow<'a, [u8]>,
    value: Node<'a>,
}

/// Reads a whole document (validating it) into a tree with sorted objects.
fn parse(buf: &[u8]) -> Result<Node<'_>, DigestError> {
    let mut p = Parser::new(buf, MAX_DEPTH);
    let first = next(&mut p)?;
    let root = node(&mut p, first)?;
    match p.next()? {
        None => Ok(root),
        // The parser reports anything after the document as an error.
        Some(_) => Err(p.err(JsonErrorKind::TrailingData).into()),
    }
}

fn next<'a>(p: &mut Parser<'a>) -> Result<Event<'a>, DigestError> {
    p.next()?
        .ok_or_else(|| p.err(JsonErrorKind::UnexpectedEnd).into())
}

/// The value that starts with `ev`. Recursion is bounded by the parser's
/// depth limit.
fn node<'a>(p: &mut Parser<'a>, ev: Event<'a>) -> Result<Node<'a>, DigestError> {
    Ok(match ev {
        Event::Null => Node::Null,
        Event::Bool(b) => Node::Bool(b),
        Event::Str(s) => Node::Str(s),
        Event::Num(n) => {
            let at = p.offset().saturating_sub(n.len());
            Node::Num(number(n.as_bytes()).ok_or(DigestError::NumberRange(at))?)
        }
        Event::ArrStart => {
            let mut items = Vec::new();
            loop {
                match next(p)? {
                    Event::ArrEnd => break,
                    ev => items.push(node(p, ev)?),
                }
            }
            Node::Arr(items)
        }
        Event::ObjStart => {
            let mut members = Vec::new();
            let mut offsets = Vec::new();
            loop {
                let key = match next(p)? {
                    Event::ObjEnd => break,
                    Event::Key(k) => k,
                    // The parser gives a key or the end here.
                    _ => return Err(p.err(JsonErrorKind::UnexpectedEnd).into()),
                };
                let first = next(p)?;
                let value = node(p, first)?;
                offsets.push(key.start);
                members.push(Member {
                    key: if key.escaped {
                        Cow::Owned(key.bytes().collect())
                    } else {
                        Cow::Borrowed(key.raw)
                    },
                    value,
                });
            }
            check_keys(&members, &offsets)?;
            members.sort_by(|a, b| a.key.cmp(&b.key));
            Node::Obj(members)
        }
        // The parser never starts a value with these.
        Event::ObjEnd | Event::ArrEnd | Event::Key(_) => {
            return Err(p.err(JsonErrorKind::UnexpectedEnd).into())
        }
    })
}

/// Refuses two keys that are equal, or equal but for ASCII case, as the
/// engine does; the error names the later one.
fn check_keys(members: &[Member<'_>], offsets: &[usize]) -> Result<(), DigestError> {
    let folded = |i: &usize| {
        members
            .get(*i)
            .map(|m| &*m.key)
            .unwrap_or_default()
            .iter()
            .map(u8::to_ascii_lowercase)
    };
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by(|a, b| folded(a).cmp(folded(b)));
    for pair in order.windows(2) {
        if let [a, b] = pair {
            if folded(a).eq(folded(b)) {
                let at = offsets.get(*a.max(b)).copied().unwrap_or_default();
                return Err(DigestError::DuplicateKey(at));
            }
        }
    }
    Ok(())
}

/// The canonical text of a JSON number the parser accepted; `None` when
/// its exponent does not fit an `i64`.
fn number(text: &[u8]) -> Option<Vec<u8>> {
    let (neg, rest) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    let split = rest
        .iter()
        .position(|&b| b == b'e' || b == b'E')
        .unwrap_or(rest.len());
    let (mantissa, exp) = (rest.get(..split)?, rest.get(split..)?);
    let (int, frac) = match mantissa.iter().position(|&b| b == b'.') {
        Some(i) => (mantissa.get(..i)?, mantissa.get(i + 1..)?),
        None => (mantissa, &b""[..]),
    };
    let mut digits: Vec<u8> = int.iter().chain(frac).copied().collect();
    let lead = digits.iter().take_while(|&&d| d == b'0').count();
    digits.drain(..lead);
    if digits.is_empty() {
        return Some(b"0".to_vec());
    }
    let mut e = exponent(exp)?;
    e = e.checked_sub(i64::try_from(frac.len()).ok()?)?;
    while digits.last() == Some(&b'0') {
        digits.pop();
        e = e.checked_add(1)?;
    }
    let mut out = Vec::with_capacity(digits.len() + 22);
    if neg {
        out.push(b'-');
    }
    out.extend_from_slice(&digits);
    if e != 0 {
        out.push(b'e');
        out.extend_from_slice(alloc::format!("{e}").as_bytes());
    }
    Some(out)
}

/// `e12`, `E+3`, `e-4` or nothing, as an `i64`.
fn exponent(exp: &[u8]) -> Option<i64> {
    let Some((_, rest)) = exp.split_first() else {
        return Some(0);
    };
    let (neg, digits) = match rest.split_first() {
        Some((b'-', d)) => (true, d),
        Some((b'+', d)) => (false, d),
        _ => (false, rest),
    };
    let mut v: i64 = 0;
    for &d in digits {
        v = v
            .checked_mul(10)?
            .checked_add(i64::from(d.wrapping_sub(b'0')))?;
    }
    Some(if neg { -v } else { v })
}

fn write(n: &Node<'_>, out: &mut Vec<u8>) {
    match n {
        Node::Null => out.extend_from_slice(b"null"),
        Node::Bool(true) => out.extend_from_slice(b"true"),
        Node::Bool(false) => out.extend_from_slice(b"false"),
        Node::Num(text) => out.extend_from_slice(text),
        Node::Str(s) => write_str(s.bytes(), out),
        Node::Arr(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out);
            }
            out.push(b']');
        }
        Node::Obj(members) => write_object(members.iter(), out),
    }
}

fn write_object<'m, 'a: 'm>(members: impl Iterator<Item = &'m Member<'a>>, out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, m) in members.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(m.key.iter().copied(), out);
        out.push(b':');
        write(&m.value, out);
    }
    out.push(b'}');
}

/// The one escaping of the canonical form (not the engine's general JSON
/// writer, whose choices may change for other reasons).
fn write_str(bytes: impl Iterator<Item = u8>, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let hex = |d: u8| HEX.get(usize::from(d)).copied().unwrap_or(b'0');
    out.push(b'"');
    for b in bytes {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x00..=0x1f => {
                out.extend_from_slice(&[b'\\', b'u', b'0', b'0', hex(b >> 4), hex(b & 0xf)])
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

/// Why a routed request has no digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestDigestError {
    /// The route was made by another bundle.
    Route,
    /// The request line or body headers have no single meaning.
    Http(crate::http::HttpError),
    Gzip(crate::gzip::GzipError),
    Digest(DigestError),
}

impl fmt::Display for RequestDigestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestDigestError::Route => f.write_str("the route belongs to another bundle"),
            RequestDigestError::Http(e) => write!(f, "{e}"),
            RequestDigestError::Gzip(e) => write!(f, "{e}"),
            RequestDigestError::Digest(e) => write!(f, "{e}"),
        }
    }
}

impl Bundle {
    /// The approval digest of a routed request, whose action the body
    /// stages found (`action`, a name of the route's tool); `req.authority`
    /// is the tool host the route was made for. A gzip body is digested as
    /// it inflates, like the engine reads it. Runs only for calls that
    /// need approval: it allocates.
    pub fn approval_digest<H: Headers + ?Sized>(
        &self,
        route: &Routed,
        action: &str,
        req: &Request<'_, H>,
    ) -> Result<[u8; 32], RequestDigestError> {
        self.read_call(route, action, req, |call| {
            approval_digest(call).map_err(RequestDigestError::Digest)
        })?
    }

    /// Gives `f` the routed request as the engine reads it (see
    /// [`Bundle::approval_digest`]): what an approval is for, digested or
    /// shown to the person deciding.
    pub(crate) fn read_call<H: Headers + ?Sized, R>(
        &self,
        route: &Routed,
        action: &str,
        req: &Request<'_, H>,
        f: impl FnOnce(&Call<'_>) -> R,
    ) -> Result<R, RequestDigestError> {
        let host = crate::http::host_of(req.authority).map_err(RequestDigestError::Http)?;
        let agent = self
            .agent(route.caller())
            .ok_or(RequestDigestError::Route)?;
        let tool = self
            .model
            .tools
            .get(route.tool())
            .ok_or(RequestDigestError::Route)?;
        let (path, query) = crate::http::split_path(req.path).map_err(RequestDigestError::Http)?;
        let raw = req.body.unwrap_or_default();
        let mcp = tool.mcp_path.is_some();
        let kind = if mcp { BodyKind::Json } else { tool.body };
        let coding = crate::http::check_body_headers(req.headers, kind, tool.gzip, !raw.is_empty())
            .map_err(RequestDigestError::Http)?;
        let mut inflater;
        let body = if coding == crate::http::Coding::Gzip && !raw.is_empty() {
            let limit = self.model.limits.max_body_bytes;
            inflater = crate::gzip::Inflater::new(limit as usize);
            inflater
                .inflate(raw, limit)
                .map_err(RequestDigestError::Gzip)?
        } else {
            raw
        };
        let shape = match (mcp, tool.body) {
            _ if body.is_empty() => BodyShape::None,
            (true, _) => BodyShape::Mcp(body),
            (false, BodyKind::Json) => BodyShape::Json(body),
            (false, BodyKind::Form) => BodyShape::Form(body),
            (false, BodyKind::None) => BodyShape::None,
        };
        let call = Call {
            tenant: agent.tenant.as_deref(),
            agent: &agent.name,
            tool: &tool.name,
            action,
            method: req.method,
            host,
            path,
            query: query.unwrap_or_default(),
            body: shape,
        };
        Ok(f(&call))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::string::{String, ToString};
    use alloc::vec;

    fn call(body: BodyShape<'static>) -> Call<'static> {
        Call {
            tenant: Some("acme"),
            agent: "finance-agent",
            tool: "stripe",
            action: "create_payment",
            method: "POST",
            host: "api.stripe.com",
            path: "/v1/payment_intents",
            query: "",
            body,
        }
    }

    fn leak(s: &str) -> &'static [u8] {
        alloc::boxed::Box::leak(s.as_bytes().to_vec().into_boxed_slice())
    }

    fn json(s: &str) -> Result<[u8; 32], DigestError> {
        approval_digest(&call(BodyShape::Json(leak(s))))
    }

    fn mcp(s: &str) -> Result<[u8; 32], DigestError> {
        approval_digest(&call(BodyShape::Mcp(leak(s))))
    }

    fn canon_json(s: &str) -> String {
        String::from_utf8(canonical_json(s.as_bytes()).unwrap()).unwrap()
    }

    fn canonical_json(b: &[u8]) -> Result<Vec<u8>, DigestError> {
        let mut out = Vec::new();
        write(&parse(b)?, &mut out);
        Ok(out)
    }

    #[test]
    fn reserialising_keeps_the_digest() {
        let base =
            json(r#"{"amount":1200,"currency":"usd","meta":{"a":[1,"x/y",true,null]}}"#).unwrap();
        for same in [
            // Key order, at every level, and white space.
            "{ \"meta\" : { \"a\" : [ 1 , \"x/y\" , true , null ] } ,\n\t\"currency\":\"usd\",\r\n\"amount\":1200 }",
            // Escapes for the same characters, in keys and values.
            r#"{"\u0061mount":1200,"currency":"\u0075sd","meta":{"\u0061":[1,"x\/y",true,null]}}"#,
            // Number spellings of the same value.
            r#"{"amount":1200.0,"currency":"usd","meta":{"a":[10e-1,"x/y",true,null]}}"#,
            r#"{"amount":12e2,"currency":"usd","meta":{"a":[0.1e1,"x/y",true,null]}}"#,
            r#"{"amount":1.2E+3,"currency":"usd","meta":{"a":[1.000,"x/y",true,null]}}"#,
        ] {
            assert_eq!(json(same).unwrap(), base, "{same}");
        }
        // Non-ASCII and astral characters, raw or escaped.
        assert_eq!(
            json(r#"{"s":"café 😀"}"#).unwrap(),
            json(r#"{"s":"caf\u00e9 \ud83d\ude00"}"#).unwrap()
        );
        assert_eq!(
            json(r#"{"z":-0}"#).unwrap(),
            json(r#"{"z":0.0e5}"#).unwrap()
        );
    }

    #[test]
    fn canonical_json_text() {
        assert_eq!(
            canon_json(
                " { \"b\" : [ 1.50 , -0 , 1e2 ] , \"a\" : \"q\\\"\\\\\\n\\u001f\\u007f/é\" } "
            ),
            "{\"a\":\"q\\\"\\\\\\u000a\\u001f\u{7f}/é\",\"b\":[15e-1,0,1e2]}"
        );
        // Keys sort by their decoded bytes, not as written.
        assert_eq!(
            canon_json(r#"{"b":1,"\u0061":2,"C":3,"é":4,"_":5}"#),
            r#"{"C":3,"_":5,"a":2,"b":1,"é":4}"#
        );
        assert_eq!(canon_json("[]"), "[]");
        assert_eq!(canon_json("{}"), "{}");
        assert_eq!(canon_json("\"\""), "\"\"");
    }

    #[test]
    fn numbers_are_exact_decimals() {
        let n = |s: &str| String::from_utf8(number(s.as_bytes()).unwrap()).unwrap();
        for (text, want) in [
            ("0", "0"),
            ("-0", "0"),
            ("0.000", "0"),
            ("-0.0e-9", "0"),
            ("0e99999999999999999999999", "0"),
            ("1", "1"),
            ("1.0", "1"),
            ("10e-1", "1"),
            ("0.1e1", "1"),
            ("100", "1e2"),
            ("-0.25", "-25e-2"),
            ("1200.50", "12005e-1"),
            ("1.5E+3", "15e2"),
            (
                "123456789012345678901234567890",
                "12345678901234567890123456789e1",
            ),
            ("9007199254740993", "9007199254740993"),
            ("1e400", "1e400"),
            ("-1e-400", "-1e-400"),
            ("0.00012300", "123e-6"),
            ("1e-0000000000000000000000001", "1e-1"),
        ] {
            assert_eq!(n(text), want, "{text}");
        }
        assert_eq!(number(b"1e9223372036854775808"), None);
        assert_eq!(
            number(b"1e9223372036854775807").as_deref(),
            Some(&b"1e9223372036854775807"[..])
        );
        // The fraction's digits pull the exponent below `i64::MIN`.
        assert_eq!(number(b"1.5e-9223372036854775808"), None);
        assert_eq!(
            json(r#"{"n":1.5e-9223372036854775808}"#),
            Err(DigestError::NumberRange(5))
        );
        // Values one float apart, or the same float, still differ.
        assert_ne!(
            json(r#"{"n":9007199254740993}"#).unwrap(),
            json(r#"{"n":9007199254740992}"#).unwrap()
        );
        assert_ne!(
            json(r#"{"n":0.1}"#).unwrap(),
            json(r#"{"n":0.10000000000000000001}"#).unwrap()
        );
        assert_ne!(
            json(r#"{"n":1e400}"#).unwrap(),
            json(r#"{"n":1e401}"#).unwrap()
        );
        // A number and the string that spells it differ.
        assert_ne!(json(r#"{"n":1}"#).unwrap(), json(r#"{"n":"1"}"#).unwrap());
    }

    #[test]
    fn any_changed_value_or_key_changes_the_digest() {
        let base = json(r#"{"amount":1200,"meta":{"tags":["a","b"],"ok":true}}"#).unwrap();
        for other in [
            r#"{"amount":1201,"meta":{"tags":["a","b"],"ok":true}}"#,
            r#"{"amount":-1200,"meta":{"tags":["a","b"],"ok":true}}"#,
            r#"{"amount":"1200","meta":{"tags":["a","b"],"ok":true}}"#,
            r#"{"amount":1200,"meta":{"tags":["b","a"],"ok":true}}"#,
            r#"{"amount":1200,"meta":{"tags":["a","b",null],"ok":true}}"#,
            r#"{"amount":1200,"meta":{"tags":["a"],"ok":true}}"#,
            r#"{"amount":1200,"meta":{"tags":["a","B"],"ok":true}}"#,
            r#"{"amount":1200,"meta":{"tags":["a","b "],"ok":true}}"#,
            r#"{"amount":1200,"meta":{"tags":["a","b"],"ok":false}}"#,
            r#"{"amount":1200,"meta":{"tags":["a","b"],"ok":null}}"#,
            r#"{"amount":1200,"meta":{"tags":["a","b"]}}"#,
            r#"{"amount":1200,"meta":{"tags":["a","b"],"ok":true,"x":null}}"#,
            r#"{"amount":1200,"meta":{"tags":["a","b"],"Ok":true}}"#,
            r#"{"amount":1200,"meta":{"tags":[["a","b"]],"ok":true}}"#,
            r#"{"amount":1200,"meta":[{"tags":["a","b"],"ok":true}]}"#,
            r#"{"amount":1200,"tags":["a","b"],"ok":true}"#,
            r#"{"amount":1200}"#,
            "{}",
        ] {
            assert_ne!(json(other).unwrap(), base, "{other}");
        }
        // A string with a quote against the key/value split it could fake.
        assert_ne!(
            json(r#"{"a":"x\",\"b\":\"y"}"#).unwrap(),
            json(r#"{"a":"x","b":"y"}"#).unwrap()
        );
    }

    #[test]
    fn every_field_of_the_call_counts() {
        let base = call(BodyShape::Json(b"{\"a\":1}"));
        let d = |c: &Call<'_>| approval_digest(c).unwrap();
        let want = d(&base);
        let changed = [
            Call {
                tenant: None,
                ..base
            },
            Call {
                tenant: Some(""),
                ..base
            },
            Call {
                tenant: Some("acme2"),
                ..base
            },
            Call {
                agent: "other-agent",
                ..base
            },
            Call {
                tool: "stripe2",
                ..base
            },
            Call {
                action: "refund",
                ..base
            },
            Call {
                method: "PUT",
                ..base
            },
            Call {
                host: "api.stripe.com.evil",
                ..base
            },
            Call {
                path: "/v1/payment_intents/x",
                ..base
            },
            Call {
                query: "a=1",
                ..base
            },
            Call {
                body: BodyShape::Json(b"{\"a\":2}"),
                ..base
            },
            Call {
                body: BodyShape::Mcp(b"{\"a\":1,\"method\":\"m\"}"),
                ..base
            },
            Call {
                body: BodyShape::Form(b"a=1"),
                ..base
            },
            Call {
                body: BodyShape::None,
                ..base
            },
        ];
        for c in &changed {
            assert_ne!(d(c), want, "{c:?}");
        }
        // Every two of them differ too (no tenant against an empty one,
        // JSON against MCP against form bodies).
        for (i, a) in changed.iter().enumerate() {
            for b in changed.get(i + 1..).unwrap() {
                assert_ne!(d(a), d(b), "{a:?} {b:?}");
            }
        }
        // Moving bytes from one field to the next changes the digest.
        let moved = Call {
            agent: "finance-agentstripe",
            tool: "",
            ..base
        };
        assert_ne!(d(&moved), want);
        // Method case, host case and path escapes of unreserved
        // characters are read as the engine reads them.
        for same in [
            Call {
                method: "post",
                ..base
            },
            Call {
                host: "API.Stripe.COM",
                ..base
            },
            Call {
                path: "/v1/%70ayment%5Fintents",
                ..base
            },
        ] {
            assert_eq!(d(&same), want, "{same:?}");
        }
        // Other escapes stay as written.
        let a = Call {
            path: "/v1/a%40b",
            ..base
        };
        let b = Call {
            path: "/v1/a@b",
            ..base
        };
        assert_ne!(d(&a), d(&b));
    }

    #[test]
    fn query_and_form_pairs() {
        let q = |query: &'static str| {
            approval_digest(&Call {
                query,
                ..call(BodyShape::None)
            })
        };
        let form = |body: &'static [u8]| approval_digest(&call(BodyShape::Form(body)));
        // Sorted by key; a repeated key keeps its values' order.
        assert_eq!(q("b=2&a=1").unwrap(), q("a=1&b=2").unwrap());
        assert_eq!(q("x[]=1&b=2&x[]=2").unwrap(), q("b=2&x[]=1&x[]=2").unwrap());
        assert_ne!(q("x[]=1&x[]=2").unwrap(), q("x[]=2&x[]=1").unwrap());
        // Decoded: `+` and `%20`, `%41` and `A`; empty pieces skipped.
        assert_eq!(q("a=x+y").unwrap(), q("a=x%20y").unwrap());
        assert_eq!(q("%41=%62").unwrap(), q("A=b").unwrap());
        assert_eq!(q("&a=1&&b=2&").unwrap(), q("a=1&b=2").unwrap());
        assert_eq!(q("a").unwrap(), q("a=").unwrap());
        assert_eq!(
            q("").unwrap(),
            approval_digest(&call(BodyShape::None)).unwrap()
        );
        // What the decoding keeps apart.
        assert_ne!(q("a=1").unwrap(), q("a=2").unwrap());
        assert_ne!(q("a=x%2By").unwrap(), q("a=x+y").unwrap());
        assert_ne!(q("a=b%3Dc").unwrap(), q("a%3Db=c").unwrap());
        assert_ne!(q("a=1%262").unwrap(), q("a=1&2").unwrap());
        assert_ne!(q("a=1").unwrap(), q("A=1").unwrap());
        assert_ne!(q("a=1&b=2").unwrap(), q("a=1").unwrap());
        assert_eq!(q("a=%zz"), Err(DigestError::BadQuery));
        assert_eq!(q("a=%ff"), Err(DigestError::BadQuery));
        assert_eq!(q("a=%4"), Err(DigestError::BadQuery));
        // A form body reads the same way.
        assert_eq!(
            form(b"currency=usd&amount=1200").unwrap(),
            form(b"amount=1200&currency=u%73d").unwrap()
        );
        assert_ne!(form(b"a=1&a=2").unwrap(), form(b"a=2&a=1").unwrap());
        assert_ne!(form(b"amount=1200").unwrap(), form(b"amount=1201").unwrap());
        assert_eq!(form(b"a=%zz"), Err(DigestError::BadForm));
        // The query string and the form body are apart.
        assert_ne!(
            approval_digest(&Call {
                query: "a=1",
                ..call(BodyShape::None)
            })
            .unwrap(),
            form(b"a=1").unwrap()
        );
    }

    #[test]
    fn empty_bodies_are_no_body() {
        let none = approval_digest(&call(BodyShape::None)).unwrap();
        for empty in [
            BodyShape::Json(b""),
            BodyShape::Form(b""),
            BodyShape::Mcp(b""),
        ] {
            assert_eq!(approval_digest(&call(empty)).unwrap(), none);
        }
        // A form body with no pairs is a body.
        assert_ne!(approval_digest(&call(BodyShape::Form(b"&"))).unwrap(), none);
    }

    #[test]
    fn refusals() {
        for (bad, kind) in [
            ("{", JsonErrorKind::UnexpectedEnd),
            ("{\"a\":1,}", JsonErrorKind::UnexpectedByte(b'}')),
            ("{\"a\":1} x", JsonErrorKind::TrailingData),
            ("{\"a\":01}", JsonErrorKind::UnexpectedByte(b'1')),
            ("{\"a\":\"\\ud800\"}", JsonErrorKind::LoneSurrogate),
            ("{\"a\":NaN}", JsonErrorKind::UnexpectedByte(b'N')),
            (" ", JsonErrorKind::UnexpectedEnd),
        ] {
            match json(bad) {
                Err(DigestError::Json(e)) => assert_eq!(e.kind, kind, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(matches!(
            approval_digest(&call(BodyShape::Json(b"{\"a\":\"\xff\"}"))),
            Err(DigestError::Json(JsonError {
                kind: JsonErrorKind::InvalidUtf8,
                ..
            }))
        ));
        // Duplicate keys: as written, through escapes, in ASCII case, in
        // nested objects (also in MCP messages, wherever they are).
        assert_eq!(json(r#"{"a":1,"a":2}"#), Err(DigestError::DuplicateKey(8)));
        assert_eq!(
            json(r#"{"a":1,"b":2,"\u0061":3}"#),
            Err(DigestError::DuplicateKey(14))
        );
        assert_eq!(
            json(r#"{"Amount":1,"amount":2}"#),
            Err(DigestError::DuplicateKey(13))
        );
        assert_eq!(
            json(r#"{"x":[{"a":1},{"b":{"c":1,"c":1}}]}"#),
            Err(DigestError::DuplicateKey(27))
        );
        assert_eq!(
            mcp(r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"tools/call","params":{}}"#),
            Err(DigestError::DuplicateKey(25))
        );
        // The same key in sibling objects is fine.
        assert!(json(r#"{"a":{"k":1},"b":{"k":1},"k":[{"k":1},{"k":2}]}"#).is_ok());
        // Nesting: the engine's limit, then no further.
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(json(&nested(MAX_DEPTH)).is_ok());
        assert!(matches!(
            json(&nested(MAX_DEPTH + 1)),
            Err(DigestError::Json(JsonError {
                kind: JsonErrorKind::DepthLimit,
                ..
            }))
        ));
        // MCP messages are objects with a method.
        assert_eq!(mcp("[1]"), Err(DigestError::McpNotObject));
        assert_eq!(
            mcp(r#"{"jsonrpc":"2.0","id":1}"#),
            Err(DigestError::McpNoMethod)
        );
        assert_eq!(
            mcp(r#"{"jsonrpc":"2.0","id":1,"method":7}"#),
            Err(DigestError::McpNoMethod)
        );
        // Reasons are worded in the house style.
        assert_eq!(
            DigestError::DuplicateKey(7).to_string(),
            "json object has a duplicate key at byte 7"
        );
        assert_eq!(
            DigestError::McpNoMethod.to_string(),
            "mcp message has no `method` string"
        );
    }

    #[test]
    fn mcp_digests_method_and_params_without_meta() {
        let base = mcp(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"pay","arguments":{"amount":5,"to":"bob"}}}"#,
        )
        .unwrap();
        for same in [
            // A new id, of another type; another member order.
            r#"{"method":"tools/call","params":{"arguments":{"to":"bob","amount":5.0},"name":"pay"},"id":"req-77","jsonrpc":"2.0"}"#,
            // A progress token and other metadata in `params._meta`.
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"_meta":{"progressToken":"p-1"},"name":"pay","arguments":{"amount":5,"to":"bob"}}}"#,
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/c\u0061ll","params":{"name":"p\u0061y","_meta":{},"arguments":{"amount":5,"to":"bob"}}}"#,
            // Members of the message beside `method` and `params`.
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"pay","arguments":{"amount":5,"to":"bob"}},"_meta":{"x":1}}"#,
        ] {
            assert_eq!(mcp(same).unwrap(), base, "{same}");
        }
        for other in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"pay","arguments":{"amount":6,"to":"bob"}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"pay","arguments":{"amount":5,"to":"eve"}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"pay","arguments":{"amount":5}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"pay","arguments":{"amount":5,"to":"bob","memo":""}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"pay2","arguments":{"amount":5,"to":"bob"}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"pay"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"pay","arguments":{"amount":5,"to":"bob"},"extra":1}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"pay","arguments":{"amount":5,"to":"bob","_meta":{}}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"pay","arguments":{"amount":5,"to":"bob"}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#,
        ] {
            assert_ne!(mcp(other).unwrap(), base, "{other}");
        }
        // `_meta` inside the arguments is an argument.
        assert_ne!(
            mcp(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"_meta":1}}}"#).unwrap(),
            mcp(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"_meta":2}}}"#).unwrap(),
        );
        // No params, empty params and params without `_meta` but for it.
        let none = mcp(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#).unwrap();
        let empty = mcp(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#).unwrap();
        assert_ne!(none, empty);
        assert_eq!(
            mcp(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":{"a":1}}}"#)
                .unwrap(),
            empty
        );
        // Positional params are kept as they are.
        assert_ne!(
            mcp(r#"{"jsonrpc":"2.0","id":1,"method":"m","params":[1,2]}"#).unwrap(),
            mcp(r#"{"jsonrpc":"2.0","id":1,"method":"m","params":[2,1]}"#).unwrap(),
        );
        // The same text as a plain JSON body is another call.
        let text = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"pay","arguments":{"amount":5,"to":"bob"}}}"#;
        assert_ne!(json(text).unwrap(), base);
    }

    /// A field as the canonical form writes it, spelled out again here.
    fn f(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&u64::try_from(bytes.len()).unwrap().to_le_bytes());
        out.extend_from_slice(bytes);
    }

    fn sha256_hex(bytes: &[u8]) -> String {
        use sha2::Digest as _;
        sha2::Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The example of docs/control-plane.md: the bytes as the
    /// documentation describes them, hashed here, and the hex it shows.
    #[test]
    fn known_answer() {
        let c = Call {
            tenant: Some("acme"),
            agent: "finance-agent",
            tool: "stripe",
            action: "create_payment",
            method: "post",
            host: "API.Stripe.com",
            path: "/v1/%70ayment_intents",
            query: "expand[]=b&limit=3&expand[]=a",
            body: BodyShape::Json(
                br#"{ "currency": "usd", "amount": 1200.50, "note": "caf\u00e9 \"x\"\n" }"#,
            ),
        };
        let mut want = Vec::new();
        f(&mut want, b"aegis-approval-v1");
        f(&mut want, b"\x01acme");
        f(&mut want, b"finance-agent");
        f(&mut want, b"stripe");
        f(&mut want, b"create_payment");
        f(&mut want, b"POST");
        f(&mut want, b"api.stripe.com");
        f(&mut want, b"/v1/payment_intents");
        let mut query = Vec::new();
        for part in ["expand[]", "b", "expand[]", "a", "limit", "3"] {
            f(&mut query, part.as_bytes());
        }
        f(&mut want, &query);
        let mut body = vec![0x01];
        body.extend_from_slice(
            "{\"amount\":12005e-1,\"currency\":\"usd\",\"note\":\"café \\\"x\\\"\\u000a\"}"
                .as_bytes(),
        );
        f(&mut want, &body);
        assert_eq!(canonical_form(&c).unwrap(), want);
        // The documentation shows this call, its body and its digest.
        let doc = include_str!("../../docs/control-plane.md");
        for shown in [
            r#"{ "currency": "usd", "amount": 1200.50, "note": "caf\u00e9 \"x\"\n" }"#,
            "post http://API.Stripe.com/v1/%70ayment_intents?expand[]=b&limit=3&expand[]=a",
            "{\"amount\":12005e-1,\"currency\":\"usd\",\"note\":\"café \\\"x\\\"\\u000a\"}",
            "511eb4d40a3a650324171ca95f42938ea35dc4b8cbf51911efd991e98e8d15ae",
        ] {
            assert!(doc.contains(shown), "docs/control-plane.md lacks {shown}");
        }
        let hex = sha256_hex(&want);
        assert_eq!(to_hex(&approval_digest(&c).unwrap()).as_str(), hex);
        assert_eq!(
            hex,
            "511eb4d40a3a650324171ca95f42938ea35dc4b8cbf51911efd991e98e8d15ae"
        );

        // An MCP call of no tenant, with a form of the same steps.
        let c = Call {
            tenant: None,
            agent: "support-bot",
            tool: "crm",
            action: "delete_contact",
            method: "POST",
            host: "mcp.example.com",
            path: "/mcp",
            query: "",
            body: BodyShape::Mcp(
                br#"{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"delete_contact","_meta":{"progressToken":7},"arguments":{"id":"c-1"}}}"#,
            ),
        };
        let mut want = Vec::new();
        f(&mut want, b"aegis-approval-v1");
        f(&mut want, b"\x00");
        f(&mut want, b"support-bot");
        f(&mut want, b"crm");
        f(&mut want, b"delete_contact");
        f(&mut want, b"POST");
        f(&mut want, b"mcp.example.com");
        f(&mut want, b"/mcp");
        f(&mut want, b"");
        let mut body = vec![0x03];
        f(&mut body, b"tools/call");
        body.push(0x01);
        body.extend_from_slice(br#"{"arguments":{"id":"c-1"},"name":"delete_contact"}"#);
        f(&mut want, &body);
        assert_eq!(canonical_form(&c).unwrap(), want);
        assert_eq!(
            to_hex(&approval_digest(&c).unwrap()).as_str(),
            sha256_hex(&want)
        );
    }

    #[test]
    fn hex_is_lowercase() {
        let d: [u8; 32] = core::array::from_fn(|i| (i as u8).wrapping_mul(0x1f));
        let want: String = d.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(to_hex(&d).as_str(), want);
        assert_eq!(format!("{}", to_hex(&d)), want);
    }

    /// Laws over generated documents: every way of writing a document gives
    /// one digest, the canonical text means what the document means, and a
    /// changed leaf changes the digest.
    mod laws {
        use super::*;
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        enum J {
            Null,
            Bool(bool),
            /// `digits` × 10^`exp`, negative when `neg`.
            Num {
                neg: bool,
                digits: u64,
                exp: i8,
            },
            Str(String),
            Arr(Vec<J>),
            Obj(Vec<(String, J)>),
        }

        const CHARS: &[char] = &[
            'a', 'B', '"', '\\', '/', '\n', '\u{1}', '\u{7f}', 'é', '😀', ' ',
        ];

        fn text() -> impl Strategy<Value = String> {
            prop::collection::vec(prop::sample::select(CHARS), 0..5)
                .prop_map(|cs| cs.into_iter().collect())
        }

        fn doc() -> impl Strategy<Value = J> {
            let leaf = prop_oneof![
                Just(J::Null),
                any::<bool>().prop_map(J::Bool),
                (any::<bool>(), 0u64..100_000, -5i8..5).prop_map(|(neg, digits, exp)| J::Num {
                    neg,
                    digits,
                    exp
                }),
                text().prop_map(J::Str),
            ];
            leaf.prop_recursive(4, 48, 5, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..5).prop_map(J::Arr),
                    prop::collection::vec((text(), inner), 0..5).prop_map(|kvs| {
                        // Keys unique, also in ASCII case, as the engine
                        // requires.
                        let mut seen: Vec<String> = Vec::new();
                        J::Obj(
                            kvs.into_iter()
                                .filter(|(k, _)| {
                                    let folded = k.to_ascii_lowercase();
                                    let fresh = !seen.contains(&folded);
                                    seen.push(folded);
                                    fresh
                                })
                                .collect(),
                        )
                    }),
                ]
            })
        }

        /// Writes `j` making every free choice from `pick`.
        fn emit(j: &J, pick: &mut impl FnMut(usize) -> usize, out: &mut String) {
            let ws = |pick: &mut dyn FnMut(usize) -> usize, out: &mut String| {
                out.push_str([" ", "", "\n\t", "", "\r\n "][pick(5)]);
            };
            match j {
                J::Null => out.push_str("null"),
                J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                J::Num { neg, digits, exp } => {
                    let (digits, exp) = (*digits, i64::from(*exp));
                    if *neg && (digits != 0 || pick(2) == 0) {
                        out.push('-');
                    }
                    let d = digits.to_string();
                    let len = d.len() as i64;
                    let e = ["e", "E"][pick(2)];
                    match pick(5) {
                        0 => out.push_str(&format!("{d}{e}{exp}")),
                        1 => out.push_str(&format!("0.{d}{e}{}", exp + len)),
                        2 if digits != 0 => out.push_str(&format!("{d}000{e}{:+}", exp - 3)),
                        3 if exp >= 0 => {
                            out.push_str(&d);
                            if digits != 0 {
                                out.push_str(&"0".repeat(exp as usize));
                            }
                            out.push_str(".00");
                        }
                        4 if exp < 0 => {
                            let frac = (-exp) as usize;
                            let padded = format!("{d:0>width$}", width = frac + 1);
                            let (int, f) = padded.split_at(padded.len() - frac);
                            out.push_str(&format!("{int}.{f}"));
                        }
                        _ => out.push_str(&format!("{d}{e}{exp:+}")),
                    }
                }
                J::Str(s) => emit_str(s, pick, out),
                J::Arr(items) => {
                    out.push('[');
                    for (i, item) in items.iter().enumerate() {
                        ws(pick, out);
                        if i > 0 {
                            out.push(',');
                            ws(pick, out);
                        }
                        emit(item, pick, out);
                    }
                    ws(pick, out);
                    out.push(']');
                }
                J::Obj(members) => {
                    // Another order each time.
                    let mut order: Vec<usize> = (0..members.len()).collect();
                    for i in (1..order.len()).rev() {
                        order.swap(i, pick(i + 1));
                    }
                    out.push('{');
                    for (n, &i) in order.iter().enumerate() {
                        ws(pick, out);
                        if n > 0 {
                            out.push(',');
                            ws(pick, out);
                        }
                        let (k, v) = &members[i];
                        emit_str(k, pick, out);
                        ws(pick, out);
                        out.push(':');
                        ws(pick, out);
                        emit(v, pick, out);
                    }
                    ws(pick, out);
                    out.push('}');
                }
            }
        }

        fn emit_str(s: &str, pick: &mut impl FnMut(usize) -> usize, out: &mut String) {
            out.push('"');
            for c in s.chars() {
                let short = match c {
                    '"' => Some("\\\""),
                    '\\' => Some("\\\\"),
                    '/' => Some("\\/"),
                    '\n' => Some("\\n"),
                    _ => None,
                };
                let must = c == '"' || c == '\\' || (c as u32) < 0x20;
                match pick(3) {
                    0 if short.is_some() => out.push_str(short.unwrap()),
                    1 => {
                        let mut units = [0u16; 2];
                        for u in c.encode_utf16(&mut units) {
                            let hex = format!("{:04x}", u);
                            let hex = if pick(2) == 0 {
                                hex
                            } else {
                                hex.to_uppercase()
                            };
                            out.push_str(&format!("\\u{hex}"));
                        }
                    }
                    _ if !must => out.push(c),
                    _ => out.push_str(&format!("\\u{:04x}", c as u32)),
                }
            }
            out.push('"');
        }

        fn write_with(j: &J, choices: &[u8]) -> String {
            let mut at = 0usize;
            let mut pick = |n: usize| {
                let c = choices.get(at % choices.len().max(1)).copied().unwrap_or(0);
                at += 1;
                usize::from(c) % n
            };
            let mut out = String::new();
            emit(j, &mut pick, &mut out);
            out
        }

        /// Replaces the `n`-th leaf (in document order, counting from 0)
        /// with another value; `false` when there are fewer leaves.
        fn mutate(j: &mut J, n: &mut usize) -> bool {
            match j {
                J::Arr(items) => items.iter_mut().any(|i| mutate(i, n)),
                J::Obj(members) => members.iter_mut().any(|(_, v)| mutate(v, n)),
                leaf => {
                    if *n > 0 {
                        *n -= 1;
                        return false;
                    }
                    *leaf = match leaf {
                        J::Null => J::Bool(false),
                        J::Bool(b) => J::Bool(!*b),
                        J::Num { neg, digits, exp } => J::Num {
                            neg: *neg,
                            digits: *digits + 1,
                            exp: *exp,
                        },
                        J::Str(s) => J::Str(format!("{s}a")),
                        _ => J::Null,
                    };
                    true
                }
            }
        }

        fn leaves(j: &J) -> usize {
            match j {
                J::Arr(items) => items.iter().map(leaves).sum(),
                J::Obj(members) => members.iter().map(|(_, v)| leaves(v)).sum(),
                _ => 1,
            }
        }

        /// What a document means, read by serde_json: numbers compared as
        /// the nearest float (both texts of one value round alike).
        fn same_meaning(a: &serde_json::Value, b: &serde_json::Value) -> bool {
            use serde_json::Value as V;
            match (a, b) {
                (V::Number(x), V::Number(y)) => x.as_f64() == y.as_f64(),
                (V::Array(x), V::Array(y)) => {
                    x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_meaning(p, q))
                }
                (V::Object(x), V::Object(y)) => {
                    x.len() == y.len()
                        && x.iter()
                            .all(|(k, v)| y.get(k).is_some_and(|w| same_meaning(v, w)))
                }
                _ => a == b,
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: 1000,
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            #[test]
            fn every_spelling_of_a_document_has_one_digest(
                j in doc(),
                a in prop::collection::vec(any::<u8>(), 1..64),
                b in prop::collection::vec(any::<u8>(), 1..64),
            ) {
                let (x, y) = (write_with(&j, &a), write_with(&j, &b));
                let cx = canonical_json(x.as_bytes());
                prop_assert!(cx.is_ok(), "{} {:?}", x, cx);
                prop_assert_eq!(cx, canonical_json(y.as_bytes()), "{} / {}", x, y);
            }

            #[test]
            fn the_canonical_text_means_what_the_document_means(
                j in doc(),
                a in prop::collection::vec(any::<u8>(), 1..64),
            ) {
                let x = write_with(&j, &a);
                let c = canonical_json(x.as_bytes()).unwrap();
                let read: serde_json::Value = serde_json::from_str(&x).unwrap();
                let canon: serde_json::Value = serde_json::from_slice(&c).unwrap();
                prop_assert!(same_meaning(&read, &canon), "{} -> {}", x, String::from_utf8_lossy(&c));
                // The canonical text is its own canonical text.
                prop_assert_eq!(canonical_json(&c).unwrap(), c);
            }

            #[test]
            fn a_changed_leaf_changes_the_digest(
                j in doc(),
                which in 0usize..64,
                a in prop::collection::vec(any::<u8>(), 1..64),
                b in prop::collection::vec(any::<u8>(), 1..64),
            ) {
                let mut changed = j.clone();
                prop_assume!(leaves(&j) > 0);
                let mut n = which % leaves(&j);
                prop_assert!(mutate(&mut changed, &mut n));
                let x = write_with(&j, &a);
                let y = write_with(&changed, &b);
                let dx = approval_digest(&call(BodyShape::Json(leak(&x)))).unwrap();
                let dy = approval_digest(&call(BodyShape::Json(leak(&y)))).unwrap();
                prop_assert_ne!(dx, dy, "{} / {}", x, y);
            }
        }
    }
}
