//! `safegate log query|purge|export`: through the running service's control socket,
//! then on the database directly once SafeGate has stopped (same answers), the
//! retention purge, and refusals (no retention, no database, another user).
//!
//! Requests through the proxy are recorded without a user name (nobody is
//! authenticated yet), so records of a named user are written into the database
//! before SafeGate starts.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use safegate_store::{IdentifiedBy, Outcome, Record, SeenAs, Store};

use crate::kit::bounded;
use crate::kit::dns::FakeDns;
use crate::kit::origin::Origin;
use crate::kit::process::{SafeGate, run_to_end, shipped_config};

const HOUR_MICROS: u64 = 3_600_000_000;

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

fn record(at: u64, user: &str, host: &str, outcome: Outcome) -> Record {
    Record {
        at_unix_micros: at,
        user: Some(user.to_owned()),
        role: "pupil".into(),
        group: Some("year6".into()),
        client: "10.0.0.7".parse().unwrap(),
        identified_by: IdentifiedBy::ProxyAuth,
        method: "GET".into(),
        scheme: "http".into(),
        host: host.into(),
        port: 80,
        path: Some("/news".into()),
        categories: vec![],
        outcome,
        rule: if outcome == Outcome::Blocked {
            "deny:pupil".into()
        } else {
            "default".into()
        },
        status: if outcome == Outcome::Blocked {
            403
        } else {
            200
        },
        bytes_up: 100,
        bytes_down: 5000,
        duration_micros: 1_000_000,
        search: None,
        seen_as: SeenAs::PlainHttp,
        user_agent: None,
        failure: None,
        computer: None,
        content: None,
    }
}

/// Writes `records` into the database in `data_dir` and closes it.
async fn seed(data_dir: &Path, records: &[Record]) {
    let store = Store::open(data_dir).unwrap();
    store.write_records(records).unwrap();
    store.flush().await.unwrap();
}

/// Runs `safegate log ARGS` on the shipped configuration with `data_dir` and `sets`.
async fn log_cmd(data_dir: &Path, sets: &[&str], args: &[&str]) -> (ExitStatus, String, String) {
    let config = shipped_config().display().to_string();
    let data = format!("data_dir={:?}", data_dir.display().to_string());
    let mut all: Vec<&str> = vec!["log"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--config", &config, "--set", &data]);
    for set in sets {
        all.extend_from_slice(&["--set", set]);
    }
    run_to_end(&all).await
}

/// `safegate log ARGS`, which must succeed; its standard output.
async fn log_ok(data_dir: &Path, args: &[&str]) -> String {
    let (status, stdout, stderr) = log_cmd(data_dir, &[], args).await;
    assert!(status.success(), "log {args:?} failed:\n{stdout}\n{stderr}");
    stdout
}

async fn log_json(data_dir: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    let stdout = log_ok(data_dir, args).await;
    let value: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("log {args:?}: not JSON ({e}):\n{stdout}"));
    value.as_array().unwrap().clone()
}

