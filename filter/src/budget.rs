//! Budget leases: what a proxy may spend of an agent's daily budget
//! without asking the control plane each time (DESIGN.md section 7).
//!
//! Per agent and UTC day, the worker VMs of one Envoy share one lease in
//! shared data ([`state`]) and spend from it locally; when it cannot
//! cover a call, the caller asks the control plane for a new one
//! (`POST /v1/budgets/lease`) and [`install`]s the answer. A background
//! tick ([`tick`]) reports spending (`POST /v1/budgets/settle`) and gives
//! back what replaced or expired leases did not spend.
//!
//! Nothing here makes HTTP calls: every operation is a function of shared
//! data and the time, and says which call the caller must make. Amounts
//! are integer micro-dollars, as the control plane stores them.
//!
//! The accounting law, kept through every race between worker VMs: each
//! granted micro-dollar is either spent by a call or given back by the
//! lease's one final settle (whose total is what calls spent from it),
//! never both and never neither. A lease is replaced (and its final settle
//! queued) in the same CAS write that installs its successor.

pub mod state;
pub mod tick;

#[cfg(test)]
mod tests;

use crate::host::{Host, Level};
use crate::kv::{self, AgentRef, Step, UpdateError};
use aegis_engine::day as utc;
use serde::Deserialize;
use state::{AgentState, Lease, Owed, MAX_ID_LEN};

pub use tick::{claim, due_settles, settle_answered, Settle};

/// A lease is not spent from in its last this many seconds, so that its
/// spending reaches the control plane (the tick's final settle) before it
/// expires there and gives its unreported rest to other gateways.
pub const EXPIRY_MARGIN_SECS: u64 = 10;

/// After the control plane could not pay a call, the proxy refuses the
/// agent's calls this long without asking again (until midnight at most):
/// other proxies' leases may still give budget back, but an agent that
/// spent its day must not turn every call into a call out.
pub const SPENT_RECHECK_SECS: u64 = 10;

/// How long the proxy's other calls take a lease asked for to be under
/// way (longer than any call timeout would keep it).
const LEASING_NANOS: u64 = 2 * NANOS;

const NANOS: u64 = 1_000_000_000;

/// The shared-data key of an agent's lease state.
pub fn key(agent: &AgentRef) -> String {
    agent.key("lease/v1")
}

/// Creates the agent's lease state, the index and the tick's claim in
/// shared data unless they exist: call it at configure time for every
/// agent with `budget.daily_usd` (see `kv` for why).
pub fn prepare(host: &impl Host, agent: &AgentRef) -> Result<(), String> {
    kv::ensure(host, &key(agent), &empty())?;
    tick::prepare(host)
}

/// Dollars to micro-dollars, as the control plane rounds them; `None` for
/// a negative, non-finite or absurd amount.
pub fn micros(usd: f64) -> Option<u64> {
    (usd.is_finite() && (0.0..=1e12).contains(&usd)).then(|| (usd * 1e6).round() as u64)
}

/// Micro-dollars to dollars, for JSON.
pub fn usd(micros: u64) -> f64 {
    micros as f64 / 1e6
}

/// What [`spend`] decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Spend {
    /// Spent from the lease: the call may go.
    Spent,
    /// No lease covers the call: ask for one, then [`install`] it.
    NeedLease(NeedLease),
    /// The control plane said a moment ago that the day's budget cannot
    /// pay a call: answer 429 with this `retry-after`.
    Exhausted { retry_after_secs: u64 },
    /// Shared data failed (logged): apply the fail policy.
    Unavailable,
}

/// A lease to ask for: `POST /v1/budgets/lease` with [`NeedLease::body`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeedLease {
    /// UTC day number; give it back to [`install`].
    pub day: u32,
    /// Micro-dollars: the cost times `lease_calls`, never less than the cost.
    pub want: u64,
}

impl NeedLease {
    pub fn want_usd(&self) -> f64 {
        usd(self.want)
    }

    /// The request body.
    pub fn body(&self, agent: &AgentRef) -> String {
        serde_json::json!({
            "tenant": agent.tenant,
            "agent": agent.agent,
            "day": utc::day_text(i64::from(self.day)),
            "want_usd": self.want_usd(),
        })
        .to_string()
    }
}

fn unix_secs(now_nanos: u64) -> u64 {
    now_nanos / NANOS
}

/// Whether `lease` may pay `cost` now: today's, not near its expiry, with
/// room enough.
fn covers(lease: &Lease, cost: u64, now_nanos: u64) -> bool {
    let now = unix_secs(now_nanos);
    lease.day == utc::day_number(now)
        && now.saturating_add(EXPIRY_MARGIN_SECS) < lease.expires_at
        && lease.granted.saturating_sub(lease.spent) >= cost
}

