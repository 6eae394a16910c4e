//! Review requests sent from block pages, for filter admins (`rules`). Approving
//! offers who (the person who asked, their group, their whole role), how long (this
//! lesson, today, this week, or until removed) and the narrowest rule that unblocks
//! the address (its exact host, not the parent domain), defaulting to the asker's
//! group for today. A rule for one page of an HTTPS site that SafeGate does not
//! decrypt could never apply: the page offers to decrypt that host too, or refuses
//! with the reason. Each approval is a checked, audited policy edit (an unblock, or
//! an allow-list entry when permanent); a decline needs a reason, which the asker
//! sees on the block page. The queue shows when each request was made.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use jiff::Timestamp;
use maud::{Markup, html};
use safegate_policy::{RequestTarget, Snapshot};
use safegate_store::{AuditAction, NewAuditEntry, ReviewDecision, ReviewEntry, Store};
use serde::Deserialize;

use crate::ui::choices::people;
use crate::ui::pages::{layout, url_encode};
use crate::ui::policy_edit::{Edit, NewUnblock, Scope};
use crate::ui::rules::{all_users, apply_change, edit_status, now_micros};
use crate::ui::{Session, WebState, confirm, refusal, site_words};

/// Requests shown on one page.
const PAGE: usize = 200;

/// Counts the waiting requests again (at most [`PAGE`]) for the menu.
pub(crate) async fn recount(store: &Store) {
    let store = store.clone();
    if let Ok(Ok(entries)) =
        tokio::task::spawn_blocking(move || store.reviews_with_decisions(PAGE, true)).await
    {
        crate::ui::set_waiting_reviews(entries.len() as u64);
    }
}

/// The site a review request's URL names (its exact host), the narrowest entry that
/// unblocks it.
fn site_of(url: &str) -> String {
    RequestTarget::parse_url(url)
        .map(|target| target.host.as_str().to_owned())
        .unwrap_or_default()
}

async fn load(state: &WebState, pending_only: bool) -> Result<Vec<ReviewEntry>, String> {
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || store.reviews_with_decisions(PAGE, pending_only))
        .await
        .map_err(|_| "cannot read the review requests".to_owned())?
        .map_err(|err| format!("cannot read the review requests: {err}"))
}

/// `?done=` / `?error=` / `?all=`.
#[derive(Debug, Default, Deserialize)]
pub struct ReviewsQuery {
    done: Option<String>,
    error: Option<String>,
    all: Option<bool>,
    /// A refused approval's request, and what was typed in its form.
    key: Option<String>,
    entry: Option<String>,
    who: Option<String>,
    duration: Option<String>,
    reason: Option<String>,
}

/// When a request was made, in school time.
fn made_at(at_unix_nanos: u64, tz: &jiff::tz::TimeZone) -> String {
    i64::try_from(at_unix_nanos)
        .ok()
        .and_then(|nanos| Timestamp::from_nanosecond(i128::from(nanos)).ok())
        .map(|at| {
            at.to_zoned_datetime(tz.clone())
                .strftime("%a %-d %b %Y, %H:%M")
                .to_string()
        })
        .unwrap_or_default()
}

/// `GET /rules/reviews`.
pub async fn reviews_page(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
    Query(query): Query<ReviewsQuery>,
) -> Response {
    let show_all = query.all.unwrap_or(false);
    let entries = match load(&state, !show_all).await {
        Ok(entries) => entries,
        Err(problem) => return refusal(false, StatusCode::INTERNAL_SERVER_ERROR, &problem),
    };
    recount(&state.store).await;
    let version = match state.policy.as_ref().map(|p| p.file.read()) {
        Some(Ok((_, version))) => version,
        _ => String::new(),
    };
    let snapshot = state.policy.as_ref().map(|p| p.live.load_full());
    let users = all_users(&state).await;
    let tz = state.school_zone();
    layout(
        "Review requests",
        Some(&session),
        html! {
            @if let Some(done) = &query.done { p.ok { (done) } }
            @if let Some(error) = query.error.as_ref().filter(|_| query.key.is_none()) { p.bad role="alert" { (error) } }
            p {
                @if show_all { a href="/rules/reviews" { "Show waiting requests only" } }
                @else { a href="/rules/reviews?all=true" { "Show decided requests too" } }
            }
            @if entries.is_empty() { p { "No review requests are waiting." } }
            @for entry in &entries {
                @let request = &entry.request;
                @let group = request.user.as_deref().and_then(|u| users.iter().find(|x| x.name == u)).and_then(|u| u.group.clone());
                section {
                    h3 { (request.url) }
                    p {
                        "Asked " (made_at(request.at_unix_nanos, &tz)) " by " (request.user.as_deref().unwrap_or("an unidentified computer"))
                        " (" (request.role) @if let Some(group) = &group { ", " (group) } ", " (request.client) ")"
                        @if !request.categories.is_empty() { ", blocked as " (request.categories.join(", ")) }
                    }
                    @if !request.comment.is_empty() { blockquote { (request.comment) } }
                    @match &entry.decision {
                        Some(decision) => p class=(if decision.approved { "ok" } else { "bad" }) {
                            (if decision.approved { "Approved" } else { "Declined" }) " by " (decision.by)
                            @if let Some(allowed) = &decision.allowed { " (allowed " (allowed) ")" }
                            @if !decision.reason.is_empty() { ": " (decision.reason) }
                        },
                        None => (decide_forms(entry, group.as_deref(), snapshot.as_deref(), (&session.csrf, &version), Some(&query).filter(|q| q.key.as_deref() == Some(entry.key.as_str())))),
                    }
                }
            }
        },
    )
    .into_response()
}

