//! The pages and API handlers. Every value from a user or the internet goes through
//! maud's escaping (`(value)` in a template); nothing is inserted with
//! `PreEscaped` except the fixed style sheet.

use std::net::IpAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Extension, Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use safegate_proxy::auth::{AdminCheck, DIRECTORY_PASSWORD_MARK, Directory};
use safegate_store::{AuditVerification, Permission, password};
use serde::Deserialize;

pub use crate::ui::page_frame::{layout, message_page, url_encode};
use crate::ui::session::{self, LOGIN_COOKIE, SESSION_COOKIE, Session, SignInSource, random_token};
use crate::ui::{WebState, cookie_value, refusal};

/// Audit entries shown on one page.
const AUDIT_PAGE: usize = 200;

/// Where to go after signing in: a local path only (no open redirect). Browsers drop
/// tabs and line breaks from a `Location` and read `\` as `/`, so a path with any
/// control character, whitespace or backslash is refused, not cleaned: `/\t/evil/`
/// would otherwise become `//evil/`, another site.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path
                    .chars()
                    .any(|c| c == '\\' || c.is_control() || c.is_whitespace())
                && !path.starts_with("/login") =>
        {
            path
        }
        _ => "/",
    }
}

/// `?next=` on the sign-in page.
#[derive(Debug, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// What the sign-in page says while no account may use the admin pages yet.
const FIRST_ADMIN_HINT: &str = "No account may use these pages yet. On the SafeGate server, \
     make the first one with the set-up command, which asks for its name and password \
     (give your own --config if SafeGate's configuration is elsewhere):";
/// The command that makes the first admin account.
const FIRST_ADMIN_COMMAND: &str = "sudo safegate setup --config /etc/safegate/safegate.toml";
/// The same for one account alone.
const FIRST_ADMIN_ALONE: &str = "Or that account alone: sudo -u safegate safegate users add NAME --role filter-admin --permissions 'rules,reports,metrics,users'";

fn login_form(token: &str, next: &str, user: &str, problem: Option<&str>) -> Markup {
    login_form_with(token, next, user, problem, false, None)
}

/// The sign-in form; `first_run` adds how the first admin account is made.
fn login_form_with(
    token: &str,
    next: &str,
    user: &str,
    problem: Option<&str>,
    first_run: bool,
    oidc_button: Option<&str>,
) -> Markup {
    layout(
        "Sign in",
        None,
        html! {
            @if first_run {
                p { (FIRST_ADMIN_HINT) }
                pre { code { (FIRST_ADMIN_COMMAND) } }
                p { (FIRST_ADMIN_ALONE) }
            }
            @if let Some(problem) = problem { p.bad { (problem) } }
            form method="post" action="/login" {
                input type="hidden" name="login_token" value=(token);
                input type="hidden" name="next" value=(next);
                label { "User name " input name="user" autocomplete="username" required value=(user); }
                label { "Password " input name="password" type="password" autocomplete="current-password" required; }
                button type="submit" { "Sign in" }
            }
            @if let Some(button) = oidc_button {
                p { a href="/login/oidc" { (button) } }
            }
        },
    )
}

