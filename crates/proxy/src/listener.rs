//! The accept loop and the driver of one client connection.
//!
//! Connections beyond `proxy.max_connections`, or beyond
//! `proxy.max_connections_per_client` from one address, get a short 503 and are
//! closed ([`crate::slots`]; an open tunnel keeps its connection's place). Each
//! accepted connection runs hyper's HTTP/1.1 server in its own task, watched by a
//! timer that follows the connection's `Phase`: a slow request head is answered 408,
//! an idle keep-alive connection is closed, a busy one is left alone. On shutdown the
//! driver asks hyper to finish the request in flight and close. A connection from a
//! load balancer in `proxy.proxy_protocol_from` is first read for its PROXY header
//! (`proxy_header`) and from then on is the client the header names, limits included. Transparent HTTP
//! connections are driven the same way; transparent TLS connections go to
//! `transparent::serve_tls`.

use crate::event_log::{BAD_REQUESTS, MISSING_PROXY_HEADERS, throttled};
use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::client_io::{Activity, ClientIo, Phase};
use crate::intake::{ClientContext, Intake, ListenerKind};
use crate::original_dst::canonical;
use crate::proxy_header;
use crate::service;
use crate::slots::{Limits, Refused, Slot};
use crate::state::ProxyState;
use crate::transparent;

const BUSY_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\
Content-Type: text/plain; charset=utf-8\r\nRetry-After: 5\r\nContent-Length: 52\r\n\r\n\
SafeGate is at its connection limit; try again soon.";

/// Accepts until `shutdown` is cancelled; `kind` says how the clients are served.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    state: Arc<ProxyState>,
    limits: Arc<Limits>,
    shutdown: CancellationToken,
    kind: ListenerKind,
) {
    let warnings = Arc::new(LimitWarnings::default());
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            // IPv4 clients of a dual-stack listener are seen, logged and recorded as IPv4.
            Ok((stream, peer)) => (stream, canonical(peer)),
            Err(error) => {
                // Out of file descriptors or similar: back off instead of spinning.
                warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let accepted = Accepted {
            state: Arc::clone(&state),
            limits: Arc::clone(&limits),
            warnings: Arc::clone(&warnings),
            shutdown: shutdown.clone(),
            kind,
        };
        let from_balancer = state
            .proxy_protocol_from
            .iter()
            .any(|network| network.contains(&peer.ip()));
        if from_balancer {
            // The header is read in the connection's own task: a slow balancer
            // connection never holds up the accept loop.
            state.tasks.spawn(accepted.behind_balancer(stream, peer));
        } else {
            accepted.admit(stream, peer);
        }
    }
}

/// When each connection-limit warning was last logged (seconds since start), so the
/// service log gets at most one of each a second.
struct LimitWarnings {
    busy: AtomicU64,
    client: AtomicU64,
}

impl Default for LimitWarnings {
    fn default() -> Self {
        Self {
            busy: AtomicU64::new(u64::MAX),
            client: AtomicU64::new(u64::MAX),
        }
    }
}

/// What an accepted connection needs to be admitted and served.
struct Accepted {
    state: Arc<ProxyState>,
    limits: Arc<Limits>,
    warnings: Arc<LimitWarnings>,
    shutdown: CancellationToken,
    kind: ListenerKind,
}

impl Accepted {
    /// Reads the load balancer's PROXY header (within `proxy.header_read_timeout`),
    /// then admits the connection as the client it names; without a valid header the
    /// connection is closed and logged (a few lines a minute).
    async fn behind_balancer(self, mut stream: TcpStream, balancer: SocketAddr) {
        let read = tokio::time::timeout(
            self.state.header_read_timeout,
            proxy_header::read(&mut stream),
        );
        let outcome = tokio::select! {
            () = self.shutdown.cancelled() => return,
            outcome = read => outcome,
        };
        match outcome {
            Ok(Ok(client)) => {
                let client = client.map_or(balancer, canonical);
                self.admit(stream, client);
            }
            Ok(Err(error)) => refuse_headerless(balancer, &error.to_string()),
            Err(_) => refuse_headerless(
                balancer,
                "no PROXY protocol header within proxy.header_read_timeout",
            ),
        }
    }

    /// Takes a place for `peer` under the connection limits and serves the
    /// connection, or answers 503 (logged at most once a second per limit).
    fn admit(self, stream: TcpStream, peer: SocketAddr) {
        let Self {
            state,
            limits,
            warnings,
            shutdown,
            kind,
        } = self;
        match limits.admit(peer.ip()) {
            Ok(slot) => {
                let state_for_task = Arc::clone(&state);
                if kind == ListenerKind::TransparentTls {
                    state.tasks.spawn(transparent::serve_tls(
                        state_for_task,
                        stream,
                        peer,
                        slot,
                        shutdown,
                    ));
                } else {
                    state.tasks.spawn(serve_client(
                        state_for_task,
                        stream,
                        peer,
                        slot,
                        shutdown,
                        kind,
                    ));
                }
            }
            Err(refused) => {
                let now = state.started.elapsed().as_secs();
                let last = match refused {
                    Refused::Global => &warnings.busy,
                    Refused::PerClient => &warnings.client,
                };
                if last.swap(now, Ordering::Relaxed) != now {
                    match refused {
                        Refused::Global => {
                            warn!(client = %peer, "connection limit reached (proxy.max_connections); answering 503");
                        }
                        Refused::PerClient => {
                            warn!(client = %peer, "connection limit for one client reached (proxy.max_connections_per_client); answering 503");
                        }
                    }
                }
                if kind != ListenerKind::TransparentTls {
                    let _ = stream.try_write(BUSY_RESPONSE);
                }
            }
        }
    }
}

