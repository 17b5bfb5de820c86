//! Request test cases (`*.cases.yaml`): the one corpus that `aegis test`,
//! the wasm host tests and the Envoy end-to-end tests all run.
//!
//! A file is a YAML list of cases; see DESIGN.md section 8.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::frontend::yaml::{self, Kind, Node};
use crate::frontend::{Cx, Diagnostic, SourceFile};

/// One request and the decision it must get.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub name: String,
    /// Authenticated identity given directly (no token needed).
    pub agent: Option<String>,
    pub tenant: Option<String>,
    /// Evaluation time, unix seconds (from RFC 3339 or an integer).
    pub now: Option<i64>,
    pub request: CaseRequest,
    pub expect: Expect,
    /// `(file, line)` of the case, for reports.
    pub location: (String, usize),
}

#[derive(Debug, Clone, PartialEq)]
pub struct CaseRequest {
    /// Uppercase; `GET` when not given.
    pub method: String,
    pub url: String,
    /// Names lowercased, order kept.
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expect {
    /// `allow`, `deny`, `sanitize` or `approval_needed`.
    pub decision: String,
    pub reason_contains: Option<String>,
    pub rule: Option<String>,
    /// The exact body forwarded upstream (after any DLP rewrite).
    pub body: Option<String>,
    pub body_contains: Vec<String>,
    pub body_not_contains: Vec<String>,
}

const CASE_KEYS: &[&str] = &["name", "agent", "tenant", "now", "request", "expect"];
const REQUEST_KEYS: &[&str] = &["method", "url", "headers", "body"];
const EXPECT_KEYS: &[&str] = &[
    "decision",
    "reason_contains",
    "rule",
    "body",
    "body_contains",
    "body_not_contains",
];
const DECISIONS: &[&str] = &["allow", "deny", "sanitize", "approval_needed"];

/// Reads a cases file. On failure returns the first error found.
pub fn load_cases(path: &Path) -> Result<Vec<Case>, Diagnostic> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diagnostic::bare(
            crate::frontend::Severity::Error,
            format!("cannot read `{}`: {e}", path.display()),
        )
    })?;
    parse_cases(&path.display().to_string(), &text)
}

/// Reads cases from text; `name` is the file name shown in diagnostics.
pub fn parse_cases(name: &str, text: &str) -> Result<Vec<Case>, Diagnostic> {
    let dir = Path::new(name)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let file = SourceFile::new(name, dir, text.to_owned());
    let docs = yaml::parse_documents(&file)?;
    let mut diags = Vec::new();
    let mut regexes = std::collections::HashSet::new();
    let mut cases = Vec::new();
    {
        let mut cx = Cx {
            file: &file,
            diags: &mut diags,
            regexes: &mut regexes,
        };
        for doc in &docs {
            let Some(items) = cx.seq(doc, "cases") else {
                continue;
            };
            for item in items {
                if let Some(c) = case(&mut cx, &file, item) {
                    cases.push(c);
                }
            }
        }
    }
    match diags.into_iter().find(Diagnostic::is_error) {
        Some(d) => Err(d),
        None => Ok(cases),
    }
}

fn case(cx: &mut Cx<'_>, file: &Arc<SourceFile>, node: &Node) -> Option<Case> {
    let f = cx.fields(node, "cases", "a test case", CASE_KEYS)?;
    let name = cx
        .required(&f, "name", "a test case", "give the case a `name`")
        .and_then(|n| cx.name(n, "name"));
    let agent = optional_str(cx, f.get("agent"), "agent");
    let tenant = optional_str(cx, f.get("tenant"), "tenant");
    let now = match f.get("now") {
        Some(n) => match &n.kind {
            Kind::Int(i) => i64::try_from(*i).ok().map(Some),
            Kind::Str(s) => parse_rfc3339(s).map(Some),
            _ => None,
        }
        .or_else(|| {
            cx.error(
                n,
                "invalid `now`",
                "give an RFC 3339 time such as `2026-11-25T12:00:00Z`, or unix seconds",
            );
            None
        }),
        None => Some(None),
    };
    let request = cx
        .required(
            &f,
            "request",
            "a test case",
            "give the `request` with `method`, `url`, `headers` and `body`",
        )
        .and_then(|n| request(cx, n));
    let expect = cx
        .required(
            &f,
            "expect",
            "a test case",
            "give the expected outcome, e.g. `expect: {decision: allow}`",
        )
        .and_then(|n| expect(cx, n));
    let (line, _) = file.line_col(node.offset);
    Some(Case {
        name: name?.to_owned(),
        agent: agent?,
        tenant: tenant?,
        now: now?,
        request: request?,
        expect: expect?,
        location: (file.name.clone(), line),
    })
}

