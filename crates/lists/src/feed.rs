//! List feeds (`[[lists.feeds]]`, `safegate lists update|rollback|status`): a list
//! collection fetched from a URL, verified and installed in its own folder, with the
//! previous version kept beside it for a rollback.
//!
//! A feed named N installs into a folder (by default `blocklists/N` beside the policy's
//! folder). A `ut1` feed fills it with UT1 category folders; a `hosts` or `domains` feed
//! with the one file `list.txt`; a `urls` feed with the one file `urls` (so the folder
//! reads as a UT1 category). The version the server named (ETag, Last-Modified) is kept
//! in the folder's `.feed-version` and sent back on the next update (conditional GET);
//! the previous folder is `.N.previous`, the last failure `.N.error` and the lock that
//! keeps two updates of one feed apart `.N.lock`, all beside it.
//! Nothing is installed unless the download is complete, is not a web page, parses,
//! and no category lost more than `max_shrink_percent` of its entries.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::checksum;
use crate::import::{
    Context, Fetched, ImportError, Source, Validators, extract, fetch, refused, select,
};
use crate::screen::{ListChecks, screen};
use crate::source::{ListFormat, read};

type Result<T, E = ImportError> = std::result::Result<T, E>;

/// File in an installed feed folder naming its version.
pub const VERSION_FILE: &str = ".feed-version";

/// Name of the one file of a `hosts` or `domains` feed.
pub const LIST_FILE: &str = "list.txt";

/// Name of the one file of a `urls` feed (a UT1 category folder's URL list).
pub const URLS_FILE: &str = "urls";

/// What a feed serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedFormat {
    /// A tar.gz of UT1 category folders.
    Ut1,
    /// One hosts file.
    Hosts,
    /// One domain per line.
    Domains,
    /// One URL per line.
    Urls,
}

impl FeedFormat {
    /// Parses a format name from the configuration.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "ut1" => Some(Self::Ut1),
            "hosts" => Some(Self::Hosts),
            "domains" => Some(Self::Domains),
            "urls" => Some(Self::Urls),
            _ => None,
        }
    }
}

impl fmt::Display for FeedFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ut1 => "ut1",
            Self::Hosts => "hosts",
            Self::Domains => "domains",
            Self::Urls => "urls",
        })
    }
}

/// One feed, its folder resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feed {
    /// Its name (letters, digits, `-`, `_`).
    pub name: String,
    /// What it serves.
    pub format: FeedFormat,
    /// An http(s):// or file:// URL, or a local path.
    pub url: String,
    /// Where the publisher's checksum list is (`md5sum` / `sha256sum` output, such as
    /// UT1's `MD5SUM.LST`), if it publishes one: a download that does not match it is
    /// refused.
    pub checksums: Option<String>,
    /// The folder it installs into.
    pub into: PathBuf,
}

impl Feed {
    /// Where the previous version is kept: `.N.previous` beside the folder.
    pub fn previous(&self) -> PathBuf {
        self.beside(&format!(".{}.previous", self.dir_name()))
    }

    /// Where the last failure is kept: `.N.error` beside the folder.
    fn error_file(&self) -> PathBuf {
        self.beside(&format!(".{}.error", self.dir_name()))
    }

