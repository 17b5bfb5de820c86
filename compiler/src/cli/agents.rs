//! `aegis agents create|revoke`: a credential an agent trades for
//! short-lived tokens at `POST /v1/tokens`. Printed once; the service keeps
//! a hash. A revoked credential trades for nothing (tokens already issued
//! run out within their lifetime).

use super::{Error, Format, EXIT_CODES};
use crate::client::{Client, Remote};
use serde_json::{json, Value};
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Create an agent credential (printed once).
    #[command(after_help = EXIT_CODES)]
    Create(CreateArgs),
    /// Revoke an agent credential by its id (`agc_...`).
    #[command(after_help = EXIT_CODES)]
    Revoke(RevokeArgs),
}

#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    /// The `credential_id` printed by `aegis agents create --format json`.
    id: String,
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
    #[command(flatten)]
    remote: Remote,
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    #[arg(long, default_value = "default")]
    tenant: String,
    #[arg(long)]
    agent: String,
    /// Space-separated scopes put in the agent's tokens.
    #[arg(long)]
    scope: Option<String>,
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
    #[command(flatten)]
    remote: Remote,
}

pub fn create(a: &CreateArgs) -> Result<ExitCode, Error> {
    let body = json!({"tenant": a.tenant, "agent": a.agent, "scope": a.scope});
    let v = Client::new(&a.remote).post("/v1/agents", &body)?;
    match a.format {
        Format::Json => println!("{v}"),
        Format::Human => {
            let cred = v.get("credential").and_then(Value::as_str).unwrap_or("-");
            eprintln!(
                "credential for {}/{} (shown once; store it as the agent's secret):",
                a.tenant, a.agent
            );
            println!("{cred}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn revoke(a: &RevokeArgs) -> Result<ExitCode, Error> {
    let path = format!("/v1/agents/{}/revoke", crate::client::q(&a.id));
    let v = Client::new(&a.remote).post(&path, &json!({}))?;
    match a.format {
        Format::Json => println!("{v}"),
        Format::Human => println!("revoked agent credential {}", a.id),
    }
    Ok(ExitCode::SUCCESS)
}
