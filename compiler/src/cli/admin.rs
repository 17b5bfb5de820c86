//! `aegis admin token`: a service token straight from the store, for
//! bootstrapping a deployment and for scripts.

use super::{Error, EXIT_CODES};
use aegis_control::{DbUrl, Role};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Print a service token (role and tenant) signed with the service key.
    #[command(after_help = EXIT_CODES)]
    Token(TokenArgs),
}

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    #[arg(long, default_value = "sqlite://aegis.db", env = "AEGIS_DB")]
    db: String,
    /// admin, approver, viewer or gateway.
    #[arg(long)]
    role: String,
    /// A tenant, or `*` for all.
    #[arg(long, default_value = "*")]
    tenant: String,
    /// Who the token is for (the audit log names them).
    #[arg(long, default_value = "cli")]
    subject: String,
    #[arg(long, default_value = "1d")]
    ttl: String,
    /// The service key, when `aegis serve` runs with `--key`.
    #[arg(long, value_name = "PREFIX.key")]
    key: Option<PathBuf>,
}

pub fn token(a: &TokenArgs) -> Result<ExitCode, Error> {
    let db = DbUrl::parse(&a.db).map_err(Error::input)?;
    let role = Role::parse(&a.role).ok_or_else(|| {
        Error::input(format_args!(
            "unknown role `{}`: use admin, approver, viewer or gateway",
            a.role
        ))
    })?;
    let ttl = crate::token::parse_ttl(&a.ttl).map_err(Error::input)?;
    let key = a
        .key
        .as_deref()
        .map(crate::keys::read_signing_key)
        .transpose()
        .map_err(Error::input)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::input(format_args!("cannot start the runtime: {e}")))?;
    let token = rt
        .block_on(aegis_control::admin_token(
            &db,
            key,
            role,
            &a.tenant,
            &a.subject,
            i64::try_from(ttl).unwrap_or(i64::MAX),
        ))
        .map_err(Error::input)?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}
