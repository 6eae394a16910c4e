//! The weekly sweep report: `safegate report weekly` on a database holding hostile
//! strings (markup in search terms, URLs and an alert), rendered in headless Chromium
//! (it renders, a screenshot is taken, the strings are text, there is no script);
//! the pseudonymised variant through the running service's control socket (stable
//! pseudonyms, the key only in data_dir, no names in any file); and the scheduler
//! making last week's report at its time and mailing it, the named report to
//! `report.email_to` and the pseudonymised one only to
//! `report.pseudonymised_email_to`, once across a restart.
//!
//! Records are written into the database before SafeGate starts (the proxy would
//! stamp them with today's time; the scripted week through the proxy is in
//! `alerts.rs`).

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use safegate_store::{
    AlertKind, IdentifiedBy, NewAlert, Outcome, Record, SearchTerms, SeenAs, Severity, Store,
};

use crate::kit::bounded;
use crate::kit::process::{SafeGate, run_to_end, shipped_config};
use crate::kit::receivers::{Mail, SmtpSink};

const HOSTILE_SEARCH: &str = "<script>alert(\"search\")</script> & <b>bold</b>";
const HOSTILE_PATH: &str = "/page?x=<img src=x onerror=alert(1)>";

fn micros(text: &str) -> u64 {
    text.parse::<jiff::Timestamp>().unwrap().as_microsecond() as u64
}

fn record(at: &str, user: &str, host: &str, path: &str, outcome: Outcome) -> Record {
    Record {
        at_unix_micros: micros(at),
        user: Some(user.to_owned()),
        role: "pupil".into(),
        group: Some("year6".into()),
        client: "10.0.0.7".parse::<IpAddr>().unwrap(),
        identified_by: IdentifiedBy::ProxyAuth,
        method: "GET".into(),
        scheme: "http".into(),
        host: host.into(),
        port: 80,
        path: Some(path.into()),
        categories: if outcome == Outcome::Blocked {
            vec!["gambling".into()]
        } else {
            vec![]
        },
        outcome,
        rule: "default".into(),
        status: 200,
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

/// A week (2026-W47) of a few records with hostile strings, an alert, and records
/// outside the week.
async fn seed(data_dir: &Path) {
    let mut search = record(
        "2026-11-17T10:15:00Z",
        "ada",
        "www.google.com",
        "/search?q=x",
        Outcome::Allowed,
    );
    search.search = Some(SearchTerms {
        engine: "google".into(),
        terms: HOSTILE_SEARCH.into(),
    });
    let mut flagged = record(
        "2026-11-18T09:00:00Z",
        "ada",
        "www.google.com",
        "/search?q=y",
        Outcome::Allowed,
    );
    flagged.search = Some(SearchTerms {
        engine: "google".into(),
        terms: "how to hurt myself".into(),
    });
    let records = vec![
        record(
            "2026-11-15T12:00:00Z",
            "zed",
            "before.test",
            "/",
            Outcome::Allowed,
        ),
        search,
        flagged,
        record(
            "2026-11-17T10:16:00Z",
            "ada",
            "hostile.test",
            HOSTILE_PATH,
            Outcome::Allowed,
        ),
        record(
            "2026-11-19T11:00:00Z",
            "bea",
            "bet.test",
            "/odds",
            Outcome::Blocked,
        ),
        record(
            "2026-11-23T08:00:00Z",
            "zed",
            "after.test",
            "/",
            Outcome::Allowed,
        ),
    ];
    let store = Store::open(data_dir).unwrap();
    store.write_records(&records).unwrap();
    store
        .raise_alert(NewAlert {
            computer: None,
            client: None,
            kind: AlertKind::SafeguardingPhrase,
            severity: Severity::High,
            who: "ada".into(),
            user: Some("ada".into()),
            role: "pupil".into(),
            group: Some("year6".into()),
            subject: "self-harm".into(),
            summary: "self-harm phrase \"<script>\" in a search: </td></tr></table><h1>x".into(),
            at_unix_micros: micros("2026-11-18T09:00:00Z"),
            evidence: vec![records[2].clone(), records[3].clone()],
        })
        .unwrap();
    store.flush().await.unwrap();
}

/// `safegate ARGS --config shipped --set data_dir=...`; (ok, stdout, stderr).
async fn safegate(data_dir: &Path, args: &[&str]) -> (bool, String, String) {
    let config = shipped_config().display().to_string();
    let data = format!("data_dir={:?}", data_dir.display().to_string());
    let mut all: Vec<&str> = args.to_vec();
    all.extend_from_slice(&["--config", &config, "--set", &data]);
    let (status, stdout, stderr) = run_to_end(&all).await;
    (status.success(), stdout, stderr)
}

/// Chromium's binary, or None (with the reason printed) when it is not installed and
/// the CI does not require it.
fn chromium() -> Option<&'static str> {
    for name in ["chromium", "chromium-browser"] {
        if std::process::Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return Some(name);
        }
    }
    assert!(
        std::env::var_os("SAFEGATE_REQUIRE_OPS_TOOLS").is_none(),
        "chromium is required (SAFEGATE_REQUIRE_OPS_TOOLS is set) but does not run"
    );
    eprintln!("SKIPPED the Chromium check: chromium is not installed (apt-get install chromium)");
    None
}

