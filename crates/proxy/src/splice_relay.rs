//! Zero-copy tunnel relay between two TCP sockets (Linux): each direction moves bytes
//! socket → pipe → socket with splice(2), so the payload never enters user space.
//!
//! Readiness comes from tokio (`readable()`/`writable()` + `try_io`). A pipe is only
//! held while bytes are in it: it is taken from a small process-wide spare list once
//! the source socket is readable, filled by one splice, drained completely into the
//! destination, and put back. So an `EAGAIN` always means "the socket is not ready"
//! (never "the pipe is full or empty"), the pipes need no readiness of their own, and
//! an idle tunnel holds no pipe: thousands of open tunnels cost no extra file
//! descriptors and stay clear of the kernel's per-user pipe allowance
//! (`fs.pipe-user-pages-soft`, past which new pipes shrink to two pages).
//!
//! If the kernel refuses to splice a socket (`EINVAL`, `ENOSYS`, `EOPNOTSUPP` on the
//! first transfer, before any byte moved), that direction falls back to a plain
//! userspace copy; so does a single transfer for which no pipe could be had.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use rustix::io::Errno;
use rustix::net::Shutdown;
use rustix::pipe::{PipeFlags, SpliceFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::visit_record::Direction;

/// Most bytes asked for per splice; the pipe's capacity is the real bound.
const MAX_SPLICE: usize = 1 << 20;
/// Pipe capacity asked for; the kernel's default (64 KiB) is kept when refused.
const PIPE_SIZE: usize = 256 * 1024;
/// Empty pipes kept for reuse; more are closed when put back.
const SPARE_MAX: usize = 64;
/// Buffer of the userspace fallback.
const FALLBACK_BUFFER: usize = 64 * 1024;

const FLAGS: SpliceFlags = SpliceFlags::MOVE.union(SpliceFlags::NONBLOCK);

/// Empty pipes, ready for the next transfer.
static SPARE: Mutex<Vec<Pipe>> = Mutex::new(Vec::new());

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    /// A spare pipe, or a new one.
    fn take() -> io::Result<Self> {
        let spare = SPARE.lock().unwrap_or_else(PoisonError::into_inner).pop();
        match spare {
            Some(pipe) => Ok(pipe),
            None => Self::new(),
        }
    }

    fn new() -> io::Result<Self> {
        let (read, write) = rustix::pipe::pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
        // Best effort: a bigger pipe means fewer splices per MiB; past the user's
        // pipe page allowance the kernel refuses and the default stays.
        let _ = rustix::pipe::fcntl_setpipe_size(&write, PIPE_SIZE);
        Ok(Self { read, write })
    }

    /// Keeps an empty pipe for reuse. A pipe that may still hold bytes (a transfer
    /// failed or was cancelled halfway) is dropped instead, never put back.
    fn put_back(self) {
        let mut spare = SPARE.lock().unwrap_or_else(PoisonError::into_inner);
        if spare.len() < SPARE_MAX {
            spare.push(self);
        }
    }
}

/// Whether a pipe can be had right now; checked before a tunnel commits to splicing,
/// so that running out of file descriptors leaves the tunnel to the copy loop.
pub(crate) fn available() -> io::Result<()> {
    Pipe::take()?.put_back();
    Ok(())
}

/// Relays both ways until each side has sent EOF (passed on as a write shutdown to
/// the other) or either direction fails. Each socket comes with the bytes already
/// read from it (by hyper, past the HTTP head), which go to the other side first.
/// `delivered` is called with the direction and the count each time bytes have been
/// written to the receiving socket (client → origin is `Up`), so the caller's counts
/// are exact even when this future is dropped halfway or a direction fails.
pub(crate) async fn relay<F: Fn(Direction, u64) + Sync>(
    (client, from_client): (&TcpStream, Bytes),
    (origin, from_origin): (&TcpStream, Bytes),
    delivered: &F,
) -> io::Result<()> {
    let up = |bytes| delivered(Direction::Up, bytes);
    let down = |bytes| delivered(Direction::Down, bytes);
    tokio::try_join!(
        one_way(client, origin, from_client, &up),
        one_way(origin, client, from_origin, &down),
    )?;
    Ok(())
}

