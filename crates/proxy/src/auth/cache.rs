//! Verified credentials, so that a browser sending the same `Proxy-Authorization`
//! on every request costs one Argon2 verification per [`CredentialCache`] lifetime
//! instead of one per request.
//!
//! **Key**: SipHash-1-3 with a random per-process key (std's `RandomState`) of the
//! header's base64 token, which encodes exactly `user:password`. Neither the
//! password nor the token is stored; knowing the cache's contents does not give a
//! password, and without the process's random key nobody can compute which token a
//! key belongs to (or aim for a collision).
//!
//! **Value**: the user's normalised name, the user's generation when the password was
//! verified, and an expiry. A hit is only a hit if the user table still has that user
//! with that generation and not disabled ([`super::Authenticator`] checks): every
//! change of a user (password, disable, role) takes effect on the next request without
//! anything being removed from here.
//!
//! **Concurrency**: [`SHARDS`] shards, each an `RwLock<HashMap>`, chosen by bits of the
//! key. A hit takes one shard's read lock for a hash-map probe (tens of nanoseconds,
//! readers never wait for each other); only a successful verification takes a write
//! lock. No lock is held across an await. A sharded map was chosen over one
//! `ArcSwap`ped map because inserts (every log-in) would copy the whole map, and over
//! an external concurrent map because this needs no more than this.
//!
//! **Bounds**: at most `capacity` entries (split evenly over the shards). An insert
//! into a full shard first drops its expired entries, then, if it is still full, any
//! one entry: an evicted user verifies once more on the next request.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// Number of shards; a power of two.
pub(crate) const SHARDS: usize = 16;

/// Keys are SipHash outputs already: the maps use them as they are.
#[derive(Default)]
struct KeyIsHash(u64);

impl Hasher for KeyIsHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed; fold anything else in anyway.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, key: u64) {
        self.0 = key;
    }
}

type Shard = HashMap<u64, Entry, BuildHasherDefault<KeyIsHash>>;

/// One verified credential.
#[derive(Debug, Clone)]
struct Entry {
    user: Arc<str>,
    generation: u64,
    expires: Instant,
}

/// The cache of verified credentials. See the module documentation.
pub(crate) struct CredentialCache {
    shards: Box<[RwLock<Shard>]>,
    keys: RandomState,
    per_shard: usize,
    ttl: Duration,
}

impl CredentialCache {
    /// A cache of at most about `capacity` entries, each valid for `ttl`.
    pub(crate) fn new(capacity: usize, ttl: Duration) -> Self {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            keys: RandomState::new(),
            per_shard,
            ttl,
        }
    }

    /// How long a verified log-in is trusted.
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The key of a `Basic` token.
    pub(crate) fn key(&self, token: &[u8]) -> u64 {
        self.keys.hash_one(token)
    }

    fn shard(&self, key: u64) -> &RwLock<Shard> {
        // Bits 32.. pick the shard: hashbrown uses the low bits for the bucket and the
        // top seven for its tags, which must stay varied within a shard.
        &self.shards[(key >> 32) as usize % SHARDS]
    }

    /// Calls `found` with the user and generation verified for `key`, if not expired
    /// at `now`, under the shard's read lock (so nothing is cloned on a hit).
    pub(crate) fn lookup<R>(
        &self,
        key: u64,
        now: Instant,
        found: impl FnOnce(&str, u64) -> R,
    ) -> Option<R> {
        let shard = self
            .shard(key)
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let entry = shard.get(&key).filter(|entry| entry.expires > now)?;
        Some(found(&entry.user, entry.generation))
    }

    #[cfg(test)]
    fn get(&self, key: u64, now: Instant) -> Option<(Arc<str>, u64)> {
        self.lookup(key, now, |user, generation| (Arc::from(user), generation))
    }

    /// Remembers that `key` verified as `user` at `generation`.
    pub(crate) fn insert(&self, key: u64, user: Arc<str>, generation: u64, now: Instant) {
        let entry = Entry {
            user,
            generation,
            expires: now + self.ttl,
        };
        let mut shard = self
            .shard(key)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            shard.retain(|_, entry| entry.expires > now);
            if shard.len() >= self.per_shard
                && let Some(&victim) = shard.keys().next()
            {
                shard.remove(&victim);
            }
        }
        shard.insert(key, entry);
    }

    /// Entries held (expired ones included until they are pushed out).
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_until_expiry() {
        let cache = CredentialCache::new(100, Duration::from_secs(60));
        let now = Instant::now();
        let key = cache.key(b"YWRhOnNlY3JldA==");
        assert_ne!(key, cache.key(b"YWRhOnNlY3JldB=="));
        assert_eq!(cache.get(key, now), None);
        cache.insert(key, Arc::from("ada"), 7, now);
        assert_eq!(cache.get(key, now), Some((Arc::from("ada"), 7)));
        assert_eq!(
            cache.get(key, now + Duration::from_secs(59)).map(|e| e.1),
            Some(7)
        );
        assert_eq!(cache.get(key, now + Duration::from_secs(60)), None);
        // A later verification replaces the generation.
        cache.insert(key, Arc::from("ada"), 9, now);
        assert_eq!(cache.get(key, now).map(|e| e.1), Some(9));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn each_cache_has_its_own_random_key() {
        // The same token maps to different keys in two caches (two processes).
        let a = CredentialCache::new(10, Duration::from_secs(1));
        let b = CredentialCache::new(10, Duration::from_secs(1));
        assert_ne!(a.key(b"token"), b.key(b"token"));
    }

    #[test]
    fn stays_within_its_bound() {
        let cache = CredentialCache::new(64, Duration::from_secs(60));
        let now = Instant::now();
        for i in 0..10_000u32 {
            let key = cache.key(&i.to_le_bytes());
            cache.insert(key, Arc::from("u"), u64::from(i), now);
        }
        assert!(cache.len() <= 64, "{}", cache.len());
        // Expired entries make room before live ones are evicted.
        let later = now + Duration::from_secs(61);
        let fresh = cache.key(b"fresh");
        cache.insert(fresh, Arc::from("v"), 1, later);
        assert_eq!(cache.get(fresh, later).map(|e| e.1), Some(1));
    }
}
