//! CONNECT tunnels: check the port, decide the host, then either decrypt (the policy's
//! `[decrypt]` section names the host and the school CA is set up: see
//! [`crate::tls`]) or tunnel: connect to the origin (DNS, destination guard, timeout),
//! answer 200, read the client's TLS ClientHello and check its server name, then copy
//! bytes both ways with half-close until both sides are done or the tunnel has been
//! idle for `proxy.tunnel_idle_timeout`.
//!
//! **The server name is checked too.** A ClientHello whose server name (SNI) differs
//! from the CONNECT host is domain fronting (an allowed host in CONNECT, another site
//! inside TLS) and is refused when the policy says `sni_mismatch = "block"` (the
//! default); with `"allow"` the server name is decided on its own. With Encrypted
//! Client Hello the clear-text name is the provider's public name, which is decided
//! like any other name rather than taken for fronting. A CONNECT to an IP address is
//! decided on the server name as well. A refused ClientHello gets a TLS
//! `access_denied` alert, is never passed to the origin, and its record says blocked
//! with the rule (`sni-mismatch`, `tls-unreadable`, or the rule that blocked the name).
//! Protocols other than TLS in a tunnel, and protocols where the server speaks first,
//! are relayed unchanged: the CONNECT host was decided.

use std::any::Any;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes};
use http::header::USER_AGENT;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use jiff::Timestamp;
use safegate_policy::{Decision, RequestTarget, Snapshot, SniMismatch, Verdict};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::body::ResponseBody;
use crate::client_io::ClientIo;
use crate::error_page;
use crate::filter::{self, Identity};
use crate::safesearch;
use crate::service::{self, ClientContext, Decided, Destination, Identified};
use crate::sni::{self, ClientHello, HelloError, MAX_CLIENT_HELLO};
use crate::state::ProxyState;
use crate::visit_record::{Direction, PendingRecord, RequestFacts, TunnelBytes};
use safegate_store::SeenAs;

/// Buffer per direction; large enough that bulk transfers are not syscall-bound.
const RELAY_BUFFER: usize = 64 * 1024;

/// A fatal `access_denied` alert (RFC 8446 §6.2), for a refused ClientHello.
pub(crate) const ACCESS_DENIED_ALERT: [u8; 7] = [21, 3, 3, 0, 2, 2, 49];

