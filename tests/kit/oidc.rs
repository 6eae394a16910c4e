//! A real OpenID provider for the admin sign-in test: the npm package `oidc-provider`
//! (`.ci/run` installs it into `target/oidc`) run by node with
//! `tests/kit/oidc/provider.mjs`, on 127.0.0.1 only, killed when dropped. Its accounts:
//! `head` (groups: safeguarding) and `pat` (groups: year6); any password.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::kit::slapd::free_port;

/// The client SafeGate is registered as, and its secret.
pub const CLIENT_ID: &str = "safegate";
pub const CLIENT_SECRET: &str = "safegate-test-secret";

/// Where `.ci/run` installs the package.
fn package_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/oidc")
}

/// Whether node and the package are here.
pub fn installed() -> bool {
    std::path::Path::new("/usr/bin/node").exists()
        && package_dir()
            .join("node_modules/oidc-provider/package.json")
            .exists()
}

pub struct Provider {
    _child: Child,
    pub port: u16,
}

impl Provider {
    /// Starts the provider with SafeGate's callback `redirect_uri` registered.
    pub async fn start(redirect_uri: &str) -> Self {
        let port = free_port();
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/kit/oidc/provider.mjs");
        let child = Command::new("/usr/bin/node")
            .arg(script)
            .arg(port.to_string())
            .arg(redirect_uri)
            .env("OIDC_PROVIDER_DIR", package_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        for _ in 0..400 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Self {
                    _child: child,
                    port,
                };
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the OpenID provider did not listen on 127.0.0.1:{port}");
    }

    /// `http://127.0.0.1:PORT`, the issuer.
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}
