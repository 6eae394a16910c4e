//! The weekly sweep report: what the headteacher and the designated safeguarding lead
//! read every Monday. One ISO week (Monday to Sunday in the school's time zone) is
//! gathered from the store in one pass over the week's records ([`gather`]) into a
//! [`WeeklyReport`], which is rendered for people as one self-contained, printable
//! HTML file ([`html`]) and for tools as JSON and CSV files ([`csv`]).
//!
//! What it holds: summary figures and requests per day; the alerts that had an
//! occurrence in the week, by severity, with their evidence; every search, the ones
//! matching a safeguarding phrase list first, then by user; websites visited by role
//! and group (top sites, time spent from visits joined by the monitor crate); blocked
//! attempts by user and category; circumvention attempts; staff activity in core
//! hours on non-work categories (the policy's `[alerts.staff_social]`); and busy
//! uncategorised sites for the filter admin. Nothing outside the week is included.
//!
//! With [`GatherOptions::pseudonymiser`] every person (user name, or the client
//! address when nobody was identified) is replaced by a stable pseudonym
//! ([`pseudonym`]), evidence included.
//!
//! [`scheduler`] makes and mails the report every week in `safegate run`
//! (`[report]` in `safegate.toml`).

pub mod csv;
pub mod html;
pub mod pseudonym;
pub mod scheduler;
pub mod week;

use std::collections::{BTreeMap, HashMap, HashSet};

use jiff::Timestamp;
use jiff::tz::TimeZone;
use safegate_monitor::{DEFAULT_IDLE_GAP, VisitJoiner};
use safegate_policy::Snapshot;
use safegate_safeguarding::PhraseMatcher;
use safegate_store::{AlertFilter, AlertKind, Outcome, Query, Record, Store, StoreError};
use serde::{Deserialize, Serialize};

pub use crate::pseudonym::Pseudonymiser;
pub use crate::week::IsoWeek;

/// Top sites listed per role and group.
pub const TOP_SITES: usize = 25;
/// Uncategorised sites listed.
pub const TOP_UNCATEGORISED: usize = 50;

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The week is not written like `2026-W47`.
    #[error("`{0}` is not an ISO week such as 2026-W47")]
    Week(String),
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
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
}

/// One alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRow {
    /// Id.
    pub id: u64,
    /// `high`, `medium`, `low`.
    pub severity: String,
    /// Kind.
    pub kind: String,
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
    /// Person.
    pub who: String,
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
    /// The top sites by time spent, then requests.
    pub sites: Vec<SiteRow>,
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
    /// Person.
    pub who: String,
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

/// Names people, pseudonymised or not.
struct Namer<'a> {
    pseudonymiser: Option<&'a Pseudonymiser>,
    cache: HashMap<String, String>,
}

