//! The live policy: loading and hot-reloading it. The policy file and its lists are parsed and
//! compiled on a blocking thread, off the proxy's hot path, then swapped in atomically;
//! requests in flight keep the snapshot they started with. A broken file is refused
//! with file, line and column, and the previous policy stays live. Reloads happen on
//! SIGHUP and, with `policy.watch`, when the policy file or one of the list files it
//! names (category sources, phrase lists) changes, or an optional list that was
//! missing appears (a feed installed later). Every version in force, and every
//! change of a list file it names, is recorded in the audit log (author `file` for
//! changes made by hand), with a unified diff ([`policy_diff`]).
//!
//! Every list file is screened as it is read ([`ListChecks`]): a binary or mostly
//! invalid list is refused at start and at reload, and at reload also a list that
//! lost more than `lists.max_shrink_percent` of the entries of the same list in
//! force. A refusal keeps the previous policy (and so the previous lists) live, is
//! logged at error naming the file and why, counted per list
//! ([`ReloadCounters::list_refusals`]) and reported by `/readyz` until a reload
//! succeeds ([`ReloadCounters::refused_lists`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};
use safegate_config::ConfigProblem;
use safegate_policy::{ListChecks, ListRefusal, Policy, PolicyError, PolicyHandle, Snapshot};
use serde::{Deserialize, Serialize};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub mod schedule;

/// The policy could not be loaded at start, or reloading could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The policy file or a list it names is broken (file, line and column).
    #[error("policy {}", path.display())]
    Load {
        /// The policy file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: Box<PolicyError>,
    },
    /// SIGHUP cannot be watched.
    #[error("cannot watch SIGHUP")]
    Hangup(#[source] std::io::Error),
    /// The file watcher cannot start.
    #[error("cannot start the policy file watcher")]
    Watcher(#[source] notify::Error),
}

/// `[lists]`: how freshly read list files are screened before they go live, and the
/// feeds that keep them current ([`schedule`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListsConfig {
    /// A list file that lost more than this share (percent) of the entries of the
    /// same file in force is refused at reload; 100 turns the check off. Default 50.
    pub max_shrink_percent: u8,
    /// When the running service updates the feeds: `daily HH:MM` (plus a random delay
    /// of up to 30 minutes), `every DURATION`, or a number of seconds. None: never.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// A feed not updated for longer than this is reported as stale.
    #[serde(with = "humantime_serde")]
    pub stale_after: Duration,
    /// The feeds.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub feeds: Vec<FeedConfig>,
}

/// One `[[lists.feeds]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    /// Its name: letters, digits, `-` and `_`.
    pub name: String,
    /// `ut1`, `hosts`, `domains` or `urls`.
    pub format: String,
    /// An http(s):// or file:// URL, or a local path.
    pub url: String,
    /// Where the publisher's checksum list is (`md5sum` / `sha256sum` output, e.g.
    /// UT1's `MD5SUM.LST`): a download that does not match it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksums: Option<String>,
    /// Where it installs; by default `blocklists/NAME` beside the policy's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub into: Option<PathBuf>,
}

/// Whether `address` is an http://, https:// or file:// URL or a path.
fn is_feed_address(address: &str) -> bool {
    let lower = address.to_ascii_lowercase();
    let scheme_ok = !lower.contains("://")
        || ["http://", "https://", "file://"]
            .iter()
            .any(|s| lower.starts_with(s));
    !address.trim().is_empty() && scheme_ok
}

/// Feed formats accepted in `[[lists.feeds]]`.
pub const FEED_FORMATS: [&str; 4] = ["ut1", "hosts", "domains", "urls"];

impl Default for ListsConfig {
    fn default() -> Self {
        ListsConfig {
            max_shrink_percent: ListChecks::default().max_shrink_percent,
            schedule: None,
            stale_after: Duration::from_secs(7 * 24 * 3600),
            feeds: Vec::new(),
        }
    }
}

