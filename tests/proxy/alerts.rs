//! Safeguarding alerts end to end: a scripted school week replayed through the running
//! proxy, one SafeGate run per moment of the week (the test clock,
//! `SAFEGATE_CLOCK_OFFSET_SECS`, puts each run's records at that moment), on one data
//! directory. Exactly the expected alerts must fire, each delivered once to a local
//! webhook and a local SMTP sink; `safegate alerts` lists, shows, acknowledges and
//! closes them; and `safegate report weekly` holds every event of the week with the
//! right person, time and evidence, and nothing from outside it.
//!
//! The week (2026-W47, Europe/London = UTC in November):
//! - Sun 15th 23:30 (before the week): frank searches a self-harm phrase;
//! - Mon 16th 11:00: alice searches two self-harm phrases (the second search's site
//!   cannot be resolved: it still counts); gina browses and searches quietly, one
//!   search being hostile markup;
//! - Tue 17th 10:00: dave (staff) opens a social network in core hours (this school's
//!   policy allows it and relies on the alert; the proxy decides on the real clock,
//!   so blocking by a window would depend on when the test runs);
//!   harry (staff) browses the school site;
//! - Wed 18th 13:00: bob tries a VPN site and a web proxy (both blocked);
//! - Thu 19th 14:00: carol makes 12 blocked attempts at a betting site in a burst;
//! - Fri 20th 09:00: erin is logged in on two computers at once;
//! - Mon 23rd 00:30 (after the week): frank searches a bullying phrase.
//!
//! Two shorter scripts on their own policy (a locked category, small heavy-use
//! thresholds): a pupil's attempt at a locked (illegal content) site, and unusually
//! heavy use measured against each user's own baseline over earlier days (one run
//! per day on the same data directory).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::auth::cheap_hash;
use crate::kit::dns::FakeDns;
use crate::kit::origin::Origin;
use crate::kit::process::{SafeGate, run_to_end, shipped_config};
use crate::kit::receivers::{SmtpSink, Webhook};

/// What the test origin answers for the pages of the script (it serves none of them:
/// what matters is that the request went through the proxy to it).
const ORIGIN: u16 = 404;

/// The scripted week runs SafeGate seven times.
const WEEK_LIMIT: Duration = Duration::from_secs(240);

pub(crate) fn repo_file(path: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
        .display()
        .to_string()
}

fn policy() -> String {
    format!(
        r#"timezone = "Europe/London"
default_role = "pupil"
[categories.gambling]
sites = ["bet.test"]
[categories.social-networking]
sites = ["social.test"]
[categories.circumvention]
sites = ["vpn.test", "webproxy.test"]
[windows.core-hours]
days = ["mon-fri"]
times = ["08:30-15:30"]
[roles.pupil]
block = ["gambling", "social-networking", "circumvention"]
safesearch = false
youtube = "off"
[roles.staff]
block = []
safesearch = false
youtube = "off"
[roles.filter-admin]
[alerts]
circumvention_categories = ["circumvention"]
repeated_blocks = {{ attempts = 10, minutes = 5 }}
staff_social = {{ categories = ["social-networking"], window = "core-hours" }}
[[alerts.phrases]]
list = "self-harm"
path = "{}"
severity = "high"
[[alerts.phrases]]
list = "bullying"
path = "{}"
severity = "medium"
"#,
        repo_file("blocklists/phrases/self-harm.txt"),
        repo_file("blocklists/phrases/bullying.txt"),
    )
}

/// Everything the week shares: origin, DNS, receivers, policy, data directory.
pub(crate) struct Week {
    origin: Origin,
    dns: FakeDns,
    pub(crate) webhook: Webhook,
    pub(crate) smtp: SmtpSink,
    dir: tempfile::TempDir,
}

/// Unix seconds of a UTC date-time `2026-11-16T11:00:00Z`.
fn unix(text: &str) -> i64 {
    text.parse::<jiff::Timestamp>().unwrap().as_second()
}

/// The users of the scripted week: (name, role, group).
const WEEK_USERS: [(&str, &str, &str); 8] = [
    ("alice", "pupil", "year6"),
    ("bob", "pupil", "year6"),
    ("carol", "pupil", "year5"),
    ("erin", "pupil", "year5"),
    ("frank", "pupil", "year6"),
    ("gina", "pupil", "year5"),
    ("dave", "staff", ""),
    ("harry", "staff", ""),
];

impl Week {
    async fn new() -> Self {
        Self::with(&policy(), &WEEK_USERS).await
    }

