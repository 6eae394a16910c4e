//! Test kit for SafeGate's end-to-end tests: a real origin (hyper, plain and TLS), a
//! fake DNS server, the SafeGate binary as a child process, and raw-socket helpers.
//! Everything listens on 127.0.0.1 only and stops when dropped.

#![allow(dead_code)]

pub mod block_page;
pub mod browser;
pub mod clickhouse;
pub mod dns;
pub mod files;
pub mod haproxy;
pub mod kdc;
pub mod oidc;
pub mod origin;
pub mod pages;
pub mod process;
pub mod raw;
pub mod receivers;
pub mod slapd;

use std::future::Future;
use std::time::Duration;

/// Upper bound for any single test; a hung test fails instead of blocking CI.
pub const TEST_LIMIT: Duration = Duration::from_secs(60);

/// Runs a test body with the global time limit.
pub async fn bounded<F: Future<Output = ()>>(body: F) {
    if tokio::time::timeout(TEST_LIMIT, body).await.is_err() {
        panic!("test did not finish within {TEST_LIMIT:?}");
    }
}

/// Deterministic test payload of `len` bytes (not compressible, not all zeros).
pub fn payload(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x9E37_79B9 ^ len as u32;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect()
}
