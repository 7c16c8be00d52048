//! `Runner`: runs one job the queue delivered and stores its outcome.
//!
//! For each delivery (a job leased to this worker, attempt n) it:
//! 1. registers the job as running here ([`InFlight`]), so its lease is renewed and a
//!    cancel, a lost lease or the end of the shutdown grace can stop it;
//! 2. checks the payload's size, decodes and validates the envelope again (the worker
//!    trusts nothing it reads from Redis), checks that it names the job it was queued
//!    as (the queue entry's id is the job's identity: a payload claiming another id
//!    could overwrite that job's result or attachments) and checks every server
//!    against *this worker's* configuration;
//! 3. runs the payload by kind within the job's deadline (`options.timeout`, else
//!    `defaults.job_timeout`);
//! 4. decides what happens next ([`crate::fate::decide`], see `docs/GUARANTEES.md`):
//!    succeeded; a retryable
//!    failure with attempts left is retried after a full-jitter backoff; any other
//!    failure is dead; a job cut off by shutdown is released; a cancelled job or one
//!    whose lease was lost writes nothing (someone else owns it now); a result bigger
//!    than `queue.max_result` is a permanent `result_too_large` failure, never stored;
//! 5. replaces every secret the worker read (API keys, bearer tokens, passwords) in the
//!    result or failure with `[REDACTED]` ([`Redactor`]);
//! 6. stores that outcome, fenced by the attempt number, retrying while Redis is down
//!    for at most one lease; after that the job is left to the rescuer, which runs it
//!    again (at least once, never lost).
//!
//! Each attempt is counted in the worker's metrics (`mcpq_jobs_started_total`,
//! `mcpq_jobs_finished_total` and `mcpq_job_duration_seconds` by kind and fate; a
//! payload that does not decode is kind `invalid`).
//!
//! Nothing here panics or returns an error on bad input: a job that cannot be decoded
//! goes to the dead-letter set with the reason.

use std::sync::Arc;
use std::time::Duration;

use mcpq_core::queue::Conn;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::agent::llm::run_llm;
use crate::agent::plan::{run_plan, PlanContext};
use crate::agent::template_sandbox::TemplateSandbox;
use crate::backoff::Backoff;
use crate::config::Config;
use crate::email::run_email;
use crate::failure::{FailureKind, JobFailure};
use crate::fate::{decide, Attempts, Fate};
use crate::job::{Job, JobKind, JobPayload};
use crate::mcp::McpPool;
use crate::metrics::{JobOutcome, KIND_INVALID};
use crate::queue::fetch::Delivery;
use crate::queue::finish::{Finished, Finisher, Outcome};
use crate::queue::lease::InFlight;
use crate::queue::Keys;
use crate::redact::Redactor;
use crate::result_budget::ResultBudget;

/// Slack on top of a job's deadline and the time its servers may take to stop, before
/// the runner stops waiting for it: every operation inside already has a deadline, this
/// only catches a bug (and then dropping the job kills its process groups).
const DEADLINE_SLACK: Duration = Duration::from_secs(1);

/// The shortest time between two progress reports of a job that are stored.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// Runs jobs; one per worker process, shared by its concurrent handlers.
#[derive(Clone)]
pub struct Runner {
    config: Arc<Config>,
    pool: McpPool,
    conn: Conn,
    keys: Keys,
    jobs: InFlight,
    redactor: Arc<Redactor>,
    templates: TemplateSandbox,
    /// Stores outcomes in batches (group commit, see [`Finisher`]).
    finisher: Finisher,
}

/// Payloads up to this size are decoded on the runtime thread (microseconds); bigger
/// ones (emails with attachments, up to `queue.max_payload`) on the blocking pool.
const DECODE_INLINE: usize = 64 * 1024;

/// What became of one delivery, for logs and tests.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    /// This outcome was stored.
    Stored(Outcome),
    /// Nothing was stored: the job was cancelled or its lease was lost, or the outcome
    /// could not be stored before the lease ran out (the job will run again).
    NotStored(String),
}

