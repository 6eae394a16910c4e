//! The policy file as written: serde structs that mirror `config/policy.toml` key for
//! key. Every struct refuses unknown keys, so a misspelt key is an error with its line
//! and column rather than a silently ignored rule. Nothing here is checked beyond its
//! TOML type; `compile` validates names, times and files and reports every problem.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyFile {
    /// The school's name, shown on reports and block pages; empty: none.
    #[serde(default)]
    pub school: String,
    /// IANA time zone that windows, terms and local unblock times are written in.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Role given to clients that are not identified yet.
    #[serde(default = "default_role")]
    pub default_role: String,
    /// Allow and deny lists that apply to everyone.
    #[serde(default)]
    pub global: GlobalFile,
    /// Named categories.
    #[serde(default)]
    pub categories: BTreeMap<String, CategoryFile>,
    /// Site groups: lists that steer decryption or exist for reports; never blocked.
    #[serde(default)]
    pub site_groups: BTreeMap<String, CategoryFile>,
    /// Groups of people (year groups, classes).
    #[serde(default)]
    pub groups: BTreeMap<String, crate::groups::GroupDefFile>,
    /// How long teachers' changes may last.
    #[serde(default)]
    pub teaching: crate::groups::TeachingFile,
    /// Named time windows.
    #[serde(default)]
    pub windows: BTreeMap<String, WindowFile>,
    /// Term dates and holidays.
    #[serde(default)]
    pub calendar: CalendarFile,
    /// Rules per role (and group).
    #[serde(default)]
    pub roles: BTreeMap<String, RoleFile>,
    /// Temporary unblocks.
    #[serde(default)]
    pub unblocks: Vec<UnblockFile>,
    /// Which HTTPS sites are decrypted.
    #[serde(default)]
    pub decrypt: DecryptFile,
    /// What the safeguarding alert engine looks for.
    #[serde(default)]
    pub alerts: crate::alerts::AlertsFile,
    /// What the school puts on the block page.
    #[serde(default)]
    pub block_page: crate::block_page::BlockPageFile,
    /// Content analysis: weighted phrase lists and banned searches.
    #[serde(default)]
    pub content: crate::content::ContentFile,
}

fn default_timezone() -> String {
    "Europe/London".to_string()
}

fn default_role() -> String {
    "pupil".to_string()
}

/// `[decrypt]`: which HTTPS sites SafeGate decrypts with the school's CA.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DecryptFile {
    #[serde(default)]
    pub categories: Vec<String>,
    #[serde(default)]
    pub sites: Vec<String>,
    #[serde(default = "default_path_rules")]
    pub path_rules: bool,
    #[serde(default)]
    pub never_categories: Vec<String>,
    #[serde(default)]
    pub never_sites: Vec<String>,
    #[serde(default)]
    pub sni_mismatch: SniMismatchFile,
    #[serde(default = "default_block_pages")]
    pub block_pages: bool,
}

fn default_block_pages() -> bool {
    true
}

fn default_path_rules() -> bool {
    true
}

impl Default for DecryptFile {
    fn default() -> Self {
        Self {
            categories: Vec::new(),
            sites: Vec::new(),
            path_rules: default_path_rules(),
            never_categories: Vec::new(),
            never_sites: Vec::new(),
            sni_mismatch: SniMismatchFile::Block,
            block_pages: default_block_pages(),
        }
    }
}

/// What to do when a TLS server name differs from the CONNECT host.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SniMismatchFile {
    #[default]
    Block,
    Allow,
}

/// `[global]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GlobalFile {
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<Timed>,
}

/// `[categories.NAME]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CategoryFile {
    #[serde(default)]
    #[allow(dead_code)] // for people reading the file and the audit log
    pub description: Option<String>,
    #[serde(default)]
    pub locked: bool,
    /// Browser, system and app background traffic (updates, telemetry,
    /// safe-browsing): folded into one line of the weekly report.
    #[serde(default)]
    pub background: bool,
    #[serde(default)]
    pub sources: Vec<SourceFile>,
    #[serde(default)]
    pub sites: Vec<String>,
}

/// One list file of a category.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SourceFile {
    pub format: FormatFile,
    pub path: PathBuf,
    /// A list that may not be installed yet (a feed's folder before its first
    /// update): skipped while missing instead of refusing the policy.
    #[serde(default)]
    pub optional: bool,
}

/// List file formats.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum FormatFile {
    Ut1,
    Hosts,
    Domains,
}

/// `[windows.NAME]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WindowFile {
    #[serde(default)]
    #[allow(dead_code)] // for people reading the file and the audit log
    pub description: Option<String>,
    #[serde(default)]
    pub days: Vec<String>,
    #[serde(default)]
    pub times: Vec<String>,
    #[serde(default)]
    pub terms_only: bool,
}

