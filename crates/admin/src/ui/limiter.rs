//! Sign-in rate limiting: failed attempts are counted per client address and per user
//! name in a sliding window; past the limit, sign-in is refused (429 with Retry-After)
//! without checking the password, so guessing costs the guesser time and not the
//! server's CPU.
//!
//! The limit holds under concurrency: a sign-in takes a [`Reservation`] before its
//! password is checked, and a check in flight counts against the address and the user
//! name as if it had failed. Of any number of sign-ins sent at once from one address
//! (or for one name), at most [`PER_ADDRESS`] (or [`PER_USER`]) are checked; the rest
//! are refused before a hash is computed. A wrong password turns the reservation into
//! a failure ([`Reservation::failed`]); a right one releases it and forgets the
//! name's failures ([`Reservation::succeeded`]); one dropped unsettled (a check refused
//! as busy, a client gone) is released.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Failed sign-ins allowed per client address in [`WINDOW`].
pub const PER_ADDRESS: usize = 10;
/// Failed sign-ins allowed per user name in [`WINDOW`].
pub const PER_USER: usize = 10;
/// The sliding window.
pub const WINDOW: Duration = Duration::from_secs(5 * 60);
/// Most addresses and names tracked; the table is cleared of stale entries first.
const MAX_TRACKED: usize = 100_000;

/// Failures and checks in flight per address and per user name.
#[derive(Default)]
pub struct SignInLimiter {
    entries: Mutex<HashMap<Key, Entry>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Address(IpAddr),
    User(String),
}

#[derive(Debug, Default)]
struct Entry {
    failures: VecDeque<Instant>,
    in_flight: usize,
}

impl Entry {
    /// Forgets failures older than the window.
    fn prune(&mut self, now: Instant) {
        while self
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            self.failures.pop_front();
        }
    }

    /// How long until a sign-in may be tried, when failures and checks in flight
    /// reach `limit`: until the oldest failure leaves the window (the whole window
    /// when only checks in flight fill it, as they may all fail).
    fn locked_for(&self, limit: usize, now: Instant) -> Option<Duration> {
        (self.failures.len() + self.in_flight >= limit).then(|| {
            self.failures
                .front()
                .map_or(WINDOW, |t| WINDOW.saturating_sub(now.duration_since(*t)))
        })
    }

    fn idle(&self) -> bool {
        self.in_flight == 0 && self.failures.is_empty()
    }
}

/// A sign-in whose password may be checked now, counted against its address and user
/// name until settled; see the module documentation.
pub struct Reservation<'a> {
    limiter: &'a SignInLimiter,
    keys: [Key; 2],
    settled: bool,
}

impl Reservation<'_> {
    /// The password was wrong (or the account may not sign in): counts a failure.
    pub fn failed(mut self) {
        self.settled = true;
        let now = Instant::now();
        let mut table = self.limiter.table();
        for key in &self.keys {
            let entry = table.entry(key.clone()).or_default();
            entry.in_flight = entry.in_flight.saturating_sub(1);
            entry.failures.push_back(now);
        }
    }

    /// The password was right: releases the place and forgets the user name's failures.
    pub fn succeeded(mut self) {
        self.settled = true;
        self.limiter.release(&self.keys);
        self.limiter.table().remove(&self.keys[1]);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.limiter.release(&self.keys);
        }
    }
}

impl SignInLimiter {
    fn table(&self) -> MutexGuard<'_, HashMap<Key, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reserves a password check for a sign-in from `address` as `user`, or says how
    /// long until one may be tried (failures and checks in flight reach a limit).
    pub fn reserve(&self, address: IpAddr, user: &str) -> Result<Reservation<'_>, Duration> {
        let now = Instant::now();
        let keys = [Key::Address(address), Key::User(user.to_lowercase())];
        let mut table = self.table();
        if table.len() >= MAX_TRACKED {
            table.retain(|_, entry| {
                entry.prune(now);
                !entry.idle()
            });
        }
        let wait = keys
            .iter()
            .zip([PER_ADDRESS, PER_USER])
            .filter_map(|(key, limit)| {
                let entry = table.get_mut(key)?;
                entry.prune(now);
                entry.locked_for(limit, now)
            })
            .max();
        if let Some(wait) = wait {
            return Err(wait);
        }
        for key in &keys {
            table.entry(key.clone()).or_default().in_flight += 1;
        }
        drop(table);
        Ok(Reservation {
            limiter: self,
            keys,
            settled: false,
        })
    }

    fn release(&self, keys: &[Key; 2]) {
        let mut table = self.table();
        for key in keys {
            if let Some(entry) = table.get_mut(key) {
                entry.in_flight = entry.in_flight.saturating_sub(1);
                if entry.idle() {
                    table.remove(key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrong(limiter: &SignInLimiter, address: IpAddr, user: &str) {
        match limiter.reserve(address, user) {
            Ok(reservation) => reservation.failed(),
            Err(wait) => panic!("locked for {wait:?}"),
        }
    }

    #[test]
    fn locks_after_the_limit_per_address_and_per_user() {
        let limiter = SignInLimiter::default();
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..PER_ADDRESS - 1 {
            wrong(&limiter, a, "x");
        }
        assert!(limiter.reserve(a, "y").is_ok());
        wrong(&limiter, a, "x");
        assert!(limiter.reserve(a, "y").is_err(), "address locked");
        assert!(limiter.reserve(b, "X").is_err(), "user locked, any case");
        assert!(limiter.reserve(b, "y").is_ok());
    }

    #[test]
    fn a_right_password_forgets_the_user_name_failures() {
        let limiter = SignInLimiter::default();
        let a: IpAddr = [10, 0, 0, 1].into();
        for i in 0..PER_USER - 1 {
            wrong(&limiter, IpAddr::from([10, 1, 0, i as u8]), "x");
        }
        limiter.reserve(a, "x").map(Reservation::succeeded).ok();
        for i in 0..PER_USER - 1 {
            wrong(&limiter, IpAddr::from([10, 2, 0, i as u8]), "x");
        }
        assert!(limiter.reserve(a, "x").is_ok());
    }

    #[test]
    fn checks_in_flight_count_before_they_end() {
        let limiter = SignInLimiter::default();
        let a: IpAddr = [10, 0, 0, 1].into();
        let held: Vec<_> = (0..PER_ADDRESS)
            .map(|i| limiter.reserve(a, &format!("user{i}")).ok())
            .collect();
        assert!(held.iter().all(Option::is_some));
        assert_eq!(limiter.reserve(a, "other").err(), Some(WINDOW));
        drop(held);
        assert!(limiter.reserve(a, "other").is_ok());
        assert!(limiter.table().is_empty(), "released places are forgotten");
    }
}
