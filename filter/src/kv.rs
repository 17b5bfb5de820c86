//! Shared data as the rate limiter and the budget leases use it: the keys
//! of an agent, a small binary codec that never panics on any bytes, and
//! a bounded compare-and-swap loop.
//!
//! Shared data is per Envoy process and shared by the VMs of all its
//! worker threads, which run in parallel: every read-modify-write goes
//! through [`update`], which writes with the CAS number it read and starts
//! again from a fresh read when another VM wrote in between.
//!
//! Envoy has no "create if absent": a key with no value is written
//! whatever the CAS number. A missing key is therefore first created with
//! its empty state, written blindly, and only then changed with CAS; two
//! VMs creating the same key at once write the same bytes. What remains is
//! a VM whose blind creation lands after another VM had created *and*
//! changed the key, which erases that change. So keys are created with
//! [`ensure`] at configure time, before the VM serves a request (the
//! `prepare` functions of `rate` and `budget`); [`update`] creates a key
//! still missing the same way, as a fallback.

use crate::host::{Host, Level, Stored};

/// The tenant Aegis puts agents in whose policy names none (the control
/// plane's rule, so that both sides name the same budget).
pub const DEFAULT_TENANT: &str = "default";

/// An agent, as shared data and the control plane name it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AgentRef {
    pub tenant: String,
    pub agent: String,
}

impl AgentRef {
    /// `tenant` as the bundle gives it: `None` is the default tenant.
    pub fn new(tenant: Option<&str>, agent: &str) -> AgentRef {
        AgentRef {
            tenant: tenant.unwrap_or(DEFAULT_TENANT).to_owned(),
            agent: agent.to_owned(),
        }
    }

    /// The shared-data key of this agent's `kind` of state. The tenant's
    /// length comes first so that no two (tenant, agent) pairs share a key
    /// whatever characters their names hold (`a/b` + `c` vs `a` + `b/c`).
    pub fn key(&self, kind: &str) -> String {
        format!(
            "aegis/{kind}/{}:{}/{}",
            self.tenant.len(),
            self.tenant,
            self.agent
        )
    }
}

/// Appends little-endian fields to a value.
#[derive(Debug, Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    /// A string of at most 65535 bytes, after its u16 length; longer ones
    /// are cut at a character boundary (callers keep theirs shorter).
    pub fn str(&mut self, s: &str) {
        let mut end = s.len().min(usize::from(u16::MAX));
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        let s = s.get(..end).unwrap_or_default();
        self.0
            .extend_from_slice(&u16::try_from(s.len()).unwrap_or(0).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }
}

/// Reads what [`Writer`] wrote; every read is `None` past the end.
#[derive(Debug)]
pub struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
    pub fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|[b]| b)
    }
    pub fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    pub fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
    pub fn str(&mut self) -> Option<&'a str> {
        let len = usize::from(self.take().map(u16::from_le_bytes)?);
        let bytes = self.0.get(..len)?;
        self.0 = self.0.get(len..)?;
        std::str::from_utf8(bytes).ok()
    }
    /// Whether every byte was read (a value with bytes left over is not
    /// one this version wrote).
    pub fn done(&self) -> bool {
        self.0.is_empty()
    }
}

/// What an [`update`] step decided, given the current value.
pub enum Step<T> {
    /// Write this value (with the CAS number read), then answer `T`.
    Write(Vec<u8>, T),
    /// Nothing to change: answer `T`.
    Keep(T),
}

/// Why an [`update`] gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateError {
    /// Other VMs wrote between every read and write, `tries` times.
    Contention,
    /// The host refused a read or a write.
    Host(String),
}

impl std::fmt::Display for UpdateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpdateError::Contention => f.write_str("other workers kept changing it"),
            UpdateError::Host(e) => f.write_str(e),
        }
    }
}

/// How many times [`update`] reads and tries to write before giving up.
/// Each try is two host calls of a microsecond or so; eight lost races in
/// a row mean a hot key, where waiting longer only adds latency.
pub const TRIES: u32 = 8;

