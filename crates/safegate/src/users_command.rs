//! `safegate users add|list|passwd|disable|enable|remove|update|import` on the command
//! line: reads the configuration (data_dir, the policy's time zone), reads and checks
//! passwords and hashes them *here* (so a password never crosses the control socket
//! and the service spends no CPU on it), turns the options into a [`Request`], and runs
//! it on the database directly or through the running service's control socket.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use safegate_store::password;
use safegate_store::users::{
    check_display_name, check_group, check_role, normalise_name, parse_permissions,
};
use safegate_store::{BadRow, ImportRow};

use safegate_control::policy_groups::{group_problem, policy_groups};
use safegate_control::time_text::policy_timezone;
use safegate_control::users::{
    ListFormat, UserName, UsersAdd, UsersImport, UsersList, UsersPasswd, UsersUpdate,
};
use safegate_control::users_file;
use safegate_control::{
    Access, ControlError, Request, open_create_or_connect, open_store_or_connect,
};

use crate::settings::{Config, ConfigArgs};

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
    /// Import the people of the school's directory ([auth.ldap]): new people are
    /// added (their log-ins are checked by the directory), names, roles and groups are
    /// brought up to date, and people no longer in the directory are disabled, not
    /// removed (their records stay). SafeGate's own users are left alone.
    #[command(
        after_help = "Example:\n  safegate users sync\n\nSet auth.ldap.sync_interval (e.g. \"1h\") to sync on a schedule."
    )]
    Sync(UsersSyncArgs),
}

/// `safegate users sync`
#[derive(Debug, Args)]
pub struct UsersSyncArgs {
    /// Where the configuration (its [auth.ldap] and data_dir) comes from.
    #[command(flatten)]
    pub config: ConfigArgs,
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
  permissions    optional: rules, reports, metrics, users (separated by commas in quotes, or ;)
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
    /// A log-in shared by a class (a year-group log-in): no two-computer alerts, and
    /// alerts count and name each computer.
    #[arg(long)]
    pub shared: bool,
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
    /// Mark the log-in shared by a class (yes) or used by one person (no).
    #[arg(long, value_name = "yes|no", value_parser = yes_no)]
    pub shared: Option<bool>,
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

/// Runs one `safegate users` command.
pub fn run(action: &UsersAction) -> Result<()> {
    match action {
        UsersAction::Add(args) => add(args),
        UsersAction::List(args) => list(args),
        UsersAction::Passwd(args) => passwd(args),
        UsersAction::Disable(args) => by_name(args, Request::UsersDisable),
        UsersAction::Enable(args) => by_name(args, Request::UsersEnable),
        UsersAction::Remove(args) => by_name(args, Request::UsersRemove),
        UsersAction::Update(args) => update(args),
        UsersAction::Import(args) => import(args),
        UsersAction::Sync(args) => sync(args),
    }
}

/// Reads the directory here, then applies the sync where the database is.
fn sync(args: &UsersSyncArgs) -> Result<()> {
    let config = Config::load(&args.config.config, &args.config.set)?;
    let Some(ldap) = &config.auth.ldap else {
        bail!("there is no [auth.ldap] section in the configuration: nothing to sync from");
    };
    let directory = safegate_proxy::auth::Directory::new(ldap).context("auth.ldap")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the directory client")?;
    let request = runtime.block_on(crate::directory_sync::read_directory(&directory))?;
    run_printed(
        open_create_or_connect(&config.data_dir)?,
        &Request::UsersSync(request),
    )
}

/// Runs `request` and prints its output.
fn run_printed(access: Access, request: &Request) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    access.run(request, &mut out)?;
    out.flush()?;
    Ok(())
}

