//! SafeGate's users: who may log in to the proxy (staff individually, pupils by
//! year-group log-in, as the schools' policies ask), with which browsing role and
//! group, and which admin permissions.
//!
//! # Layout
//!
//! One sled tree, `users`:
//!
//! | key                              | value |
//! |----------------------------------|-------|
//! | the user name (normalised, UTF-8) | [`USER_FORMAT`] (1 byte) followed by the postcard encoding of [`User`] |
//!
//! Keys sort by name, so [`Store::list_users`] returns users in name order. A value
//! whose version byte is unknown, or that does not decode, or whose name differs from
//! its key, is *damaged*: [`Store::get_user`] reports it, [`Store::list_users`] skips
//! it with an error in the log (one damaged entry must not lock every user out).
//!
//! # Names
//!
//! A user name is 1 to [`MAX_NAME_CHARS`] characters of `A-Z a-z 0-9 . _ @ -`,
//! starting with a letter or a digit (so it can never be taken for a command-line
//! option). Names are **case-insensitive**: they are stored lower-cased
//! ([`normalise_name`]), every look-up lower-cases the name it is given, and `Ada` and
//! `ada` are the same user. Whoever checks a log-in against a table built from
//! [`Store::list_users`] must look the typed name up through [`normalise_name`].
//!
//! Groups are case-sensitive, as in the policy file: 1 to [`MAX_NAME_CHARS`]
//! characters of `A-Z a-z 0-9 . _ -`, starting with a letter or a digit, and not a
//! role's name.
//!
//! # Writes
//!
//! Every change is one atomic sled operation: adding is an insert-if-absent
//! (compare-and-swap against nothing), changing a user is a compare-and-swap against
//! the value read (retried when another change came in between), removing is one
//! remove, and an import is one transaction that writes every row or none. Nothing is
//! durable until the next flush: callers flush after a change (the control socket and
//! the command line do).
//!
//! Every change gives the user a new [`User::generation`] from sled's persistent id
//! generator: generations never repeat, even for a user removed and added again, so a
//! cache of verified log-ins keyed on (name, generation) can never outlive a password
//! change, a disable or a removal.
//!
//! # Watching
//!
//! [`Store::watch_users`] reports changes so the running service can rebuild its
//! in-memory table with [`Store::list_users`] (a few milliseconds for thousands of
//! users). A background thread drains sled's subscription at once, so a slow or
//! absent reader never holds up writers; bursts (an import of 2,000 rows) coalesce
//! into one wake-up.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use tokio::sync::watch;

use crate::password::{self, PasswordError};
use crate::{Store, StoreError};

/// The encoding version written in front of every stored user.
pub const USER_FORMAT: u8 = 2;

/// The format before users could be marked shared (read, never written).
const USER_FORMAT_V1: u8 = 1;

/// Longest user or group name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// Longest display name, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 128;

/// The browsing roles a user can have, as the policy names them.
pub const ROLES: [&str; 3] = ["pupil", "staff", "filter-admin"];

/// An admin permission, separate from the browsing role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// Edit the filtering rules (filter admins).
    Rules,
    /// Read reports and people's histories (headteacher, safeguarding lead).
    Reports,
    /// Read metrics and health (technicians).
    Metrics,
    /// Manage SafeGate's accounts (the first admin, made by `safegate setup`); the
    /// web interface lists the accounts to those who have it.
    Users,
    /// Teach: for the groups the policy assigns to this account, unblock a site or
    /// category, or keep the group on a few sites (focus), for up to a lesson.
    Teach,
}

impl Permission {
    /// Every permission, in order.
    pub const ALL: [Permission; 5] = [
        Permission::Rules,
        Permission::Reports,
        Permission::Metrics,
        Permission::Users,
        Permission::Teach,
    ];

    /// Its name: `rules`, `reports`, `metrics`, `users` or `teach`.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Rules => "rules",
            Permission::Reports => "reports",
            Permission::Metrics => "metrics",
            Permission::Users => "users",
            Permission::Teach => "teach",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Permission {
    type Err = UserError;

    fn from_str(text: &str) -> Result<Self, UserError> {
        Permission::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| UserError::InvalidPermission {
                permission: text.to_owned(),
            })
    }
}

/// Parses a permission list: names separated by commas, semicolons or spaces
/// (`rules,reports`); empty text is no permission.
pub fn parse_permissions(text: &str) -> Result<BTreeSet<Permission>, UserError> {
    text.split([',', ';', ' ', '\t'])
        .filter(|part| !part.is_empty())
        .map(Permission::from_str)
        .collect()
}

/// A permission set as text: `rules,reports`, or `-` when empty.
pub fn permissions_text(permissions: &BTreeSet<Permission>) -> String {
    if permissions.is_empty() {
        return "-".to_owned();
    }
    let names: Vec<&str> = permissions.iter().map(|p| p.as_str()).collect();
    names.join(",")
}

/// One user, as stored. `Debug` leaves the password hash out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The log-in name, normalised ([`normalise_name`]); the key.
    pub name: String,
    /// The person's or the group log-in's name as people read it.
    pub display_name: Option<String>,
    /// Browsing role: one of [`ROLES`].
    pub role: String,
    /// Group within the role (e.g. `year6`), as named in the policy.
    pub group: Option<String>,
    /// Admin permissions.
    pub permissions: BTreeSet<Permission>,
    /// The password's Argon2 PHC string ([`crate::password`]).
    pub password_hash: String,
    /// A disabled user cannot log in.
    pub disabled: bool,
    /// When the user was added, Unix microseconds.
    pub created_unix_micros: u64,
    /// When the user last changed, Unix microseconds.
    pub changed_unix_micros: u64,
    /// Changes on every change of the user (and never repeats, even across removal and
    /// re-adding): a cache of verified log-ins keyed on it cannot go stale.
    pub generation: u64,
    /// A log-in shared by several people (a year-group log-in): it is expected on
    /// many computers at once, and per-person alert rules count per computer.
    pub shared: bool,
}

