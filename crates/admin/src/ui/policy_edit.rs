//! Changes to the policy file made from the admin pages. Each change is made on the
//! file's text with `toml_edit` (comments and layout survive), checked by compiling the
//! result exactly as a reload would (the error, with line and column, is shown and the
//! file is left alone), recorded in the audit log with who, why and a diff, and then
//! written atomically (a temporary file in the same directory, renamed over the old
//! one); the running service's reload path takes it live.
//!
//! Every form carries the version of the file it was made from (a hash of its text):
//! if the file changed since, the edit is refused rather than silently overwriting
//! someone else's change.

use std::path::{Path, PathBuf};

use blake2::Blake2b;
use blake2::digest::Digest;
use blake2::digest::consts::U16;
use safegate_policy::Policy;
use safegate_store::{AuditAction, Store};
use toml_edit::{Array, ArrayOfTables, DocumentMut, Item, Table, Value};

/// Why an edit was not made.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// The file changed since the form was made.
    #[error(
        "the policy was changed by someone else since you opened this page; reload the page and make your change again"
    )]
    Stale,
    /// The edited policy does not compile; nothing was changed.
    #[error("the change was not saved because the policy would not load: {0}")]
    Invalid(String),
    /// The request asks for something the policy does not allow (a locked category).
    #[error("{0}")]
    Refused(String),
    /// The policy file cannot be parsed as TOML (edited by hand and broken).
    #[error("the policy file cannot be read as TOML: {0}")]
    Toml(String),
    /// Reading or writing the file failed.
    #[error("cannot read or write the policy file: {0}")]
    Io(#[from] std::io::Error),
    /// The audit log could not record the change; nothing was changed.
    #[error("the audit log cannot record the change, so it was not made: {0}")]
    Audit(String),
}

/// The version of a policy text, as carried by forms.
pub fn version_of(text: &str) -> String {
    let hash = Blake2b::<U16>::digest(text.as_bytes());
    hash.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Where a list or a block applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Everyone (`[global]`; allow and deny lists only).
    Global,
    /// A role (`[roles.ROLE]`).
    Role(String),
    /// A group of a role (`[roles.ROLE.groups.GROUP]`).
    Group(String, String),
}

impl Scope {
    /// The scope as shown and as sent by forms: `global`, `pupil`, `pupil/year7`.
    pub fn text(&self) -> String {
        match self {
            Scope::Global => "global".to_owned(),
            Scope::Role(role) => role.clone(),
            Scope::Group(role, group) => format!("{role}/{group}"),
        }
    }

    /// Reads [`Scope::text`]'s form.
    pub fn parse(text: &str) -> Option<Scope> {
        let valid = |part: &str| {
            part.starts_with(|c: char| c.is_ascii_alphanumeric())
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        match text.split_once('/') {
            None if text == "global" => Some(Scope::Global),
            None if valid(text) => Some(Scope::Role(text.to_owned())),
            Some((role, group)) if valid(role) && valid(group) => {
                Some(Scope::Group(role.to_owned(), group.to_owned()))
            }
            _ => None,
        }
    }
}

/// A temporary unblock to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUnblock {
    /// A site (`pinterest.com`) or, with `category`, nothing.
    pub site: Option<String>,
    /// A category.
    pub category: Option<String>,
    /// Focus: the only sites open while it lasts (no `site` or `category` then).
    pub focus: Vec<String>,
    /// Who it applies to: a role or a role's group.
    pub scope: Scope,
    /// One person only (with the role of `scope`), when given.
    pub user: Option<String>,
    /// Start, school time (`2026-11-24 10:00`).
    pub from: String,
    /// End, school time.
    pub until: String,
    /// Why (shown on block pages and in the audit log).
    pub reason: String,
    /// Who granted it.
    pub granted_by: String,
}

