//! `Retry-After`: how long a 429 (or 503) answer asks us to wait, read from hostile
//! text.
//!
//! Used for the model API (`agent::chat`) and for streamable-HTTP MCP servers
//! (`mcp::http_client`); the wait becomes a cluster-wide pause (`Limiter::pause`).
//! Guarantees:
//! - Both forms of RFC 9110 are read: delay-seconds (`120`) and an HTTP-date
//!   (`Wed, 21 Oct 2015 07:28:00 GMT`, and the two obsolete date forms); a date in the
//!   past is a wait of zero.
//! - The wait is never longer than `queue::limits::MAX_PAUSE` (10 min): a huge or
//!   hostile value (`18446744073709551615`, a date in the year 9999) is cut to it, never
//!   an overflow.
//! - Anything else (empty, negative, fractional, longer than [`MAX_LEN`] bytes) is no
//!   `Retry-After` at all.

use std::time::{Duration, SystemTime};

use crate::queue::limits::MAX_PAUSE;

/// The longest value read (rmcp keeps at most 128 bytes of it too; an HTTP-date is 29).
pub const MAX_LEN: usize = 128;

/// The wait `value` asks for, at `now` (for an HTTP-date); see the module doc.
pub fn parse(value: &str, now: SystemTime) -> Option<Duration> {
    if value.len() > MAX_LEN {
        return None;
    }
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    let wait = if value.bytes().all(|b| b.is_ascii_digit()) {
        // All digits: only an overflow can fail, and that is a very long wait.
        Duration::from_secs(
            value
                .parse::<u64>()
                .unwrap_or(u64::MAX)
                .min(MAX_PAUSE.as_secs()),
        )
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_PAUSE))
}

/// The wait a `Retry-After` header value asks for, now; see [`parse`].
pub fn from_header(value: &http::HeaderValue) -> Option<Duration> {
    parse(value.to_str().ok()?, SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn seconds_are_read_and_cut_to_the_longest_pause() {
        let now = at(1_445_412_480);
        assert_eq!(parse("2", now), Some(Duration::from_secs(2)));
        assert_eq!(parse(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse("18446744073709551615", now), Some(MAX_PAUSE));
        assert_eq!(parse("99999999999999999999999999", now), Some(MAX_PAUSE));
    }

    #[test]
    fn http_dates_are_read_relative_to_now() {
        // Wed, 21 Oct 2015 07:28:00 GMT is 1445412480.
        let now = at(1_445_412_480 - 90);
        assert_eq!(
            parse("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(90))
        );
        // The obsolete RFC 850 and asctime forms.
        assert_eq!(
            parse("Wednesday, 21-Oct-15 07:28:00 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse("Wed Oct 21 07:28:00 2015", now),
            Some(Duration::from_secs(90))
        );
        // In the past: go now. Far in the future: the longest pause.
        assert_eq!(
            parse("Wed, 21 Oct 2015 07:28:00 GMT", at(1_445_412_480 + 5)),
            Some(Duration::ZERO)
        );
        assert_eq!(parse("Fri, 31 Dec 9999 23:59:59 GMT", now), Some(MAX_PAUSE));
    }

    #[test]
    fn anything_else_is_no_retry_after() {
        let now = at(1_445_412_480);
        for bad in [
            "",
            "  ",
            "-1",
            "1.5",
            "soon",
            "2 seconds",
            "Wed, 32 Oct 2015 07:28:00 GMT",
        ] {
            assert_eq!(parse(bad, now), None, "{bad:?}");
        }
        assert_eq!(parse(&"1".repeat(MAX_LEN + 1), now), None);
    }
}
