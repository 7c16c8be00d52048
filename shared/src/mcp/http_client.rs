//! `LimitedHttpClient`: the HTTP client of a streamable-HTTP MCP session, which says
//! when a server's answer was too big.
//!
//! rmcp's reqwest client already refuses a JSON body or an SSE event bigger than the
//! limits it is given (we give it `queue.max_result`) before parsing it, so memory stays
//! bounded. But it does not tell the caller why: a refused SSE event ends the response
//! stream, and the call fails as "stream closed before its final response", which reads
//! like a server that went away and would be retried into the same wall. This wrapper
//! sits between rmcp's transport and reqwest and watches for those refusals.
//! Guarantees:
//! - Every POST response is read with limits no larger than the [`AnswerLimit`]
//!   (whatever limits the transport passes), and every SSE stream (POST response or
//!   GET stream) with an event limit no larger than it.
//! - When reqwest's client refuses a JSON body ([`StreamableHttpError::ResponseBodyTooLarge`])
//!   or an SSE event over the limit, the [`AnswerLimit`] is tripped before the waiting
//!   call learns that its answer is gone, so the session reports
//!   [`super::McpError::AnswerTooLarge`] (`result_too_large`, permanent), and its owner
//!   retires it.
//! - A 429 (Too Many Requests) answer to a POST is written to the session's
//!   [`Throttle`] with its `Retry-After` (seconds or an HTTP-date, cut to 10 min:
//!   [`crate::retry_after`]) before the waiting call learns of it, so the session reports
//!   [`super::McpError::RateLimited`] and the server is paused for every worker.
//!
//! # Caveats
//! - rmcp keeps the refused event's cause private; it is recognised by its message
//!   ("SSE event exceeded the maximum size"), pinned by the test below against rmcp's
//!   own stream.
//! - An answer refused on the session's GET stream (servers normally answer on the
//!   POST's own stream) trips the limit too, but rmcp does not fail the call waiting
//!   for it: that call fails at its `call_timeout`, then as `result_too_large`.
//! - The reqwest client is built here, with rmcp's defaults re-created: no idle
//!   connection pooling, and only same-origin 307/308 redirects followed (at most 10),
//!   so a redirect never carries the session id or custom headers to another host.

use std::collections::HashMap;
use std::sync::Arc;

use futures::stream::{BoxStream, StreamExt};
use http::{HeaderName, HeaderValue};
use rmcp::model::ClientJsonRpcMessage;
use rmcp::transport::streamable_http_client::{
    SseError, StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
    StreamableHttpResponseLimits,
};
use sse_stream::Sse;

use super::answer_limit::AnswerLimit;
use super::throttle::Throttle;

/// Most same-origin redirects followed for one request (as rmcp's own client).
const MAX_REDIRECTS: usize = 10;

type SseStream = BoxStream<'static, Result<Sse, SseError>>;

/// A reqwest client bound to one session's [`AnswerLimit`] and [`Throttle`].
#[derive(Debug, Clone)]
pub struct LimitedHttpClient {
    inner: reqwest::Client,
    limit: AnswerLimit,
    throttle: Throttle,
}

impl LimitedHttpClient {
    /// A client for one session; fails only when reqwest cannot build a client (no TLS
    /// provider: call [`crate::tls::install`] first).
    pub fn new(limit: AnswerLimit, throttle: Throttle) -> Result<Self, reqwest::Error> {
        let inner = reqwest::Client::builder()
            // rmcp's reason: reusing a connection whose last body was not read to its
            // end stalls ~40 ms on delayed ACKs.
            .pool_max_idle_per_host(0)
            .redirect(same_origin_redirects())
            .build()?;
        Ok(LimitedHttpClient {
            inner,
            limit,
            throttle,
        })
    }

    /// `limits`, none of them above ours.
    fn bounded(&self, mut limits: StreamableHttpResponseLimits) -> StreamableHttpResponseLimits {
        limits.max_json_response_size = limits.max_json_response_size.min(self.limit.bytes);
        limits.max_sse_event_size = limits.max_sse_event_size.min(self.limit.bytes);
        limits
    }

