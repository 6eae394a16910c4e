//! The visit log: one [`Record`] per request, allowed or blocked, and the queries,
//! retention purge and subject-access export over it.
//!
//! # Layout
//!
//! sled pays per key far more than per byte (about 100,000 sequential keys/s on one
//! core, a quarter of that for keys scattered through a large tree), so records are
//! stored in *blocks*: [`Store::write_records`] sorts a batch by time and cuts it into
//! blocks of at most [`BLOCK_RECORDS`] records spanning at most [`BLOCK_SPAN_MICROS`]
//! (one minute). A block's *block key* is 16 bytes: the earliest record time in the
//! block in Unix microseconds (u64 BE) followed by a sequence number (u64 BE, from
//! sled's persistent id generator, so keys are unique across restarts). Byte order is
//! time order.
//!
//! A block value is [`BLOCK_FORMAT`] (1 byte), the latest record time in the block
//! (u64 BE), the item count (u32 LE), then per item its length (u32 LE) and bytes.
//!
//! Three sled trees, each key starting with a one-byte prefix:
//!
//! | tree              | prefix | key after the prefix         | value                                   |
//! |-------------------|--------|------------------------------|-----------------------------------------|
//! | `visit_log`       | `R`    | block key                    | block of records (`Record::encode`), all of one user (or all without a user name) |
//! | `visit_log`       | `B`    | block key                    | block of the blocked records (a copy)   |
//! | `visit_log`       | `S`    | block key                    | block of the records with search terms (a copy) |
//! | `visit_log_users` | `U`    | user name, `0x00`, block key | the same block as `R` with that key (a copy, for users only) |
//! | `visit_log_index` | `H`    | host name, `0x00`, block key | block of references to that host's records: `R` block key (16 bytes) and position in it (u16 LE) |
//!
//! The writer hands over large batches (all records of one flush interval, up to its
//! batch limit); each batch is grouped by user, so an `R` block holds one person's
//! records, and one user's week is one contiguous range scan of that user's `U`
//! copies. sled keeps values inside its tree nodes and pays per key, so the big
//! values of `visit_log` are only ever appended near the newest keys, the index that
//! is inserted all over its tree carries small values, and a batch costs about one key
//! per block (per user at full load) plus one per host. `B` and `S` copies make
//! "blocked in a range" and "search terms in a range" read only those records. A
//! record with a user name is stored about twice.
//!
//! Because blocks overlap in time (per-user blocks of one batch; a long download is
//! recorded when it ends), a scan reads blocks in key order and releases a record only
//! when the next block's key is beyond it, so records always come back oldest first; a
//! scan for `[since, until)` starts one block span before `since`. Every query
//! re-checks every condition against the decoded record: keys only narrow the scan
//! and are never trusted for correctness (a user name containing `0x00` cannot confuse
//! it).
//!
//! # Writing and crash semantics
//!
//! [`Store::write_records`] writes one batch as one atomic sled `Batch` per tree: the
//! host index, then the user copies, then `visit_log`. Nothing is durable until the
//! next flush (the writer task flushes after each batch), and sled recovers to a
//! prefix of the operations it had accepted, so after `kill -9` or a power cut:
//!
//! - every batch whose flush completed is there, whole;
//! - the records of the batch being written or flushed, plus those still queued, are
//!   lost: at most one flush interval's worth (the end-to-end kill -9 test finds
//!   exactly the records the writer had reported flushed);
//! - of that last batch, the host index entries and user copies may have survived
//!   without its `visit_log` blocks: a user's query may then show records that a time
//!   query does not (they were really made), and host queries skip an entry whose
//!   block is missing. [`Store::purge_before`] removes all of them by their time like
//!   any other. A block that survived in `visit_log` always has its copies and index
//!   entries.
//!
//! Nothing is ever partially written inside a tree's batch: a block is whole or
//! absent.
//!
//! # Retention
//!
//! [`Store::purge_before`] removes old blocks in chunks of [`PURGE_CHUNK`] keys, each
//! chunk one short batch, so the writer task and queries interleave with it and the
//! proxy keeps serving. A block is removed when its latest record is older than the
//! cutoff; a block that straddles the cutoff stays until the next purge (records at
//! most one block span, a minute, past the limit). Users and hosts are purged with one
//! seek per distinct name, so a purge interrupted by a crash is completed by the next.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::Write;

