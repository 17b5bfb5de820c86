//! The verified-token cache: an agent presents the same token for minutes,
//! and checking its Ed25519 signature costs more than everything else a
//! decision does, so a token whose signature and claims held is kept and
//! found again by its exact bytes.
//!
//! - **Exact bytes decide.** A hash of the token's tail picks a bucket of
//!   four slots; a slot answers only when its stored bytes equal the
//!   token's. Tokens longer than the slot size are never kept (they are
//!   verified each time).
//! - **Time is judged again on every hit**: `exp`, `nbf`, `iat` and the
//!   maximum age, with the configured skew, exactly as [`super::verify`]
//!   does; a token that has expired is dropped and refused with the same
//!   error.
//! - **One bundle.** Each entry names an agent of the bundle that verified
//!   it, under that bundle's keys and issuer. The cache remembers the hash
//!   of that bundle and empties itself when asked about another one: a new
//!   policy, a rotated key or a changed audience starts from nothing, so a
//!   key that is no longer trusted never hits.
//! - **Only verified tokens enter.** Failures are not cached: a negative
//!   entry is bypassed by changing one byte of a forged token, so it would
//!   not stop a flood, and it would give an attacker a table to fill. A
//!   flood of bad tokens therefore never evicts a good one; what it costs
//!   is one signature check each, which a rate limit in front of the
//!   filter bounds. A full bucket evicts its least recently used entry.
//! - **Fixed size.** Slots and token bytes are allocated when the cache is
//!   made (at configure time); a lookup or an insert allocates nothing.

use alloc::vec;
use alloc::vec::Vec;

use super::{IdentityConfig, JwtError, Validity, MAX_TOKEN_LEN};

/// Slots per bucket.
const WAYS: usize = 4;

/// How large a [`TokenCache`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenCacheConfig {
    /// Tokens kept (rounded up to a power of two); 0 turns the cache off.
    pub entries: usize,
    /// Longest token kept, in bytes; longer ones are verified every time.
    pub max_token_bytes: usize,
}

impl TokenCacheConfig {
    /// 4,096 tokens of up to 1 KiB: 4 MiB of token bytes per cache.
    pub const DEFAULT: TokenCacheConfig = TokenCacheConfig {
        entries: 4096,
        max_token_bytes: 1024,
    };

    /// No cache: every token is verified.
    pub const OFF: TokenCacheConfig = TokenCacheConfig {
        entries: 0,
        max_token_bytes: 0,
    };
}

impl Default for TokenCacheConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CacheHit {
    /// The token is still valid; the value stored with it.
    Valid(u32),
    /// The token was verified once but its time is up (or not yet come):
    /// the error [`super::verify`] gives now. The entry is gone.
    Invalid(JwtError),
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Token length; 0: empty.
    len: u16,
    /// High bits of the token's hash: skips most byte comparisons.
    tag: u32,
    value: u32,
    validity: Validity,
    /// Clock of the last hit or insert, for eviction.
    used: u64,
}

const EMPTY: Slot = Slot {
    len: 0,
    tag: 0,
    value: 0,
    validity: Validity {
        exp: 0.0,
        nbf: None,
        iat: None,
    },
    used: 0,
};

/// Counters since the cache was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Entries dropped to make room for another token.
    pub evictions: u64,
    /// Entries dropped because their token's time was up.
    pub expired: u64,
}

/// Verified tokens, by their exact bytes. See the module documentation.
#[derive(Debug)]
pub struct TokenCache {
    slots: Vec<Slot>,
    /// `slots.len() * slot_bytes`: slot `i` keeps its token at
    /// `i * slot_bytes`.
    bytes: Vec<u8>,
    slot_bytes: usize,
    /// Hash of the bundle the entries belong to.
    stamp: Option<[u8; 32]>,
    clock: u64,
    stats: CacheStats,
}

impl TokenCache {
    /// Allocates the whole cache now. `max_token_bytes` is capped at the
    /// longest token [`super::verify`] accepts.
    pub fn new(cfg: TokenCacheConfig) -> Self {
        let slot_bytes = cfg.max_token_bytes.min(MAX_TOKEN_LEN);
        let entries = if cfg.entries == 0 || slot_bytes == 0 {
            0
        } else {
            cfg.entries.div_ceil(WAYS).next_power_of_two() * WAYS
        };
        TokenCache {
            slots: vec![EMPTY; entries],
            bytes: vec![0; entries * slot_bytes],
            slot_bytes,
            stamp: None,
            clock: 0,
            stats: CacheStats::default(),
        }
    }

