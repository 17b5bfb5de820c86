//! The upstream: a small HTTP/1.1 server on loopback that records every
//! request that reaches it (also the ones whose body never arrives) and
//! answers 200, echoing the body.
//!
//! A request is recorded as soon as its headers are in, then updated as
//! its body arrives: `complete` once the whole body is read, `aborted`
//! when the connection ends before that (Envoy reset the upstream
//! request). So a test can prove both "never reached the upstream" and
//! "headers reached it, the body never did".

use crate::{err, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Header the upstream adds to its answers, so a test can tell an
/// upstream answer from a local reply.
pub const ECHO_HEADER: &str = "x-echo-upstream";

/// One request as the upstream saw it.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    pub method: String,
    /// Path with the query.
    pub path: String,
    /// Names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The whole body arrived.
    pub complete: bool,
    /// The connection ended before the body was complete.
    pub aborted: bool,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        aegis_engine::Headers::get(self.headers.as_slice(), name).0
    }

    /// The `x-request-id` the request carried.
    pub fn request_id(&self) -> Option<&str> {
        self.header("x-request-id")
    }
}

#[derive(Default)]
struct Store {
    requests: Mutex<Vec<Recorded>>,
    changed: Condvar,
}

impl Store {
    fn lock(&self) -> MutexGuard<'_, Vec<Recorded>> {
        // A panicking connection thread must not hide what was recorded.
        self.requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn push(&self, r: Recorded) -> usize {
        let mut g = self.lock();
        g.push(r);
        self.changed.notify_all();
        g.len() - 1
    }

    fn update(&self, i: usize, f: impl FnOnce(&mut Recorded)) {
        let mut g = self.lock();
        if let Some(r) = g.get_mut(i) {
            f(r);
        }
        self.changed.notify_all();
    }
}

/// The running echo server; stops accepting when dropped.
pub struct EchoServer {
    addr: SocketAddr,
    store: Arc<Store>,
    stop: Arc<AtomicBool>,
}

impl EchoServer {
    pub fn start() -> Result<EchoServer> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| err(format!("echo server: cannot bind: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| err(format!("echo server: {e}")))?;
        let store = Arc::new(Store::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (store.clone(), stop.clone());
        std::thread::Builder::new()
            .name("echo-accept".into())
            .spawn(move || accept_loop(&listener, &s, &st))
            .map_err(|e| err(format!("echo server: cannot spawn: {e}")))?;
        Ok(EchoServer { addr, store, stop })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Everything recorded so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.store.lock().clone()
    }

    /// Requests that carried `x-request-id: id`.
    pub fn with_id(&self, id: &str) -> Vec<Recorded> {
        self.store
            .lock()
            .iter()
            .filter(|r| r.request_id() == Some(id))
            .cloned()
            .collect()
    }

    /// Waits until `pred` holds for the requests recorded so far; returns
    /// whether it did within `timeout`.
    pub fn wait_until(&self, timeout: Duration, pred: impl Fn(&[Recorded]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut g = self.store.lock();
        loop {
            if pred(&g) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            g = match self.store.changed.wait_timeout(g, left) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn accept_loop(listener: &TcpListener, store: &Arc<Store>, stop: &Arc<AtomicBool>) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(conn) = conn else { continue };
        let store = store.clone();
        let _ = std::thread::Builder::new()
            .name("echo-conn".into())
            .spawn(move || serve(conn, &store));
    }
}

/// Serves one connection (keep-alive: requests one after another).
fn serve(conn: TcpStream, store: &Store) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut r = BufReader::new(conn);
    loop {
        let Some((method, path, headers)) = read_head(&mut r) else {
            return;
        };
        let rec = Recorded {
            method,
            path,
            headers,
            ..Recorded::default()
        };
        let chunked = rec
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let length = rec
            .header("content-length")
            .and_then(|v| v.trim().parse::<usize>().ok());
        let i = store.push(rec);
        let mut body = Vec::new();
        let ok = if chunked {
            read_chunked(&mut r, &mut body, |part| {
                store.update(i, |rec| rec.body.extend_from_slice(part));
            })
        } else {
            read_exact_progress(&mut r, length.unwrap_or(0), &mut body, |part| {
                store.update(i, |rec| rec.body.extend_from_slice(part));
            })
        };
        if !ok {
            store.update(i, |rec| rec.aborted = true);
            return;
        }
        store.update(i, |rec| rec.complete = true);
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n{ECHO_HEADER}: 1\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        if out.write_all(head.as_bytes()).is_err() || out.write_all(&body).is_err() {
            return;
        }
        let _ = out.flush();
    }
}

type Head = (String, String, Vec<(String, String)>);

/// One line (without its line end), bytes that are not UTF-8 replaced.
fn read_text_line(r: &mut impl BufRead) -> Option<String> {
    let mut raw = Vec::new();
    if r.read_until(b'\n', &mut raw).ok()? == 0 {
        return None;
    }
    while raw.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        raw.pop();
    }
    Some(String::from_utf8_lossy(&raw).into_owned())
}

/// Request line and headers; `None` at end of stream or on garbage.
fn read_head(r: &mut impl BufRead) -> Option<Head> {
    // Skip empty lines between requests.
    let line = loop {
        let line = read_text_line(r)?;
        if !line.trim().is_empty() {
            break line;
        }
    };
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let l = read_text_line(r)?;
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    Some((method, path, headers))
}

fn read_exact_progress(
    r: &mut impl Read,
    n: usize,
    body: &mut Vec<u8>,
    mut progress: impl FnMut(&[u8]),
) -> bool {
    let mut buf = [0u8; 16 * 1024];
    let mut left = n;
    while left > 0 {
        let want = left.min(buf.len());
        let Some(dst) = buf.get_mut(..want) else {
            return false;
        };
        match r.read(dst) {
            Ok(0) | Err(_) => return false,
            Ok(got) => {
                let part = dst.get(..got).unwrap_or_default();
                body.extend_from_slice(part);
                progress(part);
                left -= got;
            }
        }
    }
    true
}

/// A chunked body (RFC 9112 section 7.1), trailers skipped.
fn read_chunked(r: &mut impl BufRead, body: &mut Vec<u8>, mut progress: impl FnMut(&[u8])) -> bool {
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return false;
        }
        let size_text = line.trim().split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            return false;
        };
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return false;
                }
                if line.trim().is_empty() {
                    return true;
                }
            }
        }
        if !read_exact_progress(r, size, body, &mut progress) {
            return false;
        }
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return false;
        }
    }
}
