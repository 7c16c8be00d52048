//! `[schedules.NAME]`: jobs submitted on a cron schedule by the workers.
//!
//! ```toml
//! [schedules.report]
//! cron = "0 */5 * * * *"        # sec min hour day-of-month month day-of-week (seconds optional)
//! timezone = "Europe/Paris"     # IANA name; default UTC
//! catch_up = "last"             # none (default) | last | all: ticks missed while no worker ran
//! job = { kind = "agent", payload = { steps = [
//!   { server = "echo", tool = "echo", arguments = { text = "tick" } } ] } }
//! # or: job_file = "report.json"   (relative to this file)
//! ```
//!
//! What is promised:
//! 1. Exactly one job per tick however many workers run: every worker runs the schedule
//!    loop (`queue::schedules`), and a tick's job carries the idempotency key
//!    `schedule:NAME:TICK_MS` ([`Schedule::idempotency_key`]), so the second worker to
//!    fire a tick gets the first one's job back.
//! 2. A tick is fired when it comes, within the loop's interval (250 ms). A tick older
//!    than [`ON_TIME_GRACE`] when a worker first sees it was *missed* (no worker ran):
//!    `catch_up` says what happens to missed ticks: `none` skips them, `last` fires the
//!    newest one, `all` fires each of them, at most [`MAX_CATCH_UP`] (the newest ones).
//!    Missed ticks older than `queue.idempotency_ttl` are never fired, so no catch-up
//!    can reach past the idempotency keys that keep ticks single.
//! 3. Everything is validated at load: a bad pattern, time zone or job is an error that
//!    names `schedules.NAME.KEY`.
//!
//! Caveats: ticks are computed with each worker's clock, so a worker whose clock is
//! ahead fires early by that much (the tick, and so the job, is the same on every
//! worker). The job's `id`, `options.idempotency_key` and `options.run_at` are the
//! schedule's to set, so a schedule's job may not give them.

use std::path::PathBuf;

use chrono::{DateTime, TimeZone};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use croner::Cron;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ConfigError;
use crate::job::{Job, JobId};

/// A tick at most 3 s old when a worker first sees it is fired as on time: the loop
/// looks every 250 ms, so this leaves a loaded host or a slow Redis ten rounds of slack
/// before a tick counts as missed.
pub const ON_TIME_GRACE_MS: i64 = 3_000;
/// [`ON_TIME_GRACE_MS`] as a duration, for the docs.
pub const ON_TIME_GRACE: std::time::Duration = std::time::Duration::from_millis(3_000);
/// At most 100 missed ticks are fired by `catch_up = "all"`: a minutely schedule down
/// for a day would otherwise flood the queue with 1440 jobs at once.
pub const MAX_CATCH_UP: usize = 100;
/// At most 1000 schedules: each is looked at by every worker 4 times a second.
pub const MAX_SCHEDULES: usize = 1000;
/// Schedule names are at most 200 bytes: the idempotency key `schedule:NAME:TICK`
/// must stay within a job's 256.
pub const MAX_NAME: usize = 200;
/// UTC unless told: a server's local zone would move ticks with its host.
pub const DEFAULT_TIMEZONE: &str = "UTC";

/// What to do with ticks missed while no worker ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// Skip them (default: a schedule says "every 5 minutes from now on", not "make up
    /// for lost time").
    #[default]
    None,
    /// Fire the newest missed tick once.
    Last,
    /// Fire each missed tick, at most [`MAX_CATCH_UP`].
    All,
}

impl CatchUp {
    /// The name in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::None => "none",
            CatchUp::Last => "last",
            CatchUp::All => "all",
        }
    }
}

/// One `[schedules.NAME]` table as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// The cron pattern (5 fields, or 6 with seconds first).
    pub cron: String,
    /// IANA time zone the pattern is read in (default [`DEFAULT_TIMEZONE`]).
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// The job envelope submitted at each tick (a TOML table in the job JSON's shape).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<Value>,
    /// Or a job JSON file, relative to the config file (read once, at load).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_file: Option<PathBuf>,
    /// Missed ticks: `none` (default), `last`, `all`.
    #[serde(default)]
    pub catch_up: CatchUp,
}

fn default_timezone() -> String {
    DEFAULT_TIMEZONE.to_string()
}

