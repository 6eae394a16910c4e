//! Proxy authentication through the running binary: `407` with the `Basic` challenge
//! (curl and reqwest), wrong and right passwords, CONNECT, the identity in the visit
//! log and on the block page, `safegate users passwd|disable|enable` taking effect on
//! the running proxy, the failure limits, malformed headers, and address bindings
//! (`[[auth.bindings]]`) against the default role.
//!
//! Users are imported (`safegate users import` with a `password hash` column) before
//! SafeGate starts, with cheap Argon2 parameters (real hashes cost far more in an
//! unoptimised test build), except where the test is about the `safegate users`
//! commands on the running service, which hash as in production.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use argon2::{Algorithm, Argon2, Params, PasswordHasher, Version};
use safegate_store::{IdentifiedBy, Query, Record, Store};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::kit::dns::FakeDns;
use crate::kit::origin::Origin;
use crate::kit::process::SafeGate;
use crate::kit::{bounded, raw};

const POLICY: &str = r#"timezone = "Europe/London"
default_role = "pupil"

[categories.gambling]
sources = [{ format = "domains", path = "gambling.txt" }]

[roles.pupil]
block = ["gambling"]
safesearch = false
youtube = "off"

[roles.pupil.groups.year6]

[roles.staff]
block = []
safesearch = false
youtube = "off"

[roles.filter-admin]
block = []
"#;

/// An origin, a fake DNS (`bet.test`, a gambling site, and `school.test`), the policy
/// above, and a data directory to seed users into before SafeGate starts.
pub(crate) struct World {
    origin: Origin,
    dns: FakeDns,
    dir: tempfile::TempDir,
}

impl World {
    pub(crate) async fn new() -> Self {
        let origin = Origin::start().await;
        let dns = FakeDns::start(&[
            ("bet.test", Ipv4Addr::LOCALHOST),
            ("school.test", Ipv4Addr::LOCALHOST),
        ])
        .await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("gambling.txt"), "bet.test\n").unwrap();
        std::fs::write(dir.path().join("policy.toml"), POLICY).unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        Self { origin, dns, dir }
    }

    pub(crate) fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Adds users (name, role, group, password) with `safegate users import` of their
    /// hashes (SafeGate must not be running). A separate process: the database is
    /// closed for certain when it has exited.
    pub(crate) async fn seed_users(&self, users: &[(&str, &str, Option<&str>, &str)]) {
        let mut csv = String::from("user,role,group,password hash\n");
        for (name, role, group, password) in users {
            let group = group.unwrap_or_default();
            csv.push_str(&format!(
                "{name},{role},{group},\"{}\"\n",
                cheap_hash(password)
            ));
        }
        let file = self.dir.path().join("users.csv");
        std::fs::write(&file, csv).unwrap();
        self.users(&["import", &file.display().to_string()], "")
            .await;
    }

    pub(crate) async fn safegate(&self, more: &[&str]) -> SafeGate {
        self.safegate_with_env(more, &[]).await
    }

    /// [`World::safegate`] with extra environment variables for the process.
    pub(crate) async fn safegate_with_env(&self, more: &[&str], env: &[(&str, &str)]) -> SafeGate {
        let mut sets = vec![
            format!(
                "policy.file={:?}",
                self.dir.path().join("policy.toml").display().to_string()
            ),
            format!("data_dir={:?}", self.data_dir().display().to_string()),
            format!("upstream.dns.servers=[\"{}\"]", self.dns.addr),
            "upstream.dns.ip_strategy=\"ipv4_only\"".to_owned(),
            format!("proxy.connect_ports=[443, {}]", self.origin.addr.port()),
        ];
        sets.extend(more.iter().map(|s| (*s).to_owned()));
        let refs: Vec<&str> = sets.iter().map(String::as_str).collect();
        SafeGate::start_with_env(&refs, env).await
    }

    pub(crate) fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.origin.addr.port())
    }

    /// `safegate users ARGS` on this data directory (through the control socket while
    /// SafeGate runs), with `stdin`; must succeed.
    pub(crate) async fn users(&self, args: &[&str], stdin: &str) -> String {
        crate::users_cli::users_ok(&self.data_dir(), args, stdin).await
    }
}

/// A valid Argon2id hash with cheap parameters.
pub(crate) fn cheap_hash(password: &str) -> String {
    let params = Params::new(8, 1, 1, None).unwrap();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_with_salt(password.as_bytes(), b"test-salt-16byte")
        .unwrap()
        .to_string()
}

