//! Checks a regex cannot express: SSN number ranges, Luhn, calendar dates,
//! IBAN mod-97. Each takes the matched bytes and returns how many of them
//! are accepted as a detection (`None`: not a detection).

use serde::{Deserialize, Serialize};

/// Which check confirms a match of a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Validator {
    /// Every match is a detection.
    None,
    /// US SSN: area not 000/666/900-999, group not 00, serial not 0000.
    Ssn,
    /// Luhn checksum over the digits (separators ignored).
    Luhn,
    /// `YYYY-MM-DD`, `MM/DD/YYYY` or `DD.MM.YYYY` naming a real day.
    Date,
    /// IBAN mod-97 (ISO 13616); a failing match is retried without its
    /// trailing space-separated groups.
    Iban,
    /// Secret-token prefix followed by enough token characters for that
    /// prefix (`AIza` keys are cut at 35).
    ApiKey,
}

impl Validator {
    /// Length of the accepted prefix of `m`, `None` when `m` is no detection.
    pub fn accept(self, m: &[u8]) -> Option<usize> {
        let ok = match self {
            Validator::None => true,
            Validator::Ssn => ssn(m),
            Validator::Luhn => luhn(m),
            Validator::Date => date(m),
            Validator::Iban => return iban(m),
            Validator::ApiKey => return api_key(m),
        };
        ok.then_some(m.len())
    }
}

/// The number formed by `len` ASCII digits of `m` from `at`; `None` if
/// any is not a digit.
fn num(m: &[u8], at: usize, len: usize) -> Option<u32> {
    let digits = m.get(at..at.checked_add(len)?)?;
    digits.iter().try_fold(0u32, |acc, &b| {
        b.is_ascii_digit()
            .then(|| acc * 10 + u32::from(b - b'0'))
    })
}

fn ssn(m: &[u8]) -> bool {
    if m.len() != 11 {
        return false;
    }
    let (Some(area), Some(group), Some(serial)) = (num(m, 0, 3), num(m, 4, 2), num(m, 7, 4))
    else {
        return false;
    };
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

fn luhn(m: &[u8]) -> bool {
    let mut sum = 0u32;
    let mut n = 0usize;
    for &b in m.iter().rev() {
        if !b.is_ascii_digit() {
            if matches!(b, b' ' | b'-') {
                continue;
            }
            return false;
        }
        let d = u32::from(b - b'0');
        sum += if n % 2 == 1 {
            let x = d * 2;
            if x > 9 {
                x - 9
            } else {
                x
            }
        } else {
            d
        };
        n += 1;
    }
    (13..=19).contains(&n) && sum % 10 == 0
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 0,
    }
}

fn date(m: &[u8]) -> bool {
    if m.len() != 10 {
        return false;
    }
    let parts = match (m.get(4), m.get(2)) {
        (Some(b'-'), _) => (num(m, 0, 4), num(m, 5, 2), num(m, 8, 2)),
        (_, Some(b'/')) => (num(m, 6, 4), num(m, 0, 2), num(m, 3, 2)),
        (_, Some(b'.')) => (num(m, 6, 4), num(m, 3, 2), num(m, 0, 2)),
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
    // Move country code and check digits to the end, letters count 10..35.
    let mut r = 0u32;
    for b in chars().skip(4).chain(chars().take(4)) {
        r = match b {
            b'0'..=b'9' => (r * 10 + u32::from(b - b'0')) % 97,
            b'A'..=b'Z' => (r * 100 + u32::from(b - b'A') + 10) % 97,
            _ => return false,
        };
    }
    r == 1
}

/// `(prefix, shortest tail, longest tail)`; the first matching prefix wins,
/// so longer prefixes come before their own prefixes.
const API_KEY_TAILS: [(&[u8], usize, usize); 14] = [
    (b"github_pat_", 22, usize::MAX),
    (b"sk_live_", 10, usize::MAX),
    (b"sk_test_", 10, usize::MAX),
    (b"rk_live_", 10, usize::MAX),
    (b"rk_test_", 10, usize::MAX),
    (b"sk-proj-", 20, usize::MAX),
    (b"sk-svcacct-", 20, usize::MAX),
    (b"sk-admin-", 20, usize::MAX),
    (b"sk-ant-", 20, usize::MAX),
    (b"sk-", 20, usize::MAX),
    (b"glpat-", 20, usize::MAX),
    (b"xox", 12, usize::MAX),
    (b"gh", 18, usize::MAX),
    (b"AIza", 35, 35),
];

fn api_key(m: &[u8]) -> Option<usize> {
    // `xox?-` and `gh?_` are counted with their two variable bytes.
    let (prefix, min, max) = API_KEY_TAILS.iter().find(|(p, _, _)| m.starts_with(p))?;
    let tail = m.len() - prefix.len();
    (tail >= *min).then(|| prefix.len() + tail.min(*max))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn dates() {
        assert!(date(b"1990-02-28"));
        assert!(date(b"2000-02-29"));
        assert!(!date(b"1900-02-29"));
        assert!(!date(b"2023-02-29"));
        assert!(!date(b"2023-04-31"));
        assert!(date(b"12/31/1999"));
        assert!(!date(b"02/30/1999"));
        assert!(date(b"31.12.1999"));
        assert!(!date(b"31.11.1999"));
    }

    #[test]
    fn api_keys() {
        assert_eq!(api_key(b"sk_live_4eC39HqLyjWDarjtT1zdp7dc"), Some(32));
        assert_eq!(api_key(b"sk_live_short"), None);
        assert_eq!(api_key(b"ghp_0123456789abcdef"), Some(20));
        assert_eq!(api_key(b"ghp_0123456789abcde"), None);
        assert_eq!(api_key(b"sk-learn"), None);
        let google = b"AIzaSyA0123456789abcdefghijklmnopqrstuvwxyz";
        assert_eq!(api_key(google), Some(39));
        assert_eq!(api_key(&google[..38]), None);
    }

    #[test]
    fn ibans() {
        assert_eq!(iban(b"DE89370400440532013000"), Some(22));
        assert_eq!(iban(b"DE89 3704 0044 0532 0130 00"), Some(27));
        assert_eq!(iban(b"GB82 WEST 1234 5698 7654 32"), Some(27));
        assert_eq!(iban(b"BE68 5390 0754 7034 TEST"), Some(19));
        assert_eq!(iban(b"DE89370400440532013001"), None);
        assert_eq!(iban(b"DE88 3704 0044 0532 0130 00"), None);
    }
}
