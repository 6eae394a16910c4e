//! What SafeGate serves when a request is addressed to the proxy itself (origin-form):
//! a small status page at `/`, and the proxy auto-configuration file at `/proxy.pac`
//! and `/wpad.dat` (the name browsers ask for with WPAD), built from `[pac]`; and the
//! answer to the block page's review form ([`review`]), which is also served inside
//! decrypted tunnels.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Method, Response, StatusCode};
use tracing::{debug, info, warn};

use crate::auth::TokenPurpose;
use crate::body::ResponseBody;
use crate::config::PacConfig;
use crate::error_page;
use crate::review_limit::{ReviewLimiter, ReviewRefused};

/// Figures shown on the status page.
#[derive(Debug, Clone, Copy)]
pub struct StatusFigures {
    /// Time since start.
    pub uptime: Duration,
    /// Open client connections.
    pub connections: usize,
    /// Open CONNECT tunnels and WebSocket relays.
    pub tunnels: usize,
    /// Requests handled since start.
    pub requests: u64,
}

/// Answers a request for one of the proxy's own pages.
pub fn serve(
    method: &Method,
    path: &str,
    host_header: Option<&str>,
    pac: &PacConfig,
    listen: SocketAddr,
    figures: StatusFigures,
) -> Response<ResponseBody> {
    if method != Method::GET && method != Method::HEAD {
        return error_page::page(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            path,
            "SafeGate's own pages only answer GET and HEAD.",
        );
    }
    match path {
        "/proxy.pac" | "/wpad.dat" => {
            let script = pac_script(pac, &proxy_address(pac, host_header, listen));
            own_response(script, "application/x-ns-proxy-autoconfig", "max-age=300")
        }
        "/" => own_response(status_page(figures), HTML, "no-store"),
        _ => error_page::page(
            StatusCode::NOT_FOUND,
            "not-found",
            path,
            "This is SafeGate, the school's web filter. Set it as your browser's proxy, \
             or use the automatic configuration at /proxy.pac.",
        ),
    }
}

/// The `host:port` browsers should use: `pac.proxy` if set, else the listener's own
/// address, else (listener on a wildcard address) the host the browser asked for.
fn proxy_address(pac: &PacConfig, host_header: Option<&str>, listen: SocketAddr) -> String {
    if !pac.proxy.is_empty() {
        return pac.proxy.clone();
    }
    if !listen.ip().is_unspecified() {
        return listen.to_string();
    }
    let asked_host = host_header
        .map(|host| match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        })
        .filter(|host| {
            !host.is_empty()
                && host.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':')
                })
        });
    match asked_host {
        Some(host) => format!("{host}:{}", listen.port()),
        None => listen.to_string(),
    }
}

/// The PAC script. Domains and networks were validated at start-up, and the proxy
/// address is either configuration or filtered to host-name characters.
pub fn pac_script(pac: &PacConfig, proxy: &str) -> String {
    let mut script = String::from(
        "// SafeGate proxy auto-configuration, generated from safegate.toml [pac].\n\
         function FindProxyForURL(url, host) {\n\
         \x20 if (isPlainHostName(host) || host == \"localhost\") return \"DIRECT\";\n",
    );
    for url in own_listener_urls(&pac.direct_listeners, proxy) {
        // SafeGate refuses to forward to itself: its admin interface is reached directly.
        let _ = writeln!(
            script,
            "  if (shExpMatch(url, \"{url}*\")) return \"DIRECT\";"
        );
    }
    for domain in &pac.direct_domains {
        let domain = domain.trim_start_matches('.').to_ascii_lowercase();
        let _ = writeln!(
            script,
            "  if (host == \"{domain}\" || dnsDomainIs(host, \".{domain}\")) return \"DIRECT\";"
        );
    }
    let v4_networks: Vec<_> = pac
        .direct_networks
        .iter()
        .filter_map(|net| match (net.network(), net.netmask()) {
            (IpAddr::V4(network), IpAddr::V4(mask)) => Some((network, mask)),
            _ => None,
        })
        .collect();
    if !v4_networks.is_empty() {
        script.push_str("  if (/^[0-9.]+$/.test(host)) {\n");
        for (network, mask) in v4_networks {
            let _ = writeln!(
                script,
                "    if (isInNet(host, \"{network}\", \"{mask}\")) return \"DIRECT\";"
            );
        }
        script.push_str("  }\n");
    }
    let _ = writeln!(script, "  return \"PROXY {proxy}\";\n}}");
    script
}

