//! The blob: the generic filter module with a compiled bundle embedded.
//!
//! The filter holds one static 32-byte locator in a data segment (its
//! layout: [`aegis_engine::locator`]). The generic filter has offset =
//! length = 0. [`embed`] rewrites the module (parsed with `wasmparser`,
//! written with `wasm-encoder`; sections it does not change are copied
//! byte for byte): memory 0 grows by as many 64 KiB pages as the bundle
//! needs, a new active data segment puts the bundle at the old end of the
//! initial memory, and the locator is patched to point at it. The filter
//! reads the locator at start.
//!
//! Nothing else lives there: the linker's `__heap_end` still marks the old
//! end, and wasi-libc's malloc (what Rust's `System` allocator is on
//! wasm32-wasip1) uses `[__heap_base, __heap_end)` plus pages it gets from
//! `memory.grow`, which start past the bundle. The filter must read the
//! locator with a volatile (or `black_box`) load, or the optimizer folds
//! the zeros of the generic filter into the code.

use aegis_engine::locator;
use std::ops::Range;
use wasm_encoder::reencode::{Reencode, RoundtripReencoder};
use wasmparser::{DataKind, Encoding, Operator, Parser, Payload, TypeRef};

/// First 16 bytes of the locator.
pub use aegis_engine::locator::MAGIC as LOCATOR_MAGIC;

const PAGE: u64 = 65_536;
/// Pages a 32-bit memory can have (4 GiB).
const MAX_PAGES: u64 = 65_536;

/// The generic filter (`filter/` built for wasm32-wasip1 by the build
/// script), or empty when this `aegis` was built without it.
pub const GENERIC_FILTER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/aegis_filter.wasm"));

/// What `aegis build` makes of a policy.
pub struct SignedBlob {
    /// The signed bundle, as embedded.
    pub bundle: Vec<u8>,
    /// The bundle, loaded and verified against the signing key.
    pub loaded: aegis_engine::Bundle,
    /// The filter module with the bundle embedded, signed.
    pub wasm: Vec<u8>,
}

/// Why [`build_signed`] failed.
#[derive(Debug)]
pub enum BuildError {
    /// The policy does not compile into a bundle.
    Compile(aegis_engine::builder::BuildError),
    /// The compiled bundle does not load back against the signing key.
    Load(aegis_engine::LoadError),
    /// The filter module cannot carry the bundle.
    Embed(BlobError),
    /// The module cannot be signed.
    Sign(super::wasmsig::WasmSigError),
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::Compile(e) => write!(f, "{e}"),
            BuildError::Load(e) => write!(f, "compiled bundle does not load: {e}"),
            BuildError::Embed(e) => write!(f, "cannot embed the bundle: {e}"),
            BuildError::Sign(e) => write!(f, "cannot sign the module: {e}"),
        }
    }
}

impl std::error::Error for BuildError {}

/// The bundle `aegis build` embeds: compiled from `policy` at `revision`,
/// signed by `key` (DLP hash key derived from it), and loaded back against
/// that key.
pub fn signed_bundle(
    policy: &aegis_engine::ir::Policy,
    key: &ed25519_dalek::SigningKey,
    revision: u64,
) -> Result<(Vec<u8>, aegis_engine::Bundle), BuildError> {
    use aegis_engine::builder::bundle::{compile, BuildOptions};
    let opts = BuildOptions {
        dlp_hash_key: crate::keys::dlp_hash_key(Some(key)),
        revision,
    };
    let bundle = compile(policy, &opts, Some(key)).map_err(BuildError::Compile)?;
    let loaded = aegis_engine::Bundle::load(&bundle, &[key.verifying_key().to_bytes()])
        .map_err(BuildError::Load)?;
    Ok((bundle, loaded))
}

/// `aegis build` as a library call: compiles `policy` into a bundle of
/// `revision` signed by `key` (DLP hash key derived from it), checks that
/// it loads, embeds it into `filter` and signs the module with the same
/// key.
pub fn build_signed(
    policy: &aegis_engine::ir::Policy,
    key: &ed25519_dalek::SigningKey,
    filter: &[u8],
    revision: u64,
) -> Result<SignedBlob, BuildError> {
    let (bundle, loaded) = signed_bundle(policy, key, revision)?;
    let module = embed(filter, &bundle).map_err(BuildError::Embed)?;
    let wasm = super::wasmsig::sign(&module, key).map_err(BuildError::Sign)?;
    Ok(SignedBlob {
        bundle,
        loaded,
        wasm,
    })
}

