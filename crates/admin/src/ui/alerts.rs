//! The alert queue for the headteacher and the designated safeguarding lead
//! (`reports`): alerts filtered by severity and status, one alert with its evidence
//! (the records that raised it) and history, and acknowledging or closing it with a
//! note. Every status change is also recorded in the audit log.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use safegate_store::{
    Alert, AlertFilter, AlertStatus, AuditAction, NewAuditEntry, Outcome, StatusChange,
};
use serde::Deserialize;

use crate::ui::pages::{layout, local_time, url_encode};
use crate::ui::rules::now_micros;
use crate::ui::{Session, WebState, refusal};

fn parse_status(text: &str) -> Option<AlertStatus> {
    [
        AlertStatus::New,
        AlertStatus::Acknowledged,
        AlertStatus::Closed,
    ]
    .into_iter()
    .find(|status| status.as_str() == text)
}

/// `?severity=&status=&done=&error=`.
#[derive(Debug, Default, Deserialize)]
pub struct AlertsQuery {
    severity: Option<String>,
    /// `open` (default), `new`, `acknowledged`, `closed` or `all`.
    status: Option<String>,
    done: Option<String>,
    error: Option<String>,
}

async fn list(state: &WebState, query: &AlertsQuery) -> Result<Vec<Alert>, String> {
    let status_text = query.status.as_deref().unwrap_or("open");
    let mut filter = AlertFilter::default();
    match status_text {
        "open" => filter.open_only = true,
        "all" => {}
        other => {
            filter.status =
                Some(parse_status(other).ok_or_else(|| format!("unknown status {other}"))?);
        }
    }
    let store = state.store.clone();
    let mut alerts = tokio::task::spawn_blocking(move || store.alerts(&filter))
        .await
        .map_err(|_| "cannot read the alerts".to_owned())?
        .map_err(|err| format!("cannot read the alerts: {err}"))?;
    if let Some(severity) = query.severity.as_deref().filter(|s| !s.is_empty()) {
        alerts.retain(|alert| alert.severity.as_str() == severity);
    }
    // Most serious first, then newest.
    alerts.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(b.last_at_unix_micros.cmp(&a.last_at_unix_micros))
    });
    Ok(alerts)
}

/// `GET /alerts`.
pub async fn alerts_page(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
    Query(query): Query<AlertsQuery>,
) -> Response {
    let alerts = match list(&state, &query).await {
        Ok(alerts) => alerts,
        Err(problem) => return refusal(false, StatusCode::BAD_REQUEST, &problem),
    };
    let tz = state.school_zone();
    let numbers = numbers_of(&state, &alerts).await;
    layout(
        "Safeguarding alerts",
        Some(&session),
        html! {
            @if let Some(done) = &query.done { p.ok { (done) } }
            @if let Some(error) = &query.error { p.bad { (error) } }
            form method="get" action="/alerts" {
                label { "Status "
                    select name="status" {
                        @for status in ["open", "new", "acknowledged", "closed", "all"] {
                            option value=(status) selected[query.status.as_deref().unwrap_or("open") == status] { (status) }
                        }
                    }
                }
                label { "Severity "
                    select name="severity" {
                        option value="" { "any" }
                        @for severity in ["high", "medium", "low"] {
                            option value=(severity) selected[query.severity.as_deref() == Some(severity)] { (severity) }
                        }
                    }
                }
                button type="submit" { "Show" }
            }
            @if alerts.is_empty() { p { "No alerts." } }
            @else {
                table {
                    tr { th { "#" } th { "Severity" } th { "Status" } th { "Who" } th { "What" } th { "Latest" } th { "Times" } }
                    @for (alert, number) in alerts.iter().zip(&numbers) {
                        tr {
                            td { a href=(format!("/alerts/{}", alert.id)) { "#" (number) } }
                            td class=(if alert.severity.as_str() == "high" { "bad" } else { "" }) { (alert.severity.as_str()) }
                            td { (alert.status.in_words()) }
                            td { (alert.who) " (" (alert.role) ")" }
                            td { (alert.kind.in_words()) ": " (alert.summary) }
                            td { (local_time(alert.last_at_unix_micros, &tz)) }
                            td { (alert.occurrences) }
                        }
                    }
                }
            }
        },
    )
    .into_response()
}

