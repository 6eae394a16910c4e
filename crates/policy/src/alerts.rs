//! The `[alerts]` section of the policy: what the safeguarding alert engine looks for
//! and how hard it looks. Thresholds, phrase lists and windows live here so that they
//! reload with the policy; a phrase list that cannot be read refuses the whole policy
//! (the previous one stays live), like any other list.
//!
//! Phrase list files are plain text, one phrase per line, `#` starts a comment line,
//! and a line starting with `!` is an *exception*: a phrase that, where it covers a
//! match, cancels it (`!suicide squad` keeps the film from raising a self-harm alert).
//! Matching itself (normalisation, word boundaries) is the safeguarding crate's job;
//! here the lists are only read and checked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Problem;
use crate::window::WindowId;

/// How serious an alert is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth a look in the weekly sweep.
    Low,
    /// Worth a look today.
    #[default]
    Medium,
    /// Report to the safeguarding lead at once.
    High,
}

impl Severity {
    /// `low`, `medium` or `high`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }
}

/// `[alerts]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlertsFile {
    #[serde(default)]
    pub phrases: Vec<PhraseListFile>,
    #[serde(default)]
    pub repeated_blocks: RepeatedBlocksFile,
    #[serde(default = "default_circumvention")]
    pub circumvention_categories: Vec<String>,
    #[serde(default)]
    pub staff_social: StaffSocialFile,
    #[serde(default)]
    pub heavy_use: HeavyUseFile,
    #[serde(default = "yes")]
    pub concurrent_logins: bool,
    #[serde(default)]
    pub shared_groups: Vec<String>,
    #[serde(default)]
    pub support_sites: Vec<String>,
    #[serde(default)]
    pub teaching_contexts: Option<PathBuf>,
    #[serde(default = "yes")]
    pub misspellings: bool,
}

impl Default for AlertsFile {
    fn default() -> Self {
        Self {
            phrases: Vec::new(),
            repeated_blocks: RepeatedBlocksFile::default(),
            circumvention_categories: default_circumvention(),
            staff_social: StaffSocialFile::default(),
            heavy_use: HeavyUseFile::default(),
            concurrent_logins: true,
            shared_groups: Vec::new(),
            support_sites: Vec::new(),
            teaching_contexts: None,
            misspellings: true,
        }
    }
}

fn yes() -> bool {
    true
}

fn default_circumvention() -> Vec<String> {
    vec!["circumvention".to_owned()]
}

/// `[[alerts.phrases]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PhraseListFile {
    pub list: String,
    pub path: PathBuf,
    #[serde(default)]
    pub severity: Severity,
    /// Severity of topic (not first-person) phrases for these browsing roles.
    #[serde(default)]
    pub roles: BTreeMap<String, Severity>,
}

/// `[alerts.repeated_blocks]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RepeatedBlocksFile {
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    #[serde(default = "default_minutes")]
    pub minutes: u32,
}

impl Default for RepeatedBlocksFile {
    fn default() -> Self {
        Self {
            attempts: default_attempts(),
            minutes: default_minutes(),
        }
    }
}

fn default_attempts() -> u32 {
    10
}

fn default_minutes() -> u32 {
    5
}

/// `[alerts.staff_social]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StaffSocialFile {
    #[serde(default)]
    pub categories: Vec<String>,
    #[serde(default)]
    pub window: Option<String>,
    #[serde(default)]
    pub roles: Option<Vec<String>>,
}

/// `[alerts.heavy_use]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeavyUseFile {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_factor")]
    pub factor: f64,
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    #[serde(default = "default_min_bytes")]
    pub min_bytes: u64,
    #[serde(default = "default_baseline_days")]
    pub baseline_days: u32,
    #[serde(default = "default_min_baseline_days")]
    pub min_baseline_days: u32,
}

impl Default for HeavyUseFile {
    fn default() -> Self {
        Self {
            enabled: true,
            factor: default_factor(),
            min_requests: default_min_requests(),
            min_bytes: default_min_bytes(),
            baseline_days: default_baseline_days(),
            min_baseline_days: default_min_baseline_days(),
        }
    }
}

