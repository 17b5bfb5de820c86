//! The proxy-wasm side: root and HTTP contexts, and [`Host`] over the raw
//! hostcalls. This is the only module (with the entry point in `lib.rs`)
//! that uses `proxy_wasm`.
//!
//! The SDK's convenience methods on the context traits `unwrap()` host
//! results and would trap the VM on an unexpected answer, so only
//! `proxy_wasm::hostcalls` are used, and every `Result` is handled. (The
//! hostcalls themselves still abort on status codes outside the ABI's
//! documented set for each call; Envoy does not return those.)

use crate::budget::{self, Settle};
use crate::callout;
use crate::config::ControlPlane;
use crate::embedded;
use crate::host::{Host, Level, MetricKind, Stored};
use crate::kv::AgentRef;
use crate::metrics::{self, Metrics};
use crate::rate;
use crate::reload::{Outcome, Poller};
use crate::reply::RequestIds;
use crate::shared::{signer_text, Shared};
use crate::stream::{Flow, Stream};
use aegis_engine::Bundle;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType, Status};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

/// The filter's version, logged at VM start.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where Envoy keeps the tool host a route is bound to: the route's
/// metadata, filter `aegis`, key `host`.
const ROUTE_TOOL_HOST: [&str; 5] = ["xds", "route_metadata", "filter_metadata", "aegis", "host"];

/// [`Host`] over proxy-wasm hostcalls, acting for the current context.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProxyHost;

fn status<T>(r: Result<T, proxy_wasm::types::Status>) -> Result<T, String> {
    r.map_err(|s| format!("host status {s:?}"))
}

