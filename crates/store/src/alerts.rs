//! Safeguarding alerts: what the alert engine raised, with its evidence (the records
//! that triggered it), its status (new, acknowledged, closed) and who changed it when.
//!
//! # Layout
//!
//! | tree           | key                                   | value                         |
//! |----------------|---------------------------------------|-------------------------------|
//! | `alerts`       | alert id (u64 BE, sled's id generator) | JSON [`Alert`]                |
//! | `alerts_open`  | fold key: kind, 0x00, who, 0x00, subject | alert id (u64 BE)          |
//! | `alert_usage`  | user, 0x00, day number (i32 BE, offset) | requests (u64 LE), bytes (u64 LE) |
//!
//! An alert is *open* while it is new or acknowledged. A new alert whose fold key
//! (same kind, same person, same subject: the phrase list, the category) matches an
//! open alert is folded into it: its occurrences are counted, its latest time moves
//! on and its evidence is added (up to [`EVIDENCE_KEPT`] records); closing an alert
//! ends folding, so the next occurrence is a new alert. Every change of one alert is
//! one atomic `update_and_fetch` of its value, so the engine folding and a person
//! acknowledging at the same moment cannot lose either change.
//!
//! `alert_usage` holds each user's requests and bytes per school-local day: the
//! baseline "unusually heavy use" is measured against.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::{Record, Store, StoreError};

pub use safegate_policy::Severity;

/// Evidence records kept per alert (the first ones; later occurrences are counted).
pub const EVIDENCE_KEPT: usize = 50;

pub(crate) const ALERTS: &str = "alerts";
pub(crate) const ALERTS_OPEN: &str = "alerts_open";
const USAGE: &str = "alert_usage";

/// What raised an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A safeguarding phrase in a search or a URL.
    SafeguardingPhrase,
    /// Many blocked attempts in a short time.
    RepeatedBlocks,
    /// A VPN, web proxy or DNS-over-HTTPS site, or an SNI that did not match.
    Circumvention,
    /// An attempt at a locked (illegal content) category.
    LockedCategory,
    /// One user on two computers at once.
    ConcurrentLogin,
    /// Far more use than the user's own recent baseline.
    HeavyUse,
    /// Staff on social networking in core hours.
    StaffSocialCoreHours,
}

impl AlertKind {
    /// Every kind, in a fixed order.
    pub const ALL: [AlertKind; 7] = [
        AlertKind::SafeguardingPhrase,
        AlertKind::RepeatedBlocks,
        AlertKind::Circumvention,
        AlertKind::LockedCategory,
        AlertKind::ConcurrentLogin,
        AlertKind::HeavyUse,
        AlertKind::StaffSocialCoreHours,
    ];

    /// The name used in metrics, JSON and the command line (`safeguarding_phrase`).
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::SafeguardingPhrase => "safeguarding_phrase",
            AlertKind::RepeatedBlocks => "repeated_blocks",
            AlertKind::Circumvention => "circumvention",
            AlertKind::LockedCategory => "locked_category",
            AlertKind::ConcurrentLogin => "concurrent_login",
            AlertKind::HeavyUse => "heavy_use",
            AlertKind::StaffSocialCoreHours => "staff_social_core_hours",
        }
    }

    /// Position in [`AlertKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Where an alert is in its handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    /// Nobody has looked at it yet.
    New,
    /// Someone is dealing with it.
    Acknowledged,
    /// Dealt with.
    Closed,
}

impl AlertStatus {
    /// `new`, `acknowledged` or `closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::New => "new",
            AlertStatus::Acknowledged => "acknowledged",
            AlertStatus::Closed => "closed",
        }
    }

    /// New or acknowledged.
    pub fn is_open(self) -> bool {
        self != AlertStatus::Closed
    }
}

