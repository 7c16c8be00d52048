//! `Runner`: runs one job pulled from the queue and stores its outcome.
//!
//! For each job it:
//! 1. marks the record `running` (worker name, attempt number);
//! 2. decodes and validates the envelope again (the worker trusts nothing it reads
//!    from Redis) and checks every server against *this worker's* configuration;
//! 3. runs the payload by kind, within the job's deadline
//!    (`options.timeout`, else `defaults.job_timeout`);
//! 4. stores the result or the failure *before* returning, so the caller acknowledges
//!    only jobs whose outcome is stored.
//!
//! A job that cannot be decoded is stored as failed (`invalid_job`) under the id the
//! queue gave it; it never crashes the worker.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::agent::plan::{run_plan, PlanContext};
use crate::config::Config;
use crate::job::{Job, JobId, JobPayload};
use crate::mcp::McpPool;
use crate::queue::{JobFailure, QueueError, ResultStore};

/// Slack on top of a job's deadline and the time its servers may take to stop, before
/// the runner stops waiting for it: every operation inside already has a deadline, this
/// only catches a bug (and then dropping the job kills its process groups).
const DEADLINE_SLACK: Duration = Duration::from_secs(1);

/// Runs jobs; one per worker process, shared by its concurrent handlers.
#[derive(Clone)]
pub struct Runner {
    config: Arc<Config>,
    pool: McpPool,
    store: ResultStore,
    worker: String,
}

/// What happened to one job, for logs and counters.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// The job id.
    pub id: JobId,
    /// Attempt number (1 = first run).
    pub attempt: u32,
    /// `None` when it succeeded.
    pub failure: Option<JobFailure>,
}

fn failure(kind: &str, message: String, retryable: bool) -> JobFailure {
    JobFailure {
        kind: kind.to_string(),
        message,
        step: None,
        server: None,
        tool: None,
        stderr_tail: None,
        retryable,
    }
}

impl Runner {
    /// A runner for `worker` (its unique name), calling tools through `pool`.
    pub fn new(
        config: Arc<Config>,
        pool: McpPool,
        store: ResultStore,
        worker: impl Into<String>,
    ) -> Self {
        Runner {
            config,
            pool,
            store,
            worker: worker.into(),
        }
    }

    /// Runs the job the queue delivered as `raw` with queue id `task_id`.
    pub async fn run(&self, task_id: &str, raw: Value) -> Result<RunSummary, QueueError> {
        let id: JobId = match raw
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or(task_id)
            .parse()
        {
            Ok(id) => id,
            Err(_) => task_id.parse().map_err(|_| QueueError::Corrupt {
                id: task_id.to_string(),
                message: "the queue delivered a job whose id is not a ULID".to_string(),
            })?,
        };
        let attempt = self.store.record_running(&id, &self.worker).await?;
        let started = Instant::now();
        let outcome = self.execute(raw).await;
        let elapsed = started.elapsed();
        match &outcome {
            Ok(_) => tracing::info!(job = %id, attempt, ?elapsed, "job succeeded"),
            Err(f) => {
                tracing::warn!(job = %id, attempt, ?elapsed, kind = %f.kind, "job failed: {}", f.message)
            }
        }
        self.store.record_finished(&id, &outcome).await?;
        Ok(RunSummary {
            id,
            attempt,
            failure: outcome.err(),
        })
    }

    async fn execute(&self, raw: Value) -> Result<Value, JobFailure> {
        let job = Job::from_value(raw).map_err(|e| failure("invalid_job", e.to_string(), false))?;
        job.check_servers(self.config.server_names())
            .map_err(|e| failure("unknown_server", e.to_string(), false))?;
        let timeout = job
            .options
            .timeout
            .unwrap_or(self.config.defaults.job_timeout);
        let deadline = Instant::now() + timeout;
        let work = async {
            match &job.payload {
                JobPayload::Agent(plan) => {
                    let ctx = PlanContext {
                        config: &self.config,
                        pool: &self.pool,
                        deadline,
                    };
                    run_plan(plan, ctx).await
                }
                JobPayload::Email(_) => Err(failure(
                    "unsupported",
                    "email jobs are not run by this worker version yet".to_string(),
                    false,
                )),
            }
        };
        let limit = timeout + self.config.max_stop_time() + DEADLINE_SLACK;
        match tokio::time::timeout(limit, work).await {
            Ok(outcome) => outcome,
            Err(_) => Err(failure(
                "timeout",
                format!("the job did not finish within its timeout of {timeout:?}"),
                true,
            )),
        }
    }
}
