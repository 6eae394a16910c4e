//! What every connection of one proxy listener shares: settings resolved at start,
//! the upstream client and its pool, the task tracker used for draining, and counters
//! ([`crate::metrics::ProxyMetrics`], also read by `/metrics`). Immutable apart from
//! the atomics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::HeaderValue;
use hyper::server::conn::http1;
use hyper_util::client::legacy::Client;
use tokio_util::task::TaskTracker;

use crate::config::PacConfig;
use crate::local_pages::StatusFigures;
use crate::metrics::ProxyMetrics;
use crate::upstream::Connector;

pub(crate) struct ProxyState {
    pub(crate) listen: SocketAddr,
    pub(crate) connect_ports: Vec<u16>,
    /// Ports plain-HTTP requests may be forwarded to (`proxy.http_ports`).
    pub(crate) http_ports: crate::config::PortSet,
    pub(crate) pac: PacConfig,
    pub(crate) via: HeaderValue,
    pub(crate) header_read_timeout: Duration,
    /// `proxy.body_read_timeout`: for the bodies SafeGate reads itself.
    pub(crate) body_read_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) response_timeout: Duration,
    pub(crate) tunnel_idle_timeout: Duration,
    pub(crate) http1: http1::Builder,
    pub(crate) client: Client<Connector, crate::body::UpstreamBody>,
    pub(crate) connector: Connector,
    /// HTTPS decryption, when the school CA is set up.
    pub(crate) decryption: Option<crate::tls::Decrypting>,
    pub(crate) tasks: TaskTracker,
    pub(crate) stats: Stats,
    pub(crate) started: Instant,
    pub(crate) reviews: Option<safegate_store::ReviewQueue>,
    /// `proxy.reviews_per_*_per_hour`: how many review requests the form may make.
    pub(crate) review_limits: crate::review_limit::ReviewLimiter,
    /// The live policy; a request takes one snapshot and keeps it.
    pub(crate) policy: crate::PolicyHandle,
    /// Who clients are: credentials, portal log-ins, address bindings.
    pub(crate) auth: Arc<crate::auth::Authenticator>,
    pub(crate) records: Option<crate::visit_record::SharedSink>,
    /// The clock visit-log records are stamped with.
    pub(crate) record_clock: crate::visit_record::RecordClock,
    /// Names computers on records (`[devices]`); none leaves records unnamed.
    pub(crate) computer_names: Option<crate::visit_record::ComputerNamer>,
    /// Cancelled when the shutdown grace has run out: open connections and tunnels
    /// end at once, so their visit-log records still reach the writer.
    pub(crate) cut_off: tokio_util::sync::CancellationToken,
    /// `proxy.proxy_protocol_from`: peers whose connections start with a PROXY header.
    pub(crate) proxy_protocol_from: Vec<ipnet::IpNet>,
}

impl ProxyState {
    pub(crate) fn status_figures(&self) -> StatusFigures {
        StatusFigures {
            uptime: self.started.elapsed(),
            connections: self.stats.connections.load(Ordering::Relaxed),
            tunnels: self.stats.tunnels.load(Ordering::Relaxed),
            requests: self.stats.requests.load(Ordering::Relaxed),
        }
    }
}

/// Live counters shown on the status page and exported on `/metrics`.
#[derive(Default)]
pub(crate) struct Stats(Arc<ProxyMetrics>);

impl std::ops::Deref for Stats {
    type Target = ProxyMetrics;

    fn deref(&self) -> &ProxyMetrics {
        &self.0
    }
}

impl Stats {
    /// The counters, for `/metrics`.
    pub(crate) fn shared(&self) -> Arc<ProxyMetrics> {
        Arc::clone(&self.0)
    }

    pub(crate) fn connection_opened(&self) -> OpenGuard<'_> {
        OpenGuard::new(&self.0.connections)
    }

    pub(crate) fn tunnel_opened(&self) -> OpenGuard<'_> {
        OpenGuard::new(&self.0.tunnels)
    }
}

/// Counts one open connection or tunnel until dropped.
pub(crate) struct OpenGuard<'a>(&'a AtomicUsize);

impl<'a> OpenGuard<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
