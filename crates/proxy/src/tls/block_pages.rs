//! The block page over HTTPS: a blocked TLS connection (a blocked CONNECT, a blocked
//! or fronted server name inside a tunnel, a blocked transparent HTTPS connection) is
//! answered with the block page rather than the browser's own connection error, when
//! the school CA is set up, the policy's `decrypt.block_pages` is on (the default)
//! and the site is not on a never-decrypt list (banking, health, government, pinned
//! apps are never intercepted, even to block them: they keep the refusal).
//!
//! TLS is terminated with a leaf for the server name (or the CONNECT host without
//! one), signed by the school CA, and every request on the connection (HTTP/1.1 or
//! HTTP/2, as ALPN agreed) gets the block page of the connection's one decision, with
//! the review form posting to the page's own origin; a `POST /safegate/review` is
//! answered here as on plain HTTP. Nothing goes to the origin and no upstream
//! connection is made. The blocked attempt is recorded once by the caller, not per
//! request (a favicon does not make a second blocked visit). The handshake is bounded
//! by `proxy.header_read_timeout`, request heads too, and the connection is closed
//! after `proxy.idle_timeout` without traffic.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use jiff::Timestamp;
use safegate_policy::{Decision, RequestTarget, Snapshot};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use crate::auth::{Identity, TokenPurpose};
use crate::block_page::{self, BlockInfo, ReviewTarget};
use crate::body::ResponseBody;
use crate::event_log::{BAD_REQUESTS, BLOCKED, throttled};
use crate::hello::{Opening, read_opening, send_access_denied};
use crate::intake::ClientContext;
use crate::local_pages::REVIEW_PATH;
use crate::pipeline::{self, Decided, Ledger, NameCheck};
use crate::relay::{ClientStream, Prefixed, take_apart};
use crate::state::ProxyState;
use crate::visit_record::PendingRecord;

/// Whether a blocked TLS connection to `host` gets the block page over TLS: the CA is
/// set up, `decrypt.block_pages` is on, and `host` is not never-decrypt.
pub(crate) fn applies(state: &ProxyState, snapshot: &Snapshot, host: &RequestTarget) -> bool {
    state.decryption.is_some() && snapshot.block_page_over_tls(host)
}

/// [`applies`] for a server name as the client sent it (`false` when it is not a
/// valid host name).
pub(crate) fn applies_to_name(state: &ProxyState, snapshot: &Snapshot, name: &str) -> bool {
    RequestTarget::from_parts(name, None).is_ok_and(|host| applies(state, snapshot, &host))
}

/// The block page over TLS for a tunnel's refused server name `name`, when it gets one:
/// a readable name refused by the policy or as fronting, neither it nor the CONNECT
/// host never-decrypt, the CA set up and `decrypt.block_pages` on.
pub(crate) fn page_for_name(
    state: &ProxyState,
    check: &NameCheck,
    decision: Decision,
    name: Option<&str>,
    port: u16,
) -> Option<Blocked> {
    let name = name?;
    let shown = decision.rule != "tls-unreadable"
        && applies(state, &check.snapshot, &check.connect)
        && applies_to_name(state, &check.snapshot, name);
    shown.then(|| Blocked::of_name(check, decision, name, port))
}

