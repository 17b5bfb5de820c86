//! A corpus case as bytes on the wire, and a raw HTTP/1.1 client that
//! sends exactly those bytes.
//!
//! Real clients normalize (`ureq` and `http::Uri` drop fragments, some
//! merge `//`, resolve `.` segments, refuse odd bytes) and so cannot send
//! the requests a gate must survive. [`send_http1`] writes the request
//! itself on a [`TcpStream`]:
//!
//! - the request line with the target as written in the case: origin-form
//!   (`/v1//x;y=1?q#frag`, byte for byte), or absolute-form (the url as
//!   written) when the case gives a `host` header;
//! - `host: <url authority>` first unless the case gives `host` itself,
//!   then every header in order, repeats included, values byte for byte
//!   (so a value with `\r\n ` is an obs-fold on the wire);
//! - `content-length` for a body unless the case gives one or asks for
//!   `transfer-encoding: chunked`; a chunked body goes as one-byte chunks,
//!   each written and flushed on its own with `TCP_NODELAY`.
//!
//! The response is parsed the way a client must: interim 1xx responses
//! skipped, headers with repeats, the body by `content-length`, chunked,
//! or until the connection closes.

use crate::client::Resp;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// How long one exchange may take.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// A request as it goes on the wire, before a protocol is chosen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WireRequest {
    pub method: String,
    /// The case's url, exactly as written.
    pub url: String,
    /// `https` for `https://...`; `http` when the url has none.
    pub scheme: String,
    /// The url's authority: `Host` / `:authority`.
    pub authority: String,
    /// Path, query and fragment exactly as written (`/` for a missing
    /// path): the origin-form target and `:path`.
    pub path: String,
    /// In order, repeats included, `host` included when the case gives it.
    pub headers: Vec<(String, String)>,
    /// `None`: no body at all (no `content-length`).
    pub body: Option<Vec<u8>>,
}

impl WireRequest {
    /// Whether header `name` is present.
    pub fn has(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(name))
    }

    /// `transfer-encoding` names `chunked`: the body goes chunked.
    pub fn chunked(&self) -> bool {
        self.headers.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
        })
    }

    /// The request-target of the HTTP/1.1 request line: the url as written
    /// (absolute-form) when the case gives its own `host`, else the path
    /// (origin-form).
    pub fn target(&self) -> &str {
        if self.has("host") {
            &self.url
        } else {
            &self.path
        }
    }

    /// The request head, byte for byte.
    pub fn http1_head(&self) -> Vec<u8> {
        let mut head = Vec::with_capacity(256);
        let line = |head: &mut Vec<u8>, k: &str, v: &str| {
            head.extend_from_slice(k.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(v.as_bytes());
            head.extend_from_slice(b"\r\n");
        };
        head.extend_from_slice(self.method.as_bytes());
        head.push(b' ');
        head.extend_from_slice(self.target().as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        if !self.has("host") {
            line(&mut head, "host", &self.authority);
        }
        for (k, v) in &self.headers {
            line(&mut head, k, v);
        }
        if let Some(b) = &self.body {
            if !self.chunked() && !self.has("content-length") {
                line(&mut head, "content-length", &b.len().to_string());
            }
        }
        head.extend_from_slice(b"\r\n");
        head
    }
}

/// Why an exchange produced no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoResponse {
    /// The peer closed or reset the connection (HTTP/1.1) or the stream
    /// (HTTP/2: `RST_STREAM`, `GOAWAY`) before a complete response.
    Reset(String),
    /// Anything else: connect failure, timeout, a client-side refusal.
    Failed(String),
}

impl std::fmt::Display for NoResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoResponse::Reset(m) => write!(f, "reset before a response: {m}"),
            NoResponse::Failed(m) => write!(f, "{m}"),
        }
    }
}

/// Sends `req` over a new HTTP/1.1 connection to `127.0.0.1:port` and
/// reads one response.
pub fn send_http1(port: u16, req: &WireRequest) -> Result<Resp, NoResponse> {
    let failed = |what: &str, e: std::io::Error| NoResponse::Failed(format!("{what}: {e}"));
    let stream = TcpStream::connect(("127.0.0.1", port))
        .map_err(|e| failed(&format!("connect 127.0.0.1:{port}"), e))?;
    stream.set_nodelay(true).map_err(|e| failed("nodelay", e))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(|e| failed("read timeout", e))?;
    stream
        .set_write_timeout(Some(TIMEOUT))
        .map_err(|e| failed("write timeout", e))?;
    let mut writer = stream.try_clone().map_err(|e| failed("clone", e))?;
    // Write on one thread and read on this one: Envoy may answer (a local
    // reply) before the body is all sent, and then closes.
    std::thread::scope(|s| {
        s.spawn(move || {
            // The proxy may answer and close at any point; what it answered
            // is what matters, so write errors end the writing quietly.
            let _ = write_request(&mut writer, req);
        });
        read_response(&stream, &req.method)
    })
}

