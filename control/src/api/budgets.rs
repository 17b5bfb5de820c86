//! Budgets: per agent and UTC day, leased to gateways. A lease reserves
//! part of what is left; settling moves what was spent from reserved to
//! spent and returns the rest; a lease not settled by its expiry returns
//! what it had not reported as spent.

use super::{micros, name, usd};
use crate::audit::chain::NewEvent;
use crate::auth::{Caller, Role};
use crate::day::{parse_day, utc_day};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::state::AppState;
use crate::store::{new_id, now_ms, Write};
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::Row;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    pub tenant: String,
    pub agent: String,
    pub day: String,
    pub want_usd: f64,
}

pub async fn lease(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(r): ApiJson<LeaseRequest>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Gateway])?;
    name("tenant", &r.tenant)?;
    name("agent", &r.agent)?;
    caller.require_tenant(&r.tenant)?;
    let want = micros("want_usd", r.want_usd)?;
    let now = now_ms();
    check_day(&r.day, now)?;
    let limit = s
        .bundles
        .daily_limit_micros(&s.store, &r.tenant, &r.agent)
        .await?;
    let mut w = s.store.write().await?;
    expire_due(&mut w, &s, Some((&r.tenant, &r.agent, &r.day)), now).await?;
    sqlx::query(
        "INSERT INTO budget_days (tenant, agent, day, limit_micros, reserved_micros, spent_micros) \
         VALUES ($1, $2, $3, $4, 0, 0) \
         ON CONFLICT (tenant, agent, day) DO UPDATE SET limit_micros = excluded.limit_micros",
    )
    .bind(&r.tenant)
    .bind(&r.agent)
    .bind(&r.day)
    .bind(limit)
    .execute(&mut *w.tx)
    .await?;
    let row = sqlx::query(
        "SELECT reserved_micros, spent_micros FROM budget_days WHERE tenant = $1 AND agent = $2 AND day = $3",
    )
    .bind(&r.tenant)
    .bind(&r.agent)
    .bind(&r.day)
    .fetch_one(&mut *w.tx)
    .await?;
    let reserved: i64 = row.try_get("reserved_micros")?;
    let spent: i64 = row.try_get("spent_micros")?;
    let left = (limit - reserved - spent).max(0);
    let grant = want.min(left);
    let expires_ms = now.saturating_add(s.settings.lease_ttl_secs.saturating_mul(1000));
    let mut lease_id = None;
    if grant > 0 {
        // The guard repeats the arithmetic in SQL: even a bug above could
        // not reserve past the limit.
        let updated = sqlx::query(
            "UPDATE budget_days SET reserved_micros = reserved_micros + $1 \
             WHERE tenant = $2 AND agent = $3 AND day = $4 \
             AND reserved_micros + spent_micros + $1 <= limit_micros",
        )
        .bind(grant)
        .bind(&r.tenant)
        .bind(&r.agent)
        .bind(&r.day)
        .execute(&mut *w.tx)
        .await?;
        if updated.rows_affected() != 1 {
            return Err(ApiError::internal(
                "lease arithmetic disagreed with the store",
            ));
        }
        let id = new_id("lse");
        sqlx::query(
            "INSERT INTO leases (id, tenant, agent, day, granted_micros, spent_micros, state, created_ms, expires_ms, holder) \
             VALUES ($1, $2, $3, $4, $5, 0, 'open', $6, $7, $8)",
        )
        .bind(&id)
        .bind(&r.tenant)
        .bind(&r.agent)
        .bind(&r.day)
        .bind(grant)
        .bind(now)
        .bind(expires_ms)
        .bind(caller.actor())
        .execute(&mut *w.tx)
        .await?;
        let data = json!({"agent": r.agent, "day": r.day, "want_usd": usd(want), "granted_usd": usd(grant),
                          "limit_usd": usd(limit), "expires_at": expires_ms / 1000})
        .to_string();
        w.audit(&NewEvent {
            at_ms: now,
            tenant: &r.tenant,
            actor: &caller.actor(),
            kind: "lease.granted",
            subject: &id,
            data: &data,
        })
        .await?;
        lease_id = Some(id);
    }
    w.commit().await?;
    s.metrics
        .lease(if grant > 0 { "granted" } else { "empty" }, grant);
    Ok(Json(json!({
        "lease_id": lease_id,
        "granted_usd": usd(grant),
        "remaining_usd": usd(left - grant),
        "limit_usd": usd(limit),
        "expires_at": expires_ms / 1000,
    })))
}

/// How far from midnight (UTC) a gateway's clock may be and still lease
/// for the day next to today.
const DAY_SKEW_MS: i64 = 10 * 60 * 1000;

