//! The audit log: every control-plane event in one hash chain (see
//! [`chain`]), with checkpoints signed by the service key, read back for
//! verification and export ([`ocsf`]).

pub mod chain;
pub mod ocsf;

use crate::store::{now_ms, parse_hash, Store};
use aegis_engine::trust::hex;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chain::{Checkpoint, Record};
use ed25519_dalek::SigningKey;
use sqlx::any::AnyRow;
use sqlx::Row;

/// One record as exported: the record itself (`jsonl`) or an OCSF API
/// Activity event (`ocsf`).
pub fn render(r: &Record, format: &str) -> serde_json::Value {
    if format == "ocsf" {
        ocsf::api_activity(r, env!("CARGO_PKG_VERSION"))
    } else {
        serde_json::to_value(r).unwrap_or(serde_json::Value::Null)
    }
}

fn record(r: &AnyRow) -> Result<Record, sqlx::Error> {
    Ok(Record {
        seq: r.try_get("seq")?,
        at_ms: r.try_get("at_ms")?,
        tenant: r.try_get("tenant")?,
        actor: r.try_get("actor")?,
        kind: r.try_get("kind")?,
        subject: r.try_get("subject")?,
        data: r.try_get("data")?,
        prev_hash: parse_hash(&r.try_get::<String, _>("prev_hash")?),
        hash: parse_hash(&r.try_get::<String, _>("hash")?),
    })
}

/// Records after `since`, oldest first, at most `limit`, of one tenant
/// (`None`: all).
pub async fn records(
    store: &Store,
    since: i64,
    limit: i64,
    tenant: Option<&str>,
) -> Result<Vec<Record>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT seq, at_ms, tenant, actor, kind, subject, data, prev_hash, hash FROM audit \
         WHERE seq > $1 AND ($2 = '' OR tenant = $2) ORDER BY seq LIMIT $3",
    )
    .bind(since)
    .bind(tenant.unwrap_or(""))
    .bind(limit)
    .fetch_all(store.pool())
    .await?;
    rows.iter().map(record).collect()
}

/// Which records a search returns (empty strings: any).
#[derive(Debug, Default, Clone)]
pub struct Filter {
    /// One tenant's records only; empty: all.
    pub tenant: String,
    pub kind: String,
    pub actor: String,
    pub subject: String,
    /// Text found, ignoring ASCII case, in the kind, actor, subject or data.
    pub text: String,
    /// Records after this seq, oldest first ...
    pub since: i64,
    /// ... or, when set, records before this seq, newest first.
    pub before: Option<i64>,
    pub limit: i64,
}

/// `text` as a `LIKE` pattern matching it anywhere, with `%`, `_` and the
/// escape character taken literally.
fn like_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// Records matching `f`: the audit page and `GET /v1/audit` with filters.
pub async fn search(store: &Store, f: &Filter) -> Result<Vec<Record>, sqlx::Error> {
    let (bound, order) = match f.before {
        Some(_) => ("seq < $1", "DESC"),
        None => ("seq > $1", "ASC"),
    };
    let pattern = if f.text.is_empty() {
        String::new()
    } else {
        like_pattern(&f.text)
    };
    let sql = format!(
        "SELECT seq, at_ms, tenant, actor, kind, subject, data, prev_hash, hash FROM audit \
         WHERE {bound} AND ($2 = '' OR tenant = $2) AND ($3 = '' OR kind = $3) AND ($4 = '' OR actor = $4) \
         AND ($5 = '' OR subject = $5) AND ($6 = '' OR LOWER(kind) LIKE $6 ESCAPE '\\' OR LOWER(actor) LIKE $6 ESCAPE '\\' \
         OR LOWER(subject) LIKE $6 ESCAPE '\\' OR LOWER(data) LIKE $6 ESCAPE '\\') ORDER BY seq {order} LIMIT $7"
    );
    let rows = sqlx::query(&sql)
        .bind(f.before.unwrap_or(f.since))
        .bind(&f.tenant)
        .bind(&f.kind)
        .bind(&f.actor)
        .bind(&f.subject)
        .bind(&pattern)
        .bind(f.limit)
        .fetch_all(store.pool())
        .await?;
    rows.iter().map(record).collect()
}

pub async fn checkpoints(store: &Store) -> Result<Vec<Checkpoint>, sqlx::Error> {
    let rows = sqlx::query("SELECT seq, hash, at_ms, key, sig FROM audit_checkpoints ORDER BY seq")
        .fetch_all(store.pool())
        .await?;
    let mut out = Vec::new();
    for r in rows {
        let key = parse_hash(&r.try_get::<String, _>("key")?);
        let sig_b = STANDARD
            .decode(r.try_get::<String, _>("sig")?)
            .unwrap_or_default();
        let mut sig = [0u8; 64];
        if let Some(dst) = sig.get_mut(..sig_b.len().min(64)) {
            dst.copy_from_slice(sig_b.get(..dst.len()).unwrap_or_default());
        }
        out.push(Checkpoint {
            seq: r.try_get("seq")?,
            hash: parse_hash(&r.try_get::<String, _>("hash")?),
            at_ms: r.try_get("at_ms")?,
            key,
            sig,
        });
    }
    Ok(out)
}

/// The head the store recorded apart from the rows.
pub async fn head(store: &Store) -> Result<(i64, [u8; 32]), sqlx::Error> {
    let r = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_one(store.pool())
        .await?;
    Ok((
        r.try_get("seq")?,
        parse_hash(&r.try_get::<String, _>("hash")?),
    ))
}

/// Verifies the whole chain against the checkpoints signed by `trusted`.
pub async fn verify(store: &Store, trusted: &[[u8; 32]]) -> Result<chain::Report, sqlx::Error> {
    let mut all = Vec::new();
    let mut since = 0;
    loop {
        let batch = records(store, since, 5000, None).await?;
        let Some(last) = batch.last() else { break };
        since = last.seq;
        all.extend(batch);
    }
    let cps = checkpoints(store).await?;
    let head = head(store).await?;
    Ok(chain::verify(all, &cps, trusted, Some(head)))
}

/// Signs a checkpoint of the current head when records were added since
/// the last one. Taken under the write lock so the head cannot move.
pub async fn checkpoint(store: &Store, key: &SigningKey) -> Result<Option<i64>, sqlx::Error> {
    let mut w = store.write().await?;
    let (seq, hash) = w.head();
    let last =
        sqlx::query("SELECT CAST(COALESCE(MAX(seq), 0) AS BIGINT) AS s FROM audit_checkpoints")
            .fetch_one(&mut *w.tx)
            .await?
            .try_get::<i64, _>("s")?;
    if seq == 0 || seq <= last {
        w.commit().await?;
        return Ok(None);
    }
    let cp = chain::sign_checkpoint(key, seq, hash, now_ms());
    sqlx::query(
        "INSERT INTO audit_checkpoints (seq, hash, at_ms, key, sig) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(cp.seq)
    .bind(hex(&cp.hash))
    .bind(cp.at_ms)
    .bind(hex(&cp.key))
    .bind(STANDARD.encode(cp.sig))
    .execute(&mut *w.tx)
    .await?;
    w.commit().await?;
    Ok(Some(seq))
}
