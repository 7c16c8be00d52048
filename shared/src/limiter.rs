//! `Limiter`: the worker's side of the cluster-wide limits (`queue::limits`): waits
//! until a call to an MCP server or the model API may go, within the job's deadline.
//!
//! [`Limiter::admit`] is called before every call of a job to a limited endpoint (by
//! `mcp::JobSessions::call` for tool calls, by `agent::chat` for model requests):
//! 1. it tries `lua/limit_acquire.lua`; admitted, it returns a [`Permit`];
//! 2. held back, it sleeps for the time the script names (polling at most every
//!    [`MAX_POLL`] for a concurrency slot, which a release may free sooner), raced
//!    against the job's cancellation, and tries again;
//! 3. when the wait would pass the job's deadline it gives up at once with
//!    [`LimitError::Deadline`], a `timeout` failure (retryable, as any deadline).
//!
//! Waiting is not an attempt and not a failure: the job stays running, holding its
//! lease (renewed as usual); only the deadline ends it. A [`Permit`] gives its slot
//! back when dropped (answer, error, timeout or cancel alike); a worker that dies
//! leaves it to expire with its lease (`queue::limits::SLOT_LEASE_SLACK`).
//!
//! Caveats: if Redis cannot be reached, the limiter does not admit (limits that would
//! silently stop holding are worse than a wait); it retries every [`REDIS_RETRY`] until
//! the deadline, logging a warning.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mcpq_core::queue::Conn;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::queue::limits::{self, Acquire, Held, Limits};
use crate::queue::Keys;

/// Longest sleep between tries for a concurrency slot: a slot freed by a release is
/// taken within this (100 ms), at one cheap script per waiting call per interval.
pub const MAX_POLL: Duration = Duration::from_millis(100);

/// First sleep for a concurrency slot; doubles to [`MAX_POLL`].
const FIRST_POLL: Duration = Duration::from_millis(5);

/// Wait before trying again when Redis failed.
pub const REDIS_RETRY: Duration = Duration::from_millis(200);

/// Why a call was not admitted.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    /// The wait for the limit would outlast the job's deadline.
    #[error("{endpoint}: {}", deadline_text(*held, *waited, *needed))]
    Deadline {
        /// `server:NAME` or `llm`.
        endpoint: String,
        /// The limit that held it last (none: Redis could not be reached).
        held: Option<Held>,
        /// How long it waited.
        waited: Duration,
        /// How much longer it would have had to wait at least.
        needed: Duration,
    },
    /// The job was cancelled while it waited.
    #[error("{endpoint}: cancelled while waiting for a cluster-wide limit")]
    Cancelled {
        /// `server:NAME` or `llm`.
        endpoint: String,
    },
}

/// What [`LimitError::Deadline`] says, by the limit that held the call.
fn deadline_text(held: Option<Held>, waited: Duration, needed: Duration) -> String {
    match held {
        Some(Held::Concurrency) => format!(
            "no concurrency slot (max_concurrent, cluster-wide) freed up within this job's deadline (waited {waited:?}; raise the limit or the job's timeout)"
        ),
        Some(held) => format!(
            "held back by its {} limit (cluster-wide) for {waited:?}; the next place is {needed:?} away, past this job's deadline (raise the limit or the job's timeout)",
            held.as_str()
        ),
        None => format!(
            "Redis could not be reached to check its cluster-wide limits within this job's deadline (waited {waited:?})"
        ),
    }
}

/// The worker's limiter. Cheap to clone.
#[derive(Clone)]
pub struct Limiter {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Conn,
    keys: Keys,
    /// Makes holders unique across workers: the worker's name, and a random number per
    /// limiter (a restarted worker with a fixed `--name` in a container where it is
    /// pid 1 again must not reuse the last run's holders).
    worker: String,
    nonce: u64,
    next: AtomicU64,
    metrics: Option<Metrics>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("namespace", &self.inner.keys.namespace())
            .field("worker", &self.inner.worker)
            .finish()
    }
}

/// An admitted call: holds its concurrency slot (if the endpoint has a cap) until
/// dropped.
#[derive(Debug)]
pub struct Permit {
    limiter: Limiter,
    endpoint: String,
    holder: String,
    has_slot: bool,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.has_slot {
            return;
        }
        let inner = self.limiter.inner.clone();
        let (endpoint, holder) = (
            std::mem::take(&mut self.endpoint),
            std::mem::take(&mut self.holder),
        );
        // Dropped outside a runtime (a worker shutting down): the slot's lease ends it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) =
                    limits::release(inner.conn.clone(), &inner.keys, &endpoint, &holder).await
                {
                    tracing::warn!(%endpoint, "releasing a concurrency slot failed (it expires with its lease): {e}");
                }
            });
        }
    }
}

impl Limiter {
    /// A limiter on `conn` for the namespace of `keys`, for worker `worker`, counting
    /// waits in `metrics` (`mcpq_limit_wait_seconds`) if given.
    pub fn new(conn: Conn, keys: Keys, worker: &str, metrics: Option<Metrics>) -> Self {
        Limiter {
            inner: Arc::new(Inner {
                conn,
                keys,
                worker: worker.to_string(),
                nonce: fastrand::u64(..),
                next: AtomicU64::new(0),
                metrics,
            }),
        }
    }

