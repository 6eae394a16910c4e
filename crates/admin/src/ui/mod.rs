//! SafeGate's admin web interface, served on `admin.listen` beside `/healthz`,
//! `/readyz` and `/metrics` ([`crate::AdminServer::run_with_web`]):
//! pages rendered on the server (maud templates, escaped by construction) that work
//! without JavaScript, and the same actions as JSON under `/api/`.
//!
//! Every route belongs to one entry of [`ROUTES`], which says what it needs: nothing
//! (sign-in), a signed-in user, or one of the permissions `rules` (filter admins),
//! `reports` (headteacher, safeguarding lead) and `metrics` (technicians). The check is
//! a layer on each group of routes ([`guard`]), so a handler cannot forget it; a user
//! without the permission gets 403. Every state-changing request carries the session's
//! CSRF token (form field `csrf` or header `X-CSRF-Token`), checked by the same layer.

pub mod accounts;
pub mod activity;
pub mod alerts;
pub mod choices;
pub mod concern;
pub mod confirm;
pub mod dashboard;
pub mod groups;
pub mod limiter;
pub mod oidc;
pub mod page_frame;
pub mod pages;
pub mod policy_edit;
pub mod reports;
pub mod reviews;
pub mod rules;
pub mod session;
pub mod site_words;
pub mod teach;
pub mod two_factor;
pub mod users;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use safegate_proxy::auth::Directory;
use safegate_store::{Permission, Store};
use serde::Serialize;

use crate::ui::session::random_token;
pub use crate::ui::session::{Session, SessionLimits, Sessions, SignInSource};

/// Largest form or JSON body accepted (a policy edit fits many times over).
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: the sign-in page.
    Public,
    /// Any signed-in user.
    SignedIn,
    /// One of these permissions.
    AnyOf(&'static [Permission]),
}

/// One route of the interface and what it needs; the tests walk this table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteInfo {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// The path.
    pub path: &'static str,
    /// What it needs.
    pub need: Need,
}

const RULES: &[Permission] = &[Permission::Rules];
const REPORTS: &[Permission] = &[Permission::Reports];
const METRICS: &[Permission] = &[Permission::Metrics];
const USERS: &[Permission] = &[Permission::Users];
const TEACH: &[Permission] = &[Permission::Teach];
const RULES_OR_REPORTS: &[Permission] = &[Permission::Rules, Permission::Reports];

const fn route(method: &'static str, path: &'static str, need: Need) -> RouteInfo {
    RouteInfo { method, path, need }
}

