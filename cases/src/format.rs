//! Request test cases (`*.cases.yaml`): the one corpus that `aegis test`,
//! the wasm host tests and the Envoy end-to-end tests all run.
//!
//! This module is the case model and the rules for finding case files;
//! the compiler reads the YAML into it (`aegis_compiler::case_file`), with
//! the diagnostics of its policy front-end.
//!
//! A file is a YAML list of cases. Besides the basic shape, a case can
//! describe requests a gate must survive:
//!
//! ```yaml
//! - name: two credentials, a gzip body, a raw path
//!   agent: finance-agent
//!   protocols: [http1]           # Envoy runner: HTTP/1.1 only (default both)
//!   envoy: reject                # Envoy's codec refuses it before any filter
//!   request:
//!     method: POST
//!     url: https://api.stripe.com/v1//payment_intents;x=1#frag
//!     headers:                   # a list: a header more than once, in order
//!       - {authorization: "Bearer a"}
//!       - {authorization: "Bearer b"}
//!       - {host: evil.example}
//!       - {content-encoding: gzip}
//!     body_base64: H4sIAAAAAAAAA0vMzS/NK7E1BABhiKXoCAAAAA==   # gzip bytes
//!   expect: {decision: deny}
//! ```
//!
//! - `request.headers`: a mapping, or a list of one-entry mappings to send
//!   a header several times; names are lowercased, order is kept.
//! - `request.body` is text (a mapping or list becomes compact JSON);
//!   `request.body_base64` gives raw bytes instead. The two are exclusive;
//!   `expect.body` / `expect.body_base64` likewise.
//! - `request.url` is used exactly as written: its path and query (and a
//!   `#fragment`) reach the engine, and the wire, byte for byte, with no
//!   normalization. Only a missing path becomes `/`.
//! - **The authority is the url's.** A `host` header in a case does not
//!   change it: the HTTP/1.1 Envoy runner sends such a case in
//!   absolute-form (`POST https://api.stripe.com/v1/x HTTP/1.1`) with the
//!   case's `Host:` line, and Envoy, as RFC 9112 section 3.2.2 requires,
//!   takes the authority from the request-target and replaces `Host` with
//!   it. So the native and wasm runners give the engine the url's
//!   authority and drop the case's `host` headers, as Envoy does.
//! - `envoy: reject`: Envoy's own HTTP codec refuses the request (a 4xx,
//!   or for HTTP/2 a stream reset) before any filter. The Envoy runner
//!   checks that, and that the upstream never saw it; the native and wasm
//!   runners ignore the key and check `expect` as usual.
//! - `protocols`: the protocols the Envoy runner sends the case over
//!   (`http1`, `http2`); both by default. For what one protocol cannot
//!   express (absolute-form, obs-fold, chunked framing).

use std::path::{Path, PathBuf};

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
    /// What Envoy itself does with the request (`envoy:`); `None`: it
    /// hands it to the filter.
    pub envoy: Option<EnvoyExpect>,
    /// The protocols the Envoy runner sends the case over (`protocols:`);
    /// never empty, both by default.
    pub protocols: Vec<Protocol>,
    /// `(file, line)` of the case, for reports.
    pub location: (String, usize),
}

impl Case {
    /// Whether the Envoy runner sends this case over `p`.
    pub fn runs_over(&self, p: Protocol) -> bool {
        self.protocols.contains(&p)
    }
}

/// `envoy:` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvoyExpect {
    /// `reject`: Envoy's codec refuses the request before any filter.
    Reject,
}

/// A protocol the Envoy runner speaks to Envoy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    /// HTTP/1.1 (`http1`).
    Http1,
    /// HTTP/2 with prior knowledge, cleartext (`http2`).
    Http2,
}

impl Protocol {
    pub const ALL: [Protocol; 2] = [Protocol::Http1, Protocol::Http2];

    /// The name used in case files.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CaseRequest {
    /// Uppercase; `GET` when not given.
    pub method: String,
    /// Exactly as written in the case.
    pub url: String,
    /// Names lowercased, order kept, repeats kept.
    pub headers: Vec<(String, String)>,
    /// `body` (as UTF-8) or `body_base64` (decoded).
    pub body: Option<Vec<u8>>,
}

impl CaseRequest {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        aegis_engine::Headers::get(self.headers.as_slice(), name).0
    }

    /// Whether header `name` is given at all.
    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    /// Whether the case asks for a chunked body (`transfer-encoding` with
    /// `chunked` in it).
    pub fn chunked(&self) -> bool {
        self.headers.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expect {
    /// `allow`, `deny`, `sanitize` or `approval_needed`.
    pub decision: String,
    pub reason_contains: Option<String>,
    pub rule: Option<String>,
    /// The exact body forwarded upstream (after any DLP rewrite), from
    /// `body` or `body_base64`.
    pub body: Option<Vec<u8>>,
    pub body_contains: Vec<String>,
    pub body_not_contains: Vec<String>,
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
}
