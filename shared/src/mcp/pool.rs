//! `McpPool`: long-lived MCP sessions per server, shared by jobs.
//!
//! Starting a server costs milliseconds (Rust) to a second (Python); the pool keeps
//! sessions warm and hands them to jobs. For each pooled server (`pool = true`, the
//! default) it promises:
//! 1. **Bounded**: at most `max_sessions` sessions, each with at most `max_in_flight`
//!    calls at once (MCP matches answers to requests by JSON-RPC id). A job waits for a
//!    free slot at most until its deadline, then fails with "pool exhausted".
//! 2. **Few sessions, grown when calls queue** (`pool::a_default_pool_runs_200_jobs_of_8_at_once_on_one_server`,
//!    `pool::a_serial_server_makes_the_pool_grow_and_the_extra_sessions_close_after_the_load`).
//!    A call takes, in this order:
//!    1. the oldest session (in start order) with a free slot that is not *queuing*:
//!       none of its running calls has run longer than `grow_after` (default 50 ms);
//!       with `grow_after = "0s"`, not queuing means idle. Packing calls onto the oldest
//!       sessions leaves the others idle, so they close (promise 3);
//!    2. else, when every session with a free slot is queuing: the least busy of them,
//!       and another session is started in the background (up to `max_sessions`, one
//!       start at a time, only while the server's health book lets it start), which
//!       later calls take. The call does not wait for that start;
//!    3. else (no free slot anywhere): a slot of a session being started, if those
//!       will have one left (each brings `max_in_flight - 1` besides its starter's:
//!       8 calls at an empty pool start one session), or a new session, the call
//!       waiting for its start, as long as fewer than `max_sessions` exist;
//!    4. else it waits for a free slot (promise 1).
//!
//!    With `max_in_flight = 1` ("serial") a free slot means an idle session, so steps 1
//!    and 3 are all there is: one call per session, a session per concurrent call up to
//!    `max_sessions` (`pool::a_serial_server_gets_one_call_at_a_time_per_session`).
//! 3. **Healthy sessions only, idle ones closed**: a session whose process died or whose
//!    connection closed is discarded at checkout and replaced; one idle for more than
//!    `idle_ttl / 2` is pinged first; one that served `max_calls` calls is replaced. Idle
//!    sessions beyond `min_sessions` close: the first `max(min_sessions, 1)` (in start
//!    order) after `idle_ttl` (default 5 min), the later ones, grown for a burst, after
//!    `min(idle_ttl, 60 s)` ([`GROWN_IDLE_TTL`]).
//! 4. **A failed call retires its session**: after a timeout (rmcp has sent
//!    `notifications/cancelled`, but the server's handler may still be running), a
//!    transport error or a crash, the session takes no new calls; calls already in
//!    flight on it finish undisturbed; when the last one is done its process tree is
//!    stopped (SIGTERM, grace, SIGKILL). A tool error, a JSON-RPC error or a stdio
//!    answer over `queue.max_result` thrown away ([`super::answer_limit`]) does not
//!    (`pool::a_timed_out_call_on_a_multiplexed_session_leaves_the_others_to_finish`:
//!    one of 16 calls on one session times out, the other 15 succeed;
//!    `pool::an_oversized_answer_on_a_multiplexed_session_fails_only_its_own_job`).
//! 5. Crashes go to the supervisor's health book: restart backoff and crash-loop
//!    "unhealthy" apply to pooled servers as to fresh ones.
//!
//! Jobs do not call the pool directly: [`JobSessions`](super::JobSessions) sends a
//! pooled server's calls here and runs the others on the job's own sessions, with the
//! same call steps ([`McpSession::call_for_job`]).
//!
//! # Caveats
//! - A timed-out call on a multiplexed session keeps its session (and whatever the
//!   server is still doing for it) alive until the session's other calls finish.
//! - Calls share their session's fate: a server that crashes, or closes its stdout,
//!   fails every call in flight on it (up to `max_in_flight` jobs, each retried as its
//!   own failure says), and its stderr tail, quoted in their errors, mixes their output.
//!   An answer over `queue.max_result` fails only its own call, unless it cannot be told
//!   whose it is (then each call in flight fails as `connection_closed`, retried); while
//!   it is read and thrown away, the session's other answers wait behind it.
//! - The pool cannot see inside a server: "queuing" is a guess from how long calls run.
//!   A server whose tools simply take longer than `grow_after` grows like a serial one
//!   (up to `max_sessions`, shrinking again when idle); raise `grow_after` above its
//!   usual call time if its processes are costly. A server that handles one request at
//!   a time, left at the default `max_in_flight`, is still served (its sessions grow as
//!   its calls queue), but a call that hangs there holds up the calls queued behind it
//!   on the same session until their own timeouts: declare it `max_in_flight = 1`.

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

