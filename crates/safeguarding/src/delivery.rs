//! Alert delivery: each new alert at or above `delivery.min_severity` is POSTed as JSON
//! to `delivery.webhook_url` and mailed to `delivery.email_to` over SMTP. Each
//! delivery runs in its own task and is retried with exponential back-off (1 s,
//! doubling, at most 5 minutes apart) for `delivery.retry_for`; nothing waits on it:
//! the alert engine hands alerts over with `try_send`, and an alert is stored before
//! it is delivered, so a failed delivery loses nothing from the admin interface.
//! System notices (SafeGate's visit log cannot be written, and is again) go the same
//! ways, whatever the severity threshold, for the technician ([`SystemNotice`]).
//!
//! The SMTP password is read from `delivery.smtp.password_file` at start-up and never
//! logged; the webhook URL is logged without its query (it may carry a token).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use safegate_config::ConfigProblem;
use safegate_store::{Alert, Severity};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Alerts waiting for delivery; beyond it the engine counts them as not delivered.
pub const DELIVERY_QUEUE: usize = 1024;
/// First wait before a retry.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Longest wait between retries.
const LONGEST_RETRY: Duration = Duration::from_secs(300);
/// Evidence records listed in an alert e-mail.
const EVIDENCE_IN_MAIL: usize = 10;

/// Why a mail or a webhook call could not be made or sent.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The mail server could not be set up or refused the mail (`what` says which).
    #[error("{what}")]
    Smtp {
        /// What was being done.
        what: &'static str,
        /// What the mail library said.
        source: lettre::transport::smtp::Error,
    },
    /// The SMTP password file cannot be read.
    #[error("delivery.smtp.password_file {}", path.display())]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// An address is not one (the key or address, and why).
    #[error("{0}")]
    Address(String),
    /// The mail could not be put together.
    #[error("cannot build the e-mail")]
    Message(#[source] lettre::error::Error),
    /// The webhook could not be set up or reached (`what` says which).
    #[error("{what}")]
    Http {
        /// What was being done.
        what: &'static str,
        /// What the HTTP client said.
        source: reqwest::Error,
    },
    /// The webhook answered with an error status.
    #[error("the webhook answered {0}")]
    Status(reqwest::StatusCode),
    /// The alert could not be encoded.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

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
    /// Every problem, with its key.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if !self.webhook_url.is_empty() {
            match reqwest::Url::parse(&self.webhook_url) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => {}
                _ => problems.push(ConfigProblem::new(
                    "delivery.webhook_url",
                    "must be an http:// or https:// URL",
                )),
            }
        }
        if !self.email_to.is_empty() && self.smtp.host.is_empty() {
            problems.push(ConfigProblem::new(
                "delivery.email_to",
                "needs delivery.smtp.host",
            ));
        }
        for (i, to) in self.email_to.iter().enumerate() {
            if to.parse::<Mailbox>().is_err() {
                problems.push(ConfigProblem::new(
                    format!("delivery.email_to[{i}]"),
                    format!("`{to}` is not an e-mail address"),
                ));
            }
        }
        if !self.smtp.host.is_empty() && self.smtp.from.parse::<Mailbox>().is_err() {
            problems.push(ConfigProblem::new(
                "delivery.smtp.from",
                "is not an e-mail address",
            ));
        }
        problems
    }
}

/// The address part of an e-mail address as written in the configuration
/// (`Head <HEAD@School.test>` gives `head@school.test`), or `None` when it is not one.
pub fn mail_address(text: &str) -> Option<String> {
    let mailbox = text.parse::<Mailbox>().ok()?;
    Some(mailbox.email.to_string().to_ascii_lowercase())
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
    pub fn new(smtp: &SmtpConfig) -> Result<Option<Self>, DeliveryError> {
        if smtp.host.is_empty() {
            return Ok(None);
        }
        let builder = match smtp.security {
            SmtpSecurity::None => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
            }
            SmtpSecurity::Starttls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host)
                    .map_err(smtp_setup)?
            }
            SmtpSecurity::Tls => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host).map_err(smtp_setup)?
            }
        };
        let mut builder = builder.port(smtp.port).timeout(Some(smtp.timeout));
        if !smtp.username.is_empty() {
            let password = match &smtp.password_file {
                Some(path) => std::fs::read_to_string(path)
                    .map_err(|source| DeliveryError::PasswordFile {
                        path: path.clone(),
                        source,
                    })?
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
            .map_err(|e| DeliveryError::Address(format!("delivery.smtp.from: {e}")))?;
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
    ) -> Result<(), DeliveryError> {
        let mut message = Message::builder().from(self.from.clone()).subject(subject);
        for to in to {
            message = message.to(to
                .parse::<Mailbox>()
                .map_err(|e| DeliveryError::Address(format!("{to}: {e}")))?);
        }
        let mut parts = MultiPart::mixed().singlepart(SinglePart::plain(body.to_owned()));
        for file in files {
            let content_type =
                ContentType::parse(&file.content_type).unwrap_or(ContentType::TEXT_PLAIN);
            parts = parts.singlepart(
                Attachment::new(file.name.clone()).body(file.bytes.clone(), content_type),
            );
        }
        let message = message.multipart(parts).map_err(DeliveryError::Message)?;
        self.transport
            .send(message)
            .await
            .map_err(|source| DeliveryError::Smtp {
                what: "the mail server refused or could not be reached",
                source,
            })?;
        Ok(())
    }
}

