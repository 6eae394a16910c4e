//! Two-factor sign-in (TOTP, RFC 6238) records of admin accounts, one per user in
//! the `two_factor` tree: the shared secret, whether enrolment finished, hashes of
//! the unused recovery codes, and the last time step accepted (a code is accepted
//! once). The codes themselves are computed and checked by the admin interface.

use serde::{Deserialize, Serialize};

use crate::{Store, StoreError};

/// The tree of two-factor records, keyed by user name.
const TREE: &str = "two_factor";

/// One account's two-factor sign-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwoFactor {
    /// The shared secret (20 random bytes).
    pub secret: Vec<u8>,
    /// Enrolment finished: sign-in asks for a code.
    pub enabled: bool,
    /// Hashes of the recovery codes not used yet.
    pub recovery: Vec<String>,
    /// The last TOTP time step accepted (codes of it and before are refused).
    pub last_step: u64,
}

impl Store {
    /// The two-factor record of `user`, if any.
    pub fn two_factor(&self, user: &str) -> Result<Option<TwoFactor>, StoreError> {
        let tree = self.trees()?.db.open_tree(TREE)?;
        Ok(match tree.get(user.as_bytes())? {
            Some(bytes) => Some(serde_json::from_slice(&bytes)?),
            None => None,
        })
    }

    /// Stores the two-factor record of `user` (on disk before it returns).
    pub fn set_two_factor(&self, user: &str, record: &TwoFactor) -> Result<(), StoreError> {
        let tree = self.trees()?.db.open_tree(TREE)?;
        tree.insert(user.as_bytes(), serde_json::to_vec(record)?)?;
        tree.flush()?;
        Ok(())
    }

    /// Removes the two-factor record of `user` (back to a password only).
    pub fn remove_two_factor(&self, user: &str) -> Result<(), StoreError> {
        let tree = self.trees()?.db.open_tree(TREE)?;
        tree.remove(user.as_bytes())?;
        tree.flush()?;
        Ok(())
    }
}
