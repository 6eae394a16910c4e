//! One alert as a printable safeguarding concern record: a self-contained HTML page
//! (no scripts, no external files, styles inline) that prints on one or two A4 pages,
//! for the school's own safeguarding system (CPOMS, MyConcern or a paper file). It
//! says who, on which computer, when, what happened, the evidence, and the actions
//! and notes recorded so far, and leaves room for the next steps in writing.
//!
//! The evidence table shows at most [`EVIDENCE_ROWS`] records (the earliest ones, with
//! a line saying how many more SafeGate holds), so the record stays within two pages
//! whatever the alert folded. Every value from the store is escaped.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use html_escape::encode_text;
use jiff::tz::TimeZone;
use safegate_store::{Alert, AlertKind, Outcome, Record};

use crate::local_text;

/// Evidence records shown on the record.
pub const EVIDENCE_ROWS: usize = 20;
/// Characters of an evidence address or search shown (a tracking URL can be
/// kilobytes long; SafeGate keeps it whole).
pub const EVIDENCE_CHARS: usize = 160;

/// What the record says beyond the alert.
#[derive(Debug, Clone)]
pub struct ConcernContext<'a> {
    /// The school's name, if the policy gives one.
    pub school: Option<&'a str>,
    /// The school's time zone (times are school time).
    pub timezone: &'a TimeZone,
    /// Who exported it (a web account or the login name at the command line).
    pub exported_by: &'a str,
    /// When, Unix microseconds.
    pub exported_at_unix_micros: u64,
    /// A link back to the alert, shown on screen only (the web interface's
    /// `/alerts/{id}`; none in a file).
    pub back_link: Option<&'a str>,
}

