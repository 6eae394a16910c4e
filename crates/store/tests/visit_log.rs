//! The visit log against a real sled database in a temporary directory.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::IpAddr;
use std::time::Duration;

use safegate_store::{
    IdentifiedBy, Outcome, Query, Record, SearchTerms, SeenAs, Store, spawn_visit_log_writer,
    write_records_csv, write_records_json,
};

const T0: u64 = 1_763_900_000_000_000;
const HOUR: u64 = 3_600_000_000;

fn record(at: u64, user: Option<&str>, host: &str) -> Record {
    Record {
        at_unix_micros: at,
        user: user.map(Into::into),
        role: "pupil".into(),
        group: Some("year-9".into()),
        client: IpAddr::from([10, 1, 2, 3]),
        identified_by: IdentifiedBy::ProxyAuth,
        method: "GET".into(),
        scheme: "http".into(),
        host: host.into(),
        port: 80,
        path: Some("/".into()),
        categories: vec!["education".into()],
        outcome: Outcome::Allowed,
        rule: "default".into(),
        status: 200,
        bytes_up: 100,
        bytes_down: 2000,
        duration_micros: 5000,
        search: None,
        seen_as: SeenAs::PlainHttp,
        user_agent: Some("Firefox".into()),
        failure: None,
        computer: None,
        content: None,
    }
}

fn blocked(mut r: Record) -> Record {
    r.outcome = Outcome::Blocked;
    r.status = 403;
    r.categories = vec!["gambling".into()];
    r.rule = "category:pupil:gambling".into();
    r
}

fn searched(mut r: Record, terms: &str) -> Record {
    r.search = Some(SearchTerms {
        engine: "google".into(),
        terms: terms.into(),
    });
    r
}

/// A small mixed log: alice and bob over 10 hours, a few blocked and searches.
fn fixture() -> Vec<Record> {
    let mut all = Vec::new();
    for h in 0..10 {
        let at = T0 + h * HOUR;
        all.push(record(at, Some("alice"), "www.bbc.co.uk"));
        all.push(record(at + 1, Some("bob"), "en.wikipedia.org"));
        if h % 3 == 0 {
            all.push(blocked(record(at + 2, Some("bob"), "casino.test")));
        }
        if h % 4 == 0 {
            all.push(searched(
                record(at + 3, Some("alice"), "www.google.com"),
                "volcanoes",
            ));
        }
    }
    all.push(record(T0 + 5 * HOUR + 7, None, "www.bbc.co.uk"));
    all
}

