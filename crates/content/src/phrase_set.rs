//! Every weighted phrase of every category compiled into one Aho-Corasick DFA over
//! folded text, stepped one byte at a time by the scanner: matching costs the same
//! per byte whatever the number of phrases, and a phrase split across chunks is found
//! because the automaton's state carries over. Like e2guardian's default
//! (`weightedphrasemode = 2`), a phrase counts once per page however often it appears;
//! a combination counts once when all of its parts have been seen.

use aho_corasick::automaton::Automaton;
use aho_corasick::dfa::DFA;
use aho_corasick::{Anchored, MatchKind, StartKind};

use crate::ContentError;
use crate::weighted_list::{Phrase, WeightedEntry};

/// Index of a category in [`PhraseSet::categories`].
pub type CategoryId = u16;

/// One entry of the compiled set: a phrase or combination with its weight.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The phrase(s) as written back (`< casino >`, `< poker >,< odds >`).
    pub(crate) text: String,
    pub(crate) weight: i32,
    pub(crate) category: CategoryId,
    /// Number of distinct patterns that must all be seen.
    pub(crate) parts: u16,
    /// For a combination (`parts` > 1): its counter's index, below
    /// [`PhraseSet::combinations`].
    pub(crate) combination: u32,
}

/// What a pattern (a distinct folded phrase) completes when first seen.
#[derive(Debug, Clone, Default)]
pub(crate) struct PatternUse {
    pub(crate) entries: Vec<u32>,
}

/// The compiled phrase lists: immutable, shared by every scan.
#[derive(Debug)]
pub struct PhraseSet {
    pub(crate) dfa: DFA,
    pub(crate) start: aho_corasick::automaton::StateID,
    pub(crate) uses: Vec<PatternUse>,
    pub(crate) entries: Vec<Entry>,
    /// The longest pattern in bytes: how far back a match can start.
    pub(crate) max_pattern_len: usize,
    /// Number of combinations (entries of several parts).
    pub(crate) combinations: usize,
    categories: Vec<String>,
}

impl PhraseSet {
    /// Compiles entries (from [`crate::weighted_list`]) into one automaton.
    pub fn build(entries: &[WeightedEntry]) -> Result<PhraseSet, ContentError> {
        let mut categories: Vec<String> = Vec::new();
        let mut patterns: Vec<String> = Vec::new();
        let mut pattern_ids: std::collections::HashMap<String, u32> =
            std::collections::HashMap::new();
        let mut uses: Vec<PatternUse> = Vec::new();
        let mut compiled = Vec::with_capacity(entries.len());
        let mut combinations = 0u32;
        for entry in entries {
            let category = match categories.iter().position(|c| *c == entry.category) {
                Some(i) => i,
                None => {
                    categories.push(entry.category.clone());
                    categories.len() - 1
                }
            };
            let category =
                CategoryId::try_from(category).map_err(|_| ContentError::TooManyCategories)?;
            let index = u32::try_from(compiled.len()).map_err(|_| ContentError::TooManyPhrases)?;
            let mut distinct = Vec::new();
            for part in &entry.parts {
                let pattern = part.pattern();
                let next =
                    u32::try_from(patterns.len()).map_err(|_| ContentError::TooManyPhrases)?;
                let id = *pattern_ids.entry(pattern.clone()).or_insert_with(|| {
                    patterns.push(pattern);
                    uses.push(PatternUse::default());
                    next
                });
                if !distinct.contains(&id) {
                    distinct.push(id);
                    uses[id as usize].entries.push(index);
                }
            }
            let combination = combinations;
            if distinct.len() > 1 {
                combinations += 1;
            }
            compiled.push(Entry {
                text: written(&entry.parts),
                weight: entry.weight,
                category,
                parts: u16::try_from(distinct.len()).unwrap_or(u16::MAX),
                combination,
            });
        }
        let dfa = DFA::builder()
            .match_kind(MatchKind::Standard)
            .start_kind(StartKind::Unanchored)
            .prefilter(false)
            .build(&patterns)
            .map_err(|e| ContentError::Build(e.to_string()))?;
        let start = dfa
            .start_state(Anchored::No)
            .map_err(|e| ContentError::Build(e.to_string()))?;
        Ok(PhraseSet {
            dfa,
            start,
            max_pattern_len: patterns.iter().map(String::len).max().unwrap_or(0),
            combinations: combinations as usize,
            uses,
            entries: compiled,
            categories,
        })
    }

    /// The categories, by [`CategoryId`].
    pub fn categories(&self) -> &[String] {
        &self.categories
    }

    /// The id of a category by name.
    pub fn category(&self, name: &str) -> Option<CategoryId> {
        self.categories
            .iter()
            .position(|c| c == name)
            .and_then(|i| CategoryId::try_from(i).ok())
    }

    /// Number of entries (phrases and combinations).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the set has no phrase at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Heap bytes of the automaton (its transition table, for the most part).
    pub fn automaton_bytes(&self) -> usize {
        self.dfa.memory_usage()
    }

    /// Distinct patterns in the automaton.
    pub fn patterns(&self) -> usize {
        self.uses.len()
    }
}

fn written(parts: &[Phrase]) -> String {
    parts
        .iter()
        .map(Phrase::written)
        .collect::<Vec<_>>()
        .join(",")
}