    /// A week with its own policy and users (name, role, group), password "pw".
    pub(crate) async fn with(policy: &str, users: &[(&str, &str, &str)]) -> Self {
        let origin = Origin::start().await;
        let dns = FakeDns::start(&[
            ("www.google.com", Ipv4Addr::LOCALHOST),
            ("school.test", Ipv4Addr::LOCALHOST),
            ("news.test", Ipv4Addr::LOCALHOST),
            ("social.test", Ipv4Addr::LOCALHOST),
        ])
        .await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("policy.toml"), policy).unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        let week = Self {
            origin,
            dns,
            webhook: Webhook::start().await,
            smtp: SmtpSink::start().await,
            dir,
        };
        let mut csv = String::from("user,role,group,password hash\n");
        for (name, role, group) in users {
            csv.push_str(&format!("{name},{role},{group},\"{}\"\n", cheap_hash("pw")));
        }
        let file = week.dir.path().join("users.csv");
        std::fs::write(&file, csv).unwrap();
        crate::users_cli::users_ok(
            &week.data_dir(),
            &["import", &file.display().to_string()],
            "",
        )
        .await;
        week
    }

    pub(crate) fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub(crate) fn policy_file(&self) -> PathBuf {
        self.dir.path().join("policy.toml")
    }

    pub(crate) fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.origin.addr.port())
    }

    /// The `--set`s of every run.
    pub(crate) fn sets(&self) -> Vec<String> {
        vec![
            format!("policy.file={:?}", self.policy_file().display().to_string()),
            format!("data_dir={:?}", self.data_dir().display().to_string()),
            format!("upstream.dns.servers=[\"{}\"]", self.dns.addr),
            "upstream.dns.ip_strategy=\"ipv4_only\"".to_owned(),
            "store.flush_interval=\"100ms\"".to_owned(),
            "report.weekly=false".to_owned(),
            // The retention purge runs on the real clock: keep 2026's records whenever
            // the test runs.
            "store.retention_days=0".to_owned(),
            format!("delivery.webhook_url={:?}", self.webhook.url),
            "delivery.min_severity=\"low\"".to_owned(),
            "delivery.email_to=[\"dsl@school.test\"]".to_owned(),
            "delivery.smtp.host=\"127.0.0.1\"".to_owned(),
            format!("delivery.smtp.port={}", self.smtp.port),
            "delivery.smtp.security=\"none\"".to_owned(),
            "delivery.smtp.from=\"SafeGate <safegate@school.test>\"".to_owned(),
        ]
    }

    /// Starts SafeGate with its clock at `at` (UTC, RFC 3339).
    pub(crate) async fn run_at(&self, at: &str) -> SafeGate {
        self.run_at_with(at, &[]).await
    }

    /// Like [`Week::run_at`], with more `--set`s.
    pub(crate) async fn run_at_with(&self, at: &str, extra: &[String]) -> SafeGate {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let offset = (unix(at) - now).to_string();
        let mut sets = self.sets();
        sets.extend_from_slice(extra);
        let refs: Vec<&str> = sets.iter().map(String::as_str).collect();
        SafeGate::start_with_env(&refs, &[("SAFEGATE_CLOCK_OFFSET_SECS", &offset)]).await
    }
}

