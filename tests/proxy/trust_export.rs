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
use crate::kit::process::{SafeGate, loopback_policy, run_to_end, shipped_config};

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
    init_clickhouse(&export_set(ch, SCHOOLS[0]), &[]).await
}

/// `safegate export init-clickhouse` with the shipped configuration, the export
/// settings `set` and the `extra` arguments (e.g. `--print`); what it printed.
pub(crate) async fn init_clickhouse(set: &str, extra: &[&str]) -> String {
    let config = shipped_config().display().to_string();
    let mut args = vec!["export", "init-clickhouse"];
    args.extend_from_slice(extra);
    args.extend(["--config", &config, "--set", set]);
    let (status, stdout, stderr) = run_to_end(&args).await;
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
            let devices = "devices.names={ \"127.0.0.1\" = \"ICT-PC07\" }";
            schools.push(SafeGate::start(&[set.as_str(), devices]).await);
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
        // Past export.clickhouse.backlog_alert (10): the technician is told.
        schools[0].wait_for_log("EXPORT BACKLOG").await;
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
        // The computer's name travels with each record.
        let computers = ch
            .query("SELECT groupUniqArray(computer) FROM trust.visits FINAL FORMAT TSV")
            .await;
        assert_eq!(computers.trim(), "['ICT-PC07']");
        let paths = ch
            .query(&format!(
                "SELECT path FROM trust.visits FINAL WHERE school = '{}' AND host != \
                 'www.bet365.com' ORDER BY path LIMIT 1 FORMAT TSV",
                SCHOOLS[1]
            ))
            .await;
        assert_eq!(paths.trim(), format!("/bytes/16?n={}-1-0", SCHOOLS[1]));
        // Alerts (the repeated gambling attempts) arrive too, each once in its latest
        // state, even inserted twice.
        let alerts =
            "SELECT count() = uniqExact(id), count() > 0 FROM trust.alerts FINAL FORMAT TSV";
        until_answer(&ch, alerts, "1\t1").await;
        ch.query("INSERT INTO trust.alerts SELECT * FROM trust.alerts")
            .await;
        until_answer(&ch, alerts, "1\t1").await;
        same_report_from_clickhouse_as_from_the_school(&schools[1], &ch, total).await;
        dashboard_queries_run(&ch).await;
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

/// `safegate report weekly` for this week, from `source`, as JSON (the heading's
/// generated-at time and school left out).
async fn weekly_json(sg: &SafeGate, ch: &ClickHouse, extra: &[&str]) -> serde_json::Value {
    let week = jiff::Timestamp::now()
        .to_zoned_datetime(jiff::tz::TimeZone::get("Europe/London").unwrap())
        .date()
        .iso_week_date();
    let week = format!("{:04}-W{:02}", week.year(), week.week());
    let out = tempfile::tempdir().unwrap();
    let config = shipped_config().display().to_string();
    let data = format!("data_dir={:?}", sg.data_dir().display().to_string());
    let policy = format!("policy.file={:?}", loopback_policy().display().to_string());
    let export = export_set(ch, SCHOOLS[1]);
    let out_dir = out.path().display().to_string();
    let mut args = vec![
        "report", "weekly", "--week", &week, "--out", &out_dir, "--config", &config, "--set",
        &data, "--set", &policy, "--set", &export,
    ];
    args.extend_from_slice(extra);
    let (status, stdout, stderr) = run_to_end(&args).await;
    assert!(status.success(), "{args:?}\n{stdout}\n{stderr}");
    let json = std::fs::read(out.path().join(format!("safegate-report-{week}.json"))).unwrap();
    let mut report: serde_json::Value = serde_json::from_slice(&json).unwrap();
    let object = report.as_object_mut().unwrap();
    object.remove("generated_at");
    object.remove("school");
    // Short alert numbers are the school's own (its store gives them); a report from
    // ClickHouse keeps the ids alone.
    if let Some(alerts) = report["alerts"].as_array_mut() {
        for alert in alerts {
            alert.as_object_mut().unwrap().remove("number");
        }
    }
    report
}

/// The trust's report of one school, from ClickHouse, is the school's own report; the
/// trust's report counts every school.
async fn same_report_from_clickhouse_as_from_the_school(
    sg: &SafeGate,
    ch: &ClickHouse,
    per_school: usize,
) {
    let own = weekly_json(sg, ch, &[]).await;
    assert_eq!(own["summary"]["requests"], per_school, "{own:#}");
    let school = weekly_json(sg, ch, &["--source", "clickhouse", "--school", SCHOOLS[1]]).await;
    assert_eq!(school, own);
    let trust = weekly_json(sg, ch, &["--source", "clickhouse", "--trust"]).await;
    assert_eq!(trust["summary"]["requests"], 3 * per_school);
}

/// Every query of deploy/grafana/safegate-trust-clickhouse.json runs on this server,
/// with the Grafana macros expanded as the ClickHouse data source expands them.
async fn dashboard_queries_run(ch: &ClickHouse) {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/grafana/safegate-trust-clickhouse.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let now = jiff::Timestamp::now().as_second();
    let schools = SCHOOLS.map(|s| format!("'{s}'")).join(",");
    let (mut ran, mut answered) = (0, 0);
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let sql = target["rawSql"].as_str().unwrap();
            assert!(sql.contains(" FINAL "), "{sql}");
            let sql = sql
                .replace(
                    "$__timeFilter(at)",
                    &format!(
                        "at >= toDateTime({}) AND at <= toDateTime({now})",
                        now - 86_400
                    ),
                )
                .replace("${school:singlequote}", &schools)
                .replace("safegate.", "trust.");
            let rows = ch.query(&format!("{sql} FORMAT TSV")).await;
            ran += 1;
            answered += usize::from(!rows.trim().is_empty());
        }
    }
    // The traffic has no searches: that panel alone is empty.
    assert_eq!((ran, answered), (6, 5));
}
