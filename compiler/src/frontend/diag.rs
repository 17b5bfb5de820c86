//! Compiler diagnostics: one error or warning about a policy source, pointing
//! at the offending YAML node, rendered for humans (miette) or as JSON.

use std::fmt;
use std::sync::Arc;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceSpan};

/// One loaded source file, shared by every diagnostic that points into it.
#[derive(Debug)]
pub struct SourceFile {
    /// Display name (the path as found on disk).
    pub name: String,
    /// The file's directory, for paths given relative to the file.
    pub dir: std::path::PathBuf,
    pub named: Arc<NamedSource<String>>,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, dir: std::path::PathBuf, text: String) -> Arc<Self> {
        let name = name.into();
        let named = Arc::new(NamedSource::new(&name, text));
        Arc::new(SourceFile { name, dir, named })
    }

    pub fn text(&self) -> &str {
        self.named.inner()
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let text = self.text();
        let offset = offset.min(text.len());
        let before = text.get(..offset).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
        (line, col)
    }

    /// Byte offset of a 1-based line and character column (clamped).
    pub fn offset_of(&self, line: usize, col: usize) -> usize {
        let text = self.text();
        let mut start = 0usize;
        for _ in 1..line {
            match text.get(start..).and_then(|rest| rest.find('\n')) {
                Some(i) => start += i + 1,
                None => return text.len(),
            }
        }
        let rest = text.get(start..).unwrap_or("");
        let in_line = rest
            .char_indices()
            .take_while(|(_, c)| *c != '\n')
            .nth(col.saturating_sub(1))
            .map_or_else(|| rest.find('\n').unwrap_or(rest.len()), |(i, _)| i);
        start + in_line
    }

    /// `file:line:col` of a byte offset, for messages that refer to another node.
    pub fn describe(&self, offset: usize) -> String {
        let (line, col) = self.line_col(offset);
        format!("{}:{line}:{col}", self.name)
    }
}

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// An error or warning about a policy source. Boxed: results carrying it
/// stay small.
#[derive(Debug, Clone)]
pub struct Diagnostic(Box<Inner>);

#[derive(Debug, Clone)]
struct Inner {
    severity: Severity,
    message: String,
    help: Option<String>,
    source: Option<Arc<SourceFile>>,
    /// Primary label: where, and a short note.
    span: Option<(SourceSpan, String)>,
    /// Secondary labels in the same file (e.g. "first defined here").
    secondary: Vec<(SourceSpan, String)>,
}

impl Diagnostic {
    /// A diagnostic with no source location (e.g. an unreadable path).
    pub fn bare(severity: Severity, message: impl Into<String>) -> Self {
        Diagnostic(Box::new(Inner {
            severity,
            message: message.into(),
            help: None,
            source: None,
            span: None,
            secondary: Vec::new(),
        }))
    }

    /// A diagnostic pointing at `len` bytes from `offset` in `file`.
    pub fn at(
        severity: Severity,
        file: &Arc<SourceFile>,
        offset: usize,
        len: usize,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic(Box::new(Inner {
            severity,
            message: message.into(),
            help: None,
            source: Some(Arc::clone(file)),
            span: Some((SourceSpan::from((offset, len)), "here".to_owned())),
            secondary: Vec::new(),
        }))
    }

