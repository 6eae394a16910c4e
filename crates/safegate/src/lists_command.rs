//! `safegate lists update|rollback|status`: the feeds of `[[lists.feeds]]`, fetched,
//! verified and installed by `safegate_lists::feed`; after a change the running
//! SafeGate is asked to reload its policy (SIGHUP, to the process behind the control
//! socket). The service's own scheduled updates use [`update_feeds`] too.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use safegate_lists::feed::{self, Feed, FeedFormat, FeedStatus, UpdateOptions, Updated};
use safegate_lists::import::DEFAULT_MAX_MIB;
use safegate_reload::ListsConfig;

use crate::finding::Finding;
use crate::settings::{Config, ConfigArgs};

/// Longest download of one feed.
pub const FEED_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// `safegate lists update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Where the configuration is.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Only this feed.
    #[arg(long, value_name = "NAME")]
    pub feed: Option<String>,
    /// Install even when a category lost more entries than lists.max_shrink_percent
    /// allows.
    #[arg(long)]
    pub force: bool,
}

/// `safegate lists rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Where the configuration is.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Only this feed (default: every feed that has a previous version).
    #[arg(long, value_name = "NAME")]
    pub feed: Option<String>,
}

/// `safegate lists status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Where the configuration is.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The configured feeds, their folders resolved: `into`, or `blocklists/NAME` beside
/// the policy's folder.
pub fn feeds(lists: &ListsConfig, policy_file: &Path) -> Vec<Feed> {
    let policy_dir = policy_file.parent().unwrap_or(Path::new(""));
    // `<policy folder>/../blocklists`, written without the `..` when it can be.
    let blocklists = match (policy_dir.file_name(), policy_dir.parent()) {
        (Some(_), Some(parent)) => parent.join("blocklists"),
        _ => policy_dir.join("..").join("blocklists"),
    };
    lists
        .feeds
        .iter()
        .filter_map(|config| {
            Some(Feed {
                name: config.name.clone(),
                format: FeedFormat::parse(&config.format)?,
                url: config.url.clone(),
                checksums: config.checksums.clone(),
                into: config
                    .into
                    .clone()
                    .unwrap_or_else(|| blocklists.join(&config.name)),
            })
        })
        .collect()
}

/// "1 category", "25 categories".
pub fn category_count(count: usize) -> String {
    if count == 1 {
        "1 category".to_owned()
    } else {
        format!("{count} categories")
    }
}

/// The feeds `--feed` names (all without it); an unknown name is an error.
fn chosen(config: &Config, name: Option<&str>) -> Result<Vec<Feed>> {
    let all = feeds(&config.lists, &config.policy.file);
    if all.is_empty() {
        bail!("no feeds are configured: add [[lists.feeds]] to the configuration file");
    }
    match name {
        None => Ok(all),
        Some(name) => match all.into_iter().find(|feed| feed.name == name) {
            Some(feed) => Ok(vec![feed]),
            None => bail!("no feed is named {name:?} in [[lists.feeds]]"),
        },
    }
}

/// Updates `feeds` one after the other; each result, by feed.
pub fn update_feeds(
    feeds: &[Feed],
    lists: &ListsConfig,
    force: bool,
) -> Vec<(String, Result<Updated, safegate_lists::import::ImportError>)> {
    let options = UpdateOptions {
        force,
        max_shrink_percent: lists.max_shrink_percent,
        timeout: FEED_TIMEOUT,
        max_mib: DEFAULT_MAX_MIB,
    };
    feeds
        .iter()
        .map(|feed| (feed.name.clone(), feed::update(feed, &options)))
        .collect()
}

