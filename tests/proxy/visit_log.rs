//! The visit log through the running proxy: allowed, blocked, CONNECT and failed
//! requests leave records with the right fields, search terms are extracted for every
//! engine's real-shaped URLs, the records are in the database after a clean shutdown,
//! every flushed batch survives `kill -9` under load, and the records join into visits.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use safegate_policy::RequestTarget;
use safegate_store::{Outcome, Query, Record, SeenAs, Store};
use tokio::io::AsyncWriteExt;

use crate::kit::dns::FakeDns;
use crate::kit::origin::Origin;
use crate::kit::process::{SafeGate, run_to_end, shipped_config};
use crate::kit::{bounded, raw};

#[tokio::test]
async fn requests_are_recorded_with_their_fields() {
    bounded(async {
        let origin = Origin::start().await;
        let port = origin.addr.port();
        let dns = FakeDns::start(&[
            ("www.bing.com", Ipv4Addr::LOCALHOST),
            ("strict.bing.com", Ipv4Addr::LOCALHOST),
            ("www.bet365.com", Ipv4Addr::LOCALHOST),
        ])
        .await;
        let sets = [
            format!("upstream.dns.servers=[\"{}\"]", dns.addr),
            "upstream.dns.ip_strategy=\"ipv4_only\"".to_owned(),
            format!("proxy.connect_ports=[443, {port}]"),
            "store.visit_log=true".to_owned(),
            "auth.bindings=[{ network = \"127.0.0.0/8\", role = \"filter-admin\" }]".to_owned(),
        ];
        let refs: Vec<&str> = sets.iter().map(String::as_str).collect();
        let mut safegate = SafeGate::start(&refs).await;
        let client = safegate.client();
        // The test origin has no /search route: it answers 404 "no such route" (13 bytes).
        let search = format!("http://www.bing.com:{port}/search?q=how+to+revise%20for+SATs");
        let response = client
            .get(&search)
            .header("user-agent", "visit-log-test")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404);
        assert_eq!(response.bytes().await.unwrap().len(), 13);
        let blocked = client
            .get(format!("http://www.bet365.com:{port}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(blocked.status(), 403);
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let failed = client
            .get(format!("http://{closed}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(failed.status(), 502);
        let mut tunnel = raw::connect(safegate.proxy).await;
        tunnel
            .write_all(
                format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
        assert!(
            raw::read_head(&mut tunnel)
                .await
                .starts_with("HTTP/1.1 200")
        );
        tunnel
            .write_all(b"GET /bytes/10 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let rest = raw::read_until_close(&mut tunnel, std::time::Duration::from_secs(10)).await;
        assert!(String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 200"));
        drop(tunnel);
        drop(client);

        safegate.terminate();
        assert!(safegate.wait().await.success());
        let store = Store::open(safegate.data_dir()).unwrap();
        let records = store.query(&Query::default()).unwrap();
        assert_eq!(records.len(), 4, "{records:#?}");
        let search_record = records.iter().find(|r| r.host == "www.bing.com").unwrap();
        assert_eq!(search_record.outcome, Outcome::Allowed);
        assert_eq!((search_record.status, search_record.bytes_down), (404, 13));
        assert_eq!(search_record.seen_as, SeenAs::PlainHttp);
        assert_eq!(search_record.role, "filter-admin");
        assert_eq!(search_record.user_agent.as_deref(), Some("visit-log-test"));
        let terms = search_record.search.as_ref().unwrap();
        assert_eq!(
            (terms.engine.as_str(), terms.terms.as_str()),
            ("bing", "how to revise for SATs")
        );
        let blocked_record = records.iter().find(|r| r.host == "www.bet365.com").unwrap();
        assert_eq!(blocked_record.outcome, Outcome::Blocked);
        assert_eq!(blocked_record.rule, "category:filter-admin:gambling");
        let failed_record = records
            .iter()
            .find(|r| r.outcome == Outcome::Failed)
            .unwrap();
        assert_eq!(failed_record.failure.as_deref(), Some("connection-refused"));
        let tunnel_record = records.iter().find(|r| r.method == "CONNECT").unwrap();
        assert_eq!(tunnel_record.seen_as, SeenAs::ConnectHost);
        assert!(
            tunnel_record.bytes_down > 10 && tunnel_record.bytes_up > 10,
            "{tunnel_record:?}"
        );
        let blocked_only = store
            .query(&Query {
                blocked_only: true,
                ..Query::default()
            })
            .unwrap();
        assert_eq!(blocked_only.len(), 1);
    })
    .await;
}

/// The search-URL fixtures of the activity crate: `url<TAB>engine<TAB>terms`, engine
/// `-` for a URL that is not a search.
const SEARCH_FIXTURES: &str = include_str!("../../crates/activity/tests/fixtures/search_urls.txt");

/// One fixture line: the line number, host, path and query, and the expected terms.
struct SearchFixture {
    line: usize,
    url: &'static str,
    host: String,
    path: &'static str,
    want: Option<(String, String)>,
}

fn search_fixtures() -> Vec<SearchFixture> {
    let mut fixtures = Vec::new();
    for (n, line) in SEARCH_FIXTURES.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        let [url, engine, terms] = cols[..] else {
            panic!(
                "fixture line {}: want url<TAB>engine<TAB>terms: {line:?}",
                n + 1
            );
        };
        let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
        let (authority, path) = rest.find('/').map_or((rest, "/"), |i| rest.split_at(i));
        fixtures.push(SearchFixture {
            line: n + 1,
            url,
            host: authority.to_ascii_lowercase(),
            path,
            want: (engine != "-").then(|| (engine.to_owned(), terms.to_owned())),
        });
    }
    fixtures
}

/// Every search-URL fixture, sent as plain HTTP through the proxy (the proxy sees the
/// path and query only for plain HTTP), is recorded with the fixture's engine and terms,
/// and the URLs that are not searches are recorded without terms.
///
/// Every role of the shipped policy has SafeSearch on (filter-admin also YouTube
/// "moderate"), so the Google, Bing, DuckDuckGo and YouTube requests are connected to the
/// providers' enforced endpoints with the SafeSearch parameter added. The fake DNS maps
/// those endpoints to the test origin too, so every request reaches the origin (which
/// answers 404 to all of these paths); the record keeps the URL the pupil asked for, and
/// the terms come from it.
#[tokio::test]
async fn search_terms_for_every_engine_are_recorded() {
    bounded(async {
        let fixtures = search_fixtures();
        assert!(fixtures.len() >= 50, "only {} fixtures", fixtures.len());
        let origin = Origin::start().await;
        let port = origin.addr.port();
        let enforced = [
            "forcesafesearch.google.com",
            "strict.bing.com",
            "safe.duckduckgo.com",
            "restrict.youtube.com",
            "restrictmoderate.youtube.com",
        ];
        let mut names: Vec<&str> = fixtures.iter().map(|f| f.host.as_str()).collect();
        names.extend(enforced);
        names.sort_unstable();
        names.dedup();
        let records: Vec<(&str, Ipv4Addr)> = names
            .iter()
            .map(|name| (*name, Ipv4Addr::LOCALHOST))
            .collect();
        let dns = FakeDns::start(&records).await;
        let sets = [
            format!("upstream.dns.servers=[\"{}\"]", dns.addr),
            "upstream.dns.ip_strategy=\"ipv4_only\"".to_owned(),
            "store.visit_log=true".to_owned(),
            "auth.bindings=[{ network = \"127.0.0.0/8\", role = \"filter-admin\" }]".to_owned(),
        ];
        let refs: Vec<&str> = sets.iter().map(String::as_str).collect();
        let mut safegate = SafeGate::start(&refs).await;
        let client = safegate.client();
        for fixture in &fixtures {
            let url = format!("http://{}:{port}{}", fixture.host, fixture.path);
            let response = client
                .get(&url)
                .header("user-agent", format!("fixture-{}", fixture.line))
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body = response.text().await.unwrap();
            // The origin's answer to an unknown route: the request reached it.
            assert_eq!(
                (status.as_u16(), body.as_str()),
                (404, "no such route"),
                "line {}: {url}",
                fixture.line
            );
        }
        drop(client);
        // SafeSearch was enforced on the way (the provider endpoints were looked up).
        assert!(dns.asked("forcesafesearch.google.com", 1) > 0);
        assert!(dns.asked("strict.bing.com", 1) > 0);
        assert!(dns.asked("safe.duckduckgo.com", 1) > 0);
        assert!(dns.asked("restrictmoderate.youtube.com", 1) > 0);

        safegate.terminate();
        assert!(safegate.wait().await.success());
        let store = Store::open(safegate.data_dir()).unwrap();
        let records = store.query(&Query::default()).unwrap();
        assert_eq!(records.len(), fixtures.len());
        let mut failures = Vec::new();
        for fixture in &fixtures {
            let agent = format!("fixture-{}", fixture.line);
            let found: Vec<&Record> = records
                .iter()
                .filter(|r| r.user_agent.as_deref() == Some(agent.as_str()))
                .collect();
            let [record] = found[..] else {
                failures.push(format!(
                    "line {}: {} record(s) for {}",
                    fixture.line,
                    found.len(),
                    fixture.url
                ));
                continue;
            };
            // The path recorded is the normalised form of exactly what was sent.
            let sent = RequestTarget::from_parts(&fixture.host, Some(fixture.path)).unwrap();
            let got = record
                .search
                .as_ref()
                .map(|t| (t.engine.clone(), t.terms.clone()));
            if record.host != fixture.host || record.path != sent.path || got != fixture.want {
                failures.push(format!(
                    "line {}: {}\n  recorded {} {:?}\n  want terms {:?}\n  got  terms {got:?}",
                    fixture.line, fixture.url, record.host, record.path, fixture.want
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        // The search-terms copies hold exactly the searches.
        let searches = store
            .query(&Query {
                search_terms_only: true,
                ..Query::default()
            })
            .unwrap();
        let positive = fixtures.iter().filter(|f| f.want.is_some()).count();
        assert_eq!(searches.len(), positive);
        assert!(searches.iter().all(|r| r.search.is_some()));
    })
    .await;
}

/// The running total of records flushed, from a writer's "batch written and flushed"
/// debug line.
fn flushed_total(line: &str) -> Option<u64> {
    if !line.contains("visit log batch written and flushed") {
        return None;
    }
    let rest = &line[line.find(" flushed=")? + " flushed=".len()..];
    let digits = rest.split(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok()
}

/// `Store::open`, retried until the deadline: sled releases its lock file after the
/// owner has gone, not necessarily at once. Returns the store and the time it took.
async fn reopen(data_dir: &Path) -> (Store, Duration) {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(20);
    loop {
        match Store::open(data_dir) {
            Ok(store) => return (store, started.elapsed()),
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "database not reopened in 20s: {error}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Waits (bounded) until no process, this one included, holds sled's lock on the
/// database in `data_dir`, so that SafeGate can open it.
async fn wait_until_unlocked(data_dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(data_dir.join("db").join("db"))
        .unwrap();
    loop {
        match file.try_lock() {
            Ok(()) => return,
            Err(std::fs::TryLockError::WouldBlock) => {
                assert!(Instant::now() < deadline, "database still locked after 20s");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(std::fs::TryLockError::Error(error)) => panic!("cannot lock the database: {error}"),
        }
    }
}

/// Concurrent keep-alive clients of the load test.
const LOAD_CLIENTS: usize = 24;
/// The load stops by itself after this many requests (it is stopped long before).
const LOAD_LIMIT: u64 = 1_000_000;
/// Records that must have been flushed before SafeGate is killed.
const FLUSHED_BEFORE_KILL: u64 = 4_000;

/// What the load clients did.
#[derive(Default)]
struct Load {
    /// Request numbers handed out: every request sent has a number below this.
    next: AtomicU64,
    /// Responses received whole.
    completed: AtomicU64,
    /// Requests that failed (expected only once SafeGate is killed).
    failed: AtomicU64,
    stop: AtomicBool,
}

/// `kill -9` while the proxy is under load: every batch whose flush was logged is in the
/// database, every record decodes and appears once, and the database then takes new
/// records and a clean restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_records_survive_kill_9() {
    bounded(async {
        let origin = Origin::start().await;
        let mut safegate = SafeGate::start(&[
            "store.visit_log=true",
            "store.flush_interval=\"100ms\"",
            "log.level=\"info,safegate_store=debug\"",
        ])
        .await;
        let data_dir = safegate.data_dir().to_owned();
        let load = Arc::new(Load::default());
        let started = Instant::now();
        let workers: Vec<_> = (0..LOAD_CLIENTS)
            .map(|_| {
                let client = safegate.client();
                let load = Arc::clone(&load);
                let base = origin.url("/bytes/16?n=");
                tokio::spawn(async move {
                    while !load.stop.load(Ordering::Relaxed) {
                        let n = load.next.fetch_add(1, Ordering::Relaxed);
                        if n >= LOAD_LIMIT {
                            return;
                        }
                        let done = match client.get(format!("{base}{n}")).send().await {
                            Ok(response) if response.status() == 200 => {
                                response.bytes().await.is_ok_and(|b| b.len() == 16)
                            }
                            _ => false,
                        };
                        let counter = if done { &load.completed } else { &load.failed };
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();

        let lines = safegate
            .wait_for_logs(|lines| {
                let totals: Vec<u64> = lines.iter().filter_map(|l| flushed_total(l)).collect();
                totals.len() >= 3 && totals.iter().any(|&t| t >= FLUSHED_BEFORE_KILL)
            })
            .await;
        let flushed_seen = lines.iter().filter_map(|l| flushed_total(l)).max().unwrap();
        let failed_before_kill = load.failed.load(Ordering::Relaxed);
        let completed_at_kill = load.completed.load(Ordering::Relaxed);
        let sent_at_kill = load.next.load(Ordering::Relaxed);
        let load_time = started.elapsed();
        assert!(sent_at_kill < LOAD_LIMIT, "the load ended before the kill");
        safegate.kill_9();
        let status = safegate.wait().await;
        load.stop.store(true, Ordering::Relaxed);
        for worker in workers {
            worker.await.unwrap();
        }
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "{status:?}"
        );
        assert_eq!(failed_before_kill, 0, "requests failed before the kill");
        // The last flush logged before the process died (its log is read to the end).
        let logs = safegate.logs();
        let flushed_last = logs.iter().filter_map(|l| flushed_total(l)).max().unwrap();
        let batches = logs.iter().filter_map(|l| flushed_total(l)).count();
        // Request numbers handed out, including the attempts after the kill.
        let sent = load.next.load(Ordering::Relaxed).min(LOAD_LIMIT);
        let completed = load.completed.load(Ordering::Relaxed);

        let (store, reopen_time) = reopen(&data_dir).await;
        let count = store.record_count();
        let records = store.query(&Query::default()).unwrap();
        println!(
            "kill -9 under load ({LOAD_CLIENTS} clients, {:.0} responses/s): {sent_at_kill} \
             requests sent and {completed_at_kill} answered when the kill was decided \
             ({completed} answered in all); {batches} batches flushed, last logged \
             flushed={flushed_last} (flushed={flushed_seen} when the kill was decided); \
             after the kill: {count} records found, {} decoded, {} answered requests not in \
             the database; reopened in {reopen_time:?}",
            completed_at_kill as f64 / load_time.as_secs_f64(),
            records.len(),
            completed.saturating_sub(count as u64),
        );
        assert!(
            count as u64 >= flushed_last,
            "{count} records after kill -9, but {flushed_last} were flushed"
        );
        assert_eq!(records.len(), count, "records that do not decode");
        let mut seen = std::collections::HashSet::new();
        for record in &records {
            assert_eq!(record.method, "GET", "{record:?}");
            assert_eq!(record.host, "127.0.0.1", "{record:?}");
            assert_eq!(record.port, origin.addr.port(), "{record:?}");
            assert_eq!(
                (record.outcome, record.status),
                (Outcome::Allowed, 200),
                "{record:?}"
            );
            let n: u64 = record
                .path
                .as_deref()
                .and_then(|p| p.strip_prefix("/bytes/16?n="))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("a path the load did not send: {record:?}"));
            assert!(n < sent, "a request number never sent: {record:?}");
            assert!(seen.insert(n), "recorded twice: {record:?}");
        }
        drop(records);
        drop(store);

        // A clean restart on the same database records one more request.
        wait_until_unlocked(&data_dir).await;
        let data = format!("data_dir={:?}", data_dir.display().to_string());
        let mut again = SafeGate::start(&[
            "store.visit_log=true",
            "store.flush_interval=\"100ms\"",
            data.as_str(),
        ])
        .await;
        let response = again
            .client()
            .get(origin.url("/bytes/16?n=after-restart"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.bytes().await.unwrap().len(), 16);
        again.terminate();
        assert!(again.wait().await.success());
        let (store, _) = reopen(&data_dir).await;
        assert_eq!(store.record_count(), count + 1);
        let all = store.query(&Query::default()).unwrap();
        assert_eq!(all.len(), count + 1);
        let restarted: Vec<&Record> = all
            .iter()
            .filter(|r| r.path.as_deref() == Some("/bytes/16?n=after-restart"))
            .collect();
        assert_eq!(restarted.len(), 1, "{restarted:#?}");
        drop(safegate);
    })
    .await;
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// `safegate log ARGS --json` on the shipped configuration with `data_dir` (through the
/// running service's control socket); the JSON array it prints.
async fn log_json(data_dir: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    let config = shipped_config().display().to_string();
    let data = format!("data_dir={:?}", data_dir.display().to_string());
    let mut all = vec!["log"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--json", "--config", &config, "--set", &data]);
    let (status, stdout, stderr) = run_to_end(&all).await;
    assert!(status.success(), "log {args:?} failed:\n{stdout}\n{stderr}");
    let value: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("log {args:?}: not JSON ({e}):\n{stdout}"));
    value.as_array().unwrap().clone()
}

/// Polls `safegate log query --json` until it returns `n` records (bounded).
async fn wait_for_records(data_dir: &Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let records = log_json(data_dir, &["query"]).await;
        if records.len() >= n {
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "{} record(s) after 15s, expected {n}",
            records.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Requests through the proxy to two hosts of one site (`example.co.uk` by the public
/// suffix list) join into one visit; a request after more than the idle gap starts the
/// next. `log_cli.rs` checks `--visits` on records written straight into the database;
/// this one joins records the proxy made.
#[tokio::test]
async fn visits_join_across_the_idle_gap() {
    const GAP_MICROS: u64 = 300_000;
    bounded(async {
        let origin = Origin::start().await;
        let port = origin.addr.port();
        let dns = FakeDns::start(&[
            ("www.example.co.uk", Ipv4Addr::LOCALHOST),
            ("images.example.co.uk", Ipv4Addr::LOCALHOST),
        ])
        .await;
        let sets = [
            format!("upstream.dns.servers=[\"{}\"]", dns.addr),
            "upstream.dns.ip_strategy=\"ipv4_only\"".to_owned(),
            "store.visit_log=true".to_owned(),
            "store.flush_interval=\"20ms\"".to_owned(),
        ];
        let refs: Vec<&str> = sets.iter().map(String::as_str).collect();
        let mut safegate = SafeGate::start(&refs).await;
        let data_dir = safegate.data_dir().to_owned();
        let client = safegate.client();
        let get = |host: &str, size: usize| {
            let request = client.get(format!("http://{host}:{port}/bytes/{size}"));
            async move {
                let response = request.send().await.unwrap();
                assert_eq!(response.status(), 200);
                assert_eq!(response.bytes().await.unwrap().len(), size);
            }
        };
        get("www.example.co.uk", 100).await;
        get("images.example.co.uk", 200).await;
        get("www.example.co.uk", 300).await;
        // The first visit ends with the end of its last request; let twice the idle
        // gap pass after it.
        let first = wait_for_records(&data_dir, 3).await;
        let first_end = first
            .iter()
            .map(|r| r["at_unix_micros"].as_u64().unwrap() + r["duration_micros"].as_u64().unwrap())
            .max()
            .unwrap();
        let resume = first_end + 2 * GAP_MICROS;
        tokio::time::sleep(Duration::from_micros(resume.saturating_sub(now_micros()))).await;
        get("images.example.co.uk", 400).await;
        drop(client);
        wait_for_records(&data_dir, 4).await;

        let visits = log_json(&data_dir, &["query", "--visits", "--idle-gap", "300ms"]).await;
        assert_eq!(visits.len(), 2, "{visits:#?}");
        for visit in &visits {
            assert_eq!(visit["site"], "example.co.uk", "{visit:#}");
            assert_eq!(visit["user"], "127.0.0.1", "{visit:#}");
            assert_eq!(visit["blocked"], 0, "{visit:#}");
            assert!(
                visit["start_micros"].as_u64() <= visit["end_micros"].as_u64(),
                "{visit:#}"
            );
        }
        assert_eq!(
            (
                visits[0]["requests"].as_u64(),
                visits[0]["bytes_down"].as_u64()
            ),
            (Some(3), Some(600)),
            "{visits:#?}"
        );
        assert_eq!(
            (
                visits[1]["requests"].as_u64(),
                visits[1]["bytes_down"].as_u64()
            ),
            (Some(1), Some(400)),
            "{visits:#?}"
        );
        let first_start = first
            .iter()
            .map(|r| r["at_unix_micros"].as_u64().unwrap())
            .min()
            .unwrap();
        assert_eq!(visits[0]["start_micros"].as_u64(), Some(first_start));
        assert_eq!(visits[0]["end_micros"].as_u64(), Some(first_end));
        let second_start = visits[1]["start_micros"].as_u64().unwrap();
        assert!(second_start > first_end + GAP_MICROS, "{visits:#?}");
        // With the default idle gap (5 minutes) it is all one visit.
        let one = log_json(&data_dir, &["query", "--visits"]).await;
        assert_eq!(one.len(), 1, "{one:#?}");
        assert_eq!(one[0]["requests"], 4, "{one:#?}");
        assert_eq!(one[0]["bytes_down"], 1000, "{one:#?}");

        safegate.terminate();
        assert!(safegate.wait().await.success());
    })
    .await;
}
