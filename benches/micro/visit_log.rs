//! Visit-log benchmark (custom harness, prints figures):
//!
//! 1. writer throughput end to end: records submitted to the `VisitLogQueue` and
//!    written by the writer task into sled (flush interval 1 s), as fast as possible;
//! 2. rated load: 100,000 records/s paced for a few seconds, counting drops (must be 0);
//! 3. a database of N records (default 10,000,000; `VISIT_LOG_BENCH_RECORDS`) spread
//!    over 14 days among 1,000 users, built once with `Store::write_records`; bytes on
//!    disk per record; one user's week queried cold (reopened) and warm; blocked
//!    records of the last day; every record of the last day (a time-range scan).
//!
//! `cargo bench -p safegate-benches --bench visit_log`. The database goes to
//! `$TMPDIR/safegate-visit-log-bench-<pid>` and is removed at the end.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use safegate_store::{
    IdentifiedBy, Outcome, Query, Record, SearchTerms, SeenAs, Store, spawn_visit_log_writer,
};

const T0: u64 = 1_763_900_000_000_000;
const DAY: u64 = 86_400_000_000;
const USERS: u64 = 1_000;
const HOSTS: u64 = 5_000;

/// Deterministic pseudo-random numbers (splitmix64).
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Record `i`, `spacing` microseconds after record `i - 1`: realistic sizes (~225
/// bytes encoded), 5% blocked, 3% searches.
fn record(i: u64, spacing: u64) -> Record {
    let r = mix(i);
    let user = r % USERS;
    let host = (r >> 16) % HOSTS;
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
        categories: if blocked {
            vec!["gambling".into()]
        } else {
            vec!["news".into()]
        },
        outcome: if blocked {
            Outcome::Blocked
        } else {
            Outcome::Allowed
        },
        rule: if blocked {
            "category:pupil:gambling".into()
        } else {
            "default".into()
        },
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

fn disk_bytes(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let (mut apparent, mut allocated) = (0, 0);
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            let (a, b) = disk_bytes(&entry.path());
            apparent += a;
            allocated += b;
        } else {
            apparent += meta.len();
            allocated += meta.blocks() * 512;
        }
    }
    (apparent, allocated)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn writer_throughput(dir: &Path, n: u64) {
    let store = Store::open(dir).unwrap();
    // Arriving at 100,000 records/s: 10 us apart.
    let records: Vec<Record> = (0..n).map(|i| record(i, 10)).collect();
    let encoded: usize = records.iter().map(|r| r.encode().len()).sum();
    let (queue, writer) =
        spawn_visit_log_writer(store.clone(), 65_536, Duration::from_secs(1), None);
    let stats = queue.stats().clone();
    let started = Instant::now();
    let mut retries = 0u64;
    for r in records {
        // Full queue: wait for the writer (this measures sustained capacity, so
        // nothing may be dropped here).
        let mut r = Some(r);
        while let Some(rec) = r.take() {
            if stats.snapshot().queue_depth >= 65_000 {
                retries += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
                r = Some(rec);
            } else if !queue.submit(rec) {
                panic!("dropped in the throughput test");
            }
        }
    }
    drop(queue);
    writer.await.unwrap();
    let elapsed = started.elapsed();
    let s = stats.snapshot();
    assert_eq!(s.written, n);
    println!(
        "writer: {n} records (mean {} bytes encoded) in {:.2} s = {:.0} records/s end to end \
         (incl. final flush); {} batches, mean batch write {} us, max {} us; dropped {}, \
         producer waits {retries}",
        encoded as u64 / n,
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        s.batches,
        s.total_write_micros / s.batches.max(1),
        s.max_write_micros,
        s.dropped,
    );
}

async fn rated_load(dir: &Path, rate: u64, seconds: u64) {
    let store = Store::open(dir).unwrap();
    let (queue, writer) = spawn_visit_log_writer(store, 65_536, Duration::from_secs(1), None);
    let stats = queue.stats().clone();
    let n = rate * seconds;
    let started = Instant::now();
    let per_tick = rate / 1000; // one burst per millisecond
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut i = 0;
    let mut max_depth = 0;
    while i < n {
        ticker.tick().await;
        for _ in 0..per_tick {
            queue.submit(record(i, 1_000_000 / rate));
            i += 1;
        }
        max_depth = max_depth.max(stats.snapshot().queue_depth);
    }
    let offered = started.elapsed();
    drop(queue);
    writer.await.unwrap();
    let s = stats.snapshot();
    println!(
        "rated load: {n} records offered at {rate}/s over {:.2} s: written {}, dropped {}, \
         max queue depth {max_depth}, max batch write {} us",
        offered.as_secs_f64(),
        s.written,
        s.dropped,
        s.max_write_micros
    );
}

fn build(dir: &Path, n: u64, days: u64) {
    let store = Store::open(dir).unwrap();
    let started = Instant::now();
    // What the writer hands sled at this density: one flush interval of a busy
    // school (~64 requests/s). Batches of thousands of sparse records leave sled's
    // nodes fragmented and make reads several times slower.
    let batch_len = env_u64("VISIT_LOG_BENCH_BUILD_BATCH", 64);
    let mut i = 0;
    while i < n {
        let end = (i + batch_len).min(n);
        let batch: Vec<Record> = (i..end).map(|j| record(j, days * DAY / n)).collect();
        store.write_records(&batch).unwrap();
        i = end;
        if i % 1_048_576 == 0 {
            eprintln!("  built {i} in {:.1} s", started.elapsed().as_secs_f64());
        }
    }
    store.db_flush_blocking();
    println!(
        "built {n} records over {days} days in {:.1} s ({:.0} records/s, one thread, direct); \
         peak RSS so far {} MB",
        started.elapsed().as_secs_f64(),
        n as f64 / started.elapsed().as_secs_f64(),
        peak_rss_kb() / 1024
    );
}

/// Peak resident memory of this process, kB (`VmHWM`).
fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

trait FlushBlocking {
    fn db_flush_blocking(&self);
}

impl FlushBlocking for Store {
    fn db_flush_blocking(&self) {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(self.flush())
            .unwrap();
    }
}

fn query_week(dir: &Path, n: u64, days: u64) {
    let (apparent, allocated) = disk_bytes(&dir.join("db"));

    println!(
        "on disk: {apparent} bytes apparent, {allocated} allocated = {:.0} / {:.0} bytes per record",
        apparent as f64 / n as f64,
        allocated as f64 / n as f64
    );
    let week = Query {
        user: Some("pupil0042".into()),
        since: Some(T0 + (days - 7) * DAY),
        until: Some(T0 + days * DAY),
        ..Query::default()
    };
    let started = Instant::now();
    let store = Store::open(dir).unwrap();
    let opened = started.elapsed();
    let started = Instant::now();
    let found = store.query(&week).unwrap();
    let cold = started.elapsed();
    let reported = store.size_on_disk().unwrap();
    println!(
        "Store::size_on_disk: {reported} bytes = {:.0} bytes per record",
        reported as f64 / n as f64
    );
    println!(
        "one user's week among {n}: {} records; reopen {:.1} ms; first query (cold sled cache) {:.1} ms",
        found.len(),
        opened.as_secs_f64() * 1e3,
        cold.as_secs_f64() * 1e3
    );
    let mut times = Vec::new();
    for u in 0..20 {
        let q = Query {
            user: Some(format!("pupil{:04}", (u * 37) % USERS)),
            ..week.clone()
        };
        let started = Instant::now();
        let found = store.query(&q).unwrap();
        times.push((started.elapsed(), found.len()));
    }
    let cold_users: Vec<String> = times
        .iter()
        .map(|(t, _)| format!("{:.1}", t.as_secs_f64() * 1e3))
        .collect();
    println!(
        "  20 other users' weeks (first touch each, ms): {}",
        cold_users.join(" ")
    );
    let started = Instant::now();
    let again = store.query(&week).unwrap();
    println!(
        "  same user's week again (warm): {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(again.len(), found.len());
    let started = Instant::now();
    let blocked = store
        .query(&Query {
            blocked_only: true,
            since: Some(T0 + (days - 1) * DAY),
            until: Some(T0 + days * DAY),
            ..Query::default()
        })
        .unwrap();
    println!(
        "  blocked in the last day: {} records in {:.1} ms",
        blocked.len(),
        started.elapsed().as_secs_f64() * 1e3
    );
    // A time-range scan of every record (no user, host or flag): the last day, twice
    // (the second warm), counted without holding them in memory.
    for pass in ["first", "again"] {
        let started = Instant::now();
        let scanned = store
            .scan(
                &Query {
                    since: Some(T0 + (days - 1) * DAY),
                    until: Some(T0 + days * DAY),
                    ..Query::default()
                },
                |_| true,
            )
            .unwrap();
        let elapsed = started.elapsed();
        println!(
            "  every record of the last day ({pass}): {scanned} records in {:.1} ms = {:.0} records/s",
            elapsed.as_secs_f64() * 1e3,
            scanned as f64 / elapsed.as_secs_f64()
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let root =
        std::env::temp_dir().join(format!("safegate-visit-log-bench-{}", std::process::id()));
    let writer_n = env_u64("VISIT_LOG_BENCH_WRITER_RECORDS", 300_000);
    let n = env_u64("VISIT_LOG_BENCH_RECORDS", 10_000_000);
    let days = 14;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if writer_n > 0 {
        runtime.block_on(writer_throughput(&root.join("writer"), writer_n));
        let _ = std::fs::remove_dir_all(root.join("writer"));
        runtime.block_on(rated_load(&root.join("rated"), 100_000, 3));
        let _ = std::fs::remove_dir_all(root.join("rated"));
    }
    if n > 0 {
        build(&root.join("query"), n, days);
        query_week(&root.join("query"), n, days);
    }
    let _ = std::fs::remove_dir_all(&root);
}
