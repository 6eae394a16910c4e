//! `safegate.toml`: the whole configuration, read from the file, amended by
//! `--set KEY=VALUE` overrides (dotted key, TOML value), then validated. Every error
//! names the file (or the `--set`), the key, and what is wrong.
//!
//! [`ConfigArgs`] is the command line's side of it (`--config FILE` and the `--set`s),
//! shared by every command that reads the configuration.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use safegate_admin::AdminConfig;
use safegate_config::ConfigProblem;
use safegate_proxy::auth::AuthConfig;
use safegate_proxy::{PacConfig, ProxyConfig, TransparentConfig, UpstreamConfig};
use safegate_reload::ListsConfig;
use safegate_report::scheduler::ReportConfig;
use safegate_safeguarding::DeliveryConfig;
use safegate_store::StoreConfig;
use serde::{Deserialize, Serialize};

/// Where the configuration comes from.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Configuration file; every key is documented in the shipped config/safegate.toml.
    /// Default: config/safegate.toml in the current folder (a source checkout), else
    /// the package's /etc/safegate/safegate.toml.
    #[arg(
        short,
        long,
        value_name = "FILE",
        env = "SAFEGATE_CONFIG",
        default_value_os_t = default_config()
    )]
    pub config: PathBuf,
    /// Override one key: dotted key = TOML value (quote strings), e.g.
    /// --set 'proxy.listen="0.0.0.0:3128"' or --set upstream.allow_loopback=true.
    /// May be given many times.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// `config/safegate.toml` where it exists (running from a source checkout), else the
/// installed package's configuration where that exists, else the former (so the error
/// names the file a newcomer is told about).
fn default_config() -> PathBuf {
    const CHECKOUT: &str = "config/safegate.toml";
    const PACKAGE: &str = "/etc/safegate/safegate.toml";
    if !Path::new(CHECKOUT).exists() && Path::new(PACKAGE).is_file() {
        PathBuf::from(PACKAGE)
    } else {
        PathBuf::from(CHECKOUT)
    }
}

/// The configuration of one SafeGate process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Directory for SafeGate's state (database, generated CA, reports).
    pub data_dir: PathBuf,
    /// The client-facing proxy listener.
    pub proxy: ProxyConfig,
    /// How origins are reached.
    pub upstream: UpstreamConfig,
    /// The proxy auto-configuration file.
    pub pac: PacConfig,
    /// Listeners for traffic the router redirects (transparent mode).
    pub transparent: TransparentConfig,
    /// The admin listener.
    pub admin: AdminConfig,
    /// The policy file.
    pub policy: PolicyConfig,
    /// How list files are screened before they go live.
    pub lists: ListsConfig,
    /// Proxy authentication and address bindings.
    pub auth: AuthConfig,
    /// The visit log.
    pub store: StoreConfig,
    /// Logging.
    pub log: LogConfig,
    /// Where new safeguarding alerts are sent (webhook, e-mail).
    pub delivery: DeliveryConfig,
    /// The weekly sweep report's schedule and recipients.
    pub report: ReportConfig,
    /// Computer names for alerts (`[devices]`: a map, a DHCP leases file, reverse DNS).
    pub devices: safegate_safeguarding::computers::DevicesConfig,
    /// Shipping visit records and alerts to the trust's ClickHouse (`[export.clickhouse]`).
    pub export: safegate_export::ExportConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            proxy: ProxyConfig::default(),
            upstream: UpstreamConfig::default(),
            pac: PacConfig::default(),
            transparent: TransparentConfig::default(),
            admin: AdminConfig::default(),
            policy: PolicyConfig::default(),
            lists: ListsConfig::default(),
            auth: AuthConfig::default(),
            store: StoreConfig::default(),
            log: LogConfig::default(),
            delivery: DeliveryConfig::default(),
            report: ReportConfig::default(),
            devices: safegate_safeguarding::computers::DevicesConfig::default(),
            export: safegate_export::ExportConfig::default(),
        }
    }
}

/// `[policy]`: where the policy lives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// The policy file; a relative path is relative to the configuration file.
    pub file: PathBuf,
    /// Reload when the policy file changes (SIGHUP always reloads).
    pub watch: bool,
    /// The former address bindings, now `[[auth.bindings]]`: only read to say so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_roles: Option<toml::Value>,
    /// The trust's signed policy bundle (`[policy.central]`); while none is installed,
    /// `file` is the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub central: Option<safegate_central::CentralConfig>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            file: PathBuf::from("policy.toml"),
            watch: true,
            client_roles: None,
            central: None,
        }
    }
}

