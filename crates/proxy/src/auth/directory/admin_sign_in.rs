//! Admin sign-ins of directory people, remembered (bounded) so that while no server
//! answers, a person who signed in with the same password within `cache_ttl` still
//! can: the safeguarding lead can read an alert during a domain controller outage.
//! Only a keyed 64-bit hash of name and password is kept (a random key per process),
//! never the password; a wrong password or a person gone from the directory forgets
//! them at once.

use std::hash::BuildHasher;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Instant;

use tracing::warn;

use super::{Directory, DirectoryError, DirectoryUser};

/// Most admin sign-ins remembered (the oldest is forgotten first). Admin users are a
/// school's staff, so this bound is never reached in practice.
pub(super) const ADMIN_REMEMBERED: usize = 4_096;

/// One admin sign-in the directory accepted.
pub(super) struct RememberedSignIn {
    credential: u64,
    user: DirectoryUser,
    verified: Instant,
}

/// How an admin sign-in was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCheck {
    /// A directory server accepted the password just now.
    Checked(DirectoryUser),
    /// No server answered; the same password was accepted within `cache_ttl`.
    Remembered(DirectoryUser),
}

impl AdminCheck {
    /// The person, however they were checked.
    pub fn user(self) -> DirectoryUser {
        match self {
            Self::Checked(user) | Self::Remembered(user) => user,
        }
    }
}

impl Directory {
    /// Checks an admin sign-in as [`Directory::authenticate`] does and remembers a
    /// success; when no server answers, a sign-in with the same password accepted
    /// within `cache_ttl` is answered from memory (counted as unreachable either way).
    pub async fn authenticate_admin(
        &self,
        name: &str,
        password: &str,
    ) -> Result<AdminCheck, DirectoryError> {
        let name = name.to_ascii_lowercase();
        let credential = self.admin_keys.hash_one((name.as_str(), password));
        match self.authenticate(&name, password).await {
            Ok(user) => {
                self.remember_sign_in(&name, credential, &user);
                Ok(AdminCheck::Checked(user))
            }
            Err(DirectoryError::Unreachable(why)) => {
                self.unreachable_sign_ins.fetch_add(1, Ordering::Relaxed);
                match self.recall_sign_in(&name, credential) {
                    Some(user) => {
                        warn!(user = %name, %why, "directory unreachable: an admin sign-in accepted earlier keeps working (auth.ldap.cache_ttl)");
                        Ok(AdminCheck::Remembered(user))
                    }
                    None => Err(DirectoryError::Unreachable(why)),
                }
            }
            Err(error @ DirectoryError::Busy) => Err(error),
            Err(error) => {
                self.forget_sign_in(&name);
                Err(error)
            }
        }
    }

    /// Admin sign-ins that found no directory server answering, since start.
    pub fn unreachable_sign_ins(&self) -> u64 {
        self.unreachable_sign_ins.load(Ordering::Relaxed)
    }

    fn remember_sign_in(&self, name: &str, credential: u64, user: &DirectoryUser) {
        let mut remembered = self
            .admin_remembered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        super::make_room(&mut remembered, ADMIN_REMEMBERED, name, |r| r.verified);
        remembered.insert(
            Arc::from(name),
            RememberedSignIn {
                credential,
                user: user.clone(),
                verified: Instant::now(),
            },
        );
    }

    fn recall_sign_in(&self, name: &str, credential: u64) -> Option<DirectoryUser> {
        let remembered = self
            .admin_remembered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        remembered
            .get(name)
            .filter(|r| r.credential == credential && r.verified.elapsed() <= self.config.cache_ttl)
            .map(|r| r.user.clone())
    }

    fn forget_sign_in(&self, name: &str) {
        self.admin_remembered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::LdapConfig;
    use super::*;

    /// A directory whose only server is a closed loopback port, with `cache_ttl`.
    fn unreachable_directory(cache_ttl: &str) -> Directory {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(9);
        let config: LdapConfig = toml::from_str(&format!(
            r#"servers = ["ldaps://127.0.0.1:{port}"]
               bind_dn = "cn=sg"
               bind_password = "x"
               base_dn = "dc=school"
               user_filter = "(uid={{user}})"
               timeout = "2s"
               cache_ttl = "{cache_ttl}"
               groups = [{{ dn = "cn=staff", role = "staff", permissions = ["reports"] }}]"#
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        Directory::new(&config).unwrap_or_else(|e| panic!("{e}"))
    }

    fn tom() -> DirectoryUser {
        DirectoryUser {
            role: "staff".parse().unwrap_or_else(|_| panic!("a role")),
            group: None,
            permissions: ["reports".parse().unwrap_or_else(|_| panic!("a permission"))]
                .into_iter()
                .collect(),
            display_name: Some("Tom Teacher".to_owned()),
        }
    }

    #[tokio::test]
    async fn a_remembered_sign_in_works_only_with_its_password_and_within_cache_ttl() {
        let directory = unreachable_directory("1h");
        // Never signed in: refused as unreachable.
        let answer = directory.authenticate_admin("tom", "tom-pw").await;
        assert!(
            matches!(answer, Err(DirectoryError::Unreachable(_))),
            "{answer:?}"
        );
        let credential = directory.admin_keys.hash_one(("tom", "tom-pw"));
        directory.remember_sign_in("tom", credential, &tom());
        // Any case of the name, the same password: from memory; another password: no.
        let answer = directory.authenticate_admin("Tom", "tom-pw").await;
        assert_eq!(answer, Ok(AdminCheck::Remembered(tom())));
        let answer = directory.authenticate_admin("tom", "guess").await;
        assert!(
            matches!(answer, Err(DirectoryError::Unreachable(_))),
            "{answer:?}"
        );
        assert_eq!(directory.unreachable_sign_ins(), 3);

        // Past cache_ttl the memory no longer answers.
        let directory = unreachable_directory("1ms");
        directory.remember_sign_in("tom", credential, &tom());
        std::thread::sleep(Duration::from_millis(5));
        let answer = directory.authenticate_admin("tom", "tom-pw").await;
        assert!(
            matches!(answer, Err(DirectoryError::Unreachable(_))),
            "{answer:?}"
        );
    }

    #[test]
    fn the_memory_is_bounded() {
        let directory = unreachable_directory("1h");
        for i in 0..ADMIN_REMEMBERED + 10 {
            directory.remember_sign_in(&format!("u{i}"), 1, &tom());
        }
        let held = directory
            .admin_remembered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        assert_eq!(held, ADMIN_REMEMBERED);
    }
}
