//! The `aegis` command line: argument parsing and dispatch. Each
//! subcommand lives in its own module, with its `Args`, and returns an exit
//! code or an [`Error`], which is printed here.

mod admin;
mod agents;
mod approvals;
mod audit;
mod budgets;
mod build;
mod bundles;
mod check;
mod compile;
mod error;
mod eval;
mod explain;
mod export;
mod inspect;
mod keygen;
mod notifications;
mod package;
mod publish;
mod serve;
mod test;
mod token;
mod verify;

pub use error::Error;

use clap::{Parser, Subcommand, ValueEnum};
use std::process::ExitCode;

/// Exit codes scripts can rely on.
pub mod exit {
    /// Success: valid policies, verified signature, all tests passed.
    pub const OK: u8 = 0;
    /// The answer is "no": diagnostics, a failed case, a bad signature.
    pub const FAILED: u8 = 1;
    /// Could not run: bad arguments, unreadable or invalid input files.
    pub const ERROR: u8 = 2;
}

const EXIT_CODES: &str = "Exit codes:\n  0  success\n  1  policy errors, failed test cases, or a signature that does not verify\n  2  usage error, or an input that cannot be read";

const VERBOSE_HELP: &str =
    "Print each warning; by default one repeated for many agents is printed once, with a count";

const REVISION_HELP: &str = "Bundle revision, signed with the bundle; `aegis serve` and the filter take a bundle only if its revision is greater than the one they have [default: the current Unix time in seconds]";

/// `--revision N` of the commands that write a bundle.
#[derive(Debug, clap::Args)]
pub struct Revision {
    #[arg(long, value_name = "N", help = REVISION_HELP)]
    pub revision: Option<u64>,
}

impl Revision {
    /// The revision given, or the current Unix time in seconds, so that
    /// successive builds increase without anyone keeping count.
    pub fn value(&self) -> Result<u64, Error> {
        match self.revision {
            Some(r) => Ok(r),
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .map_err(|_| Error::input("the system clock is before 1970; pass `--revision N`")),
        }
    }
}

/// How a command that reads policies prints: `--format` and `--verbose`.
#[derive(Debug, clap::Args)]
pub struct Output {
    #[arg(long, value_enum, default_value = "human")]
    pub format: Format,
    #[arg(long, help = VERBOSE_HELP)]
    pub verbose: bool,
}

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
    Keygen(keygen::Args),
    /// Validate policy files and directories (`*.cases.yaml` files are skipped).
    #[command(after_help = EXIT_CODES)]
    Check(check::Args),
    /// Compile policies into a bundle, signed when --key is given.
    #[command(after_help = EXIT_CODES)]
    Compile(compile::Args),
    /// Compile policies, embed the bundle in the filter and sign the module:
    /// one .wasm for Envoy.
    #[command(after_help = EXIT_CODES)]
    Build(build::Args),
    /// Show what a filter .wasm carries: policy version, revision, hash, agents, signer.
    #[command(after_help = EXIT_CODES)]
    Inspect(inspect::Args),
    /// Verify a bundle's, or a filter .wasm's, signatures against a public key.
    #[command(after_help = EXIT_CODES)]
    Verify(verify::Args),
    /// Package a filter .wasm as an OCI image for Istio's WasmPlugin; push it with --push.
    #[command(after_help = EXIT_CODES)]
    Package(package::Args),
    /// Evaluate recorded requests; prints one JSON object per case.
    #[command(after_help = EXIT_CODES)]
    Eval(eval::Args),
    /// Run every `*.cases.yaml` under each PATH against the policies next to it.
    #[command(after_help = EXIT_CODES)]
    Test(test::Args),
    /// Agent identity tokens.
    #[command(subcommand)]
    Token(token::Cmd),
    /// Translate policies for another policy engine.
    #[command(subcommand)]
    Export(export::Cmd),
    /// Print the compiled decision table for humans.
    #[command(after_help = EXIT_CODES)]
    Explain(explain::Args),
    /// Run the control plane: budgets, approvals, tokens, bundles, audit.
    Serve(serve::Args),
    /// Administration straight from the store.
    #[command(subcommand)]
    Admin(admin::Cmd),
    /// Upload a signed bundle to the control plane.
    Publish(publish::Args),
    /// Approvals waiting for a person, and their decisions.
    #[command(subcommand)]
    Approvals(approvals::Cmd),
    /// Agents' spend against their daily budgets.
    #[command(subcommand)]
    Budgets(budgets::Cmd),
    /// Agent credentials.
    #[command(subcommand)]
    Agents(agents::Cmd),
    /// The control plane's audit log.
    #[command(subcommand)]
    Audit(audit::Cmd),
    /// Approval notifications (Slack, Teams, webhooks) and their delivery.
    #[command(subcommand)]
    Notifications(notifications::Cmd),
    /// Policy revisions published to the control plane.
    #[command(subcommand)]
    Bundles(bundles::Cmd),
}