/// Reads `key`, asks `step` what to do with its value (`None` when the
/// key has none yet, or holds bytes `decode`-style callers reject), and
/// writes the new value with CAS, starting again on a CAS mismatch, at
/// most [`TRIES`] times. A missing key is first created as `empty` (see
/// the module documentation for why).
pub fn update<T>(
    host: &impl Host,
    key: &str,
    empty: &[u8],
    mut step: impl FnMut(Option<&[u8]>) -> Step<T>,
) -> Result<T, UpdateError> {
    for _ in 0..TRIES {
        let Some((value, cas)) = host.get_shared_data(key).map_err(UpdateError::Host)? else {
            host.set_shared_data(key, empty, None)
                .map_err(UpdateError::Host)?;
            continue;
        };
        match step(Some(&value)) {
            Step::Keep(t) => return Ok(t),
            Step::Write(new, t) => {
                if new == value {
                    return Ok(t);
                }
                match host
                    .set_shared_data(key, &new, Some(cas))
                    .map_err(UpdateError::Host)?
                {
                    Stored::Written => return Ok(t),
                    Stored::CasMismatch => continue,
                }
            }
        }
    }
    Err(UpdateError::Contention)
}

/// Creates `key` with `empty` unless it has a value.
pub fn ensure(host: &impl Host, key: &str, empty: &[u8]) -> Result<(), String> {
    if host.get_shared_data(key)?.is_none() {
        host.set_shared_data(key, empty, None)?;
    }
    Ok(())
}

/// Reads `key` once, for a look without a write; `None` when it has no
/// value or the host fails (logged).
pub fn read(host: &impl Host, key: &str) -> Option<Vec<u8>> {
    match host.get_shared_data(key) {
        Ok(v) => v.map(|(v, _)| v),
        Err(e) => {
            host.log(Level::Warn, &format!("aegis: {e}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{Mock, SharedStore};
    use std::rc::Rc;

    #[test]
    fn agent_keys_never_collide_across_tenants() {
        let a = AgentRef::new(Some("a/b"), "c").key("rate");
        let b = AgentRef::new(Some("a"), "b/c").key("rate");
        assert_ne!(a, b);
        assert_eq!(a, "aegis/rate/3:a/b/c");
        assert_eq!(
            AgentRef::new(None, "x"),
            AgentRef::new(Some("default"), "x")
        );
        assert_ne!(
            AgentRef::new(Some("t"), "x").key("rate"),
            AgentRef::new(Some("t"), "x").key("lease")
        );
    }

    #[test]
    fn reader_stops_at_the_end_without_panicking() {
        let mut w = Writer::default();
        w.u8(1);
        w.str("lse_é");
        w.u64(7);
        let bytes = w.0;
        for cut in 0..bytes.len() {
            let mut r = Reader(&bytes[..cut]);
            let all = (|| Some((r.u8()?, r.str()?.to_owned(), r.u64()?)))();
            assert!(all.is_none(), "{cut}");
        }
        let mut r = Reader(&bytes);
        assert_eq!(r.u8(), Some(1));
        assert_eq!(r.str(), Some("lse_é"));
        assert_eq!(r.u64(), Some(7));
        assert!(r.done());
        // A length past the end, and bytes that are not UTF-8.
        assert_eq!(Reader(&[9, 0, b'a']).str(), None);
        assert_eq!(Reader(&[1, 0, 0xff]).str(), None);
    }

    #[test]
    fn update_retries_after_a_conflict_and_gives_up_after_tries() {
        let store = Rc::new(SharedStore::default());
        let vm = Mock::vm(&store);
        let inc = |v: Option<&[u8]>| {
            let n = v.and_then(|v| v.first().copied()).unwrap_or(0);
            Step::Write(vec![n + 1], n + 1)
        };
        assert_eq!(update(&vm, "k", &[0], inc), Ok(1));
        store.conflicts.set(TRIES - 1);
        assert_eq!(update(&vm, "k", &[0], inc), Ok(2));
        store.conflicts.set(TRIES);
        assert_eq!(update(&vm, "k", &[0], inc), Err(UpdateError::Contention));
        assert_eq!(store.value("k"), Some(vec![2]));
        store.broken.set(true);
        assert!(matches!(
            update(&vm, "k", &[0], inc),
            Err(UpdateError::Host(_))
        ));
    }

    #[test]
    fn a_write_by_another_vm_between_read_and_write_is_not_lost() {
        let store = Rc::new(SharedStore::default());
        let a = Mock::vm(&store);
        let b = Rc::new(Mock::vm(&store));
        let inc = |v: Option<&[u8]>| {
            let n = v.and_then(|v| v.first().copied()).unwrap_or(0);
            Step::Write(vec![n + 1], n + 1)
        };
        assert_eq!(update(&a, "k", &[0], inc), Ok(1));
        let b2 = Rc::clone(&b);
        store.interleave(move || {
            assert_eq!(update(&b2, "k", &[0], inc), Ok(2));
        });
        assert_eq!(update(&a, "k", &[0], inc), Ok(3));
        assert_eq!(store.value("k"), Some(vec![3]));
    }
}
