//! `POST /v1/bundles` (publish a signed bundle),
//! `GET /v1/bundles/current` (with `ETag` / `If-None-Match`; which gateway
//! fetched which revision is recorded), `GET /v1/bundles` (the revisions)
//! and `GET /v1/bundles/{revision}/explain`.

use crate::auth::{Caller, Role};
use crate::bundles::publish as store_publish;
use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::state::AppState;
use crate::store::now_ms;
use aegis_engine::Bundle;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};
use sqlx::Row;

pub async fn publish(
    State(s): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    caller.require(&[Role::Admin])?;
    if caller.tenant != "*" {
        return Err(ApiError::forbidden(
            "other_tenant",
            "publishing a bundle needs an admin token for all tenants (`*`)",
        ));
    }
    if body.starts_with(b"\0asm") {
        return Err(ApiError::bad_request(
            "blob_not_bundle",
            "the body is a WebAssembly module; send the bundle inside it (`aegis publish` extracts it)",
        ));
    }
    let trusted = s.settings.trusted_publishers(&s.keys);
    let current = store_publish(
        &s.store,
        &s.bundles,
        body.to_vec(),
        &trusted,
        &caller.actor(),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"revision": current.revision, "hash": current.hash, "policy_version": current.policy_version, "etag": current.etag}),
        ),
    ))
}

pub async fn current(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Gateway, Role::Viewer])?;
    // The bundle holds every tenant's policies. A gateway enforces them
    // all on its proxy; anyone else reads them only with a token for all
    // tenants.
    if caller.role != Role::Gateway && caller.tenant != "*" {
        return Err(ApiError::forbidden(
            "other_tenant",
            "the bundle holds every tenant's policies: reading it needs a token for all tenants (`*`) or a gateway token",
        ));
    }
    let current = s
        .bundles
        .current(&s.store)
        .await?
        .ok_or_else(|| ApiError::not_found("no policy bundle is published yet"))?;
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t == current.etag || t.strip_prefix("W/") == Some(current.etag.as_str())
        });
    let common = [
        (header::ETAG, current.etag.clone()),
        (
            header::HeaderName::from_static("x-aegis-revision"),
            current.revision.to_string(),
        ),
        (
            header::HeaderName::from_static("x-aegis-policy-version"),
            current.policy_version.clone(),
        ),
    ];
    if caller.role == Role::Gateway {
        record_fetch(&s, &caller, current.revision).await;
    }
    if matches {
        return Ok((StatusCode::NOT_MODIFIED, common).into_response());
    }
    Ok((
        StatusCode::OK,
        common,
        [(header::CONTENT_TYPE, "application/octet-stream".to_owned())],
        current.bytes.as_ref().clone(),
    )
        .into_response())
}

/// Notes that gateway `caller` has revision `revision` (a 304 says it
/// still has it). Written at most every 30 seconds per gateway unless the
/// revision changed; a failure costs the dashboard a column, not the
/// gateway its bundle.
async fn record_fetch(s: &AppState, caller: &Caller, revision: i64) {
    let now = now_ms();
    let done = sqlx::query(
        "INSERT INTO gateway_fetches (subject, tenant, revision, fetched_ms) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (subject) DO UPDATE SET tenant = excluded.tenant, revision = excluded.revision, \
         fetched_ms = excluded.fetched_ms \
         WHERE gateway_fetches.revision <> excluded.revision OR gateway_fetches.fetched_ms < excluded.fetched_ms - 30000",
    )
    .bind(&caller.subject)
    .bind(&caller.tenant)
    .bind(revision)
    .bind(now)
    .execute(s.store.pool())
    .await;
    if let Err(e) = done {
        tracing::warn!(error = %e, "cannot record the gateway's bundle fetch");
    }
}

pub async fn list(State(s): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    revisions(&s, &caller)
        .await
        .map(|r| Json(json!({ "revisions": r })))
}

/// The published revisions, newest first, each with the gateways whose
/// last fetch got it (`active_on`).
pub async fn revisions(s: &AppState, caller: &Caller) -> Result<Vec<Value>, ApiError> {
    caller.require(&[Role::Viewer, Role::Approver])?;
    let rows = sqlx::query(
        "SELECT revision, hash, policy_version, published_ms, published_by FROM bundles ORDER BY revision DESC LIMIT 200",
    )
    .fetch_all(s.store.pool())
    .await?;
    let fetches = sqlx::query(
        "SELECT subject, tenant, revision, fetched_ms FROM gateway_fetches ORDER BY subject",
    )
    .fetch_all(s.store.pool())
    .await?;
    let mut out = Vec::new();
    for r in rows {
        let revision: i64 = r.try_get("revision")?;
        let mut active = Vec::new();
        for f in &fetches {
            let tenant: String = f.try_get("tenant")?;
            // A tenant's people see their own tenant's gateways only.
            if f.try_get::<i64, _>("revision")? == revision && caller.sees(&tenant) {
                active.push(json!({
                    "gateway": f.try_get::<String, _>("subject")?,
                    "fetched_at": f.try_get::<i64, _>("fetched_ms")? / 1000,
                }));
            }
        }
        out.push(json!({
            "revision": revision,
            "hash": r.try_get::<String, _>("hash")?,
            "policy_version": r.try_get::<String, _>("policy_version")?,
            "published_at": r.try_get::<i64, _>("published_ms")? / 1000,
            "published_by": r.try_get::<String, _>("published_by")?,
            "active_on": active,
        }));
    }
    Ok(out)
}

pub async fn explain(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(revision): ApiPath<i64>,
) -> Result<Json<Value>, ApiError> {
    let text = explain_text(&s, &caller, revision).await?;
    Ok(Json(json!({"revision": revision, "explain": text})))
}

/// `aegis explain` of a published revision. Like the bundle itself, it
/// names every tenant's agents: a token for all tenants only.
pub async fn explain_text(
    s: &AppState,
    caller: &Caller,
    revision: i64,
) -> Result<String, ApiError> {
    caller.require(&[Role::Viewer, Role::Approver])?;
    if caller.tenant != "*" {
        return Err(ApiError::forbidden(
            "other_tenant",
            "a bundle holds every tenant's policies: explaining it needs a token for all tenants (`*`)",
        ));
    }
    let row = sqlx::query("SELECT bytes FROM bundles WHERE revision = $1")
        .bind(revision)
        .fetch_optional(s.store.pool())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no bundle revision `{revision}`")))?;
    let bytes = STANDARD
        .decode(row.try_get::<String, _>("bytes")?)
        .map_err(|_| ApiError::internal("a stored bundle is not base64"))?;
    // Verified when published; this only reads it.
    let bundle = Bundle::load(&bytes, &[])
        .map_err(|e| ApiError::internal(format!("stored bundle r{revision}: {e}")))?;
    Ok(bundle.explain())
}
