//! Loading a policy: read the file, parse it with precise errors (line and column
//! from the TOML parser, the key path from `serde_path_to_error`), validate every
//! name, time and list file (collecting every problem rather than stopping at the
//! first), read the lists and build one index, and merge each group with its role.
//!
//! List ids are handed out in this order: one per category (in name order), the
//! global allow-list, the global deny-lists, then per role (pupil, staff,
//! filter-admin) its allow-list and deny-lists followed by each group's, then one per
//! unblocked site. Deny entries of one scope with the same windows share one list.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::decrypt::{DecryptRules, SniMismatch};
use crate::error::{ListRefusal, PolicyError, Problem, line_column};
use crate::file_rule::FileRule;
use crate::lists::index::{IndexBuilder, ListId, StagedDomains};
use crate::lists::normalise::Host;
use crate::lists::screen::{ListChecks, screen};
use crate::lists::source::{self, Entries, ListFormat};
use crate::model::{
    CategoryFile, DecryptFile, FileRuleFile, FormatFile, PolicyFile, SniMismatchFile, SourceFile,
    Timed, UnblockFile, WindowFile, YouTubeFile,
};
use crate::snapshot::{
    AllowRule, BlockRule, Category, CategoryStats, DenyRule, IpHostRule, ListFileStats, LoadStats,
    Role, RoleRules, SafeSearch, Scope, Snapshot, Unblock, UnblockTarget, YouTubeMode,
};
use crate::window::{
    Calendar, Window, WindowId, parse_date, parse_days, parse_instant, parse_time_range,
};

/// A parsed policy file, not yet validated or compiled.
#[derive(Debug, Clone)]
pub struct Policy {
    path: PathBuf,
    text: String,
    file: PolicyFile,
}

impl Policy {
    /// Reads, parses, validates and compiles the policy file at `path`. List paths in
    /// the file are relative to the file's directory.
    /// Each list is screened ([`ListChecks`]) without a previous count, so only
    /// binary and mostly invalid lists are refused.
    pub fn load(path: &Path) -> Result<Snapshot, PolicyError> {
        Policy::load_screened(path, None, ListChecks::default())
    }

    /// As [`Policy::load`], screening each list file against the same file's entry
    /// count in `previous` (the policy in force), as a reload does.
    pub fn load_screened(
        path: &Path,
        previous: Option<&LoadStats>,
        checks: ListChecks,
    ) -> Result<Snapshot, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Policy::parse(&text, path)?.compile_screened(previous, checks)
    }

    /// Parses `text` as the policy file at `path` (used for error messages and to
    /// resolve list paths). Only the TOML syntax and types are checked here.
    pub fn parse(text: &str, path: &Path) -> Result<Policy, PolicyError> {
        let deserializer = toml::Deserializer::parse(text).map_err(|e| {
            let (line, column) = line_column(text, e.span().map_or(0, |s| s.start));
            PolicyError::Syntax {
                path: path.to_path_buf(),
                line,
                column,
                message: e.message().trim_end().to_string(),
            }
        })?;
        let file: PolicyFile = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let inner = e.inner();
            let (line, column) = match inner.span() {
                Some(span) => {
                    let (line, column) = line_column(text, span.start);
                    (Some(line), Some(column))
                }
                None => (None, None),
            };
            PolicyError::Schema {
                path: path.to_path_buf(),
                line,
                column,
                key: e.path().to_string(),
                message: inner.message().trim_end().to_string(),
            }
        })?;
        Ok(Policy {
            path: path.to_path_buf(),
            text: text.to_string(),
            file,
        })
    }

    /// Validates the policy, reads its lists and compiles the snapshot. Every problem
    /// is reported at once in `PolicyError::Invalid`.
    pub fn compile(&self) -> Result<Snapshot, PolicyError> {
        self.compile_screened(None, ListChecks::default())
    }

    /// As [`Policy::compile`], screening each list file against `previous` (see
    /// [`Policy::load_screened`]); refused lists make [`PolicyError::ListsRefused`].
    pub fn compile_screened(
        &self,
        previous: Option<&LoadStats>,
        checks: ListChecks,
    ) -> Result<Snapshot, PolicyError> {
        let started = Instant::now();
        let base = self.path.parent().unwrap_or(Path::new("")).to_path_buf();
        let mut compiler = Compiler {
            base,
            problems: Vec::new(),
            builder: IndexBuilder::new(),
            next_list: 0,
            category_of_list: Vec::new(),
            url_hosts: Vec::new(),
            previous,
            checks,
            refusals: Vec::new(),
        };
        let draft = compiler.compile(&self.file);
        if !compiler.refusals.is_empty() {
            return Err(PolicyError::ListsRefused {
                path: self.path.clone(),
                refusals: compiler.refusals,
            });
        }
        if !compiler.problems.is_empty() {
            let mut problems = compiler.problems;
            for problem in &mut problems {
                problem.line = key_line(&self.text, &problem.key);
            }
            return Err(PolicyError::Invalid {
                path: self.path.clone(),
                problems,
            });
        }
        let lists = usize::from(compiler.next_list);
        let index = compiler
            .builder
            .build()
            .map_err(|source| PolicyError::Index {
                path: self.path.clone(),
                source,
            })?;
        let mut stats = draft.stats;
        stats.lists = lists;
        stats.index_entries = index.len();
        stats.unblocks = draft.unblocks.len();
        stats.compile_time = started.elapsed();
        Ok(Snapshot {
            index,
            groups: draft.groups,
            teaching: draft.teaching,
            school: draft.school,
            block_page: draft.block_page,
            tz: draft.tz,
            default_role: draft.default_role,
            categories: draft.categories,
            category_of_list: compiler.category_of_list,
            locked: draft.locked,
            global_allow: draft.global_allow,
            global_deny: draft.global_deny,
            roles: draft.roles,
            windows: draft.windows,
            calendar: draft.calendar,
            unblocks: draft.unblocks,
            decrypt: draft.decrypt,
            alerts: std::sync::Arc::new(draft.alerts),
            content: draft.content,
            stats,
        })
    }
}

