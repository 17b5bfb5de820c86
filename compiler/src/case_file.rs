//! Reading `*.cases.yaml` files into [`aegis_cases::format::Case`]s, with
//! the front-end's YAML reader, so case files get the same diagnostics
//! (file:line:col, help, "did you mean") as policies. The format itself is
//! described in [`aegis_cases::format`].

use std::path::Path;
use std::sync::Arc;

use aegis_cases::format::{parse_rfc3339, Case, CaseRequest, EnvoyExpect, Expect, Protocol};
use base64::Engine as _;

use crate::frontend::yaml::{self, Kind, Node};
use crate::frontend::{Cx, Diagnostic, SourceFile};

const CASE_KEYS: &[&str] = &[
    "name",
    "agent",
    "tenant",
    "now",
    "request",
    "expect",
    "envoy",
    "protocols",
];
const REQUEST_KEYS: &[&str] = &["method", "url", "headers", "body", "body_base64"];
const EXPECT_KEYS: &[&str] = &[
    "decision",
    "reason_contains",
    "rule",
    "body",
    "body_base64",
    "body_contains",
    "body_not_contains",
];
const DECISIONS: &[&str] = &["allow", "deny", "sanitize", "approval_needed"];
const ENVOY: &[&str] = &["reject"];
const PROTOCOLS: &[&str] = &["http1", "http2"];

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
    let envoy = match f.get("envoy") {
        Some(n) => cx
            .choice(n, "envoy", ENVOY)
            .map(|_| Some(EnvoyExpect::Reject)),
        None => Some(None),
    };
    let protocols = match f.get("protocols") {
        Some(n) => protocols(cx, n),
        None => Some(Protocol::ALL.to_vec()),
    };
    let (line, _) = file.line_col(node.offset);
    Some(Case {
        name: name?.to_owned(),
        agent: agent?,
        tenant: tenant?,
        now: now?,
        request: request?,
        expect: expect?,
        envoy: envoy?,
        protocols: protocols?,
        location: (file.name.clone(), line),
    })
}

/// `protocols: [http1, http2]` (or one name); at least one, no repeats.
fn protocols(cx: &mut Cx<'_>, node: &Node) -> Option<Vec<Protocol>> {
    let items: Vec<&Node> = match &node.kind {
        Kind::Seq(items) => items.iter().collect(),
        _ => vec![node],
    };
    if items.is_empty() {
        cx.error(
            node,
            "`protocols` must name at least one protocol",
            "give `[http1]`, `[http2]`, or leave `protocols` out for both",
        );
        return None;
    }
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for item in items {
        let p = match cx.choice(item, "protocols", PROTOCOLS) {
            Some("http1") => Protocol::Http1,
            Some(_) => Protocol::Http2,
            None => {
                ok = false;
                continue;
            }
        };
        if out.contains(&p) {
            cx.error(
                item,
                format!("`{}` is listed twice in `protocols`", p.as_str()),
                "list each protocol once",
            );
            ok = false;
        }
        out.push(p);
    }
    out.sort();
    ok.then_some(out)
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
    let body = body_or_base64(
        cx,
        f.get("body"),
        f.get("body_base64"),
        f.key("body_base64"),
    );
    Some(CaseRequest {
        method: method?,
        url: url?.to_owned(),
        headers: headers?,
        body: body?,
    })
}

