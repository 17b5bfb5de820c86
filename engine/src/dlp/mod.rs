//! DLP: detect and rewrite sensitive data in request bodies.
//!
//! A [`DlpSpec`] (built by `builder::dlp`, carried in the bundle) holds one
//! leftmost-first multi-pattern regex as a serialized forward and reverse
//! dense DFA, plus a [`Validator`] per pattern. [`Scanner::load`] turns it
//! into owned, validated DFAs; [`Scanner::scan`] walks a body (JSON string
//! values and keys, form keys and values, or the raw bytes), counts the
//! detections per pattern and, unless the action is `deny`, writes the
//! rewritten body.
//!
//! Searching a haystack (a decoded string, a form component, a raw body):
//! the forward DFA is stepped by hand so that, whenever no match is under
//! way, it jumps ahead to the next trigger byte that a match can hold
//! first, given the bytes before and after it and how many are left (see
//! [`DlpSpec::triggers`]; near the end of the haystack it looks at one byte
//! at a time, for a trigger byte with room for a match);
//! the reverse DFA then finds where the match starts, and the pattern's
//! validator confirms it and finds where the detection really starts and
//! ends. A rejected match is skipped as a whole. Both DFAs read the text
//! as a person sees it: without invisible characters, with full-width
//! digits and hyphens as ASCII (see `fold`); offsets are those of the text.
//!
//! Per request nothing is allocated while a body is clean: unescaped JSON
//! strings are searched in place and escaped ones are decoded into a
//! buffer of the reusable [`Scratch`].

mod codec;
mod fold;
mod trigger;
mod validate;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use hmac::{Hmac, Mac};
use regex_automata::dfa::{Automaton, StartKind};
use regex_automata::util::primitives::StateID;
use regex_automata::util::start;
use regex_automata::Anchored;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::dfa::{load_dense, Dfa};
use crate::json::{self, JsonErrorKind};
use crate::types::{BodyKind, DlpAction};

pub use validate::Validator;

/// Most patterns (built-in detectors + custom regexes) one spec may hold.
pub const MAX_PATTERNS: usize = 32;

/// One pattern of the multi-pattern DFA; its index is its slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlpPattern {
    /// Detector name (`ssn`, or a custom name) used in tokens and counts.
    pub name: String,
    pub validator: Validator,
}

/// The compiled DLP rules of one agent, as stored in the bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DlpSpec {
    /// Pattern `i` of both DFAs; at most [`MAX_PATTERNS`].
    pub patterns: Vec<DlpPattern>,
    /// Unanchored leftmost-first forward dense DFA, little endian.
    #[serde(with = "crate::dfa::as_bytes")]
    pub forward: Vec<u8>,
    /// Anchored reverse dense DFA (match kind all), little endian.
    #[serde(with = "crate::dfa::as_bytes")]
    pub reverse: Vec<u8>,
    pub action: DlpAction,
    /// HMAC-SHA256 key of the `hash` action.
    pub hash_key: [u8; 32],
    /// No match is shorter than this many bytes; shorter strings are skipped.
    pub min_match_len: u32,
    /// Every match holds a trigger byte; what is known of the first one
    /// in a match. The scanner skips text with no trigger byte. Bytes as
    /// the DFAs read them (see `fold`): invisible characters are not
    /// counted in a lead, and the scanner also stops at a full-width digit
    /// or hyphen when a digit or `-` is listed here.
    pub triggers: Vec<Trigger>,
}

/// A trigger byte of a [`DlpSpec`], and what holds for every match whose
/// first trigger byte it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    pub byte: u8,
    /// It is at most this many bytes after the match's start.
    pub lead: u8,
    /// The bytes that can come right before it in the match (bit `b % 8`
    /// of byte `b / 8`): after any other byte, the match starts with it.
    pub before: [u8; 32],
    /// The match can start with it: when false and the byte before it is
    /// not in `before`, no match holds it first and the scanner passes it.
    pub starts: bool,
    /// The match has at least this many bytes from it on, itself
    /// included: the scanner passes it when fewer are left.
    pub rest: u8,
    /// The bytes that can come right after it in the match (a bitmap as
    /// `before`): the scanner passes it when another byte follows that the
    /// DFAs read as itself (below `fold::FIRST_LEAD`).
    pub after: [u8; 32],
    /// The same facts told apart by how many bytes the match has before
    /// the trigger: one entry per such count, most first. Empty when not
    /// known (then only the fields above are used).
    pub offsets: Vec<Offset>,
}

/// What holds for the matches that hold a [`Trigger`] first, `len` bytes
/// after their start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offset {
    pub len: u8,
    /// Per byte before the trigger, from the match's start: the bytes
    /// that can be there (`len` bitmaps as [`Trigger::before`]).
    pub bytes: Vec<[u8; 32]>,
    /// As [`Trigger::rest`], for these matches.
    pub rest: u8,
    /// As [`Trigger::after`], for these matches.
    pub after: [u8; 32],
}

/// A JSON scan in progress: the body, how much of it is already copied to
/// the rewritten body, whether anything was found, and the first error.
#[derive(Debug)]
pub struct JsonScan<'b> {
    body: &'b [u8],
    copied: usize,
    found: bool,
    /// Once set, the rest of the body is not scanned.
    failed: Option<DlpError>,
    /// Trigger bytes of the body's unescaped strings are looked for in
    /// the body: one chunk serves neighbouring strings.
    cursor: trigger::Cursor,
}

