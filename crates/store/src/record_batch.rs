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
    /// The export outbox's number for this batch, drawn on its first write (see
    /// [`crate::export_outbox`]).
    export_number: std::sync::OnceLock<u64>,
    /// The sequence number of the batch's first visit-log block, drawn on its first
    /// write: a retry writes the same keys again, so a write that reached the disk
    /// although its flush failed is not stored twice.
    block_sequence: std::sync::OnceLock<u64>,
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

    /// Frees every spare buffer (when the writer is idle).
    pub(crate) fn clear(&self) {
        *self.lock() = Vec::new();
    }

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

/// Where one record is, and what its frame's header says of it.
#[derive(Debug, Clone, Copy)]
struct Entry {
    buffer: usize,
    start: usize,
    header: FrameHeader,
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
            let mut start = 0;
            while let Some(header) = bytes.get(start..).and_then(FrameHeader::read) {
                let record_start = start + FRAME_HEADER;
                let end = record_start + header.len as usize;
                if end > bytes.len() {
                    break;
                }
                entries.push(Entry {
                    buffer,
                    start: record_start,
                    header,
                });
                start = end;
            }
        }
        // Shards interleave: readers see records in time order, as they would have
        // arrived through one queue.
        entries.sort_by_key(|entry| entry.header.at);
        RecordBatch {
            buffers,
            entries,
            pool: None,
            export_number: std::sync::OnceLock::new(),
            block_sequence: std::sync::OnceLock::new(),
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

    /// The export outbox's number for this batch, once drawn.
    pub(crate) fn export_number(&self) -> Option<u64> {
        self.export_number.get().copied()
    }

    /// Keeps `number` as the batch's outbox number (unless one is kept already) and
    /// returns the one kept.
    pub(crate) fn set_export_number(&self, number: u64) -> u64 {
        *self.export_number.get_or_init(|| number)
    }

    /// The sequence number of the batch's first block: the one drawn by `draw` on
    /// the first write, the same on every retry.
    pub(crate) fn block_sequence(
        &self,
        draw: impl FnOnce() -> Result<u64, crate::StoreError>,
    ) -> Result<u64, crate::StoreError> {
        if let Some(&drawn) = self.block_sequence.get() {
            return Ok(drawn);
        }
        let drawn = draw()?;
        Ok(*self.block_sequence.get_or_init(|| drawn))
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
        // A record that does not decode is left out; it cannot happen, frames being
        // made by `push_frame` from a record it has just encoded.
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
            let text = |(start, len): (u32, u32)| {
                bytes
                    .get(start as usize..(start as usize).saturating_add(len as usize))
                    .and_then(|text| std::str::from_utf8(text).ok())
                    .unwrap_or_default()
            };
            let header = &entry.header;
            Stored {
                at: header.at,
                bytes,
                user: header.user.map(text),
                host: text(header.host),
                blocked: header.flags & BLOCKED != 0,
                searched: header.flags & SEARCHED != 0,
            }
        })
    }

    fn bytes(&self, entry: &Entry) -> &[u8] {
        self.buffers
            .get(entry.buffer)
            .and_then(|buffer| buffer.get(entry.start..entry.start + entry.header.len as usize))
            .unwrap_or_default()
    }
}

/// Bytes of a frame's header.
const FRAME_HEADER: usize = 4 + 8 + 1 + 4 * 4;
const BLOCKED: u8 = 1;
const SEARCHED: u8 = 2;
const HAS_USER: u8 = 4;

/// What a frame says of its record, ahead of it.
#[derive(Debug, Clone, Copy)]
struct FrameHeader {
    /// The record's length.
    len: u32,
    at: u64,
    flags: u8,
    /// The user name's place in the record: start and length.
    user: Option<(u32, u32)>,
    /// The host name's place in the record: start and length.
    host: (u32, u32),
}

impl FrameHeader {
    fn to_bytes(self) -> [u8; FRAME_HEADER] {
        let (user_start, user_len) = self.user.unwrap_or_default();
        let fields: [&[u8]; 7] = [
            &self.len.to_le_bytes(),
            &self.at.to_le_bytes(),
            &[self.flags],
            &user_start.to_le_bytes(),
            &user_len.to_le_bytes(),
            &self.host.0.to_le_bytes(),
            &self.host.1.to_le_bytes(),
        ];
        let mut bytes = [0; FRAME_HEADER];
        let mut at = 0;
        for field in fields {
            bytes[at..at + field.len()].copy_from_slice(field);
            at += field.len();
        }
        bytes
    }

    /// The header at the start of `bytes`, if they are long enough to hold one.
    fn read(mut bytes: &[u8]) -> Option<FrameHeader> {
        fn take<const N: usize>(rest: &mut &[u8]) -> Option<[u8; N]> {
            let (head, tail) = rest.split_first_chunk::<N>()?;
            *rest = tail;
            Some(*head)
        }
        let rest = &mut bytes;
        let len = u32::from_le_bytes(take(rest)?);
        let at = u64::from_le_bytes(take(rest)?);
        let [flags] = take(rest)?;
        let user = (
            u32::from_le_bytes(take(rest)?),
            u32::from_le_bytes(take(rest)?),
        );
        let host = (
            u32::from_le_bytes(take(rest)?),
            u32::from_le_bytes(take(rest)?),
        );
        Some(FrameHeader {
            len,
            at,
            flags,
            user: (flags & HAS_USER != 0).then_some(user),
            host,
        })
    }
}

/// Appends `record` to `out` as one frame; false (nothing appended, what `out` held
/// untouched) when it cannot be encoded or framed (over 4 GiB).
pub(crate) fn push_frame(out: &mut Vec<u8>, record: &RecordRef<'_>) -> bool {
    let frame_start = out.len();
    let record_start = frame_start + FRAME_HEADER;
    out.resize(record_start, 0);
    let header = record.encode_marked(out).ok().and_then(|marks| {
        let place = |(start, end): (usize, usize)| {
            Some((
                u32::try_from(start - record_start).ok()?,
                u32::try_from(end - start).ok()?,
            ))
        };
        let user = match marks.user {
            Some(user) => Some(place(user)?),
            None => None,
        };
        let flags = if record.outcome == Outcome::Blocked {
            BLOCKED
        } else {
            0
        } | if record.search.is_some() { SEARCHED } else { 0 }
            | if user.is_some() { HAS_USER } else { 0 };
        Some(FrameHeader {
            len: u32::try_from(out.len() - record_start).ok()?,
            at: record.at_unix_micros,
            flags,
            user,
            host: place(marks.host)?,
        })
    });
    match header {
        Some(header) => {
            out[frame_start..record_start].copy_from_slice(&header.to_bytes());
            true
        }
        None => {
            out.truncate(frame_start);
            false
        }
    }
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
