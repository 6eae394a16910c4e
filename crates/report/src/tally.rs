//! The one pass over a week's visit-log records behind [`crate::gather`]. Each record
//! is added to running totals ([`WeekTally::add`], one named step per table of the
//! report): the day's and the week's counts; the site under the person's role and
//! group, with the time spent there as the person's visits close; the searches, with
//! the phrase lists they match; blocked attempts; circumvention attempts; staff
//! activity in core hours; and uncategorised sites. [`WeekTally::finish`] turns the
//! totals into the report's sorted and truncated rows.
//!
//! Background traffic (a host in one of the policy's `background = true` categories,
//! under the policy of now or as recorded: browser, system and app updates,
//! telemetry, safe-browsing) is counted in the day's figures, searches, blocked
//! attempts and circumvention as any other request, but not as a website visited or
//! an uncategorised site: it is folded into one background line per role and group.
//!
//! Memory grows with the week's people, sites, searches and attempts, not with its
//! number of requests.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use safegate_activity::{DEFAULT_IDLE_GAP, Visit, VisitJoiner};
use safegate_policy::{AlertSettings, Snapshot};
use safegate_safeguarding::PhraseMatcher;
use safegate_store::{Outcome, Record};

use crate::{
    AttemptRow, BACKGROUND_EXAMPLES, BackgroundLine, BlockedRow, DayFigures, IsoWeek, Namer,
    Pseudonymiser, SearchRow, SiteGroup, SiteRow, StaffRow, Summary, TOP_SITES, TOP_UNCATEGORISED,
    UncategorisedRow, local_text, outcome_text, who_of,
};

/// A role and a group: the key of the per-group tables.
type RoleGroup = (String, String);

#[derive(Default)]
struct SiteAcc {
    requests: u64,
    blocked: u64,
    people: HashSet<u32>,
    time_micros: u64,
}

/// Background traffic of one role and group.
#[derive(Default)]
struct BackgroundAcc {
    requests: u64,
    blocked: u64,
    people: HashSet<u32>,
    hosts: HashMap<String, u64>,
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

/// The running totals of one week.
pub(crate) struct WeekTally<'a> {
    policy: &'a Snapshot,
    settings: Arc<AlertSettings>,
    tz: TimeZone,
    matcher: PhraseMatcher,
    namer: Namer<'a>,
    /// Local midnights of Monday to the next Monday: records are placed by local date
    /// (the clock changes make a day 23 or 25 hours long).
    day_starts: Vec<u64>,
    days: Vec<DayFigures>,
    summary: Summary,
    /// Each person as a small number, so per-site sets of people stay small.
    ids: HashMap<String, u32>,
    /// Each person's role and group, as on their first record of the week.
    role_of: HashMap<String, RoleGroup>,
    sites: BTreeMap<RoleGroup, HashMap<String, SiteAcc>>,
    group_requests: BTreeMap<RoleGroup, u64>,
    joiner: VisitJoiner,
    searches: Vec<SearchRow>,
    blocked: BTreeMap<(String, String), BlockedAcc>,
    circumvention: Vec<AttemptRow>,
    staff: BTreeMap<(String, String), StaffAcc>,
    uncategorised: HashMap<String, (u64, HashSet<u32>)>,
    /// The policy's background categories, as recorded on records.
    background_categories: Vec<String>,
    /// Users marked shared (year-group log-ins); shared groups come from the policy.
    shared_users: HashSet<String>,
    /// Whether each host seen is background under the policy of now.
    background_hosts: HashMap<String, bool>,
    background: BTreeMap<RoleGroup, BackgroundAcc>,
}

/// One record and what every step needs from it, worked out once.
struct Seen<'r> {
    record: &'r Record,
    /// The user name, or the client address when nobody was identified.
    who: String,
    /// `who` as a small number.
    id: u32,
    group: String,
    /// The registrable domain of the host.
    site: String,
    blocked: bool,
    /// Browser, system or app background traffic.
    background: bool,
    /// A shared (year-group) log-in: its rows are per computer.
    shared: bool,
}

