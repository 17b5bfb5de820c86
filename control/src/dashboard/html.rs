//! HTML for the dashboard: the one escaping function every page uses, the
//! page frame (navigation, style, the countdown script) and small helpers
//! for times, money and SVG bars.

use std::fmt::Write as _;

/// `text` safe in HTML element content and in double- or single-quoted
/// attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` percent-encoded for a URL path segment or query value.
pub fn url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A Unix time in seconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn time(secs: i64) -> String {
    let day = crate::day::utc_day(secs.saturating_mul(1000));
    let s = secs.rem_euclid(86_400);
    format!("{day} {:02}:{:02}:{:02} UTC", s / 3600, s / 60 % 60, s % 60)
}

/// A Unix time in seconds as an HTML `datetime` value: `YYYY-MM-DDTHH:MM:SSZ`.
pub fn iso(secs: i64) -> String {
    let day = crate::day::utc_day(secs.saturating_mul(1000));
    let s = secs.rem_euclid(86_400);
    format!("{day}T{:02}:{:02}:{:02}Z", s / 3600, s / 60 % 60, s % 60)
}

/// A duration in seconds for people: `42s`, `3m 05s`, `2h 10m`.
pub fn duration(secs: i64) -> String {
    let secs = secs.max(0);
    if secs < 60 {
        format!("{secs}s")
    } else if secs < 3600 {
        format!("{}m {:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h {:02}m", secs / 3600, secs / 60 % 60)
    }
}

/// Dollars with cents.
pub fn money(usd: f64) -> String {
    format!("${usd:.2}")
}

/// A horizontal bar: `used` of `limit`, red past 90 %.
pub fn bar(used: f64, limit: f64, label: &str) -> String {
    let frac = if limit > 0.0 {
        (used / limit).clamp(0.0, 1.0)
    } else {
        1.0
    };
    let class = if frac >= 0.9 { "bar-hot" } else { "bar-ok" };
    format!(
        "<svg class=\"bar\" viewBox=\"0 0 100 10\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"{label}\">\
         <rect class=\"bar-bg\" x=\"0\" y=\"0\" width=\"100\" height=\"10\"/>\
         <rect class=\"{class}\" x=\"0\" y=\"0\" width=\"{:.1}\" height=\"10\"/></svg>",
        frac * 100.0,
        label = esc(label),
    )
}

/// Which section a page belongs to, for the navigation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Approvals,
    Agents,
    Policy,
    Audit,
    None,
}

/// Who is signed in, as the frame shows it.
pub struct Who<'a> {
    pub subject: &'a str,
    pub role: &'a str,
    pub tenant: &'a str,
    pub csrf: &'a str,
}

