//! Who a request is decided for: the result of identifying a client (credentials,
//! portal log-in, address binding or the policy's default role).

use safegate_policy::{Role, Snapshot, Subject};
use safegate_store::IdentifiedBy;

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

    /// A client nobody identified: the group whose address ranges (`[groups.NAME]
    /// addresses`) hold `peer`, with its role; otherwise the policy's default role.
    pub fn unidentified(snapshot: &Snapshot, peer: std::net::IpAddr) -> Self {
        match snapshot.group_for_address(peer) {
            Some(group) => Self {
                role: group.role,
                group: Some(group.name.clone()),
                user: None,
                identified_by: IdentifiedBy::Address,
            },
            None => Self {
                role: snapshot.default_role(),
                group: None,
                user: None,
                identified_by: IdentifiedBy::Default,
            },
        }
    }
}