/// `GET /login`.
pub async fn login_page(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
    Query(query): Query<NextQuery>,
) -> Response {
    // The same token for every sign-in page this browser has open (another tab, or a
    // page still loading), so that whichever form is sent matches the cookie.
    let existing = cookie_value(&headers, LOGIN_COOKIE)
        .filter(|token| {
            token.len() == 43
                && token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_owned);
    let Some(token) = existing.or_else(random_token) else {
        return refusal(
            false,
            StatusCode::SERVICE_UNAVAILABLE,
            "no randomness available",
        );
    };
    let next = safe_next(query.next.as_deref());
    let store = state.store.clone();
    let first_run = tokio::task::spawn_blocking(move || {
        store.list_users().is_ok_and(|users| {
            !users
                .iter()
                .any(|user| !user.disabled && !user.permissions.is_empty())
        })
    })
    .await
    .unwrap_or(false);
    (
        [(header::SET_COOKIE, state.cookie(LOGIN_COOKIE, &token))],
        login_form_with(
            &token,
            next,
            "",
            None,
            first_run,
            state.oidc.get().map(|o| o.button()),
        ),
    )
        .into_response()
}

/// The sign-in form.
#[derive(Deserialize)]
pub struct LoginForm {
    user: String,
    password: String,
    #[serde(default)]
    login_token: String,
    next: Option<String>,
}

/// Who a right password belongs to.
enum Checked {
    /// A SafeGate user.
    Local(safegate_store::users::User),
    /// A person in the school's directory, with their mapped permissions.
    Directory(Session),
}

/// The user `name` when `password` is theirs and they may use the admin pages;
/// checked with Argon2id through the process's one [`password::CheckPool`], with the
/// same work whether or not the account exists, so timing does not tell. People who
/// are not SafeGate users (or were imported by `users sync`) are checked by the
/// directory, when `[auth.ldap]` is set.
async fn check_password(
    state: &WebState,
    name: &str,
    password: String,
) -> Result<Option<Checked>, password::Busy> {
    let user = state.store.get_user(name).ok().flatten();
    let in_directory = user
        .as_ref()
        .is_none_or(|u| !u.disabled && u.password_hash == DIRECTORY_PASSWORD_MARK);
    if let (true, Some(directory)) = (in_directory, state.directory.get()) {
        return Ok(directory_sign_in(directory, name, &password).await);
    }
    match user {
        Some(user) if !user.disabled && !user.permissions.is_empty() => {
            let hash = user.password_hash.clone();
            let right = state.password_checks.verify(hash, password).await?;
            Ok(right.then_some(Checked::Local(user)))
        }
        _ => {
            let dummy = state.dummy_hash.clone();
            state.password_checks.verify(dummy, password).await?;
            Ok(None)
        }
    }
}

/// A directory person's session when `password` is theirs and their first mapped
/// group gives admin permissions; while no directory server answers, a sign-in with
/// the same password accepted within `auth.ldap.cache_ttl` still opens one.
async fn directory_sign_in(directory: &Directory, name: &str, password: &str) -> Option<Checked> {
    let name = safegate_store::users::normalise_name(name).ok()?;
    let user = match directory.authenticate_admin(&name, password).await {
        Ok(AdminCheck::Remembered(user)) => {
            tracing::warn!(user = %name, "admin sign-in accepted from memory: the directory cannot be reached");
            user
        }
        Ok(checked) => checked.user(),
        Err(error) => {
            tracing::info!(user = %name, %error, "admin sign-in refused by the directory");
            return None;
        }
    };
    if user.permissions.is_empty() {
        tracing::info!(user = %name, "admin sign-in refused: the directory groups give no admin permission");
        return None;
    }
    Some(Checked::Directory(Session {
        user: name,
        display_name: user.display_name,
        permissions: user.permissions,
        csrf: random_token()?,
        generation: 0,
        must_enrol: false,
        source: SignInSource::Directory,
    }))
}

/// `POST /login`: checks the login token, reserves a place within the rate limits
/// (a check in flight counts), checks the password (refused as busy beyond the
/// password-check pool's bound: 503 with Retry-After), then starts a session.
pub async fn login(
    State(state): State<Arc<WebState>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let address: IpAddr = peer.ip();
    let next = safe_next(form.next.as_deref()).to_owned();
    let fresh = random_token().unwrap_or_default();
    let again = |status: StatusCode, problem: &str| {
        (
            status,
            [(header::SET_COOKIE, state.cookie(LOGIN_COOKIE, &fresh))],
            login_form(&fresh, &next, &form.user, Some(problem)),
        )
            .into_response()
    };
    let cookie_token = cookie_value(&headers, LOGIN_COOKIE).unwrap_or_default();
    if form.login_token.is_empty() || !session::same_secret(cookie_token, &form.login_token) {
        return again(
            StatusCode::FORBIDDEN,
            "The sign-in form expired or did not come from SafeGate. Please try again.",
        );
    }
    let retry_after = |mut response: Response, seconds: u64| {
        if let Ok(value) = seconds.max(1).to_string().parse() {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    };
    let reservation = match state.limiter.reserve(address, &form.user) {
        Ok(reservation) => reservation,
        Err(wait) => {
            let response = again(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many failed sign-ins. Wait a few minutes and try again.",
            );
            return retry_after(response, wait.as_secs());
        }
    };
    let Ok(checked) = check_password(&state, &form.user, form.password.clone()).await else {
        // Dropping the reservation gives its place back: nothing was checked.
        tracing::warn!(%address, "admin sign-in refused: too many password checks waiting");
        let response = again(
            StatusCode::SERVICE_UNAVAILABLE,
            "SafeGate is busy checking passwords. Wait a moment and try again.",
        );
        return retry_after(response, 1);
    };
    let user = match checked {
        Some(Checked::Local(user)) => Some(user),
        Some(Checked::Directory(session)) => {
            reservation.succeeded();
            tracing::info!(user = %session.user, %address, "admin sign-in accepted by the directory");
            return crate::ui::two_factor::start_checked_session(&state, session, &next);
        }
        None => None,
    };
    let Some(user) = user else {
        reservation.failed();
        tracing::warn!(user = %form.user, %address, "admin sign-in failed");
        return again(
            StatusCode::UNAUTHORIZED,
            "Wrong user name or password, or this account may not use the admin pages.",
        );
    };
    reservation.succeeded();
    let two_factor = crate::ui::two_factor::record_of(&state, &user.name).await;
    if two_factor.as_ref().is_some_and(|record| record.enabled) {
        // The password was right: now the code.
        let Some(token) = state.pending_sign_ins.start(&user.name, &next) else {
            return refusal(
                false,
                StatusCode::SERVICE_UNAVAILABLE,
                "no randomness available",
            );
        };
        let mut response = crate::ui::two_factor::code_form(None).into_response();
        let headers = response.headers_mut();
        headers.append(
            header::SET_COOKIE,
            state.cookie(crate::ui::two_factor::CODE_COOKIE, &token),
        );
        headers.append(header::SET_COOKIE, state.cookie(LOGIN_COOKIE, ""));
        return response;
    }
    let must_enrol =
        state.settings.require_2fa && crate::ui::two_factor::required_for(&user.permissions);
    tracing::info!(user = %user.name, %address, "admin password accepted");
    crate::ui::two_factor::start_session(&state, &user, &next, must_enrol)
}

fn end_session(state: &WebState, headers: &HeaderMap) {
    if let Some(id) = cookie_value(headers, SESSION_COOKIE) {
        state.sessions.end(id);
    }
}

/// `POST /logout`.
pub async fn logout(State(state): State<Arc<WebState>>, headers: HeaderMap) -> Response {
    end_session(&state, &headers);
    (
        [(header::SET_COOKIE, state.cookie(SESSION_COOKIE, ""))],
        Redirect::to("/login"),
    )
        .into_response()
}

/// `POST /api/logout`.
pub async fn api_logout(State(state): State<Arc<WebState>>, headers: HeaderMap) -> Response {
    end_session(&state, &headers);
    (
        [(header::SET_COOKIE, state.cookie(SESSION_COOKIE, ""))],
        Json(serde_json::json!({ "signed_out": true })),
    )
        .into_response()
}

/// `GET /`: the dashboard (what this user may see of it), then what they can do here.
pub async fn home(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
) -> Markup {
    let store = state.store.clone();
    let tz = state.school_zone();
    let figures = tokio::task::spawn_blocking(move || {
        crate::ui::dashboard::gather(&store, &tz, jiff::Timestamp::now())
    })
    .await;
    let health = if session.may(Permission::Metrics) {
        state.health.health()
    } else {
        crate::ui::HealthFigures::default()
    };
    let dashboard = match figures {
        Ok(Ok(dashboard)) => Some(dashboard),
        Ok(Err(error)) => {
            tracing::error!(%error, "cannot read the dashboard's figures");
            None
        }
        Err(_) => None,
    };
    let shows_figures = session.may(Permission::Reports)
        || session.may(Permission::Rules)
        || session.may(Permission::Metrics);
    let cards = match &dashboard {
        Some(dashboard) if shows_figures => {
            crate::ui::dashboard::render(dashboard, &health, &session)
        }
        Some(_) => html! {},
        None => html! { p.bad { "The dashboard's figures cannot be read just now." } },
    };
    home_page(&session, cards)
}

/// The home page around the dashboard's `cards`.
fn home_page(session: &Session, cards: Markup) -> Markup {
    layout(
        "Home",
        Some(session),
        html! {
            p { "Signed in as " strong { (session.shown_name()) } " (" (session.user) ")." }
            (cards)
            h2 { "What you can do here" }
            ul {
                @if session.may(Permission::Rules) {
                    li { a href="/rules" { "Filtering rules" } ": categories, allow and deny lists, unblocks for a lesson, test a URL." }
                }
                @if session.may(Permission::Reports) {
                    li { a href="/alerts" { "Safeguarding alerts" } ": the queue, with evidence; acknowledge or close with a note." }
                    li { a href="/reports" { "Weekly reports" } ": the weekly sweep (HTML to read and print, CSV and JSON to download)." }
                    li { a href="/activity" { "One person's activity" } ": searches, sites visited and blocked attempts for a period (every view is recorded)." }
                }
                @if session.may(Permission::Metrics) {
                    li { a href="/health" { "Health" } ": listeners, policy, lists, database and visit-log queue." }
                }
                @if session.may(Permission::Users) {
                    li { a href="/accounts" { "Accounts" } ": who may use these pages, and how many pupil and staff accounts there are." }
                }
                @if session.may(Permission::Rules) || session.may(Permission::Reports) {
                    li { a href="/audit" { "Audit log" } ": policy changes, unblocks, alert handling and history views." }
                }
                @if session.permissions.is_empty() {
                    li { "Your account has no admin permission." }
                }
            }
        },
    )
}

/// `GET /api/session`: who is signed in, their permissions and the CSRF token for
/// API calls.
pub async fn api_session(Extension(session): Extension<Session>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "user": session.user,
        "display_name": session.display_name,
        "permissions": session.permissions.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
        "csrf": session.csrf,
    }))
}

