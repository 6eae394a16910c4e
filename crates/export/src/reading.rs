//! Reading the trust's tables back: one school's (or every school's) visit records and
//! alerts of a time range, as SafeGate's own [`Record`]s and [`Alert`]s, so the weekly
//! report is built by the same code as from the school's own visit log. Every query
//! reads with `FINAL`: rows inserted twice by a retry count once.

use safegate_store::{Alert, Record};

use crate::ExportError;
use crate::client::ClickHouse;
use crate::config::ClickHouseConfig;
use crate::rows::{ALERT_READ_COLUMNS, AlertRow, VISIT_READ_COLUMNS, VisitRow};

/// Which schools a query covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One school, by its id.
    School(String),
    /// Every school of the trust.
    Trust,
}

/// A ClickHouse string literal.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            _ => out.push(c),
        }
    }
    out.push('\'');
    out
}

fn school_condition(scope: &Scope) -> String {
    match scope {
        Scope::School(id) => format!("school = {}", quote(id)),
        Scope::Trust => "1".to_owned(),
    }
}

/// Visit records from `since` (inclusive) to `until` (exclusive), Unix microseconds,
/// oldest first, handed to `emit` one at a time.
pub async fn visits(
    client: &ClickHouse,
    config: &ClickHouseConfig,
    scope: &Scope,
    (since, until): (u64, u64),
    mut emit: impl FnMut(Record),
) -> Result<usize, ExportError> {
    let sql = format!(
        "SELECT {VISIT_READ_COLUMNS} FROM {} FINAL WHERE {} AND at >= toDateTime({}) \
         AND at <= toDateTime({}) AND at_micros >= {since} AND at_micros < {until} \
         ORDER BY at_micros FORMAT JSONEachRow",
        config.visits(),
        school_condition(scope),
        since / 1_000_000,
        until / 1_000_000,
    );
    let text = client.select(&sql).await?;
    let mut n = 0;
    for line in text.lines().filter(|l| !l.is_empty()) {
        let row: VisitRow<'_> = serde_json::from_str(line)?;
        emit(row.to_record());
        n += 1;
    }
    Ok(n)
}

/// Alerts with an occurrence in the range, in their latest state.
pub async fn alerts(
    client: &ClickHouse,
    config: &ClickHouseConfig,
    scope: &Scope,
    (since, until): (u64, u64),
) -> Result<Vec<Alert>, ExportError> {
    let sql = format!(
        "SELECT {ALERT_READ_COLUMNS} FROM {} FINAL WHERE {} AND last_at_micros >= {since} \
         AND first_at_micros < {until} ORDER BY first_at_micros FORMAT JSONEachRow",
        config.alerts(),
        school_condition(scope),
    );
    let text = client.select(&sql).await?;
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|line| Ok(serde_json::from_str::<AlertRow>(line)?.to_alert()))
        .collect()
}