/// A schedule, parsed and checked: what the loop and `mcpq schedules` use.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Its name (`[schedules.NAME]`).
    pub name: String,
    /// The pattern as written.
    pub pattern: String,
    /// The parsed pattern.
    pub cron: Cron,
    /// The zone it is read in.
    pub timezone: Tz,
    /// The job submitted at each tick, without id or idempotency key.
    pub job: Job,
    /// Missed ticks.
    pub catch_up: CatchUp,
}

/// Which ticks to fire now ([`Schedule::due`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The ticks to fire, oldest first (ms since the epoch).
    pub fire: Vec<i64>,
    /// Ticks passed over (missed, and `catch_up` did not want them).
    pub skipped: usize,
}

impl Schedule {
    /// Parses and checks `[schedules.NAME]`; errors name `schedules.NAME.KEY`.
    pub fn resolve(name: &str, config: &ScheduleConfig) -> Result<Schedule, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: format!("schedules.{name}{key}"),
            message,
        };
        if name.is_empty()
            || name.len() > MAX_NAME
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(invalid(
                "",
                format!("a schedule name is 1 to {MAX_NAME} letters, digits, '-', '_' or '.'"),
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(&config.cron)
            .map_err(|e| {
                invalid(
                    ".cron",
                    format!(
                        "`{}` is not a cron pattern ({e}); write e.g. \"0 */5 * * * *\" (sec min hour day month weekday)",
                        config.cron
                    ),
                )
            })?;
        let timezone: Tz = config.timezone.parse().map_err(|_| {
            invalid(
                ".timezone",
                format!(
                    "`{}` is not an IANA time zone; write e.g. \"UTC\" or \"Europe/Paris\"",
                    config.timezone
                ),
            )
        })?;
        let value = match (&config.job, &config.job_file) {
            (Some(job), None) => job.clone(),
            (None, Some(file)) => {
                return Err(invalid(
                    ".job_file",
                    format!(
                        "{} was not read (load the config with Config::load)",
                        file.display()
                    ),
                ))
            }
            (Some(_), Some(_)) => {
                return Err(invalid(".job", "give `job` or `job_file`, not both".into()))
            }
            (None, None) => {
                return Err(invalid(
                    "",
                    "needs a `job` (a table in the job JSON's shape) or a `job_file`".into(),
                ))
            }
        };
        for (field, present) in [
            ("id", value.get("id").is_some()),
            (
                "options.idempotency_key",
                value.pointer("/options/idempotency_key").is_some(),
            ),
            ("options.run_at", value.pointer("/options/run_at").is_some()),
        ] {
            if present {
                return Err(invalid(
                    &format!(".job.{field}"),
                    "is set by the schedule at each tick; leave it out".into(),
                ));
            }
        }
        let job = Job::from_value(value).map_err(|e| invalid(".job", e.to_string()))?;
        Ok(Schedule {
            name: name.to_string(),
            pattern: config.cron.clone(),
            cron,
            timezone,
            job,
            catch_up: config.catch_up,
        })
    }

    /// The idempotency key of the job of tick `tick_ms`: the same on every worker.
    pub fn idempotency_key(name: &str, tick_ms: i64) -> String {
        format!("{}{name}:{tick_ms}", crate::job::SCHEDULE_KEY_PREFIX)
    }

    /// The job of tick `tick_ms`: the template with a fresh id and the tick's key.
    pub fn job_for(&self, tick_ms: i64) -> Job {
        let mut job = self.job.clone();
        job.id = JobId::generate();
        job.options.idempotency_key = Some(Self::idempotency_key(&self.name, tick_ms));
        job
    }

    fn at(&self, ms: i64) -> Option<DateTime<Tz>> {
        self.timezone.timestamp_millis_opt(ms).single()
    }

    /// The first tick strictly after `ms`, if any.
    pub fn next_after(&self, ms: i64) -> Option<i64> {
        let t = self.cron.find_next_occurrence(&self.at(ms)?, false).ok()?;
        Some(t.timestamp_millis())
    }

    /// The last tick at or before `ms`, if any.
    pub fn last_at_or_before(&self, ms: i64) -> Option<i64> {
        let t = self
            .cron
            .find_previous_occurrence(&self.at(ms)?, true)
            .ok()?;
        Some(t.timestamp_millis())
    }

    /// The ticks to fire at `now` (ms) when `last` was the newest tick fired (`None`:
    /// never, or its record was unreadable: then no tick counts as missed), firing
    /// nothing older than `horizon_ms` (the idempotency ttl). On-time ticks (at most
    /// [`ON_TIME_GRACE_MS`] old) always fire; missed ones as `catch_up` says.
    /// Bounded: it walks back at most [`MAX_CATCH_UP`] + 1 missed ticks.
    pub fn due(&self, last: Option<i64>, now: i64, horizon_ms: i64) -> Due {
        let on_time_from = now - ON_TIME_GRACE_MS;
        let floor = match last {
            Some(l) => l.max(now - horizon_ms),
            None => on_time_from - 1,
        };
        let mut on_time = Vec::new();
        let mut missed = Vec::new();
        let mut cursor = self.last_at_or_before(now);
        while let Some(t) = cursor {
            if t <= floor || missed.len() > MAX_CATCH_UP {
                break;
            }
            if t >= on_time_from {
                on_time.push(t);
            } else {
                missed.push(t);
            }
            cursor = self.last_at_or_before(t - 1);
        }
        // `missed` is newest first; it may hold one more than MAX_CATCH_UP, so that a
        // longer gap still counts as skipped ticks.
        let wanted = match self.catch_up {
            CatchUp::None => 0,
            CatchUp::Last => 1,
            CatchUp::All => MAX_CATCH_UP,
        };
        let take = wanted.min(missed.len());
        let skipped = missed.len() - take;
        let mut fire: Vec<i64> = missed.into_iter().take(take).collect();
        fire.extend(on_time);
        fire.sort_unstable();
        Due { fire, skipped }
    }
}

