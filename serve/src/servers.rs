//! `/v1/servers`: the configured MCP servers and what the workers last reported of each
//! (health, pooled sessions, calls in flight, tools), as `mcpq servers` shows. The
//! command line of a server is not shown: its arguments may hold what only the workers'
//! operators should see.

use axum::extract::State;
use axum::Json;
use mcpq_core::queue::servers::{self, ServerReport};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// One configured server.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerView {
    /// Its name, as jobs use it.
    pub name: String,
    /// `stdio` or `http`.
    pub transport: String,
    /// Whether sessions outlive jobs.
    pub pooled: bool,
    /// The newest worker report, if a worker reported in the last minute.
    pub report: Option<ServerReport>,
}

/// The configured servers.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerList {
    /// By name.
    pub servers: Vec<ServerView>,
}

/// List the configured MCP servers with the workers' reports.
#[utoipa::path(
    get,
    path = "/v1/servers",
    operation_id = "list_servers",
    tag = "servers",
    responses(
        (status = 200, description = "The servers", body = ServerList),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 503, description = "Redis failed (`redis`) or no answer in time (`timeout`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<ServerList>, ApiError> {
    let mut reports = servers::read_all(state.producer.connection(), state.producer.keys()).await?;
    let servers = state
        .config
        .servers
        .iter()
        .map(|(name, s)| ServerView {
            name: name.clone(),
            transport: if s.url.is_some() { "http" } else { "stdio" }.to_string(),
            pooled: s.pool,
            report: reports.remove(name),
        })
        .collect();
    Ok(Json(ServerList { servers }))
}
