//! HTTPS through SafeGate with the school CA: `safegate ca init|export`, decrypted
//! sites served as HTTP/1.1 and HTTP/2 (reqwest and curl trusting only the school CA)
//! with bodies equal to the origin's, HTTP/2 towards an origin that offers it, URL
//! rules and the block page over HTTPS, its review form posted to the page's own
//! origin and answered by SafeGate, `safegate check` on decryption, WebSockets
//! inside a decrypted tunnel,
//! search terms in the visit log, a never-decrypt site tunnelled untouched (the
//! client sees the origin's own certificate), a TLS server name that differs from the
//! CONNECT host refused, and origins with an expired or wrong-name certificate
//! refused with a page. Names resolve to 127.0.0.1 through the fake DNS server; the
//! origins' test CA is SafeGate's `upstream.extra_roots`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use safegate_store::{Outcome, Query, SeenAs, Store};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::kit::block_page::review_form_fields;
use crate::kit::dns::FakeDns;
use crate::kit::origin::{Origin, TestCa};
use crate::kit::process::{SafeGate, run_to_end, shipped_config};
use crate::kit::{bounded, payload, raw};

/// The names the test origin's certificate covers.
const ORIGIN_NAMES: &[&str] = &["www.bing.com", "shop.test", "bank.test", "games.test"];

const POLICY: &str = r#"school = "Ysgol Bryn Test"
timezone = "Europe/London"
default_role = "pupil"

[categories.search-engines]
sites = ["www.bing.com"]
[categories.banking]
sites = ["bank.test"]
[categories.games]
sites = ["games.test"]
[categories.gambling]
sites = ["bet.test"]
[categories.dating]
sites = ["dating.test"]

[roles.pupil]
block = ["games", "gambling", "dating"]
deny = ["shop.test/forbidden"]
safesearch = false
youtube = "off"
[roles.staff]
[roles.filter-admin]

[decrypt]
categories = ["search-engines"]
sites = ["shop.test", "games.test", "expired.test", "wrongname.test", "h2.test"]
never_categories = ["banking"]
never_sites = ["dating.test"]
"#;

/// Names that resolve to loopback without a certificate at the origin: blocked sites
/// that SafeGate answers itself, and an allowed site that is only tunnelled.
const OTHER_NAMES: &[&str] = &["bet.test", "dating.test", "open.test"];

/// A running SafeGate with the school CA, a TLS origin for `ORIGIN_NAMES`, and two
/// origins with bad certificates.
pub(crate) struct Setup {
    pub(crate) safegate: SafeGate,
    pub(crate) origin: Origin,
    expired: OtherOrigin,
    wrong_name: OtherOrigin,
    /// An origin that offers HTTP/2 (ALPN) and answers with the version it saw.
    h2: OtherOrigin,
    /// The school CA (PEM) and its file.
    pub(crate) school_ca: String,
    school_ca_file: PathBuf,
    /// The origin's test CA (PEM).
    pub(crate) origin_ca: String,
    /// `--config` and `--set`s for commands on the same data and policy.
    cli_args: Vec<String>,
    _dns: FakeDns,
    pub(crate) _dir: tempfile::TempDir,
}

impl Setup {
    pub(crate) async fn start() -> Self {
        Self::start_with(&[], &[]).await
    }

    /// As `start`, with `(name, role, password)` users imported before SafeGate starts.
    async fn start_with_users(users: &[(&str, &str, &str)]) -> Self {
        Self::start_with(users, &[]).await
    }

    /// As `start`, with users and further `--set`s.
    pub(crate) async fn start_with(users: &[(&str, &str, &str)], extra_sets: &[&str]) -> Self {
        Self::start_full(users, extra_sets, "").await
    }