use tracing::error;

use crate::{Record, Store, StoreError, record::Outcome};

/// Length of a block key: earliest time in microseconds (u64 BE) and a sequence
/// number (u64 BE).
pub const TIME_KEY_LEN: usize = 16;

/// Most records in one block.
pub const BLOCK_RECORDS: usize = 256;

/// Most time between the earliest and the latest record of one block: one minute.
pub const BLOCK_SPAN_MICROS: u64 = 60_000_000;

/// Most bytes in one block (a block is closed when it would grow past it).
pub const BLOCK_BYTES: usize = 128 * 1024;

/// The block encoding written by [`Store::write_records`].
pub const BLOCK_FORMAT: u8 = 1;

const BLOCK_HEADER_LEN: usize = 1 + 8 + 4;

/// Keys removed per batch by [`Store::purge_before`].
pub const PURGE_CHUNK: usize = 1024;

/// Key prefix of the blocks of every record.
const RECORDS: u8 = b'R';
/// Key prefix of the per-user index entries.
const BY_USER: u8 = b'U';
/// Key prefix of the blocked copies.
const BLOCKED: u8 = b'B';
/// Key prefix of the search-terms copies.
const SEARCHES: u8 = b'S';
/// Key prefix of the per-host references.
const BY_HOST: u8 = b'H';

/// Length of one host reference: an `R` block key and a position.
const HOST_REF_LEN: usize = TIME_KEY_LEN + 2;

/// Sequence numbers: one id from sled per batch, shifted, plus a block counter.
const SEQ_SHIFT: u32 = 24;

/// The block key of a block whose earliest record is at `at_unix_micros`, with
/// sequence number `seq`.
pub fn time_key(at_unix_micros: u64, seq: u64) -> [u8; TIME_KEY_LEN] {
    let mut key = [0u8; TIME_KEY_LEN];
    key[..8].copy_from_slice(&at_unix_micros.to_be_bytes());
    key[8..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn key_time(key: &[u8]) -> u64 {
    key.get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes)
}

/// The key prefix of a tree part: the prefix byte, and for `U`/`H` the name and 0x00.
fn part(kind: u8, name: Option<&str>) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + name.map_or(0, str::len) + TIME_KEY_LEN);
    key.push(kind);
    if let Some(name) = name {
        key.extend_from_slice(name.as_bytes());
        key.push(0);
    }
    key
}

fn with_key(prefix: &[u8], block_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + block_key.len());
    key.extend_from_slice(prefix);
    key.extend_from_slice(block_key);
    key
}

/// A question for the visit log. Every condition that is set must hold; records come
/// back oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Only this user's records.
    pub user: Option<String>,
    /// Only records for this exact host name.
    pub host: Option<String>,
    /// Only records in this category.
    pub category: Option<String>,
    /// Only blocked records.
    pub blocked_only: bool,
    /// Only records with search terms.
    pub search_terms_only: bool,
    /// From this time on (Unix microseconds, inclusive).
    pub since: Option<u64>,
    /// Before this time (Unix microseconds, exclusive).
    pub until: Option<u64>,
    /// At most this many records (the oldest ones).
    pub limit: Option<usize>,
}

impl Query {
    /// Whether `record` satisfies every condition (time bounds included).
    pub fn matches(&self, record: &Record) -> bool {
        self.since
            .is_none_or(|since| record.at_unix_micros >= since)
            && self.until.is_none_or(|until| record.at_unix_micros < until)
            && self
                .user
                .as_deref()
                .is_none_or(|user| record.user.as_deref() == Some(user))
            && self.host.as_deref().is_none_or(|host| record.host == host)
            && self
                .category
                .as_deref()
                .is_none_or(|category| record.categories.iter().any(|c| c == category))
            && (!self.blocked_only || record.outcome == Outcome::Blocked)
            && (!self.search_terms_only || record.search.is_some())
    }

    /// Keys under `prefix` whose blocks can hold records in the query's time range:
    /// from one block span before `since` to `until`.
    fn key_range(&self, prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let since = self.since.unwrap_or(0).saturating_sub(BLOCK_SPAN_MICROS);
        let low = with_key(prefix, &time_key(since, 0));
        let high = match self.until {
            Some(until) => with_key(prefix, &time_key(until, 0)),
            None => with_key(prefix, &[0xff; TIME_KEY_LEN + 1]),
        };
        (low, high)
    }
}

