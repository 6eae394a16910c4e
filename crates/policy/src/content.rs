//! `[content]`: pages scored by weighted phrases (e2guardian's content analysis) and
//! banned searches. The lists are read and compiled with the policy, so a list that
//! changes reloads like any other, and a request keeps the lists it started with.
//!
//! Per role (`[content.roles.ROLE]`): the limit above which a page is blocked
//! (pupils 100 unless set; staff and filter admins are not scanned unless set), the
//! categories that count (default all), sites never scanned, and whether banned
//! searches apply. Per group (`[content.groups.NAME]`): a limit, categories or
//! exempt sites that replace the role's for the group's members (the group wins;
//! what it does not set comes from the role). Pages of allow-listed sites and active
//! unblocks are never scanned.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use safegate_content::{BannedSearches, CategoryId, Finding, PhraseSet, ScanLimits};
use serde::Deserialize;

/// The roles, in the snapshot's role order (`Role::ALL`): this module names them
/// itself so that it depends on nothing else of the crate (the snapshot makes the
/// decisions from what it finds).
const ROLES: [&str; 3] = ["pupil", "staff", "filter-admin"];

/// The default `max_hold`: how much of a page is held back while it is scanned.
pub const DEFAULT_MAX_HOLD: u64 = 256 * 1024;

/// The default `max_scan`: decoded bytes scanned at most per page.
pub const DEFAULT_MAX_SCAN: u64 = 32 * 1024 * 1024;

/// The pupils' limit when `[content.roles.pupil]` gives none.
pub const DEFAULT_PUPIL_LIMIT: i64 = 100;

/// A size: a number of bytes, or text such as `"256 KiB"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum SizeFile {
    Bytes(u64),
    Text(String),
}

impl SizeFile {
    fn bytes(&self) -> Result<u64, String> {
        match self {
            SizeFile::Bytes(n) => Ok(*n),
            SizeFile::Text(text) => parse_size(text),
        }
    }
}

fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size such as \"256 KiB\""))?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        "g" | "gb" | "gib" => 1024 * 1024 * 1024,
        _ => return Err(format!("`{text}`: the unit must be B, KiB, MiB or GiB")),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// `[content]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ContentFile {
    /// Weighted phrase lists, each counting for a category.
    #[serde(default)]
    pub lists: Vec<ContentListFile>,
    /// How much of a page is held back while it is scanned.
    #[serde(default)]
    pub max_hold: Option<SizeFile>,
    /// Decoded bytes scanned at most per page (decompression bombs, endless pages).
    #[serde(default)]
    pub max_scan: Option<SizeFile>,
    /// The banned-search phrase list, relative to the policy file.
    #[serde(default)]
    pub banned_searches: Option<PathBuf>,
    /// Per-role settings.
    #[serde(default)]
    pub roles: BTreeMap<String, ContentRoleFile>,
    /// Per-group settings, which win over the group's role.
    #[serde(default)]
    pub groups: BTreeMap<String, ContentGroupFile>,
}

/// `[content.groups.NAME]`: each setting given replaces the role's.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ContentGroupFile {
    /// Pages scoring above this are blocked.
    #[serde(default)]
    pub limit: Option<i64>,
    /// The categories that count; empty: the role's.
    #[serde(default)]
    pub categories: Vec<String>,
    /// Sites whose pages are never scanned; empty: the role's.
    #[serde(default)]
    pub exempt: Vec<String>,
}

/// One `[[content.lists]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ContentListFile {
    /// The list file (e2guardian weighted phrase format).
    pub path: PathBuf,
    /// The category its entries count for (a `#listcategory:` line overrides it).
    pub category: String,
}

/// `[content.roles.ROLE]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ContentRoleFile {
    /// Pages scoring above this are blocked; none: not scanned.
    #[serde(default)]
    pub limit: Option<i64>,
    /// The categories that count; empty: all.
    #[serde(default)]
    pub categories: Vec<String>,
    /// Sites whose pages are never scanned.
    #[serde(default)]
    pub exempt: Vec<String>,
    /// Whether banned searches are blocked; default true where a list is given.
    #[serde(default)]
    pub banned_searches: Option<bool>,
}

