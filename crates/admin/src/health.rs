//! `/healthz` and `/readyz`.
//!
//! `/healthz` answers `200 ok` whenever the process can answer at all: use it to decide
//! whether SafeGate must be restarted (Docker `HEALTHCHECK`, a watchdog).
//!
//! `/readyz` answers `200` only when SafeGate is doing what its files say: the proxy
//! listeners are up (not starting, not shutting down), the policy file on disk is the
//! policy in force, and the store takes writes (the visit-log writer is not failing,
//! and the data directory takes a file). Otherwise `503` with one line per failed
//! check saying what to fix. A policy file that failed to reload makes
//! SafeGate not ready although it keeps serving with the previous policy: the school's
//! latest rules are not enforced, which a person must look at (the alert rule on
//! `safegate_policy_last_reload_failed` says the same). So do not use `/readyz` to take
//! the school's only proxy out of service, nor to restart it (a restart would refuse
//! the broken policy and not start at all): that is what `/healthz` is for.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use safegate_store::VisitLogStats;

/// One condition of readiness. Checks run on a blocking thread and may touch the disk.
pub trait ReadinessCheck: Send + Sync {
    /// What is checked, e.g. `policy`.
    fn name(&self) -> &'static str;
    /// `Err` says what is wrong and what to do about it.
    fn check(&self) -> Result<(), String>;
    /// Something to look at that does not make SafeGate unready (a stale list).
    fn warning(&self) -> Option<String> {
        None
    }
}

/// What `/readyz` reports: the listeners' state and the checks.
pub struct Readiness {
    serving: AtomicBool,
    checks: Vec<Box<dyn ReadinessCheck>>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("serving", &self.serving.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The outcome of `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadinessReport {
    /// Every check passed and the listeners are up.
    pub ready: bool,
    /// One line per check: `ok: name`, `WARN: name: what to look at` (still ready) or
    /// `FAIL: name: what to fix`.
    pub lines: Vec<String>,
}

impl Readiness {
    /// Not serving yet, with `checks`.
    pub fn new(checks: Vec<Box<dyn ReadinessCheck>>) -> Self {
        Self {
            serving: AtomicBool::new(false),
            checks,
        }
    }

    /// The proxy listeners are up (`true`) or starting / shutting down (`false`).
    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::Relaxed);
    }

    /// Runs every check (blocking: call it off the async threads).
    pub fn report(&self) -> ReadinessReport {
        let mut ready = true;
        let mut lines = Vec::with_capacity(self.checks.len() + 1);
        if self.serving.load(Ordering::Relaxed) {
            lines.push("ok: listeners".to_owned());
        } else {
            ready = false;
            lines.push(
                "FAIL: listeners: the proxy is starting or shutting down (not accepting)"
                    .to_owned(),
            );
        }
        for check in &self.checks {
            match check.check() {
                Ok(()) => match check.warning() {
                    Some(warning) => lines.push(format!("WARN: {}: {warning}", check.name())),
                    None => lines.push(format!("ok: {}", check.name())),
                },
                Err(reason) => {
                    ready = false;
                    lines.push(format!("FAIL: {}: {reason}", check.name()));
                }
            }
        }
        ReadinessReport { ready, lines }
    }
}

/// The data directory takes writes: a small file is written, synced and removed. The
/// answer is kept for a second, so frequent probes do not turn into disk traffic.
pub struct DataDirWritable {
    dir: PathBuf,
    last: Mutex<Option<(Instant, Result<(), String>)>>,
}

/// How long a data-directory probe's answer is reused.
const PROBE_REUSE: Duration = Duration::from_secs(1);

impl DataDirWritable {
    /// Probes `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            last: Mutex::new(None),
        }
    }

    fn probe(&self) -> Result<(), String> {
        use std::io::Write as _;
        let path = self.dir.join(".readyz-probe");
        let written = std::fs::File::create(&path).and_then(|mut file| {
            file.write_all(b"safegate readiness probe\n")?;
            file.sync_all()
        });
        let removed = std::fs::remove_file(&path);
        written.and(removed).map_err(|e| {
            format!(
                "cannot write to data_dir {}: {e} (check free space, permissions and the \
                 file system)",
                self.dir.display()
            )
        })
    }
}

