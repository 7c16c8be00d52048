//! `HealthBook`: which servers keep crashing, and when they may be started again.
//!
//! A *crash* is a server that exited (or failed to start) when it should have kept
//! serving: it died during a call, or during `initialize`. For each server:
//! 1. After a crash, the next start waits an exponential backoff:
//!    `restart_backoff * 2^(consecutive crashes - 1)`, capped at `restart_backoff_max`
//!    (100 ms, 200 ms, 400 ms ... by default). A job that needs the server waits for the
//!    backoff if its deadline allows, else fails.
//! 2. `crash_loop_threshold` crashes within `crash_loop_window` (5 in 60 s by default)
//!    mark the server *unhealthy* for `unhealthy_for` (30 s): jobs that need it fail
//!    fast with an error that says so, without starting anything.
//! 3. When that window has passed, the next job tries the server again. A crash then
//!    marks it unhealthy again at once (the crashes are still in the window); a
//!    successful call clears its record.
//!
//! Pure bookkeeping over `Instant`s given by the caller, so it is tested without clocks.
//! Every crash it records is also counted in `mcpq_server_crashes_total` ([`Metrics`]),
//! and the start that follows a crash in `mcpq_server_restarts_total`
//! ([`HealthBook::start_is_restart`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::backoff::Backoff;
use crate::metrics::Metrics;

/// The knobs of [`HealthBook`] (the worker takes them from `[defaults]` in the config,
/// through `mcp::health_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Backoff after the first crash; doubles with each consecutive crash.
    pub restart_backoff: Duration,
    /// Upper bound of the backoff.
    pub restart_backoff_max: Duration,
    /// Crashes within `crash_loop_window` that make a server unhealthy.
    pub crash_loop_threshold: u32,
    /// The window in which crashes are counted.
    pub crash_loop_window: Duration,
    /// How long an unhealthy server is not started at all.
    pub unhealthy_for: Duration,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            restart_backoff: Duration::from_millis(100),
            restart_backoff_max: Duration::from_secs(10),
            crash_loop_threshold: 5,
            crash_loop_window: Duration::from_secs(60),
            unhealthy_for: Duration::from_secs(30),
        }
    }
}

/// May a server be started now?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Yes.
    Ready,
    /// After this instant (restart backoff after a crash).
    NotBefore(Instant),
    /// No: it is in a crash loop until `until`.
    Unhealthy {
        /// Crashes counted in the window.
        crashes: u32,
        /// When it may be tried again.
        until: Instant,
    },
}

#[derive(Debug, Default)]
struct Record {
    crashes: VecDeque<Instant>,
    consecutive: u32,
    last_crash: Option<Instant>,
    unhealthy_until: Option<Instant>,
}

/// Crash records of every server.
#[derive(Debug, Default)]
pub struct HealthBook {
    policy: HealthPolicy,
    servers: Mutex<HashMap<String, Record>>,
    /// Crashes not yet followed by a start, by server: the next starts are restarts.
    /// Kept apart from `servers`, which a success clears: a crashed pooled session may
    /// be replaced after another session served calls.
    owed_restarts: Mutex<HashMap<String, u32>>,
    /// What a success does not clear, for reports: crashes since start, the last error.
    facts: Mutex<HashMap<String, ServerFacts>>,
    /// Takes the secrets out of an error before it is kept ([`HealthBook::set_redactor`]).
    redactor: std::sync::OnceLock<RedactFn>,
    metrics: Metrics,
}

/// What takes the secrets out of a text (the worker's `Redactor`, which lives in a
/// higher layer: handed down as a function).
pub type Redact = std::sync::Arc<dyn Fn(&str) -> String + Send + Sync>;

/// A [`Redact`] in the book (Debug without showing anything).
struct RedactFn(Redact);

impl std::fmt::Debug for RedactFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Redact")
    }
}

/// Longest error message and stderr tail kept per server in [`ServerFacts`].
pub const MAX_FACT_CHARS: usize = 4000;

