//! The proxy-wasm ABI 0.2.1 host side: the `env` imports a filter built
//! with the proxy-wasm Rust SDK (0.2.x) may reference, over the state kept
//! in the wasmtime `Store`.
//!
//! Every call answers with the status Envoy gives in the same situation
//! (`Ok`, `NotFound`, `BadArgument`, ...). A guest that passes pointers
//! outside its memory, or a malformed header map, gets a trap with a
//! message naming the call: that is a filter bug, and a trap fails the
//! test that drove it.
//!
//! `proxy_http_call` goes to the clusters of [`State::clusters`]
//! ([`crate::callout`] says what Envoy does and what is modelled); its
//! response is read through the `HttpCallResponse*` map and buffer types
//! while [`State::call_response`] is set. Shared data lives in a
//! [`SharedData`] store that the VMs of one [`crate::Process`] share.
//!
//! Calls the filter has no business making yet (gRPC callouts, foreign
//! functions) answer like a proxy without the feature would and are
//! recorded in [`State::unsupported_calls`], so tests can insist on none.

use crate::callout::{self, CallResponse, HttpCall};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wasmtime::{Caller, Extern, Linker, Memory};
use wasmtime_wasi::p1::WasiP1Ctx;

/// Status codes of the ABI.
pub mod status {
    pub const OK: i32 = 0;
    pub const NOT_FOUND: i32 = 1;
    pub const BAD_ARGUMENT: i32 = 2;
    pub const SERIALIZATION_FAILURE: i32 = 3;
    pub const PARSE_FAILURE: i32 = 4;
    pub const EMPTY: i32 = 7;
    pub const CAS_MISMATCH: i32 = 8;
    pub const INTERNAL_FAILURE: i32 = 10;
    pub const BROKEN_CONNECTION: i32 = 11;
}

/// Map types of the ABI.
mod map_type {
    pub const HTTP_REQUEST_HEADERS: i32 = 0;
    pub const HTTP_REQUEST_TRAILERS: i32 = 1;
    pub const HTTP_CALL_RESPONSE_HEADERS: i32 = 6;
    pub const HTTP_CALL_RESPONSE_TRAILERS: i32 = 7;
    pub const LAST: i32 = 7;
}

/// Buffer types of the ABI.
mod buffer_type {
    pub const HTTP_REQUEST_BODY: i32 = 0;
    pub const HTTP_CALL_RESPONSE_BODY: i32 = 4;
    pub const VM_CONFIGURATION: i32 = 6;
    pub const PLUGIN_CONFIGURATION: i32 = 7;
    pub const LAST: i32 = 8;
}

/// Stream types of the ABI (`proxy_continue_stream`, `proxy_close_stream`).
mod stream_type {
    pub const HTTP_REQUEST: i32 = 0;
    pub const LAST: i32 = 3;
}

/// Every `env` function this host defines: the proxy-wasm 0.2.1 imports of
/// the Rust SDK.
pub const PROXY_IMPORTS: &[&str] = &[
    "proxy_log",
    "proxy_get_log_level",
    "proxy_get_current_time_nanoseconds",
    "proxy_set_tick_period_milliseconds",
    "proxy_get_buffer_bytes",
    "proxy_set_buffer_bytes",
    "proxy_get_header_map_pairs",
    "proxy_set_header_map_pairs",
    "proxy_get_header_map_value",
    "proxy_add_header_map_value",
    "proxy_replace_header_map_value",
    "proxy_remove_header_map_value",
    "proxy_get_property",
    "proxy_set_property",
    "proxy_get_shared_data",
    "proxy_set_shared_data",
    "proxy_register_shared_queue",
    "proxy_resolve_shared_queue",
    "proxy_dequeue_shared_queue",
    "proxy_enqueue_shared_queue",
    "proxy_continue_stream",
    "proxy_close_stream",
    "proxy_send_local_response",
    "proxy_http_call",
    "proxy_grpc_call",
    "proxy_grpc_stream",
    "proxy_grpc_send",
    "proxy_grpc_cancel",
    "proxy_grpc_close",
    "proxy_get_status",
    "proxy_set_effective_context",
    "proxy_call_foreign_function",
    "proxy_done",
    "proxy_define_metric",
    "proxy_increment_metric",
    "proxy_record_metric",
    "proxy_get_metric",
];

/// What the host's clock says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// The machine's wall clock.
    System,
    /// A fixed instant, nanoseconds since the Unix epoch.
    Fixed(u64),
}

impl Clock {
    /// A fixed clock at `secs` seconds since the Unix epoch (negative: 0).
    pub fn at_unix_secs(secs: i64) -> Clock {
        Clock::Fixed(
            u64::try_from(secs)
                .unwrap_or(0)
                .saturating_mul(1_000_000_000),
        )
    }

    pub fn now_nanos(self) -> u64 {
        match self {
            Clock::Fixed(n) => n,
            Clock::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        }
    }
}

/// Metric kinds, numbered as in the ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric the guest defined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metric {
    /// The name as defined (Envoy prefixes it with `wasmcustom.`).
    pub name: String,
    pub kind: MetricKind,
    /// Counter or gauge value.
    pub value: i64,
    /// Histogram samples, in order.
    pub samples: Vec<u64>,
}

