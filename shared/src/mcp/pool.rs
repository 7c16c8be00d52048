//! `McpPool`: long-lived MCP sessions per server, shared by jobs.
//!
//! Starting a server costs milliseconds (Rust) to a second (Python); the pool keeps
//! sessions warm and hands them to jobs. For each pooled server (`pool = true`, the
//! default) it promises:
//! 1. **Bounded**: at most `max_sessions` sessions, each with at most `max_in_flight`
//!    calls at once (MCP matches answers to requests by JSON-RPC id). A job waits for a
//!    free slot at most until its deadline, then fails with "pool exhausted".
//! 2. **Healthy sessions only**: a session whose process died or whose connection closed
//!    is discarded at checkout and replaced; one idle for more than `idle_ttl / 2` is
//!    pinged first; one idle for more than `idle_ttl` is closed (beyond `min_sessions`);
//!    one that served `max_calls` calls is replaced.
//! 3. **A failed call retires its session**: after a timeout (rmcp has sent
//!    `notifications/cancelled`, but the server's handler may still be running), a
//!    transport error or a crash, the session takes no new calls; calls already in
//!    flight on it finish undisturbed; when the last one is done its process tree is
//!    stopped (SIGTERM, grace, SIGKILL). A tool error or a JSON-RPC error does not.
//! 4. Crashes go to the supervisor's health book: restart backoff and crash-loop
//!    "unhealthy" apply to pooled servers as to fresh ones.
//!
//! Jobs do not call the pool directly: [`JobSessions`](super::JobSessions) sends a
//! pooled server's calls here and runs the others on the job's own sessions, with the
//! same call steps ([`McpSession::call_for_job`]).
//!
//! Caveat: a timed-out call on a multiplexed session keeps its session (and whatever
//! the server is still doing for it) alive until the session's other calls finish.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{CallToolResult, Tool};
use serde_json::{Map, Value};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::progress::ProgressSink;
use super::session::JobCall;
use super::{McpError, McpSession};
use crate::config::{Config, PoolSettings, ServerConfig, ServerTimeouts};
use crate::failure::FailureKind;
use crate::limiter::{LimitError, Limiter};
use crate::supervisor::{Admission, StopReport, Supervisor};

/// A session idle for longer than this has its process checked (`waitpid`) at checkout;
/// a busy one only its connection (a dead server closes its stdout).
const IDLE_CHECK: Duration = Duration::from_millis(100);

/// Longest a reuse ping may take (also bounded by the server's `call_timeout`).
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the pool could not serve a call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// The MCP operation failed. `stop_note` says how the session's process ended when
    /// the failure retired it and stopping needed SIGKILL.
    #[error("{error}{}", stop_note.as_deref().map(|n| format!("; then {n}")).unwrap_or_default())]
    Mcp {
        /// The failure.
        error: McpError,
        /// Set when the retired session's server ignored SIGTERM.
        stop_note: Option<String>,
    },
    /// Every session was busy until the job's deadline.
    #[error("pool exhausted: all {sessions} session(s) of server `{server}` were busy ({in_flight} call(s) each) until the job's deadline, {waited:?} later; raise max_sessions or max_in_flight")]
    Exhausted {
        /// Server name.
        server: String,
        /// `max_sessions`.
        sessions: usize,
        /// `max_in_flight`.
        in_flight: usize,
        /// How long the job waited.
        waited: Duration,
    },
    /// The server is in a crash loop.
    #[error("server `{server}` is unhealthy: it crashed {crashes} times within {window:?}; it will not be started again for {retry_in:?}")]
    Unhealthy {
        /// Server name.
        server: String,
        /// Crashes counted.
        crashes: u32,
        /// The crash-loop window.
        window: Duration,
        /// Time until it may be tried again.
        retry_in: Duration,
    },
    /// The job was cancelled (or its lease lost, or shutdown cut it off) while it waited
    /// for a session or during its call; a call cut off this way retires its session.
    #[error("cancelled while calling server `{server}`{}", stop_note.as_deref().map(|n| format!("; then {n}")).unwrap_or_default())]
    Cancelled {
        /// Server name.
        server: String,
        /// Set when the retired session's server ignored SIGTERM.
        stop_note: Option<String>,
    },
    /// The job named a server this worker does not have.
    #[error("server `{server}` is not configured on this worker")]
    UnknownServer {
        /// Server name.
        server: String,
    },
    /// A cluster-wide limit of the server (`rate`, `max_concurrent`, a 429 pause) held
    /// the call back past the job's deadline: a `timeout`, retryable. (Cancelled while
    /// waiting is [`PoolError::Cancelled`].)
    #[error("{0}")]
    Limited(LimitError),
    /// The server's `tools` allow-list (worker config) does not include the tool; the
    /// server was not called.
    #[error("tool `{tool}` of server `{server}` is not allowed: the worker's [servers.{server}] tools allow only {allowed}")]
    ToolNotAllowed {
        /// Server name.
        server: String,
        /// Tool name.
        tool: String,
        /// The allow-list, for the message.
        allowed: String,
    },
    /// The arguments do not match the tool's `inputSchema`; the server was not called.
    #[error("server `{server}` was not called: {message}")]
    InvalidArguments {
        /// Server name.
        server: String,
        /// Tool name.
        tool: String,
        /// What does not match, field by field.
        message: String,
    },
    /// The server crashed and its restart backoff outlasts the job's deadline.
    #[error(
        "server `{server}` crashed and may not restart for {retry_in:?}, past this job's deadline"
    )]
    Backoff {
        /// Server name.
        server: String,
        /// Time until it may restart.
        retry_in: Duration,
    },
}

