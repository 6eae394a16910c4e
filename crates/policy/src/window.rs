//! Time windows ("core hours", "lunch") and the school calendar (terms, holidays),
//! compiled for evaluation on the request path.
//!
//! A window is a set of weekdays and half-open local time ranges (`08:30-15:30`
//! covers 08:30:00 up to, not including, 15:30:00), optionally only on term days.
//! Local time is the school's time zone, so the same window follows the clock
//! changes: 08:45 on the Monday after the spring change is 07:45 UTC and inside,
//! exactly as 08:45 a week earlier was 08:45 UTC. A term day is a date inside some
//! term and outside every holiday (both inclusive date ranges).

use jiff::Timestamp;
use jiff::civil::{Date, DateTime, Time, Weekday};
use jiff::tz::TimeZone;

/// Index of a compiled window in the snapshot.
pub(crate) type WindowId = u16;

/// One compiled window.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    /// Name as written in `[windows.NAME]`.
    pub name: String,
    /// Bit `n` set when the window is open on weekday `n` (Monday = 0).
    pub days: u8,
    /// Half-open local time ranges, sorted, not overlapping.
    pub times: Vec<(Time, Time)>,
    /// Only open on term days.
    pub terms_only: bool,
}

/// Terms and holidays as inclusive date ranges.
#[derive(Debug, Clone, Default)]
pub(crate) struct Calendar {
    pub terms: Vec<(Date, Date)>,
    pub holidays: Vec<(Date, Date)>,
}

impl Calendar {
    /// True when `date` is inside a term and not inside a holiday.
    pub fn is_term_day(&self, date: Date) -> bool {
        let within = |ranges: &[(Date, Date)]| ranges.iter().any(|&(a, b)| a <= date && date <= b);
        within(&self.terms) && !within(&self.holidays)
    }
}

/// `now` as a local date-time in the school's zone, computed at most once per decision.
pub(crate) struct LocalNow<'a> {
    now: Timestamp,
    tz: &'a TimeZone,
    local: Option<DateTime>,
}

impl<'a> LocalNow<'a> {
    pub fn new(now: Timestamp, tz: &'a TimeZone) -> Self {
        LocalNow {
            now,
            tz,
            local: None,
        }
    }

    fn get(&mut self) -> DateTime {
        match self.local {
            Some(local) => local,
            None => {
                let local = self.tz.to_datetime(self.now);
                self.local = Some(local);
                local
            }
        }
    }
}

impl Window {
    /// True when the window is open at `now`.
    pub fn contains(&self, now: &mut LocalNow<'_>, calendar: &Calendar) -> bool {
        let local = now.get();
        if self.days & (1 << weekday_index(local.weekday())) == 0 {
            return false;
        }
        let time = local.time();
        if !self.times.iter().any(|&(a, b)| a <= time && time < b) {
            return false;
        }
        !self.terms_only || calendar.is_term_day(local.date())
    }
}

/// Monday = 0 ... Sunday = 6.
pub(crate) fn weekday_index(day: Weekday) -> u8 {
    // to_monday_zero_offset is 0..=6.
    day.to_monday_zero_offset() as u8
}

/// Parses a day list entry: `mon`, `monday`, or a range `mon-fri` (wrapping allowed:
/// `sat-sun`, `fri-mon`). Returns the bit mask.
pub(crate) fn parse_days(text: &str) -> Result<u8, String> {
    let parse_one = |word: &str| -> Result<u8, String> {
        let word = word.trim().to_ascii_lowercase();
        const NAMES: [&str; 7] = [
            "monday",
            "tuesday",
            "wednesday",
            "thursday",
            "friday",
            "saturday",
            "sunday",
        ];
        NAMES
            .iter()
            .position(|name| word.len() >= 3 && name.starts_with(word.as_str()))
            .map(|i| i as u8)
            .ok_or_else(|| format!("`{word}` is not a weekday (mon, tue, wed, thu, fri, sat, sun)"))
    };
    match text.split_once('-') {
        None => Ok(1 << parse_one(text)?),
        Some((from, until)) => {
            let (from, until) = (parse_one(from)?, parse_one(until)?);
            let mut mask = 0u8;
            let mut day = from;
            loop {
                mask |= 1 << day;
                if day == until {
                    break;
                }
                day = (day + 1) % 7;
            }
            Ok(mask)
        }
    }
}

/// Parses `HH:MM-HH:MM` (24-hour; `24:00` as an end means midnight at the end of
/// the day) into a half-open range.
pub(crate) fn parse_time_range(text: &str) -> Result<(Time, Time), String> {
    let (from, until) = text
        .split_once('-')
        .ok_or_else(|| format!("`{text}` is not a time range like \"08:30-15:30\""))?;
    let from = parse_clock(from.trim(), false)?;
    let until = parse_clock(until.trim(), true)?;
    if from >= until {
        return Err(format!(
            "`{text}` ends before it starts; a range over midnight is written as two \
             ranges, \"22:00-24:00\" and \"00:00-06:00\""
        ));
    }
    Ok((from, until))
}

/// `HH:MM`; with `end`, also `24:00` (returned as the last representable time).
fn parse_clock(text: &str, end: bool) -> Result<Time, String> {
    let bad = || format!("`{text}` is not a time like \"08:30\"");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: i8 = h.parse().map_err(|_| bad())?;
    let m: i8 = m.parse().map_err(|_| bad())?;
    if end && h == 24 && m == 0 {
        return Ok(Time::MAX);
    }
    Time::new(h, m, 0, 0).map_err(|_| bad())
}

