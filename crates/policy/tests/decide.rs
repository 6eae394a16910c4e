//! Decision order, windows, unblocks, groups and file rules, on small temporary lists.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use jiff::Timestamp;
use safegate_policy::{
    Decision, Policy, RequestTarget, Role, SafeSearch, Snapshot, Subject, Verdict, YouTubeMode,
};

/// Writes the small lists and `policy` into a temporary folder and loads it.
fn load(policy: &str) -> (tempfile::TempDir, Snapshot) {
    let dir = tempfile::tempdir().unwrap();
    let lists = dir.path().join("lists");
    std::fs::create_dir(&lists).unwrap();
    let write = |name: &str, text: &str| std::fs::write(lists.join(name), text).unwrap();
    write("illegal.txt", "# locked\nillegal.test\n");
    write(
        "gambling.txt",
        "# gambling\nbet.test\ncasino.test\nboth.test\n",
    );
    write("social.txt", "social.test\nchat.test\nboth.test\n");
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, policy).unwrap();
    let snapshot = Policy::load(&path).unwrap_or_else(|e| panic!("{e}"));
    (dir, snapshot)
}

const BASE: &str = r#"
[categories.illegal]
locked = true
sources = [{ format = "domains", path = "lists/illegal.txt" }]
[categories.gambling]
sources = [{ format = "domains", path = "lists/gambling.txt" }]
[categories.social]
sources = [{ format = "domains", path = "lists/social.txt" }]
sites = ["video.test/shorts"]

[windows.core-hours]
days = ["mon-fri"]
times = ["08:30-15:30"]
[windows.term-lessons]
days = ["mon-fri"]
times = ["09:00-12:00", "13:00-15:00"]
terms_only = true

[calendar]
terms = [{ from = "2026-09-02", until = "2026-12-18" }]
holidays = [{ from = "2026-10-26", until = "2026-10-30" }]

[global]
allow = ["school.test", "illegal.test/allowed"]
deny = ["globally-denied.test"]

[roles.pupil]
block = ["gambling", "social"]
allow = ["casino.test/maths-lesson"]
deny = ["denied.test", { site = "games.test", windows = ["term-lessons"] }]
youtube = "strict"

[[roles.pupil.files]]
name = "executables"
extensions = ["exe", ".MSI"]
content_types = ["application/x-msdownload"]

[roles.pupil.groups.year6]
lift = ["social"]
block = [{ category = "social", windows = ["core-hours"] }]
allow = ["scratch.test"]
deny = ["year6-denied.test"]
youtube = "moderate"

[[roles.pupil.groups.year6.files]]
name = "executables"
extensions = ["exe"]

[roles.pupil.groups.year2]
block = ["social"]

[roles.staff]
block = ["gambling", { category = "social", windows = ["core-hours"] }]
safesearch = false
youtube = "off"

[roles.filter-admin]
"#;

fn policy_with(extra: &str) -> String {
    format!("{BASE}\n{extra}")
}

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

/// A Wednesday in term, 10:00 BST.
fn wednesday_morning() -> Timestamp {
    at("2026-09-16T09:00:00Z")
}

fn pupil() -> Subject<'static> {
    Subject {
        role: Role::Pupil,
        group: None,
        user: Some("ada"),
    }
}

fn year6() -> Subject<'static> {
    Subject {
        role: Role::Pupil,
        group: Some("year6"),
        user: Some("bob"),
    }
}

fn staff() -> Subject<'static> {
    Subject {
        role: Role::Staff,
        group: None,
        user: Some("mr.jones"),
    }
}

fn decide(s: &Snapshot, subject: Subject<'_>, url: &str, now: Timestamp) -> Decision {
    let target = RequestTarget::parse_url(url).unwrap();
    s.decide(&subject, &target, now)
}

fn rule(s: &Snapshot, subject: Subject<'_>, url: &str, now: Timestamp) -> String {
    decide(s, subject, url, now).rule
}

#[test]
fn snapshot_is_shareable() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Snapshot>();
    assert_send_sync::<std::sync::Arc<Snapshot>>();
}

