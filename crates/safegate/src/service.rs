//! `safegate run`: binds the listeners, serves, and shuts down in order on
//! SIGTERM/SIGINT (stop accepting, drain within the grace period, exit 0).

use safegate_safeguarding::known_computers::KnownComputers;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use safegate_admin::metrics::{
    AlertCounters, ListFeedCollector, ListFeedSource, PolicyReloadSource,
};
use safegate_admin::service as admin_service;
use safegate_admin::{AdminServer, Readiness};
use safegate_proxy::PolicyHandle;
use safegate_proxy::auth::{Authenticator, store_users};
use safegate_proxy::tls::Decryption;
use safegate_proxy::{Drained, Proxy, ProxySettings};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use safegate_control::{ControlServer, retention};
use safegate_proxy::visit_record::{RecordClock, RecordSink, SharedSink};
use safegate_store::password::CheckPool;
use safegate_store::{
    Record, RecordBatch, ReviewQueue, Store, UsersWatch, VisitLogQueue, VisitLogStats, WhenFull,
    spawn_review_writer, spawn_visit_log_writer,
};

use crate::settings::Config;
use safegate_reload::ReloadCounters;

/// Review requests waiting for the database writer.
const REVIEW_QUEUE_DEPTH: usize = 1024;

/// Runs SafeGate until a termination signal.
pub fn run(config: Config) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("safegate")
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(serve(config));
    // A list feed download still running is abandoned (its staging folder with it)
    // rather than holding up the exit for up to its timeout.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    result
}

async fn serve(config: Config) -> Result<()> {
    // Watch the signals before announcing readiness, so a signal sent the moment the
    // listeners are logged is handled, not fatal.
    let mut signals = Signals::new()?;
    let config = crate::central_policy::at_start(config).await;
    let state = open_state(&config)?;
    let shutdown = CancellationToken::new();
    let bound = bind_listeners(&config, &state, &shutdown).await?;
    let running = start_tasks(&config, state, bound, &shutdown)?;
    signals.next().await;
    running.readiness.set_serving(false);
    info!(
        grace_seconds = config.proxy.shutdown_grace.as_secs(),
        "shutting down: no new connections, waiting for open requests and tunnels"
    );
    shutdown.cancel();
    tokio::spawn(async move {
        signals.next().await;
        warn!("second signal: exiting at once");
        std::process::exit(1);
    });
    running.shut_down().await
}

/// What start-up opens before anything listens: the data directory, the policy, the
/// authenticator, the database and its writers.
struct State {
    policy: PolicyHandle,
    auth: Arc<Authenticator>,
    /// The one bound on password checks, shared by the proxy and the admin sign-in.
    password_checks: Arc<CheckPool>,
    store: Store,
    users_watch: UsersWatch,
    reviews: ReviewQueue,
    review_writer: JoinHandle<()>,
    clock_offset_micros: i64,
    alert_batches: mpsc::Receiver<RecordBatch>,
    visit_log: VisitLog,
    reload_counters: Arc<ReloadCounters>,
    /// The export outbox's counters, when `[export.clickhouse]` is set.
    export: Option<Arc<safegate_export::ExportStats>>,
}

/// The visit log's side of the proxy, when `store.visit_log` is on.
struct VisitLog {
    records: Option<SharedSink>,
    writer: Option<JoinHandle<()>>,
    stats: Option<Arc<VisitLogStats>>,
}

