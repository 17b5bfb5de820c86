//! A small proxy-wasm host on wasmtime that runs the real Aegis filter blob.
//!
//! [`Host`] compiles a module once (share it across tests); every
//! [`Host::plugin`] is a fresh VM (its own wasmtime `Store`, all host state
//! inside it, nothing global) that has been started and configured the way
//! Envoy does it. [`Plugin::request`] drives one HTTP request through the
//! filter's callbacks and reports what the proxy would have done: the local
//! reply, or the headers and body that went upstream, plus filter state,
//! logs and metrics.
//!
//! The proxy behaviour modelled is Envoy's (`filter/README.md`):
//! - A pause in the headers callback holds the headers only when the plugin
//!   has Envoy's `allow_on_headers_stop_iteration: true`
//!   ([`PluginOptions::hold_headers`]); without it Envoy stops everything
//!   and, unless the filter resumes the stream, the request stalls.
//! - A pause in a body callback buffers: the next callback sees the whole
//!   buffered body, and `proxy_set_buffer_bytes` edits that buffer.
//! - A local reply ends the stream; if the headers had already gone
//!   upstream, the upstream request is reset (it never gets the body).
//! - `proxy_http_call` reaches the clusters of [`PluginOptions::clusters`]
//!   (loopback HTTP/1.1 servers) from a background thread; the response
//!   is delivered later, never inside the hostcall, in the shapes Envoy's
//!   async client gives (a 504 `upstream request timeout`, a 503 for a
//!   refused connection, 0 headers for a reset: see [`callout`]). While a
//!   paused stream has calls outstanding, [`Plugin::request`] waits for
//!   them and delivers `proxy_on_http_call_response` to the root context
//!   (as Envoy does; the SDK maps the token to its context), then goes on
//!   as Envoy does after `proxy_continue_stream` or a local reply. The
//!   calls are in [`Outcome::calls`].
//! - [`Plugin::tick`] is Envoy's timer: `proxy_on_tick`, then the
//!   responses of the calls it made.
//! - The worker threads of one proxy are the VMs of one [`Process`]
//!   ([`Host::process`]): they share Envoy's shared data (with its CAS
//!   rules, [`abi::SharedData`]); a VM from [`Host::plugin`] has a store of
//!   its own.
//!
//! [`policy`] builds blobs the way `aegis build` does and mints identity
//! tokens for test cases.

pub mod abi;
pub mod callout;
pub mod imports;
pub mod policy;

pub use abi::{Clock, Metric, MetricKind, SharedData};
pub use callout::{CallResponse, HttpCall};

use abi::{State, StreamState};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use wasmtime::{Engine, Instance, InstancePre, Linker, Module, Store};

/// Log levels as the ABI numbers them.
pub mod level {
    pub const TRACE: u32 = 0;
    pub const DEBUG: u32 = 1;
    pub const INFO: u32 = 2;
    pub const WARN: u32 = 3;
    pub const ERROR: u32 = 4;
    pub const CRITICAL: u32 = 5;
}

/// What went wrong running the module.
#[derive(Debug, Clone)]
pub enum Error {
    /// The module does not compile, lacks an export, or imports something
    /// this host does not provide.
    Module(String),
    /// The guest trapped (a panic aborts, an out-of-bounds pointer, ...).
    Trap {
        callback: String,
        message: String,
        logs: Vec<(u32, String)>,
        stderr: String,
    },
    /// `proxy_on_vm_start` or `proxy_on_configure` returned false.
    Refused {
        callback: &'static str,
        logs: Vec<(u32, String)>,
    },
    /// The VM trapped earlier and cannot be used any more.
    Poisoned,
    /// A call's background thread never answered (a host bug).
    Callout(String),
}

impl Error {
    /// The log lines recorded up to the failure.
    pub fn logs(&self) -> &[(u32, String)] {
        match self {
            Error::Trap { logs, .. } | Error::Refused { logs, .. } => logs,
            Error::Module(_) | Error::Poisoned | Error::Callout(_) => &[],
        }
    }
}

