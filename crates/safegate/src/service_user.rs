//! The account the service runs as, for commands a technician runs as root that must
//! see or make files as the service would: `safegate doctor` checks with its rights, and
//! `safegate setup` makes the policy, the users and the CA owned by it. The account is
//! the installed systemd unit's `User=`, else the owner of `data_dir`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use anyhow::{Context, Result};

/// Set in the environment of a command re-run as the service's user, so it does not
/// try again.
const RERUN_MARK: &str = "SAFEGATE_AS_SERVICE_USER";

/// Where a packaged or hand-installed unit file may be.
const UNIT_FILES: [&str; 3] = [
    "/etc/systemd/system/safegate.service",
    "/usr/lib/systemd/system/safegate.service",
    "/lib/systemd/system/safegate.service",
];

/// The service's account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceUser {
    /// Its name, for messages.
    pub name: String,
    /// Its user id.
    pub uid: u32,
    /// Its primary group.
    pub gid: u32,
}

/// The installed unit file, if any.
pub fn installed_unit() -> Option<PathBuf> {
    UNIT_FILES.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// The value of `key=` in a unit file's text (the last one wins, as in systemd).
pub fn unit_setting<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .filter_map(|line| line.trim().strip_prefix(key)?.strip_prefix('='))
        .map(str::trim)
        .next_back()
}

/// Every value of `key=` in a unit file's text, split on spaces (for
/// `ReadWritePaths=` and the like, which may be given more than once).
pub fn unit_settings(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|line| line.trim().strip_prefix(key)?.strip_prefix('='))
        .flat_map(|value| value.split_whitespace().map(str::to_owned))
        .collect()
}

/// The account the service runs as, when this process runs as root and that account
/// is another one; `None` when not root, or when neither the unit (if it runs this
/// configuration) nor the owner of `data_dir` says.
pub fn when_root(config: &Path, data_dir: &Path) -> Option<ServiceUser> {
    if !rustix::process::geteuid().is_root() || std::env::var_os(RERUN_MARK).is_some() {
        return None;
    }
    let from_unit = installed_unit()
        .and_then(|unit| std::fs::read_to_string(unit).ok())
        .filter(|text| unit_config(text).is_some_and(|used| same_file(&used, config)))
        .and_then(|text| unit_setting(&text, "User").map(str::to_owned))
        .and_then(|name| nix::unistd::User::from_name(&name).ok().flatten());
    let user = match from_unit {
        Some(user) => user,
        None => {
            use std::os::unix::fs::MetadataExt;
            let owner = std::fs::metadata(data_dir).ok()?.uid();
            nix::unistd::User::from_uid(owner.into()).ok().flatten()?
        }
    };
    (!user.uid.is_root()).then(|| ServiceUser {
        name: user.name,
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
    })
}

/// The configuration file a unit's `ExecStart=` passes with `--config`.
pub fn unit_config(unit: &str) -> Option<PathBuf> {
    let exec = unit_setting(unit, "ExecStart")?;
    let mut words = exec.split_whitespace();
    let used = words
        .by_ref()
        .find(|w| *w == "--config")
        .and(words.next())?;
    Some(PathBuf::from(used.trim_matches(['\'', '"'])))
}

/// Whether two paths name the same file (or, where either is missing, are equal).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Run as root for a service that runs as another user: says so (`doing`, e.g.
/// "Checking", then who, then `why`), runs this same command again as that user and
/// returns its outcome. `None`: carry on in this process.
pub fn rerun_if_root(
    config: &Path,
    data_dir: &Path,
    doing: &str,
    why: &str,
) -> Option<Result<ExitStatus>> {
    let user = when_root(config, data_dir)?;
    println!(
        "{doing} as {} (uid {}), the user SafeGate runs as, {why}.",
        user.name, user.uid
    );
    Some(rerun_as(&user))
}

/// Runs this same command again as `user` (same arguments, standard input and output)
/// and waits for it. Its supplementary groups are dropped, as for the service.
pub fn rerun_as(user: &ServiceUser) -> Result<ExitStatus> {
    use std::os::unix::process::CommandExt;
    let program = std::env::current_exe().context("cannot find the safegate program")?;
    Command::new(&program)
        .args(std::env::args_os().skip(1))
        .uid(user.uid)
        .gid(user.gid)
        .env(RERUN_MARK, &user.name)
        .status()
        .with_context(|| {
            format!(
                "cannot run {} as {} (uid {})",
                program.display(),
                user.name,
                user.uid
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_settings_are_read_as_systemd_reads_them() {
        let unit = "[Service]\nUser=nobody\nUser=safegate\nReadWritePaths=/var/lib/a /srv/b\n\
                    # ReadWritePaths=/etc\nReadWritePaths=/var/spool/c\n";
        assert_eq!(unit_setting(unit, "User"), Some("safegate"));
        assert_eq!(
            unit_settings(unit, "ReadWritePaths"),
            ["/var/lib/a", "/srv/b", "/var/spool/c"]
        );
        assert_eq!(unit_setting(unit, "Group"), None);
    }
}
