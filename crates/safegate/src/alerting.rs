//! The safeguarding side of `safegate run`, wired in one place: the alert engine
//! (fed by the visit-log writer's written batches and by the identity layer's
//! concurrent log-in events), alert delivery (webhook, e-mail; also the system notices
//! telling the technician the visit log cannot be written), and the weekly report
//! scheduler. None of it is on the proxy's path: the writer offers batches without
//! waiting, the log-in events are polled from the authenticator's event log.
//!
//! For tests only, the environment variable `SAFEGATE_CLOCK_OFFSET_SECS` shifts the
//! clock SafeGate stamps records with (and the scheduler's and log-in events'
//! clocks) by that many seconds, so an end-to-end test can replay a school week
//! through the real proxy. It is logged as a warning when set.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use safegate_admin::metrics::AlertCounters;
use safegate_proxy::PolicyHandle;
use safegate_proxy::auth::Authenticator;
use safegate_report::scheduler::Scheduler;
use safegate_safeguarding::delivery::SystemNotice;
use safegate_safeguarding::{
    AlertStats, ConcurrentLogin, EngineInputs, Mailer, PolicySource, delivery, spawn_alert_engine,
};
use safegate_store::{AlertKind, RecordBatch, Store, VisitLogStats};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::settings::Config;

/// Written batches waiting for the alert engine (each up to one flush interval's
/// records, at most `visit_log_writer::MAX_BATCH`); beyond it the writer counts them
/// as not observed and warns. Four: a few seconds of a school's traffic (the engine
/// keeps up with far more), while 64 held up to 500 MB under sustained overload.
pub const ENGINE_QUEUE: usize = 4;
/// How often the identity layer's concurrent log-in events are read.
const LOGIN_POLL: Duration = Duration::from_millis(500);
/// How long a concurrent log-in event waits before it is evaluated, so that the
/// visit log holds the requests that are its evidence (the writer flushes each second).
const LOGIN_EVIDENCE_DELAY: Duration = Duration::from_secs(2);
/// The test clock's environment variable.
pub const CLOCK_OFFSET_VAR: &str = "SAFEGATE_CLOCK_OFFSET_SECS";

/// The test clock offset in microseconds (0 unless `SAFEGATE_CLOCK_OFFSET_SECS` is
/// set).
pub fn clock_offset_micros() -> i64 {
    match std::env::var(CLOCK_OFFSET_VAR) {
        Ok(text) => match text.trim().parse::<i64>() {
            Ok(secs) => {
                warn!(
                    seconds = secs,
                    "{CLOCK_OFFSET_VAR} is set: SafeGate's clock is shifted (for tests only)"
                );
                secs.saturating_mul(1_000_000)
            }
            Err(_) => {
                warn!("{CLOCK_OFFSET_VAR} is not a whole number of seconds; ignored");
                0
            }
        },
        Err(_) => 0,
    }
}

/// The running pieces.
pub struct Alerting {
    engine: JoinHandle<()>,
    logins: JoinHandle<()>,
    delivery: Option<JoinHandle<()>>,
    scheduler: Option<JoinHandle<()>>,
    store_watch: Option<JoinHandle<()>>,
    /// The engine's counters (for `safegate_alerts_total{kind}`).
    pub stats: Arc<AlertStats>,
    /// The technician's system notices, when delivery is on.
    pub notices: Option<mpsc::Sender<SystemNotice>>,
}

/// What the rest of the service hands the alerting side.
pub struct Feeds {
    /// The visit-log writer's written batches ([`batch_queue`]).
    pub batches: mpsc::Receiver<RecordBatch>,
    /// The test clock's offset ([`clock_offset_micros`]).
    pub clock_offset_micros: i64,
    /// `safegate_alerts_total{kind}`.
    pub counters: Arc<AlertCounters>,
    /// The visit-log writer's state, watched for failures to tell the technician.
    pub visit_log: Option<Arc<VisitLogStats>>,
}

