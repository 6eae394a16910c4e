//! Benchmarks of `safegate-lists`, the per-request list matcher.
//!
//! Data: (1) every UT1 category in `../shared/blocklists/ut1` plus the four Sinfonietta
//! hosts files (~606k entries, one list id per file), and (2) a synthetic list of
//! 5 million random domains. Measured:
//!
//! * `decision/*`: `Index::matches` on a pre-normalised target, over a realistic mix of
//!   hosts (90 % misses: popular benign hosts and their subdomains that a school sees
//!   all day; 10 % hits: subdomains of listed domains), against a baseline in the same
//!   process: a `HashMap<String, Vec<ListId>>` probed by label suffix (the obvious
//!   implementation);
//! * `normalise_and_decide`: `RequestTarget::from_parts` + `matches` (what the proxy pays
//!   for a raw `Host:` header);
//! * `build_1m`: compiling 1 million domains (hashing, sorting, placing);
//! * printed once: read/build times, bytes per entry, and p50/p99/p99.9 of one million
//!   individually timed decisions (criterion reports means, the brief asks for tails).
//!
//! Run with `cargo bench -p safegate-benches --bench lists_index`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use safegate_lists::{Entries, Host, Index, IndexBuilder, ListFormat, ListId, RequestTarget, read};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/blocklists");

/// Popular benign hosts of a school day (all misses against the blocklists).
const BENIGN: &[&str] = &[
    "www.google.com",
    "clients4.google.com",
    "fonts.gstatic.com",
    "www.gstatic.com",
    "lh3.googleusercontent.com",
    "docs.google.com",
    "classroom.google.com",
    "accounts.google.com",
    "www.bbc.co.uk",
    "static.files.bbci.co.uk",
    "ichef.bbci.co.uk",
    "en.wikipedia.org",
    "upload.wikimedia.org",
    "login.microsoftonline.com",
    "outlook.office365.com",
    "teams.microsoft.com",
    "statics.teams.cdn.office.net",
    "www.office.com",
    "res.cdn.office.net",
    "graph.microsoft.com",
    "www.youtube.com",
    "i.ytimg.com",
    "rr3---sn-aigl6nsk.googlevideo.com",
    "www.gov.uk",
    "assets.publishing.service.gov.uk",
    "www.nationalgeographic.com",
    "kids.nationalgeographic.com",
    "www.purplemash.com",
    "www.timestablesrockstars.co.uk",
    "play.ttrockstars.com",
    "www.educationcity.com",
    "www.bbc.com",
    "cdn.jsdelivr.net",
    "ajax.googleapis.com",
    "code.jquery.com",
    "www.scratch.mit.edu",
    "cdn2.scratch.mit.edu",
    "api.scratch.mit.edu",
    "www.twinkl.co.uk",
    "images.twinkl.co.uk",
    "www.oxfordowl.co.uk",
    "ocsp.digicert.com",
    "ctldl.windowsupdate.com",
    "settings-win.data.microsoft.com",
    "www.apple.com",
    "gateway.icloud.com",
    "www.amazon.co.uk",
    "m.media-amazon.com",
    "www.met.police.uk",
    "www.nhs.uk",
    "www.ncsc.gov.uk",
    "a.b.c.deep.subdomain.example.ac.uk",
    "www.duolingo.com",
    "d35aaqx5ub95lt.cloudfront.net",
];

fn root() -> PathBuf {
    PathBuf::from(ROOT)
}

/// Every UT1 category folder and Sinfonietta hosts file, in a stable order.
fn real_lists() -> Vec<Entries> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root().join("ut1"))
        .expect("../shared/blocklists/ut1")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let mut lists: Vec<Entries> = dirs
        .iter()
        .map(|d| read(ListFormat::Ut1, d).unwrap())
        .collect();
    for f in [
        "pornography-hosts",
        "gambling-hosts",
        "social-hosts",
        "snuff-hosts",
    ] {
        lists.push(read(ListFormat::Hosts, &root().join("sinfonietta").join(f)).unwrap());
    }
    lists
}

/// A deterministic pseudo-random generator (SplitMix64).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const TLDS: &[&str] = &[
    "com", "net", "org", "co.uk", "de", "fr", "info", "xyz", "ru", "io",
];

