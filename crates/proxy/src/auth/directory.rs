//! `[auth.ldap]`: proxy log-ins of people who are not SafeGate users, checked against
//! the school's LDAP directory or Active Directory (a bind as the person), their role
//! and group taken from their directory groups.
//!
//! A check: connect to the first server that answers (`ldaps://`, or `ldap://` with
//! StartTLS; certificates verified against `ca_file` or the usual public roots), bind
//! as the search account, find the person with `user_filter`, bind as them with the
//! password given, then read their groups (`memberOf`, or a search with
//! `group_filter`) and take the first `[[auth.ldap.groups]]` mapping they are in.
//! Every step has the `timeout` deadline; at most [`MAX_CHECKS`] checks run at once.
//!
//! The proxy's credential cache keeps a verified log-in as for local users, so the
//! directory sees one bind per person per `auth.credential_cache_ttl`. People checked
//! are also remembered here (bounded): when no server answers, a log-in verified within
//! `cache_ttl` with the same credentials keeps working; past it `unreachable_role`
//! applies (or the log-in is refused). Admin sign-ins are remembered the same way
//! ([`Directory::authenticate_admin`]), past `cache_ttl` refused.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry, ldap_escape};
use rustls::pki_types::pem::PemObject;
use safegate_policy::Role;
use safegate_store::Permission;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

mod admin_sign_in;
mod people;

pub use self::admin_sign_in::AdminCheck;
pub use self::people::DirectoryPerson;

use super::table::UserEntry;
use crate::config::ConfigProblem;

/// Most directory checks running at once; more wait for [`Directory::timeout`], then
/// are refused as busy.
pub const MAX_CHECKS: usize = 16;

/// Most people remembered for `cache_ttl` (the oldest check of a shard is forgotten
/// first).
const REMEMBERED: usize = 100_000;

/// Shards of the people remembered.
const SHARDS: usize = 16;

/// LDAP result code for a wrong password (RFC 4511 invalidCredentials).
const INVALID_CREDENTIALS: u32 = 49;

/// `[auth.ldap]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// Servers in the order tried: `ldaps://dc1.school.local` or `ldap://...` (with
    /// `starttls`).
    pub servers: Vec<String>,
    /// Upgrade `ldap://` connections with StartTLS (required for `ldap://` servers
    /// unless `allow_plain` is set).
    #[serde(default)]
    pub starttls: bool,
    /// Send passwords over plain `ldap://` without StartTLS (a lab only).
    #[serde(default)]
    pub allow_plain: bool,
    /// PEM file of the certificate authority that signed the servers' certificates
    /// (default: the public roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The search account's DN.
    pub bind_dn: String,
    /// The search account's password (shown as `<redacted>` by `safegate config
    /// show`), or ...
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::config::serialize_redacted"
    )]
    pub bind_password: Option<String>,
    /// ... a file holding it (first line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_password_file: Option<PathBuf>,
    /// Where people are searched (subtree).
    pub base_dn: String,
    /// The person's entry; `{user}` is the log-in name (escaped).
    #[serde(default = "default_user_filter")]
    pub user_filter: String,
    /// Groups found by a search (`{dn}` is the person's DN, escaped) under `base_dn`
    /// instead of the person's `memberOf` attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_filter: Option<String>,
    /// Deadline of each step (connect, bind, search).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How long a verified log-in keeps working while no server answers.
    #[serde(default = "default_cache_ttl", with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// Role of people in none of the mapped groups (unset: they are refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmatched_role: Option<String>,
    /// Role of a log-in that cannot be checked because no server answers and it was
    /// not verified within `cache_ttl` (unset: refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable_role: Option<String>,
    /// Directory groups to role and group; the first group the person is in wins.
    #[serde(default)]
    pub groups: Vec<GroupMapping>,
    /// How often the running service imports the directory's people into SafeGate's
    /// users (as `safegate users sync` does); unset: only by that command.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub sync_interval: Option<Duration>,
}

