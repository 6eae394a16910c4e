//! The visit-log writer: the proxy hands each [`Record`] to a bounded queue without
//! waiting ([`VisitLogQueue::submit`]). The queue is sharded by thread: a record is
//! encoded on the proxy's own thread and appended to that thread's shard buffer, so
//! request threads share no lock and no memory with each other or with the writer
//! apart from one counter (the queue depth, which bounds it). One task gathers records
//! for one flush interval (or until it has about [`MAX_BATCH`]), then writes them on a
//! blocking thread with [`Store::write_batch`] as one atomic batch, storing the bytes
//! the proxy encoded as they are, and flushes sled. Large batches are
//! what make sled fast (it pays per key; see [`crate::visit_log`]), and they lose
//! nothing more on a crash than writing early and flushing on the same interval would.
//! A full queue drops the record and counts it. A batch that fails to write or flush
//! (a full disk) is kept in a retry buffer of at most the queue's capacity (beyond it
//! the oldest batches are dropped and counted as lost) and retried with back-off (100
//! ms doubling to 5 s; while the disk is full, only once it has 1 MiB free): sled
//! refuses every operation after one failed write, so a retry first reopens the
//! database ([`Store::reopen_blocking`]), then writes the kept batches, oldest first.
//! Meanwhile [`VisitLogStats::writable`] is false (one relaxed load, for the proxy's
//! `store.when_full` check) and [`VisitLogStats::failure`] says since when, how many
//! records wait and how many were lost; one error line is logged when it starts and at
//! most one a minute after. At shutdown the writer retries for 5 s more, then counts
//! what it still holds as lost. Each written batch is then handed, without waiting,
//! to an optional observer (the safeguarding alert engine), off the proxy's path.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tracing::{debug, error, info};

use crate::record_batch::{BufferPool, push_frame};
use crate::{Record, RecordBatch, RecordRef, Store, StoreError};

/// Most records written in one batch.
pub const MAX_BATCH: usize = 32_768;

/// The writer's counters, shared with whoever reports metrics. All relaxed atomics.
#[derive(Debug)]
pub struct VisitLogStats {
    queue_depth: AtomicU64,
    written: AtomicU64,
    flushed: AtomicU64,
    batches: AtomicU64,
    dropped: AtomicU64,
    write_errors: AtomicU64,
    lost: AtomicU64,
    flush_errors: AtomicU64,
    observer_dropped: AtomicU64,
    /// The minute (since the epoch) of the last "alert engine is behind" warning.
    observer_warned_minute: AtomicU64,
    last_write_micros: AtomicU64,
    max_write_micros: AtomicU64,
    total_write_micros: AtomicU64,
    writable: AtomicBool,
    failing_since_secs: AtomicU64,
    disk_full: AtomicBool,
    retry_waiting: AtomicU64,
    write_failures: AtomicU64,
    reopens: AtomicU64,
    last_error: Mutex<String>,
}

impl Default for VisitLogStats {
    fn default() -> Self {
        Self {
            queue_depth: AtomicU64::default(),
            written: AtomicU64::default(),
            flushed: AtomicU64::default(),
            batches: AtomicU64::default(),
            dropped: AtomicU64::default(),
            write_errors: AtomicU64::default(),
            lost: AtomicU64::default(),
            flush_errors: AtomicU64::default(),
            observer_dropped: AtomicU64::default(),
            observer_warned_minute: AtomicU64::default(),
            last_write_micros: AtomicU64::default(),
            max_write_micros: AtomicU64::default(),
            total_write_micros: AtomicU64::default(),
            writable: AtomicBool::new(true),
            failing_since_secs: AtomicU64::default(),
            disk_full: AtomicBool::default(),
            retry_waiting: AtomicU64::default(),
            write_failures: AtomicU64::default(),
            reopens: AtomicU64::default(),
            last_error: Mutex::default(),
        }
    }
}