fn smtp_setup(source: lettre::transport::smtp::Error) -> DeliveryError {
    DeliveryError::Smtp {
        what: "delivery.smtp",
        source,
    }
}

/// An error and its sources, `: ` between them (as `anyhow` writes `{:#}`), for the
/// log.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Retries `attempt` with exponential back-off until it succeeds, `retry_for` has
/// passed, or shutdown; logs the outcome with `what`.
pub async fn with_retries<F, Fut, E>(
    what: &str,
    retry_for: Duration,
    shutdown: &CancellationToken,
    mut attempt: F,
) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::error::Error,
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
                let error = error_chain(&error);
                if started.elapsed() + wait > retry_for {
                    warn!(tries, "{what}: NOT DELIVERED, giving up: {error}");
                    return false;
                }
                warn!(tries, retry_in = ?wait, "{what}: failed, will retry: {error}");
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

/// A notice about SafeGate itself rather than about a person (the visit log cannot
/// be written; it is written again), for the technician: sent to the same webhook
/// and addresses as alerts, whatever `delivery.min_severity`, and not stored (the
/// database may be what is failing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SystemNotice {
    /// What it is about: `store_not_writable`, `store_writable`.
    pub kind: &'static str,
    /// One line for people.
    pub summary: String,
    /// When, Unix microseconds.
    pub at_unix_micros: u64,
}

/// System notices waiting for delivery; beyond it they are dropped (they are rare:
/// one when a failure starts, one when it ends).
pub const NOTICE_QUEUE: usize = 16;

/// Running delivery: the queues the engine hands new alerts to and the service hands
/// system notices to, and the task.
pub struct Delivery {
    /// New alerts.
    pub alerts: mpsc::Sender<Alert>,
    /// System notices.
    pub notices: mpsc::Sender<SystemNotice>,
    /// Ends once the alert queue has closed and every delivery has ended.
    pub task: JoinHandle<()>,
}

/// One message for the webhook and the mail recipients.
enum Outgoing {
    /// An alert and its short number for people (`#35`), when the store gave one.
    Alert(Box<Alert>, Option<u64>),
    Notice(SystemNotice),
}

/// What a delivery task needs.
#[derive(Clone)]
struct Channels {
    client: reqwest::Client,
    mailer: Option<Mailer>,
    config: Arc<DeliveryConfig>,
    tz: TimeZone,
    shutdown: CancellationToken,
}

/// Starts delivery when a webhook or e-mail recipients are configured; returns the
/// queues the engine hands new alerts to and the service hands system notices to.
pub fn spawn(
    config: &DeliveryConfig,
    tz: TimeZone,
    numbers: AlertNumbers,
    shutdown: CancellationToken,
) -> Result<Option<Delivery>, DeliveryError> {
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
        .map_err(|source| DeliveryError::Http {
            what: "cannot build the webhook client",
            source,
        })?;
    let (sender, mut receiver) = mpsc::channel::<Alert>(DELIVERY_QUEUE);
    let (notice_sender, mut notices) = mpsc::channel::<SystemNotice>(NOTICE_QUEUE);
    let channels = Channels {
        client,
        mailer,
        config: Arc::new(config.clone()),
        tz,
        shutdown,
    };
    let task = tokio::spawn(async move {
        let tasks = tokio_util::task::TaskTracker::new();
        let mut notices_open = true;
        loop {
            let message = tokio::select! {
                alert = receiver.recv() => match alert {
                    Some(alert) if alert.severity < channels.config.min_severity => continue,
                    Some(alert) => {
                        let number = numbers(alert.id);
                        Outgoing::Alert(Box::new(alert), number)
                    }
                    None => break,
                },
                notice = notices.recv(), if notices_open => match notice {
                    Some(notice) => Outgoing::Notice(notice),
                    None => { notices_open = false; continue; }
                },
            };
            deliver(&tasks, &channels, &message);
        }
        tasks.close();
        tasks.wait().await;
    });
    Ok(Some(Delivery {
        alerts: sender,
        notices: notice_sender,
        task,
    }))
}

