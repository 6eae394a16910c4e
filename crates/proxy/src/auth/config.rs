//! The `[auth]` section of `safegate.toml`: whether explicit-proxy clients must log
//! in, the credential cache, the failure limits, and the address bindings.

use std::time::Duration;

use ipnet::IpNet;
use safegate_policy::Role;
use serde::{Deserialize, Serialize};

use super::directory::LdapConfig;
use super::kerberos::KerberosConfig;
use crate::config::ConfigProblem;

/// `[auth]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Explicit-proxy clients with neither credentials nor a binding get
    /// `407 Proxy Authentication Required` (false: they get the policy's default role).
    pub required: bool,
    /// How long verified credentials are trusted without checking the password again
    /// (a change of the user ends it at once).
    #[serde(with = "humantime_serde")]
    pub credential_cache_ttl: Duration,
    /// Most verified credentials kept.
    pub credential_cache_size: usize,
    /// The window in which failed log-ins are counted.
    #[serde(with = "humantime_serde")]
    pub failure_window: Duration,
    /// Failed log-ins from one client address that lock it for the rest of the window.
    pub max_failures_per_address: u32,
    /// Wrong passwords for one user that lock that user name for the rest of the window.
    pub max_failures_per_user: u32,
    /// Client address ranges bound to a role or a user; the first match wins.
    pub bindings: Vec<BindingConfig>,
    /// Which clients the login portal (`/safegate/login`) redirects: `off`,
    /// `transparent` (redirected HTTP only) or `all` (explicit-proxy clients too). It
    /// only acts while there is at least one user.
    pub portal: PortalMode,
    /// How long a portal log-in lasts without traffic from its address.
    #[serde(with = "humantime_serde")]
    pub portal_idle_timeout: Duration,
    /// What a portal log-in from a second address does while the user is still logged
    /// in on another: `allow`, `deny` or `latest-wins`.
    pub concurrent_logins: ConcurrentLogins,
    /// Log-ins of people who are not SafeGate users, checked against LDAP / Active
    /// Directory ([`super::directory`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ldap: Option<LdapConfig>,
    /// Kerberos single sign-on (`Negotiate`) for the explicit proxy
    /// ([`super::kerberos`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kerberos: Option<KerberosConfig>,
}

/// `auth.portal`: which unidentified clients are sent to the login page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PortalMode {
    /// No login portal; the login page answers 404.
    Off,
    /// Clients of the transparent HTTP listener (they cannot be asked for proxy
    /// credentials).
    #[default]
    Transparent,
    /// Transparent clients and explicit-proxy clients without credentials.
    All,
}

/// `auth.concurrent_logins`: one person, one computer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ConcurrentLogins {
    /// Both log-ins stand (the event is still logged and counted).
    Allow,
    /// The new log-in is refused until the first one is logged out or lapses.
    Deny,
    /// The new log-in stands and the old one ends.
    #[default]
    LatestWins,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            required: false,
            credential_cache_ttl: Duration::from_secs(15 * 60),
            credential_cache_size: 100_000,
            failure_window: Duration::from_secs(5 * 60),
            max_failures_per_address: 10,
            max_failures_per_user: 30,
            bindings: Vec::new(),
            portal: PortalMode::default(),
            portal_idle_timeout: Duration::from_secs(30 * 60),
            concurrent_logins: ConcurrentLogins::default(),
            ldap: None,
            kerberos: None,
        }
    }
}

/// One `[[auth.bindings]]` entry: `{ network, role, group }` or `{ network, user }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingConfig {
    /// Client addresses, e.g. `10.20.0.0/16` or `10.1.1.5/32`.
    pub network: IpNet,
    /// `pupil`, `staff` or `filter-admin` (not with `user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Group within the role, e.g. `year6` (only with `role`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// A user whose role and group the clients get, recorded as that user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// A client address range bound to a role or to a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// Client addresses this applies to.
    pub network: IpNet,
    /// What the clients get.
    pub grant: Grant,
}

/// What a binding gives its clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// A role and group, with no user name (a pupils' room, the staff VLAN).
    Role {
        /// Browsing role.
        role: Role,
        /// Group within the role.
        group: Option<String>,
    },
    /// A user's role and group, and the user's name in the visit log (the office PC).
    /// Gives nothing while that user does not exist or is disabled.
    User(String),
}

/// Largest `auth.credential_cache_size`.
const MAX_CACHE_SIZE: usize = 10_000_000;