/// The approve and decline forms of one waiting request.
fn decide_forms(
    entry: &ReviewEntry,
    group: Option<&str>,
    snapshot: Option<&Snapshot>,
    (csrf, version): (&str, &str),
    typed: Option<&ReviewsQuery>,
) -> Markup {
    let request = &entry.request;
    let host = site_of(&request.url);
    let entry_value = typed
        .and_then(|t| t.entry.clone())
        .unwrap_or_else(|| host.clone());
    let duration = typed.and_then(|t| t.duration.as_deref()).unwrap_or("today");
    let lesson = snapshot.map_or(60, |s| s.teaching().lesson_minutes);
    let typed_who = typed
        .and_then(|t| t.who.as_deref())
        .filter(|w| !w.is_empty());
    let default_who = match (typed_who, group, &request.user) {
        (Some(who), _, _) => who,
        (None, Some(_), _) => "group",
        (None, None, Some(_)) => "user",
        (None, None, None) => "role",
    };
    let https = request.url.starts_with("https://");
    let decrypted = snapshot.map(|s| decrypt_answer(s, &host));
    html! {
        @if let Some(error) = typed.and_then(|t| t.error.as_deref()) {
            p.bad role="alert" { "Not approved: " (error) }
        }
        form method="post" action="/rules/reviews/decide" {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="version" value=(version);
            input type="hidden" name="key" value=(entry.key);
            input type="hidden" name="decision" value="approve";
            label { "Allow " input name="entry" value=(entry_value) size="40"; }
            label { "for "
                select name="who" {
                    @if let Some(user) = &request.user { option value="user" selected[default_who == "user"] { "only " (user) } }
                    @if let Some(group) = group { option value="group" selected[default_who == "group"] { "their group, " (group) } }
                    option value="role" selected[default_who == "role"] { "all " (people(&request.role)) }
                }
            }
            label { "how long "
                select name="duration" {
                    option value="lesson" selected[duration == "lesson"] { "this lesson (" (lesson) " minutes)" }
                    option value="today" selected[duration == "today"] { "today" }
                    option value="week" selected[duration == "week"] { "this week" }
                    option value="permanent" selected[duration == "permanent"] { "until removed" }
                }
            }
            @if https {
                @match decrypted {
                    Some(Ok(true)) => {},
                    Some(Ok(false)) => label { input type="checkbox" name="decrypt" value="yes"; " decrypt " (host) " so that a rule for one page (" code { (host) "/page" } ") can apply: without it, only the whole site can be allowed over HTTPS" },
                    Some(Err(why)) => p { "Only the whole site can be allowed: " (why) },
                    None => {},
                }
            }
            label { "Note " input name="reason" placeholder="optional" value=(typed.and_then(|t| t.reason.as_deref()).unwrap_or("")); }
            button type="submit" { "Approve" }
        }
        form method="post" action="/rules/reviews/decide" {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="key" value=(entry.key);
            input type="hidden" name="decision" value="reject";
            label { "Reason (the person who asked sees it) " input name="reason" required; }
            button type="submit" { "Decline" }
        }
    }
}

