//! Safeguarding phrase lists compiled into one Aho-Corasick automaton over normalised
//! text ([`crate::normalise`]), with exception phrases that cancel the matches they
//! cover. Matching costs time linear in the text, whatever the number of phrases.
//!
//! Context, so that alerts are ones a safeguarding lead can trust:
//! - **misspellings** (in typed search terms; addresses match as written): each
//!   phrase word of six letters or more also matches with one
//!   letter left out, two neighbours swapped, a letter doubled or one vowel changed
//!   (`sucide`, `suicdie`, `machette`); exceptions get the same variants, so they stay
//!   exceptions. Shorter words match only as written, which keeps ordinary words out;
//! - **first person**: a phrase with a first-person or intent word (`i`, `my`,
//!   `myself`, `want`, `how to`, `buy` ...) is an *intent* phrase; the others are
//!   *topic* phrases. Per list, an intent phrase is reported before a topic phrase;
//! - **teaching contexts** (lesson plan, KS3, PSHE, set texts, support organisations)
//!   in the same text cancel topic phrases of every list, never intent phrases;
//! - **per-role severity**: a list may give topic phrases another severity for a role
//!   (`staff = "low"`: staff searching a topic are usually preparing a lesson).

use std::collections::HashSet;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use safegate_policy::{PhraseList, Severity};

use crate::normalise::normalise;

/// One list that matched a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhraseHit {
    /// The list's name.
    pub list: String,
    /// The severity for this role and phrase.
    pub severity: Severity,
    /// The phrase as written in the list.
    pub phrase: String,
    /// A first-person or intent phrase.
    pub first_person: bool,
    /// How it was spelt, when it matched as a misspelling.
    pub misspelt: Option<String>,
}

/// One pattern of the phrase automaton.
#[derive(Debug, Clone)]
struct Owner {
    list: usize,
    phrase: String,
    first_person: bool,
    variant: bool,
}

/// Every list's phrases, compiled.
#[derive(Debug, Clone)]
pub struct PhraseMatcher {
    phrases: Option<AhoCorasick>,
    owners: Vec<Owner>,
    /// The misspelt variants, matched in typed search terms only: they multiply the
    /// patterns, and a bigger automaton costs every visited address cache misses.
    variants: Option<AhoCorasick>,
    variant_owners: Vec<Owner>,
    exceptions: Option<AhoCorasick>,
    /// The exceptions' and contexts' misspelt variants (matched in typed terms only).
    exception_variants: Option<AhoCorasick>,
    exception_variant_owners: Vec<Option<usize>>,
    /// For each exception pattern: its list index, or `None` for a teaching context.
    exception_owners: Vec<Option<usize>>,
    lists: Vec<PhraseList>,
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

/// Words that make a phrase first-person or intent.
const FIRST_PERSON: &[&str] = &[
    "i", "im", "ive", "me", "my", "myself", "mine", "want", "wanna", "gonna", "buy", "where",
];

/// Whether the normalised phrase is first-person or intent.
fn first_person(folded: &str) -> bool {
    folded.contains(" how to ") || folded.split(' ').any(|word| FIRST_PERSON.contains(&word))
}

/// Shortest word (in characters) that gets misspelt variants.
pub const MISSPELT_MIN_CHARS: usize = 6;

/// The one-edit variants of a normalised phrase (see the module documentation).
fn variants(folded: &str) -> Vec<String> {
    let words: Vec<&str> = folded.split(' ').filter(|w| !w.is_empty()).collect();
    let mut out = HashSet::new();
    for (i, word) in words.iter().enumerate() {
        let chars: Vec<char> = word.chars().collect();
        if chars.len() < MISSPELT_MIN_CHARS || !chars.iter().all(|c| c.is_alphabetic()) {
            continue;
        }
        let mut spelt = Vec::new();
        for at in 0..chars.len() {
            let mut v = chars.clone();
            v.remove(at);
            spelt.push(v);
            let mut v = chars.clone();
            v.insert(at, chars[at]);
            spelt.push(v);
            if at + 1 < chars.len() {
                let mut v = chars.clone();
                v.swap(at, at + 1);
                spelt.push(v);
            }
            if "aeiouy".contains(chars[at]) {
                for vowel in "aeiouy".chars().filter(|&v| v != chars[at]) {
                    let mut v = chars.clone();
                    v[at] = vowel;
                    spelt.push(v);
                }
            }
        }
        for v in spelt {
            let v: String = v.into_iter().collect();
            if v == *word {
                continue;
            }
            let mut phrase = String::from(" ");
            for (j, w) in words.iter().enumerate() {
                phrase.push_str(if i == j { &v } else { w });
                phrase.push(' ');
            }
            out.insert(phrase);
        }
    }
    out.remove(folded);
    let mut out: Vec<String> = out.into_iter().collect();
    out.sort();
    out
}

/// Patterns and, for each, its owner.
type Patterns<T> = (Vec<String>, Vec<T>);

/// Adds `text`'s folded pattern to `exact` and, when asked, its variants to `misspelt`.
fn add<T: Clone>(
    exact: &mut Patterns<T>,
    misspelt: &mut Patterns<T>,
    text: &str,
    misspellings: bool,
    owner: T,
) {
    let folded = normalise(text);
    if folded.trim().is_empty() {
        return;
    }
    if misspellings {
        for variant in variants(&folded) {
            misspelt.0.push(variant);
            misspelt.1.push(owner.clone());
        }
    }
    exact.0.push(folded);
    exact.1.push(owner);
}

impl PhraseMatcher {
    /// Compiles the lists with misspellings and no teaching contexts.
    pub fn new(lists: &[PhraseList]) -> Self {
        Self::with_context(lists, &[], true)
    }