/// Opens the state, in order: data_dir, policy, authenticator, database (and the
/// audit of the policy in force), users, the review and visit-log writers.
fn open_state(config: &Config) -> Result<State> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create data_dir {} (set data_dir to a writable directory)",
            config.data_dir.display()
        )
    })?;
    let policy = safegate_reload::load_initial(&config.policy.file, config.lists.checks())?;
    let password_checks = Arc::new(CheckPool::default());
    let auth = Arc::new(
        Authenticator::new(&config.auth, Arc::clone(&password_checks)).map_err(|problems| {
            let lines: Vec<String> = problems
                .iter()
                .map(|p| format!("{}: {}", p.key, p.message))
                .collect();
            anyhow::anyhow!("{}", lines.join("\n"))
        })?,
    );
    let store = Store::open_with_cache(&config.data_dir, config.store.cache_mib)
        .with_context(|| format!("data_dir {}", config.data_dir.display()))?;
    safegate_reload::audit_policy_file(&store, &config.policy.file);
    safegate_reload::audit_list_files(&store, &policy.load().stats().files);
    // The outbox is on before the first record is written, so none is missed.
    let export = match &config.export.clickhouse {
        Some(_) => {
            store
                .enable_outbox()
                .context("the export outbox (data_dir/db)")?;
            Some(Arc::new(safegate_export::ExportStats::new(store.clone())))
        }
        None => None,
    };
    let users_watch = store_users::start(&store, &auth)?;
    let (reviews, review_writer) = spawn_review_writer(store.clone(), REVIEW_QUEUE_DEPTH);
    let clock_offset_micros = crate::alerting::clock_offset_micros();
    let (alert_batches, alert_batches_rx) = crate::alerting::batch_queue();
    let visit_log = visit_log(config, &store, alert_batches);
    Ok(State {
        policy,
        auth,
        password_checks,
        store,
        users_watch,
        reviews,
        review_writer,
        clock_offset_micros,
        alert_batches: alert_batches_rx,
        visit_log,
        reload_counters: Arc::new(ReloadCounters::default()),
        export,
    })
}

/// Starts the visit-log writer (which offers its written batches to the alert
/// engine) when the visit log is on.
fn visit_log(config: &Config, store: &Store, alert_batches: mpsc::Sender<RecordBatch>) -> VisitLog {
    let (records, writer, stats) = if config.store.visit_log {
        let (queue, writer) = spawn_visit_log_writer(
            store.clone(),
            config.store.queue_capacity,
            config.store.flush_interval,
            Some(alert_batches),
        );
        let stats = Arc::clone(queue.stats());
        let refuse_when_full = config.store.when_full == WhenFull::RefuseTraffic;
        let sink: SharedSink = Arc::new(VisitLogSink {
            queue,
            refuse_when_full,
        });
        (Some(sink), Some(writer), Some(stats))
    } else {
        // No batches for the alert engine: it still takes log-in events.
        drop(alert_batches);
        (None, None, None)
    };
    VisitLog {
        records,
        writer,
        stats,
    }
}

/// The bound listeners and what `/readyz` reads (the admin server holds the metrics).
struct Bound {
    readiness: Arc<Readiness>,
    admin: AdminServer,
    admin_addr: SocketAddr,
    proxy: Proxy,
    alert_counters: Arc<AlertCounters>,
    feeds: Option<Arc<crate::feed_updates::FeedsHealth>>,
}

/// Names computers on visit records from `[devices]` (none when nothing is set).
fn computer_names(
    config: &Config,
    shutdown: &CancellationToken,
) -> Option<safegate_proxy::visit_record::ComputerNamer> {
    if !config.devices.any() {
        return None;
    }
    let known = KnownComputers::start(&config.devices, shutdown.child_token());
    Some(Arc::new(move |address| known.name(address)))
}

