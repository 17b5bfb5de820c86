//! What a DFA match must also satisfy to be a detection, and where the
//! detection really starts and ends.
//!
//! The built-in detectors keep their DFAs small by matching a distinctive
//! head only (`eyJ`, `@d`, `-----BEGIN `, a secret-token prefix, `A` + 19
//! uppercase alphanumerics) and leaving the rest here:
//! exact prefixes, checksums, calendar dates, and the extension of the head
//! to the whole token. Counted repetitions of classes that overlap other
//! detectors (`[A-Za-z0-9_-]{20,}`) or that run across separators where
//! other detectors restart would multiply the DFA's states; a short loop
//! over the bytes after the match costs nothing.
//!
//! The DFAs read the text without invisible characters and with
//! full-width digits as ASCII digits (see `fold`), so a match can hold
//! both. Every check reads the text the same way: the checks of digits
//! (SSN, Luhn, dates, IBAN, AWS key ids) from a folded copy of the match
//! on the stack, the checks that read on from the match (secret tokens,
//! emails, JWTs, PEM blocks) a unit at a time, so that an invisible
//! character inside a value neither ends nor hides it.
//!
//! Every check is total on arbitrary input: specs come from bundle bytes,
//! so any validator may be attached to any pattern.

use serde::{Deserialize, Serialize};

use super::fold;

/// Which check confirms (and delimits) a match of a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Validator {
    /// Every match is a detection, as matched.
    None,
    /// US SSN: area not 000/666/900-999, group not 00, serial not 0000.
    Ssn,
    /// Luhn checksum over 13-19 digits (spaces, dashes and dots ignored).
    Luhn,
    /// `YYYY-MM-DD`, `MM/DD/YYYY` or `DD.MM.YYYY` naming a real day in
    /// 1900-2099.
    Date,
    /// IBAN mod-97 (ISO 13616); a failing match is retried without its
    /// trailing space-separated groups.
    Iban,
    /// `A` + 19: one of the AWS key-id prefixes (`AKIA`, `ASIA`, ...).
    AwsKeyId,
    /// A known secret-token prefix, extended over that token's characters,
    /// long enough for that prefix.
    ApiKey,
    /// `@d` head: a local part of `[A-Za-z0-9._%+-]` before it, a domain
    /// after it (labels, an alphabetic TLD of two or more letters, a word
    /// boundary).
    Email,
    /// `eyJ` head: `eyJ…` header, `.`, `eyJ…` payload, `.`, signature
    /// (possibly empty), all base64url.
    Jwt,
    /// `-----BEGIN ` head: a PEM header line naming a PRIVATE KEY, up to the
    /// matching END line, or over the base64 that follows when the block is
    /// cut short.
    PrivateKey,
}

/// What earlier checks on the same haystack learned, so that a run of
/// heads that all fail the same way costs one walk, not one walk per head
/// (`eyJa-eyJa-eyJa-…`, or many PEM headers and no END line).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Memo {
    /// No JWT starts before this offset: the base64url run holding the
    /// heads seen so far does not continue as a JWT.
    jwt_fails_before: usize,
    /// No PEM END line lies between a header before this offset and this
    /// offset, where the search for one stopped.
    pem_no_end_before: usize,
}