fn synthetic_domains(n: usize, seed: u64) -> Vec<Host> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|_| {
            let len = 5 + rng.below(12);
            let name: String = (0..len)
                .map(|_| (b'a' + rng.below(26) as u8) as char)
                .collect();
            let tld = TLDS[rng.below(TLDS.len())];
            let host = if rng.below(4) == 0 {
                format!("www{}.{name}.{tld}", rng.below(10))
            } else {
                format!("{name}.{tld}")
            };
            Host::parse(&host).unwrap()
        })
        .collect()
}

/// 90 % benign misses (with and without extra subdomains), 10 % hits on subdomains of
/// listed domains.
fn host_mix(listed: &[&Host], count: usize) -> Vec<RequestTarget> {
    let mut rng = Rng(42);
    (0..count)
        .map(|_| {
            let host = if rng.below(10) == 0 {
                let h = listed[rng.below(listed.len())];
                if h.is_ip() {
                    h.to_string()
                } else {
                    format!("www.{h}")
                }
            } else {
                let b = BENIGN[rng.below(BENIGN.len())];
                if rng.below(3) == 0 {
                    format!("cdn{}.{b}", rng.below(100))
                } else {
                    b.to_string()
                }
            };
            RequestTarget::from_parts(&host, Some("/")).unwrap()
        })
        .collect()
}

/// The obvious implementation, as a baseline: a `HashMap<String, Vec<ListId>>`.
struct Naive(HashMap<String, Vec<ListId>>);
impl Naive {
    fn new<'a>(lists: impl Iterator<Item = (ListId, &'a Host)>) -> Naive {
        let mut map: HashMap<String, Vec<ListId>> = HashMap::new();
        for (id, h) in lists {
            map.entry(h.as_str().to_string()).or_default().push(id);
        }
        Naive(map)
    }
    fn matches(&self, host: &str) -> Vec<ListId> {
        let mut out = Vec::new();
        let mut h = host;
        loop {
            if let Some(v) = self.0.get(h) {
                out.extend(v);
            }
            match h.find('.') {
                Some(i) => h = &h[i + 1..],
                None => return out,
            }
        }
    }
    fn memory_bytes(&self) -> usize {
        // hashbrown: key (24) + value (24) + 1 control byte per bucket; plus heap strings.
        self.0.capacity() * 49
            + self
                .0
                .iter()
                .map(|(k, v)| k.len() + v.capacity() * 2)
                .sum::<usize>()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

/// Times `n` individual decisions and prints the latency distribution.
fn print_tails(label: &str, index: &Index, targets: &[RequestTarget], n: usize) {
    // Warm up.
    for t in targets.iter().take(10_000) {
        black_box(index.matches(t));
    }
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let t = &targets[i % targets.len()];
        let start = Instant::now();
        black_box(index.matches(black_box(t)));
        times.push(start.elapsed());
    }
    times.sort_unstable();
    // Cost of the timer itself, to read the figures net of it.
    let mut empty = Vec::with_capacity(100_000);
    for _ in 0..100_000 {
        let start = Instant::now();
        empty.push(black_box(start).elapsed());
    }
    empty.sort_unstable();
    println!(
        "{label}: {n} decisions: p50 {:?}, p90 {:?}, p99 {:?}, p99.9 {:?}, max {:?} (timer overhead p50 {:?})",
        percentile(&times, 0.5),
        percentile(&times, 0.9),
        percentile(&times, 0.99),
        percentile(&times, 0.999),
        times[times.len() - 1],
        percentile(&empty, 0.5),
    );
}