/// One block being built: its bytes and time range.
struct BlockBuilder {
    bytes: Vec<u8>,
    count: u32,
    min: u64,
    max: u64,
}

impl BlockBuilder {
    fn new(first_at: u64) -> Self {
        let mut bytes = Vec::with_capacity(4096);
        bytes.push(BLOCK_FORMAT);
        bytes.extend_from_slice(&[0; 8 + 4]);
        Self {
            bytes,
            count: 0,
            min: first_at,
            max: first_at,
        }
    }

    fn has_room_for(&self, at: u64, len: usize) -> bool {
        (self.count as usize) < BLOCK_RECORDS
            && at.saturating_sub(self.min) <= BLOCK_SPAN_MICROS
            && (self.count == 0 || self.bytes.len() + 4 + len <= BLOCK_BYTES)
    }

    fn push(&mut self, at: u64, item: &[u8]) {
        let len = u32::try_from(item.len()).unwrap_or(u32::MAX);
        self.bytes.extend_from_slice(&len.to_le_bytes());
        self.bytes.extend_from_slice(item);
        self.count += 1;
        self.max = self.max.max(at);
    }

    fn finish(mut self) -> (u64, Vec<u8>) {
        self.bytes[1..9].copy_from_slice(&self.max.to_be_bytes());
        self.bytes[9..13].copy_from_slice(&self.count.to_le_bytes());
        (self.min, self.bytes)
    }
}

/// Hands out unique sequence numbers for the blocks of one batch.
struct Sequencer<'a> {
    db: &'a sled::Db,
    base: u64,
    next: u64,
}

impl<'a> Sequencer<'a> {
    fn new(db: &'a sled::Db) -> Result<Self, StoreError> {
        Ok(Self {
            db,
            base: db.generate_id()? << SEQ_SHIFT,
            next: 0,
        })
    }

    fn next(&mut self) -> Result<u64, StoreError> {
        if self.next >= 1 << SEQ_SHIFT {
            self.base = self.db.generate_id()? << SEQ_SHIFT;
            self.next = 0;
        }
        self.next += 1;
        Ok(self.base | (self.next - 1))
    }
}

/// Cuts items (index, time, bytes) given in time order into blocks. Calls
/// `placed(block_key, position, index)` for each item and `closed(block_key, bytes)`
/// for each finished block.
fn build_blocks<'i>(
    items: impl IntoIterator<Item = (usize, u64, &'i [u8])>,
    seq: &mut Sequencer<'_>,
    mut placed: impl FnMut(&[u8; TIME_KEY_LEN], u16, usize),
    mut closed: impl FnMut(&[u8; TIME_KEY_LEN], Vec<u8>),
) -> Result<(), StoreError> {
    let mut current: Option<BlockBuilder> = None;
    let mut members: Vec<usize> = Vec::new();
    let mut close = |block: BlockBuilder, members: &mut Vec<usize>| -> Result<(), StoreError> {
        let (min, bytes) = block.finish();
        let key = time_key(min, seq.next()?);
        for (position, &index) in members.iter().enumerate() {
            placed(&key, u16::try_from(position).unwrap_or(u16::MAX), index);
        }
        members.clear();
        closed(&key, bytes);
        Ok(())
    };
    for (index, at, bytes) in items {
        if let Some(block) = current.take_if(|block| !block.has_room_for(at, bytes.len())) {
            close(block, &mut members)?;
        }
        current
            .get_or_insert_with(|| BlockBuilder::new(at))
            .push(at, bytes);
        members.push(index);
    }
    if let Some(block) = current {
        close(block, &mut members)?;
    }
    Ok(())
}

/// A closure that inserts finished blocks into `batch` under `prefix`.
fn insert_into<'b>(
    batch: &'b mut sled::Batch,
    prefix: &'b [u8],
) -> impl FnMut(&[u8; TIME_KEY_LEN], Vec<u8>) + 'b {
    move |key, bytes| batch.insert(with_key(prefix, key), bytes)
}

/// The latest record time of a stored block (0 when unreadable).
fn block_max(value: &[u8]) -> u64 {
    value
        .get(1..9)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes)
}

