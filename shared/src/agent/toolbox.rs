//! The tools one job may use, across its servers: listing them and calling them.
//!
//! Pooled servers are reached through the [`McpPool`](crate::mcp::McpPool); others get a
//! session of their own, started when the toolbox opens and stopped (with its process
//! tree) when it closes. Calls take `&self`, so a model's parallel tool calls run at
//! once (MCP sessions multiplex requests). Every call honours the job's deadline and
//! its cancellation.

use std::collections::HashMap;
use std::sync::Arc;

use rmcp::model::{CallToolResult, Tool};
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::plan::PlanContext;
use crate::mcp::pool::{start_admitted, stop_note};
use crate::mcp::{McpSession, PoolError};

/// One job's tools.
pub struct Toolbox<'a> {
    ctx: PlanContext<'a>,
    fresh: HashMap<String, McpSession>,
    /// Every tool, with the server that has it.
    pub tools: Vec<(String, Tool)>,
}

impl<'a> Toolbox<'a> {
    /// Lists the tools of `servers` (starting sessions where needed).
    pub async fn open(
        servers: &[String],
        ctx: PlanContext<'a>,
    ) -> Result<Toolbox<'a>, (String, PoolError)> {
        let mut toolbox = Toolbox {
            ctx,
            fresh: HashMap::new(),
            tools: Vec::new(),
        };
        for server in servers {
            let listed = toolbox.list(server).await;
            match listed {
                Ok(tools) => toolbox
                    .tools
                    .extend(tools.iter().map(|t| (server.clone(), t.clone()))),
                Err(e) => {
                    toolbox.close().await;
                    return Err((server.clone(), e));
                }
            }
        }
        Ok(toolbox)
    }

    async fn list(&mut self, server: &str) -> Result<Arc<Vec<Tool>>, PoolError> {
        let ctx = self.ctx;
        if ctx.pool.is_pooled(server) {
            return ctx.pool.list_tools(server, ctx.deadline, ctx.cancel).await;
        }
        let config = &ctx.config.servers[server];
        let timeouts = ctx.config.timeouts(config);
        let session = start_admitted(
            ctx.pool.supervisor(),
            server,
            config,
            timeouts,
            ctx.deadline,
        )
        .await?;
        let left = ctx.deadline.saturating_duration_since(Instant::now());
        let tools = session
            .list_tools(timeouts.call.min(left))
            .await
            .map_err(|error| PoolError::Mcp {
                error,
                stop_note: None,
            });
        self.fresh.insert(server.to_string(), session);
        tools
    }

    /// Calls `tool` on `server`; a tool result flagged `isError` is `Ok`.
    pub async fn call(
        &self,
        server: &str,
        tool: &str,
        arguments: Map<String, Value>,
    ) -> Result<CallToolResult, PoolError> {
        let ctx = self.ctx;
        if ctx.pool.is_pooled(server) {
            return ctx
                .pool
                .call(server, tool, arguments, ctx.deadline, ctx.cancel)
                .await
                .map(|(result, _)| result);
        }
        let session = self
            .fresh
            .get(server)
            .expect("tools are offered only for servers Toolbox::open opened");
        call_own_session(ctx, server, session, tool, arguments)
            .await
            .map(|(result, _)| result)
    }

    /// Stops the job's own sessions (whole process trees).
    pub async fn close(self) {
        stop_sessions(self.fresh).await;
    }
}

/// One call on a job's own (unpooled) session of `server`: bounded by the server's
/// `call_timeout` and the job's deadline, ended by the job's cancellation, and recorded
/// in the supervisor's health book (crash loops). With a tool error, the server's
/// stderr tail.
pub(crate) async fn call_own_session(
    ctx: PlanContext<'_>,
    server: &str,
    session: &McpSession,
    tool: &str,
    arguments: Map<String, Value>,
) -> Result<(CallToolResult, Option<String>), PoolError> {
    let timeouts = ctx.config.timeouts(&ctx.config.servers[server]);
    let left = ctx.deadline.saturating_duration_since(Instant::now());
    let health = ctx.pool.supervisor().health();
    let called = tokio::select! {
        called = session.call_tool(tool, arguments, timeouts.call.min(left)) => called,
        // The session's owner stops it (and its process tree) when the job ends.
        _ = ctx.cancel.cancelled() => {
            return Err(PoolError::Cancelled { server: server.to_string(), stop_note: None });
        }
    };
    match called {
        Ok(result) => {
            health.record_success(server);
            let stderr = (result.is_error == Some(true))
                .then(|| session.stderr_tail())
                .flatten();
            Ok((result, stderr))
        }
        Err(error) => {
            if error.is_crash() && health.record_crash(server, std::time::Instant::now()) {
                tracing::warn!(server = %server, "server marked unhealthy: crash loop");
            }
            Err(PoolError::Mcp {
                error,
                stop_note: None,
            })
        }
    }
}

/// Stops a job's own sessions (whole process trees) at once; returns, by server, the
/// notes of those whose server had to be killed (also logged).
pub(crate) async fn stop_sessions(sessions: HashMap<String, McpSession>) -> Vec<(String, String)> {
    let stops = futures::future::join_all(sessions.into_iter().map(|(name, session)| async move {
        let report = session.shutdown().await;
        (name, report)
    }))
    .await;
    stops
        .into_iter()
        .filter_map(|(name, report)| {
            let note = stop_note(&name, &report)?;
            tracing::warn!(server = %name, "{note}");
            Some((name, note))
        })
        .collect()
}
