//! Audit records as OCSF events, for `aegis audit export --format ocsf`.
//!
//! Follows OCSF 1.8.0: every record becomes an API Activity event (class
//! 6003, category 6 Application Activity) with the Security Control profile's
//! `action_id` / `disposition_id` on the records that carry an outcome:
//! approval decisions and redemptions, and the decision records Envoy sends.
//!
//! | record | `action_id` | `disposition_id` |
//! | --- | --- | --- |
//! | approval approved, approval redeemed | 1 Allowed | 8 Approved |
//! | approval denied | 2 Denied | 2 Blocked |
//! | decision `allow` | 1 Allowed | 1 Allowed |
//! | decision `deny` | 2 Denied | 2 Blocked |
//! | decision `approval_needed` (request held) | 4 Modified | 14 Delayed |
//! | decision `sanitize` | 4 Modified | 99 Other (`Sanitized`) |
//! | any decision but `allow` in shadow mode | 3 Observed | 15 Detected |
//!
//! Decision records have kind `decision` and take from their data `decision`
//! (the verdict), `mode`, `method` (the activity), `tool` (the API service),
//! `agent` (the actor; the reporting gateway becomes `src_endpoint`), `rule`
//! and `policy_version` (the policy). Approval decisions take `approve` or
//! `status`. The record itself, hashes included, goes under `unmapped`, so an
//! export loses nothing the chain holds.

use aegis_engine::trust::hex;
use serde_json::{json, Map, Value};

use super::chain::Record;

/// The OCSF schema version the events follow.
pub const OCSF_VERSION: &str = "1.8.0";

const CLASS_UID: u32 = 6003;
const CATEGORY_UID: u32 = 6;

/// OCSF `activity_id` of API Activity, with its caption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Activity {
    Create = 1,
    Read = 2,
    Update = 3,
    Delete = 4,
    Other = 99,
}

impl Activity {
    fn caption(self) -> &'static str {
        match self {
            Activity::Create => "Create",
            Activity::Read => "Read",
            Activity::Update => "Update",
            Activity::Delete => "Delete",
            Activity::Other => "Other",
        }
    }
}

/// The Security Control profile's outcome of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Outcome {
    action_id: u32,
    action: &'static str,
    disposition_id: u32,
    disposition: &'static str,
}

const ALLOWED: Outcome = Outcome {
    action_id: 1,
    action: "Allowed",
    disposition_id: 1,
    disposition: "Allowed",
};
const APPROVED: Outcome = Outcome {
    action_id: 1,
    action: "Allowed",
    disposition_id: 8,
    disposition: "Approved",
};
const BLOCKED: Outcome = Outcome {
    action_id: 2,
    action: "Denied",
    disposition_id: 2,
    disposition: "Blocked",
};
const DELAYED: Outcome = Outcome {
    action_id: 4,
    action: "Modified",
    disposition_id: 14,
    disposition: "Delayed",
};
const SANITIZED: Outcome = Outcome {
    action_id: 4,
    action: "Modified",
    disposition_id: 99,
    disposition: "Sanitized",
};
const DETECTED: Outcome = Outcome {
    action_id: 3,
    action: "Observed",
    disposition_id: 15,
    disposition: "Detected",
};

