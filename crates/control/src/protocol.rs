//! The control socket's protocol: the [`Request`] a client sends (one JSON line), the
//! [`Status`] line the server answers, and what a command produces ([`Output`]) or why
//! it failed ([`CommandError`](crate::error::CommandError)). The wire format is described in the crate's
//! documentation.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use safegate_store::StoreError;
use safegate_store::users::permissions_text;
use serde::{Deserialize, Serialize};

use crate::log::{self, LogExport, LogPurge, LogQuery};
use crate::users::{self, UserName, UsersAdd, UsersImport, UsersList, UsersPasswd, UsersUpdate};

/// The socket's file name in `data_dir`.
pub const SOCKET_NAME: &str = "control.sock";
/// How long a client may take to send its command.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Commands served at once; more connections are told to try again.
pub const MAX_CONCURRENT: usize = 4;
/// Longest command line accepted: an import of tens of thousands of users (about
/// 250 bytes a row with its hash). Only SafeGate's own user and root get this far.
pub(crate) const MAX_REQUEST_BYTES: u64 = 32 * 1024 * 1024;
/// Longest status line accepted by the client (an import's report names every bad
/// row).
pub(crate) const MAX_STATUS_BYTES: u64 = 16 * 1024 * 1024;

/// A command sent over the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    /// `safegate log query`.
    LogQuery(LogQuery),
    /// `safegate log purge`.
    LogPurge(LogPurge),
    /// `safegate log export`.
    LogExport(LogExport),
    /// `safegate users add`.
    UsersAdd(UsersAdd),
    /// `safegate users list`.
    UsersList(UsersList),
    /// `safegate users passwd`.
    UsersPasswd(UsersPasswd),
    /// `safegate users disable`.
    UsersDisable(UserName),
    /// `safegate users enable`.
    UsersEnable(UserName),
    /// `safegate users remove`.
    UsersRemove(UserName),
    /// `safegate users update`.
    UsersUpdate(UsersUpdate),
    /// `safegate users import` (and its check before hashing).
    UsersImport(UsersImport),
    /// `safegate users sync` (the people the directory lists).
    UsersSync(crate::users_sync::UsersSync),
    /// `safegate alerts list|show|ack|close`.
    Alerts(crate::alerts::AlertsRequest),
    /// `safegate report weekly`: the week's figures, gathered by the service.
    ReportWeek(crate::report::ReportRequest),
    /// `safegate audit list|verify`.
    Audit(crate::audit::AuditRequest),
}

impl Request {
    /// What the request asks, for the service's log (who looked at whose records).
    pub fn describe(&self) -> String {
        match self {
            Request::LogQuery(query) => {
                let mut text = String::from("log query");
                for (name, value) in [
                    ("user", &query.user),
                    ("host", &query.host),
                    ("category", &query.category),
                ] {
                    if let Some(value) = value {
                        text.push_str(&format!(" {name}={value:?}"));
                    }
                }
                if query.blocked_only {
                    text.push_str(" blocked");
                }
                if query.search_terms_only {
                    text.push_str(" search-terms");
                }
                text
            }
            Request::LogPurge(purge) => format!("log purge before={}", purge.before),
            Request::LogExport(export) => format!("log export user={:?}", export.user),
            // Never the password hash.
            Request::UsersAdd(add) => format!(
                "users add name={:?} role={:?} group={:?} permissions={}",
                add.name,
                add.role,
                add.group.as_deref().unwrap_or(""),
                permissions_text(&add.permissions)
            ),
            Request::UsersList(_) => "users list".to_owned(),
            Request::UsersPasswd(passwd) => format!("users passwd name={:?}", passwd.name),
            Request::UsersDisable(user) => format!("users disable name={:?}", user.name),
            Request::UsersEnable(user) => format!("users enable name={:?}", user.name),
            Request::UsersRemove(user) => format!("users remove name={:?}", user.name),
            Request::UsersUpdate(update) => {
                let mut text = format!("users update name={:?}", update.name);
                if let Some(role) = &update.role {
                    text.push_str(&format!(" role={role:?}"));
                }
                if let Some(group) = &update.group {
                    text.push_str(&format!(" group={group:?}"));
                }
                if update.clear_group {
                    text.push_str(" no-group");
                }
                if let Some(permissions) = &update.permissions {
                    text.push_str(&format!(" permissions={}", permissions_text(permissions)));
                }
                if update.display_name.is_some() || update.clear_display_name {
                    text.push_str(" display-name");
                }
                text
            }
            Request::UsersSync(sync) => format!("users sync people={}", sync.people.len()),
            Request::Alerts(alerts) => alerts.describe(),
            Request::ReportWeek(report) => report.describe(),
            Request::Audit(audit) => audit.describe(),
            Request::UsersImport(import) => format!(
                "users import file={:?} rows={}{}",
                import.source,
                import.rows.len(),
                if import.dry_run || !import.bad_rows.is_empty() {
                    " check-only"
                } else {
                    ""
                }
            ),
        }
    }
}

/// What a command found or did, ready to be written.
#[derive(Debug)]
pub enum Output {
    /// A `log` command's output.
    Log(log::Output),
    /// A `users` command's output.
    Users(users::Output),
    /// Output ready as bytes (alerts and report commands), with its log summary.
    Bytes(Vec<u8>, String),
}

impl Output {
    /// One line for the service's log: what was done, how much.
    pub fn summary(&self) -> String {
        match self {
            Output::Log(output) => output.summary(),
            Output::Users(output) => output.summary(),
            Output::Bytes(_, summary) => summary.clone(),
        }
    }

    /// Writes the output; only writing can fail here.
    pub fn write_to(&self, out: &mut dyn Write) -> Result<(), StoreError> {
        match self {
            Output::Log(output) => output.write_to(out),
            Output::Users(output) => Ok(output.write_to(out)?),
            Output::Bytes(bytes, _) => Ok(out.write_all(bytes)?),
        }
    }
}

/// The status line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Whether the command ran; its output follows when it did.
    pub ok: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Status {
    /// The status line for `error` (`None`: success), newline included.
    pub(crate) fn line(error: Option<String>) -> Vec<u8> {
        let status = Status {
            ok: error.is_none(),
            error,
        };
        let mut line = serde_json::to_vec(&status).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
        line.push(b'\n');
        line
    }
}

/// `<data_dir>/control.sock`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}
