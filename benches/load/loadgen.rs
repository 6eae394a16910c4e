//! `safegate-loadgen`: the CONNECT half of SafeGate's load harness (`benches/load/run.sh`).
//!
//! * `serve` runs the loopback origin for tunnels. Each connection sends one mode byte
//!   first: `S` (the server sends bytes as fast as it can), `K` (the server reads and
//!   discards) or `E` (the server echoes everything back).
//! * `bulk` opens `--connections` tunnels (CONNECT through `--proxy`, or straight to
//!   `--target` without it) and measures the bytes per second carried after a warm-up.
//! * `tunnels` opens a tunnel, echoes `--payload` bytes through it and closes it, over
//!   and over from `--concurrency` workers, and measures tunnels per second and the
//!   latency of one whole open-echo-close.
//!
//! Every client mode prints exactly one line on stdout, `result key=value ...`, for
//! the script to parse. Only loopback addresses are accepted, so a typo cannot send
//! load anywhere else.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use clap::{Parser, Subcommand, ValueEnum};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Size of every read and write buffer on the bulk path.
const CHUNK: usize = 256 * 1024;
/// Largest CONNECT response head accepted.
const MAX_HEAD: usize = 16 * 1024;

#[derive(Parser, Debug)]
#[command(about = "CONNECT load generator and loopback origin for SafeGate's load harness")]
struct Cli {
    /// Tokio worker threads (1 = a current-thread runtime, like `wrk -t1`).
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Run the loopback origin (source, sink and echo) until killed.
    Serve {
        /// Address to listen on (loopback only).
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Bulk throughput through long-lived tunnels.
    Bulk {
        #[command(flatten)]
        common: Common,
        /// Tunnels open at once.
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// `down`: origin to client (a download); `up`: client to origin.
        #[arg(long, value_enum, default_value_t = Direction::Down)]
        direction: Direction,
    },
    /// Rate of new tunnels, each carrying one small echo.
    Tunnels {
        #[command(flatten)]
        common: Common,
        /// Workers, each opening one tunnel after another.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Bytes echoed through each tunnel.
        #[arg(long, default_value_t = 1024)]
        payload: usize,
    },
}

#[derive(clap::Args, Debug, Clone)]
struct Common {
    /// The origin started with `serve` (loopback only).
    #[arg(long)]
    target: SocketAddr,
    /// Proxy to CONNECT through (loopback only); without it, connect straight to the target.
    #[arg(long)]
    proxy: Option<SocketAddr>,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds run before measuring starts.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Label copied into the result line.
    #[arg(long, default_value = "-")]
    label: String,
    /// Extra header line sent with every CONNECT, e.g. `Proxy-Authorization: Basic ...`
    /// (repeatable).
    #[arg(long, value_name = "NAME: VALUE")]
    proxy_header: Vec<String>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Down,
    Up,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(async move {
        match cli.mode {
            Mode::Serve { listen } => serve(listen).await,
            Mode::Bulk {
                common,
                connections,
                direction,
            } => bulk(common, connections, direction).await,
            Mode::Tunnels {
                common,
                concurrency,
                payload,
            } => tunnels(common, concurrency, payload).await,
        }
    })
}

fn loopback_only(addr: SocketAddr, what: &str) -> anyhow::Result<()> {
    ensure!(
        addr.ip().is_loopback(),
        "{what} {addr} is not a loopback address; the harness only loads loopback"
    );
    Ok(())
}

fn check_common(common: &Common) -> anyhow::Result<()> {
    loopback_only(common.target, "--target")?;
    if let Some(proxy) = common.proxy {
        loopback_only(proxy, "--proxy")?;
    }
    ensure!(
        common.duration > 0.0 && common.warmup >= 0.0,
        "--duration must be positive and --warmup not negative"
    );
    for header in &common.proxy_header {
        ensure!(
            header.contains(':') && !header.contains(['\r', '\n']),
            "--proxy-header {header:?} is not one `Name: value` line"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Origin

async fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    loopback_only(listen, "--listen")?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    println!("loadgen origin listening on {}", listener.local_addr()?);
    let source: Arc<[u8]> = vec![0x5a; CHUNK].into();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                eprintln!("accept: {error}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let source = Arc::clone(&source);
        tokio::spawn(async move {
            // Errors here are clients going away mid-stream, which is how every
            // bulk run ends.
            let _ = serve_one(stream, &source).await;
        });
    }
}

async fn serve_one(mut stream: TcpStream, source: &[u8]) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut mode = [0u8; 1];
    stream.read_exact(&mut mode).await?;
    match mode[0] {
        b'S' => loop {
            stream.write_all(source).await?;
        },
        b'K' => {
            let mut buf = vec![0u8; CHUNK];
            while stream.read(&mut buf).await? != 0 {}
            Ok(())
        }
        b'E' => {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    return stream.shutdown().await;
                }
                stream.write_all(&buf[..n]).await?;
            }
        }
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------
// Client side

/// Connects to the target, through the proxy with CONNECT when there is one.
async fn open_tunnel(common: &Common) -> anyhow::Result<TcpStream> {
    let Some(proxy) = common.proxy else {
        let stream = TcpStream::connect(common.target).await?;
        stream.set_nodelay(true)?;
        return Ok(stream);
    };
    let mut stream = TcpStream::connect(proxy).await?;
    stream.set_nodelay(true)?;
    let target = common.target;
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    for header in &common.proxy_header {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    // The origin speaks only after the mode byte, so nothing follows the head.
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            bail!("proxy closed the connection before answering CONNECT");
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        if head.len() > MAX_HEAD {
            bail!("CONNECT response head longer than {MAX_HEAD} bytes");
        }
    }
    let status_ok = head.len() >= 12 && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200";
    if !status_ok {
        let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
        bail!("CONNECT refused: {}", String::from_utf8_lossy(line));
    }
    Ok(stream)
}

fn proxy_label(common: &Common) -> String {
    common
        .proxy
        .map_or_else(|| "direct".to_owned(), |p| p.to_string())
}

async fn bulk(common: Common, connections: usize, direction: Direction) -> anyhow::Result<()> {
    check_common(&common)?;
    ensure!(connections > 0, "--connections must be at least 1");
    let moved = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));

