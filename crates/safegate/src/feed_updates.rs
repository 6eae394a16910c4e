//! The running service's list feeds: updated on `lists.schedule` on a blocking thread
//! (off the proxy's path), the policy reloaded after a change; a failed update keeps
//! the lists in force and is logged and counted. Their state is cached here for
//! `/metrics` and `/readyz`, and a feed past `lists.stale_after` raises one system
//! notice for the technician (again only once it was fresh in between).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use safegate_admin::metrics::{ListFeedFigures, ListFeedSource};
use safegate_lists::feed::{self, Feed, FeedStatus, Updated};
use safegate_reload::ListsConfig;
use safegate_reload::schedule::Schedule;
use safegate_safeguarding::delivery::SystemNotice;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::lists_command::{age, update_feeds};

/// The longest wait between two looks at staleness.
const STALE_CHECK: Duration = Duration::from_secs(3600);

/// The feeds and what is known of them.
pub struct FeedsHealth {
    feeds: Vec<Feed>,
    lists: ListsConfig,
    statuses: Mutex<Vec<FeedStatus>>,
    failures: Vec<AtomicU64>,
}

impl FeedsHealth {
    /// The configured feeds (None when there are none); call [`Self::refresh`] next.
    pub fn new(lists: &ListsConfig, policy_file: &std::path::Path) -> Option<Arc<Self>> {
        let feeds = crate::lists_command::feeds(lists, policy_file);
        if feeds.is_empty() {
            return None;
        }
        Some(Arc::new(Self {
            failures: feeds.iter().map(|_| AtomicU64::new(0)).collect(),
            statuses: Mutex::new(vec![FeedStatus::default(); feeds.len()]),
            feeds,
            lists: lists.clone(),
        }))
    }

    /// Reads every feed's installed state from disk (blocking).
    pub fn refresh(&self) {
        let statuses: Vec<FeedStatus> = self.feeds.iter().map(feed::status).collect();
        if let Ok(mut cached) = self.statuses.lock() {
            *cached = statuses;
        }
    }

    fn statuses(&self) -> Vec<FeedStatus> {
        self.statuses
            .lock()
            .map(|statuses| statuses.clone())
            .unwrap_or_default()
    }

    /// Feeds past `stale_after` (or never installed): name and what to do.
    fn stale(&self) -> Vec<(String, String)> {
        let now = feed::now_secs();
        let limit = self.lists.stale_after.as_secs();
        self.feeds
            .iter()
            .zip(self.statuses())
            .filter_map(|(feed, status)| match age(&status, now) {
                None => Some((
                    feed.name.clone(),
                    format!(
                        "feed {} is not installed: run `safegate lists update`",
                        feed.name
                    ),
                )),
                Some(age) if age > limit => Some((
                    feed.name.clone(),
                    format!(
                        "feed {} was last updated {} ago (lists.stale_after is {}): see \
                         `safegate lists status`",
                        feed.name,
                        humantime::format_duration(Duration::from_secs(age)),
                        humantime::format_duration(self.lists.stale_after)
                    ),
                )),
                Some(_) => None,
            })
            .collect()
    }
}

impl ListFeedSource for FeedsHealth {
    fn list_feeds(&self) -> ListFeedFigures {
        let now = feed::now_secs();
        let mut figures = ListFeedFigures::default();
        for (feed, status) in self.feeds.iter().zip(self.statuses()) {
            let label = |category: &str| match category {
                "list" => feed.name.clone(),
                category => format!("{}/{category}", feed.name),
            };
            for (category, entries) in &status.categories {
                figures.entries.push((label(category), *entries));
                if let Some(age) = age(&status, now) {
                    figures.ages.push((label(category), age as f64));
                }
            }
        }
        figures.failures = self
            .feeds
            .iter()
            .zip(&self.failures)
            .map(|(feed, count)| (feed.name.clone(), count.load(Ordering::Relaxed)))
            .collect();
        figures.stale = self.stale().into_iter().map(|(_, why)| why).collect();
        figures
    }
}

/// Starts the updater: updates on `schedule` (if any) and watches staleness.
pub fn spawn(
    health: Arc<FeedsHealth>,
    reload_now: Arc<Notify>,
    notices: Option<mpsc::Sender<SystemNotice>>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let schedule = health
        .lists
        .schedule
        .as_deref()
        .and_then(|text| Schedule::parse(text).ok());
    // Staleness is looked at a few times within `stale_after`, at most hourly.
    let stale_check = (health.lists.stale_after / 4).clamp(Duration::from_secs(1), STALE_CHECK);
    tokio::spawn(async move {
        let mut notified = HashSet::new();
        let refreshed = Arc::clone(&health);
        let _ = tokio::task::spawn_blocking(move || refreshed.refresh()).await;
        let next = |schedule: Schedule| {
            Instant::now() + schedule.next_delay(&jiff::ZonedDateTime::now(), jitter())
        };
        let mut next_update = schedule.map(next);
        loop {
            notify_stale(&health, &mut notified, notices.as_ref());
            let mut wake = Instant::now() + stale_check;
            if let Some(at) = next_update {
                wake = wake.min(at);
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(wake) => {}
            }
            if let (Some(schedule), Some(at)) = (schedule, next_update)
                && Instant::now() >= at
            {
                update_now(&health, &reload_now).await;
                next_update = Some(next(schedule));
            }
        }
    })
}

/// One scheduled update of every feed.
async fn update_now(health: &Arc<FeedsHealth>, reload_now: &Notify) {
    let worker = Arc::clone(health);
    let results = tokio::task::spawn_blocking(move || {
        let results = update_feeds(&worker.feeds, &worker.lists, false);
        worker.refresh();
        results
    })
    .await;
    let Ok(results) = results else {
        error!("the list feed update stopped unexpectedly; the lists in force are kept");
        return;
    };
    let mut changed = false;
    for ((name, result), failures) in results.into_iter().zip(&health.failures) {
        match result {
            Ok(Updated::Unchanged) => info!(feed = %name, "list feed unchanged"),
            Ok(Updated::Installed(counts)) => {
                changed = true;
                let entries: u64 = counts.values().sum();
                info!(feed = %name, categories = counts.len(), entries, "list feed updated");
            }
            Err(err) => {
                failures.fetch_add(1, Ordering::Relaxed);
                error!(feed = %name, error = %feed::error_text(&err), "list feed update failed; the lists in force are kept");
            }
        }
    }
    if changed {
        reload_now.notify_one();
    }
}

/// Sends one system notice per feed that became stale.
fn notify_stale(
    health: &FeedsHealth,
    notified: &mut HashSet<String>,
    notices: Option<&mpsc::Sender<SystemNotice>>,
) {
    let stale = health.stale();
    notified.retain(|name| stale.iter().any(|(stale, _)| stale == name));
    for (name, why) in stale {
        if !notified.insert(name) {
            continue;
        }
        warn!("{why}");
        let notice = SystemNotice {
            kind: "list_feed_stale",
            summary: why,
            at_unix_micros: now_micros(),
        };
        if let Some(notices) = notices
            && notices.try_send(notice).is_err()
        {
            warn!("system notice queue full: a notice was not sent");
        }
    }
}

/// 0 to 1, to spread daily updates (not for anything secret).
fn jitter() -> f64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    f64::from(nanos % 1_000_000) / 1_000_000.0
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}
