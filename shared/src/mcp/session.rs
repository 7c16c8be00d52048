//! `McpSession`: one MCP client connection to one stdio server process.
//!
//! The process belongs to the [`Supervisor`]; rmcp only sees its stdin/stdout pipes, so
//! rmcp never spawns or kills anything. Every operation has a deadline:
//! - [`McpSession::start`]: spawn + `initialize` within the server's `startup_timeout`
//!   (or the job's deadline, if sooner);
//! - [`McpSession::call_tool`]: one `tools/call` within the timeout given (rmcp sends
//!   `notifications/cancelled` when it passes);
//! - [`McpSession::call_for_job`]: the steps every job's call takes, on a pooled session
//!   or a job's own: within the server's `call_timeout` cut to the job's deadline, raced
//!   against the job's cancellation, the outcome recorded in the supervisor's health
//!   book, a tool error with the server's stderr tail;
//! - [`McpSession::shutdown`]: the supervisor's stop sequence, bounded by `kill_grace`.
//!
//! A server that dies mid-call is reported with its exit status and stderr tail.
//!
//! No message from a server may be bigger than `queue.max_result` ([`AnswerLimit`]): a
//! stdio line past it is thrown away and replaced by an error for the call it answered
//! ([`LimitedLines`]; if its id cannot be found, the session is closed at once); an
//! HTTP body or SSE event past it is refused by rmcp and noticed by the session's
//! [`LimitedHttpClient`]. Either way the call it answered fails with
//! [`McpError::AnswerTooLarge`] (`result_too_large`, not retried) instead of waiting
//! out its timeout. Over stdio the other calls multiplexed on the session go on; if
//! the session had to be closed, they fail with [`McpError::ClosedByAnother`]
//! (retried). An HTTP session that got a body over the limit is retired by its owner
//! (its calls in flight finish).
//!
//! A 429 (Too Many Requests) from an HTTP server, seen by the [`LimitedHttpClient`] and
//! noted in the session's [`Throttle`], fails the call as [`McpError::RateLimited`]
//! with the server's `Retry-After`; the session is kept (`JobSessions::call` pauses the
//! server for every worker and calls again).