fn default_factor() -> f64 {
    5.0
}
fn default_min_requests() -> u64 {
    5_000
}
fn default_min_bytes() -> u64 {
    5_000_000_000
}
fn default_baseline_days() -> u32 {
    14
}
fn default_min_baseline_days() -> u32 {
    5
}

/// The compiled `[alerts]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertSettings {
    /// Safeguarding phrase lists, in the order written.
    pub phrase_lists: Vec<PhraseList>,
    /// Blocked attempts by one user that make an alert: this many ...
    pub repeated_blocks_attempts: u32,
    /// ... within this long.
    pub repeated_blocks_window: Duration,
    /// Categories whose sites are circumvention (VPNs, web proxies, DNS over HTTPS).
    pub circumvention_categories: Vec<String>,
    /// The locked (illegal content) categories: any attempt is a high alert.
    pub locked_categories: Vec<String>,
    /// Staff social networking in core hours; `None` when no categories are named.
    pub staff_social: Option<StaffSocial>,
    /// Unusually heavy use; `None` when switched off.
    pub heavy_use: Option<HeavyUse>,
    /// One user on two computers at once raises an alert.
    pub concurrent_logins: bool,
    /// Groups whose log-ins are shared by a class (year-group log-ins): no
    /// concurrent-login alerts, and per-person rules count per computer.
    pub shared_groups: Vec<String>,
    /// Support and safeguarding sites (host names, subdomains included) whose
    /// addresses never raise phrase alerts (searches typed there still do).
    pub support_sites: Vec<String>,
    /// Teaching-context phrases (lesson plan, KS3, PSHE, set texts, support
    /// organisations): in the same text, they cancel topic phrases of every list
    /// (first-person phrases still alert).
    pub teaching_contexts: Vec<String>,
    /// Also match common misspellings of phrase words of six letters or more.
    pub misspellings: bool,
}

impl AlertSettings {
    /// Whether `group` is a shared (year-group) log-in's group.
    pub fn shared_group(&self, group: Option<&str>) -> bool {
        group.is_some_and(|g| self.shared_groups.iter().any(|s| s == g))
    }

    /// Whether `host` is one of the support sites or below one.
    pub fn support_site(&self, host: &str) -> bool {
        self.support_sites.iter().any(|site| {
            host == site
                || host
                    .strip_suffix(site.as_str())
                    .is_some_and(|rest| rest.ends_with('.'))
        })
    }
}

impl Default for AlertSettings {
    fn default() -> Self {
        Self {
            phrase_lists: Vec::new(),
            repeated_blocks_attempts: default_attempts(),
            repeated_blocks_window: Duration::from_secs(u64::from(default_minutes()) * 60),
            circumvention_categories: Vec::new(),
            locked_categories: Vec::new(),
            staff_social: None,
            heavy_use: None,
            concurrent_logins: true,
            shared_groups: Vec::new(),
            support_sites: Vec::new(),
            teaching_contexts: Vec::new(),
            misspellings: true,
        }
    }
}

/// One phrase list, read from its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhraseList {
    /// The list's name (`self-harm`), used in alerts.
    pub name: String,
    /// Severity of a match.
    pub severity: Severity,
    /// The phrases, as written.
    pub phrases: Vec<String>,
    /// Exception phrases (written with a leading `!`).
    pub exceptions: Vec<String>,
    /// Severity of its topic (not first-person) phrases for some browsing roles
    /// (`staff = "low"`: staff searching a topic are usually preparing a lesson).
    pub role_severity: BTreeMap<String, Severity>,
}

/// `[alerts.staff_social]` compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffSocial {
    /// Browsing roles it applies to (default `staff`).
    pub roles: Vec<String>,
    /// Categories that count as personal social media.
    pub categories: Vec<String>,
    /// The window (core hours) it applies in; `None`: always.
    pub window: Option<String>,
}

