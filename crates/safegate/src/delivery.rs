//! Alert delivery: each new alert at or above `delivery.min_severity` is POSTed as JSON
//! to `delivery.webhook_url` and mailed to `delivery.email_to` over SMTP. Each
//! delivery runs in its own task and is retried with exponential back-off (1 s,
//! doubling, at most 5 minutes apart) for `delivery.retry_for`; nothing waits on it:
//! the alert engine hands alerts over with `try_send`, and an alert is stored before
//! it is delivered, so a failed delivery loses nothing from the admin interface.
//!
//! The SMTP password is read from `delivery.smtp.password_file` at start-up and never
//! logged; the webhook URL is logged without its query (it may carry a token).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use jiff::tz::TimeZone;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use safegate_store::{Alert, Severity};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::time_arg::local_text;

/// Alerts waiting for delivery; beyond it the engine counts them as not delivered.
pub const DELIVERY_QUEUE: usize = 1024;
/// First wait before a retry.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Longest wait between retries.
const LONGEST_RETRY: Duration = Duration::from_secs(300);
/// Evidence records listed in an alert e-mail.
const EVIDENCE_IN_MAIL: usize = 10;

/// `[delivery]`: where new alerts are sent besides the admin interface.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// URL that receives each new alert as a JSON POST; empty: no webhook.
    pub webhook_url: String,
    /// Addresses that receive each new alert by e-mail; empty: no e-mail.
    pub email_to: Vec<String>,
    /// Least severity delivered: "low", "medium" or "high".
    pub min_severity: Severity,
    /// How long a failing delivery is retried.
    #[serde(with = "humantime_serde")]
    pub retry_for: Duration,
    /// The mail server (used by alert e-mails and the weekly report).
    pub smtp: SmtpConfig,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            webhook_url: String::new(),
            email_to: Vec::new(),
            min_severity: Severity::Medium,
            retry_for: Duration::from_secs(6 * 60 * 60),
            smtp: SmtpConfig::default(),
        }
    }
}

/// How the connection to the mail server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain SMTP (only for a relay on the same machine or a test sink).
    None,
    /// STARTTLS required (port 587).
    Starttls,
    /// TLS from the start (port 465).
    Tls,
}

/// `[delivery.smtp]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpConfig {
    /// Mail server host name; empty: no e-mail at all.
    pub host: String,
    /// Mail server port.
    pub port: u16,
    /// `none`, `starttls` or `tls`. Certificates are always verified.
    pub security: SmtpSecurity,
    /// Sender address, e.g. "SafeGate <safegate@school.example>".
    pub from: String,
    /// User name for SMTP authentication; empty: none.
    pub username: String,
    /// File holding the SMTP password (first line); never logged.
    pub password_file: Option<PathBuf>,
    /// Longest wait for the mail server.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            host: String::new(),
            port: 587,
            security: SmtpSecurity::Starttls,
            from: "SafeGate <safegate@localhost>".to_owned(),
            username: String::new(),
            password_file: None,
            timeout: Duration::from_secs(30),
        }
    }
}

impl DeliveryConfig {
    /// Every problem, as (key, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if !self.webhook_url.is_empty() {
            match reqwest::Url::parse(&self.webhook_url) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => {}
                _ => problems.push((
                    "delivery.webhook_url".to_owned(),
                    "must be an http:// or https:// URL".to_owned(),
                )),
            }
        }
        if !self.email_to.is_empty() && self.smtp.host.is_empty() {
            problems.push((
                "delivery.email_to".to_owned(),
                "needs delivery.smtp.host".to_owned(),
            ));
        }
        for (i, to) in self.email_to.iter().enumerate() {
            if to.parse::<Mailbox>().is_err() {
                problems.push((
                    format!("delivery.email_to[{i}]"),
                    format!("`{to}` is not an e-mail address"),
                ));
            }
        }
        if !self.smtp.host.is_empty() && self.smtp.from.parse::<Mailbox>().is_err() {
            problems.push((
                "delivery.smtp.from".to_owned(),
                "is not an e-mail address".to_owned(),
            ));
        }
        problems
    }
}

