//! `Proxy-Authorization: Negotiate <token>` ([`super::kerberos`]) in the proxy's
//! log-in steps: the token is checked on the blocking pool under the same failure
//! limits per address as passwords; the person it proves is a SafeGate user of that
//! name, else (with `[auth.ldap]`) the directory's person, whose groups are asked for
//! at most once per `auth.credential_cache_ttl`. A bad, expired or replayed ticket is a
//! `407` like a wrong password, never a `500`.
//!
//! Negotiate is connection-based (RFC 4559 section 4, as squid and browsers treat
//! it): a ticket is sent once on a connection, and later requests on that connection
//! without `Proxy-Authorization` are the same person's ([`ConnectionLogIn`]), so a
//! keep-alive connection costs one ticket check, not one per request.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use base64::Engine as _;
use http::HeaderValue;
use http::header::PROXY_AUTHENTICATE;
use tracing::info;

use super::directory::DIRECTORY_PASSWORD_MARK;
use super::rate_limit::Reservation;
use super::{
    Authenticator, CHALLENGE, Check, IdentifiedBy, Identity, Refusal, Target, UserEntry,
    Verification, bump, identity_of,
};
use crate::body::ResponseBody;

/// Longest Negotiate token read (Kerberos tickets with many groups reach ~12 KiB).
const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// The token of a `Negotiate` header, if it is one (the scheme without regard to
/// case); `Err` when it cannot be decoded.
pub(super) fn token(value: &HeaderValue) -> Option<Result<Vec<u8>, ()>> {
    let bytes = value.as_bytes().trim_ascii();
    let (scheme, rest) = bytes.split_at_checked(10)?;
    if !scheme.eq_ignore_ascii_case(b"negotiate ") {
        return None;
    }
    let rest = rest.trim_ascii();
    if rest.is_empty() || rest.len() > MAX_TOKEN_BYTES {
        return Some(Err(()));
    }
    Some(
        base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| ()),
    )
}

/// The person a Kerberos ticket proved on one client connection, and when. Later
/// requests on the connection without credentials are theirs for
/// `auth.credential_cache_ttl`, while the person is unchanged and not disabled.
#[derive(Debug, Default)]
pub struct ConnectionLogIn(Mutex<Option<(Arc<UserEntry>, Instant)>>);

impl ConnectionLogIn {
    /// A copy for a connection that continues this one (a decrypted CONNECT tunnel).
    pub fn inherit(&self) -> Self {
        Self(Mutex::new(self.held()))
    }

    fn held(&self) -> Option<(Arc<UserEntry>, Instant)> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn hold(&self, held: Option<(Arc<UserEntry>, Instant)>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = held;
    }
}

impl Authenticator {
    /// The person a ticket proved earlier on this connection (`log_in`), while that
    /// holds; counted as a credential-cache hit.
    pub fn connection_identity(&self, log_in: &ConnectionLogIn, peer: IpAddr) -> Option<Identity> {
        // Without Kerberos nothing is ever held: no lock on every anonymous request.
        self.kerberos.as_ref()?;
        let (entry, at) = log_in.held()?;
        let now = Instant::now();
        let current = (now.saturating_duration_since(at) <= self.cache.ttl())
            .then(|| self.unchanged(&self.users.load(), &entry.name, entry.generation))
            .flatten();
        let Some(current) = current else {
            log_in.hold(None);
            return None;
        };
        bump(&self.counters.cache_hits);
        self.note_proxy_user(&current.name, peer, now);
        Some(identity_of(&current, IdentifiedBy::ProxyAuth))
    }

    /// A Negotiate header: refused at once when malformed, when Kerberos is not set
    /// up, or when the address is locked; otherwise a ticket to check.
    pub(super) fn negotiate_check(
        &self,
        peer: IpAddr,
        token: Result<Vec<u8>, ()>,
        now: Instant,
    ) -> Check {
        let reservation = match self.reserve(peer, None, now) {
            Ok(reservation) => reservation,
            Err(refusal) => return Check::Refused(refusal),
        };
        match (token, &self.kerberos) {
            (Ok(token), Some(_)) => Check::Verify(Verification {
                peer,
                key: 0,
                target: Target::Kerberos(token),
                password: String::new(),
                reservation,
            }),
            _ => {
                info!(client = %peer, "proxy log-in failed: a Negotiate header SafeGate cannot use");
                self.failed(peer, None, reservation.fail(now));
                Check::Refused(Refusal::WrongPassword)
            }
        }
    }

