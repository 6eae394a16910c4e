//! The `safegate users` commands themselves, run against an open [`Store`]: in this
//! process when the database is free, or inside `safegate run` through the control
//! socket. Either way the same [`crate::prepare`] does the database work and the same
//! [`Output::write_to`] renders it, so the output is byte for byte the same.
//!
//! Requests carry password *hashes* only: the command line hashes before sending, so
//! a password never crosses the socket and the service spends no CPU on it. Their
//! `Debug` forms and [`crate::Request::describe`] leave hashes out, so the
//! service's log never shows one.

use std::collections::BTreeSet;
use std::fmt;
use std::io::Write;

use safegate_store::users::permissions_text;
use safegate_store::{
    BadRow, ImportErrors, ImportRow, NewUser, Permission, Store, User, UserError, UserUpdate,
};
use serde::{Deserialize, Serialize};

use crate::table::{printable, write_table};
use crate::time_text::{local_text, rfc3339_text, zone_named};

/// `safegate users add`: a new user with a hashed password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersAdd {
    /// Log-in name.
    pub name: String,
    /// Name as people read it.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Browsing role.
    pub role: String,
    /// Group within the role.
    #[serde(default)]
    pub group: Option<String>,
    /// Admin permissions.
    #[serde(default)]
    pub permissions: BTreeSet<Permission>,
    /// The password's Argon2 PHC string.
    pub password_hash: String,
    /// A shared (year-group) log-in.
    #[serde(default)]
    pub shared: bool,
}

impl fmt::Debug for UsersAdd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UsersAdd")
            .field("name", &self.name)
            .field("display_name", &self.display_name)
            .field("role", &self.role)
            .field("group", &self.group)
            .field("permissions", &self.permissions)
            .field("password_hash", &"<hidden>")
            .finish()
    }
}

/// `safegate users passwd`: a new password hash for a user.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersPasswd {
    /// The user.
    pub name: String,
    /// The new password's Argon2 PHC string.
    pub password_hash: String,
}

impl fmt::Debug for UsersPasswd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UsersPasswd")
            .field("name", &self.name)
            .field("password_hash", &"<hidden>")
            .finish()
    }
}

/// `safegate users disable|enable|remove`: one user, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserName {
    /// The user.
    pub name: String,
}

/// `safegate users update`: change details other than the password.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UsersUpdate {
    /// The user.
    pub name: String,
    /// New display name.
    pub display_name: Option<String>,
    /// Remove the display name.
    pub clear_display_name: bool,
    /// New role.
    pub role: Option<String>,
    /// New group.
    pub group: Option<String>,
    /// Remove the group.
    pub clear_group: bool,
    /// New permission set (replaces the old one; empty removes every permission).
    pub permissions: Option<BTreeSet<Permission>>,
    /// Mark (true) or unmark a shared log-in.
    pub shared: Option<bool>,
}

/// How `safegate users list` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListFormat {
    /// An aligned table for people.
    #[default]
    Text,
    /// A JSON array.
    Json,
}

/// `safegate users list`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UsersList {
    /// Output format.
    pub format: ListFormat,
    /// IANA time zone for the times in the table.
    pub timezone: String,
}

/// `safegate users import`: rows read from a CSV file by the command line.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UsersImport {
    /// The file's name, for messages.
    pub source: String,
    /// The rows that could be read (with their line numbers).
    pub rows: Vec<ImportRow>,
    /// Problems the command line found while reading the file (passwords, columns);
    /// reported together with the database's findings.
    pub bad_rows: Vec<BadRow>,
    /// Only check: change nothing (rows need no hashes then).
    pub dry_run: bool,
}

/// What a users command did, ready to be written.
#[derive(Debug)]
pub enum Output {
    /// A user was added.
    Added(User),
    /// The users, in name order.
    Listed {
        /// Every user.
        users: Vec<User>,
        /// How to write them.
        format: ListFormat,
        /// Time zone name for the table.
        timezone: String,
    },
    /// A password was changed.
    PasswordChanged(User),
    /// A user was disabled or enabled.
    Disabled {
        /// The user now.
        user: User,
        /// False when it already was so.
        changed: bool,
    },
    /// A user was removed.
    Removed {
        /// The normalised name.
        name: String,
    },
    /// A user's details changed.
    Updated(User),
    /// An import was checked (dry run).
    Checked {
        /// The file.
        source: String,
        /// Rows that would be added.
        rows: usize,
    },
    /// An import was applied.
    Imported {
        /// The file.
        source: String,
        /// Users added.
        added: usize,
    },
    /// A directory sync was applied.
    Synced(SyncReport),
}