/// Binds the admin listener, then the proxy's (which refuses the admin's address).
async fn bind_listeners(
    config: &Config,
    state: &State,
    shutdown: &CancellationToken,
) -> Result<Bound> {
    let reloads: Arc<dyn PolicyReloadSource> = state.reload_counters.clone();
    let metrics = admin_service::service_metrics(
        env!("CARGO_PKG_VERSION"),
        state.visit_log.stats.clone(),
        Arc::clone(&reloads),
        state.auth.clone(),
    )?;
    let feeds = crate::feed_updates::FeedsHealth::new(&config.lists, &config.policy.file);
    let feed_source = feeds.clone().map(|f| -> Arc<dyn ListFeedSource> { f });
    let memory = crate::memory_metrics::MemoryCollector::new().context("memory metrics")?;
    metrics
        .register(Box::new(memory))
        .context("memory metrics")?;
    metrics
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .context("process metrics")?;
    if let Some(stats) = &state.export {
        let collector =
            safegate_export::ExportCollector::new(Arc::clone(stats)).context("export metrics")?;
        metrics
            .register(Box::new(collector))
            .context("export metrics")?;
    }
    if let Some(source) = &feed_source {
        let collector = ListFeedCollector::new(Arc::clone(source)).context("list feed metrics")?;
        metrics
            .register(Box::new(collector))
            .context("list feed metrics")?;
    }
    let readiness = admin_service::service_readiness(
        config.policy.file.clone(),
        config.data_dir.clone(),
        state.reload_counters.clone(),
        state.visit_log.stats.clone(),
        feed_source,
    );
    let admin = AdminServer::bind(&config.admin, metrics.clone(), Arc::clone(&readiness))
        .await
        .context("admin.listen")?;
    let admin_addr = admin.local_addr();
    let proxy = Proxy::bind(
        ProxySettings {
            proxy: &config.proxy,
            upstream: &config.upstream,
            pac: &config.pac,
            transparent: &config.transparent,
            reviews: Some(state.reviews.clone()),
            policy: Arc::clone(&state.policy),
            auth: Arc::clone(&state.auth),
            records: state.visit_log.records.clone(),
            record_clock: RecordClock::shifted(state.clock_offset_micros),
            computer_names: computer_names(config, shutdown),
            decryption: Decryption::from_data_dir(&config.data_dir, &config.upstream.extra_roots)
                .context("HTTPS decryption (the school CA in data_dir/ca)")?
                .map(Arc::new),
        },
        &[admin_addr],
    )
    .await
    .context("proxy.listen or transparent.*_listen")?;
    // The alert dispatcher counts raised alerts here (safegate_alerts_total{kind}).
    let alert_counters =
        admin_service::register_proxy_metrics(&metrics, proxy.metrics(), &state.policy)?;
    Ok(Bound {
        readiness,
        admin,
        admin_addr,
        proxy,
        alert_counters,
        feeds,
    })
}

/// Everything running, in the order it is stopped.
struct Running {
    readiness: Arc<Readiness>,
    store: Store,
    reloader: JoinHandle<()>,
    users_follower: JoinHandle<()>,
    control_task: Option<JoinHandle<()>>,
    retention_task: Option<JoinHandle<()>>,
    proxy_task: JoinHandle<Drained>,
    admin_task: JoinHandle<Result<(), safegate_admin::AdminError>>,
    review_writer: JoinHandle<()>,
    visit_log_writer: Option<JoinHandle<()>>,
    alerting: crate::alerting::Alerting,
}