fn bench_lists(c: &mut Criterion) {
    // ---- Real lists --------------------------------------------------------------
    let start = Instant::now();
    let lists = real_lists();
    let read_time = start.elapsed();
    let total: usize = lists.iter().map(Entries::len).sum();
    let start = Instant::now();
    let mut b = IndexBuilder::new();
    for (i, e) in lists.iter().enumerate() {
        b.add(i as ListId, e);
    }
    let real = b.build().unwrap();
    let build_time = start.elapsed();
    let naive = Naive::new(
        lists
            .iter()
            .enumerate()
            .flat_map(|(i, e)| e.domains.iter().map(move |h| (i as ListId, h))),
    );
    println!(
        "real lists: {} files, {total} entries read+normalised in {read_time:?}, index built in {build_time:?}; \
         {} bytes = {:.1} bytes/entry (baseline HashMap<String, Vec<ListId>>: {:.1} bytes/entry)",
        lists.len(),
        real.memory_bytes(),
        real.memory_bytes() as f64 / real.len() as f64,
        naive.memory_bytes() as f64 / naive.0.len() as f64,
    );
    let listed: Vec<&Host> = lists.iter().flat_map(|e| &e.domains).step_by(31).collect();
    let targets = host_mix(&listed, 100_000);
    let hits = targets
        .iter()
        .filter(|t| !real.matches(t).is_empty())
        .count();
    println!("host mix: {} targets, {hits} hits", targets.len());
    print_tails("real lists (606k)", &real, &targets, 1_000_000);

    let mut group = c.benchmark_group("decision");
    let mut i = 0;
    group.bench_function("real_606k/index", |bench| {
        bench.iter(|| {
            i = (i + 1) % targets.len();
            black_box(real.matches(black_box(&targets[i])))
        })
    });
    let mut i = 0;
    group.bench_function("real_606k/baseline_hashmap", |bench| {
        bench.iter(|| {
            i = (i + 1) % targets.len();
            black_box(naive.matches(black_box(targets[i].host.as_str())))
        })
    });
    group.finish();
    drop(naive);

    let raw: Vec<String> = targets
        .iter()
        .take(10_000)
        .map(|t| t.host.as_str().to_ascii_uppercase() + ":443")
        .collect();
    let mut i = 0;
    c.bench_function("normalise_and_decide/real_606k", |bench| {
        bench.iter(|| {
            i = (i + 1) % raw.len();
            let t = RequestTarget::from_parts(black_box(&raw[i]), Some("/index.html?q=1")).unwrap();
            black_box(real.matches(&t))
        })
    });
    drop(real);

    // ---- Synthetic 5M ------------------------------------------------------------
    let domains = synthetic_domains(5_000_000, 7);
    let start = Instant::now();
    let mut b = IndexBuilder::new();
    for (i, h) in domains.iter().enumerate() {
        b.add_domain((i % 4) as ListId, h);
    }
    let big = b.build().unwrap();
    let build_5m = start.elapsed();
    println!(
        "synthetic 5M: built in {build_5m:?}; {} entries, {} bytes = {:.1} bytes/entry",
        big.len(),
        big.memory_bytes(),
        big.memory_bytes() as f64 / big.len() as f64
    );
    let listed: Vec<&Host> = domains.iter().step_by(997).collect();
    let targets = host_mix(&listed, 100_000);
    print_tails("synthetic 5M", &big, &targets, 1_000_000);
    let naive = Naive::new(
        domains
            .iter()
            .enumerate()
            .map(|(i, h)| ((i % 4) as ListId, h)),
    );
    println!(
        "synthetic 5M baseline HashMap<String, Vec<ListId>>: {:.1} bytes/entry",
        naive.memory_bytes() as f64 / naive.0.len() as f64
    );
    let mut group = c.benchmark_group("decision");
    let mut i = 0;
    group.bench_function("synthetic_5m/index", |bench| {
        bench.iter(|| {
            i = (i + 1) % targets.len();
            black_box(big.matches(black_box(&targets[i])))
        })
    });
    let mut i = 0;
    group.bench_function("synthetic_5m/baseline_hashmap", |bench| {
        bench.iter(|| {
            i = (i + 1) % targets.len();
            black_box(naive.matches(black_box(targets[i].host.as_str())))
        })
    });
    group.finish();
    drop(naive);
    drop(big);

    // ---- Build 1M ----------------------------------------------------------------
    let million: Vec<Host> = domains.into_iter().take(1_000_000).collect();
    let start = Instant::now();
    let mut b = IndexBuilder::new();
    for h in &million {
        b.add_domain(0, h);
    }
    black_box(b.build().unwrap());
    println!("synthetic 1M: built in {:?} (single run)", start.elapsed());
    let mut group = c.benchmark_group("build");
    group.sample_size(10);
    group.bench_function("build_1m", |bench| {
        bench.iter_batched(
            || (),
            |()| {
                let mut b = IndexBuilder::new();
                for h in &million {
                    b.add_domain(0, h);
                }
                b.build().unwrap()
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_lists);
criterion_main!(benches);