/// Shortest `sync_interval`: each sync reads the whole directory.
pub const MIN_SYNC_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// One `[[auth.ldap.groups]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupMapping {
    /// The directory group's DN.
    pub dn: String,
    /// `pupil`, `staff` or `filter-admin`.
    pub role: String,
    /// SafeGate group within the role, e.g. `year6`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Admin permissions for the admin web interface (`rules`, `reports`, `metrics`,
    /// `users`, `teach`); none: the person may not sign in there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<String>,
}

fn default_user_filter() -> String {
    "(&(objectClass=person)(|(sAMAccountName={user})(uid={user})))".to_owned()
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_cache_ttl() -> Duration {
    Duration::from_secs(8 * 3600)
}

impl LdapConfig {
    /// Every problem, with its key under `auth.ldap`.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, message: String| {
            problems.push(ConfigProblem::new(format!("auth.ldap.{key}"), message));
        };
        if self.servers.is_empty() {
            problem(
                "servers",
                "name at least one server, e.g. \"ldaps://dc1.school.local\"".into(),
            );
        }
        for (i, server) in self.servers.iter().enumerate() {
            let lower = server.to_ascii_lowercase();
            if lower.starts_with("ldap://") {
                if !self.starttls && !self.allow_plain {
                    problem(
                        &format!("servers[{i}]"),
                        format!(
                            "{server} would send passwords unencrypted: use ldaps://, or set starttls = true"
                        ),
                    );
                }
            } else if !lower.starts_with("ldaps://") {
                problem(
                    &format!("servers[{i}]"),
                    format!("{server:?} is not an LDAP address: use ldaps://HOST or ldap://HOST"),
                );
            }
        }
        if self.bind_password.is_some() == self.bind_password_file.is_some() {
            problem(
                "bind_password",
                "set one of bind_password and bind_password_file".into(),
            );
        }
        if !self.user_filter.contains("{user}") {
            problem("user_filter", "must contain {user}, the log-in name".into());
        }
        if self
            .group_filter
            .as_ref()
            .is_some_and(|f| !f.contains("{dn}"))
        {
            problem("group_filter", "must contain {dn}, the person's DN".into());
        }
        if self.timeout.is_zero() {
            problem("timeout", "must be longer than 0 (e.g. \"5s\")".into());
        }
        if self.sync_interval.is_some_and(|i| i < MIN_SYNC_INTERVAL) {
            problem(
                "sync_interval",
                "must be at least 5 minutes (each sync reads the whole directory)".into(),
            );
        }
        for (i, mapping) in self.groups.iter().enumerate() {
            for permission in &mapping.permissions {
                if permission.parse::<Permission>().is_err() {
                    problem(
                        &format!("groups[{i}].permissions"),
                        format!(
                            "{permission:?} is not a permission: use rules, reports, metrics, users or teach"
                        ),
                    );
                }
            }
        }
        let roles = self
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| (format!("groups[{i}].role"), Some(&g.role)));
        let roles = roles.chain([
            ("unmatched_role".to_owned(), self.unmatched_role.as_ref()),
            (
                "unreachable_role".to_owned(),
                self.unreachable_role.as_ref(),
            ),
        ]);
        for (key, role) in roles {
            if let Some(role) = role.filter(|r| r.parse::<Role>().is_err()) {
                problem(
                    &key,
                    format!("{role:?} is not a role: use pupil, staff or filter-admin"),
                );
            }
        }
        problems
    }
}

/// Why a directory check did not let the person in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// The directory has no such person (or several).
    #[error("no such person in the directory")]
    UnknownUser,
    /// The directory refused the password.
    #[error("wrong password")]
    WrongPassword,
    /// In none of the mapped groups, and `unmatched_role` is unset.
    #[error("in none of the directory groups mapped to a role")]
    Unmatched,
    /// No server answered, or the search account was refused.
    #[error("the directory cannot be reached: {0}")]
    Unreachable(String),
    /// Too many checks waiting.
    #[error("too many directory checks waiting")]
    Busy,
}

/// A person the directory let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    /// Role from the first mapped group.
    pub role: Role,
    /// Group from that mapping.
    pub group: Option<String>,
    /// Admin permissions from that mapping (none with `unmatched_role`).
    pub permissions: BTreeSet<Permission>,
    /// `displayName`, else `cn`, when the directory has one.
    pub display_name: Option<String>,
}