/// Runs headless Chromium on `file` with `mode` (`--dump-dom` or
/// `--screenshot=PATH`); its standard output.
async fn headless(browser: &str, profile: &Path, file: &Path, mode: &str) -> String {
    let output = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--window-size=1280,2400",
                &format!("--user-data-dir={}", profile.display()),
                mode,
                &format!("file://{}", file.display()),
            ])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("chromium did not finish in 90 s")
    .unwrap();
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn the_html_report_renders_in_chromium_with_hostile_strings_as_text() {
    tokio::time::timeout(Duration::from_secs(200), async {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        seed(&data).await;
        let out = dir.path().join("out");
        let (ok, stdout, stderr) = safegate(
            &data,
            &[
                "report",
                "weekly",
                "--week",
                "2026-W47",
                "--out",
                &out.display().to_string(),
            ],
        )
        .await;
        assert!(ok, "{stdout}\n{stderr}");
        let html_file = out.join("safegate-report-2026-W47.html");
        let html = std::fs::read_to_string(&html_file).unwrap();
        // Escaped in the file, and nothing from outside the week.
        assert!(
            !html.contains("<script") && !html.contains("<img"),
            "markup leaked"
        );
        assert!(
            !html.contains("zed") && !html.contains("before.test") && !html.contains("after.test")
        );
        let csv =
            std::fs::read_to_string(out.join("safegate-report-2026-W47-searches.csv")).unwrap();
        assert!(
            csv.contains("\"<script>alert(\"\"search\"\")</script> & <b>bold</b>\""),
            "{csv}"
        );

        let Some(browser) = chromium() else { return };
        let profile = tempfile::tempdir().unwrap();
        let dom = headless(browser, profile.path(), &html_file, "--dump-dom").await;
        assert!(dom.contains("SafeGate weekly sweep 2026-W47"), "{dom}");
        assert!(dom.contains("<h2 id=\"searches\">Searches</h2>"));
        // The hostile strings are text nodes: serialised escaped, never elements.
        assert!(
            dom.contains(
                "&lt;script&gt;alert(\"search\")&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;"
            ),
            "{dom}"
        );
        assert!(dom.contains("&lt;img src=x onerror=alert(1)&gt;"), "{dom}");
        assert!(
            dom.contains("&lt;/td&gt;&lt;/tr&gt;&lt;/table&gt;&lt;h1&gt;x"),
            "{dom}"
        );
        assert!(!dom.contains("<script") && !dom.contains("<img") && !dom.contains("<b>bold"));
        assert!(dom.contains("<svg"), "charts are inline SVG");

        let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report-screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        let shot = shots.join("safegate-report-2026-W47.png");
        let _ = std::fs::remove_file(&shot);
        // A fresh profile: Chromium's helpers from the first run may still hold the
        // first one's lock for a moment on a busy machine.
        let screenshot_profile = tempfile::tempdir().unwrap();
        headless(
            browser,
            screenshot_profile.path(),
            &html_file,
            &format!("--screenshot={}", shot.display()),
        )
        .await;
        let png = std::fs::read(&shot).unwrap();
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "{} bytes",
            png.len()
        );
        println!("report screenshot: {}", shot.display());
    })
    .await
    .expect("the Chromium check did not finish in time");
}

