//! Operator actions: cancel a job, and the dead-letter set (list, requeue, purge).
//!
//! Dead jobs keep their payload, every attempt's error and timings and the stderr
//! tail, for `queue.dead_ttl`; `{ns}:dead` orders them by time of death. An id whose
//! record already expired is dropped from the set the next time it is listed.

use std::time::Duration;

use crate::queue::Conn;
use serde::Serialize;

use super::results::{read_record, Read};
use super::{scripts, JobRecord, JobStatus, Keys, QueueError, QueueSettings};

/// What `mcpq cancel` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancelled {
    /// The job was queued or waiting to retry: it will never run.
    BeforeRunning,
    /// The job was running: it is marked cancelled and its worker was told to stop it.
    WhileRunning,
    /// The job had finished already (status given): nothing changed.
    AlreadyFinished(JobStatus),
    /// No such job (or it expired).
    Unknown,
}

/// Cancels job `id` (see [`Cancelled`]).
pub async fn cancel(
    conn: &mut Conn,
    keys: &Keys,
    settings: &QueueSettings,
    id: &str,
) -> Result<Cancelled, QueueError> {
    let keys = &keys.for_job(id);
    let before: String = scripts::CANCEL
        .prepare_invoke()
        .key(keys.script_key())
        .arg(keys.prefix())
        .arg(id)
        .arg(QueueSettings::secs(settings.result_ttl))
        .arg(QueueSettings::secs(settings.dead_ttl))
        .invoke_async(conn)
        .await?;
    Ok(match before.as_str() {
        "queued" | "failed" | "scheduled" | "waiting" => Cancelled::BeforeRunning,
        "running" => Cancelled::WhileRunning,
        "unknown" => Cancelled::Unknown,
        other => match JobStatus::parse(other) {
            Some(status) => Cancelled::AlreadyFinished(status),
            None => Cancelled::Unknown,
        },
    })
}

/// One dead job, as listed.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeadJob {
    /// The job id (or the malformed queue entry).
    pub id: String,
    /// When it died (ms since the Unix epoch).
    pub died_at: u64,
    /// `agent`, `email` or `unknown`.
    pub kind: String,
    /// How many times it ran.
    pub attempts: u32,
    /// The last error's kind.
    pub error_kind: String,
    /// The last error's message.
    pub error: String,
    /// The MCP server the last error came from, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
}

/// The dead-letter set, newest first: up to `limit` entries and the total count, over
/// every partition.
pub async fn dead_list(
    conn: &mut Conn,
    keys: &Keys,
    limit: usize,
) -> Result<(Vec<DeadJob>, u64), QueueError> {
    let (mut all, mut total) = (Vec::new(), 0);
    for part in keys.all() {
        let (jobs, count) = dead_list_in(conn, &part, limit).await?;
        all.extend(jobs);
        total += count;
    }
    all.sort_by_key(|j| std::cmp::Reverse(j.died_at));
    all.truncate(limit);
    Ok((all, total))
}

