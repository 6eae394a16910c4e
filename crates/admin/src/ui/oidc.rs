//! `[admin.oidc]`: sign-in to the admin web interface with the school's OpenID Connect
//! provider (Microsoft Entra ID, Google Workspace, or any provider with discovery).
//! Authorization code flow with PKCE (S256), a random `state` bound to the browser by
//! a cookie (login CSRF) and a random `nonce` checked in the ID token; the ID token's
//! signature, issuer, audience and expiry are checked by the `openidconnect` crate.
//! The person's permissions come from the first `[[admin.oidc.rules]]` whose claim
//! holds the value (a group id, a role, or the e-mail domain); no rule, no sign-in.
//!
//! The provider must be `https://`, except on a loopback address (a test provider).
//! Waiting sign-ins are kept in memory for [`PENDING_FOR`], at most [`MAX_PENDING`].

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use maud::html;
use openidconnect::core::{CoreClient, CoreProviderMetadata, CoreResponseType};
use openidconnect::{
    AuthenticationFlow, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use safegate_config::ConfigProblem;
use safegate_store::Permission;
use serde::{Deserialize, Serialize};

use crate::ui::page_frame::layout;
use crate::ui::session::{Session, SignInSource, random_token};
use crate::ui::{WebState, cookie_value, refusal};

/// The cookie naming this browser's waiting sign-in (`SameSite=Lax`: it must come
/// back with the provider's redirect).
pub const STATE_COOKIE: &str = "safegate_oidc";

/// How long a sign-in may wait at the provider.
pub const PENDING_FOR: Duration = Duration::from_secs(10 * 60);

/// Most sign-ins waiting at once (the oldest goes first).
pub const MAX_PENDING: usize = 1000;

/// `[admin.oidc]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer, e.g. `https://login.microsoftonline.com/<tenant>/v2.0`.
    pub issuer: String,
    /// The client (application) id registered with the provider.
    pub client_id: String,
    /// The client secret (shown as `<redacted>` by `safegate config show`), or ...
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "redacted"
    )]
    pub client_secret: Option<String>,
    /// ... a file holding it (first line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<PathBuf>,
    /// This interface's callback as registered with the provider:
    /// `https://<admin address>/login/oidc/callback`.
    pub redirect_url: String,
    /// Scopes asked for besides `openid`.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The claim that names the person (shown, and in the audit log).
    #[serde(default = "default_name_claim")]
    pub name_claim: String,
    /// Claims to permissions; the first rule that matches wins.
    #[serde(default)]
    pub rules: Vec<OidcRule>,
    /// The sign-in button's words.
    #[serde(default = "default_button")]
    pub button: String,
}

/// One `[[admin.oidc.rules]]`: a claim holding a value gives permissions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcRule {
    /// The claim: `groups`, `roles`, `hd` (Google's domain), `email_domain` (the part of
    /// `email` after `@`), or any other claim of the ID token.
    pub claim: String,
    /// The value it must hold (or, for a list, contain); domains without regard to case.
    pub value: String,
    /// What it gives: `rules`, `reports`, `metrics`, `users`, `teach`.
    pub permissions: Vec<String>,
}

/// `<redacted>` in place of a secret.
fn redacted<S: serde::Serializer>(
    secret: &Option<String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    crate::access::serialize_redacted(secret.as_deref().unwrap_or_default(), serializer)
}

fn default_scopes() -> Vec<String> {
    vec!["email".to_owned(), "profile".to_owned()]
}

fn default_name_claim() -> String {
    "email".to_owned()
}

fn default_button() -> String {
    "Sign in with the school account".to_owned()
}

impl OidcConfig {
    /// Every problem, with its key under `admin.oidc`.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, message: String| {
            problems.push(ConfigProblem::new(format!("admin.oidc.{key}"), message));
        };
        if let Err(why) = allowed_url(&self.issuer) {
            problem("issuer", why);
        }
        if let Err(why) = allowed_url(&self.redirect_url) {
            problem("redirect_url", why);
        }
        if self.client_secret.is_some() == self.client_secret_file.is_some() {
            problem(
                "client_secret",
                "set one of client_secret and client_secret_file".into(),
            );
        }
        if self.rules.is_empty() {
            problem(
                "rules",
                "add at least one rule (a claim and value giving permissions): without one nobody can sign in".into(),
            );
        }
        for (i, rule) in self.rules.iter().enumerate() {
            for permission in &rule.permissions {
                if permission.parse::<Permission>().is_err() {
                    problem(
                        &format!("rules[{i}].permissions"),
                        format!(
                            "{permission:?} is not a permission: use rules, reports, metrics, users or teach"
                        ),
                    );
                }
            }
        }
        problems
    }
}

