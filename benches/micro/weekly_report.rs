//! Weekly report benchmark (custom harness, prints figures): how long
//! `safegate_report::gather` takes over one ISO week of N records (default
//! 10,000,000; `WEEKLY_REPORT_BENCH_RECORDS`), and how long rendering the HTML, JSON
//! and CSV files takes.
//!
//! Data: one week (2026-W47, Europe/London) of records spread evenly among 1,000
//! users (pupils in 7 year groups and 10% staff) and 5,000 sites, 5% blocked (a
//! tenth of those circumvention), 3% searches of which one in a thousand matches a
//! safeguarding phrase, a quarter of the sites uncategorised; written with
//! `Store::write_records` in batches of 64 (what the writer hands sled at this density,
//! see the visit-log benchmark), plus a day of records either side that the report
//! must skip. The policy is the shipped `config/policy.toml` (its phrase lists and
//! core hours).
//!
//! `cargo bench -p safegate-benches --bench weekly_report`. The database goes to
//! `$TMPDIR/safegate-weekly-report-bench-<pid>` and is removed at the end; with
//! `WEEKLY_REPORT_BENCH_DIR` it goes there and is kept, and a database already there
//! is reused (to measure the report again without building it again).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::path::Path;
use std::time::Instant;

use safegate_policy::Policy;
use safegate_report::{GatherOptions, IsoWeek, Pseudonymiser};
use safegate_store::{IdentifiedBy, Outcome, Record, SearchTerms, SeenAs, Store};

const USERS: u64 = 1_000;
const HOSTS: u64 = 5_000;
const DAY: u64 = 86_400_000_000;

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn record(i: u64, at: u64) -> Record {
    let r = mix(i);
    let user = r % USERS;
    let staff = user.is_multiple_of(10);
    let host = (r >> 16) % HOSTS;
    let blocked = (r >> 40) % 100 < 5;
    let circumvention = blocked && (r >> 8).is_multiple_of(10);
    let search = (r >> 48) % 100 < 3;
    let flagged = search && (r >> 24).is_multiple_of(1000);
    let categories = if circumvention {
        vec!["circumvention".into()]
    } else if blocked {
        vec!["gambling".into()]
    } else if host.is_multiple_of(4) {
        vec![]
    } else if host % 50 == 1 {
        vec!["social-networking".into()]
    } else {
        vec!["news".into()]
    };
    Record {
        at_unix_micros: at,
        user: Some(if staff {
            format!("staff{user:04}")
        } else {
            format!("pupil{user:04}")
        }),
        role: if staff { "staff" } else { "pupil" }.into(),
        group: (!staff).then(|| format!("year-{}", 7 + user % 7)),
        client: IpAddr::from([10, 1, (user >> 8) as u8, user as u8]),
        identified_by: IdentifiedBy::ProxyAuth,
        method: "GET".into(),
        scheme: "http".into(),
        host: format!("www.site{host}.example.co.uk"),
        port: 80,
        path: Some(format!("/articles/{}/page.html?ref=home", r % 100_000)),
        categories,
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
            terms: if flagged {
                "how to kill myself".into()
            } else {
                format!("volcano eruption pompeii {}", r % 1000)
            },
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

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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

fn build(store: &Store, n: u64, since: u64) {
    let started = Instant::now();
    let batch_len = env_u64("WEEKLY_REPORT_BENCH_BUILD_BATCH", 64);
    // A day before the week, the week, a day after: n records in the week.
    let per_micro = n as f64 / (7 * DAY) as f64;
    let outside = (DAY as f64 * per_micro) as u64;
    let total = n + 2 * outside;
    let start = since - DAY;
    let spacing = (9 * DAY) as f64 / total as f64;
    let mut i = 0;
    while i < total {
        let end = (i + batch_len).min(total);
        let batch: Vec<Record> = (i..end)
            .map(|j| record(j, start + (j as f64 * spacing) as u64))
            .collect();
        store.write_records(&batch).unwrap();
        i = end;
        if i % (1 << 21) < batch_len {
            eprintln!(
                "  built {i} of {total} in {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(store.flush())
        .unwrap();
    println!(
        "built {total} records ({n} in the week) in {:.0} s",
        started.elapsed().as_secs_f64()
    );
}

fn main() {
    let n = env_u64("WEEKLY_REPORT_BENCH_RECORDS", 10_000_000);
    let kept = std::env::var_os("WEEKLY_REPORT_BENCH_DIR").map(std::path::PathBuf::from);
    let dir = kept.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "safegate-weekly-report-bench-{}",
            std::process::id()
        ))
    });
    let reuse = dir.join("db").exists();
    std::fs::create_dir_all(&dir).unwrap();
    let policy_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/policy.toml");
    let policy = Policy::load(&policy_file).unwrap();
    let week = IsoWeek::parse("2026-W47").unwrap();
    let (since, until) = week.range_micros(policy.timezone());
    if reuse {
        println!("reusing the database in {}", dir.display());
    } else {
        let store = Store::open(&dir).unwrap();
        build(&store, n, since);
    }
    let store = Store::open(&dir).unwrap();
    for (label, options) in [
        ("names", GatherOptions::default()),
        (
            "pseudonymised",
            GatherOptions {
                pseudonymiser: Some(Pseudonymiser::with_key([7; 32])),
                generated_at_unix_micros: until,
            },
        ),
    ] {
        let started = Instant::now();
        let report =
            safegate_report::gather(&store, &policy, "Europe/London", week, &options).unwrap();
        let gathered = started.elapsed();
        assert!(
            report.summary.requests.abs_diff(n) <= 2,
            "{} records in the week",
            report.summary.requests
        );
        let out = dir.join(format!("out-{label}"));
        let started = Instant::now();
        let files = safegate_report::write_files(&report, &out).unwrap();
        let rendered = started.elapsed();
        let bytes: u64 = files
            .iter()
            .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
            .sum();
        println!(
            "weekly report ({label}) of {n} records: gathered in {:.1} s ({:.0} records/s), \
             files written in {:.2} s ({} files, {:.1} MB; {} searches, {} flagged, {} people); \
             peak RSS {} MB",
            gathered.as_secs_f64(),
            n as f64 / gathered.as_secs_f64(),
            rendered.as_secs_f64(),
            files.len(),
            bytes as f64 / 1e6,
            report.summary.searches,
            report.summary.flagged_searches,
            report.summary.people,
            peak_rss_kb() / 1024
        );
    }
    drop(store);
    if kept.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
