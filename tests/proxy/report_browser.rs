//! Report hygiene and the concern record, end to end with the running service: a week
//! whose pupils' traffic is mostly browser and system background (Chrome's update and
//! content-autofill, Windows Update) beside real visits and a self-harm alert.
//! `safegate report weekly` (through the control socket) writes private files into
//! `data_dir/reports`; `safegate alerts export` writes the concern record there too;
//! the headteacher sees both on the Reports page in headless Chromium, the report's
//! background line (screenshot) and, from the alert's page, the printable concern
//! record (screenshot, printed to PDF on one or two A4 pages). A technician is refused
//! the record. Screenshots go to target/screenshots/.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use safegate_store::{
    AlertKind, IdentifiedBy, NewAlert, NewUser, Outcome, Permission, Record, SearchTerms, SeenAs,
    Severity, Store,
};

use crate::auth::cheap_hash;
use crate::kit::bounded;
use crate::kit::browser::Browser;
use crate::kit::process::{SafeGate, run_to_end, shipped_config};

const PASSWORD: &str = "a long admin password";

fn micros(text: &str) -> u64 {
    text.parse::<jiff::Timestamp>().unwrap().as_microsecond() as u64
}

fn record(at: u64, user: &str, host: &str, path: &str) -> Record {
    Record {
        at_unix_micros: at,
        user: Some(user.to_owned()),
        role: "pupil".into(),
        group: Some("year6".into()),
        client: "10.0.3.57".parse::<IpAddr>().unwrap(),
        identified_by: IdentifiedBy::ProxyAuth,
        method: "GET".into(),
        scheme: "https".into(),
        host: host.into(),
        port: 443,
        path: Some(path.into()),
        categories: vec![],
        outcome: Outcome::Allowed,
        rule: "default".into(),
        status: 200,
        bytes_up: 100,
        bytes_down: 5000,
        duration_micros: 1_000_000,
        search: None,
        seen_as: SeenAs::Decrypted,
        user_agent: None,
        failure: None,
        computer: None,
        content: None,
    }
}

