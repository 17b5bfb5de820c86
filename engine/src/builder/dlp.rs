//! Builds the DLP multi-pattern DFA for one detector set.
//!
//! All selected detectors and custom regexes become one leftmost-first
//! multi-pattern regex: an unanchored forward dense DFA (finds where the
//! leftmost match ends) and an anchored reverse dense DFA (finds where it
//! starts), both serialized little endian into a [`DlpSpec`].
//!
//! Built-in detectors are short distinctive heads plus a [`Validator`] per
//! pattern that confirms and delimits the detection (Luhn, mod-97, dates,
//! token prefixes, the rest of an email, JWT or PEM block): a precise regex
//! for every detector in one DFA multiplies states (3.4 MB for the ten of
//! them, against about 210 KB this way).
//!
//! The spec also lists trigger bytes: every match holds one, at most a
//! known number of bytes (its lead) after the match's start. For each
//! trigger byte it also records which bytes can come right before it in a
//! match that holds it first, and whether such a match can start with it:
//! `-` starts a PEM header or follows the letters of a token prefix, so a
//! `-` after a space either starts the search or is passed. The same facts
//! are kept apart for each number of bytes (up to 8) a match can have
//! before the trigger, with the bytes each of those places can hold: a `-`
//! comes after `sk`, `xox` and a letter, `gl` and three letters, or starts
//! a PEM header and is followed by `-`, so `doc-000123` is passed at its
//! `-`. All of this is
//! computed here by walking each pattern's own anchored DFA, so the claims
//! are checked, not assumed; custom regexes trigger on the bytes their
//! matches can start with. The scanner uses them to skip text.
//!
//! The patterns are plain ASCII regexes, yet they find values disguised
//! with invisible characters (`123\u{200B}-45-6789`) or full-width digits
//! (`１２３－４５－６７８９`): the scanner never shows the DFAs the invisible
//! characters and shows them full-width digits and hyphens as ASCII (see
//! `dlp::fold`, which also says why this is not done in the regexes). The
//! same holds for custom regexes: one that spells out an invisible
//! character, a full-width digit or U+FF0D cannot match it.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use regex_automata::dfa::{dense, Automaton, StartKind};
use regex_automata::nfa::thompson;
use regex_automata::util::primitives::StateID;
use regex_automata::util::{start, syntax};
use regex_automata::{Anchored, MatchKind};

use super::regex::{describe, serialize, DLP_DFA_LIMIT};
use super::BuildError;
use crate::dlp::{
    bitmap_set, valid_name, DlpPattern, DlpSpec, Offset, Trigger, Validator, MAX_NAME_LEN,
    MAX_PATTERNS,
};
use crate::types::{Detector, DlpAction};

/// Priority order of the built-in detectors in the leftmost-first DFA.
/// Priority only matters between matches that start at the same byte;
/// patterns that can cover a longer span come first so that the larger
/// secret wins. A validator that rejects a match does not let a
/// lower-priority pattern match at the same start, so heads that can start
/// at the same byte are ordered by hand.
const PRIORITY: [Detector; 10] = [
    Detector::PrivateKey,
    Detector::Jwt,
    Detector::Email,
    Detector::ApiKey,
    // Before `A` + 19: an Austrian IBAN is 20 characters starting with `AT`.
    Detector::Iban,
    Detector::AwsAccessKey,
    Detector::CreditCard,
    Detector::Ssn,
    Detector::Phone,
    Detector::Dob,
];

/// How a built-in detector is searched.
pub struct Builtin {
    /// Pattern of the combined DFA.
    pub regex: &'static str,
    /// Confirms and delimits a match.
    pub validator: Validator,
    /// Length of the shortest possible detection.
    pub min_len: usize,
    /// Every match holds one of these bytes (inclusive ranges) a few bytes
    /// after its start; rare bytes, so that the scanner can skip the text
    /// between them. Checked against the DFA when a spec is built.
    pub triggers: &'static [(u8, u8)],
}

const DIGITS: &[(u8, u8)] = &[(b'0', b'9')];