/// A client logged in to the proxy as `user`, from `local` (a loopback address).
pub(crate) fn client(safegate: &SafeGate, user: &str, local: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .proxy(
            reqwest::Proxy::all(safegate.proxy_url())
                .unwrap()
                .basic_auth(user, "pw"),
        )
        .local_address(local.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// GETs `url`; the status.
pub(crate) async fn get(client: &reqwest::Client, url: &str) -> u16 {
    let response = client.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let _ = response.bytes().await;
    status
}

/// Stops a run cleanly.
pub(crate) async fn stop(mut safegate: SafeGate) {
    safegate.terminate();
    assert!(safegate.wait().await.success());
}

/// Runs `safegate ARGS --config shipped --set ...` (the week's sets); must succeed.
pub(crate) async fn safegate_ok(week: &Week, args: &[&str]) -> String {
    let config = shipped_config().display().to_string();
    let sets = week.sets();
    let mut all: Vec<&str> = args.to_vec();
    all.extend_from_slice(&["--config", &config]);
    for set in &sets {
        all.extend_from_slice(&["--set", set]);
    }
    let (status, stdout, stderr) = run_to_end(&all).await;
    assert!(status.success(), "{args:?} failed:\n{stdout}\n{stderr}");
    stdout
}

/// Replays the week; returns it with its data directory full.
pub(crate) async fn replay_week() -> Week {
    let week = Week::new().await;
    let mut delivered = 0;
    let mut expect_deliveries = async |week: &Week, new_alerts: usize| {
        delivered += new_alerts;
        week.webhook.wait_for(delivered).await;
        week.smtp.wait_for(delivered).await;
    };

    // Sunday night, before the week.
    let sg = week.run_at("2026-11-15T23:30:00Z").await;
    let frank = client(&sg, "frank", "127.0.0.1");
    assert_eq!(
        get(
            &frank,
            &week.url("www.google.com", "/search?q=i+want+to+kill+myself")
        )
        .await,
        ORIGIN
    );
    expect_deliveries(&week, 1).await;
    stop(sg).await;

    // Monday 11:00.
    let sg = week.run_at("2026-11-16T11:00:00Z").await;
    let gina = client(&sg, "gina", "127.0.0.1");
    assert_eq!(
        get(&gina, &week.url("news.test", "/volcanoes")).await,
        ORIGIN
    );
    assert_eq!(
        get(
            &gina,
            &week.url("www.google.com", "/search?q=volcano+eruption")
        )
        .await,
        ORIGIN
    );
    assert_eq!(
        get(
            &gina,
            &week.url(
                "www.google.com",
                "/search?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E"
            )
        )
        .await,
        ORIGIN
    );
    let alice = client(&sg, "alice", "127.0.0.1");
    assert_eq!(
        get(
            &alice,
            &week.url("www.google.com", "/search?q=how+to+k1ll+myself")
        )
        .await,
        ORIGIN
    );
    // www.bing.com is not in the DNS: the page fails, the search still counts.
    let failed = get(
        &alice,
        &week.url("www.bing.com", "/search?q=suicide+methods"),
    )
    .await;
    assert!(failed >= 500, "{failed}");
    expect_deliveries(&week, 1).await;
    // One new alert in this run (the second search folded into it), in /metrics.
    let kind = |kind: &str| format!("safegate_alerts_total{{kind=\"{kind}\"}}");
    assert_eq!(
        crate::auth::metric(&sg, &kind("safeguarding_phrase")).await,
        1.0
    );
    assert_eq!(crate::auth::metric(&sg, &kind("circumvention")).await, 0.0);
    stop(sg).await;

    // Tuesday 10:00.
    let sg = week.run_at("2026-11-17T10:00:00Z").await;
    let harry = client(&sg, "harry", "127.0.0.1");
    assert_eq!(
        get(&harry, &week.url("school.test", "/staffroom")).await,
        ORIGIN
    );
    let dave = client(&sg, "dave", "127.0.0.1");
    assert_eq!(get(&dave, &week.url("social.test", "/feed")).await, ORIGIN);
    expect_deliveries(&week, 1).await;
    stop(sg).await;

    // Wednesday 13:00.
    let sg = week.run_at("2026-11-18T13:00:00Z").await;
    let bob = client(&sg, "bob", "127.0.0.1");
    assert_eq!(get(&bob, &week.url("vpn.test", "/download")).await, 403);
    assert_eq!(
        get(&bob, &week.url("webproxy.test", "/browse?u=social.test")).await,
        403
    );
    expect_deliveries(&week, 1).await;
    stop(sg).await;

    // Thursday 14:00.
    let sg = week.run_at("2026-11-19T14:00:00Z").await;
    let carol = client(&sg, "carol", "127.0.0.1");
    for i in 0..12 {
        assert_eq!(
            get(&carol, &week.url("bet.test", &format!("/odds/{i}"))).await,
            403
        );
    }
    expect_deliveries(&week, 1).await;
    stop(sg).await;

    // Friday 09:00.
    let sg = week.run_at("2026-11-20T09:00:00Z").await;
    let first = client(&sg, "erin", "127.0.0.1");
    let second = client(&sg, "erin", "127.0.0.2");
    assert_eq!(
        get(&first, &week.url("school.test", "/maths")).await,
        ORIGIN
    );
    assert_eq!(
        get(&second, &week.url("school.test", "/english")).await,
        ORIGIN
    );
    expect_deliveries(&week, 1).await;
    stop(sg).await;

    // Monday 00:30, after the week.
    let sg = week.run_at("2026-11-23T00:30:00Z").await;
    let frank = client(&sg, "frank", "127.0.0.1");
    assert_eq!(
        get(&frank, &week.url("www.google.com", "/search?q=kys+loser")).await,
        ORIGIN
    );
    expect_deliveries(&week, 1).await;
    stop(sg).await;
    week
}

/// An alert as `safegate alerts list --json` prints it.
type Alert = serde_json::Value;

/// The first alert of each (person, kind), in id order.
fn first_alert_of_each(alerts: &[Alert]) -> BTreeMap<(String, String), &Alert> {
    let mut found: BTreeMap<(String, String), &Alert> = BTreeMap::new();
    for a in alerts {
        found
            .entry((
                a["who"].as_str().unwrap().to_owned(),
                a["kind"].as_str().unwrap().to_owned(),
            ))
            .or_insert(a);
    }
    found
}

#[tokio::test]
async fn a_scripted_week_raises_exactly_the_expected_alerts_delivers_and_reports_them() {
    tokio::time::timeout(WEEK_LIMIT, async {
        let week = replay_week().await;

        // Exactly these alerts, one per (person, kind).
        let listed = safegate_ok(&week, &["alerts", "list", "--json"]).await;
        let alerts: Vec<Alert> = serde_json::from_str(&listed).unwrap();
        let found = first_alert_of_each(&alerts);
        exactly_the_expected_alerts_are_listed(&listed, &alerts, &found);
        the_alerts_hold_their_evidence_and_quiet_users_raised_none(&listed, &alerts, &found);
        each_alert_is_delivered_once_by_webhook_and_mail(&week, &alerts);
        let alice = found[&("alice".to_owned(), "safeguarding_phrase".to_owned())];
        an_alert_is_acknowledged_with_a_note_then_closed(&week, alice).await;

        check_report(&week).await;
    })
    .await
    .expect("the scripted week did not finish in time");
}

/// One alert per (person, kind) of the script, with its severity, occurrences, status
/// and first minute, plus frank's bullying alert after the week: nothing more.
fn exactly_the_expected_alerts_are_listed(
    listed: &str,
    alerts: &[Alert],
    found: &BTreeMap<(String, String), &Alert>,
) {
    let expected = [
        (
            "alice",
            "safeguarding_phrase",
            "high",
            2,
            "2026-11-16T11:00",
        ),
        ("bob", "circumvention", "medium", 2, "2026-11-18T13:00"),
        ("carol", "repeated_blocks", "medium", 1, "2026-11-19T14:00"),
        (
            "dave",
            "staff_social_core_hours",
            "low",
            1,
            "2026-11-17T10:00",
        ),
        ("erin", "concurrent_login", "medium", 1, "2026-11-20T09:00"),
        (
            "frank",
            "safeguarding_phrase",
            "high",
            1,
            "2026-11-15T23:30",
        ),
    ];
    assert_eq!(alerts.len(), expected.len() + 1, "{listed}");
    for (who, kind, severity, occurrences, minute) in expected {
        let alert = found
            .get(&(who.to_owned(), kind.to_owned()))
            .unwrap_or_else(|| panic!("no {kind} alert for {who}:\n{listed}"));
        assert_eq!(alert["severity"], severity, "{who} {kind}");
        assert_eq!(alert["occurrences"], occurrences, "{who} {kind}");
        assert_eq!(alert["status"], "new");
        let first = alert["first_at_unix_micros"].as_i64().unwrap();
        let at = jiff::Timestamp::from_microsecond(first)
            .unwrap()
            .to_string();
        assert!(at.starts_with(minute), "{who} {kind} at {at}");
    }
    // frank's second alert is a different list: bullying, after the week.
    assert!(
        alerts
            .iter()
            .any(|a| a["who"] == "frank" && a["subject"] == "bullying")
    );
}

/// Each alert holds the records that raised it (alice's failed search too), and the
/// quiet users raised nothing.
fn the_alerts_hold_their_evidence_and_quiet_users_raised_none(
    listed: &str,
    alerts: &[Alert],
    found: &BTreeMap<(String, String), &Alert>,
) {
    // Evidence: the records that raised them.
    let alice = found[&("alice".to_owned(), "safeguarding_phrase".to_owned())];
    let evidence = alice["evidence"].as_array().unwrap();
    assert_eq!(evidence.len(), 2);
    assert_eq!(evidence[0]["search"]["terms"], "how to k1ll myself");
    assert_eq!(evidence[1]["outcome"], "Failed");
    assert_eq!(evidence[1]["host"], "www.bing.com");
    let carol = found[&("carol".to_owned(), "repeated_blocks".to_owned())];
    assert_eq!(carol["evidence"].as_array().unwrap().len(), 10);
    let bob = found[&("bob".to_owned(), "circumvention".to_owned())];
    let hosts: Vec<&str> = bob["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["host"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, ["vpn.test", "webproxy.test"]);
    // Nobody else: the quiet users raised nothing.
    for quiet in ["gina", "harry"] {
        assert!(
            !alerts.iter().any(|a| a["who"] == quiet),
            "{quiet}: {listed}"
        );
    }
}

/// Deliveries: each new alert once by webhook and once by e-mail to the DSL, the mail
/// saying the severity and the local time.
fn each_alert_is_delivered_once_by_webhook_and_mail(week: &Week, alerts: &[Alert]) {
    let hooks = week.webhook.bodies();
    assert_eq!(hooks.len(), 7);
    let hooked: Vec<serde_json::Value> = hooks
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    assert!(hooked.iter().all(|h| h["source"] == "safegate"));
    let mut hook_ids: Vec<u64> = hooked
        .iter()
        .map(|h| h["alert"]["id"].as_u64().unwrap())
        .collect();
    hook_ids.sort_unstable();
    let mut ids: Vec<u64> = alerts.iter().map(|a| a["id"].as_u64().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(hook_ids, ids);
    // Webhooks carry the short number people say (#1 to #7), beside the id.
    let mut numbers: Vec<u64> = hooked
        .iter()
        .map(|h| h["number"].as_u64().unwrap())
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=7).collect::<Vec<u64>>());
    let mails = week.smtp.mails();
    assert_eq!(mails.len(), 7);
    assert!(
        mails.iter().all(|m| m.to == ["<dsl@school.test>"]),
        "{mails:?}"
    );
    let alice_mail = mails
        .iter()
        .find(|m| m.data.contains("Who:      alice ("))
        .unwrap_or_else(|| panic!("alice's alert mail: {mails:?}"));
    assert!(
        alice_mail.data.contains("HIGH alert #")
            && alice_mail
                .data
                .contains("Kind:     Worrying words in a search or address"),
        "{}",
        alice_mail.data
    );
    assert!(
        alice_mail.data.contains("safegate alerts ack|close #"),
        "{}",
        alice_mail.data
    );
    assert!(
        alice_mail.data.contains("2026-11-16 11:00"),
        "{}",
        alice_mail.data
    );
}

/// Handling: alice's alert is acknowledged with a note, then closed; who did it is
/// kept, and it leaves the open list.
async fn an_alert_is_acknowledged_with_a_note_then_closed(week: &Week, alice: &Alert) {
    let id = alice["id"].as_u64().unwrap().to_string();
    safegate_ok(
        week,
        &[
            "alerts",
            "ack",
            &id,
            "--note",
            "spoke to alice",
            "--by",
            "dsl",
        ],
    )
    .await;
    let shown = safegate_ok(week, &["alerts", "show", &id]).await;
    assert!(
        shown.contains("acknowledged by dsl: spoke to alice"),
        "{shown}"
    );
    // People read the short number and the kind in words; a header row names the
    // columns.
    let listed = safegate_ok(week, &["alerts", "list"]).await;
    assert!(
        listed.starts_with("Alert  Status") && listed.contains("#1 "),
        "{listed}"
    );
    let number = shown
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .unwrap()
        .to_owned();
    assert!(number.starts_with('#'), "{shown}");
    let by_number = safegate_ok(week, &["alerts", "show", &number]).await;
    assert_eq!(by_number, shown);
    assert!(shown.contains("how to k1ll myself"), "{shown}");
    safegate_ok(week, &["alerts", "close", &id, "--by", "dsl"]).await;
    let open = safegate_ok(week, &["alerts", "list", "--open", "--json"]).await;
    let open: Vec<serde_json::Value> = serde_json::from_str(&open).unwrap();
    assert_eq!(open.len(), 6);
    assert!(
        !open
            .iter()
            .any(|a| a["id"].as_u64().unwrap().to_string() == id)
    );
}

/// The week's report: every event with its person, time and evidence, nothing from
/// outside the week.
async fn check_report(week: &Week) {
    let out = tempfile::tempdir().unwrap();
    let printed = safegate_ok(
        week,
        &[
            "report",
            "weekly",
            "--week",
            "2026-W47",
            "--out",
            &out.path().display().to_string(),
        ],
    )
    .await;
    assert!(printed.contains("weekly report 2026-W47"), "{printed}");
    let json = std::fs::read_to_string(out.path().join("safegate-report-2026-W47.json")).unwrap();
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let html = std::fs::read_to_string(out.path().join("safegate-report-2026-W47.html")).unwrap();
    for csv in [
        "alerts",
        "searches",
        "sites",
        "blocked",
        "circumvention",
        "staff-core-hours",
        "uncategorised",
    ] {
        assert!(
            out.path()
                .join(format!("safegate-report-2026-W47-{csv}.csv"))
                .exists(),
            "{csv}.csv missing"
        );
    }

    // Nothing from outside the week: frank's two searches and alerts.
    assert!(
        !json.contains("frank"),
        "frank is outside the week:\n{json}"
    );
    assert!(!html.contains("frank"));
    assert!(!json.contains("kys"));

    the_report_holds_the_alerts_and_searches(&report);
    the_report_holds_blocks_circumvention_and_staff_core_hours(&report);
    the_report_holds_sites_days_and_escapes_html(&report, &html);

    // The CSV holds the same searches.
    let csv =
        std::fs::read_to_string(out.path().join("safegate-report-2026-W47-searches.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5, "{csv}");
    assert!(csv.lines().nth(1).unwrap().contains("alice"));
}

/// The report's alerts (the five in the week, with their evidence) and searches
/// (alice's flagged ones first, the failed one too), with the summary's counts.
fn the_report_holds_the_alerts_and_searches(report: &serde_json::Value) {
    // Alerts: the five in the week, with their evidence.
    let alerts = report["alerts"].as_array().unwrap();
    let who: Vec<&str> = alerts.iter().map(|a| a["who"].as_str().unwrap()).collect();
    assert_eq!(alerts.len(), 5, "{who:?}");
    assert_eq!(alerts[0]["who"], "alice");
    assert_eq!(alerts[0]["severity"], "high");
    assert_eq!(alerts[0]["status"], "closed");
    assert!(
        alerts[0]["first_at"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-16 11:00")
    );
    assert_eq!(alerts[0]["evidence"][0]["search"], "how to k1ll myself");
    let summary = &report["summary"];
    assert_eq!(summary["alerts_high"], 1);
    assert_eq!(summary["alerts_medium"], 3);
    assert_eq!(summary["alerts_low"], 1);

    // Searches: alice's flagged ones first (the failed one too), then the rest by user.
    let searches = report["searches"].as_array().unwrap();
    assert_eq!(searches.len(), 4, "{searches:?}");
    assert_eq!(searches[0]["who"], "alice");
    assert_eq!(searches[0]["terms"], "how to k1ll myself");
    assert_eq!(searches[0]["flagged"][0], "self-harm");
    assert!(
        searches[0]["at"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-16 11:00")
    );
    assert_eq!(searches[1]["terms"], "suicide methods");
    assert_eq!(searches[1]["outcome"], "failed");
    assert_eq!(searches[2]["who"], "gina");
    assert!(searches[2]["flagged"].as_array().unwrap().is_empty());
    assert_eq!(summary["flagged_searches"], 2);
}

/// The report's blocked attempts by user and category, bob's circumvention attempts
/// and dave's social network use in core hours, each at its time.
fn the_report_holds_blocks_circumvention_and_staff_core_hours(report: &serde_json::Value) {
    // Blocked attempts by user and category.
    let blocked = report["blocked"].as_array().unwrap();
    let row = |who: &str, category: &str| {
        blocked
            .iter()
            .find(|b| b["who"] == who && b["category"] == category)
            .unwrap_or_else(|| panic!("no blocked row {who} {category}: {blocked:?}"))
    };
    assert_eq!(row("carol", "gambling")["attempts"], 12);
    assert!(
        row("carol", "gambling")["first_at"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-19 14:00")
    );
    assert_eq!(row("bob", "circumvention")["attempts"], 2);
    assert!(!blocked.iter().any(|b| b["who"] == "dave"));

    // Circumvention attempts and staff in core hours.
    let circumvention = report["circumvention"].as_array().unwrap();
    assert_eq!(circumvention.len(), 2);
    assert!(
        circumvention
            .iter()
            .all(|c| c["who"] == "bob" && c["outcome"] == "blocked")
    );
    assert!(
        circumvention[0]["at"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-18 13:00")
    );
    let staff = report["staff_core_hours"].as_array().unwrap();
    assert_eq!(staff.len(), 1);
    assert_eq!(staff[0]["who"], "dave");
    assert_eq!(staff[0]["sites"][0], "social.test");
    assert_eq!(staff[0]["requests"], 1);
    assert!(
        staff[0]["first_at"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-17 10:00")
    );
}

/// The report's sites by role and group, busy uncategorised sites, requests per day,
/// and the HTML escaping gina's hostile search.
fn the_report_holds_sites_days_and_escapes_html(report: &serde_json::Value, html: &str) {
    // Sites by role and group: year6 pupils, year5 pupils, staff.
    let groups: Vec<(String, String)> = report["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["role"].as_str().unwrap().to_owned(),
                g["group"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        groups.contains(&("pupil".into(), "year5".into())),
        "{groups:?}"
    );
    assert!(
        groups.contains(&("staff".into(), String::new())),
        "{groups:?}"
    );
    // Busy uncategorised sites: school.test (harry, erin x2) and the others.
    let uncategorised = report["uncategorised"].as_array().unwrap();
    assert!(
        uncategorised
            .iter()
            .any(|u| u["site"] == "school.test" && u["requests"] == 3)
    );

    // Per day: Monday's five requests, Sunday none.
    assert_eq!(report["days"][0]["requests"], 5);
    assert_eq!(report["days"][6]["requests"], 0);

    // The HTML escapes gina's hostile search.
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!html.contains("<script>"));
}

/// A policy with a locked (illegal content) category, and heavy-use thresholds small
/// enough for a test: a day is heavy from 30 requests or 200 kB down, when that is
/// more than 3 times the user's daily mean over the previous 7 days, once 3 of those
/// days had use.
fn locked_and_heavy_policy() -> String {
    r#"timezone = "Europe/London"
default_role = "pupil"
[categories.illegal]
locked = true
sites = ["illegal.test"]
[roles.pupil]
safesearch = false
youtube = "off"
[roles.staff]
safesearch = false
youtube = "off"
[roles.filter-admin]
[alerts]
heavy_use = { factor = 3.0, min_requests = 30, min_bytes = 200000, baseline_days = 7, min_baseline_days = 3 }
"#
    .to_owned()
}

/// The alerts listed by `safegate alerts list --json`.
async fn listed_alerts(week: &Week) -> (Vec<serde_json::Value>, String) {
    let listed = safegate_ok(week, &["alerts", "list", "--json"]).await;
    (serde_json::from_str(&listed).unwrap(), listed)
}

#[tokio::test]
async fn a_locked_category_attempt_raises_one_high_alert_with_its_record_and_delivers_it() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let week = Week::with(&locked_and_heavy_policy(), &[("lucy", "pupil", "year4")]).await;
        let sg = week.run_at("2026-11-18T10:00:00Z").await;
        let lucy = client(&sg, "lucy", "127.0.0.1");
        // Ordinary browsing first: it raises nothing.
        assert_eq!(get(&lucy, &week.url("school.test", "/maths")).await, ORIGIN);
        // Locked: refused for every role, before any DNS lookup (illegal.test has none).
        assert_eq!(
            get(&lucy, &week.url("illegal.test", "/page?id=7")).await,
            403
        );
        week.webhook.wait_for(1).await;
        week.smtp.wait_for(1).await;
        // Stopped: every record evaluated and every delivery finished.
        stop(sg).await;

        let (alerts, listed) = listed_alerts(&week).await;
        assert_eq!(alerts.len(), 1, "{listed}");
        let alert = &alerts[0];
        assert_eq!(alert["kind"], "locked_category", "{listed}");
        assert_eq!(alert["severity"], "high");
        assert_eq!(alert["who"], "lucy");
        assert_eq!(alert["user"], "lucy");
        assert_eq!(alert["role"], "pupil");
        assert_eq!(alert["group"], "year4");
        assert_eq!(alert["subject"], "illegal");
        assert_eq!(alert["occurrences"], 1);
        assert_eq!(alert["status"], "new");
        assert!(
            alert["summary"].as_str().unwrap().contains("illegal.test"),
            "{listed}"
        );
        let first = alert["first_at_unix_micros"].as_i64().unwrap();
        let at = jiff::Timestamp::from_microsecond(first)
            .unwrap()
            .to_string();
        assert!(at.starts_with("2026-11-18T10:00"), "{at}");
        // The evidence is the blocked request's record.
        let evidence = alert["evidence"].as_array().unwrap();
        assert_eq!(evidence.len(), 1, "{listed}");
        let record = &evidence[0];
        assert_eq!(record["user"], "lucy");
        assert_eq!(record["host"], "illegal.test");
        assert_eq!(record["path"], "/page?id=7");
        assert_eq!(record["outcome"], "Blocked");
        assert_eq!(record["categories"], serde_json::json!(["illegal"]));
        assert_eq!(record["at_unix_micros"].as_i64().unwrap(), first);

        // Delivered once by webhook and once by e-mail, like every alert.
        let hooks = week.webhook.bodies();
        assert_eq!(hooks.len(), 1, "{hooks:?}");
        let hook: serde_json::Value = serde_json::from_str(&hooks[0]).unwrap();
        assert_eq!(hook["source"], "safegate");
        assert_eq!(hook["alert"]["id"], alert["id"]);
        assert_eq!(hook["alert"]["kind"], "locked_category");
        assert_eq!(hook["alert"]["severity"], "high");
        let mails = week.smtp.mails();
        assert_eq!(mails.len(), 1, "{mails:?}");
        assert_eq!(mails[0].to, ["<dsl@school.test>"]);
        assert!(
            mails[0].data.contains("HIGH")
                && mails[0].data.contains("Illegal content attempted (lucy)"),
            "{}",
            mails[0].data
        );
    })
    .await
    .expect("the locked-category check did not finish in time");
}

/// `user` makes `n` ordinary requests (the origin answers 404 "no such route", 13
/// bytes).
async fn browse(safegate: &SafeGate, week: &Week, user: &str, n: usize) {
    let user_client = client(safegate, user, "127.0.0.1");
    for i in 0..n {
        assert_eq!(
            get(
                &user_client,
                &week.url("school.test", &format!("/page/{i}"))
            )
            .await,
            ORIGIN
        );
    }
}

/// `user` downloads files of these sizes, in order.
async fn download(safegate: &SafeGate, week: &Week, user: &str, sizes: &[usize]) {
    let user_client = client(safegate, user, "127.0.0.1");
    for size in sizes {
        assert_eq!(
            get(
                &user_client,
                &week.url("school.test", &format!("/bytes/{size}"))
            )
            .await,
            200
        );
    }
}

/// Days since 1970-01-01 of a UTC date (Europe/London is UTC in November).
fn day_number(date: &str) -> i32 {
    (unix(&format!("{date}T00:00:00Z")) / 86_400) as i32
}

#[tokio::test]
async fn heavy_use_is_measured_against_each_users_own_baseline_across_runs() {
    tokio::time::timeout(Duration::from_secs(180), async {
        let week = Week::with(
            &locked_and_heavy_policy(),
            &[
                ("henry", "pupil", "year5"),
                ("nina", "pupil", "year5"),
                ("owen", "pupil", "year5"),
                ("bea", "pupil", "year6"),
            ],
        )
        .await;
        // Three ordinary days, one SafeGate run each on the same data directory:
        // henry makes 4 requests a day, nina 25, bea downloads two 1 kB files; owen only
        // starts on Wednesday.
        for at in [
            "2026-11-16T10:00:00Z",
            "2026-11-17T10:00:00Z",
            "2026-11-18T10:00:00Z",
        ] {
            let sg = week.run_at(at).await;
            browse(&sg, &week, "henry", 4).await;
            browse(&sg, &week, "nina", 25).await;
            download(&sg, &week, "bea", &[1000, 1000]).await;
            if at.starts_with("2026-11-18") {
                browse(&sg, &week, "owen", 4).await;
            }
            stop(sg).await;
        }
        // The days the engine counted (school-local days in the store's alert_usage).
        let monday = day_number("2026-11-16");
        {
            let store = safegate_store::Store::open(&week.data_dir()).unwrap();
            let days = |user: &str| store.usage(user, monday - 7, monday + 7).unwrap();
            let each = |requests: u64, bytes: u64| {
                (0..3)
                    .map(|i| (monday + i, requests, bytes))
                    .collect::<Vec<_>>()
            };
            assert_eq!(days("henry"), each(4, 4 * 13));
            assert_eq!(days("nina"), each(25, 25 * 13));
            assert_eq!(days("bea"), each(2, 2000));
            assert_eq!(days("owen"), [(monday + 2, 4, 4 * 13)]);
        }
        let (alerts, listed) = listed_alerts(&week).await;
        assert!(alerts.is_empty(), "ordinary days raise nothing: {listed}");

        // Thursday: henry and owen make 30 requests (the minimum), far above henry's
        // mean (12 / 7 days, 1.7) but owen has one day of history, not three; nina
        // makes 30 too, which is within 3 x her mean (75 / 7 days, 10.7); bea
        // downloads 1 kB and then 300 kB (her mean: 857 B).
        let sg = week.run_at("2026-11-19T10:00:00Z").await;
        browse(&sg, &week, "henry", 30).await;
        browse(&sg, &week, "nina", 30).await;
        browse(&sg, &week, "owen", 30).await;
        download(&sg, &week, "bea", &[1000, 300_000]).await;
        week.webhook.wait_for(2).await;
        week.smtp.wait_for(2).await;
        assert_eq!(
            crate::auth::metric(&sg, "safegate_alerts_total{kind=\"heavy_use\"}").await,
            2.0
        );
        stop(sg).await;

        let (alerts, listed) = listed_alerts(&week).await;
        assert_eq!(alerts.len(), 2, "{listed}");
        let of = |who: &str| {
            alerts
                .iter()
                .find(|a| a["who"] == who)
                .unwrap_or_else(|| panic!("no alert for {who}: {listed}"))
        };
        for who in ["henry", "bea"] {
            let alert = of(who);
            assert_eq!(alert["kind"], "heavy_use", "{listed}");
            assert_eq!(alert["severity"], "low");
            assert_eq!(alert["user"], who);
            assert_eq!(alert["role"], "pupil");
            assert_eq!(alert["subject"], "2026-11-19");
            assert_eq!(alert["occurrences"], 1);
            let first = alert["first_at_unix_micros"].as_i64().unwrap();
            let at = jiff::Timestamp::from_microsecond(first)
                .unwrap()
                .to_string();
            assert!(at.starts_with("2026-11-19T10:0"), "{who} at {at}");
            // The evidence: the request that made the day heavy.
            let evidence = alert["evidence"].as_array().unwrap();
            assert_eq!(evidence.len(), 1, "{listed}");
            assert_eq!(evidence[0]["user"], who);
        }
        assert_eq!(
            of("henry")["summary"],
            "30 requests and 390 B today, against a daily mean of 1.7 requests and 22 B \
             over the previous 7 days (requests more than 3x the mean)"
        );
        assert_eq!(of("henry")["evidence"][0]["path"], "/page/29");
        assert_eq!(
            of("bea")["summary"],
            "2 requests and 301.0 kB today, against a daily mean of 0.9 requests and 857 B \
             over the previous 7 days (data more than 3x the mean)"
        );
        assert_eq!(of("bea")["evidence"][0]["path"], "/bytes/300000");
        for quiet in ["nina", "owen"] {
            assert!(
                !alerts.iter().any(|a| a["who"] == quiet),
                "{quiet}: {listed}"
            );
        }
        // Delivered like the others (min_severity is low in these runs).
        let mails = week.smtp.mails();
        assert_eq!(mails.len(), 2, "{mails:?}");
        for who in ["henry", "bea"] {
            assert!(
                mails
                    .iter()
                    .any(|m| m.data.contains(&format!("Unusually heavy use ({who})"))),
                "{mails:?}"
            );
        }
        assert_eq!(week.webhook.bodies().len(), 2);
    })
    .await
    .expect("the heavy-use days did not finish in time");
}
