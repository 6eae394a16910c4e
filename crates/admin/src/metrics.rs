//! `/metrics`: SafeGate's counters in the Prometheus text format (version 0.0.4).
//!
//! [`Metrics`] owns a [`prometheus::Registry`] (never the crate's global default
//! registry) and the admin server renders it on every scrape. Every collector here
//! reads counters that the rest of SafeGate already keeps as relaxed atomics, at
//! scrape time: the hot path does nothing more than its own increments, and nothing
//! is counted twice. More collectors (proxy request counters, ...) are registered with
//! [`Metrics::register`] where the service builds its `Metrics`.
//!
//! Access: see [`crate::access`] (`admin.metrics_allow` addresses, or the bearer token).
//!
//! Metric names, all prefixed `safegate_`:
//! - `build_info{version}`: always 1;
//! - `visit_log_*`: the visit-log writer (see [`VisitLogCollector`]);
//! - `policy_reloads_total{result="ok|failed"}`, `policy_last_reload_failed`: policy
//!   reloads, and `list_refusals_total{list}`: list files refused as binary, mostly
//!   invalid or cut short (see [`PolicyReloadCollector`]).
//! - `proxy_auth_total{result=...}`, `proxy_auth_users`, `proxy_auth_cached_credentials`:
//!   proxy authentication (see [`ProxyAuthCollector`]).
//! - `password_checks_total`, `password_checks_busy_total`: the one password-check
//!   pool, proxy log-ins and admin sign-ins together (see [`PasswordCheckCollector`]).
//! - `requests_total`, `decisions_total{decision,role,category}`,
//!   `request_duration_seconds`, `decision_duration_seconds`, `client_connections`,
//!   `tunnels`, `upstream_errors_total{kind}`, `dns_cache_lookups_total{result}`: the
//!   proxy (see [`ProxyCollector`]).
//! - `policy_index_entries`, `policy_lists`, `policy_unblocks`,
//!   `policy_category_entries{category}`: the policy in force (see
//!   [`PolicySizeCollector`]).
//! - `alerts_total{kind}`: alerts raised (see [`AlertCounters`]).
//! - `list_entries{list}`, `list_age_seconds{list}`, `list_update_failures_total{feed}`:
//!   the list feeds (see [`ListFeedCollector`]).
//!
//! Label values come from small fixed sets (or the policy's category names): never a
//! user name, a host or a URL.

use std::collections::HashMap;
use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};
use prometheus::{Encoder, IntGauge, Opts, Registry, TextEncoder};
use safegate_proxy::PolicyHandle;
use safegate_proxy::metrics::{HistogramSnapshot, ProxyMetrics};
use safegate_store::password::CheckPool;
use safegate_store::{VisitLogStats, VisitLogStatsSnapshot};
use std::sync::atomic::{AtomicU64, Ordering};

/// Content type of the rendered metrics: Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// SafeGate's metrics: a registry owned by the admin server. Cheap to clone (the
/// clones share the registry).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry holding `safegate_build_info{version}`; `version` is SafeGate's.
    pub fn new(version: &str) -> prometheus::Result<Self> {
        let registry = Registry::new();
        let build_info = IntGauge::with_opts(
            Opts::new(
                "safegate_build_info",
                "The SafeGate version that is running, in the label version; always 1.",
            )
            .const_label("version", version),
        )?;
        build_info.set(1);
        registry.register(Box::new(build_info))?;
        Ok(Self { registry })
    }

    /// Adds a collector; it is asked for its values on every scrape, so it should only
    /// read counters (relaxed atomics), never wait. Fails on a name already registered.
    pub fn register(&self, collector: Box<dyn Collector>) -> prometheus::Result<()> {
        self.registry.register(collector)
    }

    /// Every metric now, in the Prometheus text format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> prometheus::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(4096);
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(out)
    }
}

/// What a collector exports for one metric: its description and type.
struct Spec {
    desc: Desc,
    kind: MetricType,
}

impl Spec {
    fn new(kind: MetricType, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<Self> {
        let labels = labels.iter().map(|l| (*l).to_owned()).collect();
        let desc = Desc::new(name.to_owned(), help.to_owned(), labels, HashMap::new())?;
        Ok(Self { desc, kind })
    }

    fn counter(name: &str, help: &str) -> prometheus::Result<Self> {
        Self::new(MetricType::COUNTER, name, help, &[])
    }

    fn gauge(name: &str, help: &str) -> prometheus::Result<Self> {
        Self::new(MetricType::GAUGE, name, help, &[])
    }

    /// The family of a histogram without labels.
    fn histogram(&self, snapshot: &HistogramSnapshot) -> MetricFamily {
        let buckets = snapshot
            .upper_bounds
            .iter()
            .zip(&snapshot.cumulative)
            .map(|(bound, count)| {
                let mut bucket = proto::Bucket::default();
                bucket.set_upper_bound(*bound);
                bucket.set_cumulative_count(*count);
                bucket
            })
            .collect();
        let mut histogram = proto::Histogram::default();
        histogram.set_sample_count(snapshot.count);
        histogram.set_sample_sum(snapshot.sum_seconds);
        histogram.set_bucket(buckets);
        let mut metric = proto::Metric::default();
        metric.set_histogram(histogram);
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(MetricType::HISTOGRAM);
        family.set_metric(vec![metric]);
        family
    }

    /// The family with one unlabelled sample.
    fn one(&self, value: f64) -> MetricFamily {
        self.family(&[(&[], value)])
    }

    /// The family with one sample per (label values, value); label values are in the
    /// order of the label names given to [`Spec::new`].
    fn family(&self, samples: &[(&[&str], f64)]) -> MetricFamily {
        let metrics = samples
            .iter()
            .map(|(values, value)| {
                let mut metric = proto::Metric::default();
                let labels = self
                    .desc
                    .variable_labels
                    .iter()
                    .zip(values.iter())
                    .map(|(name, value)| {
                        let mut pair = LabelPair::default();
                        pair.set_name(name.clone());
                        pair.set_value((*value).to_owned());
                        pair
                    })
                    .collect();
                metric.set_label(labels);
                if self.kind == MetricType::COUNTER {
                    let mut counter = proto::Counter::default();
                    counter.set_value(*value);
                    metric.set_counter(counter);
                } else {
                    let mut gauge = proto::Gauge::default();
                    gauge.set_value(*value);
                    metric.set_gauge(gauge);
                }
                metric
            })
            .collect();
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(self.kind);
        family.set_metric(metrics);
        family
    }
}

fn descs<'a>(specs: &[&'a Spec]) -> Vec<&'a Desc> {
    specs.iter().map(|spec| &spec.desc).collect()
}

