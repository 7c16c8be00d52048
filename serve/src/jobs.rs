//! `/v1/jobs`: submit one job, read where it is, wait for its result, cancel it, list.
//!
//! A submitted body is read whole (at most `queue.max_payload` bytes), then parsed and
//! checked off the async runtime, exactly as `mcpq submit` checks a job file: the
//! envelope field by field, the templates, the servers against this config's, the email
//! limits. Nothing reaches Redis unless the job is valid. Over HTTP an attachment must
//! carry its content (`content_base64`): a `path` names a file on the server's disk and
//! is refused.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use mcpq_core::config::email::EmailSettings;
use mcpq_core::job::{Job, JobId, JobPayload};
use mcpq_core::queue::control::{self, Cancelled};
use mcpq_core::queue::listing::{self, JobFilter, JobPage};
use mcpq_core::queue::{JobRecord, JobStatus};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::media_type;
use crate::state::AppState;

/// Most jobs one `GET /v1/jobs` page lists.
pub const MAX_LIST: usize = 1000;
/// Jobs a page lists when `limit` is not given.
pub const DEFAULT_LIST: usize = 100;
/// Longest `Idempotency-Key` header.
const MAX_IDEMPOTENCY_KEY: usize = 256;

/// The answer to a submit.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Submitted {
    /// The job's id (the first job's, when an idempotency key was used before).
    pub id: String,
    /// `agent` or `email`.
    pub kind: String,
    /// False when the idempotency key was used before: nothing was enqueued.
    pub created: bool,
}

/// `?wait=` of a result read.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// How long to wait for the job to end, e.g. `30s` (at most `serve.max_wait`).
    /// Without it, the answer is immediate.
    pub wait: Option<String>,
}

/// The filters of a listing.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only jobs in this state: queued, scheduled, running, failed, succeeded, dead, cancelled,
    /// waiting.
    pub status: Option<String>,
    /// Only this batch's jobs.
    pub batch: Option<String>,
    /// Only jobs of this named queue (`default` for jobs that name none).
    pub queue: Option<String>,
    /// Most jobs to return (default 100, at most 1000).
    pub limit: Option<usize>,
    /// `next` of the previous page.
    pub cursor: Option<String>,
}

/// What a cancel did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CancelAnswer {
    /// The job.
    pub id: String,
    /// True when this request cancelled it; false when it had ended already.
    pub cancelled: bool,
    /// Its status now.
    pub status: JobStatus,
}

/// A listing's `limit`: [`DEFAULT_LIST`] when absent, 400 outside 1 to [`MAX_LIST`].
pub fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIST);
    if !(1..=MAX_LIST).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit: 1 to {MAX_LIST}")));
    }
    Ok(limit)
}

/// A `queue` filter: absent or empty is none; otherwise a queue's name (the rule of
/// `options.queue`).
pub fn parse_queue(queue: Option<&str>) -> Result<Option<String>, ApiError> {
    match queue.map(str::trim).filter(|q| !q.is_empty()) {
        None => Ok(None),
        Some(q) => match mcpq_core::job::queue_name::queue_name_problem(q) {
            None => Ok(Some(q.to_string())),
            Some(why) => Err(ApiError::bad_request(format!("queue: {why}"))),
        },
    }
}

/// Parses a job id from the path (400 if it is not one).
pub fn parse_id(text: &str) -> Result<JobId, ApiError> {
    text.parse()
        .map_err(|e: mcpq_core::job::JobError| ApiError::bad_request(e.to_string()))
}

/// Parses a duration such as `30s` (400 naming `what` if it is not one).
pub fn parse_duration(what: &str, text: &str, max: Duration) -> Result<Duration, ApiError> {
    let d = humantime::parse_duration(text).map_err(|e| {
        ApiError::bad_request(format!("{what}: {e} (a duration such as 30s or 2m)"))
    })?;
    if d > max {
        return Err(ApiError::bad_request(format!(
            "{what}: at most {} (serve.max_wait)",
            humantime::format_duration(max)
        )));
    }
    Ok(d)
}

/// A body read within the limit, or 413.
pub fn body_within_limit(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the body is more than {limit} bytes (queue.max_payload)"),
            )
        } else {
            ApiError::bad_request(format!("cannot read the body: {e}"))
        }
    })
}

