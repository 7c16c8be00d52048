//! `Supervisor`: the only code in mcpq that creates child processes.
//!
//! Stdio MCP servers hang workers elsewhere because children inherit a blocked signal
//! mask or ignored signals, share the worker's log descriptor, fill a stderr pipe nobody
//! reads, outlive a kill aimed at one pid, or are waited on without a deadline. What the
//! supervisor promises for every child, each with the test that proves it
//! (`tests/e2e/torture.rs`, `signals.rs`):
//!
//! 1. **Clean start** (`unix::child_main`, between clone and exec, async-signal-safe calls
//!    only): every catchable signal back to `SIG_DFL` (32 and 33 too, through the raw
//!    syscall), an empty signal mask, its own session and process group (`setsid`),
//!    `PR_SET_PDEATHSIG(SIGKILL)` with a check that the worker did not die before it,
//!    and close-on-exec on every descriptor above 2.
//!    Tests: `child_signal_state_is_clean_even_when_the_worker_inherited_a_hostile_one`,
//!    `sigkill_of_the_worker_takes_its_8_running_servers_with_it_within_1s`.
//! 2. **Its own environment**: only `PATH`, `HOME`, `USER`, `LANG`, `LC_ALL`, `TZ`,
//!    `TMPDIR` from the worker ([`INHERITED_ENV`]), plus the [`SpawnSpec`]'s `env`.
//! 3. **Its own stderr pipe, always drained** ([`StderrTail`]): read until EOF into
//!    `tracing` (debug, with server name and pid) and a 64 KiB ring buffer whose last
//!    8 KiB go into errors. Tests: `a_100_mb_stderr_flood_during_a_call_completes_*`,
//!    `a_servers_stderr_before_initialize_appears_in_the_worker_log_attributed_to_it`.
//! 4. **Stop = the whole tree** ([`ServerProcess::stop`]): stdin EOF, [`EOF_GRACE`],
//!    SIGTERM to the process group, `kill_grace`, SIGKILL to the group, reap; bounded by
//!    `EOF_GRACE + kill_grace + 1 s`, and reports an escalation to SIGKILL. Dropping a
//!    [`ServerProcess`] without `stop` (a cancelled job) sends SIGKILL to the group at
//!    once; [`Supervisor::kill_all`] does the same for every live group at worker
//!    shutdown. Tests: `a_grandchild_in_the_servers_group_is_gone_after_the_job`,
//!    `launchers_between_us_and_the_server_are_stopped_with_it`,
//!    `a_server_ignoring_sigterm_is_killed_by_sigkill_and_the_error_says_so`,
//!    `a_thousand_fresh_servers_leave_no_zombie_and_no_leaked_descriptor`.
//! 5. **Crash records** ([`HealthBook`]): a server that dies is reaped at once and its exit
//!    status and stderr tail go into the job's error; restarts wait an exponential
//!    backoff; a crash loop marks the server unhealthy and jobs fail fast until a window
//!    passes. Test: `a_crash_loop_marks_the_server_unhealthy_then_*`.
//! 6. **Nothing blocks the runtime**: spawning is `fork`+`exec` on the calling runtime
//!    thread, exits are awaited through tokio, liveness checks are `kill(pid, 0)`.
//!
//! Deadlines on `initialize` and every call live in [`crate::mcp::McpSession`].
//!
//! Caveats:
//! - A grandchild that calls `setsid` itself leaves our process group and escapes the
//!   group kill (and gets no parent-death signal from us). Rare for MCP launchers.
//! - Reaping after a drop is done by tokio in the background (best effort, no deadline);
//!   [`ServerProcess::stop`] reaps before it returns.
//! - Spawn from a long-lived thread only (a tokio worker thread is fine, the blocking
//!   pool is not): the kernel sends the parent-death signal when the *thread* that
//!   forked exits.
//! - A pid is checked for its group after its leader was reaped; a new process could in
//!   theory take the same number as its group id in between (pid reuse), a window of
//!   milliseconds against a pid space of millions.
//!
//! Platform: Linux only. Spawning is `clone(CLONE_VM | CLONE_VFORK)` with
//! `PR_SET_PDEATHSIG`, `pipe2` and `close_range` (see `unix.rs`); exits are awaited
//! through `pidfd_open` (Linux >= 5.3, polled every 10 ms on older kernels); the template
//! sandbox re-executes `/proc/self/exe`.

// The worker and `mcpq servers check` both start servers through this module, so for
// now the whole crate is Linux-only; say so up front instead of failing on the first
// missing `libc` item.
#[cfg(not(target_os = "linux"))]
compile_error!(
    "mcpq-shared builds on Linux only: its process supervisor (supervisor/unix.rs) spawns \
     MCP servers with clone(CLONE_VM|CLONE_VFORK), PR_SET_PDEATHSIG, pipe2, close_range \
     and pidfd_open, and both mcpq-worker and `mcpq servers check` link it. The worker \
     runs on Linux only (see README, \"The worker\")."
);