/// Starts the webhook call and the mail for one message, each retried on its own.
fn deliver(tasks: &tokio_util::task::TaskTracker, channels: &Channels, message: &Outgoing) {
    let (name, body, mail) = match message {
        Outgoing::Alert(alert, number) => (
            format!("alert {}", alert.id),
            serde_json::json!({ "source": "safegate", "number": number, "alert": alert }),
            alert_mail(alert, *number, &channels.tz),
        ),
        Outgoing::Notice(notice) => (
            format!("system notice {}", notice.kind),
            serde_json::json!({ "source": "safegate", "system": notice }),
            notice_mail(notice, &channels.tz),
        ),
    };
    if !channels.config.webhook_url.is_empty() {
        let (channels, body) = (channels.clone(), body);
        let what = format!(
            "{name} webhook to {}",
            without_query(&channels.config.webhook_url)
        );
        tasks.spawn(async move {
            let config = &channels.config;
            with_retries(&what, config.retry_for, &channels.shutdown, || {
                post_webhook(&channels.client, &config.webhook_url, &body)
            })
            .await;
        });
    }
    if let Some(mailer) = channels.mailer.clone() {
        let channels = channels.clone();
        let what = format!("{name} e-mail");
        let (subject, text) = mail;
        tasks.spawn(async move {
            let config = &channels.config;
            with_retries(&what, config.retry_for, &channels.shutdown, || {
                mailer.send(&config.email_to, &subject, &text, &[])
            })
            .await;
        });
    }
}

async fn post_webhook(
    client: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> Result<(), DeliveryError> {
    let response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(body)?)
        .send()
        .await
        .map_err(|source| DeliveryError::Http {
            what: "cannot reach the webhook",
            source,
        })?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(DeliveryError::Status(status))
    }
}

fn without_query(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

/// An alert's short number for people (`#35`) from its id, when the store has one.
pub type AlertNumbers = Arc<dyn Fn(u64) -> Option<u64> + Send + Sync>;

/// The subject and text of an alert e-mail; `number` is its short number (`#35`),
/// the long id standing in when there is none.
pub fn alert_mail(alert: &Alert, number: Option<u64>, tz: &TimeZone) -> (String, String) {
    let number = number.unwrap_or(alert.id);
    let kind = alert.kind.in_words();
    let subject = format!(
        "[SafeGate] {} alert #{number}: {kind} ({})",
        alert.severity.as_str().to_uppercase(),
        alert.who
    );
    let mut body = format!(
        "SafeGate raised a {} alert.\n\nAlert:    #{number}\nKind:     {kind}\nWho:      {} (role {}{})\nWhen:     {}\nSummary:  {}\n\nEvidence:\n",
        alert.severity.as_str(),
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
    body.push_str("\nAcknowledge or close it with `safegate alerts ack|close #");
    body.push_str(&number.to_string());
    body.push_str("` or in the admin interface.\n");
    (subject, body)
}

/// The subject and text of a system notice's e-mail.
pub fn notice_mail(notice: &SystemNotice, tz: &TimeZone) -> (String, String) {
    let subject = format!("[SafeGate] SYSTEM: {}", notice.summary);
    let body = format!(
        "SafeGate reports a problem with itself (not about a person): for the technician.\n\n\
         What:  {}\nWhen:  {}\nKind:  {}\n\n\
         /readyz on the admin listener and `safegate doctor` say more.\n",
        notice.summary,
        local_text(notice.at_unix_micros, tz),
        notice.kind,
    );
    (subject, body)
}

/// `at_micros` as local time in `tz`, `2026-11-23 10:00:05`.
fn local_text(at_micros: u64, tz: &TimeZone) -> String {
    match Timestamp::from_microsecond(i64::try_from(at_micros).unwrap_or(i64::MAX)) {
        Ok(ts) => ts
            .to_zoned_datetime(tz.clone())
            .strftime("%Y-%m-%d %H:%M:%S")
            .to_string(),
        Err(_) => format!("@{at_micros}us"),
    }
}
