//! `/v1/batches`: many jobs as one, with the rules of `mcpq batch submit`
//! (`mcpq_core::queue::batch_input`).
//!
//! `POST /v1/batches` streams its JSON lines body to a private temporary file (at most
//! `serve.max_batch_bytes`; each chunk must arrive within `serve.request_timeout`, the
//! whole body within `serve.batch_upload_timeout`, else 408 `timeout`; at most
//! `serve.max_batch_uploads` at once, one more is 503 `busy` with `Retry-After`), checks
//! every line in a first pass off the async runtime, and only if all are valid (or
//! `?skip_invalid=true`) makes the batch and enqueues the lines in a second pass. An
//! `Idempotency-Key` names the whole batch: a retried upload of the same body resumes the
//! same batch instead of making a second one. Results stream back as JSON lines in input
//! order, a page of ids at a time: memory stays bounded whatever the batch's size.

use std::io::Write;
use std::path::PathBuf;

use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use mcpq_core::job::{Callback, JobId};
use mcpq_core::lines::Lines;
use mcpq_core::queue::batch::{self, BatchCreated, BatchSpec, BatchStatus};
use mcpq_core::queue::batch_input::{self, EnqueueError, LineRules};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody, LineProblem};
use crate::jobs::{idempotency_key, page_limit, parse_id};
use crate::media_type;
use crate::state::AppState;

/// Most bad lines an error answer lists (the count covers all).
const MAX_LISTED_PROBLEMS: usize = 100;

/// How long a client told `busy` is asked to wait before it tries again (seconds).
const BUSY_RETRY_AFTER: &str = "5";

/// The batch uploads under way in this process, at most `serve.max_batch_uploads` (set
/// from the config at the first upload; a process has one config).
static UPLOADS: std::sync::OnceLock<std::sync::Arc<tokio::sync::Semaphore>> =
    std::sync::OnceLock::new();

/// A turn to upload, or 503 `busy`.
fn upload_turn(max: usize) -> Result<tokio::sync::OwnedSemaphorePermit, Box<Response>> {
    let slots = UPLOADS.get_or_init(|| std::sync::Arc::new(tokio::sync::Semaphore::new(max)));
    slots.clone().try_acquire_owned().map_err(|_| {
        let mut busy = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!("{max} batch uploads are under way (serve.max_batch_uploads): try again in a few seconds"),
        )
        .into_response();
        busy.headers_mut().insert(
            header::RETRY_AFTER,
            header::HeaderValue::from_static(BUSY_RETRY_AFTER),
        );
        Box::new(busy)
    })
}

/// `POST /v1/batches` options.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SubmitQuery {
    /// Enqueue the valid lines even if some are not (default false: one bad line and
    /// nothing is enqueued).
    pub skip_invalid: Option<bool>,
    /// POST the batch's end to this URL (a completion webhook; see README "Webhooks").
    pub callback_url: Option<String>,
    /// The worker's environment variable with the webhook's HMAC secret (allowlisted
    /// in `[webhooks]`).
    pub callback_secret_env: Option<String>,
    /// A named endpoint of `[webhooks.endpoints]`, instead of `callback_url`.
    pub callback_endpoint: Option<String>,
}

impl SubmitQuery {
    /// The batch's own callback, if one is asked for.
    fn callback(&self) -> Option<Callback> {
        if self.callback_url.is_none()
            && self.callback_endpoint.is_none()
            && self.callback_secret_env.is_none()
        {
            return None;
        }
        Some(Callback {
            url: self.callback_url.clone(),
            secret_env: self.callback_secret_env.clone(),
            endpoint: self.callback_endpoint.clone(),
        })
    }
}

/// What a batch submit did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchSubmitted {
    /// The batch's id.
    pub id: String,
    /// Jobs in the batch.
    pub total: u64,
    /// Jobs enqueued by this request.
    pub enqueued: u64,
    /// Jobs already there (a retried upload of the same batch).
    pub existing: u64,
    /// Invalid lines left out (`skip_invalid`).
    pub invalid_skipped: u64,
    /// True when the Idempotency-Key named a batch made before: this request resumed it.
    pub resumed: bool,
}

/// `?limit=` of the batch list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Most batches, newest first (default 100, at most 1000).
    pub limit: Option<usize>,
}

/// The batches, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchList {
    /// Their statuses.
    pub batches: Vec<BatchStatus>,
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
}

/// Streams `body` into a private temporary file, at most `limit` bytes, each chunk
/// within `patience`, the whole within `deadline`.
async fn spool(
    body: Body,
    limit: u64,
    patience: std::time::Duration,
    deadline: std::time::Duration,
) -> Result<tempfile::TempPath, ApiError> {
    tokio::time::timeout(deadline, spool_within(body, limit, patience))
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!(
                    "the body did not arrive whole within {} (serve.batch_upload_timeout)",
                    humantime::format_duration(deadline)
                ),
            ))
        })
}

