//! Taking one job: `lua/fetch.lua` leases the next queued job to a worker.
//!
//! In one step the script moves retries whose backoff is over back to their queues,
//! picks a priority by weight, pops one id, skips stale entries (a job cancelled while
//! queued) and dead-letters malformed entries (no record, a key of the wrong type, a
//! priority no queue has, a counter that is not a number), each judged alone, so one
//! bad entry never costs the good jobs of its batch their run. A payload that is not
//! UTF-8 is handed over as such ([`Delivery::problem`]) and dead-lettered by the
//! runner, like any payload that does not decode. The job becomes `running` with a
//! lease and the next attempt number, which is the fencing token of everything the
//! attempt writes later ([`super::finish`], [`super::lease`]).

use std::time::Duration;

use crate::queue::Conn;

use super::{scripts, Keys, QueueError, QueueSettings};
use crate::config::served::Served;

/// A job handed to a worker: what the worker needs to run it and to write its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The queue entry: the job id (or, for a malformed entry, whatever was there).
    pub id: String,
    /// This run's attempt number (1 = first run): the fencing token.
    pub attempt: u32,
    /// The envelope as stored; the worker decodes and checks it again.
    pub payload: String,
    /// Why the stored payload cannot even be read (not UTF-8); `payload` is empty then.
    pub problem: Option<String>,
    /// Most runs allowed.
    pub max_attempts: u32,
    /// Failed attempts so far (not counting this one).
    pub failures: u32,
    /// A suspect (its worker died under it before): it must run with no other job
    /// beside it on this worker, so that if it kills the worker, it alone pays.
    pub alone: bool,
}

/// What one [`fetch_batch`] leased.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// The jobs leased to the worker.
    pub deliveries: Vec<Delivery>,
    /// Suspects waiting for an idle worker (see `lua/fetch.lua`): a busy worker that
    /// sees some stops fetching until it is idle, then takes one.
    pub suspects_waiting: u64,
}

/// Leases the next job to `worker` for `settings.lease`, or `None` if none is ready.
/// The priority looked at first is drawn by weight (see [`fetch_batch`]).
pub async fn fetch(
    conn: &mut Conn,
    keys: &Keys,
    worker: &str,
    settings: &QueueSettings,
) -> Result<Option<Delivery>, QueueError> {
    let pick = fastrand::u32(0..settings.weights.total());
    fetch_picked(conn, keys, worker, settings, pick).await
}

/// [`fetch`] with the draw given (see [`fetch_batch`]).
pub async fn fetch_picked(
    conn: &mut Conn,
    keys: &Keys,
    worker: &str,
    settings: &QueueSettings,
    pick: u32,
) -> Result<Option<Delivery>, QueueError> {
    // A caller fetching one job holds no other: it may take a suspect.
    let served = Served::default();
    Ok(
        fetch_batch(conn, keys, worker, settings, &served, pick, 1, true)
            .await?
            .deliveries
            .pop(),
    )
}

/// Leases up to `max` jobs to `worker` in one round trip.
///
/// Job `j` of the batch looks first at the priority of draw `pick + j x stride` (mod the
/// sum of the weights, `stride` coprime with it): `pick` below `high` means high first,
/// then below `high + normal` normal first, else low first; an empty queue passes its
/// turn to the others, highest first. So over any run of draws each priority comes
/// first in proportion to its weight, and low is never starved.
///
/// Which queue is looked at first is drawn the same way over `queues`' weights (a
/// paused one is skipped); priorities are weighed within the queue.
///
/// `alone`: the worker runs no job now, so it may take a suspect (then that one only).
#[allow(clippy::too_many_arguments)]
pub async fn fetch_batch(
    conn: &mut Conn,
    keys: &Keys,
    worker: &str,
    settings: &QueueSettings,
    queues: &Served,
    pick: u32,
    max: usize,
    alone: bool,
) -> Result<Batch, QueueError> {
    let w = settings.weights;
    // Bytes, not text, for everything a record holds: the script judges each entry, and
    // a decoding error here would drop the whole batch.
    // (id, attempt, payload, max_attempts, failures, alone) per job.
    type Leased = (String, u32, Vec<u8>, Vec<u8>, Vec<u8>, u8);
    let mut invocation = scripts::FETCH.prepare_invoke();
    invocation
        .key(keys.script_key())
        .arg(keys.prefix())
        .arg(worker)
        .arg(millis(settings.lease))
        .arg(pick % w.total())
        .arg(w.high)
        .arg(w.normal)
        .arg(w.low)
        .arg(QueueSettings::secs(settings.dead_ttl))
        .arg(max.max(1))
        .arg(stride(w.total()))
        .arg(u8::from(alone))
        .arg(fastrand::u32(0..i32::MAX as u32))
        .arg(0);
    for (queue, weight) in queues.queues() {
        invocation.arg(queue).arg(*weight);
    }
    let (suspects_waiting, answer): (u64, Vec<Leased>) = invocation.invoke_async(conn).await?;
    let deliveries = answer
        .into_iter()
        .map(|(id, attempt, payload, max_attempts, failures, alone)| {
            let (payload, problem) = match String::from_utf8(payload) {
                Ok(p) => (p, None),
                Err(e) => (
                    String::new(),
                    Some(format!(
                        "the stored payload is not UTF-8 text (invalid byte at offset {})",
                        e.utf8_error().valid_up_to()
                    )),
                ),
            };
            Delivery {
                id,
                attempt,
                payload,
                problem,
                // A record written by hand may hold anything: fall back to one run.
                max_attempts: number(&max_attempts).unwrap_or(1),
                failures: number(&failures).unwrap_or(0),
                alone: alone == 1,
            }
        })
        .collect();
    Ok(Batch {
        deliveries,
        suspects_waiting,
    })
}

