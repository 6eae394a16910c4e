//! `[export.clickhouse]`: where a school's SafeGate ships its visit records and alerts
//! (the trust's ClickHouse, over its HTTP interface), as whom, and as which school.

use std::path::PathBuf;
use std::time::Duration;

use safegate_config::ConfigProblem;
use serde::{Deserialize, Serialize};

/// `[export]`: shipping records out of the school.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExportConfig {
    /// The trust's ClickHouse; absent: nothing is exported.
    pub clickhouse: Option<ClickHouseConfig>,
}

/// `[export.clickhouse]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// The HTTP interface, e.g. `http://clickhouse.trust.example:8123` or `https://...:8443`.
    pub url: String,
    /// Database holding the tables.
    pub database: String,
    /// Table of visit records.
    pub table: String,
    /// Table of alerts.
    pub alerts_table: String,
    /// ClickHouse user.
    pub user: String,
    /// Its password (prefer `password_file`; shown as `<redacted>` by `safegate config
    /// show`).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "safegate_config::serialize_redacted"
    )]
    pub password: Option<String>,
    /// A file holding the password (first line).
    pub password_file: Option<PathBuf>,
    /// Client certificate (PEM) for TLS client authentication; with `client_key`.
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub client_key: Option<PathBuf>,
    /// Extra CA certificate (PEM) to trust for the server, besides the system's roots.
    pub ca_file: Option<PathBuf>,
    /// This school's id in the trust's tables (e.g. its URN or DfE number).
    pub school: String,
    /// Most entries sent in one insert.
    pub batch_records: usize,
    /// How long the exporter waits, once it has caught up, before it looks at the
    /// outbox again: records reach ClickHouse in inserts of this much traffic (each
    /// insert costs ClickHouse a new part; see benches/README.md, "Export").
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How long one request may take.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Entries waiting past which the technician is told (a system notice).
    pub backlog_alert: u64,
    /// Days ClickHouse keeps rows (`init-clickhouse` adds a TTL where the server
    /// supports one, 19.6 and later); 0: no TTL.
    pub retention_days: u32,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8123".to_owned(),
            database: "safegate".to_owned(),
            table: "visits".to_owned(),
            alerts_table: "alerts".to_owned(),
            user: "default".to_owned(),
            password: None,
            password_file: None,
            client_cert: None,
            client_key: None,
            ca_file: None,
            school: String::new(),
            batch_records: 20_000,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            backlog_alert: 1_000_000,
            retention_days: 365,
        }
    }
}

/// A name ClickHouse takes without quoting: letters, digits and `_`, not first a digit.
fn plain_identifier(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl ExportConfig {
    /// Every problem, with its key.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let Some(ch) = &self.clickhouse else {
            return Vec::new();
        };
        let mut problems = Vec::new();
        let mut problem = |key: &str, message: &str| {
            problems.push(ConfigProblem::new(
                format!("export.clickhouse.{key}"),
                message,
            ));
        };
        if !(ch.url.starts_with("http://") || ch.url.starts_with("https://")) {
            problem("url", "must start with http:// or https://");
        }
        for (key, name) in [
            ("database", &ch.database),
            ("table", &ch.table),
            ("alerts_table", &ch.alerts_table),
        ] {
            if !plain_identifier(name) {
                problem(key, "must be letters, digits and _ (not first a digit)");
            }
        }
        if ch.school.trim().is_empty() {
            problem("school", "must name this school (e.g. its URN)");
        }
        if ch.client_cert.is_some() != ch.client_key.is_some() {
            problem(
                "client_cert",
                "client_cert and client_key go together (both or neither)",
            );
        }
        if ch.password.is_some() && ch.password_file.is_some() {
            problem("password", "give password or password_file, not both");
        }
        if !(1..=1_000_000).contains(&ch.batch_records) {
            problem("batch_records", "must be from 1 to 1000000");
        }
        if ch.interval.is_zero() {
            problem("interval", "must be longer than 0s");
        }
        if ch.timeout.is_zero() {
            problem("timeout", "must be longer than 0s");
        }
        problems
    }
}

impl ClickHouseConfig {
    /// `database.table` for visits.
    pub fn visits(&self) -> String {
        format!("{}.{}", self.database, self.table)
    }

    /// `database.alerts_table`.
    pub fn alerts(&self) -> String {
        format!("{}.{}", self.database, self.alerts_table)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn off_by_default_and_every_bad_key_is_named() {
        assert!(ExportConfig::default().validate().is_empty());
        let config = ExportConfig {
            clickhouse: Some(ClickHouseConfig {
                url: "ftp://x".into(),
                table: "visits; DROP".into(),
                client_key: Some("k.pem".into()),
                ..ClickHouseConfig::default()
            }),
        };
        let keys: Vec<_> = config.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "export.clickhouse.url",
                "export.clickhouse.table",
                "export.clickhouse.school",
                "export.clickhouse.client_cert"
            ]
        );
    }
}
