//! Reading finished jobs' results for `GET /v1/jobs/{id}/result`, which may each be
//! megabytes (up to `queue.max_result`), without starving the rest of the server.
//!
//! Guarantees (regression test `serve::big_results_read_by_many_at_once_keep_the_server_answering`):
//! - A result read fetches the record with its result, never the job's payload
//!   (the envelope, up to `queue.max_payload`, which the answer does not carry).
//! - It goes through a Redis connection of its own: `/health`, submits and status reads
//!   on the shared connection never queue behind megabytes of results.
//! - At most [`MAX_READS`] run at once (the others wait their turn); the text is checked,
//!   parsed and serialized on a blocking thread, never on the async runtime's threads.
//!   Memory held by reads is thus at most about `MAX_READS` times three results.

use axum::body::Bytes;
use axum::http::StatusCode;
use mcpq_core::queue::{Keys, ResultStore};
use redis::aio::ConnectionManager;
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
    pub fn new(conn: ConnectionManager, keys: Keys) -> Self {
        ResultReads {
            store: ResultStore::new(conn, keys),
            permits: Semaphore::new(MAX_READS),
        }
    }

    /// Job `id`'s whole record but its payload, as JSON; `None` if there is no such job.
    pub async fn read_json(&self, id: &str) -> Result<Option<Bytes>, ApiError> {
        let _turn = self
            .permits
            .acquire()
            .await
            .map_err(|e| internal(e.to_string()))?;
        let Some(raw) = self.store.outcome_raw(id).await? else {
            return Ok(None);
        };
        let json = tokio::task::spawn_blocking(move || {
            let record = raw.parse()?;
            serde_json::to_vec(&record).map_err(|e| mcpq_core::queue::QueueError::Corrupt {
                id: record.id.clone(),
                message: format!("its record does not serialize: {e}"),
            })
        })
        .await
        .map_err(|e| internal(e.to_string()))??;
        Ok(Some(Bytes::from(json)))
    }
}

fn internal(message: String) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
}
