//! Command-line arguments (clap). Help texts are written for the technician who runs
//! SafeGate, not for its developers.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use safegate_lists::import::{DEFAULT_MAX_MIB, ImportOptions};

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
    /// Check what SafeGate needs before it runs: the configuration, the policy and its
    /// lists (with file, line and column), the CA, the data directory (writable, free
    /// space), the listeners' ports and the metrics token. Prints OK, WARN or FAIL for
    /// each, with what to fix; exit status 1 when a check fails.
    #[command(
        after_help = "Examples:\n  safegate doctor\n  safegate doctor --config /etc/safegate/config/safegate.toml --set 'data_dir=\"/var/lib/safegate\"'"
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
        action: LogAction,
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
        action: UsersAction,
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
}

const USERS_EXAMPLES: &str = "User names are 1-64 letters, digits, '.', '_', '@' or '-', starting \
with a letter or digit, and are not case-sensitive (Ada.Lovelace and ada.lovelace are the same \
user). Roles: pupil, staff, filter-admin. Admin permissions: rules, reports, metrics.

Examples:
  safegate users add ada.lovelace --role staff --display-name 'Ada Lovelace' --permissions reports --password-stdin
  safegate users add year6 --role pupil --group year6 --password-stdin < year6-password.txt
  safegate users list
  safegate users passwd year6 --password-stdin
  safegate users disable ada.lovelace
  safegate users import pupils.csv --dry-run";

/// `safegate users ...`
#[derive(Debug, Subcommand)]
pub enum UsersAction {
    /// Add a user. The password is read from standard input (--password-stdin; asked
    /// for twice on a terminal) or given with --password.
    #[command(after_help = USERS_ADD_EXAMPLES)]
    Add(UsersAddArgs),
    /// List the users (never their passwords or hashes).
    #[command(after_help = "Examples:\n  safegate users list\n  safegate users list --json")]
    List(UsersListArgs),
    /// Set a new password for a user. Log-ins with the old one stop working at once.
    #[command(
        after_help = "Examples:\n  safegate users passwd ada.lovelace --password-stdin\n  echo 'new pass phrase' | safegate users passwd year6 --password-stdin"
    )]
    Passwd(UsersPasswdArgs),
    /// Stop a user from logging in, keeping the account (and their records).
    #[command(after_help = "Example:\n  safegate users disable ada.lovelace")]
    Disable(UserNameArgs),
    /// Let a disabled user log in again.
    #[command(after_help = "Example:\n  safegate users enable ada.lovelace")]
    Enable(UserNameArgs),
    /// Remove a user. Their visit-log records stay until the retention period ends.
    #[command(after_help = "Example:\n  safegate users remove ada.lovelace")]
    Remove(UserNameArgs),
    /// Change a user's role, group, display name or permissions (not the password:
    /// see `users passwd`).
    #[command(
        after_help = "Examples:\n  safegate users update ada.lovelace --role filter-admin --permissions rules,reports\n  safegate users update year6 --group year6-2026\n  safegate users update ada.lovelace --no-permissions"
    )]
    Update(UsersUpdateArgs),
    /// Add many users from a CSV file, all or none: every bad row is reported with its
    /// line number and nothing is imported until the file is right. Users that exist
    /// already are reported as bad rows (an import never changes a user).
    #[command(after_help = USERS_IMPORT_HELP)]
    Import(UsersImportArgs),
}

const USERS_ADD_EXAMPLES: &str = "Examples:
  safegate users add ada.lovelace --role staff --display-name 'Ada Lovelace' --password-stdin
  safegate users add dsl --role staff --permissions reports --password-stdin
  safegate users add year6 --role pupil --group year6 --display-name 'Year 6' --password-stdin < pw.txt

--password PASSWORD works too, but other users of this machine can see it in the process
list and it stays in the shell history: prefer --password-stdin.";

const USERS_IMPORT_HELP: &str = "The file: CSV with a header row naming the columns, in any \
order, in any case, with spaces or underscores:
  user           required: the log-in name
  display name   optional
  role           required: pupil, staff or filter-admin
  group          optional, e.g. year6
  permissions    optional: rules, reports, metrics (separated by commas in quotes, or ;)
  password       the password (at least 8 characters), or else
  password hash  an Argon2 PHC string made elsewhere ($argon2id$v=19$...; in double quotes)