async fn spool_within(
    body: Body,
    limit: u64,
    patience: std::time::Duration,
) -> Result<tempfile::TempPath, ApiError> {
    let file = tempfile::NamedTempFile::new().map_err(internal)?;
    let (file, path) = file.into_parts();
    let mut out = tokio::fs::File::from_std(file);
    let mut stream = body.into_data_stream();
    let mut written = 0u64;
    loop {
        let chunk = match tokio::time::timeout(patience, stream.next()).await {
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "timeout",
                    format!("no part of the body arrived for {patience:?} (serve.request_timeout)"),
                ))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(ApiError::bad_request(format!("cannot read the body: {e}")))
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        written += chunk.len() as u64;
        if written > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the body is more than {limit} bytes (serve.max_batch_bytes)"),
            ));
        }
        tokio::io::AsyncWriteExt::write_all(&mut out, &chunk)
            .await
            .map_err(internal)?;
    }
    tokio::io::AsyncWriteExt::flush(&mut out)
        .await
        .map_err(internal)?;
    Ok(path)
}

/// Submit a batch: a JSON lines body, one job envelope per line (no `id`, no
/// `options.idempotency_key`).
///
/// Every line is checked before anything is enqueued; a bad line makes the whole batch a
/// 400 listing the bad lines (or, with `?skip_invalid=true`, is left out).
#[utoipa::path(
    post,
    path = "/v1/batches",
    operation_id = "submit_batch",
    tag = "batches",
    request_body(content = String, description = "JSON lines: one job envelope per line", content_type = "application/x-ndjson"),
    params(SubmitQuery, ("Idempotency-Key" = Option<String>, Header, description = "Names the batch: a retried upload of the same body resumes it")),
    responses(
        (status = 202, description = "Made (or resumed) and enqueued", body = BatchSubmitted),
        (status = 400, description = "Bad lines, listed in `lines`", body = ErrorBody),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 409, description = "The Idempotency-Key names a batch of other input", body = ErrorBody),
        (status = 413, description = "More than serve.max_batch_bytes", body = ErrorBody),
        (status = 415, description = "The Content-Type is not application/x-ndjson or application/jsonl", body = ErrorBody),
        (status = 408, description = "The body stopped arriving (serve.request_timeout) or did not arrive whole in time (serve.batch_upload_timeout)", body = ErrorBody),
        (status = 503, description = "Redis failed (`redis`), or serve.max_batch_uploads are under way (`busy`, with Retry-After)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn submit(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(query): Query<SubmitQuery>,
    body: Body,
) -> Result<Response, ApiError> {
    media_type::require(&headers, media_type::JSON_LINES)?;
    // Held until the batch is enqueued (or refused).
    let _turn = match upload_turn(state.config.serve.max_batch_uploads) {
        Ok(turn) => turn,
        Err(busy) => return Ok(*busy),
    };
    let key = idempotency_key(&headers)?;
    // The batch's own callback, checked before anything is read.
    let callback = query.callback();
    if let Some(c) = &callback {
        state
            .config
            .webhooks
            .check_callback(c, "callback")
            .map_err(|e| ApiError::invalid_job(&e))?;
    }
    let serve = &state.config.serve;
    let spooled = spool(
        body,
        serve.max_batch_bytes,
        serve.request_timeout,
        serve.batch_upload_timeout,
    )
    .await?;
    let path: PathBuf = spooled.to_path_buf();
    let rules = LineRules {
        servers: state.servers.iter().cloned().collect(),
        max_payload: state.config.queue.max_payload,
        webhooks: state.config.webhooks.clone(),
    };
    let (checker_rules, checker_path) = (rules.clone(), path.clone());
    let (checked, problems) = tokio::task::spawn_blocking(move || {
        let mut lines = Lines::open(&checker_path, checker_rules.max_payload)?;
        let mut problems = Vec::new();
        let checked = batch_input::check_lines(&mut lines, &checker_rules, |line, problem| {
            if problems.len() < MAX_LISTED_PROBLEMS {
                problems.push(LineProblem {
                    line,
                    message: mcpq_core::terminal::one_line(problem)
                        .chars()
                        .take(500)
                        .collect(),
                });
            }
        })?;
        Ok::<_, std::io::Error>((checked, problems))
    })
    .await
    .map_err(internal)?
    .map_err(internal)?;
    let skip = query.skip_invalid.unwrap_or(false);
    if checked.invalid > 0 && !skip {
        return Err(ApiError {
            lines: Some(problems),
            ..ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_job",
                format!(
                    "{} invalid line(s) (the first are listed): nothing submitted (fix them, or pass ?skip_invalid=true to submit the {} valid ones)",
                    checked.invalid, checked.valid
                ),
            )
        });
    }
    let spec = BatchSpec {
        id: state.producer.fresh_batch_id(key.as_deref()),
        total: checked.valid,
        fingerprint: checked.fingerprint.hex(),
        source: format!("POST /v1/batches ({})", caller.0),
        idempotency_key: key.clone(),
        then: None,
        callback,
    };
    let (batch_id, resumed) = match state.producer.create_batch(&spec).await? {
        BatchCreated::New(id) => (id, false),
        BatchCreated::Resumed(id) => (id, true),
        BatchCreated::KeyUsedForOtherInput(id) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                format!(
                "Idempotency-Key {:?} names batch {id}, made from other input: nothing submitted",
                key.unwrap_or_default()
            ),
            ))
        }
        BatchCreated::IdTaken(id) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "duplicate_id",
                format!("a batch or job with id {id} exists already: nothing submitted"),
            ))
        }
    };
    let base: JobId = batch_id.parse().map_err(internal)?;
    let producer = state.producer.clone();
    let runtime = tokio::runtime::Handle::current();
    let (enqueue_id, total) = (batch_id.clone(), checked.valid);
    // The second pass reads the file with blocking I/O: on a blocking thread, driving
    // its Redis calls on the runtime.
    let done = tokio::task::spawn_blocking(move || {
        runtime.block_on(async {
            let mut lines = Lines::open(&path, rules.max_payload)?;
            batch_input::enqueue_lines(
                &producer,
                &mut lines,
                &rules,
                &enqueue_id,
                base,
                total,
                |_| {},
            )
            .await
        })
    })
    .await
    .map_err(internal)?
    .map_err(|e| match e {
        EnqueueError::Queue(e) => ApiError::queue(e),
        other => internal(other),
    })?;
    drop(spooled);
    tracing::info!(batch = %batch_id, total, enqueued = done.created, resumed, caller = %caller.0, "batch submitted");
    Ok((
        StatusCode::ACCEPTED,
        Json(BatchSubmitted {
            id: batch_id,
            total,
            enqueued: done.created,
            existing: done.existing,
            invalid_skipped: checked.invalid,
            resumed,
        }),
    )
        .into_response())
}