#[tokio::test]
async fn a_pseudonymised_report_through_the_running_service_names_nobody() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        seed(&data).await;
        let data_set = format!("data_dir={:?}", data.display().to_string());
        // The retention purge runs on the real clock: keep 2026's records whenever the
        // test runs.
        let mut running =
            SafeGate::start(&[&data_set, "report.weekly=false", "store.retention_days=0"]).await;
        let mut pseudonyms = Vec::new();
        for run in ["a", "b"] {
            let out = dir.path().join(run);
            let (ok, stdout, stderr) = safegate(
                &data,
                &[
                    "report",
                    "weekly",
                    "--week",
                    "2026-W47",
                    "--pseudonymise",
                    "--out",
                    &out.display().to_string(),
                ],
            )
            .await;
            assert!(ok, "{stdout}\n{stderr}");
            let mut all = String::new();
            for entry in std::fs::read_dir(&out).unwrap() {
                let path = entry.unwrap().path();
                assert!(
                    path.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .contains("pseudonymised")
                );
                all.push_str(&std::fs::read_to_string(&path).unwrap());
            }
            for name in ["ada", "bea", "10.0.0.7", "year6"] {
                assert!(
                    !mentions(&all, name),
                    "{name} appears in the pseudonymised report"
                );
            }
            let json: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(out.join("safegate-report-2026-W47-pseudonymised.json"))
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(json["pseudonymised"], true);
            assert_eq!(json["summary"]["requests"], 4);
            // ada's log-in is a shared one (year6): "P-... on C-..." or, with no
            // computer name, the address's pseudonym.
            let row = json["searches"][0]["who"].as_str().unwrap();
            let (who, computer) = row.split_once(" on ").unwrap();
            assert!(who.starts_with("P-") && computer.starts_with("P-"), "{row}");
            let who = who.to_owned();
            assert_eq!(
                json["alerts"][0]["who"],
                who.as_str(),
                "the same person, the same pseudonym"
            );
            pseudonyms.push(who);
        }
        assert_eq!(pseudonyms[0], pseudonyms[1], "pseudonyms are stable");
        let key = data.join("report-pseudonym.key");
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        running
            .wait_for_log("report weekly week=2026-W47 pseudonymised")
            .await;
        // The alerts commands go through the control socket too.
        let (ok, listed, stderr) = safegate(&data, &["alerts", "list", "--json"]).await;
        assert!(ok, "{stderr}");
        let listed: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0]["who"], "ada");
        let id = listed[0]["id"].to_string();
        let (ok, shown, _) = safegate(
            &data,
            &["alerts", "close", &id, "--by", "head", "--note", "seen"],
        )
        .await;
        assert!(ok);
        assert!(shown.contains("closed"), "{shown}");
        // The service logs who changed it (once the command is done).
        let changed = format!("alerts set {id} status=closed by=");
        running
            .wait_for_logs(|lines| {
                lines
                    .iter()
                    .any(|l| l.contains(&changed) && l.contains("head"))
            })
            .await;
        let (ok, _, stderr) = safegate(&data, &["alerts", "show", "999999"]).await;
        assert!(!ok);
        assert!(stderr.contains("there is no alert 999999"), "{stderr}");
        running.terminate();
        assert!(running.wait().await.success());
    })
    .await;
}

/// `SAFEGATE_CLOCK_OFFSET_SECS` for Monday 23 November 2026, 07:05 school time: five
/// minutes after the report time.
fn monday_after_report_time_offset() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    ("2026-11-23T07:05:00Z"
        .parse::<jiff::Timestamp>()
        .unwrap()
        .as_second()
        - now)
        .to_string()
}

#[tokio::test]
async fn the_scheduler_makes_last_weeks_report_on_monday_and_mails_it() {
    scheduler_mails_last_weeks_report(false).await;
}

#[tokio::test]
async fn a_report_made_by_hand_before_monday_is_still_mailed_once() {
    scheduler_mails_last_weeks_report(true).await;
}

