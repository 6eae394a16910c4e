//! ISO weeks (`2026-W47`: Monday to Sunday) as time ranges in the school's time zone.

use jiff::Timestamp;
use jiff::civil::{Date, ISOWeekDate, Weekday};
use jiff::tz::TimeZone;

use crate::ReportError;

/// One ISO week.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsoWeek {
    /// ISO week-numbering year.
    pub year: i16,
    /// Week number, 1 to 53.
    pub week: i8,
}

impl IsoWeek {
    /// Parses `2026-W47` (or `2026-w47`, `2026W47`).
    pub fn parse(text: &str) -> Result<Self, ReportError> {
        let bad = || ReportError::Week(text.to_owned());
        let upper = text.trim().to_ascii_uppercase();
        let (year, week) = upper.split_once('W').ok_or_else(bad)?;
        let year: i16 = year.trim_end_matches('-').parse().map_err(|_| bad())?;
        let week: i8 = week.parse().map_err(|_| bad())?;
        ISOWeekDate::new(year, week, Weekday::Monday).map_err(|_| bad())?;
        Ok(Self { year, week })
    }

    /// The week holding `date`.
    pub fn of(date: Date) -> Self {
        let iso = date.iso_week_date();
        Self {
            year: iso.year(),
            week: iso.week(),
        }
    }

    /// The last complete week before `now` in `tz` (what a Monday report covers):
    /// the week before the one holding `now`'s school-time date, so late on Sunday it
    /// is still the week before, and from Monday 00:00 school time the week just ended.
    pub fn previous(now: Timestamp, tz: &TimeZone) -> Self {
        let today = tz.to_datetime(now).date();
        Self::of(today.saturating_sub(jiff::Span::new().days(7)))
    }

    /// Its Monday.
    pub fn monday(self) -> Date {
        ISOWeekDate::new(self.year, self.week, Weekday::Monday)
            .map(|d| d.date())
            .unwrap_or(Date::constant(1970, 1, 5))
    }

    /// `[Monday 00:00, next Monday 00:00)` in `tz`, as Unix microseconds.
    pub fn range_micros(self, tz: &TimeZone) -> (u64, u64) {
        let start = self.monday();
        let end = start.saturating_add(jiff::Span::new().days(7));
        let micros = |date: Date| {
            date.to_zoned_datetime(tz.clone())
                .map(|z| u64::try_from(z.timestamp().as_microsecond()).unwrap_or(0))
                .unwrap_or(0)
        };
        (micros(start), micros(end))
    }
}

impl std::fmt::Display for IsoWeek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-W{:02}", self.year, self.week)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn weeks_parse_print_and_cover_monday_to_sunday_in_school_time() {
        let week = IsoWeek::parse("2026-W47").unwrap();
        assert_eq!(week.to_string(), "2026-W47");
        assert_eq!(week.monday(), Date::constant(2026, 11, 16));
        let london = TimeZone::get("Europe/London").unwrap();
        let (start, end) = week.range_micros(&london);
        let start_ts: Timestamp = "2026-11-16T00:00:00Z".parse().unwrap();
        assert_eq!(start as i64, start_ts.as_microsecond());
        assert_eq!(end - start, 7 * 86_400_000_000);
        // Summer time: the week starts at 23:00 UTC on Sunday.
        let (start, _) = IsoWeek::parse("2026w27").unwrap().range_micros(&london);
        let start_ts: Timestamp = "2026-06-28T23:00:00Z".parse().unwrap();
        assert_eq!(start as i64, start_ts.as_microsecond());
        assert!(IsoWeek::parse("2026-W54").is_err());
        assert!(IsoWeek::parse("last week").is_err());
        let monday_morning: Timestamp = "2026-11-23T07:00:00Z".parse().unwrap();
        assert_eq!(IsoWeek::previous(monday_morning, &london), week);
    }

    #[test]
    fn the_default_week_is_the_last_complete_one_in_school_time() {
        let london = TimeZone::get("Europe/London").unwrap();
        let previous = |utc: &str| IsoWeek::previous(utc.parse().unwrap(), &london).to_string();
        // Summer time: Monday 00:30 BST is Sunday 23:30 UTC; W26 has just ended.
        assert_eq!(previous("2026-06-28T23:30:00Z"), "2026-W26");
        // Sunday 23:30 BST (22:30 UTC): W26 is not over, so W25.
        assert_eq!(previous("2026-06-28T22:30:00Z"), "2026-W25");
        // Over the new year: Monday 4 January 2027 is in 2027-W01; 2026 has 53 weeks.
        assert_eq!(previous("2027-01-04T09:00:00Z"), "2026-W53");
        assert_eq!(previous("2027-01-03T23:59:00Z"), "2026-W52");
        // Another zone: Monday 00:30 in Auckland is still Sunday in UTC.
        let auckland = TimeZone::get("Pacific/Auckland").unwrap();
        let monday: Timestamp = "2026-11-22T11:30:00Z".parse().unwrap();
        assert_eq!(IsoWeek::previous(monday, &auckland).to_string(), "2026-W47");
    }
}
