//! Durations in configuration files and job envelopes.
//!
//! Written as human strings (`"30s"`, `"250ms"`, `"5m"`, parsed by `humantime`) or as a
//! plain number of seconds. Always written back as a human string.
//!
//! Guarantee: no duration longer than [`MAX`] (365 days) is ever read, from a config
//! file, a job or a flag. Every deadline mcpq computes is `now + a duration it read`, so
//! this bound is what keeps `Instant + duration` from overflowing (and panicking) on a
//! hostile value such as `"18446744073709551615s"`. Fields with a tighter meaning check
//! their own maximum on top (a job's `options.timeout`: [`crate::job::MAX_JOB_TIMEOUT`]).

use std::time::Duration;

use serde::{de, Deserialize, Deserializer, Serializer};

/// The longest duration mcpq reads anywhere: 365 days. Long enough for any TTL or
/// deadline a queue needs, short enough that `Instant::now() + MAX` cannot overflow.
pub const MAX: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses `"30s"`, `"1m 30s"`, `"250ms"` or a bare number of seconds (`"30"`); refuses
/// anything longer than [`MAX`].
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return from_secs(secs);
    }
    match humantime::parse_duration(text) {
        Ok(d) => bounded(d, text),
        Err(humantime::DurationError::NumberOverflow) => Err(too_long(text)),
        Err(e) => Err(format!(
            "`{text}` is not a duration ({e}); write e.g. \"30s\", \"500ms\" or \"2m\""
        )),
    }
}

fn from_secs(secs: f64) -> Result<Duration, String> {
    if secs.is_finite() && secs > MAX.as_secs_f64() {
        return Err(too_long(&secs.to_string()));
    }
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("{secs} is not a valid number of seconds"))
}

fn bounded(d: Duration, text: &str) -> Result<Duration, String> {
    if d > MAX {
        Err(too_long(text))
    } else {
        Ok(d)
    }
}

fn too_long(text: &str) -> String {
    format!("`{text}` is longer than the longest duration mcpq accepts ({MAX_TEXT})")
}

/// [`MAX`] as messages say it.
pub const MAX_TEXT: &str = "365 days";

/// Formats a duration the way [`parse`] reads it.
pub fn format(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Text(String),
    Secs(f64),
}

/// `#[serde(with = "crate::duration")]` for a required `Duration`.
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

/// See [`serialize`].
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match Raw::deserialize(d).map_err(|_| {
        de::Error::custom("expected a duration such as \"30s\" or a number of seconds")
    })? {
        Raw::Text(t) => parse(&t).map_err(de::Error::custom),
        Raw::Secs(s) => from_secs(s).map_err(de::Error::custom),
    }
}

/// `#[serde(with = "crate::duration::option")]` for an optional `Duration`.
pub mod option {
    use super::*;

    /// Writes `None` as nothing (use with `skip_serializing_if = "Option::is_none"`).
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    /// Reads a duration; absence is handled by `#[serde(default)]`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_human_strings_and_seconds() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse("soon").is_err());
        assert!(parse("-1").is_err());
    }

    #[test]
    fn a_duration_longer_than_a_year_is_refused_naming_the_maximum() {
        for huge in [
            "18446744073709551615s",
            "1e30",
            "366d",
            "9999999999999999999",
        ] {
            let err = parse(huge).expect_err(huge);
            assert!(err.contains("365 days"), "{huge}: {err}");
        }
        assert_eq!(parse("365d"), Ok(MAX));
        let err = parse("18446744073709551615s").expect_err("huge");
        assert!(err.contains("longest duration"), "{err}");
    }

    #[test]
    fn formats_back_to_what_it_parses() {
        let d = Duration::from_millis(90_500);
        assert_eq!(parse(&format(d)), Ok(d));
    }
}
