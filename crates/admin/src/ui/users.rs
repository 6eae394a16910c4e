//! Managing accounts in the web interface (permission `users`): list and search,
//! add, disable or enable, reset a password, change role, group and permissions, and
//! import a CSV file (the format of `safegate users import`) with a preview of every
//! row before anything changes. Roles, groups and permissions are chosen from what
//! exists; a group the policy does not define is refused. Every change is recorded in
//! the audit log with who made it.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use safegate_store::users::{NewUser, User, UserUpdate};
use safegate_store::{AuditAction, NewAuditEntry, Permission, Store};
use serde::Deserialize;

use crate::ui::choices::{Choices, role_options};
use crate::ui::pages::{layout, url_encode};
use crate::ui::rules::now_micros;
use crate::ui::{Session, WebState, refusal};

/// Accounts shown on one page of results.
const SHOWN: usize = 300;

/// `?q=&done=&error=`.
#[derive(Debug, Default, Deserialize)]
pub struct UsersQuery {
    q: Option<String>,
    done: Option<String>,
    error: Option<String>,
}

fn choices(state: &WebState) -> Choices {
    state
        .policy
        .as_ref()
        .map(|p| Choices::of(&p.live.load()))
        .unwrap_or_default()
}

async fn blocking<T: Send + 'static>(
    store: &Store,
    work: impl FnOnce(&Store) -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || work(&store))
        .await
        .map_err(|_| "the database could not be reached".to_owned())?
}

/// `GET /users`: search, the accounts found, and the add and import forms.
pub async fn users_page(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
    Query(query): Query<UsersQuery>,
) -> Response {
    let users = match blocking(&state.store, |s| s.list_users().map_err(|e| e.to_string())).await {
        Ok(users) => users,
        Err(why) => return refusal(false, StatusCode::INTERNAL_SERVER_ERROR, &why),
    };
    let q = query.q.clone().unwrap_or_default().trim().to_lowercase();
    let found: Vec<&User> = users
        .iter()
        .filter(|u| {
            q.is_empty()
                || u.name.contains(&q)
                || u.role.contains(&q)
                || u.group.as_deref().is_some_and(|g| g.contains(&q))
                || u.display_name
                    .as_deref()
                    .is_some_and(|d| d.to_lowercase().contains(&q))
        })
        .collect();
    let choices = choices(&state);
    layout(
        "Users",
        Some(&session),
        html! {
            @if let Some(done) = &query.done { p.ok { (done) } }
            @if let Some(error) = &query.error { p.bad role="alert" { (error) } }
            form method="get" action="/users" {
                label { "Search " input name="q" value=(query.q.as_deref().unwrap_or("")) placeholder="name, role or group"; }
                button type="submit" { "Search" }
            }
            p { (found.len()) " of " (users.len()) " accounts" @if found.len() > SHOWN { " (the first " (SHOWN) " shown: search to narrow)" } }
            table {
                tr { th { "Log-in" } th { "Name" } th { "Role" } th { "Group" } th { "May" } th { "Status" } }
                @for user in found.iter().take(SHOWN) {
                    tr {
                        td { a href=(format!("/users/{}", url_encode(&user.name))) { (user.name) } }
                        td { (user.display_name.as_deref().unwrap_or("")) }
                        td { (user.role) }
                        td { (user.group.as_deref().unwrap_or("")) }
                        td { (permissions_text(&user.permissions)) }
                        td { (if user.disabled { "disabled" } else { "active" }) }
                    }
                }
            }
            h2 { "Add an account" }
            (account_form("/users/add", None, &choices, &session.csrf))
            h2 { "Import accounts from a CSV file" }
            p { "Columns: " code { "user, display name, role, group, permissions, password, shared" } " (the first line names them). Paste the file's text; you see every row before anything is added." }
            form method="post" action="/users/import" {
                input type="hidden" name="csrf" value=(session.csrf);
                textarea name="csv" rows="6" cols="80" aria-label="CSV text" {}
                button type="submit" { "Preview the import" }
            }
        },
    )
    .into_response()
}

