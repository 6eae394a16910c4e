//! The groups page (`rules` permission): every group of people (`[groups.NAME]`:
//! year groups, classes) with its role, description, computers' address ranges,
//! teachers and how many accounts are in it; forms to add, change and remove one.
//! Roles and teachers are chosen from drop-downs; what is typed is checked in words
//! before the policy edit (checked, audited, written) is made, and a refused form is
//! shown again as it was typed.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use safegate_store::{Permission, User};
use serde::Deserialize;

use crate::ui::choices::{Retry, role_options};
use crate::ui::pages::{layout, url_encode};
use crate::ui::policy_edit::{Edit, EditError, GroupEdit};
use crate::ui::rules::{all_users, apply_change};
use crate::ui::{Session, WebState, refusal};

/// `?done=` / `?error=` after a change.
#[derive(Debug, Default, Deserialize)]
pub struct GroupsQuery {
    done: Option<String>,
    error: Option<String>,
}

/// `GET /rules/groups`.
pub async fn groups_page(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
    Query(query): Query<GroupsQuery>,
) -> Response {
    render(&state, &session, &query, None).await
}

async fn render(
    state: &WebState,
    session: &Session,
    query: &GroupsQuery,
    retry: Option<&Retry>,
) -> Response {
    let Some(policy) = state.policy.as_ref() else {
        return refusal(
            false,
            StatusCode::SERVICE_UNAVAILABLE,
            "the policy cannot be edited here",
        );
    };
    let (groups, version) = match policy.file.read() {
        Ok((text, version)) => (groups_in(&text), version),
        Err(err) => {
            return refusal(false, StatusCode::INTERNAL_SERVER_ERROR, &err.to_string());
        }
    };
    let users = all_users(state).await;
    let staff: Vec<&User> = users
        .iter()
        .filter(|u| u.role != "pupil" && !u.disabled)
        .collect();
    let page = layout(
        "Groups of people",
        Some(session),
        html! {
            @if let Some(done) = &query.done { p.ok { "Saved: " (done) ". The policy reloads in a moment." } }
            @if let Some(error) = &query.error { p.bad role="alert" { (error) } }
            @if let Some(retry) = retry { p.bad role="alert" { "Not saved: " (retry.problem) ". What you typed is still in the form." } }
            p { "A group (a year group or a class) says which role its members browse as. Accounts are put in a group on the accounts page or with " code { "safegate users" } "; computers in a group's address ranges count as the group while nobody has signed in on them. A group's own rules are on the " a href="/rules" { "rules page" } "." }
            table {
                tr { th { "Group" } th { "Role" } th { "Description" } th { "Computers (address ranges)" } th { "Teachers" } th { "Accounts" } th { "" } }
                @for group in &groups {
                    @let form = format!("group:{}", group.name);
                    @let members = users.iter().filter(|u| u.group.as_deref() == Some(group.name.as_str())).count();
                    tr {
                        td { (group.name) }
                        (group_cells(&GroupRow {
                            form: &form,
                            name: &group.name,
                            role: &group.role,
                            description: &group.description,
                            addresses: &group.addresses.join(", "),
                            teachers: &group.teachers,
                        }, &staff, &session.csrf, &version, retry))
                        td { (members) }
                        td {
                            form method="post" action="/rules/groups/remove" {
                                input type="hidden" name="csrf" value=(session.csrf);
                                input type="hidden" name="version" value=(version);
                                input type="hidden" name="name" value=(group.name);
                                button type="submit" aria-label=(format!("Remove {}", group.name)) { "Remove" }
                            }
                        }
                    }
                }
            }
            h2 { "Add a group" }
            (new_group_form(&staff, &session.csrf, &version, retry))
        },
    );
    let status = if retry.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    (status, page).into_response()
}

/// A group as the policy file has it now (the page shows what was just saved, before
/// the reload).
struct GroupInFile {
    name: String,
    role: String,
    description: String,
    addresses: Vec<String>,
    teachers: Vec<String>,
}