    /// `stream`, tripping the limit when it ends on an oversized event.
    fn watched(&self, stream: SseStream) -> SseStream {
        let limit = self.limit.clone();
        stream
            .inspect(move |item| {
                if let Err(e) = item {
                    if is_event_too_large(e) {
                        limit.trip();
                    }
                }
            })
            .boxed()
    }
}

/// True for the error rmcp's bounded SSE reader yields for an event over its limit.
fn is_event_too_large(error: &SseError) -> bool {
    matches!(error, SseError::Body(e) if e.to_string().contains("SSE event exceeded the maximum size"))
}

/// rmcp's redirect policy for its default client (private there): follow 307 and 308
/// (they keep the method and body) within the same origin, up to [`MAX_REDIRECTS`].
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let keeps_body = matches!(
            attempt.status(),
            reqwest::StatusCode::TEMPORARY_REDIRECT | reqwest::StatusCode::PERMANENT_REDIRECT
        );
        let same_origin = attempt
            .previous()
            .first()
            .is_some_and(|first| first.origin() == attempt.url().origin());
        if !keeps_body || !same_origin {
            attempt.stop()
        } else if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
        } else {
            attempt.follow()
        }
    })
}

impl StreamableHttpClient for LimitedHttpClient {
    type Error = reqwest::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        self.post_message_with_response_limits(
            uri,
            message,
            session_id,
            auth_header,
            custom_headers,
            StreamableHttpResponseLimits::default(),
        )
        .await
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        let mut limits = StreamableHttpResponseLimits::default();
        limits.max_sse_event_size = max_sse_event_size;
        self.post_message_with_response_limits(
            uri,
            message,
            session_id,
            auth_header,
            custom_headers,
            limits,
        )
        .await
    }

    async fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        let response = self
            .inner
            .post_message_with_response_limits(
                uri,
                message,
                session_id,
                auth_header,
                custom_headers,
                self.bounded(limits),
            )
            .await;
        match response {
            Ok(StreamableHttpPostResponse::Sse(stream, session)) => Ok(
                StreamableHttpPostResponse::Sse(self.watched(stream), session),
            ),
            Err(e @ StreamableHttpError::ResponseBodyTooLarge { .. }) => {
                self.limit.trip();
                Err(e)
            }
            Err(StreamableHttpError::HttpStatus(e)) if e.status == 429 => {
                let wait = e
                    .retry_after
                    .as_deref()
                    .and_then(|v| crate::retry_after::parse(v, std::time::SystemTime::now()));
                self.throttle.record(wait);
                Err(StreamableHttpError::HttpStatus(e))
            }
            other => other,
        }
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), StreamableHttpError<Self::Error>> {
        self.inner
            .delete_session(uri, session_id, auth_header, custom_headers)
            .await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<SseStream, StreamableHttpError<Self::Error>> {
        self.get_stream_with_max_sse_event_size(
            uri,
            session_id,
            last_event_id,
            auth_header,
            custom_headers,
            self.limit.bytes,
        )
        .await
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<SseStream, StreamableHttpError<Self::Error>> {
        let stream = self
            .inner
            .get_stream_with_max_sse_event_size(
                uri,
                session_id,
                last_event_id,
                auth_header,
                custom_headers,
                max_sse_event_size.min(self.limit.bytes),
            )
            .await?;
        Ok(self.watched(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::{ClientRequest, PingRequest, RequestId};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-shot HTTP server on a real socket that answers any request with
    /// `content_type` and `body`; returns its URL.
    async fn serve_once(content_type: &'static str, body: Vec<u8>) -> Arc<str> {
        serve_once_with("200 OK", "", content_type, body).await
    }

    /// [`serve_once`] with another status line and `extra` header lines.
    async fn serve_once_with(
        status: &'static str,
        extra: &'static str,
        content_type: &'static str,
        body: Vec<u8>,
    ) -> Arc<str> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            // Read the request head (the body of a small POST comes with it or after;
            // the answer does not depend on it).
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let header = format!(
                "HTTP/1.1 {status}\r\n{extra}content-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = socket.write_all(header.as_bytes()).await;
            let _ = socket.write_all(&body).await;
        });
        Arc::from(format!("http://{addr}/mcp"))
    }

    fn ping() -> ClientJsonRpcMessage {
        ClientJsonRpcMessage::request(
            ClientRequest::PingRequest(PingRequest::default()),
            RequestId::Number(1),
        )
    }

    fn answer(len: usize) -> String {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"pad":"{}"}}}}"#,
            "x".repeat(len)
        )
    }

    fn client(limit: &AnswerLimit) -> LimitedHttpClient {
        crate::tls::install();
        LimitedHttpClient::new(limit.clone(), Throttle::default()).expect("client")
    }

    #[tokio::test]
    async fn a_429_records_its_retry_after_in_the_throttle() {
        crate::tls::install();
        let throttle = Throttle::default();
        let client =
            LimitedHttpClient::new(AnswerLimit::new(1000), throttle.clone()).expect("client");
        let started = tokio::time::Instant::now();
        let uri = serve_once_with(
            "429 Too Many Requests",
            "retry-after: 2\r\n",
            "text/plain",
            b"slow down".to_vec(),
        )
        .await;
        let result = client
            .post_message(uri, ping(), None, None, HashMap::new())
            .await;
        assert!(
            matches!(result, Err(StreamableHttpError::HttpStatus(ref e)) if e.status == 429),
            "{result:?}"
        );
        assert_eq!(throttle.since(started), Some(Some(Duration::from_secs(2))));
        // A 429 without a usable Retry-After is noted too, with no wait.
        let uri = serve_once_with(
            "429 Too Many Requests",
            "retry-after: whenever\r\n",
            "text/plain",
            Vec::new(),
        )
        .await;
        let started = tokio::time::Instant::now();
        let _ = client
            .post_message(uri, ping(), None, None, HashMap::new())
            .await;
        assert_eq!(throttle.since(started), Some(None));
        // A 503 is no 429.
        let uri = serve_once_with(
            "503 Service Unavailable",
            "retry-after: 5\r\n",
            "text/plain",
            Vec::new(),
        )
        .await;
        let started = tokio::time::Instant::now();
        let _ = client
            .post_message(uri, ping(), None, None, HashMap::new())
            .await;
        assert_eq!(throttle.since(started), None);
    }

    #[tokio::test]
    async fn a_json_body_over_the_limit_is_refused_and_trips_the_limit() {
        let limit = AnswerLimit::new(1000);
        let uri = serve_once("application/json", answer(5000).into_bytes()).await;
        // The transport asks for more than our limit: ours still applies.
        let result = client(&limit)
            .post_message(uri, ping(), None, None, HashMap::new())
            .await;
        assert!(
            matches!(
                result,
                Err(StreamableHttpError::ResponseBodyTooLarge { .. })
            ),
            "{result:?}"
        );
        assert!(limit.tripped());
    }

    #[tokio::test]
    async fn an_sse_event_over_the_limit_ends_the_stream_and_trips_the_limit() {
        let limit = AnswerLimit::new(1000);
        let body = format!("data: {}\n\n", answer(5000));
        let uri = serve_once("text/event-stream", body.into_bytes()).await;
        let response = client(&limit)
            .post_message(uri, ping(), None, None, HashMap::new())
            .await;
        let Ok(StreamableHttpPostResponse::Sse(mut stream, _)) = response else {
            panic!("an SSE response: {response:?}");
        };
        assert!(!limit.tripped(), "nothing read yet");
        let mut failed = false;
        while let Some(item) = stream.next().await {
            failed |= item.is_err();
        }
        assert!(failed, "the oversized event is an error");
        assert!(limit.tripped());
    }

    #[tokio::test]
    async fn answers_within_the_limit_pass_and_leave_it_untripped() {
        let limit = AnswerLimit::new(1000);
        let uri = serve_once("application/json", answer(100).into_bytes()).await;
        let result = client(&limit)
            .post_message(uri, ping(), None, None, HashMap::new())
            .await;
        assert!(
            matches!(result, Ok(StreamableHttpPostResponse::Json(..))),
            "{result:?}"
        );
        let body = format!("data: {}\n\n", answer(100));
        let uri = serve_once("text/event-stream", body.into_bytes()).await;
        let response = client(&limit)
            .get_stream(uri, None, None, None, HashMap::new())
            .await;
        let mut stream = response.expect("an SSE stream");
        let event = stream.next().await.expect("one event").expect("it fits");
        assert!(event.data.is_some_and(|d| d.contains("pad")));
        assert!(!limit.tripped());
    }
}
