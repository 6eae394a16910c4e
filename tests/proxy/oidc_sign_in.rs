//! Admin sign-in with OpenID Connect (`[admin.oidc]`) against a real provider (npm's
//! `oidc-provider`, run by node on loopback) in headless Chromium: discovery, the
//! authorization code flow with PKCE, state and nonce; the head (in the mapped
//! `safeguarding` group) is signed in with the reports permission and her name shown;
//! a pupil without the mapped claim is refused.
//!
//! Needs node and `oidc-provider` in target/oidc (`.ci/run` installs it), and
//! Chromium; skipped without them unless `SAFEGATE_REQUIRE_OPS_TOOLS` is set.

use crate::kit::bounded;
use crate::kit::browser::Browser;
use crate::kit::oidc::{self, CLIENT_ID, CLIENT_SECRET, Provider};
use crate::kit::process::SafeGate;
use crate::kit::slapd::free_port;

/// Through the provider's development log-in and consent pages as `login`.
async fn sign_in_at_provider(browser: &Browser, admin: &str, login: &str) {
    browser.goto(&format!("{admin}/login")).await;
    browser.click("a[href='/login/oidc']").await;
    browser.wait_for_text("Sign-in").await;
    browser.fill("input[name=login]", login).await;
    browser.fill("input[name=password]", "any-password").await;
    browser.click("button[type=submit]").await;
    browser.wait_for_text("Continue").await;
    browser.click("button[type=submit]").await;
}

#[tokio::test]
async fn school_accounts_sign_in_by_their_claims_and_others_are_refused() {
    if !oidc::installed() {
        assert!(
            std::env::var_os("SAFEGATE_REQUIRE_OPS_TOOLS").is_none(),
            "node and oidc-provider (target/oidc) are required but not installed"
        );
        eprintln!("SKIPPED: node or oidc-provider (target/oidc) is not installed");
        return;
    }
    bounded(async {
        let Some(browser) = Browser::start().await else {
            return;
        };
        let admin_port = free_port();
        let admin = format!("http://127.0.0.1:{admin_port}");
        let callback = format!("{admin}/login/oidc/callback");
        let provider = Provider::start(&callback).await;
        let oidc = format!(
            "admin.oidc={{ issuer = {issuer:?}, client_id = {CLIENT_ID:?}, \
             client_secret = {CLIENT_SECRET:?}, redirect_url = {callback:?}, \
             scopes = [\"email\", \"profile\", \"groups\"], \
             rules = [{{ claim = \"groups\", value = \"safeguarding\", permissions = [\"reports\"] }}] }}",
            issuer = provider.issuer(),
        );
        let listen = format!("admin.listen=\"127.0.0.1:{admin_port}\"");
        let _safegate = SafeGate::start(&[&listen, &oidc]).await;

        sign_in_at_provider(&browser, &admin, "head").await;
        let home = browser.wait_for_text("Sign out").await;
        assert!(home.contains("Hana Head"), "{home}");
        assert!(home.contains("Reports"), "{home}");
        browser
            .click("header form[action='/logout'] button[type=submit]")
            .await;
        browser.wait_for_text("User name").await;

        // Pat's groups hold no mapped value: refused, no session. (Another browser:
        // the provider still knows the head in this one.)
        drop(browser);
        let Some(browser) = Browser::start().await else {
            return;
        };
        sign_in_at_provider(&browser, &admin, "pat").await;
        let page = browser.wait_for_text("not accepted").await;
        assert!(!page.contains("Sign out"), "{page}");
        browser.goto(&format!("{admin}/")).await;
        browser.wait_for_text("User name").await;
    })
    .await;
}
