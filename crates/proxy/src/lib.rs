//! SafeGate's explicit forward proxy: it accepts HTTP/1.1 clients, forwards
//! absolute-form requests to origins with streamed bodies and pooled keep-alive
//! connections, opens CONNECT tunnels, relays WebSocket upgrades, and serves its own
//! status page and PAC file.
//!
//! Traffic redirected by the school router arrives on the `transparent` listeners:
//! plain HTTP joins the same request path, HTTPS is decided on its TLS server name
//! (`sni`) and relayed without decryption.
//!
//! HTTPS through CONNECT is decided on the CONNECT host and the ClientHello's server
//! name, and tunnelled; or, for the sites the policy's `[decrypt]` section names and
//! when the school CA is set up, decrypted (`tls`) so that the whole policy applies to
//! the full address.
//!
//! One request flows: `listener` (accept, the load balancer's `proxy_header` when
//! `proxy.proxy_protocol_from` lists the peer, limits, timeouts) → a way in (`service` for
//! explicit clients: SafeGate's own pages, `portal_pages`, CONNECT through `tunnel`,
//! other requests through `forward`; `transparent`; `tls::intercept` for requests
//! inside a decrypted tunnel) → the same `pipeline` steps for every way in: identify
//! the client with `auth` (credentials, portal log-in, address binding or default
//! role), decide, answer (the `block_page`, a forward through `upstream`: DNS,
//! `destination_guard`, connect, the response's file rules and, for pages,
//! `content_gate`'s phrase scan; a tunnel or upgrade through `relay`; an
//! `error_page`), finish (count and complete the visit record once). Nothing on that
//! path touches the disk or a global lock apart from hyper-util's connection pool.
//!
//! Every request is counted in [`metrics`] (relaxed atomics in fixed arrays, read by
//! `/metrics` at scrape time): decisions by verdict, role and category, latencies,
//! open connections and tunnels, upstream failures, DNS cache hits and misses.

pub mod auth;
pub mod block_page;
pub mod config;
pub mod destination_guard;
pub mod dns;
pub mod error;
pub mod error_page;
pub mod hop_by_hop;
pub mod local_pages;
pub mod metrics;
pub mod open_files;
pub mod page_style;
pub mod review_limit;
pub mod safesearch;
pub mod sni;
pub mod tls;
pub mod upstream;
pub mod visit_record;

mod body;
mod client_io;
mod content_gate;
mod event_log;
mod form_body;
mod forward;
mod hello;
mod intake;
mod listener;
mod original_dst;
mod pipeline;
mod portal_pages;
mod proxy_header;
mod relay;
mod service;
mod slots;
#[cfg(target_os = "linux")]
mod splice_relay;
mod state;
mod transparent;
mod tunnel;
mod userinfo;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderValue;
use hyper::server::conn::http1;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::body::ResponseBody;
pub use crate::config::{
    ConfigProblem, DnsConfig, PacConfig, ProxyConfig, TransparentConfig, UpstreamConfig,
};
pub use crate::error::{ProxyError, UpstreamError};

use crate::destination_guard::DestinationGuard;
use crate::intake::ListenerKind;
use crate::state::{ProxyState, Stats};
use crate::upstream::Connector;
use crate::visit_record::RecordClock;

pub use safegate_policy::PolicyHandle;

/// How long connections and tunnels cut off after the shutdown grace get to end.
const CUT_OFF_WAIT: Duration = Duration::from_secs(1);

/// The sections of the configuration the proxy reads.
#[derive(Clone)]
pub struct ProxySettings<'a> {
    /// `[proxy]`.
    pub proxy: &'a ProxyConfig,
    /// `[upstream]`.
    pub upstream: &'a UpstreamConfig,
    /// `[pac]`.
    pub pac: &'a PacConfig,
    /// `[transparent]`.
    pub transparent: &'a TransparentConfig,
    /// Where review requests from the block page go; none disables the form.
    pub reviews: Option<safegate_store::ReviewQueue>,
    /// The live policy every request is decided against.
    pub policy: PolicyHandle,
    /// Proxy authentication and address bindings; the binary keeps its user table
    /// current.
    pub auth: Arc<auth::Authenticator>,
    /// Where visit-log records go; none turns the visit log off.
    pub records: Option<visit_record::SharedSink>,
    /// The clock records are stamped with (the system clock in service).
    pub record_clock: RecordClock,
    /// Names computers on records (`[devices]`); none leaves records unnamed.
    pub computer_names: Option<visit_record::ComputerNamer>,
    /// HTTPS decryption with the school CA; none tunnels all HTTPS untouched.
    pub decryption: Option<Arc<tls::Decryption>>,
}

/// A bound proxy listener, ready to serve.
pub struct Proxy {
    listener: TcpListener,
    /// The transparent listeners that are on, with the kind of traffic they take.
    transparent: Vec<(TcpListener, ListenerKind)>,
    state: Arc<ProxyState>,
    limits: Arc<slots::Limits>,
    shutdown_grace: Duration,
}