impl ReadinessCheck for DataDirWritable {
    fn name(&self) -> &'static str {
        "store"
    }

    fn check(&self) -> Result<(), String> {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, result)) = last.as_ref()
            && at.elapsed() < PROBE_REUSE
        {
            return result.clone();
        }
        let result = self.probe();
        *last = Some((Instant::now(), result.clone()));
        result
    }
}

/// The store takes writes: the visit-log writer is not failing (it says since when,
/// how many records wait and how many were lost), and the data directory takes a
/// small file ([`DataDirWritable`]).
pub struct StoreWritable {
    data_dir: DataDirWritable,
    visit_log: Option<Arc<VisitLogStats>>,
}

impl StoreWritable {
    /// Checks the writer's state (when the visit log is on) and probes `data_dir`.
    pub fn new(data_dir: PathBuf, visit_log: Option<Arc<VisitLogStats>>) -> Self {
        Self {
            data_dir: DataDirWritable::new(data_dir),
            visit_log,
        }
    }
}

impl ReadinessCheck for StoreWritable {
    fn name(&self) -> &'static str {
        "store"
    }

    fn check(&self) -> Result<(), String> {
        if let Some(failure) = self.visit_log.as_ref().and_then(|stats| stats.failure()) {
            return Err(failure.to_string());
        }
        self.data_dir.check()
    }
}

/// Adapts a closure to a [`ReadinessCheck`].
pub struct CheckFn<F> {
    name: &'static str,
    check: F,
}

impl<F: Fn() -> Result<(), String> + Send + Sync> CheckFn<F> {
    /// A check named `name` that runs `check`.
    pub fn new(name: &'static str, check: F) -> Self {
        Self { name, check }
    }
}

impl<F: Fn() -> Result<(), String> + Send + Sync> ReadinessCheck for CheckFn<F> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn check(&self) -> Result<(), String> {
        (self.check)()
    }
}

/// A check that never fails SafeGate but may warn (`WARN:` line, status still 200).
pub struct WarnFn<F> {
    name: &'static str,
    warning: F,
}

impl<F: Fn() -> Option<String> + Send + Sync> WarnFn<F> {
    /// A warning named `name` that `warning` gives.
    pub fn new(name: &'static str, warning: F) -> Self {
        Self { name, warning }
    }
}

impl<F: Fn() -> Option<String> + Send + Sync> ReadinessCheck for WarnFn<F> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn check(&self) -> Result<(), String> {
        Ok(())
    }

    fn warning(&self) -> Option<String> {
        (self.warning)()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn not_ready_until_serving_and_every_check_passes() {
        let failing = Arc::new(AtomicBool::new(true));
        let flag = Arc::clone(&failing);
        let readiness = Readiness::new(vec![Box::new(CheckFn::new("policy", move || {
            if flag.load(Ordering::Relaxed) {
                Err("broken".to_owned())
            } else {
                Ok(())
            }
        }))]);
        let report = readiness.report();
        assert!(!report.ready);
        assert!(report.lines[0].starts_with("FAIL: listeners"), "{report:?}");
        readiness.set_serving(true);
        let report = readiness.report();
        assert!(!report.ready);
        assert_eq!(report.lines, ["ok: listeners", "FAIL: policy: broken"]);
        failing.store(false, Ordering::Relaxed);
        assert!(readiness.report().ready);
    }

    #[test]
    fn the_data_dir_probe_writes_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let check = DataDirWritable::new(dir.path().to_owned());
        assert_eq!(check.check(), Ok(()));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let missing = DataDirWritable::new(dir.path().join("gone"));
        let error = missing.check().unwrap_err();
        assert!(error.contains("cannot write to data_dir"), "{error}");
    }
}
