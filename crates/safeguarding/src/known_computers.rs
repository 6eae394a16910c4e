//! Computer names the proxy stamps on visit records without waiting: an immutable
//! table (address → name, or "no name") swapped in by a background task, so a request
//! pays one hash look-up and never touches the leases file or DNS.
//!
//! The task builds the table from the `[devices]` map, the DHCP leases file (read
//! again when it changes) and reverse DNS answers. An address the table does not know
//! is queued for the task (a bounded queue; when full, the address is asked about
//! again on a later request); its first records go without a name and the next ones
//! carry it. Reverse DNS answers are kept for [`DNS_TTL`], at most [`DNS_CACHE`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::computers::{DNS_CACHE, DNS_TTL, DevicesConfig, LEASES_CHECK, read_leases};

/// Addresses waiting for a reverse DNS look-up, at most.
const MISS_QUEUE: usize = 256;
/// Look-ups made together, at most.
const LOOKUP_BATCH: usize = 32;

/// What the table says of one address: its name, or `None` for "asked, no name".
type Table = HashMap<IpAddr, Option<Arc<str>>>;

/// The names known now (see the module documentation).
pub struct KnownComputers {
    table: ArcSwap<Table>,
    misses: Option<mpsc::Sender<IpAddr>>,
}

impl KnownComputers {
    /// The computer's name, if known now. Never waits: an unknown address is queued
    /// for reverse DNS (when it is on) and named on later requests.
    pub fn name(&self, address: IpAddr) -> Option<Arc<str>> {
        if let Some(known) = self.table.load().get(&address) {
            return known.clone();
        }
        if let Some(misses) = &self.misses {
            // Full queue: the address is asked about again on its next request.
            let _ = misses.try_send(address);
        }
        None
    }

    /// Starts the task that keeps the table current (it ends with `shutdown`); needs
    /// a Tokio runtime.
    pub fn start(config: &DevicesConfig, shutdown: CancellationToken) -> Arc<Self> {
        let resolver = if config.reverse_dns {
            crate::computers::build_resolver(config)
        } else {
            None
        };
        let (misses, queue) = match resolver {
            Some(_) => {
                let (sender, receiver) = mpsc::channel(MISS_QUEUE);
                (Some(sender), Some(receiver))
            }
            None => (None, None),
        };
        let mut sources = Sources {
            config: config.clone(),
            leases: HashMap::new(),
            leases_modified: None,
            leases_read: false,
            dns: HashMap::new(),
            resolver: resolver.map(|resolver| (resolver, config.dns_timeout)),
        };
        sources.leases_changed();
        let known = Arc::new(Self {
            table: ArcSwap::from_pointee(sources.table()),
            misses,
        });
        tokio::spawn(keep_current(Arc::clone(&known), sources, queue, shutdown));
        known
    }
}

/// Where names come from, as the task last read them.
struct Sources {
    config: DevicesConfig,
    leases: HashMap<IpAddr, String>,
    leases_modified: Option<SystemTime>,
    leases_read: bool,
    dns: HashMap<IpAddr, (Option<Arc<str>>, Instant)>,
    resolver: Option<(hickory_resolver::TokioResolver, std::time::Duration)>,
}

impl Sources {
    /// Reads the leases file again if it changed; says whether it did. Blocking: for
    /// the start, before the runtime's workers serve requests.
    fn leases_changed(&mut self) -> bool {
        let Some(path) = self.config.leases.as_deref() else {
            return false;
        };
        let read = fresh_leases(path, self.last_read());
        self.take(read)
    }

    /// The same on the blocking pool, so that a large or slow leases file never holds
    /// up a runtime worker (which also serves requests).
    async fn leases_changed_off_runtime(&mut self) -> bool {
        let Some(path) = self.config.leases.clone() else {
            return false;
        };
        let last = self.last_read();
        let read = tokio::task::spawn_blocking(move || fresh_leases(&path, last)).await;
        self.take(read.ok().flatten())
    }

    /// When the leases file last read had been modified (`None`: not read yet).
    fn last_read(&self) -> Option<Option<SystemTime>> {
        self.leases_read.then_some(self.leases_modified)
    }

    /// Keeps a fresh reading; says whether there was one.
    fn take(&mut self, read: Option<(Option<SystemTime>, HashMap<IpAddr, String>)>) -> bool {
        let Some((modified, leases)) = read else {
            return false;
        };
        self.leases_read = true;
        self.leases_modified = modified;
        self.leases = leases;
        true
    }

    /// Forgets reverse DNS answers older than [`DNS_TTL`]; says whether any went.
    fn dns_expired(&mut self) -> bool {
        let before = self.dns.len();
        self.dns.retain(|_, (_, at)| at.elapsed() < DNS_TTL);
        self.dns.len() != before
    }

