//! The weekly sweep reports for the headteacher and the designated safeguarding lead
//! (`reports`): everything in `data_dir/reports` (weekly reports made by the Monday
//! scheduler, by `safegate report weekly` or from this page, with their HTML, JSON and
//! CSV files, and concern records exported by `safegate alerts export`), and making a
//! report for a chosen week. Files are served only from the reports directory, by
//! exact name.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Form, Path as UrlPath, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use safegate_report::{GatherOptions, IsoWeek};
use serde::{Deserialize, Serialize};

use crate::ui::pages::{layout, url_encode};
use crate::ui::{Session, WebState, refusal};

/// A report's files, by week; or one concern record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReportFiles {
    /// `2026-W47` (with `-pseudonymised` for that variant); for a concern record,
    /// `alert 35, 2026-11-18`.
    pub week: String,
    /// `weekly` or `concern`.
    pub kind: &'static str,
    /// File names, the HTML first.
    pub files: Vec<String>,
}

/// Whether `name` is a plain report or concern record file name (no path, nothing
/// hidden).
fn plain_name(name: &str) -> bool {
    (name.starts_with("safegate-report-") || name.starts_with("safegate-concern-alert-"))
        && name.len() < 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !name.contains("..")
}

fn list_reports(dir: &Path) -> Vec<ReportFiles> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| plain_name(name))
        .collect();
    names.sort();
    let mut reports: Vec<ReportFiles> = Vec::new();
    let mut concerns: Vec<ReportFiles> = Vec::new();
    for name in names {
        if let Some(stem) = name.strip_prefix("safegate-concern-alert-") {
            // `35-2026-11-18.html`.
            let stem = stem.trim_end_matches(".html");
            let title = match stem.split_once('-') {
                Some((id, date)) => format!("alert {id}, {date}"),
                None => format!("alert {stem}"),
            };
            concerns.push(ReportFiles {
                week: title,
                kind: "concern",
                files: vec![name],
            });
            continue;
        }
        let Some(stem) = name.strip_prefix("safegate-report-") else {
            continue;
        };
        // `2026-W47.html`, `2026-W47-pseudonymised-searches.csv`, ...
        let week = stem
            .split(['.'])
            .next()
            .unwrap_or(stem)
            .split('-')
            .take(2)
            .collect::<Vec<_>>()
            .join("-");
        let week = if stem.contains("-pseudonymised") {
            format!("{week}-pseudonymised")
        } else {
            week
        };
        match reports.iter_mut().find(|r| r.week == week) {
            Some(report) => report.files.push(name),
            None => reports.push(ReportFiles {
                week,
                kind: "weekly",
                files: vec![name],
            }),
        }
    }
    for report in &mut reports {
        report.files.sort_by_key(|name| !name.ends_with(".html"));
    }
    reports.sort_by(|a, b| b.week.cmp(&a.week));
    // Newest export first.
    concerns.sort_by(|a, b| b.files.cmp(&a.files));
    reports.extend(concerns);
    reports
}

fn reports_dir(state: &WebState) -> Option<&PathBuf> {
    state.reports_dir.as_ref()
}

/// `?done=&error=`.
#[derive(Debug, Default, Deserialize)]
pub struct ReportsQuery {
    done: Option<String>,
    error: Option<String>,
}

