//! The visit log's index by user and by host: posting lists per hour.
//!
//! sled pays several hundred bytes on disk for each small key inserted all over a
//! tree, and about 90 for a key appended after the newest, so the index has few keys,
//! written in order. Records are indexed by *period* (one hour, [`PERIOD_MICROS`]):
//! the period of an `R` block is the one its key's time (its earliest record) falls
//! in. While a period is open the writer keeps, in memory, the list of the period's
//! `R` block keys (its *table*) and, per user and per host, the places of their
//! records (block number in the table, position in the block). When the newest block
//! is a period past a period's end (late records, long downloads, are recorded when
//! they end), the period is *closed*: its postings are written as one *set*, a table
//! key and a few posting keys, all appended in time order. Tree `visit_log_postings`:
//!
//! | key                                              | value |
//! |--------------------------------------------------|-------|
//! | `W`                                              | periods before this time (u64 BE) are closed: all their postings are written |
//! | `M`                                              | while migrating from the reference trees: `R` blocks before this time are indexed |
//! | `T`, period (u64 BE), set (u64 BE)               | the set's table: `R` block keys, 16 bytes each |
//! | `U`/`H`, period, bucket (u8), set (u64 BE)       | [`POSTINGS_FORMAT`]: the names of one bucket (of [`BUCKETS`], by a stable hash) sorted, each with its places, zstd-compressed |
//!
//! A user's week reads about 168 posting keys (one per hour, the user's bucket) and
//! the tables they point into, then only the `R` blocks that hold the user's records.
//!
//! Crash semantics: the open periods' postings are only in memory; `R` blocks are
//! durable at each flush. On opening, the postings of every `R` block keyed at or
//! after `W` are rebuilt from the blocks (at most about two hours of records), so
//! nothing written is lost to the index. A block keyed before `W` when it is written
//! (a record more than an hour late) gets a set of its own at once, written before
//! the block. A set is written in one batch with `W`, before the blocks of the same
//! write, so a set may name a block a crash took (skipped when read, as a missing
//! block always was), never the other way round.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::StoreError;

/// Length of an `R` block key (see the visit_log module): its earliest record time
/// (u64 BE) and a sequence number.
const TIME_KEY_LEN: usize = 16;

/// Keys removed per batch when purging.
const PURGE_CHUNK: usize = 1024;

/// The time of a block key.
fn key_time(key: &[u8]) -> u64 {
    key.get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes)
}

/// Length of one indexing period: an hour.
pub const PERIOD_MICROS: u64 = 3_600_000_000;

/// Posting keys per period and kind (user or host): names are spread over them by a
/// stable hash, so a query reads one and skips the others' records.
pub const BUCKETS: u8 = 64;

/// The encoding of posting keys: a zstd frame of the sorted entries.
pub const POSTINGS_FORMAT: u8 = 6;

/// Most blocks in one set's table (places hold the block number as a u16).
const MAX_TABLE: usize = u16::MAX as usize;

/// Largest entries section a posting key may declare; anything larger is damage.
const MAX_POSTINGS: usize = 64 * 1024 * 1024;

/// Key of the closed-before time.
pub(crate) const WATERMARK: &[u8] = b"W";
/// Key of the migration's progress.
pub(crate) const MIGRATED: &[u8] = b"M";
const TABLE: u8 = b'T';
const USERS: u8 = b'U';
const HOSTS: u8 = b'H';

/// A name and the places of its records (block number, position).
type Entry<'a> = (&'a str, &'a [(u16, u16)]);

/// A block key.
pub(crate) type BlockKey = [u8; TIME_KEY_LEN];

/// The start of the period `at` is in.
pub(crate) fn period_of(at: u64) -> u64 {
    at - at % PERIOD_MICROS
}

/// The bucket of a name: FNV-1a, stable across versions and platforms.
fn bucket_of(name: &str) -> u8 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(BUCKETS)) as u8
}

/// Whose records a query wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A user's.
    User,
    /// A host's.
    Host,
}

impl Kind {
    fn prefix(self) -> u8 {
        match self {
            Kind::User => USERS,
            Kind::Host => HOSTS,
        }
    }
}

/// One record's place, as the writer or a rebuild hands it over.
pub(crate) struct Placed<'a> {
    pub(crate) block: BlockKey,
    pub(crate) position: u16,
    pub(crate) user: Option<&'a str>,
    pub(crate) host: &'a str,
}