use std::process::ExitStatus;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientRequest, Request, ServerResult, Tool,
};
use rmcp::service::{NotificationContext, Peer, PeerRequestOptions, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientHandler, RoleClient, ServiceError, ServiceExt};
use serde_json::{Map, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::answer_limit::{AnswerLimit, LimitedLines, DISCARDED_CODE};
use super::http_client::LimitedHttpClient;
use super::progress::{ProgressRoutes, ProgressSink};
use super::spawn_spec::spawn_spec;
use super::throttle::Throttle;
use crate::backoff::Backoff;
use crate::config::{ServerConfig, ServerTimeouts};
use crate::failure::FailureKind;
use crate::supervisor::{
    describe_exit, ServerProcess, SpawnError, StderrTail, StopReport, Supervisor,
};

/// Longest wait for the tool list a call's arguments are checked against: a server
/// slow to list does not double the call's time.
const PRE_CALL_LIST: Duration = Duration::from_secs(5);

/// How long to wait, after the pipe closed, for the server's exit status to report it.
const EXIT_REPORT_WAIT: Duration = Duration::from_secs(1);
/// How long to wait, once it exited, for the drain task to read the server's last stderr
/// bytes (its last words are usually the reason it died).
const STDERR_EOF_WAIT: Duration = Duration::from_millis(500);

/// An MCP operation that failed. Each variant carries the server's stderr tail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum McpError {
    /// The process could not be created.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// No `initialize` answer within the startup deadline.
    #[error("server `{server}` did not finish MCP initialize within {after:?}")]
    StartupTimeout {
        /// Server name.
        server: String,
        /// The deadline used.
        after: Duration,
        /// Stderr tail.
        stderr: Option<String>,
    },
    /// The server exited or spoke nonsense during `initialize`.
    #[error("server `{server}` failed to start: {message}")]
    StartupFailed {
        /// Server name.
        server: String,
        /// What happened, with the exit status when known.
        message: String,
        /// Stderr tail.
        stderr: Option<String>,
    },
    /// A `tools/call` got no answer in time.
    #[error("tool `{tool}` on server `{server}` did not answer within {after:?}")]
    CallTimeout {
        /// Server name.
        server: String,
        /// Tool name.
        tool: String,
        /// The deadline used.
        after: Duration,
        /// Stderr tail.
        stderr: Option<String>,
    },
    /// The server process ended during a call.
    #[error("server `{server}` exited during call to `{tool}` ({status})")]
    ServerExited {
        /// Server name.
        server: String,
        /// Tool name.
        tool: String,
        /// "exit code 3", "killed by SIGSEGV".
        status: String,
        /// Stderr tail.
        stderr: Option<String>,
    },
    /// The connection closed during a call: a stdio server closed its stdout but did not
    /// exit (its process group is then stopped), or an HTTP server went away.
    #[error("server `{server}` closed the MCP connection during call to `{tool}` but kept running (or is remote); the session was discarded")]
    ConnectionClosed {
        /// Server name.
        server: String,
        /// Tool name.
        tool: String,
        /// Stderr tail.
        stderr: Option<String>,
    },
    /// The session's stream was ended while this call was in flight by a message over
    /// `queue.max_result` that may have answered another call on the same session (a
    /// multiplexed one): not this call's fault, so retried.
    #[error("server `{server}`: the session was closed during the call to `{tool}` by a message of more than {limit} bytes (queue.max_result) that may have answered another call on it; retried")]
    ClosedByAnother {
        /// Server name.
        server: String,
        /// Tool name.
        tool: String,
        /// The limit in bytes.
        limit: usize,
        /// Stderr tail.
        stderr: Option<String>,
    },
    /// The server sent a message bigger than `queue.max_result` (a stdio line, an HTTP
    /// body or an SSE event) in answer to this call.
    #[error("server `{server}` answered `{tool}` with a message of more than {limit} bytes, the limit (queue.max_result)")]
    AnswerTooLarge {
        /// Server name.
        server: String,
        /// Tool name (or `tools/list`, `ping`).
        tool: String,
        /// The limit in bytes.
        limit: usize,
        /// Stderr tail.
        stderr: Option<String>,
    },
    /// A streamable-HTTP server answered the call with HTTP 429 (Too Many Requests).
    /// `JobSessions::call` pauses the server for every worker for `retry_after` and
    /// calls once more; this reaches the job only when that cannot help.
    #[error("server `{server}` answered `{tool}` with HTTP 429 Too Many Requests ({})", match retry_after { Some(wait) => format!("Retry-After: {wait:?}"), None => "no usable Retry-After".to_string() })]
    RateLimited {
        /// Server name.
        server: String,
        /// Tool name.
        tool: String,
        /// The wait the server asked for (cut to 10 min), if it said one.
        retry_after: Option<Duration>,
    },
    /// The server answered with a JSON-RPC error or an unexpected message.
    #[error("server `{server}` rejected call to `{tool}`: {message}")]
    Protocol {
        /// Server name.
        server: String,
        /// Tool name.
        tool: String,
        /// The error.
        message: String,
        /// Stderr tail.
        stderr: Option<String>,
    },
}

