//! The request line and framing headers, read the way an upstream reads
//! them, or refused.
//!
//! A gate that reads a request one way while the upstream reads it another
//! can be walked past. So before any policy is consulted the authority, the
//! path and the body framing headers must have one meaning: a host name with
//! an optional port, an origin-form path with no dot segments, empty
//! segments, encoded slashes or matrix parameters, a body whose media type
//! matches what the tool reads and that is not compressed. Anything else is
//! denied with a reason that names the flaw without echoing the request.
//!
//! Two equivalences are applied rather than refused, because every upstream
//! applies them too: host names compare without ASCII case and without one
//! trailing dot, and `%XX` escapes of unreserved characters in the path
//! (`/v1/%70ayment_intents`) match as the characters they stand for.
//!
//! [`Headers`] is how the engine reads a request's headers, whatever holds
//! them.

use crate::params::pct_at;
use crate::types::BodyKind;
use core::fmt;

/// Request headers, looked up by name (ASCII case-insensitive).
pub trait Headers {
    /// The first value of `name` and how many times the header appears.
    fn get(&self, name: &str) -> (Option<&str>, usize);
}

impl<K: AsRef<str>, V: AsRef<str>> Headers for [(K, V)] {
    fn get(&self, name: &str) -> (Option<&str>, usize) {
        let mut first = None;
        let mut n = 0;
        for (k, v) in self {
            if k.as_ref().eq_ignore_ascii_case(name) {
                if first.is_none() {
                    first = Some(v.as_ref());
                }
                n += 1;
            }
        }
        (first, n)
    }
}

/// One header's value, when it is given exactly once.
pub enum HeaderValue<'h> {
    Missing,
    One(&'h str),
    Many,
}

pub(crate) fn header<'h, H: Headers + ?Sized>(h: &'h H, name: &str) -> HeaderValue<'h> {
    match h.get(name) {
        (Some(v), 1) => HeaderValue::One(v),
        (_, 0) | (None, _) => HeaderValue::Missing,
        _ => HeaderValue::Many,
    }
}

/// What is wrong with a request's shape. Display gives the deny reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// `:authority` is empty, has userinfo, bad characters or a bad port.
    BadAuthority(AuthorityFlaw),
    /// A `host` header names another host than `:authority`.
    HostMismatch,
    /// The path is not in the one form every upstream reads the same way.
    BadPath(PathFlaw),
    /// A header that must appear at most once appears more often.
    RepeatedHeader(&'static str),
    /// `content-encoding` other than `identity`.
    EncodedBody,
    /// A body arrived without `content-type`.
    MissingContentType,
    /// The media type is not the one the tool reads.
    WrongContentType { want: BodyKind },
    /// `multipart/*` bodies are not read.
    Multipart,
    /// A `charset` other than UTF-8.
    Charset,
    /// The body is longer than the policy's `max_body_bytes`.
    BodyTooLarge { limit: u32 },
    /// A `CONNECT` tunnel: what goes through it cannot be judged.
    Connect,
}