    /// Holds `.N.lock` beside the folder for as long as the file returned is open, so
    /// that the service and a command line never install the same feed at once.
    fn lock(&self) -> Result<File> {
        let path = self.beside(&format!(".{}.lock", self.dir_name()));
        let _ = fs::create_dir_all(self.parent());
        let file =
            File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(fs::TryLockError::WouldBlock) => Err(refused(format!(
                "another update or rollback of feed {} is running; try again when it is done",
                self.name
            ))),
            Err(fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
    }

    fn dir_name(&self) -> String {
        self.into
            .file_name()
            .map_or_else(|| self.name.clone(), |n| n.to_string_lossy().into_owned())
    }

    fn beside(&self, name: &str) -> PathBuf {
        self.parent().join(name)
    }

    fn parent(&self) -> PathBuf {
        match self.into.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }
}

/// How an update is done.
#[derive(Debug, Clone, Copy)]
pub struct UpdateOptions {
    /// Install even when a category shrank more than allowed.
    pub force: bool,
    /// A category that lost more than this share (percent) of its entries is refused.
    pub max_shrink_percent: u8,
    /// Longest download.
    pub timeout: Duration,
    /// Largest download, in MiB.
    pub max_mib: u64,
}

/// The version of an installed feed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Version {
    /// What the server named it.
    pub validators: Validators,
    /// When it was installed, in Unix seconds.
    pub installed: u64,
    /// When the server last confirmed it current (installed or answered 304), in Unix
    /// seconds: a list's age counts from here.
    pub checked: u64,
}

/// What `safegate lists status` shows of a feed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedStatus {
    /// The version installed, if any.
    pub version: Option<Version>,
    /// Entries (domains and URLs) per category (`list` for a single-file feed).
    pub categories: BTreeMap<String, u64>,
    /// The last failed update since the last good one: when (Unix seconds) and why.
    pub last_error: Option<(u64, String)>,
    /// Whether a previous version is kept for a rollback.
    pub has_previous: bool,
}

/// What an update did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Updated {
    /// The server's copy is the one installed (304 Not Modified).
    Unchanged,
    /// A new version was installed: entries per category.
    Installed(BTreeMap<String, u64>),
}

/// Now, in Unix seconds.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Fetches, verifies and installs `feed`; a failure is recorded for [`status`] and
/// leaves the installed lists untouched.
pub fn update(feed: &Feed, options: &UpdateOptions) -> Result<Updated> {
    let _lock = feed.lock()?;
    let result = update_inner(feed, options).map_err(|source| ImportError::Entry {
        what: format!("feed {}: cannot update from {}", feed.name, feed.url),
        source: Box::new(source),
    });
    let error_file = feed.error_file();
    match &result {
        Ok(_) => match fs::remove_file(&error_file) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot remove {}", error_file.display()));
            }
            _ => {}
        },
        Err(error) => {
            let text = format!("{}\n{}\n", now_secs(), error_text(error));
            let _ = fs::create_dir_all(feed.parent());
            let _ = fs::write(&error_file, text);
        }
    }
    result
}

/// An error and its causes, on one line.
pub fn error_text(error: &ImportError) -> String {
    crate::import::error_chain(error)
}

fn update_inner(feed: &Feed, options: &UpdateOptions) -> Result<Updated> {
    if feed.into.file_name().is_none() {
        return Err(refused(format!(
            "{} must name a folder (not / or ..)",
            feed.into.display()
        )));
    }
    let parent = feed.parent();
    fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create folder {}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(&format!(".safegate-feed-{}-", feed.name))
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a staging folder in {}", parent.display()))?;
    let known = read_version(&feed.into).map(|v| v.validators);
    let download = staging.path().join("download");
    let validators = match Source::parse(&feed.url)? {
        Source::Http(url) => {
            let max = options.max_mib.saturating_mul(1 << 20);
            let known = known.unwrap_or_default();
            match fetch(&url, &download, max, options.timeout, &known)? {
                Fetched::NotModified => {
                    if let Some(mut version) = read_version(&feed.into) {
                        version.checked = now_secs();
                        write_version(&feed.into, &version)?;
                    }
                    return Ok(Updated::Unchanged);
                }
                Fetched::Body { validators, .. } => validators,
            }
        }
        Source::File(path) => {
            fs::copy(&path, &download)
                .with_context(|| format!("cannot copy {}", path.display()))?;
            Validators::default()
        }
    };
    if let Some(checksums) = &feed.checksums {
        check_published_hash(feed, checksums, &download, staging.path(), options)?;
    }
    refuse_web_page(&download)?;
    let lists = staging.path().join("lists");
    fs::create_dir(&lists).with_context(|| format!("cannot create {}", lists.display()))?;
    stage(feed.format, &download, &lists)?;
    let counts = count_entries(feed.format, &lists)?;
    if counts.values().all(|count| *count == 0) {
        return Err(refused("it holds no entries"));
    }
    if !options.force {
        let before = count_entries(feed.format, &feed.into).unwrap_or_default();
        check_shrink(&before, &counts, options.max_shrink_percent)?;
    }
    let version = Version {
        validators,
        installed: now_secs(),
        checked: now_secs(),
    };
    write_version(&lists, &version)?;
    install(&lists, feed)?;
    Ok(Updated::Installed(counts))
}

