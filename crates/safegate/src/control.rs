//! The control channel: how `safegate log ...` and `safegate users ...` reach the
//! database while `safegate run` holds it. sled lets one process open a database,
//! so while the service runs, commands are run *by the service*, over a Unix socket
//! `<data_dir>/control.sock`.
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

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use safegate_store::users::permissions_text;
use safegate_store::{AuditAction, NewAuditEntry, Store, StoreError, UserError};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::log_exec::{self, LogExport, LogPurge, LogQuery};
use crate::users_exec::{
    self, UserName, UsersAdd, UsersFailure, UsersImport, UsersList, UsersPasswd, UsersUpdate,
};

/// The socket's file name in `data_dir`.
pub const SOCKET_NAME: &str = "control.sock";
/// How long a client may take to send its command.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Commands served at once; more connections are told to try again.
pub const MAX_CONCURRENT: usize = 4;
/// Longest command line accepted: an import of tens of thousands of users (about
/// 250 bytes a row with its hash). Only SafeGate's own user and root get this far.
const MAX_REQUEST_BYTES: u64 = 32 * 1024 * 1024;
/// Longest status line accepted by the client (an import's report names every bad
/// row).
const MAX_STATUS_BYTES: u64 = 16 * 1024 * 1024;
/// Most characters of a failure message written to the service's log.
const LOGGED_FAILURE_CHARS: usize = 2000;
/// How long the server waits for a client to take more output (`| less` may pause).
const SERVER_WRITE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// How long the client waits for the service (a purge of years of records is slow).
const CLIENT_READ_TIMEOUT: Duration = Duration::from_secs(15 * 60);

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
    /// `safegate alerts list|show|ack|close`.
    Alerts(crate::alerts_command::AlertsRequest),
    /// `safegate report weekly`: the week's figures, gathered by the service.
    ReportWeek(crate::report_command::ReportRequest),
    /// `safegate audit list|verify`.
    Audit(crate::audit_command::AuditRequest),
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
    Log(log_exec::Output),
    /// A `users` command's output.
    Users(users_exec::Output),
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

/// Why a command failed (the message goes to the client as it is).
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A `log` command's database work failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A `users` command failed.
    #[error(transparent)]
    Users(#[from] UsersFailure),
    /// The command cannot be done as asked (e.g. there is no such alert).
    #[error("{0}")]
    Refused(String),
}

impl From<UserError> for CommandError {
    fn from(error: UserError) -> Self {
        CommandError::Users(UsersFailure::User(error))
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
    fn line(error: Option<String>) -> Vec<u8> {
        let status = Status {
            ok: error.is_none(),
            error,
        };
        let mut line = serde_json::to_vec(&status).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
        line.push(b'\n');
        line
    }
}

/// Does the database work of a command (everything that can fail for a reason other
/// than writing).
pub fn prepare(store: &Store, request: &Request) -> Result<Output, CommandError> {
    let users = |output: Result<users_exec::Output, UsersFailure>| -> Result<Output, CommandError> {
        Ok(Output::Users(output?))
    };
    match request {
        Request::LogQuery(query) => Ok(Output::Log(log_exec::query(store, query)?)),
        Request::LogPurge(purge) => Ok(Output::Log(log_exec::purge(store, purge)?)),
        Request::LogExport(export) => Ok(Output::Log(log_exec::export(store, export)?)),
        Request::UsersAdd(add) => users(users_exec::add(store, add)),
        Request::UsersList(list) => users(users_exec::list(store, list)),
        Request::UsersPasswd(passwd) => users(users_exec::passwd(store, passwd)),
        Request::UsersDisable(user) => users(users_exec::set_disabled(store, user, true)),
        Request::UsersEnable(user) => users(users_exec::set_disabled(store, user, false)),
        Request::UsersRemove(user) => users(users_exec::remove(store, user)),
        Request::UsersUpdate(update) => users(users_exec::update(store, update)),
        Request::UsersImport(import) => users(users_exec::import(store, import)),
        Request::Alerts(alerts) => {
            let (bytes, summary) = crate::alerts_command::execute(store, alerts)?;
            Ok(Output::Bytes(bytes, summary))
        }
        Request::ReportWeek(report) => {
            let (bytes, summary) = crate::report_command::execute(store, report)?;
            Ok(Output::Bytes(bytes, summary))
        }
        Request::Audit(audit) => {
            let (bytes, summary) = crate::audit_command::execute(store, audit)?;
            Ok(Output::Bytes(bytes, summary))
        }
    }
}

/// The name of the account with `uid`, from /etc/passwd (for the audit log), or
/// `uid N` when it has none.
pub fn account_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                let id = fields.nth(1)?;
                (id.parse::<u32>().ok()? == uid).then(|| name.to_owned())
            })
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// The wall clock in Unix microseconds (audit entries and records stamped here).
pub(crate) fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// What a command does that the audit log must record, and when: views of one
/// person's history are recorded before they are shown, alert status changes after
/// they are made.
fn audit_entry(request: &Request, actor: &str) -> Option<(bool, NewAuditEntry)> {
    let entry = |action, subject: String, detail: String, reason: Option<String>| NewAuditEntry {
        at_unix_micros: now_micros(),
        actor: format!("{actor} (command line)"),
        action,
        subject,
        detail,
        reason,
    };
    match request {
        Request::LogQuery(query) => query.user.as_ref().map(|user| {
            (
                true,
                entry(
                    AuditAction::HistoryViewed,
                    user.clone(),
                    request.describe(),
                    None,
                ),
            )
        }),
        Request::LogExport(export) => Some((
            true,
            entry(
                AuditAction::HistoryViewed,
                export.user.clone(),
                "subject access export (every record, JSON and CSV)".to_owned(),
                None,
            ),
        )),
        Request::Alerts(crate::alerts_command::AlertsRequest::SetStatus {
            id,
            status,
            by,
            note,
            ..
        }) => Some((
            false,
            NewAuditEntry {
                actor: by.clone(),
                ..entry(
                    AuditAction::AlertStatus,
                    format!("alert {id}"),
                    format!("status: {}", status.as_str()),
                    note.clone(),
                )
            },
        )),
        _ => None,
    }
}