/// The item count of a stored block (0 when unreadable).
fn block_count(value: &[u8]) -> usize {
    value
        .get(9..13)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, |b| u32::from_le_bytes(b) as usize)
}

/// The items of a stored block.
fn block_items(value: &[u8]) -> Result<BlockItems<'_>, StoreError> {
    match value.first() {
        Some(&BLOCK_FORMAT) if value.len() >= BLOCK_HEADER_LEN => Ok(BlockItems {
            rest: &value[BLOCK_HEADER_LEN..],
        }),
        other => Err(StoreError::UnknownRecordVersion(other.copied())),
    }
}

/// Iterates over the items of a block.
struct BlockItems<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for BlockItems<'a> {
    type Item = Result<&'a [u8], StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let item = self.rest.split_first_chunk::<4>().and_then(|(len, rest)| {
            let len = u32::from_le_bytes(*len) as usize;
            (rest.len() >= len).then(|| rest.split_at(len))
        });
        match item {
            Some((item, rest)) => {
                self.rest = rest;
                Some(Ok(item))
            }
            None => {
                self.rest = &[];
                Some(Err(StoreError::DamagedBlock))
            }
        }
    }
}

/// A record in the reorder buffer (ordered by the heap key only).
struct Pending(Record);

impl PartialEq for Pending {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

/// Releases records in time order from blocks read in key order (see the module
/// documentation): a record is final once a block with a later key has been reached.
struct TimeOrderedMerge<'q, F> {
    query: &'q Query,
    pending: BinaryHeap<Reverse<(u64, u64, Pending)>>,
    arrivals: u64,
    emitted: usize,
    limit: usize,
    emit: F,
}

impl<F: FnMut(Record) -> bool> TimeOrderedMerge<'_, F> {
    /// Releases everything earlier than `block_start`; false when the scan should stop
    /// (limit reached or `emit` said so).
    fn advance_to(&mut self, block_start: u64) -> bool {
        while self
            .pending
            .peek()
            .is_some_and(|Reverse((at, _, _))| *at < block_start)
        {
            let Some(Reverse((_, _, Pending(record)))) = self.pending.pop() else {
                break;
            };
            self.emitted += 1;
            if !(self.emit)(record) || self.emitted >= self.limit {
                return false;
            }
        }
        true
    }

    fn offer(&mut self, encoded: &[u8]) {
        match Record::decode(encoded) {
            Ok(record) if self.query.matches(&record) => {
                self.arrivals += 1;
                self.pending.push(Reverse((
                    record.at_unix_micros,
                    self.arrivals,
                    Pending(record),
                )));
            }
            Ok(_) => {}
            Err(err) => error!(%err, "skipping an undecodable visit-log record"),
        }
    }

    fn offer_block(&mut self, block_key: &[u8], value: &[u8]) -> bool {
        if !self.advance_to(key_time(block_key)) {
            return false;
        }
        match block_items(value) {
            Ok(items) => {
                for item in items {
                    match item {
                        Ok(encoded) => self.offer(encoded),
                        Err(err) => {
                            error!(%err, "skipping the rest of a damaged visit-log block");
                            break;
                        }
                    }
                }
            }
            Err(err) => error!(%err, "skipping an undecodable visit-log block"),
        }
        true
    }

    fn finish(mut self) -> usize {
        self.advance_to(u64::MAX);
        self.emitted
    }
}

