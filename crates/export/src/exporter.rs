//! The exporter: one task that ships the outbox to ClickHouse, oldest first. It takes
//! up to `batch_records` entries (left in the outbox), inserts them (visits and alerts,
//! one insert each), and removes them only once ClickHouse has said 200 to both (the
//! next run is read and encoded while one is inserted, and removed while the next
//! is); on a failure it keeps them and tries again with back-off (100 ms doubling to 10 s). A
//! crash between the insert and the removal sends the entries again under the same
//! ids: at-least-once delivery, counted once by the tables' deduplication. The proxy
//! never waits on it: records reach the outbox through the visit-log writer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prometheus::core::Collector;
use safegate_store::Store;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::client::ClickHouse;
use crate::config::ClickHouseConfig;
use crate::{ExportError, rows};

const FIRST_RETRY: Duration = Duration::from_millis(100);
const LONGEST_RETRY: Duration = Duration::from_secs(10);
/// Least time between two error lines while inserts keep failing.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// The exporter's counters (relaxed atomics).
pub struct ExportStats {
    store: Store,
    /// Visit rows ClickHouse accepted.
    pub visits_sent: AtomicU64,
    /// Alert rows ClickHouse accepted.
    pub alerts_sent: AtomicU64,
    /// Inserts that failed (each is retried).
    pub failures: AtomicU64,
    /// The last insert succeeded (or none was needed yet).
    pub up: AtomicBool,
    /// Unix seconds of the last successful insert.
    pub last_sent_unix: AtomicU64,
}

impl ExportStats {
    /// Counters for the outbox of `store`.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            visits_sent: AtomicU64::new(0),
            alerts_sent: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            up: AtomicBool::new(true),
            last_sent_unix: AtomicU64::new(0),
        }
    }

    /// Entries waiting in the outbox.
    pub fn backlog(&self) -> u64 {
        self.store.outbox_backlog()
    }
}

/// The exporter's metrics, read at scrape time.
pub struct ExportCollector {
    stats: Arc<ExportStats>,
    descs: Vec<prometheus::core::Desc>,
}

impl ExportCollector {
    /// Metrics of `stats`.
    pub fn new(stats: Arc<ExportStats>) -> prometheus::Result<Self> {
        let descs = Self::families(&stats)?
            .iter()
            .flat_map(|c| c.desc().into_iter().cloned())
            .collect();
        Ok(Self { stats, descs })
    }

    fn families(stats: &ExportStats) -> prometheus::Result<Vec<Box<dyn Collector>>> {
        use prometheus::{IntCounterVec, IntGauge, Opts};
        let backlog = IntGauge::new(
            "safegate_export_backlog",
            "Visit records and alerts waiting in the export outbox for the trust's ClickHouse.",
        )?;
        backlog.set(i64::try_from(stats.backlog()).unwrap_or(i64::MAX));
        let up = IntGauge::new(
            "safegate_export_up",
            "1 while the last insert into ClickHouse succeeded, 0 while they fail.",
        )?;
        up.set(i64::from(stats.up.load(Relaxed)));
        let sent = IntCounterVec::new(
            Opts::new(
                "safegate_export_sent_total",
                "Rows ClickHouse accepted, by kind (visit, alert); retries count again.",
            ),
            &["kind"],
        )?;
        sent.with_label_values(&["visit"])
            .inc_by(stats.visits_sent.load(Relaxed));
        sent.with_label_values(&["alert"])
            .inc_by(stats.alerts_sent.load(Relaxed));
        let failures = prometheus::IntCounter::new(
            "safegate_export_failures_total",
            "Inserts into ClickHouse that failed (they are retried).",
        )?;
        failures.inc_by(stats.failures.load(Relaxed));
        Ok(vec![
            Box::new(backlog),
            Box::new(up),
            Box::new(sent),
            Box::new(failures),
        ])
    }
}

impl Collector for ExportCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        Self::families(&self.stats)
            .map(|all| all.iter().flat_map(|c| c.collect()).collect())
            .unwrap_or_default()
    }
}

