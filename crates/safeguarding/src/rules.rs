//! The alert rules, applied to one record at a time in arrival order: safeguarding
//! phrases, locked categories, circumvention, staff social networking in core hours,
//! and repeated blocked attempts (a sliding window per person). Every record counts,
//! whether the site answered, failed or was blocked: a search whose page never
//! loaded was still typed.
//!
//! Heavy use needs the store (each user's own baseline) and is measured by the engine
//! ([`crate::engine`]); concurrent log-ins come from the identity layer as events
//! ([`Evaluator::concurrent_login`]).
//!
//! A *shared* log-in (a year-group log-in used by a class: its group is in
//! `alerts.shared_groups`, or the user is marked shared) is not one person: every
//! per-person rule counts per computer (`year6@10.0.3.57`), its alerts name the
//! computer ("year6 on ICT-PC07 (10.0.3.57)"), and it never raises a concurrent
//! log-in alert.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use jiff::Timestamp;
use safegate_policy::{AlertSettings, Severity, Snapshot};
use safegate_store::{AlertKind, NewAlert, Outcome, Record, RecordRef};

use crate::normalise::{normalise, percent_decode};
use crate::phrases::PhraseMatcher;

/// Who a record is about: the user name, or the client address.
pub fn who(record: &RecordRef<'_>) -> String {
    record
        .user
        .map_or_else(|| record.client.to_string(), str::to_owned)
}

pub use safegate_store::computer_text;

/// Which log-ins are shared: the policy's shared groups and the users marked shared
/// (kept up to date by the engine from the store).
#[derive(Debug, Clone, Default)]
pub struct SharedLogins {
    /// Users marked shared.
    pub users: HashSet<String>,
}

impl SharedLogins {
    /// Whether this user (with this group) is a shared log-in.
    pub fn is_shared(
        &self,
        settings: &AlertSettings,
        user: Option<&str>,
        group: Option<&str>,
    ) -> bool {
        user.is_some_and(|user| self.users.contains(user)) || settings.shared_group(group)
    }
}

/// A user logged in on a second computer while still at the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConcurrentLogin {
    /// When, Unix microseconds.
    pub at_unix_micros: u64,
    /// The user.
    pub user: String,
    /// Where the user already was.
    pub old_address: IpAddr,
    /// The new address.
    pub new_address: IpAddr,
    /// What SafeGate did (`allowed`, `denied`, `replaced`).
    pub outcome: String,
}

/// Names computers for alerts (see [`crate::computers`]).
pub type NameComputer = Arc<dyn Fn(IpAddr) -> Option<String> + Send + Sync>;

/// The rules' state: the compiled phrase lists of the current policy, each person's
/// (or shared log-in's computer's) recent blocked attempts, which log-ins are shared
/// and how computers are named.
#[derive(Default)]
pub struct Evaluator {
    matcher: Option<(Arc<AlertSettings>, PhraseMatcher)>,
    blocked: HashMap<String, VecDeque<Record>>,
    /// Which log-ins are shared.
    pub shared: SharedLogins,
    /// Computer names, when configured.
    pub names: Option<NameComputer>,
}

