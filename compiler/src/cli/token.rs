//! `aegis token issue ...`: print a signed agent JWT.

use super::{Error, EXIT_CODES};
use crate::token::parse_ttl;
use aegis_engine::jwt::issue::{issue, TokenRequest};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Issue a short-lived EdDSA JWT for an agent.
    #[command(after_help = EXIT_CODES)]
    Issue(Args),
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, value_name = "PREFIX.key")]
    key: PathBuf,
    #[arg(long)]
    kid: String,
    #[arg(long)]
    issuer: String,
    #[arg(long)]
    audience: String,
    #[arg(long)]
    agent: String,
    #[arg(long)]
    tenant: Option<String>,
    #[arg(long)]
    scope: Option<String>,
    /// Lifetime: `30s`, `15m`, `1h`, `2d` or seconds.
    #[arg(long, default_value = "15m")]
    ttl: String,
}

pub fn run(a: &Args) -> Result<ExitCode, Error> {
    let ttl = parse_ttl(&a.ttl).map_err(Error::input)?;
    let key = crate::keys::read_signing_key(&a.key).map_err(Error::input)?;
    let token = issue(
        &key,
        &TokenRequest {
            kid: &a.kid,
            issuer: &a.issuer,
            audience: &a.audience,
            agent: &a.agent,
            tenant: a.tenant.as_deref(),
            scope: a.scope.as_deref(),
            ttl_secs: ttl,
            now: aegis_cases::runner::now_unix(),
        },
    );
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}
