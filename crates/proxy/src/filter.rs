//! The proxy's view of the policy: who the client is (for now the role bound to its
//! address, or the policy's default role; users arrive with proxy authentication),
//! the decision for a request, and what the block page shows.
//!
//! The policy is an immutable `Snapshot` behind an `ArcSwap`: a request takes one
//! reference at its start and keeps using it, so a reload never disturbs a request in
//! flight and never makes one wait.

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use ipnet::IpNet;
use jiff::Timestamp;
use safegate_policy::{Decision, Role, Snapshot, Subject, YouTubeMode};
use safegate_store::IdentifiedBy;

use crate::safesearch::{self, Restrictions};

/// The live policy, swapped atomically on reload.
pub type PolicyHandle = Arc<ArcSwap<Snapshot>>;

/// A client address range bound to a browsing role (the pupils' Wi-Fi, a year-6 room).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRole {
    /// Client addresses this applies to.
    pub network: IpNet,
    /// Role of everyone in the range.
    pub role: Role,
    /// Group within the role, if any.
    pub group: Option<String>,
}

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
    client_roles: Vec<ClientRole>,
}

impl Filter {
    /// A filter deciding with `policy`, identifying clients by `client_roles` (first
    /// matching range wins).
    pub fn new(policy: PolicyHandle, client_roles: Vec<ClientRole>) -> Self {
        Self {
            policy,
            client_roles,
        }
    }

    /// The current policy, for the whole of one request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.policy.load_full()
    }

    /// Who the client at `peer` is.
    pub fn identify(&self, peer: IpAddr, snapshot: &Snapshot) -> Identity {
        let peer = canonical(peer);
        match self.client_roles.iter().find(|r| r.network.contains(&peer)) {
            Some(bound) => Identity {
                role: bound.role,
                group: bound.group.clone(),
                user: None,
                identified_by: IdentifiedBy::Address,
            },
            None => Identity {
                role: snapshot.default_role(),
                group: None,
                user: None,
                identified_by: IdentifiedBy::Default,
            },
        }
    }
}

/// IPv4-mapped IPv6 addresses (from a dual-stack listener) compared as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
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
    }
}