/// The built-in detector `d`.
///
/// Every pattern is ASCII-only (`(?-u)`) and uses ASCII word boundaries:
/// a DFA cannot evaluate a Unicode `\b` next to non-ASCII text. Where a
/// precise regex would multiply the states of the combined DFA (literal
/// alternatives splitting the byte classes, counted or unbounded runs that
/// cross the separators where other detectors restart) the pattern is a
/// short distinctive head and the validator does the rest (see
/// `dlp::validate`). Short heads also keep every match within a few bytes
/// of a trigger byte, which lets the scanner skip the text in between.
pub fn builtin(d: Detector) -> Builtin {
    type Row = (&'static str, Validator, usize, &'static [(u8, u8)]);
    let (regex, validator, min_len, triggers): Row = match d {
        // Separators must agree: `123-45-6789`, `123 45 6789`, `123.45.6789`.
        Detector::Ssn => (
            r"(?-u)\b[0-9]{3}(?:-[0-9]{2}-|\x20[0-9]{2}\x20|\.[0-9]{2}\.)[0-9]{4}\b",
            Validator::Ssn,
            11,
            DIGITS,
        ),
        // 13-19 digits in one run, or grouped 4-4-4-4(-3), 4-4-4-x, 4-6-4/5
        // with one kind of separator: space, dash or dot.
        Detector::CreditCard => (
            concat!(
                r"(?-u)\b(?:[0-9]{13,19}",
                r"|[0-9]{4}(?:\x20[0-9]{4}){2}(?:\x20[0-9]{4}\x20[0-9]{3}|\x20[0-9]{1,4})",
                r"|[0-9]{4}(?:-[0-9]{4}){2}(?:-[0-9]{4}-[0-9]{3}|-[0-9]{1,4})",
                r"|[0-9]{4}(?:\.[0-9]{4}){2}(?:\.[0-9]{4}\.[0-9]{3}|\.[0-9]{1,4})",
                r"|[0-9]{4}\x20[0-9]{6}\x20[0-9]{4,5}",
                r"|[0-9]{4}-[0-9]{6}-[0-9]{4,5}",
                r"|[0-9]{4}\.[0-9]{6}\.[0-9]{4,5}",
                r")\b"
            ),
            Validator::Luhn,
            13,
            DIGITS,
        ),
        // Head: `@` after a word byte, one domain byte.
        Detector::Email => (r"(?-u)\b@[A-Za-z0-9]", Validator::Email, 6, &[(b'@', b'@')]),
        // North American forms with an optional +1, then E.164.
        Detector::Phone => (
            concat!(
                r"(?-u)(?:(?:\+1[\x20.\-]?)?(?:\([0-9]{3}\)\x20?|\b[0-9]{3}[\x20.\-])",
                r"[0-9]{3}[\x20.\-][0-9]{4}",
                r"|\+[0-9]{8,15})\b"
            ),
            Validator::None,
            9,
            DIGITS,
        ),
        // YYYY-MM-DD, MM/DD/YYYY, DD.MM.YYYY; ranges checked by the validator.
        Detector::Dob => (
            concat!(
                r"(?-u)\b(?:[0-9]{4}-[0-9]{2}-[0-9]{2}",
                r"|[0-9]{2}/[0-9]{2}/[0-9]{4}",
                r"|[0-9]{2}\.[0-9]{2}\.[0-9]{4})\b"
            ),
            Validator::Date,
            10,
            DIGITS,
        ),
        // Country, check digits, BBAN; plain or in groups of four.
        Detector::Iban => (
            concat!(
                r"(?-u)\b[A-Z]{2}[0-9]{2}(?:[A-Z0-9]{11,30}",
                r"|(?:\x20[A-Z0-9]{4}){2,7}(?:\x20[A-Z0-9]{1,3})?)\b"
            ),
            Validator::Iban,
            15,
            DIGITS,
        ),
        // `A` + 19; the validator checks the AKIA/ASIA/... prefix.
        Detector::AwsAccessKey => (
            r"(?-u)\bA[A-Z0-9]{19}\b",
            Validator::AwsKeyId,
            20,
            &[(b'A', b'A')],
        ),
        // Token prefixes with their variable letters as classes; the
        // validator checks the exact prefix and the token length.
        Detector::ApiKey => (
            concat!(
                r"(?-u)\b(?:[sr]k_[a-z]{4}_|gh[a-z]_|g[a-z]{5}_[a-z]{3}_|gl[a-z]{3}-",
                r"|xox[a-z]-|sk-[a-z]{3,7}-|sk-|AIza)[A-Za-z0-9]"
            ),
            Validator::ApiKey,
            15,
            &[(b'-', b'-'), (b'A', b'A'), (b'_', b'_')],
        ),
        // Head: the start of a PEM header line.
        Detector::PrivateKey => (
            r"(?-u)-----BEGIN\x20",
            Validator::PrivateKey,
            27,
            &[(b'-', b'-')],
        ),
        // Head: the start of a base64url JSON header.
        Detector::Jwt => (
            r"(?-u)\beyJ[A-Za-z0-9_\-]",
            Validator::Jwt,
            10,
            &[(b'J', b'J')],
        ),
    };
    Builtin {
        regex,
        validator,
        min_len,
        triggers,
    }
}

/// Builds the DLP spec for `detectors` (any order, duplicates ignored) and
/// `custom` `(name, regex)` pairs. A bad custom regex is named with the
/// regex in backticks.
pub fn build_dlp(
    detectors: &[Detector],
    custom: &[(String, String)],
    action: DlpAction,
    hash_key: [u8; 32],
) -> Result<DlpSpec, BuildError> {
    build(detectors, custom, action, hash_key).map_err(BuildError::Dlp)
}

