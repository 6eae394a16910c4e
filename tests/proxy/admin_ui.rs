//! The admin web interface in headless Chromium against the running binary: a filter
//! admin blocks a category for pupils (and the proxy then blocks it), grants a
//! 30-minute unblock (and the site opens), approves a review request; the headteacher
//! acknowledges an alert raised by a pupil's search; a technician sees health and is
//! refused the rules. Hostile names are shown as text. Screenshots go to
//! target/screenshots/.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use safegate_store::{NewUser, Permission, Store};

use crate::auth::cheap_hash;
use crate::kit::block_page::review_form_fields;
use crate::kit::bounded;
use crate::kit::browser::Browser;
use crate::kit::dns::FakeDns;
use crate::kit::origin::Origin;
use crate::kit::process::SafeGate;

const PASSWORD: &str = "a long admin password";

const POLICY: &str = r#"timezone = "Europe/London"
default_role = "pupil"

[categories.illegal]
locked = true
sources = [{ format = "domains", path = "illegal.txt" }]

[categories.gambling]
sources = [{ format = "domains", path = "gambling.txt" }]

[categories.social]
sources = [{ format = "domains", path = "social.txt" }]

[roles.pupil]
block = ["gambling"]

[roles.staff]
block = []

[roles.filter-admin]
block = []

[[alerts.phrases]]
list = "self-harm"
path = "self-harm.txt"
severity = "high"
"#;

fn seed_users(data_dir: &Path) {
    let store = Store::open(data_dir).unwrap();
    for (name, display, permission) in [
        (
            "fiona",
            "Fiona <img src=x onerror=alert(1)>",
            Permission::Rules,
        ),
        ("head", "The Head", Permission::Reports),
        ("tech", "Terry Tech", Permission::Metrics),
        ("dsl", "Dee Lead", Permission::Reports),
    ] {
        store
            .add_user(&NewUser {
                shared: false,
                name: name.into(),
                display_name: Some(display.into()),
                role: "staff".into(),
                group: None,
                permissions: if name == "dsl" {
                    [Permission::Reports, Permission::Rules, Permission::Metrics]
                        .into_iter()
                        .collect()
                } else {
                    [permission].into_iter().collect()
                },
                password_hash: cheap_hash(PASSWORD),
            })
            .unwrap();
    }
    store.flush_blocking().unwrap();
}