/// `http://host:port/` of each of SafeGate's other listeners, as browsers address
/// them: a listener on every address (`0.0.0.0`, `::`) is named by the host the
/// browser used for the proxy (`proxy` is `host:port`).
fn own_listener_urls(listeners: &[SocketAddr], proxy: &str) -> Vec<String> {
    let proxy_host = proxy.rsplit_once(':').map_or(proxy, |(host, _)| host);
    listeners
        .iter()
        .map(|listener| {
            let host = match listener.ip() {
                ip if ip.is_unspecified() => proxy_host.to_owned(),
                IpAddr::V6(ip) => format!("[{ip}]"),
                IpAddr::V4(ip) => ip.to_string(),
            };
            format!("http://{host}:{}/", listener.port())
        })
        .collect()
}

fn status_page(figures: StatusFigures) -> String {
    let uptime = figures.uptime.as_secs();
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>SafeGate</title><style>body{{font-family:system-ui,sans-serif;max-width:40em;\
margin:3em auto;padding:0 1em;color:#222}}td{{padding:.2em 1em .2em 0}}</style></head>\n\
<body><h1>SafeGate is running</h1>\n<p>This is the school's web filter. Browsers use it \
as their proxy; the automatic configuration is at <a href=\"/proxy.pac\">/proxy.pac</a>.</p>\n\
<table><tr><td>Version</td><td>{version}</td></tr>\
<tr><td>Up for</td><td>{days}d {hours}h {minutes}m</td></tr>\
<tr><td>Open connections</td><td>{connections}</td></tr>\
<tr><td>Open tunnels</td><td>{tunnels}</td></tr>\
<tr><td>Requests served</td><td>{requests}</td></tr></table></body></html>\n",
        version = env!("CARGO_PKG_VERSION"),
        days = uptime / 86_400,
        hours = uptime % 86_400 / 3600,
        minutes = uptime % 3600 / 60,
        connections = figures.connections,
        tunnels = figures.tunnels,
        requests = figures.requests,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen(text: &str) -> SocketAddr {
        text.parse().unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn pac_sends_the_admin_interface_direct() {
        let pac = PacConfig {
            direct_listeners: vec![listen("10.1.1.1:9128"), listen("0.0.0.0:9129")],
            ..PacConfig::default()
        };
        let script = pac_script(&pac, "safegate.school.lan:3128");
        assert!(script.contains("shExpMatch(url, \"http://10.1.1.1:9128/*\")) return \"DIRECT\""));
        // On every address: the name the browser used for the proxy, with the admin port.
        assert!(
            script.contains(
                "shExpMatch(url, \"http://safegate.school.lan:9129/*\")) return \"DIRECT\""
            )
        );
        let v6 = PacConfig {
            direct_listeners: vec![listen("[fd00::1]:9128")],
            ..PacConfig::default()
        };
        assert!(pac_script(&v6, "[fd00::1]:3128").contains("\"http://[fd00::1]:9128/*\""));
    }

    #[test]
    fn pac_sends_everything_else_through_the_proxy() {
        let pac = PacConfig {
            proxy: String::new(),
            direct_domains: vec!["school.lan".into(), ".intranet.example".into()],
            direct_networks: vec!["10.0.0.0/8".parse().unwrap_or_else(|_| unreachable!())],
            direct_listeners: Vec::new(),
        };
        let script = pac_script(&pac, &proxy_address(&pac, None, listen("10.1.1.1:3128")));
        assert!(script.contains("dnsDomainIs(host, \".school.lan\")"));
        assert!(script.contains("dnsDomainIs(host, \".intranet.example\")"));
        assert!(script.contains("isInNet(host, \"10.0.0.0\", \"255.0.0.0\")"));
        assert!(
            script
                .trim_end()
                .ends_with("return \"PROXY 10.1.1.1:3128\";\n}")
        );
    }

    #[test]
    fn wildcard_listener_uses_the_asked_host_but_only_safe_characters() {
        let pac = PacConfig::default();
        let wildcard = listen("0.0.0.0:3128");
        assert_eq!(
            proxy_address(&pac, Some("wpad.school.lan"), wildcard),
            "wpad.school.lan:3128"
        );
        assert_eq!(
            proxy_address(&pac, Some("10.0.0.5:80"), wildcard),
            "10.0.0.5:3128"
        );
        assert_eq!(
            proxy_address(&pac, Some("x\";alert(1)//"), wildcard),
            "0.0.0.0:3128"
        );
    }
}

/// Path the block page's review form posts to: on the proxy's own address for
/// plain-HTTP block pages, on the blocked site's own origin inside a decrypted tunnel
/// (see `crate::block_page::ReviewTarget`).
pub const REVIEW_PATH: &str = "/safegate/review";

/// Largest review form accepted, in bytes.
const REVIEW_FORM_LIMIT: usize = 8 * 1024;

/// Longest comment kept, in characters.
const REVIEW_COMMENT_LIMIT: usize = 500;

/// Who asks for the review, as identified by the proxy.
#[derive(Debug, Clone)]
pub struct Requester {
    /// Client address.
    pub client: IpAddr,
    /// User name, when identified.
    pub user: Option<String>,
    /// Browsing role.
    pub role: String,
    /// The school-wide language of the block page (the policy's
    /// `block_page.language`), used when the browser asks for none SafeGate has.
    pub school_language: String,
}

/// The fields of the block page's review form.
#[derive(Debug, Default)]
struct ReviewForm {
    token: String,
    url: Option<String>,
    rule: String,
    categories: Vec<String>,
    comment: String,
}

impl ReviewForm {
    fn parse(form: &[u8]) -> Self {
        let mut fields = Self::default();
        for (key, value) in form_urlencoded::parse(form) {
            match key.as_ref() {
                "token" => fields.token = value.into_owned(),
                "url" => fields.url = Some(value.into_owned()),
                "rule" => fields.rule = value.into_owned(),
                "categories" => {
                    fields.categories = value
                        .split(',')
                        .map(str::trim)
                        .filter(|c| !c.is_empty() && *c != "none")
                        .map(str::to_owned)
                        .collect();
                }
                "comment" => fields.comment = value.chars().take(REVIEW_COMMENT_LIMIT).collect(),
                _ => {}
            }
        }
        fields
    }
}

/// The 429 for a review beyond `proxy.reviews_per_*_per_hour`, in plain words.
fn too_many_reviews(refused: ReviewRefused, client: IpAddr, url: &str) -> Response<ResponseBody> {
    let (retry_after, explanation, key) = match refused {
        ReviewRefused::Token { retry_after } => (
            retry_after,
            "You have already asked for a review of this page. The filter admin will look at \
             your request; there is no need to ask again.",
            "proxy.reviews_per_token_per_hour",
        ),
        ReviewRefused::Address { retry_after } => (
            retry_after,
            "You have already asked for many reviews from this computer in the last hour. \
             The filter admin will look at them; please try again later.",
            "proxy.reviews_per_address_per_hour",
        ),
    };
    debug!(%client, limit = key, "review request refused: too many; answered 429");
    let mut response = error_page::page(
        StatusCode::TOO_MANY_REQUESTS,
        "review-limit",
        url,
        explanation,
    );
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(retry_after.as_secs().max(1)));
    response
}

/// Records a review request from the block page's form and thanks the person. The
/// answer has no links, so it works alike over plain HTTP and inside a decrypted
/// tunnel. A form that is too large, incomplete or names no address gets a 4xx and a
/// log line; one that does not arrive within `body_read_timeout` gets a 408 and the
/// connection is closed; one beyond `limits` (per form token and per client address
/// an hour) gets a 429 and is not stored.
pub async fn review(
    queue: Option<&safegate_store::ReviewQueue>,
    tokens: &crate::auth::Authenticator,
    limits: &ReviewLimiter,
    requester: Requester,
    request: http::Request<hyper::body::Incoming>,
    body_read_timeout: std::time::Duration,
) -> Response<ResponseBody> {
    use crate::form_body::{self, FormBodyError};
    let words = crate::block_page::words::choose(
        request
            .headers()
            .get(http::header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
        &requester.school_language,
    );
    let Some(queue) = queue else {
        return error_page::page(
            StatusCode::NOT_FOUND,
            "not-found",
            REVIEW_PATH,
            "Review requests are not enabled on this SafeGate.",
        );
    };
    let read = form_body::read(request.into_body(), REVIEW_FORM_LIMIT, body_read_timeout).await;
    let form = match read {
        Ok(form) => form,
        Err(FormBodyError::TimedOut) => return form_body::timed_out(requester.client, REVIEW_PATH),
        Err(FormBodyError::TooLargeOrIncomplete) => {
            info!(
                client = %requester.client,
                limit = REVIEW_FORM_LIMIT,
                "review form too large or incomplete; answered 413"
            );
            return error_page::page(
                StatusCode::PAYLOAD_TOO_LARGE,
                "bad-request",
                REVIEW_PATH,
                "The review form was too large or did not arrive completely.",
            );
        }
    };
    let ReviewForm {
        token,
        url,
        rule,
        categories,
        comment,
    } = ReviewForm::parse(&form);
    if !tokens.check_form_token(TokenPurpose::Review, requester.client, &token) {
        info!(
            client = %requester.client,
            "review form without a valid token (expired, from another address or not from a block page); answered 403"
        );
        return error_page::page(
            StatusCode::FORBIDDEN,
            "bad-review-token",
            REVIEW_PATH,
            "This review form has expired or did not come from SafeGate's block page. Go back, reload the blocked page and ask again.",
        );
    }
    let Some(url) = url.filter(|u| !u.is_empty() && u.len() <= 4096) else {
        info!(
            client = %requester.client,
            "review form without a valid url field; answered 400"
        );
        return error_page::page(
            StatusCode::BAD_REQUEST,
            "bad-request",
            REVIEW_PATH,
            "The review form did not say which address was blocked.",
        );
    };
    if let Err(refused) = limits.admit(&token, requester.client, std::time::Instant::now()) {
        return too_many_reviews(refused, requester.client, &url);
    }
    let at_unix_nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let accepted = queue.submit(safegate_store::ReviewRequest {
        at_unix_nanos,
        client: requester.client,
        user: requester.user,
        role: requester.role,
        url: url.clone(),
        rule,
        categories,
        comment,
    });
    if !accepted {
        warn!(url, "review queue full; answered 503");
        return error_page::page(
            StatusCode::SERVICE_UNAVAILABLE,
            "review-queue-full",
            &url,
            "SafeGate is busy and could not take your request; please try again in a minute.",
        );
    }
    own_response(review_thanks(words, &url), HTML, "no-store")
}

/// The page after a review request, in the block page's language and look: what
/// happens next. No links, so it works over plain HTTP and inside a tunnel alike.
fn review_thanks(words: &crate::block_page::words::Words, url: &str) -> String {
    let escape = |text: &str| html_escape::encode_double_quoted_attribute(text).into_owned();
    format!(
        "<!doctype html>\n<html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} - SafeGate</title><style>{style}</style></head>\n\
<body><header><strong>SafeGate</strong></header>\n<main class=\"child\"><h1>{title}</h1>\
<p>{thanks}</p><p><code>{url}</code></p></main></body></html>\n",
        lang = escape(&words.lang),
        title = escape(&words.review_thanks_title),
        style = crate::page_style::STYLE,
        thanks = escape(&words.review_thanks),
        url = escape(url),
    )
}

const HTML: &str = "text/html; charset=utf-8";

/// A 200 response with SafeGate's own content.
fn own_response(
    body: String,
    content_type: &'static str,
    cache_control: &'static str,
) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache_control));
    response
}