/// Polls a JSON query until it returns `n` records (the writer flushes every 50 ms).
async fn wait_for_records(data_dir: &Path, args: &[&str], n: usize) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let records = log_json(data_dir, args).await;
        if records.len() >= n {
            return records;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "log {args:?}: {} record(s) after 15s, expected {n}",
            records.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn log_commands_answer_through_the_service_and_then_directly() {
    bounded(async {
        let data_dir = tempfile::tempdir().unwrap();
        let data = data_dir.path();
        let now = now_micros();
        let an_hour_ago = now - HOUR_MICROS;
        seed(
            data,
            &[
                record(an_hour_ago, "ada", "www.bbc.co.uk", Outcome::Allowed),
                record(
                    an_hour_ago + 60_000_000,
                    "ada",
                    "news.bbc.co.uk",
                    Outcome::Blocked,
                ),
                record(
                    an_hour_ago + 120_000_000,
                    "bob",
                    "www.bbc.co.uk",
                    Outcome::Allowed,
                ),
            ],
        )
        .await;

        let origin = Origin::start().await;
        let port = origin.addr.port();
        let dns = FakeDns::start(&[
            ("learning.example", Ipv4Addr::LOCALHOST),
            ("www.bet365.com", Ipv4Addr::LOCALHOST),
        ])
        .await;
        let sets = [
            format!("upstream.dns.servers=[\"{}\"]", dns.addr),
            "upstream.dns.ip_strategy=\"ipv4_only\"".to_owned(),
            "store.visit_log=true".to_owned(),
            "store.flush_interval=\"50ms\"".to_owned(),
            format!("data_dir={:?}", data.display().to_string()),
        ];
        let refs: Vec<&str> = sets.iter().map(String::as_str).collect();
        let mut safegate = SafeGate::start(&refs).await;
        let socket = data.join("control.sock");
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "control.sock mode {mode:o}");

        the_proxy_records_an_allowed_and_a_blocked_request(&safegate, port).await;
        // Through the control socket (the service holds the database).
        queries_through_the_service_select_by_time_host_and_outcome(data).await;
        queries_of_a_user_answer_records_csv_and_visits(data, an_hour_ago).await;
        the_table_and_the_export_work_through_the_service(data).await;

        // What the service logged: who asked for what.
        assert!(
            safegate
                .logs()
                .iter()
                .any(|l| l.contains("control: log export user=\"ada\""))
        );
        let everything = ["query", "--since", "2h", "--json"];
        let through_service = log_ok(data, &everything).await;
        assert_eq!(log_json(data, &everything).await.len(), 5);

        safegate.terminate();
        assert!(safegate.wait().await.success());
        assert!(
            !socket.exists(),
            "control.sock left behind after a clean stop"
        );

        directly_on_the_database_the_answers_are_the_same(data, &everything, &through_service)
            .await;
    })
    .await;
}

/// Through the proxy: an allowed page (200, its 321 bytes) and a blocked one (403).
async fn the_proxy_records_an_allowed_and_a_blocked_request(safegate: &SafeGate, port: u16) {
    let client = safegate.client();
    let allowed = client
        .get(format!("http://learning.example:{port}/bytes/321"))
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(allowed.bytes().await.unwrap().len(), 321);
    let blocked = client
        .get(format!("http://www.bet365.com:{port}/odds"))
        .send()
        .await
        .unwrap();
    assert_eq!(blocked.status(), 403);
    drop(client);
}

/// `log query` through the service by time, host and blocked: the proxy's two
/// records, with every field of the allowed one, and the seeded blocked one.
async fn queries_through_the_service_select_by_time_host_and_outcome(data: &Path) {
    let live = wait_for_records(data, &["query", "--since", "10m", "--json"], 2).await;
    assert_eq!(live.len(), 2, "{live:#?}");
    let by_host = log_json(data, &["query", "--host", "learning.example", "--json"]).await;
    assert_eq!(by_host.len(), 1, "{by_host:#?}");
    let page = &by_host[0];
    assert_eq!(page["outcome"], "Allowed");
    assert_eq!(page["status"], 200);
    assert_eq!(page["bytes_down"], 321);
    assert_eq!(page["path"], "/bytes/321");
    assert_eq!(page["method"], "GET");
    assert_eq!(page["role"], "pupil");
    assert_eq!(page["client"], "127.0.0.1");
    assert!(page["user"].is_null());
    let live_blocked = log_json(data, &["query", "--blocked", "--since", "10m", "--json"]).await;
    assert_eq!(live_blocked.len(), 1, "{live_blocked:#?}");
    assert_eq!(live_blocked[0]["host"], "www.bet365.com");
    assert_eq!(live_blocked[0]["status"], 403);
    assert_eq!(live_blocked[0]["rule"], "category:pupil:gambling");
    let all_blocked = log_json(data, &["query", "--blocked", "--json"]).await;
    assert_eq!(all_blocked.len(), 2, "{all_blocked:#?}");
}