/// Opens the raw sled database again. sled releases its file lock from a background
/// thread shortly after the last handle is dropped, so retry for a while.
fn reopen_raw(dir: &std::path::Path) -> sled::Db {
    for _ in 0..200 {
        if let Ok(db) = sled::open(dir.join("db")) {
            return db;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    sled::open(dir.join("db")).unwrap()
}

/// `Store::open` again, with the same retry as `reopen_raw`.
fn reopen(dir: &std::path::Path) -> Store {
    for _ in 0..200 {
        if let Ok(store) = Store::open(dir) {
            return store;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Store::open(dir).unwrap()
}

fn times(records: &[Record]) -> Vec<u64> {
    records.iter().map(|r| r.at_unix_micros).collect()
}

fn expected(all: &[Record], query: &Query) -> Vec<u64> {
    let mut t: Vec<u64> = all
        .iter()
        .filter(|r| query.matches(r))
        .map(|r| r.at_unix_micros)
        .collect();
    t.sort_unstable();
    if let Some(limit) = query.limit {
        t.truncate(limit);
    }
    t
}

#[tokio::test]
async fn writer_writes_every_queued_record_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (queue, writer) =
        spawn_visit_log_writer(store.clone(), 10_000, Duration::from_millis(50), None);
    let all = fixture();
    for r in &all {
        assert!(queue.submit(r.clone()));
    }
    let stats = queue.stats().clone();
    drop(queue);
    writer.await.unwrap();
    let s = stats.snapshot();
    assert_eq!(s.written, all.len() as u64);
    assert_eq!(s.dropped, 0);
    assert_eq!(s.write_errors, 0);
    assert_eq!(s.queue_depth, 0);
    assert!(s.batches >= 1);
    assert_eq!(store.record_count(), all.len());
    let everything = store.query(&Query::default()).unwrap();
    assert_eq!(times(&everything), expected(&all, &Query::default()));
    // Stored records come back exactly.
    let mut sorted = all.clone();
    sorted.sort_by_key(|r| r.at_unix_micros);
    assert_eq!(everything, sorted);
}

#[tokio::test]
async fn observer_sees_every_written_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (observer, mut observed) = tokio::sync::mpsc::channel(64);
    let (queue, writer) = spawn_visit_log_writer(
        store.clone(),
        10_000,
        Duration::from_millis(20),
        Some(observer),
    );
    let all = fixture();
    // From several threads at once: each lands in its own shard of the queue.
    std::thread::scope(|scope| {
        for chunk in all.chunks(all.len().div_ceil(4)) {
            let queue = queue.clone();
            scope.spawn(move || {
                for r in chunk.iter().rev() {
                    assert!(queue.submit(r.clone()));
                }
            });
        }
    });
    let stats = queue.stats().clone();
    drop(queue);
    writer.await.unwrap();
    let mut seen = Vec::new();
    while let Some(batch) = observed.recv().await {
        assert!(!batch.is_empty());
        let batch = batch.to_records();
        assert!(
            batch.is_sorted_by_key(|r| r.at_unix_micros),
            "batches reach the observer in time order"
        );
        seen.extend(batch);
    }
    assert_eq!(stats.snapshot().observer_dropped, 0);
    let mut expected = all.clone();
    expected.sort_by_key(|r| (r.at_unix_micros, r.host.clone()));
    seen.sort_by_key(|r| (r.at_unix_micros, r.host.clone()));
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn full_queue_drops_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // A current-thread runtime: the writer cannot run while we submit.
    let (queue, writer) = spawn_visit_log_writer(store.clone(), 4, Duration::from_secs(1), None);
    let accepted = (0..10)
        .filter(|i| queue.submit(record(T0 + i, Some("alice"), "a.test")))
        .count();
    assert_eq!(accepted, 4);
    let stats = queue.stats().clone();
    assert_eq!(stats.snapshot().dropped, 6);
    assert_eq!(stats.snapshot().queue_depth, 4);
    drop(queue);
    writer.await.unwrap();
    assert_eq!(stats.snapshot().written, 4);
    assert_eq!(store.record_count(), 4);
}

#[test]
fn queries_use_each_index_and_filter_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let all = fixture();
    store.write_records(&all).unwrap();
    let q = |f: fn(&mut Query)| {
        let mut query = Query::default();
        f(&mut query);
        query
    };
    let queries = [
        q(|q| q.user = Some("alice".into())),
        q(|q| q.user = Some("bob".into())),
        q(|q| q.user = Some("nobody".into())),
        q(|q| q.user = Some("ali".into())),
        q(|q| {
            q.user = Some("alice".into());
            q.since = Some(T0 + 2 * HOUR);
            q.until = Some(T0 + 6 * HOUR);
        }),
        q(|q| {
            q.user = Some("bob".into());
            q.blocked_only = true;
        }),
        q(|q| q.host = Some("www.bbc.co.uk".into())),
        q(|q| {
            q.host = Some("www.bbc.co.uk".into());
            q.until = Some(T0 + 5 * HOUR + 8);
            q.since = Some(T0 + 5 * HOUR);
        }),
        q(|q| q.blocked_only = true),
        q(|q| {
            q.blocked_only = true;
            q.since = Some(T0 + HOUR);
        }),
        q(|q| q.search_terms_only = true),
        q(|q| q.category = Some("gambling".into())),
        q(|q| {
            q.since = Some(T0 + 3 * HOUR);
            q.until = Some(T0 + 4 * HOUR);
        }),
        q(|q| {
            q.user = Some("alice".into());
            q.limit = Some(3);
        }),
        q(|q| q.limit = Some(0)),
        q(|q| {
            q.since = Some(T0 + 4 * HOUR);
            q.until = Some(T0 + 4 * HOUR);
        }),
    ];
    for query in &queries {
        let got = store.query(query).unwrap();
        assert_eq!(times(&got), expected(&all, query), "{query:?}");
        assert!(got.iter().all(|r| query.matches(r)));
    }
    // Spot checks that the fixture exercises what we think.
    assert_eq!(store.query(&queries[0]).unwrap().len(), 13);
    assert_eq!(store.query(&queries[8]).unwrap().len(), 4);
    assert_eq!(store.query(&queries[10]).unwrap().len(), 3);
    assert_eq!(store.query(&queries[12]).unwrap().len(), 3);
    assert_eq!(store.query(&queries[13]).unwrap().len(), 3);
}

#[test]
fn purge_removes_old_records_and_their_index_entries() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let all = fixture();
    store.write_records(&all).unwrap();
    let cutoff = T0 + 4 * HOUR;
    let old = all.iter().filter(|r| r.at_unix_micros < cutoff).count();
    assert_eq!(store.purge_before(cutoff).unwrap(), old);
    assert_eq!(store.record_count(), all.len() - old);
    let remaining: Vec<Record> = all
        .iter()
        .filter(|r| r.at_unix_micros >= cutoff)
        .cloned()
        .collect();
    for query in [
        Query::default(),
        Query {
            user: Some("alice".into()),
            ..Query::default()
        },
        Query {
            host: Some("casino.test".into()),
            ..Query::default()
        },
        Query {
            blocked_only: true,
            ..Query::default()
        },
        Query {
            search_terms_only: true,
            ..Query::default()
        },
    ] {
        assert_eq!(
            times(&store.query(&query).unwrap()),
            expected(&remaining, &query),
            "{query:?}"
        );
    }
    // Index entries are gone too, not merely skipped: purge everything and check
    // the whole database holds no visit-log keys.
    let everything = store.purge_before(u64::MAX).unwrap();
    assert_eq!(everything, remaining.len());
    drop(store);
    let db = reopen_raw(dir.path());
    assert_eq!(db.open_tree("visit_log").unwrap().len(), 0);
    // Only the closed-before time is left of the index.
    let postings = db.open_tree("visit_log_postings").unwrap();
    assert_eq!(
        postings.len(),
        1,
        "{:?}",
        postings.iter().keys().collect::<Vec<_>>()
    );
    assert!(postings.get(b"W").unwrap().is_some());
}