/// Whether `host` is decrypted (`Ok(true)`), could be (`Ok(false)`), or never is
/// (`Err(why)`).
fn decrypt_answer(snapshot: &Snapshot, host: &str) -> Result<bool, String> {
    let Ok(target) = RequestTarget::parse_url(&format!("https://{host}/")) else {
        return Ok(false);
    };
    let answer = snapshot.decrypt(&target);
    if answer.rule.starts_with("never") {
        Err(format!(
            "{host} is never decrypted ({}), so SafeGate cannot see its pages",
            answer.reason
        ))
    } else {
        Ok(answer.decrypt)
    }
}

/// `GET /api/rules/reviews`: waiting requests (or all with `?all=true`).
pub async fn reviews_api(
    State(state): State<Arc<WebState>>,
    Query(query): Query<ReviewsQuery>,
) -> Response {
    match load(&state, !query.all.unwrap_or(false)).await {
        Ok(entries) => Json(entries).into_response(),
        Err(problem) => refusal(true, StatusCode::INTERNAL_SERVER_ERROR, &problem),
    }
}

/// The decision form (and JSON body).
#[derive(Debug, Deserialize)]
pub struct DecideForm {
    key: String,
    /// `approve` or `reject`.
    decision: String,
    /// The policy version, for an approval.
    version: Option<String>,
    /// What to allow (approval).
    entry: Option<String>,
    /// For whom: `user`, `group` or `role` (the asker's).
    who: Option<String>,
    /// How long: `lesson`, `today`, `week` or `permanent`.
    duration: Option<String>,
    /// `yes`: also decrypt the host, so that a rule for one page can apply.
    decrypt: Option<String>,
    /// For whom, as a role or role/group (the JSON API before `who`): permanent.
    scope: Option<String>,
    /// Why (required to reject).
    reason: Option<String>,
    /// `yes` once a wide approval was confirmed.
    confirmed: Option<String>,
}

enum Outcome {
    Done(String),
    Failed(StatusCode, String),
    /// A wide approval waiting for confirmation: the page to show.
    Confirm(Response),
}

fn failed(status: StatusCode, message: impl Into<String>) -> Outcome {
    Outcome::Failed(status, message.into())
}

/// The change an approval makes, and the words for what it allowed.
struct Approval {
    change: Edit,
    allowed: String,
    /// "for 60 minutes", "until removed", for the confirmation.
    duration: String,
    /// A host to decrypt first.
    decrypt: Option<String>,
}

/// When an approval of `duration` ends, school time (`None`: permanent).
fn until_of(
    duration: &str,
    lesson_minutes: u32,
    tz: &jiff::tz::TimeZone,
) -> Result<Option<(String, String)>, String> {
    let now = Timestamp::now().to_zoned_datetime(tz.clone());
    let end = match duration {
        "permanent" => return Ok(None),
        "lesson" => now.checked_add(jiff::SignedDuration::from_mins(i64::from(lesson_minutes))),
        "today" => now.date().at(23, 59, 0, 0).to_zoned_datetime(tz.clone()),
        "week" => {
            let days = i64::from(7 - now.weekday().to_monday_one_offset());
            now.date()
                .checked_add(jiff::Span::new().days(days))
                .and_then(|d| d.at(23, 59, 0, 0).to_zoned_datetime(tz.clone()))
        }
        _ => return Err("choose how long: this lesson, today, this week or until removed".into()),
    }
    .map_err(|_| "that date is out of range".to_owned())?;
    // Late in the day "today" is over: at least a lesson.
    let end = if end.timestamp() <= now.timestamp() {
        now.checked_add(jiff::SignedDuration::from_mins(i64::from(lesson_minutes)))
            .map_err(|_| "that date is out of range".to_owned())?
    } else {
        end
    };
    let text = |at: &jiff::ZonedDateTime| at.strftime("%Y-%m-%d %H:%M").to_string();
    Ok(Some((text(&now), text(&end))))
}

