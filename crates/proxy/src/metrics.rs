//! The proxy's own counters for `/metrics`: decisions by verdict, role and category,
//! request and decision latency, open connections and tunnels, upstream failures by
//! kind, DNS cache hits and misses.
//!
//! Everything is a relaxed atomic in fixed arrays sized at start: counting costs a few
//! `fetch_add`s, no lock, no map lookup and no allocation. The one exception is the
//! first request of a category never seen before (at most [`MAX_CATEGORIES`] times in
//! the process's life), which adds the name to a small fixed hash table under a mutex;
//! every later lookup hashes the name and reads entries that never change once set.
//! The admin crate reads the counters at scrape time through
//! [`ProxyMetrics::snapshot`].
//!
//! Label values come from fixed sets only: the verdict, the three browsing roles, the
//! policy's category names (bounded: later ones count as `other`; `none` for
//! uncategorised sites), the upstream failure kinds. Never a user, host or URL.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use safegate_policy::{Decision, Role, Verdict};

/// Label values of the verdict, in counter order.
pub const DECISIONS: [&str; 2] = ["allowed", "blocked"];

/// Most policy category names counted separately; further names count as `other`.
pub const MAX_CATEGORIES: usize = 64;

/// Category label of a request to a site in no category.
pub const NO_CATEGORY: &str = "none";

/// Category label once [`MAX_CATEGORIES`] names have been seen.
pub const OTHER_CATEGORY: &str = "other";

/// Label values of upstream failures ([`crate::error::UpstreamError::kind`], and
/// `upstream-certificate`: a decrypted site's certificate failed verification), in
/// counter order.
pub const UPSTREAM_ERROR_KINDS: [&str; 9] = [
    "dns-failure",
    "connection-refused",
    "connect-timeout",
    "connect-failed",
    "loop",
    "forbidden-destination",
    "response-timeout",
    "upstream-protocol",
    "upstream-certificate",
];

/// Upper bounds (microseconds) of the request latency buckets: 1 ms to 30 s.
const REQUEST_BOUNDS_MICROS: [u64; 13] = [
    1_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000, 30_000_000,
];

/// Upper bounds (microseconds) of the decision latency buckets: 1 µs to 10 ms.
const DECISION_BOUNDS_MICROS: [u64; 11] = [1, 2, 5, 10, 25, 50, 100, 250, 1_000, 5_000, 10_000];

/// Category slots: the named ones, then `none`, then `other`.
const CATEGORY_SLOTS: usize = MAX_CATEGORIES + 2;
const NONE_SLOT: usize = MAX_CATEGORIES;
const OTHER_SLOT: usize = MAX_CATEGORIES + 1;

/// The proxy's counters; shared by every connection of one [`crate::Proxy`] and read
/// by `/metrics` (see [`crate::Proxy::metrics`]).
pub struct ProxyMetrics {
    pub(crate) connections: AtomicUsize,
    pub(crate) tunnels: AtomicUsize,
    pub(crate) requests: AtomicU64,
    /// Indexed by [`decision_index`].
    decisions: Box<[AtomicU64]>,
    categories: CategorySlots,
    request_latency: LatencyHistogram,
    decision_latency: LatencyHistogram,
    upstream_errors: [AtomicU64; UPSTREAM_ERROR_KINDS.len()],
    dns: Arc<DnsCounters>,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self {
            connections: AtomicUsize::new(0),
            tunnels: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            decisions: (0..DECISIONS.len() * Role::ALL.len() * CATEGORY_SLOTS)
                .map(|_| AtomicU64::new(0))
                .collect(),
            categories: CategorySlots::default(),
            request_latency: LatencyHistogram::new(&REQUEST_BOUNDS_MICROS),
            decision_latency: LatencyHistogram::new(&DECISION_BOUNDS_MICROS),
            upstream_errors: Default::default(),
            dns: Arc::default(),
        }
    }
}

impl std::fmt::Debug for ProxyMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyMetrics").finish_non_exhaustive()
    }
}

/// Where one decision is counted: its index in the decision counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DecisionSlot(usize);

fn role_index(role: Role) -> usize {
    match role {
        Role::Pupil => 0,
        Role::Staff => 1,
        Role::FilterAdmin => 2,
    }
}

fn decision_index(verdict: usize, role: usize, slot: usize) -> usize {
    (verdict * Role::ALL.len() + role) * CATEGORY_SLOTS + slot
}

