//! The `[proxy]`, `[upstream]`, `[pac]` and `[transparent]` sections of `safegate.toml`.
//!
//! Defaults live in the `Default` impls and nowhere else; `validate()` reports every
//! problem with the dotted key it belongs to, so the binary can print them all at once.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use safegate_config::{ConfigProblem, serialize_redacted};

/// `[proxy]`: the client-facing listener and its limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Address the explicit proxy listens on.
    pub listen: SocketAddr,
    /// Ports that CONNECT may open tunnels to.
    pub connect_ports: Vec<u16>,
    /// Ports that plain-HTTP requests may be forwarded to: ports (`80`) and inclusive
    /// ranges (`"1025-65535"`).
    pub http_ports: Vec<PortSpec>,
    /// Client connections served at once; further ones get a 503 and are closed.
    pub max_connections: usize,
    /// Client connections served at once from one client address (0: no limit);
    /// further ones get the same 503 as at `max_connections`. Open tunnels count.
    pub max_connections_per_client: usize,
    /// Largest request line plus headers, in bytes (bigger gets 431).
    pub max_header_bytes: usize,
    /// Most header fields in one request (more gets 431).
    pub max_headers: usize,
    /// Time a client has to send a whole request head once it started (408 after).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Time a client has to send the whole body of a request SafeGate reads itself
    /// (the review form, the portal log-in; 408 after).
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Time an idle keep-alive client connection is kept open.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Time a CONNECT tunnel may pass no byte in either direction before it is closed.
    #[serde(with = "humantime_serde")]
    pub tunnel_idle_timeout: Duration,
    /// Name this proxy gives itself in the `Via` header.
    pub via_pseudonym: String,
    /// On SIGTERM/SIGINT, time given to in-flight requests and tunnels to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Review requests one block-page form token may make in an hour (default 5,
    /// 1 to 1000); more get a 429.
    pub reviews_per_token_per_hour: u32,
    /// Review requests one client address may make in an hour (default 20, 1 to
    /// 100000); more get a 429.
    pub reviews_per_address_per_hour: u32,
    /// Load balancers (HAProxy with `send-proxy-v2`) whose connections start with a
    /// PROXY protocol header naming the real client; a connection from one of them
    /// without that header is refused. Empty: no header is read from anyone.
    pub proxy_protocol_from: Vec<IpNet>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3128)),
            connect_ports: vec![443],
            http_ports: squid_safe_ports(),
            max_connections: 4096,
            max_connections_per_client: 256,
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            header_read_timeout: Duration::from_secs(20),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
            tunnel_idle_timeout: Duration::from_secs(600),
            via_pseudonym: "safegate".to_owned(),
            shutdown_grace: Duration::from_secs(15),
            reviews_per_token_per_hour: 5,
            reviews_per_address_per_hour: 20,
            proxy_protocol_from: Vec::new(),
        }
    }
}

/// squid's default `Safe_ports` (squid.conf.default): the ports web clients have a
/// reason to reach by plain HTTP. Not in it: 22 (ssh), 25 (smtp), 110/143 (mail) and
/// the other well-known service ports below 1025.
fn squid_safe_ports() -> Vec<PortSpec> {
    let mut ports: Vec<PortSpec> = [21, 70, 80, 210, 280, 443, 488, 591, 777]
        .into_iter()
        .map(PortSpec::Port)
        .collect();
    ports.push(PortSpec::Range("1025-65535".to_owned()));
    ports
}

/// One entry of `proxy.http_ports`: a port or an inclusive range of ports. Kept as
/// written so that `validate()` can report a bad one with its key; read it with
/// [`PortSpec::bounds`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortSpec {
    /// One port: `80`.
    Port(i64),
    /// A range, both ends included: `"1025-65535"` (or one port as text, `"8080"`).
    Range(String),
}