/// Refuses a download that does not match the hash the feed's checksum list (fetched
/// from `checksums` into `staging`) gives for the last segment of the feed's URL.
fn check_published_hash(
    feed: &Feed,
    checksums: &str,
    download: &Path,
    staging: &Path,
    options: &UpdateOptions,
) -> Result<()> {
    let list = staging.join("checksums");
    match Source::parse(checksums)? {
        Source::Http(url) => {
            crate::import::download(&url, &list, 1 << 20, options.timeout)?;
        }
        Source::File(path) => {
            fs::copy(&path, &list).with_context(|| format!("cannot copy {}", path.display()))?;
        }
    }
    let text = fs::read_to_string(&list)
        .map_err(|e| refused(format!("the checksum list {checksums} is not text: {e}")))?;
    let name = feed
        .url
        .split(['?', '#'])
        .next()
        .and_then(|path| path.rsplit('/').find(|segment| !segment.is_empty()))
        .unwrap_or(&feed.url);
    let expected =
        checksum::published_hash(&text, name).map_err(|e| refused(format!("{e} ({checksums})")))?;
    checksum::verify_file(download, &expected)
        .with_context(|| "cannot read the download".to_owned())?
        .map_err(|e| refused(e.to_string()))
}

/// Refuses an HTML page served in place of the list (a portal, an error page with 200).
fn refuse_web_page(path: &Path) -> Result<()> {
    let mut head = Vec::with_capacity(512);
    File::open(path)
        .and_then(|file| file.take(512).read_to_end(&mut head))
        .with_context(|| format!("cannot read {}", path.display()))?;
    let text = String::from_utf8_lossy(&head)
        .trim_start()
        .to_ascii_lowercase();
    if text.starts_with("<!doctype html") || text.starts_with("<html") || text.starts_with("<head")
    {
        return Err(refused(
            "the server sent a web page (HTML), not the list: check the feed's url",
        ));
    }
    Ok(())
}

/// Puts the downloaded file in `lists` in the feed's layout, checking that it parses.
fn stage(format: FeedFormat, download: &Path, lists: &Path) -> Result<()> {
    let (file, read_as, read_path) = match format {
        FeedFormat::Ut1 => {
            let mut archive =
                File::open(download).with_context(|| "cannot reopen the download".to_owned())?;
            let extracted = extract(&mut archive, lists)?;
            select(&extracted, lists, None)?;
            return Ok(());
        }
        FeedFormat::Hosts => (LIST_FILE, ListFormat::Hosts, lists.join(LIST_FILE)),
        FeedFormat::Domains => (LIST_FILE, ListFormat::Domains, lists.join(LIST_FILE)),
        FeedFormat::Urls => (URLS_FILE, ListFormat::Ut1, lists.to_path_buf()),
    };
    let target = lists.join(file);
    fs::rename(download, &target)
        .with_context(|| format!("cannot move the download to {}", target.display()))?;
    let entries = read(read_as, &read_path).map_err(|e| refused(e.to_string()))?;
    let checks = ListChecks {
        max_shrink_percent: 100,
    };
    screen(&entries, None, checks).map_err(|e| refused(format!("the list is refused: {e}")))
}