/// One user's (ada's seeded) records as JSON, blocked only, CSV and joined into
/// visits, a shorter idle gap splitting the visit.
async fn queries_of_a_user_answer_records_csv_and_visits(data: &Path, an_hour_ago: u64) {
    let ada = log_json(data, &["query", "--user", "ada", "--json"]).await;
    assert_eq!(ada.len(), 2, "{ada:#?}");
    assert!(ada.iter().all(|r| r["user"] == "ada"));
    assert_eq!(ada[0]["at_unix_micros"], an_hour_ago);
    let ada_blocked = log_json(data, &["query", "--user", "ada", "--blocked", "--json"]).await;
    assert_eq!(ada_blocked.len(), 1);
    assert_eq!(ada_blocked[0]["host"], "news.bbc.co.uk");

    let csv = log_ok(data, &["query", "--user", "ada", "--csv"]).await;
    let lines: Vec<&str> = csv.lines().collect();
    assert!(
        lines[0].starts_with("at_unix_micros,user,role,group,client"),
        "{csv}"
    );
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[1].contains(",ada,pupil,year6,10.0.0.7,"), "{csv}");

    let visits = log_json(data, &["query", "--user", "ada", "--visits", "--json"]).await;
    assert_eq!(visits.len(), 1, "{visits:#?}");
    assert_eq!(visits[0]["site"], "bbc.co.uk");
    assert_eq!(visits[0]["user"], "ada");
    assert_eq!(visits[0]["requests"], 2);
    assert_eq!(visits[0]["blocked"], 1);
    assert_eq!(visits[0]["duration_micros"], 61_000_000);
    // A gap shorter than the minute between the two requests splits the visit.
    let split = log_json(
        data,
        &[
            "query",
            "--user",
            "ada",
            "--visits",
            "--idle-gap",
            "30s",
            "--json",
        ],
    )
    .await;
    assert_eq!(split.len(), 2, "{split:#?}");
}

/// The human table (local time, blocked marked, a count) and a user's export, through
/// the service.
async fn the_table_and_the_export_work_through_the_service(data: &Path) {
    let table = log_ok(data, &["query", "--since", "10m"]).await;
    assert!(table.starts_with("TIME (Europe/London)"), "{table}");
    assert!(
        table.contains("www.bet365.com") && table.contains("blocked"),
        "{table}"
    );
    assert!(table.ends_with("2 record(s)\n"), "{table}");

    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().display().to_string();
    let exported = log_ok(data, &["export", "--user", "ada", "--out", &out_dir]).await;
    assert!(exported.contains("exported 2 record(s)"), "{exported}");
    check_export(out.path(), "ada", 2);
}

/// With SafeGate stopped, on the database directly: the same query answer and export
/// as through the service, then a purge removes every record.
async fn directly_on_the_database_the_answers_are_the_same(
    data: &Path,
    everything: &[&str],
    through_service: &str,
) {
    // Directly on the database: the same answer.
    let direct = log_ok(data, everything).await;
    assert_eq!(direct, through_service);
    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().display().to_string();
    log_ok(data, &["export", "--user", "ada", "--out", &out_dir]).await;
    check_export(out.path(), "ada", 2);

    let purged = log_ok(data, &["purge", "--before", "2099-01-01"]).await;
    assert!(
        purged.starts_with("removed 5 visit-log record(s) from before 2099-01-01 00:00:00"),
        "{purged}"
    );
    assert!(log_json(data, &["query", "--json"]).await.is_empty());
    let empty = log_ok(data, &["query"]).await;
    assert_eq!(empty, "no records match\n");
}

/// Both export files exist, are private, and hold `n` records of `user`.
fn check_export(dir: &Path, user: &str, n: usize) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    let prefix = format!("safegate-export-{user}-");
    assert!(
        names[0].starts_with(&prefix) && names[0].ends_with(".csv"),
        "{names:?}"
    );
    assert!(
        names[1].starts_with(&prefix) && names[1].ends_with(".json"),
        "{names:?}"
    );
    for name in &names {
        let mode = std::fs::metadata(dir.join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}: mode {mode:o}");
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(&names[1])).unwrap()).unwrap();
    let records = json.as_array().unwrap();
    assert_eq!(records.len(), n);
    assert!(records.iter().all(|r| r["user"] == user), "{json:#}");
    let csv = std::fs::read_to_string(dir.join(&names[0])).unwrap();
    assert_eq!(csv.lines().count(), n + 1, "{csv}");
    assert!(csv.starts_with("at_unix_micros,"), "{csv}");
}

