//! Every error in the API's one JSON shape ([`crate::error`]), including those the
//! handlers never see: axum's own rejections (a query string that does not deserialize,
//! `?limit=-1`, a key given twice, a path that is not UTF-8: plain text), a method a
//! route does not take (405, empty), the request timeout (503, empty), a body over the
//! limit (413, plain text).
//!
//! [`to_json`] wraps the whole router: an error answer (4xx, 5xx) whose body is not
//! JSON is replaced by the JSON error of its status, keeping the status and the headers
//! that matter (`Allow`, `WWW-Authenticate`, `Retry-After`); the plain text, if any,
//! becomes the message. Answers that are JSON already, and the dashboard's HTML error
//! pages, pass untouched. A browser's request for a page outside the API (it accepts
//! `text/html`; not `/v1/`, `/mcp`, `/ui/`, ...) gets the dashboard's HTML error page
//! instead: an unknown page, a form that does not deserialize.

use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// The most of a plain-text error body kept as the message (axum's are one line).
const MAX_TEXT: usize = 4096;

/// The middleware (see the module docs).
pub async fn to_json(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let html = wants_page(&request);
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_html(response.headers()) {
        return response;
    }
    if is_json(response.headers()) && !html {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_TEXT)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    if html {
        // A browser's page request outside the API: the dashboard's error page, with
        // the message of the JSON error (an unknown route) or of the plain one.
        let message = match serde_json::from_str::<serde_json::Value>(&text) {
            _ if status == StatusCode::NOT_FOUND => "No such page.".to_string(),
            Ok(v) if is_json(&parts.headers) => v
                .pointer("/error/message")
                .and_then(|m| m.as_str())
                .unwrap_or("The request failed.")
                .to_string(),
            _ => error_for(status, &method, text).message,
        };
        let mut out = crate::dashboard::error_page(status, &message);
        keep_headers(&parts.headers, &mut out);
        return out;
    }
    let mut out = error_for(status, &method, text).into_response();
    keep_headers(&parts.headers, &mut out);
    out
}

/// The headers of the original answer that matter to a client of the replacement.
fn keep_headers(from: &HeaderMap, out: &mut Response) {
    for name in [header::ALLOW, header::WWW_AUTHENTICATE, header::RETRY_AFTER] {
        if let Some(v) = from.get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
}

/// A JSON answer.
fn is_json(headers: &HeaderMap) -> bool {
    content_type(headers).is_some_and(|v| v.starts_with("application/json"))
}

/// A dashboard page (its error pages are HTML for a browser).
fn is_html(headers: &HeaderMap) -> bool {
    content_type(headers).is_some_and(|v| v.starts_with("text/html"))
}

fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
}

/// A browser asking for a page (not the API, whose clients get JSON whatever they
/// accept): its errors get the dashboard's HTML error page.
fn wants_page(request: &Request) -> bool {
    let path = request.uri().path();
    let api = [
        "/v1/",
        "/mcp",
        "/health",
        "/metrics",
        "/openapi.json",
        "/ui/",
    ]
    .iter()
    .any(|p| path.starts_with(p));
    !api && request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            // `text/html`, unless with `q=0` (not wanted).
            v.split(',').any(|t| {
                let mut parts = t.split(';');
                parts.next().is_some_and(|m| m.trim() == "text/html")
                    && parts.all(|p| {
                        p.trim()
                            .strip_prefix("q=")
                            .and_then(|q| q.parse::<f32>().ok())
                            .is_none_or(|q| q > 0.0)
                    })
            })
        })
}

/// The JSON error for a plain answer of `status` with body `text`.
fn error_for(status: StatusCode, method: &axum::http::Method, text: String) -> ApiError {
    let or = |fallback: &str| {
        if text.is_empty() {
            fallback.to_string()
        } else {
            text.clone()
        }
    };
    match status {
        StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            status,
            "method_not_allowed",
            format!("this route does not take {method} (the Allow header lists what it takes; see /openapi.json)"),
        ),
        // The request timeout (tower-http's TimeoutLayer) answers with no body.
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::REQUEST_TIMEOUT if text.is_empty() => {
            ApiError::new(
                status,
                "timeout",
                "no answer within serve.request_timeout (Redis slow or busy?); try again",
            )
        }
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(status, "too_large", or("the body is too large")),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::new(status, "unsupported_media_type", or("unsupported Content-Type"))
        }
        StatusCode::NOT_FOUND => ApiError::not_found(or("no such route (see /openapi.json)")),
        StatusCode::UNAUTHORIZED => ApiError::new(status, "unauthorized", or("a valid bearer token is required")),
        s if s.is_client_error() => ApiError::new(s, "invalid_request", or("the request is not valid")),
        s => {
            tracing::warn!(status = %s, "an error answer without a body: {text}");
            ApiError::new(s, "internal", "the server failed (its log says more)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    #[test]
    fn only_a_browsers_page_request_outside_the_api_wants_a_page() {
        let req = |path: &str, accept: &str| {
            Request::builder()
                .uri(path)
                .header(header::ACCEPT, accept)
                .body(axum::body::Body::empty())
                .expect("request")
        };
        let html = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8";
        assert!(wants_page(&req("/no/such/page", html)));
        assert!(wants_page(&req("/jobs", "text/html;q=0.5")));
        for (path, accept) in [
            ("/v1/jobs", html),
            ("/ui/overview.json", html),
            ("/mcp", html),
            ("/jobs", "application/json"),
            ("/jobs", "text/html;q=0, application/json"),
            ("/jobs", "*/*"),
        ] {
            assert!(!wants_page(&req(path, accept)), "{path} {accept}");
        }
    }

    #[test]
    fn each_plain_error_gets_its_kind() {
        let cases = [
            (StatusCode::METHOD_NOT_ALLOWED, "", "method_not_allowed"),
            (StatusCode::SERVICE_UNAVAILABLE, "", "timeout"),
            (StatusCode::REQUEST_TIMEOUT, "", "timeout"),
            (
                StatusCode::BAD_REQUEST,
                "Failed to deserialize query string: limit: invalid digit found in string",
                "invalid_request",
            ),
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                "length limit exceeded",
                "too_large",
            ),
            (StatusCode::NOT_FOUND, "", "not_found"),
            (StatusCode::INTERNAL_SERVER_ERROR, "boom", "internal"),
        ];
        for (status, text, kind) in cases {
            let err = error_for(status, &Method::DELETE, text.to_string());
            assert_eq!((err.status, err.kind), (status, kind), "{status} {text:?}");
            if status == StatusCode::BAD_REQUEST {
                assert_eq!(err.message, text, "the rejection's words are kept");
            }
        }
    }
}
