//! The Debian package, installed for real: `dpkg -i` of the .deb named by
//! `SAFEGATE_TEST_DEB` (built by `.ci/run` with `cargo deb -p safegate`), its files,
//! owners and user; `systemd-analyze verify` on the installed unit; the configuration
//! edited like a technician would; `safegate doctor` and the unit's ExecStart run as
//! the `safegate` user (doctor run by root checks as it); the first admin account made
//! by `safegate setup` run as root (it acts as the service's user); a site
//! blocked through the admin web interface's rules page and then blocked by the
//! proxy; SIGTERM; `dpkg --purge`, after which files, data and user are gone.
//!
//! Without `SAFEGATE_TEST_DEB` the test says it skipped, unless
//! `SAFEGATE_REQUIRE_OPS_TOOLS=1` (set by `.ci/run`), where that fails it. It needs
//! root (it installs a package); systemd itself need not be running. The package test
//! also checks that the package's short configuration leaves every other key at the
//! value the full reference (config/safegate.toml) gives it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::kit::dns::FakeDns;
use crate::kit::origin::Origin;
use crate::kit::process::{run_program, run_to_end, shipped_config};
use crate::ops::{free_port, repo_file};

/// The whole package test: install, run, edit, purge.
const LIMIT: Duration = Duration::from_secs(180);
const PASSWORD: &str = "a long admin password";
const CONFIG: &str = "/etc/safegate/safegate.toml";
const UNIT_DIRS: [&str; 2] = ["/usr/lib/systemd/system", "/lib/systemd/system"];

/// The .deb to test, or None (after saying why) when the test is skipped.
fn deb_under_test() -> Option<PathBuf> {
    let required = std::env::var_os("SAFEGATE_REQUIRE_OPS_TOOLS").is_some();
    let Some(deb) = std::env::var_os("SAFEGATE_TEST_DEB") else {
        assert!(
            !required,
            "SAFEGATE_TEST_DEB must name the .deb (SAFEGATE_REQUIRE_OPS_TOOLS is set)"
        );
        eprintln!(
            "SKIPPED: SAFEGATE_TEST_DEB does not name a .deb (cargo deb -p safegate builds one)"
        );
        return None;
    };
    let deb = PathBuf::from(deb);
    assert!(
        deb.is_file(),
        "SAFEGATE_TEST_DEB: no file {}",
        deb.display()
    );
    assert!(
        rustix::process::geteuid().is_root(),
        "the package test installs {} and needs root",
        deb.display()
    );
    Some(deb)
}

/// Purges the package when dropped, so a failed test leaves nothing installed. A
/// SafeGate killed a moment earlier (its `Child` dropped) may still hold the user, so
/// the user and group are then removed by force.
struct PurgeOnDrop;

impl Drop for PurgeOnDrop {
    fn drop(&mut self) {
        let quiet = |program: &str, args: &[&str]| {
            let _ = std::process::Command::new(program)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        quiet("dpkg", &["--purge", "safegate"]);
        quiet("userdel", &["--force", "safegate"]);
        quiet("groupdel", &["safegate"]);
    }
}

/// Runs a command that must succeed; returns its output.
async fn must(program: &str, args: &[&str]) -> String {
    let (ok, text) = run_program(program, args, None).await;
    assert!(ok, "{program} {args:?} failed:\n{text}");
    text
}

fn mode_and_owner(path: &str) -> (u32, String) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let owner = std::process::Command::new("stat")
        .args(["-c", "%U:%G", path])
        .output()
        .unwrap();
    (
        meta.mode() & 0o7777,
        String::from_utf8_lossy(&owner.stdout).trim().to_owned(),
    )
}

fn installed_unit() -> PathBuf {
    UNIT_DIRS
        .iter()
        .map(|dir| Path::new(dir).join("safegate.service"))
        .find(|path| path.is_file())
        .expect("the package installs safegate.service")
}

