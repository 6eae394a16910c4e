//! Phrase lists (safeguarding terms, search terms) matched with one Aho-Corasick
//! automaton: ASCII case-insensitive, leftmost-longest, non-overlapping. Matching costs
//! time linear in the text, independent of the number of phrases.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use crate::source::ListError;

/// One occurrence of a phrase in a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhraseMatch {
    /// Index of the phrase in the order given to [`PhraseSet::new`].
    pub phrase: usize,
    /// Byte offset where the match starts.
    pub start: usize,
    /// Byte offset just after the match.
    pub end: usize,
}

/// A compiled set of phrases.
#[derive(Debug, Clone)]
pub struct PhraseSet {
    automaton: AhoCorasick,
    count: usize,
}

impl PhraseSet {
    /// Compiles the phrases (empty phrases are kept in the numbering but never match).
    pub fn new<I, S>(phrases: I) -> Result<Self, ListError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let phrases: Vec<S> = phrases.into_iter().collect();
        let count = phrases.len();
        // An empty pattern would match everywhere; replace it by one that cannot match
        // valid UTF-8 text, keeping the numbering.
        let bytes: Vec<&[u8]> = phrases
            .iter()
            .map(|p| {
                let p = p.as_ref().as_bytes();
                if p.is_empty() { &[0xFF, 0xFF][..] } else { p }
            })
            .collect();
        let automaton = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostLongest)
            .build(bytes)
            .map_err(|e| ListError::Phrases(e.to_string()))?;
        Ok(PhraseSet { automaton, count })
    }

    /// Every non-overlapping (leftmost-longest) occurrence of a phrase in `text`.
    pub fn find_all(&self, text: &str) -> Vec<PhraseMatch> {
        self.automaton
            .find_iter(text)
            .map(|m| PhraseMatch {
                phrase: m.pattern().as_usize(),
                start: m.start(),
                end: m.end(),
            })
            .collect()
    }

    /// Whether any phrase occurs in `text`.
    pub fn is_match(&self, text: &str) -> bool {
        self.automaton.is_match(text)
    }

    /// Number of phrases.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are no phrases.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_insensitive_leftmost_longest() {
        let set =
            PhraseSet::new(["self harm", "self", "", "Kill"]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(set.len(), 4);
        let found = set.find_all("how to SELF HARM and kill");
        assert_eq!(
            found,
            [
                PhraseMatch {
                    phrase: 0,
                    start: 7,
                    end: 16
                },
                PhraseMatch {
                    phrase: 3,
                    start: 21,
                    end: 25
                },
            ]
        );
        assert!(set.is_match("myself"));
        assert!(!set.is_match("nothing here"));
        assert!(
            PhraseSet::new(Vec::<String>::new())
                .map(|s| !s.is_match("x"))
                .unwrap_or(false)
        );
    }
}