/// `[log]`: what is logged and how.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Level or tracing filter (`info`, `debug`, `safegate_proxy=debug,info`).
    pub level: String,
    /// `text` for people, `json` for log collectors.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Config {
    /// Reads `path`, applies `overrides` (`KEY=VALUE` each) and validates.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read configuration file {}", path.display()))?;
        let file = path.display();
        let deserializer = toml::Deserializer::parse(&text)
            .map_err(|e| anyhow!("{file}:{}{}", location(&text, e.span()), e.message()))?;
        let mut config: Config = serde_path_to_error::deserialize(deserializer)
            .map_err(|e| describe_error(&file.to_string(), &text, &e))?;
        if !overrides.is_empty() {
            let mut table: toml::Table =
                toml::from_str(&text).map_err(|e| anyhow!("{file}: {e}"))?;
            for assignment in overrides {
                safegate_config::apply_override(&mut table, assignment)?;
            }
            config = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                anyhow!(
                    "--set: key `{}`: {}",
                    e.path(),
                    e.inner().message().trim_end()
                )
            })?;
        }
        if config.policy.file.is_relative() {
            let base = path.parent().unwrap_or(Path::new(""));
            config.policy.file = base.join(&config.policy.file);
        }
        let base = path.parent().unwrap_or(Path::new(""));
        for root in &mut config.upstream.extra_roots {
            if root.is_relative() {
                *root = base.join(&*root);
            }
        }
        for into in config
            .lists
            .feeds
            .iter_mut()
            .filter_map(|f| f.into.as_mut())
        {
            if into.is_relative() {
                *into = base.join(&*into);
            }
        }
        if let Some(local) = config
            .policy
            .central
            .as_mut()
            .and_then(|c| c.local.as_mut())
            && local.is_relative()
        {
            *local = base.join(&*local);
        }
        let problems = config.validate();
        if !problems.is_empty() {
            let mut message = format!("{file}: invalid configuration");
            if !overrides.is_empty() {
                message.push_str(" (after --set overrides)");
            }
            for problem in problems {
                let _ = write!(message, "\n  {}: {}", problem.key, problem.message);
            }
            bail!(message);
        }
        Ok(config)
    }

    /// Every problem in every section.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if self.data_dir.as_os_str().is_empty() {
            problems.push(ConfigProblem::new("data_dir", "must name a directory"));
        }
        problems.extend(self.proxy.validate());
        problems.extend(self.upstream.validate());
        problems.extend(self.pac.validate());
        problems.extend(self.transparent.validate());
        for (key, addr) in self.transparent.listeners() {
            if addr.port() != 0 && (addr == self.proxy.listen || addr == self.admin.listen) {
                problems.push(ConfigProblem::new(
                    key,
                    "must differ from proxy.listen and admin.listen",
                ));
            }
        }
        problems.extend(self.store.validate());
        problems.extend(self.auth.validate());
        problems.extend(self.delivery.validate());
        problems.extend(self.report.validate());
        problems.extend(self.export.validate());
        if let Some(central) = &self.policy.central {
            problems.extend(central.validate());
        }
        if self.report.mails_anyone() && self.delivery.smtp.host.is_empty() {
            let key = if self.report.email_to.is_empty() {
                "report.pseudonymised_email_to"
            } else {
                "report.email_to"
            };
            problems.push(ConfigProblem::new(key, "needs delivery.smtp.host"));
        }
        problems.extend(self.admin.validate());
        problems.extend(self.lists.validate());
        if self.policy.client_roles.is_some() {
            problems.push(ConfigProblem::new(
                "policy.client_roles",
                "has moved to [[auth.bindings]] with the same entries \
                 ({ network = \"10.20.0.0/16\", role = \"pupil\", group = \"year6\" }); \
                 a binding can also name a user ({ network = \"10.1.1.5/32\", user = \"office\" })",
            ));
        }
        if self.policy.file.as_os_str().is_empty() {
            problems.push(ConfigProblem::new(
                "policy.file",
                "must name the policy file",
            ));
        }
        if self.admin.listen == self.proxy.listen && self.proxy.listen.port() != 0 {
            problems.push(ConfigProblem::new(
                "admin.listen",
                "must differ from proxy.listen",
            ));
        }
        if !is_log_filter(&self.log.level) {
            problems.push(ConfigProblem::new(
                "log.level",
                format!(
                    "`{}` is not a level (error, warn, info, debug, trace) or tracing filter",
                    self.log.level
                ),
            ));
        }
        problems
    }
}