/// Computer names for alerts from `[devices]` (none when nothing is configured).
fn computer_names(config: &Config) -> Option<safegate_safeguarding::NameComputer> {
    if !config.devices.any() {
        return None;
    }
    let runtime = tokio::runtime::Handle::try_current().ok();
    let names = Arc::new(safegate_safeguarding::computers::ComputerNames::new(
        &config.devices,
        runtime,
    ));
    Some(Arc::new(move |address| names.name(address)))
}

/// The queue the visit-log writer offers its written batches to.
pub fn batch_queue() -> (mpsc::Sender<RecordBatch>, mpsc::Receiver<RecordBatch>) {
    mpsc::channel(ENGINE_QUEUE)
}

/// Starts the engine, delivery, the log-in poller and the scheduler; new alerts are
/// counted in `counters` (`safegate_alerts_total{kind}`).
pub fn start(
    config: &Config,
    store: &Store,
    policy: &PolicyHandle,
    auth: &Arc<Authenticator>,
    feeds: Feeds,
    shutdown: &CancellationToken,
) -> Result<Alerting> {
    let Feeds {
        batches,
        clock_offset_micros,
        counters,
        visit_log,
    } = feeds;
    let source: PolicySource = {
        let policy = Arc::clone(policy);
        Arc::new(move || policy.load_full())
    };
    let tz = policy.load().timezone().clone();
    let numbers: delivery::AlertNumbers = {
        let store = store.clone();
        Arc::new(move |id| store.alert_number(id).ok().flatten())
    };
    let delivery = delivery::spawn(&config.delivery, tz, numbers, shutdown.clone())?;
    let (delivery_queue, delivery_task, notices) = match delivery {
        Some(delivery) => {
            info!("alert delivery on (webhook and/or e-mail)");
            (
                Some(delivery.alerts),
                Some(delivery.task),
                Some(delivery.notices),
            )
        }
        None => (None, None, None),
    };
    let store_watch =
        visit_log.map(|stats| tokio::spawn(watch_store(stats, notices.clone(), shutdown.clone())));
    let (login_sender, login_receiver) = mpsc::channel(256);
    let logins = tokio::spawn(poll_logins(
        Arc::clone(auth),
        login_sender,
        clock_offset_micros,
        shutdown.clone(),
    ));
    let stats = Arc::new(AlertStats::default());
    let engine = spawn_alert_engine(
        store.clone(),
        Arc::clone(&source),
        EngineInputs {
            records: batches,
            logins: login_receiver,
            names: computer_names(config),
        },
        delivery_queue,
        Arc::clone(&stats),
        Some(Arc::new(move |kind: AlertKind| {
            counters.raised(kind.as_str());
        })),
    );
    let scheduler = if config.report.weekly {
        let mailer = Mailer::new(&config.delivery.smtp)?;
        Some(
            Scheduler {
                store: store.clone(),
                policy: source,
                config: config.report.clone(),
                reports_dir: config.data_dir.join("reports"),
                data_dir: config.data_dir.clone(),
                mailer,
                clock_offset_micros,
            }
            .spawn(shutdown.clone())?,
        )
    } else {
        None
    };
    Ok(Alerting {
        engine,
        logins,
        delivery: delivery_task,
        scheduler,
        store_watch,
        stats,
        notices,
    })
}

