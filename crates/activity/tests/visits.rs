//! Joining visit-log records into visits.

use std::net::IpAddr;
use std::time::Duration;

use safegate_activity::visits::{DEFAULT_IDLE_GAP, Visit, VisitJoiner, join, site_of};
use safegate_store::record::{IdentifiedBy, Outcome, Record, SeenAs};

const T0: u64 = 1_760_000_000_000_000;
const SEC: u64 = 1_000_000;
const MIN: u64 = 60 * SEC;

fn rec(at: u64, user: Option<&str>, host: &str) -> Record {
    Record {
        at_unix_micros: at,
        user: user.map(Into::into),
        role: "pupil".into(),
        group: None,
        client: IpAddr::from([10, 1, 2, 3]),
        identified_by: if user.is_some() {
            IdentifiedBy::ProxyAuth
        } else {
            IdentifiedBy::Default
        },
        method: "GET".into(),
        scheme: "http".into(),
        host: host.into(),
        port: 80,
        path: Some("/".into()),
        categories: Vec::new(),
        outcome: Outcome::Allowed,
        rule: "default".into(),
        status: 200,
        bytes_up: 100,
        bytes_down: 1000,
        duration_micros: SEC,
        search: None,
        seen_as: SeenAs::PlainHttp,
        user_agent: None,
        failure: None,
        computer: None,
        content: None,
    }
}

fn summary(visits: &[Visit]) -> Vec<(&str, &str, u64, u64, u64)> {
    visits
        .iter()
        .map(|v| {
            (
                v.user.as_str(),
                v.site.as_str(),
                v.start_micros - T0,
                v.end_micros - T0,
                v.requests,
            )
        })
        .collect()
}

#[test]
fn four_minute_gap_joins_six_minute_gap_splits() {
    let records = [
        rec(T0, Some("alice"), "www.bbc.co.uk"),
        // 4 minutes after the first request ended: same visit.
        rec(T0 + SEC + 4 * MIN, Some("alice"), "www.bbc.co.uk"),
        // 6 minutes after that one ended: a new visit.
        rec(T0 + 2 * SEC + 10 * MIN, Some("alice"), "www.bbc.co.uk"),
    ];
    let visits = join(&records, DEFAULT_IDLE_GAP);
    assert_eq!(
        summary(&visits),
        vec![
            ("alice", "bbc.co.uk", 0, 2 * SEC + 4 * MIN, 2),
            (
                "alice",
                "bbc.co.uk",
                2 * SEC + 10 * MIN,
                3 * SEC + 10 * MIN,
                1
            ),
        ]
    );
    assert_eq!(visits[0].duration(), Duration::from_secs(4 * 60 + 2));
    assert_eq!(visits[0].bytes_down, 2000);
}

#[test]
fn exactly_the_gap_still_joins() {
    let records = [
        rec(T0, Some("alice"), "example.com"),
        rec(T0 + SEC + 5 * MIN, Some("alice"), "example.com"),
    ];
    assert_eq!(join(&records, DEFAULT_IDLE_GAP).len(), 1);
}

#[test]
fn other_sites_and_users_are_separate_visits() {
    let records = [
        rec(T0, Some("alice"), "www.bbc.co.uk"),
        rec(T0 + SEC, Some("bob"), "www.bbc.co.uk"),
        rec(T0 + 2 * SEC, Some("alice"), "en.wikipedia.org"),
        rec(T0 + 3 * SEC, Some("alice"), "www.bbc.co.uk"),
        rec(T0 + 4 * SEC, None, "www.bbc.co.uk"),
    ];
    let visits = join(&records, DEFAULT_IDLE_GAP);
    assert_eq!(
        summary(&visits),
        vec![
            ("alice", "bbc.co.uk", 0, 4 * SEC, 2),
            ("bob", "bbc.co.uk", SEC, 2 * SEC, 1),
            ("alice", "wikipedia.org", 2 * SEC, 3 * SEC, 1),
            // No user: the client address stands for the person.
            ("10.1.2.3", "bbc.co.uk", 4 * SEC, 5 * SEC, 1),
        ]
    );
}

#[test]
fn subdomains_of_one_registrable_domain_join() {
    let records = [
        rec(T0, Some("alice"), "www.bbc.co.uk"),
        rec(T0 + 30 * SEC, Some("alice"), "news.bbc.co.uk"),
        rec(T0 + 60 * SEC, Some("alice"), "static.files.bbci.co.uk"),
    ];
    let visits = join(&records, DEFAULT_IDLE_GAP);
    assert_eq!(
        summary(&visits),
        vec![
            ("alice", "bbc.co.uk", 0, 31 * SEC, 2),
            ("alice", "bbci.co.uk", 60 * SEC, 61 * SEC, 1),
        ]
    );
}