/// [`dead_list`] of one partition.
async fn dead_list_in(
    conn: &mut Conn,
    keys: &Keys,
    limit: usize,
) -> Result<(Vec<DeadJob>, u64), QueueError> {
    // Members and fields are read as bytes: an entry someone else wrote may not be
    // UTF-8, and one such entry must not make the whole listing fail.
    let (entries, total): (Vec<(Vec<u8>, f64)>, u64) = redis::pipe()
        .zrevrange_withscores(keys.dead(), 0, limit.saturating_sub(1) as isize)
        .zcard(keys.dead())
        .query_async(conn)
        .await?;
    if entries.is_empty() {
        return Ok((Vec::new(), total));
    }
    // HMGET on a key of another type fails the whole pipeline: ask for the types first
    // and read only the hashes (a key of another type lists as corrupt).
    let mut pipe = redis::pipe();
    for (id, _) in &entries {
        pipe.cmd("TYPE").arg(keys.job_raw(id));
    }
    let types: Vec<String> = pipe.query_async(conn).await?;
    let mut pipe = redis::pipe();
    for ((id, _), _) in entries.iter().zip(&types).filter(|(_, t)| *t == "hash") {
        pipe.cmd("HMGET")
            .arg(keys.job_raw(id))
            .arg(&["kind", "attempt", "error", "status"]);
    }
    type Fields = (
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
    );
    let mut hashes: std::vec::IntoIter<Fields> =
        pipe.query_async::<Vec<Fields>>(conn).await?.into_iter();
    let corrupt = |t: &str| {
        let error = super::JobFailure::new(
            crate::failure::FailureKind::InvalidJob,
            format!("the record is a Redis {t}, not a job hash"),
            false,
        );
        (
            Some(b"unknown".to_vec()),
            None,
            serde_json::to_vec(&error).ok(),
            Some(b"dead".to_vec()),
        )
    };
    let fields: Vec<Fields> = types
        .iter()
        .map(|t| match t.as_str() {
            "hash" => hashes.next().unwrap_or_default(),
            "none" => Fields::default(),
            other => corrupt(other),
        })
        .collect();
    let text = |b: Option<Vec<u8>>| b.map(|b| String::from_utf8_lossy(&b).into_owned());
    let mut out = Vec::new();
    let mut gone = Vec::new();
    for ((id, died_at), (kind, attempts, error, status)) in entries.into_iter().zip(fields) {
        if text(status).as_deref() != Some("dead") {
            gone.push(id); // expired, or requeued by someone else meanwhile
            continue;
        }
        let error: Option<super::JobFailure> =
            text(error).and_then(|e| serde_json::from_str(&e).ok());
        out.push(DeadJob {
            id: String::from_utf8_lossy(&id).into_owned(),
            died_at: died_at as u64,
            kind: text(kind).unwrap_or_default(),
            attempts: text(attempts).and_then(|a| a.parse().ok()).unwrap_or(0),
            error_kind: error
                .as_ref()
                .map(|e| e.kind.to_string())
                .unwrap_or_default(),
            server: error.as_ref().and_then(|e| e.server.clone()),
            error: error.map(|e| e.message).unwrap_or_default(),
        });
    }
    if !gone.is_empty() {
        let _: () = redis::cmd("ZREM")
            .arg(keys.dead())
            .arg(&gone)
            .query_async(conn)
            .await?;
    }
    Ok((out, total.saturating_sub(gone.len() as u64)))
}

/// The full record of a dead job (with its payload), or `None`. An entry
/// dead-lettered where it was found is looked for in every partition when its id
/// names none of them (a malformed entry's `invalid-...` name).
pub async fn dead_show(
    conn: &mut Conn,
    keys: &Keys,
    id: &str,
) -> Result<Option<JobRecord>, QueueError> {
    if let Some(record) = read_record(conn, keys, id, Read::Full).await? {
        return Ok(Some(record));
    }
    if keys.partitions() > 1 && ulid::Ulid::from_string(id).is_err() {
        for part in keys.all() {
            let found: bool = redis::cmd("ZSCORE")
                .arg(part.dead())
                .arg(id)
                .query_async::<Option<f64>>(conn)
                .await?
                .is_some();
            if found {
                return super::results::read_record_in(conn, &part, id, Read::Full).await;
            }
        }
    }
    Ok(None)
}

/// What [`run_now`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunNow {
    /// Queued now (at the end of its queue that workers take next).
    Queued,
    /// It was not waiting for its time: its status as stored (`None`: no such job; cut
    /// to 50 characters, as read: a record someone else wrote may hold anything). A
    /// malformed record found waiting is dead-lettered on the way (`dead`).
    NotWaiting(Option<String>),
}

/// Queues now job `id` if it waits for its time: a failed job waiting for its retry's
/// backoff, or a delayed one. Its failures so far still count.
pub async fn run_now(
    conn: &mut Conn,
    keys: &Keys,
    settings: &QueueSettings,
    id: &str,
) -> Result<RunNow, QueueError> {
    let keys = keys.for_job(id);
    let (queued, status): (u8, Vec<u8>) = scripts::RUN_NOW
        .prepare_invoke()
        .key(keys.script_key())
        .arg(keys.prefix())
        .arg(id)
        .arg(QueueSettings::secs(settings.dead_ttl))
        .invoke_async(conn)
        .await?;
    Ok(if queued == 1 {
        RunNow::Queued
    } else {
        let status: String = String::from_utf8_lossy(&status).chars().take(50).collect();
        RunNow::NotWaiting((!status.is_empty()).then_some(status))
    })
}

