//! Command-line arguments (clap). Help texts are written for the technician who runs
//! SafeGate, not for its developers.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// SafeGate: the school's web filter. A forward proxy that decides, per person, what
/// may pass, records who visited what, and alerts the right adult.
#[derive(Debug, Parser)]
#[command(name = "safegate", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run SafeGate: the proxy listener and the admin listener, until SIGTERM or
    /// Ctrl-C (in-flight requests get proxy.shutdown_grace to finish).
    #[command(
        after_help = "Examples:\n  safegate run\n  safegate run --config /etc/safegate/safegate.toml\n  safegate run --set 'proxy.listen=\"0.0.0.0:3128\"' --set 'log.level=\"debug\"'"
    )]
    Run(ConfigArgs),
    /// Check or print the configuration without starting anything.
    Config {
        /// check or show.
        #[command(subcommand)]
        action: ConfigAction,
    },
}

/// `safegate config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Validate the configuration file (and any --set) and report every problem.
    Check(ConfigArgs),
    /// Print the effective configuration, defaults and --set overrides included.
    Show(ConfigArgs),
}

/// Where the configuration comes from.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Configuration file; every key is documented in the shipped config/safegate.toml.
    #[arg(
        short,
        long,
        value_name = "FILE",
        env = "SAFEGATE_CONFIG",
        default_value = "config/safegate.toml"
    )]
    pub config: PathBuf,
    /// Override one key: dotted key = TOML value (quote strings), e.g.
    /// --set 'proxy.listen="0.0.0.0:3128"' or --set upstream.allow_loopback=true.
    /// May be given many times.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}