/// [`User`] as [`USER_FORMAT_V1`] stored it (no `shared`).
#[derive(Deserialize)]
struct UserV1 {
    name: String,
    display_name: Option<String>,
    role: String,
    group: Option<String>,
    permissions: BTreeSet<Permission>,
    password_hash: String,
    disabled: bool,
    created_unix_micros: u64,
    changed_unix_micros: u64,
    generation: u64,
}

impl From<UserV1> for User {
    fn from(v1: UserV1) -> Self {
        Self {
            name: v1.name,
            display_name: v1.display_name,
            role: v1.role,
            group: v1.group,
            permissions: v1.permissions,
            password_hash: v1.password_hash,
            disabled: v1.disabled,
            created_unix_micros: v1.created_unix_micros,
            changed_unix_micros: v1.changed_unix_micros,
            generation: v1.generation,
            shared: false,
        }
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("display_name", &self.display_name)
            .field("role", &self.role)
            .field("group", &self.group)
            .field("permissions", &self.permissions)
            .field("password_hash", &"<hidden>")
            .field("disabled", &self.disabled)
            .field("created_unix_micros", &self.created_unix_micros)
            .field("changed_unix_micros", &self.changed_unix_micros)
            .field("generation", &self.generation)
            .field("shared", &self.shared)
            .finish()
    }
}

impl User {
    /// The stored form: [`USER_FORMAT`] followed by the postcard encoding.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + self.password_hash.len());
        out.push(USER_FORMAT);
        // Encoding into a Vec cannot fail: every field has a known length.
        match postcard::to_extend(self, out) {
            Ok(out) => out,
            Err(_) => vec![USER_FORMAT],
        }
    }

    /// Reads a stored user, checking its version byte; why not, when it cannot.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, String> {
        match bytes.split_first() {
            None => Err("empty value".to_owned()),
            Some((&USER_FORMAT, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
            Some((&USER_FORMAT_V1, rest)) => postcard::from_bytes::<UserV1>(rest)
                .map(User::from)
                .map_err(|e| e.to_string()),
            Some((&other, _)) => Err(format!("unknown format version {other}")),
        }
    }
}

/// A user to add. `Debug` leaves the password hash out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewUser {
    /// Log-in name (normalised when stored).
    pub name: String,
    /// Name as people read it.
    pub display_name: Option<String>,
    /// Browsing role: one of [`ROLES`].
    pub role: String,
    /// Group within the role.
    pub group: Option<String>,
    /// Admin permissions.
    pub permissions: BTreeSet<Permission>,
    /// The password's Argon2 PHC string ([`password::hash_password`]).
    pub password_hash: String,
    /// A shared (year-group) log-in ([`User::shared`]).
    pub shared: bool,
}

impl fmt::Debug for NewUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewUser")
            .field("name", &self.name)
            .field("display_name", &self.display_name)
            .field("role", &self.role)
            .field("group", &self.group)
            .field("permissions", &self.permissions)
            .field("password_hash", &"<hidden>")
            .finish()
    }
}

/// A change to a user's details; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserUpdate {
    /// New display name (`Some(None)` removes it).
    pub display_name: Option<Option<String>>,
    /// New role.
    pub role: Option<String>,
    /// New group (`Some(None)` removes it).
    pub group: Option<Option<String>>,
    /// New permission set (replaces the old one).
    pub permissions: Option<BTreeSet<Permission>>,
    /// Mark or unmark a shared log-in.
    pub shared: Option<bool>,
}

/// One row of an import: a user to add, with the line it came from. `password_hash`
/// may be `None` only for [`Store::check_import`] (a dry run hashes nothing).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportRow {
    /// Line in the imported file (1 is the header), for messages.
    pub line: u64,
    /// Log-in name as written in the file.
    pub name: String,
    /// Name as people read it.
    pub display_name: Option<String>,
    /// Browsing role as written.
    pub role: String,
    /// Group within the role.
    pub group: Option<String>,
    /// Admin permissions.
    pub permissions: BTreeSet<Permission>,
    /// The password's Argon2 PHC string.
    pub password_hash: Option<String>,
    /// A shared (year-group) log-in.
    pub shared: bool,
}

impl fmt::Debug for ImportRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportRow")
            .field("line", &self.line)
            .field("name", &self.name)
            .field("role", &self.role)
            .field("group", &self.group)
            .field("permissions", &self.permissions)
            .field(
                "password_hash",
                &self.password_hash.as_ref().map(|_| "<hidden>"),
            )
            .finish_non_exhaustive()
    }
}

/// A row that cannot be imported, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadRow {
    /// Line in the file.
    pub line: u64,
    /// The user name as written (may be empty).
    pub user: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for BadRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.user.is_empty() {
            write!(f, "line {}: {}", self.line, self.reason)
        } else {
            write!(f, "line {} ({}): {}", self.line, self.user, self.reason)
        }
    }
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    /// Users added.
    pub added: usize,
}

/// Why an import changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ImportErrors {
    /// Rows that cannot be imported, ordered by line; nothing was imported.
    #[error("{}", bad_rows_text(.0))]
    BadRows(Vec<BadRow>),
    /// The database failed; nothing was imported.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn bad_rows_text(rows: &[BadRow]) -> String {
    let lines: BTreeSet<u64> = rows.iter().map(|r| r.line).collect();
    let mut text = format!(
        "{} bad row(s); nothing was imported (fix them and import the whole file again):",
        lines.len()
    );
    for row in rows {
        text.push_str("\n  ");
        text.push_str(&row.to_string());
    }
    text
}

