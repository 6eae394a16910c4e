//! Directory log-ins (`[auth.ldap]`) against a real OpenLDAP `slapd` started by the
//! test over ldaps with a test CA: a pupil and a teacher get the role and group of
//! their directory group (the first server in the list is down: failover), a wrong
//! password, a disabled person and a person in no mapped group are refused, a local
//! SafeGate user still logs in; with the directory stopped, a log-in verified before
//! keeps working, one never verified is told the directory cannot be reached, and the
//! technician gets a system notice; an admin sign-in accepted before still works.
//!
//! Needs Debian's `slapd` (`apt-get install slapd`); skipped without it unless
//! `SAFEGATE_REQUIRE_OPS_TOOLS` is set (by `.ci/run`), where that fails the test.

use crate::auth::{World, client_as, get, metric, records_after_stop};
use crate::kit::bounded;
use crate::kit::receivers::Webhook;
use crate::kit::slapd::{self, BASE, BIND_DN, BIND_PASSWORD, Slapd};

/// Whether slapd is here; says why the test is skipped (or fails where required).
fn slapd_available() -> bool {
    let here = slapd::slapd_binary().is_some();
    if !here {
        assert!(
            std::env::var_os("SAFEGATE_REQUIRE_OPS_TOOLS").is_none(),
            "slapd is required (SAFEGATE_REQUIRE_OPS_TOOLS is set) but not installed"
        );
        eprintln!("SKIPPED: slapd is not installed here (apt-get install slapd)");
    }
    here
}

/// `auth.ldap` for `slapd`, with a dead server first and a short credential cache.
fn ldap_set(slapd: &Slapd) -> String {
    let dead = format!("ldaps://127.0.0.1:{}", slapd::free_port());
    format!(
        "auth.ldap={{ servers = [{dead:?}, {url:?}], ca_file = {ca:?}, bind_dn = {BIND_DN:?}, \
         bind_password = {BIND_PASSWORD:?}, base_dn = {BASE:?}, timeout = \"3s\", \
         user_filter = \"(&(objectClass=inetOrgPerson)(uid={{user}})(!(description=disabled)))\", \
         group_filter = \"(&(objectClass=groupOfNames)(member={{dn}}))\", \
         groups = [{{ dn = \"cn=Year6,ou=Groups,{BASE}\", role = \"pupil\", group = \"year6\" }}, \
                   {{ dn = \"CN=Staff, OU=Groups,{BASE}\", role = \"staff\", permissions = [\"reports\"] }}] }}",
        url = slapd.url(),
        ca = slapd.ca_file.display().to_string(),
    )
}

