//! `GET /accounts` (permission `users`): who may use the admin pages, with what
//! permissions, and how many other accounts each role and group has. A school has
//! thousands of pupil accounts, so those are counted, not listed. Accounts are added,
//! changed and disabled with `safegate users` on the server.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::html;
use safegate_store::users::User;

use crate::ui::pages::layout;
use crate::ui::session::Session;
use crate::ui::{WebState, refusal};

/// `GET /accounts`.
pub async fn accounts_page(
    State(state): State<Arc<WebState>>,
    Extension(session): Extension<Session>,
) -> Response {
    let store = state.store.clone();
    let users = match tokio::task::spawn_blocking(move || store.list_users()).await {
        Ok(Ok(users)) => users,
        Ok(Err(error)) => {
            let said = format!("cannot read the accounts: {error}");
            return refusal(false, StatusCode::INTERNAL_SERVER_ERROR, &said);
        }
        Err(_) => {
            let said = "cannot read the accounts: the lookup stopped";
            return refusal(false, StatusCode::INTERNAL_SERVER_ERROR, said);
        }
    };
    let (admins, others): (Vec<&User>, Vec<&User>) =
        users.iter().partition(|user| !user.permissions.is_empty());
    let mut counts: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
    for user in others {
        let key = (user.role.clone(), user.group.clone().unwrap_or_default());
        let entry = counts.entry(key).or_default();
        if user.disabled {
            entry.1 += 1;
        } else {
            entry.0 += 1;
        }
    }
    layout(
        "Accounts",
        Some(&session),
        html! {
            p { "Add, change or disable accounts on the SafeGate server with "
                code { "safegate users" } " (for example "
                code { "sudo -u safegate safegate users add NAME --role staff --permissions reports" }
                "); every change is in the audit log." }
            h2 { "Who may use these pages" }
            table {
                tr { th { "Log-in" } th { "Name" } th { "Role" } th { "May" } th { "Status" } }
                @for user in &admins {
                    tr {
                        td { (user.name) }
                        td { (user.display_name.as_deref().unwrap_or("")) }
                        td { (user.role) }
                        td { (user.permissions.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ")) }
                        td { @if user.disabled { span.bad { "disabled" } } @else { "active" } }
                    }
                }
            }
            h2 { "Other accounts" }
            @if counts.is_empty() { p { "None yet." } } @else {
                table {
                    tr { th { "Role" } th { "Group" } th { "Active" } th { "Disabled" } }
                    @for ((role, group), (active, disabled)) in &counts {
                        tr { td { (role) } td { (group) } td { (active) } td { (disabled) } }
                    }
                }
            }
        },
    )
    .into_response()
}
