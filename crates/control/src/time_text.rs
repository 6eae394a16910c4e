//! Times given on the command line (`check --at`, `log query --since/--until`,
//! `log purge --before`), read in the school's time zone, and that time zone itself;
//! and times written for people (`2026-11-23 10:00:05` in the school's zone) and for
//! tools (RFC 3339).

use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;

/// What every time option accepts, for error messages and help texts.
pub const TIME_FORMS: &str = "RFC 3339 (2026-11-23T10:00:00Z), local time (2026-11-23 10:00[:SS]), \
     a local date (2026-11-23, meaning midnight), or a time ago (7d, 24h, 90m)";

/// The policy's time zone when the policy file does not name one (as the policy
/// crate's default).
const POLICY_DEFAULT_TIMEZONE: &str = "Europe/London";

/// A time option that cannot be read; the message names the option and the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TimeError(String);

/// Reads `text` (given to the option `flag`) as a point in time:
///
/// - RFC 3339 with an offset: `2026-11-23T10:00:00Z`, `2026-11-23T10:00:00+01:00`;
/// - local time in `tz`: `2026-11-23 10:00`, `2026-11-23 10:00:30`, `2026-11-23T10:00`;
/// - a local date in `tz`, meaning its midnight: `2026-11-23`;
/// - a duration meaning that long before `now`: `7d`, `24h`, `90m`, `1h 30m`;
/// - `now`.
pub fn parse_time(
    flag: &str,
    text: &str,
    tz: &TimeZone,
    now: Timestamp,
) -> Result<Timestamp, TimeError> {
    let trimmed = text.trim();
    if trimmed.eq_ignore_ascii_case("now") {
        return Ok(now);
    }
    if let Ok(timestamp) = trimmed.parse::<Timestamp>() {
        return Ok(timestamp);
    }
    if trimmed.starts_with(|c: char| c.is_ascii_digit())
        && trimmed.ends_with(|c: char| c.is_ascii_alphabetic())
        && let Ok(ago) = humantime::parse_duration(trimmed)
    {
        return before(flag, text, now, ago);
    }
    let civil = if let Ok(civil) = trimmed.replacen(' ', "T", 1).parse::<DateTime>() {
        civil
    } else if let Ok(date) = trimmed.parse::<Date>() {
        date.to_datetime(jiff::civil::Time::midnight())
    } else {
        return Err(TimeError(format!(
            "{flag} {text}: not a time; expected {TIME_FORMS}"
        )));
    };
    match tz.to_ambiguous_zoned_datetime(civil).compatible() {
        Ok(zoned) => Ok(zoned.timestamp()),
        Err(err) => Err(TimeError(format!("{flag} {text}: {err}"))),
    }
}

/// `now - ago`, with a clear error when that is before any representable time.
pub fn before(
    flag: &str,
    text: &str,
    now: Timestamp,
    ago: Duration,
) -> Result<Timestamp, TimeError> {
    let ago = jiff::SignedDuration::try_from(ago)
        .map_err(|e| TimeError(format!("{flag} {text}: {e}")))?;
    now.checked_sub(ago)
        .map_err(|_| TimeError(format!("{flag} {text}: that is too long ago")))
}

/// A time as Unix microseconds for the visit log (times before 1970 are 0).
pub fn micros(timestamp: Timestamp) -> u64 {
    u64::try_from(timestamp.as_microsecond()).unwrap_or(0)
}

/// The time zone of `name`, or UTC when this build does not know it.
pub fn zone_named(name: &str) -> TimeZone {
    TimeZone::get(name).unwrap_or(TimeZone::UTC)
}

/// `at_micros` as local time in `tz`, `2026-11-23 10:00:05`.
pub fn local_text(at_micros: u64, tz: &TimeZone) -> String {
    match Timestamp::from_microsecond(i64::try_from(at_micros).unwrap_or(i64::MAX)) {
        Ok(ts) => ts
            .to_zoned_datetime(tz.clone())
            .strftime("%Y-%m-%d %H:%M:%S")
            .to_string(),
        Err(_) => format!("@{at_micros}us"),
    }
}