/// `GET /api/alerts`.
pub async fn alerts_api(
    State(state): State<Arc<WebState>>,
    Query(query): Query<AlertsQuery>,
) -> Response {
    match list(&state, &query).await {
        Ok(alerts) => Json(alerts).into_response(),
        Err(problem) => refusal(true, StatusCode::BAD_REQUEST, &problem),
    }
}

/// The short number (#35) of each alert, in order (its id when it has none).
async fn numbers_of(state: &WebState, alerts: &[Alert]) -> Vec<u64> {
    let store = state.store.clone();
    let ids: Vec<u64> = alerts.iter().map(|alert| alert.id).collect();
    let fallback = ids.clone();
    tokio::task::spawn_blocking(move || {
        ids.iter()
            .map(|id| store.alert_number(*id).ok().flatten().unwrap_or(*id))
            .collect()
    })
    .await
    .unwrap_or(fallback)
}

/// The activity page for the alert's person (or computer, when there is no user
/// name) from 30 minutes before its first occurrence to 30 minutes after its latest.
pub fn activity_link(alert: &Alert) -> String {
    let who = match &alert.user {
        Some(user) => format!("user={}", url_encode(user)),
        None => format!("client={}", url_encode(&alert.who)),
    };
    format!(
        "/activity?{who}&since_micros={}&until_micros={}",
        alert.first_at_unix_micros.saturating_sub(AROUND_MICROS),
        alert.last_at_unix_micros.saturating_add(AROUND_MICROS)
    )
}

/// Half an hour, in microseconds: the activity shown around an alert.
const AROUND_MICROS: u64 = 30 * 60 * 1_000_000;

async fn one(state: &WebState, id: u64) -> Result<Option<Alert>, String> {
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || store.alert(id))
        .await
        .map_err(|_| "cannot read the alert".to_owned())?
        .map_err(|err| format!("cannot read the alert: {err}"))
}

/// `GET /alerts/{id}`: the alert, its evidence and history, and the forms to
/// acknowledge or close it.
pub async fn alert_page(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
    Path(id): Path<u64>,
) -> Response {
    let alert = match one(&state, id).await {
        Ok(Some(alert)) => alert,
        Ok(None) => return refusal(false, StatusCode::NOT_FOUND, "there is no such alert"),
        Err(problem) => return refusal(false, StatusCode::INTERNAL_SERVER_ERROR, &problem),
    };
    let tz = state.school_zone();
    let number = numbers_of(&state, std::slice::from_ref(&alert))
        .await
        .first()
        .copied()
        .unwrap_or(alert.id);
    layout(
        &format!("Alert #{number}"),
        Some(&session),
        html! {
            p class=(if alert.severity.as_str() == "high" { "bad" } else { "" }) {
                (alert.severity.as_str()) " · " (alert.kind.in_words()) " · " (alert.status.in_words())
            }
            p { (alert.summary) }
            p { a href=(format!("/alerts/{}/record", alert.id)) { "Printable concern record" }
                " for the school's safeguarding system (who, which computer, when, what, evidence, actions and notes)" }
            p { a href=(activity_link(&alert)) { "What " (alert.who) " did from 30 minutes before to 30 minutes after" } }
            details {
                summary { "Details for staff" }
                p { "Alert id " code { (alert.id) } ", kind " code { (alert.kind.as_str()) } ", status " code { (alert.status.as_str()) } "." }
            }
            table {
                tr { th { "Who" } td { (alert.who) " (" (alert.role) @if let Some(group) = &alert.group { ", " (group) } ")" } }
                tr { th { "About" } td { (alert.subject) } }
                tr { th { "First" } td { (local_time(alert.first_at_unix_micros, &tz)) } }
                tr { th { "Latest" } td { (local_time(alert.last_at_unix_micros, &tz)) } }
                tr { th { "Times" } td { (alert.occurrences) } }
            }
            h2 { "Evidence" }
            table {
                tr { th { "When" } th { "Address" } th { "Search" } th { "Decision" } }
                @for record in &alert.evidence {
                    tr {
                        td { (local_time(record.at_unix_micros, &tz)) }
                        td { (record.host) @if let Some(path) = &record.path { (path) } }
                        td { @if let Some(search) = &record.search { (search.engine) ": " (search.terms) } }
                        td { (if record.outcome == Outcome::Blocked { "blocked" } else { "allowed" }) ": " (safegate_store::plain_words::rule_in_words(&record.rule)) }
                    }
                }
            }
            h2 { "History" }
            ul {
                @for change in &alert.history {
                    li { (local_time(change.at_unix_micros, &tz)) " " (change.by) ": " (change.status.as_str())
                        @if let Some(note) = &change.note { " — " (note) } }
                }
            }
            @if alert.status.is_open() {
                form method="post" action=(format!("/alerts/{}/status", alert.id)) {
                    input type="hidden" name="csrf" value=(session.csrf);
                    label { "Note " input name="note" size="60" required; }
                    @if alert.status == AlertStatus::New {
                        button type="submit" name="status" value="acknowledged" { "Acknowledge" }
                    }
                    " "
                    button type="submit" name="status" value="closed" { "Close" }
                }
            }
        },
    )
    .into_response()
}