/// One role's compiled settings.
#[derive(Debug, Clone, Default)]
pub(crate) struct RoleContent {
    pub limit: Option<i64>,
    /// Counted categories; `None`: all.
    pub categories: Option<Arc<[CategoryId]>>,
    pub exempt: Option<crate::lists::index::ListId>,
    pub banned_searches: bool,
}

/// The compiled `[content]`.
#[derive(Debug, Clone, Default)]
pub struct ContentRules {
    pub(crate) set: Option<Arc<PhraseSet>>,
    pub(crate) banned: Option<Arc<BannedSearches>>,
    pub(crate) max_hold: u64,
    pub(crate) limits: ScanLimits,
    pub(crate) roles: [RoleContent; 3],
    /// `[content.groups]` by group name: `None` fields come from the role.
    pub(crate) groups: BTreeMap<String, GroupContent>,
}

/// One group's compiled settings; each one set replaces the role's.
#[derive(Debug, Clone, Default)]
pub(crate) struct GroupContent {
    pub limit: Option<i64>,
    pub categories: Option<Arc<[CategoryId]>>,
    pub exempt: Option<crate::lists::index::ListId>,
}

/// What the proxy needs to scan one response for one person.
#[derive(Debug, Clone)]
pub struct ContentCheck {
    /// The compiled phrases.
    pub set: Arc<PhraseSet>,
    /// Pages scoring above this are blocked.
    pub limit: i64,
    /// Counted categories; `None`: all.
    pub categories: Option<Arc<[CategoryId]>>,
    /// Bytes held back at most while scanning.
    pub max_hold: u64,
    /// Bounds on the scan.
    pub limits: ScanLimits,
    /// The role, for the rule id and the reason.
    pub role: crate::Role,
}

impl ContentCheck {
    /// Whether a category counts for this person.
    pub fn counts(&self, category: CategoryId) -> bool {
        self.categories
            .as_ref()
            .is_none_or(|counted| counted.contains(&category))
    }

    /// Whether a finding is over the limit.
    pub fn over(&self, finding: &Finding) -> bool {
        finding.score > self.limit
    }
}

impl ContentRules {
    /// The settings for the role at `role_index` (`Role::ALL` order).
    pub(crate) fn role(&self, role_index: usize) -> &RoleContent {
        &self.roles[role_index.min(self.roles.len() - 1)]
    }

    /// The settings for a member of `group` (already checked to be of the role), or
    /// for the role alone: the group's where it sets them, else the role's.
    pub(crate) fn settings(&self, role_index: usize, group: Option<&str>) -> RoleContent {
        let role = self.role(role_index);
        let Some(group) = group.and_then(|name| self.groups.get(name)) else {
            return role.clone();
        };
        RoleContent {
            limit: group.limit.or(role.limit),
            categories: group.categories.clone().or_else(|| role.categories.clone()),
            exempt: group.exempt.or(role.exempt),
            banned_searches: role.banned_searches,
        }
    }

    /// The banned phrase in `terms` for the role at `role_index`, if banned searches
    /// apply to it.
    pub(crate) fn banned_phrase(&self, role_index: usize, terms: &str) -> Option<&str> {
        if !self.role(role_index).banned_searches {
            return None;
        }
        self.banned.as_ref()?.find(terms)
    }
}

