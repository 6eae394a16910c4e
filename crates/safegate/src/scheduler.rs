//! The weekly report scheduler of `safegate run`: every `report.day` at
//! `report.time` (school time, default Monday 07:00) it makes last week's report into
//! `data_dir/reports/` and mails it to `report.email_to` (HTML attached, with the
//! JSON and CSV files), retried with back-off like alert delivery. A report already
//! in `data_dir/reports/` is not made again, and a start-up after the scheduled time
//! catches up on last week's report, so a restart neither skips nor repeats one.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use jiff::Timestamp;
use jiff::civil::{Time, Weekday};
use safegate_policy::Snapshot;
use safegate_report::{GatherOptions, IsoWeek};
use safegate_store::Store;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::delivery::{MailFile, Mailer, with_retries};

/// `[report]`: the weekly sweep report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReportConfig {
    /// Make last week's report every week.
    pub weekly: bool,
    /// Day it is made: mon, tue, ... (school time).
    pub day: String,
    /// Time it is made, "HH:MM" (school time).
    pub time: String,
    /// Who receives it by e-mail (needs delivery.smtp); empty: nobody, the files
    /// stay in data_dir/reports.
    pub email_to: Vec<String>,
    /// How long sending is retried.
    #[serde(with = "humantime_serde")]
    pub retry_for: Duration,
}

impl Default for ReportConfig {
    fn default() -> Self {
        Self {
            weekly: true,
            day: "mon".to_owned(),
            time: "07:00".to_owned(),
            email_to: Vec::new(),
            retry_for: Duration::from_secs(24 * 60 * 60),
        }
    }
}

impl ReportConfig {
    /// The day and time, parsed.
    pub fn schedule(&self) -> Result<(Weekday, Time)> {
        let day = match self.day.to_ascii_lowercase().get(..3) {
            Some("mon") => Weekday::Monday,
            Some("tue") => Weekday::Tuesday,
            Some("wed") => Weekday::Wednesday,
            Some("thu") => Weekday::Thursday,
            Some("fri") => Weekday::Friday,
            Some("sat") => Weekday::Saturday,
            Some("sun") => Weekday::Sunday,
            _ => {
                return Err(anyhow!(
                    "report.day: `{}` is not a weekday (mon ... sun)",
                    self.day
                ));
            }
        };
        let time: Time = self
            .time
            .parse()
            .map_err(|_| anyhow!("report.time: `{}` is not a time like \"07:00\"", self.time))?;
        Ok((day, time))
    }

    /// Every problem, as (key, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        match self.schedule() {
            Ok(_) => Vec::new(),
            Err(error) => {
                let text = error.to_string();
                let (key, message) = text.split_once(": ").unwrap_or(("report", &text));
                vec![(key.to_owned(), message.to_owned())]
            }
        }
    }
}

/// What the scheduler needs.
pub struct Scheduler {
    /// The database.
    pub store: Store,
    /// The live policy.
    pub policy: Arc<dyn Fn() -> Arc<Snapshot> + Send + Sync>,
    /// `[report]`.
    pub config: ReportConfig,
    /// Where reports go: data_dir/reports.
    pub reports_dir: PathBuf,
    /// The mail server, when configured.
    pub mailer: Option<Mailer>,
    /// Added to the wall clock (tests replay other days).
    pub clock_offset_micros: i64,
}

impl Scheduler {
    fn now(&self) -> Timestamp {
        let now = Timestamp::now().as_microsecond();
        Timestamp::from_microsecond(now.saturating_add(self.clock_offset_micros))
            .unwrap_or_else(|_| Timestamp::now())
    }

    /// The scheduled time of the week holding `now` (may be before or after it).
    fn this_weeks_run(&self, now: Timestamp, day: Weekday, time: Time) -> Option<Timestamp> {
        let policy = (self.policy)();
        let tz = policy.timezone();
        let today = tz.to_datetime(now).date();
        let monday = IsoWeek::of(today).monday();
        let date =
            monday.saturating_add(jiff::Span::new().days(i64::from(day.to_monday_zero_offset())));
        tz.to_timestamp(date.to_datetime(time)).ok()
    }

