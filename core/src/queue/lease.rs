//! The worker's side of leases: which jobs it runs, renewing their leases, and hearing
//! that one must stop.
//!
//! - [`InFlight`] lists the jobs this worker runs, each with its attempt number and a
//!   cancellation token; [`InFlight::stop`] fires the token with a [`StopReason`].
//! - [`renew_leases`] renews every lease every `lease / 3` in one script call
//!   (`lua/renew.lua`). A lease found lost (the job was cancelled, or rescued after this
//!   worker stalled) stops the job here: its tool calls end, and its late outcome would
//!   be rejected anyway (fencing).
//! - [`listen_for_cancels`] hears `mcpq cancel` on the `{ns}:cancel` channel, so a
//!   running job stops within a round trip, not a renewal period.
//!
//! Both loops survive Redis restarts: an error is logged and the loop goes on with a
//! backoff (pub/sub reconnects; renewals retry on the next tick).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::queue::Conn;
use tokio_util::sync::CancellationToken;

use super::fetch::millis;
use super::{scripts, Keys, QueueSettings};

/// Why a running job was told to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// `mcpq cancel`: the job is already marked cancelled.
    Cancelled,
    /// The lease was lost; `status` is what the job is now.
    LeaseLost {
        /// The job's status in Redis.
        status: String,
    },
    /// The worker is shutting down and the grace period is over.
    Shutdown,
}

#[derive(Debug)]
struct Entry {
    attempt: u32,
    token: CancellationToken,
    reason: Arc<OnceLock<StopReason>>,
}

/// The jobs this worker is running.
#[derive(Debug, Clone, Default)]
pub struct InFlight {
    jobs: Arc<Mutex<HashMap<String, Entry>>>,
}

/// One registered job; dropping it unregisters the job.
#[derive(Debug)]
pub struct Running {
    id: String,
    attempt: u32,
    token: CancellationToken,
    reason: Arc<OnceLock<StopReason>>,
    jobs: InFlight,
}

impl Running {
    /// Fires when the job must stop.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Why it was stopped, once it was.
    pub fn reason(&self) -> Option<StopReason> {
        self.reason.get().cloned()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut jobs = self.jobs.lock();
        // A newer attempt of the same job may have registered meanwhile (rescued and
        // fetched again by this very worker): only remove our own entry.
        if jobs
            .get(&self.id)
            .is_some_and(|e| e.attempt == self.attempt)
        {
            jobs.remove(&self.id);
        }
    }
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers attempt `attempt` of job `id` as held here before it starts (fetched
    /// ahead in a batch): its lease is renewed, and a cancel is remembered for when it
    /// starts.
    pub fn hold(&self, id: &str, attempt: u32) {
        self.lock().insert(
            id.to_string(),
            Entry {
                attempt,
                token: CancellationToken::new(),
                reason: Arc::new(OnceLock::new()),
            },
        );
    }

    /// Forgets a held job that will not run here (released at shutdown).
    pub fn forget(&self, id: &str, attempt: u32) {
        let mut jobs = self.lock();
        if jobs.get(id).is_some_and(|e| e.attempt == attempt) {
            jobs.remove(id);
        }
    }

    /// Registers attempt `attempt` of job `id` as running here (keeping the token of a
    /// [`InFlight::hold`] of the same attempt, so a cancel that came first still counts).
    pub fn register(&self, id: &str, attempt: u32) -> Running {
        let (token, reason) = {
            let mut jobs = self.lock();
            match jobs.get(id) {
                Some(e) if e.attempt == attempt => (e.token.clone(), e.reason.clone()),
                _ => {
                    let token = CancellationToken::new();
                    let reason = Arc::new(OnceLock::new());
                    jobs.insert(
                        id.to_string(),
                        Entry {
                            attempt,
                            token: token.clone(),
                            reason: reason.clone(),
                        },
                    );
                    (token, reason)
                }
            }
        };
        Running {
            id: id.to_string(),
            attempt,
            token,
            reason,
            jobs: self.clone(),
        }
    }

    /// Stops job `id` if it runs here; true if it did.
    pub fn stop(&self, id: &str, reason: StopReason) -> bool {
        match self.lock().get(id) {
            Some(entry) => {
                let _ = entry.reason.set(reason);
                entry.token.cancel();
                true
            }
            None => false,
        }
    }

    /// Stops every job; returns how many.
    pub fn stop_all(&self, reason: StopReason) -> usize {
        let jobs = self.lock();
        for entry in jobs.values() {
            let _ = entry.reason.set(reason.clone());
            entry.token.cancel();
        }
        jobs.len()
    }

    /// How many jobs run here.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no job runs here.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn snapshot(&self) -> Vec<(String, u32)> {
        self.lock()
            .iter()
            .map(|(id, e)| (id.clone(), e.attempt))
            .collect()
    }
}

