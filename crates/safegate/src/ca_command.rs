//! `safegate ca init|export`: the school's certificate authority for HTTPS
//! decryption. `init` creates it in `data_dir/ca/` (the key readable by SafeGate's
//! user only) unless one is there already; `export` prints the certificate (PEM, or
//! DER with `--der`) to install on school devices (see `deploy/ca-install.md`). The
//! private key is never printed or logged.

use std::io::Write;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use safegate_proxy::tls::{CaInit, SchoolCa, ca::ca_paths};

use crate::settings::{Config, ConfigArgs};

/// `safegate ca ...`
#[derive(Debug, Subcommand)]
pub enum CaAction {
    /// Create the school CA in data_dir/ca/ (safegate-ca.pem and safegate-ca.key,
    /// mode 0600). An existing CA is kept: devices already trust it. Run as root, it
    /// acts as SafeGate's user. Restart SafeGate afterwards: it then decrypts the sites
    /// the policy's [decrypt] section names and shows block pages for HTTPS sites.
    #[command(
        after_help = "Examples:\n  safegate ca init --name 'Hillside Primary School'\n  sudo -u safegate safegate ca init --config /etc/safegate/safegate.toml"
    )]
    Init(CaInitArgs),
    /// Print the CA certificate to install on school devices: PEM (for most tools and
    /// MDM profiles) or, with --der, binary DER (a .cer file for Windows group policy).
    #[command(
        after_help = "Examples:\n  safegate ca export > safegate-ca.pem\n  safegate ca export --der > safegate-ca.cer"
    )]
    Export(CaExportArgs),
}

/// `safegate ca init`
#[derive(Debug, Args)]
pub struct CaInitArgs {
    /// The school's name, shown in the certificate (what devices list as the issuer).
    #[arg(long, default_value = "School")]
    pub name: String,
    /// Where the configuration (and through it data_dir) comes from.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `safegate ca export`
#[derive(Debug, Args)]
pub struct CaExportArgs {
    /// Binary DER instead of PEM.
    #[arg(long)]
    pub der: bool,
    /// Where the configuration (and through it data_dir) comes from.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Runs one `safegate ca` command.
pub fn run(action: &CaAction) -> Result<()> {
    match action {
        CaAction::Init(args) => {
            let config = Config::load(&args.config.config, &args.config.set)?;
            // Made by root, the key would be root's and SafeGate could not read it.
            if let Some(rerun) = crate::service_user::rerun_if_root(
                &args.config.config,
                &config.data_dir,
                "Creating the CA",
                "so that it can read the key",
            ) {
                anyhow::ensure!(rerun?.success(), "the CA was not created (see above)");
                return Ok(());
            }
            let name = args.name.trim();
            anyhow::ensure!(!name.is_empty(), "--name must not be empty");
            let outcome = SchoolCa::init(&config.data_dir, name)
                .with_context(|| format!("data_dir {}", config.data_dir.display()))?;
            let (cert, key) = ca_paths(&config.data_dir);
            match outcome {
                CaInit::Created => println!(
                    "created the school CA:\n  certificate: {}\n  private key: {} (mode 0600; keep it secret, back it up)\n\
install the certificate on school devices (safegate ca export; see deploy/ca-install.md),\n\
then restart SafeGate: it decrypts the sites the policy's [decrypt] section names and\n\
shows its block page for blocked HTTPS sites",
                    cert.display(),
                    key.display()
                ),
                CaInit::Existing => println!(
                    "the school CA exists already ({}); kept, as devices trust it",
                    cert.display()
                ),
            }
            Ok(())
        }
        CaAction::Export(args) => {
            let config = Config::load(&args.config.config, &args.config.set)?;
            let ca = SchoolCa::load(&config.data_dir)
                .with_context(|| format!("data_dir {}", config.data_dir.display()))?
                .with_context(|| {
                    format!(
                        "no school CA in {}; create it with `safegate ca init`",
                        config.data_dir.display()
                    )
                })?;
            let mut out = std::io::stdout().lock();
            if args.der {
                out.write_all(ca.cert_der())
            } else {
                out.write_all(ca.cert_pem().as_bytes())
            }
            .and_then(|()| out.flush())
            .context("cannot write the certificate to standard output")
        }
    }
}