#[tokio::test]
async fn retention_task_purges_old_records_shortly_after_start() {
    bounded(async {
        let data_dir = tempfile::tempdir().unwrap();
        let data = data_dir.path();
        let now = now_micros();
        let day = 24 * HOUR_MICROS;
        seed(
            data,
            &[
                record(now - 40 * day, "ada", "old.example", Outcome::Allowed),
                record(now - 31 * day, "ada", "old.example", Outcome::Allowed),
                record(now - 29 * day, "ada", "recent.example", Outcome::Allowed),
            ],
        )
        .await;
        let data_set = format!("data_dir={:?}", data.display().to_string());
        let mut safegate = SafeGate::start(&[
            "store.visit_log=true",
            "store.retention_days=30",
            data_set.as_str(),
        ])
        .await;
        let line = safegate.wait_for_log("visit log retention: removed").await;
        assert!(
            line.contains("removed 2 record(s) older than 30 days"),
            "{line}"
        );
        let left = log_json(data, &["query", "--json"]).await;
        assert_eq!(left.len(), 1, "{left:#?}");
        assert_eq!(left[0]["host"], "recent.example");
        safegate.terminate();
        assert!(safegate.wait().await.success());
    })
    .await;
}

#[tokio::test]
async fn purge_and_query_refuse_clearly() {
    bounded(async {
        let data_dir = tempfile::tempdir().unwrap();
        let data = data_dir.path();
        // No database: nothing is created, and the message says where it looked.
        let (status, _, stderr) = log_cmd(data, &[], &["query"]).await;
        assert!(!status.success());
        assert!(stderr.contains("no SafeGate database"), "{stderr}");
        assert!(!data.join("db").exists());

        seed(
            data,
            &[record(now_micros(), "ada", "a.example", Outcome::Allowed)],
        )
        .await;
        let (status, _, stderr) = log_cmd(data, &["store.retention_days=0"], &["purge"]).await;
        assert!(!status.success());
        assert!(stderr.contains("retention_days is 0"), "{stderr}");
        assert!(stderr.contains("--before"), "{stderr}");
        // The default cut-off keeps a record of today.
        let purged = log_ok(data, &["purge"]).await;
        assert!(
            purged.starts_with("removed 0 visit-log record(s)"),
            "{purged}"
        );

        let (status, _, stderr) = log_cmd(data, &[], &["query", "--since", "last tuesday"]).await;
        assert!(!status.success());
        assert!(stderr.contains("--since last tuesday"), "{stderr}");
        let (status, _, stderr) = log_cmd(
            data,
            &[],
            &["export", "--user", "ada", "--out", "/nonexistent/dir"],
        )
        .await;
        assert!(!status.success());
        assert!(stderr.contains("/nonexistent/dir"), "{stderr}");
    })
    .await;
}

/// What content analysis found on a page is in the JSON and CSV answers
/// (`content_score`, `content_categories`; empty for a page it did not score), and
/// `log migrate` on an up-to-date database says so and changes nothing.
#[tokio::test]
async fn content_scores_are_exported_and_migrate_reports_an_up_to_date_log() {
    bounded(async {
        let data_dir = tempfile::tempdir().unwrap();
        let data = data_dir.path();
        let now = now_micros();
        let mut scored = record(now - 2_000_000, "ada", "casino.example", Outcome::Blocked);
        scored.content = Some(safegate_store::ContentScore {
            score: 160,
            categories: vec![("gambling".into(), 130), ("weapons".into(), 30)],
            phrases: vec![("online casino".into(), 60)],
            late: false,
        });
        seed(
            data,
            &[
                scored,
                record(now - 1_000_000, "ada", "a.example", Outcome::Allowed),
            ],
        )
        .await;
        let json = log_json(data, &["query", "--user", "ada", "--json"]).await;
        assert_eq!(json.len(), 2);
        assert_eq!(json[0]["content_score"], 160);
        assert_eq!(
            json[0]["content_categories"],
            serde_json::json!([{"name": "gambling", "score": 130}, {"name": "weapons", "score": 30}])
        );
        assert_eq!(json[1]["content_score"], serde_json::Value::Null);
        assert_eq!(json[1]["content_categories"], serde_json::json!([]));
        let csv = log_ok(data, &["query", "--user", "ada", "--csv"]).await;
        // CR is shown as text on a terminal (TerminalSafe).
        let lines: Vec<&str> = csv.lines().map(|l| l.trim_end_matches("\\x0d")).collect();
        assert!(
            lines[0].ends_with(",computer,content_score,content_categories"),
            "{csv}"
        );
        assert!(lines[1].ends_with(",160,gambling 130;weapons 30"), "{csv}");
        assert!(lines[2].ends_with(",,"), "{csv}");

        let migrated = log_ok(data, &["migrate"]).await;
        assert_eq!(migrated, "the visit log is up to date: 2 record(s)\n");
        assert_eq!(log_json(data, &["query", "--json"]).await.len(), 2);
    })
    .await;
}

