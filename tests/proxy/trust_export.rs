//! A trust's ClickHouse (`[export.clickhouse]`) against a real `clickhouse-server`
//! started by the test on loopback (Debian's 18.16): `safegate export init-clickhouse`
//! makes the tables (no TTL on 18.16); three SafeGates as three schools send traffic;
//! ClickHouse is killed in the middle of it, the schools keep filtering (records wait
//! in their outboxes, `safegate_export_up` drops to 0, the backlog shows), ClickHouse
//! starts again, and every request arrives exactly once in query results (`FINAL`),
//! even after every row has been inserted a second time (as a retried insert would).
//!
//! Needs Debian's `clickhouse-server`; skipped without it unless
//! `SAFEGATE_REQUIRE_OPS_TOOLS` is set (by `.ci/run`), where that fails the test.

use std::time::Duration;

use crate::kit::clickhouse::{self, ClickHouse, PASSWORD, USER};
use crate::kit::origin::Origin;
use crate::kit::process::{SafeGate, run_to_end, shipped_config};

/// Requests per school in each of the three phases (before, during, after the outage).
const PER_PHASE: usize = 40;
const SCHOOLS: [&str; 3] = ["urn-100001", "urn-100002", "urn-100003"];

/// `export.clickhouse` for `school`, quick to poll.
pub(crate) fn export_set(ch: &ClickHouse, school: &str) -> String {
    format!(
        "export.clickhouse={{ url = {url:?}, database = \"trust\", user = {USER:?}, \
         password = {PASSWORD:?}, school = {school:?}, interval = \"100ms\", timeout = \"5s\", \
         backlog_alert = 10 }}",
        url = ch.url()
    )
}

/// Sends one phase of traffic through `sg`: allowed pages on the origin (one path
/// each, so every record is told apart) and a blocked gambling site every tenth.
async fn traffic(sg: &SafeGate, origin: &Origin, school: &str, phase: usize) {
    let client = sg.client();
    for i in 0..PER_PHASE {
        let url = if i % 10 == 9 {
            format!("http://www.bet365.com/{school}/{phase}/{i}")
        } else {
            origin.url(&format!("/bytes/16?n={school}-{phase}-{i}"))
        };
        let status = client.get(&url).send().await.unwrap().status().as_u16();
        let expected = if i % 10 == 9 { 403 } else { 200 };
        assert_eq!(status, expected, "{url}");
    }
}

/// A metric's value from `/metrics`, 0 when absent.
pub(crate) async fn metric(sg: &SafeGate, name: &str) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", sg.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Polls `sql` until it answers `want` (the test's time limit bounds it).
pub(crate) async fn until_answer(ch: &ClickHouse, sql: &str, want: &str) {
    loop {
        let got = ch.query(sql).await;
        if got.trim() == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `safegate export init-clickhouse`, as the trust's DBA or a technician runs it;
/// returns what it printed.
pub(crate) async fn init_tables(ch: &ClickHouse) -> String {
    let config = shipped_config().display().to_string();
    let set = export_set(ch, SCHOOLS[0]);
    let (status, stdout, stderr) = run_to_end(&[
        "export",
        "init-clickhouse",
        "--config",
        &config,
        "--set",
        &set,
    ])
    .await;
    assert!(status.success(), "{stdout}\n{stderr}");
    stdout
}

#[tokio::test]
async fn three_schools_export_every_record_exactly_once_across_a_clickhouse_outage() {
    if !clickhouse::available() {
        return;
    }
    let body = async {
        let mut ch = ClickHouse::start().await;
        let origin = Origin::start().await;
        let stdout = init_tables(&ch).await;
        assert!(stdout.contains("ClickHouse 18.16"), "{stdout}");
        assert!(stdout.contains("no TTL"), "{stdout}");
        let ddl = ch.query("SHOW CREATE TABLE trust.visits").await;
        assert!(ddl.contains("ReplacingMergeTree"), "{ddl}");
        assert!(ddl.contains("computer Nullable(String)"), "{ddl}");

        let mut schools = Vec::new();
        for school in SCHOOLS {
            let set = export_set(&ch, school);
            schools.push(SafeGate::start(&[set.as_str()]).await);
        }
        for (sg, school) in schools.iter().zip(SCHOOLS) {
            traffic(sg, &origin, school, 1).await;
        }
        // ClickHouse goes away in the middle of the traffic: the proxies go on.
        ch.stop().await;
        for (sg, school) in schools.iter().zip(SCHOOLS) {
            traffic(sg, &origin, school, 2).await;
        }
        for sg in &schools {
            while metric(sg, "safegate_export_up").await != 0.0
                || metric(sg, "safegate_export_backlog").await == 0.0
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(metric(sg, "safegate_export_failures_total").await >= 1.0);
        }
        ch.start_again().await;
        for (sg, school) in schools.iter().zip(SCHOOLS) {
            traffic(sg, &origin, school, 3).await;
        }
        let total = 3 * PER_PHASE;
        let per_school = "SELECT school, count(), uniqExact(id), uniqExact(path), \
             countIf(outcome = 'Blocked') FROM trust.visits FINAL GROUP BY school \
             ORDER BY school FORMAT TSV";
        let want: Vec<String> = SCHOOLS
            .iter()
            .map(|s| format!("{s}\t{total}\t{total}\t{total}\t{}", total / 10))
            .collect();
        until_answer(&ch, per_school, &want.join("\n")).await;
        for sg in &schools {
            while metric(sg, "safegate_export_backlog").await != 0.0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert_eq!(metric(sg, "safegate_export_up").await, 1.0);
        }
        // Every row a second time, as a retried insert would send it: still counted once.
        ch.query("INSERT INTO trust.visits SELECT * FROM trust.visits")
            .await;
        let raw = ch.query("SELECT count() FROM trust.visits").await;
        assert!(
            raw.trim().parse::<usize>().unwrap() >= 2 * 3 * total,
            "{raw}"
        );
        until_answer(&ch, per_school, &want.join("\n")).await;
        let paths = ch
            .query(&format!(
                "SELECT path FROM trust.visits FINAL WHERE school = '{}' AND host != \
                 'www.bet365.com' ORDER BY path LIMIT 1 FORMAT TSV",
                SCHOOLS[1]
            ))
            .await;
        assert_eq!(paths.trim(), format!("/bytes/16?n={}-1-0", SCHOOLS[1]));
        for sg in &mut schools {
            sg.terminate();
            assert!(sg.wait().await.success());
        }
    };
    if tokio::time::timeout(Duration::from_secs(240), body)
        .await
        .is_err()
    {
        panic!("the ClickHouse export test did not finish within 240 s");
    }
}
