//! End-to-end tests of SafeGate's forward proxy: the built binary, a real origin on
//! 127.0.0.1, and real clients (reqwest, curl, raw sockets for bad input).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../kit/mod.rs"]
mod kit;

mod admin_ui;
mod admin_workflows;
mod alerts;
mod audit;
mod auth;
mod central_policy;
mod cli;
mod content;
mod content_differential;
mod directory;
mod disk_full;
mod forward;
mod hostile;
mod https;
mod https_block_pages;
mod ip_hosts;
mod kerberos;
mod lifecycle;
mod limits;
mod list_feeds;
mod list_screening;
mod lists_import;
mod local_pages;
mod log_cli;
mod metrics;
mod nodes;
mod oidc_sign_in;
mod ops;
mod package;
mod policy;
mod portal;
mod report;
mod report_browser;
mod safety;
mod school_day;
mod setup;
mod transparent;
mod trust_content;
mod trust_export;
mod trust_export_tls;
mod tunnel;
mod upstream_failures;
mod users_cli;
mod visit_log;
mod ways_in;
