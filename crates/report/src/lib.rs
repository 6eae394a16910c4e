//! The weekly sweep report: what the headteacher and the designated safeguarding lead
//! read every Monday. One ISO week (Monday to Sunday in the school's time zone) is
//! gathered from the store in one pass over the week's records ([`gather`]) into a
//! [`WeeklyReport`], which is rendered for people as one self-contained, printable
//! HTML file ([`html`]) and for tools as JSON and CSV files ([`csv`]).
//!
//! What it holds: summary figures and requests per day; the alerts that had an
//! occurrence in the week, by severity, with their evidence; every search, the ones
//! matching a safeguarding phrase list first, then by user; websites visited by role
//! and group (top sites, time spent from visits joined by the activity crate); blocked
//! attempts by user and category; circumvention attempts; staff activity in core
//! hours on non-work categories (the policy's `[alerts.staff_social]`); and busy
//! uncategorised sites for the filter admin. Nothing outside the week is included.
//!
//! With [`GatherOptions::pseudonymiser`] every person (user name, or the client
//! address when nobody was identified) is replaced by a stable pseudonym
//! ([`pseudonym`]), evidence included.
//!
//! [`concern`] renders one alert as a printable safeguarding concern record.
//!
//! [`scheduler`] makes and mails the report every week in `safegate run`
//! (`[report]` in `safegate.toml`).

pub mod concern;
pub mod csv;
pub mod html;
pub mod pseudonym;
pub mod scheduler;
mod tally;
pub mod week;

use std::collections::{HashMap, HashSet};

use jiff::Timestamp;
use jiff::tz::TimeZone;
use safegate_policy::Snapshot;
use safegate_store::{Alert, AlertFilter, AlertKind, Outcome, Query, Record, Store, StoreError};
use serde::{Deserialize, Serialize};

pub use crate::pseudonym::Pseudonymiser;
use crate::tally::{Tallied, WeekTally};
pub use crate::week::IsoWeek;

/// Top sites listed per role and group.
pub const TOP_SITES: usize = 25;
/// Uncategorised sites listed.
pub const TOP_UNCATEGORISED: usize = 50;
/// Background hosts named on a role and group's background line.
pub const BACKGROUND_EXAMPLES: usize = 6;

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The week is not written like `2026-W47`.
    #[error("`{0}` is not an ISO week such as 2026-W47")]
    Week(String),
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading the users (which log-ins are shared) failed.
    #[error("reading the users: {0}")]
    Users(#[from] safegate_store::UserError),
    /// The pseudonym key could not be read or created.
    #[error("pseudonym key {path}: {source}")]
    Key {
        /// The key file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// Writing the files failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The JSON could not be written.
    #[error("cannot encode the report: {0}")]
    Json(#[from] serde_json::Error),
    /// Another source of records (the trust's ClickHouse) failed.
    #[error("{0}")]
    Source(String),
}

/// How to gather.
#[derive(Debug, Clone, Default)]
pub struct GatherOptions {
    /// Replace people by pseudonyms.
    pub pseudonymiser: Option<Pseudonymiser>,
    /// When the report is made (for its heading), Unix microseconds; 0: now.
    pub generated_at_unix_micros: u64,
}

/// One week's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeeklyReport {
    /// The school's name (the policy's `school`), if it gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub school: Option<String>,
    /// `2026-W47`.
    pub week: String,
    /// The school's time zone.
    pub timezone: String,
    /// Monday, `2026-11-16`.
    pub first_day: String,
    /// Sunday, `2026-11-22`.
    pub last_day: String,
    /// Start of the week, Unix microseconds (inclusive).
    pub since_unix_micros: u64,
    /// End of the week, Unix microseconds (exclusive).
    pub until_unix_micros: u64,
    /// When the report was made, school time.
    pub generated_at: String,
    /// People are pseudonyms.
    pub pseudonymised: bool,
    /// Summary figures.
    pub summary: Summary,
    /// Requests per day, Monday first.
    pub days: Vec<DayFigures>,
    /// Alerts with an occurrence in the week, most severe first.
    pub alerts: Vec<AlertRow>,
    /// Every search: flagged ones first, then by person and time.
    pub searches: Vec<SearchRow>,
    /// Websites visited, per role and group.
    pub sites: Vec<SiteGroup>,
    /// Blocked attempts per person and category.
    pub blocked: Vec<BlockedRow>,
    /// Circumvention attempts.
    pub circumvention: Vec<AttemptRow>,
    /// Staff activity in core hours on non-work categories.
    pub staff_core_hours: Vec<StaffRow>,
    /// Busy sites in no category, for the filter admin.
    pub uncategorised: Vec<UncategorisedRow>,
}

/// Summary figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Requests recorded.
    pub requests: u64,
    /// Distinct people.
    pub people: u64,
    /// Blocked requests.
    pub blocked: u64,
    /// Searches.
    pub searches: u64,
    /// Searches matching a safeguarding phrase list.
    pub flagged_searches: u64,
    /// Alerts (high, medium, low).
    pub alerts_high: u64,
    /// Medium alerts.
    pub alerts_medium: u64,
    /// Low alerts.
    pub alerts_low: u64,
    /// Circumvention attempts.
    pub circumvention_attempts: u64,
    /// Bytes to clients.
    pub bytes_down: u64,
    /// Requests that were browser, system or app background traffic (in
    /// `requests`, not in websites visited).
    #[serde(default)]
    pub background_requests: u64,
}

