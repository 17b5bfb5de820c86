//! Approvals: a held call waiting for a person. Created idempotently by a
//! gateway (the same pending call is one approval), long-polled, decided
//! once by an approver of the same tenant, redeemed exactly once by a
//! gateway presenting the same request digest before it expires.

use super::name;
use crate::audit::chain::NewEvent;
use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;
use crate::store::{new_id, now_ms};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::any::AnyRow;
use sqlx::Row;
use std::time::Duration;

/// Largest `summary` of an approval, as JSON text.
pub const MAX_SUMMARY_BYTES: usize = 16 * 1024;
/// Largest `rule`, `reason` and `policy_version` of an approval.
pub const MAX_TEXT_BYTES: usize = 2048;

/// Longest long-poll accepted, in seconds.
pub const MAX_WAIT_SECS: u64 = 60;

const COLUMNS: &str = "id, tenant, agent, tool, action, rule, reason, policy_version, digest, summary, status, \
                       created_ms, expires_ms, requested_by, decided_by, decided_ms, comment, redeemed_ms";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    pub tenant: String,
    pub agent: String,
    pub tool: String,
    pub action: String,
    pub rule: String,
    pub reason: String,
    pub policy_version: String,
    /// Lowercase hex SHA-256 of the call (DESIGN section 7).
    pub digest: String,
    /// What the approver is shown: the call with DLP applied.
    #[serde(default)]
    pub summary: Value,
}

/// An approval row as the API shows it.
struct Approval {
    id: String,
    tenant: String,
    status: String,
    expires_ms: i64,
    digest: String,
    decided_by: Option<String>,
    json: Value,
}

fn from_row(r: &AnyRow, now: i64) -> Result<Approval, sqlx::Error> {
    let id: String = r.try_get("id")?;
    let tenant: String = r.try_get("tenant")?;
    let mut status: String = r.try_get("status")?;
    let expires_ms: i64 = r.try_get("expires_ms")?;
    // A pending or approved approval past its expiry is expired, whether
    // or not anyone has written that down yet.
    if (status == "pending" || status == "approved") && expires_ms <= now {
        status = "expired".into();
    }
    let summary: String = r.try_get("summary")?;
    let decided_by: Option<String> = r.try_get("decided_by")?;
    let secs = |v: Option<i64>| v.map(|ms| ms / 1000);
    let created_ms: i64 = r.try_get("created_ms")?;
    let decided_ms: Option<i64> = r.try_get("decided_ms")?;
    let json = json!({
        "approval_id": id,
        "tenant": tenant,
        "agent": r.try_get::<String, _>("agent")?,
        "tool": r.try_get::<String, _>("tool")?,
        "action": r.try_get::<String, _>("action")?,
        "rule": r.try_get::<String, _>("rule")?,
        "reason": r.try_get::<String, _>("reason")?,
        "policy_version": r.try_get::<String, _>("policy_version")?,
        "digest": r.try_get::<String, _>("digest")?,
        "summary": serde_json::from_str::<Value>(&summary).unwrap_or(Value::Null),
        "status": status,
        "created_at": created_ms / 1000,
        "expires_at": expires_ms / 1000,
        // Relative to the answer's time, so a client needs no clock of its own.
        "expires_in_secs": (status == "pending").then(|| (expires_ms - now).max(0) / 1000),
        "requested_by": r.try_get::<String, _>("requested_by")?,
        "decided_by": decided_by,
        "decided_at": secs(decided_ms),
        "time_to_decision_secs": decided_ms.map(|d| (d - created_ms).max(0) / 1000),
        "comment": r.try_get::<Option<String>, _>("comment")?,
        "redeemed_at": secs(r.try_get("redeemed_ms")?),
    });
    Ok(Approval {
        id,
        tenant,
        status,
        expires_ms,
        digest: r.try_get("digest")?,
        decided_by,
        json,
    })
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("no approval `{id}`"))
}

fn status_url(s: &AppState, id: &str) -> String {
    format!(
        "{}/v1/approvals/{id}",
        s.settings.public_url.trim_end_matches('/')
    )
}