/// `https://`, or `http://` on a loopback address only.
fn allowed_url(text: &str) -> Result<(), String> {
    let url = url::Url::parse(text).map_err(|e| format!("{text:?} is not an address: {e}"))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!(
            "{text:?} must be https:// (http:// only on a loopback address, for tests)"
        )),
    }
}

/// A sign-in waiting at the provider.
struct Pending {
    verifier: String,
    nonce: String,
    started: Instant,
}

/// The provider, as discovered once, and the sign-ins waiting.
pub struct Oidc {
    config: OidcConfig,
    secret: String,
    http: reqwest::Client,
    metadata: tokio::sync::OnceCell<CoreProviderMetadata>,
    pending: Mutex<HashMap<String, Pending>>,
}

/// Why an OpenID Connect sign-in failed (logged; the person sees a short page).
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// A configured file or address could not be used.
    #[error("admin.oidc: {0}")]
    Setup(String),
    /// The provider could not be reached or its discovery document was not usable.
    #[error("the sign-in provider could not be reached: {0}")]
    Discovery(String),
    /// The provider's answer was refused (state, code, token or claims).
    #[error("the sign-in was not accepted: {0}")]
    Refused(String),
}

impl Oidc {
    /// The client for a validated `config` (reads the secret file).
    pub fn new(config: &OidcConfig) -> Result<Self, OidcError> {
        let secret = match (&config.client_secret, &config.client_secret_file) {
            (Some(secret), _) => secret.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| OidcError::Setup(format!("{}: {e}", path.display())))?
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
            (None, None) => String::new(),
        };
        // No redirects: following them would let the provider send SafeGate anywhere.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| OidcError::Setup(e.to_string()))?;
        Ok(Self {
            config: config.clone(),
            secret,
            http,
            metadata: tokio::sync::OnceCell::new(),
            pending: Mutex::new(HashMap::new()),
        })
    }

    /// The sign-in button's words.
    pub fn button(&self) -> &str {
        &self.config.button
    }

    /// The provider's metadata (discovered at the first sign-in, then kept).
    async fn metadata(&self) -> Result<&CoreProviderMetadata, OidcError> {
        self.metadata
            .get_or_try_init(|| async {
                let issuer = IssuerUrl::new(self.config.issuer.clone())
                    .map_err(|e| OidcError::Setup(e.to_string()))?;
                CoreProviderMetadata::discover_async(issuer, &self.http)
                    .await
                    .map_err(|e| OidcError::Discovery(error_chain(&e)))
            })
            .await
    }

    /// The provider's address to send the browser to, and the `state` to remember.
    async fn start(&self) -> Result<(String, String), OidcError> {
        let client = self.client(self.metadata().await?.clone())?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client.authorize_url(
            AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for scope in &self.config.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.retain(|_, p| p.started.elapsed() < PENDING_FOR);
        if pending.len() >= MAX_PENDING
            && let Some(oldest) = pending
                .iter()
                .min_by_key(|(_, p)| p.started)
                .map(|(s, _)| s.clone())
        {
            pending.remove(&oldest);
        }
        pending.insert(
            state.secret().clone(),
            Pending {
                verifier: verifier.secret().clone(),
                nonce: nonce.secret().clone(),
                started: Instant::now(),
            },
        );
        Ok((url.to_string(), state.secret().clone()))
    }

    /// Finishes a sign-in: the code exchanged (with the PKCE verifier), the ID token
    /// checked (with the nonce), the claims mapped. The waiting sign-in is used once.
    async fn finish(&self, state: &str, code: &str) -> Result<Session, OidcError> {
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(state)
            .filter(|p| p.started.elapsed() < PENDING_FOR)
            .ok_or_else(|| OidcError::Refused("unknown or expired state".into()))?;
        let client = self.client(self.metadata().await?.clone())?;
        let refused = |e: &dyn std::error::Error| OidcError::Refused(error_chain(e));
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| refused(&e))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier))
            .request_async(&self.http)
            .await
            .map_err(|e| refused(&e))?;
        let id_token = token
            .id_token()
            .ok_or_else(|| OidcError::Refused("no ID token in the answer".into()))?;
        // Checks signature, issuer, audience, expiry and nonce.
        id_token
            .claims(&client.id_token_verifier(), &Nonce::new(pending.nonce))
            .map_err(|e| refused(&e))?;
        let claims = payload_claims(&id_token.to_string())?;
        self.session_of(&claims)
    }

    fn client(
        &self,
        metadata: CoreProviderMetadata,
    ) -> Result<
        CoreClient<
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointMaybeSet,
            openidconnect::EndpointMaybeSet,
        >,
        OidcError,
    > {
        let redirect = RedirectUrl::new(self.config.redirect_url.clone())
            .map_err(|e| OidcError::Setup(e.to_string()))?;
        Ok(CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.config.client_id.clone()),
            Some(ClientSecret::new(self.secret.clone())),
        )
        .set_redirect_uri(redirect))
    }

    /// The session for verified `claims`, or why not (no name, no matching rule).
    fn session_of(&self, claims: &serde_json::Value) -> Result<Session, OidcError> {
        let name = claims
            .get(&self.config.name_claim)
            .and_then(|v| v.as_str())
            .map(|n| n.trim().to_lowercase())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| OidcError::Refused(format!("no {} claim", self.config.name_claim)))?;
        let permissions = permissions_for(&self.config.rules, claims)
            .ok_or_else(|| OidcError::Refused(format!("{name}: no rule gives a permission")))?;
        let display_name = claims
            .get("name")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        Ok(Session {
            user: name,
            display_name,
            permissions,
            csrf: random_token().ok_or_else(|| OidcError::Setup("no randomness".into()))?,
            generation: 0,
            must_enrol: false,
            source: SignInSource::OpenId,
        })
    }
}