/// Why the writer cannot write, while it cannot (see [`VisitLogStats::failure`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteFailure {
    /// Since when (Unix seconds): the first failed write of this spell.
    pub since_unix_secs: u64,
    /// The disk (or the file system's quota) is full.
    pub disk_full: bool,
    /// Records kept in memory to be written when it can (the queue and the retry
    /// buffer).
    pub waiting: u64,
    /// Records lost since the start (retry buffer full, or shut down while failing).
    pub lost: u64,
    /// The last error, as the database reported it.
    pub error: String,
}

impl std::fmt::Display for WriteFailure {
    /// `cannot write the visit log: disk full since 10:42 (UTC), 1200 records waiting,
    /// 0 lost`, in the system's time zone.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let since = i64::try_from(self.since_unix_secs)
            .ok()
            .and_then(|secs| jiff::Timestamp::from_second(secs).ok())
            .map(|at| {
                at.to_zoned_datetime(jiff::tz::TimeZone::system())
                    .strftime("%H:%M")
                    .to_string()
            })
            .unwrap_or_else(|| "?".to_owned());
        let what = if self.disk_full {
            "disk full".to_owned()
        } else {
            format!("database error ({})", self.error)
        };
        write!(
            f,
            "cannot write the visit log: {what} since {since}, {} records waiting, {} lost",
            self.waiting, self.lost
        )
    }
}

/// A copy of the writer's counters at one moment (the default: nothing done, nothing
/// failed, writable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VisitLogStatsSnapshot {
    /// Records queued and not yet taken by the writer (approximate).
    pub queue_depth: u64,
    /// Records written to sled (not necessarily flushed yet).
    pub written: u64,
    /// Records written and flushed to disk: these survive a crash.
    pub flushed: u64,
    /// Batches written.
    pub batches: u64,
    /// Records dropped because the queue was full or the writer had stopped.
    pub dropped: u64,
    /// Batches that failed to write.
    pub write_errors: u64,
    /// Records in the batches that failed.
    pub lost: u64,
    /// Flushes that failed.
    pub flush_errors: u64,
    /// Records written but not passed to the observer because it was behind.
    pub observer_dropped: u64,
    /// Time to write and flush the last batch, microseconds.
    pub last_write_micros: u64,
    /// Longest batch write and flush, microseconds.
    pub max_write_micros: u64,
    /// Sum of batch write and flush times, microseconds (mean = total / batches).
    pub total_write_micros: u64,
    /// The writer can write (false from a failed write until one succeeds again).
    pub writable: bool,
    /// Records in the retry buffer (taken from the queue, not written yet).
    pub retry_waiting: u64,
    /// Failed attempts to write or flush, first tries and retries.
    pub write_failures: u64,
    /// Times the database was reopened to recover from a failed write.
    pub reopens: u64,
}

impl Default for VisitLogStatsSnapshot {
    fn default() -> Self {
        VisitLogStats::default().snapshot()
    }
}

impl VisitLogStats {
    /// The current values.
    pub fn snapshot(&self) -> VisitLogStatsSnapshot {
        VisitLogStatsSnapshot {
            queue_depth: self.queue_depth.load(Relaxed),
            written: self.written.load(Relaxed),
            flushed: self.flushed.load(Relaxed),
            batches: self.batches.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            write_errors: self.write_errors.load(Relaxed),
            lost: self.lost.load(Relaxed),
            flush_errors: self.flush_errors.load(Relaxed),
            observer_dropped: self.observer_dropped.load(Relaxed),
            last_write_micros: self.last_write_micros.load(Relaxed),
            max_write_micros: self.max_write_micros.load(Relaxed),
            total_write_micros: self.total_write_micros.load(Relaxed),
            writable: self.writable.load(Relaxed),
            retry_waiting: self.retry_waiting.load(Relaxed),
            write_failures: self.write_failures.load(Relaxed),
            reopens: self.reopens.load(Relaxed),
        }
    }

    /// Whether the writer can write: one relaxed load, for the proxy's hot path.
    pub fn writable(&self) -> bool {
        self.writable.load(Relaxed)
    }

    /// Why the writer cannot write; `None` while it can.
    pub fn failure(&self) -> Option<WriteFailure> {
        if self.writable() {
            return None;
        }
        Some(WriteFailure {
            since_unix_secs: self.failing_since_secs.load(Relaxed),
            disk_full: self.disk_full.load(Relaxed),
            waiting: self.queue_depth.load(Relaxed) + self.retry_waiting.load(Relaxed),
            lost: self.lost.load(Relaxed),
            error: lock_any(&self.last_error).clone(),
        })
    }