/// [`prepare`], with the audit log written for the commands that need it; `actor`
/// is the account that asked.
pub fn prepare_audited(
    store: &Store,
    request: &Request,
    actor: &str,
) -> Result<Output, CommandError> {
    let audit = audit_entry(request, actor);
    if let Some((true, entry)) = &audit {
        store.append_audit(entry.clone())?;
    }
    let output = prepare(store, request)?;
    if let Some((false, entry)) = audit {
        store.append_audit(entry)?;
    }
    Ok(output)
}

/// Runs a command against an open store, writing its output to `out`. The service
/// runs the same two steps for the control socket.
pub fn execute(store: &Store, request: &Request, out: &mut dyn Write) -> Result<()> {
    let actor = account_name(rustix::process::getuid().as_raw());
    let output = prepare_audited(store, request, &actor)?;
    output.write_to(out)?;
    out.flush()?;
    Ok(())
}

/// `<data_dir>/control.sock`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// Whether a peer with `peer_uid` may use the control socket of a service running as
/// `service_uid`: the same user, or root.
pub fn peer_allowed(peer_uid: u32, service_uid: u32) -> bool {
    peer_uid == service_uid || peer_uid == 0
}

/// The peer's user and process ids (`SO_PEERCRED`).
fn peer_of(stream: &impl AsFd) -> std::io::Result<(u32, i32)> {
    let cred = rustix::net::sockopt::socket_peercred(stream)?;
    Ok((cred.uid.as_raw(), cred.pid.as_raw_pid()))
}

/// The listening control socket of `safegate run`.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    store: Store,
    uid: u32,
    request_timeout: Duration,
    /// One permit per command that may run at once ([`MAX_CONCURRENT`]).
    permits: Arc<Semaphore>,
}

