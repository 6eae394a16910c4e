//! The alert engine: one task that takes each batch the visit-log writer has written
//! (and each concurrent log-in event), applies the rules on a blocking thread, stores
//! the alerts (folding duplicates of open ones) and hands each *new* alert to delivery
//! without waiting. It never touches the proxy's path: the writer offers it batches
//! with `try_send`, and a full engine queue only costs the writer a counter. An
//! alert the database cannot store (a full disk) is kept, up to 256, and stored with
//! the next input once the database takes writes again.
//!
//! Unusually heavy use is measured here, because it needs the store: each named
//! user's requests and bytes are added to the day's totals (school-local day,
//! `alert_usage` tree), and a day is heavy when it passes the policy's minimum and is
//! more than `factor` times the user's mean over the previous `baseline_days` days
//! (once at least `min_baseline_days` of them had use). One alert per user and day.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use jiff::Timestamp;
use jiff::civil::Date;
use safegate_policy::{Severity, Snapshot};
use safegate_store::{Alert, AlertKind, NewAlert, RecordBatch, RecordRef, Store, StoreError};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{error, warn};

use crate::rules::{ConcurrentLogin, Evaluator, NameComputer};

/// Counters of the engine, for metrics (relaxed atomics).
#[derive(Debug, Default)]
pub struct AlertStats {
    raised: [AtomicU64; 7],
    folded: AtomicU64,
    records: AtomicU64,
    store_errors: AtomicU64,
    delivery_dropped: AtomicU64,
}

/// The engine's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlertStatsSnapshot {
    /// New alerts raised, per kind, in [`AlertKind::ALL`] order.
    pub raised: [u64; 7],
    /// Occurrences folded into an open alert.
    pub folded: u64,
    /// Records evaluated.
    pub records: u64,
    /// Alerts that could not be stored.
    pub store_errors: u64,
    /// New alerts not handed to delivery because its queue was full.
    pub delivery_dropped: u64,
}

impl AlertStatsSnapshot {
    /// (kind name, new alerts) pairs, e.g. for `safegate_alerts_total{kind=...}`.
    pub fn by_kind(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        AlertKind::ALL
            .iter()
            .map(|kind| (kind.as_str(), self.raised[kind.index()]))
    }
}

impl AlertStats {
    /// The current values.
    pub fn snapshot(&self) -> AlertStatsSnapshot {
        AlertStatsSnapshot {
            raised: std::array::from_fn(|i| self.raised[i].load(Relaxed)),
            folded: self.folded.load(Relaxed),
            records: self.records.load(Relaxed),
            store_errors: self.store_errors.load(Relaxed),
            delivery_dropped: self.delivery_dropped.load(Relaxed),
        }
    }
}

/// Where the engine's input comes from.
pub struct EngineInputs {
    /// Batches written by the visit-log writer (its observer channel).
    pub records: mpsc::Receiver<RecordBatch>,
    /// Concurrent log-in events from the identity layer.
    pub logins: mpsc::Receiver<ConcurrentLogin>,
    /// Names computers in alerts ([`crate::computers::ComputerNames`]), if set up.
    pub names: Option<NameComputer>,
}

/// The current policy (the binary reads it from its live handle).
pub type PolicySource = Arc<dyn Fn() -> Arc<Snapshot> + Send + Sync>;

/// Called with the kind of each new alert (e.g. to count it in a metrics registry).
pub type RaisedHook = Arc<dyn Fn(AlertKind) + Send + Sync>;

/// Starts the engine. It ends when both inputs have closed, after handling what they
/// held. New alerts go to `delivery` (never waiting: a full queue drops and counts)
/// and are announced to `on_raised`.
pub fn spawn_alert_engine(
    store: Store,
    policy: PolicySource,
    inputs: EngineInputs,
    delivery: Option<mpsc::Sender<Alert>>,
    stats: Arc<AlertStats>,
    on_raised: Option<RaisedHook>,
) -> JoinHandle<()> {
    tokio::spawn(run(store, policy, inputs, delivery, stats, on_raised))
}

