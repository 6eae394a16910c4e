//! Content analysis through the running proxy on the shipped policy and starter
//! lists: pages blocked by their words (plain and compressed, phrases split across
//! TCP writes), benign pages passed byte for byte, a page that crosses the limit only
//! after `max_hold` streamed and then recorded and alerted, banned searches, and bad
//! input (a decompression bomb, an endless body, invalid UTF-8, a page cut mid-tag)
//! passed on whole.

use std::io::Write;
use std::net::Ipv4Addr;
use std::time::Duration;

use safegate_store::{AlertFilter, AlertKind, Outcome, Query, Store};

use crate::kit::bounded;
use crate::kit::dns::FakeDns;
use crate::kit::pages::{Page, PageOrigin};
use crate::kit::process::SafeGate;

const EXPLICIT: &str = "<html><head><title>Free porn videos</title></head><body>\
<p>Hot MILF porn tube and live sex cams. Nude girls, XXX, hardcore sex.</p></body></html>";

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn page(content_type: &str, encoding: Option<&str>, chunks: Vec<Vec<u8>>) -> Page {
    let mut headers = vec![("content-type".to_owned(), content_type.to_owned())];
    if let Some(encoding) = encoding {
        headers.push(("content-encoding".to_owned(), encoding.to_owned()));
    }
    Page {
        headers,
        chunks,
        ..Page::default()
    }
}