fn seconds(micros: u64) -> f64 {
    micros as f64 / 1_000_000.0
}

type SnapshotFn = dyn Fn() -> VisitLogStatsSnapshot + Send + Sync;

/// The visit-log writer's counters ([`VisitLogStats`]), read once per scrape.
///
/// With the visit log off (`store.visit_log = false`) every `safegate_visit_log_*`
/// metric is still exported, at 0, and `safegate_visit_log_enabled` is 0: dashboards
/// and alerts keep working, and the enabled gauge tells "off" from "idle".
pub struct VisitLogCollector {
    enabled: bool,
    read: Box<SnapshotFn>,
    enabled_spec: Spec,
    queue_depth: Spec,
    written: Spec,
    flushed: Spec,
    batches: Spec,
    dropped: Spec,
    write_errors: Spec,
    lost: Spec,
    flush_errors: Spec,
    observer_dropped: Spec,
    last_seconds: Spec,
    max_seconds: Spec,
    sum_seconds: Spec,
    writable: Spec,
    write_failures: Spec,
    retry_waiting: Spec,
    reopens: Spec,
}

impl VisitLogCollector {
    /// Reads `stats` at scrape time; `None` when the visit log is off.
    pub fn new(stats: Option<Arc<VisitLogStats>>) -> prometheus::Result<Self> {
        match stats {
            Some(stats) => Self::with_source(true, Box::new(move || stats.snapshot())),
            None => Self::with_source(false, Box::new(VisitLogStatsSnapshot::default)),
        }
    }

    fn with_source(enabled: bool, read: Box<SnapshotFn>) -> prometheus::Result<Self> {
        Ok(Self {
            enabled,
            read,
            enabled_spec: Spec::gauge(
                "safegate_visit_log_enabled",
                "1 if the visit log is on (store.visit_log = true). 0 if it is off: then every \
                 safegate_visit_log_* metric stays at 0 and no visits are recorded.",
            )?,
            queue_depth: Spec::gauge(
                "safegate_visit_log_queue_depth",
                "Visit-log records waiting in memory for the database writer (approximate). \
                 Close to store.queue_capacity means records are about to be dropped: the disk \
                 is too slow or the writer is stuck.",
            )?,
            written: Spec::counter(
                "safegate_visit_log_records_written_total",
                "Visit-log records written to the database since SafeGate started (not \
                 necessarily on disk yet: see safegate_visit_log_records_flushed_total).",
            )?,
            flushed: Spec::counter(
                "safegate_visit_log_records_flushed_total",
                "Visit-log records written and flushed to disk since SafeGate started; these \
                 survive a crash or a power cut.",
            )?,
            batches: Spec::counter(
                "safegate_visit_log_batches_total",
                "Batches of visit-log records the writer has written since SafeGate started \
                 (about one per store.flush_interval while there is traffic), failed ones \
                 included.",
            )?,
            dropped: Spec::counter(
                "safegate_visit_log_records_dropped_total",
                "Visit-log records thrown away because the queue was full \
                 (store.queue_capacity) or the writer had stopped. Should stay 0: if it grows, \
                 the visit log is missing visits.",
            )?,
            write_errors: Spec::counter(
                "safegate_visit_log_write_errors_total",
                "Visit-log batches the database failed to write (disk full, I/O error, \
                 corruption); their records are kept and retried (see \
                 safegate_store_writable). SafeGate's log has the error.",
            )?,
            lost: Spec::counter(
                "safegate_visit_log_records_lost_total",
                "Visit-log records that will never be written: kept for a retry while the \
                 database could not be written, beyond what memory holds (twice \
                 store.queue_capacity) or still unwritten at shutdown, or not encodable.",
            )?,
            flush_errors: Spec::counter(
                "safegate_visit_log_flush_errors_total",
                "Times the visit log could not be flushed to disk: records written since the \
                 last good flush can be lost in a crash. SafeGate's log has the error.",
            )?,
            observer_dropped: Spec::counter(
                "safegate_visit_log_observer_dropped_total",
                "Visit-log records written but not passed on to the monitor (alerts) because                  it was behind: they are in the visit log, but no alert looked at them.",
            )?,
            last_seconds: Spec::gauge(
                "safegate_visit_log_batch_write_seconds_last",
                "Seconds taken to write and flush the most recent visit-log batch.",
            )?,
            max_seconds: Spec::gauge(
                "safegate_visit_log_batch_write_seconds_max",
                "Longest time taken to write and flush one visit-log batch since SafeGate \
                 started, in seconds. Near or above store.flush_interval means the disk cannot \
                 keep up.",
            )?,
            sum_seconds: Spec::counter(
                "safegate_visit_log_batch_write_seconds_sum",
                "Total seconds spent writing and flushing visit-log batches since SafeGate \
                 started; divided by safegate_visit_log_batches_total (or rate by rate) it is \
                 the mean time per batch.",
            )?,
            writable: Spec::gauge(
                "safegate_store_writable",
                "1 while the visit log is written; 0 from a failed write (disk full, I/O \
                 error) until writing works again, by itself, without a restart. /readyz \
                 says why and since when.",
            )?,
            write_failures: Spec::counter(
                "safegate_store_write_failures_total",
                "Failed attempts to write or flush visit-log records (first tries and \
                 retries) since SafeGate started.",
            )?,
            retry_waiting: Spec::gauge(
                "safegate_visit_log_records_waiting",
                "Visit-log records taken from the queue and kept in memory because writing \
                 failed; written when the database takes writes again.",
            )?,
            reopens: Spec::counter(
                "safegate_store_reopens_total",
                "Times the database was reopened to recover from a failed write.",
            )?,
        })
    }

