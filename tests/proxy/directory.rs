//! Directory log-ins (`[auth.ldap]`) against a real OpenLDAP `slapd` started by the
//! test over ldaps with a test CA: a pupil and a teacher get the role and group of
//! their directory group (the first server in the list is down: failover), a wrong
//! password, a disabled person and a person in no mapped group are refused, a local
//! SafeGate user still logs in; with the directory stopped, a log-in verified before
//! keeps working, one never verified is told the directory cannot be reached, and the
//! technician gets a system notice.
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
                   {{ dn = \"CN=Staff, OU=Groups,{BASE}\", role = \"staff\" }}] }}",
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