#[test]
fn export_json_and_csv() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut tricky = searched(
        record(T0 + 5, Some("alice"), "www.google.com"),
        "comma, \"quote\"\nnewline",
    );
    tricky.categories = vec!["search-engines".into(), "education".into()];
    tricky.path = Some("/search?q=a,b".into());
    tricky.user_agent = None;
    let mut plain = record(T0 + 9, Some("alice"), "www.bbc.co.uk");
    plain.content = Some(safegate_store::ContentScore {
        score: 150,
        categories: vec![("gambling".into(), 120), ("violence".into(), 30)],
        phrases: vec![("online casino".into(), 60)],
        late: false,
    });
    store
        .write_records(&[
            tricky.clone(),
            plain.clone(),
            record(T0 + 7, Some("bob"), "x.test"),
            record(T0 + 1, Some("alice"), "old.test"),
        ])
        .unwrap();
    let exported = store.export_user("alice", Some(T0 + 2), None).unwrap();
    assert_eq!(exported, vec![tricky.clone(), plain.clone()]);

    let mut json = Vec::new();
    write_records_json(&exported, &mut json).unwrap();
    let parsed: Vec<Record> = serde_json::from_slice(&json).unwrap();
    let without_content: Vec<Record> = exported
        .iter()
        .cloned()
        .map(|mut r| {
            r.content = None;
            r
        })
        .collect();
    assert_eq!(parsed, without_content);
    let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(value[0]["search"]["terms"], "comma, \"quote\"\nnewline");
    assert_eq!(value[0]["outcome"], "Allowed");
    assert_eq!(value[0]["content_score"], serde_json::Value::Null);
    assert_eq!(value[0]["content_categories"], serde_json::json!([]));
    assert_eq!(value[1]["content_score"], 150);
    assert_eq!(
        value[1]["content_categories"],
        serde_json::json!([{"name": "gambling", "score": 120}, {"name": "violence", "score": 30}])
    );

    let mut csv = Vec::new();
    write_records_csv(&exported, &mut csv).unwrap();
    let csv = String::from_utf8(csv).unwrap();
    let expected = format!(
        "at_unix_micros,user,role,group,client,identified_by,method,scheme,host,port,path,\
         categories,outcome,rule,status,bytes_up,bytes_down,duration_micros,search_engine,\
         search_terms,seen_as,user_agent,failure,computer,content_score,content_categories\r\n\
         {},alice,pupil,year-9,10.1.2.3,ProxyAuth,GET,http,www.google.com,80,\"/search?q=a,b\",\
         search-engines;education,Allowed,default,200,100,2000,5000,google,\
         \"comma, \"\"quote\"\"\nnewline\",PlainHttp,,,,,\r\n\
         {},alice,pupil,year-9,10.1.2.3,ProxyAuth,GET,http,www.bbc.co.uk,80,/,education,\
         Allowed,default,200,100,2000,5000,,,PlainHttp,Firefox,,,150,gambling 120;violence 30\r\n",
        T0 + 5,
        T0 + 9
    );
    assert_eq!(csv, expected);
}

