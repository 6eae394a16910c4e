//! `safegate audit list|verify`: the append-only, hash-chained audit log of policy
//! changes, unblocks, review decisions, alert handling and views of one person's
//! history. Like `safegate log`, it works on the database directly or, while SafeGate
//! runs, through its control socket ([`safegate_control`]).

use anyhow::Result;
use clap::{Args, Subcommand};
use safegate_control::audit::{AuditRequest, INTACT};
use safegate_control::time_text::policy_timezone;
use safegate_control::{Request, open_store_or_connect};
use safegate_store::NotedHead;

use crate::settings::{Config, ConfigArgs};

/// `safegate audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditAction {
    /// List audit entries, oldest first: sequence, time (school time), who, action,
    /// subject, what changed and why.
    List(AuditListArgs),
    /// Check the whole chain (every entry's hash and link, no gaps); prints the head's
    /// sequence and hash to note down, and exits with status 1 if anything was altered
    /// or removed. With --noted-head, also that the chain still holds a head noted
    /// earlier (from this output or the service's log): removing the newest entries
    /// and rewriting the head is caught only this way.
    Verify(AuditVerifyArgs),
}

/// `safegate audit list`.
#[derive(Debug, Args)]
pub struct AuditListArgs {
    /// First entry to show (sequence number, from 1).
    #[arg(long, default_value_t = 1)]
    pub from: u64,
    /// Most entries to show.
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
    /// JSON (an array of entries) instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `safegate audit verify`.
#[derive(Debug, Args)]
pub struct AuditVerifyArgs {
    /// A head noted earlier, as printed ("#12 3fa0…") or logged ("12:3fa0…").
    #[arg(long, value_name = "HEAD", value_parser = parse_noted_head)]
    pub noted_head: Option<NotedHead>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Runs `safegate audit ...`.
pub fn run(action: &AuditAction) -> Result<()> {
    let (config_args, request) = match action {
        AuditAction::List(args) => {
            let config = Config::load(&args.config.config, &args.config.set)?;
            let (_, timezone) = policy_timezone(&config.policy.file);
            (
                config,
                AuditRequest::List {
                    from: args.from,
                    limit: args.limit,
                    json: args.json,
                    timezone,
                },
            )
        }
        AuditAction::Verify(args) => (
            Config::load(&args.config.config, &args.config.set)?,
            AuditRequest::Verify {
                noted_head: args.noted_head,
            },
        ),
    };
    let access = open_store_or_connect(&config_args.data_dir)?;
    let mut out = Vec::new();
    access.run(&Request::Audit(request.clone()), &mut out)?;
    let text = String::from_utf8_lossy(&out);
    print!("{text}");
    if matches!(request, AuditRequest::Verify { .. }) && !text.starts_with(INTACT) {
        anyhow::bail!("the audit log was altered or entries were removed");
    }
    Ok(())
}

fn parse_noted_head(text: &str) -> Result<NotedHead, String> {
    NotedHead::parse(text).ok_or_else(|| {
        "expected a sequence and a 64-digit hex hash, as `safegate audit verify` prints them: \"#12 3fa0…\" or \"12:3fa0…\"".to_owned()
    })
}
