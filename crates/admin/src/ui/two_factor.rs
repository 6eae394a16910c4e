//! Two-factor sign-in for admin accounts: time-based one-time codes (TOTP, RFC 6238:
//! HMAC-SHA1, 30-second steps, 6 digits, one step of clock drift either way), as made
//! by any authenticator app. Enrolment shows the secret as a QR code drawn here (SVG,
//! no outside service) and as text, asks for one code to prove the app has it, then
//! shows ten recovery codes once (stored only as hashes; each works once). With
//! `[admin] require_2fa = true`, an account with the `rules` or `users` permission
//! can do nothing but enrol until it has. Every code check goes through the sign-in
//! rate limiter, and a code's time step is accepted once (no replay).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, Extension, Form, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use blake2::Blake2b;
use blake2::digest::Digest as _;
use blake2::digest::consts::U16;
use maud::{Markup, PreEscaped, html};
use safegate_store::{Permission, TwoFactor};
use serde::Deserialize;
use sha1::Digest as _;
use sha1::Sha1;
use subtle::ConstantTimeEq;

use crate::ui::page_frame::layout;
use crate::ui::session::{LOGIN_COOKIE, SESSION_COOKIE, random_token};
use crate::ui::{Session, WebState, cookie_value, refusal};

/// The cookie naming a sign-in that waits for its code.
pub const CODE_COOKIE: &str = "safegate_code";

/// How long a password-checked sign-in waits for its code.
const CODE_WAIT: Duration = Duration::from_secs(5 * 60);

/// Seconds per TOTP step.
const STEP: u64 = 30;

/// HMAC-SHA1 (RFC 2104) of `message` under `key`.
fn hmac_sha1(key: &[u8], message: &[u8]) -> [u8; 20] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..20].copy_from_slice(&Sha1::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha1::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let inner = inner.finalize();
    let mut outer = Sha1::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().into()
}

/// The 6-digit code of time step `step` (RFC 4226 dynamic truncation).
pub fn code_at(secret: &[u8], step: u64) -> u32 {
    let hash = hmac_sha1(secret, &step.to_be_bytes());
    let offset = usize::from(hash[19] & 0x0f);
    let binary = (u32::from(hash[offset]) & 0x7f) << 24
        | u32::from(hash[offset + 1]) << 16
        | u32::from(hash[offset + 2]) << 8
        | u32::from(hash[offset + 3]);
    binary % 1_000_000
}

/// The time step now.
fn step_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / STEP)
}

/// The step whose code `code` is, within one step of `now` and after `last_step`.
pub fn check_code(secret: &[u8], code: &str, now: u64, last_step: u64) -> Option<u64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut found = None;
    for step in [now.saturating_sub(1), now, now + 1] {
        let expected = format!("{:06}", code_at(secret, step));
        if step > last_step && bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
            found = Some(step);
        }
    }
    found
}

