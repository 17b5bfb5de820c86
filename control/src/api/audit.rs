//! Reading the audit log: events after a sequence number, and the chain's
//! verification status.

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::state::AppState;
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub since: Option<i64>,
    pub limit: Option<i64>,
    /// `jsonl` (default: the records) or `ocsf`.
    pub format: Option<String>,
    pub kind: Option<String>,
    pub actor: Option<String>,
    pub subject: Option<String>,
    /// Text in the kind, actor, subject or data (ASCII case ignored).
    pub search: Option<String>,
    /// Records before this seq, newest first (instead of `since`).
    pub before: Option<i64>,
}

impl ListQuery {
    /// The search this query asks `caller` for: their own tenant's records
    /// only unless the token is for all tenants.
    pub fn filter(&self, caller: &Caller, default_limit: i64) -> crate::audit::Filter {
        let own = |v: &Option<String>| v.clone().unwrap_or_default();
        crate::audit::Filter {
            tenant: if caller.tenant == "*" {
                String::new()
            } else {
                caller.tenant.clone()
            },
            kind: own(&self.kind),
            actor: own(&self.actor),
            subject: own(&self.subject),
            text: own(&self.search),
            since: self.since.unwrap_or(0),
            before: self.before,
            limit: self.limit.unwrap_or(default_limit).clamp(1, 10_000),
        }
    }
}

pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Viewer, Role::Approver])?;
    let records = crate::audit::search(&s.store, &q.filter(&caller, 1000)).await?;
    let format = q.format.as_deref().unwrap_or("jsonl");
    if format != "jsonl" && format != "ocsf" {
        return Err(ApiError::bad_request(
            "invalid_format",
            format!("unknown format `{format}`: use jsonl or ocsf"),
        ));
    }
    let next = records.last().map(|r| r.seq);
    let events: Vec<Value> = records
        .iter()
        .map(|r| crate::audit::render(r, format))
        .collect();
    if q.before.is_some() {
        return Ok(Json(json!({"events": events, "next_before": next})));
    }
    Ok(Json(json!({"events": events, "next_since": next})))
}

pub async fn verify(State(s): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let report = chain_status(&s, &caller).await?;
    Ok(Json(serde_json::to_value(&report).unwrap_or(Value::Null)))
}

/// The chain checked against the service key's checkpoints.
pub async fn chain_status(s: &AppState, caller: &Caller) -> Result<crate::Report, ApiError> {
    caller.require(&[Role::Viewer, Role::Approver])?;
    let trusted = [s.keys.service.key.verifying_key().to_bytes()];
    Ok(crate::audit::verify(&s.store, &trusted).await?)
}