impl ControlServer {
    /// Binds `<data_dir>/control.sock` (mode 0600), replacing a socket left behind by
    /// a SafeGate that did not stop cleanly. Call only while holding the database:
    /// then no other SafeGate can be using the socket.
    pub fn bind(data_dir: &Path, store: Store) -> Result<Self> {
        let path = socket_path(data_dir);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove the stale {}", path.display()))?,
            Ok(_) => bail!(
                "{} exists and is not a socket; move it away",
                path.display()
            ),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err).with_context(|| format!("{}", path.display())),
        }
        let listener = UnixListener::bind(&path)
            .with_context(|| format!("cannot listen on {}", path.display()))?;
        // Nothing is accepted before the mode is 0600; the peer check guards the
        // moment in between.
        if let Err(err) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
            let _ = std::fs::remove_file(&path);
            return Err(err).with_context(|| format!("cannot chmod 0600 {}", path.display()));
        }
        Ok(Self {
            listener,
            path,
            store,
            uid: rustix::process::geteuid().as_raw(),
            request_timeout: REQUEST_TIMEOUT,
            permits: Arc::new(Semaphore::new(MAX_CONCURRENT)),
        })
    }

    /// The command slots, to see from a test when every one is free again.
    #[cfg(test)]
    fn slots(&self) -> Arc<Semaphore> {
        Arc::clone(&self.permits)
    }

    /// The same server with a shorter wait for the command (tests).
    #[cfg(test)]
    fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves commands until `shutdown`, then removes the socket file. Commands still
    /// running finish on their own.
    pub async fn run(self, shutdown: CancellationToken) {
        let permits = Arc::clone(&self.permits);
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    warn!(%err, "control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (peer_uid, peer_pid) = match peer_of(&stream) {
                Ok(peer) => peer,
                Err(err) => {
                    warn!(%err, "control socket: cannot read the peer's credentials; connection closed");
                    continue;
                }
            };
            if !peer_allowed(peer_uid, self.uid) {
                warn!(
                    peer_uid,
                    peer_pid,
                    service_uid = self.uid,
                    "control socket: connection from another user refused"
                );
                let message = format!(
                    "permission denied: uid {peer_uid} may not use SafeGate's control socket \
                     (only uid {} and root may)",
                    self.uid
                );
                tokio::spawn(refuse(stream, message));
                continue;
            }
            let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                warn!(
                    peer_uid,
                    "control socket: too many commands at once; connection refused"
                );
                tokio::spawn(refuse(
                    stream,
                    format!("busy: {MAX_CONCURRENT} commands are running; try again shortly"),
                ));
                continue;
            };
            let store = self.store.clone();
            let request_timeout = self.request_timeout;
            tokio::spawn(async move {
                serve(stream, store, peer_uid, request_timeout).await;
                drop(permit);
            });
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                warn!(%err, path = %self.path.display(), "cannot remove the control socket")
            }
        }
    }
}

/// Sends a refusal line and closes, after letting the client finish sending its
/// command (closing first would fail the client's write, and it would never read the
/// reason). Bounded in time and bytes.
async fn refuse(mut stream: UnixStream, message: String) {
    let line = Status::line(Some(message));
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(&line).await;
        let _ = stream.shutdown().await;
        let mut rest = (&mut stream).take(MAX_REQUEST_BYTES);
        let _ = tokio::io::copy(&mut rest, &mut tokio::io::sink()).await;
    })
    .await;
}

/// Reads the request line: at most `MAX_REQUEST_BYTES`, ended by a newline (or the
/// end of the client's writing).
async fn read_request(stream: &mut UnixStream) -> Result<Request, String> {
    let mut line = Vec::new();
    let mut reader = tokio::io::BufReader::new(stream.take(MAX_REQUEST_BYTES + 1));
    reader
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| format!("cannot read the command: {e}"))?;
    if line.len() as u64 > MAX_REQUEST_BYTES {
        return Err(format!("command longer than {MAX_REQUEST_BYTES} bytes"));
    }
    if line.iter().all(u8::is_ascii_whitespace) {
        return Err("no command".to_owned());
    }
    serde_json::from_slice(&line).map_err(|e| format!("not a command: {e}"))
}

async fn serve(mut stream: UnixStream, store: Store, peer_uid: u32, request_timeout: Duration) {
    let request = match tokio::time::timeout(request_timeout, read_request(&mut stream)).await {
        Ok(Ok(request)) => request,
        Ok(Err(message)) => {
            warn!(peer_uid, "control socket: bad command: {message}");
            refuse(stream, message).await;
            return;
        }
        Err(_) => {
            warn!(
                peer_uid,
                "control socket: no command within {:?}; connection dropped", request_timeout
            );
            return;
        }
    };
    let stream = match stream.into_std().and_then(|s| {
        s.set_nonblocking(false)?;
        s.set_write_timeout(Some(SERVER_WRITE_TIMEOUT))?;
        Ok(s)
    }) {
        Ok(stream) => stream,
        Err(err) => {
            warn!(%err, "control socket: cannot switch the connection to blocking mode");
            return;
        }
    };
    let what = request.describe();
    let started = std::time::Instant::now();
    let ran = tokio::task::spawn_blocking(move || {
        let actor = account_name(peer_uid);
        run_blocking(&store, &request, &actor, stream)
    })
    .await;
    let ms = started.elapsed().as_millis() as u64;
    match ran {
        Ok(Ok(summary)) => info!(peer_uid, ms, "control: {what}: {summary}"),
        Ok(Err(Failure::Command(message))) => {
            let message = shortened_for_log(&message);
            error!(peer_uid, ms, "control: {what} failed: {message}")
        }
        // `safegate log query | head`, or a client that stopped reading.
        Ok(Err(Failure::Client(err))) => warn!(
            peer_uid,
            ms, "control: {what}: the client stopped taking the output: {err}"
        ),
        Err(err) => error!(peer_uid, %err, "control: {what}: the command's thread failed"),
    }
}

