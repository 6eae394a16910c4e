//! The visit-log writer: the proxy hands each [`Record`] to a bounded queue without
//! waiting ([`VisitLogQueue::submit`]); one task takes whatever is queued (up to
//! [`MAX_BATCH`] records), writes it on a blocking thread with
//! [`Store::write_records`], and flushes sled every flush interval. A full queue drops
//! the record and counts it; a sled error is logged, counted, and the writer goes on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::error;

use crate::{Record, Store};

/// Most records written in one batch.
pub const MAX_BATCH: usize = 4096;

/// The writer's counters, shared with whoever reports metrics. All relaxed atomics.
#[derive(Debug, Default)]
pub struct VisitLogStats {
    queue_depth: AtomicU64,
    written: AtomicU64,
    batches: AtomicU64,
    dropped: AtomicU64,
    write_errors: AtomicU64,
    lost: AtomicU64,
    flush_errors: AtomicU64,
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
    /// Time to write the last batch, microseconds.
    pub last_write_micros: u64,
    /// Longest batch write, microseconds.
    pub max_write_micros: u64,
    /// Sum of batch write times, microseconds (mean = total / batches).
    pub total_write_micros: u64,
}

impl VisitLogStats {
    /// The current values.
    pub fn snapshot(&self) -> VisitLogStatsSnapshot {
        VisitLogStatsSnapshot {
            queue_depth: self.queue_depth.load(Relaxed),
            written: self.written.load(Relaxed),
            batches: self.batches.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            write_errors: self.write_errors.load(Relaxed),
            lost: self.lost.load(Relaxed),
            flush_errors: self.flush_errors.load(Relaxed),
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
}

impl VisitLogQueue {
    /// Queues a record; false (and counted as dropped) when the queue is full or the
    /// writer has stopped.
    pub fn submit(&self, record: Record) -> bool {
        self.stats.queue_depth.fetch_add(1, Relaxed);
        if self.sender.try_send(record).is_ok() {
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
/// flushing every `flush_interval` (records written since the last flush are what a
/// crash can lose). It ends when every `VisitLogQueue` has been dropped, after writing
/// what was queued and a final flush.
pub fn spawn_visit_log_writer(
    store: Store,
    capacity: usize,
    flush_interval: Duration,
) -> (VisitLogQueue, JoinHandle<()>) {
    let (sender, receiver) = mpsc::channel::<Record>(capacity.max(1));
    let stats = Arc::new(VisitLogStats::default());
    let task = tokio::spawn(run_writer(store, receiver, stats.clone(), flush_interval));
    (VisitLogQueue { sender, stats }, task)
}

async fn run_writer(
    store: Store,
    mut receiver: mpsc::Receiver<Record>,
    stats: Arc<VisitLogStats>,
    flush_interval: Duration,
) {
    let mut ticker = tokio::time::interval(flush_interval.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dirty = false;
    let mut flushing: Option<JoinHandle<()>> = None;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        tokio::select! {
            received = receiver.recv_many(&mut batch, MAX_BATCH) => {
                if received == 0 {
                    break;
                }
                stats.queue_depth.fetch_sub(received as u64, Relaxed);
                batch = write_batch(&store, batch, &stats).await;
                batch.clear();
                dirty = true;
            }
            _ = ticker.tick() => {
                if dirty && flushing.as_ref().is_none_or(JoinHandle::is_finished) {
                    dirty = false;
                    flushing = Some(tokio::spawn(flush(store.clone(), stats.clone())));
                }
            }
        }
    }
    if let Some(previous) = flushing {
        let _ = previous.await;
    }
    flush(store, stats).await;
}

async fn write_batch(store: &Store, batch: Vec<Record>, stats: &VisitLogStats) -> Vec<Record> {
    let n = batch.len() as u64;
    let writing = store.clone();
    let started = Instant::now();
    let result = tokio::task::spawn_blocking(move || {
        let result = writing.write_records(&batch);
        (batch, result)
    })
    .await;
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    stats.last_write_micros.store(micros, Relaxed);
    stats.max_write_micros.fetch_max(micros, Relaxed);
    stats.total_write_micros.fetch_add(micros, Relaxed);
    stats.batches.fetch_add(1, Relaxed);
    match result {
        Ok((batch, Ok(()))) => {
            stats.written.fetch_add(n, Relaxed);
            batch
        }
        Ok((batch, Err(err))) => {
            stats.write_errors.fetch_add(1, Relaxed);
            stats.lost.fetch_add(n, Relaxed);
            error!(%err, records = n, "VISIT LOG RECORDS NOT WRITTEN: database error");
            batch
        }
        Err(err) => {
            stats.write_errors.fetch_add(1, Relaxed);
            stats.lost.fetch_add(n, Relaxed);
            error!(%err, records = n, "VISIT LOG RECORDS NOT WRITTEN: writer thread failed");
            Vec::with_capacity(MAX_BATCH)
        }
    }
}

async fn flush(store: Store, stats: Arc<VisitLogStats>) {
    if let Err(err) = store.flush().await {
        stats.flush_errors.fetch_add(1, Relaxed);
        error!(%err, "VISIT LOG NOT FLUSHED: cannot flush the database to disk");
    }
}
