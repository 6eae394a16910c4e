//! Outbox entries as ClickHouse rows (visits in RowBinary, [`crate::row_binary`];
//! alerts in JSONEachRow: one JSON object a line, keys = the columns of
//! [`crate::schema`]), and rows read back as SafeGate's own records and
//! alerts (for the trust's weekly report). A row's `id` is
//! `<node>-<batch>-<index>` (hex node, see [`safegate_store::export_outbox`]): the same
//! on every retry, unique across schools and nodes.

use std::borrow::Cow;
use std::fmt::Write as _;

use safegate_store::{
    Alert, AlertKind, AlertStatus, ContentScore, IdentifiedBy, OutboxEntry, OutboxKind, Outcome,
    Record, RecordRef, SearchTerms, SeenAs, Severity,
};
use serde::{Deserialize, Serialize};

use crate::ExportError;
use crate::row_binary::content_score;

/// One visit record as a row of the visits table.
#[derive(Debug, Serialize, Deserialize)]
pub struct VisitRow<'a> {
    /// The row's unique id (dedup key).
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    /// The school.
    #[serde(borrow)]
    pub school: Cow<'a, str>,
    /// Unix seconds (ClickHouse `DateTime`); written only.
    #[serde(default, skip_deserializing)]
    pub at: u64,
    /// Unix microseconds.
    pub at_micros: u64,
    /// See [`Record::user`].
    #[serde(borrow)]
    pub user: Option<Cow<'a, str>>,
    /// See [`Record::role`].
    #[serde(borrow)]
    pub role: Cow<'a, str>,
    /// See [`Record::group`].
    #[serde(borrow)]
    pub user_group: Option<Cow<'a, str>>,
    /// The client's address, as text.
    #[serde(borrow)]
    pub client: Cow<'a, str>,
    /// The computer's name, where known.
    #[serde(borrow)]
    pub computer: Option<Cow<'a, str>>,
    /// See [`Record::identified_by`].
    pub identified_by: IdentifiedBy,
    /// See [`Record::method`].
    #[serde(borrow)]
    pub method: Cow<'a, str>,
    /// See [`Record::scheme`].
    #[serde(borrow)]
    pub scheme: Cow<'a, str>,
    /// See [`Record::host`].
    #[serde(borrow)]
    pub host: Cow<'a, str>,
    /// See [`Record::port`].
    pub port: u16,
    /// See [`Record::path`].
    #[serde(borrow)]
    pub path: Option<Cow<'a, str>>,
    /// See [`Record::categories`].
    pub categories: Vec<Cow<'a, str>>,
    /// See [`Record::outcome`].
    pub outcome: Outcome,
    /// See [`Record::rule`].
    #[serde(borrow)]
    pub rule: Cow<'a, str>,
    /// See [`Record::status`].
    pub status: u16,
    /// See [`Record::bytes_up`].
    pub bytes_up: u64,
    /// See [`Record::bytes_down`].
    pub bytes_down: u64,
    /// See [`Record::duration_micros`].
    pub duration_micros: u64,
    /// The search engine, when the URL was a search.
    #[serde(borrow)]
    pub search_engine: Option<Cow<'a, str>>,
    /// The search terms.
    #[serde(borrow)]
    pub search_terms: Option<Cow<'a, str>>,
    /// See [`Record::seen_as`].
    pub seen_as: SeenAs,
    /// See [`Record::user_agent`].
    #[serde(borrow)]
    pub user_agent: Option<Cow<'a, str>>,
    /// See [`Record::failure`].
    #[serde(borrow)]
    pub failure: Option<Cow<'a, str>>,
    /// The page's content score, when content analysis scored it ([`content_score`]).
    #[serde(default)]
    pub content_score: Option<u32>,
    /// The categories the page scored for, highest first (their own scores stay in
    /// the school's visit log).
    #[serde(default)]
    pub content_categories: Vec<String>,
}

/// The columns of [`VisitRow`] that reading selects (all but `at`).
pub const VISIT_READ_COLUMNS: &str = "id, school, at_micros, user, role, user_group, client, \
    computer, identified_by, method, scheme, host, port, path, categories, outcome, rule, \
    status, bytes_up, bytes_down, duration_micros, search_engine, search_terms, seen_as, \
    user_agent, failure, content_score, content_categories";

/// The row id of an outbox entry.
pub fn row_id(node: u64, entry: &OutboxEntry) -> String {
    format!("{node:016x}-{:x}-{:x}", entry.batch, entry.index)
}

