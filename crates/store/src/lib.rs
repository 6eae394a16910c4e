//! SafeGate's database: one sled database in `data_dir/db`. Each kind of record has
//! its own tree; keys are big-endian so range scans run in time order.
//!
//! Layout:
//! - `review_requests`: key = request time in Unix nanoseconds (u64 BE) followed by
//!   a sequence number (u64 BE) from sled's id generator; value = JSON `ReviewRequest`.
//! - `review_decisions`: the same key; value = JSON `ReviewDecision`.
//! - `visit_log`, `visit_log_postings`: the visit log, records in time-keyed
//!   compressed blocks, and hourly posting lists by user and by host; the layout,
//!   its formats, crash semantics and queries are described in [`visit_log`].
//! - `alerts`, `alerts_open`, `alert_usage`: safeguarding alerts with their evidence
//!   and status, the open alerts by fold key, and per-user daily usage; see [`alerts`].
//! - `alert_numbers`: short per-school alert numbers (#35) and their ids; see
//!   `alert_numbers.rs`.
//! - `visit_totals`: requests and blocked requests per hour, for the dashboard; see
//!   [`visit_totals`].
//! - `export_outbox`, `export_meta`: visit records and alerts waiting to be shipped to
//!   the trust's ClickHouse, and this database's node id; see [`export_outbox`].
//! - `audit`: the hash-chained, append-only audit log; see [`audit`].
//! - `users`: key = the user name (normalised), value = a version byte and the user;
//!   names, writes, generations and watching are described in [`users`]. Password
//!   hashes are Argon2id PHC strings ([`password`]).
//!
//! Writes from the proxy never happen on the request path: the proxy hands records
//! to a bounded queue (`ReviewQueue`, `VisitLogQueue`) and a writer task applies them.

mod alert_numbers;
pub mod alerts;
pub mod audit;
pub mod export_outbox;
mod migrate;
pub mod password;
pub mod plain_words;
mod postings;
pub mod record;
mod record_batch;
mod reviews;
pub mod two_factor;
pub mod users;
pub mod visit_log;
mod visit_log_writer;
pub mod visit_totals;

pub use crate::alerts::{
    Alert, AlertFilter, AlertKind, AlertStatus, NewAlert, Raised, Severity, StatusChange,
};
pub use crate::audit::{
    AuditAction, AuditEntry, AuditHash, AuditVerification, NewAuditEntry, NotedHead, audit_hash_hex,
};
pub use crate::export_outbox::{OutboxEntry, OutboxKind};
pub use crate::record::{
    Categories, ContentScore, IdentifiedBy, Outcome, RECORD_VERSION,
    RECORD_VERSION_WITHOUT_COMPUTER, Record, RecordRef, SearchTerms, SearchTermsRef, SeenAs,
    computer_text,
};
pub use crate::record_batch::RecordBatch;
pub use crate::reviews::{
    ReviewDecision, ReviewEntry, ReviewQueue, ReviewRequest, spawn_review_writer,
};
pub use crate::two_factor::TwoFactor;
pub use crate::users::{
    BadRow, ImportErrors, ImportReport, ImportRow, NewUser, Permission, User, UserError,
    UserUpdate, UsersWatch,
};
pub use crate::visit_log::{Query, write_csv_row, write_records_csv, write_records_json};
pub use crate::visit_log_writer::{
    VisitLogQueue, VisitLogStats, VisitLogStatsSnapshot, WriteFailure, spawn_visit_log_writer,
};
pub use crate::visit_totals::HourTotals;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use safegate_config::ConfigProblem;