impl<'b> JsonScan<'b> {
    /// The caller has reset the scratch's counts and output.
    fn new(body: &'b [u8]) -> Self {
        JsonScan {
            body,
            copied: 0,
            found: false,
            failed: None,
            cursor: trigger::Cursor::default(),
        }
    }
}

/// What a scan found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Clean,
    /// `rewritten`: the sanitized body is in [`Scratch::out`] (never for
    /// the `deny` action).
    Found {
        rewritten: bool,
    },
}

/// Why a body could not be scanned. The caller denies the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DlpError {
    pub kind: DlpErrorKind,
    /// Byte offset in the body where the problem was found.
    pub offset: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DlpErrorKind {
    /// The body is not valid JSON.
    Json(JsonErrorKind),
    /// A `%` in a form body not followed by two hex digits.
    PercentEncoding,
    /// The DFA search failed (only possible with a corrupt spec).
    Search,
}

impl fmt::Display for DlpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.offset;
        // Never quote the body: it may be exactly what DLP protects.
        let what = match self.kind {
            DlpErrorKind::Json(k) => match k {
                JsonErrorKind::UnexpectedEnd => "unexpected end",
                JsonErrorKind::UnexpectedByte(_) => "unexpected byte",
                JsonErrorKind::TrailingData => "trailing data",
                JsonErrorKind::DepthLimit => "nesting too deep",
                JsonErrorKind::BadEscape => "invalid escape",
                JsonErrorKind::LoneSurrogate => "unpaired surrogate escape",
                JsonErrorKind::ControlCharInString => "control character in string",
                JsonErrorKind::InvalidUtf8 => "invalid utf-8",
                JsonErrorKind::BadNumber => "invalid number",
            },
            DlpErrorKind::PercentEncoding => {
                return write!(
                    f,
                    "malformed form body: invalid percent-encoding at byte {at}"
                )
            }
            DlpErrorKind::Search => return write!(f, "dlp scan failed at byte {at}"),
        };
        write!(f, "malformed json body: {what} at byte {at}")
    }
}

impl core::error::Error for DlpError {}

impl DlpError {
    fn search(offset: usize) -> DlpError {
        DlpError {
            kind: DlpErrorKind::Search,
            offset,
        }
    }
}

/// Per-worker buffers reused across requests.
#[derive(Debug, Clone)]
pub struct Scratch {
    /// Detections of the last scan, by pattern slot.
    pub counts: [u32; MAX_PATTERNS],
    /// The rewritten body when the last scan returned
    /// `Found { rewritten: true }`.
    pub out: Vec<u8>,
    /// Decoded escaped JSON string / form component.
    dec: Vec<u8>,
    /// One rewritten string / component.
    repl: Vec<u8>,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            counts: [0; MAX_PATTERNS],
            out: Vec::new(),
            dec: Vec::new(),
            repl: Vec::new(),
        }
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}

type HmacSha256 = Hmac<Sha256>;

/// The [`Trigger::offsets`] of `triggers` as the scanner keeps them (see
/// its `offset_of`, `offsets` and `offset_bytes`). A byte listed twice
/// keeps none: not known.
fn load_offsets(triggers: &[Trigger]) -> Result<LoadedOffsets, String> {
    let mut of = [(0u16, 0u8); 256];
    let mut offsets = Vec::new();
    let mut bytes = Vec::new();
    let mut seen = [0u8; 256];
    for t in triggers {
        if let Some(k) = seen.get_mut(usize::from(t.byte)) {
            *k = k.saturating_add(1);
        }
    }
    for t in triggers {
        if t.offsets.is_empty() || seen.get(usize::from(t.byte)).copied() != Some(1) {
            continue;
        }
        let bad = || format!("dlp spec has bad offsets for trigger byte {}", t.byte);
        let in_order = t.offsets.windows(2).all(|w| match w {
            [a, b] => a.len > b.len,
            _ => true,
        });
        if !in_order
            || t.offsets
                .iter()
                .any(|o| o.bytes.len() != usize::from(o.len))
        {
            return Err(bad());
        }
        let first = u16::try_from(offsets.len()).map_err(|_| bad())?;
        let n = u8::try_from(t.offsets.len()).map_err(|_| bad())?;
        for o in &t.offsets {
            offsets.push(LoadedOffset {
                len: o.len,
                rest: o.rest,
                after: o.after,
                bytes: bytes.len(),
            });
            bytes.extend_from_slice(&o.bytes);
        }
        if let Some(slot) = of.get_mut(usize::from(t.byte)) {
            *slot = (first, n);
        }
    }
    Ok((of, offsets, bytes))
}

/// Whether `b` is in a byte-set bitmap (bit `b % 8` of byte `b / 8`), the
/// form of [`Trigger::before`] and of the trigger set.
pub(crate) fn bitmap_has(bits: &[u8; 32], b: u8) -> bool {
    bits.get(usize::from(b / 8))
        .is_some_and(|w| (w >> (b % 8)) & 1 == 1)
}

/// Adds `b` to a byte-set bitmap.
pub(crate) fn bitmap_set(bits: &mut [u8; 32], b: u8) {
    if let Some(w) = bits.get_mut(usize::from(b / 8)) {
        *w |= 1 << (b % 8);
    }
}

/// Whether no match can hold a trigger first that has `left` bytes from
/// it on and `next` after it, when such a match has at least `rest` bytes
/// from it on and one of `after` next. Only a byte below
/// `fold::FIRST_LEAD` is judged: the DFAs read it as itself, while a byte
/// from there up may start a unit that reads as another byte, or as none.
#[inline(always)]
fn ruled_out(left: usize, next: Option<u8>, rest: u8, after: &[u8; 32]) -> bool {
    left < usize::from(rest) || next.is_some_and(|n| n < fold::FIRST_LEAD && !bitmap_has(after, n))
}

