//! The report as CSV files for tools: one file per table, RFC 4180 with CRLF, with
//! fields a spreadsheet would run as formulas neutralised (the store's
//! `write_csv_row`, shared with the visit-log export).

use safegate_store::write_csv_row;

use crate::WeeklyReport;

/// Every table as (name, CSV bytes): alerts, searches, sites, background, blocked,
/// circumvention, staff-core-hours, uncategorised.
pub fn render_all(report: &WeeklyReport) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    TABLES
        .iter()
        .map(|table_of| {
            let table = table_of(report);
            Ok((table.name.to_owned(), table.to_csv()?))
        })
        .collect()
}

/// The tables, one file each, each built only when its turn comes.
const TABLES: [fn(&WeeklyReport) -> Table; 8] = [
    alerts,
    searches,
    sites,
    background,
    blocked,
    circumvention,
    staff_core_hours,
    uncategorised,
];

/// One CSV file: its name, its header and its rows.
struct Table {
    name: &'static str,
    header: &'static [&'static str],
    rows: Vec<Vec<String>>,
}

impl Table {
    fn to_csv(&self) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        write_csv_row(&mut out, self.header.iter().copied())?;
        for row in &self.rows {
            write_csv_row(&mut out, row.iter().map(String::as_str))?;
        }
        Ok(out)
    }
}

fn alerts(report: &WeeklyReport) -> Table {
    Table {
        name: "alerts",
        header: &[
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
        rows: report
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
    }
}

fn searches(report: &WeeklyReport) -> Table {
    Table {
        name: "searches",
        header: &[
            "at", "who", "computer", "role", "group", "engine", "terms", "flagged", "outcome",
        ],
        rows: report
            .searches
            .iter()
            .map(|s| {
                vec![
                    s.at.clone(),
                    s.who.clone(),
                    s.computer.clone(),
                    s.role.clone(),
                    s.group.clone(),
                    s.engine.clone(),
                    s.terms.clone(),
                    s.flagged.join(" "),
                    s.outcome.clone(),
                ]
            })
            .collect(),
    }
}

fn sites(report: &WeeklyReport) -> Table {
    Table {
        name: "sites",
        header: &[
            "role",
            "group",
            "site",
            "requests",
            "blocked",
            "people",
            "time_spent_secs",
        ],
        rows: report
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
    }
}

fn background(report: &WeeklyReport) -> Table {
    Table {
        name: "background",
        header: &[
            "role", "group", "requests", "blocked", "people", "hosts", "busiest",
        ],
        rows: report
            .sites
            .iter()
            .filter(|g| g.background.requests > 0)
            .map(|g| {
                let b = &g.background;
                vec![
                    g.role.clone(),
                    g.group.clone(),
                    b.requests.to_string(),
                    b.blocked.to_string(),
                    b.people.to_string(),
                    b.hosts.to_string(),
                    b.busiest.join(" "),
                ]
            })
            .collect(),
    }
}

fn blocked(report: &WeeklyReport) -> Table {
    Table {
        name: "blocked",
        header: &[
            "who", "role", "group", "category", "attempts", "first_at", "last_at",
        ],
        rows: report
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
    }
}

fn circumvention(report: &WeeklyReport) -> Table {
    Table {
        name: "circumvention",
        header: &[
            "at", "who", "computer", "role", "host", "category", "outcome",
        ],
        rows: report
            .circumvention
            .iter()
            .map(|c| {
                vec![
                    c.at.clone(),
                    c.who.clone(),
                    c.computer.clone(),
                    c.role.clone(),
                    c.host.clone(),
                    c.category.clone(),
                    c.outcome.clone(),
                ]
            })
            .collect(),
    }
}

fn staff_core_hours(report: &WeeklyReport) -> Table {
    Table {
        name: "staff-core-hours",
        header: &[
            "who", "category", "requests", "blocked", "first_at", "sites",
        ],
        rows: report
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
    }
}

fn uncategorised(report: &WeeklyReport) -> Table {
    Table {
        name: "uncategorised",
        header: &["site", "requests", "people"],
        rows: report
            .uncategorised
            .iter()
            .map(|u| vec![u.site.clone(), u.requests.to_string(), u.people.to_string()])
            .collect(),
    }
}