/// The totals of a week as the report's rows (the alerts come from the store).
pub(crate) struct Tallied<'a> {
    pub(crate) namer: Namer<'a>,
    pub(crate) summary: Summary,
    pub(crate) days: Vec<DayFigures>,
    pub(crate) searches: Vec<SearchRow>,
    pub(crate) sites: Vec<SiteGroup>,
    pub(crate) blocked: Vec<BlockedRow>,
    pub(crate) circumvention: Vec<AttemptRow>,
    pub(crate) staff_core_hours: Vec<StaffRow>,
    pub(crate) uncategorised: Vec<UncategorisedRow>,
}

impl<'a> WeekTally<'a> {
    /// Empty totals for `week` under `policy` (time zone, phrase lists, circumvention
    /// categories, core hours); people are named through `pseudonymiser` when given.
    pub(crate) fn new(
        policy: &'a Snapshot,
        week: IsoWeek,
        pseudonymiser: Option<&'a Pseudonymiser>,
        shared_users: HashSet<String>,
    ) -> Self {
        let tz = policy.timezone().clone();
        let monday = week.monday();
        let date = |i: i64| monday.saturating_add(jiff::Span::new().days(i));
        let days = (0..7)
            .map(|i| DayFigures {
                day: date(i).strftime("%a %Y-%m-%d").to_string(),
                ..DayFigures::default()
            })
            .collect();
        let day_starts = (0..=7)
            .map(|i| {
                date(i)
                    .to_zoned_datetime(tz.clone())
                    .map(|z| u64::try_from(z.timestamp().as_microsecond()).unwrap_or(0))
                    .unwrap_or(0)
            })
            .collect();
        let settings = Arc::clone(policy.alerts());
        Self {
            policy,
            matcher: PhraseMatcher::new(&settings.phrase_lists),
            settings,
            shared_users,
            tz,
            namer: Namer {
                pseudonymiser,
                cache: HashMap::new(),
            },
            day_starts,
            days,
            summary: Summary::default(),
            ids: HashMap::new(),
            role_of: HashMap::new(),
            sites: BTreeMap::new(),
            group_requests: BTreeMap::new(),
            joiner: VisitJoiner::new(DEFAULT_IDLE_GAP),
            searches: Vec::new(),
            blocked: BTreeMap::new(),
            circumvention: Vec::new(),
            staff: BTreeMap::new(),
            uncategorised: HashMap::new(),
            background_categories: policy.background_categories().map(str::to_owned).collect(),
            background_hosts: HashMap::new(),
            background: BTreeMap::new(),
        }
    }

    /// Whether `record` is background traffic: recorded in a background category, or
    /// its host is in one now (looked up once per host).
    fn is_background(&mut self, record: &Record) -> bool {
        if record
            .categories
            .iter()
            .any(|c| self.background_categories.contains(c))
        {
            return true;
        }
        if let Some(&known) = self.background_hosts.get(&record.host) {
            return known;
        }
        let background = self.policy.is_background_host(&record.host);
        self.background_hosts
            .insert(record.host.clone(), background);
        background
    }

    /// The person a row is about: for a shared log-in, the log-in on one computer
    /// ("year6 on ICT-PC07 (10.0.3.57)"), so the rows group by computer within it.
    fn person(&mut self, seen: &Seen) -> String {
        let name = self.namer.name(&seen.who);
        if seen.shared {
            format!("{name} on {}", self.namer.computer_of(seen.record))
        } else {
            name
        }
    }

