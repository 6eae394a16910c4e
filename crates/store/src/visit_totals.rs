//! Hourly totals of the visit log, for the admin dashboard: requests, blocked requests
//! and blocked requests by category, per hour. The dashboard reads at most a few
//! hundred small values (two weeks of hours) instead of scanning the visit log.
//!
//! | tree           | key                                  | value                 |
//! |----------------|--------------------------------------|-----------------------|
//! | `visit_totals` | hour number since the epoch (u64 BE) | JSON [`HourTotals`]   |
//!
//! [`Store::write_batch`] adds each batch to its hours after writing its records (one
//! read-modify-write per hour the batch touches, usually one), and
//! [`Store::purge_before`] drops hours with the records. A batch whose write is retried
//! after the totals were added would be counted twice; the totals are for a dashboard,
//! not for the weekly report, which reads the records themselves.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Outcome, RecordBatch, Store, StoreError};

const TOTALS: &str = "visit_totals";

/// Distinct categories kept per hour; the rest are added to [`OTHER_CATEGORIES`].
pub const CATEGORIES_PER_HOUR: usize = 64;

/// The category name that collects categories beyond [`CATEGORIES_PER_HOUR`].
pub const OTHER_CATEGORIES: &str = "(other categories)";

/// The category name of blocked requests in no category (a deny list entry).
pub const NO_CATEGORY: &str = "";

/// Microseconds in an hour.
pub const HOUR_MICROS: u64 = 3_600_000_000;

/// What happened in one hour.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HourTotals {
    /// Requests recorded (allowed and blocked).
    pub requests: u64,
    /// Of which blocked.
    pub blocked: u64,
    /// Blocked requests by their first category ([`NO_CATEGORY`] for none).
    #[serde(default)]
    pub blocked_categories: BTreeMap<String, u64>,
}

impl HourTotals {
    /// Adds `other` to these totals.
    pub fn add(&mut self, other: &HourTotals) {
        self.requests += other.requests;
        self.blocked += other.blocked;
        for (name, count) in &other.blocked_categories {
            *self.blocked_categories.entry(name.clone()).or_default() += count;
        }
    }

    fn count_blocked(&mut self, category: &str) {
        self.count_blocked_n(category, 1);
    }

    /// Counts `n` blocked requests in `category`, within [`CATEGORIES_PER_HOUR`].
    fn count_blocked_n(&mut self, category: &str, n: u64) {
        self.blocked += n;
        let name = if self.blocked_categories.len() >= CATEGORIES_PER_HOUR
            && !self.blocked_categories.contains_key(category)
        {
            OTHER_CATEGORIES
        } else {
            category
        };
        *self.blocked_categories.entry(name.to_owned()).or_default() += n;
    }
}

impl Store {
    /// Adds a batch's records to their hours' totals.
    pub(crate) fn add_to_totals(&self, batch: &RecordBatch) -> Result<(), StoreError> {
        let mut hours: BTreeMap<u64, HourTotals> = BTreeMap::new();
        for record in batch.iter() {
            let hour = hours
                .entry(record.at_unix_micros / HOUR_MICROS)
                .or_default();
            hour.requests += 1;
            if record.outcome == Outcome::Blocked {
                hour.count_blocked(record.categories.iter().next().unwrap_or(NO_CATEGORY));
            }
        }
        let tree = self.trees()?.db.open_tree(TOTALS)?;
        for (hour, added) in hours {
            tree.update_and_fetch(hour.to_be_bytes(), |old| {
                let mut totals = old
                    .and_then(|bytes| serde_json::from_slice::<HourTotals>(bytes).ok())
                    .unwrap_or_default();
                totals.requests += added.requests;
                for (name, count) in &added.blocked_categories {
                    totals.count_blocked_n(name, *count);
                }
                serde_json::to_vec(&totals).ok()
            })?;
        }
        Ok(())
    }

