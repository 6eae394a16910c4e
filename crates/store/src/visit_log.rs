//! The visit log: one [`Record`] per request, allowed or blocked, and the queries,
//! retention purge and subject-access export over it.
//!
//! # Layout
//!
//! sled pays per key far more than per byte (about 100,000 sequential keys/s on one
//! core, a quarter of that for keys scattered through a large tree), so records are
//! stored in *blocks*: [`Store::write_batch`] (and [`Store::write_records`]) sorts a
//! batch by time and cuts it into blocks of at most [`BLOCK_RECORDS`] records spanning
//! at most [`BLOCK_SPAN_MICROS`] (one minute). A block's *block key* is 16 bytes: the
//! earliest record time in the block in Unix microseconds (u64 BE) followed by a
//! sequence number (u64 BE, from sled's persistent id generator, so keys are unique
//! across restarts). Byte order is time order.
//!
//! Every block value starts with a 13-byte header: its format (1 byte), the latest
//! record time in the block (u64 BE) and the item count (u32 LE), so purging and
//! counting never decompress. Three formats:
//!
//! | format | name                   | after the header                                  | written for |
//! |--------|------------------------|---------------------------------------------------|-------------|
//! | 1      | [`PLAIN_BLOCK_FORMAT`] | per item its length (u32 LE) and bytes            | before format 2: every block (`R`, `B`, `S`, the `U` copies, `H`); now only a record block that compression would not make smaller |
//! | 2      | [`BLOCK_FORMAT`]       | the length of the format-1 item section (u32 LE), then that section compressed as one zstd frame (level 1, no checksum, no content size) | `R`, `B`, `S` |
//! | 3      | [`REFERENCE_FORMAT`]   | references of [`REFERENCE_LEN`] (18) bytes, no lengths: an `R` block key and the position of the record in that block (u16 LE) | `U`, `H` of the reference layout, before the hourly postings (only read while migrating) |
//!
//! A block whose format is unknown, whose item section is truncated, or whose
//! compressed frame does not decompress to exactly the declared length (at most 16
//! MiB) is an error ([`StoreError::UnknownBlockFormat`], [`StoreError::DamagedBlock`]);
//! queries log it and skip that block.
//!
//! Two sled trees:
//!
//! | tree                 | key                        | value                                   |
//! |----------------------|----------------------------|-----------------------------------------|
//! | `visit_log`          | `R`, block key             | block of records (`Record::encode`) of every user, in time order (format 2; format 1 blocks of earlier versions hold one user's records, or all without a user name) |
//! | `visit_log`          | `B`, block key             | block of the blocked records (a copy, format 2) |
//! | `visit_log`          | `S`, block key             | block of the records with search terms (a copy, format 2) |
//! | `visit_log_postings` | see [`crate::postings`]    | per closed hour, the `R` block keys of the hour and per user and per host the places (block, position) of their records |
//!
//! The writer hands over large batches (all records of one flush interval, up to its
//! batch limit); a batch is cut into `R` blocks in time order, whoever made the
//! records, so a block holds everything of up to a minute of traffic and compresses
//! well (user agents, hosts, roles and categories repeat from record to record: about
//! 40 bytes a record instead of 225 in blocks of 50). A record is stored once. sled
//! pays per key, and several hundred bytes on disk for each small key inserted all
//! over a tree against about 90 for one appended after the newest, so every key is
//! appended in time order: a batch costs one key per block, and the index a few keys
//! per closed hour ([`crate::postings`]; before, it was a user and a host
//! reference key per block, most of a record's size on disk, `benches/README.md` has
//! the figures). One user's week reads the user's posting key of each hour and only
//! the `R` blocks holding the user's records (each read and decompressed once). `B`
//! and `S` copies make "blocked in a range" and "search terms in a range" read only
//! those records (about 11 bytes a record, counted in `benches/README.md`).
//!
//! Because blocks overlap in time (blocks of different batches; a long download is
//! recorded when it ends), a scan reads blocks in key order and releases a record only
//! when the next block's key is beyond it, so records always come back oldest first; a
//! scan for `[since, until)` starts one block span before `since`. Every query
//! re-checks every condition against the decoded record: keys and postings only
//! narrow the scan and are never trusted for correctness.
//!
//! # Writing and crash semantics
//!
//! [`Store::write_batch`] hands the places of the batch's records to the index, which
//! writes (one atomic batch in `visit_log_postings`) the sets of the hours it closes
//! and of records more than an hour late, then writes the `R` blocks and the `B` and
//! `S` copies as one atomic sled `Batch` in `visit_log`. Nothing is durable until the
//! next flush (the writer task flushes after each batch), and sled recovers to a
//! prefix of the operations it had accepted, so after `kill -9` or a power cut:
//!
//! - every batch whose flush completed is there, whole, and found by every query: the
//!   open hours' postings, kept in memory, are rebuilt from the `R` blocks when the
//!   database is opened;
//! - the records of the batch being written or flushed, plus those still queued, are
//!   lost: at most one flush interval's worth (the end-to-end kill -9 test finds
//!   exactly the records the writer had reported flushed);
//! - postings may name a block a crash took: it is skipped, so every query shows the
//!   same records (those of the surviving `R` blocks).
//!
//! Nothing is ever partially written inside a tree's batch: a block is whole or
//! absent. A database of the reference layout is migrated when it is opened
//! (the `migrate` module: resumable after a crash, losing no record).
//!
//! # Retention
//!
//! [`Store::purge_before`] removes old blocks in chunks of [`PURGE_CHUNK`] keys, each
//! chunk one short batch, so the writer task and queries interleave with it and the
//! proxy keeps serving. A block is removed when its latest record is older than the
//! cutoff; a block that straddles the cutoff stays until the next purge (records at
//! most one block span, a minute, past the limit). The index's keys of hours whose
//! blocks are all gone are removed the same way, so a purge interrupted by a crash is
//! completed by the next.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Write;
use std::ops::Range;

