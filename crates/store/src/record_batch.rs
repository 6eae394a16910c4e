//! Records taken from the visit-log queue together, still in their stored encoding.
//! The writer stores the bytes as they are and the alert engine reads each record in
//! place ([`RecordRef`]): nothing is decoded into owned strings or encoded twice on the
//! way from the proxy to the disk.
//!
//! A frame is one queued record: a header the writer reads instead of decoding the
//! record (`u32` LE length of the rest, `u64` LE time, a flags byte, then the user's
//! and the host's place in the record as `u32` LE start and length pairs), then the
//! record as [`Record::encode`] makes it. Frames live only in memory, between the
//! proxy's threads and the writer; the header is never stored.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::{Outcome, Record, RecordRef};

/// Encoded records, oldest first.
#[derive(Debug, Default)]
pub struct RecordBatch {
    buffers: Vec<Vec<u8>>,
    entries: Vec<Entry>,
    /// Where the buffers go when the batch is dropped.
    pool: Option<Arc<BufferPool>>,
}

impl Drop for RecordBatch {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool {
            pool.give(std::mem::take(&mut self.buffers));
        }
    }
}

/// Emptied frame buffers, kept for the queue's shards to fill again: a buffer keeps the
/// capacity one flush interval's records needed, so refilling it costs no growing and
/// copying, and it is freed by none of the threads that use it.
#[derive(Debug, Default)]
pub(crate) struct BufferPool {
    spare: Mutex<Vec<Vec<u8>>>,
}

impl BufferPool {
    /// Buffers kept at most: two for each shard in use is plenty.
    const KEPT: usize = 16;
    /// A buffer larger than this (after a burst) is freed rather than kept.
    const LARGEST_KEPT: usize = 8 << 20;

    /// A spare buffer, or a new empty one.
    pub(crate) fn take(&self) -> Vec<u8> {
        self.lock().pop().unwrap_or_default()
    }

    /// Keeps `buffers` (emptied) for reuse, as far as there is room.
    pub(crate) fn give(&self, buffers: Vec<Vec<u8>>) {
        let mut spare = self.lock();
        for mut buffer in buffers {
            if spare.len() < Self::KEPT && buffer.capacity() <= Self::LARGEST_KEPT {
                buffer.clear();
                spare.push(buffer);
            }
        }
    }

    /// The spare buffers; a panic while they were held leaves a valid list.
    fn lock(&self) -> MutexGuard<'_, Vec<Vec<u8>>> {
        self.spare.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where one record is, and what the writer's indexes need of it.
#[derive(Debug, Clone, Copy)]
struct Entry {
    at: u64,
    buffer: usize,
    start: usize,
    len: usize,
    /// The user name's place within the record's bytes.
    user: Option<(usize, usize)>,
    /// The host name's place within the record's bytes.
    host: (usize, usize),
    blocked: bool,
    searched: bool,
}

/// One record as [`crate::Store::write_batch`] stores it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stored<'a> {
    pub(crate) at: u64,
    pub(crate) bytes: &'a [u8],
    pub(crate) user: Option<&'a str>,
    pub(crate) host: &'a str,
    pub(crate) blocked: bool,
    pub(crate) searched: bool,
}

impl RecordBatch {
    /// Gathers frames (as [`push_frame`] appends them; the queue's shard buffers),
    /// oldest first. A torn frame ends its buffer's records (it cannot happen: frames
    /// are appended whole under the shard's lock).
    pub(crate) fn from_frames(buffers: Vec<Vec<u8>>) -> RecordBatch {
        let mut entries = Vec::new();
        for (buffer, bytes) in buffers.iter().enumerate() {
            let mut rest = bytes.as_slice();
            let mut offset = 0;
            while let Some(header) = rest.first_chunk::<FRAME_HEADER>() {
                let Some(entry) = read_header(header, buffer, offset)
                    .filter(|entry| entry.start + entry.len <= bytes.len())
                else {
                    break;
                };
                offset = entry.start + entry.len;
                rest = &bytes[offset..];
                entries.push(entry);
            }
        }
        // Shards interleave: readers see records in time order, as they would have
        // arrived through one queue.
        entries.sort_by_key(|entry| entry.at);
        RecordBatch {
            buffers,
            entries,
            pool: None,
        }
    }

    /// Gives this batch's buffers to `pool` when it is dropped.
    pub(crate) fn returning_buffers_to(mut self, pool: Arc<BufferPool>) -> RecordBatch {
        self.pool = Some(pool);
        self
    }

