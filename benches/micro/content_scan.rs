//! Content analysis cost per core: `safegate_content::Scan` over a realistic 100 KiB
//! school-news HTML page (tags, attributes, an inline script and style, entities,
//! English-like prose), with 5,000 synthetic weighted phrases (word pairs and triples
//! from a 2,000-word vocabulary that shares a quarter of the page's words, some
//! combinations), and with e2guardian's own
//! weighted lists (about 6,900 entries, when /etc/e2guardian is installed), and with
//! 5,000 real entries (SafeGate's starter lists, then e2guardian's lists up to 5,000).
//! Rows: identity and gzip bodies fed in 16 KiB chunks as the proxy gets them; the
//! time per page is the CPU latency the scan adds to a held 100 KiB page. A corpus
//! row scans 200 short school pages (about 600 bytes each, some with phrases, as in
//! the differential test), one scan each: the fixed cost per page. Baseline row:
//! a plain byte count over the same page (what streaming alone costs).
//!
//! `cargo bench -p safegate-benches --bench content_scan`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::io::Write;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use safegate_content::weighted_list::{parse_text, read_list, read_list_skipping};
use safegate_content::{Coding, Markup, PhraseSet, Scan, ScanLimits};

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A vocabulary of pronounceable words.
fn vocabulary(n: usize) -> Vec<String> {
    const SYLLABLES: [&str; 24] = [
        "ba", "ken", "lo", "mi", "tor", "sa", "ver", "qui", "dan", "el", "ro", "pen", "sta", "gu",
        "fin", "ma", "ho", "ri", "cle", "wen", "po", "nu", "zel", "tha",
    ];
    (0..n as u64)
        .map(|i| {
            let r = mix(i);
            (0..2 + (r % 3))
                .map(|k| SYLLABLES[(mix(r + k) % 24) as usize])
                .collect()
        })
        .collect()
}

fn synthetic_phrases(words: &[String], n: usize) -> String {
    let mut list = String::from("#listcategory: \"synthetic\"\n");
    for i in 0..n as u64 {
        let r = mix(i + 1_000_000);
        let w = |k: u64| &words[(mix(r + k) % words.len() as u64) as usize];
        let weight = (r % 80) as i64 - 20;
        match r % 10 {
            0 => list.push_str(&format!("< {} >,< {} ><{weight}>\n", w(1), w(2))),
            1..=3 => list.push_str(&format!("< {} {} {} ><{weight}>\n", w(1), w(2), w(3))),
            _ => list.push_str(&format!("< {} {} ><{weight}>\n", w(1), w(2))),
        }
    }
    list
}

/// A 100 KiB school-news page over the vocabulary.
fn page(words: &[String]) -> Vec<u8> {
    let mut html = String::from(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>School news</title>\
<style>body{font-family:sans-serif} .nav a{color:#036}</style>\
<script>window.dataLayer=window.dataLayer||[];function gtag(){dataLayer.push(arguments)}</script></head><body>\
<nav class=\"nav\"><a href=\"/\">Home</a> <a href=\"/news\">News</a></nav><main>",
    );
    let mut i = 0u64;
    while html.len() < 100 * 1024 {
        html.push_str("<article class=\"post\"><h2>");
        for k in 0..6 {
            html.push_str(&words[(mix(i * 7 + k) % words.len() as u64) as usize]);
            html.push(' ');
        }
        html.push_str("</h2><p>");
        for k in 0..90 {
            let word = &words[(mix(i * 131 + k) % words.len() as u64) as usize];
            html.push_str(word);
            html.push_str(match k % 17 {
                3 => ", ",
                9 => " &amp; ",
                16 => ". ",
                _ => " ",
            });
            if k % 23 == 5 {
                html.push_str("<a href=\"/page?id=");
                html.push_str(&i.to_string());
                html.push_str("\">more</a> ");
            }
        }
        html.push_str("</p></article>\n");
        i += 1;
    }
    html.push_str("</main></body></html>");
    html.into_bytes()
}

/// SafeGate's four starter lists, as the shipped policy reads them.
fn starter_lists() -> Vec<safegate_content::WeightedEntry> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../blocklists/content");
    ["pornography", "gambling", "self-harm", "extremism"]
        .iter()
        .flat_map(|c| read_list(&dir.join(format!("{c}.txt")), c).unwrap())
        .collect()
}