    fn specs(&self) -> [&Spec; 17] {
        [
            &self.enabled_spec,
            &self.queue_depth,
            &self.written,
            &self.flushed,
            &self.batches,
            &self.dropped,
            &self.write_errors,
            &self.lost,
            &self.flush_errors,
            &self.observer_dropped,
            &self.last_seconds,
            &self.max_seconds,
            &self.sum_seconds,
            &self.writable,
            &self.write_failures,
            &self.retry_waiting,
            &self.reopens,
        ]
    }
}

impl Collector for VisitLogCollector {
    fn desc(&self) -> Vec<&Desc> {
        descs(&self.specs())
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = (self.read)();
        vec![
            self.enabled_spec.one(if self.enabled { 1.0 } else { 0.0 }),
            self.queue_depth.one(s.queue_depth as f64),
            self.written.one(s.written as f64),
            self.flushed.one(s.flushed as f64),
            self.batches.one(s.batches as f64),
            self.dropped.one(s.dropped as f64),
            self.write_errors.one(s.write_errors as f64),
            self.lost.one(s.lost as f64),
            self.flush_errors.one(s.flush_errors as f64),
            self.observer_dropped.one(s.observer_dropped as f64),
            self.last_seconds.one(seconds(s.last_write_micros)),
            self.max_seconds.one(seconds(s.max_write_micros)),
            self.sum_seconds.one(seconds(s.total_write_micros)),
            // With the visit log off nothing fails to be written.
            self.writable.one(if s.writable || !self.enabled {
                1.0
            } else {
                0.0
            }),
            self.write_failures.one(s.write_failures as f64),
            self.retry_waiting.one(s.retry_waiting as f64),
            self.reopens.one(s.reopens as f64),
        ]
    }
}

/// Policy reload outcomes since start, as the service counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicyReloadCounts {
    /// Policies compiled and swapped in.
    pub succeeded: u64,
    /// Policies refused (the previous one stayed live).
    pub failed: u64,
    /// Whether the most recent reload was refused.
    pub last_failed: bool,
}

/// Whatever counts policy reloads (the service's reload counters); read at scrape
/// time, so it should only load atomics.
pub trait PolicyReloadSource: Send + Sync {
    /// The counts now.
    fn policy_reloads(&self) -> PolicyReloadCounts;

    /// List files refused since start, per list (category) name; none by default.
    fn list_refusals(&self) -> Vec<(String, u64)> {
        Vec::new()
    }
}

/// `safegate_policy_reloads_total{result="ok|failed"}`,
/// `safegate_policy_last_reload_failed` and `safegate_list_refusals_total{list}`.
pub struct PolicyReloadCollector {
    source: Arc<dyn PolicyReloadSource>,
    reloads: Spec,
    last_failed: Spec,
    list_refusals: Spec,
}

impl PolicyReloadCollector {
    /// Reads `source` at scrape time.
    pub fn new(source: Arc<dyn PolicyReloadSource>) -> prometheus::Result<Self> {
        Ok(Self {
            source,
            reloads: Spec::new(
                MetricType::COUNTER,
                "safegate_policy_reloads_total",
                "Policy reloads since SafeGate started (SIGHUP, systemctl reload, or a change \
                 to the policy file with policy.watch). result=\"ok\": the new policy is in \
                 force; result=\"failed\": it was refused and the previous policy stayed in \
                 force (SafeGate's log names the file, line and column).",
                &["result"],
            )?,
            last_failed: Spec::gauge(
                "safegate_policy_last_reload_failed",
                "1 if the most recent policy reload was refused, so an older policy is still \
                 in force: fix the file and reload. 0 if it worked or there has been none.",
            )?,
            list_refusals: Spec::new(
                MetricType::COUNTER,
                "safegate_list_refusals_total",
                "List files refused since start, per list (category): binary data, more \
                 than half the lines invalid, or more entries lost than \
                 lists.max_shrink_percent allows. The previous policy and its lists stayed \
                 in force; SafeGate's log and /readyz name the file and why.",
                &["list"],
            )?,
        })
    }
}

impl Collector for PolicyReloadCollector {
    fn desc(&self) -> Vec<&Desc> {
        descs(&[&self.reloads, &self.last_failed, &self.list_refusals])
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let counts = self.source.policy_reloads();
        let refusals = self.source.list_refusals();
        let labels: Vec<[&str; 1]> = refusals.iter().map(|(list, _)| [list.as_str()]).collect();
        let refusals: Vec<(&[&str], f64)> = labels
            .iter()
            .zip(&refusals)
            .map(|(label, (_, count))| (label.as_slice(), *count as f64))
            .collect();
        vec![
            self.list_refusals.family(&refusals),
            self.reloads.family(&[
                (&["ok"], counts.succeeded as f64),
                (&["failed"], counts.failed as f64),
            ]),
            self.last_failed
                .one(if counts.last_failed { 1.0 } else { 0.0 }),
        ]
    }
}

