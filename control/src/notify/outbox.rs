//! The outbox: one row per notification to deliver, written in the
//! transaction of the approval event it is about, so that an approval
//! acknowledged is an approval whose notifications will go out (after a
//! crash too). A worker on every replica claims due rows with a lease (an
//! `UPDATE ... WHERE` that only one replica wins), delivers them off the
//! async runtime, and records the outcome: delivered, retried after an
//! exponential backoff, or failed after the last attempt.
//! `GET /v1/notifications` shows them.

use super::{Notifier, Tenant};
use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::state::AppState;
use crate::store::{new_id, now_ms, Write};
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::Row;
use std::sync::Arc;
use std::time::Duration;

/// Deliveries in flight at once on one replica: a receiver that never
/// answers holds one of them until the timeout, not the others.
const PARALLEL: usize = 8;

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Created,
    Decided,
    /// Expired undecided: only the Slack message is updated (its buttons
    /// would answer that the approval expired).
    Expired,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Created => "approval.created",
            Event::Decided => "approval.decided",
            Event::Expired => "approval.expired",
        }
    }
}

/// The channels, as stored and as the metric labels them.
pub const SLACK: &str = "slack";
pub const SLACK_WEBHOOK: &str = "slack_webhook";
pub const TEAMS: &str = "teams";
pub const WEBHOOK: &str = "webhook";

fn channel_label(c: &str) -> &'static str {
    match c {
        SLACK => SLACK,
        SLACK_WEBHOOK => SLACK_WEBHOOK,
        TEAMS => TEAMS,
        WEBHOOK => WEBHOOK,
        _ => "other",
    }
}

/// Where `event` of an approval of `tenant` goes: `(channel, target)`.
/// A decision updates the Slack message the bot posted and is sent to the
/// webhooks; Teams and Slack incoming webhooks cannot edit what they
/// posted, and their link leads to the decided approval anyway.
fn targets(t: &Tenant, event: Event) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(s) = &t.slack {
        match (&s.channel, event) {
            (Some(c), _) => out.push((SLACK, c.clone())),
            (None, Event::Created) => out.push((SLACK_WEBHOOK, String::new())),
            (None, Event::Decided | Event::Expired) => {}
        }
    }
    if t.teams.is_some() && event == Event::Created {
        out.push((TEAMS, String::new()));
    }
    // The webhook's events are `approval.created` and `approval.decided`.
    if event != Event::Expired {
        for w in &t.webhooks {
            out.push((WEBHOOK, w.url.clone()));
        }
    }
    out
}

/// Enqueues the notifications of `event` for approval `id`, in the
/// write `w` that records the event. Returns how many.
pub async fn enqueue(
    w: &mut Write,
    n: &Notifier,
    event: Event,
    tenant: &str,
    id: &str,
    now: i64,
) -> Result<usize, sqlx::Error> {
    let Some(t) = n.tenants.get(tenant) else {
        return Ok(0);
    };
    let targets = targets(t, event);
    for (channel, target) in &targets {
        sqlx::query(
            "INSERT INTO notifications (id, tenant, approval_id, event, channel, target, status, attempts, \
             next_ms, lease_ms, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, 0, $7, $7)",
        )
        .bind(new_id("ntf"))
        .bind(tenant)
        .bind(id)
        .bind(event.as_str())
        .bind(*channel)
        .bind(target)
        .bind(now)
        .execute(&mut *w.tx)
        .await?;
    }
    Ok(targets.len())
}

/// A claimed notification.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub tenant: String,
    pub approval_id: String,
    pub event: String,
    pub channel: String,
    pub target: String,
    pub attempts: i64,
    lease_ms: i64,
}

/// How one delivery attempt went.
#[derive(Debug)]
pub enum Outcome {
    Delivered,
    /// Failed: retried after the backoff (or `after`, when the receiver
    /// said when, if later), until the attempts run out.
    Failed {
        error: String,
        after: Option<Duration>,
    },
    /// Not possible yet (the message to update is not posted yet): tried
    /// again soon, not counted as an attempt.
    Later,
    /// Can never succeed (the channel is no longer configured).
    Dropped(String),
}

impl Outcome {
    /// The outcome of a plain HTTP delivery: any 2xx is delivered.
    pub(crate) fn of(http: super::Http) -> Outcome {
        match http {
            super::Http::Ok(_) => Outcome::Delivered,
            super::Http::Status {
                status,
                retry_after,
                ..
            } => Outcome::Failed {
                error: format!("answered HTTP {status}"),
                after: retry_after.map(Duration::from_secs),
            },
            super::Http::Transport(e) => Outcome::Failed {
                error: e,
                after: None,
            },
        }
    }
}

/// Starts this replica's delivery worker, if any tenant is notified.
pub fn spawn(state: AppState) {
    if state.notify.tenants.is_empty() {
        return;
    }
    tokio::spawn(run(state));
}