/// Every route.
pub const ROUTES: &[RouteInfo] = &[
    route("GET", "/login", Need::Public),
    route("POST", "/login", Need::Public),
    route("POST", "/login/code", Need::Public),
    route("GET", "/login/oidc", Need::Public),
    route("GET", "/login/oidc/callback", Need::Public),
    route("GET", "/account/two-factor", Need::SignedIn),
    route("POST", "/account/two-factor/enrol", Need::SignedIn),
    route("POST", "/account/two-factor/off", Need::SignedIn),
    route("GET", "/", Need::SignedIn),
    route("POST", "/logout", Need::SignedIn),
    route("GET", "/api/session", Need::SignedIn),
    route("POST", "/api/logout", Need::SignedIn),
    route("GET", "/health", Need::AnyOf(METRICS)),
    route("GET", "/api/health", Need::AnyOf(METRICS)),
    route("GET", "/accounts", Need::AnyOf(USERS)),
    route("GET", "/users", Need::AnyOf(USERS)),
    route("POST", "/users/add", Need::AnyOf(USERS)),
    route("POST", "/users/import", Need::AnyOf(USERS)),
    route("GET", "/users/{name}", Need::AnyOf(USERS)),
    route("POST", "/users/{name}/update", Need::AnyOf(USERS)),
    route("POST", "/users/{name}/disable", Need::AnyOf(USERS)),
    route("POST", "/users/{name}/password", Need::AnyOf(USERS)),
    route("GET", "/audit", Need::AnyOf(RULES_OR_REPORTS)),
    route("GET", "/api/audit", Need::AnyOf(RULES_OR_REPORTS)),
    route("GET", "/alerts", Need::AnyOf(REPORTS)),
    route("GET", "/api/alerts", Need::AnyOf(REPORTS)),
    route("GET", "/alerts/{id}", Need::AnyOf(REPORTS)),
    route("GET", "/alerts/{id}/record", Need::AnyOf(REPORTS)),
    route("POST", "/alerts/{id}/status", Need::AnyOf(REPORTS)),
    route("POST", "/api/alerts/{id}/status", Need::AnyOf(REPORTS)),
    route("GET", "/reports", Need::AnyOf(REPORTS)),
    route("GET", "/api/reports", Need::AnyOf(REPORTS)),
    route("GET", "/reports/file/{name}", Need::AnyOf(REPORTS)),
    route("POST", "/reports/make", Need::AnyOf(REPORTS)),
    route("GET", "/activity", Need::AnyOf(REPORTS)),
    route("GET", "/api/activity", Need::AnyOf(REPORTS)),
    route("GET", "/rules", Need::AnyOf(RULES)),
    route("POST", "/rules/block", Need::AnyOf(RULES)),
    route("POST", "/rules/list", Need::AnyOf(RULES)),
    route("POST", "/rules/unblock", Need::AnyOf(RULES)),
    route("POST", "/rules/unblock/remove", Need::AnyOf(RULES)),
    route("POST", "/rules/window", Need::AnyOf(RULES)),
    route("POST", "/rules/block-page", Need::AnyOf(RULES)),
    route("POST", "/api/rules/window", Need::AnyOf(RULES)),
    route("GET", "/api/rules", Need::AnyOf(RULES)),
    route("GET", "/api/rules/check", Need::AnyOf(RULES)),
    route("POST", "/api/rules/block", Need::AnyOf(RULES)),
    route("POST", "/api/rules/unblock", Need::AnyOf(RULES)),
    route("GET", "/teach", Need::AnyOf(TEACH)),
    route("POST", "/teach/unblock", Need::AnyOf(TEACH)),
    route("POST", "/teach/focus", Need::AnyOf(TEACH)),
    route("POST", "/teach/end", Need::AnyOf(TEACH)),
    route("GET", "/rules/groups", Need::AnyOf(RULES)),
    route("POST", "/rules/groups", Need::AnyOf(RULES)),
    route("POST", "/rules/groups/remove", Need::AnyOf(RULES)),
    route("GET", "/rules/reviews", Need::AnyOf(RULES)),
    route("POST", "/rules/reviews/decide", Need::AnyOf(RULES)),
    route("GET", "/api/rules/reviews", Need::AnyOf(RULES)),
    route("POST", "/api/rules/reviews/decide", Need::AnyOf(RULES)),
];

/// Review requests waiting for a decision, as last counted (the menu shows it).
static WAITING_REVIEWS: AtomicU64 = AtomicU64::new(0);

/// The number of waiting review requests the menu shows.
pub fn waiting_reviews() -> u64 {
    WAITING_REVIEWS.load(Ordering::Relaxed)
}

/// Sets the number of waiting review requests (counted by the reviews module).
pub(crate) fn set_waiting_reviews(count: u64) {
    WAITING_REVIEWS.store(count, Ordering::Relaxed);
}

