//! Prometheus metrics of the service, in the text exposition format.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
struct Inner {
    requests: BTreeMap<(String, String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
    leases: BTreeMap<&'static str, u64>,
    lease_granted_micros: i64,
    approvals: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    pub fn request(&self, method: &str, route: &str, status: u16, secs: f64) {
        let Ok(mut m) = self.inner.lock() else { return };
        *m.requests
            .entry((method.to_owned(), route.to_owned(), status))
            .or_default() += 1;
        let h = m.latency.entry(route.to_owned()).or_default();
        h.count += 1;
        h.sum += secs;
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                if let Some(c) = h.counts.get_mut(i) {
                    *c += 1;
                }
            }
        }
    }

    /// A lease event: `granted`, `empty` (nothing left to grant),
    /// `settled`, `expired`.
    pub fn lease(&self, event: &'static str, granted_micros: i64) {
        let Ok(mut m) = self.inner.lock() else { return };
        *m.leases.entry(event).or_default() += 1;
        m.lease_granted_micros = m.lease_granted_micros.saturating_add(granted_micros);
    }

    /// An approval reached `status`.
    pub fn approval(&self, status: &'static str) {
        let Ok(mut m) = self.inner.lock() else { return };
        *m.approvals.entry(status).or_default() += 1;
    }

    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let Ok(m) = self.inner.lock() else {
            return String::new();
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP aegis_control_requests_total API requests by route and status."
        );
        let _ = writeln!(out, "# TYPE aegis_control_requests_total counter");
        for ((method, route, status), n) in &m.requests {
            let _ = writeln!(
                out,
                "aegis_control_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }
        let _ = writeln!(
            out,
            "# HELP aegis_control_request_duration_seconds API request latency."
        );
        let _ = writeln!(
            out,
            "# TYPE aegis_control_request_duration_seconds histogram"
        );
        for (route, h) in &m.latency {
            let route = escape(route);
            for (le, c) in BUCKETS.iter().zip(h.counts.iter()) {
                let _ = writeln!(
                    out,
                    "aegis_control_request_duration_seconds_bucket{{route=\"{route}\",le=\"{le}\"}} {c}"
                );
            }
            let _ = writeln!(
                out,
                "aegis_control_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "aegis_control_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "aegis_control_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count
            );
        }
        let _ = writeln!(
            out,
            "# HELP aegis_control_leases_total Budget lease events."
        );
        let _ = writeln!(out, "# TYPE aegis_control_leases_total counter");
        for (event, n) in &m.leases {
            let _ = writeln!(out, "aegis_control_leases_total{{event=\"{event}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP aegis_control_lease_granted_usd_total Budget granted in leases."
        );
        let _ = writeln!(out, "# TYPE aegis_control_lease_granted_usd_total counter");
        #[allow(clippy::cast_precision_loss)]
        let granted = m.lease_granted_micros as f64 / 1e6;
        let _ = writeln!(out, "aegis_control_lease_granted_usd_total {granted}");
        let _ = writeln!(
            out,
            "# HELP aegis_control_approvals_total Approvals reaching each status."
        );
        let _ = writeln!(out, "# TYPE aegis_control_approvals_total counter");
        for (status, n) in &m.approvals {
            let _ = writeln!(
                out,
                "aegis_control_approvals_total{{status=\"{status}\"}} {n}"
            );
        }
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
