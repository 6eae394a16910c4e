//! Upstream failures and DNS: refused, connect timeout, response timeout, DNS failure,
//! the resolver cache, IPv6 origins. Every failure is a page naming the reason.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Socket, Type};

use crate::kit::dns::FakeDns;
use crate::kit::origin::Origin;
use crate::kit::process::SafeGate;
use crate::kit::{bounded, raw};

fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn refused_connection_gets_502_naming_the_reason() {
    bounded(async {
        let port = closed_port();
        let ports = format!("proxy.connect_ports=[443, {port}]");
        let safegate = SafeGate::start(&[&ports]).await;
        let response = safegate
            .client()
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 502);
        assert_eq!(
            response.headers()["x-safegate-reason"],
            "connection-refused"
        );
        let body = response.text().await.unwrap();
        assert!(body.contains("refused"), "{body}");

        let request =
            format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
        let response = raw::exchange(safegate.proxy, request.as_bytes()).await;
        assert_eq!(raw::status_of(&response), 502, "{response}");
        assert!(response.contains("connection-refused"), "{response}");
    })
    .await;
}

#[tokio::test]
async fn silent_origin_gets_504_after_the_response_timeout() {
    bounded(async {
        let origin = Origin::start().await;
        let safegate = SafeGate::start(&["upstream.response_timeout=\"1s\""]).await;
        let started = std::time::Instant::now();
        let response = safegate
            .client()
            .get(origin.url("/silent"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 504);
        assert_eq!(response.headers()["x-safegate-reason"], "response-timeout");
        assert!(started.elapsed() < Duration::from_secs(20));
    })
    .await;
}

/// A listener whose accept queue is full: the kernel drops further SYNs, so a connect
/// to it hangs like one to an unreachable host, without leaving loopback.
async fn black_hole() -> (Socket, Vec<tokio::net::TcpStream>, SocketAddr) {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(stream)) = tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            fillers.push(stream);
        }
    }
    (socket, fillers, addr)
}

#[tokio::test]
async fn unanswered_connect_gets_504_after_the_connect_timeout() {
    bounded(async {
        let (_socket, _fillers, addr) = black_hole().await;
        let safegate = SafeGate::start(&["upstream.connect_timeout=\"1s\""]).await;
        let started = std::time::Instant::now();
        let response = safegate
            .client()
            .get(format!("http://{addr}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 504);
        assert_eq!(response.headers()["x-safegate-reason"], "connect-timeout");
        assert!(started.elapsed() < Duration::from_secs(10));
    })
    .await;
}

#[tokio::test]
async fn names_resolve_through_the_configured_dns_server_and_failures_get_502() {
    bounded(async {
        let origin = Origin::start().await;
        let dns = FakeDns::start(&[
            ("origin.test", Ipv4Addr::LOCALHOST),
            ("cached.test", Ipv4Addr::LOCALHOST),
        ])
        .await;
        let servers = format!("upstream.dns.servers=[\"{}\"]", dns.addr);
        let ports = format!("proxy.connect_ports=[443, {}]", origin.addr.port());
        let safegate =
            SafeGate::start(&[&servers, &ports, "upstream.dns.ip_strategy=\"ipv4_only\""]).await;
        let port = origin.addr.port();

        let response = safegate
            .client()
            .get(format!("http://origin.test:{port}/headers"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let echoed = response.text().await.unwrap();
        assert!(
            echoed.contains(&format!("host: origin.test:{port}")),
            "{echoed}"
        );

        let response = safegate
            .client()
            .get(format!("http://missing.test:{port}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 502);
        assert_eq!(response.headers()["x-safegate-reason"], "dns-failure");
        assert!(response.text().await.unwrap().contains("missing.test"));

        // Two tunnels to the same name: the second is answered from hickory's cache.
        for _ in 0..2 {
            let request =
                format!("CONNECT cached.test:{port} HTTP/1.1\r\nHost: cached.test:{port}\r\n\r\n");
            let response = raw::exchange(safegate.proxy, request.as_bytes()).await;
            assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        }
        assert_eq!(dns.asked("cached.test", 1), 1, "the DNS cache was not used");
    })
    .await;
}

#[tokio::test]
async fn ipv6_origins_are_reached() {
    bounded(async {
        let Ok(origin) = Origin::start_at("[::1]:0").await else {
            eprintln!("skipped: this machine has no IPv6 loopback");
            return;
        };
        let safegate = SafeGate::start(&[]).await;
        let url = format!("http://[::1]:{}/bytes/4096", origin.addr.port());
        let response = safegate.client().get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.bytes().await.unwrap().len(), 4096);
    })
    .await;
}