/// Email limits for a job whose attachments are inline (`[email]`): count, each, all.
fn check_attachments(job: &Job, limits: &EmailSettings) -> Result<(), ApiError> {
    let JobPayload::Email(email) = &job.payload else {
        return Ok(());
    };
    let invalid = |path: String, message: String| ApiError {
        path: Some(path),
        ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_job", message)
    };
    if email.attachments.len() > limits.max_attachments {
        return Err(invalid(
            "payload.attachments".into(),
            format!(
                "the job has {} attachments; the limit (email.max_attachments) is {}",
                email.attachments.len(),
                limits.max_attachments
            ),
        ));
    }
    let mut total = 0u64;
    for (i, a) in email.attachments.iter().enumerate() {
        if a.path.is_some() {
            return Err(invalid(
                format!("payload.attachments[{i}].path"),
                "a path names a file on the server: over HTTP, send the content as content_base64"
                    .into(),
            ));
        }
        let size = a.decoded_len() as u64;
        if size > limits.max_attachment {
            return Err(invalid(
                format!("payload.attachments[{i}]"),
                format!(
                    "the attachment is {size} bytes; the limit (email.max_attachment) is {}",
                    limits.max_attachment
                ),
            ));
        }
        total += size;
        if total > limits.max_attachments_total {
            return Err(invalid(
                "payload.attachments".into(),
                format!(
                    "the attachments add up to more than {} bytes (email.max_attachments_total)",
                    limits.max_attachments_total
                ),
            ));
        }
    }
    Ok(())
}

/// Parses and checks a submitted body as `mcpq submit` checks a job file.
fn build_job(state: &AppState, body: &[u8], key: Option<String>) -> Result<Job, ApiError> {
    let mut job = Job::from_json(body).map_err(|e| ApiError::invalid_job(&e))?;
    if let Some(key) = key {
        match &job.options.idempotency_key {
            Some(own) if *own != key => {
                return Err(ApiError {
                    path: Some("options.idempotency_key".into()),
                    ..ApiError::bad_request(
                        "the Idempotency-Key header and options.idempotency_key differ: give one",
                    )
                })
            }
            _ => job.options.idempotency_key = Some(key),
        }
    }
    check_attachments(&job, &state.config.email)?;
    job.validate().map_err(|e| ApiError::invalid_job(&e))?;
    job.check_submitted()
        .map_err(|e| ApiError::invalid_job(&e))?;
    job.check_servers(state.servers.iter().map(String::as_str))
        .map_err(|e| ApiError::invalid_job(&e))?;
    state
        .config
        .webhooks
        .check_job(&job)
        .map_err(|e| ApiError::invalid_job(&e))?;
    Ok(job)
}

/// The `Idempotency-Key` header, if any (400 when it is not short printable ASCII).
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .ok()
        .filter(|t| !t.is_empty() && t.len() <= MAX_IDEMPOTENCY_KEY && t.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "Idempotency-Key: 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters without spaces"
            ))
        })?;
    Ok(Some(text.to_string()))
}

