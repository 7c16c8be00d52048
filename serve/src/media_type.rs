//! The media type a request body must declare.
//!
//! `POST /v1/jobs` takes `application/json`, `POST /v1/batches` `application/x-ndjson`
//! or `application/jsonl`; anything else (no `Content-Type` included) is 415
//! `unsupported_media_type`, before the body is read. Besides saying what the body is,
//! this shuts a door: a web page can send a cross-site POST without asking first only
//! as `text/plain`, `application/x-www-form-urlencoded` or `multipart/form-data`
//! (CORS "simple" requests), never as JSON.

use axum::http::{header, HeaderMap, StatusCode};

use crate::error::ApiError;

/// The media type of a job body.
pub const JSON: &[&str] = &["application/json"];
/// The media types of a batch body (JSON lines).
pub const JSON_LINES: &[&str] = &["application/x-ndjson", "application/jsonl"];

/// Ok when the `Content-Type` is one of `accepted` (parameters such as `charset`
/// ignored, any case), else 415 naming the accepted ones.
pub fn require(headers: &HeaderMap, accepted: &[&str]) -> Result<(), ApiError> {
    let given = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim());
    if given.is_some_and(|g| accepted.iter().any(|a| a.eq_ignore_ascii_case(g))) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!(
            "the body must be sent as Content-Type: {} (got {})",
            accepted.join(" or "),
            given.map_or_else(|| "none".to_string(), |g| format!("{g:?}"))
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(content_type: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(c) = content_type {
            headers.insert(header::CONTENT_TYPE, c.parse().expect("value"));
        }
        headers
    }

    #[test]
    fn only_the_named_types_pass_whatever_their_parameters() {
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
        ] {
            assert!(require(&with(Some(ok)), JSON).is_ok(), "{ok}");
        }
        for bad in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("application/jsonx"),
            Some(""),
        ] {
            let err = require(&with(bad), JSON).expect_err("refused");
            assert_eq!(err.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{bad:?}");
            assert_eq!(err.kind, "unsupported_media_type");
        }
        assert!(require(&with(Some("application/x-ndjson")), JSON_LINES).is_ok());
        assert!(require(&with(Some("application/jsonl")), JSON_LINES).is_ok());
        assert!(require(&with(Some("application/json")), JSON_LINES).is_err());
    }
}