use tracing::error;

use crate::postings::{Kind, Placed};
use crate::record_batch::{RecordBatch, Stored};
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

/// The encoding [`Store::write_records`] writes for blocks of records (`R`, `B`,
/// `S`): the header, the length of the item section, then the item section
/// compressed with zstd.
pub const BLOCK_FORMAT: u8 = 2;

/// The uncompressed encoding: the header, then the items. Every block of earlier
/// versions; still written for a block that compression would not make smaller.
pub const PLAIN_BLOCK_FORMAT: u8 = 1;

/// The encoding of reference blocks (`U` and `H`): the header, then references of
/// [`REFERENCE_LEN`] bytes each, without lengths.
pub const REFERENCE_FORMAT: u8 = 3;

/// Length of one reference: an `R` block key and a position in it (u16 LE).
pub const REFERENCE_LEN: usize = TIME_KEY_LEN + 2;

/// The header every block encoding starts with: format, latest time, item count.
const BLOCK_HEADER_LEN: usize = 1 + 8 + 4;

/// The header of a compressed block: the common header and the item section's
/// length before compression (u32 LE).
const PACKED_HEADER_LEN: usize = BLOCK_HEADER_LEN + 4;

/// zstd level of record blocks: the fastest; level 3 made these blocks no smaller
/// (measured on the benchmark's records, blocks of 1 to 256 records).
const COMPRESSION_LEVEL: i32 = 1;

/// Largest item section a compressed block may declare; anything larger is damage.
/// Blocks are closed at [`BLOCK_BYTES`]; one record alone may exceed that, and a
/// larger item section is stored uncompressed.
const MAX_PACKED_ITEMS: usize = 16 * 1024 * 1024;

/// Keys removed per batch by [`Store::purge_before`].
pub const PURGE_CHUNK: usize = 1024;

/// Key prefix of the blocks of every record.
const RECORDS: u8 = b'R';
/// Key prefix of the blocked copies.
const BLOCKED: u8 = b'B';
/// Key prefix of the search-terms copies.
const SEARCHES: u8 = b'S';

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

pub(crate) fn key_time(key: &[u8]) -> u64 {
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
    /// Only records from this client address (a computer).
    pub client: Option<std::net::IpAddr>,
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
            && self.client.is_none_or(|client| record.client == client)
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
    /// References have a fixed length: no length before each item.
    fixed: bool,
}