fn write_request(w: &mut TcpStream, req: &WireRequest) -> std::io::Result<()> {
    w.write_all(&req.http1_head())?;
    w.flush()?;
    let Some(body) = &req.body else {
        return Ok(());
    };
    if req.chunked() {
        for b in body {
            let mut chunk = Vec::with_capacity(6);
            chunk.extend_from_slice(b"1\r\n");
            chunk.push(*b);
            chunk.extend_from_slice(b"\r\n");
            w.write_all(&chunk)?;
            w.flush()?;
        }
        w.write_all(b"0\r\n\r\n")?;
    } else {
        w.write_all(body)?;
    }
    w.flush()
}

/// Reads one final response (1xx skipped).
fn read_response(stream: &TcpStream, method: &str) -> Result<Resp, NoResponse> {
    let mut r = BufReader::new(stream);
    loop {
        let head = read_head(&mut r)?;
        let (status, headers) = parse_head(&head)?;
        if (100..200).contains(&status) {
            continue;
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let no_body = method.eq_ignore_ascii_case("HEAD") || status == 204 || status == 304;
        let chunked =
            header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let body = if no_body {
            Vec::new()
        } else if chunked {
            read_chunked(&mut r)?
        } else if let Some(n) = header("content-length") {
            let n: usize = n
                .trim()
                .parse()
                .map_err(|_| NoResponse::Failed(format!("bad content-length `{n}`")))?;
            let mut body = vec![0; n];
            r.read_exact(&mut body)
                .map_err(|e| NoResponse::Reset(format!("reading a {n}-byte body: {e}")))?;
            body
        } else {
            let mut body = Vec::new();
            r.read_to_end(&mut body)
                .map_err(|e| NoResponse::Reset(format!("reading the body: {e}")))?;
            body
        };
        return Ok(Resp {
            status,
            headers,
            body,
        });
    }
}

/// Bytes up to and including the empty line that ends a head.
fn read_head(r: &mut impl BufRead) -> Result<Vec<u8>, NoResponse> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = r.read_until(b'\n', &mut line).map_err(|e| {
            NoResponse::Reset(format!(
                "reading the response head after {} bytes: {e}",
                head.len()
            ))
        })?;
        if n == 0 {
            return Err(NoResponse::Reset(if head.is_empty() {
                "the connection closed without a response".into()
            } else {
                format!(
                    "the connection closed inside the response head: {:?}",
                    String::from_utf8_lossy(&head)
                )
            }));
        }
        let blank = line == b"\r\n" || line == b"\n";
        head.extend_from_slice(&line);
        if blank && head.len() > line.len() {
            return Ok(head);
        }
        if blank {
            // Stray empty lines before a response are tolerated.
            head.clear();
        }
    }
}

/// Status and headers (names lowercased, in order, repeats kept).
fn parse_head(head: &[u8]) -> Result<(u16, Vec<(String, String)>), NoResponse> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n").flat_map(|l| l.split('\n'));
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| status_line.starts_with("HTTP/1."))
        .ok_or_else(|| NoResponse::Failed(format!("bad status line `{status_line}`")))?;
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok((status, headers))
}

