//! `safegate report weekly`, the part that runs where the database is: the
//! [`ReportRequest`] sent over the control socket, and [`execute`], which gathers the
//! week's figures and sends them back as JSON. The command line writes the files, so
//! they belong to the person who ran it.

use std::path::{Path, PathBuf};

use safegate_policy::Policy;
use safegate_report::{GatherOptions, IsoWeek, Pseudonymiser, WeeklyReport};
use safegate_store::Store;
use serde::{Deserialize, Serialize};

use crate::error::CommandError;

/// A report request, as sent over the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportRequest {
    /// ISO week, `2026-W47`.
    pub week: String,
    /// Pseudonymise people.
    pub pseudonymise: bool,
    /// The policy file (time zone, phrase lists, categories, core hours).
    pub policy_file: PathBuf,
    /// SafeGate's data directory (the pseudonym key).
    pub data_dir: PathBuf,
}

impl ReportRequest {
    /// What the request asks, for the service's log.
    pub fn describe(&self) -> String {
        format!(
            "report weekly week={}{}",
            self.week,
            if self.pseudonymise {
                " pseudonymised"
            } else {
                ""
            }
        )
    }
}

/// Why a week's report could not be gathered.
#[derive(Debug, thiserror::Error)]
pub enum GatherError {
    /// The policy file does not load.
    #[error("policy {}", path.display())]
    Policy {
        /// The policy file.
        path: PathBuf,
        /// Why.
        source: Box<safegate_policy::PolicyError>,
    },
    /// The pseudonym key or the database failed.
    #[error(transparent)]
    Report(#[from] safegate_report::ReportError),
}

/// Gathers one week's report from an open store.
pub fn make_report(
    store: &Store,
    policy_file: &Path,
    data_dir: &Path,
    week: IsoWeek,
    pseudonymise: bool,
) -> Result<WeeklyReport, GatherError> {
    let policy = Policy::load(policy_file).map_err(|source| GatherError::Policy {
        path: policy_file.to_path_buf(),
        source: Box::new(source),
    })?;
    let pseudonymiser = if pseudonymise {
        Some(Pseudonymiser::load_or_create(data_dir)?)
    } else {
        None
    };
    let timezone = policy.timezone().iana_name().unwrap_or("UTC").to_owned();
    let report = safegate_report::gather(
        store,
        &policy,
        &timezone,
        week,
        &GatherOptions {
            pseudonymiser,
            generated_at_unix_micros: 0,
        },
    )?;
    Ok(report)
}

/// Does a report request on the open database: (the report as JSON, log summary).
pub fn execute(store: &Store, request: &ReportRequest) -> Result<(Vec<u8>, String), CommandError> {
    let week = IsoWeek::parse(&request.week).map_err(|e| CommandError::Refused(e.to_string()))?;
    let report = make_report(
        store,
        &request.policy_file,
        &request.data_dir,
        week,
        request.pseudonymise,
    )
    .map_err(|e| CommandError::Refused(crate::error_chain(&e)))?;
    let bytes = serde_json::to_vec(&report).map_err(|e| CommandError::Refused(e.to_string()))?;
    Ok((
        bytes,
        format!(
            "report {} gathered ({} requests{})",
            report.week,
            report.summary.requests,
            if report.pseudonymised {
                ", pseudonymised"
            } else {
                ""
            }
        ),
    ))
}