/// The permissions of the first rule that `claims` match, if it gives any.
fn permissions_for(rules: &[OidcRule], claims: &serde_json::Value) -> Option<BTreeSet<Permission>> {
    rules
        .iter()
        .find(|rule| holds(claims, &rule.claim, &rule.value))
        .map(|rule| {
            rule.permissions
                .iter()
                .filter_map(|p| p.parse().ok())
                .collect::<BTreeSet<Permission>>()
        })
        .filter(|p| !p.is_empty())
}

/// Whether `claim` holds `value`: equal, or among a list; `email_domain` is the
/// part of `email` after `@`; domains compare without regard to case.
fn holds(claims: &serde_json::Value, claim: &str, value: &str) -> bool {
    if claim == "email_domain" {
        return claims
            .get("email")
            .and_then(|e| e.as_str())
            .and_then(|e| e.rsplit_once('@'))
            .is_some_and(|(_, domain)| domain.eq_ignore_ascii_case(value));
    }
    match claims.get(claim) {
        Some(serde_json::Value::String(s)) if claim == "hd" => s.eq_ignore_ascii_case(value),
        Some(serde_json::Value::String(s)) => s == value,
        Some(serde_json::Value::Array(items)) => items.iter().any(|i| i.as_str() == Some(value)),
        _ => false,
    }
}

/// The claims of a compact JWT (already verified by the caller), as JSON.
fn payload_claims(jwt: &str) -> Result<serde_json::Value, OidcError> {
    let bad = || OidcError::Refused("the ID token's claims cannot be read".into());
    let payload = jwt.split('.').nth(1).ok_or_else(bad)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| bad())?;
    serde_json::from_slice(&bytes).map_err(|_| bad())
}

/// An error and its causes in one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `GET /login/oidc`: to the provider, with this browser's `state` in a cookie.
pub async fn begin(State(state): State<Arc<WebState>>) -> Response {
    let Some(oidc) = state.oidc.get() else {
        return refusal(
            false,
            StatusCode::NOT_FOUND,
            "sign-in with the school account is not set up",
        );
    };
    match oidc.start().await {
        Ok((url, csrf)) => {
            let mut response = Redirect::to(&url).into_response();
            response
                .headers_mut()
                .append(header::SET_COOKIE, state.lax_cookie(STATE_COOKIE, &csrf));
            response
        }
        Err(error) => {
            tracing::warn!(%error, "OpenID Connect sign-in could not start");
            refusal(
                false,
                StatusCode::BAD_GATEWAY,
                "The school's sign-in service cannot be reached. Try again in a minute, or sign in with a SafeGate account.",
            )
        }
    }
}

