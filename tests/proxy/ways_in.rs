//! Every way into the proxy goes through the same pipeline and is counted once: one
//! request through each of absolute-form HTTP, a WebSocket upgrade, CONNECT (with its
//! server name check), transparent HTTP, transparent HTTPS and a request inside a
//! decrypted tunnel moves `safegate_requests_total` and the count of
//! `safegate_decision_duration_seconds` by exactly one each (read from `/metrics`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::https::{Setup, client_hello};
use crate::kit::origin::Origin;
use crate::kit::{bounded, raw};

const REQUESTS: &str = "safegate_requests_total";
const DECISIONS: &str = "safegate_decision_duration_seconds_count";
const REFUSED: &str = "safegate_upstream_errors_total{kind=\"connection-refused\"}";

/// Every sample of one scrape of `/metrics`, by name with labels.
async fn scrape(admin: SocketAddr) -> HashMap<String, f64> {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let text = client
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .map(|(name, value)| (name.to_owned(), value.parse().unwrap_or(f64::NAN)))
        .collect()
}

/// How far `name` moved between two scrapes.
fn moved(before: &HashMap<String, f64>, after: &HashMap<String, f64>, name: &str) -> f64 {
    after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0)
}

/// Checks that one request (already answered) moved both counters by exactly one.
async fn counted_once(admin: SocketAddr, before: &HashMap<String, f64>, way: &str) {
    let after = scrape(admin).await;
    assert_eq!(moved(before, &after, REQUESTS), 1.0, "{way}: requests");
    assert_eq!(moved(before, &after, DECISIONS), 1.0, "{way}: decisions");
}

/// A TLS client that trusts only the school CA.
fn school_tls(setup: &Setup) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    let school: rustls::pki_types::CertificateDer<'static> =
        rustls::pki_types::pem::PemObject::from_pem_slice(setup.school_ca.as_bytes()).unwrap();
    roots.add(school).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Reads one HTTP/1.1 response with a `Content-Length` body from `stream`; its head.
async fn read_response<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await.unwrap());
    }
    let head = String::from_utf8(head).unwrap();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    head
}

#[tokio::test]
async fn every_way_in_is_counted_once() {
    bounded(async {
        let plain = Origin::start().await;
        let setup = Setup::start_with(
            &[],
            &[
                "transparent.http_listen=\"127.0.0.1:0\"",
                "transparent.https_listen=\"127.0.0.1:0\"",
            ],
        )
        .await;
        let safegate = &setup.safegate;
        let admin = safegate.admin;
        let port = setup.origin.addr.port();

        // Absolute-form HTTP.
        let before = scrape(admin).await;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            plain.url("/bytes/10"),
            plain.addr
        );
        let response = raw::exchange(safegate.proxy, request.as_bytes()).await;
        assert_eq!(raw::status_of(&response), 200, "{response}");
        counted_once(admin, &before, "absolute-form HTTP").await;

        // A WebSocket upgrade.
        let before = scrape(admin).await;
        let mut stream = raw::connect(safegate.proxy).await;
        let upgrade = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            plain.url("/ws"),
            plain.addr
        );
        stream.write_all(upgrade.as_bytes()).await.unwrap();
        assert!(
            raw::read_head(&mut stream)
                .await
                .starts_with("HTTP/1.1 101")
        );
        counted_once(admin, &before, "WebSocket upgrade").await;
        drop(stream);

        // CONNECT to a tunnelled (never decrypted) site, its server name checked.
        let before = scrape(admin).await;
        let mut stream = raw::connect(safegate.proxy).await;
        let connect =
            format!("CONNECT bank.test:{port} HTTP/1.1\r\nHost: bank.test:{port}\r\n\r\n");
        stream.write_all(connect.as_bytes()).await.unwrap();
        assert!(
            raw::read_head(&mut stream)
                .await
                .starts_with("HTTP/1.1 200")
        );
        stream.write_all(&client_hello("bank.test")).await.unwrap();
        // The origin's ServerHello comes back: the hello passed the name check.
        let mut first = [0u8; 1];
        stream.read_exact(&mut first).await.unwrap();
        assert_eq!(first[0], 22, "a TLS handshake record from the origin");
        counted_once(admin, &before, "CONNECT").await;
        drop(stream);

        // Transparent HTTP.
        let transparent_http = safegate
            .logged_addr("transparent HTTP listening on ")
            .unwrap();
        let before = scrape(admin).await;
        let request = format!(
            "GET /bytes/10 HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            plain.addr
        );
        let response = raw::exchange(transparent_http, request.as_bytes()).await;
        assert_eq!(raw::status_of(&response), 200, "{response}");
        counted_once(admin, &before, "transparent HTTP").await;

        // A request inside a decrypted tunnel (the second on it: the first opened it,
        // with its CONNECT).
        let mut stream = raw::connect(safegate.proxy).await;
        let connect =
            format!("CONNECT shop.test:{port} HTTP/1.1\r\nHost: shop.test:{port}\r\n\r\n");
        stream.write_all(connect.as_bytes()).await.unwrap();
        assert!(
            raw::read_head(&mut stream)
                .await
                .starts_with("HTTP/1.1 200")
        );
        let name = rustls::pki_types::ServerName::try_from("shop.test").unwrap();
        let mut tls = school_tls(&setup).connect(name, stream).await.unwrap();
        let get = format!("GET /bytes/10 HTTP/1.1\r\nHost: shop.test:{port}\r\n\r\n");
        tls.write_all(get.as_bytes()).await.unwrap();
        assert!(read_response(&mut tls).await.starts_with("HTTP/1.1 200"));
        let before = scrape(admin).await;
        tls.write_all(get.as_bytes()).await.unwrap();
        assert!(read_response(&mut tls).await.starts_with("HTTP/1.1 200"));
        counted_once(admin, &before, "inside a decrypted tunnel").await;
        drop(tls);

        // Transparent HTTPS: decided on the server name; not redirected here, so it
        // goes to port 443 of the name's address (127.0.0.1), where nothing listens.
        let transparent_https = safegate
            .logged_addr("transparent HTTPS listening on ")
            .unwrap();
        let before = scrape(admin).await;
        let mut stream = TcpStream::connect(transparent_https).await.unwrap();
        stream.write_all(&client_hello("bank.test")).await.unwrap();
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
        // The connection closes once the origin refused; the counters moved before.
        let after = scrape(admin).await;
        assert_eq!(
            moved(&before, &after, REQUESTS),
            1.0,
            "transparent HTTPS: requests"
        );
        assert_eq!(
            moved(&before, &after, DECISIONS),
            1.0,
            "transparent HTTPS: decisions"
        );
        assert_eq!(
            moved(&before, &after, REFUSED),
            1.0,
            "transparent HTTPS: upstream failure"
        );
    })
    .await;
}