/// A failure message cut to [`LOGGED_FAILURE_CHARS`] for the log (an import's report
/// can name thousands of rows; the client gets it whole).
fn shortened_for_log(message: &str) -> String {
    match message.char_indices().nth(LOGGED_FAILURE_CHARS) {
        None => message.to_owned(),
        Some((cut, _)) => format!("{}... ({} bytes in all)", &message[..cut], message.len()),
    }
}

/// Why a command served over the socket did not complete.
enum Failure {
    /// The command failed (the client was told why).
    Command(String),
    /// The client went away or stopped reading.
    Client(std::io::Error),
}

/// Runs the command on a blocking thread, streaming its output to the client.
fn run_blocking(
    store: &Store,
    request: &Request,
    actor: &str,
    stream: StdUnixStream,
) -> Result<String, Failure> {
    let mut out = BufWriter::with_capacity(64 * 1024, &stream);
    let result = match prepare_audited(store, request, actor) {
        Ok(output) => (|| {
            out.write_all(&Status::line(None))?;
            output.write_to(&mut out).map_err(|err| match err {
                StoreError::Io(io) => io,
                other => std::io::Error::other(other),
            })?;
            out.flush()
        })()
        .map(|()| output.summary())
        .map_err(Failure::Client),
        Err(err) => {
            let message = err.to_string();
            // The client may be gone; the failure is logged either way.
            let _ = out
                .write_all(&Status::line(Some(message.clone())))
                .and_then(|()| out.flush());
            Err(Failure::Command(message))
        }
    };
    drop(out);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    result
}

/// How a command reaches the database.
pub enum Access {
    /// The database was free: this process opened it.
    Local(Store),
    /// `safegate run` holds it: commands go through its control socket.
    Remote {
        /// The connection for the next command (one command per connection; later
        /// commands connect again).
        stream: Option<StdUnixStream>,
        /// The socket's path, for messages and reconnecting.
        socket: PathBuf,
    },
}

/// Whether opening failed because another process holds the database (sled takes an
/// exclusive lock on its file and reports "could not acquire lock").
pub fn is_locked(error: &StoreError) -> bool {
    if !matches!(error, StoreError::Open { .. }) {
        return false;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if let Some(io) = current.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::WouldBlock
        {
            return true;
        }
        let text = current.to_string();
        if text.contains("could not acquire lock")
            || text.contains("WouldBlock")
            || text.contains("Resource temporarily unavailable")
        {
            return true;
        }
        cause = current.source();
    }
    false
}

/// Opens the database in `data_dir` if it is free, otherwise connects to the running
/// SafeGate's control socket; a clear error when neither works. Never creates a
/// database that is not there.
pub fn open_store_or_connect(data_dir: &Path) -> Result<Access> {
    let db = data_dir.join("db");
    let socket = socket_path(data_dir);
    if !db.exists() && !socket.exists() {
        bail!(
            "there is no SafeGate database in {}: SafeGate has not run with data_dir = {:?} \
             (check --config and data_dir, or run this command from SafeGate's folder)",
            db.display(),
            data_dir.display().to_string()
        );
    }
    let open_error = match Store::open(data_dir) {
        Ok(store) => return Ok(Access::Local(store)),
        Err(err) => err,
    };
    let locked = is_locked(&open_error);
    let connect_error = match StdUnixStream::connect(&socket) {
        Ok(stream) => {
            return Ok(Access::Remote {
                stream: Some(stream),
                socket,
            });
        }
        Err(err) => err,
    };
    let hint = match (locked, connect_error.kind()) {
        (_, std::io::ErrorKind::PermissionDenied) => {
            "run this command as root (sudo) or as the user SafeGate runs as"
        }
        (true, std::io::ErrorKind::NotFound) => {
            "another program holds the database without a control socket (an older SafeGate?): \
             stop it (e.g. `systemctl stop safegate`) and run this command again"
        }
        (true, _) => {
            "the process holding the database does not answer: if SafeGate is stopping, wait \
             for it to finish; otherwise restart it"
        }
        (false, _) => "check data_dir and that you run this as SafeGate's user or root",
    };
    Err(anyhow!(
        "{open_error}\n  and SafeGate's control socket {} cannot be used either: {connect_error}\n  {hint}",
        socket.display()
    ))
}

