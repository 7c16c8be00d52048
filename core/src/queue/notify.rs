//! Waiting for jobs to end without polling: one pub/sub subscription per process, shared
//! by every waiter.
//!
//! Every script that ends a job (finish, cancel, rescue, bury: `job_ended` in
//! `lua/common.lua`) publishes `ID STATUS` on [`Keys::ended_channel`]. [`Endings`] keeps
//! one connection subscribed to it and wakes the waiters of that id; `mcpq serve`'s
//! `GET /v1/jobs/{id}/result?wait=30s` is built on [`Endings::wait`].
//!
//! Guarantees:
//! - A wait never misses an end: the waiter registers before it reads the status, so an
//!   end published between the read and the wait still wakes it; and it re-reads the
//!   status every [`RECHECK`] whatever it heard, so a message lost while the subscription
//!   reconnected (Redis restarted) costs at most that long.
//! - A wait never outlives its deadline, and costs one status read per wake-up or
//!   [`RECHECK`], not a poll loop.
//! - Waiters of a job that never ends are dropped with their wait: the map holds only
//!   ids somebody is waiting on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::{JobRecord, Keys, QueueError, ResultStore};

/// How often a waiter re-reads the status even if it heard nothing.
pub const RECHECK: Duration = Duration::from_secs(5);

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
    /// handle. `client` is the Redis client to subscribe with; `store` reads statuses.
    pub fn start(client: redis::Client, keys: Keys, store: ResultStore) -> Self {
        let waiters: Waiters = Arc::default();
        let task = tokio::spawn(listen(client, keys.ended_channel(), waiters.clone()));
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
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<Option<JobRecord>, QueueError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let registration = self.register(id);
        loop {
            // Armed before the read: an end published after it wakes us.
            let heard = registration.notify.notified();
            tokio::pin!(heard);
            heard.as_mut().enable();
            let Some(record) = self.store.status(id).await? else {
                return Ok(None);
            };
            let now = tokio::time::Instant::now();
            if record.status.is_finished() || now >= deadline {
                return Ok(Some(record));
            }
            let pause = RECHECK.min(deadline - now);
            let _ = tokio::time::timeout(pause, heard).await;
        }
    }
}

/// The subscription: wakes the waiters of each id heard; after every (re)subscribe it
/// wakes every waiter, so that each re-reads its job's status (an end may have been
/// published while nobody listened).
async fn listen(client: redis::Client, channel: String, waiters: Waiters) {
    let on_subscribed = {
        let waiters = waiters.clone();
        move || wake_all(&waiters)
    };
    super::subscribe::subscribe_forever(client, channel, "job ends", on_subscribed, |payload| {
        let id = payload.split(|b| *b == b' ').next().unwrap_or_default();
        let Ok(id) = std::str::from_utf8(id) else {
            return;
        };
        let map = waiters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((notify, _)) = map.get(id) {
            notify.notify_waiters();
        }
    })
    .await
}

fn wake_all(waiters: &Waiters) {
    for (notify, _) in waiters.lock().unwrap_or_else(|e| e.into_inner()).values() {
        notify.notify_waiters();
    }
}
