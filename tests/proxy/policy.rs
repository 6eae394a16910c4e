//! The policy through the running proxy: decision order, roles by client address,
//! time windows and terms, temporary unblocks, file rules, SafeSearch routing, the
//! block page and its review form, hot reload (file change, SIGHUP, broken file),
//! and `safegate check`. Names resolve through a fake DNS server on loopback.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use tokio::io::AsyncWriteExt;

use crate::kit::block_page::review_form_fields;
use crate::kit::dns::FakeDns;
use crate::kit::origin::Origin;
use crate::kit::process::{SafeGate, run_to_end, shipped_config};
use crate::kit::{bounded, raw};

/// A policy in a temporary folder with small list files.
struct PolicyDir {
    dir: tempfile::TempDir,
}

const LISTS: &[(&str, &str)] = &[
    ("illegal.txt", "# locked\nillegal.test\n"),
    ("gambling.txt", "# test bookmakers\nbet.test\n127.0.0.9\n"),
    ("social.txt", "chat.test\n"),
];

impl PolicyDir {
    fn new(policy: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in LISTS {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let this = Self { dir };
        this.write(policy);
        this
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("policy.toml")
    }

    /// Replaces the policy file atomically, as an editor would.
    fn write(&self, policy: &str) {
        let temp = self.dir.path().join(".policy.toml.new");
        std::fs::write(&temp, policy).unwrap();
        std::fs::rename(&temp, self.path()).unwrap();
    }

    fn set(&self) -> String {
        format!("policy.file={:?}", self.path().display().to_string())
    }
}

fn policy(extra_pupil: &str, unblocks: &str) -> String {
    format!(
        r#"timezone = "Europe/London"
default_role = "pupil"

[global]
allow = ["bet.test/maths", "illegal.test"]

[categories.illegal]
locked = true
sources = [{{ format = "domains", path = "illegal.txt" }}]

[categories.gambling]
sources = [{{ format = "domains", path = "gambling.txt" }}]

[categories.social]
sources = [{{ format = "domains", path = "social.txt" }}]

[windows.always]
times = ["00:00-24:00"]

[windows.term-2020]
terms_only = true

[calendar]
terms = [{{ name = "Autumn 2020", from = "2020-09-01", until = "2020-12-18" }}]

[roles.pupil]
block = ["gambling", {{ category = "social", windows = ["always"] }}]
deny = [{{ site = "games.test", windows = ["term-2020"] }}]
safesearch = true
youtube = "strict"
{extra_pupil}

[[roles.pupil.files]]
name = "executables"
extensions = ["exe", "msi"]
content_types = ["application/x-msdownload"]

[roles.staff]
block = []
safesearch = false
youtube = "off"

[roles.filter-admin]
block = []
{unblocks}
"#
    )
}

struct World {
    origin: Origin,
    dns: FakeDns,
    policy: PolicyDir,
}

impl World {
    async fn new(policy_text: &str) -> Self {
        let origin = Origin::start().await;
        let names = [
            "bet.test",
            "www.bet.test",
            "illegal.test",
            "chat.test",
            "games.test",
            "school.test",
        ];
        let records: Vec<(&str, Ipv4Addr)> =
            names.iter().map(|n| (*n, Ipv4Addr::LOCALHOST)).collect();
        let dns = FakeDns::start(&records).await;
        Self {
            origin,
            dns,
            policy: PolicyDir::new(policy_text),
        }
    }

    fn sets(&self) -> Vec<String> {
        vec![
            self.policy.set(),
            format!("upstream.dns.servers=[\"{}\"]", self.dns.addr),
            "upstream.dns.ip_strategy=\"ipv4_only\"".to_owned(),
            format!("proxy.connect_ports=[443, {}]", self.origin.addr.port()),
        ]
    }

    async fn safegate(&self, more: &[&str]) -> SafeGate {
        let mut sets = self.sets();
        sets.extend(more.iter().map(|s| (*s).to_owned()));
        let refs: Vec<&str> = sets.iter().map(String::as_str).collect();
        SafeGate::start(&refs).await
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.origin.addr.port())
    }
}

