//! Rates in configuration: `"60/min"`, `"10/s"`, `"200000/min"`, `"1000/h"`.
//!
//! A [`Rate`] is a count per period, read from `COUNT/UNIT` where the unit is `s`
//! (`sec`, `second`), `min` (`m`, `minute`) or `h` (`hour`). It is what the cluster-wide
//! limiter (`queue::limits`) enforces: at most `count` events in any window of `period`.
//!
//! Bounds, checked when the config is read (the error names the key): the count is 1 to
//! [`MAX_RATE_COUNT`]; a request rate (`servers.NAME.rate`, `llm.rate`) is at most
//! [`MAX_REQUEST_COUNT`], because the limiter keeps one Redis entry per call of the
//! window ([`Rate::check_requests`]).

use std::fmt;
use std::time::Duration;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// Largest count of any rate: 10^9 (tokens per hour of a big deployment fit; the
/// limiter's arithmetic in ms stays exact in Lua's doubles).
pub const MAX_RATE_COUNT: u64 = 1_000_000_000;

/// Largest count of a request rate: the sliding window keeps one sorted-set entry per
/// call within the window, so this bounds that set (100 000 entries, a few MB).
pub const MAX_REQUEST_COUNT: u64 = 100_000;

/// A count of events per period (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Events allowed per `period` (1..=[`MAX_RATE_COUNT`]).
    pub count: u64,
    /// The window: 1 s, 1 min or 1 h.
    pub period: Duration,
}

impl Rate {
    /// Parses `COUNT/UNIT` (see the module doc).
    pub fn parse(text: &str) -> Result<Rate, String> {
        let text = text.trim();
        let hint = "write COUNT/UNIT, e.g. \"60/min\", \"10/s\" or \"1000/h\"";
        let Some((count, unit)) = text.split_once('/') else {
            return Err(format!("`{}` is not a rate; {hint}", shown(text)));
        };
        let count: u64 = count.trim().parse().map_err(|_| {
            format!(
                "`{}` is not a rate: the count must be a whole number; {hint}",
                shown(text)
            )
        })?;
        if !(1..=MAX_RATE_COUNT).contains(&count) {
            return Err(format!(
                "`{}`: the count must be between 1 and {MAX_RATE_COUNT}",
                shown(text)
            ));
        }
        let period = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => {
                return Err(format!(
                    "`{}`: the unit must be s, min or h; {hint}",
                    shown(text)
                ))
            }
        };
        Ok(Rate { count, period })
    }

    /// Refuses a request rate over [`MAX_REQUEST_COUNT`] per period.
    pub fn check_requests(&self) -> Result<(), String> {
        if self.count > MAX_REQUEST_COUNT {
            return Err(format!(
                "{self}: at most {MAX_REQUEST_COUNT} requests per window (the limiter keeps one entry per call)"
            ));
        }
        Ok(())
    }

    /// The period in milliseconds.
    pub fn period_ms(&self) -> u64 {
        self.period.as_millis() as u64
    }
}

/// A rate as errors show it: cut to 40 characters, control characters escaped.
fn shown(text: &str) -> String {
    text.chars()
        .take(40)
        .flat_map(char::escape_default)
        .collect()
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.period.as_secs() {
            1 => "s",
            60 => "min",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Rate, D::Error> {
        let text = String::deserialize(d)?;
        Rate::parse(&text).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_examples_parse() {
        assert_eq!(
            Rate::parse("60/min").expect("a rate"),
            Rate {
                count: 60,
                period: Duration::from_secs(60)
            }
        );
        assert_eq!(Rate::parse("10/s").expect("a rate").period_ms(), 1000);
        assert_eq!(
            Rate::parse(" 200000 / minute ").expect("a rate").count,
            200_000
        );
        assert_eq!(Rate::parse("5/h").expect("a rate").to_string(), "5/h");
    }

    #[test]
    fn bad_rates_are_refused_with_a_hint() {
        for bad in [
            "",
            "60",
            "0/s",
            "-1/s",
            "1.5/s",
            "10/day",
            "18446744073709551616/s",
            "1000000001/h",
        ] {
            let e = Rate::parse(bad).expect_err("refused");
            assert!(
                e.contains("rate") || e.contains("count") || e.contains("unit"),
                "{e}"
            );
        }
        assert!(Rate::parse("100001/s")
            .expect("a rate")
            .check_requests()
            .is_err());
        assert!(Rate::parse("100000/s")
            .expect("a rate")
            .check_requests()
            .is_ok());
    }

    #[test]
    fn a_hostile_rate_is_shown_cut_and_escaped() {
        let e = Rate::parse(&format!("x\n{}", "y".repeat(1000))).expect_err("refused");
        assert!(!e.contains('\n') && e.len() < 200, "{e}");
    }
}