/// Entries (non-blank, non-comment lines of domain and URL files) per category of an
/// installed or staged feed folder.
pub fn count_entries(format: FeedFormat, folder: &Path) -> Result<BTreeMap<String, u64>> {
    let mut counts = BTreeMap::new();
    match format {
        FeedFormat::Hosts | FeedFormat::Domains => {
            counts.insert("list".to_owned(), count_lines(&folder.join(LIST_FILE))?);
        }
        FeedFormat::Urls => {
            counts.insert("list".to_owned(), count_lines(&folder.join(URLS_FILE))?);
        }
        FeedFormat::Ut1 => {
            let what = || format!("cannot read {}", folder.display());
            for entry in fs::read_dir(folder).with_context(what)? {
                let entry = entry.with_context(what)?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let real_dir = entry.file_type().with_context(what)?.is_dir();
                if name.starts_with('.') || !real_dir {
                    continue;
                }
                let mut total = 0;
                for file in ["domains", "urls"] {
                    let path = entry.path().join(file);
                    if path.is_file() {
                        total += count_lines(&path)?;
                    }
                }
                counts.insert(name, total);
            }
        }
    }
    Ok(counts)
}

fn count_lines(path: &Path) -> Result<u64> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut count = 0;
    for line in BufReader::new(file).split(b'\n') {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        let text = line.trim_ascii();
        if !text.is_empty() && !text.starts_with(b"#") {
            count += 1;
        }
    }
    Ok(count)
}

/// Refuses when a category of `before` lost more than `max_percent` of its entries.
fn check_shrink(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    max_percent: u8,
) -> Result<()> {
    let kept_percent = 100 - u64::from(max_percent.min(100));
    for (category, old) in before {
        let new = after.get(category).copied().unwrap_or(0);
        if *old > 0 && new * 100 < old * kept_percent {
            return Err(refused(format!(
                "category {category} shrank from {old} to {new} entries, more than the \
                 {max_percent} % that lists.max_shrink_percent allows (use --force if this \
                 is expected)"
            )));
        }
    }
    Ok(())
}