#[test]
fn locked_beats_allow_list_and_unblock() {
    let (_dir, s) = load(&policy_with(
        r#"
[[unblocks]]
site = "illegal.test"
role = "pupil"
until = "2099-01-01 00:00"
"#,
    ));
    let now = wednesday_morning();
    let d = decide(&s, pupil(), "http://illegal.test/allowed/page", now);
    assert_eq!(d.verdict, Verdict::Block);
    assert_eq!(d.rule, "locked:illegal");
    assert_eq!(d.categories, vec!["illegal"]);
    assert!(d.reason.contains("illegal"), "{}", d.reason);
    // Also for staff and via a subdomain.
    assert_eq!(
        rule(&s, staff(), "https://www.illegal.test/", now),
        "locked:illegal"
    );
}

#[test]
fn allow_lists_beat_categories_and_deny_lists() {
    let (_dir, s) = load(BASE);
    let now = wednesday_morning();
    // Role allow-list on a URL inside a blocked category.
    let d = decide(
        &s,
        pupil(),
        "http://casino.test/maths-lesson/probability",
        now,
    );
    assert_eq!(
        (d.verdict, d.rule.as_str()),
        (Verdict::Allow, "allow:role:pupil")
    );
    assert_eq!(d.categories, vec!["gambling"]);
    // The rest of that site stays blocked.
    assert_eq!(
        rule(&s, pupil(), "http://casino.test/poker", now),
        "category:pupil:gambling"
    );
    // Global allow-list.
    assert_eq!(
        rule(&s, pupil(), "http://www.school.test/", now),
        "allow:global"
    );
    // A group's allow-list, and the group still has the role's allow-list.
    assert_eq!(
        rule(&s, year6(), "http://scratch.test/", now),
        "allow:group:year6"
    );
    assert_eq!(
        rule(&s, year6(), "http://casino.test/maths-lesson", now),
        "allow:role:pupil"
    );
    // Not for other pupils.
    assert_eq!(rule(&s, pupil(), "http://scratch.test/", now), "default");
}

#[test]
fn deny_lists_and_categories() {
    let (_dir, s) = load(BASE);
    let now = wednesday_morning();
    let d = decide(&s, pupil(), "http://bet.test/", now);
    assert_eq!(d.verdict, Verdict::Block);
    assert_eq!(d.rule, "category:pupil:gambling");
    assert!(d.reason.contains("gambling"), "{}", d.reason);
    assert_eq!(
        rule(&s, pupil(), "http://denied.test/x", now),
        "deny:role:pupil"
    );
    assert_eq!(
        rule(&s, staff(), "http://globally-denied.test/", now),
        "deny:global"
    );
    // Inline URL entry of a category.
    assert_eq!(
        rule(&s, pupil(), "http://www.video.test/shorts/abc", now),
        "category:pupil:social"
    );
    assert_eq!(
        rule(&s, pupil(), "http://www.video.test/watch", now),
        "default"
    );
    // Label boundaries: notbet.test is not bet.test.
    assert_eq!(rule(&s, pupil(), "http://notbet.test/", now), "default");
    // Every category is listed, sorted.
    let d = decide(&s, pupil(), "http://both.test/", now);
    assert_eq!(d.categories, vec!["gambling", "social"]);
    let d = decide(&s, pupil(), "http://nothing.test/", now);
    assert_eq!((d.verdict, d.rule.as_str()), (Verdict::Allow, "default"));
    assert!(d.categories.is_empty());
}

#[test]
fn windowed_deny_entries() {
    let (_dir, s) = load(BASE);
    // In term, in a lesson.
    assert_eq!(
        rule(&s, pupil(), "http://games.test/", wednesday_morning()),
        "deny:role:pupil"
    );
    // Lunchtime (12:30 BST).
    assert_eq!(
        rule(
            &s,
            pupil(),
            "http://games.test/",
            at("2026-09-16T11:30:00Z")
        ),
        "default"
    );
    // Half term, lesson time.
    assert_eq!(
        rule(
            &s,
            pupil(),
            "http://games.test/",
            at("2026-10-28T09:00:00Z")
        ),
        "default"
    );
    // Before the first term.
    assert_eq!(
        rule(
            &s,
            pupil(),
            "http://games.test/",
            at("2026-08-26T09:00:00Z")
        ),
        "default"
    );
    let d = decide(&s, pupil(), "http://games.test/", wednesday_morning());
    assert!(d.reason.contains("during term-lessons"), "{}", d.reason);
}

