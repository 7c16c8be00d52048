//! Durations in configuration files and job envelopes.
//!
//! Written as human strings (`"30s"`, `"250ms"`, `"5m"`, parsed by `humantime`) or as a
//! plain number of seconds. Always written back as a human string.

use std::time::Duration;

use serde::{de, Deserialize, Deserializer, Serializer};

/// Parses `"30s"`, `"1m 30s"`, `"250ms"` or a bare number of seconds (`"30"`).
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return from_secs(secs);
    }
    humantime::parse_duration(text).map_err(|e| {
        format!("`{text}` is not a duration ({e}); write e.g. \"30s\", \"500ms\" or \"2m\"")
    })
}

fn from_secs(secs: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("{secs} is not a valid number of seconds"))
}

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
    fn formats_back_to_what_it_parses() {
        let d = Duration::from_millis(90_500);
        assert_eq!(parse(&format(d)), Ok(d));
    }
}