/// An SMTP client for SafeGate's mails.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

/// One file attached to a mail.
pub struct MailFile {
    /// File name.
    pub name: String,
    /// MIME type.
    pub content_type: String,
    /// Contents.
    pub bytes: Vec<u8>,
}

impl Mailer {
    /// A client for `smtp`; `None` when no mail server is configured.
    pub fn new(smtp: &SmtpConfig) -> Result<Option<Self>> {
        if smtp.host.is_empty() {
            return Ok(None);
        }
        let builder = match smtp.security {
            SmtpSecurity::None => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
            }
            SmtpSecurity::Starttls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host)
                    .context("delivery.smtp")?
            }
            SmtpSecurity::Tls => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host).context("delivery.smtp")?
            }
        };
        let mut builder = builder.port(smtp.port).timeout(Some(smtp.timeout));
        if !smtp.username.is_empty() {
            let password = match &smtp.password_file {
                Some(path) => std::fs::read_to_string(path)
                    .with_context(|| format!("delivery.smtp.password_file {}", path.display()))?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
                None => String::new(),
            };
            builder = builder.credentials(Credentials::new(smtp.username.clone(), password));
        }
        let from = smtp
            .from
            .parse::<Mailbox>()
            .map_err(|e| anyhow!("delivery.smtp.from: {e}"))?;
        Ok(Some(Self {
            transport: builder.build(),
            from,
        }))
    }

    /// Sends one mail with a text body and attachments.
    pub async fn send(
        &self,
        to: &[String],
        subject: &str,
        body: &str,
        files: &[MailFile],
    ) -> Result<()> {
        let mut message = Message::builder().from(self.from.clone()).subject(subject);
        for to in to {
            message = message.to(to.parse::<Mailbox>().map_err(|e| anyhow!("{to}: {e}"))?);
        }
        let mut parts = MultiPart::mixed().singlepart(SinglePart::plain(body.to_owned()));
        for file in files {
            let content_type =
                ContentType::parse(&file.content_type).unwrap_or(ContentType::TEXT_PLAIN);
            parts = parts.singlepart(
                Attachment::new(file.name.clone()).body(file.bytes.clone(), content_type),
            );
        }
        let message = message
            .multipart(parts)
            .context("cannot build the e-mail")?;
        self.transport
            .send(message)
            .await
            .context("the mail server refused or could not be reached")?;
        Ok(())
    }
}