/// One change to the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Block or stop blocking a category for a role or group: always, or only inside
    /// the named time windows.
    SetBlocked {
        /// Role or group.
        scope: Scope,
        /// Category name.
        category: String,
        /// Block it.
        blocked: bool,
        /// Time windows (`[windows.NAME]`) the block applies in; empty for always.
        windows: Vec<String>,
    },
    /// Replace a scope's allow or deny list.
    SetList {
        /// Global, role or group.
        scope: Scope,
        /// `allow` or `deny`.
        deny: bool,
        /// Entries, one site or URL each.
        entries: Vec<String>,
    },
    /// Add one entry to a scope's allow or deny list (nothing when it is there).
    AddListEntry {
        /// Global, role or group.
        scope: Scope,
        /// `allow` or `deny`.
        deny: bool,
        /// The site or URL.
        entry: String,
    },
    /// Add a temporary unblock.
    AddUnblock(NewUnblock),
    /// Remove a temporary unblock by id.
    RemoveUnblock(String),
    /// Create or change a time window (`[windows.NAME]`); rules name windows, so a
    /// window's times change every rule that uses it.
    SetWindow(WindowEdit),
    /// Set the school's name and the block page's message, logo and language
    /// (`school` and `[block_page]`); the compile checks them.
    SetBlockPage(BlockPageEdit),
    /// Create or change a group of people (`[groups.NAME]`).
    SetGroup(GroupEdit),
    /// Remove a group (`[groups.NAME]`; its rules under the role stay until removed).
    RemoveGroup(String),
    /// Decrypt one more host (`[decrypt] sites`), so that rules for its pages apply.
    AddDecryptSite(String),
}

/// A group as the groups page edits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEdit {
    /// The group's name (`year6`).
    pub name: String,
    /// The role its members browse as.
    pub role: String,
    /// What it is, for people.
    pub description: String,
    /// Address ranges of its computers.
    pub addresses: Vec<String>,
    /// Staff accounts that teach it.
    pub teachers: Vec<String>,
}

/// The school's block page as the rules page edits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockPageEdit {
    /// The school's name (`school`).
    pub school: String,
    /// The school's message (`block_page.message`).
    pub message: String,
    /// The logo file, relative to the policy file (`block_page.logo`).
    pub logo: String,
    /// The school-wide language (`block_page.language`).
    pub language: String,
}

/// A time window as the rules page edits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowEdit {
    /// The window's name (`core-hours`): letters, digits, `-` and `_`.
    pub name: String,
    /// What it is for, shown to people; empty removes it.
    pub description: String,
    /// Days (`mon-fri`, `sat`); none means every day.
    pub days: Vec<String>,
    /// Times of day (`08:30-15:30`); none means all day.
    pub times: Vec<String>,
    /// Only on term days (`[calendar]`).
    pub terms_only: bool,
}

impl Edit {
    /// One line saying what the change is, for messages.
    pub fn summary(&self) -> String {
        match self {
            Edit::SetBlocked {
                scope,
                category,
                blocked,
                windows,
            } => format!(
                "{} {category} for {}{}",
                if *blocked { "block" } else { "stop blocking" },
                scope.text(),
                if *blocked && !windows.is_empty() {
                    format!(" in {}", windows.join(", "))
                } else {
                    String::new()
                }
            ),
            Edit::SetList {
                scope,
                deny,
                entries,
            } => format!(
                "{} list of {}: {} entries",
                if *deny { "deny" } else { "allow" },
                scope.text(),
                entries.len()
            ),
            Edit::AddListEntry { scope, deny, entry } => format!(
                "add {entry} to the {} list of {}",
                if *deny { "deny" } else { "allow" },
                scope.text()
            ),
            Edit::AddUnblock(unblock) if !unblock.focus.is_empty() => format!(
                "focus {} on {} from {} until {}",
                unblock.scope.text(),
                unblock.focus.join(", "),
                unblock.from,
                unblock.until
            ),
            Edit::AddUnblock(unblock) => format!(
                "unblock {} for {} from {} until {}",
                unblock
                    .site
                    .as_deref()
                    .or(unblock.category.as_deref())
                    .unwrap_or("?"),
                unblock.user.clone().unwrap_or_else(|| unblock.scope.text()),
                unblock.from,
                unblock.until
            ),
            Edit::RemoveUnblock(id) => format!("remove unblock {id}"),
            Edit::SetGroup(group) => format!("group {} ({})", group.name, group.role),
            Edit::RemoveGroup(name) => format!("remove group {name}"),
            Edit::AddDecryptSite(host) => format!("decrypt {host}"),
            Edit::SetBlockPage(page) => format!(
                "block page: school \"{}\", language {}, {}, {}",
                page.school,
                page.language,
                if page.message.is_empty() {
                    "no message"
                } else {
                    "a message"
                },
                if page.logo.is_empty() {
                    "no logo"
                } else {
                    "a logo"
                }
            ),
            Edit::SetWindow(window) => format!(
                "time window {}: {} {}{}",
                window.name,
                if window.days.is_empty() {
                    "every day".to_owned()
                } else {
                    window.days.join(", ")
                },
                if window.times.is_empty() {
                    "all day".to_owned()
                } else {
                    window.times.join(", ")
                },
                if window.terms_only {
                    ", term days only"
                } else {
                    ""
                }
            ),
        }
    }
}

