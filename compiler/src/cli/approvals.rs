//! `aegis approvals list|show|approve|deny`: the approval queue from a
//! terminal, the same calls the dashboard makes.

use super::{Error, Format, EXIT_CODES};
use crate::client::{items, q, text, with_query, Client, Remote};
use serde_json::{json, Value};
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// List approvals (newest first).
    #[command(after_help = EXIT_CODES)]
    List(ListArgs),
    /// Show one approval; `--wait` long-polls while it is pending.
    #[command(after_help = EXIT_CODES)]
    Show(ShowArgs),
    /// Approve a pending approval: the held call goes on.
    #[command(after_help = EXIT_CODES)]
    Approve(DecideArgs),
    /// Deny a pending approval: the agent is told why.
    #[command(after_help = EXIT_CODES)]
    Deny(DecideArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// pending, approved, denied, expired or redeemed.
    #[arg(long)]
    status: Option<String>,
    #[arg(long)]
    tenant: Option<String>,
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
    #[command(flatten)]
    remote: Remote,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    id: String,
    /// Seconds to wait for a decision (at most 60).
    #[arg(long)]
    wait: Option<u64>,
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
    #[command(flatten)]
    remote: Remote,
}

#[derive(Debug, clap::Args)]
pub struct DecideArgs {
    id: String,
    /// Why: shown to the agent (on deny) and kept in the audit log.
    #[arg(long)]
    comment: Option<String>,
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
    #[command(flatten)]
    remote: Remote,
}

pub fn list(a: &ListArgs) -> Result<ExitCode, Error> {
    let path = with_query(
        "/v1/approvals?limit=200".to_owned(),
        &[
            ("status", a.status.as_deref()),
            ("tenant", a.tenant.as_deref()),
        ],
    );
    let v = Client::new(&a.remote).get(&path)?;
    let items = items(&v, "approvals");
    match a.format {
        Format::Json => println!("{v}"),
        Format::Human => {
            if items.is_empty() {
                println!("no approvals");
            }
            for i in items {
                println!(
                    "{}  {:<8}  {:<18}  {}/{}  {} {}  {}",
                    text(i, "approval_id"),
                    text(i, "status"),
                    timing(i),
                    text(i, "tenant"),
                    text(i, "agent"),
                    text(i, "tool"),
                    text(i, "action"),
                    text(i, "reason")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A duration for people: `42s`, `3m 05s`, `2h 10m`.
fn duration(secs: i64) -> String {
    let secs = secs.max(0);
    if secs < 60 {
        format!("{secs}s")
    } else if secs < 3600 {
        format!("{}m {:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h {:02}m", secs / 3600, secs / 60 % 60)
    }
}

/// Time left of a pending approval, or how long its decision took.
fn timing(v: &Value) -> String {
    if let Some(left) = v.get("expires_in_secs").and_then(Value::as_i64) {
        return format!("{} left", duration(left));
    }
    match v.get("time_to_decision_secs").and_then(Value::as_i64) {
        Some(t) => format!("decided in {}", duration(t)),
        None => "-".to_owned(),
    }
}

fn print_one(v: &Value, format: Format) {
    match format {
        Format::Json => println!("{v}"),
        Format::Human => {
            println!("approval {}: {}", text(v, "approval_id"), text(v, "status"));
            println!("  agent   {}/{}", text(v, "tenant"), text(v, "agent"));
            println!("  call    {} {}", text(v, "tool"), text(v, "action"));
            println!("  rule    {}", text(v, "rule"));
            println!("  reason  {}", text(v, "reason"));
            println!("  time    {}", timing(v));
            if let Some(summary) = v.get("summary").filter(|x| !x.is_null()) {
                println!("  summary {summary}");
            }
            if let Some(by) = v.get("decided_by").and_then(Value::as_str) {
                println!(
                    "  decided by {by}{}",
                    v.get("comment")
                        .and_then(Value::as_str)
                        .map(|c| format!(": {c}"))
                        .unwrap_or_default()
                );
            }
        }
    }
}

pub fn show(a: &ShowArgs) -> Result<ExitCode, Error> {
    let path = match a.wait {
        Some(w) => format!("/v1/approvals/{}?wait={w}", q(&a.id)),
        None => format!("/v1/approvals/{}", q(&a.id)),
    };
    let v = Client::new(&a.remote).get(&path)?;
    print_one(&v, a.format);
    Ok(ExitCode::SUCCESS)
}

pub fn decide(a: &DecideArgs, approve: bool) -> Result<ExitCode, Error> {
    let body = json!({"approve": approve, "comment": a.comment});
    let v = Client::new(&a.remote).post(&format!("/v1/approvals/{}/decision", q(&a.id)), &body)?;
    print_one(&v, a.format);
    Ok(ExitCode::SUCCESS)
}
