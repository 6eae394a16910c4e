//! Property tests of host and path normalisation: whatever a client sends, the
//! normaliser does not panic, its output is already normal (normalising again changes
//! nothing), and every spelling of the same path (encoded slashes and dots, back
//! slashes, doubled slashes) normalises to the same text, so a path rule cannot be
//! got round by spelling.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use proptest::prelude::*;
use safegate_lists::normalise::{Host, RequestTarget, normalise_path};

/// A path segment made of characters that need no encoding, or a dot segment.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-zA-Z0-9_~-]{1,8}",
        1 => Just(".".to_owned()),
        1 => Just("..".to_owned()),
    ]
}

/// One of the spellings of `/` an origin reads as a separator in a path.
fn slash() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("/"),
        Just("//"),
        Just("\\"),
        Just("%2f"),
        Just("%2F"),
        Just("%5c"),
        Just("%5C")
    ]
}

/// `segment` with its dots percent-encoded at random, as `%2e` or `%2E`.
fn respelled(segment: &str, choices: &[u8]) -> String {
    segment
        .chars()
        .zip(choices.iter().cycle())
        .map(|(ch, choice)| match (ch, choice % 3) {
            ('.', 1) => "%2e".to_owned(),
            ('.', 2) => "%2E".to_owned(),
            (ch, _) => ch.to_string(),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_path_normalises_without_panic_and_stays_normal(raw in "\\PC{0,64}") {
        let once = normalise_path(&raw);
        prop_assert!(once.starts_with('/'), "{once:?}");
        prop_assert_eq!(normalise_path(&once), once.clone(), "not idempotent for {:?}", raw);
        let path = once.split('?').next().unwrap_or_default();
        for bad in ["/../", "/./", "//", "\\", "%2F", "%5C", "%2E"] {
            prop_assert!(!path.contains(bad), "{bad} left in {path:?} from {raw:?}");
        }
    }

    #[test]
    fn every_spelling_of_a_path_normalises_alike(
        parts in prop::collection::vec((segment(), slash(), prop::collection::vec(any::<u8>(), 1..4)), 1..8),
        trailing in any::<bool>(),
    ) {
        let mut plain = String::new();
        let mut spelled = String::new();
        for (segment, separator, choices) in &parts {
            plain.push('/');
            plain.push_str(segment);
            spelled.push_str(separator);
            spelled.push_str(&respelled(segment, choices));
        }
        if trailing {
            plain.push('/');
            spelled.push_str("%2F");
        }
        prop_assert_eq!(normalise_path(&spelled), normalise_path(&plain), "{} vs {}", spelled, plain);
    }

    #[test]
    fn any_url_parses_or_is_refused_without_panic(raw in "\\PC{0,80}") {
        if let Ok(target) = RequestTarget::parse_url(&raw) {
            // The normalised text parses back to the same target.
            let again = RequestTarget::parse_url(&target.url_text());
            prop_assert_eq!(again.as_ref().ok(), Some(&target), "{:?} -> {}", raw, target.url_text());
        }
    }

    #[test]
    fn a_normal_host_is_its_own_normal_form(raw in "[a-zA-Z0-9.:\\[\\]_-]{1,40}") {
        if let Ok(host) = Host::parse(&raw) {
            prop_assert_eq!(Host::parse(host.as_str()).ok(), Some(host.clone()), "from {:?}", raw);
            prop_assert!(!host.as_str().ends_with('.'));
            prop_assert_eq!(host.as_str().to_ascii_lowercase(), host.as_str());
        }
    }

    #[test]
    fn ipv4_in_any_spelling_is_a_dotted_quad(address in any::<u32>()) {
        let dotted = std::net::Ipv4Addr::from(address).to_string();
        for spelling in [address.to_string(), format!("0x{address:x}"), format!("0{address:o}")] {
            let host = Host::parse(&spelling);
            prop_assert_eq!(host.as_ref().map(Host::as_str).ok(), Some(dotted.as_str()), "{}", spelling);
        }
    }
}
