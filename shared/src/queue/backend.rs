//! `RedisQueue`: mcpq's own apalis [`Backend`] over the Lua scripts of this module.
//!
//! apalis runs the worker (concurrency, tower layers, graceful stop); this backend only
//! hands it jobs. It asks for a job only when apalis has a free slot (apalis polls the
//! service before the backend), so nothing is fetched ahead and held without running:
//! every leased job is a running job whose lease its worker renews.
//!
//! Guarantees:
//! - **Never ends on a Redis error.** A failed fetch is logged and retried after a
//!   backoff (100 ms doubling to 5 s); the `redis` connection manager reconnects. So a
//!   Redis restart pauses the worker instead of stopping it.
//! - **Never busy-polls.** An empty queue is asked again after `worker.poll_interval`.
//! - **Nothing lost on close**: a fetched job is already running in apalis and its
//!   outcome is written by the runner; a fetch still in flight at shutdown is awaited
//!   and its job released to the front of its queue.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId;
use apalis_core::task::Task;
use apalis_core::worker::context::WorkerContext;
use redis::aio::ConnectionManager;
use tower_layer::Identity;

use super::fetch::{fetch, Delivery};
use super::finish::{finish, Outcome};
use super::{Keys, QueueError, QueueSettings};

/// First wait after a failed fetch; doubles up to [`MAX_ERROR_BACKOFF`].
const ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between fetch attempts while Redis fails.
const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(5);

type FetchFuture = Pin<Box<dyn Future<Output = Result<Option<Delivery>, QueueError>> + Send>>;

/// The backend of one worker process.
pub struct RedisQueue {
    conn: ConnectionManager,
    keys: Keys,
    settings: QueueSettings,
    worker: String,
    poll_interval: Duration,
    fetching: Option<FetchFuture>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    backoff: Duration,
    closing: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field("namespace", &self.keys.namespace())
            .field("worker", &self.worker)
            .finish()
    }
}

impl Clone for RedisQueue {
    fn clone(&self) -> Self {
        RedisQueue::new(
            self.conn.clone(),
            self.keys.clone(),
            self.settings.clone(),
            self.worker.clone(),
            self.poll_interval,
        )
    }
}

impl RedisQueue {
    /// A backend leasing jobs of `keys`' namespace to `worker` (its unique name).
    pub fn new(
        conn: ConnectionManager,
        keys: Keys,
        settings: QueueSettings,
        worker: String,
        poll_interval: Duration,
    ) -> Self {
        RedisQueue {
            conn,
            keys,
            settings,
            worker,
            poll_interval,
            fetching: None,
            sleep: None,
            backoff: ERROR_BACKOFF,
            closing: None,
        }
    }

    fn start_fetch(&mut self) -> FetchFuture {
        let (mut conn, keys, settings, worker) = (
            self.conn.clone(),
            self.keys.clone(),
            self.settings.clone(),
            self.worker.clone(),
        );
        Box::pin(async move { fetch(&mut conn, &keys, &worker, &settings).await })
    }
}

fn task(delivery: Delivery) -> Task<Delivery> {
    let id = TaskId::from_string(delivery.id.clone());
    let attempt = delivery.attempt as usize;
    TaskBuilder::new(delivery)
        .task_id(id)
        .attempt(attempt)
        .build()
}

impl Backend for RedisQueue {
    type Task = Task<Delivery>;
    type Error = QueueError;

    fn poll_ready(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), QueueError>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Option<Result<Task<Delivery>, QueueError>>> {
        loop {
            if let Some(sleep) = self.sleep.as_mut() {
                ready!(sleep.as_mut().poll(cx));
                self.sleep = None;
            }
            let fut = match self.fetching.as_mut() {
                Some(fut) => fut,
                None => {
                    let fut = self.start_fetch();
                    self.fetching.insert(fut)
                }
            };
            let fetched = ready!(fut.as_mut().poll(cx));
            self.fetching = None;
            let wait = match fetched {
                Ok(Some(delivery)) => {
                    self.backoff = ERROR_BACKOFF;
                    return Poll::Ready(Some(Ok(task(delivery))));
                }
                Ok(None) => {
                    self.backoff = ERROR_BACKOFF;
                    self.poll_interval
                }
                Err(e) => {
                    let wait = self.backoff;
                    tracing::warn!("cannot fetch jobs (retrying in {wait:?}): {e}");
                    self.backoff = (self.backoff * 2).min(MAX_ERROR_BACKOFF);
                    wait
                }
            };
            self.sleep = Some(Box::pin(tokio::time::sleep(wait)));
        }
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), QueueError>> {
        if self.closing.is_none() {
            // A fetch in flight may have leased a job that will now never run here:
            // finish the fetch and release that job to the front of its queue, rather
            // than leave it to the rescuer (which would count a failed attempt).
            let fetching = self.fetching.take();
            let (mut conn, keys, settings) =
                (self.conn.clone(), self.keys.clone(), self.settings.clone());
            self.closing = Some(Box::pin(async move {
                if let Some(Ok(Some(d))) = match fetching {
                    Some(f) => Some(f.await),
                    None => None,
                } {
                    let released = finish(
                        &mut conn,
                        &keys,
                        &settings,
                        &d.id,
                        d.attempt,
                        &Outcome::Release,
                    )
                    .await;
                    tracing::debug!(job = %d.id, ?released, "released a job fetched during shutdown");
                }
            }));
        }
        let closing = self.closing.as_mut().expect("set just above");
        ready!(closing.as_mut().poll(cx));
        Poll::Ready(Ok(()))
    }
}

impl BackendConfig for RedisQueue {
    type Args = Delivery;
    type Id = String;
    type Kind = Ephemeral;
    type Config = QueueSettings;
    type Layer = Identity;

    fn config(&self) -> &QueueSettings {
        &self.settings
    }

    fn middleware(&mut self, _: &mut WorkerContext) -> Identity {
        Identity::new()
    }
}
