//! Ending attempts: `lua/finish.lua` stores outcomes, each fenced by its attempt
//! number, many per call.
//!
//! The script writes an outcome only if its job is still `running` with that attempt.
//! Otherwise the attempt was overtaken (its lease expired and another worker took the
//! job, or it was cancelled) and its write is rejected: the record keeps the newer
//! attempt's state and counts the rejected write in `stale_writes`.
//!
//! A worker stores its outcomes through one [`Finisher`] (group commit: outcomes that
//! end while a call is under way share the next call), so at 20,000 jobs/s it makes a
//! few hundred script calls per second, not 20,000; each job still waits until its own
//! outcome is stored. Every call also adds what it ended to the partition's totals
//! (`{ns}:totals`: succeeded, retried, dead, released), read by `mcpq stats`.

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
    let ended = Ended {
        id: id.to_string(),
        attempt,
        outcome: outcome.clone(),
    };
    let mut answers = finish_many_in(conn, keys, settings, std::slice::from_ref(&ended)).await?;
    Ok(answers.pop().unwrap_or(Finished::Stale {
        status: "expired".to_string(),
        attempt: 0,
    }))
}

/// One attempt's end, to be stored by [`finish_many_in`] or a [`Finisher`].
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    /// The job.
    pub id: String,
    /// The attempt (fencing token).
    pub attempt: u32,
    /// What became of it.
    pub outcome: Outcome,
}

/// Stores many outcomes of jobs of partition `keys` in one script call; one answer
/// per outcome, in order. Each is judged and written alone (a stale or malformed one
/// does not touch the others).
pub async fn finish_many_in(
    conn: &mut Conn,
    keys: &Keys,
    settings: &QueueSettings,
    ended: &[Ended],
) -> Result<Vec<Finished>, QueueError> {
    let prepared: Vec<Prepared> = ended
        .iter()
        .map(|e| Prepared::of(&e.id, e.attempt, &e.outcome))
        .collect();
    store(conn, keys, settings, &prepared).await
}

/// One outcome as `finish.lua` takes it: its body serialized once, when it is handed
/// over (so a batch is sized by its real bytes, and a big result is not copied).
#[derive(Debug, Clone)]
struct Prepared {
    id: String,
    attempt: u32,
    kind: &'static str,
    body: String,
    delay: u64,
}

impl Prepared {
    fn of(id: &str, attempt: u32, outcome: &Outcome) -> Self {
        let (kind, body, delay) = outcome.parts();
        Prepared {
            id: id.to_string(),
            attempt,
            kind,
            body,
            delay,
        }
    }
}

/// One `finish.lua` call for `prepared`, all of partition `keys`.
async fn store(
    conn: &mut Conn,
    keys: &Keys,
    settings: &QueueSettings,
    prepared: &[Prepared],
) -> Result<Vec<Finished>, QueueError> {
    let mut invocation = scripts::FINISH.prepare_invoke();
    invocation
        .key(keys.script_key())
        .arg(keys.prefix())
        .arg(QueueSettings::secs(settings.result_ttl))
        .arg(QueueSettings::secs(settings.dead_ttl))
        .arg(u8::from(settings.keep_payload));
    for p in prepared {
        invocation
            .arg(&p.id)
            .arg(p.attempt)
            .arg(p.kind)
            .arg(&p.body)
            .arg(p.delay);
    }
    let answers: Vec<String> = invocation.invoke_async(conn).await?;
    Ok(answers.iter().map(|a| parse_answer(a)).collect())
}

fn parse_answer(answer: &str) -> Finished {
    if answer == "ok" {
        return Finished::Stored;
    }
    if let Some(why) = answer.strip_prefix("buried:") {
        return Finished::Buried(why.to_string());
    }
    let mut parts = answer.splitn(3, ':').skip(1);
    Finished::Stale {
        status: parts.next().unwrap_or("expired").to_string(),
        attempt: parts.next().and_then(|a| a.parse().ok()).unwrap_or(0),
    }
}

/// Most outcomes stored by one script call of a [`Finisher`].
pub const MAX_FINISH_BATCH: usize = 256;

type Reply = tokio::sync::oneshot::Sender<Result<Finished, QueueError>>;

