//! CONNECT tunnels: check the port, connect to the origin (DNS, destination guard,
//! timeout), answer 200, then copy bytes both ways with half-close until both sides
//! are done or the tunnel has been idle for `proxy.tunnel_idle_timeout`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use jiff::Timestamp;
use safegate_policy::RequestTarget;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tracing::debug;

use crate::body::ResponseBody;
use crate::error_page;
use crate::filter;
use crate::safesearch;
use crate::service::{self, ClientContext};
use crate::state::ProxyState;

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
    let snapshot = state.filter.snapshot();
    let identity = state.filter.identify(client.peer.ip(), &snapshot);
    let now = Timestamp::now();
    let decision = snapshot.decide(&identity.subject(), &normalized, now);
    if decision.is_blocked() {
        return service::blocked(&snapshot, &decision, &identity, client, &target, now, true);
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
            return error_page::upstream_failure(&error, &target);
        }
    };
    let tunnel_state = Arc::clone(state);
    state.tasks.spawn(async move {
        match hyper::upgrade::on(request).await {
            Ok(client) => relay(&tunnel_state, TokioIo::new(client), origin, &target).await,
            Err(error) => debug!(%error, target, "client left before the tunnel opened"),
        }
    });
    Response::new(ResponseBody::empty())
}

/// Copies between two established streams until both directions have closed (each
/// EOF is passed on as a write shutdown) or nothing moved for the idle timeout.
pub(crate) async fn relay<C, O>(state: &ProxyState, client: C, origin: O, target: &str)
where
    C: AsyncRead + AsyncWrite + Unpin,
    O: AsyncRead + AsyncWrite + Unpin,
{
    let _open = state.stats.tunnel_opened();
    let clock = Arc::new(IdleClock::new());
    let mut client = Tracked::new(client, Arc::clone(&clock));
    let mut origin = Tracked::new(origin, Arc::clone(&clock));
    let idle_timeout = state.tunnel_idle_timeout;
    tokio::select! {
        result = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut origin, RELAY_BUFFER, RELAY_BUFFER) => {
            match result {
                Ok((up, down)) => debug!(target, up, down, "tunnel closed"),
                Err(error) => debug!(target, %error, "tunnel broken"),
            }
        }
        () = clock.expired(idle_timeout) => debug!(target, "tunnel idle, closed"),
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