const STYLE: &str = r#"
:root{--fg:#1b1f24;--muted:#4b5563;--bg:#fff;--panel:#f4f6f8;--line:#d0d7de;--accent:#0b57d0;--ok:#146c2e;--bad:#b3261e;--warn:#8a4b00}
*{box-sizing:border-box}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header{background:#112;color:#fff;padding:.5rem 1rem;display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:center}
header .brand{font-weight:700;margin-right:1rem}
header nav{display:flex;flex-wrap:wrap;gap:.25rem}
header nav a{color:#fff;text-decoration:none;padding:.25rem .5rem;border-radius:4px}
header nav a[aria-current=page]{background:#fff;color:#112}
header .who{margin-left:auto;display:flex;gap:.5rem;align-items:center;flex-wrap:wrap}
header .who form{margin:0}
main{padding:1rem;max-width:72rem;margin:0 auto;overflow-wrap:anywhere}
h1{font-size:1.5rem;margin:.5rem 0 1rem}
h2{font-size:1.2rem;margin:1.5rem 0 .5rem}
a{color:var(--accent)}
a:focus-visible,button:focus-visible,input:focus-visible,textarea:focus-visible,select:focus-visible{outline:3px solid #f5a623;outline-offset:2px}
.card{background:var(--panel);border:1px solid var(--line);border-radius:6px;padding:.75rem 1rem;margin:.75rem 0;overflow-wrap:anywhere}
.meta{color:var(--muted);font-size:.9rem}
pre{background:#fff;border:1px solid var(--line);padding:.5rem;overflow-x:auto;white-space:pre-wrap;overflow-wrap:anywhere;font-size:.85rem}
.table-wrap{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid var(--line);vertical-align:top;overflow-wrap:break-word}
td code{display:block;min-width:14rem;overflow-wrap:anywhere}
td.nowrap{white-space:nowrap}
td.id{overflow-wrap:anywhere;min-width:8rem}
th{background:var(--panel)}
label{display:block;font-weight:600;margin:.5rem 0 .25rem}
input[type=text],input[type=search],input[type=number],textarea,select{width:100%;max-width:40rem;font:inherit;padding:.4rem;border:1px solid #6b7280;border-radius:4px}
textarea{min-height:4rem}
button{font:inherit;padding:.45rem 1rem;border-radius:4px;border:1px solid #1b1f24;background:#fff;color:var(--fg);cursor:pointer;margin:.25rem .5rem .25rem 0}
button.approve{background:var(--ok);color:#fff;border-color:var(--ok)}
button.deny{background:var(--bad);color:#fff;border-color:var(--bad)}
header button{background:transparent;color:#fff;border-color:#fff;padding:.2rem .6rem}
.status{font-weight:700}
.status-pending{color:var(--warn)}.status-approved,.status-redeemed{color:var(--ok)}.status-denied,.status-expired{color:var(--bad)}
.bar{width:100%;max-width:20rem;height:.9rem;display:block}
.bar-bg{fill:#e5e7eb}.bar-ok{fill:var(--ok)}.bar-hot{fill:var(--bad)}
.flash{border-left:4px solid var(--accent);background:#eef4ff;padding:.5rem 1rem;margin:.5rem 0}
.error{border-left:4px solid var(--bad);background:#fdecea;padding:.5rem 1rem;margin:.5rem 0}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(16rem,1fr));gap:.75rem}
.filters{display:grid;grid-template-columns:repeat(auto-fit,minmax(10rem,1fr));gap:.5rem;align-items:end}
.diff span{display:block;min-height:1.2em}.diff .add{background:#e6ffec}.diff .del{background:#ffebe9}
@media (max-width:40rem){main{padding:.5rem}th,td{padding:.3rem}}
"#;

/// Updates every `<time data-expires>` once a second: the one script.
const SCRIPT: &str = "function t(){var n=Date.now()/1000;document.querySelectorAll('time[data-expires]').forEach(function(e){var s=Math.max(0,Math.floor(e.dataset.expires-n));e.textContent=s>0?(s>=3600?Math.floor(s/3600)+'h '+Math.floor(s/60)%60+'m':s>=60?Math.floor(s/60)+'m '+('0'+s%60).slice(-2)+'s':s+'s'):'expired';});}t();setInterval(t,1000);";

/// A whole page. `body` is HTML built with [`esc`]; `nonce` is the one in
/// this response's Content-Security-Policy.
pub fn page(
    title: &str,
    section: Section,
    who: Option<&Who<'_>>,
    nonce: &str,
    body: &str,
) -> String {
    let mut h = String::with_capacity(body.len() + 4096);
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Aegis</title><style nonce=\"{nonce}\">{STYLE}</style></head><body><header>\
         <span class=\"brand\">Aegis</span>",
        esc(title)
    );
    if let Some(who) = who {
        h.push_str("<nav aria-label=\"Sections\">");
        for (s, href, name) in [
            (Section::Approvals, "/dashboard/approvals", "Approvals"),
            (Section::Agents, "/dashboard/agents", "Agents"),
            (Section::Policy, "/dashboard/policy", "Policy"),
            (Section::Audit, "/dashboard/audit", "Audit"),
        ] {
            let current = if s == section {
                " aria-current=\"page\""
            } else {
                ""
            };
            let _ = write!(h, "<a href=\"{href}\"{current}>{name}</a>");
        }
        let _ = write!(
            h,
            "</nav><div class=\"who\"><span>{} ({}, tenant {})</span>\
             <form method=\"post\" action=\"/dashboard/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button type=\"submit\">Sign out</button></form></div>",
            esc(who.subject),
            esc(who.role),
            esc(who.tenant),
            esc(who.csrf)
        );
    }
    let _ = write!(
        h,
        "</header><main>{body}</main><script nonce=\"{nonce}\">{SCRIPT}</script></body></html>"
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"y\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;y&quot;"
        );
        assert_eq!(url("a b/c?d"), "a%20b%2Fc%3Fd");
    }

    #[test]
    fn times_and_durations() {
        assert_eq!(time(1_796_601_600 + 3661), "2026-12-07 01:01:01 UTC");
        assert_eq!(iso(1_796_601_600 + 3661), "2026-12-07T01:01:01Z");
        assert_eq!(duration(42), "42s");
        assert_eq!(duration(185), "3m 05s");
        assert_eq!(duration(7800), "2h 10m");
    }
}