impl McpError {
    /// The stderr tail attached to the error, if any.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            McpError::Spawn(_) | McpError::RateLimited { .. } => None,
            McpError::StartupTimeout { stderr, .. }
            | McpError::StartupFailed { stderr, .. }
            | McpError::CallTimeout { stderr, .. }
            | McpError::ServerExited { stderr, .. }
            | McpError::ConnectionClosed { stderr, .. }
            | McpError::AnswerTooLarge { stderr, .. }
            | McpError::ClosedByAnother { stderr, .. }
            | McpError::Protocol { stderr, .. } => stderr.as_deref(),
        }
    }

    /// True when the server died or broke its connection: a crash for the health book.
    pub fn is_crash(&self) -> bool {
        matches!(
            self,
            McpError::StartupFailed { .. }
                | McpError::ServerExited { .. }
                | McpError::ConnectionClosed { .. }
        )
    }

    /// The failure kind a job gets.
    pub fn kind(&self) -> FailureKind {
        match self {
            McpError::Spawn(_) => FailureKind::SpawnFailed,
            McpError::StartupTimeout { .. } => FailureKind::StartupTimeout,
            McpError::StartupFailed { .. } => FailureKind::StartupFailed,
            McpError::CallTimeout { .. } => FailureKind::Timeout,
            McpError::ServerExited { .. } => FailureKind::ServerExited,
            McpError::ConnectionClosed { .. } => FailureKind::ConnectionClosed,
            McpError::AnswerTooLarge { .. } => FailureKind::ResultTooLarge,
            McpError::ClosedByAnother { .. } => FailureKind::ConnectionClosed,
            McpError::RateLimited { .. } => FailureKind::RateLimited,
            McpError::Protocol { .. } => FailureKind::ProtocolError,
        }
    }
}

/// The client side's handler: notes when the server says its tool list changed, and
/// routes progress notifications to the calls that want them.
#[derive(Debug, Clone, Default)]
pub struct ClientState {
    tools_changed: Arc<AtomicBool>,
    progress: ProgressRoutes,
}

impl ClientHandler for ClientState {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.tools_changed.store(true, Ordering::SeqCst);
    }

    async fn on_progress(
        &self,
        params: rmcp::model::ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.progress.deliver(params);
    }
}

/// A connected MCP client and the server process behind it. Calls take `&self`: one
/// session serves several requests at once (JSON-RPC ids keep them apart).
pub struct McpSession {
    name: String,
    pid: Option<u32>,
    peer: Peer<RoleClient>,
    client: RunningService<RoleClient, ClientState>,
    /// The stdio server's process; `None` for a streamable-HTTP server.
    process: Option<tokio::sync::Mutex<ServerProcess>>,
    stderr: StderrTail,
    timeouts: ServerTimeouts,
    tools_changed: Arc<AtomicBool>,
    progress: ProgressRoutes,
    tools: std::sync::Mutex<Option<Arc<Vec<Tool>>>>,
    limit: AnswerLimit,
    /// The 429s of an HTTP server (never written for a stdio one).
    throttle: Throttle,
}

impl std::fmt::Debug for McpSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpSession")
            .field("name", &self.name)
            .field("pid", &self.pid)
            .finish()
    }
}

/// How one call of a job ended ([`McpSession::call_for_job`]).
#[derive(Debug)]
pub enum JobCall {
    /// The server answered: the result (a tool error, `isError`, is an answer too) and,
    /// with a tool error, the server's stderr tail.
    Answered(CallToolResult, Option<String>),
    /// The call failed (timeout, crash, closed connection, protocol error, answer too
    /// large).
    Failed(McpError),
    /// The job's cancellation came first; the server may still be working on the call.
    Cancelled,
    /// The arguments do not match the tool's `inputSchema` ([`super::arguments`]): the
    /// server was not called. The message names the offending fields.
    InvalidArguments(String),
}

fn status_text(status: Option<ExitStatus>) -> String {
    status
        .map(|s| describe_exit(&s))
        .unwrap_or_else(|| "still running".to_string())
}

