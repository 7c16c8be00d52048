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
        let Some(session) = self.fresh.get(server) else {
            return Err(PoolError::Cancelled {
                server: server.to_string(),
                stop_note: Some("the server is not open in this job".to_string()),
            });
        };
        let timeouts = ctx.config.timeouts(&ctx.config.servers[server]);
        let left = ctx.deadline.saturating_duration_since(Instant::now());
        tokio::select! {
            called = session.call_tool(tool, arguments, timeouts.call.min(left)) => {
                called.map_err(|error| PoolError::Mcp { error, stop_note: None })
            }
            _ = ctx.cancel.cancelled() => Err(PoolError::Cancelled { server: server.to_string(), stop_note: None }),
        }
    }

    /// Stops the job's own sessions (whole process trees).
    pub async fn close(self) {
        let stops =
            futures::future::join_all(self.fresh.into_iter().map(|(name, session)| async move {
                let report = session.shutdown().await;
                (name, report)
            }))
            .await;
        for (name, report) in stops {
            if let Some(note) = stop_note(&name, &report) {
                tracing::warn!(server = %name, "{note}");
            }
        }
    }
}
