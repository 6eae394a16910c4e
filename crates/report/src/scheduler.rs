//! The weekly report scheduler of `safegate run`: every `report.day` at
//! `report.time` (school time, default Monday 07:00) it makes last week's report into
//! `data_dir/reports/` and mails it to `report.email_to` (HTML attached, with the
//! JSON and CSV files), retried with back-off like alert delivery. A report already
//! in `data_dir/reports/` (made earlier, or by hand) is not made again, and a start-up
//! after the scheduled time catches up on last week's report. A delivered mail is
//! recorded in a marker file (`.safegate-report-<week>.mailed`), so a restart neither
//! skips a mail that was not delivered (still retrying, or made by hand) nor repeats
//! one that was.
//!
//! When `report.pseudonymised_email_to` names anyone (governors, the local
//! authority), the pseudonymised variant is made too, with the same key as
//! `safegate report weekly --pseudonymise` (`data_dir/report-pseudonym.key`), into
//! its own files (`safegate-report-<week>-pseudonymised*`, next to the named ones),
//! and only those files are mailed to those recipients. Each variant follows the
//! once-only rule on its own files and marker: a restart makes and mails neither
//! again, and a variant that could not be made is tried again at the next wake-up
//! without the other being sent twice.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::{Time, Weekday};
use safegate_config::ConfigProblem;
use safegate_policy::Snapshot;
use safegate_safeguarding::delivery::{MailFile, Mailer, error_chain, mail_address, with_retries};
use safegate_store::Store;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::{GatherOptions, IsoWeek, Pseudonymiser, ReportError};

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
    /// Who receives only the pseudonymised variant by e-mail (needs delivery.smtp);
    /// empty: the variant is not made by the scheduler. An address may not also be
    /// in `email_to`.
    pub pseudonymised_email_to: Vec<String>,
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
            pseudonymised_email_to: Vec::new(),
            retry_for: Duration::from_secs(24 * 60 * 60),
        }
    }
}

impl ReportConfig {
    /// The day and time, parsed.
    pub fn schedule(&self) -> Result<(Weekday, Time), ConfigProblem> {
        let day = match self.day.to_ascii_lowercase().get(..3) {
            Some("mon") => Weekday::Monday,
            Some("tue") => Weekday::Tuesday,
            Some("wed") => Weekday::Wednesday,
            Some("thu") => Weekday::Thursday,
            Some("fri") => Weekday::Friday,
            Some("sat") => Weekday::Saturday,
            Some("sun") => Weekday::Sunday,
            _ => {
                return Err(ConfigProblem::new(
                    "report.day",
                    format!("`{}` is not a weekday (mon ... sun)", self.day),
                ));
            }
        };
        let time: Time = self.time.parse().map_err(|_| {
            ConfigProblem::new(
                "report.time",
                format!("`{}` is not a time like \"07:00\"", self.time),
            )
        })?;
        Ok((day, time))
    }

