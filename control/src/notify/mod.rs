//! Notifications: approvals reach people through Slack (Block Kit with
//! Approve / Deny buttons and signed interactions), Microsoft Teams (an
//! Adaptive Card posted to a Workflows webhook) and a signed generic
//! webhook.
//!
//! A new approval enqueues its notifications in the transaction that
//! creates it, a decision enqueues the updates in the transaction that
//! records it (the [`outbox`]); a background worker delivers them with
//! bounded retries, off the API's path. The configuration is the file of
//! `aegis serve --notify` ([`NotifyConfig`]); secrets are named by
//! environment variable (`*_env`) or file (`*_file`), never written in it.

pub mod outbox;
pub mod slack;
pub mod teams;
pub mod webhook;

use crate::error::Error;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Slack's Web API, unless the configuration points elsewhere.
pub const SLACK_API_URL: &str = "https://slack.com/api";

/// The file of `aegis serve --notify`, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// The Slack app (bot token, signing secret), shared by the tenants.
    #[serde(default)]
    pub slack: Option<SlackAppConfig>,
    #[serde(default)]
    pub retry: RetryConfig,
    /// Longest one delivery may take (connect, send, answer).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Where each tenant's approvals go.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackAppConfig {
    /// Base of the Web API methods (`{api_url}/chat.postMessage`).
    #[serde(default)]
    pub api_url: Option<String>,
    #[serde(default)]
    pub bot_token_env: Option<String>,
    #[serde(default)]
    pub bot_token_file: Option<String>,
    #[serde(default)]
    pub signing_secret_env: Option<String>,
    #[serde(default)]
    pub signing_secret_file: Option<String>,
}

/// How failed deliveries are retried: after `first_ms`, doubling up to
/// `max_ms`, `attempts` tries in all.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    #[serde(default = "default_first_ms")]
    pub first_ms: u64,
    #[serde(default = "default_max_ms")]
    pub max_ms: u64,
    #[serde(default = "default_attempts")]
    pub attempts: u32,
}

fn default_first_ms() -> u64 {
    2_000
}
fn default_max_ms() -> u64 {
    300_000
}
fn default_attempts() -> u32 {
    8
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            first_ms: default_first_ms(),
            max_ms: default_max_ms(),
            attempts: default_attempts(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    #[serde(default)]
    pub slack: Option<TenantSlackConfig>,
    #[serde(default)]
    pub teams: Option<TeamsConfig>,
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
}

/// A tenant's Slack: a channel the bot posts to (with buttons), or an
/// incoming webhook (no buttons: a link to the dashboard).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSlackConfig {
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub webhook_url_env: Option<String>,
    #[serde(default)]
    pub webhook_url_file: Option<String>,
    /// Slack user id -> the approver's name (`decided_by`).
    #[serde(default)]
    pub approvers: BTreeMap<String, String>,
}

/// A Teams Workflows webhook: its URL carries a signature (`sig=`), so it
/// is a secret.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamsConfig {
    #[serde(default)]
    pub webhook_url_env: Option<String>,
    #[serde(default)]
    pub webhook_url_file: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    #[serde(default)]
    pub secret_env: Option<String>,
    #[serde(default)]
    pub secret_file: Option<String>,
}