fn build(
    detectors: &[Detector],
    custom: &[(String, String)],
    action: DlpAction,
    hash_key: [u8; 32],
) -> Result<DlpSpec, String> {
    let mut sources: Vec<String> = Vec::new();
    let mut patterns: Vec<DlpPattern> = Vec::new();
    let mut singles: Vec<dense::DFA<Vec<u32>>> = Vec::new();
    let mut min_len = usize::MAX;
    let mut triggers = [false; 256];

    for d in PRIORITY.into_iter().filter(|d| detectors.contains(d)) {
        let b = builtin(d);
        let internal =
            |e: &dyn core::fmt::Display| format!("built-in detector `{}`: {e}", d.name());
        let facts = analyze(b.regex).map_err(|e| internal(&e))?;
        let single = build_single(b.regex).map_err(|e| internal(&e))?;
        for &(lo, hi) in b.triggers {
            for byte in lo..=hi {
                if let Some(slot) = triggers.get_mut(usize::from(byte)) {
                    *slot = true;
                }
            }
        }
        min_len = min_len.min(facts.min_len.max(b.min_len));
        singles.push(single);
        sources.push(b.regex.to_string());
        patterns.push(DlpPattern {
            name: d.name().to_string(),
            validator: b.validator,
        });
    }

    for (name, regex) in custom {
        check_name(name)?;
        if patterns.iter().any(|p| &p.name == name) {
            return Err(format!("dlp detector name `{name}` is used twice"));
        }
        let source = ascii_word_boundaries(regex);
        let facts = analyze(&source)
            .map_err(|e| format!("invalid regex `{regex}` for custom detector `{name}`: {e}"))?;
        if facts.min_len == 0 {
            return Err(format!(
                "regex `{regex}` for custom detector `{name}` can match the empty string"
            ));
        }
        // Alone first, so that a regex that blows up is named.
        let named = |e: Box<dense::BuildError>| {
            format!("{} (custom detector `{name}`)", describe(regex, &e))
        };
        build_forward(&[source.as_str()], DLP_DFA_LIMIT / 2).map_err(named)?;
        let single = build_single(&source).map_err(named)?;
        // Any byte a match can start with triggers it.
        union(&mut triggers, &first_bytes(&single));
        min_len = min_len.min(facts.min_len);
        singles.push(single);
        sources.push(source);
        patterns.push(DlpPattern {
            name: name.clone(),
            validator: Validator::None,
        });
    }

    if patterns.len() > MAX_PATTERNS {
        return Err(format!(
            "dlp has {} detectors, more than the limit of {MAX_PATTERNS}",
            patterns.len()
        ));
    }

    // How far before each trigger byte a match can start, what can come
    // right before it, and whether a match can start with it, over all
    // patterns.
    let mut all = TriggerFacts::none();
    for (single, p) in singles.iter().zip(&patterns) {
        let own = trigger_walk(single, &triggers)
            .ok_or_else(|| format!("dlp detector `{}`: a match can lack a trigger byte", p.name))?;
        all.add(&own);
    }

    let fwd = build_forward(&sources, DLP_DFA_LIMIT).map_err(|e| too_large(&e))?;
    let rev = build_reverse(&sources, DLP_DFA_LIMIT).map_err(|e| too_large(&e))?;
    let total = fwd.memory_usage() + rev.memory_usage();
    if total > DLP_DFA_LIMIT {
        return Err(format!(
            "dlp detectors together would compile to DFAs of {total} bytes, more than the limit of {DLP_DFA_LIMIT}"
        ));
    }
    Ok(DlpSpec {
        patterns,
        forward: serialize(&fwd),
        reverse: serialize(&rev),
        action,
        hash_key,
        min_match_len: u32::try_from(if min_len == usize::MAX { 0 } else { min_len })
            .unwrap_or(u32::MAX),
        triggers: (0..=255u8)
            .zip(&triggers)
            .filter(|(_, t)| **t)
            .map(|(byte, _)| {
                let b = usize::from(byte);
                Trigger {
                    byte,
                    lead: all.leads.get(b).copied().unwrap_or(0),
                    before: bitmap(all.before.get(b).unwrap_or(&[false; 256])),
                    starts: all.starts.get(b).copied().unwrap_or(true),
                    rest: all.rests.get(b).copied().unwrap_or(0),
                    after: bitmap(all.after.get(b).unwrap_or(&[true; 256])),
                    offsets: if all.deep.get(b).copied().unwrap_or(true) {
                        Vec::new()
                    } else {
                        all.offsets
                            .range((byte, 0)..=(byte, u8::MAX))
                            .rev()
                            .map(|(&(_, len), o)| Offset {
                                len,
                                bytes: o.bytes.iter().map(bitmap).collect(),
                                rest: o.rest,
                                after: bitmap(&o.after),
                            })
                            .collect()
                    },
                }
            })
            .collect(),
    })
}

/// `set` as a byte-set bitmap (bit `b % 8` of byte `b / 8`).
fn bitmap(set: &[bool; 256]) -> [u8; 32] {
    let mut bits = [0u8; 32];
    for (b, _) in (0..=u8::MAX).zip(set).filter(|(_, &x)| x) {
        bitmap_set(&mut bits, b);
    }
    bits
}

fn union(into: &mut [bool; 256], set: &[bool; 256]) {
    for (a, b) in into.iter_mut().zip(set) {
        *a |= *b;
    }
}

/// One byte of each look-behind context a start state can depend on.
const CONTEXTS: [Option<u8>; 5] = [None, Some(b'a'), Some(b' '), Some(b'\n'), Some(b'\r')];

fn anchored_starts(dfa: &dense::DFA<Vec<u32>>) -> Vec<StateID> {
    CONTEXTS
        .iter()
        .filter_map(|&lb| {
            dfa.start_state(&start::Config::new().anchored(Anchored::Yes).look_behind(lb))
                .ok()
        })
        .collect()
}

/// The bytes a match of the single-pattern anchored `dfa` can start with.
fn first_bytes(dfa: &dense::DFA<Vec<u32>>) -> [bool; 256] {
    let mut set = [false; 256];
    for s in anchored_starts(dfa) {
        for (byte, slot) in (0..=255u8).zip(set.iter_mut()) {
            *slot |= !dfa.is_dead_state(dfa.next_state(s, byte));
        }
    }
    set
}

/// Longest walk [`trigger_walk`] takes before giving up.
const MAX_LEAD: u8 = 64;