/// What approving `request` as the form asks would change, or why it cannot.
fn approval(
    form: &DecideForm,
    request: &safegate_store::ReviewRequest,
    group: Option<&str>,
    snapshot: &Snapshot,
    granted_by: &str,
) -> Result<Approval, String> {
    let entry = site_words::check_site(form.entry.as_deref().unwrap_or_default())?;
    let (host, path) = entry.split_once('/').unwrap_or((entry.as_str(), ""));
    let mut decrypt = None;
    if !path.is_empty() && request.url.starts_with("https://") {
        match decrypt_answer(snapshot, host) {
            Ok(true) => {}
            Ok(false) if form.decrypt.as_deref() == Some("yes") => decrypt = Some(host.to_owned()),
            Ok(false) => {
                return Err(format!(
                    "a rule for one page of {host} cannot apply over HTTPS while SafeGate does not decrypt {host}: allow the whole site, or tick \"decrypt {host}\""
                ));
            }
            Err(why) => return Err(format!("{why}: allow the whole site {host}, or decline")),
        }
    }
    let role = request.role.clone();
    let (scope, user) = match (form.who.as_deref(), form.scope.as_deref()) {
        (None, Some(scope)) => (
            Scope::parse(scope).ok_or("choose who to allow it for")?,
            None,
        ),
        (Some("role"), _) => (Scope::Role(role), None),
        (Some("group"), _) => (
            Scope::Group(
                role,
                group
                    .ok_or("the person who asked is in no group")?
                    .to_owned(),
            ),
            None,
        ),
        (Some("user"), _) => (
            Scope::Role(role),
            Some(
                request
                    .user
                    .clone()
                    .ok_or("the computer that asked was not signed in")?,
            ),
        ),
        _ => return Err("choose who to allow it for".to_owned()),
    };
    let who_text = user.clone().unwrap_or_else(|| match &scope {
        Scope::Group(_, group) => group.clone(),
        other => format!("all {}", people(&other.text())),
    });
    let duration = form.duration.as_deref().unwrap_or("permanent");
    match until_of(duration, snapshot.teaching().lesson_minutes, snapshot.timezone())? {
        None if user.is_some() => Err(
            "an approval for one person is for this lesson, today or this week; choose their group or role to allow it until removed".to_owned(),
        ),
        None => Ok(Approval {
            change: Edit::AddListEntry {
                scope,
                deny: false,
                entry: entry.clone(),
            },
            allowed: format!("{entry} for {who_text} until removed"),
            duration: "until removed".to_owned(),
            decrypt,
        }),
        Some((from, until)) => Ok(Approval {
            allowed: format!("{entry} for {who_text} until {until}"),
            change: Edit::AddUnblock(NewUnblock {
                site: Some(entry.clone()),
                category: None,
                focus: Vec::new(),
                scope,
                user,
                from,
                until: until.clone(),
                reason: format!("review request for {}", request.url),
                granted_by: granted_by.to_owned(),
            }),
            duration: format!("until {until}"),
            decrypt,
        }),
    }
}

async fn decide(state: &WebState, session: &Session, form: DecideForm) -> Outcome {
    let store = state.store.clone();
    let key = form.key.clone();
    let entry = match tokio::task::spawn_blocking(move || store.review(&key)).await {
        Ok(Ok(Some(entry))) => entry,
        Ok(Ok(None)) => return failed(StatusCode::NOT_FOUND, "there is no such review request"),
        _ => {
            return failed(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot read the review request",
            );
        }
    };
    if entry.decision.is_some() {
        return failed(StatusCode::CONFLICT, "this request was decided already");
    }
    let reason = form.reason.clone().unwrap_or_default().trim().to_owned();
    let (approved, allowed) = match form.decision.as_str() {
        "approve" => match approve(state, session, &form, &entry, &reason).await {
            Ok(allowed) => (true, Some(allowed)),
            Err(outcome) => return outcome,
        },
        "reject" if reason.is_empty() => {
            return failed(
                StatusCode::BAD_REQUEST,
                "give a reason for declining: the person who asked sees it",
            );
        }
        "reject" => (false, None),
        _ => return failed(StatusCode::BAD_REQUEST, "approve or decline"),
    };
    record(
        state,
        session,
        &form.key,
        &entry,
        (approved, allowed, reason),
    )
    .await
}