/// The scheduler on Monday 07:05 mails last week's report once, across a restart;
/// with `made_by_hand`, the report was made with `safegate report weekly` earlier.
async fn scheduler_mails_last_weeks_report(made_by_hand: bool) {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        seed(&data).await;
        if made_by_hand {
            let out = data.join("reports").display().to_string();
            let (ok, stdout, stderr) = safegate(
                &data,
                &["report", "weekly", "--week", "2026-W47", "--out", &out],
            )
            .await;
            assert!(ok, "{stdout}\n{stderr}");
        }
        let smtp = SmtpSink::start().await;
        let offset = monday_after_report_time_offset();
        let sets = [
            format!("data_dir={:?}", data.display().to_string()),
            "report.weekly=true".to_owned(),
            "store.retention_days=0".to_owned(),
            "report.day=\"mon\"".to_owned(),
            "report.time=\"07:00\"".to_owned(),
            "report.email_to=[\"head@school.test\", \"dsl@school.test\"]".to_owned(),
            "delivery.smtp.host=\"127.0.0.1\"".to_owned(),
            format!("delivery.smtp.port={}", smtp.port),
            "delivery.smtp.security=\"none\"".to_owned(),
        ];
        let refs: Vec<&str> = sets.iter().map(String::as_str).collect();
        let mut running =
            SafeGate::start_with_env(&refs, &[("SAFEGATE_CLOCK_OFFSET_SECS", &offset)]).await;
        let mails = smtp.wait_for(1).await;
        let mail = &mails[0];
        assert_eq!(mail.to, ["<head@school.test>", "<dsl@school.test>"]);
        assert!(
            mail.data.contains("Weekly sweep report 2026-W47"),
            "{}",
            mail.data
        );
        assert!(mail.data.contains("safegate-report-2026-W47.html"));
        assert!(mail.data.contains("safegate-report-2026-W47-searches.csv"));
        let html = data.join("reports").join("safegate-report-2026-W47.html");
        assert!(html.exists());
        if made_by_hand {
            running.wait_for_log("weekly report already made").await;
            let attachments: Vec<String> = mail_parts(&mail.data)
                .iter()
                .filter_map(attachment_name)
                .collect();
            assert!(
                attachments.len() >= 3
                    && attachments
                        .iter()
                        .all(|name| name.starts_with("safegate-report-2026-W47")),
                "{attachments:?}"
            );
        } else {
            running.wait_for_log("weekly report made").await;
        }
        running.wait_for_log("e-mail: delivered").await;
        running.terminate();
        assert!(running.wait().await.success());
        assert!(
            data.join("reports")
                .join(".safegate-report-2026-W47.mailed")
                .exists()
        );

        // A restart the same morning does not make or send it again.
        let mut again =
            SafeGate::start_with_env(&refs, &[("SAFEGATE_CLOCK_OFFSET_SECS", &offset)]).await;
        again.wait_for_log("weekly report already made").await;
        again.wait_for_log("weekly report already mailed").await;
        again.terminate();
        assert!(again.wait().await.success());
        assert_eq!(smtp.mails().len(), 1);
        assert_eq!(
            again
                .logs()
                .iter()
                .filter(|l| l.contains("weekly report made"))
                .count(),
            0
        );
        // Without pseudonymised recipients the scheduler makes no pseudonymised variant.
        for entry in std::fs::read_dir(data.join("reports")).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!name.contains("pseudonymised"), "{name}");
        }
        assert!(
            !again.logs().iter().any(|l| l.contains("e-mail: delivered")),
            "mailed twice"
        );
    })
    .await;
}

/// One part of a multipart mail: its headers and its body, decoded.
struct MailPart {
    headers: String,
    body: String,
}

/// The parts of a `multipart/mixed` mail as the SMTP sink received it, with base64
/// and quoted-printable bodies decoded.
fn mail_parts(data: &str) -> Vec<MailPart> {
    use base64::Engine as _;
    let boundary = data
        .lines()
        .find_map(|line| line.split("boundary=").nth(1))
        .map(|b| b.trim().trim_matches('"').to_owned())
        .unwrap_or_else(|| panic!("not multipart:\n{data}"));
    let delimiter = format!("--{boundary}");
    data.split(delimiter.as_str())
        .skip(1)
        .filter(|part| !part.starts_with("--"))
        .map(|part| {
            let (headers, body) = part
                .split_once("\r\n\r\n")
                .unwrap_or_else(|| panic!("a part without a body:\n{part}"));
            let encoding = headers
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.trim()
                        .eq_ignore_ascii_case("content-transfer-encoding")
                        .then(|| value.trim().to_ascii_lowercase())
                })
                .unwrap_or_default();
            let body = match encoding.as_str() {
                "base64" => {
                    let text: String = body.split_whitespace().collect();
                    String::from_utf8(
                        base64::engine::general_purpose::STANDARD
                            .decode(text)
                            .unwrap(),
                    )
                    .unwrap()
                }
                "quoted-printable" => quoted_printable(body),
                _ => body.to_owned(),
            };
            MailPart {
                headers: headers.to_owned(),
                body,
            }
        })
        .collect()
}

