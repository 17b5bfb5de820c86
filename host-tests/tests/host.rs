//! The host itself: the imports of the real blob are all provided, both
//! wasmtime compilers run it alike, guest traps and bad pointers become
//! clear errors, and the proxy model (held or forwarded headers) behaves
//! like Envoy.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use aegis_host_tests::abi::PROXY_IMPORTS;
use aegis_host_tests::policy::{self, Built, Issuer};
use aegis_host_tests::{imports, Compiler, Error, Host, HttpRequest, PluginOptions};
use std::sync::OnceLock;
use wasm_encoder::{
    CodeSection, ExportKind, ExportSection, Function, FunctionSection, ImportSection, Instruction,
    MemorySection, MemoryType, Module, TypeSection, ValType,
};

/// The finance example policy, trusting a generated issuer.
fn finance() -> &'static (Issuer, Built) {
    static F: OnceLock<(Issuer, Built)> = OnceLock::new();
    F.get_or_init(|| {
        let mut p = policy::load(&[common::policies_dir().join("finance")]).unwrap();
        let (issuer, _) = Issuer::trusted_by(&mut p).unwrap();
        let built = policy::build_blob(&p, &policy::new_key()).unwrap();
        (issuer, built)
    })
}

#[test]
fn every_import_of_the_blob_is_provided() {
    let (_, built) = finance();
    let list = imports::list(&built.wasm).unwrap();
    println!("the blob imports {} functions:", list.len());
    for i in &list {
        println!("  {i}");
    }
    let host = Host::new(&built.wasm).unwrap();
    let provided = host.provided_imports();
    let missing: Vec<String> = list
        .iter()
        .filter(|i| !provided.contains(&(i.module.clone(), i.name.clone())))
        .map(|i| i.to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "imports this host does not implement: {missing:?}"
    );
    for i in &list {
        assert_eq!(i.kind, "func", "{i}");
        match i.module.as_str() {
            "env" => assert!(PROXY_IMPORTS.contains(&i.name.as_str()), "{i}"),
            "wasi_snapshot_preview1" => {}
            other => panic!("unexpected import module `{other}` ({i})"),
        }
    }
    // The SDK's whole `env` surface is provided, not only what this build uses.
    for name in PROXY_IMPORTS {
        assert!(
            provided.contains(&("env".to_string(), (*name).to_string())),
            "{name}"
        );
    }
    // The same for the generic filter the `aegis` binary carries.
    let generic = aegis_compiler::package::blob::generic_filter().unwrap();
    assert_eq!(imports::list(generic).unwrap(), list);
}

/// A minimal proxy-wasm guest: `proxy_on_vm_start` and `proxy_on_configure`
/// run the given instructions (and return them as their result), and
/// `proxy_log` is imported.
fn guest(vm_start: &[Instruction<'_>], configure: &[Instruction<'_>]) -> Vec<u8> {
    let mut m = Module::new();
    let mut types = TypeSection::new();
    types.ty().function([], []); // 0
    types.ty().function([ValType::I32, ValType::I32], []); // 1
    types
        .ty()
        .function([ValType::I32, ValType::I32], [ValType::I32]); // 2
    types
        .ty()
        .function([ValType::I32, ValType::I32, ValType::I32], [ValType::I32]); // 3
    types.ty().function([ValType::I32], [ValType::I32]); // 4
    m.section(&types);
    let mut imports = ImportSection::new();
    imports.import("env", "proxy_log", wasm_encoder::EntityType::Function(3));
    m.section(&imports);
    let mut funcs = FunctionSection::new();
    for ty in [0, 1, 2, 2, 4] {
        funcs.function(ty);
    }
    m.section(&funcs);
    let mut mems = MemorySection::new();
    mems.memory(MemoryType {
        minimum: 1,
        maximum: None,
        memory64: false,
        shared: false,
        page_size_log2: None,
    });
    m.section(&mems);
    let mut exports = ExportSection::new();
    exports.export("memory", ExportKind::Memory, 0);
    for (i, name) in [
        "proxy_abi_version_0_2_1",
        "proxy_on_context_create",
        "proxy_on_vm_start",
        "proxy_on_configure",
        "proxy_on_memory_allocate",
    ]
    .iter()
    .enumerate()
    {
        exports.export(name, ExportKind::Func, i as u32 + 1);
    }
    m.section(&exports);
    let mut code = CodeSection::new();
    let body = |ins: &[Instruction<'_>]| {
        let mut f = Function::new([]);
        for i in ins {
            f.instruction(i);
        }
        f.instruction(&Instruction::End);
        f
    };
    code.function(&body(&[]));
    code.function(&body(&[]));
    code.function(&body(vm_start));
    code.function(&body(configure));
    code.function(&body(&[Instruction::I32Const(4096)]));
    m.section(&code);
    m.finish()
}

