#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;

use argon2::{Algorithm, Argon2, Params, PasswordHasher, Version};
use base64::Engine as _;
use http_body_util::BodyExt;
use safegate_policy::Role;

use super::*;

/// A cheap but valid Argon2id hash (real ones cost 20–50 ms, far more unoptimised).
fn cheap_hash(password: &str) -> Arc<str> {
    let params = Params::new(8, 1, 1, None).unwrap();
    let hash = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_with_salt(password.as_bytes(), b"saltsaltsaltsalt")
        .unwrap()
        .to_string();
    Arc::from(hash)
}

fn user(name: &str, password: &str, generation: u64) -> UserEntry {
    UserEntry {
        name: Arc::from(name),
        role: Role::Staff,
        group: Some("science".to_owned()),
        password_hash: cheap_hash(password),
        disabled: false,
        generation,
    }
}

fn basic(user: &str, password: &str) -> HeaderValue {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    HeaderValue::from_str(&format!("Basic {token}")).unwrap()
}

fn ip(last: u8) -> IpAddr {
    IpAddr::from([10, 0, 0, last])
}

fn authenticator(config: AuthConfig, users: Vec<UserEntry>) -> Authenticator {
    let auth = Authenticator::new(&config, Arc::default()).unwrap();
    auth.replace_users(UserTable::new(users));
    auth
}

/// Runs the whole check, verification included.
async fn log_in(
    auth: &Authenticator,
    peer: IpAddr,
    header: &HeaderValue,
) -> Result<Identity, Refusal> {
    match auth.check(peer, Some(header)) {
        Check::Known(identity) => Ok(identity),
        Check::Refused(refusal) => Err(refusal),
        Check::Verify(verification) => auth.verify(verification, &ConnectionLogIn::default()).await,
        Check::Anonymous => panic!("a header was sent"),
    }
}

#[tokio::test]
async fn verified_credentials_are_cached_until_the_user_changes() {
    let auth = authenticator(AuthConfig::default(), vec![user("ada", "analytical", 1)]);
    assert!(matches!(auth.check(ip(1), None), Check::Anonymous));

    let header = basic("Ada", "analytical");
    assert!(matches!(auth.check(ip(1), Some(&header)), Check::Verify(_)));
    let identity = log_in(&auth, ip(1), &header).await.unwrap();
    assert_eq!(identity.user.as_deref(), Some("ada"));
    assert_eq!(identity.role, Role::Staff);
    assert_eq!(identity.group.as_deref(), Some("science"));
    assert_eq!(identity.identified_by, IdentifiedBy::ProxyAuth);

    // The next request is a cache hit, from any address.
    let Check::Known(again) = auth.check(ip(2), Some(&header)) else {
        panic!("not a cache hit");
    };
    assert_eq!(again.user.as_deref(), Some("ada"));
    let stats = auth.stats();
    assert_eq!((stats.verified, stats.cache_hits, stats.failed), (1, 1, 0));

    // A new generation (a password change) ends the cached credential at once.
    auth.replace_users(UserTable::new([user("ada", "difference", 2)]));
    assert_eq!(
        log_in(&auth, ip(1), &header).await.err(),
        Some(Refusal::WrongPassword)
    );
    let new = basic("ada", "difference");
    assert!(log_in(&auth, ip(1), &new).await.is_ok());
    assert!(matches!(auth.check(ip(1), Some(&new)), Check::Known(_)));

    // Disabling refuses even the cached credential; enabling (a new generation) needs
    // one more verification.
    let mut disabled = user("ada", "difference", 3);
    disabled.disabled = true;
    auth.replace_users(UserTable::new([disabled]));
    assert_eq!(
        log_in(&auth, ip(1), &new).await.err(),
        Some(Refusal::Disabled)
    );
    auth.replace_users(UserTable::new([user("ada", "difference", 4)]));
    assert!(matches!(auth.check(ip(1), Some(&new)), Check::Verify(_)));
    assert!(log_in(&auth, ip(1), &new).await.is_ok());

    // Removal.
    auth.replace_users(UserTable::default());
    assert_eq!(
        log_in(&auth, ip(1), &new).await.err(),
        Some(Refusal::UnknownUser)
    );
}

