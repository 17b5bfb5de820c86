//! `aegis budgets show`: an agent's (or a tenant's) spend for a UTC day.

use super::{Error, Format, EXIT_CODES};
use crate::client::{items, q, text, with_query, Client, Remote};
use serde_json::Value;
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Limit, spent and reserved per agent for a day (default: today, UTC).
    #[command(after_help = EXIT_CODES)]
    Show(ShowArgs),
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    #[arg(long, default_value = "default")]
    tenant: String,
    #[arg(long)]
    agent: Option<String>,
    /// `YYYY-MM-DD`.
    #[arg(long)]
    day: Option<String>,
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
    #[command(flatten)]
    remote: Remote,
}

pub fn show(a: &ShowArgs) -> Result<ExitCode, Error> {
    let path = with_query(
        format!("/v1/budgets?tenant={}", q(&a.tenant)),
        &[("agent", a.agent.as_deref()), ("day", a.day.as_deref())],
    );
    let v = Client::new(&a.remote).get(&path)?;
    match a.format {
        Format::Json => println!("{v}"),
        Format::Human => {
            let day = text(&v, "day");
            let agents = items(&v, "agents");
            if agents.is_empty() {
                println!("no budget activity for tenant `{}` on {day}", a.tenant);
            }
            for ag in agents {
                let f = |k: &str| ag.get(k).and_then(Value::as_f64).unwrap_or(0.0);
                println!(
                    "{}/{} {day}: spent ${:.2} + reserved ${:.2} of ${:.2} (${:.2} left, {} open leases)",
                    a.tenant,
                    text(ag, "agent"),
                    f("spent_usd"),
                    f("reserved_usd"),
                    f("limit_usd"),
                    f("remaining_usd"),
                    ag.get("open_leases").and_then(Value::as_i64).unwrap_or(0)
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
