//! Who a client is: proxy authentication (`Proxy-Authorization: Basic`) against the
//! in-memory [`UserTable`], and address bindings (`[[auth.bindings]]`).
//!
//! An explicit-proxy request is identified, in this order (the login portal,
//! [`portal`], adds its step between 1 and 2):
//! 1. **credentials**, when sent: a cache hit or an Argon2 verification makes the
//!    client that user (`IdentifiedBy::ProxyAuth`); wrong, unknown, disabled or
//!    malformed credentials get `407` whatever `auth.required` says (the client asked
//!    to log in, so it is asked again), as does a client locked by the failure limits;
//! 2. the first **binding** whose network holds the client address: its role and
//!    group, or its user's (`IdentifiedBy::Address`); a binding to a user that does not
//!    exist or is disabled gives nothing, and the client goes on to step 3;
//! 3. `auth.required = true`: `407` with `Proxy-Authenticate: Basic realm="SafeGate"`;
//!    otherwise the policy's default role (`IdentifiedBy::Default`).
//!
//! Transparent clients cannot be asked for credentials: they are identified by their
//! portal log-in, then steps 2 and 3 without the `407`. A portal log-in
//! ([`Authenticator::portal_login`]) shares the failure limits and the bounded Argon2
//! path with proxy credentials, and applies `auth.concurrent_logins` (one person, one
//! computer); every user seen at a second address is an event
//! ([`Authenticator::concurrent_login_events`], counted, logged as a warning).
//!
//! Costs: nothing here touches the disk. A request with credentials that were verified
//! before costs a SipHash of the header's token, a read lock on one of 16 cache shards
//! and a hash-map probe in the user table ([`cache`]), plus a short lock on one of 16
//! shards noting where the user was seen (for the second-address events). A miss decodes the header and,
//! unless the client or the user is locked ([`rate_limit`]; a check in flight counts
//! against both before it runs), runs Argon2 through the process's one bounded
//! [`CheckPool`] (shared with the admin sign-in; beyond its bound: `503`), so a
//! password-guessing storm cannot take the cores or the memory from the proxy.
//!
//! Log lines: every verified log-in (`proxy log-in`, info: once per credential-cache
//! lifetime, the audit trail), every failure (info, with client address and user
//! name, never the password), every lock switched on (warn). Counters: [`AuthStats`].

mod basic;
mod cache;
mod config;
pub mod directory;
mod identity;
pub mod kerberos;
mod negotiate;
pub mod portal;
mod rate_limit;
pub mod store_users;
mod table;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::header::{HeaderValue, PROXY_AUTHENTICATE, RETRY_AFTER};
use http::{Response, StatusCode};
use safegate_store::IdentifiedBy;
use safegate_store::password::CheckPool;
use tracing::{debug, info, warn};

pub use self::basic::Malformed;
pub use self::config::{AuthConfig, Binding, BindingConfig, ConcurrentLogins, Grant, PortalMode};
pub use self::directory::{
    AdminCheck, DIRECTORY_PASSWORD_MARK, Directory, DirectoryError, DirectoryPerson, DirectoryUser,
    GroupMapping, LdapConfig,
};
pub use self::identity::Identity;
pub use self::kerberos::{Kerberos, KerberosConfig, KerberosError};
pub use self::negotiate::ConnectionLogIn;
pub use self::portal::{ConcurrentLoginEvent, ConcurrentOutcome, LoginSource, TokenPurpose};
pub use self::table::{UserEntry, UserTable};

use self::cache::CredentialCache;
use self::portal::{EventLog, Lapsed, PortalSessions, SeenAt, TokenKey};
use self::rate_limit::{FailureLimiter, Locked, LockedOn, Reservation};
use crate::body::ResponseBody;
use crate::config::ConfigProblem;
use crate::error_page;

/// The realm browsers show in their log-in prompt.
pub const REALM: &str = "SafeGate";

/// The `Proxy-Authenticate` challenge.
const CHALLENGE: &str = "Basic realm=\"SafeGate\", charset=\"UTF-8\"";

