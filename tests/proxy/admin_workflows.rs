//! Issue 20's workflows in headless Chromium against the running binary: a filter
//! admin manages groups of people (a refused form keeps what was typed and says what
//! is wrong in words), a bad site is refused in words, site groups are not offered
//! for blocking, wide changes are confirmed with their effect in words, and a review
//! request is approved for the asker's group for today (a page of an HTTPS site that
//! is not decrypted is refused with the reason). Screenshots go to
//! target/screenshots/.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use safegate_store::{NewUser, Permission, Store};

use crate::auth::{cheap_hash, client_as};
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

[site_groups.health]
description = "Health and support services: never decrypted"
sites = ["childline.test"]

[groups.year6]
role = "pupil"
description = "Year 6"
teachers = ["tom"]

[roles.pupil]
block = ["gambling", "social"]

[roles.staff]
block = []

[roles.filter-admin]
block = []

[decrypt]
never_categories = ["health"]
"#;

fn seed_users(data_dir: &Path) {
    let store = Store::open(data_dir).unwrap();
    let people: [(&str, &str, Option<&str>, &[Permission]); 6] = [
        ("fiona", "staff", None, &[Permission::Rules]),
        ("tom", "staff", None, &[Permission::Teach]),
        ("uma", "staff", None, &[Permission::Users]),
        ("ava", "pupil", Some("year6"), &[]),
        ("ben", "pupil", Some("year6"), &[]),
        ("cal", "pupil", None, &[]),
    ];
    for (name, role, group, permissions) in people {
        store
            .add_user(&NewUser {
                shared: false,
                name: name.into(),
                display_name: None,
                role: role.into(),
                group: group.map(str::to_owned),
                permissions: permissions.iter().copied().collect(),
                password_hash: cheap_hash(PASSWORD),
            })
            .unwrap();
    }
    store.flush_blocking().unwrap();
}

/// Polls `url` with `client` until it answers `status` (the policy reloads a moment
/// after a change).
async fn wait_for_status(client: &reqwest::Client, url: &str, status: u16) {
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

struct Scene<'a> {
    browser: &'a Browser,
    safegate: &'a SafeGate,
    admin: &'a str,
    port: u16,
}