/// Turns the outbox on (if it is not yet) and starts the exporter, counting into
/// `stats`. The task ends on `shutdown`.
pub fn spawn(
    store: &Store,
    config: &ClickHouseConfig,
    stats: Arc<ExportStats>,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, ExportError> {
    let client = ClickHouse::new(config)?;
    let node = store.enable_outbox()?;
    info!(
        node = format!("{node:016x}"),
        school = %config.school,
        waiting = stats.backlog(),
        "exporting visit records and alerts to ClickHouse"
    );
    let task = tokio::spawn(run(
        Exporter {
            store: store.clone(),
            client,
            config: config.clone(),
            node,
            stats,
        },
        shutdown,
    ));
    Ok(task)
}

struct Exporter {
    store: Store,
    client: ClickHouse,
    config: ClickHouseConfig,
    node: u64,
    stats: Arc<ExportStats>,
}

async fn run(exporter: Exporter, shutdown: CancellationToken) {
    let mut backoff = FIRST_RETRY;
    let mut logged: Option<std::time::Instant> = None;
    loop {
        let wait = match exporter.ship_once().await {
            Ok(0) => exporter.config.interval,
            Ok(_) => {
                backoff = FIRST_RETRY;
                if !exporter.stats.up.swap(true, Relaxed) {
                    info!("ClickHouse takes the export again");
                    logged = None;
                }
                // ship_once has sent until a run was short: caught up.
                exporter.config.interval
            }
            Err(error) => {
                exporter.stats.failures.fetch_add(1, Relaxed);
                let started = exporter.stats.up.swap(false, Relaxed);
                if started || logged.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
                    logged = Some(std::time::Instant::now());
                    warn!(%error, waiting = exporter.stats.backlog(),
                        "cannot export to ClickHouse: the records wait in the outbox and are sent again");
                }
                let wait = backoff;
                backoff = (backoff * 2).min(LONGEST_RETRY);
                wait
            }
        };
        if shutdown.is_cancelled() {
            return;
        }
        if !wait.is_zero() {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// One run of outbox entries read and encoded, ready to insert.
struct Prepared {
    entries: Vec<safegate_store::OutboxEntry>,
    bodies: rows::Bodies,
}

impl Prepared {
    /// The last entry's key: the next run starts after it.
    fn last_key(&self) -> Option<[u8; 12]> {
        self.entries.last().map(|entry| entry.key)
    }
}

/// Waits for a blocking task of the exporter.
async fn joined<T>(task: JoinHandle<Result<T, ExportError>>) -> Result<T, ExportError> {
    task.await.map_err(|e| ExportError::Task(e.to_string()))?
}

impl Exporter {
    /// Reads and encodes (on a blocking thread) up to `batch_records` entries after
    /// `after`.
    fn prepare(&self, after: Option<[u8; 12]>) -> JoinHandle<Result<Prepared, ExportError>> {
        let store = self.store.clone();
        let limit = self.config.batch_records;
        let (node, school) = (self.node, self.config.school.clone());
        tokio::task::spawn_blocking(move || {
            let entries = store.outbox_peek_after(after.as_ref(), limit)?;
            let bodies = rows::encode(node, &school, &entries)?;
            Ok(Prepared { entries, bodies })
        })
    }

    /// Sends the outbox until a run is shorter than `batch_records` (caught up); how
    /// many entries went (0: it was empty).
    /// Three steps overlap: the next run is read and encoded, and the last one
    /// removed, while the current one is inserted (the drain is CPU-bound, shared
    /// with ClickHouse). A failed insert keeps its run and everything after it.
    async fn ship_once(&self) -> Result<usize, ExportError> {
        let mut current = joined(self.prepare(None)).await?;
        let mut removal: Option<JoinHandle<Result<(), ExportError>>> = None;
        let mut sent = 0;
        while !current.entries.is_empty() {
            // A full run means more wait: read the next meanwhile. A short one means
            // the outbox has caught up: stop after it and let records gather for
            // `interval` (many tiny inserts cost the proxy and ClickHouse more).
            let full = current.entries.len() >= self.config.batch_records;
            let next = full.then(|| self.prepare(current.last_key()));
            let inserted = self.insert(&mut current.bodies).await;
            if let Some(previous) = removal.take() {
                joined(previous).await?;
            }
            inserted?;
            self.count(&current.bodies);
            sent += current.entries.len();
            let store = self.store.clone();
            let entries = std::mem::take(&mut current.entries);
            removal = Some(tokio::task::spawn_blocking(move || {
                Ok(store.outbox_remove(&entries)?)
            }));
            match next {
                Some(next) => current = joined(next).await?,
                None => break,
            }
        }
        if let Some(previous) = removal {
            joined(previous).await?;
        }
        Ok(sent)
    }

    /// Inserts one run's visits and alerts (the bodies are handed over).
    async fn insert(&self, bodies: &mut rows::Bodies) -> Result<(), ExportError> {
        if bodies.visit_rows > 0 {
            let visits = std::mem::take(&mut bodies.visits);
            self.client
                .insert_binary(
                    &self.config.visits(),
                    crate::row_binary::VISIT_INSERT_COLUMNS,
                    visits,
                )
                .await?;
        }
        if bodies.alert_rows > 0 {
            let alerts = std::mem::take(&mut bodies.alerts);
            self.client.insert(&self.config.alerts(), alerts).await?;
        }
        if bodies.unreadable > 0 {
            warn!(
                entries = bodies.unreadable,
                "export outbox: entries that cannot be read were dropped"
            );
        }
        Ok(())
    }

    /// Counts what ClickHouse accepted.
    fn count(&self, bodies: &rows::Bodies) {
        let stats = &self.stats;
        stats
            .visits_sent
            .fetch_add(bodies.visit_rows as u64, Relaxed);
        stats
            .alerts_sent
            .fetch_add(bodies.alert_rows as u64, Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        stats.last_sent_unix.store(now, Relaxed);
    }
}