impl Store {
    /// Writes a batch of records (the writer task calls this; tools and tests may too):
    /// one atomic sled batch for the index, then one for the blocks. Not flushed.
    pub fn write_records(&self, records: &[Record]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let encoded: Vec<Vec<u8>> = records.iter().map(Record::encode).collect();
        let item = |i: usize| (i, records[i].at_unix_micros, encoded[i].as_slice());
        let mut by_time: Vec<usize> = (0..records.len()).collect();
        by_time.sort_by_key(|&i| records[i].at_unix_micros);
        let mut by_user = by_time.clone();
        by_user.sort_by(|&a, &b| records[a].user.cmp(&records[b].user));
        let mut seq = Sequencer::new(&self.db)?;
        let mut data = sled::Batch::default();
        let mut users = sled::Batch::default();
        let mut index = sled::Batch::default();

        let mut host_refs: HashMap<&str, Vec<(usize, [u8; HOST_REF_LEN])>> = HashMap::new();
        for group in by_user.chunk_by(|&a, &b| records[a].user == records[b].user) {
            let user_prefix = records[group[0]]
                .user
                .as_deref()
                .map(|user| part(BY_USER, Some(user)));
            build_blocks(
                group.iter().map(|&i| item(i)),
                &mut seq,
                |key, position, i| {
                    let mut reference = [0u8; HOST_REF_LEN];
                    reference[..TIME_KEY_LEN].copy_from_slice(key);
                    reference[TIME_KEY_LEN..].copy_from_slice(&position.to_le_bytes());
                    host_refs
                        .entry(records[i].host.as_str())
                        .or_default()
                        .push((i, reference));
                },
                |key, bytes| {
                    if let Some(prefix) = &user_prefix {
                        users.insert(with_key(prefix, key), bytes.clone());
                    }
                    data.insert(with_key(&[RECORDS], key), bytes);
                },
            )?;
        }
        for (host, refs) in &mut host_refs {
            refs.sort_by_key(|(i, _)| records[*i].at_unix_micros);
            build_blocks(
                refs.iter()
                    .map(|(i, reference)| (*i, records[*i].at_unix_micros, &reference[..])),
                &mut seq,
                |_, _, _| {},
                insert_into(&mut index, &part(BY_HOST, Some(host))),
            )?;
        }
        build_blocks(
            by_time
                .iter()
                .filter(|&&i| records[i].outcome == Outcome::Blocked)
                .map(|&i| item(i)),
            &mut seq,
            |_, _, _| {},
            insert_into(&mut data, &[BLOCKED]),
        )?;
        build_blocks(
            by_time
                .iter()
                .filter(|&&i| records[i].search.is_some())
                .map(|&i| item(i)),
            &mut seq,
            |_, _, _| {},
            insert_into(&mut data, &[SEARCHES]),
        )?;
        self.visit_log_index.apply_batch(index)?;
        self.visit_log_users.apply_batch(users)?;
        self.visit_log.apply_batch(data)?;
        Ok(())
    }

    /// Number of records in the visit log (reads every block header: O(blocks)).
    pub fn record_count(&self) -> usize {
        self.visit_log
            .scan_prefix([RECORDS])
            .values()
            .filter_map(Result::ok)
            .map(|value| block_count(&value))
            .sum()
    }

    /// Records matching `query`, oldest first (see [`Store::scan`]).
    pub fn query(&self, query: &Query) -> Result<Vec<Record>, StoreError> {
        let mut found = Vec::new();
        self.scan(query, |record| {
            found.push(record);
            true
        })?;
        Ok(found)
    }

    /// Hands each record matching `query` to `emit`, oldest first, without holding
    /// them all in memory; `emit` returns false to stop. Returns how many were handed
    /// over. Reads the user's own blocks when a user is given, else the host's
    /// references, else the blocked or search-terms copies, else every block in the
    /// time range, and checks every condition on the decoded record. A record that
    /// cannot be decoded is logged and skipped, so one damaged value does not hide the
    /// rest.
    pub fn scan(
        &self,
        query: &Query,
        emit: impl FnMut(Record) -> bool,
    ) -> Result<usize, StoreError> {
        let limit = query.limit.unwrap_or(usize::MAX);
        if limit == 0 || matches!((query.since, query.until), (Some(s), Some(u)) if s >= u) {
            return Ok(0);
        }
        let mut merge = TimeOrderedMerge {
            query,
            pending: BinaryHeap::new(),
            arrivals: 0,
            emitted: 0,
            limit,
            emit,
        };
        let (tree, prefix) = match (&query.user, &query.host) {
            (Some(user), _) => (&self.visit_log_users, part(BY_USER, Some(user))),
            (None, Some(host)) => (&self.visit_log_index, part(BY_HOST, Some(host))),
            (None, None) if query.blocked_only => (&self.visit_log, part(BLOCKED, None)),
            (None, None) if query.search_terms_only => (&self.visit_log, part(SEARCHES, None)),
            (None, None) => (&self.visit_log, part(RECORDS, None)),
        };
        let (low, high) = query.key_range(&prefix);
        let mut referenced: Option<([u8; TIME_KEY_LEN], sled::IVec)> = None;
        for entry in tree.range(low..high) {
            let (key, value) = entry?;
            let block_key = &key[prefix.len()..];
            let go_on = match (&query.user, &query.host) {
                (None, Some(_)) => {
                    if !merge.advance_to(key_time(block_key)) {
                        return Ok(merge.emitted);
                    }
                    self.offer_references(&mut merge, &value, &mut referenced)?;
                    true
                }
                _ => merge.offer_block(block_key, &value),
            };
            if !go_on {
                return Ok(merge.emitted);
            }
        }
        Ok(merge.finish())
    }

