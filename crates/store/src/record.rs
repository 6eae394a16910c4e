//! One visit-log record: everything SafeGate knows about one request, allowed or
//! blocked, as PRODUCT.md "What is recorded" lists it. Stored with a compact binary
//! encoding (postcard) behind a leading format version byte, so later versions can add
//! fields and still read old records: version 2 added the computer's name at the end,
//! and a version 1 record reads as one without a name.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The current encoding version written by `Record::encode`.
pub const RECORD_VERSION: u8 = 2;
/// The version before records named the computer (still read).
pub const RECORD_VERSION_WITHOUT_COMPUTER: u8 = 1;

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
    /// The computer's name when it was known at the time (`[devices]`, DHCP leases or
    /// reverse DNS): a shared year-group log-in is traced to a computer by it.
    #[serde(default)]
    pub computer: Option<String>,
    /// What content analysis found on the page, when it scored (see [`ContentScore`]).
    /// Stored after the postcard fields, so records written before it read as `None`.
    #[serde(skip)]
    pub content: Option<ContentScore>,
}

/// What content analysis found on a page: its score, the categories it scored for
/// and the five highest-weight phrases. Staff see it in the activity view; pupils
/// never do (the block page shows the score only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentScore {
    /// The page's score (counted categories only).
    pub score: i64,
    /// Categories with their scores, highest first.
    pub categories: Vec<(String, i64)>,
    /// The five highest-weight phrases found, highest first.
    pub phrases: Vec<(String, i32)>,
    /// Crossed the limit after the page had started streaming to the browser
    /// (recorded and alerted, not blocked).
    pub late: bool,
}

impl ContentScore {
    /// One line for lists and alerts: `gambling 150 (< online casino > 60, ...)`.
    pub fn summary(&self) -> String {
        let categories: Vec<String> = self
            .categories
            .iter()
            .map(|(name, score)| format!("{name} {score}"))
            .collect();
        let phrases: Vec<String> = self
            .phrases
            .iter()
            .map(|(phrase, weight)| format!("{phrase} {weight}"))
            .collect();
        format!(
            "score {} ({}){}: {}",
            self.score,
            categories.join(", "),
            if self.late { ", after streaming" } else { "" },
            phrases.join(", ")
        )
    }
}

/// Appends the content trailer (nothing when there is none).
fn encode_content(
    content: Option<&ContentScore>,
    out: &mut Vec<u8>,
) -> Result<(), postcard::Error> {
    if let Some(content) = content {
        postcard::to_extend(content, Appending(out))?;
    }
    Ok(())
}

/// Reads the content trailer after the postcard fields (none in older records).
fn decode_content(rest: &[u8]) -> Result<Option<ContentScore>, postcard::Error> {
    if rest.is_empty() {
        Ok(None)
    } else {
        postcard::from_bytes(rest).map(Some)
    }
}

/// A computer for people: `ICT-PC07 (10.0.3.57)`, or the address alone.
pub fn computer_text(client: IpAddr, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("{name} ({client})"),
        None => client.to_string(),
    }
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
        let mut out = Vec::with_capacity(256);
        out.push(RECORD_VERSION);
        // Encoding to a Vec cannot fail for this type: every field is a plain value
        // with a known length; postcard reports errors only for sequences of unknown
        // length and full fixed buffers.
        match postcard::to_extend(self, out) {
            Ok(mut out) => {
                if encode_content(self.content.as_ref(), &mut out).is_err() {
                    return vec![RECORD_VERSION];
                }
                out
            }
            Err(_) => vec![RECORD_VERSION],
        }
    }

    /// The record's computer for people ([`computer_text`]).
    pub fn computer_text(&self) -> String {
        computer_text(self.client, self.computer.as_deref())
    }

    /// Reads a stored record (this version or the one before), checking its version
    /// byte.
    pub fn decode(bytes: &[u8]) -> Result<Self, crate::StoreError> {
        RecordRef::decode(bytes).map(|record| record.to_record())
    }
}