/// The people of a role in plain words, for the reasons people read ("blocked for
/// pupils").
fn people_of(role: &str) -> &str {
    match role {
        "pupil" => "pupils",
        "filter-admin" => "filter admins",
        other => other,
    }
}

/// Everything of the snapshot except the index.
struct Draft {
    groups: Vec<crate::snapshot::GroupInfo>,
    teaching: crate::snapshot::Teaching,
    school: String,
    block_page: crate::block_page::BlockPageSettings,
    tz: TimeZone,
    default_role: Role,
    categories: Vec<Category>,
    locked: Vec<u16>,
    global_allow: Option<ListId>,
    global_deny: Vec<DenyRule>,
    roles: Vec<RoleRules>,
    windows: Vec<Window>,
    calendar: Calendar,
    unblocks: Vec<Unblock>,
    decrypt: DecryptRules,
    alerts: crate::alerts::AlertSettings,
    content: crate::content::ContentRules,
    stats: LoadStats,
}

struct Compiler<'p> {
    base: PathBuf,
    /// What the policy in force read, for the shrink check.
    previous: Option<&'p LoadStats>,
    checks: ListChecks,
    /// List files refused by screening.
    refusals: Vec<ListRefusal>,
    problems: Vec<Problem>,
    builder: IndexBuilder,
    /// Next free list id; `u16::MAX + 1` once exhausted.
    next_list: u16,
    category_of_list: Vec<Option<u16>>,
    /// Hosts of URL entries (`host/path`) anywhere in the policy, for
    /// `decrypt.path_rules`.
    url_hosts: Vec<Host>,
}

/// Names resolved so far, for checking references.
struct Names {
    categories: BTreeMap<String, (u16, bool)>,
    /// Site groups (in `categories` too): never blocked or unblocked.
    site_groups: BTreeSet<String>,
    windows: BTreeMap<String, WindowId>,
}

/// A site entry: a domain, or a host with a path prefix.
enum Site {
    Domain(Host),
    Url(Host, String),
}