pub async fn create(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(r): ApiJson<CreateRequest>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Gateway])?;
    for (f, v) in [
        ("tenant", &r.tenant),
        ("agent", &r.agent),
        ("tool", &r.tool),
        ("action", &r.action),
    ] {
        name(f, v)?;
    }
    caller.require_tenant(&r.tenant)?;
    check_digest(&r.digest)?;
    // Bounded so that a list of approvals (up to 1000) stays a few MB.
    for (f, v) in [
        ("rule", &r.rule),
        ("reason", &r.reason),
        ("policy_version", &r.policy_version),
    ] {
        if v.len() > MAX_TEXT_BYTES {
            return Err(ApiError::bad_request(
                "invalid_field",
                format!("`{f}` is at most {MAX_TEXT_BYTES} bytes"),
            ));
        }
    }
    let summary = r.summary.to_string();
    if summary.len() > MAX_SUMMARY_BYTES {
        return Err(ApiError::bad_request(
            "invalid_summary",
            format!("`summary` is at most {MAX_SUMMARY_BYTES} bytes of JSON"),
        ));
    }
    let now = now_ms();
    let mut w = s.store.write().await?;
    let existing = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM approvals WHERE tenant = $1 AND agent = $2 AND digest = $3 AND status = 'pending'"
    ))
    .bind(&r.tenant)
    .bind(&r.agent)
    .bind(&r.digest)
    .fetch_optional(&mut *w.tx)
    .await?;
    if let Some(row) = existing {
        let a = from_row(&row, now)?;
        if a.status == "pending" {
            w.commit().await?;
            let body = json!({"approval_id": a.id, "status": a.status, "expires_at": a.expires_ms / 1000, "url": status_url(&s, &a.id), "created": false});
            return Ok((StatusCode::OK, Json(body)).into_response());
        }
        // Expired while pending: record that, then open a new one.
        mark_expired(&s, &mut w, &a, now).await?;
        s.metrics.approval("expired");
    }
    let id = new_id("apr");
    let expires_ms = now.saturating_add(s.settings.approval_ttl_secs.saturating_mul(1000));
    sqlx::query(
        "INSERT INTO approvals (id, tenant, agent, tool, action, rule, reason, policy_version, digest, summary, status, created_ms, expires_ms, requested_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending', $11, $12, $13)",
    )
    .bind(&id)
    .bind(&r.tenant)
    .bind(&r.agent)
    .bind(&r.tool)
    .bind(&r.action)
    .bind(&r.rule)
    .bind(&r.reason)
    .bind(&r.policy_version)
    .bind(&r.digest)
    .bind(&summary)
    .bind(now)
    .bind(expires_ms)
    .bind(caller.actor())
    .execute(&mut *w.tx)
    .await?;
    let data = json!({"agent": r.agent, "tool": r.tool, "action": r.action, "rule": r.rule, "reason": r.reason,
                      "policy_version": r.policy_version, "digest": r.digest, "expires_at": expires_ms / 1000})
    .to_string();
    w.audit(&NewEvent {
        at_ms: now,
        tenant: &r.tenant,
        actor: &caller.actor(),
        kind: "approval.created",
        subject: &id,
        data: &data,
    })
    .await?;
    crate::notify::outbox::enqueue(
        &mut w,
        &s.notify,
        crate::notify::outbox::Event::Created,
        &r.tenant,
        &id,
        now,
    )
    .await?;
    w.commit().await?;
    s.notify.wake.notify_one();
    s.metrics.approval("pending");
    let body = json!({"approval_id": id, "status": "pending", "expires_at": expires_ms / 1000, "url": status_url(&s, &id), "created": true});
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// A digest is a SHA-256 in lowercase hex; anything else is refused
/// before it is stored or written to the audit log.
fn check_digest(digest: &str) -> Result<(), ApiError> {
    if digest.len() != 64
        || !digest
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    {
        return Err(ApiError::bad_request(
            "invalid_digest",
            "`digest` must be 64 lowercase hex digits (SHA-256)",
        ));
    }
    Ok(())
}

