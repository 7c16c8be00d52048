//! The schedule loop: every worker submits the jobs of the cron schedules' ticks
//! (`config::schedules` says what a schedule is and what is promised).
//!
//! Each round ([`SCHEDULE_INTERVAL`]), for each schedule:
//! 1. read the newest tick fired, from the hash `{ns}:schedules` (one field per name,
//!    `{"tick", "job", "fired_at"}`); an unreadable field (not JSON, written by someone
//!    else) is logged and read as "never fired", which fires only on-time ticks;
//! 2. compute the ticks due ([`Schedule::due`]: on-time ones, and missed ones as
//!    `catch_up` says, bounded);
//! 3. submit each tick's job with the idempotency key `schedule:NAME:TICK_MS`: on any
//!    number of workers one job per tick, the others get its id back;
//! 4. record the tick (`lua/schedule_mark.lua`, which only moves forward).
//!
//! A worker that dies between 3 and 4 leaves the tick unrecorded: the next round (its
//! own or another worker's) submits it again and gets the same job back, as long as
//! the idempotency key lives (`queue.idempotency_ttl`, which also bounds how far back
//! a catch-up reaches).

use std::collections::HashMap;
use std::time::Duration;

use crate::queue::Conn;
use serde::{Deserialize, Serialize};

use super::{scripts, Keys, Producer, QueueError, QueueSettings};
use crate::config::schedules::Schedule;

/// How often each worker looks at the schedules: a tick is submitted within this
/// after its time (4 cheap reads a second per schedule).
pub const SCHEDULE_INTERVAL: Duration = Duration::from_millis(250);

/// A schedule's last fired tick, as `{ns}:schedules` keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fired {
    /// The tick (ms since the epoch).
    pub tick: i64,
    /// The job of that tick.
    pub job: String,
    /// When it was recorded (ms, Redis's clock).
    #[serde(default)]
    pub fired_at: i64,
}

/// What `{ns}:schedules` holds for one schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LastRun {
    /// Nothing: never fired (or the record was removed).
    Never,
    /// Its newest fired tick.
    Fired(Fired),
    /// Something that is not a record (written by someone else): why.
    Unreadable(String),
}

impl LastRun {
    /// The newest fired tick, if readable.
    pub fn tick(&self) -> Option<i64> {
        match self {
            LastRun::Fired(f) => Some(f.tick),
            _ => None,
        }
    }
}

fn judge(raw: Option<Vec<u8>>) -> LastRun {
    match raw {
        None => LastRun::Never,
        Some(bytes) if bytes.len() > 1000 => {
            LastRun::Unreadable(format!("a {}-byte value, not a record", bytes.len()))
        }
        Some(bytes) => match serde_json::from_slice::<Fired>(&bytes) {
            Ok(f) => LastRun::Fired(f),
            Err(e) => LastRun::Unreadable(format!("not a schedule record: {e}")),
        },
    }
}

/// The last runs of schedules `names` (one HMGET; a key of another type reads as
/// unreadable for each).
pub async fn last_runs(
    conn: &mut Conn,
    keys: &Keys,
    names: &[&str],
) -> Result<HashMap<String, LastRun>, QueueError> {
    if names.is_empty() {
        return Ok(HashMap::new());
    }
    let values: Vec<Option<Vec<u8>>> = match redis::cmd("HMGET")
        .arg(keys.schedules())
        .arg(names)
        .query_async(conn)
        .await
    {
        Ok(v) => v,
        Err(e) if e.code() == Some("WRONGTYPE") => {
            let why = format!("{} is not a hash", keys.schedules());
            return Ok(names
                .iter()
                .map(|n| (n.to_string(), LastRun::Unreadable(why.clone())))
                .collect());
        }
        Err(e) => return Err(e.into()),
    };
    Ok(names
        .iter()
        .zip(values)
        .map(|(n, v)| (n.to_string(), judge(v)))
        .collect())
}

/// Records that `name` fired `tick` as job `id`; false when a newer tick was recorded.
pub async fn mark(
    conn: &mut Conn,
    keys: &Keys,
    name: &str,
    tick: i64,
    id: &str,
) -> Result<bool, QueueError> {
    let changed: u8 = scripts::SCHEDULE_MARK
        .prepare_invoke()
        .key(keys.script_key())
        .arg(keys.prefix())
        .arg(name)
        .arg(tick)
        .arg(id)
        .invoke_async(conn)
        .await?;
    Ok(changed == 1)
}

