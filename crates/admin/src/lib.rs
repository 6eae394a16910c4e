//! SafeGate's admin listener (`admin.listen`) and everything served on it. It is a
//! separate socket from the proxy so that the proxy can refuse to reach it. This crate
//! owns the `[admin]` configuration section ([`AdminConfig`]) and:
//!
//! - [`health`]: `/healthz` (answers while SafeGate serves) and `/readyz` (whether it
//!   serves as configured, and what to fix);
//! - [`metrics`]: SafeGate's one Prometheus exporter, `/metrics`, for the clients
//!   [`access`] lets in (address or bearer token);
//! - [`ui`]: the admin web interface and its JSON API (sign-in, sessions, CSRF,
//!   per-permission pages for rules, reviews, alerts, reports, activity and health),
//!   merged beside the routes above by [`AdminServer::run_with_web`]; without it the
//!   listener shows a landing page ([`AdminServer::run`]).

pub mod access;
pub mod health;
pub mod metrics;
pub mod service;
pub mod ui;
pub mod written;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use ipnet::IpNet;
use safegate_config::ConfigProblem;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

pub use crate::access::MetricsAccess;
pub use crate::health::Readiness;
pub use crate::metrics::Metrics;
/// The Prometheus client library, for collectors written outside this crate.
pub use prometheus;

/// `[admin]` section of `safegate.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin web interface, health checks and metrics.
    pub listen: SocketAddr,
    /// Client networks that may read `/metrics` without a token.
    pub metrics_allow: Vec<IpNet>,
    /// The bearer token that lets any client read `/metrics` (discouraged here: prefer
    /// `metrics_token_file` or `SAFEGATE_METRICS_TOKEN`); empty for none. Shown as
    /// `<redacted>` by `safegate config show`.
    #[serde(serialize_with = "access::serialize_redacted")]
    pub metrics_token: String,
    /// A file holding the bearer token (readable by SafeGate's user only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_token_file: Option<PathBuf>,
    /// Admin web sessions end after this long without a request.
    #[serde(with = "humantime_serde")]
    pub session_idle: std::time::Duration,
    /// Admin web sessions end this long after sign-in, whatever happens.
    #[serde(with = "humantime_serde")]
    pub session_max: std::time::Duration,
    /// Mark the admin cookies `Secure` (when the admin pages are reached through a
    /// TLS-terminating reverse proxy).
    pub secure_cookies: bool,
    /// Host names the admin listener answers to besides IP addresses and `localhost`
    /// (a request naming any other host gets `421`, so a web page cannot reach the
    /// admin pages or `/metrics` through DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// Time the sign-in form's body has to arrive once its headers have (408 after).
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: std::time::Duration,
    /// Accounts with the `rules` or `users` permission must sign in with a code from
    /// an authenticator app (TOTP) as well as their password; until they have set it
    /// up, the admin pages show them only how to.
    pub require_2fa: bool,
    /// Sign-in with the school's OpenID Connect provider ([`ui::oidc`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<ui::oidc::OidcConfig>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9128)),
            metrics_allow: vec![
                loopback_v4(),
                IpNet::from(std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
            ],
            metrics_token: String::new(),
            metrics_token_file: None,
            session_idle: std::time::Duration::from_secs(30 * 60),
            session_max: std::time::Duration::from_secs(12 * 60 * 60),
            secure_cookies: false,
            allowed_hosts: Vec::new(),
            body_read_timeout: std::time::Duration::from_secs(30),
            require_2fa: false,
            oidc: None,
        }
    }
}

/// 127.0.0.0/8.
fn loopback_v4() -> IpNet {
    IpNet::V4(ipnet::Ipv4Net::new_assert(
        std::net::Ipv4Addr::new(127, 0, 0, 0),
        8,
    ))
}

impl AdminConfig {
    /// Every problem, with its key.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let file_set = self
            .metrics_token_file
            .as_ref()
            .is_some_and(|f| !f.as_os_str().is_empty());
        if file_set && !self.metrics_token.is_empty() {
            problems.push(ConfigProblem::new(
                "admin.metrics_token",
                "set either metrics_token or metrics_token_file, not both",
            ));
        }
        if !self.metrics_token.is_empty() && self.metrics_token.trim().len() < access::MIN_TOKEN_LEN
        {
            problems.push(ConfigProblem::new(
                "admin.metrics_token",
                format!(
                    "must be at least {} characters (e.g. `openssl rand -hex 32`)",
                    access::MIN_TOKEN_LEN
                ),
            ));
        }
        if self.body_read_timeout.is_zero() {
            problems.push(ConfigProblem::new(
                "admin.body_read_timeout",
                "must be longer than 0s",
            ));
        }
        if let Some(oidc) = &self.oidc {
            problems.extend(oidc.validate());
        }
        if self.session_idle.is_zero() || self.session_max.is_zero() {
            problems.push(ConfigProblem::new(
                "admin.session_idle",
                "session_idle and session_max must be more than zero",
            ));
        }
        problems
    }
}

