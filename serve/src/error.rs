//! The API's errors: one JSON shape for every failure, a status code per kind.
//!
//! ```json
//! {"error": {"kind": "invalid_job", "message": "invalid job: payload.steps[0].tol: unknown field", "path": "payload.steps[0].tol"}}
//! ```
//!
//! `kind` is stable and machine-readable (the same names as the CLI's `--json` errors
//! where both exist); `message` is for people, escaped of control characters; `path`,
//! when present, is the JSON path of the field at fault. A Redis failure never shows its
//! URL or password: the message says Redis failed, the log has the rest.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use mcpq_core::job::JobError;
use mcpq_core::queue::QueueError;
use serde::Serialize;
use utoipa::ToSchema;

/// Longest message an error carries (a job's problem may quote hostile input).
const MAX_MESSAGE_CHARS: usize = 2000;

/// An error answer (see the module docs).
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable kind.
    pub kind: &'static str,
    /// What is wrong, for people.
    pub message: String,
    /// The JSON path of the field at fault.
    pub path: Option<String>,
    /// The bad lines of a batch.
    pub lines: Option<Vec<LineProblem>>,
}

/// One bad line of a batch.
#[derive(Debug, Serialize, ToSchema)]
pub struct LineProblem {
    /// Its number, from 1.
    pub line: u64,
    /// What is wrong.
    pub message: String,
}

/// The body of every error.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// One error.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable kind: `unauthorized`, `forbidden`, `invalid_job`, `invalid_request`,
    /// `not_found`, `not_waiting`, `method_not_allowed`, `duplicate_id`, `idempotency_key_reused`,
    /// `too_large`, `unsupported_media_type`, `busy`, `redis`, `corrupt_record`,
    /// `timeout`, `internal`.
    pub kind: String,
    /// What is wrong.
    pub message: String,
    /// The JSON path of the field at fault, if one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The bad lines of a batch (the first 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lines: Option<Vec<LineProblem>>,
}

impl ApiError {
    /// An error of `kind` with `status`.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
            path: None,
            lines: None,
        }
    }

    /// 400 `invalid_request`: a query, header or path that is not valid.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 400 `invalid_job`, with the JSON path of the problem when the error has one.
    pub fn invalid_job(err: &JobError) -> Self {
        let path = match err {
            JobError::Invalid { path, .. } | JobError::UnknownServer { path, .. } => {
                Some(path.clone())
            }
            JobError::UnsupportedVersion { .. } => Some("version".to_string()),
            _ => None,
        };
        ApiError {
            path,
            ..Self::new(StatusCode::BAD_REQUEST, "invalid_job", err.to_string())
        }
    }

    /// A queue error: a job over `queue.max_payload` is 413, a bad cursor 400, a record
    /// mcpq did not write 500 `corrupt_record`, anything else 503 `redis` (logged whole,
    /// answered without URL).
    pub fn queue(err: QueueError) -> Self {
        match err {
            QueueError::TooLarge { .. } => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", err.to_string())
            }
            QueueError::BadCursor(_) => Self::bad_request(err.to_string()),
            QueueError::Corrupt { .. } => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "corrupt_record",
                err.to_string(),
            ),
            _ => {
                tracing::warn!("Redis failed: {err}");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "redis",
                    "Redis failed or is unreachable; try again (the server's log says more)",
                )
            }
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(err: QueueError) -> Self {
        ApiError::queue(err)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                kind: self.kind.to_string(),
                message: mcpq_core::terminal::one_line(&self.message)
                    .chars()
                    .take(MAX_MESSAGE_CHARS)
                    .collect(),
                path: self.path,
                lines: self.lines,
            },
        };
        (self.status, Json(body)).into_response()
    }
}
