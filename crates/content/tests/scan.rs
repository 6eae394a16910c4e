//! The streaming scanner end to end on real-shaped bodies: phrases and weights,
//! chunking, every content coding and charset, and bad input (bombs, endless bodies,
//! invalid UTF-8, a huge line, a page cut mid-tag) in bounded memory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::sync::Arc;

use safegate_content::weighted_list::parse_text;
use safegate_content::{Coding, Markup, PhraseSet, Scan, ScanLimits, Stopped, content_type};

const LIST: &str = "\
#listcategory: \"gambling\"
< casino ><40>
< online betting ><60>
< poker >,< odds ><50>
< gambling addiction ><-60>
#listcategory: \"self-harm\"
< kill myself ><120>
<suicid><30>
";

fn set() -> Arc<PhraseSet> {
    Arc::new(PhraseSet::build(&parse_text(LIST, "default").unwrap()).unwrap())
}

fn scan_chunks(
    coding: Coding,
    content_type_value: &str,
    chunks: &[&[u8]],
    limits: ScanLimits,
) -> Scan {
    let (markup, charset) = content_type(Some(content_type_value)).unwrap();
    let mut scan = Scan::new(set(), coding, markup, charset, limits);
    for chunk in chunks {
        scan.feed(chunk);
    }
    scan.finish();
    scan
}

fn score(coding: Coding, ct: &str, body: &[u8]) -> i64 {
    scan_chunks(coding, ct, &[body], ScanLimits::default())
        .finding(|_| true)
        .score
}

const PAGE: &str = "<html><body><h1>Best CASINO bonuses</h1><p>Online <b>betting</b> &amp; poker; see the odds. C4sino!</p><script>var gambling_addiction = 1</script></body></html>";

#[test]
fn weights_add_up_once_per_phrase_with_combinations_and_context() {
    let scan = scan_chunks(
        Coding::Identity,
        "text/html",
        &[PAGE.as_bytes()],
        ScanLimits::default(),
    );
    let finding = scan.finding(|_| true);
    assert_eq!(finding.score, 40 + 60 + 50, "{finding:?}");
    assert_eq!(finding.categories, vec![("gambling".to_owned(), 150)]);
    assert_eq!(finding.phrases[0], ("< online betting >".to_owned(), 60));
    assert_eq!(finding.phrases.len(), 3);
    let context = format!("{PAGE}<p>Help with gambling addiction</p>");
    assert_eq!(score(Coding::Identity, "text/html", context.as_bytes()), 90);
    // Word boundaries: "casinos" is not "< casino >"; "<suicid>" matches inside words.
    assert_eq!(score(Coding::Identity, "text/plain", b"casinos"), 0);
    assert_eq!(score(Coding::Identity, "text/plain", b"SUICIDAL"), 30);
    assert_eq!(score(Coding::Identity, "text/plain", b"k1ll   mys3lf"), 120);
}

#[test]
fn only_the_counted_categories_count() {
    let body = b"casino. I want to kill myself";
    let scan = scan_chunks(
        Coding::Identity,
        "text/plain",
        &[body],
        ScanLimits::default(),
    );
    let set = set();
    let self_harm = set.category("self-harm").unwrap();
    assert_eq!(scan.finding(|c| c == self_harm).score, 120);
    assert_eq!(scan.finding(|_| true).score, 160);
}

#[test]
fn every_chunk_boundary_scores_the_same() {
    let bytes = PAGE.as_bytes();
    for split in 0..bytes.len() {
        let (a, b) = bytes.split_at(split);
        let scan = scan_chunks(
            Coding::Identity,
            "text/html",
            &[a, b],
            ScanLimits::default(),
        );
        assert_eq!(scan.finding(|_| true).score, 150, "split at {split}");
    }
    let single: Vec<&[u8]> = bytes.chunks(1).collect();
    let scan = scan_chunks(
        Coding::Identity,
        "text/html",
        &single,
        ScanLimits::default(),
    );
    assert_eq!(scan.finding(|_| true).score, 150);
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        w.write_all(data).unwrap();
    }
    out
}

#[test]
fn compressed_bodies_are_decoded_in_any_chunking() {
    let page = PAGE.as_bytes();
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    zlib.write_all(page).unwrap();
    let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    raw.write_all(page).unwrap();
    let bodies = [
        (Coding::Gzip, gzip(page)),
        (Coding::Deflate, zlib.finish().unwrap()),
        (Coding::Deflate, raw.finish().unwrap()),
        (Coding::Brotli, brotli(page)),
        (Coding::Zstd, zstd::encode_all(page, 3).unwrap()),
    ];
    for (coding, body) in bodies {
        for size in [1, 7, body.len()] {
            let chunks: Vec<&[u8]> = body.chunks(size).collect();
            let scan = scan_chunks(coding, "text/html", &chunks, ScanLimits::default());
            assert_eq!(
                scan.finding(|_| true).score,
                150,
                "{coding:?} in chunks of {size}"
            );
            assert_eq!(scan.stopped(), None);
        }
    }
}

