//! What shared data holds per agent for its budget, and its encoding.
//!
//! One value per agent holds the current lease *and* the final settles
//! still owed for the leases it replaced, so that replacing a lease and
//! queueing the old one's settle is one CAS write: no crash or race
//! between two writes can lose a granted amount.
//!
//! Encoding (little endian): `b'B'`, version 1, flags (bit 0: a current
//! lease, bit 1: the server's remaining amount is known), the current
//! lease (id as a u16-length string, day u32, granted, spent, reported
//! u64, expires_at u64), the server's remaining u64, the number of queued
//! final settles (u8), each an id and a spent total (u64). Decoding reads
//! any bytes without panicking; anything else than exactly this is "no
//! state".

use crate::kv::{Reader, Writer};

const MAGIC: u8 = b'B';
const VERSION: u8 = 1;
const HAS_LEASE: u8 = 1;
const HAS_REMAINING: u8 = 2;

/// Most final settles queued per agent. One is queued per lease replaced,
/// and leases are only granted while the control plane answers, so a full
/// queue means settles fail while leases succeed; the oldest is then
/// dropped (logged): the control plane's expiry of that lease returns
/// what it had not been told was spent.
pub const MAX_QUEUED: usize = 32;

/// Longest lease id kept (the control plane's are about 30 bytes).
pub const MAX_ID_LEN: usize = 255;

/// A lease from `POST /v1/budgets/lease`, in micro-dollars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub id: String,
    /// Days since 1970-01-01 (UTC) of the budget it is part of.
    pub day: u32,
    pub granted: u64,
    /// Spent by calls so far, in all.
    pub spent: u64,
    /// The largest `spent` the control plane acknowledged.
    pub reported: u64,
    /// Unix seconds; the lease is not spent from near it.
    pub expires_at: u64,
}

/// A final settle owed for a lease no longer in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owed {
    pub lease_id: String,
    pub spent: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentState {
    pub current: Option<Lease>,
    /// `remaining_usd` of the last lease answer, in micro-dollars, and the
    /// day it was for.
    pub server_remaining: Option<(u32, u64)>,
    /// Oldest first.
    pub owed: Vec<Owed>,
}

impl AgentState {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(64));
        w.u8(MAGIC);
        w.u8(VERSION);
        let mut flags = 0;
        if self.current.is_some() {
            flags |= HAS_LEASE;
        }
        if self.server_remaining.is_some() {
            flags |= HAS_REMAINING;
        }
        w.u8(flags);
        if let Some(l) = &self.current {
            w.str(&l.id);
            w.u32(l.day);
            w.u64(l.granted);
            w.u64(l.spent);
            w.u64(l.reported);
            w.u64(l.expires_at);
        }
        if let Some((day, r)) = self.server_remaining {
            w.u32(day);
            w.u64(r);
        }
        let owed = self.owed.get(..self.owed.len().min(MAX_QUEUED));
        let owed = owed.unwrap_or_default();
        w.u8(u8::try_from(owed.len()).unwrap_or(0));
        for o in owed {
            w.str(&o.lease_id);
            w.u64(o.spent);
        }
        w.0
    }

    /// `None` for bytes this version did not write.
    pub fn decode(bytes: &[u8]) -> Option<AgentState> {
        let mut r = Reader(bytes);
        if r.u8()? != MAGIC || r.u8()? != VERSION {
            return None;
        }
        let flags = r.u8()?;
        if flags & !(HAS_LEASE | HAS_REMAINING) != 0 {
            return None;
        }
        let current = if flags & HAS_LEASE != 0 {
            let l = Lease {
                id: r.str()?.to_owned(),
                day: r.u32()?,
                granted: r.u64()?,
                spent: r.u64()?,
                reported: r.u64()?,
                expires_at: r.u64()?,
            };
            if l.spent > l.granted || l.reported > l.spent {
                return None;
            }
            Some(l)
        } else {
            None
        };
        let server_remaining = if flags & HAS_REMAINING != 0 {
            Some((r.u32()?, r.u64()?))
        } else {
            None
        };
        let n = usize::from(r.u8()?);
        if n > MAX_QUEUED {
            return None;
        }
        let mut owed = Vec::with_capacity(n);
        for _ in 0..n {
            owed.push(Owed {
                lease_id: r.str()?.to_owned(),
                spent: r.u64()?,
            });
        }
        r.done().then_some(AgentState {
            current,
            server_remaining,
            owed,
        })
    }

    /// Queues a final settle; see [`MAX_QUEUED`] for a full queue. Returns
    /// the settle dropped to make room, if any.
    pub fn owe(&mut self, lease_id: String, spent: u64) -> Option<Owed> {
        let dropped = if self.owed.len() >= MAX_QUEUED && !self.owed.is_empty() {
            Some(self.owed.remove(0))
        } else {
            None
        };
        self.owed.push(Owed { lease_id, spent });
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AgentState {
        AgentState {
            current: Some(Lease {
                id: "lse_01".into(),
                day: 20_000,
                granted: 5_000_000,
                spent: 1_500_000,
                reported: 1_000_000,
                expires_at: 1_700_000_300,
            }),
            server_remaining: Some((20_000, 42)),
            owed: vec![Owed {
                lease_id: "lse_00".into(),
                spent: 7,
            }],
        }
    }

    #[test]
    fn round_trip() {
        for s in [AgentState::default(), sample()] {
            assert_eq!(AgentState::decode(&s.encode()), Some(s));
        }
    }

    #[test]
    fn any_bytes_decode_without_panicking() {
        let good = sample().encode();
        // Every truncation and every single-byte change of a good value.
        for cut in 0..good.len() {
            assert_eq!(AgentState::decode(&good[..cut]), None);
        }
        for i in 0..good.len() {
            for b in [0u8, 1, 0x7f, 0xff] {
                let mut v = good.clone();
                v[i] = b;
                let _ = AgentState::decode(&v);
            }
        }
        let mut longer = good.clone();
        longer.push(0);
        assert_eq!(AgentState::decode(&longer), None);
        // A pseudo-random walk over garbage.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..400 {
            let v: Vec<u8> = (0..len % 97)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 24) as u8
                })
                .collect();
            let _ = AgentState::decode(&v);
        }
    }

    #[test]
    fn inconsistent_amounts_are_not_state() {
        let mut s = sample();
        if let Some(l) = s.current.as_mut() {
            l.spent = l.granted + 1;
        }
        assert_eq!(AgentState::decode(&s.encode()), None);
    }

    #[test]
    fn a_full_queue_drops_the_oldest() {
        let mut s = AgentState::default();
        for i in 0..MAX_QUEUED {
            assert_eq!(s.owe(format!("l{i}"), 0), None);
        }
        let dropped = s.owe("last".into(), 0).unwrap();
        assert_eq!(dropped.lease_id, "l0");
        assert_eq!(s.owed.len(), MAX_QUEUED);
        assert_eq!(AgentState::decode(&s.encode()), Some(s));
    }
}