/// What the technicians' page shows, provided by the service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HealthFigures {
    /// SafeGate's version.
    pub version: String,
    /// Whether `/readyz` would answer 200, and why not.
    pub ready: bool,
    /// Why not ready (empty when ready).
    pub not_ready_because: String,
    /// Listener name and address.
    pub listeners: Vec<(String, String)>,
    /// `loaded` or `refused: ...` (the previous policy stays live).
    pub policy_state: String,
    /// The last reload's error, if the last reload failed.
    pub last_reload_error: Option<String>,
    /// Category name and entries.
    pub list_sizes: Vec<(String, u64)>,
    /// Bytes of the database on disk.
    pub store_bytes: u64,
    /// Visit-log records waiting for the writer.
    pub queue_depth: u64,
    /// Visit-log records dropped since start (must stay 0).
    pub dropped_records: u64,
    /// Each list feed and the age in seconds of its oldest installed list (None: not
    /// installed).
    #[serde(default)]
    pub list_ages: Vec<(String, Option<u64>)>,
    /// Feeds not updated for longer than `lists.stale_after`, in words.
    #[serde(default)]
    pub stale_lists: Vec<String>,
}

/// Where the technicians' figures come from.
pub trait HealthSource: Send + Sync + 'static {
    /// The figures now.
    fn health(&self) -> HealthFigures;
}

/// Settings of the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebSettings {
    /// Session time-outs.
    pub sessions: SessionLimits,
    /// Mark cookies `Secure` (when the admin listener is behind TLS).
    pub secure_cookies: bool,
    /// Time the sign-in form's body has to arrive (`admin.body_read_timeout`); a
    /// client that announces a body and never sends it gets a 408.
    pub body_read_timeout: Duration,
    /// `admin.require_2fa`: accounts with `rules` or `users` must use two-factor
    /// sign-in.
    pub require_2fa: bool,
}

impl Default for WebSettings {
    fn default() -> Self {
        Self {
            sessions: SessionLimits {
                idle: Duration::from_secs(30 * 60),
                absolute: Duration::from_secs(12 * 60 * 60),
            },
            secure_cookies: false,
            body_read_timeout: Duration::from_secs(30),
            require_2fa: false,
        }
    }
}

/// What every handler shares.
pub struct WebState {
    pub(crate) store: Store,
    pub(crate) sessions: Sessions,
    pub(crate) limiter: limiter::SignInLimiter,
    /// Sign-ins whose password was right, waiting for their two-factor code.
    pub(crate) pending_sign_ins: two_factor::PendingSignIns,
    /// The process's one bound on password checks (shared with the proxy).
    pub(crate) password_checks: Arc<safegate_store::password::CheckPool>,
    pub(crate) settings: WebSettings,
    pub(crate) health: Arc<dyn HealthSource>,
    pub(crate) policy: Option<rules::PolicyAccess>,
    pub(crate) reports_dir: Option<std::path::PathBuf>,
    /// A hash of a random password, checked when the user does not exist so that the
    /// answer takes as long as for a real account.
    pub(crate) dummy_hash: String,
    /// The school's directory (`[auth.ldap]`), the proxy's client, for sign-ins of
    /// people who are not SafeGate users.
    pub(crate) directory: OnceLock<Arc<Directory>>,
    /// The school's OpenID Connect provider (`[admin.oidc]`).
    pub(crate) oidc: OnceLock<Arc<oidc::Oidc>>,
}

