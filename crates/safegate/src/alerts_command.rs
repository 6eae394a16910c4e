//! `safegate alerts list|show|ack|close`: the safeguarding alerts in the database,
//! and their handling (acknowledged with a note, closed), with who did it. Like
//! `safegate log`, it works on the database directly or, while SafeGate runs, through
//! its control socket ([`crate::control`]): the request is an [`AlertsRequest`] and
//! [`execute`] does the work in whichever process holds the database.

use std::fmt::Write as _;

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use jiff::Timestamp;
use safegate_store::{Alert, AlertFilter, AlertKind, AlertStatus, StatusChange, Store};
use serde::{Deserialize, Serialize};

use crate::cli::ConfigArgs;
use crate::control::{CommandError, Request, open_store_or_connect};
use crate::settings::Config;
use crate::time_arg::{local_text, micros, parse_time, policy_timezone, zone_named};

/// `safegate alerts ...`.
#[derive(Debug, Subcommand)]
pub enum AlertsAction {
    /// List alerts, oldest first: id, status, severity, kind, who, first and latest
    /// occurrence (school time), occurrences, summary.
    List(AlertsListArgs),
    /// Show one alert with its evidence (the records that raised it) and history.
    Show(AlertsShowArgs),
    /// Acknowledge an alert: someone is dealing with it (folding continues).
    Ack(AlertsChangeArgs),
    /// Close an alert: dealt with. The next occurrence raises a new alert.
    Close(AlertsChangeArgs),
}

/// Status names on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StatusArg {
    /// Not looked at yet.
    New,
    /// Being dealt with.
    Acknowledged,
    /// Dealt with.
    Closed,
}

impl From<StatusArg> for AlertStatus {
    fn from(status: StatusArg) -> Self {
        match status {
            StatusArg::New => AlertStatus::New,
            StatusArg::Acknowledged => AlertStatus::Acknowledged,
            StatusArg::Closed => AlertStatus::Closed,
        }
    }
}

/// `safegate alerts list`.
#[derive(Debug, Args)]
pub struct AlertsListArgs {
    /// Only alerts with this status.
    #[arg(long, value_enum)]
    pub status: Option<StatusArg>,
    /// Only open alerts (new or acknowledged).
    #[arg(long)]
    pub open: bool,
    /// Only this person (user name, or client address).
    #[arg(long)]
    pub who: Option<String>,
    /// Only this kind (safeguarding_phrase, repeated_blocks, circumvention,
    /// locked_category, concurrent_login, heavy_use, staff_social_core_hours).
    #[arg(long)]
    pub kind: Option<String>,
    /// Alerts with an occurrence at or after this time ("2026-11-16", "2026-11-16
    /// 09:00", RFC 3339, or "now").
    #[arg(long)]
    pub since: Option<String>,
    /// Alerts that began before this time.
    #[arg(long)]
    pub until: Option<String>,
    /// JSON (an array of alerts with their evidence) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Where the configuration comes from.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `safegate alerts show`.
#[derive(Debug, Args)]
pub struct AlertsShowArgs {
    /// The alert's id.
    pub id: u64,
    /// JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Where the configuration comes from.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `safegate alerts ack|close`.
#[derive(Debug, Args)]
pub struct AlertsChangeArgs {
    /// The alert's id.
    pub id: u64,
    /// What was done, for the record.
    #[arg(long)]
    pub note: Option<String>,
    /// Who did it (default: the login name running this command).
    #[arg(long)]
    pub by: Option<String>,
    /// Where the configuration comes from.
    #[command(flatten)]
    pub config: ConfigArgs,
}

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
        /// Its id.
        id: u64,
        /// JSON output.
        json: bool,
        /// The school's time zone.
        timezone: String,
    },
    /// Acknowledge or close.
    SetStatus {
        /// Its id.
        id: u64,
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
        }
    }
}