/// What `dpkg -i` must have made: the files, the user, owners, the enabled unit.
async fn check_installed() {
    for path in [
        "/usr/bin/safegate",
        CONFIG,
        "/usr/share/safegate/defaults/config/policy.toml",
        "/usr/share/safegate/defaults/blocklists/gambling.txt",
        "/usr/share/safegate/defaults/blocklists/phrases/self-harm.txt",
        "/usr/share/doc/safegate/README.md",
        "/usr/share/doc/safegate/safegate.toml.example",
        "/usr/share/doc/safegate/blocklists/README.md",
        "/usr/share/doc/safegate/deploy/README.md",
        "/var/lib/safegate/policy/config/policy.toml",
        "/var/lib/safegate/policy/blocklists/gambling.txt",
        "/var/lib/safegate/policy/blocklists/phrases/self-harm.txt",
    ] {
        assert!(
            Path::new(path).is_file(),
            "the package did not install {path}"
        );
    }
    let conffiles = must("dpkg-query", &["-W", "-f", "${Conffiles}", "safegate"]).await;
    assert!(conffiles.contains(CONFIG), "not a conffile: {conffiles}");
    let user = must("getent", &["passwd", "safegate"]).await;
    assert!(user.contains(":/var/lib/safegate:"), "{user}");
    must("getent", &["group", "safegate"]).await;
    assert_eq!(
        mode_and_owner("/var/lib/safegate"),
        (0o700, "safegate:safegate".to_owned())
    );
    assert_eq!(
        mode_and_owner("/var/lib/safegate/policy/config/policy.toml").1,
        "safegate:safegate"
    );
    assert_eq!(mode_and_owner(CONFIG), (0o644, "root:root".to_owned()));
    let wants = "/etc/systemd/system/multi-user.target.wants/safegate.service";
    assert!(
        std::fs::symlink_metadata(wants).is_ok(),
        "the unit is not enabled ({wants} missing)"
    );
    let unit = installed_unit();
    let verify = must("systemd-analyze", &["verify", &unit.display().to_string()]).await;
    assert!(
        !verify.contains("safegate.service"),
        "systemd-analyze complains about the installed unit:\n{verify}"
    );
}

/// The ports and addresses a run of the installed package uses.
struct Site {
    proxy: SocketAddr,
    admin: SocketAddr,
    origin_port: u16,
}

/// Edits /etc/safegate/safegate.toml as a technician would: free loopback ports,
/// loopback upstreams (the test origin) and the test DNS server.
fn configure(dns: SocketAddr, site: &Site) {
    let text = std::fs::read_to_string(CONFIG).unwrap();
    let edited = text
        .replace(
            "listen = \"0.0.0.0:3128\"",
            &format!("listen = \"{}\"", site.proxy),
        )
        .replace(
            "listen = \"127.0.0.1:9128\"",
            &format!("listen = \"{}\"", site.admin),
        );
    assert_ne!(edited, text, "the package configuration has no listen keys");
    // The shipped UT1 feed stays configured, pointed at a loopback port where nothing
    // answers: no test reaches the internet, whatever the time of day.
    let feed = "url = \"https://dsi.ut-capitole.fr/blacklists/download/blacklists.tar.gz\"";
    assert!(
        edited.contains(feed),
        "the package configuration has no UT1 feed"
    );
    let sums = "checksums = \"https://dsi.ut-capitole.fr/blacklists/download/MD5SUM.LST\"";
    assert!(edited.contains(sums), "the UT1 feed has no checksums");
    let edited = edited
        .replace(feed, "url = \"http://127.0.0.1:9/blacklists.tar.gz\"")
        .replace(sums, "checksums = \"http://127.0.0.1:9/MD5SUM.LST\"");
    let mut edited = edited;
    edited.push_str(&format!(
        "\n[upstream]\nallow_loopback = true\n\n[upstream.dns]\nservers = [\"{dns}\"]\n\
         ip_strategy = \"ipv4_only\"\n"
    ));
    std::fs::write(CONFIG, edited).unwrap();
}

/// The unit's ExecStart, split into words (it has no quoted arguments).
fn exec_start() -> Vec<String> {
    let unit = std::fs::read_to_string(installed_unit()).unwrap();
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart in the unit");
    assert!(!line.contains(['"', '\'']), "quoted ExecStart: {line}");
    assert!(
        !line.contains("--set"),
        "the packaged unit needs no --set: {line}"
    );
    line.split_whitespace().map(str::to_owned).collect()
}