/// Why a request was not let through by authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No credentials, no binding, and `auth.required` is on.
    #[error("no credentials and log-in is required")]
    Missing,
    /// The `Proxy-Authorization` header cannot be read.
    #[error("malformed Proxy-Authorization: {0}")]
    Malformed(Malformed),
    /// No such user.
    #[error("no such user")]
    UnknownUser,
    /// The user is disabled.
    #[error("the user is disabled")]
    Disabled,
    /// The password is wrong.
    #[error("wrong password")]
    WrongPassword,
    /// Too many failures from this client address; no check until the window closes.
    #[error("too many failed log-ins from this address")]
    AddressLocked {
        /// Until the window closes.
        retry_after: Duration,
    },
    /// Too many wrong passwords for this user; no check until the window closes.
    #[error("too many failed log-ins for this user")]
    UserLocked {
        /// Until the window closes.
        retry_after: Duration,
    },
    /// Too many log-ins are waiting for a password check.
    #[error("too many log-ins waiting for a password check")]
    Busy,
    /// The directory (`[auth.ldap]`) cannot be reached and the log-in was not verified
    /// recently enough to keep working without it.
    #[error("the directory cannot be reached")]
    DirectoryDown,
}

impl Refusal {
    /// The answer: `407` with the `Basic` challenge (`503` when busy), the reason in
    /// `x-safegate-reason`, and a short page saying why; `target` is the request's
    /// address (escaped on the page).
    pub fn response(&self, target: &str) -> Response<ResponseBody> {
        let (status, reason, explanation, retry_after) = match *self {
            Refusal::Missing => (
                StatusCode::PROXY_AUTHENTICATION_REQUIRED,
                "proxy-auth-required",
                "Log in with your school user name and password to use the web.".to_owned(),
                None,
            ),
            Refusal::Malformed(_) => (
                StatusCode::PROXY_AUTHENTICATION_REQUIRED,
                "proxy-auth-malformed",
                "Your browser sent log-in details SafeGate cannot read. Log in again with your \
                 school user name and password."
                    .to_owned(),
                None,
            ),
            Refusal::UnknownUser | Refusal::Disabled | Refusal::WrongPassword => (
                StatusCode::PROXY_AUTHENTICATION_REQUIRED,
                "proxy-auth-failed",
                "The user name or password was not accepted. Check them and try again; if it \
                 keeps happening, ask the school's IT support (the account may be disabled)."
                    .to_owned(),
                None,
            ),
            Refusal::AddressLocked { retry_after } | Refusal::UserLocked { retry_after } => (
                StatusCode::PROXY_AUTHENTICATION_REQUIRED,
                "proxy-auth-locked",
                format!(
                    "Too many failed log-ins {}. Log-ins are refused for {}; then try again \
                     with the right password.",
                    if matches!(self, Refusal::AddressLocked { .. }) {
                        "from this computer"
                    } else {
                        "for this user name"
                    },
                    minutes(retry_after)
                ),
                Some(retry_after.as_secs().max(1)),
            ),
            Refusal::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "proxy-auth-busy",
                "SafeGate is busy checking passwords. Try again in a moment.".to_owned(),
                Some(1),
            ),
            Refusal::DirectoryDown => (
                StatusCode::SERVICE_UNAVAILABLE,
                "proxy-auth-directory-down",
                "SafeGate cannot reach the school's directory to check your password. \
                 Try again in a minute; if it goes on, tell the IT technician."
                    .to_owned(),
                Some(30),
            ),
        };
        let mut response = error_page::page(status, reason, target, &explanation);
        let headers = response.headers_mut();
        if status == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
            headers.insert(PROXY_AUTHENTICATE, HeaderValue::from_static(CHALLENGE));
        }
        if let Some(seconds) = retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// "4 minutes", "1 minute", "30 seconds".
fn minutes(duration: Duration) -> String {
    let seconds = duration.as_secs().max(1);
    match seconds {
        1 => "1 second".to_owned(),
        2..60 => format!("{seconds} seconds"),
        60..120 => "1 minute".to_owned(),
        _ => format!("{} minutes", seconds.div_ceil(60)),
    }
}

/// Authentication counters since start ([`Authenticator::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuthStats {
    /// Requests whose credentials were verified before (no Argon2).
    pub cache_hits: u64,
    /// Requests with credentials not in the cache (or no longer valid there).
    pub cache_misses: u64,
    /// Passwords verified with Argon2 and right.
    pub verified: u64,
    /// Failed log-ins: wrong password, unknown or disabled user, malformed header.
    pub failed: u64,
    /// Log-ins refused without a check because the address or user was locked.
    pub rate_limited: u64,
    /// Requests without credentials answered `407` (`auth.required`).
    pub challenged: u64,
    /// Log-ins answered `503` because too many were waiting for a check.
    pub busy: u64,
    /// Portal log-ins that succeeded.
    pub portal_logins: u64,
    /// A user logged in (portal) or seen (proxy credentials) at a second address
    /// while still at another ([`Authenticator::concurrent_login_events`]).
    pub concurrent_logins: u64,
    /// Directory log-ins and admin sign-ins that found no directory server answering.
    pub directory_unreachable: u64,
}

