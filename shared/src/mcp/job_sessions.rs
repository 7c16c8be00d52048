//! `JobSessions`: the one way a job reaches its tools, pooled server or not.
//!
//! A runner (a plan, a model's tool loop, an email job through either) opens one
//! `JobSessions` for the job's deadline and cancellation, and calls tools by server
//! name; it never learns whether a server is pooled:
//! - a pooled server (`pool = true`, the default) is served by the [`McpPool`]: a warm
//!   session shared with other jobs, retired when a call on it fails (the pool's
//!   contract, in [`super::pool`]);
//! - any other server gets a session of the job's own, started on first use (after the
//!   supervisor's health book admits it: restart backoff, crash loop), reused by the
//!   job's later calls, and stopped with its whole process tree by
//!   [`JobSessions::close`], however the job ends.
//!
//! It guarantees, for both kinds alike (the steps are written once, in
//! [`McpSession::call_for_job`]): each call ends by the server's `call_timeout` cut to
//! what is left of the job's deadline; the job's cancellation ends the call in progress
//! at once (a pooled session is retired, a job's own server is stopped at `close`);
//! successes and crashes go to the supervisor's health book; a tool error (`isError`)
//! comes back as `Ok` with the server's stderr tail. Calls take `&self`, so a model's
//! parallel tool calls run at once (MCP sessions multiplex requests).
//!
//! It is also where a job meets the server's bounds, before anything is sent: a tool
//! outside the server's `tools` allow-list is refused ([`PoolError::ToolNotAllowed`])
//! and never listed, and arguments that do not fit the tool's `inputSchema` are refused
//! ([`PoolError::InvalidArguments`], checked in `call_for_job` by [`super::arguments`]).
//! Both are `invalid_job`, never retried.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rmcp::model::{CallToolResult, Tool};
use serde_json::{Map, Value};
use tokio::sync::OnceCell;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::pool::{start_admitted, stop_note};
use super::progress::ProgressSink;
use super::session::JobCall;
use super::{McpError, McpPool, McpSession, PoolError};
use crate::config::{Config, ServerTimeouts};
use crate::limiter::{LimitError, Permit};
use crate::queue::limits::{server_endpoint, Limits, SLOT_LEASE_SLACK};

/// One job's sessions: the pool's, and its own fresh ones. See the module doc.
pub struct JobSessions<'a> {
    config: &'a Config,
    pool: &'a McpPool,
    deadline: Instant,
    cancel: &'a CancellationToken,
    /// Where the servers' progress reports go (none: they are not asked for).
    progress: Option<ProgressSink>,
    /// The job's own sessions by server, each started once, on first use.
    own: Mutex<HashMap<String, Arc<OnceCell<Arc<McpSession>>>>>,
}

impl std::fmt::Debug for JobSessions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let own: Vec<String> = self
            .own
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        f.debug_struct("JobSessions")
            .field("deadline", &self.deadline)
            .field("own", &own)
            .finish()
    }
}

impl<'a> JobSessions<'a> {
    /// Sessions for a job with `deadline`, stopped by `cancel`. Starts nothing yet.
    pub fn new(
        config: &'a Config,
        pool: &'a McpPool,
        deadline: Instant,
        cancel: &'a CancellationToken,
    ) -> Self {
        JobSessions {
            config,
            pool,
            deadline,
            cancel,
            progress: None,
            own: Mutex::new(HashMap::new()),
        }
    }

    /// Asks every server called through these sessions for progress, handed to `sink`.
    pub fn with_progress(mut self, sink: Option<ProgressSink>) -> Self {
        self.progress = sink;
        self
    }

    /// The tools of `server` a job may call (a pooled session's, or the job's own
    /// session's, started if needed; only those its `tools` allow-list allows), within
    /// `call_timeout` and the job's deadline.
    pub async fn list_tools(&self, server: &str) -> Result<Vec<Tool>, PoolError> {
        let listed = if self.pool.is_pooled(server) {
            self.pool
                .list_tools(server, self.deadline, self.cancel)
                .await?
        } else {
            let (session, timeouts) = self.own_session(server).await?;
            let left = self.deadline.saturating_duration_since(Instant::now());
            session
                .list_tools(timeouts.call.min(left))
                .await
                .map_err(|error| PoolError::Mcp {
                    error,
                    stop_note: None,
                })?
        };
        let config = self.config.servers.get(server);
        Ok(listed
            .iter()
            .filter(|t| config.is_none_or(|c| c.allows_tool(&t.name)))
            .cloned()
            .collect())
    }

    /// Calls `tool` on `server`; a tool result flagged `isError` is `Ok`, with the
    /// server's stderr tail. Waits first for the server's cluster-wide limits (see
    /// [`JobSessions::admit`]).
    ///
    /// A 429 (Too Many Requests) from an HTTP server pauses the server for every worker
    /// for its `Retry-After` (`Limiter::pause`), then the call is made once more: its
    /// admission waits out the pause like any other call, within the job's deadline (a
    /// pause past the deadline fails the job with `timeout` at once). A 429 without a
    /// usable `Retry-After`, or a second 429, fails the call as `rate_limited`
    /// (retryable: the job's own retry backoff applies).
    pub async fn call(
        &self,
        server: &str,
        tool: &str,
        arguments: Map<String, Value>,
    ) -> Result<(CallToolResult, Option<String>), PoolError> {
        if let Some(config) = self.config.servers.get(server) {
            if !config.allows_tool(tool) {
                return Err(PoolError::ToolNotAllowed {
                    server: server.to_string(),
                    tool: tool.to_string(),
                    allowed: format!("{:?}", config.tools),
                });
            }
        }
        // Only an HTTP server answers 429: the arguments are kept for a second call
        // only then.
        let again = self
            .config
            .servers
            .get(server)
            .is_some_and(|c| c.url.is_some())
            .then(|| arguments.clone());
        let first = self.call_once(server, tool, arguments).await;
        let (
            Err(PoolError::Mcp {
                error:
                    McpError::RateLimited {
                        retry_after: Some(wait),
                        ..
                    },
                ..
            }),
            Some(arguments),
        ) = (&first, again)
        else {
            return first;
        };
        let wait = *wait;
        tracing::info!(%server, %tool, ?wait, "429 Too Many Requests: pausing the server for every worker, then calling again");
        match self.pool.limiter() {
            Some(limiter) => limiter.pause(&server_endpoint(server), wait).await,
            // No limiter (a pool built without one): this job waits alone.
            None => {
                if Instant::now()
                    .checked_add(wait)
                    .is_none_or(|at| at >= self.deadline)
                {
                    return first;
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.cancel.cancelled() => return first,
                }
            }
        }
        self.call_once(server, tool, arguments).await
    }

