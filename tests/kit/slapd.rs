//! A real OpenLDAP server (Debian's `slapd`) on 127.0.0.1 for the directory log-in
//! tests: a fixture directory loaded with `slapadd`, `ldaps://` with a certificate from
//! a test CA (the CA's PEM is written for SafeGate's `auth.ldap.ca_file`), started in
//! the foreground and killed when dropped.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// The directory's suffix.
pub const BASE: &str = "dc=school,dc=test";
/// The search account SafeGate binds as, and its password.
pub const BIND_DN: &str = "cn=safegate,ou=Service,dc=school,dc=test";
pub const BIND_PASSWORD: &str = "search-secret";

/// The fixture: OUs, a search account, people (`alice` in Year6, `tom` in Staff,
/// `olly` in no group, `dora` disabled) and two groups of names.
const FIXTURE: &str = "\
dn: dc=school,dc=test
objectClass: dcObject
objectClass: organization
o: Test School
dc: school

dn: ou=People,dc=school,dc=test
objectClass: organizationalUnit
ou: People

dn: ou=Groups,dc=school,dc=test
objectClass: organizationalUnit
ou: Groups

dn: ou=Service,dc=school,dc=test
objectClass: organizationalUnit
ou: Service

dn: cn=safegate,ou=Service,dc=school,dc=test
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: safegate
userPassword: search-secret

dn: uid=alice,ou=People,dc=school,dc=test
objectClass: inetOrgPerson
uid: alice
cn: Alice Pupil
sn: Pupil
userPassword: alice-pw

dn: uid=tom,ou=People,dc=school,dc=test
objectClass: inetOrgPerson
uid: tom
cn: Tom Teacher
sn: Teacher
userPassword: tom-pw

dn: uid=olly,ou=People,dc=school,dc=test
objectClass: inetOrgPerson
uid: olly
cn: Olly Other
sn: Other
userPassword: olly-pw

dn: uid=dora,ou=People,dc=school,dc=test
objectClass: inetOrgPerson
uid: dora
cn: Dora Left
sn: Left
description: disabled
userPassword: dora-pw

dn: cn=Year6,ou=Groups,dc=school,dc=test
objectClass: groupOfNames
cn: Year6
member: uid=alice,ou=People,dc=school,dc=test
member: uid=dora,ou=People,dc=school,dc=test

dn: cn=Staff,ou=Groups,dc=school,dc=test
objectClass: groupOfNames
cn: Staff
member: uid=tom,ou=People,dc=school,dc=test
";

/// Where Debian's slapd is, if installed.
pub fn slapd_binary() -> Option<PathBuf> {
    ["/usr/sbin/slapd", "/usr/sbin/slapadd"]
        .iter()
        .all(|p| Path::new(p).exists())
        .then(|| PathBuf::from("/usr/sbin/slapd"))
}

pub struct Slapd {
    child: Option<Child>,
    pub port: u16,
    pub ca_file: PathBuf,
    dir: tempfile::TempDir,
}

impl Slapd {
    /// Loads the fixture and starts slapd on a free loopback port (ldaps only).
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_file = write_certificates(dir.path());
        let config = dir.path().join("slapd.conf");
        std::fs::write(&config, slapd_conf(dir.path())).unwrap();
        std::fs::create_dir(dir.path().join("db")).unwrap();
        let ldif = dir.path().join("fixture.ldif");
        std::fs::write(&ldif, FIXTURE).unwrap();
        let loaded = Command::new("/usr/sbin/slapadd")
            .arg("-f")
            .arg(&config)
            .arg("-l")
            .arg(&ldif)
            .output()
            .await
            .unwrap();
        assert!(
            loaded.status.success(),
            "slapadd: {}",
            String::from_utf8_lossy(&loaded.stderr)
        );
        let port = free_port();
        let child = Command::new("/usr/sbin/slapd")
            .arg("-f")
            .arg(&config)
            .arg("-h")
            .arg(format!("ldaps://127.0.0.1:{port}/"))
            .args(["-d", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let slapd = Self {
            child: Some(child),
            port,
            ca_file,
            dir,
        };
        slapd.wait_until_listening().await;
        slapd
    }

    /// `ldaps://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.port)
    }

    /// Removes the entry `dn` (as the directory's administrator, with `ldapdelete`
    /// from Debian's ldap-utils, over ldaps with the test CA).
    pub async fn delete(&self, dn: &str) {
        let out = Command::new("ldapdelete")
            .env("LDAPTLS_CACERT", &self.ca_file)
            .args(["-x", "-H", &self.url(), "-D", &format!("cn=admin,{BASE}")])
            .args(["-w", "admin-secret", dn])
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "ldapdelete {dn}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server (its port then refuses connections).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
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
        panic!(
            "slapd did not listen on 127.0.0.1:{} ({:?})",
            self.port,
            self.dir.path()
        );
    }
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn slapd_conf(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
pidfile {d}/slapd.pid
argsfile {d}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
TLSCACertificateFile {d}/ca.pem
TLSCertificateFile {d}/server.pem
TLSCertificateKeyFile {d}/server.key
database mdb
maxsize 10485760
suffix \"{BASE}\"
rootdn \"cn=admin,{BASE}\"
rootpw admin-secret
directory {d}/db
access to attrs=userPassword by self read by anonymous auth by * none
access to * by * read
"
    )
}

/// A test CA and a server certificate for 127.0.0.1 signed by it; returns the CA's
/// PEM file.
fn write_certificates(dir: &Path) -> PathBuf {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "SafeGate test directory CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let leaf = params.signed_by(&key, &ca).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    ca_file
}
