//! `safegate doctor`: checks what SafeGate needs before it can run (the
//! configuration, the policy and its lists, the CA for HTTPS decryption, the data
//! directory, the listeners' ports and the metrics token) and prints each check as
//! `OK`, `WARN` or `FAIL` with what to do. Exit status 1 when any check fails.
//!
//! It starts nothing and changes nothing, apart from a small probe file written to and
//! removed from the data directory. Run as root, it checks as the user the service
//! runs as ([`crate::service_user`]), since that user's rights are what count.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use safegate_proxy::tls::ca::{CA_CERT_FILE, CA_DIR, CA_KEY_FILE};

use crate::finding::{Finding, Level};
use crate::settings::{Config, ConfigArgs};

/// Free space below which the data directory is a failure.
const FAIL_BELOW_BYTES: u64 = 100 * 1024 * 1024;
/// Free space below which the data directory is a warning.
const WARN_BELOW_BYTES: u64 = 1024 * 1024 * 1024;

/// Runs every check and prints the findings; true when none failed.
pub fn run(args: &ConfigArgs) -> bool {
    if let Some(passed) = run_as_service_user(args) {
        return passed;
    }
    let findings = examine(&args.config, &args.set);
    let text = render(&findings);
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    !findings.iter().any(|f| f.level == Level::Fail)
}

/// The findings for the configuration at `path` with `overrides`.
pub fn examine(path: &Path, overrides: &[String]) -> Vec<Finding> {
    let config = match Config::load(path, overrides) {
        Ok(config) => config,
        Err(error) => {
            return vec![Finding::fail(
                "configuration",
                format!("{error:#}"),
                format!(
                    "correct the key(s) named above in {} (every key is documented in the \
                     shipped config/safegate.toml), then run `safegate doctor` again",
                    path.display()
                ),
            )];
        }
    };
    let mut findings = vec![Finding::ok(
        "configuration",
        format!(
            "{} (proxy on {}, admin on {}, data in {})",
            path.display(),
            config.proxy.listen,
            config.admin.listen,
            config.data_dir.display()
        ),
    )];
    findings.push(policy(&config.policy.file));
    findings.extend(running_lists(&config));
    findings.extend(crate::lists_command::doctor_findings(&config));
    findings.extend(data_dir(&config.data_dir));
    findings.extend(written(&config));
    findings.extend(crate::unit_check::findings(path, &config));
    findings.push(ca(&config.data_dir));
    if let Some(ldap) = &config.auth.ldap {
        findings.push(crate::directory_watch::doctor_finding(ldap));
    }
    findings.extend(listeners(&config));
    findings.extend(metrics_token(&config));
    findings.push(open_files(config.proxy.max_connections));
    findings
}

/// Run as root, the checks are only true for root: when the service runs as another
/// user (the installed unit's `User=`, or `data_dir`'s owner), doctor runs again as
/// that user and its outcome is returned. `None`: carry on here.
fn run_as_service_user(args: &ConfigArgs) -> Option<bool> {
    let config = Config::load(&args.config, &args.set).ok()?;
    let rerun = crate::service_user::rerun_if_root(
        &args.config,
        &config.data_dir,
        "Checking",
        "not as root",
    )?;
    match rerun {
        Ok(status) => Some(status.success()),
        Err(error) => {
            println!("WARN  {error:#}; checking as root instead");
            None
        }
    }
}

/// What the running service writes besides `data_dir` (the policy file and its folder
/// for web rule edits, the reports' folder), checked with this process's user.
fn written(config: &Config) -> Vec<Finding> {
    use safegate_admin::written::written_paths;
    const CHECK: &str = "writable";
    let paths = written_paths(&config.data_dir, &config.policy.file);
    let problems: Vec<Finding> = paths
        .iter()
        .filter_map(|p| p.check().err())
        .map(|problem| Finding::fail(CHECK, problem.detail, problem.fix))
        .collect();
    if !problems.is_empty() {
        return problems;
    }
    let names: Vec<String> = paths.iter().map(|p| p.path.display().to_string()).collect();
    vec![Finding::ok(
        CHECK,
        format!(
            "{} (rule edits in the web interface can be saved)",
            names.join(", ")
        ),
    )]
}