impl PortSpec {
    /// The first and last port, or why the entry is not a port or a range of them.
    pub fn bounds(&self) -> Result<(u16, u16), String> {
        let port = |text: &str, value: i64| match u16::try_from(value) {
            Ok(port) if port > 0 => Ok(port),
            _ => Err(format!("{text} is not a port (1 to 65535)")),
        };
        let parse = |text: &str| {
            let text = text.trim();
            let value = text
                .parse::<i64>()
                .map_err(|_| format!("`{text}` is not a port (1 to 65535)"))?;
            port(text, value)
        };
        match self {
            PortSpec::Port(value) => port(&value.to_string(), *value).map(|p| (p, p)),
            PortSpec::Range(text) => {
                let (first, last) = match text.split_once('-') {
                    Some((first, last)) => (parse(first)?, parse(last)?),
                    None => {
                        let port = parse(text)?;
                        (port, port)
                    }
                };
                if first > last {
                    return Err(format!("`{text}`: the range ends before it starts"));
                }
                Ok((first, last))
            }
        }
    }
}

/// The ports of `proxy.http_ports`, for the request path: a plain-HTTP request goes
/// only to a port in one of these ranges.
#[derive(Debug, Clone, Default)]
pub struct PortSet(Vec<(u16, u16)>);

impl PortSet {
    /// The valid entries of `specs` (`validate()` has refused a configuration with
    /// invalid ones).
    pub fn of(specs: &[PortSpec]) -> Self {
        PortSet(specs.iter().filter_map(|s| s.bounds().ok()).collect())
    }

    /// Whether `port` is one of the set's.
    pub fn contains(&self, port: u16) -> bool {
        self.0
            .iter()
            .any(|&(first, last)| (first..=last).contains(&port))
    }
}

/// hyper refuses read buffers smaller than this, so it is our floor for `max_header_bytes`.
pub const MIN_HEADER_BYTES: usize = 8192;

impl ProxyConfig {
    /// Every problem in this section.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if self.connect_ports.is_empty() {
            problems.push(ConfigProblem::new(
                "proxy.connect_ports",
                "must list at least one port (443 lets browsers reach HTTPS sites)",
            ));
        }
        if self.connect_ports.contains(&0) {
            problems.push(ConfigProblem::new("proxy.connect_ports", "0 is not a port"));
        }
        if self.http_ports.is_empty() {
            problems.push(ConfigProblem::new(
                "proxy.http_ports",
                "must list at least one port (80 lets browsers reach http:// sites)",
            ));
        }
        for spec in &self.http_ports {
            if let Err(problem) = spec.bounds() {
                problems.push(ConfigProblem::new("proxy.http_ports", problem));
            }
        }
        if self.max_connections == 0 {
            problems.push(ConfigProblem::new(
                "proxy.max_connections",
                "must be at least 1",
            ));
        }
        if !(MIN_HEADER_BYTES..=1024 * 1024).contains(&self.max_header_bytes) {
            problems.push(ConfigProblem::new(
                "proxy.max_header_bytes",
                format!("must be between {MIN_HEADER_BYTES} and 1048576 bytes"),
            ));
        }
        for (key, value, max) in [
            (
                "proxy.reviews_per_token_per_hour",
                self.reviews_per_token_per_hour,
                1_000,
            ),
            (
                "proxy.reviews_per_address_per_hour",
                self.reviews_per_address_per_hour,
                100_000,
            ),
        ] {
            if !(1..=max).contains(&value) {
                problems.push(ConfigProblem::new(
                    key,
                    format!("must be between 1 and {max} (review requests an hour)"),
                ));
            }
        }
        if !(1..=10_000).contains(&self.max_headers) {
            problems.push(ConfigProblem::new(
                "proxy.max_headers",
                "must be between 1 and 10000",
            ));
        }
        for (key, value) in [
            ("proxy.header_read_timeout", self.header_read_timeout),
            ("proxy.body_read_timeout", self.body_read_timeout),
            ("proxy.idle_timeout", self.idle_timeout),
            ("proxy.tunnel_idle_timeout", self.tunnel_idle_timeout),
        ] {
            if value.is_zero() {
                problems.push(ConfigProblem::new(key, "must be longer than 0s"));
            }
        }
        if !is_token(&self.via_pseudonym) {
            problems.push(ConfigProblem::new(
                "proxy.via_pseudonym",
                "must be one word of letters, digits, '.', '-' or '_'",
            ));
        }
        problems
    }
}