fn fmt_logs(f: &mut fmt::Formatter<'_>, logs: &[(u32, String)]) -> fmt::Result {
    for (level, line) in logs {
        writeln!(f, "  [{level}] {line}")?;
    }
    Ok(())
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Module(m) => write!(f, "module: {m}"),
            Error::Trap {
                callback,
                message,
                logs,
                stderr,
            } => {
                writeln!(f, "the guest trapped in `{callback}`: {message}")?;
                if !logs.is_empty() {
                    writeln!(f, "logs:")?;
                    fmt_logs(f, logs)?;
                }
                if !stderr.is_empty() {
                    writeln!(f, "stderr:\n{stderr}")?;
                }
                Ok(())
            }
            Error::Refused { callback, logs } => {
                writeln!(f, "`{callback}` returned false; logs:")?;
                fmt_logs(f, logs)
            }
            Error::Poisoned => write!(f, "the VM trapped earlier"),
            Error::Callout(m) => write!(f, "callout: {m}"),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// Which wasmtime compiler turns the module into machine code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compiler {
    /// Wasmtime's baseline compiler (like V8's Liftoff): compiles a blob
    /// several times faster than Cranelift, which matters because the test
    /// profile builds Cranelift without optimisations. x86_64 only.
    Winch,
    /// Wasmtime's optimising compiler.
    Cranelift,
}

impl Compiler {
    /// `AEGIS_WASM_COMPILER=cranelift` or `winch`; by default Winch on
    /// x86_64 (where it is complete), Cranelift elsewhere.
    pub fn from_env() -> Compiler {
        match std::env::var("AEGIS_WASM_COMPILER").as_deref() {
            Ok("cranelift") => Compiler::Cranelift,
            Ok("winch") => Compiler::Winch,
            _ if cfg!(target_arch = "x86_64") => Compiler::Winch,
            _ => Compiler::Cranelift,
        }
    }
}

/// A compiled filter module, ready to start VMs from.
pub struct Host {
    engine: Engine,
    module: Module,
    pre: InstancePre<State>,
    provided: BTreeSet<(String, String)>,
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host").finish_non_exhaustive()
    }
}

/// How a VM is set up.
#[derive(Debug, Clone)]
pub struct PluginOptions {
    /// The plugin configuration (Envoy's `configuration`).
    pub config: Vec<u8>,
    /// The VM configuration (Envoy's `vm_config.configuration`).
    pub vm_config: Vec<u8>,
    /// Envoy's `allow_on_headers_stop_iteration`. `None`: the value of the
    /// same key in the filter configuration, if it is a JSON object with
    /// it, else false (Envoy's default): the two must agree in a real
    /// deployment.
    pub hold_headers: Option<bool>,
    pub clock: Clock,
    /// Envoy's `root_id` (the `plugin_root_id` property).
    pub root_id: String,
    /// Envoy's `vm_config.vm_id`: VMs of one process share data only with
    /// the same VM id.
    pub vm_id: String,
    /// Envoy clusters for `proxy_http_call`: name -> a loopback HTTP/1.1
    /// server. A name not here is an unknown cluster.
    pub clusters: BTreeMap<String, SocketAddr>,
}

impl PluginOptions {
    pub fn new(config: &str) -> Self {
        PluginOptions {
            config: config.as_bytes().to_vec(),
            vm_config: Vec::new(),
            hold_headers: None,
            clock: Clock::System,
            root_id: "aegis".into(),
            vm_id: String::new(),
            clusters: BTreeMap::new(),
        }
    }

    /// Adds the cluster `name` at `addr`.
    pub fn cluster(mut self, name: &str, addr: SocketAddr) -> Self {
        self.clusters.insert(name.to_string(), addr);
        self
    }

    fn effective_hold_headers(&self) -> bool {
        self.hold_headers.unwrap_or_else(|| {
            serde_json::from_slice::<serde_json::Value>(&self.config)
                .ok()
                .and_then(|v| v.get("allow_on_headers_stop_iteration")?.as_bool())
                .unwrap_or(false)
        })
    }
}