impl BlockBuilder {
    /// A block of `format`: [`PLAIN_BLOCK_FORMAT`] (records, compressed when
    /// finished) or [`REFERENCE_FORMAT`].
    fn new(first_at: u64, format: u8) -> Self {
        let mut bytes = Vec::with_capacity(4096);
        bytes.push(format);
        bytes.extend_from_slice(&[0; 8 + 4]);
        Self {
            bytes,
            count: 0,
            min: first_at,
            max: first_at,
            fixed: format == REFERENCE_FORMAT,
        }
    }

    fn has_room_for(&self, at: u64, len: usize) -> bool {
        (self.count as usize) < BLOCK_RECORDS
            && at.saturating_sub(self.min) <= BLOCK_SPAN_MICROS
            && (self.count == 0 || self.bytes.len() + 4 + len <= BLOCK_BYTES)
    }

    fn push(&mut self, at: u64, item: &[u8]) {
        if !self.fixed {
            let len = u32::try_from(item.len()).unwrap_or(u32::MAX);
            self.bytes.extend_from_slice(&len.to_le_bytes());
        }
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

/// Compresses the record blocks of one batch (one zstd context for all of them).
struct Packer {
    compressor: zstd::bulk::Compressor<'static>,
}

impl Packer {
    fn new() -> Result<Self, StoreError> {
        let mut compressor =
            zstd::bulk::Compressor::new(COMPRESSION_LEVEL).map_err(StoreError::Compression)?;
        // The block header has the length; a checksum would repeat sled's own.
        compressor
            .include_contentsize(false)
            .and_then(|()| compressor.include_checksum(false))
            .and_then(|()| compressor.include_dictid(false))
            .map_err(StoreError::Compression)?;
        Ok(Self { compressor })
    }

    /// A finished [`PLAIN_BLOCK_FORMAT`] block as a [`BLOCK_FORMAT`] block, or as it
    /// is when compression would not make it smaller.
    fn pack(&mut self, plain: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        let Some(items) = plain.get(BLOCK_HEADER_LEN..) else {
            return Ok(plain);
        };
        let Some(len) = u32::try_from(items.len())
            .ok()
            .filter(|&len| len as usize <= MAX_PACKED_ITEMS)
        else {
            return Ok(plain);
        };
        let compressed = self
            .compressor
            .compress(items)
            .map_err(StoreError::Compression)?;
        if PACKED_HEADER_LEN + compressed.len() >= plain.len() {
            return Ok(plain);
        }
        let mut packed = Vec::with_capacity(PACKED_HEADER_LEN + compressed.len());
        packed.push(BLOCK_FORMAT);
        packed.extend_from_slice(&plain[1..BLOCK_HEADER_LEN]);
        packed.extend_from_slice(&len.to_le_bytes());
        packed.extend_from_slice(&compressed);
        Ok(packed)
    }
}

/// Hands out unique sequence numbers for the blocks of one batch.
struct Sequencer<'a> {
    db: &'a sled::Db,
    base: u64,
    next: u64,
}

impl<'a> Sequencer<'a> {
    /// Numbers from `base` on (an id from sled shifted by [`SEQ_SHIFT`]).
    fn from(db: &'a sled::Db, base: u64) -> Self {
        Self { db, base, next: 0 }
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

/// Cuts items (index, time, bytes) given in time order into blocks of `format`.
/// Calls `placed(block_key, position, index)` for each item and
/// `closed(block_key, bytes)` for each finished block.
fn build_blocks<'i>(
    items: impl IntoIterator<Item = (usize, u64, &'i [u8])>,
    format: u8,
    seq: &mut Sequencer<'_>,
    mut placed: impl FnMut(&[u8; TIME_KEY_LEN], u16, usize),
    mut closed: impl FnMut(&[u8; TIME_KEY_LEN], Vec<u8>) -> Result<(), StoreError>,
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
        closed(&key, bytes)
    };
    for (index, at, bytes) in items {
        if let Some(block) = current.take_if(|block| !block.has_room_for(at, bytes.len())) {
            close(block, &mut members)?;
        }
        current
            .get_or_insert_with(|| BlockBuilder::new(at, format))
            .push(at, bytes);
        members.push(index);
    }
    if let Some(block) = current {
        close(block, &mut members)?;
    }
    Ok(())
}

/// Calls `each` with the place, user and host of every record of the `R` blocks keyed
/// from `from` to before `until` (Unix microseconds), in key order, until it returns
/// false. Undecodable blocks and records are logged and skipped.
pub(crate) fn for_each_placed(
    records: &sled::Tree,
    from: u64,
    until: u64,
    mut each: impl FnMut(&Placed<'_>) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    let low = with_key(&[RECORDS], &time_key(from, 0));
    let high = with_key(&[RECORDS], &time_key(until, 0));
    let mut unpacker = Unpacker::default();
    for entry in records.range(low..high) {
        let (key, value) = entry?;
        let Some(block) = key
            .get(1..)
            .and_then(|k| <[u8; TIME_KEY_LEN]>::try_from(k).ok())
        else {
            continue;
        };
        let body = match unpacker.items(&value) {
            Ok(body) if body.fixed.is_none() => body,
            Ok(_) => continue,
            Err(err) => {
                error!(%err, "not indexing an undecodable visit-log block");
                continue;
            }
        };
        for (position, item) in body.items().enumerate() {
            let Ok(item) = item else {
                break;
            };
            let Ok(record) = crate::RecordRef::decode(item) else {
                continue;
            };
            let placed = Placed {
                block,
                position: u16::try_from(position).unwrap_or(u16::MAX),
                user: record.user,
                host: record.host,
            };
            if !each(&placed)? {
                return Ok(());
            }
        }
    }
    Ok(())
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

/// Reads stored blocks of any format, keeping one zstd context for a whole scan.
#[derive(Default)]
pub(crate) struct Unpacker {
    decompressor: Option<zstd::bulk::Decompressor<'static>>,
}

impl Unpacker {
    /// The item section of a stored block: borrowed, or decompressed.
    fn items<'v>(&mut self, value: &'v [u8]) -> Result<BlockBody<'v>, StoreError> {
        let Some(&format) = value.first() else {
            return Err(StoreError::UnknownBlockFormat(None));
        };
        let body = value
            .get(BLOCK_HEADER_LEN..)
            .ok_or(StoreError::DamagedBlock);
        match format {
            PLAIN_BLOCK_FORMAT => Ok(BlockBody {
                bytes: Cow::Borrowed(body?),
                fixed: None,
            }),
            REFERENCE_FORMAT => Ok(BlockBody {
                bytes: Cow::Borrowed(body?),
                fixed: Some(REFERENCE_LEN),
            }),
            BLOCK_FORMAT => {
                let (len, frame) = body?
                    .split_first_chunk::<4>()
                    .ok_or(StoreError::DamagedBlock)?;
                let len = u32::from_le_bytes(*len) as usize;
                if len > MAX_PACKED_ITEMS {
                    return Err(StoreError::DamagedBlock);
                }
                let decompressor = match &mut self.decompressor {
                    Some(decompressor) => decompressor,
                    empty => empty
                        .insert(zstd::bulk::Decompressor::new().map_err(StoreError::Compression)?),
                };
                let items = decompressor
                    .decompress(frame, len)
                    .map_err(|_| StoreError::DamagedBlock)?;
                if items.len() != len {
                    return Err(StoreError::DamagedBlock);
                }
                Ok(BlockBody {
                    bytes: Cow::Owned(items),
                    fixed: None,
                })
            }
            other => Err(StoreError::UnknownBlockFormat(Some(other))),
        }
    }
}

/// The item section of a block, ready to iterate.
struct BlockBody<'v> {
    bytes: Cow<'v, [u8]>,
    /// The length of every item (references); `None`: each item has a u32 LE length.
    fixed: Option<usize>,
}

impl BlockBody<'_> {
    /// The items in order; an error (and the end) where the block is damaged.
    fn items(&self) -> impl Iterator<Item = Result<&[u8], StoreError>> {
        self.ranges()
            .map(|range| range.and_then(|r| self.bytes.get(r).ok_or(StoreError::DamagedBlock)))
    }