/// The built-in generic filter, if this `aegis` carries one.
pub fn generic_filter() -> Result<&'static [u8], BlobError> {
    if GENERIC_FILTER.is_empty() {
        Err(BlobError::NoBuiltinFilter)
    } else {
        Ok(GENERIC_FILTER)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    #[error("this aegis was built without the filter; pass `--filter FILE`")]
    NoBuiltinFilter,
    #[error("not a valid WebAssembly module: {0}")]
    Invalid(String),
    #[error("the filter has no `AEGIS-LOCATOR-01` locator in an active data segment")]
    NoLocator,
    #[error("the filter has {0} `AEGIS-LOCATOR-01` locators; exactly one is required")]
    DuplicateLocator(usize),
    #[error("the filter already has a bundle embedded ({len} bytes at offset {offset}); start from the generic filter")]
    AlreadyEmbedded { offset: u32, len: u32 },
    #[error("memory 0 of the filter: {0}")]
    Memory(String),
    #[error("the bundle is empty")]
    EmptyBundle,
    #[error("the embedded bundle ({len} bytes at offset {offset}) is not in the data segments")]
    BundleNotFound { offset: u32, len: u32 },
    #[error("cannot encode the module: {0}")]
    Encode(String),
}

/// Where the locator points: offset and length of the bundle in linear
/// memory. Both zero in the generic filter.
pub use aegis_engine::locator::Span as Locator;

/// Returns `filter_wasm` with `bundle` embedded and the locator patched.
/// Any `signature` section is dropped (the content changed); sign after.
pub fn embed(filter_wasm: &[u8], bundle: &[u8]) -> Result<Vec<u8>, BlobError> {
    if bundle.is_empty() {
        return Err(BlobError::EmptyBundle);
    }
    let len = u32::try_from(bundle.len())
        .map_err(|_| BlobError::Memory("the bundle does not fit in 4 GiB".into()))?;
    let m = scan(filter_wasm)?;
    let found = m.locator()?;
    let current = found.read(&m)?;
    if current.offset != 0 || current.len != 0 {
        return Err(BlobError::AlreadyEmbedded {
            offset: current.offset,
            len: current.len,
        });
    }
    let mem = m.memory0()?;
    if found.memory_index != 0 {
        return Err(BlobError::Memory(
            "the locator is not in memory 0".to_string(),
        ));
    }
    let pages = u64::from(len).div_ceil(PAGE);
    let minimum = mem
        .initial
        .checked_add(pages)
        .filter(|p| *p <= MAX_PAGES)
        .ok_or_else(|| BlobError::Memory("too large with the bundle added".into()))?;
    let maximum = match mem.maximum {
        Some(max) => Some(
            max.checked_add(pages)
                .filter(|p| *p <= MAX_PAGES)
                .ok_or_else(|| {
                    BlobError::Memory("maximum too large with the bundle added".into())
                })?,
        ),
        None => None,
    };
    // `minimum <= MAX_PAGES` and `pages >= 1`, so the old end fits in u32.
    let offset = u32::try_from(mem.initial * PAGE)
        .map_err(|_| BlobError::Memory("initial size past 4 GiB".into()))?;

    let mut memories = wasm_encoder::MemorySection::new();
    for (i, mt) in m.memories.iter().enumerate() {
        let mut t = wasm_encoder::MemoryType {
            minimum: mt.initial,
            maximum: mt.maximum,
            memory64: mt.memory64,
            shared: mt.shared,
            page_size_log2: mt.page_size_log2,
        };
        if i == 0 {
            t.minimum = minimum;
            t.maximum = maximum;
        }
        memories.memory(t);
    }

    let mut data = wasm_encoder::DataSection::new();
    for (i, seg) in m.segments.iter().enumerate() {
        let raw = slice(filter_wasm, &seg.range)?;
        if i != found.segment {
            data.raw(raw);
            continue;
        }
        let mut bytes = seg.data.to_vec();
        bytes
            .get_mut(found.at..found.at + locator::LEN)
            .ok_or(BlobError::NoLocator)?
            .copy_from_slice(&locator::encode(Locator { offset, len }));
        match &seg.offset_expr {
            Some(expr) => {
                let expr = RoundtripReencoder
                    .const_expr(expr.clone())
                    .map_err(|e| BlobError::Encode(e.to_string()))?;
                data.active(seg.memory_index, &expr, bytes);
            }
            None => return Err(BlobError::NoLocator),
        }
    }
    data.active(
        0,
        &wasm_encoder::ConstExpr::i32_const(i32::from_le_bytes(offset.to_le_bytes())),
        bundle.iter().copied(),
    );

    let mut out = wasm_encoder::Module::new();
    for s in &m.sections {
        match s.kind {
            SectionKind::Memory => {
                out.section(&memories);
            }
            SectionKind::Data => {
                out.section(&data);
            }
            SectionKind::DataCount(n) => {
                let count = n
                    .checked_add(1)
                    .ok_or_else(|| BlobError::Invalid("data count overflows".into()))?;
                out.section(&wasm_encoder::DataCountSection { count });
            }
            SectionKind::Signature => {}
            SectionKind::Other => {
                out.section(&wasm_encoder::RawSection {
                    id: s.id,
                    data: slice(filter_wasm, &s.range)?,
                });
            }
        }
    }
    let bytes = out.finish();
    validate(&bytes)?;
    Ok(bytes)
}

