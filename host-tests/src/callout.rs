//! `proxy_http_call` as Envoy performs it: the request goes to the cluster's
//! address over HTTP/1.1 on a background thread, and what the filter later
//! sees in `proxy_on_http_call_response` has the shapes Envoy's async HTTP
//! client gives it.
//!
//! What Envoy does (read in its source: `source/extensions/common/wasm/context.cc`,
//! `Context::httpCall`, `onHttpCallSuccess`, `onHttpCallFailure`;
//! `source/common/http/async_client_impl.{h,cc}`, `AsyncStreamImpl::sendLocalReply`;
//! `source/common/router/router.cc`, `onResponseTimeout` / `onUpstreamAbort`;
//! proxy-wasm-cpp-host `src/exports.cc`, `http_call`):
//! - The hostcall answers `BadArgument` for a negative timeout, an unknown
//!   cluster, or headers without `:path`, `:method` or `:authority` (in that
//!   order); otherwise `Ok` and a token. The call is made on the ROOT
//!   context (`contextOrEffectiveContext()->root_context()`), so the
//!   response arrives as `proxy_on_http_call_response(root_context_id, ...)`
//!   whichever context dispatched it; the SDK maps the token back to its
//!   context and calls `proxy_set_effective_context`.
//! - The async client runs Envoy's router, and the router's local replies
//!   become the response while no response headers have arrived
//!   (`AsyncStreamImpl::sendLocalReply` encodes them as the response):
//!   the timeout (timer from the dispatch, timeout 0 = none) is a 504 with
//!   body `upstream request timeout`; a refused connection is a 503 with
//!   body `upstream connect error or disconnect/reset before headers. reset
//!   reason: remote connection failure, transport failure reason: delayed
//!   connect error: Connection refused`; a connection closed before the
//!   response headers is a 503 `... reset reason: connection termination`.
//!   Local replies carry `:status`, `content-length` and
//!   `content-type: text/plain`.
//! - Only after the response headers arrived does a failure (the upstream
//!   resets or closes mid-body, or the timeout fires) reset the async
//!   stream: `onHttpCallFailure` calls back with 0 headers, 0 body bytes and
//!   no response to read, and the root context's `proxy_get_status` says
//!   `BrokenConnection` (11) with message `reset`.
//! - Response trailers over HTTP/1.1 are dropped (Envoy's codec default), so
//!   the callback always sees 0 trailers; request trailers are not sent.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How long a call with timeout 0 (Envoy: no timeout) may take here, so a
/// silent upstream cannot hang a test forever.
pub const NO_TIMEOUT_CAP: Duration = Duration::from_secs(60);

/// One `proxy_http_call` the filter made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall {
    /// The token handed to the filter (0 when the call was refused).
    pub token: u32,
    /// What the hostcall returned (`abi::status`).
    pub returned: i32,
    /// The effective context when the filter dispatched it.
    pub context_id: u32,
    pub cluster: String,
    /// The headers as the filter gave them, names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
    pub timeout_ms: u32,
    /// What the filter was handed, once delivered.
    pub response: Option<CallResponse>,
}

impl HttpCall {
    /// A request header the filter sent (`:path`, ...).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What `proxy_on_http_call_response` delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallResponse {
    /// `:status` first, then the response headers in order, names lowercase.
    /// Empty for a reset.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    /// Envoy's `onHttpCallFailure`: nothing to read, `proxy_get_status`
    /// says `BrokenConnection` / `reset`.
    pub reset: bool,
}

