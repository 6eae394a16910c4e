//! SafeGate's admin listener (`admin.listen`). Today it answers `/healthz`, `/metrics`
//! (Prometheus, see [`metrics`]) and a landing page; the admin web interface and the
//! JSON API are added here. It is a separate socket from the proxy so that the proxy
//! can refuse to reach it.

pub mod metrics;

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::error;

pub use crate::metrics::Metrics;
/// The Prometheus client library, for collectors written outside this crate.
pub use prometheus;

/// `[admin]` section of `safegate.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin web interface, health checks and metrics.
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9128)),
        }
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
}

/// A bound admin listener.
pub struct AdminServer {
    listener: TcpListener,
    addr: SocketAddr,
    metrics: Metrics,
}

impl AdminServer {
    /// Binds `admin.listen`; `/metrics` renders `metrics`.
    pub async fn bind(config: &AdminConfig, metrics: Metrics) -> Result<Self, AdminError> {
        let bind_error = |source| AdminError::Bind {
            addr: config.listen,
            source,
        };
        let listener = TcpListener::bind(config.listen).await.map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        Ok(Self {
            listener,
            addr,
            metrics,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), AdminError> {
        axum::serve(self.listener, router(self.metrics))
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(AdminError::Serve)
    }
}

fn router(metrics: Metrics) -> Router {
    Router::new()
        .route("/", get(landing))
        .route("/healthz", get(healthz))
        .route("/metrics", get(render_metrics))
        .with_state(metrics)
}

async fn healthz() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], "ok\n")
}

/// `GET /metrics`: every registered collector, Prometheus text format 0.0.4.
///
/// ACCESS (TODO when sign-in lands): today this is open to whoever can reach the admin
/// listener, which binds 127.0.0.1 by default. The metrics name no users or sites, but
/// they show how busy the school is and whether the visit log is failing. When the
/// admin interface gets users and permissions, this route MUST be put behind the
/// `metrics` permission, or a bearer token configured for the Prometheus server (which
/// cannot sign in); until then, keep `admin.listen` on loopback.
async fn render_metrics(State(metrics): State<Metrics>) -> Response {
    match metrics.render() {
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
<body><h1>SafeGate admin</h1><p>Health: <a href=\"/healthz\">/healthz</a></p><p>Prometheus metrics: <a href=\"/metrics\">/metrics</a></p></body></html>\n",
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
        };
        let metrics = Metrics::new("9.8.7").unwrap();
        let server = AdminServer::bind(&config, metrics).await.unwrap();
        let addr = server.local_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        let response = tokio::time::timeout(Duration::from_secs(10), async {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
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
}