/// A chunked body (RFC 9112 section 7.1), trailers read and dropped.
fn read_chunked(r: &mut impl BufRead) -> Result<Vec<u8>, NoResponse> {
    let reset = |what: &str| NoResponse::Reset(format!("chunked body: {what}"));
    let mut body = Vec::new();
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line)
            .map_err(|e| reset(&e.to_string()))?
            == 0
        {
            return Err(reset("closed before the last chunk"));
        }
        let text = String::from_utf8_lossy(&line);
        let size_text = text.trim().split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| NoResponse::Failed(format!("bad chunk size `{size_text}`")))?;
        if size == 0 {
            loop {
                let mut trailer = Vec::new();
                if r.read_until(b'\n', &mut trailer)
                    .map_err(|e| reset(&e.to_string()))?
                    == 0
                {
                    return Err(reset("closed inside the trailers"));
                }
                if trailer == b"\r\n" || trailer == b"\n" {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        let dst = body.get_mut(start..).unwrap_or_default();
        r.read_exact(dst).map_err(|e| reset(&e.to_string()))?;
        let mut crlf = Vec::new();
        r.read_until(b'\n', &mut crlf)
            .map_err(|e| reset(&e.to_string()))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn req() -> WireRequest {
        WireRequest {
            method: "POST".into(),
            url: "https://api.example.com/v1//x/./y;a=1?q=%2F#frag".into(),
            scheme: "https".into(),
            authority: "api.example.com".into(),
            path: "/v1//x/./y;a=1?q=%2F#frag".into(),
            headers: vec![
                ("authorization".into(), "Bearer a".into()),
                ("x-fold".into(), "a\r\n b".into()),
                ("authorization".into(), "Bearer b".into()),
            ],
            body: Some(b"ab".to_vec()),
        }
    }

    #[test]
    fn the_head_is_the_case_byte_for_byte() {
        let head = String::from_utf8(req().http1_head()).unwrap();
        assert_eq!(
            head,
            "POST /v1//x/./y;a=1?q=%2F#frag HTTP/1.1\r\nhost: api.example.com\r\n\
             authorization: Bearer a\r\nx-fold: a\r\n b\r\nauthorization: Bearer b\r\n\
             content-length: 2\r\n\r\n"
        );
        let mut r = req();
        r.headers = vec![
            ("host".into(), "evil.example".into()),
            ("transfer-encoding".into(), "chunked".into()),
        ];
        let head = String::from_utf8(r.http1_head()).unwrap();
        assert_eq!(
            head,
            "POST https://api.example.com/v1//x/./y;a=1?q=%2F#frag HTTP/1.1\r\n\
             host: evil.example\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        r.body = None;
        r.headers.clear();
        r.method = "GET".into();
        assert!(!String::from_utf8(r.http1_head())
            .unwrap()
            .contains("content-length"));
    }

    /// A one-shot server: records what it read, answers `answer`.
    fn serve_once(
        answer: &'static [u8],
        read_until: &'static [u8],
    ) -> (u16, std::thread::JoinHandle<Vec<u8>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !got.ends_with(read_until) {
                let n = c.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            c.write_all(answer).unwrap();
            got
        });
        (port, h)
    }

    #[test]
    fn chunked_bodies_go_one_byte_at_a_time() {
        let (port, h) = serve_once(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nx-a: 1\r\nx-a: 2\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n1;ext\r\nd\r\n0\r\nx-t: 1\r\n\r\n",
            b"0\r\n\r\n",
        );
        let mut r = req();
        r.headers = vec![("transfer-encoding".into(), "chunked".into())];
        r.body = Some(b"xyz".to_vec());
        let resp = send_http1(port, &r).unwrap();
        let got = h.join().unwrap();
        assert!(got.ends_with(b"\r\n\r\n1\r\nx\r\n1\r\ny\r\n1\r\nz\r\n0\r\n\r\n"));
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, b"abcd");
        let xa: Vec<&str> = resp
            .headers
            .iter()
            .filter(|(k, _)| k == "x-a")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(xa, ["1", "2"]);
    }

    #[test]
    fn length_and_close_delimited_responses() {
        let (port, h) = serve_once(
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 11\r\nconnection: close\r\n\r\nBad Request",
            b"\r\n\r\nab",
        );
        let resp = send_http1(port, &req()).unwrap();
        assert!(h
            .join()
            .unwrap()
            .starts_with(b"POST /v1//x/./y;a=1?q=%2F#frag HTTP/1.1\r\n"));
        assert_eq!((resp.status, resp.text().as_str()), (400, "Bad Request"));

        let (port, h) = serve_once(b"HTTP/1.1 200 OK\r\n\r\nuntil close", b"\r\n\r\nab");
        let resp = send_http1(port, &req()).unwrap();
        h.join().unwrap();
        assert_eq!(resp.text(), "until close");

        let (port, h) = serve_once(b"", b"\r\n\r\nab");
        let e = send_http1(port, &req()).unwrap_err();
        h.join().unwrap();
        assert!(matches!(e, NoResponse::Reset(_)), "{e:?}");
    }
}
