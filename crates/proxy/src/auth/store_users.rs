//! The proxy's user table kept in step with the store's users: built from the store's users at start and
//! again whenever the store reports a change (`safegate users add|passwd|disable|...`
//! through the control socket, or an import), then swapped into the
//! [`Authenticator`] whole. The proxy itself never reads the database: a request sees
//! one table, and a change is in force from the next request on (the credential cache
//! checks every hit against the table's generation).
//!
//! A rebuild reads the whole `users` tree (a few milliseconds for thousands of users)
//! on the blocking pool; bursts of changes coalesce into one rebuild.

use std::sync::Arc;

use safegate_store::users::UserError;
use safegate_store::{Store, StoreError, User, UsersWatch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::{Authenticator, UserEntry, UserTable};

/// The store's users could not be read or watched.
#[derive(Debug, thiserror::Error)]
pub enum StoreUsersError {
    /// Subscribing to changes of the `users` tree failed.
    #[error("cannot watch the users in the database")]
    Watch(#[source] StoreError),
    /// Reading the `users` tree failed.
    #[error("cannot read the users from the database")]
    Read(#[source] UserError),
}

/// The table of `users` in the proxy's terms. A user whose role the policy does not
/// know (a damaged entry; the store checks roles) is left out with an error in the log.
pub fn table_of(users: Vec<User>) -> UserTable {
    UserTable::new(users.into_iter().filter_map(|user| {
        match user.role.parse() {
            Ok(role) => Some(UserEntry {
                name: Arc::from(user.name),
                role,
                group: user.group,
                password_hash: Arc::from(user.password_hash),
                disabled: user.disabled,
                generation: user.generation,
            }),
            Err(err) => {
                error!(user = %user.name, %err, "user left out of the proxy's user table: unknown role");
                None
            }
        }
    }))
}

/// Reads every user from the store.
fn load(store: &Store) -> Result<UserTable, StoreUsersError> {
    let users = store.list_users().map_err(StoreUsersError::Read)?;
    Ok(table_of(users))
}

/// Watches the store's users, loads the table into `auth`, and logs the bindings to
/// users that give nothing. Returns the watch for [`spawn_follower`] (subscribed
/// before reading, so no change falls in between).
pub fn start(store: &Store, auth: &Authenticator) -> Result<UsersWatch, StoreUsersError> {
    let watch = store.watch_users().map_err(StoreUsersError::Watch)?;
    let table = load(store)?;
    let users = table.len();
    auth.replace_users(table);
    info!(users, required = auth.required(), "proxy users loaded");
    for warning in auth.binding_warnings() {
        warn!("{warning}");
    }
    Ok(watch)
}

/// Rebuilds `auth`'s user table after every change reported by `watch`, until
/// `shutdown` or until the database closes. A failed rebuild keeps the previous table
/// (and is logged); the next change tries again.
pub fn spawn_follower(
    store: Store,
    mut watch: UsersWatch,
    auth: Arc<Authenticator>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = watch.changed() => if !changed { return },
            }
            let reader = store.clone();
            match tokio::task::spawn_blocking(move || load(&reader)).await {
                Ok(Ok(table)) => {
                    let users = table.len();
                    // In force before it is logged: the log line means the change applies.
                    auth.replace_users(table);
                    info!(users, "proxy user table rebuilt after a change");
                }
                Ok(Err(err)) => {
                    let cause = std::error::Error::source(&err).map(ToString::to_string);
                    let cause = cause.unwrap_or_default();
                    error!("{err}: {cause}; the previous user table stays in force");
                }
                Err(err) => {
                    error!(%err, "user table rebuild failed; the previous table stays in force");
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn user(name: &str, role: &str) -> User {
        User {
            shared: false,
            name: name.to_owned(),
            display_name: None,
            role: role.to_owned(),
            group: Some("year6".to_owned()),
            permissions: BTreeSet::new(),
            password_hash: "$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA".to_owned(),
            disabled: true,
            created_unix_micros: 1,
            changed_unix_micros: 2,
            generation: 42,
        }
    }

    #[test]
    fn users_become_entries_and_unknown_roles_are_left_out() {
        let table = table_of(vec![user("year6", "pupil"), user("odd", "teacher")]);
        assert_eq!(table.len(), 1);
        let entry = table
            .get("YEAR6")
            .unwrap_or_else(|| panic!("year6 missing"));
        assert_eq!(entry.role.as_str(), "pupil");
        assert_eq!(entry.group.as_deref(), Some("year6"));
        assert!(entry.disabled);
        assert_eq!(entry.generation, 42);
        assert!(entry.password_hash.starts_with("$argon2id$"));
    }
}