const TRUE: Instruction<'static> = Instruction::I32Const(1);

#[test]
fn a_guest_trap_is_an_error_with_the_trap_message_and_the_logs() {
    // Log 11 bytes (zeros) from address 0 first, then trap: the error
    // carries the trap message and the log line.
    let wasm = guest(
        &[TRUE],
        &[
            Instruction::I32Const(2),
            Instruction::I32Const(0),
            Instruction::I32Const(11),
            Instruction::Call(0),
            Instruction::Drop,
            Instruction::Unreachable,
        ],
    );
    let host = Host::new(&wasm).unwrap();
    match host.plugin("{}") {
        Err(Error::Trap {
            callback,
            message,
            logs,
            ..
        }) => {
            assert_eq!(callback, "proxy_on_configure");
            assert!(message.contains("unreachable"), "{message}");
            assert_eq!(logs.len(), 1);
            assert_eq!(logs[0].0, 2);
        }
        other => panic!("expected a trap, got {other:?}"),
    }
}

#[test]
fn a_pointer_outside_guest_memory_traps_naming_the_call() {
    let wasm = guest(
        &[
            Instruction::I32Const(2),
            Instruction::I32Const(-16),
            Instruction::I32Const(100),
            Instruction::Call(0),
        ],
        &[TRUE],
    );
    let err = Host::new(&wasm).unwrap().plugin("{}").unwrap_err();
    let text = err.to_string();
    assert!(text.contains("proxy_on_vm_start"), "{text}");
    assert!(text.contains("proxy_log"), "{text}");
    assert!(text.contains("outside linear memory"), "{text}");
}

