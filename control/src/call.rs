//! The call an approval is about, as people read it in Slack, Teams and
//! the dashboard: `METHOD host path`, the parameters as `name: value`
//! lines, then the request id and body size.
//!
//! The gateway sends the parameters already masked (DLP applied, bounded);
//! this only lays them out. A summary of another shape (an older gateway,
//! or none) is shown as its JSON, as it was given.

use serde_json::Value;

/// A summary the gateway sent in its known shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CallView {
    /// `METHOD host path`.
    pub line: String,
    /// `name: value`, one line each, in the order the gateway sent them.
    pub params: Vec<String>,
    /// The gateway left parameters out or cut values or the path.
    pub truncated: bool,
    /// `request id … · N bytes`, for small text.
    pub meta: String,
}

impl CallView {
    /// The parameter lines as one text (`(no parameters)` when none).
    pub fn params_text(&self) -> String {
        if self.params.is_empty() {
            "(no parameters)".to_owned()
        } else {
            self.params.join("\n")
        }
    }
}

/// The summary laid out for people, or `None` when it is not of the shape
/// the gateway sends (`method`, `host`, `path` and a `params` object).
pub(crate) fn view(summary: &Value) -> Option<CallView> {
    let text = |k: &str| summary.get(k).and_then(Value::as_str);
    let (method, host, path) = (text("method")?, text("host")?, text("path")?);
    let params = summary.get("params")?.as_object()?;
    let truncated = summary
        .get("params_truncated")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut meta = Vec::new();
    if let Some(id) = text("request_id").filter(|id| !id.is_empty()) {
        meta.push(format!("request id {}", one_line(id)));
    }
    if let Some(n) = summary.get("body_bytes").and_then(Value::as_u64) {
        meta.push(format!("{n} bytes"));
    }
    Some(CallView {
        line: format!("{} {} {}", one_line(method), one_line(host), one_line(path)),
        params: params
            .iter()
            .map(|(k, v)| format!("{}: {}", one_line(k), value(v)))
            .collect(),
        truncated,
        meta: meta.join(" · "),
    })
}

/// The summary as JSON, as it was given (`(none)` without one).
pub(crate) fn raw(summary: Option<&Value>) -> String {
    summary
        .filter(|v| !v.is_null())
        .map(|v| serde_json::to_string_pretty(v).unwrap_or_default())
        .unwrap_or_else(|| "(none)".into())
}

/// A string shown as is unless it would break the layout: with a line
/// break or other control character (a value that could pass for a line
/// of its own, `amount: 1`), or empty, it is shown quoted, escaped.
fn one_line(s: &str) -> String {
    if s.is_empty() || s.chars().any(char::is_control) {
        Value::from(s).to_string()
    } else {
        s.to_owned()
    }
}

/// A value: a string as [`one_line`], anything else (numbers, a value
/// given twice, an object) as compact JSON.
fn value(v: &Value) -> String {
    match v {
        Value::String(s) => one_line(s),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_gateway_summary_reads_as_lines() {
        let s = json!({"method": "POST", "host": "api.stripe.com", "path": "/v1/payment_intents",
            "request_id": "r-1", "body_bytes": 64, "params_truncated": false,
            "params": {"amount": "7500", "memo": "card [REDACTED:credit_card]", "tags": ["a", "b"]}});
        let v = view(&s).unwrap();
        assert_eq!(v.line, "POST api.stripe.com /v1/payment_intents");
        assert_eq!(
            v.params,
            [
                "amount: 7500",
                "memo: card [REDACTED:credit_card]",
                "tags: [\"a\",\"b\"]"
            ]
        );
        assert!(!v.truncated);
        assert_eq!(v.meta, "request id r-1 · 64 bytes");
    }

    #[test]
    fn a_value_cannot_pass_for_a_line_of_its_own() {
        let s = json!({"method": "POST", "host": "h", "path": "/\nGET evil /",
            "params": {"memo": "x\namount: 1", "": ""}});
        let v = view(&s).unwrap();
        assert_eq!(v.line, "POST h \"/\\nGET evil /\"");
        assert!(v.params.iter().all(|l| !l.contains('\n')), "{:?}", v.params);
        assert!(v.params.contains(&"memo: \"x\\namount: 1\"".to_owned()));
    }

    #[test]
    fn another_shape_is_not_laid_out() {
        assert_eq!(view(&json!({"memo": "x"})), None);
        assert_eq!(
            view(&json!({"method": "GET", "host": "h", "path": "/"})),
            None
        );
        assert_eq!(raw(None), "(none)");
        assert_eq!(raw(Some(&json!({"a": 1}))), "{\n  \"a\": 1\n}");
    }
}
