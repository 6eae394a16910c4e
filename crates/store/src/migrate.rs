//! Migrating the visit log's index from per-record references (trees
//! `visit_log_users` and `visit_log_index`, written before the hourly postings) to
//! [`crate::postings`]. It runs when the database is opened and finds those trees:
//!
//! 1. a `U` block of format 1 (a copy of an `R` block, from before format 2) whose
//!    `R` block is missing (a crash took the block and left the copy) becomes the `R`
//!    block again, so no record is lost;
//! 2. the postings of every `R` block keyed before the hour of the newest one are
//!    built from the blocks and written a chunk of hours at a time, each chunk in one
//!    batch with the migration's progress (`M`), so a crash resumes after the last
//!    written chunk (the newest hour is rebuilt on every opening, as after a crash);
//! 3. the watermark `W` is written, the two old trees are dropped, `M` removed.
//!
//! The `R`, `B` and `S` blocks are not touched: every format is still read.

use std::collections::BTreeMap;

use crate::StoreError;
use crate::postings::{self, MIGRATED, PeriodSet, WATERMARK, period_of, read_u64};
use crate::visit_log::{PLAIN_BLOCK_FORMAT, TIME_KEY_LEN, for_each_placed, key_time};

/// The trees of the per-record references.
pub(crate) const OLD_TREES: [&str; 2] = ["visit_log_users", "visit_log_index"];

/// Records indexed per chunk (rounded up to whole hours).
pub(crate) const CHUNK_RECORDS: usize = 200_000;

/// Migrates if the old trees are there; `max_chunks` stops early (tests simulate a
/// crash with it). Returns the number of records indexed, `None` when there was
/// nothing to migrate.
pub(crate) fn migrate(
    db: &sled::Db,
    records: &sled::Tree,
    postings: &sled::Tree,
    chunk_records: usize,
    max_chunks: Option<usize>,
) -> Result<Option<usize>, StoreError> {
    let old: Vec<&str> = OLD_TREES
        .into_iter()
        .filter(|name| {
            db.tree_names()
                .iter()
                .any(|t| t.as_ref() == name.as_bytes())
        })
        .collect();
    if old.is_empty() {
        return Ok(None);
    }
    let started = std::time::Instant::now();
    let progress = read_u64(postings, MIGRATED)?;
    if progress.is_none() {
        restore_orphan_copies(db, records)?;
    }
    let newest = records
        .scan_prefix([b'R'])
        .keys()
        .next_back()
        .transpose()?
        .map_or(0, |key| key_time(&key[1..]));
    let target = period_of(newest);
    let from = progress.unwrap_or(0);
    tracing::info!(
        from,
        "migrating the visit log's index to hourly postings (once; the proxy starts after)"
    );
    let indexed = index_chunks(
        db,
        records,
        postings,
        from,
        target,
        chunk_records,
        max_chunks,
    )?;
    let Some(indexed) = indexed else {
        return Ok(Some(0));
    };
    let closed = read_u64(postings, WATERMARK)?.unwrap_or(0).max(target);
    postings.insert(WATERMARK, &closed.to_be_bytes())?;
    db.flush()?;
    for name in old {
        db.drop_tree(name)?;
    }
    postings.remove(MIGRATED)?;
    db.flush()?;
    tracing::info!(
        records = indexed,
        seconds = started.elapsed().as_secs_f64(),
        "the visit log's index is migrated"
    );
    Ok(Some(indexed))
}

/// Indexes the `R` blocks keyed from `from` to before `until` in chunks; `None` when
/// stopped by `max_chunks`.
fn index_chunks(
    db: &sled::Db,
    records: &sled::Tree,
    postings: &sled::Tree,
    from: u64,
    until: u64,
    chunk_records: usize,
    max_chunks: Option<usize>,
) -> Result<Option<usize>, StoreError> {
    let mut chunk: BTreeMap<u64, PeriodSet> = BTreeMap::new();
    let mut in_chunk = 0;
    let mut chunks = 0;
    let mut indexed = 0;
    let mut stopped = false;
    for_each_placed(records, from, until, |placed| {
        let period = period_of(key_time(&placed.block));
        // A chunk ends at an hour's end: progress means "every block before it".
        if in_chunk >= chunk_records && chunk.keys().next_back().is_some_and(|&p| p < period) {
            postings::write_migrated(db, postings, &chunk, period)?;
            chunk.clear();
            in_chunk = 0;
            chunks += 1;
            if max_chunks.is_some_and(|max| chunks >= max) {
                stopped = true;
                return Ok(false);
            }
        }
        postings::add_to(&mut chunk, placed);
        in_chunk += 1;
        indexed += 1;
        Ok(true)
    })?;
    if stopped {
        return Ok(None);
    }
    postings::write_migrated(db, postings, &chunk, until)?;
    Ok(Some(indexed))
}

/// Puts back as `R` blocks the format-1 `U` copies whose `R` block is missing.
fn restore_orphan_copies(db: &sled::Db, records: &sled::Tree) -> Result<(), StoreError> {
    if !db
        .tree_names()
        .iter()
        .any(|t| t.as_ref() == OLD_TREES[0].as_bytes())
    {
        return Ok(());
    }
    let users = db.open_tree(OLD_TREES[0])?;
    let mut restored = 0;
    for entry in users.iter() {
        let (key, value) = entry?;
        if value.first() != Some(&PLAIN_BLOCK_FORMAT) || key.len() < TIME_KEY_LEN + 2 {
            continue;
        }
        let mut record_key = vec![b'R'];
        record_key.extend_from_slice(&key[key.len() - TIME_KEY_LEN..]);
        if !records.contains_key(&record_key)? {
            records.insert(record_key, value)?;
            restored += 1;
        }
    }
    if restored > 0 {
        tracing::warn!(
            blocks = restored,
            "restored visit-log blocks kept only as a user's copy (an old crash)"
        );
    }
    Ok(())
}