/// `[alerts.heavy_use]` compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct HeavyUse {
    /// A day is heavy when requests or bytes exceed the user's daily mean by this
    /// factor ...
    pub factor: f64,
    /// ... and are at least this many requests ...
    pub min_requests: u64,
    /// ... or this many bytes down.
    pub min_bytes: u64,
    /// Days of history the baseline is the mean of.
    pub baseline_days: u32,
    /// Days with use the baseline needs before it is trusted.
    pub min_baseline_days: u32,
}

/// Reads and checks `[alerts]`; problems are appended to `problems`.
pub(crate) fn compile(
    file: &AlertsFile,
    base: &Path,
    categories: &BTreeMap<String, (u16, bool)>,
    windows: &BTreeMap<String, WindowId>,
    problems: &mut Vec<Problem>,
) -> AlertSettings {
    let (teaching_contexts, support_sites) = context_settings(file, base, problems);
    let phrase_lists = read_phrase_lists(file, base, problems);
    let mut problem = |key: String, message: String| {
        problems.push(Problem {
            key,
            line: None,
            message,
        });
    };
    let mut known_category = |key: String, name: &str| {
        if !categories.contains_key(name) {
            problem(key, format!("`{name}` is not a category in [categories]"));
        }
    };
    // The default names a category the policy may not have: only check what was written.
    if file.circumvention_categories != default_circumvention() {
        for (i, name) in file.circumvention_categories.iter().enumerate() {
            known_category(format!("alerts.circumvention_categories[{i}]"), name);
        }
    }
    for (i, name) in file.staff_social.categories.iter().enumerate() {
        known_category(format!("alerts.staff_social.categories[{i}]"), name);
    }
    let mut problem = |key: String, message: String| {
        problems.push(Problem {
            key,
            line: None,
            message,
        });
    };
    if let Some(window) = &file.staff_social.window
        && !windows.contains_key(window)
    {
        problem(
            "alerts.staff_social.window".into(),
            format!("`{window}` is not a window in [windows]"),
        );
    }
    let roles = file
        .staff_social
        .roles
        .clone()
        .unwrap_or_else(|| vec!["staff".to_owned()]);
    for (i, role) in roles.iter().enumerate() {
        if role.parse::<crate::Role>().is_err() {
            problem(
                format!("alerts.staff_social.roles[{i}]"),
                format!("`{role}` is not a role (pupil, staff, filter-admin)"),
            );
        }
    }
    if file.repeated_blocks.attempts < 2 {
        problem(
            "alerts.repeated_blocks.attempts".into(),
            "must be at least 2".into(),
        );
    }
    if file.repeated_blocks.minutes == 0 {
        problem(
            "alerts.repeated_blocks.minutes".into(),
            "must be at least 1".into(),
        );
    }
    let heavy = &file.heavy_use;
    if !(heavy.factor.is_finite() && heavy.factor >= 1.0) {
        problem(
            "alerts.heavy_use.factor".into(),
            "must be a number of at least 1".into(),
        );
    }
    if heavy.baseline_days == 0 || heavy.min_baseline_days > heavy.baseline_days {
        problem(
            "alerts.heavy_use.baseline_days".into(),
            "must be at least 1 and at least min_baseline_days".into(),
        );
    }
    let circumvention_categories = file
        .circumvention_categories
        .iter()
        .filter(|name| categories.contains_key(name.as_str()))
        .cloned()
        .collect();
    let locked_categories = categories
        .iter()
        .filter(|(_, (_, locked))| *locked)
        .map(|(name, _)| name.clone())
        .collect();
    AlertSettings {
        phrase_lists,
        repeated_blocks_attempts: file.repeated_blocks.attempts,
        repeated_blocks_window: Duration::from_secs(u64::from(file.repeated_blocks.minutes) * 60),
        circumvention_categories,
        locked_categories,
        staff_social: (!file.staff_social.categories.is_empty()).then(|| StaffSocial {
            roles,
            categories: file.staff_social.categories.clone(),
            window: file.staff_social.window.clone(),
        }),
        heavy_use: heavy.enabled.then_some(HeavyUse {
            factor: heavy.factor,
            min_requests: heavy.min_requests,
            min_bytes: heavy.min_bytes,
            baseline_days: heavy.baseline_days,
            min_baseline_days: heavy.min_baseline_days,
        }),
        concurrent_logins: file.concurrent_logins,
        shared_groups: file.shared_groups.clone(),
        support_sites,
        teaching_contexts,
        misspellings: file.misspellings,
    }
}