/// One day's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayFigures {
    /// `Mon 2026-11-16`.
    pub day: String,
    /// Requests.
    pub requests: u64,
    /// Blocked requests.
    pub blocked: u64,
}

/// A record shown as evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceRow {
    /// School time.
    pub at: String,
    /// `allowed`, `blocked`, `failed`.
    pub outcome: String,
    /// Host.
    pub host: String,
    /// Path and query, when visible.
    pub path: String,
    /// Search terms, when a search.
    pub search: String,
    /// Client address.
    pub client: String,
    /// The computer's name, when the record carries one (empty when pseudonymising).
    #[serde(default)]
    pub computer: String,
}

/// One alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRow {
    /// Id.
    pub id: u64,
    /// The short number people say (`#35`), when the store has given one.
    #[serde(default)]
    pub number: Option<u64>,
    /// `high`, `medium`, `low`.
    pub severity: String,
    /// Kind.
    pub kind: String,
    /// The kind in words ("Worrying words in a search or address").
    #[serde(default)]
    pub kind_in_words: String,
    /// The status in words ("being handled").
    #[serde(default)]
    pub status_in_words: String,
    /// Person.
    pub who: String,
    /// Role.
    pub role: String,
    /// Group.
    pub group: String,
    /// First occurrence, school time.
    pub first_at: String,
    /// Latest occurrence, school time.
    pub last_at: String,
    /// Occurrences.
    pub occurrences: u64,
    /// `new`, `acknowledged`, `closed`.
    pub status: String,
    /// Summary.
    pub summary: String,
    /// The records that raised it (those inside the week).
    pub evidence: Vec<EvidenceRow>,
}

/// One search.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchRow {
    /// School time.
    pub at: String,
    /// Person (for a shared log-in, the log-in on one computer).
    pub who: String,
    /// The computer: `ICT-PC07 (10.0.3.57)` or the address (a pseudonym when
    /// pseudonymising).
    #[serde(default)]
    pub computer: String,
    /// Role.
    pub role: String,
    /// Group.
    pub group: String,
    /// Engine.
    pub engine: String,
    /// The terms, as typed.
    pub terms: String,
    /// Phrase lists it matched (empty: not flagged).
    pub flagged: Vec<String>,
    /// `allowed`, `blocked`, `failed`.
    pub outcome: String,
}

/// Sites of one role and group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteGroup {
    /// Role.
    pub role: String,
    /// Group (empty: none).
    pub group: String,
    /// Requests of the role and group.
    pub requests: u64,
    /// The top sites by time spent, then requests (background traffic left out).
    pub sites: Vec<SiteRow>,
    /// The role and group's background traffic, folded into one line.
    #[serde(default)]
    pub background: BackgroundLine,
}

/// Browser, system and app background traffic of one role and group (updates,
/// telemetry, safe-browsing: hosts in the policy's `background = true` categories).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackgroundLine {
    /// Requests.
    pub requests: u64,
    /// Of those blocked.
    pub blocked: u64,
    /// Distinct people.
    pub people: u64,
    /// Distinct hosts.
    pub hosts: u64,
    /// The busiest hosts, most requests first.
    pub busiest: Vec<String>,
}

/// One site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteRow {
    /// Registrable domain.
    pub site: String,
    /// Requests.
    pub requests: u64,
    /// Of those blocked.
    pub blocked: u64,
    /// Distinct people.
    pub people: u64,
    /// Time spent, from visits, seconds.
    pub time_spent_secs: u64,
}

