//! Tells the technician when the school directory (`[auth.ldap]`) cannot be reached:
//! the proxy counts directory log-ins that found no server answering, and this task
//! raises one system notice when that count grows, again at most hourly while it goes
//! on (a log-in verified earlier keeps working meanwhile, others are refused).

use std::sync::Arc;
use std::time::{Duration, Instant};

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
        at_unix_micros: safegate_control::dispatch::now_micros(),
    };
    if let Some(notices) = notices
        && notices.try_send(notice).is_err()
    {
        warn!("system notice queue full: a notice was not sent");
    }
}

/// `safegate doctor`'s directory check (`[auth.ldap]`): every server is connected to
/// and the search account binds; one answering server is enough (OK, with a WARN
/// line naming any that does not), none is a FAIL.
pub fn doctor_finding(config: &safegate_proxy::auth::LdapConfig) -> crate::finding::Finding {
    use crate::finding::Finding;
    let fix = "check auth.ldap.servers (ldaps:// and the port), ca_file (the CA that \
               signed the servers' certificates), bind_dn and its password; SafeGate's \
               log names each failed log-in";
    let directory = match safegate_proxy::auth::Directory::new(config) {
        Ok(directory) => directory,
        Err(error) => return Finding::fail("directory", format!("auth.ldap: {error}"), fix),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return Finding::fail("directory", format!("cannot check: {error}"), fix),
    };
    let results = runtime.block_on(directory.probe());
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(server, result)| result.as_ref().err().map(|why| format!("{server}: {why}")))
        .collect();
    let answered: Vec<&str> = results
        .iter()
        .filter(|(_, result)| result.is_ok())
        .map(|(server, _)| server.as_str())
        .collect();
    match (answered.is_empty(), failed.is_empty()) {
        (false, true) => Finding::ok(
            "directory",
            format!(
                "{} answered; the search account is accepted",
                answered.join(", ")
            ),
        ),
        (false, false) => Finding::warn(
            "directory",
            format!(
                "{} answered, but not {} (failover has no spare)",
                answered.join(", "),
                failed.join("; ")
            ),
            fix,
        ),
        (true, _) => Finding::fail(
            "directory",
            format!("no directory server answered: {}", failed.join("; ")),
            fix,
        ),
    }
}