/// Reads an agent's state from what [`kv::update`] found; garbage is no
/// state (logged), and will be overwritten by the next write.
fn decode(host: &impl Host, key: &str, value: Option<&[u8]>) -> AgentState {
    match value {
        None => AgentState::default(),
        Some(bytes) => AgentState::decode(bytes).unwrap_or_else(|| {
            host.log(
                Level::Warn,
                &format!("aegis: budget state `{key}` is unreadable; treated as no lease"),
            );
            AgentState::default()
        }),
    }
}

fn empty() -> Vec<u8> {
    AgentState::default().encode()
}

fn log_failure(host: &impl Host, what: &str, key: &str, e: &UpdateError) {
    host.log(
        Level::Warn,
        &format!("aegis: budget `{key}`: cannot {what}: {e}"),
    );
}

/// Spends `cost` micro-dollars of `agent`'s budget from the proxy's lease.
/// A cost of 0 is always spent. `lease_calls` sizes the lease to ask for.
pub fn spend(
    host: &impl Host,
    agent: &AgentRef,
    cost: u64,
    lease_calls: u32,
    now_nanos: u64,
) -> Spend {
    if cost == 0 {
        return Spend::Spent;
    }
    let key = key(agent);
    let result = kv::update(host, &key, &empty(), |value| {
        let mut s = decode(host, &key, value);
        match s.current.as_mut() {
            Some(l) if covers(l, cost, now_nanos) => {
                l.spent += cost;
                Step::Write(s.encode(), Some(Ok(())))
            }
            _ if s.spent_until > unix_secs(now_nanos) => Step::Keep(None),
            // Another call is leasing: ask only for this call's cost.
            _ if s.leasing_until > now_nanos => Step::Keep(Some(Err(cost))),
            _ => {
                s.leasing_until = now_nanos.saturating_add(LEASING_NANOS);
                let want = cost.saturating_mul(u64::from(lease_calls)).max(cost);
                Step::Write(s.encode(), Some(Err(want)))
            }
        }
    });
    match result {
        Ok(Some(Ok(()))) => Spend::Spent,
        Ok(Some(Err(want))) => Spend::NeedLease(NeedLease {
            day: utc::day_number(unix_secs(now_nanos)),
            want,
        }),
        Ok(None) => Spend::Exhausted {
            retry_after_secs: utc::secs_to_midnight(unix_secs(now_nanos)),
        },
        Err(e) => {
            log_failure(host, "spend", &key, &e);
            Spend::Unavailable
        }
    }
}

/// The control plane's answer to `POST /v1/budgets/lease`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// `None` when nothing was granted.
    pub lease_id: Option<String>,
    pub granted: u64,
    /// What is left of the day's budget after this grant.
    pub remaining: u64,
    /// Unix seconds.
    pub expires_at: u64,
}

#[derive(Deserialize)]
struct RawGrant {
    lease_id: Option<String>,
    granted_usd: f64,
    remaining_usd: f64,
    expires_at: u64,
}

impl Grant {
    /// Reads a `200` answer's body. Errors are one line: an answer that
    /// is not this is a failed callout (fail policy).
    pub fn parse(body: &[u8]) -> Result<Grant, String> {
        let raw: RawGrant =
            serde_json::from_slice(body).map_err(|e| format!("invalid lease answer: {e}"))?;
        let amount = |field: &str, v: f64| {
            micros(v).ok_or_else(|| format!("invalid lease answer: `{field}` is {v}"))
        };
        let granted = amount("granted_usd", raw.granted_usd)?;
        let remaining = amount("remaining_usd", raw.remaining_usd)?;
        let lease_id = match raw.lease_id {
            Some(id) if id.is_empty() || id.len() > MAX_ID_LEN => {
                return Err(format!(
                    "invalid lease answer: `lease_id` is {} bytes",
                    id.len()
                ))
            }
            Some(_) if granted == 0 => {
                return Err("invalid lease answer: a `lease_id` for nothing granted".into())
            }
            None if granted > 0 => {
                return Err("invalid lease answer: a grant without a `lease_id`".into())
            }
            id => id,
        };
        Ok(Grant {
            lease_id,
            granted,
            remaining,
            expires_at: raw.expires_at,
        })
    }
}

/// What [`install`] decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Install {
    /// The call's cost is spent (from the new lease, or from one another
    /// worker installed meanwhile): the call may go.
    Spent,
    /// The day's budget cannot pay the call: answer 429 with this
    /// `retry-after` (the seconds to the next UTC midnight).
    Exhausted { retry_after_secs: u64 },
    /// Shared data failed (logged): the grant could not be kept. Send this
    /// final settle now to give it back, and apply the fail policy.
    Unrecorded { give_back: Option<Settle> },
}