    /// Notes a failed attempt; true when it starts a spell of failures.
    fn failed(&self, error: &StoreError) -> bool {
        self.write_failures.fetch_add(1, Relaxed);
        self.disk_full.store(is_disk_full(error), Relaxed);
        *lock_any(&self.last_error) = error.to_string();
        let started = self.writable.swap(false, Relaxed);
        if started {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            self.failing_since_secs.store(now, Relaxed);
        }
        started
    }
}

/// Locks a mutex whose holder cannot leave it inconsistent (a plain value).
fn lock_any<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The error says the disk or the user's quota is full.
fn is_disk_full(error: &StoreError) -> bool {
    use std::io::ErrorKind;
    let kind = match error {
        StoreError::Database(sled::Error::Io(io)) | StoreError::Io(io) => io.kind(),
        _ => return false,
    };
    matches!(kind, ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
}

/// Shards of the queue: each thread appends to its own (chosen once per thread), so
/// proxy threads never contend for one lock or share the memory they hand over.
const SHARDS: usize = 16;

/// The index of the calling thread's shard.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Relaxed) % SHARDS;
    }
    SHARD.with(|shard| *shard)
}

/// Records waiting for the writer, as frames (see [`crate::record_batch`]).
#[derive(Debug, Default)]
struct Shard {
    bytes: Vec<u8>,
    records: usize,
}

/// How long the writer waits with nothing queued before freeing the buffers that the
/// busiest flushes grew.
const IDLE_TRIM_AFTER: Duration = Duration::from_secs(2);

/// What the queue handles and the writer share.
#[derive(Debug)]
struct Shared {
    shards: Box<[Mutex<Shard>]>,
    capacity: u64,
    stats: Arc<VisitLogStats>,
    /// Wakes the idle writer when a record arrives after a drain.
    arrived: Notify,
    /// Cuts the writer's flush-interval wait short: the high-water mark, or closing.
    urgent: Notify,
    high_water: u64,
    /// Set when the last queue handle is dropped, or when the writer has stopped.
    closed: AtomicBool,
    /// Emptied shard buffers, back from written batches.
    pool: Arc<BufferPool>,
}

impl Shared {
    fn submit(&self, record: &RecordRef<'_>) -> bool {
        if self.closed.load(Relaxed) {
            self.stats.dropped.fetch_add(1, Relaxed);
            return false;
        }
        let depth = self.stats.queue_depth.fetch_add(1, Relaxed) + 1;
        if depth > self.capacity {
            self.stats.queue_depth.fetch_sub(1, Relaxed);
            self.stats.dropped.fetch_add(1, Relaxed);
            return false;
        }
        // Encoding here, on the proxy's thread, straight into its own shard (no other
        // request thread uses it, so the lock is not contended): the writer gets one
        // buffer per shard, which it stores as it is.
        let framed = {
            let mut shard = lock(&self.shards[shard_index()]);
            let framed = push_frame(&mut shard.bytes, record);
            shard.records += usize::from(framed);
            framed
        };
        if !framed {
            self.stats.queue_depth.fetch_sub(1, Relaxed);
            self.stats.dropped.fetch_add(1, Relaxed);
            return false;
        }
        if depth == 1 {
            self.arrived.notify_one();
        }
        if depth == self.high_water {
            self.urgent.notify_one();
        }
        true
    }

    /// Frees the spare buffers and the empty shards' buffers (called when idle).
    fn trim_idle(&self) {
        self.pool.clear();
        for shard in &self.shards {
            let mut shard = lock(shard);
            if shard.records == 0 {
                shard.bytes = Vec::new();
            }
        }
    }