/// `at_micros` as RFC 3339 with the offset of `tz`, `2026-11-23T10:00:05+00:00`.
pub fn rfc3339_text(at_micros: u64, tz: &TimeZone) -> String {
    match Timestamp::from_microsecond(i64::try_from(at_micros).unwrap_or(i64::MAX)) {
        Ok(ts) => ts
            .to_zoned_datetime(tz.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string(),
        Err(_) => String::new(),
    }
}

/// The school's time zone, read from the `timezone` key of the policy file without
/// compiling the policy and its lists (a log command must not wait for millions of
/// list entries, nor fail because one list is broken). Returns the zone and its name;
/// when the file cannot be read or names an unknown zone, UTC and a warning on
/// standard error.
pub fn policy_timezone(policy_file: &Path) -> (TimeZone, String) {
    match read_policy_timezone(policy_file) {
        Ok(name) => match TimeZone::get(&name) {
            Ok(tz) => (tz, name),
            Err(err) => {
                eprintln!(
                    "safegate: warning: policy {}: timezone {name:?}: {err}; showing times in UTC",
                    policy_file.display()
                );
                (TimeZone::UTC, "UTC".to_owned())
            }
        },
        Err(err) => {
            eprintln!("safegate: warning: {err}; showing times in UTC");
            (TimeZone::UTC, "UTC".to_owned())
        }
    }
}

fn read_policy_timezone(policy_file: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(policy_file)
        .map_err(|e| format!("cannot read policy {}: {e}", policy_file.display()))?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| format!("policy {}: {}", policy_file.display(), e.message()))?;
    match table.get("timezone") {
        None => Ok(POLICY_DEFAULT_TIMEZONE.to_owned()),
        Some(toml::Value::String(name)) => Ok(name.clone()),
        Some(_) => Err(format!(
            "policy {}: timezone must be a string",
            policy_file.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn london() -> TimeZone {
        TimeZone::get("Europe/London").unwrap()
    }

    fn now() -> Timestamp {
        "2026-07-01T12:00:00Z".parse().unwrap()
    }

    fn parsed(text: &str) -> String {
        parse_time("--since", text, &london(), now())
            .unwrap_or_else(|e| panic!("{e:#}"))
            .to_string()
    }

    #[test]
    fn every_form_is_read_in_the_policy_zone() {
        assert_eq!(parsed("2026-11-23T10:00:00Z"), "2026-11-23T10:00:00Z");
        assert_eq!(parsed("2026-07-01T10:00:00+02:00"), "2026-07-01T08:00:00Z");
        // Summer time in London: local 10:00 is 09:00 UTC; winter: the same.
        assert_eq!(parsed("2026-07-01 10:00"), "2026-07-01T09:00:00Z");
        assert_eq!(parsed("2026-11-23 10:00:30"), "2026-11-23T10:00:30Z");
        assert_eq!(parsed("2026-07-01T10:00"), "2026-07-01T09:00:00Z");
        assert_eq!(parsed("2026-07-02"), "2026-07-01T23:00:00Z");
        assert_eq!(parsed("7d"), "2026-06-24T12:00:00Z");
        assert_eq!(parsed("24h"), "2026-06-30T12:00:00Z");
        assert_eq!(parsed("1h 30m"), "2026-07-01T10:30:00Z");
        assert_eq!(parsed("now"), "2026-07-01T12:00:00Z");
    }

    #[test]
    fn nonsense_names_the_flag_and_the_forms() {
        for bad in ["yesterday", "2026-13-01", "10:00", "", "7 parsecs"] {
            let error = parse_time("--until", bad, &london(), now())
                .map(|t| t.to_string())
                .unwrap_err();
            let text = error.to_string();
            assert!(text.contains("--until"), "{text}");
        }
        let error = parse_time("--since", "nonsense", &london(), now()).unwrap_err();
        assert!(format!("{error}").contains("RFC 3339"), "{error}");
    }

    #[test]
    fn local_text_uses_the_zone() {
        let micros = micros("2026-07-01T09:00:00Z".parse().unwrap());
        assert_eq!(local_text(micros, &london()), "2026-07-01 10:00:00");
        assert_eq!(rfc3339_text(micros, &london()), "2026-07-01T10:00:00+01:00");
        assert_eq!(local_text(micros, &TimeZone::UTC), "2026-07-01 09:00:00");
    }

    #[test]
    fn policy_timezone_is_read_without_compiling() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("policy.toml");
        std::fs::write(&file, "timezone = \"America/New_York\"\n[roles.pupil]\n").unwrap();
        assert_eq!(policy_timezone(&file).1, "America/New_York");
        std::fs::write(&file, "default_role = \"pupil\"\n").unwrap();
        assert_eq!(policy_timezone(&file).1, "Europe/London");
        std::fs::write(&file, "timezone = \"Mars/Olympus\"\n").unwrap();
        assert_eq!(policy_timezone(&file).1, "UTC");
        assert_eq!(policy_timezone(&dir.path().join("missing.toml")).1, "UTC");
    }
}