/// Opens a CONNECT tunnel to `authority` and fetches `/bytes/7` through it.
async fn tunnel_get(proxy: std::net::SocketAddr, authority: &str) -> Vec<u8> {
    let mut stream = raw::connect(proxy).await;
    let request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = raw::read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    stream
        .write_all(format!("GET /bytes/7 HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (head, body) = raw::read_response(&mut stream).await;
    assert_eq!(raw::status_of(&head), 200, "{head}");
    body
}

async fn fetch(safegate: &SafeGate, url: &str) -> (u16, String, String) {
    let response = safegate.client().get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let rule = response
        .headers()
        .get("x-safegate-rule")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, rule, response.text().await.unwrap())
}

#[tokio::test]
async fn decisions_follow_the_documented_order() {
    bounded(async {
        let world = World::new(&policy("", "")).await;
        let safegate = world.safegate(&[]).await;
        // Locked beats the global allow-list.
        let (status, rule, _) = fetch(&safegate, &world.url("illegal.test", "/")).await;
        assert_eq!((status, rule.as_str()), (403, "locked:illegal"));
        // The allow-list (a URL entry) beats the category.
        let (status, _, body) =
            fetch(&safegate, &world.url("www.bet.test", "/maths/odds?x=1")).await;
        assert_eq!(status, 404, "allowed through to the origin: {body}");
        // The category blocks the rest of the site, subdomains included.
        let (status, rule, body) = fetch(&safegate, &world.url("www.bet.test", "/")).await;
        assert_eq!(
            (status, rule.as_str()),
            (403, "category:pupil:gambling"),
            "{body}"
        );
        assert!(
            body.contains("gambling") && body.contains("pupil"),
            "{body}"
        );
        // A label-boundary look-alike is not blocked (it does not resolve: 502, not 403).
        let (status, _, _) = fetch(&safegate, &world.url("xbet.test", "/")).await;
        assert_eq!(status, 502);
        // Unlisted sites pass.
        let (status, _, body) = fetch(&safegate, &world.url("school.test", "/bytes/10")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            world.origin.connections(),
            2,
            "blocked requests must not reach the origin"
        );
    })
    .await;
}

#[tokio::test]
async fn encoding_tricks_do_not_bypass_the_lists() {
    bounded(async {
        let world = World::new(&policy("", "")).await;
        let safegate = world.safegate(&[]).await;
        let port = world.origin.addr.port();
        for target in [
            format!("http://WWW.BET.TEST:{port}/"),
            format!("http://www.bet.test.:{port}/"),
            // 127.0.0.9 is listed; its decimal, hex and octal forms are the same host.
            format!("http://2130706441:{port}/"),
            format!("http://0x7f000009:{port}/"),
            format!("http://0177.0.0.011:{port}/"),
        ] {
            let request = format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let response = raw::exchange(safegate.proxy, request.as_bytes()).await;
            assert_eq!(raw::status_of(&response), 403, "{target}: {response}");
        }
        // Percent-encoding in the path does not escape the allow-list's path prefix either way.
        let (status, _, _) = fetch(&safegate, &world.url("bet.test", "/%6Daths/x")).await;
        assert_eq!(status, 404, "encoded /maths is still the allowed path");
        let (status, rule, _) = fetch(&safegate, &world.url("bet.test", "/maths/../casino")).await;
        assert_eq!((status, rule.as_str()), (403, "category:pupil:gambling"));
    })
    .await;
}

#[tokio::test]
async fn roles_come_from_the_client_address_map() {
    bounded(async {
        let world = World::new(&policy("", "")).await;
        let staff = world
            .safegate(&["auth.bindings=[{ network = \"127.0.0.0/8\", role = \"staff\" }]"])
            .await;
        let (status, _, body) = fetch(&staff, &world.url("bet.test", "/bytes/5")).await;
        assert_eq!(status, 200, "staff may visit: {body}");
        let (status, rule, _) = fetch(&staff, &world.url("illegal.test", "/")).await;
        assert_eq!((status, rule.as_str()), (403, "locked:illegal"));
    })
    .await;
}

#[tokio::test]
async fn time_windows_and_terms_limit_rules() {
    bounded(async {
        let world = World::new(&policy("", "")).await;
        let safegate = world.safegate(&[]).await;
        // Blocked in a window that is always open.
        let (status, rule, _) = fetch(&safegate, &world.url("chat.test", "/")).await;
        assert_eq!((status, rule.as_str()), (403, "category:pupil:social"));
        // Denied only on term days of 2020: not today.
        let (status, _, _) = fetch(&safegate, &world.url("games.test", "/bytes/1")).await;
        assert_eq!(status, 200);
    })
    .await;
}

#[tokio::test]
async fn temporary_unblocks_apply_until_they_expire_but_never_to_locked_categories() {
    bounded(async {
        let unblocks = r#"
[[unblocks]]
id = "lesson"
site = "bet.test"
role = "pupil"
until = "2099-01-01 00:00"
reason = "probability lesson"

[[unblocks]]
id = "old"
site = "chat.test"
role = "pupil"
until = "2020-01-01 00:00"

[[unblocks]]
id = "social-lesson"
category = "social"
group = "year6"
until = "2099-01-01 00:00"
"#;
        let world = World::new(&policy("\n[roles.pupil.groups.year6]\n", unblocks)).await;
        let safegate = world.safegate(&[]).await;
        let (status, _, _) = fetch(&safegate, &world.url("bet.test", "/bytes/3")).await;
        assert_eq!(status, 200, "an active unblock lifts the category");
        let (status, rule, _) = fetch(&safegate, &world.url("chat.test", "/")).await;
        assert_eq!((status, rule.as_str()), (403, "category:pupil:social"), "expired unblock");
        let year6 = world
            .safegate(&["auth.bindings=[{ network = \"127.0.0.0/8\", role = \"pupil\", group = \"year6\" }]"])
            .await;
        let (status, _, _) = fetch(&year6, &world.url("chat.test", "/bytes/3")).await;
        assert_eq!(status, 200, "category unblock for the group");
        let (status, rule, _) = fetch(&year6, &world.url("illegal.test", "/")).await;
        assert_eq!((status, rule.as_str()), (403, "locked:illegal"));
    })
    .await;
}

#[tokio::test]
async fn file_rules_block_executables_by_path_and_by_response_type() {
    bounded(async {
        let world = World::new(&policy("", "")).await;
        let safegate = world.safegate(&[]).await;
        let (status, rule, _) = fetch(&safegate, &world.url("school.test", "/setup.EXE")).await;
        assert_eq!((status, rule.as_str()), (403, "file:pupil:executables"));
        let (status, rule, body) =
            fetch(&safegate, &world.url("school.test", "/download/tool")).await;
        assert_eq!(
            (status, rule.as_str()),
            (403, "file:pupil:executables"),
            "{body}"
        );
        let staff = world
            .safegate(&["auth.bindings=[{ network = \"127.0.0.0/8\", role = \"staff\" }]"])
            .await;
        let (status, _, _) = fetch(&staff, &world.url("school.test", "/download/tool")).await;
        assert_eq!(status, 200);
    })
    .await;
}

#[tokio::test]
async fn blocked_connect_gets_403_with_the_rule() {
    bounded(async {
        let world = World::new(&policy("", "")).await;
        let safegate = world.safegate(&[]).await;
        let port = world.origin.addr.port();
        let request =
            format!("CONNECT www.bet.test:{port} HTTP/1.1\r\nHost: www.bet.test:{port}\r\n\r\n");
        let response = raw::exchange(safegate.proxy, request.as_bytes()).await;
        assert_eq!(raw::status_of(&response), 403, "{response}");
        assert!(
            response
                .to_ascii_lowercase()
                .contains("x-safegate-rule: category:pupil:gambling"),
            "{response}"
        );
        let body = tunnel_get(safegate.proxy, &format!("school.test:{port}")).await;
        assert_eq!(body.len(), 7);
        assert_eq!(world.origin.connections(), 1);
    })
    .await;
}

#[tokio::test]
async fn block_page_is_escaped_and_its_review_form_is_recorded() {
    bounded(async {
        let world = World::new(&policy("", "")).await;
        let mut safegate = world.safegate(&[]).await;
        let url = world.url(
            "bet.test",
            "/%3Cscript%3Ealert(1)%3C/script%3E?q=\"><img src=x>",
        );
        let (status, _, body) = fetch(&safegate, &url).await;
        assert_eq!(status, 403);
        assert!(
            !body.contains("<script>alert") && !body.contains("<img src=x>"),
            "{body}"
        );
        let action = format!("http://{}/safegate/review", safegate.proxy);
        assert!(body.contains(&format!("action=\"{action}\"")), "{body}");

        // The browser posts the form through the proxy to the proxy's own address.
        let mut fields = review_form_fields(&body);
        // The address as the client sent it (reqwest percent-encodes `"`, `<`, `>`).
        let requested = fields[0].1.clone();
        assert!(
            requested.starts_with(&world.url("bet.test", "/%3Cscript%3Ealert(1)%3C/script%3E?q=")),
            "{requested}"
        );
        assert_eq!(fields[1].1, "category:pupil:gambling");
        assert_eq!(fields[2].1, "gambling");
        fields.push(("comment".into(), "needed for a probability lesson".into()));
        let response = safegate
            .client()
            .post(&action)
            .form(&fields)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);

        // Another site's page posting a form in the pupil's name (no token), a forged
        // token, and the form's token from another address are all refused.
        let without_token: Vec<(String, String)> = fields
            .iter()
            .filter(|(key, _)| key != "token")
            .cloned()
            .collect();
        let mut forged = fields.clone();
        forged[3].1 = format!("{}0", forged[3].1);
        let other_address = reqwest::Client::builder()
            .proxy(reqwest::Proxy::all(format!("http://{}", safegate.proxy)).unwrap())
            .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
            .build()
            .unwrap();
        for (client, form) in [
            (safegate.client(), without_token),
            (safegate.client(), forged),
            (other_address, fields.clone()),
        ] {
            let refused = client.post(&action).form(&form).send().await.unwrap();
            assert_eq!(refused.status(), 403);
        }
        safegate
            .wait_for_log("review form without a valid token")
            .await;
        assert!(response.text().await.unwrap().contains("Review requested"));
        safegate.wait_for_log("review request recorded").await;
        safegate.terminate();
        assert!(safegate.wait().await.success());
        let store = safegate_store::Store::open(safegate.data_dir()).unwrap();
        let reviews = store.reviews(10).unwrap();
        assert_eq!(reviews.len(), 1);
        assert_eq!(reviews[0].url, requested);
        assert_eq!(reviews[0].role, "pupil");
        assert_eq!(reviews[0].comment, "needed for a probability lesson");
    })
    .await;
}

