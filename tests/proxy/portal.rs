//! The login portal through the running binary (`auth.portal = "all"`, so that an
//! explicit-proxy client on loopback stands for a client that cannot send proxy
//! credentials): the redirect to `/safegate/login`, the escaped form, the token and
//! origin checks, wrong and right passwords, the identity in the visit log, the idle
//! time-out, `users disable` ending the session, and one person on two computers
//! (127.0.0.1 and 127.0.0.2) with `deny` and `latest-wins`; and, with the shipped
//! `portal = "transparent"`, a client of the transparent listeners (reached directly)
//! logging in and then identified on HTTP, HTTPS by server name and the explicit proxy.

use std::net::IpAddr;
use std::time::Duration;

use safegate_store::IdentifiedBy;
use tokio::io::AsyncWriteExt;

use crate::auth::{World, change_users, metric, records_after_stop, stop};
use crate::kit::process::SafeGate;
use crate::kit::{bounded, raw};
use crate::transparent::client_hello;

const ADA: (&str, &str, Option<&str>, &str) = ("ada.lovelace", "staff", None, "analytical engine");
const YEAR6: (&str, &str, Option<&str>, &str) = ("year6", "pupil", Some("year6"), "sunflower-2026");

/// A client of `safegate` without credentials, from `local` (127.0.0.1 by default),
/// that does not follow redirects.
fn browser(safegate: &SafeGate, local: Option<&str>) -> reqwest::Client {
    let mut builder = safegate
        .client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20));
    if let Some(local) = local {
        builder = builder.local_address(local.parse::<IpAddr>().unwrap());
    }
    builder.build().unwrap()
}

/// Status, `Location` and body of a GET.
async fn get(client: &reqwest::Client, url: &str) -> (u16, String, String) {
    let response = client.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, location, response.text().await.unwrap())
}

/// The value of the hidden `token` field on a page.
fn token_in(page: &str) -> String {
    let start = page
        .find("name=\"token\" value=\"")
        .unwrap_or_else(|| panic!("no token on {page}"))
        + "name=\"token\" value=\"".len();
    page[start..].split('"').next().unwrap().to_owned()
}

/// `http://<proxy>/safegate/login`.
fn login_url(safegate: &SafeGate) -> String {
    format!("{}/safegate/login", safegate.proxy_url())
}

/// POSTs the login form; returns status, `Location` and body.
async fn post_login(
    client: &reqwest::Client,
    safegate: &SafeGate,
    fields: &[(&str, &str)],
    origin: Option<&str>,
) -> (u16, String, String) {
    let mut request = client.post(login_url(safegate)).form(fields);
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, location, response.text().await.unwrap())
}

/// Fetches the login form and logs in as `user` with `password`, going back to `then`.
async fn log_in(
    client: &reqwest::Client,
    safegate: &SafeGate,
    user: &str,
    password: &str,
    then: &str,
) -> (u16, String, String) {
    let (status, _, page) = get(client, &login_url(safegate)).await;
    assert_eq!(status, 200, "{page}");
    let token = token_in(&page);
    post_login(
        client,
        safegate,
        &[
            ("token", &token),
            ("user", user),
            ("password", password),
            ("then", then),
        ],
        None,
    )
    .await
}

