//! SafeGate's content analysis: pages scored by weighted phrases, as e2guardian does,
//! so that new and uncategorised sites are caught by what they say.
//!
//! - [`weighted_list`]: e2guardian's `weightedphraselist` format (phrases, weights,
//!   combinations, includes), which SafeGate's starter lists use too;
//! - [`PhraseSet`]: every phrase of every category in one Aho-Corasick DFA over
//!   folded text ([`fold`]: case, accents, spacing, leetspeak);
//! - [`Scan`]: one response body scanned as it streams (decompression, charset,
//!   readable text, matching), in fixed memory, giving a [`Finding`] per role.
//!
//! Pure: no I/O but reading list files, no async, nothing of the proxy. The proxy
//! feeds it the bytes it passes on and decides on the [`Finding`].

mod banned_search;
pub mod fold;
mod html_text;
mod phrase_set;
mod scan;
pub mod weighted_list;

use std::path::PathBuf;

pub use banned_search::BannedSearches;
pub use html_text::Markup;
pub use phrase_set::{CategoryId, PhraseSet};
pub use scan::{Coding, Finding, Scan, ScanLimits, Stopped, content_type};
pub use weighted_list::{Phrase, WeightedEntry};

/// Why a phrase list could not be read or compiled.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The reason.
        source: std::io::Error,
    },
    /// The file is larger than [`weighted_list::MAX_LIST_BYTES`].
    #[error("{0} is larger than 64 MiB")]
    TooLarge(PathBuf),
    /// `.Include<...>` nested too deep, usually a loop.
    #[error("{0}: includes nest more than 8 deep (a file including itself?)")]
    IncludeDepth(PathBuf),
    /// A line is not in the weighted list format.
    #[error("{path}, line {line}: {why}")]
    Line {
        /// The file.
        path: PathBuf,
        /// Its line number, from 1.
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// More than 65535 categories.
    #[error("more than 65535 phrase categories")]
    TooManyCategories,
    /// More than 2^32 phrases.
    #[error("too many phrases")]
    TooManyPhrases,
    /// The automaton could not be built (too large).
    #[error("the phrase automaton could not be built: {0}")]
    Build(String),
}