    /// One call of `tool` on `server`, after its admission ([`JobSessions::admit`]).
    async fn call_once(
        &self,
        server: &str,
        tool: &str,
        arguments: Map<String, Value>,
    ) -> Result<(CallToolResult, Option<String>), PoolError> {
        // Admitted once the session is ready (checked out, or started), right before
        // the call: a wait for a pooled session or a server's start-up must neither
        // count against the rate nor eat into the slot's lease. The permit is held
        // until the call has ended, however it ends: its drop gives the slot back.
        if self.pool.is_pooled(server) {
            return self
                .pool
                .call(
                    server,
                    tool,
                    arguments,
                    self.deadline,
                    self.cancel,
                    self.progress.as_ref(),
                    self.admit(server),
                )
                .await;
        }
        let (session, _) = self.own_session(server).await?;
        let _permit = self.admit(server).await?;
        match session
            .call_for_job(
                tool,
                arguments,
                self.deadline,
                self.cancel,
                self.pool.supervisor(),
                self.progress.as_ref(),
            )
            .await
        {
            JobCall::Answered(result, stderr) => Ok((result, stderr)),
            JobCall::Failed(error) => Err(PoolError::Mcp {
                error,
                stop_note: None,
            }),
            // The session stays with the job, which stops it (and its process tree) at
            // `close`.
            JobCall::InvalidArguments(message) => Err(PoolError::InvalidArguments {
                server: server.to_string(),
                tool: tool.to_string(),
                message,
            }),
            JobCall::Cancelled => Err(PoolError::Cancelled {
                server: server.to_string(),
                stop_note: None,
            }),
        }
    }

    /// Waits until a call to `server` passes its cluster-wide limits (`rate`,
    /// `max_concurrent`) and any 429 pause, within the job's deadline and raced against
    /// its cancel (`limiter`). A stdio server without limits, or a pool without a
    /// limiter, costs nothing here; an HTTP server is always checked (one script per
    /// call), since it may have been paused by a 429. The wait is no attempt: only the
    /// deadline ends it, as a `timeout`.
    async fn admit(&self, server: &str) -> Result<Option<Permit>, PoolError> {
        let (Some(limiter), Some(config)) = (self.pool.limiter(), self.config.servers.get(server))
        else {
            return Ok(None);
        };
        let limits = Limits::of_server(config);
        if limits.is_none() && config.url.is_none() {
            return Ok(None);
        }
        // The slot's lease: the longest the call can take, plus the time to release it.
        let left = self.deadline.saturating_duration_since(Instant::now());
        let lease = self.config.timeouts(config).call.min(left) + SLOT_LEASE_SLACK;
        limiter
            .admit(
                &server_endpoint(server),
                &limits,
                lease,
                self.deadline,
                self.cancel,
            )
            .await
            .map(Some)
            .map_err(|e| match e {
                LimitError::Cancelled { .. } => PoolError::Cancelled {
                    server: server.to_string(),
                    stop_note: None,
                },
                e => PoolError::Limited(e),
            })
    }

    /// Stops the job's own sessions (whole process trees) at once; returns, by server,
    /// the notes of those whose server had to be killed with SIGKILL (also logged).
    pub async fn close(self) -> Vec<(String, String)> {
        let own = self.own.into_inner().unwrap_or_else(|p| p.into_inner());
        let stops = futures::future::join_all(own.into_iter().map(|(name, cell)| async move {
            let report = match cell.get() {
                Some(session) => Some(session.shutdown().await),
                None => None,
            };
            (name, report)
        }))
        .await;
        stops
            .into_iter()
            .filter_map(|(name, report)| {
                let note = stop_note(&name, &report?)?;
                tracing::warn!(server = %name, "{note}");
                Some((name, note))
            })
            .collect()
    }

    /// The job's own session of `server` and the server's timeouts, the session started
    /// (health book permitting) on its first use; a start that fails leaves it to the
    /// next use to try again.
    async fn own_session(
        &self,
        server: &str,
    ) -> Result<(Arc<McpSession>, ServerTimeouts), PoolError> {
        let Some(config) = self.config.servers.get(server) else {
            return Err(PoolError::UnknownServer {
                server: server.to_string(),
            });
        };
        let timeouts = self.config.timeouts(config);
        let cell = self
            .own
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(server.to_string())
            .or_default()
            .clone();
        let session = cell
            .get_or_try_init(|| async {
                let supervisor = self.pool.supervisor();
                start_admitted(supervisor, server, config, timeouts, self.deadline)
                    .await
                    .map(Arc::new)
            })
            .await?;
        Ok((session.clone(), timeouts))
    }
}