/// The category a decision is counted under: the one that decided it (a locked or
/// blocked category; `content` for a page blocked by its words), else the site's
/// first category, else none.
fn counted_category(decision: &Decision) -> Option<&str> {
    if decision.rule.starts_with("content:") {
        return Some("content");
    }
    if let Some(category) = decision.rule.strip_prefix("locked:") {
        return Some(category);
    }
    if let Some((_, category)) = decision
        .rule
        .strip_prefix("category:")
        .and_then(|rest| rest.split_once(':'))
    {
        return Some(category);
    }
    decision.categories.first().map(String::as_str)
}

impl ProxyMetrics {
    /// Names categories up front (the policy's, at start), so that they are exported
    /// at zero before their first request.
    pub fn register_categories<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        for name in names {
            self.categories.slot(name);
        }
    }

    /// Counts one decision for `role` and how long it took.
    #[cfg(test)]
    pub(crate) fn decided(&self, role: Role, decision: &Decision, took: Duration) {
        self.count_decision(self.decision_slot(role, decision), took);
    }

    /// Where a decision for `role` is counted (verdict, role and deciding category),
    /// worked out when it is made and counted by [`Self::count_decision`] when the
    /// request is finished.
    pub(crate) fn decision_slot(&self, role: Role, decision: &Decision) -> DecisionSlot {
        let verdict = match decision.verdict {
            Verdict::Allow => 0,
            Verdict::Block => 1,
        };
        let slot = counted_category(decision).map_or(NONE_SLOT, |name| self.categories.slot(name));
        DecisionSlot(decision_index(verdict, role_index(role), slot))
    }

    /// Counts one decision in `slot`, and how long it took.
    pub(crate) fn count_decision(&self, slot: DecisionSlot, took: Duration) {
        if let Some(counter) = self.decisions.get(slot.0) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        self.decision_latency.observe(took);
    }

    /// Counts one request answered (or one connection decided, for transparent HTTPS).
    pub(crate) fn request_counted(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one request answered (its response head ready) after `took`.
    pub(crate) fn answered(&self, took: Duration) {
        self.request_latency.observe(took);
    }

    /// Counts one failure to reach an origin.
    #[cfg(test)]
    pub(crate) fn upstream_failed(&self, error: &crate::error::UpstreamError) {
        self.upstream_failed_kind(error.kind());
    }

    /// Counts one failure to reach an origin by its kind ([`UPSTREAM_ERROR_KINDS`]).
    pub(crate) fn upstream_failed_kind(&self, kind: &str) {
        if let Some(index) = UPSTREAM_ERROR_KINDS.iter().position(|k| *k == kind) {
            self.upstream_errors[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The DNS cache counters, for the resolver ([`crate::dns::build_resolver`]).
    pub fn dns(&self) -> Arc<DnsCounters> {
        Arc::clone(&self.dns)
    }

    /// Every counter now. Allocates; meant for scrapes, not for the request path.
    pub fn snapshot(&self) -> ProxyMetricsSnapshot {
        let names = self.categories.names_by_slot();
        let mut decisions = Vec::new();
        for (verdict, decision) in DECISIONS.iter().enumerate() {
            for role in Role::ALL {
                let labelled = names
                    .iter()
                    .enumerate()
                    .map(|(slot, name)| (slot, Arc::clone(name)))
                    .chain([
                        (NONE_SLOT, Arc::from(NO_CATEGORY)),
                        (OTHER_SLOT, Arc::from(OTHER_CATEGORY)),
                    ]);
                for (slot, category) in labelled {
                    let index = decision_index(verdict, role_index(role), slot);
                    let count = self
                        .decisions
                        .get(index)
                        .map_or(0, |c| c.load(Ordering::Relaxed));
                    decisions.push(DecisionCount {
                        decision,
                        role: role.as_str(),
                        category,
                        count,
                    });
                }
            }
        }
        ProxyMetricsSnapshot {
            connections: self.connections.load(Ordering::Relaxed) as u64,
            tunnels: self.tunnels.load(Ordering::Relaxed) as u64,
            requests: self.requests.load(Ordering::Relaxed),
            decisions,
            request_seconds: self.request_latency.snapshot(),
            decision_seconds: self.decision_latency.snapshot(),
            upstream_errors: UPSTREAM_ERROR_KINDS
                .iter()
                .zip(&self.upstream_errors)
                .map(|(kind, count)| (*kind, count.load(Ordering::Relaxed)))
                .collect(),
            dns_cache_hits: self.dns.hits.load(Ordering::Relaxed),
            dns_cache_misses: self.dns.misses.load(Ordering::Relaxed),
        }
    }
}

/// The proxy's counters at one moment ([`ProxyMetrics::snapshot`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyMetricsSnapshot {
    /// Client connections open now.
    pub connections: u64,
    /// CONNECT tunnels, WebSocket relays and transparent HTTPS relays open now.
    pub tunnels: u64,
    /// Requests received since start (every kind, SafeGate's own pages included).
    pub requests: u64,
    /// Decisions by verdict, role and category, zeros included.
    pub decisions: Vec<DecisionCount>,
    /// Time from a request's arrival to its response head.
    pub request_seconds: HistogramSnapshot,
    /// Time the policy took to decide.
    pub decision_seconds: HistogramSnapshot,
    /// Failures to reach an origin, by kind ([`UPSTREAM_ERROR_KINDS`]).
    pub upstream_errors: Vec<(&'static str, u64)>,
    /// Host names answered from the DNS cache (or the hosts file).
    pub dns_cache_hits: u64,
    /// Host names that needed a DNS query.
    pub dns_cache_misses: u64,
}

/// Decisions for one (verdict, role, category).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionCount {
    /// `allowed` or `blocked`.
    pub decision: &'static str,
    /// The browsing role.
    pub role: &'static str,
    /// A policy category, [`NO_CATEGORY`] or [`OTHER_CATEGORY`].
    pub category: Arc<str>,
    /// Decisions since start.
    pub count: u64,
}

/// A latency histogram at one moment, in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Upper bound of each bucket, ascending (the `+Inf` bucket is `count`).
    pub upper_bounds: Vec<f64>,
    /// Observations at or below each bound (cumulative).
    pub cumulative: Vec<u64>,
    /// Sum of every observation.
    pub sum_seconds: f64,
    /// Observations in all.
    pub count: u64,
}

/// Counts of host names resolved from the cache and by a query; kept by the resolver.
#[derive(Debug, Default)]
pub struct DnsCounters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
}