impl CallResponse {
    /// `:status`, if there is a response.
    pub fn status(&self) -> Option<u32> {
        self.header(":status")?.parse().ok()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A local reply of Envoy's router, as the async client hands it on.
    pub fn local_reply(code: u32, body: &str) -> CallResponse {
        CallResponse {
            headers: vec![
                (":status".into(), code.to_string().into_bytes()),
                ("content-length".into(), body.len().to_string().into_bytes()),
                ("content-type".into(), b"text/plain".to_vec()),
            ],
            body: body.as_bytes().to_vec(),
            reset: false,
        }
    }

    pub fn reset() -> CallResponse {
        CallResponse {
            headers: Vec::new(),
            body: Vec::new(),
            reset: true,
        }
    }
}

/// Envoy's router: the global timeout fired before the response headers.
pub const TIMEOUT_BODY: &str = "upstream request timeout";
/// Envoy's router: the connection was refused.
pub const REFUSED_BODY: &str = "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure, transport failure reason: delayed connect error: Connection refused";
/// Envoy's router: the upstream closed before the response headers.
pub const TERMINATION_BODY: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: connection termination";

fn timeout_reply() -> CallResponse {
    CallResponse::local_reply(504, TIMEOUT_BODY)
}

/// The HTTP/1.1 request Envoy's codec would write: the request line from
/// `:method` and `:path`, `host` from `:authority`, the other headers in
/// order, `content-length` for a body; `connection: close` because this
/// host opens one connection per call.
fn encode_request(headers: &[(String, Vec<u8>)], body: &[u8]) -> Vec<u8> {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map_or(&[][..], |(_, v)| v.as_slice())
    };
    let mut out = Vec::new();
    out.extend_from_slice(get(":method"));
    out.push(b' ');
    out.extend_from_slice(get(":path"));
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(get(":authority"));
    out.extend_from_slice(b"\r\n");
    for (k, v) in headers {
        let skip = k.starts_with(':')
            || ["host", "content-length", "connection", "transfer-encoding"].contains(&k.as_str());
        if skip {
            continue;
        }
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
    out.extend_from_slice(body);
    out
}

/// A parsed response head: status, headers (lowercase names), head length.
type Head = (u32, Vec<(String, Vec<u8>)>, usize);

/// Parses the response head if `buf` holds all of it; 1xx heads are
/// skipped (Envoy's async client swallows them).
fn parse_head(buf: &[u8]) -> Option<std::result::Result<Head, ()>> {
    let mut start = 0;
    loop {
        let rest = buf.get(start..)?;
        let end = rest.windows(4).position(|w| w == b"\r\n\r\n")?;
        let text = String::from_utf8_lossy(rest.get(..end)?).into_owned();
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        let Some(code) = parts.next().and_then(|c| c.parse::<u32>().ok()) else {
            return Some(Err(()));
        };
        if !version.starts_with("HTTP/1.") {
            return Some(Err(()));
        }
        let head_len = start + end + 4;
        if (100..200).contains(&code) && code != 101 {
            start = head_len;
            continue;
        }
        let mut headers = vec![(":status".to_string(), code.to_string().into_bytes())];
        for line in lines {
            let Some((k, v)) = line.split_once(':') else {
                return Some(Err(()));
            };
            headers.push((k.trim().to_ascii_lowercase(), v.trim().as_bytes().to_vec()));
        }
        return Some(Ok((code, headers, head_len)));
    }
}

/// How the body after the head ends.
enum Framing {
    Length(usize),
    Chunked,
    Close,
}

/// The body of a chunked message if `buf` holds all of it (trailers are
/// dropped); `Err` when malformed.
fn dechunk(buf: &[u8]) -> Option<std::result::Result<Vec<u8>, ()>> {
    let mut body = Vec::new();
    let mut p = 0;
    loop {
        let rest = buf.get(p..)?;
        let eol = rest.windows(2).position(|w| w == b"\r\n")?;
        let line = String::from_utf8_lossy(rest.get(..eol)?).into_owned();
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            return Some(Err(()));
        };
        p += eol + 2;
        if size == 0 {
            // Trailers up to an empty line.
            let rest = buf.get(p..)?;
            if rest.starts_with(b"\r\n") || rest.windows(4).any(|w| w == b"\r\n\r\n") {
                return Some(Ok(body));
            }
            return None;
        }
        let chunk = buf.get(p..p.checked_add(size)?)?;
        body.extend_from_slice(chunk);
        p += size;
        if buf.get(p..p + 2)? != b"\r\n" {
            return Some(Err(()));
        }
        p += 2;
    }
}

