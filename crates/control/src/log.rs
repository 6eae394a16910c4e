//! The `safegate log` commands themselves, run against an open [`Store`]: in this
//! process when the database is free, or inside `safegate run` through the control
//! socket. Either way the same [`crate::prepare`] does the database work and the same
//! [`Output::write_to`] renders it, so the output is byte for byte the same.

use std::io::Write;
use std::time::Duration;

use safegate_activity::visits::{Visit, join};
use safegate_store::{
    Outcome, Query, Record, Store, StoreError, write_csv_row, write_records_csv, write_records_json,
};
use serde::{Deserialize, Serialize};

use crate::export;
use crate::table::{printable, write_table};
use crate::time_text::{local_text, rfc3339_text, zone_named};

/// Longest path shown in the text table; `--json` and `--csv` show it whole.
const TABLE_PATH_CHARS: usize = 60;

/// How query output is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// An aligned table for people.
    #[default]
    Text,
    /// A JSON array.
    Json,
    /// CSV with a header row.
    Csv,
}

/// `safegate log query`: records (or visits) matching every condition given.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogQuery {
    /// Only this user's records.
    pub user: Option<String>,
    /// Only this exact host.
    pub host: Option<String>,
    /// Only records in this category.
    pub category: Option<String>,
    /// Only blocked records.
    pub blocked_only: bool,
    /// Only records with search terms.
    pub search_terms_only: bool,
    /// From this time on, Unix microseconds (inclusive).
    pub since: Option<u64>,
    /// Before this time, Unix microseconds (exclusive).
    pub until: Option<u64>,
    /// At most this many records (the oldest).
    pub limit: Option<usize>,
    /// Join the records into visits with this idle gap (microseconds).
    pub visits_idle_gap_micros: Option<u64>,
    /// Output format.
    pub format: Format,
    /// IANA time zone for the times in text output and visit times.
    pub timezone: String,
}

impl LogQuery {
    /// The store's query for these conditions.
    pub fn store_query(&self) -> Query {
        Query {
            user: self.user.clone(),
            client: None,
            host: self.host.clone(),
            category: self.category.clone(),
            blocked_only: self.blocked_only,
            search_terms_only: self.search_terms_only,
            since: self.since,
            until: self.until,
            limit: self.limit,
        }
    }
}

/// `safegate log purge`: remove records older than a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogPurge {
    /// Records before this time (Unix microseconds) are removed.
    pub before: u64,
    /// IANA time zone for the message.
    #[serde(default)]
    pub timezone: String,
}

/// `safegate log export`: one user's records, as JSON and CSV (subject access request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogExport {
    /// The user name, exactly as recorded.
    pub user: String,
    /// From this time on, Unix microseconds (inclusive).
    #[serde(default)]
    pub since: Option<u64>,
    /// Before this time, Unix microseconds (exclusive).
    #[serde(default)]
    pub until: Option<u64>,
}

/// What a command found, ready to be written.
#[derive(Debug)]
pub enum Output {
    /// Query results.
    Records {
        /// The records, oldest first.
        records: Vec<Record>,
        /// How to write them.
        format: Format,
        /// Time zone name for text output.
        timezone: String,
    },
    /// Query results joined into visits.
    Visits {
        /// The visits, in start order.
        visits: Vec<Visit>,
        /// Records they were made of.
        records: usize,
        /// How to write them.
        format: Format,
        /// Time zone name for the times.
        timezone: String,
    },
    /// A purge.
    Purged {
        /// Records removed.
        removed: usize,
        /// The cut-off, Unix microseconds.
        before: u64,
        /// Time zone name for the message.
        timezone: String,
    },
    /// An export, written as frames (see [`crate::export`]).
    Export {
        /// The user's records, oldest first.
        records: Vec<Record>,
    },
}

/// Runs a query against the store (the fallible part; writing comes after).
pub fn query(store: &Store, command: &LogQuery) -> Result<Output, StoreError> {
    let records = store.query(&command.store_query())?;
    Ok(match command.visits_idle_gap_micros {
        Some(gap) => Output::Visits {
            visits: join(&records, Duration::from_micros(gap)),
            records: records.len(),
            format: command.format,
            timezone: command.timezone.clone(),
        },
        None => Output::Records {
            records,
            format: command.format,
            timezone: command.timezone.clone(),
        },
    })
}

/// Removes the records before the cut-off.
pub fn purge(store: &Store, command: &LogPurge) -> Result<Output, StoreError> {
    let removed = store.purge_before(command.before)?;
    Ok(Output::Purged {
        removed,
        before: command.before,
        timezone: command.timezone.clone(),
    })
}

/// Reads one user's records for an export.
pub fn export(store: &Store, command: &LogExport) -> Result<Output, StoreError> {
    let records = store.export_user(&command.user, command.since, command.until)?;
    Ok(Output::Export { records })
}

impl Output {
    /// One line for the service's log: what was done, how much.
    pub fn summary(&self) -> String {
        match self {
            Output::Records { records, .. } => format!("{} record(s)", records.len()),
            Output::Visits {
                visits, records, ..
            } => format!("{} visit(s) from {records} record(s)", visits.len()),
            Output::Purged { removed, .. } => format!("{removed} record(s) purged"),
            Output::Export { records } => format!("{} record(s) exported", records.len()),
        }
    }

