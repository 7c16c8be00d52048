//! The queue in Redis: every operation on jobs, used by producers and by workers (the
//! apalis `Backend` workers pull through is `mcpq_shared::backend`, over [`fetch`] and
//! [`finish`]).
//!
//! One hash per job ([`Keys::job`]) holds its state; ids wait in one list per priority;
//! retries, leases and dead jobs are sorted sets by time. Every change of state is one
//! Lua script ([`scripts`]), fenced by the attempt number where a running job is
//! involved. The promises (at-least-once, leases, retries, dead letters, idempotency,
//! cancellation, retention, priorities) and the tests that prove them are in
//! `docs/GUARANTEES.md`.
//!
//! - [`enqueue`]: the producer side; [`fetch`], [`finish`]: one attempt's start and end; [`lease`]: renewing the
//!   leases of running jobs and hearing cancels; [`rescue`]: re-queueing jobs of dead
//!   workers; [`retry`]: backoff; [`control`]: cancel and the dead-letter set;
//!   [`results`]: reading records; [`webhooks`], [`webhook_body`]: completion webhook
//!   deliveries (made by the scripts that end jobs, sent by `mcpq_shared::webhook`);
//!   [`stats`]: counts by state; [`workers`]: heartbeats; [`queues`]: named queues,
//!   what a worker serves, pause and resume.
//!
//! Every key starts with the configured namespace, so tests, demos and deployments
//! share one Redis without touching each other's keys.

pub mod batch;
pub mod batch_input;
pub mod conn;
pub mod control;
pub mod enqueue;
pub mod fetch;
pub mod finish;
mod hashes;
pub mod history;
pub mod keys;
pub mod lease;
pub mod limits;
pub mod listing;
pub mod notify;
pub mod partition;
pub mod progress;
pub mod queues;
pub mod rescue;
pub mod results;
pub mod schedules;
mod scripts;
pub mod servers;
pub mod settings;
pub mod stats;
pub mod subscribe;
pub mod tool_catalog;
pub mod webhook_body;
pub mod webhooks;
pub mod workers;

pub use conn::{connect_to, pubsub_client, Conn, CONNECT_TIMEOUT};
pub use enqueue::Producer;
pub use fetch::Delivery;
pub use keys::Keys;
pub use lease::{InFlight, StopReason};
pub use results::{
    AttemptRecord, JobFailure, JobRecord, JobStatus, Payload, RawRecord, ResultStore,
};
pub use settings::QueueSettings;

pub use crate::config::redis_target::RedisTarget;
pub use crate::config::redis_url::{redacted, with_password};

/// A Redis failure, with the URL it concerns.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// No connection could be made.
    #[error("cannot reach Redis at {url}: {message}")]
    Unreachable {
        /// The URL tried (without password).
        url: String,
        /// What failed.
        message: String,
    },
    /// A command failed on an open connection.
    #[error("Redis command failed: {0}")]
    Command(#[from] redis::RedisError),
    /// A job envelope is larger than `queue.max_payload`.
    #[error("job {id} is {bytes} bytes; the limit (queue.max_payload) is {limit}")]
    TooLarge {
        /// The job.
        id: String,
        /// Its size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// This process was configured with another partition count than the namespace's.
    #[error("namespace {namespace} has {stored} partitions in Redis, but this process is configured with {wanted} ([redis] partitions): use {stored}, or a new namespace")]
    Partitions {
        /// The namespace.
        namespace: String,
        /// The count in Redis.
        stored: u16,
        /// The configured count.
        wanted: u16,
    },
    /// A job the queue will not take as it is.
    #[error("job {id}: {message}")]
    Refused {
        /// The job.
        id: String,
        /// Why.
        message: String,
    },
    /// `[redis] wait_replicas` replicas did not confirm a write within `wait_timeout`:
    /// it is on the master, but a failover now could lose it.
    #[error("only {acked} of the {wanted} replicas ([redis] wait_replicas) confirmed the write within [redis] wait_timeout; it is stored on the master but not yet safe from a failover")]
    NotReplicated {
        /// Replicas asked for.
        wanted: u32,
        /// Replicas that confirmed.
        acked: u32,
    },
    /// A listing's `cursor` is not one this listing gave out.
    #[error("cursor {0:?} is not one this listing gave out (start without a cursor)")]
    BadCursor(String),
    /// Stored data could not be read back.
    #[error("corrupt record for job {id}: {message}")]
    Corrupt {
        /// The job.
        id: String,
        /// What is wrong.
        message: String,
    },
}

impl QueueError {
    /// True when the error means Redis cannot be reached at all (exit code 3 in the CLI).
    pub fn is_unreachable(&self) -> bool {
        match self {
            QueueError::Unreachable { .. } => true,
            QueueError::Command(e) => {
                e.is_connection_refusal() || e.is_io_error() || e.is_timeout()
            }
            _ => false,
        }
    }
}

/// Connects to `target` and agrees on the namespace's partition count
/// ([`partition::agree`]): the connection and the namespace's keys.
pub async fn open(target: &RedisTarget, namespace: &str) -> Result<(Conn, Keys), QueueError> {
    let mut conn = connect_to(target).await?;
    let keys = partition::agree(
        &mut conn,
        &Keys::new(namespace),
        target.partitions(),
        target.settings.partitions.is_some(),
    )
    .await?;
    Ok((conn, keys))
}

/// Connects to the one node (or the `redis+cluster://` / `redis+sentinel://` target)
/// `url` names, with default `[redis]` options: for tests and tools; processes with a
/// configuration use [`connect_to`] with [`crate::config::Config::redis_target`].
pub async fn connect(url: &str) -> Result<Conn, QueueError> {
    let target = RedisTarget::from_url(url).map_err(|e| QueueError::Unreachable {
        url: redacted(url),
        message: format!("{e} {}", conn::UNREACHABLE_HINT),
    })?;
    connect_to(&target).await
}
