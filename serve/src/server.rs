//! The server loop: accepts connections (at most `serve.max_connections` open at once),
//! serves HTTP/1.1 on each with a header deadline, and shuts down gracefully.
//!
//! Guarantees (each against a slow or hostile client, see the regression test
//! `serve::slow_and_silent_connections_are_closed_and_do_not_hold_the_server`):
//! - A connection must send a request's whole header within `serve.header_timeout`
//!   (10 s), the first request's and every later one's on a kept-alive connection alike,
//!   or it is closed: a connection that sends nothing, or a header a byte at a time
//!   (slowloris), holds a slot no longer than that, and an idle kept-alive connection is
//!   closed after that long too.
//! - At most `serve.max_connections` (1,024) connections are open; beyond that the
//!   server stops accepting (new ones wait in the kernel's backlog) until one closes, so
//!   a flood of connections cannot exhaust the process's file descriptors.
//! - On SIGTERM/SIGINT the listener closes, long polls answer at once
//!   ([`crate::state::AppState::shutdown`]), idle connections (kept alive, or that sent
//!   nothing) are closed at once, requests under way get [`SHUTDOWN_GRACE`] to finish,
//!   and then the server returns whatever is left.
//!
//! Caveats: a connection in the middle of sending a header at SIGTERM is closed by its
//! header deadline, not at once (HTTP/1.1 gives no way to interrupt it politely).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use mcpq_core::config::serve::ServeSettings;
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

/// How long requests under way may take to finish once shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until SIGTERM or SIGINT (see the module docs); `shutdown`
/// turns true when it starts.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: watch::Sender<bool>,
    settings: &ServeSettings,
    also_stop_on: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .keep_alive(true);
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let graceful = GracefulShutdown::new();
    // A signal, or what the caller says (its embedded worker stopped).
    let signal = async {
        tokio::select! {
            () = wait_for_signal() => {}
            () = also_stop_on => {}
        }
    };
    tokio::pin!(signal);
    loop {
        // A slot first: at the cap, stop accepting until a connection closes.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut signal => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut signal => break,
        };
        let _ = stream.set_nodelay(true);
        let service = app
            .clone()
            .map_request(move |mut request: axum::extract::Request<_>| {
                request
                    .extensions_mut()
                    .insert(ConnectInfo::<SocketAddr>(peer));
                request
            });
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, "connection closed: {e}");
            }
            drop(slot);
        });
    }
    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        "shutting down: no new connections; idle ones closed, requests under way may finish"
    );
    let _ = shutdown.send(true);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("requests still under way after {SHUTDOWN_GRACE:?}: closing them");
        }
    }
    Ok(())
}

/// After a failed accept: a connection that died in the backlog is nothing; anything
/// else (out of file descriptors) is logged and waited out for a moment, so the loop
/// does not spin.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    ) {
        return;
    }
    tracing::warn!("cannot accept a connection (retrying in 100ms): {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Resolves at the first SIGTERM or SIGINT.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process still dies of the signal's default action.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