    /// As `start_with`, with `decrypt_extra` added to the policy's `[decrypt]` section.
    pub(crate) async fn start_full(
        users: &[(&str, &str, &str)],
        extra_sets: &[&str],
        decrypt_extra: &str,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let data = format!("data_dir={:?}", data_dir.display().to_string());
        let config = shipped_config().display().to_string();
        let (status, out, err) = run_to_end(&[
            "ca",
            "init",
            "--name",
            "Test School",
            "--config",
            &config,
            "--set",
            &data,
        ])
        .await;
        assert!(status.success(), "{out}{err}");
        assert!(out.contains("created the school CA"), "{out}");
        let (status, school_ca, err) =
            run_to_end(&["ca", "export", "--config", &config, "--set", &data]).await;
        assert!(status.success(), "{err}");
        let school_ca_file = dir.path().join("school-ca.pem");
        std::fs::write(&school_ca_file, &school_ca).unwrap();
        if !users.is_empty() {
            let mut csv = String::from("user,role,group,password hash\n");
            for (name, role, password) in users {
                let hash = crate::auth::cheap_hash(password);
                csv.push_str(&format!("{name},{role},,\"{hash}\"\n"));
            }
            let file = dir.path().join("users.csv");
            std::fs::write(&file, csv).unwrap();
            crate::users_cli::users_ok(&data_dir, &["import", &file.display().to_string()], "")
                .await;
        }

        let origin_ca = TestCa::for_names(ORIGIN_NAMES);
        let origin = Origin::start_tls(&origin_ca).await;
        let other_ca = OtherCa::new();
        let expired = other_ca.serve(&["expired.test"], true).await;
        let wrong_name = other_ca.serve(&["someone-else.test"], false).await;
        let h2 = other_ca.serve_versions(&["h2.test"]).await;
        let roots = dir.path().join("origin-ca.pem");
        std::fs::write(&roots, format!("{}{}", origin_ca.ca_pem, other_ca.pem)).unwrap();

        let mut names: Vec<(&str, Ipv4Addr)> = ORIGIN_NAMES
            .iter()
            .map(|name| (*name, Ipv4Addr::LOCALHOST))
            .collect();
        names.push(("expired.test", Ipv4Addr::LOCALHOST));
        names.push(("wrongname.test", Ipv4Addr::LOCALHOST));
        names.push(("h2.test", Ipv4Addr::LOCALHOST));
        names.extend(OTHER_NAMES.iter().map(|name| (*name, Ipv4Addr::LOCALHOST)));
        let dns = FakeDns::start(&names).await;
        let policy = dir.path().join("policy.toml");
        std::fs::write(&policy, format!("{POLICY}{decrypt_extra}")).unwrap();
        let mut sets = vec![
            data,
            format!("policy.file={:?}", policy.display().to_string()),
            format!("upstream.dns.servers=[\"{}\"]", dns.addr),
            "upstream.dns.ip_strategy=\"ipv4_only\"".to_owned(),
            format!("upstream.extra_roots=[{:?}]", roots.display().to_string()),
            format!(
                "proxy.connect_ports=[{}, {}, {}, {}]",
                origin.addr.port(),
                expired.addr.port(),
                wrong_name.addr.port(),
                h2.addr.port()
            ),
            "store.visit_log=true".to_owned(),
            // Tunnels that a test's client keeps open do not hold the shutdown up.
            "proxy.shutdown_grace=\"1s\"".to_owned(),
        ];
        sets.extend(extra_sets.iter().map(|set| (*set).to_owned()));
        let refs: Vec<&str> = sets.iter().map(String::as_str).collect();
        let safegate = SafeGate::start(&refs).await;
        let cli_args = vec![
            "--config".to_owned(),
            config,
            "--set".to_owned(),
            sets[0].clone(),
            "--set".to_owned(),
            sets[1].clone(),
        ];
        Self {
            safegate,
            origin,
            expired,
            wrong_name,
            h2,
            school_ca,
            school_ca_file,
            origin_ca: origin_ca.ca_pem,
            cli_args,
            _dns: dns,
            _dir: dir,
        }
    }

