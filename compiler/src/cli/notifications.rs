//! `aegis notifications list`: approval notifications (Slack, Teams,
//! webhooks) and how their delivery went, newest first; the failing ones
//! with `--status retrying` or `--status failed`.

use super::{Error, Format, EXIT_CODES};
use crate::client::{items, text, with_query, Client, Remote};
use serde_json::Value;
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// List notifications and their delivery status.
    #[command(after_help = EXIT_CODES)]
    List(ListArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// pending, retrying, delivered or failed.
    #[arg(long)]
    status: Option<String>,
    #[arg(long)]
    tenant: Option<String>,
    /// Only the notifications of this approval.
    #[arg(long)]
    approval: Option<String>,
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
    #[command(flatten)]
    remote: Remote,
}

pub fn list(a: &ListArgs) -> Result<ExitCode, Error> {
    let path = with_query(
        "/v1/notifications?limit=200".to_owned(),
        &[
            ("status", a.status.as_deref()),
            ("tenant", a.tenant.as_deref()),
            ("approval", a.approval.as_deref()),
        ],
    );
    let v = Client::new(&a.remote).get(&path)?;
    let items = items(&v, "notifications");
    match a.format {
        Format::Json => println!("{v}"),
        Format::Human => {
            if items.is_empty() {
                println!("no notifications");
            }
            for i in items {
                let attempts = i.get("attempts").and_then(Value::as_i64).unwrap_or(0);
                let error = i
                    .get("last_error")
                    .and_then(Value::as_str)
                    .map(|e| format!("  ({e})"))
                    .unwrap_or_default();
                println!(
                    "{}  {:<9}  {}  {}  {} {}  attempts {attempts}{error}",
                    text(i, "notification_id"),
                    text(i, "status"),
                    text(i, "approval_id"),
                    text(i, "event"),
                    text(i, "channel"),
                    text(i, "target"),
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
