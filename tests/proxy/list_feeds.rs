//! List feeds (issue 19, points 1, 2 and 5): a UT1 tar.gz and a hosts file served from
//! 127.0.0.1 are installed by `safegate lists update`; a running SafeGate whose
//! schedule is a second updates them itself (conditional GET) and blocks a new entry
//! without a restart; a truncated archive, an HTML page served with 200 and a list that
//! lost 80 % of its entries are refused with the old lists in force; rollback puts the
//! previous version back; a feed past `lists.stale_after` is a warning, not unready; a
//! feed served by date is fetched again only when changed (If-Modified-Since), and a
//! download that does not match the checksum list its publisher serves is refused.

use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::kit::bounded;
use crate::kit::files::FileServer;
use crate::kit::process::{SafeGate, run_to_end, shipped_config};
use crate::kit::receivers::Webhook;
use crate::ops::{doctor, poll, readyz_until};

const POLICY: &str = r#"timezone = "Europe/London"
default_role = "pupil"

[categories.gambling]
sources = [{ format = "ut1", path = "../blocklists/ut1/gambling" }]

[categories.ads]
sources = [{ format = "hosts", path = "../blocklists/ads/list.txt" }]

[roles.pupil]
block = ["gambling", "ads"]

[roles.staff]
[roles.filter-admin]
"#;