#[derive(Default)]
struct Counters {
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    verified: AtomicU64,
    failed: AtomicU64,
    rate_limited: AtomicU64,
    challenged: AtomicU64,
    busy: AtomicU64,
    portal_logins: AtomicU64,
    concurrent_logins: AtomicU64,
    directory_unreachable: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What [`Authenticator::check`] found without waiting.
#[derive(Debug)]
pub enum Check {
    /// No `Proxy-Authorization` header.
    Anonymous,
    /// Credentials verified before: this user.
    Known(Identity),
    /// Refused (malformed, unknown or disabled user, locked).
    Refused(Refusal),
    /// The password must be verified: pass this to [`Authenticator::verify`].
    Verify(Verification),
}

/// A password to verify, counted against the failure limits until it is. `Debug`
/// leaves the password out.
pub struct Verification {
    peer: IpAddr,
    key: u64,
    target: Target,
    password: String,
    reservation: Reservation,
}

/// Whose password a [`Verification`] checks.
enum Target {
    /// A SafeGate user (Argon2).
    Local(Arc<UserEntry>),
    /// A person in the directory (`[auth.ldap]`), by the name given.
    Directory(Arc<str>),
    /// A Kerberos ticket (`Negotiate`), decoded.
    Kerberos(Vec<u8>),
}

impl Target {
    fn name(&self) -> &str {
        match self {
            Target::Local(entry) => &entry.name,
            Target::Directory(name) => name,
            Target::Kerberos(_) => "(Kerberos ticket)",
        }
    }
}

impl fmt::Debug for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verification")
            .field("peer", &self.peer)
            .field("user", &self.target.name())
            .field("password", &"<hidden>")
            .finish_non_exhaustive()
    }
}

/// Proxy authentication and address bindings for one proxy; see the module
/// documentation. `Default` is `[auth]`'s defaults with no user.
pub struct Authenticator {
    required: bool,
    bindings: Vec<Binding>,
    users: ArcSwap<UserTable>,
    cache: CredentialCache,
    limiter: Arc<FailureLimiter>,
    failure_window: Duration,
    checks: Arc<CheckPool>,
    counters: Counters,
    portal: PortalMode,
    concurrent_logins: ConcurrentLogins,
    sessions: PortalSessions,
    token_key: TokenKey,
    events: EventLog,
    seen: SeenAt,
    directory: Option<Arc<Directory>>,
    kerberos: Option<Arc<Kerberos>>,
}

impl Default for Authenticator {
    fn default() -> Self {
        Self::build(&AuthConfig::default(), Vec::new(), Arc::default())
    }
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("required", &self.required)
            .field("bindings", &self.bindings)
            .field("users", &self.users.load().len())
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator for `config`, with no users yet ([`Self::replace_users`]),
    /// checking passwords through `checks` (the process's one pool).
    pub fn new(config: &AuthConfig, checks: Arc<CheckPool>) -> Result<Self, Vec<ConfigProblem>> {
        let bindings = config.bindings()?;
        let directory = config
            .ldap
            .as_ref()
            .map(Directory::new)
            .transpose()
            .map_err(|e| vec![ConfigProblem::new("auth.ldap", e.to_string())])?;
        let kerberos = config
            .kerberos
            .as_ref()
            .map(Kerberos::new)
            .transpose()
            .map_err(|e| vec![ConfigProblem::new("auth.kerberos", e.to_string())])?;
        let mut authenticator = Self::build(config, bindings, checks);
        authenticator.directory = directory.map(Arc::new);
        authenticator.kerberos = kerberos.map(Arc::new);
        Ok(authenticator)
    }

    fn build(config: &AuthConfig, bindings: Vec<Binding>, checks: Arc<CheckPool>) -> Self {
        Self {
            required: config.required,
            bindings,
            users: ArcSwap::from_pointee(UserTable::default()),
            cache: CredentialCache::new(config.credential_cache_size, config.credential_cache_ttl),
            limiter: Arc::new(FailureLimiter::new(
                config.failure_window,
                config.max_failures_per_address,
                config.max_failures_per_user,
            )),
            failure_window: config.failure_window,
            checks,
            counters: Counters::default(),
            portal: config.portal,
            concurrent_logins: config.concurrent_logins,
            sessions: PortalSessions::new(config.portal_idle_timeout),
            token_key: TokenKey::random(),
            events: EventLog::default(),
            seen: SeenAt::new(config.credential_cache_ttl),
            directory: None,
            kerberos: None,
        }
    }