/// One HTTP stream as the host sees it.
#[derive(Debug, Default)]
pub struct StreamState {
    pub context_id: u32,
    /// Request headers, pseudo-headers first, names lowercase.
    pub headers: Vec<(String, Vec<u8>)>,
    pub trailers: Vec<(String, Vec<u8>)>,
    /// The body the filter currently sees: what it has buffered plus the
    /// chunk being delivered.
    pub buffer: Vec<u8>,
    /// Set once the headers went upstream (a snapshot of them).
    pub headers_sent: Option<Vec<(String, Vec<u8>)>>,
    /// Body bytes that went upstream.
    pub body_sent: Vec<u8>,
    pub local_response: Option<crate::LocalResponse>,
    /// `proxy_continue_stream(HttpRequest)` calls.
    pub resumed: bool,
    /// `proxy_close_stream(HttpRequest)` calls.
    pub reset: bool,
    /// Filter state written with `proxy_set_property`, by `wasm.<path>`.
    pub properties: BTreeMap<String, Vec<u8>>,
    /// Request header edits made after the headers went upstream (they
    /// have no effect in a real proxy).
    pub late_header_edits: Vec<String>,
}

/// Everything the host keeps for one VM (one `Store`).
pub struct State {
    pub wasi: WasiP1Ctx,
    pub stdout: wasmtime_wasi::p2::pipe::MemoryOutputPipe,
    pub stderr: wasmtime_wasi::p2::pipe::MemoryOutputPipe,
    pub root_id: u32,
    pub plugin_name: String,
    pub vm_config: Vec<u8>,
    pub plugin_config: Vec<u8>,
    pub clock: Clock,
    /// What `proxy_get_log_level` answers (0 = trace: log everything).
    pub log_level: i32,
    pub logs: Vec<(u32, String)>,
    pub effective_context: u32,
    pub stream: Option<StreamState>,
    /// Properties set outside any stream (root context).
    pub root_properties: BTreeMap<String, Vec<u8>>,
    pub metrics: Vec<Metric>,
    pub tick_period_ms: u32,
    pub done_calls: u32,
    /// Envoy's `vm_config.vm_id`: shared data is kept per VM id.
    pub vm_id: String,
    /// The proxy process's shared data (private unless the VM was made by
    /// a [`crate::Process`]).
    pub shared_data: Arc<Mutex<SharedData>>,
    pub queues: Vec<(String, std::collections::VecDeque<Vec<u8>>)>,
    /// Calls of features this host does not provide, with their arguments.
    pub unsupported_calls: Vec<String>,
    /// Envoy clusters `proxy_http_call` can reach, by name.
    pub clusters: BTreeMap<String, SocketAddr>,
    /// Every `proxy_http_call`, in order, with its response once delivered.
    pub calls: Vec<HttpCall>,
    pub next_call_token: u32,
    /// Calls dispatched whose response has not been delivered.
    pub calls_in_flight: usize,
    /// The background threads answer here: (token, response).
    pub responses_tx: Sender<(u32, CallResponse)>,
    pub responses_rx: Receiver<(u32, CallResponse)>,
    /// The response being delivered in `proxy_on_http_call_response`.
    pub call_response: Option<CallResponse>,
    /// The root context's `proxy_get_status` (code, message).
    pub root_status: (u32, String),
}

/// Envoy's shared data (proxy-wasm-cpp-host `SharedData`): one store per
/// proxy process, shared by its VMs, keyed by VM id and key. CAS values come
/// from one counter for the whole store, starting at 1 and skipping 0; a
/// set with `cas` 0 is unconditional, a set of a new key always succeeds,
/// and a set of an existing key with another non-zero `cas` is
/// `CasMismatch`.
#[derive(Debug)]
pub struct SharedData {
    entries: BTreeMap<(String, String), (Vec<u8>, u32)>,
    next_cas: u32,
}

impl Default for SharedData {
    fn default() -> Self {
        SharedData {
            entries: BTreeMap::new(),
            next_cas: 1,
        }
    }
}

impl SharedData {
    /// The value and CAS of `key` for VMs with `vm_id`.
    pub fn get(&self, vm_id: &str, key: &str) -> Option<(Vec<u8>, u32)> {
        self.entries
            .get(&(vm_id.to_string(), key.to_string()))
            .cloned()
    }

    /// Sets `key`; the ABI status.
    pub fn set(&mut self, vm_id: &str, key: &str, value: Vec<u8>, cas: u32) -> i32 {
        let cas_now = self.next_cas;
        let entry = (vm_id.to_string(), key.to_string());
        match self.entries.get_mut(&entry) {
            Some(current) => {
                if cas != 0 && cas != current.1 {
                    return status::CAS_MISMATCH;
                }
                *current = (value, cas_now);
            }
            None => {
                self.entries.insert(entry, (value, cas_now));
            }
        }
        self.next_cas = self.next_cas.wrapping_add(1).max(1);
        status::OK
    }
}

/// Locks a shared store; a panic elsewhere while holding it leaves plain
/// data behind, still usable.
pub fn lock(shared: &Mutex<SharedData>) -> std::sync::MutexGuard<'_, SharedData> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

impl State {
    pub fn new(
        wasi: WasiP1Ctx,
        stdout: wasmtime_wasi::p2::pipe::MemoryOutputPipe,
        stderr: wasmtime_wasi::p2::pipe::MemoryOutputPipe,
    ) -> State {
        let (responses_tx, responses_rx) = std::sync::mpsc::channel();
        State {
            wasi,
            stdout,
            stderr,
            root_id: 1,
            plugin_name: "aegis".into(),
            vm_config: Vec::new(),
            plugin_config: Vec::new(),
            clock: Clock::System,
            log_level: 0,
            logs: Vec::new(),
            effective_context: 0,
            stream: None,
            root_properties: BTreeMap::new(),
            metrics: Vec::new(),
            tick_period_ms: 0,
            done_calls: 0,
            vm_id: String::new(),
            shared_data: Arc::default(),
            queues: Vec::new(),
            unsupported_calls: Vec::new(),
            clusters: BTreeMap::new(),
            calls: Vec::new(),
            next_call_token: 1,
            calls_in_flight: 0,
            responses_tx,
            responses_rx,
            call_response: None,
            root_status: (0, String::new()),
        }
    }