    /// Adds one record of the week to every table.
    pub(crate) fn add(&mut self, record: &Record) {
        let who = who_of(record);
        let next_id = self.ids.len() as u32;
        let id = *self.ids.entry(who.clone()).or_insert(next_id);
        let background = self.is_background(record);
        let seen = Seen {
            record,
            who,
            id,
            group: record
                .group
                .as_deref()
                .map(|g| self.namer.group(g))
                .unwrap_or_default(),
            site: safegate_activity::site_of(&record.host).to_owned(),
            blocked: record.outcome == Outcome::Blocked,
            background,
            shared: record.user.as_ref().is_some_and(|user| {
                self.shared_users.contains(user)
                    || self.settings.shared_group(record.group.as_deref())
            }),
        };
        self.count(&seen);
        if seen.background {
            self.background_request(&seen);
        } else {
            self.visit_site(&seen);
        }
        self.search(&seen);
        self.blocked_attempt(&seen);
        self.circumvention_attempt(&seen);
        self.staff_core_hours(&seen);
        self.uncategorised_site(seen);
    }

    /// The day's and the week's request, download and block counts.
    fn count(&mut self, seen: &Seen) {
        let record = seen.record;
        let day = self
            .day_starts
            .partition_point(|&start| start <= record.at_unix_micros)
            .clamp(1, 7)
            - 1;
        self.days[day].requests += 1;
        self.summary.requests += 1;
        self.summary.bytes_down += record.bytes_down;
        if seen.blocked {
            self.days[day].blocked += 1;
            self.summary.blocked += 1;
        }
    }

    /// The site's figures under the person's role and group, and the time spent on
    /// the visits this record closes (idle visits are closed every 65,536 requests).
    fn visit_site(&mut self, seen: &Seen) {
        let record = seen.record;
        if !self.role_of.contains_key(&seen.who) {
            self.role_of
                .insert(seen.who.clone(), (record.role.clone(), seen.group.clone()));
        }
        let key = (record.role.clone(), seen.group.clone());
        *self.group_requests.entry(key.clone()).or_default() += 1;
        let acc = self
            .sites
            .entry(key)
            .or_default()
            .entry(seen.site.clone())
            .or_default();
        acc.requests += 1;
        acc.blocked += u64::from(seen.blocked);
        acc.people.insert(seen.id);
        add_visits(self.joiner.push(record), &self.role_of, &mut self.sites);
        if self.summary.requests.is_multiple_of(65_536) {
            add_visits(
                self.joiner.close_idle(record.at_unix_micros),
                &self.role_of,
                &mut self.sites,
            );
        }
    }

    /// A background request, under the person's role and group (which is listed even
    /// when all its traffic is background).
    fn background_request(&mut self, seen: &Seen) {
        let record = seen.record;
        self.summary.background_requests += 1;
        let key = (record.role.clone(), seen.group.clone());
        *self.group_requests.entry(key.clone()).or_default() += 1;
        self.sites.entry(key.clone()).or_default();
        let acc = self.background.entry(key).or_default();
        acc.requests += 1;
        acc.blocked += u64::from(seen.blocked);
        acc.people.insert(seen.id);
        *acc.hosts.entry(record.host.clone()).or_default() += 1;
    }

    /// A search: counted, matched against the phrase lists and listed.
    fn search(&mut self, seen: &Seen) {
        let record = seen.record;
        let Some(search) = &record.search else {
            return;
        };
        self.summary.searches += 1;
        let flagged: Vec<String> = self
            .matcher
            .find(&search.terms)
            .into_iter()
            .map(|hit| hit.list)
            .collect();
        self.summary.flagged_searches += u64::from(!flagged.is_empty());
        let (who, computer) = (self.person(seen), self.namer.computer_of(record));
        self.searches.push(SearchRow {
            at: local_text(record.at_unix_micros, &self.tz),
            who,
            computer,
            role: record.role.clone(),
            group: seen.group.clone(),
            engine: search.engine.clone(),
            terms: search.terms.clone(),
            flagged,
            outcome: outcome_text(record.outcome).to_owned(),
        });
    }