    /// Where the items are in `bytes`.
    fn ranges(&self) -> ItemRanges<'_> {
        ItemRanges {
            bytes: &self.bytes,
            at: 0,
            fixed: self.fixed,
        }
    }
}

/// Iterates over the places of the items of a block.
struct ItemRanges<'a> {
    bytes: &'a [u8],
    at: usize,
    fixed: Option<usize>,
}

impl Iterator for ItemRanges<'_> {
    type Item = Result<Range<usize>, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.bytes.get(self.at..).filter(|rest| !rest.is_empty())?;
        let item = match self.fixed {
            Some(len) => (rest.len() >= len).then(|| self.at..self.at + len),
            None => rest.first_chunk::<4>().and_then(|len| {
                let len = u32::from_le_bytes(*len) as usize;
                let start = self.at + 4;
                (rest.len() - 4 >= len).then(|| start..start + len)
            }),
        };
        match item {
            Some(range) => {
                self.at = range.end;
                Some(Ok(range))
            }
            None => {
                self.at = self.bytes.len();
                Some(Err(StoreError::DamagedBlock))
            }
        }
    }
}

/// The `R` block that references point into, read once for consecutive references
/// to it.
struct Resolved {
    bytes: Vec<u8>,
    /// Where each item is in `bytes`; empty when the block is missing or damaged.
    items: Vec<Range<usize>>,
}

