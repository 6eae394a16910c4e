//! `safegate log query|purge|export` on the command line: reads the configuration
//! (data_dir, retention, the policy's time zone), turns the options into a
//! [`Request`], and runs it on the database directly or through the running service's
//! control socket ([`open_store_or_connect`]).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use jiff::Timestamp;
use safegate_activity::DEFAULT_IDLE_GAP;

use safegate_control::export::ExportFiles;
use safegate_control::log::{Format, LogExport, LogPurge, LogQuery};
use safegate_control::terminal::TerminalSafe;
use safegate_control::time_text::{before, micros, parse_time, policy_timezone};
use safegate_control::{ControlError, Request, open_store_or_connect};

use crate::settings::{Config, ConfigArgs};

/// Seconds in a day, for `store.retention_days`.
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// `safegate log ...`
#[derive(Debug, Subcommand)]
pub enum LogAction {
    /// Show visit-log records (oldest first), or the visits made of them, matching
    /// every condition given.
    #[command(after_help = LOG_QUERY_EXAMPLES)]
    Query(LogQueryArgs),
    /// Remove records older than the retention period (store.retention_days), or than
    /// --before. SafeGate also does this by itself once a day.
    #[command(after_help = LOG_PURGE_EXAMPLES)]
    Purge(LogPurgeArgs),
    /// Export every record about one user (subject access request) as
    /// safegate-export-<user>-<date>.json and .csv, readable by you alone.
    #[command(after_help = LOG_EXPORT_EXAMPLES)]
    Export(LogExportArgs),
    /// Bring the visit log's index up to date with this version now. SafeGate does
    /// it by itself when it starts (the first start after an upgrade takes longer on
    /// a large log); run this with SafeGate stopped to do it beforehand.
    Migrate(LogMigrateArgs),
}

const LOG_QUERY_EXAMPLES: &str =
    "Times (--since, --until): RFC 3339 (2026-11-23T10:00:00Z), local time in the \
policy's time zone (2026-11-23 10:00), a local date (2026-11-23 = its midnight), or a time ago \
(7d, 24h, 90m).

Examples:
  safegate log query --since 24h
  safegate log query --user ada.lovelace --since 2026-11-23 --until 2026-11-24
  safegate log query --blocked --since 7d --csv > blocked.csv
  safegate log query --host www.youtube.com --visits
  safegate log query --search-terms --since 2026-11-23 --json";

const LOG_PURGE_EXAMPLES: &str = "Examples:
  safegate log purge                     # older than store.retention_days
  safegate log purge --before 90d
  safegate log purge --before 2026-09-01";

const LOG_EXPORT_EXAMPLES: &str = "Examples:
  safegate log export --user ada.lovelace
  safegate log export --user ada.lovelace --since 2026-09-01 --out /root/sar";

