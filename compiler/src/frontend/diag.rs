//! Compiler diagnostics: one error or warning about a policy source, pointing
//! at the offending YAML node, rendered for humans (miette) or as JSON.

use std::fmt;
use std::sync::Arc;

use miette::{
    GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteError, MietteSpanContents,
    SourceCode, SourceSpan, SpanContents,
};

/// One loaded source file, shared by every diagnostic that points into it.
#[derive(Debug)]
pub struct SourceFile {
    /// Display name (the path as found on disk).
    pub name: String,
    /// The file's directory, for paths given relative to the file.
    pub dir: std::path::PathBuf,
    text: String,
    /// Byte offset where each line starts (after each `\n`), computed once:
    /// locating a node, or rendering a snippet, costs a binary search
    /// instead of a scan from the top of a file that may hold a thousand
    /// agents.
    line_starts: Vec<usize>,
    /// Whether the text has a `\r` not followed by `\n`: miette counts one
    /// as a line break, so snippets of such a (rare) file are cut by miette
    /// from the top.
    lone_cr: bool,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, dir: std::path::PathBuf, text: String) -> Arc<Self> {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        let lone_cr = text
            .match_indices('\r')
            .any(|(i, _)| text.as_bytes().get(i + 1) != Some(&b'\n'));
        Arc::new(SourceFile {
            name: name.into(),
            dir,
            text,
            line_starts,
            lone_cr,
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// 0-based line of a byte offset (lines end at `\n`).
    fn line_of(&self, offset: usize) -> usize {
        self.line_starts
            .partition_point(|&start| start <= offset)
            .saturating_sub(1)
    }

    fn line_start(&self, line: usize) -> usize {
        self.line_starts.get(line).copied().unwrap_or(0)
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let text = self.text();
        let offset = offset.min(text.len());
        let line = self.line_of(offset);
        let col = text
            .get(self.line_start(line)..offset)
            .map_or(0, |s| s.chars().count())
            + 1;
        (line + 1, col)
    }

    /// Byte offset of a 1-based line and character column (clamped).
    pub fn offset_of(&self, line: usize, col: usize) -> usize {
        let text = self.text();
        let Some(&start) = self.line_starts.get(line.saturating_sub(1)) else {
            return text.len();
        };
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

/// The snippet around a span, exactly as miette cuts it from the whole text,
/// but cut from the start of the first context line: miette's own cutting
/// scans from the top of the file, once per label of every diagnostic.
impl SourceCode for SourceFile {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        // From the line before the span's byte before: miette may stop at
        // the line break just before an empty span.
        let first_line = if self.lone_cr {
            0
        } else {
            self.line_of(span.offset().saturating_sub(1))
                .saturating_sub(context_lines_before)
        };
        let base = self.line_start(first_line);
        let rest = self.text.as_bytes().get(base..).unwrap_or_default();
        let shifted = SourceSpan::new(span.offset().saturating_sub(base).into(), span.len());
        let inner = rest.read_span(&shifted, context_lines_before, context_lines_after)?;
        let cut = inner.span();
        Ok(Box::new(MietteSpanContents::new_named(
            self.name.clone(),
            inner.data(),
            SourceSpan::new((cut.offset() + base).into(), cut.len()),
            inner.line() + first_line,
            inner.column(),
            inner.line_count() + first_line,
        )))
    }
}

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// For a warning that may repeat once per agent: what it is about
    /// (`finance-0`) and the message for many of them (`agents have no
    /// ...`). See [`group`].
    group: Option<(String, String)>,
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
            group: None,
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
            group: None,
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

    /// Marks a diagnostic that may repeat for many subjects (agents, say):
    /// [`group`] prints those that share `summary` and help once, as
    /// "<count> <summary> (<first subjects>, and N more)".
    #[must_use]
    pub fn with_group(mut self, subject: impl Into<String>, summary: impl Into<String>) -> Self {
        self.0.group = Some((subject.into(), summary.into()));
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
            .map(|f| f.as_ref() as &dyn miette::SourceCode)
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

/// How many subjects a grouped diagnostic names before "and N more".
const GROUP_NAMES: usize = 3;

/// Folds the diagnostics marked [`Diagnostic::with_group`] that share
/// severity, summary and help into one, at the place of the first: its
/// location, snippet and help, and the message "<count> <summary> (<first
/// subjects>, and N more)". A diagnostic alone in its group is returned as
/// it is.
pub fn group(diags: &[Diagnostic]) -> Vec<Diagnostic> {
    type Key<'a> = (Severity, &'a str, Option<&'a str>);
    let mut members: Vec<Vec<&str>> = Vec::new();
    let mut index: std::collections::HashMap<Key<'_>, usize> = std::collections::HashMap::new();
    // Per diagnostic: the group it leads, or `None` when folded into one.
    let mut order: Vec<(&Diagnostic, Option<usize>)> = Vec::with_capacity(diags.len());
    for d in diags {
        let Some((subject, summary)) = &d.0.group else {
            order.push((d, None));
            continue;
        };
        let k = (d.0.severity, summary.as_str(), d.0.help.as_deref());
        match index.get(&k).and_then(|&g| members.get_mut(g)) {
            Some(m) => m.push(subject),
            None => {
                index.insert(k, members.len());
                order.push((d, Some(members.len())));
                members.push(vec![subject]);
            }
        }
    }
    order
        .into_iter()
        .map(|(d, g)| match g.and_then(|g| members.get(g)) {
            Some(names) if names.len() > 1 => {
                let mut folded = d.clone();
                let summary = d.0.group.as_ref().map_or("", |(_, s)| s.as_str());
                let shown = names.iter().take(GROUP_NAMES).copied().collect::<Vec<_>>();
                let more = names.len().saturating_sub(GROUP_NAMES);
                let tail = if more > 0 {
                    format!(", and {more} more")
                } else {
                    String::new()
                };
                folded.0.message =
                    format!("{} {summary} ({}{tail})", names.len(), shown.join(", "));
                folded
            }
            _ => d.clone(),
        })
        .collect()
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use miette::NamedSource;

    /// Cuts a snippet as miette does from the whole text, and as
    /// `SourceFile` does from its line index; both must agree.
    fn same_snippets(text: &str) {
        let file = SourceFile::new("f.yaml", std::path::PathBuf::new(), text.to_owned());
        let whole = NamedSource::new("f.yaml", text.to_owned());
        // Spans inside the text: miette panics on some outside it.
        for offset in 0..=text.len() {
            for len in [0, 1, 3, 9]
                .into_iter()
                .filter(|l| offset + l <= text.len())
            {
                for context in [0, 1, 2] {
                    let span = SourceSpan::from((offset, len));
                    let ours = file.read_span(&span, context, context);
                    let theirs = whole.read_span(&span, context, context);
                    match (ours, theirs) {
                        (Ok(a), Ok(b)) => {
                            let what = format!("{text:?} at {offset}+{len}, context {context}");
                            assert_eq!(a.data(), b.data(), "{what}");
                            assert_eq!(a.span(), b.span(), "{what}");
                            assert_eq!(a.line(), b.line(), "{what}");
                            assert_eq!(a.column(), b.column(), "{what}");
                            assert_eq!(a.line_count(), b.line_count(), "{what}");
                            assert_eq!(a.name(), b.name(), "{what}");
                        }
                        (Err(_), Err(_)) => {}
                        (a, b) => panic!(
                            "{text:?} at {offset}+{len}: {:?} vs {:?}",
                            a.is_ok(),
                            b.is_ok()
                        ),
                    }
                }
            }
        }
    }

    #[test]
    fn snippets_cut_from_the_line_index_are_miettes() {
        same_snippets("agent: a\nmode: shadow\n---\nagent: b\n  x: 1\n");
        same_snippets("one\n\ntwo\nthree");
        same_snippets("crlf: 1\r\nnext: 2\r\n\r\nlast: 3\r\n");
        same_snippets("lone\rcr: 1\nmore\r\n");
        same_snippets("é: ü\nnext: ✓\n");
        same_snippets("");
    }

    #[test]
    fn line_col_and_offset_of_invert() {
        let text = "a: 1\nbé: 2\n\nc: ✓ 3\n";
        let file = SourceFile::new("f.yaml", std::path::PathBuf::new(), text.to_owned());
        assert_eq!(file.line_col(0), (1, 1));
        assert_eq!(file.line_col(5), (2, 1));
        assert_eq!(file.line_col(9), (2, 4));
        assert_eq!(file.line_col(12), (3, 1));
        assert_eq!(file.line_col(text.len() + 5), (5, 1));
        for (offset, _) in text.char_indices() {
            let (line, col) = file.line_col(offset);
            assert_eq!(file.offset_of(line, col), offset);
        }
        assert_eq!(file.offset_of(9, 1), text.len());
        assert_eq!(file.offset_of(1, 40), 4);
    }

    fn no_egress(file: &Arc<SourceFile>, name: &str) -> Diagnostic {
        let offset = file.text().find(&format!("agent: {name}")).unwrap();
        Diagnostic::at(
            Severity::Warning,
            file,
            offset,
            5,
            format!("agent `{name}` has no `egress`"),
        )
        .with_help("add `egress`")
        .with_group(name, "agents have no `egress`")
    }

    #[test]
    fn repeated_warnings_fold_into_the_first() {
        let names = ["a0", "a1", "a2", "a3", "a4"];
        let text: String = names.iter().map(|n| format!("agent: {n}\n---\n")).collect();
        let file = SourceFile::new("f.yaml", std::path::PathBuf::new(), text);
        let other = Diagnostic::bare(Severity::Warning, "something else");
        let mut diags = vec![no_egress(&file, "a0"), other.clone()];
        diags.extend(names[1..].iter().map(|n| no_egress(&file, n)));

        let folded = group(&diags);
        assert_eq!(folded.len(), 2);
        assert_eq!(
            folded[0].message(),
            "5 agents have no `egress` (a0, a1, a2, and 2 more)"
        );
        assert_eq!(folded[0].location(), diags[0].location());
        assert_eq!(folded[0].help_text(), Some("add `egress`"));
        assert_eq!(folded[1].message(), "something else");

        let three = group(&diags[2..5]);
        assert_eq!(three[0].message(), "3 agents have no `egress` (a1, a2, a3)");
        // One alone is left as it is.
        let one = group(&diags[..1]);
        assert_eq!(render(&one[0]), render(&diags[0]));
    }
}
