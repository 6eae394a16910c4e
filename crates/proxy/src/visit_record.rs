//! Visit-log records produced by the proxy. A record is started when a request has
//! been decided (with the search terms read from its address, when it is visible),
//! follows the response body (or the tunnel) while it runs, and is handed to the
//! `RecordSink` complete when the body is finished or dropped, with bytes and duration
//! filled in. The sink never waits: it is the store's bounded queue.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use safegate_policy::{Decision, RequestTarget, Role};
use safegate_store::{IdentifiedBy, Outcome, Record, SeenAs};

/// Where finished records go. Implementations must not block.
pub trait RecordSink: Send + Sync + 'static {
    /// Takes one finished record.
    fn submit(&self, record: Record);

    /// New requests are to be refused because their visits cannot be recorded
    /// (`store.when_full = "refuse-traffic"` and the disk is full). Called on every
    /// request: it must be an atomic load, no lock, no disk.
    fn refusing(&self) -> bool {
        false
    }
}

/// A shared sink.
pub type SharedSink = Arc<dyn RecordSink>;

/// The computer's name for a client address, if known now. Called on every recorded
/// request: it must not wait (a look-up in a table kept current elsewhere).
pub type ComputerNamer = Arc<dyn Fn(IpAddr) -> Option<Arc<str>> + Send + Sync>;

/// The clock records are stamped with: the system clock, shifted by a fixed offset
/// (zero in service; an end-to-end test replays a school week by shifting it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordClock {
    offset_micros: i64,
}

impl RecordClock {
    /// The system clock shifted by `offset_micros` (negative: into the past).
    pub fn shifted(offset_micros: i64) -> Self {
        Self { offset_micros }
    }

    /// Now, in Unix microseconds.
    pub fn now_micros(self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .saturating_add_signed(self.offset_micros)
    }
}

/// What describes a request before it is answered.
pub(crate) struct RequestFacts<'a> {
    pub(crate) client: SocketAddr,
    pub(crate) user: Option<&'a str>,
    pub(crate) role: Role,
    pub(crate) group: Option<&'a str>,
    pub(crate) identified_by: IdentifiedBy,
    pub(crate) method: &'a str,
    pub(crate) scheme: &'static str,
    pub(crate) target: &'a RequestTarget,
    pub(crate) port: u16,
    pub(crate) decision: &'a Decision,
    pub(crate) seen_as: SeenAs,
    pub(crate) user_agent: Option<&'a str>,
}

impl RequestFacts<'_> {
    /// The record as far as it is known at decision time, search terms and the
    /// computer's name included.
    pub(crate) fn record(&self, clock: RecordClock, names: Option<&ComputerNamer>) -> Record {
        let host = self.target.host.as_str();
        Record {
            at_unix_micros: clock.now_micros(),
            user: self.user.map(str::to_owned),
            role: self.role.as_str().to_owned(),
            group: self.group.map(str::to_owned),
            client: self.client.ip(),
            identified_by: self.identified_by,
            method: self.method.to_owned(),
            scheme: self.scheme.to_owned(),
            host: host.to_owned(),
            port: self.port,
            path: self.target.path.clone(),
            categories: self.decision.categories.clone(),
            outcome: if self.decision.is_blocked() {
                Outcome::Blocked
            } else {
                Outcome::Allowed
            },
            rule: self.decision.rule.clone(),
            status: 0,
            bytes_up: 0,
            bytes_down: 0,
            duration_micros: 0,
            search: self
                .target
                .path
                .as_deref()
                .and_then(|path| safegate_activity::extract(host, path)),
            seen_as: self.seen_as,
            user_agent: self.user_agent.map(str::to_owned),
            failure: None,
            computer: names
                .and_then(|names| names(self.client.ip()))
                .map(|name| name.to_string()),
            content: None,
        }
    }
}

/// Which way bytes go through a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Client → origin.
    Up,
    /// Origin → client.
    Down,
}

/// Bytes a tunnel has relayed so far, each way. The relay adds to it as each write
/// completes; the tunnel's record reads it when it is submitted, so the counts are
/// right however the tunnel ended (both sides closed, idle timeout, an error, or its
/// task cut off).
#[derive(Debug, Default)]
pub(crate) struct TunnelBytes {
    up: AtomicU64,
    down: AtomicU64,
}

impl TunnelBytes {
    /// Counts `bytes` delivered in `direction`.
    pub(crate) fn add(&self, direction: Direction, bytes: u64) {
        let counter = match direction {
            Direction::Up => &self.up,
            Direction::Down => &self.down,
        };
        counter.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Bytes delivered so far: (client → origin, origin → client).
    pub(crate) fn totals(&self) -> (u64, u64) {
        (
            self.up.load(Ordering::Relaxed),
            self.down.load(Ordering::Relaxed),
        )
    }
}

/// A record that is submitted when dropped, with the bytes counted meanwhile.
pub(crate) struct PendingRecord {
    record: Option<Record>,
    sink: SharedSink,
    started: Instant,
    /// Request body bytes, counted by the upstream body wrapper.
    pub(crate) bytes_up: Arc<AtomicU64>,
    bytes_down: u64,
    /// A tunnel's counters; when set, they are the record's bytes.
    tunnel: Option<Arc<TunnelBytes>>,
}

impl PendingRecord {
    pub(crate) fn new(record: Record, sink: SharedSink, started: Instant) -> Self {
        Self {
            record: Some(record),
            sink,
            started,
            bytes_up: Arc::new(AtomicU64::new(0)),
            bytes_down: 0,
            tunnel: None,
        }
    }

    /// Adds bytes sent to the client.
    pub(crate) fn add_down(&mut self, bytes: u64) {
        self.bytes_down += bytes;
    }

    /// Sets the status sent to the client; a failure kind marks the site unreachable.
    pub(crate) fn finish(&mut self, status: u16, failure: Option<&str>) {
        if let Some(record) = &mut self.record {
            record.status = status;
            if let Some(kind) = failure {
                record.outcome = Outcome::Failed;
                record.failure = Some(kind.to_owned());
            }
        }
    }

    /// Marks the request blocked by a later decision (a file rule on the response).
    pub(crate) fn block(&mut self, decision: &Decision) {
        if let Some(record) = &mut self.record {
            record.outcome = Outcome::Blocked;
            record.rule.clone_from(&decision.rule);
            record.categories.clone_from(&decision.categories);
        }
    }

    /// What content analysis found on the page.
    pub(crate) fn content(&mut self, score: safegate_store::ContentScore) {
        if let Some(record) = &mut self.record {
            record.content = Some(score);
        }
    }

    /// Drops the record without submitting it (a decrypted tunnel's CONNECT, whose
    /// requests inside are recorded instead).
    pub(crate) fn discard(mut self) {
        self.record = None;
    }

    /// Takes the record's bytes from a tunnel's counters, read when it is submitted.
    pub(crate) fn follow_tunnel(&mut self, bytes: Arc<TunnelBytes>) {
        self.tunnel = Some(bytes);
    }
}

impl Drop for PendingRecord {
    fn drop(&mut self) {
        if let Some(mut record) = self.record.take() {
            (record.bytes_up, record.bytes_down) = match &self.tunnel {
                Some(tunnel) => tunnel.totals(),
                None => (self.bytes_up.load(Ordering::Relaxed), self.bytes_down),
            };
            record.duration_micros =
                u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.sink.submit(record);
        }
    }
}