/// Whether the hard open-file limit leaves room for `proxy.max_connections` (SafeGate
/// raises its soft limit to the hard one at start). This is the limit doctor itself
/// runs under; a service manager may set another (systemd: `LimitNOFILE=`).
fn open_files(max_connections: usize) -> Finding {
    use safegate_proxy::open_files::{OpenFileLimit, needed};
    const CHECK: &str = "open files";
    let limit = OpenFileLimit::current();
    let hard = limit
        .hard
        .map_or_else(|| "unlimited".to_owned(), |hard| hard.to_string());
    if limit.hard_allows(max_connections) {
        return Finding::ok(CHECK, format!("hard limit {hard}"));
    }
    Finding::warn(
        CHECK,
        format!(
            "hard limit {hard}, below the {} that proxy.max_connections = {max_connections} \
             may need (2 per connection + 64)",
            needed(max_connections)
        ),
        "raise it (systemd: LimitNOFILE= in the unit; otherwise /etc/security/limits.conf), \
         or lower proxy.max_connections",
    )
}

/// The findings as text: one line per check, the fix indented below.
pub fn render(findings: &[Finding]) -> String {
    let mut text = String::new();
    for finding in findings {
        let level = match finding.level {
            Level::Ok => "OK",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        let _ = writeln!(text, "{level:<5} {:<14} {}", finding.check, finding.detail);
        if let Some(fix) = &finding.fix {
            let _ = writeln!(text, "{:<20} fix: {fix}", "");
        }
    }
    let failed = findings.iter().filter(|f| f.level == Level::Fail).count();
    let warned = findings.iter().filter(|f| f.level == Level::Warn).count();
    let _ = writeln!(
        text,
        "{} checks: {failed} failed, {warned} warnings",
        findings.len()
    );
    text
}

fn policy(path: &Path) -> Finding {
    match safegate_policy::Policy::load(path) {
        Ok(snapshot) => {
            let stats = snapshot.stats();
            let empty: Vec<&str> = stats
                .categories
                .iter()
                .filter(|c| c.domains + c.urls + c.expressions == 0)
                .map(|c| c.name.as_str())
                .collect();
            let mut detail = format!(
                "{} ({} lists, {} entries, {} unblocks, compiled in {} ms)",
                path.display(),
                stats.lists,
                stats.index_entries,
                stats.unblocks,
                stats.compile_time.as_millis()
            );
            if let Some(first) = stats.optional_missing.first() {
                detail.push_str(&format!(
                    "; {} optional list sources are not installed yet (such as {}): \
                     `safegate setup` or `safegate lists update` installs them",
                    stats.optional_missing.len(),
                    first.display()
                ));
            }
            if empty.is_empty() {
                Finding::ok("policy", detail)
            } else {
                Finding::warn(
                    "policy",
                    format!("{detail}; categories with no entries: {}", empty.join(", ")),
                    "check the list files those categories name (or import lists with \
                     `safegate lists import`)",
                )
            }
        }
        Err(error) => Finding::fail(
            "policy",
            error.to_string(),
            "correct the policy file at the line and column given (or replace a refused list \
             file with a good list), then reload SafeGate (`systemctl reload safegate`); \
             `safegate check URL` shows how it decides",
        ),
    }
}

fn data_dir(dir: &Path) -> Vec<Finding> {
    if !dir.exists() {
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        return vec![match probe_write(parent) {
            Ok(()) => Finding::warn(
                "data_dir",
                format!("{} does not exist yet", dir.display()),
                "SafeGate creates it at start; or create it now, owned by SafeGate's user, \
                 mode 0700",
            ),
            Err(error) => Finding::fail(
                "data_dir",
                format!(
                    "{} does not exist and cannot be created: {error}",
                    dir.display()
                ),
                "create it, owned by SafeGate's user (the systemd unit's StateDirectory does \
                 this), or set data_dir to a writable directory",
            ),
        }];
    }
    let mut findings = Vec::new();
    match probe_write(dir) {
        Ok(()) => findings.push(Finding::ok(
            "data_dir",
            format!("{} is writable", dir.display()),
        )),
        Err(error) => findings.push(Finding::fail(
            "data_dir",
            format!("cannot write to {}: {error}", dir.display()),
            "give SafeGate's user write access to it (or run doctor as that user), or set \
             data_dir to a writable directory",
        )),
    }
    match free_bytes(dir) {
        Some(free) if free < FAIL_BELOW_BYTES => findings.push(Finding::fail(
            "free space",
            format!("{} free in {}", human_bytes(free), dir.display()),
            "free disk space: when the disk is full the visit log cannot be written (records \
             wait in memory, up to twice store.queue_capacity, then are lost; with \
             store.when_full = \"refuse-traffic\" the proxy answers 503) until there is \
             room again (lower store.retention_days, or `safegate log purge`)",
        )),
        Some(free) if free < WARN_BELOW_BYTES => findings.push(Finding::warn(
            "free space",
            format!("{} free in {}", human_bytes(free), dir.display()),
            "free disk space soon: the visit log needs room to grow",
        )),
        Some(free) => findings.push(Finding::ok(
            "free space",
            format!("{} free in {}", human_bytes(free), dir.display()),
        )),
        None => findings.push(Finding::warn(
            "free space",
            format!("cannot tell the free space of {}", dir.display()),
            "check it with `df -h`",
        )),
    }
    findings
}

fn probe_write(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".doctor-probe-{}", std::process::id()));
    let written = std::fs::write(&probe, b"safegate doctor\n");
    let removed = std::fs::remove_file(&probe);
    written.and(removed)
}