/// Time given to the alert to leave before the connection is closed.
const ALERT_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Answers a CONNECT request from an identified client.
pub(crate) async fn open(
    state: &Arc<ProxyState>,
    client: &ClientContext,
    request: Request<Incoming>,
    who: Identified,
) -> Response<ResponseBody> {
    let target = request.uri().to_string();
    let Some(authority) = request.uri().authority().cloned() else {
        return error_page::page(
            StatusCode::BAD_REQUEST,
            "bad-request",
            &target,
            "CONNECT needs a host:port target.",
        );
    };
    let Some(port) = authority.port_u16() else {
        return error_page::page(
            StatusCode::BAD_REQUEST,
            "bad-request",
            &target,
            "CONNECT needs a port in its target.",
        );
    };
    if !state.connect_ports.contains(&port) {
        return error_page::page(
            StatusCode::FORBIDDEN,
            "connect-port-denied",
            &target,
            &format!(
                "SafeGate only opens tunnels to the ports it is configured for; {port} is not one of them."
            ),
        );
    }
    let Ok(normalized) = RequestTarget::from_parts(authority.host(), None) else {
        return error_page::page(
            StatusCode::BAD_REQUEST,
            "bad-host",
            &target,
            "The tunnel's host name is not valid.",
        );
    };
    if state.decryption.is_some() && who.snapshot.decrypt(&normalized).decrypt {
        // Every request inside is decided (and recorded) on its full address,
        // blocked host or not, so a blocked site gets the real block page.
        return crate::tls::intercept::open(
            state, client, request, who, normalized, &authority, port,
        );
    }
    let Decided {
        snapshot,
        identity,
        decision,
        now,
        mut pending,
    } = service::decide(
        state,
        client,
        &request,
        who,
        Destination {
            target: &normalized,
            scheme: "https",
            port,
            seen_as: SeenAs::ConnectHost,
        },
    );
    if decision.is_blocked() {
        let refusal = service::blocked(
            state.filter.auth(),
            &snapshot,
            &identity,
            client,
            service::Blocked {
                decision: &decision,
                target: &target,
                now,
                answer: service::BlockAnswer::Connect,
            },
        );
        return service::with_record(refusal, pending, None);
    }
    let restrictions = filter::restrictions(&snapshot, &identity);
    // SafeSearch without decryption: the tunnel goes to the provider's enforced
    // endpoint; the browser's TLS still names the original host.
    let connect_host = safesearch::enforced_endpoint(normalized.host.as_str(), restrictions)
        .unwrap_or(authority.host());
    let origin = match state.connector.connect(connect_host, port).await {
        Ok(origin) => origin,
        Err(error) => {
            debug!(%error, target, "tunnel connect failed");
            let page = error_page::upstream_failure(&error, &target);
            return service::with_record(page, pending, Some(error.kind()));
        }
    };
    // The record reads the relay's counters when it is submitted, so it has the bytes
    // however the tunnel ends (closed, idle, broken, or its task cut off).
    let bytes = Arc::new(TunnelBytes::default());
    if let Some(pending) = &mut pending {
        pending.finish(200, None);
        pending.follow_tunnel(Arc::clone(&bytes));
    }
    let tunnel_state = Arc::clone(state);
    let check = NameCheck {
        snapshot,
        identity,
        connect: normalized,
        now,
        peer: client.peer,
    };
    state.tasks.spawn(async move {
        match hyper::upgrade::on(request).await {
            Ok(upgraded) => {
                let tunnel = Tunnel {
                    state: &tunnel_state,
                    origin,
                    target: &target,
                    bytes,
                    pending: &mut pending,
                    check: &check,
                };
                match take_apart(upgraded) {
                    ClientStream::Tcp(stream, read) => tunnel.run(stream, read).await,
                    ClientStream::Other(stream) => tunnel.run(stream, Vec::new()).await,
                }
            }
            Err(error) => debug!(%error, target, "client left before the tunnel opened"),
        }
        // The record is submitted here, with the tunnel's lifetime as its duration.
        drop(pending);
    });
    Response::new(ResponseBody::empty())
}

/// The client's side of a CONNECT after the 200: its TCP socket and the bytes hyper
/// read past the request head, or (never in practice) an opaque upgraded stream.
pub(crate) enum ClientStream {
    /// The socket, and what was read from it already.
    Tcp(TcpStream, Vec<u8>),
    /// Anything else.
    Other(TokioIo<Upgraded>),
}

/// Takes a CONNECT upgrade apart down to the client's socket where possible, so that
/// the relay can splice.
pub(crate) fn take_apart(upgraded: Upgraded) -> ClientStream {
    match upgraded.downcast::<TokioIo<ClientIo>>() {
        Ok(parts) => {
            ClientStream::Tcp(parts.io.into_inner().into_stream(), parts.read_buf.to_vec())
        }
        Err(upgraded) => ClientStream::Other(TokioIo::new(upgraded)),
    }
}

/// What the server name of a tunnel's ClientHello is checked against.
pub(crate) struct NameCheck {
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) identity: Identity,
    /// The CONNECT host.
    pub(crate) connect: RequestTarget,
    pub(crate) now: Timestamp,
    pub(crate) peer: SocketAddr,
}

impl NameCheck {
    /// `None` when the ClientHello may go on; otherwise the decision that refuses it.
    pub(crate) fn refusal(&self, hello: &ClientHello) -> Option<Decision> {
        let name = hello.server_name.as_deref()?;
        let block = |rule: &str, reason: String| Decision {
            verdict: Verdict::Block,
            categories: Vec::new(),
            rule: rule.to_owned(),
            reason,
        };
        let Ok(named) = RequestTarget::from_parts(name, None) else {
            return Some(block(
                "tls-unreadable",
                format!("the TLS server name `{name}` is not a valid host name"),
            ));
        };
        if named.host == self.connect.host {
            return None;
        }
        if !hello.encrypted_client_hello
            && !self.connect.host.is_ip()
            && self.snapshot.sni_mismatch() == SniMismatch::Block
        {
            return Some(block(
                "sni-mismatch",
                format!(
                    "the TLS server name `{name}` differs from the tunnel's host `{}` (domain fronting)",
                    self.connect.host.as_str()
                ),
            ));
        }
        let decision = self
            .snapshot
            .decide(&self.identity.subject(), &named, self.now);
        decision.is_blocked().then_some(decision)
    }

