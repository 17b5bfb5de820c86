//! What the filter needs from the proxy, as a small trait.
//!
//! The stream logic (`stream.rs`) is written against [`Host`] so that it
//! runs natively in unit tests against a mock; the real implementation over
//! proxy-wasm hostcalls lives in `adapter.rs`, the only module that talks to
//! the proxy. Every method reports failure instead of trapping.

/// Log levels, as the proxy-wasm ABI numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
    Critical,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// What became of a write to shared data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    Written,
    /// The value changed since it was read (its CAS number is no longer
    /// the one given): nothing was written; read it again and retry.
    CasMismatch,
}

/// Calls into the proxy, in the context of the current stream (or of the
/// root context at configure time).
pub trait Host {
    /// Wall-clock time, nanoseconds since the Unix epoch.
    fn now_nanos(&self) -> u64;
    fn log(&self, level: Level, message: &str);
    /// All request headers, pseudo-headers (`:method`, `:path`, ...)
    /// included, in one call. Values that are not UTF-8 are converted
    /// lossily.
    fn request_headers(&self) -> Vec<(String, String)>;
    /// The buffered request body, at most `len` bytes; empty if none.
    fn request_body(&self, len: usize) -> Vec<u8>;
    /// Replaces the first `len` bytes of the buffered request body (all of
    /// it) with `body`.
    fn replace_request_body(&self, len: usize, body: &[u8]) -> Result<(), String>;
    /// Sets (`Some`) or removes (`None`) a request header.
    fn set_request_header(&self, name: &str, value: Option<&str>) -> Result<(), String>;
    /// Sets (`Some`) or removes (`None`) a header of the upstream's
    /// response (in its headers callback).
    fn set_response_header(&self, name: &str, value: Option<&str>) -> Result<(), String>;
    /// All response headers, `:status` included, in one call.
    fn response_headers(&self) -> Vec<(String, String)>;
    /// The buffered response body, at most `len` bytes; empty if none.
    fn response_body(&self, len: usize) -> Vec<u8>;
    /// Replaces the first `len` bytes of the buffered response body (all
    /// of it) with `body`.
    fn replace_response_body(&self, len: usize, body: &[u8]) -> Result<(), String>;
    /// The tool host the request's route stands for (base-URL mode): the
    /// route's `metadata.filter_metadata.aegis.host` in Envoy; `None` when
    /// the route names none.
    fn route_tool_host(&self) -> Option<String>;
    /// Answers the downstream with a local reply; the request never goes
    /// (further) upstream.
    fn send_local_response(
        &self,
        status: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), String>;
    /// Writes `wasm.<key>` filter state (readable by access logs as
    /// `%FILTER_STATE(wasm.<key>:PLAIN)%`).
    fn set_filter_state(&self, key: &str, value: &str) -> Result<(), String>;
    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, String>;
    fn increment_metric(&self, id: u32, by: i64) -> Result<(), String>;
    /// Records a histogram value, or sets a gauge.
    fn record_metric(&self, id: u32, value: u64) -> Result<(), String>;
    /// Starts an HTTP call to the Envoy cluster `cluster` (`headers`
    /// include `:method`, `:path` and `:authority`). The answer comes later,
    /// to the context that made the call, with the token returned here;
    /// Envoy ends the call after `timeout_ms`.
    fn dispatch_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout_ms: u64,
    ) -> Result<u32, String>;
    /// The headers of the call answer being delivered (`:status`
    /// included); none when the call failed or was reset.
    fn call_response_headers(&self) -> Vec<(String, String)>;
    /// The body of the call answer being delivered, at most `len` bytes.
    fn call_response_body(&self, len: usize) -> Vec<u8>;
    /// Lets a request the filter paused go on (upstream).
    fn resume_request(&self) -> Result<(), String>;
    /// Shared data: the proxy's key/value store, one per Envoy process,
    /// shared by the VMs of all its worker threads. `Ok(None)` when the key
    /// has no value; else the value and its CAS number (never 0).
    fn get_shared_data(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, String>;
    /// Writes shared data. With `cas`, only if the value is still the one
    /// that number was read with, else [`Stored::CasMismatch`]; without,
    /// unconditionally. A key with no value is written whatever `cas` says
    /// (Envoy's rule): there is no "create if absent".
    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<Stored, String>;
}