/// Leases are for today (UTC). The day next to today is accepted only
/// within [`DAY_SKEW_MS`] of midnight, for clocks that disagree: at any
/// other time a lease of yesterday's or tomorrow's budget would let an
/// agent spend more than one day's limit in a day.
fn check_day(day: &str, now: i64) -> Result<(), ApiError> {
    let d = parse_day(day).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_day",
            format!("`day` must be a date `YYYY-MM-DD`, got `{day}`"),
        )
    })?;
    let near = |ms: i64| ms.div_euclid(86_400_000);
    if d != near(now) && d != near(now - DAY_SKEW_MS) && d != near(now + DAY_SKEW_MS) {
        return Err(ApiError::bad_request(
            "invalid_day",
            format!("`day` `{day}` is not today (UTC `{}`)", utc_day(now)),
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettleRequest {
    pub lease_id: String,
    /// What the lease has spent in all, so far.
    pub spent_usd: f64,
    #[serde(default)]
    pub r#final: bool,
}

pub async fn settle(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(r): ApiJson<SettleRequest>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Gateway])?;
    let spent_total = micros("spent_usd", r.spent_usd)?;
    let now = now_ms();
    let mut w = s.store.write().await?;
    let row = sqlx::query(
        "SELECT tenant, agent, day, granted_micros, spent_micros, state FROM leases WHERE id = $1",
    )
    .bind(&r.lease_id)
    .fetch_optional(&mut *w.tx)
    .await?;
    let Some(row) = row else {
        return Err(ApiError::not_found(format!("no lease `{}`", r.lease_id)));
    };
    let tenant: String = row.try_get("tenant")?;
    if !caller.sees(&tenant) {
        return Err(ApiError::not_found(format!("no lease `{}`", r.lease_id)));
    }
    let agent: String = row.try_get("agent")?;
    let day: String = row.try_get("day")?;
    let granted: i64 = row.try_get("granted_micros")?;
    let before: i64 = row.try_get("spent_micros")?;
    let state: String = row.try_get("state")?;
    if state != "open" && state != "expired" {
        if state == "settled" && spent_total == before && r.r#final {
            // A final settle repeated (a retry after a lost answer).
            return Ok(Json(settled_json(
                &r.lease_id,
                before,
                granted - before,
                "settled",
            )));
        }
        return Err(ApiError::conflict(
            "lease_closed",
            format!("lease `{}` is already {state}", r.lease_id),
        ));
    }
    if spent_total > granted {
        return Err(ApiError::bad_request(
            "overspent",
            format!(
                "`spent_usd` {} is more than the lease granted ({})",
                usd(spent_total),
                usd(granted)
            ),
        ));
    }
    if spent_total < before {
        return Err(ApiError::bad_request(
            "spent_decreased",
            format!(
                "`spent_usd` is the lease's total so far; it was {} and cannot go down",
                usd(before)
            ),
        ));
    }
    let delta = spent_total - before;
    // An expired lease already gave back what it had not reported: spending
    // reported late still counts (it happened), but nothing is reserved
    // any more and nothing more comes back.
    let late = state == "expired";
    let returned = if r.r#final && !late {
        granted - spent_total
    } else {
        0
    };
    let new_state = if late {
        "expired"
    } else if r.r#final {
        "settled"
    } else {
        "open"
    };
    let released = if late { 0 } else { delta + returned };
    sqlx::query("UPDATE budget_days SET spent_micros = spent_micros + $1, reserved_micros = reserved_micros - $2 WHERE tenant = $3 AND agent = $4 AND day = $5")
        .bind(delta)
        .bind(released)
        .bind(&tenant)
        .bind(&agent)
        .bind(&day)
        .execute(&mut *w.tx)
        .await?;
    sqlx::query("UPDATE leases SET spent_micros = $1, state = $2 WHERE id = $3")
        .bind(spent_total)
        .bind(new_state)
        .bind(&r.lease_id)
        .execute(&mut *w.tx)
        .await?;
    let data = json!({"agent": agent, "day": day, "spent_usd": usd(spent_total), "returned_usd": usd(returned), "final": r.r#final, "late": late}).to_string();
    w.audit(&NewEvent {
        at_ms: now,
        tenant: &tenant,
        actor: &caller.actor(),
        kind: "lease.settled",
        subject: &r.lease_id,
        data: &data,
    })
    .await?;
    w.commit().await?;
    if r.r#final && !late {
        s.metrics.lease("settled", 0);
    }
    Ok(Json(settled_json(
        &r.lease_id,
        spent_total,
        returned,
        new_state,
    )))
}

fn settled_json(id: &str, spent: i64, returned: i64, state: &str) -> Value {
    json!({"lease_id": id, "spent_usd": usd(spent), "returned_usd": usd(returned), "state": state})
}

