//! `RedisQueue`: mcpq's own apalis [`Backend`] over the Lua scripts of this module.
//!
//! apalis runs the worker (concurrency, tower layers, graceful stop); this backend only
//! hands it jobs. apalis asks for a job only when it has a free slot; the backend then
//! leases as many jobs as there are free slots (`concurrency` minus the jobs in
//! [`InFlight`]), at most [`MAX_BATCH`], in one round trip, and hands them out one by one.
//! Jobs fetched ahead are registered in [`InFlight`] at once, so their leases are renewed
//! and a cancel reaches them before they start. Under load batches grow; when idle, a
//! worker takes one job at a time and leaves the rest to the other workers.
//!
//! A worker that holds no job may take a *suspect* (a job whose worker died under it,
//! see `lua/fetch.lua`), which then runs alone: the backend fetches nothing more until
//! the worker is idle again. A busy worker that learns suspects are waiting stops
//! fetching until it is idle, then takes one; so suspects never starve.
//!
//! Guarantees:
//! - **Never ends on a Redis error.** A failed fetch is logged and retried after a
//!   backoff (100 ms doubling to 5 s); the `redis` connection manager reconnects. So a
//!   Redis restart pauses the worker instead of stopping it.
//! - **Never busy-polls.** An empty queue is asked again after `worker.poll_interval`,
//!   or at once when woken ([`RedisQueue::with_wake`]: a script announced new jobs on
//!   `{ns}:wake`), so an idle worker starts a job within a round trip of its enqueue.
//! - **Nothing lost on close**: a fetched job is already running in apalis and its
//!   outcome is written by the runner; a fetch still in flight at shutdown is awaited
//!   and its job released to the front of its queue.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId;
use apalis_core::task::Task;
use apalis_core::worker::context::WorkerContext;
use mcpq_core::queue::Conn;
use tower_layer::Identity;

use crate::backoff::Backoff;

use crate::config::served::Served;
use crate::queue::fetch::{fetch_any, Batch, Delivery, Rotation};
use crate::queue::finish::{finish, Outcome};
use crate::queue::lease::InFlight;
use crate::queue::{Keys, QueueError, QueueSettings};

/// Most jobs leased in one fetch.
pub const MAX_BATCH: usize = 32;

/// First wait after a failed fetch; doubles up to [`MAX_ERROR_BACKOFF`].
const ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between fetch attempts while Redis fails.
const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(5);

type FetchFuture = Pin<Box<dyn Future<Output = Result<Batch, QueueError>> + Send>>;
type Pause = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The backend of one worker process.
pub struct RedisQueue {
    conn: Conn,
    keys: Keys,
    settings: QueueSettings,
    worker: String,
    poll_interval: Duration,
    jobs: InFlight,
    concurrency: usize,
    /// The named queues fetched from, with their weights.
    queues: Served,
    /// The turn over the namespace's partitions (shared by clones).
    rotation: Arc<Rotation>,
    buffer: VecDeque<Delivery>,
    fetching: Option<FetchFuture>,
    sleep: Option<Pause>,
    /// Fired when jobs became ready: ends an idle pause early.
    wake: Option<Arc<tokio::sync::Notify>>,
    backoff: Backoff,
    /// Set when this worker runs a suspect or learned that suspects wait: it fetches
    /// nothing more until it runs no job, then takes one (see `lua/fetch.lua`).
    wait_idle: bool,
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
        .with_jobs(self.jobs.clone(), self.concurrency)
        .with_queues(self.queues.clone())
        .with_wake(self.wake.clone())
    }
}