/// Why a user operation failed.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// The user name breaks the naming rules.
    #[error("invalid user name {name:?}: {why}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        why: String,
    },
    /// The role is not one of [`ROLES`].
    #[error("invalid role {role:?}: a role is pupil, staff or filter-admin")]
    InvalidRole {
        /// The role as given.
        role: String,
    },
    /// The group name breaks the naming rules.
    #[error("invalid group {group:?}: {why}")]
    InvalidGroup {
        /// The group as given.
        group: String,
        /// Which rule it breaks.
        why: String,
    },
    /// The display name is too long or holds control characters.
    #[error("invalid display name: {why}")]
    InvalidDisplayName {
        /// What is wrong.
        why: String,
    },
    /// Not one of the admin permissions.
    #[error("invalid permission {permission:?}: permissions are rules, reports, metrics and users")]
    InvalidPermission {
        /// The permission as given.
        permission: String,
    },
    /// The password or its hash was refused.
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// A user of that name exists already (names are case-insensitive).
    #[error("user {name} exists already")]
    UserExists {
        /// The normalised name.
        name: String,
    },
    /// There is no user of that name.
    #[error("there is no user {name}")]
    NoSuchUser {
        /// The normalised name.
        name: String,
    },
    /// The stored user cannot be read.
    #[error("the stored user {name:?} is damaged: {why}")]
    Damaged {
        /// The key it is stored under.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sled::Error> for UserError {
    fn from(error: sled::Error) -> Self {
        UserError::Store(StoreError::Database(error))
    }
}

