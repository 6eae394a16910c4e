//! The byte relay behind every tunnel: CONNECT tunnels, transparent HTTPS, WebSocket
//! and other upgrades. It copies both ways with half-close until both sides are done,
//! nothing moved for the idle timeout, or the shutdown grace cut it off, and counts the
//! bytes delivered each way into [`TunnelBytes`] as each write completes, so the
//! visit-log record that follows the tunnel has them however it ended. Between two
//! TCP sockets on Linux the bytes move with splice(2) and never enter user space.

use std::any::Any;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::debug;

use crate::client_io::ClientIo;
use crate::state::ProxyState;
use crate::visit_record::{Direction, TunnelBytes};

/// Buffer per direction; large enough that bulk transfers are not syscall-bound.
const RELAY_BUFFER: usize = 64 * 1024;

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
