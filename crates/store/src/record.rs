//! One visit-log record: everything SafeGate knows about one request, allowed or
//! blocked, as PRODUCT.md "What is recorded" lists it. Stored with a compact binary
//! encoding (postcard) behind a leading format version byte, so later versions can add
//! fields and still read old records.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The current encoding version written by `Record::encode`.
pub const RECORD_VERSION: u8 = 1;

/// How the person behind a request was identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdentifiedBy {
    /// Not identified: the policy's default role.
    Default,
    /// A client address range bound to a role or a user (`[[auth.bindings]]`).
    Address,
    /// Proxy authentication (`Proxy-Authorization`).
    ProxyAuth,
    /// The transparent-mode login portal.
    Portal,
}

/// How much of the request SafeGate could see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeenAs {
    /// A plain HTTP request: method, host, path and query.
    PlainHttp,
    /// A CONNECT tunnel (or SNI): the host name only.
    ConnectHost,
    /// A decrypted HTTPS request: method, host, path and query.
    Decrypted,
}

/// What was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Passed on to the site.
    Allowed,
    /// Blocked by the policy.
    Blocked,
    /// Allowed, but the site could not be reached (DNS, refused, timeout).
    Failed,
}

/// One request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// When the request arrived, Unix microseconds.
    pub at_unix_micros: u64,
    /// User name, when known.
    pub user: Option<String>,
    /// Browsing role (`pupil`, `staff`, `filter-admin`).
    pub role: String,
    /// Group within the role.
    pub group: Option<String>,
    /// The client's address.
    pub client: IpAddr,
    /// How the person was identified.
    pub identified_by: IdentifiedBy,
    /// Request method (`CONNECT` for tunnels).
    pub method: String,
    /// `http` or `https`.
    pub scheme: String,
    /// Normalised host name.
    pub host: String,
    /// Destination port.
    pub port: u16,
    /// Path and query, when visible.
    pub path: Option<String>,
    /// Categories the address is in.
    pub categories: Vec<String>,
    /// What was decided.
    pub outcome: Outcome,
    /// The rule that decided (`category:pupil:gambling`, `default`, ...).
    pub rule: String,
    /// HTTP status sent to the client (200 for an opened tunnel).
    pub status: u16,
    /// Bytes from the client to the site (request body or tunnel upstream).
    pub bytes_up: u64,
    /// Bytes from the site to the client (response body or tunnel downstream).
    pub bytes_down: u64,
    /// From arrival to the last byte (tunnels: their lifetime), microseconds.
    pub duration_micros: u64,
    /// Search terms, when the URL was a search (engine and decoded terms).
    pub search: Option<SearchTerms>,
    /// How much of the request was visible.
    pub seen_as: SeenAs,
    /// The client's User-Agent.
    pub user_agent: Option<String>,
    /// Why the site could not be reached (`dns-failure`, `connect-timeout`, ...).
    pub failure: Option<String>,
}

/// Search terms found in a search-engine or video-site URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchTerms {
    /// The engine (`google`, `youtube`, ...).
    pub engine: String,
    /// The decoded terms, as typed.
    pub terms: String,
}

impl Record {
    /// The stored form: one version byte (`RECORD_VERSION`) followed by the postcard
    /// encoding of the record.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_into(Vec::with_capacity(256))
    }

    /// The stored form in `out`, which is cleared first (its allocation is reused).
    pub fn encode_into(&self, mut out: Vec<u8>) -> Vec<u8> {
        out.clear();
        out.push(RECORD_VERSION);
        // Encoding to a Vec cannot fail for this type: every field is a plain value
        // with a known length; postcard reports errors only for sequences of unknown
        // length and full fixed buffers.
        match postcard::to_extend(self, out) {
            Ok(out) => out,
            Err(_) => vec![RECORD_VERSION],
        }
    }

    /// Reads a stored record, checking its version byte.
    pub fn decode(bytes: &[u8]) -> Result<Self, crate::StoreError> {
        match bytes.split_first() {
            None => Err(crate::StoreError::UnknownRecordVersion(None)),
            Some((&RECORD_VERSION, rest)) => Ok(postcard::from_bytes(rest)?),
            Some((&other, _)) => Err(crate::StoreError::UnknownRecordVersion(Some(other))),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::StoreError;

    /// A realistic record (about 200 bytes encoded) for tests and benchmarks.
    pub(crate) fn sample(at: u64, user: &str, host: &str) -> Record {
        Record {
            at_unix_micros: at,
            user: Some(user.into()),
            role: "pupil".into(),
            group: Some("year-9".into()),
            client: IpAddr::from([10, 1, 2, 3]),
            identified_by: IdentifiedBy::ProxyAuth,
            method: "GET".into(),
            scheme: "http".into(),
            host: host.into(),
            port: 80,
            path: Some("/search?q=volcano+eruption%2C+%22pompeii%22".into()),
            categories: vec!["search-engines".into(), "education".into()],
            outcome: Outcome::Allowed,
            rule: "default".into(),
            status: 200,
            bytes_up: 512,
            bytes_down: 48_213,
            duration_micros: 125_000,
            search: Some(SearchTerms {
                engine: "google".into(),
                terms: "volcano eruption, \"pompeii\"".into(),
            }),
            seen_as: SeenAs::PlainHttp,
            user_agent: Some("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Firefox/128.0".into()),
            failure: None,
        }
    }

    #[test]
    fn encode_decode_roundtrip() {
        let record = sample(1_700_000_000_000_000, "alice", "www.google.com");
        let bytes = record.encode();
        assert_eq!(bytes[0], RECORD_VERSION);
        assert!(bytes.len() < 260, "{} bytes", bytes.len());
        assert_eq!(Record::decode(&bytes).unwrap(), record);

        let mut bare = record.clone();
        bare.user = None;
        bare.group = None;
        bare.path = None;
        bare.search = None;
        bare.user_agent = None;
        bare.failure = Some("dns-failure".into());
        bare.outcome = Outcome::Failed;
        bare.client = "2001:db8::1".parse().unwrap();
        assert_eq!(Record::decode(&bare.encode()).unwrap(), bare);
    }

    #[test]
    fn decode_rejects_unknown_versions_and_garbage() {
        let mut bytes = sample(1, "alice", "a.test").encode();
        bytes[0] = 2;
        assert!(matches!(
            Record::decode(&bytes),
            Err(StoreError::UnknownRecordVersion(Some(2)))
        ));
        assert!(matches!(
            Record::decode(&[]),
            Err(StoreError::UnknownRecordVersion(None))
        ));
        assert!(matches!(
            Record::decode(&[RECORD_VERSION, 0xff]),
            Err(StoreError::Decoding(_))
        ));
    }
}