/// What this process saw of one server since it started (`mcpq servers`, the dashboard).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerFacts {
    /// Crashes recorded since start (a success does not clear them).
    pub crashes: u64,
    /// The last error a start or a call of it came to, if any.
    pub last_error: Option<LastError>,
}

/// One error of a server, as kept for reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastError {
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
    /// The error (its first [`MAX_FACT_CHARS`] characters).
    pub message: String,
    /// The server's stderr tail with it, if any (its last [`MAX_FACT_CHARS`] characters).
    pub stderr_tail: Option<String>,
}

impl HealthBook {
    /// An empty book with `policy`.
    pub fn new(policy: HealthPolicy) -> Self {
        Self::with_metrics(policy, Metrics::default())
    }

    /// An empty book with `policy`, counting crashes in `metrics`.
    pub fn with_metrics(policy: HealthPolicy, metrics: Metrics) -> Self {
        HealthBook {
            policy,
            servers: Mutex::default(),
            owed_restarts: Mutex::default(),
            facts: Mutex::default(),
            redactor: std::sync::OnceLock::new(),
            metrics,
        }
    }

    /// Called before each start of `server`: true (and counted in
    /// `mcpq_server_restarts_total`) when a crash of it has not been followed by a start
    /// yet, so this start replaces what crashed.
    pub fn start_is_restart(&self, server: &str) -> bool {
        let mut owed = self.owed_restarts.lock().unwrap_or_else(|p| p.into_inner());
        match owed.get_mut(server) {
            Some(n) if *n > 0 => {
                *n -= 1;
                if *n == 0 {
                    owed.remove(server);
                }
                drop(owed);
                self.metrics.server_restarted(server);
                true
            }
            _ => false,
        }
    }

    /// The policy in use.
    pub fn policy(&self) -> HealthPolicy {
        self.policy
    }

    /// Whether `server` may be started at `now`.
    pub fn admission(&self, server: &str, now: Instant) -> Admission {
        let servers = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        let Some(record) = servers.get(server) else {
            return Admission::Ready;
        };
        if let Some(until) = record.unhealthy_until.filter(|&u| u > now) {
            let crashes = record
                .crashes
                .iter()
                .filter(|&&t| now.saturating_duration_since(t) <= self.policy.crash_loop_window)
                .count() as u32;
            return Admission::Unhealthy { crashes, until };
        }
        match record.last_crash {
            Some(last) if record.consecutive > 0 => {
                let at = last + self.backoff(record.consecutive);
                if at > now {
                    Admission::NotBefore(at)
                } else {
                    Admission::Ready
                }
            }
            _ => Admission::Ready,
        }
    }

    /// The backoff after `consecutive` crashes in a row.
    pub fn backoff(&self, consecutive: u32) -> Duration {
        Backoff::new(self.policy.restart_backoff, self.policy.restart_backoff_max)
            .delay(consecutive)
    }

    /// A word for `server`'s state at `now`: `ok`, `backoff` (restarting after a crash)
    /// or `unhealthy` (in a crash loop), with the time until that ends.
    pub fn describe(&self, server: &str, now: Instant) -> (&'static str, Option<Duration>) {
        match self.admission(server, now) {
            Admission::Ready => ("ok", None),
            Admission::NotBefore(at) => ("backoff", Some(at.saturating_duration_since(now))),
            Admission::Unhealthy { until, .. } => {
                ("unhealthy", Some(until.saturating_duration_since(now)))
            }
        }
    }

    /// Redacts every error [`HealthBook::note_error`] keeps from now on (the worker
    /// sets its redactor once, at start; a second call is ignored).
    pub fn set_redactor(&self, redact: Redact) {
        let _ = self.redactor.set(RedactFn(redact));
    }