/// What the list feeds look like now (cached by the service; nothing is read from
/// disk at scrape time).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListFeedFigures {
    /// Entries per installed list (`feed/category`, or `feed` for a one-file feed).
    pub entries: Vec<(String, u64)>,
    /// Seconds since each installed list was updated (same labels).
    pub ages: Vec<(String, f64)>,
    /// Failed updates since start, per feed (every configured feed, 0 included).
    pub failures: Vec<(String, u64)>,
    /// Feeds not updated for longer than `lists.stale_after`, in words.
    pub stale: Vec<String>,
}

/// Whatever keeps the list feeds' figures (the service's feed updater).
pub trait ListFeedSource: Send + Sync {
    /// The figures now.
    fn list_feeds(&self) -> ListFeedFigures;
}

/// `safegate_list_entries{list}`, `safegate_list_age_seconds{list}` and
/// `safegate_list_update_failures_total{feed}`.
pub struct ListFeedCollector {
    source: Arc<dyn ListFeedSource>,
    entries: Spec,
    ages: Spec,
    failures: Spec,
}

impl ListFeedCollector {
    /// Reads `source` at scrape time.
    pub fn new(source: Arc<dyn ListFeedSource>) -> prometheus::Result<Self> {
        Ok(Self {
            source,
            entries: Spec::new(
                MetricType::GAUGE,
                "safegate_list_entries",
                "Entries (domains and URLs) of each list installed by a feed of \
                 [[lists.feeds]], labelled feed/category.",
                &["list"],
            )?,
            ages: Spec::new(
                MetricType::GAUGE,
                "safegate_list_age_seconds",
                "Seconds since each feed list was last installed; past lists.stale_after \
                 /readyz and `safegate doctor` warn.",
                &["list"],
            )?,
            failures: Spec::new(
                MetricType::COUNTER,
                "safegate_list_update_failures_total",
                "Feed updates that failed since start (download, a web page instead of the \
                 list, a broken archive, a list that shrank too much); the lists in force \
                 were kept.",
                &["feed"],
            )?,
        })
    }
}

impl Collector for ListFeedCollector {
    fn desc(&self) -> Vec<&Desc> {
        descs(&[&self.entries, &self.ages, &self.failures])
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let figures = self.source.list_feeds();
        let family = |spec: &Spec, samples: Vec<(&str, f64)>| {
            let labels: Vec<[&str; 1]> = samples.iter().map(|(label, _)| [*label]).collect();
            let samples: Vec<(&[&str], f64)> = labels
                .iter()
                .zip(&samples)
                .map(|(label, (_, value))| (label.as_slice(), *value))
                .collect();
            spec.family(&samples)
        };
        vec![
            family(
                &self.entries,
                figures
                    .entries
                    .iter()
                    .map(|(l, n)| (l.as_str(), *n as f64))
                    .collect(),
            ),
            family(
                &self.ages,
                figures.ages.iter().map(|(l, n)| (l.as_str(), *n)).collect(),
            ),
            family(
                &self.failures,
                figures
                    .failures
                    .iter()
                    .map(|(l, n)| (l.as_str(), *n as f64))
                    .collect(),
            ),
        ]
    }
}

/// Proxy authentication counters since start, as the proxy keeps them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyAuthCounts {
    /// Requests whose credentials were verified before (no password check).
    pub cache_hits: u64,
    /// Passwords checked with Argon2 and right.
    pub verified: u64,
    /// Failed log-ins (wrong password, unknown or disabled user, malformed header).
    pub failed: u64,
    /// Log-ins refused unchecked: too many failures from the address or for the user.
    pub rate_limited: u64,
    /// Requests without credentials answered 407 (`auth.required`).
    pub challenged: u64,
    /// Log-ins answered 503: too many waiting for a password check.
    pub busy: u64,
    /// Users in the proxy's user table now.
    pub users: u64,
    /// Verified credentials held in the cache now.
    pub cached_credentials: u64,
    /// Log-ins through the login portal that succeeded.
    pub portal_logins: u64,
    /// Portal sessions held now.
    pub portal_sessions: u64,
    /// A user logged in (portal) or seen (proxy credentials) at a second address while
    /// still at another.
    pub concurrent_logins: u64,
    /// Directory log-ins (`[auth.ldap]`) that found no directory server answering.
    pub directory_unreachable: u64,
}

/// Whatever keeps the proxy authentication counters; read at scrape time, so it
/// should only load atomics (and take short locks).
pub trait ProxyAuthSource: Send + Sync {
    /// The counts now.
    fn proxy_auth(&self) -> ProxyAuthCounts;
}

/// `safegate_proxy_auth_total{result}`, `safegate_proxy_auth_users`,
/// `safegate_proxy_auth_cached_credentials`, `safegate_proxy_auth_portal_sessions` and
/// `safegate_proxy_auth_concurrent_logins_total`.
pub struct ProxyAuthCollector {
    source: Arc<dyn ProxyAuthSource>,
    total: Spec,
    users: Spec,
    cached: Spec,
    portal_sessions: Spec,
    concurrent: Spec,
}

