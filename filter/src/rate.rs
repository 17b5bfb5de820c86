//! `budget.rps`: a token bucket per agent per proxy, in shared data so
//! that the worker VMs of one Envoy share it; no callout.
//!
//! The bucket holds at most `max(1, rps)` tokens (one second of burst,
//! and at least one call) and refills `rps` tokens a second; a call takes
//! one. Its state is 17 bytes: a version, the tokens in micro-tokens and
//! the time of the last refill in Unix nanoseconds.
//!
//! Fail-safe choice: when shared data cannot be read or written, or other
//! workers win the CAS race [`kv::TRIES`] times in a row, the call is
//! limited (429 with `retry-after: 1`), never let through unchecked: a
//! broken host must not turn a rate limit into no limit. Each such answer
//! is logged and says why ([`Why`]) so the caller can count it.

use crate::host::{Host, Level};
use crate::kv::{self, AgentRef, Reader, Step, Writer};

const VERSION: u8 = 1;
const MICRO: u64 = 1_000_000;
const NANOS_PER_SEC: f64 = 1e9;

/// The shared-data key of an agent's bucket.
pub fn key(agent: &AgentRef) -> String {
    agent.key("rate/v1")
}

/// Creates the agent's bucket (full) in shared data unless it exists: call
/// it at configure time for every agent with `budget.rps` (see `kv` for
/// why).
pub fn prepare(host: &impl Host, agent: &AgentRef, rps: f64, now_nanos: u64) -> Result<(), String> {
    let capacity = (rps.max(1.0) * MICRO as f64) as u64;
    let full = Bucket {
        micro_tokens: capacity,
        refilled_nanos: now_nanos,
    };
    kv::ensure(host, &key(agent), &full.encode())
}

/// The answer for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    Allowed,
    Limited { retry_after_secs: u64, why: Why },
}

/// Why a call was limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The bucket is empty: the agent is over its rate.
    Rate,
    /// The bucket could not be checked (shared data failed, or stayed
    /// contended), or the bundle's `rps` is not a positive number.
    Unchecked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bucket {
    micro_tokens: u64,
    refilled_nanos: u64,
}

impl Bucket {
    fn encode(self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(17));
        w.u8(VERSION);
        w.u64(self.micro_tokens);
        w.u64(self.refilled_nanos);
        w.0
    }

    fn decode(bytes: &[u8]) -> Option<Bucket> {
        let mut r = Reader(bytes);
        if r.u8()? != VERSION {
            return None;
        }
        let b = Bucket {
            micro_tokens: r.u64()?,
            refilled_nanos: r.u64()?,
        };
        r.done().then_some(b)
    }

    /// Adds what `rps` refilled since the last refill. Only the time the
    /// whole micro-tokens added stand for is used up, so frequent calls
    /// do not lose the fractions; a clock that went back refills nothing.
    fn refill(&mut self, rps: f64, capacity: u64, now: u64) {
        let elapsed = now.saturating_sub(self.refilled_nanos);
        let gained = (elapsed as f64 * rps * MICRO as f64 / NANOS_PER_SEC).floor();
        if gained < 1.0 {
            return;
        }
        let room = capacity.saturating_sub(self.micro_tokens);
        if gained >= room as f64 {
            self.micro_tokens = capacity.max(self.micro_tokens);
            self.refilled_nanos = now;
        } else {
            // `gained < room`, so the cast is exact enough and in range.
            self.micro_tokens += gained as u64;
            let used = (gained * NANOS_PER_SEC / (rps * MICRO as f64)) as u64;
            self.refilled_nanos = self.refilled_nanos.saturating_add(used.min(elapsed));
        }
    }
}

