//! Name resolution for origin hosts: hickory-resolver with its answer cache, set up
//! from the system's resolv.conf or from `upstream.dns.servers`.

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

use crate::config::{DnsConfig, IpStrategy};
use crate::error::ProxyError;

/// Builds the resolver shared by every upstream connection.
pub fn build_resolver(config: &DnsConfig) -> Result<TokioResolver, ProxyError> {
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
    builder.build().map_err(|e| ProxyError::Dns(e.to_string()))
}