impl Validator {
    /// Checks the match `hay[start..end]`. Returns the detection's span,
    /// which may extend the match, never below `floor` (where this search
    /// began) on the left; `None` when the match is no detection. `memo`
    /// belongs to `hay` and grows with the checks made on it.
    pub(crate) fn accept(
        self,
        hay: &[u8],
        start: usize,
        end: usize,
        floor: usize,
        memo: &mut Memo,
    ) -> Option<(usize, usize)> {
        let m = hay.get(start..end)?;
        let whole = |ok: Option<bool>| ok?.then_some((start, end));
        let span = match self {
            Validator::None => Some((start, end)),
            Validator::Ssn => whole(folded(m, ssn)),
            Validator::Luhn => whole(folded(m, luhn)),
            Validator::Date => whole(folded(m, date)),
            Validator::Iban => {
                let len = folded(m, iban)??;
                Some((start, start + fold_end(m, len)?))
            }
            Validator::AwsKeyId => whole(folded(m, aws_key_id)),
            Validator::ApiKey => api_key(hay, start),
            Validator::Email => email(hay, start, end, floor),
            Validator::Jwt => jwt(hay, start, memo),
            Validator::PrivateKey => private_key(hay, start, memo),
        }?;
        // Whatever the spec says, a detection is a non-empty slice of the
        // haystack that does not reach back before `floor`.
        (span.0 >= floor.min(start) && span.0 < span.1 && span.1 <= hay.len()).then_some(span)
    }
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Longest match a digit check reads folded: an IBAN of 34 characters in
/// groups of four is 42 bytes; a longer match is no detection anyway.
const FOLD_CAP: usize = 48;

/// `check` on the match `m` as the DFAs read it (see `fold`): `m` itself
/// when it is ASCII, else a folded copy on the stack; `None` if that would
/// be longer than [`FOLD_CAP`] bytes.
fn folded<R>(m: &[u8], check: impl FnOnce(&[u8]) -> R) -> Option<R> {
    if m.is_ascii() {
        return Some(check(m));
    }
    let mut buf = [0u8; FOLD_CAP];
    let mut n = 0usize;
    let mut at = 0usize;
    while let Some((read, len)) = fold::unit_at(m, at) {
        at += len;
        if let Some(b) = read {
            *buf.get_mut(n)? = b;
            n += 1;
        }
    }
    buf.get(..n).map(check)
}

/// Offset in `m` right after the unit that [`folded`] reads as its
/// `n`-th byte; `None` if `n` is 0 or `m` reads as fewer bytes.
fn fold_end(m: &[u8], n: usize) -> Option<usize> {
    let mut read = 0usize;
    let mut at = 0usize;
    while let Some((b, len)) = fold::unit_at(m, at) {
        at += len;
        if b.is_some() {
            read += 1;
            if read == n {
                return Some(at);
            }
        }
    }
    None
}

fn base64url(b: u8) -> bool {
    is_word(b) || b == b'-'
}

/// The run of units read as bytes satisfying `f` from `from`, at most
/// `max` of them: `(end, count)`. The end is right after the last unit of
/// the run, so invisible characters after it are not part of it.
fn run(hay: &[u8], from: usize, max: usize, f: impl Fn(u8) -> bool) -> (usize, usize) {
    let (mut end, mut n) = (from, 0usize);
    while n < max {
        // A byte below `FIRST_LEAD` is a unit read as itself.
        if let Some(&b) = hay.get(end).filter(|&&b| b < fold::FIRST_LEAD) {
            if !f(b) {
                break;
            }
            end += 1;
            n += 1;
            continue;
        }
        match fold::read_unit_from(hay, end) {
            Some((b, next)) if f(b) => {
                end = next;
                n += 1;
            }
            _ => break,
        }
    }
    (end, n)
}

/// [`run`]'s end, with no limit on its length.
fn run_end(hay: &[u8], from: usize, f: impl Fn(u8) -> bool) -> usize {
    run(hay, from, usize::MAX, f).0
}

/// The offset after `prefix` when the text at `at` reads as it.
fn read_prefix(hay: &[u8], at: usize, prefix: &[u8]) -> Option<usize> {
    prefix.iter().try_fold(at, |at, &p| {
        fold::read_unit_from(hay, at).and_then(|(b, next)| (b == p).then_some(next))
    })
}

/// Whether `hay[from..to]` reads as text holding `needle`.
fn reads_holding(hay: &[u8], from: usize, to: usize, needle: &[u8]) -> bool {
    let mut at = from;
    while at < to {
        if read_prefix(hay, at, needle).is_some_and(|end| end <= to) {
            return true;
        }
        match fold::unit_at(hay, at) {
            Some((_, len)) => at += len,
            None => break,
        }
    }
    false
}

/// The number formed by `len` ASCII digits of `m` from `at`; `None` if
/// any is not a digit.
fn num(m: &[u8], at: usize, len: usize) -> Option<u32> {
    let digits = m.get(at..at.checked_add(len)?)?;
    digits.iter().try_fold(0u32, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
    })
}

