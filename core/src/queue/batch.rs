//! Batches: many jobs submitted as one, counted as they end, with an optional fan-in
//! job that runs once when all of them have ended.
//!
//! A batch is made first ([`Producer::create_batch`], `lua/batch_create.lua`) with the
//! number of jobs it will hold, then its jobs are enqueued in chunks
//! ([`Producer::submit_to_batch`]), each appended to the batch's list in input order.
//! Every script that ends a job (succeeded, dead, cancelled) counts it in its batch
//! (`common.lua`'s `job_ended`); the one that ends the last job queues the fan-in job,
//! in the same atomic step, so it runs exactly once however many workers race.
//!
//! Guarantees:
//! - A batch's jobs have ids derived from the batch's ([`JobId::nth_member`]), so the
//!   same command run again with the same idempotency key finds the batch and enqueues
//!   only the jobs that are missing: nothing twice, nothing lost after a crash.
//! - A key that names a batch made from other input is refused
//!   ([`BatchCreated::KeyUsedForOtherInput`]): the fingerprint of the input decides.
//! - Reading a batch's results streams its list in pages of [`PAGE`].

use crate::queue::Conn;
use serde::Serialize;

use super::enqueue::{Producer, Submitted};
use super::{scripts, Keys, QueueError, QueueSettings};
use crate::job::{Callback, Job, JobId};

/// Ids per page when a batch's list is read.
pub const PAGE: usize = 500;

/// What to make a batch of.
#[derive(Debug, Clone)]
pub struct BatchSpec<'a> {
    /// The batch's id (its jobs' ids derive from it).
    pub id: JobId,
    /// How many jobs it will hold.
    pub total: u64,
    /// A digest of the input: a re-run with the same key must have the same one.
    pub fingerprint: String,
    /// What the jobs came from (a file name), for listings.
    pub source: String,
    /// Makes a re-run of the same command find this batch.
    pub idempotency_key: Option<String>,
    /// The fan-in job: runs once, when every job of the batch has ended.
    pub then: Option<&'a Job>,
    /// Announce the batch's end by a webhook (checked against the config by the caller:
    /// `WebhookSettings::check_callback`).
    pub callback: Option<Callback>,
}

/// What [`Producer::create_batch`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchCreated {
    /// A new batch with this id.
    New(String),
    /// The key names a batch made from the same input: enqueue what is missing into it.
    Resumed(String),
    /// The key names a batch made from other input: refused, nothing written.
    KeyUsedForOtherInput(String),
    /// A batch (or the fan-in job) with this id exists already: refused.
    IdTaken(String),
}

/// A batch's counts and times, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchStatus {
    /// The batch id.
    pub id: String,
    /// Jobs in the batch.
    pub total: u64,
    /// Jobs not ended yet (queued, running or failed and waiting to retry, or not
    /// enqueued yet).
    pub pending: u64,
    /// Jobs that succeeded.
    pub succeeded: u64,
    /// Jobs that are dead.
    pub dead: u64,
    /// Jobs that were cancelled.
    pub cancelled: u64,
    /// Jobs enqueued so far (the length of its list).
    pub enqueued: u64,
    /// When it was made (ms since the Unix epoch).
    pub created_at: u64,
    /// When its last job ended.
    pub finished_at: Option<u64>,
    /// The fan-in job's id.
    pub then: Option<String>,
    /// What the jobs came from.
    pub source: String,
}

impl BatchStatus {
    /// Jobs that have ended (at most `total`, whatever the stored counts say).
    pub fn done(&self) -> u64 {
        self.succeeded
            .saturating_add(self.dead)
            .saturating_add(self.cancelled)
            .min(self.total)
    }

    /// How much has ended, in percent (100 for an empty batch).
    pub fn percent(&self) -> f64 {
        if self.total == 0 {
            100.0
        } else {
            self.done() as f64 * 100.0 / self.total as f64
        }
    }

    /// True once every job has ended.
    pub fn is_finished(&self) -> bool {
        self.pending == 0
    }
}