/// Checks every schedule of a config (`servers` are the configured server names).
pub fn validate<'a>(
    schedules: &std::collections::BTreeMap<String, ScheduleConfig>,
    servers: impl Iterator<Item = &'a str> + Clone,
) -> Result<(), ConfigError> {
    if schedules.len() > MAX_SCHEDULES {
        return Err(ConfigError::Invalid {
            key: "schedules".into(),
            message: format!("at most {MAX_SCHEDULES} schedules"),
        });
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    for (name, config) in schedules {
        let schedule = Schedule::resolve(name, config)?;
        // croner takes patterns no date matches (`0 0 0 31 2 *`): such a schedule would
        // never fire, silently.
        if schedule.next_after(now).is_none() {
            return Err(ConfigError::Invalid {
                key: format!("schedules.{name}.cron"),
                message: format!("`{}` matches no date from now on", config.cron),
            });
        }
        schedule
            .job
            .check_servers(servers.clone())
            .map_err(|e| ConfigError::Invalid {
                key: format!("schedules.{name}.job"),
                message: e.to_string(),
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schedule(cron: &str, tz: &str, catch_up: CatchUp) -> Schedule {
        let config = ScheduleConfig {
            cron: cron.into(),
            timezone: tz.into(),
            job: Some(json!({"kind": "agent", "payload": {"steps": [
                {"server": "echo", "tool": "echo", "arguments": {"text": "x"}}]}})),
            job_file: None,
            catch_up,
        };
        Schedule::resolve("s", &config).expect("valid")
    }

    const MINUTE: i64 = 60_000;
    // 2026-12-01T09:00:00Z
    const T0: i64 = 1_796_115_600_000;

    #[test]
    fn ticks_follow_the_time_zone() {
        let s = schedule("0 0 9 * * *", "Europe/Paris", CatchUp::None);
        // 09:00 in Paris in December is 08:00 UTC.
        assert_eq!(s.next_after(T0 - 2 * 3_600_000), Some(T0 - 3_600_000));
        assert_eq!(s.last_at_or_before(T0), Some(T0 - 3_600_000));
    }

    #[test]
    fn on_time_ticks_fire_missed_ones_as_catch_up_says() {
        let now = T0 + 1_000; // 1 s after a minute tick
        let last = Some(T0 - 10 * MINUTE);
        let day = 86_400_000;
        let none = schedule("0 * * * * *", "UTC", CatchUp::None).due(last, now, day);
        assert_eq!(
            none,
            Due {
                fire: vec![T0],
                skipped: 9
            }
        );
        let one = schedule("0 * * * * *", "UTC", CatchUp::Last).due(last, now, day);
        assert_eq!(
            one,
            Due {
                fire: vec![T0 - MINUTE, T0],
                skipped: 8
            }
        );
        let all = schedule("0 * * * * *", "UTC", CatchUp::All).due(last, now, day);
        assert_eq!(all.fire.len(), 10);
        assert_eq!(all.fire.first(), Some(&(T0 - 9 * MINUTE)));
        // Nothing new since the last fire.
        let s = schedule("0 * * * * *", "UTC", CatchUp::All);
        assert!(s.due(Some(T0), now, day).fire.is_empty());
        // Never fired: no tick counts as missed.
        assert_eq!(s.due(None, now, day).fire, vec![T0]);
        assert!(s.due(None, T0 + 5_000, day).fire.is_empty());
    }

    #[test]
    fn catch_up_is_bounded_by_the_cap_and_the_horizon() {
        let s = schedule("* * * * * *", "UTC", CatchUp::All);
        let due = s.due(Some(T0 - 3_600_000), T0, 86_400_000);
        assert!(due.fire.len() <= MAX_CATCH_UP + 4, "{}", due.fire.len());
        assert_eq!(*due.fire.last().expect("some"), T0);
        // Nothing older than the horizon.
        let due = s.due(Some(T0 - 3_600_000), T0, 10_000);
        assert!(due.fire.iter().all(|t| *t > T0 - 10_000));
    }

    #[test]
    fn bad_patterns_zones_and_jobs_name_their_key() {
        let mut config = ScheduleConfig {
            cron: "every minute".into(),
            timezone: "UTC".into(),
            job: Some(json!({"kind": "agent", "payload": {"steps": [
                {"server": "echo", "tool": "echo"}]}})),
            job_file: None,
            catch_up: CatchUp::None,
        };
        let err = |c: &ScheduleConfig| Schedule::resolve("s", c).expect_err("refused").to_string();
        assert!(
            err(&config).contains("schedules.s.cron"),
            "{}",
            err(&config)
        );
        config.cron = "*/5 * * * *".into();
        config.timezone = "Mars/Olympus".into();
        assert!(err(&config).contains("schedules.s.timezone"));
        config.timezone = "UTC".into();
        config.job = Some(json!({"kind": "agent", "payload": {}}));
        assert!(err(&config).contains("schedules.s.job"));
        config.job = Some(json!({"id": "x", "kind": "agent", "payload": {"steps": [
            {"server": "echo", "tool": "echo"}]}}));
        assert!(err(&config).contains("schedules.s.job.id"));
        config.job = None;
        assert!(err(&config).contains("needs a `job`"));
    }

    #[test]
    fn a_pattern_no_date_matches_is_refused_at_load() {
        let config = ScheduleConfig {
            cron: "0 0 0 31 2 *".into(),
            timezone: "UTC".into(),
            job: Some(json!({"kind": "agent", "payload": {"steps": [
                {"server": "echo", "tool": "echo"}]}})),
            job_file: None,
            catch_up: CatchUp::None,
        };
        let all = std::collections::BTreeMap::from([("feb31".to_string(), config)]);
        let e = validate(&all, ["echo"].into_iter())
            .expect_err("refused")
            .to_string();
        assert!(
            e.contains("schedules.feb31.cron") && e.contains("no date"),
            "{e}"
        );
    }

    /// Pins what croner does around daylight saving (README "Delays and schedules").
    #[test]
    fn daylight_saving_fires_a_fixed_time_once_and_a_skipped_time_after_the_gap() {
        let ticks = |cron: &str, from: &str, to: &str| {
            let s = schedule(cron, "Europe/Paris", CatchUp::None);
            let ms = |t: &str| {
                chrono::DateTime::parse_from_rfc3339(t)
                    .expect("time")
                    .timestamp_millis()
            };
            let (mut at, end, mut out) = (ms(from), ms(to), Vec::new());
            while let Some(next) = s.next_after(at).filter(|n| *n <= end) {
                out.push(
                    chrono::DateTime::from_timestamp_millis(next)
                        .expect("ms")
                        .to_rfc3339(),
                );
                at = next;
            }
            out
        };
        // 2026-10-25: clocks go back from 03:00 to 02:00 (02:30 happens twice).
        let fall = ticks(
            "0 30 2 * * *",
            "2026-10-24T22:00:00Z",
            "2026-10-25T04:00:00Z",
        );
        assert_eq!(fall.len(), 1, "{fall:?}");
        // 2026-03-29: clocks go forward from 02:00 to 03:00 (02:30 never happens).
        let spring = ticks(
            "0 30 2 * * *",
            "2026-03-28T22:00:00Z",
            "2026-03-29T04:00:00Z",
        );
        assert_eq!(spring.len(), 1, "{spring:?}");
    }
}