/// Like [`open_store_or_connect`], but where there is no database yet (and SafeGate is
/// not running) one is created in `data_dir`: for commands that set SafeGate up before
/// its first start (`safegate users add|import`). Says so on standard error.
pub fn open_create_or_connect(data_dir: &Path) -> Result<Access> {
    let db = data_dir.join("db");
    if db.exists() || socket_path(data_dir).exists() {
        return open_store_or_connect(data_dir);
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data_dir {}", data_dir.display()))?;
    let store = Store::open(data_dir)?;
    eprintln!(
        "safegate: note: created a new SafeGate database in {} (data_dir); SafeGate will use \
         it when it starts with the same data_dir",
        db.display()
    );
    Ok(Access::Local(store))
}

impl Access {
    /// Runs `request`, writing its output to `out`.
    pub fn run(mut self, request: &Request, out: &mut dyn Write) -> Result<()> {
        self.run_next(request, out)
    }

    /// Runs one of several requests in a row: a local database stays open, and each
    /// request after the first through the control socket connects again.
    pub fn run_next(&mut self, request: &Request, out: &mut dyn Write) -> Result<()> {
        match self {
            Access::Local(store) => {
                execute(store, request, out)?;
                flush_store(store)
            }
            Access::Remote { stream, socket } => {
                let stream = match stream.take() {
                    Some(stream) => stream,
                    None => StdUnixStream::connect(&*socket).with_context(|| {
                        format!(
                            "cannot reach SafeGate's control socket {}",
                            socket.display()
                        )
                    })?,
                };
                run_remote(stream, socket, request, out)
            }
        }
    }
}

/// Writes what a local command changed to disk (sled's flush is a future).
fn flush_store(store: &Store) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .context("cannot start a runtime to flush the database")?;
    runtime
        .block_on(store.flush())
        .context("cannot flush the database")
}

