//! Transparent mode: clients that do not know SafeGate is there. The school router
//! (or netfilter on this machine) redirects their ports 80 and 443 to
//! `transparent.http_listen` and `transparent.https_listen`.
//!
//! **HTTP** arrives in origin-form (`GET /path` with a `Host` header). Each request is
//! turned into the absolute-form request an explicit-proxy client would have sent
//! (`http://host[:port]/path`) and handed to the ordinary request path: the same
//! decision, block page, forwarding and visit-log record (`PlainHttp`).
//!
//! **HTTPS** is not decrypted. The TLS ClientHello is read (within
//! `proxy.header_read_timeout`, at most [`sni::MAX_CLIENT_HELLO`] bytes) and its server
//! name decided like a CONNECT to that host: a blocked site gets the block page over
//! TLS when the school CA is set up ([`crate::tls::block_pages`]; not for never-decrypt
//! sites or a connection without a server name), otherwise a TLS `access_denied`
//! alert and the connection is closed; an allowed one is connected to, sent the
//! ClientHello bytes exactly as received, and relayed both ways by the tunnel relay,
//! which counts the bytes into the record (`ConnectHost`, method `TLS`).
//!
//! **Host and SNI decide, and are where SafeGate connects.** The original destination
//! (`SO_ORIGINAL_DST`) only stands in when the client named no host (HTTP without
//! `Host`, TLS without SNI) and supplies the port when the name has none. Connecting
//! to the original destination while deciding on the name would let a client fetch a
//! blocked site's content by sending an allowed name to the blocked site's address;
//! going where the name says means a client that lies in `Host` or SNI only ever
//! reaches the site it named, which is the site that was decided. (A mismatch between
//! the name's DNS answer and the original destination is normal with CDNs and split
//! DNS, so it is not an error.) What cannot be seen without decryption cannot be
//! filtered: domain fronting (an allowed SNI, a blocked `Host` inside TLS) and the
//! inner name of Encrypted Client Hello.
//!
//! **No SNI**: with an original destination, the IP address is decided like a CONNECT
//! to it (IP entries in the lists apply; otherwise the role's rules for an unknown
//! host) and connected to; without one (the client reached the port directly) the
//! connection is refused with an info log line.
//!
//! Transparent clients cannot be asked for proxy credentials: they are identified by
//! their address (`auth.bindings`) or get the default role.

use crate::event_log::{BAD_REQUESTS, BLOCKED, REFUSED_UNRECORDED, throttled};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use bytes::BufMut;
use http::header::HOST;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use safegate_policy::RequestTarget;
use safegate_store::SeenAs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::body::ResponseBody;
use crate::error_page;
use crate::hello::send_access_denied;
use crate::intake::ClientContext;
use crate::original_dst;
use crate::pipeline::{self, Destination, Ledger};
use crate::relay;
use crate::safesearch::{self, Restrictions};
use crate::service;
use crate::sni::{self, HelloError, MAX_CLIENT_HELLO};
use crate::state::ProxyState;
use crate::tls::block_pages::{self, Blocked};
use crate::visit_record::{Direction, PendingRecord, TunnelBytes};

/// The method transparent HTTPS connections are recorded with.
const TLS_METHOD: &str = "TLS";

/// Why a redirected HTTP request names no site SafeGate can go to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TargetError {
    /// No `Host` header and no original destination.
    #[error("the request has no Host header and the connection was not redirected")]
    NoDestination,
    /// The `Host` header is not `host[:port]`.
    #[error("the Host header is not a host name with an optional port")]
    BadHost,
}