    #[must_use]
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.0.help = Some(help.into());
        self
    }

    #[must_use]
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        if let Some((_, text)) = self.0.span.as_mut() {
            *text = label.into();
        }
        self
    }

    /// Adds a secondary label; ignored unless it points into the same file.
    #[must_use]
    pub fn with_secondary(
        mut self,
        file: &Arc<SourceFile>,
        offset: usize,
        len: usize,
        label: impl Into<String>,
    ) -> Self {
        if self.0.source.as_ref().is_some_and(|f| Arc::ptr_eq(f, file)) {
            self.0
                .secondary
                .push((SourceSpan::from((offset, len)), label.into()));
        }
        self
    }

    pub fn severity(&self) -> Severity {
        self.0.severity
    }

    pub fn is_error(&self) -> bool {
        self.0.severity == Severity::Error
    }

    pub fn message(&self) -> &str {
        &self.0.message
    }

    pub fn help_text(&self) -> Option<&str> {
        self.0.help.as_deref()
    }

    /// `(file, line, column)`, 1-based, of the primary span.
    pub fn location(&self) -> Option<(String, usize, usize)> {
        let file = self.0.source.as_ref()?;
        let (span, _) = self.0.span.as_ref()?;
        let (line, col) = file.line_col(span.offset());
        Some((file.name.clone(), line, col))
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for Diagnostic {}

impl miette::Diagnostic for Diagnostic {
    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.0.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.0
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display + 'a>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.0
            .source
            .as_ref()
            .map(|f| &f.named as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let (span, label) = self.0.span.as_ref()?;
        let primary = LabeledSpan::new_primary_with_span(Some(label.clone()), *span);
        let rest = self
            .0
            .secondary
            .iter()
            .map(|(s, l)| LabeledSpan::new_with_span(Some(l.clone()), *s));
        Some(Box::new(std::iter::once(primary).chain(rest)))
    }
}

/// Renders a diagnostic for a terminal without colours (also what the
/// snapshot tests pin down).
pub fn render(d: &Diagnostic) -> String {
    render_with(d, GraphicalTheme::unicode_nocolor())
}

/// Renders a diagnostic with ANSI colours, for a terminal that supports them.
pub fn render_colored(d: &Diagnostic) -> String {
    render_with(d, GraphicalTheme::unicode())
}

fn render_with(d: &Diagnostic, theme: GraphicalTheme) -> String {
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_width(100)
        .with_links(false);
    let mut out = String::new();
    if handler.render_report(&mut out, d).is_err() {
        // Rendering only fails on a broken span; the message alone still helps.
        out = format!("{}: {}", d.0.severity.as_str(), d.0.message);
    }
    out
}

/// The machine form: `{"severity","message","file","line","column","help"}`
/// with `null` for what is unknown.
pub fn to_json(d: &Diagnostic) -> serde_json::Value {
    let loc = d.location();
    serde_json::json!({
        "severity": d.0.severity.as_str(),
        "message": d.0.message,
        "file": loc.as_ref().map(|(f, _, _)| f.clone()),
        "line": loc.as_ref().map(|(_, l, _)| *l),
        "column": loc.as_ref().map(|(_, _, c)| *c),
        "help": d.0.help,
    })
}

/// Edit distance, for "did you mean" hints.
pub(crate) fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0usize; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        if let Some(first) = cur.first_mut() {
            *first = i + 1;
        }
        for (j, cb) in b.iter().enumerate() {
            let sub = prev.get(j).copied().unwrap_or(0) + usize::from(ca != *cb);
            let del = prev.get(j + 1).copied().unwrap_or(0) + 1;
            let ins = cur.get(j).copied().unwrap_or(0) + 1;
            if let Some(slot) = cur.get_mut(j + 1) {
                *slot = sub.min(del).min(ins);
            }
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev.last().copied().unwrap_or(0)
}

/// The candidate closest to `word`, if it is close enough to be a typo.
pub(crate) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (levenshtein(word, c), *c))
        .filter(|(d, c)| *d <= (c.chars().count() / 3).max(2) && *d < c.chars().count())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `` `a`, `b`, `c` ``
pub(crate) fn list(items: &[&str]) -> String {
    if items.is_empty() {
        return "(none)".to_owned();
    }
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// "did you mean `x`? <what>: `a`, `b`" or just "<what>: `a`, `b`".
pub(crate) fn suggest(word: &str, what: &str, candidates: &[&str]) -> String {
    match closest(word, candidates) {
        Some(c) => format!("did you mean `{c}`? {what}: {}", list(candidates)),
        None => format!("{what}: {}", list(candidates)),
    }
}