/// Renews the leases of `jobs` every `lease / 3`, for ever (abort the task to stop).
pub async fn renew_leases(mut conn: Conn, keys: Keys, settings: QueueSettings, jobs: InFlight) {
    let period = settings.lease / 3;
    loop {
        tokio::time::sleep(period).await;
        // One script call per partition (and per 500 jobs).
        let mut by_partition: HashMap<u16, Vec<(String, u32)>> = HashMap::new();
        for (id, attempt) in jobs.snapshot() {
            by_partition
                .entry(keys.for_job(&id).partition())
                .or_default()
                .push((id, attempt));
        }
        for (partition, held) in by_partition {
            let part = keys.at(partition);
            renew_chunks(&mut conn, &part, &settings, &jobs, &held, period).await;
        }
    }
}

/// [`renew_leases`] of the jobs `held` in partition `keys`.
async fn renew_chunks(
    conn: &mut Conn,
    keys: &Keys,
    settings: &QueueSettings,
    jobs: &InFlight,
    held: &[(String, u32)],
    period: std::time::Duration,
) {
    for chunk in held.chunks(500) {
        let mut invocation = scripts::RENEW.prepare_invoke();
        invocation
            .key(keys.script_key())
            .arg(keys.prefix())
            .arg(millis(settings.lease));
        for (id, attempt) in chunk {
            invocation.arg(id).arg(*attempt);
        }
        match invocation.invoke_async::<Vec<String>>(conn).await {
            Ok(lost) => {
                for pair in lost.chunks(2) {
                    let (id, status) = (&pair[0], pair.get(1).cloned().unwrap_or_default());
                    tracing::warn!(job = %id, %status, "lease lost: the job is no longer ours; stopping it");
                    let reason = if status == "cancelled" {
                        StopReason::Cancelled
                    } else {
                        StopReason::LeaseLost { status }
                    };
                    jobs.stop(id, reason);
                }
            }
            Err(e) => tracing::warn!(
                jobs = chunk.len(),
                "could not renew leases (retrying in {period:?}): {e}"
            ),
        }
    }
}

/// Stops running jobs named on the cancel channel, for ever (abort the task to stop);
/// reconnects on its own ([`super::subscribe::subscribe_forever`]).
pub async fn listen_for_cancels(
    target: crate::config::redis_target::RedisTarget,
    keys: Keys,
    jobs: InFlight,
) {
    super::subscribe::subscribe_forever(
        target,
        keys.cancel_channel(),
        "cancels",
        || {},
        |payload| {
            let Ok(id) = std::str::from_utf8(payload) else {
                return;
            };
            if jobs.stop(id, StopReason::Cancelled) {
                tracing::info!(job = %id, "cancel requested: stopping the job");
            }
        },
    )
    .await
}

/// Wakes `wake` whenever a script says jobs became ready (`{ns}:wake`), and once at
/// every (re)subscribe (something may have been enqueued while nobody listened), for
/// ever (abort the task to stop). The backend fetches when woken instead of waiting for
/// its next poll; a missed message only costs that poll's wait.
pub async fn listen_for_work(
    target: crate::config::redis_target::RedisTarget,
    keys: Keys,
    wake: Arc<tokio::sync::Notify>,
) {
    let subscribed = wake.clone();
    super::subscribe::subscribe_forever(
        target,
        keys.wake_channel(),
        "new jobs",
        move || subscribed.notify_one(),
        |_| wake.notify_one(),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_fires_the_token_with_the_first_reason_and_drop_unregisters() {
        let jobs = InFlight::default();
        let run = jobs.register("a", 1);
        assert!(jobs.stop("a", StopReason::Cancelled));
        assert!(jobs.stop("a", StopReason::Shutdown));
        assert!(run.token().is_cancelled());
        assert_eq!(run.reason(), Some(StopReason::Cancelled));
        assert!(!jobs.stop("b", StopReason::Cancelled));
        drop(run);
        assert!(jobs.is_empty());
    }

    #[test]
    fn a_cancel_of_a_held_job_is_seen_when_it_starts() {
        let jobs = InFlight::default();
        jobs.hold("a", 3);
        assert!(jobs.stop("a", StopReason::Cancelled));
        let run = jobs.register("a", 3);
        assert!(run.token().is_cancelled());
        assert_eq!(run.reason(), Some(StopReason::Cancelled));
        drop(run);
        jobs.hold("b", 1);
        jobs.forget("b", 1);
        assert!(jobs.is_empty());
    }

    #[test]
    fn an_older_attempt_does_not_unregister_a_newer_one() {
        let jobs = InFlight::default();
        let old = jobs.register("a", 1);
        let new = jobs.register("a", 2);
        drop(old);
        assert_eq!(jobs.len(), 1);
        drop(new);
        assert!(jobs.is_empty());
    }
}
