//! Banned searches: phrases that, found in the terms of a search, answer the search
//! with the block page (e2guardian's `bannedsearchlist`). One phrase per line, `#`
//! comments; phrases and terms are folded alike ([`crate::fold`]) and match on word
//! boundaries, so `Kill Myself` and `k1ll   myself` are the same search.

use std::path::Path;

use aho_corasick::{AhoCorasick, MatchKind};

use crate::ContentError;
use crate::fold::fold_text;

/// The compiled banned-search phrases.
#[derive(Debug, Clone)]
pub struct BannedSearches {
    matcher: AhoCorasick,
    phrases: Vec<String>,
}

impl BannedSearches {
    /// Reads a list file.
    pub fn read(path: &Path) -> Result<BannedSearches, ContentError> {
        let text = std::fs::read_to_string(path).map_err(|source| ContentError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Compiles the phrases of a list text.
    pub fn parse(text: &str) -> Result<BannedSearches, ContentError> {
        let mut phrases: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(fold_text)
            .filter(|phrase| !phrase.is_empty())
            .collect();
        phrases.sort();
        phrases.dedup();
        let patterns = phrases.iter().map(|p| format!(" {p} "));
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(patterns)
            .map_err(|e| ContentError::Build(e.to_string()))?;
        Ok(BannedSearches { matcher, phrases })
    }

    /// The banned phrase in `terms` (as typed), if any.
    pub fn find(&self, terms: &str) -> Option<&str> {
        let folded = format!(" {} ", fold_text(terms));
        self.matcher
            .find(&folded)
            .map(|m| self.phrases[m.pattern().as_usize()].as_str())
    }

    /// Number of phrases.
    pub fn len(&self) -> usize {
        self.phrases.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.phrases.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn finds_folded_phrases_on_word_boundaries() {
        let banned = BannedSearches::parse("# x\nkill myself\nPorn\n\n").unwrap();
        assert_eq!(banned.find("how to K1LL   myself"), Some("kill myself"));
        assert_eq!(banned.find("free porn videos"), Some("porn"));
        assert_eq!(banned.find("pornography law essay"), None);
        assert_eq!(banned.find("killing mice"), None);
    }
}
