//! The records the proxy hands to its visit-log sink: one per request, allowed,
//! blocked, failed or tunnelled, with status, bytes and duration filled in when the
//! response (or tunnel) is over. An in-process proxy on 127.0.0.1, a raw TCP origin,
//! and a sink that collects into memory.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use safegate_policy::Policy;
use safegate_proxy::visit_record::RecordSink;
use safegate_proxy::{Drained, PacConfig, Proxy, ProxyConfig, ProxySettings, UpstreamConfig};
use safegate_store::{Outcome, Record, SeenAs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct Collected {
    records: Mutex<Vec<Record>>,
    arrived: Notify,
}

struct Collector(Arc<Collected>);

impl RecordSink for Collector {
    fn submit(&self, record: Record) {
        self.0.records.lock().unwrap().push(record);
        self.0.arrived.notify_one();
    }
}

impl Collected {
    async fn wait_for(&self, count: usize) -> Vec<Record> {
        loop {
            let notified = self.arrived.notified();
            {
                let records = self.records.lock().unwrap();
                if records.len() >= count {
                    return records.clone();
                }
            }
            notified.await;
        }
    }
}

/// An origin that answers every request with `body` and echoes tunnel bytes.
async fn origin(body: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = stream.read(&mut buf).await.unwrap_or(0);
                if buf[..n].starts_with(b"GET") || buf[..n].starts_with(b"POST") {
                    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(body).await;
                } else {
                    // Tunnel: echo until the client closes.
                    let _ = stream.write_all(&buf[..n]).await;
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                }
            });
        }
    });
    addr
}

async fn start(
    collected: &Arc<Collected>,
    origin_port: u16,
) -> (SocketAddr, CancellationToken, tempfile::TempDir) {
    let running = start_with(collected, origin_port, ProxyConfig::default()).await;
    (running.addr, running.shutdown, running.dir)
}

/// A proxy serving in the background.
struct Running {
    addr: SocketAddr,
    shutdown: CancellationToken,
    served: JoinHandle<Drained>,
    dir: tempfile::TempDir,
}

/// A proxy with `proxy`'s timeouts (its listen address and ports are set here).
async fn start_with(collected: &Arc<Collected>, origin_port: u16, proxy: ProxyConfig) -> Running {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gambling.txt"), "bet.test\n").unwrap();
    let policy_path = dir.path().join("policy.toml");
    std::fs::write(
        &policy_path,
        "default_role = \"pupil\"\n[categories.gambling]\nsources = [{ format = \"domains\", path = \"gambling.txt\" }]\n\
         [roles.pupil]\nblock = [\"gambling\"]\nsafesearch = false\nyoutube = \"off\"\n[roles.staff]\n[roles.filter-admin]\n",
    )
    .unwrap();
    let snapshot = Policy::load(&policy_path).unwrap();
    let proxy = ProxyConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        connect_ports: vec![443, origin_port],
        ..proxy
    };
    let mut upstream = UpstreamConfig {
        allow_loopback: true,
        ..UpstreamConfig::default()
    };
    upstream.dns.servers = vec![safegate_proxy::config::DnsServer(
        "127.0.0.1:9".parse().unwrap(),
    )];
    upstream.dns.timeout = Duration::from_secs(1);
    let settings = ProxySettings {
        proxy: &proxy,
        upstream: &upstream,
        pac: &PacConfig::default(),
        transparent: &safegate_proxy::TransparentConfig::default(),
        reviews: None,
        policy: Arc::new(ArcSwap::from_pointee(snapshot)),
        auth: Arc::default(),
        records: Some(Arc::new(Collector(Arc::clone(collected)))),
        record_clock: Default::default(),
        computer_names: None,
        decryption: None,
    };
    let bound = Proxy::bind(settings, &[]).await.unwrap();
    let addr = bound.local_addr();
    let shutdown = CancellationToken::new();
    let served = tokio::spawn(bound.run(shutdown.clone()));
    Running {
        addr,
        shutdown,
        served,
        dir,
    }
}

