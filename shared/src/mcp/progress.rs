//! Progress of a tool call: what a server reports with `notifications/progress` while
//! it works, routed to whoever wants it (the job's record, the MCP front's client).
//!
//! A call that has a [`ProgressSink`] is sent with a `progressToken` of its own
//! session's ([`ProgressRoutes::register`]); the session's client handler hands each
//! notification carrying that token to the sink, until the call ends (the route is
//! removed when its [`Route`] guard drops). Notifications with a token no call holds
//! are ignored. A message is cut to [`MAX_MESSAGE_CHARS`] characters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use rmcp::model::{NumberOrString, ProgressNotificationParam, ProgressToken};

/// Longest progress message kept.
pub const MAX_MESSAGE_CHARS: usize = 1000;

pub use crate::queue::progress::Progress;

/// Where a call's progress goes.
#[derive(Clone)]
pub struct ProgressSink(Arc<dyn Fn(Progress) + Send + Sync>);

impl ProgressSink {
    /// A sink that calls `f` with each report (on the session's task: `f` must not
    /// block).
    pub fn new(f: impl Fn(Progress) + Send + Sync + 'static) -> Self {
        ProgressSink(Arc::new(f))
    }

    /// Hands `p` over.
    pub fn report(&self, p: Progress) {
        (self.0)(p)
    }
}

impl std::fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressSink")
    }
}

/// A session's calls that want progress, by the token each was sent with.
#[derive(Clone, Default)]
pub struct ProgressRoutes {
    next: Arc<AtomicI64>,
    routes: Arc<Mutex<HashMap<i64, ProgressSink>>>,
}

impl std::fmt::Debug for ProgressRoutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgressRoutes").finish_non_exhaustive()
    }
}

/// A registered route; removed when dropped.
pub struct Route {
    token: i64,
    routes: ProgressRoutes,
}

impl Route {
    /// The token to send with the call.
    pub fn token(&self) -> ProgressToken {
        ProgressToken(NumberOrString::Number(self.token))
    }
}

impl Drop for Route {
    fn drop(&mut self) {
        self.routes
            .routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.token);
    }
}

impl ProgressRoutes {
    /// Routes progress with a fresh token to `sink` while the returned guard lives.
    pub fn register(&self, sink: ProgressSink) -> Route {
        let token = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token, sink);
        Route {
            token,
            routes: self.clone(),
        }
    }

    /// Hands a server's notification to the call it belongs to, if any.
    pub fn deliver(&self, note: ProgressNotificationParam) {
        let NumberOrString::Number(token) = note.progress_token.0 else {
            return;
        };
        let sink = self
            .routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&token)
            .cloned();
        let Some(sink) = sink else { return };
        if !note.progress.is_finite() {
            return;
        }
        let message = note
            .message
            .map(|m| m.chars().take(MAX_MESSAGE_CHARS).collect());
        sink.report(Progress {
            progress: note.progress,
            total: note.total.filter(|t| t.is_finite()),
            message,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(token: i64, progress: f64, message: &str) -> ProgressNotificationParam {
        serde_json::from_value(serde_json::json!({
            "progressToken": token, "progress": progress, "message": message
        }))
        .expect("a progress notification")
    }

    #[test]
    fn progress_reaches_its_call_only_while_the_call_runs() {
        let routes = ProgressRoutes::default();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink_seen = seen.clone();
        let route = routes.register(ProgressSink::new(move |p: Progress| {
            sink_seen.lock().expect("lock").push(p)
        }));
        let ProgressToken(NumberOrString::Number(token)) = route.token() else {
            panic!("a number token")
        };
        routes.deliver(note(token, 1.0, "one"));
        routes.deliver(note(token + 100, 2.0, "someone else's"));
        routes.deliver(note(token, 3.0, &"x".repeat(5000)));
        drop(route);
        routes.deliver(note(token, 4.0, "after the call"));
        let seen = seen.lock().expect("lock");
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].message.as_deref(), Some("one"));
        assert_eq!(
            seen[1].message.as_ref().map(|m| m.len()),
            Some(MAX_MESSAGE_CHARS)
        );
    }
}
