//! Connections to origin servers: DNS through hickory (cached), the destination guard
//! on every resolved address, and a staggered "happy eyeballs" connect across the
//! addresses (IPv6 and IPv4 alternating) under one overall timeout.
//!
//! `Connector` is used directly for CONNECT tunnels and, as a `tower::Service<Uri>`,
//! by hyper-util's pooling client for forwarded HTTP requests.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use http::Uri;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::destination_guard::DestinationGuard;
use crate::dns::Resolver;
use crate::error::UpstreamError;

/// Delay before the next address is tried while earlier attempts are still pending
/// (RFC 8305 recommends 250 ms).
const NEXT_ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Opens TCP connections to origins; cheap to clone.
#[derive(Clone)]
pub struct Connector {
    inner: Arc<ConnectorInner>,
}

struct ConnectorInner {
    resolver: Resolver,
    guard: DestinationGuard,
    connect_timeout: Duration,
}

impl Connector {
    /// A connector resolving with `resolver` and refusing what `guard` refuses.
    pub fn new(resolver: Resolver, guard: DestinationGuard, connect_timeout: Duration) -> Self {
        Self {
            inner: Arc::new(ConnectorInner {
                resolver,
                guard,
                connect_timeout,
            }),
        }
    }

    /// Connects to `host:port`; `host` may be a name or an IP literal (with or
    /// without IPv6 brackets).
    pub async fn connect(&self, host: &str, port: u16) -> Result<TcpStream, UpstreamError> {
        let addrs = self.allowed_addresses(host, port).await?;
        let stream = tokio::time::timeout(self.inner.connect_timeout, connect_first(addrs))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout {
                host: host.to_owned(),
            })??;
        // Small requests and responses must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    async fn allowed_addresses(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, UpstreamError> {
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        let ips: Vec<IpAddr> = match literal.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => self.resolve(host).await?,
        };
        let mut allowed = Vec::with_capacity(ips.len());
        let mut first_refusal = None;
        for ip in ips {
            let addr = SocketAddr::new(ip, port);
            match self.inner.guard.check(addr) {
                Ok(()) => allowed.push(addr),
                Err(refusal) => {
                    first_refusal.get_or_insert(refusal);
                }
            }
        }
        match (allowed.is_empty(), first_refusal) {
            (true, Some(refusal)) => Err(UpstreamError::Forbidden(refusal)),
            (true, None) => Err(UpstreamError::Dns {
                host: host.to_owned(),
                reason: "no address".to_owned(),
            }),
            _ => Ok(interleave_families(allowed)),
        }
    }

    async fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, UpstreamError> {
        let lookup = self
            .inner
            .resolver
            .lookup_ip(host)
            .await
            .map_err(|e| UpstreamError::Dns {
                host: host.to_owned(),
                reason: if e.is_nx_domain() || e.is_no_records_found() {
                    "no such host".to_owned()
                } else {
                    e.to_string()
                },
            })?;
        Ok(lookup.iter().collect())
    }
}

/// Reorders addresses so the two families alternate, keeping the resolver's
/// preference for the first one (RFC 8305 §4).
fn interleave_families(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let Some(first) = addrs.first() else {
        return addrs;
    };
    let first_is_v6 = first.is_ipv6();
    let (mut preferred, mut other): (Vec<_>, Vec<_>) =
        addrs.into_iter().partition(|a| a.is_ipv6() == first_is_v6);
    if other.is_empty() {
        return preferred;
    }
    let mut ordered = Vec::with_capacity(preferred.len() + other.len());
    preferred.reverse();
    other.reverse();
    loop {
        match (preferred.pop(), other.pop()) {
            (None, None) => return ordered,
            (a, b) => ordered.extend(a.into_iter().chain(b)),
        }
    }
}

/// Starts a connection to each address in turn, the next one after
/// `NEXT_ATTEMPT_DELAY` or as soon as one fails; the first success wins.
async fn connect_first(addrs: Vec<SocketAddr>) -> Result<TcpStream, UpstreamError> {
    let attempt = |addr: SocketAddr| async move { (addr, TcpStream::connect(addr).await) };
    let mut remaining = addrs.into_iter();
    let mut pending = FuturesUnordered::new();
    let mut last_error = None;
    loop {
        if pending.is_empty() {
            match remaining.next() {
                Some(addr) => pending.push(attempt(addr)),
                None => {
                    return Err(last_error.unwrap_or(UpstreamError::Protocol {
                        host: String::new(),
                        reason: "no address to connect to".to_owned(),
                    }));
                }
            }
        }
        let more_to_try = remaining.len() > 0;
        tokio::select! {
            Some((addr, result)) = pending.next() => match result {
                Ok(stream) => return Ok(stream),
                Err(error) => {
                    last_error = Some(if error.kind() == std::io::ErrorKind::ConnectionRefused {
                        UpstreamError::Refused { addr }
                    } else {
                        UpstreamError::Connect { addr, reason: error.to_string() }
                    });
                    if let Some(next) = remaining.next() {
                        pending.push(attempt(next));
                    }
                }
            },
            () = tokio::time::sleep(NEXT_ATTEMPT_DELAY), if more_to_try => {
                if let Some(next) = remaining.next() {
                    pending.push(attempt(next));
                }
            }
        }
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = UpstreamError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move {
            let host = uri.host().unwrap_or_default();
            let default_port = if uri.scheme() == Some(&http::uri::Scheme::HTTPS) {
                443
            } else {
                80
            };
            let port = uri.port_u16().unwrap_or(default_port);
            connector.connect(host, port).await.map(TokioIo::new)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter()
            .map(|a| a.parse().unwrap_or_else(|_| unreachable!()))
            .collect()
    }

    #[test]
    fn families_alternate_starting_with_the_preferred_one() {
        let ordered = interleave_families(addrs(&[
            "[2001:db8::1]:80",
            "[2001:db8::2]:80",
            "192.0.2.1:80",
        ]));
        assert_eq!(
            ordered,
            addrs(&["[2001:db8::1]:80", "192.0.2.1:80", "[2001:db8::2]:80"])
        );
    }

    #[tokio::test]
    async fn refused_port_reports_refused() {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|_| unreachable!());
        let addr = listener.local_addr().unwrap_or_else(|_| unreachable!());
        drop(listener);
        let error = connect_first(vec![addr]).await.err();
        assert!(
            matches!(error, Some(UpstreamError::Refused { .. })),
            "{error:?}"
        );
    }
}
