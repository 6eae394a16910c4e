//! Classes of hostile input that SafeGate held when tried as an attacker would (issue
//! 17), pinned so that they stay held: request smuggling through conflicting body
//! lengths, obfuscated transfer codings, and host tricks that try to have one site
//! decided and another fetched. The classes that did not hold have their own tests
//! beside the code that fixed them (`limits`, `forward`, `admin_ui`, `cli`, ...).

use crate::kit::origin::Origin;
use crate::kit::process::SafeGate;
use crate::kit::{bounded, raw};

/// A body framed two ways (Content-Length and chunked) never lets a second request
/// hidden in it reach the origin.
#[tokio::test]
async fn conflicting_body_lengths_smuggle_nothing_to_the_origin() {
    bounded(async {
        let origin = Origin::start().await;
        let safegate = SafeGate::start(&[]).await;
        let url = origin.url("/echo");
        let host = origin.addr;
        let hidden = format!("GET /smuggled HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let attempts = [
            // CL.TE: the proxy reads chunked (ends at 0), a CL-reading origin would read on.
            format!(
                "POST {url} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{hidden}",
                5 + hidden.len()
            ),
            // TE.CL with an obfuscated coding.
            format!(
                "POST {url} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 4\r\nTransfer-Encoding: xchunked\r\n\r\n5c\r\n{hidden}\r\n0\r\n\r\n"
            ),
            // Two different lengths.
            format!(
                "POST {url} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{hidden}",
                hidden.len()
            ),
        ];
        for attempt in &attempts {
            let response = raw::exchange(safegate.proxy, attempt.as_bytes()).await;
            let status = raw::status_of(&response);
            assert!(status < 500, "{attempt:?} got {response}");
        }
        let seen = origin.requests();
        assert!(
            !seen.iter().any(|request| request.contains("/smuggled")),
            "a hidden request reached the origin: {seen:?}"
        );
    })
    .await;
}

/// Chunked bodies with oversized or malformed chunk sizes are refused, not passed on.
/// (Chunk extensions are dropped: SafeGate frames the body afresh for the origin.)
#[tokio::test]
async fn malformed_chunk_sizes_are_refused() {
    bounded(async {
        let origin = Origin::start().await;
        let safegate = SafeGate::start(&[]).await;
        let url = origin.url("/echo");
        let host = origin.addr;
        for body in [
            "fffffffffffffffffffff\r\nx\r\n0\r\n\r\n",
            "zz\r\nx\r\n0\r\n\r\n",
        ] {
            let request = format!(
                "POST {url} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{body}"
            );
            let response = raw::exchange(safegate.proxy, request.as_bytes()).await;
            let status = raw::status_of(&response);
            // Refused by SafeGate (4xx) or cut off (no answer): never a 2xx from the origin.
            assert!(
                !(200..300).contains(&status),
                "{body:?} got {response}"
            );
        }
    })
    .await;
}

/// The site decided is the site fetched: the request line's host wins over the Host
/// header, user info and spelling tricks do not hide a blocked site.
#[tokio::test]
async fn host_tricks_do_not_get_a_blocked_site_through() {
    bounded(async {
        let safegate = SafeGate::start(&[]).await;
        for (target, host) in [
            ("http://www.bet365.com/odds", "learning.example"),
            (
                "http://learning.example@www.bet365.com/odds",
                "www.bet365.com",
            ),
            ("http://WWW.BET365.COM./odds", "WWW.BET365.COM."),
            ("http://www.bet365.com:80/odds", "www.bet365.com:80"),
        ] {
            let request =
                format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            let response = raw::exchange(safegate.proxy, request.as_bytes()).await;
            let status = raw::status_of(&response);
            // Blocked (403), or refused as malformed (400): never fetched.
            assert!(matches!(status, 400 | 403), "{target} / {host}: {response}");
        }
        // CONNECT to a blocked site with an allowed Host header is refused too.
        let response = raw::exchange(
            safegate.proxy,
            b"CONNECT www.bet365.com:443 HTTP/1.1\r\nHost: learning.example:443\r\n\r\n",
        )
        .await;
        assert_eq!(raw::status_of(&response), 403, "{response}");
        // The reason in plain words, in a header (what `curl -v` shows of a refused CONNECT).
        assert!(
            response.contains("x-safegate-why: Blocked by SafeGate: "),
            "{response}"
        );
    })
    .await;
}