impl Compiler<'_> {
    fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            line: None,
            message: message.into(),
        });
    }

    fn new_list(&mut self, category: Option<u16>) -> ListId {
        let id = self.next_list;
        if id == u16::MAX {
            if !self.problems.iter().any(|p| p.key == "(lists)") {
                self.problem("(lists)", "more than 65535 lists; merge some");
            }
            return id;
        }
        self.next_list += 1;
        self.category_of_list.push(category);
        id
    }

    /// The school's name, trimmed; a name with control characters or over 100
    /// characters is a problem (it is shown on pages and in mail subjects).
    fn school_name(&mut self, name: &str) -> String {
        let name = name.trim();
        if name.chars().count() > 100 || name.chars().any(char::is_control) {
            self.problem(
                "school",
                "the school's name must be one line of at most 100 characters".to_owned(),
            );
            return String::new();
        }
        name.to_owned()
    }

    fn compile(&mut self, file: &PolicyFile) -> Draft {
        let tz = match TimeZone::get(&file.timezone) {
            Ok(tz) => tz,
            Err(_) => {
                self.problem(
                    "timezone",
                    format!(
                        "`{}` is not a time zone name such as \"Europe/London\"",
                        file.timezone
                    ),
                );
                TimeZone::UTC
            }
        };
        let default_role = file.default_role.parse().unwrap_or_else(|e| {
            self.problem("default_role", format!("{e}"));
            Role::Pupil
        });
        let calendar = self.calendar(file);
        let (windows, window_ids) = self.windows(&file.windows, &calendar);
        let mut stats = LoadStats::default();
        let mut all_categories: BTreeMap<String, &CategoryFile> = BTreeMap::new();
        for (name, category) in &file.categories {
            all_categories.insert(name.clone(), category);
        }
        for (name, site_group) in &file.site_groups {
            if all_categories.insert(name.clone(), site_group).is_some() {
                self.problem(
                    format!("site_groups.{name}"),
                    format!("`{name}` is also a category; a name is one or the other"),
                );
            }
            if site_group.locked {
                self.problem(
                    format!("site_groups.{name}.locked"),
                    "a site group blocks nothing, so it cannot be locked",
                );
            }
        }
        let site_groups: BTreeSet<String> = file.site_groups.keys().cloned().collect();
        let (categories, category_ids) = self.categories(&all_categories, &site_groups, &mut stats);
        let names = Names {
            categories: category_ids,
            site_groups,
            windows: window_ids,
        };
        let under_roles: Vec<(String, String)> = file
            .roles
            .iter()
            .flat_map(|(role, rf)| rf.groups.keys().map(|g| (role.clone(), g.clone())))
            .collect();
        let mut group_problems = Vec::new();
        let groups = crate::groups::compile(&file.groups, &under_roles, &mut |key, why| {
            group_problems.push((key, why));
        });
        let teaching = crate::groups::teaching(&file.teaching, &mut |key, why| {
            group_problems.push((key, why));
        });
        for (key, why) in group_problems {
            self.problem(key, why);
        }
        let locked = categories
            .iter()
            .enumerate()
            .filter(|(_, c)| c.locked)
            .map(|(i, _)| i as u16)
            .collect();

        let global_allow = self.allow_list("global.allow", &file.global.allow);
        let global_deny = self.deny_lists(
            "global.deny",
            &file.global.deny,
            &names,
            "deny:global",
            "everyone",
        );
        let roles = self.roles(file, &names);
        let unblocks = self.unblocks(&file.unblocks, &names, &groups, &tz);
        let decrypt = self.decrypt(&file.decrypt, &names);
        stats.files.extend(
            file.alerts
                .phrases
                .iter()
                .map(|list| self.base.join(&list.path)),
        );
        let alerts = crate::alerts::compile(
            &file.alerts,
            &self.base,
            &names.categories,
            &names.windows,
            &mut self.problems,
        );
        let mut block_problems = Vec::new();
        let (block_page, logo) =
            crate::block_page::compile(&file.block_page, &self.base, |key, why| {
                block_problems.push((key.to_owned(), why));
            });
        for (key, why) in block_problems {
            self.problem(key, why);
        }
        stats.files.extend(logo);
        let group_names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
        let content = self.content(&file.content, &group_names, &mut stats);
        Draft {
            groups,
            teaching,
            school: self.school_name(&file.school),
            block_page,
            tz,
            default_role,
            categories,
            locked,
            global_allow,
            global_deny,
            roles,
            windows,
            calendar,
            unblocks,
            decrypt,
            alerts,
            content,
            stats,
        }
    }

    /// `[content]`: the phrase lists read and compiled, exempt sites in the index.
    fn content(
        &mut self,
        file: &crate::content::ContentFile,
        groups: &[&str],
        stats: &mut LoadStats,
    ) -> crate::content::ContentRules {
        let mut problems = Vec::new();
        let base = self.base.clone();
        let (rules, files) = crate::content::compile(
            file,
            &base,
            groups,
            &mut |key, why| problems.push((key, why)),
            &mut |key, sites| self.allow_list(key, sites),
        );
        for (key, why) in problems {
            self.problem(key, why);
        }
        stats.files.extend(files);
        rules
    }

    fn calendar(&mut self, file: &PolicyFile) -> Calendar {
        let mut ranges = |kind: &str, list: &[crate::model::DateRangeFile]| {
            let mut out: Vec<(jiff::civil::Date, jiff::civil::Date, usize)> = Vec::new();
            for (i, range) in list.iter().enumerate() {
                let key = format!("calendar.{kind}[{i}]");
                let from = parse_date(&range.from.0);
                let until = parse_date(&range.until.0);
                match (from, until) {
                    (Ok(from), Ok(until)) if from <= until => out.push((from, until, i)),
                    (Ok(_), Ok(_)) => self.problem(key, "`until` is before `from`"),
                    (from, until) => {
                        for e in [from.err(), until.err()].into_iter().flatten() {
                            self.problem(key.clone(), e);
                        }
                    }
                }
            }
            let mut sorted = out.clone();
            sorted.sort();
            for pair in sorted.windows(2) {
                if pair[1].0 <= pair[0].1 {
                    self.problem(
                        format!("calendar.{kind}[{}]", pair[1].2),
                        format!("overlaps calendar.{kind}[{}]", pair[0].2),
                    );
                }
            }
            out.into_iter().map(|(a, b, _)| (a, b)).collect::<Vec<_>>()
        };
        let terms = ranges("terms", &file.calendar.terms);
        let holidays = ranges("holidays", &file.calendar.holidays);
        Calendar { terms, holidays }
    }

    fn windows(
        &mut self,
        windows: &BTreeMap<String, WindowFile>,
        calendar: &Calendar,
    ) -> (Vec<Window>, BTreeMap<String, WindowId>) {
        let mut out = Vec::new();
        let mut ids = BTreeMap::new();
        for (name, w) in windows {
            let key = format!("windows.{name}");
            let mut days = 0u8;
            for (i, d) in w.days.iter().enumerate() {
                match parse_days(d) {
                    Ok(mask) => days |= mask,
                    Err(e) => self.problem(format!("{key}.days[{i}]"), e),
                }
            }
            if w.days.is_empty() {
                days = 0x7f;
            }
            let mut times = Vec::new();
            for (i, t) in w.times.iter().enumerate() {
                match parse_time_range(t) {
                    Ok(range) => times.push((range, i)),
                    Err(e) => self.problem(format!("{key}.times[{i}]"), e),
                }
            }
            times.sort();
            for pair in times.windows(2) {
                if pair[1].0.0 < pair[0].0.1 {
                    self.problem(
                        format!("{key}.times[{}]", pair[1].1),
                        format!("overlaps {key}.times[{}]", pair[0].1),
                    );
                }
            }
            let mut times: Vec<_> = times.into_iter().map(|(range, _)| range).collect();
            if w.times.is_empty() {
                times.push((jiff::civil::Time::MIN, jiff::civil::Time::MAX));
            }
            if w.terms_only && calendar.terms.is_empty() {
                self.problem(
                    format!("{key}.terms_only"),
                    "needs term dates in [calendar] terms",
                );
            }
            ids.insert(name.clone(), out.len() as WindowId);
            out.push(Window {
                name: name.clone(),
                days,
                times,
                terms_only: w.terms_only,
            });
        }
        (out, ids)
    }

    fn categories(
        &mut self,
        categories: &BTreeMap<String, &CategoryFile>,
        site_groups: &BTreeSet<String>,
        stats: &mut LoadStats,
    ) -> (Vec<Category>, BTreeMap<String, (u16, bool)>) {
        let mut out = Vec::new();
        let mut ids = BTreeMap::new();
        for (name, category) in categories {
            let site_group = site_groups.contains(name);
            let key = if site_group {
                format!("site_groups.{name}")
            } else {
                format!("categories.{name}")
            };
            if !is_name(name) {
                self.problem(key.clone(), "names use letters, digits, `-` and `_`");
            }
            let index = out.len() as u16;
            let list = self.new_list(Some(index));
            let mut counts = CategoryStats {
                name: name.clone(),
                locked: category.locked,
                site_group,
                ..CategoryStats::default()
            };
            for (i, src) in category.sources.iter().enumerate() {
                let skey = format!("{key}.sources[{i}].path");
                self.source(name, &skey, (list, src), &mut counts, stats);
            }
            for (i, text) in category.sites.iter().enumerate() {
                match parse_site(text) {
                    Ok(Site::Domain(host)) => {
                        counts.domains += 1;
                        self.builder.add_domain(list, host);
                    }
                    Ok(Site::Url(host, path)) => {
                        counts.urls += 1;
                        self.url_hosts.push(host.clone());
                        self.builder.add_url(list, host, path);
                    }
                    Err(e) => self.problem(format!("{key}.sites[{i}]"), e),
                }
            }
            stats.categories.push(counts);
            if category.locked && category.background {
                self.problem(
                    format!("{key}.background"),
                    "a locked category cannot be background traffic: the report must show it",
                );
            }
            ids.insert(name.clone(), (index, category.locked));
            out.push(Category {
                name: name.clone(),
                list,
                locked: category.locked,
                background: category.background,
            });
        }
        (out, ids)
    }

    /// Reads one list source of category `name` into its list and `counts`; a
    /// missing optional source is counted and skipped, a missing required one or a
    /// broken one is a problem.
    fn source(
        &mut self,
        name: &str,
        key: &str,
        (list, src): (ListId, &SourceFile),
        counts: &mut CategoryStats,
        stats: &mut LoadStats,
    ) {
        let path = self.base.join(&src.path);
        if !path.exists() {
            if src.optional {
                counts.optional_missing += 1;
                stats.optional_missing.push(path);
            } else {
                stats.files.push(path.clone());
                self.problem(key, format!("list {} does not exist", path.display()));
            }
            return;
        }
        stats.files.push(path.clone());
        let format = match src.format {
            FormatFile::Ut1 => ListFormat::Ut1,
            FormatFile::Hosts => ListFormat::Hosts,
            FormatFile::Domains => ListFormat::Domains,
        };
        // Domains go straight to fingerprints (8 bytes each, not a `Host`): a feed of
        // millions of domains must not need gigabytes to reload.
        let mut staged = StagedDomains::default();
        let builder = &self.builder;
        let read = source::read_streaming(format, &path, &mut |host| {
            builder.stage(&mut staged, host);
        });
        match read {
            Ok(entries) if !self.passes_screen(name, &path, &entries, stats) => {}
            Ok(entries) => {
                counts.domains += entries.domain_count();
                counts.urls += entries.urls.len();
                counts.expressions += entries.expressions.len();
                counts.skipped += entries.skipped.len();
                self.builder.add_staged(list, staged);
                self.builder.add(list, &entries);
                self.url_hosts
                    .extend(entries.urls.iter().map(|(host, _)| host.clone()));
            }
            Err(e) => self.problem(key, format!("{}: {e}", path.display())),
        }
    }

    /// Screens one source of category `name`; records its entry count in `stats`
    /// (kept or refused: the next reload compares against the list in force).
    fn passes_screen(
        &mut self,
        name: &str,
        path: &Path,
        entries: &Entries,
        stats: &mut LoadStats,
    ) -> bool {
        let previous = self.previous.and_then(|previous| {
            previous
                .list_files
                .iter()
                .find(|f| f.category == name && f.path == path)
                .map(|f| f.entries)
        });
        stats.list_files.push(ListFileStats {
            category: name.to_owned(),
            path: path.to_path_buf(),
            entries: entries.len(),
        });
        match screen(entries, previous, self.checks) {
            Ok(()) => true,
            Err(reason) => {
                self.refusals.push(ListRefusal {
                    category: name.to_owned(),
                    file: path.to_path_buf(),
                    reason,
                });
                false
            }
        }
    }

    /// One list for `sites`, or `None` when empty.
    fn allow_list(&mut self, key: &str, sites: &[String]) -> Option<ListId> {
        if sites.is_empty() {
            return None;
        }
        let list = self.new_list(None);
        for (i, text) in sites.iter().enumerate() {
            self.add_site(list, &format!("{key}[{i}]"), text);
        }
        Some(list)
    }

    fn add_site(&mut self, list: ListId, key: &str, text: &str) {
        match parse_site(text) {
            Ok(Site::Domain(host)) => self.builder.add_domain(list, host),
            Ok(Site::Url(host, path)) => {
                self.url_hosts.push(host.clone());
                self.builder.add_url(list, host, path);
            }
            Err(e) => self.problem(key, e),
        }
    }

    fn window_refs(&mut self, key: &str, windows: &[String], names: &Names) -> Vec<WindowId> {
        let mut out = Vec::new();
        for (i, name) in windows.iter().enumerate() {
            match names.windows.get(name) {
                Some(&id) => out.push(id),
                None => self.problem(
                    format!("{key}.windows[{i}]"),
                    format!("unknown window `{name}`{}", known(names.windows.keys())),
                ),
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Deny entries grouped by their windows, one list per group.
    fn deny_lists(
        &mut self,
        key: &str,
        entries: &[Timed],
        names: &Names,
        rule: &str,
        owner: &str,
    ) -> Vec<DenyRule> {
        let mut by_windows: BTreeMap<Vec<WindowId>, Vec<(usize, &str)>> = BTreeMap::new();
        for (i, entry) in entries.iter().enumerate() {
            let windows = self.window_refs(&format!("{key}[{i}]"), &entry.windows, names);
            by_windows
                .entry(windows)
                .or_default()
                .push((i, entry.name.as_str()));
        }
        let mut out = Vec::new();
        for (windows, sites) in by_windows {
            let list = self.new_list(None);
            for (i, text) in sites {
                self.add_site(list, &format!("{key}[{i}]"), text);
            }
            out.push(DenyRule {
                list,
                windows,
                rule: rule.to_string(),
                owner: owner.to_string(),
            });
        }
        out
    }

    fn blocks(
        &mut self,
        key: &str,
        entries: &[Timed],
        names: &Names,
        who: &str,
        owner: &str,
    ) -> Vec<BlockRule> {
        let mut out = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let ekey = format!("{key}[{i}]");
            let windows = self.window_refs(&ekey, &entry.windows, names);
            if names.site_groups.contains(&entry.name) {
                self.problem(
                    ekey,
                    format!(
                        "`{}` is a site group (it steers decryption or reports), not a category: it cannot be blocked",
                        entry.name
                    ),
                );
                continue;
            }
            match names.categories.get(&entry.name) {
                Some(&(category, _)) => out.push(BlockRule {
                    category,
                    windows,
                    rule: format!("category:{who}:{}", entry.name),
                    owner: owner.to_string(),
                }),
                None => self.problem(
                    ekey,
                    format!(
                        "unknown category `{}`{}",
                        entry.name,
                        known(names.categories.keys())
                    ),
                ),
            }
        }
        out
    }

    fn files(
        &mut self,
        key: &str,
        rules: &[FileRuleFile],
        names: &Names,
        who: &str,
        owner: &str,
    ) -> Vec<FileRule> {
        let mut out: Vec<FileRule> = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let rkey = format!("{key}[{i}]");
            if !is_name(&rule.name) {
                self.problem(
                    format!("{rkey}.name"),
                    "names use letters, digits, `-` and `_`",
                );
            }
            if out.iter().any(|r| r.name == rule.name) {
                self.problem(
                    format!("{rkey}.name"),
                    format!("a file rule `{}` is already defined here", rule.name),
                );
            }
            let mut extensions = Vec::new();
            for (j, ext) in rule.extensions.iter().enumerate() {
                let ext = ext.trim().trim_start_matches('.').to_ascii_lowercase();
                if ext.is_empty() || ext.contains(['/', '.', ' ', '?', '#']) {
                    self.problem(
                        format!("{rkey}.extensions[{j}]"),
                        format!("`{ext}` is not a file extension such as \"exe\""),
                    );
                } else {
                    extensions.push(ext);
                }
            }
            let mut content_types = Vec::new();
            for (j, ct) in rule.content_types.iter().enumerate() {
                let ct = ct.trim().to_ascii_lowercase();
                if ct.split('/').count() != 2 || ct.contains([';', ' ']) {
                    self.problem(
                        format!("{rkey}.content_types[{j}]"),
                        format!("`{ct}` is not a media type such as \"application/x-msdownload\""),
                    );
                } else {
                    content_types.push(ct);
                }
            }
            if rule.extensions.is_empty() && rule.content_types.is_empty() {
                self.problem(rkey.clone(), "needs `extensions` or `content_types`");
            }
            let windows = self.window_refs(&rkey, &rule.windows, names);
            out.push(FileRule {
                rule: format!("file:{who}:{}", rule.name),
                name: rule.name.clone(),
                owner: owner.to_string(),
                extensions,
                content_types,
                windows,
            });
        }
        out
    }

    fn roles(&mut self, file: &PolicyFile, names: &Names) -> Vec<RoleRules> {
        for name in file.roles.keys() {
            if name.parse::<Role>().is_err() {
                self.problem(
                    format!("roles.{name}"),
                    format!("unknown role `{name}`; roles are pupil, staff, filter-admin"),
                );
            }
        }
        let mut group_owner: BTreeMap<&str, &str> = BTreeMap::new();
        let mut out = Vec::new();
        for role in Role::ALL {
            let r = role.as_str();
            let Some(rf) = file.roles.get(r) else {
                self.problem(
                    format!("roles.{r}"),
                    format!("role `{r}` is not defined (an empty [roles.{r}] is enough)"),
                );
                out.push(RoleRules {
                    scope: empty_scope(),
                    groups: Vec::new(),
                });
                continue;
            };
            let key = format!("roles.{r}");
            let owner = people_of(r).to_owned();
            let safesearch = SafeSearch {
                safesearch: rf.safesearch.unwrap_or(true),
                youtube: rf.youtube.map_or(YouTubeMode::Strict, youtube),
            };
            let role_allow = self
                .allow_list(&format!("{key}.allow"), &rf.allow)
                .map(|list| AllowRule {
                    list,
                    rule: format!("allow:role:{r}"),
                    owner: owner.clone(),
                });
            let role_deny = self.deny_lists(
                &format!("{key}.deny"),
                &rf.deny,
                names,
                &format!("deny:role:{r}"),
                &owner,
            );
            let role_blocks = self.blocks(&format!("{key}.block"), &rf.block, names, r, &owner);
            let role_files = self.files(&format!("{key}.files"), &rf.files, names, r, &owner);
            let scope = Scope {
                allow: role_allow.iter().cloned().collect(),
                deny: role_deny.clone(),
                blocks: role_blocks.clone(),
                files: role_files.clone(),
                safesearch,
                ip_hosts: ip_host_rule(rf.block_ip_hosts, None, r, role_people(role)),
            };
            let mut groups = Vec::new();
            for (g, gf) in &rf.groups {
                let gkey = format!("{key}.groups.{g}");
                if !is_name(g) {
                    self.problem(gkey.clone(), "names use letters, digits, `-` and `_`");
                }
                if g.parse::<Role>().is_ok() {
                    self.problem(gkey.clone(), "a group cannot have a role's name");
                }
                if let Some(other) = group_owner.insert(g, r) {
                    self.problem(
                        gkey.clone(),
                        format!("group `{g}` is also defined under role `{other}`; group names must be unique"),
                    );
                }
                let gowner = format!("the {g} group");
                let mut allow: Vec<AllowRule> = role_allow.iter().cloned().collect();
                allow.extend(
                    self.allow_list(&format!("{gkey}.allow"), &gf.allow)
                        .map(|list| AllowRule {
                            list,
                            rule: format!("allow:group:{g}"),
                            owner: gowner.clone(),
                        }),
                );
                let mut deny = role_deny.clone();
                deny.extend(self.deny_lists(
                    &format!("{gkey}.deny"),
                    &gf.deny,
                    names,
                    &format!("deny:group:{g}"),
                    &gowner,
                ));
                let mut lifted = BTreeSet::new();
                for (i, c) in gf.lift.iter().enumerate() {
                    match names.categories.get(c) {
                        None => self.problem(
                            format!("{gkey}.lift[{i}]"),
                            format!("unknown category `{c}`{}", known(names.categories.keys())),
                        ),
                        Some(&(_, true)) => self.problem(
                            format!("{gkey}.lift[{i}]"),
                            format!("`{c}` is a locked category and cannot be lifted"),
                        ),
                        Some(&(id, false)) => {
                            if !role_blocks.iter().any(|b| b.category == id) {
                                self.problem(
                                    format!("{gkey}.lift[{i}]"),
                                    format!("role `{r}` does not block `{c}`"),
                                );
                            }
                            lifted.insert(id);
                        }
                    }
                }
                let mut blocks: Vec<BlockRule> = role_blocks
                    .iter()
                    .filter(|b| !lifted.contains(&b.category))
                    .cloned()
                    .collect();
                blocks.extend(self.blocks(&format!("{gkey}.block"), &gf.block, names, g, &gowner));
                let own_files = self.files(&format!("{gkey}.files"), &gf.files, names, g, &gowner);
                let mut files: Vec<FileRule> = role_files
                    .iter()
                    .filter(|f| !own_files.iter().any(|o| o.name == f.name))
                    .cloned()
                    .collect();
                files.extend(own_files);
                let safesearch = SafeSearch {
                    safesearch: gf.safesearch.unwrap_or(safesearch.safesearch),
                    youtube: gf.youtube.map_or(safesearch.youtube, youtube),
                };
                let ip_hosts = ip_host_rule(gf.block_ip_hosts, scope.ip_hosts.as_ref(), g, &gowner);
                groups.push((
                    g.clone(),
                    Scope {
                        allow,
                        deny,
                        blocks,
                        files,
                        safesearch,
                        ip_hosts,
                    },
                ));
            }
            out.push(RoleRules { scope, groups });
        }
        out
    }

    fn unblocks(
        &mut self,
        unblocks: &[UnblockFile],
        names: &Names,
        groups: &[crate::snapshot::GroupInfo],
        tz: &TimeZone,
    ) -> Vec<Unblock> {
        let mut out = Vec::new();
        let mut ids = BTreeSet::new();
        for (i, u) in unblocks.iter().enumerate() {
            let key = format!("unblocks[{i}]");
            let id = u.id.clone().unwrap_or_else(|| (i + 1).to_string());
            if !ids.insert(id.clone()) {
                self.problem(
                    format!("{key}.id"),
                    format!("unblock id `{id}` is used twice"),
                );
            }
            let target = match (&u.site, &u.category) {
                (None, None) if !u.focus.is_empty() => {
                    let list = self.new_list(None);
                    for (j, site) in u.focus.iter().enumerate() {
                        self.add_site(list, &format!("{key}.focus[{j}]"), site);
                    }
                    Some(UnblockTarget::Focus(list))
                }
                _ if !u.focus.is_empty() => {
                    self.problem(
                        key.clone(),
                        "a focus names its sites in `focus` only, without `site` or `category`",
                    );
                    None
                }
                (Some(site), None) => {
                    let list = self.new_list(None);
                    self.add_site(list, &format!("{key}.site"), site);
                    Some(UnblockTarget::Site(list))
                }
                (None, Some(c)) if names.site_groups.contains(c) => {
                    self.problem(
                        format!("{key}.category"),
                        format!("`{c}` is a site group: it blocks nothing, so there is nothing to unblock"),
                    );
                    None
                }
                (None, Some(c)) => match names.categories.get(c) {
                    None => {
                        self.problem(
                            format!("{key}.category"),
                            format!("unknown category `{c}`{}", known(names.categories.keys())),
                        );
                        None
                    }
                    Some(&(_, true)) => {
                        self.problem(
                            format!("{key}.category"),
                            format!("`{c}` is a locked category and can never be unblocked"),
                        );
                        None
                    }
                    Some(&(id, false)) => Some(UnblockTarget::Category(id)),
                },
                _ => {
                    self.problem(key.clone(), "give exactly one of `site` or `category`");
                    None
                }
            };
            let role = u.role.as_deref().and_then(|r| match r.parse::<Role>() {
                Ok(role) => Some(role),
                Err(e) => {
                    self.problem(format!("{key}.role"), e.to_string());
                    None
                }
            });
            if let Some(g) = &u.group {
                let owner = groups
                    .iter()
                    .find(|group| &group.name == g)
                    .map(|group| group.role.as_str());
                match owner {
                    None => self.problem(format!("{key}.group"), format!("unknown group `{g}`")),
                    Some(owner) if u.role.as_deref().is_some_and(|r| r != owner) => self.problem(
                        format!("{key}.group"),
                        format!("group `{g}` belongs to role `{owner}`"),
                    ),
                    Some(_) => {}
                }
            }
            if u.role.is_none() && u.group.is_none() && u.user.is_none() {
                self.problem(
                    key.clone(),
                    "say who it is for: `role`, `group` and/or `user`",
                );
            }
            let until = match parse_instant(&u.until.0, tz) {
                Ok(t) => Some(t),
                Err(e) => {
                    self.problem(format!("{key}.until"), e);
                    None
                }
            };
            let from = u.from.as_ref().and_then(|f| match parse_instant(&f.0, tz) {
                Ok(t) => Some(t),
                Err(e) => {
                    self.problem(format!("{key}.from"), e);
                    None
                }
            });
            if let (Some(from), Some(until)) = (from, until)
                && from >= until
            {
                self.problem(format!("{key}.until"), "is not after `from`");
            }
            if let (Some(target), Some(until)) = (target, until) {
                out.push(Unblock {
                    rule: format!("unblock:{id}"),
                    target,
                    role,
                    group: u.group.clone(),
                    user: u.user.clone(),
                    from,
                    until,
                    until_text: local_text(until, tz),
                    reason: u.reason.clone(),
                });
            }
        }
        out
    }
}