/// The unit's ExecStart as the safegate user (setpriv execs it, so the child's pid is
/// SafeGate's own, as systemd's MAINPID would be); returns it once both listeners are
/// up, with its log lines.
async fn start_service() -> (Child, mpsc::UnboundedReceiver<String>) {
    let argv = exec_start();
    let mut child = Command::new("setpriv")
        .args([
            "--reuid=safegate",
            "--regid=safegate",
            "--init-groups",
            "--",
        ])
        .args(&argv)
        .current_dir("/")
        .env_remove("RUST_LOG")
        .env("MALLOC_ARENA_MAX", "2")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = rx.recv().await {
            seen.push(line);
            let has = |m: &str| seen.iter().any(|l| l.contains(m));
            if has("proxy listening on ") && has("admin listening on ") {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        ready == Ok(true),
        "{argv:?} as safegate did not start:\n{}",
        seen.join("\n")
    );
    (child, rx)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The value of the first hidden field `name` in a page.
fn hidden_value(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} field in:\n{page}"))
        + marker.len();
    page[start..].split('"').next().unwrap().to_owned()
}

/// Signs in to the admin web interface as `user`, opens the rules page and saves
/// `site` as the pupils' deny list, like a filter admin with a browser.
async fn block_through_rules_page(admin: SocketAddr, user: &str, site: &str) {
    let url = |path: &str| format!("http://{admin}{path}");
    let client = client();
    let login = client.get(url("/login")).send().await.unwrap();
    let page = login.text().await.unwrap();
    let token = hidden_value(&page, "login_token");
    let signed_in = client
        .post(url("/login"))
        .form(&[
            ("user", user),
            ("password", PASSWORD),
            ("login_token", &token),
            ("next", "/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303, "sign-in refused");
    let rules = client.get(url("/rules")).send().await.unwrap();
    assert_eq!(rules.status(), 200);
    let page = rules.text().await.unwrap();
    assert!(
        page.contains("All pupils: deny list"),
        "no pupil deny list on the rules page"
    );
    let saved = client
        .post(url("/rules/list"))
        .form(&[
            ("csrf", hidden_value(&page, "csrf").as_str()),
            ("version", hidden_value(&page, "version").as_str()),
            ("scope", "pupil"),
            ("kind", "deny"),
            ("entries", site),
            ("reason", "package test"),
        ])
        .send()
        .await
        .unwrap();
    let location = saved.headers().get("location").cloned();
    assert_eq!(saved.status(), 303, "saving the deny list: {location:?}");
    let location = location.unwrap();
    assert!(
        !location.to_str().unwrap().contains("error"),
        "the rules page refused the edit: {location:?}"
    );
}

/// Status of `url` fetched through the proxy.
async fn status_through(proxy: SocketAddr, url: &str) -> u16 {
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{proxy}")).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    client.get(url).send().await.unwrap().status().as_u16()
}

/// Polls until `url` through the proxy answers `want` (the policy reloads a moment
/// after the rules page saves it), within 15 seconds.
async fn wait_for_status(proxy: SocketAddr, url: &str, want: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let got = status_through(proxy, url).await;
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} still answers {got}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the installed SafeGate as the unit would, makes the first admin account, blocks
/// a site through the admin web interface, and stops it with SIGTERM.
async fn run_and_edit_rules(site: &Site) {
    // As a technician would: root, in /, no --config (the package's is the default).
    let doctor = must("/usr/bin/safegate", &["doctor"]).await;
    assert!(
        doctor.starts_with("Checking as safegate (uid "),
        "doctor did not check as the service's user:\n{doctor}"
    );
    assert!(doctor.contains("OK    writable"), "{doctor}");
    assert!(doctor.contains("OK    systemd unit"), "{doctor}");
    let (mut child, _logs) = start_service().await;
    let setup = [
        "setup",
        "--no-input",
        "--school",
        "Test School",
        "--admin",
        "fiona",
        "--admin-password-stdin",
        "--ca",
        "yes",
        "--lists",
        "no",
    ];
    let (ok, text) = run_program("/usr/bin/safegate", &setup, Some(&format!("{PASSWORD}\n"))).await;
    assert!(ok, "safegate setup failed:\n{text}");
    assert!(text.contains("Setting up as safegate"), "{text}");
    assert!(text.contains("added user fiona (filter-admin"), "{text}");
    let (_, owner) = mode_and_owner("/var/lib/safegate/ca/safegate-ca.key");
    assert_eq!(owner, "safegate:safegate", "the CA key setup made");

    let games = format!("http://games.test:{}/bytes/2", site.origin_port);
    assert_eq!(status_through(site.proxy, &games).await, 200);
    block_through_rules_page(site.admin, "fiona", "games.test").await;
    wait_for_status(site.proxy, &games, 403).await;
    let edited = std::fs::read_to_string("/var/lib/safegate/policy/config/policy.toml").unwrap();
    assert!(
        edited.contains("games.test"),
        "the policy copy was not edited"
    );

    let pid = child.id().unwrap().to_string();
    must("kill", &["-TERM", &pid]).await;
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("SafeGate did not stop within 30s of SIGTERM")
        .unwrap();
    assert!(status.success(), "SafeGate exited with {status}");
}

/// After `dpkg --purge`: no files, no data, no user or group.
async fn check_purged() {
    for path in [
        "/usr/bin/safegate",
        "/etc/safegate",
        "/var/lib/safegate",
        "/usr/share/safegate",
        "/usr/share/doc/safegate",
        "/etc/systemd/system/multi-user.target.wants/safegate.service",
    ] {
        assert!(
            std::fs::symlink_metadata(path).is_err(),
            "{path} is still there after purge"
        );
    }
    for database in ["passwd", "group"] {
        let (found, text) = run_program("getent", &[database, "safegate"], None).await;
        assert!(!found, "safegate is still in {database}: {text}");
    }
}

#[tokio::test]
async fn the_debian_package_installs_runs_and_purges() {
    let Some(deb) = deb_under_test() else {
        return;
    };
    let body = async {
        let _purge = PurgeOnDrop;
        let origin = Origin::start().await;
        let dns = FakeDns::start(&[("games.test", Ipv4Addr::LOCALHOST)]).await;
        must("dpkg", &["-i", &deb.display().to_string()]).await;
        check_installed().await;
        let site = Site {
            proxy: SocketAddr::from((Ipv4Addr::LOCALHOST, free_port())),
            admin: SocketAddr::from((Ipv4Addr::LOCALHOST, free_port())),
            origin_port: origin.addr.port(),
        };
        configure(dns.addr, &site);
        run_and_edit_rules(&site).await;
        // Plain remove keeps the configuration and the data.
        must("dpkg", &["--remove", "safegate"]).await;
        assert!(Path::new(CONFIG).is_file() && Path::new("/var/lib/safegate/policy").is_dir());
        must("dpkg", &["--purge", "safegate"]).await;
        check_purged().await;
    };
    if tokio::time::timeout(LIMIT, body).await.is_err() {
        panic!("the package test did not finish within {LIMIT:?}");
    }
}

/// deploy/debian/safegate.toml sets data_dir, policy.file and the two listeners; every
/// other key must be what config/safegate.toml (the reference installed as
/// safegate.toml.example) says, so the short file and the reference never disagree.
#[tokio::test]
async fn the_package_configuration_differs_from_the_reference_only_where_it_says() {
    let package = repo_file("deploy/debian/safegate.toml");
    let package = package.display().to_string();
    let reference = shipped_config().display().to_string();
    let (status, packaged, err) = run_to_end(&["config", "show", "--config", &package]).await;
    assert!(status.success(), "{err}");
    let (status, expected, err) = run_to_end(&[
        "config",
        "show",
        "--config",
        &reference,
        "--set",
        "data_dir=\"/var/lib/safegate\"",
        "--set",
        "policy.file=\"/var/lib/safegate/policy/config/policy.toml\"",
        "--set",
        "proxy.listen=\"0.0.0.0:3128\"",
        "--set",
        "admin.listen=\"127.0.0.1:9128\"",
        "--set",
        "lists.schedule=\"daily 03:30\"",
        "--set",
        "lists.feeds=[{name=\"ut1\",format=\"ut1\",url=\"https://dsi.ut-capitole.fr/blacklists/download/blacklists.tar.gz\",\
         checksums=\"https://dsi.ut-capitole.fr/blacklists/download/MD5SUM.LST\"}]",
    ])
    .await;
    assert!(status.success(), "{err}");
    assert_eq!(packaged, expected);
    // And the reference itself differs from those.
    let (_, shipped, _) = run_to_end(&["config", "show", "--config", &reference]).await;
    assert_ne!(shipped, expected);
}