/// Decodes quoted-printable text (soft line breaks, `=XX`).
fn quoted_printable(text: &str) -> String {
    let text = text.replace("=\r\n", "");
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// The attachment's file name, if the part is one (`filename="..."`, or in RFC 2231
/// pieces `filename*0="..."; filename*1="..."`).
fn attachment_name(part: &MailPart) -> Option<String> {
    let unfolded = part.headers.replace("\r\n ", " ").replace("\r\n\t", " ");
    let disposition = unfolded.lines().find(|line| {
        line.to_ascii_lowercase()
            .starts_with("content-disposition: attachment")
    })?;
    let name: String = disposition
        .split(';')
        .filter_map(|param| {
            let (key, value) = param.split_once('=')?;
            let key = key.trim();
            (key == "filename" || key.starts_with("filename*"))
                .then(|| value.trim().trim_matches('"').to_owned())
        })
        .collect();
    (!name.is_empty()).then_some(name)
}

#[tokio::test]
async fn the_scheduler_mails_the_pseudonymised_report_only_to_its_own_recipients_once() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        seed(&data).await;
        let smtp = SmtpSink::start().await;
        let offset = monday_after_report_time_offset();
        let sets = [
            format!("data_dir={:?}", data.display().to_string()),
            "report.weekly=true".to_owned(),
            "store.retention_days=0".to_owned(),
            "report.day=\"mon\"".to_owned(),
            "report.time=\"07:00\"".to_owned(),
            "report.email_to=[\"dsl@school.test\"]".to_owned(),
            "report.pseudonymised_email_to=[\"governors@school.test\", \"Safeguarding <lado@council.test>\"]"
                .to_owned(),
            "delivery.smtp.host=\"127.0.0.1\"".to_owned(),
            format!("delivery.smtp.port={}", smtp.port),
            "delivery.smtp.security=\"none\"".to_owned(),
        ];
        let refs: Vec<&str> = sets.iter().map(String::as_str).collect();
        let mut running =
            SafeGate::start_with_env(&refs, &[("SAFEGATE_CLOCK_OFFSET_SECS", &offset)]).await;
        smtp.wait_for(2).await;
        running
            .wait_for_logs(|lines| {
                lines
                    .iter()
                    .filter(|l| l.contains("weekly report made"))
                    .count()
                    == 2
            })
            .await;
        // Both deliveries logged before the restart (the mails are already in the sink).
        running
            .wait_for_logs(|lines| {
                lines
                    .iter()
                    .filter(|l| l.contains("e-mail: delivered"))
                    .count()
                    == 2
            })
            .await;
        running.terminate();
        assert!(running.wait().await.success());

        let mails = smtp.mails();
        assert_eq!(mails.len(), 2, "{mails:?}");
        let named = mails
            .iter()
            .find(|m| m.to == ["<dsl@school.test>"])
            .unwrap_or_else(|| panic!("no mail to the DSL: {mails:?}"));
        let pseudonymised = mails
            .iter()
            .find(|m| m.to == ["<governors@school.test>", "<lado@council.test>"])
            .unwrap_or_else(|| panic!("no mail to the governors and the LA: {mails:?}"));
        the_named_report_with_names_goes_only_to_the_dsl(named);
        let who = the_pseudonymised_report_names_nobody(pseudonymised);
        both_variants_are_kept_and_the_key_is_private(&data, &who);
        a_restart_the_same_morning_makes_and_sends_neither_again(&refs, &offset, &smtp).await;
    })
    .await;
}

/// The named report, with names, only to the DSL: its own attachments, none of the
/// pseudonymised ones.
fn the_named_report_with_names_goes_only_to_the_dsl(named: &Mail) {
    assert!(
        named
            .data
            .contains("Subject: [SafeGate] Weekly sweep report 2026-W47\r\n")
    );
    let parts = mail_parts(&named.data);
    let names: Vec<String> = parts.iter().filter_map(attachment_name).collect();
    assert!(
        names.contains(&"safegate-report-2026-W47.html".to_owned()),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n.contains("pseudonymised")),
        "{names:?}"
    );
    assert!(
        parts
            .iter()
            .any(|p| attachment_name(p).is_some() && p.body.contains("ada")),
        "the named report names people"
    );
}