/// The provider's redirect back.
#[derive(Debug, Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// `GET /login/oidc/callback`: checks `state` against the cookie, finishes the
/// sign-in and starts the session. The answer is a page that moves on to `/` by
/// itself, so that the new `SameSite=Strict` session cookie is sent (a redirect
/// would still count as the provider's cross-site navigation).
pub async fn callback(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
    Query(query): Query<Callback>,
) -> Response {
    let refused = |why: &str| {
        tracing::warn!(why, "OpenID Connect sign-in refused");
        refusal(
            false,
            StatusCode::FORBIDDEN,
            "The sign-in was not accepted, or your account may not use the admin pages. Ask the school's IT support.",
        )
    };
    let Some(oidc) = state.oidc.get() else {
        return refusal(
            false,
            StatusCode::NOT_FOUND,
            "sign-in with the school account is not set up",
        );
    };
    let (None, Some(code), Some(sent)) = (&query.error, &query.code, &query.state) else {
        tracing::warn!(error = ?query.error, "OpenID Connect sign-in came back without a code");
        return refusal(
            false,
            StatusCode::BAD_REQUEST,
            "The sign-in was cancelled or did not finish. Go back to the sign-in page and try again.",
        );
    };
    let cookie = cookie_value(&headers, STATE_COOKIE).unwrap_or_default();
    if cookie.is_empty() || !crate::ui::session::same_secret(cookie, sent) {
        return refused("state does not match this browser's cookie");
    }
    let session = match oidc.finish(sent, code).await {
        Ok(session) => session,
        Err(error) => return refused(&error.to_string()),
    };
    let name = session.user.clone();
    let Some(id) = state.sessions.start(session) else {
        return refusal(
            false,
            StatusCode::SERVICE_UNAVAILABLE,
            "no randomness available",
        );
    };
    tracing::info!(user = %name, "admin signed in (OpenID Connect)");
    let page = layout(
        "Signed in",
        None,
        html! {
            meta http-equiv="refresh" content="0;url=/";
            p { "Signed in as " (name) ". " a href="/" { "Continue" } }
        },
    );
    let mut response = page.into_response();
    let h = response.headers_mut();
    h.append(
        header::SET_COOKIE,
        state.cookie(crate::ui::session::SESSION_COOKIE, &id),
    );
    h.append(header::SET_COOKIE, state.lax_cookie(STATE_COOKIE, ""));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_is_for_loopback_only() {
        assert!(allowed_url("https://login.microsoftonline.com/x/v2.0").is_ok());
        assert!(allowed_url("http://127.0.0.1:4000").is_ok());
        assert!(allowed_url("http://localhost:4000/cb").is_ok());
        assert!(allowed_url("http://idp.school.org").is_err());
        assert!(allowed_url("http://10.0.0.1").is_err());
    }

    /// The `[admin.oidc]` examples in the README, parsed.
    fn readme_examples() -> Vec<OidcConfig> {
        let readme = include_str!("../../../../README.md");
        readme
            .split("```toml\n")
            .skip(1)
            .filter_map(|block| block.split("```").next())
            .filter(|block| block.starts_with("[admin.oidc]"))
            .map(|block| {
                let table: toml::Table = toml::from_str(block).unwrap_or_else(|e| panic!("{e}"));
                let oidc = table["admin"]["oidc"].clone();
                oidc.try_into().unwrap_or_else(|e| panic!("{e}: {block}"))
            })
            .collect()
    }

    #[test]
    fn the_readme_examples_for_microsoft_and_google_are_valid_and_map_their_claims() {
        let examples = readme_examples();
        assert_eq!(
            examples.len(),
            2,
            "the Entra ID and Google Workspace examples"
        );
        for example in &examples {
            let problems: Vec<String> =
                example.validate().iter().map(ToString::to_string).collect();
            assert!(problems.is_empty(), "{problems:?}");
        }
        let permissions = |names: &[&str]| -> Option<BTreeSet<Permission>> {
            Some(
                names
                    .iter()
                    .map(|n| n.parse().unwrap_or_else(|_| panic!("{n}")))
                    .collect(),
            )
        };
        // Entra ID: the groups claim carries object ids; the first listed rule wins.
        let entra = &examples[0];
        assert_eq!(entra.name_claim, "preferred_username");
        let dsl = serde_json::json!({
            "preferred_username": "dsl@school.example",
            "groups": ["<object id of IT support>", "<object id of the DSL group>"],
        });
        assert_eq!(
            permissions_for(&entra.rules, &dsl),
            permissions(&["reports"])
        );
        let it = serde_json::json!({ "groups": ["<object id of IT support>"] });
        assert_eq!(
            permissions_for(&entra.rules, &it),
            permissions(&["rules", "metrics", "users"])
        );
        assert_eq!(
            permissions_for(&entra.rules, &serde_json::json!({ "groups": [] })),
            None
        );
        // Google: the head by e-mail, everyone else of the domain by `hd`.
        let google = &examples[1];
        let head = serde_json::json!({ "email": "head@school.example", "hd": "school.example" });
        assert_eq!(
            permissions_for(&google.rules, &head),
            permissions(&["reports"])
        );
        let teacher = serde_json::json!({ "email": "t@school.example", "hd": "School.Example" });
        assert_eq!(
            permissions_for(&google.rules, &teacher),
            permissions(&["teach"])
        );
        let outsider = serde_json::json!({ "email": "x@gmail.com" });
        assert_eq!(permissions_for(&google.rules, &outsider), None);
    }

    #[test]
    fn claims_hold_values_lists_and_domains() {
        let claims = serde_json::json!({
            "email": "Head@School.ORG", "groups": ["a", "b"], "hd": "School.org", "role": "x"
        });
        assert!(holds(&claims, "groups", "b"));
        assert!(!holds(&claims, "groups", "c"));
        assert!(holds(&claims, "email_domain", "school.org"));
        assert!(holds(&claims, "hd", "school.org"));
        assert!(holds(&claims, "role", "x"));
        assert!(!holds(&claims, "missing", "x"));
    }
}