#[tokio::test]
async fn filter_admin_manages_groups_confirms_wide_changes_and_approves_reviews() {
    bounded(async {
        let Some(browser) = Browser::start().await else {
            return;
        };
        let origin = Origin::start().await;
        let dns = FakeDns::start(&[
            ("chat.test", Ipv4Addr::LOCALHOST),
            ("bet.test", Ipv4Addr::LOCALHOST),
        ])
        .await;
        let policy_dir = tempfile::tempdir().unwrap();
        for (name, text) in [
            ("illegal.txt", "illegal.test\n"),
            ("gambling.txt", "bet.test\n"),
            ("social.txt", "chat.test\n"),
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
        sign_in(&browser, &admin, "fiona").await;
        groups_are_listed_added_and_removed(&scene).await;
        a_bad_site_is_refused_in_words_and_the_typing_kept(&scene).await;
        site_groups_are_not_offered_and_wide_changes_are_confirmed(&scene).await;
        a_review_is_approved_for_the_askers_group_for_today(&scene).await;
        browser
            .click("header form[action='/logout'] button[type=submit]")
            .await;
        browser.wait_for_text("User name").await;
        sign_in(&browser, &admin, "uma").await;
        accounts_are_managed_and_imported_with_a_preview(&scene).await;
        a_teacher_unblocks_for_a_lesson_and_sets_focus(&scene).await;
    })
    .await;
}

/// The users admin searches, adds an account in a group, disables it and resets its
/// password; an import with a group the policy does not define is previewed row by
/// row and imports nothing; a good one is previewed, then imported; the audit log
/// has every change.
async fn accounts_are_managed_and_imported_with_a_preview(scene: &Scene<'_>) {
    let Scene { browser, admin, .. } = *scene;
    browser.goto(&format!("{admin}/users?q=year6")).await;
    let found = browser.text().await;
    assert!(found.contains("2 of 6 accounts"), "{found}");
    assert!(
        found.contains("ava") && found.contains("ben") && !found.contains("cal"),
        "{found}"
    );

    let add = "form[action='/users/add']";
    browser
        .fill(&format!("{add} input[name=name]"), "dan")
        .await;
    browser
        .fill(&format!("{add} input[name=display_name]"), "Dan <b>D</b>")
        .await;
    browser
        .choose(&format!("{add} select[name=role]"), "pupil")
        .await;
    browser
        .choose(&format!("{add} select[name=group]"), "year6")
        .await;
    browser
        .fill(
            &format!("{add} input[name=password]"),
            "a long pupil password",
        )
        .await;
    browser.click(&format!("{add} button[type=submit]")).await;
    browser.wait_for_text("Added dan").await;

    browser.goto(&format!("{admin}/users/dan")).await;
    assert_eq!(browser.value("select[name=group]").await, "year6");
    browser
        .click("form[action='/users/dan/disable'] button")
        .await;
    browser.wait_for_text("dan is disabled").await;
    browser
        .fill(
            "form[action='/users/dan/password'] input[name=password]",
            "another long password",
        )
        .await;
    browser
        .click("form[action='/users/dan/password'] button")
        .await;
    browser
        .wait_for_text("The password of dan was changed")
        .await;

    // An import with an unknown group: every row shown, nothing imported.
    browser.goto(&format!("{admin}/users")).await;
    let bad = "user,display name,role,group,password\neve,Eve,pupil,year6,a long pupil password\nfin,Fin,pupil,year9,a long pupil password\n";
    browser
        .fill("form[action='/users/import'] textarea", bad)
        .await;
    browser.click("form[action='/users/import'] button").await;
    let preview = browser.wait_for_text("1 of 2 rows have a problem").await;
    assert!(
        preview.contains("the policy defines no group `year9`"),
        "{preview}"
    );
    assert!(preview.contains("ready"), "{preview}");
    browser
        .screenshot("admin-users-import-preview-refused")
        .await;
    assert_eq!(
        browser
            .script("return document.querySelectorAll(\"input[name=apply]\").length")
            .await,
        0
    );

    browser.goto(&format!("{admin}/users")).await;
    let good = bad.replace("year9", "year6");
    browser
        .fill("form[action='/users/import'] textarea", &good)
        .await;
    browser.click("form[action='/users/import'] button").await;
    browser.wait_for_text("All 2 rows can be imported").await;
    browser.screenshot("admin-users-import-preview").await;
    browser.click("form[action='/users/import'] button").await;
    browser.wait_for_text("Imported 2 accounts").await;
    browser.goto(&format!("{admin}/users?q=year6")).await;
    assert!(browser.text().await.contains("5 of 9 accounts"));
    browser.screenshot("admin-users").await;
}

/// The groups page lists year6; a new group with a bad address range is refused in
/// words with the typing kept; fixed, it is added, and then removed; every drop-down
/// of the rules page offers it.
async fn groups_are_listed_added_and_removed(scene: &Scene<'_>) {
    let Scene { browser, admin, .. } = *scene;
    browser.goto(&format!("{admin}/rules/groups")).await;
    let page = browser.text().await;
    assert!(page.contains("year6"), "{page}");
    assert_eq!(
        browser
            .value("input[form='edit-year6'][name=description]")
            .await,
        "Year 6"
    );
    browser.fill("#new-group input[name=name]", "year5").await;
    browser
        .fill("#new-group input[name=description]", "Year 5, Mrs Khan")
        .await;
    browser
        .fill("#new-group input[name=addresses]", "10.0.5")
        .await;
    browser.click("#new-group button[type=submit]").await;
    let refused = browser
        .wait_for_text("`10.0.5` is not an address or a range such as 10.0.6.0/24")
        .await;
    assert!(!refused.contains("line "), "no file lines: {refused}");
    assert_eq!(browser.value("#new-group input[name=name]").await, "year5");
    assert_eq!(
        browser.value("#new-group input[name=description]").await,
        "Year 5, Mrs Khan"
    );
    browser.screenshot("admin-group-refused-in-words").await;
    browser
        .fill("#new-group input[name=addresses]", "10.0.5.0/24")
        .await;
    browser.click("#new-group button[type=submit]").await;
    browser.wait_for_text("Saved: group year5 (pupil)").await;
    assert_eq!(
        browser
            .value("input[form='edit-year5'][name=addresses]")
            .await,
        "10.0.5.0/24"
    );
    browser.screenshot("admin-groups").await;

    // Every place a group is chosen offers it (once the policy has reloaded).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        browser.goto(&format!("{admin}/rules")).await;
        let found = browser
            .script("return document.querySelectorAll(\"option[value=year5]\").length")
            .await;
        if found != 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "year5 never offered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for select in [
        "form[action='/rules'] select[name=group]",
        "form[action='/rules/unblock'] select[name=scope]",
    ] {
        let options = browser
            .script(&format!(
                "return [...document.querySelectorAll(\"{select} option\")].map(o => o.value).join(' ')"
            ))
            .await;
        let options = options.as_str().unwrap_or_default().to_owned();
        assert!(options.contains("year5"), "{select}: {options}");
    }

    browser.goto(&format!("{admin}/rules/groups")).await;
    browser
        .click("form[action='/rules/groups/remove']:has(input[name=name][value=year5]) button")
        .await;
    browser.wait_for_text("Saved: removed group year5").await;
}