impl WebState {
    /// The interface's state over the open database; sign-in passwords are checked
    /// through `password_checks` (the process's one pool, shared with the proxy).
    pub fn new(
        store: Store,
        settings: WebSettings,
        health: Arc<dyn HealthSource>,
        policy: Option<rules::PolicyAccess>,
        reports_dir: Option<std::path::PathBuf>,
        password_checks: Arc<safegate_store::password::CheckPool>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            sessions: Sessions::new(settings.sessions),
            limiter: limiter::SignInLimiter::default(),
            pending_sign_ins: two_factor::PendingSignIns::default(),
            password_checks,
            settings,
            health,
            policy,
            reports_dir,
            dummy_hash: random_token()
                .and_then(|secret| safegate_store::password::hash_password(&secret).ok())
                .unwrap_or_default(),
            directory: OnceLock::new(),
            oidc: OnceLock::new(),
        })
    }

    /// Offers sign-in with the school's OpenID Connect provider. Set once, at start.
    pub fn use_oidc(&self, oidc: oidc::Oidc) {
        let _ = self.oidc.set(Arc::new(oidc));
    }

    /// A `Set-Cookie` like [`WebState::cookie`] but `SameSite=Lax`, for the one
    /// cookie that must come back with the sign-in provider's redirect.
    pub(crate) fn lax_cookie(&self, name: &str, value: &str) -> HeaderValue {
        let strict = self.cookie(name, value);
        let text = strict
            .to_str()
            .unwrap_or_default()
            .replace("SameSite=Strict", "SameSite=Lax");
        HeaderValue::from_str(&text).unwrap_or(strict)
    }

    /// Lets people in the school's directory sign in with the permissions of their
    /// first mapped group (`[[auth.ldap.groups]] permissions`). Set once, at start.
    pub fn use_directory(&self, directory: Arc<Directory>) {
        let _ = self.directory.set(directory);
    }

    /// The school's time zone (the live policy's), UTC without a policy.
    pub(crate) fn school_zone(&self) -> jiff::tz::TimeZone {
        self.policy
            .as_ref()
            .map_or(jiff::tz::TimeZone::UTC, |policy| {
                policy.live.load().timezone().clone()
            })
    }

    /// A `Set-Cookie` value for `name`; an empty value with `Max-Age=0` deletes it.
    pub(crate) fn cookie(&self, name: &str, value: &str) -> HeaderValue {
        let mut cookie = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
        if value.is_empty() {
            cookie.push_str("; Max-Age=0");
        }
        if self.settings.secure_cookies {
            cookie.push_str("; Secure");
        }
        HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// The interface's routes, to be merged into the admin listener's router (which must
/// be served with `ConnectInfo<SocketAddr>`).
pub fn router(state: Arc<WebState>) -> Router {
    let guarded = |need: Need, routes: Router<Arc<WebState>>| {
        routes.route_layer(middleware::from_fn_with_state(
            (Arc::clone(&state), need),
            guard,
        ))
    };
    let public = Router::new()
        .route("/login", get(pages::login_page).post(pages::login))
        .route("/login/code", post(two_factor::login_code))
        .route("/login/oidc", get(oidc::begin))
        .route("/login/oidc/callback", get(oidc::callback))
        .route_layer(middleware::from_fn_with_state(
            state.settings.body_read_timeout,
            body_in_time,
        ));
    let signed_in = guarded(
        Need::SignedIn,
        Router::new()
            .route("/", get(pages::home))
            .route("/logout", post(pages::logout))
            .route("/api/session", get(pages::api_session))
            .route("/api/logout", post(pages::api_logout))
            .route("/account/two-factor", get(two_factor::two_factor_page))
            .route("/account/two-factor/enrol", post(two_factor::enrol))
            .route("/account/two-factor/off", post(two_factor::turn_off)),
    );
    let metrics = guarded(
        Need::AnyOf(METRICS),
        Router::new()
            .route("/health", get(pages::health))
            .route("/api/health", get(pages::api_health)),
    );
    let accounts = guarded(
        Need::AnyOf(USERS),
        Router::new()
            .route("/accounts", get(accounts::accounts_page))
            .route("/users", get(users::users_page))
            .route("/users/add", post(users::add_user))
            .route("/users/import", post(users::import_users))
            .route("/users/{name}", get(users::user_page))
            .route("/users/{name}/update", post(users::update_user))
            .route("/users/{name}/disable", post(users::disable_user))
            .route("/users/{name}/password", post(users::reset_password)),
    );
    let audit = guarded(
        Need::AnyOf(RULES_OR_REPORTS),
        Router::new()
            .route("/audit", get(pages::audit))
            .route("/api/audit", get(pages::api_audit)),
    );
    let rules = guarded(
        Need::AnyOf(RULES),
        Router::new()
            .route("/rules", get(rules::rules_page))
            .route("/rules/block", post(rules::block_form))
            .route("/rules/list", post(rules::list_form))
            .route("/rules/unblock", post(rules::unblock_form))
            .route("/rules/unblock/remove", post(rules::remove_unblock_form))
            .route("/rules/window", post(rules::window_form))
            .route("/rules/block-page", post(rules::block_page_form))
            .route("/api/rules/window", post(rules::window_api))
            .route("/api/rules", get(rules::rules_api))
            .route("/api/rules/check", get(rules::check_api))
            .route("/api/rules/block", post(rules::block_api))
            .route("/api/rules/unblock", post(rules::unblock_api))
            .route(
                "/rules/groups",
                get(groups::groups_page).post(groups::group_form),
            )
            .route("/rules/groups/remove", post(groups::remove_group_form))
            .route("/rules/reviews", get(reviews::reviews_page))
            .route("/rules/reviews/decide", post(reviews::decide_form))
            .route("/api/rules/reviews", get(reviews::reviews_api))
            .route("/api/rules/reviews/decide", post(reviews::decide_api)),
    );
    let teach = guarded(
        Need::AnyOf(TEACH),
        Router::new()
            .route("/teach", get(teach::teach_page))
            .route("/teach/unblock", post(teach::teach_unblock))
            .route("/teach/focus", post(teach::teach_focus))
            .route("/teach/end", post(teach::teach_end)),
    );
    let reports = guarded(
        Need::AnyOf(REPORTS),
        Router::new()
            .route("/alerts", get(alerts::alerts_page))
            .route("/api/alerts", get(alerts::alerts_api))
            .route("/alerts/{id}", get(alerts::alert_page))
            .route("/alerts/{id}/record", get(concern::concern_record))
            .route("/alerts/{id}/status", post(alerts::status_form))
            .route("/api/alerts/{id}/status", post(alerts::status_api))
            .route("/reports", get(reports::reports_page))
            .route("/api/reports", get(reports::reports_api))
            .route("/reports/file/{name}", get(reports::report_file))
            .route("/reports/make", post(reports::make_report))
            .route("/activity", get(activity::activity_page))
            .route("/api/activity", get(activity::activity_api)),
    );
    public
        .merge(reports)
        .merge(signed_in)
        .merge(metrics)
        .merge(audit)
        .merge(accounts)
        .merge(rules)
        .merge(teach)
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// Largest sign-in form read, in bytes.
const SIGN_IN_FORM_LIMIT: usize = 64 * 1024;

/// Second (since the epoch) of the last "body timed out" line: at most one a second.
static LAST_BODY_TIMEOUT_LINE: AtomicU64 = AtomicU64::new(u64::MAX);

/// Reads the sign-in form's body (at most [`SIGN_IN_FORM_LIMIT`]) within
/// `admin.body_read_timeout` before the handler sees it: a client that announces a
/// body and never sends it gets a 408 and the connection is closed, instead of
/// holding it forever.
async fn body_in_time(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, SIGN_IN_FORM_LIMIT)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(_)) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "The form was too large or did not arrive completely.\n",
        )
            .into_response(),
        Err(_) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_secs());
            if LAST_BODY_TIMEOUT_LINE.swap(now, Ordering::Relaxed) != now {
                tracing::info!(
                    path = parts.uri.path(),
                    "admin request body not received within admin.body_read_timeout; answered 408 and closed (at most one such line a second)"
                );
            }
            (
                StatusCode::REQUEST_TIMEOUT,
                [(header::CONNECTION, "close")],
                "The form did not arrive in time. Send it again.\n",
            )
                .into_response()
        }
    }
}