    /// The stream the effective context belongs to.
    fn stream_mut(&mut self) -> Option<&mut StreamState> {
        let ctx = self.effective_context;
        self.stream.as_mut().filter(|s| s.context_id == ctx)
    }

    fn stream(&self) -> Option<&StreamState> {
        let ctx = self.effective_context;
        self.stream.as_ref().filter(|s| s.context_id == ctx)
    }
}

type Ctx<'a> = Caller<'a, State>;
type R<T> = wasmtime::Result<T>;

fn memory(c: &mut Ctx<'_>) -> R<Memory> {
    c.get_export("memory")
        .and_then(Extern::into_memory)
        .ok_or_else(|| wasmtime::format_err!("the module exports no `memory`"))
}

fn span(ptr: i32, len: i32) -> (usize, usize) {
    (ptr as u32 as usize, len as u32 as usize)
}

/// Guest bytes `[ptr, ptr + len)`.
fn read(c: &mut Ctx<'_>, call: &str, ptr: i32, len: i32) -> R<Vec<u8>> {
    let (start, len) = span(ptr, len);
    let mem = memory(c)?;
    let data = mem.data(&*c);
    start
        .checked_add(len)
        .and_then(|end| data.get(start..end))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| {
            wasmtime::format_err!(
                "{call}: guest range {start}..+{len} is outside linear memory ({} bytes)",
                data.len()
            )
        })
}

fn read_string(c: &mut Ctx<'_>, call: &str, ptr: i32, len: i32) -> R<String> {
    let bytes = read(c, call, ptr, len)?;
    String::from_utf8(bytes).map_err(|_| wasmtime::format_err!("{call}: string is not UTF-8"))
}

fn write(c: &mut Ctx<'_>, call: &str, ptr: i32, bytes: &[u8]) -> R<()> {
    let mem = memory(c)?;
    mem.write(&mut *c, ptr as u32 as usize, bytes).map_err(|_| {
        wasmtime::format_err!(
            "{call}: cannot write {} bytes at guest address {}",
            bytes.len(),
            ptr as u32
        )
    })
}

fn write_u32(c: &mut Ctx<'_>, call: &str, ptr: i32, v: u32) -> R<()> {
    write(c, call, ptr, &v.to_le_bytes())
}

fn write_u64(c: &mut Ctx<'_>, call: &str, ptr: i32, v: u64) -> R<()> {
    write(c, call, ptr, &v.to_le_bytes())
}

/// Allocates `len` bytes in the guest with its exported allocator.
fn allocate(c: &mut Ctx<'_>, call: &str, len: usize) -> R<i32> {
    let f = ["proxy_on_memory_allocate", "malloc"]
        .iter()
        .find_map(|name| c.get_export(name).and_then(Extern::into_func))
        .ok_or_else(|| {
            wasmtime::format_err!(
                "{call}: the module exports neither `proxy_on_memory_allocate` nor `malloc`"
            )
        })?;
    let f = f.typed::<i32, i32>(&*c)?;
    let size =
        i32::try_from(len).map_err(|_| wasmtime::format_err!("{call}: {len} bytes is too much"))?;
    let ptr = f.call(&mut *c, size)?;
    if ptr == 0 {
        wasmtime::bail!("{call}: the guest allocator returned null for {len} bytes");
    }
    Ok(ptr)
}

/// Copies `data` into guest memory and stores its address and size at
/// `ptr_out` / `size_out`. Empty data is returned as null / 0 without an
/// allocation (the SDK reads null as "no data").
fn return_bytes(c: &mut Ctx<'_>, call: &str, data: &[u8], ptr_out: i32, size_out: i32) -> R<()> {
    if data.is_empty() {
        write_u32(c, call, ptr_out, 0)?;
        return write_u32(c, call, size_out, 0);
    }
    let ptr = allocate(c, call, data.len())?;
    write(c, call, ptr, data)?;
    write_u32(c, call, ptr_out, ptr as u32)?;
    write_u32(c, call, size_out, data.len() as u32)
}

/// The ABI's map encoding: count, (key len, value len) pairs, then each
/// key and value followed by a NUL.
pub fn serialize_map(pairs: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// Parses the ABI's map encoding; `None` when malformed.
pub fn deserialize_map(bytes: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let u32_at = |at: usize| -> Option<usize> {
        let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(u32::from_le_bytes(b) as usize)
    };
    let n = u32_at(0)?;
    let mut p = n.checked_mul(8)?.checked_add(4)?;
    let mut out = Vec::with_capacity(n.min(1024));
    for i in 0..n {
        let klen = u32_at(4 + i * 8)?;
        let vlen = u32_at(8 + i * 8)?;
        let key = bytes.get(p..p.checked_add(klen)?)?;
        p = p.checked_add(klen)?;
        if bytes.get(p) != Some(&0) {
            return None;
        }
        p += 1;
        let value = bytes.get(p..p.checked_add(vlen)?)?;
        p = p.checked_add(vlen)?;
        if bytes.get(p) != Some(&0) {
            return None;
        }
        p += 1;
        out.push((String::from_utf8(key.to_vec()).ok()?, value.to_vec()));
    }
    Some(out)
}

/// A property path as given by the guest: parts separated by NUL.
fn property_key(path: &[u8]) -> String {
    path.split(|b| *b == 0)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect::<Vec<_>>()
        .join(".")
}

fn header<'h>(headers: &'h [(String, Vec<u8>)], name: &str) -> Option<&'h [u8]> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// Read-only properties the host answers (a small part of Envoy's set).
fn builtin_property(s: &State, key: &str) -> Option<Vec<u8>> {
    let stream = s.stream();
    let h = |name: &str| stream.and_then(|st| header(&st.headers, name).map(<[u8]>::to_vec));
    match key {
        "plugin_name" => Some(s.plugin_name.clone().into_bytes()),
        "plugin_root_id" => Some(s.plugin_name.clone().into_bytes()),
        "plugin_vm_id" => Some(Vec::new()),
        "request.method" => h(":method"),
        "request.path" => h(":path"),
        "request.host" => h(":authority"),
        "request.scheme" => h(":scheme"),
        "request.id" => h("x-request-id"),
        _ => None,
    }
}

