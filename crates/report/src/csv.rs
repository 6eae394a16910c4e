//! The report as CSV files for tools: one file per table, RFC 4180 with CRLF, with
//! fields a spreadsheet would run as formulas neutralised (the store's
//! `write_csv_row`, shared with the visit-log export).

use safegate_store::write_csv_row;

use crate::WeeklyReport;

/// Every table as (name, CSV bytes).
pub fn render_all(report: &WeeklyReport) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    let mut table = |name: &str, header: &[&str], rows: Vec<Vec<String>>| -> std::io::Result<()> {
        let mut out = Vec::new();
        write_csv_row(&mut out, header.iter().copied())?;
        for row in &rows {
            write_csv_row(&mut out, row.iter().map(String::as_str))?;
        }
        files.push((name.to_owned(), out));
        Ok(())
    };
    table(
        "alerts",
        &[
            "id",
            "severity",
            "kind",
            "who",
            "role",
            "group",
            "first_at",
            "last_at",
            "occurrences",
            "status",
            "summary",
        ],
        report
            .alerts
            .iter()
            .map(|a| {
                vec![
                    a.id.to_string(),
                    a.severity.clone(),
                    a.kind.clone(),
                    a.who.clone(),
                    a.role.clone(),
                    a.group.clone(),
                    a.first_at.clone(),
                    a.last_at.clone(),
                    a.occurrences.to_string(),
                    a.status.clone(),
                    a.summary.clone(),
                ]
            })
            .collect(),
    )?;
    table(
        "searches",
        &[
            "at", "who", "role", "group", "engine", "terms", "flagged", "outcome",
        ],
        report
            .searches
            .iter()
            .map(|s| {
                vec![
                    s.at.clone(),
                    s.who.clone(),
                    s.role.clone(),
                    s.group.clone(),
                    s.engine.clone(),
                    s.terms.clone(),
                    s.flagged.join(" "),
                    s.outcome.clone(),
                ]
            })
            .collect(),
    )?;
    table(
        "sites",
        &[
            "role",
            "group",
            "site",
            "requests",
            "blocked",
            "people",
            "time_spent_secs",
        ],
        report
            .sites
            .iter()
            .flat_map(|g| {
                g.sites.iter().map(|s| {
                    vec![
                        g.role.clone(),
                        g.group.clone(),
                        s.site.clone(),
                        s.requests.to_string(),
                        s.blocked.to_string(),
                        s.people.to_string(),
                        s.time_spent_secs.to_string(),
                    ]
                })
            })
            .collect(),
    )?;
    table(
        "blocked",
        &[
            "who", "role", "group", "category", "attempts", "first_at", "last_at",
        ],
        report
            .blocked
            .iter()
            .map(|b| {
                vec![
                    b.who.clone(),
                    b.role.clone(),
                    b.group.clone(),
                    b.category.clone(),
                    b.attempts.to_string(),
                    b.first_at.clone(),
                    b.last_at.clone(),
                ]
            })
            .collect(),
    )?;
    table(
        "circumvention",
        &["at", "who", "role", "host", "category", "outcome"],
        report
            .circumvention
            .iter()
            .map(|c| {
                vec![
                    c.at.clone(),
                    c.who.clone(),
                    c.role.clone(),
                    c.host.clone(),
                    c.category.clone(),
                    c.outcome.clone(),
                ]
            })
            .collect(),
    )?;
    table(
        "staff-core-hours",
        &[
            "who", "category", "requests", "blocked", "first_at", "sites",
        ],
        report
            .staff_core_hours
            .iter()
            .map(|s| {
                vec![
                    s.who.clone(),
                    s.category.clone(),
                    s.requests.to_string(),
                    s.blocked.to_string(),
                    s.first_at.clone(),
                    s.sites.join(" "),
                ]
            })
            .collect(),
    )?;
    table(
        "uncategorised",
        &["site", "requests", "people"],
        report
            .uncategorised
            .iter()
            .map(|u| vec![u.site.clone(), u.requests.to_string(), u.people.to_string()])
            .collect(),
    )?;
    Ok(files)
}