pub mod health;
mod spawn;
mod spec;
mod stderr;
pub mod unix;

use std::collections::HashMap;
use std::ffi::OsString;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::net::unix::pipe;
use tokio::time::Instant;

use crate::metrics::Metrics;

pub use health::{Admission, HealthBook, HealthPolicy};
pub use spec::SpawnSpec;
pub use stderr::{StderrTail, TAIL_CAPACITY, TAIL_IN_ERRORS};
/// For a daemon's `main`, first thing: undo a blocked or ignored signal inherited from
/// whoever started it (and name what was changed), so its own handlers and its
/// children's clean start (promise 1) do not depend on the parent.
pub use unix::{reset_own_signal_state, signal_name, SignalReset};

/// Environment variables a server inherits from the worker; everything else comes from
/// its [`SpawnSpec::env`].
pub const INHERITED_ENV: &[&str] = &["PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ", "TMPDIR"];

/// How long [`ServerProcess::stop`] waits for a server to exit on its own after its stdin
/// closed, before it sends SIGTERM. Servers exit at EOF; most within milliseconds.
pub const EOF_GRACE: Duration = Duration::from_millis(200);

/// The longest a stopped server may take to go, given the longest kill grace
/// (`Config::max_kill_grace`): the EOF wait, the grace, and the SIGKILL reap (see
/// [`ServerProcess::stop`]).
pub fn max_stop_time(kill_grace: Duration) -> Duration {
    kill_grace + EOF_GRACE + Duration::from_secs(1)
}

/// How often exit and group liveness are polled while stopping.
const STOP_POLL: Duration = Duration::from_millis(10);

/// Why a server could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// The program does not exist or is not executable.
    #[error("cannot start server `{server}`: command `{command}` not found or not executable ({source}); check servers.{server}.command in the config")]
    NotFound {
        /// Server name.
        server: String,
        /// The command as configured.
        command: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Any other spawn failure.
    #[error("cannot start server `{server}` (`{command}`): {source}")]
    Io {
        /// Server name.
        server: String,
        /// The command as configured.
        command: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Creates, tracks and kills server processes, and keeps their crash records.
#[derive(Debug, Clone)]
pub struct Supervisor {
    live: Arc<Mutex<HashMap<u32, String>>>,
    health: Arc<HealthBook>,
    metrics: Metrics,
}

/// How a stop went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopReport {
    /// The leader's exit status, once reaped.
    pub exit: Option<ExitStatus>,
    /// True when SIGTERM was not enough and the group got SIGKILL.
    pub escalated: bool,
    /// The grace period SIGTERM was given.
    pub kill_grace: Duration,
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::with_policy(HealthPolicy::default())
    }
}

impl Supervisor {
    /// A supervisor with no children and the default crash policy.
    pub fn new() -> Self {
        Self::default()
    }

    /// A supervisor with no children and `policy` for crashes.
    pub fn with_policy(policy: HealthPolicy) -> Self {
        Self::with_metrics(policy, Metrics::default())
    }

    /// A supervisor with no children and `policy` for crashes, counting spawns,
    /// crashes and restarts (and, through [`Supervisor::metrics`], whatever runs on its
    /// servers) in `metrics`.
    pub fn with_metrics(policy: HealthPolicy, metrics: Metrics) -> Self {
        Supervisor {
            live: Arc::default(),
            health: Arc::new(HealthBook::with_metrics(policy, metrics.clone())),
            metrics,
        }
    }

    /// The metrics of the worker this supervisor serves.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The crash records.
    pub fn health(&self) -> &HealthBook {
        &self.health
    }

    /// Starts `spec.command` as `spec.name`. Stdin and stdout are pipes for MCP; stderr
    /// is drained into [`ServerProcess::stderr`].
    pub fn spawn(&self, spec: &SpawnSpec) -> Result<ServerProcess, SpawnError> {
        let name = spec.name.as_str();
        let mut env: Vec<(OsString, OsString)> = INHERITED_ENV
            .iter()
            .filter_map(|k| std::env::var_os(k).map(|v| (OsString::from(k), v)))
            .collect();
        env.extend(
            spec.env
                .iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v))),
        );
        let exec = spawn::ExecSpec {
            program: OsString::from(&spec.command),
            args: spec.args.iter().map(OsString::from).collect(),
            env,
            cwd: spec.cwd.clone(),
        };
        let child = spawn::spawn(&exec).map_err(|source| {
            let (server, command) = (name.to_string(), spec.command.clone());
            if matches!(
                source.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            ) {
                SpawnError::NotFound {
                    server,
                    command,
                    source,
                }
            } else {
                SpawnError::Io {
                    server,
                    command,
                    source,
                }
            }
        })?;
        let pid = child.pid;
        let stderr = stderr::drain(name.to_string(), pid, child.stderr);
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pid, name.to_string());
        self.metrics.server_spawned(name);
        tracing::debug!(server = name, pid, command = %spec.command, "server started");
        Ok(ServerProcess {
            name: name.to_string(),
            pid,
            stdin: Some(child.stdin),
            stdout: Some(child.stdout),
            watch: Some(child.exit),
            exit: None,
            stderr,
            kill_grace: spec.kill_grace,
            live: self.live.clone(),
        })
    }

    /// SIGKILL to every live server's process group. For the end of worker shutdown,
    /// after jobs had their grace period.
    pub fn kill_all(&self) -> usize {
        let live: Vec<(u32, String)> = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        for (pid, name) in &live {
            tracing::warn!(server = %name, pid, "killing server process group at shutdown");
            let _ = unix::signal_group(*pid, Some(Signal::SIGKILL));
        }
        live.len()
    }
}