    /// A cache that keeps nothing.
    pub fn off() -> Self {
        Self::new(TokenCacheConfig::OFF)
    }

    /// How many tokens it can keep.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// How many tokens it keeps now.
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.len != 0).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Drops every entry.
    pub fn clear(&mut self) {
        self.slots.fill(EMPTY);
    }

    /// Looks `token` up for the bundle whose hash is `bundle`, judging its
    /// time at `now` under `cfg` (that bundle's identity). `None`: not
    /// kept; verify it.
    pub fn lookup(
        &mut self,
        bundle: &[u8; 32],
        token: &[u8],
        cfg: &IdentityConfig,
        now: i64,
    ) -> Option<CacheHit> {
        self.belong_to(bundle);
        let Some(i) = self.find(token) else {
            self.stats.misses += 1;
            return None;
        };
        self.stats.hits += 1;
        let slot = self.slots.get_mut(i)?;
        match slot.validity.check(cfg, now) {
            Ok(()) => {
                self.clock += 1;
                slot.used = self.clock;
                Some(CacheHit::Valid(slot.value))
            }
            Err(e) => {
                *slot = EMPTY;
                self.stats.expired += 1;
                Some(CacheHit::Invalid(e))
            }
        }
    }

    /// Keeps `token`, verified for the bundle whose hash is `bundle`, with
    /// `value` (what a hit returns) and its time claims. Tokens longer than
    /// the slot size are not kept.
    pub fn insert(&mut self, bundle: &[u8; 32], token: &[u8], value: u32, validity: Validity) {
        self.belong_to(bundle);
        let Some(len) = self.fits(token) else {
            return;
        };
        if self.find(token).is_some() {
            return;
        }
        let (bucket, tag) = self.place(token);
        let Some(ways) = self.slots.get(bucket..bucket + WAYS) else {
            return;
        };
        // An empty slot, else the least recently used one.
        let Some((way, victim)) = ways.iter().enumerate().min_by_key(|(_, s)| {
            if s.len == 0 {
                0
            } else {
                s.used.saturating_add(1)
            }
        }) else {
            return;
        };
        if victim.len != 0 {
            self.stats.evictions += 1;
        }
        let i = bucket + way;
        let at = i * self.slot_bytes;
        let Some(dst) = self.bytes.get_mut(at..at + token.len()) else {
            return;
        };
        dst.copy_from_slice(token);
        self.clock += 1;
        if let Some(slot) = self.slots.get_mut(i) {
            *slot = Slot {
                len,
                tag,
                value,
                validity,
                used: self.clock,
            };
        }
    }

    /// Empties the cache if its entries belong to another bundle.
    fn belong_to(&mut self, bundle: &[u8; 32]) {
        if self.stamp.as_ref() != Some(bundle) {
            self.clear();
            self.stamp = Some(*bundle);
        }
    }

    fn fits(&self, token: &[u8]) -> Option<u16> {
        if self.slots.is_empty() || token.is_empty() || token.len() > self.slot_bytes {
            return None;
        }
        u16::try_from(token.len()).ok()
    }

    /// First slot of the token's bucket, and its tag.
    fn place(&self, token: &[u8]) -> (usize, u32) {
        let h = tail_hash(token);
        let buckets = self.slots.len() / WAYS;
        // `buckets` is a power of two.
        let bucket = (h as usize) & (buckets - 1);
        (bucket * WAYS, (h >> 32) as u32)
    }

    /// The slot that keeps exactly `token`.
    fn find(&self, token: &[u8]) -> Option<usize> {
        let len = self.fits(token)?;
        let (bucket, tag) = self.place(token);
        (bucket..bucket + WAYS).find(|&i| {
            self.slots
                .get(i)
                .is_some_and(|s| s.len == len && s.tag == tag)
                && self
                    .bytes
                    .get(i * self.slot_bytes..i * self.slot_bytes + token.len())
                    == Some(token)
        })
    }
}

