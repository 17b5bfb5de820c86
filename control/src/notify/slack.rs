//! Slack: the approval as a Block Kit message (`chat.postMessage`) with
//! Approve / Deny buttons and a link to the dashboard, updated in place
//! (`chat.update`) once decided; or, for a tenant with an incoming
//! webhook, the same message with the link only.
//!
//! Clicks come back to `POST /slack/interactions`, which trusts a click
//! only when Slack's signature verifies (HMAC-SHA256 with the app's
//! signing secret over `v0:{timestamp}:{body}`), the timestamp is within
//! five minutes, and the same signature was not seen before (kept in the
//! store, so that replicas agree). The Slack user must be mapped to an
//! approver of the approval's tenant; the decision is then recorded by
//! [`crate::api::approvals::decide_as`] as that person.

use super::outbox::{self, Job, Outcome};
use super::{bounded, dashboard_url, utc_text, Http, Tenant};
use crate::api::approvals::{decide_as, DecisionRequest};
use crate::auth::{Caller, Role};
use crate::call;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{now_ms, Store};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Sha256;
use sqlx::Row;

/// The `action_id`s of the buttons; their `value` is the approval id.
pub const APPROVE: &str = "aegis_approve";
pub const DENY: &str = "aegis_deny";
/// The link button: Slack reports its clicks too; they are acknowledged.
pub const OPEN: &str = "aegis_open";

/// How far a request's timestamp may be from now (Slack's advice).
pub const MAX_SKEW_SECS: i64 = 300;
/// Replays are refused while their timestamp would pass: remembered a bit
/// longer than the window.
const REPLAY_KEEP_MS: i64 = 2 * MAX_SKEW_SECS * 1000;
/// Largest interaction body read (the payload carries the whole message).
const MAX_BODY_BYTES: usize = 256 * 1024;
/// The call's parameters shown in the message, in bytes of JSON (a
/// section's text may be 3000 characters).
const MAX_SUMMARY_BYTES: usize = 2400;

/// Escapes text for Slack's mrkdwn: `&`, `<` and `>` are control
/// characters there (`<!channel>`, `<url|text>`), so an agent's parameters
/// cannot mention everyone or show a link of their own.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Text safe inside a ``` code block: escaped, and no ``` of its own to
/// close the block early.
fn code(s: &str) -> String {
    escape(s).replace("```", "`\u{200b}`\u{200b}`")
}

/// `render` of `text` cut so that the rendered text is at most `max`
/// bytes: escaping lengthens text (`<` is `&lt;`), and Slack refuses a
/// block whose text is over its limit; cut before escaping, an entity is
/// never cut in half.
fn fit(text: &str, max: usize, render: impl Fn(&str) -> String) -> String {
    let mut keep = max;
    loop {
        let out = render(&bounded(text, keep));
        if out.len() <= max || keep == 0 {
            return out;
        }
        keep /= 2;
    }
}

fn s<'a>(a: &'a Value, k: &str) -> &'a str {
    a.get(k).and_then(Value::as_str).unwrap_or("")
}

/// `<!date^...>`: shown in each reader's time zone, with a UTC fallback.
fn date(unix: i64) -> String {
    format!(
        "<!date^{unix}^{{date_short_pretty}} at {{time}}|{}>",
        utc_text(unix)
    )
}

fn field(title: &str, value: &str) -> Value {
    json!({"type": "mrkdwn", "text": format!("*{title}*\n{}", fit(value, 1900, escape))})
}

