//! Agent credentials and tokens: an admin creates a credential for an
//! agent (shown once, stored as a SHA-256); the agent trades it at
//! `POST /v1/tokens` for a short-lived EdDSA JWT that the filter verifies
//! with the keys of `/.well-known/jwks.json`.

use super::name;
use crate::audit::chain::NewEvent;
use crate::auth::{Caller, Role};
use crate::bundles::DEFAULT_TENANT;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::keys;
use crate::state::AppState;
use crate::store::{new_id, now_ms};
use aegis_engine::jwt::issue::{issue, TokenRequest};
use aegis_engine::trust::hex;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::Row;

/// Prefix of agent credentials, so a leaked one is recognisable.
pub const CREDENTIAL_PREFIX: &str = "aegis_ac_";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAgent {
    pub tenant: String,
    pub agent: String,
    #[serde(default)]
    pub scope: Option<String>,
}

fn credential_hash(credential: &str) -> String {
    hex(&Sha256::digest(credential.as_bytes()))
}

pub async fn create_agent(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(r): ApiJson<CreateAgent>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(&[Role::Admin])?;
    name("tenant", &r.tenant)?;
    name("agent", &r.agent)?;
    caller.require_tenant(&r.tenant)?;
    let id = new_id("agc");
    let mut secret = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut secret);
    let credential = format!("{CREDENTIAL_PREFIX}{}", URL_SAFE_NO_PAD.encode(secret));
    let now = now_ms();
    let mut w = s.store.write().await?;
    sqlx::query("INSERT INTO agent_credentials (id, tenant, agent, scope, secret_sha256, created_ms, created_by, revoked_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)")
        .bind(&id)
        .bind(&r.tenant)
        .bind(&r.agent)
        .bind(&r.scope)
        .bind(credential_hash(&credential))
        .bind(now)
        .bind(caller.actor())
        .execute(&mut *w.tx)
        .await?;
    let data = json!({"agent": r.agent, "scope": r.scope}).to_string();
    w.audit(&NewEvent {
        at_ms: now,
        tenant: &r.tenant,
        actor: &caller.actor(),
        kind: "agent.created",
        subject: &id,
        data: &data,
    })
    .await?;
    w.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"credential_id": id, "tenant": r.tenant, "agent": r.agent, "scope": r.scope, "credential": credential}),
        ),
    ))
}