/// `GET /reports`.
pub async fn reports_page(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
    axum::extract::Query(query): axum::extract::Query<ReportsQuery>,
) -> Response {
    let Some(dir) = reports_dir(&state) else {
        return refusal(
            false,
            StatusCode::SERVICE_UNAVAILABLE,
            "reports are not kept here",
        );
    };
    let reports = list_reports(dir);
    let last_week = state.policy.as_ref().map(|policy| {
        IsoWeek::previous(jiff::Timestamp::now(), policy.live.load().timezone()).to_string()
    });
    layout(
        "Weekly reports",
        Some(&session),
        html! {
            @if let Some(done) = &query.done { p.ok { (done) } }
            @if let Some(error) = &query.error { p.bad { (error) } }
            form method="post" action="/reports/make" {
                input type="hidden" name="csrf" value=(session.csrf);
                label { "Make the report for week " input name="week" required pattern="[0-9]{4}-W[0-9]{2}" value=(last_week.unwrap_or_default()); }
                button type="submit" { "Make report" }
            }
            @if reports.is_empty() { p { "No reports yet. The report for each week is made on Monday morning." } }
            p { "Reports made on Monday mornings, with " code { "safegate report weekly" } " or here, and concern records exported with "
                code { "safegate alerts export" } ", are all kept on the SafeGate server and listed here." }
            table {
                @for report in reports.iter().filter(|r| r.kind == "weekly") {
                    tr {
                        th { (report.week) }
                        td {
                            @for file in &report.files {
                                a href=(format!("/reports/file/{file}")) { (file.rsplit('.').next().unwrap_or("").to_uppercase()) ": " (file) }
                                br;
                            }
                        }
                    }
                }
            }
            @let concerns: Vec<&ReportFiles> = reports.iter().filter(|r| r.kind == "concern").collect();
            @if !concerns.is_empty() {
                h2 { "Concern records" }
                table {
                    @for record in concerns {
                        tr {
                            th { (record.week) }
                            td { @for file in &record.files { a href=(format!("/reports/file/{file}")) { (file) } } }
                        }
                    }
                }
            }
        },
    )
    .into_response()
}

/// `GET /api/reports`.
pub async fn reports_api(State(state): State<Arc<WebState>>) -> Response {
    match reports_dir(&state) {
        Some(dir) => Json(list_reports(dir)).into_response(),
        None => refusal(
            true,
            StatusCode::SERVICE_UNAVAILABLE,
            "reports are not kept here",
        ),
    }
}

/// `GET /reports/file/{name}`: one report file (HTML shown, JSON and CSV
/// downloaded).
pub async fn report_file(
    State(state): State<Arc<WebState>>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    let Some(dir) = reports_dir(&state) else {
        return refusal(
            false,
            StatusCode::SERVICE_UNAVAILABLE,
            "reports are not kept here",
        );
    };
    if !plain_name(&name) {
        return refusal(false, StatusCode::NOT_FOUND, "there is no such report file");
    }
    let path = dir.join(&name);
    let bytes = match tokio::fs::read(&path).await {
        Ok(bytes) => bytes,
        Err(_) => return refusal(false, StatusCode::NOT_FOUND, "there is no such report file"),
    };
    let content_type = match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("json") => "application/json",
        Some("csv") => "text/csv; charset=utf-8",
        _ => "application/octet-stream",
    };
    let mut response = (StatusCode::OK, bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if !name.ends_with(".html")
        && let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
    {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// The make-a-report form.
#[derive(Debug, Deserialize)]
pub struct MakeForm {
    week: String,
}

/// `POST /reports/make`: gathers the week from the visit log and alerts and writes
/// its files (replacing an earlier report of the same week).
pub async fn make_report(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
    Form(form): Form<MakeForm>,
) -> Response {
    let back = |key: &str, message: &str| {
        Redirect::to(&format!("/reports?{key}={}", url_encode(message))).into_response()
    };
    let (Some(dir), Some(policy)) = (reports_dir(&state).cloned(), state.policy.as_ref()) else {
        return back("error", "reports cannot be made here");
    };
    let week = match IsoWeek::parse(form.week.trim()) {
        Ok(week) => week,
        Err(err) => return back("error", &err.to_string()),
    };
    let snapshot = policy.live.load_full();
    let store = state.store.clone();
    let made = tokio::task::spawn_blocking(move || {
        let timezone = snapshot.timezone().iana_name().unwrap_or("UTC").to_owned();
        let report = safegate_report::gather(
            &store,
            &snapshot,
            &timezone,
            week,
            &GatherOptions::default(),
        )?;
        safegate_report::write_files(&report, &dir)
    })
    .await;
    match made {
        Ok(Ok(files)) => {
            tracing::info!(user = %session.user, week = %week, files = files.len(), "weekly report made from the admin pages");
            back("done", &format!("The report for {week} is ready."))
        }
        Ok(Err(err)) => back("error", &format!("the report could not be made: {err}")),
        Err(_) => back("error", "the report could not be made"),
    }
}
