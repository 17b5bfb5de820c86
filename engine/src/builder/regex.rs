//! Regex to serialized DFA, with the size limits every policy regex obeys.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use regex_automata::dfa::{dense, StartKind};
use regex_automata::nfa::thompson;
use regex_automata::util::syntax;
use regex_automata::MatchKind;

/// Upper bound for one condition regex's DFA, in bytes.
pub const CONDITION_DFA_LIMIT: usize = 256 * 1024;
/// Upper bound for one agent's DLP DFA (forward + reverse), in bytes.
pub const DLP_DFA_LIMIT: usize = 8 * 1024 * 1024;

/// Checks that `pattern` compiles to a DFA within the condition limit.
/// The error is a lowercase sentence suitable for a diagnostic.
pub fn validate_regex(pattern: &str) -> Result<(), String> {
    condition_dfa(pattern).map(|_| ())
}

/// Builds the unanchored forward DFA used by `matches` / `not_matches`
/// and returns its serialized little-endian bytes (without padding).
pub fn condition_dfa(pattern: &str) -> Result<Vec<u8>, String> {
    let dfa = dense::Builder::new()
        .syntax(syntax::Config::new().unicode(true).utf8(true))
        .thompson(thompson::Config::new().utf8(true))
        .configure(
            dense::Config::new()
                .match_kind(MatchKind::LeftmostFirst)
                .start_kind(StartKind::Unanchored)
                .minimize(false)
                .dfa_size_limit(Some(CONDITION_DFA_LIMIT))
                .determinize_size_limit(Some(CONDITION_DFA_LIMIT * 4))
                // Unicode word boundaries cannot be searched by a DFA on
                // non-ASCII input; refuse them up front instead of failing at
                // request time.
                .unicode_word_boundary(false),
        )
        .build(pattern)
        .map_err(|e| describe(pattern, &e))?;
    Ok(serialize(&dfa))
}

pub(crate) fn serialize(dfa: &dense::DFA<Vec<u32>>) -> Vec<u8> {
    let (bytes, pad) = dfa.to_bytes_little_endian();
    bytes.get(pad..).map(<[u8]>::to_vec).unwrap_or_default()
}

pub(crate) fn describe(pattern: &str, e: &dense::BuildError) -> String {
    let msg = format!("{e}");
    if msg.contains("exceeded") || msg.contains("limit") {
        format!("regex `{pattern}` would compile to a DFA larger than the limit: {msg}")
    } else {
        format!("invalid regex `{pattern}`: {msg}")
    }
}