/// The pages of the test, by path, with whether each is blocked.
fn pages() -> Vec<(&'static str, Page, bool)> {
    let explicit = EXPLICIT.as_bytes();
    let split: Vec<Vec<u8>> = explicit.chunks(7).map(<[u8]>::to_vec).collect();
    let compressed = gzip(explicit);
    let gz_split: Vec<Vec<u8>> = compressed.chunks(5).map(<[u8]>::to_vec).collect();
    let mut late = "<p>Our school newsletter: sports day, homework club and the library.</p>\n"
        .repeat(4500)
        .into_bytes();
    assert!(late.len() > 300 * 1024);
    late.extend_from_slice(EXPLICIT.as_bytes());
    let late_chunks: Vec<Vec<u8>> = late.chunks(16 * 1024).map(<[u8]>::to_vec).collect();
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for _ in 0..48 {
        bomb.write_all(&[b' '; 1 << 20]).unwrap();
    }
    bomb.write_all(EXPLICIT.as_bytes()).unwrap();
    let bomb = bomb.finish().unwrap();
    vec![
        ("/explicit", Page::html(EXPLICIT), true),
        ("/explicit-split", page("text/html", None, split), true),
        ("/explicit-gzip", page("text/html", Some("gzip"), gz_split), true),
        (
            "/explicit-json",
            page(
                "application/json",
                None,
                vec![br#"{"title":"free porn videos","tags":["milf","porn tube","live sex cams","xxx"]}"#.to_vec()],
            ),
            true,
        ),
        (
            "/lesson",
            Page::html("<h1>Relationships and sex education</h1><p>Puberty and consent: a PSHE lesson plan.</p>"),
            false,
        ),
        ("/late", page("text/html", None, late_chunks), false),
        ("/bomb", page("text/html", Some("gzip"), vec![bomb]), false),
        (
            "/broken",
            page(
                "text/html; charset=utf-8",
                None,
                vec![b"<p>caf\xe9 \xff\xfe sports \xc3".to_vec(), b"day <a href=\"x".to_vec()],
            ),
            false,
        ),
        ("/image", page("image/png", None, vec![EXPLICIT.as_bytes().to_vec()]), false),
    ]
}

#[tokio::test]
async fn pages_are_blocked_by_their_words_and_passed_on_unchanged_otherwise() {
    bounded(async {
        let origin = PageOrigin::start().await;
        for (path, page, _) in pages() {
            origin.add(path, page);
        }
        let mut endless = Page::html("<p>school news </p>");
        endless.endless = true;
        origin.add("/endless", endless);
        let dns = FakeDns::start(&[("site.test", Ipv4Addr::LOCALHOST)]).await;
        let sets = [
            format!("upstream.dns.servers=[\"{}\"]", dns.addr),
            "upstream.dns.ip_strategy=\"ipv4_only\"".to_owned(),
            "store.visit_log=true".to_owned(),
            "store.flush_interval=\"100ms\"".to_owned(),
        ];
        let refs: Vec<&str> = sets.iter().map(String::as_str).collect();
        let mut safegate = SafeGate::start(&refs).await;
        let client = safegate.client();
        let port = origin.addr.port();
        for (path, page, blocked) in pages() {
            let response = client
                .get(format!("http://site.test:{port}{path}"))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let rule = response
                .headers()
                .get("x-safegate-rule")
                .map(|v| v.to_str().unwrap().to_owned());
            let body = response.bytes().await.unwrap();
            if blocked {
                assert_eq!(
                    (status, rule.as_deref()),
                    (403, Some("content:pupil")),
                    "{path}"
                );
                let text = String::from_utf8_lossy(&body);
                assert!(text.contains("pornography by content"), "{path}: {text}");
                assert!(text.contains("scored"), "{path}");
                assert!(
                    !text.contains("&lt; milf &gt;"),
                    "{path}: no phrases for pupils"
                );
            } else {
                assert_eq!(status, 200, "{path}");
                assert_eq!(
                    body.to_vec(),
                    page.chunks.concat(),
                    "{path}: bytes unchanged"
                );
            }
        }
        // An endless page streams on after the hold: the first megabyte arrives.
        let mut response = client
            .get(format!("http://site.test:{port}/endless"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let mut received = 0;
        while received < 1 << 20 {
            received += response.chunk().await.unwrap().unwrap().len();
        }
        drop(response);
        // A banned search is blocked before anything is fetched.
        let search = client
            .get(format!(
                "http://www.bing.com:{port}/search?q=FREE+p0rn+videos"
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(search.status(), 403);
        assert_eq!(search.headers()["x-safegate-rule"], "banned-search:pupil");
        wait_for_alerts(&mut safegate).await;
        safegate.terminate();
        assert!(safegate.wait().await.success());
        check_records_and_alerts(safegate.data_dir());
    })
    .await;
}

/// `[content.groups.year6]` with a stricter limit (20) and one exempt site, the test's
/// computer (127.0.0.1) counted as Year 6: a page under the pupils' limit of 100 but
/// over 20 is blocked, an explicit page on the exempt site is not scanned, and the
/// explicit page elsewhere is still blocked (the group's limit, not the role's).
#[tokio::test]
async fn a_group_content_setting_wins_over_the_role() {
    bounded(async {
        let origin = PageOrigin::start().await;
        origin.add("/explicit", Page::html(EXPLICIT));
        origin.add(
            "/film",
            Page::html("<p>The casino scene in the film was filmed in Monaco.</p>"),
        );
        let policy_text = std::fs::read_to_string(crate::kit::process::loopback_policy())
            .unwrap()
            .replace(
                "[groups.year6]\n",
                "[groups.year6]\naddresses = [\"127.0.0.1/32\"]\n",
            );
        let policy_text = format!(
            "{policy_text}\n[content.groups.year6]\nlimit = 20\nexempt = [\"exempt.test\"]\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("policy.toml");
        std::fs::write(&policy, policy_text).unwrap();
        let dns = FakeDns::start(&[
            ("site.test", Ipv4Addr::LOCALHOST),
            ("exempt.test", Ipv4Addr::LOCALHOST),
        ])
        .await;
        let sets = [
            format!("policy.file={:?}", policy.display().to_string()),
            format!("upstream.dns.servers=[\"{}\"]", dns.addr),
            "upstream.dns.ip_strategy=\"ipv4_only\"".to_owned(),
        ];
        let refs: Vec<&str> = sets.iter().map(String::as_str).collect();
        let safegate = SafeGate::start(&refs).await;
        let client = safegate.client();
        let port = origin.addr.port();
        for (host, path, blocked) in [
            ("site.test", "/film", true),
            ("site.test", "/explicit", true),
            ("exempt.test", "/explicit", false),
        ] {
            let response = client
                .get(format!("http://{host}:{port}{path}"))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let rule = response
                .headers()
                .get("x-safegate-rule")
                .map(|v| v.to_str().unwrap().to_owned());
            if blocked {
                assert_eq!(
                    (status, rule.as_deref()),
                    (403, Some("content:pupil")),
                    "{host}{path}"
                );
            } else {
                assert_eq!(status, 200, "{host}{path}");
                assert_eq!(
                    response.bytes().await.unwrap(),
                    EXPLICIT.as_bytes(),
                    "{host}{path}"
                );
            }
        }
        safegate.terminate();
    })
    .await;
}

/// Waits until the alert engine has logged its work (bounded by the test limit).
async fn wait_for_alerts(safegate: &mut SafeGate) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline {
        if safegate
            .logs()
            .iter()
            .filter(|l| l.contains("alert"))
            .count()
            >= 2
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn check_records_and_alerts(data_dir: &std::path::Path) {
    let store = Store::open(data_dir).unwrap();
    let records = store.query(&Query::default()).unwrap();
    let at = |path: &str| {
        records
            .iter()
            .find(|r| r.path.as_deref() == Some(path))
            .unwrap_or_else(|| panic!("no record of {path}: {records:#?}"))
    };
    let explicit = at("/explicit");
    assert_eq!(explicit.outcome, Outcome::Blocked);
    assert_eq!(explicit.rule, "content:pupil");
    assert_eq!(explicit.categories, ["pornography by content"]);
    let content = explicit.content.as_ref().unwrap();
    assert!(content.score > 100 && !content.late, "{content:?}");
    assert_eq!(content.categories[0].0, "pornography");
    assert_eq!(content.phrases.len(), 5, "{content:?}");
    let late = at("/late");
    assert_eq!(late.outcome, Outcome::Allowed);
    assert!(late.content.as_ref().unwrap().late, "{late:?}");
    assert!(at("/lesson").content.as_ref().is_none_or(|c| c.score <= 0));
    let alerts = store.alerts(&AlertFilter::default()).unwrap();
    let summaries: Vec<&str> = alerts
        .iter()
        .filter(|a| a.kind == AlertKind::SafeguardingPhrase)
        .map(|a| a.summary.as_str())
        .collect();
    assert!(
        summaries.iter().any(|s| s.contains("after it was shown")),
        "{summaries:#?}"
    );
    assert!(
        summaries.iter().any(|s| s.contains("FREE p0rn videos")),
        "{summaries:#?}"
    );
}

/// Inside a decrypted tunnel: the same scan, the same block page, over HTTPS.
#[tokio::test]
async fn pages_inside_decrypted_tunnels_are_scanned_too() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let data = format!(
            "data_dir={:?}",
            dir.path().join("data").display().to_string()
        );
        let config = crate::kit::process::shipped_config().display().to_string();
        let (status, out, err) = crate::kit::process::run_to_end(&[
            "ca",
            "init",
            "--name",
            "Test School",
            "--config",
            &config,
            "--set",
            &data,
        ])
        .await;
        assert!(status.success(), "{out}{err}");
        let (status, school_ca, err) =
            crate::kit::process::run_to_end(&["ca", "export", "--config", &config, "--set", &data])
                .await;
        assert!(status.success(), "{err}");
        let origin_ca = crate::kit::origin::TestCa::for_names(&["news.test"]);
        let origin = PageOrigin::start_tls(&origin_ca).await;
        origin.add("/explicit", Page::html(EXPLICIT));
        origin.add(
            "/lesson",
            Page::html("<p>Sports day and homework club.</p>"),
        );
        let roots = dir.path().join("origin-ca.pem");
        std::fs::write(&roots, &origin_ca.ca_pem).unwrap();
        let shipped = std::fs::read_to_string(crate::kit::process::loopback_policy()).unwrap();
        let policy = dir.path().join("policy.toml");
        let decrypting = shipped.replacen(
            "[decrypt]\ncategories = [\"search-engines\", \"video\"]\nsites = []",
            "[decrypt]\ncategories = [\"search-engines\", \"video\"]\nsites = [\"news.test\"]",
            1,
        );
        assert_ne!(decrypting, shipped, "the shipped [decrypt] section moved");
        std::fs::write(&policy, decrypting).unwrap();
        let dns = FakeDns::start(&[("news.test", Ipv4Addr::LOCALHOST)]).await;
        let sets = [
            data,
            format!("policy.file={:?}", policy.display().to_string()),
            format!("upstream.dns.servers=[\"{}\"]", dns.addr),
            "upstream.dns.ip_strategy=\"ipv4_only\"".to_owned(),
            format!("upstream.extra_roots=[{:?}]", roots.display().to_string()),
            format!("proxy.connect_ports=[{}]", origin.addr.port()),
        ];
        let refs: Vec<&str> = sets.iter().map(String::as_str).collect();
        let safegate = SafeGate::start(&refs).await;
        let root = reqwest::Certificate::from_pem(school_ca.as_bytes()).unwrap();
        let client = safegate
            .client_builder()
            .add_root_certificate(root)
            .build()
            .unwrap();
        let url = |path: &str| format!("https://news.test:{}{path}", origin.addr.port());
        let blocked = client.get(url("/explicit")).send().await.unwrap();
        assert_eq!(blocked.status(), 403);
        assert_eq!(blocked.headers()["x-safegate-rule"], "content:pupil");
        assert!(
            blocked
                .text()
                .await
                .unwrap()
                .contains("pornography by content")
        );
        let lesson = client.get(url("/lesson")).send().await.unwrap();
        assert_eq!(lesson.status(), 200);
        assert_eq!(
            lesson.text().await.unwrap(),
            "<p>Sports day and homework club.</p>"
        );
    })
    .await;
}