/// The configuration with its secrets read, as the service uses it.
pub struct Notifier {
    pub slack: Option<SlackApp>,
    pub retry: RetryConfig,
    pub timeout: Duration,
    pub tenants: BTreeMap<String, Tenant>,
    pub(crate) http: ureq::Agent,
    /// Wakes this replica's worker when it enqueues (other replicas'
    /// rows are found by polling).
    pub(crate) wake: tokio::sync::Notify,
    pub(crate) metrics: std::sync::Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

pub struct SlackApp {
    pub api_url: String,
    pub bot_token: Option<String>,
    pub signing_secret: Option<Vec<u8>>,
}

#[derive(Default)]
pub struct Tenant {
    pub slack: Option<TenantSlack>,
    pub teams: Option<String>,
    pub webhooks: Vec<Webhook>,
}

pub struct TenantSlack {
    pub channel: Option<String>,
    pub webhook_url: Option<String>,
    pub approvers: BTreeMap<String, String>,
}

pub struct Webhook {
    pub url: String,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("tenants", &self.tenants.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn usage(message: String) -> Error {
    Error::Usage(format!("--notify: {message}"))
}

/// A secret named by an environment variable or a file: exactly one.
fn secret(
    what: &str,
    env: Option<&String>,
    file: Option<&String>,
) -> Result<Option<String>, Error> {
    let value = match (env, file) {
        (Some(_), Some(_)) => {
            return Err(usage(format!(
                "`{what}`: give `{what}_env` or `{what}_file`, not both"
            )))
        }
        (Some(var), None) => std::env::var(var).map_err(|_| {
            usage(format!(
                "`{what}_env`: the environment variable `{var}` is not set"
            ))
        })?,
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| usage(format!("`{what}_file`: cannot read `{path}`: {e}")))?,
        (None, None) => return Ok(None),
    };
    let value = value.trim().to_owned();
    if value.is_empty() {
        return Err(usage(format!("`{what}` is empty")));
    }
    Ok(Some(value))
}

fn http_url(what: &str, url: &str) -> Result<(), Error> {
    if (url.starts_with("https://") || url.starts_with("http://"))
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        Ok(())
    } else {
        Err(usage(format!(
            "`{what}` must be an http:// or https:// URL"
        )))
    }
}

/// A URL that carries or receives a credential (the bot token, a Teams or
/// Slack webhook URL): HTTPS, or plain HTTP to this machine only (a
/// Slack-compatible server in tests).
fn credential_url(what: &str, url: &str) -> Result<(), Error> {
    http_url(what, url)?;
    let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .any(|p| {
            url.strip_prefix(p)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/']))
        });
    if url.starts_with("https://") || loopback {
        Ok(())
    } else {
        Err(usage(format!(
            "`{what}` must be an https:// URL (plain http:// only to 127.0.0.1 or localhost): it carries a credential"
        )))
    }
}

impl Notifier {
    /// Checks the configuration and reads its secrets.
    pub fn resolve(cfg: NotifyConfig) -> Result<Notifier, Error> {
        let slack = match &cfg.slack {
            None => None,
            Some(s) => {
                let api_url = s
                    .api_url
                    .clone()
                    .unwrap_or_else(|| SLACK_API_URL.to_owned())
                    .trim_end_matches('/')
                    .to_owned();
                credential_url("slack.api_url", &api_url)?;
                Some(SlackApp {
                    api_url,
                    bot_token: secret(
                        "bot_token",
                        s.bot_token_env.as_ref(),
                        s.bot_token_file.as_ref(),
                    )?,
                    signing_secret: secret(
                        "signing_secret",
                        s.signing_secret_env.as_ref(),
                        s.signing_secret_file.as_ref(),
                    )?
                    .map(String::into_bytes),
                })
            }
        };
        let r = &cfg.retry;
        if r.attempts == 0 || r.first_ms == 0 || r.max_ms < r.first_ms {
            return Err(usage(
                "`retry`: `attempts` and `first_ms` must be at least 1, and `max_ms` at least `first_ms`".into(),
            ));
        }
        let mut tenants = BTreeMap::new();
        for (name, t) in cfg.tenants {
            crate::api::name("tenant", &name)
                .map_err(|_| usage(format!("`{name}` is not a tenant name")))?;
            let mut out = Tenant::default();
            if let Some(s) = t.slack {
                let webhook_url = secret(
                    "webhook_url",
                    s.webhook_url_env.as_ref(),
                    s.webhook_url_file.as_ref(),
                )?;
                match (&s.channel, &webhook_url) {
                    (Some(_), None) => {
                        if slack.as_ref().and_then(|a| a.bot_token.as_ref()).is_none() {
                            return Err(usage(format!(
                                "tenant `{name}`: a Slack `channel` needs `slack.bot_token_env` or `slack.bot_token_file`"
                            )));
                        }
                    }
                    (None, Some(u)) => credential_url("slack.webhook_url", u)?,
                    _ => {
                        return Err(usage(format!(
                            "tenant `{name}`: Slack takes a `channel` (posted by the bot) or a `webhook_url_env`/`webhook_url_file`, one of the two"
                        )))
                    }
                }
                if !s.approvers.is_empty()
                    && slack
                        .as_ref()
                        .and_then(|a| a.signing_secret.as_ref())
                        .is_none()
                {
                    return Err(usage(format!(
                        "tenant `{name}`: Slack `approvers` need `slack.signing_secret_env` or `slack.signing_secret_file` to verify their clicks"
                    )));
                }
                for approver in s.approvers.values() {
                    crate::api::name("approver", approver).map_err(|_| {
                        usage(format!(
                            "tenant `{name}`: `{approver}` is not an approver name"
                        ))
                    })?;
                }
                out.slack = Some(TenantSlack {
                    channel: s.channel,
                    webhook_url,
                    approvers: s.approvers,
                });
            }
            if let Some(teams) = t.teams {
                let url = secret(
                    "webhook_url",
                    teams.webhook_url_env.as_ref(),
                    teams.webhook_url_file.as_ref(),
                )?
                .ok_or_else(|| {
                    usage(format!(
                        "tenant `{name}`: `teams` needs `webhook_url_env` or `webhook_url_file`"
                    ))
                })?;
                credential_url("teams.webhook_url", &url)?;
                out.teams = Some(url);
            }
            for w in t.webhooks {
                http_url("webhooks.url", &w.url)?;
                if out.webhooks.iter().any(|o: &Webhook| o.url == w.url) {
                    return Err(usage(format!(
                        "tenant `{name}`: the webhook `{}` is listed twice",
                        w.url
                    )));
                }
                let secret = secret("secret", w.secret_env.as_ref(), w.secret_file.as_ref())?
                    .ok_or_else(|| {
                        usage(format!(
                            "tenant `{name}`: the webhook `{}` needs `secret_env` or `secret_file` (its deliveries are signed)",
                            w.url
                        ))
                    })?;
                out.webhooks.push(Webhook {
                    url: w.url,
                    secret: secret.into_bytes(),
                });
            }
            tenants.insert(name, out);
        }
        Ok(Notifier::with(slack, cfg.retry, cfg.timeout_ms, tenants))
    }

