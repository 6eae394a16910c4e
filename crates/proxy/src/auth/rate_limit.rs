//! Failed log-ins, counted per client address and per user name, so that nobody can
//! guess passwords at the speed of Argon2 (or make SafeGate spend its cores on it).
//!
//! Each address and each user name has a window that opens with its first failure and
//! lasts `auth.failure_window`. Once a window has counted its maximum of failures
//! (`auth.max_failures_per_address`, `auth.max_failures_per_user`), further log-ins
//! from that address, or as that user, are refused without a password check until the
//! window closes; then counting starts afresh. Refused attempts are not failures: they
//! do not extend the window, so the real person gets in once it is over.
//!
//! The limit holds under concurrency: a log-in about to be checked takes a
//! [`Reservation`] first, and a check in flight counts against the address and the
//! user as if it had failed. So of any number of log-ins sent at once from one address
//! (or for one user), at most the maximum are checked; the rest are refused before a
//! hash is computed. A reservation becomes a failure when the password is wrong
//! ([`Reservation::fail`]) and is released otherwise (a right password, a check that
//! never ran, a client that went away).
//!
//! Only failures count (a successful log-in does not reset anything: an attacker with
//! one valid account could otherwise reset their address between guesses). Per-user
//! counting applies to wrong passwords of users that exist, so the table is bounded by
//! the number of users; per-address counting applies to every failure. Both tables are
//! also capped at [`MAX_TRACKED`] entries: a full table first drops closed windows,
//! then any one entry.
//!
//! Credentials verified earlier (the credential cache) are not refused while a lock is
//! on: the lock stops new verifications, and a pupil who mistyped on a shared year-group
//! log-in does not cut off the class that is already browsing.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Most addresses, and most user names, tracked at once.
pub(crate) const MAX_TRACKED: usize = 65_536;

/// What a lock is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockedOn {
    /// The client address.
    Address,
    /// The user name.
    User,
}

/// A refusal because of a lock: what is locked and for how much longer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Locked {
    pub(crate) on: LockedOn,
    pub(crate) remaining: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    /// When the first failure of this window was counted (meaningless at 0 failures).
    opened: Instant,
    failures: u32,
    /// Reservations not yet settled: checks running or waiting to run.
    in_flight: u32,
}

impl Window {
    /// Failures still inside the window at `now`.
    fn live_failures(&self, now: Instant, window: Duration) -> u32 {
        if self.opened + window > now {
            self.failures
        } else {
            0
        }
    }
}

/// One table of windows (addresses or user names). The mutex is only taken on a
/// credential-cache miss, never on a hit.
struct Windows<K> {
    max: u32,
    map: Mutex<HashMap<K, Window>>,
}

