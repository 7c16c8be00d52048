//! `mcpq-serve` (also `mcpq serve`): mcpq's HTTP API and MCP front, a stateless front
//! over Redis.
//!
//! Run as many as you like behind a load balancer: everything they know is in Redis.
//! Routes, auth and limits: [`app`]; the OpenAPI document: [`openapi`]; the MCP front
//! at `/mcp` or on stdio (`--stdio`): [`mcp`]. With `--with-worker` a worker
//! (`mcpq_worker`) runs in the same process, stopped with it; if it stops on its own,
//! the front stops too (exit 1).
//!
//! Exit codes: 0 after a clean shutdown, 2 bad flags or config (a token variable not
//! set, no token on a non-loopback address), 3 Redis unreachable at start, 1 other errors.

mod app;
mod auth;
mod batches;
mod dashboard;
mod dlq;
mod error;
mod health;
mod jobs;
mod json_errors;
mod mcp;
mod media_type;
mod metrics;
mod openapi;
mod result_reads;
mod server;
mod servers;
mod state;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use mcpq_core::logging;
use mcpq_core::queue::notify::Endings;
use mcpq_core::queue::{self, Producer};
use mcpq_core::Config;

/// Serves mcpq's HTTP API (submit jobs, read and wait for results, batches, dead
/// letters) and its MCP front at /mcp (queue tools, and gateway tools SERVER__TOOL that
/// run as jobs, as tasks for clients that ask).
///
/// Every route but /health needs `Authorization: Bearer <token>`; tokens are configured
/// in [[serve.tokens]] (each a name and the environment variable holding its secret) or
/// given as MCPQ_SERVE_TOKEN. With no token, only a loopback address is allowed. The API
/// is described at /openapi.json.
#[derive(Debug, Parser)]
#[command(name = "mcpq-serve", version, after_long_help = EXAMPLES)]
struct Args {
    /// Config file (mcpq.toml): [serve], [queue], [email] and the server names jobs may use.
    #[arg(long, env = "MCPQ_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on; overrides serve.listen (default 127.0.0.1:7717). Port 0
    /// picks a free port (the first line printed names it).
    #[arg(long, env = "MCPQ_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// Redis URL; overrides redis_url in the config (a password belongs in REDIS_URL or
    /// redis_password_env, not on the command line).
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// Key namespace; overrides namespace in the config.
    #[arg(long, env = "MCPQ_NAMESPACE")]
    namespace: Option<String>,
    /// Print the start-up line as JSON ({"type":"listening","url":...}).
    #[arg(long)]
    json: bool,
    /// Log line format (stderr). Filter with MCPQ_LOG or RUST_LOG, e.g. MCPQ_LOG=debug.
    #[arg(long, value_enum, default_value = "text")]
    log_format: logging::LogFormat,
    /// Speak MCP on stdin/stdout instead of listening on HTTP (for Claude Desktop,
    /// Cursor, VS Code: they start `mcpq serve --stdio` as an MCP server). Logs go to
    /// stderr; no token is needed (whoever starts the process is the caller).
    #[arg(long, conflicts_with_all = ["listen", "json"])]
    stdio: bool,
    /// Also run a worker in this process (jobs, the servers of [servers], the tool
    /// catalog of the gateway tools), stopped with it: one process for a laptop or a
    /// single box. Its concurrency is worker.concurrency.
    #[arg(long)]
    with_worker: bool,
}

const EXAMPLES: &str = "\
Examples:
  mcpq serve --config mcpq.toml
  MCPQ_SERVE_TOKEN=$(openssl rand -hex 24) mcpq serve --listen 0.0.0.0:7717
  curl -s -H \"Authorization: Bearer $MCPQ_SERVE_TOKEN\" -H 'Content-Type: application/json' --data-binary @job.json localhost:7717/v1/jobs
  mcpq serve --stdio --config mcpq.toml     # an MCP server on stdin/stdout (MCP clients' configs)

MCP: http://HOST:PORT/mcp (streamable HTTP, same bearer token) or --stdio. Tools: the queue's
(submit_job, get_job, wait_job, cancel_job, list_jobs, submit_batch, get_batch, list_servers) and
each tool [serve.mcp] expose names as SERVER__TOOL, run as a job (a task for clients that ask).

Exit status: 0 after a clean shutdown, 2 bad flags or config, 3 Redis unreachable, 1 other errors.";

fn main() -> ExitCode {
    // A template sandbox child of the embedded worker (`--with-worker`): nothing of
    // serve runs in it, not even flag parsing.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == mcpq_shared::agent::template_sandbox::SANDBOX_ARG)
    {
        return mcpq_shared::agent::template_sandbox::serve();
    }
    // Before any thread exists (masks are per thread): what the embedded worker's
    // servers inherit, and this process's own SIGTERM/SIGINT handling.
    let reset = mcpq_shared::supervisor::reset_own_signal_state();
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    // Never blocks a runtime thread on a slow or stuck stderr; escapes control
    // characters; says what it had to drop.
    let log_guard = logging::init(
        "mcpq-serve",
        args.log_format,
        "info,apalis=warn,apalis_core=warn,apalis_redis=warn,rmcp=warn",
    );
    mcpq_worker::signals::log_reset(&reset);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mcpq-serve: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(args, &log_guard)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, e)) => {
            eprintln!("mcpq-serve: {e:#}");
            ExitCode::from(code)
        }
    }
}

