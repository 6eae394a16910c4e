//! The block page over HTTPS: with the school CA set up, a blocked HTTPS site (a
//! blocked CONNECT, a fronted server name in an allowed tunnel, a blocked transparent
//! TLS connection) is answered with the block page over TLS with a leaf from the
//! school CA, its review form stores the review, nothing reaches the origin, and the
//! blocked attempt is recorded once per connection, not per request. Never-decrypt
//! sites, and every site with `decrypt.block_pages = false`, keep the 403 to CONNECT.
//! Headless Chromium through SafeGate, trusting the school CA's key, shows the page
//! and submits the form. Every name resolves to 127.0.0.1 (the fake DNS server).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use safegate_store::{Outcome, Query, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::https::Setup;
use crate::kit::block_page::review_form_fields;
use crate::kit::browser::{Browser, Options};
use crate::kit::{bounded, raw};

const BLOCKED_RULE: &str = "category:pupil:gambling";

#[tokio::test]
async fn a_blocked_https_site_gets_the_block_page_over_tls() {
    bounded(async {
        let mut setup = Setup::start_with(&[], &["transparent.https_listen=\"127.0.0.1:0\""]).await;
        let origin_connections = setup.origin.connections();
        let url = setup.url("bet.test", "/casino?x=1&y=2");
        let review_url = setup.url("bet.test", "/safegate/review");

        // HTTP/1.1: three requests on one connection, each answered with the page.
        let http1 = setup.school_client(true);
        let page = blocked_page(&http1, &url, reqwest::Version::HTTP_11).await;
        blocked_page(
            &http1,
            &setup.url("bet.test", "/favicon.ico"),
            reqwest::Version::HTTP_11,
        )
        .await;
        let mut fields = review_form_fields(&page);
        assert_eq!(fields[0], ("url".to_owned(), url.clone()));
        assert_eq!(fields[1], ("rule".to_owned(), BLOCKED_RULE.to_owned()));
        fields.push(("comment".to_owned(), "betting maths lesson".to_owned()));
        let answer = http1.post(&review_url).form(&fields).send().await.unwrap();
        assert_eq!(answer.status(), 200);
        let text = answer.text().await.unwrap();
        assert!(text.contains("Review requested"), "{text}");
        setup.safegate.wait_for_log("review request recorded").await;

        // HTTP/2, as ALPN agreed: a second connection.
        blocked_page(&setup.school_client(false), &url, reqwest::Version::HTTP_2).await;

        never_decrypt_sites_keep_the_refusal(&setup).await;
        transparent_tls_gets_the_page(&setup).await;
        // Nothing went to the origin: no connection at all for a blocked site.
        assert_eq!(setup.origin.connections(), origin_connections);
        // (An allowed tunnel connects to the origin before its ClientHello.)
        a_fronted_name_in_an_allowed_tunnel_gets_the_page(&setup).await;

        setup.safegate.terminate();
        assert!(setup.safegate.wait().await.success());
        let store = Store::open(&setup._dir.path().join("data")).unwrap();
        let records = store.query(&Query::default()).unwrap();
        let bet: Vec<_> = records.iter().filter(|r| r.host == "bet.test").collect();
        // One record per connection (HTTP/1.1, HTTP/2, transparent), none per request.
        assert_eq!(bet.len(), 3, "{records:#?}");
        assert!(
            bet.iter().all(|r| r.outcome == Outcome::Blocked
                && r.rule == BLOCKED_RULE
                && r.status == 403),
            "{bet:#?}"
        );
        let methods: Vec<_> = bet.iter().map(|r| r.method.as_str()).collect();
        assert_eq!(
            methods.iter().filter(|m| **m == "CONNECT").count(),
            2,
            "{methods:?}"
        );
        assert!(methods.contains(&"TLS"), "{methods:?}");
        let fronted: Vec<_> = records
            .iter()
            .filter(|r| r.rule == "sni-mismatch")
            .collect();
        assert_eq!(fronted.len(), 1, "{records:#?}");
        assert_eq!(
            (fronted[0].host.as_str(), fronted[0].status),
            ("open.test", 403)
        );
        let dating: Vec<_> = records.iter().filter(|r| r.host == "dating.test").collect();
        assert_eq!(dating.len(), 3, "{records:#?}");
        assert!(dating.iter().all(|r| r.status == 403), "{dating:#?}");

        let reviews = store.reviews(10).unwrap();
        assert_eq!(reviews.len(), 1, "{reviews:#?}");
        assert_eq!(
            (
                reviews[0].url.as_str(),
                reviews[0].rule.as_str(),
                reviews[0].comment.as_str()
            ),
            (url.as_str(), BLOCKED_RULE, "betting maths lesson")
        );
        assert_eq!(reviews[0].categories, ["gambling"]);
    })
    .await;
}