/// The policy file the pages edit.
#[derive(Debug, Clone)]
pub struct PolicyFile {
    path: PathBuf,
}

/// Who makes a change, why and when (for the audit log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author {
    /// The signed-in user.
    pub user: String,
    /// Why, when given.
    pub reason: Option<String>,
    /// When, Unix microseconds.
    pub at_unix_micros: u64,
}

/// A change that was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The file's new version.
    pub version: String,
    /// The audit entry's sequence number.
    pub audit_sequence: u64,
}

impl PolicyFile {
    /// The file at `path`.
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The text and its version.
    pub fn read(&self) -> Result<(String, String), EditError> {
        let text = std::fs::read_to_string(&self.path)?;
        let version = version_of(&text);
        Ok((text, version))
    }

    /// Makes `edit` if the file is still at `version`: checks, audits (by
    /// `author`), then writes the file atomically. Blocking (it compiles the policy):
    /// call it on a blocking thread.
    pub fn apply(
        &self,
        store: &Store,
        version: &str,
        edit: &Edit,
        locked: &[String],
        author: &Author,
    ) -> Result<Applied, EditError> {
        let (text, current) = self.read()?;
        if current != version {
            return Err(EditError::Stale);
        }
        let mut document: DocumentMut = text
            .parse()
            .map_err(|err: toml_edit::TomlError| EditError::Toml(err.to_string()))?;
        apply_edit(&mut document, edit, locked)?;
        let new_text = document.to_string();
        let directory = self.path.parent().unwrap_or_else(|| Path::new("."));
        let file_name = self.path.file_name().map_or_else(
            || "policy.toml".into(),
            |n| n.to_string_lossy().into_owned(),
        );
        let temp = directory.join(format!(".{file_name}.admin-edit"));
        std::fs::write(&temp, &new_text)?;
        let cleanup = TempFile(&temp);
        if let Err(err) = Policy::load(&temp) {
            return Err(EditError::Invalid(in_words(&err, &temp, &self.path)));
        }
        // Another edit may have landed while this one compiled.
        if self.read()?.1 != version {
            return Err(EditError::Stale);
        }
        let entry = store
            .audit_policy_text(
                author.at_unix_micros,
                &author.user,
                match edit {
                    Edit::AddUnblock(_) | Edit::RemoveUnblock(_) => AuditAction::Unblock,
                    _ => AuditAction::PolicyChange,
                },
                author.reason.as_deref(),
                &new_text,
                crate::ui::policy_diff,
            )
            .map_err(|err| EditError::Audit(err.to_string()))?;
        std::fs::rename(&temp, &self.path)?;
        std::mem::forget(cleanup);
        Ok(Applied {
            version: version_of(&new_text),
            audit_sequence: entry.map_or(0, |entry| entry.sequence),
        })
    }
}

