//! `aegis audit verify|export|list`: the control plane's hash-chained audit
//! log, read through the API or straight from the store (`--db`); `list`
//! searches it as the dashboard's audit page does.

use super::{Error, Format, EXIT_CODES};
use crate::client::{items, text, with_query, Client, Remote};
use aegis_control::DbUrl;
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Check the chain and its signed checkpoints; name the first broken record.
    #[command(
        after_help = "Exit codes:\n  0  the chain is intact\n  1  the chain is broken\n  2  usage error, or the store or server cannot be reached"
    )]
    Verify(VerifyArgs),
    /// Print events as JSON lines (`jsonl`) or OCSF API Activity events (`ocsf`).
    #[command(after_help = EXIT_CODES)]
    Export(ExportArgs),
    /// Search events, newest first: by kind, actor, subject or text.
    #[command(after_help = EXIT_CODES)]
    List(ListArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Events of this kind only (`approval.decided`, `dashboard.signin`, ...).
    #[arg(long)]
    kind: Option<String>,
    /// Events by this actor only (`approver:alice`, `gateway:edge-1`, ...).
    #[arg(long)]
    actor: Option<String>,
    /// Events about this subject only (an approval id, a revision, ...).
    #[arg(long)]
    subject: Option<String>,
    /// Text in the kind, actor, subject or details (ASCII case ignored).
    #[arg(long)]
    search: Option<String>,
    /// Events before this sequence number (the next page).
    #[arg(long)]
    before: Option<i64>,
    #[arg(long, default_value_t = 50)]
    limit: i64,
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
    #[command(flatten)]
    remote: Remote,
}

/// Read from the store directly instead of the server.
#[derive(Debug, clap::Args)]
pub struct Direct {
    /// `sqlite://FILE` or `postgres://...`: read the store, not the API.
    #[arg(long)]
    db: Option<String>,
    /// The service key, when `aegis serve` runs with `--key`.
    #[arg(long, value_name = "PREFIX.key", requires = "db")]
    key: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    direct: Direct,
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
    #[command(flatten)]
    remote: Remote,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Jsonl,
    Ocsf,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[arg(long, value_enum, default_value = "jsonl")]
    format: ExportFormat,
    /// Only events after this sequence number.
    #[arg(long, default_value_t = 0)]
    since: i64,
    #[command(flatten)]
    direct: Direct,
    #[command(flatten)]
    remote: Remote,
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::input(format_args!("cannot start the runtime: {e}")))
}

fn direct_key(d: &Direct) -> Result<Option<ed25519_dalek::SigningKey>, Error> {
    d.key
        .as_deref()
        .map(crate::keys::read_signing_key)
        .transpose()
        .map_err(Error::input)
}

pub fn verify(a: &VerifyArgs) -> Result<ExitCode, Error> {
    let report: Value = match &a.direct.db {
        Some(db) => {
            let db = DbUrl::parse(db).map_err(Error::input)?;
            let key = direct_key(&a.direct)?;
            let r = runtime()?
                .block_on(aegis_control::verify_audit(&db, key))
                .map_err(Error::input)?;
            serde_json::to_value(&r).unwrap_or(Value::Null)
        }
        None => Client::new(&a.remote).get("/v1/audit/verify")?,
    };
    let broken = report.get("first_break").filter(|b| !b.is_null());
    match a.format {
        Format::Json => println!("{report}"),
        Format::Human => match broken {
            Some(b) => println!(
                "audit chain broken at record {}: {}",
                b.get("seq").and_then(Value::as_i64).unwrap_or(0),
                text(b, "message")
            ),
            None => println!(
                "audit chain intact: {} records, last checkpoint at record {}",
                report.get("records").and_then(Value::as_u64).unwrap_or(0),
                report
                    .get("last_checkpoint")
                    .and_then(Value::as_i64)
                    .map_or_else(|| "none yet".to_owned(), |s| s.to_string())
            ),
        },
    }
    Ok(if broken.is_some() {
        ExitCode::from(super::exit::FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

pub fn export(a: &ExportArgs) -> Result<ExitCode, Error> {
    let format = match a.format {
        ExportFormat::Jsonl => "jsonl",
        ExportFormat::Ocsf => "ocsf",
    };
    let mut since = a.since;
    match &a.direct.db {
        Some(db) => {
            let db = DbUrl::parse(db).map_err(Error::input)?;
            let rt = runtime()?;
            loop {
                let batch = rt
                    .block_on(aegis_control::export_audit(&db, since, 5000, format))
                    .map_err(Error::input)?;
                let Some(last) = batch.last().map(|(seq, _)| *seq) else {
                    break;
                };
                for (_, line) in &batch {
                    println!("{line}");
                }
                since = last;
            }
        }
        None => {
            let client = Client::new(&a.remote);
            loop {
                let v = client.get(&format!(
                    "/v1/audit?since={since}&limit=5000&format={format}"
                ))?;
                let events = items(&v, "events");
                for e in events {
                    println!("{e}");
                }
                match v.get("next_since").and_then(Value::as_i64) {
                    Some(n) if !events.is_empty() => since = n,
                    _ => break,
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn list(a: &ListArgs) -> Result<ExitCode, Error> {
    let path = with_query(
        format!(
            "/v1/audit?limit={}&before={}",
            a.limit,
            a.before.unwrap_or(i64::MAX)
        ),
        &[
            ("kind", a.kind.as_deref()),
            ("actor", a.actor.as_deref()),
            ("subject", a.subject.as_deref()),
            ("search", a.search.as_deref()),
        ],
    );
    let v = Client::new(&a.remote).get(&path)?;
    if a.format == Format::Json {
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    let events = items(&v, "events");
    if events.is_empty() {
        println!("no events");
    }
    for e in events {
        let ms = e.get("at_ms").and_then(Value::as_i64).unwrap_or(0);
        let secs = ms.div_euclid(1000).rem_euclid(86_400);
        println!(
            "{:>6}  {} {:02}:{:02}:{:02}Z  {}  {}  {}  {}  {}",
            e.get("seq").and_then(Value::as_i64).unwrap_or(0),
            aegis_control::utc_day(ms),
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            text(e, "tenant"),
            text(e, "actor"),
            text(e, "kind"),
            text(e, "subject"),
            e.get("data").map(Value::to_string).unwrap_or_default()
        );
    }
    if let Some(next) = v.get("next_before").and_then(Value::as_i64) {
        if i64::try_from(events.len()).unwrap_or(0) >= a.limit {
            eprintln!("older events: --before {next}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