#[tokio::test]
async fn records_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let all = fixture();
    {
        let store = Store::open(dir.path()).unwrap();
        let (queue, writer) = spawn_visit_log_writer(store, 100, Duration::from_millis(10), None);
        for r in &all {
            assert!(queue.submit(r.clone()));
        }
        drop(queue);
        writer.await.unwrap();
    }
    let store = reopen(dir.path());
    assert_eq!(store.record_count(), all.len());
    let alice = Query {
        user: Some("alice".into()),
        ..Query::default()
    };
    assert_eq!(times(&store.query(&alice).unwrap()), expected(&all, &alice));
    // Sequence numbers keep growing across restarts: same-time records stay distinct.
    store.write_records(&all[..1]).unwrap();
    assert_eq!(store.record_count(), all.len() + 1);
}

/// Many batches of records arriving out of order (long requests are recorded when
/// they end), over many blocks: every query answers exactly, oldest first, for time
/// ranges that cut through blocks.
#[test]
fn blocks_from_overlapping_batches_answer_every_query_in_time_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut state = 0x1234_5678_9abc_def0_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let users = ["alice", "bob", "carol", "dave"];
    let hosts = ["a.test", "b.test", "casino.test", "www.google.com"];
    let mut all = Vec::new();
    for batch in 0..40u64 {
        let mut records = Vec::new();
        for _ in 0..150 {
            let r = next();
            // Mostly recent, sometimes minutes late.
            let late = if r % 10 == 0 {
                (r >> 8) % (5 * 60_000_000)
            } else {
                0
            };
            let at = (T0 + batch * 20_000_000 + (r >> 20) % 20_000_000).saturating_sub(late);
            let user = (r % 5 != 4).then(|| users[(r >> 3) as usize % users.len()]);
            let mut rec = record(at, user, hosts[(r >> 5) as usize % hosts.len()]);
            if r % 7 == 0 {
                rec = blocked(rec);
            }
            if r % 11 == 0 {
                rec = searched(rec, "terms");
            }
            records.push(rec);
        }
        store.write_records(&records).unwrap();
        all.extend(records);
    }
    assert_eq!(store.record_count(), all.len());
    let mid = T0 + 7 * 60_000_000 + 123;
    let end = T0 + 11 * 60_000_000 + 7;
    let mut queries = Vec::new();
    for user in [None, Some("bob"), Some("nobody")] {
        for host in [None, Some("casino.test")] {
            for (blocked_only, search_terms_only) in [(false, false), (true, false), (false, true)]
            {
                for (since, until) in [(None, None), (Some(mid), None), (Some(mid), Some(end))] {
                    for limit in [None, Some(17)] {
                        queries.push(Query {
                            user: user.map(Into::into),
                            host: host.map(Into::into),
                            blocked_only,
                            search_terms_only,
                            since,
                            until,
                            limit,
                            ..Query::default()
                        });
                    }
                }
            }
        }
    }
    for query in &queries {
        assert_eq!(
            times(&store.query(query).unwrap()),
            expected(&all, query),
            "{query:?}"
        );
    }
    // Purging to a cutoff leaves no record older than the cutoff by more than a
    // block span, and every record from the cutoff on.
    store.purge_before(mid).unwrap();
    let left = store.query(&Query::default()).unwrap();
    assert!(
        left.iter()
            .all(|r| r.at_unix_micros + safegate_store::visit_log::BLOCK_SPAN_MICROS >= mid)
    );
    let since_mid = Query {
        since: Some(mid),
        ..Query::default()
    };
    assert_eq!(
        times(&store.query(&since_mid).unwrap()),
        expected(&all, &since_mid)
    );
}