/// 200 short school pages, a quarter of them with starter-list phrases.
fn small_pages() -> Vec<Vec<u8>> {
    const TEXT: [&str; 8] = [
        "Sports day is on Friday: bring water and a hat.",
        "Year 6 SATs revision club meets in the library after school.",
        "The PTA summer fair raised money for new reading books.",
        "Homework: fractions worksheet, due Monday.",
        "Free porn videos, porn tube, hot milf and live sex cams.",
        "Online casino with casino bonus, free spins and a no deposit bonus.",
        "Suicide prevention: call Samaritans or Childline, you are not alone.",
        "The casino scene in the film was filmed in Monaco.",
    ];
    (0..200)
        .map(|i| {
            format!(
                "<!DOCTYPE html><html><head><title>Page {i}</title><style>p {{ color: #333 }}</style></head>\
<body><nav><a href=\"/\">Home</a></nav><h1>Notice {i}</h1><p>{}</p><p>{}</p><footer>School office</footer></body></html>",
                TEXT[i % 4],
                TEXT[(i * 7) % 8]
            )
            .into_bytes()
        })
        .collect()
}

fn scan(set: &Arc<PhraseSet>, coding: Coding, body: &[u8]) -> i64 {
    let mut scan = Scan::new(
        Arc::clone(set),
        coding,
        Markup::Html,
        None,
        ScanLimits::default(),
    );
    for chunk in body.chunks(16 * 1024) {
        scan.feed(chunk);
    }
    scan.finish();
    scan.finding(|_| true).score
}

fn bench_content_scan(c: &mut Criterion) {
    // Phrases over words 0..2000, the page over words 1500..3500: a quarter of the
    // page's words start phrases, few phrases are whole on it (as on a real page).
    let all = vocabulary(3500);
    let words = &all[..2000];
    let html = page(&all[1500..]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&html).unwrap();
    let gzipped = gz.finish().unwrap();
    let synthetic = Arc::new(
        PhraseSet::build(&parse_text(&synthetic_phrases(words, 5000), "synthetic").unwrap())
            .unwrap(),
    );
    println!(
        "page {} bytes ({} gzip); synthetic set: {} entries, {} patterns; score {}",
        html.len(),
        gzipped.len(),
        synthetic.len(),
        synthetic.patterns(),
        scan(&synthetic, Coding::Identity, &html)
    );
    let mut group = c.benchmark_group("content_scan");
    group.throughput(Throughput::Bytes(html.len() as u64));
    group.bench_function("baseline_byte_count_100k", |b| {
        b.iter(|| {
            black_box(&html)
                .chunks(16 * 1024)
                .map(|c| black_box(c).len())
                .sum::<usize>()
        })
    });
    group.bench_function("html_100k_5000_phrases", |b| {
        b.iter(|| scan(&synthetic, Coding::Identity, black_box(&html)))
    });
    group.bench_function("html_100k_gzip_5000_phrases", |b| {
        b.iter(|| scan(&synthetic, Coding::Gzip, black_box(&gzipped)))
    });
    let e2g = std::path::Path::new("/etc/e2guardian/lists/weightedphraselist");
    if e2g.exists() {
        let (entries, _) = read_list_skipping(e2g, "e2guardian").unwrap();
        let set = Arc::new(PhraseSet::build(&entries).unwrap());
        println!(
            "e2guardian set: {} entries, {} patterns, automaton {} KiB",
            set.len(),
            set.patterns(),
            set.automaton_bytes() / 1024
        );
        group.bench_function("html_100k_e2guardian_lists", |b| {
            b.iter(|| scan(&set, Coding::Identity, black_box(&html)))
        });
        let mut real = starter_lists();
        real.extend(entries.into_iter().take(5000 - real.len()));
        let set = Arc::new(PhraseSet::build(&real).unwrap());
        println!(
            "real 5,000: {} entries, {} patterns, automaton {} KiB",
            set.len(),
            set.patterns(),
            set.automaton_bytes() / 1024
        );
        group.bench_function("html_100k_real_5000_phrases", |b| {
            b.iter(|| scan(&set, Coding::Identity, black_box(&html)))
        });
    }
    println!(
        "synthetic set: automaton {} KiB",
        synthetic.automaton_bytes() / 1024
    );
    let starter = Arc::new(PhraseSet::build(&starter_lists()).unwrap());
    let corpus = small_pages();
    let corpus_bytes: usize = corpus.iter().map(Vec::len).sum();
    group.throughput(Throughput::Bytes(corpus_bytes as u64));
    group.bench_function("corpus_200_small_pages_starter_lists", |b| {
        b.iter(|| {
            corpus
                .iter()
                .map(|page| scan(&starter, Coding::Identity, black_box(page)))
                .sum::<i64>()
        })
    });
    group.finish();
}

criterion_group!(benches, bench_content_scan);
criterion_main!(benches);
