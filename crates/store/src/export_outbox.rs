//! The export outbox: visit records and alerts waiting to be shipped to the trust's
//! ClickHouse (`[export.clickhouse]`), kept in sled so a restart, a crash or a
//! ClickHouse outage loses nothing. It is off until [`Store::enable_outbox`].
//!
//! # Layout
//!
//! | tree             | key                                        | value                    |
//! |------------------|--------------------------------------------|--------------------------|
//! | `export_outbox`  | batch number (u64 BE), record count (u32 BE) | kind byte 3, then each record: length (u32 LE), encoding |
//! | `export_meta`    | `node`                                     | this database's node id (u64 BE, random) |
//!
//! A writer batch is one entry: its records' stored encodings
//! ([`crate::Record::encode`]), one sled key per batch rather than per record (the
//! writer's hot path and the exporter's reads and removals touch one key), split into
//! one [`OutboxEntry`] per record when read; entries of an earlier layout (key: batch
//! number and index, value: kind byte 1 and one record) are still read. An alert
//! has one entry of its own, keyed `0xFF`, its id (u64 BE), three zero bytes, whose
//! value is a version (u64 BE from the id generator) that every change replaces; the
//! exporter sends the alert as it stands then, and removes the entry only if no change
//! replaced it meanwhile. The batch number is drawn once per
//! [`RecordBatch`] from sled's id generator and kept with the batch, so the visit-log
//! writer retrying a batch writes the same key again (no duplicate entries), and the
//! exporter sends each entry under the id `<node>-<batch>-<index>`, the same on every
//! retry: the ClickHouse table deduplicates on it (at-least-once delivery, counted
//! once). The outbox is bounded by the disk only; its length is kept in a counter
//! ([`Store::outbox_backlog`]) for the backlog metric.

use std::sync::atomic::Ordering::Relaxed;

use crate::{Alert, RecordBatch, Store, StoreError};

/// Name of the outbox tree.
pub(crate) const OUTBOX: &str = "export_outbox";
const META: &str = "export_meta";

/// What an outbox entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxKind {
    /// A visit record, in its stored encoding.
    Visit,
    /// An alert (new, folded or with a changed status), as JSON.
    Alert,
}

/// Value kind byte of a writer batch's entry: every record of the batch, each a
/// length (u32 LE) and its encoding. Its key's last four bytes hold the record count.
const VISIT_BATCH: u8 = 3;

impl OutboxKind {
    fn byte(self) -> u8 {
        match self {
            OutboxKind::Visit => 1,
            OutboxKind::Alert => 2,
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(OutboxKind::Visit),
            2 => Some(OutboxKind::Alert),
            _ => None,
        }
    }
}

/// One entry taken from the outbox (it stays there until [`Store::outbox_remove`]).
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    /// Its key in the outbox.
    pub key: [u8; 12],
    /// The batch number (first part of the key).
    pub batch: u64,
    /// The index within the batch.
    pub index: u32,
    /// What it holds.
    pub kind: OutboxKind,
    /// The item: a record's encoding or an alert's JSON.
    pub bytes: sled::IVec,
    /// An alert's marker as read (removed only if no change has replaced it since).
    stamp: Option<sled::IVec>,
    /// One record of a writer batch's entry (removing it removes the whole batch).
    in_batch: bool,
}

/// First byte of an alert's key: after every visit batch number (drawn from sled's
/// id generator, far below), so one key per alert.
const ALERT_KEY: u8 = 0xFF;

fn alert_key(id: u64) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[0] = ALERT_KEY;
    key[1..9].copy_from_slice(&id.to_be_bytes());
    key
}

fn key(batch: u64, index: u32) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..8].copy_from_slice(&batch.to_be_bytes());
    key[8..].copy_from_slice(&index.to_be_bytes());
    key
}

/// The record count a writer batch's key holds.
fn batch_count(key: &[u8; 12]) -> u32 {
    u32::from_be_bytes([key[8], key[9], key[10], key[11]])
}