/// Parses arguments, runs the command and prints its error, if any.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::ERROR
            } else {
                exit::OK
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.cmd {
        Cmd::Keygen(args) => keygen::run(&args),
        Cmd::Check(args) => check::run(&args),
        Cmd::Compile(args) => compile::run(&args),
        Cmd::Build(args) => build::run(&args),
        Cmd::Inspect(args) => inspect::run(&args),
        Cmd::Verify(args) => verify::run(&args),
        Cmd::Package(args) => package::run(&args),
        Cmd::Eval(args) => eval::run(&args),
        Cmd::Test(args) => test::run(&args),
        Cmd::Token(token::Cmd::Issue(args)) => token::run(&args),
        Cmd::Export(export::Cmd::Rego(args)) => export::rego(&args),
        Cmd::Explain(args) => explain::run(&args),
        Cmd::Serve(args) => serve::run(&args),
        Cmd::Admin(admin::Cmd::Token(args)) => admin::token(&args),
        Cmd::Publish(args) => publish::run(&args),
        Cmd::Approvals(approvals::Cmd::List(args)) => approvals::list(&args),
        Cmd::Approvals(approvals::Cmd::Show(args)) => approvals::show(&args),
        Cmd::Approvals(approvals::Cmd::Approve(args)) => approvals::decide(&args, true),
        Cmd::Approvals(approvals::Cmd::Deny(args)) => approvals::decide(&args, false),
        Cmd::Budgets(budgets::Cmd::Show(args)) => budgets::show(&args),
        Cmd::Agents(agents::Cmd::Create(args)) => agents::create(&args),
        Cmd::Agents(agents::Cmd::Revoke(args)) => agents::revoke(&args),
        Cmd::Audit(audit::Cmd::Verify(args)) => audit::verify(&args),
        Cmd::Audit(audit::Cmd::Export(args)) => audit::export(&args),
        Cmd::Notifications(notifications::Cmd::List(args)) => notifications::list(&args),
        Cmd::Audit(audit::Cmd::List(args)) => audit::list(&args),
        Cmd::Agents(agents::Cmd::List(args)) => agents::list(&args),
        Cmd::Bundles(bundles::Cmd::List(args)) => bundles::list(&args),
        Cmd::Bundles(bundles::Cmd::Diff(args)) => bundles::diff(&args),
    };
    result.unwrap_or_else(|e| e.report())
}

/// Prints diagnostics to stderr (human) or as JSON lines to stdout. In
/// human form a warning repeated for many agents is printed once with a
/// count, unless `verbose`; JSON lines are one per diagnostic.
pub(crate) fn print_diagnostics(
    diags: &[crate::frontend::Diagnostic],
    format: Format,
    verbose: bool,
) {
    use std::io::IsTerminal;
    if format == Format::Json {
        for d in diags {
            println!("{}", crate::frontend::to_json(d));
        }
        return;
    }
    let grouped;
    let diags = if verbose {
        diags
    } else {
        grouped = crate::frontend::group(diags);
        &grouped
    };
    let colored = std::io::stderr().is_terminal();
    for d in diags {
        if colored {
            eprintln!("{}", crate::frontend::render_colored(d));
        } else {
            eprintln!("{}", crate::frontend::render(d));
        }
    }
}
