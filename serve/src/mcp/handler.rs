//! The rmcp server handler of the MCP front: tools, calls, tasks.
//!
//! - `tools/list`: the queue tools, then the gateway tools (from the catalog in Redis).
//! - `tools/call` of a queue tool: the API route, in-process ([`queue_tools`]).
//! - `tools/call` of a gateway tool: a job. A client that declared the tasks extension
//!   (`io.modelcontextprotocol/tasks`) gets a task at once (its id is the job's id);
//!   any other client waits for the job (its timeout plus `serve.mcp.queue_wait`, or
//!   until it cancels the request, which cancels the job) and gets the tool's answer.
//! - `tasks/get` reads the job from Redis ([`tasks`]); `tasks/cancel` cancels it.
//!
//! An unknown tool is a JSON-RPC error (-32602, invalid params); everything that goes
//! wrong inside a known tool is a tool error (`isError`) the model can read.

use std::time::Duration;

use axum::Router;
use mcpq_core::queue::control::{self, Cancelled};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, CreateTaskResult,
    GetTaskParams, GetTaskResult, Implementation, ListToolsResult, PaginatedRequestParams,
    ProgressNotificationParam, ServerCapabilities, ServerConfig, SubscriptionFilter,
};
use rmcp::service::{NotificationContext, RequestContext, SubscriptionContext};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};

use mcpq_core::queue::progress::Progress;

use super::events::{relay_tool_changes, McpEvents};
use super::gateway::{self, Outcome};
use super::{queue_tools, tasks};
use crate::auth::Caller;
use crate::state::AppState;

/// What the front tells a client at start.
const INSTRUCTIONS: &str = "mcpq: a durable job queue whose workers run MCP tools. \
Gateway tools are named SERVER__TOOL; a call runs as a job on a worker (retries, \
timeouts, dead letters). Clients with the tasks extension get a task at once and poll \
tasks/get (the task id is the job id; any mcpq serve can answer, after a restart too). \
Queue tools: submit_job, get_job, wait_job, cancel_job, list_jobs, submit_batch, \
get_batch, list_servers.";

/// One client's handler (cheap to clone; all state is in Redis).
#[derive(Clone)]
pub struct McpFront {
    state: AppState,
    /// The API routes without auth (a request reaching here passed it already).
    api: Router,
    /// Who calls, when the transport has no per-request caller (stdio).
    default_caller: Caller,
    /// Progress reports and catalog changes from Redis.
    events: McpEvents,
}

impl McpFront {
    /// A handler over `state`; `default_caller` names calls without an HTTP request
    /// (stdio).
    pub fn new(state: AppState, default_caller: &str, events: McpEvents) -> McpFront {
        let api = crate::app::api_routes(&state).with_state(state.clone());
        Self::with_api(state, api, default_caller, events)
    }

    /// A handler that calls the API routes `api` (built once per process: every
    /// session's handler shares them).
    pub fn with_api(
        state: AppState,
        api: Router,
        default_caller: &str,
        events: McpEvents,
    ) -> McpFront {
        McpFront {
            state,
            api,
            default_caller: Caller(default_caller.to_string()),
            events,
        }
    }

    /// The caller of this request: the one the HTTP auth layer put into the request,
    /// else the default.
    fn caller(&self, context: &RequestContext<RoleServer>) -> Caller {
        context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Caller>())
            .cloned()
            .unwrap_or_else(|| self.default_caller.clone())
    }

    /// A plain gateway call: enqueue, wait, answer with the tool's result.
    async fn call_and_wait(
        &self,
        name: &str,
        arguments: rmcp::model::JsonObject,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        // Subscribed before the job exists: no early report is missed.
        let reports = self.events.progress();
        let job = gateway::submit(&self.state, name, arguments)
            .await
            .map_err(internal)?;
        let id = job.id.to_string();
        let wait = gateway::plain_wait(&self.state);
        let forward = forward_progress(reports, id.clone(), context);
        let stopping = stopped(self.state.shutdown.clone());
        let record = tokio::select! {
            // Shutdown first: a front that stops (a rolling restart) leaves its jobs
            // running, whatever its sessions do meanwhile.
            biased;
            () = stopping => {
                return Ok(queue_tools::error_result("shutting_down", &format!("mcpq serve is shutting down; job {id} goes on (read it with wait_job)")));
            }
            r = self.state.endings.wait(&id, wait) => r.map_err(|e| internal(e.into()))?,
            () = forward => unreachable!("forwarding progress never ends by itself"),
            _ = context.ct.cancelled() => {
                if *self.state.shutdown.borrow() || context.peer.is_transport_closed() {
                    // The session ended (idle expiry, a dropped connection, shutdown),
                    // not the client's mind: the job goes on, readable by its id.
                    tracing::info!(job = %id, "the session of a gateway call ended; the job goes on");
                    return Ok(queue_tools::error_result("session_closed", &format!("the session ended; job {id} goes on (read it with wait_job)")));
                }
                // The client cancelled the request: so does the job (its server's
                // process tree too).
                let mut conn = self.state.conn();
                let _ = control::cancel(&mut conn, self.state.producer.keys(), self.state.producer.settings(), &id).await;
                tracing::info!(job = %id, "gateway call cancelled by the client; job cancelled");
                return Ok(queue_tools::error_result("cancelled", &format!("the request was cancelled; job {id} was cancelled")));
            }
        };
        let Some(record) = record else {
            return Ok(queue_tools::error_result(
                "not_found",
                &format!("job {id} vanished (its record expired)"),
            ));
        };
        Ok(match gateway::outcome(&self.state, &record).await.map_err(internal)? {
            Outcome::Completed(result) => *result,
            Outcome::Working(what) => queue_tools::error_result(
                "timeout",
                &format!(
                    "job {id} has not ended after {}: {what}; it goes on (read it with wait_job, or cancel_job)",
                    humantime::format_duration(Duration::from_secs(wait.as_secs()))
                ),
            ),
            Outcome::Failed { kind, message } => {
                queue_tools::error_result(&kind, &format!("job {id}: {message}"))
            }
            Outcome::Cancelled => {
                queue_tools::error_result("cancelled", &format!("job {id} was cancelled"))
            }
        })
    }
}

