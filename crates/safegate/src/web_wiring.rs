//! Connects the admin web interface (`safegate_admin::ui`) to the running service: the
//! technicians' health figures, the policy file and live snapshot for the rules pages,
//! and the reload request the rules pages send after a change.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use safegate_admin::Readiness;
use safegate_admin::ui::policy_edit::PolicyFile;
use safegate_admin::ui::rules::PolicyAccess;
use safegate_admin::ui::{HealthFigures, HealthSource, WebSettings, WebState};
use safegate_proxy::PolicyHandle;
use safegate_store::{Store, VisitLogStats};
use tokio::sync::Notify;

use crate::policy_reload::ReloadCounters;

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
}

impl HealthSource for ServiceHealth {
    fn health(&self) -> HealthFigures {
        let report = self.readiness.report();
        let snapshot = self.policy.load();
        let last_error = self.reloads.last_error();
        let visit_log = self.visit_log.as_ref().map(|stats| stats.snapshot());
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
        }
    }
}

/// The web interface's state for the running service.
pub fn web_state(
    admin: &safegate_admin::AdminConfig,
    store: Store,
    health: ServiceHealth,
    policy_file: PathBuf,
    policy: PolicyHandle,
    reload_now: Arc<Notify>,
    reports_dir: PathBuf,
) -> Arc<WebState> {
    WebState::new(
        store,
        WebSettings {
            sessions: safegate_admin::ui::SessionLimits {
                idle: admin.session_idle,
                absolute: admin.session_max,
            },
            secure_cookies: admin.secure_cookies,
        },
        Arc::new(health),
        Some(PolicyAccess {
            file: PolicyFile::new(policy_file),
            live: policy,
            reload: reload_now,
        }),
        Some(reports_dir),
    )
}
