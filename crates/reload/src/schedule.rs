//! `lists.schedule`: when the running service updates the list feeds. `daily HH:MM`
//! (local time, plus a random delay of up to 30 minutes so that schools do not all
//! fetch at once), `every DURATION` (`every 6h`), or a bare number of seconds (tests).

use std::time::Duration;

use jiff::ZonedDateTime;
use jiff::civil::Time;

/// Largest random delay added to a daily update.
pub const DAILY_SPREAD: Duration = Duration::from_secs(30 * 60);

/// A parsed `lists.schedule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Once a day at this local time (plus up to [`DAILY_SPREAD`]).
    Daily(Time),
    /// At this interval from start.
    Every(Duration),
}

impl Schedule {
    /// Parses `daily 03:30`, `every 6h` or `30` (seconds).
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let text = text.trim();
        let bad = |why: &str| {
            format!(
                "{text:?}: {why}; use \"daily HH:MM\", \"every DURATION\" (e.g. \"every 6h\") \
                 or a number of seconds"
            )
        };
        if let Some(time) = text.strip_prefix("daily ") {
            let (hour, minute) = time.trim().split_once(':').ok_or_else(|| bad("no HH:MM"))?;
            let hour: i8 = hour.parse().map_err(|_| bad("the hour is not a number"))?;
            let minute: i8 = minute
                .parse()
                .map_err(|_| bad("the minute is not a number"))?;
            let time = Time::new(hour, minute, 0, 0).map_err(|_| bad("no such time of day"))?;
            return Ok(Schedule::Daily(time));
        }
        let every = match text.strip_prefix("every ") {
            Some(duration) => {
                humantime::parse_duration(duration.trim()).map_err(|e| bad(&e.to_string()))?
            }
            None => Duration::from_secs(text.parse().map_err(|_| bad("not understood"))?),
        };
        if every < Duration::from_secs(1) {
            return Err(bad("the interval must be at least a second"));
        }
        Ok(Schedule::Every(every))
    }

    /// How long from `now` until the next update; `random` (0 to 1) spreads daily ones.
    pub fn next_delay(&self, now: &ZonedDateTime, random: f64) -> Duration {
        match self {
            Schedule::Every(every) => *every,
            Schedule::Daily(time) => {
                let today = now.date().to_datetime(*time);
                let mut at = today.to_zoned_datetime(now.time_zone().clone()).ok();
                if at.as_ref().is_none_or(|at| at <= now) {
                    at = today
                        .checked_add(jiff::Span::new().days(1))
                        .ok()
                        .and_then(|t| t.to_zoned_datetime(now.time_zone().clone()).ok());
                }
                let base = at
                    .and_then(|at| now.duration_until(&at).try_into().ok())
                    .unwrap_or(Duration::from_secs(24 * 3600));
                base + DAILY_SPREAD.mul_f64(random.clamp(0.0, 1.0))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(
            Schedule::parse("daily 03:30"),
            Ok(Schedule::Daily(Time::new(3, 30, 0, 0).unwrap()))
        );
        assert_eq!(
            Schedule::parse("every 6h"),
            Ok(Schedule::Every(Duration::from_secs(6 * 3600)))
        );
        assert_eq!(
            Schedule::parse("2"),
            Ok(Schedule::Every(Duration::from_secs(2)))
        );
        for bad in ["daily 25:00", "daily 3", "weekly", "every soon", "0", ""] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn daily_is_the_next_occurrence_plus_spread() {
        let now: ZonedDateTime = "2026-12-07T04:00:00+00:00[UTC]".parse().unwrap();
        let daily = Schedule::parse("daily 03:30").unwrap();
        assert_eq!(
            daily.next_delay(&now, 0.0),
            Duration::from_secs(23 * 3600 + 1800)
        );
        assert_eq!(daily.next_delay(&now, 1.0), Duration::from_secs(24 * 3600));
        let early: ZonedDateTime = "2026-12-07T03:00:00+00:00[UTC]".parse().unwrap();
        assert_eq!(daily.next_delay(&early, 0.0), Duration::from_secs(1800));
    }
}