impl McpSession {
    /// Connects to server `name` (spawns it, or opens its HTTP endpoint) and completes
    /// MCP `initialize`, within the server's startup timeout or by `deadline`, whichever
    /// comes first.
    pub async fn start(
        supervisor: &Supervisor,
        name: &str,
        config: &ServerConfig,
        timeouts: ServerTimeouts,
        deadline: Instant,
    ) -> Result<McpSession, McpError> {
        if config.url.is_some() {
            return Self::start_http(name, config, timeouts, deadline).await;
        }
        let mut process = supervisor.spawn(&spawn_spec(name, config, timeouts.kill_grace))?;
        let (stdout, stdin) = process.take_stdio().expect("a fresh process has its pipes");
        let limit = timeouts
            .startup
            .min(deadline.saturating_duration_since(Instant::now()));
        let state = ClientState::default();
        let tools_changed = state.tools_changed.clone();
        let progress = state.progress.clone();
        let answer_limit = AnswerLimit::new(timeouts.max_answer);
        // rmcp's own line cap (which drops a line silently) stays above ours, so ours is
        // the one that acts.
        let transport = rmcp::transport::async_rw::AsyncRwTransport::new_client(
            LimitedLines::new(stdout, answer_limit.clone()),
            stdin,
        )
        .with_max_line_length(timeouts.max_answer.saturating_add(2));
        match tokio::time::timeout(limit, state.serve(transport)).await {
            Ok(Ok(client)) => {
                tracing::debug!(
                    server = name,
                    pid = process.pid(),
                    "MCP session initialized"
                );
                Ok(McpSession {
                    name: name.to_string(),
                    pid: Some(process.pid()),
                    peer: client.peer().clone(),
                    client,
                    stderr: process.stderr().clone(),
                    process: Some(tokio::sync::Mutex::new(process)),
                    timeouts,
                    tools_changed,
                    progress,
                    tools: std::sync::Mutex::new(None),
                    limit: answer_limit,
                    throttle: Throttle::default(),
                })
            }
            Ok(Err(e)) => {
                let status = process.wait_exit(EXIT_REPORT_WAIT).await;
                if status.is_some() {
                    process.stderr().wait_closed(STDERR_EOF_WAIT).await;
                }
                let stderr = process.stderr().for_error();
                process.stop().await;
                Err(McpError::StartupFailed {
                    server: name.to_string(),
                    message: format!("{e} (process: {})", status_text(status)),
                    stderr,
                })
            }
            Err(_) => {
                let stderr = process.stderr().for_error();
                process.stop().await;
                Err(McpError::StartupTimeout {
                    server: name.to_string(),
                    after: limit,
                    stderr,
                })
            }
        }
    }

