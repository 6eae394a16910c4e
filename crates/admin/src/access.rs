//! Who may scrape `/metrics`: a client whose address is in `admin.metrics_allow`
//! (loopback by default, so the shipped defaults work), or any client sending
//! `Authorization: Bearer <token>` with the configured token. Everyone else gets
//! `403 Forbidden`.
//!
//! The token is read once at start from `admin.metrics_token_file` (a file readable by
//! SafeGate's user only, so the token is not in the world-readable configuration), the
//! `SAFEGATE_METRICS_TOKEN` environment variable, or, discouraged, `admin.metrics_token`
//! itself. It is compared in constant time and never logged.

use std::net::IpAddr;
use std::path::Path;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use ipnet::IpNet;
use subtle::ConstantTimeEq;

use crate::{AdminConfig, AdminError};

/// The environment variable that holds the metrics token, when set and not empty.
pub const TOKEN_ENV: &str = "SAFEGATE_METRICS_TOKEN";

/// Shortest token accepted: a guessable token is no protection.
pub const MIN_TOKEN_LEN: usize = 16;

/// The `/metrics` access rule, resolved at start.
#[derive(Clone)]
pub struct MetricsAccess {
    allow: Vec<IpNet>,
    token: Option<Vec<u8>>,
}

impl std::fmt::Debug for MetricsAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsAccess")
            .field("allow", &self.allow)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl MetricsAccess {
    /// The rule `config` describes, with the token from its file, the environment
    /// (`env_token`, normally [`TOKEN_ENV`]'s value) or the configuration, in that order.
    pub fn from_config(
        config: &AdminConfig,
        env_token: Option<String>,
    ) -> Result<Self, AdminError> {
        let from_file = match &config.metrics_token_file {
            Some(path) if !path.as_os_str().is_empty() => Some(read_token(path)?),
            _ => None,
        };
        let token = from_file
            .or(env_token.filter(|t| !t.trim().is_empty()))
            .or_else(|| Some(config.metrics_token.clone()).filter(|t| !t.is_empty()))
            .map(|t| t.trim().to_owned());
        if let Some(token) = &token
            && token.len() < MIN_TOKEN_LEN
        {
            return Err(AdminError::Token(format!(
                "the metrics token must be at least {MIN_TOKEN_LEN} characters (e.g. `openssl rand -hex 32`)"
            )));
        }
        Ok(Self {
            allow: config.metrics_allow.clone(),
            token: token.map(String::into_bytes),
        })
    }

    /// Whether a client at `peer` sending `headers` may read `/metrics`.
    pub fn allows(&self, peer: IpAddr, headers: &HeaderMap) -> bool {
        let peer = peer.to_canonical();
        if self.allow.iter().any(|net| net.contains(&peer)) {
            return true;
        }
        let Some(expected) = &self.token else {
            return false;
        };
        headers
            .get_all(AUTHORIZATION)
            .iter()
            .filter_map(|value| bearer(value.as_bytes()))
            .any(|presented| bool::from(presented.ct_eq(expected.as_slice())))
    }

    /// Whether a token is configured.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }
}

/// Serialises a secret as `<redacted>` (or `""` when empty), so that printing the
/// configuration never shows it.
pub fn serialize_redacted<S: serde::Serializer>(
    secret: &str,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(if secret.is_empty() { "" } else { "<redacted>" })
}

/// The credentials of an `Authorization: Bearer <token>` header.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty() && rest.first() == Some(&b' ')).then_some(token)
}

fn read_token(path: &Path) -> Result<String, AdminError> {
    std::fs::read_to_string(path).map_err(|e| {
        AdminError::Token(format!(
            "cannot read admin.metrics_token_file {}: {e}",
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use axum::http::HeaderValue;

    use super::*;

    const TOKEN: &str = "0123456789abcdef0123";

    fn config(allow: &[&str], token: &str) -> AdminConfig {
        AdminConfig {
            metrics_allow: allow.iter().map(|n| n.parse().unwrap()).collect(),
            metrics_token: token.to_owned(),
            ..AdminConfig::default()
        }
    }

    fn with_auth(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn addresses_in_the_allow_list_need_no_token() {
        let access = MetricsAccess::from_config(&config(&["10.0.9.0/24"], ""), None).unwrap();
        let none = HeaderMap::new();
        assert!(access.allows("10.0.9.7".parse().unwrap(), &none));
        assert!(access.allows("::ffff:10.0.9.7".parse().unwrap(), &none));
        assert!(!access.allows("10.0.8.7".parse().unwrap(), &none));
        assert!(!access.allows("127.0.0.1".parse().unwrap(), &none));
    }

    #[test]
    fn the_default_allows_loopback_only() {
        let access = MetricsAccess::from_config(&AdminConfig::default(), None).unwrap();
        assert!(access.allows("127.0.0.1".parse().unwrap(), &HeaderMap::new()));
        assert!(access.allows("::1".parse().unwrap(), &HeaderMap::new()));
        assert!(!access.allows("192.0.2.1".parse().unwrap(), &HeaderMap::new()));
    }

    #[test]
    fn the_bearer_token_must_match_exactly() {
        let access = MetricsAccess::from_config(&config(&[], TOKEN), None).unwrap();
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(access.allows(peer, &with_auth(&format!("Bearer {TOKEN}"))));
        assert!(access.allows(peer, &with_auth(&format!("bearer {TOKEN}"))));
        assert!(!access.allows(peer, &with_auth(&format!("Bearer {TOKEN}x"))));
        assert!(!access.allows(peer, &with_auth(&format!("Bearer {}", &TOKEN[1..]))));
        assert!(!access.allows(peer, &with_auth(&format!("Basic {TOKEN}"))));
        assert!(!access.allows(peer, &with_auth("Bearer ")));
        assert!(!access.allows(peer, &HeaderMap::new()));
    }

    #[test]
    fn the_token_comes_from_the_file_first_then_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, format!("{TOKEN}-file\n")).unwrap();
        let mut from_file = config(&[], "");
        from_file.metrics_token_file = Some(file);
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        let access = MetricsAccess::from_config(&from_file, Some(format!("{TOKEN}-env"))).unwrap();
        assert!(access.allows(peer, &with_auth(&format!("Bearer {TOKEN}-file"))));
        assert!(!access.allows(peer, &with_auth(&format!("Bearer {TOKEN}-env"))));
        let access =
            MetricsAccess::from_config(&config(&[], ""), Some(format!("{TOKEN}-env"))).unwrap();
        assert!(access.allows(peer, &with_auth(&format!("Bearer {TOKEN}-env"))));
        // Never printed.
        assert!(!format!("{access:?}").contains(TOKEN));
    }

    #[test]
    fn short_tokens_and_missing_files_are_refused() {
        let error = MetricsAccess::from_config(&config(&[], "short"), None).unwrap_err();
        assert!(error.to_string().contains("at least 16"), "{error}");
        let mut missing = config(&[], "");
        missing.metrics_token_file = Some("/nonexistent/safegate-token".into());
        let error = MetricsAccess::from_config(&missing, None).unwrap_err();
        assert!(error.to_string().contains("metrics_token_file"), "{error}");
    }
}
