//! The trust's central policy (`[policy.central]`): a bundle made and signed with
//! `safegate policy keygen` / `safegate policy bundle`, served over HTTP on loopback.
//! SafeGate installs the first bundle at start and each newer one as it is published;
//! a bundle with a bad signature, an older version or a policy that does not compile
//! is refused and the policy in force stays; the school's local allow-list is kept on
//! top of the trust's policy.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::kit::bounded;
use crate::kit::origin::Origin;
use crate::kit::process::{SafeGate, run_to_end};

/// Serves whatever bytes it holds at every path (one request a connection).
struct BundleServer {
    url: String,
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl BundleServer {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/bundle.json", listener.local_addr().unwrap());
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let serving = Arc::clone(&bytes);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let body = serving.lock().unwrap().clone();
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = stream.read(&mut request).await;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(&body).await;
                });
            }
        });
        Self { url, bytes }
    }

    fn publish(&self, bundle: &Path) {
        *self.bytes.lock().unwrap() = std::fs::read(bundle).unwrap();
    }
}

/// The shipped policy with sites reachable by address, and `deny` as the global
/// deny-list, with the shipped lists beside it, bundled as `version` with `key`.
async fn bundle(
    dir: &Path,
    key: &Path,
    version: u64,
    deny: &str,
    policy_text: Option<&str>,
) -> std::path::PathBuf {
    let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let tree = dir.join(format!("tree-{version}"));
    std::fs::create_dir_all(tree.join("config")).unwrap();
    let text = match policy_text {
        Some(text) => text.to_owned(),
        None => std::fs::read_to_string(repo.join("config/policy.toml"))
            .unwrap()
            .replace("block_ip_hosts = true", "block_ip_hosts = false")
            .replacen(
                "# { site = \"example.com\", windows = [\"core-hours\"] }.\ndeny = []",
                &format!("\ndeny = {deny}"),
                1,
            ),
    };
    assert!(policy_text.is_some() || text.contains(&format!("deny = {deny}")));
    std::fs::write(tree.join("config/policy.toml"), text).unwrap();
    let copied = std::process::Command::new("cp")
        .arg("-r")
        .arg(repo.join("blocklists"))
        .arg(tree.join("blocklists"))
        .status()
        .unwrap();
    assert!(copied.success());
    let out = dir.join(format!("bundle-{version}.json"));
    let (status, stdout, stderr) = run_to_end(&[
        "policy",
        "bundle",
        "--sign",
        &key.display().to_string(),
        "--bundle-version",
        &version.to_string(),
        "--policy",
        &tree.join("config/policy.toml").display().to_string(),
        "--lists",
        &tree.join("blocklists").display().to_string(),
        "--out",
        &out.display().to_string(),
    ])
    .await;
    assert!(status.success(), "{stdout}\n{stderr}");
    out
}

/// A new key pair: (secret key file, public key).
async fn keygen(dir: &Path, name: &str) -> (std::path::PathBuf, String) {
    let file = dir.join(name);
    let (status, stdout, stderr) =
        run_to_end(&["policy", "keygen", "--out", &file.display().to_string()]).await;
    assert!(status.success(), "{stdout}\n{stderr}");
    (file, stdout.lines().last().unwrap().trim().to_owned())
}

/// Polls `url` through `sg` until it answers `want`.
async fn until_status(sg: &SafeGate, url: &str, want: u16) {
    let client = sg.client();
    loop {
        if client.get(url).send().await.unwrap().status().as_u16() == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn signed_bundles_are_installed_and_bad_ones_refused_while_the_local_allow_list_stays() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let (key, public) = keygen(dir.path(), "trust.key").await;
        let (other_key, _) = keygen(dir.path(), "stranger.key").await;
        let origin = Origin::start().await;
        let page = origin.url("/bytes/16");
        let server = BundleServer::start().await;
        let denied = bundle(dir.path(), &key, 1, "[\"127.0.0.1\"]", None).await;
        server.publish(&denied);
        let central = format!(
            "policy.central={{ url = {:?}, public_key = {public:?}, interval = \"200ms\" }}",
            server.url
        );
        let mut sg = SafeGate::start(&[central.as_str()]).await;
        sg.wait_for_log("policy: the trust's central bundle").await;
        assert_eq!(sg.client().get(&page).send().await.unwrap().status(), 403);

        // Version 2 lifts the deny: installed and live.
        server.publish(&bundle(dir.path(), &key, 2, "[]", None).await);
        until_status(&sg, &page, 200).await;
        // Signed by someone else, older, or not compiling: refused, the policy stays.
        server.publish(&bundle(dir.path(), &other_key, 3, "[\"127.0.0.1\"]", None).await);
        sg.wait_for_log("does not verify").await;
        server.publish(&denied);
        let broken = "[categories.x]\nsources = [{ format = \"nonsense\" }]\n";
        server.publish(&bundle(dir.path(), &key, 4, "", Some(broken)).await);
        sg.wait_for_log("does not compile").await;
        assert_eq!(sg.client().get(&page).send().await.unwrap().status(), 200);

        // Another school of the trust keeps its own allow-list on top of version 1.
        server.publish(&denied);
        let local = dir.path().join("local.toml");
        std::fs::write(&local, "allow = [\"127.0.0.1\"]\n").unwrap();
        let with_local = format!(
            "policy.central={{ url = {:?}, public_key = {public:?}, interval = \"200ms\", local = {:?} }}",
            server.url,
            local.display().to_string()
        );
        let mut school = SafeGate::start(&[with_local.as_str()]).await;
        school.wait_for_log("policy: the trust's central bundle").await;
        assert_eq!(school.client().get(&page).send().await.unwrap().status(), 200);
        let gambling = "http://www.bet365.com/";
        assert_eq!(school.client().get(gambling).send().await.unwrap().status(), 403);
        drop(school);
        drop(sg);
    })
    .await;
}