/// `safegate log query ...`
#[derive(Debug, Args)]
pub struct LogQueryArgs {
    /// Only this user's records (the name as recorded).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Only records for this exact host name, e.g. www.youtube.com.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Only records in this category, e.g. gambling.
    #[arg(long, value_name = "CATEGORY")]
    pub category: Option<String>,
    /// Only blocked requests.
    #[arg(long)]
    pub blocked: bool,
    /// Only requests with search terms (search engines, video sites).
    #[arg(long)]
    pub search_terms: bool,
    /// From this time on (see below for the forms).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Before this time.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// At most this many records (the oldest that match).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Join the records into visits: one person's consecutive requests to one site,
    /// with a start, an end and a duration.
    #[arg(long)]
    pub visits: bool,
    /// With --visits: the pause that ends a visit [default: 5m].
    #[arg(long, value_name = "DURATION", requires = "visits", value_parser = humantime::parse_duration)]
    pub idle_gap: Option<std::time::Duration>,
    /// Print JSON instead of a table.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print CSV instead of a table.
    #[arg(long)]
    pub csv: bool,
    /// Where the configuration (and through it data_dir and the policy's time zone)
    /// comes from.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `safegate log purge ...`
#[derive(Debug, Args)]
pub struct LogPurgeArgs {
    /// Remove records from before this time [default: now - store.retention_days].
    /// Forms as for `log query --since`.
    #[arg(long, value_name = "TIME")]
    pub before: Option<String>,
    /// Where the configuration comes from.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `safegate log export ...`
#[derive(Debug, Args)]
pub struct LogExportArgs {
    /// The user whose records to export (the name exactly as recorded).
    #[arg(long, value_name = "USER")]
    pub user: String,
    /// From this time on. Forms as for `log query --since`.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Before this time.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Folder to write the two files in.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
    /// Where the configuration comes from.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `safegate log migrate ...`
#[derive(Debug, Args)]
pub struct LogMigrateArgs {
    /// Where the configuration (and through it data_dir) comes from.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Runs one `safegate log` command.
pub fn run(action: &LogAction) -> Result<()> {
    let result = match action {
        LogAction::Query(args) => query(args),
        LogAction::Purge(args) => purge(args),
        LogAction::Export(args) => export(args),
        LogAction::Migrate(args) => migrate(args),
    };
    match result {
        // `safegate log query | head`: the reader has had enough; not an error.
        Err(error) if is_broken_pipe(&error) => Ok(()),
        other => other,
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    let broken = |kind: Option<std::io::ErrorKind>| kind == Some(std::io::ErrorKind::BrokenPipe);
    error.chain().any(|cause| {
        broken(
            cause
                .downcast_ref::<std::io::Error>()
                .map(std::io::Error::kind),
        ) || broken(
            cause
                .downcast_ref::<serde_json::Error>()
                .and_then(serde_json::Error::io_error_kind),
        ) || cause
            .downcast_ref::<ControlError>()
            .is_some_and(ControlError::is_broken_pipe)
    })
}

/// Parses an optional time option into Unix microseconds.
fn time_option(
    flag: &str,
    text: Option<&str>,
    tz: &jiff::tz::TimeZone,
    now: Timestamp,
) -> Result<Option<u64>> {
    Ok(text
        .map(|text| parse_time(flag, text, tz, now).map(micros))
        .transpose()?)
}

fn query(args: &LogQueryArgs) -> Result<()> {
    let config = Config::load(&args.config.config, &args.config.set)?;
    let (tz, timezone) = policy_timezone(&config.policy.file);
    let now = Timestamp::now();
    let format = if args.json {
        Format::Json
    } else if args.csv {
        Format::Csv
    } else {
        Format::Text
    };
    let visits_idle_gap_micros = args.visits.then(|| {
        let gap = args.idle_gap.unwrap_or(DEFAULT_IDLE_GAP);
        u64::try_from(gap.as_micros()).unwrap_or(u64::MAX)
    });
    let request = Request::LogQuery(LogQuery {
        user: args.user.clone(),
        host: args.host.as_deref().map(str::to_ascii_lowercase),
        category: args.category.clone(),
        blocked_only: args.blocked,
        search_terms_only: args.search_terms,
        since: time_option("--since", args.since.as_deref(), &tz, now)?,
        until: time_option("--until", args.until.as_deref(), &tz, now)?,
        limit: args.limit,
        visits_idle_gap_micros,
        format,
        timezone,
    });
    let access = open_store_or_connect(&config.data_dir)?;
    // Recorded URLs and search terms are shown, never sent to the terminal as controls.
    let mut out = TerminalSafe::new(std::io::BufWriter::new(std::io::stdout().lock()));
    access.run(&request, &mut out)?;
    out.into_inner()?.flush()?;
    Ok(())
}

fn purge(args: &LogPurgeArgs) -> Result<()> {
    let config = Config::load(&args.config.config, &args.config.set)?;
    let (tz, timezone) = policy_timezone(&config.policy.file);
    let now = Timestamp::now();
    let cutoff = match &args.before {
        Some(text) => parse_time("--before", text, &tz, now)?,
        None if config.store.retention_days == 0 => bail!(
            "store.retention_days is 0 (keep everything), so there is nothing to purge by \
             default; give --before TIME to purge anyway (e.g. --before 365d)"
        ),
        None => {
            let days = config.store.retention_days;
            before(
                "store.retention_days",
                &days.to_string(),
                now,
                DAY.saturating_mul(days),
            )?
        }
    };
    let request = Request::LogPurge(LogPurge {
        before: micros(cutoff),
        timezone,
    });
    let access = open_store_or_connect(&config.data_dir)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    Ok(access.run(&request, &mut out)?)
}

/// Opens the database, which migrates the visit log's index if it is of an earlier
/// version, and says how many records it holds.
fn migrate(args: &LogMigrateArgs) -> Result<()> {
    let config = Config::load(&args.config.config, &args.config.set)?;
    if !config.data_dir.join("db").exists() {
        bail!(
            "no database in {}: nothing to migrate",
            config.data_dir.display()
        );
    }
    match safegate_store::Store::open(&config.data_dir) {
        Ok(store) => {
            store
                .flush_blocking()
                .context("writing the migrated index to disk")?;
            println!(
                "the visit log is up to date: {} record(s)",
                store.record_count()
            );
            Ok(())
        }
        Err(safegate_store::StoreError::Locked { .. }) => {
            println!("SafeGate is running: it brought the visit log up to date when it started");
            Ok(())
        }
        Err(error) => Err(error).context("opening the database"),
    }
}

fn export(args: &LogExportArgs) -> Result<()> {
    if args.user.is_empty() {
        bail!("--user: give the user name exactly as recorded");
    }
    let config = Config::load(&args.config.config, &args.config.set)?;
    let (tz, _) = policy_timezone(&config.policy.file);
    let now = Timestamp::now();
    let request = Request::LogExport(LogExport {
        user: args.user.clone(),
        since: time_option("--since", args.since.as_deref(), &tz, now)?,
        until: time_option("--until", args.until.as_deref(), &tz, now)?,
    });
    let date = now.to_zoned_datetime(tz).strftime("%Y-%m-%d").to_string();
    // The files are written by this process, as the person running it, never by the
    // service (which may run as another user).
    let files = ExportFiles::create(&args.out, &args.user, &date)?;
    let access = open_store_or_connect(&config.data_dir)?;
    let mut reader = files.reader();
    access.run(&request, &mut reader)?;
    let count = reader
        .finish()
        .map_err(|e| anyhow!("export of {:?} not written: {e:#}", args.user))?;
    let (json_path, csv_path) = (files.json_path.clone(), files.csv_path.clone());
    files.keep()?;
    println!(
        "exported {count} record(s) of user {:?}:\n  {}\n  {}",
        args.user,
        json_path.display(),
        csv_path.display()
    );
    if count == 0 {
        eprintln!(
            "safegate: note: no records of user {:?} in that time (names are exact and case-sensitive)",
            args.user
        );
    }
    Ok(())
}
