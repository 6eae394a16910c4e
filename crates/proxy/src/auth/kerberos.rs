//! `[auth.kerberos]`: single sign-on for the explicit proxy with SPNEGO ("Negotiate",
//! RFC 4559), as squid's `negotiate_kerberos_auth`: domain-joined PCs send a Kerberos
//! service ticket for `HTTP/<proxy host>` in `Proxy-Authorization: Negotiate <token>`,
//! checked here with MIT krb5's GSS-API (the `libgssapi` crate) against the service's
//! keys in `keytab`. No password and no round trip to the KDC: the ticket proves who
//! the person is; MIT's replay cache refuses a token seen before.
//!
//! The keytab is named to MIT krb5 by `KRB5_KTNAME` (the binary sets it from
//! `auth.kerberos.keytab` at start). The principal (`alice@SCHOOL.LOCAL`) becomes the
//! user name `alice`: a SafeGate user of that name, else (with `[auth.ldap]`) the
//! directory's person and their groups. Accepting a ticket is CPU work of well under a
//! millisecond, run on the blocking pool.

use std::path::PathBuf;

use libgssapi::context::{SecurityContext, ServerCtx};
use libgssapi::credential::{Cred, CredUsage};
use libgssapi::oid::{GSS_MECH_KRB5, GSS_MECH_SPNEGO, OidSet};
use serde::{Deserialize, Serialize};

use crate::config::ConfigProblem;

/// `[auth.kerberos]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KerberosConfig {
    /// The keytab holding the service principal's keys (readable by SafeGate only).
    pub keytab: PathBuf,
    /// The service principal the tickets are for, `HTTP/<the proxy's host name>`
    /// (the realm may follow after `@`).
    pub service_principal: String,
    /// Also offer `Basic` (user name and password) in the `407`, for computers not in
    /// the domain.
    #[serde(default = "offer_basic")]
    pub basic: bool,
    /// Accept only people of this realm (e.g. `SCHOOL.LOCAL`); unset: any realm the
    /// keytab's tickets come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,
}

fn offer_basic() -> bool {
    true
}

impl KerberosConfig {
    /// Every problem, with its key under `auth.kerberos`.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if self.keytab.as_os_str().is_empty() {
            problems.push(ConfigProblem::new(
                "auth.kerberos.keytab",
                "name the keytab file, e.g. \"/etc/safegate/proxy.keytab\"",
            ));
        }
        let service = self.service_principal.split('@').next().unwrap_or_default();
        if !service
            .split_once('/')
            .is_some_and(|(s, h)| !s.is_empty() && !h.is_empty())
        {
            problems.push(ConfigProblem::new(
                "auth.kerberos.service_principal",
                format!(
                    "{:?} is not a service principal: write HTTP/<the proxy's host name>, e.g. \"HTTP/proxy.school.local\"",
                    self.service_principal
                ),
            ));
        }
        problems
    }
}

/// Why a Negotiate token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KerberosError {
    /// The keytab cannot be used (missing, unreadable, no keys).
    #[error("the keytab cannot be used: {0}")]
    Keytab(String),
    /// The token is not a ticket this service accepts (bad, expired, replayed, for
    /// another service).
    #[error("the ticket was not accepted: {0}")]
    Rejected(String),
    /// The ticket is for another service than `service_principal`.
    #[error("the ticket is for {0}, not this proxy's service principal")]
    OtherService(String),
    /// The person's realm is not `realm`.
    #[error("{0} is not of the accepted realm")]
    OtherRealm(String),
    /// The exchange needs more than one round (not Kerberos as browsers send it).
    #[error("the exchange needs more than one round")]
    MoreRounds,
}

/// The acceptor: the service's credentials from the keytab and what to accept.
pub struct Kerberos {
    cred: Cred,
    service: String,
    realm: Option<String>,
    basic: bool,
}

impl std::fmt::Debug for Kerberos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kerberos")
            .field("service", &self.service)
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

impl Kerberos {
    /// Acquires the acceptor credentials (the keytab named by `KRB5_KTNAME` is read
    /// now, so a wrong keytab fails at start).
    pub fn new(config: &KerberosConfig) -> Result<Self, KerberosError> {
        let keytab = |e: libgssapi::error::Error| KerberosError::Keytab(e.to_string());
        let mut mechs = OidSet::new();
        mechs.add(GSS_MECH_KRB5).map_err(keytab)?;
        mechs.add(GSS_MECH_SPNEGO).map_err(keytab)?;
        let cred = Cred::acquire(None, None, CredUsage::Accept, Some(&mechs)).map_err(keytab)?;
        let service = config
            .service_principal
            .split('@')
            .next()
            .unwrap_or_default();
        Ok(Self {
            cred,
            service: service.to_ascii_lowercase(),
            realm: config.realm.as_ref().map(|r| r.to_ascii_uppercase()),
            basic: config.basic,
        })
    }

    /// Whether the `407` also offers `Basic`.
    pub fn offers_basic(&self) -> bool {
        self.basic
    }

    /// Checks one Negotiate token (blocking: call on the blocking pool); the user
    /// name of the person it proves (the principal without its realm, lower case).
    pub fn accept(&self, token: &[u8]) -> Result<String, KerberosError> {
        let rejected = |e: libgssapi::error::Error| KerberosError::Rejected(e.to_string());
        let mut context = ServerCtx::new(Some(self.cred.clone()));
        // A complete context may still return a token (mutual authentication), which
        // a proxy client does not need.
        let _ = context.step(token, None).map_err(rejected)?;
        if !context.is_complete() {
            return Err(KerberosError::MoreRounds);
        }
        let target = context.target_name().map_err(rejected)?.to_string();
        let target_service = target.split('@').next().unwrap_or_default();
        if !target_service.eq_ignore_ascii_case(&self.service) {
            return Err(KerberosError::OtherService(target));
        }
        let principal = context.source_name().map_err(rejected)?.to_string();
        self.user_of(&principal)
    }

    /// `alice@SCHOOL.LOCAL` to `alice`, checking the realm.
    fn user_of(&self, principal: &str) -> Result<String, KerberosError> {
        let (user, realm) = principal.rsplit_once('@').unwrap_or((principal, ""));
        if self
            .realm
            .as_ref()
            .is_some_and(|wanted| !wanted.eq_ignore_ascii_case(realm))
        {
            return Err(KerberosError::OtherRealm(principal.to_owned()));
        }
        if user.is_empty() || user.contains('/') {
            // A service or host principal, not a person.
            return Err(KerberosError::Rejected(format!(
                "{principal} is not a person's principal"
            )));
        }
        Ok(user.to_ascii_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_principals_are_checked() {
        let config = |principal: &str| KerberosConfig {
            keytab: PathBuf::from("/etc/safegate/proxy.keytab"),
            service_principal: principal.to_owned(),
            basic: true,
            realm: None,
        };
        assert!(config("HTTP/proxy.school.local").validate().is_empty());
        assert!(config("HTTP/proxy@SCHOOL.LOCAL").validate().is_empty());
        for bad in ["HTTP", "proxy.school.local", "/x", "HTTP/"] {
            assert_eq!(config(bad).validate().len(), 1, "{bad}");
        }
    }
}