/// Appends the records of a writer batch's entry (`raw`, kind byte first) as entries
/// sharing its key; false when the entry is damaged (then nothing is appended).
fn split_batch(key: [u8; 12], raw: &sled::IVec, entries: &mut Vec<OutboxEntry>) -> bool {
    let mut batch = [0u8; 8];
    batch.copy_from_slice(&key[..8]);
    let batch = u64::from_be_bytes(batch);
    let start = entries.len();
    let mut at = 1;
    let mut index = 0u32;
    while at < raw.len() {
        let Some(len) = raw.get(at..at + 4) else {
            entries.truncate(start);
            return false;
        };
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if raw.len() < at + 4 + len {
            entries.truncate(start);
            return false;
        }
        entries.push(OutboxEntry {
            key,
            batch,
            index,
            kind: OutboxKind::Visit,
            bytes: raw.subslice(at + 4, len),
            stamp: None,
            in_batch: true,
        });
        at += 4 + len;
        index += 1;
    }
    if index != batch_count(&key) {
        entries.truncate(start);
        return false;
    }
    true
}

/// Records and alerts waiting in `tree` (a writer batch counts its records).
fn count_waiting(tree: &sled::Tree) -> Result<u64, StoreError> {
    let mut waiting = 0;
    for item in tree.iter() {
        let (raw_key, raw) = item?;
        waiting += match (raw.first(), <[u8; 12]>::try_from(raw_key.as_ref())) {
            (Some(&VISIT_BATCH), Ok(key)) => u64::from(batch_count(&key)),
            _ => 1,
        };
    }
    Ok(waiting)
}

fn value(kind: OutboxKind, bytes: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(bytes.len() + 1);
    value.push(kind.byte());
    value.extend_from_slice(bytes);
    value
}