/// The rule a name breaks, if any (shared by user and group names).
fn name_problem(name: &str, extra: &[char]) -> Option<String> {
    let chars = name.chars().count();
    if chars == 0 {
        return Some("it is empty".to_owned());
    }
    if chars > MAX_NAME_CHARS {
        return Some(format!(
            "it is {chars} characters long; at most {MAX_NAME_CHARS}"
        ));
    }
    if let Some(bad) = name.chars().find(|&c| {
        !(c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' || extra.contains(&c))
    }) {
        let allowed = if extra.contains(&'@') {
            "letters A-Z, digits, '.', '_', '@' and '-'"
        } else {
            "letters A-Z, digits, '.', '_' and '-'"
        };
        return Some(format!("{bad:?} is not allowed (only {allowed})"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Some("it must start with a letter or a digit".to_owned());
    }
    None
}

/// Checks a user name and returns its stored form: lower-cased (names are
/// case-insensitive). Rules: 1 to [`MAX_NAME_CHARS`] characters of `A-Z a-z 0-9 . _ @ -`,
/// starting with a letter or a digit.
pub fn normalise_name(name: &str) -> Result<String, UserError> {
    match name_problem(name, &['@']) {
        Some(why) => Err(UserError::InvalidName {
            name: name.to_owned(),
            why,
        }),
        None => Ok(name.to_ascii_lowercase()),
    }
}

/// Checks a role: one of [`ROLES`], exactly.
pub fn check_role(role: &str) -> Result<(), UserError> {
    if ROLES.contains(&role) {
        Ok(())
    } else {
        Err(UserError::InvalidRole {
            role: role.to_owned(),
        })
    }
}

/// Checks a group name (case-sensitive, as in the policy file).
pub fn check_group(group: &str) -> Result<(), UserError> {
    let why = name_problem(group, &[]).or_else(|| {
        ROLES
            .contains(&group)
            .then(|| "a group cannot have a role's name".to_owned())
    });
    match why {
        Some(why) => Err(UserError::InvalidGroup {
            group: group.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

/// Checks a display name: at most [`MAX_DISPLAY_NAME_CHARS`] characters, no control
/// characters.
pub fn check_display_name(display_name: &str) -> Result<(), UserError> {
    let chars = display_name.chars().count();
    if chars > MAX_DISPLAY_NAME_CHARS {
        return Err(UserError::InvalidDisplayName {
            why: format!("it is {chars} characters long; at most {MAX_DISPLAY_NAME_CHARS}"),
        });
    }
    if display_name.chars().any(char::is_control) {
        return Err(UserError::InvalidDisplayName {
            why: "it contains control characters (tabs, line breaks, escapes)".to_owned(),
        });
    }
    Ok(())
}

/// An empty display name or group means none.
fn non_empty(text: &Option<String>) -> Option<String> {
    text.as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

/// Every problem with the fields of a user to add; the normalised name when it is
/// valid.
fn field_problems(
    name: &str,
    display_name: Option<&str>,
    role: &str,
    group: Option<&str>,
    password_hash: Option<&str>,
) -> (Option<String>, Vec<UserError>) {
    let mut problems = Vec::new();
    let key = match normalise_name(name) {
        Ok(key) => Some(key),
        Err(err) => {
            problems.push(err);
            None
        }
    };
    if let Some(display_name) = display_name
        && let Err(err) = check_display_name(display_name)
    {
        problems.push(err);
    }
    if let Err(err) = check_role(role) {
        problems.push(err);
    }
    if let Some(group) = group
        && let Err(err) = check_group(group)
    {
        problems.push(err);
    }
    if let Some(hash) = password_hash
        && let Err(err) = password::check_phc(hash)
    {
        problems.push(err.into());
    }
    (key, problems)
}

/// Unix microseconds now.
fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

impl Store {
    /// Adds a user, enabled. Fails with [`UserError::UserExists`] when the name (in
    /// any case) is taken, and with the first problem of an invalid field.
    pub fn add_user(&self, new: &NewUser) -> Result<User, UserError> {
        let display_name = non_empty(&new.display_name);
        let group = non_empty(&new.group);
        let (key, mut problems) = field_problems(
            &new.name,
            display_name.as_deref(),
            &new.role,
            group.as_deref(),
            Some(&new.password_hash),
        );
        if !problems.is_empty() {
            return Err(problems.swap_remove(0));
        }
        let Some(name) = key else {
            return Err(UserError::InvalidName {
                name: new.name.clone(),
                why: "unreadable".to_owned(),
            });
        };
        let now = now_micros();
        let user = User {
            name,
            display_name,
            role: new.role.clone(),
            group,
            permissions: new.permissions.clone(),
            password_hash: new.password_hash.clone(),
            disabled: false,
            created_unix_micros: now,
            changed_unix_micros: now,
            generation: self.trees()?.db.generate_id()?,
            shared: new.shared,
        };
        match self.trees()?.users.compare_and_swap(
            user.name.as_bytes(),
            None::<&[u8]>,
            Some(user.encode()),
        )? {
            Ok(()) => Ok(user),
            Err(_) => Err(UserError::UserExists { name: user.name }),
        }
    }

    /// The user of that name (any case), if there is one.
    pub fn get_user(&self, name: &str) -> Result<Option<User>, UserError> {
        let key = normalise_name(name)?;
        match self.trees()?.users.get(key.as_bytes())? {
            None => Ok(None),
            Some(value) => decode_stored(&key, &value).map(Some),
        }
    }

    /// Every user, in name order. Damaged entries are skipped (and logged), so one bad
    /// entry cannot lock everyone out. Cheap enough to call on every change: one scan
    /// of the `users` tree.
    pub fn list_users(&self) -> Result<Vec<User>, UserError> {
        let mut users = Vec::new();
        for entry in self.trees()?.users.iter() {
            let (key, value) = entry?;
            let key = String::from_utf8_lossy(&key);
            match decode_stored(&key, &value) {
                Ok(user) => users.push(user),
                Err(err) => tracing::error!(%err, "skipping a damaged user entry"),
            }
        }
        Ok(users)
    }

    /// How many users are stored (counts the keys: a scan of the tree).
    pub fn user_count(&self) -> usize {
        self.trees().map_or(0, |trees| trees.users.len())
    }

    /// Replaces a user's password hash (checked with [`password::check_phc`]).
    pub fn set_password(&self, name: &str, password_hash: &str) -> Result<User, UserError> {
        password::check_phc(password_hash)?;
        let (user, _) = self.modify(name, |user| {
            user.password_hash = password_hash.to_owned();
            Ok(true)
        })?;
        Ok(user)
    }

    /// Disables or enables a user; returns the user and whether anything changed
    /// (false when it already was so).
    pub fn set_disabled(&self, name: &str, disabled: bool) -> Result<(User, bool), UserError> {
        self.modify(name, |user| {
            let changed = user.disabled != disabled;
            user.disabled = disabled;
            Ok(changed)
        })
    }

    /// Changes a user's display name, role, group or permissions.
    pub fn update_user(&self, name: &str, update: &UserUpdate) -> Result<User, UserError> {
        if let Some(role) = &update.role {
            check_role(role)?;
        }
        let display_name = update.display_name.as_ref().map(non_empty);
        if let Some(Some(display_name)) = &display_name {
            check_display_name(display_name)?;
        }
        let group = update.group.as_ref().map(non_empty);
        if let Some(Some(group)) = &group {
            check_group(group)?;
        }
        let (user, _) = self.modify(name, |user| {
            let before = user.clone();
            if let Some(display_name) = &display_name {
                user.display_name.clone_from(display_name);
            }
            if let Some(role) = &update.role {
                user.role.clone_from(role);
            }
            if let Some(group) = &group {
                user.group.clone_from(group);
            }
            if let Some(permissions) = &update.permissions {
                user.permissions.clone_from(permissions);
            }
            if let Some(shared) = update.shared {
                user.shared = shared;
            }
            Ok(*user != before)
        })?;
        Ok(user)
    }

    /// Removes a user.
    pub fn remove_user(&self, name: &str) -> Result<(), UserError> {
        let key = normalise_name(name)?;
        match self.trees()?.users.remove(key.as_bytes())? {
            None => Err(UserError::NoSuchUser { name: key }),
            Some(_) => Ok(()),
        }
    }

    /// Checks import rows as [`Store::import_users`] would, changing nothing; rows
    /// without a hash are accepted (a dry run hashes nothing). Every bad row is
    /// reported, some with several reasons.
    pub fn check_import(&self, rows: &[ImportRow]) -> Result<(), ImportErrors> {
        self.import_problems(rows, false).map(|_| ())
    }

    /// Adds every row as a new user in one transaction, or none of them. Rows are
    /// refused (each with its line and reason) for an invalid field, a missing or
    /// invalid hash, a name given twice in the rows (in any case), and a name that
    /// exists already: an import only adds users, it never changes one.
    pub fn import_users(&self, rows: &[ImportRow]) -> Result<ImportReport, ImportErrors> {
        let users = self.import_problems(rows, true)?;
        let now = now_micros();
        let mut encoded = Vec::with_capacity(users.len());
        for (line, mut user) in users {
            user.created_unix_micros = now;
            user.changed_unix_micros = now;
            user.generation = self.trees()?.db.generate_id().map_err(StoreError::from)?;
            encoded.push((line, user.name.clone(), user.encode()));
        }
        let applied = self.trees()?.users.transaction(|tx| {
            for (line, name, _) in &encoded {
                if tx.get(name.as_bytes())?.is_some() {
                    return Err(ConflictableTransactionError::Abort((*line, name.clone())));
                }
            }
            for (_, name, value) in &encoded {
                tx.insert(name.as_bytes(), value.as_slice())?;
            }
            Ok(())
        });
        match applied {
            Ok(()) => Ok(ImportReport {
                added: encoded.len(),
            }),
            // Added by someone else between the check and the transaction.
            Err(TransactionError::Abort((line, name))) => {
                Err(ImportErrors::BadRows(vec![BadRow {
                    line,
                    user: name.clone(),
                    reason: UserError::UserExists { name }.to_string(),
                }]))
            }
            Err(TransactionError::Storage(err)) => Err(StoreError::Database(err).into()),
        }
    }

    /// Every problem of the rows, or the users they make (times and generations still
    /// to be set).
    fn import_problems(
        &self,
        rows: &[ImportRow],
        need_hashes: bool,
    ) -> Result<Vec<(u64, User)>, ImportErrors> {
        let mut bad = Vec::new();
        let mut users = Vec::with_capacity(rows.len());
        let mut first_line: HashMap<String, u64> = HashMap::with_capacity(rows.len());
        for row in rows {
            let display_name = non_empty(&row.display_name);
            let group = non_empty(&row.group);
            let hash = row.password_hash.as_deref().filter(|h| !h.is_empty());
            let (key, problems) = field_problems(
                &row.name,
                display_name.as_deref(),
                &row.role,
                group.as_deref(),
                hash,
            );
            let mut row_bad: Vec<String> = problems.iter().map(ToString::to_string).collect();
            if need_hashes && hash.is_none() {
                row_bad.push("no password hash".to_owned());
            }
            if let Some(key) = &key {
                if let Some(first) = first_line.get(key) {
                    row_bad.push(format!(
                        "user name {key} is also on line {first} (names are case-insensitive)"
                    ));
                } else {
                    first_line.insert(key.clone(), row.line);
                    if self
                        .trees()?
                        .users
                        .contains_key(key.as_bytes())
                        .map_err(StoreError::from)?
                    {
                        row_bad.push(UserError::UserExists { name: key.clone() }.to_string());
                    }
                }
            }
            if !row_bad.is_empty() {
                bad.extend(row_bad.into_iter().map(|reason| BadRow {
                    line: row.line,
                    user: row.name.clone(),
                    reason,
                }));
                continue;
            }
            if let Some(name) = key {
                users.push((
                    row.line,
                    User {
                        name,
                        display_name,
                        role: row.role.clone(),
                        group,
                        permissions: row.permissions.clone(),
                        password_hash: hash.unwrap_or_default().to_owned(),
                        disabled: false,
                        created_unix_micros: 0,
                        changed_unix_micros: 0,
                        generation: 0,
                        shared: row.shared,
                    },
                ));
            }
        }
        if bad.is_empty() {
            Ok(users)
        } else {
            bad.sort_by_key(|row| row.line);
            Err(ImportErrors::BadRows(bad))
        }
    }

    /// Reports every change to the users from now on (see [`UsersWatch`]). Subscribe
    /// *before* reading the table, so no change falls in between.
    pub fn watch_users(&self) -> Result<UsersWatch, StoreError> {
        let mut generation = self.reopened();
        let mut subscriber = self.trees()?.users.watch_prefix(Vec::<u8>::new());
        let (sender, changes) = watch::channel(0u64);
        // The thread must not keep the database open: it holds a weak handle. When
        // the database is reopened (see `Store::reopen_blocking`) the subscriber is
        // disconnected, or sees nothing more: the thread subscribes again.
        let store = self.downgrade();
        std::thread::Builder::new()
            .name("safegate-users-watch".to_owned())
            .spawn(move || {
                loop {
                    let closed = match subscriber.next_timeout(WATCH_POLL) {
                        Ok(_) => {
                            sender.send_modify(|n| *n += 1);
                            false
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => false,
                        // The database has closed: for good, or to be reopened.
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => true,
                    };
                    if sender.is_closed() {
                        return;
                    }
                    let Some(current) = store.upgrade() else {
                        return;
                    };
                    if !closed && current.reopened() == generation {
                        continue;
                    }
                    drop(current);
                    let Some((again, reopened)) = resubscribe(&store, &sender, generation) else {
                        return;
                    };
                    (subscriber, generation) = (again, reopened);
                    // Changes may have been missed in between.
                    sender.send_modify(|n| *n += 1);
                }
            })?;
        Ok(UsersWatch { changes })
    }

    /// Applies `change` to the stored user with a compare-and-swap, retried when the
    /// user changed in between. `change` says whether it changed anything; if it did,
    /// the change time and the generation are renewed and the user is written.
    fn modify(
        &self,
        name: &str,
        change: impl Fn(&mut User) -> Result<bool, UserError>,
    ) -> Result<(User, bool), UserError> {
        let key = normalise_name(name)?;
        loop {
            let Some(old) = self.trees()?.users.get(key.as_bytes())? else {
                return Err(UserError::NoSuchUser { name: key });
            };
            let mut user = decode_stored(&key, &old)?;
            if !change(&mut user)? {
                return Ok((user, false));
            }
            user.changed_unix_micros = now_micros().max(user.changed_unix_micros);
            user.generation = self.trees()?.db.generate_id()?;
            if self
                .trees()?
                .users
                .compare_and_swap(key.as_bytes(), Some(&old), Some(user.encode()))?
                .is_ok()
            {
                return Ok((user, true));
            }
        }
    }
}

/// Subscribes to the users again once the database has been reopened since
/// `generation`; `None` when the store is gone or nobody listens any more.
fn resubscribe(
    store: &crate::WeakStore,
    sender: &watch::Sender<u64>,
    generation: u64,
) -> Option<(sled::Subscriber, u64)> {
    loop {
        if sender.is_closed() {
            return None;
        }
        let store = store.upgrade()?;
        let reopened = store.reopened();
        if reopened != generation
            && let Ok(trees) = store.trees()
        {
            return Some((trees.users.watch_prefix(Vec::<u8>::new()), reopened));
        }
        drop(store);
        std::thread::sleep(WATCH_POLL / 10);
    }
}

/// How often the watch thread checks whether anyone still listens.
const WATCH_POLL: Duration = Duration::from_secs(1);

fn decode_stored(key: &str, value: &[u8]) -> Result<User, UserError> {
    let damaged = |why: String| UserError::Damaged {
        name: key.to_owned(),
        why,
    };
    let user = User::decode(value).map_err(damaged)?;
    if user.name != key {
        return Err(damaged(format!("it holds user {:?}", user.name)));
    }
    Ok(user)
}

/// Changes to the users, from [`Store::watch_users`]. Bursts coalesce: after a wake-up,
/// read the whole table again with [`Store::list_users`].
///
/// ```no_run
/// # async fn follow(store: safegate_store::Store) -> Result<(), Box<dyn std::error::Error>> {
/// let mut watch = store.watch_users()?;
/// let mut table = store.list_users()?;
/// while watch.changed().await {
///     table = store.list_users()?;
/// }
/// # drop(table); Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct UsersWatch {
    changes: watch::Receiver<u64>,
}

impl UsersWatch {
    /// Waits until the users change (returns at once if they changed since the last
    /// call); false once the database has closed.
    pub async fn changed(&mut self) -> bool {
        self.changes.changed().await.is_ok()
    }

    /// Changes seen since the watch began (each written key counts once).
    pub fn changes(&self) -> u64 {
        *self.changes.borrow()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A cheap but valid Argon2id hash (tests only: real ones cost 20–50 ms).
    fn cheap_hash(password: &str) -> String {
        use argon2::{Algorithm, Argon2, Params, PasswordHasher, Version};
        let params = Params::new(8, 1, 1, None).unwrap();
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_with_salt(password.as_bytes(), b"saltsaltsaltsalt")
            .unwrap()
            .to_string()
    }

    fn new_user(name: &str, role: &str) -> NewUser {
        NewUser {
            shared: false,
            name: name.into(),
            display_name: Some("Ada Lovelace".into()),
            role: role.into(),
            group: None,
            permissions: BTreeSet::new(),
            password_hash: cheap_hash("analytical engine"),
        }
    }

    fn row(line: u64, name: &str, role: &str) -> ImportRow {
        ImportRow {
            shared: false,
            line,
            name: name.into(),
            display_name: None,
            role: role.into(),
            group: Some("year6".into()),
            permissions: BTreeSet::new(),
            password_hash: Some(cheap_hash(name)),
        }
    }

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    /// A user stored before `shared` existed (format 1) still reads, as not shared.
    #[test]
    fn users_stored_in_format_one_still_read() {
        #[derive(Serialize)]
        struct V1<'a> {
            name: &'a str,
            display_name: Option<&'a str>,
            role: &'a str,
            group: Option<&'a str>,
            permissions: BTreeSet<Permission>,
            password_hash: &'a str,
            disabled: bool,
            created_unix_micros: u64,
            changed_unix_micros: u64,
            generation: u64,
        }
        let old = V1 {
            name: "year6",
            display_name: Some("Year 6"),
            role: "pupil",
            group: Some("year6"),
            permissions: BTreeSet::new(),
            password_hash: "$argon2id$x",
            disabled: false,
            created_unix_micros: 1,
            changed_unix_micros: 2,
            generation: 3,
        };
        let mut bytes = vec![1u8];
        bytes.extend(postcard::to_allocvec(&old).unwrap());
        let user = User::decode(&bytes).unwrap();
        assert_eq!(user.name, "year6");
        assert_eq!(user.group.as_deref(), Some("year6"));
        assert_eq!(user.generation, 3);
        assert!(!user.shared);
        let mut again = user.clone();
        again.shared = true;
        assert_eq!(User::decode(&again.encode()).unwrap(), again);
    }

    #[test]
    fn add_get_list_and_reopen() {
        let (dir, store) = open();
        let mut staff = new_user("Ada.Lovelace", "staff");
        staff.permissions = parse_permissions("reports, rules").unwrap();
        staff.group = Some("  ".into());
        let added = store.add_user(&staff).unwrap();
        assert_eq!(added.name, "ada.lovelace");
        assert_eq!(added.group, None);
        assert!(!added.disabled);
        assert!(added.created_unix_micros > 0);
        assert_eq!(added.created_unix_micros, added.changed_unix_micros);
        assert_eq!(permissions_text(&added.permissions), "rules,reports");
        let mut pupils = new_user("year6", "pupil");
        pupils.group = Some("year6".into());
        pupils.display_name = None;
        store.add_user(&pupils).unwrap();

        assert_eq!(store.get_user("ADA.LOVELACE").unwrap(), Some(added.clone()));
        assert_eq!(store.get_user("nobody").unwrap(), None);
        let names: Vec<String> = store
            .list_users()
            .unwrap()
            .into_iter()
            .map(|u| u.name)
            .collect();
        assert_eq!(names, ["ada.lovelace", "year6"]);
        assert!(matches!(
            store.add_user(&new_user("ADA.lovelace", "pupil")),
            Err(UserError::UserExists { name }) if name == "ada.lovelace"
        ));
        // The hash never shows in Debug output.
        let debug = format!("{added:?} {staff:?}");
        assert!(!debug.contains("argon2"), "{debug}");

        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.get_user("ada.lovelace").unwrap(), Some(added));
        assert_eq!(store.user_count(), 2);
    }

    #[test]
    fn names_roles_groups_and_permissions_are_checked() {
        for good in [
            "a",
            "ada.lovelace",
            "j_smith-2",
            "ada@school.sch.uk",
            "7b",
            "x".repeat(64).as_str(),
        ] {
            normalise_name(good).unwrap();
        }
        for (bad, why) in [
            ("", "empty"),
            ("x".repeat(65).as_str(), "65 characters"),
            ("ada lovelace", "' ' is not allowed"),
            ("adà", "'à' is not allowed"),
            ("-rf", "start with a letter or a digit"),
            (".hidden", "start with a letter or a digit"),
            ("a/b", "'/' is not allowed"),
            ("a\0b", "'\\0' is not allowed"),
        ] {
            let error = normalise_name(bad).unwrap_err().to_string();
            assert!(error.contains(why), "{bad:?}: {error}");
        }
        let (_dir, store) = open();
        let error = store.add_user(&new_user("bad name", "pupil")).unwrap_err();
        assert!(matches!(error, UserError::InvalidName { .. }), "{error}");
        let error = store.add_user(&new_user("ok", "teacher")).unwrap_err();
        assert!(matches!(error, UserError::InvalidRole { .. }), "{error}");
        assert!(error.to_string().contains("pupil, staff or filter-admin"));
        let mut grouped = new_user("ok", "pupil");
        grouped.group = Some("year 6".into());
        assert!(matches!(
            store.add_user(&grouped).unwrap_err(),
            UserError::InvalidGroup { .. }
        ));
        grouped.group = Some("staff".into());
        assert!(matches!(
            store.add_user(&grouped).unwrap_err(),
            UserError::InvalidGroup { .. }
        ));
        let mut unhashed = new_user("ok", "pupil");
        unhashed.password_hash = "hunter2hunter2".into();
        assert!(matches!(
            store.add_user(&unhashed).unwrap_err(),
            UserError::Password(PasswordError::NotArgon2 { .. })
        ));
        let mut escaped = new_user("ok", "pupil");
        escaped.display_name = Some("\x1b[2J".into());
        assert!(matches!(
            store.add_user(&escaped).unwrap_err(),
            UserError::InvalidDisplayName { .. }
        ));
        assert!(store.list_users().unwrap().is_empty());
        assert!(matches!(
            parse_permissions("rules,admin"),
            Err(UserError::InvalidPermission { permission }) if permission == "admin"
        ));
        assert_eq!(parse_permissions("").unwrap(), BTreeSet::new());
        assert_eq!(
            parse_permissions("Metrics;rules").unwrap(),
            BTreeSet::from([Permission::Rules, Permission::Metrics])
        );
    }

    #[test]
    fn every_change_gives_a_new_generation() {
        let (_dir, store) = open();
        let first = store.add_user(&new_user("ada", "staff")).unwrap();
        let new_hash = cheap_hash("difference engine");
        let changed = store.set_password("Ada", &new_hash).unwrap();
        assert_eq!(changed.password_hash, new_hash);
        assert!(changed.generation > first.generation);
        assert!(changed.changed_unix_micros >= first.changed_unix_micros);
        assert_eq!(changed.created_unix_micros, first.created_unix_micros);
        assert!(matches!(
            store.set_password("ada", "plain text"),
            Err(UserError::Password(_))
        ));

        let (disabled, did) = store.set_disabled("ada", true).unwrap();
        assert!(did && disabled.disabled);
        assert!(disabled.generation > changed.generation);
        let (again, did) = store.set_disabled("ada", true).unwrap();
        assert!(!did);
        assert_eq!(again.generation, disabled.generation);
        let (enabled, did) = store.set_disabled("ada", false).unwrap();
        assert!(did && !enabled.disabled);
        assert!(enabled.generation > disabled.generation);

        let updated = store
            .update_user(
                "ada",
                &UserUpdate {
                    shared: None,
                    role: Some("filter-admin".into()),
                    group: Some(Some("office".into())),
                    permissions: Some(BTreeSet::from([Permission::Rules])),
                    display_name: Some(None),
                },
            )
            .unwrap();
        assert_eq!(updated.role, "filter-admin");
        assert_eq!(updated.group.as_deref(), Some("office"));
        assert_eq!(updated.display_name, None);
        assert!(updated.generation > enabled.generation);
        assert!(matches!(
            store.update_user(
                "ada",
                &UserUpdate {
                    role: Some("admin".into()),
                    ..UserUpdate::default()
                }
            ),
            Err(UserError::InvalidRole { .. })
        ));

        store.remove_user("ADA").unwrap();
        assert_eq!(store.get_user("ada").unwrap(), None);
        assert!(matches!(
            store.remove_user("ada"),
            Err(UserError::NoSuchUser { name }) if name == "ada"
        ));
        assert!(matches!(
            store.set_password("ada", &new_hash),
            Err(UserError::NoSuchUser { .. })
        ));
        // Removed and added again: a generation never seen before.
        let readded = store.add_user(&new_user("ada", "staff")).unwrap();
        assert!(readded.generation > updated.generation);
    }

    #[test]
    fn an_import_with_one_bad_row_changes_nothing() {
        let (_dir, store) = open();
        store.add_user(&new_user("existing", "staff")).unwrap();
        let mut rows = vec![
            row(2, "amy", "pupil"),
            row(3, "bob", "teacher"),
            row(4, "AMY", "pupil"),
            row(5, "Existing", "pupil"),
            row(6, "c d", "pupil"),
            row(7, "dan", "pupil"),
        ];
        rows[5].password_hash = Some("not a hash".into());
        let Err(ImportErrors::BadRows(bad)) = store.import_users(&rows) else {
            panic!("import accepted bad rows");
        };
        let lines: Vec<u64> = bad.iter().map(|b| b.line).collect();
        assert_eq!(lines, [3, 4, 5, 6, 7], "{bad:#?}");
        assert!(bad[0].reason.contains("role \"teacher\""), "{}", bad[0]);
        assert!(bad[1].reason.contains("also on line 2"), "{}", bad[1]);
        assert!(bad[2].reason.contains("exists already"), "{}", bad[2]);
        assert!(bad[3].reason.contains("invalid user name"), "{}", bad[3]);
        assert!(bad[4].reason.contains("Argon2"), "{}", bad[4]);
        let report = ImportErrors::BadRows(bad).to_string();
        assert!(
            report.starts_with("5 bad row(s); nothing was imported"),
            "{report}"
        );
        assert!(
            report.contains("\n  line 3 (bob): invalid role"),
            "{report}"
        );
        let names: Vec<String> = store
            .list_users()
            .unwrap()
            .into_iter()
            .map(|u| u.name)
            .collect();
        assert_eq!(names, ["existing"]);

        // A dry run accepts rows without hashes; the import itself does not.
        let mut unhashed = vec![row(2, "amy", "pupil"), row(3, "bob", "pupil")];
        unhashed[1].password_hash = None;
        store.check_import(&unhashed).unwrap();
        let Err(ImportErrors::BadRows(bad)) = store.import_users(&unhashed) else {
            panic!("import without a hash accepted");
        };
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].reason, "no password hash");
        assert_eq!(store.user_count(), 1);

        let good: Vec<ImportRow> = (0..50u64)
            .map(|i| row(i + 2, &format!("pupil{i}"), "pupil"))
            .collect();
        store.check_import(&good).unwrap();
        assert_eq!(
            store.import_users(&good).unwrap(),
            ImportReport { added: 50 }
        );
        let users = store.list_users().unwrap();
        assert_eq!(users.len(), 51);
        let generations: BTreeSet<u64> = users.iter().map(|u| u.generation).collect();
        assert_eq!(generations.len(), 51, "generations are unique");
        assert!(users.iter().all(|u| u.group.as_deref() != Some("")));
        // The same file again: every row exists already.
        let Err(ImportErrors::BadRows(bad)) = store.import_users(&good) else {
            panic!("second import accepted");
        };
        assert_eq!(bad.len(), 50);
    }

    #[test]
    fn damaged_entries_are_reported_and_skipped_in_lists() {
        let (_dir, store) = open();
        store.add_user(&new_user("ada", "staff")).unwrap();
        store
            .trees()
            .unwrap()
            .users
            .insert("bob", vec![9u8, 1, 2])
            .unwrap();
        let mut other = store.get_user("ada").unwrap().unwrap();
        other.name = "eve".into();
        store
            .trees()
            .unwrap()
            .users
            .insert("carl", other.encode())
            .unwrap();
        let error = store.get_user("bob").unwrap_err().to_string();
        assert!(error.contains("unknown format version 9"), "{error}");
        let error = store.get_user("carl").unwrap_err().to_string();
        assert!(error.contains("holds user \"eve\""), "{error}");
        let names: Vec<String> = store
            .list_users()
            .unwrap()
            .into_iter()
            .map(|u| u.name)
            .collect();
        assert_eq!(names, ["ada"]);
        let mut truncated = other.encode();
        truncated.truncate(10);
        assert!(User::decode(&truncated).is_err());
        assert!(User::decode(&[]).is_err());
    }

    #[tokio::test]
    async fn watch_users_follows_the_database_when_it_is_reopened() {
        let (_dir, store) = open();
        let mut watch = store.watch_users().unwrap();
        let reopening = store.clone();
        tokio::task::spawn_blocking(move || reopening.reopen_blocking().unwrap())
            .await
            .unwrap();
        assert_eq!(store.reopened(), 1);
        // The watch subscribes again (and says something may have changed).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let before = loop {
            assert!(
                tokio::time::timeout_at(deadline, watch.changed())
                    .await
                    .unwrap()
            );
            if watch.changes() >= 1 {
                break watch.changes();
            }
        };
        let writer = store.clone();
        tokio::task::spawn_blocking(move || writer.add_user(&new_user("ada", "staff")).unwrap())
            .await
            .unwrap();
        while watch.changes() <= before {
            assert!(
                tokio::time::timeout_at(deadline, watch.changed())
                    .await
                    .unwrap()
            );
        }
        assert_eq!(store.list_users().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn watch_users_sees_changes() {
        let (_dir, store) = open();
        let mut watch = store.watch_users().unwrap();
        assert_eq!(watch.changes(), 0);
        let writer = store.clone();
        tokio::task::spawn_blocking(move || writer.add_user(&new_user("ada", "staff")).unwrap())
            .await
            .unwrap();
        let seen = tokio::time::timeout(Duration::from_secs(5), watch.changed()).await;
        assert_eq!(seen, Ok(true));
        assert!(watch.changes() >= 1);
        assert_eq!(store.list_users().unwrap().len(), 1);

        // An import of many rows is one burst; the watch catches up with all of it.
        let rows: Vec<ImportRow> = (0..20u64)
            .map(|i| row(i + 2, &format!("p{i}"), "pupil"))
            .collect();
        store.import_users(&rows).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while watch.changes() < 21 {
            assert!(
                tokio::time::timeout_at(deadline, watch.changed())
                    .await
                    .unwrap()
            );
        }
        // The loop may end having read 21 without marking it seen, so `changed()`
        // can return once for it: wait for the count, not for one wake-up.
        store.set_disabled("ada", true).unwrap();
        while watch.changes() < 22 {
            assert!(
                tokio::time::timeout_at(deadline + Duration::from_secs(5), watch.changed())
                    .await
                    .unwrap()
            );
        }
        assert_eq!(watch.changes(), 22);
    }
}
