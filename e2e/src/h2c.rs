//! HTTP/2 with prior knowledge over cleartext (h2c), with the `h2` crate on
//! a current-thread tokio runtime: one new connection per request, so a
//! `GOAWAY` or a reset never touches the next case.
//!
//! The request is the case's: `:method`, `:scheme` (the url's), `:authority`
//! (the url's authority), `:path` (path and query exactly as written), then
//! the headers with repeats; a case's `host` header goes as a regular
//! `host` field next to `:authority`. `content-length` is added for a body
//! unless the case gives one; the body goes in one DATA frame.
//!
//! What this client cannot send, and says so ([`unsendable`]) so the case
//! is skipped for HTTP/2 rather than sent as something else:
//! - a `#fragment` (`http::Uri` drops it silently) and path bytes
//!   `http::Uri` refuses (space, controls, `` ` ``, `<`, `>`, ...; UTF-8
//!   beyond ASCII passes);
//! - connection-specific fields (`connection`, `transfer-encoding`,
//!   `upgrade`, `keep-alive`, `proxy-connection`, `te` other than
//!   `trailers`): HTTP/2 forbids them and the crate refuses to send them;
//! - header values with control characters (an obs-fold is HTTP/1 only).
//!
//! Header fields of different names go in `http::HeaderMap` order (each
//! name at its first position, its values together, in order), not in the
//! case's interleaved order; the values of one name keep their order.

use crate::client::Resp;
use crate::wire::{NoResponse, WireRequest, TIMEOUT};
use crate::{err, Result};
use http::header::{HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};

/// Fields HTTP/2 forbids (RFC 9113 section 8.2.2) and `h2` refuses.
const CONNECTION_SPECIFIC: &[&str] = &[
    "connection",
    "transfer-encoding",
    "upgrade",
    "keep-alive",
    "proxy-connection",
];

/// Why this client cannot send `req` over HTTP/2 as written, if it cannot.
pub fn unsendable(req: &WireRequest) -> Option<String> {
    build(req).err()
}

fn build(req: &WireRequest) -> std::result::Result<http::Request<()>, String> {
    if req.path.contains('#') {
        return Err("a `#fragment` in the url: `http::Uri` drops it from `:path`".into());
    }
    for (k, v) in &req.headers {
        if CONNECTION_SPECIFIC.contains(&k.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "`{k}` is a connection-specific field HTTP/2 forbids; h2 refuses to send it"
            ));
        }
        if k.eq_ignore_ascii_case("te") && v != "trailers" {
            return Err(format!("`te: {v}`: HTTP/2 allows only `te: trailers`"));
        }
    }
    let scheme = Scheme::try_from(req.scheme.as_str())
        .map_err(|e| format!("scheme `{}`: {e}", req.scheme))?;
    let authority = Authority::try_from(req.authority.as_str()).map_err(|e| {
        format!(
            "`:authority` `{}`: {e} (refused by `http::Uri`)",
            req.authority
        )
    })?;
    let pq = PathAndQuery::try_from(req.path.as_str())
        .map_err(|e| format!("`:path` `{}`: {e} (refused by `http::Uri`)", req.path))?;
    if pq.as_str() != req.path {
        return Err(format!(
            "`http::Uri` would send `:path` `{}` for `{}`",
            pq.as_str(),
            req.path
        ));
    }
    let uri = http::Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(pq)
        .build()
        .map_err(|e| format!("url `{}`: {e}", req.url))?;
    let method = http::Method::from_bytes(req.method.as_bytes())
        .map_err(|e| format!("method `{}`: {e}", req.method))?;
    let mut out = http::Request::builder()
        .method(method)
        .uri(uri)
        .version(http::Version::HTTP_2)
        .body(())
        .map_err(|e| e.to_string())?;
    let headers = out.headers_mut();
    for (k, v) in &req.headers {
        let name =
            HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("header name `{k}`: {e}"))?;
        let value = HeaderValue::from_bytes(v.as_bytes())
            .map_err(|e| format!("header `{k}` value {v:?}: {e}"))?;
        headers.append(name, value);
    }
    if let Some(b) = &req.body {
        if !req.has("content-length") {
            headers.append(http::header::CONTENT_LENGTH, HeaderValue::from(b.len()));
        }
    }
    Ok(out)
}

/// An HTTP/2 client: a small runtime to drive `h2`.
pub struct H2Client {
    rt: tokio::runtime::Runtime,
}