    /// Takes every shard's records, up to about `limit`, leaving the rest queued.
    fn drain(&self, limit: usize) -> (Vec<Vec<u8>>, usize) {
        let mut taken = Vec::new();
        let mut records = 0;
        for shard in &self.shards {
            if records >= limit {
                break;
            }
            let mut shard = lock(shard);
            if shard.records > 0 {
                records += shard.records;
                shard.records = 0;
                taken.push(std::mem::replace(&mut shard.bytes, self.pool.take()));
            }
        }
        self.stats.queue_depth.fetch_sub(records as u64, Relaxed);
        (taken, records)
    }
}

/// Locks a shard; a panic while it was held cannot leave it inconsistent (a frame is
/// counted after it is whole), so poisoning is ignored.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The sending side of the visit log, given to the proxy; cheap to clone. Never waits.
/// The writer drains what was queued and stops when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct VisitLogQueue {
    handle: Arc<QueueHandle>,
}

#[derive(Debug)]
struct QueueHandle {
    shared: Arc<Shared>,
}

impl Drop for QueueHandle {
    fn drop(&mut self) {
        self.shared.closed.store(true, Relaxed);
        self.shared.arrived.notify_one();
        self.shared.urgent.notify_one();
    }
}

impl VisitLogQueue {
    /// Queues a record; false (and counted as dropped) when the queue is full or the
    /// writer has stopped.
    pub fn submit(&self, record: Record) -> bool {
        self.handle.shared.submit(&record.as_ref())
    }

    /// The writer's counters.
    pub fn stats(&self) -> &Arc<VisitLogStats> {
        &self.handle.shared.stats
    }
}

/// Starts the writer task draining a queue `capacity` records deep into the store,
/// writing and flushing a batch at most `flush_interval` after its first record
/// arrived (what a crash can lose). Every batch written is then offered to `observer`
/// (never waiting: a full observer queue counts the batch's records as
/// `observer_dropped`). It ends when every `VisitLogQueue` has been dropped, after
/// writing and flushing what was queued.
pub fn spawn_visit_log_writer(
    store: Store,
    capacity: usize,
    flush_interval: Duration,
    observer: Option<mpsc::Sender<RecordBatch>>,
) -> (VisitLogQueue, JoinHandle<()>) {
    let capacity = capacity.max(1);
    let shared = Arc::new(Shared {
        shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        capacity: capacity as u64,
        stats: Arc::new(VisitLogStats::default()),
        arrived: Notify::new(),
        urgent: Notify::new(),
        high_water: (capacity / 2).clamp(1, MAX_BATCH) as u64,
        closed: AtomicBool::new(false),
        pool: Arc::default(),
    });
    let task = tokio::spawn(run_writer(
        store,
        Arc::clone(&shared),
        flush_interval,
        observer,
    ));
    let queue = VisitLogQueue {
        handle: Arc::new(QueueHandle { shared }),
    };
    (queue, task)
}

/// Marks the queue closed when the writer ends (normally or by a panic), so later
/// records are counted as dropped at once instead of filling the queue.
struct MarkClosedOnExit(Arc<Shared>);

impl Drop for MarkClosedOnExit {
    fn drop(&mut self) {
        self.0.closed.store(true, Relaxed);
    }
}

/// First wait before retrying a failed write.
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// Longest wait between retries.
const LONGEST_RETRY: Duration = Duration::from_secs(5);
/// How long the writer keeps retrying, once the queue is closed (shutting down),
/// before it counts what it still holds as lost.
const SHUTDOWN_RETRY: Duration = Duration::from_secs(5);
/// Free space the data directory needs before a retry is tried after the disk was
/// full (a retry reopens the database, which is not free, and fills it again at once
/// if there is no room).
const FREE_TO_RETRY: u64 = 1024 * 1024;
/// Least time between two error lines while the writer keeps failing.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Batches taken from the queue and not written yet because writing failed, oldest
/// first; at most the queue's capacity in records (beyond, the oldest are lost).
struct RetryBuffer {
    batches: std::collections::VecDeque<RecordBatch>,
    records: u64,
    capacity: u64,
    /// A failed write has left sled refusing everything until it is reopened.
    reopen: bool,
    /// The next retry's wait.
    backoff: Duration,
    /// When the last error line was logged.
    logged: Option<Instant>,
}