fn is_token(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// `[upstream]`: how SafeGate reaches origin servers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Let clients reach loopback and link-local addresses (tests only: it exposes the
    /// admin interface and local services to every pupil).
    pub allow_loopback: bool,
    /// Networks clients may never reach through the proxy (private ranges are allowed
    /// otherwise, for school intranets).
    pub deny_networks: Vec<IpNet>,
    /// Time to establish a TCP connection to an origin.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time an origin has to start its response once the request is sent (504 after).
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
    /// Time an idle pooled origin connection is kept for reuse.
    #[serde(with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    /// Idle pooled connections kept per origin: a number, or `"auto"` (the default):
    /// `proxy.max_connections`, so that every connection a burst of clients opened to
    /// one site can be reused instead of closed and opened again.
    pub pool_max_idle_per_host: PoolSize,
    /// Name resolution.
    pub dns: DnsConfig,
    /// PEM files of CA certificates trusted towards origins of decrypted sites, besides
    /// the web's usual roots (a school's internal CA; the tests' origin CA).
    pub extra_roots: Vec<std::path::PathBuf>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            allow_loopback: false,
            deny_networks: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(60),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: PoolSize::default(),
            dns: DnsConfig::default(),
            extra_roots: Vec::new(),
        }
    }
}

impl UpstreamConfig {
    /// Every problem in this section.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        for (key, value) in [
            ("upstream.connect_timeout", self.connect_timeout),
            ("upstream.response_timeout", self.response_timeout),
            ("upstream.dns.timeout", self.dns.timeout),
        ] {
            if value.is_zero() {
                problems.push(ConfigProblem::new(key, "must be longer than 0s"));
            }
        }
        if let Err(problem) = self.pool_max_idle_per_host.resolve(1) {
            problems.push(ConfigProblem::new(
                "upstream.pool_max_idle_per_host",
                problem,
            ));
        }
        if self.dns.cache_size == 0 {
            problems.push(ConfigProblem::new(
                "upstream.dns.cache_size",
                "must be at least 1",
            ));
        }
        problems
    }
}

/// `upstream.pool_max_idle_per_host`: a count, or `"auto"`. Kept as written so that
/// `validate()` can report a bad one; read it with [`PoolSize::resolve`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PoolSize {
    /// A fixed number of idle connections per site (0 turns reuse off).
    Count(i64),
    /// `"auto"`: as many as `proxy.max_connections`.
    Word(String),
}

impl Default for PoolSize {
    fn default() -> Self {
        PoolSize::Word("auto".to_owned())
    }
}

impl PoolSize {
    /// The number of idle connections kept per site for a proxy taking at most
    /// `max_connections` clients, or why the setting is neither a count nor "auto".
    pub fn resolve(&self, max_connections: usize) -> Result<usize, String> {
        match self {
            PoolSize::Count(count) => usize::try_from(*count)
                .map_err(|_| format!("{count} is not a number of connections (0 or more)")),
            PoolSize::Word(word) if word == "auto" => Ok(max_connections),
            PoolSize::Word(word) => Err(format!(
                "`{word}` is neither a number of connections nor \"auto\""
            )),
        }
    }
}

/// `[upstream.dns]`: the resolver (hickory, with its cache).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    /// DNS servers to ask (`"ip"` or `"ip:port"`); empty means the system's resolv.conf.
    pub servers: Vec<DnsServer>,
    /// Time for one DNS query before trying again or giving up.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Answers kept in the resolver's cache.
    pub cache_size: u64,
    /// Which address families to look up, in preference order.
    pub ip_strategy: IpStrategy,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            timeout: Duration::from_secs(3),
            cache_size: 8192,
            ip_strategy: IpStrategy::Ipv4AndIpv6,
        }
    }
}

/// A DNS server address; the port defaults to 53.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DnsServer(pub SocketAddr);

impl TryFrom<String> for DnsServer {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        if let Ok(addr) = value.parse::<SocketAddr>() {
            return Ok(Self(addr));
        }
        value
            .parse::<std::net::IpAddr>()
            .map(|ip| Self(SocketAddr::new(ip, 53)))
            .map_err(|_| format!("`{value}` is not an IP address or IP:port"))
    }
}