/// What [`trigger_walk`] learns about each trigger byte `b` (by index)
/// from the matches that hold `b` as their first trigger byte.
struct TriggerFacts {
    /// The largest offset of `b` in such a match.
    leads: [u8; 256],
    /// The bytes that come right before `b` in such a match.
    before: [[bool; 256]; 256],
    /// Such a match can start with `b`.
    starts: [bool; 256],
    /// The fewest bytes such a match has from `b` on, `b` included.
    rests: [u8; 256],
    /// The bytes that can come right after `b` in such a match.
    after: [[bool; 256]; 256],
    /// By `(b, offset of b in the match)`, up to [`MAX_OFFSET`]: the same
    /// facts for those matches alone.
    offsets: BTreeMap<(u8, u8), OffsetFacts>,
    /// `b` is the first trigger byte of a match more than [`MAX_OFFSET`]
    /// bytes after its start: no `offsets` are kept for it.
    deep: [bool; 256],
}

/// Most bytes before a trigger that [`TriggerFacts::offsets`] describe.
const MAX_OFFSET: u8 = 8;

/// What holds for the matches that hold a trigger byte first at one
/// offset.
#[derive(Clone)]
struct OffsetFacts {
    /// Per byte before the trigger, from the match's start: the bytes
    /// that can be there.
    bytes: Vec<[bool; 256]>,
    rest: u8,
    after: [bool; 256],
}

impl OffsetFacts {
    fn add(&mut self, other: &OffsetFacts) {
        for (b, o) in self.bytes.iter_mut().zip(&other.bytes) {
            union(b, o);
        }
        self.rest = self.rest.min(other.rest);
        union(&mut self.after, &other.after);
    }
}

impl TriggerFacts {
    /// Nothing known yet (boxed: the `before` sets are 64 KB).
    fn none() -> Box<TriggerFacts> {
        Box::new(TriggerFacts {
            leads: [0; 256],
            before: [[false; 256]; 256],
            starts: [false; 256],
            rests: [u8::MAX; 256],
            after: [[false; 256]; 256],
            offsets: BTreeMap::new(),
            deep: [false; 256],
        })
    }

    /// Merges in what holds for another pattern.
    fn add(&mut self, other: &TriggerFacts) {
        for (l, o) in self.leads.iter_mut().zip(other.leads) {
            *l = (*l).max(o);
        }
        for (b, o) in self.before.iter_mut().zip(&other.before) {
            union(b, o);
        }
        for (st, o) in self.starts.iter_mut().zip(other.starts) {
            *st |= o;
        }
        for (r, o) in self.rests.iter_mut().zip(other.rests) {
            *r = (*r).min(o);
        }
        for (a, o) in self.after.iter_mut().zip(&other.after) {
            union(a, o);
        }
        for (d, o) in self.deep.iter_mut().zip(other.deep) {
            *d |= o;
        }
        for (key, o) in &other.offsets {
            self.offsets
                .entry(*key)
                .and_modify(|mine| mine.add(o))
                .or_insert_with(|| o.clone());
        }
    }
}

/// For the single-pattern anchored `dfa` and the trigger bytes `set`: for
/// each trigger byte, the largest offset at which it can be the first
/// trigger byte of a match, the bytes that can come right before it there,
/// whether a match can start with it, the fewest bytes a match has from it
/// on and the bytes that can come right after it; `None` if a match can go
/// without a trigger byte for [`MAX_LEAD`] bytes, or entirely.
///
/// Walks all paths of non-trigger bytes from the start states, keeping the
/// last byte of each. Matches are reported one byte late, so a match state
/// entered on any byte (or at the end of the input) means a match made of
/// non-trigger bytes only.
fn trigger_walk(dfa: &dense::DFA<Vec<u32>>, set: &[bool; 256]) -> Option<Box<TriggerFacts>> {
    let mut facts = TriggerFacts::none();
    let mut rests: BTreeMap<StateID, u8> = BTreeMap::new();
    // States reached, each with the bytes it was reached by.
    let mut frontier: Vec<(StateID, [bool; 256])> = anchored_starts(dfa)
        .into_iter()
        .map(|s| (s, [false; 256]))
        .collect();
    if frontier.is_empty() {
        return None;
    }
    // The states of each depth, and each trigger byte read at a depth:
    // `(depth, byte, state before it, state after it)`.
    let mut layers: Vec<Vec<StateID>> = Vec::new();
    let mut hits: Vec<(u8, u8, StateID, StateID)> = Vec::new();
    for depth in 0..MAX_LEAD {
        layers.push(frontier.iter().map(|(s, _)| *s).collect());
        let mut next: Vec<(StateID, [bool; 256])> = Vec::new();
        for (s, last) in &frontier {
            let s = *s;
            if dfa.is_match_state(s) || dfa.is_match_state(dfa.next_eoi_state(s)) {
                return None;
            }
            for (byte, trigger) in (0..=255u8).zip(set.iter()) {
                let t = dfa.next_state(s, byte);
                if dfa.is_match_state(t) || dfa.is_quit_state(t) {
                    return None;
                }
                if dfa.is_dead_state(t) {
                    continue;
                }
                let b = usize::from(byte);
                if *trigger {
                    hits.push((depth, byte, s, t));
                    if let Some(lead) = facts.leads.get_mut(b) {
                        *lead = (*lead).max(depth);
                    }
                    if depth == 0 {
                        if let Some(st) = facts.starts.get_mut(b) {
                            *st = true;
                        }
                    } else if let Some(before) = facts.before.get_mut(b) {
                        union(before, last);
                    }
                    let (rest, after) = from_trigger(dfa, t, &mut rests);
                    if let Some(r) = facts.rests.get_mut(b) {
                        *r = (*r).min(rest);
                    }
                    if let Some(a) = facts.after.get_mut(b) {
                        union(a, &after);
                    }
                    continue;
                }
                let slot = match next.iter().position(|(n, _)| *n == t) {
                    Some(i) => next.get_mut(i),
                    None => {
                        next.push((t, [false; 256]));
                        next.last_mut()
                    }
                };
                if let Some(by) = slot.and_then(|(_, by)| by.get_mut(b)) {
                    *by = true;
                }
            }
        }
        if next.is_empty() {
            offsets(dfa, set, &layers, &hits, &mut rests, &mut facts);
            return Some(facts);
        }
        frontier = next;
    }
    None
}

