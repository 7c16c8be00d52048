//! Taking one job: `lua/fetch.lua` leases the next queued job to a worker.
//!
//! In one step the script moves retries whose backoff is over back to their queues,
//! picks a priority by weight, pops one id, skips stale entries (a job cancelled while
//! queued) and dead-letters entries with no record. The job becomes `running` with a
//! lease and the next attempt number, which is the fencing token of everything the
//! attempt writes later ([`super::finish`], [`super::lease`]).

use std::time::Duration;

use redis::aio::ConnectionManager;

use super::{scripts, Keys, QueueError, QueueSettings};

/// A job handed to a worker: what the worker needs to run it and to write its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The queue entry: the job id (or, for a malformed entry, whatever was there).
    pub id: String,
    /// This run's attempt number (1 = first run): the fencing token.
    pub attempt: u32,
    /// The envelope as stored; the worker decodes and checks it again.
    pub payload: String,
    /// Most runs allowed.
    pub max_attempts: u32,
    /// Failed attempts so far (not counting this one).
    pub failures: u32,
}

/// Leases the next job to `worker` for `settings.lease`, or `None` if none is ready.
/// The priority looked at first is drawn by weight (see [`fetch_picked`]).
pub async fn fetch(
    conn: &mut ConnectionManager,
    keys: &Keys,
    worker: &str,
    settings: &QueueSettings,
) -> Result<Option<Delivery>, QueueError> {
    let pick = fastrand::u32(0..settings.weights.total());
    fetch_picked(conn, keys, worker, settings, pick).await
}

/// [`fetch`] with the draw given: `pick` in `0..weights.total()`; below `high` looks at
/// high first, then below `high + normal` at normal first, else at low first. An empty
/// queue passes its turn to the others, highest first.
pub async fn fetch_picked(
    conn: &mut ConnectionManager,
    keys: &Keys,
    worker: &str,
    settings: &QueueSettings,
    pick: u32,
) -> Result<Option<Delivery>, QueueError> {
    let w = settings.weights;
    let answer: Option<(String, u32, String, String, String)> = scripts::FETCH
        .prepare_invoke()
        .arg(keys.prefix())
        .arg(worker)
        .arg(millis(settings.lease))
        .arg(pick)
        .arg(w.high)
        .arg(w.normal)
        .arg(QueueSettings::secs(settings.dead_ttl))
        .invoke_async(conn)
        .await?;
    Ok(
        answer.map(|(id, attempt, payload, max_attempts, failures)| Delivery {
            id,
            attempt,
            payload,
            // A record written by hand may hold anything: fall back to one run.
            max_attempts: max_attempts.parse().unwrap_or(1),
            failures: failures.parse().unwrap_or(0),
        }),
    )
}

/// Milliseconds for the scripts.
pub(crate) fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
}