/// `headers`: a mapping, or a list of one-entry mappings (a header given
/// several times, in order).
fn headers(cx: &mut Cx<'_>, node: &Node) -> Option<Vec<(String, String)>> {
    let entries = match &node.kind {
        Kind::Seq(items) => {
            let mut entries = Vec::with_capacity(items.len());
            let mut ok = true;
            for item in items {
                let found = match item.as_map().map(<[_]>::len) {
                    Some(1) => {
                        entries.extend(cx.open_map(item, "headers").unwrap_or_default());
                        continue;
                    }
                    Some(n) => format!("a mapping with {n} entries"),
                    None => item.type_name().to_owned(),
                };
                cx.error(
                    item,
                    format!("items of a `headers` list must be one-entry mappings, found {found}"),
                    "write one header per item, e.g. `- {authorization: \"Bearer a\"}`",
                );
                ok = false;
            }
            if !ok {
                return None;
            }
            entries
        }
        Kind::Map(_) => cx.open_map(node, "headers")?,
        _ => {
            cx.error(
                node,
                format!(
                    "`headers` must be a mapping or a list, found {}",
                    node.type_name()
                ),
                "give `{name: value, ...}`, or a list `[{name: value}, ...]` \
                 to send a header more than once",
            );
            return None;
        }
    };
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

/// `body` or `body_base64` (the key node of the latter for errors) of a
/// request or an expectation, as bytes.
fn body_or_base64(
    cx: &mut Cx<'_>,
    text: Option<&Node>,
    b64: Option<&Node>,
    b64_key: Option<&Node>,
) -> Option<Option<Vec<u8>>> {
    match (text, b64) {
        (Some(_), Some(n)) => {
            cx.error(
                b64_key.unwrap_or(n),
                "`body` and `body_base64` are exclusive",
                "give the body as text in `body`, or as bytes in `body_base64`",
            );
            None
        }
        (Some(n), None) => body(cx, n, "body").map(|b| b.map(String::into_bytes)),
        (None, Some(n)) => base64_body(cx, n).map(Some),
        (None, None) => Some(None),
    }
}

/// `body_base64`: standard base64 (RFC 4648 section 4, padded); ASCII
/// whitespace is ignored so long bodies can be folded.
fn base64_body(cx: &mut Cx<'_>, node: &Node) -> Option<Vec<u8>> {
    let text = cx.str(node, "body_base64")?;
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    match base64::engine::general_purpose::STANDARD.decode(compact.as_bytes()) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            cx.error(
                node,
                format!("invalid `body_base64`: {e}"),
                "give standard base64 (`A-Z a-z 0-9 + /`, padded with `=`), \
                 e.g. the output of `base64 -w0 FILE`",
            );
            None
        }
    }
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
    let body = body_or_base64(
        cx,
        f.get("body"),
        f.get("body_base64"),
        f.key("body_base64"),
    );
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            a.request.body.as_deref(),
            Some(&b"amount=1200&currency=usd"[..])
        );
        assert_eq!(a.envoy, None);
        assert_eq!(a.protocols, vec![Protocol::Http1, Protocol::Http2]);
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
                &br#"{"jsonrpc":"2.0","id":1,"params":{"name":"read_file","arguments":{"path":"/etc/passwd","n":1.5,"ok":true}}}"#[..]
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
    fn headers_as_a_list_keep_repeats_and_order() {
        let src = r#"
- name: two credentials
  request:
    url: https://api.stripe.com/v1/x
    headers: [{Authorization: "Bearer a"}, {authorization: "Bearer b"}, {content-type: application/json}, {X-N: 1}]
  expect: {decision: deny}
- name: block style
  request:
    url: https://api.stripe.com/v1/x
    headers:
      - host: evil.example
      - host: api.stripe.com
  expect: {decision: deny}
"#;
        let cases = parse_cases("c.cases.yaml", src).unwrap();
        let pairs = |c: &Case| -> Vec<(String, String)> { c.request.headers.clone() };
        assert_eq!(
            pairs(&cases[0]),
            vec![
                ("authorization".to_owned(), "Bearer a".to_owned()),
                ("authorization".to_owned(), "Bearer b".to_owned()),
                ("content-type".to_owned(), "application/json".to_owned()),
                ("x-n".to_owned(), "1".to_owned()),
            ]
        );
        assert_eq!(cases[0].request.header("AUTHORIZATION"), Some("Bearer a"));
        assert!(!cases[0].request.has_header("host"));
        assert_eq!(
            pairs(&cases[1]),
            vec![
                ("host".to_owned(), "evil.example".to_owned()),
                ("host".to_owned(), "api.stripe.com".to_owned()),
            ]
        );
    }

    #[test]
    fn bad_header_lists() {
        let src = "- name: x\n  request:\n    url: http://a/\n    headers: [{a: 1, b: 2}]\n  expect: {decision: allow}\n";
        let e = parse_cases("c.cases.yaml", src).unwrap_err();
        assert_eq!(
            e.message(),
            "items of a `headers` list must be one-entry mappings, found a mapping with 2 entries"
        );
        assert_eq!(e.location().unwrap().1, 4);
        assert!(e.help_text().unwrap().contains("one header per item"));

        let src = "- name: x\n  request:\n    url: http://a/\n    headers:\n      - authorization\n  expect: {decision: allow}\n";
        let e = parse_cases("c.cases.yaml", src).unwrap_err();
        assert_eq!(
            e.message(),
            "items of a `headers` list must be one-entry mappings, found a string"
        );
        assert_eq!(e.location().unwrap().1, 5);

        let src = "- name: x\n  request:\n    url: http://a/\n    headers: [{a: [1]}]\n  expect: {decision: allow}\n";
        let e = parse_cases("c.cases.yaml", src).unwrap_err();
        assert_eq!(e.message(), "header `a` must be a string, found a list");

        let src = "- name: x\n  request:\n    url: http://a/\n    headers: token\n  expect: {decision: allow}\n";
        let e = parse_cases("c.cases.yaml", src).unwrap_err();
        assert_eq!(
            e.message(),
            "`headers` must be a mapping or a list, found a string"
        );
    }

    #[test]
    fn body_base64_gives_bytes() {
        // gzip of "hello", and bytes that are not UTF-8; whitespace folds.
        let src = r#"
- name: gzip
  request:
    method: POST
    url: https://a.example/x
    body_base64: "H4sIAAAAAAAAA8tIzcnJBwCGphA2BQAAAA=="
  expect:
    decision: sanitize
    body_base64: |
      //7/
      AA==
- name: text expect
  request: {url: https://a.example/x, body: ""}
  expect: {decision: allow, body: "é"}
"#;
        let cases = parse_cases("c.cases.yaml", src).unwrap();
        let gz = cases[0].request.body.as_deref().unwrap();
        assert_eq!(&gz[..3], &[0x1f, 0x8b, 0x08]);
        assert_eq!(gz.len(), 25);
        assert_eq!(
            cases[0].expect.body.as_deref(),
            Some(&[0xff, 0xfe, 0xff, 0][..])
        );
        assert_eq!(cases[1].request.body.as_deref(), Some(&b""[..]));
        assert_eq!(cases[1].expect.body.as_deref(), Some("é".as_bytes()));
    }

    #[test]
    fn bad_body_base64() {
        let src = "- name: x\n  request:\n    url: http://a/\n    body: hi\n    body_base64: aGk=\n  expect: {decision: allow}\n";
        let e = parse_cases("c.cases.yaml", src).unwrap_err();
        assert_eq!(e.message(), "`body` and `body_base64` are exclusive");
        assert_eq!(e.location(), Some(("c.cases.yaml".to_owned(), 5, 5)));

        let src = "- name: x\n  request:\n    url: http://a/\n    body_base64: \"a*k=\"\n  expect: {decision: allow}\n";
        let e = parse_cases("c.cases.yaml", src).unwrap_err();
        assert!(
            e.message().starts_with("invalid `body_base64`: "),
            "{}",
            e.message()
        );
        assert!(e.help_text().unwrap().contains("standard base64"));

        let src = "- name: x\n  request: {url: http://a/}\n  expect: {decision: allow, body: a, body_base64: YQ==}\n";
        let e = parse_cases("c.cases.yaml", src).unwrap_err();
        assert_eq!(e.message(), "`body` and `body_base64` are exclusive");

        let src = "- name: x\n  request:\n    url: http://a/\n    body_base64: 12\n  expect: {decision: allow}\n";
        let e = parse_cases("c.cases.yaml", src).unwrap_err();
        assert_eq!(
            e.message(),
            "`body_base64` must be a string, found a number"
        );
    }

    #[test]
    fn url_kept_as_written() {
        let src = "- name: x\n  request: {url: \"https://api.stripe.com/v1//x/./y/%70a;x=1?q=%2F#frag\"}\n  expect: {decision: deny}\n";
        let c = &parse_cases("c.cases.yaml", src).unwrap()[0];
        assert_eq!(
            c.request.url,
            "https://api.stripe.com/v1//x/./y/%70a;x=1?q=%2F#frag"
        );
    }

    #[test]
    fn envoy_and_protocols() {
        let src = r#"
- name: both keys
  envoy: reject
  protocols: [http1]
  request: {url: http://a/}
  expect: {decision: allow}
- name: one name, not a list
  protocols: http2
  request: {url: http://a/}
  expect: {decision: allow}
- name: both, any order
  protocols: [http2, http1]
  request: {url: http://a/}
  expect: {decision: allow}
"#;
        let cases = parse_cases("c.cases.yaml", src).unwrap();
        assert_eq!(cases[0].envoy, Some(EnvoyExpect::Reject));
        assert_eq!(cases[0].protocols, vec![Protocol::Http1]);
        assert!(cases[0].runs_over(Protocol::Http1));
        assert!(!cases[0].runs_over(Protocol::Http2));
        assert_eq!(cases[1].protocols, vec![Protocol::Http2]);
        assert_eq!(cases[2].protocols, Protocol::ALL.to_vec());

        let bad = |extra: &str| {
            let src = format!("- name: x\n{extra}\n  request: {{url: http://a/}}\n  expect: {{decision: allow}}\n");
            parse_cases("c.cases.yaml", &src).unwrap_err()
        };
        let e = bad("  envoy: refuse");
        assert_eq!(e.message(), "invalid `envoy` `refuse`");
        assert!(e.help_text().unwrap().contains("`reject`"));
        let e = bad("  protocols: [http3]");
        assert_eq!(e.message(), "invalid `protocols` `http3`");
        assert_eq!(e.location().unwrap().1, 2);
        let e = bad("  protocols: []");
        assert_eq!(e.message(), "`protocols` must name at least one protocol");
        let e = bad("  protocols: [http1, http1]");
        assert_eq!(e.message(), "`http1` is listed twice in `protocols`");
    }

    #[test]
    fn chunked_is_read_from_transfer_encoding() {
        let src = "- name: x\n  request:\n    url: http://a/\n    headers: {Transfer-Encoding: Chunked}\n  expect: {decision: allow}\n";
        assert!(parse_cases("c.cases.yaml", src).unwrap()[0]
            .request
            .chunked());
        let src = "- name: x\n  request: {url: http://a/}\n  expect: {decision: allow}\n";
        assert!(!parse_cases("c.cases.yaml", src).unwrap()[0]
            .request
            .chunked());
    }

    #[test]
    fn the_module_doc_example_parses() {
        let src = r#"
- name: two credentials, a gzip body, a raw path
  agent: finance-agent
  protocols: [http1]           # Envoy runner: HTTP/1.1 only (default both)
  envoy: reject                # Envoy's codec refuses it before any filter
  request:
    method: POST
    url: https://api.stripe.com/v1//payment_intents;x=1#frag
    headers:                   # a list: a header more than once, in order
      - {authorization: "Bearer a"}
      - {authorization: "Bearer b"}
      - {host: evil.example}
      - {content-encoding: gzip}
    body_base64: H4sIAAAAAAAAA0vMzS/NK7E1BABhiKXoCAAAAA==   # gzip bytes
  expect: {decision: deny}"#;
        let c = &parse_cases("doc.cases.yaml", src).unwrap()[0];
        assert_eq!(c.envoy, Some(EnvoyExpect::Reject));
        assert_eq!(c.protocols, vec![Protocol::Http1]);
        assert_eq!(c.request.headers.len(), 4);
        assert_eq!(
            c.request.url,
            "https://api.stripe.com/v1//payment_intents;x=1#frag"
        );
        assert!(c
            .request
            .body
            .as_deref()
            .unwrap()
            .starts_with(&[0x1f, 0x8b]));
    }

    #[test]
    fn yaml_escapes_are_characters_not_bytes() {
        let cases = parse_cases(
            "c.cases.yaml",
            "- name: x\n  request: {url: http://a/}\n  expect:\n    decision: sanitize\n    body_contains: [\"\\xFE\"]\n",
        )
        .unwrap();
        // `\xFE` in YAML is U+00FE, two bytes in UTF-8, not the byte 0xFE.
        assert_eq!(cases[0].expect.body_contains, vec!["\u{fe}".to_owned()]);
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
