//! Which upstream addresses clients may reach through the proxy.
//!
//! Checked on every resolved address before connecting (so DNS answers cannot point a
//! client at the proxy's own admin interface): the proxy's own listeners are always
//! refused (no loops); loopback, link-local, unspecified and multicast addresses are
//! refused unless `upstream.allow_loopback`; configured networks are refused always.
//! Private ranges pass by default because school intranets live there.

use std::net::{IpAddr, SocketAddr, UdpSocket};

use ipnet::IpNet;

/// Why a destination was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The destination is one of SafeGate's own listeners.
    #[error("{0} is SafeGate itself (the request would loop)")]
    OwnListener(SocketAddr),
    /// Loopback, link-local, unspecified or multicast address.
    #[error("{0} is a loopback, link-local or otherwise local address")]
    LocalAddress(IpAddr),
    /// Inside a network listed in `upstream.deny_networks`.
    #[error("{ip} is in the denied network {network}")]
    DeniedNetwork {
        /// The refused address.
        ip: IpAddr,
        /// The configured network that contains it.
        network: IpNet,
    },
}

/// The address rules; immutable once the listeners are bound.
#[derive(Debug, Clone)]
pub struct DestinationGuard {
    allow_loopback: bool,
    deny_networks: Vec<IpNet>,
    own_listeners: Vec<SocketAddr>,
}

impl DestinationGuard {
    /// Rules for the given configuration and the addresses SafeGate listens on.
    pub fn new(
        allow_loopback: bool,
        deny_networks: Vec<IpNet>,
        own_listeners: Vec<SocketAddr>,
    ) -> Self {
        Self {
            allow_loopback,
            deny_networks,
            own_listeners,
        }
    }

    /// `Ok` when a client may be connected to `addr`.
    pub fn check(&self, addr: SocketAddr) -> Result<(), Refusal> {
        let ip = addr.ip().to_canonical();
        if self.is_own_listener(ip, addr.port()) {
            return Err(Refusal::OwnListener(addr));
        }
        if !self.allow_loopback && is_local_only(ip) {
            return Err(Refusal::LocalAddress(ip));
        }
        if let Some(network) = self.deny_networks.iter().find(|net| net.contains(&ip)) {
            return Err(Refusal::DeniedNetwork {
                ip,
                network: *network,
            });
        }
        Ok(())
    }

    fn is_own_listener(&self, ip: IpAddr, port: u16) -> bool {
        self.own_listeners.iter().any(|listener| {
            listener.port() == port
                && (listener.ip().to_canonical() == ip
                    || (listener.ip().is_unspecified() && is_this_host(ip)))
        })
    }
}

/// Addresses that only make sense on this machine or this link.
fn is_local_only(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unicast_link_local()
        }
    }
}

/// Whether `ip` belongs to one of this machine's interfaces: binding to it succeeds
/// only then. Called only when the port matches a wildcard listener.
fn is_this_host(ip: IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified() || UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse()
            .unwrap_or_else(|_| unreachable!("bad test address {text}"))
    }

    #[test]
    fn loopback_and_link_local_need_allow_loopback() {
        let strict = DestinationGuard::new(false, vec![], vec![]);
        for refused in [
            "127.0.0.1:80",
            "[::1]:80",
            "169.254.169.254:80",
            "0.0.0.0:80",
            "[::ffff:127.0.0.1]:80",
            "[fe80::1]:80",
        ] {
            assert!(
                matches!(strict.check(addr(refused)), Err(Refusal::LocalAddress(_))),
                "{refused} should be refused"
            );
        }
        assert!(
            strict.check(addr("10.1.2.3:80")).is_ok(),
            "private ranges are allowed"
        );
        assert!(strict.check(addr("93.184.215.14:443")).is_ok());
        let relaxed = DestinationGuard::new(true, vec![], vec![]);
        assert!(relaxed.check(addr("127.0.0.1:80")).is_ok());
    }

    #[test]
    fn own_listeners_are_refused_even_with_allow_loopback() {
        let guard = DestinationGuard::new(
            true,
            vec![],
            vec![addr("127.0.0.1:3128"), addr("0.0.0.0:9128")],
        );
        assert!(matches!(
            guard.check(addr("127.0.0.1:3128")),
            Err(Refusal::OwnListener(_))
        ));
        assert!(matches!(
            guard.check(addr("127.0.0.2:9128")),
            Err(Refusal::OwnListener(_))
        ));
        assert!(guard.check(addr("127.0.0.1:3129")).is_ok());
        assert!(
            guard.check(addr("192.0.2.10:3128")).is_ok(),
            "not this host, so not a loop"
        );
    }

    #[test]
    fn denied_networks_name_the_network() {
        let net: IpNet = "10.9.0.0/16".parse().unwrap_or_else(|_| unreachable!());
        let guard = DestinationGuard::new(false, vec![net], vec![]);
        assert_eq!(
            guard.check(addr("10.9.8.7:80")),
            Err(Refusal::DeniedNetwork {
                ip: "10.9.8.7".parse().unwrap_or_else(|_| unreachable!()),
                network: net
            })
        );
        assert!(guard.check(addr("10.10.0.1:80")).is_ok());
    }
}