impl ListsConfig {
    /// Every problem, with its key.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if self.max_shrink_percent > 100 {
            problems.push(ConfigProblem::new(
                "lists.max_shrink_percent",
                format!(
                    "{} is not a share in percent: use 0 to 100 (100 turns the check off)",
                    self.max_shrink_percent
                ),
            ));
        }
        if let Some(Err(why)) = self.schedule.as_deref().map(schedule::Schedule::parse) {
            problems.push(ConfigProblem::new("lists.schedule", why));
        }
        if self.stale_after.is_zero() {
            problems.push(ConfigProblem::new(
                "lists.stale_after",
                "must be longer than 0 (e.g. \"7d\")",
            ));
        }
        let mut seen = HashSet::new();
        for (i, feed) in self.feeds.iter().enumerate() {
            let key = format!("lists.feeds[{i}]");
            let valid_name = !feed.name.is_empty()
                && feed.name.len() <= 64
                && feed
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid_name {
                problems.push(ConfigProblem::new(
                    format!("{key}.name"),
                    format!(
                        "{:?} is not a feed name: use 1 to 64 letters, digits, - and _",
                        feed.name
                    ),
                ));
            } else if !seen.insert(feed.name.clone()) {
                problems.push(ConfigProblem::new(
                    format!("{key}.name"),
                    format!("another feed is already named {:?}", feed.name),
                ));
            }
            if !FEED_FORMATS.contains(&feed.format.as_str()) {
                problems.push(ConfigProblem::new(
                    format!("{key}.format"),
                    format!(
                        "{:?} is not a feed format: use one of {}",
                        feed.format,
                        FEED_FORMATS.join(", ")
                    ),
                ));
            }
            let addresses = [
                ("url", Some(&feed.url)),
                ("checksums", feed.checksums.as_ref()),
            ];
            for (field, address) in addresses {
                if let Some(address) = address.filter(|a| !is_feed_address(a)) {
                    problems.push(ConfigProblem::new(
                        format!("{key}.{field}"),
                        format!(
                            "{address:?} is not a feed address: use http://, https://, file:// or a path"
                        ),
                    ));
                }
            }
        }
        problems
    }

    /// The checks the policy compile applies.
    pub fn checks(&self) -> ListChecks {
        ListChecks {
            max_shrink_percent: self.max_shrink_percent,
        }
    }
}

/// What the reloader reloads and how.
#[derive(Debug, Clone)]
pub struct Reloading {
    /// The policy file.
    pub file: PathBuf,
    /// Reload when the policy file or one of its lists changes (SIGHUP always does).
    pub watch: bool,
    /// How list files are screened.
    pub checks: ListChecks,
}

/// Most lines of a policy diff kept in one audit entry.
pub const AUDIT_DIFF_MAX_LINES: usize = 2000;

/// A unified diff of two policy texts, for the audit log (cut after
/// [`AUDIT_DIFF_MAX_LINES`] lines).
pub fn policy_diff(before: &str, after: &str) -> String {
    let diff = similar::TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(2)
        .header("policy before", "policy after")
        .to_string();
    let mut lines = diff.lines();
    let kept: Vec<&str> = lines.by_ref().take(AUDIT_DIFF_MAX_LINES).collect();
    let cut = lines.count();
    let mut text = kept.join("\n");
    if cut > 0 {
        text.push_str(&format!("\n... {cut} more lines"));
    }
    text
}

/// Now, in Unix microseconds (audit entries' time).
fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Quiet time after a file event before reloading (editors write in several steps).
const SETTLE: Duration = Duration::from_millis(250);

/// Reload outcomes since start; exported on `/metrics`.
#[derive(Debug, Default)]
pub struct ReloadCounters {
    /// Policies compiled and swapped in.
    pub succeeded: AtomicU64,
    /// Policies refused (the previous one stayed live).
    pub failed: AtomicU64,
    /// Whether the most recent reload was refused.
    pub last_failed: AtomicBool,
    /// Why the most recent reload was refused (None after a good one).
    pub last_error: std::sync::Mutex<Option<String>>,
    /// List refusals since start, per list (category) name.
    list_refusals: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    /// The lists the most recent reload refused (empty after a good one).
    refused_now: std::sync::Mutex<Vec<ListRefusal>>,
}

impl ReloadCounters {
    fn record(&self, ok: bool) {
        let counter = if ok { &self.succeeded } else { &self.failed };
        counter.fetch_add(1, Ordering::Relaxed);
        self.last_failed.store(!ok, Ordering::Relaxed);
        if ok {
            self.set_last_error(None);
            lock(&self.refused_now).clear();
        }
    }

