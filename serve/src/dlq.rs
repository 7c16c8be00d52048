//! `/v1/dlq`: the dead-letter set (jobs that failed permanently or ran out of attempts),
//! and putting one back in its queue.

use axum::extract::{Extension, Path, Query, State};
use axum::Json;
use mcpq_core::queue::control::{self, DeadJob, Requeued};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::jobs::{page_limit, parse_id};
use crate::state::AppState;

/// `?limit=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DlqQuery {
    /// Most entries to return, newest first (default 100, at most 1000).
    pub limit: Option<usize>,
}

/// The dead-letter set.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadList {
    /// Entries, newest first.
    pub jobs: Vec<DeadJob>,
    /// How many there are in all.
    pub total: u64,
}

/// What a requeue did.
#[derive(Debug, Serialize, ToSchema)]
pub struct RequeueAnswer {
    /// The job.
    pub id: String,
    /// True: back in its queue.
    pub requeued: bool,
}

/// List the dead-letter set, newest first.
#[utoipa::path(
    get,
    path = "/v1/dlq",
    operation_id = "list_dead_jobs",
    tag = "dlq",
    params(DlqQuery),
    responses(
        (status = 200, description = "Dead jobs and their count", body = DeadList),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 503, description = "Redis failed (`redis`) or no answer in time (`timeout`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<DlqQuery>,
) -> Result<Json<DeadList>, ApiError> {
    let limit = page_limit(query.limit)?;
    let (jobs, total) = control::dead_list(&mut state.conn(), state.producer.keys(), limit).await?;
    Ok(Json(DeadList { jobs, total }))
}

/// Put a dead job back in its queue (its attempts start again).
#[utoipa::path(
    post,
    path = "/v1/dlq/{id}/requeue",
    operation_id = "requeue_dead_job",
    tag = "dlq",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "Back in its queue", body = RequeueAnswer),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 404, description = "Not in the dead-letter set", body = ErrorBody),
        (status = 409, description = "A malformed entry with no payload: nothing could run", body = ErrorBody),
        (status = 503, description = "Redis failed (`redis`) or no answer in time (`timeout`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn requeue(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<RequeueAnswer>, ApiError> {
    let id = parse_id(&id)?.to_string();
    match control::requeue(&mut state.conn(), state.producer.keys(), &id).await? {
        Requeued::Yes => {
            tracing::info!(job = %id, caller = %caller.0, "dead job requeued");
            Ok(Json(RequeueAnswer { id, requeued: true }))
        }
        Requeued::NotDead => Err(ApiError::not_found(format!(
            "job {id} is not in the dead-letter set"
        ))),
        Requeued::NoPayload => Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "no_payload",
            format!("{id} is a malformed queue entry with no payload: nothing can run (purge it with mcpq dlq purge)"),
        )),
    }
}
