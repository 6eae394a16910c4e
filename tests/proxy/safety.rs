//! Destination safety: no loops through SafeGate's own listeners, loopback and
//! link-local refused unless allowed, configured networks refused always.

use crate::kit::origin::Origin;
use crate::kit::process::SafeGate;
use crate::kit::{bounded, raw};

async fn get(safegate: &SafeGate, url: &str) -> reqwest::Response {
    safegate.client().get(url).send().await.unwrap()
}

#[tokio::test]
async fn requests_to_the_proxy_or_admin_listener_are_never_forwarded() {
    bounded(async {
        let safegate = SafeGate::start(&[]).await;
        // The admin listener is refused as a loop.
        let response = get(&safegate, &format!("http://{}/healthz", safegate.admin)).await;
        assert_eq!(response.status(), 508);
        assert_eq!(response.headers()["x-safegate-reason"], "loop");
        // The page says where to open it instead.
        let page = response.text().await.unwrap();
        assert!(
            page.contains(&format!("Open http://{}/ directly", safegate.admin)),
            "{page}"
        );
        // The PAC file sends the admin interface direct.
        let pac = get(&safegate, &format!("http://{}/proxy.pac", safegate.proxy))
            .await
            .text()
            .await
            .unwrap();
        assert!(
            pac.contains(&format!(
                "shExpMatch(url, \"http://{}/*\")) return \"DIRECT\"",
                safegate.admin
            )),
            "{pac}"
        );
        // The proxy's own address is answered by SafeGate itself (its pages), not forwarded.
        let response = get(&safegate, &format!("http://{}/loop", safegate.proxy)).await;
        assert_eq!(response.status(), 404);
        assert_eq!(response.headers()["x-safegate-reason"], "not-found");
        let response = get(&safegate, &format!("http://{}/proxy.pac", safegate.proxy)).await;
        assert_eq!(response.status(), 200);
        assert!(response.text().await.unwrap().contains("FindProxyForURL"));
    })
    .await;
}

#[tokio::test]
async fn connect_to_the_admin_listener_is_refused_as_a_loop() {
    bounded(async {
        // Reserve a port for the admin listener so the test can allow CONNECT to it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let admin = format!("admin.listen=\"127.0.0.1:{port}\"");
        let ports = format!("proxy.connect_ports=[443, {port}]");
        let safegate = SafeGate::start(&[&admin, &ports]).await;
        assert_eq!(safegate.admin.port(), port);
        let request =
            format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
        let response = raw::exchange(safegate.proxy, request.as_bytes()).await;
        assert_eq!(raw::status_of(&response), 508, "{response}");
        assert!(response.contains("loop"), "{response}");
    })
    .await;
}

#[tokio::test]
async fn loopback_and_link_local_are_refused_by_default() {
    bounded(async {
        let origin = Origin::start().await;
        let safegate = SafeGate::start(&["upstream.allow_loopback=false"]).await;
        let response = get(&safegate, &origin.url("/bytes/10")).await;
        assert_eq!(response.status(), 403);
        assert_eq!(
            response.headers()["x-safegate-reason"],
            "forbidden-destination"
        );
        // The cloud metadata address and IPv6 loopback: refused before any connection.
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]:9/",
            "http://0.0.0.0:9/",
        ] {
            let response = get(&safegate, url).await;
            assert_eq!(response.status(), 403, "{url}");
        }
        let request = "CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n\r\n";
        let response = raw::exchange(safegate.proxy, request.as_bytes()).await;
        assert_eq!(raw::status_of(&response), 403, "{response}");
        assert!(response.contains("forbidden-destination"), "{response}");
        assert_eq!(
            origin.connections(),
            0,
            "a refused request reached the origin"
        );
    })
    .await;
}

#[tokio::test]
async fn denied_networks_are_refused_even_when_loopback_is_allowed() {
    bounded(async {
        let origin = Origin::start().await;
        let safegate =
            SafeGate::start(&["upstream.deny_networks=[\"127.0.0.0/8\", \"10.0.0.0/8\"]"]).await;
        let response = get(&safegate, &origin.url("/bytes/10")).await;
        assert_eq!(response.status(), 403);
        let body = response.text().await.unwrap();
        assert!(body.contains("127.0.0.1"), "{body}");
        assert_eq!(origin.connections(), 0);

        let open = SafeGate::start(&["upstream.deny_networks=[\"10.0.0.0/8\"]"]).await;
        let response = get(&open, &origin.url("/bytes/10")).await;
        assert_eq!(
            response.status(),
            200,
            "private ranges not listed stay allowed"
        );
    })
    .await;
}

#[tokio::test]
async fn error_pages_escape_the_requested_address() {
    bounded(async {
        let safegate = SafeGate::start(&["upstream.allow_loopback=false"]).await;
        let request = "GET http://127.0.0.1:9/%3Cscript%3E\"<script>alert(1)</script> HTTP/1.1\r\nHost: 127.0.0.1:9\r\nConnection: close\r\n\r\n";
        let response = raw::exchange(safegate.proxy, request.as_bytes()).await;
        if raw::status_of(&response) == 403 {
            assert!(!response.contains("<script>"), "unescaped markup in {response}");
        }
        let response = get(&safegate, "http://127.0.0.1:9/%3Cscript%3Ealert(1)%3C/script%3E?q=<b>x</b>").await;
        assert_eq!(response.status(), 403);
        let body = response.text().await.unwrap();
        assert!(!body.contains("<b>x</b>"), "{body}");
        assert!(body.contains("&lt;b&gt;") || body.contains("%3Cb%3E"), "{body}");
    })
    .await;
}
