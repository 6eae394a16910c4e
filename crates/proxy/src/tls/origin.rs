//! TLS towards origins for decrypted requests: rustls with the web's root
//! certificates (webpki-roots, Mozilla's list compiled in) plus the extra roots the
//! configuration names (`upstream.extra_roots`, PEM files: a school's own internal CA,
//! or a test origin's), TLS 1.3 and 1.2, ALPN `h2` and `http/1.1`, over the same
//! `Connector` (DNS, destination guard, happy eyeballs) as every other connection,
//! pooled by hyper-util's client.
//!
//! Verification is never relaxed: a certificate that fails (expired, for another
//! name, from an unknown issuer) ends the request with a page that says so
//! ([`certificate_problem`] finds the reason in the client's error).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{CertificateError, ClientConfig, RootCertStore};

use crate::body::UpstreamBody;
use crate::upstream::Connector;

/// The pooled client for decrypted requests.
pub(crate) type OriginClient = Client<HttpsConnector<Connector>, UpstreamBody>;

/// Why the extra roots could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RootsError {
    /// The file could not be read or holds no PEM certificate.
    #[error("{}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the configuration.
    #[error("TLS client set-up failed: {0}")]
    Tls(String),
}

/// The client configuration: system roots plus every certificate in `extra_roots`.
pub(crate) fn client_config(extra_roots: &[PathBuf]) -> Result<ClientConfig, RootsError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for path in extra_roots {
        for cert in read_pem_certs(path)? {
            roots.add(cert).map_err(|error| RootsError::File {
                path: path.clone(),
                message: format!("not a usable CA certificate: {error}"),
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|error| RootsError::Tls(error.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, RootsError> {
    let problem = |message: String| RootsError::File {
        path: path.to_path_buf(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|error| problem(format!("cannot read: {error}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| problem(format!("not PEM: {error}")))?;
    if certs.is_empty() {
        return Err(problem("holds no PEM certificate".to_owned()));
    }
    Ok(certs)
}

/// The pooled client over `connector` with `config` (ALPN set here).
pub(crate) fn origin_client(
    connector: Connector,
    config: ClientConfig,
    pool: crate::PoolSizing,
) -> OriginClient {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .enable_http2()
        .wrap_connector(connector);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(pool.idle_timeout)
        .pool_max_idle_per_host(pool.max_idle_per_host)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .set_host(false)
        .build(https)
}

/// When `error` (anywhere in its chain) is a failed verification of the origin's
/// certificate: what is wrong with it, in words for the block page.
pub(crate) fn certificate_problem(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(problem) = invalid_certificate(error) {
            return Some(describe(problem));
        }
        current = error.source();
    }
    None
}

/// The certificate error in `error`, looking through `io::Error`s wrapped in each
/// other (whose `source()` skips the error they wrap).
fn invalid_certificate<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a CertificateError> {
    let mut error = error;
    loop {
        if let Some(rustls::Error::InvalidCertificate(problem)) =
            error.downcast_ref::<rustls::Error>()
        {
            return Some(problem);
        }
        let inner: &'a (dyn std::error::Error + 'static) =
            error.downcast_ref::<std::io::Error>()?.get_ref()?;
        error = inner;
    }
}

fn describe(problem: &CertificateError) -> String {
    match problem {
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "the site's certificate has expired".to_owned()
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "the site's certificate is not valid yet".to_owned()
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "the site's certificate was issued for a different name".to_owned()
        }
        CertificateError::UnknownIssuer => {
            "the site's certificate was not issued by an authority SafeGate trusts".to_owned()
        }
        CertificateError::Revoked => "the site's certificate has been revoked".to_owned(),
        other => format!("the site's certificate is not valid ({other:?})"),
    }
}