/// Adds the bytes of `other` to a byte-set bitmap.
fn bitmap_union(into: &mut [u8; 32], other: &[u8; 32]) {
    for (w, o) in into.iter_mut().zip(other) {
        *w |= o;
    }
}

/// Longest detector name.
pub const MAX_NAME_LEN: usize = 64;

/// A detector name: 1 to [`MAX_NAME_LEN`] ASCII letters, digits, `_`, `-`
/// or `.`, so that it needs no escape in JSON, a form body or a label.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Where a haystack lies: it is `buf[off..off + len]`. Its trigger bytes
/// are looked for in `buf` with `cursor`, whose chunk may cover the
/// haystacks that follow in `buf` too.
struct Around<'a, 'c> {
    buf: &'a [u8],
    off: usize,
    cursor: &'c mut trigger::Cursor,
    /// The haystack holds no trigger byte that a match could hold first
    /// before this offset (see [`Scanner::next_trigger`]).
    clear: usize,
    /// What [`Scanner::next_trigger`] gives from offset 0, when known.
    first: Option<(usize, usize)>,
}

impl<'a, 'c> Around<'a, 'c> {
    /// A haystack that is all of `buf`.
    fn whole(buf: &'a [u8], cursor: &'c mut trigger::Cursor) -> Self {
        Around {
            buf,
            off: 0,
            cursor,
            clear: 0,
            first: None,
        }
    }
}

/// Fewer bytes than this left in a haystack are looked at one by one for
/// a trigger byte with room for a match (see [`Scanner::next_trigger`]).
const TAIL: usize = 16;

/// A loaded [`DlpSpec`], ready to scan.
#[derive(Clone)]
pub struct Scanner {
    fwd: Dfa,
    rev: Dfa,
    patterns: Vec<DlpPattern>,
    action: DlpAction,
    /// Keyed once at load; cloned per hashed value.
    mac: HmacSha256,
    min_len: usize,
    /// The trigger bytes of the spec, plus [`fold::FULL_WIDTH_LEAD`] when
    /// a full-width character can read as one of them: where to stop in
    /// the text.
    triggers: trigger::Triggers,
    /// The trigger bytes of the spec, by byte as the DFA reads it: whether
    /// a stop is a trigger.
    is_trigger: [bool; 256],
    /// Start state of a search at the start of a haystack.
    text_start: StateID,
    /// By the byte read before it: start state of a search inside a
    /// haystack (`None`: the DFA cannot start after that byte).
    starts: [Option<StateID>; 256],
    /// False when every byte is a trigger.
    skips: bool,
    /// By byte: how far before a trigger byte a match can start.
    leads: [u8; 256],
    /// By trigger byte: the bytes that can come right before it in a
    /// match that holds it first (a bitmap as in [`Trigger::before`]).
    before: [[u8; 32]; 256],
    /// By trigger byte: a match that holds it first can start with it.
    trigger_starts: [bool; 256],
    /// By trigger byte: the fewest bytes a match that holds it first has
    /// from it on.
    rests: [u8; 256],
    /// By trigger byte: the bytes that can come right after it in a match
    /// that holds it first (a bitmap as in [`Trigger::after`]).
    after: [[u8; 32]; 256],
    /// By trigger byte: its entries in `offsets` (first, count); a count
    /// of 0 when not known.
    offset_of: [(u16, u8); 256],
    /// The [`Offset`]s of every trigger byte, each byte's most bytes
    /// before it first.
    offsets: Vec<LoadedOffset>,
    /// The bitmaps of [`Offset::bytes`], in one run per entry.
    offset_bytes: Vec<[u8; 32]>,
}

/// `Scanner::offset_of`, `offsets` and `offset_bytes`.
type LoadedOffsets = ([(u16, u8); 256], Vec<LoadedOffset>, Vec<[u8; 32]>);

/// An [`Offset`] as the scanner reads it.
#[derive(Clone, Debug)]
struct LoadedOffset {
    len: u8,
    rest: u8,
    after: [u8; 32],
    /// Where its `len` bitmaps start in `Scanner::offset_bytes`.
    bytes: usize,
}

impl fmt::Debug for Scanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scanner")
            .field("patterns", &self.patterns)
            .field("action", &self.action)
            .field("forward_bytes", &self.fwd.memory_usage())
            .field("reverse_bytes", &self.rev.memory_usage())
            .finish_non_exhaustive()
    }
}