/// A list entry that is not a domain is refused with what is wrong with it, and the
/// list keeps what was typed.
async fn a_bad_site_is_refused_in_words_and_the_typing_kept(scene: &Scene<'_>) {
    let Scene { browser, admin, .. } = *scene;
    browser.goto(&format!("{admin}/rules")).await;
    let list = "form[action='/rules/list']:has(input[name=scope][value='pupil/year6']):has(input[name=kind][value=allow])";
    browser
        .fill(&format!("{list} textarea"), "bbc.co.uk\npinterest")
        .await;
    browser.click(&format!("{list} button")).await;
    let refused = browser
        .wait_for_text("`pinterest` is not a domain: did you mean pinterest.com?")
        .await;
    assert!(
        !refused.contains("roles.pupil") && !refused.contains("policy.toml"),
        "no policy-file words: {refused}"
    );
    assert_eq!(
        browser.value(&format!("{list} textarea")).await,
        "bbc.co.uk\npinterest"
    );
    browser.screenshot("admin-list-refused-in-words").await;
}

/// Site groups are listed apart and cannot be blocked; stopping a block for every
/// pupil is confirmed with its effect in words (cancelled here: nothing changes);
/// an allow-list entry for every pupil is confirmed and then made.
async fn site_groups_are_not_offered_and_wide_changes_are_confirmed(scene: &Scene<'_>) {
    let Scene {
        browser,
        safegate,
        admin,
        port,
    } = *scene;
    browser.goto(&format!("{admin}/rules")).await;
    assert_eq!(
        browser
            .script("return document.querySelectorAll(\"form[action='/rules/block'] input[name=category][value=health]\").length")
            .await,
        0,
        "a site group is offered for blocking"
    );
    let page = browser.text().await;
    assert!(
        page.contains("Site groups") && page.contains("Health and support services"),
        "{page}"
    );

    browser
        .click("form[action='/rules/block']:has(input[name=scope][value=pupil]):has(input[name=category][value=social]) button")
        .await;
    browser
        .wait_for_text("This change allows every site in social for all 3 pupils until someone blocks it again")
        .await;
    browser.screenshot("admin-confirm-wide-change").await;
    browser.click("#confirm a").await;
    browser.wait_for_text("Filtering rules").await;
    let chat = format!("http://chat.test:{port}/bytes/2");
    wait_for_status(&safegate.client(), &chat, 403).await;

    let list = "form[action='/rules/list']:has(input[name=scope][value=pupil]):has(input[name=kind][value=allow])";
    browser.fill(&format!("{list} textarea"), "chat.test").await;
    browser.click(&format!("{list} button")).await;
    browser
        .wait_for_text("This change allows chat.test for all 3 pupils until removed")
        .await;
    browser.click("#confirm button[type=submit]").await;
    browser.wait_for_text("Saved: allow list of pupil").await;
    wait_for_status(&safegate.client(), &chat, 200).await;
    // Put it back for the next step.
    browser.fill(&format!("{list} textarea"), "").await;
    browser.click(&format!("{list} button")).await;
    browser.wait_for_text("Saved: allow list of pupil").await;
    wait_for_status(&safegate.client(), &chat, 403).await;
}