fn free_bytes(dir: &Path) -> Option<u64> {
    let stats = rustix::fs::statvfs(dir).ok()?;
    Some(stats.f_bavail.saturating_mul(stats.f_frsize))
}

fn human_bytes(bytes: u64) -> String {
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    const MIB: f64 = 1024.0 * 1024.0;
    let value = bytes as f64;
    if value >= GIB {
        format!("{:.1} GiB", value / GIB)
    } else {
        format!("{:.0} MiB", value / MIB)
    }
}

fn ca(data_dir: &Path) -> Finding {
    let dir = data_dir.join(CA_DIR);
    let cert = dir.join(CA_CERT_FILE);
    let key = dir.join(CA_KEY_FILE);
    match (cert.is_file(), key.is_file()) {
        (false, false) => Finding::warn(
            "CA",
            format!("no CA in {}", dir.display()),
            "needed for HTTPS decryption and for block pages on HTTPS sites (without it they \
             show the browser's own error): create it with `safegate ca init` and install \
             its certificate on the school's devices",
        ),
        (true, false) | (false, true) => {
            let (present, missing) = if cert.is_file() {
                (cert, key)
            } else {
                (key, cert)
            };
            Finding::fail(
                "CA",
                format!("{} without {}", present.display(), missing.display()),
                "restore the missing file from a backup, or remove both and run `safegate ca \
                 init` (devices then need the new certificate)",
            )
        }
        (true, true) => match world_readable(&key) {
            Some(true) => Finding::fail(
                "CA",
                format!("{} is readable by every user", key.display()),
                format!("chmod 600 {}", key.display()),
            ),
            _ => Finding::ok("CA", format!("{} and its key", cert.display())),
        },
    }
}

fn world_readable(path: &Path) -> Option<bool> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    Some(mode & 0o004 != 0)
}

/// Every listener that is on, with its key.
fn listener_keys(config: &Config) -> Vec<(&'static str, SocketAddr)> {
    let mut keys = vec![
        ("proxy.listen", config.proxy.listen),
        ("admin.listen", config.admin.listen),
    ];
    if let Some(addr) = config.transparent.http_listen {
        keys.push(("transparent.http_listen", addr));
    }
    if let Some(addr) = config.transparent.https_listen {
        keys.push(("transparent.https_listen", addr));
    }
    keys
}

fn listeners(config: &Config) -> Vec<Finding> {
    let running = safegate_answers(config.admin.listen);
    listener_keys(config)
        .into_iter()
        .filter(|(_, addr)| addr.port() != 0)
        .map(|(key, addr)| match TcpListener::bind(addr) {
            Ok(_) => Finding::ok("listener", format!("{key} {addr} is free to bind")),
            Err(error) if error.kind() == std::io::ErrorKind::AddrInUse && running => Finding::ok(
                "listener",
                format!("{key} {addr} is held by the running SafeGate"),
            ),
            Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => Finding::fail(
                "listener",
                format!("{key} {addr} is in use by another program"),
                format!(
                    "find it with `ss -ltnp 'sport = :{}'` and stop it, or choose another \
                     port for {key}",
                    addr.port()
                ),
            ),
            Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => Finding::fail(
                "listener",
                format!("{key} {addr}: not allowed to bind ({error})"),
                "ports below 1024 need CAP_NET_BIND_SERVICE (the systemd unit grants it), or \
                 use a port above 1023",
            ),
            Err(error) => Finding::fail(
                "listener",
                format!("{key} {addr}: cannot bind: {error}"),
                "use an address of this machine (`ip -br addr`), or 0.0.0.0 / [::]",
            ),
        })
        .collect()
}