fn ssn(m: &[u8]) -> bool {
    // One kind of separator, twice (the pattern says so too).
    let seps = match (m.get(3), m.get(6)) {
        (Some(a), Some(b)) => a == b && matches!(a, b'-' | b' ' | b'.'),
        _ => false,
    };
    if m.len() != 11 || !seps {
        return false;
    }
    let (Some(area), Some(group), Some(serial)) = (num(m, 0, 3), num(m, 4, 2), num(m, 7, 4)) else {
        return false;
    };
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

fn luhn(m: &[u8]) -> bool {
    let mut sum = 0u32;
    let mut n = 0usize;
    for &b in m.iter().rev() {
        if matches!(b, b' ' | b'-' | b'.') {
            continue;
        }
        if !b.is_ascii_digit() || n == 19 {
            return false;
        }
        let d = u32::from(b - b'0');
        sum += match (n % 2 == 1, d * 2) {
            (true, x) if x > 9 => x - 9,
            (true, x) => x,
            (false, _) => d,
        };
        n += 1;
    }
    (13..=19).contains(&n) && sum.is_multiple_of(10)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        _ => 0,
    }
}

fn date(m: &[u8]) -> bool {
    if m.len() != 10 {
        return false;
    }
    let parts = match (m.get(4), m.get(7), m.get(2), m.get(5)) {
        (Some(b'-'), Some(b'-'), _, _) => (num(m, 0, 4), num(m, 5, 2), num(m, 8, 2)),
        (_, _, Some(b'/'), Some(b'/')) => (num(m, 6, 4), num(m, 0, 2), num(m, 3, 2)),
        (_, _, Some(b'.'), Some(b'.')) => (num(m, 6, 4), num(m, 3, 2), num(m, 0, 2)),
        _ => return false,
    };
    let (Some(year), Some(month), Some(day)) = parts else {
        return false;
    };
    (1900..=2099).contains(&year) && day >= 1 && day <= days_in_month(year, month)
}

fn iban(m: &[u8]) -> Option<usize> {
    let mut len = m.len();
    loop {
        let cand = m.get(..len)?;
        if iban_ok(cand) {
            return Some(len);
        }
        // Drop the last group: the regex may have swallowed a following
        // four-character word (`... 7034 TEST`).
        len = cand.iter().rposition(|&b| b == b' ')?;
    }
}

fn iban_ok(m: &[u8]) -> bool {
    let chars = || m.iter().copied().filter(|&b| b != b' ');
    let n = chars().count();
    if !(15..=34).contains(&n) {
        return false;
    }
    let mut head = chars();
    let country_ok = head.next().is_some_and(|b| b.is_ascii_uppercase())
        && head.next().is_some_and(|b| b.is_ascii_uppercase());
    if !country_ok {
        return false;
    }
    // Country code and check digits move to the end; letters count 10..35.
    // The number grows in a u64 and is reduced only when it nears the top
    // (a reduction per character made this the slowest validator).
    let mut r = 0u64;
    for b in chars().skip(4).chain(chars().take(4)) {
        r = match b {
            b'0'..=b'9' => r * 10 + u64::from(b - b'0'),
            b'A'..=b'Z' => r * 100 + u64::from(b - b'A') + 10,
            _ => return false,
        };
        if r >= 1 << 56 {
            r %= 97;
        }
    }
    r % 97 == 1
}

