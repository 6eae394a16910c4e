//! Where a redirected client connection was originally going.
//!
//! When the school router (or netfilter on the SafeGate machine) sends ports 80 and
//! 443 to SafeGate with `REDIRECT` or `DNAT`, the connection tracker remembers the
//! destination the client asked for; Linux hands it out as the `SO_ORIGINAL_DST`
//! socket option (`IP6T_SO_ORIGINAL_DST` for IPv6). rustix wraps both getsockopt calls
//! safely, so the workspace stays free of `unsafe`.
//!
//! A connection that was not translated (a client that connected to the transparent
//! port directly, or no connection tracking at all) has no original destination:
//! the option then fails or returns the socket's own local address, and `lookup`
//! answers `None`. The same holds when the translation happened on another machine
//! (a separate router doing DNAT): only that machine's connection tracker knows.

use std::net::SocketAddr;

use tokio::net::TcpStream;

/// An IPv4-mapped IPv6 address (from a dual-stack listener) as the IPv4 address.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The destination the client originally connected to, when the connection was
/// redirected to SafeGate on this machine; `None` otherwise (and off Linux).
pub(crate) fn lookup(stream: &TcpStream) -> Option<SocketAddr> {
    let local = stream.local_addr().ok()?;
    let (original, local) = (canonical(translated(stream, local)?), canonical(local));
    // The tracker reports untranslated connections with their own destination.
    (original != local).then_some(original)
}

#[cfg(target_os = "linux")]
fn translated(stream: &TcpStream, local: SocketAddr) -> Option<SocketAddr> {
    use rustix::net::sockopt::{ip_original_dst, ipv6_original_dst};

    let ipv4 = || ip_original_dst(stream).ok().map(SocketAddr::V4);
    let ipv6 = || ipv6_original_dst(stream).ok().map(SocketAddr::V6);
    match local {
        SocketAddr::V4(_) => ipv4(),
        // An IPv4 client on a dual-stack socket is tracked as IPv4.
        SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_some() => ipv4().or_else(ipv6),
        SocketAddr::V6(_) => ipv6(),
    }
}

#[cfg(not(target_os = "linux"))]
fn translated(_stream: &TcpStream, _local: SocketAddr) -> Option<SocketAddr> {
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// A direct connection was not redirected: no original destination, whether or
    /// not the kernel tracks connections.
    #[tokio::test]
    async fn a_direct_connection_has_none() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert_eq!(lookup(&accepted), None);
        drop(client);
    }

    #[test]
    fn mapped_addresses_compare_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:80".parse().unwrap();
        let plain: SocketAddr = "192.0.2.1:80".parse().unwrap();
        assert_eq!(canonical(mapped), plain);
    }
}
