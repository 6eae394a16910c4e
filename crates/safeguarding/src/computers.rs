//! Which computer: a client address turned into the name people know it by, for
//! alerts ("year6 on ICT-PC07 (10.0.3.57)"). Sources, first that knows wins:
//! the `[devices]` map in `safegate.toml`, a DHCP leases file (dnsmasq's one line per
//! lease, or ISC dhcpd's `lease { ... }` blocks), then reverse DNS.
//!
//! Only the alert engine asks, and only when it raises an alert, so none of this is
//! on the proxy's path. The leases file is read again when its modification time
//! changes (checked at most every [`LEASES_CHECK`]); reverse DNS answers, names and
//! "no name" alike, are cached for [`DNS_TTL`] in a cache of at most [`DNS_CACHE`]
//! addresses, and each look-up waits at most the configured deadline.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use serde::{Deserialize, Serialize};

/// How often the leases file's modification time is looked at.
pub const LEASES_CHECK: Duration = Duration::from_secs(5);
/// How long a reverse DNS answer is kept.
pub const DNS_TTL: Duration = Duration::from_secs(600);
/// Most addresses kept in the reverse DNS cache (beyond it, it is emptied).
pub const DNS_CACHE: usize = 4096;

/// `[devices]` in `safegate.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DevicesConfig {
    /// Address → computer name (`"10.0.3.57" = "ICT-PC07"`).
    pub names: BTreeMap<IpAddr, String>,
    /// A DHCP leases file (dnsmasq or ISC dhcpd), read when it changes.
    pub leases: Option<PathBuf>,
    /// Ask DNS for the names of other addresses (PTR records).
    pub reverse_dns: bool,
    /// DNS servers for those questions (`"10.0.0.1:53"`); empty: the system's.
    pub dns_servers: Vec<std::net::SocketAddr>,
    /// Longest wait for one reverse DNS answer.
    #[serde(with = "humantime_serde")]
    pub dns_timeout: Duration,
}

impl Default for DevicesConfig {
    /// No names, no leases file, no reverse DNS (a one-second deadline when on).
    fn default() -> Self {
        Self {
            names: BTreeMap::new(),
            leases: None,
            reverse_dns: false,
            dns_servers: Vec::new(),
            dns_timeout: Duration::from_secs(1),
        }
    }
}

impl DevicesConfig {
    /// Whether any source of names is configured.
    pub fn any(&self) -> bool {
        !self.names.is_empty() || self.leases.is_some() || self.reverse_dns
    }
}

/// The leases file as last read.
#[derive(Default)]
struct Leases {
    checked: Option<Instant>,
    modified: Option<SystemTime>,
    names: HashMap<IpAddr, String>,
}

/// Resolves client addresses to computer names (see the module documentation).
pub struct ComputerNames {
    names: BTreeMap<IpAddr, String>,
    leases_path: Option<PathBuf>,
    leases: Mutex<Leases>,
    dns: Option<(TokioResolver, Duration, tokio::runtime::Handle)>,
    cache: Mutex<HashMap<IpAddr, (Option<String>, Instant)>>,
}

