//! The crate's errors: [`CommandError`], why a command failed where it ran (its
//! message goes to the client as it is), and [`ControlError`], why a command line could
//! not reach the database or did not complete (which wraps the former when the command
//! ran in this process).

use std::path::PathBuf;

use safegate_store::{StoreError, UserError};

use crate::users::UsersFailure;

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

/// Why a command could not reach the database or did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// There is no database in `data_dir` and no running SafeGate.
    #[error(
        "there is no SafeGate database in {}: SafeGate has not run with data_dir = {:?} \
         (check --config and data_dir, or run this command from SafeGate's folder)",
        db.display(),
        data_dir.display().to_string()
    )]
    NoDatabase {
        /// `<data_dir>/db`.
        db: PathBuf,
        /// The configured data directory.
        data_dir: PathBuf,
    },
    /// The database could not be opened and the control socket not used either.
    #[error(
        "{open_error}\n  and SafeGate's control socket {} cannot be used either: {connect_error}\n  {hint}",
        socket.display()
    )]
    Unreachable {
        /// Why the database did not open.
        open_error: StoreError,
        /// The socket.
        socket: PathBuf,
        /// Why the socket did not connect.
        connect_error: std::io::Error,
        /// What to do about it.
        hint: &'static str,
    },
    /// Run as root while SafeGate is stopped, in a data directory that belongs to the
    /// service's user: opening the database here would leave files only root can open.
    #[error(
        "{} belongs to uid {owner} (the user SafeGate runs as) and SafeGate is not \
         running: as root, this command would leave database files that SafeGate cannot \
         open. Run it as that user (sudo -u safegate safegate ..., or sudo -u '#{owner}' \
         safegate ...), or start SafeGate first",
        data_dir.display()
    )]
    RootInOthersDataDir {
        /// The configured data directory.
        data_dir: PathBuf,
        /// Its owner's user id.
        owner: u32,
    },
    /// The data directory could not be created.
    #[error("cannot create data_dir {}", path.display())]
    CreateDataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The database failed (opening it, or writing a command's output).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The command failed in this process.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The socket could not be reached, written or read (`what` says which).
    #[error("{what}")]
    Socket {
        /// What was being done, with the socket's path.
        what: String,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// Something other than a socket is where the control socket belongs.
    #[error("{} exists and is not a socket; move it away", .0.display())]
    NotASocket(PathBuf),
    /// The service closed the connection without a status line.
    #[error("SafeGate's control socket {} closed the connection without answering", .0.display())]
    NoStatus(PathBuf),
    /// The service's status line is not one.
    #[error("unreadable answer from SafeGate's control socket {}: {line:?}", socket.display())]
    UnreadableStatus {
        /// The socket.
        socket: PathBuf,
        /// The line received.
        line: String,
        /// Why it does not parse.
        source: serde_json::Error,
    },
    /// The service refused the command or the command failed there (its message).
    #[error("{0}")]
    Refused(String),
    /// The request could not be encoded.
    #[error(transparent)]
    Encode(#[from] serde_json::Error),
    /// Writing the output failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A local command's changes could not be written to disk.
    #[error("cannot start a runtime to flush the database")]
    FlushRuntime(#[source] std::io::Error),
    /// A local command's changes could not be written to disk.
    #[error("cannot flush the database")]
    Flush(#[source] StoreError),
}

impl ControlError {
    /// Whether writing the output failed because its reader went away (`safegate log
    /// query | head`): not an error for the person running the command.
    pub fn is_broken_pipe(&self) -> bool {
        let broken = |io: &std::io::Error| io.kind() == std::io::ErrorKind::BrokenPipe;
        if let ControlError::Io(io) = self {
            return broken(io);
        }
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(current) = cause {
            let io_kind = current
                .downcast_ref::<std::io::Error>()
                .map(std::io::Error::kind)
                .or_else(|| {
                    current
                        .downcast_ref::<serde_json::Error>()
                        .and_then(serde_json::Error::io_error_kind)
                });
            if io_kind == Some(std::io::ErrorKind::BrokenPipe) {
                return true;
            }
            if let Some(StoreError::Io(io)) = current.downcast_ref::<StoreError>()
                && broken(io)
            {
                return true;
            }
            cause = current.source();
        }
        false
    }
}
