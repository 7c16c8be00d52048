//! The queue in Redis: how jobs go in, and where their status and results live.
//!
//! Jobs travel through apalis-redis (its Lua scripts keep the pending list, the
//! in-flight sets and the worker heartbeats). Next to that, mcpq keeps one hash per job
//! ([`keys::Keys::job`]) with its status, timestamps, result or error; the producer
//! writes it before the job is pushed, so a job id that was printed can always be
//! looked up.
//!
//! Every key starts with the configured namespace, so tests, demos and deployments
//! share one Redis without touching each other's keys.

pub mod enqueue;
pub mod keys;
pub mod results;
pub mod servers;

use std::time::Duration;

use redis::aio::ConnectionManager;

pub use enqueue::Producer;
pub use keys::Keys;
pub use results::{JobFailure, JobRecord, JobStatus, ResultStore};

/// How long a first connection to Redis may take before we say it is unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A Redis failure, with the URL it concerns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// No connection could be made.
    #[error("cannot reach Redis at {url}: {message} (start redis-server, run scripts/dev-up, or set REDIS_URL)")]
    Unreachable {
        /// The URL tried (without password).
        url: String,
        /// What failed.
        message: String,
    },
    /// A command failed on an open connection.
    #[error("Redis command failed: {0}")]
    Command(#[from] redis::RedisError),
    /// apalis-redis refused an operation.
    #[error("queue operation failed: {0}")]
    Storage(#[from] apalis_redis::Error),
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
            QueueError::Storage(apalis_redis::Error::Database(e)) => {
                e.is_connection_refusal() || e.is_io_error() || e.is_timeout()
            }
            _ => false,
        }
    }
}

/// Strips a password from a Redis URL for messages.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// Connects to Redis with a deadline, with an error that names the URL.
pub async fn connect(url: &str) -> Result<ConnectionManager, QueueError> {
    let unreachable = |message: String| QueueError::Unreachable {
        url: redacted(url),
        message,
    };
    let client = redis::Client::open(url).map_err(|e| unreachable(e.to_string()))?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(Duration::from_secs(30)))
        .set_number_of_retries(2);
    match tokio::time::timeout(
        CONNECT_TIMEOUT * 2,
        client.get_connection_manager_with_config(config),
    )
    .await
    {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(unreachable(e.to_string())),
        Err(_) => Err(unreachable(format!(
            "no answer within {}s",
            CONNECT_TIMEOUT.as_secs() * 2
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redacted("redis://:secret@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
