//! aegis-control: the control plane behind `aegis serve`.
//!
//! The filter calls it only for budgets and approvals (and polls it for
//! new bundles); people and CI call it to decide approvals, create agent
//! credentials, publish bundles and read the audit log. State lives in
//! SQLite (default) or PostgreSQL (several replicas); see `store`.

mod api;
mod audit;
mod auth;
mod bundles;
mod call;
mod dashboard;
pub use dashboard::explain_diff;
mod day;
pub use day::utc_day;
mod error;
mod extract;
mod keys;
mod metrics;
mod notify;
mod server;
mod state;
mod store;

pub use audit::chain::{Break, BreakKind, Record, Report};
pub use auth::Role;
pub use error::{ApiError, Error};
pub use notify::NotifyConfig;
pub use store::DbUrl;

use ed25519_dalek::SigningKey;
use std::path::PathBuf;
use std::sync::Arc;

/// Builds the bundle `aegis serve --policies` starts with: given the
/// service key (to sign it) and the revision it must exceed.
pub type PolicySource = Box<dyn FnOnce(&SigningKey, u64) -> Result<Vec<u8>, String> + Send>;

/// How `aegis serve` runs.
pub struct Config {
    pub db: DbUrl,
    pub listen: String,
    /// The service key; `None`: the one in the store (created on first
    /// start), shared by every replica.
    pub service_key: Option<SigningKey>,
    /// Keys whose bundles `POST /v1/bundles` accepts (the service key is
    /// always trusted).
    pub trusted_publishers: Vec<[u8; 32]>,
    pub policies: Option<PolicySource>,
    /// Where the first start writes an admin token (mode 0600).
    pub admin_token_file: Option<PathBuf>,
    /// The URL clients reach this service at (for approval status URLs).
    pub public_url: Option<String>,
    pub issuer: String,
    pub audience: String,
    pub token_ttl_secs: u64,
    pub lease_ttl_secs: i64,
    pub approval_ttl_secs: i64,
    pub checkpoint_every_secs: u64,
    pub body_limit: usize,
    /// Where approvals are announced (`aegis serve --notify`).
    pub notify: Option<notify::NotifyConfig>,
}

impl Config {
    pub fn new(db: DbUrl) -> Config {
        Config {
            db,
            listen: "127.0.0.1:9000".into(),
            service_key: None,
            trusted_publishers: Vec::new(),
            policies: None,
            admin_token_file: None,
            public_url: None,
            issuer: "aegis-control".into(),
            audience: "aegis".into(),
            token_ttl_secs: 900,
            lease_ttl_secs: 300,
            approval_ttl_secs: 3600,
            checkpoint_every_secs: 60,
            body_limit: 64 * 1024,
            notify: None,
        }
    }
}

/// Settings every handler reads.
pub struct Settings {
    pub public_url: String,
    pub issuer: String,
    pub audience: String,
    pub token_ttl_secs: u64,
    pub lease_ttl_secs: i64,
    pub approval_ttl_secs: i64,
    pub body_limit: usize,
    pub trusted: Vec<[u8; 32]>,
}

impl Settings {
    fn trusted_publishers(&self, keys: &keys::Keys) -> Vec<[u8; 32]> {
        let mut t = self.trusted.clone();
        t.push(keys.service.key.verifying_key().to_bytes());
        t
    }
}

