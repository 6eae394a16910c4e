//! Criterion micro-benchmarks of the functions SafeGate runs on every proxied request
//! or tunnel: hop-by-hop header stripping and `Via` (twice per request: once on the
//! request, once on the response), the destination guard (every upstream connect),
//! and the error pages and PAC script (every refusal / every browser start-up), and
//! proxy authentication (every request when log-ins are required): a credential-cache
//! hit against a table of 10,000 users, next to a request without credentials.
//!
//! Run with `cargo bench -p safegate-benches`; filter with
//! `cargo bench -p safegate-benches -- hop_by_hop`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::StatusCode;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use safegate_proxy::PacConfig;
use safegate_proxy::destination_guard::DestinationGuard;
use safegate_proxy::error::UpstreamError;
use safegate_proxy::hop_by_hop::{append_via, strip_hop_by_hop, wants_upgrade};
use safegate_proxy::{error_page, local_pages};

fn header_map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

/// What Chromium sends for a top-level navigation through an explicit proxy.
fn browser_request_headers() -> HeaderMap {
    header_map(&[
        ("host", "www.bbc.co.uk"),
        ("proxy-connection", "keep-alive"),
        ("upgrade-insecure-requests", "1"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8",
        ),
        ("accept-encoding", "gzip, deflate"),
        ("accept-language", "en-GB,en;q=0.9"),
        (
            "cookie",
            "ckns_policy=111; ckns_explicit=1; atuserid=%7B%22name%22%3A%22atuserid%22%7D; _cb=D8lYxqBq",
        ),
    ])
}

/// A typical origin response head, with a `Connection` header naming another header.
fn origin_response_headers() -> HeaderMap {
    header_map(&[
        ("date", "Sun, 01 Nov 2026 10:00:00 GMT"),
        ("content-type", "text/html; charset=utf-8"),
        ("content-length", "48213"),
        ("connection", "keep-alive, x-backend-hop"),
        ("keep-alive", "timeout=5, max=100"),
        ("x-backend-hop", "cache-17"),
        ("cache-control", "private, max-age=0, must-revalidate"),
        ("vary", "Accept-Encoding, X-Country"),
        ("etag", "W/\"bc4d-18c2a3f1\""),
        ("strict-transport-security", "max-age=31536000"),
        ("x-frame-options", "SAMEORIGIN"),
    ])
}

fn websocket_request_headers() -> HeaderMap {
    header_map(&[
        ("host", "chat.example.org"),
        ("connection", "Upgrade, keep-alive"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("origin", "http://chat.example.org"),
    ])
}

fn hop_by_hop(c: &mut Criterion) {
    let via = HeaderValue::from_static("1.1 safegate");
    let mut group = c.benchmark_group("hop_by_hop");
    // The per-message work `service::forward` does: upgrade check, strip, Via.
    for (name, headers) in [
        ("browser_request", browser_request_headers()),
        ("origin_response", origin_response_headers()),
        ("websocket_request", websocket_request_headers()),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || headers.clone(),
                |headers| {
                    let upgrade = wants_upgrade(headers);
                    strip_hop_by_hop(headers, upgrade);
                    append_via(headers, &via);
                },
                BatchSize::SmallInput,
            );
        });
    }
    let browser = browser_request_headers();
    group.bench_function("wants_upgrade/browser_request", |b| {
        b.iter(|| wants_upgrade(black_box(&browser)));
    });
    group.finish();
}

fn destination_guard(c: &mut Criterion) {
    let deny: Vec<IpNet> = ["10.0.99.0/24", "192.168.50.0/24", "fd00:99::/64"]
        .iter()
        .map(|net| net.parse().unwrap())
        .collect();
    let own: Vec<SocketAddr> = vec![
        "0.0.0.0:3128".parse().unwrap(),
        "127.0.0.1:9128".parse().unwrap(),
    ];
    let guard = DestinationGuard::new(false, deny, own);
    let mut group = c.benchmark_group("destination_guard");
    let cases: [(&str, SocketAddr); 4] = [
        ("public_v4_allowed", "93.184.215.14:443".parse().unwrap()),
        (
            "public_v6_allowed",
            "[2a00:1450:4009::200e]:443".parse().unwrap(),
        ),
        ("denied_network", "10.0.99.7:80".parse().unwrap()),
        ("loopback_refused", "127.0.0.1:8080".parse().unwrap()),
    ];
    for (name, addr) in cases {
        group.bench_function(name, |b| b.iter(|| guard.check(black_box(addr))));
    }
    group.finish();
}

