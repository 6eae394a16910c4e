//! What a form may choose from, read from the live policy and the accounts: roles,
//! groups (each with its role), the categories that can be blocked (not locked ones,
//! not site groups), time windows and people. Every place a page asks for a role, a
//! group, a category or a person offers these as a drop-down rather than a text box,
//! so a misspelt name cannot reach the policy. Also the typed values of a refused
//! form ([`Retry`]), shown again with what is wrong.

use std::collections::BTreeMap;

use maud::{Markup, html};
use safegate_policy::{Role, Snapshot};
use safegate_store::User;

use crate::ui::policy_edit::Scope;

/// The names a form may choose from.
#[derive(Debug, Clone, Default)]
pub struct Choices {
    /// Groups: name, role, description.
    pub groups: Vec<(String, String, String)>,
    /// Categories that can be blocked or unblocked.
    pub categories: Vec<String>,
}

impl Choices {
    /// The choices of `snapshot`.
    pub fn of(snapshot: &Snapshot) -> Self {
        Self {
            groups: snapshot
                .groups()
                .iter()
                .map(|g| {
                    (
                        g.name.clone(),
                        g.role.as_str().to_owned(),
                        g.description.clone(),
                    )
                })
                .collect(),
            categories: snapshot
                .stats()
                .categories
                .iter()
                .filter(|c| !c.locked && !c.site_group)
                .map(|c| c.name.clone())
                .collect(),
        }
    }

    /// `<option>`s for "who": each role, then each group as `role/group`.
    pub fn scope_options(&self, selected: &str) -> Markup {
        html! {
            @for role in Role::ALL {
                option value=(role.as_str()) selected[selected == role.as_str()] { "all " (people(role.as_str())) }
            }
            @for (name, role, description) in &self.groups {
                @let value = format!("{role}/{name}");
                option value=(value) selected[selected == value || selected == name] {
                    (name) @if !description.is_empty() { " (" (description) ")" }
                }
            }
        }
    }

    /// `<option>`s of the groups alone (value: the group's name), with "none" first.
    pub fn group_options(&self, selected: &str, none: &str) -> Markup {
        html! {
            option value="" selected[selected.is_empty()] { (none) }
            @for (name, role, description) in &self.groups {
                option value=(name) selected[selected == name] {
                    (name) " (" (role) @if !description.is_empty() { ", " (description) } ")"
                }
            }
        }
    }

    /// `<option>`s of the categories, with `none` first when given.
    pub fn category_options(&self, selected: &str, none: Option<&str>) -> Markup {
        html! {
            @if let Some(none) = none { option value="" selected[selected.is_empty()] { (none) } }
            @for name in &self.categories {
                option value=(name) selected[selected == name] { (name) }
            }
        }
    }

    /// The role of group `name`.
    pub fn role_of(&self, group: &str) -> Option<&str> {
        self.groups
            .iter()
            .find(|(name, _, _)| name == group)
            .map(|(_, role, _)| role.as_str())
    }
}

/// `<option>`s of the roles.
pub fn role_options(selected: &str) -> Markup {
    html! {
        @for role in Role::ALL {
            option value=(role.as_str()) selected[selected == role.as_str()] { (role.as_str()) }
        }
    }
}

/// The people of a role in plain words ("pupils").
pub fn people(role: &str) -> &str {
    match role {
        "pupil" => "pupils",
        "filter-admin" => "filter admins",
        other => other,
    }
}

/// How many enabled accounts `scope` covers, and the scope in words ("all 310
/// pupils", "the 28 in year6", "everyone").
pub fn scope_in_words(users: &[User], scope: &Scope) -> String {
    let enabled = users.iter().filter(|u| !u.disabled);
    match scope {
        Scope::Global => format!("everyone ({} accounts)", enabled.count()),
        Scope::Role(role) => {
            let n = enabled.filter(|u| &u.role == role).count();
            format!("all {n} {}", people(role))
        }
        Scope::Group(_, group) => {
            let n = enabled
                .filter(|u| u.group.as_deref() == Some(group.as_str()))
                .count();
            format!("the {n} accounts in {group}")
        }
    }
}

/// A refused form's typed values, to show it again with what is wrong.
#[derive(Debug, Clone, Default)]
pub struct Retry {
    /// Which form (`unblock`, `list:pupil:allow`, `group:year6`, ...).
    pub form: String,
    /// What was typed, by field name.
    pub fields: BTreeMap<String, String>,
    /// The field at fault (empty: the form as a whole).
    pub field: String,
    /// What is wrong, in words.
    pub problem: String,
}

impl Retry {
    /// A retry of `form` with `fields`, refused because of `problem` in `field`.
    pub fn new(form: &str, fields: &[(&str, String)], field: &str, problem: String) -> Self {
        Self {
            form: form.to_owned(),
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            field: field.to_owned(),
            problem,
        }
    }

    /// What was typed in `field` of `form`, when this is a retry of that form.
    pub fn value<'a>(retry: Option<&'a Retry>, form: &str, field: &str) -> Option<&'a str> {
        retry
            .filter(|r| r.form == form)
            .and_then(|r| r.fields.get(field))
            .map(String::as_str)
    }

    /// The problem to show beside `field` of `form`.
    pub fn problem_at(retry: Option<&Retry>, form: &str, field: &str) -> Markup {
        html! {
            @if let Some(r) = retry.filter(|r| r.form == form && r.field == field) {
                span.bad.field-problem role="alert" { (r.problem) }
            }
        }
    }
}
