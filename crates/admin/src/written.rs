//! What the running service writes besides its database, checked with the service's
//! own user: `/readyz` (inside the service, so a systemd sandbox such as
//! `ProtectSystem=strict` counts) and `safegate doctor` (which runs as the service's
//! user). A policy file the service may not rewrite makes every rule edit in the web
//! interface fail, so it must show before a filter admin finds it.
//!
//! The checks use `access(2)`, which needs no file to be made: a probe file in the
//! policy's folder would wake the policy watcher.

use std::path::{Path, PathBuf};

use rustix::fs::{Access, AtFlags, CWD, accessat};
use rustix::io::Errno;

/// A file or folder the service writes, and what for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenPath {
    /// The path.
    pub path: PathBuf,
    /// File or folder.
    pub kind: WrittenKind,
    /// What fails when it cannot be written, in plain words.
    pub what_for: &'static str,
}

/// Whether a [`WrittenPath`] is a file or a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrittenKind {
    /// Rewritten in place or replaced.
    File,
    /// Files are made in it.
    Folder,
}

/// What the service writes outside its database: the policy file and its folder (rule
/// edits in the web interface write a new file there and rename it over the old one)
/// and the weekly reports' folder. `data_dir` itself is the store check's.
pub fn written_paths(data_dir: &Path, policy_file: &Path) -> Vec<WrittenPath> {
    const RULE_EDITS: &str = "rule edits in the admin web interface";
    let mut paths = vec![WrittenPath {
        path: policy_file.to_owned(),
        kind: WrittenKind::File,
        what_for: RULE_EDITS,
    }];
    if let Some(folder) = policy_file.parent().filter(|p| !p.as_os_str().is_empty()) {
        paths.push(WrittenPath {
            path: folder.to_owned(),
            kind: WrittenKind::Folder,
            what_for: RULE_EDITS,
        });
    }
    let reports = data_dir.join("reports");
    if reports.exists() {
        paths.push(WrittenPath {
            path: reports,
            kind: WrittenKind::Folder,
            what_for: "the weekly reports",
        });
    }
    paths
}

/// Why a [`WrittenPath`] cannot be written, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteProblem {
    /// What was found.
    pub detail: String,
    /// What to do about it.
    pub fix: String,
}

impl std::fmt::Display for WriteProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.detail, self.fix)
    }
}

impl WrittenPath {
    /// Whether this process (its effective user) may write it; the problem says why
    /// not and what to do. A path that does not exist yet passes: what makes it reports.
    pub fn check(&self) -> Result<(), WriteProblem> {
        let wanted = match self.kind {
            WrittenKind::File => Access::WRITE_OK,
            WrittenKind::Folder => Access::WRITE_OK | Access::EXEC_OK,
        };
        let path = self.path.display();
        match accessat(CWD, &self.path, wanted, AtFlags::EACCESS) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(Errno::ROFS) => Err(WriteProblem {
                detail: format!("{path} is read-only here, so {} fail", self.what_for),
                fix: "under systemd with ProtectSystem=strict only the unit's ReadWritePaths \
                      and StateDirectory may be written: keep the policy under \
                      /var/lib/safegate or add its folder to ReadWritePaths"
                    .to_owned(),
            }),
            Err(Errno::ACCESS | Errno::PERM) => Err(WriteProblem {
                detail: format!(
                    "SafeGate's user (uid {}) may not write {path}, so {} fail",
                    rustix::process::geteuid().as_raw(),
                    self.what_for
                ),
                fix: format!(
                    "give it to that user: chown -R {}:{} {path}",
                    rustix::process::geteuid().as_raw(),
                    rustix::process::getegid().as_raw()
                ),
            }),
            Err(other) => Err(WriteProblem {
                detail: format!("cannot tell whether {path} can be written ({other})"),
                fix: format!("check it by hand, or {} may fail", self.what_for),
            }),
        }
    }
}

/// Checks every path; the problems, one sentence each, joined.
pub fn check_all(paths: &[WrittenPath]) -> Result<(), String> {
    let problems: Vec<String> = paths
        .iter()
        .filter_map(|p| p.check().err())
        .map(|p| p.to_string())
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_policy_in_a_writable_folder_passes_and_lists_its_folder() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let policy = dir.path().join("policy.toml");
        std::fs::write(&policy, "").unwrap_or_else(|e| panic!("{e}"));
        let paths = written_paths(dir.path(), &policy);
        assert_eq!(paths.len(), 2, "{paths:?}");
        assert_eq!(check_all(&paths), Ok(()));
    }

    #[test]
    fn a_read_only_policy_file_is_named_with_the_fix() {
        // Root may write anything, so the mode bits only count for other users.
        if rustix::process::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let policy = dir.path().join("policy.toml");
        std::fs::write(&policy, "").unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o444))
            .unwrap_or_else(|e| panic!("{e}"));
        let Err(error) = check_all(&written_paths(dir.path(), &policy)) else {
            panic!("a read-only policy passed");
        };
        assert!(error.contains("may not write"), "{error}");
        assert!(error.contains("rule edits"), "{error}");
    }
}