    fn record_refusals(&self, refusals: &[ListRefusal]) {
        let mut counts = lock(&self.list_refusals);
        for refusal in refusals {
            *counts.entry(refusal.category.clone()).or_insert(0) += 1;
        }
        *lock(&self.refused_now) = refusals.to_vec();
    }

    /// List refusals since start, per list (category) name, in name order.
    pub fn list_refusals(&self) -> Vec<(String, u64)> {
        lock(&self.list_refusals)
            .iter()
            .map(|(list, count)| (list.clone(), *count))
            .collect()
    }

    /// The lists that the most recent reload refused, so that the previous policy
    /// stays live; empty when it worked.
    pub fn refused_lists(&self) -> Vec<ListRefusal> {
        lock(&self.refused_now).clone()
    }

    fn set_last_error(&self, error: Option<String>) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = error;
    }

    /// Why the most recent reload was refused, if it was.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Loads the policy for start-up; errors name the file, line and column, or the list
/// refused and why (there is no previous list to keep at start).
pub fn load_initial(path: &Path, checks: ListChecks) -> Result<PolicyHandle, ReloadError> {
    let snapshot =
        Policy::load_screened(path, None, checks).map_err(|source| ReloadError::Load {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
    log_loaded(path, &snapshot, "policy loaded");
    Ok(Arc::new(ArcSwap::from_pointee(snapshot)))
}

fn log_loaded(path: &Path, snapshot: &Snapshot, message: &str) {
    let stats = snapshot.stats();
    info!(
        file = %path.display(),
        entries = stats.index_entries,
        lists = stats.lists,
        unblocks = stats.unblocks,
        compile_ms = stats.compile_time.as_millis() as u64,
        "{message}"
    );
}

/// Compiles the policy again and swaps it in; on failure the old policy stays.
pub async fn reload(
    path: &Path,
    handle: &PolicyHandle,
    counters: &ReloadCounters,
    checks: ListChecks,
) -> bool {
    let file = path.to_owned();
    let in_force = handle.load_full();
    let compiled = tokio::task::spawn_blocking(move || {
        Policy::load_screened(&file, Some(in_force.stats()), checks)
    })
    .await;
    match compiled {
        Ok(Ok(snapshot)) => {
            let snapshot = Arc::new(snapshot);
            handle.store(Arc::clone(&snapshot));
            log_loaded(path, &snapshot, "policy reloaded");
            counters.record(true);
            true
        }
        Ok(Err(PolicyError::ListsRefused { refusals, .. })) => {
            counters.record(false);
            counters.record_refusals(&refusals);
            let text: Vec<String> = refusals.iter().map(ToString::to_string).collect();
            counters.set_last_error(Some(format!("list refused: {}", text.join("; "))));
            for refusal in &refusals {
                error!(
                    file = %refusal.file.display(),
                    list = %refusal.category,
                    "list file REFUSED, the previous policy and its lists stay live: {}",
                    refusal.reason
                );
            }
            false
        }
        Ok(Err(err)) => {
            counters.record(false);
            counters.set_last_error(Some(err.to_string()));
            error!(file = %path.display(), "policy NOT reloaded, the previous policy stays live: {err}");
            false
        }
        Err(err) => {
            counters.record(false);
            error!(%err, "policy reload task failed; the previous policy stays live");
            false
        }
    }
}

/// Records the policy file's text in the audit log when it differs from the text
/// recorded last (a change made by hand, author `file`), so edits made while
/// SafeGate was stopped are recorded at the next start. Failures are logged, not
/// fatal: the filter keeps running.
pub fn audit_policy_file(store: &safegate_store::Store, path: &Path) {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) => {
            warn!(file = %path.display(), %err, "cannot read the policy file for the audit log");
            return;
        }
    };
    let now = now_micros();
    match store.audit_policy_text(
        now,
        "file",
        safegate_store::AuditAction::PolicyChange,
        None,
        &text,
        policy_diff,
    ) {
        Ok(Some(entry)) => info!(
            sequence = entry.sequence,
            "policy change recorded in the audit log (author: file)"
        ),
        Ok(None) => {}
        Err(err) => error!(%err, "POLICY CHANGE NOT AUDITED: cannot write the audit log"),
    }
}