#[tokio::test]
async fn an_unidentified_client_logs_in_through_the_portal() {
    bounded(async {
        let world = World::new().await;
        world.seed_users(&[ADA, YEAR6]).await;
        let safegate = world.safegate(&["auth.portal=\"all\""]).await;
        let browser = browser(&safegate, None);
        let page = world.url("school.test", "/uri");

        // Sent to the login page on the proxy's own address, carrying the page.
        let (status, location, _) = get(&browser, &page).await;
        assert_eq!(status, 302);
        let expected = format!(
            "{}?then={}",
            login_url(&safegate),
            form_urlencoded::byte_serialize(page.as_bytes()).collect::<String>()
        );
        assert_eq!(location, expected);

        // The form shows where the person is going, escaped, with a token.
        let (status, _, form) = get(&browser, &location).await;
        assert_eq!(status, 200, "{form}");
        assert!(form.contains(&format!("value=\"{page}\"")), "{form}");
        assert!(form.contains("name=\"password\""), "{form}");
        let token = token_in(&form);
        let hostile = format!(
            "{}?then={}",
            login_url(&safegate),
            form_urlencoded::byte_serialize(b"http://school.test/?q=\"><script>alert(1)</script>")
                .collect::<String>()
        );
        let (status, _, form) = get(&browser, &hostile).await;
        assert_eq!(status, 200);
        assert!(!form.contains("<script>alert"), "{form}");
        assert!(form.contains("%22%3E%3Cscript%3E"), "{form}");
        // Not a web address: dropped.
        let (_, _, form) = get(
            &browser,
            &format!("{}?then=javascript:alert(1)", login_url(&safegate)),
        )
        .await;
        assert!(!form.contains("javascript"), "{form}");

        // No token, a forged one, or another site's form: refused.
        let ada = [
            ("user", ADA.0),
            ("password", ADA.3),
            ("then", page.as_str()),
        ];
        let (status, _, _) = post_login(&browser, &safegate, &ada, None).await;
        assert_eq!(status, 403);
        let forged = [
            ("token", "99999999999.00"),
            ("user", ADA.0),
            ("password", ADA.3),
        ];
        let (status, _, _) = post_login(&browser, &safegate, &forged, None).await;
        assert_eq!(status, 403);
        let with_token = [
            ("token", token.as_str()),
            ("user", ADA.0),
            ("password", ADA.3),
            ("then", page.as_str()),
        ];
        let (status, _, _) = post_login(
            &browser,
            &safegate,
            &with_token,
            Some("http://evil.example"),
        )
        .await;
        assert_eq!(status, 403);
        // Nothing was let through by those.
        assert_eq!(get(&browser, &page).await.0, 302);

        // A wrong password: the form again, with the error, counted as a failure.
        let wrong = [
            ("token", token.as_str()),
            ("user", ADA.0),
            ("password", "difference engine"),
            ("then", page.as_str()),
        ];
        let (status, _, body) = post_login(&browser, &safegate, &wrong, None).await;
        assert_eq!(status, 200);
        assert!(body.contains("was not accepted"), "{body}");
        assert!(body.contains("name=\"token\""), "{body}");
        assert!(body.contains("value=\"ada.lovelace\""), "{body}");
        assert_eq!(
            metric(&safegate, "safegate_proxy_auth_total{result=\"failed\"}").await,
            1.0
        );

        // The right one: back to the page, which now goes through as Ada.
        let origin = safegate.proxy_url();
        let (status, location, _) =
            post_login(&browser, &safegate, &with_token, Some(&origin)).await;
        assert_eq!((status, location.as_str()), (303, page.as_str()));
        let (status, _, body) = get(&browser, &page).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            metric(
                &safegate,
                "safegate_proxy_auth_total{result=\"portal_login\"}"
            )
            .await,
            1.0
        );
        assert!(
            safegate
                .logs()
                .iter()
                .any(|l| l.contains("portal log-in") && l.contains("ada.lovelace")),
        );

        // The login page now says who is logged in, and logging out ends it.
        let (_, _, status_page) = get(&browser, &login_url(&safegate)).await;
        assert!(
            status_page.contains("<strong>ada.lovelace</strong>"),
            "{status_page}"
        );
        let logout = format!("{}/safegate/logout", safegate.proxy_url());
        let response = browser
            .post(&logout)
            .form(&[("token", token_in(&status_page))])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(get(&browser, &page).await.0, 302);

        let records = records_after_stop(safegate, &world.data_dir()).await;
        let visit = records
            .iter()
            .find(|r| r.host == "school.test" && r.status == 200)
            .unwrap_or_else(|| panic!("no record of the page in {records:#?}"));
        assert_eq!(visit.user.as_deref(), Some("ada.lovelace"));
        assert_eq!(visit.role, "staff");
        assert_eq!(visit.identified_by, IdentifiedBy::Portal);
    })
    .await;
}

