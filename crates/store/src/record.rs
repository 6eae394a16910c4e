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
    /// A client address range bound to a role (`policy.client_roles`).
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
