//! The export to a trust's ClickHouse over TLS with a client certificate, against a
//! real `clickhouse-server` (Debian's 18.16) that checks client certificates itself:
//! `https_port` with `openSSL.server` `verificationMode` strict and `caConfig` the
//! trust's CA. Every certificate is made here (rcgen). One school's SafeGate, on one
//! database, is started four times: with a certificate from another CA, with none,
//! with the right one but without the trust's CA for the server's certificate (the
//! server is then not trusted: verification is never relaxed), and finally as it
//! should be. The first three are refused: nothing arrives, the outbox keeps every
//! record, and the log says what is wrong; the fourth sends all of them, each once.
//! `safegate export init-clickhouse` makes the tables over the same TLS.
//!
//! Needs Debian's `clickhouse-server`; skipped without it unless
//! `SAFEGATE_REQUIRE_OPS_TOOLS` is set (by `.ci/run`), where that fails the test.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::kit::clickhouse::{self, ClickHouse, PASSWORD, Tls, USER};
use crate::kit::origin::Origin;
use crate::kit::process::SafeGate;
use crate::trust_export::{init_clickhouse, metric};

const SCHOOL: &str = "urn-200001";
/// Requests sent in each of the four starts.
const PER_START: usize = 15;

/// The trust's CA with the server's and a school's certificates, and a stranger's CA
/// with a school certificate of its own (same name, wrong issuer).
struct Certificates {
    dir: tempfile::TempDir,
}

impl Certificates {
    fn make() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let trust = ca("Trust CA");
        std::fs::write(dir.path().join("trust-ca.pem"), trust.pem()).unwrap();
        leaf(dir.path(), "server", &["127.0.0.1"], &trust);
        leaf(dir.path(), "school", &[], &trust);
        let stranger = ca("Another CA");
        leaf(dir.path(), "stranger", &[], &stranger);
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn server(&self) -> Tls {
        Tls {
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            client_ca: self.path("trust-ca.pem"),
        }
    }
}

fn ca(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
}

/// Writes `<name>.pem` and `<name>.key`: a certificate for `names`, signed by `issuer`.
fn leaf(
    dir: &Path,
    name: &str,
    names: &[&str],
    issuer: &rcgen::CertifiedIssuer<'_, rcgen::KeyPair>,
) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, SCHOOL);
    let cert = params.signed_by(&key, issuer).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
}

/// `export.clickhouse` over HTTPS, with the client certificate `client` (a name of
/// [`Certificates`]) and the trust's CA for the server, each when given.
fn tls_set(ch: &ClickHouse, certs: &Certificates, client: Option<&str>, ca: bool) -> String {
    let mut extra = String::new();
    if let Some(client) = client {
        let cert = certs.path(&format!("{client}.pem"));
        let key = certs.path(&format!("{client}.key"));
        extra.push_str(&format!(", client_cert = {cert:?}, client_key = {key:?}"));
    }
    if ca {
        extra.push_str(&format!(", ca_file = {:?}", certs.path("trust-ca.pem")));
    }
    format!(
        "export.clickhouse={{ url = {url:?}, database = \"trust\", user = {USER:?}, \
         password = {PASSWORD:?}, school = {SCHOOL:?}, interval = \"100ms\", timeout = \"5s\"{extra} }}",
        url = ch.https_url()
    )
}

/// Rows of this school in ClickHouse, each once.
async fn arrived(ch: &ClickHouse) -> String {
    ch.query(&format!(
        "SELECT count(), uniqExact(id), uniqExact(ifNull(path, '')) FROM trust.visits FINAL \
         WHERE school = '{SCHOOL}' FORMAT TSV"
    ))
    .await
    .trim()
    .to_owned()
}

/// Starts SafeGate on `data` (the first start's database) with `set`, sends
/// [`PER_START`] allowed requests (one path each), and returns it running.
async fn start_and_browse(
    data: Option<&Path>,
    set: &str,
    origin: &Origin,
    start: usize,
) -> SafeGate {
    let data = data.map(|d| format!("data_dir={:?}", d.display().to_string()));
    let mut sets = vec![set];
    sets.extend(data.as_deref());
    let sg = SafeGate::start(&sets).await;
    let client = sg.client();
    for i in 0..PER_START {
        let url = origin.url(&format!("/bytes/16?n=tls-{start}-{i}"));
        let status = client.get(&url).send().await.unwrap().status();
        assert_eq!(status, 200, "{url}");
    }
    sg
}

/// Waits until the export has failed, the log line saying why contains `why`, and
/// the outbox holds `waiting` records; then stops SafeGate.
async fn refused(sg: &mut SafeGate, why: &str, waiting: usize) {
    let line = sg.wait_for_log("cannot export to ClickHouse").await;
    assert!(line.contains(why), "{line}");
    while metric(sg, "safegate_export_backlog").await != waiting as f64 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(metric(sg, "safegate_export_up").await, 0.0);
    assert!(metric(sg, "safegate_export_failures_total").await >= 1.0);
    sg.terminate();
    assert!(sg.wait().await.success());
}

#[tokio::test]
async fn export_over_tls_needs_a_client_certificate_from_the_trusts_ca() {
    if !clickhouse::available() {
        return;
    }
    let body = async {
        let certs = Certificates::make();
        let ch = ClickHouse::start_tls(&certs.server()).await;
        let origin = Origin::start().await;
        // The tables, made over the same TLS, as a technician would.
        let good = tls_set(&ch, &certs, Some("school"), true);
        let stdout = init_clickhouse(&good, &[]).await;
        assert!(stdout.contains("ClickHouse 18.16"), "{stdout}");

        // A certificate from another CA: ClickHouse refuses the handshake.
        let stranger = tls_set(&ch, &certs, Some("stranger"), true);
        let mut first = start_and_browse(None, &stranger, &origin, 1).await;
        let data = first.data_dir().to_owned();
        refused(
            &mut first,
            "refused this school's client certificate",
            PER_START,
        )
        .await;
        // No certificate at all.
        let none = tls_set(&ch, &certs, None, true);
        let mut sg = start_and_browse(Some(&data), &none, &origin, 2).await;
        refused(&mut sg, "no client certificate is set", 2 * PER_START).await;
        // The right certificate, but the server's is not checked against the trust's
        // CA: not trusted (the system's CAs do not know it), never sent regardless.
        let no_ca = tls_set(&ch, &certs, Some("school"), false);
        let mut sg = start_and_browse(Some(&data), &no_ca, &origin, 3).await;
        refused(&mut sg, "UnknownIssuer", 3 * PER_START).await;
        assert_eq!(arrived(&ch).await, "0\t0\t0");
        let server_said = ch.errors();
        assert!(
            server_said.contains("peer did not return a certificate")
                && server_said.contains("certificate verify failed"),
            "{server_said}"
        );

        // Put right: everything waiting arrives, each record once.
        let mut sg = start_and_browse(Some(&data), &good, &origin, 4).await;
        let all = 4 * PER_START;
        while arrived(&ch).await != format!("{all}\t{all}\t{all}") {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        while metric(&sg, "safegate_export_backlog").await != 0.0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(metric(&sg, "safegate_export_up").await, 1.0);
        sg.terminate();
        assert!(sg.wait().await.success());
        drop(first);
    };
    if tokio::time::timeout(Duration::from_secs(120), body)
        .await
        .is_err()
    {
        panic!("the ClickHouse TLS export test did not finish within 120 s");
    }
}