/// Answers one request on a transparent HTTP connection: origin-form requests are
/// given the absolute-form target an explicit-proxy client would have sent, then
/// everything goes through the ordinary request path.
pub(crate) async fn handle_http(
    state: Arc<ProxyState>,
    client: Arc<ClientContext>,
    mut request: Request<Incoming>,
    original_dst: Option<SocketAddr>,
) -> Response<ResponseBody> {
    match absolute_form(request.uri(), request.headers().get(HOST), original_dst) {
        Ok(Some(uri)) => *request.uri_mut() = uri,
        Ok(None) => {}
        Err(error) => {
            // Counted as a request like any other; the connection's clock sees it
            // served, so keep-alive and timeouts behave as for every answer.
            let ledger = Ledger::begin(&state, &client, request.method().as_str(), None);
            let target = request.uri().to_string();
            throttled!(BAD_REQUESTS, client = %client.peer, target, %error, "transparent request refused; answered 400");
            let (reason, detail) = match error {
                TargetError::NoDestination => (
                    "bad-request",
                    "The request does not say which site it is for (no Host header).",
                ),
                TargetError::BadHost => ("bad-host", "The request's Host header is not valid."),
            };
            let page = error_page::page(StatusCode::BAD_REQUEST, reason, &target, detail);
            return pipeline::finish(ledger, page, None);
        }
    }
    service::handle(state, client, request).await
}

/// The absolute-form target of a redirected request: `http://`, then the `Host`
/// header (or the original destination when there is none; its port when `Host` has
/// none), then the path. `Ok(None)` leaves the request as it is: it already names its
/// site (absolute-form, CONNECT), or it is `OPTIONS *`.
pub(crate) fn absolute_form(
    uri: &Uri,
    host: Option<&HeaderValue>,
    original_dst: Option<SocketAddr>,
) -> Result<Option<Uri>, TargetError> {
    if uri.authority().is_some() {
        return Ok(None);
    }
    let Some(path) = uri
        .path_and_query()
        .filter(|path| path.as_str().starts_with('/'))
    else {
        return Ok(None);
    };
    let named = host
        .map(|value| value.to_str().map(str::trim))
        .transpose()
        .map_err(|_| TargetError::BadHost)?
        .filter(|text| !text.is_empty());
    let authority = match (named, original_dst) {
        (Some(text), original) => {
            let authority = Authority::from_str(text).map_err(|_| TargetError::BadHost)?;
            if !is_host_and_port(&authority) {
                return Err(TargetError::BadHost);
            }
            match (authority.port_u16(), original) {
                // A client that left the port out meant the port it connected to.
                (None, Some(original)) if original.port() != 80 => {
                    Authority::from_str(&format!("{}:{}", authority.host(), original.port()))
                        .map_err(|_| TargetError::BadHost)?
                }
                _ => authority,
            }
        }
        (None, Some(original)) => {
            Authority::from_str(&original.to_string()).map_err(|_| TargetError::BadHost)?
        }
        (None, None) => return Err(TargetError::NoDestination),
    };
    Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(authority)
        .path_and_query(path.clone())
        .build()
        .map(Some)
        .map_err(|_| TargetError::BadHost)
}

/// `host` or `host:port` with a numeric port: no user info, no empty host.
fn is_host_and_port(authority: &Authority) -> bool {
    let (text, host) = (authority.as_str(), authority.host());
    if host.is_empty() || !text.starts_with(host) {
        return false;
    }
    match text[host.len()..].strip_prefix(':') {
        None => text.len() == host.len(),
        Some(port) => !port.is_empty() && port.parse::<u16>().is_ok(),
    }
}

