//! The signed blob: embedding a bundle in the filter module, the module
//! signature (checked against `wasmsign2` as an independent implementation),
//! and `aegis build` / `inspect` / `verify` as scripts use them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use aegis_compiler::package::blob::{self, BlobError, Locator, LOCATOR_MAGIC};
use aegis_compiler::package::wasmsig::{self, WasmSigError};
use aegis_compiler::package::{bundle_from_file, BundleFileError};
use ed25519_dalek::SigningKey;
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use wasm_encoder::{
    CodeSection, ConstExpr, CustomSection, DataCountSection, DataSection, ExportKind,
    ExportSection, Function, FunctionSection, MemorySection, MemoryType, Module, TypeSection,
};
use wasmparser::{Parser, Payload};

const PAGE: u64 = 65_536;

fn locator_bytes(offset: u32, len: u32) -> Vec<u8> {
    let mut l = LOCATOR_MAGIC.to_vec();
    l.extend_from_slice(&offset.to_le_bytes());
    l.extend_from_slice(&len.to_le_bytes());
    l.extend_from_slice(&[0; 8]);
    l
}

/// A small stand-in for the filter: a memory, a function, a data segment
/// with the locator among other bytes, a DataCount section, a custom
/// section. `locators` says how many data segments carry a locator.
fn fake_filter(max_pages: Option<u64>, locators: usize) -> Vec<u8> {
    let mut m = Module::new();
    let mut types = TypeSection::new();
    types.ty().function([], []);
    m.section(&types);
    let mut funcs = FunctionSection::new();
    funcs.function(0);
    m.section(&funcs);
    let mut mems = MemorySection::new();
    mems.memory(MemoryType {
        minimum: 17,
        maximum: max_pages,
        memory64: false,
        shared: false,
        page_size_log2: None,
    });
    m.section(&mems);
    let mut exports = ExportSection::new();
    exports.export("memory", ExportKind::Memory, 0);
    exports.export("tick", ExportKind::Func, 0);
    m.section(&exports);
    let segments = 1 + locators as u32;
    m.section(&DataCountSection { count: segments });
    let mut code = CodeSection::new();
    let mut f = Function::new([]);
    f.instructions().end();
    code.function(&f);
    m.section(&code);
    let mut data = DataSection::new();
    data.active(
        0,
        &ConstExpr::i32_const(1024),
        b"hello, world".iter().copied(),
    );
    for i in 0..locators {
        let mut seg = b"before--".to_vec();
        seg.extend(locator_bytes(0, 0));
        seg.extend_from_slice(b"--after-");
        data.active(0, &ConstExpr::i32_const(2048 + 4096 * i as i32), seg);
    }
    m.section(&data);
    m.section(&CustomSection {
        name: "producers".into(),
        data: b"\x00".as_slice().into(),
    });
    m.finish()
}

/// The real filter when this `aegis` was built with it; the stand-in if not.
fn filter() -> Vec<u8> {
    if blob::GENERIC_FILTER.is_empty() {
        fake_filter(None, 1)
    } else {
        blob::GENERIC_FILTER.to_vec()
    }
}

struct Memory {
    initial: u64,
    maximum: Option<u64>,
}

fn memory0(wasm: &[u8]) -> Memory {
    for p in Parser::new(0).parse_all(wasm) {
        if let Payload::MemorySection(r) = p.unwrap() {
            let m = r.into_iter().next().unwrap().unwrap();
            return Memory {
                initial: m.initial,
                maximum: m.maximum,
            };
        }
    }
    panic!("no memory section");
}

/// (data segments, DataCount value, custom section names)
fn layout(wasm: &[u8]) -> (u32, Option<u32>, Vec<String>) {
    let (mut segs, mut count, mut customs) = (0, None, Vec::new());
    for p in Parser::new(0).parse_all(wasm) {
        match p.unwrap() {
            Payload::DataSection(r) => segs = r.count(),
            Payload::DataCountSection { count: c, .. } => count = Some(c),
            Payload::CustomSection(c) => customs.push(c.name().to_string()),
            _ => {}
        }
    }
    (segs, count, customs)
}

