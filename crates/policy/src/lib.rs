//! SafeGate's policy: the model of `config/policy.toml` (categories, roles, groups,
//! rules, time windows, unblocks), its compilation into an immutable `Snapshot`, and
//! `Snapshot::decide`, the one function the proxy and `safegate check` call.
//!
//! ```no_run
//! use safegate_policy::{Policy, Role, Subject};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let snapshot = Policy::load(std::path::Path::new("config/policy.toml"))?;
//! let subject = Subject { role: Role::Pupil, group: Some("year6"), user: Some("ada") };
//! let target = safegate_policy::RequestTarget::parse_url("http://www.bet.com/")?;
//! let decision = snapshot.decide(&subject, &target, jiff::Timestamp::now());
//! println!("{:?} by {}: {}", decision.verdict, decision.rule, decision.reason);
//! # Ok(()) }
//! ```

mod alerts;
mod block_page;
mod compile;
mod content;
mod decrypt;
mod error;
mod file_rule;
mod groups;
mod model;
mod snapshot;
mod window;

use safegate_lists as lists;

pub use alerts::{AlertSettings, HeavyUse, PhraseList, Severity, StaffSocial, parse_phrase_file};
pub use block_page::{BLOCK_PAGE_LANGUAGES, BlockPageSettings, MAX_LOGO_BYTES, MAX_MESSAGE_CHARS};
pub use compile::Policy;
pub use content::{ContentCheck, ContentRules, DEFAULT_MAX_HOLD, DEFAULT_PUPIL_LIMIT};
pub use decrypt::{DecryptDecision, SniMismatch};
pub use error::{ListRefusal, PolicyError, Problem};
pub use groups::parse_range;
pub use lists::{ListChecks, Refusal};
pub use snapshot::{GroupInfo, Teaching};

/// The live policy, swapped atomically on reload: a request takes one snapshot at its
/// start and keeps using it, so a reload never disturbs a request in flight and never
/// makes one wait.
pub type PolicyHandle = std::sync::Arc<arc_swap::ArcSwap<Snapshot>>;
pub use lists::normalise::RequestTarget;
pub use snapshot::{
    CategoryStats, Decision, ListFileStats, LoadStats, Role, SafeSearch, Snapshot, Subject,
    UnknownRole, Verdict, YouTubeMode,
};