/// Starts the background tasks and the listeners, then says SafeGate is ready.
fn start_tasks(
    config: &Config,
    state: State,
    bound: Bound,
    shutdown: &CancellationToken,
) -> Result<Running> {
    let State {
        policy,
        auth,
        password_checks,
        store,
        users_watch,
        reviews,
        review_writer,
        clock_offset_micros,
        alert_batches,
        visit_log,
        reload_counters,
        export,
    } = state;
    // The proxy holds its own handles on the queues; the writers end when it lets go.
    drop((reviews, visit_log.records));
    let Bound {
        readiness,
        admin,
        admin_addr,
        proxy,
        alert_counters,
        feeds,
    } = bound;
    let proxy_addr = proxy.local_addr();
    let (transparent_http, transparent_https) = proxy.transparent_addrs();
    let alerting = crate::alerting::start(
        config,
        &store,
        &policy,
        &auth,
        crate::alerting::Feeds {
            batches: alert_batches,
            clock_offset_micros,
            counters: alert_counters,
            visit_log: visit_log.stats.clone(),
        },
        shutdown,
    )?;
    if config.auth.ldap.is_some() {
        crate::directory_watch::spawn(
            Arc::clone(&auth),
            alerting.notices.clone(),
            shutdown.clone(),
        );
    }
    let directory = auth.directory().cloned();
    let users_follower =
        store_users::spawn_follower(store.clone(), users_watch, auth, shutdown.clone());
    let reload_now = Arc::new(tokio::sync::Notify::new());
    let mut listeners = vec![
        ("proxy".to_owned(), proxy_addr),
        ("admin".to_owned(), admin_addr),
    ];
    listeners.extend(transparent_http.map(|addr| ("transparent HTTP".to_owned(), addr)));
    listeners.extend(transparent_https.map(|addr| ("transparent HTTPS".to_owned(), addr)));
    // The reports hold people's names: the folder is the service's alone (0700).
    let reports_dir = config.data_dir.join("reports");
    if let Err(error) = safegate_report::make_private_dir(&reports_dir, true) {
        warn!("reports folder: {error}");
    }
    let web = admin_service::web_state(
        &config.admin,
        store.clone(),
        admin_service::ServiceHealth {
            readiness: Arc::clone(&readiness),
            listeners,
            policy: Arc::clone(&policy),
            reloads: Arc::clone(&reload_counters),
            store: store.clone(),
            visit_log: visit_log.stats,
            feeds: feeds.clone().map(|f| -> Arc<dyn ListFeedSource> { f }),
        },
        admin_service::policy_access(
            config.policy.file.clone(),
            Arc::clone(&policy),
            Arc::clone(&reload_now),
        ),
        reports_dir,
        password_checks,
    );
    if let Some(directory) = directory {
        web.use_directory(Arc::clone(&directory));
        crate::directory_sync::spawn_schedule(config, directory, store.clone(), shutdown.clone());
    }
    crate::central_policy::spawn(
        config,
        Arc::clone(&policy),
        Arc::clone(&reload_now),
        shutdown.clone(),
    );
    let reloader = safegate_reload::spawn_reloader(
        safegate_reload::Reloading {
            file: config.policy.file.clone(),
            watch: config.policy.watch,
            checks: config.lists.checks(),
        },
        policy,
        reload_counters,
        store.clone(),
        Arc::clone(&reload_now),
        shutdown.clone(),
    )?;
    spawn_feeds_and_export(
        config,
        (feeds, export),
        &store,
        &reload_now,
        &alerting,
        shutdown,
    )?;
    let control_task = start_control(config, &store, shutdown);
    let retention_task = (config.store.retention_days > 0)
        .then(|| retention::spawn(store.clone(), config.store.retention_days, shutdown.clone()));
    let admin_task =
        tokio::spawn(admin.run_with_web(safegate_admin::ui::router(web), shutdown.clone()));
    let proxy_task = tokio::spawn(proxy.run(shutdown.clone()));
    readiness.set_serving(true);
    announce_ready(admin_addr, proxy_addr, transparent_http, transparent_https);
    Ok(Running {
        readiness,
        store,
        reloader,
        users_follower,
        control_task,
        retention_task,
        proxy_task,
        admin_task,
        review_writer,
        visit_log_writer: visit_log.writer,
        alerting,
    })
}

/// The list feeds' updater and the trust's ClickHouse export with its backlog watch,
/// when configured.
fn spawn_feeds_and_export(
    config: &Config,
    (feeds, export): (
        Option<Arc<crate::feed_updates::FeedsHealth>>,
        Option<Arc<safegate_export::ExportStats>>,
    ),
    store: &Store,
    reload_now: &Arc<tokio::sync::Notify>,
    alerting: &crate::alerting::Alerting,
    shutdown: &CancellationToken,
) -> Result<()> {
    if let Some(feeds) = feeds {
        crate::feed_updates::spawn(
            feeds,
            Arc::clone(reload_now),
            alerting.notices.clone(),
            shutdown.clone(),
        );
    }
    if let (Some(stats), Some(clickhouse)) = (export, &config.export.clickhouse) {
        safegate_export::spawn(store, clickhouse, Arc::clone(&stats), shutdown.clone())
            .context("export.clickhouse")?;
        tokio::spawn(crate::alerting::watch_export(
            stats,
            clickhouse.backlog_alert,
            alerting.notices.clone(),
            shutdown.clone(),
        ));
    }
    Ok(())
}

