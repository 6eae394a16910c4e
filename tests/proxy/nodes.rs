//! Several nodes for one school (deploy/haproxy.cfg): two SafeGates with the same
//! policy behind a real HAProxy on loopback, both exporting to a real ClickHouse.
//! Requests spread over both nodes; one node is killed (SIGKILL) and requests keep
//! being answered and filtered by the other; both nodes' records reach ClickHouse,
//! each once. HAProxy sends a PROXY protocol v2 header (`send-proxy-v2`), so the nodes
//! see the real clients (127.0.0.2, a pupil's computer, and 127.0.0.3, bound to the
//! staff role): their addresses are on the records in ClickHouse and their roles
//! decide. A node refuses HAProxy's address without the header, and ignores a
//! header from anyone else (400), so a client cannot pose as another computer.
//!
//! Needs Debian's `haproxy` and `clickhouse-server`; skipped without them unless
//! `SAFEGATE_REQUIRE_OPS_TOOLS` is set (by `.ci/run`), where that fails the test.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::kit::clickhouse::{self, ClickHouse};
use crate::kit::haproxy::{self, HaProxy};
use crate::kit::origin::Origin;
use crate::kit::process::SafeGate;
use crate::kit::raw;
use crate::trust_export::{export_set, init_tables, metric, until_answer};

const SCHOOL: &str = "urn-200001";

/// A pupil's computer (no binding: the default role, pupil).
const PUPIL_PC: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// A staff computer, bound to the staff role by address.
const STAFF_PC: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

/// The nodes' settings: export, HAProxy (127.0.0.1) as the PROXY header's sender,
/// and the staff computer's address binding.
fn node_sets(ch: &ClickHouse) -> Vec<String> {
    vec![
        export_set(ch, SCHOOL),
        r#"proxy.proxy_protocol_from=["127.0.0.1/32"]"#.to_owned(),
        format!(r#"auth.bindings=[{{ network = "{STAFF_PC}/32", role = "staff" }}]"#),
    ]
}

/// A client through HAProxy from `from`, one connection per request.
fn client_from(balancer: &HaProxy, from: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(balancer.url()).unwrap())
        .local_address(from)
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// What request `i` of a phase asks for and the status it must get: requests
/// alternate between the pupil's and the staff computer; every tenth is a gambling
/// site (blocked for both); the fifth and sixth of ten a chat site (blocked for the
/// pupil only: the staff request is let through and fails to resolve, as the tests'
/// DNS answers nothing).
fn request(origin: &Origin, phase: &str, i: usize) -> (IpAddr, String, Option<u16>) {
    let from = if i.is_multiple_of(2) {
        PUPIL_PC
    } else {
        STAFF_PC
    };
    match i % 10 {
        9 => (
            from,
            format!("http://www.bet365.com/{phase}/{i}"),
            Some(403),
        ),
        4 => (from, format!("http://omegle.com/{phase}/{i}"), Some(403)),
        5 => (from, format!("http://omegle.com/{phase}/{i}"), None),
        _ => (
            from,
            origin.url(&format!("/bytes/16?n={phase}-{i}")),
            Some(200),
        ),
    }
}

/// Sends `n` requests through HAProxy, each on a new connection (so round robin
/// spreads them), tagged `phase` (see [`request`]). A connection cut in the moment a
/// node dies (before HAProxy's check has seen it) is tried again once, as a browser
/// does; at most one such retry is allowed. Returns how many were sent.
async fn traffic(balancer: &HaProxy, origin: &Origin, phase: &str, n: usize) -> usize {
    let pupil = client_from(balancer, PUPIL_PC);
    let staff = client_from(balancer, STAFF_PC);
    let mut retried = 0;
    for i in 0..n {
        let (from, url, expected) = request(origin, phase, i);
        let client = if from == PUPIL_PC { &pupil } else { &staff };
        let answer = match client.get(&url).send().await {
            Ok(answer) => answer,
            Err(error) => {
                retried += 1;
                assert!(retried <= 1, "{url}: {error}");
                client.get(&url).send().await.unwrap()
            }
        };
        let status = answer.status().as_u16();
        match expected {
            Some(expected) => assert_eq!(status, expected, "{url} from {from}"),
            None => assert_ne!(status, 403, "{url} from {from}"),
        }
    }
    n
}

/// A node refuses a connection from HAProxy's address that does not start with a
/// PROXY header (closed, nothing answered, a warning logged), and answers a PROXY
/// header from an address not listed with 400: it is not read as a client's name.
async fn headers_only_from_the_balancer(node: &mut SafeGate) {
    let mut bare = raw::connect(node.proxy).await;
    bare.write_all(b"GET http://example.org/ HTTP/1.1\r\nHost: example.org\r\n\r\n")
        .await
        .unwrap();
    let answer = raw::read_until_close(&mut bare, Duration::from_secs(5)).await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    node.wait_for_log("must start with a PROXY protocol header")
        .await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(PUPIL_PC, 0)).unwrap();
    let mut spoof = socket.connect(node.proxy).await.unwrap();
    let port = node.proxy.port();
    let request = format!(
        "PROXY TCP4 127.0.0.3 127.0.0.1 40000 {port}\r\n\
         GET http://www.bet365.com/spoofed HTTP/1.1\r\nHost: www.bet365.com\r\n\r\n"
    );
    spoof.write_all(request.as_bytes()).await.unwrap();
    let answer = raw::read_until_close(&mut spoof, Duration::from_secs(5)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(raw::status_of(&answer), 400, "{answer}");
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
        let sets = node_sets(&ch);
        let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
        let mut node1 = SafeGate::start(&sets).await;
        let mut node2 = SafeGate::start(&sets).await;
        headers_only_from_the_balancer(&mut node2).await;
        let balancer =
            HaProxy::start(&[(node1.proxy, node1.admin), (node2.proxy, node2.admin)]).await;
        let mut sent = traffic(&balancer, &origin, "both", 40).await;
        // Both nodes served and exported (the row id starts with the node's id).
        let count = format!(
            "SELECT count(), uniqExact(substring(id, 1, 16)) FROM trust.visits FINAL \
             WHERE school = '{SCHOOL}' FORMAT TSV"
        );
        until_answer(&ch, &count, &format!("{sent}\t2")).await;
        // The records name the real computers, and their roles decided.
        let clients = format!(
            "SELECT client, role, count() FROM trust.visits FINAL WHERE school = '{SCHOOL}' \
             GROUP BY client, role ORDER BY client FORMAT TSV"
        );
        let half = sent / 2;
        let want = format!("{PUPIL_PC}\tpupil\t{half}\n{STAFF_PC}\tstaff\t{half}");
        until_answer(&ch, &clients, &want).await;
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
