//! How a client connection reached SafeGate, and what every request on it carries
//! through the pipeline: the client's address, the address it connected to, its
//! activity clock, and whether it is an explicit-proxy client (which can be asked for
//! credentials) or a redirected one (which cannot).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use crate::client_io::Activity;
use crate::original_dst;

/// What kind of clients a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListenerKind {
    /// Browsers configured to use SafeGate as their proxy (`proxy.listen`).
    Explicit,
    /// Redirected plain HTTP (`transparent.http_listen`).
    TransparentHttp,
    /// Redirected HTTPS (`transparent.https_listen`).
    TransparentTls,
}

/// How a client connection reached SafeGate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Intake {
    /// Through the explicit proxy listener: the client knows it talks to a proxy and
    /// can be asked for credentials.
    Explicit,
    /// Redirected to a transparent listener: the client believes it talks to the
    /// site, so it cannot be asked for proxy credentials.
    Transparent {
        /// Where the client was originally going, when the redirect happened on this
        /// machine.
        original_dst: Option<SocketAddr>,
    },
}

impl Intake {
    /// How a connection accepted on a `kind` listener reached SafeGate.
    pub(crate) fn of(kind: ListenerKind, stream: &TcpStream) -> Self {
        match kind {
            ListenerKind::Explicit => Self::Explicit,
            ListenerKind::TransparentHttp | ListenerKind::TransparentTls => Self::Transparent {
                original_dst: original_dst::lookup(stream),
            },
        }
    }
}

/// Per client connection facts every request on it needs.
pub(crate) struct ClientContext {
    /// The client's address.
    pub(crate) peer: SocketAddr,
    /// The address the client connected to (differs from `listen` when that is a
    /// wildcard); SafeGate's own pages are reached through it.
    pub(crate) local: SocketAddr,
    /// The connection's activity clock (in flight, idle, reading a head).
    pub(crate) activity: Arc<Activity>,
    /// Explicit proxy client, or redirected (transparent: never ask it for proxy
    /// credentials, it cannot answer them).
    pub(crate) intake: Intake,
    /// The connection's place under the connection limits; a tunnel or upgrade that
    /// outlives the connection keeps a clone, so it stays counted while open.
    pub(crate) slot: Arc<crate::slots::Slot>,
    /// The person a Kerberos ticket proved on this connection (Negotiate is
    /// connection-based).
    pub(crate) log_in: crate::auth::ConnectionLogIn,
}