/// `GET /health`: for technicians.
pub async fn health(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
) -> Markup {
    let figures = state.health.health();
    layout(
        "Health",
        Some(&session),
        html! {
            p {
                @if figures.ready { span.ok { "Ready" } } @else { span.bad { "NOT READY" } " " (figures.not_ready_because) }
                " · version " (figures.version)
            }
            h2 { "Listeners" }
            table { @for (name, address) in &figures.listeners { tr { th { (name) } td { (address) } } } }
            h2 { "Policy" }
            p { (figures.policy_state) }
            @if let Some(error) = &figures.last_reload_error { pre.bad { (error) } }
            table {
                tr { th { "Category" } th { "Entries" } }
                @for (name, entries) in &figures.list_sizes { tr { td { (name) } td { (entries) } } }
            }
            h2 { "Database and visit log" }
            table {
                tr { th { "Database on disk" } td { (safegate_store::plain_words::size_in_words(figures.store_bytes)) } }
                tr { th { "Records waiting to be written" } td { (figures.queue_depth) } }
                tr { th { "Records dropped since start" } td class=(if figures.dropped_records > 0 { "bad" } else { "ok" }) { (figures.dropped_records) } }
            }
        },
    )
}

/// `GET /api/health`.
pub async fn api_health(State(state): State<Arc<WebState>>) -> Json<crate::ui::HealthFigures> {
    Json(state.health.health())
}