/// RFC 4648 base32 without padding: how authenticator apps take the secret.
pub fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// A recovery code's stored form.
fn recovery_hash(code: &str) -> String {
    let normal: String = code
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    Blake2b::<U16>::digest(normal.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The account's record after accepting `code` (a TOTP code or an unused recovery
/// code), or None when it is not right.
fn accept(record: &TwoFactor, code: &str) -> Option<TwoFactor> {
    if let Some(step) = check_code(&record.secret, code, step_now(), record.last_step) {
        return Some(TwoFactor {
            last_step: step,
            ..record.clone()
        });
    }
    let hash = recovery_hash(code);
    let position = record.recovery.iter().position(|h| *h == hash)?;
    let mut used = record.clone();
    used.recovery.remove(position);
    Some(used)
}

/// The otpauth address and its QR code as inline SVG.
fn qr_svg(user: &str, secret: &[u8]) -> String {
    let label: String = form_urlencoded::byte_serialize(format!("SafeGate:{user}").as_bytes())
        .collect::<String>()
        .replace('+', "%20");
    let uri = format!(
        "otpauth://totp/{label}?secret={}&issuer=SafeGate&digits=6&period=30",
        base32(secret)
    );
    match qrcode::QrCode::new(uri.as_bytes()) {
        Ok(code) => {
            let svg = code
                .render::<qrcode::render::svg::Color<'_>>()
                .min_dimensions(220, 220)
                .build();
            // Inline in the page: the XML declaration is not wanted there.
            svg.find("<svg")
                .map_or(svg.clone(), |at| svg[at..].to_owned())
        }
        Err(_) => String::new(),
    }
}

/// Sign-ins whose password was right, waiting for their code.
#[derive(Default)]
pub struct PendingSignIns {
    entries: Mutex<HashMap<String, (String, String, Instant)>>,
}

impl PendingSignIns {
    /// Remembers `user` (going to `next`); the token for the cookie.
    pub fn start(&self, user: &str, next: &str) -> Option<String> {
        let token = random_token()?;
        let mut entries = self.lock();
        entries.retain(|_, (_, _, at)| at.elapsed() < CODE_WAIT);
        entries.insert(
            token.clone(),
            (user.to_owned(), next.to_owned(), Instant::now()),
        );
        Some(token)
    }

    /// The user and destination of `token`, while it lasts.
    fn get(&self, token: &str) -> Option<(String, String)> {
        let entries = self.lock();
        entries
            .get(token)
            .filter(|(_, _, at)| at.elapsed() < CODE_WAIT)
            .map(|(user, next, _)| (user.clone(), next.clone()))
    }

    fn end(&self, token: &str) {
        self.lock().remove(token);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, String, Instant)>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Whether `permissions` make two-factor sign-in required when `require_2fa` is on.
pub fn required_for(permissions: &std::collections::BTreeSet<Permission>) -> bool {
    permissions.contains(&Permission::Rules) || permissions.contains(&Permission::Users)
}

/// The account's record, read on a blocking thread.
pub(crate) async fn record_of(state: &WebState, user: &str) -> Option<TwoFactor> {
    let store = state.store.clone();
    let user = user.to_owned();
    tokio::task::spawn_blocking(move || store.two_factor(&user))
        .await
        .ok()
        .and_then(Result::ok)
        .flatten()
}

/// Records turning two-factor sign-in on or off in the audit log.
async fn audit(state: &WebState, user: &str, detail: &str) {
    let store = state.store.clone();
    let entry = safegate_store::NewAuditEntry {
        at_unix_micros: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        actor: user.to_owned(),
        action: safegate_store::AuditAction::UserChange,
        subject: user.to_owned(),
        detail: detail.to_owned(),
        reason: None,
    };
    let recorded = tokio::task::spawn_blocking(move || store.append_audit(entry)).await;
    if !matches!(recorded, Ok(Ok(_))) {
        tracing::error!(%user, "the audit log could not record a two-factor change");
    }
}

async fn save(state: &WebState, user: &str, record: Option<TwoFactor>) -> bool {
    let store = state.store.clone();
    let user = user.to_owned();
    tokio::task::spawn_blocking(move || match record {
        Some(record) => store.set_two_factor(&user, &record),
        None => store.remove_two_factor(&user),
    })
    .await
    .is_ok_and(|saved| saved.is_ok())
}

/// The page asking for the code after a right password.
pub fn code_form(problem: Option<&str>) -> Markup {
    layout(
        "Sign in: code",
        None,
        html! {
            @if let Some(problem) = problem { p.bad role="alert" { (problem) } }
            p { "Type the 6-digit code your authenticator app shows for SafeGate, or one of your recovery codes." }
            form method="post" action="/login/code" {
                label { "Code " input name="code" autocomplete="one-time-code" inputmode="numeric" required autofocus; }
                button type="submit" { "Sign in" }
            }
        },
    )
}

/// The code form sent with `POST /login/code`.
#[derive(Debug, Deserialize)]
pub struct CodeForm {
    code: String,
}

/// `POST /login/code`: the second step of signing in.
pub async fn login_code(
    State(state): State<Arc<WebState>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<CodeForm>,
) -> Response {
    let address: IpAddr = peer.ip();
    let token = cookie_value(&headers, CODE_COOKIE)
        .unwrap_or_default()
        .to_owned();
    let Some((user, next)) = state.pending_sign_ins.get(&token) else {
        return Redirect::to("/login").into_response();
    };
    let Ok(reservation) = state.limiter.reserve(address, &user) else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            code_form(Some(
                "Too many wrong codes. Wait a few minutes and try again.",
            )),
        )
            .into_response();
    };
    let record = record_of(&state, &user).await.filter(|r| r.enabled);
    let accepted = record.as_ref().and_then(|r| accept(r, &form.code));
    let Some(accepted) = accepted else {
        reservation.failed();
        tracing::warn!(%user, %address, "admin sign-in code refused");
        return (
            StatusCode::UNAUTHORIZED,
            code_form(Some(
                "That code is not right. Codes change every 30 seconds.",
            )),
        )
            .into_response();
    };
    reservation.succeeded();
    if !save(&state, &user, Some(accepted)).await {
        return refusal(
            false,
            StatusCode::SERVICE_UNAVAILABLE,
            "cannot record the code",
        );
    }
    state.pending_sign_ins.end(&token);
    let Some(account) = state.store.get_user(&user).ok().flatten() else {
        return Redirect::to("/login").into_response();
    };
    let mut response = start_session(&state, &account, &next, false);
    response
        .headers_mut()
        .append(header::SET_COOKIE, state.cookie(CODE_COOKIE, ""));
    response
}
/// Starts a session for `user` and sends the browser on (to enrolment when
/// `must_enrol`).
pub(crate) fn start_session(
    state: &WebState,
    user: &safegate_store::users::User,
    next: &str,
    must_enrol: bool,
) -> Response {
    let Some(csrf) = random_token() else {
        return refusal(
            false,
            StatusCode::SERVICE_UNAVAILABLE,
            "no randomness available",
        );
    };
    let session = Session {
        user: user.name.clone(),
        display_name: user.display_name.clone(),
        permissions: user.permissions.clone(),
        csrf,
        generation: user.generation,
        must_enrol,
        source: crate::ui::session::SignInSource::Local,
    };
    let target = if must_enrol {
        "/account/two-factor"
    } else {
        next
    };
    start_checked_session(state, session, target)
}

/// Starts `session` (its sign-in checked) and sends the browser to `target`.
pub(crate) fn start_checked_session(state: &WebState, session: Session, target: &str) -> Response {
    let name = session.user.clone();
    let Some(id) = state.sessions.start(session) else {
        return refusal(
            false,
            StatusCode::SERVICE_UNAVAILABLE,
            "no randomness available",
        );
    };
    tracing::info!(user = %name, "admin signed in");
    let mut response = Redirect::to(target).into_response();
    let headers = response.headers_mut();
    headers.append(header::SET_COOKIE, state.cookie(SESSION_COOKIE, &id));
    headers.append(header::SET_COOKIE, state.cookie(LOGIN_COOKIE, ""));
    response
}

/// `GET /account/two-factor`: enrol (QR code, secret, one code) or see that it is on.
pub async fn two_factor_page(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
) -> Response {
    let record = match record_of(&state, &session.user).await {
        Some(record) => record,
        None => {
            let mut secret = vec![0u8; 20];
            if getrandom::fill(&mut secret).is_err() {
                return refusal(
                    false,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no randomness available",
                );
            }
            let record = TwoFactor {
                secret,
                enabled: false,
                recovery: Vec::new(),
                last_step: 0,
            };
            if !save(&state, &session.user, Some(record.clone())).await {
                return refusal(
                    false,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cannot store the secret",
                );
            }
            record
        }
    };
    page(&session, &record, None, state.settings.require_2fa).into_response()
}

fn page(session: &Session, record: &TwoFactor, problem: Option<&str>, required: bool) -> Markup {
    let secret = base32(&record.secret);
    let grouped: Vec<String> = secret
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    layout(
        "Two-factor sign-in",
        Some(session),
        html! {
            @if let Some(problem) = problem { p.bad role="alert" { (problem) } }
            @if record.enabled {
                p.ok { "Two-factor sign-in is on for your account. " (record.recovery.len()) " recovery codes are left." }
                @if !(required && required_for(&session.permissions)) {
                    form method="post" action="/account/two-factor/off" {
                        input type="hidden" name="csrf" value=(session.csrf);
                        label { "Code from your app " input name="code" autocomplete="one-time-code" required; }
                        button type="submit" { "Turn two-factor sign-in off" }
                    }
                }
            } @else {
                @if session.must_enrol { p.bad role="alert" { "Your account needs two-factor sign-in before you can use the admin pages." } }
                ol {
                    li { "Open an authenticator app on your phone (any app for time-based codes) and scan this code:" }
                }
                figure aria-label="QR code of the secret" { (PreEscaped(qr_svg(&session.user, &record.secret))) }
                p { "Or type this secret into the app: " code id="totp-secret" { (grouped.join(" ")) } }
                form method="post" action="/account/two-factor/enrol" {
                    input type="hidden" name="csrf" value=(session.csrf);
                    label { "Then type the 6-digit code the app shows " input name="code" autocomplete="one-time-code" inputmode="numeric" required; }
                    button type="submit" { "Turn on two-factor sign-in" }
                }
            }
        },
    )
}

/// `POST /account/two-factor/enrol`: the first code proves the app has the secret;
/// the recovery codes are shown once.
pub async fn enrol(
    State(state): State<Arc<WebState>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Extension(session): Extension<Session>,
    Form(form): Form<CodeForm>,
) -> Response {
    let Some(record) = record_of(&state, &session.user)
        .await
        .filter(|r| !r.enabled)
    else {
        return Redirect::to("/account/two-factor").into_response();
    };
    let Ok(reservation) = state.limiter.reserve(peer.ip(), &session.user) else {
        let problem = "Too many wrong codes. Wait a few minutes and try again.";
        let required = state.settings.require_2fa;
        return (
            StatusCode::TOO_MANY_REQUESTS,
            page(&session, &record, Some(problem), required),
        )
            .into_response();
    };
    let Some(step) = check_code(&record.secret, &form.code, step_now(), record.last_step) else {
        reservation.failed();
        let problem =
            "That code is not right: check the app's clock, and type the code it shows now.";
        let required = state.settings.require_2fa;
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            page(&session, &record, Some(problem), required),
        )
            .into_response();
    };
    reservation.succeeded();
    let mut codes = Vec::new();
    for _ in 0..10 {
        let Some(token) = random_token() else {
            return refusal(
                false,
                StatusCode::SERVICE_UNAVAILABLE,
                "no randomness available",
            );
        };
        let code: String = token
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(10)
            .map(|c| c.to_ascii_lowercase())
            .collect();
        codes.push(format!(
            "{}-{}",
            &code[..5.min(code.len())],
            &code[5.min(code.len())..]
        ));
    }
    let enabled = TwoFactor {
        enabled: true,
        last_step: step,
        recovery: codes.iter().map(|c| recovery_hash(c)).collect(),
        secret: record.secret,
    };
    if !save(&state, &session.user, Some(enabled)).await {
        return refusal(
            false,
            StatusCode::SERVICE_UNAVAILABLE,
            "cannot store the secret",
        );
    }
    if let Some(id) = cookie_value(&headers, SESSION_COOKIE) {
        state.sessions.enrolled(id);
    }
    tracing::info!(user = %session.user, "two-factor sign-in turned on");
    audit(&state, &session.user, "two-factor sign-in turned on").await;
    layout(
        "Two-factor sign-in is on",
        Some(&session),
        html! {
            p.ok { "Two-factor sign-in is on. From now on SafeGate asks for a code from your app after your password." }
            p { "Keep these recovery codes somewhere safe (printed, or in a password manager). Each one works once, instead of a code, if you lose your phone. They are not shown again." }
            ul #recovery-codes { @for code in &codes { li { code { (code) } } } }
            p { a href="/" { "Continue" } }
        },
    )
    .into_response()
}