    /// Whether explicit-proxy clients without credentials or binding get `407`.
    pub fn required(&self) -> bool {
        self.required
    }

    /// Puts a new user table in force for every request from now on.
    pub fn replace_users(&self, users: UserTable) {
        self.users.store(Arc::new(users));
    }

    /// The user table in force.
    pub fn users(&self) -> Arc<UserTable> {
        self.users.load_full()
    }

    /// One line per user binding that gives nothing with the current table (the user
    /// does not exist or is disabled), for the start-up log.
    pub fn binding_warnings(&self) -> Vec<String> {
        let users = self.users.load();
        self.bindings
            .iter()
            .enumerate()
            .filter_map(|(index, binding)| {
                let Grant::User(name) = &binding.grant else {
                    return None;
                };
                let why = match users.get(name) {
                    None => "there is no such user",
                    Some(entry) if entry.disabled => "the user is disabled",
                    Some(_) => return None,
                };
                Some(format!(
                    "auth.bindings[{index}]: {} is bound to user {name}, but {why}; the binding \
                     gives nothing until the user exists and is enabled",
                    binding.network
                ))
            })
            .collect()
    }

    /// The password-check pool this authenticator uses.
    pub fn check_pool(&self) -> &Arc<CheckPool> {
        &self.checks
    }

    /// The counters since start.
    pub fn stats(&self) -> AuthStats {
        let c = &self.counters;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        AuthStats {
            cache_hits: read(&c.cache_hits),
            cache_misses: read(&c.cache_misses),
            verified: read(&c.verified),
            failed: read(&c.failed),
            rate_limited: read(&c.rate_limited),
            challenged: read(&c.challenged),
            busy: read(&c.busy),
            portal_logins: read(&c.portal_logins),
            concurrent_logins: read(&c.concurrent_logins),
            // Admin sign-ins through the same directory count too (the
            // technician's notice watches this one figure).
            directory_unreachable: read(&c.directory_unreachable)
                + self
                    .directory
                    .as_ref()
                    .map_or(0, |d| d.unreachable_sign_ins()),
        }
    }

    /// Credentials verified before and still in the cache (expired ones included until
    /// pushed out).
    pub fn cached_credentials(&self) -> usize {
        self.cache.len()
    }

    /// The identity the first binding holding `peer` gives, if any.
    pub fn bound(&self, peer: IpAddr) -> Option<Identity> {
        let peer = peer.to_canonical();
        let binding = self.bindings.iter().find(|b| b.network.contains(&peer))?;
        match &binding.grant {
            Grant::Role { role, group } => Some(Identity {
                role: *role,
                group: group.clone(),
                user: None,
                identified_by: IdentifiedBy::Address,
            }),
            Grant::User(name) => {
                let users = self.users.load();
                let entry = users.get(name).filter(|entry| !entry.disabled)?;
                Some(identity_of(entry, IdentifiedBy::Address))
            }
        }
    }

    /// The directory client (`[auth.ldap]`), shared with the admin sign-in and
    /// `users sync`.
    pub fn directory(&self) -> Option<&Arc<Directory>> {
        self.directory.as_ref()
    }

    /// Counts and returns the refusal for a client that must log in and did not try.
    pub fn challenge(&self) -> Refusal {
        bump(&self.counters.challenged);
        Refusal::Missing
    }

    /// The user `name` if still as verified (`generation`): neither changed nor
    /// disabled (also by `users sync` finding them gone), locally or in the directory.
    fn unchanged(&self, users: &UserTable, name: &str, generation: u64) -> Option<Arc<UserEntry>> {
        let local = users.get(name);
        if local.is_some_and(|entry| entry.disabled) {
            return None;
        }
        let local = local
            .filter(|entry| entry.generation == generation)
            .map(Arc::clone);
        local.or_else(|| self.directory.as_ref()?.known(name, generation))
    }

