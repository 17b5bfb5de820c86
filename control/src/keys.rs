//! The service's Ed25519 keys, kept in the store so every replica shares
//! them: the service key (signs API tokens and audit checkpoints) and the
//! agent-token keys (sign the JWTs of `POST /v1/tokens`, published at
//! `/.well-known/jwks.json`, rotated with overlapping kids).

use crate::audit::chain::NewEvent;
use crate::store::{now_ms, Store};
use aegis_engine::trust::{hex, key_fingerprint};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ed25519_dalek::{SigningKey, VerifyingKey};
use sqlx::Row;

pub const SERVICE: &str = "service";
pub const TOKEN: &str = "token";

/// One signing key with its kid.
#[derive(Clone)]
pub struct Key {
    pub kid: String,
    pub key: SigningKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Key {
    pub fn new(key: SigningKey) -> Key {
        Key {
            kid: key_fingerprint(&key.verifying_key().to_bytes()),
            key,
        }
    }
    pub fn generate() -> Key {
        Key::new(SigningKey::generate(&mut rand_core::OsRng))
    }
}

/// The keys a running service holds.
#[derive(Debug, Clone)]
pub struct Keys {
    pub service: Key,
}

impl Keys {
    pub fn service_verifiers(&self) -> Vec<(String, VerifyingKey)> {
        vec![(self.service.kid.clone(), self.service.key.verifying_key())]
    }
}

/// The service key: `explicit` (from `--key`) or the one in the store,
/// created on first start.
pub async fn service_key(store: &Store, explicit: Option<SigningKey>) -> Result<Key, sqlx::Error> {
    if let Some(k) = explicit {
        return Ok(Key::new(k));
    }
    if let Some(k) = current(store, SERVICE).await? {
        return Ok(k);
    }
    let mut w = store.write().await?;
    // Another replica may have created it while this one waited.
    let row = sqlx::query("SELECT secret FROM signing_keys WHERE purpose = $1 AND retire_ms IS NULL ORDER BY created_ms DESC LIMIT 1")
        .bind(SERVICE)
        .fetch_optional(&mut *w.tx)
        .await?;
    if let Some(row) = row {
        let k = decode(&row.try_get::<String, _>("secret")?);
        w.commit().await?;
        return k.ok_or_else(|| sqlx::Error::Protocol("stored service key is malformed".into()));
    }
    let k = Key::generate();
    insert(&mut w, SERVICE, &k, "service").await?;
    w.commit().await?;
    Ok(k)
}

async fn insert(
    w: &mut crate::store::Write,
    purpose: &str,
    k: &Key,
    actor: &str,
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    sqlx::query("INSERT INTO signing_keys (kid, purpose, secret, public, created_ms, retire_ms) VALUES ($1, $2, $3, $4, $5, NULL)")
        .bind(&k.kid)
        .bind(purpose)
        .bind(STANDARD.encode(k.key.to_bytes()))
        .bind(hex(&k.key.verifying_key().to_bytes()))
        .bind(now)
        .execute(&mut *w.tx)
        .await?;
    let data = serde_json::json!({"kid": k.kid, "purpose": purpose}).to_string();
    w.audit(&NewEvent {
        at_ms: now,
        tenant: "*",
        actor,
        kind: "key.created",
        subject: &k.kid,
        data: &data,
    })
    .await?;
    Ok(())
}

fn decode(secret: &str) -> Option<Key> {
    let bytes: [u8; 32] = STANDARD.decode(secret).ok()?.try_into().ok()?;
    Some(Key::new(SigningKey::from_bytes(&bytes)))
}

/// The newest key of a purpose that is not retiring.
pub async fn current(store: &Store, purpose: &str) -> Result<Option<Key>, sqlx::Error> {
    let row = sqlx::query("SELECT secret FROM signing_keys WHERE purpose = $1 AND retire_ms IS NULL ORDER BY created_ms DESC LIMIT 1")
        .bind(purpose)
        .fetch_optional(store.pool())
        .await?;
    Ok(row
        .and_then(|r| r.try_get::<String, _>("secret").ok())
        .and_then(|s| decode(&s)))
}

/// The agent-token signing key, created on first use.
pub async fn token_key(store: &Store) -> Result<Key, sqlx::Error> {
    if let Some(k) = current(store, TOKEN).await? {
        return Ok(k);
    }
    rotate_token_key(store, 0, "service").await
}

/// A new agent-token key; the previous ones stay published for `overlap_ms`
/// so tokens they signed keep verifying until they expire.
pub async fn rotate_token_key(
    store: &Store,
    overlap_ms: i64,
    actor: &str,
) -> Result<Key, sqlx::Error> {
    let mut w = store.write().await?;
    let now = now_ms();
    if overlap_ms > 0 || actor != "service" {
        sqlx::query(
            "UPDATE signing_keys SET retire_ms = $1 WHERE purpose = $2 AND retire_ms IS NULL",
        )
        .bind(now.saturating_add(overlap_ms))
        .bind(TOKEN)
        .execute(&mut *w.tx)
        .await?;
    } else {
        // First use: another replica may have created one meanwhile.
        let row = sqlx::query("SELECT secret FROM signing_keys WHERE purpose = $1 AND retire_ms IS NULL ORDER BY created_ms DESC LIMIT 1")
            .bind(TOKEN)
            .fetch_optional(&mut *w.tx)
            .await?;
        if let Some(k) = row
            .and_then(|r| r.try_get::<String, _>("secret").ok())
            .and_then(|s| decode(&s))
        {
            w.commit().await?;
            return Ok(k);
        }
    }
    let k = Key::generate();
    insert(&mut w, TOKEN, &k, actor).await?;
    w.commit().await?;
    Ok(k)
}

/// The JWKS document: every agent-token key not yet retired.
pub async fn jwks(store: &Store) -> Result<serde_json::Value, sqlx::Error> {
    let rows = sqlx::query("SELECT kid, public FROM signing_keys WHERE purpose = $1 AND (retire_ms IS NULL OR retire_ms > $2) ORDER BY created_ms DESC")
        .bind(TOKEN)
        .bind(now_ms())
        .fetch_all(store.pool())
        .await?;
    let mut keys = Vec::new();
    for r in rows {
        let kid: String = r.try_get("kid")?;
        let public = crate::store::parse_hash(&r.try_get::<String, _>("public")?);
        keys.push(serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA",
            "kid": kid, "x": URL_SAFE_NO_PAD.encode(public),
        }));
    }
    Ok(serde_json::json!({ "keys": keys }))
}