async fn run(s: AppState) {
    let permits = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
    // Other replicas' rows and retries coming due are found by polling.
    let poll = Duration::from_millis(s.notify.retry.first_ms.clamp(50, 1000));
    let mut last_prune = std::time::Instant::now();
    loop {
        while let Ok(permit) = permits.clone().try_acquire_owned() {
            match claim(&s).await {
                Ok(Some(job)) => {
                    let s = s.clone();
                    tokio::spawn(async move {
                        deliver(&s, job).await;
                        drop(permit);
                        s.notify.wake.notify_one();
                    });
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim notifications");
                    break;
                }
            }
        }
        if last_prune.elapsed() >= Duration::from_secs(60) {
            last_prune = std::time::Instant::now();
            if let Err(e) = super::slack::prune_replays(&s.store).await {
                tracing::warn!(error = %e, "cannot prune the slack replay window");
            }
        }
        tokio::select! {
            () = s.notify.wake.notified() => {},
            () = tokio::time::sleep(poll) => {},
        }
    }
}

/// Claims the next due notification for this replica. The `UPDATE`
/// repeats the subquery's conditions: PostgreSQL re-checks the outer
/// `WHERE` on a row another replica changed since this statement's
/// snapshot (claimed, or even delivered and released), so of two replicas
/// that pick the same row only one gets it.
async fn claim(s: &AppState) -> Result<Option<Job>, sqlx::Error> {
    let now = now_ms();
    let timeout_ms = i64::try_from(s.notify.timeout.as_millis()).unwrap_or(60_000);
    // Long enough for every call of one delivery (Slack may make two);
    // a replica that dies mid-delivery leaves the row to another after it.
    let lease = now + 3 * timeout_ms + 5_000;
    let row = sqlx::query(
        "UPDATE notifications SET lease_ms = $1 WHERE id = (SELECT id FROM notifications \
         WHERE status IN ('pending', 'retrying') AND next_ms <= $2 AND lease_ms <= $2 \
         ORDER BY next_ms LIMIT 1) \
         AND status IN ('pending', 'retrying') AND next_ms <= $2 AND lease_ms <= $2 \
         RETURNING id, tenant, approval_id, event, channel, target, attempts",
    )
    .bind(lease)
    .bind(now)
    .fetch_optional(s.store.pool())
    .await?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some(Job {
        id: r.try_get("id")?,
        tenant: r.try_get("tenant")?,
        approval_id: r.try_get("approval_id")?,
        event: r.try_get("event")?,
        channel: r.try_get("channel")?,
        target: r.try_get("target")?,
        attempts: r.try_get("attempts")?,
        lease_ms: lease,
    }))
}

async fn deliver(s: &AppState, job: Job) {
    let outcome = match crate::api::approvals::view(s, &job.approval_id).await {
        Err(e) => Outcome::Failed {
            error: format!("store error: {e}"),
            after: None,
        },
        Ok(None) => Outcome::Dropped("the approval does not exist".into()),
        Ok(Some(a)) => match s.notify.tenants.get(&job.tenant) {
            None => Outcome::Dropped(format!(
                "tenant `{}` has no notifications configured any more",
                job.tenant
            )),
            Some(t) => match job.channel.as_str() {
                SLACK => super::slack::deliver(s, t, &job, &a).await,
                SLACK_WEBHOOK => super::slack::deliver_webhook(s, t, &a).await,
                TEAMS => super::teams::deliver(s, t, &a).await,
                WEBHOOK => super::webhook::deliver(s, t, &job, &a).await,
                other => Outcome::Dropped(format!("unknown channel `{other}`")),
            },
        },
    };
    if let Err(e) = record(s, &job, &outcome).await {
        tracing::warn!(notification = %job.id, error = %e, "cannot record a notification's outcome");
    }
}