    /// Logs a refusal and sends the client the alert.
    pub(crate) async fn refuse<C: AsyncWrite + Unpin>(
        &self,
        client: &mut C,
        decision: &Decision,
        server_name: Option<&str>,
    ) {
        info!(
            client = %self.peer,
            role = self.identity.role.as_str(),
            user = self.identity.user.as_deref(),
            host = self.connect.host.as_str(),
            server_name,
            rule = decision.rule,
            reason = decision.reason,
            "blocked (TLS server name: access_denied alert)"
        );
        let _ = tokio::time::timeout(ALERT_WRITE_TIMEOUT, async {
            if client.write_all(&ACCESS_DENIED_ALERT).await.is_ok() {
                let _ = client.shutdown().await;
            }
        })
        .await;
    }

    /// A record for a tunnel refused on its server name, when the visit log is on
    /// (submitted when dropped).
    pub(crate) fn record(
        &self,
        state: &ProxyState,
        decision: &Decision,
        user_agent: Option<&str>,
        port: u16,
    ) -> Option<PendingRecord> {
        state.records.as_ref().map(|sink| {
            let facts = RequestFacts {
                client: self.peer,
                identity: &self.identity,
                method: "CONNECT",
                scheme: "https",
                target: &self.connect,
                port,
                decision,
                seen_as: SeenAs::ConnectHost,
                user_agent,
            };
            let mut pending =
                PendingRecord::new(facts.record(0), Arc::clone(sink), std::time::Instant::now());
            pending.finish(StatusCode::FORBIDDEN.as_u16(), None);
            pending
        })
    }
}

/// How a tunnel's first bytes from the client turned out.
pub(crate) enum Opening {
    /// A complete ClientHello.
    Hello(ClientHello),
    /// Not TLS at all.
    NotTls,
    /// TLS, but not a ClientHello SafeGate can read.
    Unreadable(HelloError),
    /// The client closed its side (or went away) before a ClientHello was complete.
    Closed,
    /// The origin sent bytes first (a server-speaks-first protocol).
    ServerFirst,
    /// Nothing usable within `proxy.header_read_timeout`.
    TimedOut,
}

/// Reads from `client` into `buf` (which may hold bytes already) until a ClientHello
/// is complete or it is clear that none is coming; never buffers more than
/// [`MAX_CLIENT_HELLO`] bytes. Stops early if `origin` has something to say first.
pub(crate) async fn read_opening<C: AsyncRead + Unpin>(
    client: &mut C,
    buf: &mut Vec<u8>,
    origin: Option<&TcpStream>,
    limit: Duration,
) -> Opening {
    let reading = async {
        loop {
            match sni::parse(buf) {
                Ok(Some(hello)) => return Opening::Hello(hello),
                Ok(None) => {}
                Err(HelloError::NotTls) => return Opening::NotTls,
                Err(error) => return Opening::Unreadable(error),
            }
            let room = MAX_CLIENT_HELLO.saturating_sub(buf.len()).min(16 * 1024);
            if room == 0 {
                return Opening::Unreadable(HelloError::TooLarge);
            }
            buf.reserve(room);
            let mut limited = (&mut *buf).limit(room);
            tokio::select! {
                read = client.read_buf(&mut limited) => match read {
                    Ok(0) | Err(_) => return Opening::Closed,
                    Ok(_) => {}
                },
                () = origin_speaks(origin) => return Opening::ServerFirst,
            }
        }
    };
    tokio::time::timeout(limit, reading)
        .await
        .unwrap_or(Opening::TimedOut)
}

async fn origin_speaks(origin: Option<&TcpStream>) {
    match origin {
        Some(origin) => {
            let _ = origin.readable().await;
        }
        None => std::future::pending().await,
    }
}

/// A tunnel between the 200 and the end of the relay.
struct Tunnel<'a> {
    state: &'a Arc<ProxyState>,
    origin: TcpStream,
    target: &'a str,
    bytes: Arc<TunnelBytes>,
    pending: &'a mut Option<PendingRecord>,
    check: &'a NameCheck,
}