/// Failures of the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened (missing permission, another process holds it).
    #[error("cannot open the database in {path}: {source}")]
    Open {
        /// Database directory.
        path: String,
        /// What sled reported.
        source: sled::Error,
    },
    /// Another process holds the database (sled locks its file exclusively; while
    /// `safegate run` holds it, commands go through its control socket).
    #[error("cannot open the database in {path}: {source}")]
    Locked {
        /// Database directory.
        path: String,
        /// What sled reported ("could not acquire lock ...").
        source: sled::Error,
    },
    /// A read or write failed (disk full, I/O error, corruption).
    #[error("database error: {0}")]
    Database(#[from] sled::Error),
    /// A stored value could not be encoded or decoded.
    #[error("cannot encode or decode a stored record: {0}")]
    Encoding(#[from] serde_json::Error),
    /// A stored visit-log record could not be decoded (corrupt or truncated).
    #[error("cannot decode a visit-log record: {0}")]
    Decoding(#[from] postcard::Error),
    /// A stored visit-log record has a version this build does not know (`None`: the
    /// value was empty).
    #[error("visit-log record of unknown version {0:?}")]
    UnknownRecordVersion(Option<u8>),
    /// A stored visit-log block is truncated or damaged.
    #[error("a visit-log block is damaged")]
    DamagedBlock,
    /// A stored visit-log block has a format this build does not know (`None`: the
    /// value was empty).
    #[error("visit-log block of unknown format {0:?}")]
    UnknownBlockFormat(Option<u8>),
    /// The visit log's block compression (zstd) failed to start or to compress.
    #[error("visit-log block compression failed: {0}")]
    Compression(std::io::Error),
    /// The audit log's chain head or an entry is damaged.
    #[error("the audit log is damaged: {0}")]
    DamagedAudit(String),
    /// The database is being reopened after a failed write; try again shortly.
    #[error("the database is being reopened after a write to disk failed; try again")]
    Reopening,
    /// The database could not be reopened: an operation kept using it for too long.
    #[error("cannot reopen the database: it stayed in use for more than 10 s")]
    Busy,
    /// Writing an export failed.
    #[error("cannot write the export: {0}")]
    Io(#[from] std::io::Error),
}

/// Whether sled failed to open because another process holds the database's lock:
/// sled reports that only as an I/O error whose text says "could not acquire lock"
/// (the lock error's kind, `WouldBlock`, is in the text, not in the kind).
fn is_lock_failure(error: &sled::Error) -> bool {
    match error {
        sled::Error::Io(io) => {
            let text = io.to_string();
            io.kind() == std::io::ErrorKind::WouldBlock
                || text.contains("could not acquire lock")
                || text.contains("WouldBlock")
                || text.contains("Resource temporarily unavailable")
        }
        _ => false,
    }
}

/// Page cache of the database, in bytes.
/// sled's page cache unless `store.cache_mib` says otherwise (sled's own default is
/// 1 GiB; a school's proxy box has better uses for it).
pub const DEFAULT_CACHE_MIB: u64 = 32;

/// The open database; cheap to clone. Every clone shares one handle to sled, which
/// [`Store::reopen_blocking`] can replace: sled turns every later operation into an
/// error after one failed write to disk (a full disk, say), until the database is
/// opened again, so the visit-log writer reopens it once it can write again.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

struct Shared {
    /// `data_dir/db`.
    path: PathBuf,
    /// sled's page cache, bytes (kept for reopening).
    cache_bytes: u64,
    /// The open database; `None` only while it is being reopened.
    trees: ArcSwapOption<Trees>,
    /// How many times the database was reopened (watchers subscribe again).
    reopened: AtomicU64,
    /// The export outbox is on ([`Store::enable_outbox`]).
    outbox_enabled: std::sync::atomic::AtomicBool,
    /// Entries waiting in the export outbox.
    outbox_backlog: AtomicU64,
}

/// The sled database and its trees, as opened once.
pub(crate) struct Trees {
    pub(crate) db: sled::Db,
    pub(crate) reviews: sled::Tree,
    pub(crate) visit_log: sled::Tree,
    /// The visit log's index by user and host, with its open periods.
    pub(crate) postings: postings::Postings,
    pub(crate) users: sled::Tree,
}

/// Most time [`Store::reopen_blocking`] waits for the old database's last users (an
/// export or a query in progress) to let go of it.
const REOPEN_WAIT: Duration = Duration::from_secs(10);

impl Store {
    /// Opens (or creates) the database in `data_dir/db`, with the default page cache.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(data_dir, DEFAULT_CACHE_MIB)
    }

    /// Opens (or creates) the database in `data_dir/db` with a page cache of
    /// `cache_mib` MiB (`store.cache_mib`). sled counts its cache by the size of
    /// the pages on disk; in memory they take about twice that.
    pub fn open_with_cache(data_dir: &Path, cache_mib: u64) -> Result<Self, StoreError> {
        let path = data_dir.join("db");
        let cache_bytes = cache_mib.saturating_mul(1024 * 1024);
        let trees = Trees::open(&path, cache_bytes, None)?;
        Ok(Self {
            shared: Arc::new(Shared {
                path,
                cache_bytes,
                trees: ArcSwapOption::from_pointee(trees),
                reopened: AtomicU64::new(0),
                outbox_enabled: std::sync::atomic::AtomicBool::new(false),
                outbox_backlog: AtomicU64::new(0),
            }),
        })
    }

    /// The open database, or [`StoreError::Reopening`] in the moment it is reopened.
    pub(crate) fn trees(&self) -> Result<Arc<Trees>, StoreError> {
        self.shared.trees.load_full().ok_or(StoreError::Reopening)
    }

    /// How many times the database has been reopened.
    pub fn reopened(&self) -> u64 {
        self.shared.reopened.load(Ordering::Relaxed)
    }

    /// Opens the database in `data_dir/db` and stops its index migration after
    /// `chunks` chunks of hours, as a crash would (tests of the migration).
    #[doc(hidden)]
    pub fn open_interrupting_migration(data_dir: &Path, chunks: usize) -> Result<(), StoreError> {
        let path = data_dir.join("db");
        let db = sled::Config::new().path(&path).open()?;
        let visit_log = db.open_tree("visit_log")?;
        let postings = db.open_tree("visit_log_postings")?;
        migrate::migrate(&db, &visit_log, &postings, 1, Some(chunks))?;
        db.flush()?;
        Ok(())
    }

    /// A handle that does not keep the database open.
    pub(crate) fn downgrade(&self) -> WeakStore {
        WeakStore(Arc::downgrade(&self.shared))
    }

    /// Closes the database and opens it again from disk, for after a failed write
    /// (sled refuses everything after one): what was flushed before the failure is
    /// kept, writes since the last flush are not. Blocks until every operation still
    /// using the old database has ended (at most 10 s, else the old one is kept and
    /// [`StoreError::Busy`] returned), so call it from a blocking thread. While it
    /// runs (and until a later call succeeds, if opening fails), other operations fail
    /// with [`StoreError::Reopening`]. Only one thread (the visit-log writer) calls it.
    pub fn reopen_blocking(&self) -> Result<(), StoreError> {
        let deadline = Instant::now() + REOPEN_WAIT;
        // `None`: an earlier reopen closed the database and failed to open it again.
        if let Some(mut old) = self.shared.trees.swap(None) {
            // sled holds an exclusive lock on its files until the last handle is gone.
            loop {
                match Arc::try_unwrap(old) {
                    Ok(trees) => {
                        drop(trees);
                        break;
                    }
                    Err(shared) if Instant::now() >= deadline => {
                        self.shared.trees.store(Some(shared));
                        return Err(StoreError::Busy);
                    }
                    Err(shared) => {
                        old = shared;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
        }
        let reopened = loop {
            match Trees::open(&self.shared.path, self.shared.cache_bytes, None) {
                Err(StoreError::Locked { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                other => break other,
            }
        };
        let trees = reopened?;
        self.shared.trees.store(Some(Arc::new(trees)));
        self.shared.reopened.fetch_add(1, Ordering::Relaxed);
        tracing::info!(path = %self.shared.path.display(), "database reopened");
        Ok(())
    }

    /// Free space, in bytes, on the file system that holds the database.
    pub fn available_space(&self) -> Result<u64, StoreError> {
        let stats = rustix::fs::statvfs(&self.shared.path).map_err(std::io::Error::from)?;
        Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
    }

    /// Writes everything to disk.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.trees()?.db.flush_async().await?;
        Ok(())
    }

    /// Bytes the database takes on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.trees()?.db.size_on_disk()?)
    }

    /// Writes everything to disk, blocking the calling thread (for blocking threads
    /// and tools).
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.trees()?.db.flush()?;
        Ok(())
    }
}

/// A [`Store`] that does not keep the database open (for threads that outlive it).
#[derive(Clone)]
pub(crate) struct WeakStore(Weak<Shared>);

impl WeakStore {
    /// The store, while anyone else still has it.
    pub(crate) fn upgrade(&self) -> Option<Store> {
        self.0.upgrade().map(|shared| Store { shared })
    }
}

impl Trees {
    /// Opens the database, migrating the visit log's index if it is of the earlier
    /// format (at most `max_chunks` chunks of it, for tests), and rebuilds the open
    /// periods of the index.
    fn open(path: &Path, cache_bytes: u64, max_chunks: Option<usize>) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .open()
            .map_err(|source| {
                let path = path.display().to_string();
                if is_lock_failure(&source) {
                    StoreError::Locked { path, source }
                } else {
                    StoreError::Open { path, source }
                }
            })?;
        let reviews = db.open_tree("review_requests")?;
        // Development builds before the block layout wrote one key per record in
        // these trees; no release did, so they are dropped rather than converted.
        for old in ["records", "by_user", "by_host", "blocked", "searches"] {
            if db
                .tree_names()
                .iter()
                .any(|name| name.as_ref() == old.as_bytes())
            {
                tracing::warn!(
                    tree = old,
                    "dropping a visit-log tree of an unreleased format"
                );
                db.drop_tree(old)?;
            }
        }
        let visit_log = db.open_tree("visit_log")?;
        let postings_tree = db.open_tree("visit_log_postings")?;
        migrate::migrate(
            &db,
            &visit_log,
            &postings_tree,
            migrate::CHUNK_RECORDS,
            max_chunks,
        )?;
        let postings = postings::Postings::open(postings_tree)?;
        // The open hours' postings were only in memory: rebuilt from their blocks.
        visit_log::for_each_placed(&visit_log, postings.closed_before(), u64::MAX, |placed| {
            postings.add_open(placed);
            Ok(true)
        })?;
        Ok(Self {
            reviews,
            postings,
            visit_log,
            users: db.open_tree("users")?,
            db,
        })
    }
}

/// `[store]`: the visit log's settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Record every request in the visit log.
    pub visit_log: bool,
    /// Records waiting for the writer; beyond it records are dropped and counted.
    pub queue_capacity: usize,
    /// How often written records are flushed to disk: the most a crash can lose.
    #[serde(with = "humantime_serde")]
    pub flush_interval: std::time::Duration,
    /// Records older than this many days are purged (daily, and by `safegate log
    /// purge`); 0 keeps everything.
    pub retention_days: u32,
    /// What the proxy does while the visit log cannot be written (the disk is full):
    /// `keep-filtering` (the default: requests are decided and answered as ever, their
    /// records kept in memory up to `queue_capacity` twice over, the rest counted as
    /// lost) or `refuse-traffic` (new requests are answered `503` until it can write).
    pub when_full: WhenFull,
    /// sled's page cache, MiB (counted as pages take on disk; about twice that in
    /// memory): more makes `safegate log query` and the reports faster, less keeps
    /// SafeGate's memory down.
    pub cache_mib: u64,
}

/// `store.when_full`: what the proxy does while the visit log cannot be written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WhenFull {
    /// Go on deciding and answering requests; records wait in memory (bounded).
    #[default]
    KeepFiltering,
    /// Answer new requests `503` with a page saying the disk is full.
    RefuseTraffic,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            visit_log: true,
            queue_capacity: 65_536,
            flush_interval: std::time::Duration::from_secs(1),
            retention_days: 365,
            when_full: WhenFull::KeepFiltering,
            cache_mib: DEFAULT_CACHE_MIB,
        }
    }
}

impl StoreConfig {
    /// Every problem, with its key.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if self.queue_capacity == 0 {
            problems.push(ConfigProblem::new(
                "store.queue_capacity",
                "must be at least 1",
            ));
        }
        if self.flush_interval.is_zero() {
            problems.push(ConfigProblem::new(
                "store.flush_interval",
                "must be longer than 0s",
            ));
        }
        if !(4..=4096).contains(&self.cache_mib) {
            problems.push(ConfigProblem::new(
                "store.cache_mib",
                "must be from 4 to 4096 (MiB)",
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_bad_values_name_their_key() {
        assert!(StoreConfig::default().validate().is_empty());
        let config = StoreConfig {
            queue_capacity: 0,
            cache_mib: 0,
            ..StoreConfig::default()
        };
        let keys: Vec<_> = config.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["store.queue_capacity", "store.cache_mib"]);
    }

    #[test]
    fn the_page_cache_setting_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with_cache(dir.path(), 8).unwrap();
        assert_eq!(store.shared.cache_bytes, 8 * 1024 * 1024);
        store.reopen_blocking().unwrap();
        assert_eq!(store.shared.cache_bytes, 8 * 1024 * 1024);
        assert_eq!(store.reopened(), 1);
    }
}