/// Performs one call to `addr` and returns what Envoy would hand the
/// filter. Never takes much longer than `timeout`.
pub fn perform(
    addr: SocketAddr,
    method_is_head: bool,
    request: &[(String, Vec<u8>)],
    body: &[u8],
    timeout: Duration,
) -> CallResponse {
    let deadline = Instant::now() + timeout;
    let mut stream = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return timeout_reply(),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return CallResponse::local_reply(503, REFUSED_BODY)
        }
        Err(_) => return CallResponse::local_reply(503, TERMINATION_BODY),
    };
    let left = |d: Instant| d.saturating_duration_since(Instant::now());
    if stream
        .set_write_timeout(Some(left(deadline).max(Duration::from_millis(1))))
        .is_err()
        || stream.write_all(&encode_request(request, body)).is_err()
    {
        return if left(deadline).is_zero() {
            timeout_reply()
        } else {
            CallResponse::local_reply(503, TERMINATION_BODY)
        };
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    // `None` until the head is complete.
    let mut head: Option<Head> = None;
    loop {
        let remaining = left(deadline);
        // `None`: out of time (or the socket cannot be given a timeout).
        let eof = if remaining.is_zero() || stream.set_read_timeout(Some(remaining)).is_err() {
            None
        } else {
            match stream.read(&mut chunk) {
                Ok(0) => Some(true),
                Ok(n) => {
                    buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
                    Some(false)
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    None
                }
                // A reset: like a close, judged below by how far we got.
                Err(_) => Some(true),
            }
        };
        if head.is_none() {
            match parse_head(&buf) {
                Some(Ok(h)) => head = Some(h),
                Some(Err(())) => return CallResponse::local_reply(503, TERMINATION_BODY),
                None => match eof {
                    None => return timeout_reply(),
                    Some(true) => return CallResponse::local_reply(503, TERMINATION_BODY),
                    Some(false) => continue,
                },
            }
        }
        let Some((code, headers, head_len)) = &head else {
            continue;
        };
        let value = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| String::from_utf8_lossy(v).to_ascii_lowercase())
        };
        let framing = if method_is_head || *code == 204 || *code == 304 {
            Framing::Length(0)
        } else if value("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            Framing::Chunked
        } else if let Some(n) = value("content-length").and_then(|v| v.trim().parse().ok()) {
            Framing::Length(n)
        } else {
            Framing::Close
        };
        let rest = buf.get(*head_len..).unwrap_or_default();
        let done = match framing {
            Framing::Length(n) => rest.get(..n).map(|b| Ok(b.to_vec())),
            Framing::Chunked => dechunk(rest),
            Framing::Close => (eof == Some(true)).then(|| Ok(rest.to_vec())),
        };
        match (done, eof) {
            (Some(Ok(body)), _) => {
                return CallResponse {
                    headers: headers.clone(),
                    body,
                    reset: false,
                }
            }
            // Headers arrived, then the body failed, ended early or took
            // too long: the async stream is reset.
            (Some(Err(())), _) | (None, Some(true) | None) => return CallResponse::reset(),
            (None, Some(false)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_and_chunked_bodies_parse() {
        let (code, headers, len) =
            parse_head(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-A: b\r\n\r\nrest")
                .unwrap()
                .unwrap();
        assert_eq!(code, 200);
        assert_eq!(headers[1], ("x-a".to_string(), b"b".to_vec()));
        assert_eq!(len, 52);
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n").is_none());
        assert!(parse_head(b"garbage\r\n\r\n").unwrap().is_err());
        assert_eq!(
            dechunk(b"2\r\nok\r\n1\r\n!\r\n0\r\n\r\n"),
            Some(Ok(b"ok!".to_vec()))
        );
        assert_eq!(dechunk(b"2\r\nok\r\n0\r\n"), None);
        assert_eq!(dechunk(b"zz\r\n"), Some(Err(())));
    }

    #[test]
    fn the_request_has_envoys_http1_shape() {
        let wire = encode_request(
            &[
                (":method".into(), b"POST".to_vec()),
                (":path".into(), b"/v1/x".to_vec()),
                (":authority".into(), b"control".to_vec()),
                ("x-a".into(), b"1".to_vec()),
                ("content-length".into(), b"99".to_vec()),
            ],
            b"hi",
        );
        assert_eq!(
            String::from_utf8(wire).unwrap(),
            "POST /v1/x HTTP/1.1\r\nhost: control\r\nx-a: 1\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi"
        );
    }
}