impl Tunnel<'_> {
    /// Checks the ClientHello, then relays (or refuses).
    async fn run<C>(self, mut client: C, mut buf: Vec<u8>)
    where
        C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Self {
            state,
            mut origin,
            target,
            bytes,
            pending,
            check,
        } = self;
        let opening = read_opening(
            &mut client,
            &mut buf,
            Some(&origin),
            state.header_read_timeout,
        )
        .await;
        let refusal = match &opening {
            Opening::Hello(hello) => check
                .refusal(hello)
                .map(|decision| (decision, hello.server_name.clone())),
            Opening::Unreadable(error) => Some((
                Decision {
                    verdict: Verdict::Block,
                    categories: Vec::new(),
                    rule: "tls-unreadable".to_owned(),
                    reason: format!("the TLS ClientHello cannot be read: {error}"),
                },
                None,
            )),
            Opening::TimedOut => {
                debug!(
                    target,
                    "no ClientHello within proxy.header_read_timeout; tunnel closed"
                );
                return;
            }
            Opening::NotTls | Opening::Closed | Opening::ServerFirst => None,
        };
        if let Some((decision, server_name)) = refusal {
            if let Some(pending) = pending.as_mut() {
                pending.block(&decision);
                pending.finish(StatusCode::FORBIDDEN.as_u16(), None);
            }
            check
                .refuse(&mut client, &decision, server_name.as_deref())
                .await;
            return;
        }
        if !buf.is_empty() {
            let sent =
                tokio::time::timeout(state.tunnel_idle_timeout, origin.write_all(&buf)).await;
            if !matches!(sent, Ok(Ok(()))) {
                debug!(target, "the origin did not take the tunnel's first bytes");
                return;
            }
            bytes.add(Direction::Up, buf.len() as u64);
        }
        relay_counted(state, client, origin, target, bytes).await;
    }
}

/// The user agent of a request, for records made after it is gone.
pub(crate) fn user_agent(request: &Request<Incoming>) -> Option<String> {
    request
        .headers()
        .get(USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Relays between two established streams until both directions have closed (each
/// EOF is passed on as a write shutdown) or nothing moved for the idle timeout.
///
/// When both ends turn out to be plain TCP sockets (a CONNECT tunnel, or a WebSocket
/// upgrade whose hyper connections can be taken apart), Linux moves the bytes with
/// splice(2) and they never enter user space; otherwise a userspace copy loop runs.
/// Returns the bytes delivered each way (client → origin, origin → client), however
/// the relay ended (closed, broken, idle, or cut off at shutdown), and counts them into
/// `bytes` as each write completes, so that whoever else holds them (the visit-log
/// record) sees the bytes delivered so far even if this future is dropped.
pub(crate) async fn relay_counted<C, O>(
    state: &ProxyState,
    client: C,
    origin: O,
    target: &str,
    bytes: Arc<TunnelBytes>,
) -> (u64, u64)
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    O: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _open = state.stats.tunnel_opened();
    relay_until_idle(
        client,
        origin,
        state.tunnel_idle_timeout,
        bytes,
        target,
        &state.cut_off,
    )
    .await
}

/// The relay proper: transfer until done, broken, idle for `idle_timeout`, or cut off.
async fn relay_until_idle<C, O>(
    client: C,
    origin: O,
    idle_timeout: std::time::Duration,
    bytes: Arc<TunnelBytes>,
    target: &str,
    cut_off: &tokio_util::sync::CancellationToken,
) -> (u64, u64)
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    O: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let meter = Arc::new(Meter::new(bytes));
    let ended = tokio::select! {
        result = transfer(End::of(client), End::of(origin), &meter) => match result {
            Ok(()) => "closed",
            Err(error) => {
                debug!(target, %error, "tunnel broken");
                "broken"
            }
        },
        () = meter.expired(idle_timeout) => "idle",
        () = cut_off.cancelled() => "cut off at shutdown",
    };
    let (up, down) = meter.bytes.totals();
    debug!(target, up, down, ended, "tunnel over");
    (up, down)
}

/// Moves the bytes, counting them into `meter` as they are delivered.
async fn transfer<C: Stream + 'static, O: Stream + 'static>(
    client: End<C>,
    origin: End<O>,
    meter: &Arc<Meter>,
) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    let (client, origin) = match (client, origin) {
        (End::Tcp(client, to_origin), End::Tcp(origin, to_client)) => {
            match crate::splice_relay::available() {
                Ok(()) => {
                    let delivered = |direction, bytes| meter.delivered(direction, bytes);
                    return crate::splice_relay::relay(
                        (&client, to_origin),
                        (&origin, to_client),
                        &delivered,
                    )
                    .await;
                }
                Err(error) => {
                    debug!(%error, "no pipes for splicing; copying the tunnel instead");
                    (End::Tcp(client, to_origin), End::Tcp(origin, to_client))
                }
            }
        }
        pair => pair,
    };
    // Each side counts what is written to it: writes to the client went down.
    let mut client = Tracked::new(client.into_stream(), Arc::clone(meter), Direction::Down);
    let mut origin = Tracked::new(origin.into_stream(), Arc::clone(meter), Direction::Up);
    tokio::io::copy_bidirectional_with_sizes(&mut client, &mut origin, RELAY_BUFFER, RELAY_BUFFER)
        .await?;
    Ok(())
}

