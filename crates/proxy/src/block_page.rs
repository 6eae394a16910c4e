//! The page a person sees when SafeGate blocks a plain-HTTP request or a request inside
//! a decrypted tunnel: what was blocked, why (category, rule, reason), when and for
//! whom, and a form to ask for a review. Everything shown came from the request or the
//! policy and is HTML-escaped. The form posts where the proxy answers it itself
//! ([`ReviewTarget`]): for plain HTTP the proxy's own address, inside a decrypted
//! tunnel the blocked page's own HTTPS origin (a secure page posting to `http://` is
//! mixed content, which browsers warn about or refuse).
//!
//! A refused CONNECT cannot show a page (browsers do not display a proxy's answer to
//! CONNECT), so it gets a short text body and the same headers; with the school CA
//! the page is shown over TLS instead (`tls::block_pages`), except for never-decrypt
//! sites. Inside a decrypted
//! tunnel the real page is shown over HTTPS, and a site whose certificate fails
//! verification gets [`certificate_refused`] instead of its content.

use std::net::SocketAddr;

use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use jiff::Timestamp;
use safegate_policy::{Decision, Snapshot};

use crate::auth::Identity;
use crate::body::ResponseBody;
use crate::error_page::REASON_HEADER;
use crate::local_pages::REVIEW_PATH;

/// Header carrying the id of the rule that blocked a request.
pub const RULE_HEADER: &str = "x-safegate-rule";

/// What the block page shows.
#[derive(Debug, Clone)]
pub struct BlockInfo<'a> {
    /// The blocked address as requested.
    pub url: &'a str,
    /// Categories the address is in.
    pub categories: &'a [String],
    /// Stable id of the rule that decided.
    pub rule: &'a str,
    /// One line for people.
    pub reason: &'a str,
    /// Local time of the decision, already formatted.
    pub at: &'a str,
    /// The person, when identified.
    pub user: Option<&'a str>,
    /// The role the decision was made for.
    pub role: &'a str,
    /// The group, if any.
    pub group: Option<&'a str>,
    /// Where the review form posts to ([`ReviewTarget::action`]); no form if None.
    pub review_action: Option<&'a str>,
    /// The review form's token (purpose `Review`, bound to the client's address).
    pub review_token: Option<&'a str>,
    /// The school's name (the policy's `school`), shown in the title and footer.
    pub school: Option<&'a str>,
}

impl<'a> BlockInfo<'a> {
    /// What the page shows for `decision`, made for `identity`, of the address `url`
    /// as requested, at the local time `at` ([`local_time`]).
    pub fn of(
        decision: &'a Decision,
        identity: &'a Identity,
        url: &'a str,
        at: &'a str,
        review_action: Option<&'a str>,
        review_token: Option<&'a str>,
    ) -> Self {
        Self {
            url,
            categories: &decision.categories,
            rule: &decision.rule,
            reason: &decision.reason,
            at,
            user: identity.user.as_deref(),
            role: identity.role.as_str(),
            group: identity.group.as_deref(),
            review_action,
            review_token,
            school: None,
        }
    }

    /// The same, naming the school.
    pub fn at_school(self, school: Option<&'a str>) -> Self {
        Self { school, ..self }
    }
}

/// The decision time in the school's time zone, as the block page shows it.
pub fn local_time(snapshot: &Snapshot, now: Timestamp) -> String {
    now.to_zoned_datetime(snapshot.timezone().clone())
        .strftime("%a %-d %b %Y, %H:%M %Z")
        .to_string()
}

/// Where the block page's review form posts to; SafeGate answers both itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewTarget {
    /// The proxy listener the client reached, over plain HTTP
    /// (`http://ADDRESS/safegate/review`): for a page shown instead of a plain-HTTP
    /// request.
    Proxy(SocketAddr),
    /// The blocked page's own origin (the relative `/safegate/review`, so
    /// `https://HOST[:PORT]/safegate/review`): for a page shown inside a decrypted
    /// tunnel, where SafeGate answers a `POST` to that path instead of the origin.
    SameOrigin,
}

impl ReviewTarget {
    /// The form's `action` attribute, before escaping.
    pub fn action(self) -> String {
        match self {
            Self::Proxy(address) => format!("http://{address}{REVIEW_PATH}"),
            Self::SameOrigin => REVIEW_PATH.to_owned(),
        }
    }
}