impl Runner {
    /// A batch's fan-in job (`mcpq batch submit --then`) was submitted with a
    /// placeholder `input.batch` (`{"id": BATCH, "total": ...}`, zero counts): here it
    /// gets the batch's final counts, read when it starts. Only for the job the batch
    /// names as its fan-in; any other job's `input.batch` is left as it is.
    async fn fill_in_batch_counts(&self, job: &mut Job) -> Result<(), JobFailure> {
        let JobPayload::Agent(agent) = &mut job.payload else {
            return Ok(());
        };
        let Some(batch_id) = agent
            .input
            .get("batch")
            .and_then(|b| b.get("id"))
            .and_then(|id| id.as_str())
            .map(str::to_string)
        else {
            return Ok(());
        };
        let mut conn = self.conn.clone();
        match crate::queue::batch::status(&mut conn, &self.keys, &batch_id).await {
            Ok(Some(status)) if status.then.as_deref() == Some(job.id.to_string().as_str()) => {
                agent.input.insert(
                    "batch".to_string(),
                    serde_json::json!({
                        "id": status.id, "total": status.total, "succeeded": status.succeeded,
                        "dead": status.dead, "cancelled": status.cancelled,
                        "pending": status.pending,
                    }),
                );
            }
            Ok(_) => {}
            // Not with made-up counts: again later, when Redis answers.
            Err(e) => {
                return Err(JobFailure::new(
                    FailureKind::Internal,
                    format!("cannot read the counts of batch {batch_id}: {e}"),
                    true,
                ))
            }
        }
        Ok(())
    }

    /// A runner calling tools through `pool` and writing to `conn`; `jobs` is the
    /// worker's registry of running jobs (shared with lease renewal and cancels).
    /// Templates are rendered in `templates` (see [`TemplateSandbox::new`]); every
    /// secret of `redactor` ([`Redactor::from_config`]) is kept out of what it stores.
    pub fn new(
        config: Arc<Config>,
        pool: McpPool,
        conn: Conn,
        keys: Keys,
        jobs: InFlight,
        templates: TemplateSandbox,
        redactor: Arc<Redactor>,
    ) -> Self {
        let finisher = Finisher::new(conn.clone(), keys.clone(), config.queue.clone());
        Runner {
            config,
            pool,
            conn,
            keys,
            jobs,
            redactor,
            templates,
            finisher,
        }
    }

    /// Runs one delivery to the end; see the module doc.
    pub async fn run(&self, mut delivery: Delivery) -> RunOutcome {
        // The payload (up to queue.max_payload) is moved into decoding, never copied.
        let payload = std::mem::take(&mut delivery.payload);
        let Delivery { id, attempt, .. } = &delivery;
        let running = self.jobs.register(id, *attempt);
        let started = Instant::now();
        let metrics = self.pool.supervisor().metrics();
        let (kind, mut result) = match self.decode(&delivery, payload).await {
            Ok(job) => {
                let kind = match job.kind() {
                    JobKind::Agent => "agent",
                    JobKind::Email => "email",
                    JobKind::Noop => "noop",
                };
                metrics.job_started(kind);
                (kind, self.execute(job, running.token()).await)
            }
            Err(failure) => {
                metrics.job_started(KIND_INVALID);
                (KIND_INVALID, Err(failure))
            }
        };
        if let Ok(value) = &result {
            if let Err(failure) = ResultBudget::check(value, self.config.queue.max_result) {
                result = Err(*failure);
            }
        }
        // Servers and APIs echo what they were sent: no secret of ours is stored.
        match &mut result {
            Ok(value) => self.redactor.value(value),
            Err(failure) => self.redactor.failure(failure),
        }
        let elapsed = started.elapsed();
        let settings = &self.config.queue;
        let attempts = Attempts {
            failures: delivery.failures,
            max: delivery.max_attempts,
        };
        let retry_delay =
            |failures| Backoff::new(settings.retry_base, settings.retry_cap).full_jitter(failures);
        let fate = decide(running.reason(), result, attempts, retry_delay);
        metrics.job_finished(kind, job_outcome(&fate), elapsed);
        let outcome = match fate {
            Fate::Cancelled => {
                tracing::info!(job = %id, attempt, ?elapsed, "job cancelled");
                return RunOutcome::NotStored("cancelled".to_string());
            }
            Fate::LeaseLost { status } => {
                tracing::warn!(job = %id, attempt, ?elapsed, %status, "lease lost while running; this attempt's outcome is dropped");
                return RunOutcome::NotStored(format!("lease lost (job is {status})"));
            }
            Fate::Succeeded(value) => {
                tracing::debug!(job = %id, attempt, ?elapsed, "job succeeded");
                Outcome::Succeeded(value)
            }
            Fate::Release => {
                tracing::info!(job = %id, attempt, ?elapsed, "job cut off by shutdown; releasing it");
                Outcome::Release
            }
            Fate::Retry { error, delay } => {
                tracing::warn!(job = %id, attempt, ?elapsed, kind = %error.kind, ?delay, "job failed, will retry: {}", error.message);
                Outcome::Retry { error, delay }
            }
            Fate::Dead(error) => {
                let failures = attempts.failures.saturating_add(1);
                tracing::warn!(job = %id, attempt, ?elapsed, kind = %error.kind, "job dead ({failures} of {} attempts failed): {}", delivery.max_attempts, error.message);
                Outcome::Dead(error)
            }
        };
        let stored = self.store(&delivery, &outcome).await;
        drop(running);
        stored
    }