/// One blocked TLS connection: the decision every request on it is answered with.
pub(crate) struct Blocked {
    pub(crate) decision: Decision,
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) identity: Identity,
    pub(crate) now: Timestamp,
    pub(crate) peer: SocketAddr,
    /// The name the leaf is made for and the page's address shows.
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl Blocked {
    /// A tunnel's server name `name` refused by `check` with `decision`.
    pub(crate) fn of_name(check: &NameCheck, decision: Decision, name: &str, port: u16) -> Self {
        Self {
            decision,
            snapshot: Arc::clone(&check.snapshot),
            identity: check.identity.clone(),
            now: check.now,
            peer: check.peer,
            host: name.to_owned(),
            port,
        }
    }

    /// A connection to `host` blocked as `decided`.
    pub(crate) fn of_decided(decided: Decided, peer: SocketAddr, host: &str, port: u16) -> Self {
        Self {
            decision: decided.decision,
            snapshot: decided.snapshot,
            identity: decided.identity,
            now: decided.now,
            peer,
            host: host.to_owned(),
            port,
        }
    }

    /// Logs the blocked connection, once for all its requests.
    pub(crate) fn log(&self, way: &'static str) {
        throttled!(
            BLOCKED,
            client = %self.peer,
            user = self.identity.user.as_deref(),
            role = self.identity.role.as_str(),
            host = self.host,
            rule = self.decision.rule,
            categories = ?self.decision.categories,
            way,
            "blocked (block page over TLS)"
        );
    }
}

/// A blocked CONNECT to `blocked.host` whose answer is the block page over TLS: the
/// `200`, then in a task the ClientHello and the page. Its one record says blocked
/// (`403`) and is submitted when the connection ends.
pub(crate) fn answer_connect(
    state: &Arc<ProxyState>,
    client: &ClientContext,
    ledger: Ledger<'_>,
    request: Request<Incoming>,
    blocked: Blocked,
) -> Response<ResponseBody> {
    blocked.log("CONNECT");
    let mut response = Response::new(ResponseBody::empty());
    let record = pipeline::finish_tunnel(ledger, Some(&mut response), 403, None);
    let state = Arc::clone(state);
    // The connection keeps the CONNECT connection's place under the limits while open.
    let slot = Arc::clone(&client.slot);
    let tasks = state.tasks.clone();
    tasks.spawn(async move {
        let _slot = slot;
        match hyper::upgrade::on(request).await {
            Ok(upgraded) => match take_apart(upgraded) {
                ClientStream::Tcp(stream, read) => {
                    connect_hello(&state, blocked, stream, read, record).await;
                }
                ClientStream::Other(stream) => {
                    connect_hello(&state, blocked, stream, Vec::new(), record).await;
                }
            },
            Err(error) => debug!(%error, "client left before the blocked tunnel opened"),
        }
    });
    response
}

/// Reads a blocked tunnel's ClientHello and serves the page for its server name; a
/// server name that is never decrypted gets the TLS `access_denied` alert instead.
async fn connect_hello<C>(
    state: &Arc<ProxyState>,
    mut blocked: Blocked,
    mut stream: C,
    mut buf: Vec<u8>,
    record: Option<PendingRecord>,
) where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _open = state.stats.tunnel_opened();
    match read_opening(&mut stream, &mut buf, None, state.header_read_timeout).await {
        Opening::Hello(hello) => {
            if let Some(name) = hello.server_name {
                if !applies_to_name(state, &blocked.snapshot, &name) {
                    send_access_denied(&mut stream).await;
                    return;
                }
                blocked.host = name;
            }
            serve(state, blocked, stream, buf).await;
        }
        Opening::Unreadable(_) => send_access_denied(&mut stream).await,
        _ => {
            debug!(client = %blocked.peer, host = blocked.host, "no TLS ClientHello in a blocked tunnel; closed")
        }
    }
    // The blocked attempt's record, with the connection's lifetime.
    drop(record);
}