impl ProxyAuthCollector {
    /// Reads `source` at scrape time.
    pub fn new(source: Arc<dyn ProxyAuthSource>) -> prometheus::Result<Self> {
        Ok(Self {
            source,
            total: Spec::new(
                MetricType::COUNTER,
                "safegate_proxy_auth_total",
                "Proxy authentication outcomes since SafeGate started. result=\"cache_hit\": \
                 credentials verified earlier, no password check; \"verified\": password \
                 checked and right (a log-in, in SafeGate's log); \"failed\": wrong password, \
                 unknown or disabled user, or an unreadable header (each in SafeGate's log); \
                 \"rate_limited\": refused unchecked after too many failures from the address \
                 or for the user (auth.max_failures_per_*): a rise means someone is guessing \
                 passwords; \"challenged\": no credentials where log-in is required (407, \
                 normal for a browser's first request); \"busy\": too many log-ins waiting \
                 for a password check (503); \"portal_login\": a log-in through the login \
                 portal (its failures count as \"failed\" and \"rate_limited\"); \
                 \"directory_unreachable\": a directory log-in (auth.ldap) found no server \
                 answering (a log-in verified within auth.ldap.cache_ttl keeps working).",
                &["result"],
            )?,
            users: Spec::gauge(
                "safegate_proxy_auth_users",
                "Users in the proxy's user table (rebuilt from the database on every change).",
            )?,
            cached: Spec::gauge(
                "safegate_proxy_auth_cached_credentials",
                "Verified credentials the proxy holds (auth.credential_cache_size at most).",
            )?,
            portal_sessions: Spec::gauge(
                "safegate_proxy_auth_portal_sessions",
                "Client addresses logged in through the login portal (idle ones until swept).",
            )?,
            concurrent: Spec::counter(
                "safegate_proxy_auth_concurrent_logins_total",
                "A user logged in through the portal, or seen with proxy credentials, at a \
                 second address while still at another (auth.concurrent_logins; each in \
                 SafeGate's log as a warning). Shared year-group log-ins also count here.",
            )?,
        })
    }
}

impl Collector for ProxyAuthCollector {
    fn desc(&self) -> Vec<&Desc> {
        descs(&[
            &self.total,
            &self.users,
            &self.cached,
            &self.portal_sessions,
            &self.concurrent,
        ])
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let c = self.source.proxy_auth();
        vec![
            self.total.family(&[
                (&["cache_hit"], c.cache_hits as f64),
                (&["verified"], c.verified as f64),
                (&["failed"], c.failed as f64),
                (&["rate_limited"], c.rate_limited as f64),
                (&["challenged"], c.challenged as f64),
                (&["busy"], c.busy as f64),
                (&["portal_login"], c.portal_logins as f64),
                (&["directory_unreachable"], c.directory_unreachable as f64),
            ]),
            self.users.one(c.users as f64),
            self.cached.one(c.cached_credentials as f64),
            self.portal_sessions.one(c.portal_sessions as f64),
            self.concurrent.one(c.concurrent_logins as f64),
        ]
    }
}

/// `safegate_password_checks_total` and `safegate_password_checks_busy_total`: the
/// process's one password-check pool (proxy log-ins and admin sign-ins).
pub struct PasswordCheckCollector {
    source: Arc<CheckPool>,
    run: Spec,
    busy: Spec,
}

impl PasswordCheckCollector {
    /// Reads `source` at scrape time.
    pub fn new(source: Arc<CheckPool>) -> prometheus::Result<Self> {
        Ok(Self {
            source,
            run: Spec::counter(
                "safegate_password_checks_total",
                "Password checks (Argon2) run since SafeGate started, for proxy and portal \
                 log-ins and admin sign-ins together. Each costs one core for 20-50 ms; \
                 failures and checks in flight count against the sign-in limits before a \
                 check runs, so a guessing burst cannot drive this up.",
            )?,
            busy: Spec::counter(
                "safegate_password_checks_busy_total",
                "Log-ins and sign-ins refused at once because too many password checks were \
                 running and waiting (answered 503 with Retry-After).",
            )?,
        })
    }
}

impl Collector for PasswordCheckCollector {
    fn desc(&self) -> Vec<&Desc> {
        descs(&[&self.run, &self.busy])
    }

    fn collect(&self) -> Vec<MetricFamily> {
        vec![
            self.run.one(self.source.checks_run() as f64),
            self.busy.one(self.source.busy_refusals() as f64),
        ]
    }
}

/// The proxy's counters ([`ProxyMetrics`]), read once per scrape.
pub struct ProxyCollector {
    source: Arc<ProxyMetrics>,
    requests: Spec,
    decisions: Spec,
    request_seconds: Spec,
    decision_seconds: Spec,
    connections: Spec,
    tunnels: Spec,
    upstream_errors: Spec,
    dns: Spec,
}

impl ProxyCollector {
    /// Reads `source` at scrape time.
    pub fn new(source: Arc<ProxyMetrics>) -> prometheus::Result<Self> {
        Ok(Self {
            source,
            requests: Spec::counter(
                "safegate_requests_total",
                "Requests received by the proxy listeners since SafeGate started, of every \
                 kind (forwarded, CONNECT, transparent HTTP and HTTPS, SafeGate's own pages, \
                 refused ones).",
            )?,
            decisions: Spec::new(
                MetricType::COUNTER,
                "safegate_decisions_total",
                "Policy decisions since SafeGate started, by decision (allowed, blocked), \
                 browsing role and category: the category that blocked the request, else \
                 the site's first category, \"none\" for uncategorised sites, \"other\" \
                 beyond the first 64 category names seen.",
                &["decision", "role", "category"],
            )?,
            request_seconds: Spec::new(
                MetricType::HISTOGRAM,
                "safegate_request_duration_seconds",
                "Time from a request's arrival to its response head (the origin's answer \
                 included; a body's streaming is not).",
                &[],
            )?,
            decision_seconds: Spec::new(
                MetricType::HISTOGRAM,
                "safegate_decision_duration_seconds",
                "Time the policy took to decide one request.",
                &[],
            )?,
            connections: Spec::gauge(
                "safegate_client_connections",
                "Client connections open now (proxy.max_connections at most).",
            )?,
            tunnels: Spec::gauge(
                "safegate_tunnels",
                "CONNECT tunnels, WebSocket relays and transparent HTTPS relays open now.",
            )?,
            upstream_errors: Spec::new(
                MetricType::COUNTER,
                "safegate_upstream_errors_total",
                "Requests and tunnels whose origin could not be reached or failed, by kind \
                 (the X-SafeGate-Reason of the error page): dns-failure, connection-refused, \
                 connect-timeout, connect-failed, loop, forbidden-destination, \
                 response-timeout, upstream-protocol, upstream-certificate (a decrypted \
                 site's certificate failed verification).",
                &["kind"],
            )?,
            dns: Spec::new(
                MetricType::COUNTER,
                "safegate_dns_cache_lookups_total",
                "Host names resolved for origins: result=\"hit\" from the DNS cache (or the \
                 hosts file), \"miss\" needed a query to the DNS servers.",
                &["result"],
            )?,
        })
    }
}