/// Fills in [`TriggerFacts::offsets`] and [`TriggerFacts::deep`] from the
/// walk's `layers` and trigger `hits`: for the hits of one byte at one
/// depth, the bytes at each position before it are those on the paths
/// from a start state to a state it was read from, found by going back
/// layer by layer from those states.
fn offsets(
    dfa: &dense::DFA<Vec<u32>>,
    set: &[bool; 256],
    layers: &[Vec<StateID>],
    hits: &[(u8, u8, StateID, StateID)],
    rests: &mut BTreeMap<StateID, u8>,
    facts: &mut TriggerFacts,
) {
    let mut groups: BTreeMap<(u8, u8), Vec<(StateID, StateID)>> = BTreeMap::new();
    for &(depth, byte, s, t) in hits {
        if depth > MAX_OFFSET {
            if let Some(d) = facts.deep.get_mut(usize::from(byte)) {
                *d = true;
            }
        } else {
            groups.entry((byte, depth)).or_default().push((s, t));
        }
    }
    for ((byte, depth), group) in groups {
        let mut reach: BTreeSet<StateID> = group.iter().map(|&(s, _)| s).collect();
        let mut bytes = alloc::vec![[false; 256]; usize::from(depth)];
        for (layer, at) in layers.iter().zip(bytes.iter_mut()).rev() {
            let mut back = BTreeSet::new();
            for &p in layer {
                for (c, _) in (0..=u8::MAX).zip(set).filter(|(_, t)| !**t) {
                    if reach.contains(&dfa.next_state(p, c)) {
                        back.insert(p);
                        if let Some(x) = at.get_mut(usize::from(c)) {
                            *x = true;
                        }
                    }
                }
            }
            reach = back;
        }
        let mut own = OffsetFacts {
            bytes,
            rest: u8::MAX,
            after: [false; 256],
        };
        for &(_, t) in &group {
            let (rest, after) = from_trigger(dfa, t, rests);
            own.rest = own.rest.min(rest);
            union(&mut own.after, &after);
        }
        // One group per key: the walk's hits are grouped above.
        facts.offsets.insert((byte, depth), own);
    }
}

/// From `t`, the state right after a trigger byte: the fewest bytes a
/// match has from the trigger on (the trigger included; `to_match`
/// memoized in `rests`) and the bytes that can come next. A match that
/// ends at the trigger reports itself on any next byte: every byte is then
/// in the set.
fn from_trigger(
    dfa: &dense::DFA<Vec<u32>>,
    t: StateID,
    rests: &mut BTreeMap<StateID, u8>,
) -> (u8, [bool; 256]) {
    let rest = *rests.entry(t).or_insert_with(|| to_match(dfa, t));
    let mut after = [false; 256];
    for (next, a) in (0..=255u8).zip(after.iter_mut()) {
        *a = !dfa.is_dead_state(dfa.next_state(t, next));
    }
    (rest.saturating_add(1), after)
}

/// The fewest bytes `dfa` reads from state `from` to the end of a match
/// (at most `u8::MAX`): breadth first, until a state whose next byte or
/// end of input reports a match (matches are reported one byte late). A
/// quit state counts as a match: the search stops there anyway.
fn to_match(dfa: &dense::DFA<Vec<u32>>, from: StateID) -> u8 {
    let mut seen = BTreeSet::from([from]);
    let mut level = Vec::from([from]);
    for depth in 0..u8::MAX {
        let mut next = Vec::new();
        for &s in &level {
            if dfa.is_match_state(dfa.next_eoi_state(s)) {
                return depth;
            }
            for byte in 0..=u8::MAX {
                let t = dfa.next_state(s, byte);
                if dfa.is_match_state(t) || dfa.is_quit_state(t) {
                    return depth;
                }
                if !dfa.is_dead_state(t) && seen.insert(t) {
                    next.push(t);
                }
            }
        }
        if next.is_empty() {
            break;
        }
        level = next;
    }
    u8::MAX
}

fn too_large(e: &dense::BuildError) -> String {
    format!("dlp detectors together would compile to a DFA larger than the limit: {e}")
}

fn check_name(name: &str) -> Result<(), String> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(format!(
            "invalid custom detector name `{name}`: use 1 to {MAX_NAME_LEN} ascii letters, digits, `_`, `-` or `.`"
        ))
    }
}

fn syntax_config() -> syntax::Config {
    syntax::Config::new().unicode(true).utf8(true)
}

struct Facts {
    /// Shortest match in bytes.
    min_len: usize,
}

fn analyze(pattern: &str) -> Result<Facts, String> {
    let hir = syntax::parse_with(pattern, &syntax_config()).map_err(|e| one_line(&e))?;
    let props = hir.properties();
    Ok(Facts {
        // `None`: the regex can never match; it constrains nothing.
        min_len: props.minimum_len().unwrap_or(usize::MAX),
    })
}

