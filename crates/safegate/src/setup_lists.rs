//! `safegate setup`'s list step: updates the configured list feeds now (`safegate
//! lists update`), or, with none configured, installs the UT1 collection once as the
//! feed `ut1` in `blocklists/ut1` beside the policy's folder, which the shipped policy
//! names as optional sources of its categories, so they block with it at once. The
//! feed is then shown as configuration to add, so that it stays current.

use std::path::Path;

use anyhow::{Context, Result, bail};
use safegate_lists::feed::{Feed, FeedFormat, Updated};

use crate::lists_command::{category_count, feeds, update_feeds};
use crate::settings::Config;

/// Where the category lists come from unless `--lists-from` says otherwise: the
/// Université Toulouse Capitole collection (UT1), as used by squidGuard and e2guardian.
pub const UT1_URL: &str = "https://dsi.ut-capitole.fr/blacklists/download/blacklists.tar.gz";

/// The MD5 checksums UT1 publishes beside its archives (`md5sum` output).
pub const UT1_CHECKSUMS: &str = "https://dsi.ut-capitole.fr/blacklists/download/MD5SUM.LST";

/// Updates the configured feeds, or installs UT1 from `from` once when there are none.
pub fn update_now(config: &Config, from: &str) -> Result<()> {
    let configured = feeds(&config.lists, &config.policy.file);
    let once = configured.is_empty();
    let chosen = if once {
        vec![ut1_feed(&config.policy.file, from)?]
    } else {
        configured
    };
    let mut failed = false;
    for (name, result) in update_feeds(&chosen, &config.lists, false) {
        match result {
            Ok(Updated::Unchanged) => println!("category lists: {name} is up to date"),
            Ok(Updated::Installed(categories)) => {
                let entries: u64 = categories.values().sum();
                println!(
                    "category lists: {name} installed ({}, {entries} entries)",
                    category_count(categories.len())
                );
            }
            Err(error) => {
                failed = true;
                println!("category lists: {name} FAILED: {error:#}");
            }
        }
    }
    if failed {
        bail!("a list feed could not be updated; the lists in force are unchanged");
    }
    if once {
        println!(
            "category lists: to keep them current, add to the configuration:\n\
             [lists]\nschedule = \"daily 03:30\"\n[[lists.feeds]]\nname = \"ut1\"\n\
             format = \"ut1\"\nurl = \"{from}\"{checksums}",
            checksums = if from == UT1_URL {
                format!("\nchecksums = \"{UT1_CHECKSUMS}\"")
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

/// The feed `ut1` from `from`, installed where the configured feeds would be.
fn ut1_feed(policy_file: &Path, from: &str) -> Result<Feed> {
    let mut lists = safegate_reload::ListsConfig::default();
    lists.feeds.push(safegate_reload::FeedConfig {
        name: "ut1".to_owned(),
        format: FeedFormat::Ut1.to_string(),
        url: from.to_owned(),
        checksums: (from == UT1_URL).then(|| UT1_CHECKSUMS.to_owned()),
        into: None,
    });
    feeds(&lists, policy_file)
        .into_iter()
        .next()
        .context("the UT1 feed could not be set up")
}