#[tokio::test]
async fn malformed_headers_are_refused_and_counted() {
    let auth = authenticator(AuthConfig::default(), vec![user("ada", "analytical", 1)]);
    for text in ["Bearer x", "Basic %%%", "Basic YWRh"] {
        let header = HeaderValue::from_str(text).unwrap();
        assert!(
            matches!(
                log_in(&auth, ip(1), &header).await,
                Err(Refusal::Malformed(_))
            ),
            "{text}"
        );
    }
    assert_eq!(auth.stats().failed, 3);
}

#[tokio::test]
async fn failures_lock_the_address_and_the_user_but_not_cached_credentials() {
    let config = AuthConfig {
        max_failures_per_address: 3,
        max_failures_per_user: 5,
        ..AuthConfig::default()
    };
    let auth = authenticator(
        config,
        vec![user("ada", "analytical", 1), user("bob", "babbage-1", 1)],
    );
    // Bob logged in before the storm.
    let bob = basic("bob", "babbage-1");
    assert!(log_in(&auth, ip(1), &bob).await.is_ok());

    for _ in 0..3 {
        assert_eq!(
            log_in(&auth, ip(1), &basic("ada", "guess")).await.err(),
            Some(Refusal::WrongPassword)
        );
    }
    // The address is locked: even the right password is not checked.
    let right = basic("ada", "analytical");
    let refused = log_in(&auth, ip(1), &right).await.err();
    assert!(
        matches!(refused, Some(Refusal::AddressLocked { retry_after }) if retry_after <= Duration::from_secs(300)),
        "{refused:?}"
    );
    // Credentials verified before still work.
    assert!(matches!(auth.check(ip(1), Some(&bob)), Check::Known(_)));

    // Two more wrong passwords for ada from elsewhere lock the user name everywhere.
    for last in [2, 3] {
        assert_eq!(
            log_in(&auth, ip(last), &basic("ada", "guess")).await.err(),
            Some(Refusal::WrongPassword)
        );
    }
    assert!(matches!(
        log_in(&auth, ip(4), &right).await,
        Err(Refusal::UserLocked { .. })
    ));
    let stats = auth.stats();
    assert_eq!((stats.failed, stats.rate_limited), (5, 2));

    let response = Refusal::AddressLocked {
        retry_after: Duration::from_secs(200),
    }
    .response("http://example.com/");
    assert_eq!(response.status(), StatusCode::PROXY_AUTHENTICATION_REQUIRED);
    assert_eq!(response.headers()[RETRY_AFTER], "200");
    assert_eq!(response.headers()["x-safegate-reason"], "proxy-auth-locked");
}

#[tokio::test]
async fn bindings_give_a_role_or_a_users_identity() {
    let config = AuthConfig {
        bindings: vec![
            BindingConfig {
                network: "10.0.0.5/32".parse().unwrap(),
                role: None,
                group: None,
                user: Some("Office".into()),
            },
            BindingConfig {
                network: "10.0.0.6/32".parse().unwrap(),
                role: None,
                group: None,
                user: Some("nobody".into()),
            },
            BindingConfig {
                network: "10.0.0.0/24".parse().unwrap(),
                role: Some("pupil".into()),
                group: Some("year6".into()),
                user: None,
            },
        ],
        ..AuthConfig::default()
    };
    let auth = authenticator(config, vec![user("office", "paperclip", 1)]);
    let office = auth.bound(ip(5)).unwrap();
    assert_eq!(office.user.as_deref(), Some("office"));
    assert_eq!(office.role, Role::Staff);
    assert_eq!(office.identified_by, IdentifiedBy::Address);
    // First match wins: the unknown user's binding gives nothing.
    assert!(auth.bound(ip(6)).is_none());
    let pupil = auth.bound(ip(7)).unwrap();
    assert_eq!(
        (pupil.role, pupil.group.as_deref()),
        (Role::Pupil, Some("year6"))
    );
    assert_eq!(pupil.user, None);
    // IPv4-mapped IPv6 addresses are matched as IPv4.
    assert!(auth.bound("::ffff:10.0.0.7".parse().unwrap()).is_some());
    assert!(auth.bound(IpAddr::from([10, 0, 1, 1])).is_none());

    let warnings = auth.binding_warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("auth.bindings[1]"), "{warnings:?}");
    assert!(warnings[0].contains("no such user"), "{warnings:?}");

    let mut disabled = user("office", "paperclip", 2);
    disabled.disabled = true;
    auth.replace_users(UserTable::new([disabled]));
    assert!(auth.bound(ip(5)).is_none());
    assert_eq!(auth.binding_warnings().len(), 2);
}