/// The message of a regex-syntax error without the pattern and caret
/// lines it draws (the caller names the regex).
fn one_line(e: &dyn core::fmt::Display) -> String {
    let msg = format!("{e}");
    match msg.rsplit_once("error: ") {
        Some((_, last)) => last.trim().to_string(),
        None => msg.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

/// Rewrites every `\b` / `\B` (also `\b{start}` and friends) outside of
/// escapes into its ASCII form `(?-u:\b)`. Policy authors write `\b`; a
/// DFA cannot search with a Unicode word boundary.
fn ascii_word_boundaries(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(n @ ('b' | 'B')) => {
                out.push_str("(?-u:\\");
                out.push(n);
                if chars.peek() == Some(&'{') {
                    for c in chars.by_ref() {
                        out.push(c);
                        if c == '}' {
                            break;
                        }
                    }
                }
                out.push(')');
            }
            Some(n) => {
                out.push('\\');
                out.push(n);
            }
            None => out.push('\\'),
        }
    }
    out
}

fn base_config(limit: usize) -> dense::Config {
    dense::Config::new()
        .minimize(option_env!("DLPMIN").is_some())
        .byte_classes(true)
        .accelerate(true)
        .specialize_start_states(false)
        .unicode_word_boundary(false)
        .dfa_size_limit(Some(limit))
        .determinize_size_limit(Some(limit.saturating_mul(4)))
}

/// The anchored DFA of one pattern, to reason about its matches.
fn build_single(source: &str) -> Result<dense::DFA<Vec<u32>>, Box<dense::BuildError>> {
    dense::Builder::new()
        .syntax(syntax_config())
        .thompson(thompson::Config::new().utf8(true))
        .configure(
            base_config(DLP_DFA_LIMIT)
                .match_kind(MatchKind::LeftmostFirst)
                .start_kind(StartKind::Anchored),
        )
        .build(source)
        .map_err(Box::new)
}

fn build_forward<P: AsRef<str>>(
    sources: &[P],
    limit: usize,
) -> Result<dense::DFA<Vec<u32>>, Box<dense::BuildError>> {
    dense::Builder::new()
        .syntax(syntax_config())
        .thompson(thompson::Config::new().utf8(true))
        .configure(
            base_config(limit)
                .match_kind(MatchKind::LeftmostFirst)
                .start_kind(StartKind::Unanchored)
                // Start states are recognisable: there the scanner may skip
                // ahead to the next trigger byte.
                .specialize_start_states(true),
        )
        .build_many(sources)
        .map_err(Box::new)
}