/// The postings of one period not written yet.
#[derive(Default)]
pub(crate) struct PeriodSet {
    blocks: Vec<BlockKey>,
    numbers: HashMap<BlockKey, u16>,
    users: HashMap<String, Vec<(u16, u16)>>,
    hosts: HashMap<String, Vec<(u16, u16)>>,
}

impl PeriodSet {
    fn add(&mut self, placed: &Placed<'_>) {
        let blocks = &mut self.blocks;
        let number = *self.numbers.entry(placed.block).or_insert_with(|| {
            blocks.push(placed.block);
            u16::try_from(blocks.len() - 1).unwrap_or(u16::MAX)
        });
        let place = (number, placed.position);
        if let Some(user) = placed.user {
            self.users.entry(user.to_owned()).or_default().push(place);
        }
        self.hosts
            .entry(placed.host.to_owned())
            .or_default()
            .push(place);
    }

    fn is_full(&self) -> bool {
        self.blocks.len() >= MAX_TABLE
    }

    /// The places of `name`'s records, as block keys and positions.
    fn places(&self, kind: Kind, name: &str, out: &mut Vec<(BlockKey, u16)>) {
        let named = match kind {
            Kind::User => &self.users,
            Kind::Host => &self.hosts,
        };
        for &(number, position) in named.get(name).into_iter().flatten() {
            if let Some(block) = self.blocks.get(usize::from(number)) {
                out.push((*block, position));
            }
        }
    }

    /// Adds the set's keys to `batch`: the table and one posting key per bucket used.
    fn write(&self, period: u64, set: u64, batch: &mut sled::Batch) -> Result<(), StoreError> {
        let mut table = Vec::with_capacity(self.blocks.len() * TIME_KEY_LEN);
        for block in &self.blocks {
            table.extend_from_slice(block);
        }
        batch.insert(table_key(period, set).to_vec(), table);
        for (kind, named) in [(Kind::User, &self.users), (Kind::Host, &self.hosts)] {
            let mut buckets: BTreeMap<u8, Vec<Entry<'_>>> = BTreeMap::new();
            for (name, places) in named {
                buckets
                    .entry(bucket_of(name))
                    .or_default()
                    .push((name, places));
            }
            for (bucket, mut entries) in buckets {
                entries.sort_unstable_by_key(|(name, _)| *name);
                let value = encode_entries(&entries)?;
                batch.insert(posting_key(kind, period, bucket, set).to_vec(), value);
            }
        }
        Ok(())
    }
}

fn table_key(period: u64, set: u64) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = TABLE;
    key[1..9].copy_from_slice(&period.to_be_bytes());
    key[9..].copy_from_slice(&set.to_be_bytes());
    key
}

fn posting_key(kind: Kind, period: u64, bucket: u8, set: u64) -> [u8; 18] {
    let mut key = [0u8; 18];
    key[0] = kind.prefix();
    key[1..9].copy_from_slice(&period.to_be_bytes());
    key[9] = bucket;
    key[10..].copy_from_slice(&set.to_be_bytes());
    key
}