/// One change of status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange {
    /// The new status.
    pub status: AlertStatus,
    /// Who changed it.
    pub by: String,
    /// When, Unix microseconds.
    pub at_unix_micros: u64,
    /// Why, or what was done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// An alert as the engine raises it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAlert {
    /// What raised it.
    pub kind: AlertKind,
    /// How serious.
    pub severity: Severity,
    /// The person: the user name, or the client address when nobody was identified.
    pub who: String,
    /// The user name, when known.
    pub user: Option<String>,
    /// The browsing role.
    pub role: String,
    /// The group, when known.
    pub group: Option<String>,
    /// The computer's address, when the alert is about one computer.
    pub client: Option<IpAddr>,
    /// The computer's name, where known (`[devices]`, DHCP leases, reverse DNS).
    pub computer: Option<String>,
    /// What it is about within its kind: the phrase list, the category, the day.
    pub subject: String,
    /// One line for people.
    pub summary: String,
    /// When it happened, Unix microseconds.
    pub at_unix_micros: u64,
    /// The records that triggered it.
    pub evidence: Vec<Record>,
}

/// A stored alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Its id.
    pub id: u64,
    /// What raised it.
    pub kind: AlertKind,
    /// How serious (the highest of its occurrences).
    pub severity: Severity,
    /// The person: the user name, or the client address.
    pub who: String,
    /// The user name, when known.
    pub user: Option<String>,
    /// The browsing role.
    pub role: String,
    /// The group, when known.
    pub group: Option<String>,
    /// The computer's address, when the alert is about one computer (absent in
    /// alerts stored before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<IpAddr>,
    /// The computer's name, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub computer: Option<String>,
    /// What it is about within its kind.
    pub subject: String,
    /// One line for people (of the first occurrence).
    pub summary: String,
    /// First occurrence, Unix microseconds.
    pub first_at_unix_micros: u64,
    /// Latest occurrence, Unix microseconds.
    pub last_at_unix_micros: u64,
    /// Occurrences folded into it (1 for a fresh alert).
    pub occurrences: u64,
    /// The records that triggered it, up to [`EVIDENCE_KEPT`].
    pub evidence: Vec<Record>,
    /// Where it is in its handling.
    pub status: AlertStatus,
    /// Every change of status, oldest first.
    pub history: Vec<StatusChange>,
}

/// What [`Store::raise_alert`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raised {
    /// The alert as stored now.
    pub alert: Alert,
    /// True when it was folded into an open alert rather than created.
    pub folded: bool,
}

/// Which alerts to list. Every condition set must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertFilter {
    /// Alerts with an occurrence at or after this time (Unix microseconds).
    #[serde(default)]
    pub since: Option<u64>,
    /// Alerts that began before this time (Unix microseconds).
    #[serde(default)]
    pub until: Option<u64>,
    /// Only this status.
    #[serde(default)]
    pub status: Option<AlertStatus>,
    /// Only open alerts (new or acknowledged).
    #[serde(default)]
    pub open_only: bool,
    /// Only this person.
    #[serde(default)]
    pub who: Option<String>,
    /// Only this kind.
    #[serde(default)]
    pub kind: Option<AlertKind>,
}

impl AlertFilter {
    /// Whether `alert` passes.
    pub fn matches(&self, alert: &Alert) -> bool {
        self.since
            .is_none_or(|since| alert.last_at_unix_micros >= since)
            && self
                .until
                .is_none_or(|until| alert.first_at_unix_micros < until)
            && self.status.is_none_or(|status| alert.status == status)
            && (!self.open_only || alert.status.is_open())
            && self.who.as_deref().is_none_or(|who| alert.who == who)
            && self.kind.is_none_or(|kind| alert.kind == kind)
    }
}