const STYLE: &str = r#"
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5em auto; max-width: 48em; color: #1b1b1b; font-size: 11pt; }
h1 { font-size: 1.4em; margin: 0 0 0.2em; }
h2 { font-size: 1.05em; margin: 1.1em 0 0.3em; border-bottom: 2px solid #2b5797; padding-bottom: 0.1em; }
.confidential { font-weight: bold; color: #a4000f; letter-spacing: 0.03em; }
table { border-collapse: collapse; width: 100%; font-size: 0.92em; }
th, td { border: 1px solid #c8c8c8; padding: 0.2em 0.4em; text-align: left; vertical-align: top; }
table.facts th { width: 10.5em; background: #eef2f8; }
.screen { background: #eef2f8; padding: 0.4em 0.6em; border-radius: 4px; }
thead th { background: #eef2f8; }
table.evidence { table-layout: fixed; }
table.evidence th:nth-child(1) { width: 6.5em; }
table.evidence th:nth-child(2) { width: 6.5em; }
table.evidence th:nth-child(4) { width: 26%; }
table.evidence th:nth-child(5) { width: 4.5em; }
td.search { overflow-wrap: anywhere; }
.term { font-family: ui-monospace, Menlo, Consolas, monospace; word-break: break-all; }
.note { color: #555; font-size: 0.88em; }
.high { color: #a4000f; font-weight: bold; }
.write { border: 1px solid #c8c8c8; height: 5.5em; margin-bottom: 0.4em; padding: 0.2em 0.4em; color: #555; font-size: 0.85em; }
@page { size: A4; margin: 1.4cm; }
@media print {
  .screen { display: none; }
  body { margin: 0; max-width: none; font-size: 9.5pt; }
  tr, .write { page-break-inside: avoid; }
  h2 { page-break-after: avoid; }
  table.facts th, thead th { background: none; }
}
"#;

fn esc(text: &str) -> std::borrow::Cow<'_, str> {
    encode_text(text)
}

/// The kind of alert in words.
pub fn kind_words(kind: AlertKind) -> &'static str {
    match kind {
        AlertKind::SafeguardingPhrase => "Worrying words in a search or web address",
        AlertKind::RepeatedBlocks => "Many blocked attempts in a short time",
        AlertKind::Circumvention => "Trying to get round the filter (VPN, proxy or similar)",
        AlertKind::LockedCategory => "Attempt to reach illegal content",
        AlertKind::ConcurrentLogin => "The same log-in on two computers at once",
        AlertKind::HeavyUse => "Far more use than usual",
        AlertKind::StaffSocialCoreHours => "Staff social media in core hours",
    }
}

/// The computers of the evidence, busiest first, as `ICT-PC07 (10.0.3.57): n records`
/// (the address alone when the record names no computer).
fn computers(evidence: &[Record]) -> Vec<String> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for record in evidence {
        *counts.entry(record.computer_text()).or_default() += 1;
    }
    let mut rows: Vec<(String, usize)> = counts.into_iter().collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rows.into_iter()
        .map(|(computer, n)| {
            format!(
                "{computer}: {n} {}",
                if n == 1 { "record" } else { "records" }
            )
        })
        .collect()
}

/// `Wednesday 18 November 2026, 13:05` in school time.
fn long_time(micros: u64, tz: &TimeZone) -> String {
    jiff::Timestamp::from_microsecond(i64::try_from(micros).unwrap_or(i64::MAX))
        .map(|ts| {
            tz.to_datetime(ts)
                .strftime("%A %-d %B %Y, %H:%M")
                .to_string()
        })
        .unwrap_or_default()
}

fn outcome_words(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Allowed => "allowed",
        Outcome::Blocked => "blocked",
        Outcome::Failed => "did not load",
    }
}

/// Renders `alert` as a concern record.
pub fn render(alert: &Alert, context: &ConcernContext<'_>) -> String {
    let tz = context.timezone;
    let mut page = String::with_capacity(16 * 1024);
    let title = format!("Safeguarding concern record: alert {}", alert.id);
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n\
         <p class=\"confidential\">CONFIDENTIAL: SAFEGUARDING</p><h1>{}</h1>",
        esc(&title),
        esc(&title),
    );
    if let Some(back) = context.back_link {
        let _ = write!(
            page,
            "<p class=\"screen\"><a href=\"{}\">Back to the alert</a>. Print this page, or \
             save it as PDF from the print dialogue, for the school's safeguarding system.</p>",
            html_escape::encode_double_quoted_attribute(back)
        );
    }
    if let Some(school) = context.school {
        let _ = write!(page, "<p>{}</p>", esc(school));
    }
    facts(&mut page, alert, tz);
    evidence(&mut page, alert, tz);
    history(&mut page, alert, tz);
    page.push_str(
        "<h2>Next steps (to complete by hand or in the school's safeguarding system)</h2>\
         <div class=\"write\">Action taken, by whom and when:</div>\
         <div class=\"write\">Outcome and who was told (parents, social care, police):</div>",
    );
    let _ = writeln!(
        page,
        "<p class=\"note\">Exported from SafeGate on {} by {}. Times are school time ({}). \
         This record holds personal information: keep it with the school's safeguarding \
         records and destroy other copies.</p></body></html>",
        esc(&local_text(context.exported_at_unix_micros, tz)),
        esc(context.exported_by),
        esc(tz.iana_name().unwrap_or("UTC")),
    );
    page
}

/// Who, which computer, when, what.
fn facts(page: &mut String, alert: &Alert, tz: &TimeZone) {
    let row = |page: &mut String, label: &str, value: &str| {
        let _ = write!(
            page,
            "<tr><th>{}</th><td>{}</td></tr>",
            esc(label),
            esc(value)
        );
    };
    page.push_str("<h2>The concern</h2><table class=\"facts\">");
    let who = match &alert.group {
        Some(group) => format!("{} ({}, {group})", alert.who, alert.role),
        None => format!("{} ({})", alert.who, alert.role),
    };
    row(page, "Who", &who);
    // The computer the alert was raised for (named from [devices] when known), then
    // the addresses in its evidence.
    let raised_on = match (&alert.computer, alert.client) {
        (Some(name), Some(address)) => Some(format!("{name} ({address})")),
        (None, Some(address)) => Some(address.to_string()),
        (Some(name), None) => Some(name.clone()),
        (None, None) => None,
    };
    let computers = computers(&alert.evidence);
    let which = match (raised_on, computers.is_empty()) {
        (Some(on), true) => on,
        (Some(on), false) => format!("{on}; in the evidence: {}", computers.join(", ")),
        (None, false) => computers.join(", "),
        (None, true) => "not recorded".to_owned(),
    };
    row(page, "Which computer", &which);
    let when = if alert.occurrences > 1 {
        format!(
            "{} to {} ({} times)",
            long_time(alert.first_at_unix_micros, tz),
            long_time(alert.last_at_unix_micros, tz),
            alert.occurrences
        )
    } else {
        long_time(alert.first_at_unix_micros, tz)
    };
    row(page, "When", &when);
    row(page, "What", kind_words(alert.kind));
    if !alert.subject.is_empty() {
        row(page, "About", &alert.subject);
    }
    row(page, "Summary", &alert.summary);
    let _ = write!(
        page,
        "<tr><th>Seriousness</th><td class=\"{}\">{}</td></tr>",
        esc(alert.severity.as_str()),
        esc(alert.severity.as_str())
    );
    row(page, "Status now", alert.status.as_str());
    page.push_str("</table>\n");
}

/// The records that raised the alert, earliest first, at most [`EVIDENCE_ROWS`].
fn evidence(page: &mut String, alert: &Alert, tz: &TimeZone) {
    page.push_str("<h2>What happened (the records that raised the alert)</h2>");
    if alert.evidence.is_empty() {
        page.push_str("<p class=\"note\">No records are attached to this alert.</p>");
        return;
    }
    let mut records: Vec<&Record> = alert.evidence.iter().collect();
    records.sort_by_key(|r| r.at_unix_micros);
    page.push_str(
        "<table class=\"evidence\"><thead><tr><th>When</th><th>Computer</th><th>Site and address</th>\
         <th>Search</th><th>Result</th></tr></thead><tbody>",
    );
    for record in records.iter().take(EVIDENCE_ROWS) {
        let search = record
            .search
            .as_ref()
            .map(|s| format!("{} ({})", shorten(&s.terms), s.engine))
            .unwrap_or_default();
        let address = shorten(&format!(
            "{}{}",
            record.host,
            record.path.as_deref().unwrap_or("")
        ));
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td class=\"term\">{}</td><td class=\"search\">{}</td><td>{}</td></tr>",
            esc(&local_text(record.at_unix_micros, tz)),
            esc(&record.client.to_string()),
            esc(&address),
            esc(&search),
            outcome_words(record.outcome),
        );
    }
    page.push_str("</tbody></table>");
    if records.len() > EVIDENCE_ROWS {
        let _ = write!(
            page,
            "<p class=\"note\">{} more records are kept with alert {} in SafeGate.</p>",
            records.len() - EVIDENCE_ROWS,
            alert.id
        );
    }
}

/// `text` cut to [`EVIDENCE_CHARS`] characters, with `…` when cut.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(EVIDENCE_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// Every change of status with its note, oldest first.
fn history(page: &mut String, alert: &Alert, tz: &TimeZone) {
    page.push_str("<h2>Actions and notes so far</h2>");
    if alert.history.is_empty() {
        page.push_str("<p class=\"note\">None recorded yet.</p>");
        return;
    }
    page.push_str(
        "<table><thead><tr><th>When</th><th>Who</th><th>Status</th><th>Note</th></tr></thead><tbody>",
    );
    for change in &alert.history {
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&local_text(change.at_unix_micros, tz)),
            esc(&change.by),
            esc(change.status.as_str()),
            esc(change.note.as_deref().unwrap_or("")),
        );
    }
    page.push_str("</tbody></table>");
}

/// The file name of alert `id`'s record exported on `date` (`2026-11-18`).
pub fn file_name(id: u64, date: &str) -> String {
    format!("safegate-concern-alert-{id}-{date}.html")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::net::IpAddr;

    use safegate_store::{AlertStatus, IdentifiedBy, SearchTerms, SeenAs, Severity, StatusChange};

    use super::*;

    fn record(at: u64, terms: &str) -> Record {
        Record {
            at_unix_micros: at,
            user: Some("year6".into()),
            role: "pupil".into(),
            group: Some("year6".into()),
            client: IpAddr::from([10, 0, 3, 57]),
            identified_by: IdentifiedBy::ProxyAuth,
            method: "GET".into(),
            scheme: "https".into(),
            host: "www.google.com".into(),
            port: 443,
            path: Some("/search?q=<b>".into()),
            categories: vec![],
            outcome: Outcome::Allowed,
            rule: "default".into(),
            status: 200,
            bytes_up: 0,
            bytes_down: 10,
            duration_micros: 1,
            search: Some(SearchTerms {
                engine: "google".into(),
                terms: terms.into(),
            }),
            seen_as: SeenAs::Decrypted,
            user_agent: None,
            failure: None,
            computer: None,
            content: None,
        }
    }

    #[test]
    fn a_record_says_who_where_when_what_and_escapes_everything() {
        let at = 1_795_000_000_000_000;
        let evidence: Vec<Record> = (0..30)
            .map(|i| record(at + i * 1_000_000, "<script>alert(1)</script>"))
            .collect();
        let alert = Alert {
            id: 35,
            kind: AlertKind::SafeguardingPhrase,
            severity: Severity::High,
            who: "year6".into(),
            user: Some("year6".into()),
            role: "pupil".into(),
            group: Some("year6".into()),
            subject: "self-harm".into(),
            summary: "</td><h1>summary</h1>".into(),
            first_at_unix_micros: at,
            last_at_unix_micros: at + 29_000_000,
            occurrences: 30,
            evidence,
            client: Some("10.0.3.57".parse().unwrap()),
            computer: Some("ICT-<b>PC07".into()),
            status: AlertStatus::Acknowledged,
            history: vec![StatusChange {
                status: AlertStatus::Acknowledged,
                by: "head".into(),
                at_unix_micros: at + 60_000_000,
                note: Some("spoke to <i>the class teacher</i>".into()),
            }],
        };
        let london = TimeZone::get("Europe/London").unwrap();
        let html = render(
            &alert,
            &ConcernContext {
                school: Some("St Mary's <Primary>"),
                timezone: &london,
                exported_by: "head",
                exported_at_unix_micros: at + 120_000_000,
                back_link: Some("/alerts/35"),
            },
        );
        assert!(html.contains("10.0.3.57: 30 records"), "{html}");
        assert!(
            html.contains("ICT-&lt;b&gt;PC07 (10.0.3.57); in the evidence"),
            "{html}"
        );
        assert!(html.contains("<a href=\"/alerts/35\">Back to the alert</a>"));
        assert!(
            html.contains(
                "Wednesday 18 November 2026, 11:06 to Wednesday 18 November 2026, 11:07 (30 times)"
            ),
            "{html}"
        );
        assert!(html.contains("Worrying words in a search"));
        assert!(html.contains("St Mary's &lt;Primary&gt;"));
        assert!(html.contains("spoke to &lt;i&gt;the class teacher&lt;/i&gt;"));
        assert!(html.contains("&lt;/td&gt;&lt;h1&gt;summary"));
        assert!(!html.contains("<script") && !html.contains("<i>") && !html.contains("<b>"));
        assert!(html.contains("10 more records are kept with alert 35"));
        assert_eq!(html.matches("<tr><td>").count(), EVIDENCE_ROWS + 1);
        assert_eq!(
            file_name(35, "2026-11-18"),
            "safegate-concern-alert-35-2026-11-18.html"
        );
    }
}