/// The review form of a block page fetched by `client` (its hidden fields).
async fn review_form(client: &reqwest::Client, url: &str) -> Vec<(String, String)> {
    let response = client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 403);
    review_form_fields(&response.text().await.unwrap())
}

/// Issue 17, point 17: one review-form token and one client address make at most
/// `proxy.reviews_per_token_per_hour` and `proxy.reviews_per_address_per_hour`
/// review requests; the excess gets 429 with a plain-words page and is not stored,
/// and another address still asks.
#[tokio::test]
async fn review_requests_are_limited_per_token_and_per_address() {
    bounded(async {
        let world = World::new(&policy("", "")).await;
        let mut safegate = world
            .safegate(&[
                "proxy.reviews_per_token_per_hour=3",
                "proxy.reviews_per_address_per_hour=5",
            ])
            .await;
        let blocked = world.url("bet.test", "/");
        let action = format!("http://{}/safegate/review", safegate.proxy);
        let client = safegate.client();
        let post = |client: &reqwest::Client, form: &[(String, String)]| {
            let request = client.post(&action).form(form);
            async move {
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                let retry_after = response.headers().contains_key("retry-after");
                (status, retry_after, response.text().await.unwrap())
            }
        };
        // One token, ten posts: three are taken.
        let first = review_form(&client, &blocked).await;
        let mut statuses = Vec::new();
        for _ in 0..10 {
            let (status, retry_after, page) = post(&client, &first).await;
            if status == 429 {
                assert!(retry_after, "{page}");
                assert!(
                    page.contains("You have already asked for a review of this page"),
                    "{page}"
                );
            }
            statuses.push(status);
        }
        assert_eq!(statuses, [200, 200, 200, 429, 429, 429, 429, 429, 429, 429]);
        // A fresh token (the block page issues one per second) from the same address:
        // two more, then the address has made its five.
        let mut second = review_form(&client, &blocked).await;
        while second[3].1 == first[3].1 {
            tokio::task::yield_now().await;
            second = review_form(&client, &blocked).await;
        }
        let mut statuses = Vec::new();
        for _ in 0..4 {
            let (status, _, page) = post(&client, &second).await;
            if status == 429 {
                assert!(page.contains("many reviews from this computer"), "{page}");
            }
            statuses.push(status);
        }
        assert_eq!(statuses, [200, 200, 429, 429]);
        // Another address is not affected.
        let other = reqwest::Client::builder()
            .proxy(reqwest::Proxy::all(format!("http://{}", safegate.proxy)).unwrap())
            .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
            .build()
            .unwrap();
        let theirs = review_form(&other, &blocked).await;
        assert_eq!(post(&other, &theirs).await.0, 200);

        // Exactly the six admitted reviews were stored.
        safegate
            .wait_for_logs(|lines| {
                lines
                    .iter()
                    .filter(|line| line.contains("review request recorded"))
                    .count()
                    >= 6
            })
            .await;
        safegate.terminate();
        assert!(safegate.wait().await.success());
        let store = safegate_store::Store::open(safegate.data_dir()).unwrap();
        assert_eq!(store.reviews(100).unwrap().len(), 6);
    })
    .await;
}

