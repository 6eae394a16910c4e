//! The SafeGate binary as a child process, started on the shipped configuration with
//! `--set` overrides: ephemeral loopback ports, a temporary data directory, loopback
//! upstreams allowed, and DNS pointed at loopback so no test ever asks a real resolver.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_safegate"))
}

pub fn shipped_config() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config/safegate.toml")
}

/// The shipped policy as the tests run it: the same rules and lists, except that
/// pupils may reach sites by IP address (`block_ip_hosts = false`), because the test
/// origins listen on 127.0.0.1. Tests of that rule pass their own `policy.file`.
pub fn loopback_policy() -> &'static std::path::Path {
    static POLICY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    POLICY.get_or_init(|| {
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let shipped = std::fs::read_to_string(repo.join("config/policy.toml")).unwrap();
        let blocklists = std::path::absolute(repo.join("blocklists")).unwrap();
        let text = shipped
            .replace("block_ip_hosts = true", "block_ip_hosts = false")
            .replace("\"../blocklists/", &format!("\"{}/", blocklists.display()));
        // In cargo's temp dir for integration tests (under target/): nothing left
        // behind in /tmp, and written whole before it is renamed into place.
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let path = dir.join("loopback-policy.toml");
        let partial = dir.join(format!("loopback-policy.toml.{}", std::process::id()));
        std::fs::write(&partial, text).unwrap();
        std::fs::rename(&partial, &path).unwrap();
        path
    })
}

pub struct SafeGate {
    child: Child,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    log_lines: watch::Receiver<usize>,
    log_reader: Option<tokio::task::JoinHandle<()>>,
    _data_dir: tempfile::TempDir,
}

impl SafeGate {
    /// Starts SafeGate with the test defaults plus `sets` (later ones win).
    pub async fn start(sets: &[&str]) -> Self {
        Self::start_with_env(sets, &[]).await
    }

    /// Like [`SafeGate::start`], with extra environment variables for the process.
    pub async fn start_with_env(sets: &[&str], env: &[(&str, &str)]) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = vec![
            "run".into(),
            "--config".into(),
            shipped_config().display().to_string(),
        ];
        let data = format!("data_dir={:?}", data_dir.path().display().to_string());
        let policy = format!("policy.file={:?}", loopback_policy().display().to_string());
        let defaults = [
            policy.as_str(),
            "proxy.listen=\"127.0.0.1:0\"",
            "admin.listen=\"127.0.0.1:0\"",
            "upstream.allow_loopback=true",
            // Port 9 on loopback: nothing answers, so a stray lookup fails fast and locally.
            "upstream.dns.servers=[\"127.0.0.1:9\"]",
            "upstream.dns.timeout=\"1s\"",
            data.as_str(),
        ];
        for set in defaults.iter().copied().chain(sets.iter().copied()) {
            args.push("--set".into());
            args.push(set.to_owned());
        }
        let mut child = Command::new(binary())
            .args(&args)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (count_tx, mut log_lines) = watch::channel(0usize);
        let sink = Arc::clone(&logs);
        let log_reader = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut all = sink.lock().unwrap();
                all.push(line);
                let _ = count_tx.send(all.len());
            }
        });
        let ready = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                {
                    let all = logs.lock().unwrap();
                    let proxy = find_addr(&all, "proxy listening on ");
                    let admin = find_addr(&all, "admin listening on ");
                    if let (Some(proxy), Some(admin)) = (proxy, admin) {
                        return Ok((proxy, admin));
                    }
                }
                if log_lines.changed().await.is_err() {
                    return Err(logs.lock().unwrap().join("\n"));
                }
            }
        })
        .await;
        let (proxy, admin) = match ready {
            Ok(Ok(pair)) => pair,
            Ok(Err(output)) => panic!("safegate exited before it was ready:\n{output}"),
            Err(_) => panic!(
                "safegate not ready in 30s:\n{}",
                logs.lock().unwrap().join("\n")
            ),
        };
        Self {
            child,
            proxy,
            admin,
            logs,
            log_lines,
            log_reader: Some(log_reader),
            _data_dir: data_dir,
        }
    }

    /// The temporary data directory (database, reports).
    pub fn data_dir(&self) -> &std::path::Path {
        self._data_dir.path()
    }

    /// The address in the first log line containing `marker` followed by an address,
    /// e.g. `"transparent HTTP listening on "` (logged before the service is ready).
    pub fn logged_addr(&self, marker: &str) -> Option<SocketAddr> {
        find_addr(&self.logs.lock().unwrap(), marker)
    }

    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.proxy)
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits until a log line contains `needle` (bounded by the caller's test limit).
    pub async fn wait_for_log(&mut self, needle: &str) -> String {
        loop {
            if let Some(line) = self
                .logs
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return line.clone();
            }
            if self.log_lines.changed().await.is_err() {
                panic!(
                    "safegate's log closed without {needle:?}:\n{}",
                    self.logs().join("\n")
                );
            }
        }
    }

    /// Waits until the log lines so far, taken together, satisfy `done` (called again
    /// on every new line; bounded by the caller's test limit); returns them.
    pub async fn wait_for_logs(&mut self, mut done: impl FnMut(&[String]) -> bool) -> Vec<String> {
        loop {
            {
                let all = self.logs.lock().unwrap();
                if done(&all) {
                    return all.clone();
                }
            }
            if self.log_lines.changed().await.is_err() {
                panic!(
                    "safegate's log closed before the awaited lines:\n{}",
                    self.logs().join("\n")
                );
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    /// Sends SIGKILL: no shutdown, no flush, like a crash. `wait` then reaps the process.
    pub fn kill_9(&mut self) {
        self.child.start_kill().unwrap();
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit and for its last log lines to be read.
    pub async fn wait(&mut self) -> ExitStatus {
        let status = self.child.wait().await.unwrap();
        if let Some(reader) = self.log_reader.take() {
            reader.await.unwrap();
        }
        status
    }

    /// An HTTP client that uses this SafeGate as its proxy.
    pub fn client(&self) -> reqwest::Client {
        self.client_builder().build().unwrap()
    }

    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .proxy(reqwest::Proxy::all(self.proxy_url()).unwrap())
            .timeout(Duration::from_secs(30))
    }
}

fn find_addr(lines: &[String], marker: &str) -> Option<SocketAddr> {
    lines.iter().find_map(|line| {
        let rest = &line[line.find(marker)? + marker.len()..];
        // Up to a space, or a quote in a JSON log line.
        rest.split(|c: char| c.is_whitespace() || c == '"')
            .next()?
            .parse()
            .ok()
    })
}

/// Runs the binary to completion with `args`; returns (exit status, stdout, stderr).
pub async fn run_to_end(args: &[&str]) -> (ExitStatus, String, String) {
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new(binary())
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// How long [`run_program`] waits for a command.
const PROGRAM_LIMIT: Duration = Duration::from_secs(60);

/// Runs `program ARGS` to its end within a minute, from `/` (which a service user can
/// read), with `stdin` fed to it (closed after) or none; returns (success, stdout +
/// stderr).
pub async fn run_program(program: &str, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = Command::new(program)
        .args(args)
        .current_dir("/")
        .env_remove("RUST_LOG")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A command that does not read its input may have closed it already: its exit
        // status is what counts.
        let _ = pipe.write_all(text.as_bytes()).await;
    }
    let output = tokio::time::timeout(PROGRAM_LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} did not finish in {PROGRAM_LIMIT:?}"))
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}