/// One job of a batch, as exported.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemberResult {
    /// The job id.
    pub id: String,
    /// Its line in the batch's input.
    pub line: Option<u64>,
    /// Its status (`expired` once its record is gone).
    pub status: String,
    /// Its result (any JSON), when it succeeded.
    pub result: Option<serde_json::Value>,
    /// Its last error (JSON), when it failed.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub error: Option<serde_json::Value>,
}

impl Producer {
    /// A fresh id for a batch: in the partition its idempotency key names, else in the
    /// next one in turn. Its jobs and its fan-in job, whose ids derive from it, live
    /// in that partition too.
    pub fn fresh_batch_id(&self, idempotency_key: Option<&str>) -> JobId {
        let mut job = Job::agent(Vec::new(), Default::default());
        job.options.idempotency_key = idempotency_key.map(str::to_string);
        self.placed(&job).id
    }

    /// Makes a batch, or finds the one the same command made before (see [`BatchCreated`]).
    /// Its id should come from [`Producer::fresh_batch_id`].
    pub async fn create_batch(&self, spec: &BatchSpec<'_>) -> Result<BatchCreated, QueueError> {
        let settings = self.settings();
        let retention = settings.result_ttl.max(settings.dead_ttl);
        self.claim_partitions().await?;
        let keys = self.keys().for_job(&spec.id.to_string());
        if let Some(then) = spec.then {
            if keys.for_job(&then.id.to_string()) != keys {
                return Err(QueueError::Refused {
                    id: then.id.to_string(),
                    message: "a batch's fan-in job must live in the batch's partition (derive its id from the batch's)".into(),
                });
            }
        }
        let mut invocation = scripts::BATCH_CREATE.prepare_invoke();
        invocation
            .key(keys.script_key())
            .arg(keys.prefix())
            .arg(spec.id.to_string())
            .arg(spec.total)
            .arg(QueueSettings::secs(retention))
            .arg(spec.idempotency_key.as_deref().unwrap_or(""))
            // Never longer than the jobs are kept: a re-run must not recreate a job that
            // ran and expired.
            .arg(QueueSettings::secs(
                settings.idempotency_ttl.min(settings.result_ttl),
            ))
            .arg(&spec.fingerprint)
            .arg(spec.source.chars().take(200).collect::<String>())
            .arg(
                spec.callback
                    .as_ref()
                    .map(Callback::to_json)
                    .unwrap_or_default(),
            );
        if let Some(job) = spec.then {
            let envelope = job.to_json();
            if envelope.len() > settings.max_payload {
                return Err(QueueError::TooLarge {
                    id: job.id.to_string(),
                    bytes: envelope.len(),
                    limit: settings.max_payload,
                });
            }
            invocation
                .arg(job.id.to_string())
                .arg(envelope)
                .arg(job.kind().to_string())
                .arg(job.options.priority.as_str())
                .arg(job.options.max_attempts)
                .arg(super::enqueue::callback_json(job))
                .arg(super::enqueue::queue_arg(job));
        }
        let mut conn = self.connection().clone();
        let (code, id): (u8, String) = invocation.invoke_async(&mut conn).await?;
        Ok(match code {
            1 => BatchCreated::New(id),
            0 => BatchCreated::Resumed(id),
            2 => BatchCreated::KeyUsedForOtherInput(id),
            _ => BatchCreated::IdTaken(id),
        })
    }

    /// Enqueues `jobs` (each with its input line) into batch `batch`, at most
    /// [`super::enqueue::BATCH`] per call; a job that exists already (a re-run) is
    /// answered with `duplicate_id` and not appended again.
    pub async fn submit_to_batch(
        &self,
        batch: &str,
        jobs: &[(Job, u64)],
    ) -> Result<Vec<Submitted>, QueueError> {
        let mut out = Vec::with_capacity(jobs.len());
        for chunk in jobs.chunks(super::enqueue::BATCH) {
            let chunk: Vec<(&Job, Option<u64>)> =
                chunk.iter().map(|(job, line)| (job, Some(*line))).collect();
            out.extend(self.enqueue(Some(batch), &chunk).await?);
        }
        Ok(out)
    }