/// Why an edited policy would not load, in the words of its problems (no file names,
/// keys or line numbers: the person made the change on a page, not in the file).
fn in_words(err: &safegate_policy::PolicyError, temp: &Path, path: &Path) -> String {
    match err {
        safegate_policy::PolicyError::Invalid { problems, .. } => {
            let mut words: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
            words.dedup();
            words.join("; ")
        }
        safegate_policy::PolicyError::Schema { message, .. } => message.clone(),
        other => other
            .to_string()
            .replace(&temp.display().to_string(), &path.display().to_string()),
    }
}

/// Removes a temporary file when an edit is abandoned.
struct TempFile<'a>(&'a Path);

impl Drop for TempFile<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

/// The table of a scope, created when missing (roles and groups must exist already
/// for blocks; lists create their table).
fn scope_table<'a>(
    document: &'a mut DocumentMut,
    scope: &Scope,
) -> Result<&'a mut Table, EditError> {
    let missing = |what: String| EditError::Refused(format!("{what} is not in the policy"));
    match scope {
        Scope::Global => document
            .entry("global")
            .or_insert_with(|| Item::Table(Table::new()))
            .as_table_mut()
            .ok_or_else(|| EditError::Toml("[global] is not a table".to_owned())),
        Scope::Role(role) => document
            .get_mut("roles")
            .and_then(Item::as_table_mut)
            .and_then(|roles| roles.get_mut(role))
            .and_then(Item::as_table_mut)
            .ok_or_else(|| missing(format!("role {role}"))),
        Scope::Group(role, group) => {
            // A group defined in [groups] gets its rules table on its first rule.
            let defined = document
                .get("groups")
                .and_then(|groups| groups.get(group))
                .and_then(|g| g.get("role"))
                .and_then(Item::as_str)
                == Some(role.as_str());
            let role_table = document
                .get_mut("roles")
                .and_then(Item::as_table_mut)
                .and_then(|roles| roles.get_mut(role))
                .and_then(Item::as_table_mut)
                .ok_or_else(|| missing(format!("role {role}")))?;
            if defined && !role_table.contains_key("groups") {
                let mut groups = Table::new();
                groups.set_implicit(true);
                role_table.insert("groups", Item::Table(groups));
            }
            let groups = role_table
                .get_mut("groups")
                .and_then(Item::as_table_mut)
                .ok_or_else(|| missing(format!("group {group} of role {role}")))?;
            if defined && !groups.contains_key(group) {
                groups.insert(group, Item::Table(Table::new()));
            }
            groups
                .get_mut(group)
                .and_then(Item::as_table_mut)
                .ok_or_else(|| missing(format!("group {group} of role {role}")))
        }
    }
}

fn array_entry<'a>(table: &'a mut Table, key: &str) -> Result<&'a mut Array, EditError> {
    table
        .entry(key)
        .or_insert_with(|| Item::Value(Value::Array(Array::new())))
        .as_array_mut()
        .ok_or_else(|| EditError::Toml(format!("`{key}` is not an array")))
}

/// The category an entry of a `block` array names: a string, or an inline table's
/// `category`.
fn block_entry_category(value: &Value) -> Option<&str> {
    match value {
        Value::String(name) => Some(name.value()),
        Value::InlineTable(table) => table.get("category").and_then(Value::as_str),
        _ => None,
    }
}

