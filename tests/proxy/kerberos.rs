//! Kerberos single sign-on (`[auth.kerberos]`, SPNEGO "Negotiate") against a real MIT
//! KDC started by the test on loopback: the `407` offers Negotiate and Basic; `kinit`
//! then `curl --proxy-negotiate` gets through as the person the ticket proves, with
//! their SafeGate role and group (a pupil is blocked from gambling), and the visit log
//! names them; a person who is not a SafeGate user gets the role of their directory
//! group (a real slapd); a principal SafeGate does not know and a bad token get `407`, not `500`.
//! A ticket holds for its connection (later requests on it need none), not for a
//! new one; a replayed ticket and an expired one are refused.
//!
//! Needs Debian's `krb5-kdc`, `krb5-admin-server` (kadmin.local) and `krb5-user`
//! (kinit); skipped without them unless `SAFEGATE_REQUIRE_OPS_TOOLS` is set (by
//! `.ci/run`), where that fails the test.

use tokio::io::AsyncWriteExt;
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

/// A Negotiate token for the proxy's service from the credential cache `cache`, never
/// sent to SafeGate: curl is pointed at a stand-in proxy on loopback that asks for
/// Negotiate and keeps the token of curl's answer.
async fn fresh_token(kdc: &Kdc, cache: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stand_in = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        loop {
            let head = crate::kit::raw::read_head(&mut stream).await;
            let token = head.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                let value = value.trim();
                (name.eq_ignore_ascii_case("proxy-authorization"))
                    .then(|| value.strip_prefix("Negotiate "))?
                    .map(str::to_owned)
            });
            let answer: &[u8] = match token {
                Some(_) => b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                None => b"HTTP/1.1 407 Proxy Authentication Required\r\nproxy-authenticate: Negotiate\r\ncontent-length: 0\r\n\r\n",
            };
            stream.write_all(answer).await.unwrap();
            if let Some(token) = token {
                return token;
            }
        }
    });
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "20",
            "--noproxy",
            "",
            "--proxy-negotiate",
            "-U",
            ":",
        ])
        .args([
            "-x",
            &format!("http://localhost:{port}"),
            "http://school.test/",
        ])
        .envs(kdc.env())
        .env("KRB5CCNAME", cache)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    stand_in.await.unwrap()
}

/// Sends `GET url` on `connection` with the `extra` header lines; the status.
async fn ask(connection: &mut tokio::net::TcpStream, url: &str, extra: &str) -> u16 {
    let host = url.split('/').nth(2).unwrap();
    let request = format!("GET {url} HTTP/1.1\r\nhost: {host}\r\n{extra}\r\n");
    connection.write_all(request.as_bytes()).await.unwrap();
    let (head, _) = crate::kit::raw::read_response(connection).await;
    crate::kit::raw::status_of(&head)
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

        // Negotiate is connection-based: on the connection a ticket came on, later
        // requests without credentials are Alice's (her gambling block applies); a
        // new connection without one is asked again, and the same ticket replayed
        // is refused.
        let token = fresh_token(&kdc, &alice).await;
        let mut connection = crate::kit::raw::connect(safegate.proxy).await;
        let with_ticket = format!("Proxy-Authorization: Negotiate {token}\r\n");
        assert_eq!(ask(&mut connection, &school, &with_ticket).await, 200);
        assert_eq!(ask(&mut connection, &bet, "").await, 403);
        assert_eq!(ask(&mut connection, &school, "").await, 200);
        let mut other = crate::kit::raw::connect(safegate.proxy).await;
        assert_eq!(ask(&mut other, &school, "").await, 407);
        let mut replay = crate::kit::raw::connect(safegate.proxy).await;
        assert_eq!(ask(&mut replay, &school, &with_ticket).await, 407);

        // A ticket that has expired (its token taken while it was valid, never shown
        // to SafeGate) is refused. The test realm allows 1 s of clock skew.
        let brief = kdc.kinit_with("alice", "alice-pw", &["-l", "2s"]).await;
        let token = fresh_token(&kdc, &brief).await;
        tokio::time::sleep(std::time::Duration::from_secs(4)).await;
        let mut late = crate::kit::raw::connect(safegate.proxy).await;
        let expired = format!("Proxy-Authorization: Negotiate {token}\r\n");
        assert_eq!(ask(&mut late, &school, &expired).await, 407);

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
