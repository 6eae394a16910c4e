//! Review requests sent from block pages, for filter admins (`rules`): approve (the
//! site goes on the allow-list of the role that asked, through the same checked and
//! audited policy edit as any other change) or reject with a reason. Each decision is
//! stored with the request and recorded in the audit log.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use safegate_policy::RequestTarget;
use safegate_store::{AuditAction, NewAuditEntry, ReviewDecision, ReviewEntry};
use serde::Deserialize;

use crate::ui::pages::{layout, url_encode};
use crate::ui::policy_edit::{Edit, Scope};
use crate::ui::rules::{apply_change, edit_status, now_micros};
use crate::ui::{Session, WebState, refusal};

/// Requests shown on one page.
const PAGE: usize = 200;

/// The site a review request's URL names (its host), the natural allow-list entry.
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
    let version = match state.policy.as_ref().map(|p| p.file.read()) {
        Some(Ok((_, version))) => version,
        _ => String::new(),
    };
    layout(
        "Review requests",
        Some(&session),
        html! {
            @if let Some(done) = &query.done { p.ok { (done) } }
            @if let Some(error) = &query.error { p.bad { (error) } }
            p {
                @if show_all { a href="/rules/reviews" { "Show waiting requests only" } }
                @else { a href="/rules/reviews?all=true" { "Show decided requests too" } }
            }
            @if entries.is_empty() { p { "No review requests are waiting." } }
            @for entry in &entries {
                @let request = &entry.request;
                section {
                    h3 { (request.url) }
                    p {
                        "Asked by " (request.user.as_deref().unwrap_or("an unidentified computer"))
                        " (" (request.role) ", " (request.client) "), blocked by " code { (request.rule) }
                        @if !request.categories.is_empty() { " in " (request.categories.join(", ")) }
                    }
                    @if !request.comment.is_empty() { blockquote { (request.comment) } }
                    @match &entry.decision {
                        Some(decision) => p class=(if decision.approved { "ok" } else { "bad" }) {
                            (if decision.approved { "Approved" } else { "Rejected" }) " by " (decision.by)
                            @if let Some(allowed) = &decision.allowed { " (allowed " (allowed) ")" }
                            ": " (decision.reason)
                        },
                        None => {
                            form method="post" action="/rules/reviews/decide" {
                                input type="hidden" name="csrf" value=(session.csrf);
                                input type="hidden" name="version" value=(version);
                                input type="hidden" name="key" value=(entry.key);
                                input type="hidden" name="decision" value="approve";
                                label { "Allow " input name="entry" value=(site_of(&request.url)); }
                                label { "for " input name="scope" value=(request.role); }
                                label { "Note " input name="reason" placeholder="optional"; }
                                button type="submit" { "Approve" }
                            }
                            form method="post" action="/rules/reviews/decide" {
                                input type="hidden" name="csrf" value=(session.csrf);
                                input type="hidden" name="key" value=(entry.key);
                                input type="hidden" name="decision" value="reject";
                                label { "Reason " input name="reason" required; }
                                button type="submit" { "Reject" }
                            }
                        },
                    }
                }
            }
        },
    )
    .into_response()
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
    /// For whom (approval): a role or role/group.
    scope: Option<String>,
    /// Why (required to reject).
    reason: Option<String>,
}

enum Outcome {
    Done(String),
    Failed(StatusCode, String),
}

async fn decide(state: &WebState, session: &Session, form: DecideForm) -> Outcome {
    let store = state.store.clone();
    let key = form.key.clone();
    let entry = match tokio::task::spawn_blocking(move || store.review(&key)).await {
        Ok(Ok(Some(entry))) => entry,
        Ok(Ok(None)) => {
            return Outcome::Failed(
                StatusCode::NOT_FOUND,
                "there is no such review request".to_owned(),
            );
        }
        _ => {
            return Outcome::Failed(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot read the review request".to_owned(),
            );
        }
    };
    if entry.decision.is_some() {
        return Outcome::Failed(
            StatusCode::CONFLICT,
            "this request was decided already".to_owned(),
        );
    }
    let reason = form.reason.unwrap_or_default().trim().to_owned();
    let (approved, allowed) = match form.decision.as_str() {
        "approve" => {
            let Some(scope) = form.scope.as_deref().and_then(Scope::parse) else {
                return Outcome::Failed(
                    StatusCode::BAD_REQUEST,
                    "say which role or group to allow it for".to_owned(),
                );
            };
            let site = form.entry.unwrap_or_default().trim().to_owned();
            if site.is_empty() {
                return Outcome::Failed(StatusCode::BAD_REQUEST, "say what to allow".to_owned());
            }
            let change = Edit::AddListEntry {
                scope: scope.clone(),
                deny: false,
                entry: site.clone(),
            };
            let why = Some(if reason.is_empty() {
                format!("review request for {}", entry.request.url)
            } else {
                format!("review request for {}: {reason}", entry.request.url)
            });
            if let Err(err) = apply_change(
                state,
                session,
                form.version.unwrap_or_default(),
                change,
                why,
            )
            .await
            {
                return Outcome::Failed(edit_status(&err), err.to_string());
            }
            (true, Some(format!("{site} for {}", scope.text())))
        }
        "reject" => {
            if reason.is_empty() {
                return Outcome::Failed(
                    StatusCode::BAD_REQUEST,
                    "give a reason for the rejection".to_owned(),
                );
            }
            (false, None)
        }
        _ => return Outcome::Failed(StatusCode::BAD_REQUEST, "approve or reject".to_owned()),
    };
    let decision = ReviewDecision {
        approved,
        by: session.user.clone(),
        at_unix_micros: now_micros(),
        reason: reason.clone(),
        allowed: allowed.clone(),
    };
    let store = state.store.clone();
    let key = form.key.clone();
    let url = entry.request.url.clone();
    let audit = NewAuditEntry {
        at_unix_micros: decision.at_unix_micros,
        actor: session.user.clone(),
        action: AuditAction::ReviewDecision,
        subject: url.clone(),
        detail: match &allowed {
            Some(allowed) => format!("approved: allowed {allowed}"),
            None => "rejected".to_owned(),
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
    match recorded {
        Ok(Ok(true)) => Outcome::Done(format!(
            "{} the request for {url}",
            if approved { "Approved" } else { "Rejected" }
        )),
        Ok(Ok(false)) => Outcome::Failed(
            StatusCode::CONFLICT,
            "this request was decided already".to_owned(),
        ),
        _ => Outcome::Failed(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot record the decision".to_owned(),
        ),
    }
}

/// `POST /rules/reviews/decide`.
pub async fn decide_form(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
    Form(form): Form<DecideForm>,
) -> Response {
    match decide(&state, &session, form).await {
        Outcome::Done(message) => {
            Redirect::to(&format!("/rules/reviews?done={}", url_encode(&message))).into_response()
        }
        Outcome::Failed(_, message) => {
            Redirect::to(&format!("/rules/reviews?error={}", url_encode(&message))).into_response()
        }
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
    }
}