fn bundle(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

fn validate(wasm: &[u8]) {
    wasmparser::Validator::new().validate_all(wasm).unwrap();
}

#[test]
fn embed_then_extract_round_trips() {
    let f = filter();
    validate(&f);
    assert_eq!(blob::locator(&f).unwrap(), Locator { offset: 0, len: 0 });
    assert_eq!(blob::extract(&f).unwrap(), None);
    let before = memory0(&f);
    for len in [1usize, 100, 65_536, 65_537, 200_000] {
        let b = bundle(len);
        let out = blob::embed(&f, &b).unwrap();
        validate(&out);
        assert_eq!(blob::extract(&out).unwrap().as_deref(), Some(b.as_slice()));
        assert_eq!(
            blob::locator(&out).unwrap(),
            Locator {
                offset: (before.initial * PAGE) as u32,
                len: len as u32
            }
        );
        let after = memory0(&out);
        let pages = (len as u64).div_ceil(PAGE);
        assert_eq!(after.initial, before.initial + pages, "len {len}");
        assert_eq!(after.maximum, before.maximum.map(|m| m + pages));
        let (segs_before, count_before, _) = layout(&f);
        let (segs, count, _) = layout(&out);
        assert_eq!(segs, segs_before + 1);
        assert_eq!(count, count_before.map(|c| c + 1));
    }
}

#[test]
fn the_stand_in_filter_round_trips_too() {
    // Always exercised, also when the real filter is built in: it has a
    // DataCount section, a maximum and bytes around the locator.
    let f = fake_filter(Some(40), 1);
    let out = blob::embed(&f, &bundle(70_000)).unwrap();
    validate(&out);
    let mem = memory0(&out);
    assert_eq!((mem.initial, mem.maximum), (19, Some(42)));
    assert_eq!(layout(&out).0, 3);
    assert_eq!(layout(&out).1, Some(3));
    assert_eq!(blob::extract(&out).unwrap().unwrap(), bundle(70_000));
    // The locator was patched in place, the bytes around it kept.
    let mut want = b"before--".to_vec();
    want.extend(locator_bytes(17 * 65_536, 70_000));
    want.extend_from_slice(b"--after-");
    assert!(out.windows(want.len()).any(|w| w == want.as_slice()));
    // Sections the rewrite does not touch are copied unchanged.
    assert!(layout(&out).2.contains(&"producers".to_string()));
}

#[test]
fn a_filter_with_a_bundle_is_refused() {
    let out = blob::embed(&filter(), &bundle(10)).unwrap();
    assert!(matches!(
        blob::embed(&out, &bundle(10)),
        Err(BlobError::AlreadyEmbedded { len: 10, .. })
    ));
}

#[test]
fn locator_must_be_there_exactly_once() {
    assert_eq!(
        blob::embed(&fake_filter(None, 0), &bundle(10)),
        Err(BlobError::NoLocator)
    );
    assert_eq!(
        blob::embed(&fake_filter(None, 2), &bundle(10)),
        Err(BlobError::DuplicateLocator(2))
    );
    assert_eq!(
        blob::extract(&fake_filter(None, 0)),
        Err(BlobError::NoLocator)
    );
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    assert_eq!(blob::embed(&filter(), &[]), Err(BlobError::EmptyBundle));
    assert!(matches!(
        blob::embed(b"not wasm", &bundle(3)),
        Err(BlobError::Invalid(_))
    ));
    // A memory already at the 4 GiB limit cannot take the bundle.
    let f = fake_filter(Some(65_536), 1);
    assert!(matches!(
        blob::embed(&f, &bundle(3)),
        Err(BlobError::Memory(_))
    ));
    // Truncations of a valid module never panic.
    let f = fake_filter(None, 1);
    for n in 0..f.len() {
        let _ = blob::embed(&f[..n], &bundle(3));
        let _ = blob::extract(&f[..n]);
    }
}

#[test]
fn embedding_drops_an_old_signature() {
    let key = SigningKey::from_bytes(&[9; 32]);
    let signed = wasmsig::sign(&fake_filter(None, 1), &key).unwrap();
    assert!(layout(&signed).2.contains(&"signature".to_string()));
    let out = blob::embed(&signed, &bundle(5)).unwrap();
    assert!(!layout(&out).2.iter().any(|n| n.starts_with("signature")));
    assert_eq!(
        wasmsig::verify(&out, &key.verifying_key()),
        Err(WasmSigError::Unsigned)
    );
}

// ---- module signature, with wasmsign2 as the independent implementation

fn ws_public(key: &SigningKey) -> wasmsign2::PublicKey {
    // wasmsign2 prefixes raw key bytes with the algorithm id (0x01 Ed25519).
    let mut raw = vec![0x01];
    raw.extend_from_slice(key.verifying_key().as_bytes());
    wasmsign2::PublicKey::from_bytes(&raw).unwrap()
}

fn ws_secret(key: &SigningKey) -> wasmsign2::SecretKey {
    // 0x81 ‖ seed ‖ public key
    let mut raw = vec![0x81];
    raw.extend_from_slice(&key.to_keypair_bytes());
    wasmsign2::SecretKey::from_bytes(&raw).unwrap()
}

fn ws_verify(module: &[u8], pk: &wasmsign2::PublicKey) -> Result<(), String> {
    pk.verify(&mut std::io::Cursor::new(module), None)
        .map_err(|e| e.to_string())
}

fn signed_blob(key: &SigningKey) -> Vec<u8> {
    let out = blob::embed(&filter(), &bundle(3000)).unwrap();
    wasmsig::sign(&out, key).unwrap()
}

/// Flips one byte inside the embedded bundle (in the data section).
fn tamper(module: &[u8]) -> Vec<u8> {
    let b = bundle(3000);
    let at = module
        .windows(64)
        .position(|w| w == &b[1000..1064])
        .unwrap();
    let mut t = module.to_vec();
    t[at] ^= 0x40;
    t
}

#[test]
fn wasmsign2_verifies_our_signature() {
    let key = SigningKey::from_bytes(&[1; 32]);
    let signed = signed_blob(&key);
    validate(&signed);
    ws_verify(&signed, &ws_public(&key)).unwrap();
    // Our key id is the one wasmsign2 derives by default, so a public key
    // carrying it selects our signature too.
    let with_id = ws_public(&key).attach_default_key_id();
    assert_eq!(
        with_id.key_id().unwrap().as_slice(),
        &wasmsig::default_key_id(&key.verifying_key())[..]
    );
    ws_verify(&signed, &with_id).unwrap();
    // And wasmsign2 parses the module and its signature section the same way.
    let parsed = wasmsign2::Module::deserialize(&mut std::io::Cursor::new(&signed)).unwrap();
    assert!(parsed.sections[0].is_signature_header());
}

#[test]
fn we_verify_a_wasmsign2_signature() {
    let key = SigningKey::from_bytes(&[2; 32]);
    let unsigned = blob::embed(&filter(), &bundle(3000)).unwrap();
    for key_id in [
        None,
        ws_public(&key).attach_default_key_id().key_id().cloned(),
    ] {
        let module = wasmsign2::Module::deserialize(&mut std::io::Cursor::new(&unsigned)).unwrap();
        let signed = ws_secret(&key).sign(module, key_id.as_ref()).unwrap();
        let mut bytes = Vec::new();
        signed.serialize(&mut bytes).unwrap();
        wasmsig::verify(&bytes, &key.verifying_key()).unwrap();
        let entries = wasmsig::signatures(&bytes).unwrap().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].key_id, key_id);
        // Same content, same key, deterministic Ed25519: the very same bytes.
        if key_id.is_some() {
            assert_eq!(bytes, wasmsig::sign(&unsigned, &key).unwrap());
        }
    }
}

