//! `GET /health`: is this server able to serve (Redis reachable), open to everyone (no
//! token), for load balancers and probes. 200 when Redis answers, 503 when not.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;

/// What `/health` says.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `unavailable` when Redis does not answer.
    pub status: String,
    /// Whether Redis answered a PING.
    pub redis: bool,
    /// mcpq's version.
    pub version: String,
}

/// Whether the server can serve.
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    tag = "health",
    responses(
        (status = 200, description = "Redis answers", body = Health),
        (status = 503, description = "Redis does not answer", body = Health),
    )
)]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let mut conn = state.conn();
    let redis = matches!(
        tokio::time::timeout(
            std::time::Duration::from_secs(2),
            redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await,
        Ok(Ok(_))
    );
    let status = if redis {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Health {
            status: if redis { "ok" } else { "unavailable" }.to_string(),
            redis,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }),
    )
}