impl Collector for ProxyCollector {
    fn desc(&self) -> Vec<&Desc> {
        descs(&[
            &self.requests,
            &self.decisions,
            &self.request_seconds,
            &self.decision_seconds,
            &self.connections,
            &self.tunnels,
            &self.upstream_errors,
            &self.dns,
        ])
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = self.source.snapshot();
        let decisions: Vec<([&str; 3], f64)> = s
            .decisions
            .iter()
            .map(|d| ([d.decision, d.role, &*d.category], d.count as f64))
            .collect();
        let decisions: Vec<(&[&str], f64)> = decisions
            .iter()
            .map(|(labels, count)| (&labels[..], *count))
            .collect();
        let errors: Vec<([&str; 1], f64)> = s
            .upstream_errors
            .iter()
            .map(|(kind, count)| ([*kind], *count as f64))
            .collect();
        let errors: Vec<(&[&str], f64)> = errors
            .iter()
            .map(|(labels, count)| (&labels[..], *count))
            .collect();
        vec![
            self.requests.one(s.requests as f64),
            self.decisions.family(&decisions),
            self.request_seconds.histogram(&s.request_seconds),
            self.decision_seconds.histogram(&s.decision_seconds),
            self.connections.one(s.connections as f64),
            self.tunnels.one(s.tunnels as f64),
            self.upstream_errors.family(&errors),
            self.dns.family(&[
                (&["hit"], s.dns_cache_hits as f64),
                (&["miss"], s.dns_cache_misses as f64),
            ]),
        ]
    }
}

/// The size of the policy in force, read from it at scrape time.
pub struct PolicySizeCollector {
    policy: PolicyHandle,
    entries: Spec,
    lists: Spec,
    unblocks: Spec,
    categories: Spec,
}

impl PolicySizeCollector {
    /// Reads the policy `policy` holds at scrape time.
    pub fn new(policy: PolicyHandle) -> prometheus::Result<Self> {
        Ok(Self {
            policy,
            entries: Spec::gauge(
                "safegate_policy_index_entries",
                "Entries (domains, URLs, expressions) in the compiled policy in force.",
            )?,
            lists: Spec::gauge(
                "safegate_policy_lists",
                "Distinct lists in the policy in force (categories, allow and deny lists, \
                 unblocked sites).",
            )?,
            unblocks: Spec::gauge(
                "safegate_policy_unblocks",
                "Temporary unblocks in the policy file (active, future or expired).",
            )?,
            categories: Spec::new(
                MetricType::GAUGE,
                "safegate_policy_category_entries",
                "Entries read for each category of the policy in force (domains, URLs and \
                 expressions). A category at 0 usually means its list files are missing.",
                &["category"],
            )?,
        })
    }
}

impl Collector for PolicySizeCollector {
    fn desc(&self) -> Vec<&Desc> {
        descs(&[&self.entries, &self.lists, &self.unblocks, &self.categories])
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let snapshot = self.policy.load();
        let stats = snapshot.stats();
        let categories: Vec<([&str; 1], f64)> = stats
            .categories
            .iter()
            .map(|c| {
                (
                    [c.name.as_str()],
                    (c.domains + c.urls + c.expressions) as f64,
                )
            })
            .collect();
        let categories: Vec<(&[&str], f64)> = categories
            .iter()
            .map(|(labels, count)| (&labels[..], *count))
            .collect();
        vec![
            self.entries.one(stats.index_entries as f64),
            self.lists.one(stats.lists as f64),
            self.unblocks.one(stats.unblocks as f64),
            self.categories.family(&categories),
        ]
    }
}

/// The kinds of alert SafeGate raises, the label values of `safegate_alerts_total`.
pub const ALERT_KINDS: [&str; 7] = [
    "safeguarding_phrase",
    "repeated_blocks",
    "circumvention",
    "locked_category",
    "concurrent_login",
    "heavy_use",
    "staff_social_core_hours",
];

/// Alerts raised since start, by kind ([`ALERT_KINDS`]); the alert dispatcher counts
/// here, `/metrics` reads it (every kind exported, at 0 until raised).
#[derive(Debug, Default)]
pub struct AlertCounters {
    counts: [AtomicU64; ALERT_KINDS.len()],
}