async fn mark_expired(
    s: &AppState,
    w: &mut crate::store::Write,
    a: &Approval,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let undecided =
        sqlx::query("UPDATE approvals SET status = 'expired' WHERE id = $1 AND status = 'pending'")
            .bind(&a.id)
            .execute(&mut *w.tx)
            .await?;
    let approved = sqlx::query(
        "UPDATE approvals SET status = 'expired' WHERE id = $1 AND status = 'approved'",
    )
    .bind(&a.id)
    .execute(&mut *w.tx)
    .await?;
    if undecided.rows_affected() == 1 {
        // Its Slack message still has buttons: it now says so. (An
        // approved one keeps saying who approved it.)
        crate::notify::outbox::enqueue(
            w,
            &s.notify,
            crate::notify::outbox::Event::Expired,
            &a.tenant,
            &a.id,
            now,
        )
        .await?;
        s.notify.wake.notify_one();
    }
    if undecided.rows_affected() + approved.rows_affected() == 1 {
        let data = json!({"expired_at": a.expires_ms / 1000}).to_string();
        w.audit(&NewEvent {
            at_ms: now,
            tenant: &a.tenant,
            actor: "service",
            kind: "approval.expired",
            subject: &a.id,
            data: &data,
        })
        .await?;
    }
    Ok(undecided.rows_affected() + approved.rows_affected() == 1)
}

/// Records the expiry of approvals past their time that nobody read since
/// (a read records it too), a few at a time: their Slack messages are
/// updated. Returns how many.
pub(crate) async fn expire_due(s: &AppState, now: i64) -> Result<usize, sqlx::Error> {
    let mut w = s.store.write().await?;
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM approvals WHERE status IN ('pending', 'approved') AND expires_ms <= $1 \
         ORDER BY expires_ms LIMIT 100"
    ))
    .bind(now)
    .fetch_all(&mut *w.tx)
    .await?;
    let mut recorded = 0;
    for row in &rows {
        let a = from_row(row, now)?;
        // Another replica may have recorded it first.
        if mark_expired(s, &mut w, &a, now).await? {
            recorded += 1;
        }
    }
    w.commit().await?;
    for _ in 0..recorded {
        s.metrics.approval("expired");
    }
    Ok(recorded)
}

/// Approval `id` as the API shows it (for notifications, which are not
/// any caller's: no tenant check).
pub async fn view(s: &AppState, id: &str) -> Result<Option<Value>, sqlx::Error> {
    match load(s, id).await? {
        Some(row) => Ok(Some(from_row(&row, now_ms())?.json)),
        None => Ok(None),
    }
}

async fn load(s: &AppState, id: &str) -> Result<Option<AnyRow>, sqlx::Error> {
    sqlx::query(&format!("SELECT {COLUMNS} FROM approvals WHERE id = $1"))
        .bind(id)
        .fetch_optional(s.store.pool())
        .await
}

/// An approval read inside a write, as `caller` may see it: another
/// tenant's approval does not exist for them.
async fn load_in(
    w: &mut crate::store::Write,
    caller: &Caller,
    id: &str,
    now: i64,
) -> Result<Approval, ApiError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM approvals WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *w.tx)
        .await?
        .ok_or_else(|| not_found(id))?;
    let a = from_row(&row, now)?;
    if !caller.sees(&a.tenant) {
        return Err(not_found(id));
    }
    Ok(a)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShowQuery {
    /// Seconds to wait for a decision while the approval is pending.
    pub wait: Option<u64>,
}