#[tokio::test]
async fn a_portal_log_in_lapses_after_the_idle_timeout() {
    bounded(async {
        let world = World::new().await;
        world.seed_users(&[ADA]).await;
        let mut safegate = world
            .safegate(&["auth.portal=\"all\"", "auth.portal_idle_timeout=\"1s\""])
            .await;
        let browser = browser(&safegate, None);
        let page = world.url("school.test", "/uri");
        let (status, _, _) = log_in(&browser, &safegate, ADA.0, ADA.3, &page).await;
        assert_eq!(status, 303);
        assert_eq!(get(&browser, &page).await.0, 200);
        // Traffic keeps it alive; silence for longer than the time-out ends it (the
        // sweep logs it).
        safegate.wait_for_log("portal session ended: idle").await;
        assert_eq!(get(&browser, &page).await.0, 302);
        stop(safegate).await;
    })
    .await;
}

#[tokio::test]
async fn one_person_on_two_computers() {
    bounded(async {
        let world = World::new().await;
        world.seed_users(&[ADA]).await;
        let page = world.url("school.test", "/uri");

        // deny: the second computer is refused; the first keeps working.
        let safegate = world
            .safegate(&["auth.portal=\"all\"", "auth.concurrent_logins=\"deny\""])
            .await;
        let first = browser(&safegate, Some("127.0.0.1"));
        let second = browser(&safegate, Some("127.0.0.2"));
        assert_eq!(log_in(&first, &safegate, ADA.0, ADA.3, &page).await.0, 303);
        let (status, _, body) = log_in(&second, &safegate, ADA.0, ADA.3, &page).await;
        assert_eq!(status, 409, "{body}");
        assert!(body.contains("logged in on another computer"), "{body}");
        assert_eq!(get(&second, &page).await.0, 302);
        assert_eq!(get(&first, &page).await.0, 200);
        assert_eq!(
            metric(&safegate, "safegate_proxy_auth_concurrent_logins_total").await,
            1.0
        );
        assert!(safegate.logs().iter().any(|l| {
            l.contains("second computer") && l.contains("127.0.0.1") && l.contains("127.0.0.2")
        }));
        stop(safegate).await;

        // latest-wins: the second stands, the first goes back to the login page.
        let safegate = world
            .safegate(&[
                "auth.portal=\"all\"",
                "auth.concurrent_logins=\"latest-wins\"",
            ])
            .await;
        let first = browser(&safegate, Some("127.0.0.1"));
        let second = browser(&safegate, Some("127.0.0.2"));
        assert_eq!(log_in(&first, &safegate, ADA.0, ADA.3, &page).await.0, 303);
        assert_eq!(get(&first, &page).await.0, 200);
        assert_eq!(log_in(&second, &safegate, ADA.0, ADA.3, &page).await.0, 303);
        assert_eq!(get(&second, &page).await.0, 200);
        let (status, location, _) = get(&first, &page).await;
        assert_eq!(status, 302);
        assert!(location.contains("/safegate/login"), "{location}");
        assert_eq!(
            metric(&safegate, "safegate_proxy_auth_concurrent_logins_total").await,
            1.0
        );
        stop(safegate).await;
    })
    .await;
}

