//! UTC days, the unit of budgets: the `day` of a lease request and the
//! `retry-after` of a call refused because the day's budget is spent.

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

/// The `YYYY-MM-DD` of a day number, as the control plane reads it.
pub fn day_text(day: u32) -> String {
    let (y, m, d) = civil_from_days(i64::from(day));
    format!("{y:04}-{m:02}-{d:02}")
}

// Howard Hinnant's `civil_from_days`: proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
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
    fn days_as_the_control_plane_writes_them() {
        assert_eq!(day_text(0), "1970-01-01");
        // 2024-02-29 12:00:00 UTC, a leap day.
        assert_eq!(day_text(day_number(1_709_208_000)), "2024-02-29");
        assert_eq!(day_text(day_number(1_709_251_199)), "2024-02-29");
        assert_eq!(day_text(day_number(1_709_251_200)), "2024-03-01");
        assert_eq!(day_text(day_number(1_798_761_599)), "2026-12-31");
    }

    #[test]
    fn retry_after_counts_to_the_next_midnight() {
        assert_eq!(secs_to_midnight(1_709_251_199), 1);
        assert_eq!(secs_to_midnight(1_709_251_200), 86_400);
        assert_eq!(secs_to_midnight(1_709_208_000), 43_200);
    }
}