/// A block of the uncompressed format 1 as earlier versions wrote it: format, latest
/// time (u64 BE), count (u32 LE), then each item's length (u32 LE) and bytes.
fn format1_block(items: &[Vec<u8>], latest: u64) -> Vec<u8> {
    let mut block = vec![1u8];
    block.extend_from_slice(&latest.to_be_bytes());
    block.extend_from_slice(&u32::try_from(items.len()).unwrap().to_le_bytes());
    for item in items {
        block.extend_from_slice(&u32::try_from(item.len()).unwrap().to_le_bytes());
        block.extend_from_slice(item);
    }
    block
}

fn raw_key(prefix: &[u8], block_key: &[u8]) -> Vec<u8> {
    [prefix, block_key].concat()
}

/// Writes `records` (of one user or none, in time order) the way format 1 did: one `R`
/// block, a full copy under `U`, `B` and `S` copies, and `H` blocks of length-prefixed
/// references.
fn write_format1(db: &sled::Db, records: &[Record], seq: u64) {
    use safegate_store::visit_log::time_key;
    let log = db.open_tree("visit_log").unwrap();
    let users = db.open_tree("visit_log_users").unwrap();
    let index = db.open_tree("visit_log_index").unwrap();
    let first = records[0].at_unix_micros;
    let latest = records.last().unwrap().at_unix_micros;
    let key = time_key(first, seq);
    let encoded: Vec<Vec<u8>> = records.iter().map(Record::encode).collect();
    let block = format1_block(&encoded, latest);
    log.insert(raw_key(b"R", &key), block.clone()).unwrap();
    if let Some(user) = &records[0].user {
        users
            .insert(raw_key(format!("U{user}\0").as_bytes(), &key), block)
            .unwrap();
    }
    for (prefix, keep) in [
        (
            b"B",
            (|r: &Record| r.outcome == Outcome::Blocked) as fn(&Record) -> bool,
        ),
        (b"S", |r: &Record| r.search.is_some()),
    ] {
        let copies: Vec<&Record> = records.iter().filter(|r| keep(r)).collect();
        if let (Some(first), Some(last)) = (copies.first(), copies.last()) {
            let items: Vec<Vec<u8>> = copies.iter().map(|r| r.encode()).collect();
            log.insert(
                raw_key(prefix, &time_key(first.at_unix_micros, seq + 100)),
                format1_block(&items, last.at_unix_micros),
            )
            .unwrap();
        }
    }
    for (position, r) in records.iter().enumerate() {
        let mut reference = key.to_vec();
        reference.extend_from_slice(&u16::try_from(position).unwrap().to_le_bytes());
        index
            .insert(
                raw_key(
                    format!("H{}\0", r.host).as_bytes(),
                    &time_key(r.at_unix_micros, seq + 200 + position as u64),
                ),
                format1_block(&[reference], r.at_unix_micros),
            )
            .unwrap();
    }
}

/// Queries over every index, for comparing a database with the records put into it.
fn all_queries(mid: u64, end: u64) -> Vec<Query> {
    let mut queries = Vec::new();
    for user in [None, Some("alice"), Some("bob"), Some("nobody")] {
        for host in [None, Some("casino.test"), Some("www.bbc.co.uk")] {
            for (blocked_only, search_terms_only) in [(false, false), (true, false), (false, true)]
            {
                for (since, until) in [(None, None), (Some(mid), None), (Some(mid), Some(end))] {
                    queries.push(Query {
                        user: user.map(Into::into),
                        host: host.map(Into::into),
                        blocked_only,
                        search_terms_only,
                        since,
                        until,
                        ..Query::default()
                    });
                }
            }
        }
    }
    queries
}