impl AlertCounters {
    /// Counts one alert of `kind`; false (and nothing counted) for an unknown kind.
    pub fn raised(&self, kind: &str) -> bool {
        match ALERT_KINDS.iter().position(|k| *k == kind) {
            Some(index) => {
                self.counts[index].fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }
}

/// `safegate_alerts_total{kind}`.
pub struct AlertCollector {
    counters: Arc<AlertCounters>,
    alerts: Spec,
}

impl AlertCollector {
    /// Reads `counters` at scrape time.
    pub fn new(counters: Arc<AlertCounters>) -> prometheus::Result<Self> {
        Ok(Self {
            counters,
            alerts: Spec::new(
                MetricType::COUNTER,
                "safegate_alerts_total",
                "Alerts raised since SafeGate started, by kind: safeguarding_phrase, \
                 repeated_blocks, circumvention, locked_category, concurrent_login, \
                 heavy_use, staff_social_core_hours.",
                &["kind"],
            )?,
        })
    }
}

impl Collector for AlertCollector {
    fn desc(&self) -> Vec<&Desc> {
        descs(&[&self.alerts])
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let samples: Vec<([&str; 1], f64)> = ALERT_KINDS
            .iter()
            .zip(&self.counters.counts)
            .map(|(kind, count)| ([*kind], count.load(Ordering::Relaxed) as f64))
            .collect();
        let samples: Vec<(&[&str], f64)> = samples
            .iter()
            .map(|(labels, count)| (&labels[..], *count))
            .collect();
        vec![self.alerts.family(&samples)]
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    struct Fixed(PolicyReloadCounts);

    impl PolicyReloadSource for Fixed {
        fn policy_reloads(&self) -> PolicyReloadCounts {
            self.0
        }
    }

    fn render(metrics: &Metrics) -> String {
        String::from_utf8(metrics.render().unwrap()).unwrap()
    }

    /// Every sample line, as (name with labels, value).
    fn samples(text: &str) -> HashMap<String, f64> {
        text.lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .map(|line| {
                let (name, value) = line.rsplit_once(' ').unwrap();
                (name.to_owned(), value.parse().unwrap())
            })
            .collect()
    }

    fn snapshot() -> VisitLogStatsSnapshot {
        VisitLogStatsSnapshot {
            queue_depth: 3,
            written: 120,
            flushed: 110,
            batches: 4,
            dropped: 2,
            write_errors: 1,
            lost: 7,
            flush_errors: 5,
            observer_dropped: 6,
            last_write_micros: 1_500,
            max_write_micros: 250_000,
            total_write_micros: 2_750_000,
            writable: false,
            retry_waiting: 9,
            write_failures: 11,
            reopens: 2,
        }
    }

    #[test]
    fn renders_every_metric_in_the_text_format() {
        let metrics = Metrics::new("1.2.3").unwrap();
        let visit_log = VisitLogCollector::with_source(true, Box::new(snapshot)).unwrap();
        metrics.register(Box::new(visit_log)).unwrap();
        let reloads = Fixed(PolicyReloadCounts {
            succeeded: 6,
            failed: 2,
            last_failed: true,
        });
        metrics
            .register(Box::new(
                PolicyReloadCollector::new(Arc::new(reloads)).unwrap(),
            ))
            .unwrap();
        let text = render(&metrics);

        assert_eq!(CONTENT_TYPE, "text/plain; version=0.0.4");
        for line in [
            "# TYPE safegate_build_info gauge",
            "safegate_build_info{version=\"1.2.3\"} 1",
            "# HELP safegate_visit_log_queue_depth Visit-log records waiting in memory",
            "# TYPE safegate_visit_log_queue_depth gauge",
            "# TYPE safegate_visit_log_records_flushed_total counter",
            "# TYPE safegate_visit_log_batch_write_seconds_max gauge",
            "# TYPE safegate_visit_log_batch_write_seconds_sum counter",
            "# TYPE safegate_policy_reloads_total counter",
            "# TYPE safegate_policy_last_reload_failed gauge",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(line)),
                "no line {line:?} in:\n{text}"
            );
        }
        let values = samples(&text);
        let expected = [
            ("safegate_build_info{version=\"1.2.3\"}", 1.0),
            ("safegate_visit_log_enabled", 1.0),
            ("safegate_visit_log_queue_depth", 3.0),
            ("safegate_visit_log_records_written_total", 120.0),
            ("safegate_visit_log_records_flushed_total", 110.0),
            ("safegate_visit_log_batches_total", 4.0),
            ("safegate_visit_log_records_dropped_total", 2.0),
            ("safegate_visit_log_write_errors_total", 1.0),
            ("safegate_visit_log_records_lost_total", 7.0),
            ("safegate_visit_log_flush_errors_total", 5.0),
            ("safegate_visit_log_observer_dropped_total", 6.0),
            ("safegate_visit_log_batch_write_seconds_last", 0.0015),
            ("safegate_visit_log_batch_write_seconds_max", 0.25),
            ("safegate_visit_log_batch_write_seconds_sum", 2.75),
            ("safegate_store_writable", 0.0),
            ("safegate_store_write_failures_total", 11.0),
            ("safegate_visit_log_records_waiting", 9.0),
            ("safegate_store_reopens_total", 2.0),
            ("safegate_policy_reloads_total{result=\"ok\"}", 6.0),
            ("safegate_policy_reloads_total{result=\"failed\"}", 2.0),
            ("safegate_policy_last_reload_failed", 1.0),
        ];
        for (name, value) in expected {
            assert_eq!(values.get(name), Some(&value), "{name} in:\n{text}");
        }
        assert_eq!(
            values.len(),
            expected.len(),
            "unexpected samples in:\n{text}"
        );
        // Every sample has its HELP and TYPE lines.
        for name in values.keys() {
            let family = name.split('{').next().unwrap();
            assert!(text.contains(&format!("# HELP {family} ")), "{family}");
            assert!(text.contains(&format!("# TYPE {family} ")), "{family}");
        }
    }

    #[test]
    fn visit_log_off_exports_zeros() {
        let metrics = Metrics::new("1.2.3").unwrap();
        metrics
            .register(Box::new(VisitLogCollector::new(None).unwrap()))
            .unwrap();
        let values = samples(&render(&metrics));
        assert_eq!(values["safegate_visit_log_enabled"], 0.0);
        assert_eq!(values["safegate_visit_log_records_flushed_total"], 0.0);
        assert_eq!(values["safegate_visit_log_queue_depth"], 0.0);
        assert_eq!(values["safegate_visit_log_batch_write_seconds_sum"], 0.0);
        assert_eq!(values["safegate_store_writable"], 1.0);
    }

    #[test]
    fn values_are_read_at_scrape_time() {
        use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
        let written = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&written);
        let read = move || VisitLogStatsSnapshot {
            written: counter.load(Relaxed),
            ..VisitLogStatsSnapshot::default()
        };
        let metrics = Metrics::new("1.2.3").unwrap();
        let collector = VisitLogCollector::with_source(true, Box::new(read)).unwrap();
        metrics.register(Box::new(collector)).unwrap();
        let name = "safegate_visit_log_records_written_total";
        assert_eq!(samples(&render(&metrics))[name], 0.0);
        written.fetch_add(42, Relaxed);
        assert_eq!(samples(&render(&metrics))[name], 42.0);
        // The real stats plug in the same way.
        let real = VisitLogCollector::new(Some(Arc::new(VisitLogStats::default()))).unwrap();
        assert!((real.read)() == VisitLogStatsSnapshot::default() && real.enabled);
    }

