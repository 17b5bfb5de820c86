//! `POST /v1/bundles` (publish a signed bundle) and
//! `GET /v1/bundles/current` (with `ETag` / `If-None-Match`).

use crate::auth::{Caller, Role};
use crate::bundles::publish as store_publish;
use crate::error::ApiError;
use crate::server::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

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