/// Why a users command failed.
#[derive(Debug, thiserror::Error)]
pub enum UsersFailure {
    /// A single-user command failed.
    #[error(transparent)]
    User(#[from] UserError),
    /// An import changed nothing.
    #[error("{source_name}: {errors}")]
    Import {
        /// The file.
        source_name: String,
        /// Why.
        errors: ImportErrors,
    },
}

fn flushed<T>(store: &Store, value: T) -> Result<T, UserError> {
    // An acknowledged change is on disk.
    store
        .flush_blocking()
        .map_err(UserError::Store)
        .map(|()| value)
}

/// Adds a user.
pub fn add(store: &Store, command: &UsersAdd) -> Result<Output, UsersFailure> {
    let user = store.add_user(&NewUser {
        shared: command.shared,
        name: command.name.clone(),
        display_name: command.display_name.clone(),
        role: command.role.clone(),
        group: command.group.clone(),
        permissions: command.permissions.clone(),
        password_hash: command.password_hash.clone(),
    })?;
    Ok(flushed(store, Output::Added(user))?)
}

/// Lists the users.
pub fn list(store: &Store, command: &UsersList) -> Result<Output, UsersFailure> {
    Ok(Output::Listed {
        users: store.list_users()?,
        format: command.format,
        timezone: command.timezone.clone(),
    })
}

/// Changes a password.
pub fn passwd(store: &Store, command: &UsersPasswd) -> Result<Output, UsersFailure> {
    let user = store.set_password(&command.name, &command.password_hash)?;
    Ok(flushed(store, Output::PasswordChanged(user))?)
}

/// Disables (`disabled`) or enables a user.
pub fn set_disabled(
    store: &Store,
    command: &UserName,
    disabled: bool,
) -> Result<Output, UsersFailure> {
    let (user, changed) = store.set_disabled(&command.name, disabled)?;
    Ok(flushed(store, Output::Disabled { user, changed })?)
}

/// Removes a user.
pub fn remove(store: &Store, command: &UserName) -> Result<Output, UsersFailure> {
    store.remove_user(&command.name)?;
    let name = safegate_store::users::normalise_name(&command.name)?;
    Ok(flushed(store, Output::Removed { name })?)
}

/// Changes a user's details.
pub fn update(store: &Store, command: &UsersUpdate) -> Result<Output, UsersFailure> {
    let update = UserUpdate {
        shared: command.shared,
        display_name: if command.clear_display_name {
            Some(None)
        } else {
            command.display_name.clone().map(Some)
        },
        role: command.role.clone(),
        group: if command.clear_group {
            Some(None)
        } else {
            command.group.clone().map(Some)
        },
        permissions: command.permissions.clone(),
    };
    let user = store.update_user(&command.name, &update)?;
    Ok(flushed(store, Output::Updated(user))?)
}

/// Checks or applies an import: every problem (the command line's and the
/// database's) is reported at once, and nothing is changed unless there is none.
pub fn import(store: &Store, command: &UsersImport) -> Result<Output, UsersFailure> {
    let failed = |errors: ImportErrors| UsersFailure::Import {
        source_name: command.source.clone(),
        errors,
    };
    if !command.bad_rows.is_empty() || command.dry_run {
        let mut bad = command.bad_rows.clone();
        match store.check_import(&command.rows) {
            Ok(()) => {}
            Err(ImportErrors::BadRows(more)) => bad.extend(more),
            Err(other) => return Err(failed(other)),
        }
        if !bad.is_empty() {
            // Stable: the command line's reason first within a line.
            bad.sort_by_key(|row| row.line);
            return Err(failed(ImportErrors::BadRows(bad)));
        }
        return Ok(Output::Checked {
            source: command.source.clone(),
            rows: command.rows.len(),
        });
    }
    let report = store.import_users(&command.rows).map_err(failed)?;
    Ok(flushed(
        store,
        Output::Imported {
            source: command.source.clone(),
            added: report.added,
        },
    )?)
}

/// One user in `users list --json`: everything but the password hash.
#[derive(Serialize)]
struct UserOut<'a> {
    name: &'a str,
    display_name: Option<&'a str>,
    role: &'a str,
    group: Option<&'a str>,
    permissions: Vec<&'static str>,
    disabled: bool,
    created: String,
    changed: String,
    created_unix_micros: u64,
    changed_unix_micros: u64,
    generation: u64,
    shared: bool,
}