impl AuthConfig {
    /// Every problem in this section.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = match self.bindings() {
            Ok(_) => Vec::new(),
            Err(problems) => problems,
        };
        for (key, value) in [
            ("auth.credential_cache_ttl", self.credential_cache_ttl),
            ("auth.failure_window", self.failure_window),
            ("auth.portal_idle_timeout", self.portal_idle_timeout),
        ] {
            if value.is_zero() {
                problems.push(ConfigProblem::new(key, "must be longer than 0s"));
            }
        }
        if !(1..=MAX_CACHE_SIZE).contains(&self.credential_cache_size) {
            problems.push(ConfigProblem::new(
                "auth.credential_cache_size",
                format!("must be between 1 and {MAX_CACHE_SIZE}"),
            ));
        }
        for (key, value) in [
            (
                "auth.max_failures_per_address",
                self.max_failures_per_address,
            ),
            ("auth.max_failures_per_user", self.max_failures_per_user),
        ] {
            if value == 0 {
                problems.push(ConfigProblem::new(key, "must be at least 1"));
            }
        }
        if let Some(ldap) = &self.ldap {
            problems.extend(ldap.validate());
        }
        if let Some(kerberos) = &self.kerberos {
            problems.extend(kerberos.validate());
        }
        problems
    }

    /// The bindings in the proxy's terms (networks truncated to their prefix); every
    /// bad entry is a problem named by its key.
    pub fn bindings(&self) -> Result<Vec<Binding>, Vec<ConfigProblem>> {
        let mut problems = Vec::new();
        let mut bindings = Vec::new();
        for (index, entry) in self.bindings.iter().enumerate() {
            let key = |field: &str| format!("auth.bindings[{index}].{field}");
            let grant = match (&entry.role, &entry.user) {
                (Some(_), Some(_)) => {
                    problems.push(ConfigProblem::new(
                        key("user"),
                        "a binding gives either a role (and group) or a user, not both",
                    ));
                    continue;
                }
                (None, None) => {
                    problems.push(ConfigProblem::new(
                        key("role"),
                        "a binding needs a role (pupil, staff, filter-admin) or a user",
                    ));
                    continue;
                }
                (Some(role), None) => match role.parse::<Role>() {
                    Ok(role) => Grant::Role {
                        role,
                        group: entry.group.clone(),
                    },
                    Err(_) => {
                        problems.push(ConfigProblem::new(
                            key("role"),
                            format!("`{role}` is not a role (pupil, staff, filter-admin)"),
                        ));
                        continue;
                    }
                },
                (None, Some(user)) => {
                    if entry.group.is_some() {
                        problems.push(ConfigProblem::new(
                            key("group"),
                            "a user binding takes the user's group; leave group out",
                        ));
                        continue;
                    }
                    match safegate_store::users::normalise_name(user) {
                        Ok(name) => Grant::User(name),
                        Err(error) => {
                            problems.push(ConfigProblem::new(key("user"), error.to_string()));
                            continue;
                        }
                    }
                }
            };
            if let Some(group) = &entry.group
                && group.trim().is_empty()
            {
                problems.push(ConfigProblem::new(
                    key("group"),
                    "must name a group (or be left out)",
                ));
                continue;
            }
            bindings.push(Binding {
                network: entry.network.trunc(),
                grant,
            });
        }
        if problems.is_empty() {
            Ok(bindings)
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn binding(
        network: &str,
        role: Option<&str>,
        group: Option<&str>,
        user: Option<&str>,
    ) -> BindingConfig {
        BindingConfig {
            network: network.parse().unwrap(),
            role: role.map(str::to_owned),
            group: group.map(str::to_owned),
            user: user.map(str::to_owned),
        }
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(AuthConfig::default().validate(), []);
        assert!(!AuthConfig::default().required);
    }

    #[test]
    fn bindings_are_checked_with_their_keys() {
        let config = AuthConfig {
            bindings: vec![
                binding("10.20.6.7/24", Some("pupil"), Some("year6"), None),
                binding("10.1.1.5/32", None, None, Some("Office")),
                binding("10.0.0.0/8", Some("teacher"), None, None),
                binding("10.0.0.0/8", None, None, None),
                binding("10.0.0.0/8", Some("staff"), None, Some("x")),
                binding("10.0.0.0/8", None, Some("g"), Some("x")),
                binding("10.0.0.0/8", None, None, Some("-bad")),
            ],
            credential_cache_size: 0,
            max_failures_per_user: 0,
            ..AuthConfig::default()
        };
        let keys: Vec<String> = config.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "auth.bindings[2].role",
                "auth.bindings[3].role",
                "auth.bindings[4].user",
                "auth.bindings[5].group",
                "auth.bindings[6].user",
                "auth.credential_cache_size",
                "auth.max_failures_per_user",
            ]
        );
        let good = AuthConfig {
            bindings: config.bindings[..2].to_vec(),
            ..AuthConfig::default()
        };
        let bindings = good.bindings().unwrap();
        assert_eq!(bindings[0].network.to_string(), "10.20.6.0/24");
        assert_eq!(
            bindings[0].grant,
            Grant::Role {
                role: Role::Pupil,
                group: Some("year6".into())
            }
        );
        assert_eq!(bindings[1].grant, Grant::User("office".into()));
    }
}