/// Blocks of format 1 (uncompressed, `U` copies, length-prefixed host references)
/// written by earlier versions are read alongside new ones, and purged like them.
#[test]
fn format1_blocks_are_still_read_and_purged() {
    let dir = tempfile::tempdir().unwrap();
    let old_alice = vec![
        record(T0, Some("alice"), "www.bbc.co.uk"),
        searched(record(T0 + 10, Some("alice"), "www.google.com"), "rivers"),
        blocked(record(T0 + 20, Some("alice"), "casino.test")),
    ];
    let old_bob = vec![record(T0 + 5, Some("bob"), "www.bbc.co.uk")];
    let old_anonymous = vec![blocked(record(T0 + 7, None, "casino.test"))];
    {
        let db = sled::open(dir.path().join("db")).unwrap();
        write_format1(&db, &old_alice, 1);
        write_format1(&db, &old_bob, 1_000);
        write_format1(&db, &old_anonymous, 2_000);
        db.flush().unwrap();
    }
    let store = reopen(dir.path());
    let new = fixture();
    store.write_records(&new).unwrap();
    let all: Vec<Record> = [old_alice, old_bob, old_anonymous, new].concat();
    assert_eq!(store.record_count(), all.len());
    for query in all_queries(T0 + 15, T0 + 6 * HOUR) {
        assert_eq!(
            times(&store.query(&query).unwrap()),
            expected(&all, &query),
            "{query:?}"
        );
    }
    // The old blocks are all before T0 + 1 h, with the first hour of the new ones.
    let before = all.iter().filter(|r| r.at_unix_micros < T0 + HOUR).count();
    assert_eq!(store.purge_before(T0 + HOUR).unwrap(), before);
    assert_eq!(store.record_count(), all.len() - before);
    let left: Vec<Record> = all
        .iter()
        .filter(|r| r.at_unix_micros >= T0 + HOUR)
        .cloned()
        .collect();
    for query in all_queries(T0 + 15, T0 + 6 * HOUR) {
        assert_eq!(
            times(&store.query(&query).unwrap()),
            expected(&left, &query),
            "{query:?}"
        );
    }
}

/// A damaged compressed block, or one of an unknown format, is skipped with an error
/// in the log: every query still answers with the records of the other blocks.
#[test]
fn damaged_compressed_blocks_are_skipped_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let early: Vec<Record> = (0..60)
        .map(|i| record(T0 + i * 1_000, Some("alice"), "www.bbc.co.uk"))
        .collect();
    let late: Vec<Record> = (0..60)
        .map(|i| record(T0 + HOUR + i * 1_000, Some("alice"), "www.bbc.co.uk"))
        .collect();
    let unknown: Vec<Record> = (0..60)
        .map(|i| record(T0 + 2 * HOUR + i * 1_000, Some("alice"), "www.bbc.co.uk"))
        .collect();
    store.write_records(&early).unwrap();
    store.write_records(&late).unwrap();
    store.write_records(&unknown).unwrap();
    drop(store);
    {
        let db = reopen_raw(dir.path());
        let log = db.open_tree("visit_log").unwrap();
        let blocks: Vec<(sled::IVec, sled::IVec)> =
            log.scan_prefix(b"R").map(Result::unwrap).collect();
        assert_eq!(blocks.len(), 3);
        for (_, value) in &blocks {
            assert_eq!(value[0], safegate_store::visit_log::BLOCK_FORMAT);
            assert!(value.len() < 60 * 100, "compressed: {} bytes", value.len());
        }
        // The first: the compressed bytes garbled (header intact); the third: an
        // unknown format.
        let mut garbled = blocks[0].1.to_vec();
        for byte in &mut garbled[17 + 4..] {
            *byte = 0xa5;
        }
        log.insert(&blocks[0].0, garbled).unwrap();
        let mut unknown = blocks[2].1.to_vec();
        unknown[0] = 200;
        log.insert(&blocks[2].0, unknown).unwrap();
        db.flush().unwrap();
    }
    let store = reopen(dir.path());
    let late_times = times(&late);
    for query in [
        Query::default(),
        Query {
            user: Some("alice".into()),
            ..Query::default()
        },
        Query {
            host: Some("www.bbc.co.uk".into()),
            ..Query::default()
        },
    ] {
        assert_eq!(
            times(&store.query(&query).unwrap()),
            late_times,
            "{query:?}"
        );
    }
}

/// References that outlived their blocks (a crash between the two batches of a
/// write) are skipped: user and host queries answer like time queries.
#[test]
fn references_without_their_blocks_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let first = fixture();
    store.write_records(&first).unwrap();
    let lost: Vec<Record> = (0..5)
        .map(|i| record(T0 + 20 * HOUR + i, Some("alice"), "www.bbc.co.uk"))
        .collect();
    store.write_records(&lost).unwrap();
    drop(store);
    {
        let db = reopen_raw(dir.path());
        let log = db.open_tree("visit_log").unwrap();
        let last = log.scan_prefix(b"R").last().unwrap().unwrap().0;
        log.remove(last).unwrap();
        db.flush().unwrap();
    }
    let store = reopen(dir.path());
    for query in all_queries(T0 + 3 * HOUR, T0 + 30 * HOUR) {
        assert_eq!(
            times(&store.query(&query).unwrap()),
            expected(&first, &query),
            "{query:?}"
        );
    }
}

