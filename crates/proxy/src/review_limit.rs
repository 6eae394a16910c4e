//! How many review requests the block page's form may make: at most
//! `proxy.reviews_per_token_per_hour` with one form token and
//! `proxy.reviews_per_address_per_hour` from one client address, so one pupil (or a
//! script holding a token) cannot fill the filter admin's queue and the database.
//!
//! Each token and each address has a window that opens with its first review and
//! lasts an hour; once it has counted its maximum, further reviews are refused (429)
//! until it closes. Refused posts are not counted. Tokens are kept as a keyed hash,
//! not as text. Both tables are capped at [`MAX_TRACKED`] entries: a full table first
//! drops closed windows, then any one entry, so memory stays bounded whatever
//! arrives. One short lock per review post; nothing here is on the browsing path.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The length of a window.
pub const WINDOW: Duration = Duration::from_secs(60 * 60);

/// Most tokens, and most addresses, tracked at once.
pub const MAX_TRACKED: usize = 16_384;

/// Why a review was refused, and for how much longer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewRefused {
    /// This form token has made its reviews.
    Token {
        /// Until its window closes.
        retry_after: Duration,
    },
    /// This client address has made its reviews.
    Address {
        /// Until its window closes.
        retry_after: Duration,
    },
}

#[derive(Debug, Clone, Copy)]
struct Window {
    opened: Instant,
    count: u32,
}

/// The review counts per token and per address; see the module documentation.
#[derive(Debug)]
pub struct ReviewLimiter {
    per_token: u32,
    per_address: u32,
    hasher: RandomState,
    tables: Mutex<Tables>,
}

#[derive(Debug, Default)]
struct Tables {
    tokens: HashMap<u64, Window>,
    addresses: HashMap<IpAddr, Window>,
}

impl ReviewLimiter {
    /// At most `per_token` reviews per token and `per_address` per address an hour
    /// (each at least 1).
    pub fn new(per_token: u32, per_address: u32) -> Self {
        Self {
            per_token: per_token.max(1),
            per_address: per_address.max(1),
            hasher: RandomState::new(),
            tables: Mutex::new(Tables::default()),
        }
    }

    /// Counts a review with `token` from `address` at `now`, or refuses it without
    /// counting when either has made its reviews this window.
    pub fn admit(&self, token: &str, address: IpAddr, now: Instant) -> Result<(), ReviewRefused> {
        let token = self.hasher.hash_one(token);
        let address = address.to_canonical();
        let mut tables = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        let tables = &mut *tables;
        let token_window = open(&mut tables.tokens, token, now);
        if let Some(retry_after) = full(token_window, self.per_token, now) {
            return Err(ReviewRefused::Token { retry_after });
        }
        let address_window = open(&mut tables.addresses, address, now);
        if let Some(retry_after) = full(address_window, self.per_address, now) {
            return Err(ReviewRefused::Address { retry_after });
        }
        address_window.count += 1;
        token_window.count += 1;
        Ok(())
    }
}

/// The window of `key` at `now` (a fresh one when it closed or is new), making room
/// in a full table first.
fn open<K: Eq + Hash + Copy>(map: &mut HashMap<K, Window>, key: K, now: Instant) -> &mut Window {
    if map.len() >= MAX_TRACKED && !map.contains_key(&key) {
        map.retain(|_, w| now.duration_since(w.opened) < WINDOW);
        if map.len() >= MAX_TRACKED
            && let Some(victim) = map.keys().next().copied()
        {
            map.remove(&victim);
        }
    }
    let window = map.entry(key).or_insert(Window {
        opened: now,
        count: 0,
    });
    if now.duration_since(window.opened) >= WINDOW {
        *window = Window {
            opened: now,
            count: 0,
        };
    }
    window
}

/// How long until `window` opens again, when it has counted `max`.
fn full(window: &Window, max: u32, now: Instant) -> Option<Duration> {
    (window.count >= max).then(|| WINDOW.saturating_sub(now.duration_since(window.opened)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn a_token_and_an_address_make_at_most_their_reviews_an_hour() {
        let limiter = ReviewLimiter::new(2, 3);
        let t0 = Instant::now();
        assert_eq!(limiter.admit("a", ip(1), t0), Ok(()));
        assert_eq!(limiter.admit("a", ip(1), t0), Ok(()));
        let later = t0 + Duration::from_secs(600);
        assert_eq!(
            limiter.admit("a", ip(1), later),
            Err(ReviewRefused::Token {
                retry_after: Duration::from_secs(3000)
            })
        );
        // Another token from the same address: the address's third and last.
        assert_eq!(limiter.admit("b", ip(1), later), Ok(()));
        assert!(matches!(
            limiter.admit("c", ip(1), later),
            Err(ReviewRefused::Address { .. })
        ));
        // Refusals were not counted: the token "c" is fresh elsewhere.
        assert_eq!(limiter.admit("c", ip(2), later), Ok(()));
        // After the hour, both may review again.
        let after = t0 + WINDOW;
        assert_eq!(limiter.admit("a", ip(1), after), Ok(()));
    }

    #[test]
    fn tables_stay_bounded() {
        let limiter = ReviewLimiter::new(5, 5);
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 10) {
            let address = IpAddr::from(i.to_be_bytes());
            assert_eq!(limiter.admit(&i.to_string(), address, t0), Ok(()));
        }
        let tables = limiter
            .tables
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        assert!(
            tables.tokens.len() <= MAX_TRACKED,
            "{}",
            tables.tokens.len()
        );
        assert!(tables.addresses.len() <= MAX_TRACKED);
    }
}
