//! `ResultStore`: each job's status, timestamps, result or error, in one Redis hash.
//!
//! Lifecycle of the record (one hash per job, [`Keys::job`]):
//! 1. `queued`: written by the producer *before* the job is pushed, with the envelope.
//! 2. `running`: written by the worker when it starts the job (worker name, attempt).
//! 3. `succeeded` with `result`, or `failed` with `error`: written by the worker before
//!    it acknowledges the job to apalis, so an acknowledged job always has its outcome.
//!
//! Caveats: status writes are last-writer-wins; a worker that was only slow can still
//! overwrite a newer attempt (fencing comes with the delivery guarantees work). Records
//! do not expire yet.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Keys, QueueError};
use crate::job::{Job, JobId};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting for a worker.
    Queued,
    /// A worker is running it.
    Running,
    /// Finished; `result` is set.
    Succeeded,
    /// Finished with an error; `error` is set.
    Failed,
}

impl JobStatus {
    /// True once the job will not change any more.
    pub fn is_finished(self) -> bool {
        matches!(self, JobStatus::Succeeded | JobStatus::Failed)
    }

    fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "succeeded" => JobStatus::Succeeded,
            "failed" => JobStatus::Failed,
            _ => return None,
        })
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a job failed, as stored and shown to users.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobFailure {
    /// A stable machine-readable class: `invalid_job`, `unknown_server`, `spawn_failed`,
    /// `startup_failed`, `timeout`, `tool_error`, `server_exited`, `protocol_error`,
    /// `unsupported`.
    pub kind: String,
    /// The human message.
    pub message: String,
    /// Index of the plan step that failed, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<usize>,
    /// The server involved, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The tool involved, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The last lines the server wrote to stderr.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_tail: Option<String>,
    /// Whether trying again could succeed (crash, timeout) or not (bad input).
    pub retryable: bool,
}

/// A job's stored record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job id.
    pub id: String,
    /// `agent` or `email`.
    pub kind: String,
    /// Where it is.
    pub status: JobStatus,
    /// When the producer stored it (ms since the Unix epoch).
    pub submitted_at: Option<u64>,
    /// When a worker started it (ms).
    pub started_at: Option<u64>,
    /// When it finished (ms).
    pub finished_at: Option<u64>,
    /// The worker that ran it last.
    pub worker: Option<String>,
    /// How many times a worker started it.
    pub attempts: u32,
    /// The result, once succeeded.
    pub result: Option<Value>,
    /// The error, once failed.
    pub error: Option<JobFailure>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Reads and writes job records.
#[derive(Clone)]
pub struct ResultStore {
    conn: ConnectionManager,
    keys: Keys,
}

impl ResultStore {
    /// A store over `conn` for `keys`' namespace.
    pub fn new(conn: ConnectionManager, keys: Keys) -> Self {
        ResultStore { conn, keys }
    }

    /// The key names in use.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Writes the `queued` records of jobs about to be pushed, in one round trip.
    pub async fn record_queued(&self, jobs: &[Job]) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        let submitted_at = now_ms().to_string();
        for job in jobs {
            let envelope = String::from_utf8(job.to_json()).expect("serde_json writes UTF-8");
            pipe.hset_multiple(
                self.keys.job(&job.id),
                &[
                    ("status", JobStatus::Queued.as_str().to_string()),
                    ("kind", job.kind().to_string()),
                    ("job", envelope),
                    ("submitted_at", submitted_at.clone()),
                    ("attempts", "0".to_string()),
                ],
            )
            .ignore();
        }
        let _: () = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    /// Marks a job as started by `worker`; returns the attempt number (1 for the first run).
    pub async fn record_running(&self, id: &JobId, worker: &str) -> Result<u32, QueueError> {
        let mut conn = self.conn.clone();
        let key = self.keys.job(id);
        let (attempts,): (u32,) = redis::pipe()
            .atomic()
            .hincr(&key, "attempts", 1)
            .hset_multiple(
                &key,
                &[
                    ("status", JobStatus::Running.as_str().to_string()),
                    ("started_at", now_ms().to_string()),
                    ("worker", worker.to_string()),
                ],
            )
            .ignore()
            .hdel(&key, &["result", "error", "finished_at"])
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(attempts)
    }

    /// Stores the outcome of a run.
    pub async fn record_finished(
        &self,
        id: &JobId,
        outcome: &Result<Value, JobFailure>,
    ) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let (status, field, body) = match outcome {
            Ok(result) => (JobStatus::Succeeded, "result", result.to_string()),
            Err(failure) => (
                JobStatus::Failed,
                "error",
                serde_json::to_string(failure)
                    .expect("a failure is plain data and always serializes"),
            ),
        };
        let _: () = conn
            .hset_multiple(
                self.keys.job(id),
                &[
                    ("status", status.as_str().to_string()),
                    (field, body),
                    ("finished_at", now_ms().to_string()),
                ],
            )
            .await?;
        Ok(())
    }

    /// The record of a job, or `None` if no such job is known.
    pub async fn get(&self, id: &JobId) -> Result<Option<JobRecord>, QueueError> {
        let mut conn = self.conn.clone();
        let map: HashMap<String, String> = conn.hgetall(self.keys.job(id)).await?;
        if map.is_empty() {
            return Ok(None);
        }
        let corrupt = |message: String| QueueError::Corrupt {
            id: id.to_string(),
            message,
        };
        let status = map
            .get("status")
            .and_then(|s| JobStatus::parse(s))
            .ok_or_else(|| corrupt(format!("bad status {:?}", map.get("status"))))?;
        let num = |k: &str| map.get(k).and_then(|v| v.parse::<u64>().ok());
        let result = match map.get("result") {
            Some(r) => Some(serde_json::from_str(r).map_err(|e| corrupt(format!("result: {e}")))?),
            None => None,
        };
        let error = match map.get("error") {
            Some(r) => Some(serde_json::from_str(r).map_err(|e| corrupt(format!("error: {e}")))?),
            None => None,
        };
        Ok(Some(JobRecord {
            id: id.to_string(),
            kind: map.get("kind").cloned().unwrap_or_default(),
            status,
            submitted_at: num("submitted_at"),
            started_at: num("started_at"),
            finished_at: num("finished_at"),
            worker: map.get("worker").cloned(),
            attempts: num("attempts").unwrap_or(0) as u32,
            result,
            error,
        }))
    }
}