/// Blocked attempts of one person in one category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedRow {
    /// Person.
    pub who: String,
    /// Role.
    pub role: String,
    /// Group.
    pub group: String,
    /// Category (or the rule, for blocks outside categories).
    pub category: String,
    /// Attempts.
    pub attempts: u64,
    /// First, school time.
    pub first_at: String,
    /// Latest, school time.
    pub last_at: String,
}

/// One circumvention attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRow {
    /// School time.
    pub at: String,
    /// Person (for a shared log-in, the log-in on one computer).
    pub who: String,
    /// The computer, as in [`SearchRow::computer`].
    #[serde(default)]
    pub computer: String,
    /// Role.
    pub role: String,
    /// Host.
    pub host: String,
    /// Category or reason.
    pub category: String,
    /// `allowed`, `blocked`, `failed`.
    pub outcome: String,
}

/// A staff member's core-hours activity in one category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaffRow {
    /// Person.
    pub who: String,
    /// Category.
    pub category: String,
    /// Requests in core hours.
    pub requests: u64,
    /// Of those blocked.
    pub blocked: u64,
    /// First, school time.
    pub first_at: String,
    /// Sites.
    pub sites: Vec<String>,
}

/// A busy site in no category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UncategorisedRow {
    /// Registrable domain.
    pub site: String,
    /// Requests.
    pub requests: u64,
    /// Distinct people.
    pub people: u64,
}

fn outcome_text(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Allowed => "allowed",
        Outcome::Blocked => "blocked",
        Outcome::Failed => "failed",
    }
}

/// School-local time text of `micros`.
pub fn local_text(micros: u64, tz: &TimeZone) -> String {
    match Timestamp::from_microsecond(i64::try_from(micros).unwrap_or(i64::MAX)) {
        Ok(ts) => tz.to_datetime(ts).strftime("%Y-%m-%d %H:%M:%S").to_string(),
        Err(_) => String::new(),
    }
}

/// Names people, groups and computers, pseudonymised or not. Each kind has its own
/// pseudonyms (`P-`, `G-`, `C-`): a shared log-in's group name or a computer's name
/// identifies a class or a child as well as a person's name does.
struct Namer<'a> {
    pseudonymiser: Option<&'a Pseudonymiser>,
    cache: HashMap<(Kind, String), String>,
}

/// What a name names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Person,
    Group,
    /// A computer's name.
    Computer,
}

impl Namer<'_> {
    fn named(&mut self, kind: Kind, name: &str) -> String {
        match self.pseudonymiser {
            None => name.to_owned(),
            Some(p) => self
                .cache
                .entry((kind, name.to_owned()))
                .or_insert_with(|| match kind {
                    Kind::Person => p.pseudonym(name),
                    Kind::Group => p.group_pseudonym(name),
                    Kind::Computer => p.computer_pseudonym(name),
                })
                .clone(),
        }
    }

    /// A person (user name, or client address when nobody was identified).
    fn name(&mut self, who: &str) -> String {
        self.named(Kind::Person, who)
    }

    /// A group (a year group, or a shared log-in's group).
    fn group(&mut self, group: &str) -> String {
        self.named(Kind::Group, group)
    }

    /// A computer's name (from `[devices]`, DHCP leases or reverse DNS): call this for
    /// every computer name a row shows, as for people.
    fn computer(&mut self, computer: &str) -> String {
        self.named(Kind::Computer, computer)
    }

    /// The record's computer as a row shows it: `ICT-PC07 (10.0.3.57)`, or the
    /// address; pseudonymised, the name's pseudonym or the address's.
    fn computer_of(&mut self, record: &Record) -> String {
        match (&record.computer, self.pseudonymiser.is_some()) {
            (Some(_), false) => record.computer_text(),
            (Some(name), true) => self.computer(name),
            (None, _) => self.addresses(&record.client.to_string()),
        }
    }
}