/// The admin listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The server stopped with an I/O error.
    #[error("admin server failed: {0}")]
    Serve(std::io::Error),
    /// The metrics token is unusable (unreadable file, too short).
    #[error("{0}")]
    Token(String),
}

/// A bound admin listener.
pub struct AdminServer {
    listener: TcpListener,
    addr: SocketAddr,
    shared: Shared,
}

/// What the routes share.
#[derive(Clone)]
struct Shared {
    metrics: Metrics,
    access: Arc<MetricsAccess>,
    readiness: Arc<Readiness>,
    /// `admin.allowed_hosts`.
    allowed_hosts: Arc<[String]>,
}

impl AdminServer {
    /// Binds `admin.listen`; `/metrics` renders `metrics` for the clients the access
    /// rule lets in (the token read now, see [`access`]), `/readyz` reports `readiness`.
    pub async fn bind(
        config: &AdminConfig,
        metrics: Metrics,
        readiness: Arc<Readiness>,
    ) -> Result<Self, AdminError> {
        let env_token = std::env::var(access::TOKEN_ENV).ok();
        let access = Arc::new(MetricsAccess::from_config(config, env_token)?);
        let bind_error = |source| AdminError::Bind {
            addr: config.listen,
            source,
        };
        let listener = TcpListener::bind(config.listen).await.map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        Ok(Self {
            listener,
            addr,
            shared: Shared {
                metrics,
                access,
                readiness,
                allowed_hosts: config.allowed_hosts.iter().cloned().collect(),
            },
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), AdminError> {
        let hosts = Arc::clone(&self.shared.allowed_hosts);
        let app = router(self.shared).route("/", get(landing));
        serve(self.listener, app, hosts, shutdown).await
    }

    /// Serves with the admin web interface (`web`, which has its own `/`) beside the
    /// health and metrics routes, until `shutdown` is cancelled.
    pub async fn run_with_web(
        self,
        web: Router,
        shutdown: CancellationToken,
    ) -> Result<(), AdminError> {
        let hosts = Arc::clone(&self.shared.allowed_hosts);
        serve(
            self.listener,
            router(self.shared).merge(web),
            hosts,
            shutdown,
        )
        .await
    }
}

async fn serve(
    listener: TcpListener,
    app: Router,
    allowed_hosts: Arc<[String]>,
    shutdown: CancellationToken,
) -> Result<(), AdminError> {
    let app = app
        .layer(axum::middleware::from_fn_with_state(
            allowed_hosts,
            require_known_host,
        ))
        .into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(AdminError::Serve)
}

/// Answers `421` to a request whose `Host` names a host the admin listener is not
/// known by ([`host_allowed`]); requests without `Host` (HTTP/1.0 tools) pass.
async fn require_known_host(
    State(allowed): State<Arc<[String]>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let host = request.headers().get(header::HOST).map(|v| v.to_str());
    match host {
        None => next.run(request).await,
        Some(Ok(host)) if host_allowed(host, &allowed) => next.run(request).await,
        _ => (
            StatusCode::MISDIRECTED_REQUEST,
            [(header::CACHE_CONTROL, "no-store")],
            "SafeGate's admin pages answer to their IP address, localhost and the names in \
             admin.allowed_hosts; add this name there to use it\n",
        )
            .into_response(),
    }
}

/// Whether `host` (a `Host` header: name or address, with an optional port) is an IP
/// address, `localhost`, or one of `allowed` (case and a trailing dot ignored). A DNS
/// rebinding attack needs a name the attacker controls, so addresses are always safe.
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split_once(']').map_or(bracketed, |(ip, _)| ip),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let name = name.trim_end_matches('.');
    name.parse::<std::net::IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || allowed
            .iter()
            .any(|known| known.trim_end_matches('.').eq_ignore_ascii_case(name))
}

fn router(shared: Shared) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(shared)
}

async fn healthz() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], "ok\n")
}

