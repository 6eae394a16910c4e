//! `auth.kerberos.keytab` to MIT krb5: its GSS-API finds the service's keys through
//! the `KRB5_KTNAME` environment variable, which a running program cannot set safely
//! (other threads may read the environment). So `safegate run` with `[auth.kerberos]`
//! starts itself again, once, at the very beginning, with `KRB5_KTNAME` set: `exec`
//! keeps the process id (systemd sees the same service) and the arguments.

use std::os::unix::process::CommandExt;

use anyhow::{Context, Result};

use crate::settings::Config;

/// The environment variable MIT krb5 reads the acceptor keytab from.
const KTNAME: &str = "KRB5_KTNAME";

/// Returns when `KRB5_KTNAME` already names the configured keytab (or Kerberos is not
/// set up); otherwise replaces this process with itself, the variable set.
pub fn ensure(config: &Config) -> Result<()> {
    let Some(kerberos) = &config.auth.kerberos else {
        return Ok(());
    };
    let wanted = format!("FILE:{}", kerberos.keytab.display());
    if std::env::var_os(KTNAME).is_some_and(|v| v == wanted.as_str()) {
        return Ok(());
    }
    std::fs::File::open(&kerberos.keytab)
        .with_context(|| format!("auth.kerberos.keytab {}", kerberos.keytab.display()))?;
    let program = std::env::current_exe().context("cannot find SafeGate's own program")?;
    let error = std::process::Command::new(program)
        .args(std::env::args_os().skip(1))
        .env(KTNAME, &wanted)
        .exec();
    Err(error).context("cannot start again with the Kerberos keytab set")
}
