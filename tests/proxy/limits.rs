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

/// The status page's count of open connections (the asking one included), fetched on
/// a new connection.
async fn open_connections(proxy: std::net::SocketAddr) -> Option<usize> {
    let request = format!("GET / HTTP/1.1\r\nHost: {proxy}\r\nConnection: close\r\n\r\n");
    let page = raw::exchange(proxy, request.as_bytes()).await;
    let (_, rest) = page.split_once("<td>Open connections</td><td>")?;
    rest.split('<').next()?.parse().ok()
}

/// Polls (with a deadline, not a sleep) until `done` holds for the status page's count
/// of open connections.
async fn wait_for_open_connections(proxy: std::net::SocketAddr, done: impl Fn(usize) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let open = open_connections(proxy).await;
        if open.is_some_and(&done) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "open connections still {open:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_form_body_that_never_arrives_gets_408_and_frees_the_connection() {
    bounded(async {
        let mut safegate =
            SafeGate::start(&["proxy.body_read_timeout=\"1s\"", "auth.portal=\"all\""]).await;
        for path in ["/safegate/review", "/safegate/login"] {
            let mut stream = raw::connect(safegate.proxy).await;
            let request = format!(
                "POST {path} HTTP/1.1\r\nHost: {}\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n",
                safegate.proxy
            );
            stream.write_all(request.as_bytes()).await.unwrap();
            // While the body is awaited, the connection is open (the status page's
            // own connection is the other one).
            wait_for_open_connections(safegate.proxy, |open| open >= 2).await;
            let started = std::time::Instant::now();
            let received = raw::read_until_close(&mut stream, Duration::from_secs(15)).await;
            let response = String::from_utf8_lossy(&received);
            assert_eq!(raw::status_of(&response), 408, "{path}: {response}");
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{path}: the 408 took {:?}",
                started.elapsed()
            );
            // The connection's place is given back: only the status page's own remains.
            wait_for_open_connections(safegate.proxy, |open| open == 1).await;
        }
        safegate
            .wait_for_log("request body not received within proxy.body_read_timeout")
            .await;
    })
    .await;
}

/// Opens a CONNECT tunnel to a plain-HTTP origin and passes one request through it,
/// so it is relayed (not TLS: relayed unchanged) and stays open.
async fn open_tunnel(proxy: std::net::SocketAddr, origin: &Origin) -> tokio::net::TcpStream {
    let mut stream = raw::connect(proxy).await;
    let connect = format!("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\n", origin.addr);
    stream.write_all(connect.as_bytes()).await.unwrap();
    let head = raw::read_head(&mut stream).await;
    assert_eq!(raw::status_of(&head), 200, "{head}");
    let inside = format!("GET /bytes/10 HTTP/1.1\r\nHost: {}\r\n\r\n", origin.addr);
    stream.write_all(inside.as_bytes()).await.unwrap();
    let (head, body) = raw::read_response(&mut stream).await;
    assert_eq!(raw::status_of(&head), 200, "{head}");
    assert_eq!(body.len(), 10);
    stream
}

/// Sends `request` on new connections until one is answered `want`, with a deadline.
async fn until_answered(proxy: std::net::SocketAddr, request: &str, want: u16) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let response = raw::exchange(proxy, request.as_bytes()).await;
        if raw::status_of(&response) == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still not {want}: {response}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn open_tunnels_hold_their_connection_places() {
    bounded(async {
        let origin = Origin::start().await;
        let ports = format!("proxy.connect_ports=[{}]", origin.addr.port());
        let safegate = SafeGate::start(&["proxy.max_connections=4", &ports]).await;
        let mut tunnels = Vec::new();
        for _ in 0..4 {
            tunnels.push(open_tunnel(safegate.proxy, &origin).await);
        }
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            origin.url("/bytes/10"),
            origin.addr
        );
        // Each tunnel's HTTP connection has ended; the tunnels still count.
        let response = raw::exchange(safegate.proxy, request.as_bytes()).await;
        assert_eq!(raw::status_of(&response), 503, "{response}");
        assert!(response.contains("connection limit"), "{response}");
        // The tunnels still work.
        let last = tunnels.last_mut().unwrap();
        let inside = format!("GET /bytes/5 HTTP/1.1\r\nHost: {}\r\n\r\n", origin.addr);
        last.write_all(inside.as_bytes()).await.unwrap();
        let (head, _) = raw::read_response(last).await;
        assert_eq!(raw::status_of(&head), 200, "{head}");

        // Closing one tunnel frees its place.
        drop(tunnels.pop());
        until_answered(safegate.proxy, &request, 200).await;
    })
    .await;
}