    /// Keeps `message` (and the stderr tail) as `server`'s last error, for reports:
    /// redacted whole first (a secret across the cut is still found), then cut.
    pub fn note_error(&self, server: &str, message: &str, stderr_tail: Option<&str>) {
        let redact = |t: &str| match self.redactor.get() {
            Some(RedactFn(r)) => r(t),
            None => t.to_string(),
        };
        let (message, stderr_tail) = (redact(message), stderr_tail.map(redact));
        let (message, stderr_tail) = (message.as_str(), stderr_tail.as_deref());
        let head = |t: &str| t.chars().take(MAX_FACT_CHARS).collect::<String>();
        let tail = |t: &str| {
            let skip = t.chars().count().saturating_sub(MAX_FACT_CHARS);
            t.chars().skip(skip).collect::<String>()
        };
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut facts = self.facts.lock().unwrap_or_else(|p| p.into_inner());
        facts.entry(server.to_string()).or_default().last_error = Some(LastError {
            at_ms,
            message: head(message),
            stderr_tail: stderr_tail.map(tail),
        });
    }

    /// What was seen of `server` since start: crashes and the last error.
    pub fn facts(&self, server: &str) -> ServerFacts {
        let facts = self.facts.lock().unwrap_or_else(|p| p.into_inner());
        facts.get(server).cloned().unwrap_or_default()
    }