    /// Checks a request's `Proxy-Authorization` header from `peer` as far as it can be
    /// without waiting: no header, a cache hit, or a refusal are answered here; a
    /// password to verify is returned as [`Check::Verify`].
    pub fn check(&self, peer: IpAddr, header: Option<&HeaderValue>) -> Check {
        let Some(value) = header else {
            return Check::Anonymous;
        };
        let now = Instant::now();
        if let Some(token) = negotiate::token(value) {
            return self.negotiate_check(peer, token, now);
        }
        let token = match basic::token(value) {
            Ok(token) => token,
            Err(why) => return self.malformed(peer, why, now),
        };
        let key = self.cache.key(token);
        let users = self.users.load();
        let hit = self.cache.lookup(key, now, |name, generation| {
            self.unchanged(&users, name, generation)
        });
        if let Some(Some(entry)) = hit {
            bump(&self.counters.cache_hits);
            self.note_proxy_user(&entry.name, peer, now);
            return Check::Known(identity_of(&entry, IdentifiedBy::ProxyAuth));
        }
        bump(&self.counters.cache_misses);
        let credentials = match basic::decode(token) {
            Ok(credentials) => credentials,
            Err(why) => return self.malformed(peer, why, now),
        };
        let entry = users.get(&credentials.user).cloned();
        drop(users);
        // People imported by `users sync` are checked by the directory too.
        let in_directory = entry
            .as_ref()
            .is_none_or(|e| !e.disabled && &*e.password_hash == directory::DIRECTORY_PASSWORD_MARK);
        if in_directory && self.directory.is_some() {
            return self.directory_check(peer, key, credentials, now);
        }
        let reservation = match self.reserve(peer, counted(entry.as_ref()), now) {
            Ok(reservation) => reservation,
            Err(refusal) => {
                debug!(client = %peer, user = ?credentials.user, ?refusal, "proxy log-in refused: too many failed log-ins");
                return Check::Refused(refusal);
            }
        };
        let Some(entry) = entry else {
            info!(client = %peer, user = ?credentials.user, "proxy log-in failed: no such user");
            self.failed(peer, None, reservation.fail(now));
            return Check::Refused(Refusal::UnknownUser);
        };
        if entry.disabled {
            info!(client = %peer, user = %entry.name, "proxy log-in failed: the user is disabled");
            self.failed(peer, None, reservation.fail(now));
            return Check::Refused(Refusal::Disabled);
        }
        Check::Verify(Verification {
            peer,
            key,
            target: Target::Local(entry),
            password: credentials.password,
            reservation,
        })
    }

    /// A log-in by a name that is not a SafeGate user, with a directory configured:
    /// reserved against the failure limits (per address and per name, which also
    /// keeps a guesser from locking the person's directory account), then verified.
    fn directory_check(
        &self,
        peer: IpAddr,
        key: u64,
        credentials: basic::Credentials,
        now: Instant,
    ) -> Check {
        let name: Arc<str> = Arc::from(credentials.user.to_ascii_lowercase());
        match self.reserve(peer, Some(&name), now) {
            Ok(reservation) => Check::Verify(Verification {
                peer,
                key,
                target: Target::Directory(name),
                password: credentials.password,
                reservation,
            }),
            Err(refusal) => Check::Refused(refusal),
        }
    }

    /// Reserves a password check from `peer` (as `user`, when counted per user)
    /// against the failure limits, or the refusal when a limit is reached (counted).
    fn reserve(
        &self,
        peer: IpAddr,
        user: Option<&Arc<str>>,
        now: Instant,
    ) -> Result<Reservation, Refusal> {
        self.limiter.reserve(peer, user, now).map_err(|locked| {
            bump(&self.counters.rate_limited);
            match locked {
                Locked {
                    on: LockedOn::Address,
                    remaining,
                } => Refusal::AddressLocked {
                    retry_after: remaining,
                },
                Locked {
                    on: LockedOn::User,
                    remaining,
                } => Refusal::UserLocked {
                    retry_after: remaining,
                },
            }
        })
    }

    /// Verifies a password with Argon2 through the [`CheckPool`]; a right one is
    /// cached for later requests.
    /// A Kerberos ticket's person is also held by `log_in`, the client connection's.
    pub async fn verify(
        &self,
        verification: Verification,
        log_in: &ConnectionLogIn,
    ) -> Result<Identity, Refusal> {
        let Verification {
            peer,
            key,
            target,
            password,
            reservation,
        } = verification;
        let entry = match target {
            Target::Local(entry) => entry,
            Target::Directory(name) => {
                return self
                    .verify_in_directory(peer, key, &name, &password, reservation)
                    .await;
            }
            Target::Kerberos(token) => {
                return self.verify_ticket(peer, token, reservation, log_in).await;
            }
        };
        let verified = self.argon2(peer, &entry, password).await?;
        let now = Instant::now();
        if verified {
            self.cache
                .insert(key, Arc::clone(&entry.name), entry.generation, now);
            bump(&self.counters.verified);
            info!(client = %peer, user = %entry.name, role = entry.role.as_str(), "proxy log-in");
            self.note_proxy_user(&entry.name, peer, now);
            Ok(identity_of(&entry, IdentifiedBy::ProxyAuth))
        } else {
            info!(client = %peer, user = %entry.name, "proxy log-in failed: wrong password");
            self.failed(peer, Some(&entry.name), reservation.fail(now));
            Err(Refusal::WrongPassword)
        }
    }

