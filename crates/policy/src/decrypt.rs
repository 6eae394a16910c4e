//! Which HTTPS sites are decrypted: the `[decrypt]` section of the policy, compiled.
//!
//! SafeGate decrypts only what the policy needs to see: the sites and categories
//! listed under `decrypt` (search engines, YouTube), and, with `path_rules`, every
//! host that a URL entry (`host/path`) of a category, allow-list or deny-list names,
//! since such a rule cannot apply to a tunnel that shows only the host. `never` wins
//! over everything: banking, health, government and pinned apps are tunnelled
//! untouched whatever else matches. Everything else is filtered by name (CONNECT host
//! and TLS server name) and tunnelled.
//!
//! This module holds the compiled rules and the answer's type; the snapshot applies
//! them: [`Snapshot::decrypt`](crate::Snapshot::decrypt) answers for one host with one
//! index lookup and names the rule that decided, as `decide` does.

use crate::lists::index::ListId;

/// What to do when a TLS ClientHello names a different host than the CONNECT request
/// it travels in (domain fronting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SniMismatch {
    /// Refuse the tunnel (the default).
    #[default]
    Block,
    /// Decide the server name on its own and let it through when allowed.
    Allow,
}

/// Whether one host is decrypted, and the rule that said so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecryptDecision {
    /// True: terminate TLS with a certificate signed by the school CA.
    pub decrypt: bool,
    /// Stable id of the rule: `never-decrypt:site`, `never-decrypt:category:<name>`,
    /// `decrypt:site`, `decrypt:category:<name>`, `decrypt:path-rules` or `tunnel`.
    pub rule: String,
    /// One line for people (`safegate check`).
    pub reason: String,
}

/// The compiled `[decrypt]` section.
#[derive(Debug, Clone, Default)]
pub(crate) struct DecryptRules {
    pub never_sites: Option<ListId>,
    pub never_categories: Vec<u16>,
    pub sites: Option<ListId>,
    pub categories: Vec<u16>,
    /// Hosts named by URL entries, when `path_rules` is on.
    pub path_hosts: Option<ListId>,
    pub sni_mismatch: SniMismatch,
    /// Whether a blocked HTTPS site is answered with the block page over TLS.
    pub block_pages: bool,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::path::Path;

    use crate::{Policy, PolicyError, RequestTarget, Snapshot};

    use super::SniMismatch;

    const BASE: &str = r#"
[categories.search]
sites = ["search.test", "video.test"]
[categories.banking]
sites = ["bank.test"]
[categories.games]
sites = ["games.test/flash", "arcade.test"]
[roles.pupil]
deny = ["blog.test/private"]
[roles.staff]
[roles.filter-admin]
"#;

    fn compile(decrypt: &str) -> Result<Snapshot, PolicyError> {
        Policy::parse(&format!("{BASE}\n{decrypt}"), Path::new("policy.toml"))?.compile()
    }

    fn rule(snapshot: &Snapshot, host: &str) -> (bool, String) {
        let decision = snapshot.decrypt(&RequestTarget::from_parts(host, None).unwrap());
        (decision.decrypt, decision.rule)
    }

    #[test]
    fn never_wins_then_lists_then_path_rules() {
        let snapshot = compile(
            r#"[decrypt]
categories = ["search"]
sites = ["bank.test", "news.test"]
never_categories = ["banking"]
never_sites = ["pinned.video.test"]
"#,
        )
        .unwrap();
        assert_eq!(
            rule(&snapshot, "www.bank.test"),
            (false, "never-decrypt:category:banking".into())
        );
        assert_eq!(
            rule(&snapshot, "pinned.video.test"),
            (false, "never-decrypt:site".into())
        );
        assert_eq!(rule(&snapshot, "news.test"), (true, "decrypt:site".into()));
        assert_eq!(
            rule(&snapshot, "www.video.test"),
            (true, "decrypt:category:search".into())
        );
        // URL entries of categories and of deny-lists need the path.
        assert_eq!(
            rule(&snapshot, "games.test"),
            (true, "decrypt:path-rules".into())
        );
        assert_eq!(
            rule(&snapshot, "blog.test"),
            (true, "decrypt:path-rules".into())
        );
        // A domain entry alone does not.
        assert_eq!(rule(&snapshot, "arcade.test"), (false, "tunnel".into()));
        assert_eq!(rule(&snapshot, "elsewhere.test"), (false, "tunnel".into()));
        assert_eq!(snapshot.sni_mismatch(), SniMismatch::Block);
    }

    #[test]
    fn path_rules_can_be_turned_off_and_mismatch_allowed() {
        let snapshot =
            compile("[decrypt]\npath_rules = false\nsni_mismatch = \"allow\"\n").unwrap();
        assert_eq!(rule(&snapshot, "games.test"), (false, "tunnel".into()));
        assert_eq!(snapshot.sni_mismatch(), SniMismatch::Allow);
        // No section at all: path rules on, mismatches blocked.
        let snapshot = compile("").unwrap();
        assert_eq!(
            rule(&snapshot, "games.test"),
            (true, "decrypt:path-rules".into())
        );
        assert_eq!(snapshot.sni_mismatch(), SniMismatch::Block);
    }

    #[test]
    fn block_pages_are_on_by_default_and_never_for_never_decrypt_sites() {
        let block_page = |snapshot: &Snapshot, host: &str| {
            snapshot.block_page_over_tls(&RequestTarget::from_parts(host, None).unwrap())
        };
        let snapshot = compile(
            "[decrypt]\nnever_categories = [\"banking\"]\nnever_sites = [\"pinned.test\"]\n",
        )
        .unwrap();
        assert!(block_page(&snapshot, "arcade.test"));
        assert!(!block_page(&snapshot, "www.bank.test"));
        assert!(!block_page(&snapshot, "app.pinned.test"));
        assert!(block_page(&compile("").unwrap(), "arcade.test"));
        let off = compile("[decrypt]\nblock_pages = false\n").unwrap();
        assert!(!block_page(&off, "arcade.test"));
    }

    #[test]
    fn mistakes_are_reported_with_their_key_and_line() {
        let error = compile(
            "[decrypt]\ncategories = [\"search\", \"nope\"]\nnever_categories = [\"search\"]\nnever_sites = [\"bad host\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("decrypt.categories[1]: unknown category `nope`"),
            "{error}"
        );
        assert!(
            error.contains("decrypt.categories[0]: `search` is also in"),
            "{error}"
        );
        assert!(error.contains("decrypt.never_sites[0]"), "{error}");
        assert!(error.contains("line "), "{error}");
        let error = compile("[decrypt]\nsni_mismatch = \"maybe\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("decrypt.sni_mismatch"), "{error}");
        assert!(error.contains(":14:16:"), "{error}");
    }
}