#[test]
fn a_long_tunnel_counts_for_its_lifetime() {
    let mut tunnel = rec(T0, Some("alice"), "www.youtube.com");
    tunnel.method = "CONNECT".into();
    tunnel.seen_as = SeenAs::ConnectHost;
    tunnel.duration_micros = 40 * MIN;
    // 30 minutes later, still inside the tunnel's lifetime: the same visit.
    let later = rec(T0 + 30 * MIN, Some("alice"), "i.ytimg.youtube.com");
    // 44 minutes in: 4 minutes after the tunnel closed, still the same visit.
    let after = rec(T0 + 44 * MIN, Some("alice"), "www.youtube.com");
    let visits = join([&tunnel, &later, &after], DEFAULT_IDLE_GAP);
    assert_eq!(
        summary(&visits),
        vec![("alice", "youtube.com", 0, 44 * MIN + SEC, 3)]
    );
    assert_eq!(visits[0].duration(), Duration::from_secs(44 * 60 + 1));
}

#[test]
fn ip_hosts_are_their_own_site() {
    let records = [
        rec(T0, Some("alice"), "203.0.113.7"),
        rec(T0 + SEC, Some("alice"), "203.0.113.8"),
        rec(T0 + 2 * SEC, Some("alice"), "[2001:db8::1]"),
        rec(T0 + 3 * SEC, Some("alice"), "203.0.113.7"),
    ];
    let visits = join(&records, DEFAULT_IDLE_GAP);
    assert_eq!(
        summary(&visits),
        vec![
            ("alice", "203.0.113.7", 0, 4 * SEC, 2),
            ("alice", "203.0.113.8", SEC, 2 * SEC, 1),
            ("alice", "[2001:db8::1]", 2 * SEC, 3 * SEC, 1),
        ]
    );
}

#[test]
fn site_of_hosts() {
    assert_eq!(site_of("www.bbc.co.uk"), "bbc.co.uk");
    assert_eq!(site_of("news.bbc.co.uk."), "bbc.co.uk");
    assert_eq!(site_of("bbc.co.uk"), "bbc.co.uk");
    assert_eq!(site_of("en.wikipedia.org"), "wikipedia.org");
    assert_eq!(site_of("a.b.example.com"), "example.com");
    assert_eq!(site_of("10.0.0.5"), "10.0.0.5");
    assert_eq!(site_of("::1"), "::1");
    assert_eq!(site_of("[::1]"), "[::1]");
    assert_eq!(site_of("localhost"), "localhost");
    assert_eq!(site_of("co.uk"), "co.uk");
}

#[test]
fn blocked_requests_are_counted() {
    let mut blocked = rec(T0 + SEC, Some("alice"), "www.bet365.com");
    blocked.outcome = Outcome::Blocked;
    blocked.bytes_down = 0;
    let records = [rec(T0, Some("alice"), "bet365.com"), blocked];
    let visits = join(&records, DEFAULT_IDLE_GAP);
    assert_eq!(visits.len(), 1);
    assert_eq!((visits[0].requests, visits[0].blocked), (2, 1));
    assert_eq!(visits[0].bytes_down, 1000);
}

#[test]
fn joiner_push_close_idle_and_finish() {
    let mut joiner = VisitJoiner::default();
    assert_eq!(joiner.idle_gap_micros(), 5 * MIN);
    assert!(
        joiner
            .push(&rec(T0, Some("alice"), "example.com"))
            .is_empty()
    );
    assert!(joiner.push(&rec(T0, Some("bob"), "example.org")).is_empty());
    assert!(
        joiner
            .push(&rec(T0 + 2 * MIN, Some("alice"), "www.example.com"))
            .is_empty()
    );
    assert_eq!(joiner.open_visits(), 2);

    // Alice comes back after 10 minutes: her first visit is returned, a new one opens.
    let closed = joiner.push(&rec(T0 + 12 * MIN, Some("alice"), "example.com"));
    assert_eq!(
        summary(&closed),
        vec![("alice", "example.com", 0, 2 * MIN + SEC, 2)]
    );
    assert_eq!(joiner.open_visits(), 2);

    // Nothing is idle yet at +5 minutes after bob's end.
    assert!(joiner.close_idle(T0 + SEC + 5 * MIN).is_empty());
    // Bob's visit is idle past the gap at +7 minutes; alice's second one is not.
    let closed = joiner.close_idle(T0 + 7 * MIN);
    assert_eq!(summary(&closed), vec![("bob", "example.org", 0, SEC, 1)]);
    assert_eq!(joiner.open_visits(), 1);

    let rest = joiner.finish();
    assert_eq!(
        summary(&rest),
        vec![("alice", "example.com", 12 * MIN, 12 * MIN + SEC, 1)]
    );
}

#[test]
fn custom_gap() {
    let records = [
        rec(T0, Some("alice"), "example.com"),
        rec(T0 + SEC + 2 * MIN, Some("alice"), "example.com"),
    ];
    assert_eq!(join(&records, Duration::from_secs(60)).len(), 2);
    assert_eq!(join(&records, Duration::from_secs(120)).len(), 1);
}

#[test]
fn empty_input() {
    assert!(join(std::iter::empty::<&Record>(), DEFAULT_IDLE_GAP).is_empty());
}
