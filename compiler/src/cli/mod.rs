//! The `aegis` command line: argument parsing and dispatch. Each
//! subcommand lives in its own module and returns an exit code.

mod build;
mod check;
mod compile;
mod eval;
mod explain;
mod export;
mod inspect;
mod keygen;
mod test;
mod token;
mod verify;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Exit codes scripts can rely on.
pub mod exit {
    /// Success: valid policies, verified signature, all tests passed.
    pub const OK: i32 = 0;
    /// The answer is "no": diagnostics, a failed case, a bad signature.
    pub const FAILED: i32 = 1;
    /// Could not run: bad arguments, unreadable or invalid input files.
    pub const ERROR: i32 = 2;
}

const EXIT_CODES: &str = "Exit codes:\n  0  success\n  1  policy errors, failed test cases, or a signature that does not verify\n  2  usage error, or an input that cannot be read";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
}

#[derive(Debug, Parser)]
#[command(
    name = "aegis",
    version,
    about = "Compile, sign, test and explain Aegis agent policies",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Generate an Ed25519 key pair: PREFIX.key (secret, mode 0600) and PREFIX.pub.
    #[command(after_help = EXIT_CODES)]
    Keygen {
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
    },
    /// Validate policy files and directories (`*.cases.yaml` files are skipped).
    #[command(after_help = EXIT_CODES)]
    Check {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
    /// Compile policies into a bundle, signed when --key is given.
    #[command(after_help = EXIT_CODES)]
    Compile {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[arg(short = 'o', long, value_name = "OUT")]
        out: PathBuf,
        /// Signing key written by `aegis keygen` (PREFIX.key).
        #[arg(long, value_name = "PREFIX.key")]
        key: Option<PathBuf>,
        /// Policy version reported in decisions (default: content hash).
        #[arg(long)]
        policy_version: Option<String>,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
    /// Compile policies, embed the bundle in the filter and sign the module:
    /// one .wasm for Envoy.
    #[command(after_help = EXIT_CODES)]
    Build {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Signing key written by `aegis keygen` (PREFIX.key).
        #[arg(long, value_name = "PREFIX.key")]
        key: PathBuf,
        #[arg(short = 'o', long, value_name = "OUT")]
        out: PathBuf,
        /// Filter module to embed into (default: the one built into aegis).
        #[arg(long, value_name = "FILE")]
        filter: Option<PathBuf>,
        /// Policy version reported in decisions (default: content hash).
        #[arg(long)]
        policy_version: Option<String>,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
    /// Show what a filter .wasm carries: bundle version, hash, agents, signer.
    #[command(after_help = EXIT_CODES)]
    Inspect {
        file: PathBuf,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
    /// Verify a bundle's, or a filter .wasm's, signatures against a public key.
    #[command(after_help = EXIT_CODES)]
    Verify {
        file: PathBuf,
        #[arg(long, value_name = "PREFIX.pub")]
        pubkey: PathBuf,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
    /// Evaluate recorded requests; prints one JSON object per case.
    #[command(after_help = EXIT_CODES)]
    Eval {
        /// Policy files/directories, or one compiled bundle.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[arg(long, value_name = "FILE")]
        cases: PathBuf,
    },
    /// Run every `*.cases.yaml` under each PATH against the policies next to it.
    #[command(after_help = EXIT_CODES)]
    Test {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
    /// Agent identity tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Translate policies for another policy engine.
    #[command(subcommand)]
    Export(ExportCmd),
    /// Print the compiled decision table for humans.
    #[command(after_help = EXIT_CODES)]
    Explain {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Only this agent (`name` or `tenant/name`).
        #[arg(long)]
        agent: Option<String>,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
}

#[derive(Debug, Subcommand)]
enum ExportCmd {
    /// Write the policies as one Rego module (package `aegis`, rule `decision`)
    /// for OPA or regorus. Identity, request-shape checks, DLP and budgets are
    /// not part of it (see the module's header).
    #[command(after_help = EXIT_CODES)]
    Rego {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Output file (default: standard output).
        #[arg(short = 'o', long, value_name = "OUT")]
        out: Option<PathBuf>,
        /// Write the tables (hosts, routes, agents) to this JSON data
        /// document instead of into the module: the layout for large
        /// policies, which engines index by key.
        #[arg(long, value_name = "FILE")]
        data: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCmd {
    /// Issue a short-lived EdDSA JWT for an agent.
    #[command(after_help = EXIT_CODES)]
    Issue {
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
    },
}

/// Parses arguments and runs; returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::ERROR
            } else {
                exit::OK
            };
            let _ = e.print();
            return code;
        }
    };
    match cli.cmd {
        Cmd::Keygen { out } => keygen::run(&out),
        Cmd::Check { paths, format } => check::run(&paths, format),
        Cmd::Compile {
            paths,
            out,
            key,
            policy_version,
            format,
        } => compile::run(
            &paths,
            &out,
            key.as_deref(),
            policy_version.as_deref(),
            format,
        ),
        Cmd::Build {
            paths,
            key,
            out,
            filter,
            policy_version,
            format,
        } => build::run(&build::Args {
            paths: &paths,
            key: &key,
            out: &out,
            filter: filter.as_deref(),
            policy_version: policy_version.as_deref(),
            format,
        }),
        Cmd::Inspect { file, format } => inspect::run(&file, format),
        Cmd::Verify {
            file,
            pubkey,
            format,
        } => verify::run(&file, &pubkey, format),
        Cmd::Eval { paths, cases } => eval::run(&paths, &cases),
        Cmd::Test { paths, format } => test::run(&paths, format),
        Cmd::Token(TokenCmd::Issue {
            key,
            kid,
            issuer,
            audience,
            agent,
            tenant,
            scope,
            ttl,
        }) => token::run(&token::Args {
            key,
            kid,
            issuer,
            audience,
            agent,
            tenant,
            scope,
            ttl,
        }),
        Cmd::Explain {
            paths,
            agent,
            format,
        } => explain::run(&paths, agent.as_deref(), format),
        Cmd::Export(ExportCmd::Rego { paths, out, data }) => {
            export::rego(&paths, out.as_deref(), data.as_deref())
        }
    }
}

/// Prints diagnostics to stderr (human) or as JSON lines to stdout.
pub(crate) fn print_diagnostics(diags: &[crate::frontend::Diagnostic], format: Format) {
    use std::io::IsTerminal;
    for d in diags {
        match format {
            Format::Json => println!("{}", crate::frontend::to_json(d)),
            Format::Human if std::io::stderr().is_terminal() => {
                eprintln!("{}", crate::frontend::render_colored(d));
            }
            Format::Human => eprintln!("{}", crate::frontend::render(d)),
        }
    }
}