/// What the copy loop needs of a stream.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One end of a tunnel, taken apart down to its TCP socket where possible.
enum End<T> {
    /// The socket, and bytes already read from it that are still to be relayed.
    Tcp(TcpStream, Bytes),
    /// A hyper upgrade over a transport other than the ones we know.
    Upgraded(TokioIo<Upgraded>),
    /// Any other stream.
    Other(T),
}

impl<T: Stream + 'static> End<T> {
    fn of(io: T) -> Self {
        let mut slot = Some(io);
        let any: &mut dyn Any = &mut slot;
        if let Some(stream) = any
            .downcast_mut::<Option<TcpStream>>()
            .and_then(Option::take)
        {
            return Self::Tcp(stream, Bytes::new());
        }
        if let Some(upgraded) = any
            .downcast_mut::<Option<TokioIo<Upgraded>>>()
            .and_then(Option::take)
        {
            return Self::of_upgraded(upgraded.into_inner());
        }
        match slot {
            Some(io) => Self::Other(io),
            None => unreachable!("only a successful downcast takes the stream"),
        }
    }

    /// The client side of a CONNECT or upgrade is a `ClientIo`; the origin side of
    /// an upgrade is the connector's `TcpStream`. hyper may already have read bytes
    /// past the HTTP head; they come back as `read_buf`.
    fn of_upgraded(upgraded: Upgraded) -> Self {
        let upgraded = match upgraded.downcast::<TokioIo<ClientIo>>() {
            Ok(parts) => return Self::Tcp(parts.io.into_inner().into_stream(), parts.read_buf),
            Err(upgraded) => upgraded,
        };
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => Self::Tcp(parts.io.into_inner(), parts.read_buf),
            Err(upgraded) => Self::Upgraded(TokioIo::new(upgraded)),
        }
    }

    fn into_stream(self) -> Box<dyn Stream> {
        match self {
            Self::Tcp(stream, pending) if pending.is_empty() => Box::new(stream),
            Self::Tcp(stream, pending) => Box::new(Prefixed {
                pending,
                inner: stream,
            }),
            Self::Upgraded(upgraded) => Box::new(upgraded),
            Self::Other(io) => Box::new(io),
        }
    }
}

/// A stream whose reads first return bytes read from it earlier.
pub(crate) struct Prefixed<T> {
    pending: Bytes,
    inner: T,
}