/// What one round of work needs on the blocking thread.
struct State {
    evaluator: Evaluator,
    /// The users' change count when the shared log-ins were last read.
    users_seen: Option<u64>,
    users_watch: Option<safegate_store::UsersWatch>,
    usage: HashMap<String, UserDay>,
    /// Alerts the database could not store (a full disk), stored with the next input,
    /// oldest first; at most [`UNSTORED_KEPT`].
    unstored: Vec<NewAlert>,
}

/// Most alerts kept for a retry while the database cannot be written; beyond, the
/// newest are not stored (counted in `store_errors`, and logged).
const UNSTORED_KEPT: usize = 256;

/// One user's day so far.
struct UserDay {
    day: i32,
    /// Mean requests and bytes a day over the baseline, when there is enough history.
    baseline: Option<(f64, f64)>,
    alerted: bool,
}

enum Input {
    Records(RecordBatch),
    Login(ConcurrentLogin),
}

async fn run(
    store: Store,
    policy: PolicySource,
    inputs: EngineInputs,
    delivery: Option<mpsc::Sender<Alert>>,
    stats: Arc<AlertStats>,
    on_raised: Option<RaisedHook>,
) {
    let EngineInputs {
        records,
        logins,
        names,
    } = inputs;
    let (mut records, mut logins) = (Some(records), Some(logins));
    let mut evaluator = Evaluator::new();
    evaluator.names = names;
    let users_watch = match store.watch_users() {
        Ok(watch) => Some(watch),
        Err(err) => {
            warn!(%err, "cannot follow changes to the users: shared log-ins are read once");
            None
        }
    };
    let mut state = Some(State {
        users_seen: None,
        users_watch,
        evaluator,
        usage: HashMap::new(),
        unstored: Vec::new(),
    });
    loop {
        let input = tokio::select! {
            batch = async { records.as_mut()?.recv().await }, if records.is_some() => match batch {
                Some(batch) => Input::Records(batch),
                None => { records = None; continue; }
            },
            event = async { logins.as_mut()?.recv().await }, if logins.is_some() => match event {
                Some(event) => Input::Login(event),
                None => { logins = None; continue; }
            },
            else => break,
        };
        let Some(mut work) = state.take() else { break };
        let snapshot = policy();
        let writing = store.clone();
        let counters = Arc::clone(&stats);
        let done = tokio::task::spawn_blocking(move || {
            let raised = evaluate(&writing, &snapshot, &mut work, input, &counters);
            (work, raised)
        })
        .await;
        match done {
            Ok((work, raised)) => {
                state = Some(work);
                for alert in raised {
                    if let Some(hook) = &on_raised {
                        hook(alert.kind);
                    }
                    if let Some(delivery) = &delivery
                        && delivery.try_send(alert).is_err()
                    {
                        stats.delivery_dropped.fetch_add(1, Relaxed);
                        warn!("alert delivery queue full: an alert was not sent (it is stored)");
                    }
                }
            }
            Err(err) => {
                error!(%err, "ALERT ENGINE FAILED: alerts are no longer evaluated");
                break;
            }
        }
    }
}

/// A store failure that may pass (a full disk, the database being reopened).
fn retryable(error: &StoreError) -> bool {
    matches!(
        error,
        StoreError::Database(_) | StoreError::Io(_) | StoreError::Reopening | StoreError::Busy
    )
}

