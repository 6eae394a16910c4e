//! SafeGate's block and allow lists: reading UT1 folders, hosts files and plain domain
//! lists; normalising hosts and URLs so that encoding tricks cannot bypass a rule; and
//! the compiled, immutable index that answers "which lists match this request".
//!
//! Pure: no network, no async, no global state. The flow is
//! [`source::read`] → [`index::IndexBuilder::add`] → [`index::IndexBuilder::build`] →
//! [`index::Index::matches`] on every request.
//!
//! The one exception is behind the `fetch` feature: `import` downloads and
//! installs a UT1 collection for `safegate lists import`, once, off the proxy's path.

#[cfg(feature = "fetch")]
pub mod import;
pub mod index;
pub mod normalize;
pub mod phrases;
pub mod source;

pub use index::{Index, IndexBuilder, ListId, ListMatches};
pub use normalize::{Host, NormalizeError, RequestTarget};
pub use phrases::{PhraseMatch, PhraseSet};
pub use source::{Entries, ListError, ListFormat, SkippedLine, Ut1Options, read, read_ut1};
