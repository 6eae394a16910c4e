//! The admin home page's dashboard: today and this week at a glance — requests,
//! blocked requests and the categories most blocked, open alerts by severity, review
//! requests waiting, how fresh the lists are and whether the service is healthy — with
//! 7-day trend charts drawn as inline SVG (no script, nothing fetched). Every number
//! links to the page behind it; each card shows only to those whose permission
//! that page needs.
//!
//! Cheap by construction: traffic comes from the store's hourly totals (at most 14
//! days × 24 small values, `safegate_store::visit_totals`), alerts from the open
//! alerts' index, reviews from the newest requests (at most [`REVIEWS_COUNTED`]); the
//! visit log itself is never read here.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use maud::{Markup, html};
use safegate_store::{HourTotals, Permission, Store, StoreError};

use crate::ui::{HealthFigures, Session};

/// Pending review requests counted at most (more shows as "1000+").
pub const REVIEWS_COUNTED: usize = 1000;

/// Days in the trend charts.
const TREND_DAYS: usize = 7;

/// Blocked categories listed.
const TOP_CATEGORIES: usize = 5;

/// What the dashboard shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dashboard {
    /// Today's totals (school time).
    pub today: HourTotals,
    /// This week's totals, from Monday.
    pub week: HourTotals,
    /// The last 7 days, oldest first: the day and its totals.
    pub days: Vec<(Date, HourTotals)>,
    /// Open alerts: low, medium, high.
    pub open_alerts: [u64; 3],
    /// Review requests waiting (at most [`REVIEWS_COUNTED`]).
    pub pending_reviews: usize,
}

/// Unix microseconds of the start of `day` in `tz`.
fn start_of(day: Date, tz: &TimeZone) -> u64 {
    day.to_zoned_datetime(tz.clone())
        .ok()
        .and_then(|zoned| u64::try_from(zoned.timestamp().as_microsecond()).ok())
        .unwrap_or(0)
}

/// Reads the figures (blocking: call it on a blocking thread).
pub fn gather(store: &Store, tz: &TimeZone, now: jiff::Timestamp) -> Result<Dashboard, StoreError> {
    let today = now.to_zoned_datetime(tz.clone()).date();
    let monday = today
        .checked_sub(jiff::Span::new().days(i64::from(today.weekday().to_monday_zero_offset())))
        .unwrap_or(today);
    let first_trend = today
        .checked_sub(jiff::Span::new().days(TREND_DAYS as i64 - 1))
        .unwrap_or(today);
    let since = start_of(monday.min(first_trend), tz);
    let now_micros = u64::try_from(now.as_microsecond()).unwrap_or(0);
    let hours = store.hourly_totals(since, now_micros.saturating_add(1))?;
    let mut dashboard = Dashboard {
        days: (0..TREND_DAYS)
            .filter_map(|i| {
                first_trend
                    .checked_add(jiff::Span::new().days(i as i64))
                    .ok()
            })
            .map(|day| (day, HourTotals::default()))
            .collect(),
        ..Dashboard::default()
    };
    for (start, totals) in &hours {
        let Ok(at) = jiff::Timestamp::from_microsecond(i64::try_from(*start).unwrap_or(0)) else {
            continue;
        };
        let day = at.to_zoned_datetime(tz.clone()).date();
        if day == today {
            dashboard.today.add(totals);
        }
        if day >= monday {
            dashboard.week.add(totals);
        }
        if let Some((_, sum)) = dashboard.days.iter_mut().find(|(d, _)| *d == day) {
            sum.add(totals);
        }
    }
    dashboard.open_alerts = store.open_alert_counts()?;
    dashboard.pending_reviews = store.reviews_with_decisions(REVIEWS_COUNTED, true)?.len();
    Ok(dashboard)
}

