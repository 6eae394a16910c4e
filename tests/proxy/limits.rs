//! Limits and timeouts against bad or slow clients: oversized and too many headers,
//! malformed request lines, slow heads, idle keep-alive connections, the connection
//! limit. Each case also checks that SafeGate logged what happened.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::kit::origin::Origin;
use crate::kit::process::SafeGate;
use crate::kit::{bounded, raw};

#[tokio::test]
async fn oversized_header_block_gets_431() {
    bounded(async {
        let origin = Origin::start().await;
        let mut safegate = SafeGate::start(&["proxy.max_header_bytes=16384"]).await;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nX-Big: {}\r\n\r\n",
            origin.url("/bytes/10"),
            origin.addr,
            "a".repeat(40_000)
        );
        let response = raw::exchange(safegate.proxy, request.as_bytes()).await;
        assert_eq!(raw::status_of(&response), 431, "{response}");
        safegate.wait_for_log("answered 431").await;
        assert_eq!(
            origin.connections(),
            0,
            "an oversized request reached the origin"
        );

        let request = format!(
            "GET http://{}/{} HTTP/1.1\r\n\r\n",
            origin.addr,
            "p".repeat(40_000)
        );
        let response = raw::exchange(safegate.proxy, request.as_bytes()).await;
        assert_eq!(
            raw::status_of(&response),
            431,
            "long request line: {response}"
        );
    })
    .await;
}

#[tokio::test]
async fn too_many_headers_get_431() {
    bounded(async {
        let origin = Origin::start().await;
        let safegate = SafeGate::start(&["proxy.max_headers=20"]).await;
        let mut request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\n",
            origin.url("/bytes/10"),
            origin.addr
        );
        for i in 0..30 {
            request.push_str(&format!("X-H{i}: v\r\n"));
        }
        request.push_str("\r\n");
        let response = raw::exchange(safegate.proxy, request.as_bytes()).await;
        assert_eq!(raw::status_of(&response), 431, "{response}");

        let mut request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\n",
            origin.url("/bytes/10"),
            origin.addr
        );
        for i in 0..10 {
            request.push_str(&format!("X-H{i}: v\r\n"));
        }
        request.push_str("Connection: close\r\n\r\n");
        let response = raw::exchange(safegate.proxy, request.as_bytes()).await;
        assert_eq!(
            raw::status_of(&response),
            200,
            "within the limit: {response}"
        );
    })
    .await;
}

#[tokio::test]
async fn malformed_requests_get_400_and_a_log_line() {
    bounded(async {
        let mut safegate = SafeGate::start(&[]).await;
        for request in [
            &b"GARBAGE\r\n\r\n"[..],
            b"GET http://example.test/ HTTP/1.1 junk\r\n\r\n",
            b"GET http://exa mple.test/ HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Header Without Colon\r\n\r\n",
        ] {
            let response = raw::exchange(safegate.proxy, request).await;
            let status = raw::status_of(&response);
            assert!(
                (400..500).contains(&status),
                "{:?} got {response}",
                String::from_utf8_lossy(request)
            );
        }
        safegate.wait_for_log("malformed request").await;

        // A relative path that is not one of SafeGate's own pages, and an unsupported scheme.
        let response = raw::exchange(safegate.proxy, b"GET ftp://example.test/file HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n").await;
        assert_eq!(raw::status_of(&response), 400, "{response}");
        assert!(response.contains("unsupported-scheme"), "{response}");
    })
    .await;
}

#[tokio::test]
async fn slow_request_head_gets_408_and_is_dropped() {
    bounded(async {
        let mut safegate = SafeGate::start(&["proxy.header_read_timeout=\"1s\""]).await;
        let mut stream = raw::connect(safegate.proxy).await;
        stream
            .write_all(b"GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: 127.0.0.1:9\r\n")
            .await
            .unwrap();
        let received = raw::read_until_close(&mut stream, Duration::from_secs(15)).await;
        let response = String::from_utf8_lossy(&received);
        assert_eq!(raw::status_of(&response), 408, "{response}");
        safegate.wait_for_log("answered 408").await;

        // A client that connects and sends nothing is dropped too.
        let mut silent = raw::connect(safegate.proxy).await;
        let received = raw::read_until_close(&mut silent, Duration::from_secs(15)).await;
        assert!(received.is_empty() || raw::status_of(&String::from_utf8_lossy(&received)) == 408);
        let mut probe = [0u8; 1];
        let closed = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read(&mut silent, &mut probe),
        )
        .await
        .expect("silent connection still open");
        assert!(matches!(closed, Ok(0) | Err(_)));
    })
    .await;
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed_after_idle_timeout() {
    bounded(async {
        let origin = Origin::start().await;
        let safegate = SafeGate::start(&["proxy.idle_timeout=\"1s\""]).await;
        let mut stream = raw::connect(safegate.proxy).await;
        for _ in 0..2 {
            let request = format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
                origin.url("/bytes/100"),
                origin.addr
            );
            stream.write_all(request.as_bytes()).await.unwrap();
            let (head, body) = raw::read_response(&mut stream).await;
            assert_eq!(raw::status_of(&head), 200);
            assert_eq!(body.len(), 100);
        }
        let started = std::time::Instant::now();
        let rest = raw::read_until_close(&mut stream, Duration::from_secs(15)).await;
        assert!(
            rest.is_empty(),
            "unexpected bytes on an idle connection: {rest:?}"
        );
        let waited = started.elapsed();
        assert!(
            waited < Duration::from_secs(10),
            "idle connection kept for {waited:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn connections_beyond_the_limit_get_503() {
    bounded(async {
        let origin = Origin::start().await;
        let mut safegate = SafeGate::start(&["proxy.max_connections=2"]).await;
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut stream = raw::connect(safegate.proxy).await;
            let request = format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
                origin.url("/bytes/10"),
                origin.addr
            );
            stream.write_all(request.as_bytes()).await.unwrap();
            let (head, _) = raw::read_response(&mut stream).await;
            assert_eq!(raw::status_of(&head), 200);
            held.push(stream);
        }
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            origin.url("/bytes/10"),
            origin.addr
        );
        let response = raw::exchange(safegate.proxy, request.as_bytes()).await;
        assert_eq!(raw::status_of(&response), 503, "{response}");
        assert!(response.contains("Retry-After"), "{response}");
        safegate.wait_for_log("connection limit reached").await;

        drop(held);
        // Once a slot is free again, new clients are served. The server notices the
        // closed connections asynchronously, so poll with a bounded number of attempts.
        let mut status = 0;
        for _ in 0..200 {
            let response = raw::exchange(safegate.proxy, request.as_bytes()).await;
            status = raw::status_of(&response);
            if status == 200 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(status, 200);
    })
    .await;
}