/// `safegate lists update`.
pub fn update(args: &UpdateArgs) -> Result<()> {
    let config = Config::load(&args.config.config, &args.config.set)?;
    // Installed by root, the lists would be root's and SafeGate's own updates would fail.
    if let Some(rerun) = crate::service_user::rerun_if_root(
        &args.config.config,
        &config.data_dir,
        "Updating the lists",
        "so that it can update them itself later",
    ) {
        anyhow::ensure!(rerun?.success(), "not every feed was updated (see above)");
        return Ok(());
    }
    let feeds = chosen(&config, args.feed.as_deref())?;
    let mut changed = false;
    let mut failed = Vec::new();
    for (name, result) in update_feeds(&feeds, &config.lists, args.force) {
        match result {
            Ok(Updated::Unchanged) => println!("{name}: unchanged"),
            Ok(Updated::Installed(counts)) => {
                changed = true;
                let total: u64 = counts.values().sum();
                println!(
                    "{name}: installed {}, {total} entries",
                    category_count(counts.len())
                );
            }
            Err(error) => {
                eprintln!(
                    "safegate: {}; the lists in force are kept",
                    feed::error_text(&error)
                );
                failed.push(name);
            }
        }
    }
    if changed {
        ask_reload(&config.data_dir);
    }
    if !failed.is_empty() {
        bail!(
            "{} feed(s) not updated: {}",
            failed.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// `safegate lists rollback`.
pub fn rollback(args: &RollbackArgs) -> Result<()> {
    let config = Config::load(&args.config.config, &args.config.set)?;
    if let Some(rerun) = crate::service_user::rerun_if_root(
        &args.config.config,
        &config.data_dir,
        "Rolling back",
        "so that it can update the lists itself later",
    ) {
        anyhow::ensure!(rerun?.success(), "the rollback failed (see above)");
        return Ok(());
    }
    let mut feeds = chosen(&config, args.feed.as_deref())?;
    if args.feed.is_none() {
        feeds.retain(|feed| feed.previous().is_dir());
        if feeds.is_empty() {
            bail!("no feed has a previous version to go back to");
        }
    }
    for feed in &feeds {
        feed::rollback(feed).with_context(|| format!("feed {}", feed.name))?;
        println!(
            "{}: the previous version is back in force in {}",
            feed.name,
            feed.into.display()
        );
    }
    ask_reload(&config.data_dir);
    Ok(())
}

/// Asks the running SafeGate (if any) to reload its policy: SIGHUP to the process
/// that holds the control socket. Says what it did.
fn ask_reload(data_dir: &Path) {
    let socket: PathBuf = safegate_control::socket_path(data_dir);
    let Ok(stream) = std::os::unix::net::UnixStream::connect(&socket) else {
        println!("SafeGate is not running: it uses the new lists when it starts.");
        return;
    };
    let sent = rustix::net::sockopt::socket_peercred(&stream)
        .ok()
        .and_then(|cred| {
            rustix::process::kill_process(cred.pid, rustix::process::Signal::HUP).ok()
        });
    match sent {
        Some(()) => println!("Asked the running SafeGate to reload its policy."),
        None => eprintln!(
            "safegate: could not signal the running SafeGate: run `systemctl reload safegate`"
        ),
    }
}

/// `safegate lists status`.
pub fn status(args: &StatusArgs) -> Result<()> {
    let config = Config::load(&args.config.config, &args.config.set)?;
    let feeds = chosen(&config, None)?;
    let now = feed::now_secs();
    let stale_after = config.lists.stale_after.as_secs();
    let statuses: Vec<(Feed, FeedStatus)> = feeds
        .into_iter()
        .map(|feed| {
            let status = feed::status(&feed);
            (feed, status)
        })
        .collect();
    if args.json {
        let json: Vec<serde_json::Value> = statuses
            .iter()
            .map(|(feed, status)| status_json(feed, status, now, stale_after))
            .collect();
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    for (feed, status) in &statuses {
        print!("{}", status_text(feed, status, now, stale_after));
    }
    Ok(())
}

/// Seconds since the server last confirmed the installed feed current, if installed.
pub fn age(status: &FeedStatus, now: u64) -> Option<u64> {
    status
        .version
        .as_ref()
        .map(|version| now.saturating_sub(version.checked.max(version.installed)))
}

fn status_json(feed: &Feed, status: &FeedStatus, now: u64, stale_after: u64) -> serde_json::Value {
    let version = status.version.as_ref();
    serde_json::json!({
        "name": feed.name,
        "format": feed.format.to_string(),
        "url": feed.url,
        "into": feed.into.display().to_string(),
        "installed": version.map(|v| v.installed),
        "checked": version.map(|v| v.checked),
        "etag": version.and_then(|v| v.validators.etag.clone()),
        "last_modified": version.and_then(|v| v.validators.last_modified.clone()),
        "age_seconds": age(status, now),
        "stale": age(status, now).is_none_or(|age| age > stale_after),
        "categories": status.categories,
        "last_error": status.last_error.as_ref().map(|(_, why)| why),
        "last_error_at": status.last_error.as_ref().map(|(at, _)| at),
        "has_previous": status.has_previous,
    })
}

fn status_text(feed: &Feed, status: &FeedStatus, now: u64, stale_after: u64) -> String {
    let mut text = format!(
        "{} ({}, from {}) in {}\n",
        feed.name,
        feed.format,
        feed.url,
        feed.into.display()
    );
    match (&status.version, age(status, now)) {
        (Some(version), Some(age)) => {
            let name = version
                .validators
                .etag
                .clone()
                .or_else(|| version.validators.last_modified.clone())
                .unwrap_or_else(|| "no version from the server".to_owned());
            let stale = if age > stale_after { " - STALE" } else { "" };
            text.push_str(&format!(
                "  version: {name}; confirmed current {} ago{stale}\n",
                humantime::format_duration(Duration::from_secs(age))
            ));
        }
        _ => text.push_str("  not installed yet: run `safegate lists update`\n"),
    }
    for (category, entries) in &status.categories {
        text.push_str(&format!("  {category:<24} {entries} entries\n"));
    }
    if let Some((at, why)) = &status.last_error {
        let ago = humantime::format_duration(Duration::from_secs(now.saturating_sub(*at)));
        text.push_str(&format!("  last update failed {ago} ago: {why}\n"));
    }
    text
}

/// `safegate doctor`'s lines for the feeds: each installed and fresh (OK), or stale,
/// never installed, or failing its updates (WARN: the lists in force still filter).
pub fn doctor_findings(config: &Config) -> Vec<Finding> {
    const CHECK: &str = "list feed";
    let now = feed::now_secs();
    let stale_after = config.lists.stale_after;
    feeds(&config.lists, &config.policy.file)
        .iter()
        .map(|feed| {
            let status = feed::status(feed);
            let failing = status.last_error.as_ref().map(|(_, why)| why.clone());
            match (age(&status, now), failing) {
                (None, _) => Finding::warn(
                    CHECK,
                    format!("{} is not installed in {}", feed.name, feed.into.display()),
                    "run `safegate lists update`",
                ),
                (Some(age), why) if age > stale_after.as_secs() => Finding::warn(
                    CHECK,
                    format!(
                        "{} was last updated {} ago, more than lists.stale_after ({}){}",
                        feed.name,
                        humantime::format_duration(Duration::from_secs(age)),
                        humantime::format_duration(stale_after),
                        why.map(|why| format!("; the last update failed: {why}"))
                            .unwrap_or_default()
                    ),
                    "run `safegate lists update` and read what it says; check lists.schedule",
                ),
                (Some(_), Some(why)) => Finding::warn(
                    CHECK,
                    format!("{}: the last update failed: {why}", feed.name),
                    "run `safegate lists update` and read what it says",
                ),
                (Some(age), None) => Finding::ok(
                    CHECK,
                    format!(
                        "{}: {} entries, updated {} ago",
                        feed.name,
                        status.categories.values().sum::<u64>(),
                        humantime::format_duration(Duration::from_secs(age))
                    ),
                ),
            }
        })
        .collect()
}