    /// Submits `jobs` as one new batch, with an optional fan-in job; returns the batch
    /// id. For jobs already in memory; `mcpq batch submit` streams a file instead.
    pub async fn submit_batch(
        &self,
        jobs: Vec<Job>,
        then: Option<&Job>,
    ) -> Result<String, QueueError> {
        let id = self.fresh_batch_id(None);
        // The jobs' ids derive from the batch's (so they live in its partition), the
        // fan-in's as `mcpq batch submit --then` derives it.
        let then = then.map(|job| Job {
            id: id.nth_member(u64::MAX - 1),
            id_fixed: true,
            ..job.clone()
        });
        let jobs: Vec<Job> = jobs
            .into_iter()
            .enumerate()
            .map(|(i, job)| Job {
                id: id.nth_member(i as u64),
                id_fixed: true,
                ..job
            })
            .collect();
        let spec = BatchSpec {
            id,
            total: jobs.len() as u64,
            fingerprint: String::new(),
            source: "api".to_string(),
            idempotency_key: None,
            callback: None,
            then: then.as_ref(),
        };
        let id = match self.create_batch(&spec).await? {
            BatchCreated::New(id) => id,
            other => {
                return Err(QueueError::Corrupt {
                    id: spec.id.to_string(),
                    message: format!("a fresh batch id was taken: {other:?}"),
                })
            }
        };
        let lines: Vec<(Job, u64)> = jobs
            .into_iter()
            .enumerate()
            .map(|(i, job)| (job, i as u64 + 1))
            .collect();
        self.submit_to_batch(&id, &lines).await?;
        Ok(id)
    }
}

/// Closes batch `id` whose submit was cut short: the jobs never enqueued count as
/// cancelled, so that it can finish (`mcpq batch cancel` does this after cancelling the
/// fan-in job and the enqueued jobs). Returns how many were missing.
pub async fn seal(conn: &mut Conn, keys: &Keys, id: &str) -> Result<u64, QueueError> {
    let keys = &keys.for_job(id);
    Ok(scripts::BATCH_SEAL
        .prepare_invoke()
        .key(keys.script_key())
        .arg(keys.prefix())
        .arg(id)
        .invoke_async(conn)
        .await?)
}

