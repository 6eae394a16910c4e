//! HAProxy (Debian's `haproxy`) on 127.0.0.1 in front of several SafeGate nodes, for
//! the several-nodes test: TCP mode (a forward proxy's traffic, CONNECT included, goes
//! through untouched), round robin, each node checked on its admin `/readyz` every
//! 200 ms, a connection refused by a dead node retried on another, each connection
//! to a node led by a PROXY protocol v2 header naming the client (`send-proxy-v2`;
//! the nodes need `proxy.proxy_protocol_from`). Started in the foreground, killed
//! when dropped. The configuration is deploy/haproxy.cfg's, with the test's
//! addresses.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::kit::slapd::free_port;

/// Where Debian's haproxy is, if installed.
pub fn binary() -> Option<PathBuf> {
    let path = Path::new("/usr/sbin/haproxy");
    path.exists().then(|| path.to_path_buf())
}

/// Whether haproxy is here; says why the test is skipped (or fails where required).
pub fn available() -> bool {
    let here = binary().is_some();
    if !here {
        assert!(
            std::env::var_os("SAFEGATE_REQUIRE_OPS_TOOLS").is_none(),
            "haproxy is required (SAFEGATE_REQUIRE_OPS_TOOLS is set) but not installed"
        );
        eprintln!("SKIPPED: haproxy is not installed here (apt-get install haproxy)");
    }
    here
}

pub struct HaProxy {
    _child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl HaProxy {
    /// Starts HAProxy in front of `nodes` (proxy address, admin address).
    pub async fn start(nodes: &[(SocketAddr, SocketAddr)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let servers: String = nodes
            .iter()
            .enumerate()
            .map(|(i, (proxy, admin))| server_line(i + 1, *proxy, admin.port()))
            .collect();
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(&config, config_text(port, &servers)).unwrap();
        let check = std::process::Command::new(binary().unwrap())
            .args(["-c", "-f"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "haproxy -c: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let child = Command::new(binary().unwrap())
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Self {
                    _child: child,
                    port,
                    _dir: dir,
                };
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("haproxy did not listen on 127.0.0.1:{port}");
    }

    /// `http://127.0.0.1:PORT`, for clients' proxy setting.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn shipped() -> String {
    std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/haproxy.cfg"),
    )
    .unwrap()
}

/// The shipped first `server` line (its options: send-proxy-v2, the check) for node
/// `n` at `proxy`, checked on `admin_port`.
fn server_line(n: usize, proxy: SocketAddr, admin_port: u16) -> String {
    let shipped = shipped();
    let line = shipped
        .lines()
        .find(|line| line.trim_start().starts_with("server node1 "))
        .unwrap();
    format!(
        "{}\n",
        line.replace("node1", &format!("node{n}"))
            .replace("10.0.0.11:3128", &proxy.to_string())
            .replace("port 9128", &format!("port {admin_port}"))
    )
}

/// deploy/haproxy.cfg with the test's port and servers.
fn config_text(port: u16, servers: &str) -> String {
    let shipped = shipped();
    let head = shipped
        .split("    server ")
        .next()
        .unwrap()
        .replace("bind :3128", &format!("bind 127.0.0.1:{port}"))
        .replace("    log /dev/log local0\n", "");
    format!("{head}{servers}")
}