/// A record borrowed from its encoding or from a [`Record`]: the same fields with
/// the text in place, so the alert engine reads a queued record without copying its
/// strings. Its encoding is byte for byte `Record`'s (postcard writes no field names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordRef<'a> {
    /// See [`Record::at_unix_micros`].
    pub at_unix_micros: u64,
    /// See [`Record::user`].
    #[serde(borrow)]
    pub user: Option<&'a str>,
    /// See [`Record::role`].
    pub role: &'a str,
    /// See [`Record::group`].
    #[serde(borrow)]
    pub group: Option<&'a str>,
    /// See [`Record::client`].
    pub client: IpAddr,
    /// See [`Record::identified_by`].
    pub identified_by: IdentifiedBy,
    /// See [`Record::method`].
    pub method: &'a str,
    /// See [`Record::scheme`].
    pub scheme: &'a str,
    /// See [`Record::host`].
    pub host: &'a str,
    /// See [`Record::port`].
    pub port: u16,
    /// See [`Record::path`].
    #[serde(borrow)]
    pub path: Option<&'a str>,
    /// See [`Record::categories`].
    #[serde(borrow)]
    pub categories: Categories<'a>,
    /// See [`Record::outcome`].
    pub outcome: Outcome,
    /// See [`Record::rule`].
    pub rule: &'a str,
    /// See [`Record::status`].
    pub status: u16,
    /// See [`Record::bytes_up`].
    pub bytes_up: u64,
    /// See [`Record::bytes_down`].
    pub bytes_down: u64,
    /// See [`Record::duration_micros`].
    pub duration_micros: u64,
    /// See [`Record::search`].
    #[serde(borrow)]
    pub search: Option<SearchTermsRef<'a>>,
    /// See [`Record::seen_as`].
    pub seen_as: SeenAs,
    /// See [`Record::user_agent`].
    #[serde(borrow)]
    pub user_agent: Option<&'a str>,
    /// See [`Record::failure`].
    #[serde(borrow)]
    pub failure: Option<&'a str>,
    /// See [`Record::computer`]. Encoded after the other fields (by hand: a version 1
    /// record ends before it).
    #[serde(skip)]
    pub computer: Option<&'a str>,
    /// See [`Record::content`] (owned: it is rare and small).
    #[serde(skip)]
    pub content: Option<ContentScore>,
}

/// Lets postcard append to a buffer it does not own, so an error leaves the buffer
/// (and the records already in it) to the caller.
struct Appending<'a>(&'a mut Vec<u8>);

impl Extend<u8> for Appending<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, bytes: I) {
        self.0.extend(bytes);
    }
}

/// Where [`RecordRef::encode_marked`] put the user's and the host's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Marks {
    /// The user name's bytes (start, end), when there is a user.
    pub(crate) user: Option<(usize, usize)>,
    /// The host name's bytes (start, end).
    pub(crate) host: (usize, usize),
}

/// [`SearchTerms`], borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchTermsRef<'a> {
    /// See [`SearchTerms::engine`].
    pub engine: &'a str,
    /// See [`SearchTerms::terms`].
    pub terms: &'a str,
}

/// A record's categories: read in place from an encoding (a few names, kept inline
/// up to four), or a `Record`'s own list.
#[derive(Debug, Clone)]
pub enum Categories<'a> {
    /// Names read from an encoding.
    Decoded(smallvec::SmallVec<[&'a str; 4]>),
    /// A record's list.
    Owned(&'a [String]),
}

impl<'a> Categories<'a> {
    /// The names, in order.
    pub fn iter(&self) -> impl Iterator<Item = &'a str> + '_ {
        let (decoded, owned): (&[&'a str], &'a [String]) = match self {
            Categories::Decoded(names) => (names.as_slice(), &[]),
            Categories::Owned(names) => (&[], names),
        };
        decoded
            .iter()
            .copied()
            .chain(owned.iter().map(String::as_str))
    }
}

impl PartialEq for Categories<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Categories<'_> {}

impl Serialize for Categories<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Categories::Decoded(names) => names.serialize(serializer),
            Categories::Owned(names) => names.serialize(serializer),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Categories<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        smallvec::SmallVec::deserialize(deserializer).map(Categories::Decoded)
    }
}

impl Record {
    /// This record, borrowed.
    pub fn as_ref(&self) -> RecordRef<'_> {
        RecordRef {
            at_unix_micros: self.at_unix_micros,
            user: self.user.as_deref(),
            role: &self.role,
            group: self.group.as_deref(),
            client: self.client,
            identified_by: self.identified_by,
            method: &self.method,
            scheme: &self.scheme,
            host: &self.host,
            port: self.port,
            path: self.path.as_deref(),
            categories: Categories::Owned(&self.categories),
            outcome: self.outcome,
            rule: &self.rule,
            status: self.status,
            bytes_up: self.bytes_up,
            bytes_down: self.bytes_down,
            duration_micros: self.duration_micros,
            search: self.search.as_ref().map(|search| SearchTermsRef {
                engine: &search.engine,
                terms: &search.terms,
            }),
            seen_as: self.seen_as,
            user_agent: self.user_agent.as_deref(),
            failure: self.failure.as_deref(),
            computer: self.computer.as_deref(),
            content: self.content.clone(),
        }
    }
}