/// A process of another user reaching the socket (here: made world-writable on
/// purpose) is refused by the peer check, and the service logs it. Needs root (to run
/// the client as `nobody`) and perl; skipped otherwise.
#[tokio::test]
async fn the_control_socket_refuses_other_users() {
    let perl = Path::new("/usr/bin/perl");
    let root =
        std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0);
    if !perl.exists() || !matches!(root, Ok(true)) {
        eprintln!("skipped: needs root and /usr/bin/perl");
        return;
    }
    bounded(async {
        let data_dir = tempfile::tempdir().unwrap();
        let data = data_dir.path();
        let data_set = format!("data_dir={:?}", data.display().to_string());
        let mut safegate = SafeGate::start(&[data_set.as_str()]).await;
        let socket = data.join("control.sock");
        std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o711)).unwrap();
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
        let script = r#"
            use IO::Socket::UNIX;
            my $s = IO::Socket::UNIX->new(Peer => $ARGV[0]) or die "connect: $!\n";
            print $s qq({"command":"log_query","format":"json","timezone":"UTC"}\n);
            shutdown($s, 1);
            print while <$s>;
        "#;
        let output = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::process::Command::new(perl)
                .args(["-e", script, &socket.display().to_string()])
                .uid(65534)
                .gid(65534)
                .output(),
        )
        .await
        .unwrap()
        .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{:?}: {stdout}{stderr}",
            output.status
        );
        assert!(
            stdout.starts_with(r#"{"ok":false,"error":"permission denied: uid 65534"#),
            "{stdout}"
        );
        assert_eq!(stdout.lines().count(), 1, "{stdout}");
        let line = safegate
            .wait_for_log("control socket: connection from another user refused")
            .await;
        assert!(line.contains("peer_uid=65534"), "{line}");
        safegate.terminate();
        assert!(safegate.wait().await.success());
    })
    .await;
}

#[tokio::test]
async fn log_help_explains_times_and_examples() {
    bounded(async {
        let (status, stdout, _) = run_to_end(&["log", "query", "--help"]).await;
        assert!(status.success());
        for word in [
            "--since",
            "--visits",
            "--idle-gap",
            "--csv",
            "RFC 3339",
            "7d",
            "Examples:",
        ] {
            assert!(
                stdout.contains(word),
                "log query --help lacks {word:?}:\n{stdout}"
            );
        }
        let (status, stdout, _) = run_to_end(&["log", "--help"]).await;
        assert!(status.success());
        for word in ["query", "purge", "export", "control.sock"] {
            assert!(
                stdout.contains(word),
                "log --help lacks {word:?}:\n{stdout}"
            );
        }
        // --idle-gap only means something with --visits.
        let (status, _, stderr) = run_to_end(&["log", "query", "--idle-gap", "1m"]).await;
        assert!(!status.success());
        assert!(stderr.contains("--visits"), "{stderr}");
    })
    .await;
}

/// A recorded address carrying terminal escape sequences (attacker-controlled) is shown
/// with the controls made visible, in the table and in CSV, never sent to the terminal.
#[tokio::test]
async fn recorded_escape_sequences_never_reach_the_terminal() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let mut hostile = record(now_micros(), "ada", "evil.test", Outcome::Allowed);
        hostile.path = Some("/x\u{1b}]0;pwned\u{7}\u{1b}[2Jy\u{9b}31m".into());
        seed(dir.path(), &[hostile]).await;
        for format in [&[][..], &["--csv"][..]] {
            let mut args = vec!["query", "--host", "evil.test", "--since", "1h"];
            args.extend_from_slice(format);
            let out = log_ok(dir.path(), &args).await;
            assert!(out.contains("evil.test"), "{out}");
            assert!(
                !out.contains('\u{1b}') && !out.contains('\u{7}') && !out.contains('\u{9b}'),
                "a control character reached the terminal: {out:?}"
            );
            // The table shows `?` for them; CSV names each one.
            if format.is_empty() {
                assert!(out.contains("/x?]0;pwned??[2Jy?31m"), "{out}");
            } else {
                assert!(out.contains("\\x1b]0;pwned\\x07\\x1b[2J"), "{out}");
                assert!(out.contains("\\u{9b}31m"), "{out}");
            }
        }
    })
    .await;
}
