//! What the MCP front hears from Redis and passes on to its clients: the workers'
//! progress reports (forwarded to a plain call whose client gave a progress token) and
//! tool catalog changes (`notifications/tools/list_changed` to every session).
//!
//! One subscription per channel for the whole process ([`subscribe_forever`]: it
//! reconnects after a Redis restart), fanned out through broadcast channels; a slow
//! session misses reports (it lags), it never holds the others.

use std::future::Future;

use mcpq_core::queue::progress::{self, Progress};
use mcpq_core::queue::subscribe::subscribe_forever;
use mcpq_core::queue::Keys;
use tokio::sync::broadcast;

/// How many events a slow listener may fall behind before it misses some.
const BACKLOG: usize = 1024;

/// The fan-out of both channels (cheap to clone).
#[derive(Clone)]
pub struct McpEvents {
    progress: broadcast::Sender<(String, Progress)>,
    tools_changed: broadcast::Sender<String>,
}

impl McpEvents {
    /// Subscribes to both channels (tasks of their own, for the process's lifetime).
    pub fn start(target: mcpq_shared::queue::RedisTarget, keys: &Keys) -> McpEvents {
        let (progress_tx, _) = broadcast::channel(BACKLOG);
        let (tools_tx, _) = broadcast::channel(BACKLOG);
        let tx = progress_tx.clone();
        tokio::spawn(subscribe_forever(
            target.clone(),
            keys.progress_channel(),
            "progress reports",
            || {},
            move |payload| {
                let Ok(text) = std::str::from_utf8(payload) else {
                    return;
                };
                if let Some((id, report)) = progress::parse_message(text) {
                    let _ = tx.send((id.to_string(), report));
                }
            },
        ));
        let tx = tools_tx.clone();
        tokio::spawn(subscribe_forever(
            target,
            keys.tools_changed_channel(),
            "tool catalog changes",
            || {},
            move |payload| {
                let server = String::from_utf8_lossy(payload).chars().take(200).collect();
                let _ = tx.send(server);
            },
        ));
        McpEvents {
            progress: progress_tx,
            tools_changed: tools_tx,
        }
    }

    /// Progress reports from now on.
    pub fn progress(&self) -> broadcast::Receiver<(String, Progress)> {
        self.progress.subscribe()
    }

    /// Catalog changes from now on.
    pub fn tools_changed(&self) -> broadcast::Receiver<String> {
        self.tools_changed.subscribe()
    }
}

/// Calls `notify` at each catalog change from `changes` (a burst the receiver fell
/// behind on counts once) until `until` resolves or `notify` fails: what a session
/// (`notifications/tools/list_changed`) and a 2026-07-28 subscription both do.
pub async fn relay_tool_changes<F, Fut, E>(
    mut changes: broadcast::Receiver<String>,
    until: impl Future<Output = ()>,
    mut notify: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    tokio::pin!(until);
    loop {
        tokio::select! {
            () = &mut until => return,
            change = changes.recv() => match change {
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    if notify().await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}