impl H2Client {
    pub fn new() -> Result<H2Client> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| err(format!("tokio runtime: {e}")))?;
        Ok(H2Client { rt })
    }

    /// Sends `req` to `127.0.0.1:port` on a new h2c connection and reads
    /// the response.
    pub fn send(&self, port: u16, req: &WireRequest) -> std::result::Result<Resp, NoResponse> {
        let request = build(req).map_err(NoResponse::Failed)?;
        let body = req.body.clone();
        self.rt.block_on(async move {
            match tokio::time::timeout(TIMEOUT, exchange(port, request, body)).await {
                Ok(r) => r,
                Err(_) => Err(NoResponse::Failed(format!(
                    "no response within {TIMEOUT:?}"
                ))),
            }
        })
    }
}

fn h2_error(what: &str, e: &h2::Error) -> NoResponse {
    let text = format!("{what}: {e}");
    if e.is_reset() || e.is_go_away() || e.is_io() {
        NoResponse::Reset(text)
    } else {
        NoResponse::Failed(text)
    }
}

async fn exchange(
    port: u16,
    request: http::Request<()>,
    body: Option<Vec<u8>>,
) -> std::result::Result<Resp, NoResponse> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| NoResponse::Failed(format!("connect 127.0.0.1:{port}: {e}")))?;
    tcp.set_nodelay(true)
        .map_err(|e| NoResponse::Failed(format!("nodelay: {e}")))?;
    let (client, conn) = h2::client::handshake(tcp)
        .await
        .map_err(|e| h2_error("handshake", &e))?;
    // The connection is driven by its own task while this one talks.
    let driver = tokio::spawn(conn);
    let result = async {
        let mut client = client.ready().await.map_err(|e| h2_error("ready", &e))?;
        let (response, mut send) = client
            .send_request(request, body.is_none())
            .map_err(|e| h2_error("sending the headers", &e))?;
        if let Some(b) = body {
            send.send_data(bytes::Bytes::from(b), true)
                .map_err(|e| h2_error("sending the body", &e))?;
        }
        let response = response
            .await
            .map_err(|e| h2_error("awaiting the response", &e))?;
        let (parts, mut recv) = response.into_parts();
        let mut data = Vec::new();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk.map_err(|e| h2_error("reading the body", &e))?;
            // The window is not a concern for test-sized bodies, but give
            // it back anyway so large ones do not stall.
            let _ = recv.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        let headers = parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        Ok(Resp {
            status: parts.status.as_u16(),
            headers,
            body: data,
        })
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str) -> WireRequest {
        WireRequest {
            method: "POST".into(),
            url: format!("https://api.example.com{path}"),
            scheme: "https".into(),
            authority: "api.example.com".into(),
            path: path.into(),
            headers: vec![
                ("authorization".into(), "Bearer a".into()),
                ("content-type".into(), "application/json".into()),
                ("authorization".into(), "Bearer b".into()),
                ("host".into(), "evil.example".into()),
            ],
            body: Some(b"{}".to_vec()),
        }
    }

    #[test]
    fn raw_paths_and_repeats_survive() {
        for path in [
            "/v1//x",
            "/v1/./x",
            "/v1/../x",
            "/v1/%70ayment_intents",
            "/v1/x;x=1",
            "/v1/a%2Fb?q=%2F&r=..",
            "/v1/a\\b",
            "/v1/{\"a\":1}",
        ] {
            let r = build(&req(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(r.uri().path_and_query().unwrap().as_str(), path);
            assert_eq!(r.uri().authority().unwrap().as_str(), "api.example.com");
            let auth: Vec<&str> = r
                .headers()
                .get_all("authorization")
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect();
            assert_eq!(auth, ["Bearer a", "Bearer b"]);
            assert_eq!(r.headers()["host"], "evil.example");
            assert_eq!(r.headers()["content-length"], "2");
        }
    }

    #[test]
    fn what_it_cannot_send_is_named() {
        assert!(unsendable(&req("/x#frag")).unwrap().contains("fragment"));
        assert!(unsendable(&req("/a b"))
            .unwrap()
            .contains("refused by `http::Uri`"));
        assert!(unsendable(&req("/a\tb")).is_some());
        assert_eq!(unsendable(&req("/caf\u{e9}")), None);
        let mut r = req("/x");
        r.headers
            .push(("transfer-encoding".into(), "chunked".into()));
        assert!(unsendable(&r).unwrap().contains("connection-specific"));
        let mut r = req("/x");
        r.headers.push(("x-fold".into(), "a\r\n b".into()));
        assert!(unsendable(&r).unwrap().contains("x-fold"));
        let mut r = req("/x");
        r.headers.push(("te".into(), "trailers".into()));
        assert_eq!(unsendable(&r), None);
    }
}