/// Records changes of the list files the policy names (author `file`; a diff for
/// small files, line counts for large ones), like [`audit_policy_file`] does for the
/// policy file itself. A file seen for the first time is only fingerprinted.
pub fn audit_list_files(store: &safegate_store::Store, files: &[PathBuf]) {
    let now = now_micros();
    for file in files {
        let path = absolute(file);
        let content = match std::fs::read(&path) {
            Ok(content) => content,
            Err(err) => {
                warn!(file = %path.display(), %err, "cannot read a list file for the audit log");
                continue;
            }
        };
        let name = path.display().to_string();
        match store.audit_list_file(now, &name, &content, policy_diff) {
            Ok(Some(entry)) => info!(
                sequence = entry.sequence,
                file = %name,
                "list file change recorded in the audit log (author: file)"
            ),
            Ok(None) => {}
            Err(err) => {
                error!(%err, file = %name, "LIST CHANGE NOT AUDITED: cannot write the audit log")
            }
        }
    }
}

/// Reloads on SIGHUP, when `reload_now` is notified (an edit from the admin pages)
/// and (if `watch`) on changes to the policy file or its list files, until `shutdown`.
pub fn spawn_reloader(
    reloading: Reloading,
    handle: PolicyHandle,
    counters: Arc<ReloadCounters>,
    store: safegate_store::Store,
    reload_now: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, ReloadError> {
    let Reloading {
        file: path,
        watch,
        checks,
    } = reloading;
    let mut hangup = signal(SignalKind::hangup()).map_err(ReloadError::Hangup)?;
    let (changed_tx, mut changed) = mpsc::channel::<()>(1);
    let mut watcher = if watch {
        let mut files = FileWatch::new(changed_tx)?;
        files.watch(std::iter::once(path.clone()).chain(handle.load().stats().files.clone()));
        files.watch_missing(handle.load().stats().optional_missing.clone());
        Some(files)
    } else {
        None
    };
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = hangup.recv() => info!("SIGHUP received: reloading the policy"),
                () = reload_now.notified() => info!("policy changed from the admin pages: reloading"),
                Some(()) = changed.recv() => {
                    // Let the editor finish writing; fold further events into this reload.
                    tokio::time::sleep(SETTLE).await;
                    while changed.try_recv().is_ok() {}
                    info!(file = %path.display(), "policy file or one of its lists changed: reloading");
                }
            }
            if reload(&path, &handle, &counters, checks).await {
                let files = handle.load().stats().files.clone();
                if let Some(files) = watcher.as_mut() {
                    files.watch(handle.load().stats().files.clone());
                    files.watch_missing(handle.load().stats().optional_missing.clone());
                }
                let (store, path) = (store.clone(), path.clone());
                let _ = tokio::task::spawn_blocking(move || {
                    audit_policy_file(&store, &path);
                    audit_list_files(&store, &files);
                })
                .await;
            }
        }
    }))
}

/// Watches the policy file and its list files: their directories (editors replace
/// files rather than write them in place), signalling events on the files themselves
/// or on a folder above one (a UT1 folder replaced whole). Optional lists that are
/// missing are watched from the nearest folder above them that exists, so a feed
/// installed later is picked up without a restart.
struct FileWatch {
    watcher: notify::RecommendedWatcher,
    files: Arc<std::sync::RwLock<HashSet<PathBuf>>>,
    /// Optional lists not there yet (replaced at each reload).
    missing: Arc<std::sync::RwLock<HashSet<PathBuf>>>,
    dirs: HashSet<PathBuf>,
}

/// Whether an event on `path` concerns one of `files`: the file itself, or a
/// folder above it.
fn concerns(files: &std::sync::RwLock<HashSet<PathBuf>>, path: &Path) -> bool {
    files
        .read()
        .is_ok_and(|files| files.iter().any(|file| file.starts_with(path)))
}