/// 60 s: an idle session beyond the first `max(min_sessions, 1)` closes after this (or
/// `idle_ttl`, if shorter). It was started for a burst; bursts a minute apart still find
/// it warm, and restarting a Node or Python server (about 1 s of CPU) at most once a
/// minute costs under 2 % of a core, while an idle one holds 30-80 MB.
pub const GROWN_IDLE_TTL: Duration = Duration::from_secs(60);

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
    /// Leases out: calls running, or about to (waiting for their cluster-wide limits).
    in_flight: AtomicUsize,
    /// When each running call was sent, by lease number (at most `max_in_flight`
    /// entries): how long the oldest has run says whether the session's calls queue.
    running: Mutex<Vec<(u64, Instant)>>,
    calls: AtomicU64,
    retired: AtomicBool,
    last_used: Mutex<Instant>,
}

impl Slot {
    fn new(session: McpSession, leased: bool) -> Self {
        Slot {
            session,
            in_flight: AtomicUsize::new(usize::from(leased)),
            running: Mutex::new(Vec::new()),
            calls: AtomicU64::new(0),
            retired: AtomicBool::new(false),
            last_used: Mutex::new(Instant::now()),
        }
    }

    fn idle_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(*self.last_used.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// True when a call given to this session would likely wait behind others: one of
    /// its running calls has run longer than `grow_after` (with `grow_after` zero: it
    /// has any call at all).
    fn is_queuing(&self, now: Instant, grow_after: Duration) -> bool {
        if grow_after.is_zero() {
            return self.in_flight.load(Ordering::SeqCst) > 0;
        }
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|&(_, sent)| now.saturating_duration_since(sent) > grow_after)
    }

    /// True when it takes new calls and has a free slot.
    fn is_open(&self, max_in_flight: usize) -> bool {
        !self.retired.load(Ordering::SeqCst)
            && self.in_flight.load(Ordering::SeqCst) < max_in_flight
    }
}

#[derive(Default)]
struct State {
    slots: Vec<Arc<Slot>>,
    /// Sessions being started.
    starting: usize,
    /// Calls waiting for a session being started instead of starting their own: each
    /// start brings at least `max_in_flight - 1` free slots, so 8 calls arriving at an
    /// empty pool start one session, not 8.
    claims: usize,
}

/// A call's place among [`State::claims`], given back when it stops waiting. Never
/// dropped while the state lock is held.
struct Claim(Arc<ServerPool>);

impl Drop for Claim {
    fn drop(&mut self) {
        self.0
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .claims -= 1;
    }
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
    /// Numbers leases, to find a call's entry in its slot's `running`.
    leases: AtomicU64,
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
    number: u64,
}

impl Lease {
    fn new(slot: Arc<Slot>, pool: Arc<ServerPool>) -> Self {
        let number = pool.leases.fetch_add(1, Ordering::Relaxed);
        Lease { slot, pool, number }
    }

    /// Marks the call as sent: from now on its running time counts toward the
    /// session's queuing (a lease still waiting for its cluster-wide limits does not).
    fn begin(&self) {
        self.slot
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((self.number, Instant::now()));
    }
}