/// Writes all of `bytes` to `to`, reporting each write to `delivered`.
async fn write_all<D: Fn(u64)>(to: &TcpStream, mut bytes: &[u8], delivered: &D) -> io::Result<()> {
    while !bytes.is_empty() {
        to.writable().await?;
        match to.try_write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                delivered(n as u64);
                bytes = bytes.get(n..).unwrap_or_default();
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

async fn one_way<D: Fn(u64) + Sync>(
    from: &TcpStream,
    to: &TcpStream,
    pending: Bytes,
    delivered: &D,
) -> io::Result<()> {
    write_all(to, &pending, delivered).await?;
    let mut spliced = false;
    loop {
        from.readable().await?;
        let pipe = match Pipe::take() {
            Ok(pipe) => pipe,
            Err(_) => {
                // Out of file descriptors for a moment: this transfer goes through
                // user space.
                let mut buffer = vec![0; FALLBACK_BUFFER];
                match copy_once(from, to, &mut buffer, delivered).await? {
                    0 => break,
                    _ => continue,
                }
            }
        };
        let moved = match from.try_io(Interest::READABLE, || {
            Ok(rustix::pipe::splice(
                from,
                None,
                &pipe.write,
                None,
                MAX_SPLICE,
                FLAGS,
            )?)
        }) {
            Ok(0) => {
                pipe.put_back();
                break;
            }
            Ok(moved) => moved,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                pipe.put_back();
                continue;
            }
            Err(error) if !spliced && unsupported(&error) => {
                pipe.put_back();
                return copy_one_way(from, to, delivered).await;
            }
            Err(error) => return Err(error),
        };
        spliced = true;
        splice_out(&pipe, to, moved, delivered).await?;
        pipe.put_back();
    }
    rustix::net::shutdown(to, Shutdown::Write)?;
    Ok(())
}

/// Moves exactly `len` bytes, all in the pipe, from the pipe to `to`, reporting each
/// splice to `delivered`.
async fn splice_out<D: Fn(u64)>(
    pipe: &Pipe,
    to: &TcpStream,
    mut len: usize,
    delivered: &D,
) -> io::Result<()> {
    while len > 0 {
        to.writable().await?;
        match to.try_io(Interest::WRITABLE, || {
            Ok(rustix::pipe::splice(
                &pipe.read, None, to, None, len, FLAGS,
            )?)
        }) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(moved) => {
                delivered(moved as u64);
                len = len.saturating_sub(moved);
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

fn unsupported(error: &io::Error) -> bool {
    error.raw_os_error().is_some_and(|code| {
        let errno = Errno::from_raw_os_error(code);
        errno == Errno::INVAL || errno == Errno::NOSYS || errno == Errno::OPNOTSUPP
    })
}

/// The userspace copy for a direction the kernel will not splice; passes EOF on.
async fn copy_one_way<D: Fn(u64)>(
    from: &TcpStream,
    to: &TcpStream,
    delivered: &D,
) -> io::Result<()> {
    let mut buffer = vec![0; FALLBACK_BUFFER];
    while copy_once(from, to, &mut buffer, delivered).await? > 0 {}
    rustix::net::shutdown(to, Shutdown::Write)?;
    Ok(())
}

/// Reads what `from` has (once) and writes it all to `to`; 0 at EOF.
async fn copy_once<D: Fn(u64)>(
    from: &TcpStream,
    to: &TcpStream,
    buffer: &mut [u8],
    delivered: &D,
) -> io::Result<usize> {
    loop {
        from.readable().await?;
        match from.try_read(buffer) {
            Ok(read) => {
                write_all(to, buffer.get(..read).unwrap_or_default(), delivered).await?;
                return Ok(read);
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::visit_record::TunnelBytes;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (connected, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (connected.unwrap(), accepted.unwrap().0)
    }

    /// Bytes both ways, each direction half-closed on its own, counted exactly.
    #[tokio::test]
    async fn relays_both_ways_with_half_close() {
        let (mut client, client_side) = pair().await;
        let (origin_side, mut origin) = pair().await;
        let counts = Arc::new(TunnelBytes::default());
        let counting = Arc::clone(&counts);
        let relay = tokio::spawn(async move {
            relay(
                (&client_side, Bytes::new()),
                (&origin_side, Bytes::new()),
                &|direction, bytes| counting.add(direction, bytes),
            )
            .await
        });
        let upload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let download: Vec<u8> = (0..5_000_000u32).map(|i| (i % 241) as u8).collect();
        let sent = upload.clone();
        let client_task = tokio::spawn(async move {
            let (mut read, mut write) = client.split();
            let writing = async {
                write.write_all(&sent).await.unwrap();
                write.shutdown().await.unwrap();
            };
            let mut received = Vec::new();
            let reading = read.read_to_end(&mut received);
            let ((), read) = tokio::join!(writing, reading);
            read.unwrap();
            received
        });
        let mut received = Vec::new();
        origin.read_to_end(&mut received).await.unwrap();
        assert!(received == upload);
        origin.write_all(&download).await.unwrap();
        origin.shutdown().await.unwrap();
        let at_client = client_task.await.unwrap();
        assert!(at_client == download);
        relay.await.unwrap().unwrap();
        assert_eq!(counts.totals(), (3_000_000, 5_000_000));
    }
}
