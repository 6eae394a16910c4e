//! Migrating a visit log written with per-record references (format 2 `R` blocks,
//! format 3 `U` and `H` reference blocks in trees `visit_log_users` and
//! `visit_log_index`, as versions before the hourly postings wrote them) to the
//! hourly postings: every record is found again by user, host and time, also after a
//! migration cut short as by a crash.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::IpAddr;
use std::time::Duration;

use safegate_store::visit_log::time_key;
use safegate_store::{IdentifiedBy, Outcome, Query, Record, SearchTerms, SeenAs, Store};

const T0: u64 = 1_763_900_000_000_000;
const HOUR: u64 = 3_600_000_000;
const USERS: [&str; 5] = ["alice", "bob", "carol", "dave", "eve"];
const HOSTS: [&str; 4] = ["www.bbc.co.uk", "casino.test", "www.google.com", "a.test"];

fn record(i: u64) -> Record {
    let at = T0 + i * 20_000_000;
    let user = (i % 7 != 6).then(|| USERS[(i % 5) as usize].to_owned());
    let blocked = i.is_multiple_of(9);
    Record {
        at_unix_micros: at,
        user,
        role: "pupil".into(),
        group: Some("year-9".into()),
        client: IpAddr::from([10, 1, 2, (i % 200) as u8]),
        identified_by: IdentifiedBy::ProxyAuth,
        method: "GET".into(),
        scheme: "http".into(),
        host: HOSTS[(i % 4) as usize].into(),
        port: 80,
        path: Some(format!("/page/{i}")),
        categories: vec![if blocked { "gambling" } else { "news" }.into()],
        outcome: if blocked {
            Outcome::Blocked
        } else {
            Outcome::Allowed
        },
        rule: "default".into(),
        status: if blocked { 403 } else { 200 },
        bytes_up: 100,
        bytes_down: i,
        duration_micros: 5000,
        search: i.is_multiple_of(11).then(|| SearchTerms {
            engine: "google".into(),
            terms: "rivers".into(),
        }),
        seen_as: SeenAs::PlainHttp,
        user_agent: Some("Firefox".into()),
        failure: None,
        computer: None,
        content: None,
    }
}

/// A block header: format, latest time (u64 BE), item count (u32 LE).
fn header(format: u8, latest: u64, count: usize) -> Vec<u8> {
    let mut block = vec![format];
    block.extend_from_slice(&latest.to_be_bytes());
    block.extend_from_slice(&u32::try_from(count).unwrap().to_le_bytes());
    block
}

/// A format 2 block of records: the header, the item section's length, the item
/// section (each record's length, u32 LE, and bytes) as one zstd frame.
fn format2_block(records: &[Record]) -> Vec<u8> {
    let mut items = Vec::new();
    for r in records {
        let encoded = r.encode();
        items.extend_from_slice(&u32::try_from(encoded.len()).unwrap().to_le_bytes());
        items.extend_from_slice(&encoded);
    }
    let mut block = header(2, records.last().unwrap().at_unix_micros, records.len());
    block.extend_from_slice(&u32::try_from(items.len()).unwrap().to_le_bytes());
    block.extend_from_slice(&zstd::bulk::compress(&items, 1).unwrap());
    block
}

/// Writes `records` (in time order) as the reference layout did: `R` blocks of up
/// to 3 records (a minute at most, as blocks were cut), `B` and `S` copies, and per user and per host a format 3 block of
/// references (block key and position) under `U`/`H`, name, 0x00, block key.
fn write_reference_layout(db: &sled::Db, records: &[Record]) {
    let log = db.open_tree("visit_log").unwrap();
    let users = db.open_tree("visit_log_users").unwrap();
    let hosts = db.open_tree("visit_log_index").unwrap();
    for (n, chunk) in records.chunks(3).enumerate() {
        let seq = n as u64 * 10;
        let key = time_key(chunk[0].at_unix_micros, seq);
        log.insert([b"R".as_slice(), &key].concat(), format2_block(chunk))
            .unwrap();
        for (prefix, keep) in [
            (
                b"B",
                (|r: &&Record| r.outcome == Outcome::Blocked) as fn(&&Record) -> bool,
            ),
            (b"S", |r: &&Record| r.search.is_some()),
        ] {
            let copies: Vec<Record> = chunk.iter().filter(keep).cloned().collect();
            if !copies.is_empty() {
                let copy_key = time_key(copies[0].at_unix_micros, seq + 1);
                log.insert(
                    [prefix.as_slice(), &copy_key].concat(),
                    format2_block(&copies),
                )
                .unwrap();
            }
        }
        for (tree, prefix, name_of) in [
            (
                &users,
                b"U",
                (|r: &Record| r.user.clone()) as fn(&Record) -> Option<String>,
            ),
            (&hosts, b"H", |r: &Record| Some(r.host.clone())),
        ] {
            let mut named: std::collections::BTreeMap<String, Vec<(usize, u64)>> =
                std::collections::BTreeMap::new();
            for (position, r) in chunk.iter().enumerate() {
                if let Some(name) = name_of(r) {
                    named
                        .entry(name)
                        .or_default()
                        .push((position, r.at_unix_micros));
                }
            }
            for (name, places) in named {
                let mut block = header(3, places.last().unwrap().1, places.len());
                for (position, _) in &places {
                    block.extend_from_slice(&key);
                    block.extend_from_slice(&u16::try_from(*position).unwrap().to_le_bytes());
                }
                let ref_key = time_key(places[0].1, seq + 2);
                let tree_key = [prefix.as_slice(), name.as_bytes(), &[0], &ref_key].concat();
                tree.insert(tree_key, block).unwrap();
            }
        }
    }
}