/// Applies one edit to the document.
pub fn apply_edit(
    document: &mut DocumentMut,
    edit: &Edit,
    locked: &[String],
) -> Result<(), EditError> {
    match edit {
        Edit::SetBlocked {
            scope,
            category,
            blocked,
            windows,
        } => {
            if locked.iter().any(|name| name == category) {
                return Err(EditError::Refused(format!(
                    "{category} is a locked category: it is blocked for everyone and cannot be changed here"
                )));
            }
            if *scope == Scope::Global {
                return Err(EditError::Refused(
                    "categories are blocked per role or group".to_owned(),
                ));
            }
            let table = scope_table(document, scope)?;
            let block = array_entry(table, "block")?;
            block.retain(|value| block_entry_category(value) != Some(category.as_str()));
            if *blocked && windows.is_empty() {
                block.push(category.as_str());
            } else if *blocked {
                let mut entry = toml_edit::InlineTable::new();
                entry.insert("category", category.as_str().into());
                let mut names = Array::new();
                for window in windows {
                    names.push(window.as_str());
                }
                entry.insert("windows", Value::Array(names));
                block.push(entry);
            }
            block.fmt();
        }
        Edit::SetList {
            scope,
            deny,
            entries,
        } => {
            let table = scope_table(document, scope)?;
            let list = array_entry(table, if *deny { "deny" } else { "allow" })?;
            // Entries with time windows (inline tables) are kept; plain ones replaced.
            list.retain(|value| !value.is_str());
            for entry in entries {
                let entry = entry.trim();
                if !entry.is_empty() {
                    list.push(entry);
                }
            }
            list.fmt();
        }
        Edit::AddListEntry { scope, deny, entry } => {
            let entry = entry.trim();
            if entry.is_empty() {
                return Err(EditError::Refused("the entry is empty".to_owned()));
            }
            let table = scope_table(document, scope)?;
            let list = array_entry(table, if *deny { "deny" } else { "allow" })?;
            if !list.iter().any(|value| value.as_str() == Some(entry)) {
                list.push(entry);
                list.fmt();
            }
        }
        Edit::AddUnblock(unblock) => add_unblock(document, unblock, locked)?,
        Edit::RemoveUnblock(id) => {
            let unblocks = document
                .get_mut("unblocks")
                .and_then(Item::as_array_of_tables_mut)
                .ok_or_else(|| EditError::Refused(format!("there is no unblock {id}")))?;
            let before = unblocks.len();
            unblocks.retain(|table| table.get("id").and_then(Item::as_str) != Some(id.as_str()));
            if unblocks.len() == before {
                return Err(EditError::Refused(format!("there is no unblock {id}")));
            }
        }
        Edit::SetWindow(window) => set_window(document, window)?,
        Edit::SetGroup(group) => set_group(document, group)?,
        Edit::AddDecryptSite(host) => {
            let decrypt = document
                .entry("decrypt")
                .or_insert_with(|| Item::Table(Table::new()))
                .as_table_mut()
                .ok_or_else(|| EditError::Toml("`decrypt` is not a table".to_owned()))?;
            let sites = array_entry(decrypt, "sites")?;
            if !sites
                .iter()
                .any(|value| value.as_str() == Some(host.as_str()))
            {
                sites.push(host.as_str());
                sites.fmt();
            }
        }
        Edit::RemoveGroup(name) => {
            let removed = document
                .get_mut("groups")
                .and_then(Item::as_table_mut)
                .and_then(|groups| groups.remove(name));
            if removed.is_none() {
                return Err(EditError::Refused(format!("there is no group {name}")));
            }
        }
        Edit::SetBlockPage(page) => set_block_page(document, page)?,
    }
    Ok(())
}

