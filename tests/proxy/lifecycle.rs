//! Graceful shutdown: on SIGTERM SafeGate stops accepting, lets the requests and
//! tunnels in flight finish within `proxy.shutdown_grace`, then exits 0.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::kit::origin::Origin;
use crate::kit::process::SafeGate;
use crate::kit::{bounded, raw};

#[tokio::test]
async fn sigterm_lets_the_request_in_flight_finish_and_exits_zero() {
    bounded(async {
        let origin = Origin::start().await;
        let mut safegate = SafeGate::start(&["proxy.shutdown_grace=\"30s\""]).await;
        let mut response = safegate
            .client()
            .get(origin.url("/gated"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let first = response.chunk().await.unwrap().unwrap();
        assert_eq!(&first[..], b"first half;");

        safegate.terminate();
        safegate.wait_for_log("shutting down").await;
        // The listener closes: new clients are refused. The accept task drops the
        // listener right after the log line, so retry until a deadline.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut refused = false;
        while std::time::Instant::now() < deadline {
            if tokio::net::TcpStream::connect(safegate.proxy)
                .await
                .is_err()
            {
                refused = true;
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(refused, "SafeGate still accepts connections after SIGTERM");

        origin.state.gate.notify_one();
        let mut rest = Vec::new();
        while let Some(chunk) = response.chunk().await.unwrap() {
            rest.extend_from_slice(&chunk);
        }
        assert_eq!(&rest[..], b"second half");
        let status = safegate.wait().await;
        assert!(status.success(), "exit status {status}");
        assert!(
            safegate
                .logs()
                .iter()
                .any(|l| l.contains("all requests finished"))
        );
    })
    .await;
}

#[tokio::test]
async fn open_tunnel_is_closed_when_the_grace_period_expires() {
    bounded(async {
        let origin = Origin::start().await;
        let ports = format!("proxy.connect_ports=[443, {}]", origin.addr.port());
        let mut safegate = SafeGate::start(&[&ports, "proxy.shutdown_grace=\"1s\""]).await;
        let mut tunnel = raw::connect(safegate.proxy).await;
        let target = origin.addr;
        tunnel
            .write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let head = raw::read_head(&mut tunnel).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");

        safegate.terminate();
        let status = safegate.wait().await;
        assert!(status.success(), "exit status {status}");
        assert!(
            safegate
                .logs()
                .iter()
                .any(|l| l.contains("grace period over")),
            "{:?}",
            safegate.logs()
        );
        let mut buf = [0u8; 16];
        let closed = tokio::time::timeout(Duration::from_secs(5), tunnel.read(&mut buf))
            .await
            .unwrap();
        assert!(
            matches!(closed, Ok(0) | Err(_)),
            "tunnel still open after exit"
        );
    })
    .await;
}

#[tokio::test]
async fn sigint_also_shuts_down_cleanly() {
    bounded(async {
        let mut safegate = SafeGate::start(&[]).await;
        let status = std::process::Command::new("kill")
            .args(["-INT", &safegate.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = safegate.wait().await;
        assert!(exit.success(), "exit status {exit}");
        assert!(
            safegate
                .logs()
                .iter()
                .any(|l| l.contains("SIGINT received"))
        );
    })
    .await;
}