fn old_database(dir: &std::path::Path, records: &[Record]) {
    let db = sled::open(dir.join("db")).unwrap();
    write_reference_layout(&db, records);
    db.flush().unwrap();
}

/// `Store::open` with retries: sled lets go of its lock from a background thread.
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

/// Every record found by each user, each host, blocked, searches and time ranges.
fn assert_all_found(store: &Store, all: &[Record]) {
    let mut queries = vec![Query::default()];
    for user in USERS {
        queries.push(Query {
            user: Some(user.into()),
            ..Query::default()
        });
    }
    for host in HOSTS {
        queries.push(Query {
            host: Some(host.into()),
            since: Some(T0 + HOUR + 5),
            until: Some(T0 + 9 * HOUR),
            ..Query::default()
        });
    }
    queries.push(Query {
        blocked_only: true,
        ..Query::default()
    });
    queries.push(Query {
        search_terms_only: true,
        since: Some(T0 + 3 * HOUR),
        ..Query::default()
    });
    queries.push(Query {
        user: Some("carol".into()),
        host: Some("casino.test".into()),
        since: Some(T0 + 2 * HOUR),
        until: Some(T0 + 7 * HOUR),
        ..Query::default()
    });
    for query in queries {
        let want: Vec<u64> = all
            .iter()
            .filter(|r| query.matches(r))
            .map(|r| r.at_unix_micros)
            .collect();
        assert!(!want.is_empty(), "{query:?}");
        assert_eq!(times(&store.query(&query).unwrap()), want, "{query:?}");
    }
    assert_eq!(store.record_count(), all.len());
}

fn tree_names(dir: &std::path::Path) -> Vec<String> {
    let db = sled::open(dir.join("db")).unwrap();
    db.tree_names()
        .iter()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect()
}

#[test]
fn a_reference_layout_is_migrated_at_opening_and_every_record_is_found() {
    let dir = tempfile::tempdir().unwrap();
    // Ten hours: 1,800 records.
    let all: Vec<Record> = (0..1_800).map(record).collect();
    old_database(dir.path(), &all);
    let store = Store::open(dir.path()).unwrap();
    assert_all_found(&store, &all);
    // New records after the migration, in the hour it left open and later.
    let more: Vec<Record> = (1_800..2_000).map(record).collect();
    store.write_records(&more).unwrap();
    let all = [all, more].concat();
    assert_all_found(&store, &all);
    drop(store);
    let names = tree_names(dir.path());
    assert!(
        !names
            .iter()
            .any(|n| n == "visit_log_users" || n == "visit_log_index"),
        "{names:?}"
    );
    let store = reopen(dir.path());
    assert_all_found(&store, &all);
}

#[test]
fn a_migration_cut_short_resumes_at_the_next_opening_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let all: Vec<Record> = (0..1_800).map(record).collect();
    old_database(dir.path(), &all);
    // Two hours indexed, then "the process dies".
    Store::open_interrupting_migration(dir.path(), 2).unwrap();
    let names = tree_names(dir.path());
    assert!(names.iter().any(|n| n == "visit_log_users"), "{names:?}");
    {
        let db = sled::open(dir.path().join("db")).unwrap();
        let postings = db.open_tree("visit_log_postings").unwrap();
        assert!(postings.get(b"M").unwrap().is_some(), "progress is kept");
    }
    let store = reopen(dir.path());
    assert_all_found(&store, &all);
    drop(store);
    let names = tree_names(dir.path());
    assert!(!names.iter().any(|n| n == "visit_log_users"), "{names:?}");
}

#[test]
fn an_orphan_user_copy_of_format_1_becomes_a_block_again() {
    let dir = tempfile::tempdir().unwrap();
    let all: Vec<Record> = (0..100).map(record).collect();
    {
        let db = sled::open(dir.path().join("db")).unwrap();
        write_reference_layout(&db, &all[..50]);
        // A format 1 copy of alice's block whose `R` block a crash took.
        let orphan: Vec<Record> = all[50..]
            .iter()
            .filter(|r| r.user.as_deref() == Some("alice"))
            .cloned()
            .collect();
        let mut block = header(1, orphan.last().unwrap().at_unix_micros, orphan.len());
        for r in &orphan {
            let encoded = r.encode();
            block.extend_from_slice(&u32::try_from(encoded.len()).unwrap().to_le_bytes());
            block.extend_from_slice(&encoded);
        }
        let key = time_key(orphan[0].at_unix_micros, 999);
        db.open_tree("visit_log_users")
            .unwrap()
            .insert([b"Ualice\0".as_slice(), &key].concat(), block)
            .unwrap();
        db.flush().unwrap();
        let store_records = [&all[..50], &orphan[..]].concat();
        drop(db);
        let store = reopen(dir.path());
        let mut want: Vec<u64> = times(&store_records);
        want.sort_unstable();
        assert_eq!(times(&store.query(&Query::default()).unwrap()), want);
        let alice = Query {
            user: Some("alice".into()),
            ..Query::default()
        };
        let want: Vec<u64> = want
            .into_iter()
            .filter(|t| {
                store_records
                    .iter()
                    .any(|r| r.at_unix_micros == *t && alice.matches(r))
            })
            .collect();
        assert_eq!(times(&store.query(&alice).unwrap()), want);
    }
}
