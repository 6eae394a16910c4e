//! Tests against the real UT1 and Sinfonietta lists in `../shared/blocklists` (outside
//! the repository; CI checks it out beside the project). Each assertion is checked
//! against a naive oracle (a `HashSet` of names and a linear scan), not against the
//! index's own logic.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

use safegate_lists::{
    Entries, Host, Index, IndexBuilder, ListFormat, ListId, RequestTarget, Ut1Options, read,
    read_ut1,
};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/blocklists");

fn root() -> PathBuf {
    let root = PathBuf::from(ROOT);
    assert!(
        root.join("ut1").is_dir(),
        "the real lists are expected at {} (../shared/blocklists beside the checkout)",
        root.display()
    );
    root
}

fn ut1(name: &str) -> Entries {
    let path = root().join("ut1").join(name);
    read(ListFormat::Ut1, &path).unwrap_or_else(|e| panic!("{e}"))
}

fn hosts(name: &str) -> Entries {
    let path = root().join("sinfonietta").join(name);
    read(ListFormat::Hosts, &path).unwrap_or_else(|e| panic!("{e}"))
}

/// Every UT1 category folder (real folders only; links are tested separately).
fn ut1_categories() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("ut1"))
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

const HOSTS_FILES: &[&str] = &[
    "pornography-hosts",
    "gambling-hosts",
    "social-hosts",
    "snuff-hosts",
];

fn build(lists: &[(ListId, &Entries)]) -> Index {
    let mut b = IndexBuilder::new();
    for (id, e) in lists {
        b.add(*id, e);
    }
    b.build().unwrap_or_else(|e| panic!("{e}"))
}

