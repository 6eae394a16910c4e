//! `/metrics` on the admin listener: the visit-log writer's counters follow the
//! requests made through the proxy, policy reloads are counted, the build is named, and
//! the process's memory is there.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::kit::bounded;
use crate::kit::origin::Origin;
use crate::kit::process::SafeGate;

/// Requests made through the proxy, each of which leaves one visit-log record.
const REQUESTS: u64 = 5;

/// How long a counter may take to reach its expected value.
const DEADLINE: Duration = Duration::from_secs(20);

/// One scrape: the status, the content type and every sample line as
/// (name with labels, value).
async fn scrape(safegate: &SafeGate) -> (String, HashMap<String, f64>) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let response = client
        .get(format!("http://{}/metrics", safegate.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4"
    );
    let text = response.text().await.unwrap();
    let mut samples = HashMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample line: {line:?}\n{text}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {line:?}\n{text}"));
        assert!(
            samples.insert(name.to_owned(), value).is_none(),
            "{name} twice:\n{text}"
        );
    }
    (text, samples)
}

fn value(samples: &HashMap<String, f64>, name: &str, text: &str) -> f64 {
    *samples
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// Scrapes until `done` holds for the samples (at most [`DEADLINE`]); returns the last
/// scrape.
async fn scrape_until(
    safegate: &SafeGate,
    what: &str,
    done: impl Fn(&HashMap<String, f64>) -> bool,
) -> (String, HashMap<String, f64>) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (text, samples) = scrape(safegate).await;
        if done(&samples) {
            return (text, samples);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {DEADLINE:?}; last scrape:\n{text}"
        );
        // Poll interval of a bounded poll, not a synchronisation point.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn visit_log_counters_follow_the_requests() {
    bounded(async {
        let origin = Origin::start().await;
        let safegate =
            SafeGate::start(&["store.visit_log=true", "store.flush_interval=\"50ms\""]).await;

        let (text, samples) = scrape(&safegate).await;
        assert!(
            text.contains(&format!(
                "\nsafegate_build_info{{version=\"{}\"}} 1\n",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        assert!(
            text.contains("# TYPE safegate_visit_log_records_flushed_total counter"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE safegate_visit_log_queue_depth gauge"),
            "{text}"
        );
        assert_eq!(value(&samples, "safegate_visit_log_enabled", &text), 1.0);
        assert_eq!(
            value(&samples, "safegate_visit_log_records_written_total", &text),
            0.0
        );

        let client = safegate.client();
        for n in 0..REQUESTS {
            let response = client
                .get(origin.url(&format!("/bytes/{n}")))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.bytes().await.unwrap().len() as u64, n);
        }

        let flushed = "safegate_visit_log_records_flushed_total";
        let (text, samples) = scrape_until(&safegate, "every record flushed", |samples| {
            samples.get(flushed).copied().unwrap_or(0.0) >= REQUESTS as f64
        })
        .await;
        let get = |name: &str| value(&samples, name, &text);
        let requests = REQUESTS as f64;
        assert_eq!(get(flushed), requests, "{text}");
        assert_eq!(
            get("safegate_visit_log_records_written_total"),
            requests,
            "{text}"
        );
        let batches = get("safegate_visit_log_batches_total");
        assert!((1.0..=requests).contains(&batches), "{text}");
        assert_eq!(get("safegate_visit_log_queue_depth"), 0.0, "{text}");
        for zero in [
            "safegate_visit_log_records_dropped_total",
            "safegate_visit_log_write_errors_total",
            "safegate_visit_log_records_lost_total",
            "safegate_visit_log_flush_errors_total",
        ] {
            assert_eq!(get(zero), 0.0, "{zero}:\n{text}");
        }
        let max = get("safegate_visit_log_batch_write_seconds_max");
        let sum = get("safegate_visit_log_batch_write_seconds_sum");
        let last = get("safegate_visit_log_batch_write_seconds_last");
        assert!(max > 0.0 && max <= sum && last <= max, "{text}");
        assert!(sum < DEADLINE.as_secs_f64(), "{text}");

        // Nothing reloaded yet.
        assert_eq!(
            get("safegate_policy_reloads_total{result=\"ok\"}"),
            0.0,
            "{text}"
        );
        assert_eq!(
            get("safegate_policy_reloads_total{result=\"failed\"}"),
            0.0,
            "{text}"
        );
        assert_eq!(get("safegate_policy_last_reload_failed"), 0.0, "{text}");
    })
    .await;
}

#[tokio::test]
async fn visit_log_off_exports_zeros() {
    bounded(async {
        let safegate = SafeGate::start(&["store.visit_log=false"]).await;
        let (text, samples) = scrape(&safegate).await;
        assert_eq!(value(&samples, "safegate_visit_log_enabled", &text), 0.0);
        assert_eq!(
            value(&samples, "safegate_visit_log_records_flushed_total", &text),
            0.0
        );
        assert_eq!(
            value(&samples, "safegate_visit_log_queue_depth", &text),
            0.0
        );
    })
    .await;
}

/// The process's and the allocator's memory are exported, so a technician can watch
/// SafeGate's memory stay flat over weeks.
#[tokio::test]
async fn memory_and_process_metrics_are_exported() {
    bounded(async {
        let safegate = SafeGate::start(&[]).await;
        let (text, samples) = scrape(&safegate).await;
        let resident = value(&samples, "process_resident_memory_bytes", &text);
        assert!(resident > 1_000_000.0, "resident {resident}");
        assert!(value(&samples, "process_open_fds", &text) > 0.0);
        let allocated = value(&samples, "safegate_memory_bytes{kind=\"allocated\"}", &text);
        let jemalloc_resident = value(&samples, "safegate_memory_bytes{kind=\"resident\"}", &text);
        assert!(allocated > 0.0, "allocated {allocated}");
        assert!(
            allocated <= jemalloc_resident && jemalloc_resident <= resident,
            "allocated {allocated} <= allocator resident {jemalloc_resident} <= process resident {resident}"
        );
    })
    .await;
}

const GOOD_POLICY: &str = r#"timezone = "Europe/London"
default_role = "pupil"

[roles.pupil]
[roles.staff]
[roles.filter-admin]
"#;

fn hangup(safegate: &SafeGate) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &safegate.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn policy_reloads_are_counted() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let policy: PathBuf = dir.path().join("policy.toml");
        std::fs::write(&policy, GOOD_POLICY).unwrap();
        let file = format!("policy.file={:?}", policy.display().to_string());
        // Reload on SIGHUP only, so each step below is exactly one reload.
        let safegate = SafeGate::start(&[file.as_str(), "policy.watch=false"]).await;
        let ok = "safegate_policy_reloads_total{result=\"ok\"}";
        let failed = "safegate_policy_reloads_total{result=\"failed\"}";
        let last_failed = "safegate_policy_last_reload_failed";
        let counts = |samples: &HashMap<String, f64>| {
            (
                samples.get(ok).copied(),
                samples.get(failed).copied(),
                samples.get(last_failed).copied(),
            )
        };

        let (_, samples) = scrape(&safegate).await;
        assert_eq!(counts(&samples), (Some(0.0), Some(0.0), Some(0.0)));

        hangup(&safegate);
        scrape_until(&safegate, "one good reload", |s| {
            counts(s) == (Some(1.0), Some(0.0), Some(0.0))
        })
        .await;

        std::fs::write(&policy, "default_role = \n").unwrap();
        hangup(&safegate);
        scrape_until(&safegate, "a refused reload", |s| {
            counts(s) == (Some(1.0), Some(1.0), Some(1.0))
        })
        .await;

        std::fs::write(&policy, GOOD_POLICY).unwrap();
        hangup(&safegate);
        scrape_until(&safegate, "a good reload after the refused one", |s| {
            counts(s) == (Some(2.0), Some(1.0), Some(0.0))
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn proxy_counters_follow_the_traffic() {
    bounded(async {
        let origin = Origin::start().await;
        let safegate = SafeGate::start(&[]).await;
        let client = safegate.client();
        for n in 0..2 {
            let response = client
                .get(origin.url(&format!("/bytes/{n}")))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
        // The shipped policy and starter lists block gambling for pupils.
        let blocked = client.get("http://www.bet365.com/").send().await.unwrap();
        assert_eq!(blocked.status(), 403);

        let allowed = "safegate_decisions_total{decision=\"allowed\",role=\"pupil\",category=\"none\"}";
        let gambling =
            "safegate_decisions_total{decision=\"blocked\",role=\"pupil\",category=\"gambling\"}";
        let (text, samples) = scrape_until(&safegate, "the decisions counted", |s| {
            s.get(allowed) == Some(&2.0) && s.get(gambling) == Some(&1.0)
        })
        .await;
        let get = |name: &str| value(&samples, name, &text);
        assert_eq!(get("safegate_requests_total"), 3.0, "{text}");
        assert_eq!(
            get("safegate_decisions_total{decision=\"blocked\",role=\"staff\",category=\"gambling\"}"),
            0.0,
            "{text}"
        );
        assert_eq!(get("safegate_decision_duration_seconds_count"), 3.0, "{text}");
        assert_eq!(
            get("safegate_decision_duration_seconds_bucket{le=\"+Inf\"}"),
            3.0,
            "{text}"
        );
        let answered = get("safegate_request_duration_seconds_count");
        assert_eq!(answered, 3.0, "{text}");
        assert!(get("safegate_request_duration_seconds_sum") > 0.0, "{text}");
        assert_eq!(get("safegate_tunnels"), 0.0, "{text}");
        // reqwest's idle keep-alive connections, at most one per request.
        assert!((0.0..=3.0).contains(&get("safegate_client_connections")), "{text}");
        assert_eq!(
            get("safegate_upstream_errors_total{kind=\"connection-refused\"}"),
            0.0,
            "{text}"
        );
        assert!(
            text.contains("# TYPE safegate_request_duration_seconds histogram"),
            "{text}"
        );
        // Labels come from fixed sets: no host, address or path.
        for leak in ["bet365", "127.0.0.1", "/bytes"] {
            assert!(!text.contains(leak), "{leak} in:\n{text}");
        }
    })
    .await;
}
