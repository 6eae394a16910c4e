//! The compiled policy and `decide`, the function the proxy calls on every request.
//!
//! A `Snapshot` is immutable after `Policy::compile`: one list index for every
//! category and every allow/deny list, the windows with the time zone resolved, and
//! each role's and group's rules already merged (a group's scope holds its role's
//! rules plus its own). `decide` is a pure function of (snapshot, subject, target,
//! now): it queries the index once, converts `now` to school time at most once, and
//! allocates only the strings of the `Decision` it returns.
//!
//! Decision order, first match wins:
//! 1. locked categories (`locked:<category>`);
//! 2. allow-lists: global, role, group (`allow:global`, `allow:role:<r>`,
//!    `allow:group:<g>`);
//! 3. active temporary unblocks of a site (`unblock:<id>`); an unblock of a
//!    category lifts that category's blocks in step 4 and, if nothing else in step 4
//!    blocks, allows with its own id;
//! 4. deny-lists (`deny:global`, `deny:role:<r>`, `deny:group:<g>`), then blocked
//!    categories (`category:<role or group>:<category>`), each in its windows, then
//!    a host written as an IP address where the role or group has `block_ip_hosts`
//!    (`ip-address-host:<role or group>`; a category unblock does not lift it);
//! 5. file rules by path extension (`file:<role or group>:<rule>`); by response
//!    headers in `decide_response`;
//! 6. allow (`default`).
//!
//! The snapshot also answers whether an HTTPS host is decrypted (`decrypt`, applying
//! the rules `decrypt.rs` compiles), whether a named window is open, and hands out the
//! `[alerts]` settings (`alerts.rs`) for the safeguarding engine.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::alerts::AlertSettings;
use crate::decrypt::{DecryptDecision, DecryptRules, SniMismatch};
use crate::file_rule::FileRule;
use crate::lists::index::{Index, ListId, ListMatches};
use crate::lists::normalise::RequestTarget;
use crate::window::{Calendar, LocalNow, Window, WindowId};

/// A browsing role. Admin permissions are separate and not part of the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Pupils (the strictest role, and the shipped default for unidentified clients).
    Pupil,
    /// Teaching and support staff.
    Staff,
    /// Staff with the filter-management responsibility.
    FilterAdmin,
}

impl Role {
    /// Every role, in index order.
    pub const ALL: [Role; 3] = [Role::Pupil, Role::Staff, Role::FilterAdmin];

    /// The name used in the policy file and in rule ids.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Pupil => "pupil",
            Role::Staff => "staff",
            Role::FilterAdmin => "filter-admin",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of `pupil`, `staff`, `filter-admin`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role `{0}`; roles are pupil, staff, filter-admin")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_string()))
    }
}

/// Who is browsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subject<'a> {
    /// The person's role.
    pub role: Role,
    /// The group within the role (e.g. `year6`); a group the role does not have is
    /// ignored and the role's rules apply.
    pub group: Option<&'a str>,
    /// The user name, for per-user unblocks and logging.
    pub user: Option<&'a str>,
}

/// Allow or block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let the request through.
    Allow,
    /// Refuse it with the block page.
    Block,
}

/// The outcome of a decision, with its explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allow or block.
    pub verdict: Verdict,
    /// Every category the target is in (sorted by name), for logging and reports.
    pub categories: Vec<String>,
    /// Stable id of the rule that decided, e.g. `category:pupil:gambling`.
    pub rule: String,
    /// One line for people, shown on the block page and by `safegate check`.
    pub reason: String,
}

impl Decision {
    /// True when the verdict is `Block`.
    pub fn is_blocked(&self) -> bool {
        self.verdict == Verdict::Block
    }
}

/// YouTube Restricted Mode level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum YouTubeMode {
    /// No restriction.
    Off,
    /// Moderate Restricted Mode.
    Moderate,
    /// Strict Restricted Mode.
    #[default]
    Strict,
}

/// Search restrictions to enforce for one subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SafeSearch {
    /// Google, Bing and DuckDuckGo SafeSearch.
    pub safesearch: bool,
    /// YouTube Restricted Mode.
    pub youtube: YouTubeMode,
}

impl Default for SafeSearch {
    /// The defaults for a role that says nothing: SafeSearch on, YouTube strict.
    fn default() -> Self {
        SafeSearch {
            safesearch: true,
            youtube: YouTubeMode::Strict,
        }
    }
}

