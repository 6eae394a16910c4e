//! Name resolution for origin hosts: hickory-resolver with its answer cache, set up
//! from the system's resolv.conf or from `upstream.dns.servers`, counting cache hits
//! and misses for `/metrics`.
//!
//! hickory keeps no cache statistics of its own that SafeGate can read, but an answer
//! from its cache (or from the hosts file) is ready the first time the lookup is
//! polled, while a query has to wait for the network: [`Resolver::lookup_ip`] counts
//! a lookup that never waited as a hit and one that did as a miss.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig};
use hickory_resolver::lookup_ip::LookupIp;
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;

use crate::config::{DnsConfig, IpStrategy};
use crate::error::ProxyError;
use crate::metrics::DnsCounters;

/// hickory's resolver, counting cache hits and misses.
#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
    counters: Arc<DnsCounters>,
}

impl Resolver {
    /// Resolves `host` to its addresses (see [`TokioResolver::lookup_ip`]).
    pub async fn lookup_ip(&self, host: &str) -> Result<LookupIp, NetError> {
        let mut lookup = std::pin::pin!(self.inner.lookup_ip(host));
        let mut waited = false;
        let result = std::future::poll_fn(|cx| match lookup.as_mut().poll(cx) {
            Poll::Pending => {
                waited = true;
                Poll::Pending
            }
            ready => ready,
        })
        .await;
        let counter = if waited {
            &self.counters.misses
        } else {
            &self.counters.hits
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }
}

/// Builds the resolver shared by every upstream connection; it counts into `counters`.
pub fn build_resolver(
    config: &DnsConfig,
    counters: Arc<DnsCounters>,
) -> Result<Resolver, ProxyError> {
    let mut builder = if config.servers.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| ProxyError::Dns(e.to_string()))?
    } else {
        let servers = config
            .servers
            .iter()
            .map(|server| {
                let mut name_server = NameServerConfig::udp_and_tcp(server.0.ip());
                for connection in &mut name_server.connections {
                    connection.port = server.0.port();
                }
                name_server
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
    };
    let options = builder.options_mut();
    options.timeout = config.timeout;
    options.attempts = 2;
    options.cache_size = config.cache_size;
    options.ip_strategy = match config.ip_strategy {
        IpStrategy::Ipv4AndIpv6 => LookupIpStrategy::Ipv4AndIpv6,
        IpStrategy::Ipv6AndIpv4 => LookupIpStrategy::Ipv6AndIpv4,
        IpStrategy::Ipv4Only => LookupIpStrategy::Ipv4Only,
        IpStrategy::Ipv6Only => LookupIpStrategy::Ipv6Only,
    };
    let inner = builder
        .build()
        .map_err(|e| ProxyError::Dns(e.to_string()))?;
    Ok(Resolver { inner, counters })
}
