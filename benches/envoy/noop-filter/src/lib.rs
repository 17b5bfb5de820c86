//! A proxy-wasm HTTP filter that does nothing, or only the host-side part
//! of what the Aegis filter does. The Envoy load benchmark
//! (`benches/envoy/`) runs it as listener L1 (no configuration: every
//! callback returns `Continue` and nothing is read), so that the cost of
//! the wasm runtime and the proxy-wasm round trips can be told apart from
//! the cost of the Aegis filter's own work; with `--probes` it also runs it
//! in each of these modes (the plugin configuration is the mode's name),
//! to split what Aegis adds over L1 into its parts:
//!
//! | mode    | per request                                                          |
//! |---------|----------------------------------------------------------------------|
//! | `hold`  | pause in the headers callback and in every body callback until the end of the stream (Envoy holds the headers and buffers the body), then `Continue`; no host call |
//! | `read`  | `hold`, plus the header map and the whole body read into the VM (one call each) |
//! | `calls` | `read`, plus the other host calls the Aegis filter makes for an allowed request with the default configuration: four clock reads, nine filter-state keys, one counter and two histogram records (`probe_latency_us`: the time inside its callbacks, measured as the Aegis filter measures its own) |
//!
//! Build: `cargo build -p aegis-bench-noop-filter --target wasm32-wasip1 --release`
//! (`target/wasm32-wasip1/release/aegis_bench_noop_filter.wasm`).

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType, MetricType};
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(NoopRoot { probe: Rc::new(Probe::default()) })
    });
}}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    #[default]
    Noop,
    Hold,
    Read,
    Calls,
}

/// The mode and, for `calls`, the metric ids defined at configure time.
#[derive(Debug, Default)]
struct Probe {
    mode: Mode,
    counter: u32,
    histograms: [u32; 2],
}

/// The filter state keys the Aegis filter writes by default, with values
/// of a typical length.
const FILTER_STATE: [(&str, &str); 9] = [
    ("aegis_decision", "allow"),
    (
        "aegis_reason",
        "allowed by rule bookkeeping-agent/ledger/post_entry#0",
    ),
    ("aegis_rule", "bookkeeping-agent/ledger/post_entry#0"),
    ("aegis_agent", "bookkeeping-agent"),
    ("aegis_tool", "ledger"),
    ("aegis_action", "post_entry"),
    ("aegis_policy_version", "0123456789abcdef"),
    ("aegis_request_id", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"),
    ("aegis_mode", "enforce"),
];

/// The plugin: makes one [`NoopStream`] per HTTP stream.
struct NoopRoot {
    probe: Rc<Probe>,
}

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        true
    }

    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let conf = hostcalls::get_buffer(
            BufferType::PluginConfiguration,
            0,
            plugin_configuration_size,
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        let mode = match conf.as_slice() {
            b"hold" => Mode::Hold,
            b"read" => Mode::Read,
            b"calls" => Mode::Calls,
            _ => Mode::Noop,
        };
        let mut probe = Probe {
            mode,
            ..Probe::default()
        };
        if mode == Mode::Calls {
            let tagged = "agent=.=bookkeeping-agent;.;tool=.=ledger;.;decision=.=allow;.;\
                          mode=.=enforce;.;probe_decision_total";
            probe.counter = hostcalls::define_metric(MetricType::Counter, tagged).unwrap_or(0);
            for (id, name) in probe
                .histograms
                .iter_mut()
                .zip(["probe_latency_ms", "probe_latency_us"])
            {
                *id = hostcalls::define_metric(MetricType::Histogram, name).unwrap_or(0);
            }
        }
        self.probe = Rc::new(probe);
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(NoopStream {
            probe: Rc::clone(&self.probe),
            busy: 0,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One HTTP stream.
struct NoopStream {
    probe: Rc<Probe>,
    /// `calls`: time spent in the headers callback, added to the body
    /// callback's in the latency histograms (as the Aegis filter does).
    busy: u64,
}

fn clock() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Context for NoopStream {}

impl HttpContext for NoopStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let mode = self.probe.mode;
        if mode == Mode::Noop || end_of_stream {
            return Action::Continue;
        }
        let t0 = if mode == Mode::Calls { clock() } else { 0 };
        if mode >= Mode::Read {
            let headers = hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default();
            std::hint::black_box(headers);
        }
        if mode == Mode::Calls {
            self.busy = clock().saturating_sub(t0);
        }
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let mode = self.probe.mode;
        if mode == Mode::Noop {
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let t0 = if mode == Mode::Calls { clock() } else { 0 };
        if mode >= Mode::Read {
            let body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size)
                .ok()
                .flatten()
                .unwrap_or_default();
            std::hint::black_box(body);
        }
        if mode == Mode::Calls {
            for (key, value) in FILTER_STATE {
                let _ = hostcalls::set_property(vec![key], Some(value.as_bytes()));
            }
            let _ = hostcalls::increment_metric(self.probe.counter, 1);
            let spent = self.busy.saturating_add(clock().saturating_sub(t0));
            let [ms, us] = self.probe.histograms;
            let _ = hostcalls::record_metric(ms, spent / 1_000_000);
            let _ = hostcalls::record_metric(us, spent / 1_000);
        }
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }

    fn on_http_response_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        Action::Continue
    }
}