#[test]
fn a_refusal_carries_the_logs() {
    let wasm = guest(&[Instruction::I32Const(0)], &[TRUE]);
    match Host::new(&wasm).unwrap().plugin("{}") {
        Err(Error::Refused { callback, .. }) => assert_eq!(callback, "proxy_on_vm_start"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_import_the_host_lacks_is_named() {
    // A module importing `env::proxy_teleport`.
    let mut m = Module::new();
    let mut types = TypeSection::new();
    types.ty().function([], []);
    m.section(&types);
    let mut imports = ImportSection::new();
    imports.import(
        "env",
        "proxy_teleport",
        wasm_encoder::EntityType::Function(0),
    );
    m.section(&imports);
    let err = Host::new(&m.finish()).unwrap_err().to_string();
    assert!(err.contains("env::proxy_teleport (func)"), "{err}");
}

#[test]
fn winch_and_cranelift_run_the_blob_alike() {
    let (issuer, built) = finance();
    let now = common::now_unix();
    let auth = format!("Bearer {}", issuer.token("finance-agent", None, now));
    let requests = [
        ("amount=1200&currency=usd", "allow"),
        ("amount=5001&currency=usd", "approval_needed"),
        ("amount=100&amount=900000&currency=usd", "deny"),
    ];
    let mut results = Vec::new();
    for compiler in [Compiler::Winch, Compiler::Cranelift] {
        let host = match Host::with_compiler(&built.wasm, compiler) {
            Ok(h) => h,
            Err(e) if compiler == Compiler::Winch && !cfg!(target_arch = "x86_64") => {
                println!("winch unavailable here: {e}");
                continue;
            }
            Err(e) => panic!("{compiler:?}: {e}"),
        };
        let mut p = host
            .plugin(r#"{"allow_on_headers_stop_iteration": true}"#)
            .unwrap();
        let mut got = Vec::new();
        for (body, want) in requests {
            let req = HttpRequest::new("POST", "https://api.stripe.com/v1/payment_intents")
                .header("authorization", &auth)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-request-id", "fixed");
            let o = p.request(&req, &[body.as_bytes()]).unwrap();
            assert_eq!(o.decision().as_deref(), Some(want), "{compiler:?} {o:?}");
            got.push(format!("{o:?}"));
        }
        results.push(got);
    }
    if let [a, b] = results.as_slice() {
        assert_eq!(a, b);
    }
}

#[test]
fn a_filter_that_holds_headers_stalls_an_envoy_that_does_not() {
    // The filter is told Envoy holds headers, Envoy is not: a pause in the
    // headers callback stops the stream for good. (Why `filter/README.md`
    // says the two settings must match.)
    let (issuer, built) = finance();
    let host = Host::new(&built.wasm).unwrap();
    let mut opts = PluginOptions::new(r#"{"allow_on_headers_stop_iteration": true}"#);
    opts.hold_headers = Some(false);
    let mut p = host.plugin_with(opts).unwrap();
    let req = HttpRequest::new("POST", "https://api.stripe.com/v1/payment_intents")
        .header(
            "authorization",
            &format!(
                "Bearer {}",
                issuer.token("finance-agent", None, common::now_unix())
            ),
        )
        .header("content-type", "application/x-www-form-urlencoded");
    let o = p.request(&req, &[b"amount=1200&currency=usd"]).unwrap();
    assert!(o.stalled, "{o:?}");
    assert!(!o.forwarded && !o.headers_upstream, "{o:?}");
    assert_eq!(o.actions, vec![("proxy_on_request_headers", 1)]);
    // Matching settings (the default reads the filter's own key): judged.
    let mut p = host
        .plugin(r#"{"allow_on_headers_stop_iteration": true}"#)
        .unwrap();
    assert!(p.hold_headers());
    let o = p.request(&req, &[b"amount=1200&currency=usd"]).unwrap();
    assert!(o.forwarded, "{o:?}");
}

#[test]
fn vms_are_independent() {
    // Two VMs of one module share nothing: metrics and the filter's own
    // request-id counter are per store.
    let (issuer, built) = finance();
    let host = Host::new(&built.wasm).unwrap();
    let mut a = host.plugin("{}").unwrap();
    let mut b = host.plugin("{}").unwrap();
    let req = HttpRequest::new("POST", "https://api.stripe.com/v1/payment_intents").header(
        "authorization",
        &format!(
            "Bearer {}",
            issuer.token("finance-agent", None, common::now_unix())
        ),
    );
    let first = a.request(&req, &[b"amount=1&currency=usd"]).unwrap();
    let second = a.request(&req, &[b"amount=1&currency=usd"]).unwrap();
    assert!(!a.metrics().is_empty());
    assert!(b.metrics().is_empty());
    let other = b.request(&req, &[b"amount=1&currency=usd"]).unwrap();
    let id = |o: &aegis_host_tests::Outcome| o.property("aegis_request_id").unwrap();
    assert!(id(&first).ends_with("-0"), "{}", id(&first));
    assert!(id(&second).ends_with("-1"), "{}", id(&second));
    assert!(id(&other).ends_with("-0"), "{}", id(&other));
}

#[test]
fn case_requests_carry_repeats_raw_paths_and_no_host() {
    let case = aegis_compiler::case_file::parse_cases(
        "inline.cases.yaml",
        r#"
- name: repeats
  agent: finance-agent
  request:
    method: post
    url: "https://api.stripe.com/v1//customers/./x;y=1?q=%2F#frag"
    headers: [{x-dup: one}, {host: evil.example}, {content-type: text/plain}, {x-dup: two}]
    body_base64: /w==
  expect: {decision: deny}
"#,
    )
    .unwrap()
    .remove(0);
    let (req, body) = policy::case_request(&case, Some("t"));
    assert_eq!(body, [0xff]);
    assert_eq!(req.authority, "api.stripe.com");
    assert_eq!(req.path, "/v1//customers/./x;y=1?q=%2F#frag");
    let map: Vec<(String, String)> = req
        .header_map()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v).unwrap()))
        .collect();
    let pairs: Vec<(&str, &str)> = map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        pairs,
        [
            (":method", "POST"),
            (":scheme", "https"),
            (":authority", "api.stripe.com"),
            (":path", "/v1//customers/./x;y=1?q=%2F#frag"),
            ("x-dup", "one"),
            ("content-type", "text/plain"),
            ("x-dup", "two"),
            ("authorization", "Bearer t"),
            ("content-length", "1"),
        ]
    );

    // The filter reads the map with `proxy_get_header_map_pairs`: both
    // `x-dup` pairs are there when the headers go upstream.
    let (issuer, built) = finance();
    let host = Host::new(&built.wasm).unwrap();
    let mut p = host.plugin("{}").unwrap();
    let token = issuer.token("finance-agent", None, common::now_unix());
    let req = HttpRequest::new("POST", "https://api.stripe.com/v1/payment_intents")
        .header("x-dup", "one")
        .header("authorization", &format!("Bearer {token}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-dup", "two");
    let o = p.request(&req, &[b"amount=1200&currency=usd"]).unwrap();
    assert!(o.forwarded, "{o:?}");
    let dups: Vec<&str> = o
        .forwarded_headers
        .iter()
        .filter(|(k, _)| k == "x-dup")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(dups, ["one", "two"]);
}

// ---------------------------------------------------------------------
// Callouts, ticks and the VMs of one process, with a tiny WAT guest.

use aegis_host_tests::abi::{serialize_map, status};
use aegis_host_tests::callout::{REFUSED_BODY, TIMEOUT_BODY};
use aegis_host_tests::MetricKind;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// WAT string literal bytes.
fn wat_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\{b:02x}")).collect()
}

fn map(pairs: &[(&str, &str)]) -> Vec<u8> {
    serialize_map(
        &pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect::<Vec<_>>(),
    )
}

const CHECK_HEADERS: &[(&str, &str)] = &[
    (":method", "POST"),
    (":path", "/v1/check"),
    (":authority", "control"),
    ("x-aegis-test", "1"),
];

/// A guest that gates each request on a callout, like the filter will:
/// - `proxy_on_request_headers` calls `cluster` with `headers`, body
///   `ping` and `timeout_ms`, logs the returned status as two digits, and
///   pauses if the call was accepted (continues otherwise);
/// - the response (delivered to the root context) selects the stream with
///   `proxy_set_effective_context`: `:status` 200 continues the stream,
///   another status answers 403 with the call's body, no `:status` (a
///   reset) logs the root context's `proxy_get_status` code and answers
///   502 `reset`;
/// - `proxy_on_tick` writes its plugin configuration to shared data `n`
///   with the CAS it read on its previous tick (0 at first), logs the
///   status and the value it then reads, and calls cluster `control` at
///   `/tick`, whose response body it logs;
/// - `proxy_on_vm_start` asks for a 1000 ms tick and sets gauge `g` to 7,
///   then increments it by -2.
fn gate_guest(cluster: &str, headers: &[(&str, &str)], timeout_ms: u32) -> Vec<u8> {
    let headers = map(headers);
    let tick_headers = map(&[
        (":method", "GET"),
        (":path", "/tick"),
        (":authority", "control"),
    ]);
    assert!(cluster.len() < 256 && headers.len() < 512 && tick_headers.len() < 200);
    let wat = format!(
        r#"(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_http_call" (func $http_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $local (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_effective_context" (func $set_ctx (param i32) (result i32)))
  (import "env" "proxy_set_tick_period_milliseconds" (func $tick_period (param i32) (result i32)))
  (import "env" "proxy_get_shared_data" (func $get_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_shared_data" (func $set_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_define_metric" (func $define_metric (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_record_metric" (func $record_metric (param i32 i64) (result i32)))
  (import "env" "proxy_increment_metric" (func $increment_metric (param i32 i64) (result i32)))
  (import "env" "proxy_get_status" (func $get_status (param i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 8192))
  (global $stream (mut i32) (i32.const 0))
  (global $tick_token (mut i32) (i32.const -1))
  (global $last_cas (mut i32) (i32.const 0))
  (global $root_status (mut i32) (i32.const -1))
  (data (i32.const 0) "{cluster}")
  (data (i32.const 256) "{headers}")
  (data (i32.const 768) "ping")
  (data (i32.const 772) ":status")
  (data (i32.const 780) "control")
  (data (i32.const 800) "{tick_headers}")
  (data (i32.const 1000) "n")
  (data (i32.const 1004) "reset")
  (data (i32.const 1012) "g")
  ;; scratch: 2048 token, 2052 pointer, 2056 size, 2060 cas, 2064 digits, 2068 metric id
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.and (i32.add (i32.add (global.get $heap) (local.get $n)) (i32.const 7)) (i32.const -8)))
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
      (then (drop (memory.grow (i32.add (i32.shr_u (local.get $n) (i32.const 16)) (i32.const 1))))))
    (local.get $p))
  (func $num (param $d i32)
    (i32.store8 (i32.const 2064) (i32.add (i32.const 48) (i32.div_u (local.get $d) (i32.const 10))))
    (i32.store8 (i32.const 2065) (i32.add (i32.const 48) (i32.rem_u (local.get $d) (i32.const 10))))
    (drop (call $log (i32.const 2) (i32.const 2064) (i32.const 2))))
  (func $is_200 (param $p i32) (param $n i32) (result i32)
    (i32.and (i32.eq (local.get $n) (i32.const 3))
      (i32.and (i32.eq (i32.load8_u (local.get $p)) (i32.const 50))
        (i32.eq (i32.load16_u (i32.add (local.get $p) (i32.const 1))) (i32.const 0x3030)))))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
    (drop (call $tick_period (i32.const 1000)))
    (drop (call $define_metric (i32.const 1) (i32.const 1012) (i32.const 1) (i32.const 2068)))
    (drop (call $record_metric (i32.load (i32.const 2068)) (i64.const 7)))
    (drop (call $increment_metric (i32.load (i32.const 2068)) (i64.const -2)))
    (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (local $st i32)
    (global.set $stream (local.get $ctx))
    (local.set $st (call $http_call (i32.const 0) (i32.const {cluster_len}) (i32.const 256) (i32.const {headers_len})
      (i32.const 768) (i32.const 4) (i32.const 0) (i32.const 0) (i32.const {timeout_ms}) (i32.const 2048)))
    (call $num (local.get $st))
    (if (result i32) (local.get $st) (then (i32.const 0)) (else (i32.const 1))))
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_http_call_response") (param $root i32) (param $token i32) (param $nh i32) (param $body i32) (param $nt i32)
    (if (i32.eq (local.get $token) (global.get $tick_token))
      (then
        (if (i32.eqz (call $get_buffer (i32.const 4) (i32.const 0) (local.get $body) (i32.const 2052) (i32.const 2056)))
          (then (drop (call $log (i32.const 2) (i32.load (i32.const 2052)) (i32.load (i32.const 2056))))))
        (return)))
    ;; The root context's status, before switching to the stream.
    (drop (call $get_status (i32.const 2072) (i32.const 2052) (i32.const 2056)))
    (global.set $root_status (i32.load (i32.const 2072)))
    (drop (call $set_ctx (global.get $stream)))
    (if (call $get_header (i32.const 6) (i32.const 772) (i32.const 7) (i32.const 2052) (i32.const 2056))
      (then
        (call $num (global.get $root_status))
        (drop (call $local (i32.const 502) (i32.const 0) (i32.const 0) (i32.const 1004) (i32.const 5) (i32.const 0) (i32.const 0) (i32.const -1)))
        (return)))
    (if (call $is_200 (i32.load (i32.const 2052)) (i32.load (i32.const 2056)))
      (then (drop (call $continue (i32.const 0))) (return)))
    (i32.store (i32.const 2052) (i32.const 0))
    (i32.store (i32.const 2056) (i32.const 0))
    (drop (call $get_buffer (i32.const 4) (i32.const 0) (local.get $body) (i32.const 2052) (i32.const 2056)))
    (drop (call $local (i32.const 403) (i32.const 0) (i32.const 0) (i32.load (i32.const 2052)) (i32.load (i32.const 2056)) (i32.const 0) (i32.const 0) (i32.const -1))))
  (func (export "proxy_on_tick") (param $root i32)
    (drop (call $get_buffer (i32.const 7) (i32.const 0) (i32.const 1024) (i32.const 2052) (i32.const 2056)))
    (call $num (call $set_shared (i32.const 1000) (i32.const 1) (i32.load (i32.const 2052)) (i32.load (i32.const 2056)) (global.get $last_cas)))
    (if (i32.eqz (call $get_shared (i32.const 1000) (i32.const 1) (i32.const 2052) (i32.const 2056) (i32.const 2060)))
      (then
        (global.set $last_cas (i32.load (i32.const 2060)))
        (drop (call $log (i32.const 2) (i32.load (i32.const 2052)) (i32.load (i32.const 2056))))))
    (if (i32.eqz (call $http_call (i32.const 780) (i32.const 7) (i32.const 800) (i32.const {tick_len})
          (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 5000) (i32.const 2048)))
      (then (global.set $tick_token (i32.load (i32.const 2048)))))))
"#,
        cluster = wat_bytes(cluster.as_bytes()),
        cluster_len = cluster.len(),
        headers = wat_bytes(&headers),
        headers_len = headers.len(),
        tick_headers = wat_bytes(&tick_headers),
        tick_len = tick_headers.len(),
    );
    wat::parse_str(&wat).unwrap()
}

/// What a test server read: the request line, headers and body.
type Seen = Arc<Mutex<Vec<String>>>;

/// Reads one HTTP/1.1 request (head and `content-length` body).
fn read_request(s: &mut std::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + len {
                return String::from_utf8_lossy(&buf).into_owned();
            }
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&buf).into_owned(),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A loopback server answering every request with `response` (raw bytes)
/// and closing the connection.
fn server(response: &'static [u8]) -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let request = read_request(&mut conn);
            log.lock().unwrap().push(request);
            let _ = conn.write_all(response);
        }
    });
    (addr, seen)
}

