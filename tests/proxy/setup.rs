//! `safegate setup`: with flags (as a script would) and on a terminal (as a technician
//! would, through `script`'s pseudo-terminal), on a copy of the shipped configuration,
//! policy and lists. Afterwards the policy names the school and its time zone, the
//! first admin account can sign in to the admin interface, the CA exists, and a site
//! only the imported UT1 lists name is blocked.

use std::path::{Path, PathBuf};
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use tokio::process::Command;

use crate::kit::bounded;
use crate::kit::process::{SafeGate, binary, run_program};

/// The UT1 categories setup imports, each with one `.test` domain only it names.
const UT1: [&str; 8] = [
    "adult",
    "agressif",
    "doh",
    "gambling",
    "redirector",
    "social_networks",
    "strict_redirector",
    "vpn",
];

/// A copy of the shipped config/ and blocklists/ in a temp dir, with data_dir and a
/// UT1 archive beside them.
struct Install {
    dir: tempfile::TempDir,
}

impl Install {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        for folder in [
            "config",
            "blocklists",
            "blocklists/phrases",
            "blocklists/content",
        ] {
            std::fs::create_dir_all(dir.path().join(folder)).unwrap();
            for entry in std::fs::read_dir(repo.join(folder)).unwrap() {
                let path = entry.unwrap().path();
                if path.is_file() {
                    std::fs::copy(
                        &path,
                        dir.path().join(folder).join(path.file_name().unwrap()),
                    )
                    .unwrap();
                }
            }
        }
        // Pupils may reach the test origin on 127.0.0.1.
        let policy = dir.path().join("config/policy.toml");
        let text = std::fs::read_to_string(&policy).unwrap();
        std::fs::write(
            &policy,
            text.replace("block_ip_hosts = true", "block_ip_hosts = false"),
        )
        .unwrap();
        std::fs::write(dir.path().join("ut1.tar.gz"), ut1_archive()).unwrap();
        Self { dir }
    }

    fn config(&self) -> String {
        self.dir
            .path()
            .join("config/safegate.toml")
            .display()
            .to_string()
    }

    fn data_set(&self) -> String {
        format!("data_dir={:?}", self.data_dir().display().to_string())
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn policy(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("config/policy.toml")).unwrap()
    }

    fn archive(&self) -> String {
        self.dir.path().join("ut1.tar.gz").display().to_string()
    }

    fn setup_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec!["setup".into(), "--config".into(), self.config()];
        args.extend(["--set".into(), self.data_set()]);
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    }
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// The built `safegate ARGS` with `stdin`; (success, stdout + stderr).
async fn run_safegate(args: &[String], stdin: &str) -> (bool, String) {
    let program = binary().display().to_string();
    run_program(&program, &strs(args), Some(stdin)).await
}