pub async fn show(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ShowQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Gateway, Role::Viewer, Role::Approver])?;
    let wait = q.wait.unwrap_or(0);
    if wait > MAX_WAIT_SECS {
        return Err(ApiError::bad_request(
            "invalid_wait",
            format!("`wait` is at most {MAX_WAIT_SECS} seconds"),
        ));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    loop {
        // Registered before reading, so a decision between the read and
        // the wait still wakes us.
        let changed = s.approvals_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let now = now_ms();
        let row = load(&s, &id).await?.ok_or_else(|| not_found(&id))?;
        let a = from_row(&row, now)?;
        if !caller.sees(&a.tenant) {
            return Err(not_found(&id));
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if a.status != "pending" || remaining.is_zero() {
            return Ok(Json(a.json));
        }
        let until_expiry = Duration::from_millis(u64::try_from(a.expires_ms - now).unwrap_or(0));
        // Another replica's decision is only seen in the store: look again
        // at least every 250 ms.
        let nap = remaining.min(until_expiry).min(Duration::from_millis(250));
        tokio::select! {
            () = &mut changed => {},
            () = tokio::time::sleep(nap) => {},
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub status: Option<String>,
    pub tenant: Option<String>,
    pub limit: Option<i64>,
}

pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let out = list_for(&s, &caller, &q).await?;
    Ok(Json(json!({ "approvals": out })))
}

/// One approval as `caller` may see it (the dashboard's approval page).
pub async fn one(s: &AppState, caller: &Caller, id: &str) -> Result<Value, ApiError> {
    caller.require(&[Role::Viewer, Role::Approver])?;
    let row = load(s, id).await?.ok_or_else(|| not_found(id))?;
    let a = from_row(&row, now_ms())?;
    if !caller.sees(&a.tenant) {
        return Err(not_found(id));
    }
    Ok(a.json)
}

/// Approvals as `GET /v1/approvals` lists them, newest first: the API's
/// list and the dashboard's queue and history.
pub async fn list_for(
    s: &AppState,
    caller: &Caller,
    q: &ListQuery,
) -> Result<Vec<Value>, ApiError> {
    caller.require(&[Role::Viewer, Role::Approver])?;
    let tenant = caller.list_tenant(q.tenant.as_deref())?;
    let status = q.status.clone().unwrap_or_default();
    if !["", "pending", "approved", "denied", "expired", "redeemed"].contains(&status.as_str()) {
        return Err(ApiError::bad_request(
            "invalid_status",
            format!(
                "unknown status `{status}`: use pending, approved, denied, expired or redeemed"
            ),
        ));
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let now = now_ms();
    // The status as the API shows it: a pending or approved approval past
    // its expiry is expired, whatever its row says. Filtered in SQL, before
    // the limit, so older approvals of that status are not cut off by newer
    // ones of another.
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM approvals WHERE ($1 = '' OR tenant = $1) AND ($2 = '' \
         OR ($2 IN ('pending', 'approved') AND status = $2 AND expires_ms > $3) \
         OR ($2 = 'expired' AND (status = 'expired' OR (status IN ('pending', 'approved') AND expires_ms <= $3))) \
         OR ($2 IN ('denied', 'redeemed') AND status = $2)) \
         ORDER BY created_ms DESC LIMIT {limit}"
    ))
    .bind(&tenant)
    .bind(&status)
    .bind(now)
    .fetch_all(s.store.pool())
    .await?;
    let mut out = Vec::new();
    for r in &rows {
        out.push(from_row(r, now)?.json);
    }
    Ok(out)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    pub approve: bool,
    #[serde(default)]
    pub comment: Option<String>,
    /// Where the person decided, when not through the API (`dashboard`,
    /// `slack:<user id>`): kept in the audit record. Never read from a
    /// request body.
    #[serde(skip)]
    pub via: Option<String>,
}

pub async fn decide(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(r): ApiJson<DecisionRequest>,
) -> Result<Json<Value>, ApiError> {
    decide_as(&s, &caller, &id, &r).await.map(Json)
}

/// Records a person's decision on approval `id`, once, as `caller` (an
/// approver of its tenant): the one path for the API, the dashboard and
/// chat buttons. Returns the approval as the API shows it.
pub async fn decide_as(
    s: &AppState,
    caller: &Caller,
    id: &str,
    r: &DecisionRequest,
) -> Result<Value, ApiError> {
    // Never a gateway's or viewer's credential: only a person's.
    caller.require(&[Role::Approver])?;
    if r.comment.as_ref().is_some_and(|c| c.len() > 2000) {
        return Err(ApiError::bad_request(
            "invalid_comment",
            "`comment` is at most 2000 bytes",
        ));
    }
    let now = now_ms();
    let mut w = s.store.write().await?;
    let a = load_in(&mut w, caller, id, now).await?;
    match a.status.as_str() {
        "pending" => {}
        "expired" => {
            mark_expired(s, &mut w, &a, now).await?;
            w.commit().await?;
            return Err(ApiError::new(
                StatusCode::GONE,
                "expired",
                format!("approval `{id}` expired before a decision"),
            ));
        }
        other => {
            let by = a.decided_by.unwrap_or_default();
            return Err(ApiError::conflict(
                "already_decided",
                format!("approval `{id}` is already {other} (by `{by}`)"),
            ));
        }
    }
    let status = if r.approve { "approved" } else { "denied" };
    let who = caller.subject.clone();
    sqlx::query("UPDATE approvals SET status = $1, decided_by = $2, decided_ms = $3, comment = $4 WHERE id = $5 AND status = 'pending'")
        .bind(status)
        .bind(&who)
        .bind(now)
        .bind(&r.comment)
        .bind(id)
        .execute(&mut *w.tx)
        .await?;
    let data = json!({"approve": r.approve, "comment": r.comment, "decided_by": who, "via": r.via.as_deref().unwrap_or("api")}).to_string();
    w.audit(&NewEvent {
        at_ms: now,
        tenant: &a.tenant,
        actor: &caller.actor(),
        kind: "approval.decided",
        subject: id,
        data: &data,
    })
    .await?;
    crate::notify::outbox::enqueue(
        &mut w,
        &s.notify,
        crate::notify::outbox::Event::Decided,
        &a.tenant,
        id,
        now,
    )
    .await?;
    w.commit().await?;
    s.notify.wake.notify_one();
    s.metrics
        .approval(if r.approve { "approved" } else { "denied" });
    s.approvals_changed.notify_waiters();
    let row = load(s, id).await?.ok_or_else(|| not_found(id))?;
    Ok(from_row(&row, now_ms())?.json)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedeemRequest {
    pub digest: String,
}

pub async fn redeem(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(r): ApiJson<RedeemRequest>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Gateway])?;
    check_digest(&r.digest)?;
    let now = now_ms();
    let mut w = s.store.write().await?;
    let a = load_in(&mut w, &caller, &id, now).await?;
    let outcome: Result<(), ApiError> = match a.status.as_str() {
        "approved" if a.digest == r.digest => Ok(()),
        "approved" => Err(ApiError::forbidden(
            "digest_mismatch",
            format!("approval `{id}` was given for a different call; the request changed since it was approved"),
        )),
        "redeemed" => Err(ApiError::conflict("already_redeemed", format!("approval `{id}` was already used; ask for a new one"))),
        "pending" => Err(ApiError::conflict("not_decided", format!("approval `{id}` is still pending"))),
        "denied" => {
            let comment = a.json.get("comment").and_then(Value::as_str).unwrap_or("");
            let by = a.decided_by.clone().unwrap_or_default();
            let mut details = serde_json::Map::new();
            details.insert("decided_by".into(), by.clone().into());
            details.insert("comment".into(), comment.into());
            Err(ApiError::forbidden("denied", format!("approval `{id}` was denied by `{by}`: {comment}")).with_details(details))
        }
        _ => Err(ApiError::new(StatusCode::GONE, "expired", format!("approval `{id}` has expired"))),
    };
    if let Err(e) = outcome {
        if a.status == "expired" {
            mark_expired(&s, &mut w, &a, now).await?;
        }
        let data = json!({"refused": e.code, "digest": r.digest}).to_string();
        w.audit(&NewEvent {
            at_ms: now,
            tenant: &a.tenant,
            actor: &caller.actor(),
            kind: "approval.redeem_refused",
            subject: &id,
            data: &data,
        })
        .await?;
        w.commit().await?;
        return Err(e);
    }
    let done = sqlx::query("UPDATE approvals SET status = 'redeemed', redeemed_ms = $1 WHERE id = $2 AND status = 'approved' AND digest = $3 AND expires_ms > $1")
        .bind(now)
        .bind(&id)
        .bind(&r.digest)
        .execute(&mut *w.tx)
        .await?;
    if done.rows_affected() != 1 {
        return Err(ApiError::conflict(
            "already_redeemed",
            format!("approval `{id}` was already used; ask for a new one"),
        ));
    }
    let data = json!({"digest": r.digest}).to_string();
    w.audit(&NewEvent {
        at_ms: now,
        tenant: &a.tenant,
        actor: &caller.actor(),
        kind: "approval.redeemed",
        subject: &id,
        data: &data,
    })
    .await?;
    w.commit().await?;
    s.metrics.approval("redeemed");
    s.approvals_changed.notify_waiters();
    Ok(Json(json!({
        "approval_id": id,
        "approved_by": a.decided_by,
        "decided_at": a.json.get("decided_at"),
        "comment": a.json.get("comment"),
    })))
}