/// The local reply a filter sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub details: String,
    pub grpc_status: i32,
}

impl LocalResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        aegis_engine::Headers::get(self.headers.as_slice(), name).0
    }

    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// An HTTP request as a proxy hands it to the filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: String,
    pub scheme: String,
    pub authority: String,
    /// Path with the query.
    pub path: String,
    /// Regular headers (names are lowercased when sent).
    pub headers: Vec<(String, String)>,
    /// Trailers; when not empty, `proxy_on_request_trailers` ends the
    /// request instead of the last body chunk.
    pub trailers: Vec<(String, String)>,
}

impl HttpRequest {
    /// `url`: `scheme://authority/path?query#fragment` (scheme defaults to
    /// https), split the way the native runner splits a case's url: the
    /// path, query and fragment exactly as written, `/` only for a missing
    /// path ([`aegis_cases::runner::request_path`]).
    pub fn new(method: &str, url: &str) -> Self {
        let (authority, _) = aegis_cases::runner::split_url(url);
        HttpRequest {
            method: method.to_ascii_uppercase(),
            scheme: aegis_cases::runner::url_scheme(url)
                .unwrap_or("https")
                .to_string(),
            authority: authority.to_string(),
            path: aegis_cases::runner::request_path(url).into_owned(),
            headers: Vec::new(),
            trailers: Vec::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// The header map the proxy shows the filter: pseudo-headers first,
    /// then every header in order, a repeated header as repeated pairs.
    pub fn header_map(&self) -> Vec<(String, Vec<u8>)> {
        let mut m = vec![
            (":method".to_string(), self.method.clone().into_bytes()),
            (":scheme".to_string(), self.scheme.clone().into_bytes()),
            (
                ":authority".to_string(),
                self.authority.clone().into_bytes(),
            ),
            (":path".to_string(), self.path.clone().into_bytes()),
        ];
        m.extend(
            self.headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone().into_bytes())),
        );
        m
    }
}

/// What happened to one request.
#[derive(Clone, Default)]
pub struct Outcome {
    /// The filter answered the request itself.
    pub local_response: Option<LocalResponse>,
    /// The whole request (headers and all of the body) went upstream.
    pub forwarded: bool,
    /// The headers went upstream (also true when a later local reply reset
    /// the upstream request).
    pub headers_upstream: bool,
    /// The headers as they went upstream (empty if they did not).
    pub forwarded_headers: Vec<(String, String)>,
    /// The body bytes that went upstream.
    pub forwarded_body: Vec<u8>,
    /// The request neither went upstream nor got an answer: the filter
    /// paused and never resumed.
    pub stalled: bool,
    /// The filter reset the request with `proxy_close_stream`.
    pub reset: bool,
    /// Filter state set during the request, by key (`wasm.aegis_decision`).
    pub properties: BTreeMap<String, Vec<u8>>,
    /// Log lines emitted while handling the request.
    pub logs: Vec<(u32, String)>,
    /// Request header edits made after the headers had gone upstream.
    pub late_header_edits: Vec<String>,
    /// What each callback returned: (callback, 0 = continue, 1 = pause).
    pub actions: Vec<(&'static str, i32)>,
    /// `proxy_http_call`s made while handling the request, with the
    /// responses delivered before it ended.
    pub calls: Vec<HttpCall>,
}

/// What one [`Plugin::tick`] did.
#[derive(Debug, Clone)]
pub struct Tick {
    /// Log lines of `proxy_on_tick` and the call responses.
    pub logs: Vec<(u32, String)>,
    /// Calls made during the tick, with their responses.
    pub calls: Vec<HttpCall>,
}

impl fmt::Debug for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let properties: BTreeMap<&str, String> = self
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), text(v)))
            .collect();
        let local = self.local_response.as_ref().map(|r| {
            format!(
                "{} {:?} {}",
                r.status,
                r.headers,
                String::from_utf8_lossy(&r.body)
            )
        });
        f.debug_struct("Outcome")
            .field("local_response", &local)
            .field("forwarded", &self.forwarded)
            .field("headers_upstream", &self.headers_upstream)
            .field("forwarded_headers", &self.forwarded_headers)
            .field("forwarded_body", &text(&self.forwarded_body))
            .field("stalled", &self.stalled)
            .field("reset", &self.reset)
            .field("properties", &properties)
            .field("logs", &self.logs)
            .field("late_header_edits", &self.late_header_edits)
            .field("actions", &self.actions)
            .field("calls", &self.calls)
            .finish()
    }
}