    // Open every tunnel first, so set-up is not part of the measurement.
    let mut streams = Vec::with_capacity(connections);
    for _ in 0..connections {
        let mut stream = open_tunnel(&common)
            .await
            .context("opening a bulk tunnel")?;
        let mode: &[u8] = match direction {
            Direction::Down => b"S",
            Direction::Up => b"K",
        };
        stream.write_all(mode).await?;
        streams.push(stream);
    }
    let mut tasks = Vec::with_capacity(connections);
    for mut stream in streams {
        let moved = Arc::clone(&moved);
        let errors = Arc::clone(&errors);
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0x33u8; CHUNK];
            while !stop.load(Ordering::Relaxed) {
                let result = match direction {
                    Direction::Down => stream.read(&mut buf).await,
                    Direction::Up => stream.write(&buf).await,
                };
                match result {
                    Ok(0) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Ok(n) => {
                        moved.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(common.warmup)).await;
    let (bytes_before, started) = (moved.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(Duration::from_secs_f64(common.duration)).await;
    let (bytes_after, elapsed) = (moved.load(Ordering::Relaxed), started.elapsed());
    stop.store(true, Ordering::Relaxed);
    for task in &tasks {
        task.abort();
    }
    let bytes = bytes_after - bytes_before;
    let secs = elapsed.as_secs_f64();
    let mib_per_s = bytes as f64 / secs / (1024.0 * 1024.0);
    println!(
        "result mode=bulk label={} via={} direction={:?} connections={connections} secs={secs:.3} bytes={bytes} mib_per_s={mib_per_s:.1} errors={}",
        common.label,
        proxy_label(&common),
        direction,
        errors.load(Ordering::Relaxed),
    );
    Ok(())
}

/// What one tunnels worker measured inside the window.
#[derive(Default)]
struct WorkerTally {
    latencies_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

async fn tunnels(common: Common, concurrency: usize, payload: usize) -> anyhow::Result<()> {
    check_common(&common)?;
    ensure!(concurrency > 0, "--concurrency must be at least 1");
    // Fail fast, with the proxy's answer, when tunnels cannot be opened at all.
    drop(
        open_tunnel(&common)
            .await
            .context("opening a probe tunnel")?,
    );

    let common = Arc::new(common);
    let begin = Instant::now();
    let window_start = begin + Duration::from_secs_f64(common.warmup);
    let window_end = window_start + Duration::from_secs_f64(common.duration);
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let common = Arc::clone(&common);
        tasks.push(tokio::spawn(async move {
            let mut tally = WorkerTally::default();
            let mut message = vec![0x61u8; payload + 1];
            message[0] = b'E';
            let mut echo = vec![0u8; payload];
            loop {
                let started = Instant::now();
                if started >= window_end {
                    break;
                }
                let result = async {
                    let mut stream = open_tunnel(&common).await?;
                    stream.write_all(&message).await?;
                    stream.read_exact(&mut echo).await?;
                    anyhow::Ok(())
                }
                .await;
                let finished = Instant::now();
                let in_window = started >= window_start && finished <= window_end;
                match result {
                    Ok(()) if in_window => {
                        let micros = (finished - started).as_micros();
                        tally
                            .latencies_us
                            .push(u32::try_from(micros).unwrap_or(u32::MAX));
                    }
                    Ok(()) => {}
                    Err(error) => {
                        if in_window {
                            tally.errors += 1;
                        }
                        tally
                            .first_error
                            .get_or_insert_with(|| format!("{error:#}"));
                        // Do not spin on a proxy that refuses everything.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            tally
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for task in tasks {
        let tally = task.await?;
        latencies.extend(tally.latencies_us);
        errors += tally.errors;
        first_error = first_error.or(tally.first_error);
    }
    latencies.sort_unstable();
    let secs = common.duration;
    let rate = latencies.len() as f64 / secs;
    if let Some(error) = &first_error {
        eprintln!("tunnels: first error: {error}");
    }
    println!(
        "result mode=tunnels label={} via={} concurrency={concurrency} payload={payload} secs={secs:.3} tunnels={} tunnels_per_s={rate:.1} p50_ms={:.3} p99_ms={:.3} errors={errors}",
        common.label,
        proxy_label(&common),
        latencies.len(),
        percentile_ms(&latencies, 0.50),
        percentile_ms(&latencies, 0.99),
    );
    Ok(())
}

/// Nearest-rank percentile of sorted microsecond samples, in milliseconds.
fn percentile_ms(sorted_us: &[u32], quantile: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let rank = (quantile * sorted_us.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted_us.len()) - 1;
    f64::from(sorted_us[index]) / 1000.0
}