#[tokio::test]
async fn directory_people_log_in_with_their_groups_and_survive_an_outage() {
    if !slapd_available() {
        return;
    }
    bounded(async {
        let mut slapd = Slapd::start().await;
        let world = World::new().await;
        world
            .seed_users(&[("local.admin", "staff", None, "local-pw")])
            .await;
        let ldap = ldap_set(&slapd);
        let webhook = Webhook::start().await;
        let hook = format!("delivery.webhook_url={:?}", webhook.url);
        let safegate = world
            .safegate(&[
                "auth.required=true",
                "auth.credential_cache_ttl=\"1s\"",
                &ldap,
                &hook,
            ])
            .await;
        let bet = world.url("bet.test", "/headers");

        // doctor connects to each server as the search account: one answers, the
        // dead first one is named (no spare for failover).
        let doctor_sets = [
            "--set".to_owned(),
            ldap.clone(),
            "--set".to_owned(),
            format!("data_dir={:?}", world.data_dir().display().to_string()),
        ];
        let doctor_args: Vec<&str> = doctor_sets.iter().map(String::as_str).collect();
        let (_, out) = crate::ops::doctor(&doctor_args).await;
        assert!(out.contains("WARN  directory"), "{out}");
        assert!(out.contains(&format!("{} answered", slapd.url())), "{out}");
        let school = world.url("school.test", "/headers");

        // Alice is in Year6: a pupil of year6, gambling blocked; Tom is staff.
        let alice = client_as(&safegate, "alice", "alice-pw");
        assert_eq!(get(&alice, &school).await.0, 200);
        let (status, _, body) = get(&alice, &bet).await;
        assert_eq!(status, 403, "{body}");
        let tom = client_as(&safegate, "Tom", "tom-pw");
        assert_eq!(get(&tom, &bet).await.0, 200);
        // Tom's Staff group lets him sign in to the admin pages (remembered for an
        // outage below).
        assert_eq!(admin_sign_in(&safegate, "tom", "tom-pw").await.0, 303);
        // A local user is checked locally as before.
        assert_eq!(
            get(&client_as(&safegate, "local.admin", "local-pw"), &bet)
                .await
                .0,
            200
        );
        // Refused: a wrong password, a disabled person, a person in no mapped group,
        // and an empty password (an "unauthenticated bind" LDAP would accept).
        for (user, password) in [
            ("alice", "wrong"),
            ("dora", "dora-pw"),
            ("olly", "olly-pw"),
            ("alice", ""),
            ("nobody", "x"),
        ] {
            let (status, _, _) = get(&client_as(&safegate, user, password), &school).await;
            assert_eq!(status, 407, "{user}:{password}");
        }
        assert!(metric(&safegate, "safegate_proxy_auth_total{result=\"failed\"}").await >= 5.0);

        // The directory goes away: Alice's verified log-in keeps working once her cached
        // credentials lapse (auth.ldap.cache_ttl), counted as an unreachable directory.
        slapd.stop().await;
        let (ok, out) = crate::ops::doctor(&doctor_args).await;
        assert!(!ok, "{out}");
        assert!(out.contains("FAIL  directory"), "{out}");
        assert!(out.contains("no directory server answered"), "{out}");
        let unreachable = "safegate_proxy_auth_total{result=\"directory_unreachable\"}";
        crate::ops::poll("a log-in checked while the directory is down", || async {
            let (status, _, body) = get(&alice, &school).await;
            assert_eq!(status, 200, "{body}");
            (metric(&safegate, unreachable).await >= 1.0).then_some(())
        })
        .await;
        // A log-in never verified cannot be checked: 503 in plain words.
        let (status, reason, body) = get(&client_as(&safegate, "Alice", "alice-pw"), &school).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(reason, "proxy-auth-directory-down");
        assert!(body.contains("cannot reach the school"), "{body}");
        // The technician is told (here through the webhook), once.
        let told = crate::ops::poll("a directory-unreachable notice", || async {
            let notices: Vec<serde_json::Value> = webhook
                .bodies()
                .iter()
                .filter_map(|body| serde_json::from_str::<serde_json::Value>(body).ok())
                .filter(|value| value["system"]["kind"] == "directory_unreachable")
                .collect();
            (!notices.is_empty()).then_some(notices)
        })
        .await;
        let summary = told[0]["system"]["summary"].as_str().unwrap_or_default();
        assert!(summary.contains("cannot be reached"), "{summary}");
        // Tom can still sign in to the admin pages with the password accepted before
        // (auth.ldap.cache_ttl); a wrong one and a person never signed in cannot.
        let before = metric(&safegate, unreachable).await;
        let (status, tom_session) = admin_sign_in(&safegate, "Tom", "tom-pw").await;
        assert_eq!(status, 303);
        let (status, home) = admin_get(&safegate, "/", &tom_session).await;
        assert_eq!(status, 200, "{home}");
        assert!(home.contains("Tom Teacher"), "{home}");
        assert_eq!(admin_sign_in(&safegate, "tom", "wrong").await.0, 401);
        assert_eq!(admin_sign_in(&safegate, "alice", "alice-pw").await.0, 401);
        assert!(metric(&safegate, unreachable).await >= before + 3.0);

        let records = records_after_stop(safegate, &world.data_dir()).await;
        let by = |user: &str| records.iter().find(|r| r.user.as_deref() == Some(user));
        let alice = by("alice").unwrap_or_else(|| panic!("no record of alice: {records:?}"));
        assert_eq!(
            (alice.role.as_str(), alice.group.as_deref()),
            ("pupil", Some("year6"))
        );
        let tom = by("tom").unwrap_or_else(|| panic!("no record of tom"));
        assert_eq!(tom.role, "staff");
    })
    .await;
}

