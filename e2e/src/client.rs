//! Sending one request through Envoy with a real HTTP client (`ureq`,
//! HTTP/1.1), and a raw-socket client for requests whose body is sent
//! later on purpose.

use crate::{err, Result};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A request as the agent sends it. The authority goes in `Host`; the
/// connection goes to Envoy's listener.
#[derive(Debug, Clone, Default)]
pub struct Req {
    pub method: String,
    pub authority: String,
    /// Path with the query.
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// `None`: no body at all (no `content-length`).
    pub body: Option<Vec<u8>>,
}

impl Req {
    /// A form `POST` as an agent sends it: its token as the bearer, its
    /// request id, an `application/x-www-form-urlencoded` body.
    pub fn form_post(
        authority: &str,
        path: &str,
        request_id: &str,
        token: &str,
        body: &str,
    ) -> Req {
        Req {
            method: "POST".into(),
            authority: authority.into(),
            path: path.into(),
            headers: vec![
                ("x-request-id".into(), request_id.into()),
                ("authorization".into(), format!("Bearer {token}")),
                (
                    "content-type".into(),
                    "application/x-www-form-urlencoded".into(),
                ),
            ],
            body: Some(body.as_bytes().to_vec()),
        }
    }
}

/// What came back.
#[derive(Debug, Clone, Default)]
pub struct Resp {
    pub status: u16,
    /// Names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        aegis_engine::Headers::get(self.headers.as_slice(), name).0
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .map_err(|e| err(format!("response body is not JSON ({e}): {}", self.text())))
    }
}

/// Sends `req` to `127.0.0.1:port` on a new connection.
pub fn send(port: u16, req: &Req) -> Result<Resp> {
    // A fresh agent per request: a connection Envoy closes after a local
    // reply is never reused by mistake.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .max_idle_connections(0)
        .build()
        .into();
    let path = if req.path.starts_with('/') {
        req.path.clone()
    } else {
        format!("/{}", req.path)
    };
    let mut b = ureq::http::Request::builder()
        .method(req.method.as_str())
        .uri(format!("http://127.0.0.1:{port}{path}"))
        .header("host", req.authority.as_str());
    for (k, v) in &req.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let what = format!("{} {}{}", req.method, req.authority, req.path);
    let result = match &req.body {
        Some(body) => agent.run(
            b.body(body.clone())
                .map_err(|e| err(format!("{what}: {e}")))?,
        ),
        None => agent.run(b.body(()).map_err(|e| err(format!("{what}: {e}")))?),
    };
    let mut r = result.map_err(|e| err(format!("{what}: {e}")))?;
    let status = r.status().as_u16();
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = r
        .body_mut()
        .with_config()
        .limit(16 * 1024 * 1024)
        .read_to_vec()
        .map_err(|e| err(format!("{what}: reading the response: {e}")))?;
    Ok(Resp {
        status,
        headers,
        body,
    })
}

/// A request sent by hand on a raw socket: the head first, the body when
/// the test says so. For proving what Envoy forwards before the body.
pub struct SlowRequest {
    stream: TcpStream,
}

impl SlowRequest {
    /// Sends the request line and headers (with `content-length` of the
    /// body to come) and nothing else.
    pub fn start(port: u16, req: &Req, body_len: usize) -> Result<SlowRequest> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .map_err(|e| err(format!("connect 127.0.0.1:{port}: {e}")))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .map_err(|e| err(e.to_string()))?;
        let mut head = format!(
            "{} {} HTTP/1.1\r\nhost: {}\r\ncontent-length: {body_len}\r\nconnection: close\r\n",
            req.method, req.path, req.authority
        );
        for (k, v) in &req.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        stream
            .write_all(head.as_bytes())
            .map_err(|e| err(format!("sending the request head: {e}")))?;
        Ok(SlowRequest { stream })
    }

    /// Sends the body and reads the whole response.
    pub fn finish(mut self, body: &[u8]) -> Result<Resp> {
        // The proxy may already have answered and closed; the response is
        // what matters.
        let _ = self.stream.write_all(body);
        let mut raw = Vec::new();
        let _ = self.stream.read_to_end(&mut raw);
        parse_response(&raw)
    }
}

fn parse_response(raw: &[u8]) -> Result<Resp> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            err(format!(
                "no complete response: {:?}",
                String::from_utf8_lossy(raw)
            ))
        })?;
    let head = String::from_utf8_lossy(raw.get(..end).unwrap_or_default()).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| err(format!("bad status line in {head:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = raw.get(end + 4..).unwrap_or_default().to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { dechunk(&rest) } else { rest };
    Ok(Resp {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(data.get(..pos).unwrap_or_default()).into_owned();
        let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
        else {
            break;
        };
        if size == 0 {
            break;
        }
        let start = pos + 2;
        let Some(chunk) = data.get(start..start + size) else {
            break;
        };
        out.extend_from_slice(chunk);
        data = data.get(start + size + 2..).unwrap_or_default();
    }
    out
}
