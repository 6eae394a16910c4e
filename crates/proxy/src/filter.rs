//! The proxy's view of the policy: who the client is (proxy authentication, an
//! address binding, or the policy's default role: see [`crate::auth`]), the decision
//! for a request, and what the block page shows.
//!
//! The policy is an immutable `Snapshot` behind an `ArcSwap`: a request takes one
//! reference at its start and keeps using it, so a reload never disturbs a request in
//! flight and never makes one wait.

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::HeaderValue;
use jiff::Timestamp;
use safegate_policy::{Decision, Role, Snapshot, Subject, YouTubeMode};
use safegate_store::IdentifiedBy;

use crate::auth::{Authenticator, Check, Refusal};
use crate::safesearch::{self, Restrictions};

/// The live policy, swapped atomically on reload.
pub type PolicyHandle = Arc<ArcSwap<Snapshot>>;

/// Who a request is decided for.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Browsing role.
    pub role: Role,
    /// Group within the role.
    pub group: Option<String>,
    /// User name, when known.
    pub user: Option<String>,
    /// How the identity was found.
    pub identified_by: IdentifiedBy,
}

impl Identity {
    /// The policy's view of this identity.
    pub fn subject(&self) -> Subject<'_> {
        Subject {
            role: self.role,
            group: self.group.as_deref(),
            user: self.user.as_deref(),
        }
    }
}

/// Identification and decisions for one proxy.
pub struct Filter {
    policy: PolicyHandle,
    auth: Arc<Authenticator>,
}

impl Filter {
    /// A filter deciding with `policy`, identifying clients with `auth` (credentials
    /// and address bindings).
    pub fn new(policy: PolicyHandle, auth: Arc<Authenticator>) -> Self {
        Self { policy, auth }
    }

    /// The current policy, for the whole of one request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.policy.load_full()
    }

    /// The authenticator (for its counters).
    pub fn auth(&self) -> &Arc<Authenticator> {
        &self.auth
    }

    /// Who the client at `peer` is by its address alone: its portal log-in, its
    /// binding, or the policy's default role. For clients that cannot be asked to log
    /// in (transparent mode).
    pub fn identify(&self, peer: IpAddr, snapshot: &Snapshot) -> Identity {
        self.auth
            .portal_session(peer)
            .or_else(|| self.auth.bound(peer))
            .unwrap_or_else(|| default_identity(snapshot))
    }

    /// Who an explicit-proxy client at `peer` sending `proxy_authorization` is:
    /// credentials first, then its portal log-in, then its binding, then (unless
    /// `auth.required`) the default role. A refusal is answered `407` ([`Refusal::response`]).
    pub async fn authenticate(
        &self,
        peer: IpAddr,
        proxy_authorization: Option<&HeaderValue>,
        snapshot: &Snapshot,
    ) -> Result<Identity, Refusal> {
        match self.auth.check(peer, proxy_authorization) {
            Check::Known(identity) => Ok(identity),
            Check::Refused(refusal) => Err(refusal),
            // Boxed: the rare slow path does not grow every request's future.
            Check::Verify(verification) => Box::pin(self.auth.verify(verification)).await,
            Check::Anonymous => match self
                .auth
                .portal_session(peer)
                .or_else(|| self.auth.bound(peer))
            {
                Some(identity) => Ok(identity),
                None if self.auth.required() => Err(self.auth.challenge()),
                None => Ok(default_identity(snapshot)),
            },
        }
    }
}

/// The identity of a client nobody identified: the policy's default role.
pub fn unidentified(snapshot: &Snapshot) -> Identity {
    default_identity(snapshot)
}

fn default_identity(snapshot: &Snapshot) -> Identity {
    Identity {
        role: snapshot.default_role(),
        group: None,
        user: None,
        identified_by: IdentifiedBy::Default,
    }
}

/// SafeSearch and YouTube restrictions for `identity`.
pub fn restrictions(snapshot: &Snapshot, identity: &Identity) -> Restrictions {
    let policy = snapshot.safesearch(&identity.subject());
    Restrictions {
        safesearch: policy.safesearch,
        youtube: match policy.youtube {
            YouTubeMode::Off => safesearch::YouTubeMode::Off,
            YouTubeMode::Moderate => safesearch::YouTubeMode::Moderate,
            YouTubeMode::Strict => safesearch::YouTubeMode::Strict,
        },
    }
}

/// The decision time in the school's time zone, for the block page.
pub fn local_time(snapshot: &Snapshot, now: Timestamp) -> String {
    now.to_zoned_datetime(snapshot.timezone().clone())
        .strftime("%a %-d %b %Y, %H:%M %Z")
        .to_string()
}

/// Everything the block page needs, borrowed from the decision.
pub fn block_info<'a>(
    decision: &'a Decision,
    identity: &'a Identity,
    url: &'a str,
    at: &'a str,
    review_action: Option<&'a str>,
    review_token: Option<&'a str>,
) -> crate::block_page::BlockInfo<'a> {
    crate::block_page::BlockInfo {
        url,
        categories: &decision.categories,
        rule: &decision.rule,
        reason: &decision.reason,
        at,
        user: identity.user.as_deref(),
        role: identity.role.as_str(),
        group: identity.group.as_deref(),
        review_action,
        review_token,
    }
}
