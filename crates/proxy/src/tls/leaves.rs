//! Certificates for decrypted sites: one leaf per host, signed by the school CA, and
//! the rustls server configuration that presents it, kept in a bounded cache.
//!
//! Every leaf shares one ECDSA P-256 key generated at start-up (it never leaves the
//! process), so minting a leaf costs one signature by the CA. The cache holds at
//! most `capacity` hosts in 16 shards, each a small map behind its own lock that is
//! held only to look up or insert, never while minting; when a shard is full its least
//! recently used host is dropped. Two connections that miss on the same host at once
//! may both mint; the second insert wins, which is harmless.
//!
//! Towards the client: TLS 1.3 and 1.2, ALPN `h2` and `http/1.1`.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, PoisonError};

use rcgen::KeyPair;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::PrivateKeyDer;
use rustls::sign::{CertifiedKey, SigningKey, SingleCertAndKey};

use crate::tls::ca::{CaError, SchoolCa};

/// Shards of the cache; a power of two.
const SHARDS: usize = 16;

/// Mints and caches per-host server configurations.
pub struct Leaves {
    ca: SchoolCa,
    leaf_key: KeyPair,
    signing_key: Arc<dyn SigningKey>,
    provider: Arc<CryptoProvider>,
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    hasher: std::collections::hash_map::RandomState,
}

#[derive(Default)]
struct Shard {
    /// Host → (configuration, last use).
    entries: HashMap<String, (Arc<ServerConfig>, u64)>,
    clock: u64,
}

impl Leaves {
    /// A cache of at most `capacity` hosts (at least one per shard) for `ca`.
    pub fn new(ca: SchoolCa, capacity: usize) -> Result<Self, CaError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let signing_key = provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()))
            .map_err(|error| CaError::Tls(error.to_string()))?;
        Ok(Self {
            ca,
            leaf_key,
            signing_key,
            provider,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            hasher: Default::default(),
        })
    }

    /// The school CA.
    pub fn ca(&self) -> &SchoolCa {
        &self.ca
    }

    /// The server configuration presenting a certificate for `host` (lower-case DNS
    /// name or IP address), from the cache or minted now.
    pub fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, CaError> {
        let shard = &self.shards[self.hasher.hash_one(host) as usize % SHARDS];
        {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            shard.clock += 1;
            let now = shard.clock;
            if let Some((config, used)) = shard.entries.get_mut(host) {
                *used = now;
                return Ok(Arc::clone(config));
            }
        }
        let config = self.mint(host)?;
        let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        shard.clock += 1;
        let now = shard.clock;
        if shard.entries.len() >= self.per_shard
            && !shard.entries.contains_key(host)
            && let Some(oldest) = shard
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(name, _)| name.clone())
        {
            shard.entries.remove(&oldest);
        }
        shard
            .entries
            .insert(host.to_owned(), (Arc::clone(&config), now));
        Ok(config)
    }

    /// Hosts in the cache.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                shard
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entries
                    .len()
            })
            .sum()
    }

    /// True when no host is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn mint(&self, host: &str) -> Result<Arc<ServerConfig>, CaError> {
        let leaf = self.ca.sign_leaf(host, &self.leaf_key)?;
        let certified = CertifiedKey::new(
            vec![leaf, self.ca.cert_der().clone()],
            Arc::clone(&self.signing_key),
        );
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|error| CaError::Tls(error.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn the_cache_is_bounded_and_reuses_leaves() {
        let dir = tempfile::tempdir().unwrap();
        SchoolCa::init(dir.path(), "Test").unwrap();
        let ca = SchoolCa::load(dir.path()).unwrap().unwrap();
        let leaves = Leaves::new(ca, 32).unwrap();
        let first = leaves.server_config("a.example").unwrap();
        let again = leaves.server_config("a.example").unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        for i in 0..200 {
            leaves.server_config(&format!("host{i}.example")).unwrap();
        }
        assert!(leaves.len() <= 32, "{}", leaves.len());
        assert!(leaves.len() >= 16);
    }
}