/// Retries `attempt` with exponential back-off until it succeeds, `retry_for` has
/// passed, or shutdown; logs the outcome with `what`.
pub async fn with_retries<F, Fut>(
    what: &str,
    retry_for: Duration,
    shutdown: &CancellationToken,
    mut attempt: F,
) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let started = tokio::time::Instant::now();
    let mut wait = FIRST_RETRY;
    let mut tries = 0u32;
    loop {
        tries += 1;
        match attempt().await {
            Ok(()) => {
                info!(tries, "{what}: delivered");
                return true;
            }
            Err(error) => {
                if started.elapsed() + wait > retry_for {
                    warn!(tries, "{what}: NOT DELIVERED, giving up: {error:#}");
                    return false;
                }
                warn!(tries, retry_in = ?wait, "{what}: failed, will retry: {error:#}");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => {
                warn!(tries, "{what}: NOT DELIVERED, SafeGate is stopping");
                return false;
            }
            () = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(LONGEST_RETRY);
    }
}

/// Starts delivery when a webhook or e-mail recipients are configured; returns the
/// queue the engine hands new alerts to.
pub fn spawn(
    config: &DeliveryConfig,
    tz: TimeZone,
    shutdown: CancellationToken,
) -> Result<Option<(mpsc::Sender<Alert>, JoinHandle<()>)>> {
    let mailer = if config.email_to.is_empty() {
        None
    } else {
        Mailer::new(&config.smtp)?
    };
    if config.webhook_url.is_empty() && mailer.is_none() {
        return Ok(None);
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("cannot build the webhook client")?;
    let (sender, mut receiver) = mpsc::channel::<Alert>(DELIVERY_QUEUE);
    let config = Arc::new(config.clone());
    let task = tokio::spawn(async move {
        let tasks = tokio_util::task::TaskTracker::new();
        while let Some(alert) = receiver.recv().await {
            if alert.severity < config.min_severity {
                continue;
            }
            let alert = Arc::new(alert);
            if !config.webhook_url.is_empty() {
                let (client, config, alert, shutdown) = (
                    client.clone(),
                    Arc::clone(&config),
                    Arc::clone(&alert),
                    shutdown.clone(),
                );
                tasks.spawn(async move {
                    let what = format!(
                        "alert {} webhook to {}",
                        alert.id,
                        without_query(&config.webhook_url)
                    );
                    with_retries(&what, config.retry_for, &shutdown, || {
                        post_webhook(&client, &config.webhook_url, &alert)
                    })
                    .await;
                });
            }
            if let Some(mailer) = &mailer {
                let (mailer, config, alert, shutdown, tz) = (
                    mailer.clone(),
                    Arc::clone(&config),
                    Arc::clone(&alert),
                    shutdown.clone(),
                    tz.clone(),
                );
                tasks.spawn(async move {
                    let what = format!("alert {} e-mail", alert.id);
                    let (subject, body) = alert_mail(&alert, &tz);
                    with_retries(&what, config.retry_for, &shutdown, || {
                        mailer.send(&config.email_to, &subject, &body, &[])
                    })
                    .await;
                });
            }
        }
        tasks.close();
        tasks.wait().await;
    });
    Ok(Some((sender, task)))
}

async fn post_webhook(client: &reqwest::Client, url: &str, alert: &Alert) -> Result<()> {
    let response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(
            &serde_json::json!({ "source": "safegate", "alert": alert }),
        )?)
        .send()
        .await
        .context("cannot reach the webhook")?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(anyhow!("the webhook answered {status}"))
    }
}

fn without_query(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

/// The subject and text of an alert e-mail.
pub fn alert_mail(alert: &Alert, tz: &TimeZone) -> (String, String) {
    let subject = format!(
        "[SafeGate] {} alert #{}: {} ({})",
        alert.severity.as_str().to_uppercase(),
        alert.id,
        alert.kind.as_str(),
        alert.who
    );
    let mut body = format!(
        "SafeGate raised a {} alert.\n\nAlert:    #{}\nKind:     {}\nWho:      {} (role {}{})\nWhen:     {}\nSummary:  {}\n\nEvidence:\n",
        alert.severity.as_str(),
        alert.id,
        alert.kind.as_str(),
        alert.who,
        alert.role,
        alert
            .group
            .as_deref()
            .map(|g| format!(", group {g}"))
            .unwrap_or_default(),
        local_text(alert.first_at_unix_micros, tz),
        alert.summary,
    );
    for record in alert.evidence.iter().take(EVIDENCE_IN_MAIL) {
        body.push_str(&format!(
            "  {}  {:?}  {}{}{}\n",
            local_text(record.at_unix_micros, tz),
            record.outcome,
            record.host,
            record.path.as_deref().unwrap_or(""),
            record
                .search
                .as_ref()
                .map(|s| format!("  search: {}", s.terms))
                .unwrap_or_default()
        ));
    }
    if alert.evidence.is_empty() {
        body.push_str("  (no records: see the summary)\n");
    }
    body.push_str("\nAcknowledge or close it with `safegate alerts ack|close ");
    body.push_str(&alert.id.to_string());
    body.push_str("` or in the admin interface.\n");
    (subject, body)
}
