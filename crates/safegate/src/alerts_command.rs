//! `safegate alerts list|show|ack|close|export`: the safeguarding alerts in the
//! database, their handling (acknowledged with a note, closed), with who did it, and
//! one alert as a printable concern record for the school's safeguarding system. Like
//! `safegate log`, it works on the database directly or, while SafeGate runs, through
//! its control socket ([`safegate_control`]): the request is an [`AlertsRequest`] and
//! [`safegate_control::alerts::execute`] does the work in whichever process holds the
//! database.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand, ValueEnum};
use jiff::Timestamp;
use safegate_control::alerts::AlertsRequest;
use safegate_control::terminal::TerminalSafe;
use safegate_control::time_text::{micros, parse_time, policy_timezone};
use safegate_control::{Request, open_store_or_connect};
use safegate_store::{AlertFilter, AlertKind, AlertStatus};

use crate::settings::{Config, ConfigArgs};

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
    /// Export an alert as a printable concern record (HTML, one or two pages: who,
    /// which computer, when, what, evidence, actions and notes so far) for the
    /// school's safeguarding system. Written private (0600) into data_dir/reports
    /// (listed on the web interface's Reports page) unless --out is given. The export
    /// is recorded in the audit log.
    #[command(
        after_help = "Examples:\n  safegate alerts export 35\n  safegate alerts export 35 --out /home/dsl/alert-35.html\n  safegate alerts export 35 --out -      # to standard output"
    )]
    Export(AlertsExportArgs),
}

/// `safegate alerts export`.
#[derive(Debug, Args)]
pub struct AlertsExportArgs {
    /// The alert: its number (`#35`) or its id.
    #[arg(value_parser = parse_alert)]
    pub id: (u64, bool),
    /// The file to write (`-`: standard output); default
    /// data_dir/reports/safegate-concern-alert-<id>-<date>.html.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Who exports it, named on the record (default: the login name running this
    /// command).
    #[arg(long)]
    pub by: Option<String>,
    /// Where the configuration comes from.
    #[command(flatten)]
    pub config: ConfigArgs,
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
    /// The alert: its number as the lists show it (`#35`) or its id (`2000035`).
    #[arg(value_parser = parse_alert)]
    pub id: (u64, bool),
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
    /// The alert: its number as the lists show it (`#35`) or its id (`2000035`).
    #[arg(value_parser = parse_alert)]
    pub id: (u64, bool),
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

/// Runs one `safegate alerts` command.
pub fn run(action: &AlertsAction) -> Result<()> {
    let (config_args, request) = match action {
        AlertsAction::Export(args) => return export(args),
        AlertsAction::List(args) => {
            let config = Config::load(&args.config.config, &args.config.set)?;
            let (tz, timezone) = policy_timezone(&config.policy.file);
            let now = Timestamp::now();
            let time = |flag: &str, text: &Option<String>| -> Result<Option<u64>> {
                Ok(text
                    .as_deref()
                    .map(|t| parse_time(flag, t, &tz, now).map(micros))
                    .transpose()?)
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
                    id: args.id.0,
                    by_number: args.id.1,
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
                    id: args.id.0,
                    by_number: args.id.1,
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
    // Evidence holds recorded URLs and search terms: shown, never sent to the terminal.
    let mut out = TerminalSafe::new(std::io::stdout().lock());
    access.run(&Request::Alerts(request), &mut out)?;
    out.into_inner()?.flush()?;
    Ok(())
}

/// `safegate alerts export`: the concern record, made where the database is, written
/// here (private) into data_dir/reports, `--out`, or standard output.
fn export(args: &AlertsExportArgs) -> Result<()> {
    let config = Config::load(&args.config.config, &args.config.set)?;
    if args.out.is_none()
        && let Some(rerun) = crate::service_user::rerun_if_root(
            &args.config.config,
            &config.data_dir,
            "Exporting the concern record",
            "so that its file in data_dir/reports stays readable by SafeGate",
        )
    {
        anyhow::ensure!(rerun?.success(), "the record was not exported (see above)");
        return Ok(());
    }
    let (tz, timezone) = policy_timezone(&config.policy.file);
    let request = AlertsRequest::Export {
        id: args.id.0,
        by_number: args.id.1,
        by: args.by.clone().unwrap_or_else(login_name),
        school: policy_school(&config.policy.file),
        timezone,
    };
    let access = open_store_or_connect(&config.data_dir)?;
    let mut page = Vec::new();
    access.run(&Request::Alerts(request), &mut page)?;
    let path = match args.out.as_deref() {
        Some(path) if path == Path::new("-") => {
            // Escaped HTML, but records may hold control characters: never raw to a
            // terminal.
            let mut out = TerminalSafe::new(std::io::stdout().lock());
            out.write_all(&page)?;
            out.into_inner()?.flush()?;
            return Ok(());
        }
        Some(path) => {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .with_context(|| format!("--out {}: not a file name", path.display()))?;
            let dir = match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
                _ => PathBuf::from("."),
            };
            safegate_report::make_private_dir(&dir, false)?;
            safegate_report::write_private(&dir, name, &page)?
        }
        None => {
            let dir = config.data_dir.join("reports");
            safegate_report::make_private_dir(&dir, true)?;
            let date = tz.to_datetime(Timestamp::now()).date().to_string();
            let name = safegate_report::concern::file_name(args.id.0, &date);
            safegate_report::write_private(&dir, &name, &page)?
        }
    };
    let shown = if args.id.1 { "#" } else { "" };
    println!(
        "concern record of alert {shown}{}: {}",
        args.id.0,
        path.display()
    );
    Ok(())
}

/// The school's name from the policy file's `school` key, without compiling the
/// policy (none when the file cannot be read or gives none).
fn policy_school(policy_file: &Path) -> Option<String> {
    let text = std::fs::read_to_string(policy_file).ok()?;
    let table: toml::Table = toml::from_str(&text).ok()?;
    match table.get("school") {
        Some(toml::Value::String(name)) if !name.trim().is_empty() => Some(name.trim().to_owned()),
        _ => None,
    }
}

/// An alert as given on the command line: `#35` is the short number people read
/// (true), `2000035` the id (false).
fn parse_alert(text: &str) -> Result<(u64, bool), String> {
    let (digits, by_number) = match text.trim().strip_prefix('#') {
        Some(number) => (number, true),
        None => (text.trim(), false),
    };
    digits
        .parse()
        .map(|value| (value, by_number))
        .map_err(|_| format!("`{text}` is not an alert: give its number (#35) or its id"))
}

/// The person running the command: `SUDO_USER`, else `USER`, else `unknown`.
fn login_name() -> String {
    std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".to_owned())
}
