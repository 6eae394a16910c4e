//! Running a [`Request`] against an open [`Store`]: [`prepare`] does the database work
//! (everything that can fail for a reason other than writing), [`prepare_audited`]
//! adds the audit log entries the command needs, and [`execute`] writes the output.
//! The control server and a command line holding the database itself run exactly these
//! steps, so both print the same bytes.

use std::io::Write;

use safegate_store::{AuditAction, NewAuditEntry, Store};

use crate::error::{CommandError, ControlError};
use crate::protocol::{Output, Request};
use crate::users::{self, UsersFailure};
use crate::{alerts, audit, log, report};

/// Does the database work of a command (everything that can fail for a reason other
/// than writing).
pub fn prepare(store: &Store, request: &Request) -> Result<Output, CommandError> {
    let users = |output: Result<users::Output, UsersFailure>| -> Result<Output, CommandError> {
        Ok(Output::Users(output?))
    };
    match request {
        Request::LogQuery(query) => Ok(Output::Log(log::query(store, query)?)),
        Request::LogPurge(purge) => Ok(Output::Log(log::purge(store, purge)?)),
        Request::LogExport(export) => Ok(Output::Log(log::export(store, export)?)),
        Request::UsersAdd(add) => users(users::add(store, add)),
        Request::UsersList(list) => users(users::list(store, list)),
        Request::UsersPasswd(passwd) => users(users::passwd(store, passwd)),
        Request::UsersDisable(user) => users(users::set_disabled(store, user, true)),
        Request::UsersEnable(user) => users(users::set_disabled(store, user, false)),
        Request::UsersRemove(user) => users(users::remove(store, user)),
        Request::UsersUpdate(update) => users(users::update(store, update)),
        Request::UsersImport(import) => users(users::import(store, import)),
        Request::UsersSync(sync) => users(crate::users_sync::sync(store, sync)),
        Request::Alerts(alerts) => {
            let (bytes, summary) = alerts::execute(store, alerts)?;
            Ok(Output::Bytes(bytes, summary))
        }
        Request::ReportWeek(report) => {
            let (bytes, summary) = report::execute(store, report)?;
            Ok(Output::Bytes(bytes, summary))
        }
        Request::Audit(audit) => {
            let (bytes, summary) = audit::execute(store, audit)?;
            Ok(Output::Bytes(bytes, summary))
        }
    }
}

/// The name of the account with `uid`, from /etc/passwd (for the audit log), or
/// `uid N` when it has none.
pub fn account_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                let id = fields.nth(1)?;
                (id.parse::<u32>().ok()? == uid).then(|| name.to_owned())
            })
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// The wall clock in Unix microseconds (audit entries and records stamped here).
pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// What a command does that the audit log must record, and when: views of one
/// person's history are recorded before they are shown, alert status changes after
/// they are made.
fn audit_entry(request: &Request, actor: &str) -> Option<(bool, NewAuditEntry)> {
    let entry = |action, subject: String, detail: String, reason: Option<String>| NewAuditEntry {
        at_unix_micros: now_micros(),
        actor: format!("{actor} (command line)"),
        action,
        subject,
        detail,
        reason,
    };
    match request {
        Request::LogQuery(query) => query.user.as_ref().map(|user| {
            (
                true,
                entry(
                    AuditAction::HistoryViewed,
                    user.clone(),
                    request.describe(),
                    None,
                ),
            )
        }),
        Request::LogExport(export) => Some((
            true,
            entry(
                AuditAction::HistoryViewed,
                export.user.clone(),
                "subject access export (every record, JSON and CSV)".to_owned(),
                None,
            ),
        )),
        Request::Alerts(alerts::AlertsRequest::SetStatus {
            id,
            status,
            by,
            note,
            ..
        }) => Some((
            false,
            NewAuditEntry {
                actor: by.clone(),
                ..entry(
                    AuditAction::AlertStatus,
                    format!("alert {id}"),
                    format!("status: {}", status.as_str()),
                    note.clone(),
                )
            },
        )),
        // The account that asked (not the name it gave), as for other views.
        Request::Alerts(alerts::AlertsRequest::Export { id, by_number, .. }) => Some((
            false,
            entry(
                AuditAction::HistoryViewed,
                format!("alert {}{id}", if *by_number { "#" } else { "" }),
                format!(
                    "concern record of alert {}{id} exported",
                    if *by_number { "#" } else { "" }
                ),
                None,
            ),
        )),
        _ => None,
    }
}

/// [`prepare`], with the audit log written for the commands that need it; `actor`
/// is the account that asked.
pub fn prepare_audited(
    store: &Store,
    request: &Request,
    actor: &str,
) -> Result<Output, CommandError> {
    let audit = audit_entry(request, actor);
    if let Some((true, entry)) = &audit {
        store.append_audit(entry.clone())?;
    }
    let output = prepare(store, request)?;
    if let Some((false, entry)) = audit {
        store.append_audit(entry)?;
    }
    Ok(output)
}

/// Runs a command against an open store, writing its output to `out`. The service
/// runs the same two steps for the control socket.
pub fn execute(store: &Store, request: &Request, out: &mut dyn Write) -> Result<(), ControlError> {
    let actor = account_name(rustix::process::getuid().as_raw());
    let output = prepare_audited(store, request, &actor)?;
    output.write_to(out)?;
    out.flush()?;
    Ok(())
}
