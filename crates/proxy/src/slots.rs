//! Places under the connection limits: `proxy.max_connections` over all listeners and
//! `proxy.max_connections_per_client` per client address.
//!
//! A connection takes a [`Slot`] when it is accepted and holds it in its
//! [`ClientContext`](crate::intake::ClientContext); a tunnel or upgrade relay that
//! outlives the HTTP connection it came from takes a clone of the `Arc`, so an open
//! tunnel keeps its place until it closes. The per-client count is a map behind one
//! lock, touched only on accept and close, never per request.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The connection limits every listener shares.
pub(crate) struct Limits {
    global: Arc<Semaphore>,
    /// `proxy.max_connections_per_client`; 0 is no limit.
    per_client_max: u32,
    per_client: Mutex<HashMap<IpAddr, u32>>,
}

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `proxy.max_connections`.
    Global,
    /// `proxy.max_connections_per_client`.
    PerClient,
}

impl Limits {
    pub(crate) fn new(max_connections: usize, max_connections_per_client: usize) -> Arc<Self> {
        Arc::new(Self {
            global: Arc::new(Semaphore::new(max_connections)),
            per_client_max: u32::try_from(max_connections_per_client).unwrap_or(u32::MAX),
            per_client: Mutex::new(HashMap::new()),
        })
    }

    /// A place for a new connection from `client`, or the limit that refuses it.
    pub(crate) fn admit(self: &Arc<Self>, client: IpAddr) -> Result<Slot, Refused> {
        let permit = Arc::clone(&self.global)
            .try_acquire_owned()
            .map_err(|_| Refused::Global)?;
        if self.per_client_max == 0 {
            return Ok(Slot {
                _permit: permit,
                client: None,
            });
        }
        let mut counts = self
            .per_client
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(client).or_insert(0);
        if *count >= self.per_client_max {
            return Err(Refused::PerClient);
        }
        *count += 1;
        Ok(Slot {
            _permit: permit,
            client: Some((Arc::clone(self), client)),
        })
    }

    fn release(&self, client: IpAddr) {
        let mut counts = self
            .per_client
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&client) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&client);
            }
        }
    }
}

/// One connection's place under the limits, given back when dropped.
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    /// The per-client count to give back to, when that limit is on.
    client: Option<(Arc<Limits>, IpAddr)>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((limits, client)) = &self.client {
            limits.release(*client);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn places_are_counted_overall_and_per_client() {
        let limits = Limits::new(3, 2);
        let a = IpAddr::from([10, 0, 0, 1]);
        let b = IpAddr::from([10, 0, 0, 2]);
        let first = limits.admit(a).unwrap();
        let _second = limits.admit(a).unwrap();
        assert_eq!(limits.admit(a).err(), Some(Refused::PerClient));
        let other = limits.admit(b).unwrap();
        assert_eq!(limits.admit(b).err(), Some(Refused::Global));
        drop(first);
        assert!(limits.admit(a).is_ok());
        drop(other);
        // A refused connection gave its global place back.
        assert_eq!(limits.global.available_permits(), 2);
    }

    #[test]
    fn zero_is_no_per_client_limit() {
        let limits = Limits::new(10, 0);
        let a = IpAddr::from([10, 0, 0, 1]);
        let held: Vec<_> = (0..10).map(|_| limits.admit(a).unwrap()).collect();
        assert_eq!(limits.admit(a).err(), Some(Refused::Global));
        drop(held);
        assert!(limits.per_client.lock().unwrap().is_empty());
    }
}
