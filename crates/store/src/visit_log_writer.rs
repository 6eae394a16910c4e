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
//! A full queue drops the record and counts it; a sled error is logged, counted, and
//! the writer goes on. Each written batch is then handed, without waiting, to an
//! optional observer (the safeguarding alert engine), off the proxy's path.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tracing::{debug, error};

use crate::record_batch::{BufferPool, push_frame};
use crate::{Record, RecordBatch, RecordRef, Store};

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

/// The writer's loop. It is woken when a record arrives after a drain, then sleeps
/// through the flush interval while records queue up (a wake-up per record would cost
/// the proxy a cross-thread wake and a context switch per request), unless the queue
/// reaches its high-water mark or is closed first; then it takes everything queued
/// (about [`MAX_BATCH`] at most) and writes it as one batch.
async fn run_writer(
    store: Store,
    shared: Arc<Shared>,
    flush_interval: Duration,
    observer: Option<mpsc::Sender<RecordBatch>>,
) {
    let flush_interval = flush_interval.max(Duration::from_millis(1));
    let stats = Arc::clone(&shared.stats);
    let _stopped = MarkClosedOnExit(Arc::clone(&shared));
    loop {
        let closed = shared.closed.load(Relaxed);
        if !closed && stats.queue_depth.load(Relaxed) == 0 {
            shared.arrived.notified().await;
            continue;
        }
        if !closed && stats.queue_depth.load(Relaxed) < shared.high_water {
            let deadline = tokio::time::Instant::now() + flush_interval;
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = shared.urgent.notified() => {}
            }
        }
        let (buffers, records) = shared.drain(MAX_BATCH);
        if records == 0 {
            if closed {
                break;
            }
            continue;
        }
        let batch = write_and_flush(&store, buffers, records, &shared).await;
        if let Some(observer) = &observer
            && !batch.is_empty()
        {
            let n = batch.len() as u64;
            if observer.try_send(batch).is_err() {
                stats.observer_dropped.fetch_add(n, Relaxed);
            }
        }
    }
}

/// Writes drained records as one atomic sled batch and flushes it, on a blocking
/// thread; gives the batch back (for the observer), whose buffers go back to the
/// queue's pool when it is dropped.
async fn write_and_flush(
    store: &Store,
    buffers: Vec<Vec<u8>>,
    records: usize,
    shared: &Shared,
) -> RecordBatch {
    let stats = &shared.stats;
    let writing = store.clone();
    let pool = Arc::clone(&shared.pool);
    let started = Instant::now();
    let result = tokio::task::spawn_blocking(move || {
        let batch = RecordBatch::from_frames(buffers).returning_buffers_to(pool);
        let written = writing.write_batch(&batch);
        let flushed = written.is_ok().then(|| writing.flush_blocking());
        (batch, written, flushed)
    })
    .await;
    let n = match &result {
        Ok((batch, _, _)) => batch.len() as u64,
        Err(_) => records as u64,
    };
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
            RecordBatch::default()
        }
    }
}
