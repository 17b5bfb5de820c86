//! Hot reload: new bundles from the control plane, for new requests.
//!
//! On each tick a worker VM first adopts a bundle another worker of the
//! same proxy fetched (shared data holds the newest accepted bundle and its
//! revision), then, when the poll period is due and it wins the claim (one
//! worker per period and proxy), asks the control plane for
//! `GET /v1/bundles/current` with `If-None-Match`. A bundle is accepted
//! only when it is signed by one of `trusted_keys` and its signed revision
//! is greater than the one running; a refused bundle leaves the running
//! one in place, and both outcomes are logged and counted. The running
//! bundle itself (a blob's bundle that was also published) is unchanged,
//! not a rollback: its ETag is kept so that the next polls get a 304. Requests in
//! flight keep the bundle they started with: each holds its own `Rc` of
//! the configuration it began under.

use crate::callout::{self, Call};
use crate::config::ControlPlane;
use crate::host::{Host, Level};
use crate::kv::{self, Reader, Step, Writer};
use aegis_engine::Bundle;

/// Shared-data keys: the claim of the next poll, the accepted bundle's
/// revision and ETag, and its bytes.
const CLAIM: &str = "aegis/bundle/v1/claim";
const META: &str = "aegis/bundle/v1/meta";
const BYTES: &str = "aegis/bundle/v1/bytes";

/// What became of a poll or an adoption, for the log and the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A newer bundle is in force.
    Loaded,
    /// The control plane's bundle is the one running.
    Unchanged,
    /// The bundle was refused (signature, revision, format).
    Refused,
    /// The control plane did not answer usefully.
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Loaded => "loaded",
            Outcome::Unchanged => "unchanged",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
        }
    }
}

/// The accepted bundle's revision and the control plane's ETag for it.
struct Meta {
    revision: u64,
    etag: String,
}

impl Meta {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::new());
        w.u8(1);
        w.u64(self.revision);
        w.str(&self.etag);
        w.0
    }

    fn decode(bytes: &[u8]) -> Option<Meta> {
        let mut r = Reader(bytes);
        if r.u8()? != 1 {
            return None;
        }
        let m = Meta {
            revision: r.u64()?,
            etag: r.str()?.to_owned(),
        };
        r.done().then_some(m)
    }
}

/// One worker VM's side of hot reload.
#[derive(Debug, Default)]
pub struct Poller {
    /// The call in flight, if this worker made one.
    token: Option<u32>,
}

/// Whether this worker takes the poll due at `now` (one per period and
/// proxy).
fn claim(host: &impl Host, now: u64, period_ns: u64) -> bool {
    let result = kv::update(host, CLAIM, &0u64.to_le_bytes(), |v| {
        let last = v
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(0, u64::from_le_bytes);
        if now.saturating_sub(last) >= period_ns {
            Step::Write(now.to_le_bytes().to_vec(), true)
        } else {
            Step::Keep(false)
        }
    });
    result.unwrap_or_else(|e| {
        host.log(Level::Warn, &format!("aegis: bundle poll not claimed: {e}"));
        false
    })
}

impl Poller {
    /// A bundle newer than `running` that another worker accepted, loaded
    /// here (the signature is checked again: shared data is only a cache).
    pub fn adopt(
        &self,
        host: &impl Host,
        running: &Bundle,
        trusted: &[[u8; 32]],
    ) -> Option<Bundle> {
        let meta = Meta::decode(&kv::read(host, META)?)?;
        if meta.revision <= running.revision() {
            return None;
        }
        let bytes = kv::read(host, BYTES)?;
        match accept(&bytes, running, trusted) {
            Ok(Fetched::Newer(b)) if b.revision() == meta.revision => Some(*b),
            Ok(_) => None,
            Err(e) => {
                host.log(
                    Level::Warn,
                    &format!("aegis: bundle in shared data refused: {e}"),
                );
                None
            }
        }
    }

    /// Starts a poll when it is due and this worker wins the claim.
    pub fn poll(&mut self, host: &impl Host, cp: &ControlPlane, now: u64) {
        if self.token.is_some() || cp.bundle_poll_ms == 0 {
            return;
        }
        if !claim(
            host,
            now,
            u64::from(cp.bundle_poll_ms).saturating_mul(1_000_000),
        ) {
            return;
        }
        let etag = kv::read(host, META)
            .and_then(|b| Meta::decode(&b))
            .map(|m| m.etag)
            .filter(|e| !e.is_empty());
        let call = current_bundle(etag.as_deref());
        match callout::dispatch(host, cp, &call, u64::from(cp.timeout_ms.max(5_000))) {
            Ok(t) => self.token = Some(t),
            Err(e) => host.log(
                Level::Warn,
                &format!(
                    "aegis: cannot poll the control plane for bundles (cluster `{}`): {e}",
                    cp.cluster
                ),
            ),
        }
    }

