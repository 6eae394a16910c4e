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
    opened: Instant,
    failures: u32,
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

    fn remaining(&self, key: &K, now: Instant, window: Duration) -> Option<Duration> {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let w = map.get(key)?;
        let closes = w.opened + window;
        (w.failures >= self.max && closes > now).then(|| closes - now)
    }

    /// Counts a failure; true when it is the one that reached the maximum.
    fn fail(&self, key: &K, now: Instant, window: Duration) -> bool {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_TRACKED && !map.contains_key(key) {
            map.retain(|_, w| w.opened + window > now);
            if map.len() >= MAX_TRACKED
                && let Some(victim) = map.keys().next().cloned()
            {
                map.remove(&victim);
            }
        }
        let w = map.entry(key.clone()).or_insert(Window {
            opened: now,
            failures: 0,
        });
        if w.opened + window <= now {
            *w = Window {
                opened: now,
                failures: 0,
            };
        }
        w.failures = w.failures.saturating_add(1);
        w.failures == self.max
    }
}

/// Failure windows per client address and per user name.
pub(crate) struct FailureLimiter {
    window: Duration,
    addresses: Windows<IpAddr>,
    users: Windows<Arc<str>>,
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

    /// Whether a log-in from `address` as `user` (normalised, when the user exists)
    /// may be checked now.
    pub(crate) fn check(
        &self,
        address: IpAddr,
        user: Option<&Arc<str>>,
        now: Instant,
    ) -> Result<(), Locked> {
        if let Some(remaining) = self.addresses.remaining(&address, now, self.window) {
            return Err(Locked {
                on: LockedOn::Address,
                remaining,
            });
        }
        if let Some(user) = user
            && let Some(remaining) = self.users.remaining(user, now, self.window)
        {
            return Err(Locked {
                on: LockedOn::User,
                remaining,
            });
        }
        Ok(())
    }

    /// Counts a failed log-in from `address`, and against `user` when given (a wrong
    /// password for a user that exists). Returns the locks this failure switched on.
    pub(crate) fn fail(
        &self,
        address: IpAddr,
        user: Option<&Arc<str>>,
        now: Instant,
    ) -> Vec<LockedOn> {
        let mut engaged = Vec::new();
        if self.addresses.fail(&address, now, self.window) {
            engaged.push(LockedOn::Address);
        }
        if let Some(user) = user
            && self.users.fail(user, now, self.window)
        {
            engaged.push(LockedOn::User);
        }
        engaged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(300);

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn an_address_is_locked_after_its_failures_until_the_window_closes() {
        let limiter = FailureLimiter::new(WINDOW, 3, 100);
        let t0 = Instant::now();
        assert_eq!(limiter.fail(ip(1), None, t0), []);
        assert_eq!(limiter.fail(ip(1), None, t0), []);
        assert!(limiter.check(ip(1), None, t0).is_ok());
        assert_eq!(limiter.fail(ip(1), None, t0), [LockedOn::Address]);
        let later = t0 + Duration::from_secs(100);
        assert_eq!(
            limiter.check(ip(1), None, later),
            Err(Locked {
                on: LockedOn::Address,
                remaining: Duration::from_secs(200)
            })
        );
        // Other addresses are not affected.
        assert!(limiter.check(ip(2), None, later).is_ok());
        // The window closes; counting starts again.
        let after = t0 + WINDOW;
        assert!(limiter.check(ip(1), None, after).is_ok());
        assert_eq!(limiter.fail(ip(1), None, after), []);
        assert!(limiter.check(ip(1), None, after).is_ok());
    }

    #[test]
    fn a_user_is_locked_across_addresses() {
        let limiter = FailureLimiter::new(WINDOW, 100, 2);
        let ada: Arc<str> = Arc::from("ada");
        let t0 = Instant::now();
        limiter.fail(ip(1), Some(&ada), t0);
        assert_eq!(limiter.fail(ip(2), Some(&ada), t0), [LockedOn::User]);
        let locked = limiter.check(ip(3), Some(&ada), t0);
        assert_eq!(locked.map_err(|l| l.on), Err(LockedOn::User));
        assert!(limiter.check(ip(3), Some(&Arc::from("bob")), t0).is_ok());
        assert!(limiter.check(ip(3), None, t0).is_ok());
    }

    #[test]
    fn tables_stay_bounded() {
        let limiter = FailureLimiter::new(WINDOW, 5, 5);
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 10) {
            limiter.fail(IpAddr::from(i.to_be_bytes()), None, t0);
        }
        let held = limiter
            .addresses
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        assert!(held <= MAX_TRACKED, "{held}");
    }
}