impl RedisQueue {
    /// A backend leasing jobs of `keys`' namespace to `worker` (its unique name).
    pub fn new(
        conn: Conn,
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
            jobs: InFlight::default(),
            concurrency: 1,
            queues: Served::default(),
            rotation: Arc::new(Rotation::default()),
            buffer: VecDeque::new(),
            fetching: None,
            sleep: None,
            wake: None,
            backoff: Backoff::new(ERROR_BACKOFF, MAX_ERROR_BACKOFF),
            wait_idle: false,
            closing: None,
        }
    }

    /// Shares the worker's registry of running jobs, and its `concurrency` (which
    /// bounds how many jobs one fetch leases). Without it, one job per fetch.
    pub fn with_jobs(mut self, jobs: InFlight, concurrency: usize) -> Self {
        self.jobs = jobs;
        self.concurrency = concurrency.max(1);
        self
    }

    /// Fetches from `queues` (by weight) instead of the default queue alone.
    pub fn with_queues(mut self, queues: Served) -> Self {
        self.queues = queues;
        self
    }

    /// Ends the wait after an empty fetch as soon as `wake` is notified
    /// (`queue::lease::listen_for_work`), instead of after the whole poll interval.
    pub fn with_wake(mut self, wake: Option<Arc<tokio::sync::Notify>>) -> Self {
        self.wake = wake;
        self
    }

    /// A pause of `wait`, ended early by a wake when `wakeable`.
    fn pause(&self, wait: Duration, wakeable: bool) -> Pause {
        match self.wake.clone().filter(|_| wakeable) {
            Some(wake) => Box::pin(async move {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = wake.notified() => {}
                }
            }),
            None => Box::pin(tokio::time::sleep(wait)),
        }
    }

    fn start_fetch(&mut self) -> FetchFuture {
        let (mut conn, keys, settings, worker, jobs, queues, rotation) = (
            self.conn.clone(),
            self.keys.clone(),
            self.settings.clone(),
            self.worker.clone(),
            self.jobs.clone(),
            self.queues.clone(),
            self.rotation.clone(),
        );
        // apalis polls only with a slot free: at least one.
        let free = self
            .concurrency
            .saturating_sub(jobs.len())
            .clamp(1, MAX_BATCH);
        let pick = fastrand::u32(0..settings.weights.total());
        let alone = jobs.is_empty();
        Box::pin(async move {
            let batch = fetch_any(
                &mut conn, &keys, &rotation, &worker, &settings, &queues, pick, free, alone,
            )
            .await?;
            for d in &batch.deliveries {
                jobs.hold(&d.id, d.attempt);
            }
            Ok(batch)
        })
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
            if let Some(delivery) = self.buffer.pop_front() {
                return Poll::Ready(Some(Ok(task(delivery))));
            }
            if let Some(sleep) = self.sleep.as_mut() {
                ready!(sleep.as_mut().poll(cx));
                self.sleep = None;
            }
            if self.wait_idle && self.fetching.is_none() && !self.jobs.is_empty() {
                // A suspect runs here, or suspects wait for an idle worker: no new job
                // beside them until this worker's jobs are done.
                self.sleep = Some(self.pause(self.poll_interval, false));
                continue;
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
            let (wait, wakeable) = match fetched {
                Ok(batch) => {
                    self.backoff.reset();
                    self.wait_idle =
                        batch.suspects_waiting > 0 || batch.deliveries.iter().any(|d| d.alone);
                    if !batch.deliveries.is_empty() {
                        self.buffer.extend(batch.deliveries);
                        continue;
                    }
                    (self.poll_interval, true)
                }
                Err(e) => {
                    let wait = self.backoff.advance();
                    tracing::warn!("cannot fetch jobs (retrying in {wait:?}): {e}");
                    (wait, false)
                }
            };
            self.sleep = Some(self.pause(wait, wakeable));
        }
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), QueueError>> {
        if self.closing.is_none() {
            // Jobs fetched ahead, and those of a fetch still in flight, will now never
            // run here: release them to the front of their queue, rather than leave them
            // to the rescuer (which would count a failed attempt).
            let fetching = self.fetching.take();
            let mut held: Vec<Delivery> = self.buffer.drain(..).collect();
            let (mut conn, keys, settings, jobs) = (
                self.conn.clone(),
                self.keys.clone(),
                self.settings.clone(),
                self.jobs.clone(),
            );
            self.closing = Some(Box::pin(async move {
                if let Some(f) = fetching {
                    held.extend(f.await.unwrap_or_default().deliveries);
                }
                for d in held {
                    let release = Outcome::Release;
                    let home = keys.for_job(&d.id);
                    let released =
                        finish(&mut conn, &home, &settings, &d.id, d.attempt, &release).await;
                    jobs.forget(&d.id, d.attempt);
                    tracing::debug!(job = %d.id, ?released, "released a job fetched ahead, at shutdown");
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