impl<T> Prefixed<T> {
    /// `inner`, with `pending` read first.
    pub(crate) fn new(pending: impl Into<Bytes>, inner: T) -> Self {
        Self {
            pending: pending.into(),
            inner,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pending.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let take = self.pending.len().min(buf.remaining());
        let chunk = self.pending.split_to(take);
        buf.put_slice(&chunk);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A tunnel's bytes delivered each way (shared with its record) and the last time
/// any moved, in milliseconds since it opened (for the idle timeout).
struct Meter {
    bytes: Arc<TunnelBytes>,
    opened: Instant,
    last_ms: AtomicU64,
}

impl Meter {
    fn new(bytes: Arc<TunnelBytes>) -> Self {
        Self {
            bytes,
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    /// Counts `bytes` written to the receiving side and restarts the idle clock.
    fn delivered(&self, direction: Direction, bytes: u64) {
        self.bytes.add(direction, bytes);
        let now = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(now, Ordering::Relaxed);
    }

    async fn expired(&self, idle_timeout: std::time::Duration) {
        loop {
            let last = self.opened
                + std::time::Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + idle_timeout;
            if deadline <= Instant::now() {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A stream that counts the bytes written to it (delivered in `direction`) into the
/// tunnel's meter.
struct Tracked<T> {
    inner: T,
    meter: Arc<Meter>,
    direction: Direction,
}

impl<T> Tracked<T> {
    fn new(inner: T, meter: Arc<Meter>, direction: Direction) -> Self {
        Self {
            inner,
            meter,
            direction,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = result
            && written > 0
        {
            self.meter.delivered(self.direction, written as u64);
        }
        result
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
    //! The userspace copy loop (streams that are not TCP sockets, as on every
    //! platform without splice): the counts are right however the relay ends. The
    //! splice path is covered through the proxy in `tests/visit_records.rs`.

    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

    use super::*;

    const UP: usize = 100 * 1024;
    const DOWN: usize = 300 * 1024;

    /// A relay over in-memory streams (so the copy loop runs), with its counters.
    fn start(
        idle_timeout: Duration,
    ) -> (
        DuplexStream,
        DuplexStream,
        Arc<TunnelBytes>,
        tokio::task::JoinHandle<(u64, u64)>,
    ) {
        let (client, client_side) = duplex(64 * 1024);
        let (origin_side, origin) = duplex(64 * 1024);
        let bytes = Arc::new(TunnelBytes::default());
        let counting = Arc::clone(&bytes);
        let relay = tokio::spawn(async move {
            relay_until_idle(
                client_side,
                origin_side,
                idle_timeout,
                counting,
                "test",
                &tokio_util::sync::CancellationToken::new(),
            )
            .await
        });
        (client, origin, bytes, relay)
    }

    #[tokio::test]
    async fn copy_loop_counts_survive_the_idle_timeout() {
        tokio::time::timeout(Duration::from_secs(20), async {
            let idle_timeout = Duration::from_millis(200);
            let started = Instant::now();
            let (mut client, mut origin, bytes, relay) = start(idle_timeout);
            let upload = vec![1u8; UP];
            let download = vec![2u8; DOWN];
            let client_side = async {
                client.write_all(&upload).await.unwrap();
                let mut received = vec![0u8; DOWN];
                client.read_exact(&mut received).await.unwrap();
                assert!(received == download);
            };
            let origin_side = async {
                let mut received = vec![0u8; UP];
                origin.read_exact(&mut received).await.unwrap();
                assert!(received == upload);
                origin.write_all(&download).await.unwrap();
            };
            tokio::join!(client_side, origin_side);
            // Both ends stay open: only the idle timeout ends the relay.
            let moved = relay.await.unwrap();
            assert!(started.elapsed() >= idle_timeout);
            assert_eq!(moved, (UP as u64, DOWN as u64));
            assert_eq!(bytes.totals(), (UP as u64, DOWN as u64));
            // The relay let go of both streams.
            let mut rest = Vec::new();
            assert_eq!(client.read_to_end(&mut rest).await.unwrap(), 0);
            assert_eq!(origin.read_to_end(&mut rest).await.unwrap(), 0);
        })
        .await
        .expect("test timed out");
    }

    #[tokio::test]
    async fn copy_loop_counts_what_was_relayed_when_the_client_goes() {
        tokio::time::timeout(Duration::from_secs(20), async {
            let (mut client, mut origin, bytes, relay) = start(Duration::from_secs(600));
            client.write_all(&vec![1u8; UP]).await.unwrap();
            let mut received = vec![0u8; UP];
            origin.read_exact(&mut received).await.unwrap();
            // The origin streams until the tunnel breaks.
            let streaming = tokio::spawn(async move {
                let chunk = vec![2u8; 16 * 1024];
                let mut written = 0u64;
                while let Ok(n) = origin.write(&chunk).await {
                    written += n as u64;
                }
                written
            });
            let mut seen = vec![0u8; DOWN];
            client.read_exact(&mut seen).await.unwrap();
            drop(client);
            let (up, down) = relay.await.unwrap();
            let written = streaming.await.unwrap();
            assert_eq!(up, UP as u64);
            assert!(
                (DOWN as u64..=written).contains(&down),
                "down {down}, origin wrote {written}"
            );
            assert_eq!(bytes.totals(), (up, down));
        })
        .await
        .expect("test timed out");
    }
}