    /// With `[redis] wait_replicas`, waits until that many replicas have the outcome
    /// just stored (`WAIT`, at most `wait_timeout`); fewer is logged: the outcome is on
    /// the master, and a failover now could lose it (the job would then run again).
    async fn wait_for_replicas(&self, conn: &mut crate::queue::Conn, id: &str) {
        let redis = &self.config.redis;
        if redis.wait_replicas == 0 {
            return;
        }
        let home = self.keys.for_job(id);
        match conn
            .wait_replicas(&home.script_key(), redis.wait_replicas, redis.wait_timeout)
            .await
        {
            Ok(acked) if acked >= redis.wait_replicas => {}
            Ok(acked) => tracing::warn!(
                job = %id,
                acked,
                wanted = redis.wait_replicas,
                "the outcome is stored on the master but fewer replicas than [redis] wait_replicas confirmed it in time"
            ),
            Err(e) => tracing::warn!(job = %id, "could not wait for replicas: {e}"),
        }
    }

    /// Writes `outcome`, retrying Redis failures for at most one lease.
    async fn store(&self, delivery: &Delivery, outcome: &Outcome) -> RunOutcome {
        let settings = &self.config.queue;
        let give_up = Instant::now() + settings.lease;
        let mut wait = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut conn = self.conn.clone();
        loop {
            match self
                .finisher
                .finish(&delivery.id, delivery.attempt, outcome)
                .await
            {
                Ok(Finished::Stored) => {
                    self.wait_for_replicas(&mut conn, &delivery.id).await;
                    return RunOutcome::Stored(outcome.clone());
                }
                Ok(Finished::Stale { status, attempt }) => {
                    tracing::warn!(
                        job = %delivery.id,
                        attempt = delivery.attempt,
                        now_status = %status,
                        now_attempt = attempt,
                        "late outcome rejected: the job moved on (lease expired or cancelled)"
                    );
                    return RunOutcome::NotStored(format!("stale: job is {status}"));
                }
                Ok(Finished::Buried(why)) => {
                    tracing::error!(job = %delivery.id, attempt = delivery.attempt, "the job's record was malformed when its outcome was stored; dead-lettered: {why}");
                    return RunOutcome::NotStored(format!("record malformed: {why}"));
                }
                Err(e) if Instant::now() + wait.peek() < give_up => {
                    let wait = wait.advance();
                    tracing::warn!(job = %delivery.id, "cannot store the outcome (retrying in {wait:?}): {e}");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    tracing::error!(job = %delivery.id, "cannot store the outcome; giving up, the job will run again when its lease expires: {e}");
                    return RunOutcome::NotStored(format!("store failed: {e}"));
                }
            }
        }
    }

    /// The job of `delivery`, decoded from `payload` and checked (size, envelope, its
    /// id, its servers against this worker's).
    async fn decode(&self, delivery: &Delivery, payload: String) -> Result<Job, JobFailure> {
        if let Some(problem) = &delivery.problem {
            return Err(JobFailure::new(
                FailureKind::InvalidJob,
                problem.clone(),
                false,
            ));
        }
        let limit = self.config.queue.max_payload;
        if payload.len() > limit {
            return Err(JobFailure::new(
                FailureKind::InvalidJob,
                format!(
                    "the job is {} bytes; the limit (queue.max_payload) is {limit}",
                    payload.len()
                ),
                false,
            ));
        }
        // Decoding parses the JSON and checks every template: bounded, but CPU work of up
        // to a few hundred ms for a payload at the limit, so off the async runtime.
        let bytes = payload.into_bytes();
        let decoded = if bytes.len() <= DECODE_INLINE {
            Job::from_json(&bytes)
        } else {
            tokio::task::spawn_blocking(move || Job::from_json(&bytes))
                .await
                .map_err(|e| {
                    JobFailure::new(
                        FailureKind::InvalidJob,
                        format!("decoding failed: {e}"),
                        false,
                    )
                })?
        };
        let job =
            decoded.map_err(|e| JobFailure::new(FailureKind::InvalidJob, e.to_string(), false))?;
        // The queue's id is the job's identity (its record, its lease, its attachment
        // folder): a payload that names another job is not this job.
        if job.id.to_string() != delivery.id {
            return Err(JobFailure::new(
                FailureKind::InvalidJob,
                format!(
                    "the payload says it is job {}, but it was queued as job {}",
                    job.id, delivery.id
                ),
                false,
            ));
        }
        job.check_servers(self.config.server_names())
            .map_err(|e| JobFailure::new(FailureKind::UnknownServer, e.to_string(), false))?;
        Ok(job)
    }