/// A UT1-style tar.gz: `blacklists/gambling/domains` with `domains`.
fn ut1(domains: &[String]) -> Vec<u8> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    let text: String = domains.iter().map(|d| format!("{d}\n")).collect();
    for (name, data) in [
        ("blacklists/gambling/domains", text.as_bytes()),
        ("blacklists/gambling/usage", b"black\n".as_slice()),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        builder.append_data(&mut header, name, data).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// `bet.test` and 19 other bookmakers, plus `extra`.
fn bookmakers(extra: &[&str]) -> Vec<String> {
    let mut list = vec!["bet.test".to_owned()];
    list.extend((0..19).map(|i| format!("bookmaker{i}.test")));
    list.extend(extra.iter().map(|e| (*e).to_owned()));
    list
}

/// The `--set`s naming the policy, the feeds and (for a running SafeGate) its folders.
fn feed_sets(policy: &Path, server: &FileServer) -> Vec<String> {
    vec![
        format!("policy.file={:?}", policy.display().to_string()),
        format!(
            "lists.feeds=[{{name=\"ut1\", format=\"ut1\", url={:?}}}, \
             {{name=\"ads\", format=\"hosts\", url={:?}}}]",
            server.url("/blacklists.tar.gz"),
            server.url("/hosts")
        ),
    ]
}

/// Runs `safegate lists ARGS` with `sets`.
async fn lists(args: &[&str], sets: &[String]) -> (bool, String, String) {
    let config = shipped_config().display().to_string();
    let mut all: Vec<&str> = vec!["lists"];
    all.extend_from_slice(args);
    all.extend(["--config", config.as_str()]);
    for set in sets {
        all.extend(["--set", set.as_str()]);
    }
    let (status, stdout, stderr) = run_to_end(&all).await;
    (status.success(), stdout, stderr)
}

async fn status_of(safegate: &SafeGate, url: &str) -> u16 {
    safegate
        .client()
        .get(url)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn metric(safegate: &SafeGate, name: &str) -> Option<String> {
    let text = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{}/metrics", safegate.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(name))
        .map(|l| l[name.len()..].trim().to_owned())
}

/// Waits until `safegate_list_update_failures_total{feed="ut1"}` reaches `n`.
async fn failures_reach(safegate: &SafeGate, n: u64) {
    poll(&format!("{n} failed ut1 updates"), || async move {
        let value = metric(
            safegate,
            "safegate_list_update_failures_total{feed=\"ut1\"}",
        )
        .await?;
        (value.parse::<u64>().ok()? >= n).then_some(())
    })
    .await;
}

/// Sets up the folders, serves the first versions and installs them with the CLI.
async fn installed_first_versions(dir: &Path, server: &FileServer) -> std::path::PathBuf {
    let policy_dir = dir.join("policy");
    std::fs::create_dir(&policy_dir).unwrap();
    let policy = policy_dir.join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    server.put("/blacklists.tar.gz", ut1(&bookmakers(&[])));
    server.put("/hosts", "# ads\n0.0.0.0 ads.test\n0.0.0.0 tracker.test\n");
    let sets = feed_sets(&policy, server);
    let (ok, out, err) = lists(&["update"], &sets).await;
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("ut1: installed 1 category, 20 entries"),
        "{out}"
    );
    assert!(
        out.contains("ads: installed 1 category, 2 entries"),
        "{out}"
    );
    assert!(out.contains("SafeGate is not running"), "{out}");
    let installed = dir.join("blocklists/ut1/gambling/domains");
    assert!(installed.is_file(), "{}", installed.display());
    assert!(dir.join("blocklists/ads/list.txt").is_file());
    policy
}

#[tokio::test]
async fn a_running_safegate_updates_its_feeds_refuses_bad_ones_and_rolls_back() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let server = FileServer::start().await;
        let policy = installed_first_versions(dir.path(), &server).await;
        let first_etag = FileServer::etag_of(&ut1(&bookmakers(&[])));

        let mut sets = feed_sets(&policy, &server);
        sets.extend([
            "lists.schedule=\"1\"".to_owned(),
            "policy.watch=false".to_owned(),
        ]);
        let set_refs: Vec<&str> = sets.iter().map(String::as_str).collect();
        let mut safegate = SafeGate::start(&set_refs).await;
        assert_eq!(status_of(&safegate, "http://bet.test/").await, 403);
        assert_eq!(status_of(&safegate, "http://ads.test/").await, 403);
        // Allowed: not the block page (no DNS here, so the proxy answers 502).
        assert_ne!(status_of(&safegate, "http://newbet.test/").await, 403);

        // A new version on the server: fetched on the schedule and in force, no restart.
        let second = ut1(&bookmakers(&["newbet.test"]));
        server.put("/blacklists.tar.gz", second.clone());
        poll("newbet.test blocked after the scheduled update", || async {
            (status_of(&safegate, "http://newbet.test/").await == 403).then_some(())
        })
        .await;
        // Conditional GET: the version installed was named in If-None-Match.
        assert!(
            server.conditions().contains(&Some(first_etag.clone())),
            "{:?}",
            server.conditions()
        );
        let entries = metric(&safegate, "safegate_list_entries{list=\"ut1/gambling\"}").await;
        assert_eq!(entries.as_deref(), Some("21"));
        assert!(
            metric(&safegate, "safegate_list_age_seconds{list=\"ads\"}")
                .await
                .is_some()
        );

        // A truncated archive, a web page with 200, and 80 % of the list gone: each is
        // refused, counted and logged, and the lists in force stay.
        let cut = second[..second.len() / 2].to_vec();
        let html = "<!DOCTYPE html>\n<html><body>Service unavailable</body></html>\n";
        let shrunk = ut1(&bookmakers(&[])[..4]);
        let cases: [(Vec<u8>, &str); 3] = [
            (cut, "damaged or incomplete"),
            (html.as_bytes().to_vec(), "web page (HTML)"),
            (shrunk, "shrank from 21 to 4 entries"),
        ];
        for (n, (body, why)) in cases.into_iter().enumerate() {
            server.put("/blacklists.tar.gz", body);
            let line = safegate
                .wait_for_logs(|lines| lines.iter().any(|l| l.contains(why)))
                .await;
            let line = line.iter().rfind(|l| l.contains(why)).unwrap();
            assert!(line.contains("list feed update failed"), "{line}");
            failures_reach(&safegate, n as u64 + 1).await;
            assert_eq!(
                status_of(&safegate, "http://newbet.test/").await,
                403,
                "{why}"
            );
            assert_eq!(status_of(&safegate, "http://bet.test/").await, 403, "{why}");
        }
        let domains = std::fs::read_to_string(dir.path().join("blocklists/ut1/gambling/domains"));
        assert!(domains.unwrap().contains("newbet.test"));

        // `lists status` names the failure; rollback brings back the first version and
        // the running SafeGate reloads it (SIGHUP through the control socket's peer).
        let mut cli_sets = feed_sets(&policy, &server);
        cli_sets.push(format!(
            "data_dir={:?}",
            safegate.data_dir().display().to_string()
        ));
        let (ok, out, err) = lists(&["status"], &cli_sets).await;
        assert!(ok, "{err}");
        assert!(
            out.contains("gambling") && out.contains("21 entries"),
            "{out}"
        );
        assert!(out.contains("last update failed"), "{out}");
        let (ok, out, err) = lists(&["rollback", "--feed", "ut1"], &cli_sets).await;
        assert!(ok, "{out}{err}");
        assert!(
            out.contains("Asked the running SafeGate to reload"),
            "{out}"
        );
        poll("newbet.test allowed after the rollback", || async {
            (status_of(&safegate, "http://newbet.test/").await != 403).then_some(())
        })
        .await;
        assert_eq!(status_of(&safegate, "http://bet.test/").await, 403);
        let (ok, out, _) = lists(&["status", "--json"], &cli_sets).await;
        assert!(ok);
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json[0]["name"], "ut1");
        assert_eq!(json[0]["categories"]["gambling"], 20);
        assert_eq!(json[0]["has_previous"], true);
    })
    .await;
}