/// Forwards job `id`'s progress reports to the client, with the progress token of its
/// request, if it gave one; never returns (drop it to stop).
async fn forward_progress(
    mut reports: tokio::sync::broadcast::Receiver<(String, Progress)>,
    id: String,
    context: &RequestContext<RoleServer>,
) {
    let Some(token) = context.meta.get_progress_token() else {
        return std::future::pending().await;
    };
    loop {
        let (job, report) = match reports.recv().await {
            Ok(event) => event,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                return std::future::pending().await
            }
        };
        if job != id {
            continue;
        }
        let mut note = ProgressNotificationParam::new(token.clone(), report.progress);
        note.total = report.total;
        note.message = report.message;
        if context.peer.notify_progress(note).await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Resolves once the server shuts down.
async fn stopped(mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|down| *down).await;
}

fn internal(e: crate::error::ApiError) -> McpError {
    McpError::internal_error(format!("{}: {}", e.kind, e.message), None)
}

impl ServerHandler for McpFront {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .enable_tasks()
                .build(),
        )
        .with_server_info(Implementation::new("mcpq", env!("CARGO_PKG_VERSION")))
        .with_instructions(INSTRUCTIONS)
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        // This session hears of catalog changes until its client goes away.
        let changes = self.events.tools_changed();
        let peer = context.peer;
        let closed = {
            let peer = peer.clone();
            async move {
                while !peer.is_transport_closed() {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        };
        tokio::spawn(relay_tool_changes(changes, closed, move || {
            let peer = peer.clone();
            async move { peer.notify_tool_list_changed().await }
        }));
    }

    fn accepted_subscription_filter(
        &self,
        _requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(SubscriptionFilter::builder().tools_list_changed().build())
    }

    /// `subscriptions/listen` (2026-07-28): `notifications/tools/list_changed` on this
    /// stream when the catalog changes, until the client cancels or the server stops.
    async fn listen(&self, context: SubscriptionContext) -> Result<(), McpError> {
        let stopping = stopped(self.state.shutdown.clone());
        let ended = async {
            tokio::select! {
                () = context.cancelled() => {}
                () = stopping => {}
            }
        };
        if context.accepted().tools_list_changed != Some(true) {
            ended.await;
            return Ok(());
        }
        relay_tool_changes(self.events.tools_changed(), ended, || {
            context.sink().notify_tool_list_changed()
        })
        .await;
        Ok(())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let mut tools = if self.state.config.serve.mcp.queue_tools {
            queue_tools::definitions()
        } else {
            Vec::new()
        };
        tools.extend(
            gateway::tools(&self.state)
                .await
                .map_err(internal)?
                .into_values(),
        );
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let name = request.name.to_string();
        let arguments = request.arguments.unwrap_or_default();
        if queue_tools::is_queue_tool(&name) && self.state.config.serve.mcp.queue_tools {
            let caller = self.caller(&context);
            let result = queue_tools::call(&self.api, &caller, &name, &arguments).await;
            return Ok(CallToolResponse::Complete(result));
        }
        if !gateway::is_exposed(&self.state, &name) {
            return Err(McpError::invalid_params(
                format!("no tool `{}` (tools/list names them)", name.escape_debug()),
                None,
            ));
        }
        let wants_task = context
            .client_capabilities()
            .is_some_and(|caps| caps.supports_tasks());
        if !wants_task {
            return self
                .call_and_wait(&name, arguments, &context)
                .await
                .map(CallToolResponse::Complete);
        }
        let job = gateway::submit(&self.state, &name, arguments)
            .await
            .map_err(internal)?;
        // Made from what was enqueued, not read back: a Redis error now would make a
        // client retry and run the call twice.
        let task = tasks::created(&self.state, &job.id.to_string());
        Ok(CallToolResponse::Task(CreateTaskResult::new(task)))
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, McpError> {
        Ok(GetTaskResult::new(
            tasks::read(&self.state, &request.task_id).await?,
        ))
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let id = tasks::parse(&request.task_id)?;
        let mut conn = self.state.conn();
        let outcome = control::cancel(
            &mut conn,
            self.state.producer.keys(),
            self.state.producer.settings(),
            &id,
        )
        .await
        .map_err(|e| internal(e.into()))?;
        match outcome {
            Cancelled::Unknown => return Err(tasks::unknown(&id)),
            Cancelled::AlreadyFinished(status) => {
                return Err(McpError::invalid_params(
                    format!("task {id} has ended already ({status}): nothing to cancel"),
                    None,
                ))
            }
            Cancelled::BeforeRunning | Cancelled::WhileRunning => {}
        }
        tracing::info!(job = %id, caller = %self.caller(&context).0, "task cancel requested");
        Ok(())
    }
}