impl Namer<'_> {
    /// `text` with each IP address in it replaced by that address's pseudonym, when
    /// pseudonymising (a concurrent log-in's summary names both computers' addresses,
    /// which identify a person as well as a name does).
    fn addresses(&mut self, text: &str) -> String {
        if self.pseudonymiser.is_none() {
            return text.to_owned();
        }
        let mut out = String::with_capacity(text.len());
        let mut token = String::new();
        let flush = |token: &mut String, out: &mut String, namer: &mut Self| {
            let core = token.trim_end_matches(['.', ':']);
            if core.parse::<std::net::IpAddr>().is_ok() {
                let tail = &token[core.len()..];
                out.push_str(&namer.name(core));
                out.push_str(tail);
            } else {
                out.push_str(token);
            }
            token.clear();
        };
        for c in text.chars() {
            if c.is_ascii_hexdigit() || c == '.' || c == ':' {
                token.push(c);
            } else {
                flush(&mut token, &mut out, self);
                out.push(c);
            }
        }
        flush(&mut token, &mut out, self);
        out
    }
}

fn who_of(record: &Record) -> String {
    record
        .user
        .clone()
        .unwrap_or_else(|| record.client.to_string())
}

/// Gathers `week` from `store` under `policy` (time zone, phrase lists,
/// circumvention categories, core hours): one pass over the week's records (the
/// `tally` module), then the alerts with an occurrence in the week.
pub fn gather(
    store: &Store,
    policy: &Snapshot,
    timezone_name: &str,
    week: IsoWeek,
    options: &GatherOptions,
) -> Result<WeeklyReport, ReportError> {
    let shared_users = store
        .list_users()?
        .into_iter()
        .filter(|user| user.shared)
        .map(|user| user.name)
        .collect();
    gather_from(
        policy,
        timezone_name,
        week,
        options,
        shared_users,
        |(since, until), add| {
            let query = Query {
                since: Some(since),
                until: Some(until),
                ..Query::default()
            };
            scan_alongside(store, &query, add)
        },
        |(since, until)| {
            Ok(store.alerts(&AlertFilter {
                since: Some(since),
                until: Some(until),
                ..AlertFilter::default()
            })?)
        },
    )
    .map(|mut report| {
        // The school's own short numbers (a trust's report keeps the ids).
        for row in &mut report.alerts {
            row.number = store.alert_number(row.id).ok().flatten();
        }
        report
    })
}

/// Records handed from the scanning thread to the tallying one at a time.
const SCAN_CHUNK: usize = 1024;

/// Scans on a second thread, handing records over in chunks, while this thread adds
/// them up: reading and decoding the week's blocks and tallying its records take
/// about as long as each other, and a school's server has at least two cores.
fn scan_alongside(
    store: &Store,
    query: &Query,
    add: &mut dyn FnMut(&Record),
) -> Result<(), ReportError> {
    let (send, receive) = std::sync::mpsc::sync_channel::<Vec<Record>>(8);
    std::thread::scope(|scope| {
        let scanner = scope.spawn(move || {
            let mut chunk = Vec::with_capacity(SCAN_CHUNK);
            let scanned = store.scan(query, |record| {
                chunk.push(record);
                if chunk.len() < SCAN_CHUNK {
                    return true;
                }
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(SCAN_CHUNK));
                // The receiver only goes away if this thread's caller panicked.
                send.send(full).is_ok()
            });
            if !chunk.is_empty() {
                let _ = send.send(chunk);
            }
            scanned
        });
        for chunk in receive {
            for record in &chunk {
                add(record);
            }
        }
        match scanner.join() {
            Ok(scanned) => scanned.map(|_| ()).map_err(ReportError::from),
            Err(_) => Err(ReportError::Source(
                "the visit-log scan stopped unexpectedly".to_owned(),
            )),
        }
    })
}

