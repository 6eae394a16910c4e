//! `safegate users sync`: makes SafeGate's users match the people the school's
//! directory lists (read by the caller, who holds the directory client). People new to
//! SafeGate are added with the directory's password mark (their log-ins are checked by
//! the directory); people imported before get the directory's display name, role and
//! group; people imported before and no longer listed are **disabled, never removed**,
//! so their records and reports keep their names. SafeGate's own users (any other
//! password) are never changed, even when the directory has the same name.
//!
//! A directory that lists nobody disables nobody: an empty answer is far more likely
//! a wrong filter than a school with no people.

use std::collections::HashSet;

use safegate_store::{NewUser, Store, User, UserError, UserUpdate};
use serde::{Deserialize, Serialize};

pub use crate::users::SyncReport;
use crate::users::{Output, UsersFailure};

/// One person as the directory lists them, mapped to SafeGate's terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncedPerson {
    /// Log-in name.
    pub name: String,
    /// Name as people read it.
    pub display_name: Option<String>,
    /// Browsing role.
    pub role: String,
    /// Group within the role.
    pub group: Option<String>,
}

/// The request: everyone the directory lists, and the password hash that marks a
/// user as the directory's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersSync {
    /// Everyone listed.
    pub people: Vec<SyncedPerson>,
    /// The password hash of users imported from the directory.
    pub password_mark: String,
}

/// Applies a sync (see the module documentation) and flushes.
pub fn sync(store: &Store, command: &UsersSync) -> Result<Output, UsersFailure> {
    let mut report = SyncReport::default();
    let mut listed = HashSet::with_capacity(command.people.len());
    for person in &command.people {
        match sync_person(store, person, &command.password_mark, &mut report) {
            Ok(name) => {
                listed.insert(name);
            }
            Err(error) => report
                .skipped
                .push((person.name.clone(), error.to_string())),
        }
    }
    if !command.people.is_empty() {
        for user in store.list_users()? {
            let ours = user.password_hash == command.password_mark;
            if ours && !user.disabled && !listed.contains(&user.name) {
                store.set_disabled(&user.name, true)?;
                report.disabled += 1;
            }
        }
    }
    store.flush_blocking().map_err(UserError::from)?;
    Ok(Output::Synced(report))
}

/// Adds or updates one person; their stored name (also for SafeGate's own users, so
/// they are not counted as gone).
fn sync_person(
    store: &Store,
    person: &SyncedPerson,
    mark: &str,
    report: &mut SyncReport,
) -> Result<String, UserError> {
    let Some(user) = store.get_user(&person.name)? else {
        let user = store.add_user(&NewUser {
            name: person.name.clone(),
            display_name: person.display_name.clone(),
            role: person.role.clone(),
            group: person.group.clone(),
            permissions: Default::default(),
            password_hash: mark.to_owned(),
            shared: false,
        })?;
        report.added += 1;
        return Ok(user.name);
    };
    if user.password_hash != mark {
        report.kept_local.push(user.name.clone());
        return Ok(user.name);
    }
    if user.disabled {
        store.set_disabled(&user.name, false)?;
        report.enabled += 1;
    }
    if differs(&user, person) {
        store.update_user(
            &user.name,
            &UserUpdate {
                display_name: Some(person.display_name.clone()),
                role: Some(person.role.clone()),
                group: Some(person.group.clone()),
                ..UserUpdate::default()
            },
        )?;
        report.updated += 1;
    }
    Ok(user.name)
}

fn differs(user: &User, person: &SyncedPerson) -> bool {
    user.display_name != person.display_name
        || user.role != person.role
        || user.group != person.group
}