    /// A blocked request, per person and category (the rule when uncategorised).
    fn blocked_attempt(&mut self, seen: &Seen) {
        if !seen.blocked {
            return;
        }
        let record = seen.record;
        let category = record
            .categories
            .first()
            .cloned()
            .unwrap_or_else(|| record.rule.clone());
        let person = self.person(seen);
        let entry = self
            .blocked
            .entry((person, category))
            .or_insert_with(|| BlockedAcc {
                role: record.role.clone(),
                group: seen.group.clone(),
                attempts: 0,
                first: record.at_unix_micros,
                last: record.at_unix_micros,
            });
        entry.attempts += 1;
        entry.last = record.at_unix_micros;
    }

    /// A request in a circumvention category, or a TLS name that did not match the
    /// site (`sni-mismatch`).
    fn circumvention_attempt(&mut self, seen: &Seen) {
        let record = seen.record;
        let circumventing = record
            .categories
            .iter()
            .find(|c| self.settings.circumvention_categories.contains(c))
            .cloned()
            .or_else(|| {
                (record.rule.contains("sni-mismatch")
                    || record.failure.as_deref() == Some("sni-mismatch"))
                .then(|| "sni-mismatch".to_owned())
            });
        let Some(category) = circumventing else {
            return;
        };
        self.summary.circumvention_attempts += 1;
        let (who, computer) = (self.person(seen), self.namer.computer_of(record));
        self.circumvention.push(AttemptRow {
            at: local_text(record.at_unix_micros, &self.tz),
            who,
            computer,
            role: record.role.clone(),
            host: record.host.clone(),
            category,
            outcome: outcome_text(record.outcome).to_owned(),
        });
    }

    /// A staff request in a personal category within the policy's window
    /// (`[alerts.staff_social]`), per person and category.
    fn staff_core_hours(&mut self, seen: &Seen) {
        let record = seen.record;
        if let Some(staff_social) = &self.settings.staff_social
            && staff_social.roles.contains(&record.role)
            && let Some(category) = record
                .categories
                .iter()
                .find(|c| staff_social.categories.contains(c))
            && staff_social.window.as_deref().is_none_or(|window| {
                let ts = Timestamp::from_microsecond(record.at_unix_micros as i64)
                    .unwrap_or(Timestamp::UNIX_EPOCH);
                self.policy.window_open(window, ts) == Some(true)
            })
        {
            let entry = self
                .staff
                .entry((self.namer.name(&seen.who), category.clone()))
                .or_insert_with(|| StaffAcc {
                    requests: 0,
                    blocked: 0,
                    first: record.at_unix_micros,
                    sites: Vec::new(),
                });
            entry.requests += 1;
            entry.blocked += u64::from(seen.blocked);
            if !entry.sites.contains(&seen.site) {
                entry.sites.push(seen.site.clone());
            }
        }
    }

    /// A request to a site in no category.
    fn uncategorised_site(&mut self, seen: Seen) {
        if seen.record.categories.is_empty() && !seen.background {
            let entry = self.uncategorised.entry(seen.site).or_default();
            entry.0 += 1;
            entry.1.insert(seen.id);
        }
    }

    /// Closes the last visits and turns the totals into the report's rows.
    pub(crate) fn finish(self) -> Tallied<'a> {
        let mut sites = self.sites;
        add_visits(self.joiner.finish(), &self.role_of, &mut sites);
        let mut summary = self.summary;
        summary.people = self.ids.len() as u64;
        let mut searches = self.searches;
        // Flagged first, then by person and time.
        searches.sort_by(|a, b| {
            a.flagged
                .is_empty()
                .cmp(&b.flagged.is_empty())
                .then_with(|| a.who.cmp(&b.who))
                .then_with(|| a.at.cmp(&b.at))
        });
        Tallied {
            namer: self.namer,
            summary,
            days: self.days,
            searches,
            sites: site_groups(sites, self.background, &self.group_requests),
            blocked: blocked_rows(self.blocked, &self.tz),
            circumvention: self.circumvention,
            staff_core_hours: staff_rows(self.staff, &self.tz),
            uncategorised: uncategorised_rows(self.uncategorised),
        }
    }
}

