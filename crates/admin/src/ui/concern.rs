//! `GET /alerts/{id}/record`: one alert as a printable safeguarding concern record
//! (`safegate_report::concern`) for the school's safeguarding system, for those with
//! the `reports` permission (headteacher, safeguarding lead). It shows a person's
//! records, so each export is written to the audit log, like a view of their history.

use std::sync::Arc;

use axum::extract::{Extension, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use safegate_report::concern::{self, ConcernContext};
use safegate_store::{AuditAction, NewAuditEntry};

use crate::ui::rules::now_micros;
use crate::ui::{Session, WebState, refusal};

/// `GET /alerts/{id}/record`.
pub async fn concern_record(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
    Path(id): Path<u64>,
) -> Response {
    let now = now_micros();
    let store = state.store.clone();
    let actor = session.user.clone();
    let found = tokio::task::spawn_blocking(move || {
        let Some(alert) = store.alert(id)? else {
            return Ok(None);
        };
        store.append_audit(NewAuditEntry {
            at_unix_micros: now,
            actor,
            action: AuditAction::HistoryViewed,
            subject: alert.who.clone(),
            detail: format!("concern record of alert {id} exported"),
            reason: None,
        })?;
        Ok::<_, safegate_store::StoreError>(Some(alert))
    })
    .await;
    let alert = match found {
        Ok(Ok(Some(alert))) => alert,
        Ok(Ok(None)) => return refusal(false, StatusCode::NOT_FOUND, "there is no such alert"),
        Ok(Err(err)) => {
            return refusal(
                false,
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot read the alert: {err}"),
            );
        }
        Err(_) => {
            return refusal(
                false,
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot read the alert",
            );
        }
    };
    let tz = state.school_zone();
    let school = state
        .policy
        .as_ref()
        .and_then(|policy| policy.live.load().school_name().map(str::to_owned));
    let exported_by = match &session.display_name {
        Some(shown) => format!("{shown} ({})", session.user),
        None => session.user.clone(),
    };
    let back = format!("/alerts/{}", alert.id);
    let page = concern::render(
        &alert,
        &ConcernContext {
            school: school.as_deref(),
            timezone: &tz,
            exported_by: &exported_by,
            exported_at_unix_micros: now,
            back_link: Some(&back),
        },
    );
    let mut response = (StatusCode::OK, page).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}