#[tokio::test]
async fn the_challenge_names_the_realm_and_escapes_the_target() {
    let auth = Authenticator::default();
    assert_eq!(auth.challenge(), Refusal::Missing);
    assert_eq!(auth.stats().challenged, 1);
    let response = Refusal::Missing.response("http://x.test/<script>");
    assert_eq!(response.status(), StatusCode::PROXY_AUTHENTICATION_REQUIRED);
    assert_eq!(
        response.headers()[PROXY_AUTHENTICATE],
        "Basic realm=\"SafeGate\", charset=\"UTF-8\""
    );
    assert_eq!(
        response.headers()["x-safegate-reason"],
        "proxy-auth-required"
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(!text.contains("<script>"), "{text}");
    assert!(text.contains("Log in"), "{text}");

    let busy = Refusal::Busy.response("http://x.test/");
    assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(!busy.headers().contains_key(PROXY_AUTHENTICATE));
    assert_eq!(minutes(Duration::from_secs(299)), "5 minutes");
    assert_eq!(minutes(Duration::from_secs(61)), "1 minute");
    assert_eq!(minutes(Duration::from_secs(30)), "30 seconds");
}

#[tokio::test]
async fn a_credential_user_at_two_addresses_is_an_event_but_not_refused() {
    let auth = authenticator(AuthConfig::default(), vec![user("year6", "sunflower", 1)]);
    let header = basic("year6", "sunflower");
    log_in(&auth, ip(1), &header).await.unwrap();
    for _ in 0..3 {
        log_in(&auth, ip(2), &header).await.unwrap();
        log_in(&auth, ip(1), &header).await.unwrap();
    }
    assert_eq!(auth.stats().concurrent_logins, 1);
    let events = auth.concurrent_login_events();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (
            events[0].old_address,
            events[0].new_address,
            events[0].source,
            events[0].outcome
        ),
        (
            ip(1),
            ip(2),
            LoginSource::ProxyAuth,
            ConcurrentOutcome::Allowed
        )
    );
}

#[tokio::test]
async fn portal_log_ins_follow_concurrent_logins() {
    for (mode, first_kept, second_in, outcome) in [
        (
            ConcurrentLogins::Allow,
            true,
            true,
            ConcurrentOutcome::Allowed,
        ),
        (
            ConcurrentLogins::Deny,
            true,
            false,
            ConcurrentOutcome::Denied,
        ),
        (
            ConcurrentLogins::LatestWins,
            false,
            true,
            ConcurrentOutcome::Replaced,
        ),
    ] {
        let config = AuthConfig {
            concurrent_logins: mode,
            ..AuthConfig::default()
        };
        let auth = authenticator(config, vec![user("ada", "analytical", 1)]);
        let identity = auth
            .portal_login(ip(1), "Ada", "analytical".into())
            .await
            .unwrap();
        assert_eq!(identity.identified_by, IdentifiedBy::Portal);
        // Logging in again on the same computer is no event.
        auth.portal_login(ip(1), "ada", "analytical".into())
            .await
            .unwrap();
        let second = auth.portal_login(ip(2), "ada", "analytical".into()).await;
        assert_eq!(second.is_ok(), second_in, "{mode:?}");
        if !second_in {
            assert!(matches!(second, Err(PortalRefusal::OtherComputer { .. })));
        }
        assert_eq!(auth.portal_session(ip(1)).is_some(), first_kept, "{mode:?}");
        assert_eq!(auth.portal_session(ip(2)).is_some(), second_in, "{mode:?}");
        assert_eq!(auth.stats().concurrent_logins, 1, "{mode:?}");
        assert_eq!(auth.concurrent_login_events()[0].outcome, outcome);

        // A wrong password is a failure like a proxy log-in's, and binds nothing.
        let wrong = auth.portal_login(ip(3), "ada", "wrong".into()).await;
        assert_eq!(
            wrong.unwrap_err(),
            PortalRefusal::Refused(Refusal::WrongPassword)
        );
        assert!(auth.portal_session(ip(3)).is_none());
        assert_eq!(auth.stats().failed, 1);
    }
}

