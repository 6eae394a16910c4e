//! The client side: how a command line reaches the database. [`open_store_or_connect`]
//! opens it when it is free ([`Access::Local`]) or connects to the running service's
//! control socket when another process holds it ([`Access::Remote`]); either way
//! [`Access::run`] prints the same bytes.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use safegate_store::{Store, StoreError};

use crate::dispatch::execute;
use crate::error::ControlError;
use crate::protocol::{MAX_STATUS_BYTES, REQUEST_TIMEOUT, Request, Status, socket_path};

/// How long the client waits for the service (a purge of years of records is slow).
const CLIENT_READ_TIMEOUT: Duration = Duration::from_secs(15 * 60);

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

/// Opens the database in `data_dir` if it is free, otherwise connects to the running
/// SafeGate's control socket; a clear error when neither works. Never creates a
/// database that is not there.
pub fn open_store_or_connect(data_dir: &Path) -> Result<Access, ControlError> {
    let db = data_dir.join("db");
    let socket = socket_path(data_dir);
    if !db.exists() && !socket.exists() {
        return Err(ControlError::NoDatabase {
            db,
            data_dir: data_dir.to_path_buf(),
        });
    }
    if let Some(owner) = others_data_dir_as_root(data_dir) {
        return match StdUnixStream::connect(&socket) {
            Ok(stream) => Ok(Access::Remote {
                stream: Some(stream),
                socket,
            }),
            Err(_) => Err(ControlError::RootInOthersDataDir {
                data_dir: data_dir.to_path_buf(),
                owner,
            }),
        };
    }
    let open_error = match Store::open(data_dir) {
        Ok(store) => return Ok(Access::Local(store)),
        Err(err) => err,
    };
    let locked = matches!(open_error, StoreError::Locked { .. });
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
    Err(ControlError::Unreachable {
        open_error,
        socket,
        connect_error,
        hint,
    })
}

/// Like [`open_store_or_connect`], but where there is no database yet (and SafeGate is
/// not running) one is created in `data_dir`: for commands that set SafeGate up before
/// its first start (`safegate users add|import`). Says so on standard error.
pub fn open_create_or_connect(data_dir: &Path) -> Result<Access, ControlError> {
    let db = data_dir.join("db");
    if db.exists() || socket_path(data_dir).exists() {
        return open_store_or_connect(data_dir);
    }
    if let Some(owner) = others_data_dir_as_root(data_dir) {
        return Err(ControlError::RootInOthersDataDir {
            data_dir: data_dir.to_path_buf(),
            owner,
        });
    }
    std::fs::create_dir_all(data_dir).map_err(|source| ControlError::CreateDataDir {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let store = Store::open(data_dir)?;
    eprintln!(
        "safegate: note: created a new SafeGate database in {} (data_dir); SafeGate will use \
         it when it starts with the same data_dir",
        db.display()
    );
    Ok(Access::Local(store))
}

/// The owner of `data_dir` when this process runs as root and `data_dir` is another
/// user's (the service's): root must not open that database itself, since the files it
/// made would be root's and the service could no longer open them.
fn others_data_dir_as_root(data_dir: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    if !rustix::process::geteuid().is_root() {
        return None;
    }
    let owner = std::fs::metadata(data_dir).ok()?.uid();
    (owner != 0).then_some(owner)
}

impl Access {
    /// Runs `request`, writing its output to `out`.
    pub fn run(mut self, request: &Request, out: &mut dyn Write) -> Result<(), ControlError> {
        self.run_next(request, out)
    }

    /// Runs one of several requests in a row: a local database stays open, and each
    /// request after the first through the control socket connects again.
    pub fn run_next(&mut self, request: &Request, out: &mut dyn Write) -> Result<(), ControlError> {
        match self {
            Access::Local(store) => {
                execute(store, request, out)?;
                flush_store(store)
            }
            Access::Remote { stream, socket } => {
                let stream = match stream.take() {
                    Some(stream) => stream,
                    None => {
                        StdUnixStream::connect(&*socket).map_err(|source| ControlError::Socket {
                            what: format!(
                                "cannot reach SafeGate's control socket {}",
                                socket.display()
                            ),
                            source,
                        })?
                    }
                };
                run_remote(stream, socket, request, out)
            }
        }
    }
}

/// Writes what a local command changed to disk (sled's flush is a future).
fn flush_store(store: &Store) -> Result<(), ControlError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(ControlError::FlushRuntime)?;
    runtime.block_on(store.flush()).map_err(ControlError::Flush)
}

pub(crate) fn run_remote(
    stream: StdUnixStream,
    socket: &Path,
    request: &Request,
    out: &mut dyn Write,
) -> Result<(), ControlError> {
    let failed = |what: &str| {
        let what = format!("{what} SafeGate's control socket {}", socket.display());
        move |source| ControlError::Socket { what, source }
    };
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
        return Err(failed("cannot send the command to")(err));
    }
    answered.map_err(failed("no answer from"))?;
    if status_line.is_empty() {
        return Err(ControlError::NoStatus(socket.to_path_buf()));
    }
    let status: Status =
        serde_json::from_slice(&status_line).map_err(|source| ControlError::UnreadableStatus {
            socket: socket.to_path_buf(),
            line: String::from_utf8_lossy(&status_line).into_owned(),
            source,
        })?;
    if !status.ok {
        // The service's message as it is, so a command fails with the same words
        // whether SafeGate ran it or this process did.
        return Err(ControlError::Refused(status.error.unwrap_or_else(|| {
            "SafeGate refused the command without giving a reason".to_owned()
        })));
    }
    std::io::copy(&mut reader, out).map_err(failed("reading the output from"))?;
    out.flush()?;
    Ok(())
}