/// The password hash SafeGate stores for people imported by `safegate users sync`:
/// a well-formed Argon2 string that no password matches, so without `[auth.ldap]`
/// nobody can log in as them; with it, their log-ins are checked by the directory.
pub const DIRECTORY_PASSWORD_MARK: &str = "$argon2id$v=19$m=19456,t=2,p=1$ZGlyZWN0b3J5LXBlcnNvbg$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// One `[[auth.ldap.groups]]`, parsed: a normalised DN and what it gives.
#[derive(Debug, Clone)]
struct Mapping {
    dn: String,
    role: Role,
    group: Option<String>,
    permissions: BTreeSet<Permission>,
}

/// The directory client and the people it remembers. See the module documentation.
pub struct Directory {
    config: LdapConfig,
    bind_password: String,
    tls: Arc<rustls::ClientConfig>,
    mappings: Vec<Mapping>,
    unmatched_role: Option<Role>,
    unreachable_role: Option<Role>,
    slots: Semaphore,
    /// Shards chosen by name: a credential-cache hit takes one shard's read lock.
    remembered: Box<[RwLock<RememberedShard>]>,
    shard_keys: RandomState,
    generation: AtomicU64,
    /// Admin sign-ins accepted, by lower-case name (see [`admin_sign_in`]).
    admin_remembered: Mutex<HashMap<Arc<str>, admin_sign_in::RememberedSignIn>>,
    /// The key of the admin sign-ins' credential hashes.
    admin_keys: RandomState,
    /// Admin sign-ins that found no server answering.
    unreachable_sign_ins: AtomicU64,
}

/// People remembered, by lower-case name.
type RememberedShard = HashMap<Arc<str>, Remembered>;

/// A person verified before: for cache hits and for when no server answers.
struct Remembered {
    entry: Arc<UserEntry>,
    credential: u64,
    verified: Instant,
}

/// Before `name` is inserted into `map` of at most `bound` people: when it is full and
/// `name` is new, forgets the person verified longest ago (a scan; once per check).
fn make_room<V>(
    map: &mut HashMap<Arc<str>, V>,
    bound: usize,
    name: &str,
    verified: impl Fn(&V) -> Instant,
) {
    if map.len() < bound || map.contains_key(name) {
        return;
    }
    let oldest = map
        .iter()
        .min_by_key(|(_, v)| verified(v))
        .map(|(n, _)| Arc::clone(n));
    if let Some(oldest) = oldest {
        map.remove(&oldest);
    }
}

/// The directory could not be set up from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum DirectorySetupError {
    /// A file named in `[auth.ldap]` could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The CA file holds no usable certificate.
    #[error("ca_file {0}: no certificate in it could be used")]
    NoCertificate(PathBuf),
}

