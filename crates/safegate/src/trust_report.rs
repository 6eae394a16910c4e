//! `safegate report weekly --source clickhouse [--school ID | --trust]`: the weekly
//! sweep report built from the trust's ClickHouse instead of this school's visit log,
//! by the same tally ([`safegate_report::gather_from`]), so it is the same report (HTML,
//! JSON, CSV) for one school or for every school of the trust together. Rows are read
//! with `FINAL`: an insert the export retried counts once. The school's own policy
//! gives the time zone, phrase lists, categories and core hours.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use jiff::Timestamp;
use safegate_control::time_text::policy_timezone;
use safegate_export::reading::{self, Scope};
use safegate_export::{ClickHouse, ClickHouseConfig};
use safegate_policy::Policy;
use safegate_report::{GatherOptions, IsoWeek, Pseudonymiser, ReportError, WeeklyReport};
use safegate_store::Record;

use crate::settings::Config;

/// What `safegate report weekly --source clickhouse` was asked for.
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    /// `--week`.
    pub week: Option<&'a str>,
    /// `--out`.
    pub out: Option<&'a std::path::Path>,
    /// `--pseudonymise`.
    pub pseudonymise: bool,
    /// `--school`.
    pub school: Option<&'a str>,
    /// `--trust`.
    pub trust: bool,
}

/// `[export.clickhouse]`, which a ClickHouse report needs.
fn clickhouse(config: &Config) -> Result<&ClickHouseConfig> {
    config.export.clickhouse.as_ref().ok_or_else(|| {
        anyhow!("--source clickhouse needs [export.clickhouse] in the configuration")
    })
}

/// The schools the report covers.
fn scope(config: &ClickHouseConfig, args: Wanted<'_>) -> Scope {
    match (args.school, args.trust) {
        (_, true) => Scope::Trust,
        (Some(school), false) => Scope::School(school.to_owned()),
        (None, false) => Scope::School(config.school.clone()),
    }
}

/// Where the files go: `--out`, else `data_dir/reports/clickhouse-<school|trust>`.
pub fn out_dir(config: &Config, args: Wanted<'_>) -> Result<PathBuf> {
    if let Some(out) = args.out {
        return Ok(out.to_path_buf());
    }
    let name = match scope(clickhouse(config)?, args) {
        Scope::Trust => "trust".to_owned(),
        Scope::School(id) => id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect(),
    };
    let reports = config.data_dir.join("reports");
    safegate_report::make_private_dir(&reports, true)?;
    let dir = reports.join(format!("clickhouse-{name}"));
    safegate_report::make_private_dir(&dir, true)?;
    Ok(dir)
}

/// Reads the week from ClickHouse and gathers the report.
pub fn gather(config: &Config, args: Wanted<'_>) -> Result<WeeklyReport> {
    let ch = clickhouse(config)?;
    let scope = scope(ch, args);
    let (tz, _) = policy_timezone(&config.policy.file);
    let week = match args.week {
        Some(text) => IsoWeek::parse(text)?,
        None => IsoWeek::previous(Timestamp::now(), &tz),
    };
    let policy = Policy::load(&config.policy.file)
        .with_context(|| format!("policy {}", config.policy.file.display()))?;
    let range = week.range_micros(policy.timezone());
    let client = ClickHouse::new(ch).context("export.clickhouse")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (records, alerts) = runtime
        .block_on(async {
            let mut records: Vec<Record> = Vec::new();
            reading::visits(&client, ch, &scope, range, |r| records.push(r)).await?;
            let alerts = reading::alerts(&client, ch, &scope, range).await?;
            Ok::<_, safegate_export::ExportError>((records, alerts))
        })
        .with_context(|| format!("ClickHouse at {}", ch.url))?;
    let options = GatherOptions {
        pseudonymiser: if args.pseudonymise {
            Some(Pseudonymiser::load_or_create(&config.data_dir)?)
        } else {
            None
        },
        generated_at_unix_micros: 0,
    };
    let timezone = policy.timezone().iana_name().unwrap_or("UTC").to_owned();
    let mut report = safegate_report::gather_from(
        &policy,
        &timezone,
        week,
        &options,
        // Which log-ins are shared is known to each school's SafeGate, not to
        // ClickHouse: the trust's report does not split them by computer.
        std::collections::HashSet::new(),
        |_, add| {
            records.iter().for_each(add);
            Ok::<(), ReportError>(())
        },
        |_| Ok(alerts),
    )?;
    report.school = Some(match &scope {
        Scope::Trust => "every school of the trust".to_owned(),
        Scope::School(id) => format!("school {id}"),
    });
    Ok(report)
}