    /// Checks a directory person's password (see [`directory`]); when no server
    /// answers, a log-in verified within `auth.ldap.cache_ttl` with the same
    /// credentials keeps working, else `unreachable_role` applies or it is refused.
    async fn verify_in_directory(
        &self,
        peer: IpAddr,
        key: u64,
        name: &Arc<str>,
        password: &str,
        reservation: Reservation,
    ) -> Result<Identity, Refusal> {
        let Some(directory) = &self.directory else {
            return Err(Refusal::UnknownUser);
        };
        let now = Instant::now();
        let result = directory.authenticate(name, password).await;
        let refusal = match result {
            Ok(user) => {
                let entry = directory.remember(name, &user, key);
                self.cache
                    .insert(key, Arc::clone(&entry.name), entry.generation, now);
                bump(&self.counters.verified);
                info!(client = %peer, user = %entry.name, role = entry.role.as_str(), group = ?entry.group, "proxy log-in (directory)");
                self.note_proxy_user(&entry.name, peer, now);
                return Ok(identity_of(&entry, IdentifiedBy::ProxyAuth));
            }
            Err(DirectoryError::Unreachable(why)) => {
                bump(&self.counters.directory_unreachable);
                return self.directory_down(directory, peer, key, name, &why);
            }
            Err(DirectoryError::Busy) => {
                bump(&self.counters.busy);
                return Err(Refusal::Busy);
            }
            Err(DirectoryError::UnknownUser) => {
                directory.forget(name);
                Refusal::UnknownUser
            }
            Err(DirectoryError::WrongPassword) => Refusal::WrongPassword,
            Err(DirectoryError::Unmatched) => Refusal::UnknownUser,
        };
        info!(client = %peer, user = %name, reason = %refusal, "proxy log-in failed (directory)");
        self.failed(peer, Some(name), reservation.fail(now));
        Err(refusal)
    }

    /// The answer for a directory log-in when no server answers.
    fn directory_down(
        &self,
        directory: &Directory,
        peer: IpAddr,
        key: u64,
        name: &Arc<str>,
        why: &str,
    ) -> Result<Identity, Refusal> {
        if let Some(entry) = directory.recall(name, key) {
            warn!(client = %peer, user = %name, %why, "directory unreachable: a log-in verified earlier keeps working (auth.ldap.cache_ttl)");
            return Ok(identity_of(&entry, IdentifiedBy::ProxyAuth));
        }
        match directory.unreachable_role() {
            Some(role) => {
                warn!(client = %peer, user = %name, %why, role = role.as_str(), "directory unreachable: log-in not checked, browsing with auth.ldap.unreachable_role");
                Ok(Identity {
                    role,
                    group: None,
                    user: None,
                    identified_by: IdentifiedBy::Default,
                })
            }
            None => {
                warn!(client = %peer, user = %name, %why, "directory unreachable: log-in refused");
                Err(Refusal::DirectoryDown)
            }
        }
    }

    /// Checks `password` against `entry` with Argon2 through the [`CheckPool`]
    /// (beyond its bound: `Busy`, counted).
    async fn argon2(
        &self,
        peer: IpAddr,
        entry: &UserEntry,
        password: String,
    ) -> Result<bool, Refusal> {
        let hash = Arc::clone(&entry.password_hash);
        self.checks.verify(hash, password).await.map_err(|_| {
            bump(&self.counters.busy);
            debug!(client = %peer, user = %entry.name, "log-in refused: too many waiting for a password check");
            Refusal::Busy
        })
    }

    /// Notes a proxy-credential user at `peer`: the same user at two addresses within
    /// the credential cache's lifetime is an event (logged and counted once per pair
    /// and lifetime), never refused: year-group log-ins are shared by a class.
    fn note_proxy_user(&self, user: &Arc<str>, peer: IpAddr, now: Instant) {
        if let Some(old) = self.seen.note(user, peer, now) {
            self.concurrent(
                user,
                old,
                peer,
                LoginSource::ProxyAuth,
                ConcurrentOutcome::Allowed,
            );
        }
    }