/// One round over `schedules` at `now` (ms): submits the due ticks' jobs and records
/// them; returns how many jobs were created (ticks another worker fired count 0).
pub async fn fire_due(
    producer: &Producer,
    schedules: &[Schedule],
    now: i64,
) -> Result<usize, QueueError> {
    let mut conn = producer.connection().clone();
    let keys = producer.keys().clone();
    let names: Vec<&str> = schedules.iter().map(|s| s.name.as_str()).collect();
    let last = last_runs(&mut conn, &keys, &names).await?;
    let horizon = QueueSettings::secs(producer.settings().idempotency_ttl) as i64 * 1000;
    let mut created = 0;
    for schedule in schedules {
        // One schedule's failure (a queue cap, a payload over the limit, Redis) is its
        // own: the others fire all the same.
        match fire_one(producer, &mut conn, &keys, schedule, &last, now, horizon).await {
            Ok(n) => created += n,
            Err(e) => {
                tracing::warn!(schedule = %schedule.name, "schedule round failed (retrying): {e}")
            }
        }
    }
    Ok(created)
}

/// A record's tick further ahead than this of the worker's clock is not believed (a
/// clock that jumped, or someone else's write): it would silence the schedule.
pub const FUTURE_TICK_GRACE_MS: i64 = 60_000;

/// [`fire_due`] for one schedule.
async fn fire_one(
    producer: &Producer,
    conn: &mut crate::queue::Conn,
    keys: &Keys,
    schedule: &Schedule,
    last: &std::collections::HashMap<String, LastRun>,
    now: i64,
    horizon: i64,
) -> Result<usize, QueueError> {
    let mut created = 0;
    {
        let last = last.get(&schedule.name).unwrap_or(&LastRun::Never);
        if let LastRun::Unreadable(why) = last {
            tracing::warn!(
                schedule = %schedule.name,
                "the last run of the schedule in {} is unreadable ({why}): taken as never fired; the next tick overwrites it",
                keys.schedules()
            );
        }
        let last_tick = last.tick().filter(|t| *t <= now + FUTURE_TICK_GRACE_MS);
        if last_tick != last.tick() {
            tracing::warn!(
                schedule = %schedule.name,
                "the last run of the schedule is in the future (a clock that jumped, or someone else's write): not believed; the next tick overwrites it"
            );
        }
        let due = schedule.due(last_tick, now, horizon);
        if due.skipped > 0 {
            tracing::debug!(
                schedule = %schedule.name,
                skipped = due.skipped,
                catch_up = schedule.catch_up.as_str(),
                "ticks missed while no worker ran were skipped"
            );
        }
        for tick in due.fire {
            let job = schedule.job_for(tick);
            let submitted = producer.submit(&job).await?;
            if submitted.created {
                created += 1;
                tracing::info!(schedule = %schedule.name, tick, job = %submitted.id, "schedule fired");
            }
            mark(conn, keys, &schedule.name, tick, &submitted.id).await?;
        }
    }
    Ok(created)
}

/// Fires the schedules for ever (abort the task to stop); errors are logged and the
/// next round tries again (a tick not recorded is fired again, the same job).
pub async fn schedule_loop(producer: Producer, schedules: Vec<Schedule>) {
    if schedules.is_empty() {
        return;
    }
    loop {
        let now = super::results::now_ms() as i64;
        if let Err(e) = fire_due(&producer, &schedules, now).await {
            tracing::warn!("schedule round failed (retrying): {e}");
        }
        tokio::time::sleep(SCHEDULE_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_judged_never_trusted() {
        assert_eq!(judge(None), LastRun::Never);
        assert_eq!(
            judge(Some(br#"{"tick":5,"job":"j","fired_at":6}"#.to_vec())).tick(),
            Some(5)
        );
        assert!(matches!(
            judge(Some(b"garbage".to_vec())),
            LastRun::Unreadable(_)
        ));
        assert!(matches!(
            judge(Some(vec![b'x'; 5000])),
            LastRun::Unreadable(_)
        ));
    }
}
