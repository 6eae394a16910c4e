//! The teachers' page (permission `teach`): for the groups the policy assigns to
//! them (`[groups.NAME] teachers`), unblock a site or a category, or keep the group
//! on a few sites (focus), for at most `[teaching] max_minutes` (default a lesson).
//! Each is a temporary unblock in the policy: checked, audited with who and why,
//! shown on the filter admins' rules page, over by itself at its end, and endable
//! early here (by the teacher who made it) or on the rules page.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use jiff::Timestamp;
use maud::{Markup, html};
use serde::Deserialize;
use toml_edit::{DocumentMut, Item};

use crate::ui::choices::Choices;
use crate::ui::pages::{layout, url_encode};
use crate::ui::policy_edit::{Edit, NewUnblock, Scope};
use crate::ui::rules::apply_change;
use crate::ui::{Session, WebState, refusal, site_words};

/// `?done=` / `?error=`.
#[derive(Debug, Default, Deserialize)]
pub struct TeachQuery {
    done: Option<String>,
    error: Option<String>,
}

/// The groups `user` teaches: name, role, description.
fn taught(state: &WebState, user: &str) -> Vec<(String, String, String)> {
    state.policy.as_ref().map_or_else(Vec::new, |policy| {
        policy
            .live
            .load()
            .groups()
            .iter()
            .filter(|g| g.teachers.iter().any(|t| t == user))
            .map(|g| {
                (
                    g.name.clone(),
                    g.role.as_str().to_owned(),
                    g.description.clone(),
                )
            })
            .collect()
    })
}

/// This teacher's unblocks and focus sessions in the file: id and what they say.
fn own_changes(document: &DocumentMut, user: &str) -> Vec<(String, String)> {
    let Some(unblocks) = document.get("unblocks").and_then(Item::as_array_of_tables) else {
        return Vec::new();
    };
    unblocks
        .iter()
        .filter(|t| t.get("granted_by").and_then(Item::as_str) == Some(user))
        .filter_map(|t| {
            let id = t.get("id").and_then(Item::as_str)?.to_owned();
            let text = |key: &str| t.get(key).and_then(Item::as_str).unwrap_or("").to_owned();
            let focus: Vec<&str> = t
                .get("focus")
                .and_then(Item::as_array)
                .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            let what = if focus.is_empty() {
                format!("{}{} unblocked", text("site"), text("category"))
            } else {
                format!("focus on {}", focus.join(", "))
            };
            Some((
                id,
                format!("{} for {} until {}", what, text("group"), text("until")),
            ))
        })
        .collect()
}