impl ComputerNames {
    /// Builds the resolver; reverse DNS needs a Tokio runtime (`runtime`).
    pub fn new(config: &DevicesConfig, runtime: Option<tokio::runtime::Handle>) -> Self {
        let dns = match (config.reverse_dns, runtime) {
            (true, Some(runtime)) => {
                build_resolver(config).map(|r| (r, config.dns_timeout, runtime))
            }
            _ => None,
        };
        Self {
            names: config.names.clone(),
            leases_path: config.leases.clone(),
            leases: Mutex::new(Leases::default()),
            dns,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The computer's name, if any source knows it. Blocks for at most the reverse
    /// DNS deadline: call it off the proxy's path (the alert engine's thread).
    pub fn name(&self, address: IpAddr) -> Option<String> {
        if let Some(name) = self.names.get(&address) {
            return Some(name.clone());
        }
        if let Some(name) = self.lease_name(address) {
            return Some(name);
        }
        self.dns_name(address)
    }

    fn lease_name(&self, address: IpAddr) -> Option<String> {
        let path = self.leases_path.as_deref()?;
        let mut leases = self.leases.lock().ok()?;
        let due = leases.checked.is_none_or(|at| at.elapsed() >= LEASES_CHECK);
        if due {
            leases.checked = Some(Instant::now());
            let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            if modified != leases.modified {
                leases.modified = modified;
                leases.names = read_leases(path);
            }
        }
        leases.names.get(&address).cloned()
    }

    fn dns_name(&self, address: IpAddr) -> Option<String> {
        let (resolver, deadline, runtime) = self.dns.as_ref()?;
        if let Ok(cache) = self.cache.lock()
            && let Some((name, at)) = cache.get(&address)
            && at.elapsed() < DNS_TTL
        {
            return name.clone();
        }
        let name = runtime.block_on(reverse_name(resolver, address, *deadline));
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= DNS_CACHE {
                cache.clear();
            }
            cache.insert(address, (name.clone(), Instant::now()));
        }
        name
    }
}

/// The PTR name of `address`, waiting at most `deadline`; none on any failure.
pub(crate) async fn reverse_name(
    resolver: &TokioResolver,
    address: IpAddr,
    deadline: Duration,
) -> Option<String> {
    let answer = tokio::time::timeout(deadline, resolver.reverse_lookup(address)).await;
    match answer {
        Ok(Ok(lookup)) => lookup
            .answers()
            .iter()
            .find_map(|record| match &record.data {
                hickory_resolver::proto::rr::RData::PTR(ptr) => Some(ptr.0.to_utf8()),
                _ => None,
            })
            .map(|name| short_name(&name)),
        _ => None,
    }
}

/// `ict-pc07.school.lan.` → `ict-pc07.school.lan`.
fn short_name(name: &str) -> String {
    name.trim_end_matches('.').to_owned()
}

pub(crate) fn build_resolver(config: &DevicesConfig) -> Option<TokioResolver> {
    let mut builder = if config.dns_servers.is_empty() {
        TokioResolver::builder_tokio().ok()?
    } else {
        let servers = config
            .dns_servers
            .iter()
            .map(|server| {
                let mut name_server = NameServerConfig::udp_and_tcp(server.ip());
                for connection in &mut name_server.connections {
                    connection.port = server.port();
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
    options.timeout = config.dns_timeout;
    options.attempts = 1;
    match builder.build() {
        Ok(resolver) => Some(resolver),
        Err(error) => {
            tracing::warn!(%error, "reverse DNS for computer names is off: cannot set up a resolver");
            None
        }
    }
}

/// Reads a leases file (dnsmasq or ISC dhcpd); an unreadable file gives no names.
pub fn read_leases(path: &Path) -> HashMap<IpAddr, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_leases(&text),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot read the DHCP leases file");
            HashMap::new()
        }
    }
}

/// Parses dnsmasq lines (`expiry mac ip hostname client-id`, `*` for no name) and ISC
/// dhcpd blocks (`lease 10.0.3.57 { ... client-hostname "ICT-PC07"; }`); the last
/// lease of an address wins, as in the file.
pub fn parse_leases(text: &str) -> HashMap<IpAddr, String> {
    let mut names = HashMap::new();
    let mut block: Option<IpAddr> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("lease ") {
            block = rest
                .split_whitespace()
                .next()
                .and_then(|ip| ip.parse().ok());
            continue;
        }
        if let Some(address) = block {
            if line.starts_with('}') {
                block = None;
            } else if let Some(name) = line.strip_prefix("client-hostname ") {
                let name = name.trim_end_matches(';').trim().trim_matches('"');
                if !name.is_empty() {
                    names.insert(address, name.to_owned());
                }
            }
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() >= 4
            && fields[0].bytes().all(|b| b.is_ascii_digit())
            && let Ok(address) = fields[2].parse::<IpAddr>()
            && fields[3] != "*"
        {
            names.insert(address, fields[3].to_owned());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn dnsmasq_and_isc_leases_are_read() {
        let dnsmasq = "1765100000 aa:bb:cc:dd:ee:01 10.0.3.57 ICT-PC07 01:aa:bb:cc:dd:ee:01\n\
                       1765100000 aa:bb:cc:dd:ee:02 10.0.3.58 * *\n";
        let names = parse_leases(dnsmasq);
        assert_eq!(
            names.get(&"10.0.3.57".parse().unwrap()).unwrap(),
            "ICT-PC07"
        );
        assert!(!names.contains_key(&"10.0.3.58".parse().unwrap()));
        let isc = "# The format of this file is documented in the dhcpd.leases(5) manual page.\n\
                   lease 10.0.4.12 {\n  starts 4 2026/12/03 08:01:02;\n  hardware ethernet 00:11:22:33:44:55;\n  \
                   client-hostname \"LIB-LAPTOP3\";\n}\nlease 10.0.4.13 {\n  binding state free;\n}\n";
        let names = parse_leases(isc);
        assert_eq!(
            names.get(&"10.0.4.12".parse().unwrap()).unwrap(),
            "LIB-LAPTOP3"
        );
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn the_devices_map_wins_and_the_leases_file_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dnsmasq.leases");
        std::fs::write(
            &path,
            "1 aa:bb 10.0.3.57 FROM-LEASE x\n1 aa:cc 10.0.3.60 PC60 x\n",
        )
        .unwrap();
        let mut config = DevicesConfig::default();
        config
            .names
            .insert("10.0.3.57".parse().unwrap(), "ICT-PC07".into());
        config.leases = Some(path.clone());
        let names = ComputerNames::new(&config, None);
        assert_eq!(
            names.name("10.0.3.57".parse().unwrap()).unwrap(),
            "ICT-PC07"
        );
        assert_eq!(names.name("10.0.3.60".parse().unwrap()).unwrap(), "PC60");
        assert_eq!(names.name("10.0.3.61".parse().unwrap()), None);
    }
}
