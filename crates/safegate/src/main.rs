//! `safegate`: the one SafeGate process and its command line.
//!
//! `safegate run` starts the proxy and the admin listener from `safegate.toml`;
//! `safegate config check|show` validate and print the configuration. Library crates
//! do the work; this binary parses arguments, loads configuration, sets up logging,
//! wires the pieces together and handles signals.

mod cli;
mod logging;
mod service;
mod settings;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, ConfigAction};
use crate::settings::Config;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => Config::load(&args.config, &args.set).and_then(|config| {
            logging::init(&config.log)?;
            service::run(config)
        }),
        Command::Config { action } => match action {
            ConfigAction::Check(args) => Config::load(&args.config, &args.set).map(|config| {
                println!(
                    "{}: configuration is valid (proxy on {}, admin on {}, data in {})",
                    args.config.display(),
                    config.proxy.listen,
                    config.admin.listen,
                    config.data_dir.display()
                );
            }),
            ConfigAction::Show(args) => Config::load(&args.config, &args.set).and_then(|config| {
                print!("{}", toml::to_string_pretty(&config)?);
                Ok(())
            }),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("safegate: {error:#}");
            ExitCode::FAILURE
        }
    }
}
