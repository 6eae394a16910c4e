//! `safegate audit list|verify`, the part that runs where the database is: the
//! [`AuditRequest`] sent over the control socket, and [`execute`], which lists the
//! append-only, hash-chained audit log or verifies its chain.

use std::fmt::Write as _;

use safegate_store::{AuditVerification, NotedHead, Store, audit_hash_hex};
use serde::{Deserialize, Serialize};

use crate::error::CommandError;
use crate::time_text::{local_text, zone_named};

/// An audit command, as sent over the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum AuditRequest {
    /// List entries.
    List {
        /// First sequence.
        from: u64,
        /// Most entries.
        limit: usize,
        /// JSON output.
        json: bool,
        /// Time zone name for the text output.
        timezone: String,
    },
    /// Verify the chain (against a head noted earlier, if given).
    Verify {
        /// The head noted earlier.
        #[serde(default)]
        noted_head: Option<NotedHead>,
    },
}

impl AuditRequest {
    /// One line for the service's log.
    pub fn describe(&self) -> String {
        match self {
            AuditRequest::List { from, limit, .. } => {
                format!("audit list from={from} limit={limit}")
            }
            AuditRequest::Verify { noted_head: None } => "audit verify".to_owned(),
            AuditRequest::Verify {
                noted_head: Some(noted),
            } => format!("audit verify noted-head=#{}", noted.sequence),
        }
    }
}

/// The first line `safegate audit verify` prints for an intact chain.
pub const INTACT: &str = "audit log intact";
/// The first line `safegate audit verify` prints for a broken chain.
pub const BROKEN: &str = "AUDIT LOG ALTERED";

/// Does an audit command against the open database: the output and a summary line.
pub fn execute(store: &Store, request: &AuditRequest) -> Result<(Vec<u8>, String), CommandError> {
    match request {
        AuditRequest::List {
            from,
            limit,
            json,
            timezone,
        } => {
            let entries = store.audit_entries(*from, *limit)?;
            let summary = format!("{} audit entries", entries.len());
            if *json {
                let mut bytes = serde_json::to_vec_pretty(&entries)
                    .map_err(|err| CommandError::Refused(err.to_string()))?;
                bytes.push(b'\n');
                return Ok((bytes, summary));
            }
            let tz = zone_named(timezone);
            let mut text = String::new();
            for entry in &entries {
                let _ = writeln!(
                    text,
                    "#{} {} {} {} {}{}",
                    entry.sequence,
                    local_text(entry.at_unix_micros, &tz),
                    entry.actor,
                    entry.action.as_str(),
                    entry.subject,
                    entry
                        .reason
                        .as_deref()
                        .map(|why| format!(" (why: {why})"))
                        .unwrap_or_default(),
                );
                for line in entry.detail.lines() {
                    let _ = writeln!(text, "    {line}");
                }
            }
            Ok((text.into_bytes(), summary))
        }
        AuditRequest::Verify { noted_head } => {
            let text = match store.verify_audit_against(*noted_head)? {
                AuditVerification::Intact { entries, head_hash } => format!(
                    "{INTACT}: {entries} entries\nhead: #{entries} {}\n{}",
                    audit_hash_hex(&head_hash),
                    noted_head
                        .map(|noted| format!("noted head #{} found\n", noted.sequence))
                        .unwrap_or_default()
                ),
                AuditVerification::Broken { sequence, reason } => {
                    format!("{BROKEN} at entry #{sequence}: {reason}\n")
                }
            };
            let summary = text.lines().next().unwrap_or_default().to_owned();
            Ok((text.into_bytes(), summary))
        }
    }
}
