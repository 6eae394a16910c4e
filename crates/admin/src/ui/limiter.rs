//! Sign-in rate limiting: failed attempts are counted per client address and per user
//! name in a sliding window; past the limit, sign-in is refused (429 with Retry-After)
//! without checking the password, so guessing costs the guesser time and not the
//! server's CPU.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed sign-ins allowed per client address in [`WINDOW`].
pub const PER_ADDRESS: usize = 10;
/// Failed sign-ins allowed per user name in [`WINDOW`].
pub const PER_USER: usize = 10;
/// The sliding window.
pub const WINDOW: Duration = Duration::from_secs(5 * 60);
/// Most addresses and names tracked; the table is cleared of stale entries first.
const MAX_TRACKED: usize = 100_000;

/// Failures per address and per user name.
#[derive(Default)]
pub struct SignInLimiter {
    failures: Mutex<HashMap<Key, VecDeque<Instant>>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Address(IpAddr),
    User(String),
}

impl SignInLimiter {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<Key, VecDeque<Instant>>> {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// When sign-in is locked for this address or user: how long until it opens.
    pub fn locked_for(&self, address: IpAddr, user: &str) -> Option<Duration> {
        let now = Instant::now();
        let mut table = self.table();
        [
            (Key::Address(address), PER_ADDRESS),
            (Key::User(user.to_lowercase()), PER_USER),
        ]
        .into_iter()
        .filter_map(|(key, limit)| {
            let times = table.get_mut(&key)?;
            while times
                .front()
                .is_some_and(|t| now.duration_since(*t) >= WINDOW)
            {
                times.pop_front();
            }
            (times.len() >= limit)
                .then(|| {
                    times
                        .front()
                        .map(|t| WINDOW.saturating_sub(now.duration_since(*t)))
                })
                .flatten()
        })
        .max()
    }

    /// Counts a failed sign-in.
    pub fn failed(&self, address: IpAddr, user: &str) {
        let now = Instant::now();
        let mut table = self.table();
        if table.len() >= MAX_TRACKED {
            table.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < WINDOW)
            });
        }
        for key in [Key::Address(address), Key::User(user.to_lowercase())] {
            table.entry(key).or_default().push_back(now);
        }
    }

    /// Forgets the user's failures after a successful sign-in.
    pub fn succeeded(&self, user: &str) {
        self.table().remove(&Key::User(user.to_lowercase()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_the_limit_per_address_and_per_user() {
        let limiter = SignInLimiter::default();
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..PER_ADDRESS - 1 {
            limiter.failed(a, "x");
        }
        assert_eq!(limiter.locked_for(a, "y"), None);
        limiter.failed(a, "x");
        assert!(limiter.locked_for(a, "y").is_some(), "address locked");
        assert!(
            limiter.locked_for(b, "X").is_some(),
            "user locked, any case"
        );
        assert_eq!(limiter.locked_for(b, "y"), None);
        limiter.succeeded("x");
        assert_eq!(limiter.locked_for(b, "x"), None);
    }
}