/// Stores a worker's outcomes in batches: group commit. Every [`Finisher::finish`]
/// waits until its own outcome is stored (or refused), exactly as [`finish`] does; the
/// finisher only lets outcomes that end while one script call is under way share the
/// next call (up to [`MAX_FINISH_BATCH`], one call per partition at a time). So an idle
/// worker's outcome is stored at once, in one round trip as before, and a busy worker
/// stores dozens of outcomes per round trip instead of one: nothing waits for a timer,
/// and "stored before acknowledged" holds for every job.
///
/// A failed call fails every outcome it carried (each caller retries, as with
/// [`finish`]). The background task ends when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Finisher {
    tx: tokio::sync::mpsc::UnboundedSender<(Prepared, Reply)>,
}

impl Finisher {
    /// A finisher writing to `conn` in `keys`' namespace (its task runs on the current
    /// tokio runtime).
    pub fn new(conn: Conn, keys: Keys, settings: QueueSettings) -> Self {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(run_finisher(conn, keys, settings, rx));
        Finisher { tx }
    }

    /// Stores `outcome` of `attempt` of job `id` (see [`finish`]), with the outcomes
    /// other jobs end with meanwhile.
    pub async fn finish(
        &self,
        id: &str,
        attempt: u32,
        outcome: &Outcome,
    ) -> Result<Finished, QueueError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if self
            .tx
            .send((Prepared::of(id, attempt, outcome), reply))
            .is_err()
        {
            return Err(stopped());
        }
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }
}

fn stopped() -> QueueError {
    QueueError::Command(redis::RedisError::from((
        redis::ErrorKind::Io,
        "the outcome writer stopped",
    )))
}

/// Most bytes of outcome bodies in one script call: a batch of big results is split
/// (a result alone may be up to `queue.max_result`), far below Redis's query buffer.
const MAX_FINISH_BYTES: usize = 4 * 1024 * 1024;

/// `group` in runs of at most [`MAX_FINISH_BYTES`] of bodies (at least one each).
fn by_size(group: Vec<(Prepared, Reply)>) -> Vec<Vec<(Prepared, Reply)>> {
    let mut out: Vec<Vec<(Prepared, Reply)>> = Vec::new();
    let mut bytes = 0;
    for item in group {
        let size = item.0.body.len();
        if out.is_empty() || bytes + size > MAX_FINISH_BYTES {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        if let Some(last) = out.last_mut() {
            last.push(item);
        }
    }
    out
}

/// Stores one batch of one partition and answers each caller. When a call of several
/// outcomes fails, each is stored again alone, so that one outcome Redis refuses
/// (a key someone else broke) does not fail the others with it.
async fn store_batch(
    mut conn: Conn,
    keys: &Keys,
    settings: &QueueSettings,
    group: Vec<(Prepared, Reply)>,
) {
    let home = keys.for_job(&group[0].0.id);
    let (ended, replies): (Vec<Prepared>, Vec<Reply>) = group.into_iter().unzip();
    let answer = store(&mut conn, &home, settings, &ended).await;
    match answer {
        Ok(answers) if answers.len() == replies.len() => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(Ok(answer));
            }
        }
        Err(_) if ended.len() > 1 => {
            for (e, reply) in ended.into_iter().zip(replies) {
                let alone = store(&mut conn, &home, settings, std::slice::from_ref(&e))
                    .await
                    .and_then(|mut a| a.pop().ok_or_else(|| miscount(0, 1)));
                let _ = reply.send(alone);
            }
        }
        Ok(answers) => {
            let e = miscount(answers.len(), replies.len());
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

fn miscount(got: usize, wanted: usize) -> QueueError {
    QueueError::Command(redis::RedisError::from((
        redis::ErrorKind::Parse,
        "finish.lua answered a different number of outcomes",
        format!("{got} for {wanted}"),
    )))
}

/// The finisher's loop: takes what waits (at least one), groups it by partition, one
/// script call per partition (concurrently), answers each, again.
async fn run_finisher(
    conn: Conn,
    keys: Keys,
    settings: QueueSettings,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<(Prepared, Reply)>,
) {
    let mut waiting = Vec::with_capacity(MAX_FINISH_BATCH);
    while rx.recv_many(&mut waiting, MAX_FINISH_BATCH).await > 0 {
        let mut by_partition: std::collections::BTreeMap<u16, Vec<(Prepared, Reply)>> =
            Default::default();
        for (ended, reply) in waiting.drain(..) {
            let p = keys.for_job(&ended.id).partition();
            by_partition.entry(p).or_default().push((ended, reply));
        }
        let calls = by_partition.into_values().map(|group| {
            let (conn, keys, settings) = (conn.clone(), keys.clone(), &settings);
            async move {
                for part in by_size(group) {
                    store_batch(conn.clone(), &keys, settings, part).await;
                }
            }
        });
        futures::future::join_all(calls).await;
    }
}
