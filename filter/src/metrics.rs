//! Metric names with labels in the Istio tag convention, and the cache of
//! metric ids.
//!
//! proxy-wasm metrics have a name and no labels. Istio's convention puts the
//! labels into the name, `tag=.=value;.;` once per label, followed by the
//! metric name:
//!
//! ```text
//! agent=.=finance-agent;.;tool=.=stripe-payments;.;decision=.=allow;.;mode=.=enforce;.;aegis_decision_total
//! ```
//!
//! Envoy adds the `wasmcustom.` prefix. A `stats_config.stats_tags` entry
//! per label with the regex `(agent=\.=(.*?);\.;)` (see `tag_regex`)
//! turns each pair into a tag: the first capture group is cut out of the
//! name, the second is the value. What remains is
//! `wasmcustom.aegis_decision_total`, exported to Prometheus with its
//! labels.
//!
//! Label values come from the policy bundle (agent ids, tool names, rule
//! ids) and a few fixed words, never from request input, so the number of
//! distinct metrics is bounded by the policy.

use crate::host::{Host, Level, MetricKind};
use std::collections::BTreeMap;

/// Counter: every final decision. Labels: agent, tool, decision, mode.
pub const DECISION_TOTAL: &str = "aegis_decision_total";
/// Counter: deny and approval_needed. Labels: agent, tool, rule, decision,
/// mode.
pub const POLICY_VIOLATION_TOTAL: &str = "aegis_policy_violation_total";
/// Histogram: time spent inside the filter per request, milliseconds
/// (rounded down: most decisions record 0).
pub const LATENCY_MS: &str = "aegis_request_latency_ms";
/// Histogram: the same time in microseconds, for a useful resolution.
pub const LATENCY_US: &str = "aegis_request_latency_us";
/// MCP `tools/list` answers, by `tool` and `outcome`: `filtered`,
/// `unchanged` (every tool callable) or `unfiltered` (passed as sent: not
/// readable, compressed or too large).
pub const TOOLS_LIST_TOTAL: &str = "aegis_tools_list_total";
/// Gauge: what the agent's budget lease in this proxy has left, in
/// micro-dollars (USD x 1e6: gauges are integers). Label: agent.
pub const BUDGET_REMAINING: &str = "aegis_budget_remaining";
/// Approvals the filter asked for or redeemed, by `agent` and `outcome`
/// (pending, approved, denied, refused, failed_open, failed_closed).
pub const APPROVAL_TOTAL: &str = "aegis_approval_total";
/// Bundle polls and adoptions, by `outcome` (loaded, unchanged, refused,
/// failed).
pub const BUNDLE_RELOAD_TOTAL: &str = "aegis_bundle_reload_total";

/// Every label name used, for the `stats_tags` configuration.
#[cfg(test)]
pub const TAGS: [&str; 6] = ["agent", "tool", "rule", "decision", "mode", "outcome"];

/// Stands for a missing value (no agent before authentication, no rule
/// when no rule matched).
pub const NONE: &str = "-";

/// The `stats_tags` regex that extracts `tag` from Aegis metric names.
#[cfg(test)]
pub fn tag_regex(tag: &str) -> String {
    format!("({tag}=\\.=(.*?);\\.;)")
}

/// Characters kept in label values; others become `_`, so that a value can
/// never contain the `=.=` / `;.;` separators.
fn keep(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '#' | ':' | '@' | '+')
}

/// [`write_tagged_name`] into a new string.
#[cfg(test)]
pub fn tagged_name(name: &str, tags: &[(&str, &str)]) -> String {
    let mut out = String::new();
    write_tagged_name(&mut out, name, tags);
    out
}

/// `tag=.=value;.;...name` into `out` (cleared first, its memory kept),
/// values sanitised, empty values as [`NONE`].
fn write_tagged_name(out: &mut String, name: &str, tags: &[(&str, &str)]) {
    out.clear();
    out.reserve(
        name.len()
            + tags
                .iter()
                .map(|(k, v)| k.len() + v.len() + 6)
                .sum::<usize>(),
    );
    for (k, v) in tags {
        out.push_str(k);
        out.push_str("=.=");
        if v.is_empty() {
            out.push_str(NONE);
        } else if v.bytes().all(|b| b.is_ascii() && keep(char::from(b))) {
            // The usual case (ids from the policy): copied in one go.
            out.push_str(v);
        } else {
            out.extend(v.chars().map(|c| if keep(c) { c } else { '_' }));
        }
        out.push_str(";.;");
    }
    out.push_str(name);
}

