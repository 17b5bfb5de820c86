//! Hash indexes over the bundle's agent and host tables, built when a
//! bundle loads, so that a decision finds its agent and its host with one
//! hash and (almost always) one compare instead of a binary search of
//! string compares.
//!
//! Open addressing with linear probing over a power-of-two table at most
//! half full; a slot holds `item index + 1` (0: empty). The index only
//! proposes candidates: the caller confirms each one against the table.

use alloc::vec;
use alloc::vec::Vec;

use crate::params::key_hash_bytes;

#[derive(Debug, Clone, Default)]
pub(crate) struct Index {
    slots: Vec<u32>,
}

impl Index {
    /// Indexes items `0..n`, item `i` under `hash(i)`. `None` when `n`
    /// does not fit a `u32` slot.
    pub(crate) fn build(n: usize, hash: impl Fn(usize) -> u64) -> Option<Index> {
        let size = n.checked_mul(2)?.max(8).checked_next_power_of_two()?;
        let mut slots = vec![0u32; size];
        let mask = size - 1;
        for i in 0..n {
            let tag = u32::try_from(i.checked_add(1)?).ok()?;
            let mut at = fold(hash(i)) & mask;
            // At most half full: an empty slot is always found.
            while slots.get(at).is_some_and(|s| *s != 0) {
                at = (at + 1) & mask;
            }
            *slots.get_mut(at)? = tag;
        }
        Some(Index { slots })
    }

    /// The first item under `hash` that `is` accepts.
    #[inline]
    pub(crate) fn find(&self, hash: u64, mut is: impl FnMut(usize) -> bool) -> Option<usize> {
        let mask = self.slots.len().checked_sub(1)?;
        let mut at = fold(hash) & mask;
        for _ in 0..self.slots.len() {
            let tag = *self.slots.get(at)?;
            let item = usize::try_from(tag).ok()?.checked_sub(1)?;
            if is(item) {
                return Some(item);
            }
            at = (at + 1) & mask;
        }
        None
    }
}

fn fold(h: u64) -> usize {
    // The high bits of the multiplicative hash are the well-mixed ones.
    (h ^ (h >> 32)) as usize
}

/// Hash of an agent key; a tenant and its absence hash apart.
pub(crate) fn agent_hash(tenant: Option<&str>, name: &str) -> u64 {
    let t = match tenant {
        Some(t) => key_hash_bytes(t.as_bytes()).rotate_left(17) ^ 1,
        None => 0,
    };
    key_hash_bytes(name.as_bytes()) ^ t
}

/// Hash of a host name, the same whatever its ASCII case.
pub(crate) fn host_hash(host: &str) -> u64 {
    key_hash_bytes(host.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::string::String;

    #[test]
    fn finds_every_item_and_nothing_else() {
        for n in [0usize, 1, 3, 8, 100, 1000] {
            let names: Vec<String> = (0..n).map(|i| format!("agent-{i:04}")).collect();
            let idx = Index::build(n, |i| agent_hash(None, &names[i])).unwrap();
            for (i, name) in names.iter().enumerate() {
                assert_eq!(
                    idx.find(agent_hash(None, name), |j| names[j] == *name),
                    Some(i)
                );
            }
            let missing = "agent-x";
            assert_eq!(
                idx.find(agent_hash(None, missing), |j| names[j] == missing),
                None
            );
        }
    }

    #[test]
    fn host_hash_ignores_ascii_case() {
        assert_eq!(host_hash("API.Stripe.com"), host_hash("api.stripe.com"));
        assert_ne!(agent_hash(Some(""), "a"), agent_hash(None, "a"));
    }
}
