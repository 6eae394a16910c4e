//! The page a person sees when SafeGate blocks a plain-HTTP request or a request inside
//! a decrypted tunnel (and, through `tls::block_pages`, a blocked HTTPS connection):
//! for the child, the school's name, logo and message, a short explanation, a way
//! back, a form to ask for a review and what happens after; folded away for staff,
//! what was blocked, why (category, reason, rule), when and for whom. It looks like
//! the admin pages ([`crate::page_style`]) and speaks English or Welsh ([`words`]:
//! every string in one file per language). Everything shown came from the request or
//! the policy and is HTML-escaped. The form posts where the proxy answers it itself
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
use safegate_policy::{BlockPageSettings, Decision, Snapshot};

use crate::auth::Identity;
use crate::body::ResponseBody;
use crate::error_page::REASON_HEADER;
use crate::local_pages::REVIEW_PATH;

pub mod words;

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
    /// The school's message, logo and language (the policy's `[block_page]`).
    pub settings: Option<&'a BlockPageSettings>,
    /// The request's `Accept-Language`, which chooses the language.
    pub accept_language: Option<&'a str>,
    /// The request's `Referer`: where "Go back" leads (http and https only).
    pub referer: Option<&'a str>,
    /// What became of this person's review request for this address, if they made
    /// one.
    pub review_outcome: Option<ReviewOutcome>,
}

/// What became of a review request, as the person who asked sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReviewOutcome {
    /// Nobody has decided yet.
    Waiting,
    /// Declined, with the admin's reason.
    Declined(String),
    /// Approved.
    Approved,
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
            settings: None,
            accept_language: None,
            referer: None,
            review_outcome: None,
        }
    }

    /// The same, telling the person what became of their review request.
    pub fn with_review(self, review_outcome: Option<ReviewOutcome>) -> Self {
        Self {
            review_outcome,
            ..self
        }
    }

    /// The same, with the school's name, message, logo and language from `snapshot`.
    pub fn at_school(self, snapshot: &'a Snapshot) -> Self {
        Self {
            school: snapshot.school_name(),
            settings: Some(snapshot.block_page()),
            ..self
        }
    }

    /// The same, in the language and with the way back that the request's headers
    /// (`Accept-Language`, `Referer`) give.
    pub fn asked_by(self, headers: &'a http::HeaderMap) -> Self {
        let text = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        Self {
            accept_language: text(http::header::ACCEPT_LANGUAGE),
            referer: text(http::header::REFERER),
            ..self
        }
    }

    /// The words to show it in.
    pub fn words(&self) -> &'static words::Words {
        let school_default = self.settings.map_or("en", |s| s.language.as_str());
        words::choose(self.accept_language, school_default)
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
    let mut response = Response::new(ResponseBody::full(page_html(info)));
    *response.status_mut() = StatusCode::FORBIDDEN;
    decorate(&mut response, info.rule, "text/html; charset=utf-8");
    response
}

/// Where "Go back" leads: the page the person came from when the browser said so and
/// it is an `http(s)` address (anything else, such as `javascript:`, is refused),
/// else the browser's history.
fn back_link(referer: Option<&str>) -> String {
    match referer {
        Some(url)
            if (url.starts_with("http://") || url.starts_with("https://"))
                && !url.chars().any(char::is_whitespace) =>
        {
            escape(url)
        }
        _ => "javascript:history.back()".to_owned(),
    }
}

/// The page's HTML.
fn page_html(info: &BlockInfo<'_>) -> String {
    let words = info.words();
    let school = info.school.unwrap_or_default();
    let settings = info.settings.cloned().unwrap_or_default();
    let logo = if settings.logo_data_url.is_empty() {
        String::new()
    } else {
        let alt = if school.is_empty() {
            words.footer.clone()
        } else {
            words::with_school(&words.logo_alt, school)
        };
        format!(
            "<img class=\"logo\" src=\"{}\" alt=\"{}\">",
            escape(&settings.logo_data_url),
            escape(&alt)
        )
    };
    let message = if settings.message.is_empty() {
        String::new()
    } else {
        format!("<p class=\"message\">{}</p>\n", escape(&settings.message))
    };
    let footer = if school.is_empty() {
        words.footer.clone()
    } else {
        words::with_school(&words.footer_school, school)
    };
    format!(
        "<!doctype html>\n<html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} - {school_title}</title><style>{style}</style></head>\n\
<body><header><strong>{school_title}</strong></header>\n\
<main class=\"child\">{logo}<h1>{title}</h1>\n<p>{intro}</p>\n{message}\
<p><a href=\"{back}\">{go_back}</a></p>\n<p>{worried}</p>\n{form}{details}</main>\n\
<footer>{footer} · SafeGate</footer></body></html>\n",
        lang = escape(&words.lang),
        title = escape(&words.title),
        school_title = escape(if school.is_empty() {
            "SafeGate"
        } else {
            school
        }),
        style = crate::page_style::STYLE,
        intro = escape(&words.intro),
        back = back_link(info.referer),
        go_back = escape(&words.go_back),
        worried = escape(&words.worried),
        form = review_form(info, words),
        details = staff_details(info, words),
        footer = escape(&footer),
    )
}