/// Why a redirected TLS connection was closed before it was decided.
#[derive(Debug, thiserror::Error)]
enum IntakeError {
    /// The client went away mid-ClientHello.
    #[error("the client closed the connection before its TLS ClientHello was complete")]
    Closed,
    /// Reading failed.
    #[error("reading the TLS ClientHello failed: {0}")]
    Io(#[from] io::Error),
    /// The bytes are not a ClientHello SafeGate can decide on.
    #[error(transparent)]
    Hello(#[from] HelloError),
}

/// Serves one redirected TLS connection: read the ClientHello, decide its server name
/// (or the original destination's address), then refuse or relay.
pub(crate) async fn serve_tls(
    state: Arc<ProxyState>,
    mut stream: TcpStream,
    peer: SocketAddr,
    _slot: crate::slots::Slot,
    shutdown: CancellationToken,
) {
    let _open = state.stats.connection_opened();
    let _ = stream.set_nodelay(true);
    let original_dst = original_dst::lookup(&stream);
    let read = tokio::select! {
        () = shutdown.cancelled() => return,
        read = tokio::time::timeout(state.header_read_timeout, read_client_hello(&mut stream)) => read,
    };
    let (hello, server_name) = match read {
        Ok(Ok(read)) => read,
        Ok(Err(error @ IntakeError::Hello(_))) => {
            throttled!(BAD_REQUESTS, client = %peer, %error, "transparent HTTPS connection closed");
            return;
        }
        Ok(Err(error)) => {
            debug!(client = %peer, %error, "transparent HTTPS connection closed");
            return;
        }
        Err(_) => {
            throttled!(BAD_REQUESTS, client = %peer, "TLS ClientHello not received within proxy.header_read_timeout; connection closed");
            return;
        }
    };
    let Some((host, port)) = destination(server_name, original_dst) else {
        let ledger = Ledger::begin_connection(&state, peer, TLS_METHOD, None);
        let _ = pipeline::finish_tunnel(ledger, None, 400, None);
        throttled!(BAD_REQUESTS, client = %peer, "transparent HTTPS connection without SNI and without an original destination (it was not redirected); closed");
        return;
    };
    let mut ledger = Ledger::begin_connection(&state, peer, TLS_METHOD, Some(&host));
    let target = match host.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port).to_string(),
        Err(_) => format!("{host}:{port}"),
    };
    if pipeline::refusing_unrecorded(&state) {
        let _ = pipeline::finish_tunnel(ledger, None, 503, None);
        throttled!(REFUSED_UNRECORDED, client = %peer, target, "transparent HTTPS refused: the visit log cannot be written (store.when_full = \"refuse-traffic\"); closed");
        return;
    }
    let Ok(normalised) = RequestTarget::from_parts(&host, None) else {
        let _ = pipeline::finish_tunnel(ledger, None, 400, None);
        throttled!(BAD_REQUESTS, client = %peer, target, "transparent HTTPS server name is not a valid host; closed");
        return;
    };
    let who = pipeline::identify_by_address(&state, peer.ip());
    let destination = Destination {
        target: &normalised,
        scheme: "https",
        port,
        // The store has no "SNI" kind yet; like CONNECT, only the host is seen.
        seen_as: SeenAs::ConnectHost,
        method: TLS_METHOD,
        user_agent: None,
    };
    let decided = pipeline::decide(&state, &mut ledger, who, destination);
    if decided.decision.is_blocked() {
        // Recorded like a refused CONNECT, once however many pages are shown.
        let _record = pipeline::finish_tunnel(ledger, None, 403, None);
        refuse(
            &state,
            stream,
            hello,
            decided,
            peer,
            (&normalised, port),
            &target,
        )
        .await;
        return;
    }
    let restrictions = Restrictions::for_identity(&decided.snapshot, &decided.identity);
    // SafeSearch without decryption, as for CONNECT: go to the provider's enforced
    // endpoint; the client's TLS still names the original host.
    let connect_host = safesearch::enforced_endpoint(normalised.host.as_str(), restrictions)
        .unwrap_or(host.as_str());
    let origin = match state.connector.connect(connect_host, port).await {
        Ok(origin) => origin,
        Err(error) => {
            debug!(%error, target, "transparent HTTPS connect failed");
            let _record = pipeline::finish_tunnel(ledger, None, 502, Some(error.kind()));
            return;
        }
    };
    let record = pipeline::finish_tunnel(ledger, None, 200, None);
    relay_hello(&state, stream, origin, &hello, &target, record).await;
}

