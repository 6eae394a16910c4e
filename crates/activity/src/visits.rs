//! Visits: consecutive requests of one person to one site, joined while no more than
//! an idle gap (default [`DEFAULT_IDLE_GAP`], 5 minutes) separates them.
//!
//! - The person is the user name when known, otherwise the client address.
//! - The site is the registrable domain from the public suffix list
//!   ([`site_of`]: `www.bbc.co.uk` and `news.bbc.co.uk` are both `bbc.co.uk`); IP
//!   addresses and hosts without a known suffix stand for themselves.
//! - A request covers `[at, at + duration]`, so a CONNECT tunnel keeps its visit open
//!   for the tunnel's lifetime.
//! - A request that arrives more than the idle gap after the visit's end starts a new
//!   visit; one that arrives exactly at the gap still joins.
//!
//! [`VisitJoiner`] does this incrementally (for a live feed); [`join`] does it over a
//! time-ordered slice of records (for reports).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use safegate_store::record::{Outcome, Record};
use serde::{Deserialize, Serialize};

/// The default idle gap that ends a visit: 5 minutes.
pub const DEFAULT_IDLE_GAP: Duration = Duration::from_secs(5 * 60);

/// One visit of one person to one site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Visit {
    /// The user name, or the client address when the user is not known.
    pub user: String,
    /// The registrable domain (or the host, for IP addresses and unknown suffixes).
    pub site: String,
    /// Arrival of the first request, Unix microseconds.
    pub start_micros: u64,
    /// The latest end (arrival + duration) of any request, Unix microseconds.
    pub end_micros: u64,
    /// Requests in the visit, allowed or blocked.
    pub requests: u64,
    /// Of those, the blocked ones.
    pub blocked: u64,
    /// Bytes from the site to the client.
    pub bytes_down: u64,
}

impl Visit {
    /// How long the visit lasted (end − start).
    pub fn duration(&self) -> Duration {
        Duration::from_micros(self.duration_micros())
    }

    /// How long the visit lasted, microseconds.
    pub fn duration_micros(&self) -> u64 {
        self.end_micros.saturating_sub(self.start_micros)
    }

    fn start(user: String, site: String, record: &Record) -> Self {
        let mut visit = Visit {
            user,
            site,
            start_micros: record.at_unix_micros,
            end_micros: record.at_unix_micros,
            requests: 0,
            blocked: 0,
            bytes_down: 0,
        };
        visit.add(record);
        visit
    }

    fn add(&mut self, record: &Record) {
        let at = record.at_unix_micros;
        self.start_micros = self.start_micros.min(at);
        self.end_micros = self
            .end_micros
            .max(at.saturating_add(record.duration_micros));
        self.requests += 1;
        if record.outcome == Outcome::Blocked {
            self.blocked += 1;
        }
        self.bytes_down = self.bytes_down.saturating_add(record.bytes_down);
    }
}

/// The site a host belongs to: its registrable domain (`news.bbc.co.uk` →
/// `bbc.co.uk`), or the host itself for IP addresses (`10.0.0.5`, `[::1]`) and names
/// without a registrable domain (`localhost`).
pub fn site_of(host: &str) -> &str {
    let host = host.strip_suffix('.').unwrap_or(host);
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if bare.parse::<IpAddr>().is_ok() {
        return host;
    }
    psl::domain_str(host).unwrap_or(host)
}

/// Who a record is about: the user name, or the client address.
fn who(record: &Record) -> String {
    match &record.user {
        Some(user) => user.clone(),
        None => record.client.to_string(),
    }
}

/// Joins a feed of records into visits, one open visit per (person, site).
#[derive(Debug, Clone)]
pub struct VisitJoiner {
    idle_gap_micros: u64,
    open: HashMap<(String, String), Visit>,
}

impl Default for VisitJoiner {
    fn default() -> Self {
        Self::new(DEFAULT_IDLE_GAP)
    }
}

impl VisitJoiner {
    /// A joiner that ends a visit after `idle_gap` without requests.
    pub fn new(idle_gap: Duration) -> Self {
        VisitJoiner {
            idle_gap_micros: u64::try_from(idle_gap.as_micros()).unwrap_or(u64::MAX),
            open: HashMap::new(),
        }
    }

    /// The idle gap, microseconds.
    pub fn idle_gap_micros(&self) -> u64 {
        self.idle_gap_micros
    }

    /// Visits still open.
    pub fn open_visits(&self) -> usize {
        self.open.len()
    }

    /// Adds one record (records should come in time order). Returns the visit that it
    /// closed — the same person's previous visit to the same site, when the record
    /// arrived more than the idle gap after that visit's end — or nothing.
    pub fn push(&mut self, record: &Record) -> Vec<Visit> {
        let user = who(record);
        let site = site_of(&record.host).to_owned();
        let key = (user, site);
        let mut closed = Vec::new();
        match self.open.get_mut(&key) {
            Some(visit)
                if record.at_unix_micros
                    <= visit.end_micros.saturating_add(self.idle_gap_micros) =>
            {
                visit.add(record);
            }
            Some(visit) => {
                let fresh = Visit::start(key.0.clone(), key.1.clone(), record);
                closed.push(std::mem::replace(visit, fresh));
            }
            None => {
                let visit = Visit::start(key.0.clone(), key.1.clone(), record);
                self.open.insert(key, visit);
            }
        }
        closed
    }

    /// Closes and returns the visits idle for more than the gap at `now_micros`, in
    /// start order.
    pub fn close_idle(&mut self, now_micros: u64) -> Vec<Visit> {
        let gap = self.idle_gap_micros;
        let mut closed = Vec::new();
        self.open.retain(|_, visit| {
            if now_micros > visit.end_micros.saturating_add(gap) {
                closed.push(visit.clone());
                false
            } else {
                true
            }
        });
        sort_visits(&mut closed);
        closed
    }

    /// Closes and returns every open visit, in start order.
    pub fn finish(self) -> Vec<Visit> {
        let mut all: Vec<Visit> = self.open.into_values().collect();
        sort_visits(&mut all);
        all
    }
}

/// Joins time-ordered `records` into visits with the given idle gap; the visits come
/// in start order (then person, then site).
pub fn join<'a>(records: impl IntoIterator<Item = &'a Record>, idle_gap: Duration) -> Vec<Visit> {
    let mut joiner = VisitJoiner::new(idle_gap);
    let mut visits = Vec::new();
    for record in records {
        visits.extend(joiner.push(record));
    }
    visits.extend(joiner.finish());
    sort_visits(&mut visits);
    visits
}

fn sort_visits(visits: &mut [Visit]) {
    visits.sort_by(|a, b| {
        (a.start_micros, &a.user, &a.site).cmp(&(b.start_micros, &b.user, &b.site))
    });
}
