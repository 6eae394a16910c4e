//! What a person did on the web, read from their requests and the visit log (issue 5,
//! points 4 and 5): what they searched for and which sites they spent time on.
//!
//! - [`search_terms`]: the search terms typed into a search engine, video site or shop,
//!   read from the request URL when it is visible (plain HTTP, decrypted HTTPS). The
//!   engines are a data table, [`search_terms::ENGINES`].
//! - [`visits`]: consecutive requests of one person to one site (registrable domain,
//!   from the public suffix list) joined into visits with a start, an end and a
//!   duration ("how long you remain there").
//!
//! Both are pure and allocation-light; neither touches the disk.

pub mod search_terms;
pub mod visits;

pub use safegate_store::record::SearchTerms;
pub use search_terms::extract;
pub use visits::{DEFAULT_IDLE_GAP, Visit, VisitJoiner, join, site_of};