/// Maps one audit record to an OCSF API Activity event. `product_version` is
/// the version of Aegis that exports it.
pub fn api_activity(r: &Record, product_version: &str) -> Value {
    let data: Value = serde_json::from_str(&r.data).unwrap_or(Value::Null);
    let decision = is_decision(&r.kind);
    let activity = activity(&r.kind, decision, &data);
    let activity_id = activity as u32;
    let outcome = outcome(&r.kind, decision, &data);
    let denied = outcome.is_some_and(|o| o.action_id == BLOCKED.action_id);
    let (status_id, status) = if denied {
        (2, "Failure")
    } else {
        (1, "Success")
    };
    let (severity_id, severity) = if outcome.is_some_and(|o| o.action_id != ALLOWED.action_id) {
        (2, "Low")
    } else {
        (1, "Informational")
    };
    let service = match data.get("tool").and_then(Value::as_str) {
        Some(tool) if decision => tool,
        _ => "aegis-control",
    };

    // A decision record is reported by a gateway about an agent's call: the
    // agent is the actor, the gateway where it came through.
    let agent = data
        .get("agent")
        .and_then(Value::as_str)
        .filter(|_| decision)
        .map(|a| format!("agent:{a}"));
    let actor = agent.as_deref().unwrap_or(&r.actor);
    let mut user = Map::new();
    let (role, name) = actor.split_once(':').unwrap_or((actor, ""));
    let (type_id, type_caption) = user_type(role);
    user.insert("uid".into(), json!(actor));
    user.insert(
        "name".into(),
        json!(if name.is_empty() { actor } else { name }),
    );
    user.insert("type_id".into(), json!(type_id));
    user.insert("type".into(), json!(type_caption));
    let tenant = (r.tenant != "*").then_some(r.tenant.as_str());
    if let Some(t) = tenant {
        user.insert("org".into(), json!({ "uid": t, "name": t }));
    }

    let mut metadata = json!({
        "version": OCSF_VERSION,
        "product": { "name": "Aegis", "vendor_name": "Aegis", "version": product_version },
        "uid": hex(&r.hash),
        "sequence": r.seq,
        "log_name": "audit",
    });
    let mut event = json!({
        "class_uid": CLASS_UID,
        "class_name": "API Activity",
        "category_uid": CATEGORY_UID,
        "category_name": "Application Activity",
        "activity_id": activity_id,
        "activity_name": activity.caption(),
        "type_uid": CLASS_UID * 100 + activity_id,
        "type_name": format!("API Activity: {}", activity.caption()),
        "time": r.at_ms,
        "severity_id": severity_id,
        "severity": severity,
        "status_id": status_id,
        "status": status,
        "message": format!("{} {} by {}", r.kind, r.subject, r.actor),
        "actor": { "user": user },
        "api": { "operation": r.kind, "service": { "name": service } },
        // The class requires a source; the record keeps who reported the
        // event, not a network address.
        "src_endpoint": { "name": r.actor },
        "unmapped": serde_json::to_value(r).unwrap_or(Value::Null),
    });
    let Some(fields) = event.as_object_mut() else {
        return event;
    };
    if !r.subject.is_empty() {
        let object = r.kind.split('.').next().unwrap_or(&r.kind);
        fields.insert(
            "resources".into(),
            json!([{ "uid": r.subject, "type": object }]),
        );
    }
    if let Some(o) = outcome {
        fields.insert("action_id".into(), json!(o.action_id));
        fields.insert("action".into(), json!(o.action));
        fields.insert("disposition_id".into(), json!(o.disposition_id));
        fields.insert("disposition".into(), json!(o.disposition));
        if let Some(rule) = data.get("rule").and_then(Value::as_str) {
            let mut policy = Map::new();
            policy.insert("name".into(), json!(rule));
            // OCSF wants a string; a revision may come as a number.
            match data.get("policy_version") {
                Some(Value::String(v)) => {
                    policy.insert("version".into(), json!(v));
                }
                Some(v @ Value::Number(_)) => {
                    policy.insert("version".into(), json!(v.to_string()));
                }
                _ => {}
            }
            fields.insert("policy".into(), Value::Object(policy));
        }
        if let Some(m) = metadata.as_object_mut() {
            m.insert("profiles".into(), json!(["security_control"]));
        }
    }
    if let (Some(t), Some(m)) = (tenant, metadata.as_object_mut()) {
        m.insert("tenant_uid".into(), json!(t));
    }
    fields.insert("metadata".into(), metadata);
    event
}

/// Decision records come from Envoy's access log, one per judged request.
fn is_decision(kind: &str) -> bool {
    kind == "decision" || kind.starts_with("decision.")
}