    /// Connects to a streamable-HTTP server: its `url`, `headers` and bearer token,
    /// retrying a refused connection with a short backoff until the startup deadline.
    async fn start_http(
        name: &str,
        config: &ServerConfig,
        timeouts: ServerTimeouts,
        deadline: Instant,
    ) -> Result<McpSession, McpError> {
        let failed = |message: String| McpError::StartupFailed {
            server: name.to_string(),
            message,
            stderr: None,
        };
        let url = config.url.clone().unwrap_or_default();
        let mut headers = std::collections::HashMap::new();
        for (k, v) in &config.headers {
            let key = http::HeaderName::from_bytes(k.as_bytes()).map_err(|e| {
                failed(format!(
                    "servers.{name}.headers: `{k}` is not a header name ({e})"
                ))
            })?;
            let value = http::HeaderValue::from_str(v).map_err(|e| {
                failed(format!(
                    "servers.{name}.headers: the value of `{k}` is not valid ({e})"
                ))
            })?;
            headers.insert(key, value);
        }
        let mut transport_config = StreamableHttpClientTransportConfig::with_uri(url.as_str())
            .custom_headers(headers)
            .max_json_response_size(timeouts.max_answer)
            .max_sse_event_size(timeouts.max_answer);
        if let Some(var) = &config.bearer_token_env {
            let token = std::env::var(var).map_err(|_| {
                failed(format!(
                    "the environment variable `{var}` (servers.{name}.bearer_token_env) is not set on the worker"
                ))
            })?;
            transport_config = transport_config.auth_header(token);
        }
        // Tells a refused (too big) body or SSE event from a closed connection.
        let answer_limit = AnswerLimit::new(timeouts.max_answer);
        crate::tls::install();
        // Tells a 429 (and its Retry-After) from other failed calls.
        let throttle = Throttle::default();
        let client = LimitedHttpClient::new(answer_limit.clone(), throttle.clone())
            .map_err(|e| failed(format!("cannot build an HTTP client: {e}")))?;
        let limit = timeouts
            .startup
            .min(deadline.saturating_duration_since(Instant::now()));
        let until = Instant::now() + limit;
        let mut pause = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        loop {
            let state = ClientState::default();
            let tools_changed = state.tools_changed.clone();
            let progress = state.progress.clone();
            let transport = StreamableHttpClientTransport::with_client(
                client.clone(),
                transport_config.clone(),
            );
            let left = until.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, state.serve(transport)).await {
                Ok(Ok(client)) => {
                    tracing::debug!(server = name, %url, "MCP session initialized over HTTP");
                    return Ok(McpSession {
                        name: name.to_string(),
                        pid: None,
                        peer: client.peer().clone(),
                        client,
                        stderr: StderrTail::default(),
                        process: None,
                        timeouts,
                        tools_changed,
                        progress,
                        tools: std::sync::Mutex::new(None),
                        limit: answer_limit,
                        throttle,
                    });
                }
                Ok(Err(e)) if Instant::now() + pause.peek() < until => {
                    // Connection refused, a server still starting, a 5xx: try again.
                    tracing::debug!(server = name, %url, "HTTP connect failed, retrying: {e}");
                    tokio::time::sleep(pause.advance()).await;
                }
                Ok(Err(e)) => return Err(failed(format!("{url}: {e}"))),
                Err(_) => {
                    return Err(McpError::StartupTimeout {
                        server: name.to_string(),
                        after: limit,
                        stderr: None,
                    })
                }
            }
        }
    }

    /// Server name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server's pid (= process group); `None` for an HTTP server.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The server's stderr tail, for errors.
    pub fn stderr_tail(&self) -> Option<String> {
        self.stderr.for_error()
    }

    /// False once the connection is known to be closed (no syscall).
    pub fn is_connected(&self) -> bool {
        !(self.client.is_closed() || self.peer.is_transport_closed())
    }

    /// False once the connection closed or the process exited (checked without waiting;
    /// one `waitpid(WNOHANG)`).
    pub fn is_alive(&self) -> bool {
        if !self.is_connected() {
            return false;
        }
        let Some(process) = &self.process else {
            return true;
        };
        match process.try_lock() {
            Ok(mut process) => process.try_exit().is_none(),
            // Another caller is checking it right now (or stopping it, and then the
            // transport is closed, seen above): nothing says it died.
            Err(_) => true,
        }
    }

    /// Sends one request and awaits its answer for at most `timeout`. rmcp enforces the
    /// timeout on the answer (and sends `notifications/cancelled` when it passes); the
    /// outer timeout also covers a send that cannot proceed (a server that never reads
    /// its stdin).
    async fn request(
        &self,
        request: ClientRequest,
        timeout: Duration,
    ) -> Result<ServerResult, (ServiceError, u64)> {
        let peer = self.peer.clone();
        // Counted until answered (or given up): a message past the limit that ends the
        // stream cuts off every request in flight, and only a lone one is surely the
        // one it answered (`AnswerLimit::culprit`).
        let mut in_flight = self.limit.request();
        let call = async move {
            peer.send_request_with_option(request, PeerRequestOptions::with_timeout(timeout))
                .await?
                .await_response()
                .await
        };
        let answer = tokio::time::timeout(timeout + Duration::from_millis(100), call)
            .await
            .unwrap_or(Err(ServiceError::Timeout { timeout }));
        if matches!(answer, Ok(_) | Err(ServiceError::McpError(_))) {
            in_flight.answered();
        }
        answer.map_err(|e| (e, in_flight.seq()))
    }

    /// Sends `ping`; fails after `timeout`.
    pub async fn ping(&self, timeout: Duration) -> Result<(), McpError> {
        match self
            .request(ClientRequest::PingRequest(Default::default()), timeout)
            .await
        {
            Ok(_) => Ok(()),
            Err((e, seq)) => Err(self.call_error("ping", e, seq).await),
        }
    }

    /// The server's tools, from `tools/list` (cached; fetched again after the server sends
    /// `notifications/tools/list_changed`).
    pub async fn list_tools(&self, timeout: Duration) -> Result<Arc<Vec<Tool>>, McpError> {
        if !self.tools_changed.swap(false, Ordering::SeqCst) {
            if let Some(tools) = self.tools.lock().unwrap_or_else(|p| p.into_inner()).clone() {
                return Ok(tools);
            }
        }
        let mut in_flight = self.limit.request();
        let listed = tokio::time::timeout(timeout, self.peer.list_all_tools()).await;
        if matches!(listed, Ok(Ok(_)) | Ok(Err(ServiceError::McpError(_)))) {
            in_flight.answered();
        }
        let seq = in_flight.seq();
        drop(in_flight);
        let tools = match listed {
            Ok(Ok(tools)) => Arc::new(tools),
            Ok(Err(e)) => return Err(self.call_error("tools/list", e, seq).await),
            Err(_) => {
                return Err(self
                    .call_error("tools/list", ServiceError::Timeout { timeout }, seq)
                    .await)
            }
        };
        *self.tools.lock().unwrap_or_else(|p| p.into_inner()) = Some(tools.clone());
        Ok(tools)
    }

    /// Calls `tool` with `arguments`; fails after `timeout`. A tool result flagged
    /// `isError` is returned as `Ok`: it is the job's outcome, not a transport failure.
    ///
    /// On timeout rmcp sends `notifications/cancelled` for the request; the server's
    /// handler may still run, so a caller that shares the session should retire it.
    pub async fn call_tool(
        &self,
        tool: &str,
        arguments: Map<String, Value>,
        timeout: Duration,
        progress: Option<&ProgressSink>,
    ) -> Result<CallToolResult, McpError> {
        use rmcp::model::RequestParamsMeta;
        let mut params = CallToolRequestParams::new(tool.to_string()).with_arguments(arguments);
        // Held until the call ends: the server's progress reaches `progress` meanwhile.
        let route = progress.map(|sink| self.progress.register(sink.clone()));
        if let Some(route) = &route {
            params.set_progress_token(route.token());
        }
        let request = ClientRequest::CallToolRequest(Request::new(params));
        let started = Instant::now();
        let err = match self.request(request, timeout).await {
            Ok(ServerResult::CallToolResult(result)) => return Ok(result),
            Ok(other) => {
                return Err(McpError::Protocol {
                    server: self.name.clone(),
                    tool: tool.to_string(),
                    message: format!("unexpected answer to tools/call: {other:?}"),
                    stderr: self.stderr_tail(),
                })
            }
            Err(e) => e,
        };
        let (err, seq) = err;
        if let Some(retry_after) = self.throttle.since(started) {
            return Err(McpError::RateLimited {
                server: self.name.clone(),
                tool: tool.to_string(),
                retry_after,
            });
        }
        Err(self.call_error(tool, err, seq).await)
    }

    /// One call of a job: `tool` within the server's `call_timeout` cut to what is left
    /// of the job's `deadline`, ended early by `cancel`. A success is recorded in the
    /// `supervisor`'s health book (it ends a crash streak), a crash too (crash loops);
    /// its duration, however it ended, in `mcpq_tool_call_duration_seconds`; a tool
    /// error (`isError`) comes with the server's stderr tail. What to do with the
    /// session afterwards (retire it, stop it) is its owner's business.
    pub async fn call_for_job(
        &self,
        tool: &str,
        arguments: Map<String, Value>,
        deadline: Instant,
        cancel: &CancellationToken,
        supervisor: &Supervisor,
        progress: Option<&ProgressSink>,
    ) -> JobCall {
        let health = supervisor.health();
        let started = Instant::now();
        let left = deadline.saturating_duration_since(started);
        // Before the server sees them: arguments against the tool's schema, from the
        // session's tool list (cached; listed once per session). A list that fails, or
        // takes longer than PRE_CALL_LIST (so a call stays near its call_timeout),
        // leaves the call unchecked: the call itself then meets the same trouble.
        let listed = tokio::select! {
            listed = self.list_tools(self.timeouts.call.min(left).min(PRE_CALL_LIST)) => listed.ok(),
            _ = cancel.cancelled() => return JobCall::Cancelled,
        };
        if let Some(tools) = listed {
            if let Some(listed) = tools.iter().find(|t| t.name == tool) {
                if let Err(message) = super::arguments::check(&self.name, listed, &arguments) {
                    return JobCall::InvalidArguments(message);
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let called = tokio::select! {
            called = self.call_tool(tool, arguments, self.timeouts.call.min(left), progress) => Some(called),
            _ = cancel.cancelled() => None,
        };
        supervisor
            .metrics()
            .tool_call(&self.name, tool, started.elapsed());
        let Some(called) = called else {
            return JobCall::Cancelled;
        };
        match called {
            Ok(result) => {
                health.record_success(&self.name);
                let stderr = (result.is_error == Some(true))
                    .then(|| self.stderr_tail())
                    .flatten();
                JobCall::Answered(result, stderr)
            }
            Err(error) => {
                health.note_error(&self.name, &error.to_string(), error.stderr());
                if error.is_crash() && health.record_crash(&self.name, std::time::Instant::now()) {
                    tracing::warn!(server = %self.name, "server marked unhealthy: crash loop");
                }
                JobCall::Failed(error)
            }
        }
    }

    /// The error of request `seq` (its number from `AnswerLimit::request`).
    async fn call_error(&self, tool: &str, err: ServiceError, seq: u64) -> McpError {
        let (server, tool) = (self.name.clone(), tool.to_string());
        // An oversized answer thrown away (`LimitedLines`), a stream ended by one that
        // answered this request alone, or an HTTP body over the limit.
        let discarded = matches!(&err, ServiceError::McpError(data)
            if data.code.0 == DISCARDED_CODE && self.limit.is_ours(data.data.as_ref()));
        let ended = self.limit.stream_ended();
        if discarded || (ended && self.limit.culprit(seq)) || (!ended && self.limit.tripped()) {
            return McpError::AnswerTooLarge {
                server,
                tool,
                limit: self.limit.bytes,
                stderr: self.stderr_tail(),
            };
        }
        if ended {
            return McpError::ClosedByAnother {
                server,
                tool,
                limit: self.limit.bytes,
                stderr: self.stderr_tail(),
            };
        }
        match err {
            ServiceError::Timeout { timeout } => McpError::CallTimeout {
                server,
                tool,
                after: timeout,
                stderr: self.stderr_tail(),
            },
            ServiceError::McpError(data) => McpError::Protocol {
                server,
                tool,
                message: format!("{} (JSON-RPC error {})", data.message, data.code.0),
                stderr: self.stderr_tail(),
            },
            ServiceError::TransportClosed | ServiceError::TransportSend(_) => {
                let status = match &self.process {
                    Some(process) => process.lock().await.wait_exit(EXIT_REPORT_WAIT).await,
                    None => None,
                };
                match status {
                    Some(status) => {
                        self.stderr.wait_closed(STDERR_EOF_WAIT).await;
                        McpError::ServerExited {
                            server,
                            tool,
                            status: describe_exit(&status),
                            stderr: self.stderr_tail(),
                        }
                    }
                    None => McpError::ConnectionClosed {
                        server,
                        tool,
                        stderr: self.stderr_tail(),
                    },
                }
            }
            other => McpError::Protocol {
                server,
                tool,
                message: other.to_string(),
                stderr: self.stderr_tail(),
            },
        }
    }

    /// True once a message from the server went past `queue.max_result`.
    pub fn answer_too_large(&self) -> bool {
        self.limit.tripped()
    }

    /// Closes the session and stops the process tree (see [`ServerProcess::stop`]).
    /// Calls still in flight fail with a closed connection.
    pub async fn shutdown(&self) -> StopReport {
        // Cancelling the client drops its transport, which closes the server's stdin.
        self.client.cancellation_token().cancel();
        match &self.process {
            Some(process) => process.lock().await.stop().await,
            None => StopReport {
                exit: None,
                escalated: false,
                kill_grace: self.timeouts.kill_grace,
            },
        }
    }
}