/// The message of approval `a` (as the API shows it): the facts, the
/// call, and while it is pending the buttons (`buttons`) or the link only.
pub fn message(a: &Value, public_url: &str, buttons: bool) -> (String, Vec<Value>) {
    let id = s(a, "approval_id");
    let status = s(a, "status");
    let link = dashboard_url(public_url, id);
    let who = format!("{}/{}", s(a, "tenant"), s(a, "agent"));
    let text = match status {
        "pending" => format!(
            "Approval needed: {} wants {} {}",
            escape(&who),
            escape(s(a, "tool")),
            escape(s(a, "action"))
        ),
        other => format!(
            "Approval {other}: {} {} {}",
            escape(&who),
            escape(s(a, "tool")),
            escape(s(a, "action"))
        ),
    };
    let header = match status {
        "pending" => "Approval needed",
        "approved" | "redeemed" => "Approved",
        "denied" => "Denied",
        _ => "Expired",
    };
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": header}}),
        json!({"type": "section", "fields": [
            field("Agent", &who),
            field("Tool", s(a, "tool")),
            field("Action", s(a, "action")),
            field("Rule", s(a, "rule")),
        ]}),
        json!({"type": "section", "text": {"type": "mrkdwn",
            "text": format!("*Reason*\n{}", fit(s(a, "reason"), 2000, escape))}}),
    ];
    blocks.extend(call_blocks(a.get("summary")));
    let expires = a.get("expires_at").and_then(Value::as_i64).unwrap_or(0);
    if status == "pending" {
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn",
            "text": format!("Expires {} · `{}`", date(expires), escape(id))}]}));
        let mut elements = Vec::new();
        if buttons {
            elements.push(
                json!({"type": "button", "action_id": APPROVE, "style": "primary",
                "text": {"type": "plain_text", "text": "Approve"}, "value": id}),
            );
            elements.push(
                json!({"type": "button", "action_id": DENY, "style": "danger",
                "text": {"type": "plain_text", "text": "Deny"}, "value": id}),
            );
        }
        elements.push(json!({"type": "button", "action_id": OPEN,
            "text": {"type": "plain_text", "text": "Open in dashboard"}, "url": link}));
        blocks.push(json!({"type": "actions", "block_id": "aegis_decision", "elements": elements}));
    } else {
        let by = a.get("decided_by").and_then(Value::as_str);
        let at = a.get("decided_at").and_then(Value::as_i64);
        let mut line = match (status, by, at) {
            ("expired", _, None) => format!("Expired {}, not decided", date(expires)),
            ("expired", _, _) => format!("Expired {}", date(expires)),
            (_, Some(by), Some(at)) => {
                let verb = if status == "denied" {
                    "Denied"
                } else {
                    "Approved"
                };
                format!("{verb} by *{}* {}", escape(by), date(at))
            }
            _ => header.to_owned(),
        };
        if let Some(c) = a
            .get("comment")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
        {
            line.push_str(&format!(": {}", fit(c, 1000, escape)));
        }
        line.push_str(&format!(" · <{link}|Open in dashboard> · `{}`", escape(id)));
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": line}]}));
    }
    (text, blocks)
}

/// The call: `METHOD host path`, its parameters in a code block, the
/// request id and size in small text; a summary of another shape as its
/// JSON.
fn call_blocks(summary: Option<&Value>) -> Vec<Value> {
    let Some(v) = summary.and_then(call::view) else {
        let text = call::raw(summary);
        return vec![json!({"type": "section", "text": {"type": "mrkdwn",
            "text": format!("*Call*\n```{}```", fit(&text, MAX_SUMMARY_BYTES, code))}})];
    };
    let mut small = v.meta.clone();
    if v.truncated {
        if !small.is_empty() {
            small.push_str(" · ");
        }
        small.push_str("parameters left out or cut to keep the message small");
    }
    // Inline code keeps a host from being linked; a backtick of the call's
    // own would end it early.
    let line = |t: &str| escape(t).replace('`', "'");
    let mut blocks = vec![
        json!({"type": "section", "text": {"type": "mrkdwn",
            "text": format!("*Call*\n`{}`", fit(&v.line, 1000, line))}}),
        json!({"type": "section", "text": {"type": "mrkdwn",
            "text": format!("```{}```", fit(&v.params_text(), MAX_SUMMARY_BYTES, code))}}),
    ];
    if !small.is_empty() {
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn",
            "text": fit(&small, 1000, escape)}]}));
    }
    blocks
}