/// A batch larger than a block (one user, one host, out of order): records, user and
/// host references are all cut into several blocks, and every query still finds
/// each record once, in time order.
#[test]
fn a_large_batch_of_one_user_spans_several_blocks_and_references() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let n = 1_000u64;
    let all: Vec<Record> = (0..n)
        .map(|i| {
            // Out of order, 0 to 2 minutes after T0.
            let at = T0 + (i * 7_919 % n) * 120_000;
            let r = record(at, Some("alice"), "www.bbc.co.uk");
            if i % 10 == 0 { blocked(r) } else { r }
        })
        .collect();
    store.write_records(&all).unwrap();
    assert_eq!(store.record_count(), all.len());
    for query in all_queries(T0 + 30_000_123, T0 + 90_000_000) {
        for limit in [None, Some(300)] {
            let query = Query {
                limit,
                ..query.clone()
            };
            assert_eq!(
                times(&store.query(&query).unwrap()),
                expected(&all, &query),
                "{query:?}"
            );
        }
    }
    drop(store);
    // The index is rebuilt from the blocks on opening: the same answers.
    let store = reopen(dir.path());
    for query in all_queries(T0 + 30_000_123, T0 + 90_000_000) {
        assert_eq!(
            times(&store.query(&query).unwrap()),
            expected(&all, &query),
            "{query:?}"
        );
    }
}

/// Hours close as later ones are written: their postings are written in few keys
/// (a table and one key per bucket used), a record hours late gets a set of its own,
/// and every query finds every record, before and after reopening.
#[test]
fn closed_hours_and_late_records_are_found_before_and_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut all = Vec::new();
    for minute in 0..(12 * 60u64) {
        let at = T0 + minute * 60_000_000;
        let mut batch = vec![
            record(at, Some("alice"), "www.bbc.co.uk"),
            record(at + 1, Some("bob"), "en.wikipedia.org"),
        ];
        if minute % 97 == 0 {
            batch.push(blocked(record(at + 2, Some("bob"), "casino.test")));
        }
        if minute % 131 == 0 && minute > 4 * 60 {
            // A long download, recorded when it ends: three hours late.
            batch.push(record(at - 3 * HOUR, Some("alice"), "casino.test"));
        }
        store.write_records(&batch).unwrap();
        all.extend(batch);
    }
    let check = |store: &Store, all: &[Record]| {
        for query in all_queries(T0 + 2 * HOUR + 17, T0 + 9 * HOUR) {
            assert_eq!(
                times(&store.query(&query).unwrap()),
                expected(all, &query),
                "{query:?}"
            );
        }
    };
    check(&store, &all);
    drop(store);
    {
        let db = reopen_raw(dir.path());
        let postings = db.open_tree("visit_log_postings").unwrap();
        let tables = postings.scan_prefix(b"T").count();
        // Ten closed hours, plus the late records' own sets.
        assert!((10..=20).contains(&tables), "{tables} sets");
        assert!(postings.len() < 200, "{} keys", postings.len());
        assert!(postings.get(b"W").unwrap().is_some());
    }
    let store = reopen(dir.path());
    check(&store, &all);
    // Written after reopening: the rebuilt open hours go on.
    let more: Vec<Record> = (0..5)
        .map(|i| record(T0 + 12 * HOUR + i, Some("alice"), "www.bbc.co.uk"))
        .collect();
    store.write_records(&more).unwrap();
    all.extend(more);
    check(&store, &all);
}

/// A batch written again (the writer's retry after a flush that failed although the
/// write had reached the disk) is stored once: the same block keys are written.
#[test]
fn a_batch_written_twice_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let all = fixture();
    let batch = safegate_store::RecordBatch::from_records(&all);
    store.write_batch(&batch).unwrap();
    store.write_batch(&batch).unwrap();
    assert_eq!(store.record_count(), all.len());
    for query in all_queries(T0 + 3 * HOUR, T0 + 8 * HOUR) {
        assert_eq!(
            times(&store.query(&query).unwrap()),
            expected(&all, &query),
            "{query:?}"
        );
    }
}