/// Hash of the last (up to) 32 bytes of a token and its length. A compact
/// JWS ends with its signature, which no one but the key holder can make
/// collide for valid tokens; the hash only picks a bucket, so forged tokens
/// that share a tail cost a byte comparison, never a wrong answer.
fn tail_hash(token: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let tail = token.get(token.len().saturating_sub(32)..).unwrap_or(token);
    let mut h = (token.len() as u64).wrapping_mul(K);
    for chunk in tail.chunks(8) {
        let mut w = [0u8; 8];
        if let Some(dst) = w.get_mut(..chunk.len()) {
            dst.copy_from_slice(chunk);
        }
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    h ^ (h >> 29)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> IdentityConfig {
        IdentityConfig::new("iss", "aud", Vec::new())
    }

    fn until(exp: f64) -> Validity {
        Validity {
            exp,
            nbf: None,
            iat: None,
        }
    }

    const B: [u8; 32] = [1; 32];

    #[test]
    fn exact_bytes_decide() {
        let mut c = TokenCache::new(TokenCacheConfig {
            entries: 8,
            max_token_bytes: 64,
        });
        assert_eq!(c.lookup(&B, b"a.b.sig1", &cfg(), 0), None);
        c.insert(&B, b"a.b.sig1", 7, until(100.0));
        assert_eq!(
            c.lookup(&B, b"a.b.sig1", &cfg(), 0),
            Some(CacheHit::Valid(7))
        );
        // Same tail, same length, other bytes: a miss.
        assert_eq!(c.lookup(&B, b"x.b.sig1", &cfg(), 0), None);
        assert_eq!(c.lookup(&B, b"a.b.sig", &cfg(), 0), None);
        assert_eq!(c.stats().hits, 1);
        assert_eq!(c.stats().misses, 3);
    }

    #[test]
    fn too_long_or_off_is_never_kept() {
        let mut c = TokenCache::new(TokenCacheConfig {
            entries: 8,
            max_token_bytes: 4,
        });
        c.insert(&B, b"abcde", 1, until(100.0));
        assert_eq!(c.lookup(&B, b"abcde", &cfg(), 0), None);
        let mut off = TokenCache::off();
        assert_eq!(off.capacity(), 0);
        off.insert(&B, b"abc", 1, until(100.0));
        assert_eq!(off.lookup(&B, b"abc", &cfg(), 0), None);
    }

    #[test]
    fn time_is_judged_on_every_hit() {
        let mut c = TokenCache::new(TokenCacheConfig::DEFAULT);
        let id = cfg(); // 60 s of skew
        c.insert(&B, b"tok", 1, until(1000.0));
        assert_eq!(c.lookup(&B, b"tok", &id, 1060), Some(CacheHit::Valid(1)));
        assert_eq!(
            c.lookup(&B, b"tok", &id, 1061),
            Some(CacheHit::Invalid(JwtError::Expired))
        );
        // Dropped: the next lookup is a miss (and a full verify).
        assert_eq!(c.lookup(&B, b"tok", &id, 1061), None);
        assert_eq!(c.stats().expired, 1);
    }

    #[test]
    fn another_bundle_empties_it() {
        let mut c = TokenCache::new(TokenCacheConfig::DEFAULT);
        c.insert(&B, b"tok", 1, until(1000.0));
        assert_eq!(c.lookup(&[2; 32], b"tok", &cfg(), 0), None);
        assert!(c.is_empty());
        assert_eq!(c.lookup(&B, b"tok", &cfg(), 0), None);
    }

    #[test]
    fn a_full_bucket_evicts_the_least_recently_used() {
        // One bucket: every token lands in it.
        let mut c = TokenCache::new(TokenCacheConfig {
            entries: 4,
            max_token_bytes: 16,
        });
        assert_eq!(c.capacity(), 4);
        for (i, t) in [b"t0", b"t1", b"t2", b"t3"].iter().enumerate() {
            c.insert(&B, *t, i as u32, until(100.0));
        }
        assert_eq!(c.len(), 4);
        // t0 is used again, so t1 is the oldest.
        assert_eq!(c.lookup(&B, b"t0", &cfg(), 0), Some(CacheHit::Valid(0)));
        c.insert(&B, b"t4", 4, until(100.0));
        assert_eq!(c.lookup(&B, b"t1", &cfg(), 0), None);
        for (t, v) in [(b"t0", 0), (b"t2", 2), (b"t3", 3), (b"t4", 4)] {
            assert_eq!(c.lookup(&B, t, &cfg(), 0), Some(CacheHit::Valid(v)));
        }
        assert_eq!(c.stats().evictions, 1);
    }

    #[test]
    fn inserting_twice_keeps_one_entry() {
        let mut c = TokenCache::new(TokenCacheConfig {
            entries: 4,
            max_token_bytes: 16,
        });
        c.insert(&B, b"tok", 1, until(100.0));
        c.insert(&B, b"tok", 1, until(100.0));
        assert_eq!(c.len(), 1);
    }
}