    /// A service that notifies no one (no `--notify`).
    pub fn none() -> Notifier {
        Notifier::with(None, RetryConfig::default(), None, BTreeMap::new())
    }

    fn with(
        slack: Option<SlackApp>,
        retry: RetryConfig,
        timeout_ms: Option<u64>,
        tenants: BTreeMap<String, Tenant>,
    ) -> Notifier {
        let timeout = Duration::from_millis(timeout_ms.unwrap_or(10_000).clamp(100, 60_000));
        let http = ureq::AgentBuilder::new()
            .timeout_connect(timeout)
            .timeout(timeout)
            // A receiver's redirect is not followed: the URL configured is
            // the one trusted with the payload.
            .redirects(0)
            .user_agent(concat!("aegis-control/", env!("CARGO_PKG_VERSION")))
            .build();
        Notifier {
            slack,
            retry,
            timeout,
            tenants,
            http,
            wake: tokio::sync::Notify::new(),
            metrics: std::sync::Mutex::default(),
        }
    }

    /// Counts one delivery's outcome on a channel (the metric
    /// `aegis_notifications_total`).
    pub(crate) fn count(&self, channel: &'static str, outcome: &'static str) {
        if let Ok(mut m) = self.metrics.lock() {
            *m.entry((channel, outcome)).or_default() += 1;
        }
    }

    /// The metric in Prometheus' text format.
    pub fn render_metrics(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::from(
            "# HELP aegis_notifications_total Notification deliveries by channel and outcome.\n\
             # TYPE aegis_notifications_total counter\n",
        );
        if let Ok(m) = self.metrics.lock() {
            for ((channel, outcome), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "aegis_notifications_total{{channel=\"{channel}\",outcome=\"{outcome}\"}} {n}"
                );
            }
        }
        out
    }
}

/// What one HTTP call out came back with.
#[derive(Debug)]
pub(crate) enum Http {
    /// A 2xx answer and its body.
    Ok(String),
    /// Any other status, with `Retry-After` (seconds) if given.
    Status {
        status: u16,
        retry_after: Option<u64>,
    },
    /// No answer: refused, timed out, TLS. Never the URL (a Teams URL is a
    /// secret).
    Transport(String),
}

/// Bodies read back are small (Slack's answers); a receiver sending more
/// is cut off.
const MAX_ANSWER_BYTES: u64 = 64 * 1024;

fn read_body(r: ureq::Response) -> String {
    use std::io::Read as _;
    let mut s = String::new();
    let _ = r
        .into_reader()
        .take(MAX_ANSWER_BYTES)
        .read_to_string(&mut s);
    s
}