async fn read_status(state: &AppState, id: &str) -> Result<BatchStatus, ApiError> {
    let id = parse_id(id)?.to_string();
    batch::status(&mut state.conn(), state.producer.keys(), &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no batch {id} (or it expired)")))
}

/// A batch's counts and times.
#[utoipa::path(
    get,
    path = "/v1/batches/{id}",
    operation_id = "batch_status",
    tag = "batches",
    params(("id" = String, Path, description = "The batch id")),
    responses(
        (status = 200, description = "Its counts", body = BatchStatus),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 404, description = "No such batch", body = ErrorBody),
        (status = 503, description = "Redis failed (`redis`) or no answer in time (`timeout`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn status(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<BatchStatus>, ApiError> {
    Ok(Json(read_status(&state, &id).await?))
}

/// The batch's jobs in input order, one JSON object per line (id, line, status, result
/// or error), streamed.
#[utoipa::path(
    get,
    path = "/v1/batches/{id}/results",
    operation_id = "batch_results",
    tag = "batches",
    params(("id" = String, Path, description = "The batch id")),
    responses(
        (status = 200, description = "JSON lines, one per job, in input order", body = String, content_type = "application/x-ndjson"),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 404, description = "No such batch", body = ErrorBody),
        (status = 503, description = "Redis failed (`redis`) or no answer in time (`timeout`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn results(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let status = read_status(&state, &id).await?;
    let pages = futures::stream::unfold(Some(0usize), move |start| {
        let state = state.clone();
        let id = status.id.clone();
        async move {
            let start = start?;
            let mut conn = state.conn();
            let keys = state.producer.keys();
            let page = async {
                let ids = batch::member_ids(&mut conn, keys, &id, start, batch::PAGE).await?;
                if ids.is_empty() {
                    return Ok((0, Vec::new()));
                }
                let rows = batch::member_results(&mut conn, keys, &id, &ids).await?;
                Ok::<_, mcpq_core::queue::QueueError>((ids.len(), rows))
            };
            match page.await {
                Ok((0, _)) => None,
                Ok((n, rows)) => {
                    let mut text = Vec::new();
                    for row in rows {
                        if serde_json::to_writer(&mut text, &row).is_ok() {
                            let _ = text.write_all(b"\n");
                        }
                    }
                    Some((Ok::<_, std::io::Error>(text), Some(start + n)))
                }
                Err(e) => {
                    tracing::warn!(batch = %id, "reading results failed mid-stream: {e}");
                    Some((Err(std::io::Error::other(e.to_string())), None))
                }
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(pages),
    )
        .into_response())
}

/// List batches, newest first.
#[utoipa::path(
    get,
    path = "/v1/batches",
    operation_id = "list_batches",
    tag = "batches",
    params(ListQuery),
    responses(
        (status = 200, description = "The batches", body = BatchList),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 503, description = "Redis failed (`redis`) or no answer in time (`timeout`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<BatchList>, ApiError> {
    let limit = page_limit(query.limit)?;
    let batches = batch::list(&mut state.conn(), state.producer.keys(), limit).await?;
    Ok(Json(BatchList { batches }))
}
