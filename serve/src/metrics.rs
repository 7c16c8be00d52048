//! `GET /metrics` of `mcpq serve`: Prometheus text (prometheus-client), behind a token
//! like every route but `/health`.
//!
//! - `mcpq_http_requests_total{route,method,status}` and
//!   `mcpq_http_request_duration_seconds{route}`: every answered request. `route` is
//!   the matched route pattern (`/v1/jobs/{id}`), never the raw path, and `method` one
//!   of the standard methods or `other`: the label sets are bounded whatever clients
//!   send.
//! - `mcpq_long_polls{}`: `?wait=` requests waiting now.
//! - The queue, read when scraped (one read-only script): `mcpq_queue_depth{priority}`,
//!   `mcpq_queue_jobs{state}` (scheduled, running, suspects, dead),
//!   `mcpq_queue_oldest_age_seconds`, and `mcpq_workers_alive`. The same names as a
//!   worker's, so one dashboard reads either.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::error::ApiError;
use crate::state::AppState;

type Labels = Vec<(&'static str, String)>;

/// Request durations (s): 1 ms to 10 min (long polls and batch uploads are long).
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0,
];

/// The server's metrics. Cheap to clone.
#[derive(Clone)]
pub struct ServeMetrics(Arc<Inner>);

struct Inner {
    registry: Registry,
    requests: Family<Labels, Counter>,
    durations: Family<Labels, Histogram>,
    long_polls: Gauge,
    queue_depth: Family<Labels, Gauge>,
    queue_jobs: Family<Labels, Gauge>,
    queue_oldest: Gauge<f64, AtomicU64>,
    workers_alive: Gauge,
}

impl Default for ServeMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "mcpq_http_requests",
            "HTTP requests answered, by route pattern, method and status",
            requests.clone(),
        );
        let durations =
            Family::<Labels, Histogram>::new_with_constructor(|| Histogram::new(BUCKETS));
        registry.register(
            "mcpq_http_request_duration_seconds",
            "Time to answer a request, by route pattern",
            durations.clone(),
        );
        let long_polls = Gauge::default();
        registry.register(
            "mcpq_long_polls",
            "Result requests waiting for their job to end (?wait=)",
            long_polls.clone(),
        );
        let queue_depth = Family::<Labels, Gauge>::default();
        registry.register(
            "mcpq_queue_depth",
            "Jobs waiting for a worker, by priority",
            queue_depth.clone(),
        );
        let queue_jobs = Family::<Labels, Gauge>::default();
        registry.register(
            "mcpq_queue_jobs",
            "Jobs by state: scheduled (delayed, or waiting to retry), running, suspects, dead",
            queue_jobs.clone(),
        );
        let queue_oldest = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "mcpq_queue_oldest_age_seconds",
            "Age of the oldest job waiting for a worker (0 when none waits)",
            queue_oldest.clone(),
        );
        let workers_alive = Gauge::default();
        registry.register(
            "mcpq_workers_alive",
            "Workers that sent a heartbeat within the last 30 s",
            workers_alive.clone(),
        );
        ServeMetrics(Arc::new(Inner {
            registry,
            requests,
            durations,
            long_polls,
            queue_depth,
            queue_jobs,
            queue_oldest,
            workers_alive,
        }))
    }
}

/// A standard method's name, or `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

impl ServeMetrics {
    /// A long poll started; it is counted until the guard drops.
    pub fn long_poll(&self) -> LongPoll {
        self.0.long_polls.inc();
        LongPoll(self.clone())
    }
}

/// Counts one waiting long poll while it lives.
pub struct LongPoll(ServeMetrics);

impl Drop for LongPoll {
    fn drop(&mut self) {
        self.0 .0.long_polls.dec();
    }
}

/// The middleware that counts every request (outermost, so 401s and 404s count too).
pub async fn count(State(metrics): State<ServeMetrics>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let inner = &metrics.0;
    inner
        .requests
        .get_or_create(&vec![
            ("route", route.clone()),
            ("method", method.to_string()),
            ("status", response.status().as_u16().to_string()),
        ])
        .inc();
    inner
        .durations
        .get_or_create(&vec![("route", route)])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "health",
    responses(
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
        (status = 401, description = "No or wrong token", body = crate::error::ErrorBody),
        (status = 503, description = "Redis failed", body = crate::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let conn = state.producer.connection();
    let keys = state.producer.keys();
    let (queue, live) = tokio::try_join!(
        mcpq_core::queue::stats::read(conn, keys),
        mcpq_core::queue::workers::live(conn, keys),
    )?;
    let inner = &state.metrics.0;
    let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    for (priority, n) in [
        ("high", queue.queued.high),
        ("normal", queue.queued.normal),
        ("low", queue.queued.low),
    ] {
        inner
            .queue_depth
            .get_or_create(&vec![("priority", priority.to_string())])
            .set(gauge(n));
    }
    for (name, n) in [
        ("scheduled", queue.scheduled),
        ("running", queue.running),
        ("suspects", queue.suspects),
        ("dead", queue.dead),
    ] {
        inner
            .queue_jobs
            .get_or_create(&vec![("state", name.to_string())])
            .set(gauge(n));
    }
    inner.queue_oldest.set(
        queue
            .oldest_queued_age()
            .map_or(0.0, |ms| ms as f64 / 1000.0),
    );
    inner.workers_alive.set(gauge(live.len() as u64));
    let mut text = String::new();
    prometheus_text::encode(&mut text, &inner.registry)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok((
        [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
        text,
    )
        .into_response())
}