impl From<DnsServer> for String {
    fn from(value: DnsServer) -> Self {
        value.0.to_string()
    }
}

/// Address families looked up for an origin host name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IpStrategy {
    /// A and AAAA in parallel, IPv4 addresses tried first.
    Ipv4AndIpv6,
    /// A and AAAA in parallel, IPv6 addresses tried first.
    Ipv6AndIpv4,
    /// Only A records.
    Ipv4Only,
    /// Only AAAA records.
    Ipv6Only,
}

/// `[pac]`: the proxy auto-configuration file served at `/proxy.pac` and `/wpad.dat`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PacConfig {
    /// `host:port` that browsers should use as their proxy; empty means the address the
    /// browser used to fetch the PAC file (with the proxy's port).
    pub proxy: String,
    /// Domains (and their subdomains) that browsers reach directly, e.g. the intranet.
    pub direct_domains: Vec<String>,
    /// Networks that browsers reach directly when the host is an IP address in them.
    pub direct_networks: Vec<IpNet>,
    /// SafeGate's own other listeners (the admin interface), which browsers must reach
    /// directly: set when the proxy starts, not configured.
    #[serde(skip)]
    pub direct_listeners: Vec<std::net::SocketAddr>,
}

impl PacConfig {
    /// Every problem in this section.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if !self.proxy.is_empty() && !is_host_port(&self.proxy) {
            problems.push(ConfigProblem::new(
                "pac.proxy",
                format!("`{}` is not host:port", self.proxy),
            ));
        }
        for domain in &self.direct_domains {
            let bare = domain.trim_start_matches('.');
            if bare.is_empty()
                || !bare
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
            {
                problems.push(ConfigProblem::new(
                    "pac.direct_domains",
                    format!("`{domain}` is not a domain name"),
                ));
            }
        }
        problems
    }
}

fn is_host_port(value: &str) -> bool {
    let Some((host, port)) = value.rsplit_once(':') else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    port.parse::<u16>().is_ok_and(|p| p != 0)
        && !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
}

/// `[transparent]`: listeners for traffic the school router redirects to SafeGate
/// (ports 80 and 443 with iptables `REDIRECT`, or `DNAT` on this machine). Both are off
/// unless given an address.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransparentConfig {
    /// Where redirected plain HTTP (port 80) arrives; `None` (`""` in the file) is off.
    #[serde(with = "optional_addr")]
    pub http_listen: Option<SocketAddr>,
    /// Where redirected HTTPS (port 443) arrives; `None` (`""` in the file) is off.
    #[serde(with = "optional_addr")]
    pub https_listen: Option<SocketAddr>,
}

impl TransparentConfig {
    /// Every problem in this section.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if let (Some(http), Some(https)) = (self.http_listen, self.https_listen)
            && http == https
            && http.port() != 0
        {
            problems.push(ConfigProblem::new(
                "transparent.https_listen",
                "must differ from transparent.http_listen",
            ));
        }
        problems
    }

    /// The configured listeners with their keys, for checks against other sections.
    pub fn listeners(&self) -> impl Iterator<Item = (&'static str, SocketAddr)> {
        [
            ("transparent.http_listen", self.http_listen),
            ("transparent.https_listen", self.https_listen),
        ]
        .into_iter()
        .filter_map(|(key, addr)| addr.map(|addr| (key, addr)))
    }
}

