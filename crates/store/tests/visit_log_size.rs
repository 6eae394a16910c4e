//! Measures the visit log's bytes on disk per record (ignored: a measurement, not a
//! check). `SAFEGATE_SIZE_RECORDS=1000000 cargo test --release -p safegate-store
//! --test visit_log_size -- --ignored --nocapture` builds a database of that many
//! records like `benches/micro/visit_log.rs` does (1,000 users, 5,000 sites, one
//! record every 1.2 s, batches of 64) in a temporary directory and prints, per tree
//! and key prefix, the keys and the bytes of keys and values next to what sled takes
//! on disk.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use safegate_store::{IdentifiedBy, Outcome, Record, SearchTerms, SeenAs, Store};

const T0: u64 = 1_763_900_000_000_000;

/// Deterministic pseudo-random numbers (splitmix64).
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The benchmark's record `i` (see `benches/micro/visit_log.rs`).
fn record(i: u64, spacing: u64) -> Record {
    let r = mix(i);
    let user = r % 1_000;
    let host = (r >> 16) % 5_000;
    let blocked = (r >> 40) % 100 < 5;
    let search = (r >> 48) % 100 < 3;
    Record {
        at_unix_micros: T0 + i * spacing,
        user: Some(format!("pupil{user:04}")),
        role: "pupil".into(),
        group: Some(format!("year-{}", 7 + user % 7)),
        client: IpAddr::from([10, 1, (user >> 8) as u8, user as u8]),
        identified_by: IdentifiedBy::ProxyAuth,
        method: "GET".into(),
        scheme: "http".into(),
        host: format!("www.site{host}.example.co.uk"),
        port: 80,
        path: Some(format!("/articles/{}/page.html?ref=home", r % 100_000)),
        categories: vec![if blocked { "gambling" } else { "news" }.into()],
        outcome: if blocked {
            Outcome::Blocked
        } else {
            Outcome::Allowed
        },
        rule: if blocked {
            "category:pupil:gambling"
        } else {
            "default"
        }
        .into(),
        status: if blocked { 403 } else { 200 },
        bytes_up: 420,
        bytes_down: r % 200_000,
        duration_micros: r % 2_000_000,
        search: search.then(|| SearchTerms {
            engine: "google".into(),
            terms: "volcano eruption pompeii".into(),
        }),
        seen_as: SeenAs::PlainHttp,
        user_agent: Some(
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:132.0) Gecko/20100101 Firefox/132.0"
                .into(),
        ),
        failure: None,
        computer: None,
        content: None,
    }
}

fn disk_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                disk_bytes(&entry.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

#[test]
#[ignore = "a measurement: builds a large database"]
fn bytes_per_record() {
    let n: u64 = std::env::var("SAFEGATE_SIZE_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let batch: u64 = std::env::var("SAFEGATE_SIZE_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let started = Instant::now();
    let spacing = 14 * 86_400_000_000 / 1_000_000;
    let mut i = 0;
    while i < n {
        let end = (i + batch).min(n);
        let records: Vec<Record> = (i..end).map(|j| record(j, spacing)).collect();
        store.write_records(&records).unwrap();
        i = end;
    }
    store.flush_blocking().unwrap();
    println!(
        "built {n} records in batches of {batch} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    drop(store);
    std::thread::sleep(Duration::from_millis(500));
    let disk = disk_bytes(&dir.path().join("db"));
    let db = sled::open(dir.path().join("db")).unwrap();
    let mut parts: BTreeMap<(String, u8), (u64, u64, u64)> = BTreeMap::new();
    for tree in ["visit_log", "visit_log_postings"] {
        for entry in db.open_tree(tree).unwrap().iter() {
            let (key, value) = entry.unwrap();
            let part = parts.entry((tree.to_owned(), key[0])).or_default();
            part.0 += 1;
            part.1 += key.len() as u64;
            part.2 += value.len() as u64;
        }
    }
    let mut logical = 0;
    for ((tree, prefix), (keys, key_bytes, value_bytes)) in &parts {
        logical += key_bytes + value_bytes;
        println!(
            "{tree:>16} {}: {keys:>9} keys ({:.2} per record), {:>6.1} key + {:>6.1} value bytes per record",
            *prefix as char,
            *keys as f64 / n as f64,
            *key_bytes as f64 / n as f64,
            *value_bytes as f64 / n as f64
        );
    }
    println!(
        "keys and values: {:.0} bytes per record; on disk: {disk} bytes = {:.0} bytes per record ({:.1}x)",
        logical as f64 / n as f64,
        disk as f64 / n as f64,
        disk as f64 / logical as f64
    );
}