impl RetryBuffer {
    fn new(capacity: u64) -> Self {
        Self {
            batches: std::collections::VecDeque::new(),
            records: 0,
            capacity,
            reopen: false,
            backoff: FIRST_RETRY,
            logged: None,
        }
    }

    /// Keeps `batch` for later, dropping the oldest batches beyond the bound.
    fn keep(&mut self, batch: RecordBatch, stats: &VisitLogStats) {
        self.records += batch.len() as u64;
        self.batches.push_back(batch);
        while self.records > self.capacity && self.batches.len() > 1 {
            if let Some(oldest) = self.batches.pop_front() {
                let n = oldest.len() as u64;
                self.records -= n;
                stats.lost.fetch_add(n, Relaxed);
            }
        }
        stats.retry_waiting.store(self.records, Relaxed);
    }

    fn take_front(&mut self, stats: &VisitLogStats) -> Option<RecordBatch> {
        let batch = self.batches.pop_front()?;
        self.records -= batch.len() as u64;
        stats.retry_waiting.store(self.records, Relaxed);
        Some(batch)
    }

    fn put_back(&mut self, batch: RecordBatch, stats: &VisitLogStats) {
        self.records += batch.len() as u64;
        self.batches.push_front(batch);
        stats.retry_waiting.store(self.records, Relaxed);
    }

    /// Gives up on everything held (shutting down while the disk is still full).
    fn abandon(&mut self, stats: &VisitLogStats) {
        stats.lost.fetch_add(self.records, Relaxed);
        self.batches.clear();
        self.records = 0;
        stats.retry_waiting.store(0, Relaxed);
    }

    /// Logs a failure: at once when a spell starts, then at most once a minute.
    fn log_failure(&mut self, started: bool, err: &StoreError, stats: &VisitLogStats) {
        let due = started || self.logged.is_none_or(|at| at.elapsed() >= LOG_EVERY);
        if due {
            self.logged = Some(Instant::now());
            let waiting = self.records + stats.queue_depth.load(Relaxed);
            let lost = stats.lost.load(Relaxed);
            error!(%err, waiting, lost, "VISIT LOG CANNOT BE WRITTEN: records are kept in memory \
                   and written when the database takes writes again");
        }
    }
}

/// The writer's loop. It is woken when a record arrives after a drain, then sleeps
/// through the flush interval while records queue up (a wake-up per record would cost
/// the proxy a cross-thread wake and a context switch per request), unless the queue
/// reaches its high-water mark or is closed first; then it takes everything queued
/// (about [`MAX_BATCH`] at most) and writes it as one batch. While writes fail, the
/// batches wait in a [`RetryBuffer`] and are retried with back-off.
async fn run_writer(
    store: Store,
    shared: Arc<Shared>,
    flush_interval: Duration,
    observer: Option<mpsc::Sender<RecordBatch>>,
) {
    let flush_interval = flush_interval.max(Duration::from_millis(1));
    let stats = Arc::clone(&shared.stats);
    let _stopped = MarkClosedOnExit(Arc::clone(&shared));
    let mut retry = RetryBuffer::new(shared.capacity);
    let mut closed_at: Option<Instant> = None;
    loop {
        let closed = shared.closed.load(Relaxed);
        if closed {
            closed_at.get_or_insert_with(Instant::now);
        }
        let failing = !retry.batches.is_empty();
        if !closed && !failing && stats.queue_depth.load(Relaxed) == 0 {
            // Idle: after a quiet spell the buffers sized for the busiest flush go
            // back to the allocator (resident memory stays flat between bursts).
            if tokio::time::timeout(IDLE_TRIM_AFTER, shared.arrived.notified())
                .await
                .is_err()
            {
                shared.trim_idle();
                shared.arrived.notified().await;
            }
            continue;
        }
        let wait = if failing {
            Some(retry.backoff)
        } else if !closed && stats.queue_depth.load(Relaxed) < shared.high_water {
            Some(flush_interval)
        } else {
            None
        };
        if let Some(wait) = wait {
            let deadline = tokio::time::Instant::now() + wait;
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = shared.urgent.notified() => {}
            }
        }
        let (buffers, records) = shared.drain(MAX_BATCH);
        if records > 0 {
            let batch =
                RecordBatch::from_frames(buffers).returning_buffers_to(Arc::clone(&shared.pool));
            retry.keep(batch, &stats);
        } else if retry.batches.is_empty() {
            if closed {
                break;
            }
            continue;
        }
        write_held(&store, &mut retry, &shared, observer.as_ref()).await;
        if let Some(at) = closed_at
            && !retry.batches.is_empty()
            && at.elapsed() >= SHUTDOWN_RETRY
        {
            error!(
                records = retry.records,
                "VISIT LOG RECORDS LOST: shutting down while the database cannot be written"
            );
            retry.abandon(&stats);
        }
    }
}