/// Logs as JSON lines on stderr (`RUST_LOG` filters; default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs the service until SIGINT / SIGTERM.
pub async fn serve(cfg: Config) -> Result<(), Error> {
    // Checked (and its secrets read) before anything else starts.
    let notifier = match cfg.notify {
        Some(n) => notify::Notifier::resolve(n)?,
        None => notify::Notifier::none(),
    };
    let store = store::Store::open(&cfg.db).await?;
    let service = keys::service_key(&store, cfg.service_key).await?;
    let keys = keys::Keys { service };
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .map_err(|source| Error::Listen {
            addr: cfg.listen.clone(),
            source,
        })?;
    let local = listener.local_addr()?;
    let settings = Arc::new(Settings {
        public_url: cfg.public_url.unwrap_or_else(|| format!("http://{local}")),
        issuer: cfg.issuer,
        audience: cfg.audience,
        token_ttl_secs: cfg.token_ttl_secs,
        lease_ttl_secs: cfg.lease_ttl_secs,
        approval_ttl_secs: cfg.approval_ttl_secs,
        body_limit: cfg.body_limit,
        trusted: cfg.trusted_publishers,
    });
    let state = state::AppState {
        store: store.clone(),
        keys: keys.clone(),
        settings: settings.clone(),
        metrics: Arc::default(),
        approvals_changed: Arc::default(),
        bundles: Arc::default(),
        notify: Arc::new(notifier),
    };
    if let Some(build) = cfg.policies {
        start_bundle(&state, build).await?;
    }
    if let Some(path) = &cfg.admin_token_file {
        bootstrap_admin(&store, &keys, path).await?;
    }
    spawn_housekeeping(state.clone(), cfg.checkpoint_every_secs);
    notify::outbox::spawn(state.clone());
    tracing::info!(listen = %local, store = %cfg.db.redacted(), service_kid = %keys.service.kid, "aegis serve ready");
    // Tests and scripts wait for this line on stdout.
    println!("listening on http://{local}");
    server::run(state, listener).await?;
    // A final checkpoint covers everything acknowledged before shutdown.
    let _ = audit::checkpoint(&store, &keys.service.key).await;
    Ok(())
}

async fn start_bundle(state: &state::AppState, build: PolicySource) -> Result<(), Error> {
    let current = state.bundles.current(&state.store).await?;
    let after = current
        .as_ref()
        .map_or(0, |c| u64::try_from(c.revision).unwrap_or(0));
    let bytes = build(&state.keys.service.key, after).map_err(Error::Bundle)?;
    let fresh =
        aegis_engine::Bundle::load(&bytes, &[]).map_err(|e| Error::Bundle(e.to_string()))?;
    // The hash covers the revision; the policy version is the policies'
    // own content hash.
    if current
        .as_ref()
        .is_some_and(|c| c.policy_version == fresh.policy_version())
    {
        tracing::info!(
            revision = current.as_ref().map_or(0, |c| c.revision),
            "policies unchanged since the current bundle"
        );
        return Ok(());
    }
    let trusted = state.settings.trusted_publishers(&state.keys);
    let published = bundles::publish(&state.store, &state.bundles, bytes, &trusted, "service")
        .await
        .map_err(|e| Error::Bundle(ApiError::from(e).message))?;
    tracing::info!(revision = published.revision, policy_version = %published.policy_version, "published the bundle of --policies");
    Ok(())
}

/// Writes an admin token for all tenants to `path` (mode 0600) unless the
/// file exists.
async fn bootstrap_admin(
    store: &store::Store,
    keys: &keys::Keys,
    path: &std::path::Path,
) -> Result<(), Error> {
    if path.exists() {
        return Ok(());
    }
    let token = admin_token_with(keys, Role::Admin, "*", "bootstrap", 30 * 86_400);
    write_private(path, &token)?;
    let mut w = store.write().await?;
    let data =
        serde_json::json!({"path": path.display().to_string(), "role": "admin", "tenant": "*"})
            .to_string();
    w.audit(&audit::chain::NewEvent {
        at_ms: store::now_ms(),
        tenant: "*",
        actor: "service",
        kind: "token.bootstrap",
        subject: "admin:bootstrap",
        data: &data,
    })
    .await?;
    w.commit().await?;
    tracing::info!(path = %path.display(), "wrote a bootstrap admin token");
    Ok(())
}

fn write_private(path: &std::path::Path, text: &str) -> Result<(), Error> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    Ok(())
}

