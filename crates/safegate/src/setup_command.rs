//! `safegate setup`: the first run on a school's server. Asks (or takes as flags, for
//! scripts) the school's name, the time zone, the first admin account, and whether to
//! create the school CA and download the category lists now; then writes the policy's
//! `school` and `timezone` (comments kept), adds the account (role filter-admin,
//! permissions rules, reports, metrics and users), creates the CA and updates the list
//! feeds (or installs UT1 once, see `setup_lists`). Run as root, it runs as the service's user, so what it makes is the
//! service's. Each step says what it did; running it again changes only what is asked.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use safegate_control::users::UsersAdd;
use safegate_control::{Request, open_create_or_connect};
use safegate_proxy::tls::{CaInit, SchoolCa};
use safegate_store::password;
use safegate_store::users::{Permission, normalise_name};

use crate::settings::{Config, ConfigArgs};
use crate::setup_lists::{self, UT1_URL};

/// `safegate setup`
#[derive(Debug, Args)]
pub struct SetupArgs {
    /// The school's name: on the weekly report, the block page and the CA certificate.
    #[arg(long, value_name = "NAME")]
    pub school: Option<String>,
    /// The school's time zone, an IANA name such as Europe/London.
    #[arg(long, value_name = "ZONE")]
    pub timezone: Option<String>,
    /// Log-in name of the first admin account (role filter-admin; permissions rules,
    /// reports, metrics and users).
    #[arg(long, value_name = "NAME")]
    pub admin: Option<String>,
    /// Read that account's password from standard input (one line) instead of asking.
    #[arg(long)]
    pub admin_password_stdin: bool,
    /// Create the school CA now (needed for HTTPS block pages and decryption).
    #[arg(long, value_enum, value_name = "yes|no")]
    pub ca: Option<YesNo>,
    /// Update the configured list feeds now; with none configured, install the UT1
    /// lists once (the shipped policy's categories use them when they are there).
    #[arg(long, value_enum, value_name = "yes|no")]
    pub lists: Option<YesNo>,
    /// Where UT1 comes from when no feed is configured: a URL or a local .tar.gz.
    #[arg(long, value_name = "URL|FILE", default_value = UT1_URL)]
    pub lists_from: String,
    /// Never ask: what no flag gives is left as it is (no account, no CA, no lists).
    #[arg(long)]
    pub no_input: bool,
    /// Where the configuration comes from.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// An answer given as a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum YesNo {
    /// Do it.
    Yes,
    /// Leave it.
    No,
}

/// What setup is to do, once asked.
struct Answers {
    school: Option<String>,
    timezone: Option<String>,
    admin: Option<(String, String)>,
    ca: bool,
    lists: bool,
}

/// Runs `safegate setup`.
pub fn run(args: &SetupArgs) -> Result<()> {
    let config = Config::load(&args.config.config, &args.config.set)?;
    if let Some(rerun) = crate::service_user::rerun_if_root(
        &args.config.config,
        &config.data_dir,
        "Setting up",
        "so that it owns what is made",
    ) {
        if !rerun?.success() {
            bail!("setup did not finish (see above)");
        }
        return Ok(());
    }
    let interactive =
        !args.no_input && !args.admin_password_stdin && std::io::stdin().is_terminal();
    let answers = ask(args, &config, interactive)?;
    if answers.school.is_some() || answers.timezone.is_some() {
        write_policy(&config.policy.file, &answers)?;
    }
    if let Some((name, password)) = &answers.admin {
        add_admin(&config, name, password)?;
    }
    if answers.ca {
        make_ca(&config, answers.school.as_deref())?;
    }
    if answers.lists {
        setup_lists::update_now(&config, &args.lists_from)?;
    }
    print_next_steps(&config, &answers);
    Ok(())
}

/// The answers from the flags, asking on the terminal for the rest when `interactive`.
fn ask(args: &SetupArgs, config: &Config, interactive: bool) -> Result<Answers> {
    let current = safegate_control::time_text::policy_timezone(&config.policy.file).1;
    let mut prompt = Prompter::new(interactive);
    let school = match &args.school {
        Some(name) => Some(name.clone()),
        None => prompt.line(
            "The school's name (for reports, block pages and the CA)",
            "",
        )?,
    };
    let timezone = match &args.timezone {
        Some(zone) => Some(zone.clone()),
        None => prompt.line("The school's time zone", &current)?,
    };
    if let Some(zone) = &timezone {
        jiff::tz::TimeZone::get(zone)
            .with_context(|| format!("`{zone}` is not a time zone name such as Europe/London"))?;
    }
    let admin = match &args.admin {
        Some(name) => Some(name.clone()),
        None => prompt.line(
            "Log-in name of the first admin account (empty: none now)",
            "",
        )?,
    };
    let admin = match admin {
        Some(name) => {
            let name = normalise_name(&name)?;
            let password = if args.admin_password_stdin {
                read_password_line()?
            } else if interactive {
                ask_new_password(&name)?
            } else {
                bail!("give the admin account's password with --admin-password-stdin");
            };
            password::check_password(&password)?;
            Some((name, password))
        }
        None => None,
    };
    let ca = match args.ca {
        Some(answer) => answer == YesNo::Yes,
        None => prompt.yes_no("Create the school CA now (for HTTPS block pages)?", true)?,
    };
    let lists = match args.lists {
        Some(answer) => answer == YesNo::Yes,
        None => prompt.yes_no("Download the category lists now (about 30 MB)?", true)?,
    };
    Ok(Answers {
        school: school
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty()),
        timezone,
        admin,
        ca,
        lists,
    })
}

