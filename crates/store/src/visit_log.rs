//! The visit log: one [`Record`] per request, allowed or blocked, and the queries,
//! retention purge and subject-access export over it.
//!
//! # Layout
//!
//! A *time key* is 16 bytes: the request time in Unix microseconds (u64 BE) followed
//! by a sequence number (u64 BE) from sled's persistent id generator, so keys are
//! unique across restarts and byte order is time order.
//!
//! | tree       | key                                  | value             |
//! |------------|--------------------------------------|-------------------|
//! | `records`  | time key                             | `Record::encode`  |
//! | `by_user`  | user name bytes, `0x00`, time key    | empty             |
//! | `by_host`  | host name bytes, `0x00`, time key    | empty             |
//! | `blocked`  | time key (blocked records only)      | empty             |
//! | `searches` | time key (records with search terms) | empty             |
//!
//! Records without a user name have no `by_user` entry. Every index key ends with the
//! record's time key, so an index range scan yields record keys in time order and one
//! point lookup each in `records`. Every query re-checks every condition against the
//! decoded record, so the index only narrows the scan and is never trusted for
//! correctness (a user name containing `0x00` cannot confuse it).
//!
//! # Writing and crash semantics
//!
//! [`Store::write_records`] writes one batch as one atomic sled `Batch` per tree, the
//! index trees first and `records` last. sled recovers after a crash to a prefix of the
//! operations it had accepted, and nothing is durable until the next flush (the writer
//! task flushes every flush interval), so after `kill -9` or a power cut:
//!
//! - records accepted since the last completed flush can be lost (at most one flush
//!   interval's worth, plus whatever was still in the queue);
//! - a batch can be partially applied *across* trees, never within one tree: some
//!   index entries may exist whose record was not written. Queries skip an index
//!   entry whose record is missing, and [`Store::purge_before`] removes such dangling
//!   entries by their time like any other; because `records` is written last, a record
//!   that survived always has its index entries.
//!
//! Nothing is ever partially written inside a record: a value is either the whole
//! encoded record or absent.
//!
//! # Retention
//!
//! [`Store::purge_before`] removes old entries tree by tree in chunks of
//! [`PURGE_CHUNK`] keys, each chunk one short batch, so the writer task and queries
//! interleave with it and the proxy keeps serving. Each tree is purged by its own time
//! keys (the user and host trees with one seek per distinct user or host), so a purge
//! interrupted by a crash is completed by the next one.

use std::io::Write;
use std::ops::Bound;

use tracing::error;

use crate::{Record, Store, StoreError, record::Outcome};

/// Length of a time key: microseconds (u64 BE) and a sequence number (u64 BE).
pub const TIME_KEY_LEN: usize = 16;

/// Keys removed per batch by [`Store::purge_before`].
pub const PURGE_CHUNK: usize = 4096;

