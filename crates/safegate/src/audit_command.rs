//! `safegate audit list|verify`: the append-only, hash-chained audit log of policy
//! changes, unblocks, review decisions, alert handling and views of one person's
//! history. Like `safegate log`, it works on the database directly or, while SafeGate
//! runs, through its control socket ([`crate::control`]).

use std::fmt::Write as _;

use anyhow::Result;
use clap::{Args, Subcommand};
use safegate_store::{AuditVerification, NotedHead, Store, audit_hash_hex};
use serde::{Deserialize, Serialize};

use crate::cli::ConfigArgs;
use crate::control::{CommandError, Request, open_store_or_connect};
use crate::settings::Config;
use crate::time_arg::{local_text, policy_timezone, zone_named};

/// `safegate audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditAction {
    /// List audit entries, oldest first: sequence, time (school time), who, action,
    /// subject, what changed and why.
    List(AuditListArgs),
    /// Check the whole chain (every entry's hash and link, no gaps); prints the head's
    /// sequence and hash to note down, and exits with status 1 if anything was altered
    /// or removed. With --noted-head, also that the chain still holds a head noted
    /// earlier (from this output or the service's log): removing the newest entries
    /// and rewriting the head is caught only this way.
    Verify(AuditVerifyArgs),
}

/// `safegate audit list`.
#[derive(Debug, Args)]
pub struct AuditListArgs {
    /// First entry to show (sequence number, from 1).
    #[arg(long, default_value_t = 1)]
    pub from: u64,
    /// Most entries to show.
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
    /// JSON (an array of entries) instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `safegate audit verify`.
#[derive(Debug, Args)]
pub struct AuditVerifyArgs {
    /// A head noted earlier, as printed ("#12 3fa0…") or logged ("12:3fa0…").
    #[arg(long, value_name = "HEAD", value_parser = parse_noted_head)]
    pub noted_head: Option<NotedHead>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

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

/// Runs `safegate audit ...`.
pub fn run(action: &AuditAction) -> Result<()> {
    let (config_args, request) = match action {
        AuditAction::List(args) => {
            let config = Config::load(&args.config.config, &args.config.set)?;
            let (_, timezone) = policy_timezone(&config.policy.file);
            (
                config,
                AuditRequest::List {
                    from: args.from,
                    limit: args.limit,
                    json: args.json,
                    timezone,
                },
            )
        }
        AuditAction::Verify(args) => (
            Config::load(&args.config.config, &args.config.set)?,
            AuditRequest::Verify {
                noted_head: args.noted_head,
            },
        ),
    };
    let access = open_store_or_connect(&config_args.data_dir)?;
    let mut out = Vec::new();
    access.run(&Request::Audit(request.clone()), &mut out)?;
    let text = String::from_utf8_lossy(&out);
    print!("{text}");
    if matches!(request, AuditRequest::Verify { .. }) && !text.starts_with(INTACT) {
        anyhow::bail!("the audit log was altered or entries were removed");
    }
    Ok(())
}

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

fn parse_noted_head(text: &str) -> Result<NotedHead, String> {
    NotedHead::parse(text).ok_or_else(|| {
        "expected a sequence and a 64-digit hex hash, as `safegate audit verify` prints them: \"#12 3fa0…\" or \"12:3fa0…\"".to_owned()
    })
}
