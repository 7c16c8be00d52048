//! `ResultStore`: reads a job's record: status, timestamps, attempts, result or error.
//!
//! The record is one hash per job ([`Keys::job`]) plus its attempt history
//! ([`Keys::attempts`]). Only the Lua scripts write them ([`super::scripts`]); each
//! write of a running job is fenced by its attempt number, so what this module reads is
//! always one consistent attempt's outcome. The states and their transitions are drawn
//! in `docs/GUARANTEES.md`.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::queue::Conn;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::failure::JobFailure;

use super::{Keys, QueueError};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting for a worker.
    Queued,
    /// Delayed (`options.run_at`): queued once its time comes (`next_run_at`).
    Scheduled,
    /// A worker holds its lease.
    Running,
    /// The last attempt failed; it runs again after its backoff (`next_run_at`).
    Failed,
    /// Finished; `result` is set.
    Succeeded,
    /// In the dead-letter set: failed permanently or ran out of attempts; `error` is set.
    Dead,
    /// Stopped by `mcpq cancel`.
    Cancelled,
    /// A batch's fan-in job: queued once every job of its batch has ended.
    Waiting,
}

impl JobStatus {
    /// True once the job will not change any more (unless a dead job is requeued).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Dead | JobStatus::Cancelled
        )
    }

    /// The name stored in Redis and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Scheduled => "scheduled",
            JobStatus::Running => "running",
            JobStatus::Failed => "failed",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Dead => "dead",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Waiting => "waiting",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => JobStatus::Queued,
            "scheduled" => JobStatus::Scheduled,
            "running" => JobStatus::Running,
            "failed" => JobStatus::Failed,
            "succeeded" => JobStatus::Succeeded,
            "dead" => JobStatus::Dead,
            "cancelled" => JobStatus::Cancelled,
            "waiting" => JobStatus::Waiting,
            _ => return None,
        })
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One attempt, as kept in the job's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttemptRecord {
    /// 1 for the first run; also the attempt's fencing token.
    pub attempt: u32,
    /// The worker that ran it.
    pub worker: String,
    /// When it started (ms since the Unix epoch, Redis's clock).
    pub started_at: u64,
    /// When it ended (ms).
    pub ended_at: u64,
    /// `succeeded`, `failed` (will retry), `dead`, `released` (shutdown),
    /// `lease_expired` or `cancelled`.
    pub outcome: String,
    /// Its error, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<JobFailure>,
}

/// A job's stored record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobRecord {
    /// The job id (for a malformed queue entry, the entry itself).
    pub id: String,
    /// `agent`, `email`, or `unknown` for a malformed queue entry.
    pub kind: String,
    /// Where it is.
    pub status: JobStatus,
    /// `high`, `normal` or `low`.
    pub priority: String,
    /// When it was submitted (ms since the Unix epoch).
    pub submitted_at: Option<u64>,
    /// When its last attempt started (ms).
    pub started_at: Option<u64>,
    /// When it finished (ms).
    pub finished_at: Option<u64>,
    /// When it runs (again), while `failed` or `scheduled` (ms).
    pub next_run_at: Option<u64>,
    /// The worker that ran it last.
    pub worker: Option<String>,
    /// How many times a worker started it.
    pub attempts: u32,
    /// Failed attempts counted against `max_attempts`.
    pub failures: u32,
    /// Times its worker died under it and it was re-queued (`queue.max_rescues`).
    pub rescues: u32,
    /// Most runs allowed.
    pub max_attempts: u32,
    /// Late writes of older attempts that were rejected (see fencing).
    pub stale_writes: u32,
    /// The result, once succeeded: any JSON (what the job's last step or answer was).
    pub result: Option<Value>,
    /// The last error.
    pub error: Option<JobFailure>,
    /// The last progress a server reported during the job's tool calls
    /// (`{"progress", "total", "message"}`; see `queue::progress`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<super::progress::Progress>,
    /// Every attempt that ended, oldest first.
    pub history: Vec<AttemptRecord>,
    /// The envelope as submitted (JSON text), for `mcpq dlq show`; only read by
    /// [`ResultStore::get`] (not by [`ResultStore::status`]).
    #[serde(skip)]
    pub payload: Option<String>,
    /// What of the stored record could not be read (not UTF-8, not JSON): shown, never
    /// a reason to fail the whole read.
    pub problems: Vec<String>,
}

