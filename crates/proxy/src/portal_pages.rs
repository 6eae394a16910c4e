//! The login portal's pages, served by SafeGate itself without authentication:
//! `GET /safegate/login?then=<url>` (the form), `POST /safegate/login` (log in),
//! `GET /safegate/logout` and `POST /safegate/logout` (log out); and the redirect
//! that sends an unidentified client's plain-HTTP page request to the form.
//!
//! Invariants: every value shown is HTML-escaped; every POST must carry a form token
//! bound to the client address ([`crate::auth::portal`]) and, when the browser sends
//! `Origin` or `Referer`, come from SafeGate's own address; after a log-in the client is
//! only ever redirected to an absolute `http://` or `https://` URL (the one it was
//! going to), never to another scheme. Passwords go through the authenticator's
//! bounded Argon2 path and failure limits.

use std::net::{IpAddr, SocketAddr};

use http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderValue, LOCATION, ORIGIN, REFERER,
    RETRY_AFTER,
};
use http::{Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;

use crate::auth::{Authenticator, PortalRefusal, Refusal, TokenPurpose};
use crate::body::ResponseBody;
use crate::error_page;
use crate::form_body::{self, FormBodyError};

/// The login page.
pub const LOGIN_PATH: &str = "/safegate/login";

/// The logout page.
pub const LOGOUT_PATH: &str = "/safegate/logout";

/// Longest `then` URL carried through the login page.
const MAX_THEN: usize = 4096;

/// Largest login form accepted, in bytes.
const FORM_LIMIT: usize = 8 * 1024;

/// Where the client is and which addresses are SafeGate's own.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PortalClient {
    /// The client address.
    pub(crate) peer: IpAddr,
    /// The listener address the client reached.
    pub(crate) local: SocketAddr,
    /// The proxy listener's configured address.
    pub(crate) listen: SocketAddr,
    /// Time the log-in form's body has to arrive (`proxy.body_read_timeout`).
    pub(crate) body_read_timeout: std::time::Duration,
}

/// `302` to the login page on the address the client reached, carrying `then`.
pub(crate) fn redirect_to_login(local: SocketAddr, then: &str) -> Response<ResponseBody> {
    let mut location = format!("http://{local}{LOGIN_PATH}");
    if let Some(then) = valid_then(then) {
        location.push_str("?then=");
        location.extend(form_urlencoded::byte_serialize(then.as_bytes()));
    }
    let mut response = html_response(
        StatusCode::FOUND,
        format!(
            "{HEAD}<h1>Log in to use the web</h1><p><a href=\"{}\">Log in with your school user \
             name and password</a>.</p></body></html>\n",
            html_escape::encode_double_quoted_attribute(&location)
        ),
    );
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(LOCATION, value);
    }
    response
}

/// Answers a request for [`LOGIN_PATH`] or [`LOGOUT_PATH`].
pub(crate) async fn serve(
    auth: &Authenticator,
    client: PortalClient,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    let path = request.uri().path().to_owned();
    if !auth.portal_enabled() {
        return error_page::page(
            StatusCode::NOT_FOUND,
            "not-found",
            &path,
            "The login portal is not enabled on this SafeGate.",
        );
    }
    let method = request.method().clone();
    match (method, path.as_str()) {
        (Method::GET | Method::HEAD, LOGIN_PATH) => {
            let then = request.uri().query().and_then(|query| {
                form_urlencoded::parse(query.as_bytes())
                    .find(|(key, _)| key == "then")
                    .map(|(_, value)| value.into_owned())
            });
            let then = then.as_deref().and_then(valid_then).unwrap_or_default();
            match auth.portal_session(client.peer) {
                Some(identity) => logged_in_page(
                    auth,
                    client.peer,
                    identity.user.as_deref().unwrap_or_default(),
                    &then,
                ),
                None => login_form(auth, client.peer, &then, "", None, StatusCode::OK),
            }
        }
        (Method::GET | Method::HEAD, _) => match auth.portal_session(client.peer) {
            Some(identity) => logged_in_page(
                auth,
                client.peer,
                identity.user.as_deref().unwrap_or_default(),
                "",
            ),
            None => message_page(
                StatusCode::OK,
                "Not logged in",
                "This computer is not logged in to SafeGate.",
            ),
        },
        (Method::POST, LOGIN_PATH) => login(auth, client, request).await,
        (Method::POST, _) => logout(auth, client, request).await,
        _ => error_page::page(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            &path,
            "The login pages answer GET and POST.",
        ),
    }
}