fn run_remote(
    stream: StdUnixStream,
    socket: &Path,
    request: &Request,
    out: &mut dyn Write,
) -> Result<()> {
    let via = || format!("SafeGate's control socket {}", socket.display());
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_read_timeout(Some(CLIENT_READ_TIMEOUT))?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    // The command is all the service reads: say so, so it never waits for more.
    let sent = (&stream)
        .write_all(&line)
        .and_then(|()| stream.shutdown(std::net::Shutdown::Write));
    let mut reader = BufReader::new(&stream);
    let mut status_line = Vec::new();
    let answered = (&mut reader)
        .take(MAX_STATUS_BYTES)
        .read_until(b'\n', &mut status_line);
    // A refusal can arrive before the command is sent: prefer its reason.
    if let Err(err) = sent
        && status_line.is_empty()
    {
        return Err(err).with_context(|| format!("cannot send the command to {}", via()));
    }
    answered.with_context(|| format!("no answer from {}", via()))?;
    if status_line.is_empty() {
        bail!("{} closed the connection without answering", via());
    }
    let status: Status = serde_json::from_slice(&status_line).with_context(|| {
        format!(
            "unreadable answer from {}: {:?}",
            via(),
            String::from_utf8_lossy(&status_line)
        )
    })?;
    if !status.ok {
        // The service's message as it is, so a command fails with the same words
        // whether SafeGate ran it or this process did.
        bail!(
            "{}",
            status
                .error
                .as_deref()
                .unwrap_or("SafeGate refused the command without giving a reason")
        );
    }
    std::io::copy(&mut reader, out)
        .with_context(|| format!("reading the output from {}", via()))?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::log_exec::Format;

    #[test]
    fn only_the_same_user_or_root_may_talk() {
        assert!(peer_allowed(998, 998));
        assert!(peer_allowed(0, 998));
        assert!(peer_allowed(0, 0));
        assert!(!peer_allowed(1000, 998));
        assert!(!peer_allowed(998, 0));
    }

    #[test]
    fn peer_credentials_are_read_from_the_socket() {
        let (a, _b) = StdUnixStream::pair().unwrap();
        let (uid, pid) = peer_of(&a).unwrap();
        assert_eq!(uid, rustix::process::geteuid().as_raw());
        assert_eq!(pid, std::process::id() as i32);
    }

    #[test]
    fn requests_are_tagged_json_lines() {
        let request = Request::LogPurge(LogPurge {
            before: 42,
            timezone: "UTC".into(),
        });
        let text = serde_json::to_string(&request).unwrap();
        assert_eq!(
            text,
            r#"{"command":"log_purge","before":42,"timezone":"UTC"}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), request);
        let query: Request =
            serde_json::from_str(r#"{"command":"log_query","user":"ada","format":"json"}"#)
                .unwrap();
        match query {
            Request::LogQuery(q) => {
                assert_eq!(q.user.as_deref(), Some("ada"));
                assert_eq!(q.format, Format::Json);
            }
            other => panic!("{other:?}"),
        }
        let unknown =
            serde_json::from_str::<Request>(r#"{"command":"users_frobnicate"}"#).unwrap_err();
        assert!(
            unknown.to_string().contains("users_frobnicate"),
            "{unknown}"
        );
        assert!(serde_json::from_str::<Request>(r#"{"command":"log_query","usr":"x"}"#).is_err());
    }

    #[test]
    fn users_requests_never_show_hashes_in_logs() {
        let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g";
        let requests = [
            Request::UsersAdd(UsersAdd {
                name: "ada".into(),
                display_name: Some("Ada".into()),
                role: "staff".into(),
                group: Some("office".into()),
                permissions: [safegate_store::Permission::Reports].into(),
                password_hash: hash.into(),
            }),
            Request::UsersPasswd(UsersPasswd {
                name: "ada".into(),
                password_hash: hash.into(),
            }),
            Request::UsersImport(UsersImport {
                source: "pupils.csv".into(),
                rows: vec![safegate_store::ImportRow {
                    line: 2,
                    name: "year6".into(),
                    display_name: None,
                    role: "pupil".into(),
                    group: Some("year6".into()),
                    permissions: Default::default(),
                    password_hash: Some(hash.into()),
                }],
                bad_rows: Vec::new(),
                dry_run: false,
            }),
        ];
        for request in &requests {
            let described = request.describe();
            let debug = format!("{request:?}");
            for text in [&described, &debug] {
                assert!(!text.contains("argon2"), "{text}");
            }
            // What crosses the socket does carry the hash, and reads back the same.
            let line = serde_json::to_string(request).unwrap();
            assert!(line.contains(hash), "{line}");
            assert_eq!(&serde_json::from_str::<Request>(&line).unwrap(), request);
        }
        assert_eq!(
            requests[0].describe(),
            r#"users add name="ada" role="staff" group="office" permissions=reports"#
        );
        assert_eq!(
            requests[2].describe(),
            r#"users import file="pupils.csv" rows=1"#
        );
        // A plain password field is refused, not ignored.
        let plain = serde_json::from_str::<Request>(
            r#"{"command":"users_passwd","name":"ada","password":"hunter22"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(plain.contains("password"), "{plain}");
    }

    #[test]
    fn a_second_open_is_recognised_as_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _held = Store::open(dir.path()).unwrap();
        let error = Store::open(dir.path()).err().unwrap();
        assert!(is_locked(&error), "{error}");
    }

    #[test]
    fn no_database_is_created_where_there_was_none() {
        let dir = tempfile::tempdir().unwrap();
        let error = open_store_or_connect(dir.path()).err().unwrap();
        assert!(
            format!("{error}").contains("no SafeGate database"),
            "{error}"
        );
        assert!(!dir.path().join("db").exists());
    }

    #[test]
    fn locked_without_a_socket_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let _held = Store::open(dir.path()).unwrap();
        let error = format!("{:#}", open_store_or_connect(dir.path()).err().unwrap());
        assert!(error.contains("could not acquire lock"), "{error}");
        assert!(error.contains("control.sock"), "{error}");
        assert!(error.contains("stop it"), "{error}");
    }

    /// The server and the local path give the same bytes; refusals and bad commands
    /// get a status line.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_socket_serves_what_execute_writes() {
        use crate::log_exec::tests::record;
        use safegate_store::Outcome;

        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .write_records(&[
                record(1_000_000, Some("ada"), "a.example", Outcome::Allowed),
                record(2_000_000, Some("bob"), "b.example", Outcome::Blocked),
            ])
            .unwrap();
        let server = ControlServer::bind(dir.path(), store.clone())
            .unwrap()
            .with_request_timeout(Duration::from_secs(3));
        let mode = std::fs::metadata(server.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let slots = server.slots();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));

        let request = Request::LogQuery(LogQuery {
            blocked_only: true,
            format: Format::Csv,
            timezone: "UTC".into(),
            ..LogQuery::default()
        });
        let mut local = Vec::new();
        execute(&store, &request, &mut local).unwrap();
        let socket = socket_path(dir.path());
        let remote = tokio::task::spawn_blocking({
            let request = request.clone();
            let socket = socket.clone();
            move || {
                let stream = StdUnixStream::connect(&socket).unwrap();
                let mut out = Vec::new();
                run_remote(stream, &socket, &request, &mut out).unwrap();
                out
            }
        })
        .await
        .unwrap();
        assert_eq!(
            String::from_utf8(remote).unwrap(),
            String::from_utf8(local).unwrap()
        );

        let answer = tokio::task::spawn_blocking({
            let socket = socket.clone();
            move || {
                let mut stream = StdUnixStream::connect(&socket).unwrap();
                stream.write_all(b"{\"command\":\"nonsense\"}\n").unwrap();
                stream.shutdown(std::net::Shutdown::Write).unwrap();
                let mut answer = String::new();
                stream.read_to_string(&mut answer).unwrap();
                answer
            }
        })
        .await
        .unwrap();
        let status: Status = serde_json::from_str(answer.trim_end()).unwrap();
        assert!(!status.ok);
        assert!(status.error.unwrap().contains("nonsense"));

        // A client that sends nothing is dropped after the timeout, and holds no
        // command slot: more silent clients than slots, then a real command. The
        // commands above release their slots just after answering: wait for that.
        let free = tokio::time::timeout(
            Duration::from_secs(10),
            slots.acquire_many(MAX_CONCURRENT as u32),
        )
        .await
        .unwrap()
        .unwrap();
        drop(free);
        let silent = tokio::task::spawn_blocking({
            let socket = socket.clone();
            let request = request.clone();
            move || {
                let clients: Vec<StdUnixStream> = (0..MAX_CONCURRENT + 1)
                    .map(|_| StdUnixStream::connect(&socket).unwrap())
                    .collect();
                // While every slot is taken, a real client is told why it is refused.
                let busy = StdUnixStream::connect(&socket).unwrap();
                let refused = run_remote(busy, &socket, &request, &mut Vec::new()).unwrap_err();
                assert!(format!("{refused:#}").contains("busy"), "{refused:#}");
                let started = std::time::Instant::now();
                let mut answers = Vec::new();
                for mut client in clients {
                    client
                        .set_read_timeout(Some(Duration::from_secs(5)))
                        .unwrap();
                    let mut answer = String::new();
                    client.read_to_string(&mut answer).unwrap();
                    answers.push(answer);
                }
                (started.elapsed(), answers)
            }
        })
        .await
        .unwrap();
        let (waited, answers) = silent;
        assert!(waited < Duration::from_secs(8), "{waited:?}");
        // The slots' clients were dropped in silence; the one beyond was told "busy".
        assert_eq!(
            answers.iter().filter(|a| a.is_empty()).count(),
            MAX_CONCURRENT
        );
        assert!(answers.iter().any(|a| a.contains("busy")), "{answers:?}");
        let again = tokio::task::spawn_blocking({
            let socket = socket.clone();
            move || {
                let stream = StdUnixStream::connect(&socket).unwrap();
                let mut out = Vec::new();
                run_remote(stream, &socket, &request, &mut out).unwrap();
                out
            }
        })
        .await
        .unwrap();
        assert!(String::from_utf8(again).unwrap().contains("b.example"));

        shutdown.cancel();
        task.await.unwrap();
        assert!(!socket.exists(), "socket left behind");
    }
}