impl<'a> RecordRef<'a> {
    /// Reads a stored record in place (this version or the one before), checking its
    /// version byte.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, crate::StoreError> {
        match bytes.split_first() {
            None => Err(crate::StoreError::UnknownRecordVersion(None)),
            Some((&RECORD_VERSION, rest)) => {
                let (mut record, tail): (Self, _) = postcard::take_from_bytes(rest)?;
                let (computer, tail) = postcard::take_from_bytes(tail)?;
                record.computer = computer;
                record.content = decode_content(tail)?;
                Ok(record)
            }
            Some((&RECORD_VERSION_WITHOUT_COMPUTER, rest)) => {
                let (mut record, tail): (Self, _) = postcard::take_from_bytes(rest)?;
                record.content = decode_content(tail)?;
                Ok(record)
            }
            Some((&other, _)) => Err(crate::StoreError::UnknownRecordVersion(Some(other))),
        }
    }

    /// Appends the stored form (as [`Record::encode`] makes it) to `out` and says
    /// where in `out` the user's and the host's names are (start, end), so the writer
    /// can index a queued record without decoding it. Postcard writes a struct as its
    /// fields one after another, so encoding the fields in runs gives the same bytes.
    /// On an error `out` may hold part of the record after what it held before.
    pub(crate) fn encode_marked(&self, out: &mut Vec<u8>) -> Result<Marks, postcard::Error> {
        let place = |out: &Vec<u8>, text: &str| (out.len() - text.len(), out.len());
        out.push(RECORD_VERSION);
        postcard::to_extend(&(self.at_unix_micros, self.user), Appending(out))?;
        let user = self.user.map(|user| place(out, user));
        postcard::to_extend(
            &(
                self.role,
                self.group,
                self.client,
                self.identified_by,
                self.method,
                self.scheme,
                self.host,
            ),
            Appending(out),
        )?;
        let host = place(out, self.host);
        postcard::to_extend(
            &(
                self.port,
                self.path,
                &self.categories,
                self.outcome,
                self.rule,
                self.status,
                self.bytes_up,
                self.bytes_down,
                self.duration_micros,
                self.search,
                self.seen_as,
                self.user_agent,
                self.failure,
                self.computer,
            ),
            Appending(out),
        )?;
        encode_content(self.content.as_ref(), out)?;
        Ok(Marks { user, host })
    }

    /// An owned copy (for alert evidence and query results).
    pub fn to_record(&self) -> Record {
        let owned = |text: Option<&str>| text.map(str::to_owned);
        Record {
            at_unix_micros: self.at_unix_micros,
            user: owned(self.user),
            role: self.role.to_owned(),
            group: owned(self.group),
            client: self.client,
            identified_by: self.identified_by,
            method: self.method.to_owned(),
            scheme: self.scheme.to_owned(),
            host: self.host.to_owned(),
            port: self.port,
            path: owned(self.path),
            categories: self.categories.iter().map(str::to_owned).collect(),
            outcome: self.outcome,
            rule: self.rule.to_owned(),
            status: self.status,
            bytes_up: self.bytes_up,
            bytes_down: self.bytes_down,
            duration_micros: self.duration_micros,
            search: self.search.map(|search| SearchTerms {
                engine: search.engine.to_owned(),
                terms: search.terms.to_owned(),
            }),
            seen_as: self.seen_as,
            user_agent: owned(self.user_agent),
            failure: owned(self.failure),
            computer: owned(self.computer),
            content: self.content.clone(),
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
            computer: None,
            content: None,
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
    fn content_scores_trail_the_fields_and_older_records_have_none() {
        let plain = sample(1_700_000_000_000_000, "alice", "casino.example");
        let older = plain.encode();
        let mut scored = plain.clone();
        scored.content = Some(ContentScore {
            score: 150,
            categories: vec![("gambling".into(), 150)],
            phrases: vec![("< online casino >".into(), 60)],
            late: true,
        });
        let bytes = scored.encode();
        assert!(bytes.starts_with(&older));
        assert_eq!(Record::decode(&bytes).unwrap(), scored);
        assert_eq!(Record::decode(&older).unwrap().content, None);
        let view = RecordRef::decode(&bytes).unwrap();
        assert_eq!(view.content, scored.content);
        let mut marked = Vec::new();
        scored.as_ref().encode_marked(&mut marked).unwrap();
        assert_eq!(marked, bytes);
        assert!(scored.content.unwrap().summary().contains("gambling 150"));
    }

    #[test]
    fn borrowed_records_encode_and_decode_as_records_do() {
        let mut record = sample(1_700_000_000_000_000, "alice", "www.google.com");
        record.categories.push("five".into());
        record.categories.extend(["six".into(), "seven".into()]);
        let bytes = record.encode();
        let mut encoded = Vec::new();
        record.as_ref().encode_marked(&mut encoded).unwrap();
        assert_eq!(encoded, bytes);
        let view = RecordRef::decode(&bytes).unwrap();
        assert_eq!(view, record.as_ref());
        assert_eq!(view.to_record(), record);
        assert_eq!(view.categories.iter().count(), 5);

        let mut bare = record.clone();
        bare.user = None;
        bare.search = None;
        bare.categories.clear();
        bare.failure = Some("dns-failure".into());
        let mut appended = vec![9, 9];
        bare.as_ref().encode_marked(&mut appended).unwrap();
        assert_eq!(appended[..2], [9, 9]);
        assert_eq!(appended[2..], bare.encode());
        assert_eq!(RecordRef::decode(&appended[2..]).unwrap().to_record(), bare);
        assert!(RecordRef::decode(&[RECORD_VERSION, 0xff]).is_err());
        assert!(RecordRef::decode(&[]).is_err());

        for record in [&record, &bare] {
            let mut marked = vec![7];
            let marks = record.as_ref().encode_marked(&mut marked).unwrap();
            assert_eq!(marked[1..], record.encode());
            let text =
                |(start, end): (usize, usize)| std::str::from_utf8(&marked[start..end]).unwrap();
            assert_eq!(marks.user.map(text), record.user.as_deref());
            assert_eq!(text(marks.host), record.host);
        }
    }

    #[test]
    fn records_name_their_computer_and_version_1_records_still_read() {
        let mut named = sample(1_700_000_000_000_000, "year6", "www.google.com");
        named.computer = Some("ICT-PC07".into());
        let bytes = named.encode();
        assert_eq!(Record::decode(&bytes).unwrap(), named);
        assert_eq!(
            RecordRef::decode(&bytes).unwrap().computer,
            Some("ICT-PC07")
        );
        let mut marked = Vec::new();
        named.as_ref().encode_marked(&mut marked).unwrap();
        assert_eq!(marked, bytes);

        // A version 1 record is a version 2 one without the trailing "no name" byte.
        let unnamed = sample(1_700_000_000_000_000, "year6", "www.google.com");
        let mut old = unnamed.encode();
        assert_eq!(old.pop(), Some(0));
        old[0] = RECORD_VERSION_WITHOUT_COMPUTER;
        assert_eq!(Record::decode(&old).unwrap(), unnamed);
        assert_eq!(RecordRef::decode(&old).unwrap().computer, None);
    }

    #[test]
    fn decode_rejects_unknown_versions_and_garbage() {
        let mut bytes = sample(1, "alice", "a.test").encode();
        bytes[0] = 3;
        assert!(matches!(
            Record::decode(&bytes),
            Err(StoreError::UnknownRecordVersion(Some(3)))
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
