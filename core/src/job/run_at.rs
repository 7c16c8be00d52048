//! `options.run_at`: when a delayed job may start, as an RFC 3339 time
//! (`"2026-12-01T09:00:00Z"`, any offset; written back in UTC with milliseconds).
//!
//! Guarantee: a job with a `run_at` still in the future when it is enqueued waits in
//! `{ns}:scheduled` with status `scheduled` and is not run before that time (Redis's
//! clock judges, `lua/enqueue.lua`); it is queued within about a poll interval after it
//! (`lua/promote.lua`, run by every fetch and by every worker's rescuer tick). A time in
//! the past runs the job now: a producer that was slow to submit does not get an error
//! for it. A time more than [`MAX_DELAY`] ahead is refused.
//!
//! Caveats: `mcpq submit --delay` turns the delay into a time with the producer's clock,
//! and Redis's clock decides when it is due, so a skew between the two shifts the start
//! by that much.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{de, Deserialize, Deserializer, Serializer};

/// The longest delay: one year ([`crate::duration::MAX`]). A job meant to run later
/// belongs in a schedule or in the caller's calendar, not in the queue's memory.
pub const MAX_DELAY: Duration = crate::duration::MAX;

/// Parses an RFC 3339 time; the message says what a valid one looks like.
pub fn parse(text: &str) -> Result<SystemTime, String> {
    let at = DateTime::parse_from_rfc3339(text.trim()).map_err(|e| {
        format!("`{text}` is not an RFC 3339 time ({e}); write e.g. \"2026-12-01T09:00:00Z\"")
    })?;
    let ms = at.timestamp_millis();
    if ms < 0 {
        return Err(format!("`{text}` is before 1970"));
    }
    Ok(UNIX_EPOCH + Duration::from_millis(ms as u64))
}

/// Milliseconds since the Unix epoch (0 for a time before it).
pub fn millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The RFC 3339 form in UTC, with milliseconds.
pub fn format(at: SystemTime) -> String {
    DateTime::<Utc>::from(at).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A refusal of `at` when it lies more than [`MAX_DELAY`] after `now`.
pub fn check(at: SystemTime, now: SystemTime) -> Result<(), String> {
    match at.duration_since(now) {
        Ok(ahead) if ahead > MAX_DELAY => Err(format!(
            "{} is more than {} ahead; the longest delay is {}",
            format(at),
            crate::duration::MAX_TEXT,
            crate::duration::MAX_TEXT
        )),
        _ => Ok(()),
    }
}

/// Serde for `Option<SystemTime>` as an RFC 3339 string.
pub mod option {
    use super::*;

    /// Writes `Some` as RFC 3339 (`skip_serializing_if` keeps `None` out).
    pub fn serialize<S: Serializer>(v: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(at) => s.serialize_str(&format(*at)),
            None => s.serialize_none(),
        }
    }

    /// Reads an RFC 3339 string (or null).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| parse(&t).map_err(de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_offsets_and_writes_utc_with_milliseconds() {
        let at = parse("2026-12-01T10:00:00+01:00").expect("valid");
        assert_eq!(format(at), "2026-12-01T09:00:00.000Z");
        assert_eq!(millis(at), 1_796_115_600_000);
    }

    #[test]
    fn refuses_garbage_and_times_before_1970_and_too_far_ahead() {
        assert!(parse("tomorrow").is_err());
        assert!(parse("1969-12-31T23:59:59Z").is_err());
        let now = SystemTime::now();
        assert!(check(now + MAX_DELAY + Duration::from_secs(60), now).is_err());
        assert!(check(now + Duration::from_secs(600), now).is_ok());
        assert!(check(now - Duration::from_secs(600), now).is_ok());
    }
}
