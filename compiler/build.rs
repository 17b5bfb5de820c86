//! Builds the generic filter (`filter/`, crate `aegis-filter`) for
//! wasm32-wasip1 so the `aegis` binary carries it: `aegis build` then needs
//! no Rust toolchain. The module lands in `$OUT_DIR/aegis_filter.wasm`.
//!
//! - `AEGIS_FILTER_WASM=FILE` at build time: use that module instead
//!   (packaging, or a filter built elsewhere).
//! - No `filter/Cargo.toml` in the workspace: an empty file is written and
//!   `aegis build` refuses to run without `--filter`; it never embeds
//!   anything else.
//!
//! The filter is built by a nested cargo in its own target folder under
//! `OUT_DIR`, so it neither waits on nor disturbs the outer build's locks.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

// Both are files of their own crates, included rather than depended on: the
// engine as a build dependency would be compiled once more, with its
// dependencies, before this script could start. Each uses only `core` or
// `std`, and this script uses a part of each.
#[allow(dead_code)]
#[path = "../engine/src/locator.rs"]
mod locator;
#[allow(dead_code)]
#[path = "src/nested_cargo.rs"]
mod nested_cargo;

const TARGET: &str = "wasm32-wasip1";

fn main() {
    if let Err(e) = run() {
        // A build script reports failure through its exit status.
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let out_dir = PathBuf::from(env::var("OUT_DIR").map_err(|e| format!("OUT_DIR: {e}"))?);
    let dest = out_dir.join("aegis_filter.wasm");
    let manifest_dir = PathBuf::from(
        env::var("CARGO_MANIFEST_DIR").map_err(|e| format!("CARGO_MANIFEST_DIR: {e}"))?,
    );
    let root = manifest_dir
        .parent()
        .ok_or("the compiler crate has no parent folder")?
        .to_path_buf();

    println!("cargo:rerun-if-env-changed=AEGIS_FILTER_WASM");
    if let Some(file) = env::var_os("AEGIS_FILTER_WASM").filter(|v| !v.is_empty()) {
        let file = PathBuf::from(file);
        println!("cargo:rerun-if-changed={}", file.display());
        // An explicit module must be a generic filter; refuse anything else
        // now rather than when a policy team runs `aegis build`.
        return match generic_locators(&file)? {
            1 => copy_module(&file, &dest),
            n => Err(format!(
                "AEGIS_FILTER_WASM={}: expected one generic (zero) `AEGIS-LOCATOR-01` locator, \
                 found {n}; give the generic filter, not a built blob",
                file.display()
            )),
        };
    }

    let filter_manifest = root.join("filter").join("Cargo.toml");
    if !filter_manifest.is_file() {
        // Adding the filter means adding it to the workspace members, so
        // the workspace manifest is the one file to watch until then
        // (watching a missing path would rerun this script, and rebuild
        // the compiler, on every build).
        println!(
            "cargo:rerun-if-changed={}",
            root.join("Cargo.toml").display()
        );
        println!(
            "cargo:warning=filter/Cargo.toml not found: this aegis is built without the filter \
             (`aegis build` needs --filter)"
        );
        return write_if_changed(&dest, b"");
    }
    for p in [
        root.join("filter"),
        root.join("engine").join("src"),
        root.join("engine").join("Cargo.toml"),
        root.join("Cargo.lock"),
        root.join("Cargo.toml"),
    ] {
        println!("cargo:rerun-if-changed={}", p.display());
    }

    let target_dir = out_dir.join("filter-target");
    // The outer build's settings are for the host, not for the filter.
    let status = nested_cargo::build_command(&root, &target_dir)
        .args(["-p", "aegis-filter", "--release", "--target", TARGET])
        .status()
        .map_err(|e| format!("cannot run cargo to build the filter: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building the filter failed ({status}); fix filter/, or set AEGIS_FILTER_WASM to a \
             prebuilt module"
        ));
    }
    let built = target_dir
        .join(TARGET)
        .join("release")
        .join("aegis_filter.wasm");
    let bytes = fs::read(&built).map_err(|e| format!("cannot read {}: {e}", built.display()))?;
    let trimmed = without_exports(&bytes, UNUSED_CALLBACKS)
        .map_err(|e| format!("{}: {e}", built.display()))?;
    write_if_changed(&dest, &trimmed)?;
    let n = generic_locators(&dest)?;
    if n != 1 {
        println!(
            "cargo:warning=the built filter has {n} generic `AEGIS-LOCATOR-01` locators \
             (expected 1): `aegis build` will refuse it"
        );
    }
    Ok(())
}