const AWS_PREFIXES: [&[u8]; 11] = [
    b"AKIA", b"ASIA", b"AGPA", b"AIDA", b"AROA", b"AIPA", b"ANPA", b"ANVA", b"ABIA", b"ACCA",
    b"A3T",
];

fn aws_key_id(m: &[u8]) -> bool {
    m.len() == 20
        && m.iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        && AWS_PREFIXES.iter().any(|p| m.starts_with(p))
}

#[derive(Clone, Copy)]
enum Tail {
    /// `[A-Za-z0-9]`
    Alnum,
    /// `[A-Za-z0-9_]`
    Word,
    /// `[A-Za-z0-9-]`
    AlnumDash,
    /// `[A-Za-z0-9_-]`
    Base64Url,
}

impl Tail {
    fn admits(self, b: u8) -> bool {
        match self {
            Tail::Alnum => b.is_ascii_alphanumeric(),
            Tail::Word => is_word(b),
            Tail::AlnumDash => b.is_ascii_alphanumeric() || b == b'-',
            Tail::Base64Url => base64url(b),
        }
    }
}

/// `(prefix, token characters, shortest tail, longest tail)`; the first
/// prefix that matches wins, so longer prefixes come before theirs.
const API_KEYS: [(&[u8], Tail, usize, usize); 22] = [
    (b"github_pat_", Tail::Word, 22, usize::MAX),
    (b"sk_live_", Tail::Alnum, 10, usize::MAX),
    (b"sk_test_", Tail::Alnum, 10, usize::MAX),
    (b"rk_live_", Tail::Alnum, 10, usize::MAX),
    (b"rk_test_", Tail::Alnum, 10, usize::MAX),
    (b"sk-proj-", Tail::Base64Url, 20, usize::MAX),
    (b"sk-svcacct-", Tail::Base64Url, 20, usize::MAX),
    (b"sk-admin-", Tail::Base64Url, 20, usize::MAX),
    (b"sk-ant-", Tail::Base64Url, 20, usize::MAX),
    (b"sk-", Tail::Alnum, 20, usize::MAX),
    (b"glpat-", Tail::Base64Url, 20, usize::MAX),
    (b"xoxb-", Tail::AlnumDash, 10, usize::MAX),
    (b"xoxp-", Tail::AlnumDash, 10, usize::MAX),
    (b"xoxa-", Tail::AlnumDash, 10, usize::MAX),
    (b"xoxo-", Tail::AlnumDash, 10, usize::MAX),
    (b"xoxr-", Tail::AlnumDash, 10, usize::MAX),
    (b"xoxs-", Tail::AlnumDash, 10, usize::MAX),
    (b"ghp_", Tail::Alnum, 16, usize::MAX),
    (b"gho_", Tail::Alnum, 16, usize::MAX),
    (b"ghu_", Tail::Alnum, 16, usize::MAX),
    (b"ghs_", Tail::Alnum, 16, usize::MAX),
    (b"AIza", Tail::Base64Url, 35, 35),
];

fn api_key(hay: &[u8], start: usize) -> Option<(usize, usize)> {
    let (from, &(_, tail, min, max)) = API_KEYS
        .iter()
        .find_map(|k| Some((read_prefix(hay, start, k.0)?, k)))?;
    let (end, len) = run(hay, from, max, |b| tail.admits(b));
    (len >= min).then_some((start, end))
}

fn email(hay: &[u8], at: usize, end: usize, floor: usize) -> Option<(usize, usize)> {
    if hay.get(at) != Some(&b'@') || end <= at {
        return None;
    }
    let domain = domain_end(hay, at + 1)?;
    let local = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-');
    let mut s = at;
    loop {
        // A byte below 0x80 is a unit of its own.
        if let Some(&b) = hay
            .get(s.wrapping_sub(1))
            .filter(|&&b| b < 0x80 && s > floor)
        {
            if !local(b) {
                break;
            }
            s -= 1;
            continue;
        }
        match fold::read_unit_before(hay, s, floor) {
            Some((b, unit)) if local(b) => s = unit,
            _ => break,
        }
    }
    (s < at).then_some((s, domain))
}

