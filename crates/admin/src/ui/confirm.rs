//! The confirmation step for changes with a wide effect: a change that widens access
//! for a whole role (or everyone), or blocks a category for staff, is not made on the
//! first click. The page says what it will do in words ("allows pinterest.com for all
//! 310 pupils until removed") and sends the same form again with `confirmed=yes`;
//! "Cancel" goes back without changing anything. Works without JavaScript.

use maud::html;
use safegate_store::User;

use crate::ui::Session;
use crate::ui::choices::scope_in_words;
use crate::ui::pages::layout;
use crate::ui::policy_edit::{Edit, Scope};

/// Whether a form says it was confirmed.
pub fn is_confirmed(value: Option<&str>) -> bool {
    value == Some("yes")
}

/// What `edit` would do in words, when it is wide enough to need a confirmation:
/// `None` for a change that needs none. `duration` says how long it lasts ("for 30
/// minutes", "until removed").
pub fn effect(edit: &Edit, users: &[User], duration: &str) -> Option<String> {
    match edit {
        Edit::SetBlocked {
            scope: scope @ Scope::Role(role),
            category,
            blocked,
            windows,
        } => {
            let who = scope_in_words(users, scope);
            if !*blocked {
                Some(format!(
                    "allows every site in {category} for {who} until someone blocks it again"
                ))
            } else if role == "staff" {
                let when = if windows.is_empty() {
                    "always".to_owned()
                } else {
                    format!("in {}", windows.join(", "))
                };
                Some(format!("blocks {category} for {who}, {when}"))
            } else {
                None
            }
        }
        Edit::AddUnblock(unblock)
            if unblock.user.is_none() && !matches!(unblock.scope, Scope::Group(..)) =>
        {
            let what = match (&unblock.site, &unblock.category) {
                (Some(site), _) => site.clone(),
                (None, Some(category)) => format!("every site in {category}"),
                (None, None) => return None,
            };
            Some(format!(
                "allows {what} for {} {duration}",
                scope_in_words(users, &unblock.scope)
            ))
        }
        Edit::SetList {
            scope: scope @ (Scope::Global | Scope::Role(_)),
            deny: false,
            entries,
        } if !entries.is_empty() => Some(format!(
            "allows {} for {} {duration}",
            entries.join(", "),
            scope_in_words(users, scope)
        )),
        Edit::AddListEntry {
            scope: scope @ (Scope::Global | Scope::Role(_)),
            deny: false,
            entry,
        } => Some(format!(
            "allows {entry} for {} {duration}",
            scope_in_words(users, scope)
        )),
        _ => None,
    }
}

/// The confirmation page: the effect, and the form sent again with `confirmed=yes`.
pub fn page(
    session: &Session,
    action: &str,
    back: &str,
    effect: &str,
    fields: &[(&str, String)],
) -> maud::Markup {
    layout(
        "Please confirm",
        Some(session),
        html! {
            p.bad role="alert" { "This change " strong { (effect) } "." }
            form id="confirm" method="post" action=(action) {
                input type="hidden" name="csrf" value=(session.csrf);
                @for (name, value) in fields {
                    input type="hidden" name=(name) value=(value);
                }
                input type="hidden" name="confirmed" value="yes";
                button type="submit" { "Yes, make this change" }
                " "
                a href=(back) { "Cancel" }
            }
        },
    )
}
