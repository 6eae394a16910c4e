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
    assert_eq!(db.open_tree("visit_log_index").unwrap().len(), 0);
    assert_eq!(db.open_tree("visit_log_users").unwrap().len(), 0);
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
    let plain = record(T0 + 9, Some("alice"), "www.bbc.co.uk");
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
    assert_eq!(parsed, exported);
    let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(value[0]["search"]["terms"], "comma, \"quote\"\nnewline");
    assert_eq!(value[0]["outcome"], "Allowed");

    let mut csv = Vec::new();
    write_records_csv(&exported, &mut csv).unwrap();
    let csv = String::from_utf8(csv).unwrap();
    let expected = format!(
        "at_unix_micros,user,role,group,client,identified_by,method,scheme,host,port,path,\
         categories,outcome,rule,status,bytes_up,bytes_down,duration_micros,search_engine,\
         search_terms,seen_as,user_agent,failure\r\n\
         {},alice,pupil,year-9,10.1.2.3,ProxyAuth,GET,http,www.google.com,80,\"/search?q=a,b\",\
         search-engines;education,Allowed,default,200,100,2000,5000,google,\
         \"comma, \"\"quote\"\"\nnewline\",PlainHttp,,\r\n\
         {},alice,pupil,year-9,10.1.2.3,ProxyAuth,GET,http,www.bbc.co.uk,80,/,education,\
         Allowed,default,200,100,2000,5000,,,PlainHttp,Firefox,\r\n",
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