/// `GET /readyz`: 200 and `ready` with the checks, or 503 with what to fix.
async fn readyz(State(shared): State<Shared>) -> Response {
    let readiness = Arc::clone(&shared.readiness);
    let report = match tokio::task::spawn_blocking(move || readiness.report()).await {
        Ok(report) => report,
        Err(err) => {
            error!(%err, "readiness checks failed to run");
            return (StatusCode::INTERNAL_SERVER_ERROR, "cannot run the checks\n").into_response();
        }
    };
    let (status, first) = if report.ready {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    };
    let mut body = format!("{first}\n");
    for line in &report.lines {
        body.push_str(line);
        body.push('\n');
    }
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// `GET /metrics`: every registered collector, Prometheus text format 0.0.4, for
/// clients in `admin.metrics_allow` or with the bearer token ([`access`]); `403`
/// for everyone else. The metrics name no users or sites, but they show how busy the
/// school is and whether the visit log is failing.
async fn render_metrics(
    State(shared): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if !shared.access.allows(peer.ip(), &headers) {
        warn!(client = %peer.ip(), "/metrics refused: address not in admin.metrics_allow and no valid bearer token");
        return (
            StatusCode::FORBIDDEN,
            [(header::CACHE_CONTROL, "no-store")],
            "forbidden: this address may not read the metrics (admin.metrics_allow), and no \
             valid bearer token was sent\n",
        )
            .into_response();
    }
    match shared.metrics.render() {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
        Err(err) => {
            error!(%err, "cannot render /metrics");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot render the metrics\n",
            )
                .into_response()
        }
    }
}

async fn landing() -> Html<&'static str> {
    Html(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>SafeGate admin</title></head>\
<body><h1>SafeGate admin</h1><p>Health: <a href=\"/healthz\">/healthz</a>, readiness: <a href=\"/readyz\">/readyz</a></p><p>Prometheus metrics: <a href=\"/metrics\">/metrics</a></p></body></html>\n",
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn metrics_are_served_as_prometheus_text() {
        let config = AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..AdminConfig::default()
        };
        let metrics = Metrics::new("9.8.7").unwrap();
        let readiness = Arc::new(Readiness::new(Vec::new()));
        let server = AdminServer::bind(&config, metrics, readiness)
            .await
            .unwrap();
        let addr = server.local_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        let response = tokio::time::timeout(Duration::from_secs(10), async {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            response
        })
        .await
        .unwrap();
        shutdown.cancel();
        task.await.unwrap().unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        let lower = response.to_ascii_lowercase();
        assert!(
            lower.contains("content-type: text/plain; version=0.0.4"),
            "{response}"
        );
        assert!(lower.contains("cache-control: no-store"), "{response}");
        assert!(
            response.contains("\nsafegate_build_info{version=\"9.8.7\"} 1\n"),
            "{response}"
        );
    }

    #[test]
    fn only_addresses_localhost_and_configured_names_are_answered() {
        let allowed = ["safegate.school.internal".to_owned()];
        for host in [
            "127.0.0.1",
            "127.0.0.1:9128",
            "10.0.3.5:9128",
            "[::1]:9128",
            "::1",
            "localhost:9128",
            "LOCALHOST",
            "safegate.school.internal:9128",
            "SafeGate.School.Internal.",
        ] {
            assert!(host_allowed(host, &allowed), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:9128",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "",
        ] {
            assert!(!host_allowed(host, &allowed), "{host}");
        }
    }

    /// A page on a rebound name reaches nothing: `421` for `/metrics` and `/healthz`.
    #[tokio::test]
    async fn requests_for_other_host_names_are_misdirected() {
        let config = AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            allowed_hosts: vec!["safegate.school.internal".to_owned()],
            ..AdminConfig::default()
        };
        let metrics = Metrics::new("1").unwrap();
        let readiness = Arc::new(Readiness::new(Vec::new()));
        let server = AdminServer::bind(&config, metrics, readiness)
            .await
            .unwrap();
        let addr = server.local_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        let status_for = |host: &'static str, path: &'static str| async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let request =
                format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            response.get(9..12).unwrap_or("").to_owned()
        };
        tokio::time::timeout(Duration::from_secs(10), async {
            assert_eq!(status_for("evil.example", "/metrics").await, "421");
            assert_eq!(status_for("evil.example:80", "/healthz").await, "421");
            assert_eq!(
                status_for("safegate.school.internal", "/healthz").await,
                "200"
            );
            assert_eq!(status_for("localhost", "/metrics").await, "200");
        })
        .await
        .unwrap();
        shutdown.cancel();
        task.await.unwrap().unwrap();
    }
}