impl Compiler<'_> {
    /// `[decrypt]`: lists for the sites, category references checked, and one list
    /// of the hosts that URL entries name when `path_rules` is on.
    fn decrypt(&mut self, file: &DecryptFile, names: &Names) -> DecryptRules {
        let never_sites = self.allow_list("decrypt.never_sites", &file.never_sites);
        let sites = self.allow_list("decrypt.sites", &file.sites);
        let never_categories =
            self.category_refs("decrypt.never_categories", &file.never_categories, names);
        let categories = self.category_refs("decrypt.categories", &file.categories, names);
        for (i, name) in file.categories.iter().enumerate() {
            if file.never_categories.contains(name) {
                self.problem(
                    format!("decrypt.categories[{i}]"),
                    format!("`{name}` is also in decrypt.never_categories; keep it in one"),
                );
            }
        }
        let path_hosts = (file.path_rules && !self.url_hosts.is_empty()).then(|| {
            let list = self.new_list(None);
            for host in std::mem::take(&mut self.url_hosts) {
                self.builder.add_domain(list, host);
            }
            list
        });
        DecryptRules {
            never_sites,
            never_categories,
            sites,
            categories,
            path_hosts,
            sni_mismatch: match file.sni_mismatch {
                SniMismatchFile::Block => SniMismatch::Block,
                SniMismatchFile::Allow => SniMismatch::Allow,
            },
            block_pages: file.block_pages,
        }
    }

    /// Category names resolved to their indexes; unknown names are problems.
    fn category_refs(&mut self, key: &str, list: &[String], names: &Names) -> Vec<u16> {
        let mut out = Vec::new();
        for (i, name) in list.iter().enumerate() {
            match names.categories.get(name) {
                Some(&(id, _)) => out.push(id),
                None => self.problem(
                    format!("{key}[{i}]"),
                    format!(
                        "unknown category `{name}`{}",
                        known(names.categories.keys())
                    ),
                ),
            }
        }
        out
    }
}

