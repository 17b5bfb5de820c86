//! The store: one SQL database, SQLite (embedded, the default) or
//! PostgreSQL (several replicas), reached through sqlx's `Any` driver with
//! the same statements on both.
//!
//! Every state change runs in a [`Write`]: a transaction that first takes
//! the audit chain's head row. That one lock orders all writes, on one
//! process or many replicas, so each change and its audit record commit
//! together, and read-then-write logic (budgets, approvals) is atomic.

mod migrations;

use crate::audit::chain::{self, NewEvent};
use crate::error::Error;
use aegis_engine::trust::hex;
use sqlx::any::AnyPoolOptions;
use sqlx::{Any, AnyPool, Executor, Row, Transaction};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    pub dialect: Dialect,
}

/// What a database URL names, before connecting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbUrl {
    /// A SQLite file (created on first start).
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

impl DbUrl {
    pub fn parse(url: &str) -> Result<DbUrl, Error> {
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            let path = path.split('?').next().unwrap_or_default();
            if path.is_empty() {
                return Err(Error::DbUrl(url.to_owned()));
            }
            return Ok(DbUrl::Sqlite(path.into()));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DbUrl::Postgres(url.to_owned()));
        }
        Err(Error::DbUrl(url.to_owned()))
    }

    /// The URL without a password, for logs.
    pub fn redacted(&self) -> String {
        match self {
            DbUrl::Sqlite(p) => format!("sqlite://{}", p.display()),
            DbUrl::Postgres(u) => match (u.find("://"), u.rfind('@')) {
                (Some(s), Some(at)) if at > s => {
                    let user_pass = u.get(s + 3..at).unwrap_or_default();
                    let user = user_pass.split(':').next().unwrap_or_default();
                    format!(
                        "{}{}@{}",
                        u.get(..s + 3).unwrap_or_default(),
                        user,
                        u.get(at + 1..).unwrap_or_default()
                    )
                }
                _ => u.clone(),
            },
        }
    }
}

/// Whether a store error means "unreachable right now" (503) rather than
/// a bug or a constraint.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_)
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // PostgreSQL: 08 connection exceptions, 57P shutdown/cannot
            // connect now; SQLite: 5 busy, 6 locked.
            code.starts_with("08") || code.starts_with("57P") || code == "5" || code == "6"
        }
        _ => false,
    }
}

pub fn now_ms() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A random id with a readable prefix: `apr_3f9c...`.
pub fn new_id(prefix: &str) -> String {
    let mut b = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    format!("{prefix}_{}", hex(&b))
}

impl Store {
    /// Connects and applies pending migrations.
    pub async fn open(url: &DbUrl) -> Result<Store, Error> {
        sqlx::any::install_default_drivers();
        let (conn, dialect, max, wait) = match url {
            DbUrl::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                // Writers queue for the one connection: wait longer.
                (
                    format!("sqlite://{}?mode=rwc", path.display()),
                    Dialect::Sqlite,
                    1,
                    10,
                )
            }
            DbUrl::Postgres(u) => (u.clone(), Dialect::Postgres, 16, 3),
        };
        let pool = AnyPoolOptions::new()
            // SQLite has one writer anyway; one connection means no
            // SQLITE_BUSY between our own statements.
            .max_connections(max)
            // A stopped PostgreSQL must answer 503 quickly, not hang.
            .acquire_timeout(Duration::from_secs(wait))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        // WAL + FULL: a write acknowledged is on disk, and
                        // survives kill -9 and power loss.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = FULL").await?;
                        conn.execute("PRAGMA busy_timeout = 5000").await?;
                    }
                    Ok(())
                })
            })
            .connect(&conn)
            .await
            .map_err(|source| Error::Open {
                url: url.redacted(),
                source,
            })?;
        let store = Store { pool, dialect };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), Error> {
        let mut tx = self.pool.begin().await.map_err(Error::Migrate)?;
        if self.dialect == Dialect::Postgres {
            // Replicas starting together migrate one at a time.
            tx.execute("SELECT pg_advisory_xact_lock(7300611)")
                .await
                .map_err(Error::Migrate)?;
        }
        tx.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL)",
        )
        .await
        .map_err(Error::Migrate)?;
        let row = sqlx::query(
            "SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) AS v FROM schema_migrations",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(Error::Migrate)?;
        let current: i64 = row.try_get("v").map_err(Error::Migrate)?;
        for (version, statements) in migrations::MIGRATIONS {
            if *version <= current {
                continue;
            }
            for s in *statements {
                tx.execute(*s).await.map_err(Error::Migrate)?;
            }
            sqlx::query("INSERT INTO schema_migrations (version, applied_ms) VALUES ($1, $2)")
                .bind(*version)
                .bind(now_ms())
                .execute(&mut *tx)
                .await
                .map_err(Error::Migrate)?;
        }
        tx.commit().await.map_err(Error::Migrate)?;
        Ok(())
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Whether the store answers a trivial query (readiness).
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .fetch_one(&self.pool)
            .await
            .map(|_| ())
    }

    /// Starts a write: a transaction holding the audit head.
    pub async fn write(&self) -> Result<Write, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        // A no-op UPDATE takes the row lock (PostgreSQL) or the database's
        // write lock (SQLite) before anything is read.
        let row = sqlx::query("UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash")
            .fetch_one(&mut *tx)
            .await?;
        let seq: i64 = row.try_get("seq")?;
        let hash = parse_hash(&row.try_get::<String, _>("hash")?);
        Ok(Write {
            tx,
            seq,
            hash,
            appended: false,
        })
    }
}

pub fn parse_hash(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    let bytes = s.as_bytes();
    for (i, o) in out.iter_mut().enumerate() {
        let hi = bytes.get(2 * i).and_then(|c| (*c as char).to_digit(16));
        let lo = bytes.get(2 * i + 1).and_then(|c| (*c as char).to_digit(16));
        if let (Some(h), Some(l)) = (hi, lo) {
            *o = u8::try_from(h * 16 + l).unwrap_or(0);
        }
    }
    out
}

/// A transaction in progress that may append audit events.
pub struct Write {
    pub tx: Transaction<'static, Any>,
    seq: i64,
    hash: [u8; 32],
    appended: bool,
}

impl Write {
    /// Appends one event to the chain, in this transaction.
    pub async fn audit(&mut self, e: &NewEvent<'_>) -> Result<i64, sqlx::Error> {
        let seq = self.seq + 1;
        let r = chain::link(seq, self.hash, e);
        sqlx::query(
            "INSERT INTO audit (seq, at_ms, tenant, actor, kind, subject, data, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(r.seq)
        .bind(r.at_ms)
        .bind(&r.tenant)
        .bind(&r.actor)
        .bind(&r.kind)
        .bind(&r.subject)
        .bind(&r.data)
        .bind(hex(&r.prev_hash))
        .bind(hex(&r.hash))
        .execute(&mut *self.tx)
        .await?;
        self.seq = seq;
        self.hash = r.hash;
        self.appended = true;
        Ok(seq)
    }

    /// The chain's head after this write's events.
    pub fn head(&self) -> (i64, [u8; 32]) {
        (self.seq, self.hash)
    }

    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        if self.appended {
            sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
                .bind(self.seq)
                .bind(hex(&self.hash))
                .execute(&mut *self.tx)
                .await?;
        }
        self.tx.commit().await
    }
}