fn ut1_archive() -> Vec<u8> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    for category in UT1 {
        let domains = format!("# UT1 {category}\nonly-in-ut1-{category}.test\n");
        let mut header = tar::Header::new_gnu();
        header.set_size(domains.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(
                &mut header,
                format!("blacklists/{category}/domains"),
                domains.as_bytes(),
            )
            .unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// `safegate check URL` on the install: true when blocked (exit status 3).
async fn blocked(install: &Install, url: &str) -> bool {
    let args: Vec<String> = vec![
        "check".into(),
        "--config".into(),
        install.config(),
        "--set".into(),
        install.data_set(),
        url.into(),
    ];
    let output = Command::new(binary()).args(&args).output().await.unwrap();
    output.status.code() == Some(3)
}

#[tokio::test]
async fn setup_with_flags_makes_a_working_school() {
    bounded(async {
        let install = Install::new();
        assert!(!blocked(&install, "http://only-in-ut1-gambling.test/").await);
        let archive = install.archive();
        let args = install.setup_args(&[
            "--school",
            "Hillside <Primary>",
            "--timezone",
            "Europe/Paris",
            "--admin",
            "head.it",
            "--admin-password-stdin",
            "--ca",
            "yes",
            "--lists",
            "yes",
            "--lists-from",
            &archive,
        ]);
        let (ok, out) = run_safegate(&args, "correct horse battery staple\n").await;
        assert!(ok, "{out}");
        for said in [
            "school \"Hillside <Primary>\", time zone Europe/Paris",
            "added user head.it (filter-admin, no group, permissions rules,reports,metrics,users)",
            "school CA: created",
            "category lists: ut1 installed (8 categories",
            "to keep them current, add to the configuration:",
        ] {
            assert!(out.contains(said), "no {said:?} in:\n{out}");
        }
        let policy = install.policy();
        assert!(
            policy.contains("school = \"Hillside <Primary>\""),
            "{policy}"
        );
        assert!(policy.contains("timezone = \"Europe/Paris\""));
        // Comments are kept.
        assert!(policy.contains("# Time zone of the school, as an IANA name."));
        assert!(install.data_dir().join("ca/safegate-ca.pem").is_file());
        assert!(blocked(&install, "http://only-in-ut1-gambling.test/").await);
        assert!(blocked(&install, "http://www.only-in-ut1-vpn.test/").await);

        let policy_after_first_run = install.policy();
        // Again, with no input: nothing asked, the policy left as it is.
        let args = install.setup_args(&["--no-input", "--lists", "yes", "--lists-from", &archive]);
        let (ok, out) = run_safegate(&args, "").await;
        assert!(ok, "{out}");
        assert!(out.contains("category lists: ut1 "), "{out}");
        assert_eq!(install.policy(), policy_after_first_run);

        // The account signs in to the admin interface of the service it set up.
        let policy = install.dir.path().join("config/policy.toml");
        let policy = format!("policy.file={:?}", policy.display().to_string());
        let safegate = SafeGate::start(&[&policy, &install.data_set()]).await;
        let home = sign_in(&safegate, "head.it", "correct horse battery staple").await;
        assert!(home.contains("Sign out"), "{home}");
        assert!(home.contains("Rules"), "{home}");
        assert!(home.contains("href=\"/accounts\""), "{home}");
    })
    .await;
}

/// Signs in to the admin interface with a plain HTTP client (cookies carried by
/// hand); the home page's text.
async fn sign_in(safegate: &SafeGate, user: &str, password: &str) -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let base = format!("http://{}", safegate.admin);
    let form = http.get(format!("{base}/login")).send().await.unwrap();
    let mut cookies = cookies_of(&form);
    let page = form.text().await.unwrap();
    let marker = "name=\"login_token\" value=\"";
    let start = page.find(marker).expect("a login_token field") + marker.len();
    let token = page[start..].split('"').next().unwrap().to_owned();
    let answer = http
        .post(format!("{base}/login"))
        .header("cookie", cookies.join("; "))
        .form(&[
            ("user", user),
            ("password", password),
            ("login_token", &token),
            ("next", "/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer.status(),
        303,
        "sign-in refused: {}",
        answer.text().await.unwrap()
    );
    cookies.extend(cookies_of(&answer));
    http.get(format!("{base}/"))
        .header("cookie", cookies.join("; "))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn cookies_of(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_owned))
        .collect()
}

/// On a terminal, setup asks each question in turn, with the current time zone as the
/// default, the password twice with echo off.
#[tokio::test]
async fn setup_asks_on_a_terminal() {
    if which("script").is_none() {
        eprintln!("skipped: `script` (util-linux) is not installed");
        return;
    }
    bounded(async {
        let install = Install::new();
        let mut command = vec![binary().display().to_string()];
        command.extend(install.setup_args(&[]));
        let line = command
            .iter()
            .map(|word| format!("'{}'", word.replace('\'', "'\\''")))
            .collect::<Vec<_>>()
            .join(" ");
        let answers = "Oak Academy\n\nhead.it\npass phrase for oak\npass phrase for oak\nn\nn\n";
        let args = vec!["-qec".to_owned(), line, "/dev/null".to_owned()];
        let (ok, out) = run_program("script", &strs(&args), Some(answers)).await;
        assert!(ok, "{out}");
        for asked in [
            "The school's name",
            "The school's time zone [Europe/London]",
            "Log-in name of the first admin account",
            "Password for head.it",
            "The same again",
            "Create the school CA now",
            "Download the category lists now",
            "added user head.it",
        ] {
            assert!(out.contains(asked), "no {asked:?} in:\n{out}");
        }
        let policy = install.policy();
        assert!(policy.contains("school = \"Oak Academy\""), "{policy}");
        assert!(policy.contains("timezone = \"Europe/London\""), "{policy}");
        assert!(!install.data_dir().join("ca").exists());
    })
    .await;
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(tool))
        .find(|path| path.is_file())
}
