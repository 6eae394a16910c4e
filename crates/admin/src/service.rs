//! The running service as the admin listener shows it, wired in one place: the
//! collectors of `/metrics` (visit log, policy reloads, proxy authentication; then,
//! once the proxy is bound, the proxy's counters, the policy's size and the alerts),
//! the checks behind `/readyz` (the policy file in force, the data directory taking
//! writes), the technicians' health page figures, and the admin web interface's
//! access to the policy file, the live snapshot and the reload request. Collectors and
//! the health page read the counters the components keep anyway, when asked.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use safegate_proxy::PolicyHandle;
use safegate_proxy::auth::Authenticator;
use safegate_proxy::metrics::ProxyMetrics;
use safegate_reload::ReloadCounters;
use safegate_store::password::CheckPool;
use safegate_store::{Store, VisitLogStats};
use tokio::sync::Notify;

use crate::AdminConfig;
use crate::health::{CheckFn, Readiness, StoreWritable};
use crate::metrics::{
    AlertCollector, AlertCounters, ListFeedSource, Metrics, PasswordCheckCollector,
    PolicyReloadCollector, PolicyReloadCounts, PolicyReloadSource, PolicySizeCollector,
    ProxyAuthCollector, ProxyAuthCounts, ProxyAuthSource, ProxyCollector, VisitLogCollector,
};
use crate::ui::policy_edit::PolicyFile;
use crate::ui::rules::PolicyAccess;
use crate::ui::{HealthFigures, HealthSource, SessionLimits, WebSettings, WebState};

/// A collector could not be made or registered; names which.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct ExportError {
    /// Which metrics.
    pub what: &'static str,
    /// What prometheus said.
    #[source]
    pub source: prometheus::Error,
}

fn named<T>(what: &'static str, result: prometheus::Result<T>) -> Result<T, ExportError> {
    result.map_err(|source| ExportError { what, source })
}

/// The registry with the collectors that exist before the proxy is bound. With the
/// visit log off (`visit_log` none) its metrics are exported as zeros (and
/// `safegate_visit_log_enabled 0`), so dashboards and alerts need no special case.
pub fn service_metrics(
    version: &str,
    visit_log: Option<Arc<VisitLogStats>>,
    reloads: Arc<dyn PolicyReloadSource>,
    auth: Arc<Authenticator>,
) -> Result<Metrics, ExportError> {
    let metrics = named("metrics", Metrics::new(version))?;
    let visit_log = named("visit log metrics", VisitLogCollector::new(visit_log))?;
    named("visit log metrics", metrics.register(Box::new(visit_log)))?;
    let reloads = named("policy reload metrics", PolicyReloadCollector::new(reloads))?;
    named("policy reload metrics", metrics.register(Box::new(reloads)))?;
    let checks = PasswordCheckCollector::new(Arc::clone(auth.check_pool()));
    let checks = named("password check metrics", checks)?;
    named("password check metrics", metrics.register(Box::new(checks)))?;
    let auth = named("proxy auth metrics", ProxyAuthCollector::new(auth))?;
    named("proxy auth metrics", metrics.register(Box::new(auth)))?;
    Ok(metrics)
}

/// Registers the proxy's, the policy's and the alerts' collectors, once the proxy is
/// bound; returns the alert counters the alert dispatcher counts into (every kind is
/// exported at 0 before the first alert).
pub fn register_proxy_metrics(
    metrics: &Metrics,
    proxy: Arc<ProxyMetrics>,
    policy: &PolicyHandle,
) -> Result<Arc<AlertCounters>, ExportError> {
    let proxy = named("proxy metrics", ProxyCollector::new(proxy))?;
    named("proxy metrics", metrics.register(Box::new(proxy)))?;
    let policy = named(
        "policy metrics",
        PolicySizeCollector::new(Arc::clone(policy)),
    )?;
    named("policy metrics", metrics.register(Box::new(policy)))?;
    let alerts = Arc::new(AlertCounters::default());
    let collector = named("alert metrics", AlertCollector::new(Arc::clone(&alerts)))?;
    named("alert metrics", metrics.register(Box::new(collector)))?;
    Ok(alerts)
}

