//! The login portal's state: which client address is logged in as which user
//! ([`PortalSessions`]), the anti-forgery token its forms carry ([`TokenKey`]), and the
//! "one person, one computer" events ([`ConcurrentLoginEvent`]).
//!
//! **Sessions** live in memory only (a restart logs everybody out): 16 shards keyed by
//! the client address, each a `Mutex` around a hash map held for one probe and one
//! store of the last-activity time (no lock at all while nobody is logged in). A session names the user and the user's
//! generation when it began; a lookup that finds the user gone, disabled or changed
//! (new password) ends it at once, as does one that finds it idle for longer than
//! `auth.portal_idle_timeout` (a periodic sweep ends the ones nobody looks up).
//!
//! **Tokens** are `<expiry>.<MAC>` where the MAC is keyed BLAKE2b (a random key per
//! process) over the purpose, the client address and the expiry: a form fetched by one
//! address cannot be posted from another, nor after [`TOKEN_LIFETIME`], nor forged by a
//! page on another site (it cannot read SafeGate's form). A restart invalidates every
//! token, which costs a reload of the login page.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use blake2::Blake2bMac512;
use blake2::digest::{KeyInit, Mac};

/// How long a login or logout form's token is accepted.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(60 * 60);

/// Concurrent-login events kept in memory ([`super::Authenticator::concurrent_login_events`]).
pub const EVENTS_KEPT: usize = 1000;

const SHARDS: usize = 16;

/// What a token is for: a login token is not a logout token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPurpose {
    /// The login form.
    Login,
    /// The logout form.
    Logout,
    /// The block page's review form (so another site cannot post review requests
    /// in a pupil's name).
    Review,
}

impl TokenPurpose {
    fn label(self) -> &'static [u8] {
        match self {
            Self::Login => b"safegate-login\0",
            Self::Logout => b"safegate-logout\0",
            Self::Review => b"safegate-review\0",
        }
    }
}

/// The per-process key that signs form tokens.
pub struct TokenKey([u8; 32]);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(<hidden>)")
    }
}

impl TokenKey {
    /// A random key (the system's random source; should it fail, std's randomly seeded
    /// hasher stands in, which is still unknown outside this process).
    pub fn random() -> Self {
        let mut key = [0u8; 32];
        if getrandom::fill(&mut key).is_err() {
            for (index, chunk) in key.chunks_mut(8).enumerate() {
                let value = RandomState::new().hash_one(index);
                chunk.copy_from_slice(&value.to_le_bytes());
            }
        }
        Self(key)
    }

    fn mac(&self, purpose: TokenPurpose, client: IpAddr, expires: u64) -> Option<Blake2bMac512> {
        let mut mac = Blake2bMac512::new_from_slice(&self.0).ok()?;
        mac.update(purpose.label());
        match client.to_canonical() {
            IpAddr::V4(v4) => mac.update(&v4.octets()),
            IpAddr::V6(v6) => mac.update(&v6.octets()),
        }
        mac.update(&expires.to_be_bytes());
        Some(mac)
    }

    /// A token for a `purpose` form shown to `client`, valid for [`TOKEN_LIFETIME`]
    /// from `now`.
    pub fn issue(&self, purpose: TokenPurpose, client: IpAddr, now: SystemTime) -> String {
        let expires = unix_seconds(now) + TOKEN_LIFETIME.as_secs();
        let tag = self
            .mac(purpose, client, expires)
            .map(|mac| mac.finalize().into_bytes().to_vec())
            .unwrap_or_default();
        let mut token = format!("{expires}.");
        for byte in tag {
            token.push_str(&format!("{byte:02x}"));
        }
        token
    }

    /// Whether `token` was issued by this process for a `purpose` form shown to
    /// `client` and has not expired at `now`. Compared in constant time.
    pub fn check(
        &self,
        purpose: TokenPurpose,
        client: IpAddr,
        token: &str,
        now: SystemTime,
    ) -> bool {
        let Some((expires, tag)) = token.split_once('.') else {
            return false;
        };
        let Ok(expires) = expires.parse::<u64>() else {
            return false;
        };
        let now = unix_seconds(now);
        if expires <= now || expires > now + TOKEN_LIFETIME.as_secs() {
            return false;
        }
        let Some(tag) = decode_hex(tag) else {
            return false;
        };
        self.mac(purpose, client, expires)
            .is_some_and(|mac| mac.verify_slice(&tag).is_ok())
    }
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 128 || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// One client address logged in through the portal.
#[derive(Debug, Clone)]
pub struct Session {
    /// The user.
    pub user: Arc<str>,
    /// The user's generation at log-in; a change ends the session.
    pub generation: u64,
    /// The last request from the address.
    pub last_activity: Instant,
}

/// Client address → portal session, in 16 shards; see the module documentation.
pub struct PortalSessions {
    shards: Vec<Mutex<HashMap<IpAddr, Session>>>,
    /// Sessions held: while there are none, a lookup takes no lock.
    count: AtomicUsize,
    hasher: RandomState,
    idle_timeout: Duration,
}

impl std::fmt::Debug for PortalSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortalSessions")
            .field("sessions", &self.len())
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

/// Why a session was found ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lapsed {
    /// No traffic for longer than the idle timeout.
    Idle(Arc<str>),
    /// The user is gone, disabled or changed.
    UserChanged(Arc<str>),
}