/// Logs a listed balancer's connection that came without a valid PROXY header (it
/// is closed by the caller dropping it): a warning, the first few a minute.
fn refuse_headerless(balancer: SocketAddr, why: &str) {
    if MISSING_PROXY_HEADERS.admit() {
        warn!(peer = %balancer, reason = why, "connection from a proxy.proxy_protocol_from address closed: it must start with a PROXY protocol header (HAProxy: send-proxy-v2)");
    } else {
        debug!(peer = %balancer, reason = why, "connection without a PROXY protocol header closed");
    }
}

enum Ending {
    Finished(Result<(), hyper::Error>),
    HeadTimeout,
    Idle,
    CutOff,
}

async fn serve_client(
    state: Arc<ProxyState>,
    stream: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    shutdown: CancellationToken,
    kind: ListenerKind,
) {
    let _open = state.stats.connection_opened();
    let _ = stream.set_nodelay(true);
    let activity = Activity::new();
    let local = stream.local_addr().map_or(state.listen, canonical);
    let intake = Intake::of(kind, &stream);
    let context = Arc::new(ClientContext {
        peer,
        local,
        activity: Arc::clone(&activity),
        intake,
        slot: Arc::new(slot),
        log_in: crate::auth::ConnectionLogIn::default(),
    });
    let service_state = Arc::clone(&state);
    let service = service_fn(move |request| {
        let state = Arc::clone(&service_state);
        let context = Arc::clone(&context);
        async move {
            let response = match intake {
                Intake::Transparent { original_dst } => {
                    transparent::handle_http(state, context, request, original_dst).await
                }
                Intake::Explicit => service::handle(state, context, request).await,
            };
            Ok::<_, Infallible>(response)
        }
    });
    let io = TokioIo::new(ClientIo::new(stream, Arc::clone(&activity)));
    let mut connection = pin!(state.http1.serve_connection(io, service).with_upgrades());
    let mut shutdown_signal = pin!(shutdown.cancelled_owned());
    let mut cut_off = pin!(state.cut_off.clone().cancelled_owned());
    let mut timer = pin!(tokio::time::sleep(state.idle_timeout));
    let mut armed: Option<Instant> = None;
    let mut draining = false;

    let ending = poll_fn(|cx| {
        if !draining && shutdown_signal.as_mut().poll(cx).is_ready() {
            draining = true;
            connection.as_mut().graceful_shutdown();
        }
        if let Poll::Ready(result) = connection.as_mut().poll(cx) {
            return Poll::Ready(Ending::Finished(result));
        }
        if cut_off.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ending::CutOff);
        }
        let (deadline, ending) = match activity.phase() {
            Phase::Busy => return Poll::Pending,
            Phase::Fresh(since) => (since + state.header_read_timeout, Ending::Idle),
            Phase::Idle(since) => (since + state.idle_timeout, Ending::Idle),
            Phase::ReadingHead(since) => (since + state.header_read_timeout, Ending::HeadTimeout),
        };
        if armed != Some(deadline) {
            timer.as_mut().reset(deadline);
            armed = Some(deadline);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(ending),
            Poll::Pending => Poll::Pending,
        }
    })
    .await;

    match ending {
        Ending::Finished(Ok(())) => {}
        Ending::Finished(Err(error)) => log_connection_error(peer, &error),
        Ending::Idle => debug!(client = %peer, "idle keep-alive connection closed"),
        Ending::CutOff => info!(client = %peer, "connection cut off: shutdown grace over"),
        Ending::HeadTimeout => {
            throttled!(BAD_REQUESTS, client = %peer, "request head not received within proxy.header_read_timeout; answered 408");
            activity.expire_head();
            // The next read answers 408 and fails, which ends hyper's connection.
            let _ = tokio::time::timeout(Duration::from_secs(1), connection.as_mut()).await;
        }
    }
}

fn log_connection_error(peer: SocketAddr, error: &hyper::Error) {
    if error.is_parse_too_large() {
        throttled!(BAD_REQUESTS, client = %peer, %error, "request head too large; answered 431");
    } else if error.is_parse() {
        throttled!(BAD_REQUESTS, client = %peer, %error, "malformed request; answered 400");
    } else if error.is_incomplete_message() || error.is_canceled() {
        debug!(client = %peer, %error, "client closed mid-message");
    } else {
        debug!(client = %peer, %error, "client connection ended with an error");
    }
}
