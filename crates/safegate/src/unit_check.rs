//! `safegate doctor`'s look at the installed systemd unit: the sandbox it sets
//! (`ProtectSystem=`, `ReadWritePaths=`, `ProtectHome=`) must leave writable what the
//! service writes, its `User=` must exist, and it should read the configuration
//! doctor checked. A policy outside `ReadWritePaths` under `ProtectSystem=strict` is
//! the classic: every rule edit in the web interface fails while the files' owners
//! look right.

use std::path::{Path, PathBuf};

use crate::finding::Finding;
use crate::service_user::{installed_unit, same_file, unit_config, unit_setting, unit_settings};
use crate::settings::Config;

const CHECK: &str = "systemd unit";

/// The findings for the installed unit; none when no unit is installed.
pub fn findings(config_path: &Path, config: &Config) -> Vec<Finding> {
    let Some(unit_path) = installed_unit() else {
        return Vec::new();
    };
    let Ok(unit) = std::fs::read_to_string(&unit_path) else {
        return vec![Finding::warn(
            CHECK,
            format!("cannot read {}", unit_path.display()),
            "run doctor as root, or check the unit by hand",
        )];
    };
    let unit_name = unit_path.display().to_string();
    let mut findings = Vec::new();
    if let Some(user) = unit_setting(&unit, "User")
        && nix::unistd::User::from_name(user).ok().flatten().is_none()
    {
        findings.push(Finding::fail(
            CHECK,
            format!("{unit_name} runs SafeGate as `{user}`, and no such user exists"),
            format!(
                "create it: useradd --system --home-dir /var/lib/safegate --shell \
                 /usr/sbin/nologin {user} (the package does this)"
            ),
        ));
    }
    if let Some(other) = other_config(&unit, &unit_name, config_path) {
        // The unit's sandbox and user are about another configuration.
        return vec![other];
    }
    let read_only = read_only_outside(&unit);
    let mut written = vec![("data_dir", config.data_dir.clone())];
    if let Some(folder) = config.policy.file.parent() {
        written.push(("the policy's folder", folder.to_owned()));
    }
    for (what, path) in written {
        let absolute = std::path::absolute(&path).unwrap_or(path);
        if let Some(reason) = read_only.why_read_only(&absolute) {
            findings.push(Finding::fail(
                CHECK,
                format!(
                    "{what} {} is read-only for the service: {reason} in {unit_name}",
                    absolute.display()
                ),
                "keep the policy and data under /var/lib/safegate (the package's layout), \
                 or add the folder to ReadWritePaths= in a drop-in (systemctl edit \
                 safegate)",
            ));
        }
    }
    if findings.is_empty() {
        findings.push(Finding::ok(
            CHECK,
            format!("{unit_name} lets the service write data_dir and the policy"),
        ));
    }
    findings
}

/// A WARN when the unit's `ExecStart` reads another configuration than doctor did.
fn other_config(unit: &str, unit_name: &str, checked: &Path) -> Option<Finding> {
    let used = unit_config(unit)?;
    (!same_file(&used, checked)).then(|| {
        Finding::warn(
            CHECK,
            format!(
                "{unit_name} starts SafeGate with {}, and doctor checked {}",
                used.display(),
                checked.display()
            ),
            format!("run `safegate doctor --config {}`", used.display()),
        )
    })
}

/// What a unit's sandbox leaves read-only.
struct Sandbox {
    /// `ProtectSystem=`: "strict", "full", "yes"/"true", or empty.
    protect_system: String,
    /// Writable despite `ProtectSystem=strict`.
    writable: Vec<PathBuf>,
    /// `ProtectHome=` hides or freezes /home, /root and /run/user.
    protect_home: bool,
}

fn read_only_outside(unit: &str) -> Sandbox {
    let mut writable: Vec<PathBuf> = unit_settings(unit, "ReadWritePaths")
        .iter()
        .map(|p| PathBuf::from(p.trim_start_matches(['-', '+'])))
        .collect();
    for (key, base) in [
        ("StateDirectory", "/var/lib"),
        ("CacheDirectory", "/var/cache"),
        ("LogsDirectory", "/var/log"),
        ("RuntimeDirectory", "/run"),
    ] {
        writable.extend(
            unit_settings(unit, key)
                .iter()
                .map(|name| Path::new(base).join(name)),
        );
    }
    writable.extend(["/tmp", "/var/tmp", "/dev/shm"].map(PathBuf::from));
    Sandbox {
        protect_system: unit_setting(unit, "ProtectSystem")
            .unwrap_or("")
            .to_ascii_lowercase(),
        writable,
        protect_home: unit_setting(unit, "ProtectHome")
            .is_some_and(|v| !matches!(v.to_ascii_lowercase().as_str(), "no" | "false")),
    }
}

impl Sandbox {
    /// Why `path` is read-only for the service, or `None` when it may be written.
    fn why_read_only(&self, path: &Path) -> Option<String> {
        if self.writable.iter().any(|w| path.starts_with(w)) {
            return None;
        }
        if self.protect_home
            && ["/home", "/root", "/run/user"]
                .iter()
                .any(|h| path.starts_with(h))
        {
            return Some("ProtectHome= hides home folders".to_owned());
        }
        let frozen: &[&str] = match self.protect_system.as_str() {
            "strict" => &["/"],
            "full" => &["/usr", "/boot", "/efi", "/etc"],
            "yes" | "true" => &["/usr", "/boot", "/efi"],
            _ => &[],
        };
        frozen.iter().any(|f| path.starts_with(f)).then(|| {
            format!(
                "ProtectSystem={} allows writes only under ReadWritePaths= ({})",
                self.protect_system,
                self.writable
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNIT: &str = "[Service]\nUser=safegate\nStateDirectory=safegate\n\
                        ProtectSystem=strict\nReadWritePaths=-/srv/safegate\nProtectHome=yes\n";

    #[test]
    fn strict_leaves_only_the_state_and_read_write_paths_writable() {
        let sandbox = read_only_outside(UNIT);
        assert_eq!(
            sandbox.why_read_only(Path::new("/var/lib/safegate/policy")),
            None
        );
        assert_eq!(sandbox.why_read_only(Path::new("/srv/safegate/x")), None);
        let reason = sandbox
            .why_read_only(Path::new("/etc/safegate/config"))
            .unwrap_or_default();
        assert!(reason.contains("ProtectSystem=strict"), "{reason}");
        assert!(reason.contains("/var/lib/safegate"), "{reason}");
        let home = sandbox
            .why_read_only(Path::new("/home/tech/policy"))
            .unwrap_or_default();
        assert!(home.contains("ProtectHome"), "{home}");
    }

    #[test]
    fn full_freezes_etc_and_usr_only() {
        let sandbox = read_only_outside("ProtectSystem=full\n");
        assert!(sandbox.why_read_only(Path::new("/etc/safegate")).is_some());
        assert_eq!(sandbox.why_read_only(Path::new("/srv/safegate")), None);
    }
}
