//! `GET /health`: can this server serve, and how is the queue? Open to everyone (no
//! token), for load balancers, probes and people.
//!
//! 200 when Redis answers, with the queue's counts by state and priority and the oldest
//! queued job's age (one read-only script: `queue::stats`), the workers alive with their
//! last heartbeat (`queue::workers`), and each MCP server's pool as the workers last
//! reported it (`queue::servers`). 503 with `"redis": false` when Redis does not answer
//! within [`REDIS_DEADLINE`]. Nothing here scans jobs: the answer costs the same with a
//! million jobs as with none.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use mcpq_core::queue::servers::{self, ServerReport};
use mcpq_core::queue::stats::{self, QueueStats};
use mcpq_core::queue::workers::{self, LiveWorker};
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;

/// How long Redis may take to answer the health reads.
pub const REDIS_DEADLINE: Duration = Duration::from_secs(2);

/// What `/health` says.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `unavailable` when Redis does not answer.
    pub status: String,
    /// Whether Redis answered.
    pub redis: bool,
    /// mcpq's version.
    pub version: String,
    /// The queue by state: `queued` and `oldest_queued_age_ms` by priority,
    /// `scheduled` (waiting to retry), `running`, `suspects`, `dead`.
    #[schema(value_type = Option<Object>)]
    pub queue: Option<QueueStats>,
    /// Workers that beat within the last 30 s, with their last heartbeat.
    #[schema(value_type = Option<Vec<Object>>)]
    pub workers: Option<Vec<LiveWorker>>,
    /// Each configured MCP server's health and pool (sessions, calls in flight), as the
    /// workers last reported it; `null` for a server no worker reported.
    #[schema(value_type = Option<Object>)]
    pub servers: Option<BTreeMap<String, Option<ServerReport>>>,
}

/// The queue, the workers and the servers, read at once.
async fn read(
    state: &AppState,
) -> Result<
    (QueueStats, Vec<LiveWorker>, BTreeMap<String, ServerReport>),
    mcpq_core::queue::QueueError,
> {
    let conn = state.producer.connection();
    let keys = state.producer.keys();
    let (queue, live, reports) = tokio::try_join!(
        stats::read(conn, keys),
        workers::live(conn, keys),
        servers::read_all(conn, keys),
    )?;
    Ok((queue, live, reports))
}

/// The queue's health.
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    tag = "health",
    responses(
        (status = 200, description = "Redis answers: the counts", body = Health),
        (status = 503, description = "Redis does not answer", body = Health),
    )
)]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let read = tokio::time::timeout(REDIS_DEADLINE, read(&state)).await;
    let version = env!("CARGO_PKG_VERSION").to_string();
    match read {
        Ok(Ok((queue, live, mut reports))) => {
            let servers = state
                .config
                .servers
                .keys()
                .map(|name| (name.clone(), reports.remove(name)))
                .collect();
            (
                StatusCode::OK,
                Json(Health {
                    status: "ok".into(),
                    redis: true,
                    version,
                    queue: Some(queue),
                    workers: Some(live),
                    servers: Some(servers),
                }),
            )
        }
        Ok(Err(e)) => unavailable(version, &e.to_string()),
        Err(_) => unavailable(version, "no answer within 2 s"),
    }
}

fn unavailable(version: String, why: &str) -> (StatusCode, Json<Health>) {
    tracing::warn!("health: Redis failed: {why}");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(Health {
            status: "unavailable".into(),
            redis: false,
            version,
            queue: None,
            workers: None,
            servers: None,
        }),
    )
}
