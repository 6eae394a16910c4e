//! CONNECT tunnels: HTTPS through the proxy (reqwest and curl), half-close, and the
//! port allow-list.

use std::time::Duration;

use safegate_store::{Query, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::kit::origin::{Origin, TestCa};
use crate::kit::process::SafeGate;
use crate::kit::{bounded, payload, raw};

#[tokio::test]
async fn https_through_connect_equals_direct() {
    bounded(async {
        let ca = TestCa::new();
        let origin = Origin::start_tls(&ca).await;
        let ports = format!("proxy.connect_ports=[{}]", origin.addr.port());
        let safegate = SafeGate::start(&[&ports]).await;
        let root = reqwest::Certificate::from_pem(ca.ca_pem.as_bytes()).unwrap();
        let through = safegate
            .client_builder()
            .add_root_certificate(root.clone())
            .build()
            .unwrap();
        let direct = reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(root)
            .build()
            .unwrap();
        for path in ["/bytes/1024", "/bytes/2500000", "/chunked/700000"] {
            let proxied = through.get(origin.tls_url(path)).send().await.unwrap();
            assert_eq!(proxied.status(), 200);
            let proxied = proxied.bytes().await.unwrap();
            let expected = direct
                .get(origin.tls_url(path))
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            assert!(proxied == expected, "{path}: differs from direct");
        }

        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &ca.ca_pem).unwrap();
        let url = origin.tls_url("/bytes/1500000");
        let curl = |proxy: Option<String>| {
            let mut command = tokio::process::Command::new("curl");
            command.args(["-sS", "--fail", "--cacert"]).arg(&ca_file);
            match proxy {
                Some(proxy) => command.args(["-x", &proxy]),
                None => command.args(["--noproxy", "*"]),
            };
            command.arg(&url).output()
        };
        let proxied = curl(Some(safegate.proxy_url())).await.unwrap();
        assert!(
            proxied.status.success(),
            "{}",
            String::from_utf8_lossy(&proxied.stderr)
        );
        let direct = curl(None).await.unwrap();
        assert_eq!(proxied.stdout.len(), 1_500_000);
        assert!(proxied.stdout == direct.stdout);
    })
    .await;
}

/// The client half-closes after sending; the origin must see EOF, answer, and the
/// answer must still reach the client.
#[tokio::test]
async fn tunnel_passes_half_close_both_ways() {
    bounded(async {
        let origin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin_addr = origin.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = origin.accept().await.unwrap();
            let mut received = Vec::new();
            stream.read_to_end(&mut received).await.unwrap();
            let reply = format!("got {} bytes", received.len());
            stream.write_all(reply.as_bytes()).await.unwrap();
            stream.shutdown().await.unwrap();
        });
        let ports = format!("proxy.connect_ports=[{}]", origin_addr.port());
        let safegate = SafeGate::start(&[&ports]).await;
        let mut stream = raw::connect(safegate.proxy).await;
        let connect = format!("CONNECT {origin_addr} HTTP/1.1\r\nHost: {origin_addr}\r\n\r\n");
        stream.write_all(connect.as_bytes()).await.unwrap();
        let head = raw::read_head(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        stream.write_all(&payload(300_000)).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await.unwrap();
        assert_eq!(reply, "got 300000 bytes");
    })
    .await;
}