/// A bucket's entries as a [`POSTINGS_FORMAT`] value: the format, the length of the
/// entries section (u32 LE), then the section compressed; each entry is the name's
/// length (u16 LE), the name, the number of places (u32 LE) and the places (block
/// number, position: u16 LE each).
fn encode_entries(entries: &[Entry<'_>]) -> Result<Vec<u8>, StoreError> {
    let mut plain = Vec::new();
    for (name, places) in entries {
        let name = &name.as_bytes()[..name.len().min(usize::from(u16::MAX))];
        plain.extend_from_slice(&u16::try_from(name.len()).unwrap_or(u16::MAX).to_le_bytes());
        plain.extend_from_slice(name);
        plain.extend_from_slice(
            &u32::try_from(places.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        for (number, position) in *places {
            plain.extend_from_slice(&number.to_le_bytes());
            plain.extend_from_slice(&position.to_le_bytes());
        }
    }
    let compressed = zstd::bulk::compress(&plain, 1).map_err(StoreError::Compression)?;
    let mut value = Vec::with_capacity(5 + compressed.len());
    value.push(POSTINGS_FORMAT);
    value.extend_from_slice(&u32::try_from(plain.len()).unwrap_or(u32::MAX).to_le_bytes());
    value.extend_from_slice(&compressed);
    Ok(value)
}

/// The places of `name` in a posting value (empty when absent); an error when the
/// value is damaged.
fn decode_places(
    value: &[u8],
    name: &str,
    decompressor: &mut zstd::bulk::Decompressor<'static>,
) -> Result<Vec<(u16, u16)>, StoreError> {
    let Some((&POSTINGS_FORMAT, rest)) = value.split_first() else {
        return Err(StoreError::UnknownBlockFormat(value.first().copied()));
    };
    let (len, frame) = rest
        .split_first_chunk::<4>()
        .ok_or(StoreError::DamagedBlock)?;
    let len = u32::from_le_bytes(*len) as usize;
    if len > MAX_POSTINGS {
        return Err(StoreError::DamagedBlock);
    }
    let plain = decompressor
        .decompress(frame, len)
        .map_err(|_| StoreError::DamagedBlock)?;
    let mut rest = plain.as_slice();
    while !rest.is_empty() {
        let (name_len, tail) = rest
            .split_first_chunk::<2>()
            .ok_or(StoreError::DamagedBlock)?;
        let name_len = usize::from(u16::from_le_bytes(*name_len));
        let entry_name = tail.get(..name_len).ok_or(StoreError::DamagedBlock)?;
        let (count, tail) = tail[name_len..]
            .split_first_chunk::<4>()
            .ok_or(StoreError::DamagedBlock)?;
        let bytes = (u32::from_le_bytes(*count) as usize).saturating_mul(4);
        let places = tail.get(..bytes).ok_or(StoreError::DamagedBlock)?;
        rest = &tail[bytes..];
        if entry_name == name.as_bytes() {
            return Ok(places
                .chunks_exact(4)
                .map(|p| {
                    (
                        u16::from_le_bytes([p[0], p[1]]),
                        u16::from_le_bytes([p[2], p[3]]),
                    )
                })
                .collect());
        }
    }
    Ok(Vec::new())
}

/// The open periods' postings, in memory (see the module documentation).
#[derive(Default)]
pub(crate) struct OpenPostings {
    /// Periods before this are closed (their postings are written).
    closed_before: u64,
    periods: BTreeMap<u64, PeriodSet>,
}

/// Locks the open postings; a panic while they were held leaves them usable (at
/// worst a place of a record that is then not found).
fn lock(open: &Mutex<OpenPostings>) -> MutexGuard<'_, OpenPostings> {
    open.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Now, Unix microseconds.
fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The index of one open database: the postings tree and the open periods.
pub(crate) struct Postings {
    pub(crate) tree: sled::Tree,
    open: Mutex<OpenPostings>,
}

impl Postings {
    /// The index in `tree`; the open periods are then rebuilt ([`Postings::add_open`])
    /// from the `R` blocks keyed at or after [`Postings::closed_before`].
    pub(crate) fn open(tree: sled::Tree) -> Result<Self, StoreError> {
        let closed_before = read_u64(&tree, WATERMARK)?.unwrap_or(0);
        Ok(Self {
            tree,
            open: Mutex::new(OpenPostings {
                closed_before,
                periods: BTreeMap::new(),
            }),
        })
    }

    /// Periods before this time are closed: their postings are written.
    pub(crate) fn closed_before(&self) -> u64 {
        lock(&self.open).closed_before
    }

    /// Adds a place to its open period (rebuilding them on opening).
    pub(crate) fn add_open(&self, placed: &Placed<'_>) {
        lock(&self.open)
            .periods
            .entry(period_of(key_time(&placed.block)))
            .or_default()
            .add(placed);
    }

    /// Adds the places of a write's records, closing the periods a period past their
    /// end: writes (in one batch, before the caller writes the blocks) the closed
    /// periods' sets, a set for records of periods already closed, and full sets.
    pub(crate) fn add<'a>(
        &self,
        db: &sled::Db,
        placed: impl IntoIterator<Item = Placed<'a>>,
    ) -> Result<(), StoreError> {
        let mut open = lock(&self.open);
        let mut late: BTreeMap<u64, PeriodSet> = BTreeMap::new();
        let mut written: Vec<(u64, PeriodSet)> = Vec::new();
        let mut newest = 0;
        for placed in placed {
            let at = key_time(&placed.block);
            newest = newest.max(at);
            let period = period_of(at);
            let set = if period < open.closed_before {
                late.entry(period).or_default()
            } else {
                open.periods.entry(period).or_default()
            };
            set.add(&placed);
            if set.is_full() {
                let full = std::mem::take(set);
                written.push((period, full));
            }
        }
        // A record time far ahead of the clock must not close the periods of now.
        let newest = newest.min(now_micros().saturating_add(PERIOD_MICROS));
        let mut closed_before = open.closed_before;
        let closing: Vec<u64> = open
            .periods
            .keys()
            .copied()
            .take_while(|&period| period + 2 * PERIOD_MICROS <= newest)
            .collect();
        let mut closed = Vec::new();
        for period in closing {
            if let Some(set) = open.periods.remove(&period) {
                closed.push((period, set));
            }
            closed_before = closed_before.max(period + PERIOD_MICROS);
        }
        if late.is_empty() && written.is_empty() && closed.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for (period, set) in late.iter().chain(written.iter().map(|(p, s)| (p, s))) {
            set.write(*period, db.generate_id()?, &mut batch)?;
        }
        for (period, set) in &closed {
            set.write(*period, db.generate_id()?, &mut batch)?;
        }
        batch.insert(WATERMARK, &closed_before.to_be_bytes());
        if let Err(error) = self.tree.apply_batch(batch) {
            // Keep the closed periods open: they are written with the next close.
            open.periods.extend(closed);
            return Err(error.into());
        }
        open.closed_before = closed_before;
        Ok(())
    }

    /// The places (block key, position) of `name`'s records in blocks keyed from
    /// `since` to before `until`, sorted and without repeats: the written sets, then
    /// the open periods.
    pub(crate) fn places(
        &self,
        kind: Kind,
        name: &str,
        since: u64,
        until: u64,
    ) -> Result<Vec<(BlockKey, u16)>, StoreError> {
        let mut out = Vec::new();
        self.written_places(kind, name, since, until, &mut out)?;
        let open = lock(&self.open);
        for (_, set) in open.periods.range(period_of(since)..until) {
            set.places(kind, name, &mut out);
        }
        drop(open);
        out.retain(|(block, _)| (since..until).contains(&key_time(block)));
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// The places in written sets: per period holding postings, one range of the
    /// name's bucket and one seek to the next period.
    fn written_places(
        &self,
        kind: Kind,
        name: &str,
        since: u64,
        until: u64,
        out: &mut Vec<(BlockKey, u16)>,
    ) -> Result<(), StoreError> {
        let bucket = bucket_of(name);
        let end = posting_key(kind, until, 0, 0);
        let mut period = period_of(since);
        let mut table: Option<([u8; 17], sled::IVec)> = None;
        let mut decompressor = zstd::bulk::Decompressor::new().map_err(StoreError::Compression)?;
        while period < until {
            let low = posting_key(kind, period, bucket, 0);
            let high = posting_key(kind, period, bucket, u64::MAX);
            for entry in self.tree.range(low..=high) {
                let (key, value) = entry?;
                let set = key
                    .get(10..18)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map_or(0, u64::from_be_bytes);
                let places = match decode_places(&value, name, &mut decompressor) {
                    Ok(places) => places,
                    Err(err) => {
                        tracing::error!(%err, "skipping a damaged visit-log posting key");
                        continue;
                    }
                };
                if !places.is_empty() {
                    self.resolve(period, set, &places, &mut table, out)?;
                }
            }
            let Some(next) = period.checked_add(PERIOD_MICROS) else {
                break;
            };
            let after = posting_key(kind, next, 0, 0);
            period = match self.tree.range(after.as_slice()..end.as_slice()).next() {
                Some(entry) => {
                    let (key, _) = entry?;
                    key.get(1..9)
                        .and_then(|b| <[u8; 8]>::try_from(b).ok())
                        .map_or(u64::MAX, u64::from_be_bytes)
                }
                None => break,
            };
        }
        Ok(())
    }

    /// Turns places (block number, position) of set `set` of `period` into block keys,
    /// reading the set's table (kept in `table` for the next places of the same set).
    fn resolve(
        &self,
        period: u64,
        set: u64,
        places: &[(u16, u16)],
        table: &mut Option<([u8; 17], sled::IVec)>,
        out: &mut Vec<(BlockKey, u16)>,
    ) -> Result<(), StoreError> {
        let wanted = table_key(period, set);
        if table.as_ref().is_none_or(|(key, _)| *key != wanted) {
            let Some(value) = self.tree.get(wanted)? else {
                tracing::error!("skipping visit-log postings whose table is missing");
                return Ok(());
            };
            *table = Some((wanted, value));
        }
        let Some((_, blocks)) = table.as_ref() else {
            return Ok(());
        };
        for &(number, position) in places {
            let start = usize::from(number) * TIME_KEY_LEN;
            if let Some(block) = blocks
                .get(start..start + TIME_KEY_LEN)
                .and_then(|b| BlockKey::try_from(b).ok())
            {
                out.push((block, position));
            }
        }
        Ok(())
    }

    /// Removes the sets of periods whose blocks all end before `cutoff` (a block
    /// spans at most `span` after its key), and such open periods.
    pub(crate) fn purge_before(&self, cutoff: u64, span: u64) -> Result<(), StoreError> {
        let bound = cutoff
            .saturating_sub(span)
            .saturating_add(1)
            .saturating_sub(PERIOD_MICROS);
        lock(&self.open)
            .periods
            .retain(|&period, _| period >= bound);
        for prefix in [TABLE, USERS, HOSTS] {
            let mut low = vec![prefix];
            let mut high = vec![prefix];
            high.extend_from_slice(&bound.to_be_bytes());
            loop {
                let mut batch = sled::Batch::default();
                let mut last = None;
                let mut keys = 0;
                for entry in self
                    .tree
                    .range(low.as_slice()..high.as_slice())
                    .take(PURGE_CHUNK)
                {
                    let (key, _) = entry?;
                    batch.remove(key.clone());
                    keys += 1;
                    last = Some(key);
                }
                self.tree.apply_batch(batch)?;
                match last {
                    Some(key) if keys == PURGE_CHUNK => {
                        low = key.to_vec();
                        low.push(0);
                    }
                    _ => break,
                }
            }
        }
        Ok(())
    }
}

/// A u64 BE value stored under `key`, if any.
pub(crate) fn read_u64(tree: &sled::Tree, key: &[u8]) -> Result<Option<u64>, StoreError> {
    Ok(tree
        .get(key)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(u64::from_be_bytes))
}

/// Writes the sets of `periods` (a migration's chunk) with the migration's progress,
/// in one batch.
pub(crate) fn write_migrated(
    db: &sled::Db,
    tree: &sled::Tree,
    periods: &BTreeMap<u64, PeriodSet>,
    progress: u64,
) -> Result<(), StoreError> {
    let mut batch = sled::Batch::default();
    for (period, set) in periods {
        set.write(*period, db.generate_id()?, &mut batch)?;
    }
    batch.insert(MIGRATED, &progress.to_be_bytes());
    tree.apply_batch(batch)?;
    Ok(())
}

/// Adds `placed` to the chunk's sets (for migrating).
pub(crate) fn add_to(periods: &mut BTreeMap<u64, PeriodSet>, placed: &Placed<'_>) {
    periods
        .entry(period_of(key_time(&placed.block)))
        .or_default()
        .add(placed);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn entries_round_trip_and_damage_is_an_error() {
        let places = [(1u16, 2u16), (3, 4)];
        let value = encode_entries(&[("alice", &places[..]), ("bob", &[(7, 8)])]).unwrap();
        let mut d = zstd::bulk::Decompressor::new().unwrap();
        assert_eq!(decode_places(&value, "alice", &mut d).unwrap(), places);
        assert_eq!(decode_places(&value, "bob", &mut d).unwrap(), [(7, 8)]);
        assert!(decode_places(&value, "carol", &mut d).unwrap().is_empty());
        for len in 0..value.len() {
            let _ = decode_places(&value[..len], "bob", &mut d);
        }
        let mut huge = value.clone();
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_places(&huge, "bob", &mut d).is_err());
    }

    #[test]
    fn buckets_are_stable() {
        // A stored index depends on these: never change the hash.
        assert_eq!(bucket_of(""), (0xcbf2_9ce4_8422_2325u64 % 64) as u8);
        assert_eq!(bucket_of("alice"), bucket_of("alice"));
        assert!(bucket_of("pupil0042") < BUCKETS);
    }
}
