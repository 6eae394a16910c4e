//! Everyone in the directory, for `safegate users sync`: one search with
//! `user_filter` (its `{user}` as `*`) bound as the search account, each person's
//! groups mapped as at log-in (first mapping wins; people in no mapped group are left
//! out unless `unmatched_role` is set). The first server that answers is read.

use ldap3::{Scope, SearchEntry};
use tracing::{debug, warn};

use super::{Directory, DirectoryError, DirectoryUser, PERSON_ATTRIBUTES, Step, display_name};

/// One person found in the directory, with what their groups give them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryPerson {
    /// The log-in name (`sAMAccountName`, else `uid`), lower case.
    pub name: String,
    /// Role, group, permissions and display name, as a log-in would get them.
    pub user: DirectoryUser,
}

impl Directory {
    /// Everyone `user_filter` finds, mapped; the first server that answers is read.
    pub async fn people(&self) -> Result<Vec<DirectoryPerson>, DirectoryError> {
        let mut last = String::from("no server is configured");
        for server in &self.config.servers {
            match self.people_on(server).await {
                Ok(people) => return Ok(people),
                Err(Step::Down(why)) => {
                    warn!(server = %server, %why, "directory server did not answer; trying the next");
                    last = format!("{server}: {why}");
                }
                Err(Step::Refused(error)) => return Err(error),
            }
        }
        Err(DirectoryError::Unreachable(last))
    }

    async fn people_on(&self, server: &str) -> Result<Vec<DirectoryPerson>, Step> {
        let (mut ldap, driver) = self.connect(server).await?;
        let result = self.read_people(&mut ldap).await;
        let _ = tokio::time::timeout(self.config.timeout, ldap.unbind()).await;
        driver.abort();
        result
    }

    async fn read_people(&self, ldap: &mut ldap3::Ldap) -> Result<Vec<DirectoryPerson>, Step> {
        self.bind_search_account(ldap).await?;
        let filter = self.config.user_filter.replace("{user}", "*");
        let (entries, _) = ldap
            .with_timeout(self.config.timeout)
            .search(
                &self.config.base_dn,
                Scope::Subtree,
                &filter,
                PERSON_ATTRIBUTES.to_vec(),
            )
            .await
            .map_err(|e| Step::Down(e.to_string()))?
            .success()
            .map_err(|e| Step::Down(e.to_string()))?;
        let mut people = Vec::with_capacity(entries.len());
        for entry in entries {
            let person = SearchEntry::construct(entry);
            let Some(name) = login_name(&person) else {
                debug!(dn = %person.dn, "directory entry without sAMAccountName or uid: skipped");
                continue;
            };
            let groups = self.groups_of(ldap, &person).await?;
            match self.map_groups(&groups, display_name(&person)) {
                Ok(user) => people.push(DirectoryPerson { name, user }),
                Err(_) => debug!(user = %name, "in none of the mapped groups: not imported"),
            }
        }
        Ok(people)
    }
}

/// `sAMAccountName`, else `uid`, lower case.
fn login_name(person: &SearchEntry) -> Option<String> {
    ["sAMAccountName", "uid"]
        .iter()
        .find_map(|a| person.attrs.get(*a)?.first())
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
}

impl Directory {
    /// One person by log-in name, without their password (their identity proven
    /// otherwise, by a Kerberos ticket): found and mapped as at log-in, with the
    /// search account; the first server that answers is asked.
    pub async fn find(&self, name: &str) -> Result<DirectoryUser, DirectoryError> {
        let _slot = tokio::time::timeout(self.config.timeout, self.slots.acquire())
            .await
            .map_err(|_| DirectoryError::Busy)?
            .map_err(|_| DirectoryError::Busy)?;
        let mut last = String::from("no server is configured");
        for server in &self.config.servers {
            match self.find_on(server, name).await {
                Ok(user) => return Ok(user),
                Err(Step::Down(why)) => last = format!("{server}: {why}"),
                Err(Step::Refused(error)) => return Err(error),
            }
        }
        Err(DirectoryError::Unreachable(last))
    }

    async fn find_on(&self, server: &str, name: &str) -> Result<DirectoryUser, Step> {
        let (mut ldap, driver) = self.connect(server).await?;
        let result = self.find_with(&mut ldap, name).await;
        let _ = tokio::time::timeout(self.config.timeout, ldap.unbind()).await;
        driver.abort();
        result
    }

    async fn find_with(&self, ldap: &mut ldap3::Ldap, name: &str) -> Result<DirectoryUser, Step> {
        self.bind_search_account(ldap).await?;
        let filter = self
            .config
            .user_filter
            .replace("{user}", &ldap3::ldap_escape(name));
        let (entries, _) = ldap
            .with_timeout(self.config.timeout)
            .search(
                &self.config.base_dn,
                Scope::Subtree,
                &filter,
                PERSON_ATTRIBUTES.to_vec(),
            )
            .await
            .map_err(|e| Step::Down(e.to_string()))?
            .success()
            .map_err(|e| Step::Down(e.to_string()))?;
        let [entry] = entries.as_slice() else {
            return Err(Step::Refused(DirectoryError::UnknownUser));
        };
        let person = SearchEntry::construct(entry.clone());
        let groups = self.groups_of(ldap, &person).await?;
        self.map_groups(&groups, display_name(&person))
            .map_err(Step::Refused)
    }
}