/// A blocked transparent HTTPS connection to `host`: the block page over TLS for a
/// server name when it gets one ([`block_pages::applies`]), else the TLS alert.
async fn refuse(
    state: &Arc<ProxyState>,
    mut stream: TcpStream,
    hello: Vec<u8>,
    decided: pipeline::Decided,
    peer: SocketAddr,
    (host, port): (&RequestTarget, u16),
    target: &str,
) {
    // A server name (not an address without one) may get the page over TLS.
    if !host.host.is_ip() && block_pages::applies(state, &decided.snapshot, host) {
        let blocked = Blocked::of_decided(decided, peer, host.host.as_str(), port);
        blocked.log("transparent HTTPS");
        block_pages::serve(state, blocked, stream, hello).await;
        return;
    }
    throttled!(
        BLOCKED,
        client = %peer,
        role = decided.identity.role.as_str(),
        target,
        rule = decided.decision.rule,
        categories = ?decided.decision.categories,
        "blocked (transparent HTTPS: TLS access_denied alert)"
    );
    send_access_denied(&mut stream).await;
}

/// Sends the origin the ClientHello exactly as received, then relays both ways; the
/// record counts the bytes and is submitted when the relay ends.
async fn relay_hello(
    state: &ProxyState,
    stream: TcpStream,
    mut origin: TcpStream,
    hello: &[u8],
    target: &str,
    mut record: Option<PendingRecord>,
) {
    let bytes = Arc::new(TunnelBytes::default());
    if let Some(record) = &mut record {
        record.follow_tunnel(Arc::clone(&bytes));
    }
    let sent = tokio::time::timeout(state.tunnel_idle_timeout, origin.write_all(hello)).await;
    if !matches!(sent, Ok(Ok(()))) {
        debug!(target, "the origin did not take the ClientHello");
        return;
    }
    bytes.add(Direction::Up, hello.len() as u64);
    relay::relay_counted(state, stream, origin, target, bytes).await;
    // The record is submitted here, with the relay's bytes and lifetime.
    drop(record);
}

/// The host to decide and connect to, and the port: the server name, or the original
/// destination's address without one; the original destination's port, else 443.
fn destination(
    server_name: Option<String>,
    original_dst: Option<SocketAddr>,
) -> Option<(String, u16)> {
    let port = original_dst.map_or(443, |original| original.port());
    match (server_name, original_dst) {
        (Some(name), _) => Some((name, port)),
        (None, Some(original)) => Some((original.ip().to_string(), port)),
        (None, None) => None,
    }
}