    /// Checks a Kerberos ticket, then finds the person it proves.
    pub(super) async fn verify_ticket(
        &self,
        peer: IpAddr,
        token: Vec<u8>,
        reservation: Reservation,
        log_in: &ConnectionLogIn,
    ) -> Result<Identity, Refusal> {
        let Some(kerberos) = self.kerberos.as_ref().map(Arc::clone) else {
            return Err(Refusal::WrongPassword);
        };
        let accepted = tokio::task::spawn_blocking(move || kerberos.accept(&token)).await;
        let name = match accepted {
            Ok(Ok(name)) => name,
            Ok(Err(error)) => {
                info!(client = %peer, %error, "proxy log-in failed: Kerberos ticket refused");
                self.failed(peer, None, reservation.fail(Instant::now()));
                return Err(Refusal::WrongPassword);
            }
            Err(_) => return Err(Refusal::Busy),
        };
        match self.person(&name).await {
            Ok(entry) => {
                bump(&self.counters.verified);
                info!(client = %peer, user = %entry.name, role = entry.role.as_str(), "proxy log-in (Kerberos)");
                let now = Instant::now();
                self.note_proxy_user(&entry.name, peer, now);
                let identity = identity_of(&entry, IdentifiedBy::ProxyAuth);
                log_in.hold(Some((entry, now)));
                Ok(identity)
            }
            Err(refusal) => {
                info!(client = %peer, user = %name, reason = %refusal, "proxy log-in failed (Kerberos)");
                self.failed(peer, None, reservation.fail(Instant::now()));
                Err(refusal)
            }
        }
    }

    /// The SafeGate user `name`, else the directory's person (groups asked for at
    /// most once per credential-cache lifetime).
    async fn person(&self, name: &str) -> Result<Arc<UserEntry>, Refusal> {
        let local = self.users.load().get(name).cloned();
        let from_directory = local
            .as_ref()
            .is_none_or(|e| !e.disabled && &*e.password_hash == DIRECTORY_PASSWORD_MARK);
        match (local, &self.directory) {
            (Some(entry), _) if entry.disabled => Err(Refusal::Disabled),
            (Some(entry), None) => Ok(entry),
            (Some(entry), Some(_)) if !from_directory => Ok(entry),
            (_, None) => Err(Refusal::UnknownUser),
            (_, Some(directory)) => {
                if let Some(entry) = directory.checked_within(name, self.cache.ttl()) {
                    return Ok(entry);
                }
                match directory.find(name).await {
                    Ok(user) => Ok(directory.remember(name, &user, 0)),
                    Err(super::DirectoryError::Unreachable(_)) => {
                        bump(&self.counters.directory_unreachable);
                        Err(Refusal::DirectoryDown)
                    }
                    Err(super::DirectoryError::Busy) => Err(Refusal::Busy),
                    Err(_) => Err(Refusal::UnknownUser),
                }
            }
        }
    }

    /// The answer to a refused request: [`Refusal::response`], its `407` offering
    /// `Negotiate` first (and `Basic` when `auth.kerberos.basic`) with Kerberos set up.
    pub fn refusal_response(
        &self,
        refusal: &Refusal,
        target: &str,
    ) -> http::Response<ResponseBody> {
        let mut response = refusal.response(target);
        let Some(kerberos) = &self.kerberos else {
            return response;
        };
        let headers = response.headers_mut();
        if headers.remove(PROXY_AUTHENTICATE).is_some() {
            headers.append(PROXY_AUTHENTICATE, HeaderValue::from_static("Negotiate"));
            if kerberos.offers_basic() {
                headers.append(PROXY_AUTHENTICATE, HeaderValue::from_static(CHALLENGE));
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiate_tokens_are_found_and_decoded() {
        let header = |text: &str| HeaderValue::from_str(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(token(&header("Negotiate YWJj")), Some(Ok(b"abc".to_vec())));
        assert_eq!(
            token(&header("negotiate  YWJj ")),
            Some(Ok(b"abc".to_vec()))
        );
        assert_eq!(token(&header("Negotiate !!")), Some(Err(())));
        assert_eq!(token(&header("Negotiate ")), None);
        assert_eq!(token(&header("Basic YWJj")), None);
    }
}