#[tokio::test]
async fn disabling_the_user_ends_the_portal_session() {
    bounded(async {
        let world = World::new().await;
        world.seed_users(&[ADA, YEAR6]).await;
        let mut safegate = world.safegate(&["auth.portal=\"all\""]).await;
        let browser = browser(&safegate, None);
        let page = world.url("school.test", "/uri");
        assert_eq!(
            log_in(&browser, &safegate, ADA.0, ADA.3, &page).await.0,
            303
        );
        assert_eq!(get(&browser, &page).await.0, 200);
        change_users(&world, &mut safegate, &["disable", ADA.0], "").await;
        assert_eq!(get(&browser, &page).await.0, 302);
        assert!(
            safegate
                .logs()
                .iter()
                .any(|l| l.contains("portal session ended") && l.contains("ada.lovelace"))
        );
        // Nor can the disabled user log in again.
        let (status, _, body) = log_in(&browser, &safegate, ADA.0, ADA.3, &page).await;
        assert_eq!(status, 200);
        assert!(body.contains("was not accepted"), "{body}");
        stop(safegate).await;
    })
    .await;
}

#[tokio::test]
async fn transparent_clients_are_sent_to_the_portal_by_default() {
    bounded(async {
        let world = World::new().await;
        world.seed_users(&[ADA]).await;
        let safegate = world
            .safegate(&[
                "transparent.http_listen=\"127.0.0.1:0\"",
                "transparent.https_listen=\"127.0.0.1:0\"",
            ])
            .await;
        let http = safegate
            .logged_addr("transparent HTTP listening on ")
            .unwrap();
        let https = safegate
            .logged_addr("transparent HTTPS listening on ")
            .unwrap();
        let page = world.url("school.test", "/uri");
        let port = page.split(':').nth(2).unwrap().split('/').next().unwrap();
        let redirected =
            format!("GET /uri HTTP/1.1\r\nHost: school.test:{port}\r\nConnection: close\r\n\r\n");

        // The shipped `portal = "transparent"` leaves explicit-proxy clients alone.
        let explicit = browser(&safegate, None);
        assert_eq!(get(&explicit, &page).await.0, 200);

        // A redirected request goes to the login page on the transparent listener.
        let answer = raw::exchange(http, redirected.as_bytes()).await;
        assert_eq!(raw::status_of(&answer), 302, "{answer}");
        let location = answer
            .lines()
            .find_map(|line| line.strip_prefix("location: "))
            .unwrap_or_else(|| panic!("{answer}"))
            .trim()
            .to_owned();
        assert!(
            location.starts_with(&format!("http://{http}/safegate/login?then=")),
            "{location}"
        );

        // The browser reaches that page directly, and logs in there.
        let direct = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let (status, _, form) = get(&direct, &location).await;
        assert_eq!(status, 200, "{form}");
        let response = direct
            .post(format!("http://{http}/safegate/login"))
            .header("origin", format!("http://{http}"))
            .form(&[
                ("token", token_in(&form).as_str()),
                ("user", ADA.0),
                ("password", ADA.3),
                ("then", page.as_str()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 303);
        assert_eq!(response.headers()["location"], page.as_str());

        // Now HTTP, HTTPS by server name and the explicit proxy are Ada's.
        let answer = raw::exchange(http, redirected.as_bytes()).await;
        assert_eq!(raw::status_of(&answer), 200, "{answer}");
        let mut tls = raw::connect(https).await;
        tls.write_all(&client_hello("school.test")).await.unwrap();
        let _ = raw::read_until_close(&mut tls, Duration::from_secs(10)).await;
        assert_eq!(get(&explicit, &page).await.0, 200);

        let records = records_after_stop(safegate, &world.data_dir()).await;
        let portal: Vec<_> = records
            .iter()
            .filter(|r| r.identified_by == IdentifiedBy::Portal)
            .collect();
        assert!(
            portal
                .iter()
                .all(|r| r.user.as_deref() == Some("ada.lovelace")),
            "{records:#?}"
        );
        for method in ["GET", "TLS"] {
            assert!(
                portal
                    .iter()
                    .any(|r| r.method == method && r.host == "school.test"),
                "no {method} record by the portal in {records:#?}"
            );
        }
        assert_eq!(
            records
                .iter()
                .filter(|r| r.identified_by == IdentifiedBy::Default && r.host == "school.test")
                .count(),
            1,
            "only the explicit request before the log-in is the default role's: {records:#?}"
        );
    })
    .await;
}
