//! Several nodes for one school (deploy/haproxy.cfg): two SafeGates with the same
//! policy behind a real HAProxy on loopback, both exporting to a real ClickHouse.
//! Requests spread over both nodes; one node is killed (SIGKILL) and requests keep
//! being answered and filtered by the other; both nodes' records reach ClickHouse,
//! each once.
//!
//! Needs Debian's `haproxy` and `clickhouse-server`; skipped without them unless
//! `SAFEGATE_REQUIRE_OPS_TOOLS` is set (by `.ci/run`), where that fails the test.

use std::time::Duration;

use crate::kit::clickhouse::{self, ClickHouse};
use crate::kit::haproxy::{self, HaProxy};
use crate::kit::origin::Origin;
use crate::kit::process::SafeGate;
use crate::trust_export::{export_set, init_tables, metric, until_answer};

const SCHOOL: &str = "urn-200001";

/// Sends `n` requests through HAProxy, each on a new connection (so round robin
/// spreads them), tagged `phase`; every tenth is to a gambling site and must be
/// blocked. A connection cut in the moment a node dies (before HAProxy's check has
/// seen it) is tried again once, as a browser does; at most one such retry is
/// allowed. Returns how many were sent.
async fn traffic(balancer: &HaProxy, origin: &Origin, phase: &str, n: usize) -> usize {
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(balancer.url()).unwrap())
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut retried = 0;
    for i in 0..n {
        let (url, expected) = if i % 10 == 9 {
            (format!("http://www.bet365.com/{phase}/{i}"), 403)
        } else {
            (origin.url(&format!("/bytes/16?n={phase}-{i}")), 200)
        };
        let answer = match client.get(&url).send().await {
            Ok(answer) => answer,
            Err(error) => {
                retried += 1;
                assert!(retried <= 1, "{url}: {error}");
                client.get(&url).send().await.unwrap()
            }
        };
        assert_eq!(answer.status().as_u16(), expected, "{url}");
    }
    n
}

#[tokio::test]
async fn two_nodes_behind_haproxy_survive_one_dying_and_both_export() {
    if !haproxy::available() || !clickhouse::available() {
        return;
    }
    let body = async {
        let ch = ClickHouse::start().await;
        init_tables(&ch).await;
        let origin = Origin::start().await;
        let set = export_set(&ch, SCHOOL);
        let mut node1 = SafeGate::start(&[set.as_str()]).await;
        let node2 = SafeGate::start(&[set.as_str()]).await;
        let balancer =
            HaProxy::start(&[(node1.proxy, node1.admin), (node2.proxy, node2.admin)]).await;
        let mut sent = traffic(&balancer, &origin, "both", 40).await;
        // Both nodes served and exported (the row id starts with the node's id).
        let count = format!(
            "SELECT count(), uniqExact(substring(id, 1, 16)) FROM trust.visits FINAL \
             WHERE school = '{SCHOOL}' FORMAT TSV"
        );
        until_answer(&ch, &count, &format!("{sent}\t2")).await;
        while metric(&node1, "safegate_export_backlog").await != 0.0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        node1.kill_9();
        node1.wait().await;
        // Answered and filtered by the survivor, from the first request on.
        sent += traffic(&balancer, &origin, "one", 40).await;
        until_answer(&ch, &count, &format!("{sent}\t2")).await;
        let blocked = ch
            .query(&format!(
                "SELECT countIf(outcome = 'Blocked' AND host = 'www.bet365.com') FROM \
                 trust.visits FINAL WHERE school = '{SCHOOL}' FORMAT TSV"
            ))
            .await;
        assert_eq!(blocked.trim(), (sent / 10).to_string());
    };
    if tokio::time::timeout(Duration::from_secs(120), body)
        .await
        .is_err()
    {
        panic!("the several-nodes test did not finish within 120 s");
    }
}
