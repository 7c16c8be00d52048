//! Named queues: which queues a worker serves and with what weight, pausing and
//! resuming a queue, and what `mcpq queues` shows.
//!
//! A job names its queue (`options.queue`, default `default`; the name rule is
//! [`crate::job::queue_name`]) and waits in that queue's list at its priority
//! ([`Keys::ready_in`]). A worker serves a list of queues with weights
//! (`--queues emails:3,agents:1`, [`crate::config::served::Served`]): of every `sum of the weights` jobs it
//! fetches, each queue is looked at first its weight's times, and an empty queue passes
//! its turn to the next one; priorities are weighed within the queue as before
//! (`lua/fetch.lua`). A worker never takes a job of a queue it does not serve, retries,
//! releases and rescued suspects included: each goes back to its own queue.
//!
//! [`pause`] puts a queue's name in `{ns}:paused`; every fetch reads that set, so
//! workers stop taking its jobs at their next poll (running jobs finish). The cap of
//! [`MAX_QUEUES`] names per namespace keeps every per-queue read bounded.

use crate::queue::Conn;
use serde::Serialize;

use super::stats::ByPriority;
use super::{scripts, Keys, QueueError};
use crate::job::DEFAULT_QUEUE;

/// Most named queues one namespace may hold: a submit to one more is refused. Bounds
/// what `mcpq queues` and the statistics read.
pub const MAX_QUEUES: usize = 256;

/// What [`pause`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paused {
    /// Paused now.
    Now,
    /// It was paused already.
    Already,
    /// Refused: [`MAX_QUEUES`] queues are paused already.
    TooMany,
}

/// Pauses `queue`: workers stop fetching its jobs at their next poll; queued jobs wait,
/// running ones finish. Also the second value: whether any job was ever submitted to
/// it (a name nobody uses is likely a typo).
/// With partitions, every partition's paused set is written (partition 0 decides
/// what is answered).
pub async fn pause(
    conn: &mut Conn,
    keys: &Keys,
    queue: &str,
) -> Result<(Paused, bool), QueueError> {
    let (mut added, mut too_many, mut known_any) = (Vec::new(), false, false);
    for part in keys.all() {
        let (paused, known) = pause_in(conn, &part, queue).await?;
        known_any |= known;
        if paused == Paused::Now {
            added.push(part);
        }
        too_many |= paused == Paused::TooMany;
    }
    let now = !added.is_empty();
    // One partition at its cap refuses the whole pause (the others would fetch it):
    // the partitions paused just now are resumed.
    if too_many {
        for part in added {
            let _: u32 = redis::cmd("SREM")
                .arg(part.paused())
                .arg(queue)
                .query_async(conn)
                .await?;
        }
        return Ok((Paused::TooMany, known_any));
    }
    Ok((if now { Paused::Now } else { Paused::Already }, known_any))
}

async fn pause_in(conn: &mut Conn, keys: &Keys, queue: &str) -> Result<(Paused, bool), QueueError> {
    let (count, known): (u64, bool) = redis::pipe()
        .scard(keys.paused())
        .sismember(keys.queues(), queue)
        .query_async(conn)
        .await?;
    let known = known || queue == DEFAULT_QUEUE;
    if count >= MAX_QUEUES as u64 {
        let already: bool = redis::cmd("SISMEMBER")
            .arg(keys.paused())
            .arg(queue)
            .query_async(conn)
            .await?;
        return Ok((
            if already {
                Paused::Already
            } else {
                Paused::TooMany
            },
            known,
        ));
    }
    let added: u32 = redis::cmd("SADD")
        .arg(keys.paused())
        .arg(queue)
        .query_async(conn)
        .await?;
    Ok((
        if added == 1 {
            Paused::Now
        } else {
            Paused::Already
        },
        known,
    ))
}

/// Resumes a paused `queue`. True when it was paused.
pub async fn resume(conn: &mut Conn, keys: &Keys, queue: &str) -> Result<bool, QueueError> {
    let mut was = false;
    for part in keys.all() {
        let removed: u32 = redis::cmd("SREM")
            .arg(part.paused())
            .arg(queue)
            .query_async(conn)
            .await?;
        was |= removed == 1;
    }
    Ok(was)
}

/// One queue as `mcpq queues` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueInfo {
    /// Its name.
    pub name: String,
    /// Workers fetch nothing from it.
    pub paused: bool,
    /// Jobs waiting, by priority.
    pub queued: ByPriority<u64>,
    /// Age (ms) of the oldest job waiting, by priority (`None`: none found).
    pub oldest_queued_age_ms: ByPriority<Option<u64>>,
    /// Jobs workers started from it in the current minute (by Redis's clock).
    pub started_this_minute: u64,
    /// Jobs workers started from it in the minute before: its rate, per minute.
    pub started_last_minute: u64,
}

/// Every queue: the default one, the named ones jobs were submitted to, and paused
/// names; one read-only script per partition, summed by name.
pub async fn list(conn: &mut Conn, keys: &Keys) -> Result<Vec<QueueInfo>, QueueError> {
    let mut merged: Vec<QueueInfo> = Vec::new();
    for part in keys.all() {
        for q in list_in(conn, &part).await? {
            match merged.iter_mut().find(|m| m.name == q.name) {
                None => merged.push(q),
                Some(m) => {
                    m.paused |= q.paused;
                    m.queued.high += q.queued.high;
                    m.queued.normal += q.queued.normal;
                    m.queued.low += q.queued.low;
                    let older = |a: Option<u64>, b: Option<u64>| a.max(b);
                    m.oldest_queued_age_ms.high =
                        older(m.oldest_queued_age_ms.high, q.oldest_queued_age_ms.high);
                    m.oldest_queued_age_ms.normal =
                        older(m.oldest_queued_age_ms.normal, q.oldest_queued_age_ms.normal);
                    m.oldest_queued_age_ms.low =
                        older(m.oldest_queued_age_ms.low, q.oldest_queued_age_ms.low);
                    m.started_this_minute += q.started_this_minute;
                    m.started_last_minute += q.started_last_minute;
                }
            }
        }
    }
    merged.sort_by(|a, b| {
        (a.name != DEFAULT_QUEUE, &a.name).cmp(&(b.name != DEFAULT_QUEUE, &b.name))
    });
    Ok(merged)
}

async fn list_in(conn: &mut Conn, keys: &Keys) -> Result<Vec<QueueInfo>, QueueError> {
    type Row = (String, u8, u64, u64, u64, i64, i64, i64, u64, u64);
    let (_now, rows): (u64, Vec<Row>) = scripts::QUEUES
        .prepare_invoke()
        .key(keys.script_key())
        .arg(keys.prefix())
        .invoke_async(conn)
        .await?;
    let age = |ms: i64| u64::try_from(ms).ok();
    let mut out: Vec<QueueInfo> = rows
        .into_iter()
        .map(
            |(name, paused, h, n, l, ah, an, al, now, before)| QueueInfo {
                name,
                paused: paused == 1,
                queued: ByPriority {
                    high: h,
                    normal: n,
                    low: l,
                },
                oldest_queued_age_ms: ByPriority {
                    high: age(ah),
                    normal: age(an),
                    low: age(al),
                },
                started_this_minute: now,
                started_last_minute: before,
            },
        )
        .collect();
    out.sort_by(|a, b| (a.name != DEFAULT_QUEUE, &a.name).cmp(&(b.name != DEFAULT_QUEUE, &b.name)));
    Ok(out)
}