fn add(args: &UsersAddArgs) -> Result<()> {
    // Check what can be checked before asking for a password.
    let name = normalise_name(&args.name)?;
    check_role(&args.role)?;
    if let Some(group) = args.group.as_deref().filter(|g| !g.is_empty()) {
        check_group(group)?;
    }
    if let Some(display_name) = &args.display_name {
        check_display_name(display_name)?;
    }
    let permissions = parse_permissions(args.permissions.as_deref().unwrap_or(""))?;
    let config = Config::load(&args.config.config, &args.config.set)?;
    if let Some(group) = args.group.as_deref().filter(|g| !g.is_empty()) {
        check_policy_group(&config, group, Some(&args.role))?;
    }
    // The database is reached after the password is read: a connection to the
    // service must not sit idle while someone types.
    let password = read_password(&args.password, &name)?;
    let password_hash = password::hash_password(&password)?;
    let request = Request::UsersAdd(UsersAdd {
        name,
        display_name: args.display_name.clone(),
        role: args.role.clone(),
        group: args.group.clone(),
        permissions,
        password_hash,
        shared: args.shared,
    });
    run_printed(open_create_or_connect(&config.data_dir)?, &request)
}

fn list(args: &UsersListArgs) -> Result<()> {
    let config = Config::load(&args.config.config, &args.config.set)?;
    let (_, timezone) = policy_timezone(&config.policy.file);
    let request = Request::UsersList(UsersList {
        format: if args.json {
            ListFormat::Json
        } else {
            ListFormat::Text
        },
        timezone,
    });
    let result = run_printed(open_store_or_connect(&config.data_dir)?, &request);
    match result {
        // `safegate users list | head`: not an error.
        Err(error)
            if error.chain().any(|cause| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
                    || cause
                        .downcast_ref::<ControlError>()
                        .is_some_and(ControlError::is_broken_pipe)
            }) =>
        {
            Ok(())
        }
        other => other,
    }
}

fn passwd(args: &UsersPasswdArgs) -> Result<()> {
    let name = normalise_name(&args.name)?;
    let config = Config::load(&args.config.config, &args.config.set)?;
    let password = read_password(&args.password, &name)?;
    let request = Request::UsersPasswd(UsersPasswd {
        name,
        password_hash: password::hash_password(&password)?,
    });
    run_printed(open_store_or_connect(&config.data_dir)?, &request)
}

fn by_name(args: &UserNameArgs, request: impl Fn(UserName) -> Request) -> Result<()> {
    let name = normalise_name(&args.name)?;
    let config = Config::load(&args.config.config, &args.config.set)?;
    run_printed(
        open_store_or_connect(&config.data_dir)?,
        &request(UserName { name }),
    )
}

fn update(args: &UsersUpdateArgs) -> Result<()> {
    let name = normalise_name(&args.name)?;
    let permissions = if args.no_permissions {
        Some(Default::default())
    } else {
        args.permissions
            .as_deref()
            .map(parse_permissions)
            .transpose()?
    };
    let request = UsersUpdate {
        name,
        display_name: args.display_name.clone(),
        clear_display_name: args.no_display_name,
        role: args.role.clone(),
        group: args.group.clone(),
        clear_group: args.no_group,
        permissions,
        shared: args.shared,
    };
    if request.display_name.is_none()
        && !request.clear_display_name
        && request.role.is_none()
        && request.group.is_none()
        && !request.clear_group
        && request.permissions.is_none()
        && request.shared.is_none()
    {
        bail!(
            "nothing to change: give --role, --group, --no-group, --display-name, \
             --no-display-name, --permissions, --no-permissions or --shared"
        );
    }
    let config = Config::load(&args.config.config, &args.config.set)?;
    if let Some(group) = request.group.as_deref().filter(|g| !g.is_empty()) {
        check_policy_group(&config, group, request.role.as_deref())?;
    }
    run_printed(
        open_store_or_connect(&config.data_dir)?,
        &Request::UsersUpdate(request),
    )
}

/// Refuses a group the policy does not define (or that belongs to another role).
fn check_policy_group(config: &Config, group: &str, role: Option<&str>) -> Result<()> {
    let groups = policy_groups(&config.policy.file).map_err(|e| anyhow!(e))?;
    match group_problem(&groups, group, role) {
        Some(problem) => bail!("{problem}"),
        None => Ok(()),
    }
}

/// Rows of an import whose group the policy does not define, as bad rows.
fn rows_with_unknown_groups(config: &Config, rows: &[ImportRow]) -> Result<Vec<BadRow>> {
    let groups = policy_groups(&config.policy.file).map_err(|e| anyhow!(e))?;
    Ok(rows
        .iter()
        .filter_map(|row| {
            let group = row.group.as_deref().filter(|g| !g.is_empty())?;
            group_problem(&groups, group, Some(&row.role)).map(|reason| BadRow {
                line: row.line,
                user: row.name.clone(),
                reason,
            })
        })
        .collect())
}