    /// Records a crash of `server` at `now`; returns true if it is now unhealthy.
    pub fn record_crash(&self, server: &str, now: Instant) -> bool {
        self.metrics.server_crashed(server);
        {
            let mut facts = self.facts.lock().unwrap_or_else(|p| p.into_inner());
            let f = facts.entry(server.to_string()).or_default();
            f.crashes = f.crashes.saturating_add(1);
        }
        {
            let mut owed = self.owed_restarts.lock().unwrap_or_else(|p| p.into_inner());
            let n = owed.entry(server.to_string()).or_default();
            *n = n.saturating_add(1);
        }
        let mut servers = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        let record = servers.entry(server.to_string()).or_default();
        record.crashes.push_back(now);
        while record
            .crashes
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) > self.policy.crash_loop_window)
        {
            record.crashes.pop_front();
        }
        record.consecutive = record.consecutive.saturating_add(1);
        record.last_crash = Some(now);
        if record.crashes.len() as u32 >= self.policy.crash_loop_threshold {
            record.unhealthy_until = Some(now + self.policy.unhealthy_for);
            true
        } else {
            false
        }
    }

    /// Records that `server` served a call: its crash record is cleared.
    pub fn record_success(&self, server: &str) {
        let mut servers = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        servers.remove(server);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book() -> HealthBook {
        HealthBook::new(HealthPolicy {
            restart_backoff: Duration::from_millis(100),
            restart_backoff_max: Duration::from_secs(1),
            crash_loop_threshold: 3,
            crash_loop_window: Duration::from_secs(10),
            unhealthy_for: Duration::from_secs(5),
        })
    }

    #[test]
    fn facts_outlive_a_success_and_are_cut() {
        let b = book();
        let t0 = Instant::now();
        b.record_crash("s", t0);
        b.record_crash("s", t0 + Duration::from_millis(150));
        b.note_error(
            "s",
            &"m".repeat(MAX_FACT_CHARS + 10),
            Some(&format!("{}end", "x".repeat(MAX_FACT_CHARS))),
        );
        b.record_success("s");
        let f = b.facts("s");
        assert_eq!(f.crashes, 2, "a success clears the backoff, not the count");
        let e = f.last_error.expect("the last error is kept");
        assert_eq!(e.message.chars().count(), MAX_FACT_CHARS);
        let tail = e.stderr_tail.expect("its stderr tail too");
        assert!(tail.ends_with("end"), "the tail keeps the end");
        assert_eq!(tail.chars().count(), MAX_FACT_CHARS);
        assert_eq!(b.facts("other"), ServerFacts::default());
    }

    #[test]
    fn a_secret_across_the_cut_is_redacted_before_it_is_cut() {
        let b = book();
        let secret = "sk-live-0123456789abcdef";
        let redactor = crate::redact::Redactor::new([secret.to_string()]);
        b.set_redactor(std::sync::Arc::new(move |t| redactor.text(t).into_owned()));
        // The secret straddles the first MAX_FACT_CHARS characters of the message and
        // the last MAX_FACT_CHARS of the stderr tail.
        let message = format!("{}{secret}", "m".repeat(MAX_FACT_CHARS - 5));
        let stderr = format!("{secret}{}", "e".repeat(MAX_FACT_CHARS - 5));
        b.note_error("s", &message, Some(&stderr));
        let e = b.facts("s").last_error.expect("kept");
        let tail = e.stderr_tail.expect("tail");
        for part in [&secret[..5], &secret[secret.len() - 5..]] {
            assert!(
                !e.message.ends_with(part),
                "{}",
                &e.message[MAX_FACT_CHARS - 20..]
            );
            assert!(!tail.starts_with(part), "{}", &tail[..20]);
        }
        assert!(!e.message.contains("sk-live") && !tail.contains("cdef"));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let b = book();
        assert_eq!(b.backoff(1), Duration::from_millis(100));
        assert_eq!(b.backoff(2), Duration::from_millis(200));
        assert_eq!(b.backoff(4), Duration::from_millis(800));
        assert_eq!(b.backoff(5), Duration::from_secs(1));
        assert_eq!(b.backoff(500), Duration::from_secs(1));
    }

    #[test]
    fn a_crash_delays_the_next_start_by_the_backoff() {
        let b = book();
        let t0 = Instant::now();
        assert_eq!(b.admission("s", t0), Admission::Ready);
        assert!(!b.record_crash("s", t0));
        assert_eq!(
            b.admission("s", t0),
            Admission::NotBefore(t0 + Duration::from_millis(100))
        );
        assert_eq!(
            b.admission("s", t0 + Duration::from_millis(100)),
            Admission::Ready
        );
        assert!(!b.record_crash("s", t0 + Duration::from_millis(150)));
        assert_eq!(
            b.admission("s", t0 + Duration::from_millis(150)),
            Admission::NotBefore(t0 + Duration::from_millis(350))
        );
        // Another server is not affected.
        assert_eq!(b.admission("other", t0), Admission::Ready);
    }

    #[test]
    fn a_crash_loop_marks_unhealthy_until_the_window_passes() {
        let b = book();
        let t0 = Instant::now();
        b.record_crash("s", t0);
        b.record_crash("s", t0 + Duration::from_secs(1));
        assert!(b.record_crash("s", t0 + Duration::from_secs(2)));
        let until = t0 + Duration::from_secs(7);
        assert_eq!(
            b.admission("s", t0 + Duration::from_secs(3)),
            Admission::Unhealthy { crashes: 3, until }
        );
        // After the window it may be tried again (once its backoff, capped at 1 s, is over).
        assert_eq!(b.admission("s", until), Admission::Ready);
        // ... and a crash then makes it unhealthy again at once.
        assert!(b.record_crash("s", until));
        b.record_success("s");
        assert_eq!(b.admission("s", until), Admission::Ready);
    }

    #[test]
    fn old_crashes_leave_the_window() {
        let b = book();
        let t0 = Instant::now();
        b.record_crash("s", t0);
        b.record_crash("s", t0 + Duration::from_secs(1));
        // 20 s later the first two are out of the 10 s window: not a loop.
        assert!(!b.record_crash("s", t0 + Duration::from_secs(21)));
    }

    #[test]
    fn each_crash_makes_the_next_start_a_restart_even_after_a_success() {
        let b = book();
        let t0 = Instant::now();
        assert!(!b.start_is_restart("s"), "a first start");
        b.record_crash("s", t0);
        b.record_crash("s", t0);
        // Another session of the server served a call meanwhile: still owed.
        b.record_success("s");
        assert!(b.start_is_restart("s"));
        assert!(b.start_is_restart("s"));
        assert!(!b.start_is_restart("s"));
        assert!(!b.start_is_restart("other"));
    }
}