    /// Every problem, with its key: the schedule, the addresses, and an address in
    /// both lists (it would receive the names the pseudonymised list is there to keep
    /// from it).
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if let Err(problem) = self.schedule() {
            problems.push(problem);
        }
        let mut named = Vec::new();
        for (list, addresses) in [
            ("email_to", &self.email_to),
            ("pseudonymised_email_to", &self.pseudonymised_email_to),
        ] {
            for (i, to) in addresses.iter().enumerate() {
                let key = format!("report.{list}[{i}]");
                let Some(address) = mail_address(to) else {
                    problems.push(ConfigProblem::new(
                        key,
                        format!("`{to}` is not an e-mail address"),
                    ));
                    continue;
                };
                if list == "email_to" {
                    named.push(address);
                } else if named.contains(&address) {
                    problems.push(ConfigProblem::new(
                        key,
                        format!(
                            "`{to}` is also in report.email_to: it would get the report with \
                             names; list it in one of the two"
                        ),
                    ));
                }
            }
        }
        problems
    }

    /// Whether the reports are mailed to anyone (then delivery.smtp is needed).
    pub fn mails_anyone(&self) -> bool {
        !self.email_to.is_empty() || !self.pseudonymised_email_to.is_empty()
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
    /// SafeGate's data directory (the pseudonym key).
    pub data_dir: PathBuf,
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
    pub fn spawn(self, shutdown: CancellationToken) -> Result<JoinHandle<()>, ConfigProblem> {
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

    /// Makes `week`'s reports (the named one, and the pseudonymised one when it has
    /// recipients) unless they exist, then mails each one just made to its recipients;
    /// false when one could not be made (it is tried again at the next wake-up).
    async fn run_once(&self, week: IsoWeek, shutdown: &CancellationToken) -> bool {
        let named = self.make(week, Variant::Named).await;
        let pseudonymised = if self.config.pseudonymised_email_to.is_empty() {
            None
        } else {
            Some(self.make(week, Variant::Pseudonymised).await)
        };
        let all_made = named.is_some() && !matches!(pseudonymised, Some(None));
        let pseudonymised = pseudonymised.flatten();
        tokio::join!(
            self.mail(week, Variant::Named, named.as_deref(), shutdown),
            self.mail(
                week,
                Variant::Pseudonymised,
                pseudonymised.as_deref(),
                shutdown
            ),
        );
        all_made
    }

    /// Makes one variant of `week`'s report unless its HTML file exists; its files
    /// (made now or found), or None when it could not be made (logged).
    async fn make(&self, week: IsoWeek, variant: Variant) -> Option<Vec<PathBuf>> {
        let policy = (self.policy)();
        let html = self
            .reports_dir
            .join(format!("safegate-report-{week}{}.html", variant.suffix()));
        if html.exists() {
            info!(week = %week, "weekly report already made: {}", html.display());
            return Some(self.existing_files(week, variant));
        }
        let store = self.store.clone();
        let dir = self.reports_dir.clone();
        let data_dir = self.data_dir.clone();
        let timezone = policy.timezone().iana_name().unwrap_or("UTC").to_owned();
        let made = tokio::task::spawn_blocking(move || -> Result<Vec<PathBuf>, ReportError> {
            let pseudonymiser = match variant {
                Variant::Named => None,
                Variant::Pseudonymised => Some(Pseudonymiser::load_or_create(&data_dir)?),
            };
            let report = crate::gather(
                &store,
                &policy,
                &timezone,
                week,
                &GatherOptions {
                    pseudonymiser,
                    ..GatherOptions::default()
                },
            )?;
            crate::write_files(&report, &dir)
        })
        .await;
        let made = match made {
            Ok(Ok(files)) => Ok(files),
            Ok(Err(error)) => Err(error_chain(&error)),
            Err(error) => Err(format!("report task failed: {error}")),
        };
        match made {
            Ok(files) => {
                info!(
                    week = %week,
                    variant = variant.name(),
                    dir = %self.reports_dir.display(),
                    files = files.len(),
                    "weekly report made"
                );
                Some(files)
            }
            Err(error) => {
                error!(
                    "WEEKLY REPORT NOT MADE for {week} ({}): {error}",
                    variant.name()
                );
                None
            }
        }
    }

    /// The files of one variant of `week`'s report already in the reports directory.
    fn existing_files(&self, week: IsoWeek, variant: Variant) -> Vec<PathBuf> {
        let prefix = format!("safegate-report-{week}{}", variant.suffix());
        let Ok(entries) = std::fs::read_dir(&self.reports_dir) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                name.strip_prefix(&prefix).is_some_and(|rest| {
                    matches!(variant, Variant::Pseudonymised) || !rest.starts_with("-pseudonymised")
                })
            })
            .map(|entry| entry.path())
            .collect();
        files.sort();
        files
    }

    /// Mails a variant (only its own files) to its recipients, unless its marker says
    /// it was delivered; records the delivery in the marker.
    async fn mail(
        &self,
        week: IsoWeek,
        variant: Variant,
        files: Option<&[PathBuf]>,
        shutdown: &CancellationToken,
    ) {
        let Some(files) = files else { return };
        let to = match variant {
            Variant::Named => &self.config.email_to,
            Variant::Pseudonymised => &self.config.pseudonymised_email_to,
        };
        let (Some(mailer), false) = (&self.mailer, to.is_empty()) else {
            return;
        };
        let marker = self.reports_dir.join(format!(
            ".safegate-report-{week}{}.mailed",
            variant.suffix()
        ));
        if marker.exists() {
            info!(week = %week, variant = variant.name(), "weekly report already mailed");
            return;
        }
        let attachments = attachments(files);
        let (subject, body) = match variant {
            Variant::Named => (
                format!("[SafeGate] Weekly sweep report {week}"),
                format!(
                    "The weekly sweep report for {week} is attached (open the .html file in a \
                     browser; the CSV and JSON files are for spreadsheets and tools).\n\nIt is \
                     also in {} on the SafeGate server.\n",
                    self.reports_dir.display()
                ),
            ),
            Variant::Pseudonymised => (
                format!("[SafeGate] Weekly sweep report {week} (pseudonymised)"),
                format!(
                    "The pseudonymised weekly sweep report for {week} is attached (open the .html \
                     file in a browser; the CSV and JSON files are for spreadsheets and \
                     tools).\n\nPeople are shown by stable pseudonyms (P-...), the same from \
                     week to week; only the school's designated safeguarding lead can tell \
                     who they are.\n"
                ),
            ),
        };
        let what = match variant {
            Variant::Named => format!("weekly report {week} e-mail"),
            Variant::Pseudonymised => format!("pseudonymised weekly report {week} e-mail"),
        };
        let delivered = with_retries(&what, self.config.retry_for, shutdown, || {
            mailer.send(to, &subject, &body, &attachments)
        })
        .await;
        if delivered {
            let record = format!("{} {}\n", self.now(), to.join(", "));
            if let Err(err) = write_marker(&marker, &record) {
                error!(
                    marker = %marker.display(),
                    "cannot record that the {what} was delivered; it may be sent again at the next start: {err}"
                );
            }
        }
    }
}

/// Writes a delivery marker atomically (a temporary file renamed over it).
fn write_marker(marker: &std::path::Path, record: &str) -> std::io::Result<()> {
    let temp = marker.with_extension("mailed.tmp");
    std::fs::write(&temp, record)?;
    std::fs::rename(&temp, marker)
}

/// Which report.
#[derive(Debug, Clone, Copy)]
enum Variant {
    /// With people's names, for `report.email_to`.
    Named,
    /// People replaced by pseudonyms, for `report.pseudonymised_email_to`.
    Pseudonymised,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Named => "named",
            Variant::Pseudonymised => "pseudonymised",
        }
    }

    /// What [`crate::write_files`] adds to the file names.
    fn suffix(self) -> &'static str {
        match self {
            Variant::Named => "",
            Variant::Pseudonymised => "-pseudonymised",
        }
    }
}

/// The report files as mail attachments (unreadable ones left out).
fn attachments(files: &[PathBuf]) -> Vec<MailFile> {
    files
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
        .collect()
}