/// The groups of a policy text: `[groups.NAME]`, then those only under roles.
fn groups_in(text: &str) -> Vec<GroupInFile> {
    let Ok(table) = text.parse::<toml_edit::DocumentMut>() else {
        return Vec::new();
    };
    let strings = |item: Option<&toml_edit::Item>| -> Vec<String> {
        item.and_then(toml_edit::Item::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let text_of = |item: Option<&toml_edit::Item>| {
        item.and_then(toml_edit::Item::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let mut out: Vec<GroupInFile> = table
        .get("groups")
        .and_then(toml_edit::Item::as_table)
        .map(|groups| {
            groups
                .iter()
                .map(|(name, item)| GroupInFile {
                    name: name.to_owned(),
                    role: text_of(item.get("role")),
                    description: text_of(item.get("description")),
                    addresses: strings(item.get("addresses")),
                    teachers: strings(item.get("teachers")),
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some(roles) = table.get("roles").and_then(toml_edit::Item::as_table) {
        for (role, item) in roles.iter() {
            let Some(under) = item.get("groups").and_then(toml_edit::Item::as_table) else {
                continue;
            };
            for (name, _) in under.iter() {
                if !out.iter().any(|g| g.name == name) {
                    out.push(GroupInFile {
                        name: name.to_owned(),
                        role: role.to_owned(),
                        description: String::new(),
                        addresses: Vec::new(),
                        teachers: Vec::new(),
                    });
                }
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// A group's editable fields, as shown.
struct GroupRow<'a> {
    form: &'a str,
    name: &'a str,
    role: &'a str,
    description: &'a str,
    addresses: &'a str,
    teachers: &'a [String],
}

/// The cells of an existing group's row: one form (linked by `form=`) for its fields.
fn group_cells(
    row: &GroupRow<'_>,
    staff: &[&User],
    csrf: &str,
    version: &str,
    retry: Option<&Retry>,
) -> Markup {
    let id = format!("edit-{}", row.name);
    let typed = |field: &str, written: &str| {
        Retry::value(retry, row.form, field).map_or_else(|| written.to_owned(), str::to_owned)
    };
    let chosen: Vec<String> = Retry::value(retry, row.form, "teachers").map_or_else(
        || row.teachers.to_vec(),
        |t| t.split(',').map(str::to_owned).collect(),
    );
    html! {
        td { select form=(id) name="role" aria-label="role" { (role_options(&typed("role", row.role))) } }
        td { input form=(id) name="description" aria-label="description" value=(typed("description", row.description)); }
        td {
            input form=(id) name="addresses" aria-label="address ranges" placeholder="10.0.6.0/24" value=(typed("addresses", row.addresses));
            (Retry::problem_at(retry, row.form, "addresses"))
        }
        td {
            (teacher_select(&id, staff, &chosen))
            (Retry::problem_at(retry, row.form, "teachers"))
        }
        td {
            form id=(id) method="post" action="/rules/groups" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="version" value=(version);
                input type="hidden" name="name" value=(row.name);
                button type="submit" aria-label=(format!("Save {}", row.name)) { "Save" }
            }
        }
    }
}

fn teacher_select(form: &str, staff: &[&User], chosen: &[String]) -> Markup {
    html! {
        select form=(form) name="teachers" multiple size="3" aria-label="teachers" {
            @for user in staff {
                option value=(user.name) selected[chosen.contains(&user.name)] {
                    (user.display_name.as_deref().unwrap_or(&user.name))
                    @if user.permissions.contains(&Permission::Teach) { " (teaches)" }
                }
            }
        }
    }
}

fn new_group_form(staff: &[&User], csrf: &str, version: &str, retry: Option<&Retry>) -> Markup {
    let typed = |field: &str| Retry::value(retry, "group:new", field).unwrap_or("");
    let chosen: Vec<String> = typed("teachers")
        .split(',')
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    html! {
        form id="new-group" method="post" action="/rules/groups" {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="version" value=(version);
            input type="hidden" name="new" value="yes";
            label { "Name " input name="name" required value=(typed("name")) placeholder="year6"; }
            (Retry::problem_at(retry, "group:new", "name"))
            label { "Role " select name="role" { (role_options(if typed("role").is_empty() { "pupil" } else { typed("role") })) } }
            label { "Description " input name="description" value=(typed("description")) placeholder="Year 6"; }
            label { "Computers (address ranges, optional) " input name="addresses" value=(typed("addresses")) placeholder="10.0.6.0/24, 10.0.7.12"; }
            (Retry::problem_at(retry, "group:new", "addresses"))
            label { "Teachers " (teacher_select("new-group", staff, &chosen)) }
            (Retry::problem_at(retry, "group:new", "teachers"))
            button type="submit" { "Add the group" }
        }
    }
}

/// The group form's fields (teachers may repeat).
fn parse_form(body: &[u8]) -> BTreeMap<String, Vec<String>> {
    let mut fields: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, value) in form_urlencoded::parse(body) {
        fields
            .entry(key.into_owned())
            .or_default()
            .push(value.into_owned());
    }
    fields
}

fn first(fields: &BTreeMap<String, Vec<String>>, key: &str) -> String {
    fields
        .get(key)
        .and_then(|values| values.first())
        .cloned()
        .unwrap_or_default()
}

/// The group a form asks for, or the field at fault and why.
fn group_of(
    fields: &BTreeMap<String, Vec<String>>,
    users: &[User],
) -> Result<GroupEdit, (&'static str, String)> {
    let name = first(fields, "name").trim().to_owned();
    let name_ok = !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !name_ok {
        return Err((
            "name",
            format!(
                "`{name}` cannot be a group's name: use letters, digits, - and _ (such as year6)"
            ),
        ));
    }
    if name.parse::<safegate_policy::Role>().is_ok() {
        return Err((
            "name",
            format!("`{name}` is a role's name; give the group its own"),
        ));
    }
    let role = first(fields, "role");
    if role.parse::<safegate_policy::Role>().is_err() {
        return Err(("role", "choose a role from the list".to_owned()));
    }
    let mut addresses = Vec::new();
    for text in first(fields, "addresses").split([',', '\n', ' ']) {
        if text.trim().is_empty() {
            continue;
        }
        let net = safegate_policy::parse_range(text).map_err(|why| ("addresses", why))?;
        addresses.push(net.to_string());
    }
    let teachers = fields.get("teachers").cloned().unwrap_or_default();
    if let Some(unknown) = teachers
        .iter()
        .find(|t| !users.iter().any(|u| &u.name == *t))
    {
        return Err(("teachers", format!("there is no account `{unknown}`")));
    }
    Ok(GroupEdit {
        name,
        role,
        description: first(fields, "description"),
        addresses,
        teachers,
    })
}

/// `POST /rules/groups`: adds or changes a group.
pub async fn group_form(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
    body: Bytes,
) -> Response {
    let fields = parse_form(&body);
    let form_name = if first(&fields, "new") == "yes" {
        "group:new".to_owned()
    } else {
        format!("group:{}", first(&fields, "name"))
    };
    let typed: Vec<(&str, String)> = ["name", "role", "description", "addresses"]
        .into_iter()
        .map(|key| (key, first(&fields, key)))
        .chain(std::iter::once((
            "teachers",
            fields
                .get("teachers")
                .map(|t| t.join(","))
                .unwrap_or_default(),
        )))
        .collect();
    let users = all_users(&state).await;
    let group = match group_of(&fields, &users) {
        Ok(group) => group,
        Err((field, problem)) => {
            let retry = Retry::new(&form_name, &typed, field, problem);
            return render(&state, &session, &GroupsQuery::default(), Some(&retry)).await;
        }
    };
    let exists = state
        .policy
        .as_ref()
        .and_then(|p| p.file.read().ok())
        .is_some_and(|(text, _)| groups_in(&text).iter().any(|g| g.name == group.name));
    if form_name == "group:new" && exists {
        let problem = format!("there is a group `{}` already", group.name);
        let retry = Retry::new(&form_name, &typed, "name", problem);
        return render(&state, &session, &GroupsQuery::default(), Some(&retry)).await;
    }
    let version = first(&fields, "version");
    match apply_change(
        &state,
        &session,
        version,
        Edit::SetGroup(group.clone()),
        None,
    )
    .await
    {
        Ok(_) => done(&format!("group {} ({})", group.name, group.role)),
        Err(err @ EditError::Stale) => failed(&err.to_string()),
        Err(err) => {
            let retry = Retry::new(&form_name, &typed, "", err.to_string());
            render(&state, &session, &GroupsQuery::default(), Some(&retry)).await
        }
    }
}

/// `POST /rules/groups/remove`.
pub async fn remove_group_form(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
    body: Bytes,
) -> Response {
    let fields = parse_form(&body);
    let name = first(&fields, "name");
    let members = all_users(&state)
        .await
        .iter()
        .filter(|u| u.group.as_deref() == Some(name.as_str()))
        .count();
    if members > 0 {
        return failed(&format!(
            "{name} still has {members} account(s) in it: move them to another group first"
        ));
    }
    let version = first(&fields, "version");
    match apply_change(
        &state,
        &session,
        version,
        Edit::RemoveGroup(name.clone()),
        None,
    )
    .await
    {
        Ok(_) => done(&format!("removed group {name}")),
        Err(err) => failed(&err.to_string()),
    }
}

fn done(message: &str) -> Response {
    Redirect::to(&format!("/rules/groups?done={}", url_encode(message))).into_response()
}

fn failed(message: &str) -> Response {
    Redirect::to(&format!("/rules/groups?error={}", url_encode(message))).into_response()
}