/// `POST /v1/agents/{credential_id}/revoke`: the credential trades for no
/// more tokens (those already issued live out their short lifetime).
pub async fn revoke_agent(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Admin])?;
    let not_found = || ApiError::not_found(format!("no agent credential `{id}`"));
    let now = now_ms();
    let mut w = s.store.write().await?;
    let row = sqlx::query("SELECT tenant, agent, revoked_ms FROM agent_credentials WHERE id = $1")
        .bind(&id)
        .fetch_optional(&mut *w.tx)
        .await?
        .ok_or_else(not_found)?;
    let tenant: String = row.try_get("tenant")?;
    if !caller.sees(&tenant) {
        return Err(not_found());
    }
    let agent: String = row.try_get("agent")?;
    if let Some(at) = row.try_get::<Option<i64>, _>("revoked_ms")? {
        return Err(ApiError::conflict(
            "already_revoked",
            format!("agent credential `{id}` was revoked at {}", at / 1000),
        ));
    }
    sqlx::query(
        "UPDATE agent_credentials SET revoked_ms = $1 WHERE id = $2 AND revoked_ms IS NULL",
    )
    .bind(now)
    .bind(&id)
    .execute(&mut *w.tx)
    .await?;
    let data = json!({"agent": agent}).to_string();
    w.audit(&NewEvent {
        at_ms: now,
        tenant: &tenant,
        actor: &caller.actor(),
        kind: "agent.revoked",
        subject: &id,
        data: &data,
    })
    .await?;
    w.commit().await?;
    Ok(Json(
        json!({"credential_id": id, "tenant": tenant, "agent": agent, "revoked_at": now / 1000}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exchange {
    pub credential: String,
}

pub async fn exchange(
    State(s): State<AppState>,
    ApiJson(r): ApiJson<Exchange>,
) -> Result<Json<Value>, ApiError> {
    let row = sqlx::query("SELECT id, tenant, agent, scope FROM agent_credentials WHERE secret_sha256 = $1 AND revoked_ms IS NULL")
        .bind(credential_hash(&r.credential))
        .fetch_optional(s.store.pool())
        .await?
        .ok_or_else(|| ApiError::unauthorized("unknown or revoked agent credential"))?;
    let id: String = row.try_get("id")?;
    let tenant: String = row.try_get("tenant")?;
    let agent: String = row.try_get("agent")?;
    let scope: Option<String> = row.try_get("scope")?;
    let claim = token_tenant(&s, &tenant, &agent).await?;
    let key = keys::token_key(&s.store).await?;
    let now = now_ms() / 1000;
    let ttl = s.settings.token_ttl_secs;
    let token = issue(
        &key.key,
        &TokenRequest {
            kid: &key.kid,
            issuer: &s.settings.issuer,
            audience: &s.settings.audience,
            agent: &agent,
            tenant: claim.as_deref(),
            scope: scope.as_deref(),
            ttl_secs: ttl,
            now,
        },
    );
    let expires_at = now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX));
    let mut w = s.store.write().await?;
    let data = json!({"agent": agent, "kid": key.kid, "expires_at": expires_at}).to_string();
    w.audit(&NewEvent {
        at_ms: now_ms(),
        tenant: &tenant,
        actor: &format!("agent:{agent}"),
        kind: "token.issued",
        subject: &id,
        data: &data,
    })
    .await?;
    w.commit().await?;
    Ok(Json(
        json!({"token": token, "token_type": "Bearer", "expires_in": ttl, "expires_at": expires_at, "kid": key.kid}),
    ))
}

/// The `tenant` claim of an agent's token: the filter finds the agent by
/// that claim and its name, and an agent whose policy names no tenant
/// (tenant `default` in this API) is found by its name alone. Only an
/// agent that names `tenant: default` itself, with no agent of the same
/// name without a tenant, keeps the claim.
async fn token_tenant(s: &AppState, tenant: &str, agent: &str) -> Result<Option<String>, ApiError> {
    if tenant != DEFAULT_TENANT {
        return Ok(Some(tenant.to_owned()));
    }
    let explicit = s.bundles.current(&s.store).await?.is_some_and(|c| {
        c.bundle.budget(None, agent).is_none() && c.bundle.budget(Some(tenant), agent).is_some()
    });
    Ok(explicit.then(|| tenant.to_owned()))
}

pub async fn jwks(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    // Published before the first token is issued, so a gateway can be
    // configured with it.
    keys::token_key(&s.store).await?;
    Ok(Json(keys::jwks(&s.store).await?))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Rotate {
    /// How long the previous keys stay published; default twice the token
    /// lifetime, so every token they signed expires first.
    #[serde(default)]
    pub overlap_secs: Option<u64>,
}

pub async fn rotate(
    State(s): State<AppState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Admin])?;
    if caller.tenant != "*" {
        return Err(ApiError::forbidden(
            "other_tenant",
            "rotating the token key needs an admin token for all tenants (`*`)",
        ));
    }
    let r: Rotate = if body.iter().all(u8::is_ascii_whitespace) {
        Rotate::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(
                "invalid_body",
                format!("the body does not match this call: {e}"),
            )
        })?
    };
    let overlap = r
        .overlap_secs
        .unwrap_or(s.settings.token_ttl_secs.saturating_mul(2));
    let overlap_ms = i64::try_from(overlap.saturating_mul(1000))
        .unwrap_or(i64::MAX)
        .max(1);
    let key = keys::rotate_token_key(&s.store, overlap_ms, &caller.actor()).await?;
    Ok(Json(
        json!({"kid": key.kid, "previous_retire_after_secs": overlap, "jwks": keys::jwks(&s.store).await?}),
    ))
}