impl Outcome {
    /// Filter state `key`, with or without the `wasm.` prefix, as text.
    pub fn property(&self, key: &str) -> Option<String> {
        self.properties
            .get(key)
            .or_else(|| self.properties.get(&format!("wasm.{key}")))
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// `wasm.aegis_decision`.
    pub fn decision(&self) -> Option<String> {
        self.property("aegis_decision")
    }

    /// A forwarded request header.
    pub fn forwarded_header(&self, name: &str) -> Option<&str> {
        self.forwarded_headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The status the client saw: the local reply's, or 200 for a request
    /// that went upstream (the test upstream always answers 200).
    pub fn status(&self) -> Option<u32> {
        match &self.local_response {
            Some(r) => Some(r.status),
            None if self.forwarded => Some(200),
            None => None,
        }
    }
}

fn trap(callback: &str, e: &wasmtime::Error, s: &State) -> Error {
    Error::Trap {
        callback: callback.to_string(),
        message: format!("{e:?}"),
        logs: s.logs.clone(),
        stderr: String::from_utf8_lossy(&s.stderr.contents()).into_owned(),
    }
}

fn compile(wasm: &[u8], compiler: Compiler) -> Result<(Engine, Module)> {
    let mut config = wasmtime::Config::new();
    config.strategy(match compiler {
        Compiler::Winch => wasmtime::Strategy::Winch,
        Compiler::Cranelift => wasmtime::Strategy::Cranelift,
    });
    // `perf record` can then name the module's functions (wasmtime writes
    // /tmp/perf-<pid>.map).
    if std::env::var_os("AEGIS_WASM_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    let engine = Engine::new(&config).map_err(|e| Error::Module(format!("{e:?}")))?;
    let module = Module::new(&engine, wasm).map_err(|e| Error::Module(format!("{e:?}")))?;
    Ok((engine, module))
}

/// What `linker` defines, read through a throwaway store.
fn provided_imports(engine: &Engine, linker: &Linker<State>) -> BTreeSet<(String, String)> {
    let out = wasmtime_wasi::p2::pipe::MemoryOutputPipe::new(0);
    let wasi = wasmtime_wasi::WasiCtxBuilder::new().build_p1();
    let mut store = Store::new(engine, State::new(wasi, out.clone(), out));
    linker
        .iter(&mut store)
        .map(|(m, n, _)| (m.to_string(), n.to_string()))
        .collect()
}

fn to_text(pairs: &[(String, Vec<u8>)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

impl Host {
    /// Compiles `wasm` (with [`Compiler::from_env`]) and checks that this
    /// host provides every import.
    pub fn new(wasm: &[u8]) -> Result<Host> {
        let (engine, module) = match Compiler::from_env() {
            // Where Winch lacks something, Cranelift has it.
            Compiler::Winch => {
                compile(wasm, Compiler::Winch).or_else(|_| compile(wasm, Compiler::Cranelift))?
            }
            Compiler::Cranelift => compile(wasm, Compiler::Cranelift)?,
        };
        Host::link(wasm, engine, module)
    }

    pub fn with_compiler(wasm: &[u8], compiler: Compiler) -> Result<Host> {
        let (engine, module) = compile(wasm, compiler)?;
        Host::link(wasm, engine, module)
    }

    fn link(wasm: &[u8], engine: Engine, module: Module) -> Result<Host> {
        let mut linker = Linker::new(&engine);
        abi::add_to_linker(&mut linker).map_err(|e| Error::Module(format!("{e:?}")))?;
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut State| &mut s.wasi)
            .map_err(|e| Error::Module(format!("{e:?}")))?;
        let provided = provided_imports(&engine, &linker);
        let missing = imports::missing(wasm, &provided);
        if !missing.is_empty() {
            return Err(Error::Module(format!(
                "the module imports what this host does not provide: {}",
                missing.join(", ")
            )));
        }
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| Error::Module(format!("{e:?}")))?;
        Ok(Host {
            engine,
            module,
            pre,
            provided,
        })
    }

    /// `(module, name)` of every import this host provides: the proxy-wasm
    /// `env` functions and WASI preview 1.
    pub fn provided_imports(&self) -> &BTreeSet<(String, String)> {
        &self.provided
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn module(&self) -> &Module {
        &self.module
    }

    /// A started and configured VM with `config_json` as the plugin
    /// configuration. `Err(Error::Refused)` with the logs when the filter
    /// rejects it.
    pub fn plugin(&self, config_json: &str) -> Result<Plugin> {
        self.plugin_with(PluginOptions::new(config_json))
    }

    /// A VM with a shared-data store of its own.
    pub fn plugin_with(&self, opts: PluginOptions) -> Result<Plugin> {
        self.start_plugin(opts, Arc::default())
    }

    /// A proxy process: its VMs ([`Process::plugin`]) are the worker
    /// threads of one Envoy and share one shared-data store.
    pub fn process(&self) -> Process<'_> {
        Process {
            host: self,
            shared: Arc::default(),
        }
    }

    fn start_plugin(&self, opts: PluginOptions, shared: Arc<Mutex<SharedData>>) -> Result<Plugin> {
        let stdout = wasmtime_wasi::p2::pipe::MemoryOutputPipe::new(1 << 20);
        let stderr = wasmtime_wasi::p2::pipe::MemoryOutputPipe::new(1 << 20);
        let wasi = wasmtime_wasi::WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build_p1();
        let mut state = State::new(wasi, stdout, stderr);
        state.plugin_config = opts.config.clone();
        state.vm_config = opts.vm_config.clone();
        state.clock = opts.clock;
        state.plugin_name = opts.root_id.clone();
        state.vm_id = opts.vm_id.clone();
        state.clusters = opts.clusters.clone();
        state.shared_data = shared;
        let root_id = state.root_id;
        let mut store = Store::new(&self.engine, state);
        let instance = match self.pre.instantiate(&mut store) {
            Ok(i) => i,
            Err(e) => return Err(trap("instantiate", &e, store.data())),
        };
        let mut plugin = Plugin {
            store,
            instance,
            root_id,
            next_id: root_id + 1,
            hold_headers: opts.effective_hold_headers(),
            poisoned: false,
        };
        plugin.start()?;
        Ok(plugin)
    }
}

/// The VMs of one proxy process (Envoy's worker threads): they share
/// Envoy's shared data.
pub struct Process<'h> {
    host: &'h Host,
    shared: Arc<Mutex<SharedData>>,
}

impl fmt::Debug for Process<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process").finish_non_exhaustive()
    }
}