/// Headers on every answer: no caching of pages about people, no framing, no
/// scripts, no referrer leaking URLs.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// The value of cookie `name` in the request.
pub(crate) fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

fn is_api(path: &str) -> bool {
    path.starts_with("/api/")
}

/// An answer for a refused request: JSON for the API, a page otherwise.
pub(crate) fn refusal(api: bool, status: StatusCode, message: &str) -> Response {
    if api {
        (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
    } else {
        (status, pages::message_page(status, message)).into_response()
    }
}

/// Finds the session, ends it if the account changed, checks the route's need and,
/// for state-changing methods, the CSRF token; hands the session to the handler.
async fn guard(
    State((state, need)): State<(Arc<WebState>, Need)>,
    request: Request,
    next: Next,
) -> Response {
    let api = is_api(request.uri().path());
    let session_id = cookie_value(request.headers(), session::SESSION_COOKIE).map(str::to_owned);
    let session = session_id
        .as_deref()
        .and_then(|id| state.sessions.touch(id).map(|session| (id, session)));
    let Some((id, session)) = session else {
        if api {
            return refusal(true, StatusCode::UNAUTHORIZED, "sign in first");
        }
        let next_path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let target = format!("/login?next={}", pages::url_encode(&next_path));
        return Redirect::to(&target).into_response();
    };
    // The account as it is now: disabled, removed or changed accounts are signed out.
    let current = state.store.get_user(&session.user).ok().flatten();
    let still = match session.source {
        session::SignInSource::Local => {
            current.is_some_and(|user| !user.disabled && user.generation == session.generation)
        }
        // Checked elsewhere at sign-in: only a disabled SafeGate user of that name ends it.
        _ => !current.is_some_and(|user| user.disabled),
    };
    if !still {
        state.sessions.end(id);
        return refusal(
            api,
            StatusCode::UNAUTHORIZED,
            "your account changed: sign in again",
        );
    }
    let path = request.uri().path();
    if session.must_enrol
        && !matches!(
            path,
            "/account/two-factor" | "/account/two-factor/enrol" | "/logout" | "/api/logout"
        )
    {
        if api {
            return refusal(
                true,
                StatusCode::FORBIDDEN,
                "set up two-factor sign-in first (/account/two-factor)",
            );
        }
        return Redirect::to("/account/two-factor").into_response();
    }
    let allowed = match need {
        Need::Public | Need::SignedIn => true,
        Need::AnyOf(permissions) => permissions.iter().any(|p| session.may(*p)),
    };
    if !allowed {
        tracing::warn!(user = %session.user, path = %request.uri().path(), "admin page refused: missing permission");
        return refusal(
            api,
            StatusCode::FORBIDDEN,
            "you do not have the permission this page needs",
        );
    }
    let request = if request.method() == Method::GET || request.method() == Method::HEAD {
        request
    } else {
        match checked_csrf(request, &session.csrf).await {
            Ok(request) => request,
            Err(response) => return response,
        }
    };
    if session.may(Permission::Rules) && request.method() == Method::GET && !api {
        reviews::recount(&state.store).await;
    }
    let mut request = request;
    request.extensions_mut().insert(session);
    next.run(request).await
}

/// Checks the CSRF token of a state-changing request: the `X-CSRF-Token` header, or
/// the `csrf` field of a form (the body is read and handed on unchanged).
async fn checked_csrf(request: Request, expected: &str) -> Result<Request, Response> {
    let api = is_api(request.uri().path());
    let refused = || {
        tracing::warn!("admin request refused: missing or wrong CSRF token");
        refusal(
            api,
            StatusCode::FORBIDDEN,
            "this form has expired or did not come from SafeGate: reload the page and try again",
        )
    };
    if let Some(token) = request.headers().get("x-csrf-token") {
        return match token.to_str() {
            Ok(token) if session::same_secret(token, expected) => Ok(request),
            _ => Err(refused()),
        };
    }
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(refused());
    }
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| refusal(api, StatusCode::PAYLOAD_TOO_LARGE, "the form is too large"))?;
    let token = form_field(&bytes, "csrf");
    if !token.is_some_and(|token| session::same_secret(&token, expected)) {
        return Err(refused());
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// The first value of `name` in an `application/x-www-form-urlencoded` body.
pub(crate) fn form_field(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

pub use safegate_reload::policy_diff;