#[test]
fn staff_social_networking_only_in_core_hours_across_clock_changes() {
    let (_dir, s) = load(BASE);
    let social = |now: &str| rule(&s, staff(), "https://chat.test/", at(now));
    // Monday 2026-03-30 08:45 BST = 07:45 UTC: inside (clocks went forward on the 29th).
    assert_eq!(social("2026-03-30T07:45:00Z"), "category:staff:social");
    // 08:15 BST = 07:15 UTC: outside.
    assert_eq!(social("2026-03-30T07:15:00Z"), "default");
    // 15:30 BST = 14:30 UTC: the end is excluded.
    assert_eq!(social("2026-03-30T14:30:00Z"), "default");
    // Monday 2026-10-26 after the change back: 08:45 GMT = 08:45 UTC inside,
    // 07:45 UTC (07:45 GMT) outside.
    assert_eq!(social("2026-10-26T08:45:00Z"), "category:staff:social");
    assert_eq!(social("2026-10-26T07:45:00Z"), "default");
    // Saturday.
    assert_eq!(social("2026-10-24T10:00:00Z"), "default");
    // Gambling is blocked for staff at all times.
    assert_eq!(
        rule(&s, staff(), "http://bet.test/", at("2026-10-24T22:00:00Z")),
        "category:staff:gambling"
    );
    let d = decide(
        &s,
        staff(),
        "https://chat.test/",
        at("2026-10-26T08:45:00Z"),
    );
    assert!(d.reason.contains("during core-hours"), "{}", d.reason);
}

#[test]
fn groups_inherit_and_override() {
    let (_dir, s) = load(BASE);
    let morning = wednesday_morning();
    let evening = at("2026-09-16T18:00:00Z");
    // year6 lifts the role's "social" block and puts back a core-hours one.
    assert_eq!(
        rule(&s, year6(), "http://chat.test/", morning),
        "category:year6:social"
    );
    assert_eq!(rule(&s, year6(), "http://chat.test/", evening), "default");
    assert_eq!(
        rule(&s, pupil(), "http://chat.test/", evening),
        "category:pupil:social"
    );
    // Inherited: gambling, deny-lists; added: its own deny-list.
    assert_eq!(
        rule(&s, year6(), "http://bet.test/", evening),
        "category:pupil:gambling"
    );
    assert_eq!(
        rule(&s, year6(), "http://denied.test/", evening),
        "deny:role:pupil"
    );
    assert_eq!(
        rule(&s, year6(), "http://year6-denied.test/", evening),
        "deny:group:year6"
    );
    assert_eq!(
        rule(&s, pupil(), "http://year6-denied.test/", evening),
        "default"
    );
    // A group blocking what the role already blocks: the role's rule is met first.
    let year2 = Subject {
        role: Role::Pupil,
        group: Some("year2"),
        user: None,
    };
    assert_eq!(
        rule(&s, year2, "http://chat.test/", evening),
        "category:pupil:social"
    );
    // The file rule with the same name replaces the role's: .msi allowed for year6.
    assert_eq!(
        rule(&s, year6(), "http://dl.test/a.exe", evening),
        "file:year6:executables"
    );
    assert_eq!(
        rule(&s, year6(), "http://dl.test/a.msi", evening),
        "default"
    );
    assert_eq!(
        rule(&s, pupil(), "http://dl.test/a.msi", evening),
        "file:pupil:executables"
    );
    // SafeSearch: group overrides youtube, inherits safesearch.
    assert_eq!(
        s.safesearch(&year6()),
        SafeSearch {
            safesearch: true,
            youtube: YouTubeMode::Moderate
        }
    );
    assert_eq!(
        s.safesearch(&pupil()),
        SafeSearch {
            safesearch: true,
            youtube: YouTubeMode::Strict
        }
    );
    assert_eq!(
        s.safesearch(&staff()),
        SafeSearch {
            safesearch: false,
            youtube: YouTubeMode::Off
        }
    );
    // filter-admin says nothing: the safe defaults.
    let admin = Subject {
        role: Role::FilterAdmin,
        group: None,
        user: None,
    };
    assert_eq!(s.safesearch(&admin), SafeSearch::default());
    // A group the role does not have: the role's rules.
    let stray = Subject {
        role: Role::Staff,
        group: Some("year6"),
        user: None,
    };
    assert_eq!(rule(&s, stray, "http://dl.test/a.exe", evening), "default");
    assert_eq!(s.default_role(), Role::Pupil);
}