/// Writes the held batches, oldest first, until one fails (it stays held, and the
/// back-off grows) or all are written (the writer is writable again).
async fn write_held(
    store: &Store,
    retry: &mut RetryBuffer,
    shared: &Shared,
    observer: Option<&mpsc::Sender<RecordBatch>>,
) {
    let stats = &shared.stats;
    if retry.reopen || !stats.writable() {
        if stats.disk_full.load(Relaxed)
            && store
                .available_space()
                .is_ok_and(|free| free < FREE_TO_RETRY)
        {
            retry.backoff = (retry.backoff * 2).min(LONGEST_RETRY);
            return;
        }
        if retry.reopen {
            let reopening = store.clone();
            match tokio::task::spawn_blocking(move || reopening.reopen_blocking()).await {
                Ok(Ok(())) => {
                    retry.reopen = false;
                    stats.reopens.fetch_add(1, Relaxed);
                }
                Ok(Err(err)) => {
                    let started = stats.failed(&err);
                    retry.log_failure(started, &err, stats);
                    retry.backoff = (retry.backoff * 2).min(LONGEST_RETRY);
                    return;
                }
                Err(join) => {
                    error!(%join, "reopening the database failed");
                    return;
                }
            }
        }
    }
    while let Some(batch) = retry.take_front(stats) {
        match write_and_flush(store, batch, stats).await {
            Ok(batch) => {
                if !stats.writable.swap(true, Relaxed) {
                    info!("the visit log is written again");
                }
                retry.backoff = FIRST_RETRY;
                retry.logged = None;
                offer(observer, batch, stats);
            }
            Err((batch, err)) => {
                let Some(batch) = batch else {
                    continue;
                };
                let started = stats.failed(&err);
                retry.log_failure(started, &err, stats);
                // sled refuses everything after a failed write to disk.
                retry.reopen = true;
                if !started {
                    retry.backoff = (retry.backoff * 2).min(LONGEST_RETRY);
                }
                retry.put_back(batch, stats);
                return;
            }
        }
    }
}

/// Warns, at most once a minute, that written records were not checked for alerts
/// because the observer (the alert engine) was behind.
fn warn_not_observed(stats: &VisitLogStats, total: u64) {
    let minute = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() / 60);
    if stats.observer_warned_minute.swap(minute, Relaxed) != minute {
        tracing::warn!(
            not_checked = total,
            "the alert engine is behind: records were logged but not checked for \
             safeguarding alerts (safegate_visit_log_observer_dropped_total; at most one \
             such line a minute)"
        );
    }
}

/// Hands a written batch to the observer without waiting.
fn offer(observer: Option<&mpsc::Sender<RecordBatch>>, batch: RecordBatch, stats: &VisitLogStats) {
    if let Some(observer) = observer
        && !batch.is_empty()
    {
        let n = batch.len() as u64;
        if observer.try_send(batch).is_err() {
            let before = stats.observer_dropped.fetch_add(n, Relaxed);
            warn_not_observed(stats, before + n);
        }
    }
}