/// The version of the feed installed in `folder`, if any.
pub fn read_version(folder: &Path) -> Option<Version> {
    let text = fs::read_to_string(folder.join(VERSION_FILE)).ok()?;
    let mut version = Version::default();
    for line in text.lines() {
        match line.split_once('=') {
            Some(("etag", value)) => version.validators.etag = Some(value.to_owned()),
            Some(("last_modified", value)) => {
                version.validators.last_modified = Some(value.to_owned());
            }
            Some(("installed", value)) => version.installed = value.parse().unwrap_or(0),
            Some(("checked", value)) => version.checked = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    Some(version)
}

fn write_version(folder: &Path, version: &Version) -> Result<()> {
    let mut text = format!(
        "installed={}\nchecked={}\n",
        version.installed, version.checked
    );
    let clean = |value: &str| value.replace(['\n', '\r'], "");
    if let Some(etag) = &version.validators.etag {
        text.push_str(&format!("etag={}\n", clean(etag)));
    }
    if let Some(date) = &version.validators.last_modified {
        text.push_str(&format!("last_modified={}\n", clean(date)));
    }
    let path = folder.join(VERSION_FILE);
    let partial = folder.join(".feed-version.new");
    fs::write(&partial, text)
        .and_then(|()| fs::rename(&partial, &path))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Moves `staged` into the feed's folder, the folder in force to `.N.previous`
/// (replacing an older previous one). If the second move fails the first is undone.
fn install(staged: &Path, feed: &Feed) -> Result<()> {
    let previous = feed.previous();
    let had = feed.into.exists();
    if had {
        if previous.exists() {
            fs::remove_dir_all(&previous)
                .with_context(|| format!("cannot remove {}", previous.display()))?;
        }
        fs::rename(&feed.into, &previous).with_context(|| {
            format!(
                "cannot move the lists in force {} aside",
                feed.into.display()
            )
        })?;
    }
    if let Err(error) = fs::rename(staged, &feed.into) {
        if had {
            let _ = fs::rename(&previous, &feed.into);
        }
        return Err(error)
            .with_context(|| format!("cannot move the new lists to {}", feed.into.display()));
    }
    Ok(())
}

/// Puts the previous version back in force; the version it replaces becomes the
/// previous one (a second rollback undoes the first).
pub fn rollback(feed: &Feed) -> Result<()> {
    let _lock = feed.lock()?;
    let previous = feed.previous();
    if !previous.is_dir() {
        return Err(refused(format!(
            "feed {}: no previous version to go back to ({} does not exist)",
            feed.name,
            previous.display()
        )));
    }
    let swap = feed.beside(&format!(".{}.rollback", feed.dir_name()));
    let had = feed.into.exists();
    if had {
        fs::rename(&feed.into, &swap)
            .with_context(|| format!("cannot move {} aside", feed.into.display()))?;
    }
    if let Err(error) = fs::rename(&previous, &feed.into) {
        if had {
            let _ = fs::rename(&swap, &feed.into);
        }
        return Err(error).with_context(|| format!("cannot restore {}", previous.display()));
    }
    if had {
        fs::rename(&swap, &previous)
            .with_context(|| format!("cannot keep {} as the previous", swap.display()))?;
    }
    Ok(())
}

/// What is installed for `feed`, and its last failure.
pub fn status(feed: &Feed) -> FeedStatus {
    let last_error = fs::read_to_string(feed.error_file()).ok().map(|text| {
        let (when, why) = text.split_once('\n').unwrap_or(("0", &text));
        (when.trim().parse().unwrap_or(0), why.trim().to_owned())
    });
    FeedStatus {
        version: read_version(&feed.into),
        categories: count_entries(feed.format, &feed.into).unwrap_or_default(),
        last_error,
        has_previous: feed.previous().is_dir(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn a_category_that_shrinks_too_much_or_vanishes_is_refused() {
        let before = counts(&[("adult", 100), ("gambling", 10)]);
        assert!(check_shrink(&before, &counts(&[("adult", 50), ("gambling", 5)]), 50).is_ok());
        let error = check_shrink(&before, &counts(&[("adult", 20), ("gambling", 10)]), 50);
        assert!(
            error
                .unwrap_err()
                .to_string()
                .contains("adult shrank from 100 to 20")
        );
        assert!(check_shrink(&before, &counts(&[("adult", 100)]), 50).is_err());
        assert!(check_shrink(&before, &counts(&[]), 100).is_ok());
    }

    #[test]
    fn web_pages_are_refused_and_lists_pass() {
        let dir = tempfile::tempdir().unwrap();
        let page = dir.path().join("page");
        fs::write(&page, "\n  <!DOCTYPE HTML><html><body>Sorry</body></html>").unwrap();
        assert!(refuse_web_page(&page).is_err());
        fs::write(&page, "# hosts\n0.0.0.0 ads.test\n").unwrap();
        assert!(refuse_web_page(&page).is_ok());
    }

    #[test]
    fn rollback_swaps_the_previous_version_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let feed = Feed {
            name: "ads".to_owned(),
            format: FeedFormat::Hosts,
            url: "unused".to_owned(),
            checksums: None,
            into: dir.path().join("ads"),
        };
        assert!(rollback(&feed).is_err(), "nothing to go back to");
        for version in ["one", "two"] {
            let staged = dir.path().join("staged");
            fs::create_dir(&staged).unwrap();
            fs::write(staged.join(LIST_FILE), format!("{version}.test\n")).unwrap();
            install(&staged, &feed).unwrap();
        }
        let list = || fs::read_to_string(feed.into.join(LIST_FILE)).unwrap();
        assert_eq!(list(), "two.test\n");
        rollback(&feed).unwrap();
        assert_eq!(list(), "one.test\n");
        rollback(&feed).unwrap();
        assert_eq!(list(), "two.test\n");
        assert!(feed.previous().ends_with(".ads.previous"));
    }
}