#[test]
fn site_unblock_beats_category_and_deny_until_it_expires() {
    let (_dir, s) = load(&policy_with(
        r#"
[[unblocks]]
site = "bet.test"
role = "pupil"
from = "2026-09-16 09:00"
until = "2026-09-16 11:00"
reason = "probability lesson"

[[unblocks]]
id = "deny-lift"
site = "denied.test/ok"
user = "ADA"
until = "2026-09-16T12:00:00+01:00"
"#,
    ));
    let before = at("2026-09-16T07:59:00Z"); // 08:59 BST
    let during = at("2026-09-16T09:00:00Z"); // 10:00 BST
    let after = at("2026-09-16T10:00:00Z"); // 11:00 BST: expired
    assert_eq!(
        rule(&s, pupil(), "http://bet.test/", before),
        "category:pupil:gambling"
    );
    let d = decide(&s, pupil(), "http://www.bet.test/", during);
    assert_eq!((d.verdict, d.rule.as_str()), (Verdict::Allow, "unblock:1"));
    assert!(d.reason.contains("2026-09-16 11:00"), "{}", d.reason);
    assert!(d.reason.contains("probability lesson"), "{}", d.reason);
    assert_eq!(d.categories, vec!["gambling"]);
    // The same snapshot, later: expired without a reload.
    assert_eq!(
        rule(&s, pupil(), "http://bet.test/", after),
        "category:pupil:gambling"
    );
    // Also for groups of the role; not for staff.
    assert_eq!(rule(&s, year6(), "http://bet.test/", during), "unblock:1");
    assert_eq!(
        rule(&s, staff(), "http://bet.test/", during),
        "category:staff:gambling"
    );
    // Per-user unblock beats a deny-list (user names compare case-insensitively).
    assert_eq!(
        rule(&s, pupil(), "http://denied.test/ok/1", during),
        "unblock:deny-lift"
    );
    assert_eq!(
        rule(&s, year6(), "http://denied.test/ok/1", during),
        "deny:role:pupil"
    );
    assert_eq!(
        rule(&s, pupil(), "http://denied.test/other", during),
        "deny:role:pupil"
    );
}

#[test]
fn category_unblock_lifts_only_that_category() {
    let (_dir, s) = load(&policy_with(
        r#"
[[unblocks]]
category = "social"
group = "year2"
until = "2026-09-16 15:00"
"#,
    ));
    let year2 = Subject {
        role: Role::Pupil,
        group: Some("year2"),
        user: None,
    };
    let now = wednesday_morning();
    let d = decide(&s, year2, "http://chat.test/", now);
    assert_eq!((d.verdict, d.rule.as_str()), (Verdict::Allow, "unblock:1"));
    assert!(d.reason.contains("the social category"), "{}", d.reason);
    // both.test is also gambling, which stays blocked.
    assert_eq!(
        rule(&s, year2, "http://both.test/", now),
        "category:pupil:gambling"
    );
    // Other pupils are not concerned.
    assert_eq!(
        rule(&s, pupil(), "http://chat.test/", now),
        "category:pupil:social"
    );
    // Expired.
    assert_eq!(
        rule(&s, year2, "http://chat.test/", at("2026-09-16T14:00:00Z")),
        "category:pupil:social"
    );
}

#[test]
fn file_rules_by_path_and_by_response_headers() {
    let (_dir, s) = load(BASE);
    let now = wednesday_morning();
    let d = decide(&s, pupil(), "http://dl.test/tools/Setup.EXE?x=1", now);
    assert_eq!(
        (d.verdict, d.rule.as_str()),
        (Verdict::Block, "file:pupil:executables")
    );
    assert!(d.reason.contains(".exe"), "{}", d.reason);
    // A host name ending in an extension is not a file.
    assert_eq!(rule(&s, pupil(), "http://setup.exe/", now), "default");
    assert_eq!(
        rule(&s, pupil(), "http://dl.test/readme.txt", now),
        "default"
    );
    // Staff have no file rule.
    assert_eq!(
        rule(&s, staff(), "http://dl.test/setup.exe", now),
        "default"
    );

    let target = RequestTarget::parse_url("http://dl.test/download?id=7").unwrap();
    let response = |subject: Subject<'_>, ct: Option<&str>, cd: Option<&str>| {
        s.decide_response(&subject, &target, ct, cd, now)
    };
    let d = response(pupil(), Some("application/x-msdownload"), None).unwrap();
    assert_eq!(
        (d.verdict, d.rule.as_str()),
        (Verdict::Block, "file:pupil:executables")
    );
    let d = response(
        pupil(),
        Some("application/octet-stream"),
        Some("attachment; filename=\"tool.msi\""),
    )
    .unwrap();
    assert_eq!(d.rule, "file:pupil:executables");
    assert!(d.reason.contains(".msi"), "{}", d.reason);
    assert!(response(pupil(), Some("text/html; charset=utf-8"), Some("inline")).is_none());
    assert!(response(pupil(), None, None).is_none());
    assert!(response(staff(), Some("application/x-msdownload"), None).is_none());
    // An allow-listed site is not blocked by the response phase.
    let school = RequestTarget::parse_url("http://school.test/installer").unwrap();
    assert!(
        s.decide_response(
            &pupil(),
            &school,
            Some("application/x-msdownload"),
            None,
            now
        )
        .is_none()
    );
}

