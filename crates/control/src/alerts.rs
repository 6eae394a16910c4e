//! `safegate alerts list|show|ack|close|export`, the part that runs where the database
//! is: the [`AlertsRequest`] sent over the control socket, and [`execute`], which lists,
//! shows or changes alerts and writes them for people (school time) or as JSON, or
//! renders one as a printable concern record (`safegate_report::concern`).

use std::fmt::Write as _;

use safegate_store::{Alert, AlertFilter, AlertStatus, StatusChange, Store};
use serde::{Deserialize, Serialize};

use crate::error::CommandError;
use crate::table::{printable, write_table};
use crate::time_text::{local_text, zone_named};

/// An alerts command, as sent over the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum AlertsRequest {
    /// List alerts.
    List {
        /// Which ones.
        filter: AlertFilter,
        /// JSON output.
        json: bool,
        /// The school's time zone, for the times shown.
        timezone: String,
    },
    /// One alert.
    Show {
        /// Its id, or its number when `by_number`.
        id: u64,
        /// `id` is the short number (#35).
        #[serde(default)]
        by_number: bool,
        /// JSON output.
        json: bool,
        /// The school's time zone.
        timezone: String,
    },
    /// Acknowledge or close.
    SetStatus {
        /// Its id, or its number when `by_number`.
        id: u64,
        /// `id` is the short number (#35).
        #[serde(default)]
        by_number: bool,
        /// The new status.
        status: AlertStatus,
        /// Who.
        by: String,
        /// Why.
        note: Option<String>,
        /// When, Unix microseconds.
        at_unix_micros: u64,
        /// The school's time zone.
        timezone: String,
    },
    /// One alert as a printable concern record (HTML).
    Export {
        /// Its id, or its number when `by_number`.
        id: u64,
        /// Whether `id` is the short number (`#35`).
        #[serde(default)]
        by_number: bool,
        /// Who exports it, named on the record.
        by: String,
        /// The school's name, if the policy gives one.
        #[serde(default)]
        school: Option<String>,
        /// The school's time zone.
        timezone: String,
    },
}

impl AlertsRequest {
    /// What the request asks, for the service's log.
    pub fn describe(&self) -> String {
        match self {
            AlertsRequest::List { filter, .. } => format!(
                "alerts list{}",
                filter
                    .who
                    .as_deref()
                    .map(|w| format!(" who={w:?}"))
                    .unwrap_or_default()
            ),
            AlertsRequest::Show { id, .. } => format!("alerts show {id}"),
            AlertsRequest::SetStatus { id, status, by, .. } => {
                format!("alerts set {id} status={} by={by:?}", status.as_str())
            }
            AlertsRequest::Export {
                id, by_number, by, ..
            } => {
                let hash = if *by_number { "#" } else { "" };
                format!("alerts export {hash}{id} (concern record) by={by:?}")
            }
        }
    }
}

/// Does an alerts command on the open database: (output bytes, summary for the log).
pub fn execute(store: &Store, request: &AlertsRequest) -> Result<(Vec<u8>, String), CommandError> {
    match request {
        AlertsRequest::List {
            filter,
            json: as_json,
            timezone,
        } => {
            let alerts = store.alerts(filter)?;
            let summary = format!("{} alerts listed", alerts.len());
            if *as_json {
                return Ok((json_lines(&alerts)?, summary));
            }
            let tz = zone_named(timezone);
            if alerts.is_empty() {
                return Ok((b"no alerts\n".to_vec(), summary));
            }
            Ok((alerts_table(store, &alerts, &tz), summary))
        }
        AlertsRequest::Show {
            id,
            by_number,
            json: as_json,
            timezone,
        } => {
            let id = &resolve(store, *id, *by_number)?;
            let alert = store
                .alert(*id)?
                .ok_or_else(|| CommandError::Refused(format!("there is no alert {id}")))?;
            let summary = format!("alert {id} shown");
            if *as_json {
                return Ok((json_lines(&alert)?, summary));
            }
            let number = store.alert_number(alert.id)?.unwrap_or(alert.id);
            Ok((
                details(&alert, number, &zone_named(timezone)).into_bytes(),
                summary,
            ))
        }
        AlertsRequest::Export {
            id,
            by_number,
            by,
            school,
            timezone,
        } => {
            let id = &resolve(store, *id, *by_number)?;
            let alert = store
                .alert(*id)?
                .ok_or_else(|| CommandError::Refused(format!("there is no alert {id}")))?;
            let tz = zone_named(timezone);
            let page = safegate_report::concern::render(
                &alert,
                &safegate_report::concern::ConcernContext {
                    school: school.as_deref(),
                    timezone: &tz,
                    exported_by: by,
                    exported_at_unix_micros: u64::try_from(jiff::Timestamp::now().as_microsecond())
                        .unwrap_or(0),
                    back_link: None,
                },
            );
            Ok((
                page.into_bytes(),
                format!("alert {id} exported as a concern record"),
            ))
        }
        AlertsRequest::SetStatus {
            id,
            by_number,
            status,
            by,
            note,
            at_unix_micros,
            timezone,
        } => {
            let id = &resolve(store, *id, *by_number)?;
            let alert = store
                .set_alert_status(
                    *id,
                    StatusChange {
                        status: *status,
                        by: by.clone(),
                        at_unix_micros: *at_unix_micros,
                        note: note.clone(),
                    },
                )?
                .ok_or_else(|| CommandError::Refused(format!("there is no alert {id}")))?;
            let tz = zone_named(timezone);
            Ok((
                alerts_table(store, std::slice::from_ref(&alert), &tz),
                format!("alert {id} {} by {by:?}", status.as_str()),
            ))
        }
    }
}