fn host_target(name: &str) -> RequestTarget {
    RequestTarget::from_parts(name, None).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn url_target(url: &str) -> RequestTarget {
    RequestTarget::parse_url(url).unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// Naive oracle: is `host` or one of its parent domains in `names`?
fn listed(names: &HashSet<&str>, host: &str) -> bool {
    let mut h = host;
    loop {
        if names.contains(h) {
            return true;
        }
        match h.find('.') {
            Some(i) => h = &h[i + 1..],
            None => return false,
        }
    }
}

fn sample<T>(items: &[T]) -> impl Iterator<Item = &T> {
    let last = items.len().saturating_sub(1);
    items
        .iter()
        .enumerate()
        .filter(move |(i, _)| i % 97 == 0 || *i == last)
        .map(|(_, x)| x)
}

fn check_domain_list(label: &str, entries: &Entries) -> usize {
    assert!(!entries.domains.is_empty(), "{label}: no domains read");
    let lines = entries.domains.len() + entries.skipped.len();
    assert!(
        entries.skipped.len() * 200 < lines,
        "{label}: too many skipped lines ({} of {lines}): {:?}",
        entries.skipped.len(),
        entries.skipped.iter().take(5).collect::<Vec<_>>()
    );
    let index = build(&[(1, entries)]);
    let names: HashSet<&str> = entries.domains.iter().map(Host::as_str).collect();
    let mut checked = 0;
    for host in sample(&entries.domains) {
        let d = host.as_str();
        assert!(index.matches(&host_target(d)).contains(1), "{label}: {d}");
        let shouted = format!("{}.", d.to_ascii_uppercase());
        assert!(
            index.matches(&host_target(&shouted)).contains(1),
            "{label}: {shouted}"
        );
        assert!(
            index
                .matches(&url_target(&format!("http://{shouted}:8080/any/path?q=1")))
                .contains(1)
        );
        if host.is_ip() {
            continue;
        }
        let sub = format!("x7q.{d}");
        assert!(
            index.matches(&host_target(&sub)).contains(1),
            "{label}: {sub}"
        );
        let lookalike = format!("x{d}");
        if !listed(&names, &lookalike) {
            assert!(
                index.matches(&host_target(&lookalike)).is_empty(),
                "{label}: {lookalike} must not match"
            );
        }
        let suffixed = format!("{d}x");
        if !listed(&names, &suffixed) {
            assert!(
                index.matches(&host_target(&suffixed)).is_empty(),
                "{label}: {suffixed} must not match"
            );
        }
        checked += 1;
    }
    checked
}

#[test]
fn every_ut1_domain_list_and_hosts_file_matches_its_own_entries() {
    let mut lists = 0;
    let mut checked = 0;
    for name in ut1_categories() {
        let entries = ut1(&name);
        if entries.domains.is_empty() {
            continue;
        }
        checked += check_domain_list(&format!("ut1/{name}"), &entries);
        lists += 1;
    }
    for name in HOSTS_FILES {
        checked += check_domain_list(&format!("sinfonietta/{name}"), &hosts(name));
        lists += 1;
    }
    assert!(lists >= 40, "only {lists} lists with domains");
    assert!(checked > 5000, "only {checked} domains checked");
}

#[test]
fn ut1_links_resolve_to_their_target() {
    for (link, target) in [
        ("porn", "adult"),
        ("drugs", "drogue"),
        ("proxy", "redirector"),
        ("ads", "publicite"),
    ] {
        let a = ut1(link);
        let b = ut1(target);
        assert!(!a.is_empty(), "{link}");
        assert_eq!(a.len(), b.len(), "{link} -> {target}");
        assert_eq!(a.domains, b.domains);
        assert_eq!(a.urls, b.urls);
    }
    let err = read(ListFormat::Ut1, &root().join("ut1/global_usage"));
    assert!(err.is_err(), "a big text file is not a category");
    let err = read(ListFormat::Ut1, &root().join("ut1/no-such-category"));
    assert!(err.is_err_and(|e| e.to_string().contains("no-such-category")));
}

/// Categories a school blocks for pupils, by list id.
const BLOCKED_UT1: &[&str] = &[
    "adult",
    "mixed_adult",
    "lingerie",
    "gambling",
    "arjel",
    "social_networks",
    "agressif",
    "dangerous_material",
    "sect",
    "vpn",
    "redirector",
    "doh",
    "residential-proxies",
    "dating",
    "chat",
    "hacking",
    "cryptojacking",
    "phishing",
    "malware",
    "warez",
];

#[test]
fn benign_hosts_do_not_match_blocked_lists() {
    let mut blocked: Vec<Entries> = BLOCKED_UT1.iter().map(|n| ut1(n)).collect();
    blocked.extend(HOSTS_FILES.iter().map(|n| hosts(n)));
    let with_ids: Vec<(ListId, &Entries)> = blocked
        .iter()
        .enumerate()
        .map(|(i, e)| (i as ListId, e))
        .collect();
    let index = build(&with_ids);

    // Oracle: names, whole-host URL entries, expressions applied one by one.
    let mut names: HashSet<&str> = HashSet::new();
    for e in &blocked {
        names.extend(e.domains.iter().map(Host::as_str));
        names.extend(
            e.urls
                .iter()
                .filter(|(_, p)| p == "/")
                .map(|(h, _)| h.as_str()),
        );
    }
    let expressions: Vec<regex::bytes::Regex> = blocked
        .iter()
        .flat_map(|e| &e.expressions)
        .map(|x| {
            regex::bytes::RegexBuilder::new(x)
                .case_insensitive(true)
                .unicode(false)
                .build()
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    assert!(!expressions.is_empty());

    let mut clean = 0;
    let mut flagged = 0;
    for benign in ["press", "bank", "cooking", "translation"] {
        for host in ut1(benign).domains {
            let h = host.as_str();
            let expected =
                listed(&names, h) || expressions.iter().any(|r| r.is_match(h.as_bytes()));
            let got = index.matches(&host_target(h));
            assert_eq!(!got.is_empty(), expected, "{benign}: {h} matched {got:?}");
            if expected {
                flagged += 1;
            } else {
                clean += 1;
            }
        }
    }
    assert!(clean > 10_000, "only {clean} benign hosts checked");
    // Overlap between benign and blocked categories exists but is rare.
    assert!(
        flagged * 50 < clean,
        "{flagged} benign hosts are listed as blocked"
    );
}

/// Percent-encodes the first unreserved letter of `path` (`/porn` → `/%70orn`).
fn encode_first_letter(path: &str) -> Option<String> {
    let i = path.find(|c: char| c.is_ascii_alphabetic())?;
    let b = path.as_bytes()[i];
    Some(format!("{}%{:02x}{}", &path[..i], b, &path[i + 1..]))
}

#[test]
fn ut1_url_entries_match_on_segment_boundaries() {
    let mut checked = 0;
    for name in ut1_categories() {
        let entries = ut1(&name);
        if entries.urls.is_empty() {
            continue;
        }
        let index = build(&[(2, &entries)]);
        let expressions: Vec<regex::bytes::Regex> = entries
            .expressions
            .iter()
            .map(|x| {
                regex::bytes::RegexBuilder::new(x)
                    .case_insensitive(true)
                    .unicode(false)
                    .build()
                    .unwrap_or_else(|e| panic!("{e}"))
            })
            .collect();
        let domain_names: HashSet<&str> = entries.domains.iter().map(Host::as_str).collect();
        for (i, (host, path)) in entries.urls.iter().enumerate() {
            if i % 7 != 0 && i + 1 != entries.urls.len() {
                continue;
            }
            let h = host.as_str();
            let hit = |url: String| {
                assert!(
                    index.matches(&url_target(&url)).contains(2),
                    "ut1/{name}: {url} should match {h}{path}"
                );
            };
            hit(format!("{h}{path}"));
            if !host.is_ip() {
                hit(format!("http://www.{h}{path}"));
            }
            hit(format!(
                "{}{}",
                h.to_ascii_uppercase(),
                path.to_ascii_uppercase()
            ));
            if !path.contains('?') {
                let sep = if path.ends_with('/') { "" } else { "/" };
                hit(format!("{h}{path}{sep}extra/segment?x=1"));
                hit(format!("{h}{path}?x=1"));
            }
            if let Some(encoded) = encode_first_letter(path) {
                hit(format!("{h}{encoded}"));
            }
            // Cut mid-segment: must not match unless another entry of this list is a
            // raw prefix of the cut path (naive oracle, stricter than the index).
            let trimmed = path.trim_end_matches('/');
            let last_segment = trimmed.rsplit('/').next().unwrap_or("");
            if !path.contains('?') && last_segment.len() >= 2 && !listed(&domain_names, h) {
                let cut = &trimmed[..trimmed.len() - 1];
                let covered = entries.urls.iter().any(|(oh, op)| {
                    (h == oh.as_str() || h.ends_with(&format!(".{}", oh.as_str())))
                        && cut
                            .to_ascii_lowercase()
                            .starts_with(&op.to_ascii_lowercase())
                }) || {
                    let text = format!("{h}{cut}");
                    expressions.iter().any(|r| r.is_match(text.as_bytes()))
                };
                if !covered {
                    let url = format!("{h}{cut}");
                    assert!(
                        index.matches(&url_target(&url)).is_empty(),
                        "ut1/{name}: {url} must not match"
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked > 5000, "only {checked} URL entries checked");
}

#[test]
fn adult_expressions_compile_and_match() {
    let path = root().join("ut1/adult");
    let normal = read(ListFormat::Ut1, &path).unwrap_or_else(|e| panic!("{e}"));
    let strict = read_ut1(
        &path,
        Ut1Options {
            very_restrictive: true,
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let skipped_expressions = |e: &Entries| {
        e.skipped
            .iter()
            .filter(|s| {
                s.path
                    .file_name()
                    .is_some_and(|f| f.to_string_lossy().contains("expression"))
            })
            .count()
    };
    assert_eq!(skipped_expressions(&normal), 0, "{:?}", normal.skipped);
    assert_eq!(skipped_expressions(&strict), 0, "{:?}", strict.skipped);
    // In this snapshot adult/expressions is empty; the two lines of
    // very_restrictive_expression are the adult expressions.
    assert!(strict.expressions.len() >= normal.expressions.len() + 2);

    let strict_index = build(&[(4, &strict)]);
    for url in [
        "http://example.com/hardcore-videos",
        "http://example.com/Free-Masturbation-Tips",
        "http://example.com/%68ardcore",
        "http://example.com/free-porn/",
        "http://videos.example/xxx?id=1",
        "http://example.com/teens/",
    ] {
        assert!(strict_index.matches(&url_target(url)).contains(4), "{url}");
    }
    for url in [
        "http://www.bbc.co.uk/news/education",
        "http://example.com/sussex-university",
        "http://en.wikipedia.org/wiki/Essex",
    ] {
        assert!(strict_index.matches(&url_target(url)).is_empty(), "{url}");
    }
}

#[test]
fn other_ut1_expressions_compile_and_match() {
    let mut total = 0;
    for name in ut1_categories() {
        let entries = ut1(&name);
        assert!(
            entries
                .skipped
                .iter()
                .all(|s| !s.path.to_string_lossy().contains("expression")),
            "{name}: {:?}",
            entries.skipped
        );
        total += entries.expressions.len();
    }
    assert!(total >= 3, "{total}");
    let index = build(&[
        (5, &ut1("publicite")),
        (6, &ut1("strict_redirector")),
        (7, &ut1("malware")),
    ]);
    let ids = |url: &str| index.matches(&url_target(url)).iter().collect::<Vec<_>>();
    assert_eq!(ids("http://news.example/img/banner/top.gif"), [5]);
    assert_eq!(
        ids("http://www.google.co.uk/search?q=cache:example.com"),
        [6]
    );
    assert_eq!(ids("http://10.1.2.3/search?q=1234"), [7]);
    assert!(ids("http://10.1.2.3/search?q=abc").is_empty());
    assert!(ids("http://www.google.co.uk/search?q=homework").is_empty());
}

#[test]
fn read_everything_and_build() {
    let start = Instant::now();
    let mut all: Vec<Entries> = ut1_categories().iter().map(|n| ut1(n)).collect();
    all.extend(HOSTS_FILES.iter().map(|n| hosts(n)));
    let read_time = start.elapsed();
    let total: usize = all.iter().map(Entries::len).sum();
    let skipped: usize = all.iter().map(|e| e.skipped.len()).sum();
    let start = Instant::now();
    let with_ids: Vec<(ListId, &Entries)> = all
        .iter()
        .enumerate()
        .map(|(i, e)| (i as ListId, e))
        .collect();
    let index = build(&with_ids);
    let build_time = start.elapsed();
    eprintln!(
        "read {total} entries ({skipped} skipped) in {read_time:?}, built in {build_time:?}, {} bytes ({:.1}/entry)",
        index.memory_bytes(),
        index.memory_bytes() as f64 / index.len() as f64
    );
    assert!(total > 500_000, "{total}");
    assert!(index.len() > 500_000);
    assert!(index.matches(&host_target("www.google.com")).is_empty());
}

#[test]
fn synthetic_million_domains() {
    let n = 1_000_000u32;
    let entries = Entries {
        domains: (0..n)
            .map(|i| {
                Host::parse(&format!("site{i}.example{}.com", i % 1000))
                    .unwrap_or_else(|e| panic!("{e}"))
            })
            .collect(),
        ..Entries::default()
    };
    let index = build(&[(9, &entries)]);
    assert_eq!(index.len(), n as usize);
    for i in (0..n).step_by(1009) {
        let name = format!("www.site{i}.example{}.com", i % 1000);
        assert!(index.matches(&host_target(&name)).contains(9), "{name}");
        let miss = format!("site{}.example{}.com", i + n, i % 1000);
        assert!(index.matches(&host_target(&miss)).is_empty(), "{miss}");
        let miss = format!("site{i}.example{}.com", (i + 1) % 1000);
        assert!(index.matches(&host_target(&miss)).is_empty(), "{miss}");
    }
    assert!(
        index.memory_bytes() < 20 * n as usize,
        "{} bytes",
        index.memory_bytes()
    );
}