async fn login(
    auth: &Authenticator,
    client: PortalClient,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    let form = match read_form(client, request, TokenPurpose::Login, auth).await {
        Ok(form) => form,
        Err(response) => return response,
    };
    let field = |name: &str| {
        form_urlencoded::parse(&form)
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
            .unwrap_or_default()
    };
    let then_field = field("then");
    let then = valid_then(&then_field).unwrap_or_default();
    let then = then.as_str();
    let user = field("user");
    let user = user.trim();
    if user.is_empty() || user.len() > 256 {
        return login_form(
            auth,
            client.peer,
            then,
            user,
            Some("Enter your user name and password."),
            StatusCode::OK,
        );
    }
    match auth
        .portal_login(client.peer, user, field("password"))
        .await
    {
        Ok(identity) => {
            if then.is_empty() {
                logged_in_page(
                    auth,
                    client.peer,
                    identity.user.as_deref().unwrap_or_default(),
                    "",
                )
            } else {
                let mut response = message_page(
                    StatusCode::SEE_OTHER,
                    "Logged in",
                    "You are logged in. Continue to the page you asked for.",
                );
                if let Ok(value) = HeaderValue::from_str(then) {
                    response.headers_mut().insert(LOCATION, value);
                }
                response
            }
        }
        Err(PortalRefusal::Refused(refusal)) => {
            let (status, text, retry_after) = match refusal {
                Refusal::AddressLocked { retry_after } | Refusal::UserLocked { retry_after } => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many failed log-ins. Wait a few minutes, then try again with the \
                     right password.",
                    Some(retry_after.as_secs().max(1)),
                ),
                Refusal::Busy => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "SafeGate is busy checking passwords. Try again in a moment.",
                    Some(1),
                ),
                _ => (
                    StatusCode::OK,
                    "The user name or password was not accepted. Check them and try again; if \
                     it keeps happening, ask the school's IT support.",
                    None,
                ),
            };
            let mut response = login_form(auth, client.peer, then, user, Some(text), status);
            if let Some(seconds) = retry_after {
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(seconds));
            }
            response
        }
        Err(PortalRefusal::OtherComputer { retry_after }) => {
            let minutes = retry_after.as_secs().div_ceil(60).max(1);
            let mut response = message_page(
                StatusCode::CONFLICT,
                "Logged in on another computer",
                &format!(
                    "You are logged in on another computer. Log out there first, or wait \
                     {minutes} minute{} after you last used it.",
                    if minutes == 1 { "" } else { "s" }
                ),
            );
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry_after.as_secs().max(1)));
            response
        }
    }
}

async fn logout(
    auth: &Authenticator,
    client: PortalClient,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    if let Err(response) = read_form(client, request, TokenPurpose::Logout, auth).await {
        return response;
    }
    auth.portal_logout(client.peer);
    message_page(
        StatusCode::OK,
        "Logged out",
        "You are logged out. Close the browser if other people use this computer.",
    )
}

