//! Safeguarding phrase lists compiled into one Aho-Corasick automaton over normalised
//! text ([`crate::normalise`]), with exception phrases that cancel the matches they
//! cover. Matching costs time linear in the text, whatever the number of phrases.

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use safegate_policy::{PhraseList, Severity};

use crate::normalise::normalise;

/// One list that matched a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhraseHit {
    /// The list's name.
    pub list: String,
    /// The list's severity.
    pub severity: Severity,
    /// The phrase as written in the list (the first that matched).
    pub phrase: String,
}

/// Every list's phrases, compiled.
#[derive(Debug, Clone)]
pub struct PhraseMatcher {
    phrases: Option<AhoCorasick>,
    /// For each pattern: (list index, phrase as written).
    owners: Vec<(usize, String)>,
    exceptions: Option<AhoCorasick>,
    /// For each exception pattern: its list index.
    exception_owners: Vec<usize>,
    lists: Vec<(String, Severity)>,
}

/// Builds an automaton for word-bounded (space-padded) normalised patterns: a DFA,
/// since every pattern starts with a space (no prefilter can skip ahead) and every
/// visited address is matched; phrase lists are small enough for its memory.
fn automaton(patterns: &[String]) -> Option<AhoCorasick> {
    if patterns.is_empty() {
        return None;
    }
    match AhoCorasick::builder()
        .match_kind(MatchKind::Standard)
        .kind(Some(AhoCorasickKind::DFA))
        .build(patterns)
    {
        Ok(automaton) => Some(automaton),
        Err(error) => {
            tracing::error!(%error, "cannot compile the safeguarding phrases");
            None
        }
    }
}

impl PhraseMatcher {
    /// Compiles the lists (phrases that normalise to nothing are left out).
    pub fn new(lists: &[PhraseList]) -> Self {
        let mut patterns = Vec::new();
        let mut owners = Vec::new();
        let mut exception_patterns = Vec::new();
        let mut exception_owners = Vec::new();
        for (index, list) in lists.iter().enumerate() {
            for phrase in &list.phrases {
                let folded = normalise(phrase);
                if folded.trim().is_empty() {
                    continue;
                }
                patterns.push(folded);
                owners.push((index, phrase.clone()));
            }
            for exception in &list.exceptions {
                let folded = normalise(exception);
                if folded.trim().is_empty() {
                    continue;
                }
                exception_patterns.push(folded);
                exception_owners.push(index);
            }
        }
        Self {
            phrases: automaton(&patterns),
            owners,
            exceptions: automaton(&exception_patterns),
            exception_owners,
            lists: lists.iter().map(|l| (l.name.clone(), l.severity)).collect(),
        }
    }

    /// The lists that match `text` (raw: it is normalised here), one hit per list, in
    /// list order.
    pub fn find(&self, text: &str) -> Vec<PhraseHit> {
        self.find_normalised(&normalise(text))
    }

    /// Like [`PhraseMatcher::find`] for text already normalised.
    pub fn find_normalised(&self, folded: &str) -> Vec<PhraseHit> {
        let Some(phrases) = &self.phrases else {
            return Vec::new();
        };
        // Nearly every address matches nothing: one pass says so.
        if !phrases.is_match(folded) {
            return Vec::new();
        }
        let exceptions: Vec<(usize, usize, usize)> = match &self.exceptions {
            Some(automaton) => automaton
                .find_overlapping_iter(folded)
                .map(|m| {
                    (
                        self.exception_owners[m.pattern().as_usize()],
                        m.start(),
                        m.end(),
                    )
                })
                .collect(),
            None => Vec::new(),
        };
        let mut hits: Vec<Option<PhraseHit>> = vec![None; self.lists.len()];
        for m in phrases.find_overlapping_iter(folded) {
            let (list, phrase) = &self.owners[m.pattern().as_usize()];
            let excused = exceptions
                .iter()
                .any(|&(owner, start, end)| owner == *list && start <= m.start() && m.end() <= end);
            if excused || hits[*list].is_some() {
                continue;
            }
            let (name, severity) = &self.lists[*list];
            hits[*list] = Some(PhraseHit {
                list: name.clone(),
                severity: *severity,
                phrase: phrase.clone(),
            });
        }
        hits.into_iter().flatten().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lists() -> Vec<PhraseList> {
        vec![
            PhraseList {
                name: "self-harm".into(),
                severity: Severity::High,
                phrases: vec!["kill myself".into(), "suicide".into()],
                exceptions: vec!["suicide squad".into()],
            },
            PhraseList {
                name: "drugs".into(),
                severity: Severity::Medium,
                phrases: vec!["buy cannabis".into()],
                exceptions: vec![],
            },
        ]
    }

    #[test]
    fn matches_on_word_boundaries_across_spelling_games() {
        let matcher = PhraseMatcher::new(&lists());
        let hits = matcher.find("how to K1LL-my$elf");
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].list, "self-harm");
        assert_eq!(hits[0].phrase, "kill myself");
        assert_eq!(hits[0].severity, Severity::High);
        assert!(matcher.find("skill myselfie").is_empty());
        assert!(matcher.find("suicidal").is_empty());
        let both = matcher.find("suicide and buy cannabis");
        assert_eq!(
            both.iter().map(|h| h.list.as_str()).collect::<Vec<_>>(),
            ["self-harm", "drugs"]
        );
    }

    #[test]
    fn exceptions_cancel_only_what_they_cover() {
        let matcher = PhraseMatcher::new(&lists());
        assert!(matcher.find("suicide squad cast").is_empty());
        assert_eq!(matcher.find("suicide squad, and suicide").len(), 1);
    }

    #[test]
    fn empty_lists_match_nothing() {
        let matcher = PhraseMatcher::new(&[]);
        assert!(matcher.find("kill myself").is_empty());
    }
}