/// End of the longest domain at `from`: labels `[A-Za-z0-9-]+` joined by
/// dots, at least two, the last one `[A-Za-z]{2,}` followed by a word
/// boundary.
fn domain_end(hay: &[u8], from: usize) -> Option<usize> {
    let mut best = None;
    let mut label = from;
    let mut labels = 0usize;
    loop {
        let (stop, n) = run(hay, label, usize::MAX, |b| {
            b.is_ascii_alphanumeric() || b == b'-'
        });
        if n == 0 {
            break;
        }
        labels += 1;
        if labels >= 2 {
            let (alpha, letters) = run(hay, label, usize::MAX, |b| b.is_ascii_alphabetic());
            if letters >= 2 && !fold::read_unit_from(hay, alpha).is_some_and(|(b, _)| is_word(b)) {
                best = Some(alpha);
            }
        }
        match fold::read_unit_from(hay, stop) {
            Some((b'.', next)) => label = next,
            _ => break,
        }
    }
    best
}

fn jwt(hay: &[u8], start: usize, memo: &mut Memo) -> Option<(usize, usize)> {
    if start < memo.jwt_fails_before {
        return None;
    }
    // `eyJ` + at least one more base64url byte, then a dot: the offset
    // after the dot, or where the run that failed ends.
    let part = |from: usize| {
        let (end, n) = run(hay, from, usize::MAX, base64url);
        match fold::read_unit_from(hay, end) {
            Some((b'.', next)) if n > 3 && read_prefix(hay, from, b"eyJ").is_some() => Ok(next),
            _ => Err(end),
        }
    };
    // A head later in the same header run meets the same dot and payload.
    let fail = |memo: &mut Memo, header_end: usize| {
        memo.jwt_fails_before = header_end;
        None
    };
    let payload = match part(start) {
        Ok(p) => p,
        Err(end) => return fail(memo, end),
    };
    let signature = match part(payload) {
        Ok(s) => s,
        Err(_) => return fail(memo, payload),
    };
    Some((start, run_end(hay, signature, base64url)))
}

