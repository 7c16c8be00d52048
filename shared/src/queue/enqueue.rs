//! `Producer`: puts validated jobs into the queue.
//!
//! Order of writes, and why: the job's record ([`ResultStore::record_queued`]) is written
//! first, then the job is pushed with apalis-redis under the same id. A worker can only
//! see a job after its record exists, so `mcpq status ID` never answers "unknown" for an
//! id `mcpq submit` printed. If the push fails, the caller gets the error (and the record
//! says `queued` for a job that is not in the queue: the submit reported failure, so no
//! one holds its id).

use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId;
use apalis_redis::{Config as ApalisConfig, RedisTask};
use redis::aio::ConnectionManager;

use super::{Keys, QueueError, ResultStore};
use crate::job::Job;

/// Pushes jobs for one namespace.
#[derive(Clone)]
pub struct Producer {
    conn: ConnectionManager,
    apalis: ApalisConfig,
    store: ResultStore,
}

/// The apalis-redis configuration both sides of a namespace use.
pub fn apalis_config(keys: &Keys) -> ApalisConfig {
    ApalisConfig::default().queue(keys.queue())
}

impl Producer {
    /// A producer over `conn` for `keys`' namespace.
    pub fn new(conn: ConnectionManager, keys: Keys) -> Self {
        Producer {
            apalis: apalis_config(&keys),
            store: ResultStore::new(conn.clone(), keys),
            conn,
        }
    }

    /// The record store of the same namespace.
    pub fn store(&self) -> &ResultStore {
        &self.store
    }

    fn task(job: &Job) -> RedisTask {
        TaskBuilder::new(job.to_json())
            .task_id(TaskId::from_ulid(job.id.0))
            .build()
    }

    /// Records and pushes one job. The job must already be validated.
    pub async fn submit(&self, job: &Job) -> Result<(), QueueError> {
        self.submit_many(std::slice::from_ref(job)).await
    }

    /// Records and pushes several jobs, 500 per round trip.
    pub async fn submit_many(&self, jobs: &[Job]) -> Result<(), QueueError> {
        for chunk in jobs.chunks(500) {
            self.store.record_queued(chunk).await?;
        }
        let tasks: Vec<RedisTask> = jobs.iter().map(Self::task).collect();
        let mut conn = self.conn.clone();
        for chunk in tasks.chunks(500) {
            apalis_redis::queries::push_tasks(&mut conn, &self.apalis, chunk).await?;
        }
        Ok(())
    }
}