/// [`gather`] from any source of records and alerts (the school's own store, or the
/// trust's ClickHouse): `scan` hands every record of the range (Unix microseconds,
/// `[since, until)`) to its second argument, `alerts` returns the alerts with an
/// occurrence in it; `shared_users` are the log-ins several people share (their rows
/// are split by computer). The same tally, the same report.
pub fn gather_from(
    policy: &Snapshot,
    timezone_name: &str,
    week: IsoWeek,
    options: &GatherOptions,
    shared_users: HashSet<String>,
    scan: impl FnOnce((u64, u64), &mut dyn FnMut(&Record)) -> Result<(), ReportError>,
    alerts: impl FnOnce((u64, u64)) -> Result<Vec<Alert>, ReportError>,
) -> Result<WeeklyReport, ReportError> {
    let tz = policy.timezone().clone();
    let (since, until) = week.range_micros(&tz);
    let mut tally = WeekTally::new(policy, week, options.pseudonymiser.as_ref(), shared_users);
    scan((since, until), &mut |record| tally.add(record))?;
    let Tallied {
        mut namer,
        mut summary,
        days,
        searches,
        sites,
        blocked,
        circumvention,
        staff_core_hours,
        uncategorised,
    } = tally.finish();
    let alerts = alert_rows(
        alerts((since, until))?,
        (since, until),
        &tz,
        &mut namer,
        &mut summary,
    );
    let generated = if options.generated_at_unix_micros == 0 {
        u64::try_from(Timestamp::now().as_microsecond()).unwrap_or(0)
    } else {
        options.generated_at_unix_micros
    };
    let monday = week.monday();
    Ok(WeeklyReport {
        school: policy.school_name().map(str::to_owned),
        week: week.to_string(),
        timezone: timezone_name.to_owned(),
        first_day: monday.to_string(),
        last_day: monday.saturating_add(jiff::Span::new().days(6)).to_string(),
        since_unix_micros: since,
        until_unix_micros: until,
        generated_at: local_text(generated, &tz),
        pseudonymised: options.pseudonymiser.is_some(),
        summary,
        days,
        alerts,
        searches,
        sites,
        blocked,
        circumvention,
        staff_core_hours,
        uncategorised,
    })
}

/// The alerts with an occurrence in `[since, until)`, most severe first, each counted
/// into `summary` by severity.
fn alert_rows(
    alerts: Vec<Alert>,
    (since, until): (u64, u64),
    tz: &TimeZone,
    namer: &mut Namer,
    summary: &mut Summary,
) -> Vec<AlertRow> {
    let mut alerts: Vec<AlertRow> = alerts
        .into_iter()
        .map(|alert| {
            match alert.severity {
                safegate_store::Severity::High => summary.alerts_high += 1,
                safegate_store::Severity::Medium => summary.alerts_medium += 1,
                safegate_store::Severity::Low => summary.alerts_low += 1,
            }
            alert_row(&alert, (since, until), tz, namer)
        })
        .collect();
    let rank = |s: &str| match s {
        "high" => 0,
        "medium" => 1,
        _ => 2,
    };
    alerts.sort_by(|a, b| {
        rank(&a.severity)
            .cmp(&rank(&b.severity))
            .then(a.id.cmp(&b.id))
    });
    alerts
}

/// One alert as the report shows it: its times clipped to the week, its evidence
/// from the week only, and no client addresses when pseudonymising.
fn alert_row(
    alert: &Alert,
    (since, until): (u64, u64),
    tz: &TimeZone,
    namer: &mut Namer,
) -> AlertRow {
    let pseudonymised = namer.pseudonymiser.is_some();
    let evidence = alert
        .evidence
        .iter()
        .filter(|r| since <= r.at_unix_micros && r.at_unix_micros < until)
        .map(|r| EvidenceRow {
            at: local_text(r.at_unix_micros, tz),
            outcome: outcome_text(r.outcome).to_owned(),
            host: r.host.clone(),
            path: r.path.clone().unwrap_or_default(),
            search: r
                .search
                .as_ref()
                .map(|s| s.terms.clone())
                .unwrap_or_default(),
            client: if pseudonymised {
                String::new()
            } else {
                r.client.to_string()
            },
            computer: match (&r.computer, pseudonymised) {
                (Some(name), false) => name.clone(),
                _ => String::new(),
            },
        })
        .collect();
    AlertRow {
        id: alert.id,
        number: None,
        severity: alert.severity.as_str().to_owned(),
        kind: alert.kind.as_str().to_owned(),
        kind_in_words: alert.kind.in_words().to_owned(),
        status_in_words: alert.status.in_words().to_owned(),
        who: namer.name(&alert.who),
        role: alert.role.clone(),
        group: alert
            .group
            .as_deref()
            .map(|g| namer.group(g))
            .unwrap_or_default(),
        first_at: local_text(alert.first_at_unix_micros.max(since), tz),
        last_at: local_text(alert.last_at_unix_micros.min(until - 1), tz),
        occurrences: alert.occurrences,
        status: alert.status.as_str().to_owned(),
        summary: alert_summary(alert, namer),
        evidence,
    }
}

/// The alert's one line, with the person, the group (and, for a concurrent log-in,
/// the addresses) pseudonymised when pseudonymising.
fn alert_summary(alert: &Alert, namer: &mut Namer) -> String {
    if namer.pseudonymiser.is_none() {
        return alert.summary.clone();
    }
    let mut summary = replace_word(&alert.summary, &alert.who, &namer.name(&alert.who));
    if let Some(group) = alert.group.as_deref().filter(|g| !g.is_empty()) {
        summary = replace_word(&summary, group, &namer.group(group));
    }
    if alert.kind == AlertKind::ConcurrentLogin {
        namer.addresses(&summary)
    } else {
        summary
    }
}