impl<K: Eq + Hash + Clone> Windows<K> {
    fn new(max: u32) -> Self {
        Self {
            max,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Window>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a check in flight for `key`, unless its failures and checks in flight
    /// already reach the maximum: then how long until it may be tried again (the rest
    /// of the window; the whole window when only checks in flight fill it, as they
    /// may all fail).
    fn reserve(&self, key: &K, now: Instant, window: Duration) -> Result<(), Duration> {
        let mut map = self.lock();
        make_room(&mut map, key, now, window);
        let w = map.entry(key.clone()).or_insert(Window {
            opened: now,
            failures: 0,
            in_flight: 0,
        });
        let failures = w.live_failures(now, window);
        if failures.saturating_add(w.in_flight) >= self.max {
            return Err(if failures > 0 {
                (w.opened + window).saturating_duration_since(now)
            } else {
                window
            });
        }
        w.in_flight += 1;
        Ok(())
    }

    /// Ends a check in flight for `key`; a failure is counted when `failed`. True when
    /// that failure is the one that reached the maximum.
    fn settle(&self, key: &K, now: Instant, window: Duration, failed: bool) -> bool {
        let mut map = self.lock();
        if let Some(w) = map.get_mut(key) {
            w.in_flight = w.in_flight.saturating_sub(1);
            if !failed && w.in_flight == 0 && w.live_failures(now, window) == 0 {
                map.remove(key);
            }
        }
        drop(map);
        failed && self.fail(key, now, window)
    }

    /// Counts a failure; true when it is the one that reached the maximum.
    fn fail(&self, key: &K, now: Instant, window: Duration) -> bool {
        let mut map = self.lock();
        make_room(&mut map, key, now, window);
        let w = map.entry(key.clone()).or_insert(Window {
            opened: now,
            failures: 0,
            in_flight: 0,
        });
        if w.live_failures(now, window) == 0 {
            w.opened = now;
            w.failures = 0;
        }
        w.failures = w.failures.saturating_add(1);
        w.failures == self.max
    }
}

/// Before `key` is added to a full table: drops closed windows with nothing in flight,
/// then (if still full) any one entry.
fn make_room<K: Eq + Hash + Clone>(
    map: &mut HashMap<K, Window>,
    key: &K,
    now: Instant,
    window: Duration,
) {
    if map.len() < MAX_TRACKED || map.contains_key(key) {
        return;
    }
    map.retain(|_, w| w.in_flight > 0 || w.live_failures(now, window) > 0);
    if map.len() >= MAX_TRACKED
        && let Some(victim) = map.keys().next().cloned()
    {
        map.remove(&victim);
    }
}

/// Failure windows per client address and per user name.
pub(crate) struct FailureLimiter {
    window: Duration,
    addresses: Windows<IpAddr>,
    users: Windows<Arc<str>>,
}

/// A log-in that may be checked now, counted against its address (and user) until it
/// is settled: [`Reservation::fail`] counts the failure; dropping it releases the
/// place (a right password, or a check that never ran).
pub(crate) struct Reservation {
    limiter: Arc<FailureLimiter>,
    address: IpAddr,
    user: Option<Arc<str>>,
    settled: bool,
}

impl Reservation {
    /// The check failed: counts a failure where the reservation was counted. Returns
    /// the locks this failure switched on.
    pub(crate) fn fail(mut self, now: Instant) -> Vec<LockedOn> {
        self.settled = true;
        self.limiter
            .settle(self.address, self.user.as_ref(), now, true)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.settled {
            self.limiter
                .settle(self.address, self.user.as_ref(), Instant::now(), false);
        }
    }
}

impl FailureLimiter {
    /// Locks after `per_address` failures from one address, or `per_user` for one
    /// user, within `window`.
    pub(crate) fn new(window: Duration, per_address: u32, per_user: u32) -> Self {
        Self {
            window,
            addresses: Windows::new(per_address.max(1)),
            users: Windows::new(per_user.max(1)),
        }
    }

    /// Reserves a check of a log-in from `address` as `user` (normalised, when the
    /// user exists), or says what is locked: failures and checks in flight together
    /// reached a maximum.
    pub(crate) fn reserve(
        self: &Arc<Self>,
        address: IpAddr,
        user: Option<&Arc<str>>,
        now: Instant,
    ) -> Result<Reservation, Locked> {
        if let Err(remaining) = self.addresses.reserve(&address, now, self.window) {
            return Err(Locked {
                on: LockedOn::Address,
                remaining,
            });
        }
        if let Some(user) = user
            && let Err(remaining) = self.users.reserve(user, now, self.window)
        {
            self.addresses.settle(&address, now, self.window, false);
            return Err(Locked {
                on: LockedOn::User,
                remaining,
            });
        }
        Ok(Reservation {
            limiter: Arc::clone(self),
            address,
            user: user.cloned(),
            settled: false,
        })
    }

    fn settle(
        &self,
        address: IpAddr,
        user: Option<&Arc<str>>,
        now: Instant,
        failed: bool,
    ) -> Vec<LockedOn> {
        let mut engaged = Vec::new();
        if self.addresses.settle(&address, now, self.window, failed) {
            engaged.push(LockedOn::Address);
        }
        if let Some(user) = user
            && self.users.settle(user, now, self.window, failed)
        {
            engaged.push(LockedOn::User);
        }
        engaged
    }

    /// Counts a failed log-in from `address` that held no reservation (a header that
    /// cannot be read). Returns the locks this failure switched on.
    pub(crate) fn fail(&self, address: IpAddr, now: Instant) -> Vec<LockedOn> {
        if self.addresses.fail(&address, now, self.window) {
            vec![LockedOn::Address]
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(300);

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn limiter(per_address: u32, per_user: u32) -> Arc<FailureLimiter> {
        Arc::new(FailureLimiter::new(WINDOW, per_address, per_user))
    }

    /// A reserved check that failed.
    fn wrong(
        limiter: &Arc<FailureLimiter>,
        address: IpAddr,
        user: Option<&Arc<str>>,
        now: Instant,
    ) -> Vec<LockedOn> {
        match limiter.reserve(address, user, now) {
            Ok(reservation) => reservation.fail(now),
            Err(locked) => panic!("locked: {locked:?}"),
        }
    }

    #[test]
    fn an_address_is_locked_after_its_failures_until_the_window_closes() {
        let limiter = limiter(3, 100);
        let t0 = Instant::now();
        assert_eq!(wrong(&limiter, ip(1), None, t0), []);
        assert_eq!(limiter.fail(ip(1), t0), []);
        assert_eq!(wrong(&limiter, ip(1), None, t0), [LockedOn::Address]);
        let later = t0 + Duration::from_secs(100);
        assert_eq!(
            limiter.reserve(ip(1), None, later).err(),
            Some(Locked {
                on: LockedOn::Address,
                remaining: Duration::from_secs(200)
            })
        );
        // Other addresses are not affected.
        assert!(limiter.reserve(ip(2), None, later).is_ok());
        // The window closes; counting starts again.
        let after = t0 + WINDOW;
        assert_eq!(wrong(&limiter, ip(1), None, after), []);
        assert!(limiter.reserve(ip(1), None, after).is_ok());
    }

    #[test]
    fn a_user_is_locked_across_addresses() {
        let limiter = limiter(100, 2);
        let ada: Arc<str> = Arc::from("ada");
        let t0 = Instant::now();
        wrong(&limiter, ip(1), Some(&ada), t0);
        assert_eq!(wrong(&limiter, ip(2), Some(&ada), t0), [LockedOn::User]);
        let locked = limiter.reserve(ip(3), Some(&ada), t0);
        assert_eq!(locked.err().map(|l| l.on), Some(LockedOn::User));
        assert!(limiter.reserve(ip(3), Some(&Arc::from("bob")), t0).is_ok());
        assert!(limiter.reserve(ip(3), None, t0).is_ok());
    }

    #[test]
    fn checks_in_flight_count_before_they_end() {
        let limiter = limiter(3, 2);
        let ada: Arc<str> = Arc::from("ada");
        let t0 = Instant::now();
        // Three at once from one address: the fourth is refused before any ends.
        let held: Vec<_> = (0..3)
            .map(|_| limiter.reserve(ip(1), None, t0).ok())
            .collect();
        assert!(held.iter().all(Option::is_some));
        let refused = limiter.reserve(ip(1), None, t0).err();
        assert_eq!(refused.map(|l| l.on), Some(LockedOn::Address));
        // Two at once for one user from other addresses: the third is refused, and
        // its address reservation is given back.
        let first = limiter.reserve(ip(2), Some(&ada), t0).ok();
        let second = limiter.reserve(ip(3), Some(&ada), t0).ok();
        let refused = limiter.reserve(ip(4), Some(&ada), t0).err();
        assert_eq!(refused.map(|l| l.on), Some(LockedOn::User));
        let after_refusal: Vec<_> = (0..3)
            .map(|_| limiter.reserve(ip(4), None, t0).ok())
            .collect();
        assert!(after_refusal.iter().all(Option::is_some));
        drop(after_refusal);
        // Right passwords release their places without counting a failure.
        drop((first, second));
        drop(held);
        assert_eq!(wrong(&limiter, ip(1), Some(&ada), t0), []);
        assert_eq!(wrong(&limiter, ip(1), Some(&ada), t0), [LockedOn::User]);
    }

    #[test]
    fn tables_stay_bounded() {
        let limiter = limiter(5, 5);
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 10) {
            limiter.fail(IpAddr::from(i.to_be_bytes()), t0);
        }
        let held = limiter.addresses.lock().len();
        assert!(held <= MAX_TRACKED, "{held}");
    }
}