fn build_reverse<P: AsRef<str>>(
    sources: &[P],
    limit: usize,
) -> Result<dense::DFA<Vec<u32>>, Box<dense::BuildError>> {
    dense::Builder::new()
        .syntax(syntax_config())
        .thompson(thompson::Config::new().utf8(true).reverse(true))
        .configure(
            base_config(limit)
                .match_kind(MatchKind::All)
                .start_kind(StartKind::Anchored),
        )
        .build_many(sources)
        .map_err(Box::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn single(re: &str) -> dense::DFA<Vec<u32>> {
        build_single(re).unwrap()
    }

    fn set(bytes: &[u8]) -> [bool; 256] {
        let mut s = [false; 256];
        for &b in bytes {
            s[usize::from(b)] = true;
        }
        s
    }

    fn lead(re: &str, triggers: &[u8], byte: u8) -> Option<u8> {
        trigger_walk(&single(re), &set(triggers)).map(|f| f.leads[usize::from(byte)])
    }

    fn rest(re: &str, triggers: &[u8], byte: u8) -> u8 {
        trigger_walk(&single(re), &set(triggers)).unwrap().rests[usize::from(byte)]
    }

    /// The bytes of `set`.
    fn members(set: &[bool; 256]) -> Vec<u8> {
        (0..=255u8).filter(|&b| set[usize::from(b)]).collect()
    }

    /// The bytes of a byte-set bitmap, as text.
    fn bitmap_text(bits: &[u8; 32]) -> String {
        let bytes: Vec<u8> = (0..=255u8)
            .filter(|&x| crate::dlp::bitmap_has(bits, x))
            .collect();
        String::from_utf8(bytes).unwrap()
    }

    /// The bytes that can come right before `byte` in a match of `re`
    /// that holds it first, and whether such a match can start with it.
    fn context(re: &str, triggers: &[u8], byte: u8) -> (Vec<u8>, bool) {
        let f = trigger_walk(&single(re), &set(triggers)).unwrap();
        let i = usize::from(byte);
        (members(&f.before[i]), f.starts[i])
    }

    #[test]
    fn trigger_leads_are_computed_and_checked() {
        assert_eq!(lead("ab", b"a", b'a'), Some(0));
        assert_eq!(lead("ab", b"b", b'b'), Some(1));
        assert_eq!(lead("ab|cdb", b"b", b'b'), Some(2));
        // `a` comes first whenever it is there.
        assert_eq!(lead("ab|cdb", b"ab", b'b'), Some(2));
        assert_eq!(lead("ab|cdb", b"ab", b'a'), Some(0));
        assert_eq!(lead("a+b", b"b", b'b'), None);
        assert_eq!(lead("x|ab", b"b", b'b'), None);
        // The match `x` is only reported at the next byte, whatever it is.
        assert_eq!(lead(r"x(?-u:\b)", b"y", b'y'), None);
        assert_eq!(lead(r"(?-u:\b)PT-[0-9]{8}", b"P", b'P'), Some(0));
        assert_eq!(lead(r"(?-u:\b)PT-[0-9]{8}", b"-", b'-'), Some(2));
        let f = first_bytes(&single(r"(?-u:\b)PT-[0-9]{8}|[0-9]x"));
        assert_eq!(
            (0..=255u8)
                .filter(|&b| f[usize::from(b)])
                .collect::<Vec<_>>(),
            b"0123456789P".to_vec()
        );
    }

    #[test]
    fn bytes_before_triggers_are_computed() {
        assert_eq!(context("ab|cdb", b"b", b'b'), (b"ad".to_vec(), false));
        assert_eq!(context("ab|b", b"b", b'b'), (b"a".to_vec(), true));
        // Only bytes before the first trigger byte count.
        assert_eq!(context("xab|yb", b"ab", b'b'), (b"y".to_vec(), false));
        assert_eq!(context("xab|yb", b"ab", b'a'), (b"x".to_vec(), false));
        assert_eq!(
            context("[0-9]x", b"0123456789", b'7'),
            (alloc::vec::Vec::new(), true)
        );
    }

    #[test]
    fn bytes_from_triggers_to_match_ends_are_computed() {
        assert_eq!(rest("ab", b"a", b'a'), 2);
        assert_eq!(rest("ab", b"b", b'b'), 1);
        assert_eq!(rest("ab|cdb", b"b", b'b'), 1);
        assert_eq!(rest("xa[0-9]{3}", b"a", b'a'), 4);
        // The shortest way on, whichever branch it takes.
        assert_eq!(rest("a(?:bcd|e)f|a[0-9]{9}", b"a", b'a'), 3);
        assert_eq!(rest("x(?:bcde|bd)f|yb[0-9]{3}", b"b", b'b'), 3);
        assert_eq!(rest("a(?:bcd|e)f|a[0-9]{9}", b"ab", b'a'), 3);
        assert_eq!(rest("a+b", b"a", b'a'), 2);
        // A match ended by a look-ahead assertion ends before what it looks
        // at, or at the end of the input.
        assert_eq!(rest(r"ab(?-u:\b)", b"a", b'a'), 2);
        // Bytes no match holds first keep the largest value.
        assert_eq!(rest("ab", b"a", b'z'), u8::MAX);
    }

    /// The bytes that can come right after `byte` in a match of `re`
    /// that holds it first.
    fn after(re: &str, triggers: &[u8], byte: u8) -> Vec<u8> {
        let f = trigger_walk(&single(re), &set(triggers)).unwrap();
        members(&f.after[usize::from(byte)])
    }

    #[test]
    fn bytes_after_triggers_are_computed() {
        assert_eq!(after("a-b|c-d", b"-", b'-'), b"bd".to_vec());
        assert_eq!(after("a-[0-9]", b"-", b'-'), b"0123456789".to_vec());
        // Only matches that hold it first count.
        assert_eq!(after("x-a|-b", b"x-", b'-'), b"b".to_vec());
        // A match that ends at the trigger is reported on any next byte.
        assert_eq!(after("a-|b-c", b"-", b'-').len(), 256);
        // ... unless a look-ahead holds it back.
        assert_eq!(
            after(r"a-(?-u:\B)", b"-", b'-'),
            (0..=255u8)
                .filter(|b| !b.is_ascii_alphanumeric() && *b != b'_')
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn builtin_leads() {
        let sp = build_dlp(&Detector::ALL, &[], DlpAction::Redact, [0; 32]).unwrap();
        let trigger = |b: u8| sp.triggers.iter().find(|t| t.byte == b);
        let lead = |b: u8| trigger(b).map(|t| t.lead);
        let before = |b: u8| {
            let t = trigger(b).unwrap();
            (bitmap_text(&t.before), t.starts)
        };
        // `-` starts a PEM header, or follows the letters of a token prefix
        // (`sk-`, `xoxb-`, `glpat-`).
        assert_eq!(
            before(b'-'),
            ("abcdefghijklmnopqrstuvwxyz".to_string(), true)
        );
        // A digit starts a number, or follows an IBAN's country code, `+`
        // or `(` of a phone number.
        assert_eq!(
            before(b'7'),
            ("(+BCDEFGHIKLMNOPQRSTUVWXYZ".to_string(), true)
        );
        assert_eq!(before(b'@'), (String::new(), true));
        assert_eq!(lead(b'0'), Some(2));
        assert_eq!(lead(b'@'), Some(0));
        // `A` and `J` as the second letter of an IBAN's country code.
        assert_eq!(lead(b'A'), Some(1));
        assert_eq!(lead(b'J'), Some(2));
        assert_eq!(lead(b'-'), Some(5));
        assert_eq!(lead(b'_'), Some(6));
        assert_eq!(lead(b'a'), None);
        assert_eq!(sp.triggers.len(), 15);
        // The shortest matches from each trigger on: `+` and eight digits,
        // `@x`, `glxxx-x`, `AIzax`, `eyJx`, `ghx_x`.
        let rest = |b: u8| trigger(b).map(|t| t.rest);
        assert_eq!(rest(b'0'), Some(8));
        assert_eq!(rest(b'9'), Some(8));
        assert_eq!(rest(b'@'), Some(2));
        assert_eq!(rest(b'-'), Some(2));
        assert_eq!(rest(b'A'), Some(5));
        assert_eq!(rest(b'J'), Some(2));
        assert_eq!(rest(b'_'), Some(2));
        let after = |b: u8| bitmap_text(&trigger(b).unwrap().after);
        // A token after its prefix's `-`, or the next `-` of a PEM header.
        assert_eq!(
            after(b'-'),
            "-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
        );
        assert_eq!(
            after(b'@'),
            "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
        );
        // Every number format goes on with a digit after its first one;
        // `+1` of a phone number with a separator.
        assert_eq!(after(b'0'), "0123456789");
        assert_eq!(after(b'7'), "0123456789");
        assert_eq!(after(b'1'), " (-.0123456789");
    }

    #[test]
    fn rewrites_word_boundaries() {
        assert_eq!(
            ascii_word_boundaries(r"\bPT-\d{8}\b"),
            r"(?-u:\b)PT-\d{8}(?-u:\b)"
        );
        assert_eq!(ascii_word_boundaries(r"a\\b"), r"a\\b");
        assert_eq!(
            ascii_word_boundaries(r"\b{start}x\B"),
            r"(?-u:\b{start})x(?-u:\B)"
        );
        assert_eq!(ascii_word_boundaries("x\\"), "x\\");
    }

    type OffsetRow = (u8, Vec<Vec<u8>>, u8, Vec<u8>);

    /// Per offset of `byte` in the matches of `re` that hold it first,
    /// most first: the offset, the bytes at each place before it, the
    /// fewest bytes from it on and the bytes after it.
    fn offsets_of(re: &str, triggers: &[u8], byte: u8) -> Vec<OffsetRow> {
        let f = trigger_walk(&single(re), &set(triggers)).unwrap();
        assert!(!f.deep[usize::from(byte)]);
        f.offsets
            .range((byte, 0)..=(byte, u8::MAX))
            .rev()
            .map(|(&(_, len), o)| {
                (
                    len,
                    o.bytes.iter().map(members).collect(),
                    o.rest,
                    members(&o.after),
                )
            })
            .collect()
    }

    #[test]
    fn facts_per_offset_are_computed() {
        let v = |s: &str| s.as_bytes().to_vec();
        // Each offset keeps the bytes of its own matches only.
        assert_eq!(
            offsets_of("ab-[0-9]{3}|xyz-q|-[a-c]{2}", b"-", b'-'),
            vec![
                (3, vec![v("x"), v("y"), v("z")], 2, v("q")),
                (2, vec![v("a"), v("b")], 4, v("0123456789")),
                (0, vec![], 3, v("abc")),
            ]
        );
        // Branches of one length merge, place by place.
        assert_eq!(
            offsets_of("ab-x|cd-y", b"-", b'-'),
            vec![(2, vec![v("ac"), v("bd")], 2, v("xy"))]
        );
        // Bytes on paths that do not reach the trigger are left out.
        assert_eq!(
            offsets_of("a[bc]-|ac[0-9]", b"-0123456789", b'-'),
            vec![(2, vec![v("a"), v("bc")], 1, (0..=255u8).collect())]
        );
        // A trigger further than the limit from the start keeps none.
        let f = trigger_walk(&single("abcdefghij-|x-"), &set(b"-")).unwrap();
        assert!(f.deep[usize::from(b'-')]);
        assert_eq!(f.offsets.len(), 1);
        // Merged with another pattern's facts, it stays so.
        let mut all = TriggerFacts::none();
        all.add(&trigger_walk(&single("y-z"), &set(b"-")).unwrap());
        all.add(&f);
        assert!(all.deep[usize::from(b'-')]);
    }

    #[test]
    fn builtin_offsets() {
        let sp = build_dlp(&Detector::ALL, &[], DlpAction::Redact, [0; 32]).unwrap();
        let offsets = |b: u8| {
            let t = sp.triggers.iter().find(|t| t.byte == b).unwrap();
            t.offsets
                .iter()
                .map(|o| {
                    let bytes: Vec<String> = o.bytes.iter().map(bitmap_text).collect();
                    (o.len, bytes, o.rest)
                })
                .collect::<Vec<_>>()
        };
        let lower = "abcdefghijklmnopqrstuvwxyz".to_string();
        let s = |x: &str| x.to_string();
        // `glpat-`, `xoxb-`, `sk-`, and a PEM header's first `-`.
        assert_eq!(
            offsets(b'-'),
            vec![
                (
                    5,
                    vec![s("g"), s("l"), lower.clone(), lower.clone(), lower.clone()],
                    2
                ),
                (4, vec![s("x"), s("o"), s("x"), lower.clone()], 2),
                (2, vec![s("s"), s("k")], 2),
                (0, vec![], 11),
            ]
        );
        let pem = sp.triggers.iter().find(|t| t.byte == b'-').unwrap();
        assert_eq!(bitmap_text(&pem.offsets[3].after), "-");
        // A digit after an IBAN's country code, `+` or `(`, or first.
        let caps = s("BCDEFGHIKLMNOPQRSTUVWXYZ");
        assert_eq!(
            offsets(b'4'),
            vec![
                (2, vec![caps.clone(), caps], 12),
                (1, vec![s("(+")], 8),
                (0, vec![], 10)
            ]
        );
    }

    #[test]
    fn every_builtin_regex_is_valid() {
        for d in Detector::ALL {
            let b = builtin(d);
            let facts = analyze(b.regex).unwrap();
            assert!(facts.min_len <= b.min_len, "{d:?}");
            assert!(
                build_dlp(&[d], &[], DlpAction::Redact, [0; 32]).is_ok(),
                "{d:?}"
            );
        }
        assert_eq!(PRIORITY.len(), Detector::ALL.len());
        for d in Detector::ALL {
            assert!(PRIORITY.contains(&d));
        }
    }
}
