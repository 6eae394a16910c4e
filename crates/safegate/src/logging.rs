//! Log output through tracing, to standard error: human-readable text by default, one
//! JSON object per line with `log.format = "json"`.
//!
//! `log.level` names a level for SafeGate's own crates; other crates (hyper, hickory,
//! sled, ...) log at `info` at most, because their debug lines are about connections,
//! not requests, and may repeat what a client sent (an address with a password in it,
//! for one). A tracing filter with directives (`safegate_proxy=debug,info`) is used as
//! written, and so is `RUST_LOG` when set (for developers).
//!
//! At `debug`, the proxy logs one line per request (client, method, host, decision,
//! status, time); warnings and errors are always logged. No credential is ever a field
//! of a log line.

use std::io::IsTerminal;

use anyhow::{Result, anyhow};
use tracing_subscriber::EnvFilter;

use crate::settings::{LogConfig, LogFormat};

/// Installs the global subscriber, writing to standard error.
pub fn init(config: &LogConfig) -> Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(directives)?,
        _ => EnvFilter::try_new(directives(&config.level))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match config.format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    installed.map_err(|e| anyhow!("cannot install the logger: {e}"))
}

/// The filter for `level`: a bare level applies to SafeGate's crates (their targets all
/// start with `safegate`), other crates get at most `info`; directives are kept as
/// written.
fn directives(level: &str) -> String {
    let level = level.trim();
    if level.contains(['=', ',']) {
        return level.to_owned();
    }
    match level.to_ascii_lowercase().as_str() {
        "debug" | "trace" => format!("info,safegate={level}"),
        _ => level.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_level_is_for_safegate_and_others_stay_at_info() {
        assert_eq!(directives("debug"), "info,safegate=debug");
        assert_eq!(directives(" trace "), "info,safegate=trace");
        assert_eq!(directives("warn"), "warn");
        assert_eq!(directives("info"), "info");
        assert_eq!(
            directives("hyper=debug,safegate_proxy=debug"),
            "hyper=debug,safegate_proxy=debug"
        );
    }
}