impl Directory {
    /// The client for a validated `config`: reads the bind password and CA files.
    pub fn new(config: &LdapConfig) -> Result<Self, DirectorySetupError> {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| DirectorySetupError::Read {
                path: path.clone(),
                source,
            })
        };
        let bind_password = match (&config.bind_password, &config.bind_password_file) {
            (Some(password), _) => password.clone(),
            (None, Some(path)) => {
                let text = String::from_utf8_lossy(&read(path)?).into_owned();
                text.lines().next().unwrap_or_default().to_owned()
            }
            (None, None) => String::new(),
        };
        let mut roots = rustls::RootCertStore::empty();
        match &config.ca_file {
            Some(path) => {
                let pem = read(path)?;
                let certs =
                    rustls::pki_types::CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok);
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(DirectorySetupError::NoCertificate(path.clone()));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map(|builder| builder.with_root_certificates(roots).with_no_client_auth())
        .map_err(|_| {
            DirectorySetupError::NoCertificate(config.ca_file.clone().unwrap_or_default())
        })?;
        let role = |name: &Option<String>| name.as_deref().and_then(|r| r.parse::<Role>().ok());
        Ok(Self {
            mappings: config
                .groups
                .iter()
                .filter_map(|g| {
                    Some(Mapping {
                        dn: normalise_dn(&g.dn),
                        role: g.role.parse().ok()?,
                        group: g.group.clone(),
                        permissions: g
                            .permissions
                            .iter()
                            .filter_map(|p| p.parse().ok())
                            .collect(),
                    })
                })
                .collect(),
            unmatched_role: role(&config.unmatched_role),
            unreachable_role: role(&config.unreachable_role),
            config: config.clone(),
            bind_password,
            tls: Arc::new(tls),
            slots: Semaphore::new(MAX_CHECKS),
            remembered: (0..SHARDS).map(|_| RwLock::default()).collect(),
            shard_keys: RandomState::new(),
            generation: AtomicU64::new(1 << 62),
            admin_remembered: Mutex::default(),
            admin_keys: RandomState::new(),
            unreachable_sign_ins: AtomicU64::new(0),
        })
    }

    /// `unreachable_role`, parsed.
    pub fn unreachable_role(&self) -> Option<Role> {
        self.unreachable_role
    }

    /// Checks `name` and `password` with the directory (bounded, with deadlines).
    pub async fn authenticate(
        &self,
        name: &str,
        password: &str,
    ) -> Result<DirectoryUser, DirectoryError> {
        // An empty password is an "unauthenticated bind", which LDAP servers accept.
        if password.is_empty() {
            return Err(DirectoryError::WrongPassword);
        }
        let _slot = tokio::time::timeout(self.config.timeout, self.slots.acquire())
            .await
            .map_err(|_| DirectoryError::Busy)?
            .map_err(|_| DirectoryError::Busy)?;
        let mut last = String::from("no server is configured");
        for server in &self.config.servers {
            match self.check_on(server, name, password).await {
                Err(Step::Down(why)) => {
                    warn!(server = %server, %why, "directory server did not answer; trying the next");
                    last = format!("{server}: {why}");
                }
                Err(Step::Refused(error)) => return Err(error),
                Ok(found) => return self.map_groups(&found.groups, found.display_name),
            }
        }
        Err(DirectoryError::Unreachable(last))
    }

    /// Connects to every server and binds as the search account (for `safegate
    /// doctor`): per server, `Ok` or why not.
    pub async fn probe(&self) -> Vec<(String, Result<(), String>)> {
        let mut results = Vec::new();
        for server in &self.config.servers {
            let result = match self.connect(server).await {
                Ok((mut ldap, driver)) => {
                    let bound = ldap
                        .with_timeout(self.config.timeout)
                        .simple_bind(&self.config.bind_dn, &self.bind_password)
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| {
                            r.success()
                                .map(|_| ())
                                .map_err(|e| format!("the search account was refused: {e}"))
                        });
                    let _ = tokio::time::timeout(self.config.timeout, ldap.unbind()).await;
                    driver.abort();
                    bound
                }
                Err(Step::Down(why)) => Err(why),
                Err(Step::Refused(error)) => Err(error.to_string()),
            };
            results.push((server.clone(), result));
        }
        results
    }

    /// A connection to `server` (TLS as configured, within the deadline) and the task
    /// driving it.
    async fn connect(
        &self,
        server: &str,
    ) -> Result<(ldap3::Ldap, tokio::task::JoinHandle<()>), Step> {
        let timeout = self.config.timeout;
        let settings = LdapConnSettings::new()
            .set_conn_timeout(timeout)
            .set_config(Arc::clone(&self.tls))
            .set_starttls(
                self.config.starttls && server.to_ascii_lowercase().starts_with("ldap://"),
            );
        let (conn, ldap) = LdapConnAsync::with_settings(settings, server)
            .await
            .map_err(|e| Step::Down(e.to_string()))?;
        let driver = tokio::spawn(async move {
            if let Err(error) = conn.drive().await {
                debug!(%error, "directory connection ended");
            }
        });
        Ok((ldap, driver))
    }

    /// The first mapping among `groups` (normalised DNs), or `unmatched_role`.
    fn map_groups(
        &self,
        groups: &[String],
        display_name: Option<String>,
    ) -> Result<DirectoryUser, DirectoryError> {
        let found = self.mappings.iter().find(|m| groups.contains(&m.dn));
        match (found, self.unmatched_role) {
            (Some(mapping), _) => Ok(DirectoryUser {
                role: mapping.role,
                group: mapping.group.clone(),
                permissions: mapping.permissions.clone(),
                display_name,
            }),
            (None, Some(role)) => Ok(DirectoryUser {
                role,
                group: None,
                permissions: BTreeSet::new(),
                display_name,
            }),
            (None, None) => Err(DirectoryError::Unmatched),
        }
    }

    /// One server: the person's groups and name, or why not.
    async fn check_on(&self, server: &str, name: &str, password: &str) -> Result<Found, Step> {
        let timeout = self.config.timeout;
        let (mut ldap, driver) = self.connect(server).await?;
        let result = self.check_with(&mut ldap, name, password, timeout).await;
        let _ = tokio::time::timeout(timeout, ldap.unbind()).await;
        driver.abort();
        result
    }

    async fn check_with(
        &self,
        ldap: &mut ldap3::Ldap,
        name: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<Found, Step> {
        let down = |e: ldap3::LdapError| Step::Down(e.to_string());
        self.bind_search_account(ldap).await?;
        let filter = self
            .config
            .user_filter
            .replace("{user}", &ldap_escape(name));
        let (entries, _) = ldap
            .with_timeout(timeout)
            .search(
                &self.config.base_dn,
                Scope::Subtree,
                &filter,
                PERSON_ATTRIBUTES.to_vec(),
            )
            .await
            .map_err(down)?
            .success()
            .map_err(down)?;
        let [entry] = entries.as_slice() else {
            debug!(
                user = name,
                found = entries.len(),
                "directory log-in: not exactly one person found"
            );
            return Err(Step::Refused(DirectoryError::UnknownUser));
        };
        let person = SearchEntry::construct(entry.clone());
        let bound = ldap
            .with_timeout(timeout)
            .simple_bind(&person.dn, password)
            .await
            .map_err(down)?;
        match bound.rc {
            0 => {}
            INVALID_CREDENTIALS => return Err(Step::Refused(DirectoryError::WrongPassword)),
            _ => return Err(Step::Down(format!("bind as {}: {bound}", person.dn))),
        }
        if self.config.group_filter.is_some() {
            // Back to the search account: the person may not read group entries.
            self.bind_search_account(ldap).await?;
        }
        let groups = self.groups_of(ldap, &person).await?;
        Ok(Found {
            groups,
            display_name: display_name(&person),
        })
    }

    /// Binds `ldap` as the search account.
    async fn bind_search_account(&self, ldap: &mut ldap3::Ldap) -> Result<(), Step> {
        ldap.with_timeout(self.config.timeout)
            .simple_bind(&self.config.bind_dn, &self.bind_password)
            .await
            .map_err(|e| Step::Down(e.to_string()))?
            .success()
            .map_err(|e| Step::Down(format!("the search account was refused: {e}")))?;
        Ok(())
    }

    /// The person's groups (normalised DNs): `memberOf`, or a search with
    /// `group_filter` (bound as the search account).
    async fn groups_of(
        &self,
        ldap: &mut ldap3::Ldap,
        person: &SearchEntry,
    ) -> Result<Vec<String>, Step> {
        let down = |e: ldap3::LdapError| Step::Down(e.to_string());
        let groups = match &self.config.group_filter {
            None => person.attrs.get("memberOf").cloned().unwrap_or_default(),
            Some(group_filter) => {
                let filter = group_filter.replace("{dn}", &ldap_escape(person.dn.as_str()));
                let (found, _) = ldap
                    .with_timeout(self.config.timeout)
                    .search(&self.config.base_dn, Scope::Subtree, &filter, vec!["1.1"])
                    .await
                    .map_err(down)?
                    .success()
                    .map_err(down)?;
                found
                    .into_iter()
                    .map(|e| SearchEntry::construct(e).dn)
                    .collect()
            }
        };
        Ok(groups.iter().map(|g| normalise_dn(g)).collect())
    }

    /// Remembers `name` as verified now with credential `credential`; the entry to
    /// cache (a new generation each time).
    pub fn remember(&self, name: &str, user: &DirectoryUser, credential: u64) -> Arc<UserEntry> {
        let name: Arc<str> = Arc::from(name.to_ascii_lowercase());
        let entry = Arc::new(UserEntry {
            name: Arc::clone(&name),
            role: user.role,
            group: user.group.clone(),
            password_hash: Arc::from(""),
            disabled: false,
            generation: self.generation.fetch_add(1, Ordering::Relaxed),
        });
        let mut remembered = self
            .shard(&name)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        // Full (a very large school): the oldest check goes; a scan, once per log-in.
        make_room(&mut remembered, REMEMBERED / SHARDS, &name, |r| r.verified);
        remembered.insert(
            name,
            Remembered {
                entry: Arc::clone(&entry),
                credential,
                verified: Instant::now(),
            },
        );
        entry
    }

    /// The entry remembered for `name` if it has `generation` (a credential-cache hit).
    pub fn known(&self, name: &str, generation: u64) -> Option<Arc<UserEntry>> {
        let remembered = self
            .shard(name)
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        remembered
            .get(name)
            .filter(|r| r.entry.generation == generation)
            .map(|r| Arc::clone(&r.entry))
    }

    /// The entry for `name` if it was checked within `age` (Kerberos log-ins: the
    /// ticket proves who, the directory was asked for the groups that recently).
    pub fn checked_within(&self, name: &str, age: Duration) -> Option<Arc<UserEntry>> {
        let remembered = self
            .shard(name)
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        remembered
            .get(name)
            .filter(|r| r.verified.elapsed() <= age)
            .map(|r| Arc::clone(&r.entry))
    }

    /// The entry for `name` verified with `credential` within `cache_ttl`: used when
    /// no server answers.
    pub fn recall(&self, name: &str, credential: u64) -> Option<Arc<UserEntry>> {
        let name = name.to_ascii_lowercase();
        let remembered = self
            .shard(&name)
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        remembered
            .get(name.as_str())
            .filter(|r| r.credential == credential && r.verified.elapsed() <= self.config.cache_ttl)
            .map(|r| Arc::clone(&r.entry))
    }

    /// Forgets `name` (the directory no longer has them).
    pub fn forget(&self, name: &str) {
        let name = name.to_ascii_lowercase();
        let mut remembered = self
            .shard(&name)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        remembered.remove(name.as_str());
    }

    /// The shard holding `name` (lower-case).
    fn shard(&self, name: &str) -> &RwLock<RememberedShard> {
        let index = self.shard_keys.hash_one(name) as usize % SHARDS;
        &self.remembered[index]
    }
}