/// Calls a Web API method with the bot token.
async fn api(s: &AppState, method: &str, body: &Value) -> Result<Value, Outcome> {
    let Some(app) = &s.notify.slack else {
        return Err(Outcome::Dropped("no slack app is configured".into()));
    };
    let Some(token) = &app.bot_token else {
        return Err(Outcome::Dropped("the slack app has no bot token".into()));
    };
    let http = super::post(
        &s.notify,
        format!("{}/{method}", app.api_url),
        vec![("authorization".into(), format!("Bearer {token}"))],
        body.to_string(),
    )
    .await;
    match http {
        Http::Ok(text) => {
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if v.get("ok").and_then(Value::as_bool) == Some(true) {
                Ok(v)
            } else {
                let error = v
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("not a slack answer");
                Err(Outcome::Failed {
                    error: format!("slack {method}: {}", bounded(error, 200)),
                    after: None,
                })
            }
        }
        other => Err(match Outcome::of(other) {
            Outcome::Failed { error, after } => Outcome::Failed {
                error: format!("slack {method}: {error}"),
                after,
            },
            o => o,
        }),
    }
}

/// Delivers a bot notification: posts the message (created) or updates
/// it (decided, or expired undecided).
pub async fn deliver(s: &AppState, t: &Tenant, job: &Job, a: &Value) -> Outcome {
    let Some(channel) = t.slack.as_ref().and_then(|c| c.channel.as_ref()) else {
        return Outcome::Dropped("the tenant has no slack channel any more".into());
    };
    let (text, blocks) = message(a, &s.settings.public_url, true);
    if job.event == outbox::Event::Created.as_str() {
        let body = json!({"channel": channel, "text": text, "blocks": blocks,
                          "unfurl_links": false, "unfurl_media": false});
        let v = match api(s, "chat.postMessage", &body).await {
            Ok(v) => v,
            Err(o) => return o,
        };
        // `chat.update` needs the channel id and ts Slack answered with.
        let posted = v.get("channel").and_then(Value::as_str).unwrap_or(channel);
        let Some(ts) = v.get("ts").and_then(Value::as_str) else {
            return Outcome::Delivered;
        };
        if let Err(e) = sqlx::query(
            "INSERT INTO slack_messages (approval_id, target, channel, ts, posted_ms) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (approval_id, target) DO NOTHING",
        )
        .bind(&job.approval_id)
        .bind(&job.target)
        .bind(posted)
        .bind(ts)
        .bind(now_ms())
        .execute(s.store.pool())
        .await
        {
            tracing::warn!(error = %e, approval = %job.approval_id, "cannot keep the slack message's ts");
        }
        return Outcome::Delivered;
    }
    let row = sqlx::query(
        "SELECT channel, ts FROM slack_messages WHERE approval_id = $1 AND target = $2",
    )
    .bind(&job.approval_id)
    .bind(&job.target)
    .fetch_optional(s.store.pool())
    .await;
    let (posted, ts): (String, String) = match row {
        Ok(Some(r)) => match (r.try_get("channel"), r.try_get("ts")) {
            (Ok(c), Ok(t)) => (c, t),
            _ => return Outcome::Dropped("unreadable slack message row".into()),
        },
        Ok(None) => {
            // The post may still be on its way: its delivery renders the
            // decided message if it goes out after the decision.
            return match outbox::created_status(s, &job.approval_id, &job.target).await {
                Ok(Some(st)) if st == "pending" || st == "retrying" => Outcome::Later,
                Ok(_) => Outcome::Delivered,
                Err(e) => Outcome::Failed {
                    error: format!("store error: {e}"),
                    after: None,
                },
            };
        }
        Err(e) => {
            return Outcome::Failed {
                error: format!("store error: {e}"),
                after: None,
            }
        }
    };
    let body = json!({"channel": posted, "ts": ts, "text": text, "blocks": blocks});
    match api(s, "chat.update", &body).await {
        Ok(_) => Outcome::Delivered,
        Err(o) => o,
    }
}