/// The id of the alert given by its id, or by its short number when `by_number`.
fn resolve(store: &Store, id: u64, by_number: bool) -> Result<u64, CommandError> {
    if !by_number {
        return Ok(id);
    }
    store
        .alert_id_of_number(id)?
        .ok_or_else(|| CommandError::Refused(format!("there is no alert #{id}")))
}

/// `value` as pretty JSON and a final newline.
fn json_lines<T: Serialize>(value: &T) -> Result<Vec<u8>, CommandError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(safegate_store::StoreError::from)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Alerts as a table with a header row, for people: the short number (#35), status
/// and kind in words, school times. `--json` keeps the machine forms.
fn alerts_table(store: &Store, alerts: &[Alert], tz: &jiff::tz::TimeZone) -> Vec<u8> {
    let rows: Vec<[String; 9]> = alerts
        .iter()
        .map(|alert| {
            let number = store
                .alert_number(alert.id)
                .ok()
                .flatten()
                .unwrap_or(alert.id);
            [
                format!("#{number}"),
                alert.status.in_words().to_owned(),
                alert.severity.as_str().to_owned(),
                alert.kind.in_words().to_owned(),
                printable(&alert.who),
                local_text(alert.first_at_unix_micros, tz),
                local_text(alert.last_at_unix_micros, tz),
                alert.occurrences.to_string(),
                printable(&alert.summary),
            ]
        })
        .collect();
    let header = [
        "Alert", "Status", "Severity", "What", "Who", "First", "Latest", "Times", "Summary",
    ];
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = write_table(&mut out, header, &rows, &[7]);
    out
}

fn details(alert: &Alert, number: u64, tz: &jiff::tz::TimeZone) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "Alert #{number} (id {})", alert.id);
    let _ = writeln!(text, "  status:      {}", alert.status.in_words());
    let _ = writeln!(text, "  severity:    {}", alert.severity.as_str());
    let _ = writeln!(
        text,
        "  kind:        {} ({})",
        alert.kind.in_words(),
        alert.kind.as_str()
    );
    let _ = writeln!(
        text,
        "  who:         {} (role {}{})",
        alert.who,
        alert.role,
        alert
            .group
            .as_deref()
            .map(|g| format!(", group {g}"))
            .unwrap_or_default()
    );
    if !alert.subject.is_empty() {
        let _ = writeln!(text, "  subject:     {}", alert.subject);
    }
    let _ = writeln!(text, "  summary:     {}", alert.summary);
    let _ = writeln!(
        text,
        "  first:       {}",
        local_text(alert.first_at_unix_micros, tz)
    );
    let _ = writeln!(
        text,
        "  latest:      {}",
        local_text(alert.last_at_unix_micros, tz)
    );
    let _ = writeln!(text, "  occurrences: {}", alert.occurrences);
    let _ = writeln!(text, "Evidence ({} records):", alert.evidence.len());
    for record in &alert.evidence {
        let _ = writeln!(
            text,
            "  {}  {:<8} {} {}{}{}",
            local_text(record.at_unix_micros, tz),
            format!("{:?}", record.outcome).to_lowercase(),
            record.client,
            record.host,
            record.path.as_deref().unwrap_or(""),
            record
                .search
                .as_ref()
                .map(|s| format!("  search ({}): {}", s.engine, s.terms))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(text, "History:");
    if alert.history.is_empty() {
        let _ = writeln!(text, "  (none)");
    }
    for change in &alert.history {
        let _ = writeln!(
            text,
            "  {}  {} by {}{}",
            local_text(change.at_unix_micros, tz),
            change.status.as_str(),
            change.by,
            change
                .note
                .as_deref()
                .map(|n| format!(": {n}"))
                .unwrap_or_default()
        );
    }
    text
}