    /// Writes the output; only writing can fail here.
    pub fn write_to(&self, out: &mut dyn Write) -> Result<(), StoreError> {
        match self {
            Output::Records {
                records,
                format,
                timezone,
            } => match format {
                Format::Json => write_records_json(records, out),
                Format::Csv => write_records_csv(records, out),
                Format::Text => Ok(write_records_text(records, timezone, out)?),
            },
            Output::Visits {
                visits,
                format,
                timezone,
                ..
            } => Ok(write_visits(visits, *format, timezone, out)?),
            Output::Purged {
                removed,
                before,
                timezone,
            } => {
                let tz = zone_named(timezone);
                writeln!(
                    out,
                    "removed {removed} visit-log record(s) from before {} ({timezone})",
                    local_text(*before, &tz)
                )?;
                Ok(())
            }
            Output::Export { records } => export::write_frames(records, out),
        }
    }
}

fn shortened(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(max_chars.saturating_sub(1)).collect();
    short.push('…');
    short
}

fn decision(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Allowed => "allowed",
        Outcome::Blocked => "blocked",
        Outcome::Failed => "failed",
    }
}

fn write_records_text(
    records: &[Record],
    timezone: &str,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    if records.is_empty() {
        return writeln!(out, "no records match");
    }
    let tz = zone_named(timezone);
    let time_header = format!("TIME ({timezone})");
    let rows: Vec<[String; 10]> = records
        .iter()
        .map(|r| {
            [
                local_text(r.at_unix_micros, &tz),
                r.user.as_deref().map_or_else(|| "-".to_owned(), printable),
                printable(&r.computer_text()),
                decision(r.outcome).to_owned(),
                printable(&r.rule),
                printable(&r.method),
                printable(&r.host),
                r.path.as_deref().map_or_else(
                    || "-".to_owned(),
                    |p| shortened(&printable(p), TABLE_PATH_CHARS),
                ),
                r.status.to_string(),
                r.bytes_down.to_string(),
            ]
        })
        .collect();
    let header = [
        time_header.as_str(),
        "USER",
        "COMPUTER",
        "DECISION",
        "RULE",
        "METHOD",
        "HOST",
        "PATH",
        "STATUS",
        "BYTES",
    ];
    write_table(out, header, &rows, &[8, 9])?;
    writeln!(out, "{} record(s)", records.len())
}

/// One visit as written in JSON.
#[derive(Serialize)]
struct VisitOut<'a> {
    user: &'a str,
    site: &'a str,
    start: String,
    end: String,
    start_micros: u64,
    end_micros: u64,
    duration_micros: u64,
    requests: u64,
    blocked: u64,
    bytes_down: u64,
}

/// The CSV header for visits.
pub const VISITS_CSV_HEADER: [&str; 10] = [
    "start",
    "end",
    "duration_seconds",
    "user",
    "site",
    "requests",
    "blocked",
    "bytes_down",
    "start_micros",
    "end_micros",
];

fn human_duration(micros: u64) -> String {
    humantime::format_duration(Duration::from_secs(micros / 1_000_000)).to_string()
}