/// Completes the TLS handshake with a leaf for `blocked.host` (the ClientHello already
/// read is in `buf`) and answers every request with the block page until the client
/// closes, goes idle, or the shutdown grace runs out.
pub(crate) async fn serve<C>(state: &Arc<ProxyState>, blocked: Blocked, stream: C, buf: Vec<u8>)
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(decrypting) = &state.decryption else {
        return;
    };
    let config = match decrypting.setup.leaves().server_config(&blocked.host) {
        Ok(config) => config,
        Err(error) => {
            warn!(%error, host = blocked.host, "no certificate for a blocked site's block page; connection closed");
            return;
        }
    };
    let accept = TlsAcceptor::from(config).accept(Prefixed::new(buf, stream));
    let tls = match tokio::time::timeout(state.header_read_timeout, accept).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            throttled!(BAD_REQUESTS, client = %blocked.peer, host = blocked.host, %error, "TLS handshake for a block page failed (is the school CA installed on this device?)");
            return;
        }
        Err(_) => {
            debug!(client = %blocked.peer, host = blocked.host, "TLS handshake for a block page timed out");
            return;
        }
    };
    let clock = Arc::new(LastTraffic::new());
    let io = TokioIo::new(Watched {
        inner: tls,
        clock: Arc::clone(&clock),
    });
    let blocked = Arc::new(blocked);
    let service_state = Arc::clone(state);
    let service_blocked = Arc::clone(&blocked);
    let service = service_fn(move |request: Request<Incoming>| {
        let state = Arc::clone(&service_state);
        let blocked = Arc::clone(&service_blocked);
        async move { Ok::<_, Infallible>(answer(&state, &blocked, request).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(state.header_read_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    loop {
        let deadline = clock.last() + state.idle_timeout;
        tokio::select! {
            served = &mut connection => {
                if let Err(error) = served {
                    debug!(%error, host = blocked.host, "block page connection ended");
                }
                return;
            }
            () = tokio::time::sleep_until(deadline.into()) => {
                if clock.last() + state.idle_timeout <= Instant::now() {
                    debug!(client = %blocked.peer, host = blocked.host, "idle block page connection closed");
                    return;
                }
            }
            () = state.cut_off.cancelled() => return,
        }
    }
}

/// One request on a blocked connection: the review form's `POST` is stored as on
/// plain HTTP; anything else gets the block page. Counted as a request, not recorded.
async fn answer(
    state: &ProxyState,
    blocked: &Blocked,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    let ledger = Ledger::begin_connection(
        state,
        blocked.peer,
        request.method().as_str(),
        Some(&blocked.host),
    );
    if request.method() == Method::POST && request.uri().path() == REVIEW_PATH {
        let page =
            pipeline::answer_review(state, blocked.peer.ip(), &blocked.identity, request).await;
        return pipeline::finish(ledger, page, None);
    }
    let url = page_address(&blocked.host, blocked.port, &request);
    let at = block_page::local_time(&blocked.snapshot, blocked.now);
    let action = ReviewTarget::SameOrigin.action();
    let token = state
        .auth
        .form_token(TokenPurpose::Review, blocked.peer.ip());
    let info = BlockInfo::of(
        &blocked.decision,
        &blocked.identity,
        &url,
        &at,
        Some(&action),
        Some(&token),
    )
    .at_school(&blocked.snapshot)
    .asked_by(request.headers());
    pipeline::finish(ledger, block_page::page(&info), None)
}

/// `https://HOST[:PORT]/path?query`: the blocked name (whatever `Host` says) with the
/// request's path, as the page and the review show it.
fn page_address<B>(host: &str, port: u16, request: &Request<B>) -> String {
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |path| path.as_str());
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    if port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{port}{path}")
    }
}

/// When the connection last moved bytes, for closing it when idle.
struct LastTraffic {
    origin: Instant,
    ms: AtomicU64,
}

impl LastTraffic {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.origin + std::time::Duration::from_millis(self.ms.load(Ordering::Relaxed))
    }
}

/// A stream that notes in its clock every read or write that moved bytes.
struct Watched<T> {
    inner: T,
    clock: Arc<LastTraffic>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.clock.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.clock.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn the_page_shows_the_blocked_name_with_the_requested_path() {
        let request = Request::builder()
            .uri("/a?b=c")
            .header("host", "elsewhere.example")
            .body(())
            .unwrap();
        assert_eq!(
            page_address("games.example", 443, &request),
            "https://games.example/a?b=c"
        );
        assert_eq!(
            page_address("games.example", 8443, &request),
            "https://games.example:8443/a?b=c"
        );
        assert_eq!(page_address("::1", 443, &request), "https://[::1]/a?b=c");
    }
}