/// The bundle embedded in a blob: `None` for the generic filter.
pub fn extract(wasm: &[u8]) -> Result<Option<Vec<u8>>, BlobError> {
    let m = scan(wasm)?;
    let loc = m.locator()?.read(&m)?;
    if loc.offset == 0 && loc.len == 0 {
        return Ok(None);
    }
    let not_found = BlobError::BundleNotFound {
        offset: loc.offset,
        len: loc.len,
    };
    let want_start = u64::from(loc.offset);
    let want_end = want_start + u64::from(loc.len);
    // Later segments win at instantiation, so look from the end.
    for seg in m.segments.iter().rev() {
        if seg.memory_index != 0 {
            continue;
        }
        let Some(start) = seg.const_offset() else {
            continue;
        };
        let bytes = seg.data;
        let end = start + bytes.len() as u64;
        if start <= want_start && want_end <= end {
            let from = usize::try_from(want_start - start).map_err(|_| not_found.clone())?;
            let to = from + loc.len as usize;
            return bytes
                .get(from..to)
                .map(|b| Some(b.to_vec()))
                .ok_or(not_found);
        }
    }
    Err(not_found)
}

/// The locator of a filter or blob.
pub fn locator(wasm: &[u8]) -> Result<Locator, BlobError> {
    let m = scan(wasm)?;
    m.locator()?.read(&m)
}

/// Full validation with the default feature set (what Envoy's V8 runs).
pub fn validate(wasm: &[u8]) -> Result<(), BlobError> {
    wasmparser::Validator::new()
        .validate_all(wasm)
        .map(|_| ())
        .map_err(|e| BlobError::Invalid(e.to_string()))
}

#[derive(Debug, Clone, Copy)]
enum SectionKind {
    Memory,
    Data,
    DataCount(u32),
    /// `signature` / `signature_delimiter`: dropped, the content changes.
    Signature,
    Other,
}

struct Section {
    id: u8,
    range: Range<usize>,
    kind: SectionKind,
}

struct Segment<'a> {
    /// The whole encoded segment.
    range: Range<usize>,
    /// Its bytes.
    data: &'a [u8],
    memory_index: u32,
    /// Offset expression of an active segment.
    offset_expr: Option<wasmparser::ConstExpr<'a>>,
}

impl Segment<'_> {
    /// The offset of an active segment whose offset is a plain `i32.const`.
    fn const_offset(&self) -> Option<u64> {
        let mut ops = self.offset_expr.as_ref()?.get_operators_reader();
        let value = match ops.read().ok()? {
            Operator::I32Const { value } => u32::from_le_bytes(value.to_le_bytes()),
            _ => return None,
        };
        match ops.read().ok()? {
            Operator::End => Some(u64::from(value)),
            _ => None,
        }
    }
}

struct Scanned<'a> {
    sections: Vec<Section>,
    imported_memories: usize,
    memories: Vec<wasmparser::MemoryType>,
    segments: Vec<Segment<'a>>,
}

struct Found {
    segment: usize,
    /// Offset of the locator inside the segment's bytes.
    at: usize,
    memory_index: u32,
}