/// Adds a temporary unblock (a site, a category or a focus) with a fresh id.
fn add_unblock(
    document: &mut DocumentMut,
    unblock: &NewUnblock,
    locked: &[String],
) -> Result<(), EditError> {
    let (role, group) = match &unblock.scope {
        Scope::Role(role) => (role.clone(), None),
        Scope::Group(role, group) => (role.clone(), Some(group.clone())),
        Scope::Global => {
            return Err(EditError::Refused(
                "an unblock is for a role or a group".to_owned(),
            ));
        }
    };
    if let Some(category) = &unblock.category
        && locked.iter().any(|name| name == category)
    {
        return Err(EditError::Refused(format!(
            "{category} is a locked category and cannot be unblocked"
        )));
    }
    let unblocks = document
        .entry("unblocks")
        .or_insert_with(|| Item::ArrayOfTables(ArrayOfTables::new()))
        .as_array_of_tables_mut()
        .ok_or_else(|| EditError::Toml("`unblocks` is not [[unblocks]]".to_owned()))?;
    let taken: Vec<String> = unblocks
        .iter()
        .filter_map(|t| t.get("id").and_then(Item::as_str).map(str::to_owned))
        .collect();
    let id = (1..)
        .map(|n| format!("admin-{n}"))
        .find(|id| !taken.contains(id))
        .unwrap_or_default();
    let mut table = Table::new();
    table.insert("id", toml_edit::value(id));
    if let Some(site) = &unblock.site {
        table.insert("site", toml_edit::value(site.as_str()));
    }
    if let Some(category) = &unblock.category {
        table.insert("category", toml_edit::value(category.as_str()));
    }
    if !unblock.focus.is_empty() {
        let sites: Array = unblock.focus.iter().map(String::as_str).collect();
        table.insert("focus", toml_edit::value(sites));
    }
    table.insert("role", toml_edit::value(role));
    if let Some(group) = group {
        table.insert("group", toml_edit::value(group));
    }
    if let Some(user) = &unblock.user {
        table.insert("user", toml_edit::value(user.as_str()));
    }
    table.insert("from", toml_edit::value(unblock.from.as_str()));
    table.insert("until", toml_edit::value(unblock.until.as_str()));
    table.insert("reason", toml_edit::value(unblock.reason.as_str()));
    table.insert("granted_by", toml_edit::value(unblock.granted_by.as_str()));
    unblocks.push(table);
    Ok(())
}

/// Writes `school` and `[block_page]`, keeping the file's comments.
fn set_block_page(document: &mut DocumentMut, page: &BlockPageEdit) -> Result<(), EditError> {
    document.insert("school", toml_edit::value(page.school.trim()));
    let table = document
        .entry("block_page")
        .or_insert_with(|| Item::Table(Table::new()))
        .as_table_mut()
        .ok_or_else(|| EditError::Toml("`block_page` is not a table".to_owned()))?;
    for (key, value) in [
        ("message", page.message.trim()),
        ("logo", page.logo.trim()),
        ("language", page.language.trim()),
    ] {
        match table.get_mut(key).and_then(Item::as_value_mut) {
            // Keeps the comment and spacing around the value.
            Some(existing) => {
                let decor = existing.decor().clone();
                *existing = toml_edit::Value::from(value);
                *existing.decor_mut() = decor;
            }
            None => {
                table.insert(key, toml_edit::value(value));
            }
        }
    }
    Ok(())
}

/// Writes `[groups.NAME]`, keeping the file's comments.
fn set_group(document: &mut DocumentMut, group: &GroupEdit) -> Result<(), EditError> {
    let name = group.name.trim();
    let name_ok = !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !name_ok {
        return Err(EditError::Refused(format!(
            "`{name}` cannot be a group's name: use letters, digits, `-` and `_` (at most 40)"
        )));
    }
    let groups = document
        .entry("groups")
        .or_insert_with(|| {
            let mut table = Table::new();
            table.set_implicit(true);
            Item::Table(table)
        })
        .as_table_mut()
        .ok_or_else(|| EditError::Toml("`groups` is not a table".to_owned()))?;
    let table = groups
        .entry(name)
        .or_insert_with(|| Item::Table(Table::new()))
        .as_table_mut()
        .ok_or_else(|| EditError::Toml(format!("`groups.{name}` is not a table")))?;
    table.insert("role", toml_edit::value(group.role.trim()));
    let description = group.description.trim();
    if description.is_empty() {
        table.remove("description");
    } else {
        table.insert("description", toml_edit::value(description));
    }
    for (key, values) in [
        ("addresses", &group.addresses),
        ("teachers", &group.teachers),
    ] {
        let values: Array = values
            .iter()
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .collect();
        if values.is_empty() {
            table.remove(key);
        } else {
            table.insert(key, toml_edit::value(values));
        }
    }
    Ok(())
}