/// POSTs `body` (JSON) to `url` with `headers`. Blocking: call it from
/// `spawn_blocking`.
pub(crate) fn post_json(
    agent: &ureq::Agent,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Http {
    let mut req = agent
        .post(url)
        .set("content-type", "application/json; charset=utf-8");
    for (k, v) in headers {
        req = req.set(k, v);
    }
    match req.send_string(body) {
        Ok(r) if (200..300).contains(&r.status()) => Http::Ok(read_body(r)),
        Ok(r) => Http::Status {
            status: r.status(),
            retry_after: None,
        },
        Err(ureq::Error::Status(status, r)) => {
            let retry_after = r
                .header("retry-after")
                .and_then(|v| v.trim().parse::<u64>().ok());
            Http::Status {
                status,
                retry_after,
            }
        }
        Err(ureq::Error::Transport(t)) => Http::Transport(transport_error(&t)),
    }
}

/// [`post_json`] on a blocking thread: the runtime's workers never wait
/// for a receiver.
pub(crate) async fn post(
    n: &Notifier,
    url: String,
    headers: Vec<(String, String)>,
    body: String,
) -> Http {
    let agent = n.http.clone();
    tokio::task::spawn_blocking(move || {
        let h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        post_json(&agent, &url, &h, &body)
    })
    .await
    .unwrap_or_else(|_| Http::Transport("the delivery task failed".into()))
}

fn transport_error(t: &ureq::Transport) -> String {
    let mut source = std::error::Error::source(t);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) {
                return "timed out".into();
            }
        }
        source = e.source();
    }
    match t.kind() {
        ureq::ErrorKind::ConnectionFailed => "connection failed".into(),
        ureq::ErrorKind::Dns => "cannot resolve the host".into(),
        ureq::ErrorKind::Io => "network error".into(),
        ureq::ErrorKind::TooManyRedirects => "redirected (redirects are not followed)".into(),
        other => other.to_string().to_lowercase(),
    }
}

/// A Unix time as `YYYY-MM-DD HH:MM UTC`, the fallback text of dates.
pub(crate) fn utc_text(unix: i64) -> String {
    let day = crate::utc_day(unix.saturating_mul(1000));
    let secs = unix.rem_euclid(86_400);
    format!("{day} {:02}:{:02} UTC", secs / 3600, (secs % 3600) / 60)
}

/// `s` cut to at most `max` bytes on a character boundary, with a mark
/// when cut.
pub(crate) fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… (cut)", s.get(..end).unwrap_or_default())
}

/// The dashboard page of an approval: where a person reviews and decides.
pub(crate) fn dashboard_url(public_url: &str, id: &str) -> String {
    format!(
        "{}/dashboard/approvals/{id}",
        public_url.trim_end_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_bounds() {
        assert_eq!(utc_text(1_796_601_600 + 3_723), "2026-12-07 01:02 UTC");
        assert_eq!(bounded("abcdef", 3), "abc… (cut)");
        assert_eq!(bounded("ééé", 3), "é… (cut)");
        assert_eq!(bounded("ab", 3), "ab");
    }

    #[test]
    fn credentials_travel_over_https_or_stay_on_this_machine() {
        for ok in [
            "https://slack.com/api",
            "http://127.0.0.1:8080/api",
            "http://localhost/api",
        ] {
            assert!(credential_url("u", ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://slack.com/api",
            "http://localhost.evil.example/api",
            "http://127.0.0.1.evil.example/",
            "ftp://x",
        ] {
            assert!(credential_url("u", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_are_not_inline_and_named_once() {
        let cfg = NotifyConfig {
            tenants: [(
                "acme".to_owned(),
                TenantConfig {
                    webhooks: vec![WebhookConfig {
                        url: "https://example.com/h".into(),
                        ..WebhookConfig::default()
                    }],
                    ..TenantConfig::default()
                },
            )]
            .into(),
            ..NotifyConfig::default()
        };
        let e = Notifier::resolve(cfg)
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert!(
            e.as_ref()
                .is_err_and(|m| m.contains("needs `secret_env` or `secret_file`")),
            "{e:?}"
        );
        let cfg = NotifyConfig {
            tenants: [(
                "acme".to_owned(),
                TenantConfig {
                    slack: Some(TenantSlackConfig {
                        channel: Some("C1".into()),
                        ..TenantSlackConfig::default()
                    }),
                    ..TenantConfig::default()
                },
            )]
            .into(),
            ..NotifyConfig::default()
        };
        let e = Notifier::resolve(cfg)
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert!(
            e.as_ref()
                .is_err_and(|m| m.contains("needs `slack.bot_token_env`")),
            "{e:?}"
        );
    }
}