#[test]
fn tampering_is_rejected_by_both() {
    let key = SigningKey::from_bytes(&[3; 32]);
    let signed = signed_blob(&key);
    let bad = tamper(&signed);
    assert_eq!(
        wasmsig::verify(&bad, &key.verifying_key()),
        Err(WasmSigError::HashMismatch)
    );
    assert!(ws_verify(&bad, &ws_public(&key)).is_err());

    // A signature made by wasmsign2, then tampered with: we reject it.
    let module = wasmsign2::Module::deserialize(&mut std::io::Cursor::new(
        blob::embed(&filter(), &bundle(3000)).unwrap(),
    ))
    .unwrap();
    let mut theirs = Vec::new();
    ws_secret(&key)
        .sign(module, None)
        .unwrap()
        .serialize(&mut theirs)
        .unwrap();
    assert!(wasmsig::verify(&tamper(&theirs), &key.verifying_key()).is_err());

    // Another key: rejected by both.
    let other = SigningKey::from_bytes(&[4; 32]);
    assert!(matches!(
        wasmsig::verify(&signed, &other.verifying_key()),
        Err(WasmSigError::NoValidSignature(_))
    ));
    assert!(ws_verify(&signed, &ws_public(&other)).is_err());

    // A flipped bit in the signature itself.
    let mut sig_flip = signed.clone();
    sig_flip[40] ^= 1;
    assert!(wasmsig::verify(&sig_flip, &key.verifying_key()).is_err());
    assert!(ws_verify(&sig_flip, &ws_public(&key)).is_err());
}

