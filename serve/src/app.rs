//! The router: which route needs a token, which limits apply where (the server loop and
//! its graceful shutdown: [`crate::server`]).
//!
//! - `/health` is open; the API needs a token ([`crate::auth`]); the dashboard (`/`,
//!   [`crate::dashboard`]) a session cookie, got by logging in with a token.
//! - A body is at most `queue.max_payload` bytes (a job cannot be bigger), except a
//!   batch's, which is streamed to disk up to `serve.max_batch_bytes`.
//! - A request gets `serve.request_timeout` (503 after), a long poll `serve.max_wait` more.
//! - On SIGTERM/SIGINT the listener closes, long polls answer at once with what they
//!   know (202 and the status), requests under way finish within
//!   [`crate::server::SHUTDOWN_GRACE`].

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use crate::auth::{self, Tokens};
use crate::dashboard::session::Sessions;
use crate::error::ApiError;
use crate::state::AppState;
use crate::{batches, dashboard, dlq, health, jobs, json_errors, metrics, openapi, servers};

/// The whole API.
pub fn router(state: AppState, tokens: Tokens, mcp: Router) -> Router {
    let protected = api_routes(&state)
        .with_state(state.clone())
        .merge(mcp)
        .route_layer(middleware::from_fn_with_state(
            tokens.clone(),
            auth::require,
        ));
    let dashboard = dashboard::router(state.clone(), Sessions::new(tokens));
    Router::new()
        .route("/health", get(health::health))
        .with_state(state.clone())
        .merge(protected)
        .merge(dashboard)
        .fallback(|| async { ApiError::not_found("no such route (see /openapi.json)") })
        .layer(DefaultBodyLimit::max(state.config.queue.max_payload))
        .layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            metrics::count,
        ))
        // Outside every other layer: their plain errors (timeout, 405, rejections) too.
        .layer(middleware::from_fn(json_errors::to_json))
        .layer(
            TraceLayer::new_for_http()
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
}

/// The routes that need a token, with their time limits (no auth layer: the caller
/// adds it; the MCP front's queue tools call them in-process after its own auth).
pub fn api_routes(state: &AppState) -> Router<AppState> {
    let serve = &state.config.serve;
    let quick = Router::new()
        .route("/v1/jobs", post(jobs::submit).get(jobs::list))
        .route("/v1/jobs/{id}", get(jobs::status))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route("/v1/jobs/{id}/run-now", post(jobs::run_now))
        .route("/v1/batches", get(batches::list))
        .route("/v1/batches/{id}", get(batches::status))
        .route("/v1/dlq", get(dlq::list))
        .route("/v1/dlq/{id}/requeue", post(dlq::requeue))
        .route("/v1/servers", get(servers::list))
        .route("/openapi.json", get(openapi_json))
        .route("/metrics", get(metrics::metrics))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            serve.request_timeout,
        ));
    let long_polls = Router::new()
        .route("/v1/jobs/{id}/result", get(jobs::result))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            serve.max_wait + serve.request_timeout,
        ));
    // Bounded by their own rules: a body chunk within request_timeout, Redis calls
    // within theirs; a big batch may take minutes to enqueue or to stream back.
    let streams = Router::new()
        .route("/v1/batches", post(batches::submit))
        .route("/v1/batches/{id}/results", get(batches::results));
    // The same body limit as the HTTP router's, for the MCP front's in-process calls.
    quick
        .merge(long_polls)
        .merge(streams)
        .layer(DefaultBodyLimit::max(state.config.queue.max_payload))
}

async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi::document())
}
