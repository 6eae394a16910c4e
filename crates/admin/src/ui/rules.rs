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

use crate::ui::pages::{layout, url_encode};
use crate::ui::policy_edit::{
    Author, BlockPageEdit, Edit, EditError, NewUnblock, PolicyFile, Scope, WindowEdit,
};
use crate::ui::{Session, WebState, refusal};

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
    let Some(policy) = state.policy.as_ref() else {
        return no_policy(false);
    };
    let (document, version) = match read_document(&policy.file) {
        Ok(read) => read,
        Err(problem) => return refusal(false, StatusCode::INTERNAL_SERVER_ERROR, &problem),
    };
    let snapshot = policy.live.load_full();
    let categories: Vec<(String, bool)> = snapshot
        .stats()
        .categories
        .iter()
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
    layout(
        "Filtering rules",
        Some(&session),
        html! {
            (test_section(&query, tested.as_ref()))
            (categories_section(&views, &categories, &windows, &tokens))
            (lists_section(&views, &tokens))
            (windows_section(&window_views, &tokens))
            (unblocks_section(&unblock_entries(&document), &tokens))
            (block_page_section(&document, &tokens))
        },
    )
    .into_response()
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
fn test_section(query: &RulesQuery, tested: Option<&Tested>) -> Markup {
    html! {
        @if let Some(done) = &query.done { p.ok { "Saved: " (done) ". The policy reloads in a moment." } }
        @if let Some(error) = &query.error { p.bad { (error) } }
        h2 { "Test a URL" }
        form method="get" action="/rules" {
            label { "Address " input name="url" size="50" value=(query.url.as_deref().unwrap_or("")); }
            label { "Role " input name="role" value=(query.role.as_deref().unwrap_or("pupil")); }
            label { "Group (optional) " input name="group" value=(query.group.as_deref().unwrap_or("")); }
            button type="submit" { "Test" }
        }
        @if let Some(result) = tested {
            @match result {
                Ok((blocked, rule, reason, cats)) => p class=(if *blocked { "bad" } else { "ok" }) {
                    (if *blocked { "BLOCKED" } else { "ALLOWED" }) " by " code { (rule) } ": " (reason)
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

/// Every scope's allow and deny list as one text box each.
fn lists_section(views: &[ScopeView], tokens: &FormTokens) -> Markup {
    html! {
        h2 { "Allow and deny lists" }
        p { "One site or address per line. Entries with time windows are kept as they are (edit them in the file)." }
        @for view in views {
            @for (deny, entries) in [(false, &view.allow), (true, &view.deny)] {
                form method="post" action="/rules/list" {
                    (tokens)
                    input type="hidden" name="scope" value=(view.scope.text());
                    input type="hidden" name="kind" value=(if deny { "deny" } else { "allow" });
                    label {
                        (view.scope.text()) " " (if deny { "deny" } else { "allow" }) " list"
                        br;
                        textarea name="entries" rows="4" cols="60" { (entries.iter().filter(|e| !e.starts_with('{')).cloned().collect::<Vec<_>>().join("\n")) }
                    }
                    input name="reason" placeholder="why (optional)";
                    button type="submit" { "Save" }
                }
            }
        }
    }
}

/// The time windows, each editable, and a form for a new one.
fn windows_section(window_views: &[WindowView], tokens: &FormTokens) -> Markup {
    html! {
        h2 { "Time windows" }
        p { "Rules blocked \"in\" a window apply only then. Days: " code { "mon-fri" } ", " code { "sat" } " (none: every day); times: " code { "08:30-15:30" } " (none: all day), school time; separate several with commas." }
        table {
            tr { th { "Window" } th { "Description" } th { "Days" } th { "Times" } th { "Term days only" } th { "" } }
            @for window in window_views {
                tr {
                    form method="post" action="/rules/window" {
                        td { (window.name) (tokens) input type="hidden" name="name" value=(window.name); }
                        td { input name="description" value=(window.description) aria-label="description"; }
                        td { input name="days" size="12" value=(window.days.join(", ")) aria-label="days"; }
                        td { input name="times" size="24" value=(window.times.join(", ")) aria-label="times"; }
                        td { input type="checkbox" name="terms_only" value="true" checked[window.terms_only] aria-label="term days only"; }
                        td { input name="reason" placeholder="why (optional)" aria-label="why"; button type="submit" { "Save" } }
                    }
                }
            }
        }
        h3 { "New time window" }
        form method="post" action="/rules/window" {
            (tokens)
            label { "Name " input name="name" required pattern="[A-Za-z0-9_-]{1,40}"; }
            label { "Description " input name="description"; }
            label { "Days " input name="days" placeholder="mon-fri"; }
            label { "Times " input name="times" placeholder="12:00-13:00"; }
            label { "Term days only " input type="checkbox" name="terms_only" value="true"; }
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

/// The temporary unblocks, each with a remove form, and a form for a new one.
fn unblocks_section(unblocks: &[Vec<(String, String)>], tokens: &FormTokens) -> Markup {
    html! {
        h2 { "Temporary unblocks" }
        table {
            tr { th { "Unblock" } th { "" } }
            @for unblock in unblocks {
                @let id = unblock.iter().find(|(k, _)| k == "id").map(|(_, v)| v.clone()).unwrap_or_default();
                tr {
                    td { @for (key, value) in unblock { (key) ": " (value) br; } }
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
            label { "Site (or leave empty and give a category) " input name="site"; }
            label { "Category " input name="category"; }
            label { "For (role, or role/group such as pupil/year9) " input name="scope" required; }
            label { "Minutes " input name="minutes" type="number" min="1" max="1440" value="30"; }
            label { "Why " input name="reason" required; }
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
    let (version, change, reason) = form.edit();
    edit(state, &session, version, change, reason, false).await
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
/// API).
async fn edit(
    state: Arc<WebState>,
    session: &Session,
    version: String,
    edit: Edit,
    reason: Option<String>,
    api: bool,
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
        (Err(err), false) => {
            Redirect::to(&format!("/rules?error={}", url_encode(&err.to_string()))).into_response()
        }
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
}

async fn set_blocked(
    state: Arc<WebState>,
    session: Session,
    form: BlockForm,
    api: bool,
) -> Response {
    let Some(scope) = Scope::parse(&form.scope) else {
        return bad_request(api, "unknown role or group");
    };
    let change = Edit::SetBlocked {
        scope,
        category: form.category,
        blocked: form.blocked,
        windows: form
            .window
            .map(|w| w.trim().to_owned())
            .filter(|w| !w.is_empty())
            .into_iter()
            .collect(),
    };
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
}

/// `POST /rules/list`.
pub async fn list_form(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
    Form(form): Form<ListForm>,
) -> Response {
    let Some(scope) = Scope::parse(&form.scope) else {
        return bad_request(false, "unknown role or group");
    };
    let deny = match form.kind.as_str() {
        "allow" => false,
        "deny" => true,
        _ => return bad_request(false, "a list is allow or deny"),
    };
    let entries = form.entries.lines().map(str::to_owned).collect();
    let change = Edit::SetList {
        scope,
        deny,
        entries,
    };
    edit(state, &session, form.version, change, form.reason, false).await
}

/// The unblock form.
#[derive(Debug, Deserialize)]
pub struct UnblockForm {
    version: String,
    site: Option<String>,
    category: Option<String>,
    scope: String,
    minutes: u32,
    reason: String,
}

async fn add_unblock(
    state: Arc<WebState>,
    session: Session,
    form: UnblockForm,
    api: bool,
) -> Response {
    let Some(scope) = Scope::parse(&form.scope) else {
        return bad_request(api, "unknown role or group");
    };
    let site = form
        .site
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().to_owned());
    let category = form
        .category
        .filter(|c| !c.trim().is_empty())
        .map(|c| c.trim().to_owned());
    if site.is_some() == category.is_some() {
        return bad_request(api, "give either a site or a category");
    }
    if !(1..=1440).contains(&form.minutes) {
        return bad_request(api, "an unblock lasts 1 to 1440 minutes");
    }
    let Some(policy) = state.policy.as_ref() else {
        return bad_request(api, "the policy cannot be edited here");
    };
    let tz = policy.live.load().timezone().clone();
    let now = Timestamp::now().to_zoned_datetime(tz);
    let until = match now.checked_add(jiff::SignedDuration::from_mins(i64::from(form.minutes))) {
        Ok(until) => until,
        Err(_) => return bad_request(api, "bad duration"),
    };
    let change = Edit::AddUnblock(NewUnblock {
        site,
        category,
        scope,
        from: now.strftime("%Y-%m-%d %H:%M").to_string(),
        until: until.strftime("%Y-%m-%d %H:%M").to_string(),
        reason: form.reason.clone(),
        granted_by: session.user.clone(),
    });
    edit(
        state,
        &session,
        form.version,
        change,
        Some(form.reason),
        api,
    )
    .await
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
