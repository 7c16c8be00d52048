//! The MCP front's sessions (streamable HTTP with `Mcp-Session-Id`): rmcp's in-memory
//! [`LocalSessionManager`], with a cap.
//!
//! A session holds a task and its buffers until the client deletes it or it is idle
//! for the session keep-alive; without a cap, a client that only sends `initialize`
//! could make them without end. Past [`SessionCap::max`] sessions a new one is refused
//! (rmcp answers 500 naming the reason: "too many MCP sessions"); the sessions that
//! exist go on, and requests of the stateless 2026-07-28 protocol need no session.
//! [`busy_when_full`] turns rmcp's 500 for it into a 503 `busy` with `Retry-After`.

use futures::Stream;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManager, LocalSessionManagerError,
};
use rmcp::transport::streamable_http_server::session::{
    ServerSseMessage, SessionId, SessionManager,
};

/// Why a session operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The cap is reached.
    #[error("too many MCP sessions ({0}, serve.mcp.max_sessions): close one, or use the stateless protocol")]
    Full(usize),
    /// rmcp's own.
    #[error(transparent)]
    Local(#[from] LocalSessionManagerError),
}

/// [`LocalSessionManager`] with at most `max` sessions.
pub struct SessionCap {
    inner: LocalSessionManager,
    max: usize,
}

impl SessionCap {
    /// `inner`, capped at `max` sessions.
    pub fn new(inner: LocalSessionManager, max: usize) -> SessionCap {
        SessionCap { inner, max }
    }
}

impl SessionManager for SessionCap {
    type Error = SessionError;
    type Transport = <LocalSessionManager as SessionManager>::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        let open = self.inner.sessions.read().await.len();
        if open >= self.max {
            tracing::warn!(
                open,
                "refused a new MCP session: serve.mcp.max_sessions reached"
            );
            return Err(SessionError::Full(self.max));
        }
        Ok(self.inner.create_session().await?)
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        Ok(self.inner.initialize_session(id, message).await?)
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        Ok(self.inner.has_session(id).await?)
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        Ok(self.inner.close_session(id).await?)
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        Ok(self.inner.create_stream(id, message).await?)
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        Ok(self.inner.accept_message(id, message).await?)
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        Ok(self.inner.create_standalone_stream(id).await?)
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        Ok(self.inner.resume(id, last_event_id).await?)
    }
}

/// Middleware for `/mcp`: rmcp answers a refused session with a plain 500; this makes it
/// the API's 503 `busy` (with `Retry-After`), and leaves every other answer as it is.
pub async fn busy_when_full(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let response = next.run(request).await;
    if response.status() != axum::http::StatusCode::INTERNAL_SERVER_ERROR {
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    if let Some(at) = text.find("too many MCP sessions") {
        let message: String = text[at..].chars().take(300).collect();
        let mut busy = crate::error::ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            message.trim_end().to_string(),
        )
        .into_response();
        busy.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("5"),
        );
        return busy;
    }
    axum::response::Response::from_parts(parts, axum::body::Body::from(bytes))
}