    /// Offers the records a block of host references points at.
    fn offer_references<F: FnMut(Record) -> bool>(
        &self,
        merge: &mut TimeOrderedMerge<'_, F>,
        references: &[u8],
        referenced: &mut Option<([u8; TIME_KEY_LEN], sled::IVec)>,
    ) -> Result<(), StoreError> {
        for reference in block_items(references)? {
            let reference = reference?;
            let Some((record_key, position)) = reference.split_first_chunk::<TIME_KEY_LEN>() else {
                continue;
            };
            let position = position
                .first_chunk::<2>()
                .map_or(usize::MAX, |p| u16::from_le_bytes(*p) as usize);
            if referenced.as_ref().is_none_or(|(k, _)| k != record_key) {
                *referenced = self
                    .visit_log
                    .get(with_key(&[RECORDS], record_key))?
                    .map(|block| (*record_key, block));
            }
            // A missing block is an index entry that outlived a crash: skip it.
            let Some((_, block)) = referenced.as_ref() else {
                continue;
            };
            if let Some(Ok(encoded)) = block_items(block)?.nth(position) {
                merge.offer(encoded);
            }
        }
        Ok(())
    }

    /// Every record about `user` in the time range (subject access request), oldest
    /// first.
    pub fn export_user(
        &self,
        user: &str,
        since: Option<u64>,
        until: Option<u64>,
    ) -> Result<Vec<Record>, StoreError> {
        self.query(&Query {
            user: Some(user.to_owned()),
            since,
            until,
            ..Query::default()
        })
    }

    /// Removes every block whose records are all older than `cutoff_micros` (Unix
    /// microseconds), copies and references included, in short chunks. Returns the
    /// number of records removed.
    pub fn purge_before(&self, cutoff_micros: u64) -> Result<usize, StoreError> {
        let removed = purge_blocks(&self.visit_log, &[RECORDS], cutoff_micros)?;
        purge_blocks(&self.visit_log, &[BLOCKED], cutoff_micros)?;
        purge_blocks(&self.visit_log, &[SEARCHES], cutoff_micros)?;
        purge_named(&self.visit_log_users, BY_USER, cutoff_micros)?;
        purge_named(&self.visit_log_index, BY_HOST, cutoff_micros)?;
        Ok(removed)
    }
}

/// Removes the blocks under `prefix` whose latest record is before `cutoff`; returns
/// the number of items they held.
fn purge_blocks(tree: &sled::Tree, prefix: &[u8], cutoff: u64) -> Result<usize, StoreError> {
    let mut low = with_key(prefix, &[0; TIME_KEY_LEN]);
    let high = with_key(prefix, &time_key(cutoff, 0));
    let mut removed = 0;
    loop {
        let mut batch = sled::Batch::default();
        let mut keys = 0;
        let mut last: Option<sled::IVec> = None;
        for entry in tree
            .range(low.as_slice()..high.as_slice())
            .take(PURGE_CHUNK)
        {
            let (key, value) = entry?;
            keys += 1;
            // A block straddling the cutoff keeps its newer records: it stays.
            if block_max(&value) < cutoff {
                batch.remove(key.clone());
                removed += block_count(&value);
            }
            last = Some(key);
        }
        tree.apply_batch(batch)?;
        match last {
            Some(key) if keys == PURGE_CHUNK => {
                low = key.to_vec();
                low.push(0);
            }
            _ => return Ok(removed),
        }
    }
}

/// Purges the `kind name 0x00 block key` entries: for each distinct name, its old
/// blocks.
fn purge_named(tree: &sled::Tree, kind: u8, cutoff: u64) -> Result<usize, StoreError> {
    let mut removed = 0;
    let mut from = vec![kind];
    let end = [kind + 1];
    while let Some(entry) = tree.range(from.as_slice()..end.as_slice()).next() {
        let (key, _) = entry?;
        let Some(prefix_len) = key.len().checked_sub(TIME_KEY_LEN).filter(|&n| n > 1) else {
            // Not one of ours: leave it and move on.
            from = key.to_vec();
            from.push(0);
            continue;
        };
        let prefix = &key[..prefix_len];
        removed += purge_blocks(tree, prefix, cutoff)?;
        from = with_key(prefix, &[0xff; TIME_KEY_LEN + 1]);
    }
    Ok(removed)
}

