//! `aegis bundles list|diff`: the policy revisions published to the control
//! plane (who published each, which gateways run it) and what changed
//! between two of them, as the dashboard's policy page shows.

use super::{Error, Format, EXIT_CODES};
use crate::client::{items, text, Client, Remote};
use serde_json::Value;
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Published revisions, newest first, with the gateways that fetched each.
    #[command(after_help = EXIT_CODES)]
    List(ListArgs),
    /// What changed between two revisions, as a diff of their `aegis explain`.
    #[command(
        after_help = "Exit codes:\n  0  the revisions explain the same\n  1  they differ (the diff is printed)\n  2  usage error, or the server cannot be reached"
    )]
    Diff(DiffArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
    #[command(flatten)]
    remote: Remote,
}

#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The old revision.
    a: i64,
    /// The new revision.
    b: i64,
    #[command(flatten)]
    remote: Remote,
}

pub fn list(a: &ListArgs) -> Result<ExitCode, Error> {
    let v = Client::new(&a.remote).get("/v1/bundles")?;
    if a.format == Format::Json {
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    let revs = items(&v, "revisions");
    if revs.is_empty() {
        println!("no bundle is published yet");
    }
    for r in revs {
        let active: Vec<&str> = r
            .get("active_on")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|g| g.get("gateway").and_then(Value::as_str))
            .collect();
        let at = r.get("published_at").and_then(Value::as_i64).unwrap_or(0);
        println!(
            "revision {}  policy {}  published by {} on {}  active on {}",
            r.get("revision").and_then(Value::as_i64).unwrap_or(0),
            text(r, "policy_version"),
            text(r, "published_by"),
            aegis_control::utc_day(at.saturating_mul(1000)),
            if active.is_empty() {
                "no gateway known".to_owned()
            } else {
                active.join(", ")
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn diff(a: &DiffArgs) -> Result<ExitCode, Error> {
    let client = Client::new(&a.remote);
    let text = |rev: i64| -> Result<String, Error> {
        let v = client.get(&format!("/v1/bundles/{rev}/explain"))?;
        Ok(v.get("explain")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned())
    };
    let (old, new) = (text(a.a)?, text(a.b)?);
    let d = aegis_control::explain_diff(
        &old,
        &new,
        &format!("revision {}", a.a),
        &format!("revision {}", a.b),
    );
    if d.is_empty() {
        println!("revisions {} and {} explain the same", a.a, a.b);
        return Ok(ExitCode::SUCCESS);
    }
    print!("{d}");
    Ok(ExitCode::from(super::exit::FAILED))
}