/// A connection to `proxy` from the loopback address `from` (Linux answers on all of
/// 127.0.0.0/8).
async fn connect_from(from: [u8; 4], proxy: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::from((from, 0))).unwrap();
    socket.connect(proxy).await.unwrap()
}

#[tokio::test]
async fn one_client_address_is_limited_and_others_still_served() {
    bounded(async {
        let origin = Origin::start().await;
        let mut safegate = SafeGate::start(&["proxy.max_connections_per_client=2"]).await;
        let keep_alive = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
            origin.url("/bytes/10"),
            origin.addr
        );
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut stream = raw::connect(safegate.proxy).await;
            stream.write_all(keep_alive.as_bytes()).await.unwrap();
            let (head, _) = raw::read_response(&mut stream).await;
            assert_eq!(raw::status_of(&head), 200, "{head}");
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
        safegate
            .wait_for_log("proxy.max_connections_per_client")
            .await;

        // Another client address is still served.
        let mut other = connect_from([127, 0, 0, 2], safegate.proxy).await;
        other.write_all(request.as_bytes()).await.unwrap();
        let received = raw::read_until_close(&mut other, Duration::from_secs(10)).await;
        let response = String::from_utf8_lossy(&received);
        assert_eq!(raw::status_of(&response), 200, "{response}");

        // Once one of its connections closes, the first address is served again.
        drop(held.pop());
        until_answered(safegate.proxy, &request, 200).await;
    })
    .await;
}

/// A client that causes events at will does not fill the service log: 60 blocked
/// requests get no info line each (the visit log has them), and of 30 malformed
/// requests only the first ten a minute get a line of their own.
#[tokio::test]
async fn blocked_and_malformed_floods_are_not_logged_line_by_line() {
    bounded(async {
        let mut safegate = SafeGate::start(&[]).await;
        let client = safegate.client();
        for _ in 0..60 {
            let blocked = client
                .get("http://www.bet365.com/odds")
                .send()
                .await
                .unwrap();
            assert_eq!(blocked.status(), 403);
        }
        for _ in 0..30 {
            let response = raw::exchange(safegate.proxy, b"GARBAGE\r\n\r\n").await;
            assert_eq!(raw::status_of(&response), 400, "{response}");
        }
        safegate
            .wait_for_logs(|lines| lines.iter().any(|l| l.contains("malformed request")))
            .await;
        // A line logged after all of them: everything before it is in the log.
        let hup = std::process::Command::new("kill")
            .args(["-HUP", &safegate.pid().to_string()])
            .status()
            .unwrap();
        assert!(hup.success());
        safegate.wait_for_log("SIGHUP received").await;
        let logs = safegate.logs();
        let malformed = logs
            .iter()
            .filter(|l| l.contains("malformed request"))
            .count();
        let blocked = logs
            .iter()
            .filter(|l| l.contains("bet365") && l.contains("INFO"))
            .count();
        assert_eq!(blocked, 0, "{logs:#?}");
        // Ten a minute; a minute boundary inside the burst allows ten more.
        assert!((10..=20).contains(&malformed), "{malformed}: {logs:#?}");
    })
    .await;
}