    pub(crate) fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.origin.addr.port())
    }

    /// A client through SafeGate that trusts only the school CA.
    pub(crate) fn school_client(&self, http1_only: bool) -> reqwest::Client {
        let root = reqwest::Certificate::from_pem(self.school_ca.as_bytes()).unwrap();
        let builder = self.safegate.client_builder().add_root_certificate(root);
        let builder = if http1_only {
            builder.http1_only()
        } else {
            builder
        };
        builder.build().unwrap()
    }

    /// As `school_client`, logged in to the proxy as `user` (Basic, sent on CONNECT).
    fn school_client_as(&self, http1_only: bool, user: &str, password: &str) -> reqwest::Client {
        let root = reqwest::Certificate::from_pem(self.school_ca.as_bytes()).unwrap();
        let proxy = reqwest::Proxy::all(self.safegate.proxy_url())
            .unwrap()
            .basic_auth(user, password);
        let builder = reqwest::Client::builder()
            .proxy(proxy)
            .timeout(Duration::from_secs(30))
            .add_root_certificate(root);
        let builder = if http1_only {
            builder.http1_only()
        } else {
            builder
        };
        builder.build().unwrap()
    }

    /// The visit log, after SafeGate has stopped.
    pub(crate) async fn records(mut self) -> Vec<safegate_store::Record> {
        self.safegate.terminate();
        assert!(self.safegate.wait().await.success());
        let store = Store::open(&self._dir.path().join("data")).unwrap();
        store.query(&Query::default()).unwrap()
    }
}

#[tokio::test]
async fn the_ca_commands_keep_the_key_private() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let data = format!("data_dir={:?}", dir.path().display().to_string());
        let config = shipped_config().display().to_string();
        let (status, _, err) =
            run_to_end(&["ca", "export", "--config", &config, "--set", &data]).await;
        assert!(!status.success());
        assert!(err.contains("safegate ca init"), "{err}");
        let (status, out, err) =
            run_to_end(&["ca", "init", "--config", &config, "--set", &data]).await;
        assert!(status.success(), "{err}");
        assert!(!out.contains("PRIVATE KEY"));
        let key = dir.path().join("ca/safegate-ca.key");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (status, pem, _) =
            run_to_end(&["ca", "export", "--config", &config, "--set", &data]).await;
        assert!(status.success());
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
        assert!(!pem.contains("PRIVATE"));
        let der = tokio::process::Command::new(crate::kit::process::binary())
            .args(["ca", "export", "--der", "--config", &config, "--set", &data])
            .output()
            .await
            .unwrap();
        assert!(der.status.success());
        assert_eq!(
            der.stdout.first(),
            Some(&0x30),
            "DER starts with a SEQUENCE"
        );
        assert!(reqwest::Certificate::from_der(&der.stdout).is_ok());
        // A second init keeps the CA devices already trust.
        let (status, out, _) =
            run_to_end(&["ca", "init", "--config", &config, "--set", &data]).await;
        assert!(status.success());
        assert!(out.contains("kept"), "{out}");
        let (_, again, _) =
            run_to_end(&["ca", "export", "--config", &config, "--set", &data]).await;
        assert_eq!(again, pem);
    })
    .await;
}

/// Run as root, `ca init` makes the CA as the user that owns data_dir (the service's):
/// a key made by root could not be read by SafeGate, which would then not start.
#[tokio::test]
async fn ca_init_as_root_makes_the_key_the_service_users() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt, chown};
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: ca init only changes user when run as root");
        return;
    }
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let data_dir = dir.path().join("data");
        std::fs::create_dir(&data_dir).unwrap();
        let nobody = 65534;
        chown(&data_dir, Some(nobody), Some(nobody)).unwrap();
        let data = format!("data_dir={:?}", data_dir.display().to_string());
        let config = shipped_config().display().to_string();
        let (status, out, err) =
            run_to_end(&["ca", "init", "--config", &config, "--set", &data]).await;
        assert!(status.success(), "{out}{err}");
        assert!(out.contains("(uid 65534)"), "{out}");
        let key = std::fs::metadata(data_dir.join("ca/safegate-ca.key")).unwrap();
        assert_eq!((key.uid(), key.mode() & 0o777), (nobody, 0o600));
    })
    .await;
}

