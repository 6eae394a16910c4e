//! SafeGate's admin listener (`admin.listen`). Today it answers `/healthz` and a
//! landing page; the admin web interface, the JSON API and `/metrics` are added here.
//! It is a separate socket from the proxy so that the proxy can refuse to reach it.

use std::net::SocketAddr;

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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
}

impl AdminServer {
    /// Binds `admin.listen`.
    pub async fn bind(config: &AdminConfig) -> Result<Self, AdminError> {
        let bind_error = |source| AdminError::Bind {
            addr: config.listen,
            source,
        };
        let listener = TcpListener::bind(config.listen).await.map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        Ok(Self { listener, addr })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), AdminError> {
        axum::serve(self.listener, router())
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(AdminError::Serve)
    }
}

fn router() -> Router {
    Router::new()
        .route("/", get(landing))
        .route("/healthz", get(healthz))
}

async fn healthz() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], "ok\n")
}

async fn landing() -> Html<&'static str> {
    Html(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>SafeGate admin</title></head>\
<body><h1>SafeGate admin</h1><p>Health: <a href=\"/healthz\">/healthz</a></p></body></html>\n",
    )
}