/// Locks a shard; a poisoned lock still holds a usable map (every critical section
/// leaves it consistent).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl PortalSessions {
    /// No sessions; they lapse after `idle_timeout` without traffic.
    pub fn new(idle_timeout: Duration) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            count: AtomicUsize::new(0),
            hasher: RandomState::new(),
            idle_timeout,
        }
    }

    /// The idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    fn shard(&self, client: IpAddr) -> &Mutex<HashMap<IpAddr, Session>> {
        let index = self.hasher.hash_one(client) as usize % SHARDS;
        &self.shards[index]
    }

    /// The session of `client`, its last activity set to `now`, if it is still valid:
    /// `current(user)` gives the user's generation now, or `None` when the user cannot
    /// browse (gone or disabled). An ended session is removed and reported.
    pub fn touch(
        &self,
        client: IpAddr,
        now: Instant,
        current: impl FnOnce(&str) -> Option<u64>,
    ) -> Result<Option<Arc<str>>, Lapsed> {
        if self.count.load(Ordering::Relaxed) == 0 {
            return Ok(None);
        }
        let client = client.to_canonical();
        let mut shard = lock(self.shard(client));
        let Some(session) = shard.get_mut(&client) else {
            return Ok(None);
        };
        if now.saturating_duration_since(session.last_activity) > self.idle_timeout {
            let user = Arc::clone(&session.user);
            shard.remove(&client);
            self.count.fetch_sub(1, Ordering::Relaxed);
            return Err(Lapsed::Idle(user));
        }
        if current(&session.user) != Some(session.generation) {
            let user = Arc::clone(&session.user);
            shard.remove(&client);
            self.count.fetch_sub(1, Ordering::Relaxed);
            return Err(Lapsed::UserChanged(user));
        }
        session.last_activity = now;
        Ok(Some(Arc::clone(&session.user)))
    }

    /// Binds `client` to `user` (replacing whatever it was bound to).
    pub fn bind(&self, client: IpAddr, user: Arc<str>, generation: u64, now: Instant) {
        let client = client.to_canonical();
        let mut shard = lock(self.shard(client));
        let previous = shard.insert(
            client,
            Session {
                user,
                generation,
                last_activity: now,
            },
        );
        if previous.is_none() {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Ends `client`'s session; returns its user.
    pub fn remove(&self, client: IpAddr) -> Option<Arc<str>> {
        let client = client.to_canonical();
        let removed = lock(self.shard(client)).remove(&client)?;
        self.count.fetch_sub(1, Ordering::Relaxed);
        Some(removed.user)
    }

    /// The other addresses where `user` has a session that has not lapsed at `now`,
    /// with the time since their last activity.
    pub fn elsewhere(&self, user: &str, client: IpAddr, now: Instant) -> Vec<(IpAddr, Duration)> {
        let client = client.to_canonical();
        let mut found = Vec::new();
        for shard in &self.shards {
            for (address, session) in lock(shard).iter() {
                let idle = now.saturating_duration_since(session.last_activity);
                if *address != client && &*session.user == user && idle <= self.idle_timeout {
                    found.push((*address, idle));
                }
            }
        }
        found
    }

    /// Removes every session idle for longer than the timeout at `now`; returns them.
    pub fn sweep(&self, now: Instant) -> Vec<(IpAddr, Arc<str>)> {
        let mut lapsed = Vec::new();
        for shard in &self.shards {
            lock(shard).retain(|address, session| {
                let keep =
                    now.saturating_duration_since(session.last_activity) <= self.idle_timeout;
                if !keep {
                    lapsed.push((*address, Arc::clone(&session.user)));
                }
                keep
            });
        }
        self.count.fetch_sub(lapsed.len(), Ordering::Relaxed);
        lapsed
    }

    /// Sessions held now (lapsed ones included until looked up or swept).
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How a user came to be seen at a second address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginSource {
    /// A portal log-in.
    Portal,
    /// Proxy credentials (`Proxy-Authorization`), never blocked: year-group log-ins
    /// are shared by a class.
    ProxyAuth,
}

/// What was done about a second address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConcurrentOutcome {
    /// Both stand (`allow`, and every proxy-credential case).
    Allowed,
    /// The new log-in was refused (`deny`).
    Denied,
    /// The old session was ended (`latest-wins`).
    Replaced,
}

/// A user logged in (or seen) at a second address while still at another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConcurrentLoginEvent {
    /// When.
    pub at: SystemTime,
    /// The user.
    pub user: Arc<str>,
    /// Where the user already was.
    pub old_address: IpAddr,
    /// The new address.
    pub new_address: IpAddr,
    /// Portal or proxy credentials.
    pub source: LoginSource,
    /// What was done.
    pub outcome: ConcurrentOutcome,
}