/// Expires open leases past their time (of one agent's day, or all):
/// what they had not reported as spent goes back to the budget.
pub async fn expire_due(
    w: &mut Write,
    s: &AppState,
    only: Option<(&str, &str, &str)>,
    now: i64,
) -> Result<u64, sqlx::Error> {
    let rows = match only {
        Some((t, a, d)) => {
            sqlx::query("SELECT id, tenant, agent, day, granted_micros, spent_micros FROM leases WHERE state = 'open' AND expires_ms <= $1 AND tenant = $2 AND agent = $3 AND day = $4")
                .bind(now)
                .bind(t)
                .bind(a)
                .bind(d)
                .fetch_all(&mut *w.tx)
                .await?
        }
        None => {
            sqlx::query("SELECT id, tenant, agent, day, granted_micros, spent_micros FROM leases WHERE state = 'open' AND expires_ms <= $1 ORDER BY expires_ms LIMIT 500")
                .bind(now)
                .fetch_all(&mut *w.tx)
                .await?
        }
    };
    let mut n = 0;
    for row in rows {
        let id: String = row.try_get("id")?;
        let tenant: String = row.try_get("tenant")?;
        let agent: String = row.try_get("agent")?;
        let day: String = row.try_get("day")?;
        let granted: i64 = row.try_get("granted_micros")?;
        let spent: i64 = row.try_get("spent_micros")?;
        sqlx::query("UPDATE budget_days SET reserved_micros = reserved_micros - $1 WHERE tenant = $2 AND agent = $3 AND day = $4")
            .bind(granted - spent)
            .bind(&tenant)
            .bind(&agent)
            .bind(&day)
            .execute(&mut *w.tx)
            .await?;
        sqlx::query("UPDATE leases SET state = 'expired' WHERE id = $1")
            .bind(&id)
            .execute(&mut *w.tx)
            .await?;
        let data = json!({"agent": agent, "day": day, "spent_usd": usd(spent), "returned_usd": usd(granted - spent)}).to_string();
        w.audit(&NewEvent {
            at_ms: now,
            tenant: &tenant,
            actor: "service",
            kind: "lease.expired",
            subject: &id,
            data: &data,
        })
        .await?;
        s.metrics.lease("expired", 0);
        n += 1;
    }
    Ok(n)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShowQuery {
    pub tenant: String,
    pub agent: Option<String>,
    pub day: Option<String>,
}

pub async fn show(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ShowQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Viewer, Role::Approver])?;
    caller.require_tenant(&q.tenant)?;
    let now = now_ms();
    let day = q.day.clone().unwrap_or_else(|| utc_day(now));
    parse_day(&day).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_day",
            format!("`day` must be a date `YYYY-MM-DD`, got `{day}`"),
        )
    })?;
    let rows = sqlx::query(
        "SELECT b.agent, b.limit_micros, b.reserved_micros, b.spent_micros, \
         CAST((SELECT COUNT(*) FROM leases l WHERE l.tenant = b.tenant AND l.agent = b.agent AND l.day = b.day AND l.state = 'open') AS BIGINT) AS open_leases \
         FROM budget_days b WHERE b.tenant = $1 AND b.day = $2 AND ($3 = '' OR b.agent = $3) ORDER BY b.agent",
    )
    .bind(&q.tenant)
    .bind(&day)
    .bind(q.agent.clone().unwrap_or_default())
    .fetch_all(s.store.pool())
    .await?;
    let mut agents = Vec::new();
    for r in rows {
        let limit: i64 = r.try_get("limit_micros")?;
        let reserved: i64 = r.try_get("reserved_micros")?;
        let spent: i64 = r.try_get("spent_micros")?;
        agents.push(json!({
            "agent": r.try_get::<String, _>("agent")?,
            "limit_usd": usd(limit), "spent_usd": usd(spent), "reserved_usd": usd(reserved),
            "remaining_usd": usd((limit - reserved - spent).max(0)),
            "open_leases": r.try_get::<i64, _>("open_leases")?,
        }));
    }
    if let Some(agent) = &q.agent {
        if agents.is_empty() {
            // No lease yet today: report the limit the policy sets.
            let limit = s
                .bundles
                .daily_limit_micros(&s.store, &q.tenant, agent)
                .await?;
            agents.push(json!({"agent": agent, "limit_usd": usd(limit), "spent_usd": 0.0, "reserved_usd": 0.0,
                               "remaining_usd": usd(limit), "open_leases": 0}));
        }
    }
    Ok(Json(
        json!({"tenant": q.tenant, "day": day, "agents": agents}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_today_except_near_midnight() {
        let day = 20_794_i64 * 86_400_000; // 2026-12-07T00:00Z
        let noon = day + 12 * 3_600_000;
        assert!(check_day("2026-12-07", noon).is_ok());
        for other in ["2026-12-06", "2026-12-08", "2026-12-05"] {
            assert_eq!(
                check_day(other, noon).map_err(|e| e.code),
                Err("invalid_day")
            );
        }
        // Five minutes after midnight: yesterday still, not tomorrow.
        assert!(check_day("2026-12-06", day + 300_000).is_ok());
        assert!(check_day("2026-12-08", day + 300_000).is_err());
        // Five minutes before the next midnight: tomorrow, not yesterday.
        let late = day + 86_400_000 - 300_000;
        assert!(check_day("2026-12-08", late).is_ok());
        assert!(check_day("2026-12-06", late).is_err());
        // Eleven minutes after midnight is past the allowance.
        assert!(check_day("2026-12-06", day + 660_000).is_err());
    }
}
