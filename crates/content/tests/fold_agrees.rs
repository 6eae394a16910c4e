//! The page scanner folds text exactly as the safeguarding alerts do, so one phrase
//! list spelling serves pages, searches and addresses.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use safegate_content::fold::fold_text;

proptest! {
    #[test]
    fn folding_agrees_with_the_alert_normalisation(text in "\\PC{0,40}") {
        let alerts = safegate_safeguarding::normalise::normalise(&text);
        prop_assert_eq!(fold_text(&text), alerts.trim());
    }
}
