//! One person's activity for a chosen period, for the headteacher and the designated
//! safeguarding lead (`reports`): searches, visits (with time spent) and blocked
//! attempts. Every view is recorded in the audit log (who looked at whose history,
//! for which period, and why) before anything is shown.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use jiff::civil::Date;
use jiff::tz::TimeZone;
use maud::html;
use safegate_store::{AuditAction, NewAuditEntry, Outcome, Query as LogQuery, Record};
use serde::{Deserialize, Serialize};

use crate::ui::pages::{layout, local_time};
use crate::ui::rules::now_micros;
use crate::ui::{Session, WebState, refusal};

/// Most records read for one view.
const MAX_RECORDS: usize = 200_000;

/// Idle gap that ends a visit (the visit log's default).
const VISIT_GAP: Duration = Duration::from_secs(5 * 60);

/// `?user=&from=&until=&reason=`.
#[derive(Debug, Default, Deserialize)]
pub struct ActivityQuery {
    user: Option<String>,
    /// A computer's address instead of a user name.
    client: Option<String>,
    /// Start and end as Unix microseconds instead of days (an alert's links).
    since_micros: Option<u64>,
    until_micros: Option<u64>,
    /// First day, `2026-11-16` (school time zone).
    from: Option<String>,
    /// Last day, inclusive.
    until: Option<String>,
    /// Why the history is being looked at (recorded in the audit log).
    reason: Option<String>,
}

/// What the page and the API show.
#[derive(Debug, Default, Serialize)]
pub struct Activity {
    /// The person.
    pub user: String,
    /// First day shown.
    pub from: String,
    /// Last day shown.
    pub until: String,
    /// Searches: time, engine, terms, host, computer.
    pub searches: Vec<(String, String, String, String, String)>,
    /// Visits: site, start, minutes, requests, blocked requests.
    pub visits: Vec<(String, String, u64, u64, u64)>,
    /// Blocked attempts: time, URL or host, rule, computer.
    pub blocked: Vec<(String, String, String, String)>,
    /// The computers used, busiest first: computer, first and last request, requests.
    pub computers: Vec<(String, String, String, u64)>,
    /// Pages scored by their words (content analysis): time, URL, blocked or not,
    /// score with categories and the five highest-weight phrases. Staff only: pupils
    /// never see the phrases.
    pub content: Vec<(String, String, bool, String)>,
    /// Records read.
    pub records: usize,
}

fn day_start_micros(day: Date, tz: &TimeZone) -> Option<u64> {
    let zoned = day.to_zoned_datetime(tz.clone()).ok()?;
    u64::try_from(zoned.timestamp().as_microsecond()).ok()
}

/// The computers of `records`, busiest first (see [`Activity::computers`]).
fn computers_used(records: &[Record], tz: &TimeZone) -> Vec<(String, String, String, u64)> {
    let mut used: std::collections::HashMap<String, (u64, u64, u64)> =
        std::collections::HashMap::new();
    for record in records {
        let at = record.at_unix_micros;
        let entry = used.entry(record.computer_text()).or_insert((at, at, 0));
        entry.0 = entry.0.min(at);
        entry.1 = entry.1.max(at);
        entry.2 += 1;
    }
    let mut rows: Vec<_> = used.into_iter().collect();
    rows.sort_by(|a, b| b.1.2.cmp(&a.1.2).then_with(|| a.0.cmp(&b.0)));
    rows.into_iter()
        .map(|(computer, (first, last, n))| {
            (computer, local_time(first, tz), local_time(last, tz), n)
        })
        .collect()
}

fn shown_url(record: &Record) -> String {
    match &record.path {
        Some(path) => format!("{}://{}{path}", record.scheme, record.host),
        None => record.host.clone(),
    }
}