/// Reads `[[alerts.phrases]]`'s files, in the order written.
fn read_phrase_lists(
    file: &AlertsFile,
    base: &Path,
    problems: &mut Vec<Problem>,
) -> Vec<PhraseList> {
    let mut problem = |key: String, message: String| {
        problems.push(Problem {
            key,
            line: None,
            message,
        });
    };
    let mut phrase_lists = Vec::new();
    for (i, list) in file.phrases.iter().enumerate() {
        if list.list.is_empty() {
            problem(
                format!("alerts.phrases[{i}].list"),
                "must not be empty".into(),
            );
        }
        if phrase_lists
            .iter()
            .any(|l: &PhraseList| l.name == list.list)
        {
            problem(
                format!("alerts.phrases[{i}].list"),
                format!("`{}` is listed twice", list.list),
            );
        }
        let path = base.join(&list.path);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let (phrases, exceptions) = parse_phrase_file(&text);
                phrase_lists.push(PhraseList {
                    name: list.list.clone(),
                    severity: list.severity,
                    phrases,
                    exceptions,
                    role_severity: list.roles.clone(),
                });
            }
            Err(error) => problem(
                format!("alerts.phrases[{i}].path"),
                format!("cannot read {}: {error}", path.display()),
            ),
        }
    }
    phrase_lists
}