    /// The table: the `[devices]` map first, then leases, then DNS answers.
    fn table(&self) -> Table {
        let mut table: Table = self
            .dns
            .iter()
            .map(|(address, (name, _))| (*address, name.clone()))
            .collect();
        for (address, name) in &self.leases {
            table.insert(*address, Some(Arc::from(name.as_str())));
        }
        for (address, name) in &self.config.names {
            table.insert(*address, Some(Arc::from(name.as_str())));
        }
        table
    }

    /// Asks reverse DNS about `addresses` (together, each within the deadline).
    async fn look_up(&mut self, addresses: Vec<IpAddr>) {
        let Some((resolver, deadline)) = &self.resolver else {
            return;
        };
        let mut lookups = tokio::task::JoinSet::new();
        for address in addresses {
            if self.dns.contains_key(&address) {
                continue;
            }
            let resolver = resolver.clone();
            let deadline = *deadline;
            lookups.spawn(async move {
                let name = crate::computers::reverse_name(&resolver, address, deadline).await;
                (address, name)
            });
        }
        while let Some(Ok((address, name))) = lookups.join_next().await {
            if self.dns.len() >= DNS_CACHE {
                self.dns.clear();
            }
            self.dns
                .insert(address, (name.map(Arc::from), Instant::now()));
        }
    }
}

/// The task: checks the leases file and old DNS answers every [`LEASES_CHECK`], looks
/// up queued addresses, and swaps in a new table when anything changed.
async fn keep_current(
    known: Arc<KnownComputers>,
    mut sources: Sources,
    mut queue: Option<mpsc::Receiver<IpAddr>>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(LEASES_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let changed = tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let leases = sources.leases_changed_off_runtime().await;
                leases | sources.dns_expired()
            }
            Some(first) = next_miss(&mut queue) => {
                let mut addresses = vec![first];
                if let Some(queue) = queue.as_mut() {
                    while addresses.len() < LOOKUP_BATCH {
                        match queue.try_recv() {
                            Ok(address) => addresses.push(address),
                            Err(_) => break,
                        }
                    }
                }
                sources.look_up(addresses).await;
                true
            }
        };
        if changed {
            known.table.store(Arc::new(sources.table()));
        }
    }
}

/// The leases file read again, with when it was modified, unless it is unchanged
/// since `last` (its modification time when last read). Blocking.
fn fresh_leases(
    path: &std::path::Path,
    last: Option<Option<SystemTime>>,
) -> Option<(Option<SystemTime>, HashMap<IpAddr, String>)> {
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    if last == Some(modified) {
        return None;
    }
    Some((modified, read_leases(path)))
}

/// The next queued address; never, when reverse DNS is off.
async fn next_miss(queue: &mut Option<mpsc::Receiver<IpAddr>>) -> Option<IpAddr> {
    match queue {
        Some(queue) => queue.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_changed_leases_file_is_read_again_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let leases = dir.path().join("dnsmasq.leases");
        std::fs::write(&leases, "1 aa:cc 10.0.3.60 PC60 x\n").unwrap();
        let config = DevicesConfig {
            leases: Some(leases.clone()),
            ..DevicesConfig::default()
        };
        let shutdown = CancellationToken::new();
        let known = KnownComputers::start(&config, shutdown.clone());
        let name = |address: &str| known.name(address.parse().unwrap()).map(|n| n.to_string());
        assert_eq!(name("10.0.3.60").as_deref(), Some("PC60"));
        // The computer gets a new address; the file's time moves on.
        std::fs::write(&leases, "1 aa:cc 10.0.3.61 PC60 x\n").unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&leases)
            .and_then(|file| file.set_modified(later))
            .unwrap();
        let deadline = Instant::now() + LEASES_CHECK * 4;
        while name("10.0.3.61").is_none() {
            assert!(Instant::now() < deadline, "the new lease was not read");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(name("10.0.3.60"), None);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn names_come_from_the_map_and_the_leases_file_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let leases = dir.path().join("dnsmasq.leases");
        std::fs::write(
            &leases,
            "1 aa:bb 10.0.3.57 FROM-LEASE x\n1 aa:cc 10.0.3.60 PC60 x\n",
        )
        .unwrap();
        let mut config = DevicesConfig::default();
        config
            .names
            .insert("10.0.3.57".parse().unwrap(), "ICT-PC07".into());
        config.leases = Some(leases);
        let shutdown = CancellationToken::new();
        let known = KnownComputers::start(&config, shutdown.clone());
        let name = |address: &str| known.name(address.parse().unwrap()).map(|n| n.to_string());
        assert_eq!(name("10.0.3.57").as_deref(), Some("ICT-PC07"));
        assert_eq!(name("10.0.3.60").as_deref(), Some("PC60"));
        assert_eq!(name("10.0.3.61"), None);
        shutdown.cancel();
    }
}