/// A histogram of durations in relaxed atomics: one counter per bucket and the sum.
struct LatencyHistogram {
    bounds_micros: &'static [u64],
    /// One per bound, then the overflow bucket.
    buckets: Box<[AtomicU64]>,
    sum_micros: AtomicU64,
}

impl LatencyHistogram {
    fn new(bounds_micros: &'static [u64]) -> Self {
        Self {
            bounds_micros,
            buckets: (0..=bounds_micros.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    fn observe(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = self.bounds_micros.partition_point(|bound| *bound < micros);
        if let Some(counter) = self.buckets.get(bucket) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0;
        let mut cumulative = Vec::with_capacity(self.bounds_micros.len());
        for counter in self.buckets.iter() {
            running += counter.load(Ordering::Relaxed);
            cumulative.push(running);
        }
        // The last running total is the overflow bucket's: the count.
        let count = cumulative.pop().unwrap_or(0);
        HistogramSnapshot {
            upper_bounds: self
                .bounds_micros
                .iter()
                .map(|micros| *micros as f64 / 1e6)
                .collect(),
            cumulative,
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            count,
        }
    }
}

/// Entries of the category table: a power of two, at least twice [`MAX_CATEGORIES`] so
/// that probing always ends at an empty entry quickly.
const CATEGORY_TABLE: usize = 128;

/// Category names to counter slots: an open-addressing hash table whose entries are
/// set once and never change, so that lookups are a hash and a few atomic loads, with
/// no lock. Names are added (under a mutex) the first time they are seen.
struct CategorySlots {
    /// (name, slot), at the name's hash position or after it.
    table: [OnceLock<(Arc<str>, usize)>; CATEGORY_TABLE],
    /// Names added so far.
    count: AtomicUsize,
    adding: Mutex<()>,
}

impl Default for CategorySlots {
    fn default() -> Self {
        Self {
            table: std::array::from_fn(|_| OnceLock::new()),
            count: AtomicUsize::new(0),
            adding: Mutex::new(()),
        }
    }
}

/// FNV-1a: category names are short and chosen by the school, not by clients.
fn name_hash(name: &str) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as usize
}

impl CategorySlots {
    /// The entry holding `name`, or the index of the empty entry where it would go.
    fn find(&self, name: &str) -> Result<usize, usize> {
        let mut index = name_hash(name) & (CATEGORY_TABLE - 1);
        loop {
            match self.table.get(index).and_then(OnceLock::get) {
                Some((known, slot)) if **known == *name => return Ok(*slot),
                Some(_) => index = (index + 1) & (CATEGORY_TABLE - 1),
                None => return Err(index),
            }
        }
    }

    fn slot(&self, name: &str) -> usize {
        match self.find(name) {
            Ok(slot) => slot,
            Err(_) if self.count.load(Ordering::Acquire) >= MAX_CATEGORIES => OTHER_SLOT,
            Err(_) => self.add(name),
        }
    }

    /// The slow path, once per new name: add it under the mutex (another thread may
    /// have added it meanwhile).
    fn add(&self, name: &str) -> usize {
        let _adding = self
            .adding
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match self.find(name) {
            Ok(slot) => slot,
            Err(_) if self.count.load(Ordering::Acquire) >= MAX_CATEGORIES => OTHER_SLOT,
            Err(index) => {
                let slot = self.count.load(Ordering::Acquire);
                let added = self
                    .table
                    .get(index)
                    .is_some_and(|entry| entry.set((Arc::from(name), slot)).is_ok());
                if !added {
                    return OTHER_SLOT;
                }
                self.count.store(slot + 1, Ordering::Release);
                slot
            }
        }
    }

    /// The names, indexed by slot.
    fn names_by_slot(&self) -> Vec<Arc<str>> {
        let mut entries: Vec<(usize, Arc<str>)> = self
            .table
            .iter()
            .filter_map(OnceLock::get)
            .map(|(name, slot)| (*slot, Arc::clone(name)))
            .collect();
        entries.sort_by_key(|(slot, _)| *slot);
        entries.into_iter().map(|(_, name)| name).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::UpstreamError;

    fn decision(verdict: Verdict, rule: &str, categories: &[&str]) -> Decision {
        Decision {
            verdict,
            categories: categories.iter().map(|c| (*c).to_owned()).collect(),
            rule: rule.to_owned(),
            reason: String::new(),
        }
    }

    fn count(snapshot: &ProxyMetricsSnapshot, decision: &str, role: &str, category: &str) -> u64 {
        snapshot
            .decisions
            .iter()
            .find(|d| d.decision == decision && d.role == role && &*d.category == category)
            .map_or(u64::MAX, |d| d.count)
    }

    #[test]
    fn decisions_are_counted_by_verdict_role_and_deciding_category() {
        let metrics = ProxyMetrics::default();
        metrics.register_categories(["social", "games"]);
        let took = Duration::from_micros(3);
        metrics.decided(Role::Pupil, &decision(Verdict::Allow, "default", &[]), took);
        metrics.decided(
            Role::Pupil,
            &decision(Verdict::Block, "category:year6:games", &["games", "social"]),
            took,
        );
        metrics.decided(
            Role::Staff,
            &decision(Verdict::Allow, "allow:global", &["social"]),
            took,
        );
        metrics.decided(
            Role::Pupil,
            &decision(Verdict::Block, "locked:abuse", &["abuse"]),
            took,
        );
        let snapshot = metrics.snapshot();
        assert_eq!(count(&snapshot, "allowed", "pupil", "none"), 1);
        assert_eq!(count(&snapshot, "blocked", "pupil", "games"), 1);
        assert_eq!(count(&snapshot, "blocked", "pupil", "social"), 0);
        assert_eq!(count(&snapshot, "allowed", "staff", "social"), 1);
        assert_eq!(count(&snapshot, "blocked", "pupil", "abuse"), 1);
        assert_eq!(count(&snapshot, "blocked", "filter-admin", "other"), 0);
        // 3 categories seen, plus none and other, for 2 verdicts and 3 roles.
        assert_eq!(snapshot.decisions.len(), 2 * 3 * 5);
        assert_eq!(snapshot.decision_seconds.count, 4);
        assert_eq!(snapshot.decision_seconds.cumulative[1], 0);
        assert_eq!(snapshot.decision_seconds.cumulative[2], 4, "3 µs ≤ 5 µs");
    }

    /// What counting costs a request: `cargo test --release -p safegate-proxy --lib
    /// counting_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, run by hand in release mode"]
    fn counting_cost() {
        let metrics = ProxyMetrics::default();
        let names: Vec<String> = (0..40).map(|n| format!("category-{n:02}")).collect();
        metrics.register_categories(names.iter().map(String::as_str));
        let decision = decision(
            Verdict::Block,
            "category:pupil:category-31",
            &["category-31"],
        );
        let rounds = 5_000_000u32;
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            metrics.decided(Role::Pupil, &decision, Duration::from_micros(2));
            metrics.answered(Duration::from_millis(3));
        }
        let per_request = started.elapsed() / rounds;
        println!("counting one request (decision + latency): {per_request:?}");
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(metrics.categories.slot(std::hint::black_box("category-31")));
        }
        println!("slot: {:?}", started.elapsed() / rounds);
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            metrics.answered(std::hint::black_box(Duration::from_millis(3)));
        }
        println!("answered: {:?}", started.elapsed() / rounds);
        assert_eq!(metrics.snapshot().decision_seconds.count, u64::from(rounds));
    }

