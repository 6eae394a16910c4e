//! `safegate`: the one SafeGate process and its command line.
//!
//! `safegate run` starts the proxy and the admin listener from `safegate.toml`;
//! `safegate config check|show` validate and print the configuration; `safegate log
//! query|purge|export` read and maintain the visit log and `safegate users ...` the
//! users, through the running service's control socket when it holds the database. Library crates do the work; this binary
//! parses arguments, loads configuration, sets up logging, wires the pieces together
//! and handles signals.

/// jemalloc keeps resident memory flat under sustained load, where glibc's malloc
/// fragmented (benches/README.md, the soak benchmark); its background thread returns
/// freed memory to the system when SafeGate is idle too.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod alerting;
mod alerts_command;
mod audit_command;
mod ca_command;
mod central_policy;
mod check;
mod cli;
mod directory_sync;
mod directory_watch;
mod doctor;
mod export_command;
mod feed_updates;
mod finding;
mod kerberos_keytab;
mod lists_command;
mod log_command;
mod logging;
mod memory_metrics;
mod phrase_import;
mod policy_write;
mod report_command;
mod service;
mod service_user;
mod settings;
mod setup_command;
mod setup_lists;
mod trust_report;
mod unit_check;
mod users_command;

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;

use safegate_lists::import::import_ut1;

use crate::cli::{Cli, Command, ConfigAction, ImportFormat, ListsAction};
use crate::settings::Config;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(args) => match check::run(&args) {
            Ok(true) => return ExitCode::from(check::BLOCKED_EXIT),
            Ok(false) => Ok(()),
            Err(error) => Err(error),
        },
        Command::Doctor(args) => {
            return if doctor::run(&args) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
        Command::Run(args) => Config::load(&args.config, &args.set).and_then(|config| {
            kerberos_keytab::ensure(&config)?;
            logging::init(&config.log)?;
            return_freed_memory_when_idle();
            service::run(config)
        }),
        Command::Config { action } => match action {
            ConfigAction::Check(args) => Config::load(&args.config, &args.set).and_then(|config| {
                println!(
                    "{}: configuration is valid (proxy on {}, admin on {}, data in {})",
                    args.config.display(),
                    config.proxy.listen,
                    config.admin.listen,
                    config.data_dir.display()
                );
                let path = &config.policy.file;
                let snapshot = safegate_policy::Policy::load(path)
                    .with_context(|| format!("policy {}", path.display()))?;
                let stats = snapshot.stats();
                println!(
                    "{}: policy is valid ({} lists, {} entries, {} unblocks, compiled in {} ms)",
                    path.display(),
                    stats.lists,
                    stats.index_entries,
                    stats.unblocks,
                    stats.compile_time.as_millis()
                );
                Ok(())
            }),
            ConfigAction::Show(args) => Config::load(&args.config, &args.set).and_then(|config| {
                print!("{}", toml::to_string_pretty(&config)?);
                Ok(())
            }),
        },
        Command::Lists { action } => match action {
            ListsAction::Import(args) => match args.format {
                ImportFormat::Ut1 => import_ut1(&args.options())
                    .map(|summary| print!("{summary}"))
                    .map_err(Into::into),
                ImportFormat::E2guardianPhrases => {
                    let into = args
                        .into
                        .clone()
                        .unwrap_or_else(|| phrase_import::DEFAULT_INTO.into());
                    phrase_import::import(Path::new(&args.from), &into, &args.categories)
                        .map(|summary| print!("{summary}"))
                }
            },
            ListsAction::Update(args) => lists_command::update(&args),
            ListsAction::Rollback(args) => lists_command::rollback(&args),
            ListsAction::Status(args) => lists_command::status(&args),
        },
        Command::Setup(args) => setup_command::run(&args),
        Command::Ca { action } => ca_command::run(&action),
        Command::Log { action } => log_command::run(&action),
        Command::Users { action } => users_command::run(&action),
        Command::Alerts { action } => alerts_command::run(&action),
        Command::Audit { action } => audit_command::run(&action),
        Command::Report { action } => report_command::run(&action),
        Command::Export { action } => export_command::run(&action),
        Command::Policy { action } => central_policy::run(&action),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("safegate: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Starts jemalloc's background thread, which hands memory freed after a burst back
/// to the system even when no more requests come (without it that happens only on
/// later allocations). A failure costs only that, so it is logged and ignored.
fn return_freed_memory_when_idle() {
    if let Err(error) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(%error, "jemalloc's background thread could not be started; freed memory is returned to the system only under load");
    }
}