fn set_window(document: &mut DocumentMut, window: &WindowEdit) -> Result<(), EditError> {
    let name_ok = !window.name.is_empty()
        && window.name.len() <= 40
        && window
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !name_ok {
        return Err(EditError::Refused(
            "a window's name uses letters, digits, `-` and `_` (at most 40)".to_owned(),
        ));
    }
    let windows = document
        .entry("windows")
        .or_insert_with(|| {
            let mut table = Table::new();
            table.set_implicit(true);
            Item::Table(table)
        })
        .as_table_mut()
        .ok_or_else(|| EditError::Toml("`windows` is not a table".to_owned()))?;
    let table = windows
        .entry(&window.name)
        .or_insert_with(|| Item::Table(Table::new()))
        .as_table_mut()
        .ok_or_else(|| EditError::Toml(format!("`windows.{}` is not a table", window.name)))?;
    let description = window.description.trim();
    if description.is_empty() {
        table.remove("description");
    } else {
        table.insert("description", toml_edit::value(description));
    }
    for (key, values) in [("days", &window.days), ("times", &window.times)] {
        let values: Array = values
            .iter()
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .collect();
        if values.is_empty() {
            table.remove(key);
        } else {
            table.insert(key, toml_edit::value(values));
        }
    }
    if window.terms_only || table.contains_key("terms_only") {
        table.insert("terms_only", toml_edit::value(window.terms_only));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const POLICY: &str = r#"timezone = "Europe/London"
default_role = "pupil"

[categories.gambling]
sources = []

[categories.illegal]
locked = true
sources = []

[roles.pupil]
# Pupils: the usual.
block = ["gambling", { category = "illegal", windows = [] }]
allow = ["bbc.co.uk", { site = "games.test", windows = [] }]

[roles.staff]

[roles.filter-admin]
"#;

    fn edited(edit: Edit) -> Result<String, EditError> {
        let mut document: DocumentMut = POLICY.parse().unwrap();
        apply_edit(&mut document, &edit, &["illegal".to_owned()])?;
        Ok(document.to_string())
    }

    #[test]
    fn the_block_page_is_set_at_the_top_and_in_its_own_section() {
        let page = |message: &str| {
            Edit::SetBlockPage(BlockPageEdit {
                school: " Ysgol \"Bryn\" ".into(),
                message: message.into(),
                logo: "logo.png".into(),
                language: "cy".into(),
            })
        };
        let text = edited(page("Ask Mrs Jones.\nThanks")).unwrap();
        let parsed: DocumentMut = text.parse().unwrap();
        assert_eq!(parsed["school"].as_str(), Some("Ysgol \"Bryn\""));
        assert_eq!(parsed["timezone"].as_str(), Some("Europe/London"), "{text}");
        let section = &parsed["block_page"];
        assert_eq!(section["message"].as_str(), Some("Ask Mrs Jones.\nThanks"));
        assert_eq!(section["logo"].as_str(), Some("logo.png"));
        assert_eq!(section["language"].as_str(), Some("cy"));
        // A second edit changes the values in place.
        let mut document: DocumentMut = text.parse().unwrap();
        apply_edit(&mut document, &page("Again"), &[]).unwrap();
        let again = document.to_string();
        assert_eq!(again.matches("[block_page]").count(), 1, "{again}");
        assert!(again.contains("message = \"Again\""), "{again}");
    }

    #[test]
    fn blocks_are_added_and_removed_keeping_comments() {
        let text = edited(Edit::SetBlocked {
            scope: Scope::Role("staff".into()),
            category: "gambling".into(),
            blocked: true,
            windows: vec![],
        })
        .unwrap();
        assert!(
            text.contains("[roles.staff]\nblock = [\"gambling\"]"),
            "{text}"
        );
        let text = edited(Edit::SetBlocked {
            scope: Scope::Role("staff".into()),
            category: "gambling".into(),
            blocked: true,
            windows: vec!["core-hours".into()],
        })
        .unwrap();
        assert!(
            text.contains("block = [{ category = \"gambling\", windows = [\"core-hours\"] }]"),
            "{text}"
        );
        let text = edited(Edit::SetBlocked {
            scope: Scope::Role("pupil".into()),
            category: "gambling".into(),
            blocked: false,
            windows: vec![],
        })
        .unwrap();
        assert!(text.contains("# Pupils: the usual."), "{text}");
        assert!(!text.contains("\"gambling\""), "{text}");
        assert!(matches!(
            edited(Edit::SetBlocked {
                scope: Scope::Role("pupil".into()),
                category: "illegal".into(),
                blocked: false,
                windows: vec![],
            }),
            Err(EditError::Refused(_))
        ));
    }

    #[test]
    fn lists_replace_plain_entries_and_keep_timed_ones() {
        let text = edited(Edit::SetList {
            scope: Scope::Role("pupil".into()),
            deny: false,
            entries: vec!["wikipedia.org".into(), " ".into()],
        })
        .unwrap();
        assert!(text.contains("wikipedia.org"), "{text}");
        assert!(!text.contains("bbc.co.uk"), "{text}");
        assert!(text.contains("games.test"), "{text}");
        let text = edited(Edit::SetList {
            scope: Scope::Global,
            deny: true,
            entries: vec!["bad.test".into()],
        })
        .unwrap();
        assert!(text.contains("deny = [\"bad.test\"]"), "{text}");
    }

    #[test]
    fn list_entries_are_added_once() {
        let edit = Edit::AddListEntry {
            scope: Scope::Role("pupil".into()),
            deny: false,
            entry: "maths.test".into(),
        };
        let mut document: DocumentMut = POLICY.parse().unwrap();
        apply_edit(&mut document, &edit, &[]).unwrap();
        apply_edit(&mut document, &edit, &[]).unwrap();
        let text = document.to_string();
        assert_eq!(text.matches("maths.test").count(), 1, "{text}");
        assert!(text.contains("bbc.co.uk"), "{text}");
    }

    #[test]
    fn unblocks_get_fresh_ids_and_can_be_removed() {
        let unblock = NewUnblock {
            site: Some("pinterest.com".into()),
            category: None,
            focus: Vec::new(),
            scope: Scope::Group("pupil".into(), "year9".into()),
            user: None,
            from: "2026-11-24 10:00".into(),
            until: "2026-11-24 10:30".into(),
            reason: "art lesson".into(),
            granted_by: "fiona".into(),
        };
        let mut document: DocumentMut = POLICY.parse().unwrap();
        let locked = ["illegal".to_owned()];
        apply_edit(&mut document, &Edit::AddUnblock(unblock.clone()), &locked).unwrap();
        apply_edit(&mut document, &Edit::AddUnblock(unblock), &locked).unwrap();
        let text = document.to_string();
        assert!(text.contains("id = \"admin-1\""), "{text}");
        assert!(text.contains("id = \"admin-2\""), "{text}");
        assert!(text.contains("group = \"year9\""), "{text}");
        apply_edit(
            &mut document,
            &Edit::RemoveUnblock("admin-1".into()),
            &locked,
        )
        .unwrap();
        let text = document.to_string();
        assert!(!text.contains("admin-1"), "{text}");
        assert!(matches!(
            apply_edit(
                &mut document,
                &Edit::RemoveUnblock("admin-1".into()),
                &locked
            ),
            Err(EditError::Refused(_))
        ));
    }

    #[test]
    fn scopes_round_trip_and_refuse_odd_names() {
        for text in ["global", "pupil", "pupil/year7"] {
            assert_eq!(Scope::parse(text).unwrap().text(), text);
        }
        for bad in ["", "a/b/c", "pupil/", "../x", "a b"] {
            assert_eq!(Scope::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn versions_follow_the_text() {
        assert_eq!(version_of("a"), version_of("a"));
        assert_ne!(version_of("a"), version_of("b"));
        assert_eq!(version_of("a").len(), 32);
    }
}
