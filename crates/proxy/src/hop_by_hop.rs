//! Hop-by-hop header handling (RFC 9110 §7.6.1) and the `Via` header (§7.6.3).
//!
//! A proxy must not forward the headers that describe one connection: `Connection`
//! and every header it names, plus the fixed set below. The only exception is an
//! HTTP/1.1 `Upgrade` (WebSocket), which the proxy relays on purpose and re-announces
//! with its own `Connection: upgrade`.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that are hop-by-hop whether or not `Connection` names them.
const FIXED_HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

/// Whether the message asks to switch protocols (`Connection: upgrade` plus `Upgrade`).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && connection_tokens(headers).any(|token| token.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|token| !token.is_empty())
}

/// Removes every hop-by-hop header. With `keep_upgrade`, the `Upgrade` header stays
/// and `Connection: upgrade` is set again so the next hop sees the upgrade request.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the names present (a handful) instead of a hashed removal of
    // every fixed name: most messages carry only `Connection`, if any.
    let mut doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            FIXED_HOP_BY_HOP.contains(name) || (!keep_upgrade && *name == header::UPGRADE)
        })
        .cloned()
        .collect();
    if headers.contains_key(header::CONNECTION) {
        doomed.extend(
            connection_tokens(headers)
                .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
                .filter(|name| !(keep_upgrade && name == header::UPGRADE)),
        );
    }
    for name in doomed {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Appends this proxy's entry to `Via`, e.g. `1.1 safegate`.
pub fn append_via(headers: &mut HeaderMap, via: &HeaderValue) {
    headers.append(header::VIA, via.clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap_or_else(|_| unreachable!()),
                HeaderValue::from_str(value).unwrap_or_else(|_| unreachable!()),
            );
        }
        map
    }

    #[test]
    fn removes_fixed_and_connection_named_headers() {
        let mut map = headers(&[
            ("connection", "keep-alive, X-Secret-Hop"),
            ("connection", "close"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("te", "trailers"),
            ("trailer", "expires"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("accept", "text/html"),
        ]);
        strip_hop_by_hop(&mut map, false);
        let left: Vec<_> = map.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["accept"]);
    }

    #[test]
    fn upgrade_survives_when_asked() {
        let mut map = headers(&[
            ("connection", "Upgrade, keep-alive"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]);
        assert!(wants_upgrade(&map));
        strip_hop_by_hop(&mut map, true);
        assert_eq!(
            map.get("upgrade").map(HeaderValue::as_bytes),
            Some(&b"websocket"[..])
        );
        assert_eq!(
            map.get("connection").map(HeaderValue::as_bytes),
            Some(&b"upgrade"[..])
        );
        assert!(map.contains_key("sec-websocket-key"));
    }

    #[test]
    fn upgrade_without_connection_token_is_not_an_upgrade() {
        let map = headers(&[("upgrade", "websocket")]);
        assert!(!wants_upgrade(&map));
    }

    #[test]
    fn via_is_appended_after_earlier_hops() {
        let mut map = headers(&[("via", "1.0 upstream-cache")]);
        append_via(&mut map, &HeaderValue::from_static("1.1 safegate"));
        let vias: Vec<_> = map
            .get_all("via")
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        assert_eq!(vias, [&b"1.0 upstream-cache"[..], b"1.1 safegate"]);
    }
}
