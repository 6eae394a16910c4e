//! `safegate export init-clickhouse`: creates the trust's database and tables in
//! ClickHouse from `[export.clickhouse]` (if they are missing), with a retention TTL
//! where the server supports one (19.6 and later), and prints what it ran; the same
//! statements are in the README for a trust's DBA.

use anyhow::{Context, Result, anyhow};
use clap::{Args, Subcommand};

use crate::settings::{Config, ConfigArgs};

/// `safegate export ...`.
#[derive(Debug, Subcommand)]
pub enum ExportAction {
    /// Creates the ClickHouse database and tables named in [export.clickhouse] (if
    /// missing). Asks the server its version first: servers before 19.6 (Debian
    /// bookworm has 18.16) get no TTL clause; rows are then kept until the DBA drops
    /// old partitions.
    #[command(
        after_help = "Examples:\n  safegate export init-clickhouse\n  safegate export init-clickhouse --print"
    )]
    InitClickhouse(InitArgs),
}

/// `safegate export init-clickhouse`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Print the statements (for a DBA) instead of running them; with a TTL clause.
    #[arg(long)]
    pub print: bool,
    /// Where the configuration comes from.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Runs one `safegate export` command.
pub fn run(action: &ExportAction) -> Result<()> {
    let ExportAction::InitClickhouse(args) = action;
    let config = Config::load(&args.config.config, &args.config.set)?;
    let clickhouse = config
        .export
        .clickhouse
        .ok_or_else(|| anyhow!("no [export.clickhouse] section in the configuration"))?;
    if args.print {
        let schema = || {
            let mut all = safegate_export::schema::create_statements(&clickhouse, true);
            all.extend(safegate_export::schema::upgrade_statements(
                &clickhouse,
                &[],
            ));
            all
        };
        for statement in schema() {
            println!("{statement};\n");
        }
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let done = runtime
        .block_on(safegate_export::init_clickhouse(&clickhouse))
        .with_context(|| format!("ClickHouse at {}", clickhouse.url))?;
    println!(
        "ClickHouse {} at {}: tables {} and {} ready ({})",
        done.version,
        clickhouse.url,
        clickhouse.visits(),
        clickhouse.alerts(),
        if done.ttl {
            format!("rows kept {} days (TTL)", clickhouse.retention_days)
        } else if clickhouse.retention_days == 0 {
            "no TTL: retention_days = 0".to_owned()
        } else {
            "no TTL: this server is older than 19.6; drop old monthly partitions to purge"
                .to_owned()
        }
    );
    Ok(())
}