impl Resolved {
    /// Reads block `key`, decompressed whole: zstd decodes up to 128 KiB at once, so
    /// stopping at the last record wanted saves nothing on blocks this size (a
    /// streaming version made a user's week several times slower in the benchmark).
    fn read(
        tree: &sled::Tree,
        key: &[u8; TIME_KEY_LEN],
        unpacker: &mut Unpacker,
    ) -> Result<Self, StoreError> {
        let mut resolved = Self {
            bytes: Vec::new(),
            items: Vec::new(),
        };
        // A missing block is a reference that outlived a crash: no items.
        let Some(value) = tree.get(with_key(&[RECORDS], key))? else {
            return Ok(resolved);
        };
        let body = match unpacker.items(&value) {
            Ok(body) if body.fixed.is_none() => body,
            Ok(_) => {
                error!("skipping references to a visit-log block of references");
                return Ok(resolved);
            }
            Err(err) => {
                error!(%err, "skipping references to an undecodable visit-log block");
                return Ok(resolved);
            }
        };
        for range in body.ranges() {
            match range {
                Ok(range) => resolved.items.push(range),
                Err(err) => {
                    error!(%err, "skipping the rest of a damaged visit-log block");
                    break;
                }
            }
        }
        resolved.bytes = body.bytes.into_owned();
        Ok(resolved)
    }

    fn item(&self, position: usize) -> Option<&[u8]> {
        self.items
            .get(position)
            .and_then(|range| self.bytes.get(range.clone()))
    }
}

/// A record in the reorder buffer (ordered by the heap key only); boxed, so the
/// heap moves a pointer, not the record, as it reorders.
struct Pending(Box<Record>);

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
            let record = *record;
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
                    Pending(Box::new(record)),
                )));
            }
            Ok(_) => {}
            Err(err) => error!(%err, "skipping an undecodable visit-log record"),
        }
    }

    /// Offers every record of a block of records (a stored block of any format).
    fn offer_block(&mut self, value: &[u8], unpacker: &mut Unpacker) {
        match unpacker.items(value) {
            Ok(body) if body.fixed.is_none() => {
                for item in body.items() {
                    match item {
                        Ok(encoded) => self.offer(encoded),
                        Err(err) => {
                            error!(%err, "skipping the rest of a damaged visit-log block");
                            break;
                        }
                    }
                }
            }
            Ok(_) => error!("skipping a block of references where records were expected"),
            Err(err) => error!(%err, "skipping an undecodable visit-log block"),
        }
    }

    /// Offers the records at `places` (block key, position; sorted), reading each `R`
    /// block once and in key order, so records are released in time order; false when
    /// the scan should stop.
    fn offer_places(
        &mut self,
        records: &sled::Tree,
        places: &[([u8; TIME_KEY_LEN], u16)],
    ) -> Result<bool, StoreError> {
        let mut unpacker = Unpacker::default();
        for group in places.chunk_by(|a, b| a.0 == b.0) {
            let block = &group[0].0;
            if !self.advance_to(key_time(block)) {
                return Ok(false);
            }
            let resolved = Resolved::read(records, block, &mut unpacker)?;
            for (_, position) in group {
                if let Some(encoded) = resolved.item(usize::from(*position)) {
                    self.offer(encoded);
                }
            }
        }
        Ok(true)
    }

    fn finish(mut self) -> usize {
        self.advance_to(u64::MAX);
        self.emitted
    }
}