/// An error and its exit code.
struct Failure(u8, anyhow::Error);

fn config_error(e: impl Into<anyhow::Error>) -> Failure {
    Failure(2, e.into())
}

async fn run(args: Args, log_guard: &logging::LogGuard) -> Result<(), Failure> {
    let config = Config::load(args.config.as_deref())
        .and_then(|c| c.with_overrides(args.redis_url.clone(), args.namespace.clone()))
        .map_err(config_error)?;
    let listen = args.listen.unwrap_or(config.serve.listen);
    // Over stdio whoever started the process is the caller: no token is read (an MCP
    // client's config need not carry the HTTP front's secrets).
    let tokens = if args.stdio {
        auth::Tokens::none()
    } else {
        let tokens = auth::Tokens::load(&config.serve).map_err(config_error)?;
        tokens.check_listen(listen).map_err(config_error)?;
        tokens
    };
    let target = config.redis_target().map_err(config_error)?;
    let (conn, keys) = queue::open(&target, &config.namespace)
        .await
        .map_err(|e| Failure(3, e.into()))?;
    // Big result reads get a connection of their own (see result_reads).
    let results_conn = queue::connect_to(&target)
        .await
        .map_err(|e| Failure(3, e.into()))?;
    let results = Arc::new(result_reads::ResultReads::new(results_conn, keys.clone()));
    let producer = Producer::new(conn, keys.clone(), config.queue.clone())
        .with_durability(target.settings.wait_replicas, target.settings.wait_timeout);
    let events = mcp::events::McpEvents::start(target.clone(), &keys);
    let endings = Endings::start(target, keys, producer.store().clone());
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let servers = Arc::new(config.server_names().map(str::to_string).collect());
    let state = state::AppState {
        producer,
        endings,
        config: Arc::new(config),
        servers,
        shutdown: shutdown_rx,
        metrics: metrics::ServeMetrics::default(),
        results,
    };
    if args.stdio {
        let mut worker = match args.with_worker {
            true => Some(start_worker(&state, log_guard)?),
            false => None,
        };
        // The client closes stdin (the normal end) or sends a signal; or the embedded
        // worker stopped, and a front without its worker would only wait.
        let mut session = Box::pin(serve_stdio(state, events));
        let (served, early_end) = tokio::select! {
            served = &mut session => (served, None),
            () = server::wait_for_signal() => {
                tracing::info!("signal received: stopping");
                (Ok(()), None)
            }
            end = worker_ended(&mut worker) => (
                Err(Failure(1, anyhow::anyhow!("the embedded worker stopped; mcpq serve stops too"))),
                Some(end),
            ),
        };
        // The flag is up before the session is dropped: a call whose request is
        // cancelled by that drop then knows it was a shutdown, not its client's mind,
        // and leaves its job running.
        let _ = shutdown_tx.send(true);
        drop(session);
        match early_end {
            Some(end) => log_worker_end(end),
            None => stop_worker(worker).await,
        }
        return served;
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| config_error(anyhow::anyhow!("cannot listen on {listen}: {e}")))?;
    let bound = listener.local_addr().map_err(|e| Failure(1, e.into()))?;
    let url = format!("http://{bound}");
    if args.json {
        println!(
            "{}",
            serde_json::json!({"type": "listening", "url": url, "dashboard": format!("{url}/"), "tokens": tokens.len()})
        );
    } else {
        // One line only: scripts read it and may close the pipe after it.
        println!("listening on {url}");
    }
    tracing::info!(%url, dashboard = %format!("{url}/"), tokens = tokens.len(), namespace = %state.config.namespace, "mcpq-serve started");
    let config = state.config.clone();
    // Started once the address is bound: a front that cannot listen runs no jobs.
    let mut worker = match args.with_worker {
        true => Some(start_worker(&state, log_guard)?),
        false => None,
    };
    let mcp = mcp_routes(&state, tokens.is_empty(), events);
    let app = app::router(state, tokens, mcp);
    // Serving ends at a signal, or when the embedded worker ends (then with an error).
    let mut early_end = None;
    let worker_gone = async {
        early_end = Some(worker_ended(&mut worker).await);
        tracing::error!("the embedded worker stopped; mcpq serve stops too");
    };
    let served = server::serve(
        listener,
        app,
        shutdown_tx.clone(),
        &config.serve,
        worker_gone,
    )
    .await
    .map_err(|e| Failure(1, e.into()));
    let _ = shutdown_tx.send(true);
    if let Some(end) = early_end {
        log_worker_end(end);
        return Err(Failure(
            1,
            anyhow::anyhow!("the embedded worker stopped (see the log); mcpq serve stopped too"),
        ));
    }
    stop_worker(worker).await;
    served
}