#[tokio::test]
async fn connect_to_a_port_not_allowed_is_refused() {
    bounded(async {
        let origin = Origin::start().await;
        let safegate = SafeGate::start(&[]).await;
        let request = format!("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\n", origin.addr);
        let mut stream = raw::connect(safegate.proxy).await;
        stream.write_all(request.as_bytes()).await.unwrap();
        let (head, body) = raw::read_response(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 403"), "{head}");
        assert!(
            head.contains("x-safegate-reason: connect-port-denied"),
            "{head}"
        );
        assert!(String::from_utf8_lossy(&body).contains(&origin.addr.port().to_string()));
        assert_eq!(
            origin.connections(),
            0,
            "no connection was opened to the origin"
        );
    })
    .await;
}

/// Bytes the client sends right behind the CONNECT head, in the same write, have been
/// read by the proxy's HTTP parser already; they must still reach the origin, first.
#[tokio::test]
async fn bytes_behind_the_connect_head_reach_the_origin() {
    bounded(async {
        let origin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin_addr = origin.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = origin.accept().await.unwrap();
            let mut received = Vec::new();
            stream.read_to_end(&mut received).await.unwrap();
            stream.write_all(&received).await.unwrap();
            stream.shutdown().await.unwrap();
        });
        let ports = format!("proxy.connect_ports=[{}]", origin_addr.port());
        let safegate = SafeGate::start(&[&ports]).await;
        let mut stream = raw::connect(safegate.proxy).await;
        let connect = format!("CONNECT {origin_addr} HTTP/1.1\r\nHost: {origin_addr}\r\n\r\nHELLO");
        stream.write_all(connect.as_bytes()).await.unwrap();
        let head = raw::read_head(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let rest = payload(200_000);
        stream.write_all(&rest).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut echoed = Vec::new();
        stream.read_to_end(&mut echoed).await.unwrap();
        let mut expected = b"HELLO".to_vec();
        expected.extend_from_slice(&rest);
        assert_eq!(echoed.len(), expected.len());
        assert!(echoed == expected, "echo differs from what was sent");
    })
    .await;
}

/// A tunnel that moved bytes and then went quiet is closed by
/// `proxy.tunnel_idle_timeout`; its visit-log record has the bytes it moved each way
/// and lasts at least the idle timeout (the counts used to be lost: 0 and 0).
#[tokio::test]
async fn tunnel_closed_for_idleness_is_logged_with_its_bytes() {
    bounded(async {
        const UP: usize = 100 * 1024;
        const DOWN: usize = 300 * 1024;
        let origin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin_addr = origin.local_addr().unwrap();
        let origin_task = tokio::spawn(async move {
            let (mut stream, _) = origin.accept().await.unwrap();
            let mut received = vec![0u8; UP];
            stream.read_exact(&mut received).await.unwrap();
            stream.write_all(&payload(DOWN)).await.unwrap();
            // Quiet until the proxy closes the tunnel.
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest).await;
            rest.len()
        });
        let ports = format!("proxy.connect_ports=[{}]", origin_addr.port());
        let mut safegate = SafeGate::start(&[
            &ports,
            "proxy.tunnel_idle_timeout=\"500ms\"",
            "store.visit_log=true",
        ])
        .await;
        let mut stream = raw::connect(safegate.proxy).await;
        let connect = format!("CONNECT {origin_addr} HTTP/1.1\r\nHost: {origin_addr}\r\n\r\n");
        stream.write_all(connect.as_bytes()).await.unwrap();
        let head = raw::read_head(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        stream.write_all(&payload(UP)).await.unwrap();
        let mut received = vec![0u8; DOWN];
        stream.read_exact(&mut received).await.unwrap();
        assert!(received == payload(DOWN));
        // Neither side closes; the proxy does once the tunnel has been idle.
        let rest = raw::read_until_close(&mut stream, Duration::from_secs(20)).await;
        assert!(rest.is_empty());
        assert_eq!(origin_task.await.unwrap(), 0);
        drop(stream);

        safegate.terminate();
        assert!(safegate.wait().await.success());
        let store = Store::open(safegate.data_dir()).unwrap();
        let records = store.query(&Query::default()).unwrap();
        let record = records.iter().find(|r| r.method == "CONNECT").unwrap();
        assert_eq!(
            (record.bytes_up, record.bytes_down),
            (UP as u64, DOWN as u64),
            "{record:?}"
        );
        assert!(record.duration_micros >= 500_000, "{record:?}");
    })
    .await;
}