/// Milliseconds since the Unix epoch (this machine's clock; Redis's clock is used for
/// everything stored).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Reads job records.
#[derive(Clone)]
pub struct ResultStore {
    conn: Conn,
    keys: Keys,
}

impl ResultStore {
    /// A store over `conn` for `keys`' namespace.
    pub fn new(conn: Conn, keys: Keys) -> Self {
        ResultStore { conn, keys }
    }

    /// The key names in use.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The whole record of a job (result and payload included), or `None` if no such
    /// job is known (or it expired).
    pub async fn get(&self, id: &str) -> Result<Option<JobRecord>, QueueError> {
        read_record(&mut self.conn.clone(), &self.keys, id, Read::Full).await
    }

    /// The record of a job without its result and payload (which may be megabytes):
    /// what `mcpq status` and a waiting `mcpq wait` need.
    pub async fn status(&self, id: &str) -> Result<Option<JobRecord>, QueueError> {
        read_record(&mut self.conn.clone(), &self.keys, id, Read::Status).await
    }

    /// The kind and the envelope (the JSON text it was submitted as) of job `id`, each
    /// `None` when not there (no such job, or its record expired).
    pub async fn submitted_as(
        &self,
        id: &str,
    ) -> Result<(Option<String>, Option<Vec<u8>>), QueueError> {
        let (kind, payload): (Option<Vec<u8>>, Option<Vec<u8>>) = redis::cmd("HMGET")
            .arg(self.keys.job(id))
            .arg("kind")
            .arg("payload")
            .query_async(&mut self.conn.clone())
            .await?;
        Ok((
            kind.map(|k| String::from_utf8_lossy(&k).into_owned()),
            payload,
        ))
    }

    /// Job `id`'s envelope as submitted if it is at most `max` bytes (one read-only
    /// script: its length is checked where it is read).
    pub async fn payload_within(&self, id: &str, max: u64) -> Result<Payload, QueueError> {
        let keys = self.keys.for_job(id);
        let (len, payload): (u64, Option<Vec<u8>>) = super::scripts::PAYLOAD_READ
            .prepare_invoke()
            .key(keys.script_key())
            .arg(keys.prefix())
            .arg(id)
            .arg(max)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(match payload {
            Some(bytes) => Payload::Read(bytes),
            None if len == 0 => Payload::None,
            None => Payload::TooLong(len),
        })
    }

    /// The record of a job with its result but without its payload (the envelope, up to
    /// `queue.max_payload`, which a reader of the outcome does not need), as read: parse
    /// it with [`RawRecord::parse`], off the async runtime when the result may be big
    /// (`mcpq serve` does).
    pub async fn outcome_raw(&self, id: &str) -> Result<Option<RawRecord>, QueueError> {
        read_raw(&mut self.conn.clone(), &self.keys, id, Read::Outcome).await
    }
}

/// What [`ResultStore::payload_within`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// No envelope (no such job, or none kept: dropped after a success).
    None,
    /// The envelope's bytes.
    Read(Vec<u8>),
    /// Longer than asked: its length in bytes.
    TooLong(u64),
}

/// How much of a record [`read_record`] loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Read {
    /// Everything but the result and the payload.
    Status,
    /// Everything but the payload.
    Outcome,
    /// Everything.
    Full,
}

/// A record as read from Redis, not parsed yet (see [`ResultStore::outcome_raw`]).
#[derive(Debug, Clone)]
pub struct RawRecord {
    id: String,
    fields: Vec<&'static str>,
    values: Vec<Option<Vec<u8>>>,
    history: Vec<Vec<u8>>,
}

impl RawRecord {
    /// The record (CPU-bound for a big result: the text is checked as UTF-8 and parsed
    /// as JSON); see [`read_record`] for what is tolerated.
    pub fn parse(self) -> Result<JobRecord, QueueError> {
        let map: HashMap<String, String> = self
            .fields
            .iter()
            .zip(self.values)
            .filter_map(|(k, v)| Some((k.to_string(), String::from_utf8_lossy(&v?).into_owned())))
            .collect();
        let history: Vec<String> = self
            .history
            .iter()
            .map(|h| String::from_utf8_lossy(h).into_owned())
            .collect();
        parse_record(&self.id, &map, &history)
    }
}

