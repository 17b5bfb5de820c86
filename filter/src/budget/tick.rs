//! The budget's background work, done by one worker VM at a time: report
//! what running leases spent, give back what replaced or expired leases
//! did not spend (`POST /v1/budgets/settle`), and retry what failed.
//!
//! Each period every worker's `on_tick` calls [`claim`]; the one that wins
//! the shared-data claim calls [`due_settles`], sends each, and applies
//! each answer with [`settled`] (a failed callout is simply not applied:
//! the settle stays due and goes again next period; the control plane
//! accepts a repeated final settle with the same total). The agents to
//! look at are listed in an index key that [`install`](super::install)
//! keeps.

use super::state::AgentState;
use super::{decode, empty, key, log_failure, usd, EXPIRY_MARGIN_SECS, NANOS};
use crate::callout;
use crate::host::{Host, Level};
use crate::kv::{self, AgentRef, Reader, Step, Writer};
use aegis_engine::day as utc;
use serde::Deserialize;

/// The shared-data key listing the agents with lease state.
pub const INDEX_KEY: &str = "aegis/lease-index/v1";
/// The shared-data key of the tick's claim.
pub const CLAIM_KEY: &str = "aegis/budget-tick/v1";

/// Most agents the index lists: far more than a bundle has.
const MAX_INDEXED: usize = 1 << 16;
const INDEX_MAGIC: [u8; 2] = [b'I', 1];
const CLAIM_MAGIC: [u8; 2] = [b'C', 1];

/// A settle to send: `POST /v1/budgets/settle` with [`Settle::body`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settle {
    pub agent: AgentRef,
    pub lease_id: String,
    /// Micro-dollars: what calls spent from the lease in all, so far.
    pub spent: u64,
    /// The lease is done with: the control plane returns the rest.
    pub is_final: bool,
}

impl Settle {
    pub fn body(&self) -> String {
        serde_json::json!({
            "lease_id": self.lease_id,
            "spent_usd": usd(self.spent),
            "final": self.is_final,
        })
        .to_string()
    }
}

fn empty_claim() -> Vec<u8> {
    let mut w = Writer(CLAIM_MAGIC.to_vec());
    w.u64(0);
    w.0
}

/// Creates the index and the claim unless they exist.
pub fn prepare(host: &impl Host) -> Result<(), String> {
    kv::ensure(host, INDEX_KEY, &encode_index(&[]))?;
    kv::ensure(host, CLAIM_KEY, &empty_claim())
}

/// Takes the tick for this period: `true` for the one worker VM that
/// should do the background work now. `period_nanos` is the tick period.
pub fn claim(host: &impl Host, now_nanos: u64, period_nanos: u64) -> bool {
    // A little short of a period, so that a worker whose timer fires a
    // bit early still finds its own claim over.
    let until = now_nanos.saturating_add(period_nanos - period_nanos / 10);
    let result = kv::update(host, CLAIM_KEY, &empty_claim(), |value| {
        let mut r = Reader(value.unwrap_or_default());
        let held = match (r.u8(), r.u8(), r.u64()) {
            (Some(a), Some(b), Some(t)) if [a, b] == CLAIM_MAGIC && r.done() => t,
            _ => 0,
        };
        if held > now_nanos {
            return Step::Keep(false);
        }
        let mut w = Writer(CLAIM_MAGIC.to_vec());
        w.u64(until);
        Step::Write(w.0, true)
    });
    // Losing the race, or a failing host: another worker (or the next
    // period) does it.
    result.unwrap_or(false)
}

fn decode_index(bytes: &[u8]) -> Option<Vec<AgentRef>> {
    let mut r = Reader(bytes);
    if [r.u8()?, r.u8()?] != INDEX_MAGIC {
        return None;
    }
    let n = usize::try_from(r.u32()?).ok()?;
    if n > MAX_INDEXED {
        return None;
    }
    let mut agents = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        agents.push(AgentRef {
            tenant: r.str()?.to_owned(),
            agent: r.str()?.to_owned(),
        });
    }
    r.done().then_some(agents)
}

fn encode_index(agents: &[AgentRef]) -> Vec<u8> {
    let mut w = Writer(INDEX_MAGIC.to_vec());
    w.u32(u32::try_from(agents.len()).unwrap_or(0));
    for a in agents {
        w.str(&a.tenant);
        w.str(&a.agent);
    }
    w.0
}

/// The agents with lease state.
pub fn indexed(host: &impl Host) -> Vec<AgentRef> {
    let Some(bytes) = kv::read(host, INDEX_KEY) else {
        return Vec::new();
    };
    decode_index(&bytes).unwrap_or_else(|| {
        host.log(
            Level::Warn,
            "aegis: the budget index in shared data is unreadable",
        );
        Vec::new()
    })
}

/// Lists `agent` in the index. Entries are never removed: a removal would
/// race with another worker installing a lease for the agent, and the
/// list is bounded by the agents of the bundles in use.
pub fn index_add(host: &impl Host, agent: &AgentRef) {
    let result = kv::update(host, INDEX_KEY, &encode_index(&[]), |value| {
        // An unreadable index is rebuilt: the agents it loses get listed
        // again at their next lease.
        let mut agents = value.and_then(decode_index).unwrap_or_default();
        if agents.contains(agent) || agents.len() >= MAX_INDEXED {
            return Step::Keep(());
        }
        agents.push(agent.clone());
        Step::Write(encode_index(&agents), ())
    });
    if let Err(e) = result {
        log_failure(host, "list it for settling", INDEX_KEY, &e);
    }
}