fn gate(
    cluster_addr: Option<SocketAddr>,
    headers: &[(&str, &str)],
    timeout_ms: u32,
) -> aegis_host_tests::Plugin {
    let host = Host::new(&gate_guest("control", headers, timeout_ms)).unwrap();
    let mut opts = PluginOptions::new("{}");
    if let Some(addr) = cluster_addr {
        opts = opts.cluster("control", addr);
    }
    host.plugin_with(opts).unwrap()
}

fn post() -> HttpRequest {
    HttpRequest::new("POST", "https://api.example.com/v1/pay").header("content-type", "text/plain")
}

#[test]
fn an_accepted_callout_resumes_the_stream_and_the_body_goes_on() {
    let (addr, seen) =
        server(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok");
    let mut p = gate(Some(addr), CHECK_HEADERS, 5000);
    let o = p.request(&post(), &[b"amount=1"]).unwrap();
    // The headers paused without Envoy holding them: everything waited
    // for the response, then went on, body included.
    assert!(o.forwarded, "{o:?}");
    assert_eq!(o.forwarded_body, b"amount=1");
    assert_eq!(
        o.actions,
        vec![
            ("proxy_on_request_headers", 1),
            ("proxy_on_request_body", 0)
        ]
    );
    assert_eq!(o.logs, vec![(2, "00".to_string())]);
    let [call] = o.calls.as_slice() else {
        panic!("{:?}", o.calls)
    };
    assert_eq!(call.cluster, "control");
    assert_eq!(call.returned, status::OK);
    assert_eq!(call.header(":path"), Some("/v1/check"));
    assert_eq!(call.header("x-aegis-test"), Some("1"));
    assert_eq!(call.body, b"ping");
    assert_eq!(call.timeout_ms, 5000);
    let response = call.response.as_ref().unwrap();
    assert_eq!(response.status(), Some(200));
    assert_eq!(
        response.header("content-type").as_deref(),
        Some("text/plain")
    );
    assert_eq!(response.body, b"ok");
    // What the control plane read.
    let seen = seen.lock().unwrap();
    let [request] = seen.as_slice() else {
        panic!("{seen:?}")
    };
    assert!(
        request.starts_with("POST /v1/check HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(request.contains("\r\nhost: control\r\n"), "{request}");
    assert!(request.contains("\r\nx-aegis-test: 1\r\n"), "{request}");
    assert!(request.ends_with("\r\n\r\nping"), "{request}");
}

#[test]
fn a_refusing_answer_becomes_the_local_reply() {
    let (addr, _) = server(b"HTTP/1.1 409 Conflict\r\ncontent-length: 7\r\n\r\nno, sir");
    let mut p = gate(Some(addr), CHECK_HEADERS, 5000);
    let o = p.request(&post(), &[b"amount=1"]).unwrap();
    let local = o.local_response.as_ref().unwrap();
    assert_eq!(
        (local.status, local.body.as_slice()),
        (403, &b"no, sir"[..])
    );
    assert!(!o.headers_upstream && !o.forwarded, "{o:?}");
    // Envoy never delivered the body to a stream that stopped everything.
    assert_eq!(o.actions, vec![("proxy_on_request_headers", 1)]);
}

#[test]
fn a_refused_connection_is_envoys_503() {
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut p = gate(Some(addr), CHECK_HEADERS, 5000);
    let o = p.request(&post(), &[]).unwrap();
    let response = o.calls[0].response.as_ref().unwrap();
    assert_eq!(response.status(), Some(503));
    assert_eq!(response.body_text(), REFUSED_BODY);
    let local = o.local_response.unwrap();
    assert_eq!(
        (local.status, local.body),
        (403, REFUSED_BODY.as_bytes().to_vec())
    );
}

#[test]
fn a_reset_after_the_response_headers_has_no_headers() {
    // The upstream promises 100 bytes and closes after 5: Envoy resets the
    // async stream, and the filter sees 0 headers and no body.
    let (addr, _) = server(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort");
    let mut p = gate(Some(addr), CHECK_HEADERS, 5000);
    let o = p.request(&post(), &[]).unwrap();
    let response = o.calls[0].response.as_ref().unwrap();
    assert!(response.reset && response.headers.is_empty() && response.body.is_empty());
    // `proxy_get_status` on the root context: BrokenConnection.
    assert_eq!(o.logs, vec![(2, "00".to_string()), (2, "11".to_string())]);
    let local = o.local_response.unwrap();
    assert_eq!((local.status, local.body), (502, b"reset".to_vec()));
}

#[test]
fn a_timeout_is_envoys_504_and_does_not_hold_the_request_longer() {
    // A server that accepts (the kernel does) and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut p = gate(Some(addr), CHECK_HEADERS, 300);
    let started = Instant::now();
    let o = p.request(&post(), &[b"amount=1"]).unwrap();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    // Without the timeout the host would wait its 60 s cap.
    assert!(took < Duration::from_secs(20), "{took:?}");
    let response = o.calls[0].response.as_ref().unwrap();
    assert_eq!(response.status(), Some(504));
    assert_eq!(
        response.header("content-type").as_deref(),
        Some("text/plain")
    );
    assert_eq!(response.body_text(), TIMEOUT_BODY);
    let local = o.local_response.unwrap();
    assert_eq!(
        (local.status, local.body),
        (403, TIMEOUT_BODY.as_bytes().to_vec())
    );
    drop(listener);
}

#[test]
fn an_unknown_cluster_or_a_missing_pseudo_header_is_a_bad_argument() {
    let (addr, seen) = server(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    // No such cluster: the guest goes on without a call.
    let mut p = gate(None, CHECK_HEADERS, 5000);
    let o = p.request(&post(), &[b"x"]).unwrap();
    assert!(o.forwarded, "{o:?}");
    assert_eq!(o.logs, vec![(2, "02".to_string())]);
    assert_eq!(o.calls[0].returned, status::BAD_ARGUMENT);
    assert_eq!((o.calls[0].token, o.calls[0].response.clone()), (0, None));
    // A known cluster, but each of `:method`, `:path`, `:authority` missing.
    for missing in [":method", ":path", ":authority"] {
        let headers: Vec<(&str, &str)> = CHECK_HEADERS
            .iter()
            .copied()
            .filter(|(k, _)| *k != missing)
            .collect();
        let mut p = gate(Some(addr), &headers, 5000);
        let o = p.request(&post(), &[]).unwrap();
        assert_eq!(o.calls[0].returned, status::BAD_ARGUMENT, "{missing}");
        assert!(o.forwarded, "{missing}: {o:?}");
    }
    // A negative timeout.
    let mut p = gate(Some(addr), CHECK_HEADERS, u32::MAX);
    let o = p.request(&post(), &[]).unwrap();
    assert_eq!(o.calls[0].returned, status::BAD_ARGUMENT);
    assert!(seen.lock().unwrap().is_empty());
}

#[test]
fn a_tick_dispatches_from_the_root_context_and_gets_its_response() {
    let (addr, seen) = server(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\ntick-ok");
    let mut p = gate(Some(addr), CHECK_HEADERS, 5000);
    assert_eq!(p.tick_period_ms(), 1000);
    let gauge = p.metric("g").unwrap();
    assert_eq!((gauge.kind, gauge.value), (MetricKind::Gauge, 5));
    let t = p.tick().unwrap();
    let [call] = t.calls.as_slice() else {
        panic!("{t:?}")
    };
    assert_eq!(
        (call.cluster.as_str(), call.header(":path")),
        ("control", Some("/tick"))
    );
    assert_eq!(call.context_id, 1, "the root context");
    assert_eq!(call.response.as_ref().unwrap().body, b"tick-ok");
    // The response callback ran within the tick.
    assert_eq!(t.logs.last(), Some(&(2, "tick-ok".to_string())));
    assert!(seen.lock().unwrap()[0].starts_with("GET /tick HTTP/1.1\r\n"));
    assert_eq!(p.calls().len(), 1);
}

#[test]
fn the_vms_of_one_process_share_data_with_cas() {
    let wasm = gate_guest("control", CHECK_HEADERS, 5000);
    let host = Host::new(&wasm).unwrap();
    let process = host.process();
    let mut a = process.plugin("A").unwrap();
    let mut b = process.plugin("B").unwrap();
    let lines =
        |t: aegis_host_tests::Tick| -> Vec<String> { t.logs.into_iter().map(|(_, l)| l).collect() };
    // First ticks set unconditionally (CAS 0) and read what is there.
    assert_eq!(lines(a.tick().unwrap()), ["00", "A"]);
    let (_, cas_a) = process.shared_data("", "n").unwrap();
    assert_eq!(lines(b.tick().unwrap()), ["00", "B"]);
    let (value, cas_b) = process.shared_data("", "n").unwrap();
    assert_eq!(value, b"B");
    assert!(cas_a != 0 && cas_b > cas_a, "{cas_a} {cas_b}");
    // A writes with the CAS it read before B's write: a mismatch; it reads
    // B's value and its CAS.
    assert_eq!(lines(a.tick().unwrap()), ["08", "B"]);
    assert_eq!(
        process.shared_data("", "n").unwrap(),
        (b"B".to_vec(), cas_b)
    );
    // With the fresh CAS it succeeds.
    assert_eq!(lines(a.tick().unwrap()), ["00", "A"]);
    assert_eq!(lines(b.tick().unwrap()), ["08", "A"]);
    // Another VM id, and a VM outside the process, see none of it.
    let mut opts = PluginOptions::new("C");
    opts.vm_id = "other".into();
    let mut c = process.plugin_with(opts).unwrap();
    assert_eq!(lines(c.tick().unwrap()), ["00", "C"]);
    let mut d = host.plugin("D").unwrap();
    assert_eq!(lines(d.tick().unwrap()), ["00", "D"]);
    assert_eq!(process.shared_data("", "n").unwrap().0, b"A");
    assert_eq!(process.shared_data("other", "n").unwrap().0, b"C");
}

#[test]
fn with_held_headers_the_response_comes_before_the_next_body_chunk() {
    // Envoy holds the headers (`allow_on_headers_stop_iteration`) and
    // would go on delivering the body; the host delivers the outstanding
    // response first (a callout faster than the next chunk), so the
    // continue releases the headers and the chunks follow.
    let (addr, _) = server(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    let host = Host::new(&gate_guest("control", CHECK_HEADERS, 5000)).unwrap();
    let mut opts = PluginOptions::new("{}").cluster("control", addr);
    opts.hold_headers = Some(true);
    let mut p = host.plugin_with(opts).unwrap();
    let o = p.request(&post(), &[b"ab", b"cd"]).unwrap();
    assert!(o.forwarded, "{o:?}");
    assert_eq!(o.forwarded_body, b"abcd");
    assert_eq!(
        o.actions,
        vec![
            ("proxy_on_request_headers", 1),
            ("proxy_on_request_body", 0),
            ("proxy_on_request_body", 0)
        ]
    );
    assert_eq!(o.calls[0].response.as_ref().unwrap().status(), Some(200));
}