fn text(value: Option<&str>) -> Option<Cow<'_, str>> {
    value.map(Cow::Borrowed)
}

impl<'a> VisitRow<'a> {
    /// The row for a record read in place.
    pub fn from_record(id: String, school: &'a str, record: &RecordRef<'a>) -> Self {
        Self {
            id: Cow::Owned(id),
            school: Cow::Borrowed(school),
            at: record.at_unix_micros / 1_000_000,
            at_micros: record.at_unix_micros,
            user: text(record.user),
            role: Cow::Borrowed(record.role),
            user_group: text(record.group),
            client: Cow::Owned(record.client.to_string()),
            computer: text(record.computer),
            identified_by: record.identified_by,
            method: Cow::Borrowed(record.method),
            scheme: Cow::Borrowed(record.scheme),
            host: Cow::Borrowed(record.host),
            port: record.port,
            path: text(record.path),
            categories: record.categories.iter().map(Cow::Borrowed).collect(),
            outcome: record.outcome,
            rule: Cow::Borrowed(record.rule),
            status: record.status,
            bytes_up: record.bytes_up,
            bytes_down: record.bytes_down,
            duration_micros: record.duration_micros,
            search_engine: record.search.map(|s| Cow::Borrowed(s.engine)),
            search_terms: record.search.map(|s| Cow::Borrowed(s.terms)),
            seen_as: record.seen_as,
            user_agent: text(record.user_agent),
            failure: text(record.failure),
            content_score: record.content.as_ref().map(|c| content_score(c.score)),
            content_categories: record.content.as_ref().map_or_else(Vec::new, |c| {
                c.categories.iter().map(|(name, _)| name.clone()).collect()
            }),
        }
    }

    /// SafeGate's record again (for the trust's report).
    pub fn to_record(&self) -> Record {
        let owned = |t: &Option<Cow<'_, str>>| t.as_deref().map(str::to_owned);
        Record {
            at_unix_micros: self.at_micros,
            user: owned(&self.user),
            role: self.role.to_string(),
            group: owned(&self.user_group),
            client: self
                .client
                .parse()
                .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
            identified_by: self.identified_by,
            method: self.method.to_string(),
            scheme: self.scheme.to_string(),
            host: self.host.to_string(),
            port: self.port,
            path: owned(&self.path),
            categories: self.categories.iter().map(|c| c.to_string()).collect(),
            outcome: self.outcome,
            rule: self.rule.to_string(),
            status: self.status,
            bytes_up: self.bytes_up,
            bytes_down: self.bytes_down,
            duration_micros: self.duration_micros,
            search: match (&self.search_engine, &self.search_terms) {
                (Some(engine), Some(terms)) => Some(SearchTerms {
                    engine: engine.to_string(),
                    terms: terms.to_string(),
                }),
                _ => None,
            },
            seen_as: self.seen_as,
            user_agent: owned(&self.user_agent),
            failure: owned(&self.failure),
            computer: owned(&self.computer),
            content: self.content_score.map(|score| ContentScore {
                score: i64::from(score),
                categories: self
                    .content_categories
                    .iter()
                    .map(|name| (name.clone(), 0))
                    .collect(),
                phrases: Vec::new(),
                late: false,
            }),
        }
    }
}

/// One alert as a row of the alerts table.
#[derive(Debug, Serialize, Deserialize)]
pub struct AlertRow {
    /// `<node>-a<alert id>`: one id for every state of the alert.
    pub id: String,
    /// The school.
    pub school: String,
    /// Orders the states of one alert (the outbox batch number; the latest wins).
    pub version: u64,
    /// The alert's number at its school.
    pub alert_id: u64,
    /// See [`Alert::kind`].
    pub kind: AlertKind,
    /// See [`Alert::severity`].
    pub severity: Severity,
    /// See [`Alert::who`].
    pub who: String,
    /// See [`Alert::user`].
    pub user: Option<String>,
    /// See [`Alert::role`].
    pub role: String,
    /// See [`Alert::group`].
    pub user_group: Option<String>,
    /// The computer's address, as text.
    pub client: Option<String>,
    /// See [`Alert::computer`].
    pub computer: Option<String>,
    /// See [`Alert::subject`].
    pub subject: String,
    /// See [`Alert::summary`].
    pub summary: String,
    /// Unix seconds; written only.
    #[serde(default, skip_deserializing)]
    pub first_at: u64,
    /// See [`Alert::first_at_unix_micros`].
    pub first_at_micros: u64,
    /// Unix seconds; written only.
    #[serde(default, skip_deserializing)]
    pub last_at: u64,
    /// See [`Alert::last_at_unix_micros`].
    pub last_at_micros: u64,
    /// See [`Alert::occurrences`].
    pub occurrences: u64,
    /// See [`Alert::status`].
    pub status: AlertStatus,
    /// The evidence records, as JSON.
    pub evidence: String,
}