/// One running server process and its process group (pgid = pid).
#[derive(Debug)]
pub struct ServerProcess {
    name: String,
    pid: u32,
    stdin: Option<pipe::Sender>,
    stdout: Option<pipe::Receiver>,
    watch: Option<spawn::ExitWatch>,
    exit: Option<ExitStatus>,
    stderr: StderrTail,
    kill_grace: Duration,
    live: Arc<Mutex<HashMap<u32, String>>>,
}

/// How a server process ended, in words: "exit code 3" or "killed by SIGKILL".
pub fn describe_exit(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by {}", unix::signal_name(sig)),
        _ => status.to_string(),
    }
}

impl ServerProcess {
    /// Pid, which is also the process group id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The stderr tail.
    pub fn stderr(&self) -> &StderrTail {
        &self.stderr
    }

    /// The MCP pipes (child's stdout to read, stdin to write). Once.
    pub fn take_stdio(&mut self) -> Option<(pipe::Receiver, pipe::Sender)> {
        Some((self.stdout.take()?, self.stdin.take()?))
    }

    fn reaped(&mut self, status: ExitStatus) -> ExitStatus {
        self.exit = Some(status);
        self.watch = None;
        status
    }

    /// The exit status if the process has exited (reaping it), without waiting.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_some() {
            return self.exit;
        }
        let status = self.watch.as_mut()?.try_wait().ok().flatten()?;
        Some(self.reaped(status))
    }

    /// Waits up to `within` for the process to exit by itself, reaping it.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.try_exit() {
            return Some(status);
        }
        let watch = self.watch.as_mut()?;
        match tokio::time::timeout(within, watch.wait()).await {
            Ok(Ok(status)) => Some(self.reaped(status)),
            _ => None,
        }
    }

    async fn wait_group_gone(&mut self, until: Instant) -> bool {
        loop {
            self.try_exit();
            if self.exit.is_some() && !unix::group_exists(self.pid) {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(STOP_POLL).await;
        }
    }

    /// Stops the server and everything it started: stdin EOF, then SIGTERM to the group,
    /// `kill_grace`, SIGKILL to the group, reap. Takes at most
    /// `EOF_GRACE + kill_grace + 1 s`.
    pub async fn stop(&mut self) -> StopReport {
        // 1. EOF on stdin: a well-behaved MCP server exits by itself.
        self.stdin = None;
        if self.wait_exit(EOF_GRACE).await.is_some() && !unix::group_exists(self.pid) {
            return self.finish(false);
        }
        // 2. SIGTERM to the whole group, then wait for the leader *and* the group: a
        //    launcher's children (npx, uv, sh) must go too.
        let _ = unix::signal_group(self.pid, Some(Signal::SIGTERM));
        let until = Instant::now() + self.kill_grace;
        if self.wait_group_gone(until).await {
            return self.finish(false);
        }
        // 3. SIGKILL cannot be ignored; the leader is reaped in the wait below.
        tracing::warn!(server = %self.name, pid = self.pid, grace = ?self.kill_grace,
            "server ignored SIGTERM; sending SIGKILL to its process group");
        let _ = unix::signal_group(self.pid, Some(Signal::SIGKILL));
        self.wait_group_gone(Instant::now() + Duration::from_secs(1))
            .await;
        self.finish(true)
    }

    fn finish(&mut self, escalated: bool) -> StopReport {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.pid);
        StopReport {
            exit: self.exit,
            escalated,
            kill_grace: self.kill_grace,
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Dropped without `stop` (a job future cancelled, a panic): kill the whole group
        // now. SIGKILL because there is no one left to wait out a grace period; the
        // leader is then reaped in the background (no zombie).
        if self.exit.is_none() || unix::group_exists(self.pid) {
            let _ = unix::signal_group(self.pid, Some(Signal::SIGKILL));
        }
        if let Some(watch) = self.watch.take() {
            spawn::reap_in_background(watch);
        }
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.pid);
    }
}
