//! Ending one attempt: `lua/finish.lua` stores its outcome, fenced by its attempt
//! number.
//!
//! The script writes only if the job is still `running` with this attempt. Otherwise
//! the attempt was overtaken (its lease expired and another worker took the job, or it
//! was cancelled) and its write is rejected: the record keeps the newer attempt's state
//! and counts the rejected write in `stale_writes`.

use std::time::Duration;

use crate::queue::Conn;
use serde_json::Value;

use super::fetch::millis;
use super::{scripts, JobFailure, Keys, QueueError, QueueSettings};

/// What to do with the job after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Store the result; the job is done.
    Succeeded(Value),
    /// Store the error; run again after `delay`.
    Retry {
        /// The attempt's error.
        error: JobFailure,
        /// Backoff before the next run.
        delay: Duration,
    },
    /// Store the error; the job goes to the dead-letter set.
    Dead(JobFailure),
    /// Cut off by shutdown: back to the front of its queue, attempt not counted.
    Release,
}

impl Outcome {
    fn parts(&self) -> (&'static str, String, u64) {
        let json = |f: &JobFailure| {
            serde_json::to_string(f).expect("a failure is plain data and always serializes")
        };
        match self {
            Outcome::Succeeded(v) => ("succeeded", v.to_string(), 0),
            Outcome::Retry { error, delay } => ("retry", json(error), millis(*delay)),
            Outcome::Dead(error) => ("dead", json(error), 0),
            Outcome::Release => ("release", String::new(), 0),
        }
    }
}

/// What [`finish`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    /// The outcome is stored.
    Stored,
    /// Another attempt or a cancel owns the job: nothing was stored.
    Stale {
        /// The job's status now (`cancelled`, `running`, `queued`, ...; `expired` if it
        /// is gone).
        status: String,
        /// Its attempt number now.
        attempt: u32,
    },
    /// The job's record was malformed (someone else wrote into it while the job ran):
    /// it was dead-lettered as `invalid_job` with this reason, and the outcome dropped.
    Buried(String),
}

/// Stores `outcome` of `attempt` of job `id`, if that attempt still holds it.
pub async fn finish(
    conn: &mut Conn,
    keys: &Keys,
    settings: &QueueSettings,
    id: &str,
    attempt: u32,
    outcome: &Outcome,
) -> Result<Finished, QueueError> {
    finish_in(conn, &keys.for_job(id), settings, id, attempt, outcome).await
}

/// [`finish`] in partition `keys` itself, whatever partition `id` names (an entry
/// found where its id does not belong is dead-lettered where it was found).
pub(crate) async fn finish_in(
    conn: &mut Conn,
    keys: &Keys,
    settings: &QueueSettings,
    id: &str,
    attempt: u32,
    outcome: &Outcome,
) -> Result<Finished, QueueError> {
    let (kind, body, delay) = outcome.parts();
    let answer: String = scripts::FINISH
        .prepare_invoke()
        .key(keys.script_key())
        .arg(keys.prefix())
        .arg(id)
        .arg(attempt)
        .arg(kind)
        .arg(body)
        .arg(delay)
        .arg(QueueSettings::secs(settings.result_ttl))
        .arg(QueueSettings::secs(settings.dead_ttl))
        .invoke_async(conn)
        .await?;
    if answer == "ok" {
        return Ok(Finished::Stored);
    }
    if let Some(why) = answer.strip_prefix("buried:") {
        return Ok(Finished::Buried(why.to_string()));
    }
    let mut parts = answer.splitn(3, ':').skip(1);
    Ok(Finished::Stale {
        status: parts.next().unwrap_or("expired").to_string(),
        attempt: parts.next().and_then(|a| a.parse().ok()).unwrap_or(0),
    })
}