/// Long-lived sessions for every pooled server. Cheap to clone.
#[derive(Clone)]
pub struct McpPool {
    supervisor: Supervisor,
    servers: Arc<HashMap<String, Arc<ServerPool>>>,
    /// The cluster-wide limits every job's calls wait for (none: no Redis, as in
    /// benches; limits and 429 pauses are then not applied).
    limiter: Option<Limiter>,
    /// Set by [`McpPool::shutdown`]: a session that finishes starting afterwards (in the
    /// background) is stopped instead of kept.
    closed: Arc<AtomicBool>,
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
    /// Take a slot of this session.
    Use(Arc<Slot>),
    /// Take a slot of this session, and start another in the background (its
    /// `starting` count is taken).
    Grow(Arc<Slot>),
    /// Start a session and take its first slot (its `starting` count is taken).
    Start,
    /// Wait for a slot to free up, or (with a claim) for a session being started.
    Wait(Option<Claim>),
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
                    leases: AtomicU64::new(0),
                };
                (name.clone(), Arc::new(pool))
            })
            .collect();
        McpPool {
            supervisor,
            servers: Arc::new(servers),
            limiter: None,
            closed: Arc::new(AtomicBool::new(false)),
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
                    .map(|p| p.settings.idle_ttl.min(GROWN_IDLE_TTL) / 4)
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
                let mut kept = 0;
                let mut closed = Vec::new();
                // Promise 3: the first sessions (in start order, the ones calls are
                // packed onto) keep idle_ttl; those grown for a burst close sooner.
                let first = pool.settings.min_sessions.max(1);
                let grown_ttl = pool.settings.idle_ttl.min(GROWN_IDLE_TTL);
                st.slots.retain(|slot| {
                    let ttl = if kept < first {
                        pool.settings.idle_ttl
                    } else {
                        grown_ttl
                    };
                    let expired = slot.in_flight.load(Ordering::SeqCst) == 0
                        && (slot.idle_for(now) > ttl || !slot.session.is_alive());
                    if expired && keep > pool.settings.min_sessions {
                        keep -= 1;
                        closed.push(slot.clone());
                        false
                    } else {
                        kept += 1;
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
                let mut st = pool.state.lock().unwrap_or_else(|p| p.into_inner());
                let missing = pool
                    .settings
                    .min_sessions
                    .saturating_sub(st.slots.len() + st.starting);
                st.starting += missing;
                missing
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
        lease.begin();
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
            // A stdio answer over the limit thrown away (the stream goes on) says nothing
            // against the session either; one that ended the stream, or an HTTP body
            // over it, retires it.
            Err(McpError::AnswerTooLarge { .. }) => {
                lease.slot.session.answer_too_large() || !lease.slot.session.is_alive()
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
        lease.begin();
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
                .find(|s| s.is_open(pool.settings.max_in_flight))?
                .clone();
            slot.in_flight.fetch_add(1, Ordering::SeqCst);
            slot
        };
        let lease = Lease::new(slot, pool);
        lease.begin();
        let tools = lease.slot.session.list_tools(PING_TIMEOUT).await;
        self.release(lease, tools.is_err(), false).await;
        tools.ok()
    }

    /// Stops every session of every server (worker shutdown).
    pub async fn shutdown(&self) {
        self.closed.store(true, Ordering::SeqCst);
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
            if matches!(step, Step::Wait(_)) {
                // Register as a waiter, then look again: a release between the first look
                // and the registration is seen by the second look, one after it wakes us.
                waiting = Some(WaiterGuard::new(&pool.waiters));
                notified.as_mut().enable();
                // Give back the first look's claim before the second look counts claims.
                drop(std::mem::replace(&mut step, Step::Wait(None)));
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
            if !matches!(step, Step::Wait(_)) {
                drop(waiting.take());
            }
            if matches!(step, Step::Grow(_)) {
                self.grow(pool);
            }
            match step {
                Step::Use(slot) | Step::Grow(slot) => {
                    let lease = Lease::new(slot, pool.clone());
                    if self.is_usable(&lease, deadline).await {
                        return Ok(lease);
                    }
                    self.release(lease, true, false).await;
                }
                Step::Start => {
                    let slot = self.start_slot(pool, deadline, true).await?;
                    return Ok(Lease::new(slot, pool.clone()));
                }
                Step::Wait(claim) => {
                    let _claim = claim;
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

    /// Under the state lock: drop retired idle slots, then choose as promise 2 says: the
    /// oldest open session that is not queuing; else the least busy open one, growing
    /// the pool in the background if it may; else a new session; else wait.
    fn next_step(&self, pool: &Arc<ServerPool>) -> (Step, Vec<Arc<Slot>>) {
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
        let now = Instant::now();
        let PoolSettings {
            max_in_flight,
            max_sessions,
            grow_after,
            ..
        } = pool.settings;
        let room = st.slots.len() + st.starting < max_sessions;
        let fresh = st
            .slots
            .iter()
            .find(|s| s.is_open(max_in_flight) && !s.is_queuing(now, grow_after))
            .cloned();
        let step = match fresh {
            Some(slot) => Step::Use(slot),
            None => {
                let least = st
                    .slots
                    .iter()
                    .filter(|s| s.is_open(max_in_flight))
                    .min_by_key(|s| s.in_flight.load(Ordering::SeqCst))
                    .cloned();
                match least {
                    // One start at a time, and none while the health book holds the
                    // server back: the call has a session, so growing is optional.
                    Some(slot) if room && st.starting == 0 && self.may_start(pool) => {
                        st.starting += 1;
                        Step::Grow(slot)
                    }
                    Some(slot) => Step::Use(slot),
                    // Sessions being started will have room for this call too.
                    None if st.starting * max_in_flight.saturating_sub(1) > st.claims => {
                        st.claims += 1;
                        Step::Wait(Some(Claim(pool.clone())))
                    }
                    None if room => {
                        st.starting += 1;
                        Step::Start
                    }
                    None => Step::Wait(None),
                }
            }
        };
        if let Step::Use(slot) | Step::Grow(slot) = &step {
            slot.in_flight.fetch_add(1, Ordering::SeqCst);
        }
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
            let health = self.supervisor.health();
            health.note_error(
                &lease.pool.name,
                "the pooled server died while idle (replaced)",
                session.stderr_tail().as_deref(),
            );
            health.record_crash(&lease.pool.name, std::time::Instant::now());
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

    /// True when the supervisor's health book lets the server start right now (no
    /// restart backoff, not unhealthy).
    fn may_start(&self, pool: &ServerPool) -> bool {
        matches!(
            self.supervisor
                .health()
                .admission(&pool.name, std::time::Instant::now()),
            Admission::Ready
        )
    }

    /// Starts one more session of `pool` in the background (its `starting` count was
    /// taken by `next_step`); it joins the pool idle, and waiting calls are woken. A
    /// failure is logged: the call that asked for it runs on a session it already has.
    fn grow(&self, pool: &Arc<ServerPool>) {
        let this = self.clone();
        let pool = pool.clone();
        tracing::debug!(server = %pool.name, "calls are queuing; starting another session");
        tokio::spawn(async move {
            let deadline = Instant::now() + pool.timeouts.startup;
            if let Err(e) = this.start_slot(&pool, deadline, false).await {
                tracing::warn!(server = %pool.name, "could not start another pooled session: {e}");
            }
        });
    }

    /// Starts a session (health book permitting) and adds it to the pool, leased to the
    /// caller when `lease`, else idle. The caller has counted it in `starting`.
    async fn start_slot(
        &self,
        pool: &Arc<ServerPool>,
        deadline: Instant,
        lease: bool,
    ) -> Result<Arc<Slot>, PoolError> {
        let started = self.start_session(pool, deadline).await;
        let (started, kept) = {
            let mut st = pool.state.lock().unwrap_or_else(|p| p.into_inner());
            st.starting -= 1;
            // Decided under the lock that `shutdown` takes the slots under.
            let kept = !self.closed.load(Ordering::SeqCst);
            let started = started.map(|session| Arc::new(Slot::new(session, lease)));
            if let (Ok(slot), true) = (&started, kept) {
                st.slots.push(slot.clone());
            }
            (started, kept)
        };
        pool.wake_waiters();
        let slot = started?;
        if !kept {
            // The pool shut down while it started: nothing else would stop it.
            slot.session.shutdown().await;
            return Err(PoolError::Cancelled {
                server: pool.name.clone(),
                stop_note: None,
            });
        }
        Ok(slot)
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
        let Lease { slot, pool, number } = lease;
        slot.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|&(n, _)| n != number);
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
            health.note_error(name, &error.to_string(), error.stderr());
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