#[tokio::test]
async fn directory_settings_are_checked_with_clear_errors() {
    bounded(async {
        let config = crate::kit::process::shipped_config().display().to_string();
        let bad = "auth.ldap={ servers = [\"ldap://dc1.school.test\"], bind_dn = \"cn=x\", \
                   base_dn = \"dc=school\", user_filter = \"(uid=x)\", \
                   groups = [{ dn = \"cn=y6\", role = \"teacher\" }] }";
        let (status, stdout, stderr) = crate::kit::process::run_to_end(&[
            "config", "check", "--config", &config, "--set", bad,
        ])
        .await;
        assert!(!status.success(), "{stdout}");
        for needle in [
            "auth.ldap.servers[0]",
            "would send passwords unencrypted",
            "auth.ldap.bind_password",
            "auth.ldap.user_filter",
            "auth.ldap.groups[0].role",
        ] {
            assert!(stderr.contains(needle), "{needle}: {stderr}");
        }
    })
    .await;
}

/// `auth.ldap` for the sync and admin test: Staff may see reports, Year6 are pupils,
/// anyone else a pupil without a group.
fn ldap_with_permissions(slapd: &Slapd) -> String {
    format!(
        "auth.ldap={{ servers = [{url:?}], ca_file = {ca:?}, bind_dn = {BIND_DN:?}, \
         bind_password = {BIND_PASSWORD:?}, base_dn = {BASE:?}, timeout = \"3s\", \
         user_filter = \"(&(objectClass=inetOrgPerson)(uid={{user}})(!(description=disabled)))\", \
         group_filter = \"(&(objectClass=groupOfNames)(member={{dn}}))\", \
         unmatched_role = \"pupil\", \
         groups = [{{ dn = \"cn=Staff,ou=Groups,{BASE}\", role = \"staff\", permissions = [\"reports\"] }}, \
                   {{ dn = \"cn=Year6,ou=Groups,{BASE}\", role = \"pupil\", group = \"year6\" }}] }}",
        url = slapd.url(),
        ca = slapd.ca_file.display().to_string(),
    )
}

/// Signs in to the admin interface with a plain HTTP client: the answer's status and
/// the cookies to send next.
async fn admin_sign_in(
    safegate: &crate::kit::process::SafeGate,
    user: &str,
    password: &str,
) -> (u16, Vec<String>) {
    let http = admin_http();
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
    cookies.extend(cookies_of(&answer));
    (answer.status().as_u16(), cookies)
}

/// `GET path` on the admin listener with `cookies`: status and body.
async fn admin_get(
    safegate: &crate::kit::process::SafeGate,
    path: &str,
    cookies: &[String],
) -> (u16, String) {
    let answer = admin_http()
        .get(format!("http://{}{path}", safegate.admin))
        .header("cookie", cookies.join("; "))
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    (status, answer.text().await.unwrap())
}

fn admin_http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap()
}

fn cookies_of(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_owned))
        .filter(|c| !c.ends_with('='))
        .collect()
}

/// The users as `safegate users list --json` shows them, by name.
async fn listed(world: &World) -> std::collections::HashMap<String, serde_json::Value> {
    let out = world.users(&["list", "--json"], "").await;
    let users: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    users
        .into_iter()
        .map(|u| (u["name"].as_str().unwrap().to_owned(), u))
        .collect()
}

