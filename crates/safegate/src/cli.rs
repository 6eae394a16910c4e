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
    /// The visit log: look up who visited what, purge old records, export one
    /// person's records. Works whether or not SafeGate is running: while it runs, the
    /// command is carried out by the service through its control socket
    /// (data_dir/control.sock), so run it as SafeGate's user or root.
    Log {
        /// query, purge or export.
        #[command(subcommand)]
        action: LogAction,
    },
}

/// `safegate log ...`
#[derive(Debug, Subcommand)]
pub enum LogAction {
    /// Show visit-log records (oldest first), or the visits made of them, matching
    /// every condition given.
    #[command(after_help = LOG_QUERY_EXAMPLES)]
    Query(LogQueryArgs),
    /// Remove records older than the retention period (store.retention_days), or than
    /// --before. SafeGate also does this by itself once a day.
    #[command(after_help = LOG_PURGE_EXAMPLES)]
    Purge(LogPurgeArgs),
    /// Export every record about one user (subject access request) as
    /// safegate-export-<user>-<date>.json and .csv, readable by you alone.
    #[command(after_help = LOG_EXPORT_EXAMPLES)]
    Export(LogExportArgs),
}

const LOG_QUERY_EXAMPLES: &str =
    "Times (--since, --until): RFC 3339 (2026-11-23T10:00:00Z), local time in the \
policy's time zone (2026-11-23 10:00), a local date (2026-11-23 = its midnight), or a time ago \
(7d, 24h, 90m).

Examples:
  safegate log query --since 24h
  safegate log query --user ada.lovelace --since 2026-11-23 --until 2026-11-24
  safegate log query --blocked --since 7d --csv > blocked.csv
  safegate log query --host www.youtube.com --visits
  safegate log query --search-terms --since 2026-11-23 --json";

const LOG_PURGE_EXAMPLES: &str = "Examples:
  safegate log purge                     # older than store.retention_days
  safegate log purge --before 90d
  safegate log purge --before 2026-09-01";

const LOG_EXPORT_EXAMPLES: &str = "Examples:
  safegate log export --user ada.lovelace
  safegate log export --user ada.lovelace --since 2026-09-01 --out /root/sar";

/// `safegate log query ...`
#[derive(Debug, Args)]
pub struct LogQueryArgs {
    /// Only this user's records (the name as recorded).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Only records for this exact host name, e.g. www.youtube.com.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Only records in this category, e.g. gambling.
    #[arg(long, value_name = "CATEGORY")]
    pub category: Option<String>,
    /// Only blocked requests.
    #[arg(long)]
    pub blocked: bool,
    /// Only requests with search terms (search engines, video sites).
    #[arg(long)]
    pub search_terms: bool,
    /// From this time on (see below for the forms).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Before this time.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// At most this many records (the oldest that match).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Join the records into visits: one person's consecutive requests to one site,
    /// with a start, an end and a duration.
    #[arg(long)]
    pub visits: bool,
    /// With --visits: the pause that ends a visit [default: 5m].
    #[arg(long, value_name = "DURATION", requires = "visits", value_parser = humantime::parse_duration)]
    pub idle_gap: Option<std::time::Duration>,
    /// Print JSON instead of a table.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print CSV instead of a table.
    #[arg(long)]
    pub csv: bool,
    /// Where the configuration (and through it data_dir and the policy's time zone)
    /// comes from.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `safegate log purge ...`
#[derive(Debug, Args)]
pub struct LogPurgeArgs {
    /// Remove records from before this time [default: now - store.retention_days].
    /// Forms as for `log query --since`.
    #[arg(long, value_name = "TIME")]
    pub before: Option<String>,
    /// Where the configuration comes from.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `safegate log export ...`
#[derive(Debug, Args)]
pub struct LogExportArgs {
    /// The user whose records to export (the name exactly as recorded).
    #[arg(long, value_name = "USER")]
    pub user: String,
    /// From this time on. Forms as for `log query --since`.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Before this time.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Folder to write the two files in.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
    /// Where the configuration comes from.
    #[command(flatten)]
    pub config: ConfigArgs,
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
    /// When to decide: RFC 3339 (`2026-11-23T10:00:00Z`), local time in the
    /// school's time zone (`2026-11-23 10:00`), a local date (its midnight), or a time
    /// ago (`2h`). Default: now.
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
