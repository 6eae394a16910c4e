//! The audit log: hand edits of the policy file are recorded (author `file`, with a
//! diff) at start and on reload, `safegate audit list|verify` work through the running
//! service and on the database directly, and an altered entry is detected.

use std::path::Path;
use std::process::ExitStatus;

use crate::kit::bounded;
use crate::kit::process::{SafeGate, run_to_end, shipped_config};

const POLICY: &str = r#"timezone = "Europe/London"
default_role = "pupil"

[roles.staff]

[roles.filter-admin]

[roles.pupil]
block = []
"#;

/// Replaces the policy file atomically, as an editor would.
fn write_policy(dir: &Path, text: &str) {
    let temp = dir.join(".policy.toml.new");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, dir.join("policy.toml")).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

async fn audit(data_dir: &Path, policy: &Path, args: &[&str]) -> (ExitStatus, String, String) {
    let config = shipped_config().display().to_string();
    let data = format!("data_dir={:?}", data_dir.display().to_string());
    let policy = format!("policy.file={:?}", policy.display().to_string());
    let mut all = vec!["audit"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--config", &config, "--set", &data, "--set", &policy]);
    run_to_end(&all).await
}

#[tokio::test]
async fn policy_file_edits_are_audited_and_tampering_is_detected() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        write_policy(dir.path(), POLICY);
        let policy = dir.path().join("policy.toml");
        let set = format!("policy.file={:?}", policy.display().to_string());
        let mut safegate = SafeGate::start(&[set.as_str()]).await;
        safegate
            .wait_for_log("policy change recorded in the audit log")
            .await;

        let edited = POLICY.replace("block = []", "block = []\ndeny = [\"added.test\"]");
        write_policy(dir.path(), &edited);
        safegate
            .wait_for_logs(|lines| {
                lines
                    .iter()
                    .filter(|l| l.contains("policy change recorded in the audit log"))
                    .count()
                    == 2
            })
            .await;

        // Through the running service's control socket.
        let data_dir = safegate.data_dir().to_owned();
        both_policy_changes_are_listed_with_the_diff(&data_dir, &policy).await;
        looking_at_a_persons_records_is_recorded(&data_dir, &policy, &set).await;
        let printed_head =
            verify_prints_the_head_the_service_logged(&mut safegate, &data_dir, &policy).await;

        safegate.terminate();
        assert!(safegate.wait().await.success());

        a_removed_newest_entry_is_caught_by_the_noted_head(&data_dir, &policy, &printed_head).await;
        a_changed_byte_is_caught_on_the_database_directly(&data_dir, &policy).await;
    })
    .await;
}

/// `audit list` through the service shows the start and the edit, by `file`, the
/// edit's diff holding only the change.
async fn both_policy_changes_are_listed_with_the_diff(data_dir: &Path, policy: &Path) {
    let (status, stdout, stderr) = audit(data_dir, policy, &["list", "--json"]).await;
    assert!(status.success(), "{stderr}");
    let entries: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    assert_eq!(entries.len(), 2, "{stdout}");
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(entry["sequence"], i as u64 + 1);
        assert_eq!(entry["actor"], "file");
        assert_eq!(entry["action"], "policy-change");
    }
    let diff = entries[1]["detail"].as_str().unwrap();
    assert!(
        diff.lines().any(|l| l == "+deny = [\"added.test\"]"),
        "{diff}"
    );
    assert!(!diff.contains("+timezone"), "only the change: {diff}");
}

/// Looking at one person's records from the command line (query and export) is
/// recorded too, with the account that asked.
async fn looking_at_a_persons_records_is_recorded(data_dir: &Path, policy: &Path, set: &str) {
    let config = shipped_config().display().to_string();
    let data = format!("data_dir={:?}", data_dir.display().to_string());
    let export = tempfile::tempdir().unwrap();
    let out = export.path().to_owned();
    for args in [
        vec!["log", "query", "--user", "pupil7", "--json"],
        vec![
            "log",
            "export",
            "--user",
            "pupil7",
            "--out",
            out.to_str().unwrap(),
        ],
    ] {
        let mut all = args.clone();
        all.extend_from_slice(&["--config", &config, "--set", &data, "--set", set]);
        let (status, _, stderr) = run_to_end(&all).await;
        assert!(status.success(), "{args:?}: {stderr}");
    }
    let (_, stdout, _) = audit(data_dir, policy, &["list", "--json"]).await;
    let entries: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    let views: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|e| e["action"] == "history-viewed")
        .collect();
    assert_eq!(views.len(), 2, "{stdout}");
    for view in &views {
        assert_eq!(view["subject"], "pupil7");
        assert!(
            view["actor"].as_str().unwrap().ends_with("(command line)"),
            "{view}"
        );
    }
    assert!(
        views[1]["detail"]
            .as_str()
            .unwrap()
            .contains("subject access export")
    );
}