/// What loading a policy read and built.
#[derive(Debug, Clone, Default)]
pub struct LoadStats {
    /// Per category, in name order.
    pub categories: Vec<CategoryStats>,
    /// Distinct lists in the index (categories, allow/deny lists, unblocked sites).
    pub lists: usize,
    /// Entries in the compiled index.
    pub index_entries: usize,
    /// Temporary unblocks in the file (active, future or expired).
    pub unblocks: usize,
    /// Time to read the lists and build the snapshot.
    pub compile_time: Duration,
    /// Every list file the policy names (category sources, phrase lists), so a
    /// reloader can watch them as well as the policy file.
    pub files: Vec<std::path::PathBuf>,
    /// Entries read from each category source file, the baseline that the next
    /// reload's shrink check ([`crate::ListChecks`]) compares against.
    pub list_files: Vec<ListFileStats>,
    /// Optional category sources (`optional = true`) that were missing and skipped;
    /// not in `files`, so nothing tries to read or watch them.
    pub optional_missing: Vec<std::path::PathBuf>,
}

/// Entries read from one category source (a list file or UT1 folder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListFileStats {
    /// Category name.
    pub category: String,
    /// The file or folder, as resolved against the policy file's folder.
    pub path: std::path::PathBuf,
    /// Entries taken (domains, URLs, expressions).
    pub entries: usize,
}

/// Entries read for one category.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CategoryStats {
    /// Category name.
    pub name: String,
    /// Locked (illegal content) category.
    pub locked: bool,
    /// A site group (`[site_groups.NAME]`): steers decryption or reports, never
    /// blocked.
    pub site_group: bool,
    /// Domain entries (files and inline).
    pub domains: usize,
    /// URL (host/path) entries.
    pub urls: usize,
    /// Expression entries.
    pub expressions: usize,
    /// Lines of the list files that were not understood and skipped.
    pub skipped: usize,
    /// Optional sources of the category that were missing and skipped.
    pub optional_missing: usize,
}

/// A category in the snapshot.
#[derive(Debug)]
pub(crate) struct Category {
    pub name: String,
    pub list: ListId,
    pub locked: bool,
    /// Background traffic (`background = true`): folded into one report line.
    pub background: bool,
}

/// An allow-list of a scope.
#[derive(Debug, Clone)]
pub(crate) struct AllowRule {
    pub list: ListId,
    pub rule: String,
    pub owner: String,
}

/// A deny-list (one per scope and set of windows).
#[derive(Debug, Clone)]
pub(crate) struct DenyRule {
    pub list: ListId,
    pub windows: Vec<WindowId>,
    pub rule: String,
    pub owner: String,
}

/// A blocked category of a scope.
#[derive(Debug, Clone)]
pub(crate) struct BlockRule {
    pub category: u16,
    pub windows: Vec<WindowId>,
    pub rule: String,
    pub owner: String,
}

/// The merged rules of one role or one group.
#[derive(Debug, Clone)]
pub(crate) struct Scope {
    pub allow: Vec<AllowRule>,
    pub deny: Vec<DenyRule>,
    pub blocks: Vec<BlockRule>,
    pub files: Vec<FileRule>,
    pub safesearch: SafeSearch,
    /// Set when sites reached by IP address are blocked (`block_ip_hosts`).
    pub ip_hosts: Option<IpHostRule>,
}

/// The block of hosts written as IP addresses, for one role or group.
#[derive(Debug, Clone)]
pub(crate) struct IpHostRule {
    /// `ip-address-host:<role or group>`.
    pub rule: String,
    /// For people, on the block page.
    pub reason: String,
}

/// A role's scope and its groups' scopes.
#[derive(Debug, Clone)]
pub(crate) struct RoleRules {
    pub scope: Scope,
    pub groups: Vec<(String, Scope)>,
}

/// What an unblock lifts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum UnblockTarget {
    Site(ListId),
    Category(u16),
    /// Focus: only the sites of this list are open (locked categories stay blocked).
    Focus(ListId),
}

/// A temporary unblock.
#[derive(Debug, Clone)]
pub(crate) struct Unblock {
    pub rule: String,
    pub target: UnblockTarget,
    pub role: Option<Role>,
    pub group: Option<String>,
    pub user: Option<String>,
    pub from: Option<Timestamp>,
    pub until: Timestamp,
    pub until_text: String,
    pub reason: Option<String>,
}

