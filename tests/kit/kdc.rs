//! A real MIT Kerberos KDC (Debian's `krb5-kdc`, with `kadmin.local` from
//! `krb5-admin-server`) on 127.0.0.1 for the Kerberos log-in tests: a realm made in a
//! temporary folder (`kdb5_util create -s`), a person `alice` and the proxy's service
//! principal `HTTP/localhost` with its keytab, the KDC in the foreground on a free
//! loopback port, killed when dropped. `KRB5_CONFIG` and `KRB5_KDC_PROFILE` point into
//! the folder for every command run here and by [`Kdc::env`]; nothing else is touched.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::kit::slapd::free_port;

/// The test realm.
pub const REALM: &str = "TEST.SAFEGATE";
/// The proxy's service principal (curl asks for `HTTP@<the proxy's host name>`).
pub const SERVICE: &str = "HTTP/localhost";

/// Whether the KDC's programs and kinit are installed.
pub fn installed() -> bool {
    [
        "/usr/sbin/krb5kdc",
        "/usr/sbin/kdb5_util",
        "/usr/sbin/kadmin.local",
        "/usr/bin/kinit",
    ]
    .iter()
    .all(|p| Path::new(p).exists())
}

pub struct Kdc {
    child: Option<Child>,
    pub port: u16,
    /// The service principal's keytab (for `auth.kerberos.keytab`).
    pub keytab: PathBuf,
    dir: tempfile::TempDir,
}

impl Kdc {
    /// Makes the realm with `people` (name, password) and starts the KDC.
    pub async fn start(people: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        write_config(dir.path(), port);
        let keytab = dir.path().join("http.keytab");
        let mut kdc = Self {
            child: None,
            port,
            keytab,
            dir,
        };
        kdc.run(
            "/usr/sbin/kdb5_util",
            &["create", "-s", "-r", REALM, "-P", "master-pw"],
        )
        .await;
        for (name, password) in people {
            kdc.admin(&format!("addprinc -pw {password} {name}")).await;
        }
        kdc.admin(&format!("addprinc -randkey {SERVICE}")).await;
        let keytab = kdc.keytab.display().to_string();
        kdc.admin(&format!("ktadd -k {keytab} {SERVICE}")).await;
        let child = Command::new("/usr/sbin/krb5kdc")
            .args(["-n", "-r", REALM])
            .envs(kdc.env())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        kdc.child = Some(child);
        kdc.wait_until_listening().await;
        kdc
    }

    /// `KRB5_CONFIG` and `KRB5_KDC_PROFILE` for this realm.
    pub fn env(&self) -> Vec<(String, String)> {
        let path = |name: &str| self.dir.path().join(name).display().to_string();
        vec![
            ("KRB5_CONFIG".to_owned(), path("krb5.conf")),
            ("KRB5_KDC_PROFILE".to_owned(), path("kdc.conf")),
        ]
    }

    /// `kinit NAME` with the password from a file (on standard input): the credential
    /// cache's name (`FILE:...`) for `KRB5CCNAME`.
    pub async fn kinit(&self, name: &str, password: &str) -> String {
        self.kinit_with(name, password, &[]).await
    }

    /// `kinit` with extra arguments (`-l 3s`: a ticket that soon expires), into a
    /// credential cache of its own.
    pub async fn kinit_with(&self, name: &str, password: &str, extra: &[&str]) -> String {
        let password_file = self.dir.path().join(format!("{name}.password"));
        std::fs::write(&password_file, format!("{password}\n")).unwrap();
        let cache = format!(
            "FILE:{}",
            self.dir
                .path()
                .join(format!("{name}{}.cc", extra.join("").replace(' ', "")))
                .display()
        );
        let out = Command::new("/usr/bin/kinit")
            .args(extra)
            .arg(name)
            .envs(self.env())
            .env("KRB5CCNAME", &cache)
            .stdin(std::fs::File::open(&password_file).unwrap())
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "kinit {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cache
    }

    async fn admin(&self, query: &str) {
        self.run("/usr/sbin/kadmin.local", &["-r", REALM, "-q", query])
            .await;
    }

    async fn run(&self, program: &str, args: &[&str]) {
        let out = Command::new(program)
            .args(args)
            .envs(self.env())
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    async fn wait_until_listening(&self) {
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("krb5kdc did not listen on 127.0.0.1:{}", self.port);
    }
}

/// `krb5.conf` (clients: the KDC on loopback, TCP, no DNS) and `kdc.conf`.
fn write_config(dir: &Path, port: u16) {
    let d = dir.display();
    let krb5 = format!(
        "[libdefaults]
 default_realm = {REALM}
 clockskew = 1
 dns_lookup_kdc = false
 dns_lookup_realm = false
 rdns = false
 dns_canonicalize_hostname = false
 udp_preference_limit = 1
[realms]
 {REALM} = {{
  kdc = 127.0.0.1:{port}
 }}
[domain_realm]
 localhost = {REALM}
"
    );
    let kdc = format!(
        "[kdcdefaults]
 kdc_listen = 127.0.0.1:{port}
 kdc_tcp_listen = 127.0.0.1:{port}
[realms]
 {REALM} = {{
  database_name = {d}/principal
  key_stash_file = {d}/stash
  acl_file = {d}/kadm5.acl
 }}
[logging]
 kdc = FILE:{d}/kdc.log
"
    );
    std::fs::write(dir.join("krb5.conf"), krb5).unwrap();
    std::fs::write(dir.join("kdc.conf"), kdc).unwrap();
}
