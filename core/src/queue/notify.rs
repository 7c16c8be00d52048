//! Waiting for jobs to end without polling: one pub/sub subscription per process, shared
//! by every waiter.
//!
//! Every script that ends a job (finish, cancel, rescue, bury: `job_ended` in
//! `lua/common.lua`) publishes `ID STATUS` on [`Keys::ended_channel`] (a worker's batch
//! of outcomes: one message of such lines). [`Endings`] keeps one connection
//! subscribed to it and wakes the waiters of those ids; `mcpq serve`'s
//! `GET /v1/jobs/{id}/result?wait=30s` is built on [`Endings::wait`].
//!
//! Guarantees:
//! - A wait never misses an end: the waiter registers before it reads the status, so an
//!   end published between the read and the wait still wakes it; and it re-reads the
//!   status every [`RECHECK`] whatever it heard, so a message lost while the subscription
//!   reconnected (Redis restarted) costs at most that long.
//! - A wait never outlives its deadline, and costs one status read per wake-up or
//!   recheck, not a poll loop. The recheck period is [`RECHECK`] give or take a fifth,
//!   drawn per waiter, so waiters started together do not read together for ever.
//! - A wait survives Redis failing under it (a restart): a status read that fails is
//!   retried with backoff ([`RETRY_FIRST`] doubling to [`RETRY_MAX`]) until the
//!   deadline; the wait then answers with the last record it read, and fails only if it
//!   never read one (regression test: chaos `serve_restart`).
//! - Waiters of a job that never ends are dropped with their wait: the map holds only
//!   ids somebody is waiting on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::{JobRecord, Keys, QueueError, ResultStore};
use crate::backoff::Backoff;

/// How often a waiter re-reads the status even if it heard nothing.
pub const RECHECK: Duration = Duration::from_secs(5);

/// A failed status read is retried after this long first...
pub const RETRY_FIRST: Duration = Duration::from_millis(100);
/// ...doubling up to this (Redis restarting takes a second or a few).
pub const RETRY_MAX: Duration = Duration::from_secs(2);

/// This waiter's recheck period: [`RECHECK`] within ±20 %, at random.
fn jittered_recheck() -> Duration {
    let base = RECHECK.as_millis() as u64;
    Duration::from_millis(fastrand::u64(base * 4 / 5..=base * 6 / 5))
}

type Waiters = Arc<Mutex<HashMap<String, (Arc<Notify>, usize)>>>;

/// The ends of jobs, heard on one subscription (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct Endings {
    waiters: Waiters,
    store: ResultStore,
    _listener: Arc<ListenerTask>,
}

/// Aborts the subscription when the last [`Endings`] is dropped.
struct ListenerTask(tokio::task::JoinHandle<()>);

impl Drop for ListenerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One waiter's registration; unregisters on drop.
struct Registration {
    waiters: Waiters,
    id: String,
    notify: Arc<Notify>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut map = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, count)) = map.get_mut(&self.id) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.id);
            }
        }
    }
}

impl Endings {
    /// Subscribes (in a background task that reconnects on its own) and returns the
    /// handle. `target` is the Redis to subscribe to; `store` reads statuses.
    pub fn start(
        target: crate::config::redis_target::RedisTarget,
        keys: Keys,
        store: ResultStore,
    ) -> Self {
        let waiters: Waiters = Arc::default();
        let task = tokio::spawn(listen(target, keys.ended_channel(), waiters.clone()));
        Endings {
            waiters,
            store,
            _listener: Arc::new(ListenerTask(task)),
        }
    }

    fn register(&self, id: &str) -> Registration {
        let mut map = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map
            .entry(id.to_string())
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        Registration {
            waiters: self.waiters.clone(),
            id: id.to_string(),
            notify: entry.0.clone(),
        }
    }

    /// How many distinct jobs are being waited on (for metrics and tests).
    pub fn waited_jobs(&self) -> usize {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Waits until job `id` has ended or `timeout` has passed, and returns its record
    /// without the result ([`ResultStore::status`]): check `status.is_finished()`.
    /// `None` if there is no such job.
    ///
    /// A status read that fails is retried until the deadline (see the module docs);
    /// at the deadline the answer is the last record read, or the last error if none
    /// could be read at all.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<Option<JobRecord>, QueueError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let registration = self.register(id);
        let recheck = jittered_recheck();
        let mut retry = Backoff::new(RETRY_FIRST, RETRY_MAX);
        let mut last: Option<JobRecord> = None;
        loop {
            // Armed before the read: an end published after it wakes us.
            let heard = registration.notify.notified();
            tokio::pin!(heard);
            heard.as_mut().enable();
            let read = tokio::time::timeout_at(deadline, self.store.status(id))
                .await
                .unwrap_or_else(|_| {
                    Err(QueueError::Unreachable {
                        url: "the queue's connection".to_string(),
                        message: "no answer before the wait's deadline".to_string(),
                    })
                });
            let now = tokio::time::Instant::now();
            let pause = match read {
                Ok(None) => return Ok(None),
                Ok(Some(record)) => {
                    if record.status.is_finished() || now >= deadline {
                        return Ok(Some(record));
                    }
                    last = Some(record);
                    retry.reset();
                    recheck.min(deadline - now)
                }
                Err(e) => {
                    if now >= deadline {
                        return last.map(Some).ok_or(e);
                    }
                    tracing::debug!(job = %id, "reading the status failed (retrying): {e}");
                    // Woken or not, the read is retried after the backoff.
                    let _ =
                        tokio::time::timeout(retry.advance().min(deadline - now), &mut heard).await;
                    continue;
                }
            };
            let _ = tokio::time::timeout(pause, heard).await;
        }
    }
}

/// The subscription: wakes the waiters of each id heard; after every (re)subscribe it
/// wakes every waiter, a hundred at a time (in a task of its own), so that each re-reads
/// its job's status (an end may have been published while nobody listened).
async fn listen(
    target: crate::config::redis_target::RedisTarget,
    channel: String,
    waiters: Waiters,
) {
    let on_subscribed = {
        let waiters = waiters.clone();
        move || {
            let waiters = waiters.clone();
            tokio::spawn(async move { wake_all(&waiters).await });
        }
    };
    super::subscribe::subscribe_forever(target, channel, "job ends", on_subscribed, |payload| {
        // One line "ID STATUS" per job ended (a worker's batch of outcomes is one message).
        let map = waiters.lock().unwrap_or_else(|e| e.into_inner());
        for line in payload.split(|b| *b == b'\n') {
            let id = line.split(|b| *b == b' ').next().unwrap_or_default();
            let Ok(id) = std::str::from_utf8(id) else {
                continue;
            };
            if let Some((notify, _)) = map.get(id) {
                notify.notify_waiters();
            }
        }
    })
    .await
}

/// Waiters woken at once after a reconnect; the next are woken [`WAKE_PAUSE`] later,
/// so thousands of waiters do not all read Redis the moment it is back.
const WAKE_CHUNK: usize = 100;
/// See [`WAKE_CHUNK`]: 10,000 waiters are woken over about a second.
const WAKE_PAUSE: Duration = Duration::from_millis(10);

async fn wake_all(waiters: &Waiters) {
    let all: Vec<Arc<Notify>> = waiters
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .map(|(notify, _)| notify.clone())
        .collect();
    for (i, chunk) in all.chunks(WAKE_CHUNK).enumerate() {
        if i > 0 {
            tokio::time::sleep(WAKE_PAUSE).await;
        }
        for notify in chunk {
            notify.notify_waiters();
        }
    }
}
