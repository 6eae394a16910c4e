//! Broken list files at reload (issue 17, point 12): a list replaced by binary garbage
//! or cut to a tenth of its size is refused, the previous lists stay live (the blocked
//! site stays blocked), the refusal is logged with the file, counted in
//! `safegate_list_refusals_total{list}`, and `/readyz` and `safegate doctor` name the
//! list until a good file is reloaded. At first start a garbage list stops SafeGate.

use std::path::{Path, PathBuf};

use crate::kit::bounded;
use crate::kit::process::{SafeGate, run_to_end, shipped_config};
use crate::ops::{doctor, hangup, readyz, readyz_until};

const POLICY: &str = r#"timezone = "Europe/London"
default_role = "pupil"

[categories.gambling]
sources = [{ format = "domains", path = "gambling.txt" }]

[roles.pupil]
block = ["gambling"]

[roles.staff]
[roles.filter-admin]
"#;

/// Forty bookmakers, `bet.test` among them.
fn good_list() -> String {
    let mut list = String::from("# test bookmakers\nbet.test\n");
    for i in 0..39 {
        list.push_str(&format!("bookmaker{i}.test\n"));
    }
    list
}

/// Replaces the list atomically, as a download or an editor would.
fn replace(path: &Path, content: &[u8]) {
    let temp = path.with_extension("new");
    std::fs::write(&temp, content).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

fn garbage() -> Vec<u8> {
    let mut state: u32 = 0x1234_5678;
    (0..8192)
        .map(|_| {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (state >> 16) as u8
        })
        .collect()
}

async fn blocked_rule(safegate: &SafeGate) -> (u16, String) {
    let response = safegate
        .client()
        .get("http://bet.test/")
        .send()
        .await
        .unwrap();
    let rule = response
        .headers()
        .get("x-safegate-rule")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (response.status().as_u16(), rule)
}

async fn refusals(safegate: &SafeGate) -> String {
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
        .find(|l| l.starts_with("safegate_list_refusals_total{list=\"gambling\"}"))
        .unwrap_or("no refusal counted")
        .to_owned()
}

/// Reloads with SIGHUP and waits for the `n`th refusal in the log.
async fn refused_after_hangup(safegate: &mut SafeGate, n: usize) -> String {
    hangup(safegate);
    let lines = safegate
        .wait_for_logs(|lines| {
            lines
                .iter()
                .filter(|l| l.contains("list file REFUSED"))
                .count()
                >= n
        })
        .await;
    lines
        .iter()
        .rfind(|l| l.contains("list file REFUSED"))
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn a_garbage_or_cut_list_is_refused_and_the_previous_list_stays_live() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let policy: PathBuf = dir.path().join("policy.toml");
        let list = dir.path().join("gambling.txt");
        std::fs::write(&policy, POLICY).unwrap();
        std::fs::write(&list, good_list()).unwrap();
        let file = format!("policy.file={:?}", policy.display().to_string());
        let mut safegate = SafeGate::start(&[file.as_str(), "policy.watch=false"]).await;
        let blocked = (403, "category:pupil:gambling".to_owned());
        assert_eq!(blocked_rule(&safegate).await, blocked);

        // Binary garbage: refused, logged at error with the file, counted, not ready.
        replace(&list, &garbage());
        let line = refused_after_hangup(&mut safegate, 1).await;
        assert!(line.contains("ERROR"), "{line}");
        assert!(line.contains(&list.display().to_string()), "{line}");
        assert!(line.contains("binary data"), "{line}");
        assert_eq!(
            blocked_rule(&safegate).await,
            blocked,
            "the old list stays live"
        );
        assert_eq!(
            refusals(&safegate).await,
            "safegate_list_refusals_total{list=\"gambling\"} 1"
        );
        let body = readyz_until(&safegate, 503, "FAIL: lists").await;
        assert!(body.contains("list `gambling`"), "{body}");
        assert!(body.contains(&list.display().to_string()), "{body}");

        // Cut to a tenth (bet.test gone with the rest): refused against the list in force.
        let cut: String = good_list()
            .lines()
            .skip(2)
            .take(4)
            .map(|l| format!("{l}\n"))
            .collect();
        replace(&list, cut.as_bytes());
        let line = refused_after_hangup(&mut safegate, 2).await;
        assert!(line.contains("shrank from 40 to 4 entries"), "{line}");
        assert_eq!(
            blocked_rule(&safegate).await,
            blocked,
            "the old list stays live"
        );
        assert_eq!(
            refusals(&safegate).await,
            "safegate_list_refusals_total{list=\"gambling\"} 2"
        );
        let body = readyz_until(&safegate, 503, "shrank from 40 to 4").await;
        assert!(body.contains("list `gambling`"), "{body}");

        // `safegate doctor` asks the running SafeGate (only it knows the list in force).
        let sets = [
            format!("data_dir={:?}", safegate.data_dir().display().to_string()),
            format!("proxy.listen=\"{}\"", safegate.proxy),
            format!("admin.listen=\"{}\"", safegate.admin),
            file.clone(),
        ];
        let mut args = Vec::new();
        for set in &sets {
            args.extend(["--set", set.as_str()]);
        }
        let (ok, out) = doctor(&args).await;
        assert!(!ok, "{out}");
        assert!(out.contains("FAIL  lists"), "{out}");
        assert!(out.contains("shrank from 40 to 4 entries"), "{out}");

        // A good list again: reloaded, ready, still blocked; the count stays.
        let mut grown = good_list();
        grown.push_str("newbookmaker.test\n");
        replace(&list, grown.as_bytes());
        hangup(&safegate);
        readyz_until(&safegate, 200, "ok: lists").await;
        assert_eq!(readyz(&safegate).await.0, 200);
        assert_eq!(blocked_rule(&safegate).await, blocked);
        assert_eq!(
            refusals(&safegate).await,
            "safegate_list_refusals_total{list=\"gambling\"} 2"
        );
        let (ok, out) = doctor(&args).await;
        assert!(out.contains("OK    lists"), "{out}");
        assert!(ok, "{out}");
    })
    .await;
}

#[tokio::test]
async fn a_garbage_list_stops_start_up_with_the_file_and_why() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("policy.toml");
        let list = dir.path().join("gambling.txt");
        std::fs::write(&policy, POLICY).unwrap();
        std::fs::write(&list, garbage()).unwrap();
        let config = shipped_config().display().to_string();
        let file = format!("policy.file={:?}", policy.display().to_string());
        let data = format!(
            "data_dir={:?}",
            dir.path().join("data").display().to_string()
        );
        let (status, _, stderr) =
            run_to_end(&["run", "--config", &config, "--set", &file, "--set", &data]).await;
        assert!(!status.success());
        assert!(stderr.contains("list `gambling`"), "{stderr}");
        assert!(stderr.contains(&list.display().to_string()), "{stderr}");
        assert!(stderr.contains("holds binary data"), "{stderr}");
    })
    .await;
}
