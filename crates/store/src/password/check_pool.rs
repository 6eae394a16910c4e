//! One bounded pool for every password check in the process: the proxy's `Basic`
//! credentials and login portal, and the admin sign-in.
//!
//! An Argon2 check takes one core for 20–50 ms and 19 MiB (more for an imported hash
//! with costlier parameters, up to [`super::MAX_M_COST_KIB`]). Run without a bound,
//! a burst of log-ins starts one blocking thread per attempt and memory grows with
//! the burst. Through a [`CheckPool`], at most `concurrency` checks run at once (each
//! on tokio's blocking pool) and at most `max_waiting` wait for a turn; a check asked
//! for beyond that is refused at once with [`Busy`], before anything is computed.
//! So the memory the checks use is bounded by `concurrency` x the hash's cost, however
//! many log-ins arrive.
//!
//! The binary makes one pool and hands it to the proxy and the admin interface, so
//! the bound holds for both together. The pool counts the checks it ran and the ones
//! it refused ([`CheckPool::checks_run`], [`CheckPool::busy_refusals`]): the figures
//! behind `safegate_password_checks_total`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::Semaphore;

/// Checks running at once by default (each takes one core for 20–50 ms).
pub const DEFAULT_CONCURRENCY: usize = 2;

/// Checks waiting for a turn by default; more are refused with [`Busy`].
pub const DEFAULT_MAX_WAITING: usize = 64;

/// Too many password checks are running and waiting: try again in a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many password checks are waiting; try again in a moment")]
pub struct Busy;

/// A bounded pool of password checks; see the module documentation. Share it as an
/// `Arc<CheckPool>`.
#[derive(Debug)]
pub struct CheckPool {
    slots: Arc<Semaphore>,
    max_waiting: usize,
    waiting: AtomicUsize,
    run: AtomicU64,
    busy: AtomicU64,
}

impl Default for CheckPool {
    fn default() -> Self {
        Self::new(DEFAULT_CONCURRENCY, DEFAULT_MAX_WAITING)
    }
}

/// Counts a check waiting for a slot while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl CheckPool {
    /// A pool running at most `concurrency` checks at once (at least 1) with at most
    /// `max_waiting` waiting.
    pub fn new(concurrency: usize, max_waiting: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            max_waiting,
            waiting: AtomicUsize::new(0),
            run: AtomicU64::new(0),
            busy: AtomicU64::new(0),
        }
    }

    /// Whether `password` matches the PHC string `hash` ([`super::verify_password`]),
    /// checked on the blocking pool when a slot is free. [`Busy`] at once when
    /// `max_waiting` checks already wait. The slot is held until the computation ends,
    /// even if the caller stops waiting for it.
    pub async fn verify<H>(&self, hash: H, password: String) -> Result<bool, Busy>
    where
        H: AsRef<str> + Send + 'static,
    {
        if self.waiting.fetch_add(1, Ordering::Relaxed) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            self.busy.fetch_add(1, Ordering::Relaxed);
            return Err(Busy);
        }
        let waiting = Waiting(&self.waiting);
        let Ok(permit) = Arc::clone(&self.slots).acquire_owned().await else {
            return Err(Busy);
        };
        drop(waiting);
        self.run.fetch_add(1, Ordering::Relaxed);
        Ok(tokio::task::spawn_blocking(move || {
            let _permit = permit;
            super::verify_password(hash.as_ref(), &password)
        })
        .await
        .unwrap_or(false))
    }

    /// Checks started since the pool was made.
    pub fn checks_run(&self) -> u64 {
        self.run.load(Ordering::Relaxed)
    }

    /// Checks refused with [`Busy`] since the pool was made.
    pub fn busy_refusals(&self) -> u64 {
        self.busy.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    use argon2::{Algorithm, Argon2, Params, PasswordHasher, Version};

    /// A cheap Argon2id hash of "right password" (the pool, not Argon2, is tested).
    fn cheap_hash() -> String {
        let params = Params::new(64, 1, 1, None).unwrap();
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_with_salt(b"right password", b"0123456789abcdef")
            .unwrap()
            .to_string()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn beyond_running_and_waiting_checks_are_refused_without_computing() {
        let pool = Arc::new(CheckPool::new(1, 3));
        // Hold the only slot so every check has to wait.
        let held = Arc::clone(&pool.slots).acquire_owned().await.unwrap();
        let hash: Arc<str> = Arc::from(cheap_hash());
        let mut waiting = Vec::new();
        for _ in 0..3 {
            let (pool, hash) = (Arc::clone(&pool), Arc::clone(&hash));
            waiting.push(tokio::spawn(async move {
                pool.verify(hash, "right password".to_owned()).await
            }));
        }
        // Until all three wait, a fourth may still be let in: wait for them.
        while pool.waiting.load(Ordering::Relaxed) < 3 {
            tokio::task::yield_now().await;
        }
        let refused = pool.verify(Arc::clone(&hash), "x".to_owned()).await;
        assert_eq!(refused, Err(Busy));
        assert_eq!((pool.checks_run(), pool.busy_refusals()), (0, 1));
        drop(held);
        for task in waiting {
            assert_eq!(task.await.unwrap(), Ok(true));
        }
        assert_eq!((pool.checks_run(), pool.busy_refusals()), (3, 1));
        assert_eq!(pool.verify(hash, "wrong".to_owned()).await, Ok(false));
        assert_eq!(pool.checks_run(), 4);
    }
}