/// `text` with every whole-word `word` (not inside a longer run of letters, digits,
/// `_` or `-`) replaced by `with`.
fn replace_word(text: &str, word: &str, with: &str) -> String {
    if word.is_empty() {
        return text.to_owned();
    }
    let part_of_word = |c: char| c.is_alphanumeric() || c == '_' || c == '-';
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for (at, _) in text.match_indices(word) {
        if at < copied {
            continue;
        }
        let end = at + word.len();
        let before = text[..at].chars().next_back();
        let after = text[end..].chars().next();
        if !before.is_some_and(part_of_word) && !after.is_some_and(part_of_word) {
            out.push_str(&text[copied..at]);
            out.push_str(with);
            copied = end;
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// The files of one report, written into `dir`; returns their paths (HTML first).
/// A missing `dir` is made private (0700); each file is private (0600) and appears
/// whole (written under a hidden name, then renamed), so the Reports page never serves
/// half a file.
pub fn write_files(
    report: &WeeklyReport,
    dir: &std::path::Path,
) -> Result<Vec<std::path::PathBuf>, ReportError> {
    let stem = if report.pseudonymised {
        format!("safegate-report-{}-pseudonymised", report.week)
    } else {
        format!("safegate-report-{}", report.week)
    };
    make_private_dir(dir, false)?;
    let mut written = Vec::new();
    let mut put = |name: String, bytes: Vec<u8>| -> Result<(), ReportError> {
        written.push(write_private(dir, &name, &bytes)?);
        Ok(())
    };
    put(format!("{stem}.html"), html::render(report).into_bytes())?;
    put(format!("{stem}.json"), serde_json::to_vec_pretty(report)?)?;
    for (name, bytes) in csv::render_all(report).map_err(|source| ReportError::Write {
        path: dir.display().to_string(),
        source,
    })? {
        put(format!("{stem}-{name}.csv"), bytes)?;
    }
    Ok(written)
}

/// Makes `dir` (and missing parents) readable by its owner only (0700); with
/// `tighten`, an existing `dir` is made 0700 too (SafeGate's own `data_dir/reports`,
/// never a folder a person named).
pub fn make_private_dir(dir: &std::path::Path, tighten: bool) -> Result<(), ReportError> {
    let failed = |source| ReportError::Write {
        path: dir.display().to_string(),
        source,
    };
    let existed = dir.is_dir();
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(failed)?;
    #[cfg(unix)]
    if tighten || !existed {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(failed)?;
    }
    Ok(())
}

/// Writes `bytes` as `dir/name`, private (0600), whole or not at all: a hidden
/// temporary file renamed over the name.
pub fn write_private(
    dir: &std::path::Path,
    name: &str,
    bytes: &[u8],
) -> Result<std::path::PathBuf, ReportError> {
    use std::io::Write as _;
    let path = dir.join(name);
    let temp = dir.join(format!(".{name}.tmp"));
    let failed = |at: &std::path::Path, source| ReportError::Write {
        path: at.display().to_string(),
        source,
    };
    let _ = std::fs::remove_file(&temp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&temp).map_err(|e| failed(&temp, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| failed(&temp, e))?;
    drop(file);
    std::fs::rename(&temp, &path).map_err(|e| failed(&path, e))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::net::IpAddr;

    use safegate_policy::Policy;
    use safegate_store::{IdentifiedBy, SearchTerms, SeenAs};

    use super::*;

    fn record(at: &str, user: &str, host: &str, search: Option<&str>) -> Record {
        Record {
            at_unix_micros: at.parse::<Timestamp>().unwrap().as_microsecond() as u64,
            user: Some(user.into()),
            role: "pupil".into(),
            group: Some("year6".into()),
            client: IpAddr::from([10, 0, 0, 1]),
            identified_by: IdentifiedBy::ProxyAuth,
            method: "GET".into(),
            scheme: "http".into(),
            host: host.into(),
            port: 80,
            path: Some("/".into()),
            categories: vec![],
            outcome: Outcome::Allowed,
            rule: "default".into(),
            status: 200,
            bytes_up: 0,
            bytes_down: 10,
            duration_micros: 30_000_000,
            search: search.map(|terms| SearchTerms {
                engine: "google".into(),
                terms: terms.into(),
            }),
            seen_as: SeenAs::PlainHttp,
            user_agent: None,
            failure: None,
            computer: None,
            content: None,
        }
    }

    #[test]
    fn a_week_over_the_clock_change_is_monday_to_sunday_school_time() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("harm.txt"), "kill myself\n").unwrap();
        std::fs::write(
            dir.path().join("policy.toml"),
            "[roles.pupil]\n[roles.staff]\n[roles.filter-admin]\n[alerts]\n\
             phrases = [{ list = \"self-harm\", path = \"harm.txt\", severity = \"high\" }]\n",
        )
        .unwrap();
        let policy = Policy::load(&dir.path().join("policy.toml")).unwrap();
        let store = Store::open(dir.path()).unwrap();
        // 2026-W13: Monday 23 March to Sunday 29 March; the clocks go forward at 01:00
        // UTC on Sunday, so the week ends at 23:00 UTC on Sunday.
        store
            .write_records(&[
                record("2026-03-22T23:59:59Z", "out", "before.test", None),
                record(
                    "2026-03-23T00:00:00Z",
                    "ada",
                    "first.test",
                    Some("volcanoes"),
                ),
                record(
                    "2026-03-29T22:30:00Z",
                    "ada",
                    "last.test",
                    Some("kill myself"),
                ),
                record("2026-03-29T23:00:00Z", "out", "after.test", None),
            ])
            .unwrap();
        // A concurrent log-in: its summary names both computers' addresses.
        store
            .raise_alert(safegate_store::NewAlert {
                computer: None,
                client: None,
                kind: AlertKind::ConcurrentLogin,
                severity: safegate_store::Severity::Medium,
                who: "ada".into(),
                user: Some("ada".into()),
                role: "pupil".into(),
                group: None,
                subject: String::new(),
                summary: "logged in at 10.0.0.2 while still at 10.0.0.1 (replaced)".into(),
                at_unix_micros: "2026-03-24T10:00:00Z"
                    .parse::<Timestamp>()
                    .unwrap()
                    .as_microsecond() as u64,
                evidence: Vec::new(),
            })
            .unwrap();
        let week = IsoWeek::parse("2026-W13").unwrap();
        let report = gather(
            &store,
            &policy,
            "Europe/London",
            week,
            &GatherOptions::default(),
        )
        .unwrap();
        assert_eq!(report.summary.requests, 2);
        assert_eq!(report.days[0].requests, 1);
        assert_eq!(report.days[6].requests, 1, "23:30 BST on Sunday is Sunday");
        assert_eq!(report.searches[0].terms, "kill myself", "flagged first");
        assert_eq!(report.searches[0].flagged, ["self-harm"]);
        assert_eq!(report.searches[0].at, "2026-03-29 23:30:00");
        assert_eq!(report.sites[0].sites.len(), 2);
        assert_eq!(report.sites[0].sites[0].time_spent_secs, 30);
        let text = serde_json::to_string(&report).unwrap();
        assert!(!text.contains("before.test") && !text.contains("after.test"));

        let pseudonymised = gather(
            &store,
            &policy,
            "Europe/London",
            week,
            &GatherOptions {
                pseudonymiser: Some(Pseudonymiser::with_key([1; 32])),
                generated_at_unix_micros: 1,
            },
        )
        .unwrap();
        assert!(
            pseudonymised
                .searches
                .iter()
                .all(|s| s.who.starts_with("P-"))
        );
        let html = html::render(&pseudonymised);
        assert!(!html.contains("ada"));
        assert_eq!(
            report.alerts[0].summary,
            "logged in at 10.0.0.2 while still at 10.0.0.1 (replaced)"
        );
        let namer = Pseudonymiser::with_key([1; 32]);
        assert_eq!(
            pseudonymised.alerts[0].summary,
            format!(
                "logged in at {} while still at {} (replaced)",
                namer.pseudonym("10.0.0.2"),
                namer.pseudonym("10.0.0.1")
            )
        );
        assert!(!html.contains("10.0.0."));
    }

    #[test]
    fn background_traffic_is_one_line_and_groups_are_pseudonymised() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("policy.toml"),
            "[roles.pupil]\n[roles.staff]\n[roles.filter-admin]\n\
             [categories.background]\nbackground = true\n\
             sites = [\"update.googleapis.com\", \"windowsupdate.com\"]\n",
        )
        .unwrap();
        let policy = Policy::load(&dir.path().join("policy.toml")).unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut recorded_as_background = record(
            "2026-11-17T10:01:00Z",
            "year6",
            "content-autofill.googleapis.com",
            None,
        );
        recorded_as_background.categories = vec!["background".into()];
        store
            .write_records(&[
                // Classified now, though recorded before the list named it.
                record(
                    "2026-11-17T10:00:00Z",
                    "year6",
                    "update.googleapis.com",
                    None,
                ),
                record(
                    "2026-11-17T10:00:30Z",
                    "year6",
                    "update.googleapis.com",
                    None,
                ),
                recorded_as_background,
                record(
                    "2026-11-17T10:02:00Z",
                    "year6",
                    "dl.windowsupdate.com",
                    None,
                ),
                record("2026-11-17T10:03:00Z", "year6", "www.bbc.co.uk", None),
            ])
            .unwrap();
        store
            .raise_alert(safegate_store::NewAlert {
                kind: AlertKind::RepeatedBlocks,
                severity: safegate_store::Severity::Low,
                who: "ada".into(),
                user: Some("ada".into()),
                role: "pupil".into(),
                group: Some("year6".into()),
                subject: String::new(),
                summary: "ada (group year6, not year6b) was blocked 5 times".into(),
                at_unix_micros: "2026-11-17T10:05:00Z"
                    .parse::<Timestamp>()
                    .unwrap()
                    .as_microsecond() as u64,
                evidence: Vec::new(),
                client: None,
                computer: None,
            })
            .unwrap();
        let week = IsoWeek::parse("2026-W47").unwrap();
        let report = gather(&store, &policy, "UTC", week, &GatherOptions::default()).unwrap();
        assert_eq!(report.summary.requests, 5);
        assert_eq!(report.summary.background_requests, 4);
        let group = &report.sites[0];
        assert_eq!(group.requests, 5);
        let sites: Vec<&str> = group.sites.iter().map(|s| s.site.as_str()).collect();
        assert_eq!(sites, ["bbc.co.uk"], "background is not a website visited");
        assert_eq!(group.background.requests, 4);
        assert_eq!(group.background.hosts, 3);
        assert_eq!(group.background.busiest[0], "update.googleapis.com");
        let uncategorised: Vec<&str> = report
            .uncategorised
            .iter()
            .map(|u| u.site.as_str())
            .collect();
        assert_eq!(uncategorised, ["bbc.co.uk"]);
        let html = html::render(&report);
        assert!(
            html.contains("Background: browser, system and app updates"),
            "{html}"
        );
        let csv = csv::render_all(&report).unwrap();
        let (_, background) = csv.iter().find(|(name, _)| name == "background").unwrap();
        assert!(String::from_utf8_lossy(background).contains("pupil,year6,4,0,1,3,"));

        let key = Pseudonymiser::with_key([2; 32]);
        let hidden = gather(
            &store,
            &policy,
            "UTC",
            week,
            &GatherOptions {
                pseudonymiser: Some(key.clone()),
                generated_at_unix_micros: 1,
            },
        )
        .unwrap();
        let g = key.group_pseudonym("year6");
        assert_eq!(hidden.sites[0].group, g);
        assert_eq!(hidden.alerts[0].group, g);
        assert_eq!(
            hidden.alerts[0].summary,
            format!(
                "{} (group {g}, not year6b) was blocked 5 times",
                key.pseudonym("ada")
            )
        );
        let text = serde_json::to_string(&hidden).unwrap();
        assert!(
            !text.contains("\"year6\"") && !text.contains("year6 "),
            "{text}"
        );

        // Files: a private folder made, private files, no temporary left.
        let out = dir.path().join("reports");
        let files = write_files(&hidden, &out).unwrap();
        assert_eq!(files.len(), 10);
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&out), 0o700);
        assert!(files.iter().all(|f| mode(f) == 0o600));
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 10);
    }

    #[test]
    fn words_are_replaced_whole() {
        assert_eq!(
            replace_word("ada, adam and ada", "ada", "P"),
            "P, adam and P"
        );
        assert_eq!(
            replace_word("10.0.0.1 10.0.0.12", "10.0.0.1", "X"),
            "X 10.0.0.12"
        );
        assert_eq!(replace_word("year6-b year6", "year6", "G"), "year6-b G");
    }
}