/// The last [`EVENTS_KEPT`] concurrent-login events.
#[derive(Debug, Default)]
pub struct EventLog(Mutex<VecDeque<ConcurrentLoginEvent>>);

impl EventLog {
    /// Keeps `event`, dropping the oldest beyond [`EVENTS_KEPT`].
    pub fn push(&self, event: ConcurrentLoginEvent) {
        let mut events = lock(&self.0);
        if events.len() >= EVENTS_KEPT {
            events.pop_front();
        }
        events.push_back(event);
    }

    /// The events kept, oldest first.
    pub fn snapshot(&self) -> Vec<ConcurrentLoginEvent> {
        lock(&self.0).iter().cloned().collect()
    }
}

/// Where each proxy-credential user was last seen, to notice one user at two
/// addresses at once; each pair is reported at most once per `window`.
#[derive(Debug)]
pub(crate) struct SeenAt {
    window: Duration,
    shards: Vec<Mutex<SeenShard>>,
    hasher: RandomState,
}

#[derive(Debug, Default)]
struct SeenShard {
    last: HashMap<Arc<str>, (IpAddr, Instant)>,
    reported: HashMap<(Arc<str>, IpAddr, IpAddr), Instant>,
}

/// Most reported pairs remembered per shard before old ones are forgotten.
const REPORTED_PER_SHARD: usize = 4096;

