//! `safegate users add|list|passwd|disable|enable|remove|update|import` on the command
//! line: reads the configuration (data_dir, the policy's time zone), reads and checks
//! passwords and hashes them *here* (so a password never crosses the control socket
//! and the service spends no CPU on it), turns the options into a [`Request`], and runs
//! it on the database directly or through the running service's control socket.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::os::fd::AsFd;

use anyhow::{Context, Result, anyhow, bail};
use safegate_store::password;
use safegate_store::users::{
    check_display_name, check_group, check_role, normalise_name, parse_permissions,
};

use safegate_control::time_text::policy_timezone;
use safegate_control::users::{
    ListFormat, UserName, UsersAdd, UsersImport, UsersList, UsersPasswd, UsersUpdate,
};
use safegate_control::users_file;
use safegate_control::{
    Access, ControlError, Request, open_create_or_connect, open_store_or_connect,
};

use crate::cli::{
    PasswordArgs, UserNameArgs, UsersAction, UsersAddArgs, UsersImportArgs, UsersListArgs,
    UsersPasswdArgs, UsersUpdateArgs,
};
use crate::settings::Config;

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
    }
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
    };
    if request.display_name.is_none()
        && !request.clear_display_name
        && request.role.is_none()
        && request.group.is_none()
        && !request.clear_group
        && request.permissions.is_none()
    {
        bail!(
            "nothing to change: give --role, --group, --no-group, --display-name, \
             --no-display-name, --permissions or --no-permissions"
        );
    }
    let config = Config::load(&args.config.config, &args.config.set)?;
    run_printed(
        open_store_or_connect(&config.data_dir)?,
        &Request::UsersUpdate(request),
    )
}

fn import(args: &UsersImportArgs) -> Result<()> {
    let config = Config::load(&args.config.config, &args.config.set)?;
    let source = args.file.file_name().map_or_else(
        || args.file.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    );
    let read = users_file::read_file(&args.file)?;
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
fn prompt_hidden(prompt: &str) -> Result<String> {
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
