//! A real ClickHouse server (Debian's `clickhouse-server`, 18.16 in bookworm) on
//! 127.0.0.1 for the export tests: its own configuration and data in a temp dir, HTTP
//! and native ports picked free, listening on loopback only, started in the foreground
//! and killed when dropped. It can be stopped (SIGKILL: no goodbye to its clients) and
//! started again on the same ports and data. With [`Tls`], it also serves HTTPS and
//! checks client certificates itself (Poco's `openSSL.server`, `verificationMode`
//! strict: a connection without a certificate signed by `client_ca` is refused).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::kit::slapd::free_port;

/// The user SafeGate inserts as, and its password.
pub const USER: &str = "safegate";
pub const PASSWORD: &str = "ch-secret";

/// Where Debian's clickhouse-server is, if installed.
pub fn server_binary() -> Option<PathBuf> {
    let path = Path::new("/usr/sbin/clickhouse-server");
    path.exists().then(|| path.to_path_buf())
}

/// Whether the server is here; says why the test is skipped (or fails where required).
pub fn available() -> bool {
    let here = server_binary().is_some();
    if !here {
        assert!(
            std::env::var_os("SAFEGATE_REQUIRE_OPS_TOOLS").is_none(),
            "clickhouse-server is required (SAFEGATE_REQUIRE_OPS_TOOLS is set) but not installed"
        );
        eprintln!(
            "SKIPPED: clickhouse-server is not installed here (apt-get install clickhouse-server)"
        );
    }
    here
}

/// The HTTPS port's files (PEM): the server's certificate and key, and the CA whose
/// client certificates it takes.
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

pub struct ClickHouse {
    child: Option<Child>,
    pub http_port: u16,
    /// The HTTPS port, when started with [`Tls`].
    pub https_port: Option<u16>,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl ClickHouse {
    /// Writes the configuration and starts the server on free loopback ports.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// Like [`ClickHouse::start`], also serving HTTPS that requires a client
    /// certificate (the plain HTTP port stays, for the test's own queries).
    pub async fn start_tls(tls: &Tls) -> Self {
        Self::start_with(Some(tls)).await
    }

    async fn start_with(tls: Option<&Tls>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let http_port = free_port();
        let tcp_port = free_port();
        let https = tls.map(|tls| (free_port(), tls));
        std::fs::write(
            dir.path().join("config.xml"),
            config_xml(dir.path(), http_port, tcp_port, https),
        )
        .unwrap();
        std::fs::write(dir.path().join("users.xml"), USERS_XML).unwrap();
        let mut server = Self {
            child: None,
            http_port,
            https_port: https.map(|(port, _)| port),
            dir,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        };
        server.start_again().await;
        server
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// `https://127.0.0.1:PORT` (started with [`Tls`]).
    pub fn https_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.https_port.unwrap())
    }

    /// Starts the server (again) on the same ports and data; returns once it answers.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(server_binary().unwrap())
            .arg(format!(
                "--config-file={}",
                self.dir.path().join("config.xml").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.child = Some(child);
        for _ in 0..600 {
            if let Ok(answer) = self.http.get(format!("{}/ping", self.url())).send().await
                && answer.status().is_success()
            {
                return;
            }
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("clickhouse-server exited: {status}; {}", self.errors());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("clickhouse-server did not answer on {}", self.url());
    }

    /// Kills the server (SIGKILL) and waits for it to be gone.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Runs `sql` as the SafeGate user; panics on an error status.
    pub async fn query(&self, sql: &str) -> String {
        let answer = self
            .http
            .post(format!("{}/", self.url()))
            .basic_auth(USER, Some(PASSWORD))
            .body(sql.to_owned())
            .send()
            .await
            .unwrap();
        let status = answer.status();
        let text = answer.text().await.unwrap();
        assert!(status.is_success(), "{sql}: {status} {text}");
        text
    }

    /// The server's error log so far.
    pub fn errors(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("err.log")).unwrap_or_default()
    }
}

/// `<https_port>` and the server's TLS settings: deploy/clickhouse-tls.xml (client
/// certificates required, checked against `client_ca` alone) with the test's port
/// and files.
fn tls_xml((port, tls): (u16, &Tls)) -> String {
    let shipped = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/clickhouse-tls.xml"),
    )
    .unwrap();
    let inner = shipped
        .split("<yandex>")
        .nth(1)
        .and_then(|rest| rest.split("</yandex>").next())
        .unwrap();
    let replaced = inner
        .replace("<https_port>8443<", &format!("<https_port>{port}<"))
        .replace(
            "/etc/clickhouse-server/tls/server.pem",
            &tls.cert.display().to_string(),
        )
        .replace(
            "/etc/clickhouse-server/tls/server.key",
            &tls.key.display().to_string(),
        )
        .replace(
            "/etc/clickhouse-server/tls/trust-ca.pem",
            &tls.client_ca.display().to_string(),
        );
    assert!(!replaced.contains("/etc/"), "{replaced}");
    replaced
}

fn config_xml(dir: &Path, http_port: u16, tcp_port: u16, https: Option<(u16, &Tls)>) -> String {
    let d = dir.display();
    let tls = https.map(tls_xml).unwrap_or_default();
    format!(
        r#"<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/err.log</errorlog></logger>
  <http_port>{http_port}</http_port>
  <tcp_port>{tcp_port}</tcp_port>
{tls}
  <listen_host>127.0.0.1</listen_host>
  <path>{d}/data/</path>
  <tmp_path>{d}/tmp/</tmp_path>
  <user_files_path>{d}/user_files/</user_files_path>
  <format_schema_path>{d}/format_schemas/</format_schema_path>
  <mark_cache_size>16777216</mark_cache_size>
  <uncompressed_cache_size>16777216</uncompressed_cache_size>
  <users_config>{d}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mlock_executable>false</mlock_executable>
</yandex>
"#
    )
}

const USERS_XML: &str = r#"<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>1000000000</max_memory_usage></default></profiles>
  <users>
    <safegate>
      <password>ch-secret</password>
      <networks><ip>127.0.0.1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </safegate>
  </users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
    <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
  </interval></default></quotas>
</yandex>
"#;