#[tokio::test]
async fn decrypted_sites_are_served_over_http1_and_http2() {
    bounded(async {
        let setup = Setup::start().await;
        let expected = payload(300_000);
        for (http1_only, version) in [
            (true, reqwest::Version::HTTP_11),
            (false, reqwest::Version::HTTP_2),
        ] {
            let client = setup.school_client(http1_only);
            let response = client
                .get(setup.url("shop.test", "/bytes/300000"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.version(), version);
            assert!(response.bytes().await.unwrap() == expected);
            // An upload and its echo, through the decrypted connection.
            let upload = payload(70_000);
            let echoed = client
                .post(setup.url("shop.test", "/echo"))
                .body(upload.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(echoed.status(), 200);
            assert!(echoed.bytes().await.unwrap() == upload);
        }
        // Towards the origin, SafeGate speaks HTTP/2 when the origin offers it (ALPN),
        // whatever the client speaks.
        for http1_only in [true, false] {
            let seen = setup
                .school_client(http1_only)
                .get(format!("https://h2.test:{}/", setup.h2.addr.port()))
                .send()
                .await
                .unwrap();
            assert_eq!(seen.status(), 200);
            assert_eq!(seen.text().await.unwrap(), "HTTP/2.0");
        }
        // curl, trusting only the school CA, in both versions.
        let out_dir = tempfile::tempdir().unwrap();
        for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
            let body_file = out_dir.path().join(format!("body{version}"));
            let output = tokio::process::Command::new("curl")
                .args(["-sS", "--fail", flag, "--cacert"])
                .arg(&setup.school_ca_file)
                .args([
                    "-x",
                    &setup.safegate.proxy_url(),
                    "-w",
                    "%{http_version}",
                    "-o",
                ])
                .arg(&body_file)
                .arg(setup.url("shop.test", "/bytes/300000"))
                .output()
                .await
                .unwrap();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            assert_eq!(String::from_utf8_lossy(&output.stdout), version);
            assert!(std::fs::read(&body_file).unwrap() == expected);
        }
        // The certificate is the school CA's, not the origin's: a client that trusts
        // only the origin's CA refuses it.
        let origin_root = reqwest::Certificate::from_pem(setup.origin_ca.as_bytes()).unwrap();
        let origin_only = setup
            .safegate
            .client_builder()
            .add_root_certificate(origin_root)
            .build()
            .unwrap();
        assert!(
            origin_only
                .get(setup.url("shop.test", "/bytes/10"))
                .send()
                .await
                .is_err()
        );
    })
    .await;
}

#[tokio::test]
async fn url_rules_block_pages_and_search_terms_apply_inside_https() {
    bounded(async {
        let setup = Setup::start().await;
        for http1_only in [true, false] {
            let client = setup.school_client(http1_only);
            // A blocked path inside an allowed (decrypted) host: the real block page.
            let blocked = client
                .get(setup.url("shop.test", "/forbidden/item?id=7"))
                .send()
                .await
                .unwrap();
            assert_eq!(blocked.status(), 403);
            assert_eq!(blocked.headers()["x-safegate-rule"], "deny:role:pupil");
            let page = blocked.text().await.unwrap();
            assert!(page.contains("This page is blocked"), "{page}");
            assert!(page.contains("shop.test"), "{page}");
            // The rest of the host is allowed.
            let allowed = client
                .get(setup.url("shop.test", "/bytes/10"))
                .send()
                .await
                .unwrap();
            assert_eq!(allowed.status(), 200);
            // A blocked host that is decrypted gets the block page over HTTPS too.
            let games = client
                .get(setup.url("games.test", "/play"))
                .send()
                .await
                .unwrap();
            assert_eq!(games.status(), 403);
            assert_eq!(games.headers()["x-safegate-rule"], "category:pupil:games");
            assert!(games.text().await.unwrap().contains("This page is blocked"));
        }
        // `safegate check` says what the proxy does: decrypted, so the full address.
        let check = |url: &str| {
            let mut args = vec!["check".to_owned(), url.to_owned()];
            args.extend(setup.cli_args.iter().cloned());
            async move {
                let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                run_to_end(&refs).await
            }
        };
        let (status, out, err) = check("https://shop.test/forbidden/item").await;
        assert_eq!(status.code(), Some(3), "{out}{err}");
        assert!(out.contains("rule:        deny:role:pupil"), "{out}");
        assert!(
            out.contains("https:       decrypted (decrypt:site)"),
            "{out}"
        );
        let (status, out, _) = check("https://bet.test/").await;
        assert_eq!(status.code(), Some(3), "{out}");
        assert!(
            out.contains("blocked as:  the block page over HTTPS"),
            "{out}"
        );
        let (status, out, _) = check("https://dating.test/").await;
        assert_eq!(status.code(), Some(3), "{out}");
        assert!(
            out.contains("blocked as:  the browser's own error page (never decrypted"),
            "{out}"
        );
        let (status, out, _) = check("https://bank.test/anything").await;
        assert_eq!(status.code(), Some(0), "{out}");
        assert!(
            out.contains("not decrypted (never-decrypt:category:banking)"),
            "{out}"
        );
        // A search: the origin has no /search route (404), but the request is logged.
        let search = setup
            .school_client(false)
            .get(setup.url("www.bing.com", "/search?q=volcano+facts%20for+kids"))
            .send()
            .await
            .unwrap();
        assert_eq!(search.status(), 404);
        let records = setup.records().await;
        let search = records
            .iter()
            .find(|r| r.host == "www.bing.com")
            .unwrap_or_else(|| panic!("no search record: {records:#?}"));
        assert_eq!(search.seen_as, SeenAs::Decrypted);
        assert_eq!(search.scheme, "https");
        assert_eq!(
            search.path.as_deref(),
            Some("/search?q=volcano+facts%20for+kids")
        );
        let terms = search.search.as_ref().unwrap();
        assert_eq!(
            (terms.engine.as_str(), terms.terms.as_str()),
            ("bing", "volcano facts for kids")
        );
        let blocked: Vec<_> = records
            .iter()
            .filter(|r| r.host == "shop.test" && r.outcome == Outcome::Blocked)
            .collect();
        assert_eq!(blocked.len(), 2, "{records:#?}");
        assert!(blocked.iter().all(|r| r.seen_as == SeenAs::Decrypted
            && r.rule == "deny:role:pupil"
            && r.path.as_deref() == Some("/forbidden/item?id=7")));
        // No CONNECT record for decrypted tunnels: the requests inside are the records.
        assert!(
            !records.iter().any(|r| r.method == "CONNECT"),
            "{records:#?}"
        );
    })
    .await;
}

#[tokio::test]
async fn the_review_form_of_a_decrypted_block_page_posts_to_its_own_origin() {
    bounded(async {
        let mut setup = Setup::start_with_users(&[("ada", "pupil", "correct horse")]).await;
        // Ada logged in at CONNECT over HTTP/1.1; an unidentified pupil over HTTP/2 on a
        // host that is blocked as a whole (decrypted, so still the real page).
        let ada = setup.school_client_as(true, "ada", "correct horse");
        let anonymous = setup.school_client(false);
        let (blocked_urls, ada_token) =
            each_block_page_posts_its_review_to_its_own_origin(&mut setup, &ada, &anonymous).await;
        only_a_valid_review_post_is_safegates(&mut setup, &ada, &ada_token).await;

        setup.safegate.terminate();
        assert!(setup.safegate.wait().await.success());
        the_store_holds_both_reviews(&setup, &blocked_urls);
    })
    .await;
}

/// For ada (HTTP/1.1, logged in) and an anonymous pupil (HTTP/2): the block page's
/// review form has a relative action (no `http://` anywhere), and posting its fields
/// to the page's own origin through the proxy records a review. Returns the blocked
/// addresses and the token of the last form.
async fn each_block_page_posts_its_review_to_its_own_origin(
    setup: &mut Setup,
    ada: &reqwest::Client,
    anonymous: &reqwest::Client,
) -> (Vec<String>, String) {
    let cases = [
        (
            ada,
            "shop.test",
            "/forbidden/item?id=7&x=1",
            "deny:role:pupil",
        ),
        (
            anonymous,
            "games.test",
            "/play?level=3",
            "category:pupil:games",
        ),
    ];
    let mut blocked_urls = Vec::new();
    let mut ada_token = String::new();
    for (count, (client, host, path, rule)) in cases.into_iter().enumerate() {
        let url = setup.url(host, path);
        let blocked = client.get(&url).send().await.unwrap();
        assert_eq!(blocked.status(), 403);
        assert_eq!(blocked.headers()["x-safegate-rule"], rule);
        let page = blocked.text().await.unwrap();
        // Same origin, so no mixed content: nothing on the page points at http://.
        assert!(page.contains("action=\"/safegate/review\""), "{page}");
        assert!(!page.contains("http://"), "{page}");
        assert!(
            page.contains("id=7&amp;x=1") || host != "shop.test",
            "{page}"
        );
        // The browser resolves the relative action against the page's address and
        // posts the form's fields there, through the same proxy.
        let action = reqwest::Url::parse(&url)
            .unwrap()
            .join("/safegate/review")
            .unwrap();
        assert_eq!(action.as_str(), setup.url(host, "/safegate/review"));
        let mut fields = review_form_fields(&page);
        assert_eq!(fields[0], ("url".to_owned(), url.clone()));
        assert_eq!(fields[1], ("rule".to_owned(), rule.to_owned()));
        ada_token.clone_from(&fields[3].1);
        fields.push(("comment".to_owned(), format!("needed for class on {host}")));
        let answer = client.post(action).form(&fields).send().await.unwrap();
        assert_eq!(answer.status(), 200);
        assert!(
            answer.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let text = answer.text().await.unwrap();
        assert!(text.contains("Review requested"), "{text}");
        assert!(!text.contains("http://"), "{text}");
        blocked_urls.push(url);
        setup
            .safegate
            .wait_for_logs(|lines| {
                lines
                    .iter()
                    .filter(|l| l.contains("review request recorded"))
                    .count()
                    > count
            })
            .await;
    }
    (blocked_urls, ada_token)
}

/// A forged form (no token) gets 403 and a form without the address 400, each with a
/// log line; a GET of the review path is the site's, and the origin saw only that.
async fn only_a_valid_review_post_is_safegates(
    setup: &mut Setup,
    ada: &reqwest::Client,
    ada_token: &str,
) {
    // A form posted from elsewhere (no token from a block page): 403 and a log line.
    let forged = ada
        .post(setup.url("shop.test", "/safegate/review"))
        .form(&[("url", "https://shop.test/x"), ("comment", "spam")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    setup
        .safegate
        .wait_for_log("review form without a valid token")
        .await;
    // A form without the address: 400 and a log line, and not passed on.
    let malformed = ada
        .post(setup.url("shop.test", "/safegate/review"))
        .form(&[("comment", "no url"), ("token", ada_token)])
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    setup
        .safegate
        .wait_for_log("review form without a valid url field")
        .await;
    // Only a POST is SafeGate's: a GET of that path is the site's (no such route).
    let get = ada
        .get(setup.url("shop.test", "/safegate/review"))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 404);
    assert_eq!(get.text().await.unwrap(), "no such route");
    // The origin saw that GET and nothing else: no POST, no blocked page.
    assert_eq!(setup.origin.requests(), ["GET /safegate/review"]);
}

/// After the service stopped, the store holds both reviews with their user (or none),
/// role, address, rule, comment and client, and the blocked category.
fn the_store_holds_both_reviews(setup: &Setup, blocked_urls: &[String]) {
    let store = Store::open(&setup._dir.path().join("data")).unwrap();
    let mut reviews = store.reviews(10).unwrap();
    reviews.sort_by_key(|r| r.at_unix_nanos);
    assert_eq!(reviews.len(), 2, "{reviews:#?}");
    let got: Vec<_> = reviews
        .iter()
        .map(|r| {
            (
                r.user.as_deref(),
                r.role.as_str(),
                r.url.as_str(),
                r.rule.as_str(),
                r.comment.as_str(),
                r.client,
            )
        })
        .collect();
    let localhost = std::net::IpAddr::from(Ipv4Addr::LOCALHOST);
    assert_eq!(
        got,
        [
            (
                Some("ada"),
                "pupil",
                blocked_urls[0].as_str(),
                "deny:role:pupil",
                "needed for class on shop.test",
                localhost,
            ),
            (
                None,
                "pupil",
                blocked_urls[1].as_str(),
                "category:pupil:games",
                "needed for class on games.test",
                localhost,
            ),
        ]
    );
    assert_eq!(reviews[1].categories, ["games"]);
}

#[tokio::test]
async fn a_never_decrypt_site_is_tunnelled_untouched() {
    bounded(async {
        let setup = Setup::start().await;
        // Trusting only the origin's CA works: the client sees the origin's own
        // certificate.
        let origin_root = reqwest::Certificate::from_pem(setup.origin_ca.as_bytes()).unwrap();
        let origin_only = setup
            .safegate
            .client_builder()
            .add_root_certificate(origin_root)
            .build()
            .unwrap();
        let response = origin_only
            .get(setup.url("bank.test", "/bytes/100000"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.bytes().await.unwrap() == payload(100_000));
        // And trusting only the school CA does not.
        assert!(
            setup
                .school_client(false)
                .get(setup.url("bank.test", "/bytes/10"))
                .send()
                .await
                .is_err()
        );
        let records = setup.records().await;
        let tunnel = records
            .iter()
            .find(|r| r.host == "bank.test" && r.outcome == Outcome::Allowed)
            .unwrap_or_else(|| panic!("{records:#?}"));
        assert_eq!(tunnel.seen_as, SeenAs::ConnectHost);
        assert_eq!(tunnel.path, None);
        assert!(tunnel.bytes_down > 100_000, "{tunnel:?}");
    })
    .await;
}

#[tokio::test]
async fn websockets_work_inside_a_decrypted_tunnel() {
    bounded(async {
        use futures_util::{SinkExt, StreamExt};
        use tokio::io::AsyncReadExt;
        use tokio_tungstenite::tungstenite::Message;
        let setup = Setup::start().await;
        let port = setup.origin.addr.port();
        let mut stream = raw::connect(setup.safegate.proxy).await;
        let connect = format!("CONNECT shop.test:{port} HTTP/1.1\r\nHost: shop.test:{port}\r\n\r\n");
        stream.write_all(connect.as_bytes()).await.unwrap();
        assert!(raw::read_head(&mut stream).await.starts_with("HTTP/1.1 200"));
        let mut roots = rustls::RootCertStore::empty();
        let school: rustls::pki_types::CertificateDer<'static> =
            rustls::pki_types::pem::PemObject::from_pem_slice(setup.school_ca.as_bytes()).unwrap();
        roots.add(school).unwrap();
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = rustls::pki_types::ServerName::try_from("shop.test").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, stream)
            .await
            .unwrap();
        let upgrade = format!(
            "GET /ws HTTP/1.1\r\nHost: shop.test:{port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        tls.write_all(upgrade.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(tls.read_u8().await.unwrap());
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let mut socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
            tls,
            tokio_tungstenite::tungstenite::protocol::Role::Client,
            None,
        )
        .await;
        for message in [Message::text("hello, decrypted"), Message::binary(payload(50_000))] {
            socket.send(message.clone()).await.unwrap();
            assert_eq!(socket.next().await.unwrap().unwrap(), message);
        }
        socket.close(None).await.unwrap();
    })
    .await;
}

/// A rustls ClientHello naming `name`, as it goes on the wire.
pub(crate) fn client_hello(name: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let server = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let mut connection = rustls::ClientConnection::new(Arc::new(config), server).unwrap();
    let mut wire = Vec::new();
    while connection.wants_write() {
        connection.write_tls(&mut wire).unwrap();
    }
    wire
}

/// The `access_denied` alert SafeGate answers a refused ClientHello with.
const ACCESS_DENIED: [u8; 7] = [21, 3, 3, 0, 2, 2, 49];

#[tokio::test]
async fn a_server_name_that_differs_from_the_connect_host_is_refused() {
    bounded(async {
        let setup = Setup::start().await;
        let port = setup.origin.addr.port();
        // A tunnelled host (never decrypted) and a decrypted one, each with a
        // ClientHello for another site.
        for (connect, fronted) in [("bank.test", "games.test"), ("shop.test", "bank.test")] {
            let before = setup.origin.connections();
            let mut stream = raw::connect(setup.safegate.proxy).await;
            let request =
                format!("CONNECT {connect}:{port} HTTP/1.1\r\nHost: {connect}:{port}\r\n\r\n");
            stream.write_all(request.as_bytes()).await.unwrap();
            let head = raw::read_head(&mut stream).await;
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            stream.write_all(&client_hello(fronted)).await.unwrap();
            let reply = raw::read_until_close(&mut stream, Duration::from_secs(10)).await;
            assert_eq!(reply, ACCESS_DENIED, "{connect} / {fronted}");
            // The origin never saw the ClientHello (a tunnel connects, then drops).
            assert!(setup.origin.connections() <= before + 1);
        }
        // The same server name as the CONNECT host passes (a real client).
        let origin_root = reqwest::Certificate::from_pem(setup.origin_ca.as_bytes()).unwrap();
        let client = setup
            .safegate
            .client_builder()
            .add_root_certificate(origin_root)
            .build()
            .unwrap();
        let response = client
            .get(setup.url("bank.test", "/bytes/10"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        // A device without the school CA fails the handshake for a blocked decrypted
        // host: the attempt is still recorded as blocked.
        assert!(
            client
                .get(setup.url("games.test", "/"))
                .send()
                .await
                .is_err()
        );
        drop(client);
        let records = setup.records().await;
        let games = records
            .iter()
            .find(|r| r.host == "games.test")
            .unwrap_or_else(|| panic!("{records:#?}"));
        assert_eq!(
            (games.outcome, games.rule.as_str(), games.method.as_str()),
            (Outcome::Blocked, "category:pupil:games", "CONNECT")
        );
        let refused: Vec<_> = records
            .iter()
            .filter(|r| r.rule == "sni-mismatch")
            .collect();
        assert_eq!(refused.len(), 2, "{records:#?}");
        assert!(
            refused
                .iter()
                .all(|r| r.outcome == Outcome::Blocked && r.status == 403)
        );
        assert!(refused.iter().any(|r| r.host == "bank.test"));
        assert!(refused.iter().any(|r| r.host == "shop.test"));
    })
    .await;
}

#[tokio::test]
async fn origins_with_bad_certificates_are_refused_with_a_page() {
    bounded(async {
        let setup = Setup::start().await;
        let client = setup.school_client(false);
        for (host, origin, problem) in [
            ("expired.test", &setup.expired, "expired"),
            ("wrongname.test", &setup.wrong_name, "different name"),
        ] {
            let response = client
                .get(format!("https://{host}:{}/secret", origin.addr.port()))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 502, "{host}");
            assert_eq!(
                response.headers()["x-safegate-reason"],
                "upstream-certificate"
            );
            let page = response.text().await.unwrap();
            assert!(page.contains(problem), "{host}: {page}");
            assert!(!page.contains(BAD_ORIGIN_BODY), "{host}: {page}");
        }
        let records = setup.records().await;
        let refused = records
            .iter()
            .filter(|r| r.failure.as_deref() == Some("upstream-certificate"))
            .count();
        assert_eq!(refused, 2, "{records:#?}");
    })
    .await;
}

/// What an origin with a bad certificate would send, if anyone accepted it.
const BAD_ORIGIN_BODY: &str = "content behind a bad certificate";

/// A second test CA, for origins the kit's origin cannot play: certificates that
/// are wrong in some way, and an origin that speaks HTTP/2.
struct OtherCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    pem: String,
}

struct OtherOrigin {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for OtherOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl OtherCa {
    fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            "SafeGate test CA for bad origins",
        );
        let issuer =
            rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        let pem = issuer.pem();
        Self { issuer, pem }
    }

    /// An HTTPS origin on 127.0.0.1 with a valid certificate for `names` that offers
    /// `h2` and `http/1.1` and answers every request with the HTTP version it saw.
    async fn serve_versions(&self, names: &[&str]) -> OtherOrigin {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        |request: hyper::Request<hyper::body::Incoming>| async move {
                            let version = format!("{:?}", request.version());
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from(version)),
                            ))
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });
        OtherOrigin { addr, task }
    }

    /// An HTTPS origin on 127.0.0.1 with a certificate for `names`, expired or not.
    async fn serve(&self, names: &[&str], expired: bool) -> OtherOrigin {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .unwrap();
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{BAD_ORIGIN_BODY}",
                        BAD_ORIGIN_BODY.len()
                    );
                    let _ = tls.write_all(response.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        OtherOrigin { addr, task }
    }
}