/// A count as people read it: `1,234`.
pub fn count_text(count: u64) -> String {
    let digits = count.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// The most blocked categories of `totals`, most first, in words.
fn top_categories(totals: &HourTotals) -> Vec<(String, u64)> {
    let mut top: Vec<(String, u64)> = totals
        .blocked_categories
        .iter()
        .map(|(name, count)| {
            let shown = if name.is_empty() {
                "not in a category (a deny list)".to_owned()
            } else {
                name.clone()
            };
            (shown, *count)
        })
        .collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    top.truncate(TOP_CATEGORIES);
    top
}

/// A 7-day bar chart of requests with the blocked part darker, as inline SVG with a
/// text alternative (and each bar's figures as its tooltip).
fn trend_chart(days: &[(Date, HourTotals)]) -> Markup {
    let most = days
        .iter()
        .map(|(_, t)| t.requests)
        .max()
        .unwrap_or(0)
        .max(1);
    let (width, height, bar) = (280u64, 110u64, 32u64);
    let described: Vec<String> = days
        .iter()
        .map(|(day, t)| {
            format!(
                "{}: {} requests, {} blocked",
                day.strftime("%a %-d %b"),
                t.requests,
                t.blocked
            )
        })
        .collect();
    html! {
        svg width="100%" style="max-width:280px" viewBox={"0 0 " (width) " " (height + 20)} role="img" aria-label={"Requests and blocked requests, last 7 days: " (described.join("; "))} {
            @for (i, (day, totals)) in days.iter().enumerate() {
                @let x = i as u64 * (bar + 8) + 4;
                @let total_h = totals.requests * height / most;
                @let blocked_h = totals.blocked * height / most;
                g {
                    title { (described.get(i).map_or("", String::as_str)) }
                    rect x=(x) y=(height - total_h) width=(bar) height=(total_h) fill="#8fb3d9" {}
                    rect x=(x) y=(height - blocked_h) width=(bar) height=(blocked_h) fill="#b00020" {}
                    text x=(x + bar / 2) y=(height + 15) font-size="11" text-anchor="middle" fill="#1b1b1b" { (day.strftime("%a")) }
                }
            }
        }
        p.muted { "Blue: requests; red: blocked." }
    }
}

/// The dashboard's cards for `session` (only what its permissions open).
pub fn render(dashboard: &Dashboard, health: &HealthFigures, session: &Session) -> Markup {
    let reports = session.may(Permission::Reports);
    let rules = session.may(Permission::Rules);
    let metrics = session.may(Permission::Metrics);
    let [low, medium, high] = dashboard.open_alerts;
    html! {
        div.cards {
            @if reports {
                section.card aria-labelledby="card-requests" {
                    h2 id="card-requests" { "Requests" }
                    p { "Today " a.big href="/reports" { (count_text(dashboard.today.requests)) } }
                    p { "This week " a href="/reports" { (count_text(dashboard.week.requests)) } }
                    (trend_chart(&dashboard.days))
                }
                section.card aria-labelledby="card-blocked" {
                    h2 id="card-blocked" { "Blocked" }
                    p { "Today " a.big href="/reports" { (count_text(dashboard.today.blocked)) } }
                    p { "This week " a href="/reports" { (count_text(dashboard.week.blocked)) } }
                    h3 { "Most blocked this week" }
                    @let top = top_categories(&dashboard.week);
                    @if top.is_empty() { p.muted { "Nothing blocked this week." } }
                    ol {
                        @for (name, count) in &top {
                            li { (name) ": " @if rules { a href="/rules" { (count_text(*count)) } } @else { (count_text(*count)) } }
                        }
                    }
                }
                section.card aria-labelledby="card-alerts" {
                    h2 id="card-alerts" { "Open alerts" }
                    p { a.big.bad[high > 0] href="/alerts?severity=high" { (high) } " high" }
                    p { a href="/alerts?severity=medium" { (medium) } " medium" }
                    p { a href="/alerts?severity=low" { (low) } " low" }
                }
            }
            @if rules {
                section.card aria-labelledby="card-reviews" {
                    h2 id="card-reviews" { "Review requests waiting" }
                    p { a.big href="/rules/reviews" {
                        (dashboard.pending_reviews)
                        @if dashboard.pending_reviews >= REVIEWS_COUNTED { "+" }
                    } }
                }
            }
            @if metrics {
                (health_card(health))
            }
        }
    }
}

/// Lists' freshness and the service's health.
fn health_card(health: &HealthFigures) -> Markup {
    html! {
        section.card aria-labelledby="card-health" {
            h2 id="card-health" { "Service health" }
            p {
                @if health.ready { a.ok href="/health" { "Ready" } }
                @else { a.bad href="/health" { "Not ready" } ": " (health.not_ready_because) }
            }
            p { "Records lost since start: " a href="/health" class=(if health.dropped_records > 0 { "bad" } else { "ok" }) { (health.dropped_records) } }
            h3 { "Lists" }
            @if health.list_ages.is_empty() { p.muted { "No list feeds are configured; the lists change only when someone edits them." } }
            ul {
                @for (feed, age) in &health.list_ages {
                    li { (feed) ": " a href="/health" { @match age { Some(seconds) => (age_text(*seconds)), None => "not installed" } } }
                }
            }
            @for stale in &health.stale_lists { p.bad { (stale) } }
        }
    }
}

/// An age in words: "updated 3 hours ago".
pub fn age_text(seconds: u64) -> String {
    match seconds {
        0..120 => "updated just now".to_owned(),
        120..7200 => format!("updated {} minutes ago", seconds / 60),
        7200..172_800 => format!("updated {} hours ago", seconds / 3600),
        _ => format!("updated {} days ago", seconds / 86_400),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn counts_and_ages_in_words() {
        assert_eq!(count_text(0), "0");
        assert_eq!(count_text(999), "999");
        assert_eq!(count_text(1000), "1,000");
        assert_eq!(count_text(1_234_567), "1,234,567");
        assert_eq!(age_text(30), "updated just now");
        assert_eq!(age_text(600), "updated 10 minutes ago");
        assert_eq!(age_text(3 * 3600), "updated 3 hours ago");
        assert_eq!(age_text(3 * 86_400), "updated 3 days ago");
    }

    #[test]
    fn the_figures_come_from_the_hourly_totals_in_school_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tz = TimeZone::get("Europe/London").unwrap();
        // Wednesday 2026-12-09 10:00 in London (UTC in winter).
        let now: jiff::Timestamp = "2026-12-09T10:00:00Z".parse().unwrap();
        let at = |text: &str| {
            let t: jiff::Timestamp = text.parse().unwrap();
            u64::try_from(t.as_microsecond()).unwrap()
        };
        let mut records = Vec::new();
        for (when, blocked) in [
            ("2026-12-09T09:10:00Z", Some("gambling")),
            ("2026-12-09T09:20:00Z", None),
            ("2026-12-07T13:00:00Z", Some("social")),
            ("2026-12-04T13:00:00Z", Some("gambling")),
            ("2026-11-20T13:00:00Z", None),
        ] {
            let mut record = safegate_store::Record {
                at_unix_micros: at(when),
                ..test_record()
            };
            if let Some(category) = blocked {
                record.outcome = safegate_store::Outcome::Blocked;
                record.categories = vec![category.to_owned()];
            }
            records.push(record);
        }
        store.write_records(&records).unwrap();
        let dashboard = gather(&store, &tz, now).unwrap();
        assert_eq!((dashboard.today.requests, dashboard.today.blocked), (2, 1));
        assert_eq!((dashboard.week.requests, dashboard.week.blocked), (3, 2));
        assert_eq!(dashboard.days.len(), 7);
        assert_eq!(dashboard.days[0].0.to_string(), "2026-12-03");
        assert_eq!(dashboard.days[1].1.blocked, 1, "Friday 4th");
        assert_eq!(dashboard.days[6].1.requests, 2);
        assert_eq!(
            top_categories(&dashboard.week)[0],
            ("gambling".to_owned(), 1)
        );
    }

    /// A record built from its JSON form, so fields added later with defaults do not
    /// break the test.
    fn test_record() -> safegate_store::Record {
        serde_json::from_value(serde_json::json!({
            "at_unix_micros": 0, "user": "ada", "role": "pupil", "group": null,
            "client": "10.0.3.57", "identified_by": "ProxyAuth", "method": "GET",
            "scheme": "http", "host": "example.test", "port": 80, "path": "/",
            "categories": [], "outcome": "Allowed", "rule": "default", "status": 200,
            "bytes_up": 0, "bytes_down": 0, "duration_micros": 0, "search": null,
            "seen_as": "PlainHttp", "user_agent": null, "failure": null
        }))
        .unwrap()
    }
}