/// `Some(None)` when absent, `None` after an error.
fn optional_str(cx: &mut Cx<'_>, node: Option<&Node>, what: &str) -> Option<Option<String>> {
    match node {
        Some(n) => cx.str(n, what).map(|s| Some(s.to_owned())),
        None => Some(None),
    }
}

fn request(cx: &mut Cx<'_>, node: &Node) -> Option<CaseRequest> {
    let f = cx.fields(node, "request", "`request`", REQUEST_KEYS)?;
    let method = match f.get("method") {
        Some(n) => cx.name(n, "method").map(str::to_ascii_uppercase),
        None => Some("GET".to_owned()),
    };
    let url = cx
        .required(
            &f,
            "url",
            "`request`",
            "give the full URL, e.g. `https://api.stripe.com/v1/charges`",
        )
        .and_then(|n| cx.name(n, "url"));
    let headers = match f.get("headers") {
        Some(n) => headers(cx, n),
        None => Some(Vec::new()),
    };
    let body = match f.get("body") {
        Some(n) => body(cx, n, "body"),
        None => Some(None),
    };
    Some(CaseRequest {
        method: method?,
        url: url?.to_owned(),
        headers: headers?,
        body: body?,
    })
}

fn headers(cx: &mut Cx<'_>, node: &Node) -> Option<Vec<(String, String)>> {
    let entries = cx.open_map(node, "headers")?;
    let mut out = Vec::with_capacity(entries.len());
    let mut ok = true;
    for (name, _, value) in entries {
        match value.scalar_text() {
            Some(v) => out.push((name.to_ascii_lowercase(), v)),
            None => {
                cx.error(
                    value,
                    format!(
                        "header `{name}` must be a string, found {}",
                        value.type_name()
                    ),
                    "quote the header value",
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// A body as text; a YAML mapping or list becomes compact JSON.
fn body(cx: &mut Cx<'_>, node: &Node, what: &str) -> Option<Option<String>> {
    match &node.kind {
        Kind::Null => Some(None),
        Kind::Str(s) => Some(Some(s.clone())),
        Kind::Map(_) | Kind::Seq(_) => Some(Some(node.to_json_string())),
        Kind::Bool(_) | Kind::Int(_) | Kind::Float(_) => match node.scalar_text() {
            Some(s) => Some(Some(s)),
            None => {
                cx.error(
                    node,
                    format!("invalid `{what}`"),
                    "give the body as a string or a mapping",
                );
                None
            }
        },
    }
}

fn expect(cx: &mut Cx<'_>, node: &Node) -> Option<Expect> {
    let f = cx.fields(node, "expect", "`expect`", EXPECT_KEYS)?;
    let decision = cx
        .required(
            &f,
            "decision",
            "`expect`",
            "give the expected `decision`: allow, deny, sanitize or approval_needed",
        )
        .and_then(|n| cx.choice(n, "decision", DECISIONS));
    let reason = optional_str(cx, f.get("reason_contains"), "reason_contains");
    let rule = optional_str(cx, f.get("rule"), "rule");
    let body = match f.get("body") {
        Some(n) => body(cx, n, "body"),
        None => Some(None),
    };
    let contains = string_or_list(cx, f.get("body_contains"), "body_contains");
    let not_contains = string_or_list(cx, f.get("body_not_contains"), "body_not_contains");
    Some(Expect {
        decision: decision?.to_owned(),
        reason_contains: reason?,
        rule: rule?,
        body: body?,
        body_contains: contains?,
        body_not_contains: not_contains?,
    })
}

fn string_or_list(cx: &mut Cx<'_>, node: Option<&Node>, what: &str) -> Option<Vec<String>> {
    let Some(node) = node else {
        return Some(Vec::new());
    };
    if let Some(s) = node.as_str() {
        return Some(vec![s.to_owned()]);
    }
    let items = cx.str_list(node, what)?;
    Some(items.into_iter().map(|(s, _)| s.to_owned()).collect())
}

/// Unix seconds of an RFC 3339 time: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±hh:mm)`.
/// Fractions of a second are dropped.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = s.get(from..from + len)?;
        if part.bytes().all(|b| b.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let at = |i: usize| s.as_bytes().get(i).copied();
    let year = num(0, 4)?;
    let month = num(5, 2)?;
    let day = num(8, 2)?;
    let hour = num(11, 2)?;
    let minute = num(14, 2)?;
    let second = num(17, 2)?;
    if at(4) != Some(b'-') || at(7) != Some(b'-') || !matches!(at(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    if at(13) != Some(b':') || at(16) != Some(b':') {
        return None;
    }
    let mut i = 19;
    if at(i) == Some(b'.') {
        i += 1;
        let start = i;
        while at(i).is_some_and(|b| b.is_ascii_digit()) {
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let offset = match at(i) {
        Some(b'Z' | b'z') if i + 1 == s.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == s.len() && at(i + 3) == Some(b':') => {
            let oh = num(i + 1, 2)?;
            let om = num(i + 4, 2)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let secs = oh * 3600 + om * 60;
            if sign == b'+' {
                secs
            } else {
                -secs
            }
        }
        _ => return None,
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Whether `p` names a case file (`*.cases.yaml` / `*.cases.yml`).
pub fn is_cases_file(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".cases.yaml") || n.ends_with(".cases.yml"))
}

/// Case files under each of `roots` (a root may itself be a case file),
/// grouped by the directory that holds them: the cases of a directory are
/// judged by the policies of that directory. Hidden entries are skipped;
/// directories and files come out sorted.
pub fn case_groups(roots: &[PathBuf]) -> Vec<(PathBuf, Vec<PathBuf>)> {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) {
        if p.is_file() {
            if is_cases_file(p) {
                out.push(p.to_path_buf());
            }
            return;
        }
        let Ok(entries) = std::fs::read_dir(p) else {
            return;
        };
        for e in entries.flatten() {
            if !e.file_name().to_string_lossy().starts_with('.') {
                walk(&e.path(), out);
            }
        }
    }
    let mut files = Vec::new();
    for r in roots {
        walk(r, &mut files);
    }
    files.sort();
    files.dedup();
    let mut groups: std::collections::BTreeMap<PathBuf, Vec<PathBuf>> =
        std::collections::BTreeMap::new();
    for f in files {
        let dir = f.parent().map(Path::to_path_buf).unwrap_or_default();
        groups.entry(dir).or_default().push(f);
    }
    groups.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2026-11-25T12:00:00Z"), Some(1_795_608_000));
        assert_eq!(
            parse_rfc3339("2026-11-25T13:30:00+01:30"),
            Some(1_795_608_000)
        );
        assert_eq!(
            parse_rfc3339("2026-11-25T10:00:00-02:00"),
            Some(1_795_608_000)
        );
        assert_eq!(
            parse_rfc3339("2026-11-25T12:00:00.250Z"),
            Some(1_795_608_000)
        );
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(951_782_400));
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Some(-1));
        assert_eq!(parse_rfc3339("2026-02-29T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("2026-11-25"), None);
        assert_eq!(parse_rfc3339("2026-11-25T12:00:00"), None);
        assert_eq!(parse_rfc3339("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("2026-11-25T12:00:00Zjunk"), None);
        assert_eq!(parse_rfc3339("2026-11-25T12:00:00.Z"), None);
    }

    const SAMPLE: &str = r#"
- name: small payment is allowed
  agent: finance-agent
  request:
    method: post
    url: https://api.stripe.com/v1/payment_intents
    headers: {Content-Type: application/x-www-form-urlencoded, X-Count: 3}
    body: amount=1200&currency=usd
  expect: {decision: allow}

- name: json body from yaml
  agent: finance-agent
  tenant: acme
  now: 2026-11-25T12:00:00Z
  request:
    url: https://mcp.files.internal/mcp
    body:
      jsonrpc: "2.0"
      id: 1
      params: {name: read_file, arguments: {path: /etc/passwd, n: 1.5, ok: true}}
  expect:
    decision: sanitize
    reason_contains: ssn
    rule: finance-agent/files/read_file#0
    body_contains: "[REDACTED:ssn]"
    body_not_contains: [123-45-6789, "987"]
"#;

    #[test]
    fn loads_cases() {
        let cases = parse_cases("p/x.cases.yaml", SAMPLE).unwrap();
        assert_eq!(cases.len(), 2);
        let a = &cases[0];
        assert_eq!(a.name, "small payment is allowed");
        assert_eq!(a.agent.as_deref(), Some("finance-agent"));
        assert_eq!(a.request.method, "POST");
        assert_eq!(
            a.request.headers,
            vec![
                (
                    "content-type".to_owned(),
                    "application/x-www-form-urlencoded".to_owned()
                ),
                ("x-count".to_owned(), "3".to_owned())
            ]
        );
        assert_eq!(a.request.body.as_deref(), Some("amount=1200&currency=usd"));
        assert_eq!(a.expect.decision, "allow");
        assert_eq!(a.location, ("p/x.cases.yaml".to_owned(), 2));
        assert!(a.expect.body_contains.is_empty());

        let b = &cases[1];
        assert_eq!(b.tenant.as_deref(), Some("acme"));
        assert_eq!(b.now, Some(1_795_608_000));
        assert_eq!(b.request.method, "GET");
        assert_eq!(
            b.request.body.as_deref(),
            Some(
                r#"{"jsonrpc":"2.0","id":1,"params":{"name":"read_file","arguments":{"path":"/etc/passwd","n":1.5,"ok":true}}}"#
            )
        );
        assert_eq!(b.expect.decision, "sanitize");
        assert_eq!(b.expect.reason_contains.as_deref(), Some("ssn"));
        assert_eq!(
            b.expect.rule.as_deref(),
            Some("finance-agent/files/read_file#0")
        );
        assert_eq!(b.expect.body_contains, vec!["[REDACTED:ssn]".to_owned()]);
        assert_eq!(
            b.expect.body_not_contains,
            vec!["123-45-6789".to_owned(), "987".to_owned()]
        );
        assert_eq!(b.location.1, 11);
    }

    #[test]
    fn unknown_key_in_case() {
        let src = "- name: x\n  request: {url: http://a/}\n  expect: {decison: allow}\n";
        let e = parse_cases("c.cases.yaml", src).unwrap_err();
        assert_eq!(e.message(), "unknown key `decison` in `expect`");
        assert_eq!(e.location(), Some(("c.cases.yaml".to_owned(), 3, 12)));
        assert!(e
            .help_text()
            .unwrap()
            .starts_with("did you mean `decision`?"));
    }

    #[test]
    fn bad_decision_and_now() {
        let src = "- name: x\n  request: {url: http://a/}\n  expect: {decision: allowed}\n";
        let e = parse_cases("c.cases.yaml", src).unwrap_err();
        assert_eq!(e.message(), "invalid `decision` `allowed`");
        assert!(e.help_text().unwrap().contains("did you mean `allow`?"));

        let src = "- name: x\n  now: yesterday\n  request: {url: http://a/}\n  expect: {decision: allow}\n";
        let e = parse_cases("c.cases.yaml", src).unwrap_err();
        assert_eq!(e.message(), "invalid `now`");
        assert_eq!(e.location().unwrap().1, 2);

        let src = "- name: x\n  now: 1700000000\n  request: {url: http://a/}\n  expect: {decision: deny}\n";
        assert_eq!(
            parse_cases("c.cases.yaml", src).unwrap()[0].now,
            Some(1_700_000_000)
        );
    }

    #[test]
    fn missing_keys_and_not_a_list() {
        let e =
            parse_cases("c.cases.yaml", "- name: x\n  expect: {decision: allow}\n").unwrap_err();
        assert_eq!(e.message(), "missing key `request` in a test case");
        let e = parse_cases("c.cases.yaml", "name: x\n").unwrap_err();
        assert_eq!(e.message(), "`cases` must be a list, found a mapping");
        assert!(parse_cases("c.cases.yaml", "# nothing yet\n")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn load_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.cases.yaml");
        std::fs::write(&p, SAMPLE).unwrap();
        assert_eq!(load_cases(&p).unwrap().len(), 2);
        let e = load_cases(&dir.path().join("missing.cases.yaml")).unwrap_err();
        assert!(e.message().starts_with("cannot read"));
        assert_eq!(e.location(), None);
    }
}
