//! The visit-log writer: the proxy hands each [`Record`] to a bounded queue without
//! waiting ([`VisitLogQueue::submit`]); one task gathers records for one flush interval
//! (or until it has [`MAX_BATCH`]), then writes them on a blocking thread with
//! [`Store::write_records`] as one atomic batch and flushes sled. Large batches are
//! what make sled fast (it pays per key; see [`crate::visit_log`]), and they lose
//! nothing more on a crash than writing early and flushing on the same interval would.
//! A full queue drops the record and counts it; a sled error is logged, counted, and
//! the writer goes on. Each written batch is then handed, without waiting, to an
//! optional observer (the safeguarding alert engine), off the proxy's path.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tracing::{debug, error};

use crate::{Record, Store};

/// Most records written in one batch.
pub const MAX_BATCH: usize = 32_768;

/// The writer's counters, shared with whoever reports metrics. All relaxed atomics.
#[derive(Debug, Default)]
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
    last_write_micros: AtomicU64,
    max_write_micros: AtomicU64,
    total_write_micros: AtomicU64,
}

/// A copy of the writer's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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
        }
    }
}

/// The sending side of the visit log, given to the proxy; cheap to clone. Never waits.
#[derive(Debug, Clone)]
pub struct VisitLogQueue {
    sender: mpsc::Sender<Record>,
    stats: Arc<VisitLogStats>,
    /// Wakes the writer early when the queue reaches `high_water`.
    wake: Arc<Notify>,
    high_water: u64,
}

impl VisitLogQueue {
    /// Queues a record; false (and counted as dropped) when the queue is full or the
    /// writer has stopped.
    pub fn submit(&self, record: Record) -> bool {
        let depth = self.stats.queue_depth.fetch_add(1, Relaxed) + 1;
        if self.sender.try_send(record).is_ok() {
            if depth == self.high_water {
                self.wake.notify_one();
            }
            true
        } else {
            self.stats.queue_depth.fetch_sub(1, Relaxed);
            self.stats.dropped.fetch_add(1, Relaxed);
            false
        }
    }

    /// The writer's counters.
    pub fn stats(&self) -> &Arc<VisitLogStats> {
        &self.stats
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
    observer: Option<mpsc::Sender<Vec<Record>>>,
) -> (VisitLogQueue, JoinHandle<()>) {
    let capacity = capacity.max(1);
    let (sender, receiver) = mpsc::channel::<Record>(capacity);
    let stats = Arc::new(VisitLogStats::default());
    let wake = Arc::new(Notify::new());
    let high_water = (capacity / 2).clamp(1, MAX_BATCH) as u64;
    let task = tokio::spawn(run_writer(
        store,
        receiver,
        stats.clone(),
        flush_interval,
        Arc::clone(&wake),
        high_water,
        observer,
    ));
    let queue = VisitLogQueue {
        sender,
        stats,
        wake,
        high_water,
    };
    (queue, task)
}

/// The writer's loop. It is woken once when a record arrives after a quiet spell, then
/// sleeps through the flush interval while records queue up (a wake-up per record
/// would cost the proxy a cross-thread wake and a context switch per request), unless
/// the queue reaches its high-water mark first; then it takes everything queued (up
/// to [`MAX_BATCH`]) and writes it as one batch.
async fn run_writer(
    store: Store,
    mut receiver: mpsc::Receiver<Record>,
    stats: Arc<VisitLogStats>,
    flush_interval: Duration,
    wake: Arc<Notify>,
    high_water: u64,
    observer: Option<mpsc::Sender<Vec<Record>>>,
) {
    let flush_interval = flush_interval.max(Duration::from_millis(1));
    let mut pending: Vec<Record> = Vec::new();
    loop {
        let mut received = receiver.recv_many(&mut pending, MAX_BATCH).await;
        if received == 0 {
            break;
        }
        if (pending.len() as u64) < high_water && stats.queue_depth.load(Relaxed) < high_water {
            let deadline = tokio::time::Instant::now() + flush_interval;
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = wake.notified() => {}
            }
        }
        while pending.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(record) => {
                    pending.push(record);
                    received += 1;
                }
                Err(_) => break,
            }
        }
        stats.queue_depth.fetch_sub(received as u64, Relaxed);
        pending = write_and_flush(&store, pending, &stats).await;
        if let Some(observer) = &observer
            && !pending.is_empty()
        {
            let batch = std::mem::take(&mut pending);
            let n = batch.len() as u64;
            if observer.try_send(batch).is_err() {
                stats.observer_dropped.fetch_add(n, Relaxed);
            }
        } else {
            pending.clear();
        }
    }
}

/// Writes one batch as one atomic sled batch and flushes it, on a blocking thread;
/// gives the batch back (for the observer, or to reuse its allocation).
async fn write_and_flush(store: &Store, batch: Vec<Record>, stats: &VisitLogStats) -> Vec<Record> {
    let n = batch.len() as u64;
    let writing = store.clone();
    let started = Instant::now();
    let result = tokio::task::spawn_blocking(move || {
        let written = writing.write_records(&batch);
        let flushed = written.is_ok().then(|| writing.flush_blocking());
        (batch, written, flushed)
    })
    .await;
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    stats.last_write_micros.store(micros, Relaxed);
    stats.max_write_micros.fetch_max(micros, Relaxed);
    stats.total_write_micros.fetch_add(micros, Relaxed);
    stats.batches.fetch_add(1, Relaxed);
    match result {
        Ok((batch, written, flushed)) => {
            match written {
                Ok(()) => {
                    stats.written.fetch_add(n, Relaxed);
                }
                Err(err) => {
                    stats.write_errors.fetch_add(1, Relaxed);
                    stats.lost.fetch_add(n, Relaxed);
                    error!(%err, records = n, "VISIT LOG RECORDS NOT WRITTEN: database error");
                }
            }
            match flushed {
                Some(Ok(())) => {
                    let flushed = stats.flushed.fetch_add(n, Relaxed) + n;
                    debug!(
                        records = n,
                        flushed, micros, "visit log batch written and flushed"
                    );
                }
                Some(Err(err)) => {
                    stats.flush_errors.fetch_add(1, Relaxed);
                    error!(%err, records = n, "VISIT LOG NOT FLUSHED: cannot write the database to disk");
                }
                None => {}
            }
            batch
        }
        Err(err) => {
            stats.write_errors.fetch_add(1, Relaxed);
            stats.lost.fetch_add(n, Relaxed);
            error!(%err, records = n, "VISIT LOG RECORDS NOT WRITTEN: writer thread failed");
            Vec::new()
        }
    }
}