    #[test]
    fn a_name_registered_twice_is_refused() {
        let metrics = Metrics::new("1.2.3").unwrap();
        metrics
            .register(Box::new(VisitLogCollector::new(None).unwrap()))
            .unwrap();
        assert!(
            metrics
                .register(Box::new(VisitLogCollector::new(None).unwrap()))
                .is_err()
        );
    }

    struct AuthFixed(ProxyAuthCounts);

    impl ProxyAuthSource for AuthFixed {
        fn proxy_auth(&self) -> ProxyAuthCounts {
            self.0
        }
    }

    #[test]
    fn proxy_auth_counts_are_exported_by_result() {
        let metrics = Metrics::new("1.2.3").unwrap();
        let counts = ProxyAuthCounts {
            cache_hits: 100,
            verified: 4,
            failed: 3,
            rate_limited: 2,
            challenged: 9,
            busy: 0,
            users: 30,
            cached_credentials: 4,
            portal_logins: 5,
            portal_sessions: 2,
            concurrent_logins: 1,
            directory_unreachable: 0,
        };
        metrics
            .register(Box::new(
                ProxyAuthCollector::new(Arc::new(AuthFixed(counts))).unwrap(),
            ))
            .unwrap();
        let values = samples(&render(&metrics));
        for (name, value) in [
            ("safegate_proxy_auth_total{result=\"cache_hit\"}", 100.0),
            ("safegate_proxy_auth_total{result=\"verified\"}", 4.0),
            ("safegate_proxy_auth_total{result=\"failed\"}", 3.0),
            ("safegate_proxy_auth_total{result=\"rate_limited\"}", 2.0),
            ("safegate_proxy_auth_total{result=\"challenged\"}", 9.0),
            ("safegate_proxy_auth_total{result=\"busy\"}", 0.0),
            ("safegate_proxy_auth_users", 30.0),
            ("safegate_proxy_auth_cached_credentials", 4.0),
            ("safegate_proxy_auth_total{result=\"portal_login\"}", 5.0),
            ("safegate_proxy_auth_portal_sessions", 2.0),
            ("safegate_proxy_auth_concurrent_logins_total", 1.0),
        ] {
            assert_eq!(values.get(name), Some(&value), "{name}");
        }
    }

    #[test]
    fn proxy_counters_are_exported_with_histograms() {
        let metrics = Metrics::new("1.2.3").unwrap();
        let proxy = Arc::new(ProxyMetrics::default());
        proxy.register_categories(["games"]);
        metrics
            .register(Box::new(ProxyCollector::new(Arc::clone(&proxy)).unwrap()))
            .unwrap();
        let alerts = Arc::new(AlertCounters::default());
        assert!(alerts.raised("circumvention"));
        assert!(!alerts.raised("no_such_kind"));
        metrics
            .register(Box::new(AlertCollector::new(alerts).unwrap()))
            .unwrap();
        let text = render(&metrics);
        let values = samples(&text);
        for (name, value) in [
            ("safegate_requests_total", 0.0),
            (
                "safegate_decisions_total{decision=\"blocked\",role=\"pupil\",category=\"games\"}",
                0.0,
            ),
            (
                "safegate_decisions_total{decision=\"allowed\",role=\"staff\",category=\"none\"}",
                0.0,
            ),
            ("safegate_request_duration_seconds_count", 0.0),
            ("safegate_request_duration_seconds_bucket{le=\"+Inf\"}", 0.0),
            (
                "safegate_decision_duration_seconds_bucket{le=\"0.00001\"}",
                0.0,
            ),
            ("safegate_client_connections", 0.0),
            ("safegate_tunnels", 0.0),
            ("safegate_upstream_errors_total{kind=\"dns-failure\"}", 0.0),
            ("safegate_dns_cache_lookups_total{result=\"hit\"}", 0.0),
            ("safegate_alerts_total{kind=\"circumvention\"}", 1.0),
            (
                "safegate_alerts_total{kind=\"staff_social_core_hours\"}",
                0.0,
            ),
        ] {
            assert_eq!(values.get(name), Some(&value), "{name} in:\n{text}");
        }
        assert!(
            text.contains("# TYPE safegate_request_duration_seconds histogram"),
            "{text}"
        );
    }
}