/// Applies the rules to one input, stores what they raise (and the alerts kept from
/// earlier inputs because the database could not store them); returns the new alerts.
fn evaluate(
    store: &Store,
    policy: &Snapshot,
    state: &mut State,
    input: Input,
    stats: &AlertStats,
) -> Vec<Alert> {
    let mut alerts = Vec::new();
    refresh_shared(store, state);
    match input {
        Input::Records(batch) => {
            stats.records.fetch_add(batch.len() as u64, Relaxed);
            let mut records: Vec<RecordRef<'_>> = Vec::with_capacity(batch.len());
            records.extend(batch.iter());
            let batch = records;
            for record in &batch {
                state.evaluator.evaluate(policy, record, &mut alerts);
            }
            if let Some(latest) = batch.iter().map(|r| r.at_unix_micros).max() {
                let window = policy.alerts().repeated_blocks_window;
                let window = u64::try_from(window.as_micros()).unwrap_or(u64::MAX);
                state.evaluator.forget_before(latest.saturating_sub(window));
            }
            heavy_use(store, policy, state, &batch, &mut alerts);
        }
        Input::Login(event) => {
            let account = store.get_user(&event.user).ok().flatten();
            let raises = state
                .evaluator
                .raises_concurrent_login(policy, &event, account.as_ref());
            let evidence = if raises {
                login_evidence(store, &event)
            } else {
                Vec::new()
            };
            alerts.extend(state.evaluator.concurrent_login(
                policy,
                &event,
                account.as_ref(),
                evidence,
            ));
        }
    }
    let mut raised = Vec::new();
    let retried = std::mem::take(&mut state.unstored);
    for alert in retried.into_iter().chain(alerts) {
        let kind = alert.kind;
        let kept = alert.clone();
        match store.raise_alert(alert) {
            Ok(outcome) if outcome.folded => {
                stats.folded.fetch_add(1, Relaxed);
            }
            Ok(outcome) => {
                stats.raised[kind.index()].fetch_add(1, Relaxed);
                tracing::info!(
                    id = outcome.alert.id,
                    kind = kind.as_str(),
                    severity = outcome.alert.severity.as_str(),
                    who = %outcome.alert.who,
                    "alert raised: {}",
                    outcome.alert.summary
                );
                raised.push(outcome.alert);
            }
            Err(err) if state.unstored.len() < UNSTORED_KEPT && retryable(&err) => {
                if state.unstored.is_empty() {
                    warn!(%err, kind = kind.as_str(), "alert not stored yet: kept to be stored when the database takes writes again");
                }
                state.unstored.push(kept);
            }
            Err(err) => {
                stats.store_errors.fetch_add(1, Relaxed);
                error!(%err, kind = kind.as_str(), "ALERT NOT STORED: database error");
            }
        }
    }
    raised
}

/// Reads the shared log-ins again when the users have changed since last time.
fn refresh_shared(store: &Store, state: &mut State) {
    let changes = state.users_watch.as_ref().map(|w| w.changes());
    if state.users_seen.is_some() && state.users_seen == changes {
        return;
    }
    match store.list_users() {
        Ok(users) => {
            state.evaluator.shared.users = users
                .into_iter()
                .filter(|u| u.shared)
                .map(|u| u.name)
                .collect();
            state.users_seen = changes.or(Some(0));
        }
        Err(err) => warn!(%err, "cannot read which log-ins are shared"),
    }
}

/// Requests from the two computers of a concurrent log-in, from ten minutes before
/// the event to a few seconds after: the last [`LOGIN_EVIDENCE`] of each address.
fn login_evidence(store: &Store, event: &ConcurrentLogin) -> Vec<safegate_store::Record> {
    let query = safegate_store::Query {
        user: Some(event.user.clone()),
        since: Some(event.at_unix_micros.saturating_sub(600_000_000)),
        until: Some(event.at_unix_micros.saturating_add(10_000_000)),
        ..safegate_store::Query::default()
    };
    let records = match store.query(&query) {
        Ok(records) => records,
        Err(err) => {
            warn!(%err, "cannot read the evidence of a concurrent log-in");
            return Vec::new();
        }
    };
    let mut evidence = Vec::new();
    for address in [event.old_address, event.new_address] {
        let mine: Vec<_> = records.iter().filter(|r| r.client == address).collect();
        let skip = mine.len().saturating_sub(LOGIN_EVIDENCE);
        evidence.extend(mine.into_iter().skip(skip).cloned());
    }
    evidence.sort_by_key(|r| r.at_unix_micros);
    evidence
}

/// Requests of each computer kept as a concurrent log-in's evidence.
const LOGIN_EVIDENCE: usize = 10;

