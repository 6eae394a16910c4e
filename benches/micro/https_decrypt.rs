//! HTTPS decryption against plain CONNECT, in one process and one run: SafeGate's
//! proxy (the library, release build) with the school CA, a TLS origin on 127.0.0.1
//! and 127.0.0.2 answering `GET /1k` with 1 KiB, and client workers using rustls.
//!
//! * **new connections per second**: each worker, again and again: TCP connect to the
//!   proxy, CONNECT, TLS handshake, one `GET /1k`, close. Decrypted (`127.0.0.1` is on
//!   the policy's decrypt list; the leaf certificate is in the cache after the warm-up,
//!   so nothing is minted; each connection costs the client–SafeGate handshake, while
//!   SafeGate's connections to the origin are pooled and reused) against a plain
//!   tunnel (`127.0.0.2`; one handshake per connection, end to end with the origin).
//! * **1 KiB requests per second**: each worker keeps one connection and sends
//!   `GET /1k` after `GET /1k` (HTTP/1.1 keep-alive): decrypted (SafeGate terminates
//!   TLS, decides each request, records nothing, forwards over its pooled TLS client)
//!   against a plain tunnel.
//!
//! * **leaf certificates minted per second** (a cold cache), on one thread.
//!
//! Prints the figures and the decrypted/plain ratios. Run with
//! `cargo bench -p safegate-benches --bench https_decrypt` (`BENCH_SECONDS`, `BENCH_WORKERS`
//! environment variables; defaults 5 and 8). Only loopback is used; the client
//! load shares the machine with the proxy, so compare the ratios, not the absolutes.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rustls::pki_types::ServerName;
use safegate_policy::Policy;
use safegate_proxy::tls::{Decryption, SchoolCa};
use safegate_proxy::{
    PacConfig, Proxy, ProxyConfig, ProxySettings, TransparentConfig, UpstreamConfig,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;

const BODY: usize = 1024;

fn main() {
    let seconds: u64 = env_or("BENCH_SECONDS", 5);
    let workers: usize = env_or("BENCH_WORKERS", 8);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(Duration::from_secs(seconds), workers));
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn run(duration: Duration, workers: usize) {
    let dir = tempfile::tempdir().unwrap();
    // The origins' CA and certificate (IP addresses: no DNS anywhere).
    let origin_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let origin_ca =
        rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
            .unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "127.0.0.2".to_owned()])
        .unwrap()
        .signed_by(&origin_key, &origin_ca)
        .unwrap();
    let roots_file = dir.path().join("origin-ca.pem");
    std::fs::write(&roots_file, origin_ca.pem()).unwrap();
    let mut server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(origin_key.serialize_der().into()),
        )
        .unwrap();
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let decrypted_origin = origin(acceptor.clone(), "127.0.0.1:0").await;
    let plain_origin = origin(acceptor, "127.0.0.2:0").await;

    // SafeGate with the school CA; 127.0.0.1 is decrypted, 127.0.0.2 is not.
    SchoolCa::init(dir.path(), "Bench").unwrap();
    let school_ca = SchoolCa::load(dir.path()).unwrap().unwrap();
    let school_pem = school_ca.cert_pem().to_owned();
    let decryption =
        Arc::new(Decryption::new(school_ca, std::slice::from_ref(&roots_file), 4096).unwrap());
    let policy = Policy::parse(
        "[roles.pupil]\n[roles.staff]\n[roles.filter-admin]\n[decrypt]\nsites = [\"127.0.0.1\"]\n",
        &dir.path().join("policy.toml"),
    )
    .unwrap()
    .compile()
    .unwrap();
    let proxy_config = ProxyConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        connect_ports: vec![decrypted_origin.port(), plain_origin.port()],
        ..ProxyConfig::default()
    };
    let upstream = UpstreamConfig {
        allow_loopback: true,
        ..UpstreamConfig::default()
    };
    let proxy = Proxy::bind(
        ProxySettings {
            proxy: &proxy_config,
            upstream: &upstream,
            pac: &PacConfig::default(),
            transparent: &TransparentConfig::default(),
            reviews: None,
            policy: Arc::new(ArcSwap::from_pointee(policy)),
            auth: Arc::default(),
            records: None,
            record_clock: Default::default(),
            computer_names: None,
            decryption: Some(Arc::clone(&decryption)),
        },
        &[],
    )
    .await
    .unwrap();
    let proxy_addr = proxy.local_addr();
    let shutdown = CancellationToken::new();
    let served = tokio::spawn(proxy.run(shutdown.clone()));

    let school = connector(&school_pem);
    let origin_roots = connector(&origin_ca.pem());
    let decrypted = Target {
        proxy: proxy_addr,
        origin: decrypted_origin,
        tls: school,
    };
    let plain = Target {
        proxy: proxy_addr,
        origin: plain_origin,
        tls: origin_roots,
    };
    println!(
        "https_decrypt: {workers} workers, {}s per figure, 1 KiB bodies, loopback",
        duration.as_secs()
    );
    let warm = Duration::from_millis(500);
    let new_decrypted = measure(&decrypted, workers, duration, warm, Kind::NewConnections).await;
    let new_plain = measure(&plain, workers, duration, warm, Kind::NewConnections).await;
    let req_decrypted = measure(&decrypted, workers, duration, warm, Kind::KeepAlive).await;
    let req_plain = measure(&plain, workers, duration, warm, Kind::KeepAlive).await;
    println!(
        "new connections/s   decrypted {new_decrypted:>9.0}   plain CONNECT {new_plain:>9.0}   ratio {:.2}",
        new_decrypted / new_plain
    );
    println!(
        "1 KiB requests/s    decrypted {req_decrypted:>9.0}   plain CONNECT {req_plain:>9.0}   ratio {:.2}",
        req_decrypted / req_plain
    );
    // A cold cache: certificates minted (signed by the CA) per second, one thread.
    let started = Instant::now();
    let mut minted = 0u32;
    while started.elapsed() < Duration::from_secs(1) {
        decryption
            .leaves()
            .server_config(&format!("host{minted}.example"))
            .unwrap();
        minted += 1;
    }
    println!(
        "leaf certificates minted/s (cold cache, one thread): {:.0}",
        f64::from(minted) / started.elapsed().as_secs_f64()
    );
    shutdown.cancel();
    let _ = served.await;
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn connector(ca_pem: &str) -> TlsConnector {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// A TLS origin answering every request with 1 KiB, keep-alive.
async fn origin(acceptor: TlsAcceptor, listen: &str) -> SocketAddr {
    let listener = TcpListener::bind(listen).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(|_request| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from(vec![b'x'; BODY])),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

struct Target {
    proxy: SocketAddr,
    origin: SocketAddr,
    tls: TlsConnector,
}

#[derive(Clone, Copy)]
enum Kind {
    NewConnections,
    KeepAlive,
}

/// Operations per second over `duration`, after `warm` of the same load.
async fn measure(
    target: &Target,
    workers: usize,
    duration: Duration,
    warm: Duration,
    kind: Kind,
) -> f64 {
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (counting, stop, done) = (Arc::clone(&counting), Arc::clone(&stop), Arc::clone(&done));
        let (proxy, origin, tls) = (target.proxy, target.origin, target.tls.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let mut stream = open(proxy, origin, &tls).await;
                loop {
                    get_1k(&mut stream, origin).await;
                    if counting.load(Ordering::Relaxed) {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    if matches!(kind, Kind::NewConnections) || stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(warm).await;
    counting.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    let count = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    count as f64 / elapsed.as_secs_f64()
}

/// CONNECT through the proxy, then TLS to the origin (by IP: no server name sent).
async fn open(
    proxy: SocketAddr,
    origin: SocketAddr,
    tls: &TlsConnector,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream
        .write_all(format!("CONNECT {origin} HTTP/1.1\r\nHost: {origin}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let name = ServerName::IpAddress(origin.ip().into());
    tls.connect(name, stream).await.unwrap()
}

async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "closed in a head");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// `GET /1k` with `Host` naming the origin (a decrypted request is decided and
/// forwarded on it).
async fn get_1k<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, origin: SocketAddr) {
    stream
        .write_all(format!("GET /1k HTTP/1.1\r\nHost: {origin}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let head = read_head(stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut body = vec![0u8; BODY];
    stream.read_exact(&mut body).await.unwrap();
}