/// Attributes read from a person's entry.
const PERSON_ATTRIBUTES: [&str; 5] = ["memberOf", "displayName", "cn", "uid", "sAMAccountName"];

/// What a check found about a person.
struct Found {
    /// Their groups, normalised DNs.
    groups: Vec<String>,
    /// `displayName`, else `cn`.
    display_name: Option<String>,
}

/// `displayName`, else `cn`, of a person's entry.
fn display_name(person: &SearchEntry) -> Option<String> {
    ["displayName", "cn"]
        .iter()
        .find_map(|a| person.attrs.get(*a)?.first().cloned())
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
}

/// How one server's check ended short of the groups.
enum Step {
    /// Try the next server.
    Down(String),
    /// The answer: stop here.
    Refused(DirectoryError),
}

/// A DN for comparison: lower case, no spaces around `,` and `=`.
fn normalise_dn(dn: &str) -> String {
    dn.split(',')
        .map(|rdn| rdn.split('=').map(str::trim).collect::<Vec<_>>().join("="))
        .collect::<Vec<_>>()
        .join(",")
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_compare_without_case_or_spaces() {
        assert_eq!(
            normalise_dn("CN=Year 6, OU=Groups ,DC=School"),
            "cn=year 6,ou=groups,dc=school"
        );
    }

    #[test]
    fn plain_ldap_and_missing_fields_are_problems() {
        let config: LdapConfig = toml::from_str(
            r#"servers = ["ldap://dc1", "http://x"]
               bind_dn = "cn=sg"
               base_dn = "dc=school"
               user_filter = "(uid=x)"
               unmatched_role = "teacher"
               groups = [{ dn = "cn=y6", role = "pupil", group = "year6" }]"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let text: Vec<String> = config.validate().iter().map(ToString::to_string).collect();
        let text = text.join("\n");
        for needle in [
            "servers[0]",
            "servers[1]",
            "bind_password",
            "user_filter",
            "unmatched_role",
        ] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
    }
}