/// What [`requeue`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeued {
    /// Back in its queue.
    Yes,
    /// Not in the dead-letter set (or unknown).
    NotDead,
    /// A malformed queue entry with no payload: nothing could run; purge it.
    NoPayload,
}

/// Puts dead job `id` back in its queue.
pub async fn requeue(conn: &mut Conn, keys: &Keys, id: &str) -> Result<Requeued, QueueError> {
    requeue_in(conn, &keys.for_job(id), id).await
}

/// [`requeue`] in partition `keys` itself (an entry of its dead set, wherever its id
/// points).
async fn requeue_in(conn: &mut Conn, keys: &Keys, id: &str) -> Result<Requeued, QueueError> {
    let done: i8 = scripts::REQUEUE
        .prepare_invoke()
        .key(keys.script_key())
        .arg(keys.prefix())
        .arg(id)
        .invoke_async(conn)
        .await?;
    Ok(match done {
        1 => Requeued::Yes,
        -1 => Requeued::NoPayload,
        _ => Requeued::NotDead,
    })
}

/// Puts every job that was dead when it started back in its queue; returns how many.
/// Malformed entries with no payload stay (nothing could run them); `purge_dead`
/// removes them. A job requeued here that dies again while this runs is not requeued
/// twice: only entries that died up to the start (Redis's clock) are taken, so the loop
/// ends however fast the workers fail them.
pub async fn requeue_all(conn: &mut Conn, keys: &Keys) -> Result<u64, QueueError> {
    let mut total = 0;
    for part in keys.all() {
        total += requeue_all_in(conn, &part).await?;
    }
    Ok(total)
}

/// [`requeue_all`] of one partition.
async fn requeue_all_in(conn: &mut Conn, keys: &Keys) -> Result<u64, QueueError> {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(conn).await?;
    let until = secs * 1000 + micros / 1000;
    let mut total = 0;
    // Entries that stay in the set (no payload) are skipped by position; requeued and
    // stale ones leave the set, so the next page starts where they were.
    let mut kept: isize = 0;
    loop {
        let ids: Vec<Vec<u8>> = redis::cmd("ZRANGEBYSCORE")
            .arg(keys.dead())
            .arg("-inf")
            .arg(until)
            .arg("LIMIT")
            .arg(kept)
            .arg(500)
            .query_async(conn)
            .await?;
        if ids.is_empty() {
            return Ok(total);
        }
        for id in &ids {
            // A member that is not UTF-8 was not written by mcpq: nothing to run.
            let Ok(id) = std::str::from_utf8(id) else {
                kept += 1;
                continue;
            };
            match requeue_in(conn, keys, id).await? {
                Requeued::Yes => total += 1,
                Requeued::NoPayload => kept += 1,
                Requeued::NotDead => {
                    // Not dead any more (or gone): take it out of the set.
                    let _: () = redis::cmd("ZREM")
                        .arg(keys.dead())
                        .arg(id)
                        .query_async(conn)
                        .await?;
                }
            }
        }
    }
}

/// Deletes dead jobs that died more than `age` ago; returns how many.
pub async fn purge_dead(conn: &mut Conn, keys: &Keys, age: Duration) -> Result<u64, QueueError> {
    let mut total = 0;
    for part in keys.all() {
        total += purge_dead_in(conn, &part, age).await?;
    }
    Ok(total)
}

/// [`purge_dead`] of one partition.
async fn purge_dead_in(conn: &mut Conn, keys: &Keys, age: Duration) -> Result<u64, QueueError> {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(conn).await?;
    let now = secs * 1000 + micros / 1000;
    let cutoff = now.saturating_sub(age.as_millis() as u64);
    let mut total = 0;
    loop {
        // Raw bytes: a member someone else wrote may not be UTF-8, and it must still be
        // removed (else this loop would find it again for ever).
        let ids: Vec<Vec<u8>> = redis::cmd("ZRANGEBYSCORE")
            .arg(keys.dead())
            .arg("-inf")
            .arg(cutoff)
            .arg("LIMIT")
            .arg(0)
            .arg(500)
            .query_async(conn)
            .await?;
        if ids.is_empty() {
            return Ok(total);
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.del(&[keys.job_raw(id), keys.attempts_raw(id)])
                .ignore();
        }
        pipe.cmd("ZREM").arg(keys.dead()).arg(&ids).ignore();
        let _: () = pipe.query_async(conn).await?;
        total += ids.len() as u64;
    }
}