/// GETs `url`, expecting the block page over `version` with its review form; returns
/// the page.
async fn blocked_page(client: &reqwest::Client, url: &str, version: reqwest::Version) -> String {
    let response = client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 403, "{url}");
    assert_eq!(response.version(), version, "{url}");
    assert_eq!(response.headers()["x-safegate-rule"], BLOCKED_RULE);
    let page = response.text().await.unwrap();
    assert!(page.contains("This page is blocked"), "{page}");
    assert!(page.contains("action=\"/safegate/review\""), "{page}");
    assert!(page.contains("Ask for a review"), "{page}");
    assert!(!page.contains("http://"), "{page}");
    assert!(page.contains("x=1&amp;y=2") || !url.contains('&'), "{page}");
    page
}

/// An allowed CONNECT (open.test, tunnelled) whose ClientHello names the blocked
/// bet.test is domain fronting: the page, over TLS for bet.test, says so.
async fn a_fronted_name_in_an_allowed_tunnel_gets_the_page(setup: &Setup) {
    let port = setup.origin.addr.port();
    let mut stream = raw::connect(setup.safegate.proxy).await;
    let request = format!("CONNECT open.test:{port} HTTP/1.1\r\nHost: open.test:{port}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = raw::read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (head, body) = get_over_tls(stream, "bet.test", &setup.school_ca, true).await;
    assert!(head.starts_with("http/1.1 403"), "{head}");
    assert!(head.contains("x-safegate-rule: sni-mismatch"), "{head}");
    assert!(body.contains("domain fronting"), "{body}");
    assert!(body.contains("action=\"/safegate/review\""), "{body}");
}

/// dating.test is blocked and never decrypted: the CONNECT gets its 403 with the
/// reason, no TLS handshake.
async fn never_decrypt_sites_keep_the_refusal(setup: &Setup) {
    let head = refused_connect(
        setup.safegate.proxy,
        "dating.test",
        setup.origin.addr.port(),
    )
    .await;
    assert!(
        head.contains("x-safegate-why: blocked by safegate"),
        "{head}"
    );
    assert!(
        setup
            .school_client(true)
            .get(setup.url("dating.test", "/"))
            .send()
            .await
            .is_err()
    );
}

/// A transparent TLS connection naming bet.test gets the same page.
async fn transparent_tls_gets_the_page(setup: &Setup) {
    let https = setup
        .safegate
        .logged_addr("transparent HTTPS listening on ")
        .unwrap();
    let root = reqwest::Certificate::from_pem(setup.school_ca.as_bytes()).unwrap();
    let client = reqwest::Client::builder()
        .no_proxy()
        .resolve("bet.test", https)
        .add_root_certificate(root)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let response = client.get("https://bet.test/").send().await.unwrap();
    assert_eq!(response.status(), 403);
    let page = response.text().await.unwrap();
    assert!(page.contains("This page is blocked"), "{page}");
    assert!(page.contains("https://bet.test/"), "{page}");
    // A never-decrypt site keeps the TLS access_denied alert.
    let mut never = raw::connect(https).await;
    never
        .write_all(&crate::https::client_hello("dating.test"))
        .await
        .unwrap();
    let reply = raw::read_until_close(&mut never, Duration::from_secs(10)).await;
    assert_eq!(reply, [21, 3, 3, 0, 2, 2, 49]);
}

/// Sends a CONNECT for `host:port`, expects 403, returns the head (lower-case).
async fn refused_connect(proxy: SocketAddr, host: &str, port: u16) -> String {
    let mut stream = raw::connect(proxy).await;
    let request = format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = raw::read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    head.to_lowercase()
}

/// TLS for `name` over `stream` trusting only `ca_pem`, then one HTTP/1.1 GET of `/`
/// (asking to close the connection after it when `close`), read until the connection
/// closes (at most 10 s); returns the response head (lower-case) and body.
async fn get_over_tls(
    stream: tokio::net::TcpStream,
    name: &str,
    ca_pem: &str,
    close: bool,
) -> (String, String) {
    let mut roots = rustls::RootCertStore::empty();
    let der = pem_der(ca_pem);
    roots.add(der.into()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let server = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut tls = connector.connect(server, stream).await.unwrap();
    let connection = if close { "close" } else { "keep-alive" };
    let request = format!("GET / HTTP/1.1\r\nHost: {name}\r\nConnection: {connection}\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut received)).await;
    let text = String::from_utf8_lossy(&received).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_lowercase(), body.to_owned())
}

#[tokio::test]
async fn block_page_connections_are_bounded_in_time() {
    bounded(async {
        let setup = Setup::start_with(
            &[],
            &[
                "proxy.header_read_timeout=\"1s\"",
                "proxy.idle_timeout=\"1s\"",
            ],
        )
        .await;
        let port = setup.origin.addr.port();
        let connect = format!("CONNECT bet.test:{port} HTTP/1.1\r\nHost: bet.test:{port}\r\n\r\n");
        // No ClientHello: closed after the header timeout.
        let mut silent = raw::connect(setup.safegate.proxy).await;
        silent.write_all(connect.as_bytes()).await.unwrap();
        assert!(
            raw::read_head(&mut silent)
                .await
                .starts_with("HTTP/1.1 200")
        );
        let started = std::time::Instant::now();
        assert!(
            raw::read_until_close(&mut silent, Duration::from_secs(10))
                .await
                .is_empty()
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        // A page, then nothing: the kept-alive connection is closed when idle.
        let mut stream = raw::connect(setup.safegate.proxy).await;
        stream.write_all(connect.as_bytes()).await.unwrap();
        assert!(
            raw::read_head(&mut stream)
                .await
                .starts_with("HTTP/1.1 200")
        );
        let started = std::time::Instant::now();
        let (head, body) = get_over_tls(stream, "bet.test", &setup.school_ca, false).await;
        assert!(head.starts_with("http/1.1 403"), "{head}");
        assert!(body.contains("This page is blocked"), "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    })
    .await;
}

#[tokio::test]
async fn with_block_pages_off_a_blocked_connect_keeps_its_403() {
    bounded(async {
        let setup = Setup::start_full(&[], &[], "block_pages = false\n").await;
        let head =
            refused_connect(setup.safegate.proxy, "bet.test", setup.origin.addr.port()).await;
        assert!(
            head.contains("x-safegate-why: blocked by safegate"),
            "{head}"
        );
        let records = setup.records().await;
        assert!(
            records
                .iter()
                .any(|r| r.host == "bet.test" && r.status == 403)
        );
    })
    .await;
}

#[tokio::test]
async fn chromium_trusting_the_school_ca_shows_the_block_page_and_sends_a_review() {
    bounded(async {
        let mut setup = Setup::start().await;
        let options = Options {
            proxy: Some(setup.safegate.proxy),
            trusted_spki: vec![spki_sha256(&setup.school_ca)],
            accept_language: None,
        };
        let Some(browser) = Browser::start_with(&options).await else {
            return;
        };
        let url = setup.url("bet.test", "/casino");
        browser.goto(&url).await;
        let text = browser.wait_for_text("This page is blocked").await;
        assert!(text.contains("Need this page for school work?"), "{text}");
        // The category is in the details folded away for staff.
        assert!(browser.source().await.contains("gambling"), "{text}");
        browser
            .fill("textarea[name=comment]", "we study probability")
            .await;
        browser.screenshot("https-block-page-before-review").await;
        browser.click("button[type=submit]").await;
        let text = browser.wait_for_text("Review requested").await;
        assert!(
            browser
                .url()
                .await
                .starts_with(&setup.url("bet.test", "/safegate/review")),
            "{text}"
        );
        browser.screenshot("https-block-page-review-sent").await;
        setup.safegate.wait_for_log("review request recorded").await;
        // A never-decrypt site keeps the refused CONNECT: Chromium's own error.
        let text = browser.goto_failing(&setup.url("dating.test", "/")).await;
        assert!(text.contains("ERR_TUNNEL_CONNECTION_FAILED"), "{text}");
        drop(browser);
        // A device that does not trust the school CA sees a certificate warning.
        let untrusting = Options {
            proxy: Some(setup.safegate.proxy),
            trusted_spki: Vec::new(),
            accept_language: None,
        };
        let browser = Browser::start_with(&untrusting).await.unwrap();
        let warning = browser.goto_failing(&url).await;
        assert!(warning.contains("ERR_CERT_AUTHORITY_INVALID"), "{warning}");
        browser.screenshot("https-block-page-without-the-ca").await;
        drop(browser);
        eprintln!("never-decrypt: {text}\nwithout the CA: {warning}");
        setup.safegate.terminate();
        assert!(setup.safegate.wait().await.success());
        let store = Store::open(&setup._dir.path().join("data")).unwrap();
        let reviews = store.reviews(10).unwrap();
        assert_eq!(reviews.len(), 1, "{reviews:#?}");
        assert_eq!(
            (reviews[0].url.as_str(), reviews[0].comment.as_str()),
            (url.as_str(), "we study probability")
        );
    })
    .await;
}

/// The DER of the first certificate in `pem`.
fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem
        .lines()
        .skip_while(|line| !line.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|line| !line.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

/// Base64 SHA-256 of the certificate's SubjectPublicKeyInfo, as Chromium's
/// `--ignore-certificate-errors-spki-list` takes it.
/// The school's block page section: a message with markup (shown as text), a logo,
/// and Welsh as the school's language.
fn block_page_section(logo: &std::path::Path) -> String {
    format!(
        "\n[block_page]\nmessage = \"Ask Mrs Jones in the library <b>before</b> break.\"\nlogo = {:?}\nlanguage = \"cy\"\n",
        logo.display().to_string()
    )
}

/// Opens the blocked page in a Chromium asking for `languages`; checks the child's
/// text (`heading`, the school's message as text, the way back), that the staff
/// details are folded away, the keyboard order, and axe-core's WCAG 2.2 AA rules;
/// saves screenshots named `block-page-NAME`.
async fn child_sees(setup: &Setup, languages: &str, heading: &str, back: &str, name: &str) {
    let options = Options {
        proxy: Some(setup.safegate.proxy),
        trusted_spki: vec![spki_sha256(&setup.school_ca)],
        accept_language: Some(languages.to_owned()),
    };
    let Some(browser) = Browser::start_with(&options).await else {
        return;
    };
    browser
        .goto(&setup.url("bet.test", "/casino?q=%3Ci%3Ex%3C/i%3E"))
        .await;
    let text = browser.wait_for_text(heading).await;
    assert!(
        text.contains("Ask Mrs Jones in the library <b>before</b> break."),
        "{text}"
    );
    assert!(text.contains(back), "{text}");
    // The rule id and category are folded away for staff.
    assert!(!text.contains(BLOCKED_RULE), "{text}");
    assert_eq!(
        browser
            .script("return [document.documentElement.lang, document.querySelectorAll('img.logo').length, document.querySelectorAll('script, b, i').length]")
            .await,
        serde_json::json!([languages.split([',', '-']).next().unwrap(), 1, 0])
    );
    browser.screenshot(&format!("block-page-{name}")).await;
    let order = browser.tab_order(4).await;
    assert!(
        order[0].starts_with("A ") && order[0].contains(back),
        "{order:?}"
    );
    assert!(order[1].starts_with("TEXTAREA"), "{order:?}");
    assert!(order[2].starts_with("BUTTON"), "{order:?}");
    assert!(order[3].starts_with("SUMMARY"), "{order:?}");
    if let Some(violations) = browser.axe_violations().await {
        assert!(violations.is_empty(), "{name}: {violations:#?}");
    }
    browser.click("details summary").await;
    let unfolded = browser.wait_for_text(BLOCKED_RULE).await;
    assert!(unfolded.contains("gambling"), "{unfolded}");
    browser
        .screenshot(&format!("block-page-{name}-staff-details"))
        .await;
}

#[tokio::test]
async fn children_see_the_block_page_in_english_or_welsh_and_it_passes_axe() {
    bounded(async {
        let logo_dir = tempfile::tempdir().unwrap();
        let logo = logo_dir.path().join("logo.svg");
        std::fs::write(
            &logo,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"120\" height=\"60\"><rect width=\"120\" height=\"60\" rx=\"10\" fill=\"#1d3557\"/><text x=\"60\" y=\"38\" fill=\"#fff\" font-size=\"20\" text-anchor=\"middle\">YBT</text></svg>",
        )
        .unwrap();
        let setup = Setup::start_full(&[], &[], &block_page_section(&logo)).await;
        child_sees(&setup, "en-GB,en", "This page is blocked", "Go back", "en").await;
        child_sees(&setup, "cy,en;q=0.5", "Mae'r dudalen hon wedi'i rhwystro", "Mynd yn ôl", "cy").await;
        // A browser asking for neither gets the school's language.
        let page = setup
            .school_client(true)
            .get(setup.url("bet.test", "/"))
            .header("accept-language", "fr")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(page.contains("<html lang=\"cy\">"), "{page}");
    })
    .await;
}

fn spki_sha256(pem: &str) -> String {
    let der = pem_der(pem);
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version, serial,
    // signature, issuer, validity, subject, subjectPublicKeyInfo, ... }, ... }
    let (_, certificate) = der_item(&der);
    let (_, mut tbs) = der_item(certificate);
    if tbs[0] == 0xa0 {
        tbs = &tbs[der_item(tbs).0..];
    }
    for _ in 0..5 {
        tbs = &tbs[der_item(tbs).0..];
    }
    let spki = &tbs[..der_item(tbs).0];
    let provider = rustls::crypto::ring::default_provider();
    let hash = provider
        .cipher_suites
        .iter()
        .filter_map(|suite| suite.tls13())
        .map(|suite| suite.common.hash_provider)
        .find(|hash| hash.output_len() == 32)
        .unwrap();
    base64::engine::general_purpose::STANDARD.encode(hash.hash(spki).as_ref())
}

/// The whole length of the DER item at the start of `data`, and its contents.
fn der_item(data: &[u8]) -> (usize, &[u8]) {
    let first = usize::from(data[1]);
    let (header, length) = if first < 0x80 {
        (2, first)
    } else {
        let count = first & 0x7f;
        let length = data[2..2 + count]
            .iter()
            .fold(0usize, |acc, byte| (acc << 8) | usize::from(*byte));
        (2 + count, length)
    };
    (header + length, &data[header..header + length])
}