/// The pseudonymised report: only its own files, and nobody's name or address in the
/// body or any attachment; its JSON says it is pseudonymised. Returns the pseudonym of
/// the first search's user.
fn the_pseudonymised_report_names_nobody(pseudonymised: &Mail) -> String {
    assert!(
        pseudonymised
            .data
            .contains("Weekly sweep report 2026-W47 (pseudonymised)"),
        "{}",
        pseudonymised.data
    );
    let parts = mail_parts(&pseudonymised.data);
    let names: Vec<String> = parts.iter().filter_map(attachment_name).collect();
    assert!(names.len() >= 3, "{names:?}");
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("safegate-report-2026-W47-pseudonymised")),
        "{names:?}"
    );
    assert!(names.contains(&"safegate-report-2026-W47-pseudonymised.html".to_owned()));
    assert!(
        parts.iter().any(|p| attachment_name(p).is_none()),
        "no text body"
    );
    for part in &parts {
        for name in ["ada", "bea", "10.0.0.7", "year6"] {
            assert!(
                !mentions(&part.body, name),
                "{name} in the pseudonymised mail:\n{}\n{}",
                part.headers,
                part.body
            );
        }
    }
    let json = parts
        .iter()
        .find(|p| {
            attachment_name(p).as_deref() == Some("safegate-report-2026-W47-pseudonymised.json")
        })
        .unwrap();
    let report: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    assert_eq!(report["pseudonymised"], true);
    assert_eq!(report["summary"]["requests"], 4);
    let who = report["searches"][0]["who"].as_str().unwrap();
    assert!(who.starts_with("P-"), "{who}");
    who.to_owned()
}

/// Both variants in data_dir/reports, in their own files (the pseudonymised one with
/// the pseudonym `who`, not the name); the key is private.
fn both_variants_are_kept_and_the_key_is_private(data: &Path, who: &str) {
    let reports = data.join("reports");
    let named_html =
        std::fs::read_to_string(reports.join("safegate-report-2026-W47.html")).unwrap();
    // "ada" as a word of its own: a pseudonym's hex digits may contain the letters.
    assert!(mentions(&named_html, "ada"));
    let pseudonymised_html =
        std::fs::read_to_string(reports.join("safegate-report-2026-W47-pseudonymised.html"))
            .unwrap();
    assert!(!mentions(&pseudonymised_html, "ada") && pseudonymised_html.contains(who));
    assert_eq!(
        std::fs::metadata(data.join("report-pseudonym.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
}

/// A restart the same morning makes and sends neither report again.
async fn a_restart_the_same_morning_makes_and_sends_neither_again(
    refs: &[&str],
    offset: &str,
    smtp: &SmtpSink,
) {
    let mut again = SafeGate::start_with_env(refs, &[("SAFEGATE_CLOCK_OFFSET_SECS", offset)]).await;
    let lines = again
        .wait_for_logs(|lines| {
            lines
                .iter()
                .filter(|l| l.contains("weekly report already made"))
                .count()
                == 2
        })
        .await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("already made") && l.contains("-pseudonymised.html")),
        "{lines:?}"
    );
    again
        .wait_for_logs(|lines| {
            lines
                .iter()
                .filter(|l| l.contains("weekly report already mailed"))
                .count()
                == 2
        })
        .await;
    again.terminate();
    assert!(again.wait().await.success());
    assert_eq!(smtp.mails().len(), 2);
    assert!(
        !again
            .logs()
            .iter()
            .any(|l| l.contains("weekly report made") || l.contains("e-mail: delivered"))
    );
}

/// Whether `text` has `name` as a word of its own (not inside a pseudonym such as
/// `P-dfe4228a5ada`, whose hex digits can spell a short name by chance).
fn mentions(text: &str, name: &str) -> bool {
    text.match_indices(name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

#[test]
fn a_name_is_found_as_a_word_not_inside_a_pseudonym() {
    assert!(mentions("<td>ada</td>", "ada"));
    assert!(mentions("ada", "ada"));
    assert!(mentions("user 10.0.0.7 at", "10.0.0.7"));
    assert!(!mentions("<td>P-dfe4228a5ada</td>", "ada"));
    assert!(!mentions("P-adab4e and metadata", "ada"));
}