fn admin_token_with(
    keys: &keys::Keys,
    role: Role,
    tenant: &str,
    subject: &str,
    ttl_secs: i64,
) -> String {
    let now = store::now_ms() / 1000;
    auth::issue(
        &keys.service.key,
        &keys.service.kid,
        &auth::Claims {
            iss: auth::SERVICE_AUDIENCE.into(),
            aud: auth::SERVICE_AUDIENCE.into(),
            sub: subject.into(),
            role,
            tenant: tenant.into(),
            iat: now,
            exp: now.saturating_add(ttl_secs),
        },
    )
}

/// The store of a running (or stopped) service, for the admin commands:
/// a SQLite file that does not exist is a mistyped `--db`, not a new store
/// to create (a token signed by a fresh key would fool no one but the
/// person holding it).
async fn open_existing(db: &DbUrl) -> Result<store::Store, Error> {
    if let DbUrl::Sqlite(path) = db {
        if !path.exists() {
            return Err(Error::Usage(format!(
                "no store at `{}`: pass the `--db` that `aegis serve` uses",
                path.display()
            )));
        }
    }
    store::Store::open(db).await
}

/// `aegis admin token`: a service token signed with the store's service
/// key (or `key`), for bootstrapping and scripts.
pub async fn admin_token(
    db: &DbUrl,
    key: Option<SigningKey>,
    role: Role,
    tenant: &str,
    subject: &str,
    ttl_secs: i64,
) -> Result<String, Error> {
    if !auth::valid_tenant(tenant) {
        return Err(Error::Usage(format!(
            "tenant `{tenant}` is not a tenant: use a name of 1 to 200 printable characters, or `*` for all"
        )));
    }
    let store = open_existing(db).await?;
    let service = keys::service_key(&store, key).await?;
    let keys = keys::Keys { service };
    let token = admin_token_with(&keys, role, tenant, subject, ttl_secs);
    let mut w = store.write().await?;
    let data = serde_json::json!({"role": role.as_str(), "tenant": tenant, "ttl_secs": ttl_secs})
        .to_string();
    w.audit(&audit::chain::NewEvent {
        at_ms: store::now_ms(),
        tenant,
        actor: "admin:cli",
        kind: "token.service_issued",
        subject,
        data: &data,
    })
    .await?;
    w.commit().await?;
    Ok(token)
}

/// `aegis audit verify --db`: the chain checked straight from the store.
pub async fn verify_audit(db: &DbUrl, key: Option<SigningKey>) -> Result<Report, Error> {
    let store = open_existing(db).await?;
    let service = keys::service_key(&store, key).await?;
    Ok(audit::verify(&store, &[service.key.verifying_key().to_bytes()]).await?)
}

/// `aegis audit export --db`: events after `since` as `(seq, JSON line)`,
/// in `format` `jsonl` (the records) or `ocsf` (OCSF API Activity).
pub async fn export_audit(
    db: &DbUrl,
    since: i64,
    limit: i64,
    format: &str,
) -> Result<Vec<(i64, String)>, Error> {
    let store = open_existing(db).await?;
    let records = audit::records(&store, since, limit, None).await?;
    Ok(records
        .iter()
        .map(|r| (r.seq, audit::render(r, format).to_string()))
        .collect())
}

/// Expires leases and approvals past their time and signs checkpoints.
fn spawn_housekeeping(state: state::AppState, checkpoint_every: u64) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        let mut last_cp = std::time::Instant::now();
        loop {
            tick.tick().await;
            if let Ok(mut w) = state.store.write().await {
                let ok = api::budgets::expire_due(&mut w, &state, None, store::now_ms())
                    .await
                    .is_ok();
                if ok {
                    let _ = w.commit().await;
                }
            }
            if let Err(e) = api::approvals::expire_due(&state, store::now_ms()).await {
                tracing::warn!(error = %e, "cannot record expired approvals");
            }
            if last_cp.elapsed().as_secs() >= checkpoint_every {
                last_cp = std::time::Instant::now();
                if let Err(e) = audit::checkpoint(&state.store, &state.keys.service.key).await {
                    tracing::warn!(error = %e, "audit checkpoint failed");
                }
            }
        }
    });
}