impl Unblock {
    fn applies(&self, subject: &Subject<'_>, now: Timestamp) -> bool {
        self.from.is_none_or(|from| from <= now)
            && now < self.until
            && self.role.is_none_or(|role| role == subject.role)
            && self
                .group
                .as_deref()
                .is_none_or(|group| subject.group == Some(group))
            && self.user.as_deref().is_none_or(|user| {
                subject
                    .user
                    .is_some_and(|subject| subject.eq_ignore_ascii_case(user))
            })
    }

    fn describe(&self, what: &str) -> String {
        match &self.reason {
            Some(reason) => format!(
                "{what} is temporarily unblocked until {} ({reason})",
                self.until_text
            ),
            None => format!("{what} is temporarily unblocked until {}", self.until_text),
        }
    }
}

/// A group of the compiled policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    /// Its name (`year6`).
    pub name: String,
    /// The role its members browse as.
    pub role: Role,
    /// What it is, for people; empty when not given.
    pub description: String,
    /// Address ranges of its computers.
    pub addresses: Vec<ipnet::IpNet>,
    /// Staff accounts that teach it.
    pub teachers: Vec<String>,
}

/// Lesson lengths for teachers, compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Teaching {
    /// Default length of a teacher's change, minutes.
    pub lesson_minutes: u32,
    /// Longest length, minutes.
    pub max_minutes: u32,
}