/// How long a worker believes a partition it found empty still is: after that it
/// looks again (one peek of all partitions when two or more are due).
const EMPTY_FOR: Duration = Duration::from_millis(250);

/// A worker's turn over the partitions: which to fetch from next, and which were
/// found empty lately (skipped until they are due to be looked at again).
#[derive(Debug, Default)]
pub struct Rotation {
    state: std::sync::Mutex<RotationState>,
}

#[derive(Debug, Default)]
struct RotationState {
    /// Where the next fetch starts (advances every fetch: partitions take turns).
    next: u16,
    /// Partitions found empty, with when.
    empty_since: std::collections::HashMap<u16, tokio::time::Instant>,
    /// False until the first peek: before it nothing is known.
    peeked: bool,
    /// Partitions where suspects wait (an idle worker looks there first).
    suspects: std::collections::HashSet<u16>,
}

impl Rotation {
    fn lock(&self) -> std::sync::MutexGuard<'_, RotationState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Partitions in this fetch's order, those lately found empty left out; `None`
    /// when a peek of all is due (nothing known yet, two or more to look at again, or
    /// all empty).
    fn order(&self, partitions: u16) -> Option<Vec<u16>> {
        let mut st = self.lock();
        let now = tokio::time::Instant::now();
        let stale = st
            .empty_since
            .values()
            .filter(|at| now.duration_since(**at) >= EMPTY_FOR)
            .count();
        let fresh = st.empty_since.len() - stale;
        if !st.peeked || stale >= 2 || fresh >= usize::from(partitions) {
            return None;
        }
        let start = st.next % partitions;
        st.next = (start + 1) % partitions;
        Some(
            (0..partitions)
                .map(|i| (start + i) % partitions)
                .filter(|p| {
                    st.empty_since
                        .get(p)
                        .is_none_or(|at| now.duration_since(*at) >= EMPTY_FOR)
                })
                .collect(),
        )
    }

    fn peeked(&self, partitions: u16, with_work: &[u16]) {
        let mut st = self.lock();
        let now = tokio::time::Instant::now();
        st.peeked = true;
        for p in 0..partitions {
            if with_work.contains(&p) {
                st.empty_since.remove(&p);
            } else {
                st.empty_since.insert(p, now);
            }
        }
    }

    /// Records whether suspects wait in `partition`.
    fn suspects(&self, partition: u16, waiting: bool) {
        let mut st = self.lock();
        if waiting {
            st.suspects.insert(partition);
        } else {
            st.suspects.remove(&partition);
        }
    }

    fn has_suspects(&self, partition: u16) -> bool {
        self.lock().suspects.contains(&partition)
    }

    fn mark(&self, partition: u16, empty: bool) {
        let mut st = self.lock();
        if empty {
            st.empty_since
                .insert(partition, tokio::time::Instant::now());
        } else {
            st.empty_since.remove(&partition);
        }
    }
}