/// Parses a date `YYYY-MM-DD`.
pub(crate) fn parse_date(text: &str) -> Result<Date, String> {
    text.trim()
        .parse::<Date>()
        .map_err(|_| format!("`{text}` is not a date like \"2026-09-03\""))
}

/// Parses an instant: RFC 3339 (`2026-11-23T14:30:00Z`, `...+01:00`) or a local
/// date-time in the school's zone (`2026-11-23 14:30`, `2026-11-23T14:30`). A local
/// time that does not exist or happens twice at a clock change resolves the way
/// clocks do ("compatible"): the later of a gap, the earlier of a fold.
pub(crate) fn parse_instant(text: &str, tz: &TimeZone) -> Result<Timestamp, String> {
    let text = text.trim();
    if let Ok(ts) = text.parse::<Timestamp>() {
        return Ok(ts);
    }
    let bad = || {
        format!(
            "`{text}` is not a time like \"2026-11-23 14:30\" (school time) or \
             \"2026-11-23T14:30:00Z\""
        )
    };
    // A bare date is not accepted: "until 2026-11-23" is ambiguous (start or end).
    if !text.contains([':']) {
        return Err(bad());
    }
    let local: DateTime = text.parse().map_err(|_| bad())?;
    tz.to_ambiguous_timestamp(local)
        .compatible()
        .map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn london() -> TimeZone {
        TimeZone::get("Europe/London").unwrap()
    }

    fn core_hours() -> Window {
        Window {
            name: "core".into(),
            days: parse_days("mon-fri").unwrap(),
            times: vec![parse_time_range("08:30-15:30").unwrap()],
            terms_only: false,
        }
    }

    fn at(utc: &str) -> Timestamp {
        utc.parse().unwrap()
    }

    #[test]
    fn days_and_ranges() {
        assert_eq!(parse_days("mon-fri").unwrap(), 0b0001_1111);
        assert_eq!(parse_days("Saturday").unwrap(), 0b0010_0000);
        assert_eq!(parse_days("sat-mon").unwrap(), 0b0110_0001);
        assert!(parse_days("funday").is_err());
        assert!(parse_days("mo").is_err());
        assert!(parse_time_range("15:30-08:30").is_err());
        assert!(parse_time_range("8:30-25:00").is_err());
        assert!(parse_time_range("08:30").is_err());
        let (_, end) = parse_time_range("22:00-24:00").unwrap();
        assert_eq!(end, Time::MAX);
    }

    #[test]
    fn core_hours_follow_the_clock_changes() {
        let tz = london();
        let cal = Calendar::default();
        let w = core_hours();
        let inside = |utc: &str| w.contains(&mut LocalNow::new(at(utc), &tz), &cal);
        // Monday 2026-03-23, GMT: 08:45 local = 08:45 UTC.
        assert!(inside("2026-03-23T08:45:00Z"));
        assert!(!inside("2026-03-23T08:15:00Z"));
        // Monday 2026-03-30, BST (clocks went forward 2026-03-29): 08:45 = 07:45 UTC.
        assert!(inside("2026-03-30T07:45:00Z"));
        assert!(!inside("2026-03-30T07:15:00Z")); // 08:15 BST
        assert!(!inside("2026-03-30T14:45:00Z")); // 15:45 BST
        assert!(inside("2026-03-30T14:15:00Z")); // 15:15 BST
        // Friday 2026-10-23, still BST.
        assert!(inside("2026-10-23T07:45:00Z"));
        // Monday 2026-10-26, GMT again (clocks went back 2026-10-25).
        assert!(!inside("2026-10-26T07:45:00Z")); // 07:45 GMT
        assert!(inside("2026-10-26T08:45:00Z"));
        assert!(inside("2026-10-26T15:15:00Z"));
        assert!(!inside("2026-10-26T15:30:00Z")); // end is exclusive
        // Weekend.
        assert!(!inside("2026-03-28T10:00:00Z"));
    }

    #[test]
    fn terms_and_holidays() {
        let tz = london();
        let cal = Calendar {
            terms: vec![(
                parse_date("2026-09-02").unwrap(),
                parse_date("2026-12-18").unwrap(),
            )],
            holidays: vec![(
                parse_date("2026-10-26").unwrap(),
                parse_date("2026-10-30").unwrap(),
            )],
        };
        let mut w = core_hours();
        w.terms_only = true;
        let inside = |utc: &str| w.contains(&mut LocalNow::new(at(utc), &tz), &cal);
        assert!(inside("2026-10-23T09:00:00Z")); // term
        assert!(!inside("2026-10-27T10:00:00Z")); // half term
        assert!(inside("2026-11-02T10:00:00Z")); // back
        assert!(!inside("2026-08-24T10:00:00Z")); // summer holiday: no term
        assert!(inside("2026-12-18T10:00:00Z")); // last day is inclusive
    }

    #[test]
    fn instants_in_school_time_and_rfc3339() {
        let tz = london();
        // November: GMT.
        assert_eq!(
            parse_instant("2026-11-23 14:30", &tz).unwrap(),
            at("2026-11-23T14:30:00Z")
        );
        // June: BST.
        assert_eq!(
            parse_instant("2026-06-10T14:30", &tz).unwrap(),
            at("2026-06-10T13:30:00Z")
        );
        assert_eq!(
            parse_instant("2026-06-10T14:30:00+01:00", &tz).unwrap(),
            at("2026-06-10T13:30:00Z")
        );
        assert!(parse_instant("2026-06-10", &tz).is_err());
        assert!(parse_instant("tomorrow", &tz).is_err());
    }
}
