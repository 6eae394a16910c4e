//! SafeGate's control channel and the commands behind it: how `safegate log ...`,
//! `safegate users ...`, `alerts`, `audit` and `report` reach the database while
//! `safegate run` holds it, and the command bodies that run in whichever process holds
//! it. sled lets one process open a database, so while the service runs, commands are
//! run *by the service*, over a Unix socket `<data_dir>/control.sock`.
//!
//! # Protocol
//!
//! One command per connection:
//!
//! 1. the client sends one JSON line, a [`Request`]: `{"command":"log_query",...}`
//!    (the `command` tag names the variant; new commands are new variants, new
//!    fields have defaults);
//! 2. the server answers with one JSON status line, `{"ok":true}` or
//!    `{"ok":false,"error":"..."}`;
//! 3. after `{"ok":true}`, the command's output bytes follow until the server closes
//!    the connection. They are exactly what the command writes when it opens the
//!    database itself ([`execute`]), so both ways print the same.
//!
//! The database work happens before the status line, so a failing command says why;
//! after it only writing the output can fail, and an export ends with an explicit end
//! frame so a broken connection cannot pass for a complete file.
//!
//! # Who may talk
//!
//! The socket is created with mode 0600 and every connection's peer is checked with
//! `SO_PEERCRED`: only the service's own user and root are served; anyone else gets a
//! refusal line and the service logs a warning. A client that sends nothing for
//! [`REQUEST_TIMEOUT`] is dropped, and at most [`MAX_CONCURRENT`] commands run at once.
//!
//! # What is logged
//!
//! The service logs every command at info with the peer's uid, what it asked
//! ([`Request::describe`]) and what was done ([`Output::summary`]): who looked at whose
//! records, who added, changed or removed which user. Users commands carry password
//! hashes only (the command line hashes), and neither form ever includes them.
//!
//! # Modules
//!
//! - [`protocol`]: the request, status and output types; [`error`]: why a command
//!   failed ([`CommandError`]) or could not reach the database ([`ControlError`]);
//!   [`dispatch`]: running a request against an open store, with its audit entries;
//!   [`server`] and [`client`]: the two ends of the socket.
//! - The command bodies: [`log`] (query, purge, export; [`export`] frames the export's
//!   two files), [`users`] (and [`users_file`], the users CSV file the command line
//!   reads and hashes), [`alerts`], [`audit`], [`report`].
//! - [`retention`]: the daily purge of old visit-log records in `safegate run`.
//! - [`table`] and [`time_text`]: how times and tables are written, and how times are
//!   read from the command line.
//!
//! Everything here returns typed errors; the binary adds context with `anyhow`.

pub mod alerts;
pub mod audit;
pub mod client;
pub mod dispatch;
pub mod error;
pub mod export;
pub mod log;
pub mod policy_groups;
pub mod protocol;
pub mod report;
pub mod retention;
pub mod server;
pub mod table;
pub mod terminal;
pub mod time_text;
pub mod users;
pub mod users_file;
pub mod users_sync;

pub use crate::client::{Access, open_create_or_connect, open_store_or_connect};
pub use crate::dispatch::{account_name, execute, prepare, prepare_audited};
pub use crate::error::{CommandError, ControlError};
pub use crate::protocol::{
    MAX_CONCURRENT, Output, REQUEST_TIMEOUT, Request, SOCKET_NAME, Status, socket_path,
};
pub use crate::server::{ControlServer, peer_allowed};

/// An error and its sources, `: ` between them (as `anyhow` writes `{:#}`), for
/// messages and log lines that name the cause too.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests;