fn write_visits(
    visits: &[Visit],
    format: Format,
    timezone: &str,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let tz = zone_named(timezone);
    match format {
        Format::Json => {
            let rows: Vec<VisitOut<'_>> = visits
                .iter()
                .map(|v| VisitOut {
                    user: &v.user,
                    site: &v.site,
                    start: rfc3339_text(v.start_micros, &tz),
                    end: rfc3339_text(v.end_micros, &tz),
                    start_micros: v.start_micros,
                    end_micros: v.end_micros,
                    duration_micros: v.duration_micros(),
                    requests: v.requests,
                    blocked: v.blocked,
                    bytes_down: v.bytes_down,
                })
                .collect();
            serde_json::to_writer_pretty(&mut *out, &rows)?;
            out.write_all(b"\n")
        }
        Format::Csv => {
            write_csv_row(out, VISITS_CSV_HEADER.iter().copied())?;
            for v in visits {
                let row = [
                    rfc3339_text(v.start_micros, &tz),
                    rfc3339_text(v.end_micros, &tz),
                    (v.duration_micros() / 1_000_000).to_string(),
                    v.user.clone(),
                    v.site.clone(),
                    v.requests.to_string(),
                    v.blocked.to_string(),
                    v.bytes_down.to_string(),
                    v.start_micros.to_string(),
                    v.end_micros.to_string(),
                ];
                write_csv_row(out, row.iter().map(String::as_str))?;
            }
            Ok(())
        }
        Format::Text => {
            if visits.is_empty() {
                return writeln!(out, "no visits match");
            }
            let rows: Vec<[String; 8]> = visits
                .iter()
                .map(|v| {
                    [
                        local_text(v.start_micros, &tz),
                        local_text(v.end_micros, &tz),
                        human_duration(v.duration_micros()),
                        printable(&v.user),
                        printable(&v.site),
                        v.requests.to_string(),
                        v.blocked.to_string(),
                        v.bytes_down.to_string(),
                    ]
                })
                .collect();
            let start = format!("START ({timezone})");
            let header = [
                start.as_str(),
                "END",
                "DURATION",
                "USER",
                "SITE",
                "REQUESTS",
                "BLOCKED",
                "BYTES",
            ];
            write_table(out, header, &rows, &[5, 6, 7])?;
            writeln!(out, "{} visit(s)", visits.len())
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use safegate_store::{IdentifiedBy, SeenAs};

    /// A record for tests.
    pub(crate) fn record(at: u64, user: Option<&str>, host: &str, outcome: Outcome) -> Record {
        Record {
            at_unix_micros: at,
            user: user.map(str::to_owned),
            role: "pupil".into(),
            group: None,
            client: [10, 0, 0, 7].into(),
            identified_by: IdentifiedBy::Default,
            method: "GET".into(),
            scheme: "http".into(),
            host: host.into(),
            port: 80,
            path: Some("/page?q=1".into()),
            categories: vec!["news".into()],
            outcome,
            rule: if outcome == Outcome::Blocked {
                "category:pupil:news".into()
            } else {
                "default".into()
            },
            status: if outcome == Outcome::Blocked {
                403
            } else {
                200
            },
            bytes_up: 10,
            bytes_down: 1234,
            duration_micros: 2_000_000,
            search: None,
            seen_as: SeenAs::PlainHttp,
            user_agent: None,
            failure: None,
            computer: None,
            content: None,
        }
    }

    const T0: u64 = 1_782_900_000_000_000; // 2026-07-01T10:00:00Z

    fn written(output: &Output) -> String {
        let mut out = Vec::new();
        output.write_to(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_table_is_aligned_in_local_time_and_escapes_control_characters() {
        let mut evil = record(T0, Some("ada"), "www.bbc.co.uk", Outcome::Allowed);
        evil.path = Some("/\x1b[2Jx".into());
        evil.computer = Some("ICT-PC07\x1b[2J".into());
        let output = Output::Records {
            records: vec![
                evil,
                record(T0 + 1_000_000, None, "bet.example", Outcome::Blocked),
            ],
            format: Format::Text,
            timezone: "Europe/London".into(),
        };
        let text = written(&output);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(
            lines[0].starts_with("TIME (Europe/London)  USER  COMPUTER"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("2026-07-01 11:00:00   ada   ICT-PC07?[2J (10.0.0.7)"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("2026-07-01 11:00:01   -     10.0.0.7 "),
            "{text}"
        );
        assert!(
            lines[2].contains("blocked") && lines[2].contains("403"),
            "{text}"
        );
        assert!(!text.contains('\x1b'), "{text:?}");
        // Columns line up: HOST starts at the same offset in every row.
        let col = lines[0].find("HOST").unwrap();
        assert_eq!(&lines[1][col..col + 13], "www.bbc.co.uk");
        assert_eq!(&lines[2][col..col + 11], "bet.example");
        assert_eq!(lines[3], "2 record(s)");
    }

    #[test]
    fn visits_are_written_in_three_formats() {
        let records = [
            record(T0, Some("ada"), "www.bbc.co.uk", Outcome::Allowed),
            record(
                T0 + 60_000_000,
                Some("ada"),
                "news.bbc.co.uk",
                Outcome::Blocked,
            ),
        ];
        let visits = join(&records, Duration::from_secs(300));
        let output = |format| Output::Visits {
            visits: visits.clone(),
            records: 2,
            format,
            timezone: "UTC".into(),
        };
        let json: serde_json::Value =
            serde_json::from_str(&written(&output(Format::Json))).unwrap();
        assert_eq!(json[0]["site"], "bbc.co.uk");
        assert_eq!(json[0]["requests"], 2);
        assert_eq!(json[0]["blocked"], 1);
        assert_eq!(json[0]["duration_micros"], 62_000_000);
        assert_eq!(json[0]["start"], "2026-07-01T10:00:00+00:00");
        let csv = written(&output(Format::Csv));
        assert!(
            csv.starts_with("start,end,duration_seconds,user,site"),
            "{csv}"
        );
        assert!(csv.contains(",62,ada,bbc.co.uk,2,1,2468,"), "{csv}");
        let text = written(&output(Format::Text));
        assert!(text.contains("1m 2s"), "{text}");
        assert!(text.ends_with("1 visit(s)\n"), "{text}");
    }

    #[test]
    fn csv_rows_neutralise_formulas() {
        let mut out = Vec::new();
        write_csv_row(&mut out, ["=1+1", "a,b", "x"].into_iter()).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "'=1+1,\"a,b\",x\r\n");
    }

    #[test]
    fn purge_message_names_the_cutoff_in_local_time() {
        let output = Output::Purged {
            removed: 3,
            before: T0,
            timezone: "Europe/London".into(),
        };
        assert_eq!(
            written(&output),
            "removed 3 visit-log record(s) from before 2026-07-01 11:00:00 (Europe/London)\n"
        );
    }
}
