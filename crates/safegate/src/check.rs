//! `safegate check`: the policy's decision for one address, explained. It loads the
//! policy exactly as `safegate run` does and calls the same `Snapshot::decide`.

use anyhow::{Context, Result, anyhow};
use clap::Args;
use jiff::Timestamp;
use safegate_policy::{Decision, Policy, RequestTarget, Role, Subject};

use crate::settings::{Config, ConfigArgs};
use safegate_control::time_text::parse_time;

/// Exit status for a blocked address.
pub const BLOCKED_EXIT: u8 = 3;

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

/// Decides `args.url`; returns whether it is blocked.
pub fn run(args: &CheckArgs) -> Result<bool> {
    let config = Config::load(&args.config.config, &args.config.set)?;
    let path = &config.policy.file;
    let snapshot = Policy::load(path).with_context(|| format!("policy {}", path.display()))?;
    let role = match &args.role {
        Some(name) => name
            .parse::<Role>()
            .map_err(|_| anyhow!("--role {name}: not a role (pupil, staff, filter-admin)"))?,
        None => snapshot.default_role(),
    };
    let now = match &args.at {
        Some(text) => parse_time("--at", text, snapshot.timezone(), Timestamp::now())?,
        None => Timestamp::now(),
    };
    let (mut target, mut host_only) = target_of(&args.url)?;
    let subject = Subject {
        role,
        group: args.group.as_deref(),
        user: args.user.as_deref(),
    };
    // For HTTPS: whether the site is decrypted; with the school CA set up, a
    // decrypted site is decided on its full address, as the proxy does.
    let decrypt = snapshot.decrypt(&target);
    let ca_ready = safegate_proxy::tls::ca::ca_paths(&config.data_dir)
        .0
        .exists();
    if host_only && decrypt.decrypt && ca_ready && args.url.contains('/') {
        target = RequestTarget::parse_url(&args.url).map_err(|e| anyhow!("{}: {e}", args.url))?;
        host_only = false;
    }
    let decision = snapshot.decide(&subject, &target, now);
    let local = now.to_zoned_datetime(snapshot.timezone().clone());
    if args.json {
        let json = serde_json::json!({
            "url": args.url,
            "target": target.url_text(),
            "host_only": host_only,
            "role": role.as_str(),
            "group": args.group,
            "user": args.user,
            "at": local.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string(),
            "verdict": if decision.is_blocked() { "block" } else { "allow" },
            "categories": decision.categories,
            "rule": decision.rule,
            "reason": decision.reason,
            "decrypt": {
                "decrypt": decrypt.decrypt,
                "ca_ready": ca_ready,
                "rule": decrypt.rule,
                "reason": decrypt.reason,
                "block_page": ca_ready && (decrypt.decrypt || snapshot.block_page_over_tls(&target)),
            },
        });
        println!("{json}");
    } else {
        let at = local.strftime("%a %-d %b %Y %H:%M %Z").to_string();
        print_decision(args, &decision, role, &target.url_text(), host_only, &at);
        let status = match (decrypt.decrypt, ca_ready) {
            (true, true) => "decrypted",
            (true, false) => "would be decrypted (no school CA yet: `safegate ca init`)",
            (false, _) => "not decrypted",
        };
        println!(
            "  https:       {status} ({}): {}",
            decrypt.rule, decrypt.reason
        );
        if decision.is_blocked() && !decrypt.decrypt {
            println!(
                "  blocked as:  {}",
                blocked_https(&snapshot, &target, ca_ready)
            );
        }
    }
    Ok(decision.is_blocked())
}

/// What a browser gets for this site when it is blocked over HTTPS and not decrypted.
fn blocked_https(
    snapshot: &safegate_policy::Snapshot,
    target: &RequestTarget,
    ca_ready: bool,
) -> &'static str {
    if !snapshot.block_page_over_tls(target) {
        "the browser's own error page (never decrypted, or decrypt.block_pages = false)"
    } else if ca_ready {
        "the block page over HTTPS (devices that do not trust the school CA get a certificate warning)"
    } else {
        "the browser's own error page (no school CA yet: `safegate ca init`)"
    }
}

fn print_decision(
    args: &CheckArgs,
    decision: &Decision,
    role: Role,
    target: &str,
    host_only: bool,
    at: &str,
) {
    let verdict = if decision.is_blocked() {
        "BLOCK"
    } else {
        "ALLOW"
    };
    println!("{verdict} {}", args.url);
    println!(
        "  matched as:  {target}{}",
        if host_only {
            " (host only, as for an HTTPS tunnel)"
        } else {
            ""
        }
    );
    let mut who = role.as_str().to_owned();
    if let Some(group) = &args.group {
        who.push_str(&format!(" / {group}"));
    }
    if let Some(user) = &args.user {
        who.push_str(&format!(" (user {user})"));
    }
    println!("  for:         {who}");
    println!("  at:          {at}");
    let categories = if decision.categories.is_empty() {
        "none".to_owned()
    } else {
        decision.categories.join(", ")
    };
    println!("  categories:  {categories}");
    println!("  rule:        {}", decision.rule);
    println!("  reason:      {}", decision.reason);
}

/// The target the proxy would decide on: the full URL for `http://`, the host alone
/// for `https://` (a CONNECT tunnel without decryption) and for a bare host.
fn target_of(url: &str) -> Result<(RequestTarget, bool)> {
    let lower = url.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("https://") {
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        // ASCII lower-casing keeps byte offsets, so `end` indexes the original too.
        let authority = &url["https://".len()..];
        let authority = &authority[..end];
        let target =
            RequestTarget::from_parts(authority.rsplit('@').next().unwrap_or(authority), None)
                .map_err(|e| anyhow!("{url}: {e}"))?;
        return Ok((target, true));
    }
    if lower.starts_with("http://") || url.contains('/') {
        let target = RequestTarget::parse_url(url).map_err(|e| anyhow!("{url}: {e}"))?;
        return Ok((target, false));
    }
    let target = RequestTarget::from_parts(url, None).map_err(|e| anyhow!("{url}: {e}"))?;
    Ok((target, true))
}