impl FileWatch {
    fn new(changed: mpsc::Sender<()>) -> Result<FileWatch, ReloadError> {
        let files: Arc<std::sync::RwLock<HashSet<PathBuf>>> = Arc::default();
        let missing: Arc<std::sync::RwLock<HashSet<PathBuf>>> = Arc::default();
        let (watched, awaited) = (Arc::clone(&files), Arc::clone(&missing));
        let watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
                Ok(event) => {
                    let relevant =
                        event.kind.is_modify() || event.kind.is_create() || event.kind.is_remove();
                    let ours = event.paths.iter().any(|path| {
                        let path = absolute(path);
                        concerns(&watched, &path) || concerns(&awaited, &path)
                    });
                    if relevant && ours {
                        let _ = changed.try_send(());
                    }
                }
                Err(err) => warn!(%err, "policy file watcher error"),
            })
            .map_err(ReloadError::Watcher)?;
        Ok(FileWatch {
            watcher,
            files,
            missing,
            dirs: HashSet::new(),
        })
    }

    /// Waits for the optional lists `paths` (missing now): watches the nearest
    /// existing folder above each, and signals an event on any folder on the way.
    fn watch_missing(&mut self, paths: Vec<PathBuf>) {
        let paths: HashSet<PathBuf> = paths.iter().map(|path| absolute(path)).collect();
        for path in &paths {
            let Some(dir) = path.ancestors().skip(1).find(|dir| dir.is_dir()) else {
                continue;
            };
            self.watch_dir(dir.to_path_buf());
        }
        if let Ok(mut missing) = self.missing.write() {
            *missing = paths;
        }
    }

    /// Adds `paths` to the watched files (a list dropped from the policy is still
    /// watched until restart: a spurious reload costs nothing).
    fn watch(&mut self, paths: impl IntoIterator<Item = PathBuf>) {
        for path in paths {
            let path = absolute(&path);
            let Some(dir) = path.parent().map(Path::to_path_buf) else {
                continue;
            };
            if let Ok(mut files) = self.files.write() {
                files.insert(path.clone());
            }
            self.watch_dir(dir);
        }
    }

    /// Watches `dir` (not its subfolders) unless it is watched already.
    fn watch_dir(&mut self, dir: PathBuf) {
        if self.dirs.contains(&dir) {
            return;
        }
        match self.watcher.watch(&dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                self.dirs.insert(dir);
            }
            Err(err) => {
                warn!(dir = %dir.display(), %err, "cannot watch a policy or list directory; SIGHUP still reloads");
            }
        }
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// Whether the watcher signals within a few seconds (bounded, not a sleep).
    async fn signalled(changed: &mut mpsc::Receiver<()>) -> bool {
        tokio::time::timeout(Duration::from_secs(10), changed.recv())
            .await
            .is_ok_and(|got| got.is_some())
    }

    #[tokio::test]
    async fn an_optional_list_that_appears_later_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let lists = dir.path().join("blocklists");
        std::fs::create_dir(&lists).unwrap();
        std::fs::write(lists.join("games.txt"), "a.test\n").unwrap();
        let (tx, mut changed) = mpsc::channel(1);
        let mut watch = FileWatch::new(tx).unwrap();
        watch.watch(vec![lists.join("games.txt")]);
        // blocklists/ut1 does not exist yet: the watch starts at blocklists/.
        watch.watch_missing(vec![lists.join("ut1/games")]);

        // The feed installed whole (a folder renamed into place): a reload.
        let staging = dir.path().join("staging");
        std::fs::create_dir_all(staging.join("games")).unwrap();
        std::fs::write(staging.join("games/domains"), "b.test\n").unwrap();
        std::fs::rename(&staging, lists.join("ut1")).unwrap();
        assert!(signalled(&mut changed).await);
    }

    #[test]
    fn events_concern_a_list_or_a_folder_above_it() {
        let files =
            std::sync::RwLock::new(HashSet::from([PathBuf::from("/s/blocklists/ut1/games")]));
        assert!(concerns(&files, Path::new("/s/blocklists/ut1/games")));
        assert!(concerns(&files, Path::new("/s/blocklists/ut1")));
        assert!(!concerns(&files, Path::new("/s/blocklists/notes.md")));
        assert!(!concerns(&files, Path::new("/s/blocklists/ut1/gambling")));
        assert!(!concerns(&files, Path::new("/s/blocklists/ut1/games-old")));
    }
}