/// Delivers to an incoming webhook: the message with its dashboard link
/// (incoming webhooks cannot take button clicks).
pub async fn deliver_webhook(s: &AppState, t: &Tenant, a: &Value) -> Outcome {
    let Some(url) = t.slack.as_ref().and_then(|c| c.webhook_url.clone()) else {
        return Outcome::Dropped("the tenant has no slack webhook any more".into());
    };
    let (text, blocks) = message(a, &s.settings.public_url, false);
    let body = json!({"text": text, "blocks": blocks, "unfurl_links": false});
    Outcome::of(super::post(&s.notify, url, Vec::new(), body.to_string()).await)
}

/// Forgets signatures older than the replay window.
pub async fn prune_replays(store: &Store) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM slack_replays WHERE seen_ms < $1")
        .bind(now_ms() - REPLAY_KEEP_MS)
        .execute(store.pool())
        .await
        .map(|_| ())
}

/// Whether `signature` (`v0=<hex>`) is Slack's for `timestamp` and `body`
/// under `secret`, compared in constant time.
pub fn verify_signature(secret: &[u8], timestamp: &str, body: &[u8], signature: &str) -> bool {
    let Some(hex) = signature.strip_prefix("v0=") else {
        return false;
    };
    let Some(given) = unhex(hex) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[derive(Debug, Deserialize)]
struct Payload {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    user: Option<User>,
    #[serde(default)]
    actions: Vec<Action>,
    #[serde(default)]
    response_url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct User {
    id: String,
}

#[derive(Debug, Deserialize)]
struct Action {
    action_id: String,
    #[serde(default)]
    value: Option<String>,
}

fn refused(message: impl Into<String>) -> Response {
    ApiError::new(StatusCode::UNAUTHORIZED, "bad_slack_request", message).into_response()
}

/// `POST /slack/interactions`: Slack's interactivity request URL.
pub async fn interactions(State(s): State<AppState>, req: Request) -> Response {
    let Some(secret) = s
        .notify
        .slack
        .as_ref()
        .and_then(|a| a.signing_secret.clone())
    else {
        return ApiError::not_found("slack interactivity is not configured").into_response();
    };
    let (parts, body) = req.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let body = match tokio::time::timeout(
        crate::extract::HEADER_READ_TIMEOUT,
        axum::body::to_bytes(body, MAX_BODY_BYTES),
    )
    .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => {
            return crate::extract::body_error(StatusCode::PAYLOAD_TOO_LARGE, String::new())
                .into_response()
        }
        Err(_) => {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "the body did not arrive in time",
            )
            .into_response()
        }
    };
    let (Some(timestamp), Some(signature)) = (
        header("x-slack-request-timestamp"),
        header("x-slack-signature"),
    ) else {
        return refused("missing `X-Slack-Request-Timestamp` or `X-Slack-Signature`");
    };
    if !verify_signature(&secret, &timestamp, &body, &signature) {
        tracing::warn!("slack interaction refused: bad signature");
        return refused("the slack signature does not verify");
    }
    let now = now_ms();
    let fresh = timestamp
        .parse::<i64>()
        .is_ok_and(|t| (now / 1000).abs_diff(t) <= MAX_SKEW_SECS.unsigned_abs());
    if !fresh {
        tracing::warn!(timestamp = %timestamp, "slack interaction refused: timestamp out of the window");
        return refused("the slack request timestamp is more than 5 minutes away");
    }
    let first = sqlx::query(
        "INSERT INTO slack_replays (signature, seen_ms) VALUES ($1, $2) ON CONFLICT (signature) DO NOTHING",
    )
    .bind(&signature)
    .bind(now)
    .execute(s.store.pool())
    .await;
    match first {
        Ok(r) if r.rows_affected() == 1 => {}
        Ok(_) => {
            tracing::warn!("slack interaction refused: replayed");
            return refused("this slack request was already received");
        }
        Err(e) => return ApiError::from(e).into_response(),
    }
    let payload = form_urlencoded::parse(&body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.into_owned());
    let Some(p) = payload.and_then(|p| serde_json::from_str::<Payload>(&p).ok()) else {
        return ApiError::bad_request("invalid_body", "the body has no slack `payload`")
            .into_response();
    };
    if p.kind != "block_actions" {
        return StatusCode::OK.into_response();
    }
    let Some((approve, id)) = p.actions.iter().find_map(|a| {
        let approve = match a.action_id.as_str() {
            APPROVE => true,
            DENY => false,
            _ => return None,
        };
        Some((approve, a.value.clone()?))
    }) else {
        // A click on the link button: nothing to record.
        return StatusCode::OK.into_response();
    };
    let user = p.user.map(|u| u.id).unwrap_or_default();
    let reply = |text: String| tell(&s, p.response_url.clone(), text);
    let tenant = match sqlx::query("SELECT tenant FROM approvals WHERE id = $1")
        .bind(&id)
        .fetch_optional(s.store.pool())
        .await
    {
        Ok(Some(r)) => r.try_get::<String, _>("tenant").unwrap_or_default(),
        Ok(None) => {
            reply(format!("Aegis has no approval `{}`.", escape(&id)));
            return StatusCode::OK.into_response();
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    let approver = s
        .notify
        .tenants
        .get(&tenant)
        .and_then(|t| t.slack.as_ref())
        .and_then(|sl| sl.approvers.get(&user));
    let Some(approver) = approver else {
        tracing::warn!(slack_user = %user, approval = %id, tenant = %tenant,
            "slack click refused: the user is not an approver of the tenant");
        reply(format!(
            "You are not an approver of tenant `{}` in Aegis: nothing was recorded. Ask an administrator to map your Slack user (`{}`) to an approver.",
            escape(&tenant),
            escape(&user)
        ));
        return StatusCode::OK.into_response();
    };
    let caller = Caller {
        role: Role::Approver,
        tenant: tenant.clone(),
        subject: approver.clone(),
    };
    let decision = DecisionRequest {
        approve,
        comment: None,
        via: Some(format!("slack:{user}")),
    };
    match decide_as(&s, &caller, &id, &decision).await {
        // The message is updated by the outbox, as after any decision.
        Ok(_) => StatusCode::OK.into_response(),
        Err(e) if e.status.is_server_error() => e.into_response(),
        Err(e) => {
            reply(format!("Not recorded: {}.", escape(&e.message)));
            StatusCode::OK.into_response()
        }
    }
}

/// Whether `url` may receive a reply: Slack's own response URLs, or the
/// host the Web API calls go to (a Slack-compatible server).
fn reply_allowed(s: &AppState, url: &str) -> bool {
    let origin = |u: &str| -> Option<String> {
        let (scheme, rest) = u.split_once("://")?;
        let host = rest.split(['/', '?', '#']).next()?;
        Some(format!("{scheme}://{host}/"))
    };
    let api = s.notify.slack.as_ref().and_then(|a| origin(&a.api_url));
    url.starts_with("https://hooks.slack.com/") || (api.is_some() && origin(url) == api)
}

/// Tells the person who clicked, privately (an ephemeral message through
/// the payload's `response_url`), after the answer to Slack.
fn tell(s: &AppState, response_url: Option<String>, text: String) {
    let Some(url) = response_url.filter(|u| reply_allowed(s, u)) else {
        return;
    };
    let s = s.clone();
    tokio::spawn(async move {
        let body = json!({"response_type": "ephemeral", "replace_original": false, "text": text});
        if let Http::Status { .. } | Http::Transport(_) =
            super::post(&s.notify, url, Vec::new(), body.to_string()).await
        {
            tracing::warn!("cannot tell the slack user why their click was refused");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_signature_of_the_documented_example() {
        // The example of Slack's "Verifying requests from Slack".
        let secret = b"8f742231b10e8888abcd99yyyzzz85a5";
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let sig = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
        assert!(verify_signature(secret, "1531420618", body, sig));
        assert!(!verify_signature(secret, "1531420619", body, sig));
        assert!(!verify_signature(b"other", "1531420618", body, sig));
        assert!(!verify_signature(secret, "1531420618", body, "v0=zz"));
        assert!(!verify_signature(secret, "1531420618", body, "a2114d57"));
    }

    #[test]
    fn texts_fit_slack_limits_once_escaped() {
        let big = "<>&`".repeat(3000);
        for summary in [
            json!({"memo": big}),
            json!({"method": big, "host": big, "path": big, "request_id": big, "body_bytes": 1,
                   "params_truncated": true, "params": {"memo": big, big.clone(): 1}}),
        ] {
            let a = json!({"approval_id": "apr_1", "status": "pending", "reason": "<".repeat(5000),
                           "summary": summary, "tool": "t", "action": "a"});
            let (_, blocks) = message(&a, "https://x", true);
            fits(&blocks);
        }
    }

    fn fits(blocks: &[Value]) {
        for b in blocks {
            if let Some(t) = b["text"]["text"].as_str() {
                assert!(t.len() <= 3000, "{}", t.len());
                assert!(!t.contains("&l… (cut)") && !t.contains("&a… (cut)"));
            }
            for f in b["fields"].as_array().into_iter().flatten() {
                assert!(f["text"].as_str().unwrap_or_default().len() <= 2000);
            }
            for e in b["elements"].as_array().into_iter().flatten() {
                assert!(e["text"].as_str().unwrap_or_default().len() <= 3000);
            }
        }
    }

    /// Every mrkdwn text of the message, in order.
    fn texts(blocks: &[Value]) -> Vec<String> {
        let mut out = Vec::new();
        for b in blocks {
            out.extend(b["text"]["text"].as_str().map(str::to_owned));
            for e in b["elements"].as_array().into_iter().flatten() {
                out.extend(e["text"].as_str().map(str::to_owned));
            }
        }
        out
    }

    #[test]
    fn the_call_reads_as_a_line_and_its_parameters() {
        let a = json!({"approval_id": "apr_1", "status": "pending", "tool": "t", "action": "a",
            "summary": {"method": "POST", "host": "api.stripe.com", "path": "/v1/payment_intents",
                "request_id": "r-1", "body_bytes": 64, "params_truncated": true,
                "params": {"amount": "7500", "memo": "<!channel> card [REDACTED:credit_card]"}}});
        let (_, blocks) = message(&a, "https://x", true);
        let texts = texts(&blocks);
        let at = texts.iter().position(|t| t.starts_with("*Call*")).unwrap();
        assert_eq!(
            texts[at],
            "*Call*\n`POST api.stripe.com /v1/payment_intents`"
        );
        assert_eq!(
            texts[at + 1],
            "```amount: 7500\nmemo: &lt;!channel&gt; card [REDACTED:credit_card]```"
        );
        assert_eq!(
            texts[at + 2],
            "request id r-1 · 64 bytes · parameters left out or cut to keep the message small"
        );
    }

    #[test]
    fn a_summary_of_another_shape_is_shown_as_json() {
        let a = json!({"approval_id": "apr_1", "status": "pending", "summary": {"memo": "x"}});
        let (_, blocks) = message(&a, "https://x", true);
        assert!(texts(&blocks).contains(&"*Call*\n```{\n  \"memo\": \"x\"\n}```".to_owned()));
    }

    #[test]
    fn mrkdwn_cannot_mention_or_link() {
        assert_eq!(
            escape("<!channel> & <http://x|y>"),
            "&lt;!channel&gt; &amp; &lt;http://x|y&gt;"
        );
        assert!(!code("a```b").contains("```"));
    }
}