/// Reads the context settings of `[alerts]` (the phrase lists' role severities, the
/// teaching-context phrases, the support sites); returns (contexts, sites).
fn context_settings(
    file: &AlertsFile,
    base: &Path,
    problems: &mut Vec<Problem>,
) -> (Vec<String>, Vec<String>) {
    let mut problem = |key: String, message: String| {
        problems.push(Problem {
            key,
            line: None,
            message,
        });
    };
    for (i, list) in file.phrases.iter().enumerate() {
        for role in list.roles.keys() {
            if role.parse::<crate::Role>().is_err() {
                problem(
                    format!("alerts.phrases[{i}].roles.{role}"),
                    format!("`{role}` is not a role (pupil, staff, filter-admin)"),
                );
            }
        }
    }
    let teaching_contexts = match &file.teaching_contexts {
        Some(path) => match std::fs::read_to_string(base.join(path)) {
            Ok(text) => parse_phrase_file(&text).0,
            Err(error) => {
                problem(
                    "alerts.teaching_contexts".into(),
                    format!("cannot read {}: {error}", base.join(path).display()),
                );
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    let mut support_sites = Vec::new();
    for (i, site) in file.support_sites.iter().enumerate() {
        let site = site.trim().trim_end_matches('.').to_ascii_lowercase();
        if site.is_empty() || site.contains(['/', ' ', ':']) {
            problem(
                format!("alerts.support_sites[{i}]"),
                "must be a host name such as childline.org.uk".into(),
            );
        } else {
            support_sites.push(site);
        }
    }
    (teaching_contexts, support_sites)
}

/// Splits a phrase file into (phrases, exceptions): one per line, `#` comment lines
/// and blank lines skipped, `!` marks an exception.
pub fn parse_phrase_file(text: &str) -> (Vec<String>, Vec<String>) {
    let mut phrases = Vec::new();
    let mut exceptions = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.strip_prefix('!') {
            Some(exception) if !exception.trim().is_empty() => {
                exceptions.push(exception.trim().to_owned());
            }
            Some(_) => {}
            None => phrases.push(line.to_owned()),
        }
    }
    (phrases, exceptions)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use jiff::Timestamp;

    use super::*;
    use crate::{Policy, Snapshot};

    fn compile_text(text: &str, dir: &Path) -> Result<Snapshot, crate::PolicyError> {
        let path = dir.join("policy.toml");
        std::fs::write(&path, text).unwrap();
        Policy::load(&path)
    }

    const ROLES: &str = "[roles.pupil]\n[roles.staff]\n[roles.filter-admin]\n";

    #[test]
    fn phrase_files_are_read_with_exceptions() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("self-harm.txt"),
            "# comment\nkill myself\n\n!suicide squad\nsuicide\n",
        )
        .unwrap();
        let text = format!(
            "[categories.social]\nsites = [\"social.test\"]\n[categories.illegal]\nlocked = true\nsites = [\"bad.test\"]\n\
             [windows.core]\ntimes = [\"08:30-15:30\"]\n\
             [alerts]\ncircumvention_categories = []\n\
             phrases = [{{ list = \"self-harm\", path = \"self-harm.txt\", severity = \"high\" }}]\n\
             staff_social = {{ categories = [\"social\"], window = \"core\" }}\n\
             repeated_blocks = {{ attempts = 3, minutes = 2 }}\n{ROLES}"
        );
        let snapshot = compile_text(&text, dir.path()).unwrap();
        let alerts = snapshot.alerts();
        assert_eq!(alerts.phrase_lists.len(), 1);
        assert_eq!(alerts.phrase_lists[0].phrases, ["kill myself", "suicide"]);
        assert_eq!(alerts.phrase_lists[0].exceptions, ["suicide squad"]);
        assert_eq!(alerts.phrase_lists[0].severity, Severity::High);
        assert_eq!(alerts.locked_categories, ["illegal"]);
        assert_eq!(alerts.repeated_blocks_attempts, 3);
        assert_eq!(alerts.repeated_blocks_window, Duration::from_secs(120));
        let staff = alerts.staff_social.as_ref().unwrap();
        assert_eq!(staff.roles, ["staff"]);
        assert_eq!(staff.window.as_deref(), Some("core"));
        let tuesday_ten: Timestamp = "2026-11-17T10:00:00Z".parse().unwrap();
        assert_eq!(snapshot.window_open("core", tuesday_ten), Some(true));
        let evening: Timestamp = "2026-11-17T19:00:00Z".parse().unwrap();
        assert_eq!(snapshot.window_open("core", evening), Some(false));
        assert_eq!(snapshot.window_open("nope", evening), None);
    }

    #[test]
    fn every_alerts_problem_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[alerts]\ncircumvention_categories = [\"vpn\"]\n\
             phrases = [{{ list = \"x\", path = \"missing.txt\" }}]\n\
             staff_social = {{ categories = [\"nope\"], window = \"never\", roles = [\"boss\"] }}\n\
             repeated_blocks = {{ attempts = 1, minutes = 0 }}\n\
             heavy_use = {{ factor = 0.5 }}\n{ROLES}"
        );
        let error = compile_text(&text, dir.path()).unwrap_err().to_string();
        for key in [
            "alerts.phrases[0].path",
            "alerts.circumvention_categories[0]",
            "alerts.staff_social.categories[0]",
            "alerts.staff_social.window",
            "alerts.staff_social.roles[0]",
            "alerts.repeated_blocks.attempts",
            "alerts.repeated_blocks.minutes",
            "alerts.heavy_use.factor",
        ] {
            assert!(error.contains(key), "{key} missing from {error}");
        }
    }

    #[test]
    fn without_a_section_the_defaults_apply() {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = compile_text(ROLES, dir.path()).unwrap();
        let alerts = snapshot.alerts();
        assert!(alerts.phrase_lists.is_empty());
        assert!(alerts.circumvention_categories.is_empty());
        assert!(alerts.staff_social.is_none());
        assert!(alerts.heavy_use.is_some());
        assert!(alerts.concurrent_logins);
    }
}