async fn exchange(proxy: SocketAddr, request: &str) -> Vec<u8> {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn every_kind_of_request_leaves_one_complete_record() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let body: &'static [u8] = &[b'x'; 5000];
        let origin = origin(body).await;
        let collected = Arc::new(Collected::default());
        let (proxy, shutdown, _dir) = start(&collected, origin.port()).await;

        // Allowed GET.
        let request = format!(
            "GET http://{origin}/page?q=1 HTTP/1.1\r\nHost: {origin}\r\nUser-Agent: test-agent\r\nConnection: close\r\n\r\n"
        );
        let response = exchange(proxy, &request).await;
        assert!(response.starts_with(b"HTTP/1.1 200"));
        let records = collected.wait_for(1).await;
        let record = &records[0];
        assert_eq!(record.outcome, Outcome::Allowed);
        assert_eq!((record.status, record.bytes_down), (200, 5000));
        assert_eq!(record.seen_as, SeenAs::PlainHttp);
        assert_eq!(record.path.as_deref(), Some("/page?q=1"));
        assert_eq!(record.user_agent.as_deref(), Some("test-agent"));
        assert_eq!(record.role, "pupil");
        assert_eq!(record.rule, "default");

        // Blocked GET: recorded with the rule, nothing sent to the origin.
        let response = exchange(proxy, "GET http://www.bet.test/ HTTP/1.1\r\nHost: www.bet.test\r\nConnection: close\r\n\r\n").await;
        assert!(response.starts_with(b"HTTP/1.1 403"));
        let records = collected.wait_for(2).await;
        assert_eq!(records[1].outcome, Outcome::Blocked);
        assert_eq!(records[1].rule, "category:pupil:gambling");
        assert_eq!(records[1].categories, vec!["gambling".to_owned()]);
        assert_eq!(records[1].host, "www.bet.test");

        // Failed upstream: a closed port.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let request = format!("GET http://{closed}/ HTTP/1.1\r\nHost: {closed}\r\nConnection: close\r\n\r\n");
        let response = exchange(proxy, &request).await;
        assert!(response.starts_with(b"HTTP/1.1 502"));
        let records = collected.wait_for(3).await;
        assert_eq!(records[2].outcome, Outcome::Failed);
        assert_eq!(records[2].failure.as_deref(), Some("connection-refused"));
        assert_eq!(records[2].status, 502);

        // A tunnel: recorded when it closes, with its bytes.
        let mut tunnel = TcpStream::connect(proxy).await.unwrap();
        tunnel
            .write_all(format!("CONNECT {origin} HTTP/1.1\r\nHost: {origin}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            tunnel.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 200"));
        tunnel.write_all(&[7u8; 1000]).await.unwrap();
        let mut echoed = [0u8; 1000];
        tunnel.read_exact(&mut echoed).await.unwrap();
        tunnel.shutdown().await.unwrap();
        let mut rest = Vec::new();
        tunnel.read_to_end(&mut rest).await.unwrap();
        let records = collected.wait_for(4).await;
        let record = &records[3];
        assert_eq!((record.method.as_str(), record.seen_as), ("CONNECT", SeenAs::ConnectHost));
        assert_eq!((record.status, record.bytes_up, record.bytes_down), (200, 1000, 1000));
        assert_eq!(record.path, None);
        shutdown.cancel();
    })
    .await
    .expect("test timed out");
}

const UP: usize = 100 * 1024;
const DOWN: usize = 300 * 1024;

/// Opens a CONNECT tunnel to `origin` through `proxy` and reads the 200.
async fn open_tunnel(proxy: SocketAddr, origin: SocketAddr) -> TcpStream {
    let mut tunnel = TcpStream::connect(proxy).await.unwrap();
    tunnel
        .write_all(format!("CONNECT {origin} HTTP/1.1\r\nHost: {origin}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tunnel.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    tunnel
}

/// An origin for one tunnel: it reads `UP` bytes, answers `DOWN` bytes, then keeps
/// the connection open, passing nothing, until the proxy closes it. The task returns
/// what it read after the answer.
async fn quiet_origin() -> (SocketAddr, JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut received = vec![0u8; UP];
        stream.read_exact(&mut received).await.unwrap();
        stream.write_all(&vec![2u8; DOWN]).await.unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
        rest.len()
    });
    (addr, task)
}

/// Sends `UP` bytes into the tunnel and reads the `DOWN` bytes of the answer.
async fn exchange_through(tunnel: &mut TcpStream) {
    tunnel.write_all(&vec![1u8; UP]).await.unwrap();
    let mut received = vec![0u8; DOWN];
    tunnel.read_exact(&mut received).await.unwrap();
    assert!(received.iter().all(|&b| b == 2));
}