/// `?from=` on the audit pages.
#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    from: Option<u64>,
}

/// `GET /audit`: entries (oldest first from `from`, by default the latest page) and
/// whether the chain is intact.
pub async fn audit(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
    Query(query): Query<AuditQuery>,
) -> Response {
    let store = state.store.clone();
    let found = tokio::task::spawn_blocking(move || {
        let verification = store.verify_audit()?;
        let total = match &verification {
            AuditVerification::Intact { entries, .. } => *entries,
            AuditVerification::Broken { .. } => u64::MAX,
        };
        let from = query
            .from
            .unwrap_or_else(|| total.saturating_sub(AUDIT_PAGE as u64 - 1).max(1));
        Ok::<_, safegate_store::StoreError>((verification, store.audit_entries(from, AUDIT_PAGE)?))
    })
    .await;
    let (verification, entries) = match found {
        Ok(Ok(found)) => found,
        Ok(Err(err)) => {
            return refusal(
                false,
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot read the audit log: {err}"),
            );
        }
        Err(_) => {
            return refusal(
                false,
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot read the audit log",
            );
        }
    };
    layout(
        "Audit log",
        Some(&session),
        html! {
            @match &verification {
                AuditVerification::Intact { entries, head_hash } => {
                    p.ok { "Chain intact: " (entries) " entries." }
                    p { "Head: " code { "#" (entries) " " (safegate_store::audit_hash_hex(head_hash)) } " — note it outside this server; "
                        code { "safegate audit verify --noted-head" } " later proves no newer entry was removed." }
                },
                AuditVerification::Broken { sequence, reason } => p.bad { "AUDIT LOG ALTERED at entry #" (sequence) ": " (reason) },
            }
            p { "Newest first." }
            table.audit {
                tr { th { "#" } th { "When (UTC)" } th { "Who" } th { "What" } th { "Subject" } th { "Change" } th { "Why" } }
                @for entry in entries.iter().rev() {
                    tr {
                        td { (entry.sequence) }
                        td { (utc_text(entry.at_unix_micros)) }
                        td { (entry.actor) }
                        td { (entry.action.as_str()) }
                        td { (entry.subject) }
                        td { pre { (entry.detail) } }
                        td { (entry.reason.as_deref().unwrap_or("")) }
                    }
                }
            }
        },
    )
    .into_response()
}