#[tokio::test]
async fn safesearch_routes_to_the_enforced_endpoints() {
    bounded(async {
        let google = Origin::start().await;
        let port = google.addr.port();
        let Ok(enforced) = Origin::start_at(&format!("127.0.0.2:{port}")).await else {
            eprintln!("skipped: cannot bind 127.0.0.2");
            return;
        };
        let dns = FakeDns::start(&[
            ("www.google.com", Ipv4Addr::LOCALHOST),
            ("forcesafesearch.google.com", Ipv4Addr::new(127, 0, 0, 2)),
        ])
        .await;
        let policy = PolicyDir::new(&policy("", ""));
        let sets = [
            policy.set(),
            format!("upstream.dns.servers=[\"{}\"]", dns.addr),
            "upstream.dns.ip_strategy=\"ipv4_only\"".to_owned(),
            format!("proxy.connect_ports=[443, {port}]"),
        ];
        let refs: Vec<&str> = sets.iter().map(String::as_str).collect();
        let pupil = SafeGate::start(&refs).await;
        let url = format!("http://www.google.com:{port}/headers?q=cats&safe=off");
        let response = pupil.client().get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let echoed = response.text().await.unwrap();
        assert!(
            echoed.contains(&format!("host: www.google.com:{port}")),
            "{echoed}"
        );
        assert_eq!((enforced.connections(), google.connections()), (1, 0));

        tunnel_get(pupil.proxy, &format!("www.google.com:{port}")).await;
        assert_eq!((enforced.connections(), google.connections()), (2, 0));

        // Staff have SafeSearch off in this policy: straight to www.google.com.
        let mut staff_sets = refs.clone();
        staff_sets.push("auth.bindings=[{ network = \"127.0.0.0/8\", role = \"staff\" }]");
        let staff = SafeGate::start(&staff_sets).await;
        let response = staff.client().get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(google.connections(), 1);
    })
    .await;
}