/// [`fetch_batch`] over every partition of `keys`' namespace: partitions take turns
/// ([`Rotation`]); one found empty is skipped for a while; when all are, one peek at
/// all of them at once (concurrent, one round trip's wait) finds those with work, so
/// an idle worker costs one round of cheap reads per poll, not a fetch per partition.
/// A job leased from a partition its id does not name (an entry someone else wrote)
/// is dead-lettered there at once and not handed out.
#[allow(clippy::too_many_arguments)]
pub async fn fetch_any(
    conn: &mut Conn,
    keys: &Keys,
    rotation: &Rotation,
    worker: &str,
    settings: &QueueSettings,
    queues: &Served,
    pick: u32,
    max: usize,
    alone: bool,
) -> Result<Batch, QueueError> {
    let partitions = keys.partitions();
    if partitions <= 1 {
        return fetch_batch(conn, keys, worker, settings, queues, pick, max, alone).await;
    }
    let order = match rotation.order(partitions) {
        Some(order) => order,
        None => {
            let with_work = peek_all(conn, keys, queues).await?;
            rotation.peeked(partitions, &with_work);
            let mut order = with_work;
            let start = fastrand::usize(..order.len().max(1)).min(order.len());
            order.rotate_left(start);
            order
        }
    };
    let mut order = order;
    if alone {
        // An idle worker takes a suspect before anything else, wherever it waits.
        order.sort_by_key(|p| !rotation.has_suspects(*p));
    }
    let mut suspects_waiting = 0;
    for p in order {
        let part = keys.at(p);
        let mut batch =
            fetch_batch(conn, &part, worker, settings, queues, pick, max, alone).await?;
        suspects_waiting = suspects_waiting.max(batch.suspects_waiting);
        rotation.suspects(p, batch.suspects_waiting > 0);
        if batch.deliveries.is_empty() {
            // Suspects waiting for an idle worker are work: keep looking there.
            rotation.mark(p, batch.suspects_waiting == 0);
            continue;
        }
        rotation.mark(p, false);
        let mut kept = Vec::with_capacity(batch.deliveries.len());
        for d in batch.deliveries {
            if keys.for_job(&d.id).partition() == p {
                kept.push(d);
                continue;
            }
            let failure = crate::failure::JobFailure::new(
                crate::failure::FailureKind::InvalidJob,
                format!("queue entry {:?} is in partition {p} of {}, but its id names another: not queued by a process of this partition count (check [redis] partitions everywhere)", d.id, keys.partitions()),
                false,
            );
            tracing::error!(job = %d.id, partition = p, partitions = keys.partitions(), "a job in a partition its id does not name: dead-lettered (does a process use another partition count?)");
            super::finish::finish_in(
                conn,
                &part,
                settings,
                &d.id,
                d.attempt,
                &super::finish::Outcome::Dead(failure),
            )
            .await?;
        }
        batch.deliveries = kept;
        batch.suspects_waiting = suspects_waiting;
        return Ok(batch);
    }
    Ok(Batch {
        deliveries: Vec::new(),
        suspects_waiting,
    })
}

/// The partitions where a fetch would find work now ([`fetch_any`]).
async fn peek_all(conn: &Conn, keys: &Keys, queues: &Served) -> Result<Vec<u16>, QueueError> {
    let peeks = keys.all().map(|part| {
        let mut conn = conn.clone();
        async move {
            let mut invocation = scripts::PEEK.prepare_invoke();
            invocation.key(part.script_key()).arg(part.prefix());
            for (queue, _) in queues.queues() {
                invocation.arg(queue);
            }
            let found: u8 = invocation.invoke_async(&mut conn).await?;
            Ok::<_, QueueError>((part.partition(), found == 1))
        }
    });
    let mut out = Vec::new();
    for answer in futures::future::join_all(peeks).await {
        let (p, found) = answer?;
        if found {
            out.push(p);
        }
    }
    Ok(out)
}

/// A counter of a record, if it is one.
fn number(bytes: &[u8]) -> Option<u32> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// A step through `0..total` that visits every value once per `total` steps: the first
/// number from about 0.618 x total up that is coprime with `total`.
fn stride(total: u32) -> u32 {
    fn gcd(a: u32, b: u32) -> u32 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let start = (total as f64 * 0.618) as u32;
    (start.max(1)..).find(|s| gcd(*s, total) == 1).unwrap_or(1)
}

/// Milliseconds for the scripts.
pub(crate) fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stride_visits_every_draw_once_per_round() {
        for total in [1, 2, 3, 10, 12, 100, 1000] {
            let s = stride(total);
            let mut seen: Vec<u32> = (0..total).map(|j| (j * s) % total).collect();
            seen.sort();
            assert_eq!(seen, (0..total).collect::<Vec<_>>(), "total {total}");
        }
    }
}