fn private_key(hay: &[u8], start: usize, memo: &mut Memo) -> Option<(usize, usize)> {
    const BEGIN: &[u8] = b"-----BEGIN";
    const END: &[u8] = b"-----END";
    const DASHES: &[u8] = b"-----";
    let pem_label = |b: u8| b == b' ' || b.is_ascii_uppercase() || b.is_ascii_digit();
    // `-----BEGIN <LABEL>-----` / `-----END <LABEL>-----` with PRIVATE KEY in
    // the label: the end of the line, if `at` starts one.
    let line = |at: usize, kind: &[u8]| {
        let label = read_prefix(hay, at, kind)?;
        let label_end = run_end(hay, label, pem_label);
        let end = read_prefix(hay, label_end, DASHES)?;
        reads_holding(hay, label, label_end, b"PRIVATE KEY").then_some(end)
    };
    let header = line(start, BEGIN)?;
    let mut i = header;
    if start >= memo.pem_no_end_before {
        while let Some((b, next)) = fold::read_unit_from(hay, i) {
            if b == b'-' {
                if let Some(end) = line(i, END) {
                    return Some((start, end));
                }
            }
            if !(b == b' ' || b.is_ascii_graphic() || matches!(b, b'\t' | b'\r' | b'\n')) {
                break;
            }
            i = next;
        }
        // Any later header before `i` would search the same bytes.
        memo.pem_no_end_before = i;
    }
    // No END line: the block was cut short; take the base64 after it.
    let body = |b: u8| {
        b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b' ' | b'\t' | b'\r' | b'\n')
    };
    Some((start, run_end(hay, header, body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(v: Validator, hay: &str, start: usize, end: usize) -> Option<&str> {
        v.accept(hay.as_bytes(), start, end, 0, &mut Memo::default())
            .map(|(s, e)| &hay[s..e])
    }

    #[test]
    fn ssn_ranges() {
        assert!(ssn(b"123-45-6789"));
        assert!(ssn(b"123 45 6789"));
        for bad in [
            &b"000-12-3456"[..],
            b"666-12-3456",
            b"900-12-3456",
            b"999-12-3456",
            b"123-00-4567",
            b"123-45-0000",
            b"123-45-678",
        ] {
            assert!(!ssn(bad), "{bad:?}");
        }
    }

    #[test]
    fn luhn_numbers() {
        assert!(luhn(b"4111111111111111"));
        assert!(luhn(b"4111 1111 1111 1111"));
        assert!(luhn(b"378282246310005"));
        assert!(!luhn(b"4111111111111112"));
        assert!(!luhn(b"411111111111")); // too short
        assert!(!luhn(b"4111x1111111111111"));
    }

    #[test]
    fn dates() {
        assert!(date(b"1990-02-28"));
        assert!(date(b"2000-02-29"));
        assert!(!date(b"1900-02-29"));
        assert!(!date(b"2023-02-29"));
        assert!(!date(b"2023-04-31"));
        assert!(!date(b"2023-13-01"));
        assert!(!date(b"2023-00-01"));
        assert!(!date(b"2023-01-00"));
        assert!(!date(b"1899-01-01"));
        assert!(!date(b"2100-01-01"));
        assert!(date(b"12/31/1999"));
        assert!(!date(b"02/30/1999"));
        assert!(!date(b"31/12/1999"));
        assert!(date(b"31.12.1999"));
        assert!(!date(b"31.11.1999"));
        assert!(!date(b"1999-1231x"));
    }

    #[test]
    fn ibans() {
        assert_eq!(iban(b"DE89370400440532013000"), Some(22));
        assert_eq!(iban(b"DE89 3704 0044 0532 0130 00"), Some(27));
        assert_eq!(iban(b"GB82 WEST 1234 5698 7654 32"), Some(27));
        assert_eq!(iban(b"BE68 5390 0754 7034 TEST"), Some(19));
        assert_eq!(iban(b"DE89370400440532013001"), None);
        assert_eq!(iban(b"DE88 3704 0044 0532 0130 00"), None);
        assert_eq!(iban(b"1289370400440532013000"), None);
    }

    #[test]
    fn aws() {
        assert!(aws_key_id(b"AKIAIOSFODNN7EXAMPLE"));
        assert!(aws_key_id(b"A3TXIOSFODNN7EXAMPLE"));
        assert!(!aws_key_id(b"AXIAIOSFODNN7EXAMPLE"));
        assert!(!aws_key_id(b"AKIAIOSFODNN7EXAMPL"));
    }

    #[test]
    fn api_keys() {
        let v = Validator::ApiKey;
        let k = "x sk_live_4eC39HqLyjWDarjtT1zdp7dc.";
        assert_eq!(span(v, k, 2, 11), Some("sk_live_4eC39HqLyjWDarjtT1zdp7dc"));
        assert_eq!(span(v, "sk_live_short", 0, 9), None);
        assert_eq!(span(v, "sk_abcd_0123456789", 0, 9), None);
        assert_eq!(
            span(v, "ghp_0123456789abcdef", 0, 5),
            Some("ghp_0123456789abcdef")
        );
        assert_eq!(span(v, "ghp_0123456789abcde", 0, 5), None);
        assert_eq!(span(v, "sk-learn-tutorial-for-beginners", 0, 4), None);
        let p = "sk-proj-abc_DEF-0123456789xyz-tail more";
        assert_eq!(span(v, p, 0, 9), Some("sk-proj-abc_DEF-0123456789xyz-tail"));
        let s = "xoxb-123456789012-1234567890123-AbCd";
        assert_eq!(span(v, s, 0, 6), Some(s));
        let g = "AIzaSyA0123456789abcdefghijklmnopqrstuvwxyz";
        assert_eq!(span(v, g, 0, 5), Some(&g[..39]));
        assert_eq!(span(v, &g[..38], 0, 5), None);
    }

    #[test]
    fn emails() {
        let v = Validator::Email;
        let s = "mail john.doe+x@mail.example.com now";
        let at = s.find('@').unwrap();
        assert_eq!(span(v, s, at, at + 2), Some("john.doe+x@mail.example.com"));
        assert_eq!(
            v.accept(s.as_bytes(), at, at + 2, 10, &mut Memo::default())
                .map(|(a, b)| &s[a..b]),
            Some("doe+x@mail.example.com")
        );
        assert_eq!(
            v.accept(s.as_bytes(), at, at + 2, at, &mut Memo::default()),
            None
        );
        assert_eq!(span(v, "a@localhost", 1, 3), None);
        assert_eq!(span(v, "a@b.c", 1, 3), None);
        assert_eq!(span(v, "a@b.com_x", 1, 3), None);
        assert_eq!(span(v, "a@b.com-x", 1, 3), Some("a@b.com"));
        assert_eq!(span(v, "a@b.com.", 1, 3), Some("a@b.com"));
        assert_eq!(span(v, "a@b.co1", 1, 3), None);
        assert_eq!(span(v, "a@b.co1.org", 1, 3), Some("a@b.co1.org"));
        assert_eq!(span(v, "a@b..org", 1, 3), None);
        assert_eq!(span(v, "a@x-y.example.de9", 1, 3), Some("a@x-y.example"));
        assert_eq!(span(v, "ab", 1, 2), None);
    }

    #[test]
    fn jwts() {
        let v = Validator::Jwt;
        let t = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln-_x rest";
        assert_eq!(
            span(v, t, 0, 4),
            Some("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln-_x")
        );
        assert_eq!(span(v, "eyJa.eyJb.", 0, 4), Some("eyJa.eyJb."));
        assert_eq!(span(v, "eyJ-a.eyJb.", 0, 4), Some("eyJ-a.eyJb."));
        assert_eq!(span(v, "eyJa.eyJb", 0, 4), None);
        assert_eq!(span(v, "eyJa.eyJ.x", 0, 4), None);
        assert_eq!(span(v, "eyJa.eyxb.x", 0, 4), None);
    }

    #[test]
    fn repeated_failing_heads_are_checked_once() {
        // Every head shares the header run: after the first, the memo
        // answers.
        let hay = "eyJa-".repeat(2000);
        let mut memo = Memo::default();
        for start in (0..hay.len()).step_by(5) {
            assert_eq!(
                Validator::Jwt.accept(hay.as_bytes(), start, start + 4, start, &mut memo),
                None
            );
        }
        assert_eq!(memo.jwt_fails_before, hay.len());
        let hay = "-----BEGIN A PRIVATE KEY-----;".repeat(1000);
        let mut memo = Memo::default();
        let got = Validator::PrivateKey.accept(hay.as_bytes(), 0, 11, 0, &mut memo);
        assert_eq!(got, Some((0, 29)));
        assert_eq!(memo.pem_no_end_before, hay.len());
        let got = Validator::PrivateKey.accept(hay.as_bytes(), 30, 41, 30, &mut memo);
        assert_eq!(got, Some((30, 59)));
        // A header after the searched stretch searches again.
        let two = "-----BEGIN PRIVATE KEY-----\u{1}-----BEGIN PRIVATE KEY-----\nAB\n-----END PRIVATE KEY-----";
        let mut memo = Memo::default();
        assert_eq!(
            Validator::PrivateKey.accept(two.as_bytes(), 0, 11, 0, &mut memo),
            Some((0, 27))
        );
        assert_eq!(
            Validator::PrivateKey.accept(two.as_bytes(), 28, 39, 28, &mut memo),
            Some((28, two.len()))
        );
    }

    #[test]
    fn private_keys() {
        let v = Validator::PrivateKey;
        let k = "x -----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY----- y";
        assert_eq!(span(v, k, 2, 13), Some(&k[2..k.len() - 2]));
        let cut = "-----BEGIN PRIVATE KEY-----\nMIIBVQ==\n\"";
        assert_eq!(span(v, cut, 0, 11), Some(&cut[..cut.len() - 1]));
        let other_end = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END CERTIFICATE-----\nAB";
        assert_eq!(span(v, other_end, 0, 11), Some(&other_end[..33]));
        let cert = "-----BEGIN CERTIFICATE-----\nMIIB";
        assert_eq!(span(v, cert, 0, 11), None);
        assert_eq!(span(v, "-----BEGIN PRIVATE KEY", 0, 11), None);
    }

    #[test]
    fn text_checks_read_units() {
        use alloc::format;
        let z = "\u{200B}";
        // A token's length counts characters, not invisible ones; the
        // span ends after its last character.
        let g = format!("ghp_0123456789abcde{z}f{z}.");
        assert_eq!(span(Validator::ApiKey, &g, 0, 5), Some(&g[..g.len() - 4]));
        let short = format!("ghp_0123456789{z}{z}{z}{z}{z}abcde");
        assert_eq!(span(Validator::ApiKey, &short, 0, 5), None);
        // At most 35 characters after `AIza`, invisible ones not counted.
        let a = format!("AIza{z}SyA0123456789abcdefghijklmnopqrstuvw");
        assert_eq!(span(Validator::ApiKey, &a, 0, 8), Some(&a[..a.len() - 1]));
        // An email's local part goes back over invisible characters, but
        // not below `floor`, nor over a character cut by it.
        let e = format!("x j{z}a.b@ex{z}ample.co{z}m{z} y");
        let at = e.find('@').unwrap();
        assert_eq!(
            span(Validator::Email, &e, at, at + 2),
            Some(&e[2..e.len() - 5])
        );
        let floor = e.find('a').unwrap() - 1;
        assert_eq!(
            Validator::Email
                .accept(e.as_bytes(), at, at + 2, floor, &mut Memo::default())
                .map(|(s, _)| s),
            Some(floor + 1),
            "the unit cut by `floor` is not read"
        );
        // A PEM block cut short keeps its base64 across invisible
        // characters.
        let cut = format!("-----BEGIN PRIVATE KEY-----\nMIIB{z}VQ==\n\"");
        assert_eq!(
            span(Validator::PrivateKey, &cut, 0, 11),
            Some(&cut[..cut.len() - 1])
        );
        // And its END line is found however it is split.
        let k = format!("-----BEGIN PRIVATE KEY-----\nAB\n-{z}----E{z}ND PRIVATE{z} KEY----{z}- y");
        assert_eq!(
            span(Validator::PrivateKey, &k, 0, 11),
            Some(&k[..k.len() - 2])
        );
    }

    #[test]
    fn accept_never_escapes_the_haystack() {
        for v in [
            Validator::None,
            Validator::Ssn,
            Validator::Luhn,
            Validator::Date,
            Validator::Iban,
            Validator::AwsKeyId,
            Validator::ApiKey,
            Validator::Email,
            Validator::Jwt,
            Validator::PrivateKey,
        ] {
            for (s, e) in [(0, 0), (3, 1), (0, 99), (5, 5), (0, 4)] {
                if let Some((a, b)) = v.accept(b"a@b.cd", s, e, 0, &mut Memo::default()) {
                    assert!(a < b && b <= 6);
                }
            }
        }
    }
}