/// Which header map a map type names, for the current stream.
fn map_mut(s: &mut State, map: i32) -> Option<&mut Vec<(String, Vec<u8>)>> {
    let st = s.stream_mut()?;
    match map {
        map_type::HTTP_REQUEST_HEADERS => Some(&mut st.headers),
        map_type::HTTP_REQUEST_TRAILERS => Some(&mut st.trailers),
        _ => None,
    }
}

/// The response headers of the call being delivered (Envoy reads them from
/// the root context, so from any effective context); trailers are always
/// empty. `None` outside a delivery and for a reset.
fn call_map(s: &State, map: i32) -> Option<&[(String, Vec<u8>)]> {
    let r = s.call_response.as_ref().filter(|r| !r.reset)?;
    match map {
        map_type::HTTP_CALL_RESPONSE_HEADERS => Some(&r.headers),
        _ => Some(&[]),
    }
}

fn is_call_map(map: i32) -> bool {
    map == map_type::HTTP_CALL_RESPONSE_HEADERS || map == map_type::HTTP_CALL_RESPONSE_TRAILERS
}

fn map_ref(s: &State, map: i32) -> Option<&Vec<(String, Vec<u8>)>> {
    let st = s.stream()?;
    match map {
        map_type::HTTP_REQUEST_HEADERS => Some(&st.headers),
        map_type::HTTP_REQUEST_TRAILERS => Some(&st.trailers),
        _ => None,
    }
}

/// Notes a request-header edit that comes after the headers went upstream.
fn note_header_edit(s: &mut State, map: i32, what: String) {
    if map != map_type::HTTP_REQUEST_HEADERS {
        return;
    }
    if let Some(st) = s.stream_mut() {
        if st.headers_sent.is_some() {
            st.late_header_edits.push(what);
        }
    }
}

fn valid_map(map: i32) -> bool {
    (0..=map_type::LAST).contains(&map)
}

