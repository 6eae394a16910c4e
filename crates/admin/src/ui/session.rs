//! Signed-in sessions: a random 256-bit id in an `HttpOnly`, `SameSite=Strict` cookie
//! (`Secure` behind TLS), idle and absolute time-outs, a CSRF token per session, and
//! the user's generation so that a password change, a role change, disabling or
//! removing the account ends the session at its next request. Sessions live in memory:
//! a restart signs everyone out.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use safegate_store::Permission;
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "safegate_session";

/// The pre-session cookie whose value the sign-in form must repeat (login CSRF).
pub const LOGIN_COOKIE: &str = "safegate_login";

/// Most sessions kept at once; the oldest idle one is ended to make room.
const MAX_SESSIONS: usize = 10_000;

/// 32 random bytes, URL-safe base64: session ids and CSRF tokens.
pub fn random_token() -> Option<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).ok()?;
    Some(URL_SAFE_NO_PAD.encode(bytes))
}

/// Whether two secrets are equal, in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A signed-in person, as the pages see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The user name.
    pub user: String,
    /// The display name, when set.
    pub display_name: Option<String>,
    /// What the user may do.
    pub permissions: BTreeSet<Permission>,
    /// The token every state-changing form and API call must carry.
    pub csrf: String,
    /// The user's generation when they signed in.
    pub generation: u64,
    /// Two-factor sign-in is required and not set up yet: only enrolment is open.
    pub must_enrol: bool,
    /// Who checked the sign-in.
    pub source: SignInSource,
}

/// Who checked a sign-in: SafeGate's own users, or the school's directory or
/// identity provider (then `generation` is 0 and the session ends when SafeGate holds
/// a disabled user of that name, e.g. one `users sync` found gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInSource {
    /// A SafeGate user's password (and code).
    Local,
    /// The school's LDAP directory or Active Directory (`[auth.ldap]`).
    Directory,
    /// An OpenID Connect provider (`[admin.oidc]`).
    OpenId,
}

impl Session {
    /// Whether the user holds `permission`.
    pub fn may(&self, permission: Permission) -> bool {
        self.permissions.contains(&permission)
    }

    /// The name to greet the user with.
    pub fn shown_name(&self) -> &str {
        self.display_name.as_deref().unwrap_or(&self.user)
    }
}

struct Entry {
    session: Session,
    created: Instant,
    last_seen: Instant,
}

/// How long sessions last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Ended after this long without a request.
    pub idle: Duration,
    /// Ended this long after sign-in, whatever happens.
    pub absolute: Duration,
}

/// Every live session.
pub struct Sessions {
    limits: SessionLimits,
    entries: Mutex<HashMap<String, Entry>>,
}

impl Sessions {
    /// No sessions yet.
    pub fn new(limits: SessionLimits) -> Self {
        Self {
            limits,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a session; returns its id (the cookie value), or None when no random
    /// id could be made.
    pub fn start(&self, session: Session) -> Option<String> {
        let id = random_token()?;
        let now = Instant::now();
        let mut entries = self.entries();
        self.expire(&mut entries, now);
        if entries.len() >= MAX_SESSIONS
            && let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, entry)| entry.last_seen)
                .map(|(id, _)| id.clone())
        {
            entries.remove(&oldest);
        }
        entries.insert(
            id.clone(),
            Entry {
                session,
                created: now,
                last_seen: now,
            },
        );
        Some(id)
    }

    /// The live session with this id, marking it used; expired ones are ended.
    pub fn touch(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut entries = self.entries();
        let entry = entries.get_mut(id)?;
        if self.expired(entry, now) {
            entries.remove(id);
            return None;
        }
        entry.last_seen = now;
        Some(entry.session.clone())
    }

    /// Marks the session's account as enrolled in two-factor sign-in.
    pub fn enrolled(&self, id: &str) {
        if let Some(entry) = self.entries().get_mut(id) {
            entry.session.must_enrol = false;
        }
    }

    /// Ends one session (sign-out, or the account changed).
    pub fn end(&self, id: &str) {
        self.entries().remove(id);
    }

    /// Live sessions.
    pub fn count(&self) -> usize {
        let mut entries = self.entries();
        self.expire(&mut entries, Instant::now());
        entries.len()
    }

    fn expired(&self, entry: &Entry, now: Instant) -> bool {
        now.duration_since(entry.last_seen) >= self.limits.idle
            || now.duration_since(entry.created) >= self.limits.absolute
    }

    fn expire(&self, entries: &mut HashMap<String, Entry>, now: Instant) {
        entries.retain(|_, entry| !self.expired(entry, now));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn session() -> Session {
        Session {
            user: "head".into(),
            display_name: None,
            permissions: BTreeSet::from([Permission::Reports]),
            csrf: random_token().unwrap(),
            generation: 1,
            must_enrol: false,
            source: SignInSource::Local,
        }
    }

    #[test]
    fn sessions_end_when_idle_or_too_old() {
        let sessions = Sessions::new(SessionLimits {
            idle: Duration::from_millis(50),
            absolute: Duration::from_secs(60),
        });
        let id = sessions.start(session()).unwrap();
        assert_eq!(sessions.touch(&id).unwrap().user, "head");
        std::thread::sleep(Duration::from_millis(80));
        assert!(sessions.touch(&id).is_none());

        let sessions = Sessions::new(SessionLimits {
            idle: Duration::from_secs(60),
            absolute: Duration::from_millis(50),
        });
        let id = sessions.start(session()).unwrap();
        std::thread::sleep(Duration::from_millis(80));
        assert!(sessions.touch(&id).is_none());
        assert_eq!(sessions.count(), 0);
    }

    #[test]
    fn ids_are_random_and_unknown_ids_fail() {
        let sessions = Sessions::new(SessionLimits {
            idle: Duration::from_secs(60),
            absolute: Duration::from_secs(60),
        });
        let a = sessions.start(session()).unwrap();
        let b = sessions.start(session()).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(sessions.touch("nope").is_none());
        sessions.end(&a);
        assert!(sessions.touch(&a).is_none());
        assert!(sessions.touch(&b).is_some());
        assert!(same_secret(&b, &b.clone()));
        assert!(!same_secret(&a, &b));
    }
}