/// Sends a review request for `url` from `client` (through the block page's form).
async fn ask_for_review(safegate: &SafeGate, client: &reqwest::Client, blocked: &str, url: &str) {
    let block_page = client
        .get(blocked)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let token = review_form_fields(&block_page)[3].1.clone();
    let review = client
        .post(format!("http://{}/safegate/review", safegate.proxy))
        .form(&[
            ("url", url),
            ("rule", "category:pupil:social"),
            ("categories", "social"),
            ("comment", "for the class blog"),
            ("token", token.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(review.status(), 200);
}

/// Ava (year6) asks for chat.test; the queue says when, the menu how many wait; the
/// approval defaults to her group for today: Ava and Ben get it, Cal (no group) does
/// not. A page of an HTTPS site that is not decrypted cannot be allowed alone.
async fn a_review_is_approved_for_the_askers_group_for_today(scene: &Scene<'_>) {
    let Scene {
        browser,
        safegate,
        admin,
        port,
    } = *scene;
    let chat = format!("http://chat.test:{port}/bytes/2");
    let ava = client_as(safegate, "ava", PASSWORD);
    let cal = client_as(safegate, "cal", PASSWORD);
    ask_for_review(safegate, &ava, &chat, &chat).await;
    ask_for_review(safegate, &ava, &chat, "https://chat.test/class-blog").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        browser.goto(&format!("{admin}/rules/reviews")).await;
        if browser.text().await.contains("Review requests (2 waiting)") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reviews not counted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let queue = browser.text().await;
    assert!(queue.contains("by ava (pupil, year6"), "{queue}");
    assert!(queue.contains("Asked "), "{queue}");
    browser.screenshot("admin-review-queue").await;

    // The HTTPS page alone: refused with the reason.
    let https_form = "form[action='/rules/reviews/decide']:has(input[value=approve]):has(input[name=entry][value='chat.test'])";
    let first = browser
        .script("return [...document.querySelectorAll(\"form[action='/rules/reviews/decide'] input[name=decrypt]\")].length")
        .await;
    assert_eq!(
        first, 1,
        "the decrypt choice is offered for the HTTPS request"
    );
    browser
        .fill(
            &format!("section:has(input[name=decrypt]) {https_form} input[name=entry]"),
            "chat.test/class-blog",
        )
        .await;
    browser
        .click(&format!(
            "section:has(input[name=decrypt]) {https_form} button"
        ))
        .await;
    browser
        .wait_for_text("a rule for one page of chat.test cannot apply over HTTPS while SafeGate does not decrypt chat.test")
        .await;
    assert_eq!(
        browser
            .value(
                "section:has(input[name=decrypt]) form:has(input[value=approve]) input[name=entry]"
            )
            .await,
        "chat.test/class-blog",
        "the refused approval keeps what was typed"
    );
    browser.screenshot("admin-review-https-path-refused").await;

    // The plain request: the defaults are her group, for today.
    let plain = "section:not(:has(input[name=decrypt])) form[action='/rules/reviews/decide']:has(input[value=approve])";
    assert_eq!(
        browser.value(&format!("{plain} select[name=who]")).await,
        "group"
    );
    assert_eq!(
        browser
            .value(&format!("{plain} select[name=duration]"))
            .await,
        "today"
    );
    browser.click(&format!("{plain} button")).await;
    browser
        .wait_for_text("allowed chat.test for year6 until")
        .await;
    browser.screenshot("admin-review-approved-for-group").await;
    wait_for_status(&ava, &chat, 200).await;
    let ben = client_as(safegate, "ben", PASSWORD);
    wait_for_status(&ben, &chat, 200).await;
    assert_eq!(cal.get(&chat).send().await.unwrap().status().as_u16(), 403);

    // Cal asks too: his block page says it is waiting, then, once declined, why.
    ask_for_review(safegate, &cal, &chat, &chat).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let page = cal.get(&chat).send().await.unwrap().text().await.unwrap();
        if page.contains("An adult at school has not looked yet") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not waiting: {page}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    browser.goto(&format!("{admin}/rules/reviews")).await;
    let decline = "form[action='/rules/reviews/decide']:has(input[value=reject])";
    browser
        .fill(
            &format!("{decline} input[name=reason]"),
            "Not needed for the blog",
        )
        .await;
    browser.click(&format!("{decline} button")).await;
    browser.wait_for_text("Declined the request").await;
    let page = cal.get(&chat).send().await.unwrap().text().await.unwrap();
    assert!(
        page.contains("it stays blocked. They said: <q lang=\"en\">Not needed for the blog</q>"),
        "{page}"
    );
}

/// HMAC-SHA1 TOTP code (RFC 6238, 6 digits) of `secret` at time step `step`.
fn totp(secret: &[u8], step: u64) -> String {
    use sha1::{Digest, Sha1};
    let mut block = [0u8; 64];
    block[..secret.len()].copy_from_slice(secret);
    let mut inner = Sha1::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(step.to_be_bytes());
    let inner = inner.finalize();
    let mut outer = Sha1::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner);
    let hash = outer.finalize();
    let offset = usize::from(hash[19] & 0x0f);
    let binary = (u32::from(hash[offset]) & 0x7f) << 24
        | u32::from(hash[offset + 1]) << 16
        | u32::from(hash[offset + 2]) << 8
        | u32::from(hash[offset + 3]);
    format!("{:06}", binary % 1_000_000)
}

fn base32_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut buffer, mut bits, mut out) = (0u32, 0u32, Vec::new());
    for c in text.chars().filter(|c| !c.is_whitespace()) {
        buffer = (buffer << 5) | ALPHABET.find(c).unwrap() as u32;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}

fn step_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 30
}