    /// Logs, counts and keeps a concurrent-login event.
    fn concurrent(
        &self,
        user: &Arc<str>,
        old: IpAddr,
        new: IpAddr,
        source: LoginSource,
        outcome: ConcurrentOutcome,
    ) {
        bump(&self.counters.concurrent_logins);
        warn!(
            user = %user,
            old_client = %old,
            new_client = %new,
            ?source,
            ?outcome,
            "user logged in on a second computer"
        );
        self.events.push(ConcurrentLoginEvent {
            at: std::time::SystemTime::now(),
            user: Arc::clone(user),
            old_address: old,
            new_address: new,
            source,
            outcome,
        });
    }

    /// The last [`portal::EVENTS_KEPT`] concurrent-login events, oldest first.
    pub fn concurrent_login_events(&self) -> Vec<ConcurrentLoginEvent> {
        self.events.snapshot()
    }

    /// Whether the login page is served at all (`auth.portal` is not `off`).
    pub fn portal_enabled(&self) -> bool {
        self.portal != PortalMode::Off
    }

    /// Whether unidentified clients of this kind are sent to the login page: the
    /// portal covers them and there is at least one user to log in as.
    pub fn portal_redirects(&self, transparent: bool) -> bool {
        let covered = match self.portal {
            PortalMode::Off => false,
            PortalMode::Transparent => transparent,
            PortalMode::All => true,
        };
        covered && !self.users.load().is_empty()
    }

    /// `auth.portal_idle_timeout`.
    pub fn portal_idle_timeout(&self) -> Duration {
        self.sessions.idle_timeout()
    }

    /// Portal sessions held now.
    pub fn portal_sessions(&self) -> usize {
        self.sessions.len()
    }

    /// A token for a `purpose` form shown to `peer`.
    pub fn form_token(&self, purpose: TokenPurpose, peer: IpAddr) -> String {
        self.token_key
            .issue(purpose, peer, std::time::SystemTime::now())
    }

    /// Whether `token` is a valid `purpose` token for `peer` now.
    pub fn check_form_token(&self, purpose: TokenPurpose, peer: IpAddr, token: &str) -> bool {
        self.token_key
            .check(purpose, peer, token, std::time::SystemTime::now())
    }

    /// The portal session of `peer` as an identity (`IdentifiedBy::Portal`), its idle
    /// clock restarted; a lapsed one (idle, user disabled or changed) ends here.
    pub fn portal_session(&self, peer: IpAddr) -> Option<Identity> {
        if self.portal == PortalMode::Off {
            return None;
        }
        let users = self.users.load();
        let found = self.sessions.touch(peer, Instant::now(), |name| {
            users
                .get(name)
                .filter(|entry| !entry.disabled)
                .map(|entry| entry.generation)
        });
        match found {
            Ok(Some(name)) => users
                .get(&name)
                .map(|entry| identity_of(entry, IdentifiedBy::Portal)),
            Ok(None) => None,
            Err(Lapsed::Idle(user)) => {
                info!(client = %peer, user = %user, "portal session ended: idle (auth.portal_idle_timeout)");
                None
            }
            Err(Lapsed::UserChanged(user)) => {
                info!(client = %peer, user = %user, "portal session ended: the user was disabled, removed or changed");
                None
            }
        }
    }

    /// Ends portal sessions idle for longer than the timeout (logging each).
    pub fn sweep_portal(&self) {
        for (client, user) in self.sessions.sweep(Instant::now()) {
            info!(client = %client, user = %user, "portal session ended: idle (auth.portal_idle_timeout)");
        }
    }

    /// Logs `peer` out of the portal; returns the user it was logged in as.
    pub fn portal_logout(&self, peer: IpAddr) -> Option<Arc<str>> {
        let user = self.sessions.remove(peer)?;
        info!(client = %peer, user = %user, "portal log-out");
        Some(user)
    }

