//! Command-line arguments (clap). Help texts are written for the technician who runs
//! SafeGate, not for its developers.
//!
//! This module holds the top of the tree ([`Cli`], [`Command`]) and the options of the
//! commands `main.rs` runs itself (`config`, `lists`). Each other command's module owns
//! its options and names nothing here: `check`, `log_command`, `users_command`,
//! `alerts_command`, `audit_command`, `report_command` and `ca_command`; the options
//! every command shares, [`ConfigArgs`], live in `settings`, next to the configuration
//! they locate.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use safegate_lists::import::{DEFAULT_MAX_MIB, ImportOptions};

use crate::check::CheckArgs;
use crate::settings::ConfigArgs;

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
    /// First run on a school's server: the school's name, the time zone, the first
    /// admin account, and (if wanted) the school CA and the category lists. Asks on a
    /// terminal; takes flags for scripts. Run as root, it acts as SafeGate's user.
    #[command(
        after_help = "Examples:\n  sudo safegate setup --config /etc/safegate/safegate.toml\n  echo \"$PASSWORD\" | safegate setup --school 'Hillside Primary' --timezone Europe/London \\\n      --admin head.it --admin-password-stdin --ca yes --lists no"
    )]
    Setup(crate::setup_command::SetupArgs),
    /// Show how the policy decides an address, with the categories, the rule that
    /// decided and the reason, using the same code as the proxy. Exit status 0 means
    /// allowed, 3 blocked.
    #[command(
        after_help = "Examples:\n  safegate check http://www.bet365.com/\n  safegate check --role staff --at '2026-11-23 10:00' https://www.facebook.com/\n  safegate check --role pupil --group year6 --json http://example.com/game.exe"
    )]
    Check(CheckArgs),
    /// Check what SafeGate needs before it runs: the configuration, the policy and its
    /// lists (with file, line and column), the CA, the data directory (writable, free
    /// space), the listeners' ports and the metrics token. Prints OK, WARN or FAIL for
    /// each, with what to fix; exit status 1 when a check fails.
    #[command(
        after_help = "Examples:\n  safegate doctor\n  safegate doctor --config /etc/safegate/safegate.toml"
    )]
    Doctor(ConfigArgs),
    /// The school's certificate authority for HTTPS decryption: create it, and print
    /// the certificate to install on school devices.
    Ca {
        /// init or export.
        #[command(subcommand)]
        action: crate::ca_command::CaAction,
    },
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
        action: crate::log_command::LogAction,
    },
    /// Who may log in to the proxy: staff each with their own name, pupils with a
    /// year-group log-in. Add, list, change passwords, disable, enable, remove and
    /// import users from a CSV file. Works whether or not SafeGate is running: while it
    /// runs, the change is made by the service through its control socket
    /// (data_dir/control.sock) and takes effect at once, so run it as SafeGate's user or
    /// root. Passwords are hashed (Argon2id) by this command; only the hash is stored.
    #[command(after_help = USERS_EXAMPLES)]
    Users {
        /// add, list, passwd, disable, enable, remove, update or import.
        #[command(subcommand)]
        action: crate::users_command::UsersAction,
    },
    /// Safeguarding alerts: list them, show one with its evidence, acknowledge or close
    /// it (with a note; who did it is recorded). Works whether or not SafeGate is
    /// running, like `safegate log`.
    #[command(
        after_help = "Examples:\n  safegate alerts list --open\n  safegate alerts show 17\n  safegate alerts ack 17 --note 'spoke to the pupil and parents'\n  safegate alerts close 17 --note 'resolved'"
    )]
    Alerts {
        /// list, show, ack or close.
        #[command(subcommand)]
        action: crate::alerts_command::AlertsAction,
    },
    /// The audit log: every policy change, unblock, review decision, alert status change
    /// and view of one person's history, hash-chained so that tampering is detected.
    #[command(after_help = "Examples:\n  safegate audit list --from 120\n  safegate audit verify")]
    Audit {
        /// list or verify.
        #[command(subcommand)]
        action: crate::audit_command::AuditAction,
    },
    /// Reports: the weekly sweep report (HTML, JSON, CSV). Works whether or not
    /// SafeGate is running.
    Report {
        /// weekly.
        #[command(subcommand)]
        action: crate::report_command::ReportAction,
    },
    /// The trust's central policy: make a signing key, make a signed bundle.
    Policy {
        /// keygen, bundle.
        #[command(subcommand)]
        action: crate::central_policy::PolicyAction,
    },
    /// Export to the trust's ClickHouse ([export.clickhouse]): create its tables.
    Export {
        /// init-clickhouse.
        #[command(subcommand)]
        action: crate::export_command::ExportAction,
    },
}