impl HttpError {
    /// The HTTP status of a refusal for this flaw: 413 for a body over the
    /// limit (the client may retry with less), 403 for the rest.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::BodyTooLarge { .. } => 413,
            _ => 403,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorityFlaw {
    Empty,
    /// `a,b`: HTTP/1 proxies join repeated `Host` headers with a comma.
    Several,
    Userinfo,
    NonAscii,
    BadChar,
    BadPort,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathFlaw {
    /// Not `/...`: `*`, empty, or an absolute URL left in `:path`.
    NotOriginForm,
    Fragment,
    /// `//` inside the path.
    EmptySegment,
    /// `.` or `..`, plain or percent-encoded.
    DotSegment,
    /// `%2F` or `%5C`: a slash the upstream may or may not split on.
    EncodedSlash,
    Backslash,
    /// `;` parameters, which some servers strip and others keep.
    Semicolon,
    /// A space, control character or non-ASCII byte not percent-encoded,
    /// or an encoded control character.
    BadByte,
    /// `%` not followed by two hex digits.
    BadPercent,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::BadAuthority(a) => {
                f.write_str("malformed `:authority`: ")?;
                f.write_str(match a {
                    AuthorityFlaw::Empty => "no host",
                    AuthorityFlaw::Several => "more than one host (repeated `host` header)",
                    AuthorityFlaw::Userinfo => "userinfo (`user@`) is not accepted",
                    AuthorityFlaw::NonAscii => {
                        "non-ascii host (send internationalized names as punycode)"
                    }
                    AuthorityFlaw::BadChar => "character not allowed in a host name",
                    AuthorityFlaw::BadPort => "invalid port",
                })
            }
            HttpError::HostMismatch => {
                f.write_str("`host` header and `:authority` name different hosts")
            }
            HttpError::BadPath(p) => {
                f.write_str("path is not in normal form: ")?;
                f.write_str(match p {
                    PathFlaw::NotOriginForm => "it must start with `/`",
                    PathFlaw::Fragment => "it carries a `#` fragment",
                    PathFlaw::EmptySegment => "empty segment (`//`)",
                    PathFlaw::DotSegment => "`.` or `..` segment",
                    PathFlaw::EncodedSlash => "encoded slash (`%2F` or `%5C`)",
                    PathFlaw::Backslash => "backslash",
                    PathFlaw::Semicolon => "`;` parameters",
                    PathFlaw::BadByte => "unencoded space, control or non-ascii byte",
                    PathFlaw::BadPercent => "`%` not followed by two hex digits",
                })
            }
            HttpError::RepeatedHeader(h) => write!(f, "header `{h}` given more than once"),
            HttpError::EncodedBody => f.write_str(
                "request has a `content-encoding` the tool does not accept (it reads `gzip` only when declared with `encodings: [gzip]`)",
            ),
            HttpError::MissingContentType => f.write_str("request body without `content-type`"),
            HttpError::WrongContentType { want } => write!(
                f,
                "`content-type` does not match the tool's body ({})",
                media_type_for(*want)
            ),
            HttpError::Multipart => f.write_str("multipart bodies are not read"),
            HttpError::Charset => f.write_str("`content-type` charset must be utf-8"),
            HttpError::Connect => f.write_str(
                "`CONNECT` tunnels are not accepted: the gateway cannot judge what goes through them; \
                 send plain http to the gateway (an `http://` base url, or `http://` through the proxy) \
                 and it originates tls to the tool",
            ),
            HttpError::BodyTooLarge { limit } => {
                write!(
                    f,
                    "request body is larger than the {limit} bytes accepted (`max_body_bytes`)"
                )
            }
        }
    }
}

fn media_type_for(kind: BodyKind) -> &'static str {
    match kind {
        BodyKind::Json => "application/json",
        BodyKind::Form => "application/x-www-form-urlencoded",
        BodyKind::None => "no body",
    }
}

