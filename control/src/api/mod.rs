//! The API handlers, one module per resource of DESIGN section 7.

pub mod agents;
pub mod approvals;
pub mod audit;
pub mod budgets;
pub mod bundles;
pub mod tokens;

use crate::error::ApiError;

/// Micro-dollars of a dollar amount from a request, refusing what is not
/// a finite, non-negative amount below a trillion.
pub fn micros(field: &str, usd: f64) -> Result<i64, ApiError> {
    if !usd.is_finite() || !(0.0..=1e12).contains(&usd) {
        return Err(ApiError::bad_request(
            "invalid_amount",
            format!("`{field}` must be a non-negative number of dollars"),
        ));
    }
    #[allow(clippy::cast_possible_truncation)]
    Ok((usd * 1e6).round() as i64)
}

#[allow(clippy::cast_precision_loss)]
pub fn usd(micros: i64) -> f64 {
    micros as f64 / 1e6
}

/// A tenant, agent or other name from a request: non-empty, printable,
/// bounded.
pub fn name(field: &str, v: &str) -> Result<(), ApiError> {
    // `*` means "every tenant" in service tokens: never a name.
    if v.is_empty() || v == "*" || v.len() > 200 || v.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_name",
            format!("`{field}` must be 1 to 200 printable characters, and not `*`"),
        ));
    }
    Ok(())
}