/// A level name, or a tracing filter with directives (`info,safegate_proxy=debug`).
/// A bare word that is not a level would silently mean "only target <word>", so it is
/// refused.
fn is_log_filter(level: &str) -> bool {
    const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
    let bare_word = !level.contains(['=', ',']);
    if bare_word && !LEVELS.contains(&level.trim().to_ascii_lowercase().as_str()) {
        return false;
    }
    tracing_subscriber::EnvFilter::try_new(level).is_ok()
}

/// `line:column: ` of a span's start in `text`, or nothing when the span is unknown.
fn location(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    span.map(|span| {
        let before = text.get(..span.start).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!("{line}:{column}: ")
    })
    .unwrap_or_default()
}

fn describe_error(
    file: &str,
    text: &str,
    error: &serde_path_to_error::Error<toml::de::Error>,
) -> anyhow::Error {
    let inner = error.inner();
    let location = location(text, inner.span());
    let path = error.path().to_string();
    let key = if path == "." || path.is_empty() {
        String::new()
    } else {
        format!("key `{path}`: ")
    };
    anyhow!("{file}:{location}{key}{}", inner.message().trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn file_with(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("temp file: {e}"));
        file.write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("write: {e}"));
        file
    }

    fn load_error(text: &str, overrides: &[&str]) -> String {
        let file = file_with(text);
        let overrides: Vec<String> = overrides.iter().map(|s| (*s).to_owned()).collect();
        match Config::load(file.path(), &overrides) {
            Ok(_) => panic!("expected an error for {text:?} {overrides:?}"),
            Err(error) => format!("{error:#}"),
        }
    }

    #[test]
    fn shipped_configuration_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/safegate.toml");
        let config = Config::load(&path, &[]).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(config.proxy.listen.to_string(), "127.0.0.1:3128");
        assert!(!config.upstream.allow_loopback);
    }

    #[test]
    fn overrides_replace_and_create_keys() {
        let file = file_with("[proxy]\nlisten = \"127.0.0.1:3128\"\n");
        let config = Config::load(
            file.path(),
            &[
                "proxy.listen=\"127.0.0.1:0\"".to_owned(),
                "upstream.allow_loopback=true".to_owned(),
                "upstream.dns.servers=[\"127.0.0.1:5353\"]".to_owned(),
                "data_dir='/tmp/sg'".to_owned(),
            ],
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(config.proxy.listen.port(), 0);
        assert!(config.upstream.allow_loopback);
        assert_eq!(config.upstream.dns.servers[0].0.port(), 5353);
        assert_eq!(config.data_dir, PathBuf::from("/tmp/sg"));
    }

    #[test]
    fn type_errors_name_line_and_key() {
        let error = load_error(
            "data_dir = \"x\"\n[proxy]\nlisten = \"not an address\"\n",
            &[],
        );
        assert!(error.contains(":3:"), "{error}");
        assert!(error.contains("key `proxy.listen`"), "{error}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let error = load_error("[proxy]\nlisen = \"127.0.0.1:1\"\n", &[]);
        assert!(error.contains("unknown field `lisen`"), "{error}");
    }

    #[test]
    fn override_errors_name_the_key() {
        let error = load_error("", &["upstream.allow_loopback=\"yes\""]);
        assert!(
            error.contains("--set: key `upstream.allow_loopback`"),
            "{error}"
        );
        let error = load_error("", &["proxy.listen=127.0.0.1:3128"]);
        assert!(error.contains("is not a TOML value"), "{error}");
    }

    #[test]
    fn validation_lists_every_problem() {
        let error = load_error(
            "[proxy]\nconnect_ports = []\n[log]\nlevel = \"loud\"\n",
            &[],
        );
        assert!(error.contains("proxy.connect_ports"), "{error}");
        assert!(error.contains("log.level"), "{error}");
    }

    #[test]
    fn report_recipients_are_checked() {
        let error = load_error(
            "",
            &[
                "report.email_to=[\"head@school.test\"]",
                "report.pseudonymised_email_to=[\"Head <HEAD@School.test>\", \"not an address\"]",
            ],
        );
        assert!(
            error.contains(
                "report.pseudonymised_email_to[0]: `Head <HEAD@School.test>` is also in \
                 report.email_to"
            ),
            "{error}"
        );
        assert!(
            error.contains(
                "report.pseudonymised_email_to[1]: `not an address` is not an e-mail address"
            ),
            "{error}"
        );
        assert!(
            error.contains("report.email_to: needs delivery.smtp.host"),
            "{error}"
        );
        let error = load_error("", &["report.pseudonymised_email_to=[\"la@council.test\"]"]);
        assert!(
            error.contains("report.pseudonymised_email_to: needs delivery.smtp.host"),
            "{error}"
        );
        let file = file_with("");
        let config = Config::load(
            file.path(),
            &[
                "delivery.smtp.host=\"127.0.0.1\"".to_owned(),
                "report.email_to=[\"head@school.test\"]".to_owned(),
                "report.pseudonymised_email_to=[\"governors@school.test\"]".to_owned(),
            ],
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(
            config.report.pseudonymised_email_to,
            ["governors@school.test"]
        );
    }

    #[test]
    fn transparent_listeners_are_off_by_default_and_checked() {
        let file = file_with("");
        let config = Config::load(file.path(), &[]).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(config.transparent.http_listen, None);
        assert_eq!(config.transparent.https_listen, None);
        let config = Config::load(
            file.path(),
            &[
                "transparent.http_listen=\"0.0.0.0:3129\"".to_owned(),
                "transparent.https_listen=\"\"".to_owned(),
            ],
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(
            config.transparent.http_listen.map(|a| a.to_string()),
            Some("0.0.0.0:3129".to_owned())
        );
        assert_eq!(config.transparent.https_listen, None);
        let error = load_error("", &["transparent.https_listen=\"127.0.0.1:3128\""]);
        assert!(
            error.contains("transparent.https_listen: must differ from proxy.listen"),
            "{error}"
        );
        let error = load_error("", &["transparent.http_listen=\"port 80\""]);
        assert!(error.contains("key `transparent.http_listen`"), "{error}");
        assert!(error.contains("is not an address"), "{error}");
    }

    #[test]
    fn auth_bindings_are_read_and_checked() {
        let file = file_with(
            "[auth]\nrequired = true\ncredential_cache_ttl = \"10m\"\n\
             [[auth.bindings]]\nnetwork = \"10.20.6.0/24\"\nrole = \"pupil\"\ngroup = \"year6\"\n\
             [[auth.bindings]]\nnetwork = \"10.1.1.5/32\"\nuser = \"office\"\n",
        );
        let config = Config::load(file.path(), &[]).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(config.auth.required);
        assert_eq!(config.auth.credential_cache_ttl.as_secs(), 600);
        assert_eq!(config.auth.bindings.len(), 2);
        assert_eq!(config.auth.bindings[1].user.as_deref(), Some("office"));
        // Overrides write bindings inline, as the tests do.
        let config = Config::load(
            file.path(),
            &["auth.bindings=[{ network = \"127.0.0.1/32\", role = \"staff\" }]".to_owned()],
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(config.auth.bindings.len(), 1);

        let error = load_error(
            "",
            &["auth.bindings=[{ network = \"10.0.0.0/8\", role = \"teacher\" }]"],
        );
        assert!(error.contains("auth.bindings[0].role"), "{error}");
        assert!(error.contains("`teacher` is not a role"), "{error}");
        let error = load_error(
            "[[auth.bindings]]\nnetwork = \"10.0.0.0/8\"\nrol = \"x\"\n",
            &[],
        );
        assert!(error.contains("unknown field `rol`"), "{error}");
        let error = load_error("", &["auth.max_failures_per_address=0"]);
        assert!(
            error.contains("auth.max_failures_per_address: must be at least 1"),
            "{error}"
        );
    }

    #[test]
    fn the_old_client_roles_key_says_where_it_went() {
        let error = load_error(
            "",
            &["policy.client_roles=[{ network = \"127.0.0.0/8\", role = \"staff\" }]"],
        );
        assert!(
            error.contains("policy.client_roles: has moved to [[auth.bindings]]"),
            "{error}"
        );
    }
}