#[tokio::test]
async fn a_stale_feed_is_a_warning_in_readyz_and_doctor_not_unready() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let server = FileServer::start().await;
        let policy = installed_first_versions(dir.path(), &server).await;
        let webhook = Webhook::start().await;
        let mut sets = feed_sets(&policy, &server);
        sets.push("lists.stale_after=\"1s\"".to_owned());
        let hook = format!("delivery.webhook_url={:?}", webhook.url);
        let mut set_refs: Vec<&str> = sets.iter().map(String::as_str).collect();
        set_refs.push(hook.as_str());
        let safegate = SafeGate::start(&set_refs).await;
        assert_eq!(status_of(&safegate, "http://bet.test/").await, 403);
        let body = readyz_until(&safegate, 200, "WARN: list feeds").await;
        assert!(body.starts_with("ready"), "{body}");
        assert!(body.contains("feed ut1 was last updated"), "{body}");

        let mut args: Vec<String> = Vec::new();
        for set in sets.iter().cloned().chain([
            format!("data_dir={:?}", safegate.data_dir().display().to_string()),
            format!("proxy.listen=\"{}\"", safegate.proxy),
            format!("admin.listen=\"{}\"", safegate.admin),
        ]) {
            args.extend(["--set".to_owned(), set]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (_, out) = doctor(&args).await;
        assert!(out.contains("WARN  list feed"), "{out}");
        assert!(out.contains("more than lists.stale_after"), "{out}");

        // The technician is told once per stale feed (here through the webhook).
        let told = poll("a stale-feed notice for each feed", || async {
            let kinds: Vec<serde_json::Value> = webhook
                .bodies()
                .iter()
                .filter_map(|body| serde_json::from_str::<serde_json::Value>(body).ok())
                .filter(|value| value["system"]["kind"] == "list_feed_stale")
                .collect();
            (kinds.len() >= 2).then_some(kinds)
        })
        .await;
        let summaries: Vec<String> = told
            .iter()
            .map(|v| {
                v["system"]["summary"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        assert!(
            summaries.iter().any(|s| s.contains("feed ut1")),
            "{summaries:?}"
        );
        assert!(
            summaries.iter().any(|s| s.contains("feed ads")),
            "{summaries:?}"
        );
        // Once each, however often staleness is looked at (every second here): a later
        // look (the stale warning logged again would be a second notice) adds none.
        let looks = safegate
            .logs()
            .iter()
            .filter(|l| l.contains("was last updated"))
            .count();
        assert!(looks >= 2, "the notices were logged");
        let stale_notices = webhook
            .bodies()
            .iter()
            .filter(|body| body.contains("list_feed_stale"))
            .count();
        assert_eq!(stale_notices, 2, "{summaries:?}");
    })
    .await;
}

#[tokio::test]
async fn feeds_are_validated_with_clear_errors() {
    bounded(async {
        let config = shipped_config().display().to_string();
        let bad = "lists.feeds=[{name=\"ut 1\", format=\"zip\", url=\"ftp://x\"}, \
                   {name=\"a\", format=\"hosts\", url=\"/tmp/a\", checksums=\"gopher://x\"}, \
                   {name=\"a\", format=\"hosts\", url=\"/tmp/b\"}]";
        let (status, stdout, stderr) = run_to_end(&[
            "config",
            "check",
            "--config",
            &config,
            "--set",
            bad,
            "--set",
            "lists.schedule=\"weekly\"",
        ])
        .await;
        assert!(!status.success(), "{stdout}");
        for needle in [
            "lists.feeds[0].name",
            "lists.feeds[0].format",
            "lists.feeds[0].url",
            "lists.feeds[1].checksums",
            "another feed is already named \"a\"",
            "lists.schedule",
        ] {
            assert!(stderr.contains(needle), "{needle}: {stderr}");
        }
    })
    .await;
}

/// `md5sum`-style line for `body` named `name`.
fn md5_line(body: &[u8], name: &str) -> String {
    use md5::Digest;
    let hex: String = md5::Md5::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{hex}  {name}\n")
}

#[tokio::test]
async fn a_feed_by_date_is_fetched_when_changed_and_checked_against_its_checksums() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let server = FileServer::start().await;
        let policy_dir = dir.path().join("policy");
        std::fs::create_dir(&policy_dir).unwrap();
        let policy = policy_dir.join("policy.toml");
        std::fs::write(&policy, POLICY).unwrap();
        let sets = vec![
            format!("policy.file={:?}", policy.display().to_string()),
            format!(
                "lists.feeds=[{{name=\"ut1\", format=\"ut1\", url={:?}, checksums={:?}}}]",
                server.url("/download/blacklists.tar.gz"),
                server.url("/download/MD5SUM.LST")
            ),
        ];
        let installed = dir.path().join("blocklists/ut1/gambling/domains");
        let monday = "Mon, 07 Dec 2026 03:00:00 GMT";
        let first = ut1(&bookmakers(&[]));
        server.put_dated("/download/blacklists.tar.gz", first.clone(), monday);
        let checksums = md5_line(b"other", "adult.tar.gz") + &md5_line(&first, "blacklists.tar.gz");
        server.put("/download/MD5SUM.LST", checksums);
        let (ok, out, err) = lists(&["update"], &sets).await;
        assert!(ok, "{out}{err}");
        assert!(
            out.contains("ut1: installed 1 category, 20 entries"),
            "{out}"
        );

        // Unchanged on the server: the date installed goes back as If-Modified-Since.
        let (ok, out, err) = lists(&["update"], &sets).await;
        assert!(ok && out.contains("ut1: unchanged"), "{out}{err}");
        assert_eq!(
            server.modified_since().last(),
            Some(&Some(monday.to_owned()))
        );

        // A new archive whose checksum list was not updated with it: refused, the
        // installed lists stay; then the right checksum, and it is installed.
        let tuesday = "Tue, 08 Dec 2026 03:00:00 GMT";
        let second = ut1(&bookmakers(&["newbet.test"]));
        server.put_dated("/download/blacklists.tar.gz", second.clone(), tuesday);
        let (ok, out, err) = lists(&["update"], &sets).await;
        assert!(!ok, "{out}");
        assert!(err.contains("but the checksum list says"), "{err}");
        assert!(err.contains("the lists in force are kept"), "{err}");
        let domains = || std::fs::read_to_string(&installed).unwrap();
        assert!(!domains().contains("newbet.test"));
        server.put("/download/MD5SUM.LST", md5_line(b"x", "adult.tar.gz"));
        let (ok, _, err) = lists(&["update"], &sets).await;
        assert!(!ok);
        assert!(err.contains("has no line for blacklists.tar.gz"), "{err}");
        server.put(
            "/download/MD5SUM.LST",
            md5_line(&second, "blacklists.tar.gz"),
        );
        let (ok, out, err) = lists(&["update"], &sets).await;
        assert!(ok, "{out}{err}");
        assert!(domains().contains("newbet.test"));
        let (ok, out, _) = lists(&["status"], &sets).await;
        assert!(ok && !out.contains("last update failed"), "{out}");
    })
    .await;
}