/// The delay before attempt `n + 1` after `n` failed: `first_ms` doubled
/// per attempt, at most `max_ms`.
pub fn backoff(r: &super::RetryConfig, failed: i64) -> i64 {
    let shift = u32::try_from(failed.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let ms = r.first_ms.saturating_mul(1u64 << shift).min(r.max_ms);
    i64::try_from(ms).unwrap_or(i64::MAX)
}

async fn record(s: &AppState, job: &Job, outcome: &Outcome) -> Result<(), sqlx::Error> {
    let now = now_ms();
    let n = &s.notify;
    let label = channel_label(&job.channel);
    let (status, attempts, next_ms, error, delivered): (
        &str,
        i64,
        i64,
        Option<String>,
        Option<i64>,
    ) = match outcome {
        Outcome::Delivered => ("delivered", job.attempts + 1, now, None, Some(now)),
        Outcome::Later => {
            let status = if job.attempts == 0 {
                "pending"
            } else {
                "retrying"
            };
            let soon = i64::try_from(n.retry.first_ms.min(1000)).unwrap_or(1000);
            (status, job.attempts, now + soon, None, None)
        }
        Outcome::Dropped(e) => ("failed", job.attempts + 1, now, Some(e.clone()), None),
        Outcome::Failed { error, after } => {
            let attempts = job.attempts + 1;
            let status = if attempts >= i64::from(n.retry.attempts) {
                "failed"
            } else {
                "retrying"
            };
            let asked = after.map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            let wait = backoff(&n.retry, attempts).max(asked);
            (
                status,
                attempts,
                now.saturating_add(wait),
                Some(error.clone()),
                None,
            )
        }
    };
    match (outcome, status) {
        (Outcome::Delivered, _) => n.count(label, "delivered"),
        (Outcome::Later, _) => {}
        (_, "failed") => {
            n.count(label, "failed");
            tracing::warn!(notification = %job.id, approval = %job.approval_id, channel = label,
                attempts, error = error.as_deref().unwrap_or(""), "notification failed: no more attempts");
        }
        _ => {
            n.count(label, "retry");
            tracing::warn!(notification = %job.id, approval = %job.approval_id, channel = label,
                attempts, error = error.as_deref().unwrap_or(""), retry_in_ms = next_ms - now,
                "notification not delivered; retrying");
        }
    }
    // Only the holder of the lease records: a replica whose lease ran out
    // while it waited does not overwrite the one that took over.
    sqlx::query(
        "UPDATE notifications SET status = $1, attempts = $2, next_ms = $3, last_error = $4, \
         delivered_ms = $5, lease_ms = 0, updated_ms = $6 WHERE id = $7 AND lease_ms = $8",
    )
    .bind(status)
    .bind(attempts)
    .bind(next_ms)
    .bind(error)
    .bind(delivered)
    .bind(now)
    .bind(&job.id)
    .bind(job.lease_ms)
    .execute(s.store.pool())
    .await?;
    Ok(())
}

/// The status of the Slack post of approval `id` to `target` (the row
/// that creates the message a decision updates), if any.
pub(crate) async fn created_status(
    s: &AppState,
    id: &str,
    target: &str,
) -> Result<Option<String>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT status FROM notifications WHERE approval_id = $1 AND channel = $2 AND target = $3 \
         AND event = 'approval.created' ORDER BY created_ms LIMIT 1",
    )
    .bind(id)
    .bind(SLACK)
    .bind(target)
    .fetch_optional(s.store.pool())
    .await?;
    row.map(|r| r.try_get("status")).transpose()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub status: Option<String>,
    pub tenant: Option<String>,
    pub approval: Option<String>,
    pub limit: Option<i64>,
}

/// `GET /v1/notifications?status=&tenant=&approval=`: newest first.
pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Viewer, Role::Approver])?;
    let tenant = caller.list_tenant(q.tenant.as_deref())?;
    let status = q.status.clone().unwrap_or_default();
    if !["", "pending", "retrying", "delivered", "failed"].contains(&status.as_str()) {
        return Err(ApiError::bad_request(
            "invalid_status",
            format!("unknown status `{status}`: use pending, retrying, delivered or failed"),
        ));
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows = sqlx::query(&format!(
        "SELECT id, tenant, approval_id, event, channel, target, status, attempts, next_ms, last_error, \
         created_ms, delivered_ms FROM notifications WHERE ($1 = '' OR tenant = $1) \
         AND ($2 = '' OR status = $2) AND ($3 = '' OR approval_id = $3) \
         ORDER BY created_ms DESC, id LIMIT {limit}"
    ))
    .bind(&tenant)
    .bind(&status)
    .bind(q.approval.clone().unwrap_or_default())
    .fetch_all(s.store.pool())
    .await?;
    let mut out = Vec::new();
    for r in &rows {
        let status: String = r.try_get("status")?;
        let channel: String = r.try_get("channel")?;
        let target: String = r.try_get("target")?;
        let next: i64 = r.try_get("next_ms")?;
        let waiting = status == "pending" || status == "retrying";
        out.push(json!({
            "notification_id": r.try_get::<String, _>("id")?,
            "tenant": r.try_get::<String, _>("tenant")?,
            "approval_id": r.try_get::<String, _>("approval_id")?,
            "event": r.try_get::<String, _>("event")?,
            "target": shown_target(&channel, &target),
            "channel": channel,
            "status": status,
            "attempts": r.try_get::<i64, _>("attempts")?,
            "last_error": r.try_get::<Option<String>, _>("last_error")?,
            "created_at": r.try_get::<i64, _>("created_ms")? / 1000,
            "next_attempt_at": waiting.then_some(next / 1000),
            "delivered_at": r.try_get::<Option<i64>, _>("delivered_ms")?.map(|ms| ms / 1000),
        }));
    }
    Ok(Json(json!({ "notifications": out })))
}

/// Where a notification goes, as shown to viewers: a webhook's URL
/// without its query (which may carry a token); Teams and Slack webhook
/// URLs are secrets and never shown.
fn shown_target(channel: &str, target: &str) -> String {
    match channel {
        WEBHOOK => target
            .split(['?', '#'])
            .next()
            .unwrap_or_default()
            .to_owned(),
        TEAMS => "workflow webhook".into(),
        SLACK_WEBHOOK => "incoming webhook".into(),
        _ => target.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let r = super::super::RetryConfig {
            first_ms: 100,
            max_ms: 1000,
            attempts: 10,
        };
        let got: Vec<i64> = (1..=6).map(|n| backoff(&r, n)).collect();
        assert_eq!(got, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff(&r, 10_000), 1000);
    }
}
