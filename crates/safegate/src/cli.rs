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
    /// Show how the policy decides an address, with the categories, the rule that
    /// decided and the reason, using the same code as the proxy. Exit status 0 means
    /// allowed, 3 blocked.
    #[command(
        after_help = "Examples:\n  safegate check http://www.bet365.com/\n  safegate check --role staff --at '2026-11-23 10:00' https://www.facebook.com/\n  safegate check --role pupil --group year6 --json http://example.com/game.exe"
    )]
    Check(CheckArgs),
    /// Check or print the configuration without starting anything.
    Config {
        /// check or show.
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Manage block and allow lists: fetch third-party list collections.
    Lists {
        /// import.
        #[command(subcommand)]
        action: ListsAction,
    },
}

/// `safegate check ...`
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The address to decide: `http://host/path?query`, `https://host/...` (decided
    /// on the host alone, as for an HTTPS tunnel), or `host`.
    #[arg(value_name = "URL")]
    pub url: String,
    /// Browsing role: pupil, staff or filter-admin (default: the policy's default_role).
    #[arg(long)]
    pub role: Option<String>,
    /// Group within the role, e.g. year6.
    #[arg(long)]
    pub group: Option<String>,
    /// User name (for user-specific unblocks).
    #[arg(long)]
    pub user: Option<String>,
    /// When to decide: RFC 3339 (`2026-11-23T10:00:00Z`) or local time in the
    /// school's time zone (`2026-11-23 10:00`). Default: now.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Print the decision as JSON.
    #[arg(long)]
    pub json: bool,
    /// Where the configuration (and through it the policy file) comes from.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `safegate lists ...`
#[derive(Debug, Subcommand)]
pub enum ListsAction {
    /// Download (or read) a UT1 blacklists tar.gz and install its categories in a
    /// lists folder, replacing the previous lists only when the new ones are complete.
    #[command(
        after_help = "Examples:\n  safegate lists import --format ut1 --from https://dsi.ut-capitole.fr/blacklists/download/blacklists.tar.gz\n  safegate lists import --from ./blacklists.tar.gz --into /var/lib/safegate/lists/ut1 --categories adult,gambling,vpn"
    )]
    Import(crate::lists_import::ImportArgs),
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
