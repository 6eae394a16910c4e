//! The users the proxy knows, in memory: what a log-in is checked against. The proxy
//! never reads the database; the binary builds a [`UserTable`] from the store at start
//! and again whenever the store reports a change, and swaps it in whole
//! ([`super::Authenticator::replace_users`]). Requests in flight keep the table they
//! started with.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use safegate_policy::Role;

/// One user as the proxy sees it. `Debug` leaves the password hash out.
#[derive(Clone, PartialEq, Eq)]
pub struct UserEntry {
    /// The log-in name, normalised (lower-case), as the store keeps it.
    pub name: Arc<str>,
    /// Browsing role.
    pub role: Role,
    /// Group within the role.
    pub group: Option<String>,
    /// The password's Argon2 PHC string.
    pub password_hash: Arc<str>,
    /// A disabled user cannot log in, and user bindings to them give nothing.
    pub disabled: bool,
    /// Changes on every change of the user and never repeats: verified credentials
    /// are only trusted while it is the same.
    pub generation: u64,
}

impl fmt::Debug for UserEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserEntry")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("group", &self.group)
            .field("password_hash", &"<hidden>")
            .field("disabled", &self.disabled)
            .field("generation", &self.generation)
            .finish()
    }
}

/// Every user, by normalised name.
#[derive(Debug, Default, Clone)]
pub struct UserTable {
    users: HashMap<Arc<str>, Arc<UserEntry>>,
}

impl UserTable {
    /// A table of `entries`; names are lower-cased (the store's names already are), a
    /// later entry with the same name replaces an earlier one.
    pub fn new(entries: impl IntoIterator<Item = UserEntry>) -> Self {
        let users = entries
            .into_iter()
            .map(|mut entry| {
                if entry.name.bytes().any(|b| b.is_ascii_uppercase()) {
                    entry.name = Arc::from(entry.name.to_ascii_lowercase());
                }
                (Arc::clone(&entry.name), Arc::new(entry))
            })
            .collect();
        Self { users }
    }

    /// The user called `name`, in any case (names are case-insensitive).
    pub fn get(&self, name: &str) -> Option<&Arc<UserEntry>> {
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            self.users.get(name.to_ascii_lowercase().as_str())
        } else {
            self.users.get(name)
        }
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there are no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> UserEntry {
        UserEntry {
            name: Arc::from(name),
            role: Role::Staff,
            group: None,
            password_hash: Arc::from("$argon2id$secret"),
            disabled: false,
            generation: 1,
        }
    }

    #[test]
    fn names_are_case_insensitive_and_hashes_hidden() {
        let table = UserTable::new([entry("ada"), entry("Bob.Smith")]);
        assert_eq!(table.len(), 2);
        assert_eq!(table.get("ADA").map(|u| u.generation), Some(1));
        assert_eq!(table.get("bob.smith").map(|u| &*u.name), Some("bob.smith"));
        assert!(table.get("carol").is_none());
        let debug = format!("{:?}", table.get("ada"));
        assert!(!debug.contains("secret"), "{debug}");
    }
}
