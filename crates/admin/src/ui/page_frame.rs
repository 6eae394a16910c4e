//! The frame of every admin page: the shared style sheet, the header with the
//! navigation the signed-in person may use (with how many review requests wait),
//! and the page's title; plus one-message pages and query-string encoding. Kept
//! apart from the handlers so that any page module can use it without importing
//! the others.

use axum::http::StatusCode;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use safegate_store::Permission;

use crate::ui::session::Session;

/// The style sheet every SafeGate page shares (the block page too).
const STYLE: &str = safegate_proxy::page_style::STYLE;

/// Percent-encodes a value for a query string.
pub fn url_encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// A page with the common layout; `session` adds the navigation and sign-out.
pub fn layout(title: &str, session: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · SafeGate" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    strong { "SafeGate" }
                    @if let Some(session) = session {
                        a href="/" { "Home" }
                        @if session.may(Permission::Rules) {
                            a href="/rules" { "Rules" }
                            @let waiting = crate::ui::waiting_reviews();
                            a href="/rules/reviews" {
                                "Review requests"
                                @if waiting > 0 { " (" (waiting) " waiting)" }
                            }
                        }
                        @if session.may(Permission::Reports) {
                            a href="/alerts" { "Alerts" }
                            a href="/reports" { "Reports" }
                            a href="/activity" { "Activity" }
                        }
                        @if session.may(Permission::Teach) { a href="/teach" { "Teaching" } }
                        @if session.may(Permission::Metrics) { a href="/health" { "Health" } }
                        @if session.may(Permission::Users) { a href="/users" { "Users" } a href="/accounts" { "Accounts" } }
                        @if session.may(Permission::Rules) || session.may(Permission::Reports) {
                            a href="/audit" { "Audit log" }
                        }
                        a href="/account/two-factor" { "Two-factor sign-in" }
                        form method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(session.csrf);
                            span { (session.shown_name()) " " }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A page with one message (errors, refusals).
pub fn message_page(status: StatusCode, message: &str) -> Markup {
    layout(
        status.canonical_reason().unwrap_or("SafeGate"),
        None,
        html! { p { (message) } p { a href="/" { "Home" } } },
    )
}
