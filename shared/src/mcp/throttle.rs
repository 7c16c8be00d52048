//! `Throttle`: the 429s (Too Many Requests) a streamable-HTTP MCP server answered on
//! one session, and the `Retry-After` each asked for.
//!
//! rmcp turns a 429 into a transport error of the call that got it, and its message
//! does not carry the `Retry-After` in a form we can reach. The session's
//! [`super::http_client::LimitedHttpClient`] sees the answer itself, so it writes it
//! here ([`Throttle::record`]); the session reads it back when a call fails
//! ([`Throttle::since`]) and reports [`super::McpError::RateLimited`] with the wait, which
//! `JobSessions::call` turns into a pause for every worker (`Limiter::pause`).
//!
//! Caveats: the slot is per session, not per request: a call that fails for another
//! reason while a 429 came on the same session after it started is reported as rate
//! limited too (it is retried the same way, so nothing is lost but the exact cause).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// One 429: when it came, and the wait it asked for (none: no usable `Retry-After`).
type TooMany = (Instant, Option<Duration>);

/// The last 429 of one session. Cheap to clone; clones share the slot.
#[derive(Debug, Clone, Default)]
pub struct Throttle {
    last: Arc<Mutex<Option<TooMany>>>,
}

impl Throttle {
    /// Notes a 429 that came now, asking for `retry_after` (none: no usable header).
    pub fn record(&self, retry_after: Option<Duration>) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), retry_after));
    }

    /// The last 429 if it came at or after `started`: `Some(retry_after)`.
    pub fn since(&self, started: Instant) -> Option<Option<Duration>> {
        let last = *self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.filter(|(at, _)| *at >= started).map(|(_, wait)| wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_429_after_the_call_started_counts() {
        let throttle = Throttle::default();
        let before = Instant::now();
        assert_eq!(throttle.since(before), None);
        throttle.clone().record(Some(Duration::from_secs(2)));
        assert_eq!(throttle.since(before), Some(Some(Duration::from_secs(2))));
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(throttle.since(Instant::now()), None);
        throttle.record(None);
        assert_eq!(throttle.since(before), Some(None));
    }
}