impl Store {
    /// Turns the outbox on: from now on every written visit-log batch and every alert
    /// change is also put in the outbox. Returns this database's node id (made once,
    /// random, kept in the database). Counts what is already waiting (the first time).
    pub fn enable_outbox(&self) -> Result<u64, StoreError> {
        let trees = self.trees()?;
        let meta = trees.db.open_tree(META)?;
        let node = match meta.get("node")?.as_deref().and_then(crate::alerts::id_of) {
            Some(node) => node,
            None => {
                let mut bytes = [0u8; 8];
                getrandom::fill(&mut bytes)
                    .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))?;
                // Never 0, so an id always shows the node.
                let node = u64::from_be_bytes(bytes).max(1);
                meta.insert("node", &node.to_be_bytes())?;
                node
            }
        };
        if !self.outbox_enabled() {
            let waiting = count_waiting(&trees.db.open_tree(OUTBOX)?)?;
            self.shared.outbox_backlog.store(waiting, Relaxed);
            self.shared.outbox_enabled.store(true, Relaxed);
        }
        Ok(node)
    }

    /// Whether the outbox is on.
    pub fn outbox_enabled(&self) -> bool {
        self.shared.outbox_enabled.load(Relaxed)
    }

    /// Entries waiting in the outbox: counted as they are added and removed (and
    /// counted afresh when the outbox is turned on and after a retried write).
    pub fn outbox_backlog(&self) -> u64 {
        self.shared.outbox_backlog.load(Relaxed)
    }

    /// Puts a written batch's records in the outbox, under the batch's number (drawn
    /// on its first write and kept, so a retried batch lands on the same keys).
    pub(crate) fn outbox_add_batch(&self, batch: &RecordBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let trees = self.trees()?;
        let number = match batch.export_number() {
            Some(number) => number,
            None => batch.set_export_number(trees.db.generate_id()?),
        };
        let count = u32::try_from(batch.len()).unwrap_or(u32::MAX);
        let size = batch.stored().map(|s| 4 + s.bytes.len()).sum::<usize>();
        let mut item = Vec::with_capacity(1 + size);
        item.push(VISIT_BATCH);
        for stored in batch.stored() {
            let len = u32::try_from(stored.bytes.len()).unwrap_or(u32::MAX);
            item.extend_from_slice(&len.to_le_bytes());
            item.extend_from_slice(stored.bytes);
        }
        let tree = trees.db.open_tree(OUTBOX)?;
        let previous = tree.insert(key(number, count), item)?;
        // A retried batch lands on its own key again: counted once.
        if previous.is_none() {
            self.shared
                .outbox_backlog
                .fetch_add(u64::from(count), Relaxed);
        }
        Ok(())
    }

    /// Marks an alert as changed: one small entry per alert (its id in the key, a
    /// version from sled's id generator in the value), replaced by every later change,
    /// so an alert folded a thousand times waits once; the exporter reads the alert as
    /// it stands when it sends it, and ClickHouse keeps the highest version.
    pub(crate) fn outbox_add_alert(&self, alert: &Alert) -> Result<(), StoreError> {
        let trees = self.trees()?;
        let version = trees.db.generate_id()?;
        let previous = trees.db.open_tree(OUTBOX)?.insert(
            alert_key(alert.id),
            value(OutboxKind::Alert, &version.to_be_bytes()),
        )?;
        if previous.is_none() {
            self.shared.outbox_backlog.fetch_add(1, Relaxed);
        }
        Ok(())
    }

    /// Up to `limit` entries, oldest first, left in the outbox. An entry of a kind
    /// this build does not know is removed and logged.
    pub fn outbox_peek(&self, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        self.outbox_peek_after(None, limit)
    }

    /// Like [`Store::outbox_peek`], from the first entry after `after` (the last key
    /// of a run being sent), so the exporter can read the next run meanwhile.
    pub fn outbox_peek_after(
        &self,
        after: Option<&[u8; 12]>,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        use std::ops::Bound;
        let tree = self.trees()?.db.open_tree(OUTBOX)?;
        let mut entries = Vec::with_capacity(limit.min(65_536));
        let items = match after {
            Some(after) => tree.range::<&[u8], _>((Bound::Excluded(&after[..]), Bound::Unbounded)),
            None => tree.iter(),
        };
        for item in items {
            if entries.len() >= limit {
                break;
            }
            let (raw_key, raw) = item?;
            if raw.first() == Some(&VISIT_BATCH)
                && let Ok(key) = <[u8; 12]>::try_from(raw_key.as_ref())
            {
                if !split_batch(key, &raw, &mut entries) {
                    tracing::warn!("export outbox: a damaged batch entry was dropped");
                    tree.remove(raw_key)?;
                    self.outbox_removed(u64::from(batch_count(&key)));
                }
                continue;
            }
            let kind = raw.first().copied().and_then(OutboxKind::from_byte);
            let (Ok(key), Some(kind)) = (<[u8; 12]>::try_from(raw_key.as_ref()), kind) else {
                tracing::warn!("export outbox: dropping an entry this build cannot read");
                tree.remove(raw_key)?;
                self.outbox_removed(1);
                continue;
            };
            if kind == OutboxKind::Alert {
                match self.alert_entry(key, raw)? {
                    Some(entry) => entries.push(entry),
                    None => {
                        tree.remove(raw_key)?;
                        self.outbox_removed(1);
                    }
                }
                continue;
            }
            let mut batch = [0u8; 8];
            batch.copy_from_slice(&key[..8]);
            let mut index = [0u8; 4];
            index.copy_from_slice(&key[8..]);
            entries.push(OutboxEntry {
                key,
                batch: u64::from_be_bytes(batch),
                index: u32::from_be_bytes(index),
                kind,
                bytes: raw.subslice(1, raw.len() - 1),
                stamp: None,
                in_batch: false,
            });
        }
        Ok(entries)
    }

    /// An alert's entry with the alert as it stands now (its version as the batch);
    /// `None` when the marker is damaged or the alert is gone (purged).
    fn alert_entry(
        &self,
        key: [u8; 12],
        raw: sled::IVec,
    ) -> Result<Option<OutboxEntry>, StoreError> {
        let (Some(id), Some(version)) = (
            key.get(1..9).and_then(crate::alerts::id_of),
            raw.get(1..9).and_then(crate::alerts::id_of),
        ) else {
            return Ok(None);
        };
        let alerts = self.trees()?.db.open_tree(crate::alerts::ALERTS)?;
        Ok(alerts.get(id.to_be_bytes())?.map(|json| OutboxEntry {
            key,
            batch: version,
            index: 0,
            kind: OutboxKind::Alert,
            bytes: json,
            stamp: Some(raw),
            in_batch: false,
        }))
    }

    /// Removes sent entries from the outbox.
    /// An alert changed since it was read stays (its newer state is sent next).
    pub fn outbox_remove(&self, entries: &[OutboxEntry]) -> Result<(), StoreError> {
        let tree = self.trees()?.db.open_tree(OUTBOX)?;
        let mut removals = sled::Batch::default();
        let mut removed = 0;
        let mut last_batch_key = None;
        for entry in entries {
            match &entry.stamp {
                None if entry.in_batch => {
                    // The records of one writer batch share its key: removed once,
                    // counted by the key's record count.
                    if last_batch_key != Some(entry.key) {
                        removals.remove(&entry.key);
                        removed += u64::from(batch_count(&entry.key));
                        last_batch_key = Some(entry.key);
                    }
                }
                None => {
                    removals.remove(&entry.key);
                    removed += 1;
                }
                Some(stamp) => {
                    let swapped = tree.compare_and_swap(entry.key, Some(stamp), None::<&[u8]>)?;
                    removed += u64::from(swapped.is_ok());
                }
            }
        }
        tree.apply_batch(removals)?;
        self.outbox_removed(removed);
        Ok(())
    }

    fn outbox_removed(&self, n: u64) {
        let _ = self
            .shared
            .outbox_backlog
            .fetch_update(Relaxed, Relaxed, |left| Some(left.saturating_sub(n)));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_retried_batch_lands_on_the_same_keys_and_removal_empties_the_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let records: Vec<_> = (0..3)
            .map(|i| crate::record::tests::sample(10 + i, "al", "a.example"))
            .collect();
        let batch = RecordBatch::from_records(&records);
        // Off: nothing is kept.
        store.write_batch(&batch).unwrap();
        assert!(store.outbox_peek(10).unwrap().is_empty());
        let node = store.enable_outbox().unwrap();
        assert_eq!(store.enable_outbox().unwrap(), node, "the node id is kept");
        store.write_batch(&batch).unwrap();
        store.write_batch(&batch).unwrap();
        let entries = store.outbox_peek(10).unwrap();
        assert_eq!(entries.len(), 3, "the retry wrote the same keys");
        assert!(entries.iter().all(|e| e.kind == OutboxKind::Visit));
        let first = crate::Record::decode(&entries[0].bytes).unwrap();
        assert_eq!(first, records[0]);
        assert_eq!(store.outbox_backlog(), 3);
        assert!(
            entries.iter().all(|e| e.key == entries[0].key),
            "one key for the writer's batch"
        );
        assert_eq!(
            entries.iter().map(|e| e.index).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        // A second batch, read after the first one's key.
        let second = RecordBatch::from_records(&records[..1]);
        store.write_batch(&second).unwrap();
        let after = store.outbox_peek_after(Some(&entries[0].key), 10).unwrap();
        assert_eq!(after.len(), 1, "from the entry after the key given");
        assert!(after[0].batch > entries[0].batch);
        // The batch goes whole, even when one of its records is named.
        store.outbox_remove(&entries[..1]).unwrap();
        assert_eq!(store.outbox_peek(10).unwrap().len(), 1);
        assert_eq!(store.outbox_backlog(), 1);
        // Counted afresh from the tree (as at start) the same.
        let tree = store.trees().unwrap().db.open_tree(OUTBOX).unwrap();
        assert_eq!(count_waiting(&tree).unwrap(), 1);
        store.outbox_remove(&after).unwrap();
        assert!(store.outbox_peek(10).unwrap().is_empty());
        assert_eq!(store.outbox_backlog(), 0);
    }

    #[test]
    fn an_alert_waits_once_however_often_it_changes_and_a_change_after_reading_stays() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.enable_outbox().unwrap();
        let new = |at| crate::NewAlert {
            kind: crate::AlertKind::RepeatedBlocks,
            severity: crate::Severity::Medium,
            who: "al".into(),
            user: Some("al".into()),
            role: "pupil".into(),
            group: None,
            client: None,
            computer: None,
            subject: "gambling".into(),
            summary: "al tried gambling sites".into(),
            at_unix_micros: at,
            evidence: Vec::new(),
        };
        for at in 1..=5 {
            store.raise_alert(new(at)).unwrap();
        }
        let entries = store.outbox_peek(10).unwrap();
        assert_eq!((entries.len(), store.outbox_backlog()), (1, 1));
        let alert: Alert = serde_json::from_slice(&entries[0].bytes).unwrap();
        assert_eq!(alert.occurrences, 5, "sent as it stands");
        // Folded again after it was read: removing what was sent keeps the change.
        store.raise_alert(new(6)).unwrap();
        store.outbox_remove(&entries).unwrap();
        let again = store.outbox_peek(10).unwrap();
        assert_eq!(again.len(), 1);
        assert!(again[0].batch > entries[0].batch, "a higher version");
        store.outbox_remove(&again).unwrap();
        assert!(store.outbox_peek(10).unwrap().is_empty());
        assert_eq!(store.outbox_backlog(), 0);
    }
}