/// Makes the policy change of an approval (after confirmation when it is wide);
/// what it allowed, in words.
async fn approve(
    state: &WebState,
    session: &Session,
    form: &DecideForm,
    entry: &ReviewEntry,
    reason: &str,
) -> Result<String, Outcome> {
    let Some(policy) = state.policy.as_ref() else {
        return Err(failed(
            StatusCode::SERVICE_UNAVAILABLE,
            "the policy cannot be edited here",
        ));
    };
    let snapshot = policy.live.load_full();
    let users = all_users(state).await;
    let group = entry
        .request
        .user
        .as_deref()
        .and_then(|name| users.iter().find(|u| u.name == name))
        .and_then(|u| u.group.clone());
    let plan = approval(
        form,
        &entry.request,
        group.as_deref(),
        &snapshot,
        &session.user,
    )
    .map_err(|why| failed(StatusCode::UNPROCESSABLE_ENTITY, why))?;
    if !confirm::is_confirmed(form.confirmed.as_deref())
        && form.who.is_some()
        && let Some(effect) = confirm::effect(&plan.change, &users, &plan.duration)
    {
        let fields = [
            ("key", form.key.clone()),
            ("decision", "approve".to_owned()),
            ("version", form.version.clone().unwrap_or_default()),
            ("entry", form.entry.clone().unwrap_or_default()),
            ("who", form.who.clone().unwrap_or_default()),
            ("duration", form.duration.clone().unwrap_or_default()),
            ("decrypt", form.decrypt.clone().unwrap_or_default()),
            ("reason", reason.to_owned()),
        ];
        let page = confirm::page(
            session,
            "/rules/reviews/decide",
            "/rules/reviews",
            &effect,
            &fields,
        );
        return Err(Outcome::Confirm(page.into_response()));
    }
    let why = Some(if reason.is_empty() {
        format!("review request for {}", entry.request.url)
    } else {
        format!("review request for {}: {reason}", entry.request.url)
    });
    let mut version = form.version.clone().unwrap_or_default();
    if let Some(host) = plan.decrypt {
        let applied = apply_change(
            state,
            session,
            version,
            Edit::AddDecryptSite(host),
            why.clone(),
        )
        .await
        .map_err(|err| failed(edit_status(&err), err.to_string()))?;
        version = applied.version;
    }
    apply_change(state, session, version, plan.change, why)
        .await
        .map_err(|err| failed(edit_status(&err), err.to_string()))?;
    Ok(plan.allowed)
}

/// Stores the decision with the request and audits it.
async fn record(
    state: &WebState,
    session: &Session,
    key: &str,
    entry: &ReviewEntry,
    (approved, allowed, reason): (bool, Option<String>, String),
) -> Outcome {
    let decision = ReviewDecision {
        approved,
        by: session.user.clone(),
        at_unix_micros: now_micros(),
        reason: reason.clone(),
        allowed: allowed.clone(),
    };
    let store = state.store.clone();
    let key = key.to_owned();
    let url = entry.request.url.clone();
    let audit = NewAuditEntry {
        at_unix_micros: decision.at_unix_micros,
        actor: session.user.clone(),
        action: AuditAction::ReviewDecision,
        subject: url.clone(),
        detail: match &allowed {
            Some(allowed) => format!("approved: allowed {allowed}"),
            None => "declined".to_owned(),
        },
        reason: (!reason.is_empty()).then(|| reason.clone()),
    };
    let recorded = tokio::task::spawn_blocking(move || {
        let decided = store.decide_review(&key, &decision)?;
        if decided {
            store.append_audit(audit)?;
        }
        Ok::<_, safegate_store::StoreError>(decided)
    })
    .await;
    recount(&state.store).await;
    match recorded {
        Ok(Ok(true)) => Outcome::Done(match &allowed {
            Some(allowed) => format!("Approved the request for {url}: allowed {allowed}"),
            None => format!("Declined the request for {url}"),
        }),
        Ok(Ok(false)) => failed(StatusCode::CONFLICT, "this request was decided already"),
        _ => failed(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot record the decision",
        ),
    }
}

/// `POST /rules/reviews/decide`.
pub async fn decide_form(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
    Form(form): Form<DecideForm>,
) -> Response {
    // A refused approval comes back with what was typed in its form.
    let typed = if form.decision == "approve" {
        [
            ("key", form.key.clone()),
            ("entry", form.entry.clone().unwrap_or_default()),
            ("who", form.who.clone().unwrap_or_default()),
            ("duration", form.duration.clone().unwrap_or_default()),
            ("reason", form.reason.clone().unwrap_or_default()),
        ]
        .iter()
        .map(|(k, v)| format!("&{k}={}", url_encode(v)))
        .collect::<String>()
    } else {
        String::new()
    };
    match decide(&state, &session, form).await {
        Outcome::Done(message) => {
            Redirect::to(&format!("/rules/reviews?done={}", url_encode(&message))).into_response()
        }
        Outcome::Failed(_, message) => Redirect::to(&format!(
            "/rules/reviews?error={}{typed}",
            url_encode(&message)
        ))
        .into_response(),
        Outcome::Confirm(page) => page,
    }
}

/// `POST /api/rules/reviews/decide` (JSON).
pub async fn decide_api(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
    Json(form): Json<DecideForm>,
) -> Response {
    match decide(&state, &session, form).await {
        Outcome::Done(message) => Json(serde_json::json!({ "done": message })).into_response(),
        Outcome::Failed(status, message) => refusal(true, status, &message),
        Outcome::Confirm(page) => page,
    }
}