#[test]
fn charsets_windows_1252_and_utf16_with_a_bom() {
    let list = "<caf\u{e9} casino><30>\n";
    let set = Arc::new(PhraseSet::build(&parse_text(list, "x").unwrap()).unwrap());
    let run = |ct: &str, body: &[u8]| {
        let (markup, charset) = content_type(Some(ct)).unwrap();
        let mut scan = Scan::new(
            Arc::clone(&set),
            Coding::Identity,
            markup,
            charset,
            ScanLimits::default(),
        );
        for b in body.chunks(3) {
            scan.feed(b);
        }
        scan.finish();
        scan.finding(|_| true).score
    };
    assert_eq!(
        run("text/html; charset=windows-1252", b"<p>Caf\xe9 Casino</p>"),
        30
    );
    assert_eq!(run("text/html; charset=ISO-8859-1", b"CAF\xc9 casino"), 30);
    assert_eq!(run("text/html", "café casino".as_bytes()), 30);
    // Accents do not matter either way.
    assert_eq!(run("text/plain", b"cafe casino"), 30);
    let mut le = vec![0xFF, 0xFE];
    let mut be = vec![0xFE, 0xFF];
    for unit in "<b>Café</b> casino".encode_utf16() {
        le.extend(unit.to_le_bytes());
        be.extend(unit.to_be_bytes());
    }
    assert_eq!(run("text/html", &le), 30);
    assert_eq!(run("text/html; charset=utf-8", &be), 30);
}

#[test]
fn other_types_and_codings_are_not_scanned() {
    assert!(content_type(Some("image/png")).is_none());
    assert!(content_type(Some("application/javascript")).is_none());
    assert!(content_type(None).is_none());
    assert_eq!(
        content_type(Some("application/ld+json")).unwrap().0,
        Markup::Json
    );
    assert!(Coding::from_header(Some("gzip, br")).is_none());
    assert_eq!(Coding::from_header(Some(" GZIP ")), Some(Coding::Gzip));
}

#[test]
fn a_decompression_bomb_stops_at_the_limit() {
    // 64 MiB of zeros in about 64 KiB of gzip, then a phrase the scan never reaches.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let zeros = vec![b' '; 1 << 20];
    e.write_all(b"casino ").unwrap();
    for _ in 0..64 {
        e.write_all(&zeros).unwrap();
    }
    e.write_all(b" online betting").unwrap();
    let bomb = e.finish().unwrap();
    assert!(bomb.len() < 1 << 20);
    let limits = ScanLimits {
        max_decoded: 4 << 20,
    };
    let chunks: Vec<&[u8]> = bomb.chunks(16 * 1024).collect();
    let scan = scan_chunks(Coding::Gzip, "text/html", &chunks, limits);
    assert_eq!(scan.stopped(), Some(Stopped::DecodedLimit));
    assert_eq!(scan.decoded_bytes(), 4 << 20);
    assert_eq!(scan.finding(|_| true).score, 40);
}

#[test]
fn an_endless_body_is_scanned_up_to_the_limit_in_constant_memory() {
    let limits = ScanLimits {
        max_decoded: 8 << 20,
    };
    let (markup, charset) = content_type(Some("text/html")).unwrap();
    let mut scan = Scan::new(set(), Coding::Identity, markup, charset, limits);
    let chunk = "<p>school news and homework </p>".repeat(2048);
    for _ in 0..1000 {
        // 64 MiB fed; the scan stops after 8 MiB and ignores the rest.
        scan.feed(chunk.as_bytes());
    }
    scan.finish();
    assert_eq!(scan.stopped(), Some(Stopped::DecodedLimit));
    assert_eq!(scan.finding(|_| true).score, 0);
}

#[test]
fn invalid_utf8_a_huge_line_and_a_page_cut_mid_tag() {
    let mut body = b"casino \xff\xfe\xc3 \xe2\x82 online bett\xc3ing\xed\xa0\x80 ".to_vec();
    assert_eq!(
        score(Coding::Identity, "text/html; charset=utf-8", &body),
        40
    );
    body.clear();
    // A 10 MB line with no break at all, then a phrase.
    body.extend(std::iter::repeat_n(b'a', 10_000_000));
    body.extend(b" casino");
    assert_eq!(score(Coding::Identity, "text/plain", &body), 40);
    assert_eq!(
        score(Coding::Identity, "text/html", b"casino <a href=\"x"),
        40
    );
    assert_eq!(
        score(
            Coding::Identity,
            "text/html",
            b"casino <script>online betting"
        ),
        40
    );
    assert_eq!(score(Coding::Identity, "text/html", b"casino &am"), 40);
    // A corrupt compressed body stops the scan, keeping what it found.
    let mut gz = gzip(b"casino online betting");
    gz.truncate(gz.len() / 2);
    gz.extend(b"garbage garbage garbage");
    let scan = scan_chunks(Coding::Gzip, "text/html", &[&gz], ScanLimits::default());
    assert!(scan.finding(|_| true).score <= 100);
}
