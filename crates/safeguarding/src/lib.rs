//! SafeGate's safeguarding alerts: the rules that turn visit-log records into alerts
//! for the designated safeguarding lead, evaluated off the proxy's path.
//!
//! - [`normalise`]: folding text so that spelling games do not hide a phrase;
//! - [`phrases`]: the policy's phrase lists as one Aho-Corasick automaton, with
//!   exception phrases;
//! - [`rules`]: phrases, locked categories, circumvention, staff social networking in
//!   core hours, repeated blocked attempts, concurrent log-ins;
//! - [`engine`]: the task that consumes the visit-log writer's batches, measures heavy
//!   use against each user's baseline, stores alerts (`safegate_store::alerts`) and
//!   hands new ones to delivery;
//! - [`delivery`]: sending new alerts to a webhook and by e-mail (`[delivery]` in
//!   `safegate.toml`), with retries; its [`Mailer`] also sends the weekly report.
//!
//! Settings come from the policy's `[alerts]` section and follow its reloads.

pub mod computers;
pub mod delivery;
pub mod engine;
pub mod known_computers;
pub mod normalise;
pub mod phrases;
pub mod rules;

pub use delivery::{DeliveryConfig, DeliveryError, Mailer};
pub use engine::{
    AlertStats, AlertStatsSnapshot, EngineInputs, PolicySource, RaisedHook, spawn_alert_engine,
};
pub use phrases::{PhraseHit, PhraseMatcher};
pub use rules::{ConcurrentLogin, Evaluator, NameComputer, SharedLogins};