/// The columns of [`AlertRow`] that reading selects.
pub const ALERT_READ_COLUMNS: &str = "id, school, version, alert_id, kind, severity, who, user, \
    role, user_group, client, computer, subject, summary, first_at_micros, last_at_micros, \
    occurrences, status, evidence";

impl AlertRow {
    /// The row for an alert as it stood when it was put in the outbox.
    pub fn from_alert(node: u64, version: u64, school: &str, alert: &Alert) -> Self {
        Self {
            id: format!("{node:016x}-a{:x}", alert.id),
            school: school.to_owned(),
            version,
            alert_id: alert.id,
            kind: alert.kind,
            severity: alert.severity,
            who: alert.who.clone(),
            user: alert.user.clone(),
            role: alert.role.clone(),
            user_group: alert.group.clone(),
            client: alert.client.map(|c| c.to_string()),
            computer: alert.computer.clone(),
            subject: alert.subject.clone(),
            summary: alert.summary.clone(),
            first_at: alert.first_at_unix_micros / 1_000_000,
            first_at_micros: alert.first_at_unix_micros,
            last_at: alert.last_at_unix_micros / 1_000_000,
            last_at_micros: alert.last_at_unix_micros,
            occurrences: alert.occurrences,
            status: alert.status,
            evidence: serde_json::to_string(&alert.evidence).unwrap_or_else(|_| "[]".into()),
        }
    }

    /// SafeGate's alert again (history is not exported: an empty list).
    pub fn to_alert(&self) -> Alert {
        Alert {
            id: self.alert_id,
            kind: self.kind,
            severity: self.severity,
            who: self.who.clone(),
            user: self.user.clone(),
            role: self.role.clone(),
            group: self.user_group.clone(),
            client: self.client.as_deref().and_then(|c| c.parse().ok()),
            computer: self.computer.clone(),
            subject: self.subject.clone(),
            summary: self.summary.clone(),
            first_at_unix_micros: self.first_at_micros,
            last_at_unix_micros: self.last_at_micros,
            occurrences: self.occurrences,
            evidence: serde_json::from_str(&self.evidence).unwrap_or_default(),
            status: self.status,
            history: Vec::new(),
        }
    }
}

/// The insert bodies for a run of outbox entries: visits, alerts, and how many of each.
#[derive(Debug, Default)]
pub struct Bodies {
    /// RowBinary for the visits table ([`crate::row_binary`]).
    pub visits: Vec<u8>,
    /// JSONEachRow for the alerts table.
    pub alerts: Vec<u8>,
    /// Visit rows in `visits`.
    pub visit_rows: usize,
    /// Alert rows in `alerts`.
    pub alert_rows: usize,
    /// Entries that could not be read (left out, and removed with the rest).
    pub unreadable: usize,
}

/// Encodes `entries` as rows of `school`, node `node`.
pub fn encode(node: u64, school: &str, entries: &[OutboxEntry]) -> Result<Bodies, ExportError> {
    let mut bodies = Bodies {
        visits: Vec::with_capacity(entries.len() * 300),
        ..Bodies::default()
    };
    let mut id = String::with_capacity(48);
    for entry in entries {
        match entry.kind {
            OutboxKind::Visit => {
                let Ok(record) = RecordRef::decode(&entry.bytes) else {
                    bodies.unreadable += 1;
                    continue;
                };
                id.clear();
                // Writing to a String cannot fail.
                let _ = write!(id, "{node:016x}-{:x}-{:x}", entry.batch, entry.index);
                crate::row_binary::write_visit(&mut bodies.visits, &id, school, &record);
                bodies.visit_rows += 1;
            }
            OutboxKind::Alert => {
                let Ok(alert) = serde_json::from_slice::<Alert>(&entry.bytes) else {
                    bodies.unreadable += 1;
                    continue;
                };
                let row = AlertRow::from_alert(node, entry.batch, school, &alert);
                serde_json::to_writer(&mut bodies.alerts, &row)?;
                bodies.alerts.push(b'\n');
                bodies.alert_rows += 1;
            }
        }
    }
    Ok(bodies)
}