impl Store {
    /// Writes a batch of records (tools and tests; the writer task uses
    /// [`Store::write_batch`]): one atomic sled batch for the references, then one for
    /// the blocks. Not flushed.
    pub fn write_records(&self, records: &[Record]) -> Result<(), StoreError> {
        self.write_batch(&RecordBatch::from_records(records))
    }

    /// Writes records as the writer task took them from its queue, storing their
    /// encoded bytes as they are (as [`Store::write_records`] does; not flushed).
    /// The records are what must be kept exactly once: when they are stored and only
    /// the dashboard's hourly totals cannot be updated (a full disk), the batch counts
    /// as written, so the writer does not store its records a second time; the totals
    /// miss it (logged).
    pub fn write_batch(&self, batch: &RecordBatch) -> Result<(), StoreError> {
        let items: Vec<Stored<'_>> = batch.stored().collect();
        // The outbox first: its keys are the batch's own, so a retry after the visit
        // log's write failed puts nothing in it twice.
        if self.outbox_enabled() {
            self.outbox_add_batch(batch)?;
        }
        let trees = self.trees()?;
        let base = batch.block_sequence(|| Ok(trees.db.generate_id()? << SEQ_SHIFT))?;
        self.write_stored(&items, base)?;
        if let Err(error) = self.add_to_totals(batch) {
            tracing::warn!(%error, records = items.len(), "visit records stored, but the dashboard's hourly totals could not be updated: they leave this batch out");
        }
        Ok(())
    }

