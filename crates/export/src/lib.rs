//! Export to a trust's ClickHouse (issue 25): every visit record and alert a school's
//! SafeGate stores also goes into a durable outbox in its sled database
//! ([`safegate_store::export_outbox`]); the [`exporter`] ships the outbox to ClickHouse
//! over its HTTP interface ([`client`]) as RowBinary (visits, [`row_binary`]) and
//! JSONEachRow (alerts, [`rows`]), into the tables of
//! [`schema`] (`safegate export init-clickhouse` creates them). Delivery is
//! at-least-once with stable row ids; the tables deduplicate on them, and every query
//! here reads them with `FINAL`, so a retried insert is never counted twice. The
//! trust's reports read rows back as SafeGate's own records ([`reading`]).

pub mod client;
pub mod config;
pub mod exporter;
pub mod reading;
pub mod row_binary;
pub mod rows;
pub mod schema;

pub use crate::client::ClickHouse;
pub use crate::config::{ClickHouseConfig, ExportConfig};
pub use crate::exporter::{ExportCollector, ExportStats, spawn};

/// Failures of the export.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// ClickHouse could not be reached (refused, timed out, TLS failed).
    #[error("cannot reach ClickHouse: {0}")]
    Unreachable(String),
    /// ClickHouse answered with an error.
    #[error("ClickHouse refused the request (HTTP {status}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// ClickHouse's error text.
        message: String,
    },
    /// A file named in `[export.clickhouse]` could not be read.
    #[error("{key}: cannot read {path}: {source}")]
    File {
        /// The configuration key.
        key: String,
        /// The file.
        path: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// The TLS settings (client certificate, CA) could not be used.
    #[error("export.clickhouse TLS settings: {0}")]
    Tls(reqwest::Error),
    /// The outbox could not be read or changed.
    #[error("export outbox: {0}")]
    Store(#[from] safegate_store::StoreError),
    /// A row could not be encoded or an answer decoded.
    #[error("export rows: {0}")]
    Json(#[from] serde_json::Error),
    /// A blocking task failed.
    #[error("export task: {0}")]
    Task(String),
}

/// What `init-clickhouse` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Initialised {
    /// The server's version.
    pub version: String,
    /// Whether the tables got a TTL (the server supports it and retention_days > 0).
    pub ttl: bool,
    /// The statements run.
    pub statements: Vec<String>,
}

/// Creates the database and tables (if missing), with a TTL when the server has them,
/// and adds the columns newer than the tables.
pub async fn init_clickhouse(config: &ClickHouseConfig) -> Result<Initialised, ExportError> {
    let client = ClickHouse::new(config)?;
    let version = client.version().await?;
    let ttl = schema::supports_ttl(&version) && config.retention_days > 0;
    let mut statements = schema::create_statements(config, ttl);
    for statement in &statements {
        client.query(statement).await?;
    }
    let present = client.query(&schema::visit_columns_query(config)).await?;
    let present: Vec<&str> = present.lines().map(str::trim).collect();
    for statement in schema::upgrade_statements(config, &present) {
        client.query(&statement).await?;
        statements.push(statement);
    }
    Ok(Initialised {
        version,
        ttl,
        statements,
    })
}