const USERS_EXAMPLES: &str = "User names are 1-64 letters, digits, '.', '_', '@' or '-', starting \
with a letter or digit, and are not case-sensitive (Ada.Lovelace and ada.lovelace are the same \
user). Roles: pupil, staff, filter-admin. Admin permissions: rules, reports, metrics, users.

Examples:
  safegate users add ada.lovelace --role staff --display-name 'Ada Lovelace' --permissions reports --password-stdin
  safegate users add year6 --role pupil --group year6 --password-stdin < year6-password.txt
  safegate users list
  safegate users passwd year6 --password-stdin
  safegate users disable ada.lovelace
  safegate users import pupils.csv --dry-run";

/// `safegate lists ...`
#[derive(Debug, Subcommand)]
pub enum ListsAction {
    /// Download (or read) a UT1 blacklists tar.gz and install its categories in a
    /// lists folder, replacing the previous lists only when the new ones are complete.
    #[command(
        after_help = "Examples:\n  safegate lists import --format ut1 --from https://dsi.ut-capitole.fr/blacklists/download/blacklists.tar.gz\n  safegate lists import --from ./blacklists.tar.gz --into /var/lib/safegate/lists/ut1 --categories adult,gambling,vpn\n  safegate lists import --format e2guardian-phrases --from /etc/e2guardian/lists/weightedphraselist --into blocklists/content/imported"
    )]
    Import(ImportArgs),
    /// Fetch the feeds of `[[lists.feeds]]` that changed (conditional GET), verify
    /// them, install them (keeping the previous version) and have the running
    /// SafeGate reload its policy.
    #[command(
        after_help = "Examples:\n  safegate lists update\n  safegate lists update --feed ut1 --force"
    )]
    Update(crate::lists_command::UpdateArgs),
    /// Put a feed's previous version back in force (a second rollback undoes it).
    #[command(after_help = "Examples:\n  safegate lists rollback --feed ut1")]
    Rollback(crate::lists_command::RollbackArgs),
    /// Show every feed and its categories: entries, version, age, last error.
    #[command(after_help = "Examples:\n  safegate lists status\n  safegate lists status --json")]
    Status(crate::lists_command::StatusArgs),
}

/// `safegate config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Validate the configuration file (and any --set) and report every problem.
    Check(ConfigArgs),
    /// Print the effective configuration, defaults and --set overrides included.
    Show(ConfigArgs),
}

/// List collection formats that `safegate lists import` understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportFormat {
    /// UT1 blacklists: a tar.gz of `blacklists/<category>/{domains,urls,expressions,usage}`.
    Ut1,
    /// An e2guardian weighted phrase list file (`<phrase><weight>`, `<a>,<b><weight>`,
    /// `.Include<...>`): one list per category is written into `--into` (default
    /// blocklists/content/imported) for the policy's `[content] lists`.
    E2guardianPhrases,
}

/// `safegate lists import`: where the lists come from and where they go.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Format of the list collection.
    #[arg(long, value_enum, default_value = "ut1")]
    pub format: ImportFormat,
    /// Where to fetch the archive: an http:// or https:// URL, a file:// URL or a
    /// local file (.tar.gz, or an uncompressed .tar).
    #[arg(long, value_name = "URL|FILE")]
    pub from: String,
    /// Folder to install the lists in (one sub-folder per category). It is replaced
    /// as a whole, and only once the new lists are complete. Relative paths are
    /// relative to the current directory; reference the same folder from the policy
    /// file with format "ut1".
    /// (Default blocklists/ut1; for e2guardian-phrases blocklists/content/imported.)
    #[arg(long, value_name = "DIR")]
    pub into: Option<PathBuf>,
    /// Keep only these categories (comma-separated, e.g. adult,gambling,vpn); an alias
    /// such as porn also keeps the category it points to. Default: all.
    #[arg(long, value_name = "A,B,C", value_delimiter = ',')]
    pub categories: Vec<String>,
    /// Refuse archives bigger than this many MiB (compressed).
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_MAX_MIB)]
    pub max_mib: u64,
    /// Give up on a download that takes longer than this (e.g. 90s, 10m).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

impl ImportArgs {
    /// The options as the lists crate takes them.
    pub fn options(&self) -> ImportOptions {
        ImportOptions {
            from: self.from.clone(),
            into: self
                .into
                .clone()
                .unwrap_or_else(|| PathBuf::from("blocklists/ut1")),
            categories: self.categories.clone(),
            max_mib: self.max_mib,
            timeout: self.timeout,
        }
    }
}