fn permissions_text(permissions: &BTreeSet<Permission>) -> String {
    if permissions.is_empty() {
        "browsing only".to_owned()
    } else {
        permissions
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The add form, or (with `user`) the change form of one account.
fn account_form(action: &str, user: Option<&User>, choices: &Choices, csrf: &str) -> Markup {
    let role = user.map_or("pupil", |u| u.role.as_str());
    let group = user.and_then(|u| u.group.as_deref()).unwrap_or("");
    html! {
        form method="post" action=(action) {
            input type="hidden" name="csrf" value=(csrf);
            @if user.is_none() {
                label { "Log-in name " input name="name" required; }
            }
            label { "Name people read " input name="display_name" value=(user.and_then(|u| u.display_name.as_deref()).unwrap_or("")); }
            label { "Role " select name="role" { (role_options(role)) } }
            label { "Group " select name="group" { (choices.group_options(group, "no group")) } }
            fieldset {
                legend { "May use the admin pages for" }
                @for permission in Permission::ALL {
                    label {
                        input type="checkbox" name="permissions" value=(permission.as_str())
                            checked[user.is_some_and(|u| u.permissions.contains(&permission))];
                        " " (permission.as_str())
                    }
                }
            }
            @if user.is_none() {
                label { "Password " input name="password" type="password" autocomplete="new-password" required; }
            }
            button type="submit" { (if user.is_some() { "Save changes" } else { "Add the account" }) }
        }
    }
}

/// A form's fields, repeated ones kept.
fn fields_of(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn field(fields: &[(String, String)], name: &str) -> String {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default()
}

/// Role, group and permissions of a form, checked against the policy's groups.
fn role_group_permissions(
    fields: &[(String, String)],
    choices: &Choices,
) -> Result<(String, Option<String>, BTreeSet<Permission>), String> {
    let role = field(fields, "role");
    let group = Some(field(fields, "group")).filter(|g| !g.is_empty());
    if let Some(group) = &group {
        match choices.role_of(group) {
            None => return Err(format!("the policy defines no group `{group}`")),
            Some(owner) if owner != role => {
                return Err(format!(
                    "group `{group}` is a group of {owner}, not of {role}"
                ));
            }
            Some(_) => {}
        }
    }
    let permissions = fields
        .iter()
        .filter(|(k, _)| k == "permissions")
        .map(|(_, v)| v.parse::<Permission>().map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    Ok((role, group, permissions))
}

/// Records a change to an account in the audit log.
fn audit(store: &Store, actor: &str, subject: &str, detail: String) -> Result<(), String> {
    store
        .append_audit(NewAuditEntry {
            at_unix_micros: now_micros(),
            actor: actor.to_owned(),
            action: AuditAction::UserChange,
            subject: subject.to_owned(),
            detail,
            reason: None,
        })
        .map(|_| ())
        .map_err(|e| format!("the audit log cannot record it: {e}"))
}

fn back(done: Result<String, String>, to: &str) -> Response {
    let (key, text) = match done {
        Ok(text) => ("done", text),
        Err(text) => ("error", text),
    };
    Redirect::to(&format!("{to}?{key}={}", url_encode(&text))).into_response()
}

/// `POST /users/add`.
pub async fn add_user(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
    body: Bytes,
) -> Response {
    let fields = fields_of(&body);
    let (role, group, permissions) = match role_group_permissions(&fields, &choices(&state)) {
        Ok(parts) => parts,
        Err(why) => return back(Err(why), "/users"),
    };
    let password = field(&fields, "password");
    if let Err(why) = safegate_store::password::check_password(&password) {
        return back(Err(format!("the password: {why}")), "/users");
    }
    let display = Some(field(&fields, "display_name")).filter(|d| !d.is_empty());
    let name = field(&fields, "name");
    let actor = session.user.clone();
    let done = blocking(&state.store, move |store| {
        let hash = safegate_store::password::hash_password(&password).map_err(|e| e.to_string())?;
        let user = store
            .add_user(&NewUser {
                shared: false,
                name,
                display_name: display,
                role,
                group,
                permissions,
                password_hash: hash,
            })
            .map_err(|e| e.to_string())?;
        let detail = format!(
            "added ({}, {}, {})",
            user.role,
            user.group.as_deref().unwrap_or("no group"),
            permissions_text(&user.permissions)
        );
        audit(store, &actor, &user.name, detail)?;
        store.flush_blocking().map_err(|e| e.to_string())?;
        Ok(format!("Added {}", user.name))
    })
    .await;
    back(done, "/users")
}

/// `GET /users/{name}`: one account, its change form, and disable and password forms.
pub async fn user_page(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    Query(query): Query<UsersQuery>,
) -> Response {
    let lookup = name.clone();
    let user = match blocking(&state.store, move |s| {
        s.get_user(&lookup).map_err(|e| e.to_string())
    })
    .await
    {
        Ok(Some(user)) => user,
        Ok(None) => return refusal(false, StatusCode::NOT_FOUND, "there is no such account"),
        Err(why) => return refusal(false, StatusCode::INTERNAL_SERVER_ERROR, &why),
    };
    let base = format!("/users/{}", url_encode(&user.name));
    layout(
        &format!("Account {}", user.name),
        Some(&session),
        html! {
            @if let Some(done) = &query.done { p.ok { (done) } }
            @if let Some(error) = &query.error { p.bad role="alert" { (error) } }
            p { a href="/users" { "All accounts" } }
            p { "Status: " strong { (if user.disabled { "disabled (cannot sign in)" } else { "active" }) } }
            (account_form(&format!("{base}/update"), Some(&user), &choices(&state), &session.csrf))
            h2 { (if user.disabled { "Enable" } else { "Disable" }) }
            form method="post" action=(format!("{base}/disable")) {
                input type="hidden" name="csrf" value=(session.csrf);
                input type="hidden" name="disabled" value=(if user.disabled { "false" } else { "true" });
                button type="submit" { (if user.disabled { "Enable the account" } else { "Disable the account" }) }
            }
            h2 { "Reset the password" }
            form method="post" action=(format!("{base}/password")) {
                input type="hidden" name="csrf" value=(session.csrf);
                label { "New password " input name="password" type="password" autocomplete="new-password" required; }
                button type="submit" { "Set the password" }
            }
        },
    )
    .into_response()
}

/// `POST /users/{name}/update`: display name, role, group and permissions.
pub async fn update_user(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let fields = fields_of(&body);
    let to = format!("/users/{}", url_encode(&name));
    let (role, group, permissions) = match role_group_permissions(&fields, &choices(&state)) {
        Ok(parts) => parts,
        Err(why) => return back(Err(why), &to),
    };
    let display = Some(field(&fields, "display_name")).filter(|d| !d.is_empty());
    let actor = session.user.clone();
    let done = blocking(&state.store, move |store| {
        let user = store
            .update_user(
                &name,
                &UserUpdate {
                    display_name: Some(display),
                    role: Some(role),
                    group: Some(group),
                    permissions: Some(permissions),
                    shared: None,
                },
            )
            .map_err(|e| e.to_string())?;
        let detail = format!(
            "changed to {}, {}, {}",
            user.role,
            user.group.as_deref().unwrap_or("no group"),
            permissions_text(&user.permissions)
        );
        audit(store, &actor, &user.name, detail)?;
        store.flush_blocking().map_err(|e| e.to_string())?;
        Ok(format!("Saved {}", user.name))
    })
    .await;
    back(done, &to)
}

/// `POST /users/{name}/disable` (`disabled=true|false`).
pub async fn disable_user(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let disabled = field(&fields_of(&body), "disabled") == "true";
    let to = format!("/users/{}", url_encode(&name));
    let actor = session.user.clone();
    let done = blocking(&state.store, move |store| {
        let (user, _) = store
            .set_disabled(&name, disabled)
            .map_err(|e| e.to_string())?;
        let what = if disabled { "disabled" } else { "enabled" };
        audit(store, &actor, &user.name, what.to_owned())?;
        store.flush_blocking().map_err(|e| e.to_string())?;
        Ok(format!("{} is {what}", user.name))
    })
    .await;
    back(done, &to)
}

/// `POST /users/{name}/password`.
pub async fn reset_password(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let password = field(&fields_of(&body), "password");
    let to = format!("/users/{}", url_encode(&name));
    if let Err(why) = safegate_store::password::check_password(&password) {
        return back(Err(format!("the password: {why}")), &to);
    }
    let actor = session.user.clone();
    let done = blocking(&state.store, move |store| {
        let hash = safegate_store::password::hash_password(&password).map_err(|e| e.to_string())?;
        let user = store
            .set_password(&name, &hash)
            .map_err(|e| e.to_string())?;
        audit(store, &actor, &user.name, "password reset".to_owned())?;
        store.flush_blocking().map_err(|e| e.to_string())?;
        Ok(format!("The password of {} was changed", user.name))
    })
    .await;
    back(done, &to)
}

/// What the import preview says about each line.
struct RowView {
    line: u64,
    user: String,
    role: String,
    group: String,
    permissions: String,
    problems: Vec<String>,
}

/// Reads the CSV and finds every problem (the file's, the database's and unknown
/// groups), without hashing anything.
fn preview(
    store: &Store,
    csv: &str,
    choices: &Choices,
) -> Result<(safegate_control::users_file::ReadFile, Vec<RowView>), String> {
    let read = safegate_control::users_file::read(csv.as_bytes()).map_err(|e| e.to_string())?;
    let mut bad = read.bad_rows.clone();
    match store.check_import(&read.rows) {
        Ok(()) => {}
        Err(safegate_store::ImportErrors::BadRows(more)) => bad.extend(more),
        Err(other) => return Err(other.to_string()),
    }
    let mut views: Vec<RowView> = read
        .rows
        .iter()
        .map(|row| {
            let mut problems = Vec::new();
            if let Some(group) = row.group.as_deref().filter(|g| !g.is_empty()) {
                match choices.role_of(group) {
                    None => problems.push(format!("the policy defines no group `{group}`")),
                    Some(owner) if owner != row.role => {
                        problems.push(format!("group `{group}` is a group of {owner}"));
                    }
                    Some(_) => {}
                }
            }
            RowView {
                line: row.line,
                user: row.name.clone(),
                role: row.role.clone(),
                group: row.group.clone().unwrap_or_default(),
                permissions: permissions_text(&row.permissions),
                problems,
            }
        })
        .collect();
    for row in bad {
        match views.iter_mut().find(|v| v.line == row.line) {
            Some(view) => view.problems.push(row.reason.clone()),
            None => views.push(RowView {
                line: row.line,
                user: row.user.clone(),
                role: String::new(),
                group: String::new(),
                permissions: String::new(),
                problems: vec![row.reason.clone()],
            }),
        }
    }
    views.sort_by_key(|v| v.line);
    Ok((read, views))
}

/// `POST /users/import`: a preview of every row; with `apply=yes` and no problem,
/// the import (all rows or none).
pub async fn import_users(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
    body: Bytes,
) -> Response {
    let fields = fields_of(&body);
    let csv = fields
        .iter()
        .find(|(k, _)| k == "csv")
        .map(|(_, v)| v.replace("\r\n", "\n"))
        .unwrap_or_default();
    let apply = field(&fields, "apply") == "yes";
    let choices = choices(&state);
    let text = csv.clone();
    let checked = blocking(&state.store, move |store| preview(store, &text, &choices)).await;
    let (read, views) = match checked {
        Ok(checked) => checked,
        Err(why) => return back(Err(format!("the file cannot be read: {why}")), "/users"),
    };
    let problems = views.iter().filter(|v| !v.problems.is_empty()).count();
    if apply && problems == 0 {
        let actor = session.user.clone();
        let done = blocking(&state.store, move |store| apply_import(store, read, &actor)).await;
        return back(done, "/users");
    }
    layout(
        "Import preview",
        Some(&session),
        html! {
            @if problems > 0 {
                p.bad role="alert" { (problems) " of " (views.len()) " rows have a problem; nothing will be imported until the file is corrected." }
            } @else {
                p.ok { "All " (views.len()) " rows can be imported. Nothing has changed yet." }
            }
            table #import-preview {
                tr { th { "Line" } th { "Log-in" } th { "Role" } th { "Group" } th { "May" } th { "Check" } }
                @for view in &views {
                    tr {
                        td { (view.line) } td { (view.user) } td { (view.role) } td { (view.group) } td { (view.permissions) }
                        td class=(if view.problems.is_empty() { "ok" } else { "bad" }) {
                            @if view.problems.is_empty() { "ready" } @else { (view.problems.join("; ")) }
                        }
                    }
                }
            }
            @if problems == 0 && !views.is_empty() {
                form method="post" action="/users/import" {
                    input type="hidden" name="csrf" value=(session.csrf);
                    input type="hidden" name="csv" value=(csv);
                    input type="hidden" name="apply" value="yes";
                    button type="submit" { "Import " (views.len()) " accounts" }
                }
            }
            p { a href="/users" { "Back to the accounts" } }
        },
    )
    .into_response()
}

/// Hashes the file's passwords and imports every row, audited.
fn apply_import(
    store: &Store,
    mut read: safegate_control::users_file::ReadFile,
    actor: &str,
) -> Result<String, String> {
    let plain: Vec<(usize, String)> = read
        .passwords
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.clone().map(|p| (i, p)))
        .collect();
    let texts: Vec<&str> = plain.iter().map(|(_, p)| p.as_str()).collect();
    let hashes = safegate_control::users_file::hash_all(&texts, &mut std::io::sink())
        .map_err(|e| e.to_string())?;
    for ((i, _), hash) in plain.iter().zip(hashes) {
        if let Some(row) = read.rows.get_mut(*i) {
            row.password_hash = Some(hash);
        }
    }
    let report = store.import_users(&read.rows).map_err(|e| e.to_string())?;
    let names: Vec<&str> = read.rows.iter().map(|r| r.name.as_str()).collect();
    audit(
        store,
        actor,
        "import",
        format!("imported {} accounts: {}", report.added, names.join(", ")),
    )?;
    store.flush_blocking().map_err(|e| e.to_string())?;
    Ok(format!("Imported {} accounts", report.added))
}