/// The hash fields a record is made of, in the order [`read_record`] asks for them.
const FIELDS: [&str; 15] = [
    "status",
    "kind",
    "priority",
    "submitted_at",
    "started_at",
    "finished_at",
    "next_run_at",
    "worker",
    "attempt",
    "failures",
    "max_attempts",
    "stale_writes",
    "rescues",
    "error",
    "progress",
];

/// Most attempt records read (the newest ones): a job requeued for ever has a long
/// history, a status line does not need all of it.
const MAX_HISTORY: isize = 100;

/// Reads job `id`'s record (see [`Read`]). Anything may have been written into Redis by
/// someone else: bytes that are not UTF-8 are read lossily, fields that do not parse
/// are listed in [`JobRecord::problems`], and a key of the wrong type is a
/// [`QueueError::Corrupt`] naming it, never a failure of the command as a whole.
pub(crate) async fn read_record(
    conn: &mut Conn,
    keys: &Keys,
    id: &str,
    read: Read,
) -> Result<Option<JobRecord>, QueueError> {
    let (job, attempts) = (keys.job(id).into_bytes(), keys.attempts(id).into_bytes());
    read_raw_at(conn, (job, attempts), id, read)
        .await?
        .map(RawRecord::parse)
        .transpose()
}

/// [`read_record`] in partition `keys` itself, wherever `id` points (an entry found in
/// one of its sets).
pub(crate) async fn read_record_in(
    conn: &mut Conn,
    keys: &Keys,
    id: &str,
    read: Read,
) -> Result<Option<JobRecord>, QueueError> {
    let at = (
        keys.job_raw(id.as_bytes()),
        keys.attempts_raw(id.as_bytes()),
    );
    read_raw_at(conn, at, id, read)
        .await?
        .map(RawRecord::parse)
        .transpose()
}

/// The Redis side of [`read_record`]: the fields `read` asks for and the history, as
/// bytes.
async fn read_raw(
    conn: &mut Conn,
    keys: &Keys,
    id: &str,
    read: Read,
) -> Result<Option<RawRecord>, QueueError> {
    let at = (keys.job(id).into_bytes(), keys.attempts(id).into_bytes());
    read_raw_at(conn, at, id, read).await
}

/// [`read_raw`] of the job hash and attempts list at `(job, attempts)`.
async fn read_raw_at(
    conn: &mut Conn,
    (job_key, attempts_key): (Vec<u8>, Vec<u8>),
    id: &str,
    read: Read,
) -> Result<Option<RawRecord>, QueueError> {
    let mut fields: Vec<&'static str> = FIELDS.to_vec();
    match read {
        Read::Status => {}
        Read::Outcome => fields.push("result"),
        Read::Full => fields.extend(["result", "payload"]),
    }
    // (the hash fields asked for, the attempt records), as bytes.
    type Raw = (Vec<Option<Vec<u8>>>, Vec<Vec<u8>>);
    let answer: Result<Raw, redis::RedisError> = redis::pipe()
        .cmd("HMGET")
        .arg(&job_key)
        .arg(&fields)
        .lrange(&attempts_key, -MAX_HISTORY, -1)
        .query_async(conn)
        .await;
    let (values, history) = match answer {
        Ok(v) => v,
        Err(e) => {
            // A key of another type fails the whole pipeline (WRONGTYPE): say which.
            let types: (String, String) = redis::pipe()
                .cmd("TYPE")
                .arg(&job_key)
                .cmd("TYPE")
                .arg(&attempts_key)
                .query_async(conn)
                .await?;
            return Err(match types {
                (job, _) if job != "hash" && job != "none" => QueueError::Corrupt {
                    id: id.to_string(),
                    message: format!("its record is a Redis {job}, not a hash: written by something other than mcpq (another Redis type)"),
                },
                (_, history) if history != "list" && history != "none" => QueueError::Corrupt {
                    id: id.to_string(),
                    message: format!("its attempt history is a Redis {history}, not a list: written by something other than mcpq (another Redis type)"),
                },
                _ => e.into(),
            });
        }
    };
    if values.iter().all(Option::is_none) {
        return Ok(None);
    }
    Ok(Some(RawRecord {
        id: id.to_string(),
        fields,
        values,
        history,
    }))
}

