//! Pages SafeGate answers with itself when it cannot or will not pass a request on:
//! bad requests, refused destinations and upstream failures. Every value that came
//! from the client or the network is HTML-escaped.

use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};

use crate::body::ResponseBody;
use crate::error::UpstreamError;

/// Header naming the failure kind, for tools and tests (`dns-failure`, `loop`, ...).
pub const REASON_HEADER: &str = "x-safegate-reason";

/// A page explaining why the request to `target` failed.
pub fn page(
    status: StatusCode,
    reason: &'static str,
    target: &str,
    explanation: &str,
) -> Response<ResponseBody> {
    let title = status.canonical_reason().unwrap_or("Error");
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{code} {title} - SafeGate</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em;color:#222}}\
code{{word-break:break-all;background:#f3f3f3;padding:.1em .3em}}</style></head>\n\
<body><h1>{title}</h1>\n<p>{explanation}</p>\n<p>Address: <code>{target}</code></p>\n\
<p><small>SafeGate web filter &middot; {code} &middot; {reason}</small></p></body></html>\n",
        code = status.as_u16(),
        title = html_escape::encode_text(title),
        explanation = html_escape::encode_text(explanation),
        target = html_escape::encode_text(target),
    );
    let mut response = Response::new(ResponseBody::full(html));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(REASON_HEADER, HeaderValue::from_static(reason));
    response
}

/// The page for an upstream failure: 504 for timeouts, 403/508 for refused
/// destinations, 502 otherwise.
pub fn upstream_failure(error: &UpstreamError, target: &str) -> Response<ResponseBody> {
    let status = match error {
        UpstreamError::ConnectTimeout { .. } | UpstreamError::ResponseTimeout { .. } => {
            StatusCode::GATEWAY_TIMEOUT
        }
        UpstreamError::Forbidden(crate::destination_guard::Refusal::OwnListener(_)) => {
            StatusCode::LOOP_DETECTED
        }
        UpstreamError::Forbidden(_) => StatusCode::FORBIDDEN,
        _ => StatusCode::BAD_GATEWAY,
    };
    let explanation = match error {
        UpstreamError::Dns { reason, .. } => {
            format!(
                "The site's name could not be looked up in DNS ({reason}). Check the address for typing mistakes."
            )
        }
        UpstreamError::Refused { .. } => {
            "The site's server refused the connection: it may be down.".to_owned()
        }
        UpstreamError::ConnectTimeout { .. } => {
            "The site's server did not answer in time: it may be down or unreachable.".to_owned()
        }
        UpstreamError::ResponseTimeout { seconds, .. } => {
            format!(
                "The site's server accepted the request but sent no answer within {seconds} seconds."
            )
        }
        UpstreamError::Forbidden(crate::destination_guard::Refusal::OwnListener(addr)) => {
            format!(
                "{addr} is SafeGate itself (its admin interface or another of its listeners), which cannot be opened through \
                 the proxy. Open http://{addr}/ directly: if this browser uses SafeGate's \
                 automatic configuration (proxy.pac), reload it or restart the browser (it \
                 sends SafeGate's own addresses direct); if the proxy is set by hand, add \
                 {ip} to the browser's list of addresses that bypass the proxy.",
                ip = addr.ip()
            )
        }
        UpstreamError::Forbidden(refusal) => format!("SafeGate does not connect there: {refusal}."),
        UpstreamError::Connect { reason, .. } => {
            format!("The site's server could not be reached: {reason}.")
        }
        UpstreamError::Protocol { reason, .. } => {
            format!("The connection to the site's server failed: {reason}.")
        }
    };
    page(status, error.kind(), target, &explanation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn client_supplied_text_is_escaped() {
        let response = page(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "http://x/<script>alert(1)</script>",
            "Bad \"request\" & more",
        );
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains("<script>"), "{text}");
        assert!(text.contains("&lt;script&gt;"));
        assert!(text.contains("Bad \"request\" &amp; more"));
    }
}