/// An optional socket address written as a string, `""` meaning none.
mod optional_addr {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &Option<SocketAddr>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(addr) => serializer.collect_str(addr),
            None => serializer.serialize_str(""),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.trim().is_empty() {
            return Ok(None);
        }
        text.trim().parse().map(Some).map_err(|_| {
            serde::de::Error::custom(format!(
                "`{text}` is not an address like \"0.0.0.0:3129\" (or \"\" for off)"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(ProxyConfig::default().validate().is_empty());
        assert!(UpstreamConfig::default().validate().is_empty());
        assert!(PacConfig::default().validate().is_empty());
    }

    #[test]
    fn every_problem_names_its_key() {
        let proxy = ProxyConfig {
            connect_ports: vec![],
            max_header_bytes: 10,
            idle_timeout: Duration::ZERO,
            via_pseudonym: "two words".into(),
            reviews_per_token_per_hour: 0,
            reviews_per_address_per_hour: 100_001,
            ..ProxyConfig::default()
        };
        let keys: Vec<_> = proxy.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "proxy.connect_ports",
                "proxy.max_header_bytes",
                "proxy.reviews_per_token_per_hour",
                "proxy.reviews_per_address_per_hour",
                "proxy.idle_timeout",
                "proxy.via_pseudonym"
            ]
        );
    }

    #[test]
    fn the_idle_pool_is_sized_from_the_connection_limit_unless_set() {
        let automatic = UpstreamConfig::default().pool_max_idle_per_host;
        assert_eq!(automatic.resolve(4096), Ok(4096));
        assert_eq!(PoolSize::Count(16).resolve(4096), Ok(16));
        for bad in [PoolSize::Count(-1), PoolSize::Word("lots".into())] {
            let upstream = UpstreamConfig {
                pool_max_idle_per_host: bad,
                ..UpstreamConfig::default()
            };
            let problems = upstream.validate();
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert_eq!(problems[0].key, "upstream.pool_max_idle_per_host");
        }
    }

    #[test]
    fn http_ports_take_ports_and_ranges() {
        let set = PortSet::of(&ProxyConfig::default().http_ports);
        for port in [80, 443, 21, 70, 210, 280, 488, 591, 777, 1025, 8080, 65535] {
            assert!(set.contains(port), "{port}");
        }
        for port in [22, 23, 25, 110, 143, 445, 587, 993, 1024] {
            assert!(!set.contains(port), "{port}");
        }
        let proxy = ProxyConfig {
            http_ports: vec![
                PortSpec::Port(80),
                PortSpec::Range(" 8000 - 8099 ".into()),
                PortSpec::Range("8443".into()),
            ],
            ..ProxyConfig::default()
        };
        assert!(proxy.validate().is_empty());
        let set = PortSet::of(&proxy.http_ports);
        assert!(set.contains(80) && set.contains(8000) && set.contains(8099));
        assert!(set.contains(8443) && !set.contains(8100) && !set.contains(443));
        for bad in [
            PortSpec::Port(0),
            PortSpec::Port(65536),
            PortSpec::Range("9000-8000".into()),
            PortSpec::Range("http".into()),
            PortSpec::Range("1-".into()),
        ] {
            let proxy = ProxyConfig {
                http_ports: vec![bad.clone()],
                ..ProxyConfig::default()
            };
            let keys: Vec<_> = proxy.validate().into_iter().map(|p| p.key).collect();
            assert_eq!(keys, ["proxy.http_ports"], "{bad:?}");
        }
        let empty = ProxyConfig {
            http_ports: vec![],
            ..ProxyConfig::default()
        };
        assert_eq!(empty.validate().len(), 1);
    }

    #[test]
    fn dns_server_port_defaults_to_53() {
        let server = DnsServer::try_from("192.0.2.1".to_owned()).ok();
        assert_eq!(
            server,
            Some(DnsServer(
                "192.0.2.1:53".parse().unwrap_or_else(|_| unreachable!())
            ))
        );
        assert!(DnsServer::try_from("resolver".to_owned()).is_err());
    }

    #[test]
    fn transparent_listeners_must_differ() {
        let addr = |text: &str| text.parse::<SocketAddr>().ok();
        let mut transparent = TransparentConfig::default();
        assert!(transparent.validate().is_empty());
        assert_eq!(transparent.listeners().count(), 0);
        transparent.http_listen = addr("0.0.0.0:3129");
        transparent.https_listen = addr("0.0.0.0:3129");
        let keys: Vec<_> = transparent.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["transparent.https_listen"]);
        transparent.https_listen = addr("0.0.0.0:3130");
        assert!(transparent.validate().is_empty());
        assert_eq!(transparent.listeners().count(), 2);
    }

    #[test]
    fn pac_proxy_must_be_host_and_port() {
        let mut pac = PacConfig {
            proxy: "proxy.school.lan:3128".into(),
            ..PacConfig::default()
        };
        assert!(pac.validate().is_empty());
        pac.proxy = "proxy.school.lan".into();
        assert_eq!(pac.validate().len(), 1);
    }
}
