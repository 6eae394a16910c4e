//! Plain HTTP forwarding: bodies, methods, streaming, keep-alive, hop-by-hop headers,
//! Via, WebSocket upgrades.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::kit::origin::Origin;
use crate::kit::process::SafeGate;
use crate::kit::{bounded, payload, raw};

#[tokio::test]
async fn get_through_proxy_equals_direct_for_sized_and_chunked_bodies() {
    bounded(async {
        let origin = Origin::start().await;
        let safegate = SafeGate::start(&[]).await;
        let through = safegate.client();
        let direct = reqwest::Client::builder().no_proxy().build().unwrap();
        for path in [
            "/bytes/1024",
            "/bytes/3000000",
            "/chunked/1500000",
            "/bytes/0",
        ] {
            let proxied = through.get(origin.url(path)).send().await.unwrap();
            assert_eq!(proxied.status(), 200, "{path}");
            let proxied = proxied.bytes().await.unwrap();
            let expected = direct
                .get(origin.url(path))
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            assert_eq!(proxied.len(), expected.len(), "{path}");
            assert!(
                proxied == expected,
                "{path}: body differs from direct fetch"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn curl_fetch_matches_direct_byte_for_byte() {
    bounded(async {
        let origin = Origin::start().await;
        let safegate = SafeGate::start(&[]).await;
        let url = origin.url("/bytes/2000000");
        let proxied = tokio::process::Command::new("curl")
            .args(["-sS", "--fail", "-x", &safegate.proxy_url(), &url])
            .output()
            .await
            .unwrap();
        assert!(
            proxied.status.success(),
            "{}",
            String::from_utf8_lossy(&proxied.stderr)
        );
        let direct = tokio::process::Command::new("curl")
            .args(["-sS", "--fail", "--noproxy", "*", &url])
            .output()
            .await
            .unwrap();
        assert_eq!(proxied.stdout.len(), 2_000_000);
        assert!(
            proxied.stdout == direct.stdout,
            "curl through SafeGate differs from direct"
        );
    })
    .await;
}

#[tokio::test]
async fn every_method_reaches_the_origin_with_its_body() {
    bounded(async {
        let origin = Origin::start().await;
        let safegate = SafeGate::start(&[]).await;
        let client = safegate.client();
        for method in [
            "GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND",
        ] {
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let response = client
                .request(method.clone(), origin.url("/method"))
                .body(vec![b'x'; 777])
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{method}");
            assert_eq!(response.text().await.unwrap(), format!("{method} 777"));
        }
        let head = client.head(origin.url("/bytes/5000")).send().await.unwrap();
        assert_eq!(head.status(), 200);
        assert_eq!(head.headers()["content-length"], "5000");
        assert!(head.bytes().await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn chunked_request_body_is_echoed_intact() {
    bounded(async {
        let origin = Origin::start().await;
        let safegate = SafeGate::start(&[]).await;
        let data = payload(1_200_000);
        let parts: Vec<Result<Bytes, std::io::Error>> = data
            .chunks(10_000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let body = reqwest::Body::wrap_stream(futures_util::stream::iter(parts));
        let response = safegate
            .client()
            .post(origin.url("/echo"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.bytes().await.unwrap().as_ref(), data.as_slice());
    })
    .await;
}

/// The origin sends half a body and waits until the test has received it: a proxy
/// that buffered whole bodies would never deliver the first half.
#[tokio::test]
async fn response_body_streams_before_it_is_complete() {
    bounded(async {
        let origin = Origin::start().await;
        let safegate = SafeGate::start(&[]).await;
        let response = safegate
            .client()
            .get(origin.url("/gated"))
            .send()
            .await
            .unwrap();
        let mut stream = response.bytes_stream();
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.as_ref(), b"first half;");
        origin.state.gate.notify_one();
        let mut rest = Vec::new();
        while let Some(chunk) = stream.next().await {
            rest.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(rest, b"second half");
    })
    .await;
}

/// The client sends the rest of its body only once the origin has seen the start.
#[tokio::test]
async fn request_body_streams_before_it_is_complete() {
    bounded(async {
        let origin = Origin::start().await;
        let safegate = SafeGate::start(&[]).await;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let body =
            reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            }));
        let request = tokio::spawn(
            safegate
                .client()
                .post(origin.url("/upload-gated"))
                .body(body)
                .send(),
        );
        tx.send(Ok(Bytes::from_static(b"start of upload;")))
            .await
            .unwrap();
        origin.state.first_chunk_seen.notified().await;
        tx.send(Ok(Bytes::from(vec![b'z'; 50_000]))).await.unwrap();
        drop(tx);
        let response = request.await.unwrap().unwrap();
        assert_eq!(
            response.text().await.unwrap(),
            format!("received {}", 16 + 50_000)
        );
    })
    .await;
}

#[tokio::test]
async fn client_keep_alive_and_upstream_pooling() {
    bounded(async {
        let origin = Origin::start().await;
        let safegate = SafeGate::start(&[]).await;
        let mut stream = raw::connect(safegate.proxy).await;
        for _ in 0..5 {
            let request = format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
                origin.url("/bytes/100"),
                origin.addr
            );
            stream.write_all(request.as_bytes()).await.unwrap();
            let (head, body) = raw::read_response(&mut stream).await;
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            assert_eq!(body, payload(100));
        }
        // Five requests on one client connection, and one pooled origin connection.
        assert_eq!(origin.connections(), 1);
        let client = safegate.client();
        for _ in 0..3 {
            client
                .get(origin.url("/bytes/10"))
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
        }
        assert_eq!(
            origin.connections(),
            1,
            "a second client reuses the pooled connection"
        );
    })
    .await;
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_and_via_added() {
    bounded(async {
        let origin = Origin::start().await;
        let safegate = SafeGate::start(&[]).await;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: wrong.example\r\nConnection: keep-alive, X-Client-Hop\r\n\
             X-Client-Hop: secret\r\nKeep-Alive: timeout=10\r\nProxy-Connection: keep-alive\r\n\
             TE: trailers\r\nX-End-To-End: yes\r\n\r\n",
            origin.url("/headers")
        );
        let mut stream = raw::connect(safegate.proxy).await;
        stream.write_all(request.as_bytes()).await.unwrap();
        let (head, body) = raw::read_response(&mut stream).await;
        let seen = String::from_utf8(body).unwrap().to_ascii_lowercase();
        let names: Vec<&str> = seen
            .lines()
            .filter_map(|l| l.split_once(':').map(|(n, _)| n))
            .collect();
        // Proxy-Authorization (checked, so it needs a real user) is in tests/proxy/auth.rs.
        for gone in [
            "x-client-hop",
            "keep-alive",
            "proxy-connection",
            "te",
            "connection",
        ] {
            assert!(!names.contains(&gone), "origin received {gone}: {seen}");
        }
        assert!(seen.contains("x-end-to-end: yes"), "{seen}");
        assert!(seen.contains("via: 1.1 safegate"), "{seen}");
        assert!(
            seen.contains(&format!("host: {}", origin.addr)),
            "Host is the target's authority: {seen}"
        );

        let head = head.to_ascii_lowercase();
        for gone in ["x-origin-hop", "keep-alive: timeout", "proxy-authenticate"] {
            assert!(!head.contains(gone), "client received {gone}: {head}");
        }
        assert!(head.contains("x-end-to-end: kept"), "{head}");
        assert!(head.contains("via: 1.1 safegate"), "{head}");
    })
    .await;
}

#[tokio::test]
async fn websocket_upgrade_passes_through() {
    bounded(async {
        let origin = Origin::start().await;
        let mut safegate = SafeGate::start(&["store.visit_log=true"]).await;
        let mut stream = raw::connect(safegate.proxy).await;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            origin.url("/ws"),
            origin.addr
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let head = raw::read_head(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "{head}"
        );
        let mut socket = WebSocketStream::from_raw_socket(stream, Role::Client, None).await;
        for text in ["hello", "through SafeGate"] {
            socket.send(Message::text(text)).await.unwrap();
            let echoed = socket.next().await.unwrap().unwrap();
            assert_eq!(echoed, Message::text(text));
        }
        socket
            .send(Message::binary(payload(100_000)))
            .await
            .unwrap();
        assert_eq!(
            socket.next().await.unwrap().unwrap(),
            Message::binary(payload(100_000))
        );
        socket.close(None).await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(5), socket.next()).await;
        drop(socket);
        // The upgraded connection's record counts the frames relayed each way.
        safegate.terminate();
        assert!(safegate.wait().await.success());
        let store = safegate_store::Store::open(safegate.data_dir()).unwrap();
        let records = store.query(&safegate_store::Query::default()).unwrap();
        let ws = records
            .iter()
            .find(|r| r.path.as_deref() == Some("/ws"))
            .expect("a record for the WebSocket");
        assert_eq!(ws.status, 101, "{ws:?}");
        assert!(
            ws.bytes_up > 100_000 && ws.bytes_down > 100_000,
            "frames are counted: {ws:?}"
        );
    })
    .await;
}

/// Sends `GET url` in absolute form and returns the response head and body.
async fn get_raw(proxy: std::net::SocketAddr, url: &str, host: &str) -> (String, Vec<u8>) {
    let mut stream = raw::connect(proxy).await;
    let request = format!("GET {url} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    raw::read_response(&mut stream).await
}

#[tokio::test]
async fn plain_http_to_a_port_not_allowed_is_refused() {
    bounded(async {
        let origin = Origin::start().await;
        let safegate = SafeGate::start(&[]).await;
        // ssh and smtp: not web ports, refused before any connection is tried.
        for port in [22, 25] {
            let authority = format!("127.0.0.1:{port}");
            let (head, body) =
                get_raw(safegate.proxy, &format!("http://{authority}/"), &authority).await;
            assert!(head.starts_with("HTTP/1.1 403"), "{port}: {head}");
            assert!(
                head.contains("x-safegate-reason: http-port-denied"),
                "{port}: {head}"
            );
            let body = String::from_utf8_lossy(&body);
            assert!(
                body.contains(&format!("{port} is not one of them")),
                "{body}"
            );
        }
        // The default ports (squid's Safe_ports) include the test origin's high port.
        let response = safegate
            .client()
            .get(origin.url("/bytes/5"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        drop(safegate);

        // Narrowed to port 80, the origin's port is refused too.
        let safegate = SafeGate::start(&["proxy.http_ports=[80, \"8000-8099\"]"]).await;
        let url = origin.url("/bytes/5");
        let (head, _) = get_raw(safegate.proxy, &url, &origin.addr.to_string()).await;
        assert!(
            head.contains("x-safegate-reason: http-port-denied"),
            "{head}"
        );
        assert_eq!(origin.connections(), 1, "only the allowed fetch reached it");
    })
    .await;
}
