//! HTTPS decryption with the school's CA, for the sites the policy's `[decrypt]`
//! section names (see `safegate_policy::Snapshot::decrypt`).
//!
//! `ca`: the school CA in `data_dir` (`safegate ca init|export`). `leaves`: a leaf
//! certificate per host signed by it, cached. `intercept`: a decrypted CONNECT tunnel,
//! served as HTTP/1.1 or HTTP/2 (ALPN), each request going through the ordinary
//! request path as `https://host/path` (policy on the full URL, SafeSearch, block
//! page whose review form posts to `https://host/safegate/review`, which SafeGate
//! answers itself, visit record `Decrypted`). `origin`: rustls towards the origin, verified
//! against the web's roots plus `upstream.extra_roots`; a certificate that fails gets
//! a page saying so and is never passed through.
//!
//! `block_pages`: a blocked HTTPS site (not a never-decrypt one) answered with the block
//! page over TLS when `decrypt.block_pages` is on.
//!
//! Without a CA in `data_dir` nothing is decrypted: HTTPS is filtered by CONNECT host
//! and TLS server name and tunnelled.

pub(crate) mod block_pages;
pub mod ca;
pub(crate) mod intercept;
pub mod leaves;
pub(crate) mod origin;

use std::path::{Path, PathBuf};

use rustls::ClientConfig;

pub use ca::{CaError, CaInit, SchoolCa};
pub use leaves::Leaves;
pub use origin::RootsError;

/// Hosts whose leaf certificates are kept when the binary does not say otherwise.
pub const DEFAULT_LEAF_CACHE: usize = 4096;

/// Everything decryption needs, built once at start-up.
pub struct Decryption {
    leaves: Leaves,
    origin_tls: ClientConfig,
}

/// Why decryption could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DecryptionError {
    /// The CA cannot sign.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The extra upstream roots cannot be used.
    #[error("upstream.extra_roots: {0}")]
    Roots(#[from] RootsError),
}

impl Decryption {
    /// Decryption with `ca`, trusting the web's roots plus `extra_roots` (PEM files)
    /// towards origins, with at most `leaf_cache` hosts' certificates cached.
    pub fn new(
        ca: SchoolCa,
        extra_roots: &[PathBuf],
        leaf_cache: usize,
    ) -> Result<Self, DecryptionError> {
        Ok(Self {
            leaves: Leaves::new(ca, leaf_cache)?,
            origin_tls: origin::client_config(extra_roots)?,
        })
    }

    /// Decryption with the school CA that `safegate ca init` made in `data_dir`
    /// (`data_dir/ca`), or none when there is none: HTTPS is then filtered by name and
    /// tunnelled. Logs which.
    pub fn from_data_dir(
        data_dir: &Path,
        extra_roots: &[PathBuf],
    ) -> Result<Option<Self>, DecryptionError> {
        let Some(ca) = SchoolCa::load(data_dir)? else {
            tracing::info!(
                "no school CA in data_dir: HTTPS is filtered by name and tunnelled (`safegate ca init` creates one)"
            );
            return Ok(None);
        };
        let setup = Self::new(ca, extra_roots, DEFAULT_LEAF_CACHE)?;
        tracing::info!(
            "HTTPS decryption on: the sites the policy's [decrypt] section names are decrypted with the school CA"
        );
        Ok(Some(setup))
    }

    /// The leaf certificates and their cache.
    pub fn leaves(&self) -> &Leaves {
        &self.leaves
    }
}

impl std::fmt::Debug for Decryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decryption").finish_non_exhaustive()
    }
}

/// Decryption as the running proxy holds it: the set-up and the pooled origin client.
pub(crate) struct Decrypting {
    pub(crate) setup: std::sync::Arc<Decryption>,
    pub(crate) client: origin::OriginClient,
}

impl Decrypting {
    pub(crate) fn new(
        setup: std::sync::Arc<Decryption>,
        connector: crate::upstream::Connector,
        pool: crate::PoolSizing,
    ) -> Self {
        let client = origin::origin_client(connector, setup.origin_tls.clone(), pool);
        Self { setup, client }
    }
}

/// The page for a decrypted request whose origin's certificate failed verification,
/// when that is what `error` is.
pub(crate) fn certificate_refusal(
    error: &hyper_util::client::legacy::Error,
    host: &str,
    target: &str,
) -> Option<http::Response<crate::body::ResponseBody>> {
    let problem = origin::certificate_problem(error)?;
    tracing::info!(host, target, problem, "origin certificate refused");
    Some(crate::block_page::certificate_refused(
        host, target, &problem,
    ))
}
