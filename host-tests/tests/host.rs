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