#[tokio::test]
async fn a_password_change_ends_the_portal_session() {
    let auth = authenticator(AuthConfig::default(), vec![user("ada", "analytical", 1)]);
    auth.portal_login(ip(1), "ada", "analytical".into())
        .await
        .unwrap();
    assert!(auth.portal_session(ip(1)).is_some());
    auth.replace_users(UserTable::new([user("ada", "new password", 2)]));
    assert!(auth.portal_session(ip(1)).is_none());
    assert_eq!(auth.portal_sessions(), 0);
    // Off: no session is looked up, and the portal's pages are not served.
    let off = authenticator(
        AuthConfig {
            portal: PortalMode::Off,
            ..AuthConfig::default()
        },
        vec![user("ada", "analytical", 1)],
    );
    assert!(!off.portal_enabled());
    assert!(!off.portal_redirects(true));
    let transparent = authenticator(AuthConfig::default(), vec![]);
    assert!(!transparent.portal_redirects(true), "no users, no portal");
    transparent.replace_users(UserTable::new([user("ada", "analytical", 1)]));
    assert!(transparent.portal_redirects(true));
    assert!(!transparent.portal_redirects(false));
}

/// Issue 17, point 4: 100 wrong passwords sent at once (proxy credentials and portal
/// log-ins, from one address, and for one user from many) run no more Argon2 checks
/// than the failure limits allow; the rest are refused before a check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_burst_of_wrong_passwords_is_checked_at_most_the_limit() {
    let config = AuthConfig {
        max_failures_per_address: 10,
        max_failures_per_user: 10,
        ..AuthConfig::default()
    };
    let checks = Arc::new(CheckPool::new(2, 1000));
    let auth = Authenticator::new(&config, Arc::clone(&checks)).unwrap();
    auth.replace_users(UserTable::new(vec![user("ada", "analytical", 1)]));
    let auth = Arc::new(auth);
    let burst = |peer_of: fn(u8) -> IpAddr, portal: bool| {
        let tasks: Vec<_> = (0..100u8)
            .map(|i| {
                let auth = Arc::clone(&auth);
                tokio::spawn(async move {
                    if portal {
                        auth.portal_login(peer_of(i), "ada", "wrong".to_owned())
                            .await
                            .err()
                    } else {
                        log_in(&auth, peer_of(i), &basic("ada", "wrong"))
                            .await
                            .err()
                            .map(PortalRefusal::Refused)
                    }
                })
            })
            .collect();
        async move {
            let mut refusals = Vec::new();
            for task in tasks {
                refusals.push(task.await.unwrap());
            }
            refusals
        }
    };
    // One address, proxy credentials: the address limit holds.
    let refusals = burst(|_| ip(1), false).await;
    assert!(checks.checks_run() <= 10, "{} checks", checks.checks_run());
    let locked = refusals
        .iter()
        .filter(|r| {
            matches!(
                r,
                Some(PortalRefusal::Refused(Refusal::AddressLocked { .. }))
            )
        })
        .count();
    assert!(locked >= 90, "{refusals:?}");
    // Many addresses, one user, portal log-ins: the user limit holds (it is already
    // reached by the first burst, so nothing more is checked).
    let before = checks.checks_run();
    let refusals = burst(|i| IpAddr::from([10, 1, 0, i]), true).await;
    assert_eq!(checks.checks_run(), before, "{refusals:?}");
    assert!(
        refusals
            .iter()
            .all(|r| matches!(r, Some(PortalRefusal::Refused(Refusal::UserLocked { .. }))))
    );
}

/// The same burst for a user from many addresses, with nothing failed before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_burst_for_one_user_is_checked_at_most_the_user_limit() {
    let config = AuthConfig {
        max_failures_per_user: 10,
        ..AuthConfig::default()
    };
    let checks = Arc::new(CheckPool::new(2, 1000));
    let auth = Arc::new(Authenticator::new(&config, Arc::clone(&checks)).unwrap());
    auth.replace_users(UserTable::new(vec![user("ada", "analytical", 1)]));
    let tasks: Vec<_> = (0..100u8)
        .map(|i| {
            let auth = Arc::clone(&auth);
            tokio::spawn(async move {
                log_in(&auth, IpAddr::from([10, 2, 0, i]), &basic("ada", "wrong")).await
            })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap().is_err());
    }
    assert!(checks.checks_run() <= 10, "{} checks", checks.checks_run());
    assert!(auth.stats().rate_limited >= 90, "{:?}", auth.stats());
}