#[tokio::test]
async fn directory_people_sign_in_to_admin_and_are_synced_then_disabled() {
    if !slapd_available() {
        return;
    }
    bounded(async {
        let slapd = Slapd::start().await;
        let world = World::new().await;
        world
            .seed_users(&[("olly", "staff", None, "local-olly")])
            .await;
        let ldap = ldap_with_permissions(&slapd);

        // The first sync (SafeGate not running: the command holds the database):
        // alice and tom are added with their names and groups; olly is SafeGate's own
        // user and left alone; dora is filtered out as disabled in the directory.
        let out = world.users(&["sync", "--set", &ldap], "").await;
        assert!(out.contains("2 added"), "{out}");
        assert!(out.contains("left alone") && out.contains("olly"), "{out}");
        let users = listed(&world).await;
        assert_eq!(users["alice"]["display_name"], "Alice Pupil");
        assert_eq!(users["alice"]["group"], "year6");
        assert_eq!(users["tom"]["role"], "staff");
        assert_eq!(users["olly"]["role"], "staff");
        assert!(!users.contains_key("dora"), "{users:?}");

        let safegate = world
            .safegate(&[
                "auth.required=true",
                "auth.credential_cache_ttl=\"1s\"",
                &ldap,
            ])
            .await;
        // Tom's Staff group gives the reports permission: he signs in with his
        // directory password and sees his name; a wrong password and Alice (a
        // pupil, no permission) are refused.
        let (status, tom) = admin_sign_in(&safegate, "Tom", "tom-pw").await;
        assert_eq!(status, 303);
        let (status, home) = admin_get(&safegate, "/", &tom).await;
        assert_eq!(status, 200, "{home}");
        assert!(home.contains("Tom Teacher"), "{home}");
        assert!(home.contains("href=\"/reports\""), "{home}");
        assert_eq!(admin_get(&safegate, "/rules", &tom).await.0, 403);
        assert_eq!(admin_sign_in(&safegate, "tom", "wrong").await.0, 401);
        assert_eq!(admin_sign_in(&safegate, "alice", "alice-pw").await.0, 401);

        // Imported people still log in to the proxy with their directory password.
        let school = world.url("school.test", "/headers");
        let alice = client_as(&safegate, "alice", "alice-pw");
        assert_eq!(get(&alice, &school).await.0, 200);

        // Alice and Tom leave the school: the next sync (through the running
        // service) disables them, keeps their records, ends Tom's admin session and
        // refuses Alice's proxy log-in.
        slapd.delete(&format!("uid=alice,ou=People,{BASE}")).await;
        slapd.delete(&format!("uid=tom,ou=People,{BASE}")).await;
        slapd.delete(&format!("uid=dora,ou=People,{BASE}")).await;
        // Olly is still listed (a directory that lists nobody disables nobody).
        let out = world.users(&["sync", "--set", &ldap], "").await;
        assert!(out.contains("2 disabled"), "{out}");
        let users = listed(&world).await;
        assert_eq!(users["alice"]["disabled"], true);
        assert_eq!(users["tom"]["disabled"], true);
        assert_eq!(users["olly"]["disabled"], false);
        assert_eq!(admin_get(&safegate, "/", &tom).await.0, 401);
        crate::ops::poll("alice refused after the sync", || async {
            (get(&alice, &school).await.0 == 407).then_some(())
        })
        .await;
        let records = records_after_stop(safegate, &world.data_dir()).await;
        assert!(records.iter().any(|r| r.user.as_deref() == Some("alice")));
    })
    .await;
}

#[tokio::test]
async fn the_running_service_syncs_the_directory_on_its_schedule() {
    if !slapd_available() {
        return;
    }
    bounded(async {
        let slapd = Slapd::start().await;
        let world = World::new().await;
        let ldap = ldap_with_permissions(&slapd).replacen(
            "timeout = \"3s\"",
            "timeout = \"3s\", sync_interval = \"5m\"",
            1,
        );
        let safegate = world.safegate(&[&ldap]).await;
        // The first sync runs at start; later ones every sync_interval.
        let users = crate::ops::poll("the scheduled sync at start", || async {
            let users = listed(&world).await;
            (users.len() == 3).then_some(users)
        })
        .await;
        assert_eq!(users["alice"]["group"], "year6");
        assert_eq!(users["olly"]["display_name"], "Olly Other");
        crate::auth::stop(safegate).await;
    })
    .await;
}