/// Days since 1970-01-01 of `micros` in the school's time zone.
pub fn local_day(policy: &Snapshot, micros: u64) -> i32 {
    let at = Timestamp::from_microsecond(i64::try_from(micros).unwrap_or(i64::MAX))
        .unwrap_or(Timestamp::UNIX_EPOCH);
    let date = policy.timezone().to_datetime(at).date();
    date.since(Date::constant(1970, 1, 1))
        .map_or(0, |span| span.get_days())
}

/// The date (`2026-11-19`) of a day number from [`local_day`].
pub fn day_text(day: i32) -> String {
    Date::constant(1970, 1, 1)
        .checked_add(jiff::Span::new().days(i64::from(day)))
        .map_or_else(|_| format!("day {day}"), |date| date.to_string())
}

/// A byte count for people: `870 B`, `12.5 kB`, `3.2 MB`, `1.4 GB` (decimal units).
pub fn bytes_text(bytes: f64) -> String {
    if bytes < 1e3 {
        format!("{bytes:.0} B")
    } else if bytes < 1e6 {
        format!("{:.1} kB", bytes / 1e3)
    } else if bytes < 1e9 {
        format!("{:.1} MB", bytes / 1e6)
    } else {
        format!("{:.1} GB", bytes / 1e9)
    }
}