/// Reads until the ClientHello is complete: its bytes (everything read, to be sent on
/// unchanged) and its server name.
async fn read_client_hello(
    stream: &mut TcpStream,
) -> Result<(Vec<u8>, Option<String>), IntakeError> {
    let mut buf = Vec::with_capacity(2048);
    loop {
        if let Some(hello) = sni::parse(&buf)? {
            return Ok((buf, hello.server_name));
        }
        // `parse` never waits for more than the limit, so there is always room here.
        let room = MAX_CLIENT_HELLO.saturating_sub(buf.len()).min(16 * 1024);
        if room == 0 {
            return Err(HelloError::TooLarge.into());
        }
        buf.reserve(room);
        if stream.read_buf(&mut (&mut buf).limit(room)).await? == 0 {
            return Err(IntakeError::Closed);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use super::*;

    fn rewrite(
        uri: &str,
        host: Option<&str>,
        original: Option<&str>,
    ) -> Result<String, TargetError> {
        let uri: Uri = uri.parse().unwrap();
        let host = host.map(|h| HeaderValue::from_str(h).unwrap());
        let original = original.map(|o| o.parse().unwrap());
        absolute_form(&uri, host.as_ref(), original)
            .map(|u| u.map_or("unchanged".into(), |u| u.to_string()))
    }

    #[test]
    fn origin_form_takes_the_host_header() {
        let cases = [
            (
                "/a?b=c",
                Some("Example.com"),
                None,
                "http://Example.com/a?b=c",
            ),
            (
                "/",
                Some("example.com:8080"),
                Some("192.0.2.1:80"),
                "http://example.com:8080/",
            ),
            // No port in Host: the port the client connected to.
            (
                "/x",
                Some("example.com"),
                Some("192.0.2.1:8080"),
                "http://example.com:8080/x",
            ),
            (
                "/x",
                Some("example.com"),
                Some("192.0.2.1:80"),
                "http://example.com/x",
            ),
            ("/x", Some("[2001:db8::1]"), None, "http://[2001:db8::1]/x"),
            // The name decides even when it is not where the client was going.
            (
                "/x",
                Some("allowed.example"),
                Some("198.51.100.9:80"),
                "http://allowed.example/x",
            ),
        ];
        for (uri, host, original, expected) in cases {
            assert_eq!(
                rewrite(uri, host, original),
                Ok(expected.to_owned()),
                "{uri} {host:?}"
            );
        }
    }

    #[test]
    fn without_host_the_original_destination_stands_in() {
        assert_eq!(
            rewrite("/p", None, Some("198.51.100.9:80")),
            Ok("http://198.51.100.9:80/p".to_owned())
        );
        assert_eq!(
            rewrite("/p", Some(" "), Some("[2001:db8::5]:8080")),
            Ok("http://[2001:db8::5]:8080/p".to_owned())
        );
        assert_eq!(rewrite("/p", None, None), Err(TargetError::NoDestination));
    }

    #[test]
    fn bad_hosts_are_refused_and_absolute_targets_kept() {
        for bad in [
            "user@evil.example",
            "a b",
            "example.com:http",
            "example.com:",
            "example.com:99999",
            "[::1",
            ":80",
        ] {
            assert_eq!(
                rewrite("/", Some(bad), None),
                Err(TargetError::BadHost),
                "{bad}"
            );
        }
        assert_eq!(
            rewrite("http://example.org/x", Some("other.example"), None),
            Ok("unchanged".to_owned())
        );
        assert_eq!(
            rewrite("*", Some("example.org"), None),
            Ok("unchanged".to_owned())
        );
    }

    #[test]
    fn tls_destination_prefers_the_server_name() {
        let original: SocketAddr = "203.0.113.4:8443".parse().unwrap();
        assert_eq!(
            destination(Some("www.example.com".into()), Some(original)),
            Some(("www.example.com".to_owned(), 8443))
        );
        assert_eq!(
            destination(Some("www.example.com".into()), None),
            Some(("www.example.com".to_owned(), 443))
        );
        assert_eq!(
            destination(None, Some(original)),
            Some(("203.0.113.4".to_owned(), 8443))
        );
        assert_eq!(destination(None, None), None);
    }

    /// A slow, truncated, oversized or non-TLS start never yields a hello, and the
    /// reader never holds more than the limit.
    #[tokio::test]
    async fn the_reader_stops_at_garbage_and_at_the_limit() {
        async fn feed(bytes: Vec<u8>) -> Result<(Vec<u8>, Option<String>), IntakeError> {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let writer = tokio::spawn(async move {
                let mut client = TcpStream::connect(addr).await.unwrap();
                let _ = client.write_all(&bytes).await;
                let _ = client.shutdown().await;
                // Keep the socket until the reader is done.
                let mut rest = Vec::new();
                let _ = client.read_to_end(&mut rest).await;
            });
            let (mut accepted, _) = listener.accept().await.unwrap();
            let result =
                tokio::time::timeout(Duration::from_secs(10), read_client_hello(&mut accepted))
                    .await
                    .expect("reader hung");
            drop(accepted);
            writer.await.unwrap();
            result
        }
        assert!(matches!(
            feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()).await,
            Err(IntakeError::Hello(HelloError::NotTls))
        ));
        assert!(matches!(
            feed(vec![22, 3, 1, 0, 200, 1]).await,
            Err(IntakeError::Closed)
        ));
        // Many tiny records: the wire limit is reached before the hello is complete.
        let mut tiny = Vec::new();
        tiny.extend_from_slice(&[22, 3, 1, 0, 4, 1, 0, 0x3f, 0xf0]);
        for _ in 0..4000 {
            tiny.extend_from_slice(&[22, 3, 1, 0, 1, 0]);
        }
        assert!(matches!(
            feed(tiny).await,
            Err(IntakeError::Hello(HelloError::TooLarge))
        ));
    }
}