impl Namer<'_> {
    fn name(&mut self, who: &str) -> String {
        match self.pseudonymiser {
            None => who.to_owned(),
            Some(p) => self
                .cache
                .entry(who.to_owned())
                .or_insert_with(|| p.pseudonym(who))
                .clone(),
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

#[derive(Default)]
struct SiteAcc {
    requests: u64,
    blocked: u64,
    people: HashSet<u32>,
    time_micros: u64,
}

struct BlockedAcc {
    role: String,
    group: String,
    attempts: u64,
    first: u64,
    last: u64,
}

struct StaffAcc {
    requests: u64,
    blocked: u64,
    first: u64,
    sites: Vec<String>,
}

/// Gathers `week` from `store` under `policy` (time zone, phrase lists,
/// circumvention categories, core hours): one pass over the week's records.
pub fn gather(
    store: &Store,
    policy: &Snapshot,
    timezone_name: &str,
    week: IsoWeek,
    options: &GatherOptions,
) -> Result<WeeklyReport, ReportError> {
    let tz = policy.timezone().clone();
    let (since, until) = week.range_micros(&tz);
    let settings = std::sync::Arc::clone(policy.alerts());
    let matcher = PhraseMatcher::new(&settings.phrase_lists);
    let mut namer = Namer {
        pseudonymiser: options.pseudonymiser.as_ref(),
        cache: HashMap::new(),
    };
    let monday = week.monday();
    let mut days: Vec<DayFigures> = (0..7)
        .map(|i| {
            let date = monday.saturating_add(jiff::Span::new().days(i));
            DayFigures {
                day: date.strftime("%a %Y-%m-%d").to_string(),
                ..DayFigures::default()
            }
        })
        .collect();
    let mut summary = Summary::default();
    // Each person as a small number, so per-site sets of people stay small.
    let mut ids: HashMap<String, u32> = HashMap::new();
    // Local midnights of Monday to the next Monday: records are placed by local date
    // (the clock changes make a day 23 or 25 hours long).
    let day_starts: Vec<u64> = (0..=7)
        .map(|i| {
            let date = monday.saturating_add(jiff::Span::new().days(i));
            date.to_zoned_datetime(tz.clone())
                .map(|z| u64::try_from(z.timestamp().as_microsecond()).unwrap_or(0))
                .unwrap_or(0)
        })
        .collect();
    let mut searches: Vec<SearchRow> = Vec::new();
    let mut role_of: HashMap<String, (String, String)> = HashMap::new();
    let mut sites: BTreeMap<(String, String), HashMap<String, SiteAcc>> = BTreeMap::new();
    let mut group_requests: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut blocked: BTreeMap<(String, String), BlockedAcc> = BTreeMap::new();
    let mut circumvention: Vec<AttemptRow> = Vec::new();
    let mut staff: BTreeMap<(String, String), StaffAcc> = BTreeMap::new();
    let mut uncategorised: HashMap<String, (u64, HashSet<u32>)> = HashMap::new();
    let mut joiner = VisitJoiner::new(DEFAULT_IDLE_GAP);
    // Time spent is added to the site of the visitor's role and group as visits close.
    let add_visits =
        |visits: Vec<safegate_monitor::Visit>,
         role_of: &HashMap<String, (String, String)>,
         sites: &mut BTreeMap<(String, String), HashMap<String, SiteAcc>>| {
            for visit in visits {
                if let Some(acc) = role_of
                    .get(&visit.user)
                    .and_then(|key| sites.get_mut(key))
                    .and_then(|s| s.get_mut(&visit.site))
                {
                    acc.time_micros += visit.duration_micros();
                }
            }
        };
    let staff_social = settings.staff_social.clone();
    let query = Query {
        since: Some(since),
        until: Some(until),
        ..Query::default()
    };
    store.scan(&query, |record| {
        let who = who_of(&record);
        let next_id = ids.len() as u32;
        let id = *ids.entry(who.clone()).or_insert(next_id);
        let group = record.group.clone().unwrap_or_default();
        let day = day_starts
            .partition_point(|&start| start <= record.at_unix_micros)
            .clamp(1, 7)
            - 1;
        days[day].requests += 1;
        summary.requests += 1;
        summary.bytes_down += record.bytes_down;
        let is_blocked = record.outcome == Outcome::Blocked;
        if is_blocked {
            days[day].blocked += 1;
            summary.blocked += 1;
        }
        if !role_of.contains_key(&who) {
            role_of.insert(who.clone(), (record.role.clone(), group.clone()));
        }
        let site = safegate_monitor::site_of(&record.host).to_owned();
        let key = (record.role.clone(), group.clone());
        *group_requests.entry(key.clone()).or_default() += 1;
        let acc = sites
            .entry(key)
            .or_default()
            .entry(site.clone())
            .or_default();
        acc.requests += 1;
        acc.blocked += u64::from(is_blocked);
        acc.people.insert(id);
        add_visits(joiner.push(&record), &role_of, &mut sites);
        if summary.requests.is_multiple_of(65_536) {
            add_visits(
                joiner.close_idle(record.at_unix_micros),
                &role_of,
                &mut sites,
            );
        }
        if let Some(search) = &record.search {
            summary.searches += 1;
            let flagged: Vec<String> = matcher
                .find(&search.terms)
                .into_iter()
                .map(|hit| hit.list)
                .collect();
            summary.flagged_searches += u64::from(!flagged.is_empty());
            searches.push(SearchRow {
                at: local_text(record.at_unix_micros, &tz),
                who: namer.name(&who),
                role: record.role.clone(),
                group: group.clone(),
                engine: search.engine.clone(),
                terms: search.terms.clone(),
                flagged,
                outcome: outcome_text(record.outcome).to_owned(),
            });
        }
        if is_blocked {
            let category = record
                .categories
                .first()
                .cloned()
                .unwrap_or_else(|| record.rule.clone());
            let entry = blocked
                .entry((namer.name(&who), category))
                .or_insert_with(|| BlockedAcc {
                    role: record.role.clone(),
                    group: group.clone(),
                    attempts: 0,
                    first: record.at_unix_micros,
                    last: record.at_unix_micros,
                });
            entry.attempts += 1;
            entry.last = record.at_unix_micros;
        }
        let circumventing = record
            .categories
            .iter()
            .find(|c| settings.circumvention_categories.contains(c))
            .cloned()
            .or_else(|| {
                (record.rule.contains("sni-mismatch")
                    || record.failure.as_deref() == Some("sni-mismatch"))
                .then(|| "sni-mismatch".to_owned())
            });
        if let Some(category) = circumventing {
            summary.circumvention_attempts += 1;
            circumvention.push(AttemptRow {
                at: local_text(record.at_unix_micros, &tz),
                who: namer.name(&who),
                role: record.role.clone(),
                host: record.host.clone(),
                category,
                outcome: outcome_text(record.outcome).to_owned(),
            });
        }
        if let Some(staff_social) = &staff_social
            && staff_social.roles.contains(&record.role)
            && let Some(category) = record
                .categories
                .iter()
                .find(|c| staff_social.categories.contains(c))
            && staff_social.window.as_deref().is_none_or(|window| {
                let ts = Timestamp::from_microsecond(record.at_unix_micros as i64)
                    .unwrap_or(Timestamp::UNIX_EPOCH);
                policy.window_open(window, ts) == Some(true)
            })
        {
            let entry = staff
                .entry((namer.name(&who), category.clone()))
                .or_insert_with(|| StaffAcc {
                    requests: 0,
                    blocked: 0,
                    first: record.at_unix_micros,
                    sites: Vec::new(),
                });
            entry.requests += 1;
            entry.blocked += u64::from(is_blocked);
            if !entry.sites.contains(&site) {
                entry.sites.push(site.clone());
            }
        }
        if record.categories.is_empty() {
            let entry = uncategorised.entry(site).or_default();
            entry.0 += 1;
            entry.1.insert(id);
        }
        true
    })?;
    add_visits(joiner.finish(), &role_of, &mut sites);
    summary.people = ids.len() as u64;

    // Flagged first, then by person and time.
    searches.sort_by(|a, b| {
        a.flagged
            .is_empty()
            .cmp(&b.flagged.is_empty())
            .then_with(|| a.who.cmp(&b.who))
            .then_with(|| a.at.cmp(&b.at))
    });

    let site_groups = sites
        .into_iter()
        .map(|((role, group), accs)| {
            let mut rows: Vec<SiteRow> = accs
                .into_iter()
                .map(|(site, acc)| SiteRow {
                    site,
                    requests: acc.requests,
                    blocked: acc.blocked,
                    people: acc.people.len() as u64,
                    time_spent_secs: acc.time_micros / 1_000_000,
                })
                .collect();
            rows.sort_by(|a, b| {
                b.time_spent_secs
                    .cmp(&a.time_spent_secs)
                    .then(b.requests.cmp(&a.requests))
                    .then_with(|| a.site.cmp(&b.site))
            });
            rows.truncate(TOP_SITES);
            let requests = group_requests
                .get(&(role.clone(), group.clone()))
                .copied()
                .unwrap_or(0);
            SiteGroup {
                role,
                group,
                requests,
                sites: rows,
            }
        })
        .collect();

    let mut blocked_rows: Vec<BlockedRow> = blocked
        .into_iter()
        .map(|((who, category), acc)| BlockedRow {
            who,
            role: acc.role,
            group: acc.group,
            category,
            attempts: acc.attempts,
            first_at: local_text(acc.first, &tz),
            last_at: local_text(acc.last, &tz),
        })
        .collect();
    blocked_rows.sort_by(|a, b| a.who.cmp(&b.who).then(b.attempts.cmp(&a.attempts)));

    let staff_rows = staff
        .into_iter()
        .map(|((who, category), acc)| StaffRow {
            who,
            category,
            requests: acc.requests,
            blocked: acc.blocked,
            first_at: local_text(acc.first, &tz),
            sites: acc.sites,
        })
        .collect();

    let mut uncategorised_rows: Vec<UncategorisedRow> = uncategorised
        .into_iter()
        .map(|(site, (requests, people))| UncategorisedRow {
            site,
            requests,
            people: people.len() as u64,
        })
        .collect();
    uncategorised_rows.sort_by(|a, b| {
        b.requests
            .cmp(&a.requests)
            .then_with(|| a.site.cmp(&b.site))
    });
    uncategorised_rows.truncate(TOP_UNCATEGORISED);

    let mut alerts: Vec<AlertRow> = store
        .alerts(&AlertFilter {
            since: Some(since),
            until: Some(until),
            ..AlertFilter::default()
        })?
        .into_iter()
        .map(|alert| {
            match alert.severity {
                safegate_store::Severity::High => summary.alerts_high += 1,
                safegate_store::Severity::Medium => summary.alerts_medium += 1,
                safegate_store::Severity::Low => summary.alerts_low += 1,
            }
            let evidence = alert
                .evidence
                .iter()
                .filter(|r| since <= r.at_unix_micros && r.at_unix_micros < until)
                .map(|r| EvidenceRow {
                    at: local_text(r.at_unix_micros, &tz),
                    outcome: outcome_text(r.outcome).to_owned(),
                    host: r.host.clone(),
                    path: r.path.clone().unwrap_or_default(),
                    search: r
                        .search
                        .as_ref()
                        .map(|s| s.terms.clone())
                        .unwrap_or_default(),
                    client: if namer.pseudonymiser.is_some() {
                        String::new()
                    } else {
                        r.client.to_string()
                    },
                })
                .collect();
            AlertRow {
                id: alert.id,
                severity: alert.severity.as_str().to_owned(),
                kind: alert.kind.as_str().to_owned(),
                who: namer.name(&alert.who),
                role: alert.role.clone(),
                group: alert.group.clone().unwrap_or_default(),
                first_at: local_text(alert.first_at_unix_micros.max(since), &tz),
                last_at: local_text(alert.last_at_unix_micros.min(until - 1), &tz),
                occurrences: alert.occurrences,
                status: alert.status.as_str().to_owned(),
                summary: if namer.pseudonymiser.is_some() {
                    let summary = alert.summary.replace(&alert.who, &namer.name(&alert.who));
                    if alert.kind == AlertKind::ConcurrentLogin {
                        namer.addresses(&summary)
                    } else {
                        summary
                    }
                } else {
                    alert.summary.clone()
                },
                evidence,
            }
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

    let generated = if options.generated_at_unix_micros == 0 {
        u64::try_from(Timestamp::now().as_microsecond()).unwrap_or(0)
    } else {
        options.generated_at_unix_micros
    };
    Ok(WeeklyReport {
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
        sites: site_groups,
        blocked: blocked_rows,
        circumvention,
        staff_core_hours: staff_rows,
        uncategorised: uncategorised_rows,
    })
}

/// The files of one report, written into `dir`; returns their paths (HTML first).
pub fn write_files(
    report: &WeeklyReport,
    dir: &std::path::Path,
) -> Result<Vec<std::path::PathBuf>, ReportError> {
    let stem = if report.pseudonymised {
        format!("safegate-report-{}-pseudonymised", report.week)
    } else {
        format!("safegate-report-{}", report.week)
    };
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Write {
        path: dir.display().to_string(),
        source,
    })?;
    let mut written = Vec::new();
    let mut put = |name: String, bytes: Vec<u8>| -> Result<(), ReportError> {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|source| ReportError::Write {
            path: path.display().to_string(),
            source,
        })?;
        written.push(path);
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
}
