//! `[policy.central]` in the running service, and `safegate policy keygen|bundle`.
//!
//! At start, an installed bundle (`data_dir/central/current`) is the policy; without
//! one, SafeGate fetches the bundle once (at most 10 s) before loading, and falls back
//! to `policy.file` if that fails. Then a task fetches the bundle every
//! `policy.central.interval`; a newer, correctly signed bundle whose policy compiles is
//! installed and made live (the reloader loads it, audits the change and counts it);
//! anything else is refused, logged once, and the policy in force stays.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use safegate_central::{CentralConfig, CentralError, LocalSection};
use safegate_proxy::PolicyHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::settings::Config;

/// Most time the first fetch at start may take.
const FIRST_FETCH: Duration = Duration::from_secs(10);

/// `safegate policy ...`.
#[derive(Debug, Subcommand)]
pub enum PolicyAction {
    /// Makes a new Ed25519 key pair for signing the trust's bundles: writes the secret
    /// key to --out (mode 0600) and prints the public key for policy.central.public_key.
    #[command(after_help = "Examples:\n  safegate policy keygen --out /root/trust-policy.key")]
    Keygen(KeygenArgs),
    /// Makes a signed policy bundle: the policy file and the lists under each --lists
    /// folder (paths relative to the folder above the policy's, as the policy names
    /// them). Publish the file at policy.central.url.
    #[command(
        after_help = "Examples:\n  safegate policy bundle --sign /root/trust-policy.key --bundle-version 42 \\\n      --policy config/policy.toml --lists blocklists --out bundle.json"
    )]
    Bundle(BundleArgs),
}

/// `safegate policy keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where the secret key goes (refused if it exists).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// `safegate policy bundle`.
#[derive(Debug, Args)]
pub struct BundleArgs {
    /// The secret key file (from `safegate policy keygen`).
    #[arg(long, value_name = "KEY")]
    pub sign: PathBuf,
    /// The bundle's version: higher than every bundle published before.
    #[arg(long, value_name = "N")]
    pub bundle_version: u64,
    /// The policy file.
    #[arg(long, default_value = "config/policy.toml")]
    pub policy: PathBuf,
    /// Folders (or files) of lists the policy names; may be given many times.
    #[arg(long, value_name = "DIR")]
    pub lists: Vec<PathBuf>,
    /// The bundle file to write.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// Runs one `safegate policy` command.
pub fn run(action: &PolicyAction) -> Result<()> {
    match action {
        PolicyAction::Keygen(args) => {
            let (secret, public) = safegate_central::generate_key()?;
            let mut file = std::fs::OpenOptions::new();
            std::os::unix::fs::OpenOptionsExt::mode(file.write(true).create_new(true), 0o600);
            let mut file = file
                .open(&args.out)
                .with_context(|| format!("cannot create {}", args.out.display()))?;
            std::io::Write::write_all(&mut file, format!("{secret}\n").as_bytes())
                .with_context(|| format!("cannot write {}", args.out.display()))?;
            println!(
                "secret key written to {} (keep it off the schools' servers)",
                args.out.display()
            );
            println!("public key for [policy.central] public_key:\n{public}");
            Ok(())
        }
        PolicyAction::Bundle(args) => {
            let key = safegate_central::signing_key(&args.sign)?;
            let bundle = safegate_central::make_bundle(
                &args.policy,
                &args.lists,
                args.bundle_version,
                &key,
            )?;
            std::fs::write(&args.out, &bundle)
                .with_context(|| format!("cannot write {}", args.out.display()))?;
            println!(
                "bundle version {} ({} bytes) written to {}",
                args.bundle_version,
                bundle.len(),
                args.out.display()
            );
            Ok(())
        }
    }
}

fn central_dir(config: &Config) -> PathBuf {
    config.data_dir.join("central")
}

/// The configuration with `policy.file` pointing at the installed bundle, fetching
/// the first one if none is installed yet (bounded; on failure the configured file
/// stays the policy, and the task installs a bundle later).
pub async fn at_start(mut config: Config) -> Config {
    let Some(central) = config.policy.central.clone() else {
        return config;
    };
    let dir = central_dir(&config);
    if safegate_central::installed_version(&dir).is_none() {
        match tokio::time::timeout(FIRST_FETCH, pull_once(&central, &dir)).await {
            Ok(Ok(version)) => info!(version, "central policy bundle installed"),
            Ok(Err(error)) => warn!(%error, fallback = %config.policy.file.display(),
                "NO CENTRAL POLICY YET: using the local policy file until a bundle is installed"),
            Err(_) => warn!(fallback = %config.policy.file.display(),
                "NO CENTRAL POLICY YET (the trust's server did not answer in 10 s): using the local policy file"),
        }
    }
    if let Some(version) = safegate_central::installed_version(&dir) {
        info!(version, "policy: the trust's central bundle");
        config.policy.file = safegate_central::current_policy(&dir);
    }
    config
}

/// Fetches, verifies and installs the bundle; returns the version installed.
async fn pull_once(central: &CentralConfig, dir: &Path) -> Result<u64> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .use_rustls_tls()
        .build()
        .context("HTTP client")?;
    let response = client
        .get(&central.url)
        .send()
        .await
        .with_context(|| format!("cannot fetch {}", central.url))?;
    anyhow::ensure!(
        response.status().is_success(),
        "{} answered {}",
        central.url,
        response.status()
    );
    let bytes = response.bytes().await.context("reading the bundle")?;
    let key = safegate_central::verifying_key(&central.public_key)?;
    let local = match &central.local {
        Some(path) => Some(LocalSection::load(path)?),
        None => None,
    };
    let dir = dir.to_path_buf();
    let version = tokio::task::spawn_blocking(move || {
        let payload = safegate_central::verify(&bytes, &key)?;
        safegate_central::install(&payload, &dir, local.as_ref())?;
        Ok::<u64, CentralError>(payload.version)
    })
    .await
    .context("installing the bundle")??;
    Ok(version)
}

/// Fetches the bundle every interval; a newer good one goes live through the reloader
/// (when the policy in force is the central one) or straight into `policy`.
pub fn spawn(
    config: &Config,
    policy: PolicyHandle,
    reload_now: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let central = config.policy.central.clone()?;
    let dir = central_dir(config);
    let reloader_follows = config.policy.file == safegate_central::current_policy(&dir);
    let checks = config.lists.checks();
    Some(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(central.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        let mut last_refusal = String::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            match pull_once(&central, &dir).await {
                Ok(version) => {
                    last_refusal.clear();
                    info!(version, "central policy bundle installed");
                    if reloader_follows {
                        reload_now.notify_one();
                    } else {
                        let file = safegate_central::current_policy(&dir);
                        match safegate_reload::load_initial(&file, checks) {
                            Ok(loaded) => policy.store(loaded.load_full()),
                            Err(error) => warn!(%error, "central policy installed but not loaded"),
                        }
                    }
                }
                Err(error) => {
                    let text = format!("{error:#}");
                    let not_newer = error
                        .downcast_ref::<CentralError>()
                        .is_some_and(|e| matches!(e, CentralError::NotNewer { .. }));
                    if not_newer {
                        debug!(%text, "central policy unchanged");
                    } else if text != last_refusal {
                        warn!(error = %text, "CENTRAL POLICY BUNDLE REFUSED: the policy in force stays");
                        last_refusal = text;
                    }
                }
            }
        }
    }))
}