fn role_and_group(user: &User) -> String {
    match &user.group {
        Some(group) => format!("{}, group {group}", user.role),
        None => format!("{}, no group", user.role),
    }
}

impl Output {
    /// One line for the service's log: what was done (never a hash).
    pub fn summary(&self) -> String {
        match self {
            Output::Added(user) => format!(
                "added {} ({}, permissions {}), generation {}",
                user.name,
                role_and_group(user),
                permissions_text(&user.permissions),
                user.generation
            ),
            Output::Listed { users, .. } => format!("{} user(s) listed", users.len()),
            Output::PasswordChanged(user) => format!(
                "password of {} changed, generation {}",
                user.name, user.generation
            ),
            Output::Disabled { user, changed } => format!(
                "{} {}{}",
                user.name,
                if user.disabled { "disabled" } else { "enabled" },
                if *changed {
                    format!(", generation {}", user.generation)
                } else {
                    " already; nothing changed".to_owned()
                }
            ),
            Output::Removed { name } => format!("removed {name}"),
            Output::Updated(user) => format!(
                "updated {} ({}, permissions {}), generation {}",
                user.name,
                role_and_group(user),
                permissions_text(&user.permissions),
                user.generation
            ),
            Output::Checked { source, rows } => {
                format!("{source}: {rows} row(s) checked, nothing changed")
            }
            Output::Imported { source, added } => format!("{source}: {added} user(s) imported"),
            Output::Synced(report) => format!(
                "directory sync: {} added, {} updated, {} enabled, {} disabled",
                report.added, report.updated, report.enabled, report.disabled
            ),
        }
    }

    /// Writes the output; only writing can fail here.
    pub fn write_to(&self, out: &mut dyn Write) -> std::io::Result<()> {
        match self {
            Output::Added(user) => writeln!(
                out,
                "added user {} ({}, permissions {})",
                user.name,
                role_and_group(user),
                permissions_text(&user.permissions)
            ),
            Output::Listed {
                users,
                format,
                timezone,
            } => write_users(users, *format, timezone, out),
            Output::PasswordChanged(user) => {
                writeln!(out, "changed the password of {}", user.name)
            }
            Output::Disabled { user, changed } => match (user.disabled, changed) {
                (true, true) => writeln!(out, "disabled {}: they can no longer log in", user.name),
                (false, true) => writeln!(out, "enabled {}: they can log in again", user.name),
                (true, false) => writeln!(out, "{} was already disabled", user.name),
                (false, false) => writeln!(out, "{} was already enabled", user.name),
            },
            Output::Removed { name } => writeln!(out, "removed user {name}"),
            Output::Updated(user) => writeln!(
                out,
                "updated {}: {}, permissions {}, display name {}",
                user.name,
                role_and_group(user),
                permissions_text(&user.permissions),
                user.display_name
                    .as_deref()
                    .map_or_else(|| "none".to_owned(), |d| format!("{d:?}"))
            ),
            Output::Checked { source, rows } => writeln!(
                out,
                "{source}: all {rows} row(s) can be imported (dry run: nothing was changed)"
            ),
            Output::Imported { source, added } => {
                writeln!(out, "imported {added} user(s) from {source}")
            }
            Output::Synced(report) => report.write_to(out),
        }
    }
}

fn write_users(
    users: &[User],
    format: ListFormat,
    timezone: &str,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let tz = zone_named(timezone);
    match format {
        ListFormat::Json => {
            let rows: Vec<UserOut<'_>> = users
                .iter()
                .map(|u| UserOut {
                    name: &u.name,
                    display_name: u.display_name.as_deref(),
                    role: &u.role,
                    group: u.group.as_deref(),
                    permissions: u.permissions.iter().map(|p| p.as_str()).collect(),
                    disabled: u.disabled,
                    created: rfc3339_text(u.created_unix_micros, &tz),
                    changed: rfc3339_text(u.changed_unix_micros, &tz),
                    created_unix_micros: u.created_unix_micros,
                    changed_unix_micros: u.changed_unix_micros,
                    generation: u.generation,
                    shared: u.shared,
                })
                .collect();
            serde_json::to_writer_pretty(&mut *out, &rows)?;
            out.write_all(b"\n")
        }
        ListFormat::Text => {
            if users.is_empty() {
                return writeln!(
                    out,
                    "no users yet (add them with `safegate users add` or `safegate users import`)"
                );
            }
            let rows: Vec<[String; 7]> = users
                .iter()
                .map(|u| {
                    [
                        u.name.clone(),
                        u.display_name
                            .as_deref()
                            .map_or_else(|| "-".to_owned(), printable),
                        u.role.clone(),
                        match (&u.group, u.shared) {
                            (Some(group), true) => format!("{group} (shared)"),
                            (None, true) => "- (shared)".to_owned(),
                            (Some(group), false) => group.clone(),
                            (None, false) => "-".to_owned(),
                        },
                        permissions_text(&u.permissions),
                        if u.disabled { "disabled" } else { "active" }.to_owned(),
                        local_text(u.changed_unix_micros, &tz),
                    ]
                })
                .collect();
            let changed = format!("CHANGED ({timezone})");
            let header = [
                "NAME",
                "DISPLAY NAME",
                "ROLE",
                "GROUP",
                "PERMISSIONS",
                "STATUS",
                changed.as_str(),
            ];
            write_table(out, header, &rows, &[])?;
            let disabled = users.iter().filter(|u| u.disabled).count();
            writeln!(out, "{} user(s), {disabled} disabled", users.len())
        }
    }
}