/// Decision records take the activity from the agent's HTTP method; control
/// events from the verb that ends their kind (`approval.created`).
fn activity(kind: &str, decision: bool, data: &Value) -> Activity {
    if decision {
        return match data.get("method").and_then(Value::as_str) {
            Some(m) if m.eq_ignore_ascii_case("POST") => Activity::Create,
            Some(m) if m.eq_ignore_ascii_case("GET") || m.eq_ignore_ascii_case("HEAD") => {
                Activity::Read
            }
            Some(m) if m.eq_ignore_ascii_case("PUT") || m.eq_ignore_ascii_case("PATCH") => {
                Activity::Update
            }
            Some(m) if m.eq_ignore_ascii_case("DELETE") => Activity::Delete,
            _ => Activity::Other,
        };
    }
    match kind.rsplit('.').next().unwrap_or(kind) {
        "created" | "issued" | "granted" | "published" => Activity::Create,
        "read" | "listed" | "exported" => Activity::Read,
        "decided" | "redeemed" | "settled" | "rotated" | "updated" | "expired" => Activity::Update,
        "deleted" | "revoked" => Activity::Delete,
        _ => Activity::Other,
    }
}

/// The outcome of records that allow or deny something; `None` for the rest.
fn outcome(kind: &str, decision: bool, data: &Value) -> Option<Outcome> {
    if decision {
        let verdict = data.get("decision").and_then(Value::as_str)?;
        let shadow = data.get("mode").and_then(Value::as_str) == Some("shadow");
        return match verdict {
            "allow" => Some(ALLOWED),
            _ if shadow => Some(DETECTED),
            "deny" => Some(BLOCKED),
            "approval_needed" => Some(DELAYED),
            "sanitize" => Some(SANITIZED),
            _ => None,
        };
    }
    match kind {
        "approval.decided" => {
            // `approve` as in the decision call, or the approval's new status.
            let approved = match data.get("approve").and_then(Value::as_bool) {
                Some(a) => a,
                None => match data.get("status").and_then(Value::as_str) {
                    Some("approved") => true,
                    Some("denied") => false,
                    _ => return None,
                },
            };
            Some(if approved { APPROVED } else { BLOCKED })
        }
        "approval.redeemed" => Some(APPROVED),
        _ => None,
    }
}

