//! Tells the technician when the school directory (`[auth.ldap]`) cannot be reached:
//! the proxy counts directory log-ins that found no server answering, and this task
//! raises one system notice when that count grows, again at most hourly while it goes
//! on (a log-in verified earlier keeps working meanwhile, others are refused).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use safegate_proxy::auth::Authenticator;
use safegate_safeguarding::delivery::SystemNotice;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// How often the count is looked at.
const LOOK_EVERY: Duration = Duration::from_secs(5);

/// Least time between two notices.
const NOTICE_EVERY: Duration = Duration::from_secs(3600);

/// Starts the watch (only worth it with `[auth.ldap]` set).
pub fn spawn(
    auth: Arc<Authenticator>,
    notices: Option<mpsc::Sender<SystemNotice>>,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        let mut seen = auth.stats().directory_unreachable;
        let mut last_notice: Option<Instant> = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(LOOK_EVERY) => {}
            }
            let now = auth.stats().directory_unreachable;
            let quiet = last_notice.is_none_or(|at| at.elapsed() >= NOTICE_EVERY);
            if now > seen && quiet {
                notify(now - seen, notices.as_ref());
                last_notice = Some(Instant::now());
                seen = now;
            } else if quiet {
                seen = now;
            }
        }
    });
}

fn notify(failed: u64, notices: Option<&mpsc::Sender<SystemNotice>>) {
    let summary = format!(
        "The school directory (auth.ldap) cannot be reached: {failed} directory log-in(s) \
         could not be checked. People who logged in within auth.ldap.cache_ttl keep \
         browsing; others are refused (or get auth.ldap.unreachable_role). Check the \
         servers in auth.ldap.servers and SafeGate's log."
    );
    warn!("{summary}");
    let notice = SystemNotice {
        kind: "directory_unreachable",
        summary,
        at_unix_micros: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
    };
    if let Some(notices) = notices
        && notices.try_send(notice).is_err()
    {
        warn!("system notice queue full: a notice was not sent");
    }
}
