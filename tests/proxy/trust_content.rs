//! Content analysis in the trust's ClickHouse: a page blocked by its words arrives
//! with its score and categories (`content_score`, `content_categories`), a lesson
//! page with a score far below the limit; and `init-clickhouse` run against tables made by an earlier SafeGate
//! (without those columns) adds them, keeping the rows already there.
//!
//! Needs Debian's `clickhouse-server`; skipped without it unless
//! `SAFEGATE_REQUIRE_OPS_TOOLS` is set (by `.ci/run`), where that fails the test.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::kit::clickhouse::{self, ClickHouse};
use crate::kit::dns::FakeDns;
use crate::kit::pages::{Page, PageOrigin};
use crate::kit::process::SafeGate;
use crate::trust_export::{export_set, init_clickhouse, init_tables, until_answer};

const SCHOOL: &str = "urn-300001";

const EXPLICIT: &str = "<html><head><title>Free porn videos</title></head><body>\
<p>Hot MILF porn tube and live sex cams. Nude girls, XXX, hardcore sex.</p></body></html>";

/// Makes the tables as an earlier SafeGate did: today's statements (from
/// `init-clickhouse --print`) without the columns added since, and no `ALTER`s.
async fn old_tables(ch: &ClickHouse) {
    let stdout = init_clickhouse(&export_set(ch, SCHOOL), &["--print"]).await;
    for statement in stdout.split(";\n").map(str::trim).filter(|s| !s.is_empty()) {
        if statement.starts_with("ALTER") {
            continue;
        }
        let old: Vec<&str> = statement
            .lines()
            .filter(|line| !line.trim_start().starts_with("content_"))
            .filter(|line| !line.starts_with("TTL"))
            .collect();
        let old = old.join("\n").replace(
            "failure Nullable(String),\n)",
            "failure Nullable(String)\n)",
        );
        ch.query(&old).await;
    }
    let columns = ch
        .query("SELECT count() FROM system.columns WHERE database = 'trust' AND table = 'visits' AND name LIKE 'content%' FORMAT TSV")
        .await;
    assert_eq!(columns.trim(), "0", "the old table has no content columns");
    ch.query(&format!(
        "INSERT INTO trust.visits (id, school, at, at_micros, role, client, identified_by, method, \
         scheme, host, port, outcome, rule, status, bytes_up, bytes_down, duration_micros, seen_as) \
         VALUES ('old-1', '{SCHOOL}', now(), 1, 'pupil', '127.0.0.1', 'Default', 'GET', 'http', \
         'old.test', 80, 'Allowed', 'default', 200, 0, 0, 0, 'PlainHttp')"
    ))
    .await;
}

#[tokio::test]
async fn content_scores_reach_clickhouse_and_init_adds_the_columns_to_old_tables() {
    if !clickhouse::available() {
        return;
    }
    let body = async {
        let ch = ClickHouse::start().await;
        old_tables(&ch).await;
        // Run twice: the second finds every column there.
        init_tables(&ch).await;
        init_tables(&ch).await;
        let ddl = ch.query("SHOW CREATE TABLE trust.visits").await;
        assert!(ddl.contains("content_score Nullable(UInt32)"), "{ddl}");
        assert!(ddl.contains("content_categories Array(String)"), "{ddl}");

        let origin = PageOrigin::start().await;
        origin.add("/explicit", Page::html(EXPLICIT));
        origin.add(
            "/lesson",
            Page::html("<h1>Puberty and consent: a PSHE lesson plan.</h1>"),
        );
        let dns = FakeDns::start(&[("site.test", Ipv4Addr::LOCALHOST)]).await;
        let sets = [
            export_set(&ch, SCHOOL),
            format!("upstream.dns.servers=[\"{}\"]", dns.addr),
            "upstream.dns.ip_strategy=\"ipv4_only\"".to_owned(),
        ];
        let refs: Vec<&str> = sets.iter().map(String::as_str).collect();
        let safegate = SafeGate::start(&refs).await;
        let client = safegate.client();
        let port = origin.addr.port();
        for (path, status) in [("/explicit", 403), ("/lesson", 200)] {
            let url = format!("http://site.test:{port}{path}");
            let answer = client.get(&url).send().await.unwrap();
            assert_eq!(answer.status().as_u16(), status, "{url}");
        }
        let rows = format!(
            "SELECT ifNull(path, '-'), ifNull(content_score, 0) > 100 FROM trust.visits FINAL \
             WHERE school = '{SCHOOL}' ORDER BY at_micros FORMAT TSV"
        );
        let want = "-\t0\n/explicit\t1\n/lesson\t0";
        let waited = tokio::time::timeout(Duration::from_secs(30), until_answer(&ch, &rows, want));
        if waited.await.is_err() {
            panic!("ClickHouse has:\n{}\nnot:\n{want}", ch.query(&rows).await);
        }
        let first = ch
            .query(&format!(
                "SELECT content_categories[1] FROM trust.visits FINAL \
                 WHERE school = '{SCHOOL}' AND path = '/explicit' FORMAT TSV"
            ))
            .await;
        assert_eq!(first.trim(), "pornography", "highest first");
    };
    if tokio::time::timeout(Duration::from_secs(90), body)
        .await
        .is_err()
    {
        panic!("the content export test did not finish within 90 s");
    }
}