/// 2026-W47: every ten seconds for an hour on Tuesday, Chrome and Windows talk to
/// their update and autofill hosts while the pupils read the BBC; on Wednesday a
/// search for a self-harm phrase, 30 times (the alert keeps them all as evidence).
/// Returns the alert's id.
async fn seed(data_dir: &Path) -> u64 {
    let store = Store::open(data_dir).unwrap();
    for (name, permission) in [("head", Permission::Reports), ("tech", Permission::Metrics)] {
        store
            .add_user(&NewUser {
                name: name.into(),
                display_name: None,
                role: "staff".into(),
                group: None,
                permissions: [permission].into_iter().collect(),
                password_hash: cheap_hash(PASSWORD),
                shared: false,
            })
            .unwrap();
    }
    let start = micros("2026-11-17T09:00:00Z");
    let mut records = Vec::new();
    for i in 0..360u64 {
        let at = start + i * 10_000_000;
        let host = [
            "update.googleapis.com",
            "content-autofill.googleapis.com",
            "dl.delivery.mp.microsoft.com",
        ][(i % 3) as usize];
        records.push(record(at, "year6", host, "/service/update2/json"));
        if i % 4 == 0 {
            records.push(record(at + 1, "year6", "www.bbc.co.uk", "/bitesize"));
        }
    }
    let mut evidence = Vec::new();
    for i in 0..30u64 {
        let mut search = record(
            micros("2026-11-18T13:05:00Z") + i * 20_000_000,
            "year6",
            "www.google.com",
            "/search?q=how+to+hurt+myself",
        );
        search.search = Some(SearchTerms {
            engine: "google".into(),
            terms: "how to hurt myself <script>alert(1)</script>".into(),
        });
        if i == 1 {
            // A tracking URL kilobytes long still fits the record.
            search.path = Some(format!(
                "/search?q=how+to+hurt+myself&ei={}",
                "x".repeat(4000)
            ));
        }
        evidence.push(search);
    }
    records.extend(evidence.iter().cloned());
    store.write_records(&records).unwrap();
    let raised = store
        .raise_alert(NewAlert {
            kind: AlertKind::SafeguardingPhrase,
            severity: Severity::High,
            who: "year6".into(),
            user: Some("year6".into()),
            role: "pupil".into(),
            group: Some("year6".into()),
            subject: "self-harm".into(),
            summary: "self-harm phrase \"hurt myself\" in a search </td><h1>x".into(),
            at_unix_micros: evidence[0].at_unix_micros,
            evidence,
            client: Some("10.0.3.57".parse().unwrap()),
            computer: Some("ICT-PC07".into()),
        })
        .unwrap();
    store.flush().await.unwrap();
    raised.alert.id
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

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Pages of a PDF: its page objects, checked against the page tree's count.
fn pdf_pages(pdf: &[u8]) -> usize {
    let text = String::from_utf8_lossy(pdf);
    let objects = text
        .match_indices("/Type /Page")
        .filter(|(at, _)| !text[at + 11..].starts_with('s'))
        .count();
    if let Some(count) = text
        .split("/Count ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<usize>().ok())
    {
        assert_eq!(count, objects, "page tree and page objects disagree");
    }
    objects
}

async fn sign_in(browser: &Browser, admin: &str, user: &str) {
    browser.goto(&format!("{admin}/login")).await;
    browser.fill("input[name=user]", user).await;
    browser.fill("input[name=password]", PASSWORD).await;
    browser
        .click("form[action='/login'] button[type=submit]")
        .await;
    browser.wait_for_text("Sign out").await;
}

/// The command line writes the week's report and the concern record, private, into
/// `data_dir/reports`; the named files are the ones the Reports page will list.
async fn command_line_writes_into_the_reports_folder(data: &Path, id: u64) {
    let (ok, stdout, stderr) = safegate(data, &["report", "weekly", "--week", "2026-W47"]).await;
    assert!(ok, "{stdout}\n{stderr}");
    let reports = data.join("reports");
    assert_eq!(mode(&reports), 0o700);
    let html = reports.join("safegate-report-2026-W47.html");
    assert!(stdout.contains(&html.display().to_string()), "{stdout}");
    let names: Vec<String> = std::fs::read_dir(&reports)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 10, "{names:?}");
    for name in &names {
        assert_eq!(mode(&reports.join(name)), 0o600, "{name}");
    }
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(reports.join("safegate-report-2026-W47.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json["summary"]["background_requests"], 360);
    let sites: Vec<&str> = json["sites"][0]["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["site"].as_str().unwrap())
        .collect();
    assert_eq!(
        sites,
        ["bbc.co.uk", "google.com"],
        "background is no website visited"
    );
    let uncategorised = json["uncategorised"].to_string();
    assert!(!uncategorised.contains("googleapis") && !uncategorised.contains("microsoft"));

    let (ok, stdout, stderr) = safegate(data, &["alerts", "export", &id.to_string()]).await;
    assert!(ok, "{stdout}\n{stderr}");
    let exported = std::fs::read_dir(&reports)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("safegate-concern-alert-"))
        .unwrap();
    assert_eq!(mode(&exported), 0o600);
    assert!(stdout.contains(&exported.display().to_string()), "{stdout}");
    let (ok, page, _) = safegate(data, &["alerts", "export", &id.to_string(), "--out", "-"]).await;
    assert!(ok);
    assert!(page.contains(&format!("Safeguarding concern record: alert {id}")));
    assert!(page.contains("10.0.3.57: 30 records"), "{page}");
    let (ok, _, stderr) = safegate(data, &["alerts", "export", "999999"]).await;
    assert!(
        !ok && stderr.contains("there is no alert 999999"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_background_line_and_the_concern_record_in_a_browser() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let id = seed(&data).await;
        let data_set = format!("data_dir={:?}", data.display().to_string());
        let mut running =
            SafeGate::start(&[&data_set, "report.weekly=false", "store.retention_days=0"]).await;
        command_line_writes_into_the_reports_folder(&data, id).await;
        running.wait_for_log("report weekly week=2026-W47").await;

        let Some(browser) = Browser::start().await else {
            return;
        };
        let admin = format!("http://{}", running.admin);
        sign_in(&browser, &admin, "head").await;
        browser.goto(&format!("{admin}/reports")).await;
        let listed = browser.wait_for_text("2026-W47").await;
        assert!(listed.contains(&format!("alert {id}, ")), "{listed}");
        browser.screenshot("reports-page-lists-everything").await;
        browser
            .click("a[href='/reports/file/safegate-report-2026-W47.html']")
            .await;
        browser.wait_for_text("Websites visited").await;
        let line = browser
            .script("return document.querySelector('tr.background').innerText")
            .await;
        let line = line.as_str().unwrap_or_default().to_owned();
        assert!(
            line.contains("Background: browser, system and app updates")
                && line.contains("update.googleapis.com")
                && line.contains("360"),
            "{line}"
        );
        browser
            .element_screenshot("#sites ~ table", "report-background-line")
            .await;
        browser
            .script("document.getElementById('sites').scrollIntoView(); return 0")
            .await;
        browser.screenshot("report-websites-visited").await;

        browser.goto(&format!("{admin}/alerts/{id}")).await;
        browser
            .click(&format!("a[href='/alerts/{id}/record']"))
            .await;
        let record = browser.wait_for_text("Safeguarding concern record").await;
        for expected in [
            "year6 (pupil, year6)",
            "10.0.3.57: 30 records",
            "Worrying words in a search",
            "how to hurt myself <script>alert(1)</script>",
            "</td><h1>x",
            "10 more records are kept",
            "None recorded yet.",
        ] {
            assert!(record.contains(expected), "{expected}: {record}");
        }
        assert_eq!(
            browser
                .script("return document.querySelectorAll('script, h1').length")
                .await,
            1,
            "the page's own heading only"
        );
        browser.screenshot("concern-record").await;
        let pdf = browser.print_pdf().await;
        assert!(pdf.starts_with(b"%PDF"), "not a PDF");
        let shots = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/screenshots/concern-record.pdf");
        std::fs::write(&shots, &pdf).unwrap();
        let pages = pdf_pages(&pdf);
        println!("concern record prints on {pages} A4 pages");
        assert!((1..=2).contains(&pages), "{pages} pages");

        // Back to the alert from the record's screen-only link; a technician may not
        // see the record.
        browser.click(&format!("a[href='/alerts/{id}']")).await;
        browser.wait_for_text("Printable concern record").await;
        browser
            .click("header form[action='/logout'] button[type=submit]")
            .await;
        sign_in(&browser, &admin, "tech").await;
        browser.goto(&format!("{admin}/alerts/{id}/record")).await;
        let refused = browser.text().await;
        assert!(
            refused.contains("you do not have the permission"),
            "{refused}"
        );
        running.terminate();
        assert!(running.wait().await.success());
    })
    .await;
}