/// An immutable, compiled policy. Cheap to share behind an `Arc`; swap a new one in
/// on reload.
pub struct Snapshot {
    pub(crate) index: Index,
    /// Groups of people, in name order.
    pub(crate) groups: Vec<GroupInfo>,
    /// How long teachers' changes may last.
    pub(crate) teaching: Teaching,
    /// The school's name; empty when the policy gives none.
    pub(crate) school: String,
    /// The compiled `[block_page]`.
    pub(crate) block_page: crate::block_page::BlockPageSettings,
    pub(crate) tz: TimeZone,
    pub(crate) default_role: Role,
    pub(crate) categories: Vec<Category>,
    /// Category index by list id, for naming the categories of a target.
    pub(crate) category_of_list: Vec<Option<u16>>,
    pub(crate) locked: Vec<u16>,
    pub(crate) global_allow: Option<ListId>,
    pub(crate) global_deny: Vec<DenyRule>,
    pub(crate) roles: Vec<RoleRules>,
    pub(crate) windows: Vec<Window>,
    pub(crate) calendar: Calendar,
    pub(crate) unblocks: Vec<Unblock>,
    /// The compiled `[decrypt]` section (see `decrypt.rs`).
    pub(crate) decrypt: DecryptRules,
    /// The compiled `[alerts]` section (see `alerts.rs`).
    pub(crate) alerts: Arc<AlertSettings>,
    /// The compiled `[content]` section (see `content.rs`).
    pub(crate) content: crate::content::ContentRules,
    pub(crate) stats: LoadStats,
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("default_role", &self.default_role)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Snapshot {
    /// The groups of people (`[groups]` and the groups under roles), in name order.
    pub fn groups(&self) -> &[GroupInfo] {
        &self.groups
    }

    /// The group called `name`.
    pub fn group(&self, name: &str) -> Option<&GroupInfo> {
        self.groups.iter().find(|group| group.name == name)
    }

    /// The group whose address ranges hold `address` (the first in name order).
    pub fn group_for_address(&self, address: std::net::IpAddr) -> Option<&GroupInfo> {
        self.groups
            .iter()
            .find(|group| group.addresses.iter().any(|net| net.contains(&address)))
    }

    /// How long teachers' changes may last.
    pub fn teaching(&self) -> Teaching {
        self.teaching
    }

    /// The role for clients that are not identified yet.
    pub fn default_role(&self) -> Role {
        self.default_role
    }

    /// The school's name (the policy's `school`), if it gives one.
    pub fn school_name(&self) -> Option<&str> {
        Some(self.school.as_str()).filter(|name| !name.is_empty())
    }

    /// What the school puts on the block page (message, logo, default language).
    pub fn block_page(&self) -> &crate::block_page::BlockPageSettings {
        &self.block_page
    }

    /// The school's time zone.
    pub fn timezone(&self) -> &TimeZone {
        &self.tz
    }

    /// What loading read and built.
    pub fn stats(&self) -> &LoadStats {
        &self.stats
    }

    /// Category names, in name order.
    pub fn category_names(&self) -> impl Iterator<Item = &str> {
        self.categories.iter().map(|c| c.name.as_str())
    }

    /// The categories marked `background = true` (browser, system and app traffic
    /// that nobody chose to visit), in name order.
    pub fn background_categories(&self) -> impl Iterator<Item = &str> {
        self.categories
            .iter()
            .filter(|c| c.background)
            .map(|c| c.name.as_str())
    }

    /// Whether `host` is in a background category under this policy (the weekly
    /// report asks for every host of the week, so a list edit also applies to records
    /// made before it). One index lookup; false for a host that does not parse.
    pub fn is_background_host(&self, host: &str) -> bool {
        if !self.categories.iter().any(|c| c.background) {
            return false;
        }
        let Ok(target) = RequestTarget::parse_url(host) else {
            return false;
        };
        self.index.matches_host(&target.host).iter().any(|id| {
            self.category_of_list
                .get(usize::from(id))
                .copied()
                .flatten()
                .is_some_and(|c| self.categories[usize::from(c)].background)
        })
    }

    /// SafeSearch and YouTube restrictions for `subject` (the group's setting if it
    /// has one, else the role's, else on/strict).
    pub fn safesearch(&self, subject: &Subject<'_>) -> SafeSearch {
        self.scope(subject).safesearch
    }

    /// The `[alerts]` settings (shared: compare with `Arc::ptr_eq` to see a reload).
    pub fn alerts(&self) -> &Arc<AlertSettings> {
        &self.alerts
    }

    /// Whether the window named `name` is open at `at`; `None` when there is no such
    /// window.
    pub fn window_open(&self, name: &str, at: Timestamp) -> Option<bool> {
        let window = self.windows.iter().find(|w| w.name == name)?;
        Some(window.contains(&mut LocalNow::new(at, &self.tz), &self.calendar))
    }

    /// What to do when the TLS server name differs from the CONNECT host.
    pub fn sni_mismatch(&self) -> SniMismatch {
        self.decrypt.sni_mismatch
    }

    /// Request phase: decides from the host and path alone (steps 1 to 6).
    pub fn decide(
        &self,
        subject: &Subject<'_>,
        target: &RequestTarget,
        now: Timestamp,
    ) -> Decision {
        let scope = self.scope(subject);
        let matches = self.index.matches(target);
        let mut clock = LocalNow::new(now, &self.tz);
        let ip_host = target.host.is_ip();
        if let Some(decision) =
            self.decide_lists(scope, subject, &matches, ip_host, now, &mut clock)
        {
            return decision;
        }
        if let Some(path) = target.path.as_deref() {
            for rule in &scope.files {
                if let Some(ext) = rule.match_path(path)
                    && self.open(&rule.windows, &mut clock)
                {
                    return self.decision(
                        Verdict::Block,
                        &matches,
                        &rule.rule,
                        format!(".{ext} files are blocked for {}", rule.owner),
                    );
                }
            }
        }
        self.decision(
            Verdict::Allow,
            &matches,
            "default",
            "no rule blocks this site".to_string(),
        )
    }

    /// Response phase: applies the file rules to the response's `Content-Type` and
    /// `Content-Disposition`. `None` means "let the response through"; a target that
    /// an allow-list or an unblock lets through is never blocked here.
    pub fn decide_response(
        &self,
        subject: &Subject<'_>,
        target: &RequestTarget,
        content_type: Option<&str>,
        content_disposition: Option<&str>,
        now: Timestamp,
    ) -> Option<Decision> {
        let scope = self.scope(subject);
        let mut clock = LocalNow::new(now, &self.tz);
        // Cheap header checks first: most responses match no file rule, and then the
        // index is not consulted at all.
        let (rule, what) = scope.files.iter().find_map(|rule| {
            let owner = &rule.owner;
            let what = if let Some(t) = content_type.and_then(|ct| rule.match_content_type(ct)) {
                format!("{t} downloads are blocked for {owner}")
            } else {
                let ext = content_disposition.and_then(|cd| rule.match_disposition(cd))?;
                format!(".{ext} files are blocked for {owner}")
            };
            self.open(&rule.windows, &mut clock).then_some((rule, what))
        })?;
        let matches = self.index.matches(target);
        let ip_host = target.host.is_ip();
        match self.decide_lists(scope, subject, &matches, ip_host, now, &mut clock) {
            Some(decision) if decision.verdict == Verdict::Allow => None,
            Some(decision) => Some(decision),
            None => Some(self.decision(Verdict::Block, &matches, &rule.rule, what)),
        }
    }

    /// Content analysis for a response the request `decision` let through: the
    /// settings to scan it with, or `None` when this person's pages are not scanned
    /// (no limit for the role, no lists, an exempt site, an allow-list or unblock).
    pub fn content_check(
        &self,
        subject: &Subject<'_>,
        target: &RequestTarget,
        decision: &Decision,
    ) -> Option<crate::content::ContentCheck> {
        let set = self.content.set.as_ref()?;
        // A group counts only for members of its role (as for every other rule).
        let group = subject
            .group
            .filter(|name| self.group(name).is_some_and(|g| g.role == subject.role));
        let role = self.content.settings(subject.role.index(), group);
        let limit = role.limit?;
        if decision.rule.starts_with("allow:") || decision.rule.starts_with("unblock:") {
            return None;
        }
        if let Some(exempt) = role.exempt
            && self.index.matches(target).contains(exempt)
        {
            return None;
        }
        Some(crate::content::ContentCheck {
            set: Arc::clone(set),
            limit,
            categories: role.categories.clone(),
            max_hold: self.content.max_hold,
            limits: self.content.limits,
            role: subject.role,
        })
    }

    /// Whether banned searches are blocked for `role` (checked before the search terms
    /// are read from the address).
    pub fn banned_searches_apply(&self, role: Role) -> bool {
        self.content.banned.is_some() && self.content.role(role.index()).banned_searches
    }

    /// A search whose terms contain a banned phrase for this person: the phrase and
    /// the blocking decision (rule `banned-search:ROLE`).
    pub fn banned_search(&self, subject: &Subject<'_>, terms: &str) -> Option<(String, Decision)> {
        let role = subject.role;
        let phrase = self.content.banned_phrase(role.index(), terms)?.to_owned();
        let decision = Decision {
            verdict: Verdict::Block,
            categories: vec!["banned search".to_owned()],
            rule: format!("banned-search:{}", role.as_str()),
            reason: format!(
                "searches for \"{phrase}\" are blocked for {}",
                role_people(role)
            ),
        };
        Some((phrase, decision))
    }

    /// A focus in force for `subject` (a teacher keeping a class on a few sites):
    /// a site off its list is blocked, one on it allowed (unless it is in a locked
    /// category: `None`, and step 1 blocks it). `None` without a focus.
    fn focus(
        &self,
        subject: &Subject<'_>,
        matches: &ListMatches,
        now: Timestamp,
    ) -> Option<Decision> {
        let (focus, list) = self.unblocks.iter().find_map(|u| match u.target {
            UnblockTarget::Focus(list) if u.applies(subject, now) => Some((u, list)),
            _ => None,
        })?;
        if !matches.contains(list) {
            let why = match &focus.reason {
                Some(reason) => format!(
                    "only the lesson's sites are open until {} ({reason})",
                    focus.until_text
                ),
                None => format!(
                    "only the lesson's sites are open until {}",
                    focus.until_text
                ),
            };
            return Some(self.decision(Verdict::Block, matches, &focus.rule, why));
        }
        let locked = self
            .locked
            .iter()
            .any(|&c| matches.contains(self.categories[usize::from(c)].list));
        (!locked).then(|| {
            self.decision(
                Verdict::Allow,
                matches,
                &focus.rule,
                format!("one of the lesson's sites until {}", focus.until_text),
            )
        })
    }

    /// Steps 1 to 4; `None` when none of them decides. `ip_host`: the host is an IP
    /// address.
    fn decide_lists(
        &self,
        scope: &Scope,
        subject: &Subject<'_>,
        matches: &ListMatches,
        ip_host: bool,
        now: Timestamp,
        clock: &mut LocalNow<'_>,
    ) -> Option<Decision> {
        if let Some(decision) = self.focus(subject, matches, now) {
            return Some(decision);
        }
        if matches.is_empty() {
            return self.ip_host_block(scope, matches, ip_host);
        }
        // 1. Locked categories.
        for &category in &self.locked {
            let category = &self.categories[usize::from(category)];
            if matches.contains(category.list) {
                return Some(self.decision(
                    Verdict::Block,
                    matches,
                    &format!("locked:{}", category.name),
                    format!(
                        "in the {} category, which is blocked for everyone",
                        category.name
                    ),
                ));
            }
        }
        // 2. Allow-lists.
        if let Some(list) = self.global_allow
            && matches.contains(list)
        {
            return Some(self.decision(
                Verdict::Allow,
                matches,
                "allow:global",
                "on the allow-list for everyone".to_string(),
            ));
        }
        for allow in &scope.allow {
            if matches.contains(allow.list) {
                return Some(self.decision(
                    Verdict::Allow,
                    matches,
                    &allow.rule,
                    format!("on the allow-list of {}", allow.owner),
                ));
            }
        }
        // 3. Temporary unblocks of a site.
        for unblock in &self.unblocks {
            if let UnblockTarget::Site(list) = unblock.target
                && matches.contains(list)
                && unblock.applies(subject, now)
            {
                return Some(self.decision(
                    Verdict::Allow,
                    matches,
                    &unblock.rule,
                    unblock.describe("this site"),
                ));
            }
        }
        // 4. Deny-lists, then blocked categories (minus unblocked categories).
        for deny in self.global_deny.iter().chain(&scope.deny) {
            if matches.contains(deny.list) && self.open(&deny.windows, clock) {
                return Some(self.decision(
                    Verdict::Block,
                    matches,
                    &deny.rule,
                    format!(
                        "on the deny-list of {}{}",
                        deny.owner,
                        self.during(&deny.windows, clock)
                    ),
                ));
            }
        }
        let mut lifted_by: Option<(&Unblock, u16)> = None;
        for block in &scope.blocks {
            let category = &self.categories[usize::from(block.category)];
            if !matches.contains(category.list) || !self.open(&block.windows, clock) {
                continue;
            }
            if let Some(unblock) = self.unblocks.iter().find(|u| {
                matches!(u.target, UnblockTarget::Category(c) if c == block.category)
                    && u.applies(subject, now)
            }) {
                lifted_by.get_or_insert((unblock, block.category));
                continue;
            }
            return Some(self.decision(
                Verdict::Block,
                matches,
                &block.rule,
                format!(
                    "in the {} category, which is blocked for {}{}",
                    category.name,
                    block.owner,
                    self.during(&block.windows, clock)
                ),
            ));
        }
        if let Some(decision) = self.ip_host_block(scope, matches, ip_host) {
            return Some(decision);
        }
        lifted_by.map(|(unblock, category)| {
            let name = &self.categories[usize::from(category)].name;
            self.decision(
                Verdict::Allow,
                matches,
                &unblock.rule,
                unblock.describe(&format!("the {name} category")),
            )
        })
    }

    /// The end of step 4: a host written as an IP address, where the scope blocks them.
    fn ip_host_block(
        &self,
        scope: &Scope,
        matches: &ListMatches,
        ip_host: bool,
    ) -> Option<Decision> {
        let rule = scope.ip_hosts.as_ref().filter(|_| ip_host)?;
        Some(self.decision(Verdict::Block, matches, &rule.rule, rule.reason.clone()))
    }

    /// Whether an HTTPS connection to `target`'s host is decrypted (the path, if
    /// any, is ignored). `never` entries win, then `decrypt` sites and categories,
    /// then hosts with path rules; otherwise the connection is tunnelled.
    pub fn decrypt(&self, target: &RequestTarget) -> DecryptDecision {
        let rules = &self.decrypt;
        let host_only = RequestTarget::host_only(target.host.clone());
        let matches = self.index.matches(&host_only);
        let answer = |decrypt: bool, rule: String, reason: String| DecryptDecision {
            decrypt,
            rule,
            reason,
        };
        if let Some(never) = self.never_decrypted(&matches) {
            return never;
        }
        if rules.sites.is_some_and(|list| matches.contains(list)) {
            return answer(
                true,
                "decrypt:site".into(),
                "on the decrypt list: the full address is filtered and logged".into(),
            );
        }
        for &category in &rules.categories {
            let category = &self.categories[usize::from(category)];
            if matches.contains(category.list) {
                return answer(
                    true,
                    format!("decrypt:category:{}", category.name),
                    format!(
                        "in the category `{}`, which is decrypted: the full address is filtered and logged",
                        category.name
                    ),
                );
            }
        }
        if rules.path_hosts.is_some_and(|list| matches.contains(list)) {
            return answer(
                true,
                "decrypt:path-rules".into(),
                "a rule names a path on this site, which needs the full address".into(),
            );
        }
        answer(
            false,
            "tunnel".into(),
            "not listed for decryption: filtered by name and tunnelled".into(),
        )
    }

    /// Whether a blocked HTTPS connection to `target`'s host is answered with the block
    /// page over TLS (with a certificate from the school CA, when there is one):
    /// `decrypt.block_pages` is on and the host is not on a never-decrypt list, whose
    /// sites are never intercepted, even to block them.
    pub fn block_page_over_tls(&self, target: &RequestTarget) -> bool {
        if !self.decrypt.block_pages {
            return false;
        }
        let host_only = RequestTarget::host_only(target.host.clone());
        self.never_decrypted(&self.index.matches(&host_only))
            .is_none()
    }

    /// The never-decrypt rule a host's list matches fall under, if any.
    fn never_decrypted(&self, matches: &ListMatches) -> Option<DecryptDecision> {
        let rules = &self.decrypt;
        if rules.never_sites.is_some_and(|list| matches.contains(list)) {
            return Some(DecryptDecision {
                decrypt: false,
                rule: "never-decrypt:site".into(),
                reason: "on the never-decrypt list: tunnelled untouched".into(),
            });
        }
        rules.never_categories.iter().find_map(|&category| {
            let category = &self.categories[usize::from(category)];
            matches.contains(category.list).then(|| DecryptDecision {
                decrypt: false,
                rule: format!("never-decrypt:category:{}", category.name),
                reason: format!(
                    "in the category `{}`, which is never decrypted: tunnelled untouched",
                    category.name
                ),
            })
        })
    }

    fn scope(&self, subject: &Subject<'_>) -> &Scope {
        let role = &self.roles[subject.role.index()];
        subject
            .group
            .and_then(|group| role.groups.iter().find(|(name, _)| name == group))
            .map_or(&role.scope, |(_, scope)| scope)
    }

    /// True when `windows` is empty (always) or one of them is open.
    fn open(&self, windows: &[WindowId], clock: &mut LocalNow<'_>) -> bool {
        windows.is_empty()
            || windows
                .iter()
                .any(|&w| self.windows[usize::from(w)].contains(clock, &self.calendar))
    }

    /// ` during <window>` for the first open window, or nothing for "always".
    fn during(&self, windows: &[WindowId], clock: &mut LocalNow<'_>) -> String {
        windows
            .iter()
            .map(|&w| &self.windows[usize::from(w)])
            .find(|w| w.contains(clock, &self.calendar))
            .map(|w| format!(" during {}", w.name))
            .unwrap_or_default()
    }

    fn decision(
        &self,
        verdict: Verdict,
        matches: &ListMatches,
        rule: &str,
        reason: String,
    ) -> Decision {
        let mut categories: Vec<String> = matches
            .iter()
            .filter_map(|id| {
                self.category_of_list
                    .get(usize::from(id))
                    .copied()
                    .flatten()
            })
            .map(|c| self.categories[usize::from(c)].name.clone())
            .collect();
        categories.sort_unstable();
        Decision {
            verdict,
            categories,
            rule: rule.to_string(),
            reason,
        }
    }
}

impl crate::content::ContentCheck {
    /// The blocking decision for a finding over the limit: category "... by content",
    /// rule `content:ROLE`, and the score in the reason (never the phrases).
    pub fn decision(&self, finding: &safegate_content::Finding) -> Decision {
        let top = finding
            .categories
            .first()
            .map_or("content", |(name, _)| name.as_str());
        Decision {
            verdict: Verdict::Block,
            categories: vec![format!("{top} by content")],
            rule: format!("content:{}", self.role.as_str()),
            reason: format!(
                "the words on the page scored {} for {top}, over the limit of {} for {}",
                finding.score,
                self.limit,
                role_people(self.role)
            ),
        }
    }
}

/// The people of a role in plain words ("pupils").
fn role_people(role: Role) -> &'static str {
    match role {
        Role::Pupil => "pupils",
        Role::Staff => "staff",
        Role::FilterAdmin => "filter admins",
    }
}