fn import(args: &UsersImportArgs) -> Result<()> {
    let config = Config::load(&args.config.config, &args.config.set)?;
    let source = args.file.file_name().map_or_else(
        || args.file.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    );
    let mut read = users_file::read_file(&args.file)?;
    read.bad_rows
        .extend(rows_with_unknown_groups(&config, &read.rows)?);
    read.bad_rows.sort_by_key(|row| row.line);
    let mut access = open_create_or_connect(&config.data_dir)?;
    // First every check, the database's too, with nothing hashed: a file with mistakes
    // costs no hashing time and changes nothing.
    let mut check = UsersImport {
        source,
        rows: read.rows,
        bad_rows: read.bad_rows,
        dry_run: true,
    };
    let mut checked = Vec::new();
    access.run_next(&Request::UsersImport(check.clone()), &mut checked)?;
    if args.dry_run {
        std::io::stdout().write_all(&checked)?;
        return Ok(());
    }
    let plain: Vec<(usize, &str)> = read
        .passwords
        .iter()
        .enumerate()
        .filter_map(|(i, password)| password.as_deref().map(|p| (i, p)))
        .collect();
    let texts: Vec<&str> = plain.iter().map(|&(_, p)| p).collect();
    let hashes = users_file::hash_all(&texts, &mut std::io::stderr())?;
    for (&(i, _), hash) in plain.iter().zip(hashes) {
        if let Some(row) = check.rows.get_mut(i) {
            row.password_hash = Some(hash);
        }
    }
    check.dry_run = false;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    access.run_next(&Request::UsersImport(check), &mut out)?;
    out.flush()?;
    Ok(())
}

/// The password from `--password`, standard input, or (with neither, on a terminal) a
/// prompt; checked against the password rules.
fn read_password(args: &PasswordArgs, name: &str) -> Result<String> {
    let stdin = std::io::stdin();
    let password = if let Some(password) = &args.password {
        password.clone()
    } else if stdin.is_terminal() {
        let first = prompt_hidden(&format!("New password for {name}: "))?;
        password::check_password(&first)?;
        let again = prompt_hidden("The same again: ")?;
        if again != first {
            bail!("the two passwords differ; nothing was changed");
        }
        first
    } else if args.password_stdin {
        let mut text = String::new();
        stdin
            .lock()
            .take(password::MAX_PASSWORD_BYTES as u64 + 3)
            .read_to_string(&mut text)
            .context("cannot read the password from standard input")?;
        let line = text
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text);
        if line.contains('\n') {
            bail!("standard input has more than one line; give the password alone on one line");
        }
        line.to_owned()
    } else {
        bail!("give the password with --password-stdin (or --password PASSWORD)");
    };
    password::check_password(&password)?;
    Ok(password)
}

/// Asks on the terminal with echo off (restored afterwards, even on error).
pub(crate) fn prompt_hidden(prompt: &str) -> Result<String> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    let fd = stdin.as_fd();
    let original =
        tcgetattr(fd).map_err(|e| anyhow!("cannot read the terminal's settings: {e}"))?;
    let mut quiet = original.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    tcsetattr(fd, OptionalActions::Now, &quiet)
        .map_err(|e| anyhow!("cannot turn the terminal's echo off: {e}"))?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    let restored = tcsetattr(fd, OptionalActions::Now, &original);
    eprintln!();
    read.context("cannot read the password")?;
    restored.map_err(|e| anyhow!("cannot turn the terminal's echo back on: {e}"))?;
    let line = line.strip_suffix('\n').unwrap_or(&line);
    Ok(line.strip_suffix('\r').unwrap_or(line).to_owned())
}

/// `yes`/`no` (also `true`/`false`) for `--shared`.
fn yes_no(text: &str) -> std::result::Result<bool, String> {
    safegate_control::users_file::yes_no(text).ok_or_else(|| format!("`{text}`: say yes or no"))
}