#[tokio::test]
async fn safesearch_parameter_is_forced_on_plain_http() {
    bounded(async {
        let port = {
            let probe = Origin::start().await;
            probe.addr.port()
        };
        let Ok(enforced) = Origin::start_at(&format!("127.0.0.2:{port}")).await else {
            return;
        };
        let dns = FakeDns::start(&[("forcesafesearch.google.com", Ipv4Addr::new(127, 0, 0, 2))]).await;
        let policy = PolicyDir::new(&policy("", ""));
        let sets = [policy.set(), format!("upstream.dns.servers=[\"{}\"]", dns.addr)];
        let refs: Vec<&str> = sets.iter().map(String::as_str).collect();
        let safegate = SafeGate::start(&refs).await;
        let request = format!(
            "GET http://www.google.com:{port}/uri?q=cats&safe=off HTTP/1.1\r\nHost: www.google.com:{port}\r\nConnection: close\r\n\r\n"
        );
        let response = raw::exchange(safegate.proxy, request.as_bytes()).await;
        assert_eq!(raw::status_of(&response), 200, "{response}");
        let seen = response.split("\r\n\r\n").nth(1).unwrap();
        assert_eq!(seen, "/uri?q=cats&safe=active", "what the origin was asked");
        assert_eq!(enforced.connections(), 1);
        // Upper case and a trailing dot are the same host: no way round SafeSearch.
        let request = format!(
            "GET http://WWW.GOOGLE.COM.:{port}/uri?q=dogs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
        let response = raw::exchange(safegate.proxy, request.as_bytes()).await;
        assert_eq!(raw::status_of(&response), 200, "{response}");
        assert!(response.ends_with("/uri?q=dogs&safe=active"), "{response}");
    })
    .await;
}

#[tokio::test]
async fn policy_reloads_on_change_and_refuses_a_broken_file() {
    bounded(async {
        let world = World::new(&policy("", "")).await;
        let mut safegate = world.safegate(&[]).await;
        let (status, _, _) = fetch(&safegate, &world.url("bet.test", "/")).await;
        assert_eq!(status, 403);

        // A broken file is refused with its line and column; the old policy stays.
        world
            .policy
            .write("timezone = \"Europe/London\"\n[roles.pupil\nblock = []\n");
        let line = safegate.wait_for_log("policy NOT reloaded").await;
        assert!(line.contains(":2:"), "no line number: {line}");
        let (status, _, _) = fetch(&safegate, &world.url("bet.test", "/")).await;
        assert_eq!(status, 403, "the previous policy must stay live");

        // A good file takes effect without a restart.
        let relaxed = policy("", "").replace(
            "block = [\"gambling\", { category = \"social\", windows = [\"always\"] }]",
            "block = []",
        );
        world.policy.write(&relaxed);
        safegate.wait_for_log("policy reloaded").await;
        let (status, rule, body) = fetch(&safegate, &world.url("bet.test", "/bytes/2")).await;
        assert_eq!(status, 200, "{rule} {body}\n{}", safegate.logs().join("\n"));

        // SIGHUP reloads too.
        let hup = std::process::Command::new("kill")
            .args(["-HUP", &safegate.pid().to_string()])
            .status()
            .unwrap();
        assert!(hup.success());
        safegate.wait_for_log("SIGHUP received").await;
    })
    .await;
}

#[tokio::test]
async fn a_changed_list_file_reloads_the_policy() {
    bounded(async {
        let world = World::new(&policy("", "")).await;
        let mut safegate = world.safegate(&[]).await;
        let games = world.url("games.test", "/bytes/2");
        let school = world.url("school.test", "/bytes/2");
        assert_eq!(fetch(&safegate, &games).await.0, 200);
        assert_eq!(fetch(&safegate, &school).await.0, 200);

        // Replaced, as an editor saves: games.test is now a gambling site.
        let dir = world.policy.dir.path();
        let temp = dir.join(".gambling.txt.new");
        std::fs::write(&temp, "# test bookmakers\nbet.test\ngames.test\n").unwrap();
        std::fs::rename(&temp, dir.join("gambling.txt")).unwrap();
        let line = safegate.wait_for_log("policy reloaded").await;
        assert!(line.contains("entries="), "{line}");
        let (status, rule, _) = fetch(&safegate, &games).await;
        assert_eq!(status, 403, "{}", safegate.logs().join("\n"));
        assert_eq!(rule, "category:pupil:gambling");

        // Appended in place: school.test joins the social list.
        let mut social = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("social.txt"))
            .unwrap();
        std::io::Write::write_all(&mut social, b"school.test\n").unwrap();
        drop(social);
        // The reload follows the file event; poll until it is in force.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while fetch(&safegate, &school).await.0 != 403 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "an appended list line never took effect:\n{}",
                safegate.logs().join("\n")
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(fetch(&safegate, &games).await.0, 403);

        // Both hand edits are in the audit log, as diffs by `file`.
        safegate
            .wait_for_logs(|lines| {
                lines
                    .iter()
                    .filter(|line| line.contains("list file change recorded in the audit log"))
                    .count()
                    >= 2
            })
            .await;
        safegate.terminate();
        assert!(safegate.wait().await.success());
        let store = safegate_store::Store::open(safegate.data_dir()).unwrap();
        let entries = store.audit_entries(1, 100).unwrap();
        let list_change = |file: &str| {
            entries
                .iter()
                .find(|e| e.subject.starts_with("list ") && e.subject.ends_with(file))
                .unwrap_or_else(|| panic!("no audit entry for {file}: {entries:#?}"))
        };
        let gambling = list_change("/gambling.txt");
        assert_eq!(gambling.actor, "file");
        assert!(
            gambling.detail.contains("+games.test"),
            "{}",
            gambling.detail
        );
        assert!(list_change("/social.txt").detail.contains("+school.test"));
        assert!(
            !entries.iter().any(|e| e.subject.ends_with("/illegal.txt")),
            "an unchanged list is not audited: {entries:#?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_broken_policy_stops_start_up_with_file_line_and_column() {
    bounded(async {
        let policy =
            PolicyDir::new("default_role = \"pupil\"\n[roles.pupil]\nblock = [\"nonexistent\"\n");
        let config = shipped_config().display().to_string();
        let set = policy.set();
        let (status, _, stderr) = run_to_end(&["run", "--config", &config, "--set", &set]).await;
        assert!(!status.success());
        assert!(
            stderr.contains(&policy.path().display().to_string()),
            "{stderr}"
        );
        assert!(stderr.contains(":3:") || stderr.contains(":4:"), "{stderr}");
    })
    .await;
}

fn check(args: &[&str]) -> Vec<String> {
    let mut all = vec![
        "check".to_owned(),
        "--config".to_owned(),
        shipped_config().display().to_string(),
    ];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    all
}

async fn run_check(args: &[&str]) -> (i32, String) {
    let all = check(args);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let (status, stdout, stderr) = run_to_end(&refs).await;
    (status.code().unwrap_or(-1), format!("{stdout}{stderr}"))
}

#[tokio::test]
async fn check_explains_decisions_and_sets_the_exit_status() {
    bounded(async {
        let (code, out) = run_check(&["http://www.bet365.com/"]).await;
        assert_eq!(code, 3, "{out}");
        assert!(
            out.contains("category:pupil:gambling") && out.contains("BLOCK"),
            "{out}"
        );
        let (code, out) = run_check(&["--role", "staff", "http://www.bbc.co.uk/news"]).await;
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("ALLOW"), "{out}");
        // Core hours across the clock change: 08:45 BST on Monday 30 March 2026 is
        // 07:45 UTC (inside core hours); 15:45 UTC on Monday 26 October 2026 is 15:45
        // GMT (outside).
        let (code, out) = run_check(&[
            "--role",
            "staff",
            "--at",
            "2026-03-30T07:45:00Z",
            "https://www.facebook.com/",
        ])
        .await;
        assert_eq!(code, 3, "{out}");
        let (code, out) = run_check(&[
            "--role",
            "staff",
            "--at",
            "2026-10-26T15:45:00Z",
            "https://www.facebook.com/",
        ])
        .await;
        assert_eq!(code, 0, "{out}");
        let (code, out) = run_check(&[
            "--role",
            "staff",
            "--at",
            "2026-10-26 15:29",
            "--json",
            "facebook.com",
        ])
        .await;
        assert_eq!(code, 3, "{out}");
        let json: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(json["verdict"], "block");
        assert_eq!(json["rule"], "category:staff:social-networking");
        let (code, out) = run_check(&["--role", "janitor", "http://example.com/"]).await;
        assert_ne!(code, 0);
        assert!(out.contains("janitor"), "{out}");
    })
    .await;
}

#[tokio::test]
async fn encoded_slashes_do_not_get_round_a_path_rule_in_the_proxy_or_check() {
    bounded(async {
        let text = policy("", "").replace(
            r#"deny = [{ site = "games.test""#,
            r#"deny = ["school.test/secret", { site = "games.test""#,
        );
        let world = World::new(&text).await;
        let safegate = world.safegate(&[]).await;
        for path in [
            "/secret",
            "/x%2f..%2fsecret",
            "/x%2F%2E%2E%2Fsecret",
            "/x%5c..%5csecret",
            "/x/..%2fsecret",
        ] {
            let (status, rule, body) = fetch(&safegate, &world.url("school.test", path)).await;
            assert_eq!(
                (status, rule.as_str()),
                (403, "deny:role:pupil"),
                "{path}: {body}"
            );
        }
        // The rest of the site still reaches the origin (which has no such page).
        let (status, _, body) = fetch(&safegate, &world.url("school.test", "/x%2fsecret")).await;
        assert_eq!(status, 404, "{body}");
        // `safegate check` decides the same way.
        let set = world.policy.set();
        for url in [
            "http://school.test/x%2f..%2fsecret",
            "http://school.test/x%5C%2e%2e%5Csecret",
        ] {
            let (code, out) = run_check(&["--set", &set, url]).await;
            assert_eq!(code, 3, "{url}: {out}");
            assert!(out.contains("rule:        deny:role:pupil"), "{out}");
            assert!(out.contains("matched as:  school.test/secret"), "{out}");
        }
        let (code, out) = run_check(&["--set", &set, "http://school.test/x%2fsecret"]).await;
        assert_eq!(code, 0, "{out}");
    })
    .await;
}
