//! `Producer`: puts validated jobs into the queue.
//!
//! One Lua script per job (`lua/enqueue.lua`) writes the job's record and pushes its id
//! to its priority's queue in one step, so a job id that `mcpq submit` printed can
//! always be looked up, and a job is never in the queue without its record. The same
//! step checks the idempotency key: a second submit with a key seen within
//! `queue.idempotency_ttl` enqueues nothing and answers the first job's id. Batches go
//! in one script call per 500 jobs.
//!
//! With several partitions ([`super::partition`]) a job with a fresh id gets an id of
//! the partition its idempotency key names, or of the next partition in turn; the
//! jobs of one submit go in one script call per partition.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::queue::Conn;

use super::{scripts, JobRecord, Keys, QueueError, QueueSettings, ResultStore};
use crate::backoff::Backoff;
use crate::job::Job;

/// [`Producer::wait`]'s first pause between two reads of the status.
const WAIT_FIRST_POLL: Duration = Duration::from_millis(20);
/// [`Producer::wait`]'s longest pause.
const WAIT_MAX_POLL: Duration = Duration::from_millis(250);

/// Jobs per script call in [`Producer::submit_many`]: big enough to amortize the round
/// trip, small enough that one call keeps Redis busy for only a few milliseconds.
pub const BATCH: usize = 500;

/// Pushes jobs for one namespace.
#[derive(Clone)]
pub struct Producer {
    conn: Conn,
    keys: Keys,
    settings: QueueSettings,
    store: ResultStore,
    /// The next partition a fresh job without an idempotency key goes to.
    turn: Arc<AtomicU32>,
    /// `[redis] wait_replicas` and `wait_timeout`: replicas that must have a submit
    /// before it is acknowledged.
    durability: Option<(u32, Duration)>,
    /// Set once this producer stored or checked the namespace's partition count
    /// ([`super::partition::claim`]) before its first write.
    claimed: Arc<std::sync::atomic::AtomicBool>,
}

/// What a submit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The job's id: the new one, or the first job's when `created` is false.
    pub id: String,
    /// False when an earlier job had the same idempotency key, or when a job with this
    /// id exists already: nothing was enqueued.
    pub created: bool,
    /// True when a job with this id exists already (a second submit of the same id
    /// without the first one's idempotency key): refused, no key was bound.
    pub duplicate_id: bool,
}

impl Producer {
    /// A producer over `conn` for `keys`' namespace.
    pub fn new(conn: Conn, keys: Keys, settings: QueueSettings) -> Self {
        Producer {
            store: ResultStore::new(conn.clone(), keys.clone()),
            conn,
            keys,
            settings,
            turn: Arc::new(AtomicU32::new(fastrand::u32(..))),
            durability: None,
            claimed: Arc::default(),
        }
    }

