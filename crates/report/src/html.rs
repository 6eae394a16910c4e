//! The report as one self-contained HTML page for people: no scripts, no external
//! files (styles inline, charts as inline SVG), printable (a print style sheet keeps
//! tables together and drops the colours' backgrounds). Every value from the store is
//! escaped: a search term or URL is text, whatever it contains.

use std::fmt::Write as _;

use html_escape::encode_text;

use crate::WeeklyReport;

/// Rows of the searches table shown in HTML (flagged ones always come first; the CSV
/// and JSON files hold every search).
pub const HTML_SEARCH_ROWS: usize = 2000;

const STYLE: &str = r#"
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em; color: #1b1b1b; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 2px solid #2b5797; padding-bottom: 0.2em; }
h3 { font-size: 1em; margin-bottom: 0.3em; }
table { border-collapse: collapse; width: 100%; margin: 0.5em 0 1em; font-size: 0.88em; }
th, td { border: 1px solid #c8c8c8; padding: 0.25em 0.45em; text-align: left; vertical-align: top; }
th { background: #eef2f8; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.figures { display: flex; flex-wrap: wrap; gap: 0.8em; }
.figure { border: 1px solid #c8c8c8; border-radius: 6px; padding: 0.5em 0.9em; min-width: 8em; }
.figure b { display: block; font-size: 1.5em; }
.high { color: #a4000f; font-weight: bold; }
.medium { color: #9a5b00; font-weight: bold; }
.low { color: #3c5a00; }
tr.flagged td { background: #fff0f0; }
tr.background td { background: #f3f3f3; color: #444; font-style: italic; }
.note { color: #555; font-size: 0.85em; }
code, .term { font-family: ui-monospace, Menlo, Consolas, monospace; word-break: break-all; }
@media print {
  body { margin: 0.5cm; font-size: 10pt; }
  h2 { page-break-after: avoid; }
  tr, .figure, svg { page-break-inside: avoid; }
  tr.flagged td, tr.background td, th { background: none !important; }
}
"#;

fn esc(text: &str) -> std::borrow::Cow<'_, str> {
    encode_text(text)
}

/// Renders `report`.
pub fn render(report: &WeeklyReport) -> String {
    let mut page = String::with_capacity(64 * 1024);
    let title = format!(
        "{}SafeGate weekly sweep {} ({} to {})",
        report
            .school
            .as_deref()
            .map(|school| format!("{school}: "))
            .unwrap_or_default(),
        report.week,
        report.first_day,
        report.last_day
    );
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n",
        esc(&title)
    );
    let _ = writeln!(
        page,
        "<h1>{}</h1><p class=\"note\">Times are school time ({}). Made {}.{}</p>",
        esc(&title),
        esc(&report.timezone),
        esc(&report.generated_at),
        if report.pseudonymised {
            " People are shown as pseudonyms; the key stays with SafeGate."
        } else {
            " Confidential: for the designated safeguarding lead and the headteacher."
        }
    );
    summary(&mut page, report);
    alerts(&mut page, report);
    searches(&mut page, report);
    sites(&mut page, report);
    blocked(&mut page, report);
    circumvention(&mut page, report);
    staff(&mut page, report);
    uncategorised(&mut page, report);
    page.push_str("</body></html>\n");
    page
}

fn figure(page: &mut String, label: &str, value: u64) {
    let _ = write!(
        page,
        "<div class=\"figure\"><b>{value}</b>{}</div>",
        esc(label)
    );
}

fn summary(page: &mut String, report: &WeeklyReport) {
    let s = &report.summary;
    page.push_str("<h2 id=\"summary\">Summary</h2><div class=\"figures\">");
    figure(page, "requests", s.requests);
    figure(page, "people", s.people);
    figure(page, "blocked", s.blocked);
    figure(page, "searches", s.searches);
    figure(page, "flagged searches", s.flagged_searches);
    figure(page, "high alerts", s.alerts_high);
    figure(page, "medium alerts", s.alerts_medium);
    figure(page, "low alerts", s.alerts_low);
    figure(page, "circumvention attempts", s.circumvention_attempts);
    figure(page, "background requests", s.background_requests);
    let _ = write!(
        page,
        "<div class=\"figure\"><b>{}</b>to browsers</div>",
        esc(&safegate_store::plain_words::size_in_words(s.bytes_down))
    );
    page.push_str("</div>\n");
    day_chart(page, report);
    severity_chart(page, report);
}

/// Requests per day as a bar chart (allowed and blocked stacked).
fn day_chart(page: &mut String, report: &WeeklyReport) {
    let max = report
        .days
        .iter()
        .map(|d| d.requests)
        .max()
        .unwrap_or(0)
        .max(1);
    let (width, height, bar) = (560.0_f64, 180.0_f64, 60.0_f64);
    let _ = write!(
        page,
        "<h3>Requests per day</h3><svg role=\"img\" aria-label=\"Requests per day\" width=\"{width}\" height=\"{}\" viewBox=\"0 0 {width} {}\" xmlns=\"http://www.w3.org/2000/svg\">",
        height + 40.0,
        height + 40.0
    );
    for (i, day) in report.days.iter().enumerate() {
        let x = 20.0 + i as f64 * (bar + 16.0);
        let total = day.requests as f64 / max as f64 * height;
        let blocked = day.blocked as f64 / max as f64 * height;
        let _ = write!(
            page,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar}\" height=\"{:.1}\" fill=\"#2b5797\"><title>{} requests</title></rect>\
             <rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar}\" height=\"{:.1}\" fill=\"#c0392b\"><title>{} blocked</title></rect>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{}</text>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
            height - total + 10.0,
            total,
            day.requests,
            height - blocked + 10.0,
            blocked,
            day.blocked,
            x + bar / 2.0,
            height + 25.0,
            esc(day.day.get(..3).unwrap_or("")),
            x + bar / 2.0,
            (height - total + 6.0).max(10.0),
            day.requests
        );
    }
    page.push_str("</svg>\n");
}

/// Alerts by severity as horizontal bars.
fn severity_chart(page: &mut String, report: &WeeklyReport) {
    let s = &report.summary;
    let rows = [
        ("high", s.alerts_high, "#a4000f"),
        ("medium", s.alerts_medium, "#d68a00"),
        ("low", s.alerts_low, "#6b8e23"),
    ];
    let max = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1);
    page.push_str("<h3>Alerts by severity</h3><svg role=\"img\" aria-label=\"Alerts by severity\" width=\"560\" height=\"90\" viewBox=\"0 0 560 90\" xmlns=\"http://www.w3.org/2000/svg\">");
    for (i, (label, count, colour)) in rows.iter().enumerate() {
        let y = 5.0 + i as f64 * 28.0;
        let width = *count as f64 / max as f64 * 400.0;
        let _ = write!(
            page,
            "<text x=\"0\" y=\"{:.1}\" font-size=\"12\">{label}</text><rect x=\"70\" y=\"{y:.1}\" width=\"{width:.1}\" height=\"20\" fill=\"{colour}\"></rect><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\">{count}</text>",
            y + 15.0,
            76.0 + width,
            y + 15.0
        );
    }
    page.push_str("</svg>\n");
}

fn table_head(page: &mut String, headers: &[&str]) {
    page.push_str("<table><thead><tr>");
    for h in headers {
        let _ = write!(page, "<th>{}</th>", esc(h));
    }
    page.push_str("</tr></thead><tbody>\n");
}

fn cell(page: &mut String, text: &str) {
    let _ = write!(page, "<td>{}</td>", esc(text));
}

fn number(page: &mut String, value: u64) {
    let _ = write!(page, "<td class=\"n\">{value}</td>");
}

fn empty(page: &mut String, what: &str) {
    let _ = writeln!(page, "<p class=\"note\">{}</p>", esc(what));
}

fn alerts(page: &mut String, report: &WeeklyReport) {
    page.push_str("<h2 id=\"alerts\">Alerts</h2>");
    if report.alerts.is_empty() {
        empty(page, "No alerts this week.");
        return;
    }
    table_head(
        page,
        &[
            "#",
            "severity",
            "kind",
            "who",
            "role / group",
            "first",
            "latest",
            "times",
            "status",
            "summary and evidence",
        ],
    );
    for alert in &report.alerts {
        let _ = write!(page, "<tr><td class=\"n\">{}</td>", alert.id);
        let _ = write!(
            page,
            "<td class=\"{}\">{}</td>",
            esc(&alert.severity),
            esc(&alert.severity)
        );
        cell(page, &alert.kind);
        cell(page, &alert.who);
        cell(page, &format!("{} {}", alert.role, alert.group));
        cell(page, &alert.first_at);
        cell(page, &alert.last_at);
        number(page, alert.occurrences);
        cell(page, &alert.status);
        let _ = write!(page, "<td>{}", esc(&alert.summary));
        if !alert.evidence.is_empty() {
            page.push_str("<ul>");
            for e in &alert.evidence {
                let _ = write!(
                    page,
                    "<li>{} {} <span class=\"term\">{}{}</span>{}</li>",
                    esc(&e.at),
                    esc(&e.outcome),
                    esc(&e.host),
                    esc(&e.path),
                    if e.search.is_empty() {
                        String::new()
                    } else {
                        format!(" search: <span class=\"term\">{}</span>", esc(&e.search))
                    }
                );
            }
            page.push_str("</ul>");
        }
        page.push_str("</td></tr>\n");
    }
    page.push_str("</tbody></table>\n");
}

fn searches(page: &mut String, report: &WeeklyReport) {
    page.push_str("<h2 id=\"searches\">Searches</h2>");
    if report.searches.is_empty() {
        empty(page, "No searches this week.");
        return;
    }
    let flagged = report
        .searches
        .iter()
        .filter(|s| !s.flagged.is_empty())
        .count();
    let shown = report.searches.len().min(HTML_SEARCH_ROWS.max(flagged));
    if shown < report.searches.len() {
        empty(
            page,
            &format!(
                "Showing {shown} of {} searches (every flagged one); the searches CSV holds them all.",
                report.searches.len()
            ),
        );
    }
    table_head(
        page,
        &[
            "time",
            "who",
            "computer",
            "role / group",
            "engine",
            "terms",
            "flagged",
            "outcome",
        ],
    );
    for s in report.searches.iter().take(shown) {
        page.push_str(if s.flagged.is_empty() {
            "<tr>"
        } else {
            "<tr class=\"flagged\">"
        });
        cell(page, &s.at);
        cell(page, &s.who);
        cell(page, &s.computer);
        cell(page, &format!("{} {}", s.role, s.group));
        cell(page, &s.engine);
        let _ = write!(page, "<td class=\"term\">{}</td>", esc(&s.terms));
        cell(page, &s.flagged.join(", "));
        cell(page, &s.outcome);
        page.push_str("</tr>\n");
    }
    page.push_str("</tbody></table>\n");
}

fn sites(page: &mut String, report: &WeeklyReport) {
    page.push_str("<h2 id=\"sites\">Websites visited, by role and group</h2>");
    if report.sites.is_empty() {
        empty(page, "No websites visited this week.");
        return;
    }
    for group in &report.sites {
        let _ = write!(
            page,
            "<h3>{}{} — {} requests{}</h3>",
            esc(&group.role),
            if group.group.is_empty() {
                String::new()
            } else {
                format!(" / {}", esc(&group.group))
            },
            group.requests,
            if group.background.requests > 0 {
                format!(", {} of them background", group.background.requests)
            } else {
                String::new()
            }
        );
        table_head(
            page,
            &["site", "time spent", "requests", "blocked", "people"],
        );
        for site in &group.sites {
            page.push_str("<tr>");
            cell(page, &site.site);
            cell(page, &duration_text(site.time_spent_secs));
            number(page, site.requests);
            number(page, site.blocked);
            number(page, site.people);
            page.push_str("</tr>\n");
        }
        background_row(page, &group.background);
        page.push_str("</tbody></table>\n");
    }
}

/// The one line that stands for a group's background traffic (updates, telemetry,
/// safe-browsing), under its sites.
fn background_row(page: &mut String, line: &crate::BackgroundLine) {
    if line.requests == 0 {
        return;
    }
    let more = line.hosts.saturating_sub(line.busiest.len() as u64);
    let _ = write!(
        page,
        "<tr class=\"background\"><td>Background: browser, system and app updates and \
         telemetry, {} {}<div class=\"note\">{}{}</div></td><td>not counted</td>",
        line.hosts,
        if line.hosts == 1 { "site" } else { "sites" },
        esc(&line.busiest.join(", ")),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    );
    number(page, line.requests);
    number(page, line.blocked);
    number(page, line.people);
    page.push_str("</tr>\n");
}

fn duration_text(secs: u64) -> String {
    if secs >= 3600 {
        format!("{}h {:02}m", secs / 3600, secs % 3600 / 60)
    } else {
        format!("{}m {:02}s", secs / 60, secs % 60)
    }
}

fn blocked(page: &mut String, report: &WeeklyReport) {
    page.push_str("<h2 id=\"blocked\">Blocked attempts, by user and category</h2>");
    if report.blocked.is_empty() {
        empty(page, "No blocked attempts this week.");
        return;
    }
    table_head(
        page,
        &[
            "who",
            "role / group",
            "category",
            "attempts",
            "first",
            "latest",
        ],
    );
    for b in &report.blocked {
        page.push_str("<tr>");
        cell(page, &b.who);
        cell(page, &format!("{} {}", b.role, b.group));
        // A block by a deny list has no category: its rule, in words.
        cell(
            page,
            &safegate_store::plain_words::rule_in_words(&b.category),
        );
        number(page, b.attempts);
        cell(page, &b.first_at);
        cell(page, &b.last_at);
        page.push_str("</tr>\n");
    }
    page.push_str("</tbody></table>\n");
}

fn circumvention(page: &mut String, report: &WeeklyReport) {
    page.push_str("<h2 id=\"circumvention\">Circumvention attempts</h2>");
    if report.circumvention.is_empty() {
        empty(page, "No circumvention attempts this week.");
        return;
    }
    table_head(
        page,
        &[
            "time", "who", "computer", "role", "site", "category", "outcome",
        ],
    );
    for c in &report.circumvention {
        page.push_str("<tr>");
        cell(page, &c.at);
        cell(page, &c.who);
        cell(page, &c.computer);
        cell(page, &c.role);
        cell(page, &c.host);
        cell(page, &c.category);
        cell(page, &c.outcome);
        page.push_str("</tr>\n");
    }
    page.push_str("</tbody></table>\n");
}

fn staff(page: &mut String, report: &WeeklyReport) {
    page.push_str("<h2 id=\"staff\">Staff activity in core hours on non-work categories</h2>");
    if report.staff_core_hours.is_empty() {
        empty(page, "None this week.");
        return;
    }
    table_head(
        page,
        &["who", "category", "requests", "blocked", "first", "sites"],
    );
    for s in &report.staff_core_hours {
        page.push_str("<tr>");
        cell(page, &s.who);
        cell(page, &s.category);
        number(page, s.requests);
        number(page, s.blocked);
        cell(page, &s.first_at);
        cell(page, &s.sites.join(", "));
        page.push_str("</tr>\n");
    }
    page.push_str("</tbody></table>\n");
}

fn uncategorised(page: &mut String, report: &WeeklyReport) {
    page.push_str("<h2 id=\"uncategorised\">Busy uncategorised sites (for the filter admin)</h2>");
    if report.summary.background_requests > 0 {
        empty(
            page,
            "Background traffic (the policy's background categories) is not listed here.",
        );
    }
    if report.uncategorised.is_empty() {
        empty(page, "None this week.");
        return;
    }
    table_head(page, &["site", "requests", "people"]);
    for u in &report.uncategorised {
        page.push_str("<tr>");
        cell(page, &u.site);
        number(page, u.requests);
        number(page, u.people);
        page.push_str("</tr>\n");
    }
    page.push_str("</tbody></table>\n");
}
