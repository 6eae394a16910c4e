//! Service-log lines for events a client can cause at will (blocked requests,
//! malformed requests, failed handshakes). Each event is in the visit log or a
//! metric already; the service log gets the first few of each kind a minute and then
//! one summary line a minute, so a hostile client cannot fill the disk with log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::info;

/// Logs at info when `$kind` (an [`EventLog`]) admits the event, at debug otherwise;
/// the arguments are `tracing::info!`'s.
macro_rules! throttled {
    ($kind:expr, $($arg:tt)+) => {
        if $kind.admit() {
            tracing::info!($($arg)+)
        } else {
            tracing::debug!($($arg)+)
        }
    };
}
pub(crate) use throttled;

/// One kind of event: how many lines of its own a minute, and the minute's count.
pub(crate) struct EventLog {
    /// What the summary line calls these events ("requests blocked").
    what: &'static str,
    /// How many events a minute get a line of their own at info.
    detailed_per_minute: u64,
    /// The minute (since the Unix epoch) `seen` counts.
    minute: AtomicU64,
    seen: AtomicU64,
}

/// Requests refused by the policy: each is in the visit log, so only a summary.
pub(crate) static BLOCKED: EventLog = EventLog::new("requests blocked", 0);
/// Malformed, oversized or too-slow requests and handshakes answered with an error.
pub(crate) static BAD_REQUESTS: EventLog =
    EventLog::new("malformed, oversized or too slow requests", 10);
/// Requests refused because the visit log cannot be written (`store.when_full`).
pub(crate) static REFUSED_UNRECORDED: EventLog =
    EventLog::new("requests refused while the visit log cannot be written", 10);

/// Connections from a `proxy.proxy_protocol_from` peer without a valid PROXY header.
pub(crate) static MISSING_PROXY_HEADERS: EventLog = EventLog::new(
    "connections from proxy.proxy_protocol_from without a valid PROXY header",
    10,
);

/// Every kind, for the once-a-minute summary.
const ALL: [&EventLog; 4] = [
    &BLOCKED,
    &BAD_REQUESTS,
    &REFUSED_UNRECORDED,
    &MISSING_PROXY_HEADERS,
];

impl EventLog {
    pub(crate) const fn new(what: &'static str, detailed_per_minute: u64) -> Self {
        Self {
            what,
            detailed_per_minute,
            minute: AtomicU64::new(0),
            seen: AtomicU64::new(0),
        }
    }

    /// Counts one event; true when it should have a service-log line of its own
    /// (otherwise log it at debug). A new minute first summarises the last one.
    pub(crate) fn admit(&self) -> bool {
        self.roll_over(current_minute());
        self.seen.fetch_add(1, Ordering::Relaxed) < self.detailed_per_minute
    }

    /// Summarises the minute `seen` counts if `now` is a later one, and starts `now`.
    fn roll_over(&self, now: u64) {
        let counted = self.minute.load(Ordering::Relaxed);
        if counted == now
            || self
                .minute
                .compare_exchange(counted, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let seen = self.seen.swap(0, Ordering::Relaxed);
        if let Some(line) = self.summary(seen) {
            info!(count = seen, "{line}");
        }
    }

    /// The summary of one minute's `seen` events, when some went without a line.
    fn summary(&self, seen: u64) -> Option<String> {
        let unlogged = seen.saturating_sub(self.detailed_per_minute);
        if unlogged == 0 {
            None
        } else if self.detailed_per_minute == 0 {
            Some(format!(
                "{seen} {} in the last minute (each is in the visit log; debug level logs each here)",
                self.what
            ))
        } else {
            Some(format!(
                "{seen} {} in the last minute; {unlogged} of them not logged one by one",
                self.what
            ))
        }
    }
}

/// Summarises every kind whose minute has ended; called once a minute, so a burst
/// is reported even when nothing follows it.
pub(crate) fn summarise_ended_minutes() {
    let now = current_minute();
    for kind in ALL {
        kind.roll_over(now);
    }
}

fn current_minute() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_few_a_minute_get_a_line() {
        let kind = EventLog::new("things", 3);
        let admitted = (0..100).filter(|_| kind.admit()).count();
        // A minute boundary may fall inside the loop: then up to twice the budget.
        assert!((3..=6).contains(&admitted), "{admitted}");
    }

    #[test]
    fn a_summary_says_how_many_went_without_a_line() {
        let kind = EventLog::new("things", 3);
        assert_eq!(kind.summary(3), None);
        assert_eq!(
            kind.summary(10).as_deref(),
            Some("10 things in the last minute; 7 of them not logged one by one")
        );
        let blocked = EventLog::new("requests blocked", 0);
        assert!(
            blocked
                .summary(5)
                .is_some_and(|line| line.starts_with("5 requests blocked"))
        );
        assert_eq!(blocked.summary(0), None);
    }

    #[test]
    fn a_new_minute_starts_counting_afresh() {
        let kind = EventLog::new("things", 1);
        kind.roll_over(10);
        assert!(kind.seen.fetch_add(1, Ordering::Relaxed) < 1);
        kind.seen.fetch_add(5, Ordering::Relaxed);
        kind.roll_over(11);
        assert_eq!(kind.seen.load(Ordering::Relaxed), 0);
        assert_eq!(kind.minute.load(Ordering::Relaxed), 11);
        // The same minute again changes nothing.
        kind.seen.fetch_add(2, Ordering::Relaxed);
        kind.roll_over(11);
        assert_eq!(kind.seen.load(Ordering::Relaxed), 2);
    }
}