/// Installs `grant`, the answer to the lease [`spend`] asked for (`need`),
/// and spends `cost` from it, in one CAS write:
///
/// - another worker installed a lease meanwhile that covers the call:
///   the call is spent from that one, and `grant` queued for a final
///   settle of 0 (given back whole);
/// - `grant` covers the call: it becomes the lease, `cost` is spent from
///   it, and the lease it replaces is queued for a final settle of what
///   calls spent from it;
/// - else [`Install::Exhausted`], and a non-empty `grant` is queued for a
///   final settle of 0; for [`SPENT_RECHECK_SECS`] [`spend`] then refuses
///   the agent's calls without asking again.
pub fn install(
    host: &impl Host,
    agent: &AgentRef,
    need: &NeedLease,
    grant: &Grant,
    cost: u64,
    now_nanos: u64,
) -> Install {
    let key = key(agent);
    let result = kv::update(host, &key, &empty(), |value| {
        let mut s = decode(host, &key, value);
        s.server_remaining = Some((need.day, grant.remaining));
        s.leasing_until = 0;
        let mut dropped = Vec::new();
        let spent = match (s.current.as_mut(), &grant.lease_id) {
            (Some(l), _) if covers(l, cost, now_nanos) => {
                l.spent += cost;
                if let Some(id) = &grant.lease_id {
                    dropped.extend(s.owe(id.clone(), 0));
                }
                true
            }
            (_, Some(id)) if grant.granted >= cost => {
                if let Some(old) = s.current.take() {
                    dropped.extend(s.owe(old.id, old.spent));
                }
                s.current = Some(Lease {
                    id: id.clone(),
                    day: need.day,
                    granted: grant.granted,
                    spent: cost,
                    reported: 0,
                    expires_at: grant.expires_at,
                });
                true
            }
            (_, id) => {
                if let Some(id) = id {
                    dropped.extend(s.owe(id.clone(), 0));
                }
                false
            }
        };
        s.spent_until = if spent {
            0
        } else {
            let now = unix_secs(now_nanos);
            now.saturating_add(SPENT_RECHECK_SECS.min(utc::secs_to_midnight(now)))
        };
        Step::Write(s.encode(), (spent, dropped))
    });
    match result {
        Ok((spent, dropped)) => {
            for d in dropped {
                log_dropped(host, &key, &d);
            }
            // Before answering: the tick must find this agent's leases.
            tick::index_add(host, agent);
            if spent {
                Install::Spent
            } else {
                Install::Exhausted {
                    retry_after_secs: utc::secs_to_midnight(unix_secs(now_nanos)),
                }
            }
        }
        Err(e) => {
            log_failure(host, "keep a lease", &key, &e);
            Install::Unrecorded {
                give_back: grant.lease_id.as_ref().map(|id| Settle {
                    agent: agent.clone(),
                    lease_id: id.clone(),
                    spent: 0,
                    is_final: true,
                }),
            }
        }
    }
}

fn log_dropped(host: &impl Host, key: &str, d: &Owed) {
    // A grant queued to go back whole was usually sent at once by the call
    // that got it; a spent total is not, and is lost to the control plane.
    let (level, what) = if d.spent == 0 {
        (
            Level::Info,
            "left the settle queue (given back by its own call, or left to expire)",
        )
    } else {
        (
            Level::Error,
            "is left to expire at the control plane: what it spent is not counted",
        )
    };
    host.log(
        level,
        &format!(
            "aegis: budget `{key}`: too many settles pending; lease `{}` (spent {} USD) {what}",
            d.lease_id,
            usd(d.spent)
        ),
    );
}

/// The grants queued to be given back whole (a lease another worker's
/// made unnecessary, one too small for the call): the caller sends them
/// at once rather than waiting for the tick, which still retries them.
pub fn give_backs(host: &impl Host, agent: &AgentRef) -> Vec<Settle> {
    let key = key(agent);
    let s = decode(host, &key, kv::read(host, &key).as_deref());
    s.owed
        .into_iter()
        .filter(|o| o.spent == 0)
        .map(|o| Settle {
            agent: agent.clone(),
            lease_id: o.lease_id,
            spent: 0,
            is_final: true,
        })
        .collect()
}

/// What is left of an agent's budget, as this proxy knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remaining {
    /// Micro-dollars still to spend from the current lease (0 without a
    /// lease usable today).
    pub lease: u64,
    /// The day's budget left: the control plane's `remaining_usd` of this
    /// proxy's last lease answer today, plus `lease`. It misses what other
    /// proxies spent since, and what replaced leases gave back: an
    /// estimate refreshed at each lease. `None` before a lease answer today.
    pub day: Option<u64>,
}

/// For the `aegis_budget_remaining{agent}` gauge (its value is
/// [`Remaining::day`], or [`Remaining::lease`] when unknown).
pub fn remaining(host: &impl Host, agent: &AgentRef, now_nanos: u64) -> Remaining {
    let key = key(agent);
    let s = decode(host, &key, kv::read(host, &key).as_deref());
    let today = utc::day_number(unix_secs(now_nanos));
    let lease = s
        .current
        .filter(|l| covers(l, 0, now_nanos))
        .map_or(0, |l| l.granted.saturating_sub(l.spent));
    let day = s
        .server_remaining
        .filter(|(d, _)| *d == today)
        .map(|(_, r)| r.saturating_add(lease));
    Remaining { lease, day }
}
