//! The first bytes of a tunnel: reading the client's TLS ClientHello (bounded in size
//! and time, stopping early when the origin speaks first) and refusing a connection
//! with a TLS `access_denied` alert when its server name is blocked.

use std::time::Duration;

use bytes::BufMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::sni::{self, ClientHello, HelloError, MAX_CLIENT_HELLO};

/// A fatal `access_denied` alert (RFC 8446 §6.2): browsers show it as the site
/// refusing access, which is the most a proxy that does not decrypt can say.
pub(crate) const ACCESS_DENIED_ALERT: [u8; 7] = [21, 3, 3, 0, 2, 2, 49];

/// Time given to the alert to leave before the connection is closed.
const ALERT_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Sends `client` the `access_denied` alert and closes its sending side (within
/// [`ALERT_WRITE_TIMEOUT`]).
pub(crate) async fn send_access_denied<C: AsyncWrite + Unpin>(client: &mut C) {
    let _ = tokio::time::timeout(ALERT_WRITE_TIMEOUT, async {
        if client.write_all(&ACCESS_DENIED_ALERT).await.is_ok() {
            let _ = client.shutdown().await;
        }
    })
    .await;
}

/// How a tunnel's first bytes from the client turned out.
pub(crate) enum Opening {
    /// A complete ClientHello.
    Hello(ClientHello),
    /// Not TLS at all.
    NotTls,
    /// TLS, but not a ClientHello SafeGate can read.
    Unreadable(HelloError),
    /// The client closed its side (or went away) before a ClientHello was complete.
    Closed,
    /// The origin sent bytes first (a server-speaks-first protocol).
    ServerFirst,
    /// Nothing usable within `proxy.header_read_timeout`.
    TimedOut,
}

/// Reads from `client` into `buf` (which may hold bytes already) until a ClientHello
/// is complete or it is clear that none is coming; never buffers more than
/// [`MAX_CLIENT_HELLO`] bytes. Stops early if `origin` has something to say first.
pub(crate) async fn read_opening<C: AsyncRead + Unpin>(
    client: &mut C,
    buf: &mut Vec<u8>,
    origin: Option<&TcpStream>,
    limit: Duration,
) -> Opening {
    let reading = async {
        loop {
            match sni::parse(buf) {
                Ok(Some(hello)) => return Opening::Hello(hello),
                Ok(None) => {}
                Err(HelloError::NotTls) => return Opening::NotTls,
                Err(error) => return Opening::Unreadable(error),
            }
            let room = MAX_CLIENT_HELLO.saturating_sub(buf.len()).min(16 * 1024);
            if room == 0 {
                return Opening::Unreadable(HelloError::TooLarge);
            }
            buf.reserve(room);
            let mut limited = (&mut *buf).limit(room);
            tokio::select! {
                read = client.read_buf(&mut limited) => match read {
                    Ok(0) | Err(_) => return Opening::Closed,
                    Ok(_) => {}
                },
                () = origin_speaks(origin) => return Opening::ServerFirst,
            }
        }
    };
    tokio::time::timeout(limit, reading)
        .await
        .unwrap_or(Opening::TimedOut)
}

async fn origin_speaks(origin: Option<&TcpStream>) {
    match origin {
        Some(origin) => {
            let _ = origin.readable().await;
        }
        None => std::future::pending().await,
    }
}