/// The settles to send now, for every agent in the index: the final
/// settles queued, and a report of each running lease that spent more
/// than it reported. A lease that is no longer today's, or has reached
/// its last [`EXPIRY_MARGIN_SECS`], is dropped and queued for its final
/// settle first.
pub fn due_settles(host: &impl Host, now_nanos: u64) -> Vec<Settle> {
    let now = now_nanos / NANOS;
    let today = utc::day_number(now);
    let mut due = Vec::new();
    for agent in indexed(host) {
        let key = key(&agent);
        let result = kv::update(host, &key, &empty(), |value| {
            let mut s = decode(host, &key, value);
            let mut changed = false;
            let mut dropped = None;
            if let Some(l) = s.current.take_if(|l| {
                l.day != today || now.saturating_add(EXPIRY_MARGIN_SECS) >= l.expires_at
            }) {
                dropped = s.owe(l.id, l.spent);
                changed = true;
            }
            let settles = settles_of(&agent, &s);
            if changed {
                Step::Write(s.encode(), (settles, dropped))
            } else {
                Step::Keep((settles, None))
            }
        });
        match result {
            Ok((settles, dropped)) => {
                if let Some(d) = dropped {
                    super::log_dropped(host, &key, &d);
                }
                due.extend(settles);
            }
            Err(e) => log_failure(host, "settle", &key, &e),
        }
    }
    due
}

fn settles_of(agent: &AgentRef, s: &AgentState) -> Vec<Settle> {
    let mut out: Vec<Settle> = s
        .owed
        .iter()
        .map(|o| Settle {
            agent: agent.clone(),
            lease_id: o.lease_id.clone(),
            spent: o.spent,
            is_final: true,
        })
        .collect();
    if let Some(l) = s.current.as_ref().filter(|l| l.spent > l.reported) {
        out.push(Settle {
            agent: agent.clone(),
            lease_id: l.id.clone(),
            spent: l.spent,
            is_final: false,
        });
    }
    out
}

/// The control plane's answer to a settle, as far as the lease state
/// cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `200`: recorded.
    Accepted,
    /// `409 lease_closed`: the lease was settled already; done with it.
    Closed,
    /// `400 spent_decreased`: the control plane already holds a larger
    /// total; an older report arriving after a newer one.
    Stale,
    /// Refused for good (`400`, `404`): retrying cannot help. The message
    /// is for the log.
    Rejected(String),
    /// Failed (no answer, timeout, `5xx`, auth): send it again later.
    Retry,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    #[serde(default)]
    message: String,
}

/// Classifies a settle callout's answer: its `:status` (0 when the call
/// failed without one) and body.
pub fn answer(status: u32, body: &[u8]) -> Answer {
    let error = || {
        serde_json::from_slice::<ErrorBody>(body)
            .ok()
            .map(|b| b.error)
    };
    match status {
        200..=299 => Answer::Accepted,
        409 => Answer::Closed,
        400 | 404 => match error() {
            Some(e) if e.code == "spent_decreased" => Answer::Stale,
            Some(e) => Answer::Rejected(format!("{status} {}: {}", e.code, e.message)),
            None => Answer::Rejected(format!("{status}")),
        },
        _ => Answer::Retry,
    }
}

/// Applies the answer to `settle`: a final settle answered is removed from
/// the queue; a report answered raises what the lease has reported. A
/// running lease the control plane closed or refuses is dropped (it
/// expires there). [`Answer::Retry`] changes nothing.
/// Applies the answer being delivered to `settle`'s call (its body
/// `body_size` bytes; no status when the call failed).
pub fn settle_answered(host: &impl Host, settle: &Settle, body_size: usize) {
    let status = callout::status_code(&host.call_response_headers()).map_or(0, u32::from);
    let body = host.call_response_body(body_size);
    settled(host, settle, &answer(status, &body));
}

pub fn settled(host: &impl Host, settle: &Settle, answer: &Answer) {
    if *answer == Answer::Retry {
        return;
    }
    let key = key(&settle.agent);
    let why = match answer {
        Answer::Rejected(why) => Some(why.as_str()),
        Answer::Stale if settle.is_final => Some("the control plane holds a larger total"),
        _ => None,
    };
    if let Some(why) = why {
        host.log(
            Level::Error,
            &format!(
                "aegis: budget `{key}`: the control plane refused the settle of lease `{}` ({} \
                 USD{}): {why}",
                settle.lease_id,
                usd(settle.spent),
                if settle.is_final { ", final" } else { "" }
            ),
        );
    }
    let mut dropped = false;
    let result = kv::update(host, &key, &empty(), |value| {
        dropped = false;
        let mut s = decode(host, &key, value);
        if settle.is_final {
            let before = s.owed.len();
            s.owed.retain(|o| o.lease_id != settle.lease_id);
            return if s.owed.len() == before {
                Step::Keep(())
            } else {
                Step::Write(s.encode(), ())
            };
        }
        let Some(l) = s.current.as_mut().filter(|l| l.id == settle.lease_id) else {
            // Replaced meanwhile: its final settle carries the total.
            return Step::Keep(());
        };
        match answer {
            Answer::Accepted => l.reported = l.reported.max(settle.spent.min(l.spent)),
            Answer::Stale | Answer::Retry => return Step::Keep(()),
            Answer::Closed | Answer::Rejected(_) => {
                s.current = None;
                dropped = true;
            }
        }
        Step::Write(s.encode(), ())
    });
    if dropped && result.is_ok() {
        host.log(
            Level::Warn,
            &format!(
                "aegis: budget `{key}`: the control plane no longer takes reports for lease `{}`; \
                 it is no longer spent from",
                settle.lease_id
            ),
        );
    }
    if let Err(e) = result {
        // The settle stays due: sent again next period.
        log_failure(host, "record a settle", &key, &e);
    }
}