/// Reads and compiles `[content]` (paths relative to `base`; `groups`: the policy's
/// group names); problems go to `problem` with their key. Returns the rules and the
/// files read.
pub(crate) fn compile(
    file: &ContentFile,
    base: &Path,
    groups: &[&str],
    problem: &mut impl FnMut(String, String),
    exempt_list: &mut impl FnMut(&str, &[String]) -> Option<crate::lists::index::ListId>,
) -> (ContentRules, Vec<PathBuf>) {
    let mut rules = ContentRules {
        max_hold: DEFAULT_MAX_HOLD,
        limits: ScanLimits {
            max_decoded: DEFAULT_MAX_SCAN,
        },
        ..ContentRules::default()
    };
    let mut files = Vec::new();
    for (key, size, target) in [
        ("content.max_hold", &file.max_hold, &mut rules.max_hold),
        (
            "content.max_scan",
            &file.max_scan,
            &mut rules.limits.max_decoded,
        ),
    ] {
        match size.as_ref().map(SizeFile::bytes) {
            Some(Ok(bytes)) if bytes > 0 => *target = bytes,
            Some(Ok(_)) => problem(key.to_owned(), "must be more than 0".to_owned()),
            Some(Err(why)) => problem(key.to_owned(), why),
            None => {}
        }
    }
    let mut entries = Vec::new();
    for (i, list) in file.lists.iter().enumerate() {
        let path = base.join(&list.path);
        match safegate_content::weighted_list::read_list(&path, &list.category) {
            Ok(read) => entries.extend(read),
            Err(error) => problem(format!("content.lists[{i}]"), error.to_string()),
        }
        files.push(path);
    }
    if !entries.is_empty() {
        match PhraseSet::build(&entries) {
            Ok(set) => rules.set = Some(Arc::new(set)),
            Err(error) => problem("content.lists".to_owned(), error.to_string()),
        }
    }
    if let Some(banned) = &file.banned_searches {
        let path = base.join(banned);
        match BannedSearches::read(&path) {
            Ok(list) => rules.banned = Some(Arc::new(list)),
            Err(error) => problem("content.banned_searches".to_owned(), error.to_string()),
        }
        files.push(path);
    }
    for (name, role_file) in &file.roles {
        let key = format!("content.roles.{name}");
        match ROLES.iter().position(|role| role == name) {
            Some(role) => {
                let compiled = role_content(&rules, role_file, &key, problem, exempt_list);
                rules.roles[role] = compiled;
            }
            None => problem(
                key,
                format!("unknown role `{name}`; roles are pupil, staff, filter-admin"),
            ),
        }
    }
    for (name, group_file) in &file.groups {
        let key = format!("content.groups.{name}");
        if !groups.contains(&name.as_str()) {
            problem(
                key,
                format!("unknown group `{name}`: groups are declared in [groups] or under a role"),
            );
            continue;
        }
        let categories = counted_categories(&rules, &group_file.categories, &key, problem);
        let exempt = if group_file.exempt.is_empty() {
            None
        } else {
            exempt_list(&format!("{key}.exempt"), &group_file.exempt)
        };
        rules.groups.insert(
            name.clone(),
            GroupContent {
                limit: group_file.limit,
                categories,
                exempt,
            },
        );
    }
    if !file.roles.contains_key("pupil") {
        rules.roles[0] = RoleContent {
            limit: Some(DEFAULT_PUPIL_LIMIT),
            banned_searches: rules.banned.is_some(),
            ..RoleContent::default()
        };
    }
    (rules, files)
}

fn role_content(
    rules: &ContentRules,
    file: &ContentRoleFile,
    key: &str,
    problem: &mut impl FnMut(String, String),
    exempt_list: &mut impl FnMut(&str, &[String]) -> Option<crate::lists::index::ListId>,
) -> RoleContent {
    RoleContent {
        limit: file.limit,
        categories: counted_categories(rules, &file.categories, key, problem),
        exempt: exempt_list(&format!("{key}.exempt"), &file.exempt),
        banned_searches: file.banned_searches.unwrap_or(rules.banned.is_some()),
    }
}

/// The ids of the categories named under `key`; `None` when none is named.
fn counted_categories(
    rules: &ContentRules,
    names: &[String],
    key: &str,
    problem: &mut impl FnMut(String, String),
) -> Option<Arc<[CategoryId]>> {
    let mut categories = Vec::new();
    for (i, name) in names.iter().enumerate() {
        match rules.set.as_ref().and_then(|set| set.category(name)) {
            Some(id) => categories.push(id),
            None => problem(
                format!("{key}.categories[{i}]"),
                format!("no content list has the category `{name}`"),
            ),
        }
    }
    (!categories.is_empty()).then(|| Arc::from(categories))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_bytes_or_with_units() {
        assert_eq!(parse_size("256 KiB"), Ok(262_144));
        assert_eq!(parse_size("2MiB"), Ok(2_097_152));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
    }
}