/// Why a [`DlpSpec`] does not load: it names the inconsistency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError(String);

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Scanner {
    /// Never panics on any spec (specs come from untrusted bundle bytes).
    pub fn load(spec: &DlpSpec) -> Result<Scanner, SpecError> {
        Self::checked(spec).map_err(SpecError)
    }

    fn checked(spec: &DlpSpec) -> Result<Scanner, String> {
        let n = spec.patterns.len();
        if n > MAX_PATTERNS {
            return Err(format!(
                "dlp spec has {n} patterns, more than the limit of {MAX_PATTERNS}"
            ));
        }
        // Names go into rewritten bodies as they are.
        if let Some(i) = spec.patterns.iter().position(|p| !valid_name(&p.name)) {
            return Err(format!("dlp spec names detector {i} with an invalid name"));
        }
        // `load_dense` copies into aligned words and validates them.
        let fwd = load_dense(&spec.forward).map_err(|e| format!("dlp forward dfa: {e}"))?;
        let rev = load_dense(&spec.reverse).map_err(|e| format!("dlp reverse dfa: {e}"))?;
        if fwd.pattern_len() != n || rev.pattern_len() != n {
            return Err(format!(
                "dlp spec names {n} patterns but its dfas hold {} and {}",
                fwd.pattern_len(),
                rev.pattern_len()
            ));
        }
        if !matches!(fwd.start_kind(), StartKind::Unanchored | StartKind::Both) {
            return Err("dlp forward dfa cannot search unanchored".into());
        }
        if !matches!(rev.start_kind(), StartKind::Anchored | StartKind::Both) {
            return Err("dlp reverse dfa cannot search anchored".into());
        }
        let mac = HmacSha256::new_from_slice(&spec.hash_key)
            .map_err(|_| String::from("invalid dlp hash key"))?;
        let mut bitmap = [0u8; 32];
        let mut leads = [0u8; 256];
        let mut is_trigger = [false; 256];
        let mut before = [[0u8; 32]; 256];
        let mut trigger_starts = [false; 256];
        let mut rests = [u8::MAX; 256];
        let mut after = [[0u8; 32]; 256];
        let (offset_of, offsets, offset_bytes) = load_offsets(&spec.triggers)?;
        for t in &spec.triggers {
            let (byte, i) = (t.byte, usize::from(t.byte));
            bitmap_set(&mut bitmap, byte);
            if let Some(x) = is_trigger.get_mut(i) {
                *x = true;
            }
            if let Some(l) = leads.get_mut(i) {
                *l = (*l).max(t.lead);
            }
            if let Some(bits) = before.get_mut(i) {
                bitmap_union(bits, &t.before);
            }
            if let Some(x) = trigger_starts.get_mut(i) {
                *x |= t.starts;
            }
            if let Some(r) = rests.get_mut(i) {
                *r = (*r).min(t.rest);
            }
            if let Some(bits) = after.get_mut(i) {
                bitmap_union(bits, &t.after);
            }
            // A full-width digit or hyphen reads as this byte: its first
            // byte must stop the skipping too.
            if byte.is_ascii_digit() || byte == b'-' {
                bitmap_set(&mut bitmap, fold::FULL_WIDTH_LEAD);
            }
        }
        let triggers = trigger::Triggers::from_bitmap(&bitmap);
        let text_start = fwd
            .start_state(&start::Config::new().anchored(Anchored::No))
            .map_err(|_| String::from("dlp forward dfa cannot search unanchored"))?;
        let mut starts = [None; 256];
        for (b, s) in (0..=u8::MAX).zip(starts.iter_mut()) {
            let config = start::Config::new()
                .anchored(Anchored::No)
                .look_behind(Some(b));
            *s = fwd.start_state(&config).ok();
        }
        Ok(Scanner {
            fwd,
            rev,
            patterns: spec.patterns.clone(),
            action: spec.action,
            mac,
            min_len: usize::try_from(spec.min_match_len).unwrap_or(usize::MAX),
            skips: !triggers.is_all(),
            triggers,
            is_trigger,
            text_start,
            starts,
            leads,
            before,
            trigger_starts,
            rests,
            after,
            offset_of,
            offsets,
            offset_bytes,
        })
    }

    pub fn action(&self) -> DlpAction {
        self.action
    }

    /// Detector names; the index is the slot in [`Scratch::counts`].
    pub fn pattern_names(&self) -> impl Iterator<Item = &str> {
        self.patterns.iter().map(|p| p.name.as_str())
    }

    /// Memory used by the forward and reverse DFAs, in bytes.
    pub fn dfa_sizes(&self) -> (usize, usize) {
        (self.fwd.memory_usage(), self.rev.memory_usage())
    }

    /// Scans `body` read as `kind`: JSON string values and keys (decoded),
    /// form keys and values (percent/plus-decoded), or the raw bytes.
    ///
    /// Fills `scratch.counts`. When something was found and the action is
    /// not `deny`, the rewritten body is in `scratch.out`: JSON stays valid
    /// JSON, a form body stays a valid form body. Malformed input is an
    /// error, and the caller denies.
    pub fn scan(
        &self,
        kind: BodyKind,
        body: &[u8],
        max_json_depth: usize,
        scratch: &mut Scratch,
    ) -> Result<Outcome, DlpError> {
        scratch.counts = [0; MAX_PATTERNS];
        scratch.out.clear();
        let found = match kind {
            BodyKind::Json => self.scan_json(body, max_json_depth, scratch)?,
            BodyKind::Form => self.scan_form(body, scratch)?,
            BodyKind::None => {
                let rewrite = self.rewrites().then_some(&mut scratch.out);
                let mut cursor = trigger::Cursor::default();
                let mut around = Around::whole(body, &mut cursor);
                self.scan_hay(body, 0, &mut scratch.counts, rewrite, &mut around)?
            }
        };
        Ok(self.outcome(found))
    }

    fn outcome(&self, found: bool) -> Outcome {
        if found {
            Outcome::Found {
                rewritten: self.rewrites(),
            }
        } else {
            Outcome::Clean
        }
    }

    fn rewrites(&self) -> bool {
        self.action != DlpAction::Deny
    }

    fn scan_json(
        &self,
        body: &[u8],
        max_depth: usize,
        scratch: &mut Scratch,
    ) -> Result<bool, DlpError> {
        let mut scan = JsonScan::new(body);
        let walked = crate::params::walk_json_text(body, max_depth, |s, quoted| {
            self.json_text(&mut scan, s, quoted, scratch);
        });
        // A scan error came before any JSON error (the walk stops at that).
        if let Some(e) = scan.failed {
            return Err(e);
        }
        walked.map_err(|e| DlpError {
            kind: DlpErrorKind::Json(e.kind),
            offset: e.offset,
        })?;
        Ok(self.json_end(&scan, scratch))
    }

    /// Starts scanning a JSON body whose walk someone else does (see
    /// [`Scanner::json_text`]). The body must be valid JSON: the walk
    /// validates it.
    pub fn json_begin<'b>(&self, body: &'b [u8], scratch: &mut Scratch) -> JsonScan<'b> {
        scratch.counts = [0; MAX_PATTERNS];
        scratch.out.clear();
        JsonScan::new(body)
    }

    /// One key, string (`quoted`) or number (its raw bytes) of the body
    /// of `scan`, in document order. Numbers are scanned too: a card
    /// number sent as a JSON number is still a card number; a rewritten
    /// number becomes a string. After an error (kept for
    /// [`Scanner::json_outcome`]) the rest is skipped.
    #[inline(always)]
    pub fn json_text(
        &self,
        scan: &mut JsonScan<'_>,
        s: json::JStr<'_>,
        quoted: bool,
        scratch: &mut Scratch,
    ) {
        // Decoding never makes a string longer: most keys, numbers and
        // short strings end here, before any call.
        if scan.failed.is_none() && s.raw.len() >= self.min_len {
            if let Err(e) = self.scan_json_text(scan, s, quoted, scratch) {
                scan.failed = Some(e);
            }
        }
    }

    #[inline(never)]
    fn scan_json_text(
        &self,
        scan: &mut JsonScan<'_>,
        s: json::JStr<'_>,
        quoted: bool,
        scratch: &mut Scratch,
    ) -> Result<(), DlpError> {
        let Scratch {
            counts,
            out,
            dec,
            repl,
        } = scratch;
        let rewrite = self.rewrites();
        let mut fresh = trigger::Cursor::default();
        let (hay, mut around): (&[u8], _) = if s.escaped {
            codec::decode_json(s.raw, dec).ok_or(DlpError::search(s.start))?;
            (dec, Around::whole(dec, &mut fresh))
        } else if scan
            .body
            .get(s.start..s.start + s.raw.len())
            .is_some_and(|inside| inside.as_ptr() == s.raw.as_ptr())
        {
            let around = Around {
                buf: scan.body,
                off: s.start,
                cursor: &mut scan.cursor,
                clear: 0,
                first: None,
            };
            (s.raw, around)
        } else {
            // Not where it says it is in the body: read on its own.
            (s.raw, Around::whole(s.raw, &mut fresh))
        };
        // Most strings hold no trigger byte that a match could hold first:
        // the chunk masks and the trigger facts tell so before a search is
        // set up, and where the first one is, which the search then starts
        // from (it would pass the same bytes before it).
        if self.skips {
            match self.next_trigger(hay, 0, &mut around) {
                None => return Ok(()),
                Some(first @ (_, t)) => {
                    around.clear = t;
                    around.first = Some(first);
                }
            }
        }
        let repl_to = rewrite.then_some(&mut *repl);
        if !self.scan_hay(hay, s.start, counts, repl_to, &mut around)? {
            return Ok(());
        }
        scan.found = true;
        if rewrite {
            let quote = usize::from(quoted);
            let open = s
                .start
                .checked_sub(quote)
                .ok_or(DlpError::search(s.start))?;
            let before = scan
                .body
                .get(scan.copied..open)
                .ok_or(DlpError::search(open))?;
            if out.is_empty() {
                out.reserve(scan.body.len() + 64);
            }
            out.extend_from_slice(before);
            if s.escaped {
                json::write_escaped(out, repl);
            } else {
                // The string needed no escape, and neither do the tokens
                // written in place of its detections (names are checked
                // at load): quoted as it is.
                out.push(b'"');
                out.extend_from_slice(repl);
                out.push(b'"');
            }
            scan.copied = s.start + s.raw.len() + quote;
        }
        Ok(())
    }

    /// Ends the scan of `scan`'s body: whether anything was found (the
    /// rewritten body, if any, is then complete in `scratch.out`).
    pub fn json_end(&self, scan: &JsonScan<'_>, scratch: &mut Scratch) -> bool {
        if scan.found && self.rewrites() {
            scratch
                .out
                .extend_from_slice(scan.body.get(scan.copied..).unwrap_or_default());
        }
        scan.found
    }

    /// [`Outcome`] of a finished [`JsonScan`], or its first error.
    pub fn json_outcome(
        &self,
        scan: &JsonScan<'_>,
        scratch: &mut Scratch,
    ) -> Result<Outcome, DlpError> {
        if let Some(e) = scan.failed {
            return Err(e);
        }
        let found = self.json_end(scan, scratch);
        Ok(self.outcome(found))
    }

    fn scan_form(&self, body: &[u8], scratch: &mut Scratch) -> Result<bool, DlpError> {
        let Scratch {
            counts,
            out,
            dec,
            repl,
        } = scratch;
        let rewrite = self.rewrites();
        let mut copied = 0usize;
        let mut found = false;
        let mut start = 0usize;
        let mut body_cursor = trigger::Cursor::default();
        for pair in body.split(|&b| b == b'&') {
            let pair_start = start;
            start += pair.len() + 1;
            let (key, value) = match pair.iter().position(|&b| b == b'=') {
                Some(eq) => (pair.get(..eq), pair.get(eq + 1..).map(|v| (eq + 1, v))),
                None => (Some(pair), None),
            };
            let parts = key.map(|k| (0, k)).into_iter().chain(value);
            for (rel, raw) in parts {
                let at = pair_start + rel;
                let encoded = raw.iter().any(|&b| b == b'%' || b == b'+');
                let mut fresh = trigger::Cursor::default();
                let (hay, mut around): (&[u8], _) = if encoded {
                    codec::decode_form(raw, dec).map_err(|i| DlpError {
                        kind: DlpErrorKind::PercentEncoding,
                        offset: at + i,
                    })?;
                    (dec, Around::whole(dec, &mut fresh))
                } else {
                    let around = Around {
                        buf: body,
                        off: at,
                        cursor: &mut body_cursor,
                        clear: 0,
                        first: None,
                    };
                    (raw, around)
                };
                if hay.len() < self.min_len {
                    continue;
                }
                let repl_to = rewrite.then_some(&mut *repl);
                let hit = self.scan_hay(hay, at, counts, repl_to, &mut around)?;
                if hit {
                    found = true;
                    if rewrite {
                        let before = body.get(copied..at).ok_or(DlpError::search(at))?;
                        if out.is_empty() {
                            out.reserve(body.len() + 64);
                        }
                        out.extend_from_slice(before);
                        codec::encode_form(out, repl);
                        copied = at + raw.len();
                    }
                }
            }
        }
        if found && rewrite {
            out.extend_from_slice(body.get(copied..).unwrap_or_default());
        }
        Ok(found)
    }

    /// Finds, validates and counts every detection in `hay`. With `repl`,
    /// also writes `hay` with each detection replaced into it (the content
    /// of `repl` is meaningful only when this returns true). `base` is the
    /// offset of `hay` in the body, for errors.
    fn scan_hay(
        &self,
        hay: &[u8],
        base: usize,
        counts: &mut [u32; MAX_PATTERNS],
        mut repl: Option<&mut Vec<u8>>,
        around: &mut Around<'_, '_>,
    ) -> Result<bool, DlpError> {
        if hay.len() < self.min_len {
            return Ok(false);
        }
        let mut pos = 0usize;
        let mut last = 0usize;
        let mut found = false;
        let mut memo = validate::Memo::default();
        while let Some((slot, start, end)) = self.find_at(hay, pos, base, around)? {
            let detection = match self.patterns.get(slot) {
                Some(p) if end > start => p.validator.accept(hay, start, end, pos, &mut memo),
                _ => None,
            };
            match detection {
                Some((start, end)) => {
                    if let Some(c) = counts.get_mut(slot) {
                        *c = c.saturating_add(1);
                    }
                    if let Some(r) = repl.as_deref_mut() {
                        if !found {
                            r.clear();
                        }
                        r.extend_from_slice(hay.get(last..start).unwrap_or_default());
                        self.write_token(r, slot, hay.get(start..end).unwrap_or_default());
                        last = end;
                    }
                    found = true;
                    pos = end;
                }
                // Not a detection: go on after the match (after one byte
                // for an empty match, which only a corrupt spec yields).
                None => pos = if end > start { end } else { end + 1 },
            }
            if pos > hay.len() {
                break;
            }
        }
        if found {
            if let Some(r) = repl {
                r.extend_from_slice(hay.get(last..).unwrap_or_default());
            }
        }
        Ok(found)
    }

    /// The leftmost-first match at or after `from`: `(slot, start, end)`.
    fn find_at(
        &self,
        hay: &[u8],
        from: usize,
        base: usize,
        around: &mut Around<'_, '_>,
    ) -> Result<Option<(usize, usize, usize)>, DlpError> {
        let err = || DlpError::search(base + from);
        let Some((slot, e)) = self.search_fwd(hay, from, around).map_err(|_| err())? else {
            return Ok(None);
        };
        if e < from || e > hay.len() {
            return Err(err());
        }
        if e == from {
            return Ok(Some((slot, e, e)));
        }
        // The reverse DFA finds the longest match ending at `e`, which
        // starts where the leftmost-first match does.
        let s = self
            .search_rev(hay, from, e)
            .map_err(|_| err())?
            .ok_or_else(err)?;
        if s < from || s > e {
            return Err(err());
        }
        Ok(Some((slot, s, e)))
    }

    /// The start state of the forward DFA at `at`, which depends on the
    /// byte read before it.
    #[inline(always)]
    fn start_at(&self, hay: &[u8], at: usize) -> Result<StateID, DlpError> {
        match fold::read_before(hay, at) {
            None => Ok(self.text_start),
            Some(before) => self
                .starts
                .get(usize::from(before))
                .copied()
                .flatten()
                .ok_or(DlpError::search(at)),
        }
    }

    /// The next trigger at or after `at` (none before `around.clear`):
    /// `(earliest start of a match holding it first, its offset)`. A
    /// full-width character that stopped the skipping but does not read as
    /// a trigger byte is passed over, and so is a trigger byte that no
    /// match can hold first after the byte before it, before the byte
    /// after it, or with the bytes left after it (the DFA reads a unit of
    /// one or more bytes per byte, so a match has at least as many bytes
    /// as the DFA reads).
    #[inline(always)]
    fn next_trigger(
        &self,
        hay: &[u8],
        mut at: usize,
        around: &mut Around<'_, '_>,
    ) -> Option<(usize, usize)> {
        let floor = at;
        at = at.max(around.clear);
        let off = around.off;
        loop {
            let t = if hay.len().saturating_sub(at) < TAIL {
                // Few bytes left: a byte at a time, passing the bytes with
                // fewer left than a match holding them first has (every
                // byte that does not trigger, every trigger byte of a
                // number or token that cannot fit).
                let left = |i: usize| hay.len() - i;
                let rest =
                    |b: u8| usize::from(self.rests.get(usize::from(b)).copied().unwrap_or(0));
                let i = hay
                    .get(at..)?
                    .iter()
                    .zip(at..)
                    .position(|(&b, i)| b >= fold::FIRST_LEAD || rest(b) <= left(i))?;
                at + i
            } else {
                self.triggers
                    .next(around.buf, off + at, off + hay.len(), around.cursor)?
                    .checked_sub(off)?
            };
            let (read, len) = match hay.get(t) {
                // Read as itself: the common case, decoded inline.
                Some(&b) if b < fold::FIRST_LEAD => (Some(b), 1),
                _ => fold::unit_at(hay, t)?,
            };
            match read {
                // Too near the end for a match to hold it first, or
                // followed by a byte no such match has there (a byte from
                // `FIRST_LEAD` up may start a unit that reads as another
                // byte, or as none).
                Some(b)
                    if ruled_out(
                        hay.len().saturating_sub(t),
                        hay.get(t + len).copied(),
                        self.rests.get(usize::from(b)).copied().unwrap_or(0),
                        self.after.get(usize::from(b)).unwrap_or(&[u8::MAX; 32]),
                    ) =>
                {
                    at = t + len;
                }
                Some(b) if self.is_trigger.get(usize::from(b)).copied().unwrap_or(true) => {
                    let i = usize::from(b);
                    match self.offset_start(hay, t, len, i, floor) {
                        Some(Some(start)) => return Some((start, t)),
                        Some(None) => {
                            at = t + len;
                            continue;
                        }
                        None => {}
                    }
                    let lead = self.leads.get(i).copied().unwrap_or(0);
                    // A match that holds this byte first and starts before
                    // it holds the byte read right before it: only then
                    // does the search start before it, and a byte no match
                    // can start with is passed when that byte cannot be.
                    let after_match_byte = lead > 0
                        && t > floor
                        && fold::read_before(hay, t).is_some_and(|p| {
                            self.before.get(i).is_none_or(|bits| bitmap_has(bits, p))
                        });
                    if after_match_byte {
                        // Invisible characters before the trigger are not
                        // counted in its lead.
                        return Some((fold::back(hay, t, usize::from(lead), floor), t));
                    }
                    if self.trigger_starts.get(i).copied().unwrap_or(true) {
                        return Some((t, t));
                    }
                    at = t + len;
                }
                _ => at = t + len,
            }
        }
    }

    /// From the [`Offset`]s of trigger byte `i` read at `t` (a unit of
    /// `len` bytes): where the search for the matches that hold it first
    /// must start (the most bytes before it that such a match can have
    /// there, none before `floor`), `Some(None)` when no such match can,
    /// and `None` when not known: no offsets, or a byte before it that
    /// the DFAs may not read as itself (from 0x80 up).
    #[inline(always)]
    fn offset_start(
        &self,
        hay: &[u8],
        t: usize,
        len: usize,
        i: usize,
        floor: usize,
    ) -> Option<Option<usize>> {
        let &(first, n) = self.offset_of.get(i)?;
        if n == 0 {
            return None;
        }
        let first = usize::from(first);
        let entries = self.offsets.get(first..first + usize::from(n))?;
        let left = hay.len().saturating_sub(t);
        let next = hay.get(t + len).copied();
        'entries: for o in entries {
            if ruled_out(left, next, o.rest, &o.after) {
                continue;
            }
            let l = usize::from(o.len);
            if l == 0 {
                return Some(Some(t));
            }
            // Each of the `l` units before the trigger is a byte at least.
            if t < floor + l {
                continue;
            }
            let window = hay.get(t - l..t)?;
            let bytes = self.offset_bytes.get(o.bytes..o.bytes + l)?;
            // From the trigger back: a byte below 0x80 is a unit of its
            // own, at its place in the match.
            for (&c, bits) in window.iter().zip(bytes).rev() {
                if c >= 0x80 {
                    return None;
                }
                if !bitmap_has(bits, c) {
                    continue 'entries;
                }
            }
            return Some(Some(t - l));
        }
        Some(None)
    }

    /// Unanchored leftmost-first forward search of `hay[from..]`: the slot
    /// and end of the leftmost match.
    ///
    /// The DFA is stepped here rather than by `try_search_fwd` so that,
    /// whenever it is back in a start state (no match under way), it can
    /// jump to the next trigger byte, less that byte's lead: a match that
    /// starts before the trigger byte has it as its first trigger byte, so
    /// starts at most `lead` bytes before it. The start state of the new
    /// position accounts for the byte before it. Stepping by hand also
    /// lets the DFA read the text a unit at a time (see `fold`).
    #[inline(never)]
    fn search_fwd(
        &self,
        hay: &[u8],
        from: usize,
        around: &mut Around<'_, '_>,
    ) -> Result<Option<(usize, usize)>, DlpError> {
        let dfa = &self.fwd;
        let mut at = from;
        let mut sid = self.start_at(hay, at)?;
        // `(jump target, trigger)` of the next trigger, kept until passed:
        // finding the target walks back over invisible characters.
        let mut next: Option<(usize, usize)> = around.first.take().filter(|_| from == 0);
        let mut mat = None;
        // End of the last unit the DFA read: where a match it reports on
        // the next unit ended (matches are reported one unit late).
        let mut read_end = at;
        loop {
            if self.skips && mat.is_none() && dfa.is_start_state(sid) {
                let (to, trigger) = match next {
                    Some(n @ (_, t)) if t >= at => n,
                    _ => match self.next_trigger(hay, at, around) {
                        Some(n) => n,
                        // No trigger byte left: no match can start.
                        None => return Ok(None),
                    },
                };
                next = Some((to, trigger));
                if to > at {
                    at = to;
                    read_end = at;
                    sid = self.start_at(hay, at)?;
                }
            }
            // The common run: ASCII bytes taking the DFA from one ordinary
            // state to another, or to a start state before the trigger
            // already found (there is nothing to skip before it). Anything
            // else (a match, dead or quit state, a start state past the
            // trigger, a unit of more bytes, the end) leaves the run
            // unstepped for the general step below.
            let trigger = next.map_or(0, |(_, t)| t);
            while let Some(&raw) = hay.get(at) {
                if raw >= fold::FIRST_LEAD {
                    break;
                }
                let n = dfa.next_state(sid, raw);
                if dfa.is_special_state(n) && !(at < trigger && dfa.is_start_state(n)) {
                    break;
                }
                sid = n;
                at += 1;
                read_end = at;
            }
            let Some(&raw) = hay.get(at) else {
                break;
            };
            let (byte, len) = if raw < fold::FIRST_LEAD {
                (raw, 1)
            } else {
                match fold::unit_at(hay, at) {
                    Some((Some(b), len)) => (b, len),
                    // Invisible: not read at all.
                    Some((None, len)) => {
                        at += len;
                        continue;
                    }
                    None => break,
                }
            };
            sid = dfa.next_state(sid, byte);
            if dfa.is_special_state(sid) {
                if dfa.is_match_state(sid) {
                    mat = Some((dfa.match_pattern(sid, 0).as_usize(), read_end));
                } else if dfa.is_dead_state(sid) {
                    return Ok(mat);
                } else if dfa.is_quit_state(sid) {
                    return Err(DlpError::search(at));
                }
            }
            at += len;
            read_end = at;
        }
        sid = dfa.next_eoi_state(sid);
        if dfa.is_match_state(sid) {
            mat = Some((dfa.match_pattern(sid, 0).as_usize(), read_end));
        }
        Ok(mat)
    }

    /// Anchored reverse search from `end` down to `from` at most: the start
    /// of the longest match ending at `end`. Stepped by hand, like
    /// [`Scanner::search_fwd`], so that the DFA reads the same units
    /// backwards; as in `regex_automata`, the byte after `end` and the one
    /// before `from` are read as look-around.
    #[inline(never)]
    fn search_rev(&self, hay: &[u8], from: usize, end: usize) -> Result<Option<usize>, DlpError> {
        let dfa = &self.rev;
        let config = start::Config::new()
            .anchored(Anchored::Yes)
            .look_behind(fold::read_from(hay, end));
        let mut sid = dfa
            .start_state(&config)
            .map_err(|_| DlpError::search(end))?;
        let mut mat = None;
        let mut at = end;
        // Start of the last unit read: where a match reported on the next
        // unit starts.
        let mut read_start = at;
        while at > from {
            // The common run: ASCII bytes taking the DFA from one ordinary
            // state to another. Anything else is left to the general step.
            while let Some(&b) = hay.get(at.wrapping_sub(1)).filter(|_| at > from) {
                if b >= 0x80 {
                    break;
                }
                let n = dfa.next_state(sid, b);
                if dfa.is_special_state(n) {
                    break;
                }
                sid = n;
                at -= 1;
                read_start = at;
            }
            if at <= from {
                break;
            }
            let Some((read, len)) = fold::unit_before(hay, at) else {
                break;
            };
            // A unit reaching below `from` is read a byte at a time, the
            // way the forward search, which began at `from`, read it.
            let (read, len) = if at - from < len {
                (hay.get(at - 1).copied(), 1)
            } else {
                (read, len)
            };
            at -= len;
            let Some(byte) = read else {
                continue;
            };
            sid = dfa.next_state(sid, byte);
            if dfa.is_special_state(sid) {
                if dfa.is_match_state(sid) {
                    mat = Some(read_start);
                } else if dfa.is_dead_state(sid) {
                    return Ok(mat);
                } else if dfa.is_quit_state(sid) {
                    return Err(DlpError::search(at));
                }
            }
            read_start = at;
        }
        sid = match fold::read_before(hay, at) {
            Some(byte) => dfa.next_state(sid, byte),
            None => dfa.next_eoi_state(sid),
        };
        if dfa.is_match_state(sid) {
            mat = Some(read_start);
        }
        Ok(mat)
    }

    fn write_token(&self, out: &mut Vec<u8>, slot: usize, value: &[u8]) {
        let name = self.patterns.get(slot).map_or("", |p| p.name.as_str());
        match self.action {
            DlpAction::Redact | DlpAction::Deny => {
                out.extend_from_slice(b"[REDACTED:");
                out.extend_from_slice(name.as_bytes());
                out.push(b']');
            }
            DlpAction::Mask => codec::write_mask(out, value),
            DlpAction::Hash => {
                let mut mac = self.mac.clone();
                mac.update(value);
                let tag = mac.finalize().into_bytes();
                out.extend_from_slice(b"[HASH:");
                out.extend_from_slice(name.as_bytes());
                out.push(b':');
                codec::write_hex(out, tag.get(..8).unwrap_or_default());
                out.push(b']');
            }
        }
    }
}
