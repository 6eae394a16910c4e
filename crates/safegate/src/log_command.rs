//! `safegate log query|purge|export` on the command line: reads the configuration
//! (data_dir, retention, the policy's time zone), turns the options into a
//! [`Request`], and runs it on the database directly or through the running service's
//! control socket ([`open_store_or_connect`]).

use std::io::Write;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use jiff::Timestamp;
use safegate_activity::DEFAULT_IDLE_GAP;

use safegate_control::export::ExportFiles;
use safegate_control::log::{Format, LogExport, LogPurge, LogQuery};
use safegate_control::time_text::{before, micros, parse_time, policy_timezone};
use safegate_control::{ControlError, Request, open_store_or_connect};

use crate::cli::{LogAction, LogExportArgs, LogPurgeArgs, LogQueryArgs};
use crate::settings::Config;

/// Seconds in a day, for `store.retention_days`.
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Runs one `safegate log` command.
pub fn run(action: &LogAction) -> Result<()> {
    let result = match action {
        LogAction::Query(args) => query(args),
        LogAction::Purge(args) => purge(args),
        LogAction::Export(args) => export(args),
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
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    access.run(&request, &mut out)?;
    out.flush()?;
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