    #[test]
    fn categories_beyond_the_limit_count_as_other() {
        let metrics = ProxyMetrics::default();
        let names: Vec<String> = (0..MAX_CATEGORIES + 5)
            .map(|n| format!("c{n:03}"))
            .collect();
        for name in &names {
            let rule = format!("category:pupil:{name}");
            metrics.decided(
                Role::Pupil,
                &decision(Verdict::Block, &rule, &[]),
                Duration::ZERO,
            );
        }
        let snapshot = metrics.snapshot();
        assert_eq!(count(&snapshot, "blocked", "pupil", "c000"), 1);
        assert_eq!(count(&snapshot, "blocked", "pupil", "other"), 5);
        assert_eq!(count(&snapshot, "blocked", "pupil", "c068"), u64::MAX);
    }

    #[test]
    fn categories_added_from_many_threads_get_one_slot_each() {
        let slots = Arc::new(CategorySlots::default());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let slots = Arc::clone(&slots);
                std::thread::spawn(move || {
                    for n in 0..100 {
                        let name = format!("c{}", (n * 7 + t * 13) % 100);
                        slots.slot(&name);
                    }
                })
            })
            .collect();
        for thread in threads {
            assert!(thread.join().is_ok());
        }
        let names = slots.names_by_slot();
        assert_eq!(names.len(), MAX_CATEGORIES);
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), MAX_CATEGORIES);
        for (slot, name) in names.iter().enumerate() {
            assert_eq!(slots.slot(name), slot, "{name}");
        }
        assert_eq!(slots.slot("never-seen"), OTHER_SLOT);
    }

    #[test]
    fn latency_buckets_are_cumulative_with_the_sum() {
        let metrics = ProxyMetrics::default();
        metrics.answered(Duration::from_micros(500));
        metrics.answered(Duration::from_millis(7));
        metrics.answered(Duration::from_secs(60));
        let histogram = metrics.snapshot().request_seconds;
        assert_eq!(histogram.upper_bounds[0], 0.001);
        assert_eq!(histogram.cumulative[0], 1);
        assert_eq!(histogram.cumulative[1], 1);
        assert_eq!(histogram.cumulative[2], 2);
        assert_eq!(histogram.cumulative.last(), Some(&2));
        assert_eq!(histogram.count, 3);
        assert!((histogram.sum_seconds - 60.0075).abs() < 1e-9);
    }

    #[test]
    fn every_upstream_error_kind_has_a_counter() {
        let addr = std::net::SocketAddr::from(([192, 0, 2, 1], 80));
        let host = || "example.org".to_owned();
        for error in [
            UpstreamError::Dns {
                host: host(),
                reason: String::new(),
            },
            UpstreamError::Refused { addr },
            UpstreamError::ConnectTimeout { host: host() },
            UpstreamError::Connect {
                addr,
                reason: String::new(),
            },
            UpstreamError::ResponseTimeout {
                host: host(),
                seconds: 1,
            },
            UpstreamError::Protocol {
                host: host(),
                reason: String::new(),
            },
        ] {
            assert!(UPSTREAM_ERROR_KINDS.contains(&error.kind()), "{error}");
        }
    }

    #[test]
    fn upstream_failures_are_counted_by_kind() {
        let metrics = ProxyMetrics::default();
        metrics.upstream_failed(&UpstreamError::ConnectTimeout {
            host: "example.org".to_owned(),
        });
        metrics.upstream_failed_kind("upstream-protocol");
        metrics.upstream_failed_kind("not-a-kind");
        let errors = metrics.snapshot().upstream_errors;
        assert!(errors.contains(&("connect-timeout", 1)));
        assert!(errors.contains(&("upstream-protocol", 1)));
        assert_eq!(errors.iter().map(|(_, n)| n).sum::<u64>(), 2);
    }
}