/// The time key of a record written at `at_unix_micros` with sequence number `seq`.
pub fn time_key(at_unix_micros: u64, seq: u64) -> [u8; TIME_KEY_LEN] {
    let mut key = [0u8; TIME_KEY_LEN];
    key[..8].copy_from_slice(&at_unix_micros.to_be_bytes());
    key[8..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn prefixed(name: &str, time_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 1 + time_key.len());
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    key.extend_from_slice(time_key);
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

    fn time_bounds(&self) -> (Bound<[u8; TIME_KEY_LEN]>, Bound<[u8; TIME_KEY_LEN]>) {
        let low = Bound::Included(time_key(self.since.unwrap_or(0), 0));
        let high = match self.until {
            Some(until) => Bound::Excluded(time_key(until, 0)),
            None => Bound::Unbounded,
        };
        (low, high)
    }
}

impl Store {
    /// Writes a batch of records and their index entries (the writer task calls this;
    /// tools and tests may too). One atomic batch per tree, indexes first, `records`
    /// last; not flushed.
    pub fn write_records(&self, records: &[Record]) -> Result<(), StoreError> {
        let mut main = sled::Batch::default();
        let mut by_user = sled::Batch::default();
        let mut by_host = sled::Batch::default();
        let mut blocked = sled::Batch::default();
        let mut searches = sled::Batch::default();
        let (mut any_blocked, mut any_search) = (false, false);
        for record in records {
            let key = time_key(record.at_unix_micros, self.db.generate_id()?);
            if let Some(user) = &record.user {
                by_user.insert(prefixed(user, &key), &[]);
            }
            by_host.insert(prefixed(&record.host, &key), &[]);
            if record.outcome == Outcome::Blocked {
                blocked.insert(&key, &[]);
                any_blocked = true;
            }
            if record.search.is_some() {
                searches.insert(&key, &[]);
                any_search = true;
            }
            main.insert(&key, record.encode());
        }
        if records.is_empty() {
            return Ok(());
        }
        self.by_user.apply_batch(by_user)?;
        self.by_host.apply_batch(by_host)?;
        if any_blocked {
            self.blocked.apply_batch(blocked)?;
        }
        if any_search {
            self.searches.apply_batch(searches)?;
        }
        self.records.apply_batch(main)?;
        Ok(())
    }

    /// Number of records in the visit log (counts every key: O(records)).
    pub fn record_count(&self) -> usize {
        self.records.len()
    }

    /// Records matching `query`, oldest first. Uses the most selective index (user,
    /// then host, then blocked, then search terms, else a time-range scan of `records`)
    /// and checks every other condition on the decoded record. A record that cannot be
    /// decoded is logged and skipped, so one damaged value does not hide the rest.
    pub fn query(&self, query: &Query) -> Result<Vec<Record>, StoreError> {
        let limit = query.limit.unwrap_or(usize::MAX);
        let mut found = Vec::new();
        if limit == 0 || matches!((query.since, query.until), (Some(s), Some(u)) if s >= u) {
            return Ok(found);
        }
        let mut take = |value: &[u8]| -> bool {
            match Record::decode(value) {
                Ok(record) if query.matches(&record) => found.push(record),
                Ok(_) => {}
                Err(err) => error!(%err, "skipping an undecodable visit-log record"),
            }
            found.len() >= limit
        };
        let (low, high) = query.time_bounds();
        let prefixed_scan = match (&query.user, &query.host) {
            (Some(user), _) => Some((&self.by_user, user.as_str())),
            (None, Some(host)) => Some((&self.by_host, host.as_str())),
            (None, None) => None,
        };
        let index = match prefixed_scan {
            Some((tree, name)) => {
                let low = map_bound(low, |k| prefixed(name, &k));
                let high = match high {
                    Bound::Unbounded => Bound::Included(prefixed(name, &[0xff; TIME_KEY_LEN])),
                    other => map_bound(other, |k| prefixed(name, &k)),
                };
                Some(tree.range::<Vec<u8>, _>((low, high)))
            }
            None if query.blocked_only => Some(self.blocked.range((low, high))),
            None if query.search_terms_only => Some(self.searches.range((low, high))),
            None => None,
        };
        match index {
            Some(entries) => {
                for entry in entries {
                    let (key, _) = entry?;
                    let Some(record_key) = key.len().checked_sub(TIME_KEY_LEN).map(|at| &key[at..])
                    else {
                        continue;
                    };
                    // A missing record is a dangling index entry (crash between the
                    // index and record batches, or a purge in progress): skip it.
                    if let Some(value) = self.records.get(record_key)?
                        && take(&value)
                    {
                        break;
                    }
                }
            }
            None => {
                for entry in self.records.range((low, high)) {
                    let (_, value) = entry?;
                    if take(&value) {
                        break;
                    }
                }
            }
        }
        Ok(found)
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

    /// Removes every record older than `cutoff_micros` (Unix microseconds) and its
    /// index entries, in short chunks. Returns the number of records removed.
    pub fn purge_before(&self, cutoff_micros: u64) -> Result<usize, StoreError> {
        let high = time_key(cutoff_micros, 0);
        let removed = purge_range(&self.records, &[], &high)?;
        purge_range(&self.blocked, &[], &high)?;
        purge_range(&self.searches, &[], &high)?;
        purge_prefixed(&self.by_user, &high)?;
        purge_prefixed(&self.by_host, &high)?;
        Ok(removed)
    }
}

fn map_bound<T, U>(bound: Bound<T>, f: impl FnOnce(T) -> U) -> Bound<U> {
    match bound {
        Bound::Included(x) => Bound::Included(f(x)),
        Bound::Excluded(x) => Bound::Excluded(f(x)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// Removes keys in `[low, high)` in chunks; returns how many.
fn purge_range(tree: &sled::Tree, low: &[u8], high: &[u8]) -> Result<usize, StoreError> {
    let mut removed = 0;
    loop {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for entry in tree.range(low..high).take(PURGE_CHUNK) {
            let (key, _) = entry?;
            batch.remove(key);
            n += 1;
        }
        if n == 0 {
            return Ok(removed);
        }
        tree.apply_batch(batch)?;
        removed += n;
    }
}

/// Purges a tree of `name 0x00 time key` entries: for each distinct name, the keys
/// whose time key is below `high`.
fn purge_prefixed(tree: &sled::Tree, high: &[u8; TIME_KEY_LEN]) -> Result<usize, StoreError> {
    let mut removed = 0;
    let mut from: Bound<Vec<u8>> = Bound::Unbounded;
    while let Some(entry) = tree
        .range::<Vec<u8>, _>((from.clone(), Bound::Unbounded))
        .next()
    {
        let (key, _) = entry?;
        let Some(prefix_len) = key.len().checked_sub(TIME_KEY_LEN) else {
            // Not one of ours: leave it and move on.
            from = Bound::Excluded(key.to_vec());
            continue;
        };
        let prefix = &key[..prefix_len];
        let mut low = prefix.to_vec();
        low.extend_from_slice(&[0; TIME_KEY_LEN]);
        let mut upper = prefix.to_vec();
        upper.extend_from_slice(high);
        removed += purge_range(tree, &low, &upper)?;
        let mut next = prefix.to_vec();
        next.extend_from_slice(&[0xff; TIME_KEY_LEN]);
        from = Bound::Excluded(next);
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
    write_row(&mut out, CSV_HEADER.iter().copied())?;
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
        write_row(&mut out, row.iter().map(String::as_str))?;
    }
    out.flush()?;
    Ok(())
}

fn write_row<'a>(
    out: &mut impl Write,
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
    use super::write_row;

    #[test]
    fn formulas_are_neutralised_and_quoting_still_applies() {
        let mut out = Vec::new();
        write_row(
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