    /// Waits until a call to `endpoint` passes `limits` (and any 429 pause), then
    /// returns its permit; a slot lasts `lease` at most. See the module doc.
    pub async fn admit(
        &self,
        endpoint: &str,
        limits: &Limits,
        lease: Duration,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<Permit, LimitError> {
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let holder = format!(
            "{}:{}:{:016x}:{n}",
            self.inner.worker,
            std::process::id(),
            self.inner.nonce
        );
        // Made before the first try and given back on every way out that is not an
        // admission (the deadline, a cancel, this future dropped): a try whose answer
        // was lost may have taken the slot. Releasing a slot never taken does nothing.
        let pending = Permit {
            limiter: self.clone(),
            endpoint: endpoint.to_string(),
            holder: holder.clone(),
            has_slot: limits.max_concurrent.is_some(),
        };
        let started = Instant::now();
        let mut poll = FIRST_POLL;
        let mut first_held: Option<Held> = None;
        loop {
            let tried = limits::try_acquire(
                self.inner.conn.clone(),
                &self.inner.keys,
                endpoint,
                limits,
                &holder,
                lease,
            )
            .await;
            let (wait, held) = match tried {
                Ok(Acquire::Admitted { resets }) => {
                    warn_resets(endpoint, resets);
                    if let Some(held) = first_held {
                        self.observe(endpoint, held, started.elapsed());
                        tracing::debug!(%endpoint, limit = held.as_str(), waited = ?started.elapsed(), "admitted after waiting for a limit");
                    }
                    return Ok(pending);
                }
                Ok(Acquire::Wait {
                    after,
                    held,
                    resets,
                }) => {
                    warn_resets(endpoint, resets);
                    let wait = if held == Held::Concurrency {
                        let wait = after.min(poll);
                        poll = (poll * 2).min(MAX_POLL);
                        wait
                    } else {
                        // A little jitter, so that the callers a window refused do not
                        // all come back in the same millisecond.
                        after
                            + Duration::from_millis(fastrand::u64(
                                0..=after.as_millis().min(20) as u64,
                            ))
                    };
                    (wait, Some(held))
                }
                Err(e) => {
                    tracing::warn!(%endpoint, "cannot check the cluster-wide limits (retrying in {REDIS_RETRY:?}): {e}");
                    (REDIS_RETRY, None)
                }
            };
            if first_held.is_none() {
                first_held = held;
                if let Some(held) = held {
                    tracing::debug!(%endpoint, limit = held.as_str(), ?wait, "waiting for a cluster-wide limit");
                }
            }
            let now = Instant::now();
            // A rate, a pause or a token debt names the earliest time: past the
            // deadline, waiting cannot help. A concurrency slot may free up any moment,
            // so that wait goes on to the deadline itself.
            let left = deadline.saturating_duration_since(now);
            let gives_up = match held {
                Some(Held::Concurrency) => left.is_zero(),
                _ => wait > left,
            };
            if gives_up {
                let held = held.or(first_held);
                if let Some(h) = held {
                    self.observe(endpoint, h, started.elapsed());
                }
                return Err(LimitError::Deadline {
                    endpoint: endpoint.to_string(),
                    held,
                    waited: started.elapsed(),
                    needed: wait,
                });
            }
            tokio::select! {
                _ = tokio::time::sleep(wait.min(left)) => {}
                _ = cancel.cancelled() => {
                    return Err(LimitError::Cancelled { endpoint: endpoint.to_string() });
                }
            }
        }
    }

    /// Pauses `endpoint` for every worker for `retry_after` (a 429's `Retry-After`,
    /// cut to `queue::limits::MAX_PAUSE`). A failure is logged, not returned: the
    /// caller's own retry still waits.
    pub async fn pause(&self, endpoint: &str, retry_after: Duration) {
        tracing::debug!(%endpoint, ?retry_after, "429: pausing the endpoint for every worker");
        if let Err(e) = limits::pause(
            self.inner.conn.clone(),
            &self.inner.keys,
            endpoint,
            retry_after,
        )
        .await
        {
            tracing::warn!(%endpoint, "cannot pause the endpoint for the other workers: {e}");
        }
    }

    /// Charges `used` tokens to `endpoint`'s bucket of `tokens` per period. A failure is
    /// logged, not returned (the answer is already there).
    pub async fn debit_tokens(
        &self,
        endpoint: &str,
        used: u64,
        tokens: &crate::config::rate::Rate,
    ) {
        if let Err(e) = limits::debit_tokens(
            self.inner.conn.clone(),
            &self.inner.keys,
            endpoint,
            used,
            tokens,
        )
        .await
        {
            tracing::warn!(%endpoint, "cannot count the model's tokens against the limit: {e}");
        }
    }

    fn observe(&self, endpoint: &str, held: Held, took: Duration) {
        if let Some(m) = &self.inner.metrics {
            m.limit_wait(endpoint, held.as_str(), took);
        }
    }
}

fn warn_resets(endpoint: &str, resets: u32) {
    if resets > 0 {
        tracing::warn!(%endpoint, resets, "limiter keys of the wrong type (written by something other than mcpq?) were reset");
    }
}