/// The form's body, once `Origin`/`Referer` and the token are checked.
async fn read_form(
    client: PortalClient,
    request: Request<Incoming>,
    purpose: TokenPurpose,
    auth: &Authenticator,
) -> Result<bytes::Bytes, Response<ResponseBody>> {
    let forbidden = |why: &str| {
        error_page::page(
            StatusCode::FORBIDDEN,
            "portal-forbidden",
            LOGIN_PATH,
            &format!("{why} Open the login page again and use its form."),
        )
    };
    if !same_origin(&client, request.headers()) {
        return Err(forbidden("The form was sent from another site."));
    }
    let read = form_body::read(request.into_body(), FORM_LIMIT, client.body_read_timeout).await;
    let form = match read {
        Ok(form) => form,
        Err(FormBodyError::TimedOut) => {
            return Err(form_body::timed_out(client.peer, LOGIN_PATH));
        }
        Err(FormBodyError::TooLargeOrIncomplete) => {
            return Err(error_page::page(
                StatusCode::PAYLOAD_TOO_LARGE,
                "bad-request",
                LOGIN_PATH,
                "The form was too large or did not arrive completely.",
            ));
        }
    };
    let token = form_urlencoded::parse(&form)
        .find(|(key, _)| key == "token")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    if !auth.check_form_token(purpose, client.peer, &token) {
        return Err(forbidden("The form has expired or was not SafeGate's."));
    }
    Ok(form)
}

/// True unless the browser says the form came from somewhere other than SafeGate's own
/// address (`Origin`, else `Referer`; neither sent: the token alone decides).
fn same_origin(client: &PortalClient, headers: &http::HeaderMap) -> bool {
    let own = |authority: Option<&http::uri::Authority>| {
        authority.is_some_and(|authority| {
            let port = authority.port_u16().unwrap_or(80);
            let host = authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']');
            host.parse::<IpAddr>().is_ok_and(|ip| {
                [client.local, client.listen]
                    .iter()
                    .any(|addr| addr.ip() == ip && addr.port() == port)
            })
        })
    };
    let origin_of = |value: &HeaderValue| {
        value
            .to_str()
            .ok()
            .and_then(|text| text.parse::<Uri>().ok())
            .is_some_and(|uri| uri.scheme_str() == Some("http") && own(uri.authority()))
    };
    if let Some(origin) = headers.get(ORIGIN) {
        return origin_of(origin);
    }
    headers.get(REFERER).is_none_or(origin_of)
}

