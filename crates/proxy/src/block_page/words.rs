//! Every string of the block page in every language: one TOML file per language under
//! `words/` (`en.toml`, `cy.toml`), with the same keys, compiled in. Another language
//! is another file, a line in [`FILES`] and its code in the policy's
//! `BLOCK_PAGE_LANGUAGES`. The language shown is the first the browser asks for
//! (`Accept-Language`, by quality) that exists here, else the school's
//! `block_page.language`, else English.

use std::sync::LazyLock;

use serde::Deserialize;

/// The words files: language code and text.
const FILES: &[(&str, &str)] = &[
    ("en", include_str!("words/en.toml")),
    ("cy", include_str!("words/cy.toml")),
];

/// The block page's words in one language.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Words {
    /// The `lang` attribute (BCP 47).
    pub lang: String,
    /// The language's own name.
    pub language_name: String,
    /// The page's heading.
    pub title: String,
    /// Why, for children.
    pub intro: String,
    /// The link back.
    pub go_back: String,
    /// Who to tell when something online upset them.
    pub worried: String,
    /// The review form's heading.
    pub review_heading: String,
    /// The review form's comment label.
    pub review_label: String,
    /// The review form's button.
    pub review_button: String,
    /// What happens after a review request.
    pub after_review: String,
    /// The summary of the folded staff details.
    pub staff_details: String,
    /// Staff details: the address.
    pub address: String,
    /// Staff details: the category.
    pub category: String,
    /// Staff details: the reason.
    pub reason: String,
    /// Staff details: the rule's id.
    pub reference: String,
    /// Staff details: the time.
    pub time: String,
    /// Staff details: who.
    pub browsing_as: String,
    /// No category.
    pub no_category: String,
    /// The logo's text alternative (`{school}`).
    pub logo_alt: String,
    /// The footer naming the school (`{school}`).
    pub footer_school: String,
    /// The footer without a school name.
    pub footer: String,
    /// The title of the page after a review request.
    pub review_thanks_title: String,
    /// The page after a review request.
    pub review_thanks: String,
    /// On the block page: this person's review request is waiting.
    pub review_waiting: String,
    /// On the block page: their request was declined (the reason follows).
    pub review_declined: String,
    /// On the block page: their request was approved.
    pub review_approved: String,
}

/// Every language that parsed, in [`FILES`] order (a file that does not parse is a
/// bug the tests catch; it is left out rather than taking the proxy down).
static LANGUAGES: LazyLock<Vec<(&'static str, Words)>> = LazyLock::new(|| {
    FILES
        .iter()
        .filter_map(|(code, text)| match toml::from_str::<Words>(text) {
            Ok(words) => Some((*code, words)),
            Err(error) => {
                tracing::error!(language = code, %error, "block page words file does not parse");
                None
            }
        })
        .collect()
});

static NONE: LazyLock<Words> = LazyLock::new(Words::default);

/// The words of language `code`, if there is such a file.
pub fn of(code: &str) -> Option<&'static Words> {
    LANGUAGES
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(code))
        .map(|(_, words)| words)
}

/// The words to show: the best language of `accept_language` that exists, else
/// `school_default`, else English.
pub fn choose(accept_language: Option<&str>, school_default: &str) -> &'static Words {
    accept_language
        .and_then(best_asked)
        .or_else(|| of(school_default))
        .or_else(|| of("en"))
        .unwrap_or(&NONE)
}

/// The language of highest quality in an `Accept-Language` value that exists here
/// (`cy-GB` counts as `cy`; `q=0` means "not this"); ties keep the header's order.
fn best_asked(header: &str) -> Option<&'static Words> {
    let mut best: Option<(u16, &'static Words)> = None;
    for item in header.split(',').take(32) {
        let mut parts = item.split(';');
        let tag = parts.next().unwrap_or_default().trim();
        let primary = tag.split(['-', '_']).next().unwrap_or_default();
        let quality = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let quality = (quality.clamp(0.0, 1.0) * 1000.0) as u16;
        if quality == 0 {
            continue;
        }
        if let Some(words) = of(primary)
            && best.is_none_or(|(q, _)| quality > q)
        {
            best = Some((quality, words));
        }
    }
    best.map(|(_, words)| words)
}

/// `text` with `{school}` replaced by `school`.
pub fn with_school(text: &str, school: &str) -> String {
    text.replace("{school}", school)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_parses_with_every_key_and_names_its_language() {
        for (code, text) in FILES {
            let parsed = toml::from_str::<Words>(text);
            assert!(parsed.is_ok(), "{code}: {parsed:?}");
            assert_eq!(of(code).map(|w| w.lang.as_str()), Some(*code));
        }
        for code in safegate_policy::BLOCK_PAGE_LANGUAGES {
            assert!(
                of(code).is_some(),
                "the policy allows {code} but there is no file"
            );
        }
    }

    #[test]
    fn the_browser_chooses_then_the_school() {
        let lang = |header: Option<&str>, school: &str| choose(header, school).lang.as_str();
        assert_eq!(lang(Some("cy-GB,cy;q=0.9,en;q=0.8"), "en"), "cy");
        assert_eq!(lang(Some("en-GB,en;q=0.9,cy;q=0.8"), "cy"), "en");
        assert_eq!(lang(Some("fr-FR,cy;q=0.5,en;q=0.7"), "en"), "en");
        assert_eq!(lang(Some("fr-FR, de"), "cy"), "cy");
        assert_eq!(lang(Some("cy;q=0, en;q=0.1"), "cy"), "en");
        assert_eq!(lang(Some("*"), "cy"), "cy");
        assert_eq!(lang(None, "cy"), "cy");
        assert_eq!(lang(None, "xx"), "en");
        assert_eq!(lang(Some(";;,q=,,;q=abc"), "en"), "en");
    }
}