/// OCSF user `type_id` of an actor's role.
fn user_type(role: &str) -> (u32, &'static str) {
    match role {
        "approver" | "viewer" => (1, "User"),
        "admin" => (2, "Admin"),
        "service" => (3, "System"),
        "gateway" | "agent" => (4, "Service"),
        _ => (0, "Unknown"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain::{link, NewEvent, GENESIS};

    fn record(kind: &str, actor: &str, data: &str) -> Record {
        link(
            7,
            GENESIS,
            &NewEvent {
                at_ms: 1_765_000_000_123,
                tenant: "acme",
                actor,
                kind,
                subject: "ap_1",
                data,
            },
        )
    }

    #[test]
    fn every_event_is_api_activity_with_matching_ids() {
        for (kind, activity_id) in [
            ("approval.created", 1),
            ("approval.decided", 3),
            ("bundle.published", 1),
            ("token.issued", 1),
            ("key.rotated", 3),
            ("agent.deleted", 4),
            ("checkpoint", 99),
        ] {
            let e = api_activity(&record(kind, "admin:bootstrap", "{}"), "0.1.0");
            assert_eq!(e["class_uid"], 6003, "{kind}");
            assert_eq!(e["category_uid"], 6, "{kind}");
            assert_eq!(e["activity_id"], activity_id, "{kind}");
            assert_eq!(e["type_uid"], 600300 + activity_id, "{kind}");
            assert_eq!(e["time"], 1_765_000_000_123_i64);
            assert_eq!(e["api"]["operation"], kind);
            assert_eq!(e["metadata"]["version"], OCSF_VERSION);
            assert_eq!(e["metadata"]["product"]["name"], "Aegis");
            assert_eq!(e["metadata"]["product"]["version"], "0.1.0");
            assert_eq!(e["metadata"]["tenant_uid"], "acme");
            assert_eq!(e["actor"]["user"]["uid"], "admin:bootstrap");
            assert_eq!(e["actor"]["user"]["name"], "bootstrap");
            assert_eq!(e["actor"]["user"]["type_id"], 2);
            assert_eq!(e["actor"]["user"]["org"]["uid"], "acme");
            assert_eq!(e["resources"][0]["uid"], "ap_1");
            assert_eq!(e["unmapped"]["seq"], 7);
            assert!(e.get("action_id").is_none(), "{kind}");
        }
    }

    #[test]
    fn an_approved_decision_is_allowed_and_approved() {
        let r = record(
            "approval.decided",
            "approver:alice",
            r#"{"approve":true,"comment":"ok","rule":"refunds"}"#,
        );
        let e = api_activity(&r, "0.1.0");
        assert_eq!(e["action_id"], 1);
        assert_eq!(e["action"], "Allowed");
        assert_eq!(e["disposition_id"], 8);
        assert_eq!(e["disposition"], "Approved");
        assert_eq!(e["status_id"], 1);
        assert_eq!(e["policy"]["name"], "refunds");
        assert_eq!(e["metadata"]["profiles"][0], "security_control");
        assert_eq!(e["actor"]["user"]["name"], "alice");
        assert_eq!(e["unmapped"]["data"]["comment"], "ok");
        assert_eq!(e["metadata"]["uid"], hex(&r.hash));
    }

    #[test]
    fn a_denied_decision_is_denied_and_blocked() {
        for data in [r#"{"approve":false}"#, r#"{"status":"denied"}"#] {
            let e = api_activity(&record("approval.decided", "approver:bob", data), "0.1.0");
            assert_eq!(e["action_id"], 2, "{data}");
            assert_eq!(e["action"], "Denied");
            assert_eq!(e["disposition_id"], 2);
            assert_eq!(e["disposition"], "Blocked");
            assert_eq!(e["status_id"], 2);
        }
    }

    #[test]
    fn decision_records_map_each_verdict() {
        for (verdict, mode, action_id, disposition_id) in [
            ("allow", "enforce", 1, 1),
            ("deny", "enforce", 2, 2),
            ("approval_needed", "enforce", 4, 14),
            ("sanitize", "enforce", 4, 99),
            ("deny", "shadow", 3, 15),
            ("allow", "shadow", 1, 1),
        ] {
            let data = format!(
                r#"{{"decision":"{verdict}","mode":"{mode}","method":"POST","tool":"stripe","rule":"r1","agent":"billing-bot"}}"#
            );
            let e = api_activity(&record("decision", "gateway:edge-1", &data), "0.1.0");
            assert_eq!(e["action_id"], action_id, "{verdict} {mode}");
            assert_eq!(e["disposition_id"], disposition_id, "{verdict} {mode}");
            assert_eq!(e["activity_id"], 1, "POST is a create");
            assert_eq!(e["type_uid"], 600301);
            assert_eq!(e["api"]["service"]["name"], "stripe");
            assert_eq!(e["actor"]["user"]["uid"], "agent:billing-bot");
            assert_eq!(e["actor"]["user"]["name"], "billing-bot");
            assert_eq!(e["actor"]["user"]["type_id"], 4);
            assert_eq!(e["src_endpoint"]["name"], "gateway:edge-1");
        }
    }

    #[test]
    fn service_wide_events_carry_no_tenant() {
        let mut r = record("key.rotated", "service", "not json");
        r.tenant = "*".into();
        let e = api_activity(&r, "0.1.0");
        assert!(e["metadata"].get("tenant_uid").is_none());
        assert!(e["actor"]["user"].get("org").is_none());
        assert_eq!(e["actor"]["user"]["name"], "service");
        assert_eq!(e["actor"]["user"]["type_id"], 3);
        assert_eq!(e["unmapped"]["data"], "not json");
    }
}