    /// Before the first write: stores the partition count if none is, else checks it is
    /// ours (a producer never writes where another count's workers would not look).
    pub(crate) async fn claim_partitions(&self) -> Result<(), QueueError> {
        if self.claimed.load(Ordering::Relaxed) {
            return Ok(());
        }
        super::partition::claim(&mut self.conn.clone(), &self.keys).await?;
        self.claimed.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Acknowledges a submit only once `replicas` replicas have it (`WAIT`, at most
    /// `timeout`; fewer is [`QueueError::NotReplicated`]). 0 turns it off.
    pub fn with_durability(mut self, replicas: u32, timeout: Duration) -> Self {
        self.durability = (replicas > 0).then_some((replicas, timeout));
        self
    }

    /// The record store of the same namespace.
    pub fn store(&self) -> &ResultStore {
        &self.store
    }

    /// The connection (for the other queue operations of the CLI).
    pub fn connection(&self) -> &Conn {
        &self.conn
    }

    /// The key names in use.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The queue settings in use.
    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    /// Where job `id` is, without its result or payload (cheap, however big the result
    /// is); `None` if there is no such job (or its record expired).
    pub async fn status(&self, id: &str) -> Result<Option<JobRecord>, QueueError> {
        self.store.status(id).await
    }

    /// Waits until job `id` has finished (succeeded, dead or cancelled) or `timeout` has
    /// passed, then returns its whole record, result included: check
    /// `record.status.is_finished()`. `None` if there is no such job. Polls the status
    /// from every 20 ms backing off to every 250 ms; the result is read once, at the end.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<Option<JobRecord>, QueueError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = Backoff::new(WAIT_FIRST_POLL, WAIT_MAX_POLL);
        loop {
            let Some(status) = self.store.status(id).await? else {
                return Ok(None);
            };
            let now = tokio::time::Instant::now();
            if status.status.is_finished() || now >= deadline {
                return self.store.get(id).await;
            }
            tokio::time::sleep(pause.advance().min(deadline - now)).await;
        }
    }

    /// Enqueues one job. The job must already be validated.
    pub async fn submit(&self, job: &Job) -> Result<Submitted, QueueError> {
        let mut all = self.submit_many(std::slice::from_ref(job)).await?;
        Ok(all.remove(0))
    }

    /// Enqueues several jobs, [`BATCH`] per script call; one answer per job, in order.
    pub async fn submit_many(&self, jobs: &[Job]) -> Result<Vec<Submitted>, QueueError> {
        let mut out = Vec::with_capacity(jobs.len());
        for chunk in jobs.chunks(BATCH) {
            let chunk: Vec<(&Job, Option<u64>)> = chunk.iter().map(|job| (job, None)).collect();
            out.extend(self.enqueue(None, &chunk).await?);
        }
        Ok(out)
    }

    /// `job` as it will be stored: a fresh id is re-drawn in the partition its
    /// idempotency key names, or in the next one in turn; a fixed id is kept.
    pub fn placed<'a>(&self, job: &'a Job) -> Cow<'a, Job> {
        let partitions = self.keys.partitions();
        if partitions <= 1 || job.id_fixed {
            return Cow::Borrowed(job);
        }
        let partition = match &job.options.idempotency_key {
            Some(key) => super::partition::of_key(key, partitions),
            None => (self.turn.fetch_add(1, Ordering::Relaxed) % u32::from(partitions)) as u16,
        };
        let mut placed = job.clone();
        placed.id = super::partition::place(job.id, partition, partitions);
        Cow::Owned(placed)
    }

    /// `jobs` (each with its input line in a batch) into `batch`'s list when given: one
    /// script call per partition (a batch's jobs are all in the batch's). Checks every
    /// job's size first, so a too large one enqueues nothing. Answers in input order.
    pub(crate) async fn enqueue(
        &self,
        batch: Option<&str>,
        jobs: &[(&Job, Option<u64>)],
    ) -> Result<Vec<Submitted>, QueueError> {
        // Every size first: a job too large enqueues nothing, in any partition (one
        // partition's call checks its own before writing).
        for (job, _) in jobs.iter().filter(|_| self.keys.partitions() > 1) {
            let bytes = job.to_json().len();
            if bytes > self.settings.max_payload {
                return Err(QueueError::TooLarge {
                    id: job.id.to_string(),
                    bytes,
                    limit: self.settings.max_payload,
                });
            }
        }
        if self.keys.partitions() <= 1 {
            return self.enqueue_in(&self.keys, batch, jobs).await;
        }
        let placed: Vec<(Cow<'_, Job>, Option<u64>)> = jobs
            .iter()
            .map(|(job, line)| (self.placed(job), *line))
            .collect();
        let mut groups: std::collections::BTreeMap<u16, Vec<usize>> = Default::default();
        for (i, (job, _)) in placed.iter().enumerate() {
            let p = super::partition::of_id(&job.id.to_string(), self.keys.partitions());
            groups.entry(p).or_default().push(i);
        }
        if let Some(batch) = batch {
            // Checked before any write: a refused batch chunk enqueues nothing.
            let home = super::partition::of_id(batch, self.keys.partitions());
            if let Some((_, members)) = groups.iter().find(|(p, _)| **p != home) {
                return Err(QueueError::Refused {
                    id: placed[members[0]].0.id.to_string(),
                    message: "a batch's jobs live in the batch's partition: with [redis] partitions > 1 their ids must derive from the batch's".into(),
                });
            }
        }
        let mut out: Vec<Option<Submitted>> = vec![None; jobs.len()];
        for (p, members) in groups {
            let group: Vec<(&Job, Option<u64>)> = members
                .iter()
                .map(|i| (placed[*i].0.as_ref(), placed[*i].1))
                .collect();
            let answers = self.enqueue_in(&self.keys.at(p), batch, &group).await?;
            for (i, answer) in members.into_iter().zip(answers) {
                out[i] = Some(answer);
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// One script call: `jobs` into partition `keys`.
    async fn enqueue_in(
        &self,
        keys: &Keys,
        batch: Option<&str>,
        jobs: &[(&Job, Option<u64>)],
    ) -> Result<Vec<Submitted>, QueueError> {
        let mut conn = self.conn.clone();
        let ttl = QueueSettings::secs(self.settings.idempotency_ttl);
        let mut invocation = scripts::ENQUEUE.prepare_invoke();
        let retention = self.settings.result_ttl.max(self.settings.dead_ttl);
        invocation
            .key(keys.script_key())
            .arg(keys.prefix())
            .arg(ttl)
            .arg(batch.unwrap_or(""))
            .arg(QueueSettings::secs(retention))
            .arg(super::queues::MAX_QUEUES);
        for (job, line) in jobs {
            let envelope = job.to_json();
            if envelope.len() > self.settings.max_payload {
                return Err(QueueError::TooLarge {
                    id: job.id.to_string(),
                    bytes: envelope.len(),
                    limit: self.settings.max_payload,
                });
            }
            invocation
                .arg(job.id.to_string())
                .arg(envelope)
                .arg(job.kind().to_string())
                .arg(job.options.priority.as_str())
                .arg(job.options.max_attempts)
                .arg(job.options.idempotency_key.as_deref().unwrap_or(""))
                .arg(line.map(|l| l.to_string()).unwrap_or_default())
                .arg(callback_json(job))
                .arg(queue_arg(job))
                .arg(
                    job.options
                        .run_at
                        .map(|at| crate::job::run_at::millis(at).to_string())
                        .unwrap_or_default(),
                );
        }
        // After the size checks: a refused submit writes nothing at all.
        self.claim_partitions().await?;
        let answers: Vec<(u8, String)> = invocation.invoke_async(&mut conn).await?;
        if let Some((replicas, timeout)) = self.durability {
            let acked = conn
                .wait_replicas(&keys.script_key(), replicas, timeout)
                .await?;
            if acked < replicas {
                return Err(QueueError::NotReplicated {
                    wanted: replicas,
                    acked,
                });
            }
        }
        Ok(answers
            .into_iter()
            .map(|(code, id)| Submitted {
                id,
                created: code == 1,
                duplicate_id: code == 2,
            })
            .collect())
    }
}

/// The job's `options.callback` as the JSON stored in its record ("" for none).
pub(crate) fn callback_json(job: &Job) -> String {
    job.options
        .callback
        .as_ref()
        .map(|c| c.to_json())
        .unwrap_or_default()
}

/// The job's queue as the scripts take it: "" for the default queue (its record then
/// has no `queue` field, as records had before queues had names).
pub(crate) fn queue_arg(job: &Job) -> &str {
    match job.options.queue.as_str() {
        crate::job::DEFAULT_QUEUE => "",
        name => name,
    }
}