fn empty_scope() -> Scope {
    Scope {
        allow: Vec::new(),
        deny: Vec::new(),
        blocks: Vec::new(),
        files: Vec::new(),
        safesearch: SafeSearch::default(),
        ip_hosts: None,
    }
}

/// A role's people, for reasons on the block page.
fn role_people(role: Role) -> &'static str {
    match role {
        Role::Pupil => "pupils",
        Role::Staff => "staff",
        Role::FilterAdmin => "filter admins",
    }
}

/// The `block_ip_hosts` rule of a role or group: `setting` when given, else the
/// role's (`inherited`; off for a role). `who` names the rule, `whom` the people.
fn ip_host_rule(
    setting: Option<bool>,
    inherited: Option<&IpHostRule>,
    who: &str,
    whom: &str,
) -> Option<IpHostRule> {
    match setting {
        None => inherited.cloned(),
        Some(false) => None,
        Some(true) => Some(IpHostRule {
            rule: format!("ip-address-host:{who}"),
            reason: format!(
                "Sites reached by their number (an IP address) instead of their name are \
                 blocked for {whom}"
            ),
        }),
    }
}

fn youtube(mode: YouTubeFile) -> YouTubeMode {
    match mode {
        YouTubeFile::Strict => YouTubeMode::Strict,
        YouTubeFile::Moderate => YouTubeMode::Moderate,
        YouTubeFile::Off => YouTubeMode::Off,
    }
}