/// Callbacks the proxy-wasm SDK exports that the filter does not use.
/// Envoy calls an exported callback on every stream whether or not the
/// filter does anything in it (each call into the VM costs about a
/// microsecond there); one that is not exported is skipped. The filter
/// judges requests, touches the response headers (to say what became of a
/// sanitized or shadowed call) and the body of an MCP `tools/list` answer
/// (to filter it): the response trailers callback, the access-log callback
/// and `proxy_on_done` (whose answer without the export is the SDK's
/// default, "done") are dropped from the generic filter.
/// `proxy_on_delete` stays: it frees the stream's context in the SDK.
const UNUSED_CALLBACKS: &[&str] = &[
    "proxy_on_response_trailers",
    "proxy_on_log",
    "proxy_on_done",
];

/// `wasm` with the exports named in `drop` removed; every other section is
/// copied byte for byte.
fn without_exports(wasm: &[u8], drop: &[&str]) -> Result<Vec<u8>, String> {
    use wasm_encoder::reencode::{Reencode, RoundtripReencoder};
    let mut out = wasm_encoder::Module::new();
    let mut dropped = 0;
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| format!("not a valid module: {e}"))?;
        match payload {
            wasmparser::Payload::Version { .. } | wasmparser::Payload::End(_) => {}
            wasmparser::Payload::ExportSection(reader) => {
                let mut exports = wasm_encoder::ExportSection::new();
                for export in reader {
                    let export = export.map_err(|e| format!("export section: {e}"))?;
                    if drop.contains(&export.name) {
                        dropped += 1;
                        continue;
                    }
                    exports.export(
                        export.name,
                        RoundtripReencoder
                            .export_kind(export.kind)
                            .map_err(|e| format!("export `{}`: {e}", export.name))?,
                        export.index,
                    );
                }
                out.section(&exports);
            }
            other => {
                // Function bodies come as one code section; everything
                // else is a whole section already.
                if let Some((id, range)) = other.as_section() {
                    let data = usize::try_from(range.start)
                        .ok()
                        .zip(usize::try_from(range.end).ok())
                        .and_then(|(start, end)| wasm.get(start..end))
                        .ok_or("a section past the end")?;
                    out.section(&wasm_encoder::RawSection { id, data });
                }
            }
        }
    }
    if dropped != drop.len() {
        return Err(format!(
            "expected to drop the exports {drop:?}, found {dropped} of them: the SDK changed; \
             check `UNUSED_CALLBACKS`"
        ));
    }
    Ok(out.finish())
}

/// Counts locators with offset and length zero. A cheap check; `aegis
/// build` does the real one.
fn generic_locators(path: &Path) -> Result<usize, String> {
    let bytes = fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(bytes
        .windows(locator::LEN)
        .filter(|w| *w == locator::EMPTY)
        .count())
}

fn copy_module(from: &Path, to: &Path) -> Result<(), String> {
    let bytes = fs::read(from).map_err(|e| format!("cannot read {}: {e}", from.display()))?;
    if !bytes.starts_with(b"\0asm") {
        return Err(format!("{} is not a WebAssembly module", from.display()));
    }
    write_if_changed(to, &bytes)
}

/// Leaves an identical file alone so its timestamp does not make cargo
/// rebuild the compiler for nothing.
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