impl SeenAt {
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window,
            shards: (0..SHARDS)
                .map(|_| Mutex::new(SeenShard::default()))
                .collect(),
            hasher: RandomState::new(),
        }
    }

    /// Notes `user` at `client`; returns the other address when this is a new pair
    /// seen within the window (to be reported).
    pub(crate) fn note(&self, user: &Arc<str>, client: IpAddr, now: Instant) -> Option<IpAddr> {
        let client = client.to_canonical();
        let index = self.hasher.hash_one(&**user) as usize % SHARDS;
        let mut shard = lock(&self.shards[index]);
        let previous = shard.last.insert(Arc::clone(user), (client, now));
        let (old, seen) = previous?;
        if old == client || now.saturating_duration_since(seen) > self.window {
            return None;
        }
        let (low, high) = if old < client {
            (old, client)
        } else {
            (client, old)
        };
        let key = (Arc::clone(user), low, high);
        if let Some(at) = shard.reported.get(&key)
            && now.saturating_duration_since(*at) <= self.window
        {
            return None;
        }
        if shard.reported.len() >= REPORTED_PER_SHARD {
            let window = self.window;
            shard
                .reported
                .retain(|_, at| now.saturating_duration_since(*at) <= window);
            if shard.reported.len() >= REPORTED_PER_SHARD {
                shard.reported.clear();
            }
        }
        shard.reported.insert(key, now);
        Some(old)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn tokens_are_bound_to_address_purpose_time_and_key() {
        let key = TokenKey::random();
        let now = SystemTime::now();
        let client = ip("10.0.0.5");
        let token = key.issue(TokenPurpose::Login, client, now);
        assert!(key.check(TokenPurpose::Login, client, &token, now));
        assert!(key.check(
            TokenPurpose::Login,
            ip("::ffff:10.0.0.5"),
            &token,
            now + Duration::from_secs(60)
        ));
        assert!(!key.check(TokenPurpose::Login, ip("10.0.0.6"), &token, now));
        assert!(!key.check(TokenPurpose::Logout, client, &token, now));
        assert!(!key.check(
            TokenPurpose::Login,
            client,
            &token,
            now + TOKEN_LIFETIME + Duration::from_secs(1)
        ));
        assert!(!TokenKey::random().check(TokenPurpose::Login, client, &token, now));
        // Tampered: another expiry with the same tag, a flipped tag digit, garbage.
        let (expires, tag) = token.split_once('.').unwrap();
        let later = format!("{}.{tag}", expires.parse::<u64>().unwrap() - 1);
        assert!(!key.check(TokenPurpose::Login, client, &later, now));
        let mut flipped = token.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert!(!key.check(TokenPurpose::Login, client, &flipped, now));
        for garbage in ["", ".", "x.y", "1.", &format!("{expires}.é{}", &tag[2..])] {
            assert!(
                !key.check(TokenPurpose::Login, client, garbage, now),
                "{garbage}"
            );
        }
        // A token claiming a far expiry is refused even with a right MAC length.
        let far = format!("{}.{tag}", u64::MAX);
        assert!(!key.check(TokenPurpose::Login, client, &far, now));
    }

    #[test]
    fn sessions_lapse_when_idle_or_when_the_user_changes() {
        let sessions = PortalSessions::new(Duration::from_secs(60));
        let start = Instant::now();
        let a = ip("10.0.0.1");
        let b = ip("10.0.0.2");
        let user: Arc<str> = Arc::from("alice");
        sessions.bind(a, Arc::clone(&user), 1, start);
        assert_eq!(sessions.touch(b, start, |_| Some(1)), Ok(None));
        let later = start + Duration::from_secs(50);
        assert_eq!(
            sessions.touch(a, later, |_| Some(1)),
            Ok(Some(Arc::clone(&user)))
        );
        // Touched at 50 s: still valid at 100 s.
        let again = start + Duration::from_secs(100);
        assert_eq!(
            sessions.touch(a, again, |_| Some(1)),
            Ok(Some(Arc::clone(&user)))
        );
        assert_eq!(
            sessions.touch(a, again + Duration::from_secs(61), |_| Some(1)),
            Err(Lapsed::Idle(Arc::clone(&user)))
        );
        assert!(sessions.is_empty());

        sessions.bind(a, Arc::clone(&user), 1, start);
        assert_eq!(
            sessions.touch(a, start, |_| Some(2)),
            Err(Lapsed::UserChanged(Arc::clone(&user)))
        );
        sessions.bind(a, Arc::clone(&user), 1, start);
        assert_eq!(
            sessions.touch(a, start, |_| None),
            Err(Lapsed::UserChanged(Arc::clone(&user)))
        );

        sessions.bind(a, Arc::clone(&user), 1, start);
        sessions.bind(b, Arc::clone(&user), 1, start + Duration::from_secs(30));
        assert_eq!(
            sessions.elsewhere("alice", b, start + Duration::from_secs(40)),
            [(a, Duration::from_secs(40))]
        );
        assert_eq!(
            sessions.elsewhere("alice", b, start + Duration::from_secs(61)),
            []
        );
        assert_eq!(
            sessions.sweep(start + Duration::from_secs(61)),
            [(a, Arc::clone(&user))]
        );
        assert_eq!(sessions.len(), 1);
        assert_eq!(sessions.remove(b), Some(user));
        assert!(sessions.is_empty());
    }

    #[test]
    fn a_pair_is_reported_once_per_window() {
        let seen = SeenAt::new(Duration::from_secs(60));
        let start = Instant::now();
        let user: Arc<str> = Arc::from("year6");
        assert_eq!(seen.note(&user, ip("10.0.0.1"), start), None);
        assert_eq!(seen.note(&user, ip("10.0.0.1"), start), None);
        assert_eq!(
            seen.note(&user, ip("10.0.0.2"), start),
            Some(ip("10.0.0.1"))
        );
        assert_eq!(seen.note(&user, ip("10.0.0.1"), start), None);
        assert_eq!(seen.note(&user, ip("10.0.0.2"), start), None);
        let later = start + Duration::from_secs(61);
        assert_eq!(seen.note(&user, ip("10.0.0.1"), later), None);
        assert_eq!(
            seen.note(&user, ip("10.0.0.2"), later + Duration::from_secs(1)),
            Some(ip("10.0.0.1"))
        );
    }

    #[test]
    fn the_event_log_keeps_the_last_ones() {
        let log = EventLog::default();
        for n in 0..(EVENTS_KEPT + 5) {
            log.push(ConcurrentLoginEvent {
                at: SystemTime::UNIX_EPOCH + Duration::from_secs(n as u64),
                user: Arc::from("u"),
                old_address: ip("10.0.0.1"),
                new_address: ip("10.0.0.2"),
                source: LoginSource::Portal,
                outcome: ConcurrentOutcome::Allowed,
            });
        }
        let events = log.snapshot();
        assert_eq!(events.len(), EVENTS_KEPT);
        assert_eq!(
            events[0].at,
            SystemTime::UNIX_EPOCH + Duration::from_secs(5)
        );
    }
}