/// Asks questions on the terminal, or answers none when not interactive.
struct Prompter {
    interactive: bool,
}

impl Prompter {
    fn new(interactive: bool) -> Self {
        Self { interactive }
    }

    /// A line of text; `default` when the answer is empty. `None` when not asked or
    /// both are empty.
    fn line(&mut self, question: &str, default: &str) -> Result<Option<String>> {
        if !self.interactive {
            return Ok(None);
        }
        if default.is_empty() {
            eprint!("{question}: ");
        } else {
            eprint!("{question} [{default}]: ");
        }
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .context("cannot read the answer")?;
        let answer = answer.trim();
        let chosen = if answer.is_empty() { default } else { answer };
        Ok(Some(chosen.to_owned()).filter(|a| !a.is_empty()))
    }

    /// Yes or no; `default` on an empty answer, false when not asked.
    fn yes_no(&mut self, question: &str, default: bool) -> Result<bool> {
        let hint = if default { "Y/n" } else { "y/N" };
        match self.line(&format!("{question} {hint}"), "")? {
            None => Ok(self.interactive && default),
            Some(answer) => Ok(answer.to_ascii_lowercase().starts_with('y')),
        }
    }
}

fn ask_new_password(name: &str) -> Result<String> {
    let first = crate::users_command::prompt_hidden(&format!("Password for {name}: "))?;
    password::check_password(&first)?;
    let again = crate::users_command::prompt_hidden("The same again: ")?;
    if again != first {
        bail!("the two passwords differ; nothing was changed");
    }
    Ok(first)
}

fn read_password_line() -> Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::io::stdin()
        .lock()
        .take(password::MAX_PASSWORD_BYTES as u64 + 3)
        .read_to_string(&mut text)
        .context("cannot read the password from standard input")?;
    let line = text.trim_end_matches(['\n', '\r']);
    if line.contains('\n') {
        bail!("standard input has more than one line; give the password alone on one line");
    }
    Ok(line.to_owned())
}

/// Sets `school` and `timezone` in the policy file, keeping its comments; the result
/// is compiled before it replaces the file (a temporary file renamed over it).
fn write_policy(path: &Path, answers: &Answers) -> Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the policy {}", path.display()))?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("the policy {} is not valid TOML", path.display()))?;
    if let Some(school) = &answers.school {
        doc["school"] = toml_edit::value(school.as_str());
    }
    if let Some(zone) = &answers.timezone {
        doc["timezone"] = toml_edit::value(zone.as_str());
    }
    crate::policy_write::replace_checked(path, &doc.to_string())?;
    println!(
        "policy: {}{}{}",
        path.display(),
        answers
            .school
            .as_deref()
            .map(|s| format!(", school \"{s}\""))
            .unwrap_or_default(),
        answers
            .timezone
            .as_deref()
            .map(|z| format!(", time zone {z}"))
            .unwrap_or_default()
    );
    Ok(())
}

fn add_admin(config: &Config, name: &str, password: &str) -> Result<()> {
    let password_hash = password::hash_password(password)?;
    let request = Request::UsersAdd(UsersAdd {
        shared: false,
        name: name.to_owned(),
        display_name: None,
        role: "filter-admin".to_owned(),
        group: None,
        permissions: [
            Permission::Rules,
            Permission::Reports,
            Permission::Metrics,
            Permission::Users,
        ]
        .into_iter()
        .collect(),
        password_hash,
    });
    let mut said = Vec::new();
    open_create_or_connect(&config.data_dir)?.run(&request, &mut said)?;
    print!("admin account: {}", String::from_utf8_lossy(&said));
    Ok(())
}

fn make_ca(config: &Config, school: Option<&str>) -> Result<()> {
    let name = school.unwrap_or("School");
    let outcome = SchoolCa::init(&config.data_dir, name)
        .with_context(|| format!("data_dir {}", config.data_dir.display()))?;
    let (cert, _) = safegate_proxy::tls::ca::ca_paths(&config.data_dir);
    match outcome {
        CaInit::Created => println!("school CA: created {}", cert.display()),
        CaInit::Existing => println!("school CA: kept the one in {}", cert.display()),
    }
    Ok(())
}

fn print_next_steps(config: &Config, answers: &Answers) {
    println!("\nNext:");
    println!("  - restart SafeGate so that it uses all of this: systemctl restart safegate");
    if answers.admin.is_some() {
        println!(
            "  - sign in at http://{}/ (open it directly, not through the proxy)",
            config.admin.listen
        );
    }
    if answers.ca {
        println!(
            "  - install the CA on the school's devices: safegate ca export > safegate-ca.pem \
             (deploy/ca-install.md); until then HTTPS block pages show as a browser error"
        );
    }
    println!("  - check everything: safegate doctor");
}
