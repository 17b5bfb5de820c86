//! Builds the DLP multi-pattern DFA for one detector set.
//!
//! All selected detectors and custom regexes become one leftmost-first
//! multi-pattern regex: an unanchored forward dense DFA (finds where the
//! leftmost match ends) and an anchored reverse dense DFA (finds where it
//! starts), both serialized little endian into a [`DlpSpec`]. Checks that
//! a regex cannot express (Luhn, mod-97, calendar dates) are recorded as a
//! [`Validator`] per pattern and run by the scanner.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use regex_automata::dfa::{dense, StartKind};
use regex_automata::nfa::thompson;
use regex_automata::util::syntax;
use regex_automata::MatchKind;

use super::regex::{describe, serialize, DLP_DFA_LIMIT};
use crate::dlp::{DlpPattern, DlpSpec, Validator, MAX_PATTERNS};
use crate::types::{Detector, DlpAction};

/// Longest accepted custom detector name.
const MAX_NAME_LEN: usize = 64;

/// Priority order of the built-in detectors in the leftmost-first DFA.
/// Priority only matters between matches that start at the same byte;
/// patterns that can cover a longer span come first so that the larger
/// secret wins (an email whose local part looks like an SSN is redacted
/// as a whole).
const PRIORITY: [Detector; 10] = [
    Detector::PrivateKey,
    Detector::Jwt,
    Detector::Email,
    Detector::ApiKey,
    Detector::AwsAccessKey,
    Detector::Iban,
    Detector::CreditCard,
    Detector::Ssn,
    Detector::Phone,
    Detector::Dob,
];

/// The regex and validator of a built-in detector.
///
/// Every pattern is ASCII-only (`(?-u)`) and uses ASCII word boundaries:
/// a DFA cannot evaluate a Unicode `\b` next to non-ASCII text.
pub fn detector_regex(d: Detector) -> (&'static str, Validator) {
    match d {
        // Separators must agree: `123-45-6789`, `123 45 6789`, `123.45.6789`.
        Detector::Ssn => (
            r"(?-u)\b[0-9]{3}(?:-[0-9]{2}-|\x20[0-9]{2}\x20|\.[0-9]{2}\.)[0-9]{4}\b",
            Validator::Ssn,
        ),
        // 13-19 digits in one run, or grouped 4-4-4-4(-3), 4-4-4-x, 4-6-4/5
        // with one kind of separator.
        Detector::CreditCard => (
            concat!(
                r"(?-u)\b(?:[0-9]{13,19}",
                r"|[0-9]{4}(?:\x20[0-9]{4}){2}(?:\x20[0-9]{4}\x20[0-9]{3}|\x20[0-9]{1,4})",
                r"|[0-9]{4}(?:-[0-9]{4}){2}(?:-[0-9]{4}-[0-9]{3}|-[0-9]{1,4})",
                r"|[0-9]{4}\x20[0-9]{6}\x20[0-9]{4,5}",
                r"|[0-9]{4}-[0-9]{6}-[0-9]{4,5}",
                r")\b"
            ),
            Validator::Luhn,
        ),
        Detector::Email => (
            r"(?-u)[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}\b",
            Validator::None,
        ),
        // North American forms with an optional +1, then E.164.
        Detector::Phone => (
            concat!(
                r"(?-u)(?:(?:\+1[\x20.\-]?)?(?:\([0-9]{3}\)\x20?|\b[0-9]{3}[\x20.\-])",
                r"[0-9]{3}[\x20.\-][0-9]{4}",
                r"|\+[0-9]{8,15})\b"
            ),
            Validator::None,
        ),
        // YYYY-MM-DD, MM/DD/YYYY, DD.MM.YYYY; days per month checked later.
        Detector::Dob => (
            concat!(
                r"(?-u)\b(?:(?:19|20)[0-9]{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])",
                r"|(?:0[1-9]|1[0-2])/(?:0[1-9]|[12][0-9]|3[01])/(?:19|20)[0-9]{2}",
                r"|(?:0[1-9]|[12][0-9]|3[01])\.(?:0[1-9]|1[0-2])\.(?:19|20)[0-9]{2}",
                r")\b"
            ),
            Validator::Date,
        ),
        // Country, check digits, BBAN; plain or in groups of four.
        Detector::Iban => (
            concat!(
                r"(?-u)\b[A-Z]{2}[0-9]{2}(?:[A-Z0-9]{11,30}",
                r"|(?:\x20[A-Z0-9]{4}){2,7}(?:\x20[A-Z0-9]{1,3})?)\b"
            ),
            Validator::Iban,
        ),
        Detector::AwsAccessKey => (
            concat!(
                r"(?-u)\b(?:A3T[A-Z0-9]|AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|ABIA|ACCA)",
                r"[A-Z0-9]{16}\b"
            ),
            Validator::None,
        ),
        // Prefix, then the token's run of characters; the minimum length
        // per prefix is checked by the validator (counted repetitions of
        // overlapping classes would blow up the DFA). Plain `sk-` needs an
        // alphanumeric run so that prose such as
        // `sk-learn-tutorial-for-beginners` is not a key.
        Detector::ApiKey => (
            concat!(
                r"(?-u)\b(?:[sr]k_(?:live|test)_[A-Za-z0-9]+",
                r"|gh[opusr]_[A-Za-z0-9]+",
                r"|github_pat_[A-Za-z0-9_]+",
                r"|glpat-[A-Za-z0-9_\-]+",
                r"|xox[bpoars]-[A-Za-z0-9\-]+",
                r"|sk-(?:proj|svcacct|admin|ant)-[A-Za-z0-9_\-]+",
                r"|sk-[A-Za-z0-9]+",
                r"|AIza[A-Za-z0-9_\-]+)"
            ),
            Validator::ApiKey,
        ),
        // A whole PEM block; a block cut short (no END line) is still a
        // secret: then the header and the base64 that follows it match.
        Detector::PrivateKey => (
            concat!(
                r"(?-u)-----BEGIN[\x20A-Z0-9]*PRIVATE\x20KEY(?:\x20BLOCK)?-----",
                r"(?:[\x20-\x7E\t\r\n]*?-----END[\x20A-Z0-9]*PRIVATE\x20KEY(?:\x20BLOCK)?-----",
                r"|[A-Za-z0-9+/=\t\r\n\x20]*)"
            ),
            Validator::None,
        ),
        Detector::Jwt => (
            r"(?-u)\beyJ[A-Za-z0-9_\-]+\.eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*",
            Validator::None,
        ),
    }
}

