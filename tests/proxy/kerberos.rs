//! Kerberos single sign-on (`[auth.kerberos]`, SPNEGO "Negotiate") against a real MIT
//! KDC started by the test on loopback: the `407` offers Negotiate and Basic; `kinit`
//! then `curl --proxy-negotiate` gets through as the person the ticket proves, with
//! their SafeGate role and group (a pupil is blocked from gambling), and the visit log
//! names them; a person who is not a SafeGate user gets the role of their directory
//! group (a real slapd); a principal SafeGate does not know and a bad token get `407`, not `500`.
//!
//! Needs Debian's `krb5-kdc`, `krb5-admin-server` (kadmin.local) and `krb5-user`
//! (kinit); skipped without them unless `SAFEGATE_REQUIRE_OPS_TOOLS` is set (by
//! `.ci/run`), where that fails the test.

use tokio::process::Command;

use crate::auth::{World, records_after_stop};
use crate::kit::bounded;
use crate::kit::kdc::{self, Kdc, SERVICE};
use crate::kit::process::SafeGate;
use crate::kit::slapd::{BASE, BIND_DN, BIND_PASSWORD, Slapd};

fn kdc_available() -> bool {
    let here = kdc::installed() && crate::kit::slapd::slapd_binary().is_some();
    if !here {
        assert!(
            std::env::var_os("SAFEGATE_REQUIRE_OPS_TOOLS").is_none(),
            "the MIT KDC is required (SAFEGATE_REQUIRE_OPS_TOOLS is set) but not installed"
        );
        eprintln!("SKIPPED: krb5-kdc, krb5-admin-server or krb5-user is not installed here");
    }
    here
}

/// `curl -i` through the proxy (named `localhost`, as the service principal), with
/// Negotiate from the credential cache `cache` when given, or the raw header.
async fn curl(
    safegate: &SafeGate,
    kdc: &Kdc,
    url: &str,
    cache: Option<&str>,
    header: Option<&str>,
) -> String {
    let proxy = format!("http://localhost:{}", safegate.proxy.port());
    let mut args = vec![
        "-s",
        "-i",
        "--max-time",
        "20",
        "--noproxy",
        "",
        "-x",
        &proxy,
    ];
    if cache.is_some() {
        args.extend(["--proxy-negotiate", "-U", ":"]);
    }
    if let Some(header) = header {
        args.extend(["--proxy-header", header]);
    }
    args.push(url);
    let mut command = Command::new("curl");
    command.args(&args).envs(kdc.env());
    if let Some(cache) = cache {
        command.env("KRB5CCNAME", cache);
    }
    let output = command.output().await.unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The last response's status line in `curl -i` output (after a 407 round).
fn last_status(out: &str) -> &str {
    out.lines()
        .rfind(|l| l.starts_with("HTTP/"))
        .unwrap_or_default()
}

#[tokio::test]
async fn kerberos_tickets_get_through_the_proxy_as_their_person() {
    if !kdc_available() {
        return;
    }
    bounded(async {
        let kdc = Kdc::start(&[
            ("alice", "alice-pw"),
            ("tom", "tom-pw"),
            ("ghost", "ghost-pw"),
        ])
        .await;
        // Tom is not a SafeGate user: his groups come from the directory (slapd).
        let slapd = Slapd::start().await;
        let ldap = format!(
            "auth.ldap={{ servers = [{url:?}], ca_file = {ca:?}, bind_dn = {BIND_DN:?}, \
             bind_password = {BIND_PASSWORD:?}, base_dn = {BASE:?}, \
             user_filter = \"(&(objectClass=inetOrgPerson)(uid={{user}}))\", \
             group_filter = \"(&(objectClass=groupOfNames)(member={{dn}}))\", \
             groups = [{{ dn = \"cn=Staff,ou=Groups,{BASE}\", role = \"staff\" }}] }}",
            url = slapd.url(),
            ca = slapd.ca_file.display().to_string(),
        );
        let world = World::new().await;
        world
            .seed_users(&[("alice", "pupil", Some("year6"), "local-alice-pw")])
            .await;
        let kerberos = format!(
            "auth.kerberos={{ keytab = {:?}, service_principal = {SERVICE:?} }}",
            kdc.keytab.display().to_string()
        );
        let env = kdc.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let safegate = world
            .safegate_with_env(&["auth.required=true", &kerberos, &ldap], &env)
            .await;
        let school = world.url("school.test", "/headers");
        let bet = world.url("bet.test", "/headers");

        // No credentials: 407 offering Negotiate, and Basic for computers off the domain.
        let out = curl(&safegate, &kdc, &school, None, None).await;
        assert!(last_status(&out).contains(" 407"), "{out}");
        assert!(out.contains("proxy-authenticate: Negotiate\r\n"), "{out}");
        assert!(out.contains("proxy-authenticate: Basic realm="), "{out}");

        // Alice's ticket: through as alice, a year 6 pupil (gambling blocked).
        let alice = kdc.kinit("alice", "alice-pw").await;
        let out = curl(&safegate, &kdc, &school, Some(&alice), None).await;
        assert!(last_status(&out).contains(" 200"), "{out}");
        let out = curl(&safegate, &kdc, &bet, Some(&alice), None).await;
        assert!(last_status(&out).contains(" 403"), "{out}");

        // Tom's ticket: staff, from his directory group (gambling allowed).
        let tom = kdc.kinit("tom", "tom-pw").await;
        let out = curl(&safegate, &kdc, &bet, Some(&tom), None).await;
        assert!(last_status(&out).contains(" 200"), "{out}");

        // A person with a valid ticket SafeGate does not know, and a token that is no
        // ticket: 407, never 500.
        let ghost = kdc.kinit("ghost", "ghost-pw").await;
        let out = curl(&safegate, &kdc, &school, Some(&ghost), None).await;
        assert!(last_status(&out).contains(" 407"), "{out}");
        let bad = "Proxy-Authorization: Negotiate YIIBbm90IGEgdGlja2V0";
        let out = curl(&safegate, &kdc, &school, None, Some(bad)).await;
        assert!(last_status(&out).contains(" 407"), "{out}");

        let records = records_after_stop(safegate, &world.data_dir()).await;
        let alice = records
            .iter()
            .find(|r| r.user.as_deref() == Some("alice"))
            .unwrap_or_else(|| panic!("no record names alice: {records:?}"));
        assert_eq!(
            (alice.role.as_str(), alice.group.as_deref()),
            ("pupil", Some("year6"))
        );
        let tom = records.iter().find(|r| r.user.as_deref() == Some("tom"));
        assert_eq!(tom.map(|r| r.role.as_str()), Some("staff"), "{records:?}");
    })
    .await;
}