/// What a sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReport {
    /// People added.
    pub added: usize,
    /// People whose name, role or group changed.
    pub updated: usize,
    /// People disabled before and listed again.
    pub enabled: usize,
    /// People no longer listed, now disabled.
    pub disabled: usize,
    /// Names that are SafeGate's own users, left alone.
    pub kept_local: Vec<String>,
    /// People that could not be imported, and why.
    pub skipped: Vec<(String, String)>,
}

impl SyncReport {
    /// The report in a few lines.
    pub fn write_to(&self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(
            out,
            "directory sync: {} added, {} updated, {} enabled again, {} disabled (no longer in the directory)",
            self.added, self.updated, self.enabled, self.disabled
        )?;
        if !self.kept_local.is_empty() {
            writeln!(
                out,
                "left alone (SafeGate's own users of the same name): {}",
                self.kept_local.join(", ")
            )?;
        }
        for (name, why) in &self.skipped {
            writeln!(out, "not imported: {name}: {why}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn user(name: &str, disabled: bool) -> User {
        User {
            shared: false,
            name: name.into(),
            display_name: Some("Ada \x1b Lovelace".into()),
            role: "staff".into(),
            group: None,
            permissions: BTreeSet::from([Permission::Reports, Permission::Rules]),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            disabled,
            created_unix_micros: 1_782_900_000_000_000,
            changed_unix_micros: 1_782_900_000_000_000,
            generation: 7,
        }
    }

    fn written(output: &Output) -> String {
        let mut out = Vec::new();
        output.write_to(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn lists_never_show_hashes() {
        let listed = |format| Output::Listed {
            users: vec![user("ada", false), user("bob", true)],
            format,
            timezone: "Europe/London".into(),
        };
        let text = written(&listed(ListFormat::Text));
        assert!(!text.contains("argon2"), "{text}");
        assert!(!text.contains('\x1b'), "{text:?}");
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAME  DISPLAY NAME"), "{text}");
        assert!(lines[0].ends_with("CHANGED (Europe/London)"), "{text}");
        assert!(
            lines[1].contains("rules,reports") && lines[1].contains("active"),
            "{text}"
        );
        assert!(
            lines[2].contains("disabled") && lines[2].contains("2026-07-01 11:00:00"),
            "{text}"
        );
        assert_eq!(lines[3], "2 user(s), 1 disabled");
        let json = written(&listed(ListFormat::Json));
        assert!(!json.contains("argon2") && !json.contains("hash"), "{json}");
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value[0]["name"], "ada");
        assert_eq!(
            value[0]["permissions"],
            serde_json::json!(["rules", "reports"])
        );
        assert_eq!(value[1]["disabled"], true);
        assert_eq!(value[1]["changed"], "2026-07-01T11:00:00+01:00");
        assert_eq!(value[1]["generation"], 7);
    }

    #[test]
    fn requests_hide_hashes_in_debug_output() {
        let add = UsersAdd {
            shared: false,
            name: "ada".into(),
            display_name: None,
            role: "staff".into(),
            group: None,
            permissions: BTreeSet::new(),
            password_hash: "$argon2id$secret".into(),
        };
        let passwd = UsersPasswd {
            name: "ada".into(),
            password_hash: "$argon2id$secret".into(),
        };
        let debug = format!("{add:?} {passwd:?}");
        assert!(!debug.contains("secret"), "{debug}");
        // The JSON form (what crosses the socket) carries it.
        let json = serde_json::to_string(&add).unwrap();
        assert!(
            json.contains(r#""name":"ada""#) && json.contains("secret"),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<UsersAdd>(&json).unwrap(), add);
    }
}
