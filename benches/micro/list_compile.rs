//! Compiling a 1-million-domain list file into an index, as a policy reload does.
//!
//! Data: a generated file of 1,000,000 distinct domains (one a line, as a `domains`
//! feed is), written to a temp dir once. Measured (criterion, 10 samples each):
//!
//! * `list_compile/streamed_1m`: `read_streaming` handing each domain's fingerprint
//!   to `IndexBuilder::stage`, then `add_staged` and `build` (the policy compile's path:
//!   8 bytes a domain while reading);
//! * `list_compile/kept_1m`: `read` keeping every `Host`, then `add` and `build` (what
//!   the compile did before, and what `safegate lists import` still does).
//!
//! Run with `cargo bench -p safegate-benches --bench list_compile`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use safegate_lists::{IndexBuilder, ListFormat, StagedDomains, read, read_streaming};

const DOMAINS: u64 = 1_000_000;

/// Real-shaped distinct names: a pseudo-random label, the index in hex, a common TLD.
fn write_list(path: &Path) {
    let tlds = ["com", "net", "org", "co.uk", "de", "info", "xyz"];
    let mut text = String::with_capacity(DOMAINS as usize * 24);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..DOMAINS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = 5 + (x % 10) as usize;
        let label: String = (0..len)
            .map(|k| char::from(b'a' + ((x >> (k * 5)) % 26) as u8))
            .collect();
        let _ = writeln!(
            text,
            "{label}{i:x}.{}",
            tlds[(x >> 60) as usize % tlds.len()]
        );
    }
    std::fs::write(path, text).unwrap();
}

fn bench_compile(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("feed.txt");
    write_list(&path);
    let mut group = c.benchmark_group("list_compile");
    group.sample_size(10);
    group.bench_function("streamed_1m", |bench| {
        bench.iter(|| {
            let mut b = IndexBuilder::new();
            let mut staged = StagedDomains::default();
            let entries = read_streaming(ListFormat::Domains, &path, &mut |h| {
                b.stage(&mut staged, h);
            })
            .unwrap();
            assert_eq!(entries.len() as u64, DOMAINS);
            b.add_staged(0, staged);
            black_box(b.build().unwrap())
        })
    });
    group.bench_function("kept_1m", |bench| {
        bench.iter(|| {
            let entries = read(ListFormat::Domains, &path).unwrap();
            let mut b = IndexBuilder::new();
            b.add(0, &entries);
            drop(entries);
            black_box(b.build().unwrap())
        })
    });
    group.finish();
}

criterion_group!(benches, bench_compile);
criterion_main!(benches);