/// Submit a job.
///
/// The body is a job envelope, the same JSON `mcpq submit FILE` reads, checked the same
/// way. 202 with its id when it was enqueued; 200 with the first job's id when the
/// idempotency key was used before with the same job (nothing enqueued); 409 when it was
/// used for another job.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    operation_id = "submit_job",
    tag = "jobs",
    request_body(content = Object, description = "A job envelope, as `mcpq submit` reads it (`options.run_at`, RFC 3339: a delayed job, status `scheduled` until then)", content_type = "application/json"),
    params(("Idempotency-Key" = Option<String>, Header, description = "A second submit with the same key returns the first job's id (within queue.idempotency_ttl)")),
    responses(
        (status = 202, description = "Enqueued", body = Submitted),
        (status = 200, description = "The idempotency key was used before: the first job", body = Submitted),
        (status = 400, description = "Not a valid job; `path` names the field", body = ErrorBody),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 409, description = "A job with this id exists already (`duplicate_id`), or the Idempotency-Key names a job of another body (`idempotency_key_reused`)", body = ErrorBody),
        (status = 403, description = "No token is configured and the request is a web page's (Origin) or names another Host", body = ErrorBody),
        (status = 413, description = "More than queue.max_payload", body = ErrorBody),
        (status = 415, description = "The Content-Type is not application/json", body = ErrorBody),
        (status = 503, description = "Redis failed (`redis`) or no answer in time (`timeout`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn submit(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Submitted>), ApiError> {
    media_type::require(&headers, media_type::JSON)?;
    let body = body_within_limit(body, state.config.queue.max_payload)?;
    let key = idempotency_key(&headers)?;
    let checker = state.clone();
    let job = tokio::task::spawn_blocking(move || build_job(&checker, &body, key))
        .await
        .map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })??;
    let submitted = state.producer.submit(&job).await?;
    if submitted.duplicate_id {
        return Err(ApiError {
            path: Some("id".into()),
            ..ApiError::new(
                StatusCode::CONFLICT,
                "duplicate_id",
                format!(
                    "a job with id {} exists already: nothing enqueued",
                    submitted.id
                ),
            )
        });
    }
    let mut kind = job.kind().to_string();
    if !submitted.created {
        // The key named an earlier job: the same job again (a retry) answers it; another
        // body under the same key is a client's mistake, not a retry.
        let (stored_kind, payload) = state.producer.store().submitted_as(&submitted.id).await?;
        if let Some(payload) = payload {
            let same = tokio::task::spawn_blocking(move || same_job(&payload, &job))
                .await
                .map_err(|e| {
                    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
                })?;
            if !same {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "idempotency_key_reused",
                    format!(
                        "the idempotency key names job {}, submitted with another body: nothing enqueued (use a new key for a new job)",
                        submitted.id
                    ),
                ));
            }
        }
        kind = stored_kind.unwrap_or(kind);
    }
    tracing::info!(job = %submitted.id, created = submitted.created, caller = %caller.0, "job submitted");
    let status = if submitted.created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(Submitted {
            id: submitted.id,
            kind,
            created: submitted.created,
        }),
    ))
}

/// Whether the stored envelope `stored` is `job`, ids aside (a retried submit gets a
/// new id unless it names one): both as the canonical JSON the queue stores.
fn same_job(stored: &[u8], job: &Job) -> bool {
    let Ok(mut stored) = serde_json::from_slice::<serde_json::Value>(stored) else {
        return false;
    };
    let mut given = job.to_value();
    for v in [&mut stored, &mut given] {
        if let Some(fields) = v.as_object_mut() {
            fields.remove("id");
        }
    }
    stored == given
}

/// Where a job is: status, attempts, timings, last error (never the result).
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    operation_id = "job_status",
    tag = "jobs",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "The job's record, without its result", body = JobRecord),
        (status = 400, description = "Not a job id", body = ErrorBody),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 404, description = "No such job (or its record expired)", body = ErrorBody),
        (status = 503, description = "Redis failed (`redis`) or no answer in time (`timeout`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn status(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobRecord>, ApiError> {
    let id = parse_id(&id)?;
    let record = state
        .producer
        .status(&id.to_string())
        .await?
        .ok_or_else(|| unknown(&id))?;
    Ok(Json(record))
}

fn unknown(id: &JobId) -> ApiError {
    ApiError::not_found(format!("no job {id} (or its record expired)"))
}

/// A job's outcome: 200 with the result (or error) once it has ended, 202 with its
/// status while not.
///
/// `?wait=30s` holds the request until the job ends or the time passes (at most
/// `serve.max_wait`): no polling needed, and none done (the server hears jobs end on
/// Redis pub/sub).
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/result",
    operation_id = "job_result",
    tag = "jobs",
    params(("id" = String, Path, description = "The job id"), WaitQuery),
    responses(
        (status = 200, description = "Ended (succeeded, dead or cancelled): the whole record, result included", body = JobRecord),
        (status = 202, description = "Not ended yet: the record without result", body = JobRecord),
        (status = 400, description = "Not a job id, or a bad wait", body = ErrorBody),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 503, description = "Redis failed (`redis`) or no answer in time (`timeout`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn result(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<WaitQuery>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?.to_string();
    let wait = match &query.wait {
        Some(text) => parse_duration("wait", text, state.config.serve.max_wait)?,
        None => Duration::ZERO,
    };
    let mut shutdown = state.shutdown.clone();
    let record = if wait.is_zero() || *shutdown.borrow() {
        state.producer.status(&id).await?
    } else {
        let _counted = state.metrics.long_poll();
        tokio::select! {
            record = state.endings.wait(&id, wait) => record?,
            _ = shutdown.changed() => state.producer.status(&id).await?,
        }
    };
    let record = record
        .ok_or_else(|| ApiError::not_found(format!("no job {id} (or its record expired)")))?;
    if !record.status.is_finished() {
        return Ok((StatusCode::ACCEPTED, Json(record)).into_response());
    }
    // Possibly megabytes: read and serialized by the bounded reader (its own
    // connection, a blocking thread; see result_reads).
    let whole = state
        .results
        .read_json(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job {id} (its record expired)")))?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        whole,
    )
        .into_response())
}