/// Writes a batch as one atomic sled batch and flushes it, on a blocking thread. On
/// success gives the batch back (for the observer); on failure gives it back to be
/// retried, or `None` when it can never be written (it is counted as lost).
async fn write_and_flush(
    store: &Store,
    batch: RecordBatch,
    stats: &VisitLogStats,
) -> Result<RecordBatch, (Option<RecordBatch>, StoreError)> {
    let writing = store.clone();
    let n = batch.len() as u64;
    let started = Instant::now();
    let result = tokio::task::spawn_blocking(move || {
        let written = writing.write_batch(&batch);
        let flushed = written.is_ok().then(|| writing.flush_blocking());
        (batch, written, flushed)
    })
    .await;
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    stats.last_write_micros.store(micros, Relaxed);
    stats.max_write_micros.fetch_max(micros, Relaxed);
    stats.total_write_micros.fetch_add(micros, Relaxed);
    stats.batches.fetch_add(1, Relaxed);
    let (batch, written, flushed) = match result {
        Ok(outcome) => outcome,
        Err(err) => {
            stats.write_errors.fetch_add(1, Relaxed);
            stats.lost.fetch_add(n, Relaxed);
            error!(%err, records = n, "VISIT LOG RECORDS NOT WRITTEN: writer thread failed");
            return Err((None, StoreError::Reopening));
        }
    };
    if let Err(err) = written {
        stats.write_errors.fetch_add(1, Relaxed);
        if retryable(&err) {
            return Err((Some(batch), err));
        }
        stats.lost.fetch_add(n, Relaxed);
        error!(%err, records = n, "VISIT LOG RECORDS NOT WRITTEN: database error");
        return Err((None, err));
    }
    stats.written.fetch_add(n, Relaxed);
    match flushed {
        Some(Err(err)) => {
            stats.flush_errors.fetch_add(1, Relaxed);
            // Written to sled's memory only: sled is reopened from disk, so the
            // batch is written again.
            stats.written.fetch_sub(n, Relaxed);
            Err((Some(batch), err))
        }
        _ => {
            let flushed = stats.flushed.fetch_add(n, Relaxed) + n;
            debug!(
                records = n,
                flushed, micros, "visit log batch written and flushed"
            );
            Ok(batch)
        }
    }
}

/// A write that failed this way may succeed later (disk space freed, the database
/// reopened); a record that cannot be encoded never will.
fn retryable(error: &StoreError) -> bool {
    matches!(
        error,
        StoreError::Database(_) | StoreError::Io(_) | StoreError::Reopening | StoreError::Busy
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn batch(n: usize) -> RecordBatch {
        let record = crate::record::tests::sample(10, "al", "a.example");
        RecordBatch::from_records(&vec![record; n])
    }

    #[test]
    fn the_retry_buffer_is_bounded_and_counts_what_it_drops() {
        let stats = VisitLogStats::default();
        let mut retry = RetryBuffer::new(10);
        retry.keep(batch(4), &stats);
        retry.keep(batch(4), &stats);
        assert_eq!((retry.records, stats.snapshot().lost), (8, 0));
        // Over the bound: the oldest batch goes, counted as lost.
        retry.keep(batch(4), &stats);
        let snapshot = stats.snapshot();
        assert_eq!(
            (retry.records, snapshot.retry_waiting, snapshot.lost),
            (8, 8, 4)
        );
        let front = retry.take_front(&stats).unwrap();
        assert_eq!((front.len(), stats.snapshot().retry_waiting), (4, 4));
        retry.put_back(front, &stats);
        retry.abandon(&stats);
        assert_eq!(
            (stats.snapshot().retry_waiting, stats.snapshot().lost),
            (0, 12)
        );
    }

    #[test]
    fn a_failure_says_since_when_how_many_wait_and_how_many_were_lost() {
        let stats = VisitLogStats::default();
        assert!(stats.failure().is_none() && stats.writable());
        let full = StoreError::Io(std::io::Error::from(std::io::ErrorKind::StorageFull));
        assert!(stats.failed(&full));
        assert!(!stats.failed(&full), "one spell, started once");
        stats.retry_waiting.store(7, Relaxed);
        stats.lost.store(2, Relaxed);
        let text = stats.failure().unwrap().to_string();
        assert!(
            text.starts_with("cannot write the visit log: disk full since "),
            "{text}"
        );
        assert!(text.ends_with(", 7 records waiting, 2 lost"), "{text}");
        assert_eq!(stats.snapshot().write_failures, 2);
    }
}