/// With `admin.require_2fa`, a filter admin must enrol first (a QR code drawn by
/// SafeGate, a code computed here), gets recovery codes, and from then on signs in
/// with password and code; a wrong code is refused, a recovery code works once.
#[tokio::test]
async fn admins_enrol_in_two_factor_sign_in_and_use_it() {
    bounded(async {
        let Some(browser) = Browser::start().await else {
            return;
        };
        let policy_dir = tempfile::tempdir().unwrap();
        for (name, text) in [
            ("illegal.txt", "illegal.test\n"),
            ("gambling.txt", "bet.test\n"),
            ("social.txt", "chat.test\n"),
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
            "admin.require_2fa=true".to_owned(),
        ];
        let refs: Vec<&str> = sets.iter().map(String::as_str).collect();
        let safegate = SafeGate::start(&refs).await;
        let admin = format!("http://{}", safegate.admin);

        // The password alone leads to enrolment, and nothing else opens.
        sign_in(&browser, &admin, "fiona").await;
        browser
            .wait_for_text("Your account needs two-factor sign-in before you can use the admin pages")
            .await;
        browser.goto_failing(&format!("{admin}/rules")).await;
        browser.wait_for_text("scan this code").await;
        assert_eq!(
            browser.script("return document.querySelectorAll('figure svg rect, figure svg path').length > 0").await,
            true,
            "the QR code is drawn"
        );
        browser.screenshot("admin-two-factor-enrol").await;
        let secret_text = browser
            .script("return document.getElementById('totp-secret').textContent")
            .await;
        let secret = base32_decode(secret_text.as_str().unwrap());
        assert_eq!(secret.len(), 20);
        browser.fill("form[action='/account/two-factor/enrol'] input[name=code]", "12345").await;
        browser.click("form[action='/account/two-factor/enrol'] button").await;
        browser.wait_for_text("That code is not right").await;
        browser
            .fill("form[action='/account/two-factor/enrol'] input[name=code]", &totp(&secret, step_now()))
            .await;
        browser.click("form[action='/account/two-factor/enrol'] button").await;
        browser.wait_for_text("Two-factor sign-in is on.").await;
        let recovery = browser
            .script("return [...document.querySelectorAll('#recovery-codes code')].map(c => c.textContent)")
            .await;
        let recovery: Vec<String> = recovery
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(recovery.len(), 10);
        browser.screenshot("admin-two-factor-recovery-codes").await;
        browser.goto(&format!("{admin}/rules")).await;
        browser.wait_for_text("Filtering rules").await;
        browser.click("header form[action='/logout'] button[type=submit]").await;
        browser.wait_for_text("User name").await;

        // Password, then a wrong code, then the right one (a later step: the
        // enrolment's step is used).
        browser.goto(&format!("{admin}/login")).await;
        browser.fill("input[name=user]", "fiona").await;
        browser.fill("input[name=password]", PASSWORD).await;
        browser.click("form[action='/login'] button[type=submit]").await;
        browser.wait_for_text("Type the 6-digit code").await;
        browser.fill("input[name=code]", "000000").await;
        browser.click("form[action='/login/code'] button").await;
        browser.wait_for_text("That code is not right").await;
        browser.screenshot("admin-two-factor-wrong-code").await;
        browser.fill("input[name=code]", &totp(&secret, step_now() + 1)).await;
        browser.click("form[action='/login/code'] button").await;
        browser.wait_for_text("Sign out").await;
        browser.click("header form[action='/logout'] button[type=submit]").await;
        browser.wait_for_text("User name").await;

        // A recovery code works once.
        for (attempt, expected) in [(0, "Sign out"), (1, "That code is not right")] {
            browser.goto(&format!("{admin}/login")).await;
            browser.fill("input[name=user]", "fiona").await;
            browser.fill("input[name=password]", PASSWORD).await;
            browser.click("form[action='/login'] button[type=submit]").await;
            browser.wait_for_text("Type the 6-digit code").await;
            browser.fill("input[name=code]", &recovery[0]).await;
            browser.click("form[action='/login/code'] button").await;
            browser.wait_for_text(expected).await;
            if attempt == 0 {
                browser.click("header form[action='/logout'] button[type=submit]").await;
                browser.wait_for_text("User name").await;
            }
        }
    })
    .await;
}

