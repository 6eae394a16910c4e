//! SafeGate's database: one sled database in `data_dir/db`. Each kind of record has
//! its own tree; keys are big-endian so range scans run in time order.
//!
//! Layout:
//! - `review_requests`: key = request time in Unix nanoseconds (u64 BE) followed by
//!   a sequence number (u64 BE) from sled's id generator; value = JSON `ReviewRequest`.
//!
//! Writes from the proxy never happen on the request path: the proxy hands records
//! to a bounded queue (`ReviewQueue`) and a writer task applies them.

pub mod record;
mod reviews;

pub use crate::record::{IdentifiedBy, Outcome, RECORD_VERSION, Record, SearchTerms, SeenAs};
pub use crate::reviews::{ReviewQueue, ReviewRequest, spawn_review_writer};

use std::path::Path;

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
    /// A read or write failed (disk full, I/O error, corruption).
    #[error("database error: {0}")]
    Database(#[from] sled::Error),
    /// A stored value could not be encoded or decoded.
    #[error("cannot encode or decode a stored record: {0}")]
    Encoding(#[from] serde_json::Error),
}

/// The open database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    reviews: sled::Tree,
}

impl Store {
    /// Opens (or creates) the database in `data_dir/db`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join("db");
        let db = sled::Config::new()
            .path(&path)
            .open()
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?;
        let reviews = db.open_tree("review_requests")?;
        Ok(Self { db, reviews })
    }

    /// Writes everything to disk.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }
}