/// Builds the DLP spec for `detectors` (any order, duplicates ignored) and
/// `custom` `(name, regex)` pairs. Errors are lowercase sentences; a bad
/// custom regex is named with the regex in backticks.
pub fn build_dlp(
    detectors: &[Detector],
    custom: &[(String, String)],
    action: DlpAction,
    hash_key: [u8; 32],
) -> Result<DlpSpec, String> {
    let mut names: Vec<String> = Vec::new();
    let mut sources: Vec<String> = Vec::new();
    let mut patterns: Vec<DlpPattern> = Vec::new();
    let mut min_len = usize::MAX;
    let mut context_free = true;

    for d in PRIORITY.into_iter().filter(|d| detectors.contains(d)) {
        let (re, validator) = detector_regex(d);
        let facts = analyze(re).map_err(|e| format!("built-in detector `{}`: {e}", d.name()))?;
        min_len = min_len.min(facts.min_len);
        names.push(d.name().to_string());
        sources.push(re.to_string());
        patterns.push(DlpPattern {
            name: d.name().to_string(),
            validator,
        });
    }

    for (name, regex) in custom {
        check_name(name)?;
        if names.iter().any(|n| n == name) {
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
        min_len = min_len.min(facts.min_len);
        context_free &= !facts.anchored;
        // Alone first, so that a regex that blows up is named.
        build_forward(&[source.as_str()], DLP_DFA_LIMIT / 2)
            .map_err(|e| format!("{} (custom detector `{name}`)", describe(regex, &e)))?;
        names.push(name.clone());
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
        context_free,
    })
}

fn too_large(e: &dense::BuildError) -> String {
    format!("dlp detectors together would compile to a DFA larger than the limit: {e}")
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
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
    /// Uses `^`, `$`, `\A` or `\z`: a match depends on where the haystack
    /// ends, not only on the neighbouring bytes.
    anchored: bool,
}

fn analyze(pattern: &str) -> Result<Facts, String> {
    let hir = syntax::parse_with(pattern, &syntax_config()).map_err(|e| format!("{e}"))?;
    let props = hir.properties();
    Ok(Facts {
        // `None`: the regex can never match; it constrains nothing.
        min_len: props.minimum_len().unwrap_or(usize::MAX),
        anchored: props.look_set().contains_anchor(),
    })
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

fn build_forward<P: AsRef<str>>(
    sources: &[P],
    limit: usize,
) -> Result<dense::DFA<Vec<u32>>, dense::BuildError> {
    dense::Builder::new()
        .syntax(syntax_config())
        .thompson(thompson::Config::new().utf8(true))
        .configure(
            base_config(limit)
                .match_kind(MatchKind::LeftmostFirst)
                .start_kind(StartKind::Unanchored),
        )
        .build_many(sources)
}

fn build_reverse<P: AsRef<str>>(
    sources: &[P],
    limit: usize,
) -> Result<dense::DFA<Vec<u32>>, dense::BuildError> {
    dense::Builder::new()
        .syntax(syntax_config())
        .thompson(thompson::Config::new().utf8(true).reverse(true))
        .configure(
            base_config(limit)
                .match_kind(MatchKind::All)
                .start_kind(StartKind::Anchored),
        )
        .build_many(sources)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_word_boundaries() {
        assert_eq!(ascii_word_boundaries(r"\bPT-\d{8}\b"), r"(?-u:\b)PT-\d{8}(?-u:\b)");
        assert_eq!(ascii_word_boundaries(r"a\\b"), r"a\\b");
        assert_eq!(ascii_word_boundaries(r"\b{start}x\B"), r"(?-u:\b{start})x(?-u:\B)");
        assert_eq!(ascii_word_boundaries("x\\"), "x\\");
    }

    #[test]
    fn every_builtin_regex_is_valid() {
        for d in Detector::ALL {
            let (re, _) = detector_regex(d);
            let facts = analyze(re).unwrap();
            assert!(facts.min_len >= 6, "{d:?}");
            assert!(!facts.anchored, "{d:?}");
        }
        assert_eq!(PRIORITY.len(), Detector::ALL.len());
        for d in Detector::ALL {
            assert!(PRIORITY.contains(&d));
        }
    }
}
