//! SafeGate's block and allow lists: reading UT1 folders, hosts files and plain domain
//! lists; normalising hosts and URLs so that encoding tricks cannot bypass a rule; and
//! the compiled, immutable index that answers "which lists match this request".
//!
//! Pure: no network, no async, no global state. The flow is
//! [`source::read`] → [`index::IndexBuilder::add`] → [`index::IndexBuilder::build`] →
//! [`index::Index::matches`] on every request; [`screen::screen`] refuses a list read
//! from a broken file before it goes into an index.
//!
//! The one exception is behind the `fetch` feature: `import` downloads and
//! installs a UT1 collection for `safegate lists import`, once, off the proxy's path.

#[cfg(feature = "fetch")]
pub mod checksum;
#[cfg(feature = "fetch")]
pub mod feed;
#[cfg(feature = "fetch")]
pub mod import;
pub mod index;
pub mod normalise;
pub mod screen;
pub mod source;

pub use index::{Index, IndexBuilder, ListMatches, StagedDomains};
pub use normalise::{Host, NormaliseError, RequestTarget};
pub use screen::{ListChecks, Refusal, screen};
pub use source::{
    Entries, ListError, ListFormat, SkippedLine, Ut1Options, read, read_streaming, read_ut1,
};

/// Identifies a list (a category, or a policy's own allow/deny entries) in an index;
/// also named by [`ListError::Expression`]. Defined here, at the root, because both
/// [`source`] and [`index`] use it.
pub type ListId = u16;