/// Metric ids by full name; each name is defined once per VM. A request
/// that meets known metrics allocates nothing here.
#[derive(Debug, Default)]
pub struct Metrics {
    ids: BTreeMap<String, u32>,
    /// The tagged name being looked up.
    name: String,
    /// Logged once: a host that refuses metrics should not flood the log.
    failed: bool,
}

impl Metrics {
    pub fn new() -> Self {
        Metrics::default()
    }

    fn id<H: Host + ?Sized>(&mut self, host: &H, kind: MetricKind, name: &str) -> Option<u32> {
        if let Some(id) = self.ids.get(name) {
            return Some(*id);
        }
        match host.define_metric(kind, name) {
            Ok(id) => {
                self.ids.insert(name.to_owned(), id);
                Some(id)
            }
            Err(e) => {
                if !self.failed {
                    self.failed = true;
                    host.log(
                        Level::Warn,
                        &format!("aegis: cannot define metric `{name}`: {e}"),
                    );
                }
                None
            }
        }
    }

    /// Adds one to the counter `name` with `tags`.
    pub fn count<H: Host + ?Sized>(&mut self, host: &H, name: &str, tags: &[(&str, &str)]) {
        let mut full = core::mem::take(&mut self.name);
        write_tagged_name(&mut full, name, tags);
        let id = self.id(host, MetricKind::Counter, &full);
        self.name = full;
        if let Some(id) = id {
            let _ = host.increment_metric(id, 1);
        }
    }

    /// Sets the gauge `name` with `tags` to `value`.
    pub fn set<H: Host + ?Sized>(
        &mut self,
        host: &H,
        name: &str,
        tags: &[(&str, &str)],
        value: u64,
    ) {
        let mut full = core::mem::take(&mut self.name);
        write_tagged_name(&mut full, name, tags);
        let id = self.id(host, MetricKind::Gauge, &full);
        self.name = full;
        if let Some(id) = id {
            let _ = host.record_metric(id, value);
        }
    }

    /// Records `value` in the histogram `name` (no labels).
    pub fn record<H: Host + ?Sized>(&mut self, host: &H, name: &str, value: u64) {
        if let Some(id) = self.id(host, MetricKind::Histogram, name) {
            let _ = host.record_metric(id, value);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies `stats_tags` the way Envoy does: for each regex in turn, the
    /// first capture group is removed from the name and the second is the
    /// tag value.
    fn extract(stat: &str) -> (String, Vec<(String, String)>) {
        let mut name = stat.to_owned();
        let mut tags = Vec::new();
        for t in TAGS {
            let re = regex::Regex::new(&tag_regex(t)).unwrap();
            if let Some(c) = re.captures(&name) {
                let whole = c.get(1).unwrap().range();
                tags.push((t.to_owned(), c.get(2).unwrap().as_str().to_owned()));
                name.replace_range(whole, "");
            }
        }
        (name, tags)
    }

    #[test]
    fn names_follow_the_istio_convention() {
        let n = tagged_name(
            DECISION_TOTAL,
            &[
                ("agent", "acme/finance-agent"),
                ("tool", "stripe-payments"),
                ("decision", "allow"),
                ("mode", "enforce"),
            ],
        );
        assert_eq!(
            n,
            "agent=.=acme/finance-agent;.;tool=.=stripe-payments;.;decision=.=allow;.;\
             mode=.=enforce;.;aegis_decision_total"
        );
    }

    #[test]
    fn stats_tags_regexes_extract_every_label() {
        let n = tagged_name(
            POLICY_VIOLATION_TOTAL,
            &[
                ("agent", "finance-agent"),
                ("tool", "api.v2"),
                ("rule", "finance-agent/stripe-payments/create_payment#0"),
                ("decision", "approval_needed"),
                ("mode", "shadow"),
            ],
        );
        let (rest, tags) = extract(&format!("wasmcustom.{n}"));
        assert_eq!(rest, "wasmcustom.aegis_policy_violation_total");
        let get = |k: &str| tags.iter().find(|(t, _)| t == k).map(|(_, v)| v.as_str());
        assert_eq!(get("agent"), Some("finance-agent"));
        assert_eq!(get("tool"), Some("api.v2"));
        assert_eq!(
            get("rule"),
            Some("finance-agent/stripe-payments/create_payment#0")
        );
        assert_eq!(get("decision"), Some("approval_needed"));
        assert_eq!(get("mode"), Some("shadow"));
    }

    #[test]
    fn values_cannot_break_the_separators() {
        let n = tagged_name("m", &[("agent", "a;.;tool=.=x y"), ("tool", "")]);
        assert_eq!(n, "agent=.=a_._tool_._x_y;.;tool=.=-;.;m");
        let (rest, tags) = extract(&n);
        assert_eq!(rest, "m");
        assert_eq!(tags.len(), 2);
    }
}