fn number(v: &Option<String>) -> u64 {
    v.as_deref().and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// The status of batch `id`, `None` if there is no such batch (or it expired).
pub async fn status(
    conn: &mut Conn,
    keys: &Keys,
    id: &str,
) -> Result<Option<BatchStatus>, QueueError> {
    let (fields, enqueued): (Vec<Option<String>>, u64) = redis::pipe()
        .cmd("HMGET")
        .arg(keys.batch(id))
        .arg(&[
            "total",
            "pending",
            "succeeded",
            "dead",
            "cancelled",
            "created_at",
            "finished_at",
            "then",
            "source",
        ])
        .cmd("LLEN")
        .arg(keys.batch_jobs(id))
        .query_async(conn)
        .await?;
    if fields.first().is_none_or(|f| f.is_none()) {
        return Ok(None);
    }
    let field = |i: usize| fields.get(i).cloned().flatten();
    Ok(Some(BatchStatus {
        id: id.to_string(),
        total: number(&field(0)),
        pending: number(&field(1)),
        succeeded: number(&field(2)),
        dead: number(&field(3)),
        cancelled: number(&field(4)),
        enqueued,
        created_at: number(&field(5)),
        finished_at: field(6).and_then(|s| s.parse().ok()),
        then: field(7).filter(|s| !s.is_empty()),
        source: field(8).unwrap_or_default().chars().take(200).collect(),
    }))
}

/// The newest batches, at most `limit`; ids whose batch expired are dropped from the
/// index as they are met.
pub async fn list(
    conn: &mut Conn,
    keys: &Keys,
    limit: usize,
) -> Result<Vec<BatchStatus>, QueueError> {
    let mut all = Vec::new();
    for part in keys.all() {
        all.extend(list_in(conn, &part, limit).await?);
    }
    // Batch ids are ULIDs: by id is by creation time.
    all.sort_by(|a, b| b.id.cmp(&a.id));
    all.truncate(limit);
    Ok(all)
}

/// [`list`] of one partition.
async fn list_in(
    conn: &mut Conn,
    keys: &Keys,
    limit: usize,
) -> Result<Vec<BatchStatus>, QueueError> {
    let mut out = Vec::new();
    let mut start = 0isize;
    while out.len() < limit {
        let ids: Vec<String> = redis::cmd("ZREVRANGE")
            .arg(keys.batches())
            .arg(start)
            .arg(start + PAGE as isize - 1)
            .query_async(conn)
            .await?;
        if ids.is_empty() {
            break;
        }
        start += ids.len() as isize;
        for id in ids {
            match status(conn, keys, &id).await? {
                Some(s) if out.len() < limit => out.push(s),
                Some(_) => break,
                None => {
                    let _: i64 = redis::cmd("ZREM")
                        .arg(keys.batches())
                        .arg(&id)
                        .query_async(conn)
                        .await?;
                    start -= 1;
                }
            }
        }
    }
    Ok(out)
}

/// Up to `count` job ids of batch `id` from position `start` (input order).
pub async fn member_ids(
    conn: &mut Conn,
    keys: &Keys,
    id: &str,
    start: usize,
    count: usize,
) -> Result<Vec<String>, QueueError> {
    if count == 0 {
        return Ok(Vec::new());
    }
    Ok(redis::cmd("LRANGE")
        .arg(keys.batch_jobs(id))
        .arg(start)
        .arg(start + count - 1)
        .query_async(conn)
        .await?)
}

/// The ids in `ids` whose record says it belongs to batch `batch` (one pipelined round
/// trip): a list someone else wrote into names no other job.
pub async fn belonging(
    conn: &mut Conn,
    keys: &Keys,
    batch: &str,
    ids: &[String],
) -> Result<Vec<String>, QueueError> {
    // A job of the batch lives in its partition; an id naming another is not one (and
    // one pipeline may only touch one partition on a cluster).
    let home = keys.for_job(batch).partition();
    let ids: Vec<&String> = ids
        .iter()
        .filter(|id| keys.for_job(id).partition() == home)
        .collect();
    let mut pipe = redis::pipe();
    for id in &ids {
        pipe.cmd("HGET").arg(keys.job(id)).arg("batch");
    }
    let owners: Vec<Option<String>> = if ids.is_empty() {
        Vec::new()
    } else {
        pipe.query_async(conn).await?
    };
    Ok(ids
        .into_iter()
        .zip(owners)
        .filter(|(_, owner)| owner.as_deref() == Some(batch))
        .map(|(id, _)| (*id).clone())
        .collect())
}

/// The status, line, result or error of each job in `ids` (one pipelined round trip).
/// A result or error that is not JSON is kept as a JSON string.
/// Each record is read in batch `batch`'s partition, where its jobs live (one pipeline,
/// one partition, whatever ids someone wrote into its list).
pub async fn member_results(
    conn: &mut Conn,
    keys: &Keys,
    batch: &str,
    ids: &[String],
) -> Result<Vec<MemberResult>, QueueError> {
    let home = keys.for_job(batch);
    let mut pipe = redis::pipe();
    for id in ids {
        pipe.cmd("HMGET").arg(home.job_raw(id.as_bytes())).arg(&[
            "status",
            "batch_line",
            "result",
            "error",
        ]);
    }
    let rows: Vec<Vec<Option<String>>> = pipe.query_async(conn).await?;
    let json = |text: Option<String>| {
        text.map(|t| serde_json::from_str(&t).unwrap_or(serde_json::Value::String(t)))
    };
    Ok(ids
        .iter()
        .zip(rows)
        .map(|(id, mut row)| {
            row.resize(4, None);
            let status = row[0].take().unwrap_or_else(|| "expired".to_string());
            let finished_ok = status == "succeeded";
            MemberResult {
                id: id.clone(),
                line: row[1].as_deref().and_then(|l| l.parse().ok()),
                result: if finished_ok {
                    json(row[2].take())
                } else {
                    None
                },
                error: if finished_ok {
                    None
                } else {
                    json(row[3].take())
                },
                status,
            }
        })
        .collect())
}
