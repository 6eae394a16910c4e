//! Alert-engine cost per record: the shipped policy's alert rules (phrase lists with
//! their exceptions, locked categories, circumvention, repeated blocks) applied by
//! `Evaluator::evaluate` to a realistic mix of records: addresses with paths, 5 %
//! blocked, 10 % searches (some alarming, some benign with alarming words). It is
//! what the alert engine spends on each written record, off the proxy's path.
//!
//! `cargo bench -p safegate-benches --bench alert_rules`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::IpAddr;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use safegate_safeguarding::Evaluator;
use safegate_store::{IdentifiedBy, Outcome, Record, SearchTerms, SeenAs};

const T0: u64 = 1_763_900_000_000_000;
const RECORDS: u64 = 10_000;

const SEARCHES: [&str; 8] = [
    "volcano eruption pompeii",
    "how to kill myself",
    "romeo and juliet suicide scene",
    "self harm lesson plan ks3 pshe",
    "times tables rock stars",
    "sucide methods",
    "killing time before the bus",
    "fractions worksheet year 6",
];

/// Deterministic pseudo-random numbers (splitmix64).
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn record(i: u64) -> Record {
    let r = mix(i);
    let user = r % 200;
    let blocked = (r >> 40) % 100 < 5;
    let search = (r >> 48) % 100 < 10;
    Record {
        at_unix_micros: T0 + i * 10_000,
        user: Some(format!("pupil{user:03}")),
        role: if user.is_multiple_of(10) {
            "staff"
        } else {
            "pupil"
        }
        .into(),
        group: Some(format!("year{}", 1 + user % 6)),
        client: IpAddr::from([10, 1, (user >> 8) as u8, user as u8]),
        identified_by: IdentifiedBy::ProxyAuth,
        method: "GET".into(),
        scheme: "https".into(),
        host: format!("www.site{}.example.co.uk", (r >> 16) % 5_000),
        port: 443,
        path: Some(format!(
            "/articles/{}/learning-about-the-water-cycle.html?ref=home",
            r % 100_000
        )),
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
            terms: SEARCHES[(r % 8) as usize].into(),
        }),
        seen_as: SeenAs::Decrypted,
        user_agent: None,
        failure: None,
        computer: None,
        content: None,
    }
}

fn bench_alert_rules(c: &mut Criterion) {
    let policy_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/policy.toml");
    let policy = safegate_policy::Policy::load(&policy_path).unwrap();
    let records: Vec<Record> = (0..RECORDS).map(record).collect();
    let mut group = c.benchmark_group("alert_rules");
    group.throughput(Throughput::Elements(RECORDS));
    // A fresh evaluator each time, as first written (its phrase automaton is built
    // on the first record: this includes one build).
    group.bench_function("evaluate_10k_records", |bench| {
        bench.iter(|| {
            let mut evaluator = Evaluator::new();
            let mut out = Vec::new();
            for record in &records {
                evaluator.evaluate(&policy, &record.as_ref(), &mut out);
            }
            black_box(out.len())
        });
    });
    // The engine's steady state: one evaluator, its automaton already built.
    let mut evaluator = Evaluator::new();
    group.bench_function("evaluate_10k_records_warm", |bench| {
        bench.iter(|| {
            let mut out = Vec::new();
            for record in &records {
                evaluator.evaluate(&policy, &record.as_ref(), &mut out);
            }
            black_box(out.len())
        });
    });
    group.finish();
}

criterion_group!(benches, bench_alert_rules);
criterion_main!(benches);