// ---- the command line

fn aegis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aegis"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run aegis")
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

struct Setup {
    dir: tempfile::TempDir,
    key: String,
    public: String,
    other_public: String,
    /// `--filter FILE` when this aegis has no built-in filter.
    filter_args: Vec<String>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n).display().to_string();
    assert!(aegis(&["keygen", "--out", &path("k")]).status.success());
    assert!(aegis(&["keygen", "--out", &path("other")]).status.success());
    let filter_args = if blob::GENERIC_FILTER.is_empty() {
        std::fs::write(dir.path().join("filter.wasm"), fake_filter(None, 1)).unwrap();
        vec!["--filter".to_string(), path("filter.wasm")]
    } else {
        Vec::new()
    };
    Setup {
        key: path("k.key"),
        public: path("k.pub"),
        other_public: path("other.pub"),
        filter_args,
        dir,
    }
}

fn build(s: &Setup, policies: &str, out: &str, extra: &[&str]) -> Output {
    let mut args = vec!["build", policies, "--key", &s.key, "-o", out];
    args.extend(s.filter_args.iter().map(String::as_str));
    args.extend_from_slice(extra);
    aegis(&args)
}

#[test]
fn build_then_verify_and_inspect() {
    let s = setup();
    let out = s.dir.path().join("finance.wasm").display().to_string();
    let o = build(&s, "policies/finance", &out, &["--policy-version", "fin-7"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let said = text(&o.stdout);
    assert!(said.contains(" ms"), "{said}");
    assert!(said.contains("policy version fin-7"), "{said}");
    assert!(said.contains("signed by key"), "{said}");

    let wasm = std::fs::read(&out).unwrap();
    validate(&wasm);
    let bundle = blob::extract(&wasm).unwrap().unwrap();
    let loaded = aegis_engine::Bundle::load(&bundle, &[]).unwrap();
    assert_eq!(loaded.model.policy_version, "fin-7");
    // The module explains itself as its policies do.
    let of_blob = text(&aegis(&["explain", &out]).stdout);
    let of_policies = text(&aegis(&["explain", "policies/finance"]).stdout);
    let table = |s: &str| s.split_once('\n').unwrap().1.to_string();
    assert!(of_blob.starts_with("policy version fin-7\n"), "{of_blob}");
    assert_eq!(table(&of_blob), table(&of_policies));
    // wasmsign2 accepts the blob with the public key from `aegis keygen`.
    let vk = aegis_compiler::keys::read_verifying_key(Path::new(&s.public)).unwrap();
    let mut raw = vec![0x01];
    raw.extend_from_slice(vk.as_bytes());
    ws_verify(&wasm, &wasmsign2::PublicKey::from_bytes(&raw).unwrap()).unwrap();

    let o = aegis(&["verify", &out, "--pubkey", &s.public]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).starts_with("ok:"));
    let o = aegis(&["verify", &out, "--pubkey", &s.other_public]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("module signature"),
        "{}",
        text(&o.stderr)
    );

    // Tampered bytes: exit 1, also in JSON.
    let bad = s.dir.path().join("bad.wasm");
    let mut t = wasm.clone();
    let n = t.len();
    t[n - 1] ^= 1;
    std::fs::write(&bad, t).unwrap();
    let o = aegis(&[
        "verify",
        bad.to_str().unwrap(),
        "--pubkey",
        &s.public,
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], false);

    let o = aegis(&["inspect", &out]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let said = text(&o.stdout);
    assert!(said.contains("policy version   fin-7"), "{said}");
    assert!(said.contains("valid for the bundle signer's key"), "{said}");
    for agent in &loaded.model.agents {
        assert!(said.contains(&agent.id), "{said}");
    }

    let o = aegis(&["inspect", &out, "--format", "json"]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["bundle"]["policy_version"], "fin-7");
    assert_eq!(v["bundle"]["hash"], loaded.hash_hex());
    assert_eq!(
        v["bundle"]["signer"],
        aegis_compiler::keys::key_id(&vk).as_str()
    );
    assert_eq!(
        v["bundle"]["agents"].as_array().unwrap().len(),
        loaded.model.agents.len()
    );
    assert_eq!(v["module_signed"], true);
    assert_eq!(v["module_signed_by_bundle_signer"], true);
    assert_eq!(
        v["module_key_ids"][0],
        aegis_engine::trust::hex(&wasmsig::default_key_id(&vk)).as_str()
    );
}

#[test]
fn build_reports_json_and_refuses_bad_filters() {
    let s = setup();
    let out = s.dir.path().join("f.wasm").display().to_string();
    let o = build(&s, "policies/mcp", &out, &["--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["millis"].as_f64().unwrap() >= 0.0);
    assert!(v["agents"].as_array().is_some_and(|a| !a.is_empty()));
    assert_eq!(v["bytes"], std::fs::metadata(&out).unwrap().len());

    // A blob is not a generic filter: embedding into it is refused (exit 2).
    let again = s.dir.path().join("g.wasm").display().to_string();
    let o = aegis(&[
        "build",
        "policies/mcp",
        "--key",
        &s.key,
        "-o",
        &again,
        "--filter",
        &out,
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("already has a bundle"),
        "{}",
        text(&o.stderr)
    );
    assert!(!Path::new(&again).exists());

    // A missing key is a usage error.
    let o = aegis(&[
        "build",
        "policies/mcp",
        "--key",
        "/nonexistent.key",
        "-o",
        &again,
    ]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn inspect_a_generic_filter() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("generic.wasm");
    std::fs::write(&f, filter()).unwrap();
    let o = aegis(&["inspect", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("no bundle embedded"));
    assert!(text(&o.stdout).contains("module signature: none"));
}

#[test]
fn without_a_built_in_filter_build_says_so() {
    if !blob::GENERIC_FILTER.is_empty() {
        return;
    }
    let s = setup();
    let out = s.dir.path().join("f.wasm").display().to_string();
    let o = aegis(&["build", "policies/mcp", "--key", &s.key, "-o", &out]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("built without the filter"),
        "{}",
        text(&o.stderr)
    );
    assert!(!Path::new(&out).exists());
}

/// Envoy calls every stream callback the module exports; the generic filter
/// exports only those it uses (the build script drops the rest).
#[test]
fn the_generic_filter_exports_only_the_callbacks_it_uses() {
    if blob::GENERIC_FILTER.is_empty() {
        return;
    }
    let mut exports = Vec::new();
    for p in Parser::new(0).parse_all(blob::GENERIC_FILTER) {
        if let Payload::ExportSection(r) = p.unwrap() {
            for e in r {
                exports.push(e.unwrap().name.to_string());
            }
        }
    }
    for needed in [
        "memory",
        "proxy_abi_version_0_2_1",
        "proxy_on_memory_allocate",
        "proxy_on_vm_start",
        "proxy_on_configure",
        "proxy_on_context_create",
        "proxy_on_request_headers",
        "proxy_on_request_body",
        "proxy_on_request_trailers",
        "proxy_on_response_headers",
        "proxy_on_response_body",
        "proxy_on_delete",
    ] {
        assert!(exports.iter().any(|e| e == needed), "{needed}: {exports:?}");
    }
    for unused in [
        "proxy_on_response_trailers",
        "proxy_on_log",
        "proxy_on_done",
    ] {
        assert!(
            !exports.iter().any(|e| e == unused),
            "{unused}: {exports:?}"
        );
    }
    validate(blob::GENERIC_FILTER);
}

/// `finance` compiled and signed at `revision`, embedded in `filter`.
fn finance_blob(key: &SigningKey, filter: &[u8], revision: u64) -> blob::SignedBlob {
    let loaded =
        aegis_compiler::frontend::load(&[root().join("policies/finance")], Some("fin-1")).unwrap();
    blob::build_signed(&loaded.policy, key, filter, revision).unwrap()
}

#[test]
fn bundle_from_file_takes_a_bundle_or_a_blob() {
    let key = SigningKey::from_bytes(&[5; 32]);
    let built = finance_blob(&key, &filter(), 1_765_000_123);

    // A blob from `aegis build`: the embedded bundle, byte for byte.
    let from_blob = bundle_from_file(&built.wasm).unwrap();
    assert!(matches!(from_blob, Cow::Owned(_)));
    assert_eq!(&*from_blob, &built.bundle[..]);
    let b = aegis_engine::Bundle::load(&from_blob, &[key.verifying_key().to_bytes()]).unwrap();
    assert_eq!(b.revision(), 1_765_000_123);
    assert_eq!(b.policy_version(), "fin-1");

    // A bundle file: the same bytes, not copied.
    let from_bundle = bundle_from_file(&built.bundle).unwrap();
    assert!(matches!(from_bundle, Cow::Borrowed(_)));
    assert_eq!(&*from_bundle, &built.bundle[..]);
}

#[test]
fn bundle_from_file_says_why_there_is_none() {
    // The generic filter carries no bundle.
    let e = bundle_from_file(&filter()).unwrap_err();
    assert_eq!(e, BundleFileError::NoBundle);
    assert!(e.to_string().contains("carries no bundle"), "{e}");
    // A module without a locator is not a filter.
    assert_eq!(
        bundle_from_file(&fake_filter(None, 0)),
        Err(BundleFileError::Blob(BlobError::NoLocator))
    );
    // A module whose locator points at bytes that are not a bundle.
    let odd = blob::embed(&fake_filter(None, 1), &bundle(100)).unwrap();
    assert_eq!(bundle_from_file(&odd), Err(BundleFileError::NotABundle));
    // A truncated blob.
    let built = finance_blob(&SigningKey::from_bytes(&[5; 32]), &fake_filter(None, 1), 1);
    let cut = &built.wasm[..built.wasm.len() / 2];
    assert!(matches!(
        bundle_from_file(cut),
        Err(BundleFileError::Blob(BlobError::Invalid(_)))
    ));
    // Neither kind of file.
    for bytes in [&b""[..], b"AEGISBN", b"{\"bundle\": 1}", b"\0as"] {
        assert_eq!(bundle_from_file(bytes), Err(BundleFileError::Unknown));
    }
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_str(text(&o.stdout).lines().last().unwrap()).unwrap()
}

#[test]
fn revision_is_set_by_the_build_and_shown_by_inspect_and_verify() {
    let s = setup();
    let out = s.dir.path().join("r.wasm").display().to_string();
    let o = build(&s, "policies/finance", &out, &["--revision", "4242"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("(revision 4242)"),
        "{}",
        text(&o.stdout)
    );
    let wasm = std::fs::read(&out).unwrap();
    let bundle = bundle_from_file(&wasm).unwrap();
    assert_eq!(
        aegis_engine::Envelope::parse(&bundle).unwrap().revision,
        4242
    );

    let o = aegis(&["inspect", &out]);
    assert!(
        text(&o.stdout).contains("  revision         4242\n"),
        "{}",
        text(&o.stdout)
    );
    let o = aegis(&["inspect", &out, "--format", "json"]);
    assert_eq!(json(&o)["bundle"]["revision"], 4242);

    let o = aegis(&["verify", &out, "--pubkey", &s.public]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).ends_with(", revision 4242\n"),
        "{}",
        text(&o.stdout)
    );
    let o = aegis(&["verify", &out, "--pubkey", &s.public, "--format", "json"]);
    assert_eq!(json(&o)["valid"], true);
    assert_eq!(json(&o)["revision"], 4242);
    // A revision that does not verify is not shown.
    let o = aegis(&[
        "verify",
        &out,
        "--pubkey",
        &s.other_public,
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(json(&o)["valid"], false);
    assert!(json(&o)["revision"].is_null());

    // By default the revision is the Unix time of the build, in seconds.
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let before = now();
    let o = build(&s, "policies/finance", &out, &["--format", "json"]);
    let after = now();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let revision = json(&o)["revision"].as_u64().unwrap();
    assert!(
        (before..=after).contains(&revision),
        "{before} {revision} {after}"
    );
    let wasm = std::fs::read(&out).unwrap();
    let b = aegis_engine::Bundle::load(&bundle_from_file(&wasm).unwrap(), &[]).unwrap();
    assert_eq!(b.revision(), revision);

    // Not a number: a usage error.
    let o = build(&s, "policies/finance", &out, &["--revision", "-1"]);
    assert_eq!(o.status.code(), Some(2));
}