/// The period asked for: (start, end) in Unix microseconds, and as shown (from,
/// until): days in school time (`from`/`until`, the last 7 days by default), or the
/// exact times of an alert's link (`since_micros`/`until_micros`, at most 2 days).
fn period(
    query: &ActivityQuery,
    tz: &TimeZone,
) -> Result<(u64, u64, String, String), (StatusCode, String)> {
    let bad = |message: &str| (StatusCode::BAD_REQUEST, message.to_owned());
    if let (Some(since), Some(until)) = (query.since_micros, query.until_micros) {
        if until <= since || until - since > 2 * 24 * 3600 * 1_000_000 {
            return Err(bad(
                "the period must end after it starts and last at most 2 days",
            ));
        }
        return Ok((since, until, local_time(since, tz), local_time(until, tz)));
    }
    let today = jiff::Timestamp::now().to_zoned_datetime(tz.clone()).date();
    let parse_day = |text: Option<&str>, default: Date| -> Result<Date, (StatusCode, String)> {
        match text.map(str::trim).filter(|t| !t.is_empty()) {
            None => Ok(default),
            Some(text) => text
                .parse::<Date>()
                .map_err(|_| bad("dates are written 2026-11-16")),
        }
    };
    let from = parse_day(
        query.from.as_deref(),
        today.saturating_sub(jiff::Span::new().days(6)),
    )?;
    let until = parse_day(query.until.as_deref(), today)?;
    if until < from {
        return Err(bad("the period ends before it starts"));
    }
    let since = day_start_micros(from, tz).ok_or_else(|| bad("bad start date"))?;
    let end = until
        .tomorrow()
        .ok()
        .and_then(|day| day_start_micros(day, tz))
        .ok_or_else(|| bad("bad end date"))?;
    Ok((since, end, from.to_string(), until.to_string()))
}

/// Reads the activity and records the view; errors are for the person asking.
async fn gather(
    state: &WebState,
    session: &Session,
    query: &ActivityQuery,
) -> Result<Activity, (StatusCode, String)> {
    let bad = |message: &str| (StatusCode::BAD_REQUEST, message.to_owned());
    let client = query
        .client
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| {
            c.parse::<std::net::IpAddr>()
                .map_err(|_| bad("a computer is given by its address, like 10.0.3.57"))
        })
        .transpose()?;
    let user = query
        .user
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty());
    let subject = match (user, client) {
        (Some(user), _) => user.to_owned(),
        (None, Some(client)) => client.to_string(),
        (None, None) => return Err(bad("give a user name or a computer's address")),
    };
    let reason = query
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| bad("say why you are looking at this person's history (it is recorded)"))?;
    let tz = state.school_zone();
    let (since, end, from, until) = period(query, &tz)?;
    let audit = NewAuditEntry {
        at_unix_micros: now_micros(),
        actor: session.user.clone(),
        action: AuditAction::HistoryViewed,
        subject: subject.clone(),
        detail: format!("searches, visits and blocks from {from} to {until}"),
        reason: Some(reason.to_owned()),
    };
    let store = state.store.clone();
    let log_query = LogQuery {
        user: user.map(str::to_owned),
        client: if user.is_none() { client } else { None },
        since: Some(since),
        until: Some(end),
        limit: Some(MAX_RECORDS),
        ..LogQuery::default()
    };
    let records = tokio::task::spawn_blocking(move || {
        // The view is audited before anything is read for it.
        store.append_audit(audit)?;
        store.query(&log_query)
    })
    .await
    .map_err(|_| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot read the visit log".to_owned(),
        )
    })?
    .map_err(|err| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read the visit log or record the view: {err}"),
        )
    })?;
    let mut activity = Activity {
        user: subject,
        from: from.to_string(),
        until: until.to_string(),
        records: records.len(),
        computers: computers_used(&records, &tz),
        ..Activity::default()
    };
    for record in &records {
        if let Some(search) = &record.search {
            activity.searches.push((
                local_time(record.at_unix_micros, &tz),
                search.engine.clone(),
                search.terms.clone(),
                record.host.clone(),
                record.computer_text(),
            ));
        }
        if let Some(content) = &record.content {
            activity.content.push((
                local_time(record.at_unix_micros, &tz),
                shown_url(record),
                record.outcome == Outcome::Blocked,
                content.summary(),
            ));
        }
        if record.outcome == Outcome::Blocked {
            activity.blocked.push((
                local_time(record.at_unix_micros, &tz),
                shown_url(record),
                record.rule.clone(),
                record.computer_text(),
            ));
        }
    }
    let mut visits = safegate_activity::visits::join(&records, VISIT_GAP);
    visits.sort_by_key(|visit| visit.start_micros);
    activity.visits = visits
        .iter()
        .map(|visit| {
            (
                visit.site.clone(),
                local_time(visit.start_micros, &tz),
                visit.duration_micros().div_ceil(60_000_000),
                visit.requests,
                visit.blocked,
            )
        })
        .collect();
    Ok(activity)
}