/// Runs one `safegate alerts` command.
pub fn run(action: &AlertsAction) -> Result<()> {
    let (config_args, request) = match action {
        AlertsAction::List(args) => {
            let config = Config::load(&args.config.config, &args.config.set)?;
            let (tz, timezone) = policy_timezone(&config.policy.file);
            let now = Timestamp::now();
            let time = |flag: &str, text: &Option<String>| -> Result<Option<u64>> {
                text.as_deref()
                    .map(|t| parse_time(flag, t, &tz, now).map(micros))
                    .transpose()
            };
            let kind = match &args.kind {
                Some(name) => Some(
                    AlertKind::ALL
                        .into_iter()
                        .find(|k| k.as_str() == name)
                        .ok_or_else(|| anyhow::anyhow!("--kind {name}: not a kind of alert"))?,
                ),
                None => None,
            };
            let filter = AlertFilter {
                since: time("--since", &args.since)?,
                until: time("--until", &args.until)?,
                status: args.status.map(Into::into),
                open_only: args.open,
                who: args.who.clone(),
                kind,
            };
            (
                config,
                AlertsRequest::List {
                    filter,
                    json: args.json,
                    timezone,
                },
            )
        }
        AlertsAction::Show(args) => {
            let config = Config::load(&args.config.config, &args.config.set)?;
            let (_, timezone) = policy_timezone(&config.policy.file);
            (
                config,
                AlertsRequest::Show {
                    id: args.id,
                    json: args.json,
                    timezone,
                },
            )
        }
        AlertsAction::Ack(args) | AlertsAction::Close(args) => {
            let config = Config::load(&args.config.config, &args.config.set)?;
            let (_, timezone) = policy_timezone(&config.policy.file);
            let status = if matches!(action, AlertsAction::Ack(_)) {
                AlertStatus::Acknowledged
            } else {
                AlertStatus::Closed
            };
            let by = args.by.clone().unwrap_or_else(login_name);
            (
                config,
                AlertsRequest::SetStatus {
                    id: args.id,
                    status,
                    by,
                    note: args.note.clone(),
                    at_unix_micros: micros(Timestamp::now()),
                    timezone,
                },
            )
        }
    };
    let access = open_store_or_connect(&config_args.data_dir)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    access.run(&Request::Alerts(request), &mut out)
}

/// The person running the command: `SUDO_USER`, else `USER`, else `unknown`.
fn login_name() -> String {
    std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".to_owned())
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
            let mut text = String::new();
            if alerts.is_empty() {
                text.push_str("no alerts\n");
            }
            for alert in &alerts {
                let _ = writeln!(text, "{}", list_line(alert, &tz));
            }
            Ok((text.into_bytes(), summary))
        }
        AlertsRequest::Show {
            id,
            json: as_json,
            timezone,
        } => {
            let alert = store
                .alert(*id)?
                .ok_or_else(|| CommandError::Refused(format!("there is no alert {id}")))?;
            let summary = format!("alert {id} shown");
            if *as_json {
                return Ok((json_lines(&alert)?, summary));
            }
            Ok((details(&alert, &zone_named(timezone)).into_bytes(), summary))
        }
        AlertsRequest::SetStatus {
            id,
            status,
            by,
            note,
            at_unix_micros,
            timezone,
        } => {
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
                format!("{}\n", list_line(&alert, &tz)).into_bytes(),
                format!("alert {id} {} by {by:?}", status.as_str()),
            ))
        }
    }
}

/// `value` as pretty JSON and a final newline.
fn json_lines<T: Serialize>(value: &T) -> Result<Vec<u8>, CommandError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(safegate_store::StoreError::from)?;
    bytes.push(b'\n');
    Ok(bytes)
}

fn list_line(alert: &Alert, tz: &jiff::tz::TimeZone) -> String {
    format!(
        "#{:<6} {:<12} {:<6} {:<24} {:<20} {}  {}  x{}  {}",
        alert.id,
        alert.status.as_str(),
        alert.severity.as_str(),
        alert.kind.as_str(),
        alert.who,
        local_text(alert.first_at_unix_micros, tz),
        local_text(alert.last_at_unix_micros, tz),
        alert.occurrences,
        alert.summary
    )
}

fn details(alert: &Alert, tz: &jiff::tz::TimeZone) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "Alert #{}", alert.id);
    let _ = writeln!(text, "  status:      {}", alert.status.as_str());
    let _ = writeln!(text, "  severity:    {}", alert.severity.as_str());
    let _ = writeln!(text, "  kind:        {}", alert.kind.as_str());
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
