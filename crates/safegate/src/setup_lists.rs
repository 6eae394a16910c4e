//! `safegate setup`'s list step: updates the configured list feeds now (`safegate
//! lists update`), or, with none configured, installs the UT1 collection once as the
//! feed `ut1` in `blocklists/ut1` beside the policy's folder, which the shipped policy
//! names as optional sources of its categories, so they block with it at once. The
//! feed is then shown as configuration to add, so that it stays current.

use std::path::Path;

use anyhow::{Context, Result, bail};
use safegate_lists::feed::{Feed, FeedFormat, Updated};

use crate::lists_command::{feeds, update_feeds};
use crate::settings::Config;

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
                    "category lists: {name} installed ({} categories, {entries} entries)",
                    categories.len()
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
             format = \"ut1\"\nurl = \"{from}\""
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
        into: None,
    });
    feeds(&lists, policy_file)
        .into_iter()
        .next()
        .context("the UT1 feed could not be set up")
}