/// `[calendar]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CalendarFile {
    #[serde(default)]
    pub terms: Vec<DateRangeFile>,
    #[serde(default)]
    pub holidays: Vec<DateRangeFile>,
}

/// A named, inclusive date range.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DateRangeFile {
    #[serde(default)]
    #[allow(dead_code)] // for people reading the file and the audit log
    pub name: Option<String>,
    pub from: TimeText,
    pub until: TimeText,
}

/// `[roles.NAME]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RoleFile {
    #[serde(default)]
    pub block: Vec<Timed>,
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<Timed>,
    #[serde(default)]
    pub files: Vec<FileRuleFile>,
    #[serde(default)]
    pub safesearch: Option<bool>,
    #[serde(default)]
    pub youtube: Option<YouTubeFile>,
    /// Block sites whose host is an IP address (unless allow-listed); default false.
    #[serde(default)]
    pub block_ip_hosts: Option<bool>,
    #[serde(default)]
    pub groups: BTreeMap<String, GroupFile>,
}

/// `[roles.ROLE.groups.NAME]`: the same rules as a role (without nested groups), plus
/// `lift`, the role's blocked categories that this group is exempt from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GroupFile {
    #[serde(default)]
    pub block: Vec<Timed>,
    #[serde(default)]
    pub lift: Vec<String>,
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<Timed>,
    #[serde(default)]
    pub files: Vec<FileRuleFile>,
    #[serde(default)]
    pub safesearch: Option<bool>,
    #[serde(default)]
    pub youtube: Option<YouTubeFile>,
    /// Replaces the role's `block_ip_hosts` when given.
    #[serde(default)]
    pub block_ip_hosts: Option<bool>,
}

/// YouTube Restricted Mode as written.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum YouTubeFile {
    Strict,
    Moderate,
    Off,
}

/// `[[roles.ROLE.files]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileRuleFile {
    pub name: String,
    #[serde(default)]
    pub extensions: Vec<String>,
    #[serde(default)]
    pub content_types: Vec<String>,
    #[serde(default)]
    pub windows: Vec<String>,
}

/// `[[unblocks]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UnblockFile {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub site: Option<String>,
    #[serde(default)]
    pub category: Option<String>,
    /// Focus: the only sites open to those it is for while it lasts.
    #[serde(default)]
    pub focus: Vec<String>,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub from: Option<TimeText>,
    pub until: TimeText,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    #[allow(dead_code)] // for people reading the file and the audit log
    pub granted_by: Option<String>,
}

/// A name (category or site), either bare (`"gambling"`) or limited to time windows
/// (`{ category = "gambling", windows = ["core-hours"] }`, `{ site = ..., windows = ...}`).
#[derive(Debug, Clone)]
pub(crate) struct Timed {
    pub name: String,
    pub windows: Vec<String>,
}

impl<'de> Deserialize<'de> for Timed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            #[serde(default)]
            category: Option<String>,
            #[serde(default)]
            site: Option<String>,
            #[serde(default)]
            windows: Vec<String>,
        }
        struct TimedVisitor;
        impl<'de> Visitor<'de> for TimedVisitor {
            type Value = Timed;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a name, or a table { category|site = \"...\", windows = [...] }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Timed, E> {
                Ok(Timed {
                    name: v.to_string(),
                    windows: Vec::new(),
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Timed, A::Error> {
                let table = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let name = match (table.category, table.site) {
                    (Some(name), None) | (None, Some(name)) => name,
                    _ => {
                        return Err(de::Error::custom(
                            "give exactly one of `category` or `site`",
                        ));
                    }
                };
                Ok(Timed {
                    name,
                    windows: table.windows,
                })
            }
        }
        deserializer.deserialize_any(TimedVisitor)
    }
}

/// A date or date-time, written as a string (`"2026-11-23 14:30"`) or as a bare TOML
/// date/date-time (`2026-11-23T14:30:00Z`); kept as text and parsed by `compile`.
#[derive(Debug, Clone)]
pub(crate) struct TimeText(pub String);

impl<'de> Deserialize<'de> for TimeText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TimeVisitor;
        impl<'de> Visitor<'de> for TimeVisitor {
            type Value = TimeText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a date or date-time such as \"2026-11-23\" or \"2026-11-23 14:30\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TimeText, E> {
                Ok(TimeText(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TimeText, A::Error> {
                let datetime =
                    toml::value::Datetime::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(TimeText(datetime.to_string()))
            }
        }
        deserializer.deserialize_any(TimeVisitor)
    }
}