/// Adds the time of closed visits to the site under the visitor's role and group.
fn add_visits(
    visits: Vec<Visit>,
    role_of: &HashMap<String, RoleGroup>,
    sites: &mut BTreeMap<RoleGroup, HashMap<String, SiteAcc>>,
) {
    for visit in visits {
        if let Some(acc) = role_of
            .get(&visit.user)
            .and_then(|key| sites.get_mut(key))
            .and_then(|s| s.get_mut(&visit.site))
        {
            acc.time_micros += visit.duration_micros();
        }
    }
}

/// Each role and group with its [`TOP_SITES`] sites, by time spent, then requests.
fn site_groups(
    sites: BTreeMap<RoleGroup, HashMap<String, SiteAcc>>,
    mut background: BTreeMap<RoleGroup, BackgroundAcc>,
    group_requests: &BTreeMap<RoleGroup, u64>,
) -> Vec<SiteGroup> {
    sites
        .into_iter()
        .map(|((role, group), accs)| {
            let background = background
                .remove(&(role.clone(), group.clone()))
                .map(background_line)
                .unwrap_or_default();
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
                background,
            }
        })
        .collect()
}

/// One role and group's background traffic as its report line, with the
/// [`BACKGROUND_EXAMPLES`] busiest hosts named.
fn background_line(acc: BackgroundAcc) -> BackgroundLine {
    let hosts = acc.hosts.len() as u64;
    let mut busiest: Vec<(String, u64)> = acc.hosts.into_iter().collect();
    busiest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    BackgroundLine {
        requests: acc.requests,
        blocked: acc.blocked,
        people: acc.people.len() as u64,
        hosts,
        busiest: busiest
            .into_iter()
            .take(BACKGROUND_EXAMPLES)
            .map(|(host, _)| host)
            .collect(),
    }
}

/// Blocked attempts by person, most attempts first within a person.
fn blocked_rows(blocked: BTreeMap<(String, String), BlockedAcc>, tz: &TimeZone) -> Vec<BlockedRow> {
    let mut rows: Vec<BlockedRow> = blocked
        .into_iter()
        .map(|((who, category), acc)| BlockedRow {
            who,
            role: acc.role,
            group: acc.group,
            category,
            attempts: acc.attempts,
            first_at: local_text(acc.first, tz),
            last_at: local_text(acc.last, tz),
        })
        .collect();
    rows.sort_by(|a, b| a.who.cmp(&b.who).then(b.attempts.cmp(&a.attempts)));
    rows
}

/// Staff activity in core hours, by person and category.
fn staff_rows(staff: BTreeMap<(String, String), StaffAcc>, tz: &TimeZone) -> Vec<StaffRow> {
    staff
        .into_iter()
        .map(|((who, category), acc)| StaffRow {
            who,
            category,
            requests: acc.requests,
            blocked: acc.blocked,
            first_at: local_text(acc.first, tz),
            sites: acc.sites,
        })
        .collect()
}

/// The [`TOP_UNCATEGORISED`] busiest uncategorised sites.
fn uncategorised_rows(
    uncategorised: HashMap<String, (u64, HashSet<u32>)>,
) -> Vec<UncategorisedRow> {
    let mut rows: Vec<UncategorisedRow> = uncategorised
        .into_iter()
        .map(|(site, (requests, people))| UncategorisedRow {
            site,
            requests,
            people: people.len() as u64,
        })
        .collect();
    rows.sort_by(|a, b| {
        b.requests
            .cmp(&a.requests)
            .then_with(|| a.site.cmp(&b.site))
    });
    rows.truncate(TOP_UNCATEGORISED);
    rows
}