/// How serving ended after shutdown was requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every request and tunnel finished within the grace period.
    Complete,
    /// The grace period ran out with connections or tunnels still open.
    GraceExpired {
        /// Connections and tunnels still open.
        open: usize,
    },
}

/// The proxy's listening sockets, bound.
struct Listeners {
    explicit: TcpListener,
    /// The explicit listener's address (its port when `proxy.listen` says 0).
    listen: SocketAddr,
    transparent: Vec<(TcpListener, ListenerKind)>,
    /// Every SafeGate socket clients may not reach through the proxy.
    protected: Vec<SocketAddr>,
}

impl Listeners {
    /// Binds `proxy.listen` and the transparent listeners that are on.
    async fn bind(
        proxy: &ProxyConfig,
        transparent: &TransparentConfig,
        other_listeners: &[SocketAddr],
    ) -> Result<Self, ProxyError> {
        let explicit_error = |source| ProxyError::Bind {
            addr: proxy.listen,
            source,
        };
        let explicit = TcpListener::bind(proxy.listen)
            .await
            .map_err(explicit_error)?;
        let listen = explicit.local_addr().map_err(explicit_error)?;
        let mut protected = other_listeners.to_vec();
        protected.push(listen);
        let mut transparent_listeners = Vec::new();
        for (addr, kind) in [
            (transparent.http_listen, ListenerKind::TransparentHttp),
            (transparent.https_listen, ListenerKind::TransparentTls),
        ] {
            let Some(addr) = addr else { continue };
            let bind_error = |source| ProxyError::Bind { addr, source };
            let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
            protected.push(listener.local_addr().map_err(bind_error)?);
            transparent_listeners.push((listener, kind));
        }
        Ok(Self {
            explicit,
            listen,
            transparent: transparent_listeners,
            protected,
        })
    }
}

/// hyper's HTTP/1.1 server settings for client connections (the head timeout is the
/// connection driver's, `listener`).
fn client_http1(proxy: &ProxyConfig) -> http1::Builder {
    let mut http1 = http1::Builder::new();
    http1
        .header_read_timeout(None)
        .max_header_size(proxy.max_header_bytes)
        .keep_alive(true);
    if proxy.max_headers != 100 {
        // hyper's default is 100 on the stack; any other value costs a heap buffer.
        http1.max_headers(proxy.max_headers);
    }
    http1
}

/// Raises the open-file limit to its hard limit, and says so; warns when even that is
/// too low for `proxy.max_connections`.
fn raise_open_file_limit(max_connections: usize) {
    let (before, after) = open_files::raise_to_hard();
    let show = |limit: Option<u64>| limit.map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
    match after {
        Ok(after) if after != before => tracing::info!(
            from = show(before.soft),
            to = show(after.soft),
            "open-file limit raised to the hard limit"
        ),
        Ok(_) => tracing::debug!(
            soft = show(before.soft),
            "open-file limit already at its hard limit"
        ),
        Err(error) => {
            tracing::warn!(%error, soft = show(before.soft), "the open-file limit could not be raised")
        }
    }
    if !before.hard_allows(max_connections) {
        tracing::warn!(
            hard = show(before.hard),
            needed = open_files::needed(max_connections),
            max_connections,
            "the hard open-file limit (ulimit -Hn, systemd LimitNOFILE=) is below 2 x proxy.max_connections + 64: \
             connections may fail with \"too many open files\" before the limit is reached"
        );
    }
}

/// How the pools of origin connections are sized (`upstream.pool_*`, resolved).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolSizing {
    pub(crate) idle_timeout: Duration,
    pub(crate) max_idle_per_host: usize,
}

impl PoolSizing {
    fn of(upstream: &UpstreamConfig, max_connections: usize) -> Self {
        Self {
            idle_timeout: upstream.pool_idle_timeout,
            // Validated at load; a bad value here falls back to the automatic size.
            max_idle_per_host: upstream
                .pool_max_idle_per_host
                .resolve(max_connections)
                .unwrap_or(max_connections),
        }
    }
}

/// The pooled client that forwards plain-HTTP requests to origins.
fn upstream_client(
    pool: PoolSizing,
    connector: &Connector,
) -> Client<Connector, body::UpstreamBody> {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(pool.idle_timeout)
        .pool_max_idle_per_host(pool.max_idle_per_host)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .set_host(false)
        .build(connector.clone())
}

