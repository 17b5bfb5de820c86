//! `aegis serve`: run the control plane (budgets, approvals, tokens,
//! bundles, audit) on SQLite or PostgreSQL.

use super::{Error, EXIT_CODES};
use crate::frontend;
use aegis_control::{Config, DbUrl};
use aegis_engine::builder::bundle::{compile, BuildOptions};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_CODES)]
pub struct Args {
    /// Policies to compile and publish at start (budgets come from them).
    #[arg(long, value_name = "PATH")]
    policies: Vec<PathBuf>,
    /// `sqlite://FILE` (created on first start) or `postgres://...`.
    #[arg(long, default_value = "sqlite://aegis.db", env = "AEGIS_DB")]
    db: String,
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: String,
    /// Service key (PREFIX.key); default: the one kept in the store,
    /// created on first start and shared by every replica.
    #[arg(long, value_name = "PREFIX.key")]
    key: Option<PathBuf>,
    /// Public key (PREFIX.pub) whose signed bundles `aegis publish` may
    /// upload; repeat for several.
    #[arg(long, value_name = "PREFIX.pub")]
    trust: Vec<PathBuf>,
    /// Where the first start writes an admin token (mode 0600); default:
    /// next to a SQLite file, else `aegis-admin.token`.
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// URL clients reach this service at (for approval status URLs).
    #[arg(long)]
    public_url: Option<String>,
    /// `iss` of the agent tokens of `POST /v1/tokens`.
    #[arg(long, default_value = "aegis-control")]
    issuer: String,
    /// `aud` of the agent tokens.
    #[arg(long, default_value = "aegis")]
    audience: String,
    /// Lifetime of agent tokens.
    #[arg(long, default_value = "15m")]
    token_ttl: String,
    /// Lifetime of a budget lease not settled.
    #[arg(long, default_value = "5m")]
    lease_ttl: String,
    /// How long an approval may wait for a decision and its redemption.
    #[arg(long, default_value = "1h")]
    approval_ttl: String,
    /// How often the audit chain's head is signed.
    #[arg(long, default_value = "1m")]
    checkpoint_every: String,
    /// Where approvals are announced: Slack, Teams, signed webhooks (YAML;
    /// docs/control-plane.md, "Notifications").
    #[arg(long, value_name = "FILE")]
    notify: Option<PathBuf>,
}

fn secs(flag: &str, v: &str) -> Result<u64, Error> {
    crate::token::parse_ttl(v).map_err(|e| Error::input(format_args!("--{flag}: {e}")))
}

pub fn run(a: &Args) -> Result<ExitCode, Error> {
    let db = DbUrl::parse(&a.db).map_err(Error::input)?;
    let mut cfg = Config::new(db.clone());
    cfg.listen.clone_from(&a.listen);
    cfg.service_key = a
        .key
        .as_deref()
        .map(crate::keys::read_signing_key)
        .transpose()
        .map_err(Error::input)?;
    for p in &a.trust {
        let vk = crate::keys::read_verifying_key(p).map_err(Error::input)?;
        cfg.trusted_publishers.push(vk.to_bytes());
    }
    cfg.admin_token_file = Some(a.admin_token_file.clone().unwrap_or_else(|| match &db {
        DbUrl::Sqlite(path) => with_suffix(path, ".admin.token"),
        DbUrl::Postgres(_) => PathBuf::from("aegis-admin.token"),
    }));
    cfg.public_url.clone_from(&a.public_url);
    cfg.issuer.clone_from(&a.issuer);
    cfg.audience.clone_from(&a.audience);
    cfg.token_ttl_secs = secs("token-ttl", &a.token_ttl)?;
    cfg.lease_ttl_secs = i64::try_from(secs("lease-ttl", &a.lease_ttl)?).unwrap_or(i64::MAX);
    cfg.approval_ttl_secs =
        i64::try_from(secs("approval-ttl", &a.approval_ttl)?).unwrap_or(i64::MAX);
    cfg.checkpoint_every_secs = secs("checkpoint-every", &a.checkpoint_every)?;
    cfg.notify = a.notify.as_deref().map(read_notify).transpose()?;
    if !a.policies.is_empty() {
        // Checked now, so a bad policy stops the start with its diagnostics.
        let loaded = frontend::load(&a.policies, None)
            .map_err(|d| Error::diagnostics(d, super::Format::Human, false))?;
        super::print_diagnostics(&loaded.warnings, super::Format::Human, false);
        cfg.policies = Some(Box::new(move |key, after| {
            let opts = BuildOptions {
                dlp_hash_key: crate::keys::dlp_hash_key(Some(key)),
                revision: aegis_cases::runner::now_unix()
                    .unsigned_abs()
                    .max(after + 1),
            };
            compile(&loaded.policy, &opts, Some(key)).map_err(|e| e.to_string())
        }));
    }
    aegis_control::init_logging();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::input(format_args!("cannot start the runtime: {e}")))?;
    rt.block_on(aegis_control::serve(cfg))
        .map_err(Error::input)?;
    Ok(ExitCode::SUCCESS)
}

/// Reads the `--notify` file: unknown keys and bad values are refused,
/// pointing at `file:line:col`.
fn read_notify(path: &Path) -> Result<aegis_control::NotifyConfig, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::input(format_args!("cannot read `{}`: {e}", path.display())))?;
    let options = serde_saphyr::options! {
        strict_booleans: true,
        with_snippet: false,
    };
    serde_saphyr::from_str_with_options(&text, options).map_err(|e| {
        let message = e.without_snippet().to_string();
        // The parser appends " at line X, column Y": the location goes
        // in front instead.
        let message = message
            .rfind(" at line ")
            .and_then(|i| message.get(..i))
            .unwrap_or(&message)
            .trim()
            .trim_end_matches('.')
            .to_owned();
        match e.location() {
            Some(loc) => Error::input(format_args!(
                "{}:{}:{}: {message}",
                path.display(),
                loc.line(),
                loc.column()
            )),
            None => Error::input(format_args!("{}: {message}", path.display())),
        }
    })
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}
