//! The one error type of the `aegis` commands: what to print on stderr
//! when a command stops, and the exit code. The dispatcher prints it.

use super::{exit, print_diagnostics, Format};
use crate::frontend::Diagnostic;
use std::fmt::Display;
use std::process::ExitCode;

/// Why a command stopped: the diagnostics that stopped it (if any), then a
/// closing line (if any), and the exit code.
#[derive(Debug)]
pub struct Error {
    diagnostics: Vec<Diagnostic>,
    format: Format,
    verbose: bool,
    line: Option<String>,
    code: u8,
}

impl Error {
    fn new(line: Option<String>, code: u8) -> Self {
        Error {
            diagnostics: Vec::new(),
            format: Format::Human,
            verbose: false,
            line,
            code,
        }
    }

    /// Could not run: bad arguments, an input that cannot be read or
    /// written. Prints `error: <message>`, exits 2.
    pub fn input(message: impl Display) -> Self {
        Error::new(Some(format!("error: {message}")), exit::ERROR)
    }

    /// The answer is "no" (invalid policies, a bundle that does not
    /// build). Prints `error: <message>`, exits 1.
    pub fn failed(message: impl Display) -> Self {
        Error::new(Some(format!("error: {message}")), exit::FAILED)
    }

    /// The answer is "no", said in a line of its own (no `error:`
    /// prefix). Exits 1.
    pub fn rejected(line: String) -> Self {
        Error::new(Some(line), exit::FAILED)
    }

    /// Diagnostics that stopped the command, printed as `format` asks
    /// (`verbose`: every warning, none grouped). Exits 1.
    pub fn diagnostics(diagnostics: Vec<Diagnostic>, format: Format, verbose: bool) -> Self {
        Error {
            diagnostics,
            format,
            verbose,
            line: None,
            code: exit::FAILED,
        }
    }

    /// Adds `error: <message>` after the diagnostics.
    #[must_use]
    pub fn then(mut self, message: impl Display) -> Self {
        self.line = Some(format!("error: {message}"));
        self
    }

    /// Exits 2 instead: the diagnostics are about an input that cannot be
    /// used rather than a "no".
    #[must_use]
    pub fn as_input(mut self) -> Self {
        self.code = exit::ERROR;
        self
    }

    /// Prints the error to stderr (diagnostics in JSON to stdout) and
    /// gives the exit code.
    pub(super) fn report(&self) -> ExitCode {
        print_diagnostics(&self.diagnostics, self.format, self.verbose);
        if let Some(line) = &self.line {
            eprintln!("{line}");
        }
        ExitCode::from(self.code)
    }
}
