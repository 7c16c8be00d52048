//! Reading finished jobs' results for `GET /v1/jobs/{id}/result`, which may each be
//! megabytes (up to `queue.max_result`), without starving the rest of the server.
//!
//! Guarantees (regression test `serve::big_results_read_by_many_at_once_keep_the_server_answering`):
//! - A result read fetches the record with its result, never the job's payload
//!   (the envelope, up to `queue.max_payload`, which the answer does not carry).
//! - It goes through a Redis connection of its own: `/health`, submits and status reads
//!   on the shared connection never queue behind megabytes of results. A read that
//!   fails (that connection broke while idle: Redis restarted) is tried again, 3 times.
//! - At most [`MAX_READS`] run at once (the others wait their turn); the text is checked,
//!   parsed and serialized on a blocking thread, never on the async runtime's threads.
//!   Memory held by reads is thus at most about `MAX_READS` times three results.

use axum::body::Bytes;
use axum::http::StatusCode;
use std::time::Duration;

use mcpq_core::queue::{JobRecord, Keys, QueueError, RawRecord, ResultStore};
use mcpq_shared::queue::Conn;
use tokio::sync::Semaphore;

use crate::error::ApiError;

/// Most result reads under way at once: enough to keep a fast disk-less Redis busy,
/// few enough that 8 MiB results cannot take the process's memory or Redis's time.
pub const MAX_READS: usize = 16;

/// The result reader (see the module docs). Share it behind an `Arc`.
pub struct ResultReads {
    store: ResultStore,
    permits: Semaphore,
}

impl ResultReads {
    /// A reader over its own connection `conn`, for `keys`' namespace.
    pub fn new(conn: Conn, keys: Keys) -> Self {
        ResultReads {
            store: ResultStore::new(conn, keys),
            permits: Semaphore::new(MAX_READS),
        }
    }

    /// Job `id`'s whole record but its payload, as JSON; `None` if there is no such job.
    pub async fn read_json(&self, id: &str) -> Result<Option<Bytes>, ApiError> {
        self.with_record(id, |record| {
            serde_json::to_vec(&record)
                .map(Bytes::from)
                .map_err(|e| QueueError::Corrupt {
                    id: record.id.clone(),
                    message: format!("its record does not serialize: {e}"),
                })
        })
        .await
    }

    /// Job `id`'s whole record but its payload, parsed; `None` if there is no such job.
    pub async fn read_record(&self, id: &str) -> Result<Option<JobRecord>, ApiError> {
        self.with_record(id, Ok).await
    }
}

impl ResultReads {
    /// Reads job `id`'s record (one of [`MAX_READS`] at a time), then parses it and
    /// hands it to `then` on a blocking thread (the result may be megabytes: checked as
    /// UTF-8, parsed, maybe serialized, never on the async runtime).
    async fn with_record<T: Send + 'static>(
        &self,
        id: &str,
        then: impl FnOnce(JobRecord) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<Option<T>, ApiError> {
        let _turn = self
            .permits
            .acquire()
            .await
            .map_err(|e| internal(e.to_string()))?;
        let Some(raw) = self.read_raw(id).await? else {
            return Ok(None);
        };
        let out = tokio::task::spawn_blocking(move || then(raw.parse()?))
            .await
            .map_err(|e| internal(e.to_string()))??;
        Ok(Some(out))
    }

    /// The raw record, a failed read retried [`RETRIES`] times: the connection is idle
    /// between big reads, and after Redis restarted its first command reports the
    /// broken connection while it reconnects.
    async fn read_raw(&self, id: &str) -> Result<Option<RawRecord>, QueueError> {
        let mut pause = Duration::from_millis(100);
        let mut tries = 0;
        loop {
            match self.store.outcome_raw(id).await {
                Err(QueueError::Command(e)) if tries < RETRIES => {
                    tracing::debug!(job = %id, "reading the result failed (retrying in {pause:?}): {e}");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    tries += 1;
                }
                other => return other,
            }
        }
    }
}

/// How many times a failed result read is tried again (after 100, 200, 400 ms).
const RETRIES: u32 = 3;

fn internal(message: String) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
}