/// `audit verify` finds the chain intact with four entries and prints the head the
/// service logged at the last append; that head, noted, is found, and a malformed
/// one is refused. Returns the printed head (`#4 <hash>`).
async fn verify_prints_the_head_the_service_logged(
    safegate: &mut SafeGate,
    data_dir: &Path,
    policy: &Path,
) -> String {
    let (status, stdout, _) = audit(data_dir, policy, &["verify"]).await;
    assert!(status.success());
    assert!(
        stdout.starts_with("audit log intact: 4 entries"),
        "{stdout}"
    );
    // The head as printed, and as the service logged it at the last append.
    let printed_head = stdout
        .lines()
        .find_map(|line| line.strip_prefix("head: "))
        .unwrap()
        .to_owned();
    assert!(printed_head.starts_with("#4 "), "{stdout}");
    let logged = safegate.wait_for_log("sequence=4 head=").await;
    let logged_head = logged
        .split("head=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(|hash| format!("4:{hash}"))
        .unwrap();
    assert_eq!(logged_head[2..], printed_head[3..]);
    let (status, stdout, _) =
        audit(data_dir, policy, &["verify", "--noted-head", &logged_head]).await;
    assert!(status.success(), "{stdout}");
    assert!(stdout.contains("noted head #4 found"), "{stdout}");
    let (status, _, stderr) = audit(data_dir, policy, &["verify", "--noted-head", "4:abc"]).await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("64-digit hex hash"), "{stderr}");
    printed_head
}

/// The newest entry removed (in a copy) and the head rewritten to the one before: the
/// chain alone looks intact, the noted head catches it.
async fn a_removed_newest_entry_is_caught_by_the_noted_head(
    data_dir: &Path,
    policy: &Path,
    printed_head: &str,
) {
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&data_dir.join("db"), &copy.path().join("db"));
    {
        let db = sled::open(copy.path().join("db")).unwrap();
        let tree = db.open_tree("audit").unwrap();
        let key = |n: u64| {
            let mut key = vec![b'E'];
            key.extend_from_slice(&n.to_be_bytes());
            key
        };
        let third = tree.get(key(3)).unwrap().unwrap();
        let mut head = 3u64.to_be_bytes().to_vec();
        head.extend_from_slice(&third[third.len() - 32..]);
        tree.remove(key(4)).unwrap();
        tree.insert(b"H", head).unwrap();
        db.flush().unwrap();
    }
    let (status, stdout, _) = audit(copy.path(), policy, &["verify"]).await;
    assert!(status.success(), "{stdout}");
    assert!(
        stdout.starts_with("audit log intact: 3 entries"),
        "{stdout}"
    );
    let (status, stdout, _) = audit(
        copy.path(),
        policy,
        &["verify", "--noted-head", printed_head],
    )
    .await;
    assert!(!status.success(), "{stdout}");
    assert!(
        stdout.starts_with("AUDIT LOG ALTERED at entry #4: the noted head #4 is gone"),
        "{stdout}"
    );
}

/// On the database directly (the service stopped), after one byte of the first entry
/// is changed, `audit verify` reports the altered entry.
async fn a_changed_byte_is_caught_on_the_database_directly(data_dir: &Path, policy: &Path) {
    {
        let db = sled::open(data_dir.join("db")).unwrap();
        let tree = db.open_tree("audit").unwrap();
        let mut key = vec![b'E'];
        key.extend_from_slice(&1u64.to_be_bytes());
        let mut value = tree.get(&key).unwrap().unwrap().to_vec();
        let at = value.windows(4).position(|w| w == b"file").unwrap();
        value[at] = b'F';
        tree.insert(key, value).unwrap();
        db.flush().unwrap();
    }
    let (status, stdout, stderr) = audit(data_dir, policy, &["verify"]).await;
    assert!(!status.success(), "{stdout}");
    assert!(
        stdout.starts_with("AUDIT LOG ALTERED at entry #1"),
        "{stdout}{stderr}"
    );
}