/// Takes one token from the bucket at `key` for an agent allowed `rps`
/// calls a second, at `now_nanos` (Unix). See the module documentation
/// for what happens when shared data fails.
pub fn take(host: &impl Host, key: &str, rps: f64, now_nanos: u64) -> Take {
    if !(rps.is_finite() && rps > 0.0) {
        host.log(
            Level::Warn,
            &format!("aegis: rate limit `{key}`: `rps` {rps} is not a positive number; limited"),
        );
        return Take::Limited {
            retry_after_secs: 1,
            why: Why::Unchecked,
        };
    }
    // Float to integer casts saturate: a huge `rps` is a huge bucket.
    let capacity = (rps.max(1.0) * MICRO as f64) as u64;
    // A new bucket starts full.
    let full = Bucket {
        micro_tokens: capacity,
        refilled_nanos: now_nanos,
    };
    let result = kv::update(host, key, &full.encode(), |value| {
        let mut b = match value.map(Bucket::decode) {
            Some(Some(b)) => b,
            Some(None) => {
                host.log(
                    Level::Warn,
                    &format!("aegis: rate limit `{key}`: unreadable state, starting full"),
                );
                full
            }
            None => full,
        };
        b.refill(rps, capacity, now_nanos);
        if b.micro_tokens >= MICRO {
            b.micro_tokens -= MICRO;
            Step::Write(b.encode(), Take::Allowed)
        } else {
            let missing = (MICRO - b.micro_tokens) as f64;
            let secs = (missing / (rps * MICRO as f64)).ceil() as u64;
            // Nothing to write: the next call refills from the same time.
            Step::Keep(Take::Limited {
                retry_after_secs: secs.max(1),
                why: Why::Rate,
            })
        }
    });
    result.unwrap_or_else(|e| {
        host.log(
            Level::Warn,
            &format!("aegis: rate limit `{key}` not checked, call limited: {e}"),
        );
        Take::Limited {
            retry_after_secs: 1,
            why: Why::Unchecked,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{Mock, SharedStore};
    use std::rc::Rc;

    const T: u64 = 1_700_000_000_000_000_000;
    const SEC: u64 = 1_000_000_000;

    fn allowed(vm: &Mock, key: &str, rps: f64, now: u64, n: usize) -> usize {
        (0..n)
            .filter(|_| take(vm, key, rps, now) == Take::Allowed)
            .count()
    }

    #[test]
    fn burst_of_one_second_then_rps() {
        let store = Rc::new(SharedStore::default());
        let vm = Mock::vm(&store);
        let k = key(&AgentRef::new(None, "a"));
        assert_eq!(allowed(&vm, &k, 5.0, T, 10), 5);
        assert_eq!(
            take(&vm, &k, 5.0, T),
            Take::Limited {
                retry_after_secs: 1,
                why: Why::Rate
            }
        );
        // 0.2 s later exactly one more token.
        assert_eq!(allowed(&vm, &k, 5.0, T + SEC / 5, 10), 1);
        // Refill never exceeds the burst.
        assert_eq!(allowed(&vm, &k, 5.0, T + 100 * SEC, 10), 5);
    }

    #[test]
    fn slow_rates_have_a_burst_of_one_and_a_longer_retry_after() {
        let store = Rc::new(SharedStore::default());
        let vm = Mock::vm(&store);
        let k = key(&AgentRef::new(None, "a"));
        assert_eq!(allowed(&vm, &k, 0.1, T, 3), 1);
        assert_eq!(
            take(&vm, &k, 0.1, T + SEC),
            Take::Limited {
                retry_after_secs: 9,
                why: Why::Rate
            }
        );
        assert_eq!(allowed(&vm, &k, 0.1, T + 10 * SEC, 3), 1);
    }

    #[test]
    fn a_steady_stream_of_calls_gets_the_rate() {
        let store = Rc::new(SharedStore::default());
        let vm = Mock::vm(&store);
        let k = key(&AgentRef::new(None, "a"));
        prepare(&vm, &AgentRef::new(None, "a"), 3.0, T).unwrap();
        // A call every 1.5 µs for 10 s at 3 rps: the burst, then 30 more.
        let mut n = 0;
        let mut now = T;
        while now < T + 10 * SEC + SEC / 1000 {
            n += usize::from(take(&vm, &k, 3.0, now) == Take::Allowed);
            now += 1_500;
        }
        assert_eq!(n, 33);
    }

    #[test]
    fn workers_share_one_bucket_and_tenants_do_not() {
        let store = Rc::new(SharedStore::default());
        let (a, b) = (Mock::vm(&store), Mock::vm(&store));
        let k = key(&AgentRef::new(Some("acme"), "bot"));
        let other = key(&AgentRef::new(Some("globex"), "bot"));
        assert_eq!(allowed(&a, &k, 4.0, T, 3) + allowed(&b, &k, 4.0, T, 3), 4);
        assert_eq!(allowed(&b, &other, 4.0, T, 3), 3);
    }

    #[test]
    fn a_conflicting_write_is_retried_not_counted_twice() {
        let store = Rc::new(SharedStore::default());
        let a = Mock::vm(&store);
        let b = Rc::new(Mock::vm(&store));
        let k = key(&AgentRef::new(None, "a"));
        assert_eq!(allowed(&a, &k, 3.0, T, 1), 1);
        let (b2, k2) = (Rc::clone(&b), k.clone());
        store.interleave(move || assert_eq!(take(&b2, &k2, 3.0, T), Take::Allowed));
        assert_eq!(take(&a, &k, 3.0, T), Take::Allowed);
        assert_eq!(allowed(&a, &k, 3.0, T, 5), 0);
    }

    #[test]
    fn failures_limit_and_are_logged() {
        let store = Rc::new(SharedStore::default());
        let vm = Mock::vm(&store);
        let k = key(&AgentRef::new(None, "a"));
        let unchecked = Take::Limited {
            retry_after_secs: 1,
            why: Why::Unchecked,
        };
        assert_eq!(allowed(&vm, &k, 3.0, T, 1), 1);
        store.conflicts.set(kv::TRIES);
        assert_eq!(take(&vm, &k, 3.0, T), unchecked);
        store.broken.set(true);
        assert_eq!(take(&vm, &k, 3.0, T), unchecked);
        store.broken.set(false);
        for rps in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(take(&vm, &k, rps, T), unchecked);
        }
        let logs = vm.logged();
        assert!(logs
            .iter()
            .any(|(l, m)| *l == Level::Warn && m.contains("other workers kept changing it")));
        assert!(logs.iter().any(|(_, m)| m.contains("InternalFailure")));
        // Garbage in the bucket: a fresh, full bucket, and a log line.
        store.poke(&k, b"\x07garbage");
        assert_eq!(allowed(&vm, &k, 2.0, T, 3), 2);
        assert!(vm.logged().iter().any(|(_, m)| m.contains("unreadable")));
    }
}