/// Builds a record from the job hash and its history list. Only a missing or unknown
/// status is an error: without it nothing about the job can be said.
pub(crate) fn parse_record(
    id: &str,
    map: &HashMap<String, String>,
    history: &[String],
) -> Result<JobRecord, QueueError> {
    let status = map
        .get("status")
        .and_then(|s| JobStatus::parse(s))
        .ok_or_else(|| QueueError::Corrupt {
            id: id.to_string(),
            message: format!(
                "bad status {:?}",
                map.get("status")
                    .map(|s| s.chars().take(50).collect::<String>())
            ),
        })?;
    let mut problems = Vec::new();
    let num = |k: &str| map.get(k).and_then(|v| v.parse::<u64>().ok());
    let result = map.get("result").and_then(|r| {
        serde_json::from_str(r)
            .map_err(|e| problems.push(format!("the stored result is not JSON: {e}")))
            .ok()
    });
    let error = map.get("error").and_then(|r| {
        serde_json::from_str(r)
            .map_err(|e| problems.push(format!("the stored error is not a job error: {e}")))
            .ok()
    });
    let progress = map.get("progress").and_then(|p| {
        serde_json::from_str(p)
            .map_err(|e| problems.push(format!("the stored progress is not a report: {e}")))
            .ok()
    });
    let history = history
        .iter()
        .filter_map(|h| {
            serde_json::from_str(h)
                .map_err(|e| problems.push(format!("an attempt record does not parse: {e}")))
                .ok()
        })
        .collect::<Vec<AttemptRecord>>();
    let mut history = history;
    // A job that succeeded at its first attempt keeps no history list (finish.lua):
    // its one attempt is the record's own fields.
    if history.is_empty() && status == JobStatus::Succeeded {
        if let (Some(attempt), Some(started), Some(ended)) =
            (num("attempt"), num("started_at"), num("finished_at"))
        {
            history.push(AttemptRecord {
                attempt: attempt as u32,
                worker: map.get("worker").cloned().unwrap_or_default(),
                started_at: started,
                ended_at: ended,
                outcome: "succeeded".to_string(),
                error: None,
            });
        }
    }
    Ok(JobRecord {
        id: id.to_string(),
        kind: map.get("kind").cloned().unwrap_or_default(),
        status,
        priority: map
            .get("priority")
            .cloned()
            .unwrap_or_else(|| "normal".to_string()),
        submitted_at: num("submitted_at"),
        started_at: num("started_at"),
        finished_at: num("finished_at"),
        next_run_at: num("next_run_at"),
        worker: map.get("worker").cloned(),
        attempts: num("attempt").unwrap_or(0) as u32,
        failures: num("failures").unwrap_or(0) as u32,
        rescues: num("rescues").unwrap_or(0) as u32,
        max_attempts: num("max_attempts").unwrap_or(0) as u32,
        stale_writes: num("stale_writes").unwrap_or(0) as u32,
        result,
        error,
        progress,
        history,
        payload: map.get("payload").cloned(),
        problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_first_attempt_success_without_history_shows_its_one_attempt() {
        let fields = [
            ("status", "succeeded"),
            ("attempt", "1"),
            ("worker", "w1"),
            ("started_at", "100"),
            ("finished_at", "150"),
            ("result", "null"),
        ];
        let record = parse_record("j", &map(&fields), &[]).expect("record");
        assert_eq!(
            record.history,
            vec![AttemptRecord {
                attempt: 1,
                worker: "w1".to_string(),
                started_at: 100,
                ended_at: 150,
                outcome: "succeeded".to_string(),
                error: None,
            }]
        );
        // A stored history is shown as it is, never doubled.
        let stored =
            r#"{"attempt":2,"worker":"w2","started_at":1,"ended_at":2,"outcome":"succeeded"}"#;
        let record = parse_record("j", &map(&fields), &[stored.to_string()]).expect("record");
        assert_eq!(record.history.len(), 1);
        assert_eq!(record.history[0].worker, "w2");
        // Other statuses get nothing made up.
        let queued = parse_record("j", &map(&[("status", "queued")]), &[]).expect("record");
        assert!(queued.history.is_empty());
    }
}
