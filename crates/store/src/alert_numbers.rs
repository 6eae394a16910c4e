//! Short alert numbers for people: alert ids come from sled's id generator, which the
//! whole database shares (#2000035); people read and say "#35", the 35th alert this
//! school's SafeGate raised. Numbers are given in id order (the order alerts were
//! raised), the first time any number is asked for, and never change.
//!
//! | tree            | key                      | value              |
//! |-----------------|--------------------------|--------------------|
//! | `alert_numbers` | `i` + alert id (u64 BE)  | number (u64 BE)    |
//! | `alert_numbers` | `n` + number (u64 BE)    | alert id (u64 BE)  |
//! | `alert_numbers` | `last`                   | the last id numbered and its number (u64 BE each) |
//!
//! Also the open alerts' counts by severity for the dashboard, read through the open
//! alerts' index (`alerts_open`), not by reading every alert.

use std::sync::Mutex;

use crate::alerts::{ALERTS, ALERTS_OPEN, decode, id_of};
use crate::{Severity, Store, StoreError};

const NUMBERS: &str = "alert_numbers";
const LAST: &[u8] = b"last";

/// One numbering at a time in this process (the database is this process's alone).
static NUMBERING: Mutex<()> = Mutex::new(());

fn key(kind: u8, value: u64) -> [u8; 9] {
    let mut key = [kind; 9];
    key[1..].copy_from_slice(&value.to_be_bytes());
    key
}

impl Store {
    /// Numbers every alert not numbered yet, in id order.
    fn number_new_alerts(&self) -> Result<(), StoreError> {
        let _one = NUMBERING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let trees = self.trees()?;
        let numbers = trees.db.open_tree(NUMBERS)?;
        let alerts = trees.db.open_tree(ALERTS)?;
        let (mut last_id, mut last_number) = match numbers.get(LAST)? {
            Some(bytes) if bytes.len() == 16 => (
                id_of(&bytes[..8]).unwrap_or(0),
                id_of(&bytes[8..]).unwrap_or(0),
            ),
            _ => (0, 0),
        };
        let mut batch = sled::Batch::default();
        let from = last_id.saturating_add(1).to_be_bytes();
        for id in alerts.range(from..).keys() {
            let Some(id) = id_of(&id?) else { continue };
            last_number += 1;
            last_id = id;
            batch.insert(&key(b'i', id), &last_number.to_be_bytes());
            batch.insert(&key(b'n', last_number), &id.to_be_bytes());
        }
        let mut last = last_id.to_be_bytes().to_vec();
        last.extend_from_slice(&last_number.to_be_bytes());
        batch.insert(LAST, last);
        numbers.apply_batch(batch)?;
        Ok(())
    }

    /// The short number of alert `id` (#35), None when there is no such alert.
    pub fn alert_number(&self, id: u64) -> Result<Option<u64>, StoreError> {
        let numbers = self.trees()?.db.open_tree(NUMBERS)?;
        if let Some(found) = numbers.get(key(b'i', id))? {
            return Ok(id_of(&found));
        }
        self.number_new_alerts()?;
        Ok(numbers.get(key(b'i', id))?.as_deref().and_then(id_of))
    }

    /// The id of the alert numbered `number`, if there is one.
    pub fn alert_id_of_number(&self, number: u64) -> Result<Option<u64>, StoreError> {
        self.number_new_alerts()?;
        let numbers = self.trees()?.db.open_tree(NUMBERS)?;
        Ok(numbers.get(key(b'n', number))?.as_deref().and_then(id_of))
    }

    /// Open alerts by severity (low, medium, high), read through the open alerts'
    /// index: as many reads as open alerts.
    pub fn open_alert_counts(&self) -> Result<[u64; 3], StoreError> {
        let trees = self.trees()?;
        let open = trees.db.open_tree(ALERTS_OPEN)?;
        let alerts = trees.db.open_tree(ALERTS)?;
        let mut counts = [0; 3];
        for id in open.iter().values() {
            let Some(id) = id_of(&id?) else { continue };
            let Some(bytes) = alerts.get(id.to_be_bytes())? else {
                continue;
            };
            match decode(&bytes) {
                Ok(alert) if alert.status.is_open() => {
                    counts[match alert.severity {
                        Severity::Low => 0,
                        Severity::Medium => 1,
                        Severity::High => 2,
                    }] += 1;
                }
                _ => {}
            }
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::{AlertKind, AlertStatus, NewAlert, StatusChange};

    fn raise(store: &Store, who: &str, severity: Severity) -> u64 {
        store
            .raise_alert(NewAlert {
                kind: AlertKind::RepeatedBlocks,
                severity,
                who: who.to_owned(),
                user: Some(who.to_owned()),
                role: "pupil".to_owned(),
                group: None,
                subject: "gambling".to_owned(),
                summary: "blocked again and again".to_owned(),
                at_unix_micros: 1,
                evidence: Vec::new(),
                client: None,
                computer: None,
            })
            .unwrap()
            .alert
            .id
    }

    #[test]
    fn alerts_are_numbered_from_one_in_the_order_raised() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // Ids are shared with the rest of the database: they grow in jumps.
        store
            .write_records(&[crate::record::tests::sample(1, "a", "b.test")])
            .unwrap();
        let first = raise(&store, "ada", Severity::High);
        let second = raise(&store, "bob", Severity::Low);
        assert!(first > 1);
        assert_eq!(store.alert_number(second).unwrap(), Some(2));
        assert_eq!(store.alert_number(first).unwrap(), Some(1));
        let third = raise(&store, "cy", Severity::High);
        assert_eq!(store.alert_id_of_number(3).unwrap(), Some(third));
        assert_eq!(store.alert_number(third).unwrap(), Some(3));
        assert_eq!(store.alert_number(third + 1000).unwrap(), None);
        assert_eq!(store.open_alert_counts().unwrap(), [1, 0, 2]);
        let change = StatusChange {
            status: AlertStatus::Closed,
            by: "dsl".to_owned(),
            at_unix_micros: 2,
            note: Some("spoke to the class".to_owned()),
        };
        store.set_alert_status(first, change).unwrap();
        assert_eq!(store.open_alert_counts().unwrap(), [1, 0, 1]);
    }
}
