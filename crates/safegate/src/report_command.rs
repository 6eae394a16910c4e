//! `safegate report weekly [--week 2026-W47] [--out DIR] [--pseudonymise]`: the
//! weekly sweep report as HTML, JSON and CSV files. The week's figures are gathered by
//! whichever process holds the database (this one, or the running service through its
//! control socket, see [`safegate_control`]); the files are written by this command,
//! private (0600), into `data_dir/reports` (0700, where the web interface's Reports
//! page lists them) or into `--out`. Run as root for a service that runs as another
//! user, the command runs itself again as that user for `data_dir/reports`, so the
//! service can still read and replace the files.

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use clap::{Args, Subcommand};
use jiff::Timestamp;
use safegate_control::report::ReportRequest;
use safegate_control::time_text::policy_timezone;
use safegate_control::{Request, open_store_or_connect};
use safegate_report::{IsoWeek, WeeklyReport};

use crate::settings::{Config, ConfigArgs};

/// `safegate report ...`.
#[derive(Debug, Subcommand)]
pub enum ReportAction {
    /// The weekly sweep report for one ISO week (Monday to Sunday, school time):
    /// summary, alerts, searches, websites by role and group, blocked attempts,
    /// circumvention, staff in core hours, busy uncategorised sites; background
    /// traffic (the policy's background categories) as one line. Writes
    /// safegate-report-<week>.html (self-contained, printable), .json and one CSV per
    /// table into data_dir/reports, or --out.
    #[command(
        after_help = "Examples:\n  safegate report weekly                 # last week, into data_dir/reports\n  safegate report weekly --week 2026-W47 --out /srv/reports\n  safegate report weekly --week 2026-W47 --pseudonymise"
    )]
    Weekly(ReportWeeklyArgs),
}

/// `safegate report weekly`.
#[derive(Debug, Args)]
pub struct ReportWeeklyArgs {
    /// ISO week, e.g. 2026-W47 (default: the last complete Monday-to-Sunday week
    /// before now, in the school's time zone).
    #[arg(long)]
    pub week: Option<String>,
    /// Directory for the files (created private if needed; default: data_dir/reports,
    /// listed on the web interface's Reports page).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Replace people by stable pseudonyms (key in data_dir), for sharing beyond the
    /// designated safeguarding lead.
    #[arg(long)]
    pub pseudonymise: bool,
    /// Where the records come from: this school's own visit log (`store`), or the
    /// trust's ClickHouse ([export.clickhouse]; with --school or --trust). ClickHouse
    /// reports go into data_dir/reports/clickhouse-<school or trust>/ unless --out.
    #[arg(long, value_enum, default_value = "store")]
    pub source: Source,
    /// With --source clickhouse: the school (its id in the trust's tables); default:
    /// this school's export.clickhouse.school.
    #[arg(long, value_name = "ID", conflicts_with = "trust")]
    pub school: Option<String>,
    /// With --source clickhouse: every school of the trust together.
    #[arg(long)]
    pub trust: bool,
    /// Where the configuration comes from.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Where a report's records come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    /// This school's own visit log.
    Store,
    /// The trust's ClickHouse.
    Clickhouse,
}

/// Runs one `safegate report` command.
pub fn run(action: &ReportAction) -> Result<()> {
    let ReportAction::Weekly(args) = action;
    let config = Config::load(&args.config.config, &args.config.set)?;
    if args.source == Source::Clickhouse {
        let wanted = crate::trust_report::Wanted {
            week: args.week.as_deref(),
            out: args.out.as_deref(),
            pseudonymise: args.pseudonymise,
            school: args.school.as_deref(),
            trust: args.trust,
        };
        let report = crate::trust_report::gather(&config, wanted)?;
        return print_and_write(&report, &crate::trust_report::out_dir(&config, wanted)?);
    }
    anyhow::ensure!(
        args.school.is_none() && !args.trust,
        "--school and --trust go with --source clickhouse"
    );
    if args.out.is_none()
        && let Some(rerun) = crate::service_user::rerun_if_root(
            &args.config.config,
            &config.data_dir,
            "Making the report",
            "so that its files in data_dir/reports stay readable by SafeGate",
        )
    {
        anyhow::ensure!(rerun?.success(), "the report was not made (see above)");
        return Ok(());
    }
    let (tz, _) = policy_timezone(&config.policy.file);
    let week = match &args.week {
        Some(text) => IsoWeek::parse(text)?,
        None => IsoWeek::previous(Timestamp::now(), &tz),
    };
    let request = ReportRequest {
        week: week.to_string(),
        pseudonymise: args.pseudonymise,
        policy_file: absolute(&config.policy.file),
        data_dir: absolute(&config.data_dir),
    };
    let access = open_store_or_connect(&config.data_dir)?;
    let mut json = Vec::new();
    access.run(&Request::ReportWeek(request), &mut json)?;
    let report: WeeklyReport =
        serde_json::from_slice(&json).map_err(|e| anyhow!("unreadable report data: {e}"))?;
    let out = match &args.out {
        Some(out) => out.clone(),
        None => {
            let reports = config.data_dir.join("reports");
            safegate_report::make_private_dir(&reports, true)?;
            reports
        }
    };
    print_and_write(&report, &out)
}

/// Writes the report's files into `out` and says what it holds.
fn print_and_write(report: &WeeklyReport, out: &Path) -> Result<()> {
    let files = safegate_report::write_files(report, out)?;
    println!(
        "weekly report {} ({} to {}): {} requests ({} background), {} searches ({} flagged), {} alerts",
        report.week,
        report.first_day,
        report.last_day,
        report.summary.requests,
        report.summary.background_requests,
        report.summary.searches,
        report.summary.flagged_searches,
        report.summary.alerts_high + report.summary.alerts_medium + report.summary.alerts_low
    );
    for file in files {
        println!("  {}", file.display());
    }
    Ok(())
}

/// `path` made absolute against the current directory (the service runs elsewhere).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