impl PoolError {
    /// The failure kind a job gets.
    pub fn kind(&self) -> FailureKind {
        match self {
            PoolError::Mcp { error, .. } => error.kind(),
            PoolError::Exhausted { .. } => FailureKind::PoolExhausted,
            PoolError::Unhealthy { .. } => FailureKind::ServerUnhealthy,
            PoolError::Backoff { .. } => FailureKind::ServerBackoff,
            PoolError::Limited(_) => FailureKind::Timeout,
            PoolError::Cancelled { .. } => FailureKind::Cancelled,
            PoolError::UnknownServer { .. } => FailureKind::UnknownServer,
            PoolError::ToolNotAllowed { .. } | PoolError::InvalidArguments { .. } => {
                FailureKind::InvalidJob
            }
        }
    }

    /// The server's stderr tail, when the error has one.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            PoolError::Mcp { error, .. } => error.stderr(),
            _ => None,
        }
    }

    /// False when retrying cannot help (the command or the server does not exist, the
    /// answer is too large) or must not happen (the job was cancelled).
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            PoolError::Mcp {
                error: McpError::Spawn(_) | McpError::AnswerTooLarge { .. },
                ..
            } | PoolError::Cancelled { .. }
                | PoolError::UnknownServer { .. }
                | PoolError::ToolNotAllowed { .. }
                | PoolError::InvalidArguments { .. }
        )
    }
}

/// One session and its bookkeeping.
struct Slot {
    session: McpSession,
    in_flight: AtomicUsize,
    calls: AtomicU64,
    retired: AtomicBool,
    last_used: Mutex<Instant>,
}

impl Slot {
    fn idle_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(*self.last_used.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[derive(Default)]
struct State {
    slots: Vec<Arc<Slot>>,
    starting: usize,
}

/// The sessions of one server.
struct ServerPool {
    name: String,
    server: ServerConfig,
    timeouts: ServerTimeouts,
    settings: PoolSettings,
    state: Mutex<State>,
    changed: Notify,
    /// Checkouts waiting on `changed`; releases notify only when there are some.
    waiters: AtomicUsize,
}

/// Counts one waiting checkout while it lives.
struct WaiterGuard<'a>(&'a AtomicUsize);

impl<'a> WaiterGuard<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        WaiterGuard(count)
    }
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ServerPool {
    /// Wakes waiting checkouts, if any (the state changed: a slot freed or appeared).
    fn wake_waiters(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.changed.notify_waiters();
        }
    }
}

/// A checked-out slot: one call's right to use a session.
struct Lease {
    slot: Arc<Slot>,
    pool: Arc<ServerPool>,
}

/// Long-lived sessions for every pooled server. Cheap to clone.
#[derive(Clone)]
pub struct McpPool {
    supervisor: Supervisor,
    servers: Arc<HashMap<String, Arc<ServerPool>>>,
    /// The cluster-wide limits every job's calls wait for (none: no Redis, as in
    /// benches; limits and 429 pauses are then not applied).
    limiter: Option<Limiter>,
}

impl std::fmt::Debug for McpPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpPool")
            .field("servers", &self.servers.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// What a pooled server looks like right now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServerSnapshot {
    /// Live sessions.
    pub sessions: usize,
    /// Calls in flight over all of them.
    pub in_flight: usize,
    /// Sessions being started.
    pub starting: usize,
    /// Live sessions with at least one call in flight (the others are idle).
    pub busy: usize,
}