    /// Writes the records with block sequence numbers from `base` on (the same on a
    /// retry of the same batch: the same keys, so nothing is stored twice).
    fn write_stored(&self, records: &[Stored<'_>], base: u64) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let item = |i: usize| (i, records[i].at, records[i].bytes);
        let mut by_time: Vec<usize> = (0..records.len()).collect();
        by_time.sort_by_key(|&i| records[i].at);
        let trees = self.trees()?;
        let mut seq = Sequencer::from(&trees.db, base);
        let mut packer = Packer::new()?;
        let mut data = sled::Batch::default();

        let mut placed: Vec<(usize, [u8; TIME_KEY_LEN], u16)> = Vec::with_capacity(records.len());
        build_blocks(
            by_time.iter().map(|&i| item(i)),
            PLAIN_BLOCK_FORMAT,
            &mut seq,
            |key, position, i| placed.push((i, *key, position)),
            |key, bytes| {
                data.insert(with_key(&[RECORDS], key), packer.pack(bytes)?);
                Ok(())
            },
        )?;
        for (kind, copy) in [
            (
                BLOCKED,
                (|r: &Stored<'_>| r.blocked) as fn(&Stored<'_>) -> bool,
            ),
            (SEARCHES, |r: &Stored<'_>| r.searched),
        ] {
            build_blocks(
                by_time
                    .iter()
                    .filter(|&&i| copy(&records[i]))
                    .map(|&i| item(i)),
                PLAIN_BLOCK_FORMAT,
                &mut seq,
                |_, _, _| {},
                |key, bytes| {
                    data.insert(with_key(&[kind], key), packer.pack(bytes)?);
                    Ok(())
                },
            )?;
        }
        // The index first: a crash between the two leaves places of missing blocks
        // (skipped), never blocks the index does not know.
        trees.postings.add(
            &trees.db,
            placed.iter().map(|&(i, block, position)| Placed {
                block,
                position,
                user: records[i].user,
                host: records[i].host,
            }),
        )?;
        trees.visit_log.apply_batch(data)?;
        Ok(())
    }

    /// Number of records in the visit log (reads every block header: O(blocks)).
    pub fn record_count(&self) -> usize {
        let Ok(trees) = self.trees() else {
            return 0;
        };
        trees
            .visit_log
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
    /// over. Reads the records the user's references point at when a user is given,
    /// else those the host's references point at, else the blocked or search-terms
    /// copies, else every block in the time range, and checks every condition on the
    /// decoded record. A record or block that cannot be decoded is logged and skipped,
    /// so one damaged value does not hide the rest.
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
        let trees = self.trees()?;
        let named = match (&query.user, &query.host) {
            (Some(user), _) => Some((Kind::User, user)),
            (None, Some(host)) => Some((Kind::Host, host)),
            (None, None) => None,
        };
        if let Some((kind, name)) = named {
            let since = query.since.unwrap_or(0).saturating_sub(BLOCK_SPAN_MICROS);
            let until = query.until.unwrap_or(u64::MAX);
            let places = trees.postings.places(kind, name, since, until)?;
            if !merge.offer_places(&trees.visit_log, &places)? {
                return Ok(merge.emitted);
            }
            return Ok(merge.finish());
        }
        let prefix = if query.blocked_only {
            part(BLOCKED, None)
        } else if query.search_terms_only {
            part(SEARCHES, None)
        } else {
            part(RECORDS, None)
        };
        let (low, high) = query.key_range(&prefix);
        let mut unpacker = Unpacker::default();
        for entry in trees.visit_log.range(low..high) {
            let (key, value) = entry?;
            if !merge.advance_to(key_time(&key[prefix.len()..])) {
                return Ok(merge.emitted);
            }
            merge.offer_block(&value, &mut unpacker);
        }
        Ok(merge.finish())
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
        let removed = purge_blocks(&self.trees()?.visit_log, &[RECORDS], cutoff_micros)?;
        purge_blocks(&self.trees()?.visit_log, &[BLOCKED], cutoff_micros)?;
        purge_blocks(&self.trees()?.visit_log, &[SEARCHES], cutoff_micros)?;
        self.trees()?
            .postings
            .purge_before(cutoff_micros, BLOCK_SPAN_MICROS)?;
        self.purge_totals_before(cutoff_micros)?;
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

/// A record as exported: its fields, then what content analysis found on the page
/// (`content_score`: null, `content_categories`: empty, when it did not score).
#[derive(serde::Serialize)]
struct Exported<'a> {
    #[serde(flatten)]
    record: &'a Record,
    content_score: Option<i64>,
    content_categories: Vec<ExportedCategory<'a>>,
}

/// One category content analysis scored a page for.
#[derive(serde::Serialize)]
struct ExportedCategory<'a> {
    name: &'a str,
    score: i64,
}

/// Writes records as one JSON array (pretty-printed, one object per record, with
/// `content_score` and `content_categories`).
pub fn write_records_json(records: &[Record], out: impl Write) -> Result<(), StoreError> {
    let mut out = std::io::BufWriter::new(out);
    let exported: Vec<Exported<'_>> = records
        .iter()
        .map(|record| Exported {
            record,
            content_score: record.content.as_ref().map(|c| c.score),
            content_categories: record
                .content
                .iter()
                .flat_map(|c| &c.categories)
                .map(|(name, score)| ExportedCategory {
                    name,
                    score: *score,
                })
                .collect(),
        })
        .collect();
    serde_json::to_writer_pretty(&mut out, &exported)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// A record's content categories for CSV: `gambling 150;violence 40` (empty when
/// content analysis did not score the page).
fn content_categories_text(record: &Record) -> String {
    record
        .content
        .iter()
        .flat_map(|c| &c.categories)
        .map(|(name, score)| format!("{name} {score}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// The CSV header written by [`write_records_csv`].
pub const CSV_HEADER: [&str; 26] = [
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
    "computer",
    "content_score",
    "content_categories",
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
        let row: [String; 26] = [
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
            opt(&r.computer),
            r.content
                .as_ref()
                .map(|c| c.score.to_string())
                .unwrap_or_default(),
            content_categories_text(r),
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

#[cfg(test)]
mod block_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::record::tests::sample;

    /// A finished plain block of `n` sample records, one user.
    fn plain_block(n: u64) -> Vec<u8> {
        let mut block = BlockBuilder::new(1_000, PLAIN_BLOCK_FORMAT);
        for i in 0..n {
            block.push(
                1_000 + i,
                &sample(1_000 + i, "alice", "www.bbc.co.uk").encode(),
            );
        }
        block.finish().1
    }

    fn decoded(unpacker: &mut Unpacker, value: &[u8]) -> Result<Vec<Record>, StoreError> {
        let body = unpacker.items(value)?;
        body.items().map(|item| Record::decode(item?)).collect()
    }

    #[test]
    fn packed_blocks_round_trip_and_keep_their_header() {
        let plain = plain_block(20);
        let packed = Packer::new().unwrap().pack(plain.clone()).unwrap();
        assert_eq!(packed[0], BLOCK_FORMAT);
        assert!(
            packed.len() * 4 < plain.len(),
            "{} of {}",
            packed.len(),
            plain.len()
        );
        assert_eq!(block_max(&packed), 1_019);
        assert_eq!(block_count(&packed), 20);
        let mut unpacker = Unpacker::default();
        let records = decoded(&mut unpacker, &packed).unwrap();
        assert_eq!(records, decoded(&mut unpacker, &plain).unwrap());
        assert_eq!(records.len(), 20);
    }

    #[test]
    fn a_block_that_would_not_shrink_stays_plain() {
        let mut block = BlockBuilder::new(5, PLAIN_BLOCK_FORMAT);
        block.push(5, &[7]);
        let plain = block.finish().1;
        assert_eq!(Packer::new().unwrap().pack(plain.clone()).unwrap(), plain);
    }

    #[test]
    fn damaged_and_unknown_blocks_are_errors_not_panics() {
        let packed = Packer::new().unwrap().pack(plain_block(20)).unwrap();
        let mut unpacker = Unpacker::default();
        // Every truncation, and every single-byte change of the compressed part.
        for len in 0..packed.len() {
            let _ = decoded(&mut unpacker, &packed[..len]);
        }
        for at in PACKED_HEADER_LEN..packed.len() {
            let mut damaged = packed.clone();
            damaged[at] ^= 0x5a;
            let _ = decoded(&mut unpacker, &damaged);
        }
        let mut garbled = packed.clone();
        for byte in &mut garbled[PACKED_HEADER_LEN + 4..] {
            *byte = 0xa5;
        }
        assert!(matches!(
            decoded(&mut unpacker, &garbled),
            Err(StoreError::DamagedBlock)
        ));
        // A declared length that does not match what the frame holds.
        let mut wrong_len = packed.clone();
        wrong_len[BLOCK_HEADER_LEN..PACKED_HEADER_LEN].copy_from_slice(&7u32.to_le_bytes());
        assert!(matches!(
            decoded(&mut unpacker, &wrong_len),
            Err(StoreError::DamagedBlock)
        ));
        // A declared length beyond any block is refused before decompressing.
        let mut huge = packed.clone();
        huge[BLOCK_HEADER_LEN..PACKED_HEADER_LEN].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decoded(&mut unpacker, &huge),
            Err(StoreError::DamagedBlock)
        ));
        let mut unknown = packed.clone();
        unknown[0] = 9;
        assert!(matches!(
            decoded(&mut unpacker, &unknown),
            Err(StoreError::UnknownBlockFormat(Some(9)))
        ));
        assert!(matches!(
            decoded(&mut unpacker, &[]),
            Err(StoreError::UnknownBlockFormat(None))
        ));
        // A reference block whose length is not a multiple of a reference.
        let mut refs = BlockBuilder::new(1, REFERENCE_FORMAT);
        refs.push(1, &[0; REFERENCE_LEN]);
        let mut refs = refs.finish().1;
        refs.pop();
        let body = unpacker.items(&refs).unwrap();
        assert!(matches!(
            body.items().next(),
            Some(Err(StoreError::DamagedBlock))
        ));
    }
}