#[test]
fn decide_is_pure_and_repeatable() {
    let (_dir, s) = load(BASE);
    let now = wednesday_morning();
    let a = decide(&s, pupil(), "http://bet.test/", now);
    let b = decide(&s, pupil(), "http://bet.test/", now);
    assert_eq!(a, b);
}

#[test]
fn shipped_policy_loads_and_decides() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/policy.toml");
    let s = Policy::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let stats = s.stats();
    for name in [
        "pornography",
        "gambling",
        "hate",
        "social-networking",
        "circumvention",
    ] {
        let c = stats.categories.iter().find(|c| c.name == name).unwrap();
        assert!(c.domains > 10, "{name}: {c:?}");
        assert!(!c.locked);
    }
    assert!(
        stats
            .categories
            .iter()
            .any(|c| c.name == "illegal" && c.locked)
    );
    assert_eq!(s.default_role(), Role::Pupil);
    let pupil = Subject {
        role: s.default_role(),
        group: None,
        user: None,
    };
    // A Monday in March after the clock change, 08:45 BST.
    let core = at("2026-03-30T07:45:00Z");
    let evening = at("2026-03-30T18:00:00Z");
    assert_eq!(
        rule(&s, pupil, "https://www.bet365.com/", core),
        "category:pupil:gambling"
    );
    assert_eq!(
        rule(&s, pupil, "https://nordvpn.com/", evening),
        "category:pupil:circumvention"
    );
    assert_eq!(
        rule(&s, pupil, "https://www.facebook.com/", evening),
        "category:pupil:social-networking"
    );
    assert_eq!(
        rule(&s, pupil, "https://illegal.safegate.test/", core),
        "locked:illegal"
    );
    assert_eq!(
        rule(&s, pupil, "https://example.org/setup.exe", core),
        "file:pupil:executables"
    );
    assert_eq!(
        rule(&s, pupil, "https://www.bbc.co.uk/bitesize", core),
        "default"
    );
    // DNS over HTTPS by name and by address (any spelling), and other sites by address.
    for doh in [
        "https://1.1.1.1/dns-query",
        "https://8.8.4.4/",
        "https://9.9.9.9/",
        "https://149.112.112.112/",
        "https://[2606:4700:4700::1111]/",
        "http://16843009/",
        "https://mozilla.cloudflare-dns.com/dns-query",
        "https://dns.google/resolve",
        "https://dns.quad9.net/",
        "https://doh.opendns.com/",
        "https://dns.nextdns.io/abc123",
        "https://family.adguard-dns.com/",
    ] {
        assert_eq!(
            rule(&s, pupil, doh, core),
            "category:pupil:circumvention",
            "{doh}"
        );
    }
    assert_eq!(
        rule(&s, pupil, "http://203.0.113.5/", core),
        "ip-address-host:pupil"
    );
    assert_eq!(
        rule(&s, pupil, "https://[2001:db8::5]/", core),
        "ip-address-host:pupil"
    );
    assert_eq!(
        s.safesearch(&pupil),
        SafeSearch {
            safesearch: true,
            youtube: YouTubeMode::Strict
        }
    );
    let staff = Subject {
        role: Role::Staff,
        group: None,
        user: Some("t"),
    };
    assert_eq!(
        rule(&s, staff, "https://www.facebook.com/", core),
        "category:staff:social-networking"
    );
    assert_eq!(
        rule(&s, staff, "https://www.facebook.com/", evening),
        "default"
    );
    assert_eq!(
        rule(&s, staff, "https://www.bet365.com/", evening),
        "category:staff:gambling"
    );
    assert_eq!(rule(&s, staff, "http://203.0.113.5/", core), "default");
    assert_eq!(
        rule(&s, staff, "https://example.org/setup.exe", core),
        "default"
    );
    let admin = Subject {
        role: Role::FilterAdmin,
        group: None,
        user: None,
    };
    assert_eq!(
        rule(&s, admin, "https://pornhub.com/", evening),
        "category:filter-admin:pornography"
    );
    assert_eq!(
        rule(&s, admin, "https://www.facebook.com/", core),
        "default"
    );
    // The sample unblock is expired.
    assert_eq!(stats.unblocks, 1);
    assert_eq!(
        rule(
            &s,
            pupil,
            "https://pinterest.com/",
            at("2025-06-02T08:30:00Z")
        ),
        "unblock:sample"
    );
    assert_eq!(
        rule(&s, pupil, "https://pinterest.com/", core),
        "category:pupil:social-networking"
    );
}

