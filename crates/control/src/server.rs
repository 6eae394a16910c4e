//! The server side of the control socket, in `safegate run`: binds
//! `<data_dir>/control.sock` (mode 0600), checks each peer's credentials, reads one
//! [`Request`] per connection within [`REQUEST_TIMEOUT`], runs it on a blocking thread
//! ([`prepare_audited`]) and streams the output back; at most [`MAX_CONCURRENT`]
//! commands run at once. Every command is logged with the peer's uid.

use std::io::{BufWriter, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use safegate_store::{Store, StoreError};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::dispatch::{account_name, prepare_audited};
use crate::error::ControlError;
use crate::protocol::{
    MAX_CONCURRENT, MAX_REQUEST_BYTES, REQUEST_TIMEOUT, Request, Status, socket_path,
};

/// Most characters of a failure message written to the service's log.
const LOGGED_FAILURE_CHARS: usize = 2000;
/// How long the server waits for a client to take more output (`| less` may pause).
const SERVER_WRITE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Whether a peer with `peer_uid` may use the control socket of a service running as
/// `service_uid`: the same user, or root.
pub fn peer_allowed(peer_uid: u32, service_uid: u32) -> bool {
    peer_uid == service_uid || peer_uid == 0
}

/// The peer's user and process ids (`SO_PEERCRED`).
pub(crate) fn peer_of(stream: &impl AsFd) -> std::io::Result<(u32, i32)> {
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
    pub fn bind(data_dir: &Path, store: Store) -> Result<Self, ControlError> {
        let path = socket_path(data_dir);
        let failed = |what: String| move |source| ControlError::Socket { what, source };
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(&path).map_err(
                failed(format!("cannot remove the stale {}", path.display())),
            )?,
            Ok(_) => return Err(ControlError::NotASocket(path)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(failed(format!("{}", path.display()))(err)),
        }
        let listener = UnixListener::bind(&path)
            .map_err(failed(format!("cannot listen on {}", path.display())))?;
        // Nothing is accepted before the mode is 0600; the peer check guards the
        // moment in between.
        if let Err(err) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
            let _ = std::fs::remove_file(&path);
            return Err(failed(format!("cannot chmod 0600 {}", path.display()))(err));
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
    pub(crate) fn slots(&self) -> Arc<Semaphore> {
        Arc::clone(&self.permits)
    }

    /// The same server with a shorter wait for the command (tests).
    #[cfg(test)]
    pub(crate) fn with_request_timeout(mut self, timeout: Duration) -> Self {
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
            // `safegate lists update` connects without a command to find the service.
            if message == "no command" {
                tracing::debug!(peer_uid, "control socket: connection without a command");
            } else {
                warn!(peer_uid, "control socket: bad command: {message}");
            }
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
