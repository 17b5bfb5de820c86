//! Reading the audit log: events after a sequence number, and the chain's
//! verification status.

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::server::{ApiQuery, AppState};
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
}

pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Viewer, Role::Approver])?;
    let tenant = (caller.tenant != "*").then_some(caller.tenant.as_str());
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    let records = crate::audit::records(&s.store, q.since.unwrap_or(0), limit, tenant).await?;
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
    Ok(Json(json!({"events": events, "next_since": next})))
}

pub async fn verify(State(s): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Viewer, Role::Approver])?;
    let trusted = [s.keys.service.key.verifying_key().to_bytes()];
    let report = crate::audit::verify(&s.store, &trusted).await?;
    Ok(Json(serde_json::to_value(&report).unwrap_or(Value::Null)))
}