/// Writes records as one JSON array (pretty-printed, one object per record).
pub fn write_records_json(records: &[Record], out: impl Write) -> Result<(), StoreError> {
    let mut out = std::io::BufWriter::new(out);
    serde_json::to_writer_pretty(&mut out, records)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// The CSV header written by [`write_records_csv`].
pub const CSV_HEADER: [&str; 23] = [
    "at_unix_micros",
    "user",
    "role",
    "group",
    "client",
    "identified_by",
    "method",
    "scheme",
    "host",
    "port",
    "path",
    "categories",
    "outcome",
    "rule",
    "status",
    "bytes_up",
    "bytes_down",
    "duration_micros",
    "search_engine",
    "search_terms",
    "seen_as",
    "user_agent",
    "failure",
];

/// Writes records as CSV (RFC 4180): a header row, then one row per record; empty
/// fields for absent values, categories joined with `;`, fields containing a comma,
/// quote, CR or LF quoted with inner quotes doubled; rows end with CRLF. A field that
/// a spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, tab or CR:
/// search terms and URLs are attacker-controlled) is prefixed with `'`.
pub fn write_records_csv(records: &[Record], out: impl Write) -> Result<(), StoreError> {
    let mut out = std::io::BufWriter::new(out);
    write_csv_row(&mut out, CSV_HEADER.iter().copied())?;
    for r in records {
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        let row: [String; 23] = [
            r.at_unix_micros.to_string(),
            opt(&r.user),
            r.role.clone(),
            opt(&r.group),
            r.client.to_string(),
            format!("{:?}", r.identified_by),
            r.method.clone(),
            r.scheme.clone(),
            r.host.clone(),
            r.port.to_string(),
            opt(&r.path),
            r.categories.join(";"),
            format!("{:?}", r.outcome),
            r.rule.clone(),
            r.status.to_string(),
            r.bytes_up.to_string(),
            r.bytes_down.to_string(),
            r.duration_micros.to_string(),
            r.search
                .as_ref()
                .map(|s| s.engine.clone())
                .unwrap_or_default(),
            r.search
                .as_ref()
                .map(|s| s.terms.clone())
                .unwrap_or_default(),
            format!("{:?}", r.seen_as),
            opt(&r.user_agent),
            opt(&r.failure),
        ];
        write_csv_row(&mut out, row.iter().map(String::as_str))?;
    }
    out.flush()?;
    Ok(())
}

/// Writes one CSV row the way [`write_records_csv`] does (RFC 4180, CRLF, fields a
/// spreadsheet would run as formulas prefixed with `'`), for other CSV outputs.
pub fn write_csv_row<'a>(
    out: &mut (impl Write + ?Sized),
    fields: impl Iterator<Item = &'a str>,
) -> std::io::Result<()> {
    for (i, field) in fields.enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        let neutralised;
        let field = if field.starts_with(['=', '+', '-', '@', '\t', '\r']) {
            neutralised = format!("'{field}");
            neutralised.as_str()
        } else {
            field
        };
        if field.contains([',', '"', '\n', '\r']) {
            out.write_all(b"\"")?;
            out.write_all(field.replace('"', "\"\"").as_bytes())?;
            out.write_all(b"\"")?;
        } else {
            out.write_all(field.as_bytes())?;
        }
    }
    out.write_all(b"\r\n")
}

#[cfg(test)]
mod csv_tests {
    #![allow(clippy::unwrap_used)]
    use super::write_csv_row;

    #[test]
    fn formulas_are_neutralised_and_quoting_still_applies() {
        let mut out = Vec::new();
        write_csv_row(
            &mut out,
            ["=HYPERLINK(\"x\")", "+1", "-2", "@SUM", "plain", "a,b"].into_iter(),
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"'=HYPERLINK(\"\"x\"\")\",'+1,'-2,'@SUM,plain,\"a,b\"\r\n"
        );
    }
}