/// Whether a SafeGate answers `/healthz` on the admin address.
fn safegate_answers(admin: SocketAddr) -> bool {
    admin_get(admin, "/healthz")
        .is_some_and(|answer| answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok\n"))
}

/// The running SafeGate's answer to `GET path` on the admin address (head and body,
/// at most 16 KiB), if one answers within two seconds.
fn admin_get(admin: SocketAddr, path: &str) -> Option<String> {
    let mut target = admin;
    if target.ip().is_unspecified() {
        target.set_ip(if admin.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&target, timeout).ok()?;
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::Read::take(&mut stream, 16384), &mut answer);
    Some(String::from_utf8_lossy(&answer).into_owned())
}

/// The running SafeGate's list files: a list refused at its last reload (binary,
/// mostly invalid, or cut short against the list in force, which only the running
/// service can tell) is a failure; nothing is said when no SafeGate runs.
fn running_lists(config: &Config) -> Option<Finding> {
    let answer = admin_get(config.admin.listen, "/readyz")?;
    let refused = answer
        .lines()
        .find_map(|line| line.strip_prefix("FAIL: lists: "));
    Some(match refused {
        Some(reason) => Finding::fail(
            "lists",
            format!("the running SafeGate {reason}"),
            "put a good copy of the list file back (or fix the download that replaced it), \
             then `systemctl reload safegate`; lists.max_shrink_percent sets how much a list \
             may shrink at once",
        ),
        None => Finding::ok("lists", "the running SafeGate refused no list file"),
    })
}

fn metrics_token(config: &Config) -> Vec<Finding> {
    let mut findings = Vec::new();
    let file: Option<&PathBuf> = config
        .admin
        .metrics_token_file
        .as_ref()
        .filter(|f| !f.as_os_str().is_empty());
    if let Some(file) = file {
        match std::fs::read_to_string(file) {
            Ok(token) if token.trim().len() < safegate_admin::access::MIN_TOKEN_LEN => {
                findings.push(Finding::fail(
                    "metrics token",
                    format!(
                        "{} holds a token shorter than {} characters",
                        file.display(),
                        safegate_admin::access::MIN_TOKEN_LEN
                    ),
                    format!("openssl rand -hex 32 > {}", file.display()),
                ));
            }
            Ok(_) => match world_readable(file) {
                Some(true) => findings.push(Finding::warn(
                    "metrics token",
                    format!("{} is readable by every user", file.display()),
                    format!("chmod 600 {} (owned by SafeGate's user)", file.display()),
                )),
                _ => findings.push(Finding::ok(
                    "metrics token",
                    format!("read from {}", file.display()),
                )),
            },
            Err(error) => findings.push(Finding::fail(
                "metrics token",
                format!("cannot read {}: {error}", file.display()),
                "create the file (e.g. `openssl rand -hex 32`) readable by SafeGate's user, \
                 or remove admin.metrics_token_file",
            )),
        }
    } else if !config.admin.metrics_token.is_empty() {
        findings.push(Finding::warn(
            "metrics token",
            "admin.metrics_token is written in the configuration file",
            "move it to a file named by admin.metrics_token_file (mode 0600) or to the \
             SAFEGATE_METRICS_TOKEN environment variable",
        ));
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendering_puts_the_fix_under_the_finding_and_counts() {
        let text = render(&[
            Finding::ok("policy", "fine"),
            Finding::fail("listener", "proxy.listen 1.2.3.4:1 busy", "stop it"),
        ]);
        assert!(text.contains("OK    policy         fine\n"), "{text}");
        assert!(text.contains("FAIL  listener       proxy.listen"), "{text}");
        assert!(text.contains("fix: stop it\n"), "{text}");
        assert!(text.ends_with("2 checks: 1 failed, 0 warnings\n"), "{text}");
    }

    #[test]
    fn bytes_are_shown_for_people() {
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024 / 2), "1.5 GiB");
        assert_eq!(human_bytes(200 * 1024 * 1024), "200 MiB");
    }
}