/// What `/readyz` checks besides the listeners: the policy file in force (a failed
/// reload of `policy_file` makes SafeGate not ready), its lists (a list file refused
/// at the last reload names the list, the file and why) and the store taking writes
/// (the visit-log writer, when `visit_log` is on, and `data_dir`), and what else the
/// service writes (the policy file and its folder, the reports' folder).
pub fn service_readiness(
    policy_file: PathBuf,
    data_dir: PathBuf,
    reloads: Arc<ReloadCounters>,
    visit_log: Option<Arc<VisitLogStats>>,
    feeds: Option<Arc<dyn ListFeedSource>>,
) -> Arc<Readiness> {
    let policy_file_for_writes = policy_file.clone();
    let counters = Arc::clone(&reloads);
    let lists_check = CheckFn::new("lists", move || {
        let refused = counters.refused_lists();
        if refused.is_empty() {
            return Ok(());
        }
        let named: Vec<String> = refused.iter().map(ToString::to_string).collect();
        Err(format!(
            "refused {}; the previous lists stay in force: replace the file with a good \
             list and reload",
            named.join("; ")
        ))
    });
    let policy_check = CheckFn::new("policy", move || {
        if reloads.policy_reloads().last_failed {
            return Err(format!(
                "the last reload of {} failed, so an older policy is in force: correct the \
                 file (SafeGate's log gives the line and column) and reload",
                policy_file.display()
            ));
        }
        Ok(())
    });
    let written = crate::written::written_paths(&data_dir, &policy_file_for_writes);
    let written_check = CheckFn::new("writable", move || crate::written::check_all(&written));
    let mut checks: Vec<Box<dyn crate::health::ReadinessCheck>> = vec![
        Box::new(policy_check),
        Box::new(lists_check),
        Box::new(StoreWritable::new(data_dir, visit_log)),
        Box::new(written_check),
    ];
    if let Some(feeds) = feeds {
        // A stale list is worth a look but the proxy still filters: a warning only.
        checks.push(Box::new(crate::health::WarnFn::new(
            "list feeds",
            move || {
                let stale = feeds.list_feeds().stale;
                (!stale.is_empty()).then(|| stale.join("; "))
            },
        )));
    }
    Arc::new(Readiness::new(checks))
}

/// The reload outcomes for `/metrics` and `/readyz`.
impl PolicyReloadSource for ReloadCounters {
    fn policy_reloads(&self) -> PolicyReloadCounts {
        PolicyReloadCounts {
            succeeded: self.succeeded.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            last_failed: self.last_failed.load(Ordering::Relaxed),
        }
    }

    fn list_refusals(&self) -> Vec<(String, u64)> {
        ReloadCounters::list_refusals(self)
    }
}

/// The authenticator's counters for `/metrics`.
impl ProxyAuthSource for Authenticator {
    fn proxy_auth(&self) -> ProxyAuthCounts {
        let stats = self.stats();
        ProxyAuthCounts {
            cache_hits: stats.cache_hits,
            verified: stats.verified,
            failed: stats.failed,
            rate_limited: stats.rate_limited,
            challenged: stats.challenged,
            busy: stats.busy,
            users: self.users().len() as u64,
            cached_credentials: self.cached_credentials() as u64,
            portal_logins: stats.portal_logins,
            portal_sessions: self.portal_sessions() as u64,
            concurrent_logins: stats.concurrent_logins,
            directory_unreachable: stats.directory_unreachable,
        }
    }
}

/// What the health page reads.
pub struct ServiceHealth {
    /// `/readyz`'s checks.
    pub readiness: Arc<Readiness>,
    /// Listener names and addresses.
    pub listeners: Vec<(String, SocketAddr)>,
    /// The live policy.
    pub policy: PolicyHandle,
    /// Reload outcomes.
    pub reloads: Arc<ReloadCounters>,
    /// The database.
    pub store: Store,
    /// The visit-log writer's counters, when the visit log is on.
    pub visit_log: Option<Arc<VisitLogStats>>,
    /// The list feeds' cached figures, when feeds are configured.
    pub feeds: Option<Arc<dyn crate::metrics::ListFeedSource>>,
}

