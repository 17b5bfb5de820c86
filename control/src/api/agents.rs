//! `GET /v1/agents/overview`: per agent, today's spend against its budget,
//! open leases, rate limit, pending approvals and the verdict mix of the
//! decision records in the audit log. The dashboard's agents page and
//! `aegis agents list` both read [`overview`].

use super::usd;
use crate::auth::{Caller, Role};
use crate::bundles::DEFAULT_TENANT;
use crate::day::utc_day;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::now_ms;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Map, Value};
use sqlx::Row;
use std::collections::BTreeMap;

/// Decision records counted for the verdict mix, newest first: a bound on
/// what one page view reads.
pub const MAX_DECISION_RECORDS: i64 = 50_000;

pub async fn show(State(s): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    overview(&s, &caller).await.map(Json)
}

/// What one agent row is built from.
#[derive(Default)]
struct Agent {
    limit: Option<i64>,
    reserved: i64,
    spent: i64,
    open_leases: i64,
    pending: i64,
    verdicts: BTreeMap<String, i64>,
}

/// Every agent `caller` may see that the control plane knows of today
/// (a credential, a budget day, an approval asked today or still pending,
/// or a decision record).
pub async fn overview(s: &AppState, caller: &Caller) -> Result<Value, ApiError> {
    caller.require(&[Role::Viewer, Role::Approver])?;
    let tenant = if caller.tenant == "*" {
        String::new()
    } else {
        caller.tenant.clone()
    };
    let now = now_ms();
    let day = utc_day(now);
    let day_start = now - now.rem_euclid(86_400_000);
    let mut agents: BTreeMap<(String, String), Agent> = BTreeMap::new();

    let creds = sqlx::query(
        "SELECT DISTINCT tenant, agent FROM agent_credentials WHERE revoked_ms IS NULL AND ($1 = '' OR tenant = $1)",
    )
    .bind(&tenant)
    .fetch_all(s.store.pool())
    .await?;
    for r in creds {
        agents
            .entry((r.try_get("tenant")?, r.try_get("agent")?))
            .or_default();
    }

    let days = sqlx::query(
        "SELECT b.tenant, b.agent, b.limit_micros, b.reserved_micros, b.spent_micros, \
         CAST((SELECT COUNT(*) FROM leases l WHERE l.tenant = b.tenant AND l.agent = b.agent AND l.day = b.day AND l.state = 'open') AS BIGINT) AS open_leases \
         FROM budget_days b WHERE b.day = $1 AND ($2 = '' OR b.tenant = $2)",
    )
    .bind(&day)
    .bind(&tenant)
    .fetch_all(s.store.pool())
    .await?;
    for r in days {
        let a = agents
            .entry((r.try_get("tenant")?, r.try_get("agent")?))
            .or_default();
        a.limit = Some(r.try_get("limit_micros")?);
        a.reserved = r.try_get("reserved_micros")?;
        a.spent = r.try_get("spent_micros")?;
        a.open_leases = r.try_get("open_leases")?;
    }

    let pending = sqlx::query(
        "SELECT tenant, agent, CAST(SUM(CASE WHEN status = 'pending' AND expires_ms > $1 THEN 1 ELSE 0 END) AS BIGINT) AS n \
         FROM approvals WHERE (created_ms >= $3 OR (status = 'pending' AND expires_ms > $1)) AND ($2 = '' OR tenant = $2) \
         GROUP BY tenant, agent",
    )
    .bind(now)
    .bind(&tenant)
    .bind(day_start)
    .fetch_all(s.store.pool())
    .await?;
    for r in pending {
        agents
            .entry((r.try_get("tenant")?, r.try_get("agent")?))
            .or_default()
            .pending = r.try_get("n")?;
    }

    let decisions = sqlx::query(
        "SELECT tenant, data FROM audit WHERE kind = 'decision' AND at_ms >= $1 AND ($2 = '' OR tenant = $2) \
         ORDER BY seq DESC LIMIT $3",
    )
    .bind(day_start)
    .bind(&tenant)
    .bind(MAX_DECISION_RECORDS)
    .fetch_all(s.store.pool())
    .await?;
    let counted = decisions.len();
    for r in decisions {
        let data: Value =
            serde_json::from_str(&r.try_get::<String, _>("data")?).unwrap_or_default();
        let (Some(agent), Some(verdict)) = (
            data.get("agent").and_then(Value::as_str),
            data.get("decision").and_then(Value::as_str),
        ) else {
            continue;
        };
        *agents
            .entry((r.try_get("tenant")?, agent.to_owned()))
            .or_default()
            .verdicts
            .entry(verdict.to_owned())
            .or_default() += 1;
    }

    let current = s.bundles.current(&s.store).await?;
    let mut out = Vec::new();
    for ((t, name), a) in agents {
        let budget = current.as_ref().and_then(|c| {
            if t == DEFAULT_TENANT {
                c.bundle
                    .budget(None, &name)
                    .or_else(|| c.bundle.budget(Some(&t), &name))
            } else {
                c.bundle.budget(Some(&t), &name)
            }
        });
        // No lease yet today: the limit is the policy's.
        let limit = a.limit.or_else(|| {
            budget
                .and_then(|b| b.daily_usd)
                .and_then(|d| super::micros("budget.daily_usd", d).ok())
        });
        let verdicts: Map<String, Value> = a
            .verdicts
            .into_iter()
            .map(|(k, v)| (k, Value::from(v)))
            .collect();
        out.push(json!({
            "tenant": t,
            "agent": name,
            "limit_usd": limit.map(usd),
            "spent_usd": usd(a.spent),
            "reserved_usd": usd(a.reserved),
            "remaining_usd": limit.map(|l| usd((l - a.reserved - a.spent).max(0))),
            "open_leases": a.open_leases,
            "rps": budget.and_then(|b| b.rps),
            "pending_approvals": a.pending,
            "verdicts": (!verdicts.is_empty()).then_some(Value::Object(verdicts)),
        }));
    }
    Ok(json!({
        "day": day,
        "policy_revision": current.as_ref().map(|c| c.revision),
        "decision_records": counted,
        "agents": out,
    }))
}