/// `POST /account/two-factor/off` (not for accounts that must have it).
pub async fn turn_off(
    State(state): State<Arc<WebState>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Extension(session): Extension<Session>,
    Form(form): Form<CodeForm>,
) -> Response {
    if state.settings.require_2fa && required_for(&session.permissions) {
        return refusal(
            false,
            StatusCode::FORBIDDEN,
            "your account must keep two-factor sign-in",
        );
    }
    let Some(record) = record_of(&state, &session.user).await.filter(|r| r.enabled) else {
        return Redirect::to("/account/two-factor").into_response();
    };
    let Ok(reservation) = state.limiter.reserve(peer.ip(), &session.user) else {
        return refusal(
            false,
            StatusCode::TOO_MANY_REQUESTS,
            "too many wrong codes: wait a few minutes",
        );
    };
    if accept(&record, &form.code).is_none() {
        reservation.failed();
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            page(
                &session,
                &record,
                Some("That code is not right."),
                state.settings.require_2fa,
            ),
        )
            .into_response();
    }
    reservation.succeeded();
    if !save(&state, &session.user, None).await {
        return refusal(
            false,
            StatusCode::SERVICE_UNAVAILABLE,
            "cannot change the account",
        );
    }
    tracing::info!(user = %session.user, "two-factor sign-in turned off");
    audit(&state, &session.user, "two-factor sign-in turned off").await;
    Redirect::to("/account/two-factor").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_rfc_6238() {
        // RFC 6238 appendix B, SHA-1, truncated to 6 digits.
        let secret = b"12345678901234567890";
        assert_eq!(code_at(secret, 59 / 30), 287_082);
        assert_eq!(code_at(secret, 1_111_111_109 / 30), 81_804);
        assert_eq!(code_at(secret, 1_234_567_890 / 30), 5_924);
        assert_eq!(check_code(secret, "287 082", 1, 0), Some(1));
        assert_eq!(
            check_code(secret, "287082", 1, 1),
            None,
            "a step is used once"
        );
        assert_eq!(check_code(secret, "287083", 1, 0), None);
        assert_eq!(
            base32(b"12345678901234567890"),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
    }

    #[test]
    fn recovery_codes_work_once() {
        let record = TwoFactor {
            secret: b"12345678901234567890".to_vec(),
            enabled: true,
            recovery: vec![recovery_hash("abcde-fghij")],
            last_step: 0,
        };
        let used = accept(&record, "ABCDE FGHIJ").map(|r| r.recovery.len());
        assert_eq!(used, Some(0));
        assert!(qr_svg("ada", &record.secret).starts_with("<svg"));
    }
}