/// The control socket comes after the listeners bound, so a start-up that fails
/// leaves no socket behind; `safegate log ...` uses it while this process holds the
/// database.
fn start_control(
    config: &Config,
    store: &Store,
    shutdown: &CancellationToken,
) -> Option<JoinHandle<()>> {
    match ControlServer::bind(&config.data_dir, store.clone()) {
        Ok(control) => {
            info!(socket = %control.path().display(), "control socket ready for `safegate log` and `safegate users` commands");
            Some(tokio::spawn(control.run(shutdown.clone())))
        }
        Err(err) => {
            error!(
                "CONTROL SOCKET NOT AVAILABLE: `safegate log` and `safegate users` commands cannot reach the database while SafeGate runs: {}",
                safegate_control::error_chain(&err)
            );
            None
        }
    }
}

fn announce_ready(
    admin_addr: SocketAddr,
    proxy_addr: SocketAddr,
    transparent_http: Option<SocketAddr>,
    transparent_https: Option<SocketAddr>,
) {
    info!("admin listening on {admin_addr}");
    if let Some(addr) = transparent_http {
        info!("transparent HTTP listening on {addr} (redirect port 80 here)");
    }
    if let Some(addr) = transparent_https {
        info!("transparent HTTPS listening on {addr} (redirect port 443 here)");
    }
    info!("proxy listening on {proxy_addr}");
    info!(
        version = env!("CARGO_PKG_VERSION"),
        "SafeGate ready: point browsers at http://{proxy_addr} or http://{proxy_addr}/proxy.pac"
    );
}

impl Running {
    /// Once shutdown was requested: waits (bounded) for each part in order, the
    /// writers last, then flushes the database.
    async fn shut_down(self) -> Result<()> {
        let _ = self.reloader.await;
        let _ = self.users_follower.await;
        if let Some(task) = self.control_task
            && tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
        {
            warn!("control socket did not close in time");
        }
        if let Some(task) = self.retention_task
            && tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .is_err()
        {
            warn!("visit log retention purge still running at exit");
        }
        // Cut-off connections may still hold the writers' queues; do not wait long then.
        let writer_wait = match self.proxy_task.await.context("proxy task")? {
            Drained::Complete => {
                info!("all requests finished");
                Duration::from_secs(10)
            }
            Drained::GraceExpired { open } => {
                warn!(open, "grace period over; closing what is still open");
                Duration::from_secs(1)
            }
        };
        if let Ok(Err(error)) = self.admin_task.await {
            warn!(%error, "admin listener ended with an error");
        }
        finish_writers(writer_wait, self.review_writer, self.visit_log_writer).await;
        self.alerting.finish().await;
        if let Err(error) = self.store.flush().await {
            warn!(%error, "cannot flush the database");
        }
        info!("SafeGate stopped");
        Ok(())
    }
}

/// Once the proxy has let go of its queue handles the writers drain what is left and
/// end; connections cut off by the grace period may still hold them, so the wait is
/// bounded.
async fn finish_writers(
    writer_wait: Duration,
    review_writer: JoinHandle<()>,
    visit_log_writer: Option<JoinHandle<()>>,
) {
    match tokio::time::timeout(writer_wait, review_writer).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => warn!("review writer ended abnormally"),
        Err(_) => warn!("review writer still busy at exit; queued review requests may be lost"),
    }
    if let Some(writer) = visit_log_writer {
        match tokio::time::timeout(writer_wait, writer).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => warn!("visit log writer ended abnormally"),
            Err(_) => warn!("visit log writer still busy at exit; queued records may be lost"),
        }
    }
}

/// SIGTERM and SIGINT, watched from start-up on.
struct Signals {
    terminate: Signal,
    interrupt: Signal,
}

impl Signals {
    fn new() -> Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate()).context("cannot watch SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("cannot watch SIGINT")?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => info!("SIGTERM received"),
            _ = self.interrupt.recv() => info!("SIGINT received"),
        }
    }
}

/// Hands the proxy's records, complete, to the visit log's queue.
struct VisitLogSink {
    queue: VisitLogQueue,
    /// `store.when_full = "refuse-traffic"`.
    refuse_when_full: bool,
}

impl RecordSink for VisitLogSink {
    fn submit(&self, record: Record) {
        // A full queue drops the record; the writer's counters show it.
        let _ = self.queue.submit(record);
    }

    fn refusing(&self) -> bool {
        self.refuse_when_full && !self.queue.stats().writable()
    }
}