/// `/mcp`: rmcp's streamable-HTTP service over [`mcp::handler::McpFront`]. Sessions
/// end when the server shuts down. With no token the service also refuses a `Host`
/// that is not loopback (DNS rebinding); with tokens, the bearer check decides.
fn mcp_routes(
    state: &state::AppState,
    loopback_only: bool,
    events: mcp::events::McpEvents,
) -> axum::Router {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
    let ended = tokio_util::sync::CancellationToken::new();
    let mut shutdown = state.shutdown.clone();
    let cancel = ended.clone();
    tokio::spawn(async move {
        let _ = shutdown.wait_for(|down| *down).await;
        cancel.cancel();
    });
    let mut config = StreamableHttpServerConfig::default()
        .with_cancellation_token(ended)
        .with_max_request_body_bytes(state.config.queue.max_payload);
    if !loopback_only {
        config = config.disable_allowed_hosts();
    }
    let front = state.clone();
    let api = app::api_routes(state).with_state(state.clone());
    // A session outlives the longest plain call it may be waiting on.
    let mut sessions = LocalSessionManager::default();
    sessions.session_config.keep_alive = Some(
        (mcp::gateway::plain_wait(state) + std::time::Duration::from_secs(60))
            .max(std::time::Duration::from_secs(300)),
    );
    let service = StreamableHttpService::new(
        move || {
            Ok(mcp::handler::McpFront::with_api(
                front.clone(),
                api.clone(),
                "anonymous",
                events.clone(),
            ))
        },
        Arc::new(mcp::sessions::SessionCap::new(
            sessions,
            state.config.serve.mcp.max_sessions,
        )),
        config,
    );
    axum::Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn(mcp::sessions::busy_when_full))
}

/// `--stdio`: one MCP session on stdin/stdout until the client closes it.
async fn serve_stdio(
    state: state::AppState,
    events: mcp::events::McpEvents,
) -> Result<(), Failure> {
    use rmcp::ServiceExt;
    tracing::info!(namespace = %state.config.namespace, "mcpq-serve speaking MCP on stdio");
    let front = mcp::handler::McpFront::new(state, "stdio", events);
    let running = front
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| Failure(1, anyhow::anyhow!("MCP on stdio: {e}")))?;
    running
        .waiting()
        .await
        .map_err(|e| Failure(1, anyhow::anyhow!("MCP on stdio: {e}")))?;
    Ok(())
}

/// `--with-worker`: a worker in this process, stopped by the server's shutdown flag.
fn start_worker(
    state: &state::AppState,
    log_guard: &logging::LogGuard,
) -> Result<WorkerHandle, Failure> {
    let config = state.config.clone();
    // A missing redis_password_env variable is a config error at start-up.
    config.redis_target().map_err(config_error)?;
    let (redactor, metrics) = mcpq_worker::instrument(&config, log_guard);
    let shutdown = mcpq_worker::signals::Shutdown::Flag(state.shutdown.clone());
    let name = mcpq_worker::default_name();
    tracing::info!(worker = %name, "starting a worker in this process (--with-worker)");
    Ok(tokio::spawn(mcpq_worker::run(
        config, name, redactor, metrics, shutdown,
    )))
}

/// The embedded worker's task.
type WorkerHandle = tokio::task::JoinHandle<anyhow::Result<ExitCode>>;

/// How the embedded worker's task ended.
type WorkerEnd = Result<anyhow::Result<ExitCode>, tokio::task::JoinError>;

/// Resolves when the embedded worker's task ends, with how (never without a worker).
/// The handle is then spent: call [`log_worker_end`], not [`stop_worker`].
async fn worker_ended(worker: &mut Option<WorkerHandle>) -> WorkerEnd {
    match worker {
        Some(handle) => handle.await,
        None => std::future::pending().await,
    }
}

/// Logs how the embedded worker ended.
fn log_worker_end(end: WorkerEnd) {
    match end {
        Ok(Ok(code)) if code == ExitCode::SUCCESS => tracing::info!("the embedded worker stopped"),
        Ok(Ok(code)) => {
            tracing::error!("the embedded worker stopped with {code:?} (3: Redis unreachable)")
        }
        Ok(Err(e)) => tracing::error!("the embedded worker stopped with an error: {e:#}"),
        Err(e) => tracing::error!("the embedded worker panicked: {e}"),
    }
}

/// Waits for the embedded worker (it bounds its own stop: grace, leases, servers).
async fn stop_worker(worker: Option<WorkerHandle>) {
    if let Some(worker) = worker {
        log_worker_end(worker.await);
    }
}
