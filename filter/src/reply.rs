//! The local reply that answers a blocked request, and request ids.

use serde::Serialize;

/// Body of a local reply (DESIGN.md section 4).
#[derive(Debug, Serialize)]
pub struct Reply<'a> {
    pub decision: &'a str,
    pub reason: &'a str,
    pub rule: Option<&'a str>,
    pub policy_version: Option<&'a str>,
    pub request_id: &'a str,
}

impl Reply<'_> {
    /// The JSON bytes; a fixed fallback if serialisation fails (it cannot
    /// for these field types).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|_| {
            br#"{"decision":"deny","reason":"internal error","rule":null,"policy_version":null,"request_id":null}"#
                .to_vec()
        })
    }
}

/// Request ids for requests that arrive without `x-request-id`:
/// `aegis-<time>-<vm>-<n>`, unique per VM by the counter and across VMs
/// (Envoy runs one per worker thread) by the VM's start time.
#[derive(Debug)]
pub struct RequestIds {
    vm: u32,
    next: std::cell::Cell<u64>,
}

impl RequestIds {
    /// `vm`: something that differs between VMs, such as the low bits of
    /// the time the VM started.
    pub fn new(vm: u32) -> Self {
        RequestIds {
            vm,
            next: std::cell::Cell::new(0),
        }
    }

    pub fn generate(&self, now_nanos: u64) -> String {
        let n = self.next.get();
        self.next.set(n.wrapping_add(1));
        format!("aegis-{now_nanos:x}-{:08x}-{n}", self.vm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_json_has_the_five_fields() {
        let r = Reply {
            decision: "deny",
            reason: "host `evil.example` is not in the agent's \"egress\" allowlist",
            rule: None,
            policy_version: Some("v1"),
            request_id: "abc",
        };
        let v: serde_json::Value = serde_json::from_slice(&r.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "decision": "deny",
                "reason": "host `evil.example` is not in the agent's \"egress\" allowlist",
                "rule": null,
                "policy_version": "v1",
                "request_id": "abc",
            })
        );
    }

    #[test]
    fn generated_ids_differ() {
        let ids = RequestIds::new(0xabc);
        let a = ids.generate(1_700_000_000_000_000_000);
        let b = ids.generate(1_700_000_000_000_000_000);
        assert_ne!(a, b);
        assert_eq!(a, "aegis-17979cfe362a0000-00000abc-0");
        assert!(b.ends_with("-1"));
    }
}
