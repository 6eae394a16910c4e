//! A school day through the real proxy, to measure whether the alerts are ones a
//! designated safeguarding lead can trust (issue 26): shared year-group log-ins on
//! many computers (loopback source addresses 127.0.x.y, named by a `[devices]` map
//! and a dnsmasq leases file), individual staff log-ins, at least 15 planted events
//! of every alert kind (misspelt and non-English phrasings among them) and more than
//! 100 benign but hard searches and pages (alarming words in innocent contexts,
//! teachers' lesson topics, set texts, support sites, idioms).
//!
//! Every planted event must be caught (recall 100 %), and at most 5 % of the alerts
//! may be false (not a planted event). The figures are printed.
//!
//! Two runs on one data directory: the day before (a light baseline for the
//! heavy-use computers and people), then the day itself (Thursday 2026-11-19,
//! 10:00 UTC = Europe/London, in core hours).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::alerts::{Week, client, get, repo_file, safegate_ok, stop};
use crate::kit::process::SafeGate;

/// The whole day, both runs.
const DAY_LIMIT: Duration = Duration::from_secs(300);

/// How many of each planted kind (the issue asks for at least 15).
const EACH: usize = 15;

/// Requests that make a day heavy, and the baseline the day before.
const HEAVY: usize = 16;
const BASELINE: usize = 2;

fn policy(dir: &std::path::Path) -> String {
    std::fs::write(
        dir.join("self-harm-pl.txt"),
        "# Polish\nchcę umrzeć\nzabić się\nchcę się zabić\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("self-harm-es.txt"),
        "# Spanish\nquiero morir\nquiero matarme\n",
    )
    .unwrap();
    let list = |name: &str, file: &str, severity: &str| {
        format!(
            "[[alerts.phrases]]\nlist = \"{name}\"\npath = \"{}\"\nseverity = \"{severity}\"\n\
             roles = {{ staff = \"low\" }}\n",
            repo_file(&format!("blocklists/phrases/{file}"))
        )
    };
    let mut text = format!(
        r#"timezone = "Europe/London"
default_role = "pupil"
[categories.gambling]
sites = ["bet.test"]
[categories.social-networking]
sites = ["social.test"]
[categories.circumvention]
sites = ["vpn.test"]
[categories.illegal]
locked = true
sites = ["illegal.test"]
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
shared_groups = ["year3", "year4", "year5", "year6"]
teaching_contexts = "{}"
support_sites = ["childline.org.uk", "samaritans.org", "papyrus-uk.org", "kooth.com"]
repeated_blocks = {{ attempts = 5, minutes = 5 }}
staff_social = {{ categories = ["social-networking"], window = "core-hours" }}
heavy_use = {{ factor = 3.0, min_requests = {HEAVY}, min_bytes = 1000000000000, baseline_days = 1, min_baseline_days = 1 }}
"#,
        repo_file("blocklists/phrases/teaching-contexts.txt")
    );
    for (name, file, severity) in [
        ("self-harm", "self-harm.txt", "high"),
        ("extremism", "extremism.txt", "high"),
        ("bullying", "bullying.txt", "medium"),
        ("sexual-content", "sexual-content.txt", "medium"),
        ("weapons", "weapons.txt", "high"),
        ("drugs", "drugs.txt", "medium"),
    ] {
        text.push_str(&list(name, file, severity));
    }
    for (name, file) in [
        ("self-harm-pl", "self-harm-pl.txt"),
        ("self-harm-es", "self-harm-es.txt"),
    ] {
        text.push_str(&format!(
            "[[alerts.phrases]]\nlist = \"{name}\"\npath = \"{}\"\nseverity = \"high\"\n",
            dir.join(file).display()
        ));
    }
    text
}

/// A computer: a loopback source address and, for some, a name.
#[derive(Clone)]
struct Computer {
    address: String,
    name: Option<String>,
}

impl Computer {
    /// How an alert about a shared log-in on this computer names it.
    fn who(&self, user: &str) -> String {
        match &self.name {
            Some(name) => format!("{user} on {name} ({})", self.address),
            None => format!("{user} on {}", self.address),
        }
    }
}