enum Step {
    Use(Arc<Slot>),
    Start,
    Wait,
}

impl McpPool {
    /// A pool for every server of `config` with `pool = true`. Starts nothing yet.
    pub fn new(config: &Config, supervisor: Supervisor) -> Self {
        let servers = config
            .servers
            .iter()
            .filter(|(_, s)| s.pool)
            .map(|(name, server)| {
                let pool = ServerPool {
                    name: name.clone(),
                    server: server.clone(),
                    timeouts: config.timeouts(server),
                    settings: config.pool_settings(server),
                    state: Mutex::default(),
                    changed: Notify::new(),
                    waiters: AtomicUsize::new(0),
                };
                (name.clone(), Arc::new(pool))
            })
            .collect();
        McpPool {
            supervisor,
            servers: Arc::new(servers),
            limiter: None,
        }
    }

    /// Applies the cluster-wide limits of `limiter` to every job's calls (see
    /// [`super::JobSessions`]); a worker always sets one.
    pub fn with_limiter(mut self, limiter: Limiter) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// The cluster-wide limiter, if any.
    pub fn limiter(&self) -> Option<&Limiter> {
        self.limiter.as_ref()
    }

    /// The supervisor that starts the pool's processes.
    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    /// True when `server` is served by this pool (configured with `pool = true`).
    pub fn is_pooled(&self, server: &str) -> bool {
        self.servers.contains_key(server)
    }

    /// Starts `min_sessions` of every server, and a task that closes idle sessions and
    /// keeps the minimum up. Failures are logged, never fatal.
    pub fn start_background(&self) -> tokio::task::JoinHandle<()> {
        let pool = self.clone();
        tokio::spawn(async move {
            loop {
                pool.maintain().await;
                let tick = pool
                    .servers
                    .values()
                    .map(|p| p.settings.idle_ttl / 4)
                    .min()
                    .unwrap_or(Duration::from_secs(30))
                    .clamp(Duration::from_millis(100), Duration::from_secs(30));
                tokio::time::sleep(tick).await;
            }
        })
    }

