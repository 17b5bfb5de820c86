//! The generic webhook: `{"type": "approval.created" | "approval.decided",
//! "approval": {...}}` POSTed as JSON, signed so that the receiver can
//! tell it came from this service and is fresh:
//!
//! - `x-aegis-signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`
//!   with the webhook's secret (a new `t` at each attempt);
//! - `x-aegis-delivery: <id>`: the same on every attempt of one
//!   notification, for the receiver to drop duplicates;
//! - `x-aegis-event`: the `type`.
//!
//! Any 2xx answer is delivered; anything else is retried with backoff.

use super::outbox::{Job, Outcome};
use super::{dashboard_url, Tenant};
use crate::state::AppState;
use crate::store::now_ms;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

/// `t=<t>,v1=<hex>`: the signature header of `body` sent at `t`.
pub fn signature(secret: &[u8], t: i64, body: &str) -> String {
    let mut out = format!("t={t},v1=");
    if let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) {
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
        mac.update(body.as_bytes());
        out.push_str(&aegis_engine::trust::hex(&mac.finalize().into_bytes()));
    }
    out
}

/// The body of a delivery.
pub fn body(event: &str, delivery: &str, a: &Value, public_url: &str) -> Value {
    let mut approval = a.clone();
    if let (Some(o), Some(id)) = (
        approval.as_object_mut(),
        a.get("approval_id").and_then(Value::as_str),
    ) {
        o.insert("dashboard_url".into(), dashboard_url(public_url, id).into());
    }
    json!({"type": event, "delivery_id": delivery, "approval": approval})
}

pub async fn deliver(s: &AppState, t: &Tenant, job: &Job, a: &Value) -> Outcome {
    let Some(hook) = t.webhooks.iter().find(|w| w.url == job.target) else {
        return Outcome::Dropped("the webhook is no longer configured".into());
    };
    let body = body(&job.event, &job.id, a, &s.settings.public_url).to_string();
    let headers = vec![
        (
            "x-aegis-signature".to_owned(),
            signature(&hook.secret, now_ms() / 1000, &body),
        ),
        ("x-aegis-delivery".to_owned(), job.id.clone()),
        ("x-aegis-event".to_owned(), job.event.clone()),
    ];
    Outcome::of(super::post(&s.notify, hook.url.clone(), headers, body).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_of_t_dot_body() {
        // printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec
        assert_eq!(
            signature(b"whsec", 1_700_000_000, "{\"a\":1}"),
            "t=1700000000,v1=8ad37ba156048ae0e0a5533c75cdf26fee88b07f93cb57ee4c80adb053012032"
        );
    }
}