fn timestamp(micros: u64) -> Timestamp {
    Timestamp::from_microsecond(i64::try_from(micros).unwrap_or(i64::MAX))
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

impl Evaluator {
    /// A fresh evaluator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the record's log-in is shared.
    pub fn is_shared(&self, settings: &AlertSettings, record: &RecordRef<'_>) -> bool {
        self.shared.is_shared(settings, record.user, record.group)
    }

    /// The key per-person rules count under: the user, the user at one computer for
    /// a shared log-in (`year6@10.0.3.57`), or the address when nobody logged in.
    pub fn person_key<'r>(
        &self,
        settings: &AlertSettings,
        record: &'r RecordRef<'_>,
    ) -> Cow<'r, str> {
        match record.user {
            Some(user) if self.is_shared(settings, record) => {
                Cow::Owned(format!("{user}@{}", record.client))
            }
            Some(user) => Cow::Borrowed(user),
            None => Cow::Owned(record.client.to_string()),
        }
    }

    /// The computer's name, when one is known.
    pub fn computer_name(&self, client: IpAddr) -> Option<String> {
        self.names.as_ref().and_then(|names| names(client))
    }

    /// A new alert about `record`: it names the computer, and for a shared log-in
    /// its `who` is the log-in on that computer.
    pub fn base(
        &self,
        settings: &AlertSettings,
        record: &RecordRef<'_>,
        kind: AlertKind,
        severity: Severity,
        subject: String,
        summary: String,
    ) -> NewAlert {
        // The name the record was stamped with (as it was then), else a look-up now.
        let computer = record
            .computer
            .map(str::to_owned)
            .or_else(|| self.computer_name(record.client));
        let who = match record.user {
            Some(user) if self.is_shared(settings, record) => format!(
                "{user} on {}",
                computer_text(record.client, computer.as_deref())
            ),
            _ => who(record),
        };
        NewAlert {
            kind,
            severity,
            who,
            user: record.user.map(str::to_owned),
            role: record.role.to_owned(),
            group: record.group.map(str::to_owned),
            client: Some(record.client),
            computer,
            subject,
            summary,
            at_unix_micros: record.at_unix_micros,
            evidence: vec![record.to_record()],
        }
    }

    /// The phrase matcher of `settings`, rebuilt when the policy was reloaded.
    fn matcher(&mut self, settings: &Arc<AlertSettings>) -> &PhraseMatcher {
        let stale = self
            .matcher
            .as_ref()
            .is_none_or(|(current, _)| !Arc::ptr_eq(current, settings));
        if stale {
            self.matcher = None;
        }
        let (_, matcher) = self.matcher.get_or_insert_with(|| {
            (
                Arc::clone(settings),
                PhraseMatcher::with_context(
                    &settings.phrase_lists,
                    &settings.teaching_contexts,
                    settings.misspellings,
                ),
            )
        });
        matcher
    }

    /// Applies every rule to `record`, appending the alerts it raises to `out`.
    pub fn evaluate(&mut self, policy: &Snapshot, record: &RecordRef<'_>, out: &mut Vec<NewAlert>) {
        let settings = Arc::clone(policy.alerts());
        let before = out.len();
        self.phrases(&settings, record, out);
        let phrase_alerts = out.len() > before;
        self.content(&settings, record, phrase_alerts, out);
        let in_any = |names: &[String]| {
            record
                .categories
                .iter()
                .find(|c| names.iter().any(|n| n == c))
                .map(str::to_owned)
        };
        if let Some(category) = in_any(&settings.locked_categories) {
            out.push(self.base(
                &settings,
                record,
                AlertKind::LockedCategory,
                Severity::High,
                category.clone(),
                format!("attempt at {} (locked category {category})", record.host),
            ));
        }
        let sni_mismatch =
            record.rule.contains("sni-mismatch") || record.failure == Some("sni-mismatch");
        if let Some(category) = in_any(&settings.circumvention_categories)
            .or_else(|| sni_mismatch.then(|| "sni-mismatch".to_owned()))
        {
            out.push(self.base(
                &settings,
                record,
                AlertKind::Circumvention,
                Severity::Medium,
                String::new(),
                format!("circumvention attempt: {} ({category})", record.host),
            ));
        }
        if let Some(staff) = &settings.staff_social
            && staff.roles.iter().any(|role| role == record.role)
            && let Some(category) = in_any(&staff.categories)
            && staff.window.as_deref().is_none_or(|window| {
                policy.window_open(window, timestamp(record.at_unix_micros)) == Some(true)
            })
        {
            out.push(self.base(
                &settings,
                record,
                AlertKind::StaffSocialCoreHours,
                Severity::Low,
                category.clone(),
                format!("{category} in core hours: {}", record.host),
            ));
        }
        if record.outcome == Outcome::Blocked {
            self.blocked_attempt(&settings, record, out);
        }
    }

    /// Content analysis: a page that crossed its limit after it had started
    /// streaming (recorded, not blocked), and a banned search (blocked) that raised
    /// no phrase alert of its own.
    fn content(
        &self,
        settings: &AlertSettings,
        record: &RecordRef<'_>,
        phrase_alerts: bool,
        out: &mut Vec<NewAlert>,
    ) {
        if let Some(content) = record.content.as_ref().filter(|c| c.late) {
            let category = content
                .categories
                .first()
                .map_or_else(|| "content".to_owned(), |(name, _)| name.clone());
            out.push(self.base(
                settings,
                record,
                AlertKind::SafeguardingPhrase,
                Severity::Medium,
                category.clone(),
                format!(
                    "a page on {} went over the {category} content limit after it was shown: {}",
                    record.host,
                    content.summary()
                ),
            ));
        }
        if !phrase_alerts
            && record.rule.starts_with("banned-search:")
            && let Some(search) = record.search
        {
            out.push(self.base(
                settings,
                record,
                AlertKind::SafeguardingPhrase,
                Severity::Medium,
                "banned search".to_owned(),
                format!("banned search blocked: {}", search.terms),
            ));
        }
    }

    fn phrases(
        &mut self,
        settings: &Arc<AlertSettings>,
        record: &RecordRef<'_>,
        out: &mut Vec<NewAlert>,
    ) {
        if settings.phrase_lists.is_empty() {
            return;
        }
        let typed = record.search.map(|search| normalise(search.terms));
        let mut hits = self.find_in(settings, record, typed.as_deref(), true);
        // A support site's pages never alert by their address; a search typed there
        // still does. Checked only when something matched: nearly nothing does.
        if !hits.is_empty() && settings.support_site(record.host) {
            hits = match &typed {
                Some(_) => self.find_in(settings, record, typed.as_deref(), false),
                None => Vec::new(),
            };
        }
        for hit in hits {
            let spelt = hit
                .misspelt
                .as_ref()
                .map_or_else(String::new, |spelt| format!(" (spelt \"{spelt}\")"));
            let summary = match &record.search {
                Some(search) => format!(
                    "{} phrase \"{}\"{spelt} in a search: {}",
                    hit.list, hit.phrase, search.terms
                ),
                None => format!(
                    "{} phrase \"{}\"{spelt} in a visit to {}",
                    hit.list, hit.phrase, record.host
                ),
            };
            out.push(self.base(
                settings,
                record,
                AlertKind::SafeguardingPhrase,
                hit.severity,
                hit.list,
                summary,
            ));
        }
    }

    /// The phrase hits in the record's search terms and, when `by_address`, its
    /// host and path; misspellings only in `typed` (the folded search terms).
    fn find_in(
        &mut self,
        settings: &Arc<AlertSettings>,
        record: &RecordRef<'_>,
        typed: Option<&str>,
        by_address: bool,
    ) -> Vec<crate::PhraseHit> {
        // The terms are folded once (`typed`), the address on its own: both start
        // and end with a space, so they join on one.
        let mut folded = typed.map_or_else(String::new, str::to_owned);
        if by_address {
            let mut address =
                String::with_capacity(record.host.len() + record.path.map_or(0, str::len) + 1);
            address.push_str(record.host);
            if let Some(path) = record.path {
                address.push(' ');
                address.push_str(&percent_decode(path));
            }
            let address = normalise(&address);
            if folded.is_empty() {
                folded = address;
            } else {
                folded.push_str(address.get(1..).unwrap_or(""));
            }
        }
        self.matcher(settings)
            .find_normalised(&folded, typed, record.role)
    }

    fn blocked_attempt(
        &mut self,
        settings: &AlertSettings,
        record: &RecordRef<'_>,
        out: &mut Vec<NewAlert>,
    ) {
        let window = u64::try_from(settings.repeated_blocks_window.as_micros()).unwrap_or(u64::MAX);
        let attempts = settings.repeated_blocks_attempts.max(1) as usize;
        let key = self.person_key(settings, record).into_owned();
        let recent = self.blocked.entry(key).or_default();
        while recent.front().is_some_and(|first| {
            record.at_unix_micros.saturating_sub(first.at_unix_micros) > window
        }) {
            recent.pop_front();
        }
        recent.push_back(record.to_record());
        if recent.len() >= attempts {
            let evidence: Vec<Record> = recent.drain(..).collect();
            let minutes = settings.repeated_blocks_window.as_secs() / 60;
            let mut alert = self.base(
                settings,
                record,
                AlertKind::RepeatedBlocks,
                Severity::Medium,
                String::new(),
                format!(
                    "{} blocked attempts within {minutes} minutes",
                    evidence.len()
                ),
            );
            alert.at_unix_micros = evidence
                .first()
                .map_or(record.at_unix_micros, |r| r.at_unix_micros);
            alert.evidence = evidence;
            out.push(alert);
        }
    }

    /// Forgets people whose last blocked attempt is older than the window (bounds the
    /// memory the sliding windows use).
    pub fn forget_before(&mut self, cutoff_micros: u64) {
        self.blocked.retain(|_, recent| {
            recent
                .back()
                .is_some_and(|r| r.at_unix_micros >= cutoff_micros)
        });
    }

    /// Whether a concurrent log-in raises an alert: the policy asks for them and the
    /// log-in is not shared (checked before its evidence is read).
    pub fn raises_concurrent_login(
        &self,
        policy: &Snapshot,
        event: &ConcurrentLogin,
        account: Option<&safegate_store::User>,
    ) -> bool {
        let settings = policy.alerts();
        let group = account.and_then(|a| a.group.as_deref());
        settings.concurrent_logins
            && !account.is_some_and(|a| a.shared)
            && !self.shared.is_shared(settings, Some(&event.user), group)
    }

    /// The alert for a concurrent log-in, when the policy asks for them and the
    /// log-in is not shared. `account` is the user as stored (role, group, shared);
    /// `evidence` holds both computers' requests around the event.
    pub fn concurrent_login(
        &self,
        policy: &Snapshot,
        event: &ConcurrentLogin,
        account: Option<&safegate_store::User>,
        evidence: Vec<Record>,
    ) -> Option<NewAlert> {
        if !self.raises_concurrent_login(policy, event, account) {
            return None;
        }
        let group = account.and_then(|a| a.group.as_deref());
        let role = account.map_or_else(
            || {
                evidence
                    .iter()
                    .find(|r| r.user.as_deref() == Some(event.user.as_str()))
                    .map_or_else(String::new, |r| r.role.clone())
            },
            |a| a.role.clone(),
        );
        let computer = self.computer_name(event.new_address);
        let old = computer_text(
            event.old_address,
            self.computer_name(event.old_address).as_deref(),
        );
        let new = computer_text(event.new_address, computer.as_deref());
        Some(NewAlert {
            kind: AlertKind::ConcurrentLogin,
            severity: Severity::Medium,
            who: event.user.clone(),
            user: Some(event.user.clone()),
            role,
            group: group.map(str::to_owned),
            client: Some(event.new_address),
            computer,
            subject: String::new(),
            summary: format!(
                "logged in on {new} while still on {old} ({})",
                event.outcome
            ),
            at_unix_micros: event.at_unix_micros,
            evidence,
        })
    }
}