/// Computers 127.0.`room`.1..=n: even ones named in `[devices]`, every third in the
/// leases file (the map wins where both know it), the rest unnamed.
fn computers(room: u8, n: u8) -> Vec<Computer> {
    (1..=n)
        .map(|i| {
            let name = if i % 2 == 0 {
                Some(format!("R{room}-PC{i:02}"))
            } else if i % 3 == 0 {
                Some(format!("LEASE-R{room}-{i:02}"))
            } else {
                None
            };
            Computer {
                address: format!("127.0.{room}.{i}"),
                name,
            }
        })
        .collect()
}

/// The `[devices]` sets for these computers, and the leases file's text.
fn devices(all: &[Computer], leases: &std::path::Path) -> Vec<String> {
    let mut map = Vec::new();
    let mut file = String::new();
    for c in all {
        match &c.name {
            Some(name) if name.starts_with("LEASE") => file.push_str(&format!(
                "1765100000 02:00:00:00:00:01 {} {name} *\n",
                c.address
            )),
            Some(name) => map.push(format!("\"{}\" = \"{name}\"", c.address)),
            None => {}
        }
    }
    std::fs::write(leases, file).unwrap();
    vec![
        format!("devices.names={{ {} }}", map.join(", ")),
        format!("devices.leases={:?}", leases.display().to_string()),
    ]
}

/// Visit records carry the computer's name as it was known at the time, and the
/// weekly report shows a shared log-in per computer (issue 21).
async fn records_and_report_name_the_computer(day: &Day) {
    let listed = safegate_ok(&day.week, &["log", "query", "--user", "year3", "--json"]).await;
    let records: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
    assert!(records.len() >= 40, "{} records", records.len());
    for computer in &day.rooms[0] {
        let theirs: Vec<&serde_json::Value> = records
            .iter()
            .filter(|r| r["client"] == computer.address.as_str())
            .collect();
        assert!(!theirs.is_empty(), "no records from {}", computer.address);
        for record in theirs {
            assert_eq!(
                record["computer"].as_str(),
                computer.name.as_deref(),
                "{record}"
            );
        }
    }
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().display().to_string();
    safegate_ok(
        &day.week,
        &["report", "weekly", "--week", "2026-W47", "--out", &dir],
    )
    .await;
    let json = std::fs::read_to_string(out.path().join("safegate-report-2026-W47.json")).unwrap();
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let searches = report["searches"].as_array().unwrap();
    // Room 3's computers searched as year3: one row per computer, named where known.
    let named = &day.rooms[0][1];
    let row = searches
        .iter()
        .find(|s| s["computer"] == "R3-PC02 (127.0.3.2)")
        .unwrap_or_else(|| panic!("no search from R3-PC02: {searches:?}"));
    assert_eq!(row["who"].as_str(), Some(named.who("year3").as_str()));
    let unnamed = &day.rooms[0][0];
    assert!(
        searches
            .iter()
            .any(|s| s["who"].as_str() == Some(unnamed.who("year3").as_str())
                && s["computer"] == "127.0.3.1"),
        "no search from 127.0.3.1"
    );
}

/// One planted event: the alert it must raise.
#[derive(Debug, Clone)]
struct Planted {
    kind: &'static str,
    who: String,
    subject: Option<String>,
}

fn planted(kind: &'static str, who: String, subject: Option<&str>) -> Planted {
    Planted {
        kind,
        who,
        subject: subject.map(str::to_owned),
    }
}