/// Each feed (every `failures` label is a configured feed) and the age of its oldest
/// installed list (`ages` labels are `feed` or `feed/category`).
fn list_ages(figures: &crate::metrics::ListFeedFigures) -> Vec<(String, Option<u64>)> {
    figures
        .failures
        .iter()
        .map(|(feed, _)| {
            let oldest = figures
                .ages
                .iter()
                .filter(|(label, _)| {
                    label == feed
                        || label
                            .strip_prefix(feed.as_str())
                            .is_some_and(|rest| rest.starts_with('/'))
                })
                .map(|(_, age)| *age as u64)
                .max();
            (feed.clone(), oldest)
        })
        .collect()
}

impl HealthSource for ServiceHealth {
    fn health(&self) -> HealthFigures {
        let report = self.readiness.report();
        let snapshot = self.policy.load();
        let last_error = self.reloads.last_error();
        let visit_log = self.visit_log.as_ref().map(|stats| stats.snapshot());
        let feeds = self
            .feeds
            .as_ref()
            .map(|feeds| feeds.list_feeds())
            .unwrap_or_default();
        HealthFigures {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ready: report.ready,
            not_ready_because: report
                .lines
                .iter()
                .filter(|line| !line.starts_with("ok"))
                .cloned()
                .collect::<Vec<_>>()
                .join("; "),
            listeners: self
                .listeners
                .iter()
                .map(|(name, addr)| (name.clone(), addr.to_string()))
                .collect(),
            policy_state: if self.reloads.last_failed.load(Ordering::Relaxed) {
                "the last reload was refused: the previous policy stays live".to_owned()
            } else {
                format!(
                    "loaded ({} reloads, {} refused since start)",
                    self.reloads.succeeded.load(Ordering::Relaxed),
                    self.reloads.failed.load(Ordering::Relaxed)
                )
            },
            last_reload_error: last_error,
            list_sizes: snapshot
                .stats()
                .categories
                .iter()
                .map(|c| (c.name.clone(), (c.domains + c.urls + c.expressions) as u64))
                .collect(),
            store_bytes: self.store.size_on_disk().unwrap_or(0),
            queue_depth: visit_log.map_or(0, |s| s.queue_depth),
            dropped_records: visit_log.map_or(0, |s| s.dropped),
            list_ages: list_ages(&feeds),
            stale_lists: feeds.stale,
        }
    }
}

/// The web interface's access to the policy: the file `policy_file`, the live
/// snapshot `policy`, and `reload_now` to ask for a reload.
pub fn policy_access(
    policy_file: PathBuf,
    policy: PolicyHandle,
    reload_now: Arc<Notify>,
) -> PolicyAccess {
    PolicyAccess {
        file: PolicyFile::new(policy_file),
        live: policy,
        reload: reload_now,
    }
}

/// The web interface's state for the running service: `policy` is its access to the
/// policy file, the live snapshot and the reload request; sign-in passwords are
/// checked through `password_checks`, the pool the proxy uses too.
pub fn web_state(
    admin: &AdminConfig,
    store: Store,
    health: ServiceHealth,
    policy: PolicyAccess,
    reports_dir: PathBuf,
    password_checks: Arc<CheckPool>,
) -> Arc<WebState> {
    let web = WebState::new(
        store,
        WebSettings {
            sessions: SessionLimits {
                idle: admin.session_idle,
                absolute: admin.session_max,
            },
            secure_cookies: admin.secure_cookies,
            body_read_timeout: admin.body_read_timeout,
            require_2fa: admin.require_2fa,
        },
        Arc::new(health),
        Some(policy),
        Some(reports_dir),
        password_checks,
    );
    if let Some(config) = &admin.oidc {
        match crate::ui::oidc::Oidc::new(config) {
            Ok(oidc) => web.use_oidc(oidc),
            Err(error) => tracing::error!(%error, "sign-in with the school account is off"),
        }
    }
    web
}
