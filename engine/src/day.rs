//! UTC calendar days, the unit of budgets: the `day` a proxy leases for
//! and the control plane accounts in (`YYYY-MM-DD`), and the `retry-after`
//! of a call refused because the day's budget is spent. One calendar for
//! the filter and the control plane, so the two never disagree on a date.

use alloc::format;
use alloc::string::String;

pub const SECS_PER_DAY: u64 = 86_400;

/// Days since 1970-01-01 of a Unix time in seconds.
pub fn day_number(unix_secs: u64) -> u32 {
    u32::try_from(unix_secs / SECS_PER_DAY).unwrap_or(u32::MAX)
}

/// Seconds from `unix_secs` to the next UTC midnight, 1 to 86400: the
/// `retry-after` of a 429 for a spent daily budget.
pub fn secs_to_midnight(unix_secs: u64) -> u64 {
    SECS_PER_DAY - unix_secs % SECS_PER_DAY
}

/// The `YYYY-MM-DD` of a day number (days since 1970-01-01, negative
/// before).
pub fn day_text(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date, if it is one.
pub fn parse_day(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let num = |r: core::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

// Howard Hinnant's civil calendar algorithms (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_trip() {
        assert_eq!(day_text(0), "1970-01-01");
        // 2024-02-29 12:00:00 UTC, a leap day, to its last second.
        assert_eq!(day_text(i64::from(day_number(1_709_208_000))), "2024-02-29");
        assert_eq!(day_text(i64::from(day_number(1_709_251_199))), "2024-02-29");
        assert_eq!(day_text(i64::from(day_number(1_709_251_200))), "2024-03-01");
        assert_eq!(day_text(i64::from(day_number(1_798_761_599))), "2026-12-31");
        assert_eq!(day_text(11_016), "2000-02-29");
        for d in [-1000_i64, 0, 10_957, 20_000, 20_794, 60_000] {
            assert_eq!(parse_day(&day_text(d)), Some(d));
        }
        for bad in [
            "2026-02-29",
            "2026-13-01",
            "2026-1-01",
            "20260101",
            "2026-00-10",
            "2026-04-31",
            "abcd-ef-gh",
        ] {
            assert_eq!(parse_day(bad), None, "{bad}");
        }
    }

    #[test]
    fn retry_after_counts_to_the_next_midnight() {
        assert_eq!(secs_to_midnight(1_709_251_199), 1);
        assert_eq!(secs_to_midnight(1_709_251_200), 86_400);
        assert_eq!(secs_to_midnight(1_709_208_000), 43_200);
    }
}
