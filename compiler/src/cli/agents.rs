//! `aegis agents create|revoke|list`: a credential an agent trades for
//! short-lived tokens at `POST /v1/tokens`. Printed once; the service keeps
//! a hash. A revoked credential trades for nothing (tokens already issued
//! run out within their lifetime). `list` shows what the dashboard's agents
//! page shows: today's spend against budget, leases, rate, verdict mix.

use super::{Error, Format, EXIT_CODES};
use crate::client::{items, text, Client, Remote};
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
    /// Agents today: spend against budget, open leases, rate limit, verdict mix.
    #[command(after_help = EXIT_CODES)]
    List(ListArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
    #[command(flatten)]
    remote: Remote,
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
            let cred = text(&v, "credential");
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

pub fn list(a: &ListArgs) -> Result<ExitCode, Error> {
    let v = Client::new(&a.remote).get("/v1/agents/overview")?;
    if a.format == Format::Json {
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    let agents = items(&v, "agents");
    println!(
        "agents on {} (UTC){}",
        text(&v, "day"),
        v.get("policy_revision")
            .and_then(Value::as_i64)
            .map(|r| format!(", policy revision {r}"))
            .unwrap_or_default()
    );
    if agents.is_empty() {
        println!("no agents");
    }
    let usd = |x: &Value, k: &str| x.get(k).and_then(Value::as_f64);
    for x in agents {
        let spent = usd(x, "spent_usd").unwrap_or(0.0);
        let budget = match usd(x, "limit_usd") {
            Some(l) => format!("${spent:.2} of ${l:.2}"),
            None => format!("${spent:.2} (no budget)"),
        };
        let rps = usd(x, "rps").map_or_else(|| "-".to_owned(), |r| format!("{r}/s"));
        let verdicts = match x.get("verdicts").and_then(Value::as_object) {
            Some(m) => m
                .iter()
                .map(|(k, n)| format!("{k} {}", n.as_i64().unwrap_or(0)))
                .collect::<Vec<_>>()
                .join(", "),
            None => "no decision records".to_owned(),
        };
        println!(
            "{}/{}  spent {budget}  leases {}  rps {rps}  pending {}  verdicts: {verdicts}",
            text(x, "tenant"),
            text(x, "agent"),
            x.get("open_leases").and_then(Value::as_i64).unwrap_or(0),
            x.get("pending_approvals")
                .and_then(Value::as_i64)
                .unwrap_or(0),
        );
    }
    Ok(ExitCode::SUCCESS)
}