Fields are trimmed of spaces; blank lines and lines starting with # are skipped.

Passwords are hashed here, on every core, after the whole file has been checked (about 20-50 \
ms each per core: 1,000 pupils take 10-25 s on two cores).

Example file:
  user,display name,role,group,password
  year5,Year 5,pupil,year5,sunflower-2026
  year6,Year 6,pupil,year6,bluebell-2026
  ada.lovelace,Ada Lovelace,staff,,an-initial-pass-phrase

Examples:
  safegate users import pupils.csv --dry-run
  safegate users import pupils.csv";

/// The password options of `users add` and `users passwd`.
#[derive(Debug, Args)]
pub struct PasswordArgs {
    /// Read the password from standard input (the first line). On a terminal it is
    /// asked for twice, without echo.
    #[arg(long, conflicts_with = "password")]
    pub password_stdin: bool,
    /// The password itself (visible to other users in the process list: prefer
    /// --password-stdin).
    #[arg(long, value_name = "PASSWORD")]
    pub password: Option<String>,
}

/// `safegate users add ...`
#[derive(Debug, Args)]
pub struct UsersAddArgs {
    /// The log-in name, e.g. ada.lovelace or year6.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Browsing role: pupil, staff or filter-admin.
    #[arg(long)]
    pub role: String,
    /// Group within the role, as named in the policy (e.g. year6).
    #[arg(long)]
    pub group: Option<String>,
    /// The name people read, e.g. 'Ada Lovelace' or 'Year 6'.
    #[arg(long, value_name = "TEXT")]
    pub display_name: Option<String>,
    /// Admin permissions, comma-separated: rules (edit the filter), reports (reports and
    /// people's histories), metrics (monitoring).
    #[arg(long, value_name = "LIST")]
    pub permissions: Option<String>,
    /// The password.
    #[command(flatten)]
    pub password: PasswordArgs,
    /// Where the configuration (and through it data_dir) comes from.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `safegate users list ...`
#[derive(Debug, Args)]
pub struct UsersListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Where the configuration comes from.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `safegate users passwd ...`
#[derive(Debug, Args)]
pub struct UsersPasswdArgs {
    /// The user.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The new password.
    #[command(flatten)]
    pub password: PasswordArgs,
    /// Where the configuration comes from.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `safegate users disable|enable|remove NAME`
#[derive(Debug, Args)]
pub struct UserNameArgs {
    /// The user.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Where the configuration comes from.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `safegate users update ...`
#[derive(Debug, Args)]
pub struct UsersUpdateArgs {
    /// The user.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// New browsing role: pupil, staff or filter-admin.
    #[arg(long)]
    pub role: Option<String>,
    /// New group.
    #[arg(long, conflicts_with = "no_group")]
    pub group: Option<String>,
    /// Remove the group.
    #[arg(long)]
    pub no_group: bool,
    /// New display name.
    #[arg(long, value_name = "TEXT", conflicts_with = "no_display_name")]
    pub display_name: Option<String>,
    /// Remove the display name.
    #[arg(long)]
    pub no_display_name: bool,
    /// New admin permissions (replacing the old ones), comma-separated.
    #[arg(long, value_name = "LIST", conflicts_with = "no_permissions")]
    pub permissions: Option<String>,
    /// Remove every admin permission.
    #[arg(long)]
    pub no_permissions: bool,
    /// Where the configuration comes from.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `safegate users import ...`
#[derive(Debug, Args)]
pub struct UsersImportArgs {
    /// The CSV file.
    #[arg(value_name = "FILE.csv")]
    pub file: PathBuf,
    /// Check the whole file (and the names against the users already there) and
    /// change nothing; hashes nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Where the configuration comes from.
    #[command(flatten)]
    pub config: ConfigArgs,
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
    Import(ImportArgs),
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

/// List collection formats that `safegate lists import` understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportFormat {
    /// UT1 blacklists: a tar.gz of `blacklists/<category>/{domains,urls,expressions,usage}`.
    Ut1,
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
    #[arg(long, value_name = "DIR", default_value = "blocklists/ut1")]
    pub into: PathBuf,
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
            into: self.into.clone(),
            categories: self.categories.clone(),
            max_mib: self.max_mib,
            timeout: self.timeout,
        }
    }
}