/// A client of `safegate` sending `user:password` as proxy credentials.
pub(crate) fn client_as(safegate: &SafeGate, user: &str, password: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .proxy(
            reqwest::Proxy::all(safegate.proxy_url())
                .unwrap()
                .basic_auth(user, password),
        )
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Status, `x-safegate-reason` (or `x-safegate-rule`), and body of a GET.
pub(crate) async fn get(client: &reqwest::Client, url: &str) -> (u16, String, String) {
    let response = client.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let header = |name| {
        response
            .headers()
            .get(name)
            .map(|v: &reqwest::header::HeaderValue| v.to_str().unwrap().to_owned())
    };
    let label = header("x-safegate-reason")
        .filter(|reason| reason != "blocked")
        .or_else(|| header("x-safegate-rule"))
        .unwrap_or_default();
    (status, label, response.text().await.unwrap())
}

/// `Basic base64(user:password)`.
fn basic(user: &str, password: &str) -> String {
    let text = format!("{user}:{password}");
    format!("Basic {}", base64(text.as_bytes()))
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Runs curl through the proxy (with `-U` credentials when given); returns the
/// response head and body as printed by `curl -i`.
async fn curl(safegate: &SafeGate, url: &str, credentials: Option<&str>) -> String {
    let proxy = safegate.proxy_url();
    let mut args = vec![
        "-s",
        "-i",
        "--max-time",
        "20",
        "--noproxy",
        "",
        "-x",
        &proxy,
    ];
    if let Some(credentials) = credentials {
        args.extend(["-U", credentials]);
    }
    args.push(url);
    let output = Command::new("curl").args(&args).output().await.unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// How often SafeGate has rebuilt its user table so far.
fn rebuilds(safegate: &SafeGate) -> usize {
    safegate
        .logs()
        .iter()
        .filter(|l| l.contains("proxy user table rebuilt after a change"))
        .count()
}

/// Runs `safegate users ARGS` against the running `safegate` and waits until it has
/// rebuilt its user table after the change.
pub(crate) async fn change_users(
    world: &World,
    safegate: &mut SafeGate,
    args: &[&str],
    stdin: &str,
) {
    let before = rebuilds(safegate);
    world.users(args, stdin).await;
    safegate
        .wait_for_logs(|lines| {
            lines
                .iter()
                .filter(|l| l.contains("proxy user table rebuilt after a change"))
                .count()
                > before
        })
        .await;
}

/// Stops SafeGate (so that another may open the database).
pub(crate) async fn stop(mut safegate: SafeGate) {
    safegate.terminate();
    assert!(safegate.wait().await.success());
}

/// Stops SafeGate and returns every visit-log record.
pub(crate) async fn records_after_stop(safegate: SafeGate, data_dir: &Path) -> Vec<Record> {
    stop(safegate).await;
    let store = Store::open(data_dir).unwrap();
    store.query(&Query::default()).unwrap()
}

/// The value of `name` in `/metrics` on the admin listener.
pub(crate) async fn metric(safegate: &SafeGate, name: &str) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", safegate.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

#[tokio::test]
async fn login_is_required_and_checked_against_the_users() {
    bounded(async {
        let world = World::new().await;
        world
            .seed_users(&[
                ("ada.lovelace", "staff", None, "analytical engine"),
                ("year6", "pupil", Some("year6"), "sunflower-2026"),
            ])
            .await;
        let safegate = world.safegate(&["auth.required=true"]).await;
        let page = world.url("school.test", "/headers");

        // No credentials: 407 with the challenge, for curl and for reqwest.
        let answer = curl(&safegate, &page, None).await;
        assert!(answer.starts_with("HTTP/1.1 407"), "{answer}");
        assert!(
            answer.contains("proxy-authenticate: Basic realm=\"SafeGate\""),
            "{answer}"
        );
        assert!(
            answer.contains("Log in with your school user name"),
            "{answer}"
        );
        let response = safegate.client().get(&page).send().await.unwrap();
        assert_eq!(response.status(), 407);
        let challenge = response.headers()["proxy-authenticate"].to_str().unwrap();
        assert!(
            challenge.starts_with("Basic realm=\"SafeGate\""),
            "{challenge}"
        );
        assert_eq!(
            response.headers()["x-safegate-reason"],
            "proxy-auth-required"
        );

        // Wrong password, unknown user: 407.
        let (status, reason, _) = get(&client_as(&safegate, "ada.lovelace", "wrong"), &page).await;
        assert_eq!((status, reason.as_str()), (407, "proxy-auth-failed"));
        let (status, _, _) = get(&client_as(&safegate, "nobody", "analytical engine"), &page).await;
        assert_eq!(status, 407);
        let answer = curl(&safegate, &page, Some("ada.lovelace:wrong")).await;
        assert!(answer.starts_with("HTTP/1.1 407"), "{answer}");

        // The right password (any case of the name): through, and the credentials are not
        // passed on to the site.
        let ada = client_as(&safegate, "Ada.Lovelace", "analytical engine");
        let (status, _, seen_by_origin) = get(&ada, &page).await;
        assert_eq!(status, 200, "{seen_by_origin}");
        assert!(
            !seen_by_origin
                .to_ascii_lowercase()
                .contains("proxy-authorization"),
            "{seen_by_origin}"
        );
        let (status, _, _) = get(&ada, &world.url("bet.test", "/bytes/5")).await;
        assert_eq!(status, 200, "staff may visit the gambling site");
        let answer = curl(&safegate, &page, Some("ada.lovelace:analytical engine")).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

        // The block page names the pupil log-in.
        let year6 = client_as(&safegate, "year6", "sunflower-2026");
        let (status, rule, page_text) = get(&year6, &world.url("bet.test", "/")).await;
        assert_eq!((status, rule.as_str()), (403, "category:pupil:gambling"));
        assert!(page_text.contains("year6 (pupil)"), "{page_text}");

        // CONNECT: 407 without credentials, a tunnel with them.
        let authority = format!("school.test:{}", world.origin.addr.port());
        let refused = raw::exchange(
            safegate.proxy,
            format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(raw::status_of(&refused), 407, "{refused}");
        assert!(
            refused.contains("proxy-authenticate: Basic realm=\"SafeGate\""),
            "{refused}"
        );
        let mut tunnel = raw::connect(safegate.proxy).await;
        let connect = format!(
            "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\nProxy-Authorization: {}\r\n\r\n",
            basic("year6", "sunflower-2026")
        );
        tunnel.write_all(connect.as_bytes()).await.unwrap();
        let head = raw::read_head(&mut tunnel).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        tunnel
            .write_all(format!("GET /bytes/7 HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let (head, body) = raw::read_response(&mut tunnel).await;
        assert_eq!((raw::status_of(&head), body.len()), (200, 7));
        drop(tunnel);

        // Log-ins and failures are logged, the passwords never.
        let logs = safegate.logs().join("\n");
        assert!(logs.contains("proxy log-in"), "{logs}");
        assert!(
            logs.contains("proxy log-in failed: wrong password"),
            "{logs}"
        );
        assert!(
            !logs.contains("analytical engine") && !logs.contains("sunflower"),
            "{logs}"
        );

        let records = records_after_stop(safegate, &world.data_dir()).await;
        let ada_page = records
            .iter()
            .find(|r| r.user.as_deref() == Some("ada.lovelace") && r.host == "school.test")
            .unwrap_or_else(|| panic!("no record of ada's page in {records:#?}"));
        assert_eq!(ada_page.role, "staff");
        assert_eq!(ada_page.group, None);
        assert_eq!(ada_page.identified_by, IdentifiedBy::ProxyAuth);
        assert_eq!(ada_page.client.to_string(), "127.0.0.1");
        let blocked = records
            .iter()
            .find(|r| r.host == "bet.test" && r.user.as_deref() == Some("year6"))
            .unwrap_or_else(|| panic!("no record of the blocked page in {records:#?}"));
        assert_eq!(
            (blocked.role.as_str(), blocked.group.as_deref()),
            ("pupil", Some("year6"))
        );
        assert_eq!(blocked.identified_by, IdentifiedBy::ProxyAuth);
        let tunnel_record = records.iter().find(|r| r.method == "CONNECT").unwrap();
        assert_eq!(tunnel_record.user.as_deref(), Some("year6"));
        assert_eq!(tunnel_record.identified_by, IdentifiedBy::ProxyAuth);
        // Refused requests (407) are not visits.
        assert!(records.iter().all(|r| r.user.is_some()), "{records:#?}");
    })
    .await;
}

#[tokio::test]
async fn user_changes_take_effect_on_the_running_proxy_at_once() {
    bounded(async {
        let world = World::new().await;
        let mut safegate = world.safegate(&["auth.required=true"]).await;
        let page = world.url("school.test", "/bytes/3");
        change_users(
            &world,
            &mut safegate,
            &["add", "mr.jones", "--role", "staff", "--password-stdin"],
            "correct horse battery\n",
        )
        .await;
        let old = client_as(&safegate, "mr.jones", "correct horse battery");
        // Twice: the second is a cache hit.
        for _ in 0..2 {
            assert_eq!(get(&old, &page).await.0, 200);
        }

        change_users(
            &world,
            &mut safegate,
            &["passwd", "mr.jones", "--password-stdin"],
            "battery staple 2\n",
        )
        .await;
        assert_eq!(
            get(&old, &page).await.0,
            407,
            "the old password still works"
        );
        let new = client_as(&safegate, "mr.jones", "battery staple 2");
        assert_eq!(get(&new, &page).await.0, 200);

        change_users(&world, &mut safegate, &["disable", "mr.jones"], "").await;
        let (status, reason, _) = get(&new, &page).await;
        assert_eq!(
            (status, reason.as_str()),
            (407, "proxy-auth-failed"),
            "disabled"
        );

        change_users(&world, &mut safegate, &["enable", "mr.jones"], "").await;
        let (status, reason, _) = get(&new, &page).await;
        assert_eq!(status, 200, "{reason}\n{}", safegate.logs().join("\n"));
        assert!(metric(&safegate, "safegate_proxy_auth_total{result=\"cache_hit\"}").await >= 1.0);
        assert_eq!(metric(&safegate, "safegate_proxy_auth_users").await, 1.0);
    })
    .await;
}

#[tokio::test]
async fn repeated_failures_lock_the_address_for_the_window() {
    bounded(async {
        let world = World::new().await;
        world
            .seed_users(&[
                ("ada", "staff", None, "analytical engine"),
                ("bob", "staff", None, "difference engine"),
            ])
            .await;
        let safegate = world
            .safegate(&[
                "auth.required=true",
                "auth.max_failures_per_address=3",
                "auth.failure_window=\"10m\"",
            ])
            .await;
        let page = world.url("school.test", "/bytes/3");
        // Bob logged in before the guessing started.
        let bob = client_as(&safegate, "bob", "difference engine");
        assert_eq!(get(&bob, &page).await.0, 200);

        let guesser = client_as(&safegate, "ada", "password1");
        for _ in 0..3 {
            let (status, reason, _) = get(&guesser, &page).await;
            assert_eq!((status, reason.as_str()), (407, "proxy-auth-failed"));
        }
        // Locked: even the right password is refused, unchecked, for the window.
        let ada = client_as(&safegate, "ada", "analytical engine");
        let response = ada.get(&page).send().await.unwrap();
        assert_eq!(response.status(), 407);
        assert_eq!(response.headers()["x-safegate-reason"], "proxy-auth-locked");
        let retry: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((500..=600).contains(&retry), "Retry-After {retry}");
        let text = response.text().await.unwrap();
        assert!(
            text.contains("Too many failed log-ins from this computer"),
            "{text}"
        );
        assert_eq!(get(&ada, &page).await.0, 407);
        // Credentials verified before the lock keep working.
        assert_eq!(get(&bob, &page).await.0, 200);

        let total = |result: &str| format!("safegate_proxy_auth_total{{result=\"{result}\"}}");
        assert_eq!(metric(&safegate, &total("failed")).await, 3.0);
        assert_eq!(metric(&safegate, &total("rate_limited")).await, 2.0);
        assert_eq!(metric(&safegate, &total("verified")).await, 1.0);
        // One Argon2 check per verified or wrong password, none for the locked ones,
        // in the process's one password-check pool.
        assert_eq!(
            metric(&safegate, "safegate_password_checks_total").await,
            4.0
        );
        assert_eq!(
            metric(&safegate, "safegate_password_checks_busy_total").await,
            0.0
        );
        let logs = safegate.logs().join("\n");
        assert!(
            logs.contains("too many failed proxy log-ins from this address"),
            "{logs}"
        );
        assert!(!logs.contains("password1"), "{logs}");
    })
    .await;
}

#[tokio::test]
async fn malformed_credentials_are_refused_not_a_crash() {
    bounded(async {
        let world = World::new().await;
        world
            .seed_users(&[("ada", "staff", None, "analytical engine")])
            .await;
        let mut safegate = world.safegate(&[]).await;
        let target = world.url("school.test", "/bytes/3");
        let latin1 = format!("Basic {}", base64(&[b'a', 0xe9, b':', b'x']));
        let no_colon = format!("Basic {}", base64(b"adaanalytical"));
        for header in ["Basic !!!notbase64", "Bearer abc", no_colon.as_str(), latin1.as_str()] {
            let request = format!(
                "GET {target} HTTP/1.1\r\nHost: school.test\r\nProxy-Authorization: {header}\r\nConnection: close\r\n\r\n"
            );
            let answer = raw::exchange(safegate.proxy, request.as_bytes()).await;
            assert_eq!(raw::status_of(&answer), 407, "{header}: {answer}");
            assert!(answer.contains("x-safegate-reason: proxy-auth-malformed"), "{answer}");
        }
        safegate
            .wait_for_log("malformed Proxy-Authorization header")
            .await;
        // Still serving; without credentials the default role applies (auth.required is
        // off), with the right ones the user.
        let (status, _, _) = get(&safegate.client(), &target).await;
        assert_eq!(status, 200);
        let (status, _, _) = get(&client_as(&safegate, "ada", "analytical engine"), &target).await;
        assert_eq!(status, 200);
    })
    .await;
}

#[tokio::test]
async fn bindings_give_a_role_or_a_user_and_credentials_win() {
    bounded(async {
        let world = World::new().await;
        world
            .seed_users(&[
                ("office", "staff", None, "paperclips"),
                ("head", "staff", None, "whole school"),
            ])
            .await;
        let bet = world.url("bet.test", "/bytes/4");

        // A role binding for the client's address decides as that role.
        let staff = world
            .safegate(&["auth.bindings=[{ network = \"127.0.0.1/32\", role = \"staff\" }]"])
            .await;
        assert_eq!(get(&staff.client(), &bet).await.0, 200);
        stop(staff).await;
        let pupils = world
            .safegate(&[
                "auth.required=true",
                "auth.bindings=[{ network = \"127.0.0.0/8\", role = \"pupil\", group = \"year6\" }]",
            ])
            .await;
        let (status, rule, body) = get(&pupils.client(), &bet).await;
        assert_eq!((status, rule.as_str()), (403, "category:pupil:gambling"), "{body}");
        assert!(body.contains("pupil / year6"), "{body}");
        // A staff member logging in on a pupils' computer gets their own role.
        let head = client_as(&pupils, "head", "whole school");
        assert_eq!(get(&head, &bet).await.0, 200);
        let records = records_after_stop(pupils, &world.data_dir()).await;
        let by_address = records
            .iter()
            .find(|r| r.identified_by == IdentifiedBy::Address && r.role == "pupil")
            .unwrap_or_else(|| panic!("{records:#?}"));
        assert_eq!(
            (by_address.role.as_str(), by_address.group.as_deref(), by_address.user.as_deref()),
            ("pupil", Some("year6"), None)
        );
        assert!(
            records
                .iter()
                .any(|r| r.user.as_deref() == Some("head") && r.identified_by == IdentifiedBy::ProxyAuth),
            "{records:#?}"
        );

        // A user binding: the user's role, and the user's name in the visit log.
        let office = world
            .safegate(&[
                "auth.required=true",
                "auth.bindings=[{ network = \"127.0.0.1/32\", user = \"Office\" }, { network = \"127.0.0.5/32\", user = \"nobody\" }]",
            ])
            .await;
        let logs = office.logs().join("\n");
        assert!(
            logs.contains("auth.bindings[1]: 127.0.0.5/32 is bound to user nobody, but there is no such user"),
            "{logs}"
        );
        assert_eq!(get(&office.client(), &bet).await.0, 200);
        let records = records_after_stop(office, &world.data_dir()).await;
        let bound = records
            .iter()
            .rfind(|r| r.host == "bet.test")
            .unwrap_or_else(|| panic!("{records:#?}"));
        assert_eq!(bound.user.as_deref(), Some("office"));
        assert_eq!(bound.role, "staff");
        assert_eq!(bound.identified_by, IdentifiedBy::Address);
    })
    .await;
}

#[tokio::test]
async fn without_login_or_binding_clients_get_the_default_role() {
    bounded(async {
        let world = World::new().await;
        let safegate = world.safegate(&[]).await;
        let (status, rule, _) = get(&safegate.client(), &world.url("bet.test", "/")).await;
        assert_eq!((status, rule.as_str()), (403, "category:pupil:gambling"));
        assert_eq!(
            get(&safegate.client(), &world.url("school.test", "/bytes/2"))
                .await
                .0,
            200
        );
        let records = records_after_stop(safegate, &world.data_dir()).await;
        assert_eq!(records.len(), 2, "{records:#?}");
        for record in &records {
            assert_eq!(record.identified_by, IdentifiedBy::Default);
            assert_eq!(
                (record.role.as_str(), record.user.as_deref()),
                ("pupil", None)
            );
        }
    })
    .await;
}
