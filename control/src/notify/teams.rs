//! Microsoft Teams: the approval as an Adaptive Card (version 1.4) posted
//! to a Workflows webhook ("Post to a channel when a webhook request is
//! received"). Such a webhook cannot send button clicks back, so the card's
//! one action opens the approval's dashboard page, where the person
//! decides. Throttling (`429` with `Retry-After`) is retried after the time
//! asked.

use super::outbox::Outcome;
use super::{bounded, dashboard_url, utc_text, Tenant};
use crate::call;
use crate::state::AppState;
use serde_json::{json, Value};

/// The content type of an Adaptive Card attachment.
pub const CARD_CONTENT_TYPE: &str = "application/vnd.microsoft.card.adaptive";

fn s<'a>(a: &'a Value, k: &str) -> &'a str {
    a.get(k).and_then(Value::as_str).unwrap_or("")
}

/// Text with no Markdown link of its own: the card's TextBlocks read a
/// subset of Markdown, and an agent's parameters must not show a link
/// under words of their choosing. (Backslash escapes would show as
/// backslashes in some clients; breaking `](` is enough.)
fn plain(s: &str) -> String {
    s.replace("](", "] (")
}

/// The message a Workflows webhook takes: `type: message` with the card
/// as its one attachment.
pub fn card(a: &Value, public_url: &str) -> Value {
    let id = s(a, "approval_id");
    let link = dashboard_url(public_url, id);
    let expires = a.get("expires_at").and_then(Value::as_i64).unwrap_or(0);
    let fact =
        |title: &str, value: &str| json!({"title": title, "value": plain(&bounded(value, 1000))});
    let mut content = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {"type": "TextBlock", "text": "Approval needed", "weight": "Bolder", "size": "Medium", "wrap": true},
            {"type": "TextBlock", "wrap": true, "text": plain(&format!(
                "{}/{} wants {} {}", s(a, "tenant"), s(a, "agent"), s(a, "tool"), s(a, "action")))},
            {"type": "FactSet", "facts": [
                fact("Agent", &format!("{}/{}", s(a, "tenant"), s(a, "agent"))),
                fact("Tool", s(a, "tool")),
                fact("Action", s(a, "action")),
                fact("Rule", s(a, "rule")),
                fact("Reason", s(a, "reason")),
                fact("Expires", &utc_text(expires)),
                fact("Approval", id),
            ]},
        ],
        "actions": [
            {"type": "Action.OpenUrl", "title": "Review and decide", "url": link},
        ],
    });
    if let Some(body) = content.get_mut("body").and_then(Value::as_array_mut) {
        body.extend(call_blocks(a.get("summary")));
    }
    json!({
        "type": "message",
        "attachments": [{"contentType": CARD_CONTENT_TYPE, "contentUrl": null, "content": content}],
    })
}

/// The call: `METHOD host path`, its parameters in monospace, the request
/// id and size in small text; a summary of another shape as its JSON.
fn call_blocks(summary: Option<&Value>) -> Vec<Value> {
    let Some(v) = summary.and_then(call::view) else {
        let text = call::raw(summary);
        return vec![
            json!({"type": "TextBlock", "text": plain(&bounded(&text, 2400)), "fontType": "Monospace", "wrap": true}),
        ];
    };
    let mut small = v.meta.clone();
    if v.truncated {
        if !small.is_empty() {
            small.push_str(" · ");
        }
        small.push_str("parameters left out or cut to keep the card small");
    }
    let mut blocks = vec![
        json!({"type": "TextBlock", "text": plain(&bounded(&v.line, 1000)), "weight": "Bolder", "wrap": true}),
        json!({"type": "TextBlock", "text": plain(&bounded(&v.params_text(), 2400)), "fontType": "Monospace", "wrap": true}),
    ];
    if !small.is_empty() {
        blocks.push(
            json!({"type": "TextBlock", "text": plain(&bounded(&small, 1000)),
            "size": "Small", "isSubtle": true, "wrap": true}),
        );
    }
    blocks
}

pub async fn deliver(s: &AppState, t: &Tenant, a: &Value) -> Outcome {
    let Some(url) = t.teams.clone() else {
        return Outcome::Dropped("the tenant has no teams webhook any more".into());
    };
    let body = card(a, &s.settings.public_url).to_string();
    Outcome::of(super::post(&s.notify, url, Vec::new(), body).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_show_no_link_of_their_own() {
        let a = json!({"approval_id": "apr_1", "summary": {"memo": "[pay here](https://evil.example)"}});
        let card = card(&a, "https://aegis.example.com").to_string();
        assert!(!card.contains("](https://evil"), "{card}");
        assert!(card.contains("https://aegis.example.com/dashboard/approvals/apr_1"));
    }

    #[test]
    fn the_call_reads_as_a_line_and_its_parameters() {
        let a = json!({"approval_id": "apr_1", "summary": {"method": "POST", "host": "api.stripe.com",
            "path": "/v1/payment_intents", "request_id": "r-1", "body_bytes": 64,
            "params_truncated": false, "params": {"amount": "7500", "memo": "[x](https://evil.example)"}}});
        let card = card(&a, "https://aegis.example.com");
        let texts: Vec<&str> = card["attachments"][0]["content"]["body"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect();
        let at = texts
            .iter()
            .position(|t| *t == "POST api.stripe.com /v1/payment_intents")
            .unwrap();
        assert_eq!(
            texts[at + 1],
            "amount: 7500\nmemo: [x] (https://evil.example)"
        );
        assert_eq!(texts[at + 2], "request id r-1 · 64 bytes");
    }

    #[test]
    fn a_summary_of_another_shape_is_shown_as_json() {
        let a = json!({"approval_id": "apr_1", "summary": {"memo": "x"}});
        let card = card(&a, "https://aegis.example.com").to_string();
        assert!(
            card.contains(r#""text":"{\n  \"memo\": \"x\"\n}""#),
            "{card}"
        );
    }
}