/// `GET /activity`: the form, and the activity once a user and reason are given.
pub async fn activity_page(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
    Query(query): Query<ActivityQuery>,
) -> Response {
    let given = |value: &Option<String>| value.as_deref().is_some_and(|v| !v.trim().is_empty());
    let asked = given(&query.user) || given(&query.client);
    let result = if asked {
        Some(gather(&state, &session, &query).await)
    } else {
        None
    };
    layout(
        "One person's activity",
        Some(&session),
        html! {
            p { "Looking at a person's history is recorded in the audit log with your name and reason." }
            form method="get" action="/activity" {
                label { "User name " input name="user" value=(query.user.as_deref().unwrap_or("")); }
                label { "or computer address " input name="client" value=(query.client.as_deref().unwrap_or("")); }
                @if let (Some(since), Some(until)) = (query.since_micros, query.until_micros) {
                    input type="hidden" name="since_micros" value=(since);
                    input type="hidden" name="until_micros" value=(until);
                }
                label { "From " input name="from" type="date" value=(query.from.as_deref().unwrap_or("")); }
                label { "Until " input name="until" type="date" value=(query.until.as_deref().unwrap_or("")); }
                label { "Why " input name="reason" required size="40" value=(query.reason.as_deref().unwrap_or("")); }
                button type="submit" { "Show" }
            }
            @match &result {
                None => {},
                Some(Err((_, problem))) => p.bad { (problem) },
                Some(Ok(activity)) => {
                    h2 { (activity.user) ", " (activity.from) " to " (activity.until) }
                    p { (activity.records) " requests." }
                    h3 { "Computers used (" (activity.computers.len()) ")" }
                    table {
                        tr { th { "Computer" } th { "First request" } th { "Last request" } th { "Requests" } }
                        @for (computer, first, last, requests) in &activity.computers {
                            tr { td { (computer) } td { (first) } td { (last) } td { (requests) } }
                        }
                    }
                    h3 { "Searches (" (activity.searches.len()) ")" }
                    table {
                        tr { th { "When" } th { "Computer" } th { "Where" } th { "Terms" } }
                        @for (when, engine, terms, host, computer) in &activity.searches {
                            tr { td { (when) } td { (computer) } td { (engine) " (" (host) ")" } td { (terms) } }
                        }
                    }
                    h3 { "Sites visited (" (activity.visits.len()) " visits)" }
                    table {
                        tr { th { "Site" } th { "From" } th { "Minutes" } th { "Requests" } th { "Blocked" } }
                        @for (site, start, minutes, requests, blocked) in &activity.visits {
                            tr { td { (site) } td { (start) } td { (minutes) } td { (requests) } td { (blocked) } }
                        }
                    }
                    h3 { "Blocked attempts (" (activity.blocked.len()) ")" }
                    table {
                        tr { th { "When" } th { "Computer" } th { "Address" } th { "Why" } }
                        @for (when, url, rule, computer) in &activity.blocked {
                            tr { td { (when) } td { (computer) } td { (url) } td { (safegate_store::plain_words::rule_in_words(rule)) details { summary { "rule" } code { (rule) } } } }
                        }
                    }
                    @if !activity.content.is_empty() {
                        h3 { "Pages scored by their words (" (activity.content.len()) ")" }
                        table {
                            tr { th { "When" } th { "Address" } th { "Blocked" } th { "Score, categories and phrases found" } }
                            @for (when, url, blocked, summary) in &activity.content {
                                tr { td { (when) } td { (url) } td { @if *blocked { "yes" } @else { "no (shown)" } } td { (summary) } }
                            }
                        }
                    }
                },
            }
        },
    )
    .into_response()
}

/// `GET /api/activity` (JSON; audited like the page).
pub async fn activity_api(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
    Query(query): Query<ActivityQuery>,
) -> Response {
    match gather(&state, &session, &query).await {
        Ok(activity) => Json(activity).into_response(),
        Err((status, problem)) => refusal(true, status, &problem),
    }
}
