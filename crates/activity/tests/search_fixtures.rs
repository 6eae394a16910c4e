//! Search-term extraction over real-shaped URLs from `fixtures/search_urls.txt`.

use safegate_activity::search_terms::{ENGINES, extract};

const FIXTURES: &str = include_str!("fixtures/search_urls.txt");

/// Splits `scheme://host/path?query` into the lower-case host and the path and query.
fn split_url(url: &str) -> (String, &str) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let host = authority.split(':').next().unwrap_or(authority);
    (host.to_ascii_lowercase(), path)
}

#[test]
fn every_fixture() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for (n, line) in FIXTURES.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let mut cols = line.split('\t');
        let (Some(url), Some(engine), Some(terms), None) =
            (cols.next(), cols.next(), cols.next(), cols.next())
        else {
            panic!("line {}: want url<TAB>engine<TAB>terms: {line:?}", n + 1);
        };
        let (host, path) = split_url(url);
        let got = extract(&host, path).map(|t| (t.engine, t.terms));
        let want = (engine != "-").then(|| (engine.to_owned(), terms.to_owned()));
        if got != want {
            failures.push(format!(
                "line {}: {url}\n  want {want:?}\n  got  {got:?}",
                n + 1
            ));
        }
        checked += 1;
    }
    assert!(checked >= 50, "only {checked} fixtures");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_engine_has_a_positive_fixture() {
    for engine in ENGINES {
        let needle = format!("\t{}\t", engine.name);
        assert!(
            FIXTURES.lines().any(|l| l.contains(&needle)),
            "no fixture for {}",
            engine.name
        );
    }
    // And the fixtures for each of the engines exist.
    for name in [
        "google",
        "bing",
        "duckduckgo",
        "yahoo",
        "ecosia",
        "startpage",
        "brave",
        "yandex",
        "baidu",
        "youtube",
        "wikipedia",
        "amazon",
        "ebay",
    ] {
        assert!(ENGINES.iter().any(|e| e.name == name), "{name}");
    }
}