/// The review form and what happens after, when the page has a form.
fn review_form(info: &BlockInfo<'_>, words: &words::Words) -> String {
    let Some(action) = info.review_action else {
        return String::new();
    };
    let outcome = match &info.review_outcome {
        None => String::new(),
        Some(ReviewOutcome::Waiting) => format!(
            "<p class=\"message\" role=\"status\">{}</p>\n",
            escape(&words.review_waiting)
        ),
        Some(ReviewOutcome::Approved) => format!(
            "<p class=\"message\" role=\"status\">{}</p>\n",
            escape(&words.review_approved)
        ),
        Some(ReviewOutcome::Declined(reason)) => format!(
            "<p class=\"message\" role=\"status\">{} <q lang=\"en\">{}</q></p>\n",
            escape(&words.review_declined),
            escape(reason)
        ),
    };
    format!(
        "{outcome}<h2>{heading}</h2>\n<form method=\"post\" action=\"{action}\">\
<input type=\"hidden\" name=\"url\" value=\"{url}\">\
<input type=\"hidden\" name=\"rule\" value=\"{rule}\">\
<input type=\"hidden\" name=\"categories\" value=\"{categories}\">\
<input type=\"hidden\" name=\"token\" value=\"{token}\">\
<label for=\"comment\">{label}</label>\
<textarea id=\"comment\" name=\"comment\" rows=\"3\" maxlength=\"500\"></textarea>\
<p><button type=\"submit\">{button}</button></p></form>\n<p>{after}</p>\n",
        heading = escape(&words.review_heading),
        action = escape(action),
        url = escape(info.url),
        rule = escape(info.rule),
        categories = escape(&info.categories.join(", ")),
        token = escape(info.review_token.unwrap_or_default()),
        label = escape(&words.review_label),
        button = escape(&words.review_button),
        after = escape(&words.after_review),
    )
}

/// The technical details, folded away for staff; the reason is the policy's English.
fn staff_details(info: &BlockInfo<'_>, words: &words::Words) -> String {
    let categories = if info.categories.is_empty() {
        words.no_category.clone()
    } else {
        info.categories.join(", ")
    };
    let who = match (info.user, info.group) {
        (Some(user), _) => format!("{user} ({})", info.role),
        (None, Some(group)) => format!("{} / {group}", info.role),
        (None, None) => info.role.to_owned(),
    };
    format!(
        "<details><summary>{summary}</summary><dl>\
<dt>{address}</dt><dd><code>{url}</code></dd>\
<dt>{category}</dt><dd>{categories}</dd>\
<dt>{reason}</dt><dd lang=\"en\">{why}</dd>\
<dt>{reference}</dt><dd><code>{rule}</code></dd>\
<dt>{time}</dt><dd>{at}</dd>\
<dt>{browsing_as}</dt><dd>{who}</dd></dl></details>\n",
        summary = escape(&words.staff_details),
        address = escape(&words.address),
        url = escape(info.url),
        category = escape(&words.category),
        categories = escape(&categories),
        reason = escape(&words.reason),
        why = escape(info.reason),
        reference = escape(&words.reference),
        rule = escape(info.rule),
        time = escape(&words.time),
        at = escape(info.at),
        browsing_as = escape(&words.browsing_as),
        who = escape(&who),
    )
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
            settings: None,
            accept_language: None,
            referer: Some("javascript:alert(1)"),
            review_outcome: Some(ReviewOutcome::Declined("<script>no</script>".to_owned())),
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
            html.contains("<title>This page is blocked - St &lt;Mary's&gt;</title>"),
            "{html}"
        );
        assert!(html.contains("St &lt;Mary's&gt;'s web filter"), "{html}");
        // A `javascript:` referer is not a way back.
        assert!(!html.contains("javascript:alert"), "{html}");
        assert!(
            html.contains("<details><summary>Details for staff"),
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
            settings: None,
            accept_language: Some("cy"),
            referer: Some("https://search.test/?q=\"><b>"),
            review_outcome: None,
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
        assert!(html.contains("<html lang=\"cy\">"), "{html}");
        assert!(html.contains("Mynd yn ôl"), "{html}");
        assert!(
            html.contains("href=\"https://search.test/?q=&quot;&gt;&lt;b&gt;\""),
            "{html}"
        );
    }
}