    /// Compiles the lists, the teaching-context phrases and, when `misspellings`,
    /// the misspelt variants (phrases that normalise to nothing are left out).
    pub fn with_context(lists: &[PhraseList], contexts: &[String], misspellings: bool) -> Self {
        let mut patterns = Vec::new();
        let mut owners = Vec::new();
        let mut exceptions: Patterns<Option<usize>> = (Vec::new(), Vec::new());
        let mut exception_variants: Patterns<Option<usize>> = (Vec::new(), Vec::new());
        let mut variant_patterns = Vec::new();
        let mut variant_owners = Vec::new();
        for (index, list) in lists.iter().enumerate() {
            for phrase in &list.phrases {
                let folded = normalise(phrase);
                if folded.trim().is_empty() {
                    continue;
                }
                let owner = |variant| Owner {
                    list: index,
                    phrase: phrase.clone(),
                    first_person: first_person(&folded),
                    variant,
                };
                if misspellings {
                    for variant in variants(&folded) {
                        variant_patterns.push(variant);
                        variant_owners.push(owner(true));
                    }
                }
                patterns.push(folded.clone());
                owners.push(owner(false));
            }
            for exception in &list.exceptions {
                add(
                    &mut exceptions,
                    &mut exception_variants,
                    exception,
                    misspellings,
                    Some(index),
                );
            }
        }
        for context in contexts {
            add(
                &mut exceptions,
                &mut exception_variants,
                context,
                misspellings,
                None,
            );
        }
        Self {
            phrases: automaton(&patterns),
            owners,
            variants: automaton(&variant_patterns),
            variant_owners,
            exceptions: automaton(&exceptions.0),
            exception_owners: exceptions.1,
            exception_variants: automaton(&exception_variants.0),
            exception_variant_owners: exception_variants.1,
            lists: lists.to_vec(),
        }
    }

    /// The lists that match `text` (raw: it is normalised here, and treated as typed
    /// search terms) for a pupil, one hit per list, in list order.
    pub fn find(&self, text: &str) -> Vec<PhraseHit> {
        let folded = normalise(text);
        self.find_normalised(&folded, Some(&folded), "pupil")
    }

    /// Like [`PhraseMatcher::find`] for text already normalised, for `role`:
    /// phrases as written in `folded` (terms and address), misspelt variants only in
    /// `typed` (the search terms, folded on their own).
    pub fn find_normalised(&self, folded: &str, typed: Option<&str>, role: &str) -> Vec<PhraseHit> {
        let mut candidates: Vec<(&Owner, &str, usize, usize)> = Vec::new();
        // Nearly every address matches nothing: one pass says so.
        if let Some(phrases) = &self.phrases
            && phrases.is_match(folded)
        {
            for m in phrases.find_overlapping_iter(folded) {
                let owner = &self.owners[m.pattern().as_usize()];
                candidates.push((owner, folded, m.start(), m.end()));
            }
        }
        if let (Some(variants), Some(typed)) = (&self.variants, typed)
            && variants.is_match(typed)
        {
            for m in variants.find_overlapping_iter(typed) {
                let owner = &self.variant_owners[m.pattern().as_usize()];
                candidates.push((owner, typed, m.start(), m.end()));
            }
        }
        if candidates.is_empty() {
            return Vec::new();
        }
        let mut teaching = false;
        let mut exceptions =
            |automaton: &Option<AhoCorasick>, owners: &[Option<usize>], text: &str| {
                let Some(automaton) = automaton else {
                    return Vec::new();
                };
                automaton
                    .find_overlapping_iter(text)
                    .filter_map(|m| match owners[m.pattern().as_usize()] {
                        Some(list) => Some((list, m.start(), m.end())),
                        None => {
                            teaching = true;
                            None
                        }
                    })
                    .collect::<Vec<(usize, usize, usize)>>()
            };
        let in_folded = exceptions(&self.exceptions, &self.exception_owners, folded);
        let in_typed = match typed {
            Some(typed) => {
                let mut found = exceptions(&self.exceptions, &self.exception_owners, typed);
                found.extend(exceptions(
                    &self.exception_variants,
                    &self.exception_variant_owners,
                    typed,
                ));
                found
            }
            None => Vec::new(),
        };
        let mut best: Vec<Option<(&Owner, &str, usize, usize)>> = vec![None; self.lists.len()];
        for (owner, text, start, end) in candidates {
            // Variants were found in the typed terms, the rest in the whole text.
            let covering = if owner.variant { &in_typed } else { &in_folded };
            let excused = covering
                .iter()
                .any(|&(list, s, e)| list == owner.list && s <= start && end <= e);
            if excused || (teaching && !owner.first_person) {
                continue;
            }
            let rank = |o: &Owner| (o.first_person, !o.variant);
            let slot = &mut best[owner.list];
            if slot.is_none_or(|(kept, _, _, _)| rank(owner) > rank(kept)) {
                *slot = Some((owner, text, start, end));
            }
        }
        best.into_iter()
            .flatten()
            .map(|(owner, text, start, end)| self.hit(owner, role, text, start, end))
            .collect()
    }