    async fn maintain(&self) {
        for pool in self.servers.values() {
            let now = Instant::now();
            let idle: Vec<Arc<Slot>> = {
                let mut st = pool.state.lock().unwrap_or_else(|p| p.into_inner());
                let mut keep = st.slots.len();
                let mut closed = Vec::new();
                st.slots.retain(|slot| {
                    let expired = slot.in_flight.load(Ordering::SeqCst) == 0
                        && (slot.idle_for(now) > pool.settings.idle_ttl
                            || !slot.session.is_alive());
                    if expired && keep > pool.settings.min_sessions {
                        keep -= 1;
                        closed.push(slot.clone());
                        false
                    } else {
                        true
                    }
                });
                closed
            };
            for slot in idle {
                tracing::debug!(server = %pool.name, pid = slot.session.pid(), "closing idle session");
                slot.session.shutdown().await;
            }
            let missing = {
                let st = pool.state.lock().unwrap_or_else(|p| p.into_inner());
                pool.settings
                    .min_sessions
                    .saturating_sub(st.slots.len() + st.starting)
            };
            for _ in 0..missing {
                let deadline = Instant::now() + pool.timeouts.startup;
                match self.start_slot(pool, deadline, false).await {
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(server = %pool.name, "could not start a pooled session: {e}")
                    }
                }
            }
        }
    }

    /// Counts of one server's sessions, if it is pooled.
    pub fn snapshot(&self, server: &str) -> Option<ServerSnapshot> {
        let pool = self.servers.get(server)?;
        let st = pool.state.lock().unwrap_or_else(|p| p.into_inner());
        Some(ServerSnapshot {
            sessions: st.slots.len(),
            in_flight: st
                .slots
                .iter()
                .map(|s| s.in_flight.load(Ordering::SeqCst))
                .sum(),
            starting: st.starting,
            busy: st
                .slots
                .iter()
                .filter(|s| s.in_flight.load(Ordering::SeqCst) > 0)
                .count(),
        })
    }

    /// Calls `tool` on a pooled session of `server` ([`McpSession::call_for_job`]: within
    /// `call_timeout` and the job's `deadline`, ended by `cancel`, recorded in the health
    /// book; with a tool error, also the server's stderr tail), then returns the session,
    /// retired if the call failed (promise 3). Jobs call through
    /// [`JobSessions`](super::JobSessions), which picks the pool or a fresh session.
    ///
    /// `admit` runs once a session is checked out, right before the call (the job's
    /// cluster-wide limits, `JobSessions::admit`); what it returns is held until the
    /// call has ended. Refused, the session goes back to the pool as it was.
    #[allow(clippy::too_many_arguments)]
    pub async fn call<P>(
        &self,
        server: &str,
        tool: &str,
        arguments: Map<String, Value>,
        deadline: Instant,
        cancel: &CancellationToken,
        progress: Option<&ProgressSink>,
        admit: impl std::future::Future<Output = Result<P, PoolError>>,
    ) -> Result<(CallToolResult, Option<String>), PoolError> {
        let pool = self.pooled(server);
        let lease = self.checkout(&pool, deadline, cancel).await?;
        let _permit = match admit.await {
            Ok(permit) => permit,
            Err(refused) => {
                self.release(lease, false, false).await;
                return Err(refused);
            }
        };
        let outcome = match lease
            .slot
            .session
            .call_for_job(
                tool,
                arguments,
                deadline,
                cancel,
                &self.supervisor,
                progress,
            )
            .await
        {
            JobCall::Answered(result, stderr) => Ok((result, stderr)),
            JobCall::Failed(error) => Err(error),
            JobCall::InvalidArguments(message) => {
                // Nothing was sent: the session is as good as before, and no call counts.
                self.release(lease, false, false).await;
                return Err(PoolError::InvalidArguments {
                    server: server.to_string(),
                    tool: tool.to_string(),
                    message,
                });
            }
            JobCall::Cancelled => {
                // The server may still be working on the call: retire the session, so
                // that its process tree is stopped once its other calls are done.
                let report = self.release(lease, true, true).await;
                return Err(PoolError::Cancelled {
                    server: server.to_string(),
                    stop_note: report.and_then(|r| stop_note(server, &r)),
                });
            }
        };
        let retire = match &outcome {
            Ok(_) => false,
            // A 429 says nothing against the session: keep it while it is connected.
            Err(McpError::Protocol { .. } | McpError::RateLimited { .. }) => {
                !lease.slot.session.is_alive()
            }
            Err(_) => true,
        };
        let report = self.release(lease, retire, true).await;
        outcome.map_err(|error| PoolError::Mcp {
            error,
            stop_note: report.and_then(|r| stop_note(server, &r)),
        })
    }

    /// The pool of `server`; callers check [`McpPool::is_pooled`] first.
    fn pooled(&self, server: &str) -> Arc<ServerPool> {
        self.servers
            .get(server)
            .expect("callers check is_pooled first")
            .clone()
    }

    /// The tools of pooled `server` (from a warm session, starting one if needed).
    pub async fn list_tools(
        &self,
        server: &str,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<Arc<Vec<Tool>>, PoolError> {
        let pool = self.pooled(server);
        let lease = self.checkout(&pool, deadline, cancel).await?;
        let left = deadline.saturating_duration_since(Instant::now());
        let tools = lease
            .slot
            .session
            .list_tools(pool.timeouts.call.min(left))
            .await;
        let report = self.release(lease, tools.is_err(), false).await;
        tools.map_err(|error| PoolError::Mcp {
            error,
            stop_note: report.and_then(|r| stop_note(server, &r)),
        })
    }

    /// The tools of `server` if a session of it is up and has room, without starting one.
    pub async fn tools_if_warm(&self, server: &str) -> Option<Arc<Vec<Tool>>> {
        let pool = self.servers.get(server)?.clone();
        let slot = {
            let st = pool.state.lock().unwrap_or_else(|p| p.into_inner());
            let slot = st
                .slots
                .iter()
                .find(|s| {
                    !s.retired.load(Ordering::SeqCst)
                        && s.in_flight.load(Ordering::SeqCst) < pool.settings.max_in_flight
                })?
                .clone();
            slot.in_flight.fetch_add(1, Ordering::SeqCst);
            slot
        };
        let lease = Lease { slot, pool };
        let tools = lease.slot.session.list_tools(PING_TIMEOUT).await;
        self.release(lease, tools.is_err(), false).await;
        tools.ok()
    }

    /// Stops every session of every server (worker shutdown).
    pub async fn shutdown(&self) {
        let slots: Vec<Arc<Slot>> = self
            .servers
            .values()
            .flat_map(|p| {
                std::mem::take(&mut p.state.lock().unwrap_or_else(|p| p.into_inner()).slots)
            })
            .collect();
        futures::future::join_all(slots.iter().map(|s| s.session.shutdown())).await;
    }

    async fn checkout(
        &self,
        pool: &Arc<ServerPool>,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<Lease, PoolError> {
        let waited_from = Instant::now();
        loop {
            let notified = pool.changed.notified();
            tokio::pin!(notified);
            let (mut step, mut dead) = self.next_step(pool);
            let mut waiting = None;
            if matches!(step, Step::Wait) {
                // Register as a waiter, then look again: a release between the first look
                // and the registration is seen by the second look, one after it wakes us.
                waiting = Some(WaiterGuard::new(&pool.waiters));
                notified.as_mut().enable();
                let (again, more) = self.next_step(pool);
                step = again;
                dead.extend(more);
            }
            for slot in dead {
                tracing::debug!(server = %pool.name, pid = slot.session.pid(), "discarding session");
                tokio::spawn(async move {
                    slot.session.shutdown().await;
                });
            }
            if !matches!(step, Step::Wait) {
                drop(waiting.take());
            }
            match step {
                Step::Use(slot) => {
                    let lease = Lease {
                        slot,
                        pool: pool.clone(),
                    };
                    if self.is_usable(&lease, deadline).await {
                        return Ok(lease);
                    }
                    self.release(lease, true, false).await;
                }
                Step::Start => {
                    let slot = self.start_slot(pool, deadline, true).await?;
                    return Ok(Lease {
                        slot,
                        pool: pool.clone(),
                    });
                }
                Step::Wait => {
                    let _waiting = waiting;
                    tokio::select! {
                        _ = notified => {}
                        _ = cancel.cancelled() => {
                            return Err(PoolError::Cancelled {
                                server: pool.name.clone(),
                                stop_note: None,
                            });
                        }
                        _ = tokio::time::sleep_until(deadline) => {
                            return Err(PoolError::Exhausted {
                                server: pool.name.clone(),
                                sessions: pool.settings.max_sessions,
                                in_flight: pool.settings.max_in_flight,
                                waited: waited_from.elapsed(),
                            });
                        }
                    }
                }
            }
        }
    }

    /// Under the state lock: drop retired idle slots, then pick the least busy live slot
    /// with room, or decide to start one, or to wait.
    fn next_step(&self, pool: &ServerPool) -> (Step, Vec<Arc<Slot>>) {
        let mut st = pool.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut dead = Vec::new();
        st.slots.retain(|slot| {
            let gone =
                slot.retired.load(Ordering::SeqCst) && slot.in_flight.load(Ordering::SeqCst) == 0;
            if gone {
                dead.push(slot.clone());
            }
            !gone
        });
        let best = st
            .slots
            .iter()
            .filter(|s| {
                !s.retired.load(Ordering::SeqCst)
                    && s.in_flight.load(Ordering::SeqCst) < pool.settings.max_in_flight
            })
            .min_by_key(|s| s.in_flight.load(Ordering::SeqCst))
            .cloned();
        let step = match best {
            Some(slot) => {
                slot.in_flight.fetch_add(1, Ordering::SeqCst);
                Step::Use(slot)
            }
            None if st.slots.len() + st.starting < pool.settings.max_sessions => {
                st.starting += 1;
                Step::Start
            }
            None => Step::Wait,
        };
        (step, dead)
    }

    /// A leased slot is usable if its process lives and, after a long idle, it answers
    /// a ping. A busy session only gets the cheap connection check; one idle for more
    /// than [`IDLE_CHECK`] also gets its process checked.
    async fn is_usable(&self, lease: &Lease, deadline: Instant) -> bool {
        let session = &lease.slot.session;
        let idle = lease.slot.idle_for(Instant::now());
        let alive = if idle > IDLE_CHECK {
            session.is_alive()
        } else {
            session.is_connected()
        };
        if !alive {
            tracing::info!(server = %lease.pool.name, pid = session.pid(), "pooled server died while idle; replacing it");
            self.supervisor
                .health()
                .record_crash(&lease.pool.name, std::time::Instant::now());
            return false;
        }
        if lease.slot.in_flight.load(Ordering::SeqCst) == 1
            && idle > lease.pool.settings.idle_ttl / 2
        {
            let timeout = PING_TIMEOUT
                .min(lease.pool.timeouts.call)
                .min(deadline.saturating_duration_since(Instant::now()));
            if let Err(e) = session.ping(timeout).await {
                tracing::info!(server = %lease.pool.name, pid = session.pid(), "idle session failed its ping: {e}");
                return false;
            }
        }
        true
    }

    /// Starts a session (health book permitting) and adds it to the pool, leased to the
    /// caller when `lease` (its `starting` count was taken by `next_step`), else idle.
    async fn start_slot(
        &self,
        pool: &Arc<ServerPool>,
        deadline: Instant,
        lease: bool,
    ) -> Result<Arc<Slot>, PoolError> {
        if !lease {
            pool.state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .starting += 1;
        }
        let started = self.start_session(pool, deadline).await;
        let mut st = pool.state.lock().unwrap_or_else(|p| p.into_inner());
        st.starting -= 1;
        let result = started.map(|session| {
            let slot = Arc::new(Slot {
                session,
                in_flight: AtomicUsize::new(usize::from(lease)),
                calls: AtomicU64::new(0),
                retired: AtomicBool::new(false),
                last_used: Mutex::new(Instant::now()),
            });
            st.slots.push(slot.clone());
            slot
        });
        drop(st);
        pool.wake_waiters();
        result
    }

    async fn start_session(
        &self,
        pool: &ServerPool,
        deadline: Instant,
    ) -> Result<McpSession, PoolError> {
        start_admitted(
            &self.supervisor,
            &pool.name,
            &pool.server,
            pool.timeouts,
            deadline,
        )
        .await
    }

    /// Returns a lease (`counted`: it made a tool call, which counts toward `max_calls`).
    /// With `retire`, or once the session reached `max_calls`, the session takes no new
    /// calls; the last call out stops it and gets the report.
    async fn release(&self, lease: Lease, retire: bool, counted: bool) -> Option<StopReport> {
        let Lease { slot, pool } = lease;
        let calls = slot.calls.fetch_add(u64::from(counted), Ordering::SeqCst) + u64::from(counted);
        *slot.last_used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        if retire || pool.settings.max_calls.is_some_and(|max| calls >= max) {
            slot.retired.store(true, Ordering::SeqCst);
        }
        let last_out = {
            let mut st = pool.state.lock().unwrap_or_else(|p| p.into_inner());
            let left = slot.in_flight.fetch_sub(1, Ordering::SeqCst) - 1;
            let last_out = left == 0 && slot.retired.load(Ordering::SeqCst);
            if last_out {
                st.slots.retain(|s| !Arc::ptr_eq(s, &slot));
            }
            last_out
        };
        pool.wake_waiters();
        if last_out {
            tracing::debug!(server = %pool.name, pid = slot.session.pid(), "retiring session");
            return Some(slot.session.shutdown().await);
        }
        None
    }
}

/// Waits until the supervisor's health book lets `name` start (restart backoff, if the
/// deadline allows), then starts a session; fails fast while the server is unhealthy.
/// A crash during start-up is recorded; a start that follows a crash is counted as a
/// restart (`mcpq_server_restarts_total`). Used for pooled and fresh sessions alike.
pub async fn start_admitted(
    supervisor: &Supervisor,
    name: &str,
    server: &ServerConfig,
    timeouts: ServerTimeouts,
    deadline: Instant,
) -> Result<McpSession, PoolError> {
    let health = supervisor.health();
    let now = Instant::now();
    match health.admission(name, now.into_std()) {
        Admission::Ready => {}
        Admission::NotBefore(at) => {
            let at = Instant::from_std(at);
            if at > deadline {
                return Err(PoolError::Backoff {
                    server: name.to_string(),
                    retry_in: at - now,
                });
            }
            tokio::time::sleep_until(at).await;
        }
        Admission::Unhealthy { crashes, until } => {
            return Err(PoolError::Unhealthy {
                server: name.to_string(),
                crashes,
                window: health.policy().crash_loop_window,
                retry_in: until.saturating_duration_since(now.into_std()),
            })
        }
    }
    health.start_is_restart(name);
    McpSession::start(supervisor, name, server, timeouts, deadline)
        .await
        .map_err(|error| {
            if error.is_crash() {
                health.record_crash(name, std::time::Instant::now());
            }
            PoolError::Mcp {
                error,
                stop_note: None,
            }
        })
}

/// The note for an error whose retired session needed SIGKILL.
pub fn stop_note(server: &str, report: &StopReport) -> Option<String> {
    report.escalated.then(|| {
        format!(
            "server `{server}` ignored SIGTERM for {:?} and was killed with SIGKILL",
            report.kill_grace
        )
    })
}