fn pages(c: &mut Criterion) {
    let mut group = c.benchmark_group("pages");
    group.bench_function("error_page/bad_gateway", |b| {
        b.iter(|| {
            error_page::page(
                StatusCode::BAD_GATEWAY,
                "upstream-protocol",
                black_box("http://www.example.org/search?q=<b>homework</b>&page=2"),
                black_box("The connection to the site's server failed: connection reset."),
            )
        });
    });
    let dns = UpstreamError::Dns {
        host: "no-such-host.example".to_owned(),
        reason: "no record found for Query { name: Name(\"no-such-host.example.\") }".to_owned(),
    };
    group.bench_function("error_page/upstream_failure_dns", |b| {
        b.iter(|| error_page::upstream_failure(black_box(&dns), "http://no-such-host.example/"));
    });
    let pac = PacConfig {
        proxy: String::new(),
        direct_domains: vec![
            "school.lan".to_owned(),
            "intranet.example.sch.uk".to_owned(),
            ".moodle.example.sch.uk".to_owned(),
        ],
        direct_networks: vec![
            "10.0.0.0/8".parse().unwrap(),
            "192.168.0.0/16".parse().unwrap(),
        ],
        direct_listeners: vec!["10.1.1.1:9128".parse().unwrap()],
    };
    group.bench_function("pac_script", |b| {
        b.iter(|| local_pages::pac_script(black_box(&pac), "10.1.1.1:3128"));
    });
    group.finish();
}

/// Proxy authentication as every request of a logged-in browser pays it: the header's
/// token hashed, one cache shard read-locked, the user looked up in a 10,000-user
/// table, the identity built. The first request (Argon2, 20-50 ms) is made before
/// measuring; `no_credentials` is the floor (no header at all).
fn auth(c: &mut Criterion) {
    use std::sync::Arc;

    use safegate_proxy::auth::{AuthConfig, Authenticator, Check, UserEntry, UserTable};

    let hash: Arc<str> =
        Arc::from(safegate_store::password::hash_password("correct horse battery").unwrap());
    let users = (0..10_000).map(|i| UserEntry {
        name: Arc::from(if i == 0 {
            "bench".to_owned()
        } else {
            format!("user{i}")
        }),
        role: "pupil".parse().unwrap(),
        group: Some("year6".to_owned()),
        password_hash: Arc::clone(&hash),
        disabled: false,
        generation: i,
    });
    let auth = Authenticator::new(
        &AuthConfig {
            required: true,
            ..AuthConfig::default()
        },
        Arc::default(),
    )
    .unwrap();
    auth.replace_users(UserTable::new(users));
    let peer: std::net::IpAddr = "10.20.6.7".parse().unwrap();
    // "bench:correct horse battery"
    let header = HeaderValue::from_static("Basic YmVuY2g6Y29ycmVjdCBob3JzZSBiYXR0ZXJ5");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let Check::Verify(verification) = auth.check(peer, Some(&header)) else {
        panic!("the first request must be verified");
    };
    runtime
        .block_on(auth.verify(
            verification,
            &safegate_proxy::auth::ConnectionLogIn::default(),
        ))
        .unwrap();

    let mut group = c.benchmark_group("auth");
    group.bench_function("cache_hit", |b| {
        b.iter(
            || match auth.check(black_box(peer), Some(black_box(&header))) {
                Check::Known(identity) => identity,
                other => panic!("not a cache hit: {other:?}"),
            },
        );
    });
    group.bench_function("no_credentials", |b| {
        b.iter(|| matches!(auth.check(black_box(peer), None), Check::Anonymous));
    });
    group.finish();
}

criterion_group!(benches, hop_by_hop, destination_guard, pages, auth);
criterion_main!(benches);
