//! The admin web interface over a real listener on 127.0.0.1 with a real sled
//! database: sign-in, the permission of every route for every kind of user, CSRF,
//! session expiry, rate limiting, accounts that change, and escaping.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::redirect::Policy;
use safegate_admin::ui::{
    HealthFigures, HealthSource, Need, ROUTES, SessionLimits, WebSettings, WebState, router,
};
use safegate_store::password::CheckPool;
use safegate_store::{AuditAction, NewAuditEntry, NewUser, Permission, Store};

const PASSWORD: &str = "correct horse battery";

struct FixedHealth;

impl HealthSource for FixedHealth {
    fn health(&self) -> HealthFigures {
        HealthFigures {
            version: "test".into(),
            ready: true,
            policy_state: "loaded".into(),
            list_sizes: vec![("gambling".into(), 42)],
            ..HealthFigures::default()
        }
    }
}

struct Admin {
    addr: SocketAddr,
    store: Store,
    password_checks: Arc<CheckPool>,
    _dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Cheap Argon2 hashes: the tests sign in many times.
fn cheap_hash(password: &str) -> String {
    use argon2::{Algorithm, Argon2, Params, PasswordHasher, Version};
    let params = Params::new(8, 1, 1, None).unwrap();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_with_salt(password.as_bytes(), b"test-salt-16byte")
        .unwrap()
        .to_string()
}

fn add_user(store: &Store, name: &str, display: &str, permissions: &[Permission]) {
    store
        .add_user(&NewUser {
            shared: false,
            name: name.into(),
            display_name: Some(display.into()),
            role: "staff".into(),
            group: None,
            permissions: permissions.iter().copied().collect::<BTreeSet<_>>(),
            password_hash: cheap_hash(PASSWORD),
        })
        .unwrap();
}

async fn start(limits: SessionLimits) -> Admin {
    start_with(limits, None).await
}

async fn start_with(
    limits: SessionLimits,
    policy: Option<safegate_admin::ui::rules::PolicyAccess>,
) -> Admin {
    start_full(limits, policy, Arc::default()).await
}

async fn start_full(
    limits: SessionLimits,
    policy: Option<safegate_admin::ui::rules::PolicyAccess>,
    password_checks: Arc<CheckPool>,
) -> Admin {
    let dir = tempfile::tempdir().unwrap();
    let reports = dir.path().join("reports");
    let store = Store::open(dir.path()).unwrap();
    add_user(&store, "filter.admin", "Fiona Filter", &[Permission::Rules]);
    add_user(
        &store,
        "head",
        "<script>alert(1)</script>",
        &[Permission::Reports],
    );
    add_user(&store, "tech", "Terry Tech", &[Permission::Metrics]);
    add_user(&store, "pupil", "Pat Pupil", &[]);
    let state = WebState::new(
        store.clone(),
        WebSettings {
            sessions: limits,
            secure_cookies: false,
            body_read_timeout: Duration::from_secs(1),
            require_2fa: false,
        },
        Arc::new(FixedHealth),
        policy,
        Some(reports),
        Arc::clone(&password_checks),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Admin {
        addr,
        store,
        password_checks,
        _dir: dir,
        server,
    }
}

fn long_sessions() -> SessionLimits {
    SessionLimits {
        idle: Duration::from_secs(600),
        absolute: Duration::from_secs(3600),
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

impl Admin {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Fetches the sign-in page (for its login token cookie) and posts the form.
    async fn sign_in(
        &self,
        client: &reqwest::Client,
        user: &str,
        password: &str,
    ) -> reqwest::Response {
        let page = client
            .get(self.url("/login"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let token = hidden_value(&page, "login_token");
        client
            .post(self.url("/login"))
            .form(&[
                ("user", user),
                ("password", password),
                ("login_token", &token),
                ("next", "/"),
            ])
            .send()
            .await
            .unwrap()
    }

    async fn signed_in(&self, user: &str) -> (reqwest::Client, String) {
        let client = client();
        let response = self.sign_in(&client, user, PASSWORD).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{user}");
        let session = client
            .get(self.url("/api/session"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let session: serde_json::Value = serde_json::from_str(&session).unwrap();
        let csrf = session["csrf"].as_str().unwrap().to_owned();
        (client, csrf)
    }
}

fn hidden_value(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page.find(&marker).expect("hidden field") + marker.len();
    page[start..].split('"').next().unwrap().to_owned()
}

async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(Duration::from_secs(60), test)
        .await
        .expect("test took over 60 s");
}

#[tokio::test]
async fn every_route_checks_the_permission_it_needs() {
    bounded(async {
        let world = rules::world().await;
        let admin = &world.admin;
        let users = [
            ("filter.admin", Permission::Rules),
            ("head", Permission::Reports),
            ("tech", Permission::Metrics),
        ];
        for (user, permission) in users {
            for route in ROUTES {
                // Sign in afresh for each route: logout routes end the session.
                let (client, csrf) = admin.signed_in(user).await;
                let url = admin.url(&route.path.replace("{id}", "1"));
                let response = match route.method {
                    "GET" => client.get(&url).send().await.unwrap(),
                    _ if route.path == "/login" => continue,
                    _ => client
                        .post(&url)
                        .header("x-csrf-token", &csrf)
                        .send()
                        .await
                        .unwrap(),
                };
                let allowed = match route.need {
                    Need::Public | Need::SignedIn => true,
                    Need::AnyOf(needed) => needed.contains(&permission),
                };
                if allowed {
                    assert_ne!(
                        response.status(),
                        StatusCode::FORBIDDEN,
                        "{user} {} {}",
                        route.method,
                        route.path
                    );
                    // Past the guard: the handler answers (a bare request may be a 4xx
                    // for its missing fields, never a refusal of the person).
                    assert_ne!(
                        response.status(),
                        StatusCode::UNAUTHORIZED,
                        "{user} {} {}",
                        route.method,
                        route.path
                    );
                } else {
                    assert_eq!(
                        response.status(),
                        StatusCode::FORBIDDEN,
                        "{user} {} {}",
                        route.method,
                        route.path
                    );
                }
            }
        }
        // Signed out: pages send to the sign-in page, the API answers 401.
        let anonymous = client();
        for route in ROUTES.iter().filter(|r| r.need != Need::Public) {
            let url = admin.url(&route.path.replace("{id}", "1"));
            let response = match route.method {
                "GET" => anonymous.get(&url).send().await.unwrap(),
                _ => anonymous.post(&url).send().await.unwrap(),
            };
            if route.path.starts_with("/api/") {
                assert_eq!(
                    response.status(),
                    StatusCode::UNAUTHORIZED,
                    "{}",
                    route.path
                );
            } else {
                assert_eq!(response.status(), StatusCode::SEE_OTHER, "{}", route.path);
                let location = response.headers()["location"].to_str().unwrap();
                assert!(location.starts_with("/login?next="), "{location}");
            }
        }
        // A user without any admin permission cannot sign in at all.
        let response = admin.sign_in(&client(), "pupil", PASSWORD).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    })
    .await;
}

#[tokio::test]
async fn state_changes_need_the_sessions_csrf_token() {
    bounded(async {
        let admin = start(long_sessions()).await;
        let (session, csrf) = admin.signed_in("tech").await;
        let client = session;
        for body in [vec![], vec![("csrf", "wrong")]] {
            let response = client
                .post(admin.url("/logout"))
                .form(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::FORBIDDEN);
        }
        let response = client
            .post(admin.url("/api/logout"))
            .header("x-csrf-token", "wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        // Still signed in after the refused attempts.
        let response = client.get(admin.url("/health")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let response = client
            .post(admin.url("/logout"))
            .form(&[("csrf", csrf.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let response = client.get(admin.url("/api/session")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

        // The sign-in form itself needs the login cookie's token.
        let fresh = self::client();
        let response = fresh
            .post(admin.url("/login"))
            .form(&[
                ("user", "tech"),
                ("password", PASSWORD),
                ("login_token", "forged"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    })
    .await;
}

#[tokio::test]
async fn sessions_expire_and_end_when_the_account_changes() {
    bounded(async {
        let admin = start(SessionLimits {
            idle: Duration::from_millis(300),
            absolute: Duration::from_secs(3600),
        })
        .await;
        let (client, _) = admin.signed_in("tech").await;
        assert_eq!(
            client
                .get(admin.url("/api/health"))
                .send()
                .await
                .unwrap()
                .status(),
            StatusCode::OK
        );
        // The idle time-out is what is tested: let it pass.
        tokio::time::sleep(Duration::from_millis(450)).await;
        assert_eq!(
            client
                .get(admin.url("/api/health"))
                .send()
                .await
                .unwrap()
                .status(),
            StatusCode::UNAUTHORIZED
        );

        let admin = start(long_sessions()).await;
        let (client, _) = admin.signed_in("head").await;
        assert_eq!(
            client
                .get(admin.url("/audit"))
                .send()
                .await
                .unwrap()
                .status(),
            StatusCode::OK
        );
        admin
            .store
            .set_password("head", &cheap_hash("new password"))
            .unwrap();
        assert_eq!(
            client
                .get(admin.url("/api/audit"))
                .send()
                .await
                .unwrap()
                .status(),
            StatusCode::UNAUTHORIZED
        );
        let (client, _) = admin.signed_in("tech").await;
        admin.store.set_disabled("tech", true).unwrap();
        assert_eq!(
            client
                .get(admin.url("/api/health"))
                .send()
                .await
                .unwrap()
                .status(),
            StatusCode::UNAUTHORIZED
        );
    })
    .await;
}

#[tokio::test]
async fn failed_sign_ins_are_rate_limited() {
    bounded(async {
        let admin = start(long_sessions()).await;
        let client = client();
        for _ in 0..safegate_admin::ui::limiter::PER_USER {
            let response = admin.sign_in(&client, "head", "guess").await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        }
        let response = admin.sign_in(&client, "head", PASSWORD).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(response.headers().contains_key("retry-after"));
    })
    .await;
}

/// A client whose connections come from the loopback address `from`.
fn client_from(from: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(Policy::none())
        .no_proxy()
        .local_address(std::net::IpAddr::from(from))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Issue 17, point 4: 100 wrong passwords posted at once from one address run at
/// most the limit's number of password checks (a check in flight counts before it
/// ends); the rest get 429 with no hash computed, and the right password of another
/// account from another address still signs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_burst_of_wrong_passwords_runs_at_most_the_limit_of_checks() {
    bounded(async {
        let admin = start(long_sessions()).await;
        // Every attacker connection holds its own sign-in form first, so the posts
        // all arrive together.
        let mut forms = Vec::new();
        for _ in 0..100 {
            let client = client();
            let page = client.get(admin.url("/login")).send().await.unwrap();
            let token = hidden_value(&page.text().await.unwrap(), "login_token");
            forms.push((client, token));
        }
        let posts = forms.into_iter().map(|(client, token)| {
            let url = admin.url("/login");
            tokio::spawn(async move {
                let form = [
                    ("user", "head"),
                    ("password", "a wrong guess"),
                    ("login_token", token.as_str()),
                    ("next", "/"),
                ];
                let response = client.post(url).form(&form).send().await.unwrap();
                (
                    response.status(),
                    response.headers().contains_key("retry-after"),
                )
            })
        });
        let mut answers = Vec::new();
        for post in posts.collect::<Vec<_>>() {
            answers.push(post.await.unwrap());
        }
        let checks = admin.password_checks.checks_run();
        assert!(
            checks as usize <= safegate_admin::ui::limiter::PER_ADDRESS,
            "{checks} password checks for 100 concurrent sign-ins"
        );
        let limited = answers
            .iter()
            .filter(|(status, retry)| *status == StatusCode::TOO_MANY_REQUESTS && *retry)
            .count();
        let refused = answers
            .iter()
            .filter(|(status, _)| *status == StatusCode::UNAUTHORIZED)
            .count();
        assert_eq!(limited + refused, 100, "{answers:?}");
        assert_eq!(refused as u64, checks, "{answers:?}");

        let other = client_from([127, 0, 0, 2]);
        let response = admin.sign_in(&other, "tech", PASSWORD).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
    })
    .await;
}

/// Beyond the password-check pool's bound, a sign-in is answered 503 with
/// Retry-After and a plain message, and does not count as a failed attempt.
#[tokio::test]
async fn a_sign_in_beyond_the_password_check_pool_is_answered_busy() {
    bounded(async {
        // No check may wait: every sign-in finds the pool busy.
        let admin = start_full(long_sessions(), None, Arc::new(CheckPool::new(1, 0))).await;
        let client = client();
        for _ in 0..safegate_admin::ui::limiter::PER_ADDRESS + 1 {
            let response = admin.sign_in(&client, "head", PASSWORD).await;
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()["retry-after"], "1");
            let page = response.text().await.unwrap();
            assert!(page.contains("busy checking passwords"), "{page}");
        }
        assert_eq!(admin.password_checks.checks_run(), 0);
        assert!(admin.password_checks.busy_refusals() > 10);
    })
    .await;
}

#[tokio::test]
async fn hostile_names_and_audit_text_are_shown_as_text() {
    bounded(async {
        let admin = start(long_sessions()).await;
        admin
            .store
            .append_audit(NewAuditEntry {
                at_unix_micros: 1_795_428_005_000_000,
                actor: "\"><img src=x onerror=alert(1)>".into(),
                action: AuditAction::HistoryViewed,
                subject: "<script>alert('subject')</script>".into(),
                detail: "viewed http://evil.test/?q=<b>bold</b>".into(),
                reason: Some("<i>why</i>".into()),
            })
            .unwrap();
        let (client, _) = admin.signed_in("head").await;
        let home = client.get(admin.url("/")).send().await.unwrap();
        let csp = home.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(csp.contains("default-src 'none'"), "{csp}");
        let home = home.text().await.unwrap();
        assert!(
            home.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{home}"
        );
        assert!(!home.contains("<script>"), "{home}");
        let audit = client
            .get(admin.url("/audit"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(audit.contains("Chain intact: 1 entries"), "{audit}");
        let safegate_store::AuditVerification::Intact { head_hash, .. } =
            admin.store.verify_audit().unwrap()
        else {
            panic!("the chain is intact")
        };
        assert!(
            audit.contains(&format!(
                "#1 {}",
                safegate_store::audit_hash_hex(&head_hash)
            )),
            "the head to note down is shown: {audit}"
        );
        assert!(
            audit.contains("&lt;script&gt;alert('subject')&lt;/script&gt;"),
            "{audit}"
        );
        assert!(
            audit.contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"),
            "{audit}"
        );
        assert!(audit.contains("&lt;b&gt;bold&lt;/b&gt;"), "{audit}");
        assert!(!audit.contains("<img"), "{audit}");
        assert!(!audit.contains("<b>"), "{audit}");
        assert!(audit.contains("2026-11-23 10:00:05"), "{audit}");
    })
    .await;
}

mod rules {
    use super::*;
    use arc_swap::ArcSwap;
    use safegate_admin::ui::policy_edit::PolicyFile;
    use safegate_admin::ui::rules::PolicyAccess;
    use safegate_policy::Policy;
    use tokio::sync::Notify;

    const POLICY: &str = r#"timezone = "Europe/London"
default_role = "pupil"

[categories.gambling]
sources = [{ format = "domains", path = "gambling.txt" }]

[categories.illegal]
locked = true
sources = [{ format = "domains", path = "illegal.txt" }]

[windows.core-hours]
days = ["mon-fri"]
times = ["08:30-15:30"]

[roles.pupil]
# Pupils never gamble.
block = ["gambling"]

[roles.staff]
block = []

[roles.filter-admin]
"#;

    pub(super) struct World {
        pub(super) admin: Admin,
        dir: tempfile::TempDir,
        reload: Arc<Notify>,
    }

    pub(super) async fn world() -> World {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("gambling.txt"), "bet.test\n").unwrap();
        std::fs::write(dir.path().join("illegal.txt"), "illegal.test\n").unwrap();
        std::fs::write(dir.path().join("policy.toml"), POLICY).unwrap();
        let path = dir.path().join("policy.toml");
        let live = Arc::new(ArcSwap::from_pointee(Policy::load(&path).unwrap()));
        let reload = Arc::new(Notify::new());
        let access = PolicyAccess {
            file: PolicyFile::new(path),
            live,
            reload: Arc::clone(&reload),
        };
        let admin = start_with(long_sessions(), Some(access)).await;
        World { admin, dir, reload }
    }

    impl World {
        fn text(&self) -> String {
            std::fs::read_to_string(self.dir.path().join("policy.toml")).unwrap()
        }
    }

    async fn json(response: reqwest::Response) -> (StatusCode, serde_json::Value) {
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    /// What every step of the rules scenario uses: the world and the filter admin's
    /// signed-in client with its CSRF token.
    struct Session<'a> {
        world: &'a World,
        client: &'a reqwest::Client,
        csrf: &'a str,
    }

    #[tokio::test]
    async fn filter_admins_change_rules_safely_and_every_change_is_audited() {
        bounded(async {
            let world = world().await;
            let admin = &world.admin;
            let (client, csrf) = admin.signed_in("filter.admin").await;
            let (_, rules) = json(client.get(admin.url("/api/rules")).send().await.unwrap()).await;
            let version = rules["version"].as_str().unwrap().to_owned();
            let session = Session {
                world: &world,
                client: &client,
                csrf: &csrf,
            };

            let saved = blocking_for_staff_is_saved_audited_and_reloaded(&session, &version).await;
            let version =
                stale_broken_and_locked_changes_are_refused(&session, &version, &saved).await;
            let saved = a_lesson_unblock_is_saved_and_audited(&session, &version).await;
            urls_are_checked_live_and_the_page_escapes(&session).await;
            the_form_makes_the_same_change(&session, &saved).await;
            blocking_inside_a_time_window_only(&session).await;
        })
        .await;
    }

    /// Blocking gambling for staff is saved (comments kept), audited with the actor and
    /// reason, and a reload requested. Returns the answer (with the new version).
    async fn blocking_for_staff_is_saved_audited_and_reloaded(
        session: &Session<'_>,
        version: &str,
    ) -> serde_json::Value {
        let Session {
            world,
            client,
            csrf,
        } = *session;
        let admin = &world.admin;
        // Block gambling for staff: saved, audited, reload requested.
        let reloaded = world.reload.notified();
        let (status, saved) = json(
            client
                .post(admin.url("/api/rules/block"))
                .header("x-csrf-token", csrf)
                .json(&serde_json::json!({
                    "version": version, "scope": "staff", "category": "gambling",
                    "blocked": true, "reason": "staff asked"
                }))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{saved}");
        tokio::time::timeout(Duration::from_secs(5), reloaded)
            .await
            .unwrap();
        let text = world.text();
        assert!(
            text.contains("[roles.staff]\nblock = [\"gambling\"]"),
            "{text}"
        );
        assert!(
            text.contains("# Pupils never gamble."),
            "comments kept: {text}"
        );
        let entries = admin.store.audit_entries(1, 10).unwrap();
        let last = entries.last().unwrap();
        assert_eq!(last.actor, "filter.admin");
        assert_eq!(last.reason.as_deref(), Some("staff asked"));
        assert!(
            last.detail.contains("+block = [\"gambling\"]"),
            "{}",
            last.detail
        );
        saved
    }

    /// A change on the stale version `old`, one that would break the policy (with the
    /// reason) and unblocking a locked category are refused, and nothing changes.
    /// Returns the current version (from `saved`).
    async fn stale_broken_and_locked_changes_are_refused(
        session: &Session<'_>,
        old: &str,
        saved: &serde_json::Value,
    ) -> String {
        let Session {
            world,
            client,
            csrf,
        } = *session;
        let admin = &world.admin;
        let version = old;
        // The old version is stale now: refused, nothing changes.
        let before = world.text();
        let (status, _) = json(
            client
                .post(admin.url("/api/rules/block"))
                .header("x-csrf-token", csrf)
                .json(&serde_json::json!({
                    "version": version, "scope": "staff", "category": "gambling", "blocked": false
                }))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(world.text(), before);

        // A change that would break the policy is refused with the reason.
        let version = saved["version"].as_str().unwrap().to_owned();
        let (status, refused) = json(
            client
                .post(admin.url("/api/rules/block"))
                .header("x-csrf-token", csrf)
                .json(&serde_json::json!({
                    "version": version, "scope": "staff", "category": "no-such-category", "blocked": true
                }))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
        assert!(
            refused["error"]
                .as_str()
                .unwrap()
                .contains("no-such-category"),
            "{refused}"
        );
        assert_eq!(world.text(), before, "nothing changed");

        // Locked categories cannot be unblocked.
        let (status, _) = json(
            client
                .post(admin.url("/api/rules/block"))
                .header("x-csrf-token", csrf)
                .json(&serde_json::json!({
                    "version": version, "scope": "pupil", "category": "illegal", "blocked": false
                }))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        version
    }

    /// A 30-minute unblock for a lesson is saved with who granted it, audited with its
    /// reason, and the audit chain is intact. Returns the answer (with the new version).
    async fn a_lesson_unblock_is_saved_and_audited(
        session: &Session<'_>,
        version: &str,
    ) -> serde_json::Value {
        let Session {
            world,
            client,
            csrf,
        } = *session;
        let admin = &world.admin;
        // A 30-minute unblock for a lesson.
        let (status, saved) = json(
            client
                .post(admin.url("/api/rules/unblock"))
                .header("x-csrf-token", csrf)
                .json(&serde_json::json!({
                    "version": version, "site": "bet.test", "scope": "pupil",
                    "minutes": 30, "reason": "probability lesson"
                }))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{saved}");
        let text = world.text();
        assert!(text.contains("[[unblocks]]"), "{text}");
        assert!(text.contains("granted_by = \"filter.admin\""), "{text}");
        let last = admin.store.audit_entries(1, 10).unwrap().pop().unwrap();
        assert_eq!(last.action, AuditAction::Unblock);
        assert_eq!(last.reason.as_deref(), Some("probability lesson"));
        assert!(matches!(
            admin.store.verify_audit().unwrap(),
            safegate_store::AuditVerification::Intact { entries: 2, .. }
        ));
        saved
    }

    /// A URL is tested against the live policy; the page shows the rules, locked
    /// categories as locked and the unblock, and escapes the URL asked about.
    async fn urls_are_checked_live_and_the_page_escapes(session: &Session<'_>) {
        let Session { world, client, .. } = *session;
        let admin = &world.admin;
        // Test a URL against the live policy.
        let (status, checked) = json(
            client
                .get(admin.url("/api/rules/check?url=http://bet.test/&role=pupil"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(checked["verdict"], "block");

        // The page shows the rules, with locked categories as locked, and escapes.
        let page = client
            .get(admin.url("/rules?url=http://x.test/%3Cscript%3Ealert(1)%3C/script%3E"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(page.contains("locked (always blocked)"), "{page}");
        assert!(page.contains("probability lesson"), "{page}");
        assert!(!page.contains("<script>"), "{page}");
    }

    /// The same kind of change through the form (unblocking gambling for staff, on the
    /// version in `saved`): a redirect back saying it was saved, and the file changed.
    async fn the_form_makes_the_same_change(session: &Session<'_>, saved: &serde_json::Value) {
        let Session {
            world,
            client,
            csrf,
        } = *session;
        let admin = &world.admin;
        // The same change through the form: it widens access for every member of
        // staff, so the page first asks to confirm, in words.
        let version = saved["version"].as_str().unwrap().to_owned();
        let fields = [
            ("csrf", csrf),
            ("version", version.as_str()),
            ("scope", "staff"),
            ("category", "gambling"),
            ("blocked", "false"),
        ];
        let asked = client
            .post(admin.url("/rules/block"))
            .form(&fields)
            .send()
            .await
            .unwrap();
        assert_eq!(asked.status(), StatusCode::OK);
        let asked = asked.text().await.unwrap();
        assert!(
            asked.contains(
                "allows every site in gambling for all 4 staff until someone blocks it again"
            ),
            "{asked}"
        );
        assert!(
            world
                .text()
                .contains("[roles.staff]\nblock = [\"gambling\"]"),
            "{}",
            world.text()
        );
        // Confirmed: a redirect back saying it was saved.
        let mut confirmed = fields.to_vec();
        confirmed.push(("confirmed", "yes"));
        let response = client
            .post(admin.url("/rules/block"))
            .form(&confirmed)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let location = response.headers()["location"].to_str().unwrap();
        assert!(location.starts_with("/rules?done="), "{location}");
        assert!(
            world.text().contains("[roles.staff]\nblock = []"),
            "{}",
            world.text()
        );
    }

    /// Blocking inside a time window only is saved as a windowed block and shown on the
    /// page.
    async fn blocking_inside_a_time_window_only(session: &Session<'_>) {
        let Session {
            world,
            client,
            csrf,
        } = *session;
        let admin = &world.admin;
        // Blocking inside a time window only.
        let (_, rules) = json(client.get(admin.url("/api/rules")).send().await.unwrap()).await;
        let (status, saved) = json(
            client
                .post(admin.url("/api/rules/block"))
                .header("x-csrf-token", csrf)
                .json(&serde_json::json!({
                    "version": rules["version"], "scope": "staff", "category": "gambling",
                    "blocked": true, "window": "core-hours"
                }))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{saved}");
        assert!(
            world
                .text()
                .contains("block = [{ category = \"gambling\", windows = [\"core-hours\"] }]"),
            "{}",
            world.text()
        );
        let page = client
            .get(admin.url("/rules"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(page.contains("blocked in core-hours"), "{page}");
    }

    #[tokio::test]
    async fn filter_admins_edit_time_windows_on_the_page() {
        bounded(async {
            let world = world().await;
            let admin = &world.admin;
            let (client, csrf) = admin.signed_in("filter.admin").await;
            let page = client.get(admin.url("/rules")).send().await.unwrap().text().await.unwrap();
            assert!(page.contains("<h2>Time windows</h2>"), "{page}");
            assert!(page.contains("value=\"08:30-15:30\""), "{page}");
            let (_, rules) = json(client.get(admin.url("/api/rules")).send().await.unwrap()).await;
            let version = rules["version"].as_str().unwrap().to_owned();

            // A time that is not one: refused in words, the typing kept, nothing changed.
            let before = world.text();
            let refused = client
                .post(admin.url("/rules/window"))
                .form(&[
                    ("csrf", csrf.as_str()),
                    ("version", version.as_str()),
                    ("name", "core-hours"),
                    ("days", "mon-fri"),
                    ("times", "08:30-12:00, 25:00-26:00"),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
            let page = refused.text().await.unwrap();
            assert!(page.contains("`25:00` is not a time"), "{page}");
            assert!(page.contains("value=\"08:30-12:00, 25:00-26:00\""), "{page}");
            assert!(!page.contains("windows.core-hours.times"), "{page}");
            assert_eq!(world.text(), before);

            // Core hours end earlier on the form: the table changes, the rest stays.
            let response = client
                .post(admin.url("/rules/window"))
                .form(&[
                    ("csrf", csrf.as_str()),
                    ("version", version.as_str()),
                    ("name", "core-hours"),
                    ("description", "Lessons <b>only</b>"),
                    ("days", "mon-fri"),
                    ("times", "08:30-12:00, 13:00-15:00"),
                    ("reason", "new timetable"),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::SEE_OTHER);
            let location = response.headers()["location"].to_str().unwrap().to_owned();
            assert!(location.starts_with("/rules?done="), "{location}");
            let text = world.text();
            assert!(
                text.contains("[windows.core-hours]\ndays = [\"mon-fri\"]\ntimes = [\"08:30-12:00\", \"13:00-15:00\"]\ndescription = \"Lessons <b>only</b>\""),
                "{text}"
            );
            assert!(text.contains("# Pupils never gamble."), "{text}");
            let last = admin.store.audit_entries(1, 10).unwrap().pop().unwrap();
            assert_eq!(last.actor, "filter.admin");
            assert_eq!(last.reason.as_deref(), Some("new timetable"));
            assert!(last.detail.contains("+times = [\"08:30-12:00\", \"13:00-15:00\"]"), "{}", last.detail);
            let page = client.get(admin.url("/rules")).send().await.unwrap().text().await.unwrap();
            assert!(page.contains("Lessons &lt;b&gt;only&lt;/b&gt;"), "escaped: {page}");

            // A new lunchtime window through the API, every day.
            let (_, rules) = json(client.get(admin.url("/api/rules")).send().await.unwrap()).await;
            let (status, saved) = json(
                client
                    .post(admin.url("/api/rules/window"))
                    .header("x-csrf-token", &csrf)
                    .json(&serde_json::json!({
                        "version": rules["version"], "name": "lunch", "times": "12:00-13:00"
                    }))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{saved}");
            assert!(world.text().contains("[windows.lunch]\ntimes = [\"12:00-13:00\"]"), "{}", world.text());

            // Overlapping times, a bad time, terms-only without term dates and a bad
            // name are refused with the reason; the file stays as it was.
            let before = world.text();
            let version = saved["version"].as_str().unwrap().to_owned();
            for (name, times, terms_only, expected) in [
                ("lunch", "12:00-13:00, 12:30-14:00", false, "overlaps"),
                ("lunch", "25:00-26:00", false, "`25:00` is not a time"),
                ("lunch", "12:00-13:00", true, "needs term dates"),
                ("bad name!", "12:00-13:00", false, "letters, digits"),
            ] {
                let (status, refused) = json(
                    client
                        .post(admin.url("/api/rules/window"))
                        .header("x-csrf-token", &csrf)
                        .json(&serde_json::json!({
                            "version": version, "name": name, "times": times,
                            "terms_only": terms_only.then_some("true"),
                        }))
                        .send()
                        .await
                        .unwrap(),
                )
                .await;
                assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
                let error = refused["error"].as_str().unwrap();
                assert!(error.contains(expected), "{expected}: {error}");
                assert_eq!(world.text(), before);
            }
        })
        .await;
    }

    #[tokio::test]
    async fn review_requests_are_approved_into_the_allow_list_or_rejected() {
        bounded(async {
            let world = world().await;
            let admin = &world.admin;
            for (at, url) in [(1u64, "http://bet.test/maths/probability"), (2, "http://bet.test/poker")] {
                admin
                    .store
                    .add_review(&safegate_store::ReviewRequest {
                        at_unix_nanos: at,
                        client: "10.0.0.7".parse().unwrap(),
                        user: Some("pupil7".into()),
                        role: "pupil".into(),
                        url: url.into(),
                        rule: "category:pupil:gambling".into(),
                        categories: vec!["gambling".into()],
                        comment: "<b>for maths</b>".into(),
                    })
                    .unwrap();
            }
            let (client, csrf) = admin.signed_in("filter.admin").await;
            let page = client.get(admin.url("/rules/reviews")).send().await.unwrap().text().await.unwrap();
            assert!(page.contains("&lt;b&gt;for maths&lt;/b&gt;"), "{page}");
            let (_, waiting) = json(client.get(admin.url("/api/rules/reviews")).send().await.unwrap()).await;
            let waiting = waiting.as_array().unwrap().clone();
            assert_eq!(waiting.len(), 2);
            let poker = waiting[0]["key"].as_str().unwrap().to_owned();
            let maths = waiting[1]["key"].as_str().unwrap().to_owned();
            let (_, rules) = json(client.get(admin.url("/api/rules")).send().await.unwrap()).await;
            let version = rules["version"].as_str().unwrap().to_owned();

            let decide = |body: serde_json::Value| {
                client
                    .post(admin.url("/api/rules/reviews/decide"))
                    .header("x-csrf-token", &csrf)
                    .json(&body)
                    .send()
            };
            let (status, done) = json(
                decide(serde_json::json!({
                    "key": maths, "decision": "approve", "version": version,
                    "entry": "bet.test/maths", "scope": "pupil", "reason": "maths department"
                }))
                .await
                .unwrap(),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{done}");
            assert!(world.text().contains("bet.test/maths"), "{}", world.text());
            let (status, _) = json(
                decide(serde_json::json!({ "key": maths, "decision": "reject", "reason": "changed my mind" }))
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(status, StatusCode::CONFLICT, "decided once");
            let (status, _) = json(
                decide(serde_json::json!({ "key": poker, "decision": "reject" })).await.unwrap(),
            )
            .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "a rejection needs a reason");
            let (status, _) = json(
                decide(serde_json::json!({ "key": poker, "decision": "reject", "reason": "gambling" }))
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(status, StatusCode::OK);
            let (_, waiting) = json(client.get(admin.url("/api/rules/reviews")).send().await.unwrap()).await;
            assert_eq!(waiting.as_array().unwrap().len(), 0);
            let actions: Vec<_> = admin
                .store
                .audit_entries(1, 10)
                .unwrap()
                .into_iter()
                .map(|e| (e.actor, e.action.as_str()))
                .collect();
            assert_eq!(
                actions,
                [
                    ("filter.admin".to_owned(), "policy-change"),
                    ("filter.admin".to_owned(), "review-decision"),
                    ("filter.admin".to_owned(), "review-decision"),
                ]
            );
        })
        .await;
    }

    fn record(
        at: u64,
        host: &str,
        path: &str,
        blocked: bool,
        search: Option<&str>,
    ) -> safegate_store::Record {
        safegate_store::Record {
            at_unix_micros: at,
            user: Some("pupil7".into()),
            role: "pupil".into(),
            group: None,
            client: "10.0.0.7".parse().unwrap(),
            identified_by: safegate_store::IdentifiedBy::ProxyAuth,
            method: "GET".into(),
            scheme: "http".into(),
            host: host.into(),
            port: 80,
            path: Some(path.into()),
            categories: vec![],
            outcome: if blocked {
                safegate_store::Outcome::Blocked
            } else {
                safegate_store::Outcome::Allowed
            },
            rule: if blocked {
                "category:pupil:gambling".into()
            } else {
                "default".into()
            },
            status: if blocked { 403 } else { 200 },
            bytes_up: 0,
            bytes_down: 1000,
            duration_micros: 1_000_000,
            search: search.map(|terms| safegate_store::SearchTerms {
                engine: "google".into(),
                terms: terms.into(),
            }),
            seen_as: safegate_store::SeenAs::PlainHttp,
            user_agent: None,
            failure: None,
            computer: None,
            content: None,
        }
    }

    #[tokio::test]
    async fn looking_at_one_persons_activity_is_audited_and_escaped() {
        bounded(async {
            let world = world().await;
            let admin = &world.admin;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_micros() as u64;
            let hour = 3_600_000_000;
            admin
                .store
                .write_records(&[
                    record(
                        now - 3 * hour,
                        "www.google.com",
                        "/search?q=x",
                        false,
                        Some("<script>alert(1)</script> homework"),
                    ),
                    record(
                        now - 3 * hour + 60_000_000,
                        "www.bbc.co.uk",
                        "/news",
                        false,
                        None,
                    ),
                    record(now - 2 * hour, "bet.test", "/poker", true, None),
                    record(now - 30 * 24 * hour, "old.test", "/", false, None),
                ])
                .unwrap();
            let (client, _) = admin.signed_in("head").await;
            let page = client
                .get(admin.url("/activity?user=pupil7"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            assert!(page.contains("say why"), "a reason is required: {page}");
            assert!(
                admin.store.audit_entries(1, 10).unwrap().is_empty(),
                "nothing viewed, nothing audited"
            );
            let page = client
                .get(admin.url("/activity?user=pupil7&reason=concern+raised+by+form+tutor"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            assert!(
                page.contains("&lt;script&gt;alert(1)&lt;/script&gt; homework"),
                "{page}"
            );
            assert!(!page.contains("<script>"), "{page}");
            assert!(page.contains("bbc.co.uk"), "{page}");
            assert!(page.contains("http://bet.test/poker"), "{page}");
            assert!(!page.contains("old.test"), "outside the period: {page}");
            let entries = admin.store.audit_entries(1, 10).unwrap();
            assert_eq!(entries.len(), 1);
            assert_eq!(entries[0].actor, "head");
            assert_eq!(entries[0].action, AuditAction::HistoryViewed);
            assert_eq!(entries[0].subject, "pupil7");
            assert_eq!(
                entries[0].reason.as_deref(),
                Some("concern raised by form tutor")
            );
            let (status, activity) = json(
                client
                    .get(admin.url("/api/activity?user=pupil7&reason=follow-up"))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(activity["searches"].as_array().unwrap().len(), 1);
            assert_eq!(activity["blocked"].as_array().unwrap().len(), 1);
            assert_eq!(admin.store.audit_entries(1, 10).unwrap().len(), 2);
        })
        .await;
    }

    #[tokio::test]
    async fn the_headteacher_handles_alerts_with_notes_and_every_change_is_audited() {
        bounded(async {
            let world = world().await;
            let admin = &world.admin;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_micros() as u64;
            let raised = admin
                .store
                .raise_alert(safegate_store::NewAlert {
                    computer: None,
                    client: None,
                    kind: safegate_store::AlertKind::SafeguardingPhrase,
                    severity: safegate_store::Severity::High,
                    who: "pupil7".into(),
                    user: Some("pupil7".into()),
                    role: "pupil".into(),
                    group: None,
                    subject: "self-harm".into(),
                    summary: "searched for <img src=x onerror=alert(1)>".into(),
                    at_unix_micros: now,
                    evidence: vec![record(
                        now,
                        "www.google.com",
                        "/search?q=x",
                        false,
                        Some("\"><script>x</script>"),
                    )],
                })
                .unwrap();
            let id = raised.alert.id;
            let (client, csrf) = admin.signed_in("head").await;
            let queue = client
                .get(admin.url("/alerts"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            assert!(
                queue.contains("searched for &lt;img src=x onerror=alert(1)&gt;"),
                "{queue}"
            );
            assert!(!queue.contains("<img"), "{queue}");
            let page = client
                .get(admin.url(&format!("/alerts/{id}")))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            assert!(
                page.contains("&quot;&gt;&lt;script&gt;x&lt;/script&gt;"),
                "evidence escaped: {page}"
            );
            assert!(page.contains("Acknowledge"), "{page}");

            // A note is required.
            let response = client
                .post(admin.url(&format!("/api/alerts/{id}/status")))
                .header("x-csrf-token", &csrf)
                .json(&serde_json::json!({ "status": "acknowledged", "note": " " }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST);
            let response = client
                .post(admin.url(&format!("/alerts/{id}/status")))
                .form(&[
                    ("csrf", csrf.as_str()),
                    ("status", "acknowledged"),
                    ("note", "spoke to the pupil"),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::SEE_OTHER);
            let (status, closed) = json(
                client
                    .post(admin.url(&format!("/api/alerts/{id}/status")))
                    .header("x-csrf-token", &csrf)
                    .json(&serde_json::json!({ "status": "closed", "note": "parents informed" }))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{closed}");
            assert_eq!(closed["status"], "closed");
            assert_eq!(closed["history"].as_array().unwrap().len(), 2);
            let (_, open) = json(client.get(admin.url("/api/alerts")).send().await.unwrap()).await;
            assert_eq!(
                open.as_array().unwrap().len(),
                0,
                "closed alerts leave the open queue"
            );
            let audited: Vec<_> = admin
                .store
                .audit_entries(1, 10)
                .unwrap()
                .into_iter()
                .map(|e| (e.actor, e.action, e.detail, e.reason))
                .collect();
            assert_eq!(audited.len(), 2);
            assert_eq!(audited[0].1, AuditAction::AlertStatus);
            assert_eq!(audited[1].2, "status: closed");
            assert_eq!(audited[1].3.as_deref(), Some("parents informed"));
            let response = client
                .post(admin.url("/api/alerts/999/status"))
                .header("x-csrf-token", &csrf)
                .json(&serde_json::json!({ "status": "closed", "note": "x" }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::NOT_FOUND);

            the_concern_record_is_printable_and_listed(admin, &client, id).await;
        })
        .await;
    }

    /// The alert's printable concern record (escaped, with the notes, audited) and the
    /// Reports page listing everything in the reports folder.
    async fn the_concern_record_is_printable_and_listed(
        admin: &Admin,
        client: &reqwest::Client,
        id: u64,
    ) {
        // The printable concern record: escaped, with the notes, and audited.
        let response = client
            .get(admin.url(&format!("/alerts/{id}/record")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let record = response.text().await.unwrap();
        assert!(
            record.contains(&format!("Safeguarding concern record: alert {id}")),
            "{record}"
        );
        assert!(record.contains("parents informed") && record.contains("spoke to the pupil"));
        assert!(
            record.contains("\"&gt;&lt;script&gt;x&lt;/script&gt;"),
            "{record}"
        );
        assert!(record.contains("searched for &lt;img src=x onerror=alert(1)&gt;"));
        assert!(
            !record.contains("<script>") && !record.contains("<img"),
            "{record}"
        );
        let last = admin.store.audit_entries(1, 10).unwrap().pop().unwrap();
        assert_eq!(last.action, AuditAction::HistoryViewed);
        assert_eq!(last.subject, "pupil7");
        assert_eq!(last.actor, "head");
        let missing = client
            .get(admin.url("/alerts/999/record"))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);

        // The Reports page lists everything in the reports folder (made by the
        // scheduler, the command line or the page), nothing hidden.
        let folder = admin._dir.path().join("reports");
        std::fs::create_dir_all(&folder).unwrap();
        for name in [
            format!("safegate-concern-alert-{id}-2026-11-18.html"),
            "safegate-report-2026-W47.html".to_owned(),
            "safegate-report-2026-W47-background.csv".to_owned(),
            "safegate-report-2026-W47-pseudonymised.html".to_owned(),
            ".safegate-report-2026-W47.mailed".to_owned(),
        ] {
            std::fs::write(folder.join(name), "<p>x</p>").unwrap();
        }
        let page = client
            .get(admin.url("/reports"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(page.contains(&format!("alert {id}, 2026-11-18")), "{page}");
        assert!(page.contains("2026-W47-pseudonymised") && page.contains("W47-background.csv"));
        assert!(!page.contains(".mailed"), "{page}");
        let file = client
            .get(admin.url(&format!(
                "/reports/file/safegate-concern-alert-{id}-2026-11-18.html"
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(file.status(), StatusCode::OK);
        let hidden = client
            .get(admin.url("/reports/file/.safegate-report-2026-W47.mailed"))
            .send()
            .await
            .unwrap();
        assert_eq!(hidden.status(), StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn a_sign_in_body_that_never_arrives_gets_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    bounded(async {
        let admin = start(long_sessions()).await;
        let mut stream = tokio::net::TcpStream::connect(admin.addr).await.unwrap();
        let request = format!(
            "POST /login HTTP/1.1\r\nHost: {}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n",
            admin.addr
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let started = std::time::Instant::now();
        let mut received = Vec::new();
        // The body timeout is 1 s here: the answer comes, and the connection closes.
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut received))
            .await
            .expect("the connection was still open after 10 s")
            .unwrap();
        let response = String::from_utf8_lossy(&received);
        assert!(response.starts_with("HTTP/1.1 408"), "{response}");
        assert!(started.elapsed() < Duration::from_secs(10));

        // A form that does arrive is still read.
        let _ = admin.signed_in("filter.admin").await;
    })
    .await;
}

/// While no account may use the admin pages, the sign-in page says which command
/// makes the first one; once one exists it does not.
#[tokio::test]
async fn the_sign_in_page_says_how_to_make_the_first_admin_account() {
    bounded(async {
        let admin = start(long_sessions()).await;
        let client = client();
        let page = |client: reqwest::Client| {
            let url = format!("http://{}/login", admin.addr);
            async move { client.get(url).send().await.unwrap().text().await.unwrap() }
        };
        let with_admins = page(client.clone()).await;
        assert!(!with_admins.contains("users add"), "{with_admins}");
        let users = admin.store.list_users().unwrap();
        for user in users.iter().filter(|user| !user.permissions.is_empty()) {
            admin.store.set_disabled(&user.name, true).unwrap();
        }
        let first_run = page(client).await;
        assert!(
            first_run.contains("No account may use these pages yet")
                && first_run.contains("sudo safegate setup --config /etc/safegate/safegate.toml")
                && first_run.contains("--permissions 'rules,reports,metrics,users'"),
            "{first_run}"
        );
    })
    .await;
}
