//! The filter admins' pages (`rules` permission): categories blocked per role and
//! group (locked categories shown as locked), allow and deny lists, time windows,
//! temporary unblocks for a lesson, and "test a URL" with the policy's own
//! explanation. Changes go
//! through [`crate::ui::policy_edit`]: checked, audited, written atomically, then taken
//! live by the service's reload path.

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::Json;
use axum::extract::{Extension, Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use jiff::Timestamp;
use maud::{Markup, html};
use safegate_policy::{RequestTarget, Role, Snapshot, Subject};
use serde::Deserialize;
use tokio::sync::Notify;
use toml_edit::{DocumentMut, Item, Value};

use crate::ui::choices::{Choices, Retry, role_options};
use crate::ui::pages::{layout, url_encode};
use crate::ui::policy_edit::{
    Author, BlockPageEdit, Edit, EditError, NewUnblock, PolicyFile, Scope, WindowEdit,
};
use crate::ui::{Session, WebState, refusal};
use crate::ui::{confirm, site_words};

/// What the rules pages need from the service.
pub struct PolicyAccess {
    /// The policy file.
    pub file: PolicyFile,
    /// The live policy (for the categories, locked flags and "test a URL").
    pub live: Arc<ArcSwap<Snapshot>>,
    /// Asks the service to reload the policy now (the file watcher would too).
    pub reload: Arc<Notify>,
}

fn no_policy(api: bool) -> Response {
    refusal(
        api,
        StatusCode::SERVICE_UNAVAILABLE,
        "the policy cannot be edited here",
    )
}

/// A scope's rules as written in the file.
struct ScopeView {
    scope: Scope,
    /// Category → `None` (not blocked), `Some("")` (always), `Some("windows: ...")`.
    blocks: Vec<(String, Option<String>)>,
    allow: Vec<String>,
    deny: Vec<String>,
}

fn plain_strings(table: Option<&toml_edit::Table>, key: &str) -> Vec<String> {
    table
        .and_then(|t| t.get(key))
        .and_then(Item::as_array)
        .map(|array| {
            array
                .iter()
                .map(|value| match value {
                    Value::String(s) => s.value().clone(),
                    other => other.to_string().trim().to_owned(),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn scope_view(
    scope: Scope,
    table: Option<&toml_edit::Table>,
    categories: &[(String, bool)],
) -> ScopeView {
    let block = table.and_then(|t| t.get("block")).and_then(Item::as_array);
    let blocks = categories
        .iter()
        .map(|(name, _)| {
            let state = block.and_then(|array| {
                array.iter().find_map(|value| match value {
                    Value::String(s) if s.value() == name => Some(String::new()),
                    Value::InlineTable(t)
                        if t.get("category").and_then(Value::as_str) == Some(name) =>
                    {
                        Some(format!(
                            "in {}",
                            t.get("windows")
                                .and_then(Value::as_array)
                                .map(|names| names
                                    .iter()
                                    .filter_map(Value::as_str)
                                    .collect::<Vec<_>>()
                                    .join(", "))
                                .unwrap_or_default()
                        ))
                    }
                    _ => None,
                })
            });
            (name.clone(), state)
        })
        .collect();
    ScopeView {
        scope,
        blocks,
        allow: plain_strings(table, "allow"),
        deny: plain_strings(table, "deny"),
    }
}

/// Every scope of the document: global, each role, each role's groups.
fn scopes(document: &DocumentMut, categories: &[(String, bool)]) -> Vec<ScopeView> {
    let mut views = vec![scope_view(
        Scope::Global,
        document.get("global").and_then(Item::as_table),
        categories,
    )];
    if let Some(roles) = document.get("roles").and_then(Item::as_table) {
        for (role, item) in roles.iter() {
            let table = item.as_table();
            views.push(scope_view(Scope::Role(role.to_owned()), table, categories));
            if let Some(groups) = table.and_then(|t| t.get("groups")).and_then(Item::as_table) {
                for (group, item) in groups.iter() {
                    views.push(scope_view(
                        Scope::Group(role.to_owned(), group.to_owned()),
                        item.as_table(),
                        categories,
                    ));
                }
            }
        }
    }
    // Groups defined in [groups] without rules of their own yet: empty lists.
    if let Some(groups) = document.get("groups").and_then(Item::as_table) {
        for (group, item) in groups.iter() {
            let Some(role) = item.get("role").and_then(Item::as_str) else {
                continue;
            };
            let scope = Scope::Group(role.to_owned(), group.to_owned());
            if !views.iter().any(|view| view.scope == scope) {
                views.push(scope_view(scope, None, categories));
            }
        }
    }
    views
}

/// `?done=` / `?error=` after a change, and the test-a-URL fields.
#[derive(Debug, Default, Deserialize)]
pub struct RulesQuery {
    done: Option<String>,
    error: Option<String>,
    url: Option<String>,
    role: Option<String>,
    group: Option<String>,
}

/// `GET /rules`: the test-a-URL form, then the categories, the allow and deny lists,
/// the time windows and the temporary unblocks of every scope, each section with the
/// forms that change it.
pub async fn rules_page(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
    Query(query): Query<RulesQuery>,
) -> Response {
    render_rules(&state, &session, &query, None)
}

/// The rules page; with `retry`, a refused form shown again as it was typed, with
/// what is wrong beside the field (status 422).
pub(crate) fn render_rules(
    state: &WebState,
    session: &Session,
    query: &RulesQuery,
    retry: Option<&Retry>,
) -> Response {
    let Some(policy) = state.policy.as_ref() else {
        return no_policy(false);
    };
    let (document, version) = match read_document(&policy.file) {
        Ok(read) => read,
        Err(problem) => return refusal(false, StatusCode::INTERNAL_SERVER_ERROR, &problem),
    };
    let snapshot = policy.live.load_full();
    let choices = Choices::of(&snapshot);
    let categories: Vec<(String, bool)> = snapshot
        .stats()
        .categories
        .iter()
        .filter(|c| !c.site_group)
        .map(|c| (c.name.clone(), c.locked))
        .collect();
    let views = scopes(&document, &categories);
    let window_views = window_views(&document);
    let windows: Vec<String> = window_views.iter().map(|w| w.name.clone()).collect();
    let tested = query.url.as_deref().filter(|u| !u.is_empty()).map(|url| {
        test_url(
            &snapshot,
            url,
            query.role.as_deref(),
            query.group.as_deref(),
        )
    });
    let tokens = FormTokens {
        csrf: &session.csrf,
        version: &version,
    };
    let page = layout(
        "Filtering rules",
        Some(session),
        html! {
            @if let Some(retry) = retry {
                p.bad role="alert" { "Not saved: " (retry.problem) ". What you typed is still in the form below." }
            }
            (test_section(query, tested.as_ref(), &choices))
            p { a href="/rules/groups" { "Groups of people" } " · " a href="/rules/reviews" { "Review requests" } }
            (categories_section(&views, &categories, &windows, &tokens))
            (site_groups_section(&document))
            (lists_section(&views, &tokens, retry))
            (windows_section(&window_views, &tokens, retry))
            (unblocks_section(&unblock_entries(&document), &tokens, &choices, retry))
            (block_page_section(&document, &tokens))
        },
    );
    let status = if retry.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    (status, page).into_response()
}

/// The site groups: lists that steer decryption or exist for reports, shown for
/// reading; nothing here can block them.
fn site_groups_section(document: &DocumentMut) -> Markup {
    let Some(groups) = document.get("site_groups").and_then(Item::as_table) else {
        return html! {};
    };
    html! {
        h2 { "Site groups" }
        p { "Lists that decide which sites are decrypted, or that the reports use. They never block anything and cannot be blocked; to block sites, use a category or a deny list." }
        table {
            tr { th { "Site group" } th { "What it is for" } }
            @for (name, item) in groups.iter() {
                tr {
                    td { (name) }
                    td { (item.as_table().and_then(|t| t.get("description")).and_then(Item::as_str).unwrap_or("")) }
                }
            }
        }
    }
}

/// The policy file, parsed, and its version; what went wrong when it cannot be read.
fn read_document(file: &PolicyFile) -> Result<(DocumentMut, String), String> {
    let (text, version) = file.read().map_err(|err| err.to_string())?;
    let document: DocumentMut = text
        .parse()
        .map_err(|err| EditError::Toml(format!("{err}")).to_string())?;
    Ok((document, version))
}

/// The hidden fields every form of the page carries: the session's CSRF token and the
/// version of the policy file the form was made from.
struct FormTokens<'a> {
    csrf: &'a str,
    version: &'a str,
}

impl maud::Render for FormTokens<'_> {
    fn render(&self) -> Markup {
        html! {
            input type="hidden" name="csrf" value=(self.csrf);
            input type="hidden" name="version" value=(self.version);
        }
    }
}

/// The outcome of the last change, and "Test a URL" with its answer.
fn test_section(query: &RulesQuery, tested: Option<&Tested>, choices: &Choices) -> Markup {
    html! {
        @if let Some(done) = &query.done { p.ok { "Saved: " (done) ". The policy reloads in a moment." } }
        @if let Some(error) = &query.error { p.bad { (error) } }
        h2 { "Test a URL" }
        form method="get" action="/rules" {
            label { "Address " input name="url" size="50" value=(query.url.as_deref().unwrap_or("")); }
            label { "Role " select name="role" { (role_options(query.role.as_deref().unwrap_or("pupil"))) } }
            label { "Group " select name="group" { (choices.group_options(query.group.as_deref().unwrap_or(""), "no group")) } }
            button type="submit" { "Test" }
        }
        @if let Some(result) = tested {
            @match result {
                Ok((blocked, _rule, reason, cats)) => p class=(if *blocked { "bad" } else { "ok" }) {
                    (if *blocked { "Blocked: " } else { "Allowed: " }) (reason)
                    @if !cats.is_empty() { " (categories: " (cats.join(", ")) ")" }
                },
                Err(problem) => p.bad { (problem) },
            }
        }
    }
}

/// Each role's and group's categories, with a block or allow form per unlocked one.
fn categories_section(
    views: &[ScopeView],
    categories: &[(String, bool)],
    windows: &[String],
    tokens: &FormTokens,
) -> Markup {
    html! {
        h2 { "Categories" }
        p { "Locked categories are blocked for everyone and cannot be changed here." }
        @for view in views.iter().filter(|v| v.scope != Scope::Global) {
            h3 { (view.scope.text()) }
            table {
                tr { th { "Category" } th { "Now" } th { "Change" } }
                @for ((name, state), (_, locked)) in view.blocks.iter().zip(categories) {
                    tr {
                        td { (name) }
                        td {
                            @if *locked { "locked (always blocked)" }
                            @else { @match state { None => "allowed", Some(s) if s.is_empty() => "blocked", Some(s) => (format!("blocked {s}")) } }
                        }
                        td {
                            @if !*locked {
                                form method="post" action="/rules/block" {
                                    (tokens)
                                    input type="hidden" name="scope" value=(view.scope.text());
                                    input type="hidden" name="category" value=(name);
                                    @if state.is_some() {
                                        input type="hidden" name="blocked" value="false";
                                        button type="submit" { "Allow" }
                                    } @else {
                                        input type="hidden" name="blocked" value="true";
                                        button type="submit" { "Block" }
                                        @if !windows.is_empty() {
                                            select name="window" aria-label="when" {
                                                option value="" { "always" }
                                                @for window in windows { option value=(window) { "in " (window) } }
                                            }
                                        }
                                    }
                                    input name="reason" placeholder="why (optional)";
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Every scope's allow and deny list as one text box each; a refused list keeps
/// what was typed, with what is wrong beside it.
fn lists_section(views: &[ScopeView], tokens: &FormTokens, retry: Option<&Retry>) -> Markup {
    html! {
        h2 { "Allow and deny lists" }
        p { "One site or address per line, such as " code { "example.com" } " or " code { "example.com/page" } ". Entries with time windows are kept as they are (edit them in the file)." }
        @for view in views {
            @for (deny, entries) in [(false, &view.allow), (true, &view.deny)] {
                @let kind = if deny { "deny" } else { "allow" };
                @let form_name = format!("list:{}:{kind}", view.scope.text());
                @let written = entries.iter().filter(|e| !e.starts_with('{')).cloned().collect::<Vec<_>>().join("\n");
                form method="post" action="/rules/list" {
                    (tokens)
                    input type="hidden" name="scope" value=(view.scope.text());
                    input type="hidden" name="kind" value=(kind);
                    label {
                        (scope_title(&view.scope)) " " (kind) " list"
                        br;
                        textarea name="entries" rows="4" cols="60" { (Retry::value(retry, &form_name, "entries").map_or(written, str::to_owned)) }
                    }
                    (Retry::problem_at(retry, &form_name, "entries"))
                    input name="reason" placeholder="why (optional)" value=(Retry::value(retry, &form_name, "reason").unwrap_or(""));
                    button type="submit" { "Save" }
                }
            }
        }
    }
}

/// A scope as a heading: "Everyone", "pupil", "pupil, group year6".
fn scope_title(scope: &Scope) -> String {
    match scope {
        Scope::Global => "Everyone:".to_owned(),
        Scope::Role(role) => format!("All {}:", crate::ui::choices::people(role)),
        Scope::Group(_, group) => format!("Group {group}:"),
    }
}

/// The time windows, each editable, and a form for a new one.
fn windows_section(
    window_views: &[WindowView],
    tokens: &FormTokens,
    retry: Option<&Retry>,
) -> Markup {
    let typed = |form: &str, field: &str, written: String| {
        Retry::value(retry, form, field).map_or(written, str::to_owned)
    };
    html! {
        h2 { "Time windows" }
        p { "Rules blocked \"in\" a window apply only then. Days: " code { "mon-fri" } ", " code { "sat" } " (none: every day); times: " code { "08:30-15:30" } " (none: all day), school time; separate several with commas." }
        table {
            tr { th { "Window" } th { "Description" } th { "Days" } th { "Times" } th { "Term days only" } th { "" } }
            @for window in window_views {
                @let form_name = format!("window:{}", window.name);
                tr {
                    form method="post" action="/rules/window" {
                        td { (window.name) (tokens) input type="hidden" name="name" value=(window.name); }
                        td { input name="description" value=(typed(&form_name, "description", window.description.clone())) aria-label="description"; }
                        td { input name="days" size="12" value=(typed(&form_name, "days", window.days.join(", "))) aria-label="days"; }
                        td {
                            input name="times" size="24" value=(typed(&form_name, "times", window.times.join(", "))) aria-label="times";
                            (Retry::problem_at(retry, &form_name, ""))
                        }
                        td { input type="checkbox" name="terms_only" value="true" checked[window.terms_only] aria-label="term days only"; }
                        td { input name="reason" placeholder="why (optional)" aria-label="why"; button type="submit" { "Save" } }
                    }
                }
            }
        }
        h3 { "New time window" }
        form method="post" action="/rules/window" {
            (tokens)
            input type="hidden" name="new" value="yes";
            label { "Name " input name="name" required pattern="[A-Za-z0-9_-]{1,40}" value=(typed("window:new", "name", String::new())); }
            label { "Description " input name="description" value=(typed("window:new", "description", String::new())); }
            label { "Days " input name="days" placeholder="mon-fri" value=(typed("window:new", "days", String::new())); }
            label { "Times " input name="times" placeholder="12:00-13:00" value=(typed("window:new", "times", String::new())); }
            label { "Term days only " input type="checkbox" name="terms_only" value="true"; }
            (Retry::problem_at(retry, "window:new", ""))
            input name="reason" placeholder="why (optional)";
            button type="submit" { "Add" }
        }
    }
}

/// The school's name and the block page's message, logo and language, editable.
fn block_page_section(document: &DocumentMut, tokens: &FormTokens) -> Markup {
    let text = |table: Option<&toml_edit::Item>, key: &str| {
        table
            .and_then(|t| t.get(key))
            .and_then(toml_edit::Item::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let block_page = document.get("block_page");
    let school = document
        .get("school")
        .and_then(toml_edit::Item::as_str)
        .unwrap_or_default();
    let language = text(block_page, "language");
    html! {
        h2 { "Block page" }
        p { "What a blocked pupil sees: the school's name, logo and message above a short explanation, a way back and the review form. The browser's language chooses English or Welsh; the school's language is used when it asks for neither." }
        form method="post" action="/rules/block-page" {
            (tokens)
            label { "School name " input name="school" maxlength="100" size="40" value=(school); }
            label for="block-page-message" { "Message to pupils (plain text, at most 500 characters)" }
            textarea id="block-page-message" name="message" rows="3" cols="60" maxlength="500" { (text(block_page, "message")) }
            label { "Logo file (PNG, JPEG, GIF, WebP or SVG, at most 64 KiB, next to the policy file) " input name="logo" size="30" value=(text(block_page, "logo")); }
            label { "School language "
                select name="language" {
                    @for code in safegate_policy::BLOCK_PAGE_LANGUAGES {
                        @let name = safegate_proxy::block_page::words::of(code).map_or(*code, |w| w.language_name.as_str());
                        option value=(code) selected[language == *code || (language.is_empty() && *code == "en")] { (name) }
                    }
                }
            }
            label { "Why (optional) " input name="reason"; }
            button type="submit" { "Save the block page" }
        }
    }
}

/// The block page form.
#[derive(Debug, Deserialize)]
pub struct BlockPageForm {
    version: String,
    #[serde(default)]
    school: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    logo: String,
    #[serde(default)]
    language: String,
    reason: Option<String>,
}

/// `POST /rules/block-page`.
pub async fn block_page_form(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
    Form(form): Form<BlockPageForm>,
) -> Response {
    let change = Edit::SetBlockPage(BlockPageEdit {
        school: form.school,
        message: form.message.replace("\r\n", "\n"),
        logo: form.logo,
        language: form.language,
    });
    edit(state, &session, form.version, change, form.reason, false).await
}

/// Every `[[unblocks]]` entry as (key, value) pairs, as written in the file.
fn unblock_entries(document: &DocumentMut) -> Vec<Vec<(String, String)>> {
    document
        .get("unblocks")
        .and_then(Item::as_array_of_tables)
        .map(|tables| {
            tables
                .iter()
                .map(|table| {
                    table
                        .iter()
                        .map(|(key, item)| {
                            let value = item
                                .as_str()
                                .map_or_else(|| item.to_string(), str::to_owned);
                            (key.to_owned(), value.trim().to_owned())
                        })
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The temporary unblocks, each with a remove form, and a form for a new one (who
/// and which category chosen from drop-downs).
fn unblocks_section(
    unblocks: &[Vec<(String, String)>],
    tokens: &FormTokens,
    choices: &Choices,
    retry: Option<&Retry>,
) -> Markup {
    let typed = |field: &str| Retry::value(retry, "unblock", field).unwrap_or("");
    html! {
        h2 { "Temporary unblocks" }
        p { "Teachers' unblocks and focus sessions are listed here too; remove one to end it early." }
        table {
            tr { th { "Unblock" } th { "" } }
            @for unblock in unblocks {
                @let id = unblock.iter().find(|(k, _)| k == "id").map(|(_, v)| v.clone()).unwrap_or_default();
                tr {
                    td { @for (key, value) in unblock.iter().filter(|(k, _)| k != "id") { (key) ": " (value) br; } }
                    td {
                        form method="post" action="/rules/unblock/remove" {
                            (tokens)
                            input type="hidden" name="id" value=(id);
                            button type="submit" { "Remove" }
                        }
                    }
                }
            }
        }
        h3 { "Unblock for a lesson" }
        form method="post" action="/rules/unblock" {
            (tokens)
            label { "Site " input name="site" value=(typed("site")) placeholder="example.com"; }
            (Retry::problem_at(retry, "unblock", "site"))
            label { "or category " select name="category" { (choices.category_options(typed("category"), Some("(a site, not a category)"))) } }
            label { "For " select name="scope" { (choices.scope_options(if typed("scope").is_empty() { "pupil" } else { typed("scope") })) } }
            label { "Minutes " input name="minutes" type="number" min="1" max="1440" value=(if typed("minutes").is_empty() { "30" } else { typed("minutes") }); }
            label { "Why " input name="reason" required value=(typed("reason")); }
            (Retry::problem_at(retry, "unblock", ""))
            button type="submit" { "Unblock" }
        }
    }
}

/// A `[windows.NAME]` table as written in the file.
struct WindowView {
    name: String,
    description: String,
    days: Vec<String>,
    times: Vec<String>,
    terms_only: bool,
}

fn window_views(document: &DocumentMut) -> Vec<WindowView> {
    let Some(windows) = document.get("windows").and_then(Item::as_table) else {
        return Vec::new();
    };
    windows
        .iter()
        .map(|(name, item)| {
            let table = item.as_table();
            WindowView {
                name: name.to_owned(),
                description: table
                    .and_then(|t| t.get("description"))
                    .and_then(Item::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                days: plain_strings(table, "days"),
                times: plain_strings(table, "times"),
                terms_only: table
                    .and_then(|t| t.get("terms_only"))
                    .and_then(Item::as_bool)
                    .unwrap_or(false),
            }
        })
        .collect()
}

/// The time-window form: comma-separated days and times.
#[derive(Debug, Deserialize)]
pub struct WindowForm {
    version: String,
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    days: String,
    #[serde(default)]
    times: String,
    /// A checkbox: present (`true`) when ticked.
    #[serde(default)]
    terms_only: Option<String>,
    reason: Option<String>,
    /// `yes` from the new-window form.
    #[serde(default)]
    new: Option<String>,
}

impl WindowForm {
    fn edit(self) -> (String, Edit, Option<String>) {
        let split = |text: &str| -> Vec<String> {
            text.split([',', '\n'])
                .map(str::trim)
                .filter(|part| !part.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let window = WindowEdit {
            name: self.name.trim().to_owned(),
            description: self.description,
            days: split(&self.days),
            times: split(&self.times),
            terms_only: self
                .terms_only
                .is_some_and(|value| matches!(value.as_str(), "true" | "on")),
        };
        (self.version, Edit::SetWindow(window), self.reason)
    }
}

/// `POST /rules/window`.
pub async fn window_form(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
    Form(form): Form<WindowForm>,
) -> Response {
    let form_name = if form.new.as_deref() == Some("yes") {
        "window:new".to_owned()
    } else {
        format!("window:{}", form.name)
    };
    let fields = [
        ("name", form.name.clone()),
        ("description", form.description.clone()),
        ("days", form.days.clone()),
        ("times", form.times.clone()),
    ];
    let retry = Retry::new(&form_name, &fields, "", String::new());
    let parts = form.edit();
    edit_or_retry(state, &session, parts, false, Some(retry)).await
}

/// `POST /api/rules/window` (JSON, the same fields as the form).
pub async fn window_api(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
    Json(form): Json<WindowForm>,
) -> Response {
    let (version, change, reason) = form.edit();
    edit(state, &session, version, change, reason, true).await
}

type Tested = Result<(bool, String, String, Vec<String>), String>;

fn test_url(snapshot: &Snapshot, url: &str, role: Option<&str>, group: Option<&str>) -> Tested {
    let role = match role.filter(|r| !r.is_empty()) {
        Some(name) => name
            .parse::<Role>()
            .map_err(|_| format!("{name} is not a role (pupil, staff, filter-admin)"))?,
        None => snapshot.default_role(),
    };
    let target = RequestTarget::parse_url(url).map_err(|err| format!("{url}: {err}"))?;
    let subject = Subject {
        role,
        group: group.filter(|g| !g.is_empty()),
        user: None,
    };
    let decision = snapshot.decide(&subject, &target, Timestamp::now());
    Ok((
        decision.is_blocked(),
        decision.rule.clone(),
        decision.reason.clone(),
        decision.categories.clone(),
    ))
}

/// Makes one edit for `session` (checked, audited, written), then asks for a reload.
pub(crate) async fn apply_change(
    state: &WebState,
    session: &Session,
    version: String,
    edit: Edit,
    reason: Option<String>,
) -> Result<crate::ui::policy_edit::Applied, EditError> {
    let Some(policy) = state.policy.as_ref() else {
        return Err(EditError::Refused(
            "the policy cannot be edited here".to_owned(),
        ));
    };
    let file = policy.file.clone();
    let locked: Vec<String> = policy
        .live
        .load()
        .stats()
        .categories
        .iter()
        .filter(|c| c.locked)
        .map(|c| c.name.clone())
        .collect();
    let store = state.store.clone();
    let author = Author {
        user: session.user.clone(),
        reason: reason.filter(|r| !r.trim().is_empty()),
        at_unix_micros: now_micros(),
    };
    let summary = edit.summary();
    let applied =
        tokio::task::spawn_blocking(move || file.apply(&store, &version, &edit, &locked, &author))
            .await
            .map_err(|_| EditError::Refused("the change could not be made".to_owned()))??;
    policy.reload.notify_one();
    tracing::info!(user = %session.user, change = %summary, sequence = applied.audit_sequence, "policy changed from the admin pages");
    Ok(applied)
}

/// The status for a refused edit.
pub(crate) fn edit_status(err: &EditError) -> StatusCode {
    match err {
        EditError::Stale => StatusCode::CONFLICT,
        EditError::Invalid(_) | EditError::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Makes one edit and answers with a redirect saying how it went (or JSON for the
/// API). A refused page form with `retry` is shown again as typed, with the reason.
async fn edit(
    state: Arc<WebState>,
    session: &Session,
    version: String,
    edit: Edit,
    reason: Option<String>,
    api: bool,
) -> Response {
    edit_or_retry(state, session, (version, edit, reason), api, None).await
}

/// [`edit`], showing a refused page form again from `retry`.
async fn edit_or_retry(
    state: Arc<WebState>,
    session: &Session,
    (version, edit, reason): (String, Edit, Option<String>),
    api: bool,
    retry: Option<Retry>,
) -> Response {
    let summary = edit.summary();
    match (
        apply_change(&state, session, version, edit, reason).await,
        api,
    ) {
        (Ok(applied), true) => Json(serde_json::json!({
            "saved": summary,
            "version": applied.version,
            "audit_sequence": applied.audit_sequence,
        }))
        .into_response(),
        (Ok(_), false) => {
            Redirect::to(&format!("/rules?done={}", url_encode(&summary))).into_response()
        }
        (Err(err), true) => refusal(true, edit_status(&err), &err.to_string()),
        (Err(err), false) => match retry {
            Some(mut retry) if !matches!(err, EditError::Stale) => {
                retry.problem = err.to_string();
                render_rules(&state, session, &RulesQuery::default(), Some(&retry))
            }
            _ => Redirect::to(&format!("/rules?error={}", url_encode(&err.to_string())))
                .into_response(),
        },
    }
}

pub(crate) fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn bad_request(api: bool, message: &str) -> Response {
    refusal(api, StatusCode::BAD_REQUEST, message)
}

/// Every account, for counting who a change reaches (empty when unreadable).
pub(crate) async fn all_users(state: &WebState) -> Vec<safegate_store::User> {
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || store.list_users())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default()
}

/// The confirmation page for `change` when it is wide and not yet confirmed.
pub(crate) async fn needs_confirmation(
    state: &WebState,
    session: &Session,
    change: &Edit,
    (action, duration, fields): (&str, &str, &[(&str, String)]),
    confirmed: bool,
) -> Option<Response> {
    if confirmed {
        return None;
    }
    let users = all_users(state).await;
    let effect = confirm::effect(change, &users, duration)?;
    Some(confirm::page(session, action, "/rules", &effect, fields).into_response())
}

/// The block form.
#[derive(Debug, Deserialize)]
pub struct BlockForm {
    version: String,
    scope: String,
    category: String,
    blocked: bool,
    /// A time window to block in; empty or absent for always.
    window: Option<String>,
    reason: Option<String>,
    /// `yes` once the person confirmed a wide change.
    confirmed: Option<String>,
}

async fn set_blocked(
    state: Arc<WebState>,
    session: Session,
    form: BlockForm,
    api: bool,
) -> Response {
    let Some(scope) = Scope::parse(&form.scope) else {
        return bad_request(api, "choose a role or a group from the list");
    };
    let change = Edit::SetBlocked {
        scope,
        category: form.category.clone(),
        blocked: form.blocked,
        windows: form
            .window
            .clone()
            .map(|w| w.trim().to_owned())
            .filter(|w| !w.is_empty())
            .into_iter()
            .collect(),
    };
    if !api {
        let fields = [
            ("version", form.version.clone()),
            ("scope", form.scope.clone()),
            ("category", form.category.clone()),
            ("blocked", form.blocked.to_string()),
            ("window", form.window.clone().unwrap_or_default()),
            ("reason", form.reason.clone().unwrap_or_default()),
        ];
        let confirmed = confirm::is_confirmed(form.confirmed.as_deref());
        let step = ("/rules/block", "", &fields[..]);
        if let Some(page) = needs_confirmation(&state, &session, &change, step, confirmed).await {
            return page;
        }
    }
    edit(state, &session, form.version, change, form.reason, api).await
}

/// `POST /rules/block`.
pub async fn block_form(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
    Form(form): Form<BlockForm>,
) -> Response {
    set_blocked(state, session, form, false).await
}

/// `POST /api/rules/block` (JSON).
pub async fn block_api(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
    Json(form): Json<BlockForm>,
) -> Response {
    set_blocked(state, session, form, true).await
}

/// The list form.
#[derive(Debug, Deserialize)]
pub struct ListForm {
    version: String,
    scope: String,
    kind: String,
    entries: String,
    reason: Option<String>,
    /// `yes` once the person confirmed a wide change.
    confirmed: Option<String>,
}

/// `POST /rules/list`: every line is checked first; a refused list is shown again
/// as typed, with the line and what is wrong with it.
pub async fn list_form(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
    Form(form): Form<ListForm>,
) -> Response {
    let Some(scope) = Scope::parse(&form.scope) else {
        return bad_request(false, "choose a role or a group from the list");
    };
    let deny = match form.kind.as_str() {
        "allow" => false,
        "deny" => true,
        _ => return bad_request(false, "a list is allow or deny"),
    };
    let fields = [
        ("version", form.version.clone()),
        ("scope", form.scope.clone()),
        ("kind", form.kind.clone()),
        ("entries", form.entries.clone()),
        ("reason", form.reason.clone().unwrap_or_default()),
    ];
    let form_name = format!("list:{}:{}", scope.text(), form.kind);
    let entries = match site_words::check_lines(&form.entries) {
        Ok(entries) => entries,
        Err(problem) => {
            let retry = Retry::new(&form_name, &fields, "entries", problem);
            return render_rules(&state, &session, &RulesQuery::default(), Some(&retry));
        }
    };
    let before = current_list(&state, &scope, deny);
    let added: Vec<String> = entries
        .iter()
        .filter(|e| !before.contains(e))
        .cloned()
        .collect();
    let widening = Edit::SetList {
        scope: scope.clone(),
        deny,
        entries: added,
    };
    let confirmed = confirm::is_confirmed(form.confirmed.as_deref());
    let step = ("/rules/list", "until removed", &fields[..]);
    if let Some(page) = needs_confirmation(&state, &session, &widening, step, confirmed).await {
        return page;
    }
    let change = Edit::SetList {
        scope,
        deny,
        entries,
    };
    let retry = Retry::new(&form_name, &fields, "entries", String::new());
    let parts = (form.version, change, form.reason);
    edit_or_retry(state, &session, parts, false, Some(retry)).await
}

/// The plain entries of a scope's list as the file has them now.
fn current_list(state: &WebState, scope: &Scope, deny: bool) -> Vec<String> {
    let Some(Ok((document, _))) = state.policy.as_ref().map(|p| read_document(&p.file)) else {
        return Vec::new();
    };
    let categories = Vec::new();
    scopes(&document, &categories)
        .into_iter()
        .find(|view| &view.scope == scope)
        .map(|view| if deny { view.deny } else { view.allow })
        .unwrap_or_default()
}

/// The unblock form.
#[derive(Debug, Deserialize)]
pub struct UnblockForm {
    version: String,
    site: Option<String>,
    category: Option<String>,
    scope: String,
    /// Minutes, as typed (a form) or as a number (JSON).
    #[serde(deserialize_with = "number_or_text")]
    minutes: String,
    reason: String,
    /// `yes` once the person confirmed a wide change.
    #[serde(default)]
    confirmed: Option<String>,
}

/// A number or its text, as text (forms send text, JSON numbers).
fn number_or_text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Number(u64),
        Text(String),
    }
    Ok(match Either::deserialize(deserializer)? {
        Either::Number(n) => n.to_string(),
        Either::Text(text) => text,
    })
}

impl UnblockForm {
    fn fields(&self) -> [(&'static str, String); 6] {
        [
            ("version", self.version.clone()),
            ("site", self.site.clone().unwrap_or_default()),
            ("category", self.category.clone().unwrap_or_default()),
            ("scope", self.scope.clone()),
            ("minutes", self.minutes.clone()),
            ("reason", self.reason.clone()),
        ]
    }
}

/// The unblock an unblock form asks for, or the field at fault and why.
fn unblock_of(
    form: &UnblockForm,
    session: &Session,
    tz: jiff::tz::TimeZone,
) -> Result<(NewUnblock, u32), (&'static str, String)> {
    let scope = Scope::parse(&form.scope)
        .filter(|s| *s != Scope::Global)
        .ok_or(("scope", "choose who it is for from the list".to_owned()))?;
    let site = match form
        .site
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        Some(site) => Some(site_words::check_site(site).map_err(|why| ("site", why))?),
        None => None,
    };
    let category = form
        .category
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned);
    if site.is_some() == category.is_some() {
        return Err((
            "site",
            "give a site or choose a category (one of them)".to_owned(),
        ));
    }
    let minutes = form
        .minutes
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|m| (1..=1440).contains(m))
        .ok_or(("minutes", "an unblock lasts 1 to 1440 minutes".to_owned()))?;
    let now = Timestamp::now().to_zoned_datetime(tz);
    let until = now
        .checked_add(jiff::SignedDuration::from_mins(i64::from(minutes)))
        .map_err(|_| ("minutes", "that is too long".to_owned()))?;
    Ok((
        NewUnblock {
            site,
            category,
            focus: Vec::new(),
            scope,
            user: None,
            from: now.strftime("%Y-%m-%d %H:%M").to_string(),
            until: until.strftime("%Y-%m-%d %H:%M").to_string(),
            reason: form.reason.clone(),
            granted_by: session.user.clone(),
        },
        minutes,
    ))
}

async fn add_unblock(
    state: Arc<WebState>,
    session: Session,
    form: UnblockForm,
    api: bool,
) -> Response {
    let Some(policy) = state.policy.as_ref() else {
        return bad_request(api, "the policy cannot be edited here");
    };
    let tz = policy.live.load().timezone().clone();
    let fields = form.fields();
    let (unblock, minutes) = match unblock_of(&form, &session, tz) {
        Ok(made) => made,
        Err((_, problem)) if api => return bad_request(true, &problem),
        Err((field, problem)) => {
            let retry = Retry::new("unblock", &fields, field, problem);
            return render_rules(&state, &session, &RulesQuery::default(), Some(&retry));
        }
    };
    let change = Edit::AddUnblock(unblock);
    if !api {
        let duration = format!("for {minutes} minutes");
        let confirmed = confirm::is_confirmed(form.confirmed.as_deref());
        let step = ("/rules/unblock", duration.as_str(), &fields[..]);
        if let Some(page) = needs_confirmation(&state, &session, &change, step, confirmed).await {
            return page;
        }
    }
    let retry = Retry::new("unblock", &fields, "", String::new());
    let parts = (form.version, change, Some(form.reason));
    edit_or_retry(state, &session, parts, api, Some(retry)).await
}

/// `POST /rules/unblock`.
pub async fn unblock_form(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
    Form(form): Form<UnblockForm>,
) -> Response {
    add_unblock(state, session, form, false).await
}

/// `POST /api/rules/unblock` (JSON).
pub async fn unblock_api(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
    Json(form): Json<UnblockForm>,
) -> Response {
    add_unblock(state, session, form, true).await
}

/// The remove-unblock form.
#[derive(Debug, Deserialize)]
pub struct RemoveUnblockForm {
    version: String,
    id: String,
}

/// `POST /rules/unblock/remove`.
pub async fn remove_unblock_form(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
    Form(form): Form<RemoveUnblockForm>,
) -> Response {
    let change = Edit::RemoveUnblock(form.id);
    edit(state, &session, form.version, change, None, false).await
}

/// `GET /api/rules`: the policy file's version (to send with changes) and text.
pub async fn rules_api(State(state): State<Arc<WebState>>) -> Response {
    let Some(policy) = state.policy.as_ref() else {
        return no_policy(true);
    };
    match policy.file.read() {
        Ok((text, version)) => {
            Json(serde_json::json!({ "version": version, "text": text })).into_response()
        }
        Err(err) => refusal(true, StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
    }
}

/// `?url=&role=&group=` for `GET /api/rules/check`.
#[derive(Debug, Deserialize)]
pub struct CheckQuery {
    url: String,
    role: Option<String>,
    group: Option<String>,
}

/// `GET /api/rules/check`: "test a URL" as JSON.
pub async fn check_api(
    State(state): State<Arc<WebState>>,
    Query(query): Query<CheckQuery>,
) -> Response {
    let Some(policy) = state.policy.as_ref() else {
        return no_policy(true);
    };
    let snapshot = policy.live.load_full();
    match test_url(
        &snapshot,
        &query.url,
        query.role.as_deref(),
        query.group.as_deref(),
    ) {
        Ok((blocked, rule, reason, categories)) => Json(serde_json::json!({
            "verdict": if blocked { "block" } else { "allow" },
            "rule": rule,
            "reason": reason,
            "categories": categories,
        }))
        .into_response(),
        Err(problem) => refusal(true, StatusCode::BAD_REQUEST, &problem),
    }
}