fn local_text(ts: Timestamp, tz: &TimeZone) -> String {
    tz.to_datetime(ts).strftime("%Y-%m-%d %H:%M").to_string()
}

fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// `; known: a, b, c` or `; none are defined`.
fn known<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() {
        "; none are defined".to_string()
    } else {
        format!("; known: {}", names.join(", "))
    }
}

/// `example.com` (a domain and its subdomains) or `example.com/path` (that path
/// prefix on that host and its subdomains); an `http://` or `https://` prefix is
/// ignored.
fn parse_site(text: &str) -> Result<Site, String> {
    let trimmed = text.trim();
    let rest = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"))
        .unwrap_or(trimmed);
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let host = Host::parse(host).map_err(|e| format!("`{text}` is not a site: {e}"))?;
    if path.is_empty() || path == "/" {
        Ok(Site::Domain(host))
    } else {
        Ok(Site::Url(host, path.to_string()))
    }
}

/// The 1-based line where the key path (`roles.pupil.block[2].windows[0]`) is
/// written, found by walking the spanned TOML document; `None` when it cannot be
/// located (e.g. a key that is missing).
fn key_line(text: &str, key: &str) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let doc = DeTable::parse(text).ok()?;
    let mut segments = Vec::new();
    for part in key.split('.') {
        let (name, rest) = part.split_once('[').unwrap_or((part, ""));
        segments.push((name.to_string(), None));
        for index in rest.split('[') {
            if let Ok(i) = index.trim_end_matches(']').parse::<usize>() {
                segments.push((String::new(), Some(i)));
            }
        }
    }
    let mut table = doc.get_ref();
    let mut value: Option<&toml::Spanned<DeValue<'_>>> = None;
    let mut span = None;
    for (name, index) in segments {
        if let Some(i) = index {
            let array = match value.map(|v| v.get_ref()) {
                Some(DeValue::Array(array)) => array,
                _ => break,
            };
            let item = array.get(i)?;
            span = Some(item.span());
            if let DeValue::Table(t) = item.get_ref() {
                table = t;
            }
            value = Some(item);
        } else {
            let (k, v) = table.get_key_value(name.as_str())?;
            span = Some(k.span());
            if let DeValue::Table(t) = v.get_ref() {
                table = t;
            }
            value = Some(v);
        }
    }
    span.map(|s| line_column(text, s.start).0)
}