/// Cancel a job: a queued one never runs; a running one is stopped.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/cancel",
    operation_id = "cancel_job",
    tag = "jobs",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "Cancelled now, or ended already (`cancelled` says which)", body = CancelAnswer),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 503, description = "Redis failed (`redis`) or no answer in time (`timeout`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<CancelAnswer>, ApiError> {
    let id = parse_id(&id)?;
    let mut conn = state.conn();
    let text = id.to_string();
    let (cancelled, status) = match control::cancel(
        &mut conn,
        state.producer.keys(),
        state.producer.settings(),
        &text,
    )
    .await?
    {
        Cancelled::BeforeRunning | Cancelled::WhileRunning => (true, JobStatus::Cancelled),
        Cancelled::AlreadyFinished(status) => (false, status),
        Cancelled::Unknown => return Err(unknown(&id)),
    };
    tracing::info!(job = %text, cancelled, caller = %caller.0, "cancel requested");
    Ok(Json(CancelAnswer {
        id: text,
        cancelled,
        status,
    }))
}

/// What a run-now did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RunNowAnswer {
    /// The job.
    pub id: String,
    /// True when this request queued it; false when it was not waiting for its time.
    pub queued: bool,
    /// Its status now.
    pub status: JobStatus,
}

/// Run a waiting job now: a failed job waiting for its retry's backoff, or a delayed
/// one, goes to its queue at once (its failures so far still count).
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/run-now",
    operation_id = "run_job_now",
    tag = "jobs",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "Queued now", body = RunNowAnswer),
        (status = 400, description = "Not a job id", body = ErrorBody),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "It is not waiting for its time (`not_waiting`; the message says its status)", body = ErrorBody),
        (status = 503, description = "Redis failed (`redis`) or no answer in time (`timeout`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn run_now(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<RunNowAnswer>, ApiError> {
    let id = parse_id(&id)?;
    let text = id.to_string();
    let done = control::run_now(
        &mut state.conn(),
        state.producer.keys(),
        state.producer.settings(),
        &text,
    )
    .await?;
    match done {
        control::RunNow::Queued => {
            tracing::info!(job = %text, caller = %caller.0, "run now: queued");
            Ok(Json(RunNowAnswer {
                id: text,
                queued: true,
                status: JobStatus::Queued,
            }))
        }
        control::RunNow::NotWaiting(None) => Err(unknown(&id)),
        control::RunNow::NotWaiting(Some(status)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_waiting",
            format!("job {text} is {status}, not waiting for its time (only a failed job waiting for its retry or a delayed one can run now; a malformed record found waiting was dead-lettered: see its error)"),
        )),
    }
}

/// List jobs, newest first, page by page.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    operation_id = "list_jobs",
    tag = "jobs",
    params(ListQuery),
    responses(
        (status = 200, description = "One page; pass `next` as `cursor` for the next", body = JobPage),
        (status = 400, description = "A bad status, limit or cursor", body = ErrorBody),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 503, description = "Redis failed (`redis`) or no answer in time (`timeout`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<JobPage>, ApiError> {
    let status = match &query.status {
        Some(s) => Some(JobStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request(
                "status: one of queued, scheduled, running, failed, succeeded, dead, cancelled, waiting",
            )
        })?),
        None => None,
    };
    let batch = match &query.batch {
        Some(b) => Some(parse_id(b)?.to_string()),
        None => None,
    };
    let queue = parse_queue(query.queue.as_deref())?;
    let limit = page_limit(query.limit)?;
    let mut conn = state.conn();
    let page = listing::list_page(
        &mut conn,
        state.producer.keys(),
        &JobFilter {
            status,
            batch,
            queue,
        },
        limit,
        query.cursor.as_deref(),
    )
    .await?;
    Ok(Json(page))
}