impl Process<'_> {
    /// A started and configured VM of this process.
    pub fn plugin(&self, config_json: &str) -> Result<Plugin> {
        self.plugin_with(PluginOptions::new(config_json))
    }

    pub fn plugin_with(&self, opts: PluginOptions) -> Result<Plugin> {
        self.host.start_plugin(opts, Arc::clone(&self.shared))
    }

    /// Shared data `key` of VMs with `vm_id`: the value and its CAS.
    pub fn shared_data(&self, vm_id: &str, key: &str) -> Option<(Vec<u8>, u32)> {
        abi::lock(&self.shared).get(vm_id, key)
    }
}

/// One VM: the filter instantiated, started and configured.
pub struct Plugin {
    store: Store<State>,
    instance: Instance,
    root_id: u32,
    next_id: u32,
    hold_headers: bool,
    poisoned: bool,
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("root_id", &self.root_id)
            .field("hold_headers", &self.hold_headers)
            .finish_non_exhaustive()
    }
}

/// Results of the callbacks this host drives.
trait Ret: wasmtime::WasmResults {}
impl Ret for () {}
impl Ret for i32 {}

impl Plugin {
    fn call<P, T>(&mut self, name: &'static str, params: P) -> Result<T>
    where
        P: wasmtime::WasmParams,
        T: Ret,
    {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let f = self
            .instance
            .get_typed_func::<P, T>(&mut self.store, name)
            .map_err(|e| Error::Module(format!("export `{name}`: {e:?}")))?;
        match f.call(&mut self.store, params) {
            Ok(r) => Ok(r),
            Err(e) => {
                self.poisoned = true;
                Err(trap(name, &e, self.store.data()))
            }
        }
    }

    fn has_export(&mut self, name: &str) -> bool {
        self.instance.get_func(&mut self.store, name).is_some()
    }

    /// `_initialize` (or `_start`), then the root context: create, VM
    /// start, configure.
    fn start(&mut self) -> Result<()> {
        if self.has_export("_initialize") {
            self.call::<(), ()>("_initialize", ())?;
        } else if self.has_export("_start") {
            self.call::<(), ()>("_start", ())?;
        }
        if !self.has_export("proxy_abi_version_0_2_1") {
            return Err(Error::Module(
                "the module does not export `proxy_abi_version_0_2_1`".into(),
            ));
        }
        let root = self.root_id as i32;
        self.call::<(i32, i32), ()>("proxy_on_context_create", (root, 0))?;
        let vm_len = self.store.data().vm_config.len() as i32;
        self.store.data_mut().effective_context = self.root_id;
        if self.call::<(i32, i32), i32>("proxy_on_vm_start", (root, vm_len))? == 0 {
            return Err(Error::Refused {
                callback: "proxy_on_vm_start",
                logs: self.store.data().logs.clone(),
            });
        }
        let cfg_len = self.store.data().plugin_config.len() as i32;
        if self.call::<(i32, i32), i32>("proxy_on_configure", (root, cfg_len))? == 0 {
            return Err(Error::Refused {
                callback: "proxy_on_configure",
                logs: self.store.data().logs.clone(),
            });
        }
        Ok(())
    }

    /// Every log line of this VM so far.
    pub fn logs(&self) -> &[(u32, String)] {
        &self.store.data().logs
    }

    /// Metrics defined so far, with their values.
    pub fn metrics(&self) -> &[Metric] {
        &self.store.data().metrics
    }

    pub fn metric(&self, name: &str) -> Option<&Metric> {
        self.metrics().iter().find(|m| m.name == name)
    }

    /// Calls of host features this host does not provide (callouts).
    pub fn unsupported_calls(&self) -> &[String] {
        &self.store.data().unsupported_calls
    }

    /// What the guest wrote to WASI stdout and stderr.
    pub fn stdio(&self) -> (String, String) {
        let s = self.store.data();
        (
            String::from_utf8_lossy(&s.stdout.contents()).into_owned(),
            String::from_utf8_lossy(&s.stderr.contents()).into_owned(),
        )
    }

    pub fn set_clock(&mut self, clock: Clock) {
        self.store.data_mut().clock = clock;
    }

    /// Envoy's `allow_on_headers_stop_iteration` for this VM.
    pub fn hold_headers(&self) -> bool {
        self.hold_headers
    }

    /// What the filter asked with `proxy_set_tick_period_milliseconds`.
    pub fn tick_period_ms(&self) -> u32 {
        self.store.data().tick_period_ms
    }

    /// Every `proxy_http_call` of this VM so far, with the responses
    /// delivered.
    pub fn calls(&self) -> &[HttpCall] {
        &self.store.data().calls
    }

    /// Envoy's timer fires: `proxy_on_tick` on the root context, then the
    /// responses of the calls still outstanding (those the tick made, and
    /// any a finished request left), waiting for them.
    pub fn tick(&mut self) -> Result<Tick> {
        let logs_before = self.store.data().logs.len();
        let calls_before = self.store.data().calls.len();
        self.store.data_mut().effective_context = self.root_id;
        let root = self.root_id as i32;
        self.call::<i32, ()>("proxy_on_tick", root)?;
        while self.deliver_next()? {}
        let s = self.store.data_mut();
        s.effective_context = s.root_id;
        Ok(Tick {
            logs: s.logs.get(logs_before..).unwrap_or_default().to_vec(),
            calls: s.calls.get(calls_before..).unwrap_or_default().to_vec(),
        })
    }

    /// Waits for the next call response and delivers it as Envoy does:
    /// `proxy_on_http_call_response` on the root context, with the response
    /// readable for the length of the callback. False when no call is
    /// outstanding.
    fn deliver_next(&mut self) -> Result<bool> {
        let s = self.store.data();
        if s.calls_in_flight == 0 {
            return Ok(false);
        }
        // Every call thread answers within its timeout (capped); the margin
        // is for thread scheduling on a loaded machine.
        let wait = callout::NO_TIMEOUT_CAP + std::time::Duration::from_secs(30);
        let (token, response) = s.responses_rx.recv_timeout(wait).map_err(|e| {
            Error::Callout(format!("no answer from a call thread within {wait:?}: {e}"))
        })?;
        let (headers, body) = (response.headers.len() as i32, response.body.len() as i32);
        let s = self.store.data_mut();
        s.calls_in_flight = s.calls_in_flight.saturating_sub(1);
        if let Some(call) = s
            .calls
            .iter_mut()
            .find(|c| c.token == token && c.response.is_none())
        {
            call.response = Some(response.clone());
        }
        if response.reset {
            s.root_status = (abi::status::BROKEN_CONNECTION as u32, "reset".into());
        }
        s.call_response = Some(response);
        s.effective_context = s.root_id;
        let root = self.root_id as i32;
        let result = if self.has_export("proxy_on_http_call_response") {
            self.call::<(i32, i32, i32, i32, i32), ()>(
                "proxy_on_http_call_response",
                (root, token as i32, headers, body, 0),
            )
        } else {
            Ok(())
        };
        let s = self.store.data_mut();
        s.call_response = None;
        // Envoy clears the message after the callback, not the code.
        s.root_status.1.clear();
        result?;
        Ok(true)
    }

    /// While the stream is paused (not resumed, not answered), delivers
    /// call responses until none is outstanding.
    fn await_calls(&mut self) -> Result<()> {
        while !self.ended() && !self.stream().is_some_and(|st| st.resumed) {
            if !self.deliver_next()? {
                break;
            }
        }
        Ok(())
    }

    /// Paused: waits for the outstanding calls, then whether the filter
    /// resumed the stream.
    fn resumed_after_calls(&mut self) -> Result<bool> {
        self.await_calls()?;
        Ok(!self.ended() && self.take_resume())
    }

    /// Sends `req` with its body in `body_chunks` (no chunks: a request
    /// without a body, end of stream on the headers).
    pub fn request(&mut self, req: &HttpRequest, body_chunks: &[&[u8]]) -> Result<Outcome> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(self.root_id + 1);
        let logs_before = self.store.data().logs.len();
        let calls_before = self.store.data().calls.len();
        {
            let s = self.store.data_mut();
            s.stream = Some(StreamState {
                context_id: id,
                headers: req.header_map(),
                trailers: req
                    .trailers
                    .iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.clone().into_bytes()))
                    .collect(),
                ..StreamState::default()
            });
            s.effective_context = id;
        }
        let (ctx, root) = (id as i32, self.root_id as i32);
        let mut actions = Vec::new();
        self.call::<(i32, i32), ()>("proxy_on_context_create", (ctx, root))?;

        // Headers.
        let has_trailers = !req.trailers.is_empty();
        let eos = body_chunks.is_empty() && !has_trailers;
        let n = self.stream().map_or(0, |st| st.headers.len()) as i32;
        let a = self.callback(
            id,
            "proxy_on_request_headers",
            (ctx, n, i32::from(eos)),
            &mut actions,
        )?;
        // Everything went upstream after the last event.
        let mut released_all = false;
        // Paused without Envoy holding the headers: everything stops.
        let mut stopped_all = false;
        if !self.ended() {
            if a == 0 || self.take_resume() || self.resumed_after_calls()? {
                self.send_headers();
                released_all = eos;
            } else if !self.hold_headers {
                stopped_all = true;
            }
        }

        // Body.
        let last = body_chunks.len();
        for (i, chunk) in body_chunks.iter().enumerate() {
            if stopped_all || self.ended() {
                break;
            }
            let eos = i + 1 == last && !has_trailers;
            let size = match self.stream_mut() {
                Some(st) => {
                    st.buffer.extend_from_slice(chunk);
                    st.buffer.len() as i32
                }
                None => 0,
            };
            let a = self.callback(
                id,
                "proxy_on_request_body",
                (ctx, size, i32::from(eos)),
                &mut actions,
            )?;
            if self.ended() {
                break;
            }
            if a == 0 || self.take_resume() || self.resumed_after_calls()? {
                self.send_headers();
                self.send_body();
                released_all = eos;
            }
        }

        // Trailers.
        if has_trailers && !stopped_all && !self.ended() {
            let n = req.trailers.len() as i32;
            let a = self.callback(id, "proxy_on_request_trailers", (ctx, n), &mut actions)?;
            if !self.ended() && (a == 0 || self.take_resume() || self.resumed_after_calls()?) {
                self.send_headers();
                self.send_body();
                released_all = true;
            }
        }

        // The end of the stream: access log, done, delete.
        for name in ["proxy_on_log", "proxy_on_done", "proxy_on_delete"] {
            if self.has_export(name) {
                self.store.data_mut().effective_context = id;
                if name == "proxy_on_done" {
                    self.call::<i32, i32>(name, ctx)?;
                } else {
                    self.call::<i32, ()>(name, ctx)?;
                }
            }
        }

        let s = self.store.data_mut();
        s.effective_context = s.root_id;
        let st = s.stream.take().unwrap_or_default();
        let logs = s.logs.get(logs_before..).unwrap_or_default().to_vec();
        let calls = s.calls.get(calls_before..).unwrap_or_default().to_vec();
        let answered = st.local_response.is_some() || st.reset;
        let forwarded = released_all && !answered;
        Ok(Outcome {
            local_response: st.local_response,
            forwarded,
            headers_upstream: st.headers_sent.is_some(),
            forwarded_headers: st.headers_sent.as_deref().map(to_text).unwrap_or_default(),
            forwarded_body: st.body_sent,
            stalled: !forwarded && !answered,
            reset: st.reset,
            properties: st.properties,
            logs,
            late_header_edits: st.late_header_edits,
            actions,
            calls,
        })
    }

    /// Calls a stream callback that returns an action, and records it.
    fn callback<P: wasmtime::WasmParams>(
        &mut self,
        id: u32,
        name: &'static str,
        params: P,
        actions: &mut Vec<(&'static str, i32)>,
    ) -> Result<i32> {
        self.store.data_mut().effective_context = id;
        let a = self.call::<P, i32>(name, params)?;
        actions.push((name, a));
        Ok(a)
    }

    fn stream(&self) -> Option<&StreamState> {
        self.store.data().stream.as_ref()
    }

    fn stream_mut(&mut self) -> Option<&mut StreamState> {
        self.store.data_mut().stream.as_mut()
    }

    /// A local reply was sent or the stream was reset.
    fn ended(&self) -> bool {
        self.stream()
            .is_none_or(|st| st.local_response.is_some() || st.reset)
    }

    /// Whether the filter called `proxy_continue_stream` (and clears it).
    fn take_resume(&mut self) -> bool {
        self.stream_mut()
            .is_some_and(|st| std::mem::take(&mut st.resumed))
    }

    fn send_headers(&mut self) {
        if let Some(st) = self.stream_mut() {
            if st.headers_sent.is_none() {
                st.headers_sent = Some(st.headers.clone());
            }
        }
    }

    fn send_body(&mut self) {
        if let Some(st) = self.stream_mut() {
            let chunk = std::mem::take(&mut st.buffer);
            st.body_sent.extend_from_slice(&chunk);
        }
    }
}
