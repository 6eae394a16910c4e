//! The daily retention purge of the visit log (the scheduled form of `safegate log
//! purge`): records older than `store.retention_days` are removed shortly after start
//! and then every 24 hours, on a blocking thread so the proxy never waits for it. A failure is logged loudly and
//! retried within the hour; the task stops with the service.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use safegate_store::{Query, Store, StoreError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// Delay between start-up and the first purge (start-up has enough to do).
pub const FIRST_PURGE_AFTER: Duration = Duration::from_secs(5);
/// Time between purges.
pub const PURGE_EVERY: Duration = Duration::from_secs(24 * 60 * 60);
/// Time before trying again after a failed purge.
pub const RETRY_AFTER: Duration = Duration::from_secs(60 * 60);
/// A long backlog is purged this much of its time range at a time, so that stopping
/// the service does not wait for all of it.
const STEP_MICROS: u64 = 24 * 60 * 60 * 1_000_000;

/// Starts the retention task for `retention_days` (> 0).
pub fn spawn(store: Store, retention_days: u32, shutdown: CancellationToken) -> JoinHandle<()> {
    info!(
        retention_days,
        "visit log retention: records older than {retention_days} days are purged daily"
    );
    tokio::spawn(async move {
        let mut wait = FIRST_PURGE_AFTER;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            wait = if purge_once(&store, retention_days, &shutdown).await {
                PURGE_EVERY
            } else {
                RETRY_AFTER
            };
        }
    })
}

/// One purge; whether it succeeded (or was stopped by shutdown).
async fn purge_once(store: &Store, retention_days: u32, shutdown: &CancellationToken) -> bool {
    let age = Duration::from_secs(u64::from(retention_days) * 24 * 60 * 60);
    let cutoff = match jiff::SignedDuration::try_from(age)
        .ok()
        .and_then(|age| Timestamp::now().checked_sub(age).ok())
    {
        Some(cutoff) => crate::time_text::micros(cutoff),
        // Older than representable times: nothing can be that old.
        None => return true,
    };
    let started = Instant::now();
    let (store, stop) = (store.clone(), shutdown.clone());
    let purged = tokio::task::spawn_blocking(move || purge_in_steps(&store, cutoff, &stop)).await;
    let ms = started.elapsed().as_millis() as u64;
    match purged {
        Ok(Ok(removed)) => {
            info!(
                removed,
                ms,
                retention_days,
                "visit log retention: removed {removed} record(s) older than {retention_days} days in {ms} ms"
            );
            true
        }
        Ok(Err(err)) => {
            error!(
                %err,
                "VISIT LOG RETENTION PURGE FAILED: old records are kept past store.retention_days; retrying in {} min",
                RETRY_AFTER.as_secs() / 60
            );
            false
        }
        Err(err) => {
            error!(%err, "VISIT LOG RETENTION PURGE FAILED: the purge thread failed");
            false
        }
    }
}

/// Removes the records before `cutoff_micros`, one day of records at a time from the
/// oldest, checking `stop` between days; the last step purges everything before the
/// cut-off (dangling index entries included). Returns the number removed.
pub fn purge_in_steps(
    store: &Store,
    cutoff_micros: u64,
    stop: &CancellationToken,
) -> Result<usize, StoreError> {
    let oldest = store
        .query(&Query {
            until: Some(cutoff_micros),
            limit: Some(1),
            ..Query::default()
        })?
        .first()
        .map(|record| record.at_unix_micros);
    let mut removed = 0;
    if let Some(oldest) = oldest {
        let mut step = oldest.saturating_add(STEP_MICROS);
        while step < cutoff_micros {
            if stop.is_cancelled() {
                return Ok(removed);
            }
            removed += store.purge_before(step)?;
            step = step.saturating_add(STEP_MICROS);
        }
    }
    if stop.is_cancelled() {
        return Ok(removed);
    }
    removed += store.purge_before(cutoff_micros)?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::log::tests::record;
    use safegate_store::Outcome;

    const DAY: u64 = STEP_MICROS;

    #[test]
    fn purges_a_backlog_of_days_and_keeps_newer_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let base = 1_700_000_000_000_000;
        let records: Vec<_> = (0..10)
            .map(|day| record(base + day * DAY, Some("ada"), "a.example", Outcome::Allowed))
            .collect();
        store.write_records(&records).unwrap();
        let cutoff = base + 7 * DAY + 1;
        let removed = purge_in_steps(&store, cutoff, &CancellationToken::new()).unwrap();
        assert_eq!(removed, 8);
        assert_eq!(store.record_count(), 2);
        let left = store.query(&Query::default()).unwrap();
        assert!(left.iter().all(|r| r.at_unix_micros >= cutoff));
        // Nothing left to remove the second time.
        assert_eq!(
            purge_in_steps(&store, cutoff, &CancellationToken::new()).unwrap(),
            0
        );
    }

    #[test]
    fn stops_between_steps_when_the_service_stops() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .write_records(&[record(1_000, None, "a.example", Outcome::Allowed)])
            .unwrap();
        let stop = CancellationToken::new();
        stop.cancel();
        assert_eq!(purge_in_steps(&store, 100 * DAY, &stop).unwrap(), 0);
        assert_eq!(store.record_count(), 1);
    }
}