    /// A batch of these records (for tools and tests), in time order.
    pub fn from_records(records: &[Record]) -> RecordBatch {
        let mut framed = Vec::new();
        for record in records {
            push_frame(&mut framed, &record.as_ref());
        }
        RecordBatch::from_frames(vec![framed])
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The records in place, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = RecordRef<'_>> + '_ {
        // Every entry decoded when the batch was made; the bytes have not changed.
        self.entries
            .iter()
            .filter_map(|entry| RecordRef::decode(self.bytes(entry)).ok())
    }

    /// The records as owned values, oldest first.
    pub fn to_records(&self) -> Vec<Record> {
        self.iter().map(|record| record.to_record()).collect()
    }

    pub(crate) fn stored(&self) -> impl Iterator<Item = Stored<'_>> + '_ {
        self.entries.iter().map(|entry| {
            let bytes = self.bytes(entry);
            let text = |(start, end): (usize, usize)| {
                bytes
                    .get(start..end)
                    .and_then(|text| std::str::from_utf8(text).ok())
                    .unwrap_or_default()
            };
            Stored {
                at: entry.at,
                bytes,
                user: entry.user.map(text),
                host: text(entry.host),
                blocked: entry.blocked,
                searched: entry.searched,
            }
        })
    }

    fn bytes(&self, entry: &Entry) -> &[u8] {
        self.buffers
            .get(entry.buffer)
            .and_then(|buffer| buffer.get(entry.start..entry.start + entry.len))
            .unwrap_or_default()
    }
}

/// Bytes of a frame's header.
const FRAME_HEADER: usize = 4 + 8 + 1 + 4 * 4;
const BLOCKED: u8 = 1;
const SEARCHED: u8 = 2;
const HAS_USER: u8 = 4;

/// Appends `record` to `out` as one frame; false (nothing appended) when it is too
/// large to frame (over 4 GiB).
pub(crate) fn push_frame(out: &mut Vec<u8>, record: &RecordRef<'_>) -> bool {
    let frame_start = out.len();
    out.resize(frame_start + FRAME_HEADER, 0);
    let (encoded, marks) = record.encode_marked(std::mem::take(out));
    *out = encoded;
    let record_start = frame_start + FRAME_HEADER;
    let relative = |(start, end): (usize, usize)| (start - record_start, end - start);
    let user = marks.user.map(relative);
    let host = relative(marks.host);
    let flags = if record.outcome == Outcome::Blocked {
        BLOCKED
    } else {
        0
    } | if record.search.is_some() { SEARCHED } else { 0 }
        | if user.is_some() { HAS_USER } else { 0 };
    let (user_start, user_len) = user.unwrap_or_default();
    let numbers = [
        out.len() - frame_start - 4,
        user_start,
        user_len,
        host.0,
        host.1,
    ];
    let mut header = [0u8; FRAME_HEADER];
    header[4..12].copy_from_slice(&record.at_unix_micros.to_le_bytes());
    header[12] = flags;
    for (index, number) in numbers.into_iter().enumerate() {
        let Ok(number) = u32::try_from(number) else {
            out.truncate(frame_start);
            return false;
        };
        let at = if index == 0 { 0 } else { 13 + 4 * (index - 1) };
        header[at..at + 4].copy_from_slice(&number.to_le_bytes());
    }
    out[frame_start..record_start].copy_from_slice(&header);
    true
}

/// The entry of the frame starting at `offset` in `buffer`.
fn read_header(header: &[u8; FRAME_HEADER], buffer: usize, offset: usize) -> Option<Entry> {
    let u32_at = |at: usize| {
        header
            .get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(|b| u32::from_le_bytes(b) as usize)
    };
    let at = u64::from_le_bytes(header.get(4..12)?.try_into().ok()?);
    let flags = header[12];
    let (user_start, user_len) = (u32_at(13)?, u32_at(17)?);
    let (host_start, host_len) = (u32_at(21)?, u32_at(25)?);
    Some(Entry {
        at,
        buffer,
        start: offset + FRAME_HEADER,
        len: u32_at(0)?.checked_sub(FRAME_HEADER - 4)?,
        user: (flags & HAS_USER != 0).then_some((user_start, user_start + user_len)),
        host: (host_start, host_start + host_len),
        blocked: flags & BLOCKED != 0,
        searched: flags & SEARCHED != 0,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::record::tests::sample;

    #[test]
    fn a_batch_orders_records_by_time_and_reads_its_index_fields_from_the_headers() {
        let mut late = sample(30, "bo", "b.example");
        late.outcome = Outcome::Blocked;
        late.search = None;
        let mut anonymous = sample(10, "x", "c.example");
        anonymous.user = None;
        let early = sample(20, "al", "a.example");
        let mut first = Vec::new();
        let mut second = Vec::new();
        assert!(push_frame(&mut first, &late.as_ref()));
        assert!(push_frame(&mut second, &anonymous.as_ref()));
        assert!(push_frame(&mut first, &early.as_ref()));
        // A torn frame (cannot happen: frames are appended whole) ends its buffer.
        let whole = first.len();
        assert!(push_frame(&mut first, &early.as_ref()));
        first.truncate(first.len() - 3);
        assert!(first.len() > whole);

        let batch = RecordBatch::from_frames(vec![first, second]);
        assert_eq!(batch.len(), 3);
        assert_eq!(batch.to_records(), [anonymous, early, late]);
        let stored: Vec<_> = batch
            .stored()
            .map(|s| (s.at, s.user, s.host, s.blocked, s.searched))
            .collect();
        assert_eq!(
            stored,
            [
                (10, None, "c.example", false, true),
                (20, Some("al"), "a.example", false, true),
                (30, Some("bo"), "b.example", true, false),
            ]
        );
        for stored in batch.stored() {
            assert_eq!(
                RecordRef::decode(stored.bytes).unwrap().host,
                stored.host,
                "the stored bytes are the record's own encoding"
            );
        }
        let again = RecordBatch::from_records(&batch.to_records());
        assert_eq!(again.to_records(), batch.to_records());
    }

    #[test]
    fn dropped_batches_give_their_buffers_back_emptied() {
        let pool = Arc::new(BufferPool::default());
        let mut buffer = Vec::with_capacity(4096);
        assert!(push_frame(
            &mut buffer,
            &sample(1, "al", "a.example").as_ref()
        ));
        let batch = RecordBatch::from_frames(vec![buffer]).returning_buffers_to(Arc::clone(&pool));
        assert_eq!(batch.len(), 1);
        drop(batch);
        let reused = pool.take();
        assert!(reused.is_empty());
        assert!(reused.capacity() >= 4096);
        assert_eq!(pool.take().capacity(), 0, "only one was given back");
    }
}