/// `GET /api/audit`.
pub async fn api_audit(
    State(state): State<Arc<WebState>>,
    Query(query): Query<AuditQuery>,
) -> Response {
    let store = state.store.clone();
    let from = query.from.unwrap_or(1);
    match tokio::task::spawn_blocking(move || store.audit_entries(from, AUDIT_PAGE)).await {
        Ok(Ok(entries)) => Json(entries).into_response(),
        _ => refusal(
            true,
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot read the audit log",
        ),
    }
}

/// Unix microseconds as `Mon 2026-11-23 10:00` in `tz` (the school's time zone).
pub(crate) fn local_time(micros: u64, tz: &jiff::tz::TimeZone) -> String {
    i64::try_from(micros)
        .ok()
        .and_then(|m| jiff::Timestamp::from_microsecond(m).ok())
        .map_or_else(String::new, |at| {
            at.to_zoned_datetime(tz.clone())
                .strftime("%a %Y-%m-%d %H:%M")
                .to_string()
        })
}

/// Unix microseconds as `2026-11-23 10:00:05`, UTC.
fn utc_text(micros: u64) -> String {
    i64::try_from(micros)
        .ok()
        .and_then(|micros| jiff::Timestamp::from_microsecond(micros).ok())
        .map_or_else(
            || format!("@{micros}us"),
            |at| at.strftime("%Y-%m-%d %H:%M:%S").to_string(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_local_only() {
        assert_eq!(safe_next(Some("/audit?from=3")), "/audit?from=3");
        for bad in [
            "//evil.test/",
            "https://evil.test/",
            "/\\evil",
            "/login",
            "audit",
            "/\t/evil.example/",
            "/\n/evil.example/",
            "/\r\n/evil.example/",
            "/ /evil.example/",
            "/\u{0b}/evil.example/",
            "/\u{2028}/evil.example/",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc_text(0), "1970-01-01 00:00:00");
        assert_eq!(utc_text(1_795_428_005_000_000), "2026-11-23 10:00:05");
        assert_eq!(utc_text(951_782_400_000_000), "2000-02-29 00:00:00");
    }
}