    /// Where job `id`'s servers' progress goes: its record and the progress channel
    /// (`queue::progress`), at most one report per [`PROGRESS_EVERY`] (the newest
    /// wins; one in between is dropped), each written by a task of its own so a slow
    /// Redis never holds the call.
    fn progress_sink(&self, id: &str) -> crate::mcp::ProgressSink {
        let (conn, keys, id) = (self.conn.clone(), self.keys.clone(), id.to_string());
        let last = std::sync::Mutex::new(None::<std::time::Instant>);
        crate::mcp::ProgressSink::new(move |p: crate::mcp::Progress| {
            let now = std::time::Instant::now();
            {
                let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
                if last.is_some_and(|at| now.duration_since(at) < PROGRESS_EVERY) {
                    return;
                }
                *last = Some(now);
            }
            let (conn, keys, id) = (conn.clone(), keys.clone(), id.clone());
            tokio::spawn(async move {
                if let Err(e) = crate::queue::progress::record(&conn, &keys, &id, &p).await {
                    tracing::debug!(job = %id, "could not record progress: {e}");
                }
            });
        })
    }

    /// Runs a decoded job within its deadline ([`run_job`]), its fan-in counts filled in.
    async fn execute(&self, mut job: Job, cancel: &CancellationToken) -> Result<Value, JobFailure> {
        self.fill_in_batch_counts(&mut job).await?;
        let progress = self.progress_sink(&job.id.to_string());
        run_job(
            &job,
            &self.config,
            &self.pool,
            &self.templates,
            cancel,
            Some(&progress),
        )
        .await
    }
}

/// Runs a decoded, checked job's payload by kind within its deadline
/// (`options.timeout`, else `defaults.job_timeout`): the part of a run that needs no
/// Redis. [`Runner::run`] calls it for every delivery; `mcpq-worker run` (`mcpq run`)
/// calls it alone, so a job run in-process takes the same path as one from the queue.
/// `progress` receives the servers' progress reports, if anyone wants them.
pub async fn run_job(
    job: &Job,
    config: &Config,
    pool: &McpPool,
    templates: &TemplateSandbox,
    cancel: &CancellationToken,
    progress: Option<&crate::mcp::ProgressSink>,
) -> Result<Value, JobFailure> {
    let timeout = job.options.timeout.unwrap_or(config.defaults.job_timeout);
    let deadline = Instant::now() + timeout;
    let data = serde_json::json!({"job": {"id": job.id.to_string()}});
    let ctx = PlanContext {
        config,
        pool,
        deadline,
        cancel,
        data: &data,
        templates,
        progress,
    };
    let work = async {
        match &job.payload {
            JobPayload::Agent(agent) => match &agent.prompt {
                Some(prompt) => {
                    let options = agent.llm.clone().unwrap_or_default();
                    run_llm(prompt, &agent.servers, &options, config.llm.as_ref(), ctx).await
                }
                None => run_plan(agent, ctx).await,
            },
            JobPayload::Email(email) => {
                let id = job.id.to_string();
                run_email(email, &id, ctx).await
            }
            JobPayload::Noop => Ok(Value::Null),
        }
    };
    let limit =
        timeout + crate::supervisor::max_stop_time(config.max_kill_grace()) + DEADLINE_SLACK;
    match tokio::time::timeout(limit, work).await {
        Ok(outcome) => outcome,
        Err(_) => Err(JobFailure::new(
            FailureKind::Timeout,
            format!("the job did not finish within its timeout of {timeout:?}"),
            true,
        )),
    }
}

/// The `outcome` label of a fate.
fn job_outcome<T>(fate: &Fate<T>) -> JobOutcome {
    match fate {
        Fate::Succeeded(_) => JobOutcome::Succeeded,
        Fate::Retry { .. } => JobOutcome::Retry,
        Fate::Dead(_) => JobOutcome::Dead,
        Fate::Release => JobOutcome::Released,
        Fate::Cancelled => JobOutcome::Cancelled,
        Fate::LeaseLost { .. } => JobOutcome::LeaseLost,
    }
}