    /// The hit for `owner`'s match at `start..end` of `text`.
    fn hit(&self, owner: &Owner, role: &str, text: &str, start: usize, end: usize) -> PhraseHit {
        let list = &self.lists[owner.list];
        let severity = if owner.first_person {
            list.severity
        } else {
            list.role_severity
                .get(role)
                .copied()
                .unwrap_or(list.severity)
        };
        PhraseHit {
            list: list.name.clone(),
            severity,
            phrase: owner.phrase.clone(),
            first_person: owner.first_person,
            misspelt: owner
                .variant
                .then(|| text.get(start..end).unwrap_or("").trim().to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lists() -> Vec<PhraseList> {
        vec![
            PhraseList {
                role_severity: Default::default(),
                name: "self-harm".into(),
                severity: Severity::High,
                phrases: vec!["kill myself".into(), "suicide".into()],
                exceptions: vec!["suicide squad".into()],
            },
            PhraseList {
                role_severity: Default::default(),
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

    fn staff_lists() -> Vec<PhraseList> {
        let mut lists = lists();
        lists[0].phrases.push("self harm".into());
        lists[0].role_severity.insert("staff".into(), Severity::Low);
        lists.push(PhraseList {
            name: "self-harm-pl".into(),
            severity: Severity::High,
            phrases: vec!["chcę umrzeć".into(), "zabić się".into()],
            exceptions: vec![],
            role_severity: Default::default(),
        });
        lists
    }

    #[test]
    fn misspellings_of_long_words_match_and_exceptions_stay_exceptions() {
        let matcher = PhraseMatcher::new(&lists());
        for typed in ["sucide", "suicdie", "suiccide", "suecide", "SUICIDEE"] {
            let hits = matcher.find(typed);
            assert_eq!(hits.len(), 1, "{typed}");
            assert!(hits[0].misspelt.is_some(), "{typed}");
        }
        assert!(matcher.find("sucide squad trailer").is_empty());
        assert!(matcher.find("suicide squad").is_empty());
        // Short words only as written: no variants of "kill".
        assert!(matcher.find("kil myself").is_empty());
        assert!(matcher.find("skill mysef").is_empty());
        for ordinary in [
            "side",
            "suited",
            "decide",
            "bucket",
            "cannabis",
            "cannibals",
        ] {
            assert!(matcher.find(ordinary).is_empty(), "{ordinary}");
        }
        assert_eq!(matcher.find("buy canabis")[0].list, "drugs");
        let exact = matcher.find("suicide");
        assert_eq!(exact[0].misspelt, None);
        let off = PhraseMatcher::with_context(&lists(), &[], false);
        assert!(off.find("sucide").is_empty());
    }

    #[test]
    fn other_languages_and_scripts_match_folded() {
        let matcher = PhraseMatcher::new(&staff_lists());
        assert_eq!(matcher.find("chce umrzec")[0].list, "self-harm-pl");
        assert_eq!(matcher.find("CHCĘ UMRZEĆ!!")[0].list, "self-harm-pl");
        assert_eq!(matcher.find("jak zabić się")[0].list, "self-harm-pl");
    }

    #[test]
    fn context_role_and_first_person_weigh_in() {
        let contexts = vec![
            "lesson plan".to_owned(),
            "ks3".to_owned(),
            "pshe".to_owned(),
        ];
        let matcher = PhraseMatcher::with_context(&staff_lists(), &contexts, true);
        let folded = normalise("self harm");
        // A topic phrase: the list's severity for pupils, the role's for staff.
        assert_eq!(
            matcher.find_normalised(&folded, None, "pupil")[0].severity,
            Severity::High
        );
        assert_eq!(
            matcher.find_normalised(&folded, None, "staff")[0].severity,
            Severity::Low
        );
        // First person keeps the list's severity for staff too, and wins the list.
        let hits = matcher.find_normalised(
            &normalise("self harm, I want to kill myself"),
            None,
            "staff",
        );
        assert_eq!(hits[0].phrase, "kill myself");
        assert!(hits[0].first_person);
        assert_eq!(hits[0].severity, Severity::High);
        // A teaching context cancels topic phrases, never first-person ones.
        assert!(matcher.find("self harm lesson plan KS3").is_empty());
        assert!(matcher.find("suicide pshe").is_empty());
        assert_eq!(matcher.find("lesson plan i want to kill myself").len(), 1);
    }
}