/// Adds the batch to each named user's day and raises heavy-use alerts.
fn heavy_use(
    store: &Store,
    policy: &Snapshot,
    state: &mut State,
    batch: &[RecordRef<'_>],
    alerts: &mut Vec<NewAlert>,
) {
    let Some(settings) = policy.alerts().heavy_use.clone() else {
        return;
    };
    let alert_settings = Arc::clone(policy.alerts());
    // Shared log-ins are measured per computer (`year6@10.0.3.57`).
    let mut days: HashMap<(std::borrow::Cow<'_, str>, i32), (u64, u64, &RecordRef<'_>)> =
        HashMap::new();
    for record in batch {
        if record.user.is_none() {
            continue;
        }
        let key = state.evaluator.person_key(&alert_settings, record);
        let entry = days
            .entry((key, local_day(policy, record.at_unix_micros)))
            .or_insert((0, 0, record));
        entry.0 += 1;
        entry.1 += record.bytes_down;
        entry.2 = record;
    }
    for ((user, day), (requests, bytes, last)) in days {
        let user: &str = &user;
        let totals = match store.add_usage(user, day, requests, bytes) {
            Ok(totals) => totals,
            Err(err) => {
                error!(%err, "cannot record daily usage");
                continue;
            }
        };
        let known = state.usage.get(user).is_some_and(|d| d.day == day);
        if !known {
            let from = day - i32::try_from(settings.baseline_days).unwrap_or(i32::MAX);
            let history = store.usage(user, from, day).unwrap_or_default();
            let baseline = (history.len() >= settings.min_baseline_days as usize
                && !history.is_empty())
            .then(|| {
                let n = f64::from(settings.baseline_days.max(1));
                let requests: u64 = history.iter().map(|d| d.1).sum();
                let bytes: u64 = history.iter().map(|d| d.2).sum();
                (requests as f64 / n, bytes as f64 / n)
            });
            state.usage.insert(
                user.to_owned(),
                UserDay {
                    day,
                    baseline,
                    alerted: false,
                },
            );
        }
        let Some(today) = state.usage.get_mut(user) else {
            continue;
        };
        let Some((mean_requests, mean_bytes)) = today.baseline else {
            continue;
        };
        let heavy_requests =
            totals.0 >= settings.min_requests && totals.0 as f64 > settings.factor * mean_requests;
        let heavy_bytes =
            totals.1 >= settings.min_bytes && totals.1 as f64 > settings.factor * mean_bytes;
        if today.alerted || !(heavy_requests || heavy_bytes) {
            continue;
        }
        today.alerted = true;
        let measure = match (heavy_requests, heavy_bytes) {
            (true, true) => "requests and data",
            (true, false) => "requests",
            _ => "data",
        };
        let summary = format!(
            "{} requests and {} today, against a daily mean of {:.1} requests and {} \
             over the previous {} days ({measure} more than {}x the mean)",
            totals.0,
            bytes_text(totals.1 as f64),
            mean_requests,
            bytes_text(mean_bytes),
            settings.baseline_days,
            settings.factor
        );
        alerts.push(state.evaluator.base(
            &alert_settings,
            last,
            AlertKind::HeavyUse,
            Severity::Low,
            day_text(day),
            summary,
        ));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::net::IpAddr;

    use safegate_policy::Policy;
    use safegate_store::{AlertFilter, IdentifiedBy, Outcome, Record, SeenAs};

    use super::*;

    fn policy(dir: &std::path::Path) -> Snapshot {
        std::fs::write(dir.join("harm.txt"), "kill myself\n!kill myself lyrics\n").unwrap();
        let text = r#"
[categories.illegal]
locked = true
sites = ["illegal.test"]
[categories.vpn]
sites = ["vpn.test"]
[categories.social]
sites = ["social.test"]
[windows.core]
days = ["mon-fri"]
times = ["08:30-15:30"]
[roles.pupil]
[roles.staff]
[roles.filter-admin]
[alerts]
circumvention_categories = ["vpn"]
repeated_blocks = { attempts = 3, minutes = 1 }
staff_social = { categories = ["social"], window = "core" }
heavy_use = { factor = 3.0, min_requests = 50, min_bytes = 1000000000000, baseline_days = 7, min_baseline_days = 3 }
[[alerts.phrases]]
list = "self-harm"
path = "harm.txt"
severity = "high"
"#;
        let path = dir.join("policy.toml");
        std::fs::write(&path, text).unwrap();
        Policy::load(&path).unwrap()
    }

    fn record(
        at: &str,
        user: &str,
        role: &str,
        host: &str,
        path: &str,
        outcome: Outcome,
    ) -> Record {
        Record {
            at_unix_micros: at.parse::<Timestamp>().unwrap().as_microsecond() as u64,
            user: Some(user.into()),
            role: role.into(),
            group: None,
            client: IpAddr::from([10, 0, 0, 9]),
            identified_by: IdentifiedBy::ProxyAuth,
            method: "GET".into(),
            scheme: "http".into(),
            host: host.into(),
            port: 80,
            path: Some(path.into()),
            categories: match host {
                "illegal.test" => vec!["illegal".into()],
                "vpn.test" => vec!["vpn".into()],
                "social.test" => vec!["social".into()],
                _ => vec![],
            },
            outcome,
            rule: "default".into(),
            status: 200,
            bytes_up: 0,
            bytes_down: 1000,
            duration_micros: 0,
            search: None,
            seen_as: SeenAs::PlainHttp,
            user_agent: None,
            failure: None,
            computer: None,
            content: None,
        }
    }

    fn kinds(raised: &[Alert]) -> Vec<(&str, AlertKind)> {
        raised.iter().map(|a| (a.who.as_str(), a.kind)).collect()
    }

    #[test]
    fn each_rule_raises_what_it_should_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = policy(dir.path());
        let store = Store::open(dir.path()).unwrap();
        let stats = AlertStats::default();
        let mut state = State {
            users_watch: None,
            users_seen: None,
            evaluator: Evaluator::new(),
            usage: HashMap::new(),
            unstored: Vec::new(),
        };
        let batch = one_day_of_records_for_each_rule_and_its_near_misses();
        let raised = evaluate(
            &store,
            &snapshot,
            &mut state,
            Input::Records(RecordBatch::from_records(&batch)),
            &stats,
        );
        assert_eq!(
            kinds(&raised),
            [
                ("amy", AlertKind::SafeguardingPhrase),
                ("cat", AlertKind::LockedCategory),
                ("dan", AlertKind::Circumvention),
                ("fay", AlertKind::StaffSocialCoreHours),
                ("ivy", AlertKind::RepeatedBlocks),
            ]
        );
        assert_eq!(raised[1].severity, Severity::High);
        assert_eq!(raised[4].evidence.len(), 3);
        let snapshot_counts = stats.snapshot();
        assert_eq!(snapshot_counts.records, 13);
        assert_eq!(snapshot_counts.raised.iter().sum::<u64>(), 5);

        a_login_raises_and_a_repeated_phrase_is_folded(&store, &snapshot, &mut state, &stats);
    }

    /// A day's records: one that each rule should raise an alert for (amy's phrase,
    /// cat's locked category, dan's circumvention, fay's staff social in core hours,
    /// ivy's three blocks in a minute), each next to a near miss that should not (an
    /// exception, staff social outside core hours, a pupil on social, blocks spread
    /// out).
    fn one_day_of_records_for_each_rule_and_its_near_misses() -> Vec<Record> {
        [
            single_records_and_near_misses(),
            blocks_in_a_burst_and_spread_out(),
        ]
        .concat()
    }

    /// The records that raise (or nearly raise) an alert on their own: a phrase and
    /// its exception, a locked category, circumvention, staff and pupils on social.
    fn single_records_and_near_misses() -> Vec<Record> {
        vec![
            // A phrase in a percent-encoded path; its exception does not cover it.
            record(
                "2026-11-17T10:00:00Z",
                "amy",
                "pupil",
                "a.test",
                "/q?x=kill%20my%24elf",
                Outcome::Failed,
            ),
            // The exception covers this one.
            record(
                "2026-11-17T10:00:01Z",
                "ben",
                "pupil",
                "a.test",
                "/kill-myself-lyrics",
                Outcome::Allowed,
            ),
            record(
                "2026-11-17T10:00:02Z",
                "cat",
                "pupil",
                "illegal.test",
                "/",
                Outcome::Blocked,
            ),
            record(
                "2026-11-17T10:00:03Z",
                "dan",
                "pupil",
                "vpn.test",
                "/",
                Outcome::Blocked,
            ),
            // Staff social: inside core hours, and (eve) outside.
            record(
                "2026-11-17T10:00:04Z",
                "fay",
                "staff",
                "social.test",
                "/",
                Outcome::Allowed,
            ),
            record(
                "2026-11-17T18:00:00Z",
                "eve",
                "staff",
                "social.test",
                "/",
                Outcome::Allowed,
            ),
            // Pupils on social are not staff.
            record(
                "2026-11-17T10:00:05Z",
                "gus",
                "pupil",
                "social.test",
                "/",
                Outcome::Allowed,
            ),
        ]
    }

    /// Repeated blocks: ivy's three within a minute, hal's spread out.
    fn blocks_in_a_burst_and_spread_out() -> Vec<Record> {
        vec![
            // Three blocks within a minute; hal's are spread out.
            record(
                "2026-11-17T11:00:00Z",
                "ivy",
                "pupil",
                "b.test",
                "/1",
                Outcome::Blocked,
            ),
            record(
                "2026-11-17T11:00:20Z",
                "ivy",
                "pupil",
                "b.test",
                "/2",
                Outcome::Blocked,
            ),
            record(
                "2026-11-17T11:00:40Z",
                "ivy",
                "pupil",
                "b.test",
                "/3",
                Outcome::Blocked,
            ),
            record(
                "2026-11-17T11:00:00Z",
                "hal",
                "pupil",
                "b.test",
                "/1",
                Outcome::Blocked,
            ),
            record(
                "2026-11-17T11:02:00Z",
                "hal",
                "pupil",
                "b.test",
                "/2",
                Outcome::Blocked,
            ),
            record(
                "2026-11-17T11:04:00Z",
                "hal",
                "pupil",
                "b.test",
                "/3",
                Outcome::Blocked,
            ),
        ]
    }

    /// After the day: a concurrent log-in raises its alert, and a repeat of amy's
    /// phrase is folded into her alert (not raised again).
    fn a_login_raises_and_a_repeated_phrase_is_folded(
        store: &Store,
        snapshot: &Snapshot,
        state: &mut State,
        stats: &AlertStats,
    ) {
        // A concurrent log-in, and a repeat of amy's phrase folded (not raised again).
        let login = ConcurrentLogin {
            at_unix_micros: 1,
            user: "amy".into(),
            old_address: IpAddr::from([10, 0, 0, 1]),
            new_address: IpAddr::from([10, 0, 0, 2]),
            outcome: "allowed".into(),
        };
        let raised = evaluate(store, snapshot, state, Input::Login(login), stats);
        assert_eq!(kinds(&raised), [("amy", AlertKind::ConcurrentLogin)]);
        let again = vec![record(
            "2026-11-17T12:00:00Z",
            "amy",
            "pupil",
            "a.test",
            "/kill myself",
            Outcome::Allowed,
        )];
        assert!(
            evaluate(
                store,
                snapshot,
                state,
                Input::Records(RecordBatch::from_records(&again)),
                stats
            )
            .is_empty()
        );
        assert_eq!(stats.snapshot().folded, 1);
        assert_eq!(store.alerts(&AlertFilter::default()).unwrap().len(), 6);
    }

    #[test]
    fn heavy_use_is_measured_against_the_users_own_baseline_once_a_day() {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = policy(dir.path());
        let store = Store::open(dir.path()).unwrap();
        let stats = AlertStats::default();
        let mut state = State {
            users_watch: None,
            users_seen: None,
            evaluator: Evaluator::new(),
            usage: HashMap::new(),
            unstored: Vec::new(),
        };
        let today = local_day(
            &snapshot,
            "2026-11-17T10:00:00Z"
                .parse::<Timestamp>()
                .unwrap()
                .as_microsecond() as u64,
        );
        // jo: 20 requests a day for the last 4 days; kim: no history.
        for day in 1..=4 {
            store.add_usage("jo", today - day, 20, 1000).unwrap();
        }
        let burst = |user: &str, n: usize| -> Vec<Record> {
            (0..n)
                .map(|i| {
                    record(
                        &format!("2026-11-17T10:{:02}:00Z", i % 60),
                        user,
                        "pupil",
                        "c.test",
                        "/",
                        Outcome::Allowed,
                    )
                })
                .collect()
        };
        // 40 requests: below min_requests.
        assert!(
            evaluate(
                &store,
                &snapshot,
                &mut state,
                Input::Records(RecordBatch::from_records(&burst("jo", 40))),
                &stats
            )
            .is_empty()
        );
        // 60 in all: above min_requests, below 3 x the mean (20 x 4 / 7 days, about 11): heavy.
        let raised = evaluate(
            &store,
            &snapshot,
            &mut state,
            Input::Records(RecordBatch::from_records(&burst("jo", 20))),
            &stats,
        );
        assert_eq!(kinds(&raised), [("jo", AlertKind::HeavyUse)]);
        assert_eq!(raised[0].subject, "2026-11-17");
        assert_eq!(
            raised[0].summary,
            "60 requests and 60.0 kB today, against a daily mean of 11.4 requests and 571 B \
             over the previous 7 days (requests more than 3x the mean)"
        );
        // Once a day.
        assert!(
            evaluate(
                &store,
                &snapshot,
                &mut state,
                Input::Records(RecordBatch::from_records(&burst("jo", 50))),
                &stats
            )
            .is_empty()
        );
        // No baseline, no alert.
        assert!(
            evaluate(
                &store,
                &snapshot,
                &mut state,
                Input::Records(RecordBatch::from_records(&burst("kim", 500))),
                &stats
            )
            .is_empty()
        );
        assert_eq!(
            store.usage("jo", today, today + 1).unwrap(),
            vec![(today, 110, 110_000)]
        );
    }

    #[test]
    fn byte_counts_and_days_read_well() {
        assert_eq!(bytes_text(0.0), "0 B");
        assert_eq!(bytes_text(999.4), "999 B");
        assert_eq!(bytes_text(12_500.0), "12.5 kB");
        assert_eq!(bytes_text(3_200_000.0), "3.2 MB");
        assert_eq!(bytes_text(1.4e9), "1.4 GB");
        assert_eq!(day_text(0), "1970-01-01");
        assert_eq!(day_text(20_411), "2025-11-19");
    }
}