    /// The totals of the hours from `since_micros` to `until_micros` (Unix
    /// microseconds; each hour that starts in the range), oldest first; hours without
    /// records are left out.
    pub fn hourly_totals(
        &self,
        since_micros: u64,
        until_micros: u64,
    ) -> Result<Vec<(u64, HourTotals)>, StoreError> {
        let tree = self.trees()?.db.open_tree(TOTALS)?;
        let first = since_micros.div_ceil(HOUR_MICROS);
        let end = until_micros.div_ceil(HOUR_MICROS);
        let mut found = Vec::new();
        for entry in tree.range(first.to_be_bytes()..end.to_be_bytes()) {
            let (key, value) = entry?;
            let Ok(hour) = <[u8; 8]>::try_from(key.as_ref()).map(u64::from_be_bytes) else {
                continue;
            };
            match serde_json::from_slice::<HourTotals>(&value) {
                Ok(totals) => found.push((hour * HOUR_MICROS, totals)),
                Err(error) => {
                    tracing::error!(%error, hour, "skipping hourly totals that cannot be read")
                }
            }
        }
        Ok(found)
    }

    /// Removes the totals of hours that ended before `cutoff_micros`.
    pub(crate) fn purge_totals_before(&self, cutoff_micros: u64) -> Result<(), StoreError> {
        let tree = self.trees()?.db.open_tree(TOTALS)?;
        let end = (cutoff_micros / HOUR_MICROS).to_be_bytes();
        let mut batch = sled::Batch::default();
        for key in tree.range(..end).keys() {
            batch.remove(key?);
        }
        tree.apply_batch(batch)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::Record;

    fn record(at: u64, blocked: Option<&str>) -> Record {
        let mut record = crate::record::tests::sample(at, "ada", "bet.test");
        if let Some(category) = blocked {
            record.outcome = Outcome::Blocked;
            record.categories = if category.is_empty() {
                Vec::new()
            } else {
                vec![category.to_owned()]
            };
        }
        record
    }

    #[test]
    fn totals_add_up_per_hour_and_are_purged_with_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let day = 20_000 * 24 * HOUR_MICROS;
        store
            .write_records(&[
                record(day + 10, None),
                record(day + 20, Some("gambling")),
                record(day + HOUR_MICROS + 5, Some("gambling")),
                record(day + HOUR_MICROS + 6, Some("")),
            ])
            .unwrap();
        store
            .write_records(&[record(day + HOUR_MICROS + 7, Some("social"))])
            .unwrap();
        let hours = store.hourly_totals(day, day + 2 * HOUR_MICROS).unwrap();
        assert_eq!(hours.len(), 2);
        assert_eq!(hours[0].0, day);
        assert_eq!((hours[0].1.requests, hours[0].1.blocked), (2, 1));
        let second = &hours[1].1;
        assert_eq!((second.requests, second.blocked), (3, 3));
        assert_eq!(second.blocked_categories.get("gambling"), Some(&1));
        assert_eq!(second.blocked_categories.get(NO_CATEGORY), Some(&1));
        assert_eq!(second.blocked_categories.get("social"), Some(&1));
        // Only hours that start in the range.
        assert_eq!(
            store
                .hourly_totals(day + 1, day + 2 * HOUR_MICROS)
                .unwrap()
                .len(),
            1
        );
        store.purge_before(day + HOUR_MICROS).unwrap();
        assert_eq!(store.hourly_totals(0, u64::MAX / 2).unwrap().len(), 1);
    }

    #[test]
    fn categories_per_hour_are_bounded() {
        let mut totals = HourTotals::default();
        for i in 0..(CATEGORIES_PER_HOUR + 10) {
            totals.count_blocked(&format!("c{i}"));
        }
        assert_eq!(totals.blocked_categories.len(), CATEGORIES_PER_HOUR + 1);
        assert_eq!(totals.blocked_categories.get(OTHER_CATEGORIES), Some(&10));
        assert_eq!(totals.blocked, (CATEGORIES_PER_HOUR + 10) as u64);
    }
}