impl Proxy {
    /// Binds `proxy.listen` and the transparent listeners that are on, and prepares the
    /// upstream side. `other_listeners` are SafeGate's other sockets (the admin
    /// interface), which clients may never reach through the proxy; nor may they reach
    /// any of the proxy's own listeners (no loops).
    pub async fn bind(
        settings: ProxySettings<'_>,
        other_listeners: &[SocketAddr],
    ) -> Result<Self, ProxyError> {
        let ProxySettings {
            proxy,
            upstream,
            pac,
            transparent,
            reviews,
            policy,
            auth,
            records,
            record_clock,
            computer_names,
            decryption,
        } = settings;
        raise_open_file_limit(proxy.max_connections);
        let bound = Listeners::bind(proxy, transparent, other_listeners).await?;
        let listen = bound.listen;
        let guard = DestinationGuard::new(
            upstream.allow_loopback,
            upstream.deny_networks.clone(),
            bound.protected,
        );
        let stats = Stats::default();
        stats.register_categories(policy.load().category_names());
        let resolver = dns::build_resolver(&upstream.dns, stats.dns())?;
        let connector = Connector::new(resolver, guard, upstream.connect_timeout);
        let pool = PoolSizing::of(upstream, proxy.max_connections);
        let client = upstream_client(pool, &connector);
        let via = HeaderValue::from_str(&format!("1.1 {}", proxy.via_pseudonym))
            .unwrap_or_else(|_| HeaderValue::from_static("1.1 safegate"));

        let state = Arc::new(ProxyState {
            listen,
            connect_ports: proxy.connect_ports.clone(),
            http_ports: config::PortSet::of(&proxy.http_ports),
            pac: PacConfig {
                direct_listeners: other_listeners.to_vec(),
                ..pac.clone()
            },
            via,
            header_read_timeout: proxy.header_read_timeout,
            body_read_timeout: proxy.body_read_timeout,
            idle_timeout: proxy.idle_timeout,
            response_timeout: upstream.response_timeout,
            tunnel_idle_timeout: proxy.tunnel_idle_timeout,
            http1: client_http1(proxy),
            client,
            decryption: decryption
                .map(|setup| tls::Decrypting::new(setup, connector.clone(), pool)),
            connector,
            tasks: TaskTracker::new(),
            stats,
            started: Instant::now(),
            reviews,
            review_limits: review_limit::ReviewLimiter::new(
                proxy.reviews_per_token_per_hour,
                proxy.reviews_per_address_per_hour,
            ),
            policy,
            auth,
            records,
            record_clock,
            computer_names,
            cut_off: CancellationToken::new(),
            proxy_protocol_from: proxy.proxy_protocol_from.clone(),
        });
        Ok(Self {
            listener: bound.explicit,
            transparent: bound.transparent,
            state,
            limits: slots::Limits::new(proxy.max_connections, proxy.max_connections_per_client),
            shutdown_grace: proxy.shutdown_grace,
        })
    }

    /// The proxy's counters, for `/metrics`.
    pub fn metrics(&self) -> Arc<metrics::ProxyMetrics> {
        self.state.stats.shared()
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.state.listen
    }

    /// The transparent listeners actually bound: (HTTP, HTTPS), each when configured.
    pub fn transparent_addrs(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        let find = |wanted| {
            self.transparent
                .iter()
                .find(|(_, kind)| *kind == wanted)
                .and_then(|(listener, _)| listener.local_addr().ok())
        };
        (
            find(ListenerKind::TransparentHttp),
            find(ListenerKind::TransparentTls),
        )
    }

    /// Serves until `shutdown` is cancelled, then stops accepting and gives open
    /// requests and tunnels up to `proxy.shutdown_grace` to finish.
    pub async fn run(self, shutdown: CancellationToken) -> Drained {
        let Self {
            listener,
            transparent,
            state,
            limits,
            shutdown_grace,
        } = self;
        // Portal sessions nobody looks up are ended by a sweep until shutdown, and
        // the service log's per-minute summaries are written.
        let sweep_period = (state.auth.portal_idle_timeout() / 2)
            .clamp(Duration::from_millis(100), Duration::from_secs(60));
        let sweeper = tokio::spawn({
            let auth = Arc::clone(&state.auth);
            let shutdown = shutdown.clone();
            async move {
                let mut ticks = tokio::time::interval(sweep_period);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut minutes = tokio::time::interval(Duration::from_secs(60));
                minutes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        _ = ticks.tick() => auth.sweep_portal(),
                        _ = minutes.tick() => event_log::summarise_ended_minutes(),
                    }
                }
            }
        });
        // Every listener shares the connection limit and the drain below.
        let listeners = std::iter::once((listener, ListenerKind::Explicit)).chain(transparent);
        futures_util::future::join_all(listeners.map(|(listener, kind)| {
            listener::accept_loop(
                listener,
                Arc::clone(&state),
                Arc::clone(&limits),
                shutdown.clone(),
                kind,
            )
        }))
        .await;
        let _ = sweeper.await;
        state.tasks.close();
        match tokio::time::timeout(shutdown_grace, state.tasks.wait()).await {
            Ok(()) => Drained::Complete,
            Err(_) => {
                let open = state.tasks.len();
                // Cut what is left off, and let it end (recording what it moved).
                state.cut_off.cancel();
                let _ = tokio::time::timeout(CUT_OFF_WAIT, state.tasks.wait()).await;
                Drained::GraceExpired { open }
            }
        }
    }
}