#[test]
fn encoded_slashes_and_dot_segments_do_not_get_round_a_path_rule() {
    let text = BASE.replace(
        r#"deny = ["globally-denied.test"]"#,
        r#"deny = ["globally-denied.test", "allowed.test/secret", "example.org/games/"]"#,
    );
    let (_dir, s) = load(&text);
    let now = wednesday_morning();
    for url in [
        "http://allowed.test/secret",
        "http://allowed.test/x%2f..%2fsecret",
        "http://allowed.test/x%2F..%2Fsecret",
        "http://allowed.test/x%5c..%5csecret",
        "http://allowed.test/x%2f%2e%2e%2fsecret",
        "http://allowed.test/x%2F%2E%2E%5Csecret?a=1",
        "http://allowed.test/x/..%2fsecret",
        "http://allowed.test/x%2f../secret",
        "http://allowed.test/secret%2Fpage",
        "http://example.org/x%2f..%2fgames/",
        "http://example.org/x%5C%2e.%5Cgames/chess",
    ] {
        assert_eq!(rule(&s, staff(), url, now), "deny:global", "{url}");
    }
    for url in [
        "http://allowed.test/x%2fsecret",
        "http://allowed.test/x%252f..%252fsecret",
        "http://example.org/x%2f..%2fgamesx",
    ] {
        assert!(!decide(&s, staff(), url, now).is_blocked(), "{url}");
    }
}

/// `block_ip_hosts`: on for pupils (and so for their groups, unless a group turns it
/// off), off for staff; after allow-lists, unblocks, deny-lists and categories.
#[test]
fn hosts_written_as_ip_addresses_are_blocked_where_the_role_says_so() {
    let policy = policy_with(
        r#"
[[unblocks]]
id = "lesson"
site = "192.0.2.7"
role = "pupil"
until = "2099-01-01 00:00"
"#,
    )
    .replacen(
        "youtube = \"strict\"\n",
        "youtube = \"strict\"\nblock_ip_hosts = true\n",
        1,
    )
    .replace(
        "[roles.pupil.groups.year2]\n",
        "[roles.pupil.groups.year2]\nblock_ip_hosts = false\n",
    )
    .replace(
        "allow = [\"school.test\",",
        "allow = [\"10.9.8.7\", \"school.test\",",
    );
    let (_dir, s) = load(&policy);
    let now = wednesday_morning();
    for url in [
        "http://1.1.1.1/",
        "https://8.8.8.8/dns-query?dns=AAAB",
        "http://[2606:4700:4700::1111]/",
        "http://16843009/",
        "http://0x01.0x01.0x01.0x01/",
        "http://9.9.9.9:8443/",
    ] {
        let d = decide(&s, pupil(), url, now);
        assert_eq!(d.verdict, Verdict::Block, "{url}");
        assert_eq!(d.rule, "ip-address-host:pupil", "{url}");
        assert_eq!(
            d.reason,
            "Sites reached by their number (an IP address) instead of their name are \
             blocked for pupils"
        );
        assert_eq!(
            rule(&s, year6(), url, now),
            "ip-address-host:pupil",
            "{url}"
        );
        let year2 = Subject {
            group: Some("year2"),
            ..pupil()
        };
        assert_eq!(rule(&s, year2, url, now), "default", "{url}");
        assert_eq!(rule(&s, staff(), url, now), "default", "{url}");
    }
    // Names are not addresses; allow-lists and unblocks of an address beat the rule.
    assert_eq!(rule(&s, pupil(), "http://dns.test/", now), "default");
    assert_eq!(rule(&s, pupil(), "http://10.9.8.7/", now), "allow:global");
    assert_eq!(
        rule(&s, pupil(), "http://192.0.2.7/", now),
        "unblock:lesson"
    );
}