    /// Starts the scheduler.
    pub fn spawn(self, shutdown: CancellationToken) -> Result<JoinHandle<()>> {
        let (day, time) = self.config.schedule()?;
        Ok(tokio::spawn(async move {
            // The last week whose report this process made or found (a failure is
            // tried again at the next hourly wake-up).
            let mut done: Option<IsoWeek> = None;
            loop {
                let now = self.now();
                let Some(this_week) = self.this_weeks_run(now, day, time) else {
                    error!("report scheduler: cannot work out the next run; stopping");
                    return;
                };
                let week = IsoWeek::previous(now, (self.policy)().timezone());
                if now >= this_week && done != Some(week) {
                    // Due (or catching up after a start-up past the time).
                    if self.run_once(week, &shutdown).await {
                        done = Some(week);
                    }
                }
                let next = if now >= this_week {
                    this_week
                        .checked_add(jiff::SignedDuration::from_hours(24 * 7))
                        .unwrap_or(this_week)
                } else {
                    this_week
                };
                let wait = next.duration_since(self.now());
                let wait = Duration::try_from(wait)
                    .unwrap_or(Duration::from_secs(60))
                    .max(Duration::from_secs(1));
                // Wake at least hourly: the clock may jump (suspend, NTP).
                let wait = wait.min(Duration::from_secs(3600));
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }))
    }

    /// Makes `week`'s report unless it exists, then sends it; false when it could not
    /// be made.
    async fn run_once(&self, week: IsoWeek, shutdown: &CancellationToken) -> bool {
        let policy = (self.policy)();
        let html = self
            .reports_dir
            .join(format!("safegate-report-{week}.html"));
        if html.exists() {
            info!(week = %week, "weekly report already made: {}", html.display());
            return true;
        }
        let store = self.store.clone();
        let dir = self.reports_dir.clone();
        let timezone = policy.timezone().iana_name().unwrap_or("UTC").to_owned();
        let made = tokio::task::spawn_blocking(move || -> Result<Vec<PathBuf>> {
            let report = safegate_report::gather(
                &store,
                &policy,
                &timezone,
                week,
                &GatherOptions::default(),
            )?;
            Ok(safegate_report::write_files(&report, &dir)?)
        })
        .await
        .context("report task failed")
        .and_then(|r| r);
        let files = match made {
            Ok(files) => files,
            Err(error) => {
                error!("WEEKLY REPORT NOT MADE for {week}: {error:#}");
                return false;
            }
        };
        info!(week = %week, dir = %self.reports_dir.display(), files = files.len(), "weekly report made");
        let (Some(mailer), false) = (&self.mailer, self.config.email_to.is_empty()) else {
            return true;
        };
        let attachments: Vec<MailFile> = files
            .iter()
            .filter_map(|path| {
                let name = path.file_name()?.to_string_lossy().into_owned();
                let content_type = match path.extension().and_then(|e| e.to_str()) {
                    Some("html") => "text/html; charset=utf-8",
                    Some("json") => "application/json",
                    _ => "text/csv; charset=utf-8",
                };
                Some(MailFile {
                    name,
                    content_type: content_type.to_owned(),
                    bytes: std::fs::read(path).ok()?,
                })
            })
            .collect();
        let subject = format!("[SafeGate] Weekly sweep report {week}");
        let body = format!(
            "The weekly sweep report for {week} is attached (open the .html file in a browser; \
             the CSV and JSON files are for spreadsheets and tools).\n\nIt is also in {} on the SafeGate server.\n",
            self.reports_dir.display()
        );
        let what = format!("weekly report {week} e-mail");
        with_retries(&what, self.config.retry_for, shutdown, || {
            mailer.send(&self.config.email_to, &subject, &body, &attachments)
        })
        .await;
        true
    }
}
