//! A full disk: SafeGate runs with its data directory on a tiny tmpfs, which a filler
//! file then fills. While the visit log cannot be written the proxy keeps filtering
//! (`store.when_full = "keep-filtering"`) or answers `503` (`"refuse-traffic"`),
//! `/readyz` says the store is failing and why, and the metrics move; once the filler
//! is deleted the writer writes the records it kept, and new ones, without a restart.
//! The technician is told both times through the alert delivery (a webhook here).
//!
//! Mounting a tmpfs needs root (as in CI, where `.ci/run` runs as root); without it the
//! tests print why they are skipped and pass.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use safegate_store::{Query, Store};

use crate::kit::bounded;
use crate::kit::origin::Origin;
use crate::kit::process::SafeGate;
use crate::kit::receivers::Webhook;

/// How long any one condition is polled for.
const DEADLINE: Duration = Duration::from_secs(20);

/// A tmpfs mounted on a temporary directory, unmounted when dropped (also when the
/// test fails).
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `"16m"`); `None` (with the reason printed) when
    /// this process may not mount.
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        if !rustix::process::geteuid().is_root() {
            eprintln!("SKIP: mounting a tmpfs for the disk-full test needs root (CI runs as root)");
            return None;
        }
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success(), "mount -t tmpfs failed as root: {status}");
        Some(Self { path, _dir: dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: SafeGate may still have its files open when a failed test unwinds.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Writes `path` until the file system is full; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0x5a_u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(error) if error.raw_os_error() == Some(28) => break,
            Err(error) => panic!("filling {}: {error}", path.display()),
        }
    }
    // The last pages too: write smaller pieces into what is left.
    let small = [0x5a_u8; 512];
    while file.write(&small).is_ok_and(|n| n > 0) {
        written += 512;
    }
    let _ = file.sync_all();
    written
}

async fn readyz(safegate: &SafeGate) -> (u16, String) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let response = client
        .get(format!("http://{}/readyz", safegate.admin))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

