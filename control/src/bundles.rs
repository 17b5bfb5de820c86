//! The bundle store: signed policy bundles with a strictly increasing
//! signed revision (a published bundle never goes back), the current one
//! cached per replica and re-read when another replica publishes.

use crate::audit::chain::NewEvent;
use crate::error::ApiError;
use crate::store::{now_ms, Store};
use aegis_engine::trust::hex;
use aegis_engine::{Bundle, Envelope};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sqlx::Row;
use std::sync::{Arc, RwLock};

/// Largest bundle accepted by `POST /v1/bundles`.
pub const MAX_BUNDLE_BYTES: usize = 16 << 20;

/// Agents whose policy names no tenant belong to this one in the API.
pub const DEFAULT_TENANT: &str = "default";

pub struct Current {
    pub revision: i64,
    pub hash: String,
    pub policy_version: String,
    pub etag: String,
    pub bytes: Arc<Vec<u8>>,
    pub bundle: Bundle,
}

#[derive(Default)]
pub struct Cache {
    current: RwLock<Option<Arc<Current>>>,
}

fn parse(bytes: Vec<u8>, trusted: &[[u8; 32]]) -> Result<Current, String> {
    let bundle = Bundle::load(&bytes, trusted).map_err(|e| e.to_string())?;
    let revision =
        i64::try_from(bundle.revision()).map_err(|_| "revision is too large".to_owned())?;
    let hash = bundle.hash_hex();
    Ok(Current {
        revision,
        etag: format!("\"r{revision}-{}\"", hash.get(..16).unwrap_or_default()),
        policy_version: bundle.policy_version().to_owned(),
        hash,
        bytes: Arc::new(bytes),
        bundle,
    })
}

impl Cache {
    /// The newest published bundle, if any.
    pub async fn current(&self, store: &Store) -> Result<Option<Arc<Current>>, sqlx::Error> {
        let newest = sqlx::query("SELECT revision FROM bundles ORDER BY revision DESC LIMIT 1")
            .fetch_optional(store.pool())
            .await?;
        let Some(newest) = newest else {
            return Ok(None);
        };
        let revision: i64 = newest.try_get("revision")?;
        if let Ok(guard) = self.current.read() {
            if let Some(c) = guard.as_ref().filter(|c| c.revision == revision) {
                return Ok(Some(c.clone()));
            }
        }
        let row = sqlx::query("SELECT bytes FROM bundles WHERE revision = $1")
            .bind(revision)
            .fetch_one(store.pool())
            .await?;
        let bytes = STANDARD
            .decode(row.try_get::<String, _>("bytes")?)
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        // Stored bundles were verified when published; the signature is
        // checked again by every gateway that loads them.
        let current = parse(bytes, &[])
            .map_err(|e| sqlx::Error::Protocol(format!("stored bundle r{revision}: {e}")))?;
        let current = Arc::new(current);
        if let Ok(mut guard) = self.current.write() {
            *guard = Some(current.clone());
        }
        Ok(Some(current))
    }

    /// An agent's daily limit in micro-dollars from the current bundle.
    pub async fn daily_limit_micros(
        &self,
        store: &Store,
        tenant: &str,
        agent: &str,
    ) -> Result<i64, ApiError> {
        let current = self.current(store).await?.ok_or_else(|| {
            ApiError::conflict(
                "no_bundle",
                "no policy bundle is published yet; budgets come from it",
            )
        })?;
        let budget = if tenant == DEFAULT_TENANT {
            current
                .bundle
                .budget(None, agent)
                .or_else(|| current.bundle.budget(Some(tenant), agent))
        } else {
            current.bundle.budget(Some(tenant), agent)
        };
        let daily = budget.and_then(|b| b.daily_usd).ok_or_else(|| {
            ApiError::not_found(format!(
                "agent `{agent}` of tenant `{tenant}` has no `budget.daily_usd` in policy revision {}",
                current.revision
            ))
        })?;
        crate::api::micros("budget.daily_usd", daily)
    }
}

/// Why a publish was refused.
#[derive(Debug)]
pub enum PublishError {
    Invalid(String),
    Unsigned,
    Untrusted(String),
    NotNewer { revision: i64, current: i64 },
    Store(sqlx::Error),
}

impl From<sqlx::Error> for PublishError {
    fn from(e: sqlx::Error) -> Self {
        PublishError::Store(e)
    }
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Invalid(why) => ApiError::bad_request("invalid_bundle", format!("not a valid bundle: {why}")),
            PublishError::Unsigned => ApiError::bad_request("unsigned_bundle", "the bundle is not signed; build it with `aegis build --key`"),
            PublishError::Untrusted(fp) => ApiError::forbidden(
                "untrusted_signer",
                format!("the bundle is signed by key `{fp}`, which this service does not trust (`aegis serve --trust`)"),
            ),
            PublishError::NotNewer { revision, current } => ApiError::conflict(
                "stale_revision",
                format!("bundle revision {revision} is not greater than the current revision {current}; rebuild it (the revision is signed)"),
            ),
            PublishError::Store(e) => e.into(),
        }
    }
}

/// Stores `bytes` as the new current bundle if it is signed by a trusted
/// key and its revision is greater than every published one.
pub async fn publish(
    store: &Store,
    cache: &Cache,
    bytes: Vec<u8>,
    trusted: &[[u8; 32]],
    actor: &str,
) -> Result<Arc<Current>, PublishError> {
    let env = Envelope::parse(&bytes).map_err(|e| PublishError::Invalid(e.to_string()))?;
    let signer = env.signer.ok_or(PublishError::Unsigned)?;
    if !trusted.contains(&signer) {
        return Err(PublishError::Untrusted(
            aegis_engine::trust::key_fingerprint(&signer),
        ));
    }
    let current = parse(bytes, trusted).map_err(PublishError::Invalid)?;
    let now = now_ms();
    let mut w = store.write().await?;
    let newest = sqlx::query("SELECT CAST(COALESCE(MAX(revision), 0) AS BIGINT) AS r FROM bundles")
        .fetch_one(&mut *w.tx)
        .await?
        .try_get::<i64, _>("r")?;
    if current.revision <= newest {
        return Err(PublishError::NotNewer {
            revision: current.revision,
            current: newest,
        });
    }
    sqlx::query("INSERT INTO bundles (revision, hash, signer, policy_version, bytes, published_ms, published_by) VALUES ($1, $2, $3, $4, $5, $6, $7)")
        .bind(current.revision)
        .bind(&current.hash)
        .bind(hex(&signer))
        .bind(&current.policy_version)
        .bind(STANDARD.encode(current.bytes.as_slice()))
        .bind(now)
        .bind(actor)
        .execute(&mut *w.tx)
        .await?;
    let data = serde_json::json!({"revision": current.revision, "hash": current.hash, "policy_version": current.policy_version,
                                  "signer": aegis_engine::trust::key_fingerprint(&signer), "bytes": current.bytes.len()})
    .to_string();
    w.audit(&NewEvent {
        at_ms: now,
        tenant: "*",
        actor,
        kind: "bundle.published",
        subject: &current.revision.to_string(),
        data: &data,
    })
    .await?;
    w.commit().await?;
    let current = Arc::new(current);
    if let Ok(mut guard) = cache.current.write() {
        *guard = Some(current.clone());
    }
    Ok(current)
}