fn escape(text: &str) -> String {
    html_escape::encode_double_quoted_attribute(text).into_owned()
}

/// The 403 page for a blocked plain-HTTP or decrypted request.
pub fn page(info: &BlockInfo<'_>) -> Response<ResponseBody> {
    let categories = if info.categories.is_empty() {
        "none".to_owned()
    } else {
        info.categories.join(", ")
    };
    let who = match (info.user, info.group) {
        (Some(user), _) => format!("{user} ({})", info.role),
        (None, Some(group)) => format!("{} / {group}", info.role),
        (None, None) => info.role.to_owned(),
    };
    let form = info.review_action.map_or_else(String::new, |action| {
        format!(
            "<h2>Think this is wrong?</h2>\n\
<form method=\"post\" action=\"{action}\">\
<input type=\"hidden\" name=\"url\" value=\"{url}\">\
<input type=\"hidden\" name=\"rule\" value=\"{rule}\">\
<input type=\"hidden\" name=\"categories\" value=\"{categories}\">\
<input type=\"hidden\" name=\"token\" value=\"{token}\">\
<label for=\"comment\">Tell the filter admin why you need this page:</label><br>\
<textarea id=\"comment\" name=\"comment\" rows=\"3\" cols=\"60\" maxlength=\"500\"></textarea><br>\
<button type=\"submit\">Request a review</button></form>\n",
            action = escape(action),
            url = escape(info.url),
            rule = escape(info.rule),
            categories = escape(&categories),
            token = escape(info.review_token.unwrap_or_default()),
        )
    });
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>Blocked - {title}</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:44em;margin:3em auto;padding:0 1em;color:#222}}\
code{{word-break:break-all;background:#f3f3f3;padding:.1em .3em}}dt{{font-weight:bold}}</style></head>\n\
<body><h1>This page is blocked</h1>\n<p>{reason}</p>\n<dl>\
<dt>Address</dt><dd><code>{url}</code></dd>\
<dt>Category</dt><dd>{categories}</dd>\
<dt>Reference for the filter admin</dt><dd><code>{rule}</code></dd>\
<dt>Time</dt><dd>{at}</dd>\
<dt>Browsing as</dt><dd>{who}</dd></dl>\n{form}\
<p><small>{footer}</small></p></body></html>\n",
        title = escape(info.school.unwrap_or("SafeGate")),
        footer = escape(&info.school.map_or_else(
            || "SafeGate, the school's web filter.".to_owned(),
            |school| format!("SafeGate, {school}'s web filter."),
        )),
        reason = escape(info.reason),
        url = escape(info.url),
        categories = escape(&categories),
        rule = escape(info.rule),
        at = escape(info.at),
        who = escape(&who),
    );
    let mut response = Response::new(ResponseBody::full(html));
    *response.status_mut() = StatusCode::FORBIDDEN;
    decorate(&mut response, info.rule, "text/html; charset=utf-8");
    response
}

/// The 403 answer to a blocked CONNECT.
pub fn connect_refusal(info: &BlockInfo<'_>) -> Response<ResponseBody> {
    let text = format!(
        "Blocked by SafeGate: {} ({}; rule {})\n",
        info.reason,
        if info.categories.is_empty() {
            "no category".to_owned()
        } else {
            info.categories.join(", ")
        },
        info.rule
    );
    // Browsers and curl do not show a refused CONNECT's body; `curl -v` shows headers.
    let why: String = text
        .trim_end()
        .chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .take(300)
        .collect();
    let mut response = Response::new(ResponseBody::full(text));
    *response.status_mut() = StatusCode::FORBIDDEN;
    decorate(&mut response, info.rule, "text/plain; charset=utf-8");
    if let Ok(value) = HeaderValue::from_str(&why) {
        response.headers_mut().insert(WHY_HEADER, value);
    }
    response
}

/// The plain-words reason of a refused CONNECT, for `curl -v` and browser tools.
const WHY_HEADER: http::HeaderName = http::HeaderName::from_static("x-safegate-why");

/// The 502 page for a decrypted request whose origin presented a certificate that
/// failed verification (`problem` says how), so the person is not silently sent to a
/// site that may be an impostor.
pub fn certificate_refused(host: &str, target: &str, problem: &str) -> Response<ResponseBody> {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>Certificate not valid - SafeGate</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:44em;margin:3em auto;padding:0 1em;color:#222}}\
code{{word-break:break-all;background:#f3f3f3;padding:.1em .3em}}</style></head>\n\
<body><h1>This site's security certificate is not valid</h1>\n\
<p>SafeGate could not confirm that <code>{host}</code> is the real site: {problem}. \
It did not open the page, because it may not be the site it claims to be.</p>\n\
<p>Address: <code>{target}</code></p>\n\
<p>If this is a site you need, tell the school's IT technician.</p>\n\
<p><small>SafeGate, the school's web filter.</small></p></body></html>\n",
        host = escape(host),
        problem = escape(problem),
        target = escape(target),
    );
    let mut response = Response::new(ResponseBody::full(html));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        REASON_HEADER,
        HeaderValue::from_static("upstream-certificate"),
    );
    response
}

fn decorate(response: &mut Response<ResponseBody>, rule: &str, content_type: &'static str) {
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(REASON_HEADER, HeaderValue::from_static("blocked"));
    if let Ok(rule) = HeaderValue::from_str(rule) {
        headers.insert(RULE_HEADER, rule);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn proxy() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 3128))
    }

    async fn html_of(response: Response<ResponseBody>) -> String {
        let body = response.into_body().collect().await.map(|b| b.to_bytes());
        let Ok(body) = body else { panic!("body") };
        String::from_utf8_lossy(&body).into_owned()
    }

    #[tokio::test]
    async fn everything_shown_is_escaped() {
        let categories = vec!["<b>gambling</b>".to_owned()];
        let action = ReviewTarget::Proxy(proxy()).action();
        let info = BlockInfo {
            url: "http://bet.test/\"><script>alert(1)</script>",
            categories: &categories,
            rule: "category:pupil:gambling",
            reason: "Gambling sites are blocked for pupils",
            at: "Mon 23 Nov 2026 10:00",
            user: Some("<img src=x>"),
            role: "pupil",
            group: None,
            review_action: Some(&action),
            review_token: Some("token-1"),
            school: Some("St <Mary's>"),
        };
        let response = page(&info);
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(response.headers()[RULE_HEADER], "category:pupil:gambling");
        let html = html_of(response).await;
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("<b>gambling"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(
            html.contains("action=\"http://127.0.0.1:3128/safegate/review\""),
            "{html}"
        );
        assert!(
            html.contains("<title>Blocked - St &lt;Mary's&gt;</title>"),
            "{html}"
        );
        assert!(
            html.contains("SafeGate, St &lt;Mary's&gt;'s web filter."),
            "{html}"
        );
    }

    #[test]
    fn review_actions() {
        assert_eq!(
            ReviewTarget::Proxy(proxy()).action(),
            "http://127.0.0.1:3128/safegate/review"
        );
        let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 3128));
        assert_eq!(
            ReviewTarget::Proxy(v6).action(),
            "http://[::1]:3128/safegate/review"
        );
        assert_eq!(ReviewTarget::SameOrigin.action(), REVIEW_PATH);
    }

    #[tokio::test]
    async fn a_decrypted_page_posts_its_review_form_to_its_own_origin() {
        let categories = vec!["shopping".to_owned()];
        let action = ReviewTarget::SameOrigin.action();
        let info = BlockInfo {
            url: "https://shop.test/forbidden?q=\"><form action=\"http://evil.test/\">",
            categories: &categories,
            rule: "deny:role:pupil",
            reason: "This address is on the pupil deny-list",
            at: "Mon 23 Nov 2026 10:00",
            user: Some("ada"),
            role: "pupil",
            group: None,
            review_action: Some(&action),
            review_token: Some("token-1"),
            school: None,
        };
        let html = html_of(page(&info)).await;
        // Relative: the browser posts to the blocked page's own https:// origin.
        assert!(html.contains("action=\"/safegate/review\""), "{html}");
        assert_eq!(html.matches("<form").count(), 1, "{html}");
        assert!(!html.contains("action=\"http"), "{html}");
        assert!(
            html.contains("<input type=\"hidden\" name=\"token\" value=\"token-1\">"),
            "{html}"
        );
        assert!(
            html.contains("value=\"https://shop.test/forbidden?q=&quot;&gt;&lt;form"),
            "{html}"
        );
    }
}
