//! CONNECT tunnels: check the port, connect to the origin (DNS, destination guard,
//! timeout), answer 200, then copy bytes both ways with half-close until both sides
//! are done or the tunnel has been idle for `proxy.tunnel_idle_timeout`.

use std::any::Any;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use safegate_policy::RequestTarget;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::debug;

use crate::body::ResponseBody;
use crate::client_io::ClientIo;
use crate::error_page;
use crate::filter;
use crate::safesearch;
use crate::service::{self, ClientContext, Decided};
use crate::state::ProxyState;
use safegate_store::SeenAs;

/// Buffer per direction; large enough that bulk transfers are not syscall-bound.
const RELAY_BUFFER: usize = 64 * 1024;

/// Answers a CONNECT request.
pub(crate) async fn open(
    state: &Arc<ProxyState>,
    client: &ClientContext,
    request: Request<Incoming>,
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
        &normalized,
        "https",
        port,
        SeenAs::ConnectHost,
    );
    if decision.is_blocked() {
        let refusal = service::blocked(&snapshot, &decision, &identity, client, &target, now, true);
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
    if let Some(pending) = &mut pending {
        pending.finish(200, None);
    }
    let tunnel_state = Arc::clone(state);
    state.tasks.spawn(async move {
        match hyper::upgrade::on(request).await {
            Ok(client) => {
                let moved = relay(&tunnel_state, TokioIo::new(client), origin, &target).await;
                if let (Some(pending), Some((up, down))) = (&mut pending, moved) {
                    pending.set_bytes(up, down);
                }
            }
            Err(error) => debug!(%error, target, "client left before the tunnel opened"),
        }
        // The record is submitted here, with the tunnel's lifetime as its duration.
        drop(pending);
    });
    Response::new(ResponseBody::empty())
}

/// Relays between two established streams until both directions have closed (each
/// EOF is passed on as a write shutdown) or nothing moved for the idle timeout.
///
/// When both ends turn out to be plain TCP sockets (a CONNECT tunnel, or a WebSocket
/// upgrade whose hyper connections can be taken apart), Linux moves the bytes with
/// splice(2) and they never enter user space; otherwise a userspace copy loop runs.
/// Returns the bytes moved each way when the tunnel ended normally; `None` when it
/// broke or was closed for idleness (the counts are not known then).
pub(crate) async fn relay<C, O>(
    state: &ProxyState,
    client: C,
    origin: O,
    target: &str,
) -> Option<(u64, u64)>
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    O: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _open = state.stats.tunnel_opened();
    let clock = Arc::new(IdleClock::new());
    let idle_timeout = state.tunnel_idle_timeout;
    tokio::select! {
        result = transfer(End::of(client), End::of(origin), &clock) => {
            match result {
                Ok((up, down)) => {
                    debug!(target, up, down, "tunnel closed");
                    Some((up, down))
                }
                Err(error) => {
                    debug!(target, %error, "tunnel broken");
                    None
                }
            }
        }
        () = clock.expired(idle_timeout) => {
            debug!(target, "tunnel idle, closed");
            None
        }
    }
}

/// Moves the bytes; returns how many went client → origin and origin → client.
async fn transfer<C: Stream + 'static, O: Stream + 'static>(
    client: End<C>,
    origin: End<O>,
    clock: &Arc<IdleClock>,
) -> io::Result<(u64, u64)> {
    #[cfg(target_os = "linux")]
    let (client, origin) = match (client, origin) {
        (End::Tcp(client, to_origin), End::Tcp(origin, to_client)) => {
            match crate::splice_relay::available() {
                Ok(()) => {
                    let progress = || clock.touch();
                    return crate::splice_relay::relay(
                        (&client, to_origin),
                        (&origin, to_client),
                        &progress,
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
    let mut client = Tracked::new(client.into_stream(), Arc::clone(clock));
    let mut origin = Tracked::new(origin.into_stream(), Arc::clone(clock));
    tokio::io::copy_bidirectional_with_sizes(&mut client, &mut origin, RELAY_BUFFER, RELAY_BUFFER)
        .await
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
struct Prefixed<T> {
    pending: Bytes,
    inner: T,
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

/// Last time any byte moved through a tunnel, in milliseconds since it opened.
struct IdleClock {
    opened: Instant,
    last_ms: AtomicU64,
}

impl IdleClock {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
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

/// A stream that touches the idle clock whenever it reads bytes.
struct Tracked<T> {
    inner: T,
    clock: Arc<IdleClock>,
}

impl<T> Tracked<T> {
    fn new(inner: T, clock: Arc<IdleClock>) -> Self {
        Self { inner, clock }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.clock.touch();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
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
