//! The client connection's transport and its activity clock.
//!
//! hyper drives the HTTP/1.1 protocol; `ClientIo` wraps the socket to learn what hyper
//! does not expose: when a request head starts arriving, when a response has been
//! handed over, and so whether the connection is idle, reading a head, or busy. The
//! connection driver turns that into two distinct limits: a slow head gets a 408 and is
//! closed (`proxy.header_read_timeout`), an idle keep-alive connection is closed quietly
//! (`proxy.idle_timeout`). All of this stays within the connection's own task.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

const NOT_STARTED: u64 = u64::MAX;

const REQUEST_TIMEOUT_RESPONSE: &[u8] = b"HTTP/1.1 408 Request Timeout\r\n\
Connection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 55\r\n\r\n\
SafeGate: the request headers did not arrive in time.\r\n";

/// What the connection is doing, as the driver sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Accepted at the given instant and nothing has arrived yet: the client gets
    /// the header read timeout to start, then the connection is closed quietly.
    Fresh(Instant),
    /// Waiting for the next request since the given instant.
    Idle(Instant),
    /// Part of a request head has arrived; it started at the given instant.
    ReadingHead(Instant),
    /// A request is being served.
    Busy,
}

/// Shared between the socket wrapper, the request handler and the connection driver.
#[derive(Debug)]
pub(crate) struct Activity {
    origin: Instant,
    in_flight: AtomicU32,
    head_started_ms: AtomicU64,
    idle_since_ms: AtomicU64,
    send_request_timeout: AtomicBool,
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            origin: Instant::now(),
            in_flight: AtomicU32::new(0),
            head_started_ms: AtomicU64::new(NOT_STARTED),
            idle_since_ms: AtomicU64::new(NOT_STARTED),
            send_request_timeout: AtomicBool::new(false),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    fn at(&self, ms: u64) -> Instant {
        self.origin + Duration::from_millis(ms)
    }

    fn bytes_arrived(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_started_ms.load(Ordering::Relaxed) == NOT_STARTED
        {
            self.head_started_ms.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// Marks a request as being served until the returned guard is dropped.
    pub(crate) fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_started_ms.store(NOT_STARTED, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    pub(crate) fn phase(&self) -> Phase {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Phase::Busy;
        }
        match self.head_started_ms.load(Ordering::Relaxed) {
            NOT_STARTED => match self.idle_since_ms.load(Ordering::Relaxed) {
                NOT_STARTED => Phase::Fresh(self.origin),
                since => Phase::Idle(self.at(since)),
            },
            started => Phase::ReadingHead(self.at(started)),
        }
    }

    /// Makes the next read answer 408 and fail, so hyper drops the connection.
    pub(crate) fn expire_head(&self) {
        self.send_request_timeout.store(true, Ordering::Relaxed);
    }
}

/// Held while a response is outstanding; dropping it (when hyper has taken the last
/// byte of the body) makes the connection idle again.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0
                .idle_since_ms
                .store(self.0.now_ms(), Ordering::Relaxed);
        }
    }
}

/// The client socket as hyper sees it.
pub(crate) struct ClientIo {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl ClientIo {
    pub(crate) fn new(stream: TcpStream, activity: Arc<Activity>) -> Self {
        Self { stream, activity }
    }

    /// The socket itself, for a tunnel that relays it without hyper.
    pub(crate) fn into_stream(self) -> TcpStream {
        self.stream
    }

    fn answer_request_timeout(&mut self, cx: &mut Context<'_>) -> io::Error {
        // Best effort: the response is tiny and the send buffer empty at this point.
        let _ = Pin::new(&mut self.stream).poll_write(cx, REQUEST_TIMEOUT_RESPONSE);
        let _ = Pin::new(&mut self.stream).poll_shutdown(cx);
        io::Error::new(io::ErrorKind::TimedOut, "request head not received in time")
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.activity.send_request_timeout.load(Ordering::Relaxed) {
            return Poll::Ready(Err(self.answer_request_timeout(cx)));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.stream).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            self.activity.bytes_arrived();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