impl Found {
    fn read(&self, m: &Scanned<'_>) -> Result<Locator, BlobError> {
        let raw = m
            .segments
            .get(self.segment)
            .and_then(|seg| seg.data.get(self.at..self.at + locator::LEN))
            .and_then(|raw| <&[u8; locator::LEN]>::try_from(raw).ok())
            .ok_or(BlobError::NoLocator)?;
        Ok(locator::fields(raw))
    }
}

fn slice<'a>(bytes: &'a [u8], r: &Range<usize>) -> Result<&'a [u8], BlobError> {
    bytes
        .get(r.clone())
        .ok_or_else(|| BlobError::Invalid("range past the end of the module".into()))
}

fn range(r: Range<u64>) -> Result<Range<usize>, BlobError> {
    let bad = || BlobError::Invalid("offset out of range".into());
    Ok(usize::try_from(r.start).map_err(|_| bad())?..usize::try_from(r.end).map_err(|_| bad())?)
}

impl<'a> Scanned<'a> {
    /// The one locator in the active data segments.
    fn locator(&self) -> Result<Found, BlobError> {
        let mut hits = Vec::new();
        for (i, seg) in self.segments.iter().enumerate() {
            if seg.offset_expr.is_none() {
                continue;
            }
            hits.extend(locator::find(seg.data).map(|at| Found {
                segment: i,
                at,
                memory_index: seg.memory_index,
            }));
        }
        match hits.len() {
            0 => Err(BlobError::NoLocator),
            1 => hits.pop().ok_or(BlobError::NoLocator),
            n => Err(BlobError::DuplicateLocator(n)),
        }
    }

    /// Memory 0, which must be defined by the module (not imported) and
    /// 32-bit with 64 KiB pages.
    fn memory0(&self) -> Result<&wasmparser::MemoryType, BlobError> {
        if self.imported_memories > 0 {
            return Err(BlobError::Memory(
                "it is imported; the filter must define its memory".into(),
            ));
        }
        let mem = self
            .memories
            .first()
            .ok_or_else(|| BlobError::Memory("the module has no memory".into()))?;
        if mem.memory64 {
            return Err(BlobError::Memory(
                "64-bit memories are not supported".into(),
            ));
        }
        if mem.page_size_log2.is_some_and(|p| p != 16) {
            return Err(BlobError::Memory(
                "custom page sizes are not supported".into(),
            ));
        }
        Ok(mem)
    }
}

/// Reads the sections the rewrite needs; copies nothing.
fn scan(wasm: &[u8]) -> Result<Scanned<'_>, BlobError> {
    let invalid = |e: wasmparser::BinaryReaderError| BlobError::Invalid(e.to_string());
    let mut m = Scanned {
        sections: Vec::new(),
        imported_memories: 0,
        memories: Vec::new(),
        segments: Vec::new(),
    };
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(invalid)?;
        let kind = match &payload {
            Payload::Version { encoding, .. } => {
                if *encoding != Encoding::Module {
                    return Err(BlobError::Invalid("a component, not a core module".into()));
                }
                continue;
            }
            Payload::ImportSection(r) => {
                for import in r.clone().into_imports() {
                    if matches!(import.map_err(invalid)?.ty, TypeRef::Memory(_)) {
                        m.imported_memories += 1;
                    }
                }
                SectionKind::Other
            }
            Payload::MemorySection(r) => {
                for mem in r.clone() {
                    m.memories.push(mem.map_err(invalid)?);
                }
                SectionKind::Memory
            }
            Payload::DataSection(r) => {
                for seg in r.clone() {
                    let seg = seg.map_err(invalid)?;
                    let (memory_index, offset_expr) = match seg.kind {
                        DataKind::Passive => (0, None),
                        DataKind::Active {
                            memory_index,
                            offset_expr,
                        } => (memory_index, Some(offset_expr)),
                    };
                    m.segments.push(Segment {
                        range: range(seg.range)?,
                        data: seg.data,
                        memory_index,
                        offset_expr,
                    });
                }
                SectionKind::Data
            }
            Payload::DataCountSection { count, .. } => SectionKind::DataCount(*count),
            Payload::CustomSection(c)
                if c.name() == super::wasmsig::SECTION_NAME
                    || c.name() == super::wasmsig::DELIMITER_NAME =>
            {
                SectionKind::Signature
            }
            _ => SectionKind::Other,
        };
        if let Some((id, r)) = payload.as_section() {
            m.sections.push(Section {
                id,
                range: range(r)?,
                kind,
            });
        }
    }
    Ok(m)
}