fn fold_key(kind: AlertKind, who: &str, subject: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(who.len() + subject.len() + 32);
    key.extend_from_slice(kind.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(who.as_bytes());
    key.push(0);
    key.extend_from_slice(subject.as_bytes());
    key
}

pub(crate) fn decode(bytes: &[u8]) -> Result<Alert, StoreError> {
    Ok(serde_json::from_slice(bytes)?)
}

pub(crate) fn id_of(bytes: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(bytes).ok().map(u64::from_be_bytes)
}

/// Folds `new` into `alert` (evidence up to the cap, the higher severity).
fn fold(alert: &mut Alert, new: &NewAlert) {
    alert.occurrences += 1;
    alert.last_at_unix_micros = alert.last_at_unix_micros.max(new.at_unix_micros);
    alert.first_at_unix_micros = alert.first_at_unix_micros.min(new.at_unix_micros);
    alert.severity = alert.severity.max(new.severity);
    let room = EVIDENCE_KEPT.saturating_sub(alert.evidence.len());
    alert
        .evidence
        .extend(new.evidence.iter().take(room).cloned());
}

impl Store {
    /// Stores `new`, folded into the open alert with the same kind, person and subject
    /// if there is one. Meant for one writer (the alert engine); status changes may
    /// run at the same time.
    pub fn raise_alert(&self, new: NewAlert) -> Result<Raised, StoreError> {
        let alerts = self.trees()?.db.open_tree(ALERTS)?;
        let open = self.trees()?.db.open_tree(ALERTS_OPEN)?;
        let key = fold_key(new.kind, &new.who, &new.subject);
        if let Some(id) = open.get(&key)?.as_deref().and_then(id_of) {
            let mut folded = false;
            let updated = alerts.update_and_fetch(id.to_be_bytes(), |old| {
                let mut alert = decode(old?).ok()?;
                folded = false;
                if alert.status.is_open() {
                    fold(&mut alert, &new);
                    folded = true;
                }
                serde_json::to_vec(&alert).ok()
            })?;
            if folded && let Some(bytes) = updated {
                let alert = decode(&bytes)?;
                self.alert_to_outbox(&alert);
                return Ok(Raised {
                    alert,
                    folded: true,
                });
            }
        }
        let id = self.trees()?.db.generate_id()? + 1;
        let mut evidence = new.evidence;
        evidence.truncate(EVIDENCE_KEPT);
        let alert = Alert {
            id,
            kind: new.kind,
            severity: new.severity,
            who: new.who,
            user: new.user,
            role: new.role,
            group: new.group,
            client: new.client,
            computer: new.computer,
            subject: new.subject,
            summary: new.summary,
            first_at_unix_micros: new.at_unix_micros,
            last_at_unix_micros: new.at_unix_micros,
            occurrences: 1,
            evidence,
            status: AlertStatus::New,
            history: Vec::new(),
        };
        alerts.insert(id.to_be_bytes(), serde_json::to_vec(&alert)?)?;
        open.insert(key, &id.to_be_bytes())?;
        self.alert_to_outbox(&alert);
        Ok(Raised {
            alert,
            folded: false,
        })
    }

    /// The alert with this id.
    pub fn alert(&self, id: u64) -> Result<Option<Alert>, StoreError> {
        let alerts = self.trees()?.db.open_tree(ALERTS)?;
        alerts
            .get(id.to_be_bytes())?
            .map(|v| decode(&v))
            .transpose()
    }

    /// Alerts passing `filter`, oldest first (by id).
    pub fn alerts(&self, filter: &AlertFilter) -> Result<Vec<Alert>, StoreError> {
        let alerts = self.trees()?.db.open_tree(ALERTS)?;
        let mut found = Vec::new();
        for entry in alerts.iter() {
            let (_, value) = entry?;
            match decode(&value) {
                Ok(alert) if filter.matches(&alert) => found.push(alert),
                Ok(_) => {}
                Err(error) => tracing::error!(%error, "skipping an alert that cannot be read"),
            }
        }
        Ok(found)
    }

    /// Sets an alert's status, noting who and why; closing ends folding into it.
    /// `Ok(None)` when there is no such alert.
    pub fn set_alert_status(
        &self,
        id: u64,
        change: StatusChange,
    ) -> Result<Option<Alert>, StoreError> {
        let alerts = self.trees()?.db.open_tree(ALERTS)?;
        let updated = alerts.update_and_fetch(id.to_be_bytes(), |old| {
            let mut alert = decode(old?).ok()?;
            alert.status = change.status;
            alert.history.push(change.clone());
            serde_json::to_vec(&alert).ok()
        })?;
        let Some(bytes) = updated else {
            return Ok(None);
        };
        let alert = decode(&bytes)?;
        if !alert.status.is_open() {
            let open = self.trees()?.db.open_tree(ALERTS_OPEN)?;
            let key = fold_key(alert.kind, &alert.who, &alert.subject);
            // Only if it still points at this alert.
            let _ = open.compare_and_swap(key, Some(&id.to_be_bytes()[..]), None::<&[u8]>)?;
        }
        self.alert_to_outbox(&alert);
        Ok(Some(alert))
    }

    /// Puts the alert as it stands in the export outbox, when that is on; a failure is
    /// logged (the alert itself is stored).
    fn alert_to_outbox(&self, alert: &Alert) {
        if self.outbox_enabled()
            && let Err(error) = self.outbox_add_alert(alert)
        {
            tracing::warn!(%error, id = alert.id, "alert stored, but not put in the export outbox");
        }
    }

    /// Adds one user's requests and bytes to a day's usage (`day`: days since
    /// 1970-01-01 in the school's time zone); returns the day's totals.
    pub fn add_usage(
        &self,
        user: &str,
        day: i32,
        requests: u64,
        bytes: u64,
    ) -> Result<(u64, u64), StoreError> {
        let usage = self.trees()?.db.open_tree(USAGE)?;
        let updated = usage.update_and_fetch(usage_key(user, day), |old| {
            let (r, b) = old.map_or((0, 0), usage_value);
            let mut value = Vec::with_capacity(16);
            value.extend_from_slice(&(r + requests).to_le_bytes());
            value.extend_from_slice(&(b + bytes).to_le_bytes());
            Some(value)
        })?;
        Ok(updated.as_deref().map_or((0, 0), usage_value))
    }

    /// One user's usage per day for `from..until` days: (day, requests, bytes), days
    /// without use left out.
    pub fn usage(
        &self,
        user: &str,
        from: i32,
        until: i32,
    ) -> Result<Vec<(i32, u64, u64)>, StoreError> {
        let usage = self.trees()?.db.open_tree(USAGE)?;
        let mut days = Vec::new();
        for entry in usage.range(usage_key(user, from)..usage_key(user, until)) {
            let (key, value) = entry?;
            let day = key
                .get(key.len().saturating_sub(4)..)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map_or(0, |b| (u32::from_be_bytes(b) ^ 0x8000_0000) as i32);
            let (requests, bytes) = usage_value(&value);
            days.push((day, requests, bytes));
        }
        Ok(days)
    }
}

fn usage_key(user: &str, day: i32) -> Vec<u8> {
    let mut key = Vec::with_capacity(user.len() + 5);
    key.extend_from_slice(user.as_bytes());
    key.push(0);
    key.extend_from_slice(&((day as u32) ^ 0x8000_0000).to_be_bytes());
    key
}

fn usage_value(value: &[u8]) -> (u64, u64) {
    let read = |range: std::ops::Range<usize>| {
        value
            .get(range)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(0, u64::from_le_bytes)
    };
    (read(0..8), read(8..16))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::record::tests::sample;

    fn new_alert(who: &str, subject: &str, at: u64) -> NewAlert {
        NewAlert {
            computer: None,
            client: None,
            kind: AlertKind::SafeguardingPhrase,
            severity: Severity::High,
            who: who.into(),
            user: Some(who.into()),
            role: "pupil".into(),
            group: None,
            subject: subject.into(),
            summary: format!("{subject} phrase"),
            at_unix_micros: at,
            evidence: vec![sample(at, who, "www.google.com")],
        }
    }

    #[test]
    fn duplicates_of_an_open_alert_fold_until_it_is_closed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let first = store
            .raise_alert(new_alert("alice", "self-harm", 10))
            .unwrap();
        assert!(!first.folded);
        let second = store
            .raise_alert(new_alert("alice", "self-harm", 20))
            .unwrap();
        assert!(second.folded);
        assert_eq!(second.alert.id, first.alert.id);
        assert_eq!(second.alert.occurrences, 2);
        assert_eq!(second.alert.evidence.len(), 2);
        assert_eq!(second.alert.last_at_unix_micros, 20);
        // Another subject or person is another alert.
        let other = store.raise_alert(new_alert("alice", "drugs", 30)).unwrap();
        assert!(!other.folded);
        assert!(
            !store
                .raise_alert(new_alert("bob", "self-harm", 30))
                .unwrap()
                .folded
        );

        let acked = store
            .set_alert_status(
                first.alert.id,
                StatusChange {
                    status: AlertStatus::Acknowledged,
                    by: "dsl".into(),
                    at_unix_micros: 40,
                    note: Some("spoke to Alice".into()),
                },
            )
            .unwrap()
            .unwrap();
        assert_eq!(acked.status, AlertStatus::Acknowledged);
        assert!(
            store
                .raise_alert(new_alert("alice", "self-harm", 50))
                .unwrap()
                .folded
        );
        store
            .set_alert_status(
                first.alert.id,
                StatusChange {
                    status: AlertStatus::Closed,
                    by: "dsl".into(),
                    at_unix_micros: 60,
                    note: None,
                },
            )
            .unwrap();
        let after = store
            .raise_alert(new_alert("alice", "self-harm", 70))
            .unwrap();
        assert!(!after.folded);
        assert_ne!(after.alert.id, first.alert.id);

        let closed = store.alert(first.alert.id).unwrap().unwrap();
        assert_eq!(closed.occurrences, 3);
        assert_eq!(closed.history.len(), 2);
        assert_eq!(closed.history[0].note.as_deref(), Some("spoke to Alice"));
        assert_eq!(
            store
                .alerts(&AlertFilter {
                    open_only: true,
                    ..AlertFilter::default()
                })
                .unwrap()
                .len(),
            3
        );
        assert_eq!(
            store
                .alerts(&AlertFilter {
                    since: Some(65),
                    ..AlertFilter::default()
                })
                .unwrap()
                .len(),
            1
        );
        assert!(
            store
                .set_alert_status(
                    999_999,
                    StatusChange {
                        status: AlertStatus::Closed,
                        by: "x".into(),
                        at_unix_micros: 1,
                        note: None
                    }
                )
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn evidence_is_capped_and_survives_reopening_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let store = Store::open(dir.path()).unwrap();
            let mut id = 0;
            for at in 0..(EVIDENCE_KEPT as u64 + 10) {
                id = store
                    .raise_alert(new_alert("carol", "x", at))
                    .unwrap()
                    .alert
                    .id;
            }
            store.flush_blocking().unwrap();
            id
        };
        let store = Store::open(dir.path()).unwrap();
        let alert = store.alert(id).unwrap().unwrap();
        assert_eq!(alert.evidence.len(), EVIDENCE_KEPT);
        assert_eq!(alert.occurrences, EVIDENCE_KEPT as u64 + 10);
    }

    #[test]
    fn usage_adds_up_per_user_and_day() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.add_usage("alice", 20_000, 5, 100).unwrap();
        assert_eq!(store.add_usage("alice", 20_000, 2, 1).unwrap(), (7, 101));
        store.add_usage("alice", 20_001, 1, 1).unwrap();
        store.add_usage("alicea", 20_000, 9, 9).unwrap();
        store.add_usage("alice", -3, 4, 4).unwrap();
        assert_eq!(
            store.usage("alice", -10, 20_001).unwrap(),
            vec![(-3, 4, 4), (20_000, 7, 101)]
        );
    }
}