    /// A portal log-in from `peer`: the failure limits, then Argon2 on the bounded
    /// path, then `auth.concurrent_logins`; success binds `peer` to the user.
    pub async fn portal_login(
        &self,
        peer: IpAddr,
        user: &str,
        password: String,
    ) -> Result<Identity, PortalRefusal> {
        let now = Instant::now();
        let users = self.users.load_full();
        let name = safegate_store::users::normalise_name(user).unwrap_or_else(|_| user.to_owned());
        let entry = users.get(&name).cloned();
        let reservation = self.reserve(peer, counted(entry.as_ref()), now).map_err(|refusal| {
            info!(client = %peer, user = ?name, "portal log-in refused: too many failed log-ins");
            PortalRefusal::Refused(refusal)
        })?;
        let Some(entry) = entry else {
            info!(client = %peer, user = ?name, "portal log-in failed: no such user");
            self.failed(peer, None, reservation.fail(now));
            return Err(PortalRefusal::Refused(Refusal::UnknownUser));
        };
        if entry.disabled {
            info!(client = %peer, user = %entry.name, "portal log-in failed: the user is disabled");
            self.failed(peer, None, reservation.fail(now));
            return Err(PortalRefusal::Refused(Refusal::Disabled));
        }
        let verified = Box::pin(self.argon2(peer, &entry, password))
            .await
            .map_err(PortalRefusal::Refused)?;
        let now = Instant::now();
        if !verified {
            info!(client = %peer, user = %entry.name, "portal log-in failed: wrong password");
            self.failed(peer, Some(&entry.name), reservation.fail(now));
            return Err(PortalRefusal::Refused(Refusal::WrongPassword));
        }
        let others = self.sessions.elsewhere(&entry.name, peer, now);
        match self.concurrent_logins {
            ConcurrentLogins::Deny if !others.is_empty() => {
                let idle_timeout = self.sessions.idle_timeout();
                let mut retry_after = Duration::ZERO;
                for (old, idle) in &others {
                    retry_after = retry_after.max(idle_timeout.saturating_sub(*idle));
                    self.concurrent(
                        &entry.name,
                        *old,
                        peer,
                        LoginSource::Portal,
                        ConcurrentOutcome::Denied,
                    );
                }
                info!(client = %peer, user = %entry.name, "portal log-in refused: logged in on another computer (auth.concurrent_logins = deny)");
                return Err(PortalRefusal::OtherComputer {
                    retry_after: retry_after.max(Duration::from_secs(1)),
                });
            }
            ConcurrentLogins::Deny | ConcurrentLogins::Allow => {
                for (old, _) in &others {
                    self.concurrent(
                        &entry.name,
                        *old,
                        peer,
                        LoginSource::Portal,
                        ConcurrentOutcome::Allowed,
                    );
                }
            }
            ConcurrentLogins::LatestWins => {
                for (old, _) in &others {
                    self.sessions.remove(*old);
                    self.concurrent(
                        &entry.name,
                        *old,
                        peer,
                        LoginSource::Portal,
                        ConcurrentOutcome::Replaced,
                    );
                }
            }
        }
        self.sessions
            .bind(peer, Arc::clone(&entry.name), entry.generation, now);
        bump(&self.counters.portal_logins);
        info!(client = %peer, user = %entry.name, role = entry.role.as_str(), "portal log-in");
        Ok(identity_of(&entry, IdentifiedBy::Portal))
    }

    fn malformed(&self, peer: IpAddr, why: Malformed, now: Instant) -> Check {
        info!(client = %peer, %why, "proxy log-in failed: malformed Proxy-Authorization header");
        self.failed(peer, None, self.limiter.fail(peer, now));
        Check::Refused(Refusal::Malformed(why))
    }

    /// Counts a failure, and logs the locks it switched on (`engaged`).
    fn failed(&self, peer: IpAddr, user: Option<&Arc<str>>, engaged: Vec<LockedOn>) {
        bump(&self.counters.failed);
        for on in engaged {
            let minutes = minutes(self.failure_window);
            match on {
                LockedOn::Address => warn!(
                    client = %peer,
                    "too many failed proxy log-ins from this address: its log-ins are refused for up to {minutes} (auth.max_failures_per_address)"
                ),
                LockedOn::User => warn!(
                    client = %peer,
                    user = user.map(|u| &**u),
                    "too many wrong passwords for this user: their log-ins are refused for up to {minutes} (auth.max_failures_per_user)"
                ),
            }
        }
    }
}

/// Why a portal log-in was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PortalRefusal {
    /// As for proxy credentials: unknown or disabled user, wrong password, locked, busy.
    #[error(transparent)]
    Refused(Refusal),
    /// The user is logged in on another computer (`auth.concurrent_logins = deny`).
    #[error("logged in on another computer")]
    OtherComputer {
        /// Until that log-in lapses, if nothing more happens there.
        retry_after: Duration,
    },
}

/// The name a local log-in counts under per user: only a user that exists and is
/// enabled (a guessed name must not lock anyone).
fn counted(entry: Option<&Arc<UserEntry>>) -> Option<&Arc<str>> {
    entry.filter(|e| !e.disabled).map(|e| &e.name)
}

fn identity_of(entry: &UserEntry, identified_by: IdentifiedBy) -> Identity {
    Identity {
        role: entry.role,
        group: entry.group.clone(),
        user: Some(entry.name.to_string()),
        identified_by,
    }
}

#[cfg(test)]
mod tests;
