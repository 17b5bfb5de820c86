//! UTC calendar days (`YYYY-MM-DD`), the unit of budgets: the engine's
//! calendar, which the filter uses too.

pub use aegis_engine::day::parse_day;

/// The UTC day of a Unix time in milliseconds.
pub fn utc_day(ms: i64) -> String {
    aegis_engine::day::day_text(ms.div_euclid(86_400_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_to_days() {
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(utc_day(-1), "1969-12-31");
        assert_eq!(utc_day(1_796_601_600_000), "2026-12-07");
        assert_eq!(utc_day(951_782_400_000), "2000-02-29");
    }
}
