//! The alert rules, applied to one record at a time in arrival order: safeguarding
//! phrases, locked categories, circumvention, staff social networking in core hours,
//! and repeated blocked attempts (a sliding window per person). Every record counts,
//! whether the site answered, failed or was blocked: a search whose page never
//! loaded was still typed.
//!
//! Heavy use needs the store (each user's own baseline) and is measured by the engine
//! ([`crate::engine`]); concurrent log-ins come from the identity layer as events
//! ([`Evaluator::concurrent_login`]).

use std::collections::{HashMap, VecDeque};
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

/// The rules' state: the compiled phrase lists of the current policy, and each
/// person's recent blocked attempts.
#[derive(Default)]
pub struct Evaluator {
    matcher: Option<(Arc<AlertSettings>, PhraseMatcher)>,
    blocked: HashMap<String, VecDeque<Record>>,
}

fn base(
    record: &RecordRef<'_>,
    kind: AlertKind,
    severity: Severity,
    subject: String,
    summary: String,
) -> NewAlert {
    NewAlert {
        kind,
        severity,
        who: who(record),
        user: record.user.map(str::to_owned),
        role: record.role.to_owned(),
        group: record.group.map(str::to_owned),
        subject,
        summary,
        at_unix_micros: record.at_unix_micros,
        evidence: vec![record.to_record()],
    }
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
                PhraseMatcher::new(&settings.phrase_lists),
            )
        });
        matcher
    }

    /// Applies every rule to `record`, appending the alerts it raises to `out`.
    pub fn evaluate(&mut self, policy: &Snapshot, record: &RecordRef<'_>, out: &mut Vec<NewAlert>) {
        let settings = Arc::clone(policy.alerts());
        self.phrases(&settings, record, out);
        let in_any = |names: &[String]| {
            record
                .categories
                .iter()
                .find(|c| names.iter().any(|n| n == c))
                .map(str::to_owned)
        };
        if let Some(category) = in_any(&settings.locked_categories) {
            out.push(base(
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
            out.push(base(
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
            out.push(base(
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

    fn phrases(
        &mut self,
        settings: &Arc<AlertSettings>,
        record: &RecordRef<'_>,
        out: &mut Vec<NewAlert>,
    ) {
        if settings.phrase_lists.is_empty() {
            return;
        }
        let matcher = self.matcher(settings);
        let terms = record.search.map_or(0, |search| search.terms.len());
        let mut text =
            String::with_capacity(terms + record.host.len() + record.path.map_or(0, str::len) + 2);
        if let Some(search) = &record.search {
            text.push_str(search.terms);
            text.push(' ');
        }
        text.push_str(record.host);
        if let Some(path) = record.path {
            text.push(' ');
            text.push_str(&percent_decode(path));
        }
        for hit in matcher.find_normalised(&normalise(&text)) {
            let summary = match &record.search {
                Some(search) => format!(
                    "{} phrase \"{}\" in a search: {}",
                    hit.list, hit.phrase, search.terms
                ),
                None => format!(
                    "{} phrase \"{}\" in a visit to {}",
                    hit.list, hit.phrase, record.host
                ),
            };
            out.push(base(
                record,
                AlertKind::SafeguardingPhrase,
                hit.severity,
                hit.list,
                summary,
            ));
        }
    }

    fn blocked_attempt(
        &mut self,
        settings: &AlertSettings,
        record: &RecordRef<'_>,
        out: &mut Vec<NewAlert>,
    ) {
        let window = u64::try_from(settings.repeated_blocks_window.as_micros()).unwrap_or(u64::MAX);
        let attempts = settings.repeated_blocks_attempts.max(1) as usize;
        let recent = self.blocked.entry(who(record)).or_default();
        while recent.front().is_some_and(|first| {
            record.at_unix_micros.saturating_sub(first.at_unix_micros) > window
        }) {
            recent.pop_front();
        }
        recent.push_back(record.to_record());
        if recent.len() >= attempts {
            let evidence: Vec<Record> = recent.drain(..).collect();
            let minutes = settings.repeated_blocks_window.as_secs() / 60;
            let mut alert = base(
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

    /// The alert for a concurrent log-in, when the policy asks for them.
    pub fn concurrent_login(&self, policy: &Snapshot, event: &ConcurrentLogin) -> Option<NewAlert> {
        if !policy.alerts().concurrent_logins {
            return None;
        }
        Some(NewAlert {
            kind: AlertKind::ConcurrentLogin,
            severity: Severity::Medium,
            who: event.user.clone(),
            user: Some(event.user.clone()),
            role: String::new(),
            group: None,
            subject: String::new(),
            summary: format!(
                "logged in at {} while still at {} ({})",
                event.new_address, event.old_address, event.outcome
            ),
            at_unix_micros: event.at_unix_micros,
            evidence: Vec::new(),
        })
    }
}