/// The status form (and JSON body).
#[derive(Debug, Deserialize)]
pub struct StatusForm {
    /// `acknowledged` or `closed` (or `new` to reopen for handling).
    status: String,
    /// What was done, or why.
    note: String,
}

async fn change_status(
    state: &WebState,
    session: &Session,
    id: u64,
    form: StatusForm,
) -> Result<Alert, (StatusCode, String)> {
    let status = parse_status(&form.status)
        .ok_or_else(|| (StatusCode::BAD_REQUEST, "unknown status".to_owned()))?;
    let note = form.note.trim().to_owned();
    if note.is_empty() {
        return Err((
            StatusCode::BAD_REQUEST,
            "write a note saying what was done".to_owned(),
        ));
    }
    let change = StatusChange {
        status,
        by: session.user.clone(),
        at_unix_micros: now_micros(),
        note: Some(note.clone()),
    };
    let audit = NewAuditEntry {
        at_unix_micros: change.at_unix_micros,
        actor: session.user.clone(),
        action: AuditAction::AlertStatus,
        subject: format!("alert {id}"),
        detail: format!("status: {}", status.as_str()),
        reason: Some(note),
    };
    let store = state.store.clone();
    let changed = tokio::task::spawn_blocking(move || {
        let alert = store.set_alert_status(id, change)?;
        if alert.is_some() {
            store.append_audit(audit)?;
        }
        Ok::<_, safegate_store::StoreError>(alert)
    })
    .await;
    match changed {
        Ok(Ok(Some(alert))) => Ok(alert),
        Ok(Ok(None)) => Err((StatusCode::NOT_FOUND, "there is no such alert".to_owned())),
        Ok(Err(err)) => Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot change the alert: {err}"),
        )),
        Err(_) => Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot change the alert".to_owned(),
        )),
    }
}

/// `POST /alerts/{id}/status`.
pub async fn status_form(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
    Path(id): Path<u64>,
    Form(form): Form<StatusForm>,
) -> Response {
    match change_status(&state, &session, id, form).await {
        Ok(alert) => Redirect::to(&format!(
            "/alerts?done={}",
            url_encode(&format!(
                "Alert {} is {} now",
                alert.id,
                alert.status.as_str()
            ))
        ))
        .into_response(),
        Err((_, problem)) => {
            Redirect::to(&format!("/alerts?error={}", url_encode(&problem))).into_response()
        }
    }
}

/// `POST /api/alerts/{id}/status` (JSON).
pub async fn status_api(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
    Path(id): Path<u64>,
    Json(form): Json<StatusForm>,
) -> Response {
    match change_status(&state, &session, id, form).await {
        Ok(alert) => Json(alert).into_response(),
        Err((status, problem)) => refusal(true, status, &problem),
    }
}