/// `then` when it is an absolute `http://` or `https://` URL of sensible length, with
/// the characters a URL may not hold (quotes, angle brackets, spaces, non-ASCII)
/// percent-encoded as browsers do.
pub(crate) fn valid_then(then: &str) -> Option<String> {
    if then.is_empty() || then.len() > MAX_THEN {
        return None;
    }
    let mut encoded = String::with_capacity(then.len());
    for byte in then.bytes() {
        if byte.is_ascii_graphic()
            && !matches!(
                byte,
                b'"' | b'<' | b'>' | b'`' | b'{' | b'}' | b'|' | b'\\' | b'^'
            )
        {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    let uri = encoded.parse::<Uri>().ok()?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let host_ok = uri
        .authority()
        .is_some_and(|a| !a.host().is_empty() && !a.as_str().contains('@'));
    (scheme_ok && host_ok && encoded.len() <= MAX_THEN).then_some(encoded)
}

const HEAD: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>SafeGate log-in</title><style>body{font-family:system-ui,sans-serif;max-width:28em;\
margin:2em auto;padding:0 1em;color:#222}label{display:block;margin:.8em 0 .2em}\
input[type=text],input[type=password]{width:100%;box-sizing:border-box;padding:.5em;\
font-size:1.1em}button{margin-top:1em;padding:.5em 1.5em;font-size:1.1em}\
.error{color:#a00}code{word-break:break-all}</style></head>\n<body>";

fn login_form(
    auth: &Authenticator,
    peer: IpAddr,
    then: &str,
    user: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response<ResponseBody> {
    let token = auth.form_token(TokenPurpose::Login, peer);
    let attr = |text: &str| html_escape::encode_double_quoted_attribute(text).into_owned();
    let error = error
        .map(|text| {
            format!(
                "<p class=\"error\" role=\"alert\">{}</p>",
                html_escape::encode_text(text)
            )
        })
        .unwrap_or_default();
    let going = if then.is_empty() {
        String::new()
    } else {
        format!(
            "<p>Then you go on to <code>{}</code>.</p>",
            html_escape::encode_text(then)
        )
    };
    html_response(
        status,
        format!(
            "{HEAD}<h1>Log in to use the web</h1>{error}\n<p>Use your school user name and \
             password. The filter records the pages you visit under your name.</p>{going}\n\
             <form method=\"post\" action=\"{LOGIN_PATH}\">\
             <input type=\"hidden\" name=\"token\" value=\"{token}\">\
             <input type=\"hidden\" name=\"then\" value=\"{then}\">\
             <label for=\"user\">User name</label>\
             <input type=\"text\" id=\"user\" name=\"user\" value=\"{user}\" \
             autocomplete=\"username\" autocapitalize=\"none\" required autofocus>\
             <label for=\"password\">Password</label>\
             <input type=\"password\" id=\"password\" name=\"password\" \
             autocomplete=\"current-password\" required>\
             <button type=\"submit\">Log in</button></form></body></html>\n",
            token = attr(&token),
            then = attr(then),
            user = attr(user),
        ),
    )
}

fn logged_in_page(
    auth: &Authenticator,
    peer: IpAddr,
    user: &str,
    then: &str,
) -> Response<ResponseBody> {
    let token = auth.form_token(TokenPurpose::Logout, peer);
    let attr = |text: &str| html_escape::encode_double_quoted_attribute(text).into_owned();
    let going = if then.is_empty() {
        String::new()
    } else {
        format!(
            "<p><a href=\"{}\">Go on to <code>{}</code></a></p>",
            attr(then),
            html_escape::encode_text(then)
        )
    };
    html_response(
        StatusCode::OK,
        format!(
            "{HEAD}<h1>Logged in</h1><p>This computer is logged in as <strong>{user}</strong>. \
             Log out when you leave it.</p>{going}\n\
             <form method=\"post\" action=\"{LOGOUT_PATH}\">\
             <input type=\"hidden\" name=\"token\" value=\"{token}\">\
             <button type=\"submit\">Log out</button></form></body></html>\n",
            user = html_escape::encode_text(user),
            token = attr(&token),
        ),
    )
}

fn message_page(status: StatusCode, title: &str, text: &str) -> Response<ResponseBody> {
    html_response(
        status,
        format!(
            "{HEAD}<h1>{}</h1><p>{}</p></body></html>\n",
            html_escape::encode_text(title),
            html_escape::encode_text(text)
        ),
    )
}

fn html_response(status: StatusCode, body: String) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_absolute_web_addresses_are_followed() {
        let valid = |text: &str| valid_then(text);
        assert_eq!(
            valid("http://example.com/a?b=1").as_deref(),
            Some("http://example.com/a?b=1")
        );
        assert_eq!(
            valid("https://example.com/").as_deref(),
            Some("https://example.com/")
        );
        assert_eq!(
            valid("http://example.com/?q=\"><script>").as_deref(),
            Some("http://example.com/?q=%22%3E%3Cscript%3E")
        );
        for bad in [
            "",
            "javascript:alert(1)",
            "data:text/html,hi",
            "//example.com/",
            "/relative",
            "ftp://example.com/",
            "http:///nohost",
            "http://user@evil.example/",
        ] {
            assert_eq!(valid_then(bad), None, "{bad}");
        }
        assert_eq!(
            valid_then(&format!("http://e.com/{}", "a".repeat(MAX_THEN))),
            None
        );
    }

    #[test]
    fn the_redirect_carries_the_escaped_address() {
        let local: SocketAddr = "10.0.0.1:8080".parse().unwrap_or_else(|_| unreachable!());
        let response = redirect_to_login(local, "http://example.com/a?b=1&c=x");
        assert_eq!(response.status(), StatusCode::FOUND);
        assert_eq!(
            response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok()),
            Some(
                "http://10.0.0.1:8080/safegate/login?then=http%3A%2F%2Fexample.com%2Fa%3Fb%3D1%26c%3Dx"
            )
        );
    }
}