/// `GET /teach`.
pub async fn teach_page(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
    Query(query): Query<TeachQuery>,
) -> Response {
    let Some(policy) = state.policy.as_ref() else {
        return refusal(
            false,
            StatusCode::SERVICE_UNAVAILABLE,
            "the policy cannot be changed here",
        );
    };
    let (document, version) = match policy.file.read() {
        Ok((text, version)) => (text.parse::<DocumentMut>().unwrap_or_default(), version),
        Err(err) => return refusal(false, StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
    };
    let snapshot = policy.live.load_full();
    let teaching = snapshot.teaching();
    let choices = Choices::of(&snapshot);
    let groups = taught(&state, &session.user);
    let own = own_changes(&document, &session.user);
    layout(
        "Teaching",
        Some(&session),
        html! {
            @if let Some(done) = &query.done { p.ok { (done) } }
            @if let Some(error) = &query.error { p.bad role="alert" { (error) } }
            @if groups.is_empty() {
                p { "No group is assigned to you yet: a filter admin adds you as a teacher of a group on the groups page." }
            } @else {
                p { "For your groups, for up to " (teaching.max_minutes) " minutes. It ends by itself; the filter admins see it on their rules page." }
                h2 { "Unblock a site or category" }
                form method="post" action="/teach/unblock" {
                    input type="hidden" name="csrf" value=(session.csrf);
                    input type="hidden" name="version" value=(version);
                    (group_select(&groups))
                    label { "Site " input name="site" placeholder="example.com"; }
                    label { "or category " select name="category" { (choices.category_options("", Some("(a site, not a category)"))) } }
                    (minutes_input(teaching))
                    label { "Why " input name="reason" required placeholder="art lesson: mood boards"; }
                    button type="submit" { "Unblock" }
                }
                h2 { "Focus: only these sites" }
                form method="post" action="/teach/focus" {
                    input type="hidden" name="csrf" value=(session.csrf);
                    input type="hidden" name="version" value=(version);
                    (group_select(&groups))
                    label { "Sites, one per line " textarea name="sites" rows="4" cols="40" required {} }
                    (minutes_input(teaching))
                    label { "Why " input name="reason" required placeholder="times tables test"; }
                    button type="submit" { "Start focus" }
                }
            }
            h2 { "Yours now" }
            @if own.is_empty() { p { "Nothing." } }
            ul {
                @for (id, what) in &own {
                    li {
                        (what) " "
                        form method="post" action="/teach/end" style="display:inline" {
                            input type="hidden" name="csrf" value=(session.csrf);
                            input type="hidden" name="version" value=(version);
                            input type="hidden" name="id" value=(id);
                            button type="submit" { "End now" }
                        }
                    }
                }
            }
        },
    )
    .into_response()
}

fn group_select(groups: &[(String, String, String)]) -> Markup {
    html! {
        label { "Group "
            select name="group" {
                @for (name, _, description) in groups {
                    option value=(name) { (name) @if !description.is_empty() { " (" (description) ")" } }
                }
            }
        }
    }
}

fn minutes_input(teaching: safegate_policy::Teaching) -> Markup {
    html! {
        label { "Minutes " input name="minutes" type="number" min="1" max=(teaching.max_minutes) value=(teaching.lesson_minutes); }
    }
}

fn field(body: &[u8], name: &str) -> String {
    crate::ui::form_field(body, name)
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn back(result: Result<String, String>) -> Response {
    let (key, text) = match result {
        Ok(text) => ("done", text),
        Err(text) => ("error", text),
    };
    Redirect::to(&format!("/teach?{key}={}", url_encode(&text))).into_response()
}

/// The group, times and reason of a teacher's form, checked.
fn lesson(
    state: &WebState,
    session: &Session,
    body: &[u8],
) -> Result<(Scope, String, String, String), String> {
    let group = field(body, "group");
    let Some((_, role, _)) = taught(state, &session.user)
        .into_iter()
        .find(|(g, _, _)| *g == group)
    else {
        return Err(format!("you are not a teacher of `{group}`"));
    };
    let policy = state
        .policy
        .as_ref()
        .ok_or("the policy cannot be changed here")?;
    let snapshot = policy.live.load();
    let max = snapshot.teaching().max_minutes;
    let minutes: u32 = field(body, "minutes")
        .parse()
        .ok()
        .filter(|m| (1..=max).contains(m))
        .ok_or(format!("a lesson change lasts 1 to {max} minutes"))?;
    let reason = field(body, "reason");
    if reason.is_empty() {
        return Err("say why (the filter admins see it)".to_owned());
    }
    let now = Timestamp::now().to_zoned_datetime(snapshot.timezone().clone());
    let until = now
        .checked_add(jiff::SignedDuration::from_mins(i64::from(minutes)))
        .map_err(|_| "that is too long".to_owned())?;
    Ok((
        Scope::Group(role, group),
        now.strftime("%Y-%m-%d %H:%M").to_string(),
        until.strftime("%Y-%m-%d %H:%M").to_string(),
        reason,
    ))
}

async fn make(state: &WebState, session: &Session, body: &[u8], unblock: NewUnblock) -> Response {
    let why = Some(format!("teacher: {}", unblock.reason));
    let summary = Edit::AddUnblock(unblock.clone()).summary();
    let version = field(body, "version");
    match apply_change(state, session, version, Edit::AddUnblock(unblock), why).await {
        Ok(_) => back(Ok(format!("Done: {summary}"))),
        Err(err) => back(Err(err.to_string())),
    }
}

/// `POST /teach/unblock`.
pub async fn teach_unblock(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
    body: Bytes,
) -> Response {
    let (scope, from, until, reason) = match lesson(&state, &session, &body) {
        Ok(parts) => parts,
        Err(why) => return back(Err(why)),
    };
    let site = Some(field(&body, "site")).filter(|s| !s.is_empty());
    let category = Some(field(&body, "category")).filter(|c| !c.is_empty());
    let site = match site.map(|s| site_words::check_site(&s)).transpose() {
        Ok(site) => site,
        Err(why) => return back(Err(why)),
    };
    if site.is_some() == category.is_some() {
        return back(Err(
            "give a site or choose a category (one of them)".to_owned()
        ));
    }
    let unblock = NewUnblock {
        site,
        category,
        focus: Vec::new(),
        scope,
        user: None,
        from,
        until,
        reason,
        granted_by: session.user.clone(),
    };
    make(&state, &session, &body, unblock).await
}

/// `POST /teach/focus`.
pub async fn teach_focus(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
    body: Bytes,
) -> Response {
    let (scope, from, until, reason) = match lesson(&state, &session, &body) {
        Ok(parts) => parts,
        Err(why) => return back(Err(why)),
    };
    let sites = match site_words::check_lines(&field(&body, "sites")) {
        Ok(sites) if !sites.is_empty() => sites,
        Ok(_) => return back(Err("list at least one site".to_owned())),
        Err(why) => return back(Err(why)),
    };
    let unblock = NewUnblock {
        site: None,
        category: None,
        focus: sites,
        scope,
        user: None,
        from,
        until,
        reason,
        granted_by: session.user.clone(),
    };
    make(&state, &session, &body, unblock).await
}

/// `POST /teach/end`: ends one of this teacher's own changes early.
pub async fn teach_end(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
    body: Bytes,
) -> Response {
    let id = field(&body, "id");
    let Some(policy) = state.policy.as_ref() else {
        return back(Err("the policy cannot be changed here".to_owned()));
    };
    let own = policy
        .file
        .read()
        .ok()
        .and_then(|(text, _)| text.parse::<DocumentMut>().ok())
        .is_some_and(|document| {
            own_changes(&document, &session.user)
                .iter()
                .any(|(i, _)| *i == id)
        });
    if !own {
        return back(Err("that is not one of your changes".to_owned()));
    }
    let why = Some("ended early by the teacher".to_owned());
    match apply_change(
        &state,
        &session,
        field(&body, "version"),
        Edit::RemoveUnblock(id),
        why,
    )
    .await
    {
        Ok(_) => back(Ok("Ended.".to_owned())),
        Err(err) => back(Err(err.to_string())),
    }
}