impl Alerting {
    /// Waits (bounded) for the pieces to finish once shutdown was requested and the
    /// visit-log writer has ended.
    pub async fn finish(self) {
        let _ = self.logins.await;
        if let Some(task) = self.store_watch {
            let _ = task.await;
        }
        let counts = self.stats.snapshot();
        info!(
            raised = counts.raised.iter().sum::<u64>(),
            folded = counts.folded,
            records = counts.records,
            "alert engine stopping"
        );
        if tokio::time::timeout(Duration::from_secs(10), self.engine)
            .await
            .is_err()
        {
            warn!("alert engine still busy at exit");
        }
        if let Some(task) = self.scheduler {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        if let Some(task) = self.delivery
            && tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
        {
            warn!("alert deliveries still running at exit");
        }
    }
}

/// How often the visit-log writer's state is looked at for [`watch_store`].
const STORE_WATCH: Duration = Duration::from_secs(1);

/// Tells the technician (the delivery's system notices, when delivery is on) when
/// the visit log stops being written and when it is written again. The writer's own
/// error line and `safegate_store_writable` say it too; this is the push.
async fn watch_store(
    stats: Arc<VisitLogStats>,
    notices: Option<mpsc::Sender<SystemNotice>>,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(STORE_WATCH);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut writable = true;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if stats.writable() == writable {
            continue;
        }
        writable = !writable;
        let (kind, summary) = match stats.failure() {
            Some(failure) => ("store_not_writable", failure.to_string()),
            None => {
                let lost = stats.snapshot().lost;
                (
                    "store_writable",
                    format!("the visit log is written again ({lost} records lost since start)"),
                )
            }
        };
        let notice = SystemNotice {
            kind,
            summary,
            at_unix_micros: now_micros(),
        };
        if let Some(notices) = &notices
            && notices.try_send(notice).is_err()
        {
            warn!("system notice queue full: a notice was not sent");
        }
    }
}

/// How often the export outbox's backlog is looked at for [`watch_export`].
const EXPORT_WATCH: Duration = Duration::from_secs(10);

/// Tells the technician when the export outbox holds more than `threshold` entries
/// (ClickHouse unreachable or too slow), and when it is back under half of that.
pub(crate) async fn watch_export(
    stats: Arc<safegate_export::ExportStats>,
    threshold: u64,
    notices: Option<mpsc::Sender<SystemNotice>>,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(EXPORT_WATCH);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut over = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let backlog = stats.backlog();
        let notice = if !over && backlog > threshold {
            over = true;
            warn!(
                backlog,
                threshold, "EXPORT BACKLOG: records wait for the trust's ClickHouse"
            );
            (
                "export_backlog",
                format!(
                    "{backlog} visit records and alerts wait to be sent to the trust's ClickHouse (more than {threshold}); they are kept on disk and sent when it takes them"
                ),
            )
        } else if over && backlog <= threshold / 2 {
            over = false;
            (
                "export_backlog_cleared",
                format!("the export to the trust's ClickHouse has caught up ({backlog} waiting)"),
            )
        } else {
            continue;
        };
        let notice = SystemNotice {
            kind: notice.0,
            summary: notice.1,
            at_unix_micros: now_micros(),
        };
        if let Some(notices) = &notices
            && notices.try_send(notice).is_err()
        {
            warn!("system notice queue full: a notice was not sent");
        }
    }
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Hands each new concurrent log-in event to the engine.
async fn poll_logins(
    auth: Arc<Authenticator>,
    sender: mpsc::Sender<ConcurrentLogin>,
    clock_offset_micros: i64,
    shutdown: CancellationToken,
) {
    let mut seen_until = SystemTime::now();
    let mut ticks = tokio::time::interval(LOGIN_POLL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let events = auth.concurrent_login_events();
        let mut latest = seen_until;
        // An event is passed on once the visit log holds both computers' requests
        // around it (the alert's evidence): after the writer's flush interval.
        let ripe = SystemTime::now()
            .checked_sub(LOGIN_EVIDENCE_DELAY)
            .unwrap_or(UNIX_EPOCH);
        for event in events
            .into_iter()
            .filter(|e| e.at > seen_until && e.at <= ripe)
        {
            latest = latest.max(event.at);
            let at = event
                .at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
            let login = ConcurrentLogin {
                at_unix_micros: u64::try_from(at.saturating_add(clock_offset_micros)).unwrap_or(0),
                user: event.user.to_string(),
                old_address: event.old_address,
                new_address: event.new_address,
                outcome: format!("{:?}", event.outcome).to_lowercase(),
            };
            // Waiting here holds up nothing but this poller (the identity layer keeps
            // its events): a class logging in on forty computers at once must not
            // overflow the queue and lose a real two-computer log-in.
            tokio::select! {
                () = shutdown.cancelled() => return,
                sent = sender.send(login) => if sent.is_err() {
                    warn!("alert engine stopped: a concurrent log-in event was not evaluated");
                    return;
                },
            }
        }
        seen_until = latest;
    }
}