async fn sign_out(browser: &Browser) {
    browser
        .click("header form[action='/logout'] button[type=submit]")
        .await;
    browser.wait_for_text("User name").await;
}

/// Tom teaches year6: he unblocks gambling for them for a lesson (Ava gets bet.test,
/// Cal does not), then keeps them on chat.test alone (bet.test is blocked again, with
/// the reason); the filter admin sees both on the rules page; Tom ends the focus
/// early and bet.test opens again.
async fn a_teacher_unblocks_for_a_lesson_and_sets_focus(scene: &Scene<'_>) {
    let Scene {
        browser,
        safegate,
        admin,
        port,
    } = *scene;
    let bet = format!("http://bet.test:{port}/bytes/4");
    let chat = format!("http://chat.test:{port}/bytes/2");
    let ava = client_as(safegate, "ava", PASSWORD);
    let cal = client_as(safegate, "cal", PASSWORD);
    sign_out(browser).await;
    sign_in(browser, admin, "tom").await;
    browser.goto(&format!("{admin}/teach")).await;
    let unblock = "form[action='/teach/unblock']";
    browser
        .choose(&format!("{unblock} select[name=group]"), "year6")
        .await;
    browser
        .choose(&format!("{unblock} select[name=category]"), "gambling")
        .await;
    assert_eq!(
        browser
            .value(&format!("{unblock} input[name=minutes]"))
            .await,
        "60"
    );
    browser
        .fill(
            &format!("{unblock} input[name=reason]"),
            "probability lesson",
        )
        .await;
    browser.click(&format!("{unblock} button")).await;
    browser
        .wait_for_text("Done: unblock gambling for pupil/year6")
        .await;
    wait_for_status(&ava, &bet, 200).await;
    assert_eq!(cal.get(&bet).send().await.unwrap().status().as_u16(), 403);

    let focus = "form[action='/teach/focus']";
    browser
        .fill(&format!("{focus} textarea"), "chat.test")
        .await;
    browser
        .fill(&format!("{focus} input[name=minutes]"), "20")
        .await;
    browser
        .fill(&format!("{focus} input[name=reason]"), "class blog")
        .await;
    browser.click(&format!("{focus} button")).await;
    browser
        .wait_for_text("Done: focus pupil/year6 on chat.test")
        .await;
    wait_for_status(&ava, &bet, 403).await;
    let page = ava.get(&bet).send().await.unwrap().text().await.unwrap();
    assert!(
        page.contains("only the lesson&#x27;s sites are open until")
            || page.contains("only the lesson's sites are open until"),
        "{page}"
    );
    assert_eq!(ava.get(&chat).send().await.unwrap().status().as_u16(), 200);
    browser.screenshot("teacher-focus").await;

    // The filter admin sees both, with who and why.
    sign_out(browser).await;
    sign_in(browser, admin, "fiona").await;
    browser.goto(&format!("{admin}/rules")).await;
    let rules = browser.text().await;
    assert!(rules.contains("granted_by: tom"), "{rules}");
    assert!(rules.contains("reason: class blog"), "{rules}");
    assert!(rules.contains("category: gambling"), "{rules}");
    sign_out(browser).await;

    // Tom ends the focus early.
    sign_in(browser, admin, "tom").await;
    browser.goto(&format!("{admin}/teach")).await;
    browser
        .click("li:has(form[action='/teach/end']):last-child form button")
        .await;
    browser.wait_for_text("Ended.").await;
    let left = browser.text().await;
    assert!(left.contains("gambling unblocked for year6"), "{left}");
    assert!(!left.contains("focus on chat.test"), "{left}");
    wait_for_status(&ava, &bet, 200).await;
}