async fn metrics(safegate: &SafeGate) -> HashMap<String, f64> {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let text = client
        .get(format!("http://{}/metrics", safegate.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter_map(|(name, value)| Some((name.to_owned(), value.parse().ok()?)))
        .collect()
}

/// Sends one request for `path` on the origin through the proxy: its status and body.
async fn visit(safegate: &SafeGate, origin: &Origin, path: &str) -> (u16, String) {
    let response = safegate
        .client()
        .get(format!("http://127.0.0.1:{}{path}", origin.addr.port()))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// Sends requests (tagged `tag-N`) until `/readyz` says the visit log cannot be
/// written; returns how many were sent and the `/readyz` text.
async fn visit_until_failing(
    safegate: &SafeGate,
    origin: &Origin,
    tag: &str,
    expect_status: u16,
) -> (usize, String) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut sent = 0;
    loop {
        for _ in 0..20 {
            let (status, body) = visit(safegate, origin, &format!("/uri?{tag}-{sent}")).await;
            sent += 1;
            if status == 503 && expect_status == 503 {
                assert!(
                    body.contains(
                        "SafeGate cannot record visits because its disk is full; the \
                         technician has been told"
                    ),
                    "{body}"
                );
            } else if expect_status == 503 {
                // Until the writer has failed once, requests pass.
                assert_eq!(status, 200, "{body}");
            } else {
                assert_eq!(
                    status, 200,
                    "filtering goes on while the disk is full: {body}"
                );
            }
        }
        let (status, text) = readyz(safegate).await;
        if status == 503 && text.contains("cannot write the visit log") {
            return (sent, text);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz did not report the full disk within {DEADLINE:?} ({sent} requests): {text}"
        );
    }
}

/// Polls until `done` holds for `/readyz` and the metrics.
async fn wait_until(
    safegate: &SafeGate,
    what: &str,
    done: impl Fn(u16, &str, &HashMap<String, f64>) -> bool,
) -> (String, HashMap<String, f64>) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (status, text) = readyz(safegate).await;
        let samples = metrics(safegate).await;
        if done(status, &text, &samples) {
            return (text, samples);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {DEADLINE:?}; /readyz {status}: {text}"
        );
        // Poll interval of a bounded poll, not a synchronisation point.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Opens the database after SafeGate has stopped (sled may hold its lock a moment).
async fn open_store(data_dir: &Path) -> Store {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match Store::open(data_dir) {
            Ok(store) => return store,
            Err(error) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "database not reopened: {error}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn start(tmpfs: &Tmpfs, when_full: &str, webhook: &Webhook) -> SafeGate {
    let data_dir = format!("data_dir={:?}", tmpfs.path.display().to_string());
    let when_full = format!("store.when_full=\"{when_full}\"");
    let webhook = format!("delivery.webhook_url={:?}", webhook.url);
    SafeGate::start(&[
        data_dir.as_str(),
        "store.flush_interval=\"50ms\"",
        when_full.as_str(),
        webhook.as_str(),
        "auth.bindings=[{ network = \"127.0.0.0/8\", role = \"filter-admin\" }]",
    ])
    .await
}

/// Waits until the webhook has had a system notice of `kind`.
async fn notice(webhook: &Webhook, kind: &str) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let found = webhook.bodies().iter().find_map(|body| {
            let value: serde_json::Value = serde_json::from_str(body).ok()?;
            (value["system"]["kind"] == kind).then_some(value)
        });
        if let Some(value) = found {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {kind} notice within {DEADLINE:?}: {:?}",
            webhook.bodies()
        );
        // Poll interval of a bounded poll, not a synchronisation point.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The records whose path carries `tag`.
fn tagged(store: &Store, tag: &str) -> usize {
    store
        .query(&Query::default())
        .unwrap()
        .iter()
        .filter(|record| {
            record
                .path
                .as_deref()
                .is_some_and(|path| path.contains(tag))
        })
        .count()
}

#[tokio::test]
async fn a_full_disk_is_reported_and_recovered_from_without_a_restart() {
    let Some(tmpfs) = Tmpfs::mount("16m") else {
        return;
    };
    bounded(async {
        let origin = Origin::start().await;
        let webhook = Webhook::start().await;
        let mut safegate = start(&tmpfs, "keep-filtering", &webhook).await;
        assert_eq!(visit(&safegate, &origin, "/uri?before").await.0, 200);
        wait_until(&safegate, "the first record flushed", |status, _, m| {
            status == 200 && m["safegate_visit_log_records_flushed_total"] >= 1.0
        })
        .await;

        let filler = tmpfs.path.join("filler");
        let filled = fill(&filler);
        let (sent, text) = visit_until_failing(&safegate, &origin, "full", 200).await;
        assert!(
            text.contains("FAIL: store: cannot write the visit log: disk full since "),
            "{text}"
        );
        assert!(text.contains("records waiting"), "{text}");
        let (_, during) = wait_until(&safegate, "the failure in the metrics", |_, _, m| {
            m["safegate_store_writable"] == 0.0 && m["safegate_store_write_failures_total"] >= 1.0
        })
        .await;
        // The technician is told, through the alert delivery (here a webhook).
        let told = notice(&webhook, "store_not_writable").await;
        let summary = told["system"]["summary"].as_str().unwrap();
        assert!(
            summary.starts_with("cannot write the visit log: disk full since "),
            "{told}"
        );
        // Still filtering: a blocked site is still blocked.
        let blocked = safegate
            .client()
            .get(format!("http://www.bet365.com:{}/", origin.addr.port()))
            .send()
            .await
            .unwrap();
        assert_eq!(blocked.status(), 403);

        std::fs::remove_file(&filler).unwrap();
        let (text, after) = wait_until(&safegate, "recovery without a restart", |status, _, m| {
            status == 200 && m["safegate_store_writable"] == 1.0
        })
        .await;
        assert!(text.contains("ok: store"), "{text}");
        assert!(after["safegate_store_reopens_total"] >= 1.0, "{after:?}");
        notice(&webhook, "store_writable").await;
        assert_eq!(visit(&safegate, &origin, "/uri?after-1").await.0, 200);
        let flushed = after["safegate_visit_log_records_flushed_total"];
        wait_until(&safegate, "a new record written", |_, _, m| {
            m["safegate_visit_log_records_flushed_total"] > flushed
        })
        .await;
        let lost = after["safegate_visit_log_records_lost_total"]
            + after["safegate_visit_log_records_dropped_total"];

        // One error line for the spell (rate-limited), not one per record.
        let logs = safegate.logs();
        let errors = logs
            .iter()
            .filter(|line| line.contains("VISIT LOG CANNOT BE WRITTEN"))
            .count();
        assert!(
            (1..=2).contains(&errors),
            "{errors} error lines:\n{}",
            logs.join("\n")
        );
        assert!(
            logs.iter()
                .any(|line| line.contains("the visit log is written again"))
        );

        safegate.terminate();
        assert!(safegate.wait().await.success());
        let store = open_store(&tmpfs.path).await;
        let kept = tagged(&store, "full-");
        eprintln!(
            "disk full: filler {filled} bytes; {sent} requests while full; {} write \
             failures, {} waiting at most; {kept} kept, {lost} lost",
            during["safegate_store_write_failures_total"],
            during["safegate_visit_log_records_waiting"],
        );
        assert_eq!(tagged(&store, "before"), 1);
        assert_eq!(tagged(&store, "after-1"), 1);
        assert_eq!(
            kept as f64 + lost,
            sent as f64,
            "every request kept or counted lost"
        );
        assert_eq!(lost, 0.0, "nothing lost below the bound");
    })
    .await;
}

#[tokio::test]
async fn refuse_traffic_answers_503_while_the_disk_is_full() {
    let Some(tmpfs) = Tmpfs::mount("16m") else {
        return;
    };
    bounded(async {
        let origin = Origin::start().await;
        let webhook = Webhook::start().await;
        let mut safegate = start(&tmpfs, "refuse-traffic", &webhook).await;
        assert_eq!(visit(&safegate, &origin, "/uri?before").await.0, 200);
        let filler = tmpfs.path.join("filler");
        fill(&filler);
        visit_until_failing(&safegate, &origin, "full", 503).await;
        let (status, body) = visit(&safegate, &origin, "/uri?refused").await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("its disk is full"), "{body}");

        std::fs::remove_file(&filler).unwrap();
        wait_until(&safegate, "recovery without a restart", |status, _, m| {
            status == 200 && m["safegate_store_writable"] == 1.0
        })
        .await;
        assert_eq!(visit(&safegate, &origin, "/uri?after-1").await.0, 200);
        safegate.terminate();
        assert!(safegate.wait().await.success());
        let store = open_store(&tmpfs.path).await;
        assert_eq!(tagged(&store, "after-1"), 1);
    })
    .await;
}