    /// The answer to this worker's poll: `Some` with the outcome (and the
    /// bundle when one was accepted), `None` when `token` is not its call.
    pub fn answer(
        &mut self,
        host: &impl Host,
        token: u32,
        body_size: usize,
        running: &Bundle,
        trusted: &[[u8; 32]],
    ) -> Option<(Outcome, Option<Bundle>)> {
        if self.token != Some(token) {
            return None;
        }
        self.token = None;
        let headers = host.call_response_headers();
        let body = host.call_response_body(body_size);
        let r = match callout::response(&headers, &body) {
            Ok(r) => r,
            Err(e) => {
                host.log(
                    Level::Warn,
                    &format!("aegis: bundle poll failed: {e}; the running bundle stays"),
                );
                return Some((Outcome::Failed, None));
            }
        };
        match r.status {
            304 => return Some((Outcome::Unchanged, None)),
            200 => {}
            s => {
                let code = callout::error_code(r.body).unwrap_or_default();
                host.log(
                    Level::Warn,
                    &format!("aegis: bundle poll answered {s} {code}; the running bundle stays"),
                );
                return Some((Outcome::Failed, None));
            }
        }
        let etag = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("etag"))
            .map_or(String::new(), |(_, v)| v.clone());
        let b = match accept(r.body, running, trusted) {
            Ok(Fetched::Newer(b)) => *b,
            Ok(Fetched::Running) => {
                keep_etag(host, running.revision(), etag);
                return Some((Outcome::Unchanged, None));
            }
            Err(e) => {
                host.log(
                    Level::Error,
                    &format!("aegis: bundle from the control plane refused: {e}"),
                );
                return Some((Outcome::Refused, None));
            }
        };
        let meta = Meta {
            revision: b.revision(),
            etag,
        };
        // The bytes first: a worker that sees the new revision finds them.
        let shared = host
            .set_shared_data(BYTES, r.body, None)
            .and_then(|_| host.set_shared_data(META, &meta.encode(), None));
        if let Err(e) = shared {
            host.log(
                Level::Warn,
                &format!("aegis: the new bundle is not shared with the other workers: {e}"),
            );
        }
        Some((Outcome::Loaded, Some(b)))
    }
}

/// `GET /v1/bundles/current`, with the ETag of the bundle in force.
fn current_bundle(etag: Option<&str>) -> Call {
    Call {
        method: "GET",
        path: "/v1/bundles/current".into(),
        body: None,
        if_none_match: etag.map(str::to_owned),
    }
}

/// The ETag of the bundle this proxy already runs, so that the next
/// polls ask with `If-None-Match`; never over a newer accepted bundle.
fn keep_etag(host: &impl Host, revision: u64, etag: String) {
    let meta = Meta { revision, etag };
    let empty = Meta {
        revision: 0,
        etag: String::new(),
    };
    let result = kv::update(host, META, &empty.encode(), |v| {
        match v.and_then(Meta::decode) {
            Some(m) if m.revision > meta.revision => Step::Keep(()),
            _ => Step::Write(meta.encode(), ()),
        }
    });
    if let Err(e) = result {
        host.log(
            Level::Warn,
            &format!("aegis: the bundle's ETag is not kept: {e}"),
        );
    }
}

/// A bundle from the control plane that [`accept`] took.
enum Fetched {
    /// Newer than the running one: load it.
    Newer(Box<Bundle>),
    /// The running bundle itself (the blob's bundle published as it is):
    /// nothing to do.
    Running,
}

/// Loads `bytes` when they are a bundle signed by a trusted key with a
/// revision above the running one, or the running bundle itself.
fn accept(bytes: &[u8], running: &Bundle, trusted: &[[u8; 32]]) -> Result<Fetched, String> {
    if trusted.is_empty() {
        return Err("no `trusted_keys` are configured to check it against".into());
    }
    let b = Bundle::load(bytes, trusted).map_err(|e| e.to_string())?;
    if b.revision() == running.revision() && b.hash == running.hash {
        return Ok(Fetched::Running);
    }
    if b.revision() <= running.revision() {
        return Err(format!(
            "its revision {} is not newer than the running revision {} (no rollback)",
            b.revision(),
            running.revision()
        ));
    }
    Ok(Fetched::Newer(Box::new(b)))
}