/// `s.split(sep as char)` for an ASCII `sep`, without the set-up cost of a
/// `char` pattern (these strings are short and split on every request).
pub(crate) fn split_ascii(s: &str, sep: u8) -> impl Iterator<Item = &str> + '_ {
    let mut rest = Some(s);
    core::iter::from_fn(move || {
        let r = rest?;
        match r.bytes().position(|b| b == sep) {
            // `sep` is ASCII, so both cuts are on character boundaries.
            Some(i) => {
                rest = r.get(i + 1..);
                r.get(..i)
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// `s.split_once(sep as char)` for an ASCII `sep`.
pub(crate) fn split_once_ascii(s: &str, sep: u8) -> Option<(&str, &str)> {
    let i = s.bytes().position(|b| b == sep)?;
    Some((s.get(..i)?, s.get(i + 1..)?))
}

/// What kind of byte, for the one pass of [`host_of`].
const H_LABEL: u8 = 1;
const H_DOT: u8 = 2;
const H_COLON: u8 = 4;
const H_COMMA: u8 = 8;
const H_AT: u8 = 16;
const H_NON_ASCII: u8 = 32;
const H_OTHER: u8 = 64;

// An index out of range in a constant is a compile error, not a panic.
#[allow(clippy::indexing_slicing)]
const HOST_BYTES: [u8; 256] = {
    let mut t = [H_OTHER; 256];
    let mut b = 0usize;
    while b < 256 {
        let c = b as u8;
        t[b] = if c.is_ascii_alphanumeric() || c == b'-' || c == b'_' {
            H_LABEL
        } else if c == b'.' {
            H_DOT
        } else if c == b':' {
            H_COLON
        } else if c == b',' {
            H_COMMA
        } else if c == b'@' {
            H_AT
        } else if c >= 0x80 {
            H_NON_ASCII
        } else {
            H_OTHER
        };
        b += 1;
    }
    t
};

/// The host of `authority`, without port and without one trailing dot;
/// compare it without ASCII case.
///
/// One pass over the bytes (this runs on every request): which kinds of
/// byte occur, where the first `:` is, and whether a label before it is
/// empty. The flaws are then reported in a fixed order: several hosts,
/// userinfo, non-ASCII, port, empty, bad character.
pub fn host_of(authority: &str) -> Result<&str, HttpError> {
    let bad = |a| Err(HttpError::BadAuthority(a));
    let bytes = authority.as_bytes();
    if bytes.is_empty() {
        return bad(AuthorityFlaw::Empty);
    }
    let mut seen = 0u8;
    let mut in_host = 0u8;
    let mut colon = bytes.len();
    let mut empty_label = false;
    let mut after_dot = true;
    for (i, &b) in bytes.iter().enumerate() {
        let kind = HOST_BYTES.get(usize::from(b)).copied().unwrap_or(H_OTHER);
        seen |= kind;
        if i < colon {
            match kind {
                H_DOT => {
                    empty_label |= after_dot;
                    after_dot = true;
                }
                H_COLON => colon = i,
                _ => {
                    in_host |= kind;
                    after_dot = false;
                }
            }
        }
    }
    if seen & H_COMMA != 0 {
        return bad(AuthorityFlaw::Several);
    }
    if seen & H_AT != 0 {
        return bad(AuthorityFlaw::Userinfo);
    }
    if seen & H_NON_ASCII != 0 {
        return bad(AuthorityFlaw::NonAscii);
    }
    if bytes.first() == Some(&b'[') {
        return bracketed_host(authority);
    }
    let (host, port) = match (authority.get(..colon), authority.get(colon..)) {
        (Some(h), Some(rest)) => (h, rest.strip_prefix(':')),
        _ => (authority, None),
    };
    if let Some(p) = port {
        check_port(p)?;
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return bad(AuthorityFlaw::Empty);
    }
    if empty_label || in_host & H_OTHER != 0 {
        return bad(AuthorityFlaw::BadChar);
    }
    Ok(host)
}

/// `[v6]` or `[v6]:port`; the brackets stay, as policies name such hosts.
fn bracketed_host(authority: &str) -> Result<&str, HttpError> {
    let bad = |a| Err(HttpError::BadAuthority(a));
    let rest = authority.get(1..).unwrap_or_default();
    let Some((v6, after)) = split_once_ascii(rest, b']') else {
        return bad(AuthorityFlaw::BadChar);
    };
    if v6.is_empty()
        || !v6
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    {
        return bad(AuthorityFlaw::BadChar);
    }
    match after {
        "" => {}
        p => match p.strip_prefix(':') {
            Some(p) => check_port(p)?,
            None => return bad(AuthorityFlaw::BadChar),
        },
    }
    Ok(authority.get(..v6.len() + 2).unwrap_or(authority))
}

fn check_port(p: &str) -> Result<(), HttpError> {
    let ok = !p.is_empty()
        && p.len() <= 5
        && p.bytes().all(|b| b.is_ascii_digit())
        && p.parse::<u32>().is_ok_and(|n| n <= 65535);
    if ok {
        Ok(())
    } else {
        Err(HttpError::BadAuthority(AuthorityFlaw::BadPort))
    }
}

/// A `host` header, if one is visible beside `:authority`, must name the
/// same host (Envoy folds HTTP/1 `Host` into `:authority`; other hosts may
/// not).
pub fn check_host_header<H: Headers + ?Sized>(headers: &H, host: &str) -> Result<(), HttpError> {
    match header(headers, "host") {
        HeaderValue::Missing => Ok(()),
        HeaderValue::Many => Err(HttpError::RepeatedHeader("host")),
        HeaderValue::One(v) => match host_of(v.trim_ascii()) {
            Ok(h) if h.eq_ignore_ascii_case(host) => Ok(()),
            Ok(_) => Err(HttpError::HostMismatch),
            Err(e) => Err(e),
        },
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Splits `:path` into path and query after checking both are in normal
/// form.
pub fn split_path(target: &str) -> Result<(&str, Option<&str>), HttpError> {
    let bad = |p| Err(HttpError::BadPath(p));
    if target.bytes().any(|b| b == b'#') {
        return bad(PathFlaw::Fragment);
    }
    let (path, query) = match target.bytes().position(|b| b == b'?') {
        Some(i) => (target.get(..i).unwrap_or_default(), target.get(i + 1..)),
        None => (target, None),
    };
    if !path.starts_with('/') {
        return bad(PathFlaw::NotOriginForm);
    }
    let raw = path.as_bytes();
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        match b {
            b'\\' => return bad(PathFlaw::Backslash),
            b';' => return bad(PathFlaw::Semicolon),
            b'%' => match pct_at(raw, i) {
                None => return bad(PathFlaw::BadPercent),
                Some(b'/' | b'\\') => return bad(PathFlaw::EncodedSlash),
                Some(c) if c < 0x20 || c == 0x7f => return bad(PathFlaw::BadByte),
                Some(_) => i += 2,
            },
            b if b <= 0x20 || b >= 0x7f => return bad(PathFlaw::BadByte),
            _ => {}
        }
        i += 1;
    }
    let mut segs = split_ascii(path, b'/').skip(1).peekable();
    while let Some(seg) = segs.next() {
        let last = segs.peek().is_none();
        if seg.is_empty() && !last {
            return bad(PathFlaw::EmptySegment);
        }
        let mut dots = 0usize;
        let mut other = false;
        for c in PathBytes::new(seg) {
            if c == b'.' {
                dots += 1;
            } else {
                other = true;
                break;
            }
        }
        if !other && (dots == 1 || dots == 2) {
            return bad(PathFlaw::DotSegment);
        }
    }
    if let Some(q) = query {
        let qb = q.as_bytes();
        let mut i = 0;
        while let Some(&b) = qb.get(i) {
            match b {
                b'%' if pct_at(qb, i).is_none() => return bad(PathFlaw::BadPercent),
                b if b <= 0x20 || b >= 0x7f => return bad(PathFlaw::BadByte),
                _ => {}
            }
            i += 1;
        }
    }
    Ok((path, query))
}

/// The bytes of a path as routes match them: `%XX` of an unreserved
/// character becomes the character; every other escape stays as written.
#[derive(Debug, Clone)]
pub struct PathBytes<'a> {
    raw: &'a [u8],
    pos: usize,
}

impl<'a> PathBytes<'a> {
    pub fn new(path: &'a str) -> Self {
        PathBytes {
            raw: path.as_bytes(),
            pos: 0,
        }
    }
}

impl Iterator for PathBytes<'_> {
    type Item = u8;
    fn next(&mut self) -> Option<u8> {
        let b = *self.raw.get(self.pos)?;
        if b == b'%' {
            if let Some(c) = pct_at(self.raw, self.pos).filter(|&c| is_unreserved(c)) {
                self.pos += 3;
                return Some(c);
            }
        }
        self.pos += 1;
        Some(b)
    }
}

/// How a body is encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
}

/// Headers that decide how the body is read: at most one each, a content
/// coding the tool accepts (`gzip` only if declared), and a media type
/// the tool reads.
pub fn check_body_headers<H: Headers + ?Sized>(
    headers: &H,
    kind: BodyKind,
    accept_gzip: bool,
    has_body: bool,
) -> Result<Coding, HttpError> {
    // Header values are trimmed of ASCII white space only: what HTTP calls
    // white space around a value (a Unicode space is part of the value).
    let coding = match header(headers, "content-encoding") {
        HeaderValue::Missing => Coding::Identity,
        HeaderValue::Many => return Err(HttpError::RepeatedHeader("content-encoding")),
        HeaderValue::One(v) => match v.trim_ascii() {
            v if v.eq_ignore_ascii_case("identity") => Coding::Identity,
            // `x-gzip` is the same coding (RFC 9110 section 8.4.1.3).
            v if accept_gzip
                && (v.eq_ignore_ascii_case("gzip") || v.eq_ignore_ascii_case("x-gzip")) =>
            {
                Coding::Gzip
            }
            _ => return Err(HttpError::EncodedBody),
        },
    };
    let ct = match header(headers, "content-type") {
        HeaderValue::Many => return Err(HttpError::RepeatedHeader("content-type")),
        // Proxies join a repeated header with commas; a media type has
        // none. Known before the body arrives.
        HeaderValue::One(v) if v.bytes().any(|b| b == b',') => {
            return Err(HttpError::RepeatedHeader("content-type"))
        }
        HeaderValue::Missing => None,
        HeaderValue::One(v) => Some(v),
    };
    if !has_body || kind == BodyKind::None {
        return Ok(coding);
    }
    let Some(ct) = ct else {
        return Err(HttpError::MissingContentType);
    };
    // The media type nearly every JSON tool call carries, with nothing to
    // split or trim.
    if kind == BodyKind::Json && ct.eq_ignore_ascii_case("application/json") {
        return Ok(coding);
    }
    let mut parts = split_ascii(ct, b';');
    let media = parts.next().unwrap_or_default().trim_ascii();
    let (ty, sub) = split_once_ascii(media, b'/').unwrap_or((media, ""));
    if ty.eq_ignore_ascii_case("multipart") {
        return Err(HttpError::Multipart);
    }
    let ok = match kind {
        BodyKind::Json => {
            ty.eq_ignore_ascii_case("application")
                && (sub.eq_ignore_ascii_case("json")
                    || sub.len() > 5
                        && sub
                            .get(sub.len() - 5..)
                            .is_some_and(|s| s.eq_ignore_ascii_case("+json")))
        }
        BodyKind::Form => {
            ty.eq_ignore_ascii_case("application")
                && sub.eq_ignore_ascii_case("x-www-form-urlencoded")
        }
        BodyKind::None => true,
    };
    if !ok {
        return Err(HttpError::WrongContentType { want: kind });
    }
    for p in parts {
        let (k, v) = split_once_ascii(p, b'=').unwrap_or((p, ""));
        if k.trim_ascii().eq_ignore_ascii_case("charset") {
            let v = v.trim_ascii();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            if !(v.eq_ignore_ascii_case("utf-8") || v.eq_ignore_ascii_case("utf8")) {
                return Err(HttpError::Charset);
            }
        }
    }
    Ok(coding)
}

/// The parts of an HTTP request the evaluator reads.
pub struct Request<'r, H: ?Sized> {
    pub method: &'r str,
    /// `:authority` / `Host`, possibly with a port.
    pub authority: &'r str,
    /// Path with query string.
    pub path: &'r str,
    pub headers: &'r H,
    /// `None`: the body has not arrived yet (headers phase).
    pub body: Option<&'r [u8]>,
}

#[cfg(test)]
mod tests {
    use super::*;

    use alloc::string::ToString;
    use alloc::vec::Vec;

    #[test]
    fn split_ascii_is_str_split() {
        for s in ["", "/", "a", "/v1/x", "a//b/", "//", "x.y.z.", ";a=b; c"] {
            for sep in [b'/', b'.', b';', b'='] {
                let ours: Vec<&str> = split_ascii(s, sep).collect();
                let std: Vec<&str> = s.split(char::from(sep)).collect();
                assert_eq!(ours, std, "{s:?} on {}", char::from(sep));
                assert_eq!(split_once_ascii(s, sep), s.split_once(char::from(sep)));
            }
        }
    }

    /// `host_of` as it was written first, check by check: the law below
    /// holds the one-pass version to it.
    fn reference_host_of(authority: &str) -> Result<&str, HttpError> {
        let bad = |a| Err(HttpError::BadAuthority(a));
        if authority.is_empty() {
            return bad(AuthorityFlaw::Empty);
        }
        // Byte loops: these strings are short, and `str::contains(char)`
        // costs more to set up than to run here.
        if authority.bytes().any(|b| b == b',') {
            return bad(AuthorityFlaw::Several);
        }
        if authority.bytes().any(|b| b == b'@') {
            return bad(AuthorityFlaw::Userinfo);
        }
        if !authority.is_ascii() {
            return bad(AuthorityFlaw::NonAscii);
        }
        let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
            let Some((v6, after)) = rest.split_once(']') else {
                return bad(AuthorityFlaw::BadChar);
            };
            if v6.is_empty()
                || !v6
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
            {
                return bad(AuthorityFlaw::BadChar);
            }
            let port = match after {
                "" => None,
                p => match p.strip_prefix(':') {
                    Some(p) => Some(p),
                    None => return bad(AuthorityFlaw::BadChar),
                },
            };
            // The brackets stay: `[::1]` is how policies name it too.
            let end = v6.len() + 2;
            (authority.get(..end).unwrap_or(authority), port)
        } else {
            match split_once_ascii(authority, b':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if let Some(p) = port {
            let ok = !p.is_empty()
                && p.len() <= 5
                && p.bytes().all(|b| b.is_ascii_digit())
                && p.parse::<u32>().is_ok_and(|n| n <= 65535);
            if !ok {
                return bad(AuthorityFlaw::BadPort);
            }
        }
        if host.starts_with('[') {
            return Ok(host);
        }
        let host = host.strip_suffix('.').unwrap_or(host);
        if host.is_empty() {
            return bad(AuthorityFlaw::Empty);
        }
        let labels_ok = split_ascii(host, b'.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
        if !labels_ok {
            return bad(AuthorityFlaw::BadChar);
        }
        Ok(host)
    }

    #[test]
    fn host_of_is_the_check_by_check_definition() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};
        let alphabet = prop::sample::select(alloc::vec![
            'a', 'Z', '0', '9', '-', '_', '.', ':', '[', ']', '@', ',', 'ü', ' ', '!', '/',
        ]);
        let strings = prop::collection::vec(alphabet, 0..14)
            .prop_map(|cs| cs.into_iter().collect::<alloc::string::String>());
        let mut runner = TestRunner::new(Config {
            cases: 20_000,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&strings, |a| {
                prop_assert_eq!(host_of(&a), reference_host_of(&a), "{:?}", a);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn hosts() {
        assert_eq!(host_of("api.stripe.com"), Ok("api.stripe.com"));
        assert_eq!(host_of("API.Stripe.COM:443"), Ok("API.Stripe.COM"));
        assert_eq!(host_of("api.stripe.com."), Ok("api.stripe.com"));
        assert_eq!(host_of("api.stripe.com.:8443"), Ok("api.stripe.com"));
        assert_eq!(host_of("[::1]:8080"), Ok("[::1]"));
        assert_eq!(host_of("10.0.0.1"), Ok("10.0.0.1"));
        assert_eq!(
            host_of("xn--bcher-kva.example"),
            Ok("xn--bcher-kva.example")
        );
        let flaw = |a| Err(HttpError::BadAuthority(a));
        assert_eq!(host_of(""), flaw(AuthorityFlaw::Empty));
        assert_eq!(host_of("."), flaw(AuthorityFlaw::Empty));
        assert_eq!(host_of(":443"), flaw(AuthorityFlaw::Empty));
        assert_eq!(
            host_of("user@api.stripe.com"),
            flaw(AuthorityFlaw::Userinfo)
        );
        assert_eq!(
            host_of("api.stripe.com@evil"),
            flaw(AuthorityFlaw::Userinfo)
        );
        assert_eq!(host_of("bücher.example"), flaw(AuthorityFlaw::NonAscii));
        assert_eq!(
            host_of("api.stripe.com:99999"),
            flaw(AuthorityFlaw::BadPort)
        );
        assert_eq!(host_of("api.stripe.com:"), flaw(AuthorityFlaw::BadPort));
        assert_eq!(host_of("api.stripe.com:44a"), flaw(AuthorityFlaw::BadPort));
        assert_eq!(host_of("a:1:2"), flaw(AuthorityFlaw::BadPort));
        assert_eq!(host_of("api..stripe.com"), flaw(AuthorityFlaw::BadChar));
        assert_eq!(host_of("api.stripe.com.."), flaw(AuthorityFlaw::BadChar));
        assert_eq!(host_of("api stripe"), flaw(AuthorityFlaw::BadChar));
        assert_eq!(host_of("evil/x"), flaw(AuthorityFlaw::BadChar));
        assert_eq!(host_of("[::1"), flaw(AuthorityFlaw::BadChar));
        assert_eq!(host_of("[::1]x"), flaw(AuthorityFlaw::BadChar));
    }

    #[test]
    fn host_header_must_agree() {
        let h = [("host", "api.stripe.com:443")];
        assert_eq!(check_host_header(&h[..], "API.stripe.com"), Ok(()));
        let h = [("host", "evil.example")];
        assert_eq!(
            check_host_header(&h[..], "api.stripe.com"),
            Err(HttpError::HostMismatch)
        );
        let h = [("host", "a"), ("host", "a")];
        assert_eq!(
            check_host_header(&h[..], "a"),
            Err(HttpError::RepeatedHeader("host"))
        );
        let none: [(&str, &str); 0] = [];
        assert_eq!(check_host_header(&none[..], "a"), Ok(()));
    }

    #[test]
    fn paths() {
        assert_eq!(
            split_path("/v1/payment_intents?a=1&b=2"),
            Ok(("/v1/payment_intents", Some("a=1&b=2")))
        );
        assert_eq!(split_path("/"), Ok(("/", None)));
        assert_eq!(split_path("/v1/x/"), Ok(("/v1/x/", None)));
        assert_eq!(split_path("/v1/%70ay"), Ok(("/v1/%70ay", None)));
        assert_eq!(split_path("/a/b.c/..d/...",), Ok(("/a/b.c/..d/...", None)));
        let flaw = |p| Err(HttpError::BadPath(p));
        assert_eq!(split_path(""), flaw(PathFlaw::NotOriginForm));
        assert_eq!(split_path("*"), flaw(PathFlaw::NotOriginForm));
        assert_eq!(split_path("http://a/b"), flaw(PathFlaw::NotOriginForm));
        assert_eq!(split_path("/a#b"), flaw(PathFlaw::Fragment));
        assert_eq!(split_path("/a?x=1#b"), flaw(PathFlaw::Fragment));
        assert_eq!(split_path("/v1//x"), flaw(PathFlaw::EmptySegment));
        assert_eq!(split_path("//x"), flaw(PathFlaw::EmptySegment));
        assert_eq!(split_path("/v1/./x"), flaw(PathFlaw::DotSegment));
        assert_eq!(split_path("/v1/x/.."), flaw(PathFlaw::DotSegment));
        assert_eq!(split_path("/v1/%2e%2E/x"), flaw(PathFlaw::DotSegment));
        assert_eq!(split_path("/v1/.%2e/x"), flaw(PathFlaw::DotSegment));
        assert_eq!(split_path("/v1/a%2Fb"), flaw(PathFlaw::EncodedSlash));
        assert_eq!(split_path("/v1/a%5cb"), flaw(PathFlaw::EncodedSlash));
        assert_eq!(split_path("/v1\\x"), flaw(PathFlaw::Backslash));
        assert_eq!(split_path("/v1/x;a=1"), flaw(PathFlaw::Semicolon));
        assert_eq!(split_path("/v1/a b"), flaw(PathFlaw::BadByte));
        assert_eq!(split_path("/v1/\u{e9}"), flaw(PathFlaw::BadByte));
        assert_eq!(split_path("/v1/%00"), flaw(PathFlaw::BadByte));
        assert_eq!(split_path("/v1/%zz"), flaw(PathFlaw::BadPercent));
        assert_eq!(split_path("/v1/%4"), flaw(PathFlaw::BadPercent));
        assert_eq!(split_path("/v1?a=%z"), flaw(PathFlaw::BadPercent));
        assert_eq!(split_path("/v1?a=b c"), flaw(PathFlaw::BadByte));
    }

    #[test]
    fn path_bytes_decode_only_unreserved() {
        let d: Vec<u8> = PathBytes::new("/v1/%70ay%2fx%40y%7E%25").collect();
        assert_eq!(d, b"/v1/pay%2fx%40y~%25");
    }

    #[test]
    fn body_headers() {
        let ok = |h: &[(&str, &str)], k| check_body_headers(h, k, false, true).map(|_| ());
        assert_eq!(
            ok(&[("content-type", "application/json")], BodyKind::Json),
            Ok(())
        );
        assert_eq!(
            ok(
                &[("content-type", "Application/JSON; charset=UTF-8")],
                BodyKind::Json
            ),
            Ok(())
        );
        assert_eq!(
            ok(
                &[("content-type", "application/merge-patch+json")],
                BodyKind::Json
            ),
            Ok(())
        );
        assert_eq!(
            ok(
                &[("content-type", "application/x-www-form-urlencoded")],
                BodyKind::Form
            ),
            Ok(())
        );
        assert_eq!(ok(&[], BodyKind::None), Ok(()));
        assert_eq!(
            ok(&[("content-type", "text/plain")], BodyKind::Json),
            Err(HttpError::WrongContentType {
                want: BodyKind::Json
            })
        );
        assert_eq!(
            ok(&[("content-type", "application/json")], BodyKind::Form),
            Err(HttpError::WrongContentType {
                want: BodyKind::Form
            })
        );
        assert_eq!(ok(&[], BodyKind::Json), Err(HttpError::MissingContentType));
        assert_eq!(
            ok(
                &[(
                    "content-type",
                    "application/x-www-form-urlencoded,application/json"
                )],
                BodyKind::Form
            ),
            Err(HttpError::RepeatedHeader("content-type"))
        );
        assert_eq!(
            host_of("api.stripe.com,evil.example"),
            Err(HttpError::BadAuthority(AuthorityFlaw::Several))
        );
        assert_eq!(
            ok(
                &[("content-type", "multipart/form-data; boundary=x")],
                BodyKind::Form
            ),
            Err(HttpError::Multipart)
        );
        assert_eq!(
            ok(
                &[("content-type", "application/json; charset=utf-16")],
                BodyKind::Json
            ),
            Err(HttpError::Charset)
        );
        assert_eq!(
            ok(
                &[
                    ("content-type", "application/json"),
                    ("content-type", "text/plain")
                ],
                BodyKind::Json
            ),
            Err(HttpError::RepeatedHeader("content-type"))
        );
        assert_eq!(
            ok(
                &[
                    ("content-type", "application/json"),
                    ("content-encoding", "gzip")
                ],
                BodyKind::Json
            ),
            Err(HttpError::EncodedBody)
        );
        assert_eq!(
            ok(
                &[
                    ("content-type", "application/json"),
                    ("content-encoding", "identity")
                ],
                BodyKind::Json
            ),
            Ok(())
        );
        // White space around values and parameters is HTTP's (space, tab);
        // a Unicode space is part of the value, which then names no media
        // type or charset the tool reads.
        let json = |v| ok(&[("content-type", v)], BodyKind::Json);
        assert_eq!(json(" \tAPPLICATION/JSON\t "), Ok(()));
        assert_eq!(json("application/json ; charset = \"utf-8\""), Ok(()));
        assert_eq!(
            json("application/json\u{a0}"),
            Err(HttpError::WrongContentType {
                want: BodyKind::Json
            })
        );
        assert_eq!(json("\u{2003}application/json"), json("text/plain"));
        assert_eq!(
            json("application/json; charset=\u{a0}utf-8"),
            Err(HttpError::Charset)
        );
        assert_eq!(
            json("application/json; charset=\"\"utf-8\"\""),
            Err(HttpError::Charset)
        );
        assert_eq!(
            ok(
                &[
                    ("content-type", "application/json"),
                    ("content-encoding", "\u{a0}identity")
                ],
                BodyKind::Json
            ),
            Err(HttpError::EncodedBody)
        );
        // No body: the media type does not matter, an encoding still does.
        assert_eq!(
            check_body_headers(&[][..] as &[(&str, &str)], BodyKind::Json, false, false),
            Ok(Coding::Identity)
        );
        assert_eq!(
            check_body_headers(
                &[("content-encoding", "br")][..],
                BodyKind::None,
                false,
                false
            ),
            Err(HttpError::EncodedBody)
        );
        // gzip only where the tool declares it; other codings never.
        let gz = [
            ("content-type", "application/json"),
            ("content-encoding", "GZIP"),
        ];
        assert_eq!(
            check_body_headers(&gz[..], BodyKind::Json, true, true),
            Ok(Coding::Gzip)
        );
        assert_eq!(
            check_body_headers(&gz[..], BodyKind::Json, false, true),
            Err(HttpError::EncodedBody)
        );
        let br = [
            ("content-type", "application/json"),
            ("content-encoding", "br"),
        ];
        assert_eq!(
            check_body_headers(&br[..], BodyKind::Json, true, true),
            Err(HttpError::EncodedBody)
        );
        let two = [
            ("content-type", "application/json"),
            ("content-encoding", "gzip, gzip"),
        ];
        assert_eq!(
            check_body_headers(&two[..], BodyKind::Json, true, true),
            Err(HttpError::EncodedBody)
        );
    }

    #[test]
    fn reasons_name_the_flaw() {
        let r = HttpError::BadPath(PathFlaw::DotSegment).to_string();
        assert_eq!(r, "path is not in normal form: `.` or `..` segment");
        let r = HttpError::WrongContentType {
            want: BodyKind::Form,
        }
        .to_string();
        assert!(r.contains("application/x-www-form-urlencoded"), "{r}");
    }
}