/// Adds every `env` import to `linker`.
pub fn add_to_linker(linker: &mut Linker<State>) -> R<()> {
    linker.func_wrap(
        "env",
        "proxy_log",
        |mut c: Ctx<'_>, level: i32, ptr: i32, len: i32| -> R<i32> {
            let msg = read(&mut c, "proxy_log", ptr, len)?;
            let msg = String::from_utf8_lossy(&msg).into_owned();
            c.data_mut().logs.push((level as u32, msg));
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut c: Ctx<'_>, out: i32| -> R<i32> {
            let level = c.data().log_level;
            write_u32(&mut c, "proxy_get_log_level", out, level as u32)?;
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut c: Ctx<'_>, out: i32| -> R<i32> {
            let now = c.data().clock.now_nanos();
            write_u64(&mut c, "proxy_get_current_time_nanoseconds", out, now)?;
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut c: Ctx<'_>, period: i32| -> R<i32> {
            c.data_mut().tick_period_ms = period as u32;
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: Ctx<'_>, kind: i32, start: i32, max: i32, ptr_out: i32, size_out: i32| -> R<i32> {
            const CALL: &str = "proxy_get_buffer_bytes";
            if !(0..=buffer_type::LAST).contains(&kind) {
                return Ok(status::BAD_ARGUMENT);
            }
            let s = c.data();
            let whole: Option<&[u8]> = match kind {
                buffer_type::HTTP_REQUEST_BODY => s.stream().map(|st| st.buffer.as_slice()),
                buffer_type::HTTP_CALL_RESPONSE_BODY => s
                    .call_response
                    .as_ref()
                    .filter(|r| !r.reset)
                    .map(|r| r.body.as_slice()),
                buffer_type::VM_CONFIGURATION => Some(&s.vm_config),
                buffer_type::PLUGIN_CONFIGURATION => Some(&s.plugin_config),
                _ => None,
            };
            let Some(whole) = whole else {
                return Ok(status::NOT_FOUND);
            };
            let (start, max) = span(start, max);
            // Envoy: a start past the end is a bad argument; the length is
            // clamped to what there is.
            if start > whole.len() {
                return Ok(status::BAD_ARGUMENT);
            }
            let end = start.saturating_add(max).min(whole.len());
            let data = whole.get(start..end).unwrap_or_default().to_vec();
            return_bytes(&mut c, CALL, &data, ptr_out, size_out)?;
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut c: Ctx<'_>, kind: i32, start: i32, size: i32, ptr: i32, len: i32| -> R<i32> {
            let data = read(&mut c, "proxy_set_buffer_bytes", ptr, len)?;
            if kind != buffer_type::HTTP_REQUEST_BODY {
                return Ok(if (0..=buffer_type::LAST).contains(&kind) {
                    status::NOT_FOUND
                } else {
                    status::BAD_ARGUMENT
                });
            }
            let Some(st) = c.data_mut().stream_mut() else {
                return Ok(status::NOT_FOUND);
            };
            let (start, size) = span(start, size);
            // Envoy's rules: at 0 with a size covering the buffer, replace
            // it; at 0 with size 0, prepend; at or past the end, append;
            // anything else is unsupported.
            if start == 0 {
                if size == 0 {
                    let mut v = data;
                    v.extend_from_slice(&st.buffer);
                    st.buffer = v;
                } else if size >= st.buffer.len() {
                    st.buffer = data;
                } else {
                    return Ok(status::BAD_ARGUMENT);
                }
            } else if start >= st.buffer.len() {
                st.buffer.extend_from_slice(&data);
            } else {
                return Ok(status::BAD_ARGUMENT);
            }
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: Ctx<'_>, map: i32, ptr_out: i32, size_out: i32| -> R<i32> {
            if !valid_map(map) {
                return Ok(status::BAD_ARGUMENT);
            }
            let bytes = if is_call_map(map) {
                call_map(c.data(), map).map(serialize_map)
            } else {
                map_ref(c.data(), map).map(|m| serialize_map(m))
            };
            // Maps this host does not have (responses, callouts) are empty.
            let bytes = bytes.unwrap_or_default();
            return_bytes(
                &mut c,
                "proxy_get_header_map_pairs",
                &bytes,
                ptr_out,
                size_out,
            )?;
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut c: Ctx<'_>, map: i32, ptr: i32, len: i32| -> R<i32> {
            const CALL: &str = "proxy_set_header_map_pairs";
            let bytes = read(&mut c, CALL, ptr, len)?;
            let pairs = deserialize_map(&bytes)
                .ok_or_else(|| wasmtime::format_err!("{CALL}: malformed header map"))?;
            if !valid_map(map) || is_call_map(map) {
                return Ok(status::BAD_ARGUMENT);
            }
            note_header_edit(c.data_mut(), map, "set all headers".into());
            let Some(m) = map_mut(c.data_mut(), map) else {
                return Ok(status::NOT_FOUND);
            };
            *m = pairs
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect();
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: Ctx<'_>, map: i32, kp: i32, kl: i32, ptr_out: i32, size_out: i32| -> R<i32> {
            const CALL: &str = "proxy_get_header_map_value";
            let key = read_string(&mut c, CALL, kp, kl)?;
            if !valid_map(map) {
                return Ok(status::BAD_ARGUMENT);
            }
            let value = if is_call_map(map) {
                // Envoy: a map that is not there is a bad argument.
                let Some(m) = call_map(c.data(), map) else {
                    return Ok(status::BAD_ARGUMENT);
                };
                header(m, &key).map(<[u8]>::to_vec)
            } else {
                map_ref(c.data(), map).and_then(|m| header(m, &key).map(<[u8]>::to_vec))
            };
            match value {
                Some(v) => {
                    return_bytes(&mut c, CALL, &v, ptr_out, size_out)?;
                    Ok(status::OK)
                }
                None => Ok(status::NOT_FOUND),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut c: Ctx<'_>, map: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> R<i32> {
            const CALL: &str = "proxy_add_header_map_value";
            let key = read_string(&mut c, CALL, kp, kl)?.to_ascii_lowercase();
            let value = read(&mut c, CALL, vp, vl)?;
            if !valid_map(map) || is_call_map(map) {
                return Ok(status::BAD_ARGUMENT);
            }
            note_header_edit(c.data_mut(), map, format!("add `{key}`"));
            let Some(m) = map_mut(c.data_mut(), map) else {
                return Ok(status::NOT_FOUND);
            };
            m.push((key, value));
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut c: Ctx<'_>, map: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> R<i32> {
            const CALL: &str = "proxy_replace_header_map_value";
            let key = read_string(&mut c, CALL, kp, kl)?.to_ascii_lowercase();
            let value = read(&mut c, CALL, vp, vl)?;
            if !valid_map(map) || is_call_map(map) {
                return Ok(status::BAD_ARGUMENT);
            }
            note_header_edit(c.data_mut(), map, format!("replace `{key}`"));
            let Some(m) = map_mut(c.data_mut(), map) else {
                return Ok(status::NOT_FOUND);
            };
            // Like Envoy's `setCopy`: the first entry takes the value, the
            // others go; a missing header is added.
            match m.iter().position(|(k, _)| *k == key) {
                Some(i) => {
                    if let Some(slot) = m.get_mut(i) {
                        slot.1 = value;
                    }
                    let mut n = 0;
                    m.retain(|(k, _)| {
                        let keep = *k != key || n == i;
                        n += 1;
                        keep
                    });
                }
                None => m.push((key, value)),
            }
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut c: Ctx<'_>, map: i32, kp: i32, kl: i32| -> R<i32> {
            const CALL: &str = "proxy_remove_header_map_value";
            let key = read_string(&mut c, CALL, kp, kl)?.to_ascii_lowercase();
            if !valid_map(map) || is_call_map(map) {
                return Ok(status::BAD_ARGUMENT);
            }
            note_header_edit(c.data_mut(), map, format!("remove `{key}`"));
            let Some(m) = map_mut(c.data_mut(), map) else {
                return Ok(status::NOT_FOUND);
            };
            m.retain(|(k, _)| *k != key);
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_property",
        |mut c: Ctx<'_>, pp: i32, pl: i32, ptr_out: i32, size_out: i32| -> R<i32> {
            const CALL: &str = "proxy_get_property";
            let path = read(&mut c, CALL, pp, pl)?;
            let key = property_key(&path);
            let s = c.data();
            let props = s.stream().map_or(&s.root_properties, |st| &st.properties);
            let value = props
                .get(&format!("wasm.{key}"))
                .or_else(|| props.get(&key))
                .cloned()
                .or_else(|| builtin_property(s, &key));
            match value {
                Some(v) => {
                    return_bytes(&mut c, CALL, &v, ptr_out, size_out)?;
                    Ok(status::OK)
                }
                None => Ok(status::NOT_FOUND),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_property",
        |mut c: Ctx<'_>, pp: i32, pl: i32, vp: i32, vl: i32| -> R<i32> {
            const CALL: &str = "proxy_set_property";
            let path = read(&mut c, CALL, pp, pl)?;
            let value = read(&mut c, CALL, vp, vl)?;
            if path.is_empty() {
                return Ok(status::BAD_ARGUMENT);
            }
            // Envoy keeps it as filter state `wasm.<path>`.
            let key = format!("wasm.{}", property_key(&path));
            let s = c.data_mut();
            match s.stream_mut() {
                Some(st) => st.properties.insert(key, value),
                None => s.root_properties.insert(key, value),
            };
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: Ctx<'_>, kp: i32, kl: i32, ptr_out: i32, size_out: i32, cas_out: i32| -> R<i32> {
            const CALL: &str = "proxy_get_shared_data";
            let key = read_string(&mut c, CALL, kp, kl)?;
            let s = c.data();
            let found = lock(&s.shared_data).get(&s.vm_id, &key);
            let Some((value, cas)) = found else {
                return Ok(status::NOT_FOUND);
            };
            return_bytes(&mut c, CALL, &value, ptr_out, size_out)?;
            write_u32(&mut c, CALL, cas_out, cas)?;
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut c: Ctx<'_>, kp: i32, kl: i32, vp: i32, vl: i32, cas: i32| -> R<i32> {
            const CALL: &str = "proxy_set_shared_data";
            let key = read_string(&mut c, CALL, kp, kl)?;
            let value = read(&mut c, CALL, vp, vl)?;
            let s = c.data();
            let status = lock(&s.shared_data).set(&s.vm_id, &key, value, cas as u32);
            Ok(status)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_register_shared_queue",
        |mut c: Ctx<'_>, np: i32, nl: i32, id_out: i32| -> R<i32> {
            const CALL: &str = "proxy_register_shared_queue";
            let name = read_string(&mut c, CALL, np, nl)?;
            let queues = &mut c.data_mut().queues;
            let i = match queues.iter().position(|(n, _)| *n == name) {
                Some(i) => i,
                None => {
                    queues.push((name, Default::default()));
                    queues.len() - 1
                }
            };
            write_u32(&mut c, CALL, id_out, i as u32 + 1)?;
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |mut c: Ctx<'_>, _vp: i32, _vl: i32, np: i32, nl: i32, id_out: i32| -> R<i32> {
            const CALL: &str = "proxy_resolve_shared_queue";
            let name = read_string(&mut c, CALL, np, nl)?;
            match c.data().queues.iter().position(|(n, _)| *n == name) {
                Some(i) => {
                    write_u32(&mut c, CALL, id_out, i as u32 + 1)?;
                    Ok(status::OK)
                }
                None => Ok(status::NOT_FOUND),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        |mut c: Ctx<'_>, id: i32, ptr_out: i32, size_out: i32| -> R<i32> {
            let i = (id as u32 as usize).wrapping_sub(1);
            let Some((_, q)) = c.data_mut().queues.get_mut(i) else {
                return Ok(status::NOT_FOUND);
            };
            let Some(item) = q.pop_front() else {
                return Ok(status::EMPTY);
            };
            return_bytes(
                &mut c,
                "proxy_dequeue_shared_queue",
                &item,
                ptr_out,
                size_out,
            )?;
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        |mut c: Ctx<'_>, id: i32, vp: i32, vl: i32| -> R<i32> {
            let value = read(&mut c, "proxy_enqueue_shared_queue", vp, vl)?;
            let i = (id as u32 as usize).wrapping_sub(1);
            let Some((_, q)) = c.data_mut().queues.get_mut(i) else {
                return Ok(status::NOT_FOUND);
            };
            q.push_back(value);
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut c: Ctx<'_>, kind: i32| -> R<i32> {
            if !(0..=stream_type::LAST).contains(&kind) {
                return Ok(status::BAD_ARGUMENT);
            }
            if kind == stream_type::HTTP_REQUEST {
                if let Some(st) = c.data_mut().stream_mut() {
                    st.resumed = true;
                    return Ok(status::OK);
                }
                return Ok(status::NOT_FOUND);
            }
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_close_stream",
        |mut c: Ctx<'_>, kind: i32| -> R<i32> {
            if !(0..=stream_type::LAST).contains(&kind) {
                return Ok(status::BAD_ARGUMENT);
            }
            if kind == stream_type::HTTP_REQUEST {
                if let Some(st) = c.data_mut().stream_mut() {
                    st.reset = true;
                    return Ok(status::OK);
                }
                return Ok(status::NOT_FOUND);
            }
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut c: Ctx<'_>,
         code: i32,
         dp: i32,
         dl: i32,
         bp: i32,
         bl: i32,
         hp: i32,
         hl: i32,
         grpc: i32|
         -> R<i32> {
            const CALL: &str = "proxy_send_local_response";
            let details = read(&mut c, CALL, dp, dl)?;
            let body = read(&mut c, CALL, bp, bl)?;
            let headers = read(&mut c, CALL, hp, hl)?;
            let headers = deserialize_map(&headers)
                .ok_or_else(|| wasmtime::format_err!("{CALL}: malformed header map"))?;
            let Some(st) = c.data_mut().stream_mut() else {
                return Ok(status::NOT_FOUND);
            };
            if st.local_response.is_some() {
                wasmtime::bail!("{CALL}: a second local response on the same stream");
            }
            st.local_response = Some(crate::LocalResponse {
                status: code as u32,
                headers: headers
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                    .collect(),
                body,
                details: String::from_utf8_lossy(&details).into_owned(),
                grpc_status: grpc,
            });
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_http_call",
        |mut c: Ctx<'_>,
         up: i32,
         ul: i32,
         hp: i32,
         hl: i32,
         bp: i32,
         bl: i32,
         tp: i32,
         tl: i32,
         timeout: i32,
         token_out: i32|
         -> R<i32> {
            const CALL: &str = "proxy_http_call";
            let cluster = String::from_utf8_lossy(&read(&mut c, CALL, up, ul)?).into_owned();
            let headers = deserialize_map(&read(&mut c, CALL, hp, hl)?)
                .ok_or_else(|| wasmtime::format_err!("{CALL}: malformed header map"))?;
            let body = read(&mut c, CALL, bp, bl)?;
            let trailers = deserialize_map(&read(&mut c, CALL, tp, tl)?)
                .ok_or_else(|| wasmtime::format_err!("{CALL}: malformed trailer map"))?;
            // Envoy lowercases names as it builds the request.
            let headers: Vec<(String, Vec<u8>)> = headers
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect();
            let s = c.data_mut();
            // Envoy's checks, in its order: the timeout, the cluster, the
            // pseudo-headers.
            let addr = s.clusters.get(&cluster).copied();
            let has = |name: &str| headers.iter().any(|(k, _)| k == name);
            let returned = match addr {
                _ if timeout < 0 => status::BAD_ARGUMENT,
                None => status::BAD_ARGUMENT,
                Some(_) if !(has(":path") && has(":method") && has(":authority")) => {
                    status::BAD_ARGUMENT
                }
                Some(_) => status::OK,
            };
            let token = if returned == status::OK {
                let t = s.next_call_token;
                s.next_call_token = t.wrapping_add(1).max(1);
                t
            } else {
                0
            };
            let text = |pairs: &[(String, Vec<u8>)]| -> Vec<(String, String)> {
                pairs
                    .iter()
                    .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                    .collect()
            };
            s.calls.push(HttpCall {
                token,
                returned,
                context_id: s.effective_context,
                cluster,
                headers: text(&headers),
                body: body.clone(),
                trailers: text(&trailers),
                timeout_ms: timeout as u32,
                response: None,
            });
            let Some(addr) = addr.filter(|_| returned == status::OK) else {
                return Ok(returned);
            };
            write_u32(&mut c, CALL, token_out, token)?;
            let s = c.data_mut();
            s.calls_in_flight += 1;
            let tx = s.responses_tx.clone();
            let limit = match timeout {
                0 => callout::NO_TIMEOUT_CAP,
                ms => Duration::from_millis(ms as u64),
            };
            let is_head = header(&headers, ":method") == Some(b"HEAD".as_slice());
            std::thread::spawn(move || {
                let response = callout::perform(addr, is_head, &headers, &body, limit);
                // The VM may be gone; then nobody is waiting.
                let _ = tx.send((token, response));
            });
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_call",
        |mut c: Ctx<'_>,
         up: i32,
         ul: i32,
         _sp: i32,
         _sl: i32,
         _mp: i32,
         _ml: i32,
         _ip: i32,
         _il: i32,
         _dp: i32,
         _dl: i32,
         _timeout: i32,
         _out: i32|
         -> R<i32> {
            let upstream = read(&mut c, "proxy_grpc_call", up, ul)?;
            c.data_mut().unsupported_calls.push(format!(
                "proxy_grpc_call(upstream of {} bytes)",
                upstream.len()
            ));
            Ok(status::PARSE_FAILURE)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_stream",
        |mut c: Ctx<'_>,
         _up: i32,
         _ul: i32,
         _sp: i32,
         _sl: i32,
         _mp: i32,
         _ml: i32,
         _ip: i32,
         _il: i32,
         _out: i32|
         -> R<i32> {
            c.data_mut()
                .unsupported_calls
                .push("proxy_grpc_stream".into());
            Ok(status::PARSE_FAILURE)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_send",
        |mut c: Ctx<'_>, token: i32, _p: i32, _l: i32, _end: i32| -> R<i32> {
            c.data_mut()
                .unsupported_calls
                .push(format!("proxy_grpc_send({})", token as u32));
            Ok(status::NOT_FOUND)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_cancel",
        |mut c: Ctx<'_>, token: i32| -> R<i32> {
            c.data_mut()
                .unsupported_calls
                .push(format!("proxy_grpc_cancel({})", token as u32));
            Ok(status::NOT_FOUND)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_close",
        |mut c: Ctx<'_>, token: i32| -> R<i32> {
            c.data_mut()
                .unsupported_calls
                .push(format!("proxy_grpc_close({})", token as u32));
            Ok(status::NOT_FOUND)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_status",
        |mut c: Ctx<'_>, code_out: i32, ptr_out: i32, size_out: i32| -> R<i32> {
            const CALL: &str = "proxy_get_status";
            // Envoy keeps the status on the context the call was made on:
            // the root context (after a reset: BrokenConnection, `reset`).
            // Stream contexts have made no call: 0, no message.
            let s = c.data();
            let (code, message) = if s.effective_context == s.root_id {
                s.root_status.clone()
            } else {
                (0, String::new())
            };
            write_u32(&mut c, CALL, code_out, code)?;
            return_bytes(&mut c, CALL, message.as_bytes(), ptr_out, size_out)?;
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut c: Ctx<'_>, id: i32| -> R<i32> {
            let id = id as u32;
            let s = c.data_mut();
            let known = id == s.root_id || s.stream.as_ref().is_some_and(|st| st.context_id == id);
            if !known {
                return Ok(status::BAD_ARGUMENT);
            }
            s.effective_context = id;
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |mut c: Ctx<'_>, np: i32, nl: i32, _ap: i32, _al: i32, _rp: i32, _rl: i32| -> R<i32> {
            let name = read(&mut c, "proxy_call_foreign_function", np, nl)?;
            c.data_mut().unsupported_calls.push(format!(
                "proxy_call_foreign_function(`{}`)",
                String::from_utf8_lossy(&name)
            ));
            Ok(status::NOT_FOUND)
        },
    )?;
    linker.func_wrap("env", "proxy_done", |mut c: Ctx<'_>| -> R<i32> {
        c.data_mut().done_calls += 1;
        Ok(status::OK)
    })?;
    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |mut c: Ctx<'_>, kind: i32, np: i32, nl: i32, id_out: i32| -> R<i32> {
            const CALL: &str = "proxy_define_metric";
            let name = read_string(&mut c, CALL, np, nl)?;
            let kind = match kind {
                0 => MetricKind::Counter,
                1 => MetricKind::Gauge,
                2 => MetricKind::Histogram,
                _ => return Ok(status::BAD_ARGUMENT),
            };
            let metrics = &mut c.data_mut().metrics;
            // Envoy hands out the same id for the same name.
            let i = match metrics
                .iter()
                .position(|m| m.name == name && m.kind == kind)
            {
                Some(i) => i,
                None => {
                    metrics.push(Metric {
                        name,
                        kind,
                        value: 0,
                        samples: Vec::new(),
                    });
                    metrics.len() - 1
                }
            };
            write_u32(&mut c, CALL, id_out, metric_id(i))?;
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_increment_metric",
        |mut c: Ctx<'_>, id: i32, by: i64| -> R<i32> {
            let Some(m) = metric(c.data_mut(), id) else {
                return Ok(status::NOT_FOUND);
            };
            match m.kind {
                MetricKind::Counter if by >= 0 => m.value = m.value.saturating_add(by),
                MetricKind::Gauge => m.value = m.value.saturating_add(by),
                MetricKind::Counter | MetricKind::Histogram => return Ok(status::BAD_ARGUMENT),
            }
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_record_metric",
        |mut c: Ctx<'_>, id: i32, value: i64| -> R<i32> {
            let value = value as u64;
            let Some(m) = metric(c.data_mut(), id) else {
                return Ok(status::NOT_FOUND);
            };
            match m.kind {
                MetricKind::Counter => {
                    m.value = m
                        .value
                        .saturating_add(i64::try_from(value).unwrap_or(i64::MAX))
                }
                MetricKind::Gauge => m.value = i64::try_from(value).unwrap_or(i64::MAX),
                MetricKind::Histogram => m.samples.push(value),
            }
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_metric",
        |mut c: Ctx<'_>, id: i32, out: i32| -> R<i32> {
            let value = match metric(c.data_mut(), id) {
                None => return Ok(status::NOT_FOUND),
                Some(m) if m.kind == MetricKind::Histogram => return Ok(status::BAD_ARGUMENT),
                Some(m) => m.value as u64,
            };
            write_u64(&mut c, "proxy_get_metric", out, value)?;
            Ok(status::OK)
        },
    )?;
    Ok(())
}

/// Metric ids start away from 0 so a forgotten id is caught.
const METRIC_ID_BASE: u32 = 100;

fn metric_id(index: usize) -> u32 {
    METRIC_ID_BASE + index as u32
}

fn metric(s: &mut State, id: i32) -> Option<&mut Metric> {
    let i = (id as u32).checked_sub(METRIC_ID_BASE)? as usize;
    s.metrics.get_mut(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_encoding_round_trips() {
        let pairs = vec![
            (":method".to_string(), b"GET".to_vec()),
            ("x-empty".to_string(), Vec::new()),
            ("x-bin".to_string(), vec![0xff, 0x00, 0x01]),
        ];
        let bytes = serialize_map(&pairs);
        assert_eq!(deserialize_map(&bytes).unwrap(), pairs);
        assert_eq!(deserialize_map(&[]).unwrap(), vec![]);
        assert_eq!(deserialize_map(&[0, 0, 0, 0]).unwrap(), vec![]);
    }

    #[test]
    fn malformed_maps_are_refused() {
        let mut bytes = serialize_map(&[("a".into(), b"b".to_vec())]);
        assert!(deserialize_map(bytes.get(..bytes.len() - 1).unwrap()).is_none());
        // A missing NUL terminator.
        let last = bytes.len() - 1;
        bytes[last] = b'x';
        assert!(deserialize_map(&bytes).is_none());
        // A count that does not fit.
        assert!(deserialize_map(&[9, 0, 0, 0]).is_none());
        assert!(deserialize_map(&[0xff, 0xff, 0xff, 0xff]).is_none());
    }

    #[test]
    fn property_paths_join_with_dots() {
        assert_eq!(property_key(b"aegis_decision"), "aegis_decision");
        assert_eq!(property_key(b"request\0path"), "request.path");
    }

    #[test]
    fn fixed_clock() {
        assert_eq!(Clock::at_unix_secs(2).now_nanos(), 2_000_000_000);
        assert_eq!(Clock::at_unix_secs(-5).now_nanos(), 0);
        assert!(Clock::System.now_nanos() > 1_600_000_000_000_000_000);
    }
}