/// A tunnel that moved bytes and then went quiet is closed by the idle timeout; its
/// record has the bytes relayed each way (they used to be lost: 0 and 0) and lasts
/// at least the idle timeout. On Linux both ends are TCP sockets, so this is the
/// splice path; the copy loop is covered by the unit tests in `tunnel.rs`.
#[tokio::test]
async fn tunnel_closed_for_idleness_is_recorded_with_its_bytes() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let idle_timeout = Duration::from_millis(300);
        let (origin, origin_task) = quiet_origin().await;
        let collected = Arc::new(Collected::default());
        let config = ProxyConfig {
            tunnel_idle_timeout: idle_timeout,
            ..ProxyConfig::default()
        };
        let running = start_with(&collected, origin.port(), config).await;
        let mut tunnel = open_tunnel(running.addr, origin).await;
        exchange_through(&mut tunnel).await;
        // Neither side closes: the proxy does, once the tunnel has been idle.
        let mut rest = Vec::new();
        tunnel.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        assert_eq!(origin_task.await.unwrap(), 0, "the origin saw the close");
        let records = collected.wait_for(1).await;
        assert_eq!(records.len(), 1, "{records:#?}");
        let record = &records[0];
        assert_eq!((record.method.as_str(), record.status), ("CONNECT", 200));
        assert_eq!(
            (record.bytes_up, record.bytes_down),
            (UP as u64, DOWN as u64)
        );
        assert!(
            record.duration_micros >= idle_timeout.as_micros() as u64,
            "{record:?}"
        );
        running.shutdown.cancel();
    })
    .await
    .expect("test timed out");
}

/// The client vanishes in the middle of a download (its socket is closed with unread
/// bytes, so it resets): the record has the bytes that were relayed until then.
#[tokio::test]
async fn tunnel_cut_off_by_the_client_is_recorded_with_what_was_relayed() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = listener.local_addr().unwrap();
        // Reads `UP` bytes, then streams until the tunnel breaks; returns how much of
        // the stream its socket accepted.
        let origin_task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut received = vec![0u8; UP];
            stream.read_exact(&mut received).await.unwrap();
            let chunk = vec![2u8; 16 * 1024];
            let mut written = 0u64;
            while let Ok(n) = stream.write(&chunk).await {
                written += n as u64;
            }
            written
        });
        let collected = Arc::new(Collected::default());
        let running = start_with(&collected, origin.port(), ProxyConfig::default()).await;
        let mut tunnel = open_tunnel(running.addr, origin).await;
        tunnel.write_all(&vec![1u8; UP]).await.unwrap();
        let mut received = vec![0u8; DOWN];
        tunnel.read_exact(&mut received).await.unwrap();
        drop(tunnel);
        let records = collected.wait_for(1).await;
        let written = origin_task.await.unwrap();
        let record = &records[0];
        assert_eq!(record.method, "CONNECT");
        assert_eq!(record.bytes_up, UP as u64, "{record:?}");
        assert!(
            (DOWN as u64..=written).contains(&record.bytes_down),
            "{record:?}; the origin's socket took {written}"
        );
        assert!(record.duration_micros > 0);
        running.shutdown.cancel();
    })
    .await
    .expect("test timed out");
}

/// A tunnel still open when the shutdown grace runs out is cut off, and its record
/// (with the bytes it moved) is submitted before `run` returns, while the visit-log
/// writer still runs.
#[tokio::test]
async fn tunnel_cut_off_at_shutdown_is_recorded_with_its_bytes() {
    let collected = Arc::new(Collected::default());
    tokio::time::timeout(Duration::from_secs(30), async {
        let (origin, _origin_task) = quiet_origin().await;
        let config = ProxyConfig {
            shutdown_grace: Duration::from_millis(100),
            ..ProxyConfig::default()
        };
        let mut running = start_with(&collected, origin.port(), config).await;
        let mut tunnel = open_tunnel(running.addr, origin).await;
        exchange_through(&mut tunnel).await;
        running.shutdown.cancel();
        let drained = (&mut running.served).await.unwrap();
        assert!(
            matches!(drained, Drained::GraceExpired { open } if open >= 1),
            "{drained:?}"
        );
        let records = collected.records.lock().unwrap().clone();
        assert_eq!(records.len(), 1, "{records:#?}");
        let record = &records[0];
        assert_eq!(record.method, "CONNECT");
        assert_eq!(
            (record.bytes_up, record.bytes_down),
            (UP as u64, DOWN as u64)
        );
        // The proxy closed its side of the tunnel (EOF or reset, not silence).
        let mut rest = Vec::new();
        let _closed = tokio::time::timeout(Duration::from_secs(5), tunnel.read_to_end(&mut rest))
            .await
            .expect("the cut-off tunnel was not closed");
    })
    .await
    .expect("test timed out");
}