/// Polls `url` through the proxy until it answers `status` (the policy reloads a
/// moment after a change).
async fn wait_for_status(safegate: &SafeGate, url: &str, status: u16) {
    let client = safegate.client();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let got = client.get(url).send().await.unwrap().status().as_u16();
        if got == status {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} still answers {got}, expected {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sign_in(browser: &Browser, admin: &str, user: &str) {
    browser.goto(&format!("{admin}/login")).await;
    browser.fill("input[name=user]", user).await;
    browser.fill("input[name=password]", PASSWORD).await;
    browser
        .click("form[action='/login'] button[type=submit]")
        .await;
    browser.wait_for_text("Sign out").await;
}

async fn sign_out(browser: &Browser) {
    browser
        .click("header form[action='/logout'] button[type=submit]")
        .await;
    browser.wait_for_text("User name").await;
}

/// What every step of the browser scenario uses: the browser, the running proxy, the
/// admin interface's address and the test origin's port.
struct Scene<'a> {
    browser: &'a Browser,
    safegate: &'a SafeGate,
    admin: &'a str,
    port: u16,
}

#[tokio::test]
async fn admins_use_the_web_interface_in_a_browser() {
    bounded(async {
        let Some(browser) = Browser::start().await else {
            return;
        };
        let origin = Origin::start().await;
        let dns = FakeDns::start(&[
            ("chat.test", Ipv4Addr::LOCALHOST),
            ("bet.test", Ipv4Addr::LOCALHOST),
            ("www.google.com", Ipv4Addr::LOCALHOST),
        ])
        .await;
        let policy_dir = tempfile::tempdir().unwrap();
        for (name, text) in [
            ("illegal.txt", "illegal.test\n"),
            ("gambling.txt", "bet.test\n"),
            ("social.txt", "chat.test\n"),
            ("self-harm.txt", "hurt myself\n"),
            ("policy.toml", POLICY),
        ] {
            std::fs::write(policy_dir.path().join(name), text).unwrap();
        }
        let data_dir = tempfile::tempdir().unwrap();
        seed_users(data_dir.path());
        let sets = [
            format!(
                "policy.file={:?}",
                policy_dir.path().join("policy.toml").display().to_string()
            ),
            format!("data_dir={:?}", data_dir.path().display().to_string()),
            format!("upstream.dns.servers=[\"{}\"]", dns.addr),
            "upstream.dns.ip_strategy=\"ipv4_only\"".to_owned(),
            "store.flush_interval=\"100ms\"".to_owned(),
        ];
        let refs: Vec<&str> = sets.iter().map(String::as_str).collect();
        let safegate = SafeGate::start(&refs).await;
        let admin = format!("http://{}", safegate.admin);
        let scene = Scene {
            browser: &browser,
            safegate: &safegate,
            admin: &admin,
            port: origin.addr.port(),
        };
        filter_admin_blocks_and_unblocks(&scene).await;
        filter_admin_approves_a_review(&scene).await;
        headteacher_acknowledges_an_alert(&scene).await;
        headteacher_makes_the_weekly_report(&scene).await;
        the_dashboard_shows_the_week_and_leads_to_the_pages_behind(&scene).await;
        technician_sees_health_but_not_rules(&scene).await;
    })
    .await;
}

/// The filter admin (whose hostile display name shows as text) blocks "social" for
/// pupils, and the proxy blocks chat.test; a 30-minute unblock for a lesson opens it
/// again.
async fn filter_admin_blocks_and_unblocks(scene: &Scene<'_>) {
    let Scene {
        browser,
        safegate,
        admin,
        port,
    } = *scene;
    let chat = format!("http://chat.test:{port}/bytes/2");
    wait_for_status(safegate, &chat, 200).await;

    // The filter admin blocks "social" for pupils: the proxy blocks chat.test.
    sign_in(browser, admin, "fiona").await;
    let home = browser.text().await;
    assert!(
        home.contains("Fiona <img src=x onerror=alert(1)>"),
        "the hostile display name is shown as text at {}: {home}\n{}",
        browser.url().await,
        safegate.logs().join("\n")
    );
    assert_eq!(
        browser
            .script("return document.querySelectorAll('img').length")
            .await,
        0
    );
    browser.screenshot("admin-filter-admin-home").await;
    browser.goto(&format!("{admin}/rules")).await;
    browser
        .click(
            "form[action='/rules/block']:has(input[name=scope][value=pupil]):has(input[name=category][value=social]) button",
        )
        .await;
    browser.wait_for_text("Saved: block social for pupil").await;
    browser.screenshot("admin-rules-blocked-social").await;
    wait_for_status(safegate, &chat, 403).await;

    // A 30-minute unblock for a lesson: chat.test opens again.
    browser
        .fill(
            "form[action='/rules/unblock'] input[name=site]",
            "chat.test",
        )
        .await;
    browser
        .choose("form[action='/rules/unblock'] select[name=scope]", "pupil")
        .await;
    browser
        .fill(
            "form[action='/rules/unblock'] input[name=reason]",
            "media studies lesson",
        )
        .await;
    browser
        .click("form[action='/rules/unblock'] button[type=submit]")
        .await;
    // Every pupil: the effect is confirmed first, in words.
    browser
        .wait_for_text("This change allows chat.test for all 0 pupils for 30 minutes")
        .await;
    browser.click("form#confirm button[type=submit]").await;
    browser.wait_for_text("Saved: unblock chat.test").await;
    wait_for_status(safegate, &chat, 200).await;
}

/// A pupil asks for a review from the block page (with a hostile address and
/// comment, shown as text); the filter admin approves it and the site opens.
async fn filter_admin_approves_a_review(scene: &Scene<'_>) {
    let Scene {
        browser,
        safegate,
        admin,
        port,
    } = *scene;
    let poker = format!("http://bet.test:{port}/bytes/3");
    wait_for_status(safegate, &poker, 403).await;
    let hostile_url = format!("{poker}?x=\"><script>alert(4)</script>");
    let block_page = safegate
        .client()
        .get(&poker)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let token = review_form_fields(&block_page)[3].1.clone();
    let review = safegate
        .client()
        .post(format!("http://{}/safegate/review", safegate.proxy))
        .form(&[
            ("url", hostile_url.as_str()),
            ("rule", "category:pupil:gambling"),
            ("categories", "gambling"),
            (
                "comment",
                "for the probability lesson \"><img src=x onerror=alert(2)>",
            ),
            ("token", token.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(review.status(), 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        browser.goto(&format!("{admin}/rules/reviews")).await;
        if browser.text().await.contains("for the probability lesson") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "review not listed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reviews = browser.text().await;
    assert!(
        reviews.contains("lesson \"><img src=x onerror=alert(2)>"),
        "the comment is shown as text: {reviews}"
    );
    assert!(
        reviews.contains("?x=\"><script>alert(4)</script>"),
        "the address is shown as text: {reviews}"
    );
    assert_eq!(
        browser
            .script("return document.querySelectorAll('script').length")
            .await,
        0
    );
    assert_eq!(
        browser
            .script("return document.querySelectorAll('img').length")
            .await,
        0
    );
    // The computer was not signed in: the choice is the role, for today, which is
    // confirmed first.
    browser
        .click("form[action='/rules/reviews/decide']:has(input[value=approve]) button")
        .await;
    browser
        .wait_for_text("This change allows bet.test for all 0 pupils until")
        .await;
    browser.click("form#confirm button[type=submit]").await;
    browser.wait_for_text("Approved the request").await;
    browser.screenshot("admin-review-approved").await;
    wait_for_status(safegate, &poker, 200).await;
    sign_out(browser).await;
}

/// A pupil searches for a self-harm phrase; the headteacher acknowledges the alert
/// with a note, and the audit log shows the review decision on the hostile address,
/// as text.
async fn headteacher_acknowledges_an_alert(scene: &Scene<'_>) {
    let Scene {
        browser,
        safegate,
        admin,
        port,
    } = *scene;
    // A pupil searches for a self-harm phrase; the headteacher acknowledges the
    // alert with a note.
    let search = format!(
        "http://www.google.com:{port}/search?q=how+to+hurt+myself+%3Cscript%3Ealert(3)%3C%2Fscript%3E"
    );
    let _ = safegate.client().get(&search).send().await.unwrap();
    sign_in(browser, admin, "head").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        browser.goto(&format!("{admin}/alerts")).await;
        if browser.text().await.contains("self-harm") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no alert raised");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    browser.screenshot("admin-alert-queue").await;
    browser.click("table a[href^='/alerts/']").await;
    let alert = browser
        .wait_for_text("how to hurt myself <script>alert(3)</script>")
        .await;
    assert!(alert.contains("self-harm"), "{alert}");
    assert_eq!(
        browser
            .script("return document.querySelectorAll('script').length")
            .await,
        0
    );
    browser
        .fill("input[name=note]", "spoke to the pupil with the form tutor")
        .await;
    browser.click("button[value=acknowledged]").await;
    browser.wait_for_text("is acknowledged now").await;
    browser.screenshot("admin-alert-acknowledged").await;

    // The audit log shows the review decision on that address, as text.
    browser.goto(&format!("{admin}/audit")).await;
    let audit = browser.wait_for_text("Chain intact").await;
    assert!(audit.contains("review-decision"), "{audit}");
    assert!(audit.contains("<script>alert(4)</script>"), "{audit}");
    assert_eq!(
        browser
            .script("return document.querySelectorAll('script, img').length")
            .await,
        0
    );
    browser.screenshot("admin-audit-log").await;
}

/// The headteacher (still signed in) makes this week's report and opens it: it holds
/// the search, then signs out.
async fn headteacher_makes_the_weekly_report(scene: &Scene<'_>) {
    let Scene { browser, admin, .. } = *scene;
    let week = jiff::Timestamp::now()
        .to_zoned_datetime(jiff::tz::TimeZone::get("Europe/London").unwrap())
        .date()
        .iso_week_date();
    let week = format!("{:04}-W{:02}", week.year(), week.week());
    browser.goto(&format!("{admin}/reports")).await;
    browser.fill("input[name=week]", &week).await;
    browser
        .click("form[action='/reports/make'] button[type=submit]")
        .await;
    browser
        .wait_for_text(&format!("The report for {week} is ready."))
        .await;
    browser.click("a[href$='.html']").await;
    let report = browser.wait_for_text("hurt myself").await;
    assert!(report.contains(&week), "{report}");
    browser.screenshot("admin-weekly-report").await;
    browser.goto(&format!("{admin}/")).await;
    sign_out(browser).await;
}

/// The safeguarding lead (reports, rules and metrics) sees the dashboard: today's
/// and this week's requests and blocks with the 7-day chart, gambling among the most
/// blocked, the open high alert, and health; it passes axe-core. The high alert's
/// number leads to the alert (#1, kind in words), and the alert to the pupil's
/// activity around it.
async fn the_dashboard_shows_the_week_and_leads_to_the_pages_behind(scene: &Scene<'_>) {
    let Scene { browser, admin, .. } = *scene;
    sign_in(browser, admin, "dsl").await;
    let home = browser.wait_for_text("Most blocked this week").await;
    for expected in [
        "Requests",
        "Open alerts",
        "Review requests waiting",
        "Service health",
        "gambling: ",
    ] {
        assert!(home.contains(expected), "{expected}: {home}");
    }
    let figures = browser
        .script(
            "return [document.querySelector('#card-requests ~ p a').innerText, \
             document.querySelector('#card-blocked ~ p a').innerText, \
             document.querySelector('a[href=\"/alerts?severity=high\"]').innerText, \
             document.querySelectorAll('svg rect').length, document.querySelectorAll('script').length]",
        )
        .await;
    let number = |i: usize| {
        figures[i]
            .as_str()
            .unwrap()
            .replace(',', "")
            .parse::<u64>()
            .unwrap()
    };
    assert!(number(0) >= 5, "requests today: {figures}");
    assert!(number(1) >= 2, "blocked today: {figures}");
    assert_eq!(
        number(2),
        1,
        "the high alert, acknowledged, is still open: {figures}"
    );
    assert_eq!(figures[3], 14, "{figures}");
    assert_eq!(figures[4], 0, "{figures}");
    browser.screenshot("admin-dashboard").await;
    if let Some(violations) = browser.axe_violations().await {
        assert!(violations.is_empty(), "dashboard: {violations:#?}");
    }
    browser.goto(&format!("{admin}/alerts")).await;
    browser.click("table a[href^='/alerts/']").await;
    let alert = browser.wait_for_text("Alert #1").await;
    assert!(
        alert.contains("Worrying words in a search or address"),
        "{alert}"
    );
    assert!(
        !alert.contains("safeguarding_phrase"),
        "folded away: {alert}"
    );
    browser.click("a[href^='/activity?']").await;
    browser
        .fill("input[name=reason]", "following up alert #1")
        .await;
    browser
        .click("form[action='/activity'] button[type=submit]")
        .await;
    let activity = browser.wait_for_text("Searches (").await;
    assert!(activity.contains("hurt myself"), "{activity}");
    browser.screenshot("admin-alert-activity-around").await;
    sign_out(browser).await;
}

/// The technician sees health, and is refused the rules.
async fn technician_sees_health_but_not_rules(scene: &Scene<'_>) {
    let Scene { browser, admin, .. } = *scene;
    sign_in(browser, admin, "tech").await;
    browser.goto(&format!("{admin}/health")).await;
    let health = browser.wait_for_text("Listeners").await;
    assert!(health.contains("Ready"), "{health}");
    browser.screenshot("admin-technician-health").await;
    browser.goto(&format!("{admin}/rules")).await;
    let refused = browser.text().await;
    assert!(
        refused.contains("you do not have the permission this page needs"),
        "{refused}"
    );
    browser.screenshot("admin-technician-refused-rules").await;
}
