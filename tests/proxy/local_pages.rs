//! Requests addressed to SafeGate itself: the status page and the PAC file.

use crate::kit::process::SafeGate;
use crate::kit::{bounded, raw};

#[tokio::test]
async fn pac_file_and_wpad_point_at_the_proxy() {
    bounded(async {
        let safegate = SafeGate::start(&["pac.direct_domains=[\"school.lan\"]"]).await;
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        for path in ["/proxy.pac", "/wpad.dat"] {
            let response = client
                .get(format!("{}{path}", safegate.proxy_url()))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(
                response.headers()["content-type"],
                "application/x-ns-proxy-autoconfig"
            );
            let script = response.text().await.unwrap();
            assert!(
                script.contains("function FindProxyForURL(url, host)"),
                "{script}"
            );
            assert!(
                script.contains(&format!("return \"PROXY {}\";", safegate.proxy)),
                "{script}"
            );
            assert!(
                script.contains("dnsDomainIs(host, \".school.lan\")"),
                "{script}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn status_page_and_unknown_paths() {
    bounded(async {
        let safegate = SafeGate::start(&[]).await;
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let status = client.get(safegate.proxy_url()).send().await.unwrap();
        assert_eq!(status.status(), 200);
        let page = status.text().await.unwrap();
        assert!(page.contains("SafeGate is running"), "{page}");
        assert!(page.contains(env!("CARGO_PKG_VERSION")));

        let missing = client.get(format!("{}/<b>nope", safegate.proxy_url())).send().await.unwrap();
        assert_eq!(missing.status(), 404);
        let page = missing.text().await.unwrap();
        assert!(!page.contains("<b>nope"), "paths are escaped: {page}");

        let response = raw::exchange(safegate.proxy, b"POST /proxy.pac HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
        assert_eq!(raw::status_of(&response), 405);
    })
    .await;
}

#[tokio::test]
async fn admin_health_check_answers_ok() {
    bounded(async {
        let safegate = SafeGate::start(&[]).await;
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let response = client
            .get(format!("http://{}/healthz", safegate.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "ok\n");
    })
    .await;
}
