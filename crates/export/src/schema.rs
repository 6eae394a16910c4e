//! The trust's ClickHouse schema: one table of visit records and one of alerts, both
//! `ReplacingMergeTree`s keyed on the row's unique id, so an insert that is retried
//! (the exporter's at-least-once delivery) is merged away; queries read them with
//! `FINAL` (or `argMax`) so a duplicate not merged yet is never counted. The TTL
//! clause (retention) is added only for servers that have table TTLs (19.6 and
//! later); Debian bookworm's 18.16 does not.

use crate::config::ClickHouseConfig;

/// The first version with table TTLs.
const TTL_SINCE: (u32, u32) = (19, 6);

/// Whether a server of `version` (`18.16.1`) takes a table TTL.
pub fn supports_ttl(version: &str) -> bool {
    let mut parts = version.trim().split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= TTL_SINCE,
        _ => false,
    }
}

/// The statements that create the database and the tables, in order; `ttl` adds the
/// retention clause (`retention_days` > 0 only).
pub fn create_statements(config: &ClickHouseConfig, ttl: bool) -> Vec<String> {
    let days = config.retention_days;
    let ttl_on = |column: &str| {
        if ttl && days > 0 {
            format!("\nTTL {column} + toIntervalDay({days})")
        } else {
            String::new()
        }
    };
    vec![
        format!("CREATE DATABASE IF NOT EXISTS {}", config.database),
        format!(
            "CREATE TABLE IF NOT EXISTS {} (\n{VISIT_COLUMNS}\n) ENGINE = ReplacingMergeTree()\n\
             PARTITION BY toYYYYMM(at)\nORDER BY (school, at, id){}",
            config.visits(),
            ttl_on("at")
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {} (\n{ALERT_COLUMNS}\n) ENGINE = ReplacingMergeTree(version)\n\
             ORDER BY (school, id){}",
            config.alerts(),
            ttl_on("last_at")
        ),
    ]
}

/// The visit table's columns; the names are the JSON keys [`crate::rows`] writes.
pub const VISIT_COLUMNS: &str = "    id String,
    school String,
    at DateTime,
    at_micros UInt64,
    user Nullable(String),
    role String,
    user_group Nullable(String),
    client String,
    computer Nullable(String),
    identified_by String,
    method String,
    scheme String,
    host String,
    port UInt16,
    path Nullable(String),
    categories Array(String),
    outcome String,
    rule String,
    status UInt16,
    bytes_up UInt64,
    bytes_down UInt64,
    duration_micros UInt64,
    search_engine Nullable(String),
    search_terms Nullable(String),
    seen_as String,
    user_agent Nullable(String),
    failure Nullable(String),
    content_score Nullable(UInt32),
    content_categories Array(String)";

/// Visit columns added after the first release: `init-clickhouse` adds those a table
/// made before lacks (rows already there read as NULL and an empty list). ClickHouse
/// 18.16 has no `ADD COLUMN IF NOT EXISTS`, so it asks `system.columns` first.
pub const ADDED_VISIT_COLUMNS: [(&str, &str); 2] = [
    ("content_score", "Nullable(UInt32)"),
    ("content_categories", "Array(String)"),
];

/// The statements that add the columns of [`ADDED_VISIT_COLUMNS`] not in `present`
/// (the visit table's column names).
pub fn upgrade_statements(config: &ClickHouseConfig, present: &[&str]) -> Vec<String> {
    ADDED_VISIT_COLUMNS
        .iter()
        .filter(|(name, _)| !present.contains(name))
        .map(|(name, kind)| format!("ALTER TABLE {} ADD COLUMN {name} {kind}", config.visits()))
        .collect()
}

/// The query listing the visit table's column names (TSV, one a line).
pub fn visit_columns_query(config: &ClickHouseConfig) -> String {
    format!(
        "SELECT name FROM system.columns WHERE database = {} AND table = {} FORMAT TSV",
        crate::reading::quote(&config.database),
        crate::reading::quote(&config.table)
    )
}

/// The alert table's columns; `version` orders the states of one alert (the latest
/// wins), `evidence` is the records as JSON.
pub const ALERT_COLUMNS: &str = "    id String,
    school String,
    version UInt64,
    alert_id UInt64,
    kind String,
    severity String,
    who String,
    user Nullable(String),
    role String,
    user_group Nullable(String),
    client Nullable(String),
    computer Nullable(String),
    subject String,
    summary String,
    first_at DateTime,
    first_at_micros UInt64,
    last_at DateTime,
    last_at_micros UInt64,
    occurrences UInt64,
    status String,
    evidence String";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_shows_the_statements_init_clickhouse_runs() {
        let readme = include_str!("../../../README.md");
        let config = ClickHouseConfig::default();
        let mut statements = create_statements(&config, true);
        statements.extend(upgrade_statements(&config, &[]));
        for statement in statements {
            assert!(
                readme.contains(&format!("{statement};")),
                "README.md lacks:\n{statement}"
            );
        }
    }

    #[test]
    fn the_ttl_comes_with_19_6_and_only_when_asked() {
        assert!(!supports_ttl("18.16.1"));
        assert!(!supports_ttl("19.5.3.8"));
        assert!(supports_ttl("19.6.1"));
        assert!(supports_ttl("24.8.4.13"));
        assert!(!supports_ttl("garbage"));
        let config = ClickHouseConfig::default();
        let plain = create_statements(&config, false);
        assert!(plain.iter().all(|s| !s.contains("TTL")));
        let with = create_statements(&config, true);
        assert!(
            with[1].ends_with("TTL at + toIntervalDay(365)"),
            "{}",
            with[1]
        );
        let none = ClickHouseConfig {
            retention_days: 0,
            ..config
        };
        assert!(
            create_statements(&none, true)
                .iter()
                .all(|s| !s.contains("TTL"))
        );
    }
}