/// A header map in one call. The byte form: a header value need not be
/// UTF-8, and the string form of this call unwraps the conversion.
fn header_map(map: MapType) -> Vec<(String, String)> {
    match hostcalls::get_map_bytes(map) {
        Ok(pairs) => pairs
            .into_iter()
            .map(|(k, v)| {
                let v = String::from_utf8(v)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
                (k, v)
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn buffer(kind: BufferType, len: usize) -> Vec<u8> {
    match hostcalls::get_buffer(kind, 0, len) {
        Ok(Some(body)) => body,
        Ok(None) | Err(_) => Vec::new(),
    }
}

impl Host for ProxyHost {
    fn now_nanos(&self) -> u64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    fn log(&self, level: Level, message: &str) {
        let level = match level {
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
            Level::Critical => LogLevel::Critical,
        };
        let _ = hostcalls::log(level, message);
    }

    fn request_headers(&self) -> Vec<(String, String)> {
        header_map(MapType::HttpRequestHeaders)
    }

    fn request_body(&self, len: usize) -> Vec<u8> {
        buffer(BufferType::HttpRequestBody, len)
    }

    fn replace_request_body(&self, len: usize, body: &[u8]) -> Result<(), String> {
        status(hostcalls::set_buffer(
            BufferType::HttpRequestBody,
            0,
            len,
            body,
        ))
    }

    fn response_headers(&self) -> Vec<(String, String)> {
        header_map(MapType::HttpResponseHeaders)
    }

    fn response_body(&self, len: usize) -> Vec<u8> {
        buffer(BufferType::HttpResponseBody, len)
    }

    fn replace_response_body(&self, len: usize, body: &[u8]) -> Result<(), String> {
        status(hostcalls::set_buffer(
            BufferType::HttpResponseBody,
            0,
            len,
            body,
        ))
    }

    fn set_request_header(&self, name: &str, value: Option<&str>) -> Result<(), String> {
        status(hostcalls::set_map_value(
            MapType::HttpRequestHeaders,
            name,
            value,
        ))
    }

    fn set_response_header(&self, name: &str, value: Option<&str>) -> Result<(), String> {
        status(hostcalls::set_map_value(
            MapType::HttpResponseHeaders,
            name,
            value,
        ))
    }

    fn route_tool_host(&self) -> Option<String> {
        let value = hostcalls::get_property(ROUTE_TOOL_HOST.to_vec()).ok()??;
        let host = String::from_utf8(value).ok()?;
        let host = host.trim();
        (!host.is_empty()).then(|| host.to_owned())
    }

    fn send_local_response(
        &self,
        status_code: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), String> {
        status(hostcalls::send_http_response(
            status_code,
            headers.to_vec(),
            Some(body),
        ))
    }

    fn set_filter_state(&self, key: &str, value: &str) -> Result<(), String> {
        status(hostcalls::set_property(vec![key], Some(value.as_bytes())))
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, String> {
        let kind = match kind {
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Gauge => MetricType::Gauge,
            MetricKind::Histogram => MetricType::Histogram,
        };
        status(hostcalls::define_metric(kind, name))
    }

    fn increment_metric(&self, id: u32, by: i64) -> Result<(), String> {
        status(hostcalls::increment_metric(id, by))
    }

    fn record_metric(&self, id: u32, value: u64) -> Result<(), String> {
        status(hostcalls::record_metric(id, value))
    }

    fn dispatch_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout_ms: u64,
    ) -> Result<u32, String> {
        status(hostcalls::dispatch_http_call(
            cluster,
            headers.to_vec(),
            body,
            Vec::new(),
            Duration::from_millis(timeout_ms),
        ))
    }

    fn call_response_headers(&self) -> Vec<(String, String)> {
        header_map(MapType::HttpCallResponseHeaders)
    }

    fn call_response_body(&self, len: usize) -> Vec<u8> {
        buffer(BufferType::HttpCallResponseBody, len)
    }

    fn resume_request(&self) -> Result<(), String> {
        status(hostcalls::resume_http_request())
    }

    fn get_shared_data(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, String> {
        // Envoy answers `NotFound` for a key with no value, which the SDK
        // already turns into `(None, None)`.
        match hostcalls::get_shared_data(key) {
            Ok((Some(value), Some(cas))) => Ok(Some((value, cas))),
            Ok((None, _)) => Ok(None),
            // A value without a CAS number could only be overwritten
            // blindly: refuse it rather than lose a concurrent write.
            Ok((Some(_), None)) => Err(format!("shared data `{key}` has no cas number")),
            Err(Status::NotFound) => Ok(None),
            Err(s) => Err(format!(
                "cannot read shared data `{key}`: host status {s:?}"
            )),
        }
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<Stored, String> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(Stored::Written),
            Err(Status::CasMismatch) => Ok(Stored::CasMismatch),
            Err(s) => Err(format!(
                "cannot write shared data `{key}`: host status {s:?}"
            )),
        }
    }
}

/// Logs a panic through the host before the VM aborts.
pub fn panic_hook(info: &std::panic::PanicHookInfo<'_>) {
    ProxyHost.log(Level::Critical, &format!("aegis: panic: {info}"));
}

/// One per plugin configuration.
pub struct Root {
    /// The embedded bundle, loaded and integrity-checked at VM start.
    embedded: Option<Rc<Bundle>>,
    embedded_checked: bool,
    shared: Option<Rc<Shared>>,
    /// Outlives reconfigurations: a metric name is defined once per VM.
    metrics: Rc<RefCell<Metrics>>,
    ids: Rc<RequestIds>,
    /// New bundles from the control plane.
    poller: Poller,
    /// Budget settles in flight, by call token.
    settles: BTreeMap<u32, Settle>,
}

pub fn new_root(_context_id: u32) -> Box<dyn RootContext> {
    // Low bits of the start time tell the VMs of different workers apart
    // in generated request ids.
    let started = ProxyHost.now_nanos();
    Box::new(Root {
        embedded: None,
        embedded_checked: false,
        shared: None,
        metrics: Rc::new(RefCell::new(Metrics::new())),
        ids: Rc::new(RequestIds::new((started ^ (started >> 32)) as u32)),
        poller: Poller::default(),
        settles: BTreeMap::new(),
    })
}

impl Root {
    /// Loads the embedded bundle once (integrity always; trust against the
    /// configured keys happens in `on_configure`).
    fn load_embedded(&mut self) -> Result<(), String> {
        if self.embedded_checked {
            return Ok(());
        }
        let bytes = embedded::bundle_bytes().map_err(|e| format!("embedded bundle: {e}"))?;
        if let Some(bytes) = bytes {
            let b = Bundle::load(&bytes, &[]).map_err(|e| format!("embedded bundle: {e}"))?;
            self.embedded = Some(Rc::new(b));
        }
        self.embedded_checked = true;
        Ok(())
    }
}

impl Root {
    /// Puts a newer bundle in force for new requests; requests in flight
    /// keep the configuration they started with.
    fn swap(&mut self, shared: &Shared, bundle: Bundle, how: &str) {
        let next = shared.with_bundle(bundle);
        Root::prepare(&next);
        ProxyHost.log(
            Level::Info,
            &format!("aegis: bundle {how}: {}", next.summary()),
        );
        self.shared = Some(Rc::new(next));
    }

    fn count_reload(&self, outcome: Outcome) {
        if let Ok(mut m) = self.metrics.try_borrow_mut() {
            m.count(
                &ProxyHost,
                metrics::BUNDLE_RELOAD_TOTAL,
                &[("outcome", outcome.as_str())],
            );
        }
    }

    /// How often this worker ticks: to settle budget leases every
    /// `settle_ms`, and to look for new bundles at half the poll period
    /// (so that a claim never waits a whole period more because of the
    /// ticks' jitter). `None`: no background work.
    fn tick_period(shared: &Shared) -> Option<Duration> {
        let cp = shared.control.as_ref()?;
        let mut ms = None;
        if shared.has_budgets() {
            ms = Some(u64::from(cp.settle_ms));
        }
        if cp.bundle_poll_ms > 0 {
            if shared.trusted_keys.is_empty() {
                ProxyHost.log(
                    Level::Warn,
                    "aegis: no bundle polling: the configuration has no `trusted_keys` to check \
                     new bundles against",
                );
            } else {
                let poll = u64::from(cp.bundle_poll_ms / 2).max(500);
                ms = Some(ms.map_or(poll, |m: u64| m.min(poll)));
            }
        }
        ms.map(Duration::from_millis)
    }

    /// Creates the shared-data state the agents' budgets and rates use, so
    /// that no two workers race to create it under traffic.
    fn prepare(shared: &Shared) {
        let now = ProxyHost.now_nanos();
        for a in &shared.bundle.model.agents {
            let Some(b) = a.budget else { continue };
            let agent = AgentRef::new(a.tenant.as_deref(), &a.name);
            let mut result = Ok(());
            if b.daily_usd.is_some() && shared.control.is_some() {
                result = budget::prepare(&ProxyHost, &agent);
            }
            if let (Some(rps), true, Ok(())) = (b.rps, shared.rate_limits, &result) {
                result = rate::prepare(&ProxyHost, &agent, rps, now);
            }
            if let Err(e) = result {
                ProxyHost.log(
                    Level::Warn,
                    &format!("aegis: cannot prepare the budget of `{}`: {e}", a.id),
                );
            }
        }
    }

    /// Sends the budget settles that are due, when this worker holds the
    /// period's claim.
    fn settle(&mut self, shared: &Shared, cp: &ControlPlane, now: u64) {
        if !shared.has_budgets() {
            return;
        }
        let period = u64::from(cp.settle_ms).saturating_mul(1_000_000);
        if !budget::claim(&ProxyHost, now, period) {
            return;
        }
        for s in budget::due_settles(&ProxyHost, now) {
            let call = callout::settle(s.body());
            match callout::dispatch(&ProxyHost, cp, &call, u64::from(cp.timeout_ms)) {
                Ok(token) => {
                    self.settles.insert(token, s);
                }
                Err(e) => ProxyHost.log(
                    Level::Warn,
                    &format!("aegis: cannot settle lease `{}`: {e}", s.lease_id),
                ),
            }
        }
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if let Some(settle) = self.settles.remove(&token_id) {
            budget::settle_answered(&ProxyHost, &settle, body_size);
            return;
        }
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let answer = self.poller.answer(
            &ProxyHost,
            token_id,
            body_size,
            &shared.bundle,
            &shared.trusted_keys,
        );
        let Some((outcome, bundle)) = answer else {
            return;
        };
        self.count_reload(outcome);
        if let Some(b) = bundle {
            self.swap(&shared, b, "loaded from the control plane");
        }
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        if let Err(e) = self.load_embedded() {
            ProxyHost.log(Level::Error, &format!("aegis-filter {VERSION}: {e}"));
            return false;
        }
        let line = match &self.embedded {
            Some(b) => format!(
                "aegis-filter {VERSION} started; embedded bundle: policy `{}`, revision {}, hash {}, {}",
                b.policy_version(),
                b.revision(),
                b.hash_hex(),
                signer_text(b.signer.as_ref())
            ),
            None => format!(
                "aegis-filter {VERSION} started; no embedded bundle (the configuration must \
                 give `bundle`)"
            ),
        };
        ProxyHost.log(Level::Info, &line);
        true
    }

    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let result = self.load_embedded().and_then(|()| {
            let bytes = match hostcalls::get_buffer(
                BufferType::PluginConfiguration,
                0,
                plugin_configuration_size,
            ) {
                Ok(b) => b.unwrap_or_default(),
                Err(s) => return Err(format!("cannot read the plugin configuration: {s:?}")),
            };
            Shared::configure(
                &bytes,
                self.embedded.as_ref(),
                Rc::clone(&self.metrics),
                Rc::clone(&self.ids),
            )
        });
        match result {
            Ok(shared) => {
                ProxyHost.log(Level::Info, &format!("aegis: ready: {}", shared.summary()));
                Root::prepare(&shared);
                let tick = Root::tick_period(&shared).unwrap_or(Duration::ZERO);
                if let Err(e) = hostcalls::set_tick_period(tick) {
                    ProxyHost.log(
                        Level::Warn,
                        &format!("aegis: no ticks, so no bundle polling: {e:?}"),
                    );
                }
                self.shared = Some(Rc::new(shared));
                true
            }
            Err(e) => {
                ProxyHost.log(Level::Error, &format!("aegis: configuration rejected: {e}"));
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let Some(cp) = shared.control.as_ref() else {
            return;
        };
        if let Some(b) = self
            .poller
            .adopt(&ProxyHost, &shared.bundle, &shared.trusted_keys)
        {
            self.count_reload(Outcome::Loaded);
            self.swap(&shared, b, "loaded from another worker");
        }
        let now = ProxyHost.now_nanos();
        self.settle(&shared, cp, now);
        self.poller.poll(&ProxyHost, cp, now);
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http {
            stream: Stream::new(ProxyHost, self.shared.clone()),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One per HTTP stream.
struct Http {
    stream: Stream<ProxyHost>,
}

fn action(flow: Flow) -> Action {
    match flow {
        Flow::Continue => Action::Continue,
        Flow::Pause => Action::Pause,
    }
}

impl Context for Http {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        self.stream.on_call_response(token_id, body_size);
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        action(self.stream.on_request_headers(end_of_stream))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(self.stream.on_request_body(body_size, end_of_stream))
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        action(self.stream.on_request_trailers())
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        action(self.stream.on_response_headers())
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(self.stream.on_response_body(body_size, end_of_stream))
    }
}
