//! Errors of the proxy crate: start-up failures (`ProxyError`) and the reasons an
//! upstream could not be reached (`UpstreamError`), which pick the error page.

use std::net::SocketAddr;

use crate::destination_guard::Refusal;

/// SafeGate's proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The DNS resolver could not be set up (for instance no readable resolv.conf).
    #[error(
        "cannot set up DNS resolution: {0} (set upstream.dns.servers to name servers explicitly)"
    )]
    Dns(String),
}

/// Why a request could not be passed to its origin.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// The host name has no address, or DNS did not answer.
    #[error("DNS lookup for {host} failed: {reason}")]
    Dns {
        /// The host that was looked up.
        host: String,
        /// What went wrong, in words.
        reason: String,
    },
    /// Every address of the origin refused the connection.
    #[error("{addr} refused the connection")]
    Refused {
        /// The last address tried.
        addr: SocketAddr,
    },
    /// No address answered within `upstream.connect_timeout`.
    #[error("connecting to {host} timed out")]
    ConnectTimeout {
        /// The host that did not answer.
        host: String,
    },
    /// Connecting failed for another network reason (unreachable network, reset, ...).
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The last address tried.
        addr: SocketAddr,
        /// What the operating system said.
        reason: String,
    },
    /// The destination is not allowed (loop, loopback, denied network).
    #[error("destination refused: {0}")]
    Forbidden(#[from] Refusal),
    /// The origin accepted the request but sent no response head in time.
    #[error("{host} did not answer within {seconds}s")]
    ResponseTimeout {
        /// The origin host.
        host: String,
        /// The configured timeout.
        seconds: u64,
    },
    /// The connection broke while the request was sent or the answer read.
    #[error("the connection to {host} failed: {reason}")]
    Protocol {
        /// The origin host.
        host: String,
        /// What hyper reported.
        reason: String,
    },
}

impl UpstreamError {
    /// Short, stable name of the failure kind, sent in `X-SafeGate-Reason` and used as
    /// a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Dns { .. } => "dns-failure",
            Self::Refused { .. } => "connection-refused",
            Self::ConnectTimeout { .. } => "connect-timeout",
            Self::Connect { .. } => "connect-failed",
            Self::Forbidden(Refusal::OwnListener(_)) => "loop",
            Self::Forbidden(_) => "forbidden-destination",
            Self::ResponseTimeout { .. } => "response-timeout",
            Self::Protocol { .. } => "upstream-protocol",
        }
    }
}
