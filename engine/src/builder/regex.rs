//! Regex to serialized DFA, with the size limits every policy regex obeys.

use alloc::format;
use alloc::vec::Vec;
use regex_automata::dfa::{dense, StartKind};
use regex_automata::nfa::thompson;
use regex_automata::util::syntax;
use regex_automata::MatchKind;

use super::BuildError;

/// Upper bound for one condition regex's DFA, in bytes.
pub const CONDITION_DFA_LIMIT: usize = 256 * 1024;
/// Upper bound for one agent's DLP DFA (forward + reverse), in bytes.
pub const DLP_DFA_LIMIT: usize = 8 * 1024 * 1024;

/// Checks that `pattern` compiles to a DFA within the condition limit.
pub fn validate_regex(pattern: &str) -> Result<(), BuildError> {
    condition_dfa(pattern).map(|_| ())
}

/// Builds the unanchored forward DFA used by `matches` / `not_matches`
/// and returns its serialized little-endian bytes (without padding).
pub fn condition_dfa(pattern: &str) -> Result<Vec<u8>, BuildError> {
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

pub(crate) fn describe(pattern: &str, e: &dense::BuildError) -> BuildError {
    let detail = format!("{e}");
    let pattern = pattern.into();
    if detail.contains("exceeded") || detail.contains("limit") {
        BuildError::RegexTooLarge { pattern, detail }
    } else {
        BuildError::InvalidRegex { pattern, detail }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn errors_say_whether_the_regex_is_too_large_or_invalid() {
        let e = validate_regex("[01]*1[01]{20}").unwrap_err();
        assert!(matches!(e, BuildError::RegexTooLarge { .. }), "{e:?}");
        assert!(e
            .to_string()
            .starts_with("regex `[01]*1[01]{20}` would compile to a DFA larger than the limit: "));
        let e = validate_regex("(?<=a)b").unwrap_err();
        assert!(matches!(e, BuildError::InvalidRegex { .. }), "{e:?}");
        assert!(e.to_string().starts_with("invalid regex `(?<=a)b`: "));
    }
}