/// A search URL on the test origin.
fn search(week: &Week, terms: &str) -> String {
    let q: String = terms
        .bytes()
        .map(|b| match b {
            b' ' => "+".to_owned(),
            b if b.is_ascii_alphanumeric() => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect();
    week.url("www.google.com", &format!("/search?q={q}"))
}

/// Misspelt, first-person, non-English and plain phrases the DSL must see.
const PLANTED_SEARCHES: [(&str, &str); 17] = [
    ("how to commit sucide", "self-harm"),
    ("i want to die", "self-harm"),
    ("selfharm tips", "self-harm"),
    ("cuting myself with a razor", "self-harm"),
    ("painles death pills", "self-harm"),
    ("suicidal and alone", "self-harm"),
    ("how to join the calipate", "extremism"),
    ("how to make a bomb at home", "extremism"),
    ("everyone hates you loser", "bullying"),
    ("send nudes snapchat", "sexual-content"),
    ("zombi knife for sale", "weapons"),
    ("where to buy drugs near me", "drugs"),
    ("chcę umrzeć", "self-harm-pl"),
    ("chce sie zabic", "self-harm-pl"),
    ("quiero morir", "self-harm-es"),
    ("nobody likes you", "bullying"),
    ("ways to die quickly", "self-harm"),
];

/// Hard but innocent searches: pupils' homework, idioms, teachers' lessons.
const BENIGN_SEARCHES: [&str; 70] = [
    "killing time before the bus",
    "this homework is killing me",
    "dying my hair purple",
    "im dying to see the new film",
    "romeo and juliet suicide scene",
    "why does romeo commit suicide",
    "lady macbeth suicide macbeth act 5",
    "of mice and men how does curley's wife die",
    "an inspector calls eva smith suicide",
    "how to get high marks in gcse maths",
    "how to get high scores on times tables rock stars",
    "bath bomb recipe",
    "atomic bomb hiroshima facts",
    "shooting stars tonight",
    "knife and fork clipart",
    "how to hold a knife and fork",
    "suicide squad cast",
    "anti bullying week 2026",
    "childline phone number",
    "samaritans opening hours",
    "drug education worksheet",
    "knife crime awareness assembly",
    "county lines awareness",
    "photo shoot ideas",
    "the hunger games book",
    "fractions worksheet year 6",
    "volcano eruption pompeii",
    "world war 2 blitz",
    "plants that kill insects",
    "how do volcanoes kill people",
    "the boy in the striped pyjamas ending",
    "dead poets society",
    "science of the dead sea",
    "how to draw a dragon",
    "cut and paste on a chromebook",
    "paper cutting snowflakes",
    "how to cut a mango",
    "harm of plastic in oceans",
    "self portrait art lesson",
    "self raising flour recipe",
    "weed killer for the school garden",
    "high street shops history",
    "spice girls songs",
    "lean meat protein",
    "grass snake facts",
    "guns of the civil war",
    "bullet journal ideas",
    "bomb disposal robot",
    "suicidal behaviour in lemmings myth",
    "pupils that bully why",
    "nude colour tights",
    "censorship and pornography laws essay",
    "anime drawing tutorial",
    "race for life 5k",
    "wars of the roses",
    "revolution in france 1789",
    "kill bill cast",
    "kill a mockingbird summary",
    "to kill a mockingbird themes",
    "to die for song lyrics",
    "die hard christmas film",
    "dice game maths",
    "overdose of vitamin c is it possible",
    "the great gatsby ending",
    "lord of the flies piggy death",
    "blood brothers mickey dies",
    "jekyll and hyde murder of carew",
    "a christmas carol death of tiny tim",
    "hamlet to be or not to be",
    "othello desdemona death",
];

/// Teachers' lesson preparation: topic words with a teaching context.
const STAFF_BENIGN: [&str; 20] = [
    "self harm lesson plan ks3",
    "suicide prevention pshe ks4",
    "cyberbullying pshe lesson",
    "sexting rse lesson plan",
    "county lines lesson plan",
    "extremism prevent duty training",
    "knife crime ks3 lesson",
    "suicide awareness assembly",
    "self harm safeguarding training",
    "nudes sharing ks4 rshe",
    "drugs and alcohol pshe ks3 worksheet",
    "radicalisation lesson ideas ks4",
    "race war propaganda gcse history essay",
    "online grooming ks2 lesson",
    "bullying worksheet ks2",
    "eating disorders pshe ks4",
    "macbeth suicide revision",
    "great replacement conspiracy a level essay",
    "sexting teaching resources",
    "how to talk about self harm with pupils nspcc",
];

/// Pages with alarming words in their addresses: news, support sites, resources.
const BENIGN_PAGES: [(&str, &str); 16] = [
    ("news.test", "/2026/knife-crime-awareness-week"),
    ("news.test", "/sport/striker-kills-off-the-game"),
    ("news.test", "/science/how-volcanoes-kill"),
    ("news.test", "/history/atomic-bomb-hiroshima"),
    ("news.test", "/books/romeo-and-juliet-suicide-explained"),
    (
        "www.childline.org.uk",
        "/info-advice/your-feelings/self-harm/",
    ),
    (
        "www.childline.org.uk",
        "/info-advice/your-feelings/feelings-emotions/suicidal-feelings/",
    ),
    (
        "www.samaritans.org",
        "/how-we-can-help/if-youre-having-difficult-time/if-youre-having-suicidal-thoughts/",
    ),
    ("www.papyrus-uk.org", "/suicide-prevention/"),
    ("www.kooth.com", "/self-harm-want-to-die-support"),
    ("school.test", "/pshe/ks3-self-harm-lesson-plan.pdf"),
    ("school.test", "/english/macbeth-suicide-essay"),
    ("news.test", "/weather/storm-kills-power"),
    ("news.test", "/food/bath-bomb-recipes"),
    ("school.test", "/science/drug-education-ks3"),
    ("news.test", "/2026/anti-bullying-week"),
];

struct Day {
    /// Holds the extra phrase lists and the leases file.
    _dir: tempfile::TempDir,
    week: Week,
    sets: Vec<String>,
    rooms: Vec<Vec<Computer>>,
}

/// Year groups share one log-in per room of computers.
const YEARS: [&str; 4] = ["year3", "year4", "year5", "year6"];

async fn set_up() -> Day {
    let mut users: Vec<(String, &str, &str)> = YEARS
        .iter()
        .map(|y| ((*y).to_owned(), "pupil", *y))
        .collect();
    users.push(("library".to_owned(), "pupil", ""));
    for i in 1..=EACH {
        users.push((format!("staff{i:02}"), "staff", ""));
    }
    let dir = tempfile::tempdir().unwrap();
    let policy = policy(dir.path());
    let refs: Vec<(&str, &str, &str)> =
        users.iter().map(|(n, r, g)| (n.as_str(), *r, *g)).collect();
    let week = Week::with(&policy, &refs).await;
    // The library's log-in is shared too, marked on the user (not by its group).
    crate::users_cli::users_ok(
        &week.data_dir(),
        &["update", "library", "--shared", "yes"],
        "",
    )
    .await;
    let rooms: Vec<Vec<Computer>> = (3..=7).map(|room| computers(room, 40)).collect();
    let all: Vec<Computer> = rooms.iter().flatten().cloned().collect();
    let mut sets = devices(&all, &dir.path().join("dnsmasq.leases"));
    // The shipped flush interval: batches of a second (the week's 100 ms would make
    // ten times as many batches for the alert engine's queue).
    sets.push("store.flush_interval=\"1s\"".to_owned());
    Day {
        _dir: dir,
        week,
        sets,
        rooms,
    }
}

/// The log-in each room's computers use: year3..year6, then the library.
fn room_login(room: usize) -> &'static str {
    ["year3", "year4", "year5", "year6", "library"][room]
}

/// The day before: the heavy-use computers and staff browse lightly.
async fn day_before(day: &Day) {
    let sg = day
        .week
        .run_at_with("2026-11-18T10:00:00Z", &day.sets)
        .await;
    for i in 0..EACH {
        let (user, address) = heavy_user(day, i);
        let c = client(&sg, &user, &address);
        for n in 0..BASELINE {
            get(&c, &day.week.url("school.test", &format!("/maths/{n}"))).await;
        }
    }
    stop(sg).await;
}

/// Heavy user `i`: shared log-ins' computers in room 4 (year5) and staff.
fn heavy_user(day: &Day, i: usize) -> (String, String) {
    if i < 10 {
        ("year5".to_owned(), day.rooms[2][30 + i].address.clone())
    } else {
        (format!("staff{:02}", i + 1), format!("127.0.9.{}", i + 1))
    }
}

#[tokio::test]
async fn a_school_day_catches_every_planted_event_with_few_false_alerts() {
    tokio::time::timeout(DAY_LIMIT, async {
        let day = set_up().await;
        day_before(&day).await;
        eprintln!("school day: the day before is done");
        let (planted, benign) = the_day(&day).await;
        let listed = safegate_ok(&day.week, &["alerts", "list", "--json"]).await;
        let alerts: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
        score(&planted, benign, &alerts);
        evidence_is_the_computers_own(&alerts);
        records_and_report_name_the_computer(&day).await;
    })
    .await
    .expect("the school day took too long");
}

/// The day itself; returns the planted events and the number of benign requests.
async fn the_day(day: &Day) -> (Vec<Planted>, usize) {
    let week = &day.week;
    let sg = week.run_at_with("2026-11-19T10:00:00Z", &day.sets).await;
    let mut planted_events = Vec::new();
    let mut benign = 0;
    // Every shared log-in on every computer of its room: ordinary browsing (a class
    // at work: the two-computer rule must stay quiet), with benign hard searches.
    for (r, room) in day.rooms.iter().enumerate() {
        for (i, computer) in room.iter().enumerate() {
            let c = client(&sg, room_login(r), &computer.address);
            get(&c, &week.url("school.test", "/homework")).await;
            if r < 2 {
                let terms = BENIGN_SEARCHES[(r * room.len() + i) % BENIGN_SEARCHES.len()];
                get(&c, &search(week, terms)).await;
                benign += 1;
            }
        }
    }
    for (i, (host, path)) in BENIGN_PAGES.iter().enumerate() {
        let computer = &day.rooms[2][i];
        get(
            &client(&sg, "year5", &computer.address),
            &week.url(host, path),
        )
        .await;
        benign += 1;
    }
    // Staff preparing lessons.
    for (i, terms) in STAFF_BENIGN.iter().enumerate() {
        let c = client(&sg, &format!("staff{:02}", i % EACH + 1), "127.0.9.200");
        get(&c, &search(week, terms)).await;
        benign += 1;
    }
    eprintln!("school day: {benign} benign sent");
    plant_phrases(day, &sg, &mut planted_events).await;
    plant_blocks(day, &sg, &mut planted_events).await;
    plant_people(day, &sg, &mut planted_events).await;
    eprintln!(
        "school day: requests sent, waiting for {} alerts",
        planted_events.len()
    );
    // Bounded: a missed event shows in the figures instead of a time-out.
    let _ = tokio::time::timeout(
        Duration::from_secs(30),
        week.webhook.wait_for(planted_events.len()),
    )
    .await;
    let dropped = crate::auth::metric(&sg, "safegate_visit_log_observer_dropped_total").await;
    eprintln!("school day: records the alert engine did not see: {dropped}");
    stop(sg).await;
    assert_eq!(dropped, 0.0, "the alert engine fell behind");
    (planted_events, benign)
}

/// Safeguarding phrases: one per computer of room 6 (year6), plus a staff member's
/// first-person search (high even for staff).
async fn plant_phrases(day: &Day, sg: &SafeGate, out: &mut Vec<Planted>) {
    for (i, (terms, list)) in PLANTED_SEARCHES.iter().enumerate() {
        let computer = &day.rooms[3][i];
        let c = client(sg, "year6", &computer.address);
        get(&c, &search(&day.week, terms)).await;
        out.push(planted(
            "safeguarding_phrase",
            computer.who("year6"),
            Some(list),
        ));
    }
    let c = client(sg, "staff03", "127.0.9.3");
    get(&c, &search(&day.week, "i want to kill myself")).await;
    out.push(planted(
        "safeguarding_phrase",
        "staff03".into(),
        Some("self-harm"),
    ));
}

/// Repeated blocks, circumvention and locked categories, each on its own computer
/// of the year4 and library rooms; other computers of the same log-in block a few
/// times each (never enough on one computer).
async fn plant_blocks(day: &Day, sg: &SafeGate, out: &mut Vec<Planted>) {
    let week = &day.week;
    for i in 0..EACH {
        let computer = &day.rooms[1][i];
        let c = client(sg, "year4", &computer.address);
        for n in 0..5 {
            assert_eq!(
                get(&c, &week.url("bet.test", &format!("/odds/{n}"))).await,
                403
            );
        }
        out.push(planted("repeated_blocks", computer.who("year4"), None));
        // Two blocks on each of two other computers: no alert.
        let other = &day.rooms[1][20 + i];
        let c = client(sg, "year4", &other.address);
        for n in 0..2 {
            get(&c, &week.url("bet.test", &format!("/spin/{n}"))).await;
        }
    }
    for i in 0..EACH {
        let computer = &day.rooms[4][i];
        let c = client(sg, "library", &computer.address);
        assert_eq!(get(&c, &week.url("vpn.test", "/download")).await, 403);
        out.push(planted("circumvention", computer.who("library"), None));
        let computer = &day.rooms[4][20 + i];
        let c = client(sg, "library", &computer.address);
        get(&c, &week.url("illegal.test", "/")).await;
        out.push(planted(
            "locked_category",
            computer.who("library"),
            Some("illegal"),
        ));
    }
}

/// Staff on two computers, staff social networking in core hours, heavy use.
async fn plant_people(day: &Day, sg: &SafeGate, out: &mut Vec<Planted>) {
    let week = &day.week;
    for i in 1..=EACH {
        let user = format!("staff{i:02}");
        let first = client(sg, &user, &format!("127.0.10.{i}"));
        get(&first, &week.url("school.test", "/staffroom")).await;
        let second = client(sg, &user, &format!("127.0.11.{i}"));
        get(&second, &week.url("school.test", "/register")).await;
        out.push(planted("concurrent_login", user.clone(), None));
        get(&second, &week.url("social.test", "/feed")).await;
        out.push(planted(
            "staff_social_core_hours",
            user,
            Some("social-networking"),
        ));
    }
    for i in 0..EACH {
        let (user, address) = heavy_user(day, i);
        let c = client(sg, &user, &address);
        for n in 0..HEAVY {
            get(&c, &week.url("school.test", &format!("/reading/{n}"))).await;
        }
        let who = if user == "year5" {
            day.rooms[2][30 + i].who("year5")
        } else {
            user
        };
        out.push(planted("heavy_use", who, None));
    }
}

fn matches(p: &Planted, a: &serde_json::Value) -> bool {
    a["kind"] == p.kind
        && a["who"] == p.who.as_str()
        && p.subject.as_deref().is_none_or(|s| a["subject"] == s)
}

/// Recall and false alerts, printed and asserted.
fn score(planted: &[Planted], benign: usize, alerts: &[serde_json::Value]) {
    let missed: Vec<&Planted> = planted
        .iter()
        .filter(|p| !alerts.iter().any(|a| matches(p, a)))
        .collect();
    let false_alerts: Vec<&serde_json::Value> = alerts
        .iter()
        .filter(|a| !planted.iter().any(|p| matches(p, a)))
        .collect();
    let mut per_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for p in planted {
        *per_kind.entry(p.kind).or_default() += 1;
    }
    let caught = planted.len() - missed.len();
    let false_share = false_alerts.len() as f64 / alerts.len().max(1) as f64;
    println!(
        "school day: planted {} {per_kind:?}, caught {caught} (recall {:.1} %), \
         benign searches and pages {benign}, alerts {}, false {} ({:.1} %)",
        planted.len(),
        100.0 * caught as f64 / planted.len() as f64,
        alerts.len(),
        false_alerts.len(),
        100.0 * false_share
    );
    for a in &false_alerts {
        println!(
            "false: {} {} {} {}",
            a["kind"], a["severity"], a["who"], a["summary"]
        );
    }
    for p in &missed {
        println!("missed: {} {} {:?}", p.kind, p.who, p.subject);
    }
    for kind in per_kind.values() {
        assert!(*kind >= EACH);
    }
    assert!(benign >= 100, "{benign} benign");
    assert!(missed.is_empty(), "missed: {missed:#?}");
    assert!(false_share <= 0.05, "{} false alerts", false_alerts.len());
}

/// The repeated-blocks evidence and first time are the computer's own; the
/// two-computer alert carries the role and both computers' requests.
fn evidence_is_the_computers_own(alerts: &[serde_json::Value]) {
    let mut repeated = 0;
    for a in alerts.iter().filter(|a| a["kind"] == "repeated_blocks") {
        let client = a["client"].as_str().unwrap();
        let evidence = a["evidence"].as_array().unwrap();
        assert_eq!(evidence.len(), 5, "{a}");
        assert!(evidence.iter().all(|r| r["client"] == client), "{a}");
        assert_eq!(a["first_at_unix_micros"], evidence[0]["at_unix_micros"]);
        repeated += 1;
    }
    assert_eq!(repeated, EACH);
    for a in alerts.iter().filter(|a| a["kind"] == "concurrent_login") {
        assert_eq!(a["role"], "staff", "{a}");
        let evidence = a["evidence"].as_array().unwrap();
        let mut clients: Vec<&str> = evidence
            .iter()
            .map(|r| r["client"].as_str().unwrap())
            .collect();
        clients.dedup();
        clients.sort_unstable();
        clients.dedup();
        assert!(clients.len() >= 2, "{a}");
    }
    // A named computer reads "year6 on R6-PC02 (127.0.6.2)".
    assert!(
        alerts
            .iter()
            .any(|a| a["who"] == "year6 on R6-PC02 (127.0.6.2)" && a["computer"] == "R6-PC02"),
        "no alert names R6-PC02"
    );
    assert!(
        alerts
            .iter()
            .any(|a| a["who"] == "year4 on LEASE-R4-03 (127.0.4.3)"),
        "no alert names a computer from the leases file"
    );
}
